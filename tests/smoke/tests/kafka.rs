//! Kafka (tests/env: Apache Kafka in KRaft mode) through rdkafka, as the notifications
//! pipeline uses it: produce to a fresh topic, consume it back in a consumer group.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use switchboard_smoke::{endpoint, unique_name};

#[tokio::test]
async fn produce_then_consume_in_a_group() -> anyhow::Result<()> {
    let Some(brokers) = endpoint("SWITCHBOARD_TEST_KAFKA_BROKERS") else {
        return Ok(());
    };
    let topic = unique_name("smoke-kafka");
    let key = unique_name("key");
    let payload = unique_name("payload");

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("message.timeout.ms", "30000")
        .set("acks", "all")
        .create()
        .context("creating the producer")?;
    // The topic does not exist yet: the broker creates it (auto.create.topics.enable).
    let delivery = producer
        .send(
            FutureRecord::to(&topic).key(&key).payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(err, _)| err)
        .with_context(|| format!("producing to {topic}"))?;
    println!(
        "delivered to {topic} partition {} offset {}",
        delivery.partition, delivery.offset
    );

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", unique_name("smoke-group"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "10000")
        .create()
        .context("creating the consumer")?;
    consumer.subscribe(&[topic.as_str()])?;

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("no message from {topic} within 60s");
        }
        match tokio::time::timeout(left, consumer.recv()).await {
            Err(_) => bail!("no message from {topic} within 60s"),
            // Transient while the group forms; the deadline bounds the loop.
            Ok(Err(err)) => println!("consumer: {err}"),
            Ok(Ok(message)) => {
                let got_key = message.key().map(String::from_utf8_lossy);
                let got = message.payload().map(String::from_utf8_lossy);
                if got_key.as_deref() == Some(key.as_str())
                    && got.as_deref() == Some(payload.as_str())
                {
                    assert_eq!(message.topic(), topic);
                    assert_eq!(message.offset(), delivery.offset);
                    return Ok(());
                }
                bail!("unexpected message on {topic}: key {got_key:?} payload {got:?}");
            }
        }
    }
}
