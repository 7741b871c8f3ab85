//! Avro values in the Confluent wire format (magic byte 0, the 4-byte schema id, the Avro
//! body), decoded straight into Arrow by `arrow-avro` as they arrive.
//!
//! Every partition's decoder shares an [`AvroContext`]: the registry client and the writer
//! schemas read from it, by id. A value whose id is not known yet is refused with
//! [`Refusal::NeedsLookup`] and pushed again once [`Decoder::lookup`] has fetched the schema.
//! A chunk may hold records of several writer schemas (a producer upgraded mid-stream): each
//! id decodes into its own Arrow batch, the batches are conformed to the value schema (a column
//! the writer lacks is null, a narrower type is widened where every value survives) and
//! interleaved back into offset order. Types are normalized to what both table formats hold:
//! timestamps and times in microseconds, enums as strings, no Avro field metadata.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use arrow_avro::codec::Tz;
use arrow_avro::reader::{Decoder as StreamDecoder, ReaderBuilder};
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};

use super::writers::{self, Row};
use super::{Bad, CHUNK_RECORDS, Decoder, Refusal};
use crate::registry::{self, Registry, SchemaKind};

/// A writer schema: its Avro text (references written in) and the Arrow schema its values
/// decode to, normalized.
#[derive(Debug)]
struct Writer {
    id: u32,
    /// How messages name it ([`named`]).
    name: String,
    avro: String,
    arrow: SchemaRef,
}

/// The id a schema given with the KafkaTable goes by ([`AvroContext::given`]): its values carry
/// none.
pub const GIVEN_ID: u32 = 0;

/// How messages name the writer schema `id`.
fn named(id: u32, bare: bool) -> String {
    if bare {
        "the Avro schema of spec.source.schema".into()
    } else {
        format!("Avro schema id {id}")
    }
}

/// The one field of the record a key schema of another type than a record is wrapped in
/// ([`AvroContext::for_keys`]).
pub const KEY_VALUE_FIELD: &str = "_kafka_key_value";

/// What the Avro decoders of every partition share.
pub struct AvroContext {
    registry: Option<Arc<Registry>>,
    writers: Mutex<HashMap<u32, Arc<Writer>>>,
    /// Schemas of another type than a record are wrapped in a record of one field
    /// ([`KEY_VALUE_FIELD`]), whose binary encoding is the same.
    wrap: bool,
    /// Values are bare Avro bodies of the one schema given ([`AvroContext::given`]).
    bare: bool,
}

impl AvroContext {
    /// Writer schemas read from `registry` as records name them.
    pub fn new(registry: Option<Arc<Registry>>) -> Arc<Self> {
        Arc::new(Self {
            registry,
            writers: Mutex::new(HashMap::new()),
            wrap: false,
            bare: false,
        })
    }

    /// The context of values written without a registry: bare Avro bodies of `avro`, the
    /// schema given with the KafkaTable.
    pub fn given(avro: &str) -> Result<Arc<Self>, String> {
        let context = Self {
            registry: None,
            writers: Mutex::new(HashMap::new()),
            wrap: false,
            bare: true,
        };
        context.insert(GIVEN_ID, avro)?;
        Ok(Arc::new(context))
    }

    /// The context of Avro keys: a key schema is often a primitive type ("string", "long").
    pub fn for_keys(registry: Option<Arc<Registry>>) -> Arc<Self> {
        Arc::new(Self {
            registry,
            writers: Mutex::new(HashMap::new()),
            wrap: true,
            bare: false,
        })
    }

    /// Makes `avro` the writer schema of id `id` (from the registry, or given).
    pub fn insert(&self, id: u32, avro: &str) -> Result<(), String> {
        let wrapped;
        let avro = match serde_json::from_str::<serde_json::Value>(avro) {
            Ok(schema) if self.wrap && schema.get("type").is_none_or(|t| t != "record") => {
                wrapped = serde_json::json!({
                    "type": "record",
                    "name": "KafkaKey",
                    "namespace": "kafkatable",
                    "fields": [{"name": KEY_VALUE_FIELD, "type": schema}],
                })
                .to_string();
                wrapped.as_str()
            }
            _ => avro,
        };
        let name = named(id, self.bare);
        let decoder = stream_decoder(id, avro).map_err(|e| format!("{name}: {e}"))?;
        let arrow = Arc::new(normalized_schema(&decoder.schema()));
        if let Some((field, data_type)) = without_column_type(arrow.fields(), "") {
            return Err(format!(
                "field {field} of {name}: its type ({data_type}) has no column type in Delta \
                 Lake or Iceberg"
            ));
        }
        let writer = Arc::new(Writer {
            id,
            name,
            avro: avro.to_string(),
            arrow,
        });
        self.lock().insert(id, writer);
        Ok(())
    }

