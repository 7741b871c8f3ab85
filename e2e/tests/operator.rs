//! The operator end to end, installed with its Helm chart into a namespace of each test's own:
//! a KafkaTable becomes running ingesters and a table that deltalake reads; `kubectl get kt`
//! tells the truth; a backlog scales the ingesters up and back down with Events, exactly once;
//! a broker or registry outage degrades the table and recovery clears it; an unreachable catalog shows in
//! a condition; deleting the KafkaTable removes its children.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kafkatable_crds::{KafkaTable, KafkaTableStatus};
use kafkatable_e2e::avro::{order_fields, order_schema, produce_avro, serialize_avro};
use kafkatable_e2e::broker::PrivateBroker;
use kafkatable_e2e::env::TestEnv;
use kafkatable_e2e::fixtures::{
    TestBucket, TestNamespace, TestTopic, eventually, kube_client, produce_json, produce_raw,
    python, unique,
};
use kafkatable_e2e::operator::{OperatorRelease, chart_dir, condition, is_true};
use kafkatable_e2e::registry::PrivateRegistry;
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(180);

/// Rows, distinct (partition, offset) pairs and distinct ids of a Delta table, by deltalake.
const DELTA_READER: &str = r#"
import json, sys
from deltalake import DeltaTable
opts = {"AWS_ENDPOINT_URL": sys.argv[2], "AWS_ACCESS_KEY_ID": sys.argv[3], "AWS_SECRET_ACCESS_KEY": sys.argv[4],
        "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true", "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
try:
    dt = DeltaTable(sys.argv[1], storage_options=opts)
except Exception as e:
    print(json.dumps({"rows": 0, "error": str(e)})); sys.exit(0)
t = dt.to_pyarrow_table()
pairs = set(zip(t["_kafka_partition"].to_pylist(), t["_kafka_offset"].to_pylist()))
print(json.dumps({"version": dt.version(), "rows": t.num_rows, "distinct": len(pairs),
                  "ids": len(set(t["id"].to_pylist()))}))
"#;

fn read_delta(env: &TestEnv, location: &str) -> Option<Value> {
    let out = python(
        env,
        DELTA_READER,
        &[
            location,
            &env.s3_endpoint,
            &env.s3_access_key,
            &env.s3_secret_key,
        ],
    )
    .ok()?;
    serde_json::from_str(out.trim()).ok()
}

/// What deltalake reads at `location` once it sees at least `rows` rows.
async fn read_delta_until(env: &TestEnv, location: &str, rows: u64) -> Value {
    eventually(
        &format!("{rows} rows read by deltalake at {location}"),
        DEADLINE,
        || async move {
            let v = read_delta(env, location)?;
            (v["rows"].as_u64()? >= rows).then_some(v)
        },
    )
    .await
}

/// A KafkaTable writing `topic` on `brokers` into a Delta table at `location` on MinIO.
fn delta_table(
    name: &str,
    env: &TestEnv,
    brokers: &str,
    topic: &str,
    location: &str,
    scaling: Value,
) -> Value {
    json!({
        "apiVersion": "kafkatable.io/v1alpha1",
        "kind": "KafkaTable",
        "metadata": {"name": name},
        "spec": {
            "source": {"brokers": brokers, "topic": topic,
                       // A killed or removed member gives its partitions back quickly.
                       "consumerConfig": {"session.timeout.ms": "10000"}},
            "table": {"format": "delta", "location": location,
                      "storage": {"endpoint": env.s3_endpoint, "region": "us-east-1", "pathStyle": true,
                                  "credentialsSecretRef": {"name": "s3"}}},
            "commit": {"interval": "2s"},
            "scaling": scaling,
        },
    })
}

struct Setup {
    env: TestEnv,
    client: kube::Client,
    // Dropped in reverse order: the operator (which deletes the tables) before the namespace.
    ns: TestNamespace,
    operator: OperatorRelease,
    bucket: Option<TestBucket>,
}

impl Setup {
    async fn new(prefix: &str) -> anyhow::Result<Self> {
        Self::with(prefix, &[]).await
    }

    /// A namespace with the operator (chart values `sets` on top of the test defaults), an S3
    /// Secret and a bucket.
    async fn with(prefix: &str, sets: &[&str]) -> anyhow::Result<Self> {
        let env = TestEnv::load()?;
        let client = kube_client(&env).await?;
        let ns = TestNamespace::create(&env, &client, prefix).await?;
        let operator = OperatorRelease::install(&env, &client, &ns.name, sets).await?;
        operator
            .secret(
                "s3",
                &[
                    ("accessKeyId", &env.s3_access_key),
                    ("secretAccessKey", &env.s3_secret_key),
                ],
            )
            .await?;
        let bucket = TestBucket::create(&env, prefix).await?;
        Ok(Self {
            env,
            client,
            ns,
            operator,
            bucket: Some(bucket),
        })
    }

    fn location(&self, table: &str) -> String {
        let bucket = self
            .bucket
            .as_ref()
            .map(|b| b.name.clone())
            .unwrap_or_default();
        format!("s3://{bucket}/{table}")
    }

    async fn events(&self, reason: &str) -> Vec<String> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.ns.name);
        api.list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .map(|e| e.note.unwrap_or_default())
            .collect()
    }

    async fn remove(mut self) {
        if let Some(bucket) = self.bucket.take() {
            let _ = bucket.remove().await;
        }
    }
}

/// Checks, through /proc, that a pod's container process runs from its image: the image's
/// binary as its executable inside a root of its own that is read-only, as uid 65532, and
/// that the kubelet reports the image digest.
fn assert_runs_from_image(pod: &Pod, image: &str, binary: &str) -> anyhow::Result<()> {
    let status = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .ok_or_else(|| anyhow::anyhow!("no container status"))?;
    assert!(
        status.image_id.starts_with(&format!("{image}@sha256:")),
        "imageID {}",
        status.image_id
    );
    let pid: u32 = status
        .container_id
        .as_deref()
        .and_then(|id| id.strip_prefix("process://"))
        .ok_or_else(|| anyhow::anyhow!("no containerID"))?
        .parse()?;
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    // The process has a root of its own (the overlay over the image's unpacked root
    // filesystem) and its executable is the image's binary in it.
    let own_root = std::fs::read_link(proc_dir.join("root"))?;
    assert!(own_root.ends_with("merged"), "root {}", own_root.display());
    assert_eq!(
        std::fs::read_link(proc_dir.join("exe"))?,
        own_root.join(binary.trim_start_matches('/'))
    );
    // The binary is there, the host's checkout is not.
    let root = proc_dir.join("root");
    assert!(root.join(binary.trim_start_matches('/')).is_file());
    assert!(
        !root
            .join(env!("CARGO_MANIFEST_DIR").trim_start_matches('/'))
            .exists()
    );
    let uid_line = std::fs::read_to_string(proc_dir.join("status"))?
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .map(str::to_string)
        .unwrap_or_default();
    assert_eq!(
        uid_line.split_whitespace().skip(1).collect::<Vec<_>>(),
        ["65532"; 4],
        "{uid_line}"
    );
    let err = std::fs::write(root.join("written-by-the-test"), b"x")
        .expect_err("the root filesystem is read-only");
    assert_eq!(err.kind(), std::io::ErrorKind::ReadOnlyFilesystem, "{err}");
    Ok(())
}

