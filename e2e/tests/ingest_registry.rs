//! Avro, Protobuf and JSON Schema records from an independent producer (the `confluent-kafka` Python
//! serializers against the real registry) into Delta and Iceberg, read back by deltalake and
//! pyiceberg: the table's column types follow the writer schema (logical types, enums, arrays,
//! maps, nested records, nullability), every value arrives as written, one row per (partition,
//! offset).

use std::path::PathBuf;
use std::time::Duration;

use kafkatable_e2e::avro::{
    ORDER_PROTO, order_fields, order_json_schema, order_schema, produce_avro, produce_avro_keyed,
    produce_json_schema, produce_protobuf, register,
};
use kafkatable_e2e::env::TestEnv;
use kafkatable_e2e::fixtures::{TestTopic, eventually, python, unique};
use kafkatable_e2e::ingester::{IngesterProcess, WorkDir};
use serde_json::{Value, json};

const PARTITIONS: i32 = 3;
const RECORDS: usize = 600;
const DEADLINE: Duration = Duration::from_secs(120);

/// What both readers print: row and (partition, offset) counts, the ids, the table's own
/// column types, and record 7 as Python values written out as text.
const SUMMARY: &str = r#"
def summary(t, types, nullable):
    pairs = set(zip(t["_kafka_partition"].to_pylist(), t["_kafka_offset"].to_pylist()))
    rows = t.to_pylist()
    seven = next((r for r in rows if r["id"] == 7), None)
    if seven is not None:
        seven = {k: v for k, v in seven.items() if not k.startswith("_kafka")}
    # After schema evolution: each record's id with its value of the columns v2 added.
    added = sorted([r["id"], r["qty"], r["shipping"], (r["address"] or {}).get("floor")] for r in rows) if "qty" in t.column_names else None
    # Each key's id (keys are the id as text, or a record with the id), and record 7's key.
    key_ids = sorted(k["id"] if isinstance(k, dict) else int(k) for k in t["_kafka_key"].to_pylist())
    key7 = next((r["_kafka_key"] for r in rows if r["id"] == 7), None)
    wide = sorted(t["wide"].to_pylist()) if "wide" in t.column_names else None
    print(json.dumps({"rows": t.num_rows, "distinct": len(pairs), "ids": sorted(t["id"].to_pylist()),
                      "types": types, "nullable": nullable, "seven": seven, "added": added,
                      "key_ids": key_ids, "key7": key7, "wide": wide}, default=str))
"#;

const DELTA_READER: &str = r#"
import json, sys
from deltalake import DeltaTable
try:
    dt = DeltaTable(sys.argv[1])
except Exception as e:
    print(json.dumps({"rows": 0, "missing": str(e)})); sys.exit(0)
fields = json.loads(dt.schema().to_json())["fields"]
summary(dt.to_pyarrow_table(), {f["name"]: f["type"] for f in fields},
        {f["name"]: f["nullable"] for f in fields})
"#;

const ICEBERG_READER: &str = r#"
import json, sys
from pyiceberg.catalog import load_catalog
uri, endpoint, key, secret, ident = sys.argv[1:6]
catalog = load_catalog("kafkatable", type="rest", uri=uri, **{"s3.endpoint": endpoint,
    "s3.access-key-id": key, "s3.secret-access-key": secret, "s3.region": "us-east-1",
    "s3.path-style-access": "true"})
try:
    table = catalog.load_table(ident)
except Exception as e:
    print(json.dumps({"rows": 0, "missing": str(e)})); sys.exit(0)
fields = table.schema().fields
summary(table.scan().to_arrow(), {f.name: str(f.field_type) for f in fields},
        {f.name: not f.required for f in fields})
"#;

/// The same for the table `lake.orders` of a SQL catalog (SQLite) at `db`.
const ICEBERG_SQL_READER: &str = r#"
import json, sys
from pyiceberg.catalog import load_catalog
db, warehouse = sys.argv[1:3]
catalog = load_catalog("kafkatable", type="sql", uri=f"sqlite:///{db}", warehouse=warehouse)
try:
    table = catalog.load_table("lake.orders")
except Exception as e:
    print(json.dumps({"rows": 0, "missing": str(e)})); sys.exit(0)
fields = table.schema().fields
summary(table.scan().to_arrow(), {f.name: str(f.field_type) for f in fields},
        {f.name: not f.required for f in fields})
"#;

/// An Iceberg table `lake.orders` in a SQL catalog (SQLite) in `dir`, with a local warehouse;
/// and what pyiceberg reads of it.
fn iceberg_sql_table(dir: &std::path::Path) -> (Value, impl Fn(&TestEnv) -> Option<Value>) {
    let warehouse = format!("file://{}/warehouse", dir.display());
    let table = json!({
        "format": "iceberg",
        "catalog": {"type": "sql", "uri": format!("sqlite://{}/catalog.db?mode=rwc", dir.display()),
                    "warehouse": warehouse, "namespace": "lake", "table": "orders"},
    });
    let db = dir.join("catalog.db").display().to_string();
    let read = move |env: &TestEnv| {
        let out = python(
            env,
            &format!("{SUMMARY}{ICEBERG_SQL_READER}"),
            &[&db, &warehouse],
        )
        .ok()?;
        serde_json::from_str(out.trim()).ok()
    };
    (table, read)
}

