//! What arrow-json does not check, checked before it decodes a record: the record is exactly one
//! JSON object, and every number fits its column exactly.
//!
//! arrow-json counts rows per chunk, not per record, so a record holding two objects next to an
//! empty one (or one object split across two records) would shift rows against their offsets;
//! and it reads a number with a fraction or an exponent into an integer column through `f64`
//! and a truncating cast (`25.7` becomes `25`, `9007199254740993.0` becomes
//! `9007199254740992`), and drops a decimal's extra places (`1.239` in `decimal(10,2)` becomes
//! `1.23`). Here each record is walked once, guided by the schema; a value that would change is
//! refused with the field and the reason. A field the schema does not have is refused as such
//! ([`Refusal::UnknownField`]: schema evolution may add it); type mismatches are left to
//! arrow-json, whose strict mode refuses them with its own reasons.

use arrow::datatypes::{DataType, Fields};

use super::Refusal;

/// Checks one JSON record against `fields` (None: only that it is one object).
pub fn check(record: &[u8], fields: Option<&Fields>) -> Result<(), Refusal> {
    let mut w = Walk {
        b: record,
        i: 0,
        unknown: None,
    };
    w.check(fields).map_err(Refusal::Invalid)?;
    match w.unknown {
        Some(field) => Err(Refusal::UnknownField(field)),
        None => Ok(()),
    }
}

impl Walk<'_> {
    fn check(&mut self, fields: Option<&Fields>) -> Result<(), String> {
        let w = self;
        w.ws();
        if w.peek() != Some(b'{') {
            return Err(match w.peek() {
                None => "expected one JSON object, found an empty record".into(),
                Some(_) => "expected one JSON object, found another JSON value".into(),
            });
        }
        w.i += 1;
        w.object(fields.map(Kind::Struct).unwrap_or(Kind::Any), None)?;
        w.ws();
        if w.i < w.b.len() {
            return Err(format!(
                "expected one JSON object, found more after byte {}",
                w.i
            ));
        }
        Ok(())
    }
}

