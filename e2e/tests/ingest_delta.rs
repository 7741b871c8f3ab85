//! The ingester into Delta Lake on S3 (MinIO), checked with the deltalake Python package: the
//! right rows and types, exactly one row per (partition, offset), the table's sync points equal
//! to the consumer group's committed offsets, and restarts (graceful and SIGKILL) resuming from
//! the table without loss or duplicates.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use kafkatable_e2e::env::TestEnv;
use kafkatable_e2e::fixtures::{
    TestBucket, TestTopic, eventually, group_offsets, kafka_config, noise, produce_json, python,
    unique,
};
use kafkatable_e2e::ingester::{IngesterProcess, WorkDir};
use kafkatable_ingester::commit::keys;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

const PARTITIONS: i32 = 3;
const DEADLINE: Duration = Duration::from_secs(120);

/// Reads the table with deltalake (Python): row count, distinct (partition, offset) pairs, ids,
/// column types and the txn version of each partition.
const READER: &str = r#"
import json, sys
from deltalake import DeltaTable
uri, endpoint, key, secret, app_ids = sys.argv[1:6]
opts = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
try:
    dt = DeltaTable(uri, storage_options=opts)
except Exception as e:
    print(json.dumps({"rows": 0, "missing": str(e)}))
    sys.exit(0)
t = dt.to_pyarrow_table()
pairs = set(zip(t["_kafka_partition"].to_pylist(), t["_kafka_offset"].to_pylist()))
print(json.dumps({
    "rows": t.num_rows,
    "distinct": len(pairs),
    "ids": sorted(t["id"].to_pylist()),
    "types": {f.name: str(f.type) for f in t.schema},
    "txn": {str(p): dt.transaction_version(a) for p, a in enumerate(json.loads(app_ids))},
    "version": dt.version(),
}))
"#;

struct Setup {
    env: TestEnv,
    topic: TestTopic,
    bucket: Option<TestBucket>,
    dir: WorkDir,
    manifest: PathBuf,
    secrets: PathBuf,
    location: String,
    group: String,
}

impl Setup {
    async fn new() -> anyhow::Result<Self> {
        let env = TestEnv::load()?;
        let topic = TestTopic::create(&env, "ingest", PARTITIONS).await?;
        let bucket = TestBucket::create(&env, "ingest").await?;
        let dir = WorkDir::new("kt-ingest")?;
        let secrets = dir.s3_secret(&env)?;
        let location = format!("s3://{}/events", bucket.name);
        let group = unique("ingest-group");
        let manifest = json!({
            "apiVersion": "kafkatable.io/v1alpha1",
            "kind": "KafkaTable",
            "metadata": {"name": "events", "namespace": "e2e"},
            "spec": {
                "source": {"brokers": env.kafka_bootstrap, "topic": topic.name, "consumerGroup": group},
                "table": {
                    "format": "delta",
                    "location": location,
                    "storage": {"endpoint": env.s3_endpoint, "region": "us-east-1", "pathStyle": true,
                                "credentialsSecretRef": {"name": "s3"}},
                },
                "commit": {"interval": "1s"},
            },
        });
        let manifest_path = dir.join("table.yaml");
        std::fs::write(&manifest_path, serde_yaml::to_string(&manifest)?)?;
        Ok(Self {
            env,
            topic,
            bucket: Some(bucket),
            dir,
            manifest: manifest_path,
            secrets,
            location,
            group,
        })
    }

    fn start(&self, name: &str) -> anyhow::Result<IngesterProcess> {
        Ok(IngesterProcess::start(
            &self.manifest,
            &self.secrets,
            &self.dir,
            name,
        )?)
    }

    async fn produce(&self, ids: std::ops::Range<usize>) -> anyhow::Result<()> {
        produce_json(&self.env, &self.topic.name, ids, |i| {
            json!({
                "id": i, "name": format!("n{i}"), "amount": i as f64 * 1.5,
                "tags": ["a", "b"], "nested": {"x": i}, "ts": 1_700_000_000_000u64 + i as u64,
            })
        })
        .await?;
        Ok(())
    }

