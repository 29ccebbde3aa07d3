//! Wiring: build the stores and the Socket.IO server for the configuration, then serve
//! Socket.IO and HTTP on one listener until `shutdown` resolves, then drain
//! ([`crate::drain`]) and exit.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{OriginalUri, Request};
use axum::http::{HeaderMap, HeaderValue, Uri};
use socketioxide::adapter::Adapter;
use socketioxide::handler::ConnectHandler;
use socketioxide::{ParserConfig, SocketIo};
use socketioxide_redis::{FredAdapter, RedisAdapterCtr};
use switchboard_crds::config::DataplaneConfig;
use tokio::net::TcpListener;

use crate::app::{App, Stores};
use crate::auth::Verifier;
use crate::calls::service::{Calls, WEBRTC};
use crate::cors::{self, Cors};
use crate::drain::Sessions;
use crate::drain::transport::{Link, TrackedListener};
use crate::hub::CHAT;
use crate::notifications::{NOTIFICATIONS, events as notify};
use crate::presence::events;
use crate::presence::redis::RedisBus;
use crate::presence::tracker::{LocalBus, PRESENCE};
use crate::redis::{REDIS_CONNECT_TIMEOUT, connect_redis, redis_subscriber};
use crate::{chat, http, webrtc};

/// Bytes each WebSocket reads at once. Every idle socket holds (and touches) this much;
/// chat frames are far smaller, and a larger frame grows its own socket's buffer.
/// engineioxide's default is 4 KiB (see BENCHMARKS.md for the measured difference).
const WS_READ_BUFFER: usize = 1024;

/// Binary attachments one Socket.IO packet may announce. No event of the protocol takes
/// binary data; the bound keeps a client from making a node buffer (and wait up to a
/// minute for) thousands of them. Their total size is bounded by `limits.max_payload_bytes`.
const MAX_ATTACHMENTS: usize = 16;

/// How long the HTTP server may take to finish its last requests once the drain is over.
const HTTP_CLOSE_WAIT: Duration = Duration::from_secs(2);

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

/// Run a node on `listener` until `shutdown` completes, then drain it (see
/// [`crate::drain`]) and return. `config` must be validated. With
/// `server.internal_listen` set, the internal APIs get that address of their own.
pub async fn serve(
    listener: TcpListener,
    config: DataplaneConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let internal = match &config.server.internal_listen {
        Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| {
            format!("server.internal_listen (SWITCHBOARD_INTERNAL_LISTEN): cannot bind {addr}")
        })?),
        None => None,
    };
    serve_split(listener, internal, config, shutdown).await
}

/// [`serve`] with the internal listener given: Socket.IO and the probes on `listener`;
/// `/metrics`, `/admin/*` and `/api/*` on `internal` (and the probes too), or on
/// `listener` when there is none.
pub async fn serve_split(
    listener: TcpListener,
    internal: Option<TcpListener>,
    config: DataplaneConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with(listener, internal, config, |s| s, shutdown).await
}

