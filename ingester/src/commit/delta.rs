//! Delta Lake: data files and one `txn` action per partition in the same commit.
//!
//! The `txn` app id names the topic and partition; its version is the partition's next offset.
//! Delta's conflict checker refuses a commit when a concurrent winning commit carries a `txn`
//! with the same app id, which closes the race between our re-check and our commit.
//!
//! Files roll at the target file size (see [`super::delta_files`]): a file is uploaded once its
//! Parquet reaches the target, so one commit may add several files per table partition and
//! memory holds at most one target-sized file per table partition.

use std::collections::{BTreeSet, HashMap};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use deltalake::Path;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::kernel::{Action, Add, MetadataExt, StructType, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::RecordBatchWriter;
use deltalake::{DeltaTable, DeltaTableError, TableProperty};
use object_store::ObjectStoreExt;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;

use super::delta_files::{DataFiles, delete_files};
use super::{CommitOutcome, PartitionRange, SyncPoints, keys};
use crate::decode::{OFFSET_COLUMN, PARTITION_COLUMN};
use crate::error::IngesterError;
use crate::schema::{AlignError, align};

/// The data files of the next commit (owned by its transaction): the open ones, and those
/// finished before a schema change.
#[derive(Default)]
pub struct DeltaFiles {
    open: Option<Box<DataFiles>>,
    finished: Vec<Add>,
}

/// Commits to one Delta table.
pub struct DeltaCommitter {
    table: DeltaTable,
    location: String,
    topic: String,
    partition_columns: Vec<String>,
    writer_properties: WriterProperties,
    /// Roll to a new file once the buffered Parquet of a writer reaches this many bytes.
    target_file_size: usize,
    /// `delta.checkpointInterval` of a table the ingester creates.
    checkpoint_interval: u32,
}

impl DeltaCommitter {
    /// Opens the table at `location` (it is created with the first commit when missing).
    pub async fn open(
        location: &str,
        storage_options: HashMap<String, String>,
        topic: &str,
        partition_columns: Vec<String>,
        target_file_size: u64,
        checkpoint_interval: u32,
    ) -> Result<Self, IngesterError> {
        let url = url::Url::parse(location)
            .map_err(|e| IngesterError::table(location, "parse the location", e))?;
        if url.scheme() == "file" {
            // A local table starts as an empty directory.
            let dir = url.to_file_path().map_err(|()| {
                IngesterError::table(location, "parse the location", "not a local path")
            })?;
            std::fs::create_dir_all(&dir)
                .map_err(|e| IngesterError::table(location, "create the directory", e))?;
        }
        let table = DeltaTable::try_from_url_with_storage_options(url, storage_options)
            .await
            .map_err(|e| IngesterError::table(location, "open", e))?;
        let target_file_size = usize::try_from(target_file_size).unwrap_or(usize::MAX);
        // The writer's size counts closed pages compressed, and the open page and the
        // dictionary uncompressed: both small against the target keep that estimate close to
        // the file size.
        let page_limit = (target_file_size / 16).clamp(8 << 10, 1 << 20);
        let writer_properties = super::writer_properties()
            .set_data_page_size_limit(page_limit)
            .set_dictionary_page_size_limit(page_limit)
            .build();
        let committer = Self {
            table,
            location: location.to_string(),
            topic: topic.to_string(),
            partition_columns,
            writer_properties,
            target_file_size,
            checkpoint_interval,
        };
        committer.check_writable()?;
        Ok(committer)
    }

    /// Where the table is.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn exists(&self) -> bool {
        self.table.version().is_some()
    }

    async fn refresh(&mut self) -> Result<(), IngesterError> {
        match self.table.update_state().await {
            Ok(()) => {}
            // Not created yet: no sync points.
            Err(DeltaTableError::NotATable(_)) => return Ok(()),
            Err(e) => return Err(IngesterError::table(&self.location, "read the log", e)),
        }
        // The table may have gained a feature since it was opened (a constraint added by
        // another engine, say): stop before writing rows that would break it.
        self.check_writable()
    }

    /// Refuses a table that asks its writers for something this writer does not do, naming
    /// it: a table feature of the protocol, or (in the legacy protocol, where the feature is
    /// implied by the writer version) its use in the schema or the table properties.
    fn check_writable(&self) -> Result<(), IngesterError> {
        if !self.exists() {
            return Ok(());
        }
        let snapshot = self
            .table
            .snapshot()
            .map_err(|e| IngesterError::table(&self.location, "read the snapshot", e))?;
        let refuse = |what: String| {
            IngesterError::Unsupported(format!(
                "Delta table {}: {what}; the ingester does not honour it, so it writes nothing \
                 rather than rows that could break it",
                self.location
            ))
        };
        match deltalake::kernel::transaction::PROTOCOL.can_write_to(snapshot) {
            Ok(()) => {}
            Err(TransactionError::UnsupportedTableFeatures(features)) => {
                let names: Vec<String> = features.iter().map(ToString::to_string).collect();
                return Err(refuse(format!(
                    "the table requires the writer feature(s) {}",
                    names.join(", ")
                )));
            }
            Err(e) => return Err(refuse(e.to_string())),
        }
        let configuration = snapshot.metadata().configuration();
        if let Some(key) = configuration
            .keys()
            .find(|k| k.starts_with("delta.constraints."))
        {
            return Err(refuse(format!("the table has the check constraint {key}")));
        }
        if let Some(mode) = configuration
            .get("delta.columnMapping.mode")
            .filter(|m| m.as_str() != "none")
        {
            return Err(refuse(format!(
                "the table uses column mapping (mode {mode})"
            )));
        }
        let schema = snapshot.schema();
        if let Some((column, key)) = column_annotation(schema.fields(), "") {
            let what = match key {
                "delta.invariants" => "an invariant",
                "delta.generationExpression" => "a generated column",
                _ => "an identity column",
            };
            return Err(refuse(format!("column {column} is {what} ({key})")));
        }
        Ok(())
    }

    pub async fn sync_points(&mut self, partitions: &[i32]) -> Result<SyncPoints, IngesterError> {
        self.refresh().await?;
        let mut points = SyncPoints::new();
        if !self.exists() {
            return Ok(points);
        }
        let snapshot = self
            .table
            .snapshot()
            .map_err(|e| IngesterError::table(&self.location, "read the snapshot", e))?;
        let log_store = self.table.log_store();
        for &partition in partitions {
            let version = snapshot
                .transaction_version(
                    log_store.as_ref(),
                    keys::delta_app_id(&self.topic, partition),
                )
                .await
                .map_err(|e| IngesterError::table(&self.location, "read the sync points", e))?;
            if let Some(v) = version {
                points.insert(partition, v);
            }
        }
        Ok(points)
    }

    /// The offsets of `partition`'s rows from `from` (None: from the start) to before
    /// `until`, by the `_kafka_partition` and `_kafka_offset` columns: only the files whose
    /// statistics allow such rows are read.
    pub async fn offsets_in(
        &mut self,
        partition: i32,
        from: Option<i64>,
        until: i64,
    ) -> Result<BTreeSet<i64>, IngesterError> {
        self.refresh().await?;
        let mut offsets = BTreeSet::new();
        if !self.exists() {
            return Ok(offsets);
        }
        let unreachable = |action, e: String| {
            IngesterError::unreachable(IngesterError::table(&self.location, action, e))
        };
        let snapshot = self
            .table
            .snapshot()
            .map_err(|e| unreachable("read the snapshot", e.to_string()))?;
        let paths: Vec<String> = snapshot
            .log_data()
            .iter()
            .filter(|f| may_hold(f.stats().as_deref(), partition, from, until))
            .map(|f| f.path().to_string())
            .collect();
        let store = self.table.object_store();
        for path in paths {
            let read = async {
                let bytes = store.get(&Path::from(path.as_str())).await?.bytes().await?;
                let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
                let mask = ProjectionMask::columns(
                    builder.parquet_schema(),
                    [PARTITION_COLUMN, OFFSET_COLUMN],
                );
                for batch in builder.with_projection(mask).build()? {
                    super::collect_offsets(&batch?, partition, from, until, &mut offsets);
                }
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            };
            read.await
                .map_err(|e| unreachable("read a file", format!("{path}: {e}")))?;
        }
        Ok(offsets)
    }

    async fn create(&mut self, schema: &SchemaRef) -> Result<(), IngesterError> {
        without_delta_type(schema.fields(), "").map_or(Ok(()), |e| Err(self.no_column_type(e)))?;
        let kernel: StructType = schema
            .as_ref()
            .try_into_kernel()
            .map_err(|e| IngesterError::table(&self.location, "map the schema", e))?;
        let created = self
            .table
            .clone()
            .create()
            .with_columns(kernel.fields().cloned())
            .with_partition_columns(self.partition_columns.clone())
            // deltalake writes a checkpoint after every commit whose version is a multiple of
            // it; an existing table keeps its own.
            .with_configuration_property(
                TableProperty::CheckpointInterval,
                Some(self.checkpoint_interval.to_string()),
            )
            .with_save_mode(SaveMode::Ignore)
            .await
            .map_err(|e| IngesterError::table(&self.location, "create", e))?;
        self.table = created;
        Ok(())
    }

    /// Encodes `batches` into the open files (creating the table first when missing). Batches
    /// with fields the table lacks first widen the table; the files opened before keep the
    /// old columns (readers see nulls there).
    pub async fn stage(
        &mut self,
        staged: &mut DeltaFiles,
        batches: Vec<RecordBatch>,
    ) -> Result<(), IngesterError> {
        let Some(first) = batches.first() else {
            return Ok(());
        };
        if !self.exists() {
            self.create(&first.schema()).await?;
        }
        // The table's schema is read (and widened) when files are opened, and again only when
        // a batch brings fields the open files lack; then those files are finished first.
        let outgrown = staged.open.as_ref().is_none_or(|files| {
            let schema = files.table_schema();
            batches.iter().any(|b| {
                crate::schema::unknown_field(b.schema().fields(), schema.fields()).is_some()
            })
        });
        if outgrown {
            self.add_new_columns(&batches).await?;
            if let Some(files) = staged.open.take() {
                let adds = files.finish().await.map_err(|reason| {
                    IngesterError::table(&self.location, "write files", reason)
                })?;
                staged.finished.extend(adds);
            }
        }
        if staged.open.is_none() {
            let table_schema = self.arrow_schema()?;
            staged.open = Some(Box::new(DataFiles::new(
                table_schema,
                self.partition_columns(),
                self.writer_properties.clone(),
                self.target_file_size,
                self.table.object_store(),
            )));
        }
        let Some(files) = staged.open.as_mut() else {
            return Ok(());
        };
        for batch in batches {
            let batch = align(batch, files.table_schema()).map_err(|e| match e {
                // The table was widened for these batches above: another writer's change.
                AlignError::NewFields(fields) => IngesterError::table(
                    &self.location,
                    "match the table schema",
                    format!(
                        "the records have fields the table lacks: {}",
                        fields.join(", ")
                    ),
                ),
                AlignError::Schema(reason) => {
                    IngesterError::table(&self.location, "match the table schema", reason)
                }
                AlignError::Value(bad) => IngesterError::Decode(bad),
            })?;
            files
                .write(&batch)
                .await
                .map_err(|reason| IngesterError::table(&self.location, "write files", reason))?;
        }
        Ok(())
    }

    /// The table's columns as of the last read (None before the table exists).
    pub fn table_schema(&self) -> Option<SchemaRef> {
        self.exists().then(|| self.arrow_schema().ok()).flatten()
    }

    /// The table's schema as Arrow, partition columns included.
    fn arrow_schema(&self) -> Result<SchemaRef, IngesterError> {
        Ok(RecordBatchWriter::for_table(&self.table)
            .map_err(|e| IngesterError::table(&self.location, "read the table schema", e))?
            .arrow_schema())
    }

    pub fn staged_bytes(staged: &DeltaFiles) -> usize {
        staged.open.as_ref().map_or(0, |f| f.buffered_bytes())
    }

    pub async fn discard(&mut self, staged: DeltaFiles) {
        let mut uploaded = staged.finished;
        if let Some(files) = staged.open {
            uploaded.extend((*files).into_uploaded());
        }
        delete_files(self.table.object_store().as_ref(), uploaded).await;
    }

    /// Uploads the open files and commits all staged files with the ranges' offsets; the
    /// caller has checked the sync points (see [`super::Committer::commit`]).
    pub async fn commit(
        &mut self,
        staged: DeltaFiles,
        ranges: &[PartitionRange],
    ) -> Result<CommitOutcome, IngesterError> {
        let mut adds = staged.finished;
        if let Some(files) = staged.open {
            match (*files).finish().await {
                Ok(more) => adds.extend(more),
                Err(reason) => {
                    delete_files(self.table.object_store().as_ref(), adds).await;
                    return Err(IngesterError::table(&self.location, "write files", reason));
                }
            }
        }
        let written = adds.clone();
        let outcome = self
            .commit_actions(adds.into_iter().map(Action::Add).collect(), ranges)
            .await;
        // Only a refused commit surely left the files out of the table; after any other error
        // the commit may have landed, and its files stay.
        if matches!(outcome, Ok(CommitOutcome::Conflict { .. })) {
            delete_files(self.table.object_store().as_ref(), written).await;
        }
        outcome
    }

    /// A column type Delta Lake does not have: not retried, the records need another table.
    fn no_column_type(&self, reason: String) -> IngesterError {
        IngesterError::Unsupported(format!("Delta table {}: {reason}", self.location))
    }

    /// The table's partition columns (as the table has them, not as the spec asks).
    fn partition_columns(&self) -> Vec<String> {
        self.table
            .snapshot()
            .map(|s| s.metadata().partition_columns().to_vec())
            .unwrap_or_else(|_| self.partition_columns.clone())
    }

    /// Adds the fields the batches carry and the table lacks as nullable columns (inside
    /// structs too), in a metadata-only commit of its own: new nullable columns are harmless
    /// even if the data commit after it loses a race. (The ingester only produces such batches
    /// with `schemaEvolution: addColumns`.)
    async fn add_new_columns(&mut self, batches: &[RecordBatch]) -> Result<(), IngesterError> {
        let current = self.arrow_schema()?;
        let mut widened = current.as_ref().clone();
        let mut added: Vec<String> = Vec::new();
        for batch in batches {
            for (parent, f) in
                crate::schema::added_fields(batch.schema().fields(), widened.fields())
            {
                added.push(parent.first().unwrap_or(f.name()).clone());
            }
            widened = crate::schema::widen(&widened, &batch.schema(), None);
        }
        if added.is_empty() {
            return Ok(());
        }
        if let Some(e) = without_delta_type(widened.fields(), "") {
            return Err(self.no_column_type(e));
        }
        let merged: StructType = (&widened)
            .try_into_kernel()
            .map_err(|e| IngesterError::table(&self.location, "map the widened schema", e))?;
        let snapshot = self
            .table
            .snapshot()
            .map_err(|e| IngesterError::table(&self.location, "read the snapshot", e))?;
        let metadata = snapshot
            .metadata()
            .clone()
            .with_schema(&merged)
            .map_err(|e| IngesterError::table(&self.location, "widen the schema", e))?;
        let new_fields = merged
            .fields()
            .filter(|f| added.contains(f.name()))
            .cloned()
            .collect();
        let result = commit_builder()
            .with_actions(vec![Action::Metadata(metadata)])
            .build(
                Some(snapshot),
                self.table.log_store(),
                DeltaOperation::AddColumn { fields: new_fields },
            )
            .await;
        match result {
            Ok(_) => {
                tracing::info!(table = %self.location, columns = ?added, "added columns to the table")
            }
            // Another ingester changed the schema first; the next attempt sees its columns.
            Err(e) => {
                tracing::info!(table = %self.location, error = %e, "schema change lost a race")
            }
        }
        self.refresh().await
    }

    async fn commit_actions(
        &mut self,
        mut actions: Vec<Action>,
        ranges: &[PartitionRange],
    ) -> Result<CommitOutcome, IngesterError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        actions.extend(ranges.iter().map(|r| {
            Action::Txn(Transaction::new_with_last_update(
                keys::delta_app_id(&self.topic, r.partition),
                r.next,
                Some(now),
            ))
        }));
        let snapshot = self
            .table
            .snapshot()
            .map_err(|e| IngesterError::table(&self.location, "read the snapshot", e))?;
        let base = snapshot.version();
        let operation = DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: None,
            predicate: None,
        };
        // Names this commit in its commitInfo, so that a commit that landed although its
        // response was lost is recognised (see `Self::landed`).
        let commit_id = uuid::Uuid::now_v7().to_string();
        let result = commit_builder()
            .with_actions(actions)
            .with_app_metadata(HashMap::from([(
                COMMIT_ID_KEY.to_string(),
                serde_json::Value::String(commit_id.clone()),
            )]))
            .build(Some(snapshot), self.table.log_store(), operation)
            .await;
        let failure = match result {
            Ok(finalized) => {
                let version = i64::try_from(finalized.version()).unwrap_or(i64::MAX);
                self.table.state = Some(finalized.snapshot());
                return Ok(CommitOutcome::Committed {
                    version,
                    snapshot_id: None,
                });
            }
            Err(e) => e,
        };
        // A refusal may be our own commit: when the store persisted it but the response was
        // lost, the client retries the create, finds the version taken and reads our commit as
        // a concurrent winner. Only the log can tell.
        match self.landed(&commit_id, base).await {
            Ok(Some(version)) => {
                tracing::warn!(table = %self.location, version, error = %failure, "the commit was reported as failed but is in the log");
                return Ok(CommitOutcome::Committed {
                    version,
                    snapshot_id: None,
                });
            }
            Ok(None) => {}
            // The log cannot be read: whether the commit landed is unknown, so this is an error
            // (never a conflict, whose files would be deleted).
            Err(e) => {
                return Err(IngesterError::table(
                    &self.location,
                    "commit",
                    format!("{failure}; and whether it landed is unknown: {e}"),
                ));
            }
        }
        match failure {
            DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(e),
            } => {
                tracing::info!(table = %self.location, error = %e, "concurrent commit to the same partitions");
                Ok(CommitOutcome::Conflict {
                    partitions: ranges.iter().map(|r| r.partition).collect(),
                })
            }
            e => Err(IngesterError::table(&self.location, "commit", e)),
        }
    }

    /// The version of the commit named `commit_id`, if one after `base` carries it.
    async fn landed(&mut self, commit_id: &str, base: u64) -> Result<Option<i64>, DeltaTableError> {
        self.table.update_state().await?;
        let latest = self.table.version().unwrap_or(0);
        let log_store = self.table.log_store();
        for version in base + 1..=latest {
            let Some(entry) = log_store.read_commit_entry(version).await? else {
                continue;
            };
            if commit_carries(&entry, commit_id) {
                return Ok(Some(i64::try_from(version).unwrap_or(i64::MAX)));
            }
        }
        Ok(None)
    }
}

