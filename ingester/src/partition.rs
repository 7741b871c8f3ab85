//! Partition columns: time transforms of the event time become derived columns
//! (`<field>_year`, `<field>_month`, `<field>_day`, `<field>_hour`); identity partitions use the
//! field itself.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Date32Array, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit, TimestampMicrosecondType};
use jiff::Timestamp;
use kafkatable_crds::config::{Partition, TableConfig, Transform};
use kafkatable_crds::spec::EventTimeFormat;

use crate::decode::TIMESTAMP_COLUMN;

/// The name of the column a partition field writes to.
pub fn column_name(p: &Partition) -> String {
    match p.transform {
        Transform::Year => format!("{}_year", p.field),
        Transform::Month => format!("{}_month", p.field),
        Transform::Day => format!("{}_day", p.field),
        Transform::Hour => format!("{}_hour", p.field),
        Transform::Identity | Transform::Bucket(_) | Transform::Truncate(_) => p.field.clone(),
    }
}

/// The partition columns of the table, in order.
pub fn column_names(table: &TableConfig) -> Vec<String> {
    table.partition_by.iter().map(column_name).collect()
}

/// A row whose event time cannot be read, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    pub row: Option<usize>,
    pub reason: String,
}

impl From<String> for BadRow {
    fn from(reason: String) -> Self {
        Self { row: None, reason }
    }
}

impl From<&str> for BadRow {
    fn from(reason: &str) -> Self {
        Self {
            row: None,
            reason: reason.to_string(),
        }
    }
}

/// Adds the derived time-partition columns to `batch`. A value that is not a time names the
/// offending row, column and value.
pub fn add_columns(batch: RecordBatch, table: &TableConfig) -> Result<RecordBatch, BadRow> {
    let derived: Vec<&Partition> = table
        .partition_by
        .iter()
        .filter(|p| {
            matches!(
                p.transform,
                Transform::Year | Transform::Month | Transform::Day | Transform::Hour
            )
        })
        .collect();
    if derived.is_empty() {
        return Ok(batch);
    }
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    for p in derived {
        let micros = event_micros(&batch, &p.field, table)?;
        let (data_type, array): (DataType, ArrayRef) = match p.transform {
            Transform::Year => (
                DataType::Int32,
                Arc::new(Int32Array::from_iter(
                    micros.iter().map(|m| m.map(|m| civil(m).0)),
                )),
            ),
            Transform::Day => (
                DataType::Date32,
                Arc::new(Date32Array::from_iter(
                    micros
                        .iter()
                        .map(|m| m.map(|m| m.div_euclid(86_400_000_000) as i32)),
                )),
            ),
            Transform::Month => (
                DataType::Utf8,
                Arc::new(StringArray::from_iter(micros.iter().map(|m| {
                    m.map(|m| {
                        let (y, mo, _, _) = civil(m);
                        format!("{y:04}-{mo:02}")
                    })
                }))),
            ),
            _ => (
                DataType::Utf8,
                Arc::new(StringArray::from_iter(micros.iter().map(|m| {
                    m.map(|m| {
                        let (y, mo, d, h) = civil(m);
                        format!("{y:04}-{mo:02}-{d:02}-{h:02}")
                    })
                }))),
            ),
        };
        fields.push(Field::new(column_name(p), data_type, true));
        columns.push(array);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| BadRow::from(e.to_string()))
}

/// Microseconds since the epoch of each row's event time (the partition's source field).
fn event_micros(
    batch: &RecordBatch,
    field: &str,
    table: &TableConfig,
) -> Result<Vec<Option<i64>>, BadRow> {
    let column = batch
        .column_by_name(field)
        .ok_or_else(|| format!("partition field {field} is not a column of the records"))?;
    if field == TIMESTAMP_COLUMN {
        let ts = column
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or("_kafka_timestamp is not a timestamp")?;
        return Ok(ts.iter().collect());
    }
    let format = table
        .event_time
        .as_ref()
        .map_or(EventTimeFormat::EpochMillis, |e| e.format);
    match (column.data_type(), format) {
        (DataType::Int64, f) => {
            let scale = match f {
                EventTimeFormat::EpochSeconds => 1_000_000,
                EventTimeFormat::EpochMicros => 1,
                _ => 1_000,
            };
            Ok(column
                .as_primitive::<Int64Type>()
                .iter()
                .map(|v| v.map(|v| v.saturating_mul(scale)))
                .collect())
        }
        (DataType::Timestamp(TimeUnit::Microsecond, _), _) => Ok(column
            .as_primitive::<TimestampMicrosecondType>()
            .iter()
            .collect()),
        (DataType::Utf8, _) => column
            .as_string::<i32>()
            .iter()
            .enumerate()
            .map(|(row, v)| match v {
                None => Ok(None),
                Some(text) => text
                    .parse::<Timestamp>()
                    .map(|t| Some(t.as_microsecond()))
                    .map_err(|e| BadRow {
                        row: Some(row),
                        reason: format!(
                            "event time {field} = {text:?} is not an RFC 3339 time: {e}"
                        ),
                    }),
            })
            .collect(),
        (other, _) => Err(BadRow::from(format!(
            "event time {field} has type {other}; expected epoch numbers or RFC 3339 strings"
        ))),
    }
}

