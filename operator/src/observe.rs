//! The I/O that feeds the status and the autoscaler: the topic's partitions and watermarks
//! from Kafka, committed group offsets, the ingester pods and their `/status` reports.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kafkatable_crds::KafkaTable;
use kafkatable_crds::report::IngesterReport;
use kafkatable_crds::spec::{SaslMechanism, SecurityProtocol};
use kube::Api;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::error::OperatorError;
use crate::render::METRICS_PORT;
use crate::status::Watermarks;

/// How long one Kafka call may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an ingester has to answer `/status`.
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// Kafka clients shared by every table with the same brokers and credentials, so a thousand
/// tables on one cluster cost one connection set.
#[derive(Default)]
pub struct KafkaClients {
    clients: Mutex<HashMap<String, Arc<BaseConsumer<Watch>>>>,
    /// Partition ids per (cluster, topic), read from the metadata at most every
    /// [`METADATA_MAX_AGE`].
    partitions: Mutex<HashMap<String, (std::time::Instant, Vec<i32>)>>,
}

/// A Kafka client's context that remembers the last authentication failure librdkafka
/// reported: a request whose connection was refused authentication only times out, and the
/// reason comes as an error event (served by [`BaseConsumer::poll`]).
#[derive(Default)]
pub struct Watch {
    refusal: Mutex<Option<Refusal>>,
}

/// Why the brokers refused the connection, as librdkafka's error events say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// SASL authentication failed.
    Authentication(String),
    /// The TLS handshake failed (an unknown CA, a name that does not match, a TLS/plaintext
    /// mix-up).
    Tls(String),
}

impl Watch {
    fn take_refusal(&self) -> Option<Refusal> {
        self.refusal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

impl rdkafka::ClientContext for Watch {
    fn error(&self, error: KafkaError, reason: &str) {
        let refusal = match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::Authentication) => Some(Refusal::Authentication(reason.into())),
            Some(RDKafkaErrorCode::SSL) => Some(Refusal::Tls(reason.into())),
            _ => None,
        };
        if refusal.is_some() {
            *self
                .refusal
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = refusal;
        }
        tracing::debug!(error = %error, reason, "kafka client error");
    }
}

impl rdkafka::consumer::ConsumerContext for Watch {}

/// How long a topic's partition list is reused before the metadata is read again.
const METADATA_MAX_AGE: Duration = Duration::from_secs(30);

/// How to reach a table's brokers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub brokers: String,
    settings: Vec<(String, String)>,
}

impl Endpoint {
    fn key(&self) -> String {
        format!("{}|{:?}", self.brokers, self.settings)
    }

    fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", "kafkatable-operator")
            .set("socket.timeout.ms", "5000")
            // The operator only reads metadata and offsets; a short reconnect backoff finds a
            // returning broker quickly.
            .set("reconnect.backoff.max.ms", "2000");
        for (k, v) in &self.settings {
            c.set(k, v);
        }
        c
    }
}

/// Where the keys of Secrets come from (the API server; a map in tests).
#[allow(async_fn_in_trait)] // used generically, never as a trait object
pub trait SecretKeys {
    async fn key(&self, secret: &str, key: &str) -> Result<String, OperatorError>;
}

impl SecretKeys for Api<Secret> {
    async fn key(&self, secret: &str, key: &str) -> Result<String, OperatorError> {
        secret_key(self, secret, key).await
    }
}

/// The broker endpoint of `kt`, reading its SASL credentials, CA and client certificate from
/// its Secrets.
pub async fn endpoint(
    kt: &KafkaTable,
    secrets: &impl SecretKeys,
) -> Result<Endpoint, OperatorError> {
    let source = &kt.spec.source;
    let mut settings = Vec::new();
    if let Some(security) = &source.security {
        let protocol = match security.protocol {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        };
        settings.push(("security.protocol".into(), protocol.into()));
        if let Some(sasl) = &security.sasl {
            let name = &sasl.credentials_secret_ref.name;
            let mechanism = match sasl.mechanism {
                SaslMechanism::Plain => "PLAIN",
                SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
                SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            };
            settings.push(("sasl.mechanism".into(), mechanism.into()));
            settings.push(("sasl.username".into(), secrets.key(name, "username").await?));
            settings.push(("sasl.password".into(), secrets.key(name, "password").await?));
        }
        let tls = security.tls.as_ref();
        if let Some(ca) = tls.and_then(|t| t.ca_secret_ref.as_ref()) {
            settings.push(("ssl.ca.pem".into(), secrets.key(&ca.name, "ca.crt").await?));
        }
        // Brokers that authenticate clients by certificate (mutual TLS) see the same
        // certificate from the operator as from the ingesters.
        if let Some(cert) = tls.and_then(|t| t.client_cert_secret_ref.as_ref()) {
            settings.push((
                "ssl.certificate.pem".into(),
                secrets.key(&cert.name, "tls.crt").await?,
            ));
            settings.push((
                "ssl.key.pem".into(),
                secrets.key(&cert.name, "tls.key").await?,
            ));
        }
    }
    Ok(Endpoint {
        brokers: source.brokers.clone(),
        settings,
    })
}