/// Whether object `name` of kind `K` is absent from `ns` (None: the API did not answer).
async fn gone<K>(client: &kube::Client, ns: &str, name: &str) -> Option<bool>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    Some(api.get_opt(name).await.ok()?.is_none())
}

fn kubectl(env: &TestEnv, args: &[&str]) -> String {
    let out = Command::new(&env.kubectl)
        .arg("--kubeconfig")
        .arg(&env.kubeconfig)
        .args(args)
        .output()
        .expect("kubectl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn helm_install_then_a_table_lands_reports_ready_and_cleans_up() -> anyhow::Result<()> {
    let s = Setup::new("op-e2e").await?;
    let topic = TestTopic::create(&s.env, "op-e2e", 3).await?;
    produce_json(
        &s.env,
        &topic.name,
        0..3000,
        |i| json!({"id": i, "name": format!("n{i}")}),
    )
    .await?;
    let location = s.location("orders");
    let scaling = json!({"minReplicas": 1, "maxReplicas": 3, "lagPerReplica": 1_000_000});
    s.operator
        .create_table(delta_table(
            "orders",
            &s.env,
            &s.env.kafka_bootstrap,
            &topic.name,
            &location,
            scaling,
        ))
        .await?;

    let status = s
        .operator
        .wait_status(
            "orders",
            "Ready with lag 0 and a table version",
            DEADLINE,
            |st| {
                is_true(st, "Ready")
                    && st.lag.as_ref().is_some_and(|l| l.total == 0)
                    && st.table_version.is_some()
                    && st.sync_points.iter().map(|p| p.offset).sum::<i64>() == 3000
            },
        )
        .await;
    assert_eq!(
        (
            status.replicas,
            status.ready_replicas,
            status.desired_replicas
        ),
        (1, 1, 1)
    );
    assert_eq!(status.partitions, Some(3));
    assert!(!is_true(&status, "Degraded"), "{:?}", status.conditions);
    assert!(status.last_commit_time.is_some());

    // The operator and the ingester run from their images, as the pod's security context says.
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), &s.ns.name);
    for (selector, image, binary) in [
        (
            "app.kubernetes.io/name=kafkatable-operator",
            "ghcr.io/kafkatable/kafkatable-operator",
            "/usr/local/bin/kafkatable-operator",
        ),
        (
            "kafkatable.io/table=orders",
            "ghcr.io/kafkatable/kafkatable-ingester",
            "/usr/local/bin/kafkatable-ingester",
        ),
    ] {
        let pod = pods
            .list(&ListParams::default().labels(selector))
            .await?
            .items
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("no pod {selector}"))?;
        assert_runs_from_image(&pod, image, binary)?;
    }

    // An independent reader sees every record once.
    let seen = read_delta_until(&s.env, &location, 3000).await;
    assert_eq!(
        (
            seen["rows"].as_u64(),
            seen["distinct"].as_u64(),
            seen["ids"].as_u64()
        ),
        (Some(3000), Some(3000), Some(3000))
    );

    // kubectl get shows Ready, the replicas, lag 0 and the table version.
    let row = kubectl(
        &s.env,
        &["get", "kt", "orders", "-n", &s.ns.name, "--no-headers"],
    );
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[..4], &["orders", "True", "1", "0"], "{row}");
    let version: i64 = cols[4].parse()?;
    assert!(version >= status.table_version.unwrap_or(i64::MAX), "{row}");

    // Status refreshes do not roll the ingesters: the Deployment's spec stays at its generation.
    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), &s.ns.name);
    let generation = deployments
        .get("orders-ingester")
        .await?
        .metadata
        .generation;
    tokio::time::sleep(Duration::from_secs(6)).await; // three status intervals, on purpose
    assert_eq!(
        deployments
            .get("orders-ingester")
            .await?
            .metadata
            .generation,
        generation
    );
    // ...and a spec change does.
    s.operator
        .tables()
        .patch(
            "orders",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"commit": {"interval": "3s"}}})),
        )
        .await?;
    let deployments_ref = &deployments;
    eventually(
        "the Deployment rolls after a spec change",
        DEADLINE,
        || async move {
            let g = deployments_ref
                .get("orders-ingester")
                .await
                .ok()?
                .metadata
                .generation;
            (g > generation).then_some(())
        },
    )
    .await;

    // Deleting the KafkaTable removes its children.
    s.operator
        .tables()
        .delete("orders", &DeleteParams::default())
        .await?;
    let client = &s.client;
    let ns = &s.ns.name;
    eventually("the children are gone", DEADLINE, || async move {
        let gone = gone::<Deployment>(client, ns, "orders-ingester").await?
            && gone::<ConfigMap>(client, ns, "orders-ingester").await?
            && gone::<Service>(client, ns, "orders-ingester").await?
            && gone::<PodDisruptionBudget>(client, ns, "orders-ingester").await?
            && gone::<kafkatable_crds::KafkaTable>(client, ns, "orders").await?;
        gone.then_some(())
    })
    .await;
    s.remove().await;
    Ok(())
}

#[tokio::test]
async fn a_backlog_scales_up_and_back_down_exactly_once() -> anyhow::Result<()> {
    let s = Setup::new("op-scale").await?;
    const PARTITIONS: i32 = 4;
    const RECORDS: usize = 40_000;
    let topic = TestTopic::create(&s.env, "op-scale", PARTITIONS).await?;
    produce_json(
        &s.env,
        &topic.name,
        0..RECORDS,
        |i| json!({"id": i, "pad": "x".repeat(64)}),
    )
    .await?;
    let location = s.location("scaled");
    let scaling = json!({"minReplicas": 1, "maxReplicas": 8, "lagPerReplica": 2000, "scaleDownStabilization": "20s"});
    s.operator
        .create_table(delta_table(
            "scaled",
            &s.env,
            &s.env.kafka_bootstrap,
            &topic.name,
            &location,
            scaling,
        ))
        .await?;

    // Up: 40,000 records of lag call for 20 pods; the partition count caps them at 4.
    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), &s.ns.name);
    let deployments = &deployments;
    let mut most = 0;
    let mut reached = false;
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut drained = false;
    while std::time::Instant::now() < deadline {
        let replicas = deployments
            .get_opt("scaled-ingester")
            .await?
            .and_then(|d| d.spec)
            .and_then(|spec| spec.replicas)
            .unwrap_or(0);
        most = most.max(replicas);
        assert!(
            replicas <= PARTITIONS,
            "never more pods than partitions: {replicas}"
        );
        reached |= replicas == PARTITIONS;
        let status = s.operator.status("scaled").await;
        if reached
            && status
                .as_ref()
                .and_then(|st| st.lag.as_ref())
                .is_some_and(|l| l.total == 0)
        {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        reached && drained,
        "scaled to {PARTITIONS} and drained (most {most}):\n{}",
        s.operator.logs()
    );

    // Down: after the 20 s stabilization window, back to one pod.
    let status = s
        .operator
        .wait_status("scaled", "back to one replica", DEADLINE, |st| {
            st.desired_replicas == 1 && st.replicas == 1
        })
        .await;
    assert!(
        status
            .last_scale_reason
            .as_deref()
            .is_some_and(|r| r.contains("to 1")),
        "{status:?}"
    );
    let up = s.events("ScaledUp").await;
    assert!(up.iter().any(|n| n.contains("to 4")), "{up:?}");
    let down = s.events("ScaledDown").await;
    assert!(down.iter().any(|n| n.contains("from 4 to 1")), "{down:?}");

    // Every record exactly once through the rebalances, by an independent reader.
    let seen = read_delta_until(&s.env, &location, RECORDS as u64).await;
    assert_eq!(
        seen["rows"].as_u64(),
        Some(RECORDS as u64),
        "no duplicates: {seen}"
    );
    assert_eq!(seen["distinct"].as_u64(), Some(RECORDS as u64));
    assert_eq!(seen["ids"].as_u64(), Some(RECORDS as u64));
    s.remove().await;
    Ok(())
}