/// The commitInfo key naming each commit of ours.
const COMMIT_ID_KEY: &str = "kafkatable.commitId";

/// Whether a commit file's commitInfo names `commit_id`.
fn commit_carries(entry: &[u8], commit_id: &str) -> bool {
    entry.split(|&b| b == b'\n').any(|line| {
        serde_json::from_slice::<serde_json::Value>(line)
            .ok()
            .and_then(|action| {
                action
                    .get("commitInfo")?
                    .get(COMMIT_ID_KEY)?
                    .as_str()
                    .map(|id| id == commit_id)
            })
            .unwrap_or(false)
    })
}

/// The first column (at any depth) annotated with an invariant, a generation expression or
/// an identity, with the annotation's key.
fn column_annotation<'a>(
    fields: impl Iterator<Item = &'a deltalake::kernel::StructField>,
    parent: &str,
) -> Option<(String, &'static str)> {
    use deltalake::kernel::DataType;
    const KEYS: [&str; 3] = [
        "delta.invariants",
        "delta.generationExpression",
        "delta.identity.start",
    ];
    fn nested(data_type: &DataType, path: &str) -> Option<(String, &'static str)> {
        match data_type {
            DataType::Struct(s) => column_annotation(s.fields(), path),
            DataType::Array(a) => nested(a.element_type(), path),
            DataType::Map(m) => nested(m.key_type(), path).or_else(|| nested(m.value_type(), path)),
            _ => None,
        }
    }
    for field in fields {
        let path = if parent.is_empty() {
            field.name().to_string()
        } else {
            format!("{parent}.{}", field.name())
        };
        if let Some(key) = KEYS.iter().find(|k| field.metadata().contains_key(**k)) {
            return Some((path, key));
        }
        if let Some(found) = nested(field.data_type(), &path) {
            return Some(found);
        }
    }
    None
}

