//! One embedded node: rooms, messages, history, receipts, unread, typing, privacy.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn rooms_messages_history_and_idempotency() {
    let node = start(mk_config()).await;
    let alice = user(&node, "acme", "alice").await;
    let bob = user(&node, "acme", "bob").await;

    let room = alice
        .ok(
            "room:create",
            json!({"room_id": "general", "visibility": "public"}),
        )
        .await;
    assert_eq!(room["room"]["owner_id"], "alice");
    assert_eq!(
        alice
            .err(
                "room:create",
                json!({"room_id": "general", "visibility": "public"})
            )
            .await,
        "conflict"
    );
    bob.ok("room:join", json!({"room_id": "general"})).await;

    let sent = alice.ok("message:send", json!({"room_id": "general", "body": "hi", "client_msg_id": "c1", "meta": {"n": 12345678901234567u64}})).await;
    assert_eq!(sent["message"]["seq"], 1);
    let got = bob.expect("message:new").await;
    assert_eq!(got["message"], sent["message"]);
    assert_eq!(got["message"]["meta"]["n"], 12345678901234567u64);

    let again = alice
        .ok(
            "message:send",
            json!({"room_id": "general", "body": "hi", "client_msg_id": "c1"}),
        )
        .await;
    assert_eq!(again["message"]["id"], sent["message"]["id"]);
    assert_eq!(again["duplicate"], true);
    assert!(
        bob.next("message:new", Duration::from_millis(300))
            .await
            .is_none(),
        "a duplicate must not be re-broadcast"
    );

    let reply = bob
        .ok(
            "message:send",
            json!({"room_id": "general", "body": "yo", "reply_to": 1}),
        )
        .await;
    assert_eq!(reply["message"]["seq"], 2);
    assert_eq!(reply["message"]["reply_to"], 1);
    assert_eq!(
        bob.err(
            "message:send",
            json!({"room_id": "general", "body": "x", "reply_to": 99})
        )
        .await,
        "bad_request"
    );
    for i in 3..=6 {
        let m = alice
            .ok(
                "message:send",
                json!({"room_id": "general", "body": format!("m{i}")}),
            )
            .await;
        assert_eq!(m["message"]["seq"], i);
    }
    let h = bob
        .ok(
            "message:history",
            json!({"room_id": "general", "after_seq": 2, "limit": 3}),
        )
        .await;
    let seqs: Vec<u64> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![3, 4, 5]);
    let h = bob
        .ok(
            "message:history",
            json!({"room_id": "general", "before_seq": 3}),
        )
        .await;
    let seqs: Vec<u64> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2]);
    assert_eq!(
        bob.err(
            "message:history",
            json!({"room_id": "general", "limit": 101})
        )
        .await,
        "bad_request"
    );
    let big = "x".repeat(5000);
    assert_eq!(
        alice
            .err("message:send", json!({"room_id": "general", "body": big}))
            .await,
        "payload_too_large"
    );
}

#[tokio::test]
async fn private_rooms_admit_members_only() {
    let node = start(mk_config()).await;
    let alice = user(&node, "acme", "alice").await;
    let carol = user(&node, "acme", "carol").await;
    alice
        .ok(
            "room:create",
            json!({"room_id": "secret", "visibility": "private"}),
        )
        .await;
    assert_eq!(
        carol.err("room:join", json!({"room_id": "secret"})).await,
        "forbidden"
    );
    assert_eq!(
        carol
            .err("message:send", json!({"room_id": "secret", "body": "x"}))
            .await,
        "forbidden"
    );
    assert_eq!(
        carol
            .err("room:members", json!({"room_id": "secret"}))
            .await,
        "forbidden"
    );
    assert_eq!(
        carol
            .err(
                "room:invite",
                json!({"room_id": "secret", "user_ids": ["carol"]})
            )
            .await,
        "forbidden"
    );
    alice
        .ok(
            "room:invite",
            json!({"room_id": "secret", "user_ids": ["carol", "dave"]}),
        )
        .await;
    // Carol's live socket joined the room with the invite: she receives at once.
    alice
        .ok(
            "message:send",
            json!({"room_id": "secret", "body": "welcome"}),
        )
        .await;
    assert_eq!(
        carol.expect("message:new").await["message"]["body"],
        "welcome"
    );
    let m = alice.ok("room:members", json!({"room_id": "secret"})).await;
    assert_eq!(
        m["members"],
        json!([{"user_id": "alice", "online": true}, {"user_id": "carol", "online": true}, {"user_id": "dave", "online": false}])
    );
    carol.ok("room:leave", json!({"room_id": "secret"})).await;
    assert_eq!(
        carol
            .err("message:history", json!({"room_id": "secret"}))
            .await,
        "forbidden"
    );
    assert_eq!(
        carol.err("room:leave", json!({"room_id": "secret"})).await,
        "not_found"
    );
}

