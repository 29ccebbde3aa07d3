//! Redis (tests/env: Debian redis-server) through fred with RESP3, as the dataplane uses it.

use std::time::Duration;

use anyhow::{Context, ensure};
use fred::prelude::*;
use fred::types::{CustomCommand, RespVersion};
use switchboard_smoke::{endpoint, unique_name};

fn resp3_config(url: &str) -> anyhow::Result<Config> {
    // fred ignores query parameters of the URL: the protocol version is set here.
    let mut config = Config::from_url(url).with_context(|| format!("bad Redis URL {url}"))?;
    config.version = RespVersion::RESP3;
    Ok(config)
}

#[tokio::test]
async fn ping_over_resp3() -> anyhow::Result<()> {
    let Some(url) = endpoint("SWITCHBOARD_TEST_REDIS_URL") else {
        return Ok(());
    };
    let client = Builder::from_config(resp3_config(&url)?).build()?;
    client.init().await.context("connecting to Redis")?;

    let pong: String = client.ping(None).await?;
    ensure!(pong == "PONG", "PING answered {pong:?}");
    // The server really speaks RESP3 with this connection (HELLO 3 was accepted).
    let info: String = client
        .custom(
            CustomCommand::new_static("CLIENT", None, false),
            vec!["INFO"],
        )
        .await?;
    ensure!(
        info.contains("resp=3"),
        "CLIENT INFO does not say resp=3: {info}"
    );

    client.quit().await?;
    Ok(())
}

#[tokio::test]
async fn publish_reaches_a_subscriber() -> anyhow::Result<()> {
    let Some(url) = endpoint("SWITCHBOARD_TEST_REDIS_URL") else {
        return Ok(());
    };
    let config = resp3_config(&url)?;
    let subscriber = Builder::from_config(config.clone()).build_subscriber_client()?;
    subscriber
        .init()
        .await
        .context("connecting the subscriber")?;
    let publisher = Builder::from_config(config).build()?;
    publisher.init().await.context("connecting the publisher")?;

    let channel = unique_name("smoke-pubsub");
    let payload = unique_name("hello");
    let mut messages = subscriber.message_rx();
    subscriber.subscribe(channel.as_str()).await?;

    let receivers: u64 = publisher
        .publish(channel.as_str(), payload.as_str())
        .await?;
    ensure!(
        receivers == 1,
        "PUBLISH reached {receivers} subscribers, expected 1"
    );

    let message = tokio::time::timeout(Duration::from_secs(10), messages.recv())
        .await
        .context("no message within 10s")??;
    ensure!(
        *message.channel == *channel,
        "message on channel {}",
        message.channel
    );
    let got: String = message.value.convert()?;
    ensure!(got == payload, "received {got:?}, published {payload:?}");

    subscriber.unsubscribe(channel.as_str()).await?;
    subscriber.quit().await?;
    publisher.quit().await?;
    Ok(())
}
