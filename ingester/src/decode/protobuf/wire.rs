//! The Protobuf wire format, as far as decoding into columns needs it: tags, varints, fixed
//! numbers, length-delimited runs, and the scalar each field kind makes of them.

use prost_reflect::{Kind, Value};

/// Reads `b[start..end]`, one wire value at a time.
pub(super) struct Reader<'a> {
    b: &'a [u8],
    i: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(b: &'a [u8], start: usize, end: usize) -> Self {
        Self {
            b,
            i: start,
            end: end.min(b.len()),
        }
    }

    pub(super) fn done(&self) -> bool {
        self.i >= self.end
    }

    pub(super) fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&byte) = self.b.get(self.i).filter(|_| self.i < self.end) else {
                return Err(format!("a varint cut short at byte {}", self.i));
            };
            self.i += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(format!(
            "a varint longer than 10 bytes before byte {}",
            self.i
        ))
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let bytes = self
            .b
            .get(self.i..self.i + N)
            .filter(|_| self.i + N <= self.end)
            .and_then(|s| <[u8; N]>::try_from(s).ok())
            .ok_or_else(|| format!("a {N}-byte number cut short at byte {}", self.i))?;
        self.i += N;
        Ok(bytes)
    }

    /// A number of wire type `wire_type` (0: varint, 1: 64-bit, 5: 32-bit), as its bits.
    pub(super) fn scalar(&mut self, wire_type: u8) -> Result<u64, String> {
        match wire_type {
            0 => self.varint(),
            1 => Ok(u64::from_le_bytes(self.fixed::<8>()?)),
            5 => Ok(u64::from(u32::from_le_bytes(self.fixed::<4>()?))),
            other => Err(format!("wire type {other} is not a number's")),
        }
    }

    /// Where a length-delimited value is (wire type 2), and past it.
    pub(super) fn delimited(&mut self) -> Result<(usize, usize), String> {
        let len = usize::try_from(self.varint()?).map_err(|e| e.to_string())?;
        let start = self.i;
        let end = start
            .checked_add(len)
            .filter(|e| *e <= self.end)
            .ok_or_else(|| {
                format!("a length of {len} bytes at byte {start} runs past the message's end")
            })?;
        self.i = end;
        Ok((start, end))
    }

    /// Past a value of a field this type does not declare.
    pub(super) fn skip(&mut self, wire_type: u8) -> Result<(), String> {
        match wire_type {
            0 | 1 | 5 => self.scalar(wire_type).map(drop),
            2 => self.delimited().map(drop),
            3 | 4 => Err("a group (wire types 3 and 4, proto2's deprecated groups)".into()),
            other => Err(format!("wire type {other}, which Protobuf does not have")),
        }
    }
}

/// The wire type a field of `kind` is written with (packed repeated scalars aside).
pub(super) fn wire_type(kind: &Kind) -> u8 {
    match kind {
        Kind::Double | Kind::Fixed64 | Kind::Sfixed64 => 1,
        Kind::Float | Kind::Fixed32 | Kind::Sfixed32 => 5,
        Kind::String | Kind::Bytes | Kind::Message(_) => 2,
        _ => 0,
    }
}

/// The value of a numeric, boolean or enum field whose wire value has the bits `raw` (as
/// Protobuf parsers read them: an int32 written as a 64-bit varint keeps its low 32 bits).
pub(super) fn scalar_value(kind: &Kind, raw: u64) -> Option<Value> {
    let zigzag = |n: u64| ((n >> 1) as i64) ^ -((n & 1) as i64);
    Some(match kind {
        Kind::Double => Value::F64(f64::from_bits(raw)),
        Kind::Float => Value::F32(f32::from_bits(raw as u32)),
        Kind::Int32 => Value::I32(raw as i32),
        Kind::Int64 | Kind::Sfixed64 => Value::I64(raw as i64),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(raw as u32),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(raw),
        Kind::Sint32 => Value::I32(zigzag(raw) as i32),
        Kind::Sint64 => Value::I64(zigzag(raw)),
        Kind::Sfixed32 => Value::I32(raw as u32 as i32),
        Kind::Bool => Value::Bool(raw != 0),
        Kind::Enum(_) => Value::EnumNumber(raw as i32),
        Kind::String | Kind::Bytes | Kind::Message(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_fixed_numbers_and_runs_are_read_and_cut_short_ones_refused() {
        // 300 as a varint, then a 4-byte 7, then a 2-byte run.
        let b = [0xac, 0x02, 7, 0, 0, 0, 2, b'h', b'i'];
        let mut r = Reader::new(&b, 0, b.len());
        assert_eq!(r.varint(), Ok(300));
        assert_eq!(r.scalar(5), Ok(7));
        assert_eq!(r.delimited(), Ok((7, 9)));
        assert!(r.done());
        assert!(Reader::new(&[0x80], 0, 1).varint().is_err());
        assert!(Reader::new(&[5, b'a'], 0, 2).delimited().is_err());
        // A reader stops at its end, not at the buffer's.
        assert!(Reader::new(&b, 0, 1).varint().is_err());
        assert!(
            Reader::new(&[0x0b], 0, 1).skip(3).is_err(),
            "groups are refused"
        );
        assert_eq!(
            scalar_value(&Kind::Sint32, 3),
            Some(Value::I32(-2)),
            "zig-zag"
        );
        assert_eq!(
            scalar_value(&Kind::Int32, u64::MAX),
            Some(Value::I32(-1)),
            "a negative int32 is written as ten bytes"
        );
    }
}
