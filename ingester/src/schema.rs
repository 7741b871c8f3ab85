//! The value schema records are decoded against, and how batches meet the table's schema.
//!
//! The table is the authority on column types: an ingester that opens an existing table decodes
//! against the table's columns (not a schema inferred again from the first new records, which
//! may type a field differently), and fields the table lacks are inferred and added as nullable
//! columns ([`widen`]). A batch whose column type still differs from the table's (another
//! ingester added the same field with another type meanwhile) is cast only when every value
//! survives the cast unchanged ([`align`]); otherwise the record is refused, never written as a
//! null or a truncated value.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, new_null_array};
use arrow::datatypes::{
    DataType, Field, Fields, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit,
};
use kafkatable_crds::config::{Partition, Transform};

use crate::decode::{OFFSET_COLUMN, PARTITION_COLUMN, TOPIC_COLUMN, metadata_fields};
use crate::error::DecodeError;

/// The value columns of a table's schema: without the `_kafka_*` metadata columns and the
/// derived time-partition columns the ingester adds itself.
pub fn value_columns(table: &Schema, partition_by: &[Partition]) -> Schema {
    let metadata: Vec<String> = metadata_fields()
        .iter()
        .map(|f| f.name().clone())
        .chain([crate::decode::HEADERS_COLUMN.to_string()])
        .collect();
    let derived: Vec<String> = partition_by
        .iter()
        .filter(|p| {
            matches!(
                p.transform,
                Transform::Year | Transform::Month | Transform::Day | Transform::Hour
            )
        })
        .map(crate::partition::column_name)
        .collect();
    Schema::new(
        table
            .fields()
            .iter()
            .filter(|f| !metadata.contains(f.name()) && !derived.contains(f.name()))
            .cloned()
            .collect::<Vec<_>>(),
    )
}

/// `base` plus the fields of `inferred` it lacks, as nullable columns, inside structs too (a
/// field added to a record); a field the table has already (added by another ingester since
/// `base` was read) keeps the table's type.
pub fn widen(base: &Schema, inferred: &Schema, table: Option<&Schema>) -> Schema {
    Schema::new(widen_fields(
        base.fields(),
        inferred.fields(),
        table.map(Schema::fields),
    ))
}

fn widen_fields(base: &Fields, inferred: &Fields, table: Option<&Fields>) -> Fields {
    let mut fields: Vec<Field> = Vec::with_capacity(base.len());
    for b in base {
        let theirs = inferred.find(b.name()).map(|(_, f)| f);
        let field = match (b.data_type(), theirs.map(|f| f.data_type())) {
            // A column the records write wider (int as long): the wider type, unless the table
            // has the column already with a type of its own.
            (ours, Some(theirs)) if widens(ours, theirs) => {
                let table_type = table
                    .and_then(|t| t.find(b.name()))
                    .map(|(_, f)| f.data_type().clone())
                    .filter(|t| t != ours);
                b.as_ref()
                    .clone()
                    .with_data_type(table_type.unwrap_or_else(|| theirs.clone()))
            }
            (DataType::Struct(ours), Some(DataType::Struct(new))) => {
                let table_struct = table
                    .and_then(|t| t.find(b.name()))
                    .and_then(|(_, f)| match f.data_type() {
                        DataType::Struct(fields) => Some(fields),
                        _ => None,
                    });
                let merged = widen_fields(ours, new, table_struct);
                b.as_ref().clone().with_data_type(DataType::Struct(merged))
            }
            _ => b.as_ref().clone(),
        };
        fields.push(field);
    }
    for f in inferred {
        if base.find(f.name()).is_some() {
            continue;
        }
        let field = table
            .and_then(|t| t.find(f.name()))
            .map_or(f.as_ref(), |(_, t)| t.as_ref());
        fields.push(field.clone().with_nullable(true));
    }
    fields.into()
}

/// The fields of `batch` that `table` lacks, inside structs too, each with the path of the
/// struct it goes into (empty: the top level), in the batch's order.
pub fn added_fields(batch: &Fields, table: &Fields) -> Vec<(Vec<String>, Field)> {
    let mut added = Vec::new();
    collect_added(batch, table, &mut Vec::new(), &mut added);
    added
}

