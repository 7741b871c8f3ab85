//! The `KafkaTable` custom resource: what the user applies.
//!
//! Doc comments on these types are the descriptions `kubectl explain` shows, so they are written
//! for users. Validation that the API server can do (enums, bounds, patterns, CEL rules) lives
//! here too, so that an invalid manifest is refused at apply time with a message that names the
//! field.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, EnvVar, ResourceRequirements, Toleration};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::status::KafkaTableStatus;

/// Librdkafka settings the ingester owns; `spec.source.consumerConfig` may not set them.
pub const DENIED_CONSUMER_KEYS: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "group.instance.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "partition.assignment.strategy",
    "group.protocol",
    "security.protocol",
    "isolation.level",
    "enable.partition.eof",
];

/// Prefixes of librdkafka settings that carry credentials; they come from Secrets only.
pub const DENIED_CONSUMER_PREFIXES: &[&str] = &["sasl.", "ssl.", "ssl_"];

/// A Kafka topic materialised into a Delta Lake or Apache Iceberg table, exactly once.
///
/// The operator runs ingester pods in one consumer group; each table commit carries the Kafka
/// offsets it covers, so restarts, rebalances and scaling neither lose nor duplicate records.
// Each printcolumn(...) repeats `type_ = ...`, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kafkatable.io",
    version = "v1alpha1",
    kind = "KafkaTable",
    plural = "kafkatables",
    shortname = "kt",
    category = "kafka",
    namespaced,
    status = "KafkaTableStatus",
    derive = "PartialEq",
    doc = "A Kafka topic materialised into a Delta Lake or Apache Iceberg table, exactly once.",
    validation = Rule::new("self.metadata.name.size() <= 54 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must be at most 54 lower-case letters, digits and '-', start with a letter and hold no dots: the ingester's Service is named <name>-ingester, a DNS label of at most 63 characters"),
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.replicas"),
    printcolumn(name = "Lag", type_ = "integer", json_path = ".status.lag.total"),
    printcolumn(
        name = "Version",
        type_ = "integer",
        json_path = ".status.tableVersion"
    ),
    printcolumn(
        name = "Last Commit",
        type_ = "date",
        json_path = ".status.lastCommitTime"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("!has(self.replicas) || !self.scaling.autoscale")
    .message("spec.replicas is only honoured with spec.scaling.autoscale: false (the built-in autoscaler sets the replica count); set autoscale to false to scale with kubectl scale, an HPA or KEDA")
    .field_path(".replicas")
    .reason(Reason::FieldValueForbidden))]
#[x_kube(validation = Rule::new("!has(self.errors.deadLetter) || !has(self.errors.deadLetter.topic) || self.errors.deadLetter.topic != self.source.topic")
    .message("spec.errors.deadLetter.topic must differ from spec.source.topic")
    .field_path(".errors.deadLetter.topic"))]
#[x_kube(validation = Rule::new("!has(self.table.keyFields) || self.table.keyFields.all(k, !k.startsWith('_kafka_key.') || self.source.keyFormat in ['json', 'avro', 'protobuf', 'jsonSchema'])")
    .message("spec.table.keyFields: a field of the key (_kafka_key.<field>) needs a structured spec.source.keyFormat (json, avro, protobuf or jsonSchema)")
    .field_path(".table.keyFields"))]
#[x_kube(validation = Rule::new("self.table.metadataColumns || !has(self.table.keyFields) || self.table.keyFields.all(k, k != '_kafka_key' && !k.startsWith('_kafka_key.'))")
    .message("spec.table.keyFields: _kafka_key is a metadata column: it needs spec.table.metadataColumns: true")
    .field_path(".table.keyFields"))]
#[x_kube(validation = Rule::new("self.source.keyFormat == 'bytes' || self.table.metadataColumns")
    .message("spec.source.keyFormat: the decoded key is stored in the _kafka_key metadata column, so it needs spec.table.metadataColumns: true")
    .field_path(".source.keyFormat"))]
#[x_kube(validation = Rule::new("self.table.mode != 'upsert' || self.source.format != 'bytes' && self.source.format != 'string'")
    .message("spec.table.mode upsert needs structured records (format json, avro, protobuf or jsonSchema) to read spec.table.keyFields from")
    .field_path(".table.mode"))]
#[serde(rename_all = "camelCase")]
pub struct KafkaTableSpec {
    /// The Kafka topic to read and how to decode it.
    pub source: Source,

    /// The table to write: format, location, catalog, write mode, schema and partitioning.
    pub table: Table,

    /// When buffered records are committed to the table.
    #[serde(default)]
    pub commit: Commit,

    /// What happens to records that cannot be decoded or written.
    #[serde(default)]
    pub errors: ErrorHandling,

    /// How many ingester pods run: by consumer lag (default) or as set in spec.replicas.
    #[serde(default)]
    pub scaling: Scaling,

    /// Number of ingester pods when spec.scaling.autoscale is false. `kubectl scale`, an HPA or
    /// KEDA set it through the scale subresource. Never more than the topic's partitions run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,

    /// Table housekeeping: compaction of small files, retention of old versions, checkpoints.
    #[serde(default)]
    pub maintenance: Maintenance,

