//! Bad records (`spec.errors`) on 3-partition topics with good records around each: with
//! `policy: fail` each partition stops at its first bad record while the others keep flowing;
//! with `policy: skip` a restart passes them, counts them, and every good record is in the
//! table exactly once (read back by deltalake); with `policy: deadLetter` exactly the bad
//! records reach the dead-letter topic (read with read_committed) or the dead-letter table
//! (read by deltalake), once each, through a restart and an abort between the dead-letter
//! commit and the table's.

use std::path::PathBuf;
use std::time::Duration;

use kafkatable_e2e::avro::register;
use kafkatable_e2e::env::TestEnv;
use kafkatable_e2e::fixtures::{TestTopic, eventually, kafka_config, python, read_committed};
use kafkatable_e2e::ingester::{IngesterProcess, WorkDir};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(120);

/// Every row's (partition, offset, id), sorted.
const READER: &str = r#"
import json, sys
from deltalake import DeltaTable
try:
    t = DeltaTable(sys.argv[1]).to_pyarrow_table()
except Exception as e:
    print(json.dumps({"rows": [], "missing": str(e)})); sys.exit(0)
rows = sorted(zip(t["_kafka_partition"].to_pylist(), t["_kafka_offset"].to_pylist(), t["id"].to_pylist()))
print(json.dumps({"rows": rows}))
"#;

struct Table {
    env: TestEnv,
    topic: TestTopic,
    dir: WorkDir,
    location: String,
    /// Merged into `spec.source` (the format).
    source: Value,
    /// `spec.table.columns`.
    columns: Value,
}

impl Table {
    async fn new(name: &str) -> anyhow::Result<Self> {
        let env = TestEnv::load()?;
        // Room for the 5 MB record in the topic, above the ingester's limit of 4 MiB.
        let topic = TestTopic::create_with(
            &env,
            &format!("bad-{name}"),
            3,
            &[("max.message.bytes", "8388608")],
        )
        .await?;
        let dir = WorkDir::new(&format!("kt-bad-{name}"))?;
        let location = format!("file://{}/table", dir.display());
        let columns = json!([
            {"name": "id", "type": "long", "nullable": false},
            {"name": "name", "type": "string"},
        ]);
        Ok(Self {
            env,
            topic,
            dir,
            location,
            source: json!({}),
            columns,
        })
    }

    /// Starts an ingester with `errors.policy` `policy`.
    fn start(&self, name: &str, policy: &str) -> anyhow::Result<IngesterProcess> {
        self.start_with(name, json!({"policy": policy}))
    }

    /// Starts an ingester with `errors` as `spec.errors`.
    fn start_with(&self, name: &str, errors: Value) -> anyhow::Result<IngesterProcess> {
        self.start_with_env(name, errors, &[])
    }

    /// As `start_with`, with extra environment variables (fault injection).
    fn start_with_env(
        &self,
        name: &str,
        errors: Value,
        envs: &[(&str, &str)],
    ) -> anyhow::Result<IngesterProcess> {
        let mut manifest = json!({
            "apiVersion": "kafkatable.io/v1alpha1",
            "kind": "KafkaTable",
            "metadata": {"name": "bad", "namespace": "e2e"},
            "spec": {
                "source": {"brokers": self.env.kafka_bootstrap, "topic": self.topic.name},
                "table": {
                    "format": "delta",
                    "location": self.location,
                    "columns": self.columns,
                },
                "commit": {"interval": "1s"},
                "errors": errors,
            },
        });
        if let (Some(source), Value::Object(extra)) = (
            manifest["spec"]["source"].as_object_mut(),
            self.source.clone(),
        ) {
            source.extend(extra);
        }
        if self.columns == json!([])
            && let Some(table) = manifest["spec"]["table"].as_object_mut()
        {
            table.remove("columns");
        }
        let path: PathBuf = self.dir.join(format!("{name}.yaml"));
        std::fs::write(&path, serde_yaml::to_string(&manifest)?)?;
        Ok(IngesterProcess::start_with_env(
            &path, &self.dir, &self.dir, name, envs,
        )?)
    }

