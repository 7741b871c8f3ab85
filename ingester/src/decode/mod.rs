//! Record payloads to Arrow.
//!
//! JSON records of a table whose columns are all scalars are parsed as they arrive, straight
//! into Arrow builders ([`flat`]). Otherwise (nested columns, or no schema yet because it is
//! inferred from the first records) payloads are appended to one growing NDJSON buffer (no
//! allocation per record) and decoded a chunk at a time with arrow-json. Both run in strict
//! mode, so a field the table does not have is never dropped silently, and a record that fails
//! is named by partition and offset with the reason. `string` and `bytes` payloads become a
//! single `value` column. Metadata columns (`_kafka_*`) are added per chunk.

pub mod exact;
mod flat;

use std::io::Cursor;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, Int32Array, Int64Array, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::json::ReaderBuilder;

use crate::error::DecodeError;

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

/// How record values are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    /// JSON objects (a Confluent wire-format prefix is skipped).
    Json,
    /// UTF-8 text in a `value` column.
    Text,
    /// Raw bytes in a `value` column.
    Bytes,
}

/// The metadata columns' fields.
pub fn metadata_fields() -> Vec<Field> {
    vec![
        Field::new(TOPIC_COLUMN, DataType::Utf8, false),
        Field::new(PARTITION_COLUMN, DataType::Int32, false),
        Field::new(OFFSET_COLUMN, DataType::Int64, false),
        Field::new(
            TIMESTAMP_COLUMN,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new(KEY_COLUMN, DataType::Binary, true),
    ]
}

/// The value columns of a `string` or `bytes` topic.
pub fn raw_value_schema(kind: PayloadKind) -> Schema {
    let data_type = if kind == PayloadKind::Text {
        DataType::Utf8
    } else {
        DataType::Binary
    };
    Schema::new(vec![Field::new("value", data_type, true)])
}

/// Records of one partition waiting to become a chunk: their values (decoded already, or as
/// NDJSON) and their metadata.
#[derive(Default)]
pub struct Pending {
    /// Set when the value schema is known and flat: records are decoded as they arrive.
    flat: Option<flat::FlatDecoder>,
    /// Payload bytes pushed since the last chunk.
    pushed_bytes: usize,
    /// JSON payloads, one per line (JSON), or raw payloads back to back (text, bytes).
    data: Vec<u8>,
    /// End of each record's payload in `data`.
    ends: Vec<usize>,
    /// Whether each record's value was null (a tombstone), for the chunk path.
    nulls: Vec<bool>,
    offsets: Vec<i64>,
    timestamps_us: Vec<Option<i64>>,
    keys: BinaryBuilder,
    /// The offsets of the tombstones (records without a value) decoded so far: they stay
    /// deletes on their way to the rows step ([`Pending::take_tombstones`]).
    tombstones: Vec<i64>,
}

impl Pending {
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
        self.flat.as_ref().map(flat::FlatDecoder::schema)
    }

    /// Decodes JSON records against `schema` as they arrive from now on, when its columns are
    /// all scalars (otherwise, or with None, they wait for [`decode`]). Call it when empty.
    pub fn use_schema(&mut self, kind: PayloadKind, schema: Option<&SchemaRef>) {
        debug_assert!(self.is_empty());
        if self.schema() == schema {
            return;
        }
        self.flat = match (kind, schema) {
            (PayloadKind::Json, Some(s)) => flat::FlatDecoder::new(s),
            _ => None,
        };
        if self.flat.is_some() {
            // The NDJSON buffer of the chunk path is not needed any more: give its memory back.
            self.data = Vec::new();
            self.ends = Vec::new();
        }
    }

    /// Adds one record. `value` is None for a tombstone. A record that cannot be decoded is
    /// refused whole, with the reason.
    pub fn push(
        &mut self,
        kind: PayloadKind,
        value: Option<&[u8]>,
        key: Option<&[u8]>,
        offset: i64,
        timestamp_ms: Option<i64>,
    ) -> Result<(), Refused> {
        let payload = value.map(|v| {
            if kind == PayloadKind::Json {
                strip_wire_prefix(v)
            } else {
                v
            }
        });
        if let Some(flat) = &mut self.flat {
            flat.push(payload)
                .map_err(|reason| Refused { offset, reason })?;
        } else {
            self.append_raw(kind, payload);
            self.nulls.push(value.is_none());
        }
        self.pushed_bytes += value.map_or(0, <[u8]>::len);
        if value.is_none() {
            self.tombstones.push(offset);
        }
        self.offsets.push(offset);
        self.timestamps_us
            .push(timestamp_ms.map(|ms| ms.saturating_mul(1000)));
        match key {
            Some(k) => self.keys.append_value(k),
            None => self.keys.append_null(),
        }
        Ok(())
    }

    fn append_raw(&mut self, kind: PayloadKind, value: Option<&[u8]>) {
        match (kind, value) {
            (PayloadKind::Json, Some(v)) => {
                self.data.extend_from_slice(v);
                self.data.push(b'\n');
            }
            // A tombstone is a row whose value columns are all null.
            (PayloadKind::Json, None) => self.data.extend_from_slice(b"{}\n"),
            (_, Some(v)) => self.data.extend_from_slice(v),
            (_, None) => {}
        }
        self.ends.push(self.data.len());
    }

    fn record(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.data[start..self.ends[i]]
    }

    fn clear(&mut self) {
        self.pushed_bytes = 0;
        self.data.clear();
        self.ends.clear();
        self.nulls.clear();
        self.offsets.clear();
        self.timestamps_us.clear();
        // BinaryBuilder::finish resets the builder.
        let _ = self.keys.finish();
    }
}

