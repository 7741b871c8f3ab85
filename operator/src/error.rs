//! What can go wrong in the operator, with the object it concerns.

use rdkafka::error::KafkaError;

/// Everything a reconcile or the operator's start-up can fail with.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The spec cannot become an ingester config (the CRD's rules let it through).
    #[error("invalid spec: {0}")]
    InvalidSpec(#[from] kafkatable_crds::config::ConfigError),
    #[error("kubernetes: {action} {object}: {source}")]
    Kube {
        action: &'static str,
        object: String,
        source: kube::Error,
    },
    /// A Secret the spec references lacks a key (or its value is not UTF-8).
    #[error("Secret {secret} has no key {key} (or its value is not UTF-8)")]
    SecretKey { secret: String, key: String },
    #[error("kafka {brokers}: {action}: {source}")]
    Kafka {
        brokers: String,
        action: &'static str,
        source: KafkaError,
    },
    /// The brokers refused the credentials (SASL) the spec names.
    #[error("kafka {brokers}: authentication failed: {reason}")]
    AuthenticationFailed { brokers: String, reason: String },
    /// The TLS handshake with the brokers failed (spec.source.security.tls).
    #[error("kafka {brokers}: TLS handshake failed: {reason}")]
    TlsFailed { brokers: String, reason: String },
    #[error("kafka {brokers}: topic {topic} does not exist")]
    NoTopic { brokers: String, topic: String },
    /// A blocking Kafka call's task did not finish (it panicked or was cancelled).
    #[error("kafka task: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A KafkaTable without a uid (not read from the API server): children cannot name it
    /// as their owner.
    #[error("KafkaTable {0} has no uid yet")]
    NoUid(String),
    #[error("cannot serialize a child object: {0}")]
    Serialize(#[from] serde_json::Error),
    /// Deletion waits for something (the ingesters to stop before their group is deleted).
    #[error("deletion waits: {0}")]
    CleanupPending(String),
    #[error("finalizer: {0}")]
    Finalizer(Box<kube::runtime::finalizer::Error<OperatorError>>),
    #[error(
        "the KafkaTable CRD is not installed (kubectl apply -f crds/kafkatable.yaml, or install the Helm chart): {0}"
    )]
    CrdMissing(kube::Error),
    #[error("leader election: {0}")]
    Leader(String),
}

/// What kind of failure an [`OperatorError`] is: a closed set, used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The spec cannot work; it waits for the user.
    InvalidSpec,
    /// The API server refused a child object as invalid (422); it waits for the user too.
    Refused,
    /// Another Kubernetes API error.
    Kubernetes,
    /// A referenced Secret lacks a key.
    Secret,
    Kafka,
    /// Deletion waits for the ingesters to stop.
    CleanupPending,
    /// The operator's own machinery (a task, serialization, the finalizer, leader election).
    Internal,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidSpec => "invalid_spec",
            Self::Refused => "refused",
            Self::Kubernetes => "kubernetes",
            Self::Secret => "secret",
            Self::Kafka => "kafka",
            Self::CleanupPending => "cleanup_pending",
            Self::Internal => "internal",
        }
    }
}

impl OperatorError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidSpec(_) => ErrorKind::InvalidSpec,
            Self::Kube { .. } if self.is_refused() => ErrorKind::Refused,
            Self::Kube { .. } | Self::CrdMissing(_) => ErrorKind::Kubernetes,
            Self::SecretKey { .. } => ErrorKind::Secret,
            Self::Kafka { .. }
            | Self::NoTopic { .. }
            | Self::AuthenticationFailed { .. }
            | Self::TlsFailed { .. } => ErrorKind::Kafka,
            Self::CleanupPending(_) => ErrorKind::CleanupPending,
            Self::Task(_)
            | Self::NoUid(_)
            | Self::Serialize(_)
            | Self::Finalizer(_)
            | Self::Leader(_) => ErrorKind::Internal,
        }
    }

    /// Whether retrying soon can help (an invalid spec, or a child the API refuses, waits for
    /// the user instead).
    pub fn is_transient(&self) -> bool {
        !matches!(self.kind(), ErrorKind::InvalidSpec | ErrorKind::Refused)
    }

    /// Whether the API server refused an object as invalid (422): the spec made a child it
    /// does not take, and only a change of the spec helps.
    pub fn is_refused(&self) -> bool {
        matches!(
            self,
            Self::Kube {
                source: kube::Error::Api(status),
                ..
            } if status.code == 422
        )
    }

    /// The object (or brokers, or Secret) the error concerns, when it names one.
    pub fn object(&self) -> Option<&str> {
        match self {
            Self::Kube { object, .. } => Some(object),
            Self::SecretKey { secret, .. } => Some(secret),
            Self::Kafka { brokers, .. }
            | Self::NoTopic { brokers, .. }
            | Self::AuthenticationFailed { brokers, .. }
            | Self::TlsFailed { brokers, .. } => Some(brokers),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafkatable_crds::config::ConfigError;

    fn api_error(code: u16) -> OperatorError {
        let status = kube::core::Status::failure("refused", "Invalid").with_code(code);
        OperatorError::Kube {
            action: "apply",
            object: "Deployment t".into(),
            source: kube::Error::Api(Box::new(status)),
        }
    }

    #[test]
    fn every_error_has_a_kind_and_says_whether_to_retry_soon() {
        let invalid = OperatorError::InvalidSpec(ConfigError::Missing {
            field: "spec.table.location",
            why: "a delta table needs one",
        });
        assert_eq!(
            (invalid.kind(), invalid.is_transient()),
            (ErrorKind::InvalidSpec, false)
        );

        let refused = api_error(422);
        assert_eq!(
            (refused.kind(), refused.is_transient()),
            (ErrorKind::Refused, false)
        );
        assert_eq!(refused.object(), Some("Deployment t"));
        let conflict = api_error(409);
        assert_eq!(
            (conflict.kind(), conflict.is_transient()),
            (ErrorKind::Kubernetes, true)
        );

        let kafka = OperatorError::Kafka {
            brokers: "kafka:9092".into(),
            action: "read the watermarks",
            source: KafkaError::MetadataFetch(
                rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure,
            ),
        };
        assert_eq!(
            (kafka.kind().as_str(), kafka.is_transient()),
            ("kafka", true)
        );
        assert_eq!(kafka.object(), Some("kafka:9092"));

        let secret = OperatorError::SecretKey {
            secret: "creds".into(),
            key: "password".into(),
        };
        assert_eq!(secret.kind(), ErrorKind::Secret);
        assert!(secret.to_string().contains("creds"), "{secret}");
    }
}
