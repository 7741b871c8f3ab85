//! The ingester's schema-registry client against the real registry (Apicurio's
//! Confluent-compatible API): schemas by id and by subject version with their references
//! resolved across subjects, Protobuf and JSON Schema kinds, a missing id refused at once, and
//! a registry that does not answer waited for, not skipped.

use std::time::Duration;

use kafkatable_e2e::env::TestEnv;
use kafkatable_e2e::fixtures::unique;
use kafkatable_ingester::registry::{Registry, RegistryError, SchemaKind, Version, inline_avro};
use serde_json::{Value, json};

async fn register(
    env: &TestEnv,
    subject: &str,
    kind: &str,
    schema: &str,
    references: Value,
) -> anyhow::Result<u32> {
    let answer: Value = reqwest::Client::new()
        .post(format!("{}/subjects/{subject}/versions", env.registry_url))
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .json(&json!({"schema": schema, "schemaType": kind, "references": references}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = answer["id"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no id: {answer}"))?;
    Ok(u32::try_from(id)?)
}

#[tokio::test]
async fn schemas_come_back_by_id_and_version_with_their_references() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let money_subject = unique("money");
    let order_subject = format!("{}-value", unique("orders"));
    let money = json!({"type": "record", "name": "Money", "namespace": "io.shop",
        "fields": [{"name": "cents", "type": "long"}, {"name": "currency", "type": "string"}]});
    register(&env, &money_subject, "AVRO", &money.to_string(), json!([])).await?;
    let order = json!({"type": "record", "name": "Order", "namespace": "io.shop",
        "fields": [{"name": "id", "type": "long"}, {"name": "total", "type": "io.shop.Money"}]});
    let id = register(
        &env,
        &order_subject,
        "AVRO",
        &order.to_string(),
        json!([{"name": "io.shop.Money", "subject": money_subject, "version": 1}]),
    )
    .await?;

    let registry = Registry::new(&env.registry_url, None, None)?;
    let schema = registry.by_id(id).await?;
    assert_eq!(schema.kind, SchemaKind::Avro);
    assert!(schema.text.contains("\"Order\""), "{}", schema.text);
    assert_eq!(schema.references.len(), 1);
    let r = &schema.references[0];
    assert_eq!(
        (r.name.as_str(), r.subject.as_str(), r.version),
        ("io.shop.Money", money_subject.as_str(), 1)
    );
    assert!(r.schema.text.contains("\"Money\""), "{}", r.schema.text);
    // Written out as one schema for a single-schema Avro reader: the reference's definition
    // takes the place of its name.
    let inlined: Value = serde_json::from_str(&inline_avro(&schema).map_err(anyhow::Error::msg)?)?;
    assert_eq!(inlined["fields"][1]["type"]["name"], "Money", "{inlined}");
    assert_eq!(inlined["fields"][1]["type"]["fields"][0]["name"], "cents");
    // Cached: the same schema object comes back.
    assert!(std::sync::Arc::ptr_eq(&schema, &registry.by_id(id).await?));
    assert_eq!(
        *registry.version(&order_subject, Version::Latest).await?,
        *schema
    );
    assert_eq!(
        *registry.version(&order_subject, Version::Number(1)).await?,
        *schema
    );

    let proto = "syntax = \"proto3\";\npackage io.shop;\nmessage Click { string page = 1; int64 at = 2; }\n";
    let proto_id = register(&env, &unique("clicks"), "PROTOBUF", proto, json!([])).await?;
    assert_eq!(registry.by_id(proto_id).await?.kind, SchemaKind::Protobuf);
    let json_schema =
        json!({"type": "object", "properties": {"id": {"type": "integer"}}}).to_string();
    let json_id = register(&env, &unique("events"), "JSON", &json_schema, json!([])).await?;
    assert_eq!(registry.by_id(json_id).await?.kind, SchemaKind::Json);

    // A schema that does not exist is refused at once, naming the URL, not retried.
    let missing =
        tokio::time::timeout(Duration::from_secs(10), registry.by_id(987_654_321)).await?;
    assert!(
        matches!(&missing, Err(RegistryError::NotFound { url, .. }) if url.contains("/schemas/ids/987654321")),
        "{missing:?}"
    );
    assert!(registry.unreachable().is_none());
    Ok(())
}

#[tokio::test]
async fn a_registry_that_does_not_answer_is_waited_for() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let subject = unique("waited");
    let schema = json!({"type": "record", "name": "W", "fields": [{"name": "a", "type": "int"}]});
    let id = register(&env, &subject, "AVRO", &schema.to_string(), json!([])).await?;
    // A port nothing listens on yet, in front of the real registry.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let real = url::Url::parse(&env.registry_url)?;
    let front = format!("http://127.0.0.1:{port}{}", real.path());
    let registry = std::sync::Arc::new(Registry::new(&front, None, None)?);
    let asked = tokio::spawn({
        let registry = registry.clone();
        async move { registry.by_id(id).await }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while registry.unreachable().is_none() {
        assert!(std::time::Instant::now() < deadline, "no retry reported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let why = registry.unreachable().unwrap_or_default();
    assert!(why.contains(&format!("127.0.0.1:{port}")), "{why}");
    assert!(
        !asked.is_finished(),
        "the lookup waits while the registry is down"
    );

    // The registry comes up on that port: the lookup completes.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let upstream = format!(
        "{}:{}",
        real.host_str().unwrap_or("127.0.0.1"),
        real.port().unwrap_or(80)
    );
    let forward = tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    let schema = tokio::time::timeout(Duration::from_secs(60), asked).await???;
    assert!(schema.text.contains("\"W\""), "{}", schema.text);
    assert!(registry.unreachable().is_none(), "cleared once it answers");
    forward.abort();
    Ok(())
}