#[tokio::test]
async fn a_broker_outage_degrades_the_table_and_recovery_clears_it() -> anyhow::Result<()> {
    let s = Setup::new("op-health").await?;
    let mut broker = PrivateBroker::start(&s.env)?;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .create()?;
    let topic = "health-events";
    admin
        .create_topics(
            &[NewTopic::new(topic, 2, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await?;
    drop(admin);
    let produce = |range: std::ops::Range<usize>, bootstrap: String| async move {
        let mut env = TestEnv::load()?;
        env.kafka_bootstrap = bootstrap;
        produce_json(&env, topic, range, |i| json!({"id": i})).await?;
        anyhow::Ok(())
    };
    produce(0..500, broker.bootstrap.clone()).await?;
    let location = s.location("health");
    let scaling = json!({"minReplicas": 1, "maxReplicas": 1});
    s.operator
        .create_table(delta_table(
            "health",
            &s.env,
            &broker.bootstrap,
            topic,
            &location,
            scaling,
        ))
        .await?;
    s.operator
        .wait_status(
            "health",
            "Ready with everything committed",
            DEADLINE,
            |st| {
                is_true(st, "Ready")
                    && st.lag.as_ref().is_some_and(|l| l.total == 0)
                    && st.sync_points.iter().map(|p| p.offset).sum::<i64>() == 500
            },
        )
        .await;

    broker.kill();
    let status = s
        .operator
        .wait_status(
            "health",
            "Degraded: the broker is unreachable",
            DEADLINE,
            |st| is_true(st, "Degraded"),
        )
        .await;
    let (_, reason, message) = condition(&status, "Degraded").unwrap_or_default();
    assert_eq!(reason, "BrokerUnreachable", "{message}");
    assert!(
        message.contains(&broker.bootstrap) || message.contains("broker"),
        "{message}"
    );
    assert!(!is_true(&status, "Ready"));
    let warnings = s.events("Degraded").await;
    assert!(!warnings.is_empty(), "a Warning event for the degradation");

    broker.resume()?;
    s.operator
        .wait_status(
            "health",
            "Ready again after the broker returns",
            DEADLINE,
            |st| is_true(st, "Ready") && !is_true(st, "Degraded"),
        )
        .await;
    produce(500..600, broker.bootstrap.clone()).await?;
    let seen = read_delta_until(&s.env, &location, 600).await;
    assert_eq!(
        (seen["rows"].as_u64(), seen["distinct"].as_u64()),
        (Some(600), Some(600))
    );
    s.remove().await;
    Ok(())
}

/// The registry goes away while records of a schema the ingester has not seen yet arrive: they
/// wait (none is skipped, no row of theirs lands), the table shows `Degraded/RegistryUnreachable`,
/// and when the registry returns they all land once and the condition clears.
#[tokio::test]
async fn a_registry_outage_holds_records_back_and_recovery_lands_them() -> anyhow::Result<()> {
    let s = Setup::new("op-registry").await?;
    let mut registry = PrivateRegistry::start(&s.env).await?;
    let topic = TestTopic::create(&s.env, "op-registry", 1).await?;
    let v1 = order_fields();
    produce_avro(
        &s.env,
        &registry.url,
        &topic.name,
        &order_schema(&v1),
        0..100,
    )?;
    let location = s.location("orders");
    let mut manifest = delta_table(
        "orders",
        &s.env,
        &s.env.kafka_bootstrap,
        &topic.name,
        &location,
        json!({"minReplicas": 1, "maxReplicas": 1}),
    );
    manifest["spec"]["source"]["format"] = json!("avro");
    manifest["spec"]["source"]["schemaRegistry"] = json!({"url": registry.url});
    s.operator.create_table(manifest).await?;
    s.operator
        .wait_status("orders", "Ready with v1 committed", DEADLINE, |st| {
            is_true(st, "Ready") && st.sync_points.iter().map(|p| p.offset).sum::<i64>() == 100
        })
        .await;

    // v2 (v1 plus an optional field) is registered while the registry is up, under a schema
    // id the ingester has never looked up; its records reach the topic once it is down.
    let mut v2 = v1.clone();
    v2.push(json!({"name": "qty", "type": ["null", "int"], "default": null}));
    let values = serialize_avro(
        &s.env,
        &registry.url,
        &topic.name,
        &order_schema(&v2),
        100..200,
    )?;
    registry.stop();
    let payloads: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    produce_raw(&s.env, &topic.name, 100, &payloads).await?;
    let status = s
        .operator
        .wait_status(
            "orders",
            "Degraded: the registry is unreachable",
            DEADLINE,
            |st| {
                condition(st, "Degraded")
                    .is_some_and(|(st, reason, _)| st == "True" && reason == "RegistryUnreachable")
            },
        )
        .await;
    let (_, _, message) = condition(&status, "Degraded").unwrap_or_default();
    assert!(message.contains("none is skipped"), "{message}");
    assert!(!is_true(&status, "Ready"));
    assert_eq!(
        status.sync_points.iter().map(|p| p.offset).sum::<i64>(),
        100,
        "nothing past the records that wait is committed"
    );
    let held = read_delta(&s.env, &location).unwrap_or_default();
    assert_eq!(
        held["rows"],
        json!(100),
        "no v2 record skipped past: {held}"
    );

    registry.resume().await?;
    s.operator
        .wait_status("orders", "Ready again with v2 committed", DEADLINE, |st| {
            is_true(st, "Ready")
                && !is_true(st, "Degraded")
                && st.sync_points.iter().map(|p| p.offset).sum::<i64>() == 200
        })
        .await;
    let seen = read_delta_until(&s.env, &location, 200).await;
    assert_eq!(
        (
            seen["rows"].as_u64(),
            seen["distinct"].as_u64(),
            seen["ids"].as_u64()
        ),
        (Some(200), Some(200), Some(200)),
        "every record once: {seen}"
    );
    s.remove().await;
    Ok(())
}

/// Avro values written without a registry (bare bodies) with their schema in a ConfigMap the
/// KafkaTable names: until the ConfigMap exists the status says so (`ConfigMapMissing`); then
/// the operator's pods mount it and every record lands once.
#[tokio::test]
async fn a_schema_in_a_config_map_decodes_bare_avro_values() -> anyhow::Result<()> {
    let s = Setup::new("op-given").await?;
    let topic = TestTopic::create(&s.env, "op-given", 1).await?;
    let schema = order_schema(&order_fields());
    // The Python serializer's values without their wire-format prefix: bare Avro bodies.
    let values = serialize_avro(&s.env, &s.env.registry_url, &topic.name, &schema, 0..100)?;
    let bodies: Vec<&[u8]> = values.iter().map(|v| &v[5..]).collect();
    produce_raw(&s.env, &topic.name, 0, &bodies).await?;
    let location = s.location("orders");
    let mut manifest = delta_table(
        "orders",
        &s.env,
        &s.env.kafka_bootstrap,
        &topic.name,
        &location,
        json!({"minReplicas": 1, "maxReplicas": 1}),
    );
    manifest["spec"]["source"]["format"] = json!("avro");
    manifest["spec"]["source"]["schema"] =
        json!({"configMapKeyRef": {"name": "order-schema", "key": "order.avsc"}});
    s.operator.create_table(manifest).await?;
    let (_, message) = degraded(&s, "orders", "ConfigMapMissing").await;
    assert!(
        message.contains("ConfigMap order-schema does not exist"),
        "{message}"
    );

    let config_maps: Api<ConfigMap> = Api::namespaced(s.client.clone(), &s.ns.name);
    let config_map = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("order-schema".into()),
            ..Default::default()
        },
        data: Some([("order.avsc".to_string(), schema)].into()),
        ..ConfigMap::default()
    };
    config_maps
        .create(&kube::api::PostParams::default(), &config_map)
        .await?;
    s.operator
        .wait_status("orders", "Ready with every record", DEADLINE, |st| {
            is_true(st, "Ready")
                && !is_true(st, "Degraded")
                && st.sync_points.iter().map(|p| p.offset).sum::<i64>() == 100
        })
        .await;
    let seen = read_delta_until(&s.env, &location, 100).await;
    assert_eq!(
        (seen["rows"].as_u64(), seen["distinct"].as_u64()),
        (Some(100), Some(100)),
        "every record once: {seen}"
    );
    s.remove().await;
    Ok(())
}

/// A bad record with `errors.policy: fail` stops its partition: the KafkaTable is
/// Degraded/PartitionStopped naming the topic, partition, offset and reason, and lists it in
/// `status.badRecords`; changing the policy to skip resumes the partition past it, counted.
#[tokio::test]
async fn a_stopped_partition_is_degraded_until_a_new_policy_passes_the_record() -> anyhow::Result<()>
{
    let s = Setup::new("op-stopped").await?;
    let topic = TestTopic::create(&s.env, "op-stopped", 1).await?;
    produce_raw(
        &s.env,
        &topic.name,
        0,
        &[br#"{"id":0}"#, br#"{"id":1}"#, b"{not json", br#"{"id":3}"#],
    )
    .await?;
    let manifest = delta_table(
        "stops",
        &s.env,
        &s.env.kafka_bootstrap,
        &topic.name,
        &s.location("stops"),
        json!({"minReplicas": 1, "maxReplicas": 1}),
    );
    s.operator.create_table(manifest).await?;
    let (status, message) = degraded(&s, "stops", "PartitionStopped").await;
    assert!(
        message.contains(&format!("topic {} partition 0 offset 2", topic.name)),
        "{message}"
    );
    let stopped = status.bad_records.clone().unwrap_or_default().stopped;
    assert_eq!(
        stopped
            .iter()
            .map(|b| (b.partition, b.offset))
            .collect::<Vec<_>>(),
        vec![(0, 2)],
        "{status:?}"
    );
    s.operator
        .tables()
        .patch(
            "stops",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"errors": {"policy": "skip"}}})),
        )
        .await?;
    let status = s
        .operator
        .wait_status("stops", "past the bad record, counted", DEADLINE, |st| {
            !is_true(st, "Degraded")
                && st.sync_points.iter().any(|p| p.offset == 4)
                && st
                    .bad_records
                    .as_ref()
                    .is_some_and(|b| b.skipped == 1 && b.stopped.is_empty())
        })
        .await;
    let last = status
        .bad_records
        .and_then(|b| b.last)
        .expect("the last bad record");
    assert_eq!((last.partition, last.offset), (0, 2));
    s.remove().await;
    Ok(())
}