fn collect_added(
    batch: &Fields,
    table: &Fields,
    parent: &mut Vec<String>,
    added: &mut Vec<(Vec<String>, Field)>,
) {
    for f in batch {
        match table.find(f.name()) {
            None => added.push((parent.clone(), f.as_ref().clone())),
            Some((_, t)) => {
                if let (DataType::Struct(fs), DataType::Struct(ts)) = (f.data_type(), t.data_type())
                {
                    parent.push(f.name().clone());
                    collect_added(fs, ts, parent, added);
                    parent.pop();
                }
            }
        }
    }
}

/// The path ("a", "a.b") of the first field of `writer` that `target` lacks, looking into
/// structs: a field schema evolution may add.
pub fn unknown_field(writer: &Fields, target: &Fields) -> Option<String> {
    let (parent, field) = added_fields(writer, target).into_iter().next()?;
    Some(field_path(&parent, &field))
}

/// A field's path ("a.b") from the structs it is in and its name.
pub fn field_path(parent: &[String], field: &Field) -> String {
    parent
        .iter()
        .chain([field.name()])
        .cloned()
        .collect::<Vec<_>>()
        .join(".")
}

/// Reorders a batch's columns to the table's order and fills the columns it lacks with nulls. A
/// column of another type is cast only when every value casts and casts back unchanged;
/// otherwise the first value that would change is refused, named by topic, partition and
/// offset when the batch has the metadata columns.
pub fn align(batch: RecordBatch, table: &SchemaRef) -> Result<RecordBatch, AlignError> {
    if batch.schema().as_ref() == table.as_ref() {
        return Ok(batch);
    }
    let extra = added_fields(batch.schema().fields(), table.fields());
    if !extra.is_empty() {
        return Err(AlignError::NewFields(
            extra
                .into_iter()
                .map(|(parent, f)| field_path(&parent, &f))
                .collect(),
        ));
    }

    let rows = batch.num_rows();
    let mut columns = Vec::with_capacity(table.fields().len());
    for field in table.fields() {
        let column = match batch.column_by_name(field.name()) {
            Some(c) if c.data_type() == field.data_type() => c.clone(),
            Some(c) => exact_cast(c, field).map_err(|(row, reason)| {
                AlignError::Value(misfit(&batch, field.name(), row, reason))
            })?,
            None if field.is_nullable() => new_null_array(field.data_type(), rows),
            None => {
                return Err(AlignError::Schema(format!(
                    "column {} is required but the records lack it",
                    field.name()
                )));
            }
        };
        columns.push(column);
    }
    RecordBatch::try_new(table.clone(), columns).map_err(|e| AlignError::Schema(e.to_string()))
}

/// Why a batch does not meet the table's schema.
#[derive(Debug)]
pub enum AlignError {
    /// The records have fields the table lacks (schema evolution's business).
    NewFields(Vec<String>),
    /// Otherwise the schemas differ (a required column missing, say).
    Schema(String),
    /// A value would change on its way into the table: a bad record.
    Value(DecodeError),
}

/// `column` cast to `field`'s type, when every value survives the round trip; else the first
/// row that does not, and why.
pub(crate) fn exact_cast(
    column: &ArrayRef,
    field: &Field,
) -> Result<ArrayRef, (Option<usize>, String)> {
    if let (DataType::Struct(from), DataType::Struct(to)) = (column.data_type(), field.data_type())
        && from != to
    {
        return struct_cast(column, from, to);
    }
    // The default (safe) cast turns a value it cannot convert into a null, and casting back
    // shows what else it changed: together they find the first value that would not survive.
    let unsupported = |e: arrow::error::ArrowError| {
        (
            None,
            format!(
                "a {} value cannot go into the table's {} column: {e}",
                column.data_type(),
                field.data_type()
            ),
        )
    };
    let cast = arrow::compute::cast(column, field.data_type()).map_err(unsupported)?;
    let back = arrow::compute::cast(&cast, column.data_type()).map_err(unsupported)?;
    // Usually every value survives (a list whose element field is named differently, say):
    // one comparison of the whole column, and a search row by row only when it fails.
    if cast.null_count() == column.null_count() && back.to_data() == column.to_data() {
        return Ok(cast);
    }
    let changed = (0..column.len()).find(|&i| {
        column.is_null(i) != cast.is_null(i)
            || (!column.is_null(i) && column.slice(i, 1).to_data() != back.slice(i, 1).to_data())
    });
    match changed {
        None => Ok(cast),
        Some(row) => {
            let value = arrow::util::display::array_value_to_string(column, row)
                .unwrap_or_else(|_| "the value".into());
            Err((
                Some(row),
                format!(
                    "{value} ({}) would change in the table's {} column",
                    column.data_type(),
                    field.data_type()
                ),
            ))
        }
    }
}

