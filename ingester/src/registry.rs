//! A client of the Confluent-compatible schema-registry REST API (Confluent Schema Registry,
//! Apicurio's `/apis/ccompat/v7`, Redpanda, Karapace): schemas by id and by subject version,
//! with their references resolved, cached by id, and the Confluent wire format.
//!
//! A registry that does not answer is retried with exponential back-off and jitter for as long
//! as it takes: the records wait, none is skipped. The last failure stays readable
//! ([`Registry::unreachable`]) so that the ingester's `/status` can say why it waits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

/// How long the first retry waits; it doubles up to [`MAX_BACKOFF`], each wait jittered.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// References nest (a schema importing one that imports another); deeper than this is a cycle.
const MAX_REFERENCE_DEPTH: usize = 32;

/// The schema languages a registry holds (`schemaType`; absent means Avro).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SchemaKind {
    Avro,
    Protobuf,
    Json,
}

/// A schema as the registry holds it, with every schema it references, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    pub kind: SchemaKind,
    /// The schema text: Avro JSON, a `.proto` file, or a JSON Schema document.
    pub text: String,
    /// What the schema names (an Avro full name, a Protobuf import path), in the registry's
    /// order.
    pub references: Vec<Reference>,
}

/// One reference of a schema: the name it is imported by, and where the registry keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub name: String,
    pub subject: String,
    pub version: i32,
    pub schema: Arc<Schema>,
}

/// A subject's version to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Latest,
    Number(i32),
}

/// How a subject name is made from the topic and the record (the serializers'
/// `subject.name.strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectStrategy {
    /// `<topic>-value` / `<topic>-key`.
    Topic,
    /// The record's fully qualified name.
    Record,
    /// `<topic>-<record full name>`.
    TopicRecord,
}

impl SubjectStrategy {
    /// The subject of `topic`'s values (or keys) whose record is `record` (an Avro full name
    /// or a Protobuf message's full name); `None` when the strategy needs a record name and
    /// none is given.
    pub fn subject(self, topic: &str, record: Option<&str>, key: bool) -> Option<String> {
        match self {
            Self::Topic => Some(format!("{topic}-{}", if key { "key" } else { "value" })),
            Self::Record => record.map(str::to_string),
            Self::TopicRecord => record.map(|r| format!("{topic}-{r}")),
        }
    }
}

/// Why a schema could not be read. Only [`RegistryError::is_retryable`] failures are retried.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("schema registry {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("schema registry {url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("schema registry {url}: not found: {body}")]
    NotFound { url: String, body: String },
    #[error("schema registry {url}: the answer is not a schema: {reason}")]
    Malformed { url: String, reason: String },
    #[error(
        "schema registry: the references of {subject} nest deeper than {MAX_REFERENCE_DEPTH} (a cycle?)"
    )]
    ReferenceCycle { subject: String },
    #[error("schema registry client: {0}")]
    Client(String),
}

impl RegistryError {
    /// Whether waiting may help: the registry was not reached, or answered 5xx or 429.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// What `GET /schemas/ids/{id}` and `GET /subjects/{s}/versions/{v}` answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    /// The schema's id (in answers about a subject's version).
    #[serde(default)]
    id: Option<u32>,
    schema: String,
    #[serde(default)]
    schema_type: Option<SchemaKind>,
    #[serde(default)]
    references: Vec<AnswerReference>,
}

#[derive(Deserialize)]
struct AnswerReference {
    name: String,
    subject: String,
    version: i32,
}

/// A registry, its credentials, and the schemas read from it so far.
pub struct Registry {
    base: String,
    auth: Option<(String, String)>,
    http: reqwest::Client,
    by_id: Mutex<HashMap<u32, Arc<Schema>>>,
    by_version: Mutex<HashMap<(String, i32), Arc<Schema>>>,
    unreachable: Mutex<Option<String>>,
}

