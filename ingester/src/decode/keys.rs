//! Record keys on their way to the `_kafka_key` column, decoded with their own format
//! (`spec.source.keyFormat`).
//!
//! Keys are kept as they arrive, back to back in one buffer, and decoded when their chunk
//! closes: as they are (bytes, a binary column), as UTF-8 text (string), or by the value
//! decoder of their format into a struct column with the key's fields (json, avro, protobuf,
//! jsonSchema). A registry-format key whose schema is not known yet is refused when pushed
//! ([`Refusal::NeedsLookup`]), so that its lookup is done before the chunk closes. The key
//! struct's fields are the table's (`_kafka_key` of an existing table) or, for a new table, the
//! first chunk's keys'; a key with a field the table's key lacks is a bad record (adding fields
//! to a key is not implemented yet). Decoding is repeatable: on error the keys stay.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BinaryBuilder, StringArray, StructArray, UInt32Array,
};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use kafkatable_crds::spec::KeyFormat;

use super::{
    AvroContext, AvroDecoder, Bad, Decoder, JsonDecoder, JsonSchemaContext, JsonSchemaDecoder,
    KEY_COLUMN, ProtobufContext, ProtobufDecoder, Refusal,
};

/// What the key decoders of every partition share: the registry formats' schema caches.
#[derive(Clone, Default)]
pub enum KeyContext {
    #[default]
    Bytes,
    Text,
    Json,
    Avro(Arc<AvroContext>),
    Protobuf(Arc<ProtobufContext>),
    JsonSchema(Arc<JsonSchemaContext>),
}

impl KeyContext {
    /// The context of keys in `format`, their schemas read from `registry`.
    pub fn new(format: KeyFormat, registry: Option<Arc<crate::registry::Registry>>) -> Self {
        match format {
            KeyFormat::Bytes => Self::Bytes,
            KeyFormat::String => Self::Text,
            KeyFormat::Json => Self::Json,
            KeyFormat::Avro => Self::Avro(AvroContext::for_keys(registry)),
            KeyFormat::Protobuf => Self::Protobuf(ProtobufContext::new(registry)),
            KeyFormat::JsonSchema => Self::JsonSchema(JsonSchemaContext::new(registry)),
        }
    }

    /// The `_kafka_key` field when the format alone decides its type.
    pub fn fixed_field(&self) -> Option<Field> {
        match self {
            Self::Bytes => Some(Field::new(KEY_COLUMN, DataType::Binary, true)),
            Self::Text => Some(Field::new(KEY_COLUMN, DataType::Utf8, true)),
            _ => None,
        }
    }

    fn structured(&self) -> Option<Structured> {
        Some(match self {
            Self::Bytes | Self::Text => return None,
            Self::Json => Structured::Json(JsonDecoder::new(&())),
            Self::Avro(c) => Structured::Avro(AvroDecoder::new(c)),
            Self::Protobuf(c) => Structured::Protobuf(ProtobufDecoder::new(c)),
            Self::JsonSchema(c) => Structured::JsonSchema(JsonSchemaDecoder::new(c)),
        })
    }
}

/// A value decoder of a structured key format.
enum Structured {
    Json(JsonDecoder),
    Avro(AvroDecoder),
    Protobuf(ProtobufDecoder),
    JsonSchema(JsonSchemaDecoder),
}

/// Calls the same method on whichever decoder `$s` holds.
macro_rules! each {
    ($s:expr, $d:ident => $call:expr) => {
        match $s {
            Structured::Json($d) => $call,
            Structured::Avro($d) => $call,
            Structured::Protobuf($d) => $call,
            Structured::JsonSchema($d) => $call,
        }
    };
}

/// One partition's keys since the last chunk.
pub struct Keys {
    context: KeyContext,
    raw: BinaryBuilder,
    /// A structured format's decoder that keeps no keys: it tells whether a key's schema is
    /// known and fetches it.
    probe: Option<Structured>,
}

impl Default for Keys {
    fn default() -> Self {
        Self::new(&KeyContext::Bytes)
    }
}

impl Keys {
    pub fn new(context: &KeyContext) -> Self {
        Self {
            context: context.clone(),
            raw: BinaryBuilder::new(),
            probe: context.structured(),
        }
    }

    /// Refuses a key whose schema must be fetched first ([`Keys::lookup`]); nothing is kept.
    pub fn check(&self, key: Option<&[u8]>) -> Result<(), Refusal> {
        match (&self.probe, key) {
            (Some(probe), Some(key)) if each!(probe, d => d.needs_lookup(key)) => {
                Err(Refusal::NeedsLookup)
            }
            _ => Ok(()),
        }
    }