    fn read(&self) -> anyhow::Result<Value> {
        let app_ids: Vec<String> = (0..PARTITIONS)
            .map(|p| keys::delta_app_id(&self.topic.name, p))
            .collect();
        let out = python(
            &self.env,
            READER,
            &[
                &self.location,
                &self.env.s3_endpoint,
                &self.env.s3_access_key,
                &self.env.s3_secret_key,
                &serde_json::to_string(&app_ids)?,
            ],
        )?;
        Ok(serde_json::from_str(out.trim())?)
    }

    /// Waits until the table holds `rows` rows and checks they are exactly the ids 0..rows,
    /// one per (partition, offset).
    async fn expect_rows(&self, rows: usize) -> anyhow::Result<Value> {
        let seen = eventually(&format!("{rows} rows in the table"), DEADLINE, || async {
            let view = self.read().ok()?;
            (view["rows"].as_u64()? as usize >= rows).then_some(view)
        })
        .await;
        assert_eq!(
            seen["rows"].as_u64(),
            Some(rows as u64),
            "no duplicates beyond {rows} rows"
        );
        assert_eq!(
            seen["distinct"].as_u64(),
            Some(rows as u64),
            "one row per (partition, offset)"
        );
        let ids: Vec<u64> = serde_json::from_value(seen["ids"].clone())?;
        assert_eq!(
            ids,
            (0..rows as u64).collect::<Vec<_>>(),
            "every produced id once"
        );
        Ok(seen)
    }

    fn group_offsets(&self) -> anyhow::Result<BTreeMap<String, i64>> {
        Ok(group_offsets(
            &self.env,
            &self.group,
            &self.topic.name,
            PARTITIONS,
        )?)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        // The work dir (a field) goes after this: it prints the logs of a failing test.
        if let Some(bucket) = self.bucket.take() {
            // Dropped within the test's runtime: remove the bucket on a thread of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    let _ = rt.block_on(bucket.remove());
                }
            })
            .join();
        }
    }
}

#[tokio::test]
async fn json_to_delta_on_s3_exactly_once_across_restarts() -> anyhow::Result<()> {
    let setup = Setup::new().await?;
    setup.produce(0..3000).await?;
    let first = setup.start("ingester-a")?;

    let view = setup.expect_rows(3000).await;
    let view = match view {
        Ok(v) => v,
        Err(e) => panic!("{e}\n--- ingester log ---\n{}", first.log_text()),
    };
    let types = &view["types"];
    assert_eq!(types["id"], "int64");
    assert_eq!(types["name"], "string");
    assert_eq!(types["amount"], "double");
    assert!(
        types["tags"]
            .as_str()
            .is_some_and(|t| t.starts_with("list<") && t.ends_with("string>")),
        "{types}"
    );
    assert_eq!(types["nested"], "struct<x: int64>");
    assert_eq!(types["_kafka_partition"], "int32");
    assert_eq!(types["_kafka_offset"], "int64");
    assert_eq!(types["_kafka_timestamp"], "timestamp[us, tz=UTC]");
    assert_eq!(types["_kafka_key"], "binary");

    // The table's sync points add up to every record, and the group mirrors them.
    let txn: BTreeMap<String, i64> = serde_json::from_value(view["txn"].clone())?;
    assert_eq!(
        txn.values().sum::<i64>(),
        3000,
        "sync points cover every record: {txn:?}"
    );
    let setup_ref = &setup;
    let txn_ref = &txn;
    eventually(
        "group offsets equal to the table's sync points",
        DEADLINE,
        || async move { (setup_ref.group_offsets().ok()? == *txn_ref).then_some(()) },
    )
    .await;

    // Lag per partition, from librdkafka's statistics, drops to zero once caught up.
    let first_ref = &first;
    eventually("zero lag on every partition", DEADLINE, || async move {
        let series = first_ref.metric_series("kafkatable_partition_lag").await;
        (series.len() == PARTITIONS as usize && series.iter().all(|(_, v)| *v == 0.0)).then_some(())
    })
    .await;

    let (status, _) = first.get("/readyz").await.unwrap_or_default();
    assert_eq!(status, 200, "ready while assigned and committing");
    assert!(
        first
            .metric("kafkatable_records_consumed_total")
            .await
            .unwrap_or_default()
            >= 3000.0
    );
    assert!(
        first
            .metric("kafkatable_commits_total")
            .await
            .unwrap_or_default()
            >= 1.0
    );
    assert_eq!(
        first.metric("kafkatable_assigned_partitions").await,
        Some(f64::from(PARTITIONS))
    );

    // Graceful stop: SIGTERM exits 0; a successor resumes where the table ends.
    assert_eq!(
        first.stop(Duration::from_secs(30)),
        Some(0),
        "SIGTERM exits cleanly"
    );
    setup.produce(3000..4000).await?;
    let second = setup.start("ingester-b")?;
    setup.expect_rows(4000).await?;

    // SIGKILL while records flow: nothing lost, nothing twice.
    let producing = setup.produce(4000..7000);
    let kill_when_moving = async {
        eventually("the table to grow past 4000 rows", DEADLINE, || async {
            (setup.read().ok()?["rows"].as_u64()? > 4000).then_some(())
        })
        .await;
    };
    let (produced, ()) = tokio::join!(producing, kill_when_moving);
    produced?;
    second.kill();
    let third = setup.start("ingester-c")?;
    let view = setup.expect_rows(7000).await?;
    let txn: BTreeMap<String, i64> = serde_json::from_value(view["txn"].clone())?;
    assert_eq!(txn.values().sum::<i64>(), 7000);
    third.stop(Duration::from_secs(30));
    Ok(())
}

