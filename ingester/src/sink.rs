//! The table side of the pipeline: records to rows to files in the table.
//!
//! [`TableSink`] is the coordinator's [`Sink`], generic over the payload format's
//! [`Decoder`]. Each partition's records go to its decoder ([`decode::Pending`]), which closes a chunk of Arrow rows at [`decode::CHUNK_RECORDS`] or
//! [`decode::CHUNK_BYTES`]; the value schema is decided by [`schema`] (the table's columns, the
//! declared ones, inferred from the first records, widened by new fields); the rows step
//! ([`crate::partition::add_columns`]) adds the partition columns; between polls the committer
//! encodes chunks into the transaction's Parquet files (the batch holds them), and commits them
//! with the transaction's offsets.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Field, Schema, SchemaRef};
use kafkatable_crds::IngesterConfig;
use kafkatable_crds::config::TableConfig;
use kafkatable_crds::spec::SchemaEvolution;

use crate::commit::{CommitOutcome, Committer, Staged, SyncPoints};
use crate::coordinator::{Pushed, Sink};
use crate::decode::{self, Decoder, KeyContext, Pending, Refusal};
use crate::error::{DecodeError, IngesterError};
use crate::metrics::Metrics;
use crate::schema;
use crate::source::SourceRecord;
use crate::txn::Transaction;

/// Decodes records into rows and writes them into one table.
pub struct TableSink<D: Decoder> {
    topic: String,
    table: TableConfig,
    /// The newest value schema: every partition's next chunk decodes against it.
    value_schema: Option<SchemaRef>,
    /// How keys decode, and the `_kafka_key` column's field once known (the table's, or the
    /// first chunk's).
    keys: KeyContext,
    key_field: Option<Field>,
    committer: Committer,
    metrics: Metrics,
    /// What the partitions' decoders share (they live in the batch).
    context: D::Context,
}

/// What the next commit holds on the table side: per partition, records not decoded yet and
/// decoded chunks; and the Parquet files staged so far.
pub struct Batch<D> {
    partitions: BTreeMap<i32, Buffer<D>>,
    staged: Staged,
}

struct Buffer<D> {
    pending: Pending<D>,
    /// Decoded chunks not yet handed to the table's writer.
    chunks: Vec<RecordBatch>,
}

impl<D: Decoder> TableSink<D> {
    /// The sink of `config`'s table.
    pub fn new(
        config: &IngesterConfig,
        committer: Committer,
        metrics: Metrics,
        context: D::Context,
        keys: KeyContext,
    ) -> Result<Self, IngesterError> {
        // What is not implemented was refused when the config was read
        // (`IngesterConfig::check_implemented`).
        config.check_implemented()?;
        // A table created without the headers column would drop them silently.
        if let Some(table) = committer.table_schema()
            && config.table.headers_column
            && table.field_with_name(decode::HEADERS_COLUMN).is_err()
        {
            return Err(IngesterError::Unsupported(format!(
                "spec.table.headersColumn: the table was created without a {} column, and \
                 adding it to an existing table is not implemented yet",
                decode::HEADERS_COLUMN
            )));
        }
        let key_field = key_field(&keys, committer.table_schema().as_deref(), config)?;
        let value_schema = match D::fixed_schema() {
            Some(fixed) => Some(Arc::new(fixed)),
            // An existing table's columns, not a schema inferred again from the first new
            // records (see `crate::schema`).
            None if config.table.columns.is_empty() => committer.table_schema().map(|table| {
                let values = schema::value_columns(&table, &config.table.partition_by);
                tracing::info!(schema = %values, "decoding against the table's columns");
                Arc::new(values)
            }),
            None => Some(Arc::new(columns_schema(&config.table)?)),
        };
        Ok(Self {
            topic: config.source.topic.clone(),
            table: config.table.clone(),
            value_schema,
            keys,
            key_field,
            committer,
            metrics,
            context,
        })
    }

    /// Whether the value columns are known before any record arrives (from the format, the
    /// table or the spec).
    pub fn has_columns(&self) -> bool {
        self.value_schema.is_some()
    }

    /// What the partitions' decoders share.
    pub fn context(&self) -> &D::Context {
        &self.context
    }

    /// Decodes against `columns` (a registry subject's schema, see
    /// `schemaRegistry.tableSchema`) when neither the table nor the spec has columns.
    pub fn with_subject_schema(mut self, columns: Option<Schema>) -> Self {
        if self.value_schema.is_none() {
            self.value_schema = columns.map(Arc::new);
        }
        self
    }

