//! A slow consumer (issue 14, frame fuzz case 964 369): a long-polling session that
//! stops polling while other clients fill a room it is in. Its send buffer (Engine.IO's
//! `max_buffer_size`, 128 packets) fills; a request it sends then must still get its
//! typed ack, or its session must be closed at transport level (so the official client
//! reconnects and catches up with `sync:get` / `message:history`). Never silence.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::frames::open_polling;
use crate::support::*;

/// Broadcasts sent while the slow session does not poll: well past the 128-packet buffer.
const FLOOD: usize = 300;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_polling_session_gets_its_ack_or_is_closed_never_silence() {
    let mut cfg = mk_config();
    lift_limits(&mut cfg);
    let node = start(cfg).await;
    let tenant = unique("slow");
    let slow_token = token(&claims(&tenant, "slow"));

    // The flooder's room, which the slow session joins; a reader who keeps up; the same
    // user id in another tenant, which must neither be sent anything nor be closed.
    let flooder = user(&node, &tenant, "flooder").await;
    flooder
        .ok(
            "room:create",
            json!({"room_id": "busy", "visibility": "public"}),
        )
        .await;
    let reader = user(&node, &tenant, "reader").await;
    reader.ok("room:join", json!({"room_id": "busy"})).await;
    let other_tenant = unique("slow-other");
    let bystander = user(&node, &other_tenant, "slow").await;
    let other_owner = user(&node, &other_tenant, "flooder").await;
    other_owner
        .ok(
            "room:create",
            json!({"room_id": "busy", "visibility": "public"}),
        )
        .await;
    bystander.ok("room:join", json!({"room_id": "busy"})).await;

    // The slow session: raw long-polling, joined to the room, then it stops polling.
    let http = reqwest::Client::new();
    let base = open_polling(&http, &node, &slow_token).await;
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

    for i in 0..FLOOD {
        flooder
            .ok(
                "message:send",
                json!({"room_id": "busy", "body": format!("flood {i}")}),
            )
            .await;
    }
    // The reader who keeps polling got every one of them.
    for _ in 0..FLOOD {
        reader.expect("message:new").await;
    }

    // A well-formed request with an ack id; polling again only once the node has
    // answered it (the answer is counted right before the ack is sent), so the ack meets
    // the full buffer rather than one a poll has just emptied.
    http.post(&base)
        .body(r#"42/presence,2["presence:activity",{}]"#)
        .send()
        .await
        .expect("post");
    let answered = "switchboard_events_total{event=\"presence:activity\",outcome=\"ok\"} 1";
    let deadline = Instant::now() + ANSWER_WITHIN;
    while !node.metrics().await.contains(answered) {
        assert!(Instant::now() < deadline, "presence:activity never handled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (outcome, seen) = poll_for(&http, &base, "/presence", 2).await;
    match &outcome {
        Outcome::Acked(ack) => assert_eq!(ack["ok"], json!(true), "typed ack: {ack}"),
        Outcome::Closed(_) => {
            assert!(seen < FLOOD, "closed although nothing was dropped");
            assert_eq!(node.slow_consumer_closes().await, 1, "counted once");
        }
    }

    // The others: the reader still served, the other tenant sent nothing and not closed.
    reader
        .ok("message:send", json!({"room_id": "busy", "body": "after"}))
        .await;
    assert!(!reader.is_closed());
    let leaked = bystander.received(Duration::from_millis(300)).await;
    assert!(leaked.is_empty(), "another tenant was sent {leaked:?}");
    assert!(
        !bystander.is_closed(),
        "another tenant's session was closed"
    );
    assert!(!other_owner.is_closed());
    println!("slow consumer: {outcome:?} after {seen} of {FLOOD} broadcasts");
}
