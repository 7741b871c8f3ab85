//! Observations -> the KafkaTable status: replicas, lag, sync points, table version, freshness
//! and the Ready, Reconciling, Degraded and Stalled conditions. Pure functions.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kafkatable_crds::report::IngesterReport;
use kafkatable_crds::status::{
    BadRecord, BadRecords, KafkaTableStatus, Lag, PartitionLag, SyncPoint, condition,
};

/// Offsets of one partition of the source topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    pub low: i64,
    pub high: i64,
}

/// What the operator saw of the Deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rollout {
    pub replicas: i32,
    pub ready: i32,
    pub updated: i32,
    /// The Deployment controller has seen the newest Deployment spec.
    pub observed: bool,
}

/// Everything one status update is computed from.
#[derive(Debug, Clone)]
pub struct Observation {
    pub generation: Option<i64>,
    pub selector: String,
    pub suspended: bool,
    pub desired: i32,
    pub commit_interval_ms: i64,
    /// The source topic, to name in messages about its records.
    pub topic_name: String,
    /// Failed commits in a row before the table is Degraded (`errors.commitFailures.degradedAfter`).
    pub commit_failures_degraded: u32,
    /// Bad records within `errors.degradedRate.window` above which the table is Degraded, and
    /// the window as written.
    pub bad_record_rate: (u64, String),
    /// Lag above which the table is catching up (`Reconciling`): more than the autoscaler's
    /// target per replica for the replicas wanted. A lag at or below it is a healthy table's.
    pub catch_up_lag: i64,
    /// Why the spec cannot run, when it cannot.
    pub invalid_spec: Option<String>,
    /// Applying a child failed for another reason (the API server did not answer, say).
    pub apply_failed: Option<String>,
    /// Other KafkaTables that write the same table from the same topic.
    pub shared_with: Vec<String>,
    /// Secrets the spec names that do not exist or lack a key, as messages.
    pub missing_secrets: Vec<String>,
    /// ConfigMap keys the spec names (a value schema) that do not exist, as messages.
    pub missing_config_maps: Vec<String>,
    pub rollout: Rollout,
    /// Messages about pods that keep failing.
    pub crashing: Vec<String>,
    pub reports: Vec<IngesterReport>,
    /// The topic's partitions, or why Kafka could not be asked.
    pub topic: Result<BTreeMap<i32, Watermarks>, TopicError>,
    /// Committed group offsets, read when neither the reports nor the last status know a
    /// partition's sync point.
    pub group_offsets: BTreeMap<i32, i64>,
    pub scale: Option<(Time, String)>,
    pub now: Time,
}

/// Why the topic's partitions are unknown, with the Degraded reason it makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicError {
    /// `BrokerUnreachable`, `TopicMissing`, `AuthenticationFailed`, `TlsHandshakeFailed` or
    /// `SecretKeyMissing`.
    pub reason: &'static str,
    pub message: String,
}

impl TopicError {
    pub fn unreachable(message: impl Into<String>) -> Self {
        Self {
            reason: "BrokerUnreachable",
            message: message.into(),
        }
    }
}

impl From<&crate::error::OperatorError> for TopicError {
    fn from(e: &crate::error::OperatorError) -> Self {
        use crate::error::OperatorError;
        let reason = match e {
            OperatorError::NoTopic { .. } => "TopicMissing",
            OperatorError::AuthenticationFailed { .. } => "AuthenticationFailed",
            OperatorError::TlsFailed { .. } => "TlsHandshakeFailed",
            OperatorError::SecretKey { .. } => "SecretKeyMissing",
            _ => "BrokerUnreachable",
        };
        Self {
            reason,
            message: e.to_string(),
        }
    }
}

impl Default for Observation {
    fn default() -> Self {
        Self {
            generation: None,
            selector: String::new(),
            suspended: false,
            desired: 0,
            commit_interval_ms: 60_000,
            topic_name: String::new(),
            commit_failures_degraded: 1,
            bad_record_rate: (100, "5m".into()),
            catch_up_lag: 0,
            invalid_spec: None,
            apply_failed: None,
            shared_with: Vec::new(),
            missing_secrets: Vec::new(),
            missing_config_maps: Vec::new(),
            rollout: Rollout::default(),
            crashing: Vec::new(),
            reports: Vec::new(),
            topic: Ok(BTreeMap::new()),
            group_offsets: BTreeMap::new(),
            scale: None,
            now: Time(jiff::Timestamp::UNIX_EPOCH),
        }
    }
}