    /// Whether `key` waits for [`Keys::lookup`].
    pub fn needs_lookup(&self, key: Option<&[u8]>) -> bool {
        self.check(key).is_err()
    }

    /// Keeps one key (None: the record has none).
    pub fn push(&mut self, key: Option<&[u8]>) {
        self.raw.append_option(key);
    }

    /// Fetches the schema `key` needs (see [`Keys::check`]).
    pub async fn lookup(&mut self, key: &[u8]) -> Result<(), Refusal> {
        match &mut self.probe {
            Some(probe) => each!(probe, d => d.lookup(key).await),
            None => Ok(()),
        }
        .map_err(|reason| Refusal::Invalid(format!("the key: {reason}")))
    }

    /// The keys kept, as they came.
    pub fn raw(&self) -> arrow::array::BinaryArray {
        self.raw.finish_cloned()
    }

    /// An empty copy (the same format; its schemas live in the shared context).
    pub fn emptied(&self) -> Self {
        Self::new(&self.context)
    }

    /// Empties the keys (after their chunk is made).
    pub fn clear(&mut self) {
        // BinaryBuilder::finish resets the builder.
        let _ = self.raw.finish();
    }

    /// The `_kafka_key` column of the keys kept, typed as `field` (the table's, or None for
    /// the first chunk of a new table: inferred from the keys). The keys stay.
    pub fn decode(&self, field: Option<&Field>) -> Result<(Field, ArrayRef), Bad> {
        let raw = self.raw.finish_cloned();
        if let Some(fixed) = self.context.fixed_field() {
            let column: ArrayRef = match &self.context {
                KeyContext::Text => Arc::new(text(raw)?),
                _ => Arc::new(raw),
            };
            return Ok((fixed, column));
        }
        let Some(mut decoder) = self.context.structured() else {
            return Err(Bad::Chunk("a key format without a decoder".into()));
        };
        let target = field.map(key_schema).transpose()?;
        each!(&mut decoder, d => d.use_schema(target.as_ref()));
        // Only the keys present go to the decoder; a record without a key gets a null struct.
        let mut rows: Vec<Option<u32>> = Vec::with_capacity(raw.len());
        let mut present = 0u32;
        for (index, key) in raw.iter().enumerate() {
            let Some(key) = key else {
                rows.push(None);
                continue;
            };
            each!(&mut decoder, d => d.push(Some(key))).map_err(|reason| Bad::Record {
                index,
                reason: key_refusal(reason),
            })?;
            rows.push(Some(present));
            present += 1;
        }
        let schema = match target {
            Some(t) => t,
            None => Arc::new(each!(&decoder, d => d.infer()).map_err(key_bad)?),
        };
        let columns = each!(&mut decoder, d => d.finish(&schema)).map_err(|bad| match bad {
            // The decoder counts the keys it was given; name the record by its own position.
            Bad::Record { index, reason } => Bad::Record {
                index: nth_present(&rows, index),
                reason: key_refusal(reason),
            },
            other => key_bad(other),
        })?;
        let fields: Fields = schema.fields().clone();
        let keys = StructArray::try_new(fields.clone(), columns, None)
            .map_err(|e| Bad::Chunk(format!("the keys: {e}")))?;
        let keys: ArrayRef = if rows.iter().all(Option::is_some) {
            Arc::new(keys)
        } else {
            arrow::compute::take(&keys, &UInt32Array::from(rows), None)
                .map_err(|e| Bad::Chunk(format!("the keys: {e}")))?
        };
        let (field, keys) = unwrapped(Field::new(KEY_COLUMN, DataType::Struct(fields), true), keys);
        Ok((field, keys))
    }
}

/// The struct of a key column, as the schema a key decoder decodes against.
fn key_schema(field: &Field) -> Result<SchemaRef, Bad> {
    match field.data_type() {
        DataType::Struct(fields) => Ok(Arc::new(Schema::new(fields.clone()))),
        // An Avro key of a primitive type: the wrapper record's one field.
        other => Ok(Arc::new(Schema::new(vec![Field::new(
            super::avro::KEY_VALUE_FIELD,
            other.clone(),
            true,
        )]))),
    }
}

