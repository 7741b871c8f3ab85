//! Runs one pod: prepares its directory and volumes, runs init containers to completion, then
//! supervises its containers and keeps the pod's status in the API server up to date.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::container::{self, Report, RestartPolicy, State, Stop, Supervised};
use super::spec::{self, PodFields, Refs};
use super::volumes::{self, ApiAccess, SERVICE_ACCOUNT_DIR};
use super::{Context, KubeletError};

/// How long a pod waits before retrying a preparation that failed (missing ConfigMap, ...).
const PREPARE_RETRY: Duration = Duration::from_secs(2);

/// Runs the pod until its containers complete for good or `stop` says otherwise.
pub async fn run(
    ctx: Arc<Context>,
    pod: Pod,
    pod_ip: String,
    mut stop: watch::Receiver<Option<Stop>>,
) {
    let mut runner = Runner::new(ctx, pod, pod_ip);
    let launches = loop {
        match runner.prepare().await {
            Ok(l) => break l,
            Err(e) => {
                tracing::warn!(pod = %runner.key(), error = %e, "cannot start pod yet");
                runner
                    .patch_waiting("CreateContainerConfigError", &e.to_string())
                    .await;
                tokio::select! {
                    _ = tokio::time::sleep(PREPARE_RETRY) => {}
                    _ = stop.changed() => {}
                }
                let stopped = *stop.borrow();
                if let Some(s) = stopped {
                    runner.finish(s).await;
                    return;
                }
            }
        }
    };
    let (init, main) = launches;
    let policy = RestartPolicy::parse(runner.restart_policy());
    let init_policy = if policy == RestartPolicy::Never {
        policy
    } else {
        RestartPolicy::OnFailure
    };
    for (c, launch) in init {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let code =
            container::supervise(runner.supervised(0, c, launch, init_policy, tx, stop.clone()))
                .await;
        while rx.try_recv().is_ok() {}
        let stopped = *stop.borrow();
        if let Some(s) = stopped {
            runner.finish(s).await;
            return;
        }
        if code != 0 {
            runner.patch_phase("Failed", "Init container failed").await;
            return;
        }
    }
    runner.initialized = true;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for (i, (c, launch)) in main.into_iter().enumerate() {
        runner.reports.push(None);
        runner.names.push(c.name.clone());
        let s = runner.supervised(i, c, launch, policy, tx.clone(), stop.clone());
        tasks.push(tokio::spawn(container::supervise(s)));
    }
    drop(tx);
    while let Some((i, report)) = rx.recv().await {
        runner.reports[i] = Some(report);
        // Coalesce a burst of reports into one status write.
        while let Ok((i, report)) = rx.try_recv() {
            runner.reports[i] = Some(report);
        }
        runner.patch_status().await;
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap_or(255));
    }
    let stopped = *stop.borrow();
    match stopped {
        Some(s) => runner.finish(s).await,
        None => {
            let phase = if codes.iter().all(|c| *c == 0) {
                "Succeeded"
            } else {
                "Failed"
            };
            runner.patch_phase(phase, "").await;
        }
    }
}

struct Runner {
    ctx: Arc<Context>,
    pod: Pod,
    pod_ip: String,
    pod_dir: PathBuf,
    started_at: Timestamp,
    initialized: bool,
    names: Vec<String>,
    reports: Vec<Option<Report>>,
    /// Last transition time of each pod condition, so that times only move on a change.
    transitions: BTreeMap<&'static str, (bool, Timestamp)>,
}

impl Runner {
    fn new(ctx: Arc<Context>, pod: Pod, pod_ip: String) -> Self {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let short: String = uid.chars().take(8).collect();
        let pod_dir = ctx.root_dir.join(ns).join(format!("{name}-{short}"));
        Self {
            ctx,
            pod,
            pod_ip,
            pod_dir,
            started_at: Timestamp::now(),
            initialized: false,
            names: Vec::new(),
            reports: Vec::new(),
            transitions: BTreeMap::new(),
        }
    }

    fn key(&self) -> String {
        format!(
            "{}/{}",
            self.pod.metadata.namespace.as_deref().unwrap_or_default(),
            self.pod.metadata.name.as_deref().unwrap_or_default()
        )
    }

    fn api(&self) -> Api<Pod> {
        Api::namespaced(
            self.ctx.client.clone(),
            self.pod.metadata.namespace.as_deref().unwrap_or_default(),
        )
    }

