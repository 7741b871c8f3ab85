//! The kafkatable operator: reconciles each KafkaTable into an ingester Deployment (with its
//! ConfigMap, metrics Service and PodDisruptionBudget), sizes it by consumer lag and reports
//! health, lag and sync points in the KafkaTable's status.
//!
//! - [`render`]: spec -> children (pure).
//! - [`autoscale`]: lag history -> replica count (pure).
//! - [`status`]: observations -> status and conditions (pure).
//! - [`observe`]: the I/O that feeds them: topic offsets from Kafka, the ingesters' reports.
//! - [`reconcile`]: the controller: apply, cleanup, events, error policy.
//! - [`leader`]: leader election on a Lease, so that several replicas can run.
//! - [`metrics`]: the operator's Prometheus metrics and HTTP endpoints.

pub mod autoscale;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod reconcile;
pub mod render;
pub mod status;

pub use error::OperatorError;