    /// Whether schema evolution takes the records `error` refused: fields the table lacks, or
    /// a column written wider where the table format can widen it, with `addColumns`.
    fn evolves(&self, error: &DecodeError) -> bool {
        decode::needs_evolution(error)
            && self.table.schema_evolution == SchemaEvolution::AddColumns
            && (self.committer.widens_columns() || !matches!(error, DecodeError::WiderField { .. }))
    }

    /// A record the partition's decoder refused. Records with new fields widen the schema
    /// (with `schemaEvolution: addColumns`); anything else stops the ingester.
    fn on_refused<R: SourceRecord>(
        &mut self,
        batch: &mut Batch<D>,
        r: &R,
        refused: decode::Refused,
    ) -> Result<(), IngesterError> {
        let p = r.partition();
        let error = refused.into_error(&self.topic, p);
        if !self.evolves(&error) {
            return Err(self.decode_failed(error));
        }
        // Close the chunk so far, which moves the partition to the newest schema, and try again;
        // when that lacks the fields too, the record waits for the chunk path, which widens it.
        self.decode_partition(batch, p)?;
        let Some(buffer) = batch.partitions.get_mut(&p) else {
            return Ok(());
        };
        let push = |pending: &mut Pending<D>| pending.push_record(r);
        if push(&mut buffer.pending).is_err() {
            buffer.pending.use_schema(None);
            if let Err(refused) = push(&mut buffer.pending) {
                let error = refused.into_error(&self.topic, p);
                return Err(self.decode_failed(error));
            }
        }
        Ok(())
    }

    /// Decodes a partition's pending records into an Arrow chunk; from then on its records
    /// are decoded against the newest schema (see [`Pending::finish`]).
    fn decode_partition(&mut self, batch: &mut Batch<D>, p: i32) -> Result<(), IngesterError> {
        let Some(buffer) = batch.partitions.get_mut(&p) else {
            return Ok(());
        };
        if buffer.pending.is_empty() {
            buffer.pending.use_schema(self.value_schema.as_ref());
            return Ok(());
        }
        let (schema, inferred) = match &self.value_schema {
            Some(s) => (s.clone(), false),
            None => {
                let inferred = Arc::new(buffer.pending.infer(&self.topic, p)?);
                tracing::info!(schema = %inferred, "inferred the table schema from the first records");
                self.value_schema = Some(inferred.clone());
                (inferred, true)
            }
        };
        let topic = &self.topic;
        let metadata = self.table.metadata_columns;
        let key = self.key_field.as_ref();
        let decoded = match buffer.pending.finish(&schema, key, topic, p, metadata) {
            Ok(decoded) => decoded,
            Err(e) if self.evolves(&e) => {
                let inferred = buffer.pending.infer(topic, p)?;
                let table = self.committer.table_schema();
                let widened = Arc::new(schema::widen(&schema, &inferred, table.as_deref()));
                tracing::info!(schema = %widened, "records carry new fields: adding them as nullable columns");
                self.value_schema = Some(widened.clone());
                match buffer.pending.finish(&widened, key, topic, p, metadata) {
                    Ok(decoded) => decoded,
                    Err(e) => return Err(self.decode_failed(e)),
                }
            }
            Err(e) => return Err(self.decode_failed(e)),
        };
        if self.key_field.is_none()
            && let Ok(field) = decoded.schema().field_with_name(decode::KEY_COLUMN)
        {
            self.key_field = Some(field.clone());
        }
        let tombstones = buffer.pending.take_tombstones();
        let rows = self.rows(decoded, &tombstones, p)?;
        if let Some(buffer) = batch.partitions.get_mut(&p) {
            buffer.chunks.push(rows);
        }
        if inferred {
            // With the schema known, the other partitions decode as records arrive too.
            let others: Vec<i32> = batch
                .partitions
                .keys()
                .copied()
                .filter(|q| *q != p)
                .collect();
            for q in others {
                self.decode_partition(batch, q)?;
            }
        }
        Ok(())
    }

    /// The rows step: a decoded chunk with the partition columns added. A tombstone (at
    /// `tombstones`) stays what it is: in append mode a row with its key (in `_kafka_key`)
    /// and null values; without metadata columns that would be a row of nulls that nothing
    /// marks as a delete, so it is refused.
    fn rows(
        &self,
        decoded: RecordBatch,
        tombstones: &[i64],
        p: i32,
    ) -> Result<RecordBatch, IngesterError> {
        if let (Some(&offset), false) = (tombstones.first(), self.table.metadata_columns) {
            return Err(self.decode_failed(DecodeError::Record {
                topic: self.topic.clone(),
                partition: p,
                offset,
                reason: "a tombstone (a record without a value) is kept as a row with its key \
                         and null values, and without spec.table.metadataColumns it would be a \
                         row of nulls that nothing marks as a delete"
                    .into(),
            }));
        }
        // Cloning a batch clones Arcs; the original names the record when the event time is bad.
        match crate::partition::add_columns(decoded.clone(), &self.table) {
            Ok(rows) => Ok(rows),
            Err(bad) => {
                let offset = bad
                    .row
                    .and_then(|row| {
                        let offsets = decoded.column_by_name(decode::OFFSET_COLUMN)?;
                        offsets
                            .as_primitive_opt::<arrow::datatypes::Int64Type>()
                            .map(|o| o.value(row))
                    })
                    .unwrap_or(-1);
                Err(self.decode_failed(DecodeError::Record {
                    topic: self.topic.clone(),
                    partition: p,
                    offset,
                    reason: bad.reason,
                }))
            }
        }
    }