/// Text records into a Delta table on a local path that does not exist yet.
#[tokio::test]
async fn text_records_to_a_new_local_delta_table() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let topic = TestTopic::create(&env, "ingest-text", 2).await?;
    let dir = WorkDir::new("kt-ingest-text")?;
    let location = format!("file://{}/tables/lines", dir.display());
    let manifest = json!({
        "apiVersion": "kafkatable.io/v1alpha1",
        "kind": "KafkaTable",
        "metadata": {"name": "lines", "namespace": "e2e"},
        "spec": {
            "source": {"brokers": env.kafka_bootstrap, "topic": topic.name, "format": "string"},
            "table": {"format": "delta", "location": location},
            "commit": {"interval": "1s"},
        },
    });
    let manifest_path = dir.join("table.yaml");
    std::fs::write(&manifest_path, serde_yaml::to_string(&manifest)?)?;

    let producer: FutureProducer = kafka_config(&env, false).create()?;
    for i in 0..500 {
        let line = format!("line {i} ✓");
        let record = FutureRecord::<(), _>::to(&topic.name)
            .payload(&line)
            .partition(i % 2);
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)?;
    }
    let ingester = IngesterProcess::start(&manifest_path, &dir, &dir, "ingester-text")?;
    let script = r#"
import json, sys
from deltalake import DeltaTable
try:
    t = DeltaTable(sys.argv[1]).to_pyarrow_table()
except Exception:
    print(json.dumps({"rows": 0})); sys.exit(0)
print(json.dumps({"rows": t.num_rows, "values": sorted(t["value"].to_pylist()), "type": str(t.schema.field("value").type)}))
"#;
    let env_ref = &env;
    let location_ref = &location;
    let seen = eventually("500 lines in the local table", DEADLINE, || async move {
        let out = python(env_ref, script, &[location_ref]).ok()?;
        let view: Value = serde_json::from_str(out.trim()).ok()?;
        (view["rows"].as_u64()? >= 500).then_some(view)
    })
    .await;
    assert_eq!(seen["rows"], 500);
    assert_eq!(seen["type"], "string");
    let mut expected: Vec<String> = (0..500).map(|i| format!("line {i} ✓")).collect();
    expected.sort();
    assert_eq!(seen["values"], json!(expected));
    ingester.stop(Duration::from_secs(30));
    Ok(())
}

