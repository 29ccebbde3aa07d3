//! Storage bounds seen by a client: history retention by age (history and `sync:get`
//! agree), expiring idempotency keys, rooms per tenant, and a Redis that refuses writes
//! (`maxmemory` with `noeviction`). On one embedded node and on two nodes sharing Redis.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

fn seqs(history: &Value) -> Vec<u64> {
    history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

/// The room's entry in a first `sync:get`.
async fn synced(c: &Client, room: &str) -> Value {
    let page = c.ok("sync:get", json!({})).await;
    page["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["room_id"] == room)
        .cloned()
        .unwrap_or_else(|| panic!("{room} not in {page}"))
}

// === history retention by age ===

/// `chat.history_max_age` = 1s: what aged is gone from `message:history` and from
/// `sync:get`'s `last_message`, on the other node too; newer messages are served.
async fn history_ages(a: &Node, b: &Node) {
    let tenant = unique("t");
    let alice = user(a, &tenant, "alice").await;
    let bob = user(b, &tenant, "bob").await;
    let room = "aging";
    alice
        .ok(
            "room:create",
            json!({"room_id": room, "visibility": "private", "members": ["bob"]}),
        )
        .await;
    for body in ["one", "two"] {
        alice
            .ok("message:send", json!({"room_id": room, "body": body}))
            .await;
    }
    let h = bob.ok("message:history", json!({"room_id": room})).await;
    assert_eq!(seqs(&h), [1, 2]);
    assert_eq!(synced(&bob, room).await["last_message"]["body"], "two");

    tokio::time::sleep(Duration::from_millis(1300)).await;
    let h = bob.ok("message:history", json!({"room_id": room})).await;
    assert_eq!(seqs(&h), Vec::<u64>::new(), "aged messages are not served");
    let h = bob
        .ok("message:history", json!({"room_id": room, "after_seq": 0}))
        .await;
    assert_eq!(seqs(&h), Vec::<u64>::new());
    let s = synced(&bob, room).await;
    assert!(s.get("last_message").is_none(), "sync agrees: {s}");
    assert_eq!(s["last_seq"], 2, "seqs are not reused");
    assert_eq!(
        alice
            .err(
                "message:react",
                json!({"room_id": room, "seq": 1, "emoji": "👍", "on": true}),
            )
            .await,
        "not_found"
    );

    alice
        .ok("message:send", json!({"room_id": room, "body": "three"}))
        .await;
    let h = bob.ok("message:history", json!({"room_id": room})).await;
    assert_eq!(seqs(&h), [3]);
    assert_eq!(synced(&bob, room).await["last_message"]["body"], "three");
}

#[tokio::test]
async fn history_max_age_embedded() {
    let node = start(embedded(&[("chat.history_max_age", "1s")])).await;
    history_ages(&node, &node).await;
}

#[tokio::test]
async fn history_max_age_two_nodes() {
    let Some((a, b)) = redis_pair(&[("chat.history_max_age", "1s")]).await else {
        return;
    };
    history_ages(&a, &b).await;
}

// === idempotency keys expire ===

/// `chat.idempotency_ttl` = 1s: a retry inside it is a duplicate (from either node), one
/// after it is a new message.
async fn idempotency_expires(a: &Node, b: &Node) {
    let tenant = unique("t");
    let alice_a = user(a, &tenant, "alice").await;
    let alice_b = user(b, &tenant, "alice").await;
    alice_a
        .ok(
            "room:create",
            json!({"room_id": "r", "visibility": "public"}),
        )
        .await;
    let send = json!({"room_id": "r", "body": "hi", "client_msg_id": "k1"});
    let first = alice_a.ok("message:send", send.clone()).await;
    assert_eq!(first["duplicate"], false);
    let retry = alice_b.ok("message:send", send.clone()).await;
    assert_eq!(retry["duplicate"], true, "{retry}");
    assert_eq!(retry["message"], first["message"]);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let late = alice_b.ok("message:send", send).await;
    assert_eq!(late["duplicate"], false, "the key expired: {late}");
    assert_eq!(late["message"]["seq"], 2);
}

#[tokio::test]
async fn idempotency_ttl_embedded() {
    let node = start(embedded(&[("chat.idempotency_ttl", "1s")])).await;
    idempotency_expires(&node, &node).await;
}

#[tokio::test]
async fn idempotency_ttl_two_nodes() {
    let Some((a, b)) = redis_pair(&[("chat.idempotency_ttl", "1s")]).await else {
        return;
    };
    idempotency_expires(&a, &b).await;
}

// === rooms per tenant ===

/// `limits.max_rooms_per_tenant` = 3, counted over both nodes: the fourth room is
/// `forbidden` naming the key, another tenant at the same time is not affected, and
/// `room:delete` frees a place.
async fn tenant_room_cap(a: &Node, b: &Node) {
    let full = unique("full");
    let other = unique("other");
    let alice = user(a, &full, "alice").await;
    let carol = user(b, &full, "carol").await;
    let dave = user(b, &other, "dave").await;
    for (c, room) in [(&alice, "r1"), (&alice, "r2"), (&carol, "r3")] {
        c.ok(
            "room:create",
            json!({"room_id": room, "visibility": "public"}),
        )
        .await;
    }
    let r = carol
        .req(
            "room:create",
            json!({"room_id": "r4", "visibility": "public"}),
        )
        .await;
    assert_eq!(r["error"]["code"], "forbidden", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("limits.max_rooms_per_tenant"), "{msg}");
    assert_eq!(
        carol.err("room:join", json!({"room_id": "r4"})).await,
        "not_found",
        "nothing was created"
    );
    // The other tenant is not affected, with the same room ids.
    for room in ["r1", "r2", "r3"] {
        dave.ok(
            "room:create",
            json!({"room_id": room, "visibility": "public"}),
        )
        .await;
    }
    assert_eq!(
        dave.err(
            "room:create",
            json!({"room_id": "r4", "visibility": "public"})
        )
        .await,
        "forbidden"
    );
    // A deletion frees one place, on either node.
    alice.ok("room:delete", json!({"room_id": "r1"})).await;
    carol
        .ok(
            "room:create",
            json!({"room_id": "r4", "visibility": "public"}),
        )
        .await;
    assert_eq!(
        alice
            .err(
                "room:create",
                json!({"room_id": "r5", "visibility": "public"})
            )
            .await,
        "forbidden"
    );
    let metrics = a.metrics().await;
    assert!(
        metrics.contains("switchboard_storage_bounds_reached_total{kind=\"rooms_per_tenant\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn rooms_per_tenant_embedded() {
    let node = start(embedded(&[("limits.max_rooms_per_tenant", "3")])).await;
    tenant_room_cap(&node, &node).await;
}

#[tokio::test]
async fn rooms_per_tenant_two_nodes() {
    let Some((a, b)) = redis_pair(&[("limits.max_rooms_per_tenant", "3")]).await else {
        return;
    };
    tenant_room_cap(&a, &b).await;
}

// === Redis refusing writes ===

/// Fill Redis with filler keys until it refuses a write (OOM): big values first, then
/// small ones, so what fills it is data, not the refused command's own arguments (a
/// command's arguments count toward used memory while it runs). Returns the keys written.
async fn fill(client: &fred::clients::Client) -> Vec<String> {
    use fred::interfaces::KeysInterface;
    let mut keys = Vec::new();
    for size in [256 * 1024, 1024, 64] {
        let blob = "x".repeat(size);
        loop {
            let key = format!("filler:{}", keys.len());
            let r: Result<(), _> = client.set(&key, blob.as_str(), None, None, false).await;
            match r {
                Ok(()) => keys.push(key),
                Err(e) => {
                    assert!(e.to_string().contains("OOM"), "{e}");
                    break;
                }
            }
            assert!(keys.len() < 1_000_000, "Redis never refused a write");
        }
    }
    keys
}

/// With Redis at `maxmemory` under `noeviction`, writes get `unavailable` (never
/// `internal`, never a hang), reads still answer, and nothing acked before is lost; once
/// memory is freed, writes work again.
#[tokio::test]
async fn redis_out_of_memory_is_unavailable_and_loses_nothing() {
    // A private redis-server with a tiny `maxmemory` and `noeviction`.
    let Some(redis) =
        PrivateRedis::start_with(&["--maxmemory", "16mb", "--maxmemory-policy", "noeviction"])
            .await
    else {
        return; // no redis-server (fails under CI in PrivateRedis::start_with)
    };
    let mut config = mk_config();
    config.redis.url = Some(redis.url());
    config.node_id = Some(unique("oom"));
    let node = start(config).await;
    let tenant = unique("t");
    let alice = user(&node, &tenant, "alice").await;
    let bob = user(&node, &tenant, "bob").await;
    alice
        .ok(
            "room:create",
            json!({"room_id": "r", "visibility": "private", "members": ["bob"]}),
        )
        .await;
    for i in 1..=5 {
        alice
            .ok(
                "message:send",
                json!({"room_id": "r", "body": format!("acked {i}"), "client_msg_id": format!("c{i}")}),
            )
            .await;
    }

    let filler = redis.client().await;
    let keys = fill(&filler).await;
    for (event, data) in [
        (
            "message:send",
            json!({"room_id": "r", "body": "refused", "client_msg_id": "c6"}),
        ),
        (
            "room:create",
            json!({"room_id": "r2", "visibility": "public"}),
        ),
        (
            "room:invite",
            json!({"room_id": "r", "user_ids": ["carol"]}),
        ),
    ] {
        let r = tokio::time::timeout(Duration::from_secs(5), alice.req(event, data.clone()))
            .await
            .unwrap_or_else(|_| panic!("{event} hung with Redis out of memory"));
        assert_eq!(r["error"]["code"], "unavailable", "{event} {data} → {r}");
    }
    // Reads still answer, with everything acked.
    let h = bob.ok("message:history", json!({"room_id": "r"})).await;
    assert_eq!(seqs(&h), [1, 2, 3, 4, 5]);
    assert_eq!(
        bob.err("message:history", json!({"room_id": "r2"})).await,
        "not_found"
    );

    // Memory back: writes work again, and the refused send was never stored.
    for chunk in keys.chunks(1000) {
        use fred::interfaces::KeysInterface;
        let _: i64 = filler.del(chunk.to_vec()).await.expect("del");
    }
    let again = alice
        .ok(
            "message:send",
            json!({"room_id": "r", "body": "refused", "client_msg_id": "c6"}),
        )
        .await;
    assert_eq!(again["duplicate"], false);
    assert_eq!(again["message"]["seq"], 6);
    let h = bob.ok("message:history", json!({"room_id": "r"})).await;
    assert_eq!(seqs(&h), [1, 2, 3, 4, 5, 6]);
    let bodies: Vec<&str> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(
        bodies,
        [
            "acked 1", "acked 2", "acked 3", "acked 4", "acked 5", "refused"
        ]
    );
}

// === nobody uses up another user's room quota ===

/// `limits.max_rooms_per_user` = 3. Attackers put the victim in rooms until others may
/// add them to no more; the victim can still create and join rooms of their own (on
/// main, their own `room:create` was `forbidden` once others had added them to 3 rooms).
/// With `privacy:set {room_adds: "nobody"}` adds are declined and the victim hears
/// nothing of those rooms. The same user id in another tenant is not affected.
async fn quota_holds(a: &Node, b: &Node) {
    let tenant = unique("t");
    let victim = user(a, &tenant, "victim").await;
    let mut added = Vec::new();
    for n in 0..2 {
        let attacker = user(b, &tenant, &format!("attacker{n}")).await;
        for i in 0..3 {
            let room = format!("spam-{n}-{i}");
            let r = attacker
                .ok(
                    "room:create",
                    json!({"room_id": room, "visibility": "private", "members": ["victim"]}),
                )
                .await;
            if r["skipped"].as_array().unwrap().is_empty() {
                added.push(room);
            }
        }
    }
    assert_eq!(
        added.len(),
        3,
        "others add the victim to at most 3 rooms: {added:?}"
    );
    // The victim's own rooms are unaffected.
    for i in 0..3 {
        victim
            .ok(
                "room:create",
                json!({"room_id": format!("mine-{i}"), "visibility": "public"}),
            )
            .await;
    }
    assert_eq!(
        victim
            .err(
                "room:create",
                json!({"room_id": "mine-3", "visibility": "public"})
            )
            .await,
        "forbidden",
        "the victim's own limit still holds"
    );
    // Leaving an added room frees a place for adds, not for the victim's own rooms.
    victim.ok("room:leave", json!({"room_id": added[0]})).await;
    assert_eq!(
        victim
            .err(
                "room:create",
                json!({"room_id": "mine-3", "visibility": "public"})
            )
            .await,
        "forbidden"
    );

    // Adds declined by privacy: nothing of the room reaches the victim.
    let p = victim
        .ok("privacy:set", json!({"room_adds": "nobody"}))
        .await;
    assert_eq!(p["privacy"]["room_adds"], "nobody");
    assert_eq!(
        victim
            .err("privacy:set", json!({"room_adds": "everyone"}))
            .await,
        "bad_request"
    );
    let attacker = user(b, &tenant, "attacker9").await;
    let r = attacker
        .ok(
            "room:create",
            json!({"room_id": "declined", "visibility": "private", "members": ["victim"]}),
        )
        .await;
    assert_eq!(r["declined"], json!(["victim"]), "{r}");
    assert_eq!(r["skipped"], json!(["victim"]), "{r}");
    let r = attacker
        .ok(
            "room:invite",
            json!({"room_id": "declined", "user_ids": ["victim"]}),
        )
        .await;
    assert_eq!(r["declined"], json!(["victim"]), "{r}");
    attacker
        .ok(
            "message:send",
            json!({"room_id": "declined", "body": "spam"}),
        )
        .await;
    assert!(
        victim
            .next("message:new", Duration::from_millis(500))
            .await
            .is_none(),
        "a declined add brings no messages"
    );
    let rooms = victim.ok("unread:get", json!({})).await;
    assert!(rooms["counts"].get("declined").is_none(), "{rooms}");
    // Back to anyone: adds work again.
    victim
        .ok("privacy:set", json!({"room_adds": "anyone"}))
        .await;
    let r = attacker
        .ok(
            "room:invite",
            json!({"room_id": "declined", "user_ids": ["victim"]}),
        )
        .await;
    assert_eq!(r["skipped"], json!([]), "{r}");

    // Another tenant's user with the same id has their own limits.
    let elsewhere = user(a, &unique("t"), "victim").await;
    elsewhere
        .ok(
            "room:create",
            json!({"room_id": "mine-0", "visibility": "public"}),
        )
        .await;
}

#[tokio::test]
async fn others_cannot_use_up_a_users_rooms_embedded() {
    let mut c = embedded(&[("limits.max_rooms_per_user", "3")]);
    lift_limits(&mut c);
    let node = start(c).await;
    quota_holds(&node, &node).await;
}

#[tokio::test]
async fn others_cannot_use_up_a_users_rooms_two_nodes() {
    let Some((a, b)) = redis_pair(&[("limits.max_rooms_per_user", "3")]).await else {
        return;
    };
    quota_holds(&a, &b).await;
}
