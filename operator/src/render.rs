//! Spec -> children: the ConfigMap with the rendered ingester config, the Deployment, the
//! metrics Service and the PodDisruptionBudget. Pure functions; the reconciler applies them.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapProjection, ConfigMapVolumeSource, Container, ContainerPort,
    EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource,
    ResourceRequirements, SeccompProfile, SecretProjection, SecurityContext, Service, ServicePort,
    ServiceSpec, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kafkatable_crds::config::{
    DEFAULT_SECRETS_DIR, config_map_file, referenced_config_maps, secrets_by_name,
};
use kafkatable_crds::{IngesterConfig, KafkaTable};
use kube::{Resource, ResourceExt};

use crate::error::OperatorError;

/// The port of the ingester's /metrics, /healthz, /readyz and /status.
pub const METRICS_PORT: i32 = 9090;
/// Where the rendered config is mounted in the ingester pods.
pub const CONFIG_DIR: &str = "/etc/kafkatable/config";
/// The key of the rendered config in the ConfigMap.
pub const CONFIG_KEY: &str = "config.json";
/// Pod annotation that changes whenever the rendered config does, so that spec changes roll
/// the Deployment (and status changes do not).
pub const CONFIG_HASH_ANNOTATION: &str = "kafkatable.io/config-hash";
/// Label carrying the KafkaTable's name on every child.
pub const TABLE_LABEL: &str = "kafkatable.io/table";

/// Operator-wide defaults for the ingester pods.
#[derive(Debug, Clone)]
pub struct IngesterDefaults {
    /// Image when the spec names none.
    pub image: String,
    /// The ingester's command; empty runs the image's entrypoint.
    pub command: String,
    /// Seconds a pod gets to commit what it holds after SIGTERM.
    pub termination_grace_seconds: i64,
}

impl Default for IngesterDefaults {
    fn default() -> Self {
        Self {
            image: concat!(
                "ghcr.io/kafkatable/kafkatable-ingester:",
                env!("CARGO_PKG_VERSION")
            )
            .into(),
            command: String::new(),
            termination_grace_seconds: 60,
        }
    }
}

/// The children of one KafkaTable.
#[derive(Debug, Clone)]
pub struct Children {
    pub config_map: ConfigMap,
    pub deployment: Deployment,
    pub service: Service,
    pub pdb: PodDisruptionBudget,
}

/// One child object, for applying them as a list (a new kind of child is a new variant).
pub enum Child<'a> {
    ConfigMap(&'a ConfigMap),
    Deployment(&'a Deployment),
    Service(&'a Service),
    PodDisruptionBudget(&'a PodDisruptionBudget),
}

impl Children {
    /// The children in the order they are applied: the config before the pods that read it.
    pub fn list(&self) -> [Child<'_>; 4] {
        [
            Child::ConfigMap(&self.config_map),
            Child::Deployment(&self.deployment),
            Child::Service(&self.service),
            Child::PodDisruptionBudget(&self.pdb),
        ]
    }
}

/// Where `kt` writes: the Delta location, or the Iceberg catalog and table.
pub fn table_identity(kt: &KafkaTable) -> String {
    let t = &kt.spec.table;
    match &t.catalog {
        Some(c) => format!(
            "iceberg {} {}.{}",
            c.uri.trim_end_matches('/'),
            c.namespace,
            c.table
        ),
        None => format!(
            "delta {}",
            t.location
                .as_deref()
                .unwrap_or_default()
                .trim_end_matches('/')
        ),
    }
}

/// The other KafkaTables (as "namespace/name") among `tables` that write `kt`'s table from
/// `kt`'s topic and brokers.
pub fn shared_with(kt: &KafkaTable, tables: &[Arc<KafkaTable>]) -> Vec<String> {
    if kt.spec.suspend {
        return Vec::new();
    }
    let identity = table_identity(kt);
    let source = &kt.spec.source;
    // Every reconcile scans every table: the cheap comparisons first, the identity (a string
    // built per table) only for those on the same topic.
    let mut names: Vec<String> = tables
        .iter()
        .filter(|other| other.metadata.uid != kt.metadata.uid)
        .filter(|other| other.metadata.deletion_timestamp.is_none() && !other.spec.suspend)
        .filter(|other| {
            other.spec.source.topic == source.topic && other.spec.source.brokers == source.brokers
        })
        .filter(|other| table_identity(other) == identity)
        .map(|other| {
            format!(
                "{}/{}",
                other.metadata.namespace.as_deref().unwrap_or_default(),
                other.metadata.name.as_deref().unwrap_or_default()
            )
        })
        .collect();
    names.sort();
    names
}

/// The name shared by all children of `kt`.
pub fn child_name(kt: &KafkaTable) -> String {
    child_name_of(kt.metadata.name.as_deref().unwrap_or("kafkatable"))
}

/// The name shared by all children of the KafkaTable named `table`.
pub fn child_name_of(table: &str) -> String {
    format!("{table}-ingester")
}

/// The labels selecting `kt`'s ingester pods.
pub fn selector_labels(kt: &KafkaTable) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "kafkatable-ingester".to_string(),
        ),
        (
            TABLE_LABEL.to_string(),
            kt.metadata.name.clone().unwrap_or_default(),
        ),
    ])
}