impl Registry {
    /// A client of the registry at `url`, with HTTP basic auth, a CA (PEM) to trust besides
    /// the system roots, and a client certificate with its key (PEM, for mutual TLS) when
    /// given.
    pub fn new(
        url: &str,
        auth: Option<(String, String)>,
        ca_pem: Option<&[u8]>,
        identity_pem: Option<&[u8]>,
    ) -> Result<Self, RegistryError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("kafkatable-ingester/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = ca_pem {
            let cert = reqwest::Certificate::from_pem(pem)
                .map_err(|e| RegistryError::Client(format!("the registry CA: {e}")))?;
            builder = builder.add_root_certificate(cert);
        }
        if let Some(pem) = identity_pem {
            let identity = reqwest::Identity::from_pem(pem).map_err(|e| {
                RegistryError::Client(format!("the registry client certificate: {e}"))
            })?;
            builder = builder.identity(identity);
        }
        let http = builder
            .build()
            .map_err(|e| RegistryError::Client(e.to_string()))?;
        Ok(Self {
            base: url.trim_end_matches('/').to_string(),
            auth,
            http,
            by_id: Mutex::new(HashMap::new()),
            by_version: Mutex::new(HashMap::new()),
            unreachable: Mutex::new(None),
        })
    }

    /// The last failure of a request that is being retried, until one succeeds.
    pub fn unreachable(&self) -> Option<String> {
        lock(&self.unreachable).clone()
    }

    /// The schema with registry id `id` (what a record's wire-format prefix names), its
    /// references resolved. Cached: a schema id never changes its schema.
    pub async fn by_id(&self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        if let Some(s) = lock(&self.by_id).get(&id) {
            return Ok(s.clone());
        }
        let answer: Answer = self.get(&format!("/schemas/ids/{id}")).await?;
        let schema = Arc::new(self.resolve(answer, &format!("schema id {id}"), 0).await?);
        lock(&self.by_id).insert(id, schema.clone());
        Ok(schema)
    }

    /// A subject's schema at `version` (the latest is read anew every call; numbered versions
    /// are cached, they never change).
    pub async fn version(
        &self,
        subject: &str,
        version: Version,
    ) -> Result<Arc<Schema>, RegistryError> {
        self.version_at(subject, version, 0).await
    }

    /// A subject's schema at `version` with its id, the one records written with it carry
    /// (the latest is read anew every call).
    pub async fn subject_version(
        &self,
        subject: &str,
        version: Version,
    ) -> Result<(u32, Arc<Schema>), RegistryError> {
        let v = match version {
            Version::Latest => "latest".to_string(),
            Version::Number(n) => n.to_string(),
        };
        let path = format!("/subjects/{}/versions/{v}", encode(subject));
        let answer: Answer = self.get(&path).await?;
        let id = answer.id.ok_or_else(|| RegistryError::Malformed {
            url: format!("{}{path}", self.base),
            reason: "the answer has no schema id".into(),
        })?;
        let schema = Arc::new(self.resolve(answer, subject, 0).await?);
        lock(&self.by_id).insert(id, schema.clone());
        Ok((id, schema))
    }

    async fn version_at(
        &self,
        subject: &str,
        version: Version,
        depth: usize,
    ) -> Result<Arc<Schema>, RegistryError> {
        if depth > MAX_REFERENCE_DEPTH {
            return Err(RegistryError::ReferenceCycle {
                subject: subject.to_string(),
            });
        }
        if let Version::Number(n) = version
            && let Some(s) = lock(&self.by_version).get(&(subject.to_string(), n))
        {
            return Ok(s.clone());
        }
        let v = match version {
            Version::Latest => "latest".to_string(),
            Version::Number(n) => n.to_string(),
        };
        let path = format!("/subjects/{}/versions/{v}", encode(subject));
        let answer: Answer = self.get(&path).await?;
        let schema = Arc::new(Box::pin(self.resolve(answer, subject, depth)).await?);
        if let Version::Number(n) = version {
            lock(&self.by_version).insert((subject.to_string(), n), schema.clone());
        }
        Ok(schema)
    }

    async fn resolve(
        &self,
        answer: Answer,
        what: &str,
        depth: usize,
    ) -> Result<Schema, RegistryError> {
        let mut references = Vec::with_capacity(answer.references.len());
        for r in answer.references {
            let schema = self
                .version_at(&r.subject, Version::Number(r.version), depth + 1)
                .await
                .map_err(|e| match e {
                    RegistryError::NotFound { url, body } => RegistryError::NotFound {
                        url,
                        body: format!("{body} (referenced by {what} as {})", r.name),
                    },
                    e => e,
                })?;
            references.push(Reference {
                name: r.name,
                subject: r.subject,
                version: r.version,
                schema,
            });
        }
        Ok(Schema {
            kind: answer.schema_type.unwrap_or(SchemaKind::Avro),
            text: answer.schema,
            references,
        })
    }

    /// GETs `path` until the registry answers; only retryable failures are retried.
    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, RegistryError> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.get_once(path).await {
                Ok(v) => {
                    *lock(&self.unreachable) = None;
                    return Ok(v);
                }
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "schema registry unavailable; records wait");
                    *lock(&self.unreachable) = Some(e.to_string());
                    tokio::time::sleep(jitter(backoff)).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn get_once<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, RegistryError> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .get(&url)
            .header("Accept", "application/vnd.schemaregistry.v1+json");
        if let Some((user, password)) = &self.auth {
            request = request.basic_auth(user, Some(password));
        }
        let response = request
            .send()
            .await
            .map_err(|source| RegistryError::Unreachable {
                url: url.clone(),
                source,
            })?;
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .map_err(|source| RegistryError::Unreachable {
                url: url.clone(),
                source,
            })?;
        match status {
            200..=299 => serde_json::from_str(&body).map_err(|e| RegistryError::Malformed {
                url,
                reason: e.to_string(),
            }),
            404 => Err(RegistryError::NotFound { url, body }),
            _ => Err(RegistryError::Status { url, status, body }),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A wait between half and all of `d`, so that many ingesters do not retry in step.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.5 + rand::random::<f64>() * 0.5)
}

