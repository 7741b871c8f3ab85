//! The ingester into Apache Iceberg, checked with pyiceberg: through the REST catalog with data
//! in S3 (MinIO) and through the embedded SQL (SQLite) catalog on a local warehouse; the right
//! rows and types, one row per (partition, offset), sync points in the snapshot summary equal to
//! the group's offsets, and a restart resuming from the table. Then the commit fence: two
//! committers racing for the same partition never both win.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use kafkatable_crds::config::{CatalogConfig, StorageConfig};
use kafkatable_crds::spec::CatalogType;
use kafkatable_e2e::env::TestEnv;
use kafkatable_e2e::fixtures::{
    TestTopic, delete_group, eventually, group_offsets, noise, produce_json, produce_raw,
    produce_tombstone, python, unique,
};
use kafkatable_e2e::ingester::{IngesterProcess, WorkDir};
use kafkatable_ingester::commit::iceberg::IcebergCommitter;
use kafkatable_ingester::commit::{CommitOutcome, Committer, PartitionRange, keys};
use serde_json::{Value, json};

const PARTITIONS: i32 = 3;
const DEADLINE: Duration = Duration::from_secs(120);

const READER: &str = r#"
import json, sys
from pyiceberg.catalog import load_catalog
kind, uri, warehouse, endpoint, key, secret, ident, keys = sys.argv[1:9]
props = {"uri": uri, "s3.endpoint": endpoint, "s3.access-key-id": key, "s3.secret-access-key": secret,
         "s3.region": "us-east-1", "s3.path-style-access": "true"}
if warehouse:
    props["warehouse"] = warehouse
catalog = load_catalog("kafkatable", type=kind, **props)
try:
    table = catalog.load_table(ident)
except Exception as e:
    print(json.dumps({"rows": 0, "missing": str(e)}))
    sys.exit(0)
t = table.scan().to_arrow()
snapshot = table.current_snapshot()
summary = snapshot.summary.additional_properties if snapshot else {}
pairs = set(zip(t["_kafka_partition"].to_pylist(), t["_kafka_offset"].to_pylist()))
print(json.dumps({
    "rows": t.num_rows,
    "distinct": len(pairs),
    "ids": sorted(t["id"].to_pylist()),
    "types": {f.name: str(f.type) for f in t.schema},
    "sync": {p: int(summary[k]) for p, k in enumerate(json.loads(keys)) if k in summary},
}))
"#;

/// Opens `ident` from the REST catalog with pyiceberg as `table`, for the script that follows.
const REST_TABLE: &str = r#"
import json, sys
from pyiceberg.catalog import load_catalog
uri, endpoint, key, secret, ident = sys.argv[1:6]
catalog = load_catalog("kafkatable", type="rest", uri=uri, **{"s3.endpoint": endpoint,
    "s3.access-key-id": key, "s3.secret-access-key": secret, "s3.region": "us-east-1",
    "s3.path-style-access": "true"})
table = catalog.load_table(ident)
"#;

/// Runs `script` after [`REST_TABLE`] has loaded table `ident`, and returns what it printed.
fn read_rest_table(env: &TestEnv, ident: &str, script: &str) -> anyhow::Result<String> {
    let args = [
        env.iceberg_rest_uri.as_str(),
        &env.s3_endpoint,
        &env.s3_access_key,
        &env.s3_secret_key,
        ident,
    ];
    Ok(python(env, &format!("{REST_TABLE}{script}"), &args)?)
}

struct Setup {
    env: TestEnv,
    topic: TestTopic,
    dir: WorkDir,
    manifest: PathBuf,
    group: String,
    /// Reader arguments: kind, uri, warehouse.
    catalog: (String, String, String),
    ident: String,
}