/// (year, month, day, hour) in UTC of a time in microseconds since the epoch.
fn civil(micros: i64) -> (i32, u32, u32, u32) {
    let days = micros.div_euclid(86_400_000_000);
    let hour = (micros.rem_euclid(86_400_000_000) / 3_600_000_000) as u32;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    (year, month, day, hour)
}

/// Whether [`add_columns`] reads each row's event time (a partition by year, month, day or
/// hour), and so may find a bad record after its chunk is decoded.
pub fn reads_event_time(table: &TableConfig) -> bool {
    table.partition_by.iter().any(|p| {
        matches!(
            p.transform,
            Transform::Year | Transform::Month | Transform::Day | Transform::Hour
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use kafkatable_crds::config::{EventTimeConfig, StorageConfig};
    use kafkatable_crds::spec::{SchemaEvolution, TableFormat, WriteMode};

    fn table(partitions: Vec<Partition>, format: EventTimeFormat) -> TableConfig {
        TableConfig {
            format: TableFormat::Delta,
            location: None,
            catalog: None,
            storage: StorageConfig::default(),
            mode: WriteMode::Append,
            key_fields: vec![],
            columns: vec![],
            event_time: Some(EventTimeConfig {
                field: "ts".into(),
                format,
            }),
            partition_by: partitions,
            metadata_columns: true,
            headers_column: false,
            schema_evolution: SchemaEvolution::AddColumns,
        }
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1, 0));
        // 2026-11-21T13:05:00Z
        assert_eq!(civil(1_795_266_300_000_000), (2026, 11, 21, 13));
        // 2024-02-29T23:59:59Z, a leap day
        assert_eq!(civil(1_709_251_199_000_000), (2024, 2, 29, 23));
        assert_eq!(civil(-1), (1969, 12, 31, 23));
    }

    #[test]
    fn time_partitions_become_derived_columns() {
        let parts = vec![
            Partition {
                field: "ts".into(),
                transform: Transform::Day,
            },
            Partition {
                field: "ts".into(),
                transform: Transform::Hour,
            },
            Partition {
                field: "country".into(),
                transform: Transform::Identity,
            },
        ];
        let t = table(parts, EventTimeFormat::EpochMillis);
        assert_eq!(column_names(&t), vec!["ts_day", "ts_hour", "country"]);
        let schema = Arc::new(Schema::new(vec![Field::new("ts", DataType::Int64, true)]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![
                Some(1_795_266_300_000),
                None,
            ]))],
        )
        .expect("batch");
        let out = add_columns(batch, &t).expect("partition columns");
        let day = out
            .column_by_name("ts_day")
            .expect("day")
            .as_primitive::<arrow::datatypes::Date32Type>();
        assert_eq!((day.value(0), day.is_null(1)), (20_778, true));
        let hour = out
            .column_by_name("ts_hour")
            .expect("hour")
            .as_string::<i32>();
        assert_eq!(hour.value(0), "2026-11-21-13");
    }

    #[test]
    fn rfc3339_event_times_parse_and_bad_ones_are_named() {
        let t = table(
            vec![Partition {
                field: "ts".into(),
                transform: Transform::Month,
            }],
            EventTimeFormat::Rfc3339,
        );
        let schema = Arc::new(Schema::new(vec![Field::new("ts", DataType::Utf8, true)]));
        let good = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(vec!["2026-11-21T13:05:00Z"]))],
        )
        .expect("batch");
        let out = add_columns(good, &t).expect("month");
        assert_eq!(
            out.column_by_name("ts_month")
                .expect("month")
                .as_string::<i32>()
                .value(0),
            "2026-11"
        );
        let bad =
            RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec!["yesterday"]))])
                .expect("batch");
        let err = add_columns(bad, &t).expect_err("not a time");
        assert_eq!(err.row, Some(0));
        assert!(err.reason.contains("\"yesterday\""), "{err:?}");
    }
}
