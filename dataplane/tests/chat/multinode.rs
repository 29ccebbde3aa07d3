//! Two nodes sharing the real Redis from tests/env.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

async fn two_nodes() -> Option<(Node, Node)> {
    let url = redis_url()?;
    let mk = |id: &str| {
        let mut c = mk_config();
        c.redis.url = Some(url.clone());
        c.node_id = Some(id.into());
        c
    };
    Some((start(mk("node-a")).await, start(mk("node-b")).await))
}

#[tokio::test]
async fn messages_membership_history_and_receipts_cross_nodes() {
    let Some((a, b)) = two_nodes().await else {
        return;
    };
    let tenant = unique("t");
    let alice = user(&a, &tenant, "alice").await;
    let bob = user(&b, &tenant, "bob").await;
    alice
        .ok(
            "room:create",
            json!({"room_id": "r", "visibility": "private", "members": ["bob"]}),
        )
        .await;
    // Bob's socket on node B joined through the adapter: he receives at once.
    let sent = alice
        .ok("message:send", json!({"room_id": "r", "body": "from A"}))
        .await;
    assert_eq!(bob.expect("message:new").await["message"], sent["message"]);
    let reply = bob
        .ok("message:send", json!({"room_id": "r", "body": "from B"}))
        .await;
    assert_eq!(reply["message"]["seq"], 2, "one seq per room across nodes");
    assert_eq!(
        alice.expect("message:new").await["message"]["body"],
        "from B"
    );
    let h = bob.ok("message:history", json!({"room_id": "r"})).await;
    assert_eq!(h["messages"].as_array().unwrap().len(), 2);
    bob.ok("receipt:read", json!({"room_id": "r", "up_to_seq": 1}))
        .await;
    assert_eq!(
        alice.expect("receipt:read").await,
        json!({"room_id": "r", "user_id": "bob", "up_to_seq": 2}) // bob's own message (seq 2) moved his pointer
    );
    bob.ok("typing:start", json!({"room_id": "r"})).await;
    assert_eq!(
        alice.expect("typing:aggregated").await["display_text"],
        "Bob is typing..."
    );
    let members = alice.ok("room:members", json!({"room_id": "r"})).await;
    assert_eq!(
        members["members"],
        json!([{"user_id": "alice", "online": true}, {"user_id": "bob", "online": true}])
    );

    // A third user on B joins a public room made on A, and catches up on history.
    alice
        .ok(
            "room:create",
            json!({"room_id": "pub", "visibility": "public"}),
        )
        .await;
    for i in 1..=3 {
        alice
            .ok(
                "message:send",
                json!({"room_id": "pub", "body": format!("{i}")}),
            )
            .await;
    }
    let carol = user(&b, &tenant, "carol").await;
    carol.ok("room:join", json!({"room_id": "pub"})).await;
    let h = carol
        .ok("message:history", json!({"room_id": "pub", "after_seq": 1}))
        .await;
    assert_eq!(
        h["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["body"].as_str().unwrap())
            .collect::<Vec<_>>(),
        vec!["2", "3"]
    );
    alice
        .ok("message:send", json!({"room_id": "pub", "body": "live"}))
        .await;
    assert_eq!(carol.expect("message:new").await["message"]["body"], "live");
    // Unread counts come from the shared store.
    assert_eq!(carol.ok("unread:get", json!({})).await["counts"]["pub"], 4);

    // Another tenant on the same Redis never sees any of it.
    let other = user(&b, &unique("t"), "bob").await;
    assert_eq!(
        other.err("message:history", json!({"room_id": "r"})).await,
        "not_found"
    );
    alice
        .ok("message:send", json!({"room_id": "r", "body": "private"}))
        .await;
    assert!(
        other
            .next("message:new", Duration::from_millis(300))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn revocation_on_one_node_kicks_sockets_on_the_other_within_a_second() {
    let Some((a, b)) = two_nodes().await else {
        return;
    };
    let tenant = unique("t");
    let c = claims(&tenant, "alice");
    let on_b = Client::connect(&b, Some(&token(&c))).await.unwrap();
    let started = tokio::time::Instant::now();
    assert_eq!(
        revoke(&a, json!({"tenant": tenant, "user_id": "alice"}))
            .await
            .status(),
        200
    );
    assert!(
        on_b.wait_closed(Duration::from_secs(1)).await,
        "kicked on the other node within 1s"
    );
    eprintln!("cross-node kick took {:?}", started.elapsed());
    match Client::connect(&b, Some(&token(&c))).await {
        Err(ConnectError(m)) => assert!(m.starts_with("token_revoked"), "{m}"),
        Ok(_) => panic!("revoked token reconnected"),
    }
}
