//! Measurements for `make bench`: drain a topic with the ingester's own consumer settings and
//! decoder, and report records per CPU-second of this process (from /proc).
//!
//! - raw: consume every record and count its payload bytes (without reading them);
//! - copy: consume, copy each payload once and check that it is UTF-8: the least work any JSON
//!   decoder into Arrow adds to the raw drain (string values must be copied out of librdkafka's
//!   buffers and validated), so `copy / raw` bounds `decode / raw` from above;
//! - decode: consume and decode into Arrow chunks, then discard them;
//! - encode: decode everything first, then time only the Parquet (zstd) encoding.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use kafkatable_crds::IngesterConfig;
use parquet::arrow::ArrowWriter;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::decode::{self, JsonDecoder, Pending};
use crate::error::IngesterError;
use crate::source::client_config;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Raw,
    /// Copy each payload once and check that it is UTF-8.
    Copy,
    Decode,
    Encode,
}

/// One measurement.
#[derive(Debug, Serialize)]
pub struct Report {
    pub mode: String,
    pub records: u64,
    pub payload_bytes: u64,
    pub arrow_bytes: u64,
    pub cpu_seconds: f64,
    pub wall_seconds: f64,
    pub records_per_cpu_second: f64,
}

/// CPU seconds (user + system) this process has used.
pub fn process_cpu_seconds() -> f64 {
    cpu_seconds_of("/proc/self/stat")
}

/// CPU seconds (user + system) of a process's stat file, e.g. "/proc/123/stat".
pub fn cpu_seconds_of(stat_path: &str) -> f64 {
    // Clock ticks per second on Linux (USER_HZ).
    const TICKS: f64 = 100.0;
    let Ok(stat) = std::fs::read_to_string(stat_path) else {
        return 0.0;
    };
    // Fields after the parenthesised command name: utime is 14th and stime 15th overall.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / TICKS
}