    /// Settings of the ingester pods (image, resources, scheduling).
    #[serde(default)]
    pub ingester: IngesterPod,

    /// Stop ingesting: the ingesters are scaled to zero and status says so. The table and the
    /// committed offsets stay; resuming continues where ingestion stopped.
    #[serde(default)]
    pub suspend: bool,
}

// ------------------------------------------------------------------------------------ source

/// The Kafka topic to read and how to decode its records.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.startOffset == 'timestamp' ? has(self.startTimestamp) : !has(self.startTimestamp)")
    .message("spec.source.startTimestamp is required with startOffset: timestamp and not allowed otherwise")
    .field_path(".startTimestamp"))]
#[x_kube(validation = Rule::new("!(self.format in ['avro', 'protobuf', 'jsonSchema']) || has(self.schemaRegistry) || has(self.schema)")
    .message("spec.source.schemaRegistry is required for format avro, protobuf and jsonSchema (for avro and protobuf, spec.source.schema may give the schema instead)")
    .field_path(".schemaRegistry")
    .reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new("!has(self.schemaRegistry) || !has(self.schemaRegistry.tableSchema) || self.format in ['avro', 'protobuf', 'jsonSchema'] && !has(self.schema)")
    .message("spec.source.schemaRegistry.tableSchema applies to format avro, protobuf and jsonSchema with schemas from the registry (not spec.source.schema)")
    .field_path(".schemaRegistry.tableSchema"))]
#[x_kube(validation = Rule::new("!has(self.schema) || self.format in ['avro', 'protobuf']")
    .message("spec.source.schema applies to format avro and protobuf")
    .field_path(".schema"))]
#[x_kube(validation = Rule::new("!has(self.schema) || !has(self.schema.message) || self.format == 'protobuf'")
    .message("spec.source.schema.message names a Protobuf message type: it applies to format protobuf only")
    .field_path(".schema.message"))]
#[x_kube(validation = Rule::new("!(self.keyFormat in ['avro', 'protobuf', 'jsonSchema']) || has(self.schemaRegistry)")
    .message("spec.source.schemaRegistry is required for keyFormat avro, protobuf and jsonSchema")
    .field_path(".schemaRegistry")
    .reason(Reason::FieldValueRequired))]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// Bootstrap brokers as a comma-separated list of host:port, e.g. "kafka-0:9092,kafka-1:9092".
    #[schemars(
        length(min = 1, max = 4096),
        regex(pattern = r"^[^,\s]+:[0-9]{1,5}(,[^,\s]+:[0-9]{1,5})*$")
    )]
    pub brokers: String,

    /// Topic to ingest. Immutable: the table's progress is recorded per partition of this topic.
    #[schemars(length(min = 1, max = 249), regex(pattern = r"^[a-zA-Z0-9._-]+$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.source.topic is immutable: create a new KafkaTable for another topic"))]
    pub topic: String,

    /// Consumer group of the ingesters. Defaults to "kafkatable.<namespace>.<name>".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[a-zA-Z0-9._-]+$"))]
    pub consumer_group: Option<String>,

    /// Where to start when the table has no offsets for a partition yet.
    #[serde(default)]
    pub start_offset: StartOffset,

    /// With startOffset: timestamp, the first records read are those at or after this time
    /// (RFC 3339, e.g. "2026-01-01T00:00:00Z").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
    ))]
    pub start_timestamp: Option<String>,

    /// Encoding of the record values: json, avro, protobuf or jsonSchema (the last three in
    /// Confluent's wire format, writer schemas from schemaRegistry), string or bytes.
    #[serde(default)]
    pub format: Format,

    /// Encoding of the record keys, stored in the _kafka_key column: bytes (as they are, a
    /// binary column), string (UTF-8 text), or json, avro, protobuf or jsonSchema (a struct
    /// column with the key's fields; an Avro key of a primitive type is a column of that type).
    /// A key that does not decode is a bad record (see spec.errors). Changing it for an existing
    /// table is not implemented yet.
    #[serde(default)]
    pub key_format: KeyFormat,

    /// The value schema given with the KafkaTable, for avro and protobuf values written without
    /// a registry: each value is then the bare Avro body or Protobuf message, without
    /// Confluent's wire-format prefix. Read when the ingester starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<GivenSchema>,

    /// Confluent-compatible schema registry, required for avro, protobuf and jsonSchema.
    /// Schemas are read by the id each record carries and cached; while the registry does not
    /// answer, records wait (none is skipped) and the table is Degraded with reason
    /// RegistryUnreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_registry: Option<SchemaRegistry>,

    /// How to connect to the brokers: protocol, SASL and TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<Security>,

    /// Extra librdkafka consumer settings, e.g. {"fetch.max.bytes": "52428800"}. Settings the
    /// ingester owns (bootstrap.servers, group.id, enable.auto.commit, auto.offset.reset,
    /// partition.assignment.strategy, security.protocol, isolation.level, ...) and credentials
    /// (sasl.*, ssl.*) are refused: use the fields above and Secrets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 100))]
    #[x_kube(validation = Rule::new(consumer_config_rule()).message(consumer_config_message().as_str()).reason(Reason::FieldValueForbidden))]
    pub consumer_config: BTreeMap<String, String>,
}

