//! The kafkatable test harness.
//!
//! - [`avro`]: Avro records from the `confluent-kafka` Python serializer.
//! - [`env`]: where the real infrastructure started by `e2e/tools/infra.sh` listens.
//! - [`fuzz`]: a mutation fuzzer of the ingester's decoders (`make fuzz`, and a short run in
//!   the tests).
//! - [`fixtures`]: a fresh namespace, topic or bucket per test, removed afterwards.
//! - [`ingester`]: the ingester binary as a process of a test.
//! - [`kubelet`]: the process kubelet that runs pods as local processes.
//! - [`operator`]: the operator installed with its Helm chart into a test's namespace.
//! - [`broker`]: a Kafka broker of a test's own, for tests that stop it.
//! - [`store`]: a MinIO server of a test's own, for tests that kill it.
//! - [`registry`]: an Apicurio Registry of a test's own, for tests that stop it.
//! - [`proxy`]: an HTTP proxy that loses chosen responses (fault injection in front of MinIO).

pub mod avro;
pub mod broker;
pub mod env;
pub mod fixtures;
pub mod fuzz;
pub mod ingester;
pub mod kubelet;
pub mod operator;
pub mod proxy;
pub mod registry;
pub mod store;

/// Selects rustls' ring provider for this process (the dependency graph enables two, so rustls
/// will not pick one itself). Harmless when called again.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
