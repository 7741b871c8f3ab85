//! The KafkaTable API (group `kafkatable.io`, version `v1alpha1`).
//!
//! This crate holds the types both binaries share: the custom resource the user applies and,
//! later, the ingester configuration the operator renders from it.

/// The API group of every kafkatable resource.
pub const GROUP: &str = "kafkatable.io";
/// The served and stored API version.
pub const VERSION: &str = "v1alpha1";
