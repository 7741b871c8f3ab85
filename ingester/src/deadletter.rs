//! Dead letters (`errors.policy: deadLetter`): bad records produced to the dead-letter topic
//! exactly once with the table, across crashes, rebalances and scaling.
//!
//! The protocol: the table's sync point says which records the table holds; the dead-letter
//! topic must hold exactly the bad ones among the rest up to wherever ingestion got. Before a
//! table commit, each partition with dead letters sends them in one Kafka transaction of its
//! own producer (transactional id per table and source partition), which also commits the
//! consumer group's offset for the partition: the offset up to which dead letters are decided,
//! with the offsets sent since the table's sync point in its metadata ([`Sent`]). A crash
//! between that transaction and the table commit leaves the group ahead of the table: whoever
//! holds the partition next (after fencing the earlier producer by taking its transactional
//! id, which also ends a transaction it left open) reads the metadata and sends none of those
//! records again, while the table takes the good ones again from its sync point. Records are
//! never decided twice from guesswork: the metadata lists them. Readers of the dead-letter
//! topic use `isolation.level=read_committed`.

pub mod table;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, ConsumerGroupMetadata, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::bad::DeadLetter;
use crate::error::IngesterError;

/// What the dead-letter target holds past a partition's sync point: its records from `from`
/// (the table's sync point then, or the first record read when the table had none; None:
/// where the partition starts) are decided up to `until` (the consumer group's offset, or the
/// dead-letter table's sync point), and `offsets` are in the target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sent {
    pub from: Option<i64>,
    pub until: i64,
    pub offsets: BTreeSet<i64>,
}

/// The metadata prefix of a group offset that carries [`Sent`].
const METADATA: &str = "kafkatable-dead-letters:v1:";

impl Sent {
    /// As offset metadata: where the decided records start, and the offsets as ranges
    /// ("0:3,7-9").
    pub fn metadata(&self) -> String {
        let from = self.from.map(|f| f.to_string()).unwrap_or_default();
        let mut out = format!("{METADATA}{from}:");
        let mut offsets = self.offsets.iter().copied().peekable();
        let mut first = true;
        while let Some(start) = offsets.next() {
            let mut end = start;
            while offsets.peek() == Some(&(end + 1)) {
                end += 1;
                offsets.next();
            }
            if !first {
                out.push(',');
            }
            first = false;
            if start == end {
                out.push_str(&start.to_string());
            } else {
                out.push_str(&format!("{start}-{end}"));
            }
        }
        out
    }

    /// The dead letters a group offset `until` with `metadata` says were sent, from
    /// `sync_point` on (None: the metadata is not ours, or the group is not ahead).
    pub fn parse(until: i64, metadata: &str, sync_point: Option<i64>) -> Option<Self> {
        if sync_point.is_some_and(|s| until <= s) {
            return None;
        }
        let (from, list) = metadata.strip_prefix(METADATA)?.split_once(':')?;
        let from = match from {
            "" => None,
            f => Some(f.parse::<i64>().ok()?),
        };
        let mut offsets = BTreeSet::new();
        for part in list.split(',').filter(|p| !p.is_empty()) {
            let (start, end) = match part.split_once('-') {
                Some((a, b)) => (a.parse::<i64>().ok()?, b.parse::<i64>().ok()?),
                None => {
                    let n = part.parse::<i64>().ok()?;
                    (n, n)
                }
            };
            offsets.extend((start..=end).filter(|o| sync_point.is_none_or(|s| *o >= s)));
        }
        Some(Self {
            from: match (sync_point, from) {
                (Some(s), Some(f)) => Some(s.max(f)),
                (s, f) => s.or(f),
            },
            until,
            offsets,
        })
    }

    /// Whether the offsets fit a group offset's metadata (brokers keep 4,096 bytes by
    /// default, `offset.metadata.max.bytes`).
    pub fn fits(&self) -> bool {
        self.metadata().len() <= 3_800
    }
}

/// The transactional producers of the partitions this member holds, one each.
pub struct KafkaDeadLetters {
    /// The dead-letter topic.
    topic: String,
    source_topic: String,
    /// The KafkaTable (namespace/name), for the `kafkatable.table` header.
    table: String,
    /// The client settings of the source (brokers, security), for the producers.
    config: ClientConfig,
    /// Prefix of each partition's transactional id.
    id_prefix: String,
    producers: Mutex<BTreeMap<i32, FutureProducer>>,
    timeout: Duration,
}