/// The bad records the reports tell of: skipped and dead-lettered counts of the running pods,
/// the partitions stopped now, and the newest bad record (kept when its pod is gone).
fn bad_records(previous: Option<&BadRecords>, reports: &[IngesterReport]) -> Option<BadRecords> {
    let record = |b: &kafkatable_crds::report::BadRecordReport| BadRecord {
        partition: b.partition,
        offset: b.offset,
        reason: b.reason.clone(),
        time: millis_time(b.at_ms),
    };
    let mut stopped: Vec<BadRecord> = reports
        .iter()
        .flat_map(|r| r.stopped.iter().map(record))
        .collect();
    stopped.sort_by_key(|b| b.partition);
    stopped.dedup_by_key(|b| b.partition);
    let newest = reports
        .iter()
        .filter_map(|r| r.last_bad_record.as_ref())
        .max_by_key(|b| b.at_ms)
        .map(record);
    let last = match (newest, previous.and_then(|p| p.last.clone())) {
        (Some(n), Some(p)) if p.time.as_ref().map(|t| t.0) > n.time.as_ref().map(|t| t.0) => {
            Some(p)
        }
        (Some(n), _) => Some(n),
        (None, p) => p,
    };
    let skipped: u64 = reports.iter().map(|r| r.skipped_records).sum();
    let dead_lettered: u64 = reports.iter().map(|r| r.dead_lettered_records).sum();
    if last.is_none() && stopped.is_empty() && skipped == 0 && dead_lettered == 0 {
        return None;
    }
    Some(BadRecords {
        skipped: i64::try_from(skipped).unwrap_or(i64::MAX),
        dead_lettered: i64::try_from(dead_lettered).unwrap_or(i64::MAX),
        stopped,
        last,
    })
}

/// Merges sync points: a pod reports the partitions it holds as the table has them (read at
/// assignment and after a refused commit, then what it committed), so a report replaces the
/// previous status, also when it went back (a recreated table, offsets reset); partitions no
/// pod reports keep their last value. When two pods report a partition (mid-rebalance), the
/// one further on wins.
pub fn sync_points(previous: &[SyncPoint], reports: &[IngesterReport]) -> BTreeMap<i32, i64> {
    let mut reported: BTreeMap<i32, i64> = BTreeMap::new();
    for report in reports {
        for (&p, &offset) in &report.sync_points {
            let e = reported.entry(p).or_insert(offset);
            *e = (*e).max(offset);
        }
    }
    let mut points: BTreeMap<i32, i64> = previous.iter().map(|s| (s.partition, s.offset)).collect();
    points.extend(reported);
    points
}

/// Lag per partition: high watermark minus the table's sync point (the group's offset when the
/// table has none for it, else everything retained).
pub fn lag(
    topic: &BTreeMap<i32, Watermarks>,
    points: &BTreeMap<i32, i64>,
    group: &BTreeMap<i32, i64>,
) -> Lag {
    let per_partition: Vec<PartitionLag> = topic
        .iter()
        .map(|(&partition, w)| {
            let from = points
                .get(&partition)
                .or_else(|| group.get(&partition))
                .copied()
                .unwrap_or(w.low);
            PartitionLag {
                partition,
                lag: (w.high - from.max(w.low)).max(0),
            }
        })
        .collect();
    Lag {
        total: per_partition.iter().map(|p| p.lag).sum(),
        max_partition: per_partition.iter().map(|p| p.lag).max().unwrap_or(0),
        per_partition,
    }
}

fn millis_time(ms: i64) -> Option<Time> {
    jiff::Timestamp::from_millisecond(ms).ok().map(Time)
}

/// The status of a table the operator has just seen for the first time: not ready, reconciling.
pub fn created(generation: Option<i64>, selector: &str, now: &Time) -> KafkaTableStatus {
    let mut status = KafkaTableStatus {
        observed_generation: generation,
        selector: Some(selector.to_string()),
        ..KafkaTableStatus::default()
    };
    let c = &mut status.conditions;
    let waiting = "the operator is creating the ingesters";
    set(
        c,
        condition::READY,
        false,
        "Created",
        waiting,
        generation,
        now,
    );
    set(
        c,
        condition::RECONCILING,
        true,
        "Created",
        waiting,
        generation,
        now,
    );
    set(
        c,
        condition::DEGRADED,
        false,
        "AsExpected",
        "no errors observed",
        generation,
        now,
    );
    let nothing = "nothing that needs a change of the spec or the environment";
    set(
        c,
        condition::STALLED,
        false,
        "AsExpected",
        nothing,
        generation,
        now,
    );
    status
}

