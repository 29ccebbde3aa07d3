//! Kafka in and out of the notification pipeline (rdkafka).
//!
//! - [`Producer`]: `POST /api/v1/notifications` produces the validated notification to
//!   the `notifications` topic, keyed by its id (so every copy of an id lands on one
//!   partition, consumed by one worker at a time).
//! - [`run_worker`]: `switchboard worker` consumes that topic in a consumer group with
//!   auto-commit and automatic offset storing off: a message's offset is stored and
//!   committed only after it was processed (or dead-lettered), so a crash or a shutdown
//!   in the middle replays it, and [`Dispatcher`] skips what was finished.
//!   Malformed messages go to the dead-letter topic with the reason.
//!   Up to `max_in_flight` messages are processed at once (one slow provider or long
//!   Retry-After no longer stalls every partition); [`offsets::OffsetTracker`] stores a
//!   partition's offset only up to its contiguous prefix of finished messages.
//!
//! ```text
//!  recv ─▶ tracker.start ─▶ in flight (≤ max_in_flight) ─▶ done ─▶ tracker.finish
//!                                                                  └▶ store + commit prefix
//! ```

pub mod lag;
pub mod offsets;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

use crate::error::StoreError;
use crate::hub::Hub;
use crate::notifications::Notification;
use crate::notifications::dispatch::{DispatchError, Dispatcher};
use offsets::{OffsetTracker, Partition};

/// How long a produce may wait for the broker's acknowledgement.
pub const PRODUCE_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait before retrying a message whose processing failed (Redis down, DLQ unreachable).
pub const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// The header carrying the reason on dead-lettered messages.
pub const REASON_HEADER: &str = "x-switchboard-dlq-reason";

#[derive(Clone)]
pub struct Producer {
    inner: FutureProducer,
    topic: String,
}

impl Producer {
    pub fn new(brokers: &str, topic: &str) -> Result<Self, String> {
        let inner = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set(
                "message.timeout.ms",
                PRODUCE_TIMEOUT.as_millis().to_string(),
            )
            .create()
            .map_err(|e| format!("notifications.kafka.brokers: {e}"))?;
        Ok(Self {
            inner,
            topic: topic.to_owned(),
        })
    }

    /// Produce and wait for the broker's acknowledgement.
    pub async fn send(
        &self,
        key: &str,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<(), String> {
        let mut rec = FutureRecord::to(&self.topic).key(key).payload(payload);
        if let Some(h) = headers {
            rec = rec.headers(h);
        }
        self.inner
            .send(rec, PRODUCE_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|(e, _)| format!("kafka produce to {}: {e}", self.topic))
    }

    /// Produce a notification, keyed by its id.
    pub async fn notification(&self, n: &Notification) -> Result<(), String> {
        let bytes = serde_json::to_vec(n).map_err(|e| e.to_string())?;
        self.send(&n.id, &bytes, None).await
    }
}

/// Where the worker reads and dead-letters.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub brokers: String,
    pub topic: String,
    pub group: String,
    pub dlq_topic: String,
    /// Messages processed at once (`notifications.kafka.max_in_flight`).
    pub max_in_flight: usize,
    /// Older notifications are dead-lettered as [`STALE`] (`notifications.max_age`).
    pub max_age: Duration,
}

/// The dead-letter reason of a notification older than `notifications.max_age`.
pub const STALE: &str = "stale";

/// Consume until `shutdown`, processing up to `cfg.max_in_flight` messages at once. A
/// partition's offset is stored and committed only up to the first message that is not
/// finished; a shutdown cancels what is in flight, whose offsets stay uncommitted (the
/// next worker replays them and [`Dispatcher`] skips what was finished).
pub async fn run_worker(
    cfg: WorkerConfig,
    dispatcher: Dispatcher,
    hub: Option<Arc<dyn Hub>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let context = lag::LagContext {
        metrics: dispatcher.metrics.clone(),
    };
    let consumer: StreamConsumer<lag::LagContext> = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("group.id", &cfg.group)
        .set("enable.auto.commit", "false")
        // librdkafka stores a message's offset when it hands it over by default; the final
        // commit at shutdown would then commit the message in progress. Only processed
        // messages are stored (below).
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set(
            "statistics.interval.ms",
            lag::STATS_INTERVAL.as_millis().to_string(),
        )
        .create_with_context(context)
        .map_err(|e| anyhow::anyhow!("notifications.kafka.brokers: {e}"))?;
    consumer
        .subscribe(&[cfg.topic.as_str()])
        .map_err(|e| anyhow::anyhow!("notifications.kafka.topic: {e}"))?;
    let dlq = Producer::new(&cfg.brokers, &cfg.dlq_topic).map_err(anyhow::Error::msg)?;
    tracing::info!(topic = %cfg.topic, group = %cfg.group, "worker consuming");
    tokio::pin!(shutdown);
    let max_in_flight = cfg.max_in_flight.max(1);
    let mut tracker = OffsetTracker::default();
    // Polled by this task only: the futures borrow the dispatcher and the producer, and
    // dropping the set (shutdown) cancels them.
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some((partition, offset, r)) = in_flight.next(), if !in_flight.is_empty() => {
                r?;
                let Some(upto) = tracker.finish(&partition, offset) else {
                    continue;
                };
                let (topic, p): &Partition = &partition;
                if let Err(e) = consumer.store_offset(topic, *p, upto) {
                    tracing::warn!(error = %e, partition = p, "offset store failed (messages may be replayed; replays are de-duplicated)");
                }
                if let Err(e) = consumer.commit_consumer_state(CommitMode::Async) {
                    tracing::warn!(error = %e, "offset commit failed (messages may be replayed; replays are de-duplicated)");
                }
            }
            m = consumer.recv(), if in_flight.len() < max_in_flight => {
                let msg = match m {
                    Ok(m) => m.detach(),
                    Err(e) => {
                        tracing::warn!(error = %e, "kafka consume error");
                        tokio::time::sleep(RETRY_PAUSE).await;
                        continue;
                    }
                };
                let partition: Partition = (msg.topic().to_owned(), msg.partition());
                let offset = msg.offset();
                tracker.start(&partition, offset);
                let (dispatcher, hub, dlq) = (&dispatcher, hub.as_ref(), &dlq);
                let max_age = cfg.max_age;
                in_flight.push(async move {
                    let r = process(&msg, dispatcher, hub, dlq, max_age).await;
                    (partition, offset, r)
                });
            }
        }
    }
    if !in_flight.is_empty() {
        tracing::info!(
            in_flight = tracker.in_flight(),
            "shutdown: cancelling messages in flight (their offsets stay uncommitted)"
        );
    }
    drop(in_flight);
    // Commits the stored offsets: processed messages only.
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(error = %e, "final offset commit");
    }
    Ok(())
}