/// Waits until `name` is Degraded with `reason`: its status, and the condition's message.
async fn degraded(s: &Setup, name: &str, reason: &str) -> (KafkaTableStatus, String) {
    let what = format!("Degraded: {reason}");
    let status = s
        .operator
        .wait_status(name, &what, DEADLINE, |st| {
            condition(st, "Degraded").is_some_and(|(st, r, _)| st == "True" && r == reason)
        })
        .await;
    let (_, _, message) = condition(&status, "Degraded").unwrap_or_default();
    (status, message)
}

#[tokio::test]
async fn an_unreachable_catalog_shows_in_a_condition() -> anyhow::Result<()> {
    let s = Setup::new("op-catalog").await?;
    let topic = TestTopic::create(&s.env, "op-catalog", 1).await?;
    // Nothing listens on port 9 of the loopback.
    let manifest = json!({
        "apiVersion": "kafkatable.io/v1alpha1",
        "kind": "KafkaTable",
        "metadata": {"name": "lost"},
        "spec": {
            "source": {"brokers": s.env.kafka_bootstrap, "topic": topic.name},
            "table": {"format": "iceberg",
                      "catalog": {"type": "rest", "uri": "http://127.0.0.1:9", "namespace": "lake", "table": "lost"}},
            "scaling": {"minReplicas": 1, "maxReplicas": 1},
        },
    });
    s.operator.create_table(manifest).await?;
    let status = s
        .operator
        .wait_status(
            "lost",
            "Degraded: the catalog is unreachable",
            DEADLINE,
            |st| {
                condition(st, "Degraded")
                    .is_some_and(|(st, reason, _)| st == "True" && reason == "TableUnreachable")
            },
        )
        .await;
    let (_, _, message) = condition(&status, "Degraded").unwrap_or_default();
    assert!(
        message.contains("lake.lost") && message.contains("catalog"),
        "{message}"
    );
    assert!(!is_true(&status, "Ready"));
    // The pod keeps running (and retrying) instead of crash-looping with the reason in its log.
    let pods = s.operator.ingester_pods("lost").await;
    let restarts: BTreeSet<i32> = pods
        .iter()
        .flat_map(|p| {
            p.status
                .iter()
                .flat_map(|st| st.container_statuses.iter().flatten())
        })
        .map(|c| c.restart_count)
        .collect();
    assert_eq!(restarts, BTreeSet::from([0]), "no restarts");
    s.remove().await;
    Ok(())
}

/// A setting the schema accepts but the ingester does not implement yet is reported as
/// InvalidSpec, naming the field, and no ingester is started (it would only crash-loop); fixing
/// the spec starts it.
#[tokio::test]
async fn a_setting_not_implemented_yet_is_reported_and_starts_no_pod() -> anyhow::Result<()> {
    let s = Setup::new("op-unimpl").await?;
    let topic = TestTopic::create(&s.env, "op-unimpl", 1).await?;
    let mut manifest = delta_table(
        "later",
        &s.env,
        &s.env.kafka_bootstrap,
        &topic.name,
        &s.location("later"),
        json!({"minReplicas": 1, "maxReplicas": 1}),
    );
    manifest["spec"]["maintenance"] = json!({"compaction": {"enabled": true}});
    s.operator.create_table(manifest).await?;
    let (status, message) = degraded(&s, "later", "InvalidSpec").await;
    assert!(
        message.contains("spec.maintenance.compaction.enabled: true is not implemented yet"),
        "{message}"
    );
    assert!(!is_true(&status, "Ready"));
    assert_eq!(
        gone::<Deployment>(&s.client, &s.ns.name, "later-ingester").await,
        Some(true),
        "no Deployment for a spec the ingester cannot run"
    );
    // Fixed, it runs.
    s.operator
        .tables()
        .patch(
            "later",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"spec": {"maintenance": {"compaction": {"enabled": false}}}}),
            ),
        )
        .await?;
    eventually(
        "the ingester Deployment once the spec is fixed",
        DEADLINE,
        || async {
            (gone::<Deployment>(&s.client, &s.ns.name, "later-ingester").await == Some(false))
                .then_some(())
        },
    )
    .await;
    s.remove().await;
    Ok(())
}