fn consumer_config_rule() -> String {
    let keys: Vec<String> = DENIED_CONSUMER_KEYS
        .iter()
        .map(|k| format!("'{k}'"))
        .collect();
    let prefixes: Vec<String> = DENIED_CONSUMER_PREFIXES
        .iter()
        .map(|p| format!("!k.startsWith('{p}')"))
        .collect();
    format!(
        "self.all(k, !(k in [{}]) && {})",
        keys.join(", "),
        prefixes.join(" && ")
    )
}

fn consumer_config_message() -> String {
    format!(
        "spec.source.consumerConfig may not set {} or any {}* key: these come from the other spec fields and from Secrets",
        DENIED_CONSUMER_KEYS.join(", "),
        DENIED_CONSUMER_PREFIXES.join("*, ")
    )
}

/// Where to start reading a partition that has no offset in the table yet.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum StartOffset {
    /// The oldest record still in the topic.
    #[default]
    Earliest,
    /// Only records produced after the ingester first joins.
    Latest,
    /// The first record at or after spec.source.startTimestamp.
    Timestamp,
}

/// Encoding of the record values.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Format {
    /// JSON objects, one per record; Confluent's wire-format prefix is accepted too.
    #[default]
    Json,
    /// Avro in Confluent's wire format (schema id prefix); schemas from the registry.
    Avro,
    /// Protobuf in Confluent's wire format (schema id and message indexes); schemas (`.proto`
    /// text or descriptors) from the registry.
    Protobuf,
    /// JSON in Confluent's wire format; column types from the writer's JSON Schema in the
    /// registry, and a field the schema does not declare is refused.
    JsonSchema,
    /// UTF-8 text, stored in a single `value` column.
    String,
    /// Raw bytes, stored in a single `value` column.
    Bytes,
}

/// Encoding of the record keys.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum KeyFormat {
    /// The key as it is, in a binary column.
    #[default]
    Bytes,
    /// UTF-8 text.
    String,
    /// A JSON object; its fields become the key struct's fields.
    Json,
    /// Avro in Confluent's wire format; schemas from the registry.
    Avro,
    /// Protobuf in Confluent's wire format; schemas from the registry.
    Protobuf,
    /// JSON in Confluent's wire format; types from the writer's JSON Schema in the registry.
    JsonSchema,
}

/// A value schema given with the KafkaTable.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.text) != has(self.configMapKeyRef)")
    .message("spec.source.schema: give exactly one of text and configMapKeyRef"))]
#[serde(rename_all = "camelCase")]
pub struct GivenSchema {
    /// The schema itself: Avro JSON, or a `.proto` file (which may import the well-known
    /// types, google/protobuf/*.proto).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 262144))]
    pub text: Option<String>,

    /// A key of a ConfigMap in the KafkaTable's namespace that holds the schema, mounted into
    /// the ingester pods (a changed schema is read when they restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<ConfigMapKeyReference>,

    /// protobuf: the full name of the values' message type, e.g. "shop.Order". The file's
    /// first message when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 1024),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
    )]
    pub message: Option<String>,
}

/// A key of a ConfigMap in the KafkaTable's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyReference {
    /// Name of the ConfigMap.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,

    /// The key holding the schema.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// A Confluent-compatible schema registry.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SchemaRegistry {
    /// Base URL, e.g. "http://schema-registry:8081" or Apicurio's ".../apis/ccompat/v7".
    #[schemars(regex(pattern = r"^https?://[^\s]+$"))]
    pub url: String,

    /// Secret with keys `username` and `password` for HTTP basic authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretReference>,

    /// TLS towards an https registry: the CA its certificate is checked against (besides the
    /// system roots), and a client certificate for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,

    /// The subject version whose schema gives a new table its columns when the ingester starts,
    /// before any record arrives; records of other schema versions are conformed to it (see
    /// spec.table.schemaEvolution). Without it, the first record's writer schema does. An
    /// existing table's columns, and spec.table.columns, take precedence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_schema: Option<SubjectVersion>,
}

/// A version of a registry subject.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.subjectStrategy == 'topic' || has(self.recordName)")
    .message("spec.source.schemaRegistry.tableSchema.recordName is required with subjectStrategy record and topicRecord")
    .field_path(".recordName")
    .reason(Reason::FieldValueRequired))]
#[serde(rename_all = "camelCase")]
pub struct SubjectVersion {
    /// How the subject is named, as the producers' serializers name it
    /// (`subject.name.strategy`): topic is "<topic>-value", record the record's full name,
    /// topicRecord "<topic>-<record full name>".
    #[serde(default)]
    pub subject_strategy: SubjectStrategy,

    /// The full name of the record (Avro) or message type (Protobuf), e.g. "shop.Order":
    /// required with subjectStrategy record and topicRecord; for protobuf it also names the
    /// message of the schema (the first one without).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub record_name: Option<String>,

    /// The subject's version; the latest (as the ingester starts) when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub version: Option<i32>,
}

/// How a registry subject is named from the topic and the record.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SubjectStrategy {
    /// "<topic>-value".
    #[default]
    Topic,
    /// The record's full name.
    Record,
    /// "<topic>-<record full name>".
    TopicRecord,
}