/// What a value is read into, as far as the check cares.
#[derive(Clone, Copy)]
enum Kind<'a> {
    /// Not checked further (strings, booleans, unknown fields, ...).
    Any,
    Struct(&'a Fields),
    /// A JSON object whose values all have this type (an Arrow map).
    Map(&'a DataType),
    List(&'a DataType),
    /// Integer, date, time and timestamp columns: whole numbers only, within range.
    Integer(&'a DataType),
    Decimal {
        precision: u8,
        scale: i8,
    },
    Float(&'a DataType),
}

impl<'a> Kind<'a> {
    fn of(data_type: &'a DataType) -> Self {
        use DataType::*;
        match data_type {
            Struct(fields) => Kind::Struct(fields),
            Map(entries, _) => match entries.data_type() {
                Struct(kv) if kv.len() == 2 => Kind::Map(kv[1].data_type()),
                _ => Kind::Any,
            },
            List(f) | LargeList(f) | FixedSizeList(f, _) | ListView(f) | LargeListView(f) => {
                Kind::List(f.data_type())
            }
            Int8
            | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Date32
            | Date64
            | Time32(_)
            | Time64(_)
            | Timestamp(_, _)
            | Duration(_) => Kind::Integer(data_type),
            Decimal32(p, s) | Decimal64(p, s) | Decimal128(p, s) | Decimal256(p, s) => {
                Kind::Decimal {
                    precision: *p,
                    scale: *s,
                }
            }
            Float16 | Float32 | Float64 => Kind::Float(data_type),
            _ => Kind::Any,
        }
    }
}

/// Where a value sits in its record (`geo.lat`), for the message when one is refused: a chain
/// of field names on the walk's stack, spelled out only then.
#[derive(Clone, Copy)]
struct Path<'a> {
    name: &'a str,
    parent: Option<&'a Path<'a>>,
}

fn spell(path: Option<&Path<'_>>) -> String {
    let mut names = Vec::new();
    let mut at = path;
    while let Some(p) = at {
        names.push(p.name);
        at = p.parent;
    }
    names.reverse();
    names.join(".")
}

struct Walk<'a> {
    b: &'a [u8],
    i: usize,
    /// The first field the walk met that the schema does not have.
    unknown: Option<String>,
}

impl<'a> Walk<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.invalid())
        }
    }

    fn invalid(&self) -> String {
        if self.i >= self.b.len() {
            "expected one JSON object, found an incomplete one".into()
        } else {
            format!("invalid JSON at byte {}", self.i)
        }
    }

    /// After a member of an object or an array: true when another follows (`,`), false when
    /// `close` ends it.
    fn more(&mut self, close: u8) -> Result<bool, String> {
        self.ws();
        match self.peek() {
            Some(b',') => {
                self.i += 1;
                Ok(true)
            }
            Some(c) if c == close => {
                self.i += 1;
                Ok(false)
            }
            _ => Err(self.invalid()),
        }
    }

    /// The rest of an object whose `{` was read.
    fn object(&mut self, kind: Kind<'_>, path: Option<&Path<'_>>) -> Result<(), String> {
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.expect(b'"')?;
            let (start, end, escaped) = self.string()?;
            let field = match kind {
                // Names are compared as bytes; only one with escapes is decoded first.
                Kind::Struct(fields) if escaped => unescape(&self.b[start - 1..=end])
                    .and_then(|n| fields.iter().find(|f| f.name() == &n)),
                Kind::Struct(fields) => {
                    let raw = &self.b[start..end];
                    fields.iter().find(|f| f.name().as_bytes() == raw)
                }
                _ => None,
            };
            self.expect(b':')?;
            match (field, kind) {
                (Some(f), _) => {
                    let child = Path {
                        name: f.name(),
                        parent: path,
                    };
                    self.value(Kind::of(f.data_type()), Some(&child))?;
                }
                (None, Kind::Map(value)) => self.value(Kind::of(value), path)?,
                (None, Kind::Struct(_)) => {
                    // Reported once the record is known to be sound otherwise.
                    if self.unknown.is_none() {
                        let name = String::from_utf8_lossy(&self.b[start..end]).into_owned();
                        self.unknown = Some(match path {
                            Some(_) => format!("{}.{name}", spell(path)),
                            None => name,
                        });
                    }
                    self.value(Kind::Any, path)?
                }
                (None, _) => self.value(Kind::Any, path)?,
            }
            if !self.more(b'}')? {
                return Ok(());
            }
            self.ws();
        }
    }

    fn value(&mut self, kind: Kind<'_>, path: Option<&Path<'_>>) -> Result<(), String> {
        self.ws();
        let Some(first) = self.peek() else {
            return Err(self.invalid());
        };
        match first {
            b'{' => {
                self.i += 1;
                self.object(kind, path)
            }
            b'[' => {
                self.i += 1;
                let element = match kind {
                    Kind::List(t) => Kind::of(t),
                    _ => Kind::Any,
                };
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.value(element, path)?;
                    if !self.more(b']')? {
                        return Ok(());
                    }
                }
            }
            b'"' => {
                self.i += 1;
                let (start, end, escaped) = self.string()?;
                // A decimal column also takes numbers written as strings, and cuts them alike.
                if let Kind::Decimal { .. } = kind
                    && !escaped
                {
                    fits(&self.b[start..end], kind, path)?;
                }
                Ok(())
            }
            b'-' | b'0'..=b'9' => {
                let start = self.i;
                while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.peek() {
                    self.i += 1;
                }
                fits(&self.b[start..self.i], kind, path)
            }
            b't' | b'f' | b'n' => {
                while self.peek().is_some_and(|c| c.is_ascii_lowercase()) {
                    self.i += 1;
                }
                Ok(())
            }
            _ => Err(self.invalid()),
        }
    }

    /// The body of a string whose opening quote was read: (start, end, has escapes), the
    /// cursor after the closing quote.
    fn string(&mut self) -> Result<(usize, usize, bool), String> {
        let start = self.i;
        let mut escaped = false;
        loop {
            match memchr::memchr2(b'"', b'\\', &self.b[self.i..]) {
                Some(n) if self.b[self.i + n] == b'"' => {
                    let end = self.i + n;
                    self.i = end + 1;
                    return Ok((start, end, escaped));
                }
                Some(n) => {
                    escaped = true;
                    self.i += n + 2;
                    if self.i > self.b.len() {
                        self.i = self.b.len();
                        return Err(self.invalid());
                    }
                }
                None => {
                    self.i = self.b.len();
                    return Err(self.invalid());
                }
            }
        }
    }
}