/// A struct column as a struct of the fields `to`, child by child by name: a child `to` has
/// and the column lacks is null (when it may be), one the column has and `to` lacks is
/// refused (never dropped), and each other child is cast exactly.
fn struct_cast(
    column: &ArrayRef,
    from: &Fields,
    to: &Fields,
) -> Result<ArrayRef, (Option<usize>, String)> {
    let Some(structs) = column.as_struct_opt() else {
        return Err((None, "not a struct column".into()));
    };
    if let Some(extra) = unknown_field(from, to) {
        return Err((
            None,
            format!("the record's field {extra} is not in the table's column"),
        ));
    }
    let mut children = Vec::with_capacity(to.len());
    for target in to {
        let child = match from.find(target.name()) {
            Some((i, f)) if f.data_type() == target.data_type() => structs.column(i).clone(),
            Some((i, _)) => exact_cast(structs.column(i), target)
                .map_err(|(row, reason)| (row, format!("{}: {reason}", target.name())))?,
            None if target.is_nullable() => new_null_array(target.data_type(), structs.len()),
            None => {
                return Err((
                    None,
                    format!(
                        "{} is required by the table and the record lacks it",
                        target.name()
                    ),
                ));
            }
        };
        children.push(child);
    }
    arrow::array::StructArray::try_new(to.clone(), children, structs.nulls().cloned())
        .map(|s| Arc::new(s) as ArrayRef)
        .map_err(|e| (None, e.to_string()))
}

/// A value of `column` that does not fit: named by topic, partition and offset when the batch
/// carries them.
fn misfit(batch: &RecordBatch, column: &str, row: Option<usize>, reason: String) -> DecodeError {
    let reason = format!("field {column}: {reason}");
    let located = row.and_then(|row| {
        let topic = batch.column_by_name(TOPIC_COLUMN)?.as_string_opt::<i32>()?;
        let partition = batch
            .column_by_name(PARTITION_COLUMN)?
            .as_primitive_opt::<Int32Type>()?;
        let offset = batch
            .column_by_name(OFFSET_COLUMN)?
            .as_primitive_opt::<Int64Type>()?;
        Some((
            topic.value(row).to_string(),
            partition.value(row),
            offset.value(row),
        ))
    });
    match located {
        Some((topic, partition, offset)) => DecodeError::Record {
            topic,
            partition,
            offset,
            reason,
        },
        None => DecodeError::Column {
            column: column.to_string(),
            reason,
        },
    }
}

/// Whether values of type `from` (a writer schema's) go into a table column of type `to` unchanged, as the
/// safe widenings both table formats know: int to long, float to double, and a decimal's
/// precision up at the same scale.
pub fn widens(from: &DataType, to: &DataType) -> bool {
    let decimal = |t: &DataType| match *t {
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => Some((p, s)),
        _ => None,
    };
    match (from, to) {
        (DataType::Int32, DataType::Int64) | (DataType::Float32, DataType::Float64) => true,
        _ => {
            matches!((decimal(from), decimal(to)), (Some((p, s)), Some((q, t))) if s == t && q >= p)
        }
    }
}

/// Whether columns of types `a` and `b` hold the same values: the same type, or timestamps of
/// one unit whose time zones both mean UTC (iceberg-rust reads a `timestamptz` column back as
/// "+00:00", the decoders write "UTC").
pub fn same_values(a: &DataType, b: &DataType) -> bool {
    let utc = |tz: &Option<Arc<str>>| {
        tz.as_deref()
            .map(|tz| matches!(tz, "UTC" | "+00:00" | "Z" | "Etc/UTC"))
    };
    match (a, b) {
        (DataType::Timestamp(u, s), DataType::Timestamp(v, t)) => {
            u == v && (s == t || (utc(s) == Some(true) && utc(t) == Some(true)))
        }
        _ => a == b,
    }
}