/// A primitive Avro key's column: the wrapper record's one field, not a struct of it.
fn unwrapped(field: Field, keys: ArrayRef) -> (Field, ArrayRef) {
    let DataType::Struct(fields) = field.data_type() else {
        return (field, keys);
    };
    let wrapped = fields.len() == 1 && fields[0].name() == super::avro::KEY_VALUE_FIELD;
    let Some(keys_struct) = keys.as_any().downcast_ref::<StructArray>() else {
        return (field, keys);
    };
    if !wrapped {
        return (field, keys);
    }
    // A missing key is a null struct, taken as nulls in its fields too (see `decode`).
    let inner = keys_struct.column(0).clone();
    (
        Field::new(KEY_COLUMN, fields[0].data_type().clone(), true),
        inner,
    )
}

/// The position among all keys of the `n`th key present.
fn nth_present(rows: &[Option<u32>], n: usize) -> usize {
    rows.iter()
        .position(|r| r.is_some_and(|r| r as usize == n))
        .unwrap_or(n)
}

/// Keys as UTF-8 text; the first that is not names its record.
fn text(raw: BinaryArray) -> Result<StringArray, Bad> {
    if let Some(index) = raw
        .iter()
        .position(|k| k.is_some_and(|k| std::str::from_utf8(k).is_err()))
    {
        return Err(Bad::Record {
            index,
            reason: Refusal::Invalid(
                "the key is not UTF-8 text (spec.source.keyFormat: string)".into(),
            ),
        });
    }
    StringArray::try_from_binary(raw).map_err(|e| Bad::Chunk(format!("the keys: {e}")))
}

/// A key decoder's refusal, said of the key.
fn key_refusal(reason: Refusal) -> Refusal {
    match reason {
        Refusal::UnknownField(field) => Refusal::Invalid(format!(
            "the key has field {field}, which the table's {KEY_COLUMN} column lacks (adding \
             fields to a key is not implemented yet)"
        )),
        other => Refusal::Invalid(format!("the key: {other}")),
    }
}