/// A KafkaTable whose topic does not exist says so (`TopicMissing`, naming the topic), not
/// that the brokers are unreachable.
#[tokio::test]
async fn a_topic_that_does_not_exist_is_named_in_the_status() -> anyhow::Result<()> {
    let s = Setup::new("op-notopic").await?;
    let missing = unique("op-notopic");
    let manifest = delta_table(
        "nowhere",
        &s.env,
        &s.env.kafka_bootstrap,
        &missing,
        &s.location("nowhere"),
        json!({"minReplicas": 1, "maxReplicas": 1}),
    );
    s.operator.create_table(manifest).await?;
    let (status, message) = degraded(&s, "nowhere", "TopicMissing").await;
    assert!(
        message.contains(&format!("topic {missing} does not exist")),
        "{message}"
    );
    assert!(!is_true(&status, "Ready"));
    s.remove().await;
    Ok(())
}

/// A KafkaTable against the broker's TLS listener, trusting the CA from a Secret
/// (`tls.caSecretRef`): every record lands. With a CA that did not sign the broker's
/// certificate the status says `TlsHandshakeFailed`, naming the certificate check.
#[tokio::test]
async fn tls_with_the_right_ca_ingests_and_a_wrong_ca_is_named() -> anyhow::Result<()> {
    let s = Setup::new("op-tls").await?;
    let topic = TestTopic::create(&s.env, "op-tls", 2).await?;
    produce_json(&s.env, &topic.name, 0..400, |i| json!({"id": i})).await?;
    let ca = std::fs::read_to_string(&s.env.kafka_tls_ca)?;
    let other = std::fs::read_to_string(&s.env.kafka_tls_other_ca)?;
    s.operator.secret("kafka-ca", &[("ca.crt", &ca)]).await?;
    s.operator.secret("other-ca", &[("ca.crt", &other)]).await?;
    let tls_table = |name: &str, secret: &str| {
        let mut manifest = delta_table(
            name,
            &s.env,
            &s.env.kafka_tls_bootstrap,
            &topic.name,
            &s.location(name),
            json!({"minReplicas": 1, "maxReplicas": 1}),
        );
        manifest["spec"]["source"]["security"] =
            json!({"protocol": "SSL", "tls": {"caSecretRef": {"name": secret}}});
        manifest
    };
    s.operator
        .create_table(tls_table("trusted", "kafka-ca"))
        .await?;
    s.operator
        .create_table(tls_table("untrusted", "other-ca"))
        .await?;
    let seen = read_delta_until(&s.env, &s.location("trusted"), 400).await;
    assert_eq!(
        (seen["rows"].as_u64(), seen["distinct"].as_u64()),
        (Some(400), Some(400))
    );
    let (status, message) = degraded(&s, "untrusted", "TlsHandshakeFailed").await;
    assert!(
        message.contains("TLS handshake failed") && message.contains("certificate verify failed"),
        "{message}"
    );
    assert!(!is_true(&status, "Ready"));
    s.remove().await;
    Ok(())
}

/// A KafkaTable against the broker's SASL/SCRAM listener: with the right credentials (from a
/// Secret) every record lands; with a wrong password the status says `AuthenticationFailed`
/// rather than calling the brokers unreachable.
#[tokio::test]
async fn sasl_scram_ingests_and_wrong_credentials_are_named() -> anyhow::Result<()> {
    let s = Setup::new("op-sasl").await?;
    let topic = TestTopic::create(&s.env, "op-sasl", 2).await?;
    produce_json(&s.env, &topic.name, 0..500, |i| json!({"id": i})).await?;
    s.operator
        .secret(
            "kafka-user",
            &[
                ("username", &s.env.kafka_sasl_username),
                ("password", &s.env.kafka_sasl_password),
            ],
        )
        .await?;
    s.operator
        .secret(
            "kafka-wrong",
            &[
                ("username", &s.env.kafka_sasl_username),
                ("password", "not-the-password"),
            ],
        )
        .await?;
    let sasl_table = |name: &str, secret: &str| {
        let mut manifest = delta_table(
            name,
            &s.env,
            &s.env.kafka_sasl_bootstrap,
            &topic.name,
            &s.location(name),
            json!({"minReplicas": 1, "maxReplicas": 1}),
        );
        manifest["spec"]["source"]["security"] = json!({"protocol": "SASL_PLAINTEXT",
            "sasl": {"mechanism": "SCRAM-SHA-256", "credentialsSecretRef": {"name": secret}}});
        manifest
    };
    s.operator
        .create_table(sasl_table("secured", "kafka-user"))
        .await?;
    s.operator
        .create_table(sasl_table("refused", "kafka-wrong"))
        .await?;
    let location = s.location("secured");
    let seen = read_delta_until(&s.env, &location, 500).await;
    assert_eq!(
        (seen["rows"].as_u64(), seen["distinct"].as_u64()),
        (Some(500), Some(500))
    );
    let (_, message) = degraded(&s, "refused", "AuthenticationFailed").await;
    assert!(message.contains("authentication failed"), "{message}");
    // No secret value anywhere a person or a tool looks: the tables as `kubectl get -o yaml`
    // shows them (spec and status), Events, ConfigMaps, the operator's and the ingesters' logs.
    let ns = s.ns.name.as_str();
    let mut seen = String::new();
    for kind in ["kafkatables", "events", "configmaps", "deployments"] {
        seen.push_str(&kubectl(&s.env, &["-n", ns, "get", kind, "-o", "yaml"]));
    }
    seen.push_str(&s.operator.logs());
    let pods = s.env.run_dir.join("kubelet/pods").join(ns);
    for pod in std::fs::read_dir(&pods).into_iter().flatten().flatten() {
        for file in std::fs::read_dir(pod.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if file.path().extension().is_some_and(|e| e == "log") {
                seen.push_str(&std::fs::read_to_string(file.path()).unwrap_or_default());
            }
        }
    }
    assert!(
        seen.contains("kafka-user") && seen.contains("partition assigned"),
        "the search read the objects and logs ({} bytes)",
        seen.len()
    );
    for secret in [
        s.env.kafka_sasl_password.as_str(),
        "not-the-password",
        s.env.s3_secret_key.as_str(),
    ] {
        assert!(
            !seen.contains(secret),
            "a secret value shows in the objects or logs"
        );
    }
    s.remove().await;
    Ok(())
}

/// A Secret the spec names that does not exist keeps the pod from starting; the status says
/// which (`SecretMissing`), instead of nothing while the pod waits.
#[tokio::test]
async fn a_secret_that_does_not_exist_is_named_in_the_status() -> anyhow::Result<()> {
    let s = Setup::new("op-nosecret").await?;
    let topic = TestTopic::create(&s.env, "op-nosecret", 1).await?;
    let mut manifest = delta_table(
        "locked",
        &s.env,
        &s.env.kafka_bootstrap,
        &topic.name,
        &s.location("locked"),
        json!({"minReplicas": 1, "maxReplicas": 1}),
    );
    manifest["spec"]["table"]["storage"]["credentialsSecretRef"] = json!({"name": "absent-creds"});
    s.operator.create_table(manifest).await?;
    let (status, message) = degraded(&s, "locked", "SecretMissing").await;
    assert!(
        message.contains("Secret absent-creds does not exist"),
        "{message}"
    );
    assert!(!is_true(&status, "Ready"));
    s.remove().await;
    Ok(())
}