impl Setup {
    async fn new(
        catalog: Value,
        reader_catalog: (String, String, String),
        storage: Option<Value>,
        partitioning: Option<Value>,
        tag: &str,
    ) -> anyhow::Result<Self> {
        let env = TestEnv::load()?;
        let topic = TestTopic::create(&env, tag, PARTITIONS).await?;
        let dir = WorkDir::new(&format!("kt-{tag}"))?;
        dir.s3_secret(&env)?;
        let group = unique("iceberg-group");
        let mut table = json!({"format": "iceberg", "catalog": catalog});
        if let Some(storage) = storage {
            table["storage"] = storage;
        }
        if let Some(Value::Object(fields)) = partitioning {
            for (k, v) in fields {
                table[k] = v;
            }
        }
        let manifest = json!({
            "apiVersion": "kafkatable.io/v1alpha1",
            "kind": "KafkaTable",
            "metadata": {"name": "events", "namespace": "e2e"},
            "spec": {
                "source": {"brokers": env.kafka_bootstrap, "topic": topic.name, "consumerGroup": group},
                "table": table,
                "commit": {"interval": "1s"},
            },
        });
        let ident = format!(
            "{}.{}",
            catalog["namespace"].as_str().unwrap_or_default(),
            catalog["table"].as_str().unwrap_or_default()
        );
        let manifest_path = dir.join("table.yaml");
        std::fs::write(&manifest_path, serde_yaml::to_string(&manifest)?)?;
        Ok(Self {
            env,
            topic,
            dir,
            manifest: manifest_path,
            group,
            catalog: reader_catalog,
            ident,
        })
    }

    /// A table in a namespace of its own through the REST catalog, its data in MinIO.
    async fn rest(tag: &str) -> anyhow::Result<Self> {
        let env = TestEnv::load()?;
        let namespace = unique(tag).replace('-', "_");
        let catalog = json!({"type": "rest", "uri": env.iceberg_rest_uri, "namespace": namespace, "table": "events"});
        let storage = json!({"endpoint": env.s3_endpoint, "region": "us-east-1", "pathStyle": true, "credentialsSecretRef": {"name": "s3"}});
        Self::new(
            catalog,
            ("rest".into(), env.iceberg_rest_uri.clone(), String::new()),
            Some(storage),
            None,
            tag,
        )
        .await
    }

    fn start(&self, name: &str) -> anyhow::Result<IngesterProcess> {
        Ok(IngesterProcess::start(
            &self.manifest,
            &self.dir.join("secrets"),
            &self.dir,
            name,
        )?)
    }

    async fn produce(&self, ids: std::ops::Range<usize>) -> anyhow::Result<()> {
        produce_json(
            &self.env,
            &self.topic.name,
            ids,
            |i| json!({"id": i, "name": format!("n{i}"), "score": i as f64 / 2.0, "tags": ["x"]}),
        )
        .await?;
        Ok(())
    }

    fn read(&self) -> anyhow::Result<Value> {
        let (kind, uri, warehouse) = &self.catalog;
        let env = &self.env;
        let keys: Vec<String> = (0..PARTITIONS)
            .map(|p| keys::iceberg_key(&self.topic.name, p))
            .collect();
        let keys = serde_json::to_string(&keys)?;
        let args = [
            kind.as_str(),
            uri,
            warehouse,
            &env.s3_endpoint,
            &env.s3_access_key,
            &env.s3_secret_key,
            &self.ident,
            &keys,
        ];
        Ok(serde_json::from_str(python(env, READER, &args)?.trim())?)
    }