fn key_bad(bad: Bad) -> Bad {
    match bad {
        Bad::Record { index, reason } => Bad::Record {
            index,
            reason: key_refusal(reason),
        },
        Bad::Chunk(reason) => Bad::Chunk(format!("the keys: {reason}")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;

    use super::super::{Pending, TextDecoder};
    use super::*;

    fn text_values() -> SchemaRef {
        Arc::new(TextDecoder::fixed_schema().expect("a fixed schema"))
    }

    /// Pending text records with `keys`, at offsets 0, 1, ...
    fn pending(context: &KeyContext, keys: &[Option<&[u8]>]) -> Pending<TextDecoder> {
        let mut p = Pending::<TextDecoder>::new(&(), Some(&text_values())).with_keys(context);
        for (offset, key) in keys.iter().enumerate() {
            p.push(Some(b"v"), *key, offset as i64, None)
                .expect("pushed");
        }
        p
    }

    fn key_column(batch: &arrow::array::RecordBatch) -> (&Field, &ArrayRef) {
        let index = batch
            .schema_ref()
            .index_of(KEY_COLUMN)
            .expect("a key column");
        (batch.schema_ref().field(index), batch.column(index))
    }

    #[test]
    fn string_keys_are_text_and_a_key_that_is_not_names_its_offset() {
        let mut p = pending(
            &KeyContext::Text,
            &[Some(b"k1"), None, Some("ü".as_bytes())],
        );
        let batch = p
            .finish(&text_values(), None, "t", 0, true)
            .expect("text keys");
        let (field, keys) = key_column(&batch);
        assert_eq!(field.data_type(), &DataType::Utf8);
        let keys = keys.as_string::<i32>();
        assert_eq!(
            (keys.value(0), keys.is_null(1), keys.value(2)),
            ("k1", true, "ü")
        );

        let mut p = pending(&KeyContext::Text, &[Some(b"ok"), Some(&[0xff, 0xfe])]);
        let e = p
            .finish(&text_values(), None, "orders", 3, true)
            .expect_err("not UTF-8");
        let text = e.to_string();
        assert!(
            text.contains("partition 3 offset 1") && text.contains("UTF-8"),
            "{text}"
        );
        assert_eq!(p.len(), 2, "the records stay");
    }

    #[test]
    fn json_keys_become_a_struct_and_a_missing_key_a_null_one() {
        let keys: [Option<&[u8]>; 3] = [
            Some(br#"{"id": 1, "region": "eu"}"#),
            None,
            Some(br#"{"id": 3, "region": "us"}"#),
        ];
        let mut p = pending(&KeyContext::Json, &keys);
        let batch = p
            .finish(&text_values(), None, "t", 0, true)
            .expect("json keys");
        let (field, keys) = key_column(&batch);
        let DataType::Struct(fields) = field.data_type() else {
            panic!("a struct key: {field:?}");
        };
        assert_eq!(fields.len(), 2);
        let keys = keys.as_struct();
        assert!(keys.is_valid(0) && keys.is_null(1) && keys.is_valid(2));
        let ids = keys
            .column_by_name("id")
            .expect("id")
            .as_primitive::<Int64Type>();
        assert_eq!((ids.value(0), ids.value(2)), (1, 3));

        let mut p = pending(&KeyContext::Json, &[Some(br#"{"id": 1}"#), Some(b"plain")]);
        let e = p
            .finish(&text_values(), None, "orders", 0, true)
            .expect_err("not an object");
        let text = e.to_string();
        assert!(
            text.contains("offset 1") && text.contains("the key"),
            "{text}"
        );
    }

    /// An Avro long as its zig-zag varint.
    fn avro_long(n: i64) -> Vec<u8> {
        let mut z = ((n << 1) ^ (n >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            let byte = (z & 0x7f) as u8;
            z >>= 7;
            if z == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    fn wire(id: u32, body: &[u8]) -> Vec<u8> {
        let mut v = vec![0];
        v.extend(id.to_be_bytes());
        v.extend(body);
        v
    }

    fn avro_string(s: &str) -> Vec<u8> {
        let mut v = avro_long(s.len() as i64);
        v.extend(s.as_bytes());
        v
    }

    #[tokio::test]
    async fn avro_keys_of_a_primitive_type_are_that_column_and_records_a_struct() {
        let context = AvroContext::for_keys(None);
        context
            .insert(1, r#""string""#)
            .expect("a string key schema");
        let record = r#"{"type": "record", "name": "K", "fields": [
            {"name": "id", "type": "long"}, {"name": "region", "type": "string"}]}"#;
        context.insert(2, record).expect("a record key schema");
        let keys = KeyContext::Avro(context);

        let (k1, k2) = (wire(1, &avro_string("a")), wire(1, &avro_string("b")));
        let mut p = pending(&keys, &[Some(&k1), None, Some(&k2)]);
        let batch = p
            .finish(&text_values(), None, "t", 0, true)
            .expect("string keys");
        let (field, column) = key_column(&batch);
        assert_eq!(field.data_type(), &DataType::Utf8);
        let column = column.as_string::<i32>();
        assert_eq!(
            (column.value(0), column.is_null(1), column.value(2)),
            ("a", true, "b")
        );

        let mut body = avro_long(7);
        body.extend(avro_string("eu"));
        let k = wire(2, &body);
        let mut p = pending(&keys, &[Some(&k)]);
        let batch = p
            .finish(&text_values(), None, "t", 0, true)
            .expect("record keys");
        let (field, column) = key_column(&batch);
        assert!(matches!(field.data_type(), DataType::Struct(f) if f.len() == 2));
        let ids = column.as_struct().column(0).as_primitive::<Int64Type>();
        assert_eq!(ids.value(0), 7);

        // The table's key has only `id`: a key with `region` too is refused, named.
        let narrow = Field::new(
            KEY_COLUMN,
            DataType::Struct(vec![Field::new("id", DataType::Int64, false)].into()),
            true,
        );
        let mut p = pending(&keys, &[Some(&k)]);
        let e = p
            .finish(&text_values(), Some(&narrow), "orders", 1, true)
            .expect_err("a key field the table lacks");
        let text = e.to_string();
        assert!(
            text.contains("offset 0")
                && text.contains("region")
                && text.contains("not implemented yet"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn an_avro_key_of_an_unknown_schema_waits_for_its_lookup() {
        let keys = KeyContext::Avro(AvroContext::for_keys(None));
        let mut p = Pending::<TextDecoder>::new(&(), Some(&text_values())).with_keys(&keys);
        let key = wire(9, &avro_string("a"));
        let refused = p
            .push(Some(b"v"), Some(&key), 5, None)
            .expect_err("id 9 is not known");
        assert_eq!(refused.reason, Refusal::NeedsLookup);
        assert!(p.is_empty(), "nothing of a refused record stays");
        let e = p
            .lookup(Some(b"v"), Some(&key), 5)
            .await
            .expect_err("no registry")
            .into_error("orders", 2);
        let text = e.to_string();
        assert!(
            text.contains("the key") && text.contains("offset 5"),
            "{text}"
        );
    }
}
