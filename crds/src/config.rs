//! The ingester's configuration, derived from a `KafkaTable`.
//!
//! The operator renders it into the ConfigMap the ingester pods read; `kafkatable-ingester run
//! -f manifest.yaml` derives it from a manifest the same way. It holds no secrets: credentials
//! are files that the pod mounts from the Secrets the spec names, and the config says where.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::spec::{
    CatalogType, Column, ErrorPolicy, EventTimeFormat, Format, KafkaTable, KeyFormat,
    SaslMechanism, SchemaEvolution, SecretReference, SecurityProtocol, StartOffset,
    SubjectStrategy, TableFormat, Tls, WriteMode,
};
use crate::units::{parse_duration, parse_quantity};

/// The Iceberg catalog name when the spec gives none.
pub const DEFAULT_CATALOG_NAME: &str = "kafkatable";

/// Where the ingester pod mounts each referenced Secret: `<dir>/<secret name>/<key>`.
pub const DEFAULT_SECRETS_DIR: &str = "/etc/kafkatable/secrets";

/// A spec value that the schema let through but that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{field}: {value:?} is not a duration (use e.g. \"30s\", \"1m30s\", \"2h\")")]
    Duration { field: &'static str, value: String },
    #[error("{field}: {value:?} is not a byte quantity above zero (use e.g. \"128Mi\", \"1Gi\")")]
    Quantity { field: &'static str, value: String },
    #[error("{field}: {value:?} is not an RFC 3339 time (use e.g. \"2026-01-01T00:00:00Z\")")]
    Timestamp { field: &'static str, value: String },
    #[error(
        "{field}: {value:?} is not a partition transform (identity, year, month, day, hour, bucket[N], truncate[N])"
    )]
    Transform { field: &'static str, value: String },
    #[error("{field} is required: {why}")]
    Missing {
        field: &'static str,
        why: &'static str,
    },
    #[error("{field}: {value:?}: {why}")]
    Invalid {
        field: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("{field}: {value} is not implemented yet ({works})")]
    NotImplemented {
        field: &'static str,
        value: String,
        /// What works instead.
        works: &'static str,
    },
}

/// Everything one ingester needs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngesterConfig {
    /// "<namespace>/<name>" of the KafkaTable; keys the offsets recorded in the table.
    pub table_id: String,
    pub source: SourceConfig,
    pub table: TableConfig,
    pub commit: CommitConfig,
    pub errors: ErrorConfig,
    pub maintenance: MaintenanceConfig,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceConfig {
    pub brokers: String,
    pub topic: String,
    pub group_id: String,
    pub start: StartPosition,
    pub format: Format,
    #[serde(default, skip_serializing_if = "is_bytes")]
    pub key_format: KeyFormat,
    /// The value schema given with the KafkaTable (values without the wire-format prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_schema: Option<GivenSchemaConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_registry: Option<RegistryConfig>,
    pub security: SecurityConfig,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub consumer_config: BTreeMap<String, String>,
}

/// A value schema given with the KafkaTable: its text, or the file of a mounted ConfigMap key
/// (relative to the secrets directory, see [`config_map_file`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GivenSchemaConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Protobuf: the message type's full name (the file's first message without).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Where a ConfigMap key the spec refers to is mounted, relative to the secrets directory:
/// `_configmaps/<name>/<key>` (no Secret's name holds an underscore).
pub fn config_map_file(name: &str, key: &str) -> PathBuf {
    Path::new(CONFIG_MAPS_DIR).join(name).join(key)
}

/// The directory of the mounted ConfigMap keys under the secrets directory.
pub const CONFIG_MAPS_DIR: &str = "_configmaps";

/// Every ConfigMap key the spec refers to, as (ConfigMap, key). The operator mounts them at
/// [`config_map_file`].
pub fn referenced_config_maps(kt: &KafkaTable) -> Vec<(String, String)> {
    kt.spec
        .source
        .schema
        .as_ref()
        .and_then(|s| s.config_map_key_ref.as_ref())
        .map(|r| (r.name.clone(), r.key.clone()))
        .into_iter()
        .collect()
}

fn is_bytes(format: &KeyFormat) -> bool {
    *format == KeyFormat::Bytes
}

/// Where a partition without an offset in the table starts.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum StartPosition {
    Earliest,
    Latest,
    /// Milliseconds since the Unix epoch.
    TimestampMillis(i64),
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistryConfig {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<UserPasswordFiles>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// The subject version that gives a new table its columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_schema: Option<SubjectVersionConfig>,
}

/// A registry subject's version: the subject's name as its strategy makes it, the version
/// (None: the latest) and the record or message type's full name, if given.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubjectVersionConfig {
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
}