    async fn expect_rows(&self, rows: usize, ingester: &IngesterProcess) -> anyhow::Result<Value> {
        let what = format!("{rows} rows in the iceberg table");
        let seen = eventually(&what, DEADLINE, || async {
            let view = self.read().ok()?;
            (view["rows"].as_u64()? as usize >= rows).then_some(view)
        });
        let seen = tokio::time::timeout(DEADLINE + Duration::from_secs(5), seen)
            .await
            .map_err(|_| anyhow::anyhow!("timed out; ingester log:\n{}", ingester.log_text()))?;
        assert_eq!(seen["rows"].as_u64(), Some(rows as u64), "no duplicates");
        assert_eq!(
            seen["distinct"].as_u64(),
            Some(rows as u64),
            "one row per (partition, offset)"
        );
        let ids: Vec<u64> = serde_json::from_value(seen["ids"].clone())?;
        assert_eq!(ids, (0..rows as u64).collect::<Vec<_>>());
        let sync: BTreeMap<String, i64> = serde_json::from_value(seen["sync"].clone())?;
        assert_eq!(
            sync.values().sum::<i64>(),
            rows as i64,
            "the snapshot summary covers every record: {sync:?}"
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

#[tokio::test]
async fn json_to_iceberg_through_the_rest_catalog_on_s3() -> anyhow::Result<()> {
    let setup = Setup::rest("iceberg-rest").await?;
    setup.produce(0..2000).await?;
    let first = setup.start("iceberg-a")?;
    let view = setup.expect_rows(2000, &first).await?;
    let types = &view["types"];
    assert_eq!(types["id"], "int64");
    assert_eq!(types["name"], "string", "{types}");
    assert_eq!(types["score"], "double");
    assert_eq!(types["_kafka_offset"], "int64");
    assert_eq!(types["_kafka_timestamp"], "timestamp[us, tz=UTC]");
    let sync: BTreeMap<String, i64> = serde_json::from_value(view["sync"].clone())?;
    let setup_ref = &setup;
    let sync_ref = &sync;
    eventually(
        "group offsets equal to the snapshot's sync points",
        DEADLINE,
        || async move { (setup_ref.group_offsets().ok()? == *sync_ref).then_some(()) },
    )
    .await;

    assert_eq!(first.stop(Duration::from_secs(30)), Some(0));
    setup.produce(2000..3000).await?;
    let second = setup.start("iceberg-b")?;
    setup.expect_rows(3000, &second).await?;
    second.stop(Duration::from_secs(30));
    Ok(())
}

#[tokio::test]
async fn json_to_iceberg_through_the_embedded_sql_catalog() -> anyhow::Result<()> {
    let dir = WorkDir::new("kt-iceberg-sql")?;
    std::fs::create_dir_all(dir.join("warehouse"))?;
    let uri = format!("sqlite://{}/catalog.db?mode=rwc", dir.display());
    let warehouse = format!("file://{}/warehouse", dir.display());
    let catalog = json!({"type": "sql", "uri": uri, "warehouse": warehouse, "namespace": "lake", "table": "events"});
    let reader_uri = format!("sqlite:///{}/catalog.db", dir.display());
    let setup = Setup::new(
        catalog,
        ("sql".into(), reader_uri, warehouse.clone()),
        None,
        None,
        "iceberg-sql",
    )
    .await?;
    setup.produce(0..1000).await?;
    let ingester = setup.start("iceberg-sql")?;
    setup.expect_rows(1000, &ingester).await?;
    ingester.stop(Duration::from_secs(30));
    Ok(())
}

/// A table partitioned by the event day, a field and a bucket of the id: the spec pyiceberg
/// sees, the partition of every data file, and rows per day.
#[tokio::test]
async fn iceberg_table_partitioned_by_day_field_and_bucket() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let namespace = unique("parts").replace('-', "_");
    let catalog = json!({"type": "rest", "uri": env.iceberg_rest_uri, "namespace": namespace, "table": "events"});
    let storage = json!({"endpoint": env.s3_endpoint, "region": "us-east-1", "pathStyle": true, "credentialsSecretRef": {"name": "s3"}});
    let partitioning = json!({
        "eventTime": {"field": "ts", "format": "rfc3339"},
        "partitionBy": [
            {"field": "ts", "transform": "day"},
            {"field": "country", "transform": "identity"},
            {"field": "id", "transform": "bucket[4]"},
        ],
    });
    let setup = Setup::new(
        catalog,
        ("rest".into(), env.iceberg_rest_uri.clone(), String::new()),
        Some(storage),
        Some(partitioning),
        "iceberg-parts",
    )
    .await?;
    // 600 records over three days (2026-11-19..21) and two countries.
    produce_json(&setup.env, &setup.topic.name, 0..600, |i| {
        json!({
            "id": i,
            "name": format!("n{i}"),
            "ts": format!("2026-11-{:02}T{:02}:00:00Z", 19 + i % 3, i % 24),
            "country": if i % 2 == 0 { "de" } else { "fr" },
        })
    })
    .await?;
    let ingester = setup.start("iceberg-parts")?;
    setup.expect_rows(600, &ingester).await?;

    let script = r#"
from collections import Counter
schema = table.schema()
spec = [[f.name, str(f.transform), schema.find_field(f.source_id).name] for f in table.spec().fields]
files = table.inspect.files().to_pylist()
file_parts = sorted({(str(f["partition"]["ts_day"]), f["partition"]["country"]) for f in files})
bucket_values = sorted({f["partition"]["id_bucket"] for f in files})
t = table.scan().to_arrow()
per_day = sorted(Counter(str(d) for d in t["ts_day"].to_pylist()).items())
# A pushed-down filter on a partition column reads only that partition's files.
de = table.scan(row_filter="country == 'de'").to_arrow()
print(json.dumps({"spec": spec, "file_parts": file_parts, "buckets": bucket_values,
    "per_day": per_day, "de_rows": de.num_rows, "de_countries": sorted(set(de["country"].to_pylist()))}))
"#;
    let view: Value = serde_json::from_str(read_rest_table(&env, &setup.ident, script)?.trim())?;
    assert_eq!(
        view["spec"],
        json!([
            ["ts_day", "identity", "ts_day"],
            ["country", "identity", "country"],
            ["id_bucket", "bucket[4]", "id"],
        ])
    );
    let days = ["2026-11-19", "2026-11-20", "2026-11-21"];
    let expected: Vec<Value> = days
        .iter()
        .flat_map(|d| ["de", "fr"].map(|c| json!([d, c])))
        .collect();
    assert_eq!(view["file_parts"], json!(expected));
    assert_eq!(view["buckets"], json!([0, 1, 2, 3]));
    assert_eq!(
        view["per_day"],
        json!(days.iter().map(|d| json!([d, 200])).collect::<Vec<_>>())
    );
    assert_eq!(view["de_rows"], 300);
    assert_eq!(view["de_countries"], json!(["de"]));
    ingester.stop(Duration::from_secs(30));
    Ok(())
}

/// Two committers race for partition 0 of one table, round after round: in each round
/// exactly one wins and the other is told it lost, so no round writes its rows twice.
#[tokio::test]
async fn concurrent_committers_never_both_win() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let catalog = CatalogConfig {
        type_: CatalogType::Rest,
        name: "kafkatable".into(),
        uri: env.iceberg_rest_uri.clone(),
        warehouse: None,
        namespace: vec![unique("fence").replace('-', "_")],
        table: "events".into(),
        token_file: None,
        basic_auth: None,
    };
    let dir = WorkDir::new("kt-fence")?;
    let secrets = dir.s3_secret(&env)?;
    let storage = StorageConfig {
        endpoint: Some(env.s3_endpoint.clone()),
        region: Some("us-east-1".into()),
        path_style: true,
        allow_http: true,
        access_key_id_file: Some(secrets.join("s3/accessKeyId")),
        secret_access_key_file: Some(secrets.join("s3/secretAccessKey")),
    };
    let mut a = Committer::Iceberg(
        IcebergCommitter::open(&catalog, &storage, "fence", 1 << 20, Vec::new()).await?,
    );
    let mut b = Committer::Iceberg(
        IcebergCommitter::open(&catalog, &storage, "fence", 1 << 20, Vec::new()).await?,
    );
    let schema = std::sync::Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
    let batch = |n: i64| {
        RecordBatch::try_new(
            schema.clone(),
            vec![std::sync::Arc::new(Int64Array::from(vec![n; 10]))],
        )
    };

    let mut sync: Option<i64> = None;
    let (mut conflicts, rounds) = (0usize, 12usize);
    for round in 0..rounds {
        let next = sync.unwrap_or(0) + 10;
        let range = [PartitionRange {
            partition: 0,
            expected: sync,
            next,
        }];
        let n = round as i64;
        let (mut files_a, mut files_b) = (a.staged(), b.staged());
        let (sa, sb) = tokio::join!(
            a.stage(&mut files_a, vec![batch(n)?]),
            b.stage(&mut files_b, vec![batch(n)?])
        );
        sa?;
        sb?;
        let (ra, rb) = tokio::join!(a.commit(files_a, &range), b.commit(files_b, &range));
        let outcomes = [ra?, rb?];
        let wins = outcomes
            .iter()
            .filter(|o| matches!(o, CommitOutcome::Committed { .. }))
            .count();
        assert_eq!(
            wins, 1,
            "round {round}: exactly one committer wins, got {outcomes:?}"
        );
        conflicts += outcomes
            .iter()
            .filter(|o| matches!(o, CommitOutcome::Conflict { .. }))
            .count();
        sync = Some(next);
    }
    assert_eq!(conflicts, rounds);
    let points = a.sync_points(&[0]).await?;
    assert_eq!(points.get(&0).copied(), Some(10 * rounds as i64));

    // pyiceberg agrees: one batch of 10 rows per round, not two.
    let ident = format!("{}.events", catalog.namespace[0]);
    let rows = read_rest_table(&env, &ident, "print(table.scan().to_arrow().num_rows)")?;
    assert_eq!(rows.trim(), (10 * rounds).to_string());
    Ok(())
}

/// With an interval too long to matter, the ingester commits each time the next commit holds
/// `commit.maxBytes`, counting what iceberg-rust reports for its open files (one per table
/// partition here): commits keep coming while it runs, and the buffer never holds much more
/// than that.
#[tokio::test]
async fn iceberg_commits_when_the_batch_reaches_max_bytes() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let topic = TestTopic::create(&env, "iceberg-maxbytes", 1).await?;
    let dir = WorkDir::new("kt-iceberg-maxbytes")?;
    dir.s3_secret(&env)?;
    let namespace = unique("maxbytes").replace('-', "_");
    let manifest = json!({
        "apiVersion": "kafkatable.io/v1alpha1",
        "kind": "KafkaTable",
        "metadata": {"name": "maxbytes", "namespace": "e2e"},
        "spec": {
            "source": {"brokers": env.kafka_bootstrap, "topic": topic.name},
            "table": {
                "format": "iceberg",
                "catalog": {"type": "rest", "uri": env.iceberg_rest_uri, "namespace": namespace, "table": "events"},
                "storage": {"endpoint": env.s3_endpoint, "region": "us-east-1", "pathStyle": true, "credentialsSecretRef": {"name": "s3"}},
                "partitionBy": [{"field": "half", "transform": "identity"}],
            },
            "commit": {"interval": "1h", "maxBytes": "2Mi"},
        },
    });
    let manifest_path = dir.join("table.yaml");
    std::fs::write(&manifest_path, serde_yaml::to_string(&manifest)?)?;
    // About 20 MB of payloads, in two table partitions.
    const RECORDS: usize = 100_000;
    const MAX_BYTES: f64 = (2 << 20) as f64;
    produce_json(
        &env,
        &topic.name,
        0..RECORDS,
        |i| json!({"id": i, "half": i % 2, "noise": noise(i)}),
    )
    .await?;
    let ingester = IngesterProcess::start(
        &manifest_path,
        &dir.join("secrets"),
        &dir,
        "iceberg-maxbytes",
    )?;
    let (commits, peak) = ingester.commits_once_consumed(RECORDS, 4.0, DEADLINE).await;
    assert!(
        (MAX_BYTES..MAX_BYTES * 1.25).contains(&peak),
        "at most one chunk past maxBytes: {peak}"
    );
    assert_eq!(ingester.stop(Duration::from_secs(60)), Some(0));