/// Skips the Confluent wire-format header (magic byte 0 and a 4-byte schema id) in front of JSON.
fn strip_wire_prefix(value: &[u8]) -> &[u8] {
    if value.len() > 5 && value[0] == 0 {
        &value[5..]
    } else {
        value
    }
}

/// A record that could not be decoded.
#[derive(Debug)]
pub struct Refused {
    pub offset: i64,
    pub reason: exact::Refusal,
}

impl Refused {
    pub fn into_error(self, topic: &str, partition: i32) -> DecodeError {
        refusal_error(self.reason, topic, partition, self.offset)
    }
}

/// A refused record as the error that names it.
fn refusal_error(reason: exact::Refusal, topic: &str, partition: i32, offset: i64) -> DecodeError {
    let topic = topic.to_string();
    match reason {
        exact::Refusal::UnknownField(field) => DecodeError::UnknownField {
            topic,
            partition,
            offset,
            field,
        },
        exact::Refusal::Invalid(reason) => DecodeError::Record {
            topic,
            partition,
            offset,
            reason,
        },
    }
}

/// Infers the value schema of JSON records. Fields that are null in every record become
/// nullable strings (tables have no null type).
pub fn infer_json_schema(
    pending: &Pending,
    topic: &str,
    partition: i32,
) -> Result<Schema, DecodeError> {
    // A record that is not one JSON object would make arrow-json infer from the wrong rows (or
    // fail without naming the record).
    check_records(pending, None, topic, partition)?;
    let (schema, _) = arrow::json::reader::infer_json_schema(Cursor::new(&pending.data), None)
        .map_err(|e| DecodeError::Infer(e.to_string()))?;
    Ok(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| {
                let field = f.as_ref().clone().with_nullable(true);
                if field.data_type() == &DataType::Null {
                    field.with_data_type(DataType::Utf8)
                } else {
                    field
                }
            })
            .collect::<Vec<_>>(),
    ))
}

