//! The KafkaTable API against the real API server: the CRD installs, every example applies and
//! reads back unchanged, `kubectl get kt` shows the columns, `kubectl explain` the docs, invalid
//! manifests are refused with messages that name the field, immutable fields stay, and the
//! scale subresource works with `kubectl scale`.

use std::process::Command;
use std::time::Duration;

use kafkatable_crds::KafkaTable;
use kafkatable_e2e::env::TestEnv;
use kafkatable_e2e::fixtures::{TestNamespace, eventually, install_crd, kube_client};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const MANAGER: &str = "kafkatable-e2e";

/// kubectl's output with runs of white space folded, since `explain` wraps at 80 columns.
fn kubectl_text(env: &TestEnv, args: &[&str]) -> String {
    let out = kubectl(env, args);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn kubectl(env: &TestEnv, args: &[&str]) -> std::process::Output {
    Command::new(&env.kubectl)
        .arg("--kubeconfig")
        .arg(&env.kubeconfig)
        .args(args)
        .output()
        .expect("kubectl runs")
}

fn examples() -> anyhow::Result<Vec<(String, Value)>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/examples");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let value: Value = serde_yaml::from_str(&std::fs::read_to_string(&path)?)?;
            out.push((
                path.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                value,
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Every value in `expected` is present and equal in `actual` (which may hold more: defaults).
fn contained(expected: &Value, actual: &Value, path: &str) -> Result<(), String> {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, v) in e {
                let field = format!("{path}.{k}");
                contained(v, a.get(k).ok_or(format!("{field} is missing"))?, &field)?;
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => e
            .iter()
            .zip(a)
            .enumerate()
            .try_for_each(|(i, (e, a))| contained(e, a, &format!("{path}[{i}]"))),
        (e, a) if e == a => Ok(()),
        (e, a) => Err(format!("{path}: applied {e}, read back {a}")),
    }
}

#[tokio::test]
async fn crd_installs_and_every_example_applies_and_reads_back_unchanged() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let client = kube_client(&env).await?;
    install_crd(&client).await?;
    let ns = TestNamespace::create(&env, &client, "api-examples").await?;
    let tables: Api<KafkaTable> = Api::namespaced(client.clone(), &ns.name);
    let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns.name,
        &kube::api::ApiResource::erase::<KafkaTable>(&()),
    );

    let examples = examples()?;
    assert!(examples.len() >= 4, "the four documented examples exist");
    for (file, manifest) in &examples {
        let name = manifest["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        tables
            .patch(&name, &PatchParams::apply(MANAGER), &Patch::Apply(manifest))
            .await
            .map_err(|e| anyhow::anyhow!("{file} was refused: {e}"))?;
        let stored = serde_json::to_value(raw.get(&name).await?)?;
        contained(&manifest["spec"], &stored["spec"], "spec")
            .map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
        // Our types hold every field the server stores: parsing and writing back loses nothing.
        let typed: KafkaTable = serde_json::from_value(stored.clone())?;
        assert_eq!(
            serde_json::to_value(&typed.spec)?,
            stored["spec"],
            "{file}: typed round trip"
        );
    }
    // Defaults the server filled in for the minimal JSON example.
    let clicks = tables.get("clicks").await?;
    assert_eq!(clicks.spec.commit.max_records, 1_000_000);
    assert!(clicks.spec.table.metadata_columns);
    assert!(clicks.spec.scaling.autoscale);

    let listing = kubectl(&env, &["get", "kt", "-n", &ns.name]);
    let text = String::from_utf8_lossy(&listing.stdout);
    let header: Vec<&str> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME", "READY", "REPLICAS", "LAG", "VERSION", "LAST", "COMMIT", "AGE"
        ],
        "{text}"
    );
    for (_, manifest) in &examples {
        let name = manifest["metadata"]["name"].as_str().unwrap_or_default();
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} listed:\n{text}"
        );
    }
    let by_category = kubectl(&env, &["get", "kafka", "-n", &ns.name, "-o", "name"]);
    assert_eq!(
        String::from_utf8_lossy(&by_category.stdout).lines().count(),
        examples.len(),
        "category kafka"
    );
    Ok(())
}

