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
    /// A column the records write as a wider type than the table's (schema evolution may
    /// widen it), with the reason it is refused otherwise.
    #[error("topic {topic} partition {partition} offset {offset}: {reason}")]
    WiderField {
        topic: String,
        partition: i32,
        offset: i64,
        field: String,
        reason: String,
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

/// A library's error behind a failed table operation, kept as its own type (downcast it to
/// match it; its message is for people).
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Everything that stops the ingester, or pauses it while the table cannot be reached.
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
    #[error("spec.source.schema: {0}")]
    GivenSchema(String),
    #[error("cannot read the secret file {path}: {source}")]
    Secret {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kafka: topic {topic}: {action}: {source}")]
    Kafka {
        topic: String,
        action: &'static str,
        source: rdkafka::error::KafkaError,
    },
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A table operation failed (a failed commit, a store that refused a file).
    #[error("table {table}: {action}: {source}")]
    Table {
        table: String,
        action: &'static str,
        source: Cause,
    },
    /// The table or catalog cannot be read (a store or catalog outage, usually).
    #[error("table {table}: {action}: {source}")]
    TableUnreachable {
        table: String,
        action: &'static str,
        source: Cause,
    },
    /// A dead-letter transaction that did not commit (the records are read again).
    #[error("dead letters to {topic}: {action}: {reason}")]
    DeadLetters {
        topic: String,
        action: &'static str,
        reason: String,
    },
    /// Another ingester wrote a partition's dead letters to the dead-letter table since this
    /// one took the partition over: what this one knows of it is stale, so it starts again.
    #[error(
        "dead-letter table {table}: another ingester wrote partition {partition}'s dead letters since this one took it over"
    )]
    Superseded { table: String, partition: i32 },
    /// A setting or a table feature this ingester cannot honour.
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("cannot serve HTTP on {addr}: {source}")]
    Http {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// What kind of failure an [`IngesterError`] is: a closed set, fit for metric labels and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The configuration file, a Secret file or a setting.
    Config,
    /// The Kafka client.
    Kafka,
    /// A record that cannot become a row (the error policy applies).
    Record,
    /// A table operation that failed.
    Table,
    /// The table or catalog cannot be read.
    TableUnreachable,
    /// A setting or table feature this ingester cannot honour.
    Unsupported,
    /// The ingester's own HTTP endpoint.
    Http,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Kafka => "kafka",
            Self::Record => "record",
            Self::Table => "table",
            Self::TableUnreachable => "table_unreachable",
            Self::Unsupported => "unsupported",
            Self::Http => "http",
        }
    }
}

/// What an error concerns, as far as it knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorContext<'a> {
    pub topic: Option<&'a str>,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub table: Option<&'a str>,
}

impl IngesterError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::ReadConfig { .. }
            | Self::ParseConfig { .. }
            | Self::Config(_)
            | Self::GivenSchema(_)
            | Self::Secret { .. } => ErrorKind::Config,
            Self::Kafka { .. } | Self::DeadLetters { .. } => ErrorKind::Kafka,
            Self::Decode(_) => ErrorKind::Record,
            Self::Table { .. } | Self::Superseded { .. } => ErrorKind::Table,
            Self::TableUnreachable { .. } => ErrorKind::TableUnreachable,
            Self::Unsupported(_) => ErrorKind::Unsupported,
            Self::Http { .. } => ErrorKind::Http,
        }
    }

    /// Whether trying again later may succeed (an outage), as opposed to what no retry mends
    /// (a bad record, a refused setting or table feature, a Kafka client that cannot be
    /// configured).
    pub fn is_retryable(&self) -> bool {
        use rdkafka::error::KafkaError as K;
        match self {
            Self::Table { .. } | Self::TableUnreachable { .. } | Self::DeadLetters { .. } => true,
            Self::Kafka { source, .. } => !matches!(
                source,
                K::ClientConfig(..) | K::ClientCreation(_) | K::Subscription(_) | K::Nul(_)
            ),
            _ => false,
        }
    }

    /// The topic, partition, offset or table the error concerns.
    pub fn context(&self) -> ErrorContext<'_> {
        match self {
            Self::Kafka { topic, .. } => ErrorContext {
                topic: Some(topic),
                ..ErrorContext::default()
            },
            Self::Decode(e) => e.context(),
            Self::Table { table, .. }
            | Self::TableUnreachable { table, .. }
            | Self::Superseded { table, .. } => ErrorContext {
                table: Some(table),
                ..ErrorContext::default()
            },
            _ => ErrorContext::default(),
        }
    }

    /// The Kafka client's error while doing `action` on `topic`.
    pub fn kafka(
        topic: &str,
        action: &'static str,
    ) -> impl FnOnce(rdkafka::error::KafkaError) -> Self {
        move |source| Self::Kafka {
            topic: topic.to_string(),
            action,
            source,
        }
    }

    /// A table operation that failed, with the library's error as its cause.
    pub fn table(table: &str, action: &'static str, cause: impl Into<Cause>) -> Self {
        Self::Table {
            table: table.to_string(),
            action,
            source: cause.into(),
        }
    }

    /// A table error as an unreachable table (for errors of reading it).
    pub fn unreachable(self) -> Self {
        match self {
            Self::Table {
                table,
                action,
                source,
            } => Self::TableUnreachable {
                table,
                action,
                source,
            },
            other => other,
        }
    }
}

