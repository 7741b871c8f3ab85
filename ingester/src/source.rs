//! Where records come from: the [`Source`] seam the coordinator reads, and its Kafka
//! implementation, one member of the table's consumer group with the cooperative-sticky
//! assignor and manual commits. Rebalance callbacks only send an event to the coordinator; they
//! never block and never panic. librdkafka's blocking calls (seek, offsets for times,
//! watermarks) run on tokio's blocking pool, never on the runtime's workers.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kafkatable_crds::config::{SourceConfig, StartPosition, UserPasswordFiles};
use kafkatable_crds::spec::{SaslMechanism, SecurityProtocol};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::bad::DeadLetter;
use crate::deadletter::{KafkaDeadLetters, Sent};
use crate::error::IngesterError;
use crate::http::Health;
use crate::metrics::Metrics;

/// A change of this member's assignment, as the coordinator sees it.
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
    let context = Context {
        topic: source.topic.clone(),
        events,
        metrics,
        health,
    };
    let consumer: StreamConsumer<Context> = client_config(source, client_id)?
        .create_with_context(context)
        .map_err(IngesterError::kafka(&source.topic, "create the consumer"))?;
    consumer
        .subscribe(&[&source.topic])
        .map_err(IngesterError::kafka(&source.topic, "subscribe"))?;
    Ok(consumer)
}

/// How long blocking consumer calls (seek, offsets for times) may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// One record as the coordinator and the decoders see it.
pub trait SourceRecord {
    fn partition(&self) -> i32;
    fn offset(&self) -> i64;
    fn key(&self) -> Option<&[u8]>;
    /// None for a tombstone.
    fn payload(&self) -> Option<&[u8]>;
    /// The record's timestamp in ms since the epoch, if it has one.
    fn timestamp_ms(&self) -> Option<i64>;
    /// Calls `each` with every header (name, value), in the record's order.
    fn headers(&self, _each: &mut dyn FnMut(&str, Option<&[u8]>)) {}
}

/// A partitioned log the coordinator consumes: records and positioning (assignment changes
/// come through a channel next to it). Records borrow the source (no copy of each payload).
#[allow(async_fn_in_trait)] // used generically, never as a trait object
pub trait Source {
    type Record<'a>: SourceRecord
    where
        Self: 'a;
    type Error: std::fmt::Display;

    /// The next record of an assigned, unpaused partition.
    async fn recv(&self) -> Result<Self::Record<'_>, Self::Error>;
    /// Moves a partition's position to `offset`.
    async fn seek(&self, partition: i32, offset: i64) -> Result<(), Self::Error>;
    /// The first offset at or after `millis` (the end when no record is that new yet).
    async fn offset_for_time(&self, partition: i32, millis: i64) -> Option<i64>;
    fn pause(&self, partitions: &[i32]);
    fn resume(&self, partitions: &[i32]);
    /// Mirrors the table's sync points to the consumer group (for lag tools; best effort).
    fn commit_offsets(&self, offsets: &[(i32, i64)]);
    /// Leaves the group (on shutdown).
    fn leave(&self);

    /// Takes `partitions` (with the table's sync points) over for dead letters: fences their
    /// earlier holders and reads what was dead-lettered past each sync point (see
    /// [`crate::deadletter`]). A source without dead letters has none.
    async fn fence(
        &self,
        _partitions: &[(i32, Option<i64>)],
    ) -> Result<BTreeMap<i32, Sent>, IngesterError> {
        Ok(BTreeMap::new())
    }
    /// Sends `letters` of `partition` with `sent` as its dead-letter progress, in one
    /// transaction.
    async fn dead_letters(
        &self,
        _partition: i32,
        _letters: &[DeadLetter],
        _sent: &Sent,
    ) -> Result<(), IngesterError> {
        Err(IngesterError::Unsupported(
            "dead letters without a dead-letter topic".into(),
        ))
    }
    /// Partitions no longer held (their dead-letter producers go).
    fn release(&self, _partitions: &[i32]) {}
}

