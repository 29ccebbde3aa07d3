//! The tenant wall over every /chat event: the same ids in another tenant are another world.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// Every /chat request event with a payload aimed at room `r`.
pub fn every_event(room: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("room:join", json!({"room_id": room})),
        ("room:leave", json!({"room_id": room})),
        (
            "room:invite",
            json!({"room_id": room, "user_ids": ["alice"]}),
        ),
        ("room:members", json!({"room_id": room})),
        ("message:send", json!({"room_id": room, "body": "leak?"})),
        ("message:history", json!({"room_id": room})),
        (
            "message:delivered",
            json!({"room_id": room, "up_to_seq": 1}),
        ),
        ("receipt:read", json!({"room_id": room, "up_to_seq": 1})),
        (
            "receipt:batch",
            json!({"receipts": [{"room_id": room, "up_to_seq": 1, "kind": "read"}]}),
        ),
        ("unread:get", json!({"room_ids": [room]})),
        ("typing:start", json!({"room_id": room})),
        ("typing:stop", json!({"room_id": room})),
        ("typing:get-aggregated", json!({"room_id": room})),
        (
            "message:edit",
            json!({"room_id": room, "seq": 1, "body": "mine"}),
        ),
        ("message:delete", json!({"room_id": room, "seq": 1})),
        (
            "message:react",
            json!({"room_id": room, "seq": 1, "emoji": "👍", "on": true}),
        ),
        ("message:thread", json!({"room_id": room, "root_seq": 1})),
        (
            "room:set-role",
            json!({"room_id": room, "user_id": "alice", "role": "moderator"}),
        ),
        ("room:kick", json!({"room_id": room, "user_id": "alice"})),
        ("room:ban", json!({"room_id": room, "user_id": "alice"})),
        ("room:unban", json!({"room_id": room, "user_id": "alice"})),
        ("room:mute", json!({"room_id": room, "user_id": "alice"})),
        (
            "room:set-slow-mode",
            json!({"room_id": room, "interval_s": 5}),
        ),
        ("room:delete", json!({"room_id": room})),
    ]
}

/// Events that answer about the caller's own rooms (no room id to be refused): another
/// tenant's user gets an empty answer.
pub fn own_rooms_events() -> Vec<(&'static str, Value)> {
    vec![
        ("unread:get", json!({})),
        ("sync:get", json!({})),
        ("sync:get", json!({"cursor": "s0", "limit": 100})),
    ]
}

#[tokio::test]
async fn no_chat_event_crosses_tenants() {
    let node = start(mk_config()).await;
    let alice = user(&node, "acme", "alice").await;
    alice
        .ok(
            "room:create",
            json!({"room_id": "shared-name", "visibility": "public"}),
        )
        .await;
    alice
        .ok(
            "message:send",
            json!({"room_id": "shared-name", "body": "acme only"}),
        )
        .await;

    // Same user id, other tenant: acme's room does not exist for them.
    let intruder = user(&node, "globex", "alice").await;
    for (event, payload) in every_event("shared-name") {
        let code = intruder.err(event, payload.clone()).await;
        assert!(
            ["not_found", "forbidden"].contains(&code.as_str()),
            "{event} {payload} → {code}"
        );
    }
    // Nothing of acme's in the intruder's own view of their rooms.
    for (event, payload) in own_rooms_events() {
        let data = intruder.ok(event, payload.clone()).await;
        let empty = match event {
            "unread:get" => data["counts"] == json!({}),
            _ => data["rooms"] == json!([]) && data["more"] == false,
        };
        assert!(empty, "{event} {payload} → {data}");
    }
    assert!(
        alice
            .next("message:new", Duration::from_millis(300))
            .await
            .is_none()
    );
    assert!(
        alice
            .next("typing:update", Duration::from_millis(100))
            .await
            .is_none()
    );
    for event in [
        "message:updated",
        "message:reactions",
        "room:deleted",
        "room:kicked",
    ] {
        assert!(
            alice.next(event, Duration::from_millis(50)).await.is_none(),
            "{event}"
        );
    }
    let h = alice
        .ok("message:history", json!({"room_id": "shared-name"}))
        .await;
    assert_eq!(h["messages"][0]["body"], "acme only", "untouched: {h}");
    assert!(h["messages"][0].get("reactions").is_none(), "{h}");

    // Globex makes its own room with the same id: separate seq, history and members.
    intruder
        .ok(
            "room:create",
            json!({"room_id": "shared-name", "visibility": "public"}),
        )
        .await;
    let m = intruder
        .ok(
            "message:send",
            json!({"room_id": "shared-name", "body": "globex only"}),
        )
        .await;
    assert_eq!(m["message"]["seq"], 1);
    assert!(
        alice
            .next("message:new", Duration::from_millis(300))
            .await
            .is_none(),
        "no message crosses"
    );
    let h = alice
        .ok("message:history", json!({"room_id": "shared-name"}))
        .await;
    assert_eq!(h["messages"].as_array().unwrap().len(), 1);
    assert_eq!(h["messages"][0]["body"], "acme only");
    let members = intruder
        .ok("room:members", json!({"room_id": "shared-name"}))
        .await;
    assert_eq!(
        members["members"],
        json!([{"user_id": "alice", "online": true}])
    );
    assert_eq!(
        alice.ok("unread:get", json!({})).await["counts"],
        json!({"shared-name": 0})
    );
}