/// The Secrets the spec names that do not exist or lack a key the ingester reads, as messages
/// naming each: a pod that mounts them would wait without a word in the status. (The
/// catalog's Secret holds a token or a user and password, so only its existence is checked.)
pub async fn missing_secrets(kt: &KafkaTable, secrets: &Api<Secret>) -> Vec<String> {
    let mut missing = Vec::new();
    for (name, used) in kafkatable_crds::config::secrets_by_name(kt) {
        match secrets.get_opt(&name).await {
            Ok(None) => missing.push(format!("Secret {name} does not exist")),
            Ok(Some(secret)) => {
                let data = secret.data.unwrap_or_default();
                let absent: Vec<&str> = used
                    .required
                    .iter()
                    .copied()
                    .filter(|k| !data.contains_key(*k))
                    .collect();
                if !absent.is_empty() {
                    missing.push(format!("Secret {name} has no key {}", absent.join(", ")));
                }
            }
            // Not knowing is not missing: the endpoint's own read reports API errors.
            Err(e) => tracing::debug!(secret = %name, error = %e, "cannot read a Secret"),
        }
    }
    missing
}

/// The ConfigMap keys the spec names (a value schema) that do not exist, as messages naming
/// each: a pod that mounts them would wait without a word in the status.
pub async fn missing_config_maps(kt: &KafkaTable, config_maps: &Api<ConfigMap>) -> Vec<String> {
    let mut missing = Vec::new();
    for (name, key) in kafkatable_crds::config::referenced_config_maps(kt) {
        match config_maps.get_opt(&name).await {
            Ok(None) => missing.push(format!("ConfigMap {name} does not exist")),
            Ok(Some(cm)) => {
                let has = cm.data.is_some_and(|d| d.contains_key(&key))
                    || cm.binary_data.is_some_and(|d| d.contains_key(&key));
                if !has {
                    missing.push(format!("ConfigMap {name} has no key {key}"));
                }
            }
            Err(e) => tracing::debug!(config_map = %name, error = %e, "cannot read a ConfigMap"),
        }
    }
    missing
}

async fn secret_key(secrets: &Api<Secret>, name: &str, key: &str) -> Result<String, OperatorError> {
    let secret = secrets
        .get(name)
        .await
        .map_err(|source| OperatorError::Kube {
            action: "read",
            object: format!("Secret {name}"),
            source,
        })?;
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .ok_or_else(|| OperatorError::SecretKey {
            secret: name.to_string(),
            key: key.to_string(),
        })
}