impl SourceRecord for rdkafka::message::BorrowedMessage<'_> {
    fn partition(&self) -> i32 {
        rdkafka::Message::partition(self)
    }
    fn offset(&self) -> i64 {
        rdkafka::Message::offset(self)
    }
    fn key(&self) -> Option<&[u8]> {
        rdkafka::Message::key(self)
    }
    fn payload(&self) -> Option<&[u8]> {
        rdkafka::Message::payload(self)
    }
    fn timestamp_ms(&self) -> Option<i64> {
        rdkafka::Message::timestamp(self).to_millis()
    }
    fn headers(&self, each: &mut dyn FnMut(&str, Option<&[u8]>)) {
        use rdkafka::message::Headers as _;
        if let Some(headers) = rdkafka::Message::headers(self) {
            for header in headers.iter() {
                each(header.key, header.value);
            }
        }
    }
}

/// The topic as one member of the table's consumer group.
pub struct KafkaSource {
    topic: String,
    consumer: Arc<StreamConsumer<Context>>,
    /// How long a blocking call to the broker may take.
    timeout: Duration,
    /// The dead-letter producers (`errors.policy: deadLetter`).
    dead_letters: Option<KafkaDeadLetters>,
}

impl KafkaSource {
    /// Creates the consumer and subscribes to the topic; its rebalances arrive on the
    /// receiver.
    pub fn subscribe(
        source: &SourceConfig,
        client_id: &str,
        metrics: Metrics,
        health: Arc<Health>,
    ) -> Result<(Self, UnboundedReceiver<Assignment>), IngesterError> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let consumer = consumer(source, client_id, tx, metrics, health)?;
        Ok((Self::new(&source.topic, consumer, CALL_TIMEOUT), rx))
    }

    pub fn new(topic: &str, consumer: StreamConsumer<Context>, timeout: Duration) -> Self {
        Self {
            topic: topic.to_string(),
            consumer: Arc::new(consumer),
            timeout,
            dead_letters: None,
        }
    }

    /// Sends bad records to the dead-letter topic `topic` of the source's cluster, for the
    /// KafkaTable `table`.
    pub fn with_dead_letters(
        mut self,
        topic: &str,
        table: &str,
        source: &SourceConfig,
        client_id: &str,
    ) -> Result<Self, IngesterError> {
        let all = client_config(source, client_id)?;
        // The connection and its security; the consumer's settings are not a producer's.
        let mut config = ClientConfig::new();
        for key in [
            "bootstrap.servers",
            "client.id",
            "security.protocol",
            "sasl.mechanism",
            "sasl.username",
            "sasl.password",
            "ssl.ca.location",
            "ssl.certificate.location",
            "ssl.key.location",
        ] {
            if let Some(value) = all.get(key) {
                config.set(key, value);
            }
        }
        self.dead_letters = Some(KafkaDeadLetters::new(
            topic,
            &source.topic,
            table,
            &source.group_id,
            config,
        ));
        Ok(self)
    }

    fn list(&self, partitions: &[i32]) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for &p in partitions {
            list.add_partition(&self.topic, p);
        }
        list
    }

    /// Runs a blocking consumer call on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&StreamConsumer<Context>) -> T + Send + 'static,
    ) -> Option<T> {
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || call(&consumer))
            .await
            .ok()
    }
}

impl Source for KafkaSource {
    type Record<'a> = rdkafka::message::BorrowedMessage<'a>;
    type Error = KafkaError;

