//! Leader election on a coordination.k8s.io Lease, so that several operator replicas can run
//! and one reconciles. A candidate takes the Lease when it is free or expired, with the
//! Lease's resourceVersion as the compare-and-swap; the leader renews it and exits when it
//! cannot renew within the lease duration (its Pod restarts and competes again).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;

use crate::error::OperatorError;

/// One candidate for a Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl Elector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            api,
            name: name.into(),
            identity: identity.into(),
            duration,
        }
    }

    /// Waits until this candidate holds the Lease.
    pub async fn acquire(&self) -> Result<(), OperatorError> {
        loop {
            match self.try_acquire().await {
                Ok(true) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "became the leader");
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
            }
            tokio::time::sleep(self.duration / 4).await;
        }
    }

    /// Renews the Lease every third of its duration; returns when it could not be renewed
    /// in time (leadership is lost).
    pub async fn keep(&self) -> OperatorError {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.duration / 3).await;
            match self.try_acquire().await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => {
                    return OperatorError::Leader(format!(
                        "another replica took lease {}",
                        self.name
                    ));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the lease");
                    if last_renewed.elapsed() >= self.duration {
                        return OperatorError::Leader(format!(
                            "lease {} not renewed for {:?}: {e}",
                            self.name, self.duration
                        ));
                    }
                }
            }
        }
    }

    /// Takes or renews the Lease if free, expired or ours; false when someone else holds it.
    async fn try_acquire(&self) -> Result<bool, OperatorError> {
        let err = |action: &'static str| {
            let object = format!("Lease {}", self.name);
            move |source| OperatorError::Kube {
                action,
                object,
                source,
            }
        };
        let now = jiff::Timestamp::now();
        let seconds = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let current = self.api.get_opt(&self.name).await.map_err(err("read"))?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(err("create")(e)),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let expired = spec.renew_time.as_ref().is_none_or(|t| {
            let held = i64::from(spec.lease_duration_seconds.unwrap_or(seconds));
            now.as_second() - t.0.as_second() > held
        });
        if !ours && !expired {
            return Ok(false);
        }
        if !ours {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(seconds);
        // The resourceVersion in `lease` makes this a compare-and-swap.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(err("renew")(e)),
        }
    }
}
