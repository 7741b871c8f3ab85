//! Record payloads to Arrow, through one [`Decoder`] per partition.
//!
//! A decoder takes each record's value as it arrives ([`Decoder::push`]) and, when the chunk is
//! closed ([`CHUNK_RECORDS`] or [`CHUNK_BYTES`]), returns the value columns
//! ([`Decoder::finish`]) against the value schema, which comes with the format
//! ([`Decoder::fixed_schema`]), from the table or its declared columns, or from the first
//! records ([`Decoder::infer`]). A value whose decoding needs something fetched first (a
//! registry's writer schema) is refused with [`Refusal::NeedsLookup`] and pushed again after
//! [`Decoder::lookup`]. Its implementations: [`JsonDecoder`] (objects, with a fast path for flat
//! schemas), [`TextDecoder`] and [`BytesDecoder`] (a single `value` column), and
//! [`AvroDecoder`] (Confluent wire format, writer schemas from the registry). A format's
//! partition decoders share its [`Decoder::Context`]. [`Pending`] holds a partition's decoder with what every format shares: offsets, timestamps, keys, tombstones;
//! and it adds the metadata columns (`_kafka_*`) per chunk. A record that fails is named by
//! topic, partition and offset with the reason, and nothing of it stays behind.
//!
//! The per-record path is statically dispatched: the table side is generic over its decoder.

mod avro;
pub mod exact;
mod flat;
mod json;
mod jsonschema;
mod keys;
mod protobuf;
mod raw;
mod writers;

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, Int32Array, Int64Array, MapBuilder, MapFieldNames, RecordBatch,
    StringArray, StringBuilder, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::error::DecodeError;

pub use avro::{AvroContext, AvroDecoder};
pub use json::JsonDecoder;
pub use jsonschema::{JsonSchemaContext, JsonSchemaDecoder};
pub use keys::KeyContext;
use keys::Keys;
pub use protobuf::{ProtobufContext, ProtobufDecoder};
pub use raw::{BytesDecoder, TextDecoder};

/// At most this many records are decoded into Arrow at a time, per partition: one chunk.
pub const CHUNK_RECORDS: usize = 8192;
/// A chunk closes earlier once its payloads reach this many bytes. Every assigned partition
/// holds a chunk in the making, so this bounds that memory (8,192 records of 1 KB each would be
/// 8 MB per partition); records of up to 64 bytes still close chunks by count. Decode rates
/// measured the same with chunks of 512 kB as of 1 MB.
pub const CHUNK_BYTES: usize = 1 << 19;

/// Names of the metadata columns.
pub const TOPIC_COLUMN: &str = "_kafka_topic";
pub const PARTITION_COLUMN: &str = "_kafka_partition";
pub const OFFSET_COLUMN: &str = "_kafka_offset";
pub const TIMESTAMP_COLUMN: &str = "_kafka_timestamp";
pub const KEY_COLUMN: &str = "_kafka_key";
/// The headers column (`table.headersColumn`).
pub const HEADERS_COLUMN: &str = "_kafka_headers";

/// One partition's record values on their way to Arrow columns, for one payload format.
///
/// Records are numbered by their position among those pushed since the last chunk; [`Pending`]
/// maps that to offsets.
#[allow(async_fn_in_trait)] // used generically, never as a trait object
pub trait Decoder: Sized {
    /// What every partition's decoder of the format shares: nothing for the formats that carry
    /// their own schema, the registry's client and the schemas read from it for Avro.
    type Context: Clone + Send + Sync + 'static;

    /// An empty decoder for one partition.
    fn new(context: &Self::Context) -> Self;

    /// The value columns when they follow from the format alone (nothing to infer).
    fn fixed_schema() -> Option<Schema> {
        None
    }

    /// Decodes the records pushed from now on against `schema` as they arrive, where the
    /// decoder can (None: they wait for [`Decoder::finish`]). Called between chunks.
    fn use_schema(&mut self, _schema: Option<&SchemaRef>) {}

    /// The schema the records pushed so far were decoded against as they arrived, if any:
    /// [`Decoder::finish`] returns its columns whatever schema it is given.
    fn schema(&self) -> Option<&SchemaRef> {
        None
    }

    /// Adds one record's value (None: a tombstone, a row of nulls here). A value refused is
    /// not kept.
    fn push(&mut self, value: Option<&[u8]>) -> Result<(), Refusal>;

    /// Whether pushing `value` would be refused with [`Refusal::NeedsLookup`] (a registry
    /// format whose schema is not known yet); a value that is malformed is not (it is refused
    /// as invalid when pushed).
    fn needs_lookup(&self, _value: &[u8]) -> bool {
        false
    }

    /// Fetches what `value` needs before it can be pushed (it was refused with
    /// [`Refusal::NeedsLookup`]): a registry's schema, say. Formats that need nothing never
    /// ask.
    async fn lookup(&mut self, _value: &[u8]) -> Result<(), Refusal> {
        Ok(())
    }

