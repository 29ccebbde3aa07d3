//! `room:delete`, `message:edit`, `message:delete` and `message:react`: each flow runs on
//! one embedded node (memory stores) and across two nodes sharing the real Redis (alice
//! on the first node, bob on the second).

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

fn bodies(history: &Value) -> Vec<Value> {
    history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| json!([m["seq"], m.get("body").cloned().unwrap_or(Value::Null)]))
        .collect()
}

const QUIET: Duration = Duration::from_millis(300);

// === room:delete ===

async fn room_delete_flow(a: &Node, b: &Node) {
    let tenant = unique("t");
    let alice = user(a, &tenant, "alice").await;
    let alice_phone = user(b, &tenant, "alice").await;
    let bob = user(b, &tenant, "bob").await;
    alice
        .ok(
            "room:create",
            json!({"room_id": "doomed", "visibility": "private", "members": ["bob"]}),
        )
        .await;
    alice
        .ok(
            "room:create",
            json!({"room_id": "kept", "visibility": "public", "members": ["bob"]}),
        )
        .await;
    for body in ["one", "two"] {
        alice
            .ok("message:send", json!({"room_id": "doomed", "body": body}))
            .await;
    }
    alice
        .ok("message:send", json!({"room_id": "kept", "body": "stays"}))
        .await;
    bob.ok("receipt:read", json!({"room_id": "doomed", "up_to_seq": 1}))
        .await;
    bob.ok("typing:start", json!({"room_id": "doomed"})).await;
    bob.ok(
        "message:react",
        json!({"room_id": "doomed", "seq": 1, "emoji": "👍", "on": true}),
    )
    .await;

    // Refusals: bad payloads, unknown room, not the owner.
    for bad in [
        json!({}),
        json!({"room_id": 5}),
        json!({"room_id": ""}),
        json!("doomed"),
    ] {
        assert_eq!(alice.err("room:delete", bad).await, "bad_request");
    }
    assert_eq!(
        alice.err("room:delete", json!({"room_id": "nope"})).await,
        "not_found"
    );
    assert_eq!(
        bob.err("room:delete", json!({"room_id": "doomed"})).await,
        "forbidden"
    );

    assert_eq!(
        alice.ok("room:delete", json!({"room_id": "doomed"})).await,
        json!({})
    );
    for c in [&bob, &alice_phone, &alice] {
        assert_eq!(c.expect("room:deleted").await, json!({"room_id": "doomed"}));
    }

    // Gone for everyone, and everything of it: membership, history, unread, typing.
    for (c, event, payload) in [
        (
            &bob,
            "message:send",
            json!({"room_id": "doomed", "body": "hello?"}),
        ),
        (&bob, "message:history", json!({"room_id": "doomed"})),
        (&bob, "typing:get-aggregated", json!({"room_id": "doomed"})),
        (&alice, "room:members", json!({"room_id": "doomed"})),
        (
            &bob,
            "message:react",
            json!({"room_id": "doomed", "seq": 1, "emoji": "👍", "on": false}),
        ),
    ] {
        assert_eq!(c.err(event, payload).await, "not_found", "{event}");
    }
    assert_eq!(
        alice.err("room:delete", json!({"room_id": "doomed"})).await,
        "not_found"
    );
    assert_eq!(
        bob.ok("unread:get", json!({})).await["counts"],
        json!({"kept": 1})
    );
    assert_eq!(
        bob.ok("message:history", json!({"room_id": "kept"})).await["messages"][0]["body"],
        "stays"
    );

    // The id can be taken again: a new room, seq from 1, no old members, history,
    // pointers or reactions; old members' sockets no longer receive it.
    alice
        .ok(
            "room:create",
            json!({"room_id": "doomed", "visibility": "public"}),
        )
        .await;
    let m = alice
        .ok(
            "message:send",
            json!({"room_id": "doomed", "body": "fresh"}),
        )
        .await;
    assert_eq!(m["message"]["seq"], 1);
    assert!(m["message"].get("reactions").is_none());
    assert!(bob.next("message:new", QUIET).await.is_none());
    let members = alice.ok("room:members", json!({"room_id": "doomed"})).await;
    assert_eq!(
        members["members"],
        json!([{"user_id": "alice", "online": true}])
    );
    bob.ok("room:join", json!({"room_id": "doomed"})).await;
    assert_eq!(
        bob.ok("unread:get", json!({"room_ids": ["doomed"]})).await["counts"]["doomed"],
        1,
        "bob's old read pointer went with the old room"
    );
    assert_eq!(
        bodies(
            &bob.ok("message:history", json!({"room_id": "doomed"}))
                .await
        ),
        vec![json!([1, "fresh"])]
    );
    assert!(
        bob.ok("typing:get-aggregated", json!({"room_id": "doomed"}))
            .await["user_ids"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // The same ids in another tenant: nothing to delete, nothing heard.
    let intruder = user(b, &unique("t"), "alice").await;
    assert_eq!(
        intruder
            .err("room:delete", json!({"room_id": "kept"}))
            .await,
        "not_found"
    );
    assert!(bob.next("room:deleted", QUIET).await.is_none());
    assert_eq!(
        bob.ok("message:history", json!({"room_id": "kept"})).await["messages"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn room_delete_on_one_node() {
    let node = start(mk_config()).await;
    room_delete_flow(&node, &node).await;
}

#[tokio::test]
async fn room_delete_across_two_nodes() {
    let Some((a, b)) = redis_pair(&[]).await else {
        return;
    };
    room_delete_flow(&a, &b).await;
}

// === message:edit and message:delete ===

async fn edit_delete_flow(a: &Node, b: &Node) {
    let tenant = unique("t");
    let alice = user(a, &tenant, "alice").await;
    let bob = user(b, &tenant, "bob").await;
    let carol = user(b, &tenant, "carol").await;
    alice
        .ok(
            "room:create",
            json!({"room_id": "r", "visibility": "private", "members": ["bob", "carol"]}),
        )
        .await;
    let first = alice
        .ok(
            "message:send",
            json!({"room_id": "r", "body": "helo", "meta": {"k": 1}}),
        )
        .await["message"]
        .clone();
    let second = bob
        .ok("message:send", json!({"room_id": "r", "body": "bob's"}))
        .await["message"]
        .clone();
    let unread_before = carol.ok("unread:get", json!({})).await;
    assert_eq!(unread_before["counts"]["r"], 2);

    // The sender edits: same id and seq, new body, edited_at; meta kept unless given.
    let edited = alice
        .ok(
            "message:edit",
            json!({"room_id": "r", "seq": 1, "body": "hello"}),
        )
        .await["message"]
        .clone();
    assert_eq!(edited["id"], first["id"]);
    assert_eq!(edited["seq"], 1);
    assert_eq!(edited["body"], "hello");
    assert_eq!(edited["meta"], json!({"k": 1}));
    assert!(edited["edited_at"].as_i64().unwrap() >= first["ts"].as_i64().unwrap());
    assert_eq!(
        bob.expect("message:updated").await,
        json!({"message": edited.clone()})
    );
    let with_meta = alice
        .ok(
            "message:edit",
            json!({"room_id": "r", "seq": 1, "body": "hello!", "meta": {"k": 2}}),
        )
        .await["message"]
        .clone();
    assert_eq!(with_meta["meta"], json!({"k": 2}));
    assert_eq!(with_meta["edit_count"], 2);
    assert_eq!(bob.expect("message:updated").await["message"], with_meta);

    // Refusals.
    assert_eq!(
        bob.err(
            "message:edit",
            json!({"room_id": "r", "seq": 1, "body": "mine now"})
        )
        .await,
        "forbidden"
    );
    assert_eq!(
        carol
            .err("message:delete", json!({"room_id": "r", "seq": 2}))
            .await,
        "forbidden",
        "neither sender nor owner"
    );
    assert_eq!(
        alice
            .err(
                "message:edit",
                json!({"room_id": "r", "seq": 9, "body": "x"})
            )
            .await,
        "not_found"
    );
    for bad in [
        json!({"room_id": "r", "seq": 0, "body": "x"}),
        json!({"room_id": "r", "seq": -1, "body": "x"}),
        json!({"room_id": "r", "seq": "1", "body": "x"}),
        json!({"room_id": "r", "seq": 1, "body": "   "}),
        json!({"room_id": "r", "seq": 1}),
        json!({"room_id": "r", "seq": 1, "body": "x", "meta": [1]}),
        json!({"seq": 1, "body": "x"}),
    ] {
        assert_eq!(
            alice.err("message:edit", bad.clone()).await,
            "bad_request",
            "{bad}"
        );
    }
    assert_eq!(
        alice
            .err(
                "message:edit",
                json!({"room_id": "r", "seq": 1, "body": "x".repeat(5000)})
            )
            .await,
        "payload_too_large"
    );
    for bad in [
        json!({"room_id": "r"}),
        json!({"room_id": "r", "seq": 0}),
        json!([]),
    ] {
        assert_eq!(
            alice.err("message:delete", bad.clone()).await,
            "bad_request",
            "{bad}"
        );
    }
    let outsider = user(a, &tenant, "mallory").await;
    assert_eq!(
        outsider
            .err(
                "message:edit",
                json!({"room_id": "r", "seq": 1, "body": "x"})
            )
            .await,
        "forbidden"
    );
    assert_eq!(
        outsider
            .err("message:delete", json!({"room_id": "r", "seq": 1}))
            .await,
        "forbidden"
    );

    // The owner deletes bob's message: a tombstone with its seq, no body.
    let tomb = alice
        .ok("message:delete", json!({"room_id": "r", "seq": 2}))
        .await["message"]
        .clone();
    assert_eq!(tomb["id"], second["id"]);
    assert_eq!(tomb["seq"], 2);
    assert_eq!(tomb["deleted"], true);
    assert!(tomb.get("body").is_none(), "{tomb}");
    assert_eq!(
        bob.expect("message:updated").await,
        json!({"message": tomb.clone()})
    );
    assert_eq!(
        bob.err(
            "message:edit",
            json!({"room_id": "r", "seq": 2, "body": "back"})
        )
        .await,
        "conflict"
    );
    // The sender deletes their own.
    let own = alice
        .ok("message:delete", json!({"room_id": "r", "seq": 1}))
        .await["message"]
        .clone();
    assert_eq!(own["deleted"], true);
    assert_eq!(bob.expect("message:updated").await["message"], own);

    // History serves the current versions; seqs and unread counts did not move.
    let h = carol.ok("message:history", json!({"room_id": "r"})).await;
    assert_eq!(bodies(&h), vec![json!([1, null]), json!([2, null])]);
    assert_eq!(h["messages"][1], tomb);
    assert_eq!(carol.ok("unread:get", json!({})).await, unread_before);
    let next = bob
        .ok("message:send", json!({"room_id": "r", "body": "after"}))
        .await;
    assert_eq!(next["message"]["seq"], 3);

    // Another tenant's alice with the same room id can neither see nor change anything.
    let intruder = user(b, &unique("t"), "alice").await;
    for (event, payload) in [
        (
            "message:edit",
            json!({"room_id": "r", "seq": 3, "body": "x"}),
        ),
        ("message:delete", json!({"room_id": "r", "seq": 3})),
    ] {
        assert_eq!(intruder.err(event, payload).await, "not_found");
    }
    assert!(bob.next("message:updated", QUIET).await.is_none());
}

#[tokio::test]
async fn edit_and_delete_on_one_node() {
    let node = start(mk_config()).await;
    edit_delete_flow(&node, &node).await;
}

#[tokio::test]
async fn edit_and_delete_across_two_nodes() {
    let Some((a, b)) = redis_pair(&[]).await else {
        return;
    };
    edit_delete_flow(&a, &b).await;
}

/// `chat.edit_window` and `chat.max_edits` bound edits; deleting is not bounded by them.
#[tokio::test]
async fn edit_window_and_edit_bound() {
    let node = start(embedded(&[
        ("chat.max_edits", "2"),
        ("chat.edit_window", "1s"),
    ]))
    .await;
    let alice = user(&node, "acme", "alice").await;
    alice
        .ok(
            "room:create",
            json!({"room_id": "w", "visibility": "public"}),
        )
        .await;
    for body in ["a", "b"] {
        alice
            .ok("message:send", json!({"room_id": "w", "body": body}))
            .await;
    }
    for body in ["a1", "a2"] {
        alice
            .ok(
                "message:edit",
                json!({"room_id": "w", "seq": 1, "body": body}),
            )
            .await;
    }
    assert_eq!(
        alice
            .err(
                "message:edit",
                json!({"room_id": "w", "seq": 1, "body": "a3"})
            )
            .await,
        "conflict"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        alice
            .err(
                "message:edit",
                json!({"room_id": "w", "seq": 2, "body": "late"})
            )
            .await,
        "forbidden"
    );
    alice
        .ok("message:delete", json!({"room_id": "w", "seq": 2}))
        .await;

    let off = start(embedded(&[("chat.edit_window", "0s")])).await;
    let bob = user(&off, "acme", "bob").await;
    bob.ok(
        "room:create",
        json!({"room_id": "w", "visibility": "public"}),
    )
    .await;
    bob.ok("message:send", json!({"room_id": "w", "body": "final"}))
        .await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        bob.err(
            "message:edit",
            json!({"room_id": "w", "seq": 1, "body": "no"})
        )
        .await,
        "forbidden"
    );
}

// === message:react ===

async fn react_flow(a: &Node, b: &Node) {
    let tenant = unique("t");
    let alice = user(a, &tenant, "alice").await;
    let bob = user(b, &tenant, "bob").await;
    alice
        .ok(
            "room:create",
            json!({"room_id": "r", "visibility": "public", "members": ["bob"]}),
        )
        .await;
    alice
        .ok(
            "message:send",
            json!({"room_id": "r", "body": "react to me"}),
        )
        .await;
    let react = |emoji: &str, on: bool| json!({"room_id": "r", "seq": 1, "emoji": emoji, "on": on});

    let r = bob.ok("message:react", react("👍", true)).await;
    assert_eq!(
        r,
        json!({"reactions": [{"emoji": "👍", "count": 1, "user_ids": ["bob"]}]})
    );
    assert_eq!(
        alice.expect("message:reactions").await,
        json!({"room_id": "r", "seq": 1, "reactions": r["reactions"]})
    );
    // Reacting again changes nothing and tells nobody.
    assert_eq!(bob.ok("message:react", react("👍", true)).await, r);
    assert!(alice.next("message:reactions", QUIET).await.is_none());
    let both = alice.ok("message:react", react("👍", true)).await;
    assert_eq!(
        both["reactions"],
        json!([{"emoji": "👍", "count": 2, "user_ids": ["bob", "alice"]}])
    );
    assert_eq!(
        bob.expect("message:reactions").await["reactions"],
        both["reactions"]
    );
    alice.ok("message:react", react("🎉", true)).await;

    // Stored: history returns them on the message.
    let h = bob.ok("message:history", json!({"room_id": "r"})).await;
    assert_eq!(
        h["messages"][0]["reactions"],
        json!([
            {"emoji": "👍", "count": 2, "user_ids": ["bob", "alice"]},
            {"emoji": "🎉", "count": 1, "user_ids": ["alice"]}
        ])
    );

    // Bounds: five reactions per user per message.
    for e in ["a1", "a2", "a3"] {
        bob.ok("message:react", react(e, true)).await;
    }
    bob.ok("message:react", react("🎉", true)).await;
    assert_eq!(
        bob.err("message:react", react("a4", true)).await,
        "forbidden"
    );
    // Taking one back frees a slot.
    let off = bob.ok("message:react", react("a1", false)).await;
    assert!(
        off["reactions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["emoji"] != "a1")
    );
    bob.ok("message:react", react("a4", true)).await;

    // Bad payloads and refusals.
    for bad in [
        react("", true),
        react("two words", true),
        react(&"x".repeat(65), true),
        json!({"room_id": "r", "seq": 1, "emoji": "👍"}),
        json!({"room_id": "r", "seq": 1, "emoji": "👍", "on": "yes"}),
        json!({"room_id": "r", "seq": 0, "emoji": "👍", "on": true}),
        json!({"room_id": "r", "emoji": "👍", "on": true}),
    ] {
        assert_eq!(
            bob.err("message:react", bad.clone()).await,
            "bad_request",
            "{bad}"
        );
    }
    assert_eq!(
        bob.err(
            "message:react",
            json!({"room_id": "r", "seq": 7, "emoji": "👍", "on": true})
        )
        .await,
        "not_found"
    );
    let outsider = user(b, &tenant, "mallory").await;
    assert_eq!(
        outsider.err("message:react", react("👍", true)).await,
        "forbidden"
    );
    let intruder = user(b, &unique("t"), "bob").await;
    assert_eq!(
        intruder.err("message:react", react("👍", false)).await,
        "not_found"
    );

    // A deleted message drops its reactions and takes no more.
    alice
        .ok("message:delete", json!({"room_id": "r", "seq": 1}))
        .await;
    assert_eq!(
        bob.err("message:react", react("👍", true)).await,
        "conflict"
    );
    let h = bob.ok("message:history", json!({"room_id": "r"})).await;
    assert!(h["messages"][0].get("reactions").is_none(), "{h}");
}

#[tokio::test]
async fn reactions_on_one_node() {
    let node = start(mk_config()).await;
    react_flow(&node, &node).await;
}

#[tokio::test]
async fn reactions_across_two_nodes() {
    let Some((a, b)) = redis_pair(&[]).await else {
        return;
    };
    react_flow(&a, &b).await;
}

/// Twenty distinct emoji on a message at most, whoever adds them.
#[tokio::test]
async fn distinct_emoji_per_message_are_bounded() {
    let mut cfg = mk_config();
    for b in [&mut cfg.limits.per_socket, &mut cfg.limits.per_user] {
        b.message.rate = 1000.0;
        b.message.burst = 1000;
    }
    let node = start(cfg).await;
    let alice = user(&node, "acme", "alice").await;
    alice
        .ok(
            "room:create",
            json!({"room_id": "e", "visibility": "public"}),
        )
        .await;
    alice
        .ok("message:send", json!({"room_id": "e", "body": "many"}))
        .await;
    for i in 0..4 {
        let u = user(&node, "acme", &format!("u{i}")).await;
        u.ok("room:join", json!({"room_id": "e"})).await;
        for j in 0..5 {
            u.ok(
                "message:react",
                json!({"room_id": "e", "seq": 1, "emoji": format!("e{i}-{j}"), "on": true}),
            )
            .await;
        }
    }
    assert_eq!(
        alice
            .err(
                "message:react",
                json!({"room_id": "e", "seq": 1, "emoji": "one-too-many", "on": true})
            )
            .await,
        "forbidden"
    );
    // An emoji already there still takes more users.
    let r = alice
        .ok(
            "message:react",
            json!({"room_id": "e", "seq": 1, "emoji": "e0-0", "on": true}),
        )
        .await;
    assert_eq!(r["reactions"].as_array().unwrap().len(), 20);
    assert_eq!(r["reactions"][0]["count"], 2);
}

// === concurrency (two nodes, one Redis) ===

/// An edit racing a delete, reactions racing each other and a room's deletion: each
/// outcome is one of the orders that could have happened, the same seen from both nodes,
/// and nothing half-done stays behind.
#[tokio::test]
async fn racing_changes_serialize_across_nodes() {
    let Some((a, b)) = redis_pair(&[]).await else {
        return;
    };
    let tenant = unique("t");
    let alice_a = user(&a, &tenant, "alice").await;
    let alice_b = user(&b, &tenant, "alice").await;
    let reactors: Vec<(Client, String)> = {
        let mut v = Vec::new();
        for i in 0..6 {
            let name = format!("u{i}");
            let node = if i % 2 == 0 { &a } else { &b };
            v.push((user(node, &tenant, &name).await, name));
        }
        v
    };
    let names: Vec<&str> = reactors.iter().map(|(_, n)| n.as_str()).collect();
    alice_a
        .ok(
            "room:create",
            json!({"room_id": "race", "visibility": "public", "members": names}),
        )
        .await;

    // Edit (node A) against delete (node B), ten times: the message always ends a
    // tombstone; the edit either went first (ok) or found the tombstone (conflict).
    for i in 1..=10_u64 {
        alice_a
            .ok(
                "message:send",
                json!({"room_id": "race", "body": format!("m{i}")}),
            )
            .await;
        let edit = alice_a.req(
            "message:edit",
            json!({"room_id": "race", "seq": i, "body": "edited"}),
        );
        let delete = alice_b.req("message:delete", json!({"room_id": "race", "seq": i}));
        let (edit, delete) = tokio::join!(edit, delete);
        assert_eq!(delete["ok"], true, "{delete}");
        assert!(
            edit["ok"] == true || edit["error"]["code"] == "conflict",
            "{edit}"
        );
    }
    for c in [&alice_a, &alice_b] {
        let h = c.ok("message:history", json!({"room_id": "race"})).await;
        let msgs = h["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 10);
        assert!(
            msgs.iter()
                .all(|m| m["deleted"] == true && m.get("body").is_none()),
            "{h}"
        );
    }

    // Six users on two nodes react at once with the same two emoji: no reaction is lost.
    alice_a
        .ok("message:send", json!({"room_id": "race", "body": "react"}))
        .await;
    let all = reactors.iter().flat_map(|(c, _)| {
        ["👍", "🎉"].map(|e| {
            c.req(
                "message:react",
                json!({"room_id": "race", "seq": 11, "emoji": e, "on": true}),
            )
        })
    });
    for r in futures::future::join_all(all).await {
        assert_eq!(r["ok"], true, "{r}");
    }
    for c in [&alice_a, &alice_b] {
        let h = c
            .ok(
                "message:history",
                json!({"room_id": "race", "after_seq": 10}),
            )
            .await;
        let counts: Vec<(Value, Value)> = h["messages"][0]["reactions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["emoji"].clone(), r["count"].clone()))
            .collect();
        assert_eq!(
            counts,
            vec![(json!("👍"), json!(6)), (json!("🎉"), json!(6))]
        );
    }

    // Reactions and sends while the room is deleted: afterwards nothing of the old room
    // is left, whatever got in before.
    let racing = reactors.iter().map(|(c, _)| {
        c.req(
            "message:react",
            json!({"room_id": "race", "seq": 11, "emoji": "🔥", "on": true}),
        )
    });
    let sending = reactors.iter().map(|(c, n)| {
        c.req(
            "message:send",
            json!({"room_id": "race", "body": format!("late {n}")}),
        )
    });
    let delete = alice_b.req("room:delete", json!({"room_id": "race"}));
    let (reacts, sends, deleted) = tokio::join!(
        futures::future::join_all(racing),
        futures::future::join_all(sending),
        delete
    );
    assert_eq!(deleted["ok"], true, "{deleted}");
    for r in reacts.iter().chain(sends.iter()) {
        assert!(r["ok"] == true || r["error"]["code"] == "not_found", "{r}");
    }
    alice_a
        .ok(
            "room:create",
            json!({"room_id": "race", "visibility": "public"}),
        )
        .await;
    for c in [&alice_a, &alice_b] {
        let h = c.ok("message:history", json!({"room_id": "race"})).await;
        assert_eq!(h["messages"], json!([]), "nothing of the old room: {h}");
    }
    let m = alice_b
        .ok("message:send", json!({"room_id": "race", "body": "new"}))
        .await;
    assert_eq!(m["message"]["seq"], 1);
    assert!(m["message"].get("reactions").is_none());
}

// === threads ===

async fn threads_flow(a: &Node, b: &Node) {
    let tenant = unique("t");
    let alice = user(a, &tenant, "alice").await;
    let bob = user(b, &tenant, "bob").await;
    let carol = user(b, &tenant, "carol").await;
    alice
        .ok(
            "room:create",
            json!({"room_id": "r", "visibility": "public", "members": ["bob", "carol"]}),
        )
        .await;
    alice
        .ok("message:send", json!({"room_id": "r", "body": "root"}))
        .await; // 1
    let mut replies = Vec::new();
    for i in 0..3 {
        let m = bob
            .ok(
                "message:send",
                json!({"room_id": "r", "body": format!("reply {i}"), "thread_root": 1}),
            )
            .await["message"]
            .clone();
        assert_eq!(m["thread_root"], 1);
        // Replies go out like any message, with their thread_root.
        assert_eq!(
            alice.expect("message:new").await["message"]["thread_root"],
            1
        );
        replies.push(m);
    }
    assert_eq!(
        replies.iter().map(|m| m["seq"].clone()).collect::<Vec<_>>(),
        vec![json!(2), json!(3), json!(4)]
    );
    alice
        .ok(
            "message:send",
            json!({"room_id": "r", "body": "main again"}),
        )
        .await; // 5

    // The thread pages by seq; the root carries the count; history has everything.
    let th = carol
        .ok("message:thread", json!({"room_id": "r", "root_seq": 1}))
        .await;
    assert_eq!(th["messages"], json!(replies));
    let page = carol
        .ok(
            "message:thread",
            json!({"room_id": "r", "root_seq": 1, "after_seq": 2, "limit": 1}),
        )
        .await;
    assert_eq!(page["messages"], json!([replies[1]]));
    let h = carol.ok("message:history", json!({"room_id": "r"})).await;
    assert_eq!(h["messages"][0]["thread_replies"], 3);
    assert_eq!(h["messages"].as_array().unwrap().len(), 5);
    assert!(h["messages"][4].get("thread_replies").is_none());
    // Unread: replies count like room messages.
    assert_eq!(carol.ok("unread:get", json!({})).await["counts"]["r"], 5);

    // Refusals.
    for (bad, code) in [
        (
            json!({"room_id": "r", "body": "x", "thread_root": 2}),
            "bad_request",
        ), // nesting
        (
            json!({"room_id": "r", "body": "x", "thread_root": 99}),
            "bad_request",
        ),
        (
            json!({"room_id": "r", "body": "x", "thread_root": 0}),
            "bad_request",
        ),
        (
            json!({"room_id": "r", "body": "x", "thread_root": "1"}),
            "bad_request",
        ),
    ] {
        assert_eq!(bob.err("message:send", bad.clone()).await, code, "{bad}");
    }
    for (bad, code) in [
        (json!({"room_id": "r"}), "bad_request"),
        (json!({"room_id": "r", "root_seq": 0}), "bad_request"),
        (
            json!({"room_id": "r", "root_seq": 1, "limit": 0}),
            "bad_request",
        ),
        (
            json!({"room_id": "r", "root_seq": 1, "limit": 101}),
            "bad_request",
        ),
        (
            json!({"room_id": "r", "root_seq": 1, "after_seq": -1}),
            "bad_request",
        ),
        (json!({"room_id": "r", "root_seq": 2}), "bad_request"),
        (json!({"room_id": "r", "root_seq": 99}), "not_found"),
        (json!({"room_id": "nope", "root_seq": 1}), "not_found"),
    ] {
        assert_eq!(bob.err("message:thread", bad.clone()).await, code, "{bad}");
    }
    let outsider = user(a, &tenant, "mallory").await;
    alice
        .ok(
            "room:create",
            json!({"room_id": "priv", "visibility": "private"}),
        )
        .await;
    assert_eq!(
        outsider
            .err("message:thread", json!({"room_id": "priv", "root_seq": 1}))
            .await,
        "forbidden"
    );
    // A deleted root takes no more replies; its thread stays readable.
    alice
        .ok("message:delete", json!({"room_id": "r", "seq": 1}))
        .await;
    assert_eq!(
        bob.err(
            "message:send",
            json!({"room_id": "r", "body": "late", "thread_root": 1})
        )
        .await,
        "conflict"
    );
    assert_eq!(
        bob.ok("message:thread", json!({"room_id": "r", "root_seq": 1}))
            .await["messages"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // Another tenant: no such room.
    let intruder = user(b, &unique("t"), "bob").await;
    assert_eq!(
        intruder
            .err("message:thread", json!({"room_id": "r", "root_seq": 1}))
            .await,
        "not_found"
    );
}

#[tokio::test]
async fn threads_on_one_node() {
    let node = start(mk_config()).await;
    threads_flow(&node, &node).await;
}

#[tokio::test]
async fn threads_across_two_nodes() {
    let Some((a, b)) = redis_pair(&[]).await else {
        return;
    };
    threads_flow(&a, &b).await;
}