#[tokio::test]
async fn kubectl_explain_shows_the_field_docs() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let client = kube_client(&env).await?;
    install_crd(&client).await?;
    let env = &env;
    let table = eventually(
        "kubectl explain to know KafkaTable",
        Duration::from_secs(30),
        || async move {
            let out = kubectl(env, &["explain", "kt.spec.table"]);
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        },
    )
    .await;
    assert!(table.contains("The table to write"), "{table}");
    for field in [
        "format",
        "location",
        "catalog",
        "mode",
        "keyFields",
        "partitionBy",
        "metadataColumns",
    ] {
        assert!(
            table.contains(field),
            "kt.spec.table lists {field}:\n{table}"
        );
    }
    let mode = kubectl_text(env, &["explain", "kt.spec.table.mode"]);
    // kubectl wraps the text: compare it as words.
    let mode = mode.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        mode.contains("upsert (not implemented yet)")
            && mode.contains("a tombstone deletes the row"),
        "{mode}"
    );
    let lag = kubectl_text(env, &["explain", "kt.spec.scaling.lagPerReplica"]);
    assert!(
        lag.contains("desired = ceil(total lag / lagPerReplica)"),
        "{lag}"
    );
    Ok(())
}

/// A valid manifest that each invalid case changes in one place.
fn base(name: &str) -> Value {
    json!({
        "apiVersion": "kafkatable.io/v1alpha1",
        "kind": "KafkaTable",
        "metadata": {"name": name},
        "spec": {
            "source": {"brokers": "kafka:9092", "topic": "events"},
            "table": {"format": "delta", "location": "file:///data/events"},
        },
    })
}