/// Decodes the pending records of `topic`/`partition` into one RecordBatch with the value
/// columns of `value_schema` (or of the schema the records were decoded against as they
/// arrived, see [`Pending::use_schema`]) followed (when `metadata` is set) by the metadata
/// columns, and empties `pending`, whose next records then decode against `value_schema`.
pub fn decode(
    kind: PayloadKind,
    pending: &mut Pending,
    value_schema: &SchemaRef,
    topic: &str,
    partition: i32,
    metadata: bool,
) -> Result<RecordBatch, DecodeError> {
    let rows = pending.len();
    let newest = value_schema.clone();
    let value_schema = pending
        .schema()
        .cloned()
        .unwrap_or_else(|| value_schema.clone());
    // A tombstone has no values: a column that may not be null cannot hold it.
    if let (Some(&offset), Some(column)) = (
        pending.tombstones.first(),
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
    let mut columns: Vec<ArrayRef> = match kind {
        PayloadKind::Json if pending.flat.is_some() => pending
            .flat
            .as_mut()
            .map(flat::FlatDecoder::finish)
            .unwrap_or_default(),
        PayloadKind::Json => decode_json(pending, &value_schema, topic, partition)?
            .columns()
            .to_vec(),
        PayloadKind::Text => {
            let mut b = StringBuilder::with_capacity(rows, pending.data.len());
            for i in 0..rows {
                if pending.nulls[i] {
                    b.append_null();
                } else {
                    let text = std::str::from_utf8(pending.record(i)).map_err(|e| {
                        DecodeError::Record {
                            topic: topic.to_string(),
                            partition,
                            offset: pending.offsets[i],
                            reason: format!("value is not UTF-8: {e}"),
                        }
                    })?;
                    b.append_value(text);
                }
            }
            vec![Arc::new(b.finish())]
        }
        PayloadKind::Bytes => {
            let mut b = BinaryBuilder::with_capacity(rows, pending.data.len());
            for i in 0..rows {
                if pending.nulls[i] {
                    b.append_null()
                } else {
                    b.append_value(pending.record(i))
                }
            }
            vec![Arc::new(b.finish())]
        }
    };
    let mut fields: Vec<Field> = value_schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    if metadata {
        fields.extend(metadata_fields());
        columns.push(Arc::new(StringArray::from_iter_values(
            std::iter::repeat_n(topic, rows),
        )));
        columns.push(Arc::new(Int32Array::from_value(partition, rows)));
        columns.push(Arc::new(Int64Array::from(std::mem::take(
            &mut pending.offsets,
        ))));
        columns.push(Arc::new(
            TimestampMicrosecondArray::from(std::mem::take(&mut pending.timestamps_us))
                .with_timezone("UTC"),
        ));
        columns.push(Arc::new(pending.keys.finish()));
    }
    pending.clear();
    pending.use_schema(kind, Some(&newest));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| DecodeError::Infer(e.to_string()))
}

/// Checks every record of the chunk path with [`exact::check`]: exactly one JSON object each,
/// numbers that fit their columns (`fields`) exactly. Tombstones are not JSON.
fn check_records(
    pending: &Pending,
    fields: Option<&arrow::datatypes::Fields>,
    topic: &str,
    partition: i32,
) -> Result<(), DecodeError> {
    for i in 0..pending.len() {
        if pending.nulls[i] {
            continue;
        }
        exact::check(pending.record(i), fields)
            .map_err(|reason| refusal_error(reason, topic, partition, pending.offsets[i]))?;
    }
    Ok(())
}

fn decode_json(
    pending: &Pending,
    schema: &SchemaRef,
    topic: &str,
    partition: i32,
) -> Result<RecordBatch, DecodeError> {
    let rows = pending.len();
    check_records(pending, Some(schema.fields()), topic, partition)?;
    let attempt = || -> Result<Option<RecordBatch>, arrow::error::ArrowError> {
        let mut decoder = ReaderBuilder::new(schema.clone())
            .with_strict_mode(true)
            .with_batch_size(rows.max(1))
            .build_decoder()?;
        let mut rest = pending.data.as_slice();
        while !rest.is_empty() {
            let read = decoder.decode(rest)?;
            if read == 0 {
                break;
            }
            rest = &rest[read..];
        }
        decoder.flush()
    };
    match attempt() {
        Ok(Some(batch)) if batch.num_rows() == rows => Ok(batch),
        Ok(other) => {
            // More or fewer rows than records: a payload held several JSON values or none.
            let got = other.map_or(0, |b| b.num_rows());
            Err(
                first_bad_record(pending, schema, topic, partition).unwrap_or_else(|| {
                    DecodeError::Count {
                        topic: topic.to_string(),
                        partition,
                        expected: rows,
                        got,
                    }
                }),
            )
        }
        Err(e) => Err(
            first_bad_record(pending, schema, topic, partition).unwrap_or_else(|| {
                DecodeError::Record {
                    topic: topic.to_string(),
                    partition,
                    offset: pending.offsets.first().copied().unwrap_or(-1),
                    reason: e.to_string(),
                }
            }),
        ),
    }
}

/// Decodes records one at a time to find the first that fails, with its reason.
fn first_bad_record(
    pending: &Pending,
    schema: &SchemaRef,
    topic: &str,
    partition: i32,
) -> Option<DecodeError> {
    (0..pending.len()).find_map(|i| {
        let line = pending.record(i);
        let reason = match single_record(line, schema) {
            Ok(1) => return None,
            Ok(n) => format!("expected one JSON object, found {n}"),
            Err(e) => e,
        };
        Some(DecodeError::Record {
            topic: topic.to_string(),
            partition,
            offset: pending.offsets[i],
            reason,
        })
    })
}