    fn decode_failed(&self, e: DecodeError) -> IngesterError {
        self.metrics.decode_errors.inc();
        tracing::error!(error = %e, "cannot decode a record; stopping (errors.policy: fail), nothing at or after it is committed");
        IngesterError::Decode(e)
    }
}

impl<D: Decoder> Sink for TableSink<D> {
    type Batch = Batch<D>;

    fn batch(&self) -> Batch<D> {
        Batch {
            partitions: BTreeMap::new(),
            staged: self.committer.staged(),
        }
    }

    fn push<R: SourceRecord>(
        &mut self,
        batch: &mut Batch<D>,
        r: &R,
    ) -> Result<Pushed, IngesterError> {
        let p = r.partition();
        let schema = self.value_schema.as_ref();
        let context = &self.context;
        let headers = self.table.headers_column;
        let keys = &self.keys;
        let buffer = batch.partitions.entry(p).or_insert_with(|| Buffer {
            pending: Pending::new(context, schema)
                .with_keys(keys)
                .with_headers(headers),
            chunks: Vec::new(),
        });
        let pushed = buffer.pending.push_record(r);
        let full = buffer.pending.is_full();
        match pushed {
            Ok(()) if full => {
                self.decode_partition(batch, p)?;
                Ok(Pushed::Ready)
            }
            Ok(()) => Ok(Pushed::Buffered),
            Err(refused) if refused.reason == Refusal::NeedsLookup => Ok(Pushed::NeedsLookup),
            Err(refused) => {
                // Widening closes a chunk.
                self.on_refused(batch, r, refused)?;
                Ok(Pushed::Ready)
            }
        }
    }

    async fn lookup<R: SourceRecord>(
        &mut self,
        batch: &mut Batch<D>,
        r: &R,
    ) -> Result<Pushed, IngesterError> {
        let p = r.partition();
        if let Some(buffer) = batch.partitions.get_mut(&p) {
            let looked_up = buffer
                .pending
                .lookup(r.payload(), r.key(), r.offset())
                .await;
            if let Err(refused) = looked_up {
                let error = refused.into_error(&self.topic, p);
                return Err(self.decode_failed(error));
            }
        }
        match self.push(batch, r)? {
            Pushed::NeedsLookup => {
                let error = decode::Refused {
                    offset: r.offset(),
                    reason: Refusal::NeedsLookup,
                }
                .into_error(&self.topic, p);
                Err(self.decode_failed(error))
            }
            pushed => Ok(pushed),
        }
    }

    fn buffered_bytes(&self, batch: &Batch<D>) -> u64 {
        let buffered: usize = batch
            .partitions
            .values()
            .map(|b| {
                b.pending.payload_bytes()
                    + b.chunks
                        .iter()
                        .map(RecordBatch::get_array_memory_size)
                        .sum::<usize>()
            })
            .sum();
        (buffered + Committer::staged_bytes(&batch.staged)) as u64
    }

    /// Hands the decoded chunks of every partition (after decoding what is pending, with
    /// `all`) to the table's writer, which encodes them now.
    async fn stage(&mut self, batch: &mut Batch<D>, all: bool) -> Result<(), IngesterError> {
        if all {
            let partitions: Vec<i32> = batch.partitions.keys().copied().collect();
            for p in partitions {
                self.decode_partition(batch, p)?;
            }
        }
        let chunks: Vec<RecordBatch> = batch
            .partitions
            .values_mut()
            .flat_map(|b| b.chunks.drain(..))
            .collect();
        if chunks.is_empty() {
            return Ok(());
        }
        match self.committer.stage(&mut batch.staged, chunks).await {
            // A value that would change on its way into the table.
            Err(IngesterError::Decode(bad)) => Err(self.decode_failed(bad)),
            other => other,
        }
    }

    async fn sync_points(&mut self, partitions: &[i32]) -> Result<SyncPoints, IngesterError> {
        self.committer.sync_points(partitions).await
    }

