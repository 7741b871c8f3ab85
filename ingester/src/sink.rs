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

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use kafkatable_crds::IngesterConfig;
use kafkatable_crds::config::TableConfig;
use kafkatable_crds::spec::SchemaEvolution;

use crate::bad::{self, Action, Arrival, BadRecord, DeadLetter};
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
    /// What a bad record's partition does (`errors.policy`), and the checks before decoding.
    action: Action,
    arrival: Arrival,
}

/// What the next commit holds on the table side: per partition, records not decoded yet and
/// decoded chunks; and the Parquet files staged so far.
pub struct Batch<D> {
    partitions: BTreeMap<i32, Buffer<D>>,
    staged: Staged,
    /// Bad records met since the coordinator last asked ([`Sink::bad_records`]).
    bad: Vec<BadRecord>,
}

struct Buffer<D> {
    pending: Pending<D>,
    /// Decoded chunks not yet handed to the table's writer.
    chunks: Vec<RecordBatch>,
    /// The pending records failed to decode once already: if they fail again, each is decoded
    /// alone to find every bad one.
    failed_once: bool,
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
            action: Action::of(config.errors.policy),
            arrival: Arrival::new(config),
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
    /// (with `schemaEvolution: addColumns`); anything else is a bad record.
    fn on_refused<R: SourceRecord>(
        &mut self,
        batch: &mut Batch<D>,
        r: &R,
        refused: decode::Refused,
    ) -> Result<(), IngesterError> {
        let p = r.partition();
        let error = refused.into_error(&self.topic, p);
        if !self.evolves(&error) {
            let letter = self.letter_of(r);
            self.bad(batch, p, error, letter);
            return Ok(());
        }
        // Close the chunk so far, which moves the partition to the newest schema, and try again;
        // when that lacks the fields too, the record waits for the chunk path, which widens it.
        self.decode_partition(batch, p)?;
        if batch
            .bad
            .iter()
            .any(|b| b.partition == p && b.action == Action::Stopped)
        {
            return Ok(()); // the partition stopped at a record before this one
        }
        let Some(buffer) = batch.partitions.get_mut(&p) else {
            return Ok(());
        };
        let push = |pending: &mut Pending<D>| pending.push_record(r);
        if push(&mut buffer.pending).is_err() {
            buffer.pending.use_schema(None);
            if let Err(refused) = push(&mut buffer.pending) {
                let error = refused.into_error(&self.topic, p);
                let letter = self.letter_of(r);
                self.bad(batch, p, error, letter);
            }
        }
        Ok(())
    }

    /// A bad record of partition `p`: skipped, dead-lettered (`letter` is the record as it came),
    /// or the partition stops at it (its pending records from it on are dropped), as
    /// `errors.policy` says; the coordinator hears of it through [`Sink::bad_records`].
    fn bad(
        &mut self,
        batch: &mut Batch<D>,
        p: i32,
        error: DecodeError,
        letter: Option<DeadLetter>,
    ) {
        let offset = bad::located(&error).map_or(-1, |(_, offset)| offset);
        self.metrics.decode_errors.inc();
        let action = match (self.action, &letter) {
            (Action::DeadLettered, None) => {
                // Never lost silently: without the record there is nothing to send.
                tracing::error!(error = %error, "bad record no longer at hand to dead-letter; its partition stops here");
                Action::Stopped
            }
            (action, _) => action,
        };
        match action {
            Action::Skipped => {
                tracing::warn!(error = %error, "bad record skipped (errors.policy: skip)");
            }
            Action::DeadLettered => {
                tracing::warn!(error = %error, "bad record dead-lettered (errors.policy: deadLetter)");
            }
            Action::Stopped => {
                tracing::error!(error = %error, "bad record: its partition stops here (errors.policy: fail); nothing at or after it is committed, the other partitions go on");
                self.cut(batch, p, offset);
            }
        }
        let letter = letter
            .filter(|_| action == Action::DeadLettered)
            .map(|l| DeadLetter {
                partition: p,
                offset,
                reason: bad::reason(&error),
                error: error.to_string(),
                ..l
            });
        batch.bad.push(BadRecord {
            partition: p,
            offset,
            error,
            action,
            letter,
        });
    }

    /// The dead letter of `r`, when bad records are dead-lettered.
    fn letter_of<R: SourceRecord>(&self, r: &R) -> Option<DeadLetter> {
        (self.action == Action::DeadLettered).then(|| DeadLetter::of(r))
    }

    /// Drops the pending records of partition `p` at and after `offset` (its partition stopped
    /// there).
    fn cut(&self, batch: &mut Batch<D>, p: i32, offset: i64) {
        let Some(buffer) = batch.partitions.get_mut(&p) else {
            return;
        };
        let offsets = buffer.pending.offsets();
        if offsets.last().is_none_or(|last| *last < offset) {
            return;
        }
        let schema = buffer.pending.schema().cloned();
        let (again, _) = buffer
            .pending
            .without(&self.context, schema.as_ref(), |i| offsets[i] >= offset);
        // Records before the bad one were taken on their way in: they are taken again.
        buffer.pending = again;
    }

