//! The fast path for the common case: JSON objects whose columns are all scalars (boolean,
//! int, long, float, double, string).
//!
//! Each record is parsed straight from the message into Arrow builders: no copy of the payload,
//! no intermediate tape, one copy of each string into its column. The parser takes only records
//! it understands completely; anything else (a value of another JSON type than its column's, an
//! unknown or repeated field, a null in a required column, a number outside the column's range,
//! invalid JSON) goes to arrow-json, one record at a time. So both paths accept and refuse the
//! same records, with arrow-json's reasons, and the fast path only has to be right about what it
//! accepts.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Float32Builder, Float64Builder,
    Int32Builder, Int64Builder, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Float32Type, Float64Type, Int32Type, Int64Type, SchemaRef};
use arrow::json::ReaderBuilder;
use arrow::json::reader::Decoder;

use super::Refusal;

/// Column builders for a flat schema.
enum Column {
    Boolean(BooleanBuilder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    /// Strings are validated as UTF-8 when parsed, and once more for the whole chunk when it
    /// becomes a string array (one pass, cheaper than a check per value).
    Utf8(BinaryBuilder),
}

impl Column {
    fn new(data_type: &DataType, rows: usize, bytes: usize) -> Option<Self> {
        Some(match data_type {
            DataType::Boolean => Self::Boolean(BooleanBuilder::with_capacity(rows)),
            DataType::Int32 => Self::Int32(Int32Builder::with_capacity(rows)),
            DataType::Int64 => Self::Int64(Int64Builder::with_capacity(rows)),
            DataType::Float32 => Self::Float32(Float32Builder::with_capacity(rows)),
            DataType::Float64 => Self::Float64(Float64Builder::with_capacity(rows)),
            DataType::Utf8 => Self::Utf8(BinaryBuilder::with_capacity(rows, bytes)),
            _ => return None,
        })
    }

    fn append_null(&mut self) {
        match self {
            Self::Boolean(b) => b.append_null(),
            Self::Int32(b) => b.append_null(),
            Self::Int64(b) => b.append_null(),
            Self::Float32(b) => b.append_null(),
            Self::Float64(b) => b.append_null(),
            Self::Utf8(b) => b.append_null(),
        }
    }

    /// Appends row 0 of `array`, which has this column's type.
    fn append_from(&mut self, array: &dyn Array) {
        if array.is_null(0) {
            return self.append_null();
        }
        match self {
            Self::Boolean(b) => b.append_value(array.as_boolean().value(0)),
            Self::Int32(b) => b.append_value(array.as_primitive::<Int32Type>().value(0)),
            Self::Int64(b) => b.append_value(array.as_primitive::<Int64Type>().value(0)),
            Self::Float32(b) => b.append_value(array.as_primitive::<Float32Type>().value(0)),
            Self::Float64(b) => b.append_value(array.as_primitive::<Float64Type>().value(0)),
            Self::Utf8(b) => b.append_value(array.as_string::<i32>().value(0)),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Boolean(b) => Arc::new(b.finish()),
            Self::Int32(b) => Arc::new(b.finish()),
            Self::Int64(b) => Arc::new(b.finish()),
            Self::Float32(b) => Arc::new(b.finish()),
            Self::Float64(b) => Arc::new(b.finish()),
            Self::Utf8(b) => Arc::new(
                StringArray::try_from_binary(b.finish())
                    .expect("each value was checked to be UTF-8"),
            ),
        }
    }

    /// Bytes of string data appended so far (0 for other types).
    fn string_bytes(&self) -> usize {
        match self {
            Self::Utf8(b) => b.values_slice().len(),
            _ => 0,
        }
    }
}

/// One field's value in the record being parsed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    Missing,
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A string: a range of the payload, or of the scratch buffer when it had escapes.
    Str {
        start: usize,
        end: usize,
        unescaped: bool,
    },
}

