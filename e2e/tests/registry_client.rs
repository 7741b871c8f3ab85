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

    let registry = Registry::new(&env.registry_url, None, None, None)?;
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
    let registry = std::sync::Arc::new(Registry::new(&front, None, None, None)?);
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

/// An HTTPS front of the registry that asks for a client certificate signed by the test CA
/// (the broker's certificate for 127.0.0.1, which that CA signed, serves both ends), and
/// passes each connection's bytes on as they are.
async fn mutual_tls_front(env: &TestEnv) -> anyhow::Result<String> {
    use tokio_rustls::rustls::{self, pki_types::pem::PemObject};
    let tls = env
        .kafka_tls_ca
        .parent()
        .ok_or_else(|| anyhow::anyhow!("the CA has a directory"))?
        .to_path_buf();
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(tls.join("broker.crt"))?
        .collect::<Result<_, _>>()?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(tls.join("broker.key"))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls::pki_types::CertificateDer::pem_file_iter(&env.kafka_tls_ca)? {
        roots.add(ca?)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone())
            .build()?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let front = format!("https://127.0.0.1:{}", listener.local_addr()?.port());
    let upstream = url::Url::parse(&env.registry_url)?;
    let address = format!(
        "{}:{}",
        upstream.host_str().unwrap_or("127.0.0.1"),
        upstream.port_or_known_default().unwrap_or(80)
    );
    let path = upstream.path().trim_end_matches('/').to_string();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (acceptor, address) = (acceptor.clone(), address.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                if let Ok(mut plain) = tokio::net::TcpStream::connect(&address).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                }
            });
        }
    });
    Ok(format!("{front}{path}"))
}

/// An https registry that wants mutual TLS: read with the CA and a client certificate (as
/// the Secrets give them); without the certificate, or trusting another CA, nothing is read and
/// the reason shows (the client waits as for a registry that does not answer).
#[tokio::test]
async fn a_registry_behind_mutual_tls_is_read_with_the_ca_and_client_certificate()
-> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let subject = format!("{}-value", unique("tls"));
    let schema = json!({"type": "record", "name": "T", "fields": [{"name": "id", "type": "long"}]});
    let id = register(&env, &subject, "AVRO", &schema.to_string(), json!([])).await?;
    let front = mutual_tls_front(&env).await?;
    let tls = env
        .kafka_tls_ca
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let ca = std::fs::read(&env.kafka_tls_ca)?;
    let mut identity = std::fs::read(tls.join("broker.crt"))?;
    identity.extend(std::fs::read(tls.join("broker.key"))?);

    let registry = Registry::new(&front, None, Some(&ca), Some(&identity))?;
    let read = tokio::time::timeout(Duration::from_secs(30), registry.by_id(id)).await??;
    assert!(read.text.contains("\"T\""), "{}", read.text);

    // Without the client certificate the handshake fails; trusting another CA, the server's
    // certificate is refused. Either is the registry refusing us, seen at once.
    let other_ca = std::fs::read(&env.kafka_tls_other_ca)?;
    for (what, client) in [
        (
            "no client certificate",
            Registry::new(&front, None, Some(&ca), None)?,
        ),
        (
            "another CA",
            Registry::new(&front, None, Some(&other_ca), Some(&identity))?,
        ),
    ] {
        let outcome = tokio::time::timeout(Duration::from_secs(5), client.by_id(id)).await;
        match outcome {
            Ok(Ok(_)) => panic!("{what}: read anyway"),
            // Waited for (retried as unreachable) or refused: not read, and says why.
            Ok(Err(e)) => assert!(e.to_string().contains("127.0.0.1"), "{what}: {e}"),
            Err(_) => assert!(client.unreachable().is_some(), "{what}: the reason shows"),
        }
    }
    Ok(())
}