/// Partitioning by the day of the event time and by a field: the partition columns, the files'
/// partition values and per-day row counts as deltalake and polars read them.
#[tokio::test]
async fn delta_table_partitioned_by_event_day_and_country() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let topic = TestTopic::create(&env, "ingest-parts", 2).await?;
    let dir = WorkDir::new("kt-ingest-parts")?;
    let location = format!("file://{}/table", dir.display());
    let manifest = json!({
        "apiVersion": "kafkatable.io/v1alpha1",
        "kind": "KafkaTable",
        "metadata": {"name": "parts", "namespace": "e2e"},
        "spec": {
            "source": {"brokers": env.kafka_bootstrap, "topic": topic.name},
            "table": {
                "format": "delta", "location": location,
                "eventTime": {"field": "ts", "format": "epochMillis"},
                "partitionBy": [{"field": "ts", "transform": "day"}, {"field": "country", "transform": "identity"}],
            },
            "commit": {"interval": "1s"},
        },
    });
    let manifest_path = dir.join("table.yaml");
    std::fs::write(&manifest_path, serde_yaml::to_string(&manifest)?)?;

    // 600 records over three days (2026-11-19..21) and two countries.
    let producer: FutureProducer = kafka_config(&env, false).set("linger.ms", "5").create()?;
    let day_ms: u64 = 86_400_000;
    let start_ms: u64 = 1_795_046_400_000; // 2026-11-19T00:00:00Z
    for i in 0..600u64 {
        let payload = json!({"id": i, "ts": start_ms + (i % 3) * day_ms + i * 1000, "country": if i % 2 == 0 { "de" } else { "fr" }}).to_string();
        let key = format!("k{i}");
        producer
            .send(
                FutureRecord::to(&topic.name).key(&key).payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    let ingester = IngesterProcess::start(&manifest_path, &dir, &dir, "ingester-parts")?;
    let script = r#"
import json, sys
from deltalake import DeltaTable
import polars as pl
import pyarrow as pa
try:
    dt = DeltaTable(sys.argv[1])
except Exception:
    print(json.dumps({"rows": 0})); sys.exit(0)
adds = pa.table(dt.get_add_actions(flatten=True)).to_pydict()  # deltalake 1.x returns an arro3 table
parts = sorted({(str(d), c) for d, c in zip(adds["partition.ts_day"], adds["partition.country"])})
df = pl.read_delta(sys.argv[1], version=dt.version())  # the same snapshot as the add actions
per_day = df.group_by("ts_day").len().sort("ts_day")
# Statistics of each file: a filter that deltalake answers with file skipping keeps its rows.
lake = pl.scan_delta(sys.argv[1], version=dt.version())
print(json.dumps({
    "stats": {"records": sum(adds["num_records"]), "id_min": min(adds["min.id"]), "id_max": max(adds["max.id"]),
              "id_nulls": sum(adds["null_count.id"]), "ts_min": min(adds["min.ts"])},
    "id_5": lake.filter(pl.col("id") == 5).collect().height,
    "id_beyond": lake.filter(pl.col("id") > 599).collect().height,
    "rows": df.height,
    "partition_columns": dt.metadata().partition_columns,
    "partitions": parts,
    "per_day": [[str(d), n] for d, n in zip(per_day["ts_day"].to_list(), per_day["len"].to_list())],
}))
"#;
    let env_ref = &env;
    let location_ref = &location;
    let seen = eventually(
        "600 rows in the partitioned table",
        DEADLINE,
        || async move {
            let out = python(env_ref, script, &[location_ref]).ok()?;
            let view: Value = serde_json::from_str(out.trim()).ok()?;
            (view["rows"].as_u64()? >= 600).then_some(view)
        },
    )
    .await;
    assert_eq!(seen["rows"], 600);
    assert_eq!(seen["partition_columns"], json!(["ts_day", "country"]));
    // Our writer's file statistics, as deltalake reads them.
    assert_eq!(seen["stats"]["records"], 600);
    assert_eq!(seen["stats"]["id_min"], 0);
    assert_eq!(seen["stats"]["id_max"], 599);
    assert_eq!(seen["stats"]["id_nulls"], 0);
    assert_eq!(seen["stats"]["ts_min"], start_ms);
    assert_eq!(seen["id_5"], 1);
    assert_eq!(seen["id_beyond"], 0);
    let days = ["2026-11-19", "2026-11-20", "2026-11-21"];
    let expected: Vec<Value> = days
        .iter()
        .flat_map(|d| ["de", "fr"].map(|c| json!([d, c])))
        .collect();
    assert_eq!(seen["partitions"], json!(expected));
    assert_eq!(
        seen["per_day"],
        json!(days.iter().map(|d| json!([d, 200])).collect::<Vec<_>>())
    );
    ingester.stop(Duration::from_secs(30));
    Ok(())
}

/// Records that gain a field later: the table gains a nullable column, earlier rows read null.
#[tokio::test]
async fn new_fields_become_nullable_columns() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let topic = TestTopic::create(&env, "ingest-evolve", 1).await?;
    let dir = WorkDir::new("kt-ingest-evolve")?;
    let location = format!("file://{}/table", dir.display());
    let manifest = json!({
        "apiVersion": "kafkatable.io/v1alpha1",
        "kind": "KafkaTable",
        "metadata": {"name": "evolve", "namespace": "e2e"},
        "spec": {
            "source": {"brokers": env.kafka_bootstrap, "topic": topic.name},
            "table": {"format": "delta", "location": location},
            "commit": {"interval": "1s"},
        },
    });
    let manifest_path = dir.join("table.yaml");
    std::fs::write(&manifest_path, serde_yaml::to_string(&manifest)?)?;
    let script = r#"
import json, sys
from deltalake import DeltaTable
try:
    t = DeltaTable(sys.argv[1]).to_pyarrow_table().sort_by("id")
except Exception:
    print(json.dumps({"rows": 0})); sys.exit(0)
print(json.dumps({"rows": t.num_rows, "columns": t.column_names,
                  "color": t["color"].to_pylist() if "color" in t.column_names else None}))
"#;
    let read = || -> Option<Value> {
        serde_json::from_str(python(&env, script, &[&location]).ok()?.trim()).ok()
    };

    produce_json(&env, &topic.name, 0..10, |i| json!({"id": i})).await?;
    let ingester = IngesterProcess::start(&manifest_path, &dir, &dir, "ingester-evolve")?;
    let read_ref = &read;
    eventually("the first 10 rows", DEADLINE, || async move {
        (read_ref()?["rows"].as_u64()? >= 10).then_some(())
    })
    .await;
    produce_json(
        &env,
        &topic.name,
        10..20,
        |i| json!({"id": i, "color": format!("c{i}")}),
    )
    .await?;
    let seen = eventually("20 rows with the new column", DEADLINE, || async move {
        let view = read_ref()?;
        (view["rows"].as_u64()? >= 20).then_some(view)
    })
    .await;
    assert_eq!(seen["rows"], 20);
    let mut expected: Vec<Value> = vec![Value::Null; 10];
    expected.extend((10..20).map(|i| json!(format!("c{i}"))));
    assert_eq!(
        seen["color"],
        json!(expected),
        "earlier rows read null, later ones their value"
    );
    ingester.stop(Duration::from_secs(30));
    Ok(())
}