/// An Iceberg table `orders` in `namespace` of the REST catalog, on MinIO.
fn iceberg_table(env: &TestEnv, namespace: &str) -> Value {
    json!({
        "format": "iceberg",
        "catalog": {"type": "rest", "uri": env.iceberg_rest_uri, "namespace": namespace, "table": "orders"},
        "storage": {"endpoint": env.s3_endpoint, "region": "us-east-1", "pathStyle": true,
                    "credentialsSecretRef": {"name": "s3"}},
    })
}

/// What deltalake reads of the Delta table at `path` ([`SUMMARY`]).
fn read_delta(env: &TestEnv, path: &str) -> Option<Value> {
    let out = python(env, &format!("{SUMMARY}{DELTA_READER}"), &[path]).ok()?;
    serde_json::from_str(out.trim()).ok()
}

/// What pyiceberg reads of `namespace.orders` ([`SUMMARY`]).
fn read_iceberg(env: &TestEnv, namespace: &str) -> Option<Value> {
    let ident = format!("{namespace}.orders");
    let args = [
        env.iceberg_rest_uri.as_str(),
        &env.s3_endpoint,
        &env.s3_access_key,
        &env.s3_secret_key,
        &ident,
    ];
    let out = python(env, &format!("{SUMMARY}{ICEBERG_READER}"), &args).ok()?;
    serde_json::from_str(out.trim()).ok()
}

/// A topic, a KafkaTable manifest for it, and an ingester run on it.
struct Setup {
    env: TestEnv,
    topic: TestTopic,
    dir: WorkDir,
    manifest: PathBuf,
}

impl Setup {
    async fn new(tag: &str, table: Value) -> anyhow::Result<Self> {
        Self::with_format(tag, "avro", table).await
    }

    async fn with_format(tag: &str, format: &str, table: Value) -> anyhow::Result<Self> {
        let env = TestEnv::load()?;
        let topic = TestTopic::create(&env, tag, PARTITIONS).await?;
        let dir = WorkDir::new(&format!("kt-{tag}"))?;
        dir.s3_secret(&env)?;
        let manifest = json!({
            "apiVersion": "kafkatable.io/v1alpha1",
            "kind": "KafkaTable",
            "metadata": {"name": "orders", "namespace": "e2e"},
            "spec": {
                "source": {"brokers": env.kafka_bootstrap, "topic": topic.name,
                           "consumerGroup": unique("registry-group"), "format": format,
                           "schemaRegistry": {"url": env.registry_url}},
                "table": table,
                "commit": {"interval": "1s"},
            },
        });
        let path = dir.join("table.yaml");
        std::fs::write(&path, serde_yaml::to_string(&manifest)?)?;
        Ok(Self {
            env,
            topic,
            dir,
            manifest: path,
        })
    }

    /// Decodes the record keys as `format` (spec.source.keyFormat).
    fn key_format(self, format: &str) -> anyhow::Result<Self> {
        self.edit(|spec| spec["source"]["keyFormat"] = json!(format))
    }

    /// Changes the manifest's spec.
    fn edit(self, change: impl FnOnce(&mut Value)) -> anyhow::Result<Self> {
        let mut manifest: Value = serde_yaml::from_str(&std::fs::read_to_string(&self.manifest)?)?;
        change(&mut manifest["spec"]);
        std::fs::write(&self.manifest, serde_yaml::to_string(&manifest)?)?;
        Ok(self)
    }

    fn start(&self) -> anyhow::Result<IngesterProcess> {
        Ok(IngesterProcess::start(
            &self.manifest,
            &self.dir.join("secrets"),
            &self.dir,
            "ingester",
        )?)
    }

    /// Waits until `read` sees every record, and checks each is there once.
    async fn expect_all(&self, read: impl Fn() -> Option<Value>) -> Value {
        let seen = eventually(&format!("{RECORDS} rows"), DEADLINE, || async {
            let view = read()?;
            (view["rows"].as_u64()? as usize >= RECORDS).then_some(view)
        })
        .await;
        assert_eq!(seen["rows"], json!(RECORDS), "no row twice");
        assert_eq!(
            seen["distinct"],
            json!(RECORDS),
            "one row per (partition, offset)"
        );
        assert_eq!(
            seen["ids"],
            json!((0..RECORDS).collect::<Vec<_>>()),
            "every record once"
        );
        assert_eq!(
            seen["key_ids"], seen["ids"],
            "every record's key decoded, with its own id"
        );
        seen
    }
}