#[tokio::test]
async fn receipts_unread_and_privacy() {
    let node = start(mk_config()).await;
    let alice = user(&node, "acme", "alice").await;
    let bob = user(&node, "acme", "bob").await;
    alice
        .ok(
            "room:create",
            json!({"room_id": "r", "visibility": "public", "members": ["bob"]}),
        )
        .await;
    for i in 0..3 {
        alice
            .ok(
                "message:send",
                json!({"room_id": "r", "body": format!("{i}")}),
            )
            .await;
    }
    assert_eq!(bob.ok("unread:get", json!({})).await["counts"]["r"], 3);
    assert_eq!(
        alice.ok("unread:get", json!({})).await["counts"]["r"],
        0,
        "own messages are read"
    );
    bob.ok("message:delivered", json!({"room_id": "r", "up_to_seq": 3}))
        .await;
    let d = alice.expect("receipt:delivered").await;
    assert_eq!(d, json!({"room_id": "r", "user_id": "bob", "up_to_seq": 3}));
    assert_eq!(
        bob.ok("receipt:read", json!({"room_id": "r", "up_to_seq": 2}))
            .await["unread"],
        1
    );
    assert_eq!(alice.expect("receipt:read").await["up_to_seq"], 2);
    // Pointers never move back; a pointer past the end is clamped.
    assert_eq!(
        bob.ok("receipt:read", json!({"room_id": "r", "up_to_seq": 1}))
            .await["unread"],
        1
    );
    let b = bob
        .ok(
            "receipt:batch",
            json!({"receipts": [{"room_id": "r", "up_to_seq": 99, "kind": "read"}]}),
        )
        .await;
    assert_eq!(b["unread"]["r"], 0);
    assert_eq!(
        bob.err(
            "receipt:batch",
            json!({"receipts": [{"room_id": "nope", "up_to_seq": 1, "kind": "read"}]})
        )
        .await,
        "not_found"
    );

    bob.ok("privacy:set", json!({"read_receipts": false})).await;
    alice
        .ok("message:send", json!({"room_id": "r", "body": "4"}))
        .await;
    // drain anything pending
    while alice
        .next("receipt:read", Duration::from_millis(100))
        .await
        .is_some()
    {}
    assert_eq!(
        bob.ok("receipt:read", json!({"room_id": "r", "up_to_seq": 4}))
            .await["unread"],
        0
    );
    assert!(
        alice
            .next("receipt:read", Duration::from_millis(400))
            .await
            .is_none(),
        "read receipts off: none sent"
    );
}

