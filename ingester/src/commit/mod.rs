//! Committing files and Kafka offsets to the table in one atomic commit.
//!
//! The table is the source of truth for progress: every commit carries the next offset of each
//! partition it covers. Before committing, a committer re-reads those offsets and refuses when
//! any moved since the batch started (another ingester committed the partition); the table
//! format's own conflict detection covers the remaining race.

pub mod delta;
mod delta_files;
pub mod iceberg;

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::RecordBatch;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{WriterProperties, WriterPropertiesBuilder};
use parquet::schema::types::ColumnPath;

use crate::decode::{OFFSET_COLUMN, PARTITION_COLUMN, TIMESTAMP_COLUMN};
use crate::error::IngesterError;

/// Parquet settings both formats share: zstd, and no dictionary for the metadata columns whose
/// values are (nearly) all distinct. A dictionary there is work thrown away when the writer
/// falls back to plain encoding, and thrown away again in every file.
pub fn writer_properties() -> WriterPropertiesBuilder {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_column_dictionary_enabled(ColumnPath::from(OFFSET_COLUMN), false)
        .set_column_dictionary_enabled(ColumnPath::from(TIMESTAMP_COLUMN), false)
}

/// A data file name unique across pods and restarts: a UUID v7 (milliseconds since the epoch,
/// then random bits). A process id would not do: it is the same (usually 1) in every container.
fn unique_name() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Where a table keeps each partition's sync point: the one definition of the names, which the
/// tests use too.
pub mod keys {
    /// The Delta `txn` app id of a partition; its version is the partition's next offset.
    pub fn delta_app_id(topic: &str, partition: i32) -> String {
        format!("kafkatable-{topic}-{partition}")
    }

    /// The Iceberg snapshot summary key (and table property) of a partition's next offset.
    pub fn iceberg_key(topic: &str, partition: i32) -> String {
        format!("kafkatable.{topic}.{partition}")
    }

    /// The partition an Iceberg key of `topic` names, if it is one.
    pub fn iceberg_partition(key: &str, topic: &str) -> Option<i32> {
        key.strip_prefix("kafkatable.")?
            .strip_prefix(topic)?
            .strip_prefix('.')?
            .parse()
            .ok()
    }
}

/// Next offset to read per partition, as recorded in the table.
pub type SyncPoints = BTreeMap<i32, i64>;

/// The offsets one batch covers in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRange {
    pub partition: i32,
    /// The table's sync point when the batch started (None: the table had none).
    pub expected: Option<i64>,
    /// The offset after the last record of the batch.
    pub next: i64,
}

/// What a commit attempt achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// The table now holds the batch; `version` is the new table version (Delta version,
    /// Iceberg sequence number), `snapshot_id` the new Iceberg snapshot.
    Committed {
        version: i64,
        snapshot_id: Option<i64>,
    },
    /// Another writer moved these partitions first; nothing was committed. The caller drops
    /// what it holds for them and seeks to the table's sync points again.
    Conflict { partitions: Vec<i32> },
}

/// The committer of one table, by format.
pub enum Committer {
    Delta(delta::DeltaCommitter),
    Iceberg(iceberg::IcebergCommitter),
}

/// The data files staged for the next commit, by format: part of the transaction, never of
/// the committer.
pub enum Staged {
    Delta(delta::DeltaFiles),
    Iceberg(iceberg::IcebergFiles),
}

impl Committer {
    /// No files yet, in this committer's format.
    pub fn staged(&self) -> Staged {
        match self {
            Self::Delta(_) => Staged::Delta(delta::DeltaFiles::default()),
            Self::Iceberg(_) => Staged::Iceberg(iceberg::IcebergFiles::default()),
        }
    }

    /// The table as errors and logs name it: its location (Delta) or catalog name (Iceberg).
    pub fn name(&self) -> String {
        match self {
            Self::Delta(c) => c.location().to_string(),
            Self::Iceberg(c) => c.name(),
        }
    }

    /// The table's sync points for `partitions` (all when empty), read fresh from the table.
    /// A table that cannot be read is reported as [`IngesterError::TableUnreachable`].
    pub async fn sync_points(&mut self, partitions: &[i32]) -> Result<SyncPoints, IngesterError> {
        match self {
            Self::Delta(c) => c.sync_points(partitions).await,
            Self::Iceberg(c) => c.sync_points(partitions).await,
        }
        .map_err(IngesterError::unreachable)
    }

    /// Encodes decoded chunks into `staged`'s Parquet files now (files are uploaded once they
    /// reach the target size); they become part of the table with the [`Self::commit`] of
    /// `staged`. On error the staged files are discarded.
    pub async fn stage(
        &mut self,
        staged: &mut Staged,
        batches: Vec<RecordBatch>,
    ) -> Result<(), IngesterError> {
        let result = match (&mut *self, &mut *staged) {
            (Self::Delta(c), Staged::Delta(files)) => c.stage(files, batches).await,
            (Self::Iceberg(c), Staged::Iceberg(files)) => c.stage(files, batches).await,
            _ => Err(mismatch()),
        };
        if result.is_err() {
            let files = std::mem::replace(staged, self.staged());
            self.discard(files).await;
        }
        result
    }

    /// The table's columns as of the last read (None before the table exists).
    /// Whether the table's columns can be widened to a wider type (int to long, float to
    /// double, a decimal's precision up): Iceberg's schema evolution can; delta-rs writes no
    /// type widening.
    pub fn widens_columns(&self) -> bool {
        matches!(self, Self::Iceberg(_))
    }