    fn restart_policy(&self) -> Option<&str> {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
    }

    fn supervised(
        &self,
        index: usize,
        container: Container,
        launch: spec::Launch,
        policy: RestartPolicy,
        reports: mpsc::UnboundedSender<(usize, Report)>,
        stop: watch::Receiver<Option<Stop>>,
    ) -> Supervised {
        let log_path = self.pod_dir.join(format!("{}.log", container.name));
        Supervised {
            index,
            container,
            launch,
            policy,
            pod_ip: self.pod_ip.clone(),
            log_path,
            reports,
            stop,
        }
    }

    /// Fetches what the pod refers to, writes its volumes and resolves every container.
    async fn prepare(
        &self,
    ) -> Result<
        (
            Vec<(Container, spec::Launch)>,
            Vec<(Container, spec::Launch)>,
        ),
        KubeletError,
    > {
        std::fs::create_dir_all(&self.pod_dir).map_err(|e| KubeletError::io(&self.pod_dir, e))?;
        let ns = self.pod.metadata.namespace.clone().unwrap_or_default();
        let fields = PodFields::new(&self.pod, &self.pod_ip);
        let refs = self.fetch_refs(&ns).await?;
        let access = ApiAccess {
            client: &self.ctx.client,
            server: &self.ctx.server,
            ca_file: &self.ctx.ca_file,
        };
        let dirs = volumes::materialize(&self.pod, &fields, &refs, &self.pod_dir, &access).await?;
        let tmp = self.pod_dir.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|e| KubeletError::io(&tmp, e))?;
        let spec = self.pod.spec.clone().unwrap_or_default();
        let build = |c: &Container| -> Result<(Container, spec::Launch), KubeletError> {
            let mounts = volumes::mounts_for(c, &dirs);
            let mut base = self.ctx.base_env.clone();
            base.insert("HOME".into(), self.pod_dir.display().to_string());
            base.insert("TMPDIR".into(), tmp.display().to_string());
            base.insert("HOSTNAME".into(), fields.name.clone());
            if let Some((_, token_dir)) = mounts.iter().find(|(m, _)| m == SERVICE_ACCOUNT_DIR) {
                let kubeconfig = volumes::write_kubeconfig(&self.pod_dir, token_dir, &ns, &access)?;
                base.insert("KUBECONFIG".into(), kubeconfig.display().to_string());
            }
            let launch = spec::launch(
                c,
                &fields,
                &refs,
                &mounts,
                &self.ctx.bin_dir,
                &self.pod_dir,
                &base,
            )?;
            Ok((c.clone(), launch))
        };
        let init = spec
            .init_containers
            .iter()
            .flatten()
            .map(build)
            .collect::<Result<_, _>>()?;
        let main = spec
            .containers
            .iter()
            .map(build)
            .collect::<Result<_, _>>()?;
        Ok((init, main))
    }

    async fn fetch_refs(&self, ns: &str) -> Result<Refs, KubeletError> {
        let (cm_names, secret_names) = spec::referenced_objects(&self.pod);
        let mut refs = Refs::default();
        let cms: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), ns);
        for name in cm_names {
            if let Some(cm) = cms
                .get_opt(&name)
                .await
                .map_err(|source| KubeletError::Api {
                    action: "get a ConfigMap",
                    source,
                })?
            {
                refs.config_maps.insert(name, cm);
            }
        }
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), ns);
        for name in secret_names {
            if let Some(s) = secrets
                .get_opt(&name)
                .await
                .map_err(|source| KubeletError::Api {
                    action: "get a Secret",
                    source,
                })?
            {
                refs.secrets.insert(name, s);
            }
        }
        Ok(refs)
    }

    /// After the processes are gone: delete the Pod object if it was deleted gracefully.
    async fn finish(&self, stop: Stop) {
        if !stop.delete_object {
            return;
        }
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: self.pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        match self.api().delete(&name, &dp).await {
            Ok(_) => tracing::info!(pod = %self.key(), "pod deleted"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => tracing::warn!(pod = %self.key(), error = %e, "cannot delete pod"),
        }
        if let Err(e) = std::fs::remove_dir_all(&self.pod_dir) {
            tracing::debug!(dir = %self.pod_dir.display(), error = %e, "cannot remove pod dir");
        }
    }

    fn condition(&mut self, kind: &'static str, ok: bool) -> Value {
        let now = Timestamp::now();
        let entry = self.transitions.entry(kind).or_insert((ok, now));
        if entry.0 != ok {
            *entry = (ok, now);
        }
        json!({
            "type": kind,
            "status": if ok { "True" } else { "False" },
            "lastProbeTime": null,
            "lastTransitionTime": entry.1.to_string(),
        })
    }

    fn base_status(&mut self, phase: &str, all_ready: bool) -> Value {
        let initialized = self.initialized;
        let conditions = vec![
            self.condition("PodScheduled", true),
            self.condition("Initialized", initialized),
            self.condition("ContainersReady", all_ready),
            self.condition("Ready", all_ready),
        ];
        json!({
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": self.pod_ip,
            "podIPs": [{"ip": self.pod_ip}],
            "startTime": self.started_at.to_string(),
            "conditions": conditions,
        })
    }

    async fn patch_status(&mut self) {
        let all_ready = self
            .reports
            .iter()
            .all(|r| r.as_ref().is_some_and(|r| r.ready));
        let statuses: Vec<Value> = self
            .names
            .iter()
            .zip(&self.reports)
            .map(|(name, r)| container_status(name, r.as_ref(), &self.container_image(name)))
            .collect();
        let mut status = self.base_status("Running", all_ready);
        status["containerStatuses"] = Value::Array(statuses);
        self.write(status).await;
    }

    async fn patch_waiting(&mut self, reason: &str, message: &str) {
        let statuses: Vec<Value> = self
            .pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .map(|c| {
                json!({
                    "name": c.name, "ready": false, "restartCount": 0, "started": false,
                    "image": c.image.clone().unwrap_or_default(), "imageID": "",
                    "state": {"waiting": {"reason": reason, "message": message}},
                })
            })
            .collect();
        let mut status = self.base_status("Pending", false);
        status["containerStatuses"] = Value::Array(statuses);
        self.write(status).await;
    }

    async fn patch_phase(&mut self, phase: &str, message: &str) {
        let mut status = self.base_status(phase, false);
        if !message.is_empty() {
            status["message"] = json!(message);
        }
        if !self.names.is_empty() {
            let statuses: Vec<Value> = self
                .names
                .iter()
                .zip(&self.reports)
                .map(|(name, r)| container_status(name, r.as_ref(), &self.container_image(name)))
                .collect();
            status["containerStatuses"] = Value::Array(statuses);
        }
        self.write(status).await;
    }

    fn container_image(&self, name: &str) -> String {
        self.pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .find(|c| c.name == name)
            .and_then(|c| c.image.clone())
            .unwrap_or_default()
    }

    async fn write(&self, status: Value) {
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let patch = Patch::Merge(json!({ "status": status }));
        if let Err(e) = self
            .api()
            .patch_status(&name, &PatchParams::default(), &patch)
            .await
        {
            // A pod deleted under us answers 404; its task is about to be stopped.
            tracing::debug!(pod = %self.key(), error = %e, "cannot write pod status");
        }
    }
}

