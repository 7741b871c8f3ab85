//! Widening an Iceberg table's column to the type its records now have (int to long, float to
//! double, a decimal's precision up: Iceberg's type promotions), keeping its field id.
//!
//! iceberg-rust's schema update only adds and deletes columns, and a `TableCommit` of other
//! updates cannot be built outside the crate, so the schema change is committed through the
//! catalog's own protocol: a REST catalog's commit endpoint, or the SQL catalog's
//! compare-and-set of the metadata location (as iceberg-rust's SQL catalog does it). Either way
//! the commit is fenced on the table's uuid and current schema id: a writer that changed the
//! schema first makes it fail, and the caller reloads and looks again.

use std::str::FromStr;

use arrow::datatypes::{DataType, Schema as ArrowSchema};
use iceberg::spec::{NestedField, PrimitiveType, Schema, Type};
use iceberg::table::Table;
use iceberg::{MetadataLocation, TableIdent, TableRequirement, TableUpdate};
use kafkatable_crds::config::CatalogConfig;
use kafkatable_crds::spec::CatalogType;

/// `current` with every top-level column the batches write wider promoted to the wider type
/// (the same field ids), and the promoted columns' names; None when none is.
pub(super) fn promoted(
    current: &Schema,
    batches: &[&ArrowSchema],
) -> Result<Option<(Schema, Vec<String>)>, String> {
    let mut names = Vec::new();
    let fields: Vec<_> = current
        .as_struct()
        .fields()
        .iter()
        .map(|field| {
            let wider = batches
                .iter()
                .filter_map(|b| b.field_with_name(&field.name).ok())
                .find_map(|f| promotion(&field.field_type, f.data_type()));
            match wider {
                Some(to) => {
                    names.push(field.name.clone());
                    std::sync::Arc::new(NestedField {
                        field_type: Box::new(Type::Primitive(to)),
                        ..field.as_ref().clone()
                    })
                }
                None => field.clone(),
            }
        })
        .collect();
    if names.is_empty() {
        return Ok(None);
    }
    let schema = Schema::builder()
        .with_schema_id(current.schema_id())
        .with_identifier_field_ids(current.identifier_field_ids())
        .with_fields(fields)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(Some((schema, names)))
}

/// The primitive an Iceberg column of type `column` is promoted to for records of Arrow type
/// `records`, when that is one of Iceberg's promotions.
fn promotion(column: &Type, records: &DataType) -> Option<PrimitiveType> {
    let Type::Primitive(primitive) = column else {
        return None;
    };
    match (primitive, records) {
        (PrimitiveType::Int, DataType::Int64) => Some(PrimitiveType::Long),
        (PrimitiveType::Float, DataType::Float64) => Some(PrimitiveType::Double),
        (
            PrimitiveType::Decimal { precision, scale },
            DataType::Decimal128(p, s) | DataType::Decimal256(p, s),
        ) if i8::try_from(*scale).ok() == Some(*s) && u32::from(*p) > *precision => {
            Some(PrimitiveType::Decimal {
                precision: u32::from(*p),
                scale: *scale,
            })
        }
        _ => None,
    }
}

/// Why a commit of our own did not land.
#[derive(Debug)]
pub(super) enum Refused {
    /// Another writer changed the table first (or the fence no longer holds).
    Conflict(String),
    Failed(String),
}

/// Makes `schema` the table's current schema, fenced on its uuid and current schema id.
pub(super) async fn commit_schema(
    catalog: &CatalogConfig,
    credentials: Option<&str>,
    table: &Table,
    schema: Schema,
) -> Result<(), Refused> {
    let metadata = table.metadata();
    let requirements = vec![
        TableRequirement::UuidMatch {
            uuid: metadata.uuid(),
        },
        TableRequirement::CurrentSchemaIdMatch {
            current_schema_id: metadata.current_schema_id(),
        },
    ];
    let updates = vec![
        TableUpdate::AddSchema { schema },
        TableUpdate::SetCurrentSchema { schema_id: -1 },
    ];
    match catalog.type_ {
        CatalogType::Rest => {
            rest_commit(
                catalog,
                credentials,
                table.identifier(),
                requirements,
                updates,
            )
            .await
        }
        CatalogType::Sql => sql_commit(catalog, credentials, table, requirements, updates).await,
    }
}

/// POSTs the commit to the REST catalog's table endpoint (under the prefix its config gives).
async fn rest_commit(
    catalog: &CatalogConfig,
    token: Option<&str>,
    ident: &TableIdent,
    requirements: Vec<TableRequirement>,
    updates: Vec<TableUpdate>,
) -> Result<(), Refused> {
    let failed = |e: String| Refused::Failed(format!("the REST catalog: {e}"));
    let base = catalog.uri.trim_end_matches('/');
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| failed(e.to_string()))?;
    let authorized = |request: reqwest::RequestBuilder| match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    let mut config = authorized(http.get(format!("{base}/v1/config")));
    if let Some(warehouse) = &catalog.warehouse {
        config = config.query(&[("warehouse", warehouse)]);
    }
    let config: serde_json::Value = config
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| failed(e.to_string()))?
        .json()
        .await
        .map_err(|e| failed(e.to_string()))?;
    let prefix = config["overrides"]["prefix"]
        .as_str()
        .or_else(|| config["defaults"]["prefix"].as_str())
        .map(|p| format!("{}/", p.trim_matches('/')))
        .unwrap_or_default();
    // Namespace levels are joined by the unit separator (0x1F), escaped in the path.
    let namespace = ident.namespace().join("\u{1f}");
    let url = format!(
        "{base}/v1/{prefix}namespaces/{}/tables/{}",
        escape(&namespace),
        escape(ident.name())
    );
    let body = serde_json::json!({
        "identifier": ident,
        "requirements": requirements,
        "updates": updates,
    });
    let response = authorized(http.post(&url).json(&body))
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    match status.as_u16() {
        200..=299 => Ok(()),
        409 => Err(Refused::Conflict(text)),
        code => Err(failed(format!("HTTP {code}: {text}"))),
    }
}

