//! Fresh, uniquely named resources for one test: a Kubernetes namespace, a Kafka topic, an S3
//! bucket. Namespaces and topics are removed when the fixture is dropped (even when the test
//! panics); buckets are emptied and removed by `Bucket::remove`.

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kafkatable_crds::KafkaTable;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

use crate::env::TestEnv;

/// A failure while setting up or tearing down a fixture.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("kubernetes: cannot {action}: {source}")]
    Kube {
        action: &'static str,
        source: kube::Error,
    },
    #[error("kafka: cannot {action} topic {topic}: {reason}")]
    Kafka {
        action: &'static str,
        topic: String,
        reason: String,
    },
    #[error("s3: cannot {action} bucket {bucket}: {reason}")]
    S3 {
        action: &'static str,
        bucket: String,
        reason: String,
    },
    #[error("kubeconfig: {0}")]
    Config(String),
    #[error("kafka: cannot {0}")]
    Group(String),
}

/// A short random suffix that keeps names of parallel tests apart.
pub fn unique(prefix: &str) -> String {
    let n: u32 = rand::random();
    format!("{prefix}-{n:08x}")
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An admin client for the test cluster.
pub async fn kube_client(env: &TestEnv) -> Result<kube::Client, FixtureError> {
    let kubeconfig = kube::config::Kubeconfig::read_from(&env.kubeconfig)
        .map_err(|e| FixtureError::Config(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| FixtureError::Config(e.to_string()))?;
    kube::Client::try_from(config).map_err(|source| FixtureError::Kube {
        action: "build a client",
        source,
    })
}

/// A namespace of its own for one test, deleted on drop.
pub struct TestNamespace {
    pub name: String,
    kubectl: std::path::PathBuf,
    kubeconfig: std::path::PathBuf,
}

impl TestNamespace {
    pub async fn create(
        env: &TestEnv,
        client: &kube::Client,
        prefix: &str,
    ) -> Result<Self, FixtureError> {
        let name = unique(prefix);
        let api: Api<Namespace> = Api::all(client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("kafkatable.io/test".to_string(), "true".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        api.create(&PostParams::default(), &ns)
            .await
            .map_err(|source| FixtureError::Kube {
                action: "create a namespace",
                source,
            })?;
        // Pods are admitted only once the namespace's default ServiceAccount exists.
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        let accounts = &accounts;
        eventually(
            "the default ServiceAccount",
            Duration::from_secs(30),
            || async move { accounts.get_opt("default").await.ok().flatten() },
        )
        .await;
        Ok(Self {
            name,
            kubectl: env.kubectl.clone(),
            kubeconfig: env.kubeconfig.clone(),
        })
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop cannot await; kubectl needs no runtime and deletes in the background.
        let _ = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .output();
    }
}

/// Client settings for the broker: PLAINTEXT, or SASL/SCRAM when `sasl` is set.
pub fn kafka_config(env: &TestEnv, sasl: bool) -> ClientConfig {
    let mut config = ClientConfig::new();
    if sasl {
        config
            .set("bootstrap.servers", &env.kafka_sasl_bootstrap)
            .set("security.protocol", "SASL_PLAINTEXT")
            .set("sasl.mechanism", "SCRAM-SHA-512")
            .set("sasl.username", &env.kafka_sasl_username)
            .set("sasl.password", &env.kafka_sasl_password);
    } else {
        config.set("bootstrap.servers", &env.kafka_bootstrap);
    }
    config
}

/// A topic of its own for one test, deleted on drop.
pub struct TestTopic {
    pub name: String,
    pub partitions: i32,
    admin: AdminClient<DefaultClientContext>,
}

impl TestTopic {
    pub async fn create(
        env: &TestEnv,
        prefix: &str,
        partitions: i32,
    ) -> Result<Self, FixtureError> {
        Self::create_with(env, prefix, partitions, &[]).await
    }

    /// A topic with topic configs `config` (`max.message.bytes`, say).
    pub async fn create_with(
        env: &TestEnv,
        prefix: &str,
        partitions: i32,
        config: &[(&str, &str)],
    ) -> Result<Self, FixtureError> {
        let name = unique(prefix);
        let err = |reason: String| FixtureError::Kafka {
            action: "create",
            topic: name.clone(),
            reason,
        };
        let admin: AdminClient<DefaultClientContext> = kafka_config(env, false)
            .create()
            .map_err(|e| err(e.to_string()))?;
        let mut topic = NewTopic::new(&name, partitions, TopicReplication::Fixed(1));
        for (key, value) in config {
            topic = topic.set(key, value);
        }
        let results = admin
            .create_topics(
                [&topic],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            )
            .await
            .map_err(|e| err(e.to_string()))?;
        for r in results {
            r.map_err(|(_, code)| err(code.to_string()))?;
        }
        Ok(Self {
            name,
            partitions,
            admin,
        })
    }
}

impl Drop for TestTopic {
    fn drop(&mut self) {
        // rdkafka's admin futures are driven by librdkafka's own thread, so blocking here is fine.
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let _ = futures::executor::block_on(self.admin.delete_topics(&[self.name.as_str()], &opts));
    }
}

/// An S3 bucket of its own for one test.
pub struct TestBucket {
    pub name: String,
    endpoint: String,
    credentials: rusty_s3::Credentials,
    region: String,
}

impl TestBucket {
    pub async fn create(env: &TestEnv, prefix: &str) -> Result<Self, FixtureError> {
        let bucket = Self {
            name: unique(prefix),
            endpoint: env.s3_endpoint.clone(),
            credentials: rusty_s3::Credentials::new(&env.s3_access_key, &env.s3_secret_key),
            region: env.s3_region.clone(),
        };
        let handle = bucket.bucket()?;
        let url = rusty_s3::S3Action::sign(&handle.create_bucket(&bucket.credentials), PRESIGN);
        bucket.send(reqwest::Method::PUT, url, "create").await?;
        Ok(bucket)
    }

    /// An object store on this bucket, as the ingester will configure it.
    pub fn store(&self) -> Result<object_store::aws::AmazonS3, FixtureError> {
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_bucket_name(&self.name)
            .with_region(&self.region)
            .with_access_key_id(self.credentials.key())
            .with_secret_access_key(self.credentials.secret())
            .with_allow_http(true)
            .build()
            .map_err(|e| self.err("open", e.to_string()))
    }

    /// Deletes every object, then the bucket.
    pub async fn remove(self) -> Result<(), FixtureError> {
        use futures::{StreamExt, TryStreamExt};
        use object_store::ObjectStore;
        let store = self.store()?;
        let paths = store.list(None).map_ok(|m| m.location).boxed();
        store
            .delete_stream(paths)
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| self.err("empty", e.to_string()))?;
        let handle = self.bucket()?;
        let url = rusty_s3::S3Action::sign(&handle.delete_bucket(&self.credentials), PRESIGN);
        self.send(reqwest::Method::DELETE, url, "delete").await
    }

    fn bucket(&self) -> Result<rusty_s3::Bucket, FixtureError> {
        let url = self
            .endpoint
            .parse()
            .map_err(|e: url::ParseError| self.err("address", e.to_string()))?;
        rusty_s3::Bucket::new(
            url,
            rusty_s3::UrlStyle::Path,
            self.name.clone(),
            self.region.clone(),
        )
        .map_err(|e| self.err("address", e.to_string()))
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: url::Url,
        action: &'static str,
    ) -> Result<(), FixtureError> {
        let response = reqwest::Client::new()
            .request(method, url)
            .send()
            .await
            .map_err(|e| self.err(action, e.to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        Err(self.err(action, format!("{status}: {body}")))
    }

    fn err(&self, action: &'static str, reason: String) -> FixtureError {
        FixtureError::S3 {
            action,
            bucket: self.name.clone(),
            reason,
        }
    }
}

const PRESIGN: Duration = Duration::from_secs(300);

/// Runs a Python script in the readers' venv (deltalake, pyiceberg, polars, duckdb,
/// confluent-kafka) with `args`, and returns its standard output. A failing script is an error
/// carrying its standard error.
///
/// The script runs inside a wrapper that leaves through `os._exit` once it is done: native
/// readers may still have threads running at interpreter teardown, which can abort a process
/// whose work succeeded ("terminate called without an active exception").
pub fn python(env: &TestEnv, script: &str, args: &[&str]) -> Result<String, PythonError> {
    const WRAPPER: &str = r#"
import os, sys, traceback
code = 0
try:
    exec(compile(os.environ["KT_PYTHON_SCRIPT"], "<test script>", "exec"), {"__name__": "__main__"})
except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
except BaseException:
    traceback.print_exc()
    code = 1
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
"#;
    let output = Command::new(&env.python)
        .arg("-c")
        .arg(WRAPPER)
        .args(args)
        .env("KT_PYTHON_SCRIPT", script)
        .output()
        .map_err(|e| PythonError(format!("cannot run {}: {e}", env.python.display())))?;
    if !output.status.success() {
        return Err(PythonError(format!(
            "{} exited with {}:\n{}",
            env.python.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A Python reader failed; the message holds its standard error.
#[derive(Debug, thiserror::Error)]
#[error("python: {0}")]
pub struct PythonError(String);

impl PythonError {
    pub fn new(message: String) -> Self {
        Self(message)
    }
}

/// The log file the process kubelet writes for a container of a pod (there is no `kubectl
/// logs`): `$KAFKATABLE_RUN/kubelet/pods/<namespace>/<pod>-<uid prefix>/<container>.log`.
pub fn pod_log(env: &TestEnv, namespace: &str, pod: &str, container: &str) -> Option<String> {
    let dir = env.run_dir.join("kubelet/pods").join(namespace);
    let prefix = format!("{pod}-");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .find_map(|e| std::fs::read_to_string(e.path().join(format!("{container}.log"))).ok())
}

/// 96 pseudo-random hex digits derived from `id` (splitmix64): text that zstd compresses only
/// about 2:1, to make files of a known size from few records.
pub fn noise(id: usize) -> String {
    (0..6u64)
        .map(|k| {
            let mut z = (id as u64 * 6 + k)
                .wrapping_add(1)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            format!("{:016x}", z ^ (z >> 31))
        })
        .collect()
}

/// Produces one JSON record per id (key `k<id>`, value `payload(id)`) and waits for every
/// delivery.
pub async fn produce_json(
    env: &TestEnv,
    topic: &str,
    ids: std::ops::Range<usize>,
    payload: impl Fn(usize) -> serde_json::Value,
) -> Result<(), rdkafka::error::KafkaError> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = kafka_config(env, false).set("linger.ms", "5").create()?;
    let sends = ids.map(|i| {
        let producer = producer.clone();
        let value = payload(i).to_string();
        async move {
            let key = format!("k{i}");
            let record = FutureRecord::to(topic).key(&key).payload(&value);
            producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)
        }
    });
    for delivery in futures::future::join_all(sends).await {
        delivery?;
    }
    Ok(())
}

/// Produces `payloads` in order to partition 0 of `topic` (key `k<n>` for the n-th, counting
/// from `first_key`), one at a time, so each lands at the next offset.
pub async fn produce_raw(
    env: &TestEnv,
    topic: &str,
    first_key: usize,
    payloads: &[&[u8]],
) -> Result<(), rdkafka::error::KafkaError> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = kafka_config(env, false).create()?;
    for (n, payload) in payloads.iter().enumerate() {
        let key = format!("k{}", first_key + n);
        let record = FutureRecord::to(topic)
            .partition(0)
            .key(&key)
            .payload(*payload);
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// Produces a tombstone (key `key`, no value) to partition 0 of `topic`.
pub async fn produce_tombstone(
    env: &TestEnv,
    topic: &str,
    key: &str,
) -> Result<(), rdkafka::error::KafkaError> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = kafka_config(env, false).create()?;
    let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).partition(0).key(key);
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)?;
    Ok(())
}

/// Deletes a consumer group and its committed offsets (as when they expire after
/// `offsets.retention.minutes` without members). The group must have no members.
pub async fn delete_group(env: &TestEnv, group: &str) -> Result<(), FixtureError> {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let err = |e: String| FixtureError::Group(format!("delete the consumer group {group}: {e}"));
    let admin: AdminClient<DefaultClientContext> = kafka_config(env, false)
        .create()
        .map_err(|e| err(e.to_string()))?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    for result in admin
        .delete_groups(&[group], &options)
        .await
        .map_err(|e| err(e.to_string()))?
    {
        result.map_err(|(_, code)| err(code.to_string()))?;
    }
    Ok(())
}

/// The offsets a consumer group has committed, by partition (as strings, to compare with JSON).
pub fn group_offsets(
    env: &TestEnv,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Result<std::collections::BTreeMap<String, i64>, rdkafka::error::KafkaError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = kafka_config(env, false).set("group.id", group).create()?;
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    Ok(consumer
        .committed_offsets(list, Duration::from_secs(10))?
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(n) => Some((e.partition().to_string(), n)),
            _ => None,
        })
        .collect())
}

/// Installs the KafkaTable CRD (server-side apply, idempotent) and waits until it serves.
pub async fn install_crd(client: &kube::Client) -> Result<(), FixtureError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = kafkatable_crds::crd();
    let name = crd.metadata.name.clone().unwrap_or_default();
    crds.patch(
        &name,
        &PatchParams::apply("kafkatable-e2e").force(),
        &Patch::Apply(&crd),
    )
    .await
    .map_err(|source| FixtureError::Kube {
        action: "apply the CRD",
        source,
    })?;
    let crds = &crds;
    let name = &name;
    eventually(
        "the CRD to be established",
        Duration::from_secs(30),
        || async move {
            let crd = crds.get(name).await.ok()?;
            let conditions = crd.status?.conditions?;
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        },
    )
    .await;
    let any: Api<KafkaTable> = Api::all(client.clone());
    let any = &any;
    eventually(
        "KafkaTables to be served",
        Duration::from_secs(30),
        || async move { any.list(&Default::default()).await.ok().map(|_| ()) },
    )
    .await;
    Ok(())
}

/// A port on the loopback nothing listens on now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits until GET `url` succeeds, polling every 250 ms for up to `timeout`; fails early, with
/// the server's log, when `child` (the server `what`, logging to `log`) exits.
pub async fn wait_answering(
    what: &str,
    url: &str,
    child: &mut std::process::Child,
    log: &std::path::Path,
    timeout: Duration,
) -> anyhow::Result<()> {
    let read_log = || std::fs::read_to_string(log).unwrap_or_default();
    let deadline = Instant::now() + timeout;
    loop {
        if reqwest::get(url)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            anyhow::bail!("{what} exited with {status}: {}", read_log());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what} did not answer within {} s: {}",
            timeout.as_secs(),
            read_log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A dead letter as a read_committed consumer of the dead-letter topic sees it.
#[derive(Debug)]
pub struct Letter {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp: Option<i64>,
    pub headers: std::collections::BTreeMap<String, String>,
}

/// Every committed record of `topic` (a dead-letter topic, say) as an `isolation.level=
/// read_committed` consumer reads it, until `count` arrived and three seconds more passed (to
/// see any extra), or `deadline`.
pub fn read_committed(
    env: &TestEnv,
    topic: &str,
    count: usize,
    deadline: Duration,
) -> Result<Vec<Letter>, rdkafka::error::KafkaError> {
    use rdkafka::Message;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Headers;
    let consumer: BaseConsumer = kafka_config(env, false)
        .set("group.id", unique("dlq-reader"))
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let deadline = std::time::Instant::now() + deadline;
    let mut letters = Vec::new();
    let mut enough_at: Option<std::time::Instant> = None;
    while std::time::Instant::now() < deadline {
        if enough_at.is_some_and(|t| t.elapsed() > Duration::from_secs(3)) {
            break;
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        // librdkafka reports a dropped connection (after a broker restart, say) and retries it:
        // not the reader's end. What was read is checked by the caller.
        let m = match message {
            Ok(m) => m,
            Err(e) => {
                eprintln!("read_committed: {e} (retried)");
                continue;
            }
        };
        let mut headers = std::collections::BTreeMap::new();
        if let Some(h) = m.headers() {
            for header in h.iter() {
                let value = header
                    .value
                    .map(|v| String::from_utf8_lossy(v).into_owned());
                headers.insert(header.key.to_string(), value.unwrap_or_default());
            }
        }
        letters.push(Letter {
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            timestamp: m.timestamp().to_millis(),
            headers,
        });
        if letters.len() >= count && enough_at.is_none() {
            enough_at = Some(std::time::Instant::now());
        }
    }
    Ok(letters)
}