impl KafkaDeadLetters {
    pub fn new(
        topic: &str,
        source_topic: &str,
        table: &str,
        group: &str,
        config: ClientConfig,
    ) -> Self {
        Self {
            topic: topic.to_string(),
            source_topic: source_topic.to_string(),
            table: table.to_string(),
            config,
            id_prefix: format!("{group}.dead-letters"),
            producers: Mutex::new(BTreeMap::new()),
            timeout: Duration::from_secs(30),
        }
    }

    fn producer(&self, partition: i32) -> Option<FutureProducer> {
        lock(&self.producers).get(&partition).cloned()
    }

    /// Takes `partitions` over: each one's producer takes its transactional id (fencing an
    /// earlier holder and ending a transaction it left open), then the group's offsets say
    /// what was sent past each sync point.
    pub async fn fence(
        &self,
        consumer: &Arc<StreamConsumer<crate::source::Context>>,
        partitions: &[(i32, Option<i64>)],
    ) -> Result<BTreeMap<i32, Sent>, IngesterError> {
        for &(p, _) in partitions {
            let id = format!("{}.{p}", self.id_prefix);
            let producer: FutureProducer = self
                .config
                .clone()
                .set("transactional.id", &id)
                .set("enable.idempotence", "true")
                .set("transaction.timeout.ms", "60000")
                // A record too large for the table may be larger than librdkafka's default
                // limit of 1 MB; the dead-letter topic's own limit decides (a refusal names it
                // and is retried, reported as failing commits).
                .set("message.max.bytes", "1000000000")
                .create()
                .map_err(self.kafka("create the dead-letter producer"))?;
            let timeout = self.timeout;
            let init = producer.clone();
            tokio::task::spawn_blocking(move || init.init_transactions(timeout))
                .await
                .map_err(|e| self.failed("take the transactional id", e.to_string()))?
                .map_err(self.kafka("take the transactional id"))?;
            lock(&self.producers).insert(p, producer);
        }
        let mut list = TopicPartitionList::new();
        for &(p, _) in partitions {
            list.add_partition(&self.source_topic, p);
        }
        let (consumer, timeout) = (consumer.clone(), self.timeout);
        let committed =
            tokio::task::spawn_blocking(move || consumer.committed_offsets(list, timeout))
                .await
                .map_err(|e| self.failed("read the group's offsets", e.to_string()))?
                .map_err(self.kafka("read the group's offsets"))?;
        let mut sent = BTreeMap::new();
        for e in committed.elements() {
            let Offset::Offset(until) = e.offset() else {
                continue;
            };
            let sync_point = partitions
                .iter()
                .find(|(p, _)| *p == e.partition())
                .and_then(|(_, s)| *s);
            if let Some(s) = Sent::parse(until, e.metadata(), sync_point) {
                tracing::info!(
                    partition = e.partition(),
                    until,
                    sent = s.offsets.len(),
                    "dead letters were sent past the table's sync point; they are not sent again"
                );
                sent.insert(e.partition(), s);
            }
        }
        Ok(sent)
    }

    /// Drops the producers of partitions no longer held.
    pub fn release(&self, partitions: &[i32]) {
        let mut producers = lock(&self.producers);
        for p in partitions {
            producers.remove(p);
        }
    }

    /// Sends `letters` of `partition` and the group offset `sent` in one transaction.
    pub async fn send(
        &self,
        group: Option<ConsumerGroupMetadata>,
        partition: i32,
        letters: &[DeadLetter],
        sent: &Sent,
    ) -> Result<(), IngesterError> {
        let Some(producer) = self.producer(partition) else {
            return Err(self.failed(
                "send dead letters",
                format!("partition {partition} has no dead-letter producer (not held)"),
            ));
        };
        let Some(group) = group else {
            return Err(self.failed(
                "send dead letters",
                "the consumer has no group metadata".into(),
            ));
        };
        let outcome = self
            .transaction(&producer, group, partition, letters, sent)
            .await;
        if outcome.is_err() {
            let timeout = self.timeout;
            let abort = producer.clone();
            let _ = tokio::task::spawn_blocking(move || abort.abort_transaction(timeout)).await;
        }
        outcome
    }