/// Merges `patch` into `target` (JSON merge patch semantics: null removes).
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// (what is wrong, the change, a phrase the API server's answer must contain)
fn invalid_cases() -> Vec<(&'static str, Value, &'static str)> {
    let iceberg_catalog = json!({"type": "rest", "uri": "http://catalog:8181", "namespace": "raw", "table": "events"});
    vec![
        (
            "no topic",
            json!({"spec": {"source": {"topic": null}}}),
            "spec.source.topic: Required value",
        ),
        (
            "unknown table format",
            json!({"spec": {"table": {"format": "parquet"}}}),
            "spec.table.format: Unsupported value: \"parquet\"",
        ),
        (
            "unknown record format",
            json!({"spec": {"source": {"format": "xml"}}}),
            "spec.source.format: Unsupported value: \"xml\"",
        ),
        (
            "unknown start offset",
            json!({"spec": {"source": {"startOffset": "beginning"}}}),
            "spec.source.startOffset: Unsupported value",
        ),
        (
            "timestamp start without a time",
            json!({"spec": {"source": {"startOffset": "timestamp"}}}),
            "spec.source.startTimestamp is required with startOffset: timestamp",
        ),
        (
            "start time without timestamp start",
            json!({"spec": {"source": {"startTimestamp": "2026-01-01T00:00:00Z"}}}),
            "spec.source.startTimestamp is required with startOffset: timestamp and not allowed otherwise",
        ),
        (
            "start time not RFC 3339",
            json!({"spec": {"source": {"startOffset": "timestamp", "startTimestamp": "yesterday"}}}),
            "spec.source.startTimestamp in body should match",
        ),
        (
            "broker without port",
            json!({"spec": {"source": {"brokers": "kafka"}}}),
            "spec.source.brokers in body should match",
        ),
        (
            "topic with spaces",
            json!({"spec": {"source": {"topic": "my events"}}}),
            "spec.source.topic in body should match",
        ),
        (
            "avro without registry",
            json!({"spec": {"source": {"format": "avro"}}}),
            "spec.source.schemaRegistry is required",
        ),
        (
            "avro keys without registry",
            json!({"spec": {"source": {"keyFormat": "avro"}}}),
            "spec.source.schemaRegistry is required for keyFormat avro",
        ),
        (
            "unknown key format",
            json!({"spec": {"source": {"keyFormat": "xml"}}}),
            "spec.source.keyFormat: Unsupported value: \"xml\"",
        ),
        (
            "decoded keys without metadata columns",
            json!({"spec": {"source": {"keyFormat": "string"}, "table": {"metadataColumns": false}}}),
            "spec.source.keyFormat: the decoded key is stored in the _kafka_key metadata column",
        ),
        (
            "a key field of keys kept as bytes",
            json!({"spec": {"table": {"mode": "upsert", "keyFields": ["_kafka_key.id"]}, "source": {"format": "json"}}}),
            "a field of the key (_kafka_key.<field>) needs a structured spec.source.keyFormat",
        ),
        (
            "registry url without scheme",
            json!({"spec": {"source": {"format": "avro", "schemaRegistry": {"url": "registry:8081"}}}}),
            "spec.source.schemaRegistry.url in body should match",
        ),
        (
            "SASL protocol without sasl",
            json!({"spec": {"source": {"security": {"protocol": "SASL_SSL"}}}}),
            "spec.source.security.sasl is required",
        ),
        (
            "unknown SASL mechanism",
            json!({"spec": {"source": {"security": {"protocol": "SASL_PLAINTEXT", "sasl": {"mechanism": "GSSAPI", "credentialsSecretRef": {"name": "u"}}}}}}),
            "spec.source.security.sasl.mechanism: Unsupported value: \"GSSAPI\"",
        ),
        (
            "TLS settings on a plaintext listener",
            json!({"spec": {"source": {"security": {"protocol": "PLAINTEXT", "tls": {"caSecretRef": {"name": "ca"}}}}}}),
            "spec.source.security.tls needs protocol SSL or SASL_SSL",
        ),
        (
            "secret name not a DNS name",
            json!({"spec": {"source": {"security": {"protocol": "SASL_PLAINTEXT", "sasl": {"mechanism": "PLAIN", "credentialsSecretRef": {"name": "Bad_Name"}}}}}}),
            "spec.source.security.sasl.credentialsSecretRef.name in body should match",
        ),
        (
            "consumer config overrides the group",
            json!({"spec": {"source": {"consumerConfig": {"group.id": "mine"}}}}),
            "spec.source.consumerConfig may not set",
        ),
        (
            "consumer config carries a password",
            json!({"spec": {"source": {"consumerConfig": {"sasl.password": "hunter2"}}}}),
            "spec.source.consumerConfig may not set",
        ),
        (
            "iceberg without catalog",
            json!({"spec": {"table": {"format": "iceberg", "location": null}}}),
            "spec.table.catalog is required for format iceberg",
        ),
        (
            "delta with a catalog",
            json!({"spec": {"table": {"catalog": iceberg_catalog}}}),
            "spec.table.catalog applies to format iceberg only",
        ),
        (
            "delta without location",
            json!({"spec": {"table": {"location": null}}}),
            "spec.table.location is required for format delta",
        ),
        (
            "location on HDFS",
            json!({"spec": {"table": {"location": "hdfs://nn/events"}}}),
            "spec.table.location in body should match",
        ),
        (
            "rest catalog uri without http",
            json!({"spec": {"table": {"format": "iceberg", "location": null, "catalog": {"type": "rest", "uri": "catalog:8181", "namespace": "raw", "table": "events"}}}}),
            "spec.table.catalog.uri of a rest catalog",
        ),
        (
            "catalog namespace with dashes",
            json!({"spec": {"table": {"format": "iceberg", "location": null, "catalog": {"type": "rest", "uri": "http://c", "namespace": "raw-data", "table": "events"}}}}),
            "spec.table.catalog.namespace in body should match",
        ),
        (
            "upsert without key fields",
            json!({"spec": {"table": {"mode": "upsert"}}}),
            "spec.table.keyFields is required with mode upsert",
        ),
        (
            "key fields in append mode",
            json!({"spec": {"table": {"keyFields": ["id"]}}}),
            "spec.table.keyFields applies to mode upsert only",
        ),
        (
            "key field not among the columns",
            json!({"spec": {"table": {"mode": "upsert", "keyFields": ["id"], "columns": [{"name": "name", "type": "string"}]}}}),
            "every spec.table.keyFields entry must be one of spec.table.columns",
        ),
        (
            "upsert of raw bytes",
            json!({"spec": {"source": {"format": "bytes"}, "table": {"mode": "upsert", "keyFields": ["id"]}}}),
            "spec.table.mode upsert needs structured records",
        ),
        (
            "column declared twice",
            json!({"spec": {"table": {"columns": [{"name": "id", "type": "long"}, {"name": "id", "type": "string"}]}}}),
            "spec.table.columns[1]: Duplicate value",
        ),
        (
            "unknown column type",
            json!({"spec": {"table": {"columns": [{"name": "id", "type": "uuid"}]}}}),
            "spec.table.columns[0].type in body should match",
        ),
        (
            "unknown partition transform",
            json!({"spec": {"table": {"partitionBy": [{"field": "ts", "transform": "week"}]}}}),
            "spec.table.partitionBy[0].transform in body should match",
        ),
        (
            "day partition of a non-time field",
            json!({"spec": {"table": {"partitionBy": [{"field": "country", "transform": "day"}]}}}),
            "spec.table.partitionBy: year, month, day and hour partition a time",
        ),
        (
            "bucket partition on delta",
            json!({"spec": {"table": {"partitionBy": [{"field": "id", "transform": "bucket[8]"}]}}}),
            "bucket[N] and truncate[N] need format iceberg",
        ),
        (
            "commit interval of zero",
            json!({"spec": {"commit": {"interval": "0s"}}}),
            "spec.commit.interval must be between 1s and 24h",
        ),
        (
            "commit interval not a duration",
            json!({"spec": {"commit": {"interval": "soon"}}}),
            "spec.commit.interval in body should match",
        ),
        (
            "commit after zero records",
            json!({"spec": {"commit": {"maxRecords": 0}}}),
            "spec.commit.maxRecords: Invalid value: 0",
        ),
        (
            "a name too long for the ingester's Service",
            json!({"metadata": {"name": "a-table-name-that-is-much-too-long-for-its-ingester-service"}}),
            "metadata.name must be at most 54",
        ),
        (
            "a name with a dot",
            json!({"metadata": {"name": "clicks.v2"}}),
            "metadata.name must be at most 54",
        ),
        (
            "commit after zero bytes",
            json!({"spec": {"commit": {"maxBytes": "0"}}}),
            "spec.commit.maxBytes in body should match",
        ),
        (
            "files of zero bytes",
            json!({"spec": {"commit": {"targetFileSize": "0Mi"}}}),
            "spec.commit.targetFileSize in body should match",
        ),
        (
            "a decimal whose scale is above its precision",
            json!({"spec": {"table": {"columns": [{"name": "price", "type": "decimal(5,10)"}]}}}),
            "decimal(P,S) needs a precision P of at most 38 and a scale S of at most P",
        ),
        (
            "a decimal beyond 38 digits",
            json!({"spec": {"table": {"columns": [{"name": "price", "type": "decimal(40,2)"}]}}}),
            "decimal(P,S) needs a precision P of at most 38",
        ),
        (
            "a partition field that is not a declared column",
            json!({"spec": {"table": {"columns": [{"name": "id", "type": "long"}],
                                      "partitionBy": [{"field": "country", "transform": "identity"}]}}}),
            "every partition field must be one of them",
        ),
        (
            "an event-time field that is not a declared column",
            json!({"spec": {"table": {"columns": [{"name": "id", "type": "long"}],
                                      "eventTime": {"field": "ts", "format": "epochMillis"}}}}),
            "the event-time field must be one of them",
        ),
        (
            "max bytes not a quantity",
            json!({"spec": {"commit": {"maxBytes": "lots"}}}),
            "spec.commit.maxBytes in body should match",
        ),
        (
            "unknown error policy",
            json!({"spec": {"errors": {"policy": "retry"}}}),
            "spec.errors.policy: Unsupported value: \"retry\"",
        ),
        (
            "dead letters without a topic",
            json!({"spec": {"errors": {"policy": "deadLetter"}}}),
            "spec.errors.deadLetter is required with policy deadLetter",
        ),
        (
            "dead letters into the source topic",
            json!({"spec": {"errors": {"policy": "deadLetter", "deadLetter": {"topic": "events"}}}}),
            "spec.errors.deadLetter.topic must differ from spec.source.topic",
        ),
        (
            "dead letters to a topic and a table",
            json!({"spec": {"errors": {"policy": "deadLetter", "deadLetter": {"topic": "dlq", "table": {}}}}}),
            "spec.errors.deadLetter needs exactly one of topic and table",
        ),
        (
            "dead letters to neither",
            json!({"spec": {"errors": {"policy": "deadLetter", "deadLetter": {}}}}),
            "spec.errors.deadLetter needs exactly one of topic and table",
        ),
        (
            "a dead-letter table name with a slash",
            json!({"spec": {"errors": {"policy": "deadLetter", "deadLetter": {"table": {"name": "a/b"}}}}}),
            "spec.errors.deadLetter.table.name in body should match",
        ),
        (
            "max replicas below min",
            json!({"spec": {"scaling": {"minReplicas": 4, "maxReplicas": 2}}}),
            "spec.scaling.maxReplicas must be at least spec.scaling.minReplicas",
        ),
        (
            "zero lag per replica",
            json!({"spec": {"scaling": {"lagPerReplica": 0}}}),
            "spec.scaling.lagPerReplica: Invalid value: 0",
        ),
        (
            "replicas while autoscaling",
            json!({"spec": {"replicas": 3}}),
            "spec.replicas is only honoured with spec.scaling.autoscale: false",
        ),
        (
            "negative replicas",
            json!({"spec": {"replicas": -1, "scaling": {"autoscale": false}}}),
            "spec.replicas: Invalid value: -1",
        ),
    ]
}