    /// Makes registry schema `schema` (id `id`) known to `context` and returns its value
    /// columns (Protobuf: of message type `record`, else the file's first): a new table's
    /// columns before any record arrives. None: the format has no registry schemas.
    fn registered(
        _context: &Self::Context,
        _id: u32,
        _schema: &crate::registry::Schema,
        _record: Option<&str>,
    ) -> Result<Option<Schema>, String> {
        Ok(None)
    }

    /// The value schema of the records pushed so far, for a table that has none yet.
    fn infer(&self) -> Result<Schema, Bad> {
        Self::fixed_schema().ok_or_else(|| Bad::Chunk("this format has no schema to infer".into()))
    }

    /// The value columns of the records pushed since the last chunk, against `schema` (or
    /// [`Decoder::schema`]), and empties the decoder. On error the records stay, so that they
    /// can be decoded again against a wider schema.
    fn finish(&mut self, schema: &SchemaRef) -> Result<Vec<ArrayRef>, Bad>;
}

/// Why a record is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A field the value schema does not have, by its path ("a" or "a.b"): schema evolution
    /// may add it.
    UnknownField(String),
    /// A column the record writes as a wider type than the value schema's (int as long, say):
    /// schema evolution may widen it. `reason` says why it is refused otherwise.
    WiderField { field: String, reason: String },
    /// The decoder needs something fetched first ([`Decoder::lookup`]).
    NeedsLookup,
    /// Anything else, with the reason.
    Invalid(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownField(field) => write!(f, "field {field} is not in the table's schema"),
            Self::WiderField { reason, .. } => f.write_str(reason),
            Self::NeedsLookup => f.write_str("its schema could not be fetched"),
            Self::Invalid(reason) => f.write_str(reason),
        }
    }
}

impl From<String> for Refusal {
    fn from(reason: String) -> Self {
        Self::Invalid(reason)
    }
}

/// What a decoder could not decode in a chunk.
#[derive(Debug)]
pub enum Bad {
    /// A record, by its position in the chunk.
    Record { index: usize, reason: Refusal },
    /// The records decoded into another number of rows.
    Count { expected: usize, got: usize },
    /// The chunk as a whole (a schema that cannot be inferred).
    Chunk(String),
}

/// The metadata columns' fields, `_kafka_key` as it is without a key format (binary).
pub fn metadata_fields() -> Vec<Field> {
    metadata_fields_with(Field::new(KEY_COLUMN, DataType::Binary, true))
}

