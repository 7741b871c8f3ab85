//! JSON values: objects whose fields become the value columns.
//!
//! Records of a schema whose columns are all scalars are parsed as they arrive, straight into
//! Arrow builders ([`super::flat`]). Otherwise (nested columns, or no schema yet because it is
//! inferred from the first records) payloads are appended to one growing NDJSON buffer (no
//! allocation per record) and decoded a chunk at a time with arrow-json. Both run in strict
//! mode, so a field the schema does not have is never dropped silently, and every record is
//! checked to be exactly one object whose numbers fit their columns ([`super::exact`]). A
//! Confluent wire-format prefix (magic byte 0 and a 4-byte schema id) is skipped.

use std::io::Cursor;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Fields, Schema, SchemaRef};
use arrow::json::ReaderBuilder;

use super::flat::FlatDecoder;
use super::{Bad, Decoder, Refusal, exact};

/// The values of one partition's JSON records.
#[derive(Default)]
pub struct JsonDecoder {
    /// Set when the schema is known and flat: records are decoded as they arrive.
    flat: Option<FlatDecoder>,
    /// The chunk path: payloads one per line; a tombstone is `{}` (a row of nulls, which the
    /// rows step keeps apart by its offset).
    data: Vec<u8>,
    /// End of each record's line in `data`.
    ends: Vec<usize>,
    /// Whether each record of the chunk path was a tombstone.
    nulls: Vec<bool>,
}

impl Decoder for JsonDecoder {
    type Context = ();

    fn new(_: &()) -> Self {
        Self::default()
    }

    fn use_schema(&mut self, schema: Option<&SchemaRef>) {
        if self.schema() == schema {
            return;
        }
        self.flat = schema.and_then(FlatDecoder::new);
        if self.flat.is_some() {
            // The NDJSON buffer of the chunk path is not needed any more: give its memory back.
            self.data = Vec::new();
            self.ends = Vec::new();
            self.nulls = Vec::new();
        }
    }

    fn schema(&self) -> Option<&SchemaRef> {
        self.flat.as_ref().map(FlatDecoder::schema)
    }

    fn push(&mut self, value: Option<&[u8]>) -> Result<(), Refusal> {
        let value = value.map(strip_wire_prefix);
        if let Some(flat) = &mut self.flat {
            return flat.push(value);
        }
        match value {
            Some(v) => {
                self.data.extend_from_slice(v);
                self.data.push(b'\n');
            }
            None => self.data.extend_from_slice(b"{}\n"),
        }
        self.ends.push(self.data.len());
        self.nulls.push(value.is_none());
        Ok(())
    }

    /// The schema arrow-json infers from the records; a field null in every record becomes a
    /// nullable string (tables have no null type), and every field is nullable.
    fn infer(&self) -> Result<Schema, Bad> {
        // A record that is not one JSON object would make arrow-json infer from the wrong rows
        // (or fail without naming the record).
        self.check(None)?;
        let (schema, _) = arrow::json::reader::infer_json_schema(Cursor::new(&self.data), None)
            .map_err(|e| Bad::Chunk(e.to_string()))?;
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

    fn finish(&mut self, schema: &SchemaRef) -> Result<Vec<ArrayRef>, Bad> {
        if let Some(flat) = &mut self.flat {
            return Ok(flat.finish());
        }
        let columns = self.decode_chunk(schema)?.columns().to_vec();
        self.data.clear();
        self.ends.clear();
        self.nulls.clear();
        Ok(columns)
    }
}

impl JsonDecoder {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn record(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.data[start..self.ends[i]]
    }

    /// Checks every record of the chunk path with [`exact::check`]: exactly one JSON object
    /// each, numbers that fit their columns (`fields`) exactly. Tombstones are not JSON.
    fn check(&self, fields: Option<&Fields>) -> Result<(), Bad> {
        for index in 0..self.len() {
            if !self.nulls[index] {
                exact::check(self.record(index), fields)
                    .map_err(|reason| Bad::Record { index, reason })?;
            }
        }
        Ok(())
    }

    /// The chunk path: every record checked, then decoded by arrow-json at once.
    fn decode_chunk(&self, schema: &SchemaRef) -> Result<RecordBatch, Bad> {
        let rows = self.len();
        self.check(Some(schema.fields()))?;
        let attempt = || -> Result<Option<RecordBatch>, arrow::error::ArrowError> {
            let mut decoder = ReaderBuilder::new(schema.clone())
                .with_strict_mode(true)
                .with_batch_size(rows.max(1))
                .build_decoder()?;
            let mut rest = self.data.as_slice();
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
            // More or fewer rows than records: a payload held several JSON values or none.
            Ok(other) => Err(self.first_bad_record(schema).unwrap_or(Bad::Count {
                expected: rows,
                got: other.map_or(0, |b| b.num_rows()),
            })),
            Err(e) => Err(self.first_bad_record(schema).unwrap_or(Bad::Record {
                index: 0,
                reason: Refusal::Invalid(e.to_string()),
            })),
        }
    }

    /// Decodes records one at a time to find the first that fails, with its reason.
    fn first_bad_record(&self, schema: &SchemaRef) -> Option<Bad> {
        (0..self.len()).find_map(|index| {
            let reason = match single_record(self.record(index), schema) {
                Ok(1) => return None,
                Ok(n) => format!("expected one JSON object, found {n}"),
                Err(e) => e,
            };
            Some(Bad::Record {
                index,
                reason: Refusal::Invalid(reason),
            })
        })
    }
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

/// Skips the Confluent wire-format header (magic byte 0 and a 4-byte schema id) in front of JSON.
fn strip_wire_prefix(value: &[u8]) -> &[u8] {
    if value.len() > 5 && value[0] == 0 {
        &value[5..]
    } else {
        value
    }
}