/// Connection security towards the brokers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.protocol.startsWith('SASL_') == has(self.sasl)")
    .message("spec.source.security.sasl is required with protocol SASL_PLAINTEXT or SASL_SSL and not allowed otherwise")
    .field_path(".sasl"))]
#[x_kube(validation = Rule::new("self.protocol.endsWith('SSL') || !has(self.tls)")
    .message("spec.source.security.tls needs protocol SSL or SASL_SSL")
    .field_path(".tls"))]
#[serde(rename_all = "camelCase")]
pub struct Security {
    /// Protocol of the broker listener.
    #[serde(default)]
    pub protocol: SecurityProtocol,

    /// SASL authentication; required with SASL_PLAINTEXT and SASL_SSL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<Sasl>,

    /// TLS settings for SSL and SASL_SSL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
}

/// Protocol of the broker listener.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SecurityProtocol {
    #[default]
    #[serde(rename = "PLAINTEXT")]
    Plaintext,
    #[serde(rename = "SSL")]
    Ssl,
    #[serde(rename = "SASL_PLAINTEXT")]
    SaslPlaintext,
    #[serde(rename = "SASL_SSL")]
    SaslSsl,
}

/// SASL authentication with credentials from a Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Sasl {
    /// SASL mechanism.
    pub mechanism: SaslMechanism,

    /// Secret with keys `username` and `password`.
    pub credentials_secret_ref: SecretReference,
}

/// SASL mechanism.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

/// TLS towards the brokers (or the schema registry).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Tls {
    /// Secret with the CA certificate (PEM) under key `ca.crt`; the system roots otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretReference>,

    /// Secret of type kubernetes.io/tls (`tls.crt`, `tls.key`) for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_secret_ref: Option<SecretReference>,
}

/// A Secret in the KafkaTable's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Name of the Secret.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
}

// ------------------------------------------------------------------------------------- table

/// The table to write.
// Lists without a default are absent when empty, and CEL treats an absent field as an error:
// rules that read keyFields, columns or partitionBy guard them with has().
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.format != 'iceberg' || has(self.catalog)")
    .message("spec.table.catalog is required for format iceberg")
    .field_path(".catalog")
    .reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new("self.format != 'delta' || !has(self.catalog)")
    .message("spec.table.catalog applies to format iceberg only; a Delta table is found by its location")
    .field_path(".catalog")
    .reason(Reason::FieldValueForbidden))]
#[x_kube(validation = Rule::new("self.format != 'delta' || has(self.location)")
    .message("spec.table.location is required for format delta (s3://bucket/path or file:///path)")
    .field_path(".location")
    .reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new("self.mode != 'upsert' || has(self.keyFields) && size(self.keyFields) > 0")
    .message("spec.table.keyFields is required with mode upsert: name the fields that identify a row")
    .field_path(".keyFields")
    .reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new("self.mode == 'upsert' || !has(self.keyFields) || size(self.keyFields) == 0")
    .message("spec.table.keyFields applies to mode upsert only")
    .field_path(".keyFields"))]
#[x_kube(validation = Rule::new("!has(self.columns) || !has(self.keyFields) || self.keyFields.all(k, k == '_kafka_key' || k.startsWith('_kafka_key.') || self.columns.exists(c, c.name == k))")
    .message("every spec.table.keyFields entry must be one of spec.table.columns, _kafka_key or a field of a decoded key (_kafka_key.<field>)")
    .field_path(".keyFields"))]
#[x_kube(validation = Rule::new("!has(self.partitionBy) || self.partitionBy.all(p, !(p.transform in ['year', 'month', 'day', 'hour']) || p.field == '_kafka_timestamp' || has(self.eventTime) && p.field == self.eventTime.field)")
    .message("spec.table.partitionBy: year, month, day and hour partition a time: use the spec.table.eventTime field or _kafka_timestamp")
    .field_path(".partitionBy"))]
#[x_kube(validation = Rule::new("self.format == 'iceberg' || !has(self.partitionBy) || self.partitionBy.all(p, !p.transform.startsWith('bucket') && !p.transform.startsWith('truncate'))")
    .message("spec.table.partitionBy: bucket[N] and truncate[N] need format iceberg")
    .field_path(".partitionBy"))]
#[x_kube(validation = Rule::new("self.metadataColumns || !has(self.partitionBy) || self.partitionBy.all(p, !p.field.startsWith('_kafka_'))")
    .message("spec.table.partitionBy: _kafka_* fields exist only with metadataColumns: true")
    .field_path(".partitionBy"))]
#[x_kube(validation = Rule::new("self.format == oldSelf.format")
    .message("spec.table.format is immutable: create a new KafkaTable for another table")
    .field_path(".format"))]
#[x_kube(validation = Rule::new("has(self.location) == has(oldSelf.location) && (!has(self.location) || self.location == oldSelf.location)")
    .message("spec.table.location is immutable: create a new KafkaTable for another table")
    .field_path(".location"))]
// `namespace` is a CEL keyword: Kubernetes exposes the property as `__namespace__`.
#[x_kube(validation = Rule::new("!has(oldSelf.catalog) || has(self.catalog) && self.catalog.__namespace__ == oldSelf.catalog.__namespace__ && self.catalog.table == oldSelf.catalog.table")
    .message("spec.table.catalog.namespace and .table are immutable: create a new KafkaTable for another table")
    .field_path(".catalog"))]
