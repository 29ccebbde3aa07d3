//! A slow consumer (issue 14, frame fuzz case 964 369): a long-polling session that
//! stops polling while other clients fill a room it is in. Its send buffer (Engine.IO's
//! `max_buffer_size`, 128 packets) fills; a request it sends then must still get its
//! typed ack, or its session must be closed at transport level (so the official client
//! reconnects and catches up with `sync:get` / `message:history`). Never silence. The
//! same for a WebSocket client that stops reading. Both fail without the close (the
//! polling one sees the first 128 broadcasts, then nothing).

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::frames::{Ws, open_polling, open_ws};
use crate::support::*;

/// Broadcasts sent while the slow session does not poll: well past the 128-packet buffer.
const FLOOD: usize = 300;

/// A WebSocket client that stops reading first fills the TCP buffers (the node's send
/// buffer grows to 4 MiB here): its flood is of large messages.
const WS_BODY: usize = 60_000;

/// How long the slow session waits for its ack or its end once it polls again.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// How a resumed slow session ended up.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The ack of the request, with its payload.
    Acked(Value),
    /// The node closed the Engine.IO session: how the poll said so (the close packet, or
    /// 400 for a session it no longer knows).
    Closed(&'static str),
}

/// Poll `base` until the ack `id` on `ns` arrives or the session is closed; panics on
/// silence. Counts the `message:new` events seen on the way.
async fn poll_for(http: &reqwest::Client, base: &str, ns: &str, id: u64) -> (Outcome, usize) {
    let ack_prefix = format!("43{ns},{id}");
    let deadline = Instant::now() + ANSWER_WITHIN;
    let mut seen = 0;
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let res = match http.get(base).timeout(left).send().await {
            Ok(res) => res,
            Err(e) if e.is_timeout() => break,
            Err(e) => panic!("poll: {e}"),
        };
        if res.status() == reqwest::StatusCode::BAD_REQUEST {
            return (Outcome::Closed("400"), seen);
        }
        assert!(res.status().is_success(), "poll answered {}", res.status());
        let body = res.text().await.expect("poll body");
        for p in body.split('\x1e') {
            if p == "1" {
                return (Outcome::Closed("close packet"), seen);
            } else if p == "2" {
                http.post(base).body("3").send().await.expect("pong");
            } else if p.contains("\"message:new\"") {
                seen += 1;
            } else if let Some(rest) = p.strip_prefix(&ack_prefix) {
                let ack: Value = serde_json::from_str(rest).expect("ack payload");
                return (Outcome::Acked(ack[0].clone()), seen);
            }
        }
    }
    panic!(
        "no ack for request {id} on {ns} and no close within {ANSWER_WITHIN:?} \
         ({seen} message:new seen): silence"
    );
}

/// A node, a room `busy` with a flooder and a reader who keeps up, and the same user ids
/// in another tenant, which must neither be sent anything nor be closed.
struct Scene {
    node: Node,
    slow_token: String,
    flooder: Client,
    reader: Client,
    bystander: Client,
    other_owner: Client,
}

impl Scene {
    async fn new() -> Scene {
        let mut cfg = mk_config();
        lift_limits(&mut cfg);
        cfg.chat.max_message_bytes = WS_BODY;
        let node = start(cfg).await;
        let tenant = unique("slow");
        let room = json!({"room_id": "busy", "visibility": "public"});
        let flooder = user(&node, &tenant, "flooder").await;
        flooder.ok("room:create", room.clone()).await;
        let reader = user(&node, &tenant, "reader").await;
        reader.ok("room:join", json!({"room_id": "busy"})).await;
        let other_tenant = unique("slow-other");
        let bystander = user(&node, &other_tenant, "slow").await;
        let other_owner = user(&node, &other_tenant, "flooder").await;
        other_owner.ok("room:create", room).await;
        bystander.ok("room:join", json!({"room_id": "busy"})).await;
        Scene {
            slow_token: token(&claims(&tenant, "slow")),
            node,
            flooder,
            reader,
            bystander,
            other_owner,
        }
    }

    /// `FLOOD` messages of `len` bytes into `busy`; the reader gets every one.
    async fn flood(&self, len: usize) {
        for i in 0..FLOOD {
            let body = format!("flood {i} {}", "x".repeat(len));
            self.flooder
                .ok("message:send", json!({"room_id": "busy", "body": body}))
                .await;
        }
        for _ in 0..FLOOD {
            self.reader.expect("message:new").await;
        }
    }