/// The metadata columns' fields with `key` as `_kafka_key`.
fn metadata_fields_with(key: Field) -> Vec<Field> {
    vec![
        Field::new(TOPIC_COLUMN, DataType::Utf8, false),
        Field::new(PARTITION_COLUMN, DataType::Int32, false),
        Field::new(OFFSET_COLUMN, DataType::Int64, false),
        Field::new(
            TIMESTAMP_COLUMN,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        key,
    ]
}

/// The headers column's field: a map of string to binary, never null (empty without headers).
pub fn headers_field() -> Field {
    Field::new(
        HEADERS_COLUMN,
        DataType::Map(
            Arc::new(Field::new(
                "entries",
                DataType::Struct(
                    vec![
                        Field::new("key", DataType::Utf8, false),
                        Field::new("value", DataType::Binary, true),
                    ]
                    .into(),
                ),
                false,
            )),
            false,
        ),
        false,
    )
}

pub(crate) type HeadersBuilder = MapBuilder<StringBuilder, BinaryBuilder>;

/// Appends the headers of record `row` of `from` to `to`.
fn copy_headers(from: &arrow::array::MapArray, row: usize, to: &mut HeadersBuilder) {
    use arrow::array::{Array, AsArray};
    let offsets = from.value_offsets();
    let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
    let names = from.keys().as_string::<i32>();
    let values = from.values().as_binary::<i32>();
    for entry in start..end {
        to.keys().append_value(names.value(entry));
        to.values()
            .append_option(values.is_valid(entry).then(|| values.value(entry)));
    }
    // A map builder's append only fails on unequal key and value counts.
    let _ = to.append(true);
}

pub(crate) fn headers_builder() -> HeadersBuilder {
    let names = MapFieldNames {
        entry: "entries".into(),
        key: "key".into(),
        value: "value".into(),
    };
    MapBuilder::new(Some(names), StringBuilder::new(), BinaryBuilder::new())
        .with_keys_field(Arc::new(Field::new("key", DataType::Utf8, false)))
}

/// Records of one partition waiting to become a chunk: their values in the decoder, and their
/// metadata. Each value is kept as it came too, so that a chunk with a bad record can be made
/// again without it ([`Pending::without`]).
#[derive(Default)]
pub struct Pending<D> {
    values: D,
    /// The values as they came, for [`Pending::without`].
    raw: raw::Raw,
    /// Payload bytes pushed since the last chunk.
    pushed_bytes: usize,
    offsets: Vec<i64>,
    timestamps_us: Vec<Option<i64>>,
    /// The keys, decoded with their own format when the chunk closes.
    keys: Keys,
    /// The offsets of the tombstones (records without a value) decoded so far: they stay
    /// deletes on their way to the rows step ([`Pending::take_tombstones`]).
    tombstones: Vec<i64>,
    /// Each record's headers, when the table keeps them ([`Pending::with_headers`]).
    headers: Option<HeadersBuilder>,
}

impl<D: Decoder> Pending<D> {
    /// Pending records that decode against `schema` as they arrive, where the format can.
    pub fn new(context: &D::Context, schema: Option<&SchemaRef>) -> Self {
        let mut values = D::new(context);
        values.use_schema(schema);
        Self {
            values,
            raw: raw::Raw::default(),
            pushed_bytes: 0,
            offsets: Vec::new(),
            timestamps_us: Vec::new(),
            keys: Keys::default(),
            tombstones: Vec::new(),
            headers: None,
        }
    }

    /// Decodes the keys in the format of `context` (binary as they are without).
    pub fn with_keys(mut self, context: &KeyContext) -> Self {
        self.keys = Keys::new(context);
        self
    }

    /// Keeps each record's headers too (pushed with [`Pending::push_record`]), for the
    /// `_kafka_headers` column.
    pub fn with_headers(mut self, headers: bool) -> Self {
        self.headers = headers.then(headers_builder);
        self
    }

    /// [`Pending::push`] of a source record, with its headers when they are kept.
    pub fn push_record<R: crate::source::SourceRecord>(&mut self, r: &R) -> Result<(), Refused> {
        self.push(r.payload(), r.key(), r.offset(), r.timestamp_ms())?;
        if let Some(headers) = &mut self.headers {
            r.headers(&mut |name, value| {
                headers.keys().append_value(name);
                headers.values().append_option(value);
            });
            // A map builder's append only fails on unequal key and value counts.
            let _ = headers.append(true);
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// The offsets of the tombstones among the records decoded since the last call.
    pub fn take_tombstones(&mut self) -> Vec<i64> {
        std::mem::take(&mut self.tombstones)
    }

    /// Bytes of payload pushed since the last chunk.
    pub fn payload_bytes(&self) -> usize {
        self.pushed_bytes
    }

    /// Whether the records pushed so far make a whole chunk ([`CHUNK_RECORDS`], [`CHUNK_BYTES`]).
    pub fn is_full(&self) -> bool {
        self.len() >= CHUNK_RECORDS || self.pushed_bytes >= CHUNK_BYTES
    }

    /// The schema records are decoded against as they arrive, if any.
    pub fn schema(&self) -> Option<&SchemaRef> {
        self.values.schema()
    }

    /// Decodes records against `schema` as they arrive from now on, where the format can
    /// (otherwise, or with None, they wait for [`Pending::finish`]). Call it when empty.
    pub fn use_schema(&mut self, schema: Option<&SchemaRef>) {
        debug_assert!(self.is_empty());
        self.values.use_schema(schema);
    }

    /// Adds one record. `value` is None for a tombstone. A record that cannot be decoded is
    /// refused whole, with the reason.
    pub fn push(
        &mut self,
        value: Option<&[u8]>,
        key: Option<&[u8]>,
        offset: i64,
        timestamp_ms: Option<i64>,
    ) -> Result<(), Refused> {
        let refused = |reason| Refused { offset, reason };
        self.keys.check(key).map_err(refused)?;
        self.values.push(value).map_err(refused)?;
        self.raw.push(value);
        self.pushed_bytes += value.map_or(0, <[u8]>::len);
        if value.is_none() {
            self.tombstones.push(offset);
        }
        self.offsets.push(offset);
        self.timestamps_us
            .push(timestamp_ms.map(|ms| ms.saturating_mul(1000)));
        self.keys.push(key);
        Ok(())
    }

    /// Fetches what a record refused with [`Refusal::NeedsLookup`] needs (its value's schema,
    /// its key's, or both); push it again then.
    pub async fn lookup(
        &mut self,
        value: Option<&[u8]>,
        key: Option<&[u8]>,
        offset: i64,
    ) -> Result<(), Refused> {
        let refused = |reason| Refused { offset, reason };
        if let Some(value) = value
            && self.values.needs_lookup(value)
        {
            self.values.lookup(value).await.map_err(refused)?;
        }
        if let Some(key) = key
            && self.keys.needs_lookup(Some(key))
        {
            self.keys.lookup(key).await.map_err(refused)?;
        }
        Ok(())
    }

    /// Infers the value schema of the pending records (of `topic`/`partition`).
    pub fn infer(&self, topic: &str, partition: i32) -> Result<Schema, DecodeError> {
        self.values
            .infer()
            .map_err(|bad| self.bad(bad, topic, partition))
    }

    /// Decodes the pending records of `topic`/`partition` into one RecordBatch with the value
    /// columns of `value_schema` (or of the schema the records were decoded against as they
    /// arrived, see [`Pending::use_schema`]) followed (when `metadata` is set) by the metadata
    /// columns, `_kafka_key` typed as `key` (None: as the key format decides, or inferred from
    /// the keys), and empties `self`, whose next records then decode against `value_schema`.
    /// On error the records stay.
    pub fn finish(
        &mut self,
        value_schema: &SchemaRef,
        key: Option<&Field>,
        topic: &str,
        partition: i32,
        metadata: bool,
    ) -> Result<RecordBatch, DecodeError> {
        let rows = self.len();
        let newest = value_schema.clone();
        let value_schema = self
            .schema()
            .cloned()
            .unwrap_or_else(|| value_schema.clone());
        // A tombstone has no values: a column that may not be null cannot hold it.
        if let (Some(&offset), Some(column)) = (
            self.tombstones.first(),
            value_schema.fields().iter().find(|f| !f.is_nullable()),
        ) {
            return Err(DecodeError::Record {
                topic: topic.to_string(),
                partition,
                offset,
                reason: format!(
                    "a tombstone (a record without a value) cannot fill the non-nullable column {}",
                    column.name()
                ),
            });
        }
        // The keys first: their decoding leaves them in place, should the values fail.
        let keys = if metadata {
            Some(
                self.keys
                    .decode(key)
                    .map_err(|bad| self.bad(bad, topic, partition))?,
            )
        } else {
            None
        };
        let mut columns = self
            .values
            .finish(&value_schema)
            .map_err(|bad| self.bad(bad, topic, partition))?;
        let mut fields: Vec<Field> = value_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        if let Some((key_field, keys)) = keys {
            fields.extend(metadata_fields_with(key_field));
            columns.push(Arc::new(StringArray::from_iter_values(
                std::iter::repeat_n(topic, rows),
            )));
            columns.push(Arc::new(Int32Array::from_value(partition, rows)));
            columns.push(Arc::new(Int64Array::from(std::mem::take(
                &mut self.offsets,
            ))));
            columns.push(Arc::new(
                TimestampMicrosecondArray::from(std::mem::take(&mut self.timestamps_us))
                    .with_timezone("UTC"),
            ));
            columns.push(keys);
        }
        if let Some(headers) = &mut self.headers {
            fields.push(headers_field());
            columns.push(Arc::new(headers.finish()));
        }
        self.clear();
        self.values.use_schema(Some(&newest));
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map_err(|e| DecodeError::Infer(e.to_string()))
    }

    /// A decoder's failure as the error that names the record.
    fn bad(&self, bad: Bad, topic: &str, partition: i32) -> DecodeError {
        match bad {
            Bad::Record { index, reason } => {
                let offset = self.offsets.get(index).copied().unwrap_or(-1);
                refusal_error(reason, topic, partition, offset)
            }
            Bad::Count { expected, got } => DecodeError::Count {
                topic: topic.to_string(),
                partition,
                expected,
                got,
            },
            Bad::Chunk(reason) => DecodeError::Infer(reason),
        }
    }

    /// The pending records without those `drop` says (by their position among the pending
    /// records), pushed again into a new decoder of `context` that decodes against `schema` as
    /// they arrive, where the format can: a chunk that failed made again without its bad
    /// records. A record refused on its way in again is dropped too, and returned with the
    /// reason.
    pub fn without(
        &self,
        context: &D::Context,
        schema: Option<&SchemaRef>,
        drop: impl Fn(usize) -> bool,
    ) -> (Self, Vec<Refused>) {
        let mut again = Self::new(context, schema);
        again.keys = self.keys.emptied();
        let headers = self.headers.as_ref().map(|h| h.finish_cloned());
        if headers.is_some() {
            again.headers = Some(headers_builder());
        }
        let keys = self.keys.raw();
        let mut refused = Vec::new();
        for (index, value) in self.raw.values().enumerate() {
            if drop(index) {
                continue;
            }
            let key = arrow::array::Array::is_valid(&keys, index).then(|| keys.value(index));
            let offset = self.offsets[index];
            let timestamp_ms = self.timestamps_us[index].map(|us| us / 1000);
            if let Err(r) = again.push(value, key, offset, timestamp_ms) {
                refused.push(r);
                continue;
            }
            if let (Some(from), Some(to)) = (&headers, &mut again.headers) {
                copy_headers(from, index, to);
            }
        }
        (again, refused)
    }

    /// The offset of each pending record, in order.
    pub fn offsets(&self) -> &[i64] {
        &self.offsets
    }

    /// Every pending record as it came, in order (for the dead-letter topic).
    pub fn letters(&self) -> Vec<crate::bad::DeadLetter> {
        (0..self.len()).filter_map(|i| self.letter(i)).collect()
    }

    /// The pending record at `index` as it came (for the dead-letter topic).
    pub fn letter(&self, index: usize) -> Option<crate::bad::DeadLetter> {
        use arrow::array::{Array, AsArray};
        let offset = *self.offsets.get(index)?;
        let value = self.raw.values().nth(index)?.map(<[u8]>::to_vec);
        let keys = self.keys.raw();
        let key = keys.is_valid(index).then(|| keys.value(index).to_vec());
        let mut headers = Vec::new();
        if let Some(builder) = &self.headers {
            let map = builder.finish_cloned();
            let offsets = map.value_offsets();
            let names = map.keys().as_string::<i32>();
            let values = map.values().as_binary::<i32>();
            for entry in offsets[index] as usize..offsets[index + 1] as usize {
                let value = values.is_valid(entry).then(|| values.value(entry).to_vec());
                headers.push((names.value(entry).to_string(), value));
            }
        }
        Some(crate::bad::DeadLetter {
            offset,
            key,
            value,
            headers,
            timestamp_ms: self.timestamps_us[index].map(|us| us / 1000),
            ..crate::bad::DeadLetter::default()
        })
    }

    fn clear(&mut self) {
        self.raw.clear();
        self.pushed_bytes = 0;
        self.offsets.clear();
        self.timestamps_us.clear();
        self.keys.clear();
    }
}

/// A record that could not be decoded.
#[derive(Debug)]
pub struct Refused {
    pub offset: i64,
    pub reason: Refusal,
}

impl Refused {
    pub fn into_error(self, topic: &str, partition: i32) -> DecodeError {
        refusal_error(self.reason, topic, partition, self.offset)
    }
}

/// A refused record as the error that names it.
fn refusal_error(reason: Refusal, topic: &str, partition: i32, offset: i64) -> DecodeError {
    let topic = topic.to_string();
    match reason {
        Refusal::UnknownField(field) => DecodeError::UnknownField {
            topic,
            partition,
            offset,
            field,
        },
        Refusal::WiderField { field, reason } => DecodeError::WiderField {
            topic,
            partition,
            offset,
            field,
            reason,
        },
        reason @ (Refusal::NeedsLookup | Refusal::Invalid(_)) => DecodeError::Record {
            topic,
            partition,
            offset,
            reason: reason.to_string(),
        },
    }
}

/// The first field of a writer schema that `target` lacks ("a", or "a.b" inside a record).
fn unknown_field(writer: &Schema, target: &Schema) -> Option<String> {
    crate::schema::unknown_field(writer.fields(), target.fields())
}

/// Among the writer schemas `known` (by registry id), another than `id` whose field has the
/// table's `column` type: the schema an incompatible one is compared with in its message. One
/// of `used` (the partition's) first, then the newest below `id`.
fn compatible_other<'a>(
    known: impl Iterator<Item = (u32, &'a Schema)>,
    id: u32,
    column: &Field,
    used: &[u32],
) -> Option<u32> {
    let mut ids: Vec<u32> = known
        .filter(|(other, schema)| {
            *other != id
                && schema
                    .field_with_name(column.name())
                    .is_ok_and(|f| crate::schema::same_values(f.data_type(), column.data_type()))
        })
        .map(|(other, _)| other)
        .collect();
    ids.sort_by_key(|other| {
        (
            !used.contains(other),
            *other > id,
            std::cmp::Reverse(*other),
        )
    });
    ids.first().copied()
}

/// Whether a decode failure is schema evolution's to take: a field the schema lacks, or a column
/// written as a wider type.
pub fn needs_evolution(error: &DecodeError) -> bool {
    matches!(
        error,
        DecodeError::UnknownField { .. } | DecodeError::WiderField { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Int64Type;

    fn pending<D: Decoder<Context = ()>>(values: &[Option<&str>]) -> Pending<D> {
        let mut p = Pending::new(&(), None);
        for (i, v) in values.iter().enumerate() {
            p.push(
                v.map(str::as_bytes),
                Some(b"k"),
                100 + i as i64,
                Some(1_700_000_000_000 + i as i64),
            )
            .expect("raw records are taken as they come");
        }
        p
    }

    #[test]
    fn a_chunk_closes_at_its_record_count_or_its_payload_bytes() {
        let push = |p: &mut Pending<BytesDecoder>, value: &[u8], offset: i64| {
            p.push(Some(value), None, offset, None)
                .expect("bytes are taken as they come");
        };
        let mut narrow = Pending::<BytesDecoder>::default();
        for offset in 0..CHUNK_RECORDS as i64 - 1 {
            push(&mut narrow, b"0123456789", offset);
        }
        assert!(!narrow.is_full(), "one record short of a chunk");
        push(&mut narrow, b"0123456789", CHUNK_RECORDS as i64);
        assert!(narrow.is_full(), "a chunk of records");

        let wide_value = vec![b'x'; 10_000];
        let mut wide = Pending::<BytesDecoder>::default();
        let whole = CHUNK_BYTES.div_ceil(wide_value.len());
        for offset in 0..whole as i64 - 1 {
            push(&mut wide, &wide_value, offset);
        }
        assert!(!wide.is_full(), "just under {CHUNK_BYTES} bytes");
        push(&mut wide, &wide_value, whole as i64);
        assert!(
            wide.is_full() && wide.len() < CHUNK_RECORDS,
            "wide records close a chunk early"
        );
    }

    #[test]
    fn json_decodes_with_inferred_schema_and_metadata() {
        let mut p = pending::<JsonDecoder>(&[
            Some(r#"{"id":1,"name":"a","tags":["x"],"geo":{"lat":1.5}}"#),
            None,
            Some(r#"{"id":3}"#),
        ]);
        let schema = Arc::new(p.infer("t", 0).expect("infer"));
        assert_eq!(
            schema
                .field_with_name("id")
                .map(|f| f.data_type().clone())
                .ok(),
            Some(DataType::Int64)
        );
        assert!(matches!(
            schema
                .field_with_name("tags")
                .map(|f| f.data_type().clone()),
            Ok(DataType::List(_))
        ));
        assert!(matches!(
            schema.field_with_name("geo").map(|f| f.data_type().clone()),
            Ok(DataType::Struct(_))
        ));
        let batch = p.finish(&schema, None, "t", 2, true).expect("decode");
        assert_eq!(batch.num_rows(), 3);
        let ids = batch
            .column_by_name("id")
            .expect("id")
            .as_primitive::<Int64Type>();
        assert_eq!(
            (ids.value(0), ids.is_null(1), ids.value(2)),
            (1, true, 3),
            "the tombstone is a null row"
        );
        let offsets = batch
            .column_by_name(OFFSET_COLUMN)
            .expect("offset")
            .as_primitive::<Int64Type>();
        assert_eq!(offsets.values().to_vec(), vec![100, 101, 102]);
        assert!(p.is_empty(), "decoding empties the pending records");
    }

    #[test]
    fn a_bad_record_is_named_by_offset() {
        let mut p = pending::<JsonDecoder>(&[Some(r#"{"id":1}"#), Some(r#"{"id":2}"#)]);
        let schema = Arc::new(p.infer("t", 0).expect("infer"));
        p.finish(&schema, None, "t", 0, false).expect("good chunk");
        let mut p =
            pending::<JsonDecoder>(&[Some(r#"{"id":1}"#), Some("{not json"), Some(r#"{"id":3}"#)]);
        let err = p
            .finish(&schema, None, "events", 4, false)
            .expect_err("bad chunk");
        match err {
            DecodeError::Record {
                topic,
                partition,
                offset,
                ..
            } => assert_eq!((topic.as_str(), partition, offset), ("events", 4, 101)),
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn records_decoded_as_they_arrive_match_the_chunk_path() {
        let values = [
            Some(r#"{"id":1,"name":"a","score":1.5}"#),
            None,
            Some(r#"{"name":"c\u00e9","id":3}"#),
        ];
        let mut chunked = pending::<JsonDecoder>(&values);
        let schema = Arc::new(chunked.infer("t", 0).expect("infer"));
        let expected = chunked
            .finish(&schema, None, "t", 2, true)
            .expect("chunk path");

        let mut arriving = Pending::<JsonDecoder>::default();
        arriving.use_schema(Some(&schema));
        assert_eq!(
            arriving.schema(),
            Some(&schema),
            "a flat schema decodes on arrival"
        );
        for (i, v) in values.iter().enumerate() {
            arriving
                .push(
                    v.map(str::as_bytes),
                    Some(b"k"),
                    100 + i as i64,
                    Some(1_700_000_000_000 + i as i64),
                )
                .expect("push");
        }
        assert_eq!(
            arriving.payload_bytes(),
            56,
            "payload bytes are still counted"
        );
        let got = arriving
            .finish(&schema, None, "t", 2, true)
            .expect("decode");
        assert_eq!(got, expected);
        assert!(arriving.is_empty() && arriving.payload_bytes() == 0);

        // A bad record is refused whole and named by its offset; the rest carry on.
        let refused = arriving
            .push(Some(b"{\"id\":"), None, 7, None)
            .expect_err("a broken record is refused");
        let e = refused.into_error("events", 4);
        assert!(e.to_string().contains("partition 4 offset 7"), "{e}");
        assert!(arriving.is_empty(), "nothing of the refused record stays");
    }

    fn nested_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new(
                "tags",
                DataType::List(Arc::new(Field::new("element", DataType::Utf8, true))),
                true,
            ),
        ]))
    }

    fn bad_offset(e: DecodeError) -> (i64, String) {
        match e {
            DecodeError::Record { offset, reason, .. } => (offset, reason),
            other => panic!("not a bad record: {other}"),
        }
    }

    #[test]
    fn every_record_is_one_row_or_a_bad_record() {
        // Two objects in one record next to an empty one: the row count matches the record
        // count, but every row after them would sit under the wrong offset.
        let mut p = pending::<JsonDecoder>(&[
            Some(r#"{"id":0,"tags":[]}"#),
            Some(r#"{"id":1,"tags":[]}{"id":2,"tags":[]}"#),
            Some(""),
            Some(r#"{"id":3,"tags":["x"]}"#),
        ]);
        let e = p
            .finish(&nested_schema(), None, "t", 0, true)
            .expect_err("two objects in one record");
        let (offset, reason) = bad_offset(e);
        assert_eq!(offset, 101, "{reason}");
        assert!(reason.contains("found more"), "{reason}");

        // One object split across two records.
        let mut p = pending::<JsonDecoder>(&[
            Some(r#"{"id":0,"#),
            Some(r#""tags":[]}"#),
            Some(r#"{"id":1}"#),
        ]);
        let e = p
            .finish(&nested_schema(), None, "t", 0, true)
            .expect_err("split object");
        assert_eq!(bad_offset(e).0, 100);

        // The same before a schema is inferred.
        let p =
            pending::<JsonDecoder>(&[Some(r#"{"id":0}"#), Some(""), Some(r#"{"id":1}{"id":2}"#)]);
        let (offset, reason) = bad_offset(p.infer("t", 0).expect_err("empty"));
        assert_eq!(offset, 101, "{reason}");
    }

    #[test]
    fn a_number_that_does_not_fit_its_column_is_a_bad_record() {
        // The chunk path (nested columns).
        let mut p = pending::<JsonDecoder>(&[Some(r#"{"id":25.0}"#), Some(r#"{"id":25.7}"#)]);
        let (offset, reason) = bad_offset(
            p.finish(&nested_schema(), None, "t", 0, true)
                .expect_err("25.7 is not a long"),
        );
        assert_eq!(offset, 101);
        assert!(reason.contains("not a whole number"), "{reason}");

        // The flat path, which hands such records to arrow-json.
        let flat = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        let mut p = Pending::<JsonDecoder>::new(&(), Some(&flat));
        assert!(p.schema().is_some(), "decodes as records arrive");
        p.push(Some(br#"{"id":8.0}"#), None, 5, None)
            .expect("a whole number");
        let refused = p
            .push(Some(br#"{"id":25.7}"#), None, 6, None)
            .expect_err("25.7 is not a long");
        assert!(
            refused.reason.to_string().contains("not a whole number"),
            "{refused:?}"
        );
        let batch = p.finish(&flat, None, "t", 0, false).expect("decode");
        assert_eq!(
            batch
                .column(0)
                .as_primitive::<Int64Type>()
                .values()
                .to_vec(),
            vec![8]
        );
    }

    #[test]
    fn unknown_fields_are_an_error_not_a_silent_drop() {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        let mut p = pending::<JsonDecoder>(&[Some(r#"{"id":1,"extra":true}"#)]);
        let err = p.finish(&schema, None, "t", 0, false).expect_err("strict");
        assert!(needs_evolution(&err), "{err}");
        assert!(err.to_string().contains("offset 100"), "{err}");
    }

    #[test]
    fn wire_format_prefix_is_skipped() {
        let mut framed = vec![0u8, 0, 0, 0, 7];
        framed.extend_from_slice(br#"{"id":5}"#);
        let mut p = Pending::<JsonDecoder>::default();
        p.push(Some(&framed), None, 0, None).expect("push");
        let schema = Arc::new(p.infer("t", 0).expect("infer"));
        let batch = p.finish(&schema, None, "t", 0, false).expect("decode");
        assert_eq!(batch.column(0).as_primitive::<Int64Type>().value(0), 5);
    }

    #[test]
    fn text_and_bytes_become_a_value_column() {
        let mut p = pending::<TextDecoder>(&[Some("héllo"), None]);
        let schema = Arc::new(TextDecoder::fixed_schema().expect("a fixed schema"));
        let batch = p.finish(&schema, None, "t", 0, true).expect("text");
        let values = batch.column(0).as_string::<i32>();
        assert_eq!((values.value(0), values.is_null(1)), ("héllo", true));

        let mut p = Pending::<TextDecoder>::default();
        p.push(Some(&[0xff, 0xfe]), None, 9, None).expect("push");
        let err = p
            .finish(&schema, None, "t", 1, false)
            .expect_err("not utf-8");
        assert!(err.to_string().contains("partition 1 offset 9"), "{err}");

        let mut p = pending::<BytesDecoder>(&[Some("\u{1}\u{2}")]);
        let schema = Arc::new(BytesDecoder::fixed_schema().expect("a fixed schema"));
        let batch = p.finish(&schema, None, "t", 0, false).expect("bytes");
        assert_eq!(batch.column(0).as_binary::<i32>().value(0), &[1, 2]);
    }

    /// A format whose values name a schema that must be fetched first (as a registry's do):
    /// `<name>:<text>`.
    #[derive(Default)]
    struct Registered {
        known: Vec<String>,
        values: TextDecoder,
    }

    impl Decoder for Registered {
        type Context = ();

        fn new(_: &()) -> Self {
            Self::default()
        }

        fn fixed_schema() -> Option<Schema> {
            TextDecoder::fixed_schema()
        }

        fn push(&mut self, value: Option<&[u8]>) -> Result<(), Refusal> {
            let Some(v) = value else {
                return self.values.push(None);
            };
            let text = std::str::from_utf8(v).map_err(|e| Refusal::Invalid(e.to_string()))?;
            let (name, rest) = text
                .split_once(':')
                .ok_or(Refusal::Invalid("no name".into()))?;
            if !self.known.iter().any(|k| k == name) {
                return Err(Refusal::NeedsLookup);
            }
            self.values.push(Some(rest.as_bytes()))
        }

        fn needs_lookup(&self, value: &[u8]) -> bool {
            let text = String::from_utf8_lossy(value);
            text.split_once(':')
                .is_some_and(|(name, _)| !self.known.iter().any(|k| k == name))
        }

        async fn lookup(&mut self, value: &[u8]) -> Result<(), Refusal> {
            tokio::task::yield_now().await;
            let text = String::from_utf8_lossy(value);
            let name = text.split_once(':').map_or("", |(n, _)| n);
            if name == "missing" {
                return Err(Refusal::Invalid(
                    "the registry has no schema missing".into(),
                ));
            }
            self.known.push(name.to_string());
            Ok(())
        }

        fn finish(&mut self, schema: &SchemaRef) -> Result<Vec<ArrayRef>, Bad> {
            self.values.finish(schema)
        }
    }

    #[tokio::test]
    async fn a_value_that_needs_a_lookup_is_refused_until_it_is_done_and_nothing_stays() {
        let schema = Arc::new(Registered::fixed_schema().expect("a fixed schema"));
        let mut p = Pending::<Registered>::new(&(), Some(&schema));
        let refused = p
            .push(Some(b"s1:a"), None, 10, None)
            .expect_err("s1 is not known yet");
        assert_eq!(refused.reason, Refusal::NeedsLookup);
        assert!(p.is_empty(), "nothing of a refused record stays");
        p.lookup(Some(b"s1:a"), None, 10).await.expect("the lookup");
        p.push(Some(b"s1:a"), None, 10, None).expect("known now");
        p.push(Some(b"s1:b"), None, 11, None).expect("known");
        let missing = p
            .lookup(Some(b"missing:c"), None, 12)
            .await
            .expect_err("no such schema");
        let e = missing.into_error("events", 2);
        assert!(e.to_string().contains("partition 2 offset 12"), "{e}");
        let batch = p.finish(&schema, None, "events", 2, true).expect("decode");
        let values = batch.column(0).as_string::<i32>();
        assert_eq!((values.value(0), values.value(1)), ("a", "b"));
    }

    /// A record with headers, as the source gives them.
    struct WithHeaders(Vec<(&'static str, Option<&'static [u8]>)>);

    impl crate::source::SourceRecord for WithHeaders {
        fn partition(&self) -> i32 {
            0
        }
        fn offset(&self) -> i64 {
            7
        }
        fn key(&self) -> Option<&[u8]> {
            None
        }
        fn payload(&self) -> Option<&[u8]> {
            Some(b"x")
        }
        fn timestamp_ms(&self) -> Option<i64> {
            None
        }
        fn headers(&self, each: &mut dyn FnMut(&str, Option<&[u8]>)) {
            for (name, value) in &self.0 {
                each(name, *value);
            }
        }
    }

    #[test]
    fn headers_become_a_map_column_in_their_order_when_kept() {
        let mut p = Pending::<TextDecoder>::new(&(), None).with_headers(true);
        p.push_record(&WithHeaders(vec![
            ("trace", Some(b"t1")),
            ("empty", None),
            ("trace", Some(b"t2")),
        ]))
        .expect("a record");
        p.push_record(&WithHeaders(Vec::new())).expect("no headers");
        let schema = Arc::new(TextDecoder::fixed_schema().expect("text"));
        let batch = p.finish(&schema, None, "events", 0, false).expect("decode");
        let headers = batch
            .column_by_name(HEADERS_COLUMN)
            .expect("the headers column");
        assert_eq!(batch.schema().field(1), &headers_field());
        let map = headers.as_map();
        let keys = map.keys().as_string::<i32>();
        let values = map.values().as_binary::<i32>();
        assert_eq!(map.value_offsets(), &[0, 3, 3]);
        assert_eq!(
            (0..3).map(|i| keys.value(i)).collect::<Vec<_>>(),
            ["trace", "empty", "trace"]
        );
        assert_eq!(
            (0..3)
                .map(|i| values.is_valid(i).then(|| values.value(i)))
                .collect::<Vec<_>>(),
            [Some(&b"t1"[..]), None, Some(&b"t2"[..])]
        );
        let mut without = Pending::<TextDecoder>::new(&(), None);
        without
            .push_record(&WithHeaders(vec![("trace", Some(b"t1"))]))
            .expect("a record");
        let batch = without
            .finish(&schema, None, "events", 0, false)
            .expect("decode");
        assert!(batch.column_by_name(HEADERS_COLUMN).is_none());
    }
}
