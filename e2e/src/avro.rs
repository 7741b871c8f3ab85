//! Records written by an independent producer: the `confluent-kafka` Python package's
//! `AvroSerializer` or `JSONSerializer` (JSON Schema) against a real registry (it registers the
//! schema under `<topic>-value` and writes the Confluent wire format), each value made from its
//! record id.

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
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
bootstrap, registry, topic, schema, first, count, mode, kind, key_schema = sys.argv[1:10]
first, count = int(first), int(count)
# Apicurio now and then leaves a registration unanswered when two arrive together: a request
# gives up after 15 s and the client retries it (registering a schema again returns its id).
client = SchemaRegistryClient({"url": registry, "timeout": 15, "max.retries": 4})

def as_json(value, schema):
    """The value as JSON Schema's types have it: only the fields the schema declares, times
    and dates as ISO 8601 text, decimals as numbers."""
    if "$ref" in schema:
        schema = json_schema["definitions"][schema["$ref"].rsplit("/", 1)[1]]
    if isinstance(value, dict) and "properties" in schema:
        props = schema["properties"]
        return {k: as_json(v, props[k]) for k, v in value.items() if k in props}
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value

if kind == "avro":
    serialize = AvroSerializer(client, schema)
else:
    json_schema = json.loads(schema)
    to_json = JSONSerializer(schema, client)
    serialize = lambda r, c: to_json(as_json(r, json_schema), c)
context = SerializationContext(topic, MessageField.VALUE)
# Keys: the id as text, or Avro of `key_schema` (a record of the id and a region, or a string).
if key_schema:
    serialize_key = AvroSerializer(client, key_schema)
    key_context = SerializationContext(topic, MessageField.KEY)
    record_key = json.loads(key_schema) != "string"
    key_of = lambda i: serialize_key({"id": i, "region": f"r{i % 3}"} if record_key else str(i), key_context)
else:
    key_of = str
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
        # An int for the first ids, a long (past int's range) from id 10,000 on.
        "wide": i if i < 10_000 else i * 10_000_000_000,
    }

values = [(key_of(i), serialize(record(i), context)) for i in range(first, first + count)]
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
    run(env, registry_url, topic, schema, ids, "produce", "avro", "").map(drop)
}

/// [`produce_avro`] with Avro keys of `key_schema`: `"string"` (the id as text) or a record of
/// `id` (long) and `region` (string, `r<id % 3>`).
pub fn produce_avro_keyed(
    env: &TestEnv,
    registry_url: &str,
    topic: &str,
    schema: &str,
    key_schema: &str,
    ids: std::ops::Range<usize>,
) -> Result<(), PythonError> {
    run(
        env,
        registry_url,
        topic,
        schema,
        ids,
        "produce",
        "avro",
        key_schema,
    )
    .map(drop)
}

/// A JSON Schema of the orders: the fields of [`order_fields`] that JSON Schema has types for
/// (timestamps and dates as formatted strings, the decimal as a number), `required` where the
/// Avro field is not a union with null.
pub fn order_json_schema() -> String {
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Order",
        "type": "object",
        "additionalProperties": false,
        "required": ["id", "name", "at", "at_micros", "day", "price", "kind", "tags", "attrs", "address"],
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "at": {"type": "string", "format": "date-time"},
            "at_micros": {"type": "string", "format": "date-time"},
            "day": {"type": "string", "format": "date"},
            "price": {"type": "number"},
            "kind": {"type": "string", "enum": ["NEW", "PAID", "SHIPPED"]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "attrs": {"type": "object", "additionalProperties": {"type": "integer"}},
            "address": {"$ref": "#/definitions/Address"},
            "note": {"oneOf": [{"type": "null"}, {"type": "string"}]},
        },
        "definitions": {
            "Address": {
                "type": "object",
                "additionalProperties": false,
                "required": ["street"],
                "properties": {
                    "street": {"type": "string"},
                    "zip": {"type": ["null", "integer"]},
                },
            },
        },
    })
    .to_string()
}