/// A Delta table on a local path, fed by a topic of its own, with `commit` settings.
struct LocalTable {
    topic: TestTopic,
    dir: WorkDir,
    manifest: PathBuf,
    location: String,
    name: String,
}

/// Reads a local table's files with deltalake: version, rows, distinct (partition, offset)
/// pairs, and the files' sizes and row counts, each sorted.
const FILES_READER: &str = r#"
import json, sys
from deltalake import DeltaTable
import pyarrow as pa
dt = DeltaTable(sys.argv[1])
adds = pa.table(dt.get_add_actions(flatten=True)).to_pydict()
t = dt.to_pyarrow_table()
pairs = set(zip(t["_kafka_partition"].to_pylist(), t["_kafka_offset"].to_pylist()))
print(json.dumps({"version": dt.version(), "rows": t.num_rows, "distinct": len(pairs),
    "sizes": sorted(adds["size_bytes"]), "file_rows": sorted(adds["num_records"])}))
"#;

impl LocalTable {
    async fn new(
        env: &TestEnv,
        name: &str,
        partitions: i32,
        commit: Value,
    ) -> anyhow::Result<Self> {
        let topic = TestTopic::create(env, &format!("ingest-{name}"), partitions).await?;
        let dir = WorkDir::new(&format!("kt-ingest-{name}"))?;
        let location = format!("file://{}/table", dir.display());
        let manifest = json!({
            "apiVersion": "kafkatable.io/v1alpha1",
            "kind": "KafkaTable",
            "metadata": {"name": name, "namespace": "e2e"},
            "spec": {
                "source": {"brokers": env.kafka_bootstrap, "topic": topic.name},
                "table": {"format": "delta", "location": location},
                "commit": commit,
            },
        });
        let manifest_path = dir.join("table.yaml");
        std::fs::write(&manifest_path, serde_yaml::to_string(&manifest)?)?;
        Ok(Self {
            topic,
            dir,
            manifest: manifest_path,
            location,
            name: name.to_string(),
        })
    }

