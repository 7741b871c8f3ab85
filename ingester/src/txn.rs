//! The next table commit, as one value.
//!
//! A [`Transaction`] holds everything the next commit will write: per partition the range of
//! offsets from the table's sync point to the next offset, and the table side's batch (records
//! not decoded yet, decoded rows, Parquet files staged; later delete files and dead letters),
//! with the row and byte counts the commit triggers look at. It is committed whole or dropped
//! whole: files of several partitions are mixed, so a conflict on one partition rewinds all of
//! them to the table's sync points.

use std::collections::BTreeMap;

use crate::bad::DeadLetter;
use crate::commit::PartitionRange;

/// The offsets of one partition in the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    /// The table's sync point when the range started (None: the table had none).
    expected: Option<i64>,
    /// The offset of the first record: where a rewind goes back to when the table has no sync
    /// point (the consumer's position is past it by then).
    first: i64,
    /// The offset after the last record.
    next: i64,
}

/// What the next commit holds. `B` is the table side's batch, opaque here.
pub struct Transaction<B> {
    ranges: BTreeMap<i32, Range>,
    batch: B,
    records: u64,
    /// Bytes held in memory for the commit: payloads as they arrive, then what the table side
    /// reports once it has decoded and staged them.
    bytes: u64,
    /// The Kafka timestamp of the newest record (ms since the epoch).
    newest_ms: Option<i64>,
    /// Bad records skipped among the records (counted once the commit lands).
    skipped: u64,
    /// Bad records for the dead-letter topic, per partition, sent before the table commit.
    letters: BTreeMap<i32, Vec<DeadLetter>>,
    /// Bad records dead-lettered among the records (these, and those an earlier holder sent).
    dead_lettered: u64,
}

impl<B> Transaction<B> {
    pub fn new(batch: B) -> Self {
        Self {
            ranges: BTreeMap::new(),
            batch,
            records: 0,
            bytes: 0,
            newest_ms: None,
            skipped: 0,
            letters: BTreeMap::new(),
            dead_lettered: 0,
        }
    }

    /// Counts a record of `partition` that was added to the batch. `expected` is the table's
    /// sync point for the partition, taken when its range starts.
    pub fn add(
        &mut self,
        partition: i32,
        expected: Option<i64>,
        offset: i64,
        payload_bytes: usize,
        timestamp_ms: Option<i64>,
    ) {
        self.ranges
            .entry(partition)
            .and_modify(|r| r.next = offset + 1)
            .or_insert(Range {
                expected,
                first: offset,
                next: offset + 1,
            });
        self.records += 1;
        self.bytes += payload_bytes as u64;
        if timestamp_ms.is_some() {
            self.newest_ms = self.newest_ms.max(timestamp_ms);
        }
    }

    pub fn batch(&self) -> &B {
        &self.batch
    }

    pub fn batch_mut(&mut self) -> &mut B {
        &mut self.batch
    }

    pub fn into_batch(self) -> B {
        self.batch
    }

    /// Whether records of `partition` are in the transaction.
    pub fn holds(&self, partition: i32) -> bool {
        self.ranges.contains_key(&partition)
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The offset of the first record of `partition` in the transaction.
    pub fn first(&self, partition: i32) -> Option<i64> {
        self.ranges.get(&partition).map(|r| r.first)
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// What the table side reports holding, once it has decoded or staged records.
    pub fn set_bytes(&mut self, bytes: u64) {
        self.bytes = bytes;
    }

    pub fn newest_ms(&self) -> Option<i64> {
        self.newest_ms
    }

    /// Counts a bad record skipped among the records.
    pub fn skip(&mut self) {
        self.skipped += 1;
    }

    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Counts a bad record dead-lettered among the records; `letter` is to be sent (None: sent
    /// already, by an earlier holder of the partition).
    pub fn dead_letter(&mut self, letter: Option<DeadLetter>) {
        self.dead_lettered += 1;
        if let Some(l) = letter {
            self.letters.entry(l.partition).or_default().push(l);
        }
    }

    pub fn dead_lettered(&self) -> u64 {
        self.dead_lettered
    }

    /// The dead letters to send before the commit, per partition.
    pub fn letters(&self) -> &BTreeMap<i32, Vec<DeadLetter>> {
        &self.letters
    }

    /// Ends the range of `partition` before `offset` (where the partition stopped): the commit
    /// carries `offset` as its next offset, or nothing of the partition when no record of it
    /// comes before. Returns whether the range is still there.
    pub fn truncate(&mut self, partition: i32, offset: i64) -> bool {
        let Some(range) = self.ranges.get_mut(&partition) else {
            return false;
        };
        if range.first >= offset {
            self.ranges.remove(&partition);
            return false;
        }
        range.next = range.next.min(offset);
        true
    }

    /// The offsets the commit carries, one range per partition.
    pub fn ranges(&self) -> Vec<PartitionRange> {
        self.ranges
            .iter()
            .map(|(&partition, r)| PartitionRange {
                partition,
                expected: r.expected,
                next: r.next,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_runs_from_the_sync_point_to_the_offset_after_the_last_record() {
        let mut txn = Transaction::new(());
        txn.add(0, Some(10), 10, 5, Some(7));
        txn.add(1, None, 3, 5, None);
        txn.add(0, Some(99), 12, 5, Some(4));
        assert_eq!(txn.records(), 3);
        assert_eq!(txn.bytes(), 15);
        assert_eq!(txn.newest_ms(), Some(7));
        assert_eq!(txn.first(0), Some(10));
        assert!(txn.holds(1) && !txn.holds(2));
        // The expected sync point is the one taken when the range started.
        assert_eq!(
            txn.ranges(),
            vec![
                PartitionRange {
                    partition: 0,
                    expected: Some(10),
                    next: 13
                },
                PartitionRange {
                    partition: 1,
                    expected: None,
                    next: 4
                },
            ]
        );
    }

    #[test]
    fn a_stopped_partition_ends_its_range_before_the_bad_record() {
        let mut txn = Transaction::new(());
        for offset in 10..20 {
            txn.add(0, Some(10), offset, 1, None);
        }
        txn.add(1, Some(5), 5, 1, None);
        assert!(txn.truncate(0, 14), "records 10 to 13 stay");
        assert_eq!(txn.ranges()[0].next, 14);
        assert!(!txn.truncate(1, 5), "no record of partition 1 before 5");
        assert!(!txn.holds(1));
        assert!(!txn.truncate(2, 0), "no range");
    }
}