/// Consumes `records` records of the configured topic from the beginning, as `mode` says.
pub fn drain(config: &IngesterConfig, mode: Mode, records: u64) -> Result<Report, IngesterError> {
    let source = &config.source;
    let mut client = client_config(source, "kafkatable-bench")?;
    client.set(
        "group.id",
        format!("kafkatable-bench-{}", std::process::id()),
    );
    let consumer: BaseConsumer = client
        .create()
        .map_err(IngesterError::kafka(&source.topic, "create the consumer"))?;
    let metadata = consumer
        .fetch_metadata(Some(&source.topic), Duration::from_secs(10))
        .map_err(IngesterError::kafka(
            &source.topic,
            "read the topic metadata",
        ))?;
    let mut assignment = TopicPartitionList::new();
    for topic in metadata.topics() {
        for p in topic.partitions() {
            assignment
                .add_partition_offset(&source.topic, p.id(), Offset::Beginning)
                .map_err(IngesterError::kafka(&source.topic, "plan the assignment"))?;
        }
    }
    consumer
        .assign(&assignment)
        .map_err(IngesterError::kafka(&source.topic, "assign"))?;

    let metadata_columns = config.table.metadata_columns;
    // Keyed like the ingester's partitions (a BTreeMap, no hashing per record).
    let mut pending: BTreeMap<i32, Pending<JsonDecoder>> = BTreeMap::new();
    let mut schema = None;
    let mut chunks: Vec<RecordBatch> = Vec::new();
    let mut copied: Vec<u8> = Vec::new();
    let (mut seen, mut payload_bytes, mut arrow_bytes) = (0u64, 0u64, 0u64);
    let cpu_start = process_cpu_seconds();
    let wall_start = Instant::now();
    // Decodes a partition's chunk (inferring the schema from the first); true when it inferred.
    let flush = |p: i32,
                 buf: &mut Pending<JsonDecoder>,
                 schema: &mut Option<SchemaRef>,
                 chunks: &mut Vec<RecordBatch>,
                 arrow_bytes: &mut u64|
     -> Result<bool, IngesterError> {
        if buf.is_empty() {
            buf.use_schema(schema.as_ref());
            return Ok(false);
        }
        let (s, inferred) = match schema {
            Some(s) => (Arc::clone(s), false),
            None => (Arc::new(buf.infer(&source.topic, p)?), true),
        };
        let batch = buf.finish(&s, None, &source.topic, p, metadata_columns)?;
        *schema = Some(s);
        *arrow_bytes += batch.get_array_memory_size() as u64;
        if mode == Mode::Encode {
            chunks.push(batch);
        }
        Ok(inferred)
    };
    while seen < records {
        let Some(message) = consumer.poll(Duration::from_secs(10)) else {
            return Err(IngesterError::Unsupported(format!(
                "the topic ran dry after {seen} of {records} records"
            )));
        };
        let m = message.map_err(IngesterError::kafka(&source.topic, "consume"))?;
        seen += 1;
        let payload = m.payload().unwrap_or_default();
        payload_bytes += payload.len() as u64;
        if mode == Mode::Raw {
            continue;
        }
        if mode == Mode::Copy {
            let from = copied.len();
            copied.extend_from_slice(payload);
            let fresh = &copied[from..];
            if !(fresh.is_ascii() || std::str::from_utf8(fresh).is_ok()) {
                return Err(IngesterError::Unsupported(format!(
                    "partition {} offset {}: not UTF-8",
                    m.partition(),
                    m.offset()
                )));
            }
            if copied.len() >= decode::CHUNK_BYTES {
                copied.clear();
            }
            continue;
        }
        let buf = pending
            .entry(m.partition())
            .or_insert_with(|| Pending::new(&(), schema.as_ref()));
        buf.push(m.payload(), m.key(), m.offset(), m.timestamp().to_millis())
            .map_err(|refused| refused.into_error(&source.topic, m.partition()))?;
        if buf.is_full()
            && flush(
                m.partition(),
                buf,
                &mut schema,
                &mut chunks,
                &mut arrow_bytes,
            )?
        {
            // With the schema known, the other partitions decode as records arrive too.
            for (p, buf) in &mut pending {
                flush(*p, buf, &mut schema, &mut chunks, &mut arrow_bytes)?;
            }
        }
    }
    for (p, buf) in &mut pending {
        flush(*p, buf, &mut schema, &mut chunks, &mut arrow_bytes)?;
    }
    let (mut cpu, mut wall) = (
        process_cpu_seconds() - cpu_start,
        wall_start.elapsed().as_secs_f64(),
    );
    if mode == Mode::Encode {
        drop(consumer);
        // The same Parquet settings as the committers.
        let props = crate::commit::writer_properties().build();
        let cpu_encode = process_cpu_seconds();
        let wall_encode = Instant::now();
        let mut out = Vec::new();
        if let Some(first) = chunks.first() {
            let mut writer = ArrowWriter::try_new(&mut out, first.schema(), Some(props))
                .map_err(|e| IngesterError::Unsupported(format!("parquet: {e}")))?;
            for chunk in &chunks {
                writer
                    .write(chunk)
                    .map_err(|e| IngesterError::Unsupported(format!("parquet: {e}")))?;
            }
            writer
                .close()
                .map_err(|e| IngesterError::Unsupported(format!("parquet: {e}")))?;
        }
        cpu = process_cpu_seconds() - cpu_encode;
        wall = wall_encode.elapsed().as_secs_f64();
    }
    Ok(Report {
        mode: format!("{mode:?}").to_lowercase(),
        records: seen,
        payload_bytes,
        arrow_bytes,
        cpu_seconds: cpu,
        wall_seconds: wall,
        records_per_cpu_second: seen as f64 / cpu.max(0.01),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_of_this_process_grows() {
        let before = process_cpu_seconds();
        let mut x = 0u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(150) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        assert!(x != 1);
        assert!(process_cpu_seconds() > before, "user time accrues");
        assert_eq!(cpu_seconds_of("/proc/does-not-exist/stat"), 0.0);
    }
}
