//! Wiring: build the stores and the Socket.IO server for the configuration, then serve
//! Socket.IO and HTTP on one listener until `shutdown` resolves.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fred::interfaces::ClientLike;
use fred::prelude::{Builder, Config};
use fred::types::RespVersion;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::handler::ConnectHandler;
use socketioxide_redis::{FredAdapter, RedisAdapterCtr};
use switchboard_crds::config::DataplaneConfig;
use tokio::net::TcpListener;

use crate::app::{App, Stores};
use crate::auth::Verifier;
use crate::hub::CHAT;
use crate::notifications::{NOTIFICATIONS, events as notify};
use crate::presence::events;
use crate::presence::redis::RedisBus;
use crate::presence::tracker::{LocalBus, PRESENCE};
use crate::{chat, http};

/// How long to wait for Redis at start-up before refusing to start.
pub(crate) const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn redis_config(url: &str) -> anyhow::Result<Config> {
    let mut cfg = Config::from_url(url)
        .map_err(|e| anyhow::anyhow!("redis.url (SWITCHBOARD_REDIS_URL): {e}"))?;
    // fred does not read the protocol from the URL; socketioxide-redis needs RESP3.
    cfg.version = RespVersion::RESP3;
    Ok(cfg)
}

/// The node id: configured, else the host name, else a random one.
pub fn node_id(config: &DataplaneConfig) -> String {
    config.node_id.clone().unwrap_or_else(|| {
        hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| {
                (1..=64).contains(&h.len())
                    && h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            })
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
    })
}

/// Run a node on `listener` until `shutdown` completes. `config` must be validated.
pub async fn serve(
    listener: TcpListener,
    config: DataplaneConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let verifier = Verifier::new(&config.jwt).map_err(anyhow::Error::msg)?;
    let node = node_id(&config);
    let base = |app: &App| {
        SocketIo::builder()
            .with_state(app.clone())
            .max_payload(app.config.limits.max_payload_bytes)
            .ws_max_message_size(app.config.limits.max_payload_bytes as usize)
            .ws_max_frame_size(app.config.limits.max_payload_bytes as usize)
    };
    let (app, router) = match config.redis.url.clone() {
        None => {
            let app = App::new(
                config,
                node,
                verifier,
                Stores::memory(),
                Arc::new(LocalBus::default()),
                None,
            );
            let (layer, io) = base(&app).build_layer();
            io.ns(CHAT, chat::on_connect.with(chat::admit));
            io.ns(PRESENCE, events::on_connect.with(events::admit));
            io.ns(NOTIFICATIONS, notify::on_connect.with(notify::admit));
            let router = finish(&app, io, layer);
            (app, router)
        }
        Some(url) => {
            let cfg = redis_config(&url)?;
            let client = Builder::from_config(cfg.clone())
                .build()
                .context("redis.url (SWITCHBOARD_REDIS_URL)")?;
            tokio::time::timeout(REDIS_CONNECT_TIMEOUT, client.init())
                .await
                .map_err(|_| anyhow::anyhow!("redis.url (SWITCHBOARD_REDIS_URL): no answer from {url} within {REDIS_CONNECT_TIMEOUT:?}"))?
                .with_context(|| format!("redis.url (SWITCHBOARD_REDIS_URL): cannot connect to {url}"))?;
            let sub = Builder::from_config(cfg.clone())
                .build_subscriber_client()
                .context("redis subscriber")?;
            let bus_sub = Builder::from_config(cfg)
                .build_subscriber_client()
                .context("redis subscriber")?;
            let bus = tokio::time::timeout(
                REDIS_CONNECT_TIMEOUT,
                RedisBus::start(client.clone(), bus_sub),
            )
            .await
            .map_err(|_| anyhow::anyhow!("redis.url: presence subscriber did not connect"))?
            .map_err(|e| anyhow::anyhow!("redis.url: presence subscriber: {e}"))?;
            let ctr =
                tokio::time::timeout(REDIS_CONNECT_TIMEOUT, RedisAdapterCtr::new_with_fred(sub))
                    .await
                    .map_err(|_| anyhow::anyhow!("redis.url: subscriber did not connect"))?
                    .context("redis.url: subscriber")?;
            let app = App::new(
                config,
                node,
                verifier,
                Stores::redis(&client),
                Arc::new(bus),
                Some(client),
            );
            let (layer, io) = base(&app).with_adapter::<FredAdapter<_>>(ctr).build_layer();
            io.ns(CHAT, chat::on_connect.with(chat::admit))
                .await
                .map_err(|e| anyhow::anyhow!("socket.io redis adapter: {e}"))?;
            io.ns(PRESENCE, events::on_connect.with(events::admit))
                .await
                .map_err(|e| anyhow::anyhow!("socket.io redis adapter: {e}"))?;
            io.ns(NOTIFICATIONS, notify::on_connect.with(notify::admit))
                .await
                .map_err(|e| anyhow::anyhow!("socket.io redis adapter: {e}"))?;
            let router = finish(&app, io, layer);
            (app, router)
        }
    };
    app.set_intake(crate::worker::intake(&app).map_err(anyhow::Error::msg)?);
    tracing::info!(addr = %listener.local_addr()?, "switchboard listening");
    // Small Socket.IO frames (an ack, then an update) must not wait for Nagle.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serve")?;
    app.presence.shutdown().await;
    Ok(())
}

fn finish<A: Adapter>(
    app: &App,
    io: SocketIo<A>,
    layer: socketioxide::layer::SocketIoLayer<A>,
) -> axum::Router {
    app.set_hub(Arc::new(io));
    app.presence.spawn();
    http::router(app.clone()).layer(layer)
}