#[x_kube(validation = Rule::new("self.mode == oldSelf.mode")
    .message("spec.table.mode is immutable: append and upsert tables differ in content")
    .field_path(".mode"))]
#[x_kube(validation = Rule::new("!has(self.columns) || !has(self.partitionBy) || self.partitionBy.all(p, p.field.startsWith('_kafka_') || self.columns.exists(c, c.name == p.field))")
    .message("spec.table.partitionBy: with explicit spec.table.columns, every partition field must be one of them (or a _kafka_ metadata column)")
    .field_path(".partitionBy"))]
#[x_kube(validation = Rule::new("!has(self.columns) || !has(self.eventTime) || self.columns.exists(c, c.name == self.eventTime.field)")
    .message("spec.table.eventTime.field: with explicit spec.table.columns, the event-time field must be one of them")
    .field_path(".eventTime.field"))]
#[serde(rename_all = "camelCase")]
pub struct Table {
    /// Table format. Immutable.
    pub format: TableFormat,

    /// Where the table lives: "s3://bucket/path" or "file:///absolute/path". Required for delta;
    /// for iceberg the catalog chooses when it is not set. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(s3|s3a|file)://[^\s]+$"))]
    pub location: Option<String>,

    /// Iceberg catalog holding the table; required for iceberg.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<Catalog>,

    /// Object store settings for s3:// locations (endpoint, region, credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Storage>,

    /// append: every record becomes a row (a stream); a tombstone (a record with a null value)
    /// has no row to become and is a bad record (see spec.errors). upsert (not implemented
    /// yet): the latest record per key (keyFields) is kept and a tombstone deletes the row (a
    /// changelog). Immutable.
    #[serde(default)]
    pub mode: WriteMode,

    /// Fields whose values identify a row in upsert mode (not implemented yet): columns, or
    /// the key (_kafka_key) or a field of a key decoded with spec.source.keyFormat
    /// (_kafka_key.<field>).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 255)))]
    pub key_fields: Vec<String>,

    /// Explicit table schema. When empty, the schema comes from the registry (avro, protobuf,
    /// jsonSchema) or is inferred from the first records (json).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub columns: Vec<Column>,

    /// The field that holds each record's event time, used for time partitioning and freshness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<EventTime>,

    /// Partition columns, in order. Time transforms (year, month, day, hour) apply to the
    /// eventTime field or to _kafka_timestamp; identity to any field; bucket[N] and truncate[N]
    /// (iceberg only) to any field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub partition_by: Vec<PartitionField>,

    /// Add _kafka_topic, _kafka_partition, _kafka_offset, _kafka_timestamp and _kafka_key
    /// columns to every row.
    #[serde(default = "default_true")]
    pub metadata_columns: bool,

    /// Add a _kafka_headers column: each record's headers as a map of string to binary (a
    /// header repeated in a record is repeated in the map, in the record's order).
    #[serde(default)]
    pub headers_column: bool,

    /// addColumns: fields that appear in records later are added to the table as nullable
    /// columns. none: the schema is fixed and unknown fields are an error (see spec.errors).
    #[serde(default)]
    pub schema_evolution: SchemaEvolution,
}

fn default_true() -> bool {
    true
}

/// Table format.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TableFormat {
    /// Delta Lake; offsets are recorded as `txn` actions in the same commit as the data.
    Delta,
    /// Apache Iceberg; offsets are recorded in the snapshot summary.
    Iceberg,
}

/// How records become rows.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum WriteMode {
    /// Every record is a new row.
    #[default]
    Append,
    /// The latest record per key is kept; tombstones delete.
    Upsert,
}

/// What happens when records carry fields the table does not have.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SchemaEvolution {
    /// New fields become new nullable columns.
    #[default]
    AddColumns,
    /// The schema is fixed.
    None,
}

/// An Iceberg catalog.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.type != 'rest' || self.uri.startsWith('http://') || self.uri.startsWith('https://')")
    .message("spec.table.catalog.uri of a rest catalog is an http(s) URL")
    .field_path(".uri"))]
#[x_kube(validation = Rule::new("self.type != 'sql' || self.uri.startsWith('sqlite:') || self.uri.startsWith('postgres://') || self.uri.startsWith('postgresql://')")
    .message("spec.table.catalog.uri of a sql catalog is a sqlite: or postgres:// URL")
    .field_path(".uri"))]
#[serde(rename_all = "camelCase")]
pub struct Catalog {
    /// Catalog kind: an Iceberg REST catalog, or a SQL (JDBC-style) catalog.
    #[serde(rename = "type")]
    pub type_: CatalogType,

    /// Catalog address: "http(s)://..." for rest, "sqlite:///path" or "postgres://..." for sql.
    #[schemars(length(min = 1))]
    pub uri: String,

    /// Catalog name. A SQL catalog stores it with every table it registers, so readers
    /// (Spark, Trino, pyiceberg) must connect with the same name. Defaults to "kafkatable".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub name: Option<String>,

    /// Warehouse: a location (s3://bucket/prefix) or a REST catalog's warehouse name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warehouse: Option<String>,