/// Process one message: deliver it, or dead-letter it when malformed, older than
/// `max_age` ([`STALE`]), or when what it touches in the stores is corrupt (so one message
/// cannot block its partition). Retries Redis and dead-letter failures until they succeed
/// (the caller's shutdown interrupts).
async fn process(
    msg: &OwnedMessage,
    dispatcher: &Dispatcher,
    hub: Option<&Arc<dyn Hub>>,
    dlq: &Producer,
    max_age: Duration,
) -> anyhow::Result<()> {
    let payload = msg.payload().unwrap_or_default();
    let reason = match Notification::parse(payload) {
        Err(reason) => reason,
        Ok(n) if n.is_stale(msg.timestamp().to_millis(), crate::app::now_ms(), max_age) => {
            crate::metrics::Metrics::kind(&dispatcher.metrics.notifications, STALE);
            STALE.to_owned()
        }
        Ok(n) => loop {
            match dispatcher.dispatch(&n, hub).await {
                Ok(_) => return Ok(()),
                Err(DispatchError::Store(StoreError::Corrupt(e))) => {
                    break format!("stored data is corrupt: {e}");
                }
                Err(DispatchError::Busy) => {
                    tracing::debug!(id = %n.id, "another run holds it, retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, id = %n.id, "dispatch failed, retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        },
    };
    dead_letter(msg, &reason, dlq).await?;
    crate::metrics::Metrics::kind(&dispatcher.metrics.notifications, "dead_lettered");
    tracing::warn!(offset = msg.offset(), %reason, "notification dead-lettered");
    Ok(())
}

/// The dead-letter record: the original bytes as `payload` when they are UTF-8, else as
/// `payload_base64` (never altered).
pub fn dlq_value(
    reason: &str,
    topic: &str,
    partition: i32,
    offset: i64,
    payload: &[u8],
) -> serde_json::Value {
    let mut v = json!({
        "reason": reason,
        "topic": topic,
        "partition": partition,
        "offset": offset,
    });
    match std::str::from_utf8(payload) {
        Ok(s) => v["payload"] = json!(s),
        Err(_) => {
            use base64::Engine;
            v["payload_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(payload));
        }
    }
    v
}

/// Produce `{reason, topic, partition, offset, payload | payload_base64}` to the dead-letter topic, with
/// the reason in a header too; retried until the broker takes it.
async fn dead_letter(msg: &OwnedMessage, reason: &str, dlq: &Producer) -> anyhow::Result<()> {
    let value = dlq_value(
        reason,
        msg.topic(),
        msg.partition(),
        msg.offset(),
        msg.payload().unwrap_or_default(),
    );
    let key = msg
        .key()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .unwrap_or_default();
    let bytes = serde_json::to_vec(&value)?;
    loop {
        let headers = OwnedHeaders::new().insert(Header {
            key: REASON_HEADER,
            value: Some(reason),
        });
        match dlq.send(&key, &bytes, Some(headers)).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "dead-letter produce failed, retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_dead_letter_keeps_the_original_bytes() {
        let v = dlq_value("r", "t", 1, 7, b"{\"id\": 1}");
        assert_eq!(v["payload"], "{\"id\": 1}");
        let raw = [0xff, 0x00, 0xfe];
        let v = dlq_value("r", "t", 1, 7, &raw);
        assert!(v.get("payload").is_none());
        use base64::Engine;
        let back = base64::engine::general_purpose::STANDARD
            .decode(v["payload_base64"].as_str().unwrap())
            .unwrap();
        assert_eq!(back, raw);
        assert_eq!(
            (v["offset"].as_i64(), v["reason"].as_str()),
            (Some(7), Some("r"))
        );
    }
}