/// The label selector string of the ingester pods (for the scale subresource).
pub fn selector_string(kt: &KafkaTable) -> String {
    selector_labels(kt)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn labels(kt: &KafkaTable) -> BTreeMap<String, String> {
    let mut labels = selector_labels(kt);
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        "kafkatable-operator".into(),
    );
    labels.insert("app.kubernetes.io/component".into(), "ingester".into());
    labels
}

fn metadata(kt: &KafkaTable, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(child_name(kt)),
        namespace: kt.metadata.namespace.clone(),
        labels: Some(labels(kt)),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// The rendered ingester config as the ConfigMap holds it. Secret files are relative to the
/// ingester's secrets directory, where the pod mounts each Secret under its name.
pub fn config_json(kt: &KafkaTable) -> Result<String, OperatorError> {
    let config = IngesterConfig::from_resource(kt, Path::new(""))?;
    Ok(serde_json::to_string_pretty(&config)?)
}

/// FNV-1a: a hash that stays the same across builds, for the config annotation.
fn stable_hash(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Renders every child of `kt` with `replicas` ingester pods; `config` is its
/// [`config_json`].
pub fn children(
    kt: &KafkaTable,
    config: String,
    replicas: i32,
    defaults: &IngesterDefaults,
) -> Result<Children, OperatorError> {
    let owner = kt
        .controller_owner_ref(&())
        .ok_or_else(|| OperatorError::NoUid(kt.name_any()))?;
    let config_map = ConfigMap {
        metadata: metadata(kt, &owner),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_string(), config.clone())])),
        ..ConfigMap::default()
    };
    let deployment = deployment(kt, &owner, replicas, &stable_hash(&config), defaults);
    let service = Service {
        metadata: metadata(kt, &owner),
        // Headless: scrapers and the operator address the pods; no cluster IP is spent on it.
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector_labels(kt)),
            ports: Some(vec![ServicePort {
                name: Some("metrics".into()),
                port: METRICS_PORT,
                target_port: Some(IntOrString::String("metrics".into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let pdb = PodDisruptionBudget {
        metadata: metadata(kt, &owner),
        spec: Some(PodDisruptionBudgetSpec {
            // One pod at a time: each eviction is a rebalance of the consumer group.
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(kt)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    };
    Ok(Children {
        config_map,
        deployment,
        service,
        pdb,
    })
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("metrics".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

fn default_resources() -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_string());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), q("250m")),
            ("memory".to_string(), q("512Mi")),
        ])),
        // Buffers up to spec.commit.maxBytes (256Mi by default) plus Parquet and the client.
        limits: Some(BTreeMap::from([("memory".to_string(), q("1Gi"))])),
        ..ResourceRequirements::default()
    }
}