    fn writer(&self, id: u32) -> Option<Arc<Writer>> {
        self.lock().get(&id).cloned()
    }

    /// Another writer schema known here whose field has the table's `column` type (see
    /// [`super::compatible_other`]).
    fn compatible_other(&self, id: u32, column: &Field, used: &[u32]) -> Option<u32> {
        let writers = self.lock();
        let known = writers.values().map(|w| (w.id, w.arrow.as_ref()));
        super::compatible_other(known, id, column, used)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<Writer>>> {
        self.writers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A streaming decoder of the one writer schema `id`.
fn stream_decoder(id: u32, avro: &str) -> Result<StreamDecoder, String> {
    let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
    store
        .set(Fingerprint::Id(id), AvroSchema::new(avro.to_string()))
        .map_err(|e| e.to_string())?;
    ReaderBuilder::new()
        .with_batch_size(CHUNK_RECORDS)
        .with_tz(Tz::Utc)
        .with_writer_schema_store(store)
        .with_active_fingerprint(Fingerprint::Id(id))
        .build_decoder()
        .map_err(|e| format!("cannot be read as Avro into Arrow: {e}"))
}

/// The records of one writer schema in the chunk being made.
struct Run {
    writer: Arc<Writer>,
    decoder: StreamDecoder,
    /// Batches flushed from the decoder so far (it flushes at [`CHUNK_RECORDS`] rows).
    batches: Vec<RecordBatch>,
    /// The values decoded since the last flush, back to back, and where each ends: to decode
    /// them again into a fresh decoder when a value breaks the one in use.
    values: Vec<u8>,
    ends: Vec<usize>,
    rows: usize,
    /// The first field of this writer that the value schema records are checked against
    /// lacks: its records are refused until the schema has it.
    unknown: Option<String>,
}

impl Run {
    fn new(writer: Arc<Writer>, target: Option<&SchemaRef>) -> Result<Self, String> {
        let mut run = Self {
            decoder: stream_decoder(writer.id, &writer.avro)?,
            writer,
            batches: Vec::new(),
            values: Vec::new(),
            ends: Vec::new(),
            rows: 0,
            unknown: None,
        };
        run.check_against(target);
        Ok(run)
    }

    fn check_against(&mut self, target: Option<&SchemaRef>) {
        self.unknown = target.and_then(|t| super::unknown_field(&self.writer.arrow, t));
    }

    /// Decodes one whole value (the wire-format prefix and the body); on failure nothing of
    /// it stays.
    fn push(&mut self, value: &[u8]) -> Result<(), String> {
        // The stream decoder takes a prefix alone without making a row of it.
        if value.len() <= registry::WIRE_PREFIX {
            return Err(format!(
                "not a value of {}: it has no Avro body",
                self.writer.name
            ));
        }
        if self.decoder.batch_is_full() {
            self.flush()?;
        }
        match self.decoder.decode(value) {
            Ok(n) if n == value.len() => {
                self.values.extend_from_slice(value);
                self.ends.push(self.values.len());
                self.rows += 1;
                Ok(())
            }
            outcome => {
                let reason = match outcome {
                    Ok(n) => format!(
                        "the value ends {} bytes into its Avro body, before the record does",
                        n.saturating_sub(5)
                    ),
                    Err(e) => e.to_string(),
                };
                self.replay()?;
                Err(format!("not a value of {}: {reason}", self.writer.name))
            }
        }
    }

    /// A fresh decoder holding the values decoded since the last flush.
    fn replay(&mut self) -> Result<(), String> {
        self.decoder = stream_decoder(self.writer.id, &self.writer.avro)?;
        let mut start = 0;
        for &end in &self.ends {
            self.decoder
                .decode(&self.values[start..end])
                .map_err(|e| format!("decoding again: {e}"))?;
            start = end;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), String> {
        if let Some(batch) = self.decoder.flush().map_err(|e| e.to_string())? {
            self.batches.push(batch);
        }
        self.values.clear();
        self.ends.clear();
        Ok(())
    }
}

/// One partition's Avro records on their way to Arrow.
pub struct AvroDecoder {
    context: Arc<AvroContext>,
    /// The value schema records are checked against as they arrive.
    target: Option<SchemaRef>,
    runs: Vec<Run>,
    rows: Vec<Row>,
    /// A bare value with its wire-format prefix (see [`AvroContext::given`]).
    frame: Vec<u8>,
}

impl Decoder for AvroDecoder {
    type Context = Arc<AvroContext>;

    fn new(context: &Arc<AvroContext>) -> Self {
        Self {
            context: context.clone(),
            target: None,
            runs: Vec::new(),
            rows: Vec::new(),
            frame: Vec::new(),
        }
    }

    fn use_schema(&mut self, schema: Option<&SchemaRef>) {
        self.target = schema.cloned();
        for run in &mut self.runs {
            run.check_against(schema);
        }
    }

    fn push(&mut self, value: Option<&[u8]>) -> Result<(), Refusal> {
        let Some(value) = value else {
            self.rows.push(Row::Tombstone);
            return Ok(());
        };
        // A bare body gets the wire-format prefix of the given schema's id, which the stream
        // decoder reads.
        let (id, value) = if self.context.bare {
            self.frame.clear();
            self.frame.extend_from_slice(&[0; 5]);
            self.frame.extend_from_slice(value);
            (GIVEN_ID, self.frame.as_slice())
        } else {
            let (id, _) =
                registry::split_wire(value).map_err(|e| Refusal::Invalid(e.to_string()))?;
            (id, value)
        };
        let run = match self.runs.iter().position(|r| r.writer.id == id) {
            Some(run) => run,
            None => {
                let writer = self.context.writer(id).ok_or(Refusal::NeedsLookup)?;
                self.runs.push(Run::new(writer, self.target.as_ref())?);
                self.runs.len() - 1
            }
        };
        if let Some(field) = &self.runs[run].unknown {
            return Err(Refusal::UnknownField(field.clone()));
        }
        let row = self.runs[run].rows;
        self.runs[run].push(value)?;
        self.rows.push(Row::Value { run, row });
        Ok(())
    }

    fn needs_lookup(&self, value: &[u8]) -> bool {
        !self.context.bare
            && registry::split_wire(value).is_ok_and(|(id, _)| self.context.writer(id).is_none())
    }

    async fn lookup(&mut self, value: &[u8]) -> Result<(), Refusal> {
        let registry = self.context.registry.as_deref();
        let (id, schema) = writers::fetch(registry, value, SchemaKind::Avro, "Avro").await?;
        let avro = registry::inline_avro(&schema)
            .map_err(|e| Refusal::Invalid(format!("schema id {id}: {e}")))?;
        self.context.insert(id, &avro).map_err(Refusal::Invalid)
    }

    fn registered(
        context: &Arc<AvroContext>,
        id: u32,
        schema: &registry::Schema,
        _record: Option<&str>,
    ) -> Result<Option<Schema>, String> {
        let avro = registry::inline_avro(schema).map_err(|e| format!("schema id {id}: {e}"))?;
        context.insert(id, &avro)?;
        Ok(context.writer(id).map(|w| w.arrow.as_ref().clone()))
    }

    fn infer(&self) -> Result<Schema, Bad> {
        writers::widened(self.runs.iter().map(|r| r.writer.arrow.as_ref()), "Avro")
    }

    fn finish(&mut self, schema: &SchemaRef) -> Result<Vec<ArrayRef>, Bad> {
        let used: Vec<u32> = self.runs.iter().map(|r| r.writer.id).collect();
        // Every run's values as one batch against `schema`.
        let mut conformed: Vec<Vec<ArrayRef>> = Vec::with_capacity(self.runs.len());
        for (i, run) in self.runs.iter_mut().enumerate() {
            // A writer whose records were all refused this chunk (a field the schema lacks)
            // has nothing to check.
            if run.rows == 0 {
                conformed.push(writers::empty(schema));
                continue;
            }
            let bad = |reason| Bad::Record {
                index: writers::first_row(&self.rows, i),
                reason,
            };
            run.flush().map_err(|e| bad(Refusal::Invalid(e)))?;
            // Kept whole in the run, so that a failure below leaves the records there.
            let batch = match run.batches.len() {
                1 => run.batches[0].clone(),
                _ => {
                    let merged =
                        arrow::compute::concat_batches(&run.decoder.schema(), run.batches.iter())
                            .map_err(|e| Bad::Chunk(e.to_string()))?;
                    run.batches = vec![merged.clone()];
                    merged
                }
            };
            let id = run.writer.id;
            writers::check(&run.writer.arrow, id, "Avro", schema, |column| {
                self.context.compatible_other(id, column, &used)
            })
            .map_err(bad)?;
            let batch = normalize(&batch, &run.writer).map_err(bad)?;
            conformed.push(writers::conform(&batch, id, "Avro", schema).map_err(bad)?);
        }
        let columns = writers::assemble(conformed, &self.rows, schema)?;
        // Decoders are kept for the next chunk; their values are gone.
        for run in &mut self.runs {
            run.batches.clear();
            run.rows = 0;
        }
        self.rows.clear();
        Ok(columns)
    }
}

/// A writer's batch as decoded, with its columns in their normalized types.
fn normalize(batch: &RecordBatch, writer: &Writer) -> Result<RecordBatch, Refusal> {
    let columns = batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, column)| {
            let to = normalized_type(column.data_type());
            if &to == column.data_type() {
                return Ok(column.clone());
            }
            arrow::compute::cast(column, &to).map_err(|e| {
                Refusal::Invalid(format!(
                    "field {} of {}: {} has no table column type ({e})",
                    field.name(),
                    writer.name,
                    column.data_type()
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(writer.arrow.clone(), columns)
        .map_err(|e| Refusal::Invalid(format!("{}: {e}", writer.name)))
}

/// `schema` with every type normalized and the Avro metadata dropped.
fn normalized_schema(schema: &Schema) -> Schema {
    Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| normalized_field(f))
            .collect::<Vec<_>>(),
    )
}

fn normalized_field(field: &Field) -> Field {
    Field::new(
        field.name(),
        normalized_type(field.data_type()),
        field.is_nullable(),
    )
}

/// The type a decoded Avro type is stored as: timestamps (`timestamp-millis`, `-micros`,
/// `local-timestamp-*`) and times in microseconds (what Delta and Iceberg hold), enums as
/// strings, nested fields without metadata.
fn normalized_type(data_type: &DataType) -> DataType {
    let fields =
        |fields: &Fields| -> Fields { fields.iter().map(|f| normalized_field(f)).collect() };
    match data_type {
        DataType::Timestamp(TimeUnit::Second | TimeUnit::Millisecond, tz) => {
            DataType::Timestamp(TimeUnit::Microsecond, tz.clone())
        }
        DataType::Time32(_) => DataType::Time64(TimeUnit::Microsecond),
        // `fixed` and `uuid` (16 bytes): binary in both formats.
        DataType::FixedSizeBinary(_) => DataType::Binary,
        DataType::Dictionary(_, values) => normalized_type(values),
        DataType::Struct(children) => DataType::Struct(fields(children)),
        DataType::List(item) => DataType::List(Arc::new(normalized_field(item))),
        DataType::LargeList(item) => DataType::LargeList(Arc::new(normalized_field(item))),
        DataType::Map(entries, sorted) => {
            DataType::Map(Arc::new(normalized_field(entries)), *sorted)
        }
        other => other.clone(),
    }
}

/// The first field (by path) whose normalized type neither table format holds: an Avro
/// `duration` (months, days and milliseconds).
fn without_column_type(fields: &Fields, path: &str) -> Option<(String, DataType)> {
    fields.iter().find_map(|f| {
        let path = if path.is_empty() {
            f.name().clone()
        } else {
            format!("{path}.{}", f.name())
        };
        match f.data_type() {
            DataType::Interval(_) | DataType::Duration(_) => Some((path, f.data_type().clone())),
            DataType::Struct(children) => without_column_type(children, &path),
            DataType::List(item) | DataType::LargeList(item) => {
                without_column_type(&Fields::from(vec![item.as_ref().clone()]), &path)
            }
            DataType::Map(entries, _) => {
                without_column_type(&Fields::from(vec![entries.as_ref().clone()]), &path)
            }
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Pending;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int32Type, Int64Type, TimestampMicrosecondType};

    const V1: &str = r#"{"type":"record","name":"Event","namespace":"shop","fields":[
        {"name":"id","type":"long"},
        {"name":"name","type":"string"},
        {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
        {"name":"kind","type":{"type":"enum","name":"Kind","symbols":["A","B"]}},
        {"name":"price","type":{"type":"bytes","logicalType":"decimal","precision":9,"scale":2}},
        {"name":"note","type":["null","string"],"default":null}]}"#;
    /// V1 with `qty` added (optional).
    fn v2() -> String {
        let fields = V1
            .strip_suffix("]}")
            .expect("V1 ends its fields and the record");
        format!(r#"{fields},{{"name":"qty","type":["null","int"],"default":null}}]}}"#)
    }

    fn zigzag(out: &mut Vec<u8>, v: i64) {
        let mut n = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn bytes(out: &mut Vec<u8>, b: &[u8]) {
        zigzag(out, b.len() as i64);
        out.extend_from_slice(b);
    }

    /// One record of V1 (V2 with `qty`) in the wire format, written by hand from the Avro spec.
    fn event(id_of_schema: u32, id: i64, note: Option<&str>, qty: Option<Option<i32>>) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&id_of_schema.to_be_bytes());
        zigzag(&mut out, id);
        bytes(&mut out, format!("n{id}").as_bytes());
        zigzag(&mut out, 1_700_000_000_000 + id);
        zigzag(&mut out, id % 2); // kind
        bytes(&mut out, &(12_345i32 + id as i32).to_be_bytes()); // price, unscaled
        match note {
            None => zigzag(&mut out, 0),
            Some(n) => {
                zigzag(&mut out, 1);
                bytes(&mut out, n.as_bytes());
            }
        }
        if let Some(qty) = qty {
            match qty {
                None => zigzag(&mut out, 0),
                Some(q) => {
                    zigzag(&mut out, 1);
                    zigzag(&mut out, q.into());
                }
            }
        }
        out
    }

    fn context() -> Arc<AvroContext> {
        let context = AvroContext::new(None);
        context.insert(1, V1).expect("v1");
        context.insert(2, &v2()).expect("v2");
        context
    }

    const NESTED_V1: &str = r#"{"type":"record","name":"N","fields":[
        {"name":"id","type":"long"},
        {"name":"address","type":{"type":"record","name":"A","fields":[
            {"name":"street","type":"string"}]}}]}"#;
    /// NESTED_V1 with `address.floor` added (optional).
    const NESTED_V2: &str = r#"{"type":"record","name":"N","fields":[
        {"name":"id","type":"long"},
        {"name":"address","type":{"type":"record","name":"A","fields":[
            {"name":"street","type":"string"},
            {"name":"floor","type":["null","int"],"default":null}]}}]}"#;

    /// A NESTED_V2 record (with NESTED_V1's id prefix when `floor` is None: v1 has no floor).
    fn nested(schema: u32, id: i64, floor: Option<i32>) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&schema.to_be_bytes());
        zigzag(&mut out, id);
        bytes(&mut out, format!("s{id}").as_bytes());
        if let Some(floor) = floor {
            zigzag(&mut out, 1);
            zigzag(&mut out, floor.into());
        }
        out
    }

    #[test]
    fn a_field_added_inside_a_record_widens_it_and_is_never_dropped() {
        let context = AvroContext::new(None);
        context.insert(1, NESTED_V1).expect("v1");
        context.insert(2, NESTED_V2).expect("v2");
        let v1 = Arc::new(context.writer(1).expect("v1").arrow.as_ref().clone());
        let mut p = Pending::<AvroDecoder>::new(&context, Some(&v1));
        p.push(Some(&nested(1, 1, None)), None, 0, None)
            .expect("a v1 record");
        let refused = p
            .push(Some(&nested(2, 2, Some(3))), None, 1, None)
            .expect_err("v2 has a field the table's address lacks");
        assert_eq!(
            refused.reason,
            Refusal::UnknownField("address.floor".into())
        );
        // As the sink does: the chunk so far is closed, and the next records wait for the
        // chunk path, where the v2 record's field is named again and the widened schema has
        // it inside the record, nullable.
        p.finish(&v1, None, "t", 0, false).expect("the v1 chunk");
        p.use_schema(None);
        p.push(Some(&nested(1, 1, None)), None, 1, None)
            .expect("v1");
        p.push(Some(&nested(2, 2, Some(3))), None, 2, None)
            .expect("v2");
        let e = p
            .finish(&v1, None, "t", 0, false)
            .expect_err("v1 lacks address.floor");
        assert!(super::super::needs_evolution(&e), "{e}");
        let inferred = p.infer("t", 0).expect("inferred");
        let widened = Arc::new(crate::schema::widen(&v1, &inferred, None));
        let DataType::Struct(address) = widened.field(1).data_type() else {
            panic!("a struct: {widened:?}");
        };
        assert_eq!(address.len(), 2, "{address:?}");
        assert!(address[1].is_nullable() && address[1].name() == "floor");
        let batch = p.finish(&widened, None, "t", 0, false).expect("decoded");
        let floors = batch
            .column(1)
            .as_struct()
            .column_by_name("floor")
            .expect("floor")
            .as_primitive::<Int32Type>()
            .clone();
        assert!(floors.is_null(0), "the v1 record reads null");
        assert_eq!(floors.value(1), 3);
    }

    /// Found by the fuzzer: a value of only the wire-format prefix was counted as a record,
    /// though the decoder made no row of it, and the chunk's assembly panicked on the missing
    /// row. Now it is refused as the bad record it is, and the chunk decodes.
    #[test]
    fn a_value_without_a_body_is_refused_not_a_missing_row() {
        let context = context();
        let mut p = Pending::<AvroDecoder>::new(&context, None);
        p.push(Some(&event(1, 1, None, None)), None, 0, None)
            .expect("a v1 record");
        let refused = p
            .push(Some(&[0, 0, 0, 0, 2]), None, 1, None)
            .expect_err("no body after the prefix");
        assert!(
            refused.reason.to_string().contains("no Avro body"),
            "{refused:?}"
        );
        let bare = AvroContext::given(V1).expect("v1");
        let mut b = Pending::<AvroDecoder>::new(&bare, None);
        b.push(Some(&[]), None, 0, None)
            .expect_err("an empty bare value");
        let schema = Arc::new(p.infer("t", 0).expect("schema"));
        let batch = p.finish(&schema, None, "t", 0, false).expect("decoded");
        assert_eq!(batch.num_rows(), 1);
    }

    #[test]
    fn a_schema_given_in_the_spec_decodes_bare_bodies() {
        let given = AvroContext::given(V1).expect("v1");
        let mut p = Pending::<AvroDecoder>::new(&given, None);
        for id in [3, 4] {
            // The wire-format record without its prefix: the bare body.
            let body = event(1, id, None, None).split_off(5);
            p.push(Some(&body), None, id, None).expect("a bare body");
        }
        let schema = Arc::new(p.infer("t", 0).expect("the given schema's columns"));
        let batch = p.finish(&schema, None, "t", 0, false).expect("decoded");
        let ids = batch
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!((ids.value(0), ids.value(1)), (3, 4));

        let mut p = Pending::<AvroDecoder>::new(&given, None);
        let e = p
            .push(Some(&[0x02]), None, 9, None)
            .expect_err("a body cut short")
            .into_error("t", 1);
        assert!(
            e.to_string()
                .contains("the Avro schema of spec.source.schema"),
            "{e}"
        );
        let broken = AvroContext::given(r#"{"type": "record", "name": "R"}"#).err();
        assert!(broken.is_some_and(|e| e.contains("spec.source.schema")));
    }

    #[test]
    fn logical_types_are_normalized_for_the_tables() {
        let context = context();
        let mut p = Pending::<AvroDecoder>::new(&context, None);
        p.push(Some(&event(1, 7, Some("hi"), None)), None, 0, None)
            .expect("a v1 record");
        let schema = Arc::new(p.infer("t", 0).expect("inferred from the writer schema"));
        let types: Vec<(String, DataType, bool)> = schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable()))
            .collect();
        assert_eq!(
            types,
            vec![
                ("id".into(), DataType::Int64, false),
                ("name".into(), DataType::Utf8, false),
                (
                    "at".into(),
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    false
                ),
                ("kind".into(), DataType::Utf8, false),
                ("price".into(), DataType::Decimal128(9, 2), false),
                ("note".into(), DataType::Utf8, true),
            ]
        );
        let batch = p.finish(&schema, None, "t", 0, false).expect("decoded");
        let at = batch.column(2).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(at.value(0), (1_700_000_000_000 + 7) * 1000);
        assert_eq!(batch.column(3).as_string::<i32>().value(0), "B");
        let price = batch
            .column(4)
            .as_primitive::<arrow::datatypes::Decimal128Type>();
        assert_eq!(price.value(0), 12_352);
        assert_eq!(batch.column(5).as_string::<i32>().value(0), "hi");
    }