fn unescape(quoted: &[u8]) -> Option<String> {
    serde_json::from_slice(quoted).ok()
}

/// Whether the number literal `token` reads into a column of `kind` without change.
fn fits(token: &[u8], kind: Kind<'_>, path: Option<&Path<'_>>) -> Result<(), String> {
    let text = || String::from_utf8_lossy(token);
    let path = || spell(path);
    let fraction_or_exponent = token.iter().any(|c| matches!(c, b'.' | b'e' | b'E'));
    match kind {
        // Plain integers are parsed exactly (or refused) by arrow-json itself.
        Kind::Integer(data_type) if fraction_or_exponent => {
            let Some(number) = Number::parse(token) else {
                return Ok(()); // not a number: arrow-json says why
            };
            let exact = number.integer();
            let read = lexical_core::parse::<f64>(token).ok();
            match (exact, read) {
                (None, _) => Err(format!(
                    "field {}: {} is not a whole number, so it does not fit its {} column",
                    path(),
                    text(),
                    type_name(data_type)
                )),
                (Some(v), Some(f)) if in_range(v, data_type) && f.trunc() as i128 == v => Ok(()),
                (Some(v), _) if in_range(v, data_type) => Err(format!(
                    "field {}: {} would not be read exactly into its {} column (write it as a plain integer)",
                    path(),
                    text(),
                    type_name(data_type)
                )),
                _ => Err(format!(
                    "field {}: {} is out of range for its {} column",
                    path(),
                    text(),
                    type_name(data_type)
                )),
            }
        }
        Kind::Decimal { precision, scale } if fraction_or_exponent => {
            let Some(number) = Number::parse(token) else {
                return Ok(());
            };
            let places = (-number.exponent).max(0);
            let whole = (number.digits.len() as i64 + number.exponent).max(0);
            if places > i64::from(scale) {
                Err(format!(
                    "field {}: {} has more than {scale} decimal places, so it does not fit its decimal({precision},{scale}) column",
                    path(),
                    text()
                ))
            } else if whole > i64::from(precision) - i64::from(scale) {
                Err(format!(
                    "field {}: {} is out of range for its decimal({precision},{scale}) column",
                    path(),
                    text()
                ))
            } else {
                Ok(())
            }
        }
        // Floats round by nature; a finite literal that overflows to infinity is not a value.
        Kind::Float(data_type) if fraction_or_exponent || token.len() > 38 => {
            let finite = match data_type {
                DataType::Float64 => lexical_core::parse::<f64>(token).map(f64::is_finite),
                _ => lexical_core::parse::<f32>(token).map(f32::is_finite),
            };
            match finite {
                Ok(false) => Err(format!(
                    "field {}: {} is out of range for its {} column",
                    path(),
                    text(),
                    type_name(data_type)
                )),
                _ => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

fn in_range(v: i128, data_type: &DataType) -> bool {
    use DataType::*;
    let (lo, hi): (i128, i128) = match data_type {
        Int8 => (i8::MIN.into(), i8::MAX.into()),
        Int16 => (i16::MIN.into(), i16::MAX.into()),
        Int32 | Date32 | Time32(_) => (i32::MIN.into(), i32::MAX.into()),
        UInt8 => (0, u8::MAX.into()),
        UInt16 => (0, u16::MAX.into()),
        UInt32 => (0, u32::MAX.into()),
        UInt64 => (0, u64::MAX.into()),
        _ => (i64::MIN.into(), i64::MAX.into()),
    };
    (lo..=hi).contains(&v)
}

/// The name of a column type as `spec.table.columns` spells it.
fn type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Int32 => "int".into(),
        DataType::Int64 => "long".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(_, _) => "timestamp".into(),
        other => other.to_string(),
    }
}

/// A number literal as significant digits times a power of ten.
#[derive(Debug, PartialEq)]
struct Number {
    negative: bool,
    /// Without leading or trailing zeros (empty for zero).
    digits: Vec<u8>,
    exponent: i64,
}

impl Number {
    fn parse(token: &[u8]) -> Option<Self> {
        let (negative, rest) = match token.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, token),
        };
        let (mantissa, exponent) = match rest.iter().position(|c| matches!(c, b'e' | b'E')) {
            Some(at) => {
                let e = std::str::from_utf8(&rest[at + 1..]).ok()?;
                let e = e.strip_prefix('+').unwrap_or(e);
                // Exponents beyond any column's range only need to stay beyond it.
                let e: i64 = e.parse::<i64>().ok()?.clamp(-100_000, 100_000);
                (&rest[..at], e)
            }
            None => (rest, 0),
        };
        let (whole, fraction) = match mantissa.iter().position(|&c| c == b'.') {
            Some(at) => (&mantissa[..at], &mantissa[at + 1..]),
            None => (mantissa, &[][..]),
        };
        if whole.is_empty() || !whole.iter().chain(fraction).all(u8::is_ascii_digit) {
            return None;
        }
        let mut digits: Vec<u8> = whole.iter().chain(fraction).map(|c| c - b'0').collect();
        let mut exponent = exponent - fraction.len() as i64;
        let leading = digits.iter().take_while(|&&d| d == 0).count();
        digits.drain(..leading);
        while digits.last() == Some(&0) {
            digits.pop();
            exponent += 1;
        }
        if digits.is_empty() {
            exponent = 0;
        }
        Some(Self {
            negative,
            digits,
            exponent,
        })
    }

    /// The value when it is a whole number of at most 38 digits.
    fn integer(&self) -> Option<i128> {
        if self.exponent < 0 {
            return None;
        }
        if self.digits.len() as i64 + self.exponent > 38 {
            // Whole, but beyond every integer column: report it as out of range.
            return Some(i128::MAX);
        }
        let mut v: i128 = 0;
        for &d in &self.digits {
            v = v * 10 + i128::from(d);
        }
        for _ in 0..self.exponent {
            v *= 10;
        }
        Some(if self.negative { -v } else { v })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, TimeUnit};
    use std::sync::Arc;

    fn fields() -> Fields {
        Fields::from(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("small", DataType::Int32, true),
            Field::new("price", DataType::Decimal128(10, 2), true),
            Field::new("ratio", DataType::Float32, true),
            Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new(
                "geo",
                DataType::Struct(Fields::from(vec![Field::new("n", DataType::Int64, true)])),
                true,
            ),
            Field::new(
                "counts",
                DataType::List(Arc::new(Field::new("element", DataType::Int64, true))),
                true,
            ),
        ])
    }

    fn refused(record: &str) -> String {
        check(record.as_bytes(), Some(&fields()))
            .expect_err(record)
            .to_string()
    }

    #[test]
    fn a_record_is_exactly_one_object() {
        for good in [
            r#"{"id":1}"#,
            " {} \n",
            r#"{"name":"a \"quoted\" {brace}","id":2}"#,
            r#"{"other":{"deep":[1,{"x":"]"}]}}"#,
        ] {
            check(good.as_bytes(), None).expect(good);
        }
        assert!(refused("").contains("empty record"));
        assert!(refused("   ").contains("empty record"));
        assert!(refused(r#"{"id":1}{"id":2}"#).contains("found more"));
        assert!(refused(r#"{"id":1} {"id":2}"#).contains("found more"));
        assert!(refused(r#"{"id":1,"#).contains("incomplete"));
        assert!(refused(r#"{"name":"open"#).contains("incomplete"));
        assert!(refused(r#""id":2}"#).contains("another JSON value"));
        assert!(refused("[1,2]").contains("another JSON value"));
        assert!(refused("null").contains("another JSON value"));
    }

    #[test]
    fn numbers_must_fit_integer_columns_exactly() {
        for good in [
            r#"{"id":25}"#,
            r#"{"id":25.0}"#,
            r#"{"id":2.5e1}"#,
            r#"{"id":-1e3}"#,
            r#"{"id":0.0}"#,
            r#"{"small":2147483647.0}"#,
            r#"{"at":1700000000000000.0}"#,
        ] {
            check(good.as_bytes(), Some(&fields())).expect(good);
        }
        let e = refused(r#"{"id":25.7}"#);
        assert!(e.contains("field id: 25.7 is not a whole number"), "{e}");
        assert!(e.contains("long column"), "{e}");
        assert!(refused(r#"{"geo":{"n":1.5}}"#).contains("field geo.n"));
        assert!(refused(r#"{"counts":[1,2,3.25]}"#).contains("field counts"));
        assert!(refused(r#"{"small":2147483648.0}"#).contains("out of range"));
        assert!(refused(r#"{"id":1e19}"#).contains("out of range"));
        assert!(refused(r#"{"id":1e400}"#).contains("out of range"));
        // Whole, but past f64's exact range: arrow-json would read ...992.
        assert!(refused(r#"{"id":9007199254740993.0}"#).contains("plain integer"));
        assert!(refused(r#"{"at":1.5}"#).contains("timestamp column"));
    }

    #[test]
    fn decimals_keep_every_place() {
        for good in [
            r#"{"price":1.23}"#,
            r#"{"price":1.2}"#,
            r#"{"price":"1.20"}"#,
            r#"{"price":12345678.9}"#,
            r#"{"price":1.5e2}"#,
        ] {
            check(good.as_bytes(), Some(&fields())).expect(good);
        }
        assert!(refused(r#"{"price":1.239}"#).contains("more than 2 decimal places"));
        assert!(refused(r#"{"price":"1.239"}"#).contains("more than 2 decimal places"));
        assert!(refused(r#"{"price":123456789.1}"#).contains("out of range"));
        assert!(refused(r#"{"price":1e-3}"#).contains("decimal places"));
    }

    #[test]
    fn floats_refuse_only_overflow() {
        check(br#"{"ratio":0.1}"#, Some(&fields())).expect("rounds, as floats do");
        assert!(refused(r#"{"ratio":1e39}"#).contains("out of range for its float"));
    }

    #[test]
    fn escaped_field_names_are_checked_too() {
        assert!(refused(r#"{"i\u0064":25.7}"#).contains("field id"));
        // A field the schema lacks is refused as such, by its path (schema evolution reads it).
        assert_eq!(
            check(br#"{"id":1,"unknown":25.7}"#, Some(&fields())),
            Err(Refusal::UnknownField("unknown".into()))
        );
        assert_eq!(
            check(br#"{"geo":{"n":1,"m":2}}"#, Some(&fields())),
            Err(Refusal::UnknownField("geo.m".into()))
        );
        check(br#"{"id":25.7}"#, None).expect("no schema: structure only");
    }

    #[test]
    fn number_literals_split_into_digits_and_exponent() {
        let n = Number::parse(b"-0012.3400e2").expect("number");
        assert_eq!(
            n,
            Number {
                negative: true,
                digits: vec![1, 2, 3, 4],
                exponent: 0
            }
        );
        assert_eq!(n.integer(), Some(-1234));
        assert_eq!(Number::parse(b"0.000").and_then(|n| n.integer()), Some(0));
        assert_eq!(Number::parse(b"2.5").and_then(|n| n.integer()), None);
        assert!(Number::parse(b"1.2.3").is_none());
    }
}
