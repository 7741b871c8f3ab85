//! What the registry formats share: a writer schema checked against the value schema (new
//! fields, safe widenings, incompatible changes named by field and schema ids), and a chunk's
//! records of several writer schemas conformed to it and interleaved back into offset order.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, new_null_array};
use arrow::datatypes::{Field, Schema, SchemaRef};

use super::{Bad, Refusal};
use crate::registry::{self, Registry, SchemaKind};

/// The writer schema `value` names (by its id), read from `registry` as a schema of `kind`
/// ("Avro", "JSON Schema", "Protobuf" in messages): retried while the registry does not
/// answer; an answer that is not such a schema is final.
pub(super) async fn fetch(
    registry: Option<&Registry>,
    value: &[u8],
    kind: SchemaKind,
    named: &str,
) -> Result<(u32, Arc<registry::Schema>), Refusal> {
    let (id, _) = registry::split_wire(value).map_err(|e| Refusal::Invalid(e.to_string()))?;
    let Some(registry) = registry else {
        return Err(Refusal::Invalid(format!(
            "schema id {id} is not among the schemas given, and no registry is configured"
        )));
    };
    let schema = registry
        .by_id(id)
        .await
        .map_err(|e| Refusal::Invalid(format!("schema id {id}: {e}")))?;
    if schema.kind != kind {
        return Err(Refusal::Invalid(format!(
            "schema id {id} is a {:?} schema, not {named}",
            schema.kind
        )));
    }
    Ok((id, schema))
}

/// The writer schemas of a chunk's records widened into one, for a table that has none yet.
pub(super) fn widened<'a>(
    mut writers: impl Iterator<Item = &'a Schema>,
    named: &str,
) -> Result<Schema, Bad> {
    let first = writers
        .next()
        .ok_or_else(|| Bad::Chunk(format!("no {named} record to take the schema from")))?;
    Ok(writers.fold(first.clone(), |schema, writer| {
        crate::schema::widen(&schema, writer, None)
    }))
}

/// Whether the records of writer schema `id` (in `language`: "Avro", "JSON", "Protobuf") go
/// into `target`: each of its top-level fields a column (else [`Refusal::UnknownField`], for
/// schema evolution), of the same type or a safe widening of it, and every required column
/// among its fields. `compared` names the schema id the table's column agrees with, for the
/// message of an incompatible change.
pub(super) fn check(
    writer: &Schema,
    id: u32,
    language: &str,
    target: &Schema,
    compared: impl Fn(&Field) -> Option<u32>,
) -> Result<(), Refusal> {
    if let Some(field) = super::unknown_field(writer, target) {
        return Err(Refusal::UnknownField(field));
    }
    let as_in = |column: &Field| match compared(column) {
        Some(other) => format!(" (as in {language} schema id {other})"),
        None => String::new(),
    };
    for column in target.fields() {
        match writer.field_with_name(column.name()) {
            Ok(field) => {
                let (from, to) = (field.data_type(), column.data_type());
                if from.is_nested()
                    || to.is_nested()
                    || crate::schema::same_values(from, to)
                    || crate::schema::widens(from, to)
                {
                    continue;
                }
                let reason = format!(
                    "field {}: {language} schema id {id} writes it as {from}, and the table's column \
                     is {to}{}; an incompatible schema change (only int to long, float to double \
                     and a decimal's precision up go into an existing column)",
                    column.name(),
                    as_in(column)
                );
                // The table's column may widen to the writer's type.
                if crate::schema::widens(to, from) {
                    return Err(Refusal::WiderField {
                        field: column.name().clone(),
                        reason: format!(
                            "{reason}; schemaEvolution: addColumns widens an Iceberg table's \
                             column, and widening a Delta table's is not implemented \
                             (delta-rs writes no type widening)"
                        ),
                    });
                }
                return Err(Refusal::Invalid(reason));
            }
            Err(_) if column.is_nullable() => {}
            Err(_) => {
                return Err(Refusal::Invalid(format!(
                    "field {} is required by the table{}, and {language} schema id {id} does not \
                     have it; an incompatible schema change",
                    column.name(),
                    as_in(column)
                )));
            }
        }
    }
    Ok(())
}

