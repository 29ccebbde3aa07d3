//! Arbitrary JSON to every event of /chat, /presence and /notifications (and
//! `auth:refresh`; /webrtc's are in `tests/calls`): every answer is a well-formed ack
//! with a protocol error code that blames the request, and the node keeps serving. The
//! event lists are `protocol.rs`'s, checked here against PROTOCOL.md and the handlers.

use serde_json::{Value, json};

use crate::protocol::{self, EVERY_NAMESPACE, NAMESPACES};
use crate::support::*;

#[test]
fn lists_match_the_protocol_and_the_code() {
    let listed = protocol::listed_events();
    let documented = protocol::documented_events();
    assert_eq!(
        listed, documented,
        "tests/chat/protocol.rs and dataplane/PROTOCOL.md's event tables differ"
    );
    let registered = protocol::registered_events();
    let listed_names: std::collections::BTreeSet<String> = NAMESPACES
        .iter()
        .flat_map(|(_, e)| e.iter().map(|e| (*e).to_owned()))
        .collect();
    assert_eq!(
        listed_names, registered,
        "tests/chat/protocol.rs and the events the handlers register differ"
    );
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/PROTOCOL.md"))
        .expect("PROTOCOL.md");
    for e in EVERY_NAMESPACE {
        assert!(text.contains(&format!("`{e} ")), "{e} not in PROTOCOL.md");
    }
}

#[tokio::test]
async fn arbitrary_payloads_get_typed_answers() {
    let mut cfg = mk_config();
    // The fuzzer sends fast; it is not testing the limiter.
    lift_limits(&mut cfg);
    let node = start(cfg).await;
    let client = user(&node, "acme", "fuzzer").await;
    client
        .ok(
            "room:create",
            json!({"room_id": "general", "visibility": "public"}),
        )
        .await;

    let events = protocol::events("/chat");
    let known = vec![json!("general"), json!("fuzzer"), json!("public"), json!(1)];
    fuzz(
        &client,
        &events,
        arb_payload(protocol::CHAT_KEYS, known),
        400,
    )
    .await;
    // Still serving (the fuzzer may have deleted "general": it owns it).
    client
        .ok(
            "room:create",
            json!({"room_id": "after-fuzz", "visibility": "public"}),
        )
        .await;
    client
        .ok(
            "message:send",
            json!({"room_id": "after-fuzz", "body": "still here"}),
        )
        .await;
    assert_eq!(
        reqwest::get(node.url("/healthz")).await.unwrap().status(),
        200
    );
}

/// Arbitrary payloads to every event of `ns` on a fresh embedded node, then a request
/// that must still work.
async fn fuzz_namespace(ns: &str, known: Vec<Value>) -> (Node, Client) {
    let mut cfg = mk_config();
    lift_limits(&mut cfg);
    let node = start(cfg).await;
    let t = token(&claims(&unique("t"), "fuzzer"));
    let client = Client::connect_ns(&node, ns, Some(json!({ "token": t })), None)
        .await
        .expect("connect");
    fuzz(
        &client,
        &protocol::events(ns),
        arb_payload(protocol::keys(ns), known),
        400,
    )
    .await;
    assert_eq!(
        reqwest::get(node.url("/healthz")).await.unwrap().status(),
        200
    );
    (node, client)
}

#[tokio::test]
async fn arbitrary_presence_payloads_get_typed_answers() {
    let known = vec![
        json!("online"),
        json!("away"),
        json!("busy"),
        json!("offline"),
        json!(["fuzzer", "bob"]),
        json!("fuzzer"),
    ];
    let (_node, client) = fuzz_namespace("/presence", known).await;
    let p = client
        .ok("presence:set-status", json!({"status": "busy"}))
        .await;
    assert_eq!(p["presence"]["status"], "busy", "{p}");
}

#[tokio::test]
async fn arbitrary_notification_payloads_get_typed_answers() {
    let known = vec![
        json!("fcm"),
        json!("apns"),
        json!("22:00"),
        json!("07:00"),
        json!("Europe/Paris"),
        json!("high"),
        json!("urgent"),
        json!("all"),
        json!("a-device-token-of-some-length-0123456789"),
    ];
    let (_node, client) = fuzz_namespace("/notifications", known).await;
    let d = client
        .ok(
            "notification:register-device",
            json!({"platform": "fcm", "token": "still-serving-token-0123456789"}),
        )
        .await;
    assert!(d.get("device").is_some(), "{d}");
}