    let script = r#"
t = table.scan().to_arrow()
pairs = set(zip(t["_kafka_partition"].to_pylist(), t["_kafka_offset"].to_pylist()))
snapshots = [int(s.summary["added-files-size"]) for s in table.snapshots()]
files = [int(s.summary["added-data-files"]) for s in table.snapshots()]
print(json.dumps({"rows": t.num_rows, "distinct": len(pairs), "sizes": snapshots, "files": files}))
"#;
    let ident = format!("{namespace}.events");
    let view: Value = serde_json::from_str(read_rest_table(&env, &ident, script)?.trim())?;
    assert_eq!(view["rows"], RECORDS);
    assert_eq!(view["distinct"], RECORDS);
    let sizes: Vec<u64> = serde_json::from_value(view["sizes"].clone())?;
    assert!(
        sizes.len() as f64 > commits,
        "{commits} commits before the stop, snapshots {sizes:?}"
    );
    assert_eq!(
        view["files"],
        json!(vec![2; sizes.len()]),
        "a file per table partition in every snapshot"
    );
    // A file is smaller than what iceberg-rust reported for it while writing (its dictionaries
    // and pages before compression).
    assert!(
        sizes.iter().all(|s| (*s as f64) < MAX_BYTES),
        "snapshots under maxBytes: {sizes:?}"
    );
    Ok(())
}