impl KafkaClients {
    fn client(&self, endpoint: &Endpoint) -> Result<Arc<BaseConsumer<Watch>>, OperatorError> {
        let key = endpoint.key();
        // A cache of clients stays sound if a holder panicked.
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let client: BaseConsumer<Watch> = endpoint
            .config()
            .create_with_context(Watch::default())
            .map_err(|source| OperatorError::Kafka {
            brokers: endpoint.brokers.clone(),
            action: "create a client",
            source,
        })?;
        let client = Arc::new(client);
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// The topic's partitions with their low and high watermarks: two ListOffsets requests
    /// for all partitions (earliest and latest), and the metadata when the cached partition
    /// list is older than [`METADATA_MAX_AGE`].
    pub async fn watermarks(
        &self,
        endpoint: &Endpoint,
        topic: &str,
    ) -> Result<BTreeMap<i32, Watermarks>, OperatorError> {
        let client = self.client(endpoint)?;
        let key = format!("{}|{topic}", endpoint.key());
        let cached = self
            .partitions
            .lock()
            .ok()
            .and_then(|c| c.get(&key).cloned())
            .filter(|(at, _)| at.elapsed() < METADATA_MAX_AGE)
            .map(|(_, p)| p);
        let fresh = cached.is_none();
        let brokers = endpoint.brokers.clone();
        let topic = topic.to_string();
        let (partitions, marks) = tokio::task::spawn_blocking(move || {
            let result = read_watermarks(&client, cached, &topic, &brokers);
            // A connection the brokers refused says why: its error events are served now, one
            // per poll, behind the others the failed request queued.
            if result.is_err() {
                let refusal = (0..32).find_map(|_| {
                    let _ = client.poll(Duration::ZERO);
                    client.context().take_refusal()
                });
                match refusal {
                    Some(Refusal::Authentication(reason)) => {
                        return Err(OperatorError::AuthenticationFailed { brokers, reason });
                    }
                    Some(Refusal::Tls(reason)) => {
                        return Err(OperatorError::TlsFailed { brokers, reason });
                    }
                    None => {}
                }
            }
            result
        })
        .await??;
        if fresh && let Ok(mut cache) = self.partitions.lock() {
            cache.insert(key, (std::time::Instant::now(), partitions));
        }
        Ok(marks)
    }
}

/// The partitions (`cached`, or from the metadata) and watermarks of `topic`.
fn read_watermarks(
    client: &BaseConsumer<Watch>,
    cached: Option<Vec<i32>>,
    topic: &str,
    brokers: &str,
) -> Result<(Vec<i32>, BTreeMap<i32, Watermarks>), OperatorError> {
    let err = |action: &'static str, source: KafkaError| OperatorError::Kafka {
        brokers: brokers.to_string(),
        action,
        source,
    };
    let partitions = match cached {
        Some(p) => p,
        None => {
            let metadata = client
                .fetch_metadata(Some(topic), KAFKA_TIMEOUT)
                .map_err(|e| err("read the topic metadata", e))?;
            let found = metadata.topics().iter().find(|t| t.name() == topic);
            let Some(t) = found.filter(|t| {
                t.error() != Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
            }) else {
                return Err(OperatorError::NoTopic {
                    brokers: brokers.to_string(),
                    topic: topic.to_string(),
                });
            };
            if let Some(e) = t.error() {
                let code = RDKafkaErrorCode::from(e);
                return Err(err(
                    "read the topic metadata",
                    KafkaError::MetadataFetch(code),
                ));
            }
            t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>()
        }
    };
    // As timestamps of ListOffsets, Beginning (-2) asks for the earliest and End (-1)
    // for the latest offset.
    let offsets = |timestamp: Offset| {
        let mut list = TopicPartitionList::new();
        for &p in &partitions {
            list.add_partition_offset(topic, p, timestamp)
                .map_err(|e| err("read the watermarks", e))?;
        }
        let found = client
            .offsets_for_times(list, KAFKA_TIMEOUT)
            .map_err(|e| err("read the watermarks", e))?;
        Ok::<BTreeMap<i32, i64>, OperatorError>(
            found
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some((e.partition(), o)),
                    _ => None,
                })
                .collect(),
        )
    };
    let low = offsets(Offset::Beginning)?;
    let high = offsets(Offset::End)?;
    let marks: BTreeMap<i32, Watermarks> = partitions
        .iter()
        .map(|p| {
            let high = high.get(p).copied().unwrap_or(0);
            let low = low.get(p).copied().unwrap_or(high);
            (*p, Watermarks { low, high })
        })
        .collect();
    Ok((partitions, marks))
}

impl KafkaClients {
    /// The group's committed offsets for the topic's partitions (a short-lived client: group
    /// offsets are only read when the table's own sync points are unknown).
    pub async fn group_offsets(
        &self,
        endpoint: &Endpoint,
        group: &str,
        topic: &str,
        partitions: Vec<i32>,
    ) -> Result<BTreeMap<i32, i64>, OperatorError> {
        let mut config = endpoint.config();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false");
        let brokers = endpoint.brokers.clone();
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            let err = |source: KafkaError| OperatorError::Kafka {
                brokers: brokers.clone(),
                action: "read the group offsets",
                source,
            };
            let client: BaseConsumer = config.create().map_err(err)?;
            let mut list = TopicPartitionList::new();
            for p in partitions {
                list.add_partition(&topic, p);
            }
            let committed = client.committed_offsets(list, KAFKA_TIMEOUT).map_err(err)?;
            Ok(committed
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some((e.partition(), o)),
                    _ => None,
                })
                .collect())
        })
        .await?
    }
}

/// The ingester pods of a table and what they report.
#[derive(Debug, Clone, Default)]
pub struct Pods {
    pub reports: Vec<IngesterReport>,
    /// One message per pod that keeps failing.
    pub crashing: Vec<String>,
}

