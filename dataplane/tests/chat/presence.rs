//! /presence end to end: statuses, invisibility, subscriptions, idle, nodes, analytics.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

async fn next_status(c: &Client, user: &str, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let u = c.next("presence:update", left).await?;
        if u["presence"]["user_id"] == user {
            return Some(u["presence"].clone());
        }
    }
}

#[tokio::test]
async fn statuses_invisibility_subscriptions_and_tenant_wall() {
    let node = start(mk_config()).await;
    let bob = presence_user(&node, "acme", "bob").await;
    let subs = bob
        .ok("presence:subscribe", json!({"user_ids": ["alice"]}))
        .await;
    assert_eq!(subs["presences"][0]["status"], "offline");

    let alice = presence_user(&node, "acme", "alice").await;
    let p = next_status(&bob, "alice", Duration::from_secs(1))
        .await
        .expect("online update within 1s");
    assert_eq!(
        (p["status"].as_str(), p["devices"].as_u64()),
        (Some("online"), Some(1))
    );

    let set = alice
        .ok(
            "presence:set-status",
            json!({"status": "busy", "message": "in a meeting"}),
        )
        .await;
    assert_eq!(set["presence"]["status"], "busy");
    let p = next_status(&bob, "alice", Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(
        (p["status"].as_str(), p["message"].as_str()),
        (Some("busy"), Some("in a meeting"))
    );
    // A read after the update was delivered is never stale.
    assert_eq!(
        bob.ok("presence:get-batch", json!({"user_ids": ["alice"]}))
            .await["presences"][0]["status"],
        "busy"
    );

    // Invisible: others see offline with no devices; alice keeps working.
    alice
        .ok("presence:set-status", json!({"status": "offline"}))
        .await;
    let p = next_status(&bob, "alice", Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(
        (p["status"].as_str(), p["devices"].as_u64()),
        (Some("offline"), Some(0))
    );
    alice.ok("presence:activity", json!({})).await;
    // Online by hand: automatic again.
    alice
        .ok("presence:set-status", json!({"status": "online"}))
        .await;
    assert_eq!(
        next_status(&bob, "alice", Duration::from_secs(1))
            .await
            .unwrap()["status"],
        "online"
    );

    // Same user id in another tenant: a different person, and no update crosses.
    let intruder = presence_user(&node, "globex", "mallory").await;
    let theirs = intruder
        .ok("presence:subscribe", json!({"user_ids": ["alice"]}))
        .await;
    assert_eq!(
        theirs["presences"][0]["status"], "offline",
        "globex's alice is not acme's alice"
    );
    alice
        .ok("presence:set-status", json!({"status": "away"}))
        .await;
    assert!(
        intruder
            .next("presence:update", Duration::from_millis(400))
            .await
            .is_none(),
        "no update crosses tenants"
    );
    assert_eq!(
        intruder
            .ok("presence:get-batch", json!({"user_ids": ["alice"]}))
            .await["presences"][0]["status"],
        "offline"
    );

    // Bounds and bad input.
    let many: Vec<String> = (0..501).map(|i| format!("u{i}")).collect();
    assert_eq!(
        bob.err("presence:subscribe", json!({"user_ids": many}))
            .await,
        "bad_request"
    );
    let batch: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    assert_eq!(
        bob.err("presence:get-batch", json!({"user_ids": batch}))
            .await,
        "bad_request"
    );
    assert_eq!(
        bob.err("presence:set-status", json!({"status": "sleeping"}))
            .await,
        "bad_request"
    );
    assert_eq!(
        bob.err("presence:subscribe", json!({"user_ids": ["a:b"]}))
            .await,
        "bad_request"
    );

    // Unsubscribed: no more updates.
    bob.ok("presence:unsubscribe", json!({"user_ids": ["alice"]}))
        .await;
    while bob
        .next("presence:update", Duration::from_millis(100))
        .await
        .is_some()
    {}
    alice
        .ok("presence:set-status", json!({"status": "busy"}))
        .await;
    assert!(
        bob.next("presence:update", Duration::from_millis(400))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn idle_makes_away_and_activity_brings_back_online() {
    let mut cfg = mk_config();
    cfg.set("presence.idle_timeout", "1s").unwrap();
    let node = start(cfg).await;
    let bob = presence_user(&node, "acme", "bob").await;
    bob.ok("presence:subscribe", json!({"user_ids": ["alice"]}))
        .await;
    let alice = presence_user(&node, "acme", "alice").await;
    assert_eq!(
        next_status(&bob, "alice", Duration::from_secs(1))
            .await
            .unwrap()["status"],
        "online"
    );
    assert_eq!(
        next_status(&bob, "alice", Duration::from_secs(3))
            .await
            .unwrap()["status"],
        "away"
    );
    // Activity on /chat counts too.
    let chat = user(&node, "acme", "alice").await;
    chat.ok("unread:get", json!({})).await;
    assert_eq!(
        next_status(&bob, "alice", Duration::from_secs(2))
            .await
            .unwrap()["status"],
        "online"
    );
    // A status chosen by hand is not overridden by idleness.
    alice
        .ok("presence:set-status", json!({"status": "busy"}))
        .await;
    assert_eq!(
        next_status(&bob, "alice", Duration::from_secs(1))
            .await
            .unwrap()["status"],
        "busy"
    );
    assert!(
        next_status(&bob, "alice", Duration::from_millis(2500))
            .await
            .is_none_or(|p| p["status"] == "busy")
    );
}

#[tokio::test]
async fn updates_cross_three_nodes_and_analytics_count_sessions() {
    let Some(url) = redis_url() else { return };
    let a = start(redis_cfg(&url, &unique("a"), "15s")).await;
    let b = start(redis_cfg(&url, &unique("b"), "15s")).await;
    let c = start(redis_cfg(&url, &unique("c"), "15s")).await;
    let tenant = unique("t");
    let watcher = presence_user(&c, &tenant, "watcher").await;
    watcher
        .ok("presence:subscribe", json!({"user_ids": ["alice"]}))
        .await;
    let phone = presence_user(&a, &tenant, "alice").await;
    assert_eq!(
        next_status(&watcher, "alice", Duration::from_secs(1))
            .await
            .unwrap()["devices"],
        1
    );
    let laptop = presence_user(&b, &tenant, "alice").await;
    assert_eq!(
        next_status(&watcher, "alice", Duration::from_secs(1))
            .await
            .unwrap()["devices"],
        2
    );
    // Concurrent updates from both devices on two nodes converge on every node.
    let (r1, r2) = tokio::join!(
        phone.req("presence:set-status", json!({"status": "busy"})),
        laptop.req("presence:set-status", json!({"status": "away"}))
    );
    assert_eq!(
        (r1["ok"].clone(), r2["ok"].clone()),
        (json!(true), json!(true))
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let views: Vec<Value> = [&a, &b, &c]
        .iter()
        .map(|n| async {
            presence_user(n, &tenant, "reader")
                .await
                .ok("presence:get-batch", json!({"user_ids": ["alice"]}))
                .await["presences"][0]
                .clone()
        })
        .collect::<futures::future::JoinAll<_>>()
        .await;
    // One of the two writes wins (last writer), everywhere; losing both would leave
    // "online".
    let winner = views[0]["status"].clone();
    assert!(
        winner == "busy" || winner == "away",
        "neither concurrent update landed: {views:?}"
    );
    assert!(views.iter().all(|v| v["status"] == winner), "{views:?}");
    // The subscriber on the third node ends on the same presence: the last update it got
    // is the winner (so it was told of at least one of the two writes).
    let mut last = None;
    while let Some(p) = next_status(&watcher, "alice", Duration::from_millis(300)).await {
        last = Some(p);
    }
    let last = last.expect("the watcher got the concurrent updates");
    assert_eq!(
        last["status"], winner,
        "watcher ended on {last}, reads on {views:?}"
    );
    let admin = reqwest::Client::new()
        .get(a.url(&format!("/admin/v1/tenants/{tenant}/presence/metrics")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let data = &admin["data"];
    assert_eq!(data["online_now"], 3, "{admin}"); // watcher, alice, reader(s) — reader counts once
    assert!(data["today"]["peak"].as_u64().unwrap() >= 3, "{admin}");
    assert_eq!(data["history"].as_array().unwrap().len(), 30);
    let denied = reqwest::Client::new()
        .get(a.url(&format!("/admin/v1/tenants/{tenant}/presence/metrics")))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
}

#[tokio::test]
async fn a_killed_node_takes_its_users_offline_within_two_ttls() {
    let Some(url) = redis_url() else { return };
    let ttl = Duration::from_secs(2);
    let (mut doomed, survivor) = doomed_and_survivor(&url).await;
    let tenant = unique("t");
    let watcher = presence_user(&survivor, &tenant, "watcher").await;
    watcher
        .ok(
            "presence:subscribe",
            json!({"user_ids": ["alice", "carol"]}),
        )
        .await;
    let _alice = presence_user(&doomed.node, &tenant, "alice").await;
    let _carol_a = presence_user(&doomed.node, &tenant, "carol").await;
    let _carol_b = presence_user(&survivor, &tenant, "carol").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    while watcher
        .next("presence:update", Duration::from_millis(50))
        .await
        .is_some()
    {}

    doomed.child.kill().unwrap(); // SIGKILL: no goodbye
    let killed = tokio::time::Instant::now();
    let deadline = killed + ttl * 2 + Duration::from_millis(500);
    let (mut alice, mut carol) = (None, None);
    while alice.is_none() || carol.is_none() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(u) = watcher.next("presence:update", left).await else {
            break;
        };
        let p = u["presence"].clone();
        match p["user_id"].as_str() {
            Some("alice") if p["status"] == "offline" => alice = Some(killed.elapsed()),
            Some("carol") if p["devices"] == 1 => carol = Some(p),
            _ => {}
        }
    }
    let took = alice.expect("alice offline within 2 x TTL of the SIGKILL");
    eprintln!("alice offline {took:?} after SIGKILL (TTL {ttl:?})");
    // Carol had a second device on the survivor: she loses a device, not her presence.
    let carol = carol.expect("carol's device count drops");
    assert_eq!(carol["status"], "online");
    let read = watcher
        .ok(
            "presence:get-batch",
            json!({"user_ids": ["carol", "alice"]}),
        )
        .await;
    assert_eq!(read["presences"][0]["devices"], 1);
    assert_eq!(read["presences"][1]["status"], "offline");
}

#[tokio::test]
async fn revocation_kicks_presence_sockets_and_they_go_offline() {
    let node = start(mk_config()).await;
    let watcher = presence_user(&node, "acme", "watcher").await;
    watcher
        .ok("presence:subscribe", json!({"user_ids": ["alice"]}))
        .await;
    let c = claims("acme", "alice");
    let alice = Client::connect_ns(
        &node,
        "/presence",
        Some(json!({ "token": token(&c) })),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        next_status(&watcher, "alice", Duration::from_secs(1))
            .await
            .unwrap()["status"],
        "online"
    );
    assert_eq!(
        revoke(&node, json!({"tenant": "acme", "jti": c.jti}))
            .await
            .status(),
        200
    );
    assert!(
        alice.wait_closed(Duration::from_secs(1)).await,
        "a /presence socket is kicked too"
    );
    assert_eq!(
        next_status(&watcher, "alice", Duration::from_secs(1))
            .await
            .unwrap()["status"],
        "offline"
    );
    match Client::connect_ns(
        &node,
        "/presence",
        Some(json!({ "token": token(&c) })),
        None,
    )
    .await
    {
        Err(ConnectError(m)) => assert!(m.starts_with("token_revoked"), "{m}"),
        Ok(_) => panic!("revoked token reconnected to /presence"),
    }
}

#[tokio::test]
async fn invisible_users_show_offline_in_room_members() {
    let node = start(mk_config()).await;
    let alice_chat = user(&node, "acme", "alice").await;
    let bob = user(&node, "acme", "bob").await;
    alice_chat
        .ok(
            "room:create",
            json!({"room_id": "r", "visibility": "public", "members": ["bob"]}),
        )
        .await;
    let online = |m: &Value| {
        m["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["user_id"] == "alice")
            .unwrap()["online"]
            .clone()
    };
    assert_eq!(
        online(&bob.ok("room:members", json!({"room_id": "r"})).await),
        true
    );
    let alice = presence_user(&node, "acme", "alice").await;
    alice
        .ok("presence:set-status", json!({"status": "offline"}))
        .await;
    assert_eq!(
        online(&bob.ok("room:members", json!({"room_id": "r"})).await),
        false,
        "invisible hides the online flag"
    );
    alice
        .ok("presence:set-status", json!({"status": "online"}))
        .await;
    assert_eq!(
        online(&bob.ok("room:members", json!({"room_id": "r"})).await),
        true
    );
}