/// Decodes JSON records of a flat schema into Arrow.
pub struct FlatDecoder {
    schema: SchemaRef,
    names: Vec<Box<[u8]>>,
    nullable: Vec<bool>,
    columns: Vec<Column>,
    rows: usize,
    values: Vec<Value>,
    /// For each field, the field that followed it in the last record (the last slot: the first
    /// field). Starts as the schema's order.
    next: Vec<usize>,
    /// Unescaped strings of the record being parsed.
    scratch: Vec<u8>,
    /// arrow-json for the records the fast parser leaves alone (built when first needed).
    fallback: Option<Decoder>,
}

impl FlatDecoder {
    /// A decoder for `schema`, or None when a column is not a scalar this path handles.
    pub fn new(schema: &SchemaRef) -> Option<Self> {
        let columns = schema
            .fields()
            .iter()
            .map(|f| Column::new(f.data_type(), 0, 0))
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            schema: schema.clone(),
            names: schema
                .fields()
                .iter()
                .map(|f| f.name().as_bytes().into())
                .collect(),
            nullable: schema.fields().iter().map(|f| f.is_nullable()).collect(),
            values: vec![Value::Missing; columns.len()],
            next: (1..=columns.len()).chain([0]).collect(),
            columns,
            rows: 0,
            scratch: Vec::new(),
            fallback: None,
        })
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Appends one record; a tombstone (None) is a row of nulls. On error nothing is appended
    /// and the reason is arrow-json's.
    pub fn push(&mut self, payload: Option<&[u8]>) -> Result<(), Refusal> {
        let parsed = match payload {
            Some(p) => self.parse(p),
            None => {
                self.values.fill(Value::Null);
                true
            }
        };
        if parsed && self.required_present() {
            self.append_parsed(payload.unwrap_or_default());
        } else {
            self.push_with_arrow_json(payload.unwrap_or(b"{}"))?;
        }
        self.rows += 1;
        Ok(())
    }

    /// The rows so far as Arrow columns; the builders start again, sized for a chunk like this.
    pub fn finish(&mut self) -> Vec<ArrayRef> {
        let rows = self.rows;
        let arrays = self
            .columns
            .iter_mut()
            .map(|c| {
                // A little room over the last chunk's strings: growing past it would double.
                let bytes = c.string_bytes();
                let array = c.finish();
                if let Some(next) = Column::new(array.data_type(), rows, bytes + bytes / 16) {
                    *c = next;
                }
                array
            })
            .collect();
        self.rows = 0;
        arrays
    }

    fn required_present(&self) -> bool {
        self.values
            .iter()
            .zip(&self.nullable)
            .all(|(v, nullable)| *nullable || !matches!(v, Value::Missing | Value::Null))
    }

    fn append_parsed(&mut self, payload: &[u8]) {
        for (column, value) in self.columns.iter_mut().zip(&self.values) {
            match (column, *value) {
                (c, Value::Missing | Value::Null) => c.append_null(),
                (Column::Boolean(b), Value::Bool(v)) => b.append_value(v),
                // The parser checked the range for int columns.
                (Column::Int32(b), Value::Int(v)) => b.append_value(v as i32),
                (Column::Int64(b), Value::Int(v)) => b.append_value(v),
                (Column::Float32(b), Value::Float(v)) => b.append_value(v as f32),
                (Column::Float64(b), Value::Float(v)) => b.append_value(v),
                (
                    Column::Utf8(b),
                    Value::Str {
                        start,
                        end,
                        unescaped,
                    },
                ) => {
                    let bytes = if unescaped {
                        &self.scratch[start..end]
                    } else {
                        &payload[start..end]
                    };
                    b.append_value(bytes);
                }
                // The parser only produces values of the column's type.
                (c, _) => c.append_null(),
            }
        }
    }

    fn push_with_arrow_json(&mut self, payload: &[u8]) -> Result<(), Refusal> {
        let batch = match self.decode_one(payload) {
            Ok(batch) => batch,
            Err(reason) => {
                // A decoder that failed midway is not reused.
                self.fallback = None;
                return Err(reason);
            }
        };
        for (column, array) in self.columns.iter_mut().zip(batch.columns()) {
            column.append_from(array.as_ref());
        }
        Ok(())
    }

    fn decode_one(&mut self, payload: &[u8]) -> Result<RecordBatch, Refusal> {
        // What arrow-json would change or miscount is refused first (see `super::exact`).
        super::exact::check(payload, Some(self.schema.fields()))?;
        let decoder = match &mut self.fallback {
            Some(d) => d,
            None => self.fallback.insert(
                ReaderBuilder::new(self.schema.clone())
                    .with_strict_mode(true)
                    .with_batch_size(2)
                    .build_decoder()
                    .map_err(|e| Refusal::Invalid(e.to_string()))?,
            ),
        };
        let read = decoder
            .decode(payload)
            .map_err(|e| Refusal::Invalid(e.to_string()))?;
        let batch = decoder
            .flush()
            .map_err(|e| Refusal::Invalid(e.to_string()))?;
        let rows = batch.as_ref().map_or(0, RecordBatch::num_rows);
        match batch {
            Some(batch) if rows == 1 && payload[read..].trim_ascii().is_empty() => Ok(batch),
            _ => Err(Refusal::Invalid(format!(
                "expected one JSON object, found {}",
                if read < payload.len() {
                    "more".to_string()
                } else {
                    rows.to_string()
                }
            ))),
        }
    }

    /// Parses `payload` into `values`; false when the record is not one the fast path takes.
    fn parse(&mut self, payload: &[u8]) -> bool {
        self.values.fill(Value::Missing);
        self.scratch.clear();
        let mut p = Parser { b: payload, i: 0 };
        p.ws();
        if !p.eat(b'{') {
            return false;
        }
        p.ws();
        if p.eat(b'}') {
            p.ws();
            return p.done();
        }
        // `previous` is the field before the cursor (`names.len()` at the start of the record).
        let mut previous = self.names.len();
        loop {
            if !p.eat(b'"') {
                return false;
            }
            let hint = self.next[previous];
            let index = match self.expected_field(&p, hint) {
                Some(len) => {
                    p.i += len + 1;
                    hint
                }
                None => {
                    let Some((start, end, escaped)) = p.string() else {
                        return false;
                    };
                    if escaped {
                        // Field names with escapes are rare: arrow-json decodes those records.
                        return false;
                    }
                    let Some(index) = self.field(&payload[start..end]) else {
                        return false;
                    };
                    index
                }
            };
            self.next[previous] = index;
            previous = index;
            p.ws();
            if !p.eat(b':') {
                return false;
            }
            p.ws();
            if self.values[index] != Value::Missing {
                return false; // repeated field
            }
            let Some(value) = self.value(&mut p, index) else {
                return false;
            };
            self.values[index] = value;
            p.ws();
            if p.eat(b',') {
                p.ws();
                continue;
            }
            if p.eat(b'}') {
                p.ws();
                return p.done();
            }
            return false;
        }
    }

    /// The length of field `hint`'s name when the cursor is on it and its closing quote: records
    /// of a topic usually list their fields in the same order, so the field that followed the
    /// previous one last time is tried first, and this skips scanning and looking up the name.
    fn expected_field(&self, p: &Parser, hint: usize) -> Option<usize> {
        let name = self.names.get(hint)?;
        let end = p.i + name.len();
        (p.b.get(end) == Some(&b'"') && same(&p.b[p.i..end], name)).then_some(name.len())
    }

    fn field(&self, name: &[u8]) -> Option<usize> {
        self.names.iter().position(|n| same(n, name))
    }

    fn value(&mut self, p: &mut Parser, index: usize) -> Option<Value> {
        let first = *p.b.get(p.i)?;
        if first == b'n' {
            return p.literal(b"null").then_some(Value::Null);
        }
        match &self.columns[index] {
            Column::Boolean(_) => match first {
                b't' => p.literal(b"true").then_some(Value::Bool(true)),
                b'f' => p.literal(b"false").then_some(Value::Bool(false)),
                _ => None,
            },
            Column::Int32(_) | Column::Int64(_) => {
                let v = p.integer()?;
                if matches!(self.columns[index], Column::Int32(_)) {
                    i32::try_from(v).ok()?;
                }
                Some(Value::Int(v))
            }
            // Parsed at the column's width, as arrow-json does (no double rounding); an f32
            // widens to f64 and back exactly.
            // A literal beyond the type's range (read as infinity) goes to arrow-json, which
            // refuses it after `super::exact`'s check.
            Column::Float32(_) => {
                let v = lexical_core::parse::<f32>(p.number()?).ok()?;
                v.is_finite().then_some(Value::Float(f64::from(v)))
            }
            Column::Float64(_) => {
                let v = lexical_core::parse::<f64>(p.number()?).ok()?;
                v.is_finite().then_some(Value::Float(v))
            }
            Column::Utf8(_) => {
                if !p.eat(b'"') {
                    return None;
                }
                let (start, end, escaped) = p.string()?;
                if !escaped {
                    utf8(&p.b[start..end])?;
                    return Some(Value::Str {
                        start,
                        end,
                        unescaped: false,
                    });
                }
                let from = self.scratch.len();
                unescape(&p.b[start..end], &mut self.scratch)?;
                utf8(&self.scratch[from..])?;
                Some(Value::Str {
                    start: from,
                    end: self.scratch.len(),
                    unescaped: true,
                })
            }
        }
    }
}