/// The new status, given the previous one.
pub fn compute(previous: &KafkaTableStatus, o: &Observation) -> KafkaTableStatus {
    let points = sync_points(&previous.sync_points, &o.reports);
    let topic = o.topic.as_ref().ok();
    let lag = topic.map(|t| lag(t, &points, &o.group_offsets));
    let newest = o.reports.iter().max_by_key(|r| r.table_version);
    let last_commit_ms = o.reports.iter().filter_map(|r| r.last_commit_ms).max();
    let newest_record_ms = o.reports.iter().filter_map(|r| r.newest_record_ms).max();
    let now_ms = o.now.0.as_millisecond();

    let mut status = KafkaTableStatus {
        observed_generation: o.generation,
        conditions: previous.conditions.clone(),
        replicas: o.rollout.replicas,
        ready_replicas: o.rollout.ready,
        desired_replicas: o.desired,
        selector: Some(o.selector.clone()),
        partitions: topic.map(|t| t.len() as i32).or(previous.partitions),
        lag: lag.clone().or_else(|| previous.lag.clone()),
        sync_points: points
            .iter()
            .map(|(&partition, &offset)| SyncPoint { partition, offset })
            .collect(),
        table_version: newest
            .and_then(|r| r.table_version)
            .max(previous.table_version),
        snapshot_id: newest.and_then(|r| r.snapshot_id).or(previous.snapshot_id),
        last_commit_time: last_commit_ms
            .and_then(millis_time)
            .filter(|t| previous.last_commit_time.as_ref().is_none_or(|p| t.0 > p.0))
            .or_else(|| previous.last_commit_time.clone()),
        freshness_seconds: newest_record_ms
            .map(|ms| (now_ms - ms).max(0) / 1000)
            .or(previous.freshness_seconds),
        last_scale_time: previous.last_scale_time.clone(),
        last_scale_reason: previous.last_scale_reason.clone(),
        bad_records: bad_records(previous.bad_records.as_ref(), &o.reports),
    };
    if let Some((at, reason)) = &o.scale {
        status.last_scale_time = Some(at.clone());
        status.last_scale_reason = Some(reason.clone());
    }

    // Records wait while ingesters run, and nothing was committed for three commit intervals.
    let quiet_ms = 3 * o.commit_interval_ms.max(1000);
    let since_commit_ms = status
        .last_commit_time
        .as_ref()
        .map(|t| now_ms - t.0.as_millisecond());
    let quiet = since_commit_ms.is_none_or(|ms| ms > quiet_ms);
    let waiting = lag.as_ref().is_some_and(|l| l.total > 0) && !o.suspended;

    // Degraded: the first cause found, most fundamental first.
    let broker = o
        .topic
        .as_ref()
        .err()
        .map(|e| (e.reason, e.message.clone()))
        .or_else(|| {
            let e = o.reports.iter().find_map(|r| r.broker_error.clone())?;
            Some(("BrokerUnreachable", e))
        });
    let degraded = if let Some(reason) = &o.invalid_spec {
        Some(("InvalidSpec", reason.clone()))
    } else if let Some(e) = &o.apply_failed {
        Some(("ApplyFailed", e.clone()))
    } else if !o.missing_secrets.is_empty() {
        Some((
            "SecretMissing",
            format!(
                "{}: the ingester pods cannot start until it is created",
                o.missing_secrets.join("; ")
            ),
        ))
    } else if !o.missing_config_maps.is_empty() {
        Some((
            "ConfigMapMissing",
            format!(
                "{}: the ingester pods cannot start until it is created",
                o.missing_config_maps.join("; ")
            ),
        ))
    } else if !o.shared_with.is_empty() {
        Some((
            "TableShared",
            format!(
                "KafkaTable {} writes the same table from the same topic: the commits are fenced, so no record is doubled, but the ingesters race on every commit and do the work twice; delete all but one",
                o.shared_with.join(", ")
            ),
        ))
    } else if let Some(broker) = broker {
        Some(broker)
    } else if let Some(e) = o.reports.iter().find_map(|r| r.registry_error.clone()) {
        Some((
            "RegistryUnreachable",
            format!("records that need a schema wait, none is skipped: {e}"),
        ))
    } else if let Some(e) = o.reports.iter().find_map(|r| r.table_error.clone()) {
        let failing = o
            .reports
            .iter()
            .map(|r| r.commit_failures)
            .max()
            .unwrap_or(0);
        if failing >= o.commit_failures_degraded.max(1) {
            Some((
                "CommitFailing",
                format!("{failing} table commits failed in a row: {e}"),
            ))
        } else if failing > 0 {
            None // within spec.errors.commitFailures.degradedAfter: retried
        } else {
            Some(("TableUnreachable", e))
        }
    } else if let Some(stopped) = status
        .bad_records
        .as_ref()
        .filter(|b| !b.stopped.is_empty())
    {
        let each: Vec<String> = stopped
            .stopped
            .iter()
            .map(|b| {
                format!(
                    "topic {} partition {} offset {}: {}",
                    o.topic_name, b.partition, b.offset, b.reason
                )
            })
            .collect();
        Some((
            "PartitionStopped",
            format!(
                "{} partition(s) stopped at a bad record (errors.policy fail; the other partitions go on, and a stopped one resumes there after a restart or a change of the spec): {}",
                each.len(),
                each.join("; ")
            ),
        ))
    } else if let Some(recent) = Some(o.reports.iter().map(|r| r.recent_bad_records).sum::<u64>())
        .filter(|n| *n > o.bad_record_rate.0)
    {
        let last = status
            .bad_records
            .as_ref()
            .and_then(|b| b.last.as_ref())
            .map(|b| format!("; the last: {}", b.reason))
            .unwrap_or_default();
        Some((
            "DeadLetterRate",
            format!(
                "{recent} bad records skipped or dead-lettered in the last {}, more than spec.errors.degradedRate.records ({}){last}",
                o.bad_record_rate.1, o.bad_record_rate.0
            ),
        ))
    } else if let Some(m) = o.crashing.first() {
        Some(("PodsCrashLooping", m.clone()))
    } else if waiting && o.rollout.ready > 0 && since_commit_ms.is_some_and(|ms| ms > quiet_ms) {
        Some((
            "NoCommits",
            format!(
                "{} records wait and the last commit was {} s ago",
                lag.as_ref().map_or(0, |l| l.total),
                since_commit_ms.unwrap_or_default() / 1000
            ),
        ))
    } else {
        None
    };
    let generation = o.generation;
    let now = &o.now;
    match &degraded {
        Some((reason, message)) => set(
            &mut status.conditions,
            condition::DEGRADED,
            true,
            reason,
            message,
            generation,
            now,
        ),
        None => set(
            &mut status.conditions,
            condition::DEGRADED,
            false,
            "AsExpected",
            "no errors observed",
            generation,
            now,
        ),
    }

    // Stalled (kstatus): what will not fix itself without a change, so GitOps tools fail fast
    // here and wait on everything else: a spec that cannot run, or ingesters that crash-loop
    // while nothing is committed.
    let stalled = if let Some(reason) = &o.invalid_spec {
        Some(("InvalidSpec", reason.clone()))
    } else if let Some(m) = o.crashing.first().filter(|_| quiet) {
        let since = since_commit_ms.map_or_else(
            || "nothing was ever committed".to_string(),
            |ms| format!("nothing committed for {} s", ms / 1000),
        );
        Some(("PodsCrashLooping", format!("{m}; {since}")))
    } else {
        None
    };
    match &stalled {
        Some((reason, message)) => set(
            &mut status.conditions,
            condition::STALLED,
            true,
            reason,
            message,
            generation,
            now,
        ),
        None => set(
            &mut status.conditions,
            condition::STALLED,
            false,
            "AsExpected",
            "nothing that needs a change of the spec or the environment",
            generation,
            now,
        ),
    }

    // Reconciling (kstatus): a rollout or a catch-up is under way. A lag within the
    // autoscaler's target is a healthy table's, not a catch-up, so a busy topic settles.
    let rolling = !o.rollout.observed
        || o.rollout.updated < o.desired
        || o.rollout.replicas != o.desired
        || o.rollout.ready < o.desired;
    let catching_up = waiting && lag.as_ref().is_some_and(|l| l.total > o.catch_up_lag);
    // A stalled table is not making progress: kstatus reads Reconciling first.
    if let Some((reason, _)) = &stalled {
        set(
            &mut status.conditions,
            condition::RECONCILING,
            false,
            reason,
            "stalled: no progress until the spec or the environment changes",
            generation,
            now,
        );
    } else if rolling {
        let message = format!(
            "{} of {} ingesters ready, {} up to date",
            o.rollout.ready, o.desired, o.rollout.updated
        );
        set(
            &mut status.conditions,
            condition::RECONCILING,
            true,
            "RollingOut",
            &message,
            generation,
            now,
        );
    } else if catching_up {
        let total = lag.as_ref().map_or(0, |l| l.total);
        set(
            &mut status.conditions,
            condition::RECONCILING,
            true,
            "CatchingUp",
            &format!(
                "{total} records behind the topic (more than {} for {} ingesters)",
                o.catch_up_lag, o.desired
            ),
            generation,
            now,
        );
    } else {
        set(
            &mut status.conditions,
            condition::RECONCILING,
            false,
            "UpToDate",
            "rolled out; lag within the target",
            generation,
            now,
        );
    }

    // Ready: everything wanted runs and nothing is wrong. A suspended table whose ingesters
    // are gone is in the state its spec asks for, so it is Ready (kstatus reads Ready=False as
    // in progress, and a GitOps apply of `suspend: true` would never finish).
    if o.suspended && o.rollout.replicas > 0 {
        set(
            &mut status.conditions,
            condition::READY,
            false,
            "Suspending",
            &format!(
                "spec.suspend is true: {} ingesters still stop",
                o.rollout.replicas
            ),
            generation,
            now,
        );
    } else if o.suspended {
        set(
            &mut status.conditions,
            condition::READY,
            true,
            "Suspended",
            "spec.suspend is true: no ingesters run; the table and its sync points stay",
            generation,
            now,
        );
    } else if let Some((reason, message)) = &degraded {
        set(
            &mut status.conditions,
            condition::READY,
            false,
            reason,
            message,
            generation,
            now,
        );
    } else if o.desired == 0 {
        set(
            &mut status.conditions,
            condition::READY,
            true,
            "ScaledToZero",
            "no lag: no ingesters needed",
            generation,
            now,
        );
    } else if o.rollout.ready < o.desired {
        let message = format!("{} of {} ingesters ready", o.rollout.ready, o.desired);
        set(
            &mut status.conditions,
            condition::READY,
            false,
            "IngestersNotReady",
            &message,
            generation,
            now,
        );
    } else {
        let message = format!("{} ingesters ready", o.rollout.ready);
        set(
            &mut status.conditions,
            condition::READY,
            true,
            "IngestersReady",
            &message,
            generation,
            now,
        );
    }
    status
}

