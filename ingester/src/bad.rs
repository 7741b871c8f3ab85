//! Bad records (`spec.errors`): what makes one, and what becomes of it.
//!
//! A bad record is one that cannot become exactly one row of the table unchanged:
//! - on arrival ([`arrival`]): a record over `errors.maxRecordBytes`, a tombstone in append mode;
//! - when its value is decoded (the decoders refuse it): a payload that does not decode to
//!   exactly one row, a value that does not fit its column exactly (never a silent null or a
//!   truncation), a field name repeated within one record, a field the table lacks without
//!   schema evolution, an unknown schema id, a wrong magic byte, a key that does not decode;
//! - in the rows step: an event time that cannot be read for partitioning.
//!
//! Each is named by topic, partition and offset (a [`DecodeError`] that carries them), also
//! when it is met while inferring a schema, and goes to the sink's one place that applies the
//! policy: skipped (counted once the commit that passes it lands), or its partition stopped at
//! it. A registry, store or catalog that does not answer never makes a bad record: those are
//! retried with back-off.

use kafkatable_crds::config::IngesterConfig;
use kafkatable_crds::spec::{ErrorPolicy, WriteMode};

use crate::error::DecodeError;
use crate::source::SourceRecord;

/// What became of a bad record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Left out of the table; its partition goes on (`errors.policy: skip`).
    Skipped,
    /// Its partition stops at it (`errors.policy: fail`): nothing at or after it is committed.
    Stopped,
    /// Produced to the dead-letter topic, exactly once with the table commit that passes it
    /// (`errors.policy: deadLetter`).
    DeadLettered,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skipped => "skipped",
            Self::Stopped => "stopped",
            Self::DeadLettered => "dead_lettered",
        }
    }

    pub fn of(policy: ErrorPolicy) -> Self {
        match policy {
            ErrorPolicy::Skip => Self::Skipped,
            ErrorPolicy::Fail => Self::Stopped,
            ErrorPolicy::DeadLetter => Self::DeadLettered,
        }
    }
}

/// A bad record met, and what became of it.
#[derive(Debug)]
pub struct BadRecord {
    pub partition: i32,
    pub offset: i64,
    /// Names the topic, partition and offset, and says why.
    pub error: DecodeError,
    pub action: Action,
    /// The record as it came, for the dead-letter topic (with [`Action::DeadLettered`]).
    pub letter: Option<DeadLetter>,
}

/// A bad record as it came, with why it is bad: what the dead-letter topic receives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp_ms: Option<i64>,
    /// A word for the kind of failure (`kafkatable.reason`).
    pub reason: &'static str,
    /// The error, naming the topic, partition and offset (`kafkatable.error`).
    pub error: String,
}

impl DeadLetter {
    /// The letter of source record `r`.
    pub fn of<R: SourceRecord>(r: &R) -> Self {
        let mut headers = Vec::new();
        r.headers(&mut |name, value| headers.push((name.to_string(), value.map(<[u8]>::to_vec))));
        Self {
            partition: r.partition(),
            offset: r.offset(),
            key: r.key().map(<[u8]>::to_vec),
            value: r.payload().map(<[u8]>::to_vec),
            headers,
            timestamp_ms: r.timestamp_ms(),
            reason: "",
            error: String::new(),
        }
    }
}

/// A word for the kind of a bad record's failure (the `kafkatable.reason` header).
pub fn reason(error: &DecodeError) -> &'static str {
    match error {
        DecodeError::UnknownField { .. } => "unknown-field",
        DecodeError::WiderField { .. } => "wider-field",
        DecodeError::Record { reason, .. } if reason.contains("maxRecordBytes") => "too-large",
        DecodeError::Record { reason, .. } if reason.starts_with("a tombstone") => "tombstone",
        DecodeError::Record { .. } | DecodeError::Count { .. } => "undecodable",
        DecodeError::Column { .. } | DecodeError::Infer(_) => "misfit",
    }
}

/// The checks a record meets before its value is decoded.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    max_bytes: u64,
    append: bool,
}

impl Arrival {
    pub fn new(config: &IngesterConfig) -> Self {
        Self {
            max_bytes: config.errors.max_record_bytes,
            append: config.table.mode == WriteMode::Append,
        }
    }

    /// Why `r` of `topic` is a bad record before it is decoded, if it is.
    pub fn check<R: SourceRecord>(&self, topic: &str, r: &R) -> Result<(), DecodeError> {
        let bad = |reason: String| DecodeError::Record {
            topic: topic.to_string(),
            partition: r.partition(),
            offset: r.offset(),
            reason,
        };
        let size = r.payload().map_or(0, <[u8]>::len) + r.key().map_or(0, <[u8]>::len);
        if size as u64 > self.max_bytes {
            return Err(bad(format!(
                "the record has {size} bytes of key and value, more than spec.errors.maxRecordBytes ({})",
                self.max_bytes
            )));
        }
        if self.append && r.payload().is_none() {
            return Err(bad(
                "a tombstone (a record without a value) in append mode: there is no row to \
                 append for it (mode upsert deletes the key's row)"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// The partition and offset a decode error names, when it names one record.
pub fn located(error: &DecodeError) -> Option<(i32, i64)> {
    let context = error.context();
    Some((context.partition?, context.offset?))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Record {
        value: Option<Vec<u8>>,
        key: Option<Vec<u8>>,
    }

    impl SourceRecord for Record {
        fn partition(&self) -> i32 {
            2
        }
        fn offset(&self) -> i64 {
            40
        }
        fn key(&self) -> Option<&[u8]> {
            self.key.as_deref()
        }
        fn payload(&self) -> Option<&[u8]> {
            self.value.as_deref()
        }
        fn timestamp_ms(&self) -> Option<i64> {
            None
        }
        fn headers(&self, _: &mut dyn FnMut(&str, Option<&[u8]>)) {}
    }

    #[test]
    fn a_record_over_the_size_limit_or_a_tombstone_in_append_mode_is_bad() {
        let arrival = Arrival {
            max_bytes: 10,
            append: true,
        };
        let record = |value: Option<&[u8]>, key: Option<&[u8]>| Record {
            value: value.map(<[u8]>::to_vec),
            key: key.map(<[u8]>::to_vec),
        };
        assert!(
            arrival
                .check("t", &record(Some(b"12345"), Some(b"12345")))
                .is_ok()
        );
        let e = arrival
            .check("t", &record(Some(b"123456"), Some(b"12345")))
            .expect_err("11 bytes");
        assert!(
            e.to_string()
                .contains("partition 2 offset 40: the record has 11 bytes"),
            "{e}"
        );
        assert!(e.to_string().contains("spec.errors.maxRecordBytes"), "{e}");
        let e = arrival
            .check("t", &record(None, Some(b"k")))
            .expect_err("a tombstone");
        assert!(e.to_string().contains("tombstone"), "{e}");
        assert_eq!(located(&e), Some((2, 40)));
        let upsert = Arrival {
            append: false,
            ..arrival
        };
        assert!(upsert.check("t", &record(None, Some(b"k"))).is_ok());
    }
}