    /// Namespace of the table, created when missing. Dots separate levels ("analytics.raw").
    #[schemars(
        length(min = 1, max = 255),
        regex(pattern = r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")
    )]
    pub namespace: String,

    /// Table name, created when missing.
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[A-Za-z0-9_]+$"))]
    pub table: String,

    /// Secret with a `token` key (a REST catalog's bearer token), or `username` and `password`
    /// keys (a postgres or mysql SQL catalog's login, put into its URI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretReference>,
}

/// Catalog kind.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CatalogType {
    Rest,
    Sql,
}

/// Object store settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// S3 endpoint for S3-compatible stores (MinIO, Ceph, ...), e.g. "http://minio:9000".
    /// Empty for AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^\s]+$"))]
    pub endpoint: Option<String>,

    /// S3 region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,

    /// Address buckets by path (endpoint/bucket) instead of by host; most S3-compatible stores
    /// need this.
    #[serde(default)]
    pub path_style: bool,

    /// Secret with keys `accessKeyId` and `secretAccessKey`. Without it the pod's environment
    /// (for example IAM roles for service accounts) provides credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretReference>,
}

/// One column of an explicit table schema.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!self.type.startsWith('decimal(') || int(self.type.substring(8, self.type.indexOf(','))) <= 38 && int(self.type.substring(self.type.indexOf(',') + 1, self.type.size() - 1)) <= int(self.type.substring(8, self.type.indexOf(',')))")
    .message("decimal(P,S) needs a precision P of at most 38 and a scale S of at most P")
    .field_path(".type"))]
#[serde(rename_all = "camelCase")]
pub struct Column {
    /// Column name; for json, the top-level field it is read from.
    #[schemars(length(min = 1, max = 255))]
    pub name: String,

    /// Type: boolean, int, long, float, double, string, binary, date, timestamp (UTC
    /// microseconds), decimal(P,S), or list<T> of one of these.
    #[serde(rename = "type")]
    #[schemars(
        length(max = 32),
        regex(
            pattern = r"^(boolean|int|long|float|double|string|binary|date|timestamp|decimal\([1-9][0-9]?,[0-9][0-9]?\))$|^list<(boolean|int|long|float|double|string|binary|date|timestamp)>$"
        )
    )]
    pub type_: String,

    /// Whether the column may be null.
    #[serde(default = "default_true")]
    pub nullable: bool,
}

/// Where each record's event time is.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EventTime {
    /// Top-level field holding the event time.
    #[schemars(length(min = 1, max = 255))]
    pub field: String,

    /// How the field encodes the time.
    #[serde(default)]
    pub format: EventTimeFormat,
}

/// Encoding of an event time field.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum EventTimeFormat {
    /// Milliseconds since the Unix epoch.
    #[default]
    EpochMillis,
    /// Seconds since the Unix epoch.
    EpochSeconds,
    /// Microseconds since the Unix epoch.
    EpochMicros,
    /// An RFC 3339 string, e.g. "2026-11-21T12:00:00Z".
    Rfc3339,
}

/// One partition column.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PartitionField {
    /// Source field (or _kafka_timestamp / _kafka_partition with metadata columns).
    #[schemars(length(min = 1, max = 255))]
    pub field: String,

    /// identity, year, month, day, hour, bucket[N] (iceberg) or truncate[N] (iceberg).
    #[schemars(regex(
        pattern = r"^(identity|year|month|day|hour|bucket\[[1-9][0-9]{0,5}\]|truncate\[[1-9][0-9]{0,5}\])$"
    ))]
    pub transform: String,
}

// ------------------------------------------------------------------------------------ commit

/// When buffered records are committed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Commit {
    /// Longest time a record waits in an ingester before it is committed: the freshness
    /// bound. A duration such as "30s", "1m30s"; between 1s and 24h.
    #[serde(default = "default_interval")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('24h')")
        .message("spec.commit.interval must be between 1s and 24h"))]
    pub interval: String,

    /// Commit once this many records are buffered.
    #[serde(default = "default_max_records")]
    #[schemars(range(min = 1, max = 100_000_000))]
    pub max_records: i64,

    /// Commit once the next commit holds this many bytes in memory (records not yet decoded,
    /// Arrow chunks, the open Parquet files), as a quantity ("256Mi").
    #[serde(default = "default_max_bytes")]
    #[schemars(regex(pattern = QUANTITY_PATTERN))]
    pub max_bytes: String,

    /// Size the ingester aims at for each Parquet file, as a quantity ("128Mi").
    #[serde(default = "default_target_file_size")]
    #[schemars(regex(pattern = QUANTITY_PATTERN))]
    pub target_file_size: String,
}

/// A Go-style duration: "500ms", "30s", "1m30s", "2h".
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";
/// A byte quantity above zero: a number with an optional binary (Ki, Mi, Gi, Ti) or decimal (k,
/// M, G, T) suffix.
pub const QUANTITY_PATTERN: &str = r"^0*[1-9][0-9]*(Ki|Mi|Gi|Ti|k|M|G|T)?$";

fn default_interval() -> String {
    "60s".into()
}
fn default_max_records() -> i64 {
    1_000_000
}
fn default_max_bytes() -> String {
    "256Mi".into()
}
fn default_target_file_size() -> String {
    "128Mi".into()
}