/// One entry of `status.containerStatuses`.
fn container_status(name: &str, report: Option<&Report>, image: &str) -> Value {
    let Some(r) = report else {
        return json!({
            "name": name, "ready": false, "started": false, "restartCount": 0, "image": image,
            "imageID": "", "state": {"waiting": {"reason": "ContainerCreating"}},
        });
    };
    let terminated = |t: &container::Terminated| {
        let mut state = json!({"terminated": {
            "exitCode": t.exit_code, "reason": t.reason,
            "startedAt": t.started_at.to_string(), "finishedAt": t.finished_at.to_string(),
        }});
        if let Some(message) = &t.message {
            state["terminated"]["message"] = json!(message);
        }
        state
    };
    let (state, started, container_id) = match &r.state {
        State::Waiting { reason, message } => (
            json!({"waiting": {"reason": reason, "message": message}}),
            false,
            None,
        ),
        State::Running { started_at, pid } => (
            json!({"running": {"startedAt": started_at.to_string()}}),
            true,
            Some(format!("process://{pid}")),
        ),
        State::Terminated(t) => (terminated(t), false, None),
    };
    let mut status = json!({
        "name": name, "ready": r.ready, "started": started, "restartCount": r.restart_count,
        "image": image, "imageID": "", "state": state,
    });
    if let Some(id) = container_id {
        status["containerID"] = json!(id);
    }
    if let Some(t) = &r.last_terminated {
        status["lastState"] = terminated(t);
    }
    status
}
