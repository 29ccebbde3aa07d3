//! What presence costs in Redis, counted with MONITOR on a private redis-server: a change
//! costs the same with 1 device or 20, a `get-batch` is one round trip however many ids,
//! re-subscribing to ids already held reads nothing, and one tenant's reads never evict
//! another tenant's cache.

use std::time::Duration;

use serde_json::json;
use switchboard_crds::config::{Bucket, DataplaneConfig};

use crate::support::*;

fn mk_private(redis: &PrivateRedis) -> DataplaneConfig {
    let mut c = mk_config();
    c.redis.url = Some(redis.url());
    c.node_id = Some(unique("n"));
    // Generous read budgets: these tests count Redis commands, not rate limits.
    let many = Bucket {
        rate: 10_000.0,
        burst: 10_000,
    };
    c.limits.per_socket.read = many;
    c.limits.per_user.read = many;
    c.limits.per_socket.room = many;
    c.limits.per_user.room = many;
    c
}

#[tokio::test]
async fn a_presence_change_costs_the_same_with_1_or_20_devices() {
    let Some(redis) = PrivateRedis::start().await else {
        return;
    };
    let mut cfg = mk_private(&redis);
    cfg.set("limits.max_connections_per_user", "20").unwrap();
    let node = start(cfg).await;
    let tenant = unique("t");
    let mon = redis.monitor().await;
    let phone = presence_user(&node, &tenant, "alice").await;
    let key = format!("{{{tenant}}}:presence:alice");
    let change = async |status: &str| {
        mon.reset().await;
        phone
            .ok("presence:set-status", json!({ "status": status }))
            .await;
        mon.cost(&key).await
    };
    let one = change("busy").await;
    let mut devices = Vec::new();
    for _ in 1..20 {
        devices.push(presence_user(&node, &tenant, "alice").await);
    }
    let twenty = change("away").await;
    eprintln!("presence change, 1 device: {one:?}");
    eprintln!("presence change, 20 devices: {twenty:?}");
    assert_eq!(
        (twenty.round_trips, twenty.in_scripts, &twenty.names),
        (one.round_trips, one.in_scripts, &one.names),
        "a change runs the same commands with 20 devices"
    );
    assert!(
        twenty.bytes <= one.bytes + 32,
        "a change with 20 devices sent {} bytes, with 1 device {}",
        twenty.bytes,
        one.bytes
    );
    for grows in ["HGETALL", "HVALS", "HKEYS", "DEL"] {
        assert!(
            !twenty.names.iter().any(|n| n == grows),
            "{grows} reads or rewrites every device: {twenty:?}"
        );
    }
    // A device going is counted out.
    devices.pop().unwrap().close().await;
    let watcher = presence_user(&node, &tenant, "watcher").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        let read = watcher
            .ok("presence:get-batch", json!({"user_ids": ["alice"]}))
            .await;
        if read["presences"][0]["devices"] == 19 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{read}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Devices follow limits.max_connections_per_user: the 21st connection is refused
    // (the watcher's is another user's).
    devices.push(presence_user(&node, &tenant, "alice").await);
    match Client::connect_ns(
        &node,
        "/presence",
        Some(json!({ "token": token(&claims(&tenant, "alice")) })),
        None,
    )
    .await
    {
        Err(ConnectError(m)) => assert!(m.starts_with("too_many_connections"), "{m}"),
        Ok(_) => panic!("a 21st connection was admitted"),
    }
    // Another tenant's alice is a different user with no devices.
    let other = presence_user(&node, &unique("t"), "watcher").await;
    assert_eq!(
        other
            .ok("presence:get-batch", json!({"user_ids": ["alice"]}))
            .await["presences"][0]["devices"],
        0
    );
}