/// [`serve_split`] with the node's stores passed through `wrap` once built (memory or
/// Redis, as configured): tests wrap them to count calls or to make steps fail.
pub async fn serve_with(
    listener: TcpListener,
    internal: Option<TcpListener>,
    config: DataplaneConfig,
    wrap: impl FnOnce(Stores) -> Stores,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let split = internal.is_some();
    let verifier = Verifier::new(&config.jwt).map_err(anyhow::Error::msg)?;
    let node = node_id(&config);
    let base = |app: &App| {
        SocketIo::builder()
            .with_state(app.clone())
            .max_payload(app.config.limits.max_payload_bytes)
            .ws_max_message_size(app.config.limits.max_payload_bytes as usize)
            .ws_max_frame_size(app.config.limits.max_payload_bytes as usize)
            .ws_read_buffer_size(WS_READ_BUFFER)
            .with_parser(
                ParserConfig::common()
                    .max_incoming_binaries(MAX_ATTACHMENTS)
                    .max_incoming_binary_buf_size(app.config.limits.max_payload_bytes as usize),
            )
    };
    let (app, router, sessions) = match config.redis.url.clone() {
        None => {
            let stores = Stores::memory(&config);
            let app = App::new(
                config,
                node,
                verifier,
                wrap(stores),
                Arc::new(LocalBus::default()),
                None,
            );
            app.set_calls(Calls::build(&app.config, None).await?);
            let (layer, io) = base(&app).build_layer();
            io.ns(CHAT, chat::on_connect.with(chat::admit));
            io.ns(PRESENCE, events::on_connect.with(events::admit));
            io.ns(NOTIFICATIONS, notify::on_connect.with(notify::admit));
            io.ns(WEBRTC, webrtc::on_connect.with(webrtc::admit));
            finish(&app, io, layer, split)
        }
        Some(url) => {
            let (cfg, client) = connect_redis(&url).await?;
            let sub = redis_subscriber(cfg.clone())?;
            let bus_sub = redis_subscriber(cfg)?;
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
            let stores = wrap(Stores::redis(&client, &config));
            let app = App::new(config, node, verifier, stores, Arc::new(bus), Some(client));
            app.set_calls(Calls::build(&app.config, app.redis.as_ref()).await?);
            if let Some(client) = &app.redis {
                crate::redis::spawn_sampler(client.clone(), app.metrics.clone());
            }
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
            io.ns(WEBRTC, webrtc::on_connect.with(webrtc::admit))
                .await
                .map_err(|e| anyhow::anyhow!("socket.io redis adapter: {e}"))?;
            finish(&app, io, layer, split)
        }
    };
    app.set_intake(crate::worker::intake(&app).map_err(anyhow::Error::msg)?);
    tracing::info!(addr = %listener.local_addr()?, "switchboard listening");
    // Every connection can be closed on its own: that is how the drain closes WebSocket
    // transports (drain::transport).
    let listener = TrackedListener::new(listener);
    app.presence.sweep_earlier_life().await;
    if let Some(calls) = app.calls() {
        // Before accepting: a sweep running alongside could take a new connection down.
        calls.sweep_earlier_life(&app.node_id).await;
    }
    let (stop_http, http_stopped) = tokio::sync::watch::channel(false);
    let mut internal_server = match internal {
        Some(l) => {
            tracing::info!(addr = %l.local_addr()?, "internal APIs listening");
            let mut stopped = http_stopped.clone();
            let router =
                http::internal_router(app.clone()).layer(axum::middleware::from_fn_with_state(
                    Cors::new(&app.config.server.cors_allowed_origins),
                    cors::layer,
                ));
            let server = axum::serve(l, router).with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            });
            Some(tokio::spawn(tracing::Instrument::instrument(
                server.into_future(),
                tracing::info_span!("http_internal"),
            )))
        }
        None => None,
    };
    let mut http_stopped = http_stopped;
    let server = axum::serve(
        listener,
        router.clone().into_make_service_with_connect_info::<Link>(),
    )
    .with_graceful_shutdown(async move {
        let _ = http_stopped.wait_for(|s| *s).await;
    });
    let mut server = tokio::spawn(tracing::Instrument::instrument(
        server.into_future(),
        tracing::info_span!("http"),
    ));
    tokio::select! {
        r = &mut server => {
            // The server stopped without being asked: an error.
            r.context("serve")?.context("serve")?;
            anyhow::bail!("serve: the server stopped");
        }
        r = async {
            match internal_server.as_mut() {
                Some(s) => s.await,
                None => std::future::pending().await,
            }
        } => {
            r.context("server.internal_listen")?.context("server.internal_listen")?;
            anyhow::bail!("server.internal_listen: the server stopped");
        }
        () = shutdown => {}
    }
    // The HTTP server keeps serving while the node drains: readiness, the refused
    // handshakes and the last polls of the closing sessions go through it.
    crate::drain::run(&app, sessions.as_ref(), &router).await;
    let _ = stop_http.send(true);
    for (name, server) in std::iter::once(("serve", &mut server)).chain(
        internal_server
            .as_mut()
            .map(|s| ("server.internal_listen", s)),
    ) {
        match tokio::time::timeout(HTTP_CLOSE_WAIT, &mut *server).await {
            Ok(r) => r.context(name)?.context(name)?,
            Err(_) => {
                tracing::warn!(
                    listener = name,
                    "HTTP requests still open after the drain; closing them"
                );
                server.abort();
            }
        }
    }
    app.presence
        .shutdown(app.config.server.reconnect_grace.0)
        .await;
    if let Some(calls) = app.calls() {
        calls.stop();
    }
    Ok(())
}