    #[tokio::test]
    async fn an_unknown_id_waits_for_its_lookup_and_without_a_registry_is_named() {
        let context = context();
        let mut p = Pending::<AvroDecoder>::new(&context, None);
        let refused = p
            .push(Some(&event(9, 1, None, None)), None, 40, None)
            .expect_err("id 9 is not known");
        assert_eq!(refused.reason, Refusal::NeedsLookup);
        assert!(p.is_empty());
        let e = p
            .lookup(Some(&event(9, 1, None, None)), None, 40)
            .await
            .expect_err("no registry")
            .into_error("orders", 3);
        let text = e.to_string();
        assert!(
            text.contains("schema id 9") && text.contains("offset 40"),
            "{text}"
        );
    }

    #[test]
    fn writers_of_two_schemas_interleave_in_offset_order_against_the_wider_schema() {
        let context = context();
        let mut p = Pending::<AvroDecoder>::new(&context, None);
        p.push(Some(&event(1, 0, None, None)), None, 0, None)
            .expect("v1");
        p.push(Some(&event(2, 1, None, Some(Some(5)))), None, 1, None)
            .expect("v2");
        p.push(None, Some(b"k"), 2, None).expect("a tombstone");
        p.push(Some(&event(1, 3, Some("x"), None)), None, 3, None)
            .expect("v1");
        let schema = Arc::new(p.infer("t", 0).expect("both writers"));
        assert_eq!(schema.field(6).name(), "qty");
        assert!(schema.field(6).is_nullable());
        // A tombstone needs nullable columns: the table's, say.
        let nullable = Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        let batch = p.finish(&nullable, None, "t", 0, true).expect("decoded");
        let ids = batch.column(0).as_primitive::<Int64Type>();
        assert_eq!(
            (0..4)
                .map(|i| ids.is_valid(i).then(|| ids.value(i)))
                .collect::<Vec<_>>(),
            vec![Some(0), Some(1), None, Some(3)]
        );
        let qty = batch.column(6).as_primitive::<Int32Type>();
        assert_eq!(
            (0..4)
                .map(|i| qty.is_valid(i).then(|| qty.value(i)))
                .collect::<Vec<_>>(),
            vec![None, Some(5), None, None]
        );
        let offsets = batch
            .column_by_name(crate::decode::OFFSET_COLUMN)
            .expect("offsets")
            .as_primitive::<Int64Type>();
        assert_eq!(offsets.values().to_vec(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_new_field_is_refused_against_the_old_schema_so_evolution_can_add_it() {
        let context = context();
        let mut p = Pending::<AvroDecoder>::new(&context, None);
        p.push(Some(&event(1, 0, None, None)), None, 0, None)
            .expect("v1");
        let v1 = Arc::new(p.infer("t", 0).expect("v1"));
        p.finish(&v1, None, "t", 0, false).expect("decoded");
        p.use_schema(Some(&v1));
        let refused = p
            .push(Some(&event(2, 1, None, Some(None))), None, 1, None)
            .expect_err("qty is new");
        assert_eq!(refused.reason, Refusal::UnknownField("qty".into()));
        assert!(p.is_empty());
    }

    #[test]
    fn a_broken_value_is_refused_and_the_records_before_it_stay_whole() {
        let context = context();
        let mut p = Pending::<AvroDecoder>::new(&context, None);
        p.push(Some(&event(1, 0, None, None)), None, 0, None)
            .expect("v1");
        let whole = event(1, 1, Some("cut"), None);
        let refused = p
            .push(Some(&whole[..whole.len() - 2]), None, 1, None)
            .expect_err("cut short");
        match &refused.reason {
            Refusal::Invalid(reason) => assert!(reason.contains("schema id 1"), "{reason}"),
            other => panic!("{other:?}"),
        }
        let not_wire = p
            .push(Some(b"{\"id\":1}"), None, 2, None)
            .expect_err("JSON");
        assert!(matches!(not_wire.reason, Refusal::Invalid(ref r) if r.contains("magic")));
        p.push(Some(&event(1, 3, None, None)), None, 3, None)
            .expect("v1 again");
        let schema = Arc::new(p.infer("t", 0).expect("v1"));
        let batch = p.finish(&schema, None, "t", 0, false).expect("decoded");
        let ids = batch.column(0).as_primitive::<Int64Type>();
        assert_eq!(ids.values().to_vec(), vec![0, 3]);
    }

    #[test]
    fn a_type_the_table_cannot_hold_unchanged_names_the_field_and_the_schema_id() {
        let context = context();
        let mut p = Pending::<AvroDecoder>::new(&context, None);
        p.push(Some(&event(1, 3_000_000_000, None, None)), None, 0, None)
            .expect("v1");
        let mut fields: Vec<Field> = p
            .infer("t", 0)
            .expect("v1")
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields[0] = Field::new("id", DataType::Int32, false);
        let narrow = Arc::new(Schema::new(fields));
        let e = p
            .finish(&narrow, None, "t", 5, false)
            .expect_err("a long in an int");
        let text = e.to_string();
        assert!(
            text.contains("field id: Avro schema id 1 writes it as Int64")
                && text.contains("incompatible schema change"),
            "{text}"
        );
        // A long where the table has an int: the table's column may widen.
        assert!(crate::decode::needs_evolution(&e), "{e:?}");
        assert!(!p.is_empty(), "the records stay for a wider schema");
    }

    #[test]
    fn a_timestamp_column_read_back_from_an_iceberg_table_takes_the_values() {
        // iceberg-rust reads a timestamptz column back as Timestamp(µs, "+00:00"): a restarted
        // ingester decodes against that.
        let context = context();
        let mut p = Pending::<AvroDecoder>::new(&context, None);
        p.push(Some(&event(1, 7, None, None)), None, 0, None)
            .expect("v1");
        let mut fields: Vec<Field> = p
            .infer("t", 0)
            .expect("v1")
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields[2] = Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
            false,
        );
        let table = Arc::new(Schema::new(fields));
        let batch = p
            .finish(&table, None, "t", 0, false)
            .expect("the same instants");
        assert_eq!(batch.column(2).data_type(), table.field(2).data_type());
        let at = batch.column(2).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(at.value(0), (1_700_000_000_000 + 7) * 1000);
    }

    #[test]
    fn fixed_and_uuid_are_bytes_and_a_duration_is_refused_naming_the_field() {
        let record =
            |fields: &str| format!(r#"{{"type":"record","name":"R","fields":[{fields}]}}"#);
        let context = AvroContext::new(None);
        let e = context
            .insert(
                5,
                &record(
                    r#"{"name":"id","type":"long"},{"name":"wait","type":{"type":"fixed","name":"D","size":12,"logicalType":"duration"}}"#,
                ),
            )
            .expect_err("a duration has no column type");
        assert!(e.contains("field wait") && e.contains("schema id 5"), "{e}");
        context
            .insert(
                6,
                &record(
                    r#"{"name":"tag","type":{"type":"fixed","name":"T","size":4}},{"name":"u","type":{"type":"string","logicalType":"uuid"}}"#,
                ),
            )
            .expect("fixed and uuid");
        let mut value = vec![0, 0, 0, 0, 6, 1, 2, 3, 4];
        bytes(&mut value, b"123e4567-e89b-12d3-a456-426614174000");
        let mut p = Pending::<AvroDecoder>::new(&context, None);
        p.push(Some(&value), None, 0, None).expect("a record");
        let schema = Arc::new(p.infer("t", 0).expect("the writer's"));
        assert_eq!(schema.field(0).data_type(), &DataType::Binary);
        assert_eq!(schema.field(1).data_type(), &DataType::Binary);
        let batch = p.finish(&schema, None, "t", 0, false).expect("decoded");
        assert_eq!(batch.column(0).as_binary::<i32>().value(0), [1, 2, 3, 4]);
        assert_eq!(
            batch.column(1).as_binary::<i32>().value(0),
            [
                0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66, 0x14, 0x17,
                0x40, 0x00
            ]
        );
    }

    #[test]
    fn a_safe_widening_goes_into_the_existing_column() {
        let context = context();
        let mut p = Pending::<AvroDecoder>::new(&context, None);
        p.push(Some(&event(2, 4, None, Some(Some(7)))), None, 0, None)
            .expect("v2");
        let mut fields: Vec<Field> = p
            .infer("t", 0)
            .expect("v2")
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let qty = fields.len() - 1;
        fields[qty] = Field::new("qty", DataType::Int64, true);
        let wider = Arc::new(Schema::new(fields));
        let batch = p
            .finish(&wider, None, "t", 0, false)
            .expect("an int in a long column");
        let column = batch.column(qty).as_primitive::<Int64Type>();
        assert_eq!(column.value(0), 7);
    }

    #[test]
    fn a_required_field_removed_names_the_field_and_both_schema_ids() {
        let context = context();
        // V1 without `name`, registered as id 3.
        let v3 = V1.replace(r#"{"name":"name","type":"string"},"#, "");
        context.insert(3, &v3).expect("v3");
        let mut p = Pending::<AvroDecoder>::new(&context, None);
        p.push(Some(&event(1, 0, None, None)), None, 0, None)
            .expect("v1");
        let v1 = Arc::new(p.infer("t", 0).expect("v1"));
        p.finish(&v1, None, "t", 0, false).expect("decoded");
        p.use_schema(Some(&v1));
        let mut record = vec![0, 0, 0, 0, 3];
        zigzag(&mut record, 1); // id
        zigzag(&mut record, 1_700_000_000_001); // at
        zigzag(&mut record, 1); // kind
        bytes(&mut record, &12_346i32.to_be_bytes()); // price
        zigzag(&mut record, 0); // note: null
        p.push(Some(&record), None, 1, None).expect("v3 decodes");
        let text = p
            .finish(&v1, None, "t", 2, false)
            .expect_err("name is gone")
            .to_string();
        assert!(
            text.contains("offset 1")
                && text.contains("field name is required by the table (as in Avro schema id 1)")
                && text.contains("Avro schema id 3 does not have it"),
            "{text}"
        );
    }
}
