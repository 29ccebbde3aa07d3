//! Graceful drain against real nodes on 127.0.0.1:0: a node told to shut down answers
//! `/readyz` and new Engine.IO handshakes with 503, tells every client
//! `server:draining {within_ms}`, closes each client's transport (never a namespace
//! disconnect) at its announced time, spread over `server.drain_window`, and exits only
//! after the work in flight is done. Clients: Engine.IO long-polling (tests/chat/support)
//! and WebSocket (tokio-tungstenite), speaking the wire format the official clients do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "chat/support.rs"]
#[allow(dead_code)]
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard_crds::config::DataplaneConfig;
use switchboard_crds::duration::HumanDuration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use support::*;

/// Timing slack on a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(1000);

/// A node whose end the test watches: `serve` returns when the drain is over.
struct Draining {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    served: JoinHandle<anyhow::Result<()>>,
}

impl Draining {
    fn node(&self) -> Node {
        Node::external(self.addr)
    }

    /// Trigger the shutdown (as SIGTERM does) and return when that happened.
    fn shut_down(&mut self) -> Instant {
        let _ = self.stop.take().expect("once").send(());
        Instant::now()
    }
}

async fn start_draining(config: DataplaneConfig) -> Draining {
    config.validate().expect("valid config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let served = tokio::spawn(switchboard_dataplane::serve(listener, config, async move {
        let _ = rx.await;
    }));
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Draining {
                addr,
                stop: Some(tx),
                served,
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("node on {addr} did not come up");
}

fn mk_drain_config(window: Duration) -> DataplaneConfig {
    let mut c = mk_config();
    c.server.drain_window = HumanDuration(window);
    c
}

// === a WebSocket client ===

/// A Socket.IO client on one namespace over a direct WebSocket (`transport=websocket`).
struct WsClient {
    events: mpsc::UnboundedReceiver<(String, Value)>,
    ended: oneshot::Receiver<(&'static str, Instant)>,
}

async fn ws_connect(addr: SocketAddr, ns: &str, token: &str) -> WsClient {
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
    let open = ws.next().await.unwrap().unwrap();
    assert!(open.to_text().unwrap().starts_with("0{"), "{open:?}");
    ws.send(Message::text(format!(
        "40{ns},{}",
        json!({ "token": token })
    )))
    .await
    .unwrap();
    loop {
        let m = ws.next().await.unwrap().unwrap();
        let t = m.to_text().unwrap_or_default();
        if t.starts_with(&format!("40{ns},")) {
            break;
        }
        assert!(!t.starts_with(&format!("44{ns},")), "refused: {t}");
    }
    let (tx, events) = mpsc::unbounded_channel();
    let (end_tx, ended) = oneshot::channel();
    let ns = ns.to_owned();
    tokio::spawn(async move {
        let reason = loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let t = t.as_str();
                    if t == "2" {
                        let _ = ws.send(Message::text("3")).await;
                    } else if t == "1" {
                        break "transport close";
                    } else if t.starts_with(&format!("41{ns}")) {
                        break "io server disconnect";
                    } else if let Some(rest) = t.strip_prefix(&format!("42{ns},")) {
                        let a: Value = serde_json::from_str(rest).unwrap_or(Value::Null);
                        let name = a[0].as_str().unwrap_or_default().to_owned();
                        let _ = tx.send((name, a[1].clone()));
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break "transport close",
                Some(Ok(_)) => {}
            }
        };
        let _ = end_tx.send((reason, Instant::now()));
    });
    WsClient { events, ended }
}

impl WsClient {
    async fn next_event(&mut self, name: &str, within: Duration) -> Option<Value> {
        let deadline = Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some((n, v))) if n == name => return Some(v),
                Ok(Some(_)) => {}
                _ => return None,
            }
        }
    }
}

/// `within_ms` of a `server:draining` payload.
fn within(v: &Value) -> Duration {
    Duration::from_millis(v["within_ms"].as_u64().expect("within_ms"))
}