#[tokio::test]
async fn typing_texts_and_expiry() {
    let mut cfg = mk_config();
    cfg.set("chat.typing_timeout", "1s").unwrap();
    let node = start(cfg).await;
    let names = ["alice", "bob", "carol", "dave"];
    let mut clients = Vec::new();
    for n in names {
        clients.push(user(&node, "acme", n).await);
    }
    clients[0]
        .ok(
            "room:create",
            json!({"room_id": "r", "visibility": "public", "members": ["bob", "carol", "dave"]}),
        )
        .await;
    let watcher = user(&node, "acme", "erin").await;
    watcher.ok("room:join", json!({"room_id": "r"})).await;

    clients[0].ok("typing:start", json!({"room_id": "r"})).await;
    assert_eq!(
        watcher.expect("typing:update").await,
        json!({"room_id": "r", "user_id": "alice", "typing": true})
    );
    assert_eq!(
        watcher.expect("typing:aggregated").await["display_text"],
        "Alice is typing..."
    );
    clients[1].ok("typing:start", json!({"room_id": "r"})).await;
    assert_eq!(
        watcher.expect("typing:aggregated").await["display_text"],
        "Alice and Bob are typing..."
    );
    clients[2].ok("typing:start", json!({"room_id": "r"})).await;
    clients[3].ok("typing:start", json!({"room_id": "r"})).await;
    let agg = watcher
        .ok("typing:get-aggregated", json!({"room_id": "r"}))
        .await;
    assert_eq!(agg["display_text"], "Alice, Bob and 2 others are typing...");
    assert_eq!(agg["user_ids"], json!(["alice", "bob", "carol", "dave"]));
    clients[3].ok("typing:stop", json!({"room_id": "r"})).await;
    // Sending a message ends typing too.
    clients[2]
        .ok("message:send", json!({"room_id": "r", "body": "done"}))
        .await;
    assert_eq!(
        watcher
            .ok("typing:get-aggregated", json!({"room_id": "r"}))
            .await["display_text"],
        "Alice and Bob are typing..."
    );
    // Without a refresh, the indicators expire after the timeout (1s).
    let mut stopped = Vec::new();
    while let Some(u) = watcher
        .next("typing:update", Duration::from_millis(2500))
        .await
    {
        if u["typing"] == false {
            stopped.push(u["user_id"].as_str().unwrap().to_owned());
        }
        if stopped.contains(&"alice".to_owned()) && stopped.contains(&"bob".to_owned()) {
            break;
        }
    }
    assert!(
        stopped.contains(&"alice".into()) && stopped.contains(&"bob".into()),
        "expired: {stopped:?}"
    );
    assert_eq!(
        watcher
            .ok("typing:get-aggregated", json!({"room_id": "r"}))
            .await["display_text"],
        ""
    );
    // Typing indicators off: nothing goes out.
    clients[0]
        .ok("privacy:set", json!({"typing_indicators": false}))
        .await;
    clients[0].ok("typing:start", json!({"room_id": "r"})).await;
    assert!(
        watcher
            .next("typing:update", Duration::from_millis(300))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn health_metrics_and_room_limit() {
    let mut cfg = mk_config();
    cfg.set("limits.max_rooms_per_user", "2").unwrap();
    let node = start(cfg).await;
    let alice = user(&node, "acme", "alice").await;
    alice
        .ok(
            "room:create",
            json!({"room_id": "a", "visibility": "public"}),
        )
        .await;
    alice
        .ok(
            "room:create",
            json!({"room_id": "b", "visibility": "public"}),
        )
        .await;
    assert_eq!(
        alice
            .err(
                "room:create",
                json!({"room_id": "c", "visibility": "public"})
            )
            .await,
        "forbidden"
    );
    alice
        .ok("message:send", json!({"room_id": "a", "body": "hi"}))
        .await;
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(node.url("/readyz")).send().await.unwrap().status(),
        200
    );
    let m = node.metrics().await;
    assert!(
        m.contains("switchboard_connections{socketio_namespace=\"/chat\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("switchboard_events_total{event=\"room:create\",outcome=\"forbidden\"} 1"),
        "{m}"
    );
    assert!(m.contains("switchboard_ack_latency_seconds_bucket"), "{m}");
    // The message fanned out to its room once.
    assert!(
        m.contains(
            "switchboard_broadcasts_total{socketio_namespace=\"/chat\",event=\"message:new\"} 1"
        ),
        "{m}"
    );
}
