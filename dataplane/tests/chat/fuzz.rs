//! Arbitrary JSON to every /chat event (and `auth:refresh`, on every namespace): every answer is a well-formed ack with a
//! protocol error code, and the node keeps serving.

use serde_json::json;

use crate::support::*;

const EVENTS: &[&str] = &[
    "room:create",
    "room:join",
    "room:leave",
    "room:invite",
    "room:members",
    "message:send",
    "message:history",
    "message:delivered",
    "receipt:read",
    "receipt:batch",
    "unread:get",
    "typing:start",
    "typing:stop",
    "typing:get-aggregated",
    "privacy:set",
    "room:delete",
    "message:edit",
    "message:delete",
    "message:react",
    "message:thread",
    "sync:get",
    "room:set-role",
    "room:kick",
    "room:ban",
    "room:unban",
    "room:mute",
    "room:set-slow-mode",
    "auth:refresh",
];

/// Keys /chat payloads use, so random objects often hit a real field.
const KEYS: &[&str] = &[
    "room_id",
    "body",
    "up_to_seq",
    "visibility",
    "user_ids",
    "receipts",
    "limit",
    "meta",
    "kind",
    "reply_to",
    "seq",
    "emoji",
    "on",
    "thread_root",
    "root_seq",
    "after_seq",
    "user_id",
    "role",
    "reason",
    "until",
    "interval_s",
    "cursor",
    "token",
];

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

    fuzz(&client, EVENTS, arb_payload(KEYS, json!("general")), 400).await;
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