#[tokio::test]
async fn a_draining_node_refuses_newcomers_and_closes_everyone_over_the_window() {
    let window = Duration::from_millis(2400);
    let mut node = start_draining(mk_drain_config(window)).await;
    let n = node.node();
    // Six sessions: four long-polling (on three namespaces), two WebSocket.
    let mut polling = Vec::new();
    for (i, ns) in ["/chat", "/chat", "/presence", "/notifications"]
        .into_iter()
        .enumerate()
    {
        let t = token(&claims("acme", &format!("p{i}")));
        let c = Client::connect_ns(&n, ns, Some(json!({ "token": t })), None)
            .await
            .expect("polling client");
        polling.push(c);
    }
    let mut ws = Vec::new();
    for (i, ns) in ["/chat", "/webrtc"].into_iter().enumerate() {
        let t = token(&claims("acme", &format!("w{i}")));
        ws.push(ws_connect(n.addr, ns, &t).await);
    }

    let t0 = node.shut_down();
    let http = reqwest::Client::new();
    // At once: not ready, and new connections are refused at the transport level.
    let ready = http.get(n.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let handshake = http
        .get(n.url("/socket.io/?EIO=4&transport=polling"))
        .send()
        .await
        .unwrap();
    assert_eq!(handshake.status(), 503, "a polling handshake is refused");
    assert_eq!(handshake.headers()["retry-after"], "1");
    let body: Value = handshake.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    let post = http
        .post(n.url("/socket.io/?EIO=4&transport=polling"))
        .body("40/chat,")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 503);
    let upgrade = tokio_tungstenite::connect_async(format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket",
        n.addr
    ))
    .await;
    match upgrade {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("a WebSocket handshake without sid must get 503, got {other:?}"),
    }
    assert!(
        t0.elapsed() < window / 2,
        "the refusals came at once, not after the drain"
    );
    // Plain HTTP still answers while the node drains.
    assert_eq!(
        http.get(n.url("/healthz")).send().await.unwrap().status(),
        200
    );

    // Every client hears when its own connection goes, then sees it go at that time,
    // at the transport level.
    let mut closes = Vec::new();
    for c in &polling {
        let notice = c
            .next("server:draining", Duration::from_secs(2))
            .await
            .expect("a polling client gets server:draining");
        assert!(c.wait_closed(window + SLACK * 2).await, "closed");
        let (how, at) = c.closed_how().unwrap();
        assert_eq!(how, "transport close", "never a namespace disconnect");
        closes.push((within(&notice), at - t0));
    }
    for c in &mut ws {
        let notice = c
            .next_event("server:draining", Duration::from_secs(2))
            .await
            .expect("a WebSocket client gets server:draining");
        let (how, at) = tokio::time::timeout(window + SLACK * 2, &mut c.ended)
            .await
            .expect("closed")
            .unwrap();
        assert_eq!(how, "transport close", "never a namespace disconnect");
        closes.push((within(&notice), at - t0));
    }
    for (within_ms, closed_after) in &closes {
        assert!(
            !within_ms.is_zero() && *within_ms <= window,
            "within_ms {within_ms:?} is in (0, window]"
        );
        assert!(
            *closed_after + SLACK >= *within_ms && *closed_after <= *within_ms + SLACK,
            "closed {closed_after:?} after the drain began, announced {within_ms:?}"
        );
    }
    // Spread over the window: one close per window/6, the last at the window's end.
    let mut announced: Vec<Duration> = closes.iter().map(|c| c.0).collect();
    announced.sort();
    let step = window / 6;
    for (i, w) in announced.iter().enumerate() {
        let expected = step * (i as u32 + 1);
        assert!(
            w.abs_diff(expected) <= Duration::from_millis(1),
            "close {i} announced at {w:?}, expected {expected:?}"
        );
    }
    let first = closes.iter().map(|c| c.1).min().unwrap();
    let last = closes.iter().map(|c| c.1).max().unwrap();
    assert!(
        last - first >= window / 2,
        "closes spread over the window, not all at once: {first:?} .. {last:?}"
    );

    // Nothing was in flight: the node exits right after the last close.
    let served = tokio::time::timeout(Duration::from_secs(5), &mut node.served)
        .await
        .expect("serve returns after the drain")
        .unwrap();
    served.expect("a clean exit");
    assert!(t0.elapsed() >= window, "not before the window ended");
}