/// Looks at a table's ingester pods (from the operator's watch cache) and asks each running
/// one for its `/status`.
pub async fn pods(pods: &[Arc<Pod>], http: &HttpClient<HttpConnector, Empty<Bytes>>) -> Pods {
    let mut out = Pods::default();
    let mut asks = Vec::new();
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        let status = pod.status.as_ref();
        for cs in status
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
        {
            let waiting = cs.state.as_ref().and_then(|s| s.waiting.as_ref());
            let last = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref());
            if cs.restart_count > 0
                && (waiting.is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"))
                    || (!cs.ready && last.is_some_and(|t| t.exit_code != 0)))
            {
                let exit = last.map(|t| t.exit_code).unwrap_or_default();
                // The last line of the termination message is the ingester's error.
                let message = last
                    .and_then(|t| t.message.as_deref())
                    .and_then(|m| m.lines().rev().find(|l| !l.trim().is_empty()))
                    .unwrap_or_default()
                    .to_string();
                out.crashing.push(format!(
                    "pod {name} restarted {} times, last exit code {exit}{}{message} (see its log)",
                    cs.restart_count,
                    if message.is_empty() { "" } else { ": " },
                ));
            }
        }
        if let Some(ip) = status.and_then(|s| s.pod_ip.clone()) {
            asks.push(report(http, ip));
        }
    }
    out.reports = futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect();
    out
}

async fn report(
    http: &HttpClient<HttpConnector, Empty<Bytes>>,
    ip: String,
) -> Option<IngesterReport> {
    let uri: hyper::Uri = format!("http://{ip}:{METRICS_PORT}/status").parse().ok()?;
    let response = tokio::time::timeout(REPORT_TIMEOUT, http.get(uri))
        .await
        .ok()?
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body = tokio::time::timeout(REPORT_TIMEOUT, response.into_body().collect())
        .await
        .ok()?
        .ok()?
        .to_bytes();
    serde_json::from_slice(&body).ok()
}

/// A plain HTTP client for the ingesters' `/status`.
pub fn http_client() -> HttpClient<HttpConnector, Empty<Bytes>> {
    HttpClient::builder(TokioExecutor::new()).build_http()
}

/// Deletes a consumer group (opt-in at KafkaTable deletion).
pub async fn delete_group(endpoint: &Endpoint, group: &str) -> Result<(), OperatorError> {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let err = |source: KafkaError| OperatorError::Kafka {
        brokers: endpoint.brokers.clone(),
        action: "delete the consumer group",
        source,
    };
    let admin: AdminClient<DefaultClientContext> = endpoint.config().create().map_err(err)?;
    let options = AdminOptions::new().request_timeout(Some(KAFKA_TIMEOUT));
    let results = admin.delete_groups(&[group], &options).await.map_err(err)?;
    for result in results {
        match result {
            Ok(_) => {}
            // Already gone is fine.
            Err((_, rdkafka::types::RDKafkaErrorCode::GroupIdNotFound)) => {}
            Err((_, code)) => return Err(err(KafkaError::AdminOp(code))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Keys(BTreeMap<(&'static str, &'static str), &'static str>);

    impl SecretKeys for Keys {
        async fn key(&self, secret: &str, key: &str) -> Result<String, OperatorError> {
            self.0
                .iter()
                .find(|((s, k), _)| *s == secret && *k == key)
                .map(|(_, v)| v.to_string())
                .ok_or_else(|| OperatorError::SecretKey {
                    secret: secret.to_string(),
                    key: key.to_string(),
                })
        }
    }

    /// The operator's own Kafka client must present the client certificate too: a broker that
    /// requires mutual TLS refuses it otherwise, and the table's lag goes unknown.
    #[tokio::test]
    async fn the_kafka_client_presents_the_tables_ca_and_client_certificate() {
        let kt: KafkaTable = serde_json::from_value(serde_json::json!({
            "apiVersion": "kafkatable.io/v1alpha1",
            "kind": "KafkaTable",
            "metadata": {"name": "t", "namespace": "n"},
            "spec": {
                "source": {"brokers": "k:9093", "topic": "t", "security": {
                    "protocol": "SSL",
                    "tls": {"caSecretRef": {"name": "ca"}, "clientCertSecretRef": {"name": "client"}},
                }},
                "table": {"format": "delta", "location": "file:///t"},
            },
        }))
        .expect("manifest");
        let keys = Keys(BTreeMap::from([
            (("ca", "ca.crt"), "CA PEM"),
            (("client", "tls.crt"), "CERT PEM"),
            (("client", "tls.key"), "KEY PEM"),
        ]));
        let ep = endpoint(&kt, &keys).await.expect("endpoint");
        let config = ep.config();
        assert_eq!(config.get("security.protocol"), Some("ssl"));
        assert_eq!(config.get("ssl.ca.pem"), Some("CA PEM"));
        assert_eq!(config.get("ssl.certificate.pem"), Some("CERT PEM"));
        assert_eq!(config.get("ssl.key.pem"), Some("KEY PEM"));
        // A missing key is an error naming the Secret, not a client without the certificate.
        let partial = Keys(BTreeMap::from([(("ca", "ca.crt"), "CA PEM")]));
        let error = endpoint(&kt, &partial).await.expect_err("no certificate");
        assert!(error.to_string().contains("Secret client"), "{error}");
    }
}