/// Resources the API server refuses in a Deployment (requests above limits) and a pod label
/// value with a space pass the CRD's schema; the refusal shows in the status, naming the
/// fields, instead of a table without one.
#[tokio::test]
async fn a_child_the_api_refuses_is_reported_in_the_status() -> anyhow::Result<()> {
    let s = Setup::new("op-refused").await?;
    let topic = TestTopic::create(&s.env, "op-refused", 1).await?;
    let mut manifest = delta_table(
        "greedy",
        &s.env,
        &s.env.kafka_bootstrap,
        &topic.name,
        &s.location("greedy"),
        json!({"minReplicas": 1, "maxReplicas": 1}),
    );
    manifest["spec"]["ingester"] = json!({
        "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}},
        "podLabels": {"team": "data lake"},
    });
    s.operator.create_table(manifest).await?;
    let status = s
        .operator
        .wait_status(
            "greedy",
            "Degraded: the Deployment was refused",
            DEADLINE,
            |st| {
                condition(st, "Degraded")
                    .is_some_and(|(st, reason, _)| st == "True" && reason == "InvalidSpec")
            },
        )
        .await;
    let (_, _, message) = condition(&status, "Degraded").unwrap_or_default();
    assert!(
        message.contains("Deployment greedy-ingester")
            && message.contains("resources")
            && message.contains("data lake"),
        "{message}"
    );
    assert_eq!(status.observed_generation, Some(1));
    s.remove().await;
    Ok(())
}

/// Two KafkaTables on one topic and one table were fenced correctly but raced on every commit,
/// and nothing said so. Now both report it, naming the other; deleting one clears it.
#[tokio::test]
async fn two_tables_writing_one_table_from_one_topic_are_reported() -> anyhow::Result<()> {
    let s = Setup::new("op-twins").await?;
    let topic = TestTopic::create(&s.env, "op-twins", 1).await?;
    let location = s.location("shared");
    for name in ["twin-a", "twin-b"] {
        s.operator
            .create_table(delta_table(
                name,
                &s.env,
                &s.env.kafka_bootstrap,
                &topic.name,
                &location,
                json!({"minReplicas": 1, "maxReplicas": 1}),
            ))
            .await?;
    }
    let ns = s.ns.name.clone();
    for (name, other) in [("twin-a", "twin-b"), ("twin-b", "twin-a")] {
        let (_, message) = degraded(&s, name, "TableShared").await;
        assert!(message.contains(&format!("{ns}/{other}")), "{message}");
    }
    s.operator
        .tables()
        .delete("twin-b", &DeleteParams::default())
        .await?;
    s.operator
        .wait_status("twin-a", "TableShared cleared", DEADLINE, |st| {
            condition(st, "Degraded").is_none_or(|(_, reason, _)| reason != "TableShared")
        })
        .await;
    s.remove().await;
    Ok(())
}

/// Two operator replicas: one holds the Lease and reconciles; deleting its pod hands the Lease
/// to the other, which carries on. With the built-in autoscaler off, `kubectl scale` drives
/// the ingesters; `suspend` scales them to zero and says so; the opt-in annotation deletes the
/// consumer group with the table.
#[tokio::test]
async fn two_operators_kubectl_scale_suspend_and_group_deletion() -> anyhow::Result<()> {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Pod;
    use kafkatable_e2e::fixtures::group_offsets;

    let s = Setup::with("op-lease", &["replicaCount=2"]).await?;
    let (env, client, operator) = (&s.env, &s.client, &s.operator);
    let topic = TestTopic::create(env, "op-lease", 2).await?;
    produce_json(env, &topic.name, 0..200, |i| json!({"id": i})).await?;

    let leases: Api<Lease> = Api::namespaced(client.clone(), &s.ns.name);
    let holder = |lease: Option<Lease>| {
        lease
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .unwrap_or_default()
    };
    let leases_ref = &leases;
    let first = eventually("a leader", DEADLINE, || async move {
        Some(holder(
            leases_ref.get_opt("kt-kafkatable-operator").await.ok()?,
        ))
        .filter(|h| !h.is_empty())
    })
    .await;

    let location = s.location("manual");
    let mut manifest = delta_table(
        "manual",
        env,
        &env.kafka_bootstrap,
        &topic.name,
        &location,
        json!({"autoscale": false}),
    );
    manifest["spec"]["replicas"] = json!(1);
    manifest["metadata"]["annotations"] = json!({"kafkatable.io/delete-consumer-group": "true"});
    operator.create_table(manifest).await?;
    operator
        .wait_status("manual", "Ready with one ingester", DEADLINE, |st| {
            is_true(st, "Ready")
                && st.ready_replicas == 1
                && st.lag.as_ref().is_some_and(|l| l.total == 0)
        })
        .await;

    // The leader goes away; the other replica takes the Lease and keeps reconciling.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &s.ns.name);
    pods.delete(&first, &DeleteParams::default()).await?;
    let first_ref = &first;
    let second = eventually("another leader", DEADLINE, || async move {
        let h = holder(leases_ref.get_opt("kt-kafkatable-operator").await.ok()?);
        (!h.is_empty() && h != *first_ref).then_some(h)
    })
    .await;
    assert_ne!(first, second);

    // kubectl scale through the scale subresource.
    let out = Command::new(&env.kubectl)
        .arg("--kubeconfig")
        .arg(&env.kubeconfig)
        .args(["scale", "kt/manual", "--replicas=2", "-n", &s.ns.name])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    operator
        .wait_status(
            "manual",
            "two ingesters after kubectl scale",
            DEADLINE,
            |st| st.desired_replicas == 2 && st.ready_replicas == 2 && is_true(st, "Ready"),
        )
        .await;

    // Suspend: zero ingesters, and the status says why.
    operator
        .tables()
        .patch(
            "manual",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"suspend": true}})),
        )
        .await?;
    let status = operator
        .wait_status("manual", "suspended", DEADLINE, |st| {
            st.desired_replicas == 0 && st.replicas == 0
        })
        .await;
    let (ready, reason, _) = condition(&status, "Ready").unwrap_or_default();
    assert_eq!((ready.as_str(), reason.as_str()), ("True", "Suspended"));
    assert_eq!(
        status.sync_points.iter().map(|p| p.offset).sum::<i64>(),
        200,
        "sync points stay"
    );

    // Deleting the table deletes its consumer group (opt-in annotation).
    let group = format!("kafkatable.{}.manual", s.ns.name);
    assert!(
        !group_offsets(env, &group, &topic.name, 2)?.is_empty(),
        "the group has offsets"
    );
    operator
        .tables()
        .delete("manual", &DeleteParams::default())
        .await?;
    let tables = operator.tables();
    let tables_ref = &tables;
    eventually("the table is gone", DEADLINE, || async move {
        tables_ref
            .get_opt("manual")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        group_offsets(env, &group, &topic.name, 2)?.is_empty(),
        "the group is deleted"
    );
    s.remove().await;
    Ok(())
}