/// Record 7's values as the readers print them, both formats alike.
fn assert_record_seven(seen: &Value) {
    let seven = &seen["seven"];
    assert_eq!(seven["name"], "n7");
    assert_eq!(seven["at"], "2026-01-01 00:00:07+00:00", "{seven}");
    assert_eq!(seven["at_micros"], "2026-01-01 00:00:07.000007+00:00");
    assert_eq!(seven["local_at"], "2026-01-01 00:07:00");
    assert_eq!(seven["day"], "2026-01-08");
    assert_eq!(seven["price"], "7.25", "the decimal keeps its scale");
    assert_eq!(seven["kind"], "PAID", "enums are their symbols");
    assert_eq!(seven["tags"], json!(["t2", "x"]));
    assert_eq!(seven["address"], json!({"street": "s7", "zip": 10007}));
    assert_eq!(seven["note"], Value::Null, "a null union branch is null");
    let mut attrs: Vec<(String, i64)> =
        serde_json::from_value(seven["attrs"].clone()).unwrap_or_default();
    attrs.sort();
    assert_eq!(attrs, [("qty".into(), 0), ("rank".into(), 7)], "{seven}");
}

#[tokio::test]
async fn avro_from_the_confluent_serializer_into_delta_with_its_types() -> anyhow::Result<()> {
    let location = std::env::temp_dir().join(unique("kt-avro-delta"));
    let s = Setup::new(
        "avro-delta",
        json!({"format": "delta", "location": format!("file://{}", location.display())}),
    )
    .await?;
    let schema = order_schema(&order_fields());
    produce_avro(
        &s.env,
        &s.env.registry_url,
        &s.topic.name,
        &schema,
        0..RECORDS,
    )?;
    let _ingester = s.start()?;
    let path = location.display().to_string();
    let seen = s.expect_all(|| read_delta(&s.env, &path)).await;

    let types = &seen["types"];
    for (column, delta_type) in [
        ("id", json!("long")),
        ("name", json!("string")),
        ("at", json!("timestamp")),
        ("at_micros", json!("timestamp")),
        ("local_at", json!("timestamp_ntz")),
        ("day", json!("date")),
        ("price", json!("decimal(9,2)")),
        ("kind", json!("string")),
        ("note", json!("string")),
    ] {
        assert_eq!(types[column], delta_type, "column {column}: {types}");
    }
    assert_eq!(types["tags"]["type"], "array", "{types}");
    assert_eq!(types["tags"]["elementType"], "string");
    assert_eq!(types["attrs"]["type"], "map");
    assert_eq!(
        (&types["attrs"]["keyType"], &types["attrs"]["valueType"]),
        (&json!("string"), &json!("long"))
    );
    let address: Vec<(String, Value, bool)> = types["address"]["fields"]
        .as_array()
        .map(|f| {
            f.iter()
                .map(|f| {
                    (
                        f["name"].as_str().unwrap_or_default().to_string(),
                        f["type"].clone(),
                        f["nullable"].as_bool().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        address,
        [
            ("street".into(), json!("string"), false),
            ("zip".into(), json!("integer"), true)
        ],
        "the nested record keeps its fields and their nullability"
    );
    let nullable = &seen["nullable"];
    assert_eq!(
        (&nullable["id"], &nullable["note"]),
        (&json!(false), &json!(true)),
        "a field is nullable exactly when its type is a union with null"
    );
    assert_record_seven(&seen);
    Ok(())
}

#[tokio::test]
async fn avro_from_the_confluent_serializer_into_iceberg_with_its_types() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let namespace = unique("avro").replace('-', "_");
    let table = iceberg_table(&env, &namespace);
    let s = Setup::new("avro-iceberg", table).await?;
    // Iceberg has a time type (Delta has none).
    let mut fields = order_fields();
    fields.push(json!({"name": "at_time", "type": {"type": "long", "logicalType": "time-micros"}}));
    let schema = order_schema(&fields);
    produce_avro(
        &s.env,
        &s.env.registry_url,
        &s.topic.name,
        &schema,
        0..RECORDS,
    )?;
    let _ingester = s.start()?;
    let seen = s.expect_all(|| read_iceberg(&s.env, &namespace)).await;

    let types = &seen["types"];
    for (column, iceberg_type) in [
        ("id", "long"),
        ("name", "string"),
        ("at", "timestamptz"),
        ("at_micros", "timestamptz"),
        ("local_at", "timestamp"),
        ("day", "date"),
        ("at_time", "time"),
        ("price", "decimal(9, 2)"),
        ("kind", "string"),
        ("tags", "list<string>"),
        ("attrs", "map<string, long>"),
        ("note", "string"),
    ] {
        assert_eq!(types[column], iceberg_type, "column {column}: {types}");
    }
    let address = types["address"].as_str().unwrap_or_default();
    assert!(
        address.starts_with("struct<") && address.contains("street") && address.contains("zip"),
        "{address}"
    );
    let nullable = &seen["nullable"];
    assert_eq!(
        (&nullable["id"], &nullable["note"]),
        (&json!(false), &json!(true)),
        "a field is optional exactly when its type is a union with null"
    );
    assert_record_seven(&seen);
    assert_eq!(seen["seven"]["at_time"], "12:07:00.000007");
    Ok(())
}

/// The key schema of the keyed Avro tests: a record of the id and a region.
fn key_record_schema() -> String {
    json!({"type": "record", "name": "OrderKey", "namespace": "shop", "fields": [
        {"name": "id", "type": "long"}, {"name": "region", "type": "string"}]})
    .to_string()
}

#[tokio::test]
async fn avro_record_keys_become_a_struct_key_column_in_delta() -> anyhow::Result<()> {
    let location = std::env::temp_dir().join(unique("kt-avro-keys-delta"));
    let s = Setup::new(
        "avro-keys-delta",
        json!({"format": "delta", "location": format!("file://{}", location.display())}),
    )
    .await?
    .key_format("avro")?;
    let schema = order_schema(&order_fields());
    let keys = key_record_schema();
    produce_avro_keyed(
        &s.env,
        &s.env.registry_url,
        &s.topic.name,
        &schema,
        &keys,
        0..RECORDS,
    )?;
    let _ingester = s.start()?;
    let path = location.display().to_string();
    let seen = s.expect_all(|| read_delta(&s.env, &path)).await;
    let key_type = &seen["types"]["_kafka_key"];
    assert_eq!(key_type["type"], "struct", "{key_type}");
    let fields: Vec<(&str, &str)> = key_type["fields"]
        .as_array()
        .map(|f| {
            f.iter()
                .map(|f| {
                    (
                        f["name"].as_str().unwrap_or(""),
                        f["type"].as_str().unwrap_or(""),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(fields, [("id", "long"), ("region", "string")], "{key_type}");
    assert_eq!(seen["key7"], json!({"id": 7, "region": "r1"}));
    assert_record_seven(&seen);
    Ok(())
}

#[tokio::test]
async fn avro_string_keys_become_a_string_key_column_in_iceberg() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let namespace = unique("avrokeys").replace('-', "_");
    let table = iceberg_table(&env, &namespace);
    let s = Setup::new("avro-keys-iceberg", table)
        .await?
        .key_format("avro")?;
    let schema = order_schema(&order_fields());
    produce_avro_keyed(
        &s.env,
        &s.env.registry_url,
        &s.topic.name,
        &schema,
        r#""string""#,
        0..RECORDS,
    )?;
    let _ingester = s.start()?;
    let seen = s.expect_all(|| read_iceberg(&s.env, &namespace)).await;
    assert_eq!(seen["types"]["_kafka_key"], "string", "{seen}");
    assert_eq!(seen["key7"], "7");
    assert_record_seven(&seen);
    Ok(())
}

/// Record 7 of the JSON Schema orders as the readers print it.
fn assert_json_record_seven(seen: &Value) {
    let seven = &seen["seven"];
    assert_eq!(seven["name"], "n7");
    assert_eq!(seven["at"], "2026-01-01 00:00:07+00:00", "{seven}");
    assert_eq!(seven["at_micros"], "2026-01-01 00:00:07.000007+00:00");
    assert_eq!(seven["day"], "2026-01-08");
    assert_eq!(seven["price"], json!(7.25));
    assert_eq!(seven["kind"], "PAID");
    assert_eq!(seven["tags"], json!(["t2", "x"]));
    assert_eq!(seven["address"], json!({"street": "s7", "zip": 10007}));
    assert_eq!(seven["note"], Value::Null, "a oneOf with null is null");
    let mut attrs: Vec<(String, i64)> =
        serde_json::from_value(seven["attrs"].clone()).unwrap_or_default();
    attrs.sort();
    assert_eq!(attrs, [("qty".into(), 0), ("rank".into(), 7)], "{seven}");
}

#[tokio::test]
async fn json_schema_from_the_confluent_serializer_into_delta_with_its_types() -> anyhow::Result<()>
{
    let location = std::env::temp_dir().join(unique("kt-jsonschema-delta"));
    let s = Setup::with_format(
        "jsonschema-delta",
        "jsonSchema",
        json!({"format": "delta", "location": format!("file://{}", location.display())}),
    )
    .await?;
    produce_json_schema(
        &s.env,
        &s.env.registry_url,
        &s.topic.name,
        &order_json_schema(),
        0..RECORDS,
    )?;
    let _ingester = s.start()?;
    let path = location.display().to_string();
    let seen = s.expect_all(|| read_delta(&s.env, &path)).await;
    let types = &seen["types"];
    for (column, delta_type) in [
        ("id", "long"),
        ("name", "string"),
        ("at", "timestamp"),
        ("at_micros", "timestamp"),
        ("day", "date"),
        ("price", "double"),
        ("kind", "string"),
        ("note", "string"),
    ] {
        assert_eq!(types[column], delta_type, "column {column}: {types}");
    }
    assert_eq!(types["tags"]["elementType"], "string", "{types}");
    assert_eq!(
        (&types["attrs"]["keyType"], &types["attrs"]["valueType"]),
        (&json!("string"), &json!("long"))
    );
    assert_eq!(types["address"]["type"], "struct", "{types}");
    let nullable = &seen["nullable"];
    assert_eq!(
        (&nullable["id"], &nullable["at"], &nullable["note"]),
        (&json!(false), &json!(false), &json!(true)),
        "a field may be null exactly when it is not required or its type admits null"
    );
    assert_json_record_seven(&seen);
    Ok(())
}

#[tokio::test]
async fn json_schema_from_the_confluent_serializer_into_iceberg_with_its_types()
-> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let namespace = unique("jsonschema").replace('-', "_");
    let table = iceberg_table(&env, &namespace);
    let s = Setup::with_format("jsonschema-iceberg", "jsonSchema", table)
        .await?
        .key_format("string")?;
    produce_json_schema(
        &s.env,
        &s.env.registry_url,
        &s.topic.name,
        &order_json_schema(),
        0..RECORDS,
    )?;
    let _ingester = s.start()?;
    let seen = s.expect_all(|| read_iceberg(&s.env, &namespace)).await;
    let types = &seen["types"];
    for (column, iceberg_type) in [
        ("id", "long"),
        ("at", "timestamptz"),
        ("day", "date"),
        ("price", "double"),
        ("tags", "list<string>"),
        ("attrs", "map<string, long>"),
        ("note", "string"),
        ("_kafka_key", "string"),
    ] {
        assert_eq!(types[column], iceberg_type, "column {column}: {types}");
    }
    assert_eq!(seen["key7"], "7", "keyFormat string: the key as text");
    assert!(
        types["address"]
            .as_str()
            .unwrap_or_default()
            .starts_with("struct<"),
        "{types}"
    );
    assert_eq!(seen["nullable"]["id"], json!(false), "{seen}");
    assert_json_record_seven(&seen);
    Ok(())
}

/// Record 7 of the Protobuf orders as the readers print it.
fn assert_proto_record_seven(seen: &Value) {
    let seven = &seen["seven"];
    assert_eq!(seven["name"], "n7");
    assert_eq!(seven["at"], "2026-01-01 00:00:07.000007+00:00", "{seven}");
    assert_eq!(seven["kind"], "PAID", "enums are their value names");
    assert_eq!(seven["tags"], json!(["t2", "x"]));
    assert_eq!(
        seven["address"],
        json!({"street": "s7", "zip": 10007}),
        "the wrapper is its value"
    );
    assert_eq!(seven["note"], Value::Null, "an unset optional is null");
    assert_eq!(seven["price"], json!(7.25));
    assert_eq!(
        seven["big"], "9223372036854775815",
        "uint64 beyond long, exactly"
    );
    assert_eq!(seven["small"], json!(-7));
    let mut attrs: Vec<(String, i64)> =
        serde_json::from_value(seven["attrs"].clone()).unwrap_or_default();
    attrs.sort();
    assert_eq!(attrs, [("qty".into(), 0), ("rank".into(), 7)], "{seven}");
}

#[tokio::test]
async fn protobuf_from_the_confluent_serializer_into_delta_with_its_types() -> anyhow::Result<()> {
    let location = std::env::temp_dir().join(unique("kt-protobuf-delta"));
    let s = Setup::with_format(
        "protobuf-delta",
        "protobuf",
        json!({"format": "delta", "location": format!("file://{}", location.display())}),
    )
    .await?;
    produce_protobuf(&s.env, &s.env.registry_url, &s.topic.name, 0..RECORDS, None)?;
    let _ingester = s.start()?;
    let path = location.display().to_string();
    let seen = s.expect_all(|| read_delta(&s.env, &path)).await;
    let types = &seen["types"];
    for (column, delta_type) in [
        ("id", "long"),
        ("name", "string"),
        ("at", "timestamp"),
        ("kind", "string"),
        ("note", "string"),
        ("price", "double"),
        ("big", "decimal(20,0)"),
        ("small", "integer"),
    ] {
        assert_eq!(types[column], delta_type, "column {column}: {types}");
    }
    assert_eq!(types["tags"]["elementType"], "string", "{types}");
    assert_eq!(
        (&types["attrs"]["keyType"], &types["attrs"]["valueType"]),
        (&json!("string"), &json!("long"))
    );
    assert_eq!(types["address"]["type"], "struct", "{types}");
    let nullable = &seen["nullable"];
    assert_eq!(
        (&nullable["id"], &nullable["at"], &nullable["note"]),
        (&json!(false), &json!(true), &json!(true)),
        "nullable exactly where Protobuf tracks presence"
    );
    assert_proto_record_seven(&seen);
    Ok(())
}

#[tokio::test]
async fn protobuf_from_the_confluent_serializer_into_iceberg_with_its_types() -> anyhow::Result<()>
{
    let env = TestEnv::load()?;
    let namespace = unique("protobuf").replace('-', "_");
    let table = iceberg_table(&env, &namespace);
    let s = Setup::with_format("protobuf-iceberg", "protobuf", table).await?;
    // The schema as .proto text in the registry, as Java serializers register it (the Python
    // one registers a base64 descriptor, as in the Delta test).
    let subject = format!("{}-value", s.topic.name);
    let id = register(&s.env.registry_url, &subject, "PROTOBUF", ORDER_PROTO).await?;
    produce_protobuf(
        &s.env,
        &s.env.registry_url,
        &s.topic.name,
        0..RECORDS,
        Some(id),
    )?;
    let _ingester = s.start()?;
    let seen = s.expect_all(|| read_iceberg(&s.env, &namespace)).await;
    let types = &seen["types"];
    for (column, iceberg_type) in [
        ("id", "long"),
        ("at", "timestamptz"),
        ("kind", "string"),
        ("price", "double"),
        ("big", "decimal(20, 0)"),
        ("small", "int"),
        ("tags", "list<string>"),
        ("attrs", "map<string, long>"),
        ("note", "string"),
    ] {
        assert_eq!(types[column], iceberg_type, "column {column}: {types}");
    }
    assert!(
        types["address"]
            .as_str()
            .unwrap_or_default()
            .starts_with("struct<"),
        "{types}"
    );
    assert_eq!(seen["nullable"]["id"], json!(false), "{seen}");
    assert_proto_record_seven(&seen);
    Ok(())
}

/// The serializer of an evolution test, and its three schema versions: v1 the orders, v2 with
/// two new optional fields (one of them a record) and one inside the `address` record, v3 v2
/// without the required field `name`.
#[derive(Clone, Copy)]
enum Serializer {
    Avro,
    JsonSchema,
}

impl Serializer {
    /// How the ingester's messages name the schema language.
    fn named(self) -> &'static str {
        match self {
            Self::Avro => "Avro",
            Self::JsonSchema => "JSON",
        }
    }

    fn schema(self, version: u8) -> String {
        match self {
            Self::Avro => {
                let mut fields = order_fields();
                if version >= 2 {
                    for f in &mut fields {
                        if f["name"] == "address" {
                            f["type"]["fields"].as_array_mut().into_iter().for_each(|a| {
                                a.push(json!({"name": "floor", "type": ["null", "int"], "default": null}));
                            });
                        }
                    }
                    fields.push(json!({"name": "qty", "type": ["null", "int"], "default": null}));
                    fields.push(json!({"name": "shipping", "default": null, "type": ["null", {"type": "record",
                        "name": "Shipping", "fields": [{"name": "carrier", "type": "string"}, {"name": "days", "type": "int"}]}]}));
                }
                if version >= 3 {
                    fields.retain(|f| f["name"] != "name");
                }
                order_schema(&fields)
            }
            Self::JsonSchema => {
                let mut schema: Value =
                    serde_json::from_str(&order_json_schema()).unwrap_or_default();
                if version >= 2 {
                    schema["definitions"]["Address"]["properties"]["floor"] =
                        json!({"type": "integer"});
                    schema["properties"]["qty"] = json!({"type": "integer"});
                    schema["properties"]["shipping"] = json!({"type": "object",
                        "required": ["carrier", "days"],
                        "properties": {"carrier": {"type": "string"}, "days": {"type": "integer"}}});
                }
                if version >= 3 {
                    if let Some(p) = schema["properties"].as_object_mut() {
                        p.remove("name");
                    }
                    if let Some(r) = schema["required"].as_array_mut() {
                        r.retain(|f| f != "name");
                    }
                }
                schema.to_string()
            }
        }
    }

    fn produce(self, s: &Setup, version: u8, ids: std::ops::Range<usize>) -> anyhow::Result<()> {
        let (env, topic, schema) = (&s.env, &s.topic.name, self.schema(version));
        match self {
            Self::Avro => produce_avro(env, &env.registry_url, topic, &schema, ids)?,
            Self::JsonSchema => produce_json_schema(env, &env.registry_url, topic, &schema, ids)?,
        }
        Ok(())
    }
}

/// `schemaRegistry.tableSchema` without a version (the latest of `<topic>-value`): a new table
/// takes its columns from that version as the ingester starts, before any record of it
/// arrives, and the v1 records land with v2's columns null.
#[tokio::test]
async fn the_latest_subject_version_gives_a_new_table_its_columns() -> anyhow::Result<()> {
    let location = std::env::temp_dir().join(unique("kt-avro-latest"));
    let s = Setup::new(
        "avro-latest",
        json!({"format": "delta", "location": format!("file://{}", location.display())}),
    )
    .await?
    .edit(|spec| spec["source"]["schemaRegistry"]["tableSchema"] = json!({}))?;
    Serializer::Avro.produce(&s, 1, 0..RECORDS)?;
    let subject = format!("{}-value", s.topic.name);
    register(
        &s.env.registry_url,
        &subject,
        "AVRO",
        &Serializer::Avro.schema(2),
    )
    .await?;
    let _ingester = s.start()?;
    let path = location.display().to_string();
    let seen = s.expect_all(|| read_delta(&s.env, &path)).await;
    let added: Vec<(u64, Value, Value, Value)> =
        serde_json::from_value(seen["added"].clone()).unwrap_or_default();
    assert_eq!(
        added.len(),
        RECORDS,
        "v2's columns are in the table: {seen}"
    );
    assert!(
        added.iter().all(|(_, qty, shipping, floor)| qty.is_null()
            && shipping.is_null()
            && floor.is_null()),
        "v1 records read null in v2's columns"
    );
    assert_eq!(seen["types"]["qty"], "integer", "{seen}");
    assert_eq!(seen["types"]["shipping"]["type"], "struct", "{seen}");
    assert_eq!(
        seen["seven"]["address"],
        json!({"street": "s7", "zip": 10007, "floor": null}),
        "v2's field inside address is there too"
    );
    Ok(())
}

/// The schema of the widening tests: `wide` an int, or (`long`) a long.
fn wide_schema(long: bool) -> String {
    let wide = if long { "long" } else { "int" };
    order_schema(&[
        json!({"name": "id", "type": "long"}),
        json!({"name": "wide", "type": wide}),
    ])
}

/// Records whose `wide` field is an int, then (the ingester running) records of a schema that
/// makes it a long, with values past int's range: the Iceberg table's column is widened to
/// long (its field id kept), and every value reads back as written.
async fn widen_iceberg(s: &Setup, read: impl Fn() -> Option<Value>) -> anyhow::Result<()> {
    let (url, topic) = (&s.env.registry_url, &s.topic.name);
    produce_avro(&s.env, url, topic, &wide_schema(false), 0..300)?;
    let _ingester = s.start()?;
    eventually("300 int rows", DEADLINE, || async {
        (read()?["rows"].as_u64()? >= 300).then_some(())
    })
    .await;
    produce_avro(&s.env, url, topic, &wide_schema(true), 10_000..10_300)?;
    let seen = eventually("600 rows", DEADLINE, || async {
        let seen = read()?;
        (seen["rows"].as_u64()? >= 600).then_some(seen)
    })
    .await;
    assert_eq!(seen["rows"], json!(600), "no row twice");
    assert_eq!(
        seen["types"]["wide"], "long",
        "the column is widened: {seen}"
    );
    let expected: Vec<i64> = (0..300)
        .chain((10_000..10_300).map(|i| i * 10_000_000_000))
        .collect();
    assert_eq!(seen["wide"], json!(expected), "every value as written");
    Ok(())
}

#[tokio::test]
async fn a_column_written_wider_widens_the_iceberg_table_of_a_rest_catalog() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let namespace = unique("avro_widen").replace('-', "_");
    let table = iceberg_table(&env, &namespace);
    let s = Setup::new("avro-widen-iceberg", table).await?;
    widen_iceberg(&s, || read_iceberg(&s.env, &namespace)).await
}

#[tokio::test]
async fn a_column_written_wider_widens_the_iceberg_table_of_a_sql_catalog() -> anyhow::Result<()> {
    let dir = WorkDir::new("kt-widen-sql")?;
    std::fs::create_dir_all(dir.join("warehouse"))?;
    let (table, read) = iceberg_sql_table(&dir);
    let s = Setup::new("avro-widen-sql", table).await?;
    widen_iceberg(&s, || read(&s.env)).await
}

/// The same on Delta: delta-rs writes no type widening, so the ingester stops at the first
/// long record, saying so, and commits nothing of it.
#[tokio::test]
async fn a_column_written_wider_stops_a_delta_table_saying_why() -> anyhow::Result<()> {
    let location = std::env::temp_dir().join(unique("kt-avro-widen-delta"));
    let s = Setup::new(
        "avro-widen-delta",
        json!({"format": "delta", "location": format!("file://{}", location.display())}),
    )
    .await?;
    let (url, topic) = (&s.env.registry_url, &s.topic.name);
    produce_avro(&s.env, url, topic, &wide_schema(false), 0..300)?;
    let mut ingester = s.start()?;
    let path = location.display().to_string();
    let read = || read_delta(&s.env, &path);
    eventually("300 int rows", DEADLINE, || async {
        (read()?["rows"].as_u64()? >= 300).then_some(())
    })
    .await;
    produce_avro(&s.env, url, topic, &wide_schema(true), 10_000..10_030)?;
    let log = stopped(&mut ingester).await;
    assert!(
        log.contains("field wide") && log.contains("widening a Delta table's is not implemented"),
        "the error says why:\n{log}"
    );
    assert_eq!(
        read().unwrap_or_default()["rows"],
        json!(300),
        "nothing of the long records"
    );
    Ok(())
}

/// v1 records, then (while the ingester runs) v2 records with two new optional fields, one of
/// them a record, and one inside an existing record: the table gains the columns and the
/// nested field, the v1 rows read null in them, and every record is there once. Then v3 drops a required field: the ingester stops, naming the field,
/// v3's schema id and v2's, and commits nothing of v3. Returns what the reader saw at the end.
async fn evolve(
    s: &Setup,
    serializer: Serializer,
    read: impl Fn() -> Option<Value>,
) -> anyhow::Result<Value> {
    const V2_FROM: usize = RECORDS / 2;
    serializer.produce(s, 1, 0..V2_FROM)?;
    let mut ingester = s.start()?;
    eventually(&format!("{V2_FROM} v1 rows"), DEADLINE, || async {
        (read()?["rows"].as_u64()? as usize >= V2_FROM).then_some(())
    })
    .await;
    serializer.produce(s, 2, V2_FROM..RECORDS)?;
    let seen = s.expect_all(&read).await;
    let added: Vec<(u64, Value, Value, Value)> =
        serde_json::from_value(seen["added"].clone()).unwrap_or_default();
    assert_eq!(added.len(), RECORDS, "the added columns are read: {seen}");
    for (id, qty, shipping, floor) in added {
        let id = id as usize;
        if id < V2_FROM {
            assert_eq!(
                (&qty, &shipping, &floor),
                (&Value::Null, &Value::Null, &Value::Null),
                "v1 record {id} reads null"
            );
        } else {
            assert_eq!(qty, json!(id % 11), "record {id}");
            assert_eq!(
                floor,
                json!(id % 9),
                "record {id}: the field added inside address"
            );
            assert_eq!(
                shipping,
                json!({"carrier": format!("c{}", id % 3), "days": id % 5}),
                "record {id}"
            );
        }
    }
    assert_eq!(seen["nullable"]["qty"], json!(true), "{seen}");
    assert_eq!(seen["nullable"]["shipping"], json!(true), "{seen}");

    serializer.produce(s, 3, RECORDS..RECORDS + 30)?;
    let ids = schema_ids(&s.env.registry_url, &format!("{}-value", s.topic.name)).await?;
    let [_, v2_id, v3_id] = ids[..] else {
        anyhow::bail!("three versions of the value schema: {ids:?}");
    };
    let log = stopped(&mut ingester).await;
    let language = serializer.named();
    let named = format!(
        "field name is required by the table (as in {language} schema id {v2_id}), and {language} schema id {v3_id} does not have it"
    );
    assert!(
        log.contains(&named) && log.contains(&s.topic.name),
        "the error says {named:?}:\n{log}"
    );
    let after = read().unwrap_or_default();
    assert_eq!(after["rows"], json!(RECORDS), "nothing of v3 is committed");
    Ok(seen)
}

/// Waits until `ingester` stops, checks it failed, and returns its log.
async fn stopped(ingester: &mut IngesterProcess) -> String {
    let ingester_ref = &*ingester;
    let reason = eventually(
        "a partition to stop at a bad record",
        DEADLINE,
        || async move {
            let (_, body) = ingester_ref.get("/status").await?;
            let report: Value = serde_json::from_str(&body).ok()?;
            Some(report["stopped"][0]["reason"].as_str()?.to_string())
        },
    )
    .await;
    assert_eq!(ingester.exited(), None, "the ingester runs on: {reason}");
    let log = ingester.log_text();
    format!("{reason}\n{log}")
}

/// The ids of every version of `subject`, oldest first.
async fn schema_ids(registry: &str, subject: &str) -> anyhow::Result<Vec<u64>> {
    let versions: Vec<u64> = reqwest::get(format!("{registry}/subjects/{subject}/versions"))
        .await?
        .error_for_status()?
        .json()
        .await?;
    let mut ids = Vec::new();
    for version in versions {
        let answer: Value =
            reqwest::get(format!("{registry}/subjects/{subject}/versions/{version}"))
                .await?
                .error_for_status()?
                .json()
                .await?;
        ids.push(answer["id"].as_u64().unwrap_or_default());
    }
    Ok(ids)
}

#[tokio::test]
async fn avro_schema_evolution_adds_columns_to_delta() -> anyhow::Result<()> {
    let location = std::env::temp_dir().join(unique("kt-avro-evolve"));
    let s = Setup::new(
        "avro-evolve-delta",
        json!({"format": "delta", "location": format!("file://{}", location.display())}),
    )
    .await?;
    let path = location.display().to_string();
    let seen = evolve(&s, Serializer::Avro, || read_delta(&s.env, &path)).await?;
    assert_eq!(seen["types"]["qty"], "integer", "{seen}");
    assert_eq!(seen["types"]["shipping"]["type"], "struct", "{seen}");
    Ok(())
}

#[tokio::test]
async fn avro_schema_evolution_adds_columns_to_iceberg() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let namespace = unique("avro_evolve").replace('-', "_");
    let table = iceberg_table(&env, &namespace);
    let s = Setup::new("avro-evolve-iceberg", table).await?;
    let seen = evolve(&s, Serializer::Avro, || read_iceberg(&s.env, &namespace)).await?;
    assert_eq!(seen["types"]["qty"], "int", "{seen}");
    let shipping = seen["types"]["shipping"].as_str().unwrap_or_default();
    assert!(
        shipping.starts_with("struct<") && shipping.contains("carrier"),
        "{shipping}"
    );
    Ok(())
}

#[tokio::test]
async fn json_schema_evolution_adds_columns_to_iceberg() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let namespace = unique("jsonschema_evolve").replace('-', "_");
    let table = iceberg_table(&env, &namespace);
    let s = Setup::with_format("jsonschema-evolve-iceberg", "jsonSchema", table).await?;
    let seen = evolve(&s, Serializer::JsonSchema, || {
        read_iceberg(&s.env, &namespace)
    })
    .await?;
    assert_eq!(seen["types"]["qty"], "long", "{seen}");
    let address = seen["types"]["address"].as_str().unwrap_or_default();
    assert!(
        address.contains("floor"),
        "the field added inside address: {address}"
    );
    Ok(())
}

#[tokio::test]
async fn json_schema_evolution_adds_columns_to_delta() -> anyhow::Result<()> {
    let location = std::env::temp_dir().join(unique("kt-jsonschema-evolve"));
    let s = Setup::with_format(
        "jsonschema-evolve-delta",
        "jsonSchema",
        json!({"format": "delta", "location": format!("file://{}", location.display())}),
    )
    .await?;
    let path = location.display().to_string();
    let seen = evolve(&s, Serializer::JsonSchema, || read_delta(&s.env, &path)).await?;
    assert_eq!(seen["types"]["qty"], "long", "{seen}");
    assert_eq!(seen["types"]["shipping"]["type"], "struct", "{seen}");
    Ok(())
}