/// Whether a file with `stats` (Delta's JSON statistics) may hold rows of `partition` from
/// `from` to before `until`; without statistics it may.
fn may_hold(stats: Option<&str>, partition: i32, from: Option<i64>, until: i64) -> bool {
    let Some(stats) = stats.and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok()) else {
        return true;
    };
    let bound = |which: &str, column: &str| stats[which][column].as_i64();
    let partition = i64::from(partition);
    let outside = |min: Option<i64>, max: Option<i64>, lo: Option<i64>, hi: i64| {
        max.zip(lo).is_some_and(|(max, lo)| max < lo) || min.is_some_and(|min| min >= hi)
    };
    !(outside(
        bound("minValues", PARTITION_COLUMN),
        bound("maxValues", PARTITION_COLUMN),
        Some(partition),
        partition + 1,
    ) || outside(
        bound("minValues", OFFSET_COLUMN),
        bound("maxValues", OFFSET_COLUMN),
        from,
        until,
    ))
}

/// Every commit writes a checkpoint when its version completes a multiple of the table's
/// delta.checkpointInterval (`CommitBuilder::default()` writes none), and removes no log
/// entries: expiring the log is retention, which is not implemented yet.
fn commit_builder() -> CommitBuilder {
    CommitBuilder::from(
        CommitProperties::default()
            .with_create_checkpoint(true)
            .with_cleanup_expired_logs(Some(false)),
    )
}