    /// After the pending records of `p` failed to decode into a chunk against `schema` with
    /// `error`: finds the bad records among them (the one the error names; when that was tried
    /// before, each record decoded alone), hands them to [`TableSink::bad`], and leaves the
    /// others pending. Without a schema (inferring one) only the named record is taken out. An
    /// error no record makes by itself stops the ingester.
    fn isolate(
        &mut self,
        batch: &mut Batch<D>,
        p: i32,
        error: DecodeError,
        schema: Option<&SchemaRef>,
    ) -> Result<(), IngesterError> {
        let Some(buffer) = batch.partitions.get_mut(&p) else {
            return Err(self.decode_failed(error));
        };
        let offsets = buffer.pending.offsets().to_vec();
        let named =
            bad::located(&error).and_then(|(_, offset)| offsets.iter().position(|o| *o == offset));
        let mut found: Vec<(usize, DecodeError)> = Vec::new();
        match (named, schema) {
            (Some(index), None) => found.push((index, error)),
            (Some(index), Some(_)) if !buffer.failed_once => found.push((index, error)),
            (_, None) => return Err(self.decode_failed(error)),
            (_, Some(schema)) => {
                let (topic, key) = (&self.topic, self.key_field.as_ref());
                let metadata = self.table.metadata_columns;
                for index in 0..offsets.len() {
                    // The record alone, against the schema its chunk failed with.
                    let (mut one, refused) =
                        buffer
                            .pending
                            .without(&self.context, Some(schema), |i| i != index);
                    let alone = match refused.into_iter().next() {
                        Some(r) => Err(r.into_error(topic, p)),
                        None => one.finish(schema, key, topic, p, metadata).map(|_| ()),
                    };
                    if let Err(e) = alone {
                        found.push((index, e));
                        if self.action == Action::Stopped {
                            break; // the first is where the partition stops
                        }
                    }
                }
                if found.is_empty() {
                    return Err(self.decode_failed(error));
                }
            }
        }
        buffer.failed_once = true;
        let drop: Vec<usize> = found.iter().map(|(i, _)| *i).collect();
        let letters = self.action == Action::DeadLettered;
        let letter =
            |pending: &Pending<D>, index: usize| letters.then(|| pending.letter(index)).flatten();
        let mut bad: Vec<(DecodeError, Option<DeadLetter>)> = found
            .into_iter()
            .map(|(index, e)| (e, letter(&buffer.pending, index)))
            .collect();
        let on_arrival = buffer.pending.schema().cloned();
        let (again, refused) = buffer
            .pending
            .without(&self.context, on_arrival.as_ref(), |i| drop.contains(&i));
        for r in refused {
            let index = offsets.iter().position(|o| *o == r.offset);
            let l = index.and_then(|i| letter(&buffer.pending, i));
            bad.push((r.into_error(&self.topic, p), l));
        }
        buffer.pending = again;
        for (e, l) in bad {
            self.bad(batch, p, e, l);
        }
        Ok(())
    }