    async fn commit(&mut self, txn: Transaction<Batch<D>>) -> Result<CommitOutcome, IngesterError> {
        let ranges = txn.ranges();
        let mut batch = txn.into_batch();
        if let Err(e) = self.stage(&mut batch, true).await {
            self.committer.discard(batch.staged).await;
            return Err(e);
        }
        self.committer.commit(batch.staged, &ranges).await
    }

    async fn discard(&mut self, batch: Batch<D>) {
        self.committer.discard(batch.staged).await;
    }
}

/// The `_kafka_key` field keys decode into: the existing table's (which must suit the key
/// format: changing it is not implemented), else the format's own or, for a structured
/// format, None until the first keys are decoded.
fn key_field(
    keys: &KeyContext,
    table: Option<&Schema>,
    config: &IngesterConfig,
) -> Result<Option<Field>, IngesterError> {
    let format = &config.source.key_format;
    if !config.table.metadata_columns {
        if *format != kafkatable_crds::spec::KeyFormat::Bytes {
            return Err(IngesterError::Unsupported(format!(
                "spec.source.keyFormat {}: the decoded key is stored in the {} metadata column, \
                 so it needs spec.table.metadataColumns: true",
                kafkatable_crds::config::spec_value(format),
                decode::KEY_COLUMN
            )));
        }
        return Ok(None);
    }
    let fixed = keys.fixed_field();
    let Some(existing) = table.and_then(|t| t.field_with_name(decode::KEY_COLUMN).ok()) else {
        return Ok(fixed);
    };
    if !key_column_suits(keys, existing.data_type()) {
        return Err(IngesterError::Unsupported(format!(
            "spec.source.keyFormat {}: the table's {} column is {}, made by another key format; \
             changing the key format of an existing table is not implemented yet",
            kafkatable_crds::config::spec_value(format),
            decode::KEY_COLUMN,
            existing.data_type()
        )));
    }
    Ok(Some(existing.clone()))
}

/// Whether an existing table's `_kafka_key` column of type `existing` holds keys decoded as
/// `keys` says (a table format may read a column back as another Arrow type of the same
/// values: Iceberg's binary is Arrow's LargeBinary).
fn key_column_suits(keys: &KeyContext, existing: &arrow::datatypes::DataType) -> bool {
    use arrow::datatypes::DataType as T;
    let binary = matches!(existing, T::Binary | T::LargeBinary | T::BinaryView);
    let text = matches!(existing, T::Utf8 | T::LargeUtf8 | T::Utf8View);
    match keys {
        KeyContext::Bytes => binary,
        KeyContext::Text => text,
        // An Avro key of a primitive type is a column of that type (a binary column was made
        // by keys kept as bytes, or by an Avro `bytes` key: not told apart, refused).
        KeyContext::Avro(_) => !binary,
        KeyContext::Json | KeyContext::Protobuf(_) | KeyContext::JsonSchema(_) => {
            matches!(existing, T::Struct(_))
        }
    }
}

/// The value schema of explicitly declared columns.
fn columns_schema(table: &TableConfig) -> Result<Schema, IngesterError> {
    table
        .columns
        .iter()
        .map(|c| schema::column_type(&c.type_).map(|t| Field::new(&c.name, t, c.nullable)))
        .collect::<Option<Vec<_>>>()
        .map(Schema::new)
        .ok_or_else(|| IngesterError::Unsupported("a column type in spec.table.columns".into()))
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{DataType, Field};

    use super::*;

    /// Iceberg reads a binary column back as LargeBinary: an ingester restarted on the table it
    /// made (keys kept as bytes) must take it for what it made.
    #[test]
    fn a_key_column_read_back_as_another_arrow_type_of_the_same_values_suits() {
        let bytes = KeyContext::Bytes;
        assert!(key_column_suits(&bytes, &DataType::LargeBinary));
        assert!(key_column_suits(&bytes, &DataType::Binary));
        assert!(!key_column_suits(&bytes, &DataType::Utf8));
        assert!(key_column_suits(&KeyContext::Text, &DataType::LargeUtf8));
        assert!(!key_column_suits(&KeyContext::Text, &DataType::LargeBinary));
        let avro = KeyContext::Avro(decode::AvroContext::for_keys(None));
        assert!(
            key_column_suits(&avro, &DataType::Int64),
            "a primitive Avro key"
        );
        assert!(!key_column_suits(&avro, &DataType::LargeBinary));
        let key = DataType::Struct(vec![Field::new("id", DataType::Int64, false)].into());
        assert!(key_column_suits(&KeyContext::Json, &key));
        assert!(!key_column_suits(&KeyContext::Json, &DataType::Binary));
    }
}