/// The node's HTTP service (Socket.IO behind the drain's gate, and the plain HTTP
/// routes), and the Socket.IO server as the drain sees it.
fn finish<A: Adapter>(
    app: &App,
    io: SocketIo<A>,
    layer: socketioxide::layer::SocketIoLayer<A>,
    split: bool,
) -> (App, axum::Router, Arc<dyn Sessions>) {
    app.set_hub(Arc::new(io.clone()));
    app.presence.spawn();
    crate::conns::spawn_renewal(
        app.stores.conns.clone(),
        app.leases.clone(),
        app.config.presence.heartbeat_ttl.0,
    );
    if let Some(calls) = app.calls() {
        calls.spawn(app.clone());
    }
    let routes = if split {
        http::public_router
    } else {
        http::router
    };
    let router = routes(app.clone())
        .layer(layer)
        .layer(axum::middleware::from_fn_with_state(
            app.drain.clone(),
            crate::drain::transport::gate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Cors::new(&app.config.server.cors_allowed_origins),
            cors::layer,
        ))
        .layer(axum::middleware::map_request(detach_request_parts));
    app.drain.set_router(router.clone());
    (app.clone(), router, Arc::new(io))
}

/// Give the request its own copies of the URI and header values.
///
/// hyper parses them as slices of the connection's read buffer (8 KiB or more), and
/// Engine.IO keeps the request parts for the whole life of a session, so without this
/// every idle socket pins that buffer (about 7 KiB of RSS per idle connection, measured
/// with `switchboard-bench idle --stage transport`; see BENCHMARKS.md).
async fn detach_request_parts(mut req: Request) -> Request {
    let shared = std::mem::take(req.headers_mut());
    let mut owned = HeaderMap::with_capacity(shared.len());
    let mut name = None;
    // `into_iter` names a header once, then yields its further values with `None`.
    for (next, value) in shared {
        if next.is_some() {
            name = next;
        }
        let Some(name) = &name else { continue };
        // A value hyper accepted is valid here too; keep the shared one if not.
        let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        owned.append(name.clone(), copy);
    }
    *req.headers_mut() = owned;
    // The router has already put a clone of the URI in `OriginalUri`: detach both.
    let detach = |uri: &mut Uri| {
        if let Ok(copy) = Uri::try_from(uri.to_string()) {
            *uri = copy;
        }
    };
    detach(req.uri_mut());
    if let Some(OriginalUri(original)) = req.extensions_mut().get_mut::<OriginalUri>() {
        detach(original);
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use bytes::Bytes;

    fn within(buf: &Bytes, part: &[u8]) -> bool {
        let range = buf.as_ptr_range();
        range.contains(&part.as_ptr())
    }

    #[tokio::test]
    async fn request_parts_stop_sharing_the_read_buffer() {
        // As hyper does: every value a slice of one connection buffer.
        let buf = Bytes::from_static(b"/socket.io/?EIO=4&transport=websocketabc123tokenxyz");
        let uri = Uri::from_maybe_shared(buf.slice(0..37)).unwrap();
        let mut req = Request::new(Body::empty());
        *req.uri_mut() = uri.clone();
        req.extensions_mut().insert(OriginalUri(uri));
        let key = HeaderValue::from_maybe_shared(buf.slice(37..43)).unwrap();
        let mut auth = HeaderValue::from_maybe_shared(buf.slice(43..51)).unwrap();
        auth.set_sensitive(true);
        let h = req.headers_mut();
        h.insert("sec-websocket-key", key.clone());
        h.append("x-multi", key);
        h.append("x-multi", auth.clone());
        h.insert("authorization", auth);

        let req = detach_request_parts(req).await;

        let h = req.headers();
        assert_eq!(h["sec-websocket-key"], "abc123");
        let multi: Vec<_> = h.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["abc123", "tokenxyz"]);
        assert!(h["authorization"].is_sensitive());
        for v in h.values() {
            assert!(
                !within(&buf, v.as_bytes()),
                "header value still in the buffer"
            );
        }
        assert_eq!(req.uri(), "/socket.io/?EIO=4&transport=websocket");
        let OriginalUri(original) = req.extensions().get::<OriginalUri>().unwrap();
        for uri in [req.uri(), original] {
            let pq = uri.path_and_query().unwrap().as_str();
            assert!(!within(&buf, pq.as_bytes()), "URI still in the buffer");
        }
    }
}