#[tokio::test]
async fn a_drain_with_no_window_closes_everyone_at_once() {
    let mut node = start_draining(mk_drain_config(Duration::ZERO)).await;
    let n = node.node();
    let a = user(&n, "acme", "alice").await;
    let b = user(&n, "acme", "bob").await;
    let t0 = node.shut_down();
    for c in [&a, &b] {
        let notice = c.expect("server:draining").await;
        assert_eq!(notice["within_ms"], 0);
        assert!(c.wait_closed(SLACK * 2).await);
        assert_eq!(c.closed_how().unwrap().0, "transport close");
    }
    tokio::time::timeout(Duration::from_secs(5), &mut node.served)
        .await
        .expect("serve returns")
        .unwrap()
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(3));
}

/// A request whose ack is still being computed when its client's transport closes is
/// finished before the node exits: Redis writes are held (`CLIENT PAUSE WRITE`) while a
/// client's `notification:set-preferences` runs on the draining node A; A closes the
/// client at once but returns only after the write went through, and the client finds
/// its preferences stored when it comes back, on node B.
#[tokio::test]
async fn a_draining_node_exits_only_after_the_acks_in_flight() {
    use fred::interfaces::ClientLike;
    let Some(url) = redis_url() else { return };
    let mut ca = mk_drain_config(Duration::from_millis(200));
    ca.redis.url = Some(url.clone());
    ca.node_id = Some(format!("drain-a-{}", uuid::Uuid::new_v4().simple()));
    let mut cb = mk_config();
    cb.redis.url = Some(url.clone());
    cb.node_id = Some(format!("drain-b-{}", uuid::Uuid::new_v4().simple()));
    let mut a = start_draining(ca).await;
    let b = support::start(cb).await;
    let tenant = format!("drain{}", uuid::Uuid::new_v4().simple());
    let tok = token(&claims(&tenant, "carol"));
    let auth = json!({ "token": tok });
    let on_a = Client::connect_ns(&a.node(), "/notifications", Some(auth.clone()), None)
        .await
        .unwrap();

    let redis = fred::prelude::Builder::from_config(fred::prelude::Config::from_url(&url).unwrap())
        .build()
        .unwrap();
    redis.init().await.unwrap();
    let pause = Duration::from_millis(1500);
    let paused_at = Instant::now();
    let _: fred::types::Value = redis
        .custom(
            fred::types::CustomCommand::new_static("CLIENT", None, false),
            vec![
                fred::types::Value::from("PAUSE"),
                (pause.as_millis() as i64).into(),
                "WRITE".into(),
            ],
        )
        .await
        .unwrap();
    on_a.req_nowait(
        "notification:set-preferences",
        json!({ "min_priority": "urgent" }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.shut_down();
    assert!(
        on_a.wait_closed(Duration::from_secs(1)).await,
        "closed at once"
    );
    assert_eq!(on_a.closed_how().unwrap().0, "transport close");
    tokio::time::timeout(Duration::from_secs(8), &mut a.served)
        .await
        .expect("serve returns")
        .unwrap()
        .unwrap();
    let exited = paused_at.elapsed();
    assert!(
        exited + Duration::from_millis(100) >= pause,
        "A exited {exited:?} after the pause began, before the write in flight could finish"
    );
    // The handler finished before A was gone: the write is there.
    let on_b = Client::connect_ns(&b, "/notifications", Some(auth), None)
        .await
        .unwrap();
    let p = on_b.ok("notification:get-preferences", json!({})).await;
    assert_eq!(p["preferences"]["min_priority"], "urgent", "{p}");
    let _ = redis.quit().await;
}