impl Default for Commit {
    fn default() -> Self {
        Self {
            interval: default_interval(),
            max_records: default_max_records(),
            max_bytes: default_max_bytes(),
            target_file_size: default_target_file_size(),
        }
    }
}

// ------------------------------------------------------------------------------------ errors

/// What happens to records that cannot be decoded or written (bad records): a payload that does
/// not decode to exactly one row, a value that does not fit its column exactly, a field name
/// repeated within a record, an unknown schema id, a wrong magic byte, a record over
/// maxRecordBytes, a tombstone in append mode, an event time that cannot be read. A registry,
/// store or catalog that does not answer never makes a bad record: that is retried.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.policy == 'deadLetter' ? has(self.deadLetter) : !has(self.deadLetter)")
    .message("spec.errors.deadLetter is required with policy deadLetter and not allowed otherwise")
    .field_path(".deadLetter"))]
#[serde(rename_all = "camelCase")]
pub struct ErrorHandling {
    /// fail: the record's partition stops at it (the good records before it are committed,
    /// nothing at or after it is) while the other partitions go on; Degraded names the topic,
    /// partition, offset and reason, and the partition resumes there after a restart or a
    /// change of the spec. skip: count and log it (topic, partition, offset, reason), then go
    /// on. deadLetter: send it to deadLetter.topic (with headers naming the reason and its
    /// origin) or deadLetter.table (a row with its bytes, reason and origin), exactly once with
    /// the table (no record in both, none in neither), then go on.
    #[serde(default)]
    pub policy: ErrorPolicy,

    /// Where bad records go with policy deadLetter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetter>,

    /// A record whose key and value together are larger than this is a bad record, as a
    /// quantity ("4Mi").
    #[serde(default = "default_max_record_bytes")]
    #[schemars(regex(pattern = QUANTITY_PATTERN))]
    pub max_record_bytes: String,

    /// How many table commits may fail in a row before the table is Degraded and before the
    /// ingester gives up.
    #[serde(default)]
    pub commit_failures: CommitFailures,

    /// How many bad records may be skipped or dead-lettered within a window before the table
    /// is Degraded with reason DeadLetterRate.
    #[serde(default)]
    pub degraded_rate: DegradedRate,
}

/// A rate of bad records above which the table is Degraded.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DegradedRate {
    /// More bad records than this within the window make the table Degraded.
    #[serde(default = "default_rate_records")]
    #[schemars(range(min = 1))]
    pub records: i64,

    /// The window, a duration such as "5m"; between 10s and 24h.
    #[serde(default = "default_rate_window")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('10s') && duration(self) <= duration('24h')")
        .message("spec.errors.degradedRate.window must be between 10s and 24h"))]
    pub window: String,
}

impl Default for DegradedRate {
    fn default() -> Self {
        Self {
            records: default_rate_records(),
            window: default_rate_window(),
        }
    }
}

fn default_rate_records() -> i64 {
    100
}
fn default_rate_window() -> String {
    "5m".into()
}

/// The dead-letter target of bad records: a topic or a table, one of them.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.topic) != has(self.table)")
    .message("spec.errors.deadLetter needs exactly one of topic and table"))]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// Topic on the source's cluster (same brokers and security) that receives each bad
    /// record: its key, value, headers and timestamp as they came, with headers
    /// kafkatable.reason, kafkatable.error, kafkatable.topic, kafkatable.partition,
    /// kafkatable.offset, kafkatable.timestamp and kafkatable.table. It must exist. Written
    /// in Kafka transactions: read it with isolation.level=read_committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249), regex(pattern = r"^[a-zA-Z0-9._-]+$"))]
    pub topic: Option<String>,

    /// A table of the main table's format beside it that receives each bad record as a row:
    /// _kafka_topic, _kafka_partition, _kafka_offset, _kafka_timestamp, _kafka_key,
    /// _kafka_value (the bytes as they came), _kafka_headers, reason, error, kafkatable and
    /// dead_lettered_at. It keeps sync points of its own, committed before the main table's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<DeadLetterTable>,
}

/// Where the dead-letter table is.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterTable {
    /// Delta: the directory beside the table's location with this name; Iceberg: the table of
    /// this name in the same catalog and namespace. Default: the table's name (the last
    /// segment of its location) followed by "_dead_letters".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200), regex(pattern = r"^[a-zA-Z0-9_-]+$"))]
    pub name: Option<String>,
}

impl Default for ErrorHandling {
    fn default() -> Self {
        Self {
            policy: ErrorPolicy::default(),
            dead_letter: None,
            max_record_bytes: default_max_record_bytes(),
            commit_failures: CommitFailures::default(),
            degraded_rate: DegradedRate::default(),
        }
    }
}

/// Budgets of table commits that fail in a row (a store or catalog that refuses writes; one that
/// cannot be reached at all is reported as unreachable instead, and waited for).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CommitFailures {
    /// Failed commits in a row before the table is Degraded with reason CommitFailing.
    #[serde(default = "default_degraded_after")]
    #[schemars(range(min = 1, max = 1000))]
    pub degraded_after: i32,

    /// Failed commits in a row before the ingester exits and its pod is restarted (what it
    /// buffered is read again from Kafka); 0: never.
    #[serde(default = "default_exit_after")]
    #[schemars(range(min = 0, max = 100_000))]
    pub exit_after: i32,
}