impl DecodeError {
    /// The topic, partition and offset of the record (or chunk) that failed.
    pub fn context(&self) -> ErrorContext<'_> {
        match self {
            Self::Record {
                topic,
                partition,
                offset,
                ..
            }
            | Self::UnknownField {
                topic,
                partition,
                offset,
                ..
            }
            | Self::WiderField {
                topic,
                partition,
                offset,
                ..
            } => ErrorContext {
                topic: Some(topic),
                partition: Some(*partition),
                offset: Some(*offset),
                table: None,
            },
            Self::Count {
                topic, partition, ..
            } => ErrorContext {
                topic: Some(topic),
                partition: Some(*partition),
                ..ErrorContext::default()
            },
            Self::Column { .. } | Self::Infer(_) => ErrorContext::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_says_its_kind_context_and_whether_to_retry() {
        use rdkafka::error::{KafkaError, RDKafkaErrorCode};
        let outage = IngesterError::table(
            "s3://bucket/t",
            "read the snapshot",
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
        )
        .unreachable();
        assert_eq!(outage.kind(), ErrorKind::TableUnreachable);
        assert!(outage.is_retryable());
        assert_eq!(outage.context().table, Some("s3://bucket/t"));
        // The cause keeps its type.
        let IngesterError::TableUnreachable { source, .. } = &outage else {
            panic!("{outage}")
        };
        let io = source.downcast_ref::<std::io::Error>().map(|e| e.kind());
        assert_eq!(io, Some(std::io::ErrorKind::ConnectionRefused));

        let record = IngesterError::from(DecodeError::Record {
            topic: "events".into(),
            partition: 3,
            offset: 42,
            reason: "not JSON".into(),
        });
        assert_eq!(record.kind(), ErrorKind::Record);
        assert!(!record.is_retryable(), "a bad record stays bad");
        let context = record.context();
        assert_eq!(
            (context.topic, context.partition, context.offset),
            (Some("events"), Some(3), Some(42))
        );

        let kafka = |source| IngesterError::Kafka {
            topic: "events".into(),
            action: "consume",
            source,
        };
        let broker_down = kafka(KafkaError::MessageConsumption(
            RDKafkaErrorCode::BrokerTransportFailure,
        ));
        assert!(broker_down.is_retryable());
        assert_eq!(broker_down.context().topic, Some("events"));
        let misconfigured = kafka(KafkaError::ClientCreation("bad ssl.ca.location".into()));
        assert!(!misconfigured.is_retryable(), "{misconfigured}");
        assert_eq!(misconfigured.kind().as_str(), "kafka");

        let unsupported = IngesterError::Unsupported("a column type".into());
        assert_eq!(
            (unsupported.kind(), unsupported.is_retryable()),
            (ErrorKind::Unsupported, false)
        );
    }
}