/// Rewrites the table with pyiceberg (an overwrite with its own rows, as a compaction by
/// another engine would) and expires every older snapshot; prints how many snapshots are left
/// with any of `ours` (the sync point keys, defined before this script) in their summary.
const REWRITE_AND_EXPIRE: &str = r#"
table.overwrite(table.scan().to_arrow())
table = catalog.load_table(ident)
current = table.current_snapshot().snapshot_id
older = [s.snapshot_id for s in table.snapshots() if s.snapshot_id != current]
table.maintenance.expire_snapshots().by_ids(older).commit()
table = catalog.load_table(ident)
summaries = [s.summary.additional_properties for s in table.snapshots()]
print(json.dumps({"snapshots": len(summaries),
                  "with_sync_points": sum(any(k in ours for k in s) for s in summaries),
                  "rows": table.scan().to_arrow().num_rows}))
"#;

/// Another engine rewrites the table (a compaction, here pyiceberg overwriting it with its own
/// rows) and expires every older snapshot: no snapshot left carries our sync points in its
/// summary. They used to be found only there, so the next ingester started over from
/// `startOffset` and wrote every record again (unless the group's offsets happened to be
/// there). The table properties, set in the same commits, keep them.
#[tokio::test]
async fn sync_points_survive_a_rewrite_and_snapshot_expiry_by_another_engine() -> anyhow::Result<()>
{
    let setup = Setup::rest("iceberg-expiry").await?;
    let env = &setup.env;
    setup.produce(0..1000).await?;
    let first = setup.start("iceberg-expiry-a")?;
    setup.expect_rows(1000, &first).await?;
    assert_eq!(first.stop(Duration::from_secs(30)), Some(0));

    let ours: Vec<String> = (0..PARTITIONS)
        .map(|p| keys::iceberg_key(&setup.topic.name, p))
        .collect();
    let rewrite = format!(
        "ours = {}\n{}",
        serde_json::to_string(&ours)?,
        REWRITE_AND_EXPIRE
    );
    let after: Value = serde_json::from_str(read_rest_table(env, &setup.ident, &rewrite)?.trim())?;
    assert_eq!(after["rows"], 1000, "the rewrite keeps the rows: {after}");
    assert_eq!(
        after["with_sync_points"], 0,
        "no snapshot left carries our summary: {after}"
    );
    // The group's offsets expire too when a table is not ingested into for a while
    // (`offsets.retention.minutes`): only the table can tell where to go on.
    delete_group(env, &setup.group).await?;

    setup.produce(1000..2000).await?;
    let second = setup.start("iceberg-expiry-b")?;
    setup.expect_rows(2000, &second).await?;
    second.stop(Duration::from_secs(30));
    Ok(())
}