impl Default for CommitFailures {
    fn default() -> Self {
        Self {
            degraded_after: default_degraded_after(),
            exit_after: default_exit_after(),
        }
    }
}

fn default_max_record_bytes() -> String {
    "4Mi".into()
}
fn default_degraded_after() -> i32 {
    3
}
fn default_exit_after() -> i32 {
    30
}

/// What to do with a bad record.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ErrorPolicy {
    /// Stop and report; commit nothing past the record.
    #[default]
    Fail,
    /// Count, log and go on.
    Skip,
    /// Send to the dead-letter topic and go on.
    DeadLetter,
}

// ----------------------------------------------------------------------------------- scaling

/// How many ingester pods run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.maxReplicas >= self.minReplicas")
    .message("spec.scaling.maxReplicas must be at least spec.scaling.minReplicas")
    .field_path(".maxReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct Scaling {
    /// Scale by consumer lag. Set to false to set spec.replicas yourself (kubectl scale, HPA,
    /// KEDA).
    #[serde(default = "default_true")]
    pub autoscale: bool,

    /// Fewest ingester pods. 0 lets an idle table scale to zero (see activationLag).
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_replicas: i32,

    /// Most ingester pods; never more than the topic's partitions run.
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,

    /// Target records of lag per ingester pod: desired = ceil(total lag / lagPerReplica).
    #[serde(default = "default_lag_per_replica")]
    #[schemars(range(min = 1))]
    pub lag_per_replica: i64,

    /// Lag above which the table scales up from minReplicas.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub activation_lag: i64,

    /// How long the lag must call for fewer pods before scaling down ("5m"); scaling up is
    /// immediate.
    #[serde(default = "default_stabilization")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub scale_down_stabilization: String,
}

fn default_min_replicas() -> i32 {
    1
}
fn default_max_replicas() -> i32 {
    12
}
fn default_lag_per_replica() -> i64 {
    100_000
}
fn default_stabilization() -> String {
    "300s".into()
}

impl Default for Scaling {
    fn default() -> Self {
        Self {
            autoscale: true,
            min_replicas: default_min_replicas(),
            max_replicas: default_max_replicas(),
            lag_per_replica: default_lag_per_replica(),
            activation_lag: 0,
            scale_down_stabilization: default_stabilization(),
        }
    }
}

// ------------------------------------------------------------------------------- maintenance

/// Table housekeeping.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Maintenance {
    /// Rewrite small files into larger ones (not implemented yet).
    #[serde(default)]
    pub compaction: Compaction,

    /// Remove old table versions and unreferenced files (not implemented yet).
    #[serde(default)]
    pub retention: Retention,

    /// Delta only: write a checkpoint every N table versions. Set as the table property
    /// delta.checkpointInterval when the ingester creates the table; an existing table keeps
    /// its own.
    #[serde(default = "default_checkpoint_interval")]
    #[schemars(range(min = 1, max = 10_000))]
    pub checkpoint_interval: i32,
}

fn default_checkpoint_interval() -> i32 {
    10
}

impl Default for Maintenance {
    fn default() -> Self {
        Self {
            compaction: Compaction::default(),
            retention: Retention::default(),
            checkpoint_interval: default_checkpoint_interval(),
        }
    }
}

/// Compaction of small files.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Compaction {
    /// Run compaction (not implemented yet: must stay false).
    #[serde(default)]
    pub enabled: bool,

    /// Size of compacted files ("512Mi").
    #[serde(default = "default_compacted_size")]
    #[schemars(regex(pattern = QUANTITY_PATTERN))]
    pub target_file_size: String,

    /// How often to compact ("1h").
    #[serde(default = "default_compaction_interval")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub interval: String,
}

fn default_compacted_size() -> String {
    "512Mi".into()
}
fn default_compaction_interval() -> String {
    "1h".into()
}

impl Default for Compaction {
    fn default() -> Self {
        Self {
            enabled: false,
            target_file_size: default_compacted_size(),
            interval: default_compaction_interval(),
        }
    }
}

/// Retention of old table versions. The versions that hold the latest sync points are always
/// kept.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Remove old versions and files (not implemented yet: must stay false).
    #[serde(default)]
    pub enabled: bool,

    /// Keep versions younger than this ("168h").
    #[serde(default = "default_retention")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub keep: String,
}

fn default_retention() -> String {
    "168h".into()
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            enabled: false,
            keep: default_retention(),
        }
    }
}

// ---------------------------------------------------------------------------------- ingester

/// Settings of the ingester pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IngesterPod {
    /// Ingester image; the operator's default when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// CPU and memory requests and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Extra environment variables (e.g. RUST_LOG).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,

    /// Node labels the pods must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations of the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Affinity of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// Service account of the pods (for cloud credentials such as IAM roles). The ingester
    /// needs no Kubernetes API access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,

    /// Extra labels on the pods (Kubernetes label keys and values).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    // Kubernetes' label syntax costs more in CEL than the API server allows (a map's keys have
    // no length bound in the schema); a label it refuses shows in the status, naming the
    // field, when the Deployment is refused.
    pub pod_labels: BTreeMap<String, String>,

    /// Extra annotations on the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,
}