    /// Wait until the node has answered `presence:activity` (the answer is counted right
    /// before its ack is sent), so the ack meets the full buffer rather than one the
    /// client has just emptied.
    async fn wait_answered(&self) {
        let answered = "switchboard_events_total{event=\"presence:activity\",outcome=\"ok\"} 1";
        let deadline = Instant::now() + ANSWER_WITHIN;
        while !self.node.metrics().await.contains(answered) {
            assert!(Instant::now() < deadline, "presence:activity never handled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// After the slow session's outcome: a close is counted once; the reader is still
    /// served; the other tenant was sent nothing and is not closed.
    async fn check(&self, outcome: &Outcome) {
        match outcome {
            Outcome::Acked(ack) => assert_eq!(ack["ok"], json!(true), "typed ack: {ack}"),
            Outcome::Closed(_) => assert_eq!(self.node.slow_consumer_closes().await, 1),
        }
        self.reader
            .ok("message:send", json!({"room_id": "busy", "body": "after"}))
            .await;
        assert!(!self.reader.is_closed());
        let leaked = self.bystander.received(Duration::from_millis(300)).await;
        assert!(leaked.is_empty(), "another tenant was sent {leaked:?}");
        assert!(
            !self.bystander.is_closed(),
            "another tenant's session was closed"
        );
        assert!(!self.other_owner.is_closed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_polling_session_gets_its_ack_or_is_closed_never_silence() {
    let scene = Scene::new().await;
    // The slow session: raw long-polling, joined to the room, then it stops polling.
    let http = reqwest::Client::new();
    let base = open_polling(&http, &scene.node, &scene.slow_token).await;
    http.post(&base)
        .body(format!(
            "42/chat,1{}",
            json!(["room:join", {"room_id": "busy"}])
        ))
        .send()
        .await
        .expect("post");
    let (joined, _) = poll_for(&http, &base, "/chat", 1).await;
    assert!(
        matches!(&joined, Outcome::Acked(a) if a["ok"] == json!(true)),
        "joined: {joined:?}"
    );
    scene.flood(0).await;

    // A well-formed request with an ack id; polling again once it is answered.
    http.post(&base)
        .body(r#"42/presence,2["presence:activity",{}]"#)
        .send()
        .await
        .expect("post");
    scene.wait_answered().await;
    let (outcome, seen) = poll_for(&http, &base, "/presence", 2).await;
    if let Outcome::Closed(_) = outcome {
        assert!(seen < FLOOD, "closed although nothing was dropped");
    }
    scene.check(&outcome).await;
    println!("slow consumer (polling): {outcome:?} after {seen} of {FLOOD} broadcasts");
}

/// Read `ws` until the ack `id` on `ns` arrives or the connection ends; panics on silence.
async fn read_for(ws: &mut Ws, ns: &str, id: u64) -> (Outcome, usize) {
    let ack_prefix = format!("43{ns},{id}");
    let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
    let mut seen = 0;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => break,
            Ok(None | Some(Err(_))) => return (Outcome::Closed("connection ended"), seen),
            Ok(Some(Ok(Message::Close(_)))) => return (Outcome::Closed("close frame"), seen),
            Ok(Some(Ok(Message::Text(t)))) => {
                if t.as_str() == "2" {
                    let _ = ws.send(Message::text("3")).await;
                } else if t.contains("\"message:new\"") {
                    seen += 1;
                } else if let Some(rest) = t.strip_prefix(&ack_prefix) {
                    let ack: Value = serde_json::from_str(rest).expect("ack payload");
                    return (Outcome::Acked(ack[0].clone()), seen);
                }
            }
            Ok(Some(Ok(_))) => {}
        }
    }
    panic!(
        "no ack for request {id} on {ns} and no close within {ANSWER_WITHIN:?} \
         ({seen} message:new seen): silence"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_that_stops_reading_gets_its_ack_or_is_closed_never_silence() {
    let scene = Scene::new().await;
    let mut ws = open_ws(&scene.node, &scene.slow_token).await;
    ws.send(Message::text(format!(
        "42/chat,1{}",
        json!(["room:join", {"room_id": "busy"}])
    )))
    .await
    .expect("send");
    let (joined, _) = read_for(&mut ws, "/chat", 1).await;
    assert!(
        matches!(&joined, Outcome::Acked(a) if a["ok"] == json!(true)),
        "joined: {joined:?}"
    );
    // It stops reading: the TCP buffers fill, then the node's send buffer.
    scene.flood(WS_BODY - 16).await;
    ws.send(Message::text(r#"42/presence,2["presence:activity",{}]"#))
        .await
        .expect("send");
    scene.wait_answered().await;
    let (outcome, seen) = read_for(&mut ws, "/presence", 2).await;
    scene.check(&outcome).await;
    println!("slow consumer (WebSocket): {outcome:?} after {seen} of {FLOOD} broadcasts");
}