/// The dead-letter table's rows (partition, offset, reason, value bytes), read by pyiceberg.
const LETTERS: &str = r#"
try:
    letters = catalog.load_table(ident + "_dead_letters").scan().to_arrow().to_pylist()
except Exception:
    letters = []
rows = sorted([r["_kafka_partition"], r["_kafka_offset"], r["reason"],
               None if r["_kafka_value"] is None else list(r["_kafka_value"]), r["kafkatable"]]
              for r in letters)
print(json.dumps(rows))
"#;

#[tokio::test]
async fn bad_records_go_to_the_iceberg_dead_letter_table_once_through_a_crash() -> anyhow::Result<()>
{
    let setup = Setup::rest("iceberg-dlt").await?;
    let mut manifest: Value = serde_yaml::from_str(&std::fs::read_to_string(&setup.manifest)?)?;
    manifest["spec"]["errors"] = json!({"policy": "deadLetter", "deadLetter": {"table": {}}});
    std::fs::write(&setup.manifest, serde_yaml::to_string(&manifest)?)?;
    let (env, topic) = (&setup.env, setup.topic.name.as_str());
    let good = |i: usize| json!({"id": i, "name": format!("n{i}")}).to_string();
    let ids = |view: &Value| -> Vec<u64> {
        serde_json::from_value(view["ids"].clone()).unwrap_or_default()
    };
    let letters = || -> Vec<Value> {
        read_rest_table(env, &setup.ident, LETTERS)
            .ok()
            .and_then(|out| serde_json::from_str(out.trim()).ok())
            .unwrap_or_default()
    };

    // The table exists (its columns inferred from good records) before the bad ones come.
    let (g0, g1, g2) = (good(0), good(1), good(2));
    produce_raw(
        env,
        topic,
        0,
        &[g0.as_bytes(), g1.as_bytes(), g2.as_bytes()],
    )
    .await?;
    let first = setup.start("iceberg-dlt-a")?;
    eventually("the good records", DEADLINE, || async {
        (ids(&setup.read().ok()?).len() == 3).then_some(())
    })
    .await;
    assert_eq!(first.stop(Duration::from_secs(30)), Some(0));

    let malformed = br#"{"id":3,"#;
    let (g4, g6) = (good(4), good(6));
    produce_raw(env, topic, 3, &[malformed, g4.as_bytes()]).await?;
    produce_tombstone(env, topic, "k5").await?;
    produce_raw(env, topic, 6, &[g6.as_bytes()]).await?;

    // This one dies right after its dead-letter commit, before the table's.
    let mut crashing = IngesterProcess::start_with_env(
        &setup.manifest,
        &setup.dir.join("secrets"),
        &setup.dir,
        "iceberg-dlt-crash",
        &[("KAFKATABLE_FAULT_CRASH_AFTER_DEAD_LETTERS", "1")],
    )?;
    crashing
        .exit_within("the ingester to abort after its dead letters", DEADLINE)
        .await;
    let written = letters();
    assert_eq!(
        written.len(),
        2,
        "both dead letters in one commit: {written:?}"
    );
    assert_eq!(
        ids(&setup.read()?),
        vec![0, 1, 2],
        "the table commit did not happen"
    );

    let second = setup.start("iceberg-dlt-b")?;
    eventually("the good records after the bad ones", DEADLINE, || async {
        (ids(&setup.read().ok()?).len() >= 5).then_some(())
    })
    .await;
    let view = setup.read()?;
    assert_eq!(
        ids(&view),
        vec![0, 1, 2, 4, 6],
        "every good record once: {view}"
    );
    assert_eq!(
        view["distinct"], view["rows"],
        "one row per (partition, offset)"
    );
    assert_eq!(
        letters(),
        vec![
            json!([0, 3, "undecodable", malformed.to_vec(), "e2e/events"]),
            json!([0, 5, "tombstone", null, "e2e/events"]),
        ],
        "exactly the bad records, once each, across the crash"
    );
    assert_eq!(second.stop(Duration::from_secs(30)), Some(0));
    Ok(())
}