/// A subject in a URL path: subjects may hold `/`, `:` and other reserved characters.
fn encode(subject: &str) -> String {
    let mut out = String::with_capacity(subject.len());
    for b in subject.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Avro's primitive type names: every other name in a type position names a named type.
const AVRO_PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

/// One Avro schema text with its references' named types written in, as an Avro reader that
/// takes a single schema needs it: the first use of a referenced full name becomes its
/// definition (with the referenced schema's own references inlined the same way), later uses
/// stay names. Names resolve as Avro resolves them: a name without a dot is in the enclosing
/// namespace.
pub fn inline_avro(schema: &Schema) -> Result<String, String> {
    let mut defined = std::collections::HashSet::new();
    let mut root: serde_json::Value =
        serde_json::from_str(&schema.text).map_err(|e| format!("the Avro schema: {e}"))?;
    inline_into(&mut root, "", schema, &mut defined)?;
    Ok(root.to_string())
}

fn inline_into(
    node: &mut serde_json::Value,
    namespace: &str,
    schema: &Schema,
    defined: &mut std::collections::HashSet<String>,
) -> Result<(), String> {
    use serde_json::Value;
    match node {
        Value::String(name) if !AVRO_PRIMITIVES.contains(&name.as_str()) => {
            let full = full_name(name, namespace);
            if defined.contains(&full) {
                return Ok(());
            }
            let Some(r) = schema.references.iter().find(|r| r.name == full) else {
                return Ok(()); // defined further on in this schema, or unknown: the reader says
            };
            let mut definition: Value = serde_json::from_str(&r.schema.text)
                .map_err(|e| format!("the Avro schema of reference {}: {e}", r.name))?;
            inline_into(&mut definition, "", &r.schema, defined)?;
            *node = definition;
            Ok(())
        }
        Value::Array(union) => union
            .iter_mut()
            .try_for_each(|branch| inline_into(branch, namespace, schema, defined)),
        Value::Object(map) => {
            let kind = map
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let keyword = matches!(
                kind.as_str(),
                "record" | "error" | "enum" | "fixed" | "array" | "map"
            );
            let mut inner = namespace.to_string();
            if matches!(kind.as_str(), "record" | "error" | "enum" | "fixed") {
                let name = map.get("name").and_then(Value::as_str).unwrap_or_default();
                let own = map.get("namespace").and_then(Value::as_str);
                let full = match own {
                    Some(ns) if !name.contains('.') && !ns.is_empty() => format!("{ns}.{name}"),
                    _ => full_name(name, namespace),
                };
                inner = full
                    .rsplit_once('.')
                    .map_or(String::new(), |(ns, _)| ns.to_string());
                defined.insert(full);
            }
            // `{"type": "record", ...}` names its kind; `{"type": <schema>}` wraps a schema.
            for key in ["type", "items", "values"] {
                if key == "type" && keyword {
                    continue;
                }
                if let Some(child) = map.get_mut(key) {
                    inline_into(child, &inner, schema, defined)?;
                }
            }
            if let Some(Value::Array(fields)) = map.get_mut("fields") {
                for field in fields {
                    if let Some(t) = field.get_mut("type") {
                        inline_into(t, &inner, schema, defined)?;
                    }
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn full_name(name: &str, namespace: &str) -> String {
    if name.contains('.') || namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}.{name}")
    }
}

/// Why a value is not in the Confluent wire format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{len} bytes: shorter than the 5-byte schema-registry prefix")]
    TooShort { len: usize },
    #[error("first byte {0:#04x}, not the schema-registry magic byte 0x00")]
    Magic(u8),
    #[error("the Protobuf message-index list is cut short")]
    Indexes,
}

/// Bytes of the Confluent wire-format prefix: the magic byte and the schema id.
pub const WIRE_PREFIX: usize = 5;

/// Splits a Confluent wire-format value into its schema id and payload: magic byte 0, then the
/// id as 4 big-endian bytes.
pub fn split_wire(value: &[u8]) -> Result<(u32, &[u8]), WireError> {
    if value.len() < WIRE_PREFIX {
        return Err(WireError::TooShort { len: value.len() });
    }
    if value[0] != 0 {
        return Err(WireError::Magic(value[0]));
    }
    let id = u32::from_be_bytes([value[1], value[2], value[3], value[4]]);
    Ok((id, &value[5..]))
}

/// Splits a Protobuf payload (after [`split_wire`]) into the message-index path (which message
/// of the schema, by nesting) and the message bytes. The list is a zig-zag varint count, then
/// that many zig-zag varints; a count of 0 stands for `[0]`, the first message.
pub fn protobuf_indexes(payload: &[u8]) -> Result<(Vec<i32>, &[u8]), WireError> {
    let mut rest = payload;
    let count = zigzag(&mut rest)?;
    if count == 0 {
        return Ok((vec![0], rest));
    }
    if count < 0 || count as usize > rest.len() {
        return Err(WireError::Indexes);
    }
    let mut indexes = Vec::with_capacity(count as usize);
    for _ in 0..count {
        indexes.push(zigzag(&mut rest)?);
    }
    Ok((indexes, rest))
}

/// Reads one zig-zag encoded varint (at most 5 bytes for 32 bits).
fn zigzag(rest: &mut &[u8]) -> Result<i32, WireError> {
    let mut value: u32 = 0;
    for i in 0..5 {
        let (&byte, tail) = rest.split_first().ok_or(WireError::Indexes)?;
        *rest = tail;
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(((value >> 1) as i32) ^ -((value & 1) as i32));
        }
    }
    Err(WireError::Indexes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_prefix_gives_the_schema_id() {
        assert_eq!(split_wire(&[0, 0, 0, 1, 2, b'x']), Ok((258, &b"x"[..])));
        assert_eq!(split_wire(&[0, 0, 0]), Err(WireError::TooShort { len: 3 }));
        assert_eq!(split_wire(b"{\"a\":1}"), Err(WireError::Magic(b'{')));
    }

    #[test]
    fn protobuf_message_indexes_are_zigzag_varints() {
        // Count 0: the first message.
        assert_eq!(protobuf_indexes(&[0, 9]), Ok((vec![0], &[9u8][..])));
        // [1, 2]: count 2 (zig-zag 4), 1 (2), 2 (4).
        assert_eq!(
            protobuf_indexes(&[4, 2, 4, 7]),
            Ok((vec![1, 2], &[7u8][..]))
        );
        // A large index spans two varint bytes: 100 -> zig-zag 200 = 0xc8 0x01.
        assert_eq!(protobuf_indexes(&[2, 0xc8, 0x01]), Ok((vec![100], &[][..])));
        assert_eq!(protobuf_indexes(&[4, 2]), Err(WireError::Indexes));
        assert_eq!(protobuf_indexes(&[]), Err(WireError::Indexes));
    }

    #[test]
    fn subjects_follow_the_serializers_strategies() {
        let r = Some("io.shop.Order");
        assert_eq!(
            SubjectStrategy::Topic
                .subject("orders", r, false)
                .as_deref(),
            Some("orders-value")
        );
        assert_eq!(
            SubjectStrategy::Topic
                .subject("orders", None, true)
                .as_deref(),
            Some("orders-key")
        );
        assert_eq!(
            SubjectStrategy::Record
                .subject("orders", r, false)
                .as_deref(),
            Some("io.shop.Order")
        );
        assert_eq!(
            SubjectStrategy::TopicRecord
                .subject("orders", r, false)
                .as_deref(),
            Some("orders-io.shop.Order")
        );
        assert_eq!(SubjectStrategy::Record.subject("orders", None, false), None);
    }

    #[test]
    fn subjects_are_escaped_in_paths_and_waits_jittered() {
        assert_eq!(encode("orders-value"), "orders-value");
        assert_eq!(encode("a/b c:d"), "a%2Fb%20c%3Ad");
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(2));
            assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(2));
        }
    }

    #[test]
    fn only_an_unreachable_or_failing_registry_is_retried() {
        let status = |status| RegistryError::Status {
            url: "u".into(),
            status,
            body: String::new(),
        };
        assert!(status(503).is_retryable());
        assert!(status(429).is_retryable());
        assert!(!status(401).is_retryable());
        assert!(
            !RegistryError::NotFound {
                url: "u".into(),
                body: String::new()
            }
            .is_retryable()
        );
    }

    fn avro(text: serde_json::Value, references: Vec<Reference>) -> Schema {
        Schema {
            kind: SchemaKind::Avro,
            text: text.to_string(),
            references,
        }
    }

    fn reference(name: &str, schema: Schema) -> Reference {
        Reference {
            name: name.into(),
            subject: name.into(),
            version: 1,
            schema: Arc::new(schema),
        }
    }

    #[test]
    fn avro_references_are_written_in_at_their_first_use() {
        use serde_json::json;
        let currency = avro(
            json!({"type": "enum", "name": "Currency", "namespace": "io.shop", "symbols": ["EUR", "USD"]}),
            vec![],
        );
        let money = avro(
            json!({"type": "record", "name": "Money", "namespace": "io.shop", "fields": [
                {"name": "cents", "type": "long"}, {"name": "currency", "type": "Currency"}]}),
            vec![reference("io.shop.Currency", currency)],
        );
        let order = avro(
            json!({"type": "record", "name": "Order", "namespace": "io.shop", "fields": [
                {"name": "total", "type": "Money"},
                {"name": "refund", "type": ["null", "io.shop.Money"]},
                {"name": "wrapped", "type": {"type": "io.shop.Money"}},
                {"name": "lines", "type": {"type": "array", "items": "string"}}]}),
            vec![reference("io.shop.Money", money)],
        );
        let inlined: serde_json::Value =
            serde_json::from_str(&inline_avro(&order).expect("inlined")).expect("json");
        let fields = &inlined["fields"];
        // The first use holds the definition, with its own reference written in...
        assert_eq!(fields[0]["type"]["name"], "Money");
        assert_eq!(fields[0]["type"]["fields"][1]["type"]["type"], "enum");
        // ...the second stays a name, and primitives stay as they are.
        assert_eq!(fields[1]["type"], json!(["null", "io.shop.Money"]));
        assert_eq!(fields[2]["type"], json!({"type": "io.shop.Money"}));
        assert_eq!(fields[3]["type"]["items"], "string");
        // A schema without references comes back the same.
        let plain = avro(json!({"type": "record", "name": "A", "fields": []}), vec![]);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&inline_avro(&plain).expect("inlined"))
                .expect("json"),
            json!({"type": "record", "name": "A", "fields": []})
        );
    }
}