/// Sets a condition, keeping its transition time when the status did not change.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    value: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if value { "True" } else { "False" };
    let last_transition_time = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    conditions.retain(|c| c.type_ != type_);
    conditions.push(Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    });
    conditions.sort_by_key(|c| order(&c.type_));
}

fn order(type_: &str) -> usize {
    [
        condition::READY,
        condition::RECONCILING,
        condition::DEGRADED,
        condition::STALLED,
    ]
    .iter()
    .position(|t| *t == type_)
    .unwrap_or(usize::MAX)
}

/// The conditions whose status or reason changed, as (type, status, reason, message).
pub fn changed<'a>(before: &[Condition], after: &'a [Condition]) -> Vec<&'a Condition> {
    after
        .iter()
        .filter(|c| {
            !before
                .iter()
                .any(|b| b.type_ == c.type_ && b.status == c.status && b.reason == c.reason)
        })
        .collect()
}

/// The JSON merge patch (RFC 7386) that turns status `from` into `to`: the values that
/// changed, and a null for each field `to` no longer has. (A merge patch keeps a field it does
/// not mention, and the status leaves out empty fields: without the nulls a cleared list, a
/// stopped partition say, would stay on the object.)
pub fn merge_patch(from: &serde_json::Value, to: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (from, to) {
        (Value::Object(from), Value::Object(to)) => {
            let mut patch = serde_json::Map::new();
            for (key, new) in to {
                match from.get(key) {
                    Some(old) if old == new => {}
                    Some(old) => {
                        patch.insert(key.clone(), merge_patch(old, new));
                    }
                    None => {
                        patch.insert(key.clone(), new.clone());
                    }
                }
            }
            for key in from.keys().filter(|k| !to.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => to.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_patch_removes_what_the_new_status_no_longer_has() {
        let stopped = BadRecord {
            partition: 0,
            offset: 2,
            reason: "not JSON".into(),
            time: None,
        };
        let before = KafkaTableStatus {
            bad_records: Some(BadRecords {
                skipped: 0,
                dead_lettered: 0,
                stopped: vec![stopped.clone()],
                last: Some(stopped),
            }),
            partitions: Some(3),
            ..KafkaTableStatus::default()
        };
        let mut after = before.clone();
        if let Some(b) = after.bad_records.as_mut() {
            b.stopped.clear();
            b.skipped = 1;
        }
        after.partitions = None;
        let (from, to) = (
            serde_json::to_value(&before).expect("json"),
            serde_json::to_value(&after).expect("json"),
        );
        let patch = merge_patch(&from, &to);
        assert_eq!(
            patch,
            serde_json::json!({"badRecords": {"skipped": 1, "stopped": null}, "partitions": null})
        );
        // Applied as the API server applies it, the patch gives the new status.
        assert_eq!(apply(from, &patch), to);
    }

    /// RFC 7386's apply, as the API server runs it.
    fn apply(target: serde_json::Value, patch: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        let Value::Object(patch) = patch else {
            return patch.clone();
        };
        let mut target = match target {
            Value::Object(t) => t,
            _ => serde_json::Map::new(),
        };
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                let old = target.remove(key).unwrap_or(Value::Null);
                target.insert(key.clone(), apply(old, value));
            }
        }
        Value::Object(target)
    }

    fn now() -> Time {
        Time(jiff::Timestamp::from_second(1_800_000_000).expect("time"))
    }

    fn topic(highs: &[i64]) -> BTreeMap<i32, Watermarks> {
        highs
            .iter()
            .enumerate()
            .map(|(p, &high)| (p as i32, Watermarks { low: 0, high }))
            .collect()
    }

    fn healthy(desired: i32) -> Observation {
        Observation {
            generation: Some(2),
            selector: "a=b".into(),
            desired,
            commit_interval_ms: 10_000,
            rollout: Rollout {
                replicas: desired,
                ready: desired,
                updated: desired,
                observed: true,
            },
            topic: Ok(topic(&[100, 50])),
            reports: vec![IngesterReport {
                ready: true,
                partitions: vec![0, 1],
                sync_points: BTreeMap::from([(0, 100), (1, 50)]),
                table_version: Some(7),
                last_commit_ms: Some(now().0.as_millisecond() - 2000),
                newest_record_ms: Some(now().0.as_millisecond() - 3000),
                ..IngesterReport::default()
            }],
            now: now(),
            ..Observation::default()
        }
    }

    fn condition<'a>(s: &'a KafkaTableStatus, t: &str) -> &'a Condition {
        s.conditions
            .iter()
            .find(|c| c.type_ == t)
            .expect("condition")
    }

    #[test]
    fn lag_is_high_watermark_minus_the_table_then_the_group() {
        let points = BTreeMap::from([(0, 90)]);
        let group = BTreeMap::from([(1, 40), (2, 10)]);
        let l = lag(&topic(&[100, 50, 10, 5]), &points, &group);
        let per: Vec<i64> = l.per_partition.iter().map(|p| p.lag).collect();
        assert_eq!(per, vec![10, 10, 0, 5]);
        assert_eq!((l.total, l.max_partition), (25, 10));
    }

    /// What the pods report is what the table holds, also when that went back (the table was
    /// recreated, or its offsets reset); partitions no pod reports keep their last value.
    #[test]
    fn sync_points_show_what_the_table_holds_even_when_it_went_back() {
        let previous = vec![
            SyncPoint {
                partition: 0,
                offset: 10,
            },
            SyncPoint {
                partition: 1,
                offset: 5,
            },
        ];
        let reports = vec![IngesterReport {
            sync_points: BTreeMap::from([(0, 8), (1, 9), (2, 1)]),
            ..IngesterReport::default()
        }];
        assert_eq!(
            sync_points(&previous, &reports),
            BTreeMap::from([(0, 8), (1, 9), (2, 1)])
        );
        // Two pods both reporting a partition during a rebalance: the one further on.
        let two = vec![
            reports[0].clone(),
            IngesterReport {
                sync_points: BTreeMap::from([(0, 12)]),
                ..IngesterReport::default()
            },
        ];
        assert_eq!(sync_points(&previous, &two)[&0], 12);
        assert_eq!(sync_points(&previous, &[])[&0], 10);
    }

    #[test]
    fn healthy_table_is_ready_with_lag_zero_and_the_version() {
        let s = compute(&KafkaTableStatus::default(), &healthy(2));
        assert_eq!(condition(&s, "Ready").status, "True");
        assert_eq!(condition(&s, "Degraded").status, "False");
        assert_eq!(condition(&s, "Reconciling").status, "False");
        assert_eq!(condition(&s, "Stalled").status, "False");
        assert!(
            s.conditions
                .iter()
                .all(|c| c.observed_generation == Some(2)),
            "every condition names the generation it describes"
        );
        assert_eq!(s.lag.as_ref().map(|l| l.total), Some(0));
        assert_eq!(s.table_version, Some(7));
        assert_eq!(s.partitions, Some(2));
        assert_eq!(s.freshness_seconds, Some(3));
        assert_eq!(s.observed_generation, Some(2));
    }

    #[test]
    fn an_unreachable_broker_degrades_with_the_cause_and_keeps_the_last_lag() {
        let first = compute(&KafkaTableStatus::default(), &healthy(1));
        let mut o = healthy(1);
        o.topic = Err(TopicError::unreachable(
            "kafka:9092: metadata: all brokers down",
        ));
        let s = compute(&first, &o);
        let d = condition(&s, "Degraded");
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "BrokerUnreachable")
        );
        assert!(d.message.contains("all brokers down"));
        assert_eq!(condition(&s, "Ready").status, "False");
        assert_eq!(s.lag, first.lag);
        // Back: Ready again, and the Degraded transition time moved.
        let back = compute(&s, &healthy(1));
        assert_eq!(condition(&back, "Ready").status, "True");
        assert_eq!(changed(&s.conditions, &back.conditions).len(), 2);
    }

    #[test]
    fn a_secret_the_spec_names_that_does_not_exist_is_named() {
        let mut o = healthy(1);
        o.rollout.ready = 0;
        o.missing_secrets = vec!["Secret s3-creds does not exist".into()];
        let s = compute(&KafkaTableStatus::default(), &o);
        let d = condition(&s, "Degraded");
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "SecretMissing")
        );
        assert!(
            d.message.contains("Secret s3-creds does not exist"),
            "{}",
            d.message
        );
        assert_eq!(condition(&s, "Ready").status, "False");
    }

    #[test]
    fn a_config_map_the_spec_names_that_does_not_exist_is_named() {
        let mut o = healthy(1);
        o.rollout.ready = 0;
        o.missing_config_maps = vec!["ConfigMap schemas has no key order.avsc".into()];
        let s = compute(&KafkaTableStatus::default(), &o);
        let d = condition(&s, "Degraded");
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "ConfigMapMissing")
        );
        assert!(
            d.message.contains("schemas has no key order.avsc"),
            "{}",
            d.message
        );
        assert_eq!(condition(&s, "Ready").status, "False");
    }

    #[test]
    fn a_missing_topic_or_secret_key_is_named_not_called_an_unreachable_broker() {
        use crate::error::OperatorError;
        let mut o = healthy(1);
        o.topic = Err(TopicError::from(&OperatorError::NoTopic {
            brokers: "kafka:9092".into(),
            topic: "orders".into(),
        }));
        let d = condition(&compute(&KafkaTableStatus::default(), &o), "Degraded").clone();
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "TopicMissing")
        );
        assert!(
            d.message.contains("topic orders does not exist"),
            "{}",
            d.message
        );
        o.topic = Err(TopicError::from(&OperatorError::SecretKey {
            secret: "kafka-creds".into(),
            key: "password".into(),
        }));
        let d = condition(&compute(&KafkaTableStatus::default(), &o), "Degraded").clone();
        assert_eq!(d.reason, "SecretKeyMissing");
        assert!(d.message.contains("kafka-creds"), "{}", d.message);
    }

    #[test]
    fn table_errors_and_commit_failures_are_named() {
        let mut o = healthy(1);
        o.reports[0].table_error =
            Some("table lake.orders: load the table: connection refused".into());
        let s = compute(&KafkaTableStatus::default(), &o);
        assert_eq!(condition(&s, "Degraded").reason, "TableUnreachable");
        o.reports[0].commit_failures = 2;
        let s = compute(&KafkaTableStatus::default(), &o);
        assert_eq!(condition(&s, "Degraded").reason, "CommitFailing");
        // Within the budget of spec.errors.commitFailures.degradedAfter: retried quietly.
        o.commit_failures_degraded = 3;
        let s = compute(&KafkaTableStatus::default(), &o);
        assert_eq!(condition(&s, "Degraded").status, "False");
        o.reports[0].commit_failures = 3;
        let s = compute(&KafkaTableStatus::default(), &o);
        assert_eq!(condition(&s, "Degraded").reason, "CommitFailing");
    }

    #[test]
    fn a_stopped_partition_is_degraded_naming_its_record_and_bad_records_are_counted() {
        use kafkatable_crds::report::BadRecordReport;
        let mut o = healthy(2);
        o.topic_name = "orders".into();
        o.reports.push(IngesterReport::default());
        let bad = BadRecordReport {
            partition: 2,
            offset: 41,
            reason: "topic orders partition 2 offset 41: not JSON".into(),
            at_ms: 1_700_000_000_000,
        };
        o.reports[0].stopped = vec![bad.clone()];
        o.reports[0].last_bad_record = Some(bad.clone());
        o.reports[0].skipped_records = 2;
        o.reports[1].skipped_records = 3;
        o.reports[1].recent_bad_records = 500;
        let s = compute(&KafkaTableStatus::default(), &o);
        let d = condition(&s, "Degraded");
        assert_eq!(d.reason, "PartitionStopped");
        assert!(
            d.message.contains("topic orders partition 2 offset 41")
                && d.message.contains("not JSON"),
            "{}",
            d.message
        );
        let records = s.bad_records.clone().expect("bad records");
        assert_eq!((records.skipped, records.stopped.len()), (5, 1));
        assert_eq!(records.last.as_ref().map(|b| b.offset), Some(41));

        // Resumed (a new policy): the rate of bad records is what is wrong now.
        o.reports[0].stopped.clear();
        o.reports[0].last_bad_record = None;
        let s = compute(&s, &o);
        let d = condition(&s, "Degraded");
        assert_eq!(d.reason, "DeadLetterRate");
        assert!(
            d.message
                .starts_with("500 bad records skipped or dead-lettered in the last 5m")
                && d.message.contains("not JSON"),
            "{}",
            d.message
        );
        // Below the rate: no longer degraded, and the last bad record stays known.
        o.reports[1].recent_bad_records = 100;
        let s = compute(&s, &o);
        assert_eq!(condition(&s, "Degraded").status, "False");
        let records = s.bad_records.expect("bad records");
        assert!(records.stopped.is_empty());
        assert_eq!(records.last.map(|b| b.offset), Some(41));
    }

    #[test]
    fn an_unreachable_registry_is_named_before_the_table() {
        let mut o = healthy(2);
        o.reports.push(IngesterReport::default());
        o.reports[1].registry_error = Some(
            "schema registry http://registry:8080/apis/ccompat/v7/schemas/ids/7: connection refused"
                .into(),
        );
        o.reports[0].table_error = Some("table lake.orders: connection refused".into());
        let s = compute(&KafkaTableStatus::default(), &o);
        let d = condition(&s, "Degraded");
        assert_eq!(d.reason, "RegistryUnreachable");
        assert!(d.message.contains("ids/7"), "{}", d.message);
        o.reports[1].registry_error = None;
        let s = compute(&KafkaTableStatus::default(), &o);
        assert_eq!(condition(&s, "Degraded").reason, "TableUnreachable");
    }

    #[test]
    fn suspended_says_so() {
        let mut o = healthy(0);
        o.suspended = true;
        o.rollout = Rollout {
            observed: true,
            ..Rollout::default()
        };
        let s = compute(&KafkaTableStatus::default(), &o);
        let r = condition(&s, "Ready");
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("True", "Suspended"),
            "the spec's state is reached"
        );
        o.rollout.replicas = 2;
        let s = compute(&KafkaTableStatus::default(), &o);
        let r = condition(&s, "Ready");
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("False", "Suspending")
        );
    }

    #[test]
    fn no_commit_for_three_intervals_with_lag_is_degraded_not_stalled() {
        let mut o = healthy(1);
        o.topic = Ok(topic(&[500, 50]));
        o.reports[0].last_commit_ms = Some(now().0.as_millisecond() - 60_000);
        let s = compute(&KafkaTableStatus::default(), &o);
        assert_eq!(condition(&s, "Degraded").reason, "NoCommits");
        assert_eq!(condition(&s, "Stalled").status, "False");
        assert_eq!(condition(&s, "Reconciling").reason, "CatchingUp");
    }

    #[test]
    fn a_lag_within_the_target_is_not_a_catch_up() {
        let mut o = healthy(1);
        o.topic = Ok(topic(&[130, 50]));
        o.catch_up_lag = 1000;
        let s = compute(&KafkaTableStatus::default(), &o);
        assert_eq!(s.lag.as_ref().map(|l| l.total), Some(30));
        let r = condition(&s, "Reconciling");
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("False", "UpToDate")
        );
        o.catch_up_lag = 10;
        let s = compute(&KafkaTableStatus::default(), &o);
        assert_eq!(condition(&s, "Reconciling").reason, "CatchingUp");
        assert_eq!(
            condition(&s, "Ready").status,
            "True",
            "a backlog is healthy"
        );
        assert_eq!(condition(&s, "Stalled").status, "False");
    }

    #[test]
    fn only_what_will_not_fix_itself_is_stalled() {
        let mut o = healthy(1);
        o.invalid_spec = Some("spec.table.location: not a URL".into());
        let s = compute(&KafkaTableStatus::default(), &o);
        let st = condition(&s, "Stalled");
        assert_eq!(
            (st.status.as_str(), st.reason.as_str()),
            ("True", "InvalidSpec")
        );
        assert_eq!(condition(&s, "Reconciling").status, "False");

        // Crash-looping pods with a recent commit are Degraded only...
        let mut o = healthy(1);
        o.crashing = vec!["pod x restarted 3 times".into()];
        let s = compute(&KafkaTableStatus::default(), &o);
        assert_eq!(condition(&s, "Degraded").reason, "PodsCrashLooping");
        assert_eq!(condition(&s, "Stalled").status, "False");
        // ...and Stalled once nothing was committed for three commit intervals.
        o.reports[0].last_commit_ms = None;
        let s = compute(&KafkaTableStatus::default(), &o);
        let st = condition(&s, "Stalled");
        assert_eq!(
            (st.status.as_str(), st.reason.as_str()),
            ("True", "PodsCrashLooping")
        );
        assert!(
            st.message.contains("nothing was ever committed"),
            "{}",
            st.message
        );

        // An unreachable broker fixes itself when the broker returns: not Stalled.
        let mut o = healthy(1);
        o.topic = Err(TopicError::unreachable("connection refused"));
        let s = compute(&KafkaTableStatus::default(), &o);
        assert_eq!(condition(&s, "Degraded").reason, "BrokerUnreachable");
        assert_eq!(condition(&s, "Stalled").status, "False");
    }

    #[test]
    fn transition_time_stays_while_the_status_holds() {
        let s1 = compute(&KafkaTableStatus::default(), &healthy(1));
        let mut later = healthy(1);
        later.now = Time(jiff::Timestamp::from_second(1_800_000_100).expect("time"));
        let s2 = compute(&s1, &later);
        assert_eq!(
            condition(&s1, "Ready").last_transition_time,
            condition(&s2, "Ready").last_transition_time
        );
        assert!(changed(&s1.conditions, &s2.conditions).is_empty());
    }
}