/// Produces records `ids` of JSON Schema `schema` to `topic` (key: the id) with the Python
/// `JSONSerializer`, which checks each record against the schema.
pub fn produce_json_schema(
    env: &TestEnv,
    registry_url: &str,
    topic: &str,
    schema: &str,
    ids: std::ops::Range<usize>,
) -> Result<(), PythonError> {
    run(env, registry_url, topic, schema, ids, "produce", "json", "").map(drop)
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
    let out = run(
        env,
        registry_url,
        topic,
        schema,
        ids,
        "serialize",
        "avro",
        "",
    )?;
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

/// Runs [`PRODUCER`] in `mode` ("produce" or "serialize") with the serializer of `kind`
/// ("avro" or "json"), keys in Avro of `key_schema` (or, when empty, the id as text).
#[allow(clippy::too_many_arguments)]
fn run(
    env: &TestEnv,
    registry_url: &str,
    topic: &str,
    schema: &str,
    ids: std::ops::Range<usize>,
    mode: &str,
    kind: &str,
    key_schema: &str,
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
            kind,
            key_schema,
        ],
    )
}

/// Produces Protobuf orders with the `confluent-kafka` `ProtobufSerializer` (which registers the
/// file as a base64 descriptor, the well-known types it imports left to the reader). The message
/// type is built here from a descriptor, as `protoc` would generate it: `shop.Order` with a
/// timestamp, an enum, a repeated field, a map, a nested message with a wrapper, a proto3
/// `optional` field, a double, a uint64 and a sint32.
const PROTO_PRODUCER: &str = r#"
import json, sys
from datetime import datetime, timedelta, timezone
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf import timestamp_pb2, wrappers_pb2  # noqa: F401 (the pool needs them)
bootstrap, registry, topic, first, count, text_id = sys.argv[1:7]
first, count = int(first), int(count)
F = descriptor_pb2.FieldDescriptorProto

def field(name, number, kind, type_name=None, label=F.LABEL_OPTIONAL, **extra):
    f = F(name=name, number=number, type=kind, label=label, **extra)
    if type_name:
        f.type_name = type_name
    return f

file = descriptor_pb2.FileDescriptorProto(
    name="shop/orders.proto", package="shop", syntax="proto3",
    dependency=["google/protobuf/timestamp.proto", "google/protobuf/wrappers.proto"])
order = file.message_type.add(name="Order")
order.field.extend([
    field("id", 1, F.TYPE_INT64),
    field("name", 2, F.TYPE_STRING),
    field("at", 3, F.TYPE_MESSAGE, ".google.protobuf.Timestamp"),
    field("kind", 4, F.TYPE_ENUM, ".shop.Kind"),
    field("tags", 5, F.TYPE_STRING, label=F.LABEL_REPEATED),
    field("attrs", 6, F.TYPE_MESSAGE, ".shop.Order.AttrsEntry", label=F.LABEL_REPEATED),
    field("address", 7, F.TYPE_MESSAGE, ".shop.Address"),
    field("note", 8, F.TYPE_STRING, proto3_optional=True, oneof_index=0),
    field("price", 9, F.TYPE_DOUBLE),
    field("big", 10, F.TYPE_UINT64),
    field("small", 11, F.TYPE_SINT32),
])
order.oneof_decl.add(name="_note")
entry = order.nested_type.add(name="AttrsEntry")
entry.field.extend([field("key", 1, F.TYPE_STRING), field("value", 2, F.TYPE_INT64)])
entry.options.map_entry = True
address = file.message_type.add(name="Address")
address.field.extend([
    field("street", 1, F.TYPE_STRING),
    field("zip", 2, F.TYPE_MESSAGE, ".google.protobuf.Int32Value"),
])
kind = file.enum_type.add(name="Kind")
for number, symbol in enumerate(["NEW", "PAID", "SHIPPED"]):
    kind.value.add(name=symbol, number=number)