/// Percent-escapes a path segment.
fn escape(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Writes the table's next metadata file and swaps the catalog row to it if it still points at
/// the current one (the SQL catalog's commit).
async fn sql_commit(
    catalog: &CatalogConfig,
    uri: Option<&str>,
    table: &Table,
    requirements: Vec<TableRequirement>,
    updates: Vec<TableUpdate>,
) -> Result<(), Refused> {
    let failed = |e: String| Refused::Failed(format!("the SQL catalog: {e}"));
    let metadata = table.metadata();
    for requirement in &requirements {
        requirement
            .check(Some(metadata))
            .map_err(|e| Refused::Conflict(e.to_string()))?;
    }
    let current = table
        .metadata_location_result()
        .map_err(|e| failed(e.to_string()))?
        .to_string();
    let mut builder = metadata.clone().into_builder(Some(current.clone()));
    for update in updates {
        builder = update.apply(builder).map_err(|e| failed(e.to_string()))?;
    }
    let next = builder.build().map_err(|e| failed(e.to_string()))?.metadata;
    let location = MetadataLocation::from_str(&current)
        .map_err(|e| failed(e.to_string()))?
        .with_next_version()
        .with_new_metadata(&next);
    next.write_to(table.file_io(), &location)
        .await
        .map_err(|e| failed(e.to_string()))?;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(uri.unwrap_or(&catalog.uri))
        .await
        .map_err(|e| failed(e.to_string()))?;
    let ident = table.identifier();
    let swapped = sqlx::query(
        "UPDATE iceberg_tables SET metadata_location = ?, previous_metadata_location = ? \
         WHERE catalog_name = ? AND table_namespace = ? AND table_name = ? \
         AND metadata_location = ?",
    )
    .bind(location.to_string())
    .bind(current.clone())
    .bind(catalog.name.clone())
    .bind(ident.namespace().join("."))
    .bind(ident.name().to_string())
    .bind(current)
    .execute(&pool)
    .await
    .map_err(|e| failed(e.to_string()));
    pool.close().await;
    match swapped?.rows_affected() {
        0 => Err(Refused::Conflict(
            "another writer committed to the table first".into(),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::Field;

    use super::*;

    #[test]
    fn columns_written_wider_are_promoted_with_their_field_ids() {
        let current = Schema::builder()
            .with_schema_id(3)
            .with_fields(vec![
                NestedField::required(1, "id", Type::Primitive(PrimitiveType::Int)).into(),
                NestedField::optional(2, "score", Type::Primitive(PrimitiveType::Float)).into(),
                NestedField::optional(
                    3,
                    "price",
                    Type::Primitive(PrimitiveType::Decimal {
                        precision: 9,
                        scale: 2,
                    }),
                )
                .into(),
                NestedField::optional(4, "name", Type::Primitive(PrimitiveType::String)).into(),
            ])
            .build()
            .expect("a schema");
        let records = ArrowSchema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("score", DataType::Float32, true),
            Field::new("price", DataType::Decimal128(12, 2), true),
            Field::new("name", DataType::Utf8, true),
        ]);
        let (widened, names) = promoted(&current, &[&records])
            .expect("builds")
            .expect("promotions");
        assert_eq!(names, ["id", "price"]);
        let id = widened.field_by_id(1).expect("id keeps its field id");
        assert_eq!(*id.field_type, Type::Primitive(PrimitiveType::Long));
        assert!(id.required, "and its nullability");
        let price = widened.field_by_id(3).expect("price");
        assert_eq!(
            *price.field_type,
            Type::Primitive(PrimitiveType::Decimal {
                precision: 12,
                scale: 2
            })
        );
        assert_eq!(
            *widened.field_by_id(2).expect("score").field_type,
            Type::Primitive(PrimitiveType::Float),
            "a column written as itself stays"
        );
        let same = ArrowSchema::new(vec![Field::new("id", DataType::Int32, false)]);
        assert!(promoted(&current, &[&same]).expect("builds").is_none());
        // A scale change is no promotion.
        let rescaled =
            ArrowSchema::new(vec![Field::new("price", DataType::Decimal128(12, 3), true)]);
        assert!(promoted(&current, &[&rescaled]).expect("builds").is_none());
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(escape("a\u{1f}b c"), "a%1Fb%20c");
        assert_eq!(escape("orders_v2"), "orders_v2");
    }
}
