//! The holes that lost or silently changed records, each under a test against the real parts
//! (the broker, MinIO, local Delta tables read by deltalake): a commit whose response was lost
//! on the way back, a restart in front of differently typed records, records that are not one
//! JSON object each, numbers that do not fit their column, tables with writer features the
//! ingester does not honour, and an object store outage longer than a few commits. Each test
//! failed before its fix.

use std::time::Duration;

use kafkatable_e2e::env::TestEnv;
use kafkatable_e2e::fixtures::{
    TestBucket, TestTopic, eventually, produce_json, produce_raw, produce_tombstone, python,
};
use kafkatable_e2e::ingester::{IngesterProcess, WorkDir};
use kafkatable_e2e::proxy::LossyProxy;
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(120);

/// Reads a Delta table (local or on S3) with deltalake: every row's id, partition and offset
/// (sorted by offset), the named column's values, the version and the data files' paths.
const READER: &str = r#"
import json, sys
from deltalake import DeltaTable
import pyarrow as pa
uri, column = sys.argv[1], sys.argv[2]
opts = {}
if len(sys.argv) > 3:
    opts = {"AWS_ENDPOINT_URL": sys.argv[3], "AWS_ACCESS_KEY_ID": sys.argv[4],
            "AWS_SECRET_ACCESS_KEY": sys.argv[5], "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
try:
    dt = DeltaTable(uri, storage_options=opts)
except Exception as e:
    print(json.dumps({"rows": 0, "missing": str(e)})); sys.exit(0)
t = dt.to_pyarrow_table()
meta = "_kafka_offset" in t.column_names
t = t.sort_by([("_kafka_partition", "ascending"), ("_kafka_offset", "ascending")] if meta else [("id", "ascending")])
adds = pa.table(dt.get_add_actions(flatten=True)).to_pydict()
text = lambda vs: [v.decode() if isinstance(v, bytes) else v for v in vs]
print(json.dumps({"rows": t.num_rows, "version": dt.version(),
    "offsets": t["_kafka_offset"].to_pylist() if meta else None,
    "pairs": len(set(zip(t["_kafka_partition"].to_pylist(), t["_kafka_offset"].to_pylist()))) if meta else None,
    "ids": t["id"].to_pylist(),
    "values": text(t[column].to_pylist()) if column in t.column_names else None,
    "paths": adds["path"]}))
"#;

fn read(env: &TestEnv, args: &[&str]) -> Option<Value> {
    serde_json::from_str(python(env, READER, args).ok()?.trim()).ok()
}

/// A topic of one partition and a local Delta table for one test.
struct Local {
    env: TestEnv,
    topic: TestTopic,
    dir: WorkDir,
    manifest: std::path::PathBuf,
    location: String,
}

impl Local {
    async fn new(name: &str) -> anyhow::Result<Self> {
        Self::with(name, json!({})).await
    }

    /// With `table` merged into `spec.table`.
    async fn with(name: &str, table: Value) -> anyhow::Result<Self> {
        let env = TestEnv::load()?;
        let topic = TestTopic::create(&env, &format!("integrity-{name}"), 1).await?;
        let dir = WorkDir::new(&format!("kt-integrity-{name}"))?;
        let location = format!("file://{}/table", dir.display());
        let mut manifest = json!({
            "apiVersion": "kafkatable.io/v1alpha1",
            "kind": "KafkaTable",
            "metadata": {"name": name, "namespace": "e2e"},
            "spec": {
                "source": {"brokers": env.kafka_bootstrap, "topic": topic.name},
                "table": {"format": "delta", "location": location},
                "commit": {"interval": "1s"},
            },
        });
        if let (Some(spec), Value::Object(extra)) =
            (manifest["spec"]["table"].as_object_mut(), table)
        {
            spec.extend(extra);
        }
        let manifest_path = dir.join("table.yaml");
        std::fs::write(&manifest_path, serde_yaml::to_string(&manifest)?)?;
        Ok(Self {
            env,
            topic,
            dir,
            manifest: manifest_path,
            location,
        })
    }

    fn start(&self, name: &str) -> anyhow::Result<IngesterProcess> {
        Ok(IngesterProcess::start(
            &self.manifest,
            &self.dir,
            &self.dir,
            name,
        )?)
    }

    fn read(&self, column: &str) -> Option<Value> {
        read(&self.env, &[&self.location, column])
    }

    async fn rows(&self, rows: u64) -> Value {
        eventually(&format!("{rows} rows"), DEADLINE, || async move {
            let view = self.read("id")?;
            (view["rows"].as_u64()? >= rows).then_some(view)
        })
        .await
    }

    /// Produces five good records (`good(id)` for ids 0 to 4), starts an ingester and waits
    /// until it has committed them.
    async fn five_committed(
        &self,
        name: &str,
        good: impl Fn(usize) -> Value,
    ) -> anyhow::Result<IngesterProcess> {
        produce_json(&self.env, &self.topic.name, 0..5, good).await?;
        let ingester = self.start(name)?;
        self.rows(5).await;
        Ok(ingester)
    }

    /// Produces `bad` after the five good records the ingester has committed, and waits until
    /// it exits or commits more (what an ingester that takes a bad record, or writes a table it
    /// must not, does).
    async fn feed(
        &self,
        ingester: IngesterProcess,
        bad: &[&[u8]],
        column: &str,
    ) -> anyhow::Result<Outcome> {
        produce_raw(&self.env, &self.topic.name, 5, bad).await?;
        Ok(self.watch(ingester, column).await)
    }

    /// Waits until the ingester exits, reports a stopped partition, or commits more than the
    /// five good rows.
    async fn watch(&self, mut ingester: IngesterProcess, column: &str) -> Outcome {
        let ingester_ref = &mut ingester;
        let (exit, stopped) = eventually("the ingester to stop or commit more", DEADLINE, || {
            let exited = ingester_ref.exited();
            let grown = self
                .read(column)
                .and_then(|v| v["rows"].as_u64())
                .is_some_and(|n| n > 5);
            let status = format!("http://{}/status", ingester_ref.http_addr);
            async move {
                let body = match reqwest::get(status).await {
                    Ok(response) => response.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                let stopped = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|r| r["stopped"].as_array().cloned())
                    .unwrap_or_default();
                (exited.is_some() || grown || !stopped.is_empty()).then_some((exited, stopped))
            }
        })
        .await;
        Outcome {
            exit,
            stopped,
            log: ingester.log_text(),
            view: self.read(column).unwrap_or_default(),
        }
    }
}

/// How an ingester met bad records: its exit (None: still running), the partitions it
/// reports stopped, its log, the table.
struct Outcome {
    exit: Option<Option<i32>>,
    stopped: Vec<Value>,
    log: String,
    view: Value,
}

impl Outcome {
    /// The table holds the five good rows alone (with `values` in the read column), and the
    /// ingester exited with an error that says each of `named` (a table it must not write).
    fn refused(&self, values: Value, named: &[&str]) {
        let log = &self.log;
        assert_eq!(
            (&self.view["offsets"], &self.view["values"]),
            (&json!([0, 1, 2, 3, 4]), &values),
            "nothing after the five good rows is committed:\n{log}"
        );
        assert!(
            matches!(self.exit, Some(Some(c)) if c != 0),
            "the ingester stops:\n{log}"
        );
        for text in named {
            assert!(log.contains(text), "the error says {text:?}:\n{log}");
        }
    }

    /// The table holds the five good rows alone (with `values` in the read column), partition
    /// 0 stopped at the bad record at `offset` (errors.policy fail) while the ingester runs on,
    /// and the report and the log say each of `named`.
    fn stopped_at(&self, offset: i64, values: Value, named: &[&str]) {
        let log = &self.log;
        assert_eq!(
            (&self.view["offsets"], &self.view["values"]),
            (&json!([0, 1, 2, 3, 4]), &values),
            "nothing after the five good rows is committed:\n{log}"
        );
        assert_eq!(self.exit, None, "the ingester runs on:\n{log}");
        assert_eq!(
            self.stopped
                .iter()
                .map(|s| (s["partition"].as_i64(), s["offset"].as_i64()))
                .collect::<Vec<_>>(),
            vec![(Some(0), Some(offset))],
            "partition 0 stopped at offset {offset}: {:?}\n{log}",
            self.stopped
        );
        let reason = self.stopped[0]["reason"].as_str().unwrap_or_default();
        for text in named {
            assert!(
                reason.contains(text) && log.contains(text),
                "the report and the log say {text:?}: {reason}\n{log}"
            );
        }
    }
}

/// A record holding two objects next to an empty record had as many rows as records, so the
/// rows after it were committed under the wrong offsets (here offset 6, an empty record, held
/// the second object of record 5). Now each record is one row or a bad record.
#[tokio::test]
async fn records_that_are_not_one_json_object_each_stop_at_their_offset() -> anyhow::Result<()> {
    let t = Local::new("onerow").await?;
    // A list column: these records take the arrow-json chunk path.
    let ingester = t
        .five_committed("ingester-onerow", |i| json!({"id": i, "tags": ["a"]}))
        .await?;
    let bad: [&[u8]; 3] = [
        br#"{"id":5,"tags":[]}{"id":6,"tags":[]}"#,
        b"",
        br#"{"id":7,"tags":["b"]}"#,
    ];
    t.feed(ingester, &bad, "id").await?.stopped_at(
        5,
        json!([0, 1, 2, 3, 4]),
        &["partition 0 offset 5", "found more"],
    );
    Ok(())
}

/// A tombstone (a record without a value) became a row of nulls, and without metadata columns
/// nothing in the table said it had been a delete. In append mode there is no row to append
/// for it: it is a bad record (errors.policy), with metadata columns or without.
#[tokio::test]
async fn a_tombstone_is_never_a_silent_row_of_nulls() -> anyhow::Result<()> {
    for (name, table) in [
        ("tombstone-bare", json!({"metadataColumns": false})),
        ("tombstone-keyed", json!({})),
    ] {
        let t = Local::with(name, table).await?;
        let ingester = t
            .five_committed(&format!("ingester-{name}"), |i| json!({"id": i}))
            .await?;
        produce_tombstone(&t.env, &t.topic.name, "k5").await?;
        produce_raw(&t.env, &t.topic.name, 6, &[br#"{"id":6}"#]).await?;
        let outcome = t.watch(ingester, "id").await;
        let log = &outcome.log;
        assert_eq!(
            outcome.view["ids"],
            json!([0, 1, 2, 3, 4]),
            "{name}: nothing after the five rows:\n{log}"
        );
        assert_eq!(outcome.exit, None, "{name}: the ingester runs on:\n{log}");
        let stopped = &outcome.stopped;
        assert_eq!(stopped.len(), 1, "{name}: {stopped:?}\n{log}");
        assert_eq!(stopped[0]["offset"], json!(5), "{name}: {stopped:?}");
        let reason = stopped[0]["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("partition 0 offset 5") && reason.contains("tombstone"),
            "{name}: the report names the tombstone: {reason}"
        );
    }
    Ok(())
}

/// `25.7` in a long column was committed as 25. Now it stops the ingester (errors.policy
/// fail) at its offset, and nothing at or after it is committed.
#[tokio::test]
async fn a_number_that_does_not_fit_its_column_stops_at_its_offset() -> anyhow::Result<()> {
    let t = Local::new("exact").await?;
    let ingester = t
        .five_committed("ingester-exact", |i| json!({"id": i, "amount": i * 10}))
        .await?;
    let bad: [&[u8]; 2] = [br#"{"id":5,"amount":50.0}"#, br#"{"id":6,"amount":25.7}"#];
    t.feed(ingester, &bad, "amount").await?.stopped_at(
        6,
        json!([0, 10, 20, 30, 40]),
        &["partition 0 offset 6", "25.7 is not a whole number"],
    );
    Ok(())
}

/// After a restart the schema used to be inferred again from the first new records, and a cast
/// with arrow's default options turned a value that did not convert into a null: `"n/a"` in the
/// long column `amount` landed as null. Now the ingester decodes against the table's columns,
/// and the record is refused.
#[tokio::test]
async fn a_restart_decodes_against_the_tables_columns() -> anyhow::Result<()> {
    let t = Local::new("retype").await?;
    let first = t
        .five_committed("ingester-retype-1", |i| json!({"id": i, "amount": i}))
        .await?;
    assert_eq!(first.stop(Duration::from_secs(30)), Some(0));

    // Inferred from these alone, `amount` is a string column; cast to the table's long,
    // "n/a" became a null.
    let second = t.start("ingester-retype-2")?;
    let bad: [&[u8]; 2] = [br#"{"id":5,"amount":"n/a"}"#, br#"{"id":6,"amount":"12"}"#];
    let outcome = t.feed(second, &bad, "amount").await?;
    outcome.stopped_at(5, json!([0, 1, 2, 3, 4]), &["partition 0 offset 5"]);
    assert!(
        outcome.log.contains("decoding against the table's columns"),
        "{}",
        outcome.log
    );

    // Against the table's columns, whole numbers after a restart stay doubles (inferred
    // alone they would make a long column).
    let t2 = Local::new("retype-ok").await?;
    produce_json(
        &t2.env,
        &t2.topic.name,
        0..3,
        |i| json!({"id": i, "amount": i as f64 + 0.5}),
    )
    .await?;
    let first = t2.start("ingester-retype-ok-1")?;
    t2.rows(3).await;
    assert_eq!(first.stop(Duration::from_secs(30)), Some(0));
    produce_json(
        &t2.env,
        &t2.topic.name,
        3..6,
        |i| json!({"id": i, "amount": i}),
    )
    .await?;
    let second = t2.start("ingester-retype-ok-2")?;
    let view = t2.rows(6).await;
    second.stop(Duration::from_secs(30));
    let view = t2.read("amount").unwrap_or(view);
    assert_eq!(view["values"], json!([0.5, 1.5, 2.5, 3.0, 4.0, 5.0]));
    Ok(())
}

/// Makes Delta tables that ask writers for what this ingester does not do: a check constraint
/// (added by deltalake itself), and, written as a first commit by hand, an invariant in the
/// legacy protocol, a generated column, column mapping and row tracking.
const FEATURE_TABLES: &str = r#"
import json, os, sys, uuid
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
base = sys.argv[1]
write_deltalake(f"{base}/constraint", pa.table({"id": pa.array([1], pa.int64())}))
DeltaTable(f"{base}/constraint").alter.add_constraint({"id_positive": "id > 0"})
def table(name, protocol, fields, configuration={}):
    log = f"{base}/{name}/_delta_log"
    os.makedirs(log)
    metadata = {"id": str(uuid.uuid4()), "format": {"provider": "parquet", "options": {}},
                "schemaString": json.dumps({"type": "struct", "fields": fields}),
                "partitionColumns": [], "configuration": configuration, "createdTime": 0}
    with open(f"{log}/00000000000000000000.json", "w") as f:
        f.write(json.dumps({"protocol": protocol}) + "\n" + json.dumps({"metaData": metadata}) + "\n")
plain = {"name": "id", "type": "long", "nullable": True, "metadata": {}}
table("invariant", {"minReaderVersion": 1, "minWriterVersion": 2},
      [{"name": "id", "type": "long", "nullable": True,
        "metadata": {"delta.invariants": json.dumps({"expression": {"expression": "id > 0"}})}}])
table("generated", {"minReaderVersion": 1, "minWriterVersion": 4},
      [plain, {"name": "twice", "type": "long", "nullable": True,
               "metadata": {"delta.generationExpression": "id * 2"}}])
table("mapping", {"minReaderVersion": 2, "minWriterVersion": 5},
      [{"name": "id", "type": "long", "nullable": True,
        "metadata": {"delta.columnMapping.id": 1, "delta.columnMapping.physicalName": "col-1"}}],
      {"delta.columnMapping.mode": "name", "delta.columnMapping.maxColumnId": "1"})
table("rowtracking", {"minReaderVersion": 1, "minWriterVersion": 7,
                      "writerFeatures": ["rowTracking", "domainMetadata"]},
      [plain], {"delta.enableRowTracking": "true"})
print("ok")
"#;

/// Lists the Parquet files under a directory (written or left behind, referenced or not).
fn parquet_files(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

/// Tables with writer features the ingester does not honour were written to anyway (an
/// invariant in the legacy protocol was ignored) or refused only at each commit, after the data
/// files were written. Now the ingester refuses them when it opens the table, naming the
/// feature, and writes nothing.
#[tokio::test]
async fn tables_with_writer_features_not_honoured_are_refused_at_open() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let dir = WorkDir::new("kt-integrity-features")?;
    let tables = dir.join("tables");
    python(&env, FEATURE_TABLES, &[&tables.display().to_string()])?;
    let cases = [
        ("constraint", "checkConstraints"),
        ("invariant", "invariant"),
        ("generated", "generatedColumns"),
        ("mapping", "columnMapping"),
        ("rowtracking", "rowTracking"),
    ];
    for (name, named) in cases {
        let topic = TestTopic::create(&env, &format!("integrity-{name}"), 1).await?;
        produce_json(&env, &topic.name, 0..5, |i| json!({"id": i + 1})).await?;
        let table_dir = tables.join(name);
        let before = parquet_files(&table_dir);
        let manifest = json!({
            "apiVersion": "kafkatable.io/v1alpha1",
            "kind": "KafkaTable",
            "metadata": {"name": name, "namespace": "e2e"},
            "spec": {
                "source": {"brokers": env.kafka_bootstrap, "topic": topic.name},
                "table": {"format": "delta", "location": format!("file://{}", table_dir.display()),
                          "metadataColumns": false},
                "commit": {"interval": "1s"},
            },
        });
        let manifest_path = dir.join(format!("{name}.yaml"));
        std::fs::write(&manifest_path, serde_yaml::to_string(&manifest)?)?;
        let mut ingester =
            IngesterProcess::start(&manifest_path, &dir, &dir, &format!("ingester-{name}"))?;
        let code = ingester
            .exit_within(&format!("the ingester on {name} to stop"), DEADLINE)
            .await;
        let log = ingester.log_text();
        assert_ne!(code, Some(0), "{name}: {log}");
        assert!(
            log.contains(named) && log.contains("does not honour it"),
            "{name}: the error names {named:?}:\n{log}"
        );
        assert_eq!(
            parquet_files(&table_dir),
            before,
            "{name}: no data file written"
        );
    }
    Ok(())
}

/// A feature the writer does not honour may also arrive while the ingester runs (another
/// engine adds a check constraint): the next commit refuses the table instead of writing rows
/// that could break it.
#[tokio::test]
async fn a_constraint_added_while_ingesting_stops_the_ingester() -> anyhow::Result<()> {
    let t = Local::new("constrained").await?;
    let ingester = t
        .five_committed("ingester-constrained", |i| json!({"id": i}))
        .await?;
    let add = r#"
import sys
from deltalake import DeltaTable
DeltaTable(sys.argv[1]).alter.add_constraint({"id_small": "id < 100"})
print("ok")
"#;
    python(&t.env, add, &[&t.location])?;
    let bad: [&[u8]; 1] = [br#"{"id":5}"#];
    t.feed(ingester, &bad, "id").await?.refused(
        json!([0, 1, 2, 3, 4]),
        &["checkConstraints", "does not honour it"],
    );
    Ok(())
}

/// When the store persisted a commit but its response was lost, the client retried the
/// create, found the version taken and reported our own commit as a concurrent winner; the
/// ingester then deleted the files that commit references and sought past its records. Now the
/// commit is found in the log, its files stay, and every record is in the table once.
#[tokio::test]
async fn a_commit_whose_response_was_lost_is_recognised() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let topic = TestTopic::create(&env, "integrity-lost", 3).await?;
    let bucket = TestBucket::create(&env, "integrity-lost").await?;
    let dir = WorkDir::new("kt-integrity-lost")?;
    let secrets = dir.s3_secret(&env)?;
    let upstream = env
        .s3_endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    // The first data commit (version 1; version 0 creates the table) reaches MinIO, and its
    // response is dropped.
    let proxy = LossyProxy::start(
        &upstream,
        1,
        Box::new(|method, path| {
            method == "PUT"
                && path.contains("/_delta_log/")
                && path.ends_with(".json")
                && !path.ends_with("/00000000000000000000.json")
        }),
    )
    .await?;
    let location = format!("s3://{}/events", bucket.name);
    let manifest = json!({
        "apiVersion": "kafkatable.io/v1alpha1",
        "kind": "KafkaTable",
        "metadata": {"name": "lost", "namespace": "e2e"},
        "spec": {
            "source": {"brokers": env.kafka_bootstrap, "topic": topic.name},
            "table": {
                "format": "delta",
                "location": location,
                "storage": {"endpoint": proxy.endpoint, "region": "us-east-1", "pathStyle": true,
                            "credentialsSecretRef": {"name": "s3"}},
            },
            "commit": {"interval": "1s"},
        },
    });
    let manifest_path = dir.join("table.yaml");
    std::fs::write(&manifest_path, serde_yaml::to_string(&manifest)?)?;
    produce_json(&env, &topic.name, 0..1000, |i| json!({"id": i})).await?;
    let ingester = IngesterProcess::start(&manifest_path, &secrets, &dir, "ingester-lost")?;
    let proxy_ref = &proxy;
    eventually("a commit response dropped", DEADLINE, || async move {
        (proxy_ref.dropped() == 1).then_some(())
    })
    .await;
    produce_json(&env, &topic.name, 1000..2000, |i| json!({"id": i})).await?;

    // Read past the proxy, straight from MinIO.
    let args = [
        location.as_str(),
        "id",
        &env.s3_endpoint,
        &env.s3_access_key,
        &env.s3_secret_key,
    ];
    let env_ref = &env;
    let args_ref = &args;
    let view = eventually("2000 rows, every file readable", DEADLINE, || async move {
        let view = read(env_ref, args_ref)?;
        (view["rows"].as_u64()? >= 2000).then_some(view)
    })
    .await;
    let log = ingester.log_text();
    assert!(
        log.contains("is in the log"),
        "the lost response was recognised:\n{log}"
    );
    assert_eq!(view["rows"], 2000, "no record twice");
    assert_eq!(view["pairs"], 2000);
    let mut ids: Vec<u64> = serde_json::from_value(view["ids"].clone())?;
    ids.sort_unstable();
    assert_eq!(ids, (0..2000).collect::<Vec<_>>(), "no record lost");
    // Data files are named by UUID v7, unique across pods.
    let paths: Vec<String> = serde_json::from_value(view["paths"].clone())?;
    for path in &paths {
        let name = path.rsplit('/').next().unwrap_or_default();
        let id = name
            .strip_prefix("part-")
            .and_then(|n| n.strip_suffix(".zstd.parquet"))
            .and_then(uuid_version);
        assert_eq!(id, Some(7), "{path}");
    }
    ingester.stop(Duration::from_secs(30));
    drop(proxy);
    bucket.remove().await?;
    Ok(())
}

/// The version of a UUID in its text form.
fn uuid_version(text: &str) -> Option<u32> {
    let groups: Vec<&str> = text.split('-').collect();
    if groups.len() != 5 || groups.iter().map(|g| g.len()).ne([8, 4, 4, 4, 12]) {
        return None;
    }
    groups[2]
        .get(..1)
        .and_then(|v| u32::from_str_radix(v, 16).ok())
}

/// An object store outage longer than a few commits used to end each ingester after five
/// failed commits in a row (pods in CrashLoopBackOff), and a partition assigned meanwhile ended
/// its member after half a minute. Now the ingesters pause consumption, report the table error
/// at `/status`, retry with back-off, and carry on by themselves once the store is back, every
/// record exactly once. The store is a MinIO of the test's own, killed with SIGKILL and started
/// again on the same port and data.
#[tokio::test]
async fn an_object_store_outage_is_waited_out() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let mut minio = kafkatable_e2e::store::PrivateMinio::start(&env).await?;
    let topic = TestTopic::create(&env, "integrity-outage", 4).await?;
    let bucket = TestBucket::create(&minio.env, "integrity-outage").await?;
    let dir = WorkDir::new("kt-integrity-outage")?;
    let secrets = dir.s3_secret(&env)?;
    let location = format!("s3://{}/events", bucket.name);
    let manifest = json!({
        "apiVersion": "kafkatable.io/v1alpha1",
        "kind": "KafkaTable",
        "metadata": {"name": "outage", "namespace": "e2e"},
        "spec": {
            "source": {"brokers": env.kafka_bootstrap, "topic": topic.name,
                       "consumerConfig": {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"}},
            "table": {
                "format": "delta",
                "location": location,
                "storage": {"endpoint": minio.endpoint, "region": "us-east-1", "pathStyle": true,
                            "credentialsSecretRef": {"name": "s3"}},
            },
            "commit": {"interval": "1s", "maxBytes": "2Mi"},
        },
    });
    let manifest_path = dir.join("table.yaml");
    std::fs::write(&manifest_path, serde_yaml::to_string(&manifest)?)?;
    let endpoint = minio.endpoint.clone();
    let args = [
        location.as_str(),
        "id",
        &endpoint,
        &env.s3_access_key,
        &env.s3_secret_key,
    ];
    let env_ref = &env;
    let args_ref = &args;
    let rows = |n: u64| async move {
        eventually(&format!("{n} rows"), DEADLINE, || async move {
            let view = read(env_ref, args_ref)?;
            (view["rows"].as_u64()? >= n).then_some(view)
        })
        .await
    };

    produce_json(&env, &topic.name, 0..1000, |i| json!({"id": i})).await?;
    let a = IngesterProcess::start(&manifest_path, &secrets, &dir, "ingester-outage-a")?;
    let mut b = IngesterProcess::start(&manifest_path, &secrets, &dir, "ingester-outage-b")?;
    rows(1000).await;

    minio.kill();
    produce_json(
        &env,
        &topic.name,
        1000..3000,
        |i| json!({"id": i, "noise": "x".repeat(100)}),
    )
    .await?;
    // A leaves during the outage (its last commit fails); B is assigned A's partitions while
    // their sync points cannot be read.
    assert_eq!(a.stop(Duration::from_secs(60)), Some(0), "a clean exit");
    let b_ref = &b;
    let status = eventually(
        "failed table operations past the old limit of 5, reported while B runs",
        Duration::from_secs(180),
        || async move {
            let failures = b_ref.metric("kafkatable_table_retries_total").await?;
            let buffered = b_ref.metric("kafkatable_buffered_bytes").await?;
            assert!(
                buffered <= 2.5 * 1024.0 * 1024.0,
                "consumption pauses instead of buffering: {buffered} bytes"
            );
            let (_, body) = b_ref.get("/status").await?;
            let status: Value = serde_json::from_str(&body).ok()?;
            (failures >= 6.0 && status["tableError"].is_string()).then_some(status)
        },
    )
    .await;
    assert!(b.exited().is_none(), "B keeps running: {status}");
    assert_eq!(
        status["ready"], false,
        "not ready while the table is unreachable"
    );
    let (code, _) = b.get("/readyz").await.unwrap_or_default();
    assert_eq!(code, 503);

    minio.resume().await?;
    let view = rows(3000).await;
    assert_eq!(view["rows"], 3000, "no record twice");
    assert_eq!(view["pairs"], 3000);
    let mut ids: Vec<u64> = serde_json::from_value(view["ids"].clone())?;
    ids.sort_unstable();
    assert_eq!(ids, (0..3000).collect::<Vec<_>>(), "no record lost");
    let b_ref = &b;
    eventually("B ready again", DEADLINE, || async move {
        let (_, body) = b_ref.get("/status").await?;
        let status: Value = serde_json::from_str(&body).ok()?;
        (status["ready"] == true && status["tableError"].is_null()).then_some(())
    })
    .await;
    assert!(b.exited().is_none(), "B never restarted");
    b.stop(Duration::from_secs(30));
    bucket.remove().await?;
    Ok(())
}