/// Maps a column type of the spec to Arrow.
pub fn column_type(name: &str) -> Option<DataType> {
    if let Some(inner) = name.strip_prefix("list<").and_then(|r| r.strip_suffix('>')) {
        return Some(DataType::List(Arc::new(Field::new(
            "element",
            column_type(inner)?,
            true,
        ))));
    }
    if let Some(args) = name
        .strip_prefix("decimal(")
        .and_then(|r| r.strip_suffix(')'))
    {
        let (p, s) = args.split_once(',')?;
        return Some(DataType::Decimal128(
            p.trim().parse().ok()?,
            s.trim().parse().ok()?,
        ));
    }
    Some(match name {
        "boolean" => DataType::Boolean,
        "int" => DataType::Int32,
        "long" => DataType::Int64,
        "float" => DataType::Float32,
        "double" => DataType::Float64,
        "string" => DataType::Utf8,
        "binary" => DataType::Binary,
        "date" => DataType::Date32,
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn column_types_map_to_arrow() {
        assert_eq!(column_type("long"), Some(DataType::Int64));
        assert_eq!(
            column_type("decimal(10,2)"),
            Some(DataType::Decimal128(10, 2))
        );
        assert!(matches!(
            column_type("list<string>"),
            Some(DataType::List(_))
        ));
        assert_eq!(column_type("uuid"), None);
    }

    use arrow::array::{Float64Array, Int32Array, Int64Array, StringArray};
    use arrow::datatypes::DataType;
    use std::sync::Arc;

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(columns).expect("batch")
    }

    #[test]
    fn fields_added_inside_a_struct_widen_it_and_older_rows_cast_with_nulls() {
        let address =
            |fields: Vec<Field>| Field::new("address", DataType::Struct(fields.into()), true);
        let street = Field::new("street", DataType::Utf8, false);
        let floor = Field::new("floor", DataType::Int32, false);
        let base = Schema::new(vec![address(vec![street.clone()])]);
        let inferred = Schema::new(vec![address(vec![street.clone(), floor.clone()])]);
        let widened = widen(&base, &inferred, None);
        assert_eq!(
            widened.field(0).data_type(),
            address(vec![street.clone(), floor.clone().with_nullable(true)]).data_type(),
            "the new field is inside the struct, nullable"
        );
        assert_eq!(
            unknown_field(inferred.fields(), base.fields()).as_deref(),
            Some("address.floor")
        );
        assert_eq!(
            added_fields(inferred.fields(), base.fields()),
            [(vec!["address".to_string()], floor.clone())]
        );

        // An older struct goes into the wider column with the new field null; a struct with a
        // field the column lacks is refused, not cut down.
        let older: ArrayRef = Arc::new(arrow::array::StructArray::from(vec![(
            Arc::new(street.clone()),
            Arc::new(arrow::array::StringArray::from(vec!["s1"])) as ArrayRef,
        )]));
        let cast = exact_cast(&older, widened.field(0)).expect("an older struct widens");
        let floors = cast.as_struct().column(1).clone();
        assert!(floors.is_null(0));
        let narrow = base.field(0);
        let newer = exact_cast(&cast, narrow).expect_err("floor would be lost");
        assert!(newer.1.contains("floor"), "{}", newer.1);
    }

    #[test]
    fn a_column_written_wider_widens_unless_the_table_has_its_own_type() {
        let base = Schema::new(vec![Field::new("n", DataType::Int32, false)]);
        let inferred = Schema::new(vec![Field::new("n", DataType::Int64, false)]);
        let widened = widen(&base, &inferred, None);
        assert_eq!(widened.field(0).data_type(), &DataType::Int64);
        assert!(!widened.field(0).is_nullable(), "nullability stays");
        // Another ingester widened the table already: its type.
        let table = Schema::new(vec![Field::new("n", DataType::Int64, false)]);
        assert_eq!(
            widen(&base, &inferred, Some(&table)).field(0).data_type(),
            &DataType::Int64
        );
        // Narrower records do not narrow the schema.
        assert_eq!(
            widen(&inferred, &base, None).field(0).data_type(),
            &DataType::Int64
        );
    }

    #[test]
    fn widening_adds_only_new_fields_as_nullable_with_the_tables_type() {
        let base = Schema::new(vec![Field::new("id", DataType::Int64, false)]);
        let inferred = Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("name", DataType::Utf8, false),
            Field::new("score", DataType::Int64, false),
        ]);
        let table = Schema::new(vec![Field::new("score", DataType::Float64, true)]);
        let widened = widen(&base, &inferred, Some(&table));
        assert_eq!(widened.fields().len(), 3);
        assert_eq!(widened.field(0).data_type(), &DataType::Int64);
        assert!(widened.field(1).is_nullable());
        assert_eq!(
            widened.field(2).data_type(),
            &DataType::Float64,
            "the table's type wins"
        );
    }

    #[test]
    fn casts_that_keep_every_value_are_taken() {
        let table: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("amount", DataType::Float64, true),
            Field::new("note", DataType::Utf8, true),
        ]));
        let b = batch(vec![(
            "amount",
            Arc::new(Int64Array::from(vec![Some(3), None])) as ArrayRef,
        )]);
        let aligned = align(b, &table).expect("long into double is exact here");
        assert_eq!(
            aligned
                .column(0)
                .as_primitive::<arrow::datatypes::Float64Type>()
                .value(0),
            3.0
        );
        assert!(aligned.column(1).is_null(0), "a missing column is null");
    }

    #[test]
    fn a_value_the_cast_would_change_is_a_bad_record() {
        let table: SchemaRef = Arc::new(Schema::new(vec![Field::new(
            "amount",
            DataType::Int64,
            true,
        )]));
        // arrow's default cast makes "abc" a null and 25.7 a 25.
        for (column, row) in [
            (
                Arc::new(StringArray::from(vec!["12", "abc"])) as ArrayRef,
                1,
            ),
            (
                Arc::new(Float64Array::from(vec![1.0, 2.0, 25.7])) as ArrayRef,
                2,
            ),
        ] {
            let len = column.len();
            let b = batch(vec![
                ("amount", column),
                (
                    TOPIC_COLUMN,
                    Arc::new(StringArray::from(vec!["events"; len])),
                ),
                (PARTITION_COLUMN, Arc::new(Int32Array::from(vec![4; len]))),
                (
                    OFFSET_COLUMN,
                    Arc::new(Int64Array::from_iter_values(100..100 + len as i64)),
                ),
            ]);
            let table_with_metadata: SchemaRef = Arc::new(Schema::new(
                table
                    .fields()
                    .iter()
                    .cloned()
                    .chain(b.schema().fields().iter().skip(1).cloned())
                    .collect::<Vec<_>>(),
            ));
            match align(b, &table_with_metadata) {
                Err(AlignError::Value(DecodeError::Record {
                    topic,
                    partition,
                    offset,
                    reason,
                })) => {
                    assert_eq!((topic.as_str(), partition), ("events", 4));
                    assert_eq!(offset, 100 + row as i64, "{reason}");
                    assert!(reason.contains("field amount"), "{reason}");
                }
                other => panic!("expected a bad record, got {other:?}"),
            }
        }
        // Without metadata columns the column is named.
        let b = batch(vec![(
            "amount",
            Arc::new(StringArray::from(vec!["x"])) as ArrayRef,
        )]);
        assert!(matches!(
            align(b, &table),
            Err(AlignError::Value(DecodeError::Column { .. }))
        ));
    }

    #[test]
    fn value_columns_leave_out_metadata_and_derived_partition_columns() {
        let partition_by = [
            Partition {
                field: "ts".into(),
                transform: Transform::Day,
            },
            Partition {
                field: "country".into(),
                transform: Transform::Identity,
            },
        ];
        let mut fields = vec![
            Field::new("id", DataType::Int64, true),
            Field::new("ts", DataType::Int64, true),
            Field::new("country", DataType::Utf8, true),
            Field::new("ts_day", DataType::Date32, true),
        ];
        fields.extend(metadata_fields());
        let values = value_columns(&Schema::new(fields), &partition_by);
        let names: Vec<&str> = values.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["id", "ts", "country"]);
    }
}
