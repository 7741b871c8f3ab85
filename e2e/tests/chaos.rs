//! Exactly once under chaos, for Delta on a local path, Delta on S3 (MinIO) and Iceberg (REST
//! catalog, MinIO): ingesters in one consumer group on a 12-partition topic while records are
//! produced; they are killed with SIGKILL at random moments, abort on purpose between the table
//! commit and the Kafka commit, and are restarted, added and removed; and the infrastructure
//! crashes under them: the broker, the object store and the catalog are killed with SIGKILL and
//! started again in place (`infra.sh kill` / `resume`), while nobody restarts an ingester for
//! it. At the end every produced record is in the table exactly once, as the deltalake and
//! pyiceberg Python packages read it.
//!
//! KAFKATABLE_CHAOS_KILLS sets the number of ingester kills (30 by default; `make chaos` runs
//! 300); one infrastructure crash comes with every 25 kills (at least three a run).

use std::time::{Duration, Instant};

use kafkatable_e2e::env::TestEnv;
use kafkatable_e2e::fixtures::{
    TestBucket, TestTopic, eventually, kafka_config, python, read_committed, unique,
};
use kafkatable_e2e::ingester::{IngesterProcess, WorkDir};
use rand::Rng;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

const PARTITIONS: i32 = 12;
/// What an ingester logs when it aborts between its dead letters and the table commit.
const LETTERS_ABORT: &str = "aborting between the dead letters and the table commit";
const INFRA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/infra.sh");

/// Reads id, partition and offset of every row; prints counts.
const READER: &str = r#"
import json, sys
kind = sys.argv[1]
try:
    if kind == "delta":
        from deltalake import DeltaTable
        opts = {}
        if len(sys.argv) > 3:
            opts = {"AWS_ENDPOINT_URL": sys.argv[3], "AWS_ACCESS_KEY_ID": sys.argv[4],
                    "AWS_SECRET_ACCESS_KEY": sys.argv[5], "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
        t = DeltaTable(sys.argv[2], storage_options=opts).to_pyarrow_table(columns=["id", "_kafka_partition", "_kafka_offset"])
    else:
        from pyiceberg.catalog import load_catalog
        uri, endpoint, key, secret, ident = sys.argv[2:7]
        c = load_catalog("kafkatable", type="rest", uri=uri, **{"s3.endpoint": endpoint, "s3.access-key-id": key,
            "s3.secret-access-key": secret, "s3.region": "us-east-1", "s3.path-style-access": "true"})
        t = c.load_table(ident).scan(selected_fields=("id", "_kafka_partition", "_kafka_offset")).to_arrow()
except Exception as e:
    print(json.dumps({"rows": 0, "error": str(e)})); sys.exit(0)
ids = t["id"].to_pylist()
pairs = set(zip(t["_kafka_partition"].to_pylist(), t["_kafka_offset"].to_pylist()))
print(json.dumps({"rows": t.num_rows, "distinct_pairs": len(pairs), "distinct_ids": len(set(ids)),
                  "min": min(ids) if ids else None, "max": max(ids) if ids else None}))
"#;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Delta on a local path.
    Delta,
    /// Delta on a local path, with bad records among the good (one in 97) sent to a
    /// dead-letter topic.
    DeltaDeadLetters,
    /// Delta on S3 (MinIO).
    DeltaS3,
    Iceberg,
}