    /// Decodes a partition's pending records into an Arrow chunk; from then on its records
    /// are decoded against the newest schema (see [`Pending::finish`]). Bad records among them
    /// are left out (or the partition stops at the first), as the policy says.
    fn decode_partition(&mut self, batch: &mut Batch<D>, p: i32) -> Result<(), IngesterError> {
        let mut inferred = false;
        loop {
            let Some(buffer) = batch.partitions.get_mut(&p) else {
                return Ok(());
            };
            if buffer.pending.is_empty() {
                buffer.pending.use_schema(self.value_schema.as_ref());
                buffer.failed_once = false;
                break;
            }
            let schema = match &self.value_schema {
                Some(s) => s.clone(),
                None => match buffer.pending.infer(&self.topic, p) {
                    Ok(schema) => {
                        let schema = Arc::new(schema);
                        tracing::info!(schema = %schema, "inferred the table schema from the first records");
                        self.value_schema = Some(schema.clone());
                        inferred = true;
                        schema
                    }
                    // A record that is not one value, met while inferring.
                    Err(e) => {
                        self.isolate(batch, p, e, None)?;
                        continue;
                    }
                },
            };
            let topic = &self.topic;
            let metadata = self.table.metadata_columns;
            let key = self.key_field.as_ref();
            let offsets = buffer.pending.offsets().to_vec();
            // An event time read in the rows step may make a bad record after the chunk is
            // decoded: keep the records to dead-letter it.
            let letters = if self.action == Action::DeadLettered
                && crate::partition::reads_event_time(&self.table)
            {
                buffer.pending.letters()
            } else {
                Vec::new()
            };
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
                        Err(e) => {
                            self.isolate(batch, p, e, Some(&widened))?;
                            continue;
                        }
                    }
                }
                Err(e) => {
                    self.isolate(batch, p, e, Some(&schema))?;
                    continue;
                }
            };
            if let Some(buffer) = batch.partitions.get_mut(&p) {
                buffer.failed_once = false;
            }
            if self.key_field.is_none()
                && let Ok(field) = decoded.schema().field_with_name(decode::KEY_COLUMN)
            {
                self.key_field = Some(field.clone());
            }
            let tombstones = batch
                .partitions
                .get_mut(&p)
                .map(|b| b.pending.take_tombstones())
                .unwrap_or_default();
            drop(tombstones); // kept apart for upsert's deletes, which are not implemented yet
            if let Some(rows) = self.rows(batch, decoded, offsets, letters, p)?
                && let Some(buffer) = batch.partitions.get_mut(&p)
            {
                buffer.chunks.push(rows);
            }
            break;
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

    /// The rows step: a decoded chunk (of the records at `offsets`) with the partition columns
    /// added. A row whose event time cannot be read is a bad record: left out, or the chunk
    /// ends before it when its partition stops (None: nothing is left).
    fn rows(
        &mut self,
        batch: &mut Batch<D>,
        mut decoded: RecordBatch,
        mut offsets: Vec<i64>,
        mut letters: Vec<DeadLetter>,
        p: i32,
    ) -> Result<Option<RecordBatch>, IngesterError> {
        loop {
            if decoded.num_rows() == 0 {
                return Ok(None);
            }
            // Cloning a batch clones Arcs; the original is what a bad row is taken out of.
            let bad = match crate::partition::add_columns(decoded.clone(), &self.table) {
                Ok(rows) => return Ok(Some(rows)),
                Err(bad) => bad,
            };
            let Some(row) = bad.row.filter(|row| *row < offsets.len()) else {
                return Err(self.decode_failed(DecodeError::Column {
                    column: "the event time".into(),
                    reason: bad.reason,
                }));
            };
            let error = DecodeError::Record {
                topic: self.topic.clone(),
                partition: p,
                offset: offsets[row],
                reason: bad.reason,
            };
            let letter = (row < letters.len()).then(|| letters.remove(row));
            let stops = letter.is_none() && self.action == Action::DeadLettered;
            self.bad(batch, p, error, letter);
            decoded = match self.action {
                _ if stops => {
                    offsets.truncate(row);
                    decoded.slice(0, row)
                }
                Action::Stopped => {
                    offsets.truncate(row);
                    decoded.slice(0, row)
                }
                Action::Skipped | Action::DeadLettered => {
                    offsets.remove(row);
                    let keep: arrow::array::BooleanArray =
                        (0..decoded.num_rows()).map(|i| Some(i != row)).collect();
                    arrow::compute::filter_record_batch(&decoded, &keep).map_err(|e| {
                        self.decode_failed(DecodeError::Column {
                            column: "the event time".into(),
                            reason: e.to_string(),
                        })
                    })?
                }
            };
        }
    }

    /// A failure to decode that no single record explains: it stops the ingester.
    fn decode_failed(&self, e: DecodeError) -> IngesterError {
        self.metrics.decode_errors.inc();
        tracing::error!(error = %e, "cannot decode the records, and no one record is to blame; stopping");
        IngesterError::Decode(e)
    }
}

impl<D: Decoder> Sink for TableSink<D> {
    type Batch = Batch<D>;

    fn batch(&self) -> Batch<D> {
        Batch {
            partitions: BTreeMap::new(),
            staged: self.committer.staged(),
            bad: Vec::new(),
        }
    }

    fn push<R: SourceRecord>(
        &mut self,
        batch: &mut Batch<D>,
        r: &R,
    ) -> Result<Pushed, IngesterError> {
        let p = r.partition();
        if let Err(e) = self.arrival.check(&self.topic, r) {
            let letter = self.letter_of(r);
            self.bad(batch, p, e, letter);
            return Ok(Pushed::Buffered);
        }
        let schema = self.value_schema.as_ref();
        let context = &self.context;
        let headers = self.table.headers_column;
        let keys = &self.keys;
        let buffer = batch.partitions.entry(p).or_insert_with(|| Buffer {
            pending: Pending::new(context, schema)
                .with_keys(keys)
                .with_headers(headers),
            chunks: Vec::new(),
            failed_once: false,
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
                let letter = self.letter_of(r);
                self.bad(batch, p, error, letter);
                return Ok(Pushed::Buffered);
            }
        }
        match self.push(batch, r)? {
            Pushed::NeedsLookup => {
                let error = decode::Refused {
                    offset: r.offset(),
                    reason: Refusal::NeedsLookup,
                }
                .into_error(&self.topic, p);
                let letter = self.letter_of(r);
                self.bad(batch, p, error, letter);
                Ok(Pushed::Buffered)
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

    fn bad_records(&mut self, batch: &mut Batch<D>) -> Vec<BadRecord> {
        std::mem::take(&mut batch.bad)
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
