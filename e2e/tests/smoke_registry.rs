//! The schema registry: an Avro schema registered through the Confluent-compatible API comes
//! back by id and by subject.

use kafkatable_e2e::env::TestEnv;
use kafkatable_e2e::fixtures::unique;
use serde_json::{Value, json};

#[tokio::test]
async fn avro_schema_registers_and_reads_back() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let http = reqwest::Client::new();
    let subject = format!("{}-value", unique("smoke"));
    let schema = json!({
        "type": "record", "name": "UserEvent", "namespace": "io.kafkatable.test",
        "fields": [{"name": "user_id", "type": "long"}, {"name": "action", "type": "string"}],
    })
    .to_string();

    let registered: Value = http
        .post(format!("{}/subjects/{subject}/versions", env.registry_url))
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .json(&json!({"schema": schema, "schemaType": "AVRO"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = registered["id"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("no id in {registered}"))?;

    let by_id: Value = http
        .get(format!("{}/schemas/ids/{id}", env.registry_url))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let stored: Value = serde_json::from_str(by_id["schema"].as_str().unwrap_or_default())?;
    assert_eq!(stored["name"], "UserEvent");
    assert_eq!(stored["fields"][0]["name"], "user_id");

    let latest: Value = http
        .get(format!(
            "{}/subjects/{subject}/versions/latest",
            env.registry_url
        ))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(latest["id"].as_i64(), Some(id));
    assert_eq!(latest["version"].as_i64(), Some(1));

    let missing = http
        .get(format!(
            "{}/subjects/{}/versions/latest",
            env.registry_url,
            unique("absent")
        ))
        .send()
        .await?;
    assert_eq!(missing.status(), reqwest::StatusCode::NOT_FOUND);

    http.delete(format!("{}/subjects/{subject}", env.registry_url))
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}
