//! kafkatable-ingester: one member of a KafkaTable's consumer group. It consumes the topic,
//! decodes records into Arrow, writes Parquet into the table and commits the Kafka offsets in
//! the same table commit, so the table holds every record exactly once.
//!
//! One record's way: [`source::KafkaSource`] receives it and [`coordinator::Coordinator`]
//! decides it belongs to the next commit (its partition is past the table's sync point) and
//! counts it into the [`txn::Transaction`]; [`sink::TableSink`] pushes it to its partition's
//! [`decode::Decoder`] (JSON, string or bytes; a record whose schema must be fetched first
//! waits in line for the decoder's lookup), which closes a chunk of Arrow rows against the
//! value schema that [`schema`] decided; the rows step adds the partition columns ([`partition`]) and keeps a
//! tombstone a keyed row of nulls (refused without metadata columns); between polls the
//! committer ([`commit`]) encodes the chunk into the transaction's Parquet files; when the
//! coordinator's trigger fires (records, bytes, interval), the committer writes the files and
//! the transaction's next offsets in one table commit, fenced on the sync points the ranges
//! started from, and the coordinator mirrors the offsets to the consumer group.
//!
//! - [`source`]: the record source seam and the Kafka consumer with its rebalance events.
//! - [`coordinator`]: partition phases, the transaction, commit triggers, rewinds, back-off.
//! - [`txn`]: the next commit as one value.
//! - [`sink`]: the table side: decode, rows, stage, commit.
//! - [`decode`]: the decoder seam and its formats, payloads to Arrow; [`schema`]: the value schema against the table's;
//!   [`partition`]: partition columns.
//! - [`commit`]: one committer per table format; files and offsets in one commit.
//! - [`metrics`], [`http`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`load`]: the configuration, from the operator's ConfigMap or a KafkaTable manifest.

pub mod bad;
pub mod bench;
pub mod commit;
pub mod coordinator;
pub mod deadletter;
pub mod decode;
pub mod error;
pub mod http;
pub mod load;
pub mod metrics;
pub mod partition;
pub mod registry;
pub mod schema;
pub mod sink;
pub mod source;
pub mod txn;