/// No rows of `schema`'s columns: what a writer without records this chunk contributes.
pub(super) fn empty(schema: &Schema) -> Vec<ArrayRef> {
    schema
        .fields()
        .iter()
        .map(|f| arrow::array::new_empty_array(f.data_type()))
        .collect()
}

/// A writer's batch (already [`check`]ed) as the columns of `schema`: in its order, a column
/// the writer lacks null, another type cast where every value survives.
pub(super) fn conform(
    batch: &RecordBatch,
    id: u32,
    language: &str,
    schema: &SchemaRef,
) -> Result<Vec<ArrayRef>, Refusal> {
    schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) if column.data_type() == field.data_type() => Ok(column.clone()),
            Some(column) => crate::schema::exact_cast(column, field).map_err(|(_, reason)| {
                Refusal::Invalid(format!(
                    "field {} of {language} schema id {id}: {reason}",
                    field.name()
                ))
            }),
            None => Ok(new_null_array(field.data_type(), batch.num_rows())),
        })
        .collect()
}

/// Where a row of the chunk comes from.
#[derive(Clone, Copy)]
pub(super) enum Row {
    /// The `row`th record of run `run`.
    Value {
        run: usize,
        row: usize,
    },
    Tombstone,
}

/// The rows of the chunk in offset order: each run's columns interleaved, nulls for tombstones.
pub(super) fn interleave(
    conformed: &[Vec<ArrayRef>],
    rows: &[Row],
    schema: &SchemaRef,
) -> Result<Vec<ArrayRef>, String> {
    let tombstone_source = conformed.len();
    // A run with fewer rows than records would make arrow's interleave panic.
    for r in rows {
        if let Row::Value { run, row } = *r {
            let have = conformed
                .get(run)
                .and_then(|columns| columns.first())
                .map_or(0, |c| c.len());
            if row >= have {
                return Err(format!(
                    "writer run {run} decoded {have} rows, fewer than its records"
                ));
            }
        }
    }
    let indices: Vec<(usize, usize)> = rows
        .iter()
        .map(|r| match *r {
            Row::Value { run, row } => (run, row),
            Row::Tombstone => (tombstone_source, 0),
        })
        .collect();
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(c, field)| {
            let null = new_null_array(field.data_type(), 1);
            let mut sources: Vec<&dyn Array> = conformed
                .iter()
                .map(|columns| columns[c].as_ref())
                .collect();
            sources.push(null.as_ref());
            arrow::compute::interleave(&sources, &indices).map_err(|e| e.to_string())
        })
        .collect()
}

/// The columns of the runs of a chunk (each conformed to the value schema) as one set of
/// columns in offset order, one row per record: the only run's as they are when there is no
/// tombstone.
pub(super) fn assemble(
    mut conformed: Vec<Vec<ArrayRef>>,
    rows: &[Row],
    schema: &SchemaRef,
) -> Result<Vec<ArrayRef>, Bad> {
    let columns = if conformed.len() == 1 && !rows.iter().any(|r| matches!(r, Row::Tombstone)) {
        conformed.pop().unwrap_or_default()
    } else {
        interleave(&conformed, rows, schema).map_err(Bad::Chunk)?
    };
    if let Some(got) = columns.first().map(|c| c.len())
        && got != rows.len()
    {
        return Err(Bad::Count {
            expected: rows.len(),
            got,
        });
    }
    Ok(columns)
}

/// A field's path below `path` ("a.b"), for messages.
pub(super) fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// Where a field of `path` is, for messages: the top level when the path is empty.
pub(super) fn at(path: &str) -> String {
    if path.is_empty() {
        "the top level".to_string()
    } else {
        format!("field {path}")
    }
}

/// The position in the chunk of run `run`'s first record.
pub(super) fn first_row(rows: &[Row], run: usize) -> usize {
    rows.iter()
        .position(|r| matches!(r, Row::Value { run: r, .. } if *r == run))
        .unwrap_or(0)
}