/// The subject of `topic`'s values under `strategy` for `record` (None when the strategy
/// needs a record name and there is none).
pub fn value_subject(
    strategy: SubjectStrategy,
    topic: &str,
    record: Option<&str>,
) -> Option<String> {
    match strategy {
        SubjectStrategy::Topic => Some(format!("{topic}-value")),
        SubjectStrategy::Record => record.map(str::to_string),
        SubjectStrategy::TopicRecord => record.map(|r| format!("{topic}-{r}")),
    }
}

/// Files holding a user name and a password.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserPasswordFiles {
    pub username_file: PathBuf,
    pub password_file: PathBuf,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityConfig {
    pub protocol: SecurityProtocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<SaslConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SaslConfig {
    pub mechanism: SaslMechanism,
    pub credentials: UserPasswordFiles,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TableConfig {
    pub format: TableFormat,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<CatalogConfig>,
    pub storage: StorageConfig,
    pub mode: WriteMode,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_fields: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<Column>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<EventTimeConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_by: Vec<Partition>,
    pub metadata_columns: bool,
    #[serde(default)]
    pub headers_column: bool,
    pub schema_evolution: SchemaEvolution,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CatalogConfig {
    #[serde(rename = "type")]
    pub type_: CatalogType,
    /// The catalog's name (default "kafkatable").
    pub name: String,
    pub uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warehouse: Option<String>,
    /// Namespace levels ("analytics.raw" -> ["analytics", "raw"]).
    pub namespace: Vec<String>,
    pub table: String,
    /// File holding a bearer token, and files holding a user name and password, when the
    /// catalog's Secret has those keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<UserPasswordFiles>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StorageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub path_style: bool,
    /// Plain HTTP endpoints (an S3-compatible store inside the cluster) are allowed.
    pub allow_http: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_file: Option<PathBuf>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventTimeConfig {
    pub field: String,
    pub format: EventTimeFormat,
}

/// One partition column with its parsed transform.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Partition {
    pub field: String,
    pub transform: Transform,
}

/// A partition transform.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Transform {
    Identity,
    Year,
    Month,
    Day,
    Hour,
    Bucket(u32),
    Truncate(u32),
}

impl Transform {
    /// Parses "identity", "day", "bucket[16]", ...
    pub fn parse(text: &str) -> Option<Self> {
        let bracketed = |prefix: &str| {
            text.strip_prefix(prefix)?
                .strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
        };
        Some(match text {
            "identity" => Self::Identity,
            "year" => Self::Year,
            "month" => Self::Month,
            "day" => Self::Day,
            "hour" => Self::Hour,
            _ => {
                if let Some(n) = bracketed("bucket") {
                    Self::Bucket(n)
                } else {
                    Self::Truncate(bracketed("truncate")?)
                }
            }
        })
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommitConfig {
    pub interval_ms: u64,
    pub max_records: u64,
    pub max_bytes: u64,
    pub target_file_size: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErrorConfig {
    pub policy: ErrorPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_table: Option<DeadLetterTableConfig>,
    /// Records larger than this (key and value) are bad records.
    pub max_record_bytes: u64,
    /// Commits failed in a row before the table is Degraded (CommitFailing).
    pub commit_failures_degraded: u32,
    /// Commits failed in a row before the ingester exits; 0: never.
    pub commit_failures_exit: u32,
    /// The window over which bad records are counted for Degraded/DeadLetterRate.
    pub rate_window_ms: u64,
}

/// The dead-letter table: the main table's settings with another place.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeadLetterTableConfig {
    /// Delta: the table's location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Iceberg: the table's name in the main table's catalog namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl DeadLetterTableConfig {
    /// The dead-letter table beside `table`, named `name` (default: the table's name and
    /// "_dead_letters").
    fn beside(table: &TableConfig, name: Option<&str>) -> Result<Self, ConfigError> {
        let named =
            |main: &str| name.map_or_else(|| format!("{main}_dead_letters"), str::to_string);
        match (&table.location, &table.catalog) {
            (_, Some(catalog)) => Ok(Self {
                location: None,
                name: Some(named(&catalog.table)),
            }),
            (Some(location), None) => {
                let trimmed = location.trim_end_matches('/');
                let (parent, last) = trimmed
                    .rsplit_once('/')
                    .filter(|(_, last)| !last.is_empty())
                    .ok_or_else(|| ConfigError::Invalid {
                        field: "spec.table.location",
                        value: location.clone(),
                        why: "a dead-letter table goes beside it, and it has no last path segment",
                    })?;
                Ok(Self {
                    location: Some(format!("{parent}/{}", named(last))),
                    name: None,
                })
            }
            (None, None) => Err(ConfigError::Missing {
                field: "spec.table.location",
                why: "the dead-letter table goes beside the table",
            }),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaintenanceConfig {
    pub compaction_enabled: bool,
    pub compaction_target_file_size: u64,
    pub compaction_interval_ms: u64,
    pub retention_enabled: bool,
    pub retention_keep_ms: u64,
    pub checkpoint_interval: u32,
}

/// The consumer group used when the spec names none.
pub fn default_group_id(namespace: &str, name: &str) -> String {
    format!("kafkatable.{namespace}.{name}")
}

/// The Secrets of TLS settings (the brokers' or the registry's), with the keys read from each.
fn tls_keys(tls: &Tls) -> [(Option<&SecretReference>, &'static [&'static str]); 2] {
    [
        (tls.ca_secret_ref.as_ref(), &["ca.crt"]),
        (tls.client_cert_secret_ref.as_ref(), &["tls.crt", "tls.key"]),
    ]
}

/// Every Secret the spec refers to, each with the keys the ingester reads from it. The operator
/// mounts these under [`DEFAULT_SECRETS_DIR`].
pub fn referenced_secrets(kt: &KafkaTable) -> Vec<(String, Vec<&'static str>)> {
    let source = &kt.spec.source;
    let mut refs: Vec<(String, Vec<&'static str>)> = Vec::new();
    let mut add = |r: Option<&SecretReference>, keys: &[&'static str]| {
        if let Some(r) = r {
            refs.push((r.name.clone(), keys.to_vec()));
        }
    };
    add(
        source
            .schema_registry
            .as_ref()
            .and_then(|r| r.credentials_secret_ref.as_ref()),
        &["username", "password"],
    );
    // TLS: the registry's here, the brokers' with their SASL below.
    let registry_tls = source.schema_registry.as_ref().and_then(|r| r.tls.as_ref());
    for (secret, keys) in registry_tls.into_iter().flat_map(tls_keys) {
        add(secret, keys);
    }
    if let Some(security) = &source.security {
        add(
            security.sasl.as_ref().map(|s| &s.credentials_secret_ref),
            &["username", "password"],
        );
        for (secret, keys) in security.tls.as_ref().into_iter().flat_map(tls_keys) {
            add(secret, keys);
        }
    }
    let table = &kt.spec.table;
    add(
        table
            .catalog
            .as_ref()
            .and_then(|c| c.credentials_secret_ref.as_ref()),
        &["token", "username", "password"],
    );
    add(
        table
            .storage
            .as_ref()
            .and_then(|s| s.credentials_secret_ref.as_ref()),
        &["accessKeyId", "secretAccessKey"],
    );
    refs
}

/// A Secret as the ingester uses it: the keys it reads, those of them it needs, and whether
/// it is the catalog's (which holds a token or a user and password, not all of them; its
/// keys are optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretUse {
    pub keys: BTreeSet<&'static str>,
    pub required: BTreeSet<&'static str>,
    pub optional: bool,
}

/// [`referenced_secrets`] by Secret name, the keys of every reference to one Secret merged.
pub fn secrets_by_name(kt: &KafkaTable) -> BTreeMap<String, SecretUse> {
    let catalog = kt
        .spec
        .table
        .catalog
        .as_ref()
        .and_then(|c| c.credentials_secret_ref.as_ref())
        .map(|r| r.name.as_str());
    let mut by_name = BTreeMap::<String, SecretUse>::new();
    for (name, keys) in referenced_secrets(kt) {
        let optional = catalog == Some(name.as_str());
        let entry = by_name.entry(name).or_default();
        entry.keys.extend(keys.iter().copied());
        if optional {
            entry.optional = true;
        } else {
            entry.required.extend(keys);
        }
    }
    by_name
}

impl IngesterConfig {
    /// Makes every relative Secret file path absolute under `dir`. The operator renders paths
    /// relative to the secrets directory, so that the ingester decides where its Secrets are
    /// mounted (`--secrets-dir`).
    pub fn resolve_secret_files(&mut self, dir: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        let fix_pair = |u: &mut UserPasswordFiles| {
            fix(&mut u.username_file);
            fix(&mut u.password_file);
        };
        if let Some(r) = self.source.schema_registry.as_mut() {
            r.basic_auth.iter_mut().for_each(fix_pair);
        }
        let registry_tls = self
            .source
            .schema_registry
            .as_mut()
            .and_then(|r| r.tls.as_mut());
        for tls in registry_tls
            .into_iter()
            .chain(self.source.security.tls.as_mut())
        {
            tls.ca_file.iter_mut().for_each(fix);
            tls.cert_file.iter_mut().for_each(fix);
            tls.key_file.iter_mut().for_each(fix);
        }
        if let Some(sasl) = self.source.security.sasl.as_mut() {
            fix_pair(&mut sasl.credentials);
        }
        if let Some(given) = self.source.value_schema.as_mut() {
            given.file.iter_mut().for_each(fix);
        }
        if let Some(c) = self.table.catalog.as_mut() {
            c.token_file.iter_mut().for_each(fix);
            c.basic_auth.iter_mut().for_each(fix_pair);
        }
        let storage = &mut self.table.storage;
        storage.access_key_id_file.iter_mut().for_each(fix);
        storage.secret_access_key_file.iter_mut().for_each(fix);
    }

    /// Derives the configuration of `kt`'s ingesters; Secrets are read from files under
    /// `secrets_dir` (the pod's mount point, or a local directory for `run -f`; empty for
    /// paths relative to wherever the ingester finds its Secrets).
    pub fn from_resource(kt: &KafkaTable, secrets_dir: &Path) -> Result<Self, ConfigError> {
        let config = Self::derive(kt, secrets_dir)?;
        config.check_implemented()?;
        Ok(config)
    }

    /// Every field of `kt` mapped to the config, implemented or not.
    fn derive(kt: &KafkaTable, secrets_dir: &Path) -> Result<Self, ConfigError> {
        let namespace = kt
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = kt.metadata.name.clone().ok_or(ConfigError::Missing {
            field: "metadata.name",
            why: "the table id and the default consumer group derive from it",
        })?;
        let spec = &kt.spec;
        let file = |r: &SecretReference, key: &str| secrets_dir.join(&r.name).join(key);
        let user_password = |r: &SecretReference| UserPasswordFiles {
            username_file: file(r, "username"),
            password_file: file(r, "password"),
        };
        let tls_files = |tls: &Tls| TlsConfig {
            ca_file: tls.ca_secret_ref.as_ref().map(|r| file(r, "ca.crt")),
            cert_file: tls
                .client_cert_secret_ref
                .as_ref()
                .map(|r| file(r, "tls.crt")),
            key_file: tls
                .client_cert_secret_ref
                .as_ref()
                .map(|r| file(r, "tls.key")),
        };

        let start = match spec.source.start_offset {
            StartOffset::Earliest => StartPosition::Earliest,
            StartOffset::Latest => StartPosition::Latest,
            StartOffset::Timestamp => {
                let text = spec
                    .source
                    .start_timestamp
                    .clone()
                    .ok_or(ConfigError::Missing {
                        field: "spec.source.startTimestamp",
                        why: "startOffset is timestamp",
                    })?;
                let at: k8s_openapi::jiff::Timestamp =
                    text.parse().map_err(|_| ConfigError::Timestamp {
                        field: "spec.source.startTimestamp",
                        value: text.clone(),
                    })?;
                StartPosition::TimestampMillis(at.as_millisecond())
            }
        };
        let security = match &spec.source.security {
            None => SecurityConfig {
                protocol: SecurityProtocol::Plaintext,
                sasl: None,
                tls: None,
            },
            Some(s) => SecurityConfig {
                protocol: s.protocol,
                sasl: s.sasl.as_ref().map(|sasl| SaslConfig {
                    mechanism: sasl.mechanism,
                    credentials: user_password(&sasl.credentials_secret_ref),
                }),
                tls: s.tls.as_ref().map(tls_files),
            },
        };
        let source = SourceConfig {
            brokers: spec.source.brokers.clone(),
            topic: spec.source.topic.clone(),
            group_id: spec
                .source
                .consumer_group
                .clone()
                .unwrap_or_else(|| default_group_id(&namespace, &name)),
            start,
            format: spec.source.format,
            key_format: spec.source.key_format,
            value_schema: spec.source.schema.as_ref().map(|s| GivenSchemaConfig {
                text: s.text.clone(),
                file: s
                    .config_map_key_ref
                    .as_ref()
                    .map(|r| secrets_dir.join(config_map_file(&r.name, &r.key))),
                message: s.message.clone(),
            }),
            schema_registry: spec
                .source
                .schema_registry
                .as_ref()
                .map(|r| {
                    let table_schema = match &r.table_schema {
                        None => None,
                        Some(t) => Some(SubjectVersionConfig {
                            subject: value_subject(
                                t.subject_strategy,
                                &spec.source.topic,
                                t.record_name.as_deref(),
                            )
                            .ok_or(ConfigError::Missing {
                                field: "spec.source.schemaRegistry.tableSchema.recordName",
                                why: "the record and topicRecord strategies name the subject by it",
                            })?,
                            version: t.version,
                            record: t.record_name.clone(),
                        }),
                    };
                    Ok::<_, ConfigError>(RegistryConfig {
                        url: r.url.clone(),
                        basic_auth: r.credentials_secret_ref.as_ref().map(user_password),
                        tls: r.tls.as_ref().map(tls_files),
                        table_schema,
                    })
                })
                .transpose()?,
            security,
            consumer_config: spec.source.consumer_config.clone(),
        };

        let t = &spec.table;
        let storage = match &t.storage {
            None => StorageConfig::default(),
            Some(s) => StorageConfig {
                endpoint: s.endpoint.clone(),
                region: s.region.clone(),
                path_style: s.path_style,
                allow_http: s
                    .endpoint
                    .as_deref()
                    .is_some_and(|e| e.starts_with("http://")),
                access_key_id_file: s
                    .credentials_secret_ref
                    .as_ref()
                    .map(|r| file(r, "accessKeyId")),
                secret_access_key_file: s
                    .credentials_secret_ref
                    .as_ref()
                    .map(|r| file(r, "secretAccessKey")),
            },
        };
        let catalog = t.catalog.as_ref().map(|c| CatalogConfig {
            type_: c.type_,
            name: c
                .name
                .clone()
                .unwrap_or_else(|| DEFAULT_CATALOG_NAME.to_string()),
            uri: c.uri.clone(),
            warehouse: c.warehouse.clone(),
            namespace: c.namespace.split('.').map(str::to_string).collect(),
            table: c.table.clone(),
            token_file: c.credentials_secret_ref.as_ref().map(|r| file(r, "token")),
            basic_auth: c.credentials_secret_ref.as_ref().map(user_password),
        });
        let partition_by = t
            .partition_by
            .iter()
            .map(|p| {
                Transform::parse(&p.transform)
                    .map(|transform| Partition {
                        field: p.field.clone(),
                        transform,
                    })
                    .ok_or_else(|| ConfigError::Transform {
                        field: "spec.table.partitionBy",
                        value: p.transform.clone(),
                    })
            })
            .collect::<Result<_, _>>()?;
        let table = TableConfig {
            format: t.format,
            location: t.location.clone(),
            catalog,
            storage,
            mode: t.mode,
            key_fields: t.key_fields.clone(),
            columns: t.columns.clone(),
            event_time: t.event_time.as_ref().map(|e| EventTimeConfig {
                field: e.field.clone(),
                format: e.format,
            }),
            partition_by,
            metadata_columns: t.metadata_columns,
            headers_column: t.headers_column,
            schema_evolution: t.schema_evolution,
        };

        let c = &spec.commit;
        let commit = CommitConfig {
            interval_ms: millis("spec.commit.interval", &c.interval)?,
            max_records: c.max_records.max(1) as u64,
            max_bytes: bytes("spec.commit.maxBytes", &c.max_bytes)?,
            target_file_size: bytes("spec.commit.targetFileSize", &c.target_file_size)?,
        };
        let m = &spec.maintenance;
        let maintenance = MaintenanceConfig {
            compaction_enabled: m.compaction.enabled,
            compaction_target_file_size: bytes(
                "spec.maintenance.compaction.targetFileSize",
                &m.compaction.target_file_size,
            )?,
            compaction_interval_ms: millis(
                "spec.maintenance.compaction.interval",
                &m.compaction.interval,
            )?,
            retention_enabled: m.retention.enabled,
            retention_keep_ms: millis("spec.maintenance.retention.keep", &m.retention.keep)?,
            checkpoint_interval: m.checkpoint_interval.max(1) as u32,
        };
        let e = &spec.errors;
        let errors = ErrorConfig {
            policy: e.policy,
            dead_letter_topic: e.dead_letter.as_ref().and_then(|d| d.topic.clone()),
            dead_letter_table: match e.dead_letter.as_ref().and_then(|d| d.table.as_ref()) {
                Some(t) => Some(DeadLetterTableConfig::beside(&table, t.name.as_deref())?),
                None => None,
            },
            max_record_bytes: bytes("spec.errors.maxRecordBytes", &e.max_record_bytes)?,
            commit_failures_degraded: e.commit_failures.degraded_after.max(1) as u32,
            commit_failures_exit: e.commit_failures.exit_after.max(0) as u32,
            rate_window_ms: millis("spec.errors.degradedRate.window", &e.degraded_rate.window)?,
        };
        if errors.policy == ErrorPolicy::DeadLetter
            && errors.dead_letter_topic.is_none()
            && errors.dead_letter_table.is_none()
        {
            return Err(ConfigError::Missing {
                field: "spec.errors.deadLetter",
                why: "policy is deadLetter (a topic or a table)",
            });
        }
        Ok(Self {
            table_id: format!("{namespace}/{name}"),
            source,
            table,
            commit,
            errors,
            maintenance,
        })
    }

    /// Refuses settings the schema accepts but the ingester does not implement yet: the one
    /// place that knows, so the operator reports them before starting any pod and an ingester
    /// run from a file refuses them at start.
    pub fn check_implemented(&self) -> Result<(), ConfigError> {
        let refuse = |field, value: String, works| {
            Err(ConfigError::NotImplemented {
                field,
                value,
                works,
            })
        };
        if self.table.mode == WriteMode::Upsert {
            return refuse("spec.table.mode", "upsert".into(), "append is");
        }
        if self.maintenance.compaction_enabled {
            return refuse(
                "spec.maintenance.compaction.enabled",
                "true".into(),
                "set it to false",
            );
        }
        if self.maintenance.retention_enabled {
            return refuse(
                "spec.maintenance.retention.enabled",
                "true".into(),
                "set it to false",
            );
        }
        Ok(())
    }
}

/// An enum value as the manifest spells it.
pub fn spec_value(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "this value".into(),
    }
}

fn millis(field: &'static str, value: &str) -> Result<u64, ConfigError> {
    parse_duration(value)
        .map(|d| d.as_millis() as u64)
        .ok_or_else(|| ConfigError::Duration {
            field,
            value: value.to_string(),
        })
}

fn bytes(field: &'static str, value: &str) -> Result<u64, ConfigError> {
    parse_quantity(value)
        .filter(|n| *n > 0)
        .ok_or_else(|| ConfigError::Quantity {
            field,
            value: value.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(yaml: &str) -> KafkaTable {
        serde_yaml::from_str(yaml).expect("test manifest parses")
    }

    const MINIMAL: &str = r#"
apiVersion: kafkatable.io/v1alpha1
kind: KafkaTable
metadata: {name: clicks, namespace: web}
spec:
  source: {brokers: "kafka:9092", topic: clicks}
  table: {format: delta, location: "file:///data/clicks"}
"#;

    #[test]
    fn a_minimal_manifest_gets_the_documented_defaults() {
        let kt = manifest(MINIMAL);
        let spec = &kt.spec;
        assert_eq!(spec.source.start_offset, StartOffset::Earliest);
        assert_eq!(spec.source.format, Format::Json);
        assert_eq!(spec.table.mode, WriteMode::Append);
        assert!(spec.table.metadata_columns);
        assert_eq!(spec.table.schema_evolution, SchemaEvolution::AddColumns);
        assert_eq!(spec.commit.interval, "60s");
        assert_eq!(spec.commit.max_records, 1_000_000);
        assert_eq!(spec.errors.policy, ErrorPolicy::Fail);
        assert!(spec.scaling.autoscale);
        assert_eq!(
            (spec.scaling.min_replicas, spec.scaling.max_replicas),
            (1, 12)
        );
        assert_eq!(spec.scaling.lag_per_replica, 100_000);
        assert_eq!(spec.maintenance.checkpoint_interval, 10);
        assert!(!spec.suspend);
        assert_eq!(spec.replicas, None);
    }

    #[test]
    fn settings_not_implemented_yet_are_refused_naming_the_field() {
        let cases = [
            (
                "maintenance",
                "{compaction: {enabled: true}}",
                "spec.maintenance.compaction.enabled",
            ),
            (
                "maintenance",
                "{retention: {enabled: true}}",
                "spec.maintenance.retention.enabled",
            ),
        ];
        for (key, value, expected) in cases {
            let yaml = if key == "source" {
                MINIMAL.replace("{brokers: \"kafka:9092\", topic: clicks}", value)
            } else {
                format!("{MINIMAL}  {key}: {value}\n")
            };
            let error =
                IngesterConfig::from_resource(&manifest(&yaml), Path::new("")).expect_err(expected);
            let message = error.to_string();
            assert!(
                message.starts_with(expected) && message.contains("not implemented yet"),
                "{message}"
            );
        }
        let upsert = MINIMAL.replace(
            "location: \"file:///data/clicks\"}",
            "location: \"file:///data/clicks\", mode: upsert, keyFields: [id]}",
        );
        let error =
            IngesterConfig::from_resource(&manifest(&upsert), Path::new("")).expect_err("upsert");
        assert!(
            error
                .to_string()
                .starts_with("spec.table.mode: upsert is not implemented yet")
        );
    }

    #[test]
    fn minimal_config_resolves_group_units_and_plaintext() {
        let config =
            IngesterConfig::from_resource(&manifest(MINIMAL), Path::new(DEFAULT_SECRETS_DIR))
                .expect("config");
        assert_eq!(config.table_id, "web/clicks");
        assert_eq!(config.source.group_id, "kafkatable.web.clicks");
        assert_eq!(config.source.start, StartPosition::Earliest);
        assert_eq!(config.source.security.protocol, SecurityProtocol::Plaintext);
        assert_eq!(config.commit.interval_ms, 60_000);
        assert_eq!(config.commit.max_bytes, 256 << 20);
        assert_eq!(config.commit.target_file_size, 128 << 20);
        assert_eq!(config.maintenance.retention_keep_ms, 168 * 3600 * 1000);
        assert!(!config.table.storage.allow_http);
    }

    #[test]
    fn keys_registry_subjects_and_given_schemas_map_to_the_config() {
        let with_source = |source: &str| {
            manifest(&format!(
                "apiVersion: kafkatable.io/v1alpha1\nkind: KafkaTable\nmetadata: {{name: clicks, namespace: web}}\nspec:\n  source: {{brokers: \"kafka:9092\", topic: clicks, {source}}}\n  table: {{format: delta, location: \"file:///data/clicks\"}}\n"
            ))
        };
        let kt = with_source(
            "format: avro, keyFormat: avro, schemaRegistry: {url: \"https://registry:8081\", tls: {caSecretRef: {name: registry-ca}, clientCertSecretRef: {name: registry-client}}, tableSchema: {subjectStrategy: topicRecord, recordName: shop.Order, version: 3}}",
        );
        let config = IngesterConfig::derive(&kt, Path::new("/s")).expect("config");
        assert_eq!(config.source.key_format, KeyFormat::Avro);
        let registry = config.source.schema_registry.expect("registry");
        let tls = registry.tls.expect("the registry's TLS");
        assert_eq!(tls.ca_file, Some("/s/registry-ca/ca.crt".into()));
        assert_eq!(tls.key_file, Some("/s/registry-client/tls.key".into()));
        assert_eq!(
            registry.table_schema,
            Some(SubjectVersionConfig {
                subject: "clicks-shop.Order".into(),
                version: Some(3),
                record: Some("shop.Order".into()),
            })
        );
        assert!(
            referenced_secrets(&kt)
                .iter()
                .any(|(name, keys)| name == "registry-ca" && keys == &["ca.crt"])
        );
        assert_eq!(
            value_subject(SubjectStrategy::Topic, "t", None).as_deref(),
            Some("t-value")
        );
        assert_eq!(
            value_subject(SubjectStrategy::Record, "t", Some("a.B")).as_deref(),
            Some("a.B")
        );
        assert_eq!(value_subject(SubjectStrategy::Record, "t", None), None);

        let kt = with_source(
            "format: protobuf, schema: {configMapKeyRef: {name: schemas, key: order.proto}, message: shop.Order}",
        );
        let config = IngesterConfig::derive(&kt, Path::new("/s")).expect("config");
        let given = config.source.value_schema.expect("a given schema");
        assert_eq!(
            given.file,
            Some("/s/_configmaps/schemas/order.proto".into())
        );
        assert_eq!(given.message.as_deref(), Some("shop.Order"));
        assert_eq!(
            referenced_config_maps(&kt),
            [("schemas".to_string(), "order.proto".to_string())]
        );
        // A config rendered without the new fields reads as before: keys as bytes, nothing given.
        let minimal = IngesterConfig::derive(&manifest(MINIMAL), Path::new("/s")).expect("config");
        let text = serde_json::to_string(&minimal.source).expect("serialized");
        assert!(
            !text.contains("keyFormat") && !text.contains("valueSchema"),
            "{text}"
        );
    }

    #[test]
    fn full_config_maps_every_field_and_names_secret_files() {
        let kt = manifest(
            r#"
apiVersion: kafkatable.io/v1alpha1
kind: KafkaTable
metadata: {name: orders, namespace: shop}
spec:
  source:
    brokers: "k1:9093,k2:9093"
    topic: orders
    consumerGroup: orders-lake
    startOffset: timestamp
    startTimestamp: "2026-01-01T00:00:00Z"
    format: avro
    schemaRegistry: {url: "http://registry:8081", credentialsSecretRef: {name: registry-auth}}
    security:
      protocol: SASL_SSL
      sasl: {mechanism: SCRAM-SHA-512, credentialsSecretRef: {name: kafka-user}}
      tls: {caSecretRef: {name: kafka-ca}}
    consumerConfig: {fetch.max.bytes: "52428800"}
  table:
    format: iceberg
    catalog: {type: rest, uri: "http://catalog:8181", warehouse: "s3://lake/", namespace: shop.raw, table: orders}
    storage: {endpoint: "http://minio:9000", region: us-east-1, pathStyle: true, credentialsSecretRef: {name: s3-creds}}
    mode: upsert
    keyFields: [order_id]
    eventTime: {field: created_at, format: rfc3339}
    partitionBy: [{field: created_at, transform: day}, {field: order_id, transform: "bucket[16]"}]
    metadataColumns: false
    schemaEvolution: none
  commit: {interval: 1m30s, maxRecords: 5000, maxBytes: 64Mi, targetFileSize: 32Mi}
  errors: {policy: deadLetter, deadLetter: {topic: orders.dlq}}
"#,
        );
        // Mapped, though not all of it is implemented yet.
        let config = IngesterConfig::derive(&kt, Path::new("/s")).expect("config");
        let s = &config.source;
        assert_eq!(s.group_id, "orders-lake");
        assert_eq!(s.start, StartPosition::TimestampMillis(1_767_225_600_000));
        assert_eq!(s.format, Format::Avro);
        let registry = s.schema_registry.as_ref().expect("registry");
        assert_eq!(
            registry
                .basic_auth
                .as_ref()
                .map(|a| a.password_file.clone()),
            Some("/s/registry-auth/password".into())
        );
        let sasl = s.security.sasl.as_ref().expect("sasl");
        assert_eq!(sasl.mechanism, SaslMechanism::ScramSha512);
        assert_eq!(
            sasl.credentials.username_file,
            PathBuf::from("/s/kafka-user/username")
        );
        assert_eq!(
            s.security.tls.as_ref().and_then(|t| t.ca_file.clone()),
            Some("/s/kafka-ca/ca.crt".into())
        );
        assert_eq!(
            s.consumer_config.get("fetch.max.bytes").map(String::as_str),
            Some("52428800")
        );

        let t = &config.table;
        let catalog = t.catalog.as_ref().expect("catalog");
        assert_eq!(catalog.namespace, vec!["shop", "raw"]);
        assert_eq!(catalog.table, "orders");
        assert_eq!(catalog.name, DEFAULT_CATALOG_NAME);
        assert!(t.storage.allow_http && t.storage.path_style);
        assert_eq!(
            t.storage.secret_access_key_file,
            Some("/s/s3-creds/secretAccessKey".into())
        );
        assert_eq!(t.mode, WriteMode::Upsert);
        assert_eq!(
            t.partition_by,
            vec![
                Partition {
                    field: "created_at".into(),
                    transform: Transform::Day
                },
                Partition {
                    field: "order_id".into(),
                    transform: Transform::Bucket(16)
                },
            ]
        );
        assert!(!t.metadata_columns);
        assert_eq!(
            config.commit,
            CommitConfig {
                interval_ms: 90_000,
                max_records: 5000,
                max_bytes: 64 << 20,
                target_file_size: 32 << 20
            }
        );
        assert_eq!(
            config.errors.dead_letter_topic.as_deref(),
            Some("orders.dlq")
        );

        let secrets: Vec<String> = referenced_secrets(&kt)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            secrets,
            vec!["registry-auth", "kafka-user", "kafka-ca", "s3-creds"]
        );
        let by_name = secrets_by_name(&kt);
        let s3 = &by_name["s3-creds"];
        assert_eq!(
            (s3.optional, s3.required.len(), s3.keys.len()),
            (false, 2, 2),
            "{s3:?}"
        );

        let text = serde_json::to_string(&config).expect("serialize");
        let back: IngesterConfig = serde_json::from_str(&text).expect("deserialize");
        assert_eq!(back, config, "the rendered config reads back unchanged");
    }

    #[test]
    fn values_the_schema_cannot_check_are_refused_with_the_field_name() {
        let mut kt = manifest(MINIMAL);
        kt.spec.commit.interval = "soon".into();
        let err = IngesterConfig::from_resource(&kt, Path::new("/s")).expect_err("bad duration");
        assert_eq!(
            err,
            ConfigError::Duration {
                field: "spec.commit.interval",
                value: "soon".into()
            }
        );
        assert!(err.to_string().starts_with("spec.commit.interval:"));

        let mut kt = manifest(MINIMAL);
        kt.spec.source.start_offset = StartOffset::Timestamp;
        kt.spec.source.start_timestamp = Some("2026-13-45T00:00:00Z".into());
        let err = IngesterConfig::from_resource(&kt, Path::new("/s")).expect_err("bad timestamp");
        assert!(
            matches!(
                err,
                ConfigError::Timestamp {
                    field: "spec.source.startTimestamp",
                    ..
                }
            ),
            "{err}"
        );

        let mut kt = manifest(MINIMAL);
        kt.metadata.name = None;
        assert!(matches!(
            IngesterConfig::from_resource(&kt, Path::new("/s")),
            Err(ConfigError::Missing {
                field: "metadata.name",
                ..
            })
        ));
    }

    #[test]
    fn the_dead_letter_table_goes_beside_the_table() {
        let config = |table: &str, dead_letter: &str| {
            let yaml = MINIMAL.replace(
                "spec:\n",
                &format!("spec:\n  errors: {{policy: deadLetter, deadLetter: {dead_letter}}}\n"),
            );
            let mut kt = manifest(&yaml);
            kt.spec.table = serde_json::from_str(table).expect("a table");
            IngesterConfig::from_resource(&kt, Path::new("/s"))
        };
        let delta = r#"{"format": "delta", "location": "s3://lake/raw/orders/"}"#;
        let table = |c: IngesterConfig| c.errors.dead_letter_table.expect("a dead-letter table");
        assert_eq!(
            table(config(delta, "{table: {}}").expect("valid"))
                .location
                .as_deref(),
            Some("s3://lake/raw/orders_dead_letters")
        );
        assert_eq!(
            table(config(delta, "{table: {name: bad}}").expect("valid"))
                .location
                .as_deref(),
            Some("s3://lake/raw/bad")
        );
        let iceberg = r#"{"format": "iceberg", "catalog": {"type": "rest", "uri": "http://c", "namespace": "raw", "table": "orders"}}"#;
        let t = table(config(iceberg, "{table: {}}").expect("valid"));
        assert_eq!(
            (t.location, t.name.as_deref()),
            (None, Some("orders_dead_letters"))
        );
        let err = config(
            r#"{"format": "delta", "location": "orders"}"#,
            "{table: {}}",
        )
        .expect_err("no segment to go beside");
        assert!(err.to_string().contains("spec.table.location"), "{err}");
    }

    #[test]
    fn transforms_parse() {
        assert_eq!(Transform::parse("hour"), Some(Transform::Hour));
        assert_eq!(
            Transform::parse("truncate[4]"),
            Some(Transform::Truncate(4))
        );
        assert_eq!(Transform::parse("bucket[0]"), None);
        assert_eq!(Transform::parse("bucket[x]"), None);
        assert_eq!(Transform::parse("week"), None);
    }
}