/// The first field (by its path) whose Arrow type has no Delta Lake column type, and why:
/// times of day, durations and intervals, unsigned integers, half floats.
fn without_delta_type(fields: &arrow::datatypes::Fields, parent: &str) -> Option<String> {
    use arrow::datatypes::DataType as T;
    fields.iter().find_map(|f| {
        let path = match parent {
            "" => f.name().clone(),
            parent => format!("{parent}.{}", f.name()),
        };
        let t = f.data_type();
        match t {
            T::Time32(_) | T::Time64(_) => Some(format!(
                "field {path}: a time of day ({t}) has no Delta Lake column type (an Iceberg \
                 table has one: time)"
            )),
            T::Duration(_)
            | T::Interval(_)
            | T::Float16
            | T::UInt8
            | T::UInt16
            | T::UInt32
            | T::UInt64 => Some(format!("field {path}: {t} has no Delta Lake column type")),
            T::Struct(children) => without_delta_type(children, &path),
            T::List(item) | T::LargeList(item) | T::FixedSizeList(item, _) => {
                without_delta_type(&vec![item.as_ref().clone()].into(), &path)
            }
            T::Map(entries, _) => without_delta_type(&vec![entries.as_ref().clone()].into(), &path),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use super::*;

    /// A time of day has no Delta column type: the table is not created, and the error names
    /// the field and is final (retrying would not help), not a table error retried forever.
    #[tokio::test]
    async fn a_column_type_delta_lacks_is_refused_naming_the_field() {
        let dir = std::env::temp_dir().join(format!("kt-delta-time-{}", std::process::id()));
        let location = format!("file://{}", dir.display());
        let mut committer =
            DeltaCommitter::open(&location, HashMap::new(), "t", Vec::new(), 1 << 20, 10)
                .await
                .expect("opens");
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new(
                "shift",
                DataType::Struct(
                    vec![Field::new(
                        "starts",
                        DataType::Time64(TimeUnit::Microsecond),
                        true,
                    )]
                    .into(),
                ),
                true,
            ),
        ]));
        let batch = RecordBatch::new_empty(schema);
        let mut staged = DeltaFiles::default();
        let e = committer
            .stage(&mut staged, vec![batch])
            .await
            .expect_err("no time type in Delta");
        assert!(!e.is_retryable(), "{e}");
        assert!(
            e.to_string().contains("field shift.starts: a time of day"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_commit_is_recognised_by_the_id_in_its_commit_info() {
        let entry = concat!(
            r#"{"add":{"path":"part-1.parquet","size":1}}"#,
            "\n",
            r#"{"commitInfo":{"timestamp":1,"operation":"WRITE","kafkatable.commitId":"abc"}}"#,
            "\n",
            r#"{"txn":{"appId":"kafkatable-t-0","version":5}}"#,
        );
        assert!(commit_carries(entry.as_bytes(), "abc"));
        assert!(!commit_carries(entry.as_bytes(), "abd"));
        // The id elsewhere than in commitInfo (a path, a value) does not count.
        let elsewhere = r#"{"add":{"path":"abc","size":1}}"#;
        assert!(!commit_carries(elsewhere.as_bytes(), "abc"));
        assert!(!commit_carries(b"not json", "abc"));
    }
}
