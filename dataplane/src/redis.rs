//! The Redis connections of a socket node and of a worker: one configuration (RESP3,
//! errors naming `redis.url` without its password), clients that reconnect by themselves
//! and subscribers that re-subscribe after a reconnect.

use std::time::Duration;

use anyhow::Context;
use fred::interfaces::ClientLike;
use fred::prelude::{Builder, Client, Config};
use fred::types::RespVersion;

/// Nodes that hold connections (presence devices, online flags): the set the dead-node
/// sweep walks ([`crate::presence::tracker::Tracker::reap`]). Cluster-wide, not tenant data.
pub(crate) const NODES: &str = "sb:nodes";

/// How long to wait for Redis at start-up before refusing to start.
pub(crate) const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn redis_config(url: &str) -> anyhow::Result<Config> {
    let mut cfg = Config::from_url(url).map_err(|e| {
        anyhow::anyhow!(
            "redis.url (SWITCHBOARD_REDIS_URL): {}",
            redacted(&e.to_string(), url)
        )
    })?;
    // fred does not read the protocol from the URL; socketioxide-redis needs RESP3.
    cfg.version = RespVersion::RESP3;
    Ok(cfg)
}

/// A connection that answers nothing for this long is closed and opened again: a Redis
/// pod that was deleted leaves its connections open with nobody at the other end (no RST
/// ever comes back through the Service's translation), and they would hang until TCP gives
/// up minutes later.
const REDIS_UNRESPONSIVE: Duration = Duration::from_secs(5);

/// A command that gets no answer within this is failed (the caller acks `unavailable`)
/// instead of waiting for Redis to come back.
const REDIS_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// A fred builder for every Redis client of a node or worker: reconnects forever with
/// back-off (100 ms doubling to 2 s), closes unresponsive connections, bounds commands.
pub(crate) fn redis_builder(cfg: Config) -> Builder {
    use fred::types::config::{ReconnectPolicy, UnresponsiveConfig};
    let mut b = Builder::from_config(cfg);
    b.set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
        .with_connection_config(|c| {
            c.connection_timeout = REDIS_CONNECT_TIMEOUT;
            c.unresponsive = UnresponsiveConfig {
                max_timeout: Some(REDIS_UNRESPONSIVE),
                interval: Duration::from_secs(1),
            };
        })
        .with_performance_config(|p| p.default_command_timeout = REDIS_COMMAND_TIMEOUT);
    b
}

/// A subscriber client that subscribes again to all its channels after a reconnect (the
/// socket.io adapter's and the presence bus's subscriptions must survive a Redis restart).
pub(crate) fn redis_subscriber(cfg: Config) -> anyhow::Result<fred::clients::SubscriberClient> {
    let sub = redis_builder(cfg)
        .build_subscriber_client()
        .context("redis subscriber")?;
    resubscribe_after_reconnects(&sub);
    Ok(sub)
}

/// After every (re)connection, subscribe `sub` again to the channels, patterns and shard
/// channels it tracks. Not fred's `manage_subscriptions`: it sends a `SUBSCRIBE` with no
/// channel when only shard channels are tracked (the socket.io adapter's case), Redis
/// refuses it, and the shard channels are never subscribed again.
fn resubscribe_after_reconnects(sub: &fred::clients::SubscriberClient) {
    use fred::interfaces::{EventInterface, PubsubInterface};
    use fred::types::Key;
    let sub = sub.clone();
    let mut reconnects = sub.reconnect_rx();
    let span = tracing::info_span!("redis_resubscribe", client = %sub.id());
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            while reconnects.recv().await.is_ok() {
                let channels: Vec<Key> =
                    sub.tracked_channels().into_iter().map(Key::from).collect();
                let patterns: Vec<Key> =
                    sub.tracked_patterns().into_iter().map(Key::from).collect();
                let mut failed = Vec::new();
                if !channels.is_empty() {
                    failed.extend(sub.subscribe(channels).await.err());
                }
                if !patterns.is_empty() {
                    failed.extend(sub.psubscribe(patterns).await.err());
                }
                // One at a time: shard channels of different slots may not share a command.
                for channel in sub.tracked_shard_channels() {
                    failed.extend(sub.ssubscribe(Key::from(channel)).await.err());
                }
                for e in failed {
                    tracing::warn!(error = %e, "redis: re-subscribing after a reconnect failed");
                }
            }
        },
        span,
    ));
}

