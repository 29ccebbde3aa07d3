//! Two nodes sharing the real Redis from tests/env.

use std::time::Duration;

use serde_json::json;
use switchboard_dataplane::auth::Claims;

use crate::support::*;

/// `n` nodes sharing the test Redis.
async fn redis_nodes(n: usize) -> Option<Vec<Node>> {
    let url = redis_url()?;
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = mk_config();
        c.redis.url = Some(url.clone());
        c.node_id = Some(unique(&format!("node-{i}")));
        nodes.push(start(c).await);
    }
    Some(nodes)
}

async fn two_nodes() -> Option<(Node, Node)> {
    let mut n = redis_nodes(2).await?;
    let b = n.pop()?;
    Some((n.pop()?, b))
}

const NAMESPACES: [&str; 4] = ["/chat", "/presence", "/webrtc", "/notifications"];

/// One socket of `c` on every namespace, spread over `nodes` (namespace i on node i mod n).
async fn everywhere(nodes: &[Node], c: &Claims) -> Vec<Client> {
    let mut out = Vec::new();
    for (i, ns) in NAMESPACES.iter().enumerate() {
        let node = &nodes[i % nodes.len()];
        let auth = json!({ "token": token(c) });
        out.push(
            Client::connect_ns(node, ns, Some(auth), None)
                .await
                .unwrap_or_else(|e| panic!("{ns}: {e:?}")),
        );
    }
    out
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
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

/// A revocation through one node's admin API closes the revoked sockets on every namespace
/// and every node within 1 s, by jti, by session and by user; the same ids in another
/// tenant and another session stay; the revoked token is refused everywhere afterwards.
#[tokio::test]
async fn revocation_kicks_every_namespace_on_three_nodes_within_a_second() {
    let Some(nodes) = redis_nodes(3).await else {
        return;
    };
    for kind in ["jti", "sid", "user_id"] {
        let tenant = unique("t");
        let mut victim = claims(&tenant, "alice");
        victim.sid = Some(unique("login"));
        let mut other_session = claims(&tenant, "alice");
        other_session.sid = Some(unique("login"));
        let other_tenant = claims(&unique("t"), "alice");
        let revoked = everywhere(&nodes, &victim).await;
        let stays_tenant = everywhere(&nodes, &other_tenant).await;
        // A user revocation takes every session; the others take one token or one session.
        let stays_session = if kind == "user_id" {
            vec![]
        } else {
            everywhere(&nodes, &other_session).await
        };
        let body = match kind {
            "jti" => json!({"tenant": tenant, "jti": victim.jti}),
            "sid" => json!({"tenant": tenant, "sid": victim.sid}),
            _ => json!({"tenant": tenant, "user_id": "alice"}),
        };
        let started = tokio::time::Instant::now();
        assert_eq!(revoke(&nodes[1], body).await.status(), 200, "{kind}");
        for (ns, c) in NAMESPACES.iter().zip(&revoked) {
            let left = Duration::from_secs(1).saturating_sub(started.elapsed());
            assert!(
                c.wait_closed(left).await,
                "{kind}: {ns} not closed within 1 s of the revocation"
            );
        }
        eprintln!(
            "revocation by {kind}: 4 namespaces on 3 nodes closed in {:?}",
            started.elapsed()
        );
        for (ns, c) in NAMESPACES
            .iter()
            .zip(&stays_tenant)
            .chain(NAMESPACES.iter().zip(&stays_session))
        {
            assert!(
                !c.wait_closed(Duration::from_millis(200)).await,
                "{kind}: {ns} of another tenant or session was closed"
            );
        }
        for (i, ns) in NAMESPACES.iter().enumerate() {
            let node = &nodes[(i + 1) % nodes.len()];
            match Client::connect_ns(node, ns, Some(json!({"token": token(&victim)})), None).await {
                Err(ConnectError(m)) => assert!(m.starts_with("token_revoked"), "{kind} {ns}: {m}"),
                Ok(_) => panic!("{kind}: the revoked token reconnected on {ns}"),
            }
        }
    }
}
