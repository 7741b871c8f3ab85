//! What an ingester reports at `GET /status`; the operator folds the reports of a table's pods
//! into the KafkaTable status.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The state of one ingester.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IngesterReport {
    /// Ready: holds partitions, reaches the broker and the table.
    pub ready: bool,
    /// The Kafka partitions this member holds.
    pub partitions: Vec<i32>,
    /// The next offset of each held partition as recorded in the table (read on assignment,
    /// advanced by each commit). Partitions the table has no offset for are absent.
    pub sync_points: BTreeMap<i32, i64>,
    /// The table version of this member's last commit (Delta version, Iceberg sequence
    /// number).
    pub table_version: Option<i64>,
    /// The Iceberg snapshot id of this member's last commit.
    pub snapshot_id: Option<i64>,
    /// When this member last committed, in milliseconds since the epoch.
    pub last_commit_ms: Option<i64>,
    /// The Kafka timestamp of the newest record this member committed, in milliseconds since
    /// the epoch.
    pub newest_record_ms: Option<i64>,
    /// Why the broker is unreachable, when it is.
    pub broker_error: Option<String>,
    /// Why the schema registry does not answer, while a request to it is being retried.
    pub registry_error: Option<String>,
    /// Why the last table or catalog operation failed, when it did.
    pub table_error: Option<String>,
    /// Table commits that failed in a row.
    pub commit_failures: u32,
    /// Partitions stopped at a bad record (`errors.policy: fail`), by partition.
    #[serde(default)]
    pub stopped: Vec<BadRecordReport>,
    /// Bad records skipped (`errors.policy: skip`) by commits of this ingester since it started.
    #[serde(default)]
    pub skipped_records: u64,
    /// Bad records dead-lettered by commits of this ingester since it started.
    #[serde(default)]
    pub dead_lettered_records: u64,
    /// The newest bad record this ingester met.
    #[serde(default)]
    pub last_bad_record: Option<BadRecordReport>,
    /// Bad records skipped or dead-lettered by commits within the last
    /// `errors.degradedRate.window`.
    #[serde(default)]
    pub recent_bad_records: u64,
}

/// A bad record: where it is, and why it is bad.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BadRecordReport {
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
    /// When the ingester met it, in milliseconds since the epoch.
    pub at_ms: i64,
}