    async fn transaction(
        &self,
        producer: &FutureProducer,
        group: ConsumerGroupMetadata,
        partition: i32,
        letters: &[DeadLetter],
        sent: &Sent,
    ) -> Result<(), IngesterError> {
        producer
            .begin_transaction()
            .map_err(self.kafka("begin a dead-letter transaction"))?;
        // Each record is queued at once; the deliveries are awaited after.
        let mut deliveries = Vec::with_capacity(letters.len());
        for l in letters {
            let (partition, offset) = (l.partition.to_string(), l.offset.to_string());
            let timestamp = l.timestamp_ms.map(|t| t.to_string()).unwrap_or_default();
            let mut headers = OwnedHeaders::new_with_capacity(l.headers.len() + 7);
            for (name, value) in &l.headers {
                headers = headers.insert(Header {
                    key: name,
                    value: value.as_deref(),
                });
            }
            let ours = [
                ("kafkatable.reason", l.reason),
                ("kafkatable.error", l.error.as_str()),
                ("kafkatable.topic", self.source_topic.as_str()),
                ("kafkatable.partition", partition.as_str()),
                ("kafkatable.offset", offset.as_str()),
                ("kafkatable.timestamp", timestamp.as_str()),
                ("kafkatable.table", self.table.as_str()),
            ];
            for (key, value) in ours {
                headers = headers.insert(Header {
                    key,
                    value: Some(value.as_bytes()),
                });
            }
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topic).headers(headers);
            if let Some(key) = &l.key {
                record = record.key(key.as_slice());
            }
            if let Some(value) = &l.value {
                record = record.payload(value.as_slice());
            }
            if let Some(t) = l.timestamp_ms {
                record = record.timestamp(t);
            }
            let queued = producer
                .send_result(record)
                .map_err(|(e, _)| self.kafka("produce a dead letter")(e))?;
            deliveries.push(queued);
        }
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(self.kafka("produce a dead letter")(e)),
                Err(_) => {
                    return Err(
                        self.failed("produce a dead letter", "the delivery was canceled".into())
                    );
                }
            }
        }
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(&self.source_topic, partition, Offset::Offset(sent.until))
            .map_err(self.kafka("record the dead letters' progress"))?;
        if let Some(mut e) = offsets.find_partition(&self.source_topic, partition) {
            e.set_metadata(sent.metadata());
        }
        let (commit, timeout) = (producer.clone(), self.timeout);
        tokio::task::spawn_blocking(move || {
            commit.send_offsets_to_transaction(&offsets, &group, timeout)?;
            commit.commit_transaction(timeout)
        })
        .await
        .map_err(|e| self.failed("commit a dead-letter transaction", e.to_string()))?
        .map_err(self.kafka("commit a dead-letter transaction"))
    }

    fn kafka(&self, action: &'static str) -> impl FnOnce(KafkaError) -> IngesterError + '_ {
        move |source| IngesterError::Kafka {
            topic: self.topic.clone(),
            action,
            source,
        }
    }

    fn failed(&self, action: &'static str, reason: String) -> IngesterError {
        IngesterError::DeadLetters {
            topic: self.topic.clone(),
            action,
            reason,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offsets_sent_round_trip_through_the_group_offsets_metadata() {
        let sent = Sent {
            from: Some(0),
            until: 20,
            offsets: [3, 7, 8, 9, 15].into_iter().collect(),
        };
        let metadata = sent.metadata();
        assert_eq!(metadata, "kafkatable-dead-letters:v1:0:3,7-9,15");
        assert_eq!(Sent::parse(20, &metadata, Some(0)), Some(sent.clone()));
        assert_eq!(Sent::parse(20, &metadata, None), Some(sent.clone()));
        // From a later sync point on, the earlier offsets are the table's business.
        let later = Sent::parse(20, &metadata, Some(8)).expect("ahead of the table");
        assert_eq!(
            later.offsets.into_iter().collect::<Vec<_>>(),
            vec![8, 9, 15]
        );
        assert_eq!(later.from, Some(8));
        assert_eq!(Sent::parse(20, &metadata, Some(20)), None, "not ahead");
        assert_eq!(Sent::parse(20, "", None), None, "not ours");
        let none = Sent::parse(5, "kafkatable-dead-letters:v1:2:", None).expect("ours");
        assert_eq!((none.from, none.offsets.len()), (Some(2), 0));
        assert!(sent.fits());
    }
}
