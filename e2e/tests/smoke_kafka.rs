//! The Kafka broker: records go through and come back, over PLAINTEXT and SASL/SCRAM, and a
//! wrong SCRAM password is refused.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kafkatable_e2e::env::TestEnv;
use kafkatable_e2e::fixtures::{TestTopic, eventually, kafka_config, unique};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{BaseProducer, FutureProducer, FutureRecord, Producer};

const RECORDS: usize = 1000;

async fn round_trip(sasl: bool) -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let topic = TestTopic::create(&env, "smoke", 3).await?;

    let producer: FutureProducer = kafka_config(&env, sasl).set("linger.ms", "5").create()?;
    let sends = (0..RECORDS).map(|i| {
        let key = format!("k{i}");
        let payload = format!("{{\"n\":{i}}}");
        let producer = producer.clone();
        let topic = topic.name.clone();
        async move {
            let record = FutureRecord::to(&topic).key(&key).payload(&payload);
            producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)
        }
    });
    for delivery in futures::future::join_all(sends).await {
        delivery?;
    }
    producer.flush(Duration::from_secs(10))?;

    let consumer: StreamConsumer = kafka_config(&env, sasl)
        .set("group.id", unique("smoke-group"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[&topic.name])?;
    let mut payloads = BTreeSet::new();
    let mut offsets: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while payloads.len() < RECORDS {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "only {} of {RECORDS} records consumed in 60 s",
                    payloads.len()
                )
            })??;
        let payload = message
            .payload_view::<str>()
            .transpose()?
            .unwrap_or_default()
            .to_string();
        assert!(
            payloads.insert(payload.clone()),
            "record consumed twice: {payload}"
        );
        offsets
            .entry(message.partition())
            .or_default()
            .push(message.offset());
    }
    let expected: BTreeSet<String> = (0..RECORDS).map(|i| format!("{{\"n\":{i}}}")).collect();
    assert_eq!(payloads, expected);
    assert_eq!(offsets.len(), 3, "keys spread over all three partitions");
    for (partition, offs) in offsets {
        let contiguous: Vec<i64> = (0..offs.len() as i64).collect();
        assert_eq!(offs, contiguous, "partition {partition} offsets");
    }
    Ok(())
}

#[tokio::test]
async fn thousand_records_round_trip_over_plaintext() -> anyhow::Result<()> {
    round_trip(false).await
}

#[tokio::test]
async fn thousand_records_round_trip_over_sasl_scram() -> anyhow::Result<()> {
    round_trip(true).await
}

/// Records the errors librdkafka reports through its error callback.
#[derive(Default)]
struct ErrorLog(std::sync::Mutex<Vec<String>>);

impl rdkafka::ClientContext for ErrorLog {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if let Ok(mut errors) = self.0.lock() {
            errors.push(format!("{error:?}: {reason}"));
        }
    }
}

impl rdkafka::producer::ProducerContext for ErrorLog {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

#[tokio::test]
async fn wrong_scram_password_is_refused() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let topic = TestTopic::create(&env, "smoke-auth", 1).await?;
    let producer: BaseProducer<ErrorLog> = kafka_config(&env, true)
        .set("sasl.password", "not-the-password")
        .create_with_context(ErrorLog::default())?;
    let metadata = producer
        .client()
        .fetch_metadata(Some(&topic.name), Duration::from_secs(5));
    assert!(metadata.is_err(), "a wrong password must not get metadata");
    let errors = eventually(
        "an authentication error from librdkafka",
        Duration::from_secs(20),
        || async {
            producer.poll(Duration::from_millis(100)); // serves the error callback
            let errors = producer.context().0.lock().ok()?.clone();
            errors
                .iter()
                .any(|e| e.contains("Authentication"))
                .then_some(errors)
        },
    )
    .await;
    assert!(
        errors
            .iter()
            .any(|e| e.contains("SCRAM") || e.contains("SASL")),
        "{errors:?}"
    );
    Ok(())
}