/// Connect to `url` (RESP3) within [`REDIS_CONNECT_TIMEOUT`]; errors name the key and
/// never show the URL's password.
pub(crate) async fn connect_redis(url: &str) -> anyhow::Result<(Config, Client)> {
    let cfg = redis_config(url)?;
    let client = redis_builder(cfg.clone())
        .build()
        .context("redis.url (SWITCHBOARD_REDIS_URL)")?;
    let shown = redacted(url, url);
    tokio::time::timeout(REDIS_CONNECT_TIMEOUT, client.init())
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "redis.url (SWITCHBOARD_REDIS_URL): no answer from {shown} within {REDIS_CONNECT_TIMEOUT:?}"
            )
        })?
        .map_err(|e| {
            anyhow::anyhow!(
                "redis.url (SWITCHBOARD_REDIS_URL): cannot connect to {shown}: {}",
                redacted(&e.to_string(), url)
            )
        })?;
    Ok((cfg, client))
}

/// How often a node or a worker samples Redis (`INFO memory`) for its metrics.
pub(crate) const REDIS_SAMPLE_EVERY: Duration = Duration::from_secs(15);

/// `used_memory` and `maxmemory` of an `INFO memory` reply (bytes; `None` when absent).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct MemoryInfo {
    pub used: Option<i64>,
    pub max: Option<i64>,
}

pub(crate) fn parse_memory_info(info: &str) -> MemoryInfo {
    let mut out = MemoryInfo::default();
    for line in info.lines() {
        let Some((key, value)) = line.trim_end().split_once(':') else {
            continue;
        };
        let value = value.parse().ok();
        match key {
            "used_memory" => out.used = value,
            "maxmemory" => out.max = value,
            _ => {}
        }
    }
    out
}

/// Sample Redis every [`REDIS_SAMPLE_EVERY`] until the process ends: whether it answers
/// (`switchboard_redis_up`) and its memory (`switchboard_redis_used_memory_bytes`,
/// `switchboard_redis_maxmemory_bytes`). Every node and worker of a cluster reports the
/// same Redis: dashboards take the max.
pub(crate) fn spawn_sampler(client: Client, metrics: crate::metrics::Metrics) {
    use fred::types::InfoKind;
    let span = tracing::info_span!("redis_sampler");
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let mut interval = tokio::time::interval(REDIS_SAMPLE_EVERY);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                match client.info::<String>(Some(InfoKind::Memory)).await {
                    Ok(text) => {
                        let m = parse_memory_info(&text);
                        metrics.redis_up.set(1);
                        if let Some(used) = m.used {
                            metrics.redis_used_memory.set(used);
                        }
                        if let Some(max) = m.max {
                            metrics.redis_max_memory.set(max);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "redis INFO memory failed");
                        metrics.redis_up.set(0);
                    }
                }
            }
        },
        span,
    ));
}

/// `text` with the user info of `url` (`user:password@`) replaced by `***@`.
pub(crate) fn redacted(text: &str, url: &str) -> String {
    let authority = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest.split('/').next().unwrap_or(rest));
    match authority.rsplit_once('@') {
        Some((userinfo, _)) if !userinfo.is_empty() => text.replace(userinfo, "***"),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_info_is_read_from_the_reply() {
        // As Redis 7 sends it: CRLF lines, a section header, human-readable twins.
        let reply = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n\
                     used_memory_rss:4194304\r\nmaxmemory:268435456\r\n\
                     maxmemory_human:256.00M\r\nmaxmemory_policy:noeviction\r\n";
        assert_eq!(
            parse_memory_info(reply),
            MemoryInfo {
                used: Some(1_048_576),
                max: Some(268_435_456)
            }
        );
        assert_eq!(parse_memory_info("# Memory\r\n"), MemoryInfo::default());
    }

    #[test]
    fn redis_passwords_never_reach_messages() {
        let url = "redis://app:s3cret@10.0.0.1:6379/0";
        assert_eq!(
            redacted(&format!("cannot connect to {url}"), url),
            "cannot connect to redis://***@10.0.0.1:6379/0"
        );
        let bare = "redis://:s3cret@h:1";
        assert!(!redacted(bare, bare).contains("s3cret"));
        assert_eq!(redacted("redis://h:1", "redis://h:1"), "redis://h:1");
    }
}
