//! What can go wrong in the ingester, with the topic, partition, offset or table it concerns.

use std::path::PathBuf;

/// A record (or chunk of records) that cannot become rows.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("topic {topic} partition {partition} offset {offset}: {reason}")]
    Record {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
    /// A field the value schema does not have (schema evolution may add it).
    #[error(
        "topic {topic} partition {partition} offset {offset}: field {field} is not in the table's schema"
    )]
    UnknownField {
        topic: String,
        partition: i32,
        offset: i64,
        field: String,
    },
    #[error("topic {topic} partition {partition}: {expected} records decoded into {got} rows")]
    Count {
        topic: String,
        partition: i32,
        expected: usize,
        got: usize,
    },
    /// A value that would change on its way into the table, in a batch without the metadata
    /// columns that would name its record.
    #[error("column {column}: {reason}")]
    Column { column: String, reason: String },
    #[error("cannot infer a schema from the records: {0}")]
    Infer(String),
}

/// Everything that stops the ingester.
#[derive(Debug, thiserror::Error)]
pub enum IngesterError {
    #[error("cannot read {path}: {source}")]
    ReadConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is neither an ingester config nor a KafkaTable manifest: {reason}")]
    ParseConfig { path: PathBuf, reason: String },
    #[error("invalid configuration: {0}")]
    Config(#[from] kafkatable_crds::config::ConfigError),
    #[error("cannot read the secret file {path}: {source}")]
    Secret {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kafka: {action}: {source}")]
    Kafka {
        action: &'static str,
        source: rdkafka::error::KafkaError,
    },
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("table {table}: {action}: {reason}")]
    Table {
        table: String,
        action: &'static str,
        reason: String,
    },
    /// The table or catalog cannot be read (a store or catalog outage, usually).
    #[error("table {table}: {action}: {reason}")]
    TableUnreachable {
        table: String,
        action: &'static str,
        reason: String,
    },
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("cannot serve HTTP on {addr}: {source}")]
    Http {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

impl IngesterError {
    /// Whether trying again later may succeed (an outage), as opposed to what no retry mends
    /// (a bad record, a refused setting or table feature).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Table { .. } | Self::TableUnreachable { .. } | Self::Kafka { .. }
        )
    }

    /// A table error as an unreachable table (for errors of reading it).
    pub fn unreachable(self) -> Self {
        match self {
            Self::Table {
                table,
                action,
                reason,
            } => Self::TableUnreachable {
                table,
                action,
                reason,
            },
            other => other,
        }
    }
}
