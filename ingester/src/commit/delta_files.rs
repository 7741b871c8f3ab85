//! Parquet data files of a Delta table, written by us rather than by deltalake's
//! `RecordBatchWriter` (which copies each file's bytes once more at upload, and the file so far
//! on every write once a row group is finished).
//!
//! Rows are split by the table's partition values into one open file per table partition
//! (under the hive-style directory `col=value/...`); a file is uploaded as soon as it reaches
//! the target size, its bytes (kept in blocks of [`BLOCK_BYTES`], see [`FileBuffer`]) handed to
//! the object store without a copy. Each file becomes an `add` action with Delta statistics
//! computed from the Arrow data: the row count, null counts, and minimum and maximum of the
//! first [`INDEXED_COLUMNS`] columns where they are exact (integers, floats without NaN, dates,
//! strings: the minimum cut to [`STRING_PREFIX`] bytes, the maximum only when no longer than
//! that). Strings are compared by that prefix only (one byte more for the maximum), so long
//! values cost no more than short ones.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
use arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    Schema, SchemaRef,
};
use bytes::Bytes;
use delta_kernel::expressions::Scalar;
use deltalake::kernel::Add;
use deltalake::kernel::scalars::ScalarExt;
use deltalake::{NULL_PARTITION_VALUE_DATA_PATH, ObjectStore, Path};
use object_store::{ObjectStoreExt, PutMode, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use serde_json::{Map, Value, json};

/// Statistics cover this many leading columns (Delta's default `dataSkippingNumIndexedCols`).
pub const INDEXED_COLUMNS: usize = 32;
/// String minimums are cut to this many bytes (at a character boundary); longer maximums are
/// left out.
pub const STRING_PREFIX: usize = 32;

/// The size of the blocks a data file's bytes are kept in.
const BLOCK_BYTES: usize = 1 << 20;

/// The files of one commit: open ones per table partition, and the uploaded ones as `add`
/// actions.
pub struct DataFiles {
    /// The table's columns in the table's order, partition columns included.
    table_schema: SchemaRef,
    /// What goes into a file: the table's columns without the partition columns.
    file_schema: SchemaRef,
    partition_columns: Vec<String>,
    properties: WriterProperties,
    target_file_size: usize,
    store: Arc<dyn ObjectStore>,
    open: HashMap<String, OpenFile>,
    added: Vec<Add>,
    /// Names each data file (a UUID v7; tests choose their own).
    name: fn() -> String,
}

struct OpenFile {
    /// `col=value/...`, values escaped as Delta writes them.
    prefix: String,
    partition_values: HashMap<String, Option<String>>,
    writer: ArrowWriter<FileBuffer>,
    rows: i64,
    stats: Vec<ColumnStats>,
}

impl DataFiles {
    pub fn new(
        table_schema: SchemaRef,
        partition_columns: Vec<String>,
        properties: WriterProperties,
        target_file_size: usize,
        store: Arc<dyn ObjectStore>,
    ) -> Self {
        let file_schema = Arc::new(Schema::new(
            table_schema
                .fields()
                .iter()
                .filter(|f| !partition_columns.contains(f.name()))
                .cloned()
                .collect::<Vec<_>>(),
        ));
        Self {
            table_schema,
            file_schema,
            partition_columns,
            properties,
            target_file_size,
            store,
            open: HashMap::new(),
            added: Vec::new(),
            name: super::unique_name,
        }
    }

    /// The table schema the batches must have (see [`super::align`]).
    pub fn table_schema(&self) -> &SchemaRef {
        &self.table_schema
    }

    /// Bytes held in memory: the open files so far and their row groups in progress,
    /// including values not yet encoded.
    pub fn buffered_bytes(&self) -> usize {
        self.open
            .values()
            .map(|f| f.writer.bytes_written() + f.writer.memory_size())
            .sum()
    }

    /// Appends `batch` (in the table's schema) to the open file of each of its table
    /// partitions; a file that reaches the target size is uploaded.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        for (values, rows) in self.split(batch)? {
            let prefix = hive_prefix(&values);
            if !self.open.contains_key(&prefix) {
                let file = self.open_file(prefix.clone(), values)?;
                self.open.insert(prefix.clone(), file);
            }
            let Some(file) = self.open.get_mut(&prefix) else {
                continue;
            };
            file.writer.write(&rows).map_err(|e| e.to_string())?;
            file.rows += rows.num_rows() as i64;
            for (stats, column) in file.stats.iter_mut().zip(rows.columns()) {
                stats.update(column.as_ref());
            }
            let size = file.writer.bytes_written() + file.writer.in_progress_size();
            if size >= self.target_file_size
                && let Some(file) = self.open.remove(&prefix)
            {
                let add = Self::upload(self.store.clone(), self.name, file).await?;
                self.added.push(add);
            }
        }
        Ok(())
    }

    /// Uploads the open files; returns the `add` actions of all files written.
    pub async fn finish(mut self) -> Result<Vec<Add>, String> {
        for (_, file) in std::mem::take(&mut self.open) {
            let add = Self::upload(self.store.clone(), self.name, file).await?;
            self.added.push(add);
        }
        Ok(self.added)
    }

    /// The `add` actions of the files uploaded so far; the open files are dropped.
    pub fn into_uploaded(self) -> Vec<Add> {
        self.added
    }

    fn open_file(
        &self,
        prefix: String,
        values: Vec<(String, Option<String>)>,
    ) -> Result<OpenFile, String> {
        let writer = ArrowWriter::try_new(
            FileBuffer::default(),
            self.file_schema.clone(),
            Some(self.properties.clone()),
        )
        .map_err(|e| e.to_string())?;
        let stats = self
            .file_schema
            .fields()
            .iter()
            .take(INDEXED_COLUMNS)
            .map(|f| ColumnStats::new(f.name().clone(), f.data_type()))
            .collect();
        Ok(OpenFile {
            prefix,
            partition_values: values.into_iter().collect(),
            writer,
            rows: 0,
            stats,
        })
    }

    /// Uploads `file` to `store`, named by `name` (not a method: a future holding `&self`
    /// would not be `Send`, since the open files' writers are not `Sync`).
    async fn upload(
        store: Arc<dyn ObjectStore>,
        name: fn() -> String,
        file: OpenFile,
    ) -> Result<Add, String> {
        let OpenFile {
            prefix,
            partition_values,
            writer,
            rows,
            stats,
        } = file;
        let payload = writer
            .into_inner()
            .map_err(|e| e.to_string())?
            .into_payload();
        let size = payload.content_length() as i64;
        let name = format!("part-{}.zstd.parquet", name());
        let path = if prefix.is_empty() {
            Path::from(name)
        } else {
            Path::parse(format!("{prefix}/{name}")).map_err(|e| e.to_string())?
        };
        // Create-only: a file of the same name (which no writer should ever make) is never
        // overwritten, since a committed table may reference it.
        store
            .put_opts(&path, payload, PutMode::Create.into())
            .await
            .map_err(|e| match e {
                object_store::Error::AlreadyExists { .. } => {
                    format!("upload {path}: a file of that name exists already; not overwritten")
                }
                e => format!("upload {path}: {e}"),
            })?;
        let modification_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        Ok(Add {
            path: path.to_string(),
            size,
            partition_values,
            modification_time,
            data_change: true,
            stats: Some(file_stats(rows, &stats).to_string()),
            tags: None,
            deletion_vector: None,
            base_row_id: None,
            default_row_commit_version: None,
            clustering_provider: None,
        })
    }

    /// The batch's rows grouped by table partition, each group without the partition columns,
    /// with the partition values as Delta serialises them (None for null).
    #[allow(clippy::type_complexity)]
    fn split(
        &self,
        batch: &RecordBatch,
    ) -> Result<Vec<(Vec<(String, Option<String>)>, RecordBatch)>, String> {
        let file_columns = |b: &RecordBatch| -> Result<RecordBatch, String> {
            let columns: Vec<ArrayRef> = self
                .file_schema
                .fields()
                .iter()
                .map(|f| {
                    b.column_by_name(f.name())
                        .cloned()
                        .ok_or_else(|| format!("column {} is missing", f.name()))
                })
                .collect::<Result<_, _>>()?;
            RecordBatch::try_new(self.file_schema.clone(), columns).map_err(|e| e.to_string())
        };
        if self.partition_columns.is_empty() {
            return Ok(vec![(Vec::new(), file_columns(batch)?)]);
        }
        let keys: Vec<ArrayRef> = self
            .partition_columns
            .iter()
            .map(|c| {
                batch
                    .column_by_name(c)
                    .cloned()
                    .ok_or_else(|| format!("partition column {c} is missing"))
            })
            .collect::<Result<_, _>>()?;
        // Usually a batch falls into one table partition (event time moves slowly): then no
        // rows are moved.
        let runs = arrow::compute::partition(&keys).map_err(|e| e.to_string())?;
        let (sorted, keys, runs) = if runs.len() == 1 {
            (batch.clone(), keys, runs)
        } else {
            let columns: Vec<SortColumn> = keys
                .iter()
                .map(|k| SortColumn {
                    values: k.clone(),
                    options: None,
                })
                .collect();
            let order = lexsort_to_indices(&columns, None).map_err(|e| e.to_string())?;
            let sorted = take_record_batch(batch, &order).map_err(|e| e.to_string())?;
            let keys = self
                .partition_columns
                .iter()
                .filter_map(|c| sorted.column_by_name(c).cloned())
                .collect::<Vec<_>>();
            let runs = arrow::compute::partition(&keys).map_err(|e| e.to_string())?;
            (sorted, keys, runs)
        };
        runs.ranges()
            .into_iter()
            .map(|range| {
                let values = self
                    .partition_columns
                    .iter()
                    .zip(&keys)
                    .map(|(name, key)| {
                        Ok((name.clone(), partition_value(key.as_ref(), range.start)?))
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                let rows = sorted.slice(range.start, range.end - range.start);
                Ok((values, file_columns(&rows)?))
            })
            .collect()
    }
}

/// A data file's bytes in memory, in blocks of [`BLOCK_BYTES`]. The file grows without copying
/// what it holds (a `Vec` that doubles copies the file each time, and holds the old and the new
/// copy), its blocks are ordinary heap allocations that can reuse the memory of the row groups
/// already written into it, and they go to the object store as they are.
#[derive(Default)]
struct FileBuffer {
    full: Vec<Bytes>,
    current: Vec<u8>,
}

impl FileBuffer {
    fn into_payload(mut self) -> PutPayload {
        if !self.current.is_empty() {
            self.full.push(Bytes::from(self.current));
        }
        self.full.into_iter().collect()
    }
}

impl Write for FileBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            if self.current.capacity() == 0 {
                self.current = Vec::with_capacity(BLOCK_BYTES);
            }
            let room = BLOCK_BYTES - self.current.len();
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.current.extend_from_slice(now);
            rest = later;
            if self.current.len() == BLOCK_BYTES {
                self.full
                    .push(Bytes::from(std::mem::take(&mut self.current)));
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Deletes the files of `adds`, which were never committed (best effort: a file left behind is
/// not part of the table, and `VACUUM` removes it).
pub async fn delete_files(store: &dyn ObjectStore, adds: Vec<Add>) {
    for add in adds {
        let Ok(path) = Path::parse(&add.path) else {
            continue;
        };
        if let Err(e) = store.delete(&path).await {
            tracing::debug!(path = %add.path, error = %e, "cannot delete an uncommitted file");
        }
    }
}

/// A partition value as Delta's log holds it (None for null).
fn partition_value(array: &dyn Array, row: usize) -> Result<Option<String>, String> {
    let scalar = Scalar::from_array(array, row).ok_or_else(|| {
        format!(
            "partition values of type {} are not supported",
            array.data_type()
        )
    })?;
    Ok((!scalar.is_null()).then(|| scalar.serialize()))
}

/// The hive-style directory of a table partition, values escaped as Delta expects.
fn hive_prefix(values: &[(String, Option<String>)]) -> String {
    values
        .iter()
        .map(|(column, value)| {
            let value = match value {
                Some(v) => Scalar::String(v.clone()).serialize_encoded(),
                None => NULL_PARTITION_VALUE_DATA_PATH.to_string(),
            };
            format!("{column}={value}")
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The lowest and highest value of a column so far.
#[derive(Debug, Clone, PartialEq)]
enum Bounds {
    Int(i64, i64),
    Float(f64, f64),
    Date(i32, i32),
    /// The smallest and the largest prefix of [`STRING_PREFIX`] + 1 bytes: prefixes keep the
    /// order, so these are the prefixes of the smallest and the largest value.
    Text(Vec<u8>, Vec<u8>),
}

impl Bounds {
    fn merge(self, other: Bounds) -> Option<Bounds> {
        Some(match (self, other) {
            (Self::Int(a, b), Self::Int(c, d)) => Self::Int(a.min(c), b.max(d)),
            (Self::Float(a, b), Self::Float(c, d)) => Self::Float(a.min(c), b.max(d)),
            (Self::Date(a, b), Self::Date(c, d)) => Self::Date(a.min(c), b.max(d)),
            (Self::Text(a, b), Self::Text(c, d)) => Self::Text(a.min(c), b.max(d)),
            _ => return None,
        })
    }

    fn json(&self) -> (Option<Value>, Option<Value>) {
        match self {
            Self::Int(lo, hi) => (Some(json!(lo)), Some(json!(hi))),
            Self::Float(lo, hi) => (Some(json!(lo)), Some(json!(hi))),
            Self::Date(lo, hi) => (
                Some(Scalar::Date(*lo).to_json()),
                Some(Scalar::Date(*hi).to_json()),
            ),
            Self::Text(lo, hi) => {
                let lo = &lo[..lo.len().min(STRING_PREFIX)];
                // Cut at a character boundary: a shorter prefix is still a lower bound.
                let lo = match std::str::from_utf8(lo) {
                    Ok(s) => s,
                    Err(e) => std::str::from_utf8(&lo[..e.valid_up_to()]).unwrap_or_default(),
                };
                // A maximum within the prefix is the whole value; a longer one cut would be
                // lower than the value, so it is left out.
                let hi = (hi.len() <= STRING_PREFIX)
                    .then(|| std::str::from_utf8(hi).ok().map(|h| json!(h)))
                    .flatten();
                (Some(json!(lo)), hi)
            }
        }
    }
}

struct ColumnStats {
    name: String,
    nulls: i64,
    /// None before the first value; also None for ever once a batch had no exact bounds.
    bounds: Option<Bounds>,
    /// Whether min and max are kept for this column's type.
    bounded: bool,
    /// Nested columns get no statistics (Delta nests them per field).
    counted: bool,
}

impl ColumnStats {
    fn new(name: String, data_type: &DataType) -> Self {
        let bounded = matches!(
            data_type,
            DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::Float32
                | DataType::Float64
                | DataType::Date32
                | DataType::Utf8
        );
        let counted = !data_type.is_nested();
        Self {
            name,
            nulls: 0,
            bounds: None,
            bounded,
            counted,
        }
    }

    fn update(&mut self, array: &dyn Array) {
        self.nulls += array.null_count() as i64;
        if !self.bounded || array.null_count() == array.len() {
            return;
        }
        let bounds = batch_bounds(array);
        self.bounds = match (self.bounds.take(), bounds) {
            (None, b) => b,
            (Some(a), Some(b)) => a.merge(b),
            (Some(_), None) => None,
        };
        if self.bounds.is_none() {
            // A batch without exact bounds (NaN) spoils the column for this file.
            self.bounded = false;
        }
    }
}

fn batch_bounds(array: &dyn Array) -> Option<Bounds> {
    use arrow::compute::{max, min};
    fn ints<T>(array: &dyn Array) -> Option<Bounds>
    where
        T: arrow::datatypes::ArrowPrimitiveType,
        T::Native: Into<i64>,
    {
        let a = array.as_primitive::<T>();
        Some(Bounds::Int(min(a)?.into(), max(a)?.into()))
    }
    match array.data_type() {
        DataType::Int8 => ints::<Int8Type>(array),
        DataType::Int16 => ints::<Int16Type>(array),
        DataType::Int32 => ints::<Int32Type>(array),
        DataType::Int64 => ints::<Int64Type>(array),
        DataType::Float32 => {
            let a = array.as_primitive::<Float32Type>();
            let (lo, hi) = (f64::from(min(a)?), f64::from(max(a)?));
            (!lo.is_nan() && !hi.is_nan()).then_some(Bounds::Float(lo, hi))
        }
        DataType::Float64 => {
            let a = array.as_primitive::<Float64Type>();
            let (lo, hi) = (min(a)?, max(a)?);
            (!lo.is_nan() && !hi.is_nan()).then_some(Bounds::Float(lo, hi))
        }
        DataType::Date32 => {
            let a = array.as_primitive::<Date32Type>();
            Some(Bounds::Date(min(a)?, max(a)?))
        }
        DataType::Utf8 => {
            let prefixes = array
                .as_string::<i32>()
                .iter()
                .flatten()
                .map(|v| &v.as_bytes()[..v.len().min(STRING_PREFIX + 1)]);
            let (mut lo, mut hi): (Option<&[u8]>, Option<&[u8]>) = (None, None);
            for p in prefixes {
                lo = Some(lo.map_or(p, |l| l.min(p)));
                hi = Some(hi.map_or(p, |h| h.max(p)));
            }
            Some(Bounds::Text(lo?.to_vec(), hi?.to_vec()))
        }
        _ => None,
    }
}

/// Delta's `stats` JSON of a file.
fn file_stats(rows: i64, columns: &[ColumnStats]) -> Value {
    let mut min_values = Map::new();
    let mut max_values = Map::new();
    let mut null_count = Map::new();
    for c in columns.iter().filter(|c| c.counted) {
        null_count.insert(c.name.clone(), json!(c.nulls));
        if !c.bounded {
            continue;
        }
        if let Some(bounds) = &c.bounds {
            let (lo, hi) = bounds.json();
            if let Some(lo) = lo {
                min_values.insert(c.name.clone(), lo);
            }
            if let Some(hi) = hi {
                max_values.insert(c.name.clone(), hi);
            }
        }
    }
    json!({"numRecords": rows, "minValues": min_values, "maxValues": max_values, "nullCount": null_count})
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int32Array, Int64Array, StringArray};
    use arrow::datatypes::Field;

    fn stats_of(columns: Vec<ArrayRef>, batches: usize) -> Value {
        let fields: Vec<Field> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
            .collect();
        let mut stats: Vec<ColumnStats> = fields
            .iter()
            .map(|f| ColumnStats::new(f.name().clone(), f.data_type()))
            .collect();
        let rows = columns[0].len();
        let per = rows / batches;
        for b in 0..batches {
            for (s, c) in stats.iter_mut().zip(&columns) {
                s.update(c.slice(b * per, per).as_ref());
            }
        }
        file_stats(rows as i64, &stats)
    }

    #[test]
    fn statistics_cover_exact_bounds_and_null_counts() {
        let long = "y".repeat(40);
        let stats = stats_of(
            vec![
                Arc::new(Int64Array::from(vec![Some(5), None, Some(-3), Some(9)])),
                Arc::new(Float64Array::from(vec![Some(1.5), Some(-0.25), None, None])),
                Arc::new(StringArray::from(vec![
                    Some("b"),
                    Some(long.as_str()),
                    Some("a"),
                    None,
                ])),
                Arc::new(Float64Array::from(vec![1.0, f64::NAN, 2.0, 3.0])),
                Arc::new(arrow::array::Date32Array::from(vec![
                    Some(0),
                    Some(19000),
                    None,
                    Some(1),
                ])),
            ],
            2,
        );
        assert_eq!(stats["numRecords"], 4);
        assert_eq!(stats["minValues"]["c0"], -3);
        assert_eq!(stats["maxValues"]["c0"], 9);
        assert_eq!(stats["minValues"]["c1"], -0.25);
        assert_eq!(stats["maxValues"]["c1"], 1.5);
        assert_eq!(stats["minValues"]["c2"], "a");
        // The maximum is longer than the prefix: left out rather than cut (a cut maximum
        // would be lower than the value).
        assert!(stats["maxValues"].get("c2").is_none());
        // NaN has no place in an ordering: no bounds for that column.
        assert!(stats["minValues"].get("c3").is_none());
        assert!(stats["maxValues"].get("c3").is_none());
        assert_eq!(stats["minValues"]["c4"], "1970-01-01");
        assert_eq!(stats["maxValues"]["c4"], "2022-01-08");
        assert_eq!(stats["nullCount"]["c0"], 1);
        assert_eq!(stats["nullCount"]["c1"], 2);
        assert_eq!(stats["nullCount"]["c2"], 1);
        assert_eq!(stats["nullCount"]["c4"], 1);
    }

    #[test]
    fn long_string_minimums_are_cut_to_a_prefix() {
        let long = "m".repeat(50);
        let stats = stats_of(
            vec![Arc::new(StringArray::from(vec![long.as_str(), "z"]))],
            1,
        );
        assert_eq!(stats["minValues"]["c0"], "m".repeat(STRING_PREFIX));
        assert_eq!(stats["maxValues"]["c0"], "z");
        // A multi-byte character across the cut is left out of the minimum entirely.
        let accented = format!("{}é{}", "a".repeat(STRING_PREFIX - 1), "b".repeat(10));
        let stats = stats_of(
            vec![Arc::new(StringArray::from(vec![accented.as_str(), "zz"]))],
            1,
        );
        assert_eq!(stats["minValues"]["c0"], "a".repeat(STRING_PREFIX - 1));
        // Values equal in their first 33 bytes: the maximum is known to be long.
        let (x, y) = ("q".repeat(40), format!("{}r", "q".repeat(39)));
        let stats = stats_of(
            vec![Arc::new(StringArray::from(vec![x.as_str(), y.as_str()]))],
            1,
        );
        assert!(stats["maxValues"].get("c0").is_none());
        assert_eq!(stats["minValues"]["c0"], "q".repeat(STRING_PREFIX));
    }

    #[test]
    fn all_null_columns_have_counts_and_no_bounds() {
        let stats = stats_of(vec![Arc::new(Int32Array::from(vec![None, None]))], 1);
        assert_eq!(stats["nullCount"]["c0"], 2);
        assert!(stats["minValues"].get("c0").is_none());
    }

    #[test]
    fn file_buffers_keep_every_byte_in_order_across_blocks() {
        let data: Vec<u8> = (0..3 * BLOCK_BYTES + 123)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut file = FileBuffer::default();
        // Writes smaller than a block, one across a block boundary, one larger than a block.
        for piece in [
            &data[..10],
            &data[10..BLOCK_BYTES + 5],
            &data[BLOCK_BYTES + 5..],
        ] {
            file.write_all(piece).expect("write to memory");
        }
        assert_eq!(file.full.len(), 3, "three full blocks");
        let payload = file.into_payload();
        assert_eq!(payload.content_length(), data.len());
        let joined: Vec<u8> = payload.iter().flat_map(|b| b.iter().copied()).collect();
        assert!(
            joined == data,
            "the blocks hold the bytes written, in order"
        );
        assert_eq!(FileBuffer::default().into_payload().content_length(), 0);
    }

    #[tokio::test]
    async fn uploads_never_overwrite_a_file() {
        let dir = std::env::temp_dir().join(format!("kt-files-{}", super::super::unique_name()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let store: Arc<dyn ObjectStore> = Arc::new(
            object_store::local::LocalFileSystem::new_with_prefix(&dir).expect("local store"),
        );
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        let rows = |ids: Vec<i64>| {
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(ids))])
                .expect("batch")
        };
        // Two writers that name their files alike, as two pods with the same process id and
        // clock reading did.
        let writer = || {
            let mut files = DataFiles::new(
                schema.clone(),
                Vec::new(),
                WriterProperties::default(),
                1 << 20,
                store.clone(),
            );
            files.name = || "same".to_string();
            files
        };
        let mut first = writer();
        first.write(&rows(vec![1, 2, 3])).await.expect("write");
        let added = first.finish().await.expect("first upload");
        let mut second = writer();
        second.write(&rows(vec![9])).await.expect("write");
        let refused = second.finish().await.expect_err("the name is taken");
        assert!(refused.contains("exists already"), "{refused}");
        let bytes = store
            .get(&Path::from(added[0].path.as_str()))
            .await
            .expect("the first file")
            .bytes()
            .await
            .expect("read");
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(bytes, 1024)
            .expect("parquet");
        let total: usize = reader.map(|b| b.expect("batch").num_rows()).sum();
        assert_eq!(total, 3, "the first writer's file is intact");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn hive_prefixes_escape_values_and_name_nulls() {
        let values = vec![
            ("day".to_string(), Some("2026-11-21".to_string())),
            ("region".to_string(), None),
        ];
        assert_eq!(
            hive_prefix(&values),
            "day=2026-11-21/region=__HIVE_DEFAULT_PARTITION__"
        );
        let values = vec![
            ("day".to_string(), Some("a b/c".to_string())),
            ("region".to_string(), Some("x".to_string())),
        ];
        let prefix = hive_prefix(&values);
        assert!(!prefix.contains("b/c"), "{prefix}");
    }
}
