//! Dead letters into a table (`errors.deadLetter.table`): a table of the main table's format
//! beside it, one row per bad record, so that SQL finds them.
//!
//! The protocol is the dead-letter topic's with the table's sync points in the place of the
//! group's offsets: before a main table commit, each partition with dead letters commits them
//! to the dead-letter table with its own sync point for the partition (how far its records
//! are decided). A crash between the two commits leaves the dead-letter table ahead of the
//! main one; whoever holds the partition next reads which offsets the dead-letter table holds
//! past the main table's sync point (its rows say, read by their Kafka metadata columns) and
//! writes none of them again, while the main table takes the good ones again. Each commit is
//! fenced on the sync point it started from: a holder that finds the partition moved by
//! another ([`IngesterError::Superseded`]) starts again rather than act on what it knew.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::Sent;
use crate::bad::DeadLetter;
use crate::commit::{CommitOutcome, Committer, PartitionRange, SyncPoints};
use crate::decode::{headers_builder, headers_field, metadata_fields};
use crate::error::IngesterError;

/// The dead-letter table of one KafkaTable.
pub struct DeadLetterTable {
    committer: Committer,
    /// The table's name in errors (its location or catalog name).
    name: String,
    source_topic: String,
    /// The KafkaTable (namespace/name), for the `kafkatable` column.
    table: String,
    /// The dead-letter table's sync points of the partitions held, as this member left them.
    points: SyncPoints,
}

impl DeadLetterTable {
    pub fn new(committer: Committer, source_topic: &str, table: &str) -> Self {
        Self {
            name: committer.name(),
            committer,
            source_topic: source_topic.to_string(),
            table: table.to_string(),
            points: SyncPoints::new(),
        }
    }

    /// The columns of a dead-letter row: the Kafka metadata columns of the main table, the
    /// value's bytes, the headers, and why the record is bad.
    pub fn schema() -> SchemaRef {
        let timestamp = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let mut fields = metadata_fields();
        fields.extend([
            Field::new(VALUE_COLUMN, DataType::Binary, true),
            headers_field(),
            Field::new("reason", DataType::Utf8, false),
            Field::new("error", DataType::Utf8, false),
            Field::new("kafkatable", DataType::Utf8, false),
            Field::new("dead_lettered_at", timestamp, false),
        ]);
        Arc::new(Schema::new(fields))
    }

    /// Takes `partitions` (with the main table's sync points) over: what the dead-letter
    /// table holds past each main sync point.
    pub async fn fence(
        &mut self,
        partitions: &[(i32, Option<i64>)],
    ) -> Result<BTreeMap<i32, Sent>, IngesterError> {
        let held: Vec<i32> = partitions.iter().map(|(p, _)| *p).collect();
        let points = self.committer.sync_points(&held).await?;
        let mut sent = BTreeMap::new();
        for &(p, main) in partitions {
            let Some(&until) = points.get(&p) else {
                self.points.remove(&p);
                continue;
            };
            self.points.insert(p, until);
            if main.is_some_and(|m| until <= m) {
                continue;
            }
            let offsets = self.committer.offsets_in(p, main, until).await?;
            tracing::info!(
                partition = p,
                until,
                sent = offsets.len(),
                table = %self.name,
                "dead letters were written past the table's sync point; they are not written again"
            );
            sent.insert(
                p,
                Sent {
                    from: main,
                    until,
                    offsets,
                },
            );
        }
        Ok(sent)
    }

    /// Forgets partitions no longer held.
    pub fn release(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.points.remove(p);
        }
    }

    /// Commits `letters` of `partition` with `sent.until` as the partition's sync point.
    pub async fn send(
        &mut self,
        partition: i32,
        letters: &[DeadLetter],
        sent: &Sent,
    ) -> Result<(), IngesterError> {
        let rows = self.rows(letters)?;
        let mut staged = self.committer.staged();
        self.committer.stage(&mut staged, vec![rows]).await?;
        let range = PartitionRange {
            partition,
            expected: self.points.get(&partition).copied(),
            next: sent.until,
        };
        match self.committer.commit(staged, &[range]).await? {
            CommitOutcome::Committed { version, .. } => {
                tracing::debug!(partition, version, table = %self.name, "dead letters committed");
                self.points.insert(partition, sent.until);
                Ok(())
            }
            CommitOutcome::Conflict { .. } => Err(IngesterError::Superseded {
                table: self.name.clone(),
                partition,
            }),
        }
    }

    /// The rows of `letters`.
    fn rows(&self, letters: &[DeadLetter]) -> Result<RecordBatch, IngesterError> {
        let n = letters.len();
        let mut topic = StringBuilder::with_capacity(n, n * self.source_topic.len());
        let mut partition = Int32Builder::with_capacity(n);
        let mut offset = Int64Builder::with_capacity(n);
        let mut timestamp = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        let mut key = BinaryBuilder::new();
        let mut value = BinaryBuilder::new();
        let mut headers = headers_builder();
        let mut reason = StringBuilder::new();
        let mut error = StringBuilder::new();
        let mut table = StringBuilder::new();
        let now_us = jiff::Timestamp::now().as_microsecond();
        let mut at = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        for l in letters {
            topic.append_value(&self.source_topic);
            partition.append_value(l.partition);
            offset.append_value(l.offset);
            timestamp.append_option(l.timestamp_ms.map(|t| t.saturating_mul(1000)));
            key.append_option(l.key.as_deref());
            value.append_option(l.value.as_deref());
            for (name, v) in &l.headers {
                headers.keys().append_value(name);
                headers.values().append_option(v.as_deref());
            }
            headers
                .append(true)
                .map_err(|e| self.failed(e.to_string()))?;
            reason.append_value(l.reason);
            error.append_value(&l.error);
            table.append_value(&self.table);
            at.append_value(now_us);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(topic.finish()),
            Arc::new(partition.finish()),
            Arc::new(offset.finish()),
            Arc::new(timestamp.finish()),
            Arc::new(key.finish()),
            Arc::new(value.finish()),
            Arc::new(headers.finish()),
            Arc::new(reason.finish()),
            Arc::new(error.finish()),
            Arc::new(table.finish()),
            Arc::new(at.finish()),
        ];
        RecordBatch::try_new(Self::schema(), columns).map_err(|e| self.failed(e.to_string()))
    }

    fn failed(&self, reason: String) -> IngesterError {
        IngesterError::DeadLetters {
            topic: self.name.clone(),
            action: "make the dead-letter rows",
            reason,
        }
    }
}

/// The dead-letter table's column of the record's value, as it came.
pub const VALUE_COLUMN: &str = "_kafka_value";