fn single_record(line: &[u8], schema: &SchemaRef) -> Result<usize, String> {
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_strict_mode(true)
        .build_decoder()
        .map_err(|e| e.to_string())?;
    decoder.decode(line).map_err(|e| e.to_string())?;
    Ok(decoder
        .flush()
        .map_err(|e| e.to_string())?
        .map_or(0, |b| b.num_rows()))
}

/// Whether a decode failure is a field the schema lacks (which schema evolution can add).
pub fn is_unknown_field(error: &DecodeError) -> bool {
    matches!(error, DecodeError::UnknownField { .. })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Int64Type;

    fn pending(kind: PayloadKind, values: &[Option<&str>]) -> Pending {
        let mut p = Pending::default();
        for (i, v) in values.iter().enumerate() {
            p.push(
                kind,
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
        let push = |p: &mut Pending, value: &[u8], offset: i64| {
            p.push(PayloadKind::Bytes, Some(value), None, offset, None)
                .expect("bytes are taken as they come");
        };
        let mut narrow = Pending::default();
        for offset in 0..CHUNK_RECORDS as i64 - 1 {
            push(&mut narrow, b"0123456789", offset);
        }
        assert!(!narrow.is_full(), "one record short of a chunk");
        push(&mut narrow, b"0123456789", CHUNK_RECORDS as i64);
        assert!(narrow.is_full(), "a chunk of records");

        let wide_value = vec![b'x'; 10_000];
        let mut wide = Pending::default();
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
        let mut p = pending(
            PayloadKind::Json,
            &[
                Some(r#"{"id":1,"name":"a","tags":["x"],"geo":{"lat":1.5}}"#),
                None,
                Some(r#"{"id":3}"#),
            ],
        );
        let schema = Arc::new(infer_json_schema(&p, "t", 0).expect("infer"));
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
        let batch = decode(PayloadKind::Json, &mut p, &schema, "t", 2, true).expect("decode");
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
        let mut p = pending(
            PayloadKind::Json,
            &[Some(r#"{"id":1}"#), Some(r#"{"id":2}"#)],
        );
        let schema = Arc::new(infer_json_schema(&p, "t", 0).expect("infer"));
        decode(PayloadKind::Json, &mut p, &schema, "t", 0, false).expect("good chunk");
        let mut p = pending(
            PayloadKind::Json,
            &[Some(r#"{"id":1}"#), Some("{not json"), Some(r#"{"id":3}"#)],
        );
        let err =
            decode(PayloadKind::Json, &mut p, &schema, "events", 4, false).expect_err("bad chunk");
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
        let mut chunked = pending(PayloadKind::Json, &values);
        let schema = Arc::new(infer_json_schema(&chunked, "t", 0).expect("infer"));
        let expected =
            decode(PayloadKind::Json, &mut chunked, &schema, "t", 2, true).expect("chunk path");

        let mut arriving = Pending::default();
        arriving.use_schema(PayloadKind::Json, Some(&schema));
        assert_eq!(
            arriving.schema(),
            Some(&schema),
            "a flat schema decodes on arrival"
        );
        for (i, v) in values.iter().enumerate() {
            arriving
                .push(
                    PayloadKind::Json,
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
        let got = decode(PayloadKind::Json, &mut arriving, &schema, "t", 2, true).expect("decode");
        assert_eq!(got, expected);
        assert!(arriving.is_empty() && arriving.payload_bytes() == 0);

        // A bad record is refused whole and named by its offset; the rest carry on.
        let refused = arriving
            .push(PayloadKind::Json, Some(b"{\"id\":"), None, 7, None)
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
        let mut p = pending(
            PayloadKind::Json,
            &[
                Some(r#"{"id":0,"tags":[]}"#),
                Some(r#"{"id":1,"tags":[]}{"id":2,"tags":[]}"#),
                Some(""),
                Some(r#"{"id":3,"tags":["x"]}"#),
            ],
        );
        let e = decode(PayloadKind::Json, &mut p, &nested_schema(), "t", 0, true)
            .expect_err("two objects in one record");
        let (offset, reason) = bad_offset(e);
        assert_eq!(offset, 101, "{reason}");
        assert!(reason.contains("found more"), "{reason}");

        // One object split across two records.
        let mut p = pending(
            PayloadKind::Json,
            &[
                Some(r#"{"id":0,"#),
                Some(r#""tags":[]}"#),
                Some(r#"{"id":1}"#),
            ],
        );
        let e = decode(PayloadKind::Json, &mut p, &nested_schema(), "t", 0, true)
            .expect_err("split object");
        assert_eq!(bad_offset(e).0, 100);

        // The same before a schema is inferred.
        let p = pending(
            PayloadKind::Json,
            &[Some(r#"{"id":0}"#), Some(""), Some(r#"{"id":1}{"id":2}"#)],
        );
        let (offset, reason) = bad_offset(infer_json_schema(&p, "t", 0).expect_err("empty"));
        assert_eq!(offset, 101, "{reason}");
    }

    #[test]
    fn a_number_that_does_not_fit_its_column_is_a_bad_record() {
        // The chunk path (nested columns).
        let mut p = pending(
            PayloadKind::Json,
            &[Some(r#"{"id":25.0}"#), Some(r#"{"id":25.7}"#)],
        );
        let (offset, reason) = bad_offset(
            decode(PayloadKind::Json, &mut p, &nested_schema(), "t", 0, true)
                .expect_err("25.7 is not a long"),
        );
        assert_eq!(offset, 101);
        assert!(reason.contains("not a whole number"), "{reason}");

        // The flat path, which hands such records to arrow-json.
        let flat = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        let mut p = Pending::default();
        p.use_schema(PayloadKind::Json, Some(&flat));
        assert!(p.schema().is_some(), "decodes as records arrive");
        p.push(PayloadKind::Json, Some(br#"{"id":8.0}"#), None, 5, None)
            .expect("a whole number");
        let refused = p
            .push(PayloadKind::Json, Some(br#"{"id":25.7}"#), None, 6, None)
            .expect_err("25.7 is not a long");
        assert!(
            refused.reason.to_string().contains("not a whole number"),
            "{refused:?}"
        );
        let batch = decode(PayloadKind::Json, &mut p, &flat, "t", 0, false).expect("decode");
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
        let mut p = pending(PayloadKind::Json, &[Some(r#"{"id":1,"extra":true}"#)]);
        let err = decode(PayloadKind::Json, &mut p, &schema, "t", 0, false).expect_err("strict");
        assert!(is_unknown_field(&err), "{err}");
        assert!(err.to_string().contains("offset 100"), "{err}");
    }

    #[test]
    fn wire_format_prefix_is_skipped() {
        let mut framed = vec![0u8, 0, 0, 0, 7];
        framed.extend_from_slice(br#"{"id":5}"#);
        let mut p = Pending::default();
        p.push(PayloadKind::Json, Some(&framed), None, 0, None)
            .expect("push");
        let schema = Arc::new(infer_json_schema(&p, "t", 0).expect("infer"));
        let batch = decode(PayloadKind::Json, &mut p, &schema, "t", 0, false).expect("decode");
        assert_eq!(batch.column(0).as_primitive::<Int64Type>().value(0), 5);
    }

    #[test]
    fn text_and_bytes_become_a_value_column() {
        let mut p = pending(PayloadKind::Text, &[Some("héllo"), None]);
        let schema = Arc::new(raw_value_schema(PayloadKind::Text));
        let batch = decode(PayloadKind::Text, &mut p, &schema, "t", 0, true).expect("text");
        let values = batch.column(0).as_string::<i32>();
        assert_eq!((values.value(0), values.is_null(1)), ("héllo", true));

        let mut p = Pending::default();
        p.push(PayloadKind::Text, Some(&[0xff, 0xfe]), None, 9, None)
            .expect("push");
        let err = decode(PayloadKind::Text, &mut p, &schema, "t", 1, false).expect_err("not utf-8");
        assert!(err.to_string().contains("partition 1 offset 9"), "{err}");

        let mut p = pending(PayloadKind::Bytes, &[Some("\u{1}\u{2}")]);
        let schema = Arc::new(raw_value_schema(PayloadKind::Bytes));
        let batch = decode(PayloadKind::Bytes, &mut p, &schema, "t", 0, false).expect("bytes");
        assert_eq!(batch.column(0).as_binary::<i32>().value(0), &[1, 2]);
    }
}