#[tokio::test]
async fn invalid_manifests_are_refused_with_messages_naming_the_field() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let client = kube_client(&env).await?;
    install_crd(&client).await?;
    let ns = TestNamespace::create(&env, &client, "api-invalid").await?;
    let tables: Api<KafkaTable> = Api::namespaced(client.clone(), &ns.name);
    // Raw JSON: most of these manifests do not even parse into the Rust types.
    let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns.name,
        &kube::api::ApiResource::erase::<KafkaTable>(&()),
    );

    let cases = invalid_cases();
    assert!(cases.len() >= 20);
    let mut failures = Vec::new();
    for (i, (what, change, expected)) in cases.iter().enumerate() {
        let mut manifest = base(&format!("invalid-{i}"));
        merge(&mut manifest, change);
        // A create, as `kubectl apply` and GitOps tools do for new objects (server-side apply
        // fails earlier, with a 500, on duplicate list keys).
        let result = raw
            .create(&PostParams::default(), &serde_json::from_value(manifest)?)
            .await;
        match result {
            Ok(_) => failures.push(format!("{what}: accepted")),
            Err(kube::Error::Api(e)) if e.code == 422 && e.message.contains(expected) => {}
            Err(e) => failures.push(format!("{what}: expected {expected:?} in: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // The valid base itself is accepted, so the refusals above come from the one change each.
    tables
        .create(
            &PostParams::default(),
            &serde_json::from_value(base("valid"))?,
        )
        .await?;
    // So are dead letters into a table beside the main one.
    let mut to_table = base("dead-letter-table");
    merge(
        &mut to_table,
        &json!({"spec": {"errors": {"policy": "deadLetter", "deadLetter": {"table": {}}}}}),
    );
    tables
        .create(&PostParams::default(), &serde_json::from_value(to_table)?)
        .await?;

    // kubectl users see the same message.
    let path = std::env::temp_dir().join(format!("{}-invalid.yaml", ns.name));
    let mut manifest = base("via-kubectl");
    merge(
        &mut manifest,
        &json!({"spec": {"table": {"mode": "upsert"}}}),
    );
    std::fs::write(&path, serde_yaml::to_string(&manifest)?)?;
    let out = kubectl(
        &env,
        &["apply", "-n", &ns.name, "-f", &path.display().to_string()],
    );
    std::fs::remove_file(&path).ok();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("spec.table.keyFields is required with mode upsert"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn immutable_fields_stay() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let client = kube_client(&env).await?;
    install_crd(&client).await?;
    let ns = TestNamespace::create(&env, &client, "api-immutable").await?;
    let tables: Api<KafkaTable> = Api::namespaced(client.clone(), &ns.name);
    tables
        .patch("t", &PatchParams::apply(MANAGER), &Patch::Apply(&base("t")))
        .await?;

    let changes = [
        (
            json!({"spec": {"table": {"format": "iceberg", "location": null, "catalog": {"type": "rest", "uri": "http://c", "namespace": "n", "table": "t"}}}}),
            "spec.table.format is immutable",
        ),
        (
            json!({"spec": {"table": {"location": "file:///elsewhere"}}}),
            "spec.table.location is immutable",
        ),
        (
            json!({"spec": {"source": {"topic": "other"}}}),
            "spec.source.topic is immutable",
        ),
        (
            json!({"spec": {"table": {"mode": "upsert", "keyFields": ["id"]}}}),
            "spec.table.mode is immutable",
        ),
    ];
    for (change, expected) in changes {
        let mut manifest = base("t");
        merge(&mut manifest, &change);
        let err = tables
            .patch("t", &PatchParams::apply(MANAGER), &Patch::Apply(&manifest))
            .await
            .expect_err(expected);
        assert!(
            err.to_string().contains(expected),
            "expected {expected:?} in {err}"
        );
    }
    // Mutable fields still change.
    let mut manifest = base("t");
    merge(
        &mut manifest,
        &json!({"spec": {"commit": {"interval": "10s"}, "suspend": true}}),
    );
    let updated = tables
        .patch("t", &PatchParams::apply(MANAGER), &Patch::Apply(&manifest))
        .await?;
    assert_eq!(updated.spec.commit.interval, "10s");
    assert!(updated.spec.suspend);
    Ok(())
}

#[tokio::test]
async fn kubectl_scale_drives_spec_replicas_when_autoscale_is_off() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let client = kube_client(&env).await?;
    install_crd(&client).await?;
    let ns = TestNamespace::create(&env, &client, "api-scale").await?;
    let tables: Api<KafkaTable> = Api::namespaced(client.clone(), &ns.name);

    let mut manual = base("manual");
    merge(
        &mut manual,
        &json!({"spec": {"scaling": {"autoscale": false}}}),
    );
    tables
        .patch(
            "manual",
            &PatchParams::apply(MANAGER),
            &Patch::Apply(&manual),
        )
        .await?;
    let out = kubectl(
        &env,
        &["scale", "-n", &ns.name, "kt/manual", "--replicas=3"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tables.get("manual").await?.spec.replicas, Some(3));
    let scale = tables.get_scale("manual").await?;
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(3));

    // With the built-in autoscaler on, a manual scale is refused with the reason.
    tables
        .patch(
            "auto",
            &PatchParams::apply(MANAGER),
            &Patch::Apply(&base("auto")),
        )
        .await?;
    let out = kubectl(&env, &["scale", "-n", &ns.name, "kt/auto", "--replicas=3"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("spec.replicas is only honoured with spec.scaling.autoscale: false"),
        "{stderr}"
    );
    assert_eq!(tables.get("auto").await?.spec.replicas, None);
    Ok(())
}