/// A cursor over one JSON text.
struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn done(&self) -> bool {
        self.i == self.b.len()
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            true
        } else {
            false
        }
    }

    /// The body of a string whose opening quote was eaten: (start, end, has escapes), with the
    /// cursor after the closing quote.
    fn string(&mut self) -> Option<(usize, usize, bool)> {
        let start = self.i;
        let mut escaped = false;
        loop {
            let at = self.i + quote_or_backslash(&self.b[self.i..])?;
            if self.b[at] == b'"' {
                self.i = at + 1;
                return Some((start, at, escaped));
            }
            // Skip the escaped character, which may be a quote or a backslash.
            escaped = true;
            self.i = at + 2;
            if self.i > self.b.len() {
                return None;
            }
        }
    }

    /// A JSON number with its exact grammar; returns its text.
    fn number(&mut self) -> Option<&[u8]> {
        let start = self.i;
        self.eat(b'-');
        match self.b.get(self.i)? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.eat(b'.') {
            let before = self.i;
            self.digits();
            if self.i == before {
                return None;
            }
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            let before = self.i;
            self.digits();
            if self.i == before {
                return None;
            }
        }
        Some(&self.b[start..self.i])
    }

    fn digits(&mut self) {
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
    }

    /// An integer without fraction or exponent that fits an i64.
    fn integer(&mut self) -> Option<i64> {
        let text = self.number()?;
        let (negative, digits) = match text.split_first()? {
            (b'-', rest) => (true, rest),
            _ => (false, text),
        };
        if !digits.iter().all(u8::is_ascii_digit) {
            return None; // a fraction or an exponent
        }
        if digits.len() <= 18 {
            // Below 10^18: no overflow is possible.
            let v = digits
                .iter()
                .fold(0i64, |v, &d| v * 10 + i64::from(d - b'0'));
            return Some(if negative { -v } else { v });
        }
        let mut v: i64 = 0;
        for &d in digits {
            let d = i64::from(d - b'0');
            v = v
                .checked_mul(10)?
                .checked_add(if negative { -d } else { d })?;
        }
        Some(v)
    }
}

