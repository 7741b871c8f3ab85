//! What can go wrong in the operator, with the object it concerns.

/// Everything a reconcile or the operator's start-up can fail with.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The spec cannot become an ingester config (the CRD's rules let it through).
    #[error("invalid spec: {0}")]
    InvalidSpec(#[from] kafkatable_crds::config::ConfigError),
    #[error("cannot render the children: {0}")]
    Render(String),
    #[error("kubernetes: {action} {object}: {source}")]
    Kube {
        action: &'static str,
        object: String,
        source: kube::Error,
    },
    #[error("kafka {brokers}: {action}: {reason}")]
    Kafka {
        brokers: String,
        action: &'static str,
        reason: String,
    },
    /// Deletion waits for something (the ingesters to stop before their group is deleted).
    #[error("deletion waits: {0}")]
    CleanupPending(String),
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error(
        "the KafkaTable CRD is not installed (kubectl apply -f crds/kafkatable.yaml, or install the Helm chart): {0}"
    )]
    CrdMissing(kube::Error),
    #[error("leader election: {0}")]
    Leader(String),
}

impl OperatorError {
    /// Whether retrying soon can help (an invalid spec waits for the user instead).
    pub fn is_transient(&self) -> bool {
        !matches!(self, Self::InvalidSpec(_)) && !self.is_refused()
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
}
