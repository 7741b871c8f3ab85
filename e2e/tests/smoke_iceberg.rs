//! The Iceberg REST catalog: a namespace and table created by iceberg-rust (as the ingester
//! will) are read and appended to by pyiceberg, and iceberg-rust sees pyiceberg's snapshot.

use std::collections::HashMap;
use std::sync::Arc;

use iceberg::spec::{NestedField, PrimitiveType, Schema, Type};
use iceberg::{Catalog, CatalogBuilder, NamespaceIdent, TableCreation, TableIdent};
use iceberg_catalog_rest::RestCatalogBuilder;
use iceberg_storage_opendal::OpenDalStorageFactory;
use kafkatable_e2e::env::TestEnv;
use kafkatable_e2e::fixtures::{python, unique};

const PYICEBERG: &str = r#"
import json, sys
import pyarrow as pa
from pyiceberg.catalog import load_catalog
uri, endpoint, key, secret, namespace, table = sys.argv[1:7]
catalog = load_catalog("rest", type="rest", uri=uri, **{
    "s3.endpoint": endpoint, "s3.access-key-id": key, "s3.secret-access-key": secret,
    "s3.region": "us-east-1", "s3.path-style-access": "true"})
t = catalog.load_table(f"{namespace}.{table}")
fields = [(f.name, str(f.field_type), f.required) for f in t.schema().fields]
t.append(pa.table({"id": pa.array([1, 2, 3], pa.int64()), "name": pa.array(["a", "b", None], pa.string())},
                  schema=t.schema().as_arrow()))
rows = t.refresh().scan().to_arrow().sort_by("id")
print(json.dumps({"fields": fields, "ids": rows["id"].to_pylist(), "names": rows["name"].to_pylist()}))
"#;

#[tokio::test]
async fn table_created_by_iceberg_rust_is_read_and_appended_by_pyiceberg() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let props = HashMap::from([
        ("uri".to_string(), env.iceberg_rest_uri.clone()),
        ("s3.endpoint".to_string(), env.s3_endpoint.clone()),
        ("s3.access-key-id".to_string(), env.s3_access_key.clone()),
        (
            "s3.secret-access-key".to_string(),
            env.s3_secret_key.clone(),
        ),
        ("s3.region".to_string(), env.s3_region.clone()),
        ("s3.path-style-access".to_string(), "true".to_string()),
    ]);
    let catalog = RestCatalogBuilder::default()
        .with_storage_factory(Arc::new(OpenDalStorageFactory::S3 {
            customized_credential_load: None,
        }))
        .load("smoke", props)
        .await?;

    let namespace = NamespaceIdent::new(unique("smoke").replace('-', "_"));
    catalog.create_namespace(&namespace, HashMap::new()).await?;
    let schema = Schema::builder()
        .with_fields(vec![
            NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
            NestedField::optional(2, "name", Type::Primitive(PrimitiveType::String)).into(),
        ])
        .build()?;
    let creation = TableCreation::builder()
        .name("events".to_string())
        .schema(schema)
        .build();
    let table = catalog.create_table(&namespace, creation).await?;
    assert!(
        table.metadata().current_snapshot().is_none(),
        "a new table has no snapshot"
    );
    assert!(
        table
            .metadata()
            .location()
            .starts_with(env.iceberg_warehouse.trim_end_matches('/')),
        "table lives in the warehouse: {}",
        table.metadata().location()
    );

    let ns = namespace.as_ref().join(".");
    let out = python(
        &env,
        PYICEBERG,
        &[
            &env.iceberg_rest_uri,
            &env.s3_endpoint,
            &env.s3_access_key,
            &env.s3_secret_key,
            &ns,
            "events",
        ],
    )?;
    let seen: serde_json::Value = serde_json::from_str(out.trim())?;
    assert_eq!(
        seen["fields"],
        serde_json::json!([["id", "long", true], ["name", "string", false]])
    );
    assert_eq!(seen["ids"], serde_json::json!([1, 2, 3]));
    assert_eq!(seen["names"], serde_json::json!(["a", "b", null]));

    let ident = TableIdent::new(namespace.clone(), "events".to_string());
    let reloaded = catalog.load_table(&ident).await?;
    let snapshot = reloaded
        .metadata()
        .current_snapshot()
        .ok_or_else(|| anyhow::anyhow!("pyiceberg's append is not visible to iceberg-rust"))?;
    assert_eq!(
        snapshot
            .summary()
            .additional_properties
            .get("added-records")
            .map(String::as_str),
        Some("3")
    );

    catalog.drop_table(&ident).await?;
    catalog.drop_namespace(&namespace).await?;
    Ok(())
}