    fn start(&self) -> anyhow::Result<IngesterProcess> {
        Ok(IngesterProcess::start(
            &self.manifest,
            &self.dir,
            &self.dir,
            &format!("ingester-{}", self.name),
        )?)
    }

    fn read(&self, env: &TestEnv) -> anyhow::Result<Value> {
        Ok(serde_json::from_str(
            python(env, FILES_READER, &[&self.location])?.trim(),
        )?)
    }
}

/// One commit larger than the target file size becomes several files, none much larger than
/// the target, and the rows stay exactly once.
#[tokio::test]
async fn delta_files_roll_at_the_target_size() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    // Nothing commits before the ingester stops: everything lands in one commit.
    let table = LocalTable::new(
        &env,
        "roll",
        2,
        json!({"interval": "1h", "targetFileSize": "512Ki"}),
    )
    .await?;
    const RECORDS: usize = 100_000;
    // About 200 bytes a record that compress poorly.
    produce_json(
        &env,
        &table.topic.name,
        0..RECORDS,
        |i| json!({"id": i, "noise": noise(i)}),
    )
    .await?;
    let ingester = table.start()?;
    ingester.wait_consumed(RECORDS, DEADLINE).await;
    assert_eq!(ingester.stop(Duration::from_secs(60)), Some(0));

    let view = table.read(&env)?;
    assert_eq!(view["rows"], RECORDS);
    assert_eq!(view["distinct"], RECORDS);
    // Version 0 creates the table, version 1 is the one commit.
    assert_eq!(view["version"], 1, "{view}");
    let sizes: Vec<u64> = serde_json::from_value(view["sizes"].clone())?;
    let total: u64 = sizes.iter().sum();
    assert!(
        sizes.len() >= 4 && total > 3 * 512 * 1024,
        "several files in one commit: {sizes:?}"
    );
    // The writer checks its size after each slice of rows, so a file overshoots by little; it
    // learns the compression from the first file, so most files come close to the target.
    assert!(
        sizes.iter().all(|s| *s <= 512 * 1024 + 256 * 1024),
        "no file far above the target size: {sizes:?}"
    );
    let near = sizes.iter().filter(|s| **s >= 256 * 1024).count();
    assert!(
        near * 2 >= sizes.len(),
        "most files near the target size: {sizes:?}"
    );
    Ok(())
}

/// With an interval too long to matter, the ingester commits each time the next commit holds
/// `commit.maxBytes` in memory (here the Parquet writer's open file and working memory, and the
/// records not yet in it): commits keep coming while it runs, and the buffer never holds much
/// more than that.
#[tokio::test]
async fn delta_commits_when_the_batch_reaches_max_bytes() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let table = LocalTable::new(
        &env,
        "maxbytes",
        1,
        json!({"interval": "1h", "maxBytes": "2Mi"}),
    )
    .await?;
    const RECORDS: usize = 100_000;
    const MAX_BYTES: f64 = (2 << 20) as f64;
    produce_json(
        &env,
        &table.topic.name,
        0..RECORDS,
        |i| json!({"id": i, "noise": noise(i)}),
    )
    .await?;
    let ingester = table.start()?;
    let (commits, peak) = ingester.commits_once_consumed(RECORDS, 4.0, DEADLINE).await;
    assert!(
        (MAX_BYTES..MAX_BYTES * 1.25).contains(&peak),
        "at most one chunk past maxBytes: {peak}"
    );
    assert_eq!(ingester.stop(Duration::from_secs(60)), Some(0));

    let view = table.read(&env)?;
    assert_eq!(view["rows"], RECORDS);
    assert_eq!(view["distinct"], RECORDS);
    let sizes: Vec<u64> = serde_json::from_value(view["sizes"].clone())?;
    // Version 0 creates the table; then one commit, and one file, per batch, the last one at
    // the stop.
    assert_eq!(view["version"].as_u64(), Some(sizes.len() as u64), "{view}");
    assert!(
        sizes.len() as f64 > commits,
        "{commits} commits before the stop, files {sizes:?}"
    );
    // The encoded file is smaller than what the writer held to make it.
    assert!(
        sizes.iter().all(|s| (*s as f64) < MAX_BYTES),
        "files under maxBytes: {sizes:?}"
    );
    Ok(())
}