pool = descriptor_pool.Default()
pool.Add(file)
Order = message_factory.GetMessageClass(pool.FindMessageTypeByName("shop.Order"))

client = SchemaRegistryClient({"url": registry, "timeout": 15, "max.retries": 4})
to_wire = ProtobufSerializer(Order, client, {"use.deprecated.format": False})
if text_id == "-":
    context = SerializationContext(topic, MessageField.VALUE)
    serialize = to_wire
else:
    # The same message under the id of the same schema registered as .proto text (as Java
    # serializers register it): the serializer writes it under a scratch subject, and the id
    # in front is swapped.
    context = SerializationContext(topic + "-scratch", MessageField.VALUE)
    serialize = lambda m, c: b"\0" + int(text_id).to_bytes(4, "big") + to_wire(m, c)[5:]
base = datetime(2026, 1, 1, tzinfo=timezone.utc)

def record(i):
    m = Order(id=i, name=f"n{i}", kind=i % 3, price=i + 0.25, big=2**63 + i, small=-i)
    m.at.FromDatetime(base + timedelta(seconds=i, microseconds=i))
    m.tags.extend([f"t{i % 5}", "x"])
    m.attrs["qty"] = i % 7
    m.attrs["rank"] = i
    m.address.street = f"s{i}"
    if i % 4:
        m.address.zip.value = 10000 + i
    if i % 2 == 0:
        m.note = f"note {i}"
    return m

producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
for i in range(first, first + count):
    producer.produce(topic, key=str(i), value=serialize(record(i), context))
    producer.poll(0)
left = producer.flush(60)
if left:
    sys.exit(f"{left} records were not delivered")
print(json.dumps({"produced": count}))
"#;

/// Produces Protobuf orders `ids` to `topic` (key: the id) with the Python
/// `ProtobufSerializer` (see [`PROTO_PRODUCER`]); with `text_schema_id`, under the id of
/// [`ORDER_PROTO`] registered as text.
pub fn produce_protobuf(
    env: &TestEnv,
    registry_url: &str,
    topic: &str,
    ids: std::ops::Range<usize>,
    text_schema_id: Option<u64>,
) -> Result<(), PythonError> {
    let (first, count) = (ids.start.to_string(), ids.len().to_string());
    let text_id = text_schema_id.map_or_else(|| "-".to_string(), |id| id.to_string());
    let args = [
        env.kafka_bootstrap.as_str(),
        registry_url,
        topic,
        &first,
        &count,
        &text_id,
    ];
    python(env, PROTO_PRODUCER, &args).map(drop)
}

/// The orders of [`PROTO_PRODUCER`] as `.proto` text.
pub const ORDER_PROTO: &str = r#"syntax = "proto3";
package shop;

import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

message Order {
  int64 id = 1;
  string name = 2;
  google.protobuf.Timestamp at = 3;
  Kind kind = 4;
  repeated string tags = 5;
  map<string, int64> attrs = 6;
  Address address = 7;
  optional string note = 8;
  double price = 9;
  uint64 big = 10;
  sint32 small = 11;
}

message Address {
  string street = 1;
  google.protobuf.Int32Value zip = 2;
}

enum Kind {
  NEW = 0;
  PAID = 1;
  SHIPPED = 2;
}
"#;

/// Registers `schema` (of `schema_type`: AVRO, PROTOBUF, JSON) under `subject`, returning its id.
pub async fn register(
    registry_url: &str,
    subject: &str,
    schema_type: &str,
    schema: &str,
) -> anyhow::Result<u64> {
    let answer: Value = reqwest::Client::new()
        .post(format!("{registry_url}/subjects/{subject}/versions"))
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .json(&json!({"schemaType": schema_type, "schema": schema}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    answer["id"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("the registry answered {answer} for {subject}"))
}