/// The position of the first `"` or `\` in `b`. Most strings are short, so the first 32
/// bytes are looked at eight at a time in a word, before paying for a vectorised search.
fn quote_or_backslash(b: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH_BITS: u64 = u64::from_ne_bytes([0x80; 8]);
    // The high bit of each byte that is zero in `w`; a byte above a zero byte may be flagged
    // too, so only the lowest flag is exact, and it is the only one used.
    let zero_bytes = |w: u64| w.wrapping_sub(ONES) & !w & HIGH_BITS;
    let mut at = 0;
    for word in b.chunks_exact(8).take(4) {
        let w = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        let hits =
            zero_bytes(w ^ (ONES * u64::from(b'"'))) | zero_bytes(w ^ (ONES * u64::from(b'\\')));
        if hits != 0 {
            return Some(at + hits.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    memchr::memchr2(b'"', b'\\', &b[at..]).map(|k| at + k)
}

/// Byte equality without a library call: field names are short.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// Checks that `b` is UTF-8, ASCII (the common case) first since that check is cheaper.
fn utf8(b: &[u8]) -> Option<()> {
    if b.is_ascii() || std::str::from_utf8(b).is_ok() {
        Some(())
    } else {
        None
    }
}

/// Appends the unescaped form of a string body to `out`; None when an escape is invalid.
fn unescape(body: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let mut rest = body;
    while let Some(k) = memchr::memchr(b'\\', rest) {
        out.extend_from_slice(&rest[..k]);
        let c = *rest.get(k + 1)?;
        rest = &rest[k + 2..];
        let byte = match c {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let (unit, after) = hex4(rest)?;
                rest = after;
                let code = match unit {
                    0xD800..=0xDBFF => {
                        // A high surrogate must be followed by an escaped low one.
                        let after = rest.strip_prefix(b"\\u")?;
                        let (low, after) = hex4(after)?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return None;
                        }
                        rest = after;
                        0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return None,
                    _ => unit,
                };
                let ch = char::from_u32(code)?;
                out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                continue;
            }
            _ => return None,
        };
        out.push(byte);
    }
    out.extend_from_slice(rest);
    Some(())
}

fn hex4(b: &[u8]) -> Option<(u32, &[u8])> {
    let digits = b.get(..4)?;
    let text = std::str::from_utf8(digits).ok()?;
    Some((u32::from_str_radix(text, 16).ok()?, &b[4..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("small", DataType::Int32, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("amount", DataType::Float64, true),
            Field::new("ratio", DataType::Float32, true),
            Field::new("ok", DataType::Boolean, true),
        ]))
    }

    /// Decodes `records` with the fast path and with arrow-json (all at once) and checks both
    /// agree, returning the batch.
    fn both(records: &[&str]) -> RecordBatch {
        let schema = schema();
        let mut flat = FlatDecoder::new(&schema).expect("flat schema");
        for r in records {
            flat.push(Some(r.as_bytes())).expect(r);
        }
        let fast = RecordBatch::try_new(schema.clone(), flat.finish()).expect("batch");
        let mut decoder = ReaderBuilder::new(schema)
            .with_strict_mode(true)
            .build_decoder()
            .expect("decoder");
        decoder
            .decode(records.join("\n").as_bytes())
            .expect("arrow-json");
        let reference = decoder.flush().expect("flush").expect("rows");
        assert_eq!(fast, reference, "fast path and arrow-json disagree");
        fast
    }

    #[test]
    fn values_match_arrow_json() {
        let batch = both(&[
            r#"{"id":1,"small":-2,"name":"a","amount":1.5,"ratio":0.25,"ok":true}"#,
            r#" { "ok" : false , "id" : -9223372036854775808 , "name" : null } "#,
            r#"{"id":3,"amount":-0,"ratio":1e3,"name":"tab\there \"q\" \\ \/ \u00e9 \ud83d\ude00"}"#,
            r#"{"id":4,"amount":12345678901234567890,"name":"ünï","small":2147483647}"#,
            "{\"id\":5,\"amount\":1E-2,\"name\":\"\"}\n",
        ]);
        assert_eq!(batch.num_rows(), 5);
        let names = batch.column(2).as_string::<i32>();
        assert_eq!(names.value(2), "tab\there \"q\" \\ / é 😀");
    }

    #[test]
    fn fields_land_in_their_columns_whatever_order_records_list_them_in() {
        // The parser guesses each field from the order of the record before: a wrong guess
        // must only cost a lookup.
        let batch = both(&[
            r#"{"ok":true,"name":"b","id":2,"amount":2.5}"#,
            r#"{"ok":false,"name":"c","id":3,"amount":3.5}"#,
            r#"{"id":4,"ok":true,"amount":4.5,"name":"d","small":4}"#,
            r#"{"small":5,"id":5}"#,
            r#"{"ok":true,"name":"f","id":6,"amount":6.5}"#,
            r#"{"id":7,"ok":true,"id":8}"#,
        ]);
        let ids = batch.column(0).as_primitive::<Int64Type>();
        assert_eq!(ids.values(), &[2, 3, 4, 5, 6, 8]);
        assert_eq!(batch.column(2).as_string::<i32>().value(4), "f");
    }

    #[test]
    fn quote_or_backslash_finds_the_first_of_either() {
        // Fillers next to the searched bytes in value, or equal to them but for the high bit.
        for filler in [b'a', 0, 1, b'!', b'#', b'[', b']', 0x7f, 0xa2, 0xdc, 0xff] {
            for len in 0..80 {
                let mut text = vec![filler; len];
                assert_eq!(quote_or_backslash(&text), None, "{filler} x {len}");
                for first in 0..len {
                    for (c, other) in [(b'"', b'\\'), (b'\\', b'"')] {
                        text.fill(filler);
                        text[first] = c;
                        // A later match in the same word must not hide the first.
                        let later = first + 1..len.min(first + 9);
                        text[later].fill(other);
                        assert_eq!(
                            quote_or_backslash(&text),
                            Some(first),
                            "{filler} {len} {first}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn records_the_fast_path_leaves_alone_decode_like_arrow_json() {
        // Strings in number columns, floats in int columns, escaped names: arrow-json's rules.
        both(&[
            r#"{"id":"7","amount":"2.5","ok":true,"name":"via arrow-json"}"#,
            r#"{"id":8.0,"small":1}"#,
            r#"{"i\u0064":9}"#,
        ]);
    }

    #[test]
    fn refused_records_append_nothing_and_carry_arrow_jsons_reason() {
        let schema = schema();
        let mut flat = FlatDecoder::new(&schema).expect("flat schema");
        flat.push(Some(br#"{"id":1}"#)).expect("good");
        for bad in [
            &br#"{"id":2,"extra":true}"#[..],
            br#"{"id":2"#,
            br#"{"small":1}"#,
            br#"{"id":2}{"id":3}"#,
            br#"{"id":2,"name":"\x"}"#,
            b"{\"id\":2,\"name\":\"\xff\"}",
            br#"{"id":9223372036854775808}"#,
            br#"{"id":2,"ok":"yes"}"#,
        ] {
            let reason = flat
                .push(Some(bad))
                .expect_err(&String::from_utf8_lossy(bad));
            assert!(!reason.to_string().is_empty());
        }
        let reason = flat
            .push(Some(br#"{"id":2,"extra":true}"#))
            .expect_err("an unknown field is refused");
        assert_eq!(reason, Refusal::UnknownField("extra".into()));
        flat.push(Some(br#"{"id":3}"#)).expect("good after bad");
        let batch = RecordBatch::try_new(schema, flat.finish()).expect("batch");
        let ids = batch.column(0).as_primitive::<Int64Type>();
        assert_eq!(ids.values().to_vec(), vec![1, 3]);
    }

    #[test]
    fn tombstones_are_null_rows_and_other_schemas_are_not_flat() {
        let nullable = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        let mut flat = FlatDecoder::new(&nullable).expect("flat");
        flat.push(None).expect("tombstone");
        assert!(flat.finish()[0].is_null(0));
        let mut required = FlatDecoder::new(&schema()).expect("flat");
        assert!(required.push(None).is_err(), "id is required");
        let nested = Arc::new(Schema::new(vec![Field::new(
            "tags",
            DataType::List(Arc::new(Field::new("element", DataType::Utf8, true))),
            true,
        )]));
        assert!(FlatDecoder::new(&nested).is_none());
    }
}
