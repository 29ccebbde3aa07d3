//! Moderation: `room:set-role`, `room:kick`, `room:ban`, `room:unban`, `room:mute`,
//! `room:set-slow-mode` and moderators' deletes. Each flow runs on one embedded node
//! (memory stores) and across two nodes sharing the real Redis.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

const QUIET: Duration = Duration::from_millis(300);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn member_ids(members: &Value) -> Vec<String> {
    members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Owner alice and member dave on `a`; bob, erin and carol on `b` (carol also on `a`).
async fn moderation_flow(a: &Node, b: &Node) {
    let tenant = unique("t");
    let alice = user(a, &tenant, "alice").await;
    let dave = user(a, &tenant, "dave").await;
    let carol_a = user(a, &tenant, "carol").await;
    let bob = user(b, &tenant, "bob").await;
    let erin = user(b, &tenant, "erin").await;
    let carol_b = user(b, &tenant, "carol").await;
    alice
        .ok(
            "room:create",
            json!({"room_id": "club", "visibility": "public",
                   "members": ["bob", "carol", "dave", "erin"]}),
        )
        .await;

    // room:set-role: typed refusals, then two moderators.
    for bad in [
        json!({"room_id": "club", "user_id": "bob", "role": "owner"}),
        json!({"room_id": "club", "user_id": "bob", "role": "admin"}),
        json!({"room_id": "club", "user_id": "bob"}),
        json!({"room_id": "club", "role": "moderator"}),
        json!({"room_id": "club", "user_id": "b o b", "role": "moderator"}),
        json!({"room_id": "", "user_id": "bob", "role": "moderator"}),
        json!(["club"]),
    ] {
        assert_eq!(alice.err("room:set-role", bad).await, "bad_request");
    }
    let set_role =
        |user: &str, role: &str| json!({"room_id": "club", "user_id": user, "role": role});
    assert_eq!(
        alice
            .err(
                "room:set-role",
                json!({"room_id": "nope", "user_id": "bob", "role": "member"})
            )
            .await,
        "not_found"
    );
    assert_eq!(
        dave.err("room:set-role", set_role("bob", "moderator"))
            .await,
        "forbidden"
    );
    assert_eq!(
        alice
            .err("room:set-role", set_role("alice", "member"))
            .await,
        "forbidden",
        "the owner's role is not for setting"
    );
    assert_eq!(
        alice
            .err("room:set-role", set_role("nobody", "moderator"))
            .await,
        "not_found"
    );
    for m in ["bob", "erin"] {
        assert_eq!(
            alice.ok("room:set-role", set_role(m, "moderator")).await,
            json!({})
        );
    }
    assert_eq!(
        bob.err("room:set-role", set_role("dave", "moderator"))
            .await,
        "forbidden",
        "moderators do not set roles"
    );

    // room:kick: who may kick whom.
    let target = |user: &str| json!({"room_id": "club", "user_id": user});
    assert_eq!(dave.err("room:kick", target("carol")).await, "forbidden");
    assert_eq!(bob.err("room:kick", target("alice")).await, "forbidden");
    assert_eq!(bob.err("room:kick", target("erin")).await, "forbidden");
    assert_eq!(bob.err("room:kick", target("nobody")).await, "not_found");
    assert_eq!(
        bob.err(
            "room:kick",
            json!({"room_id": "club", "user_id": "carol", "reason": "x".repeat(501)})
        )
        .await,
        "bad_request"
    );
    // Carol's sockets on both nodes are kicked; the room no longer reaches them.
    assert_eq!(
        bob.ok(
            "room:kick",
            json!({"room_id": "club", "user_id": "carol", "reason": "spam"})
        )
        .await,
        json!({})
    );
    for c in [&carol_a, &carol_b] {
        assert_eq!(
            c.expect("room:kicked").await,
            json!({"room_id": "club", "reason": "spam"})
        );
    }
    alice
        .ok(
            "message:send",
            json!({"room_id": "club", "body": "after the kick"}),
        )
        .await;
    for c in [&carol_a, &carol_b] {
        assert!(c.next("message:new", QUIET).await.is_none());
    }
    assert_eq!(
        carol_b
            .err("message:send", json!({"room_id": "club", "body": "hi?"}))
            .await,
        "forbidden"
    );
    assert!(
        !member_ids(&alice.ok("room:members", json!({"room_id": "club"})).await)
            .contains(&"carol".to_owned())
    );
    // A kick is not a ban: carol may come back.
    carol_b.ok("room:join", json!({"room_id": "club"})).await;
    // The owner acts on moderators; a kicked moderator comes back as a member.
    alice.ok("room:kick", target("erin")).await;
    assert_eq!(erin.expect("room:kicked").await, json!({"room_id": "club"}));
    erin.ok("room:join", json!({"room_id": "club"})).await;
    assert_eq!(erin.err("room:kick", target("dave")).await, "forbidden");
    alice
        .ok("room:set-role", set_role("erin", "moderator"))
        .await;

    // room:ban kicks, bars joining and adding; room:unban lifts it.
    assert_eq!(bob.err("room:ban", target("erin")).await, "forbidden");
    assert_eq!(dave.err("room:ban", target("carol")).await, "forbidden");
    bob.ok(
        "room:ban",
        json!({"room_id": "club", "user_id": "carol", "reason": "again"}),
    )
    .await;
    for c in [&carol_a, &carol_b] {
        assert_eq!(
            c.expect("room:kicked").await,
            json!({"room_id": "club", "reason": "again"})
        );
    }
    assert_eq!(
        carol_a.err("room:join", json!({"room_id": "club"})).await,
        "forbidden"
    );
    let invited = alice
        .ok(
            "room:invite",
            json!({"room_id": "club", "user_ids": ["carol", "frank"]}),
        )
        .await;
    assert_eq!(invited["skipped"], json!(["carol"]));
    assert_eq!(invited["banned"], json!(["carol"]));
    // Banning someone who is not a member bars them all the same.
    erin.ok("room:ban", target("mallory")).await;
    let mallory = user(b, &tenant, "mallory").await;
    assert_eq!(
        mallory.err("room:join", json!({"room_id": "club"})).await,
        "forbidden"
    );
    assert!(mallory.next("room:kicked", QUIET).await.is_none());
    assert_eq!(dave.err("room:unban", target("carol")).await, "forbidden");
    assert_eq!(bob.ok("room:unban", target("carol")).await, json!({}));
    assert_eq!(bob.ok("room:unban", target("carol")).await, json!({}));
    carol_a.ok("room:join", json!({"room_id": "club"})).await;

    // room:mute: until lifted, lifted by an `until` in the past, and until a time.
    let send = |body: &str| json!({"room_id": "club", "body": body});
    assert_eq!(
        bob.err(
            "room:mute",
            json!({"room_id": "club", "user_id": "dave", "until": "soon"})
        )
        .await,
        "bad_request"
    );
    assert_eq!(bob.err("room:mute", target("alice")).await, "forbidden");
    assert_eq!(bob.err("room:mute", target("erin")).await, "forbidden");
    assert_eq!(bob.err("room:mute", target("mallory")).await, "not_found");
    assert_eq!(bob.ok("room:mute", target("dave")).await, json!({}));
    assert_eq!(
        dave.err("message:send", send("let me talk")).await,
        "forbidden"
    );
    bob.ok(
        "room:mute",
        json!({"room_id": "club", "user_id": "dave", "until": 0}),
    )
    .await;
    dave.ok("message:send", send("thanks")).await;
    alice
        .ok(
            "room:mute",
            json!({"room_id": "club", "user_id": "bob", "until": now_ms() + 1000}),
        )
        .await;
    assert_eq!(
        bob.err("message:send", send("muted mod")).await,
        "forbidden"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    bob.ok("message:send", send("the mute ended")).await;

    // room:set-slow-mode: members wait, owner and moderators do not.
    for bad in [
        json!({"room_id": "club", "interval_s": -1}),
        json!({"room_id": "club", "interval_s": 86_401}),
        json!({"room_id": "club", "interval_s": "5"}),
        json!({"room_id": "club"}),
    ] {
        assert_eq!(bob.err("room:set-slow-mode", bad).await, "bad_request");
    }
    assert_eq!(
        dave.err(
            "room:set-slow-mode",
            json!({"room_id": "club", "interval_s": 60})
        )
        .await,
        "forbidden"
    );
    let slow = bob
        .ok(
            "room:set-slow-mode",
            json!({"room_id": "club", "interval_s": 60}),
        )
        .await;
    assert_eq!(slow["room"]["slow_mode_s"], 60);
    assert_eq!(slow["room"]["id"], "club");
    dave.ok("message:send", send("one")).await;
    assert_eq!(dave.err("message:send", send("two")).await, "rate_limited");
    for c in [&alice, &bob, &alice, &bob] {
        c.ok("message:send", send("exempt")).await;
    }
    let off = alice
        .ok(
            "room:set-slow-mode",
            json!({"room_id": "club", "interval_s": 0}),
        )
        .await;
    assert!(off["room"].get("slow_mode_s").is_none(), "{off}");
    dave.ok("message:send", send("three")).await;

    // Moderators delete others' messages; members do not.
    let by_alice = alice.ok("message:send", send("owner's")).await["message"]["seq"].clone();
    let by_dave = dave.ok("message:send", send("dave's")).await["message"]["seq"].clone();
    assert_eq!(
        dave.err(
            "message:delete",
            json!({"room_id": "club", "seq": by_alice})
        )
        .await,
        "forbidden"
    );
    let gone = erin
        .ok("message:delete", json!({"room_id": "club", "seq": by_dave}))
        .await;
    assert_eq!(gone["message"]["deleted"], true);

    // The same ids in another tenant: nothing to act on.
    let intruder = user(b, &unique("t"), "alice").await;
    for (event, payload) in [
        ("room:kick", target("dave")),
        ("room:ban", target("dave")),
        ("room:mute", target("dave")),
        ("room:set-role", set_role("dave", "moderator")),
        (
            "room:set-slow-mode",
            json!({"room_id": "club", "interval_s": 5}),
        ),
    ] {
        assert_eq!(intruder.err(event, payload).await, "not_found", "{event}");
    }
    assert!(dave.next("room:kicked", QUIET).await.is_none());
    dave.ok("message:send", send("still here")).await;
}

#[tokio::test]
async fn moderation_on_one_node() {
    let node = start(mk_config()).await;
    moderation_flow(&node, &node).await;
}

#[tokio::test]
async fn moderation_across_two_nodes() {
    let Some((a, b)) = redis_pair(&[]).await else {
        return;
    };
    moderation_flow(&a, &b).await;
}

/// Two moderators on two nodes act on one member at once (a kick and a ban): whichever
/// order ran, the member ends up out of the room and banned, the same on both nodes.
#[tokio::test]
async fn two_moderators_act_at_once() {
    let Some((a, b)) = redis_pair(&[]).await else {
        return;
    };
    for round in 0..5 {
        let tenant = unique("t");
        let alice = user(&a, &tenant, "alice").await;
        let bob = user(&a, &tenant, "bob").await;
        let erin = user(&b, &tenant, "erin").await;
        let dave = user(&b, &tenant, "dave").await;
        alice
            .ok(
                "room:create",
                json!({"room_id": "r", "visibility": "public", "members": ["bob", "erin", "dave"]}),
            )
            .await;
        for m in ["bob", "erin"] {
            alice
                .ok(
                    "room:set-role",
                    json!({"room_id": "r", "user_id": m, "role": "moderator"}),
                )
                .await;
        }
        let target = json!({"room_id": "r", "user_id": "dave"});
        let (kick, ban) = tokio::join!(
            bob.req("room:kick", target.clone()),
            erin.req("room:ban", target.clone())
        );
        assert_eq!(
            ban["ok"], true,
            "round {round}: the ban always applies: {ban}"
        );
        assert!(
            kick["ok"] == true || kick["error"]["code"] == "not_found",
            "round {round}: {kick}"
        );
        dave.expect("room:kicked").await;
        assert_eq!(
            dave.err("room:join", json!({"room_id": "r"})).await,
            "forbidden"
        );
        for c in [&alice, &erin] {
            let members = member_ids(&c.ok("room:members", json!({"room_id": "r"})).await);
            assert_eq!(members, vec!["alice", "bob", "erin"], "round {round}");
        }
    }
}
