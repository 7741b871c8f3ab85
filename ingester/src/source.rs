//! The Kafka consumer: one member of the table's consumer group with the cooperative-sticky
//! assignor and manual commits. Rebalance callbacks only send an event to the run loop; they
//! never block and never panic.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kafkatable_crds::config::{SourceConfig, StartPosition, UserPasswordFiles};
use kafkatable_crds::spec::{SaslMechanism, SecurityProtocol};
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, TopicPartitionList};
use tokio::sync::mpsc::UnboundedSender;

use crate::error::IngesterError;
use crate::http::Health;
use crate::metrics::Metrics;

/// A change of this member's assignment, as the run loop sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// Forwards rebalances to the run loop, errors to the log and metrics, and broker
/// reachability to the health report.
pub struct Context {
    topic: String,
    events: UnboundedSender<Assignment>,
    metrics: Metrics,
    health: Arc<Health>,
}

impl ClientContext for Context {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.metrics.kafka_errors.inc();
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.health
                .broker(Some(format!("no broker reachable: {reason}")));
        }
        tracing::warn!(%error, reason, "kafka client error");
    }

    /// librdkafka's periodic statistics: the lag of each assigned partition. The group's
    /// committed offsets mirror the table after every commit, so this is the table's lag.
    fn stats(&self, statistics: rdkafka::Statistics) {
        // Bootstrap entries (node id -1) are connections too; any broker up will do.
        let up = statistics.brokers.values().any(|b| b.state == "UP");
        self.metrics.broker_up.set(i64::from(up));
        if up {
            self.health.broker(None);
        } else {
            let states: Vec<String> = statistics
                .brokers
                .values()
                .map(|b| format!("{} {}", b.name, b.state))
                .collect();
            self.health.broker(Some(format!(
                "no broker connection is up ({})",
                states.join(", ")
            )));
        }
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        for (partition, p) in &topic.partitions {
            if *partition >= 0 && p.consumer_lag >= 0 {
                self.metrics
                    .partition_lag
                    .with_label_values(&[&partition.to_string()])
                    .set(p.consumer_lag);
            }
        }
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            self.metrics.rebalances.inc();
            // The receiver lives as long as the consumer; a send error means we are shutting down.
            let _ = self
                .events
                .send(Assignment::Revoked(partitions_of(list, &self.topic)));
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                self.metrics.rebalances.inc();
                let _ = self
                    .events
                    .send(Assignment::Assigned(partitions_of(list, &self.topic)));
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

fn partitions_of(list: &TopicPartitionList, topic: &str) -> Vec<i32> {
    list.elements()
        .iter()
        .filter(|e| e.topic() == topic)
        .map(|e| e.partition())
        .collect()
}

/// The librdkafka settings for the source: ours first, the spec's pass-through after (the CRD
/// refuses pass-through keys that would override ours).
pub fn client_config(
    source: &SourceConfig,
    client_id: &str,
) -> Result<ClientConfig, IngesterError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &source.brokers)
        .set("group.id", &source.group_id)
        .set("client.id", client_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("isolation.level", "read_committed")
        .set("statistics.interval.ms", "5000")
        // Memory: librdkafka decompresses a whole fetch response when it arrives, however full
        // its prefetch queue is, so each response adds its size times the compression ratio.
        // With its 1 MB per partition, six partitions of lz4 JSON (28:1, the bench's 1 KB
        // records) peaked at 250 MB resident; 64 kB per partition and a 4 MB queue: 85 MB (a
        // batch larger than 64 kB still comes whole). Records per CPU-second did not drop (they
        // rose: records are still in the cache when decoded), nor did the wall time, as long as
        // a full queue is retried soon: librdkafka waits a second by default (6.5 s instead of
        // 0.9 s to read 1.2M records). A queued record keeps its whole decompressed batch
        // alive, so the queue holds more than it counts: 1.2M records of 160 B peaked at 74-77 MB
        // with a 4 MB queue, 69 MB with 2 MB, 63-65 MB with 1 MB and 512 kB, at the same CPU per
        // record and wall time (local broker). 1 MB lasts about 5 ms at 200 MB/s: a broker
        // further away than that can starve a fast ingester. `consumerConfig` may set all three.
        .set("queued.max.messages.kbytes", "1024")
        .set("max.partition.fetch.bytes", "65536")
        .set("fetch.queue.backoff.ms", "2")
        .set(
            "auto.offset.reset",
            match source.start {
                StartPosition::Latest => "latest",
                // A timestamp start seeks explicitly; earliest is the safe fallback.
                StartPosition::Earliest | StartPosition::TimestampMillis(_) => "earliest",
            },
        );
    let security = &source.security;
    c.set(
        "security.protocol",
        match security.protocol {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        },
    );
    if let Some(sasl) = &security.sasl {
        let (user, password) = read_credentials(&sasl.credentials)?;
        c.set(
            "sasl.mechanism",
            match sasl.mechanism {
                SaslMechanism::Plain => "PLAIN",
                SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
                SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            },
        )
        .set("sasl.username", user)
        .set("sasl.password", password);
    }
    if let Some(tls) = &security.tls {
        if let Some(ca) = &tls.ca_file {
            c.set("ssl.ca.location", ca.display().to_string());
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            c.set("ssl.certificate.location", cert.display().to_string())
                .set("ssl.key.location", key.display().to_string());
        }
    }
    for (k, v) in &source.consumer_config {
        c.set(k, v);
    }
    Ok(c)
}

/// Reads a user name and password from their files (mounted from a Secret).
pub fn read_credentials(files: &UserPasswordFiles) -> Result<(String, String), IngesterError> {
    Ok((
        read_secret(&files.username_file)?,
        read_secret(&files.password_file)?,
    ))
}

pub fn read_secret(path: &Path) -> Result<String, IngesterError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
        .map_err(|source| IngesterError::Secret {
            path: path.to_path_buf(),
            source,
        })
}

/// Creates the consumer and subscribes to the topic.
pub fn consumer(
    source: &SourceConfig,
    client_id: &str,
    events: UnboundedSender<Assignment>,
    metrics: Metrics,
    health: Arc<Health>,
) -> Result<StreamConsumer<Context>, IngesterError> {
    use rdkafka::consumer::Consumer;
    let context = Context {
        topic: source.topic.clone(),
        events,
        metrics,
        health,
    };
    let consumer: StreamConsumer<Context> = client_config(source, client_id)?
        .create_with_context(context)
        .map_err(|source| IngesterError::Kafka {
            action: "create the consumer",
            source,
        })?;
    consumer
        .subscribe(&[&source.topic])
        .map_err(|source| IngesterError::Kafka {
            action: "subscribe",
            source,
        })?;
    Ok(consumer)
}

/// How long blocking consumer calls (seek, offsets for times) may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