/// With an interval too long to matter, the ingester commits each time it holds
/// `commit.maxRecords` records: every commit but the one at the stop has exactly that many.
#[tokio::test]
async fn delta_commits_every_max_records() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let table = LocalTable::new(
        &env,
        "maxrecords",
        1,
        json!({"interval": "1h", "maxRecords": 1000}),
    )
    .await?;
    produce_json(&env, &table.topic.name, 0..5500, |i| json!({"id": i})).await?;
    let ingester = table.start()?;
    let (commits, _) = ingester.commits_once_consumed(5500, 5.0, DEADLINE).await;
    assert_eq!(commits, 5.0, "five full batches before the stop");
    assert_eq!(ingester.stop(Duration::from_secs(60)), Some(0));

    let view = table.read(&env)?;
    assert_eq!(view["version"], 6, "{view}");
    assert_eq!(
        view["file_rows"],
        json!([500, 1000, 1000, 1000, 1000, 1000])
    );
    Ok(())
}

/// `maintenance.checkpointInterval` was accepted and ignored (deltalake's default of 100 held).
/// A table the ingester creates now carries it as `delta.checkpointInterval`, and deltalake
/// writes a checkpoint after every version that completes a multiple of it (versions 2, 5, ...).
#[tokio::test]
async fn delta_checkpoints_follow_the_checkpoint_interval() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let table = LocalTable::new(
        &env,
        "checkpoint",
        1,
        json!({"interval": "1h", "maxRecords": 100}),
    )
    .await?;
    let mut manifest: Value = serde_yaml::from_str(&std::fs::read_to_string(&table.manifest)?)?;
    manifest["spec"]["maintenance"] = json!({"checkpointInterval": 3});
    std::fs::write(&table.manifest, serde_yaml::to_string(&manifest)?)?;
    produce_json(&env, &table.topic.name, 0..700, |i| json!({"id": i})).await?;
    let ingester = table.start()?;
    let (commits, _) = ingester.commits_once_consumed(700, 7.0, DEADLINE).await;
    assert_eq!(commits, 7.0);
    assert_eq!(ingester.stop(Duration::from_secs(60)), Some(0));
    let interval = python(
        &env,
        "import sys\nfrom deltalake import DeltaTable\nprint(DeltaTable(sys.argv[1]).metadata().configuration.get('delta.checkpointInterval'))",
        &[&table.location],
    )?;
    assert_eq!(interval.trim(), "3");
    let log = table.dir.join("table/_delta_log");
    let mut checkpoints: Vec<String> = std::fs::read_dir(&log)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".checkpoint.parquet"))
        .collect();
    checkpoints.sort();
    assert_eq!(
        checkpoints,
        [
            "00000000000000000002.checkpoint.parquet",
            "00000000000000000005.checkpoint.parquet"
        ]
    );
    // Read through the checkpoints: every row once.
    let view = table.read(&env)?;
    assert_eq!(
        (view["rows"].as_u64(), view["distinct"].as_u64()),
        (Some(700), Some(700))
    );
    Ok(())
}

/// `kafkatable-ingester bench-drain` (what `make bench` measures) reads every record in each
/// mode and counts the same payload bytes; only decode and encode build Arrow; copy refuses a
/// payload that is not UTF-8, naming its partition and offset.
#[tokio::test]
async fn bench_drain_reads_every_record_in_each_mode() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let table = LocalTable::new(&env, "drain", 2, json!({"interval": "1s"})).await?;
    const RECORDS: usize = 2000;
    let payload = |i: usize| json!({"id": i, "name": format!("café-{i}")});
    produce_json(&env, &table.topic.name, 0..RECORDS, payload).await?;
    let bytes: usize = (0..RECORDS).map(|i| payload(i).to_string().len()).sum();
    let drain = |mode: &str, records: usize| {
        std::process::Command::new(kafkatable_e2e::ingester::binary())
            .args(["bench-drain", "--mode", mode, "--records"])
            .arg(records.to_string())
            .arg("-f")
            .arg(&table.manifest)
            .arg("--secrets-dir")
            .arg(table.dir.join("secrets"))
            .output()
    };
    for mode in ["raw", "copy", "decode", "encode"] {
        let out = drain(mode, RECORDS)?;
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout)?;
        assert_eq!(report["mode"], mode);
        assert_eq!(report["records"], RECORDS, "{mode}: {report}");
        assert_eq!(report["payload_bytes"], bytes, "{mode}: {report}");
        let builds_arrow = matches!(mode, "decode" | "encode");
        assert_eq!(
            report["arrow_bytes"].as_u64() > Some(0),
            builds_arrow,
            "{mode}: {report}"
        );
    }

    let producer: FutureProducer = kafka_config(&env, false).create()?;
    let delivered = producer
        .send(
            FutureRecord::<(), _>::to(&table.topic.name)
                .partition(1)
                .payload(&b"{\"id\": \"\xff\"}"[..]),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;
    let out = drain("copy", RECORDS + 1)?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "partition {} offset {}: not UTF-8",
            delivered.partition, delivered.offset
        )),
        "{stderr}"
    );
    Ok(())
}