#[tokio::test]
async fn get_batch_is_one_round_trip_and_resubscribing_reads_nothing() {
    let Some(redis) = PrivateRedis::start().await else {
        return;
    };
    let mut cfg = mk_private(&redis);
    cfg.set("presence.cache_ttl", "1s").unwrap();
    let node = start(cfg).await;
    let tenant = unique("t");
    let mon = redis.monitor().await;
    let reader = presence_user(&node, &tenant, "reader").await;
    let alice = presence_user(&node, &tenant, "u7").await;
    alice
        .ok("presence:set-status", json!({"status": "busy"}))
        .await;
    let ids: Vec<String> = (0..500).map(|i| format!("u{i}")).collect();
    let key = format!("{{{tenant}}}:presence:u");

    mon.reset().await;
    let got = reader
        .ok("presence:get-batch", json!({ "user_ids": ids }))
        .await;
    let batch = mon.cost(&key).await;
    eprintln!(
        "get-batch of 500 ids: {} round trip(s), {} commands in scripts",
        batch.round_trips, batch.in_scripts
    );
    assert_eq!(batch.round_trips, 1, "one round trip for 500 ids");
    assert_eq!(got["presences"].as_array().unwrap().len(), 500);
    assert_eq!(got["presences"][7]["status"], "busy");

    // Subscribe, let the cache age past its TTL, subscribe again: no store read.
    mon.reset().await;
    reader
        .ok("presence:subscribe", json!({ "user_ids": ids }))
        .await;
    assert_eq!(
        mon.cost(&key).await.round_trips,
        0,
        "the get-batch just cached them"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // An update while subscribed keeps the followed entry current.
    alice
        .ok("presence:set-status", json!({"status": "away"}))
        .await;
    let update = reader
        .next("presence:update", Duration::from_secs(1))
        .await
        .expect("update");
    assert_eq!(update["presence"]["status"], "away");
    mon.reset().await;
    let again = reader
        .ok("presence:subscribe", json!({ "user_ids": ids }))
        .await;
    let resub = mon.cost(&key).await;
    eprintln!("re-subscribe to 500 held ids past the cache TTL: {resub:?}");
    assert_eq!(resub.round_trips, 0, "re-subscribing read the store");
    assert_eq!(again["presences"][7]["status"], "away");
    assert_eq!(again["presences"].as_array().unwrap().len(), 500);
    // Held and new ids together: only the new ones are read.
    mon.reset().await;
    let mixed = reader
        .ok("presence:subscribe", json!({"user_ids": ["u1", "u900"]}))
        .await;
    let cost = mon.cost(&key).await;
    assert_eq!(cost.round_trips, 1);
    assert_eq!(mixed["presences"][1]["user_id"], "u900");
    let reads = mon.cost(&format!("{{{tenant}}}:presence:u1\"")).await;
    assert_eq!(reads.round_trips, 0, "the held id u1 was read again");
}

#[tokio::test]
async fn one_tenants_reads_never_evict_another_tenants_cache() {
    let Some(redis) = PrivateRedis::start().await else {
        return;
    };
    let node = start(mk_private(&redis)).await;
    let (victim, flood) = (unique("victim"), unique("flood"));
    let bob = presence_user(&node, &victim, "bob").await;
    let reader = presence_user(&node, &victim, "reader").await;
    bob.ok("presence:set-status", json!({"status": "busy"}))
        .await;
    reader
        .ok("presence:get-batch", json!({"user_ids": ["bob"]}))
        .await;
    // The flooding tenant reads 100,000 distinct ids (what filled the whole node's cache).
    let flooder = presence_user(&node, &flood, "f").await;
    for round in 0..100 {
        let ids: Vec<String> = (0..1000).map(|i| format!("x{round}-{i}")).collect();
        flooder
            .ok("presence:get-batch", json!({ "user_ids": ids }))
            .await;
    }
    let mon = redis.monitor().await;
    mon.reset().await;
    let read = reader
        .ok("presence:get-batch", json!({"user_ids": ["bob"]}))
        .await;
    assert_eq!(read["presences"][0]["status"], "busy");
    let cost = mon.cost(&format!("{{{victim}}}:presence:bob")).await;
    assert_eq!(
        cost.round_trips, 0,
        "another tenant's reads evicted bob's cached presence"
    );
}
