//! Avro records written by an independent producer: the `confluent-kafka` Python package's
//! `AvroSerializer` against a real registry (it registers the schema under `<topic>-value` and
//! writes the Confluent wire format), each value made from its record id.

use serde_json::{Value, json};

use crate::env::TestEnv;
use crate::fixtures::{PythonError, python};

/// Produces (or, with `serialize`, prints as hex without producing) the records `first..first
/// + count`; the schema decides which of the fields made here are written.
const PRODUCER: &str = r#"
import json, sys
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
bootstrap, registry, topic, schema, first, count, mode = sys.argv[1:8]
first, count = int(first), int(count)
# Apicurio now and then leaves a registration unanswered when two arrive together: a request
# gives up after 15 s and the client retries it (registering a schema again returns its id).
client = SchemaRegistryClient({"url": registry, "timeout": 15, "max.retries": 4})
serialize = AvroSerializer(client, schema)
context = SerializationContext(topic, MessageField.VALUE)
base = datetime(2026, 1, 1, tzinfo=timezone.utc)

def record(i):
    return {
        "id": i,
        "name": f"n{i}",
        "at": base + timedelta(seconds=i),
        "at_micros": base + timedelta(seconds=i, microseconds=i),
        "local_at": datetime(2026, 1, 1) + timedelta(minutes=i),
        "day": date(2026, 1, 1) + timedelta(days=i % 365),
        "at_time": time(12, i % 60, 0, i % 1000),
        "price": Decimal(f"{i}.25"),
        "kind": ["NEW", "PAID", "SHIPPED"][i % 3],
        "tags": [f"t{i % 5}", "x"],
        "attrs": {"qty": i % 7, "rank": i},
        "address": {"street": f"s{i}", "zip": None if i % 4 == 0 else 10000 + i, "floor": i % 9},
        "note": None if i % 2 else f"note {i}",
        "qty": i % 11,
        "shipping": {"carrier": f"c{i % 3}", "days": i % 5},
        "score": i / 4,
    }

values = [(str(i), serialize(record(i), context)) for i in range(first, first + count)]
if mode == "serialize":
    print(json.dumps([v.hex() for _, v in values]))
    sys.exit(0)
producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
for key, value in values:
    producer.produce(topic, key=key, value=value)
    producer.poll(0)
left = producer.flush(60)
if left:
    sys.exit(f"{left} records were not delivered")
print(json.dumps({"produced": count}))
"#;

/// An Avro record schema `shop.Order` with `fields`.
pub fn order_schema(fields: &[Value]) -> String {
    json!({"type": "record", "name": "Order", "namespace": "shop", "fields": fields}).to_string()
}

/// The fields of the orders every Avro test starts from: logical types (timestamps in millis
/// and micros, a local timestamp, a date, a decimal), an enum, an array, a map, a nested record
/// with a nullable field, and a nullable union.
pub fn order_fields() -> Vec<Value> {
    vec![
        json!({"name": "id", "type": "long"}),
        json!({"name": "name", "type": "string"}),
        json!({"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}),
        json!({"name": "at_micros", "type": {"type": "long", "logicalType": "timestamp-micros"}}),
        json!({"name": "local_at", "type": {"type": "long", "logicalType": "local-timestamp-millis"}}),
        json!({"name": "day", "type": {"type": "int", "logicalType": "date"}}),
        json!({"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}}),
        json!({"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["NEW", "PAID", "SHIPPED"]}}),
        json!({"name": "tags", "type": {"type": "array", "items": "string"}}),
        json!({"name": "attrs", "type": {"type": "map", "values": "long"}}),
        json!({"name": "address", "type": {"type": "record", "name": "Address", "fields": [
            {"name": "street", "type": "string"},
            {"name": "zip", "type": ["null", "int"], "default": null}]}}),
        json!({"name": "note", "type": ["null", "string"], "default": null}),
    ]
}

/// Produces records `ids` of `schema` to `topic` (key: the id) with the Python serializer.
pub fn produce_avro(
    env: &TestEnv,
    registry_url: &str,
    topic: &str,
    schema: &str,
    ids: std::ops::Range<usize>,
) -> Result<(), PythonError> {
    run(env, registry_url, topic, schema, ids, "produce").map(drop)
}

/// The wire-format values of records `ids` of `schema`, as the Python serializer writes them
/// (registering the schema), without producing them.
pub fn serialize_avro(
    env: &TestEnv,
    registry_url: &str,
    topic: &str,
    schema: &str,
    ids: std::ops::Range<usize>,
) -> Result<Vec<Vec<u8>>, PythonError> {
    let out = run(env, registry_url, topic, schema, ids, "serialize")?;
    let hex: Vec<String> = serde_json::from_str(out.trim())
        .map_err(|e| PythonError::new(format!("serialized values: {e}: {out}")))?;
    hex.iter()
        .map(|h| {
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|e| PythonError::new(format!("serialized value {h}: {e}")))
        })
        .collect()
}

fn run(
    env: &TestEnv,
    registry_url: &str,
    topic: &str,
    schema: &str,
    ids: std::ops::Range<usize>,
    mode: &str,
) -> Result<String, PythonError> {
    let (first, count) = (ids.start.to_string(), ids.len().to_string());
    python(
        env,
        PRODUCER,
        &[
            &env.kafka_bootstrap,
            registry_url,
            topic,
            schema,
            &first,
            &count,
            mode,
        ],
    )
}
