//! `string` and `bytes` values: each record's value whole, in one `value` column.

use std::sync::Arc;

use arrow::array::{ArrayRef, BinaryBuilder, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::{Bad, Decoder, Refusal};

/// Payloads back to back, as they came.
#[derive(Default)]
pub(super) struct Raw {
    data: Vec<u8>,
    /// End of each record's payload in `data`; None for a tombstone.
    ends: Vec<Option<usize>>,
}

impl Raw {
    pub(super) fn push(&mut self, value: Option<&[u8]>) {
        self.ends.push(value.map(|v| {
            self.data.extend_from_slice(v);
            self.data.len()
        }));
    }

    /// Each record's payload, None for a tombstone.
    pub(super) fn values(&self) -> impl Iterator<Item = Option<&[u8]>> {
        let mut start = 0;
        self.ends.iter().map(move |end| {
            end.map(|end| {
                let value = &self.data[start..end];
                start = end;
                value
            })
        })
    }

    pub(super) fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }
}

fn value_schema(data_type: DataType) -> Option<Schema> {
    Some(Schema::new(vec![Field::new("value", data_type, true)]))
}

/// UTF-8 text in a `value` column (`format: string`).
#[derive(Default)]
pub struct TextDecoder(Raw);

impl Decoder for TextDecoder {
    type Context = ();

    fn new(_: &()) -> Self {
        Self::default()
    }

    fn fixed_schema() -> Option<Schema> {
        value_schema(DataType::Utf8)
    }

    fn push(&mut self, value: Option<&[u8]>) -> Result<(), Refusal> {
        self.0.push(value);
        Ok(())
    }

    fn finish(&mut self, _schema: &SchemaRef) -> Result<Vec<ArrayRef>, Bad> {
        let mut b = StringBuilder::with_capacity(self.0.ends.len(), self.0.data.len());
        for (index, value) in self.0.values().enumerate() {
            match value.map(std::str::from_utf8) {
                None => b.append_null(),
                Some(Ok(text)) => b.append_value(text),
                Some(Err(e)) => {
                    return Err(Bad::Record {
                        index,
                        reason: Refusal::Invalid(format!("value is not UTF-8: {e}")),
                    });
                }
            }
        }
        self.0.clear();
        Ok(vec![Arc::new(b.finish())])
    }
}

/// Raw bytes in a `value` column (`format: bytes`).
#[derive(Default)]
pub struct BytesDecoder(Raw);

impl Decoder for BytesDecoder {
    type Context = ();

    fn new(_: &()) -> Self {
        Self::default()
    }

    fn fixed_schema() -> Option<Schema> {
        value_schema(DataType::Binary)
    }

    fn push(&mut self, value: Option<&[u8]>) -> Result<(), Refusal> {
        self.0.push(value);
        Ok(())
    }

    fn finish(&mut self, _schema: &SchemaRef) -> Result<Vec<ArrayRef>, Bad> {
        let mut b = BinaryBuilder::with_capacity(self.0.ends.len(), self.0.data.len());
        for value in self.0.values() {
            b.append_option(value);
        }
        self.0.clear();
        Ok(vec![Arc::new(b.finish())])
    }
}