/// `table.headersColumn`: each record's headers (a repeated one, one without a value, none at
/// all) in `_kafka_headers` as deltalake reads them, in the record's order.
#[tokio::test]
async fn headers_land_in_their_column_in_order() -> anyhow::Result<()> {
    use rdkafka::message::{Header, OwnedHeaders};
    let env = TestEnv::load()?;
    let topic = TestTopic::create(&env, "ingest-headers", 2).await?;
    let dir = WorkDir::new("kt-ingest-headers")?;
    let location = format!("file://{}/tables/events", dir.display());
    let manifest = json!({
        "apiVersion": "kafkatable.io/v1alpha1",
        "kind": "KafkaTable",
        "metadata": {"name": "events", "namespace": "e2e"},
        "spec": {
            "source": {"brokers": env.kafka_bootstrap, "topic": topic.name},
            "table": {"format": "delta", "location": location, "headersColumn": true},
            "commit": {"interval": "1s"},
        },
    });
    let manifest_path = dir.join("table.yaml");
    std::fs::write(&manifest_path, serde_yaml::to_string(&manifest)?)?;
    let producer: FutureProducer = kafka_config(&env, false).create()?;
    for i in 0..200i32 {
        let payload = json!({"id": i}).to_string();
        let trace = format!("t{i}");
        let mut record = FutureRecord::<(), _>::to(&topic.name)
            .payload(&payload)
            .partition(i % 2);
        if i % 5 != 0 {
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "trace",
                    value: Some(trace.as_bytes()),
                })
                .insert(Header {
                    key: "empty",
                    value: None::<&[u8]>,
                })
                .insert(Header {
                    key: "trace",
                    value: Some(&[0u8, 255][..]),
                });
            record = record.headers(headers);
        }
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)?;
    }
    let ingester = IngesterProcess::start(&manifest_path, &dir, &dir, "ingester-headers")?;
    let script = r#"
import json, sys
from deltalake import DeltaTable
try:
    t = DeltaTable(sys.argv[1]).to_pyarrow_table()
except Exception:
    print(json.dumps({"rows": 0})); sys.exit(0)
rows = {r["id"]: [[k, None if v is None else v.hex()] for k, v in r["_kafka_headers"]] for r in t.to_pylist()}
print(json.dumps({"rows": t.num_rows, "one": rows.get(1), "five": rows.get(5),
                  "type": str(t.schema.field("_kafka_headers").type)}))
"#;
    let (env_ref, location_ref) = (&env, &location);
    let seen = eventually("200 rows with headers", DEADLINE, || async move {
        let out = python(env_ref, script, &[location_ref]).ok()?;
        let view: Value = serde_json::from_str(out.trim()).ok()?;
        (view["rows"].as_u64()? >= 200).then_some(view)
    })
    .await;
    assert_eq!(seen["rows"], 200);
    assert_eq!(
        seen["one"],
        json!([["trace", "7431"], ["empty", null], ["trace", "00ff"]]),
        "{seen}"
    );
    assert_eq!(
        seen["five"],
        json!([]),
        "a record without headers: an empty map"
    );
    assert!(
        seen["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("map<string, binary")),
        "{seen}"
    );
    ingester.stop(Duration::from_secs(30));
    Ok(())
}
