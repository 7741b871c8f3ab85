//! The `KafkaTable` status: what the operator observes and reports.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition types the operator writes.
pub mod condition {
    /// All desired ingesters are ready and nothing is wrong.
    pub const READY: &str = "Ready";
    /// A rollout or a catch-up is under way (kstatus: in progress).
    pub const RECONCILING: &str = "Reconciling";
    /// Something fails: the broker, a Secret, the table or catalog, commits, the pods.
    pub const DEGRADED: &str = "Degraded";
    /// What will not fix itself without a change: an invalid spec, or ingesters that
    /// crash-loop while nothing is committed (kstatus: failed).
    pub const STALLED: &str = "Stalled";
}

/// What the operator observed about the table and its ingesters.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KafkaTableStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Reconciling, Degraded and Stalled, one entry per type, each with the generation
    /// it was computed for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Ingester pods that exist.
    #[serde(default)]
    pub replicas: i32,

    /// Ingester pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,

    /// Ingester pods the operator wants (autoscaler or spec.replicas, within the partition count).
    #[serde(default)]
    pub desired_replicas: i32,

    /// Label selector of the ingester pods (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// Partitions of the source topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,

    /// Records produced but not yet committed to the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<Lag>,

    /// The next offset of every partition as committed in the table: ingestion resumes here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["partition".into()]))]
    pub sync_points: Vec<SyncPoint>,

    /// Delta: the table version. Iceberg: the last sequence number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_version: Option<i64>,

    /// Iceberg: the current snapshot id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<i64>,

    /// Time of the newest table commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_commit_time: Option<Time>,

    /// Seconds between now and the newest committed record's time, when last observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness_seconds: Option<i64>,

    // No row count: no part knows it exactly (a pod's count ends with the pod, and reading it
    // from the table costs a scan of its log per observation). The ingesters export
    // kafkatable_rows_committed_total.
    /// When the ingesters were last scaled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,

    /// Why the ingesters were last scaled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_reason: Option<String>,

    /// Bad records (see spec.errors) the ingesters met.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bad_records: Option<BadRecords>,
}

/// Bad records the ingesters met.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BadRecords {
    /// Records skipped (errors.policy skip) by the running ingesters since they started; each
    /// pod exports its own kafkatable_bad_records_total.
    #[serde(default)]
    pub skipped: i64,
    /// Records dead-lettered by the running ingesters since they started.
    #[serde(default)]
    pub dead_lettered: i64,
    /// Partitions stopped at a bad record (errors.policy fail): nothing at or after it is
    /// committed until the spec or the record's partition changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stopped: Vec<BadRecord>,
    /// The newest bad record met.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<BadRecord>,
}

/// A bad record of the source topic.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BadRecord {
    pub partition: i32,
    pub offset: i64,
    /// Why it is bad.
    pub reason: String,
    /// When an ingester met it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
}

/// Consumer lag of the table.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Lag {
    /// Sum over all partitions.
    pub total: i64,
    /// The largest lag of one partition.
    pub max_partition: i64,
    /// Lag of each partition: high watermark minus the table's sync point.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_partition: Vec<PartitionLag>,
}

/// Lag of one partition.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionLag {
    pub partition: i32,
    pub lag: i64,
}

/// The next offset to read from a partition, as committed in the table.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncPoint {
    pub partition: i32,
    pub offset: i64,
}