    /// The table's (partition, offset, id) rows.
    fn rows(&self) -> Vec<(i64, i64, i64)> {
        let Ok(out) = python(&self.env, READER, &[&self.location]) else {
            return Vec::new();
        };
        let view: Value = serde_json::from_str(out.trim()).unwrap_or_default();
        view["rows"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| Some((r[0].as_i64()?, r[1].as_i64()?, r[2].as_i64()?)))
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn rows_until(
        &self,
        what: &str,
        done: impl Fn(&[(i64, i64, i64)]) -> bool,
    ) -> Vec<(i64, i64, i64)> {
        eventually(what, DEADLINE, || async {
            let rows = self.rows();
            done(&rows).then_some(rows)
        })
        .await
    }
}

/// The dead-letter table's rows as JSON objects (bytes as lists of numbers, or their length
/// from 4 KiB on), by partition and offset.
const LETTERS: &str = r#"
import json, sys
from deltalake import DeltaTable
try:
    t = DeltaTable(sys.argv[1]).to_pyarrow_table()
except Exception as e:
    print(json.dumps([])); sys.exit(0)
rows = []
for r in t.to_pylist():
    for k in ("_kafka_key", "_kafka_value"):
        v = r[k]
        r[k] = None if v is None else list(v) if len(v) < 4096 else {"bytes": len(v)}
    r["_kafka_headers"] = [[k, None if v is None else list(v)] for k, v in r["_kafka_headers"]]
    for k in ("_kafka_timestamp", "dead_lettered_at"):
        r[k] = None if r[k] is None else r[k].isoformat()
    rows.append(r)
rows.sort(key=lambda r: (r["_kafka_partition"], r["_kafka_offset"]))
print(json.dumps(rows))
"#;

/// The (partition, offset) of each dead-letter row, as [`LETTERS`] prints them.
fn letter_origins(rows: &[Value]) -> Vec<(i64, i64)> {
    rows.iter()
        .map(|r| {
            (
                r["_kafka_partition"].as_i64().unwrap_or(-1),
                r["_kafka_offset"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

/// Good records around bad ones in each partition: malformed JSON at 0/3 (returned), a
/// boolean in the long column at 1/1 and a 5 MB record at 1/3, a tombstone at 2/1.
async fn produce_dead_letter_cases(env: &TestEnv, topic: &str) -> anyhow::Result<Vec<u8>> {
    let malformed = br#"{"id":3,"#.to_vec();
    produce(
        env,
        topic,
        0,
        &[good(0), good(1), good(2), Some(malformed.clone()), good(4)],
    )
    .await?;
    produce(
        env,
        topic,
        1,
        &[
            good(100),
            Some(br#"{"id":true}"#.to_vec()),
            good(102),
            Some(huge()),
        ],
    )
    .await?;
    produce(env, topic, 2, &[good(200), None, good(202)]).await?;
    Ok(malformed)
}

/// The (partition, offset, id) rows of the good ones among [`produce_dead_letter_cases`].
const DEAD_LETTER_CASES_GOOD: [(i64, i64, i64); 8] = [
    (0, 0, 0),
    (0, 1, 1),
    (0, 2, 2),
    (0, 4, 4),
    (1, 0, 100),
    (1, 2, 102),
    (2, 0, 200),
    (2, 2, 202),
];

/// Produces `values` in order to `partition` (None: a tombstone), each at the next offset.
async fn produce(
    env: &TestEnv,
    topic: &str,
    partition: i32,
    values: &[Option<Vec<u8>>],
) -> anyhow::Result<()> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = kafka_config(env, false)
        .set("message.max.bytes", "8388608")
        .create()?;
    for (n, value) in values.iter().enumerate() {
        let key = format!("k{partition}-{n}");
        let record = FutureRecord::to(topic).partition(partition).key(&key);
        let record = match value {
            Some(v) => record.payload(v.as_slice()),
            None => record,
        };
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)?;
    }
    Ok(())
}

fn good(id: i64) -> Option<Vec<u8>> {
    Some(
        json!({"id": id, "name": format!("n{id}")})
            .to_string()
            .into_bytes(),
    )
}

/// A good record of 5 MB, over the default `errors.maxRecordBytes` (4 MiB).
fn huge() -> Vec<u8> {
    format!(r#"{{"id":203,"name":"{}"}}"#, "x".repeat(5 << 20)).into_bytes()
}

/// The ingester's report, from `/status`.
async fn report(ingester: &IngesterProcess) -> Option<Value> {
    let (_, body) = ingester.get("/status").await?;
    serde_json::from_str(&body).ok()
}

#[tokio::test]
async fn bad_records_stop_only_their_partition_and_skip_passes_them_once() -> anyhow::Result<()> {
    let t = Table::new("json").await?;
    let (env, topic) = (&t.env, t.topic.name.as_str());
    let huge = huge();
    // Partition 0: malformed JSON at offset 3. Partition 1: a boolean in the long column at 2.
    produce(
        env,
        topic,
        0,
        &[
            good(0),
            good(1),
            good(2),
            Some(br#"{"id":3,"#.to_vec()),
            good(4),
            good(5),
        ],
    )
    .await?;
    produce(
        env,
        topic,
        1,
        &[
            good(100),
            good(101),
            Some(br#"{"id":true,"name":"s"}"#.to_vec()),
            good(103),
            good(104),
        ],
    )
    .await?;
    produce(env, topic, 2, &[good(200), good(201), good(202)]).await?;

    let failing = t.start("ingester-fail", "fail")?;
    let stops = eventually("partitions 0 and 1 to stop", DEADLINE, || async {
        let stopped = report(&failing).await?["stopped"].as_array()?.clone();
        (stopped.len() == 2).then_some(stopped)
    })
    .await;
    let at: Vec<(i64, i64)> = stops
        .iter()
        .filter_map(|s| Some((s["partition"].as_i64()?, s["offset"].as_i64()?)))
        .collect();
    assert_eq!(at, vec![(0, 3), (1, 2)], "{stops:?}");
    let reasons: Vec<&str> = stops.iter().filter_map(|s| s["reason"].as_str()).collect();
    assert!(
        reasons[0].contains(&format!("topic {topic} partition 0 offset 3")),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("partition 1 offset 2") && reasons[1].contains("id"),
        "{reasons:?}"
    );

    // Partition 2 keeps flowing, then stops at a record over maxRecordBytes; a tombstone
    // follows it.
    t.rows_until("partition 2's first three rows", |rows| {
        rows.iter().filter(|r| r.0 == 2).count() == 3
    })
    .await;
    produce(env, topic, 2, &[Some(huge), good(204), None, good(206)]).await?;
    let stopped = eventually("partition 2 to stop", DEADLINE, || async {
        let stopped = report(&failing).await?["stopped"].as_array()?.clone();
        (stopped.len() == 3).then_some(stopped)
    })
    .await;
    assert_eq!(
        (
            stopped[2]["partition"].as_i64(),
            stopped[2]["offset"].as_i64()
        ),
        (Some(2), Some(3))
    );
    assert!(
        stopped[2]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("maxRecordBytes"),
        "{stopped:?}"
    );
    // Nothing at or after a bad record is committed.
    let rows = t.rows();
    let held: Vec<(i64, i64)> = rows.iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(
        held,
        vec![
            (0, 0),
            (0, 1),
            (0, 2),
            (1, 0),
            (1, 1),
            (2, 0),
            (2, 1),
            (2, 2)
        ]
    );
    let mut failing = failing;
    assert_eq!(failing.exited(), None, "the ingester runs on");
    assert_eq!(failing.stop(Duration::from_secs(30)), Some(0));

    // A restart with policy skip resumes each partition at its bad record and passes it.
    let skipping = t.start("ingester-skip", "skip")?;
    let expected: Vec<(i64, i64, i64)> = vec![
        (0, 0, 0),
        (0, 1, 1),
        (0, 2, 2),
        (0, 4, 4),
        (0, 5, 5),
        (1, 0, 100),
        (1, 1, 101),
        (1, 3, 103),
        (1, 4, 104),
        (2, 0, 200),
        (2, 1, 201),
        (2, 2, 202),
        (2, 4, 204),
        (2, 6, 206),
    ];
    let rows = t
        .rows_until("every good record", |rows| rows.len() >= expected.len())
        .await;
    assert_eq!(rows, expected, "every good record once, no bad one");
    let skipped = eventually("the skipped records counted", DEADLINE, || async {
        let r = report(&skipping).await?;
        (r["skippedRecords"].as_u64()? == 4).then_some(r)
    })
    .await;
    assert_eq!(skipped["stopped"], json!([]), "{skipped}");
    let series = skipping.metric_series("kafkatable_bad_records_total").await;
    assert!(
        series
            .iter()
            .any(|(labels, v)| labels.contains("skipped") && *v == 4.0),
        "{series:?}"
    );
    let log = skipping.log_text();
    assert!(
        log.contains("bad record skipped") && log.contains("partition 2 offset 5"),
        "{log}"
    );
    drop(skipping);
    Ok(())
}

/// An Avro record `{id: long, name: string}` of registry schema `id` in the Confluent wire
/// format, encoded here.
fn avro(schema: u32, id: i64, name: &str) -> Vec<u8> {
    fn varint(mut n: u64, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    let zigzag = |n: i64| ((n << 1) ^ (n >> 63)) as u64;
    let mut out = vec![0];
    out.extend_from_slice(&schema.to_be_bytes());
    varint(zigzag(id), &mut out);
    varint(zigzag(name.len() as i64), &mut out);
    out.extend_from_slice(name.as_bytes());
    out
}

/// An Avro table whose topic has good records around bad ones: truncated Avro at 0/2, an
/// unknown schema id (2147483632) at 1/1, a wrong magic byte at 2/2 and a tombstone at 2/4.
async fn avro_cases(name: &str) -> anyhow::Result<Table> {
    let mut t = Table::new(name).await?;
    let url = t.env.registry_url.clone();
    t.source = json!({"format": "avro", "schemaRegistry": {"url": url}});
    t.columns = json!([]);
    let schema = r#"{"type":"record","name":"Row","fields":[{"name":"id","type":"long"},{"name":"name","type":"string"}]}"#;
    let id =
        u32::try_from(register(&url, &format!("{}-value", t.topic.name), "AVRO", schema).await?)?;
    let good = |n: i64| Some(avro(id, n, &format!("n{n}")));
    let mut truncated = avro(id, 2, "a name cut short");
    truncated.truncate(truncated.len() - 6);
    let unknown = avro(0x7fff_fff0, 101, "n101");
    let mut wrong_magic = avro(id, 202, "n202");
    wrong_magic[0] = 1;
    let (env, topic) = (&t.env, t.topic.name.as_str());
    produce(env, topic, 0, &[good(0), good(1), Some(truncated), good(3)]).await?;
    produce(env, topic, 1, &[good(100), Some(unknown), good(102)]).await?;
    produce(
        env,
        topic,
        2,
        &[
            good(200),
            good(201),
            Some(wrong_magic),
            good(203),
            None,
            good(205),
        ],
    )
    .await?;
    Ok(t)
}

/// The (partition, offset, id) rows of the good ones among [`avro_cases`].
const AVRO_CASES_GOOD: [(i64, i64, i64); 9] = [
    (0, 0, 0),
    (0, 1, 1),
    (0, 3, 3),
    (1, 0, 100),
    (1, 2, 102),
    (2, 0, 200),
    (2, 1, 201),
    (2, 3, 203),
    (2, 5, 205),
];

#[tokio::test]
async fn bad_avro_records_go_to_a_named_dead_letter_table_once() -> anyhow::Result<()> {
    let t = avro_cases("avro-dlt").await?;
    let ingester = t.start_with(
        "ingester-avro-dlt",
        json!({"policy": "deadLetter", "deadLetter": {"table": {"name": "letters"}}}),
    )?;
    let expected = AVRO_CASES_GOOD.to_vec();
    let rows = t
        .rows_until("every good record", |rows| rows.len() >= expected.len())
        .await;
    assert_eq!(rows, expected, "every good record once, no bad one");
    let at = format!("file://{}/letters", t.dir.display());
    let written = eventually("the four dead letters", DEADLINE, || async {
        let rows: Vec<Value> =
            serde_json::from_str(python(&t.env, LETTERS, &[&at]).ok()?.trim()).ok()?;
        (rows.len() >= 4).then_some(rows)
    })
    .await;
    let origins = letter_origins(&written);
    assert_eq!(origins, vec![(0, 2), (1, 1), (2, 2), (2, 4)], "{written:?}");
    let errors: Vec<&str> = written.iter().filter_map(|r| r["error"].as_str()).collect();
    assert!(
        errors[1].contains("2147483632"),
        "the unknown schema id is named: {errors:?}"
    );
    assert!(
        errors[2].contains("magic"),
        "the wrong magic byte is named: {errors:?}"
    );
    assert_eq!(written[3]["reason"], "tombstone");
    assert!(
        written.iter().take(3).all(|r| r["_kafka_value"].is_array()),
        "the bytes as they came"
    );
    eventually("the dead letters counted", DEADLINE, || async {
        (report(&ingester).await?["deadLetteredRecords"].as_u64()? == 4).then_some(())
    })
    .await;
    Ok(())
}

#[tokio::test]
async fn bad_avro_records_stop_only_their_partition_and_skip_passes_them_once() -> anyhow::Result<()>
{
    let t = avro_cases("avro").await?;

    let mut failing = t.start("ingester-avro-fail", "fail")?;
    let stops = eventually("each partition to stop", DEADLINE, || async {
        let stopped = report(&failing).await?["stopped"].as_array()?.clone();
        (stopped.len() == 3).then_some(stopped)
    })
    .await;
    let at: Vec<(i64, i64)> = stops
        .iter()
        .filter_map(|s| Some((s["partition"].as_i64()?, s["offset"].as_i64()?)))
        .collect();
    assert_eq!(at, vec![(0, 2), (1, 1), (2, 2)], "{stops:?}");
    let reasons: Vec<&str> = stops.iter().filter_map(|s| s["reason"].as_str()).collect();
    assert!(
        reasons[1].contains("2147483632"),
        "the unknown schema id is named: {reasons:?}"
    );
    assert!(
        reasons[2].contains("magic"),
        "the wrong magic byte is named: {reasons:?}"
    );
    let rows = t
        .rows_until("the good rows before each stop", |rows| rows.len() >= 5)
        .await;
    let held: Vec<(i64, i64)> = rows.iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(held, vec![(0, 0), (0, 1), (1, 0), (2, 0), (2, 1)]);
    assert_eq!(failing.exited(), None, "the ingester runs on");
    assert_eq!(failing.stop(Duration::from_secs(30)), Some(0));

    let skipping = t.start("ingester-avro-skip", "skip")?;
    let expected = AVRO_CASES_GOOD.to_vec();
    let rows = t
        .rows_until("every good record", |rows| rows.len() >= expected.len())
        .await;
    assert_eq!(rows, expected, "every good record once, no bad one");
    eventually("the skipped records counted", DEADLINE, || async {
        (report(&skipping).await?["skippedRecords"].as_u64()? == 4).then_some(())
    })
    .await;
    drop(skipping);
    Ok(())
}

#[tokio::test]
async fn bad_records_go_to_the_dead_letter_topic_once_with_their_origin() -> anyhow::Result<()> {
    let t = Table::new("dlq").await?;
    let dlq = TestTopic::create_with(
        &t.env,
        "bad-dlq-letters",
        2,
        &[("max.message.bytes", "8388608")],
    )
    .await?;
    let (env, topic) = (&t.env, t.topic.name.as_str());
    let malformed = produce_dead_letter_cases(env, topic).await?;

    let ingester = t.start_with(
        "ingester-dlq",
        json!({"policy": "deadLetter", "deadLetter": {"topic": dlq.name}}),
    )?;
    let expected = DEAD_LETTER_CASES_GOOD.to_vec();
    let rows = t
        .rows_until("every good record", |rows| rows.len() >= expected.len())
        .await;
    assert_eq!(rows, expected, "every good record once, no bad one");
    let letters = read_committed(env, &dlq.name, 4, DEADLINE)?;
    let mut origins: Vec<(String, String)> = letters
        .iter()
        .map(|l| {
            (
                l.headers["kafkatable.partition"].clone(),
                l.headers["kafkatable.offset"].clone(),
            )
        })
        .collect();
    origins.sort();
    assert_eq!(
        origins,
        vec![
            ("0".into(), "3".into()),
            ("1".into(), "1".into()),
            ("1".into(), "3".into()),
            ("2".into(), "1".into())
        ],
        "exactly the bad records, once each: {letters:?}"
    );
    let first = letters
        .iter()
        .find(|l| l.headers["kafkatable.partition"] == "0")
        .expect("partition 0's letter");
    assert_eq!(
        first.value.as_deref(),
        Some(malformed.as_slice()),
        "the value as it came"
    );
    assert_eq!(
        first.key.as_deref(),
        Some(b"k0-3".as_slice()),
        "the key as it came"
    );
    assert_eq!(first.headers["kafkatable.topic"], topic);
    assert_eq!(first.headers["kafkatable.table"], "e2e/bad");
    assert_eq!(first.headers["kafkatable.reason"], "undecodable");
    assert!(
        first.headers["kafkatable.error"].contains(&format!("topic {topic} partition 0 offset 3")),
        "{first:?}"
    );
    assert_eq!(
        first.headers["kafkatable.timestamp"],
        first.timestamp.map(|t| t.to_string()).unwrap_or_default()
    );
    let tombstone = letters
        .iter()
        .find(|l| l.headers["kafkatable.partition"] == "2")
        .expect("partition 2's letter");
    assert_eq!(
        (
            tombstone.value.as_deref(),
            tombstone.headers["kafkatable.reason"].as_str()
        ),
        (None, "tombstone")
    );
    let large = letters
        .iter()
        .find(|l| l.headers["kafkatable.offset"] == "3" && l.headers["kafkatable.partition"] == "1")
        .expect("the 5 MB record's letter");
    assert_eq!(
        (
            large.value.as_ref().map(Vec::len),
            large.headers["kafkatable.reason"].as_str()
        ),
        (Some(huge().len()), "too-large")
    );
    eventually("the dead letters counted", DEADLINE, || async {
        (report(&ingester).await?["deadLetteredRecords"].as_u64()? == 4).then_some(())
    })
    .await;

    // A restart reads nothing again: the table and the dead-letter topic are where they were.
    assert_eq!(ingester.stop(Duration::from_secs(30)), Some(0));
    produce(env, topic, 1, &[Some(b"[]".to_vec()), good(104)]).await?;
    let _again = t.start_with(
        "ingester-dlq-2",
        json!({"policy": "deadLetter", "deadLetter": {"topic": dlq.name}}),
    )?;
    let rows = t
        .rows_until("the new good record", |rows| rows.len() > expected.len())
        .await;
    assert_eq!(rows.len(), expected.len() + 1, "{rows:?}");
    let letters = read_committed(env, &dlq.name, 5, DEADLINE)?;
    assert_eq!(
        letters.len(),
        5,
        "one more dead letter, none twice: {letters:?}"
    );
    Ok(())
}

#[tokio::test]
async fn bad_records_go_to_the_dead_letter_table_once_through_a_crash_between_the_commits()
-> anyhow::Result<()> {
    let t = Table::new("dlt").await?;
    let (env, topic) = (&t.env, t.topic.name.as_str());
    let malformed = produce_dead_letter_cases(env, topic).await?;
    let errors = json!({"policy": "deadLetter", "deadLetter": {"table": {}}});
    let letters_at = format!("file://{}/table_dead_letters", t.dir.display());
    let letters = || -> Vec<Value> {
        python(env, LETTERS, &[&letters_at])
            .ok()
            .and_then(|out| serde_json::from_str::<Vec<Value>>(out.trim()).ok())
            .unwrap_or_default()
    };

    // The first ingester dies right after its first dead-letter commit, before the table's.
    let mut crashing = t.start_with_env(
        "ingester-dlt-crash",
        errors.clone(),
        &[("KAFKATABLE_FAULT_CRASH_AFTER_DEAD_LETTERS", "1")],
    )?;
    crashing
        .exit_within("the ingester to abort after its dead letters", DEADLINE)
        .await;
    let written = letters();
    assert_eq!(written.len(), 1, "one partition's dead letter: {written:?}");
    assert!(t.rows().is_empty(), "the table commit did not happen");

    let ingester = t.start_with("ingester-dlt", errors.clone())?;
    let expected = DEAD_LETTER_CASES_GOOD.to_vec();
    let rows = t
        .rows_until("every good record", |rows| rows.len() >= expected.len())
        .await;
    assert_eq!(rows, expected, "every good record once, no bad one");
    let written = eventually("the four dead letters", DEADLINE, || async {
        let l = letters();
        (l.len() >= 4).then_some(l)
    })
    .await;
    let origins = letter_origins(&written);
    assert_eq!(
        origins,
        vec![(0, 3), (1, 1), (1, 3), (2, 1)],
        "exactly the bad records, once each, across the crash: {written:?}"
    );
    let reasons: Vec<&Value> = written.iter().map(|r| &r["reason"]).collect();
    assert_eq!(
        (reasons[0], reasons[2], reasons[3]),
        (
            &json!("undecodable"),
            &json!("too-large"),
            &json!("tombstone")
        )
    );
    assert_eq!(written[2]["_kafka_value"], json!({"bytes": huge().len()}));
    let first = &written[0];
    let bytes = |v: &Value| -> Option<Vec<u8>> {
        v.as_array().map(|b| {
            b.iter()
                .filter_map(|x| x.as_u64().map(|x| x as u8))
                .collect()
        })
    };
    assert_eq!(
        bytes(&first["_kafka_value"]),
        Some(malformed),
        "the value as it came"
    );
    assert_eq!(
        bytes(&first["_kafka_key"]),
        Some(b"k0-3".to_vec()),
        "the key as it came"
    );
    assert_eq!(first["_kafka_topic"], topic);
    assert_eq!(first["kafkatable"], "e2e/bad");
    assert!(
        first["error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("topic {topic} partition 0 offset 3"))),
        "{first}"
    );
    assert!(first["_kafka_timestamp"].is_string(), "{first}");
    assert_eq!(
        written[3]["_kafka_value"],
        Value::Null,
        "the tombstone has no value"
    );
    eventually("the dead letters counted", DEADLINE, || async {
        (report(&ingester).await?["deadLetteredRecords"].as_u64()? >= 2).then_some(())
    })
    .await;

    // A restart writes none again; a new bad record is one more row.
    assert_eq!(ingester.stop(Duration::from_secs(30)), Some(0));
    produce(env, topic, 1, &[Some(b"[]".to_vec()), good(104)]).await?;
    let _again = t.start_with("ingester-dlt-2", errors)?;
    let rows = t
        .rows_until("the new good record", |rows| rows.len() > expected.len())
        .await;
    assert_eq!(rows.len(), expected.len() + 1, "{rows:?}");
    let written = eventually("the fifth dead letter", DEADLINE, || async {
        let l = letters();
        (l.len() >= 5).then_some(l)
    })
    .await;
    let offsets = letter_origins(&written);
    assert_eq!(
        offsets,
        vec![(0, 3), (1, 1), (1, 3), (1, 4), (2, 1)],
        "none twice"
    );
    Ok(())
}