/// The chart's RBAC in both modes, checked by the API server's own authorizer: the cluster-wide
/// role (applied under a unique name, bound to a ServiceAccount of the test's namespace) allows
/// what the operator does and nothing more; the namespaced mode renders no cluster-wide object.
#[tokio::test]
async fn chart_rbac_is_least_privilege_in_both_modes() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let client = kube_client(&env).await?;
    let ns = TestNamespace::create(&env, &client, "op-rbac").await?;
    let release = ns.name.clone(); // unique, so the ClusterRole does not collide
    let helm = |extra: &[&str]| -> anyhow::Result<String> {
        let out = Command::new(&env.helm)
            .args(["template", &release])
            .arg(kafkatable_e2e::operator::chart_dir())
            .args(["--namespace", &ns.name, "--kube-version", "1.34.1"])
            .args(extra)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    };
    let kinds = |yaml: &str| -> Vec<String> {
        yaml.lines()
            .filter_map(|l| l.strip_prefix("kind: "))
            .map(str::to_string)
            .collect()
    };
    let namespaced = helm(&["--set", &format!("watchNamespace={}", ns.name)])?;
    let k = kinds(&namespaced);
    assert!(
        !k.iter().any(|k| k.starts_with("Cluster")),
        "namespaced mode: {k:?}"
    );
    let cluster = helm(&[])?;
    let k = kinds(&cluster);
    assert!(
        k.contains(&"ClusterRole".to_string()) && k.contains(&"ClusterRoleBinding".to_string()),
        "{k:?}"
    );

    // Apply only the ServiceAccount and RBAC objects of the cluster-wide mode.
    let rbac: String = cluster
        .split("\n---")
        .filter(|doc| {
            [
                "kind: ServiceAccount",
                "kind: ClusterRole",
                "kind: ClusterRoleBinding",
                "kind: Role",
                "kind: RoleBinding",
            ]
            .iter()
            .any(|k| doc.lines().any(|l| l == *k))
        })
        .collect::<Vec<_>>()
        .join("\n---\n");
    let file = std::env::temp_dir().join(format!("{release}-rbac.yaml"));
    std::fs::write(&file, &rbac)?;
    let applied = Command::new(&env.kubectl)
        .arg("--kubeconfig")
        .arg(&env.kubeconfig)
        .args(["apply", "-f"])
        .arg(&file)
        .output()?;
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let who = format!(
        "system:serviceaccount:{}:{release}-kafkatable-operator",
        ns.name
    );
    let can = |verb: &str, resource: &str, scope: &[&str]| -> bool {
        let out = Command::new(&env.kubectl)
            .arg("--kubeconfig")
            .arg(&env.kubeconfig)
            .args(["auth", "can-i", verb, resource, "--as", &who])
            .args(scope)
            .output()
            .expect("kubectl runs");
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    let everywhere: &[&str] = &["--all-namespaces"];
    let other_ns: &[&str] = &["-n", "kube-system"];
    let result = std::panic::catch_unwind(|| {
        for (verb, resource) in [
            ("watch", "kafkatables.kafkatable.io"),
            ("patch", "kafkatables.kafkatable.io/status"),
            ("update", "kafkatables.kafkatable.io/finalizers"),
            ("create", "deployments.apps"),
            ("patch", "deployments.apps"),
            ("watch", "pods"),
            ("create", "poddisruptionbudgets.policy"),
            ("patch", "configmaps"),
            ("create", "events.events.k8s.io"),
        ] {
            assert!(
                can(verb, resource, everywhere),
                "the operator may {verb} {resource}"
            );
        }
        assert!(
            can("get", "secrets", other_ns),
            "reads the Secrets a KafkaTable names"
        );
        for (verb, resource) in [
            ("list", "secrets"),
            ("delete", "deployments.apps"),
            ("delete", "kafkatables.kafkatable.io"),
            ("create", "pods"),
            ("delete", "pods"),
            ("create", "clusterroles.rbac.authorization.k8s.io"),
            ("update", "nodes"),
            ("create", "customresourcedefinitions.apiextensions.k8s.io"),
        ] {
            assert!(
                !can(verb, resource, everywhere),
                "the operator may not {verb} {resource}"
            );
        }
        // The leader Lease: only in the release namespace.
        assert!(can(
            "update",
            "leases.coordination.k8s.io",
            &["-n", &ns.name]
        ));
        assert!(!can("update", "leases.coordination.k8s.io", other_ns));
    });
    let _ = Command::new(&env.kubectl)
        .arg("--kubeconfig")
        .arg(&env.kubeconfig)
        .args(["delete", "--ignore-not-found", "-f"])
        .arg(&file)
        .output();
    let _ = std::fs::remove_file(&file);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    Ok(())
}

/// Ingesters that crash-loop before committing anything will not get better on their own: the
/// table is `Stalled` (kstatus: Failed, Argo CD: Degraded), not merely in progress, so a GitOps
/// rollout fails fast instead of waiting out its timeout.
#[tokio::test]
async fn pods_that_crash_loop_with_nothing_committed_stall_the_table() -> anyhow::Result<()> {
    let s = Setup::new("op-crash").await?;
    let topic = TestTopic::create(&s.env, "op-crash", 1).await?;
    produce_json(&s.env, &topic.name, 0..50, |i| json!({"id": i})).await?;
    let mut manifest = delta_table(
        "broken",
        &s.env,
        &s.env.kafka_bootstrap,
        &topic.name,
        &s.location("broken"),
        json!({"minReplicas": 1, "maxReplicas": 1}),
    );
    // An image that is not the ingester (the test toolbox: its shell cannot run `run -f
    // <config>`): the container exits at start, every time.
    manifest["spec"]["ingester"] = json!({"image": "localhost/kafkatable-e2e-toolbox:test"});
    s.operator.create_table(manifest).await?;
    let status = s
        .operator
        .wait_status("broken", "Stalled: PodsCrashLooping", DEADLINE, |st| {
            condition(st, "Stalled")
                .is_some_and(|(v, reason, _)| v == "True" && reason == "PodsCrashLooping")
        })
        .await;
    let (_, _, message) = condition(&status, "Stalled").unwrap_or_default();
    assert!(
        message.contains("restarted") && message.contains("nothing was ever committed"),
        "{message}"
    );
    let (_, reason, _) = condition(&status, "Degraded").unwrap_or_default();
    assert_eq!(reason, "PodsCrashLooping");
    assert!(status.sync_points.iter().all(|p| p.offset == 0) || status.sync_points.is_empty());

    let dir = s.env.run_dir.join("health-objects").join(&s.ns.name);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("crash-looping.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&s.operator.tables().get("broken").await?)?,
    )?;
    let out = Command::new(&s.env.health)
        .arg(chart_dir().join("argocd/health.lua"))
        .arg(&path)
        .output()?;
    let verdict: Value = serde_json::from_slice(&out.stdout)?;
    println!(
        "| crash-looping | {} | {} | {} |",
        verdict["kstatus"], verdict["argo"], verdict["argoMessage"]
    );
    assert_eq!(
        (verdict["kstatus"].as_str(), verdict["argo"].as_str()),
        (Some("Failed"), Some("Degraded")),
        "{verdict}"
    );
    s.remove().await;
    Ok(())
}

