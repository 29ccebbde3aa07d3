//! Wiring of the notification pipeline: the providers, mailer and dispatcher built from
//! the configuration, the socket node's intake, and `switchboard worker`.
//!
//! ```text
//!  Kafka `notifications` ─▶ worker (consumer group) ─▶ Dispatcher ─┬─▶ Redis stores
//!                                   │ malformed                    ├─▶ FCM / APNs / SMTP
//!                                   ▼                              └─▶ Socket.IO Redis adapter
//!                          Kafka dead-letter topic                       ─▶ user's sockets, any node
//! ```
//! The worker is not a socket node: it builds a Socket.IO server with the Redis adapter
//! and no listener, so an emit to a user's room is published through Redis and every
//! node sends it to that user's `/notifications` sockets.

use std::future::IntoFuture;
use std::sync::Arc;

use anyhow::Context;
use fred::interfaces::ClientLike;
use socketioxide::SocketIo;
use socketioxide_redis::{FredAdapter, RedisAdapterCtr};
use switchboard_crds::config::DataplaneConfig;

use crate::app::{App, Stores};
use crate::email::Mailer;
use crate::hub::Hub;
use crate::kafka::{Producer, WorkerConfig};
use crate::metrics::Metrics;
use crate::notifications::NOTIFICATIONS;
use crate::notifications::api::Intake;
use crate::notifications::dispatch::Dispatcher;
use crate::push::apns::{A2, Apns};
use crate::push::fcm::Fcm;
use crate::push::{Provider, Push};

/// The push providers the configuration enables.
pub fn push(config: &DataplaneConfig) -> Result<Push, String> {
    let n = &config.notifications;
    let mut push = Push::default();
    if let Some(file) = &n.fcm.service_account_file {
        let fcm: Arc<dyn Provider> = Arc::new(Fcm::new(file, &n.fcm.base_url)?);
        push.fcm = Some((fcm, n.fcm.max_attempts));
    }
    if let Some(key) = &n.apns.key_file {
        let (Some(key_id), Some(team_id), Some(topic)) =
            (&n.apns.key_id, &n.apns.team_id, &n.apns.topic)
        else {
            return Err("notifications.apns: key_file needs key_id, team_id and topic".into());
        };
        let transport = Arc::new(A2::new(key, key_id, team_id)?);
        let sandbox = n.apns.environment == "sandbox";
        let apns: Arc<dyn Provider> = Arc::new(Apns::new(
            transport,
            topic.clone(),
            sandbox,
            &n.apns.allowed_topics,
        ));
        push.apns = Some((apns, n.apns.max_attempts));
    }
    Ok(push)
}

/// The mailer, when `notifications.email.smtp_url` is set.
pub fn mailer(config: &DataplaneConfig) -> Result<Option<Mailer>, String> {
    let e = &config.notifications.email;
    match &e.smtp_url {
        None => Ok(None),
        Some(url) => {
            let from = e
                .from
                .as_deref()
                .ok_or("notifications.email.from: required with smtp_url")?;
            Mailer::new(url, from).map(Some)
        }
    }
}

pub fn dispatcher(
    config: &DataplaneConfig,
    stores: &Stores,
    metrics: Metrics,
) -> Result<Dispatcher, String> {
    Ok(Dispatcher {
        inbox: stores.inbox.clone(),
        devices: stores.devices.clone(),
        preferences: stores.preferences.clone(),
        delivery: stores.delivery.clone(),
        push: push(config)?,
        mailer: mailer(config)?,
        max_in_app: config.notifications.max_in_app_per_user,
        metrics,
    })
}

/// The socket node's intake: Kafka when brokers are configured, else deliver here.
pub fn intake(app: &App) -> Result<Intake, String> {
    let k = &app.config.notifications.kafka;
    if k.brokers.is_empty() {
        Ok(Intake::direct(dispatcher(
            &app.config,
            &app.stores,
            app.metrics.clone(),
        )?))
    } else {
        Ok(Intake::Kafka(Producer::new(
            &k.brokers.join(","),
            &k.topic,
        )?))
    }
}

/// The worker's HTTP port: `/healthz`, `/readyz` (Redis answers), `/metrics`.
fn probes(redis: fred::clients::Client, metrics: Metrics) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(async move || {
                let ping = tokio::time::timeout(
                    std::time::Duration::from_secs(2),
                    redis.ping::<String>(None),
                )
                .await;
                if matches!(ping, Ok(Ok(_))) {
                    (axum::http::StatusCode::OK, "ready")
                } else {
                    (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "redis does not answer",
                    )
                }
            }),
        )
        .route("/metrics", get(async move || metrics.render()))
}

/// The worker accepts no sockets (it has no listener; this is belt and braces).
async fn refuse<A: socketioxide::adapter::Adapter>(s: socketioxide::extract::SocketRef<A>) {
    let _ = s.disconnect();
}

/// `switchboard worker`: needs Redis and Kafka; runs until `shutdown`.
pub async fn run(
    config: DataplaneConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let url = config
        .redis
        .url
        .clone()
        .context("redis.url (SWITCHBOARD_REDIS_URL): the worker needs Redis")?;
    let k = &config.notifications.kafka;
    if k.brokers.is_empty() {
        anyhow::bail!(
            "notifications.kafka.brokers (SWITCHBOARD_KAFKA_BROKERS): the worker needs Kafka"
        );
    }
    let brokers = k.brokers.join(",");
    let (cfg, client) = crate::redis::connect_redis(&url).await?;
    let sub = crate::redis::redis_subscriber(cfg)?;
    let ctr = tokio::time::timeout(
        crate::redis::REDIS_CONNECT_TIMEOUT,
        RedisAdapterCtr::new_with_fred(sub),
    )
    .await
    .map_err(|_| anyhow::anyhow!("redis.url: subscriber did not connect"))?
    .context("redis.url: subscriber")?;
    let (_layer, io) = SocketIo::builder()
        .with_adapter::<FredAdapter<_>>(ctr)
        .build_layer();
    // No listener: this namespace exists only so emits go out through the adapter.
    io.ns(NOTIFICATIONS, refuse)
        .await
        .map_err(|e| anyhow::anyhow!("socket.io redis adapter: {e}"))?;
    let hub: Arc<dyn Hub> = Arc::new(io);
    let stores = Stores::redis(&client, &config);
    let metrics = Metrics::new();
    crate::redis::spawn_sampler(client.clone(), metrics.clone());
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listen (SWITCHBOARD_LISTEN): cannot bind {}", config.listen))?;
    let addr = listener.local_addr()?;
    println!("switchboard worker: health and metrics on http://{addr}");
    tokio::spawn(axum::serve(listener, probes(client.clone(), metrics.clone())).into_future());
    let dispatcher = dispatcher(&config, &stores, metrics).map_err(anyhow::Error::msg)?;
    let wc = WorkerConfig {
        brokers,
        topic: k.topic.clone(),
        group: k.group.clone(),
        dlq_topic: k.dlq_topic.clone(),
        max_in_flight: k.max_in_flight,
        max_age: config.notifications.max_age.0,
    };
    crate::kafka::run_worker(wc, dispatcher, Some(hub), shutdown).await
}