    async fn recv(&self) -> Result<Self::Record<'_>, KafkaError> {
        self.consumer.recv().await
    }

    async fn seek(&self, partition: i32, offset: i64) -> Result<(), KafkaError> {
        let (topic, timeout) = (self.topic.clone(), self.timeout);
        self.blocking(move |c| c.seek(&topic, partition, Offset::Offset(offset), timeout))
            .await
            .unwrap_or(Err(KafkaError::Canceled))
    }

    async fn offset_for_time(&self, partition: i32, millis: i64) -> Option<i64> {
        let (topic, timeout) = (self.topic.clone(), self.timeout);
        self.blocking(move |c| {
            let mut list = TopicPartitionList::new();
            list.add_partition_offset(&topic, partition, Offset::Offset(millis))
                .ok()?;
            let found = c.offsets_for_times(list, timeout).ok()?;
            match found.elements().first().map(|e| e.offset()) {
                Some(Offset::Offset(n)) => Some(n),
                // No record at or after the time yet: start at the end.
                _ => c
                    .fetch_watermarks(&topic, partition, timeout)
                    .ok()
                    .map(|(_, high)| high),
            }
        })
        .await
        .flatten()
    }

    fn pause(&self, partitions: &[i32]) {
        if partitions.is_empty() {
            return;
        }
        if let Err(e) = self.consumer.pause(&self.list(partitions)) {
            tracing::warn!(error = %e, ?partitions, "cannot pause partitions");
        }
    }

    fn resume(&self, partitions: &[i32]) {
        if partitions.is_empty() {
            return;
        }
        if let Err(e) = self.consumer.resume(&self.list(partitions)) {
            tracing::warn!(error = %e, ?partitions, "cannot resume partitions");
        }
    }

    fn commit_offsets(&self, offsets: &[(i32, i64)]) {
        let mut list = TopicPartitionList::new();
        for &(partition, next) in offsets {
            if let Err(e) = list.add_partition_offset(&self.topic, partition, Offset::Offset(next))
            {
                tracing::warn!(error = %e, "cannot record a group offset");
            }
        }
        // With dead letters, a mirrored offset must land before the next dead-letter
        // transaction commits the group's offset, or it could overwrite it.
        let mode = match self.dead_letters {
            Some(_) => CommitMode::Sync,
            None => CommitMode::Async,
        };
        if let Err(e) = self.consumer.commit(&list, mode) {
            // The table holds the truth; the group offsets only mirror it for lag tools.
            tracing::warn!(error = %e, "cannot commit offsets to the consumer group");
        }
    }

    fn leave(&self) {
        self.consumer.unsubscribe();
    }

    async fn fence(
        &self,
        partitions: &[(i32, Option<i64>)],
    ) -> Result<BTreeMap<i32, Sent>, IngesterError> {
        match &self.dead_letters {
            Some(d) => d.fence(&self.consumer, partitions).await,
            None => Ok(BTreeMap::new()),
        }
    }

    async fn dead_letters(
        &self,
        partition: i32,
        letters: &[DeadLetter],
        sent: &Sent,
    ) -> Result<(), IngesterError> {
        match &self.dead_letters {
            Some(d) => {
                d.send(self.consumer.group_metadata(), partition, letters, sent)
                    .await
            }
            None => Err(IngesterError::Unsupported(
                "dead letters without spec.errors.deadLetter".into(),
            )),
        }
    }

    fn release(&self, partitions: &[i32]) {
        if let Some(d) = &self.dead_letters {
            d.release(partitions);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A consumer of a broker that does not answer makes `offsets_for_times` wait its whole
    /// timeout. The runtime's only worker must stay free for everything else meanwhile (the
    /// HTTP endpoints, the coordinator's other branches).
    #[tokio::test(flavor = "current_thread")]
    async fn blocking_calls_leave_the_runtime_free() {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let context = Context {
            topic: "t".into(),
            events: tx,
            metrics: Metrics::new().expect("metrics"),
            health: Arc::default(),
        };
        let consumer: StreamConsumer<Context> = ClientConfig::new()
            // Nothing listens on port 1.
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("group.id", "g")
            .create_with_context(context)
            .expect("consumer");
        let source = KafkaSource::new("t", consumer, Duration::from_secs(1));
        let ticks = Arc::new(AtomicU64::new(0));
        let counter = ticks.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        let started = std::time::Instant::now();
        let _ = source.offset_for_time(0, 0).await;
        let _ = source.seek(0, 5).await;
        ticker.abort();
        let waited = started.elapsed();
        let ticks = ticks.load(Ordering::Relaxed);
        // The ticker runs about every 10 ms while the calls wait; blocked, it would not run.
        assert!(
            waited < Duration::from_millis(500) || ticks * 40 >= waited.as_millis() as u64,
            "{ticks} ticks in {waited:?}"
        );
        assert!(
            waited >= Duration::from_millis(500),
            "the calls returned in {waited:?}: the test proves nothing"
        );
    }
}