/// What GitOps tools make of a KafkaTable, checked with their own code on objects captured from
/// a real operator: the kstatus library (Flux, Helm 4's watcher, kstatus-based waiters) and the
/// chart's Argo CD health script run by gopher-lua, the Lua VM Argo CD embeds (kt-health).
#[tokio::test]
async fn gitops_tools_read_each_state_as_meant() -> anyhow::Result<()> {
    let s = Setup::new("op-health").await?;
    let topic = TestTopic::create(&s.env, "op-health", 2).await?;
    produce_json(&s.env, &topic.name, 0..200, |i| json!({"id": i})).await?;
    let dir = s.env.run_dir.join("health-objects").join(&s.ns.name);
    std::fs::create_dir_all(&dir)?;
    let tables = s.operator.tables();
    let capture = async |name: &str, state: &str| -> anyhow::Result<()> {
        let kt = tables.get(name).await?;
        std::fs::write(
            dir.join(format!("{state}.json")),
            serde_json::to_vec_pretty(&kt)?,
        )?;
        Ok(())
    };
    let one = json!({"minReplicas": 1, "maxReplicas": 1});

    // Created, rolling out, ready, then suspended. A watch keeps every version of the object,
    // so the short-lived first states are caught whatever the timing.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<KafkaTable>::new()));
    let watch = {
        let (tables, seen) = (tables.clone(), seen.clone());
        tokio::spawn(async move {
            let config = kube::runtime::watcher::Config::default().fields("metadata.name=ready");
            let mut events = kube::runtime::watcher(tables, config).boxed();
            while let Some(Ok(event)) = events.next().await {
                if let kube::runtime::watcher::Event::Apply(kt)
                | kube::runtime::watcher::Event::InitApply(kt) = event
                {
                    seen.lock().expect("lock").push(kt);
                }
            }
        })
    };
    let location = s.location("ready");
    let manifest = delta_table(
        "ready",
        &s.env,
        &s.env.kafka_bootstrap,
        &topic.name,
        &location,
        one.clone(),
    );
    s.operator.create_table(manifest).await?;
    s.operator
        .wait_status("ready", "Ready", DEADLINE, |st| {
            is_true(st, "Ready") && st.lag.as_ref().is_some_and(|l| l.total == 0)
        })
        .await;
    capture("ready", "ready").await?;
    watch.abort();
    let versions = seen.lock().expect("lock").clone();
    for (state, reason) in [("created", "Created"), ("rolling-out", "RollingOut")] {
        let kt = versions
            .iter()
            .find(|kt| {
                kt.status.as_ref().is_some_and(|st| {
                    condition(st, "Reconciling").is_some_and(|(v, r, _)| v == "True" && r == reason)
                })
            })
            .ok_or_else(|| anyhow::anyhow!("no version with Reconciling {reason}"))?;
        std::fs::write(
            dir.join(format!("{state}.json")),
            serde_json::to_vec_pretty(kt)?,
        )?;
    }
    tables
        .patch(
            "ready",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"suspend": true}})),
        )
        .await?;
    s.operator
        .wait_status("ready", "suspended and scaled down", DEADLINE, |st| {
            condition(st, "Ready").is_some_and(|(_, reason, _)| reason == "Suspended")
                && !is_true(st, "Reconciling")
        })
        .await;
    capture("ready", "suspended").await?;

    // Degraded: the topic does not exist (it may yet be created: not stalled).
    let missing = unique("op-health-missing");
    let manifest = delta_table(
        "nowhere",
        &s.env,
        &s.env.kafka_bootstrap,
        &missing,
        &s.location("nowhere"),
        one.clone(),
    );
    s.operator.create_table(manifest).await?;
    s.operator
        .wait_status("nowhere", "Degraded: TopicMissing", DEADLINE, |st| {
            condition(st, "Degraded")
                .is_some_and(|(v, reason, _)| v == "True" && reason == "TopicMissing")
        })
        .await;
    capture("nowhere", "degraded").await?;

    // Invalid: a setting not implemented yet (stalled until the spec changes).
    let mut manifest = delta_table(
        "later",
        &s.env,
        &s.env.kafka_bootstrap,
        &topic.name,
        &s.location("later"),
        one,
    );
    manifest["spec"]["table"]["mode"] = json!("upsert");
    manifest["spec"]["table"]["keyFields"] = json!(["id"]);
    s.operator.create_table(manifest).await?;
    s.operator
        .wait_status("later", "Stalled: InvalidSpec", DEADLINE, |st| {
            condition(st, "Stalled")
                .is_some_and(|(v, reason, _)| v == "True" && reason == "InvalidSpec")
        })
        .await;
    capture("later", "invalid").await?;

    // `kubectl wait` reads the same conditions.
    let ns = s.ns.name.as_str();
    for (table, condition) in [("ready", "Ready"), ("later", "Stalled")] {
        let waited = kubectl(
            &s.env,
            &[
                "-n",
                ns,
                "wait",
                &format!("--for=condition={condition}"),
                &format!("kt/{table}"),
                "--timeout=30s",
            ],
        );
        assert!(
            waited.contains("condition met"),
            "kubectl wait {condition} on {table}: {waited}"
        );
    }

    // Deleting: a finalizer of the test's own holds the object while it is captured.
    tables
        .patch(
            "nowhere",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Json::<()>(serde_json::from_value(json!([
                {"op": "add", "path": "/metadata/finalizers/-", "value": "e2e.kafkatable.io/hold"}
            ]))?),
        )
        .await?;
    tables.delete("nowhere", &DeleteParams::default()).await?;
    eventually("the deletion to be under way", DEADLINE, || async {
        tables
            .get("nowhere")
            .await
            .ok()?
            .metadata
            .deletion_timestamp
            .map(|_| ())
    })
    .await;
    capture("nowhere", "deleting").await?;
    tables
        .patch(
            "nowhere",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await?;

    // A spec change the operator has not seen yet: the ready object one generation on (made
    // from the capture, as a watch would show it between the update and the next status).
    let mut unobserved: Value = serde_json::from_slice(&std::fs::read(dir.join("ready.json"))?)?;
    let generation = unobserved["metadata"]["generation"].as_i64().unwrap_or(1);
    unobserved["metadata"]["generation"] = json!(generation + 1);
    std::fs::write(
        dir.join("unobserved.json"),
        serde_json::to_vec_pretty(&unobserved)?,
    )?;

    let states = [
        "created",
        "rolling-out",
        "ready",
        "unobserved",
        "suspended",
        "degraded",
        "invalid",
        "deleting",
    ];
    let script = chart_dir().join("argocd/health.lua");
    let out = Command::new(&s.env.health)
        .arg(&script)
        .args(states.iter().map(|st| dir.join(format!("{st}.json"))))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "kt-health failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<Value> = String::from_utf8(out.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    println!("| object | kstatus | Argo CD | Argo CD message |\n|---|---|---|---|");
    for (state, v) in states.iter().zip(&verdicts) {
        println!(
            "| {state} | {} | {} | {} |",
            v["kstatus"], v["argo"], v["argoMessage"]
        );
    }
    let got: Vec<(&str, &str)> = verdicts
        .iter()
        .map(|v| {
            (
                v["kstatus"].as_str().unwrap_or(""),
                v["argo"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("InProgress", "Progressing"),
            ("InProgress", "Progressing"),
            ("Current", "Healthy"),
            ("InProgress", "Progressing"),
            ("Current", "Suspended"),
            ("InProgress", "Degraded"),
            ("Failed", "Degraded"),
            ("Terminating", "Progressing"),
        ],
        "verdicts for {states:?}: {verdicts:#?}"
    );
    s.remove().await;
    Ok(())
}