    pub fn table_schema(&self) -> Option<arrow::datatypes::SchemaRef> {
        match self {
            Self::Delta(c) => c.table_schema(),
            Self::Iceberg(c) => c.table_schema(),
        }
    }

    /// Bytes `staged` holds in memory (encoded Parquet not uploaded yet).
    pub fn staged_bytes(staged: &Staged) -> usize {
        match staged {
            Staged::Delta(files) => delta::DeltaCommitter::staged_bytes(files),
            Staged::Iceberg(files) => iceberg::IcebergCommitter::staged_bytes(files),
        }
    }

    /// Drops staged files; files already uploaded are deleted (best effort: they are not part
    /// of the table either way).
    pub async fn discard(&mut self, staged: Staged) {
        match (self, staged) {
            (Self::Delta(c), Staged::Delta(files)) => c.discard(files).await,
            (Self::Iceberg(c), Staged::Iceberg(files)) => c.discard(files).await,
            _ => {}
        }
    }

    /// Commits `staged` with the ranges' next offsets, or reports a conflict: first the sync
    /// points are read fresh from the table, and any partition that moved since its batch
    /// started refuses the commit; then the format's own fence covers the race. Unless it
    /// commits, the staged files are discarded.
    pub async fn commit(
        &mut self,
        staged: Staged,
        ranges: &[PartitionRange],
    ) -> Result<CommitOutcome, IngesterError> {
        let partitions: Vec<i32> = ranges.iter().map(|r| r.partition).collect();
        let current = match self.sync_points(&partitions).await {
            Ok(current) => current,
            Err(e) => {
                self.discard(staged).await;
                return Err(e);
            }
        };
        let conflicting = moved(ranges, &current);
        if !conflicting.is_empty() {
            self.discard(staged).await;
            return Ok(CommitOutcome::Conflict {
                partitions: conflicting,
            });
        }
        // Each format discards what a commit surely left out of the table (a Delta commit
        // that may have landed keeps its files).
        match (self, staged) {
            (Self::Delta(c), Staged::Delta(files)) => c.commit(files, ranges).await,
            (Self::Iceberg(c), Staged::Iceberg(files)) => c.commit(files, ranges).await,
            _ => Err(mismatch()),
        }
    }

    /// The offsets of `partition`'s rows from `from` (None: from the start) to before `until`
    /// (the dead-letter table's, whose rows are few).
    pub async fn offsets_in(
        &mut self,
        partition: i32,
        from: Option<i64>,
        until: i64,
    ) -> Result<BTreeSet<i64>, IngesterError> {
        match self {
            Self::Delta(c) => c.offsets_in(partition, from, until).await,
            Self::Iceberg(c) => c.offsets_in(partition, from, until).await,
        }
    }
}

/// Adds the offsets of `batch`'s rows of `partition` from `from` to before `until`.
fn collect_offsets(
    batch: &RecordBatch,
    partition: i32,
    from: Option<i64>,
    until: i64,
    offsets: &mut BTreeSet<i64>,
) {
    use arrow::array::AsArray;
    use arrow::datatypes::{Int32Type, Int64Type};
    let (Some(partitions), Some(offs)) = (
        batch.column_by_name(PARTITION_COLUMN),
        batch.column_by_name(OFFSET_COLUMN),
    ) else {
        return;
    };
    let (Some(partitions), Some(offs)) = (
        partitions.as_primitive_opt::<Int32Type>(),
        offs.as_primitive_opt::<Int64Type>(),
    ) else {
        return;
    };
    for (p, o) in partitions.iter().zip(offs.iter()) {
        if let (Some(p), Some(o)) = (p, o)
            && p == partition
            && from.is_none_or(|f| o >= f)
            && o < until
        {
            offsets.insert(o);
        }
    }
}

/// Files of one format handed to the committer of another (a bug, not a condition).
fn mismatch() -> IngesterError {
    IngesterError::Unsupported("staged files of another table format".into())
}

/// Partitions whose sync point in `table` differs from where the batch started.
pub fn moved(ranges: &[PartitionRange], table: &SyncPoints) -> Vec<i32> {
    ranges
        .iter()
        .filter(|r| table.get(&r.partition).copied() != r.expected)
        .map(|r| r.partition)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iceberg_keys_name_their_partition_and_only_their_topics() {
        let key = keys::iceberg_key("clicks", 7);
        assert_eq!(keys::iceberg_partition(&key, "clicks"), Some(7));
        assert_eq!(keys::iceberg_partition(&key, "click"), None);
        assert_eq!(
            keys::iceberg_partition("kafkatable.clicks.x", "clicks"),
            None
        );
        assert_eq!(keys::delta_app_id("clicks", 7), "kafkatable-clicks-7");
    }

    #[test]
    fn file_names_are_uuid_v7s() {
        let (a, b) = (unique_name(), unique_name());
        assert_ne!(a, b);
        let parsed = uuid::Uuid::parse_str(&a).expect("a UUID");
        assert_eq!(parsed.get_version_num(), 7);
    }

    #[test]
    fn moved_partitions_are_those_whose_sync_point_changed() {
        let ranges = [
            PartitionRange {
                partition: 0,
                expected: Some(10),
                next: 20,
            },
            PartitionRange {
                partition: 1,
                expected: None,
                next: 5,
            },
            PartitionRange {
                partition: 2,
                expected: Some(7),
                next: 9,
            },
        ];
        let table = SyncPoints::from([(0, 10), (1, 3), (2, 8)]);
        assert_eq!(moved(&ranges, &table), vec![1, 2]);
        assert!(moved(&ranges, &SyncPoints::from([(0, 10), (2, 7)])).is_empty());
    }
}
