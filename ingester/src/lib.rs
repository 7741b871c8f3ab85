//! kafkatable-ingester: one member of a KafkaTable's consumer group. It consumes the topic,
//! decodes records into Arrow, writes Parquet into the table and commits the Kafka offsets in
//! the same table commit, so the table holds every record exactly once.
//!
//! - [`source`]: the Kafka consumer and its rebalance events.
//! - [`decode`]: payloads to Arrow; [`schema`]: the value schema against the table's;
//!   [`partition`]: partition columns.
//! - [`commit`]: one committer per table format; files and offsets in one commit.
//! - [`run`]: the loop that ties them together.
//! - [`metrics`], [`http`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`load`]: the configuration, from the operator's ConfigMap or a KafkaTable manifest.

pub mod bench;
pub mod commit;
pub mod decode;
pub mod error;
pub mod http;
pub mod load;
pub mod metrics;
pub mod partition;
pub mod run;
pub mod schema;
pub mod source;