impl Kind {
    /// The components this kind's ingesters depend on, crashed in turn.
    fn components(self) -> &'static [&'static str] {
        match self {
            Kind::Delta | Kind::DeltaDeadLetters => &["kafka"],
            Kind::DeltaS3 => &["kafka", "minio"],
            Kind::Iceberg => &["kafka", "minio", "iceberg"],
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_every_record_exactly_once_through_kills_rebalances_and_scaling() -> anyhow::Result<()>
{
    chaos(Kind::Delta).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_on_s3_every_record_exactly_once_through_kills_and_infrastructure_crashes()
-> anyhow::Result<()> {
    chaos(Kind::DeltaS3).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_and_rows_exactly_once_through_kills_between_them() -> anyhow::Result<()> {
    chaos(Kind::DeltaDeadLetters).await
}

#[tokio::test]
async fn iceberg_every_record_exactly_once_through_kills_rebalances_and_scaling()
-> anyhow::Result<()> {
    chaos(Kind::Iceberg).await
}

async fn chaos(kind: Kind) -> anyhow::Result<()> {
    let kills_wanted: usize = std::env::var("KAFKATABLE_CHAOS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let records: usize = 2000 * kills_wanted.max(10);
    let env = TestEnv::load()?;
    let topic = TestTopic::create(&env, "chaos", PARTITIONS).await?;
    let dir = WorkDir::new("kt-chaos")?;
    let secrets = dir.s3_secret(&env)?;
    let bucket = match kind {
        Kind::DeltaS3 => Some(TestBucket::create(&env, "chaos").await?),
        _ => None,
    };
    let location = match &bucket {
        Some(b) => format!("s3://{}/table", b.name),
        None => format!("file://{}/table", dir.display()),
    };
    let namespace = unique("chaos").replace('-', "_");
    let table = match kind {
        Kind::Delta | Kind::DeltaDeadLetters => json!({"format": "delta", "location": location}),
        Kind::DeltaS3 => json!({
            "format": "delta",
            "location": location,
            "storage": {"endpoint": env.s3_endpoint, "region": "us-east-1", "pathStyle": true, "credentialsSecretRef": {"name": "s3"}},
        }),
        Kind::Iceberg => json!({
            "format": "iceberg",
            "catalog": {"type": "rest", "uri": env.iceberg_rest_uri, "namespace": namespace, "table": "events"},
            "storage": {"endpoint": env.s3_endpoint, "region": "us-east-1", "pathStyle": true, "credentialsSecretRef": {"name": "s3"}},
        }),
    };
    let dead_letters = match kind {
        Kind::DeltaDeadLetters => Some(TestTopic::create(&env, "chaos-dlq", 3).await?),
        _ => None,
    };
    let mut manifest = json!({
        "apiVersion": "kafkatable.io/v1alpha1",
        "kind": "KafkaTable",
        "metadata": {"name": "chaos", "namespace": "e2e"},
        "spec": {
            "source": {
                "brokers": env.kafka_bootstrap, "topic": topic.name, "consumerGroup": unique("chaos-group"),
                // Dead members leave the group in seconds, not the default 45.
                "consumerConfig": {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"},
            },
            "table": table,
            "commit": {"interval": "1s"},
        },
    });
    if let Some(dlq) = &dead_letters {
        manifest["spec"]["errors"] =
            json!({"policy": "deadLetter", "deadLetter": {"topic": dlq.name}});
    }
    let manifest_path = dir.join("table.yaml");
    std::fs::write(&manifest_path, serde_yaml::to_string(&manifest)?)?;
    let bad = move |i: usize| kind == Kind::DeltaDeadLetters && i.is_multiple_of(97);
    let bad_count = (0..records).filter(|i| bad(*i)).count();

    // Produce in the background, spread over the run. Idempotence: a send retried across a
    // broker crash must not write the record twice.
    let producer: FutureProducer = kafka_config(&env, false)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .create()?;
    let topic_name = topic.name.clone();
    let production = tokio::spawn(async move {
        let batch = 500;
        for start in (0..records).step_by(batch) {
            let sends = (start..(start + batch).min(records)).map(|i| {
                let producer = producer.clone();
                let topic = topic_name.clone();
                async move {
                    let payload = match bad(i) {
                        true => format!("not JSON {i}"),
                        false => json!({"id": i, "payload": "x".repeat(64)}).to_string(),
                    };
                    let key = format!("k{i}");
                    producer
                        .send(
                            FutureRecord::to(&topic).key(&key).payload(&payload),
                            Duration::from_secs(30),
                        )
                        .await
                }
            });
            for delivery in futures::future::join_all(sends).await {
                delivery.map_err(|(e, _)| e)?;
            }
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        Ok::<_, rdkafka::error::KafkaError>(())
    });

    // Half the ingesters also abort right after a table commit, before the Kafka commit (and
    // with dead letters, sometimes after sending them, before the table commit).
    let crash_env = [
        ("KAFKATABLE_FAULT_CRASH_AFTER_TABLE_COMMIT", "0.5"),
        ("KAFKATABLE_FAULT_CRASH_AFTER_DEAD_LETTERS", "0.3"),
    ];
    let mut serial = 0;
    let mut start = |crashy: bool| -> std::io::Result<IngesterProcess> {
        serial += 1;
        let envs: &[(&str, &str)] = if crashy { &crash_env } else { &[] };
        IngesterProcess::start_with_env(
            &manifest_path,
            &secrets,
            &dir,
            &format!("ingester-{serial}"),
            envs,
        )
    };
    // First, one ingester that certainly dies in the window: it aborts after its first table
    // commit, before the Kafka commit, and its successors must not read those records again.
    // With dead letters, it dies after its first dead-letter transaction instead, before the
    // table commit: its successors must not send those again.
    let fault = match kind {
        Kind::DeltaDeadLetters => "KAFKATABLE_FAULT_CRASH_AFTER_DEAD_LETTERS",
        _ => "KAFKATABLE_FAULT_CRASH_AFTER_TABLE_COMMIT",
    };
    let mut certain = IngesterProcess::start_with_env(
        &manifest_path,
        &secrets,
        &dir,
        "ingester-0",
        &[(fault, "1")],
    )?;
    certain
        .exit_within(
            "the first ingester to abort after its first commit",
            Duration::from_secs(120),
        )
        .await;
    let window = match kind {
        Kind::DeltaDeadLetters => LETTERS_ABORT,
        _ => "aborting between the table commit and the Kafka commit",
    };
    assert!(
        certain.log_text().contains(window),
        "it died in the window:\n{}",
        certain.log_text()
    );
    drop(certain);

    let mut running: Vec<IngesterProcess> =
        (0..3).map(|i| start(i == 0)).collect::<Result<_, _>>()?;

    let mut rng = rand::rng();
    let (mut kills, mut added, mut removed) = (0usize, 0usize, 0usize);
    // Aborts after a table commit, and between dead letters and a table commit (the first
    // ingester's among them).
    let (mut crashes, mut letter_crashes) = match kind {
        Kind::DeltaDeadLetters => (0usize, 1usize),
        _ => (1, 0),
    };
    // Infrastructure crashes: one for every 25 kills, at least three, components in turn.
    let faults_wanted = (kills_wanted / 25).max(3);
    let mut faults: Vec<&str> = Vec::new();
    let mut fault: Option<tokio::task::JoinHandle<anyhow::Result<()>>> = None;
    let began = Instant::now();
    while kills + crashes + letter_crashes < kills_wanted
        || !production.is_finished()
        || faults.len() < faults_wanted
        || fault.as_ref().is_some_and(|f| !f.is_finished())
    {
        // Each crash keeps a component down for seconds and its restart takes more.
        let limit = Duration::from_secs(600 + 30 * faults_wanted as u64);
        assert!(began.elapsed() < limit, "chaos did not finish in {limit:?}");
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        if let Some(done) = fault.take_if(|f| f.is_finished()) {
            done.await??;
        }
        let due = (faults.len() + 1) * kills_wanted / (faults_wanted + 1);
        if fault.is_none()
            && faults.len() < faults_wanted
            && kills + crashes + letter_crashes >= due
        {
            let components = kind.components();
            let component = components[faults.len() % components.len()];
            faults.push(component);
            let down_for = Duration::from_millis(rng.random_range(1000..6000));
            fault = Some(tokio::spawn(crash_and_resume(
                env.clone(),
                component,
                down_for,
            )));
        }
        // Injected crashes count too; their members are restarted.
        running.retain_mut(|p| {
            if p.exited().is_none() {
                return true;
            }
            if p.log_text().contains(LETTERS_ABORT) {
                letter_crashes += 1;
            } else {
                crashes += 1;
            }
            false
        });
        match rng.random_range(0..10) {
            0 if running.len() < 5 => {
                running.push(start(rng.random_bool(0.5))?);
                added += 1;
            }
            1 if running.len() > 1 => {
                let victim = running.remove(rng.random_range(0..running.len()));
                victim.stop(Duration::from_secs(20));
                removed += 1;
            }
            _ if !running.is_empty() && kills + crashes + letter_crashes < kills_wanted => {
                let victim = running.remove(rng.random_range(0..running.len()));
                victim.kill();
                kills += 1;
            }
            _ => {}
        }
        while running.len() < 3 {
            running.push(start(rng.random_bool(0.5))?);
        }
    }
    production.await??;
    if let Some(f) = fault.take() {
        f.await??;
    }
    // Let the survivors finish without faults.
    for p in running.drain(..) {
        p.kill();
    }
    let finishers: Vec<IngesterProcess> = (0..2).map(|_| start(false)).collect::<Result<_, _>>()?;
    eprintln!(
        "chaos ({kind:?}): {kills} SIGKILLs, {crashes} aborts after a table commit, {letter_crashes} between dead letters and a table commit, {added} added, {removed} removed, crashed and resumed: {faults:?}, {records} records"
    );

    let ident = format!("{namespace}.events");
    let reader_args: Vec<&str> = match kind {
        Kind::Delta | Kind::DeltaDeadLetters => vec!["delta", &location],
        Kind::DeltaS3 => vec![
            "delta",
            &location,
            &env.s3_endpoint,
            &env.s3_access_key,
            &env.s3_secret_key,
        ],
        Kind::Iceberg => vec![
            "iceberg",
            &env.iceberg_rest_uri,
            &env.s3_endpoint,
            &env.s3_access_key,
            &env.s3_secret_key,
            &ident,
        ],
    };
    let env_ref = &env;
    let args_ref = &reader_args;
    let good = records - bad_count;
    let view: Value = eventually(
        &format!("{good} rows"),
        Duration::from_secs(240),
        || async move {
            let out = python(env_ref, READER, args_ref).ok()?;
            let view: Value = serde_json::from_str(out.trim()).ok()?;
            (view["rows"].as_u64()? >= good as u64).then_some(view)
        },
    )
    .await;
    // Give a duplicate a chance to land before judging.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let out = python(&env, READER, &reader_args)?;
    let last: Value = serde_json::from_str(out.trim())?;
    assert_eq!(
        last["rows"].as_u64(),
        Some(good as u64),
        "no record twice: {last} (first seen {view})"
    );
    assert_eq!(
        last["distinct_ids"].as_u64(),
        Some(good as u64),
        "every record once"
    );
    assert_eq!(last["distinct_pairs"].as_u64(), Some(good as u64));
    if let Some(dlq) = &dead_letters {
        // The bad records, each once, in the dead-letter topic.
        let letters = read_committed(&env, &dlq.name, bad_count, Duration::from_secs(120))?;
        let origins: std::collections::BTreeSet<(String, String)> = letters
            .iter()
            .map(|l| {
                (
                    l.headers
                        .get("kafkatable.partition")
                        .cloned()
                        .unwrap_or_default(),
                    l.headers
                        .get("kafkatable.offset")
                        .cloned()
                        .unwrap_or_default(),
                )
            })
            .collect();
        let values: std::collections::BTreeSet<Vec<u8>> =
            letters.iter().filter_map(|l| l.value.clone()).collect();
        eprintln!(
            "chaos ({kind:?}): {} dead letters of {bad_count} bad records",
            letters.len()
        );
        assert_eq!(
            letters.len(),
            bad_count,
            "no dead letter twice, none missing"
        );
        assert_eq!(origins.len(), bad_count, "one letter per bad record");
        assert_eq!(values.len(), bad_count, "each bad record's own value");
    } else {
        assert_eq!(
            (last["min"].as_u64(), last["max"].as_u64()),
            (Some(0), Some(records as u64 - 1))
        );
    }
    assert!(
        kills + crashes + letter_crashes >= kills_wanted,
        "{kills} kills and {} crashes",
        crashes + letter_crashes
    );
    let in_window = match kind {
        Kind::DeltaDeadLetters => letter_crashes,
        _ => crashes,
    };
    assert!(
        in_window >= 1,
        "at least one ingester died in the window ({kind:?}): {window}"
    );
    for p in finishers {
        p.stop(Duration::from_secs(20));
    }
    if let Some(bucket) = bucket {
        bucket.remove().await?;
    }
    Ok(())
}

/// Crashes a component of the shared infrastructure (SIGKILL), leaves it down for `down_for`,
/// and starts it again in place (same ports, same data).
async fn crash_and_resume(
    env: TestEnv,
    component: &'static str,
    down_for: Duration,
) -> anyhow::Result<()> {
    let infra = |action: &'static str| {
        let run = env.run_dir.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let out = std::process::Command::new("bash")
                .args([INFRA, action, component])
                .env("KAFKATABLE_RUN", run)
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "infra.sh {action} {component}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(())
        })
    };
    infra("kill").await??;
    eprintln!("chaos: {component} killed; down for {down_for:?}");
    tokio::time::sleep(down_for).await;
    infra("resume").await??;
    eprintln!("chaos: {component} resumed");
    Ok(())
}