fn deployment(
    kt: &KafkaTable,
    owner: &OwnerReference,
    replicas: i32,
    config_hash: &str,
    defaults: &IngesterDefaults,
) -> Deployment {
    let pod = &kt.spec.ingester;
    let mut pod_labels = pod.pod_labels.clone();
    pod_labels.extend(labels(kt));
    let mut annotations = pod.pod_annotations.clone();
    annotations.insert(CONFIG_HASH_ANNOTATION.into(), config_hash.into());

    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: child_name(kt),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    let mut mounts = vec![
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        },
    ];
    // Every referenced Secret in one projected volume, each key at <secret>/<key>, where the
    // rendered config expects it. The catalog's Secret holds a token or a user and password,
    // so its keys are optional; a missing required Secret keeps the pod from starting, as
    // Kubernetes reports it.
    // The ConfigMap keys the spec refers to (a value schema) go into the same volume, under
    // `_configmaps/<name>/<key>`.
    let secrets = secrets_by_name(kt);
    let config_maps = referenced_config_maps(kt);
    if !secrets.is_empty() || !config_maps.is_empty() {
        let config_map_sources = config_maps.iter().map(|(name, key)| VolumeProjection {
            config_map: Some(ConfigMapProjection {
                name: name.clone(),
                items: Some(vec![KeyToPath {
                    key: key.clone(),
                    path: config_map_file(name, key).display().to_string(),
                    ..KeyToPath::default()
                }]),
                optional: Some(false),
            }),
            ..VolumeProjection::default()
        });
        let sources = secrets
            .iter()
            .map(|(secret, used)| VolumeProjection {
                secret: Some(SecretProjection {
                    name: secret.clone(),
                    items: Some(
                        used.keys
                            .iter()
                            .map(|k| KeyToPath {
                                key: (*k).to_string(),
                                path: format!("{secret}/{k}"),
                                ..KeyToPath::default()
                            })
                            .collect(),
                    ),
                    optional: Some(used.optional),
                }),
                ..VolumeProjection::default()
            })
            .chain(config_map_sources)
            .collect();
        volumes.push(Volume {
            name: "secrets".into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(sources),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "secrets".into(),
            mount_path: DEFAULT_SECRETS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }

    let mut env_vars = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_IP", "status.podIP"),
        env("KAFKATABLE_HTTP_ADDR", &format!("$(POD_IP):{METRICS_PORT}")),
        env("KAFKATABLE_SECRETS_DIR", DEFAULT_SECRETS_DIR),
    ];
    env_vars.extend(pod.env.iter().cloned());

    let container = Container {
        name: "ingester".into(),
        image: Some(pod.image.clone().unwrap_or_else(|| defaults.image.clone())),
        command: (!defaults.command.is_empty()).then(|| vec![defaults.command.clone()]),
        args: Some(vec![
            "run".into(),
            "-f".into(),
            format!("{CONFIG_DIR}/{CONFIG_KEY}"),
        ]),
        env: Some(env_vars),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".into()),
            container_port: METRICS_PORT,
            ..ContainerPort::default()
        }]),
        // A failed ingester's last words (its error) become the termination message that
        // `kubectl describe` and the operator's PodsCrashLooping condition show.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        readiness_probe: Some(probe("/readyz", 5, 3)),
        liveness_probe: Some(Probe {
            initial_delay_seconds: Some(10),
            ..probe("/healthz", 10, 6)
        }),
        resources: Some(pod.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    };

    Deployment {
        metadata: metadata(kt, owner),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(kt)),
                ..LabelSelector::default()
            },
            // Never more members than the operator chose: a surge pod would only rebalance.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(0)),
                    max_unavailable: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes),
                    service_account_name: pod.service_account_name.clone(),
                    // The ingester needs no Kubernetes API access.
                    automount_service_account_token: Some(false),
                    termination_grace_period_seconds: Some(defaults.termination_grace_seconds),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        fs_group: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    node_selector: (!pod.node_selector.is_empty())
                        .then(|| pod.node_selector.clone()),
                    tolerations: (!pod.tolerations.is_empty()).then(|| pod.tolerations.clone()),
                    affinity: pod.affinity.clone(),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two KafkaTables on one topic and one table: each names the other; another topic, a
    /// suspended table or another table does not count.
    #[test]
    fn tables_sharing_a_topic_and_a_table_name_each_other() {
        let table = |name: &str, topic: &str, location: &str, suspend: bool| {
            let mut kt: KafkaTable = serde_json::from_value(serde_json::json!({
                "apiVersion": "kafkatable.io/v1alpha1",
                "kind": "KafkaTable",
                "metadata": {"name": name, "namespace": "ns", "uid": name},
                "spec": {
                    "source": {"brokers": "k:9092", "topic": topic},
                    "table": {"format": "delta", "location": location},
                },
            }))
            .expect("manifest");
            kt.spec.suspend = suspend;
            Arc::new(kt)
        };
        let a = table("a", "clicks", "s3://lake/clicks", false);
        let b = table("b", "clicks", "s3://lake/clicks/", false);
        let all = vec![
            a.clone(),
            b.clone(),
            table("c", "views", "s3://lake/clicks", false),
            table("d", "clicks", "s3://lake/other", false),
            table("e", "clicks", "s3://lake/clicks", true),
        ];
        assert_eq!(shared_with(&a, &all), ["ns/b"]);
        assert_eq!(shared_with(&b, &all), ["ns/a"]);
        assert!(shared_with(&all[2], &all).is_empty());
        assert!(shared_with(&all[4], &all).is_empty());
    }

    fn table(yaml: &str) -> KafkaTable {
        let mut kt: KafkaTable = serde_yaml_like(yaml);
        kt.metadata.uid = Some("uid-1".into());
        kt
    }

    fn serde_yaml_like(json: &str) -> KafkaTable {
        serde_json::from_str(json).expect("test manifest")
    }

    const BASE: &str = r#"{
        "apiVersion": "kafkatable.io/v1alpha1", "kind": "KafkaTable",
        "metadata": {"name": "orders", "namespace": "shop", "generation": 1},
        "spec": {
            "source": {"brokers": "kafka:9092", "topic": "orders",
                       "security": {"protocol": "SASL_PLAINTEXT", "sasl": {"mechanism": "SCRAM-SHA-512", "credentialsSecretRef": {"name": "kafka-user"}}}},
            "table": {"format": "delta", "location": "s3://lake/orders",
                      "storage": {"credentialsSecretRef": {"name": "s3"}}}
        }
    }"#;

    #[test]
    fn children_are_owned_labelled_and_hardened() {
        let kt = table(BASE);
        let config = config_json(&kt).expect("config");
        let c = children(&kt, config, 3, &IngesterDefaults::default()).expect("renders");
        for meta in [
            &c.config_map.metadata,
            &c.deployment.metadata,
            &c.service.metadata,
            &c.pdb.metadata,
        ] {
            assert_eq!(meta.name.as_deref(), Some("orders-ingester"));
            assert_eq!(meta.namespace.as_deref(), Some("shop"));
            let owner = &meta.owner_references.as_ref().expect("owner")[0];
            assert_eq!(
                (owner.kind.as_str(), owner.controller),
                ("KafkaTable", Some(true))
            );
        }
        let spec = c.deployment.spec.as_ref().expect("spec");
        assert_eq!(spec.replicas, Some(3));
        let pod = spec.template.spec.as_ref().expect("pod");
        let container = &pod.containers[0];
        let sc = container
            .security_context
            .as_ref()
            .expect("security context");
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(pod.automount_service_account_token, Some(false));
        let mounts: Vec<&str> = container
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert!(mounts.contains(&"/etc/kafkatable/secrets"), "{mounts:?}");
        assert!(mounts.contains(&"/tmp"), "a writable /tmp: {mounts:?}");
        let projected: Vec<String> = pod
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| v.projected.as_ref())
            .flat_map(|p| p.sources.iter().flatten())
            .filter_map(|s| s.secret.as_ref())
            .flat_map(|s| s.items.iter().flatten().map(|i| i.path.clone()))
            .collect();
        assert_eq!(
            projected,
            [
                "kafka-user/password",
                "kafka-user/username",
                "s3/accessKeyId",
                "s3/secretAccessKey"
            ]
        );
        // The config in the ConfigMap is what the ingester loads.
        let text = &c.config_map.data.as_ref().expect("data")[CONFIG_KEY];
        let config: IngesterConfig = serde_json::from_str(text).expect("config");
        assert_eq!(config.source.topic, "orders");
        assert_eq!(
            selector_string(&kt),
            "app.kubernetes.io/name=kafkatable-ingester,kafkatable.io/table=orders"
        );
    }

    #[test]
    fn a_config_map_schema_is_mounted_beside_the_secrets() {
        let mut kt = table(BASE);
        kt.spec.source.format = kafkatable_crds::spec::Format::Protobuf;
        kt.spec.source.schema = Some(kafkatable_crds::spec::GivenSchema {
            text: None,
            config_map_key_ref: Some(kafkatable_crds::spec::ConfigMapKeyReference {
                name: "schemas".into(),
                key: "order.proto".into(),
            }),
            message: None,
        });
        let config = config_json(&kt).expect("config");
        let c = children(&kt, config, 1, &IngesterDefaults::default()).expect("renders");
        let pod = c
            .deployment
            .spec
            .and_then(|s| s.template.spec)
            .expect("pod");
        let projected: Vec<(String, String)> = pod
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| v.projected.as_ref())
            .flat_map(|p| p.sources.iter().flatten())
            .filter_map(|s| s.config_map.as_ref())
            .flat_map(|cm| {
                cm.items
                    .iter()
                    .flatten()
                    .map(|i| (cm.name.clone(), i.path.clone()))
            })
            .collect();
        assert_eq!(
            projected,
            [(
                "schemas".to_string(),
                "_configmaps/schemas/order.proto".to_string()
            )]
        );
        // The rendered config names the file where the pod mounts it.
        let text = &c.config_map.data.as_ref().expect("data")[CONFIG_KEY];
        let config: IngesterConfig = serde_json::from_str(text).expect("config");
        let file = config.source.value_schema.and_then(|g| g.file);
        assert_eq!(file, Some("_configmaps/schemas/order.proto".into()));
    }

    #[test]
    fn spec_changes_roll_the_pods_and_status_changes_do_not() {
        let hash = |kt: &KafkaTable| {
            let config = config_json(kt).expect("config");
            let c = children(kt, config, 1, &IngesterDefaults::default()).expect("renders");
            c.deployment
                .spec
                .expect("spec")
                .template
                .metadata
                .expect("meta")
                .annotations
                .expect("annotations")[CONFIG_HASH_ANNOTATION]
                .clone()
        };
        let kt = table(BASE);
        let mut with_status = kt.clone();
        with_status.status = Some(kafkatable_crds::KafkaTableStatus {
            replicas: 7,
            ..Default::default()
        });
        assert_eq!(hash(&kt), hash(&with_status));
        let mut changed = kt.clone();
        changed.spec.commit.interval = "5s".into();
        assert_ne!(hash(&kt), hash(&changed));
    }
}
