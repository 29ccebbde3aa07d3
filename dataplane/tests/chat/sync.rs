//! `sync:get`: a client away for a long time catches up on every room that changed, page
//! by page, nothing missed and nothing repeated; unchanged, deleted and kicked-from rooms
//! stay out. On one embedded node and across two nodes sharing Redis.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::support::*;

/// Rooms of the flow: more than two pages of 50.
const ROOMS: usize = 120;

/// Every page from `cursor` on with `limit`: the rooms in order, and the last cursor.
async fn catch_up(c: &Client, cursor: Option<&str>, limit: usize) -> (Vec<Value>, String, usize) {
    let mut cursor = cursor.map(str::to_owned);
    let mut rooms = Vec::new();
    let mut pages = 0;
    loop {
        let mut req = json!({ "limit": limit });
        if let Some(c) = &cursor {
            req["cursor"] = json!(c);
        }
        let page = c.ok("sync:get", req).await;
        pages += 1;
        let got = page["rooms"].as_array().unwrap();
        assert!(got.len() <= limit, "{page}");
        rooms.extend(got.iter().cloned());
        cursor = Some(page["cursor"].as_str().unwrap().to_owned());
        if page["more"] == false {
            return (rooms, cursor.unwrap_or_default(), pages);
        }
        assert_eq!(got.len(), limit, "a page with more is full: {page}");
    }
}

fn ids(rooms: &[Value]) -> Vec<String> {
    rooms
        .iter()
        .map(|r| r["room_id"].as_str().unwrap().to_owned())
        .collect()
}

fn room(i: usize) -> String {
    format!("room-{i:03}")
}

/// Reader on `a` (owner of every room), writer on `b` in all of them.
async fn sync_flow(a: &Node, b: &Node) {
    let tenant = unique("t");
    let reader = user(a, &tenant, "reader").await;
    let writer = user(b, &tenant, "writer").await;
    for i in 0..ROOMS {
        reader
            .ok(
                "room:create",
                json!({"room_id": room(i), "visibility": "private", "members": ["writer"]}),
            )
            .await;
    }
    writer
        .ok(
            "room:create",
            json!({"room_id": "w-kick", "visibility": "public", "members": ["reader"]}),
        )
        .await;
    writer
        .ok(
            "room:create",
            json!({"room_id": "w-del", "visibility": "public", "members": ["reader"]}),
        )
        .await;

    // Typed refusals.
    for bad in [
        json!({"cursor": "not-ours"}),
        json!({"cursor": 5}),
        json!({"cursor": "s-1"}),
        json!({"limit": 0}),
        json!({"limit": 101}),
        json!({"limit": "10"}),
        json!([1]),
    ] {
        assert_eq!(reader.err("sync:get", bad).await, "bad_request");
    }

    // First sync: every room the reader was added to, once, in pages of 50.
    let (first, cursor, pages) = catch_up(&reader, None, 50).await;
    let all: BTreeSet<String> = (0..ROOMS)
        .map(room)
        .chain(["w-kick".into(), "w-del".into()])
        .collect();
    assert_eq!(ids(&first).len(), all.len(), "no room twice");
    assert_eq!(ids(&first).into_iter().collect::<BTreeSet<_>>(), all);
    assert_eq!(pages, 3);
    for r in &first {
        assert_eq!(r["last_seq"], 0);
        assert_eq!(r["unread"], 0);
        assert!(r.get("last_message").is_none(), "{r}");
    }
    // Nothing changed since: nothing, and the same cursor.
    let none = reader.ok("sync:get", json!({"cursor": cursor})).await;
    assert_eq!(none, json!({"rooms": [], "cursor": cursor, "more": false}));

    // The reader goes away; meanwhile 70 rooms change (some twice), one message is
    // edited, one deleted, the reader is kicked from one room and another is deleted.
    drop(reader);
    let mut expect: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for i in (0..ROOMS).step_by(2).take(60) {
        let m = writer
            .ok(
                "message:send",
                json!({"room_id": room(i), "body": format!("hello {i}")}),
            )
            .await;
        expect.insert(
            room(i),
            (m["message"]["seq"].as_u64().unwrap(), format!("hello {i}")),
        );
    }
    for i in (1..ROOMS).step_by(2).take(10) {
        for n in 0..2 {
            writer
                .ok(
                    "message:send",
                    json!({"room_id": room(i), "body": format!("{i}/{n}")}),
                )
                .await;
        }
        expect.insert(room(i), (2, format!("{i}/1")));
    }
    writer
        .ok(
            "message:edit",
            json!({"room_id": room(0), "seq": 1, "body": "edited 0"}),
        )
        .await;
    expect.insert(room(0), (1, "edited 0".into()));
    writer
        .ok("message:delete", json!({"room_id": room(2), "seq": 1}))
        .await;
    expect.insert(room(2), (1, String::new()));
    writer
        .ok("message:send", json!({"room_id": "w-kick", "body": "x"}))
        .await;
    writer
        .ok(
            "room:kick",
            json!({"room_id": "w-kick", "user_id": "reader"}),
        )
        .await;
    writer
        .ok(
            "message:send",
            json!({"room_id": "w-kick", "body": "after"}),
        )
        .await;
    writer
        .ok("message:send", json!({"room_id": "w-del", "body": "x"}))
        .await;
    writer.ok("room:delete", json!({"room_id": "w-del"})).await;

    // Back: from the old cursor, in pages of 25: exactly the changed rooms, once each,
    // with their last seq, unread count and current last message.
    let reader = user(a, &tenant, "reader").await;
    let (changed, cursor, pages) = catch_up(&reader, Some(&cursor), 25).await;
    assert_eq!(pages, 3);
    let got = ids(&changed);
    assert_eq!(got.len(), expect.len(), "no room twice: {got:?}");
    assert_eq!(
        got.iter().cloned().collect::<BTreeSet<_>>(),
        expect.keys().cloned().collect::<BTreeSet<_>>(),
        "the kicked-from and deleted rooms stay out"
    );
    for r in &changed {
        let (seq, body) = &expect[r["room_id"].as_str().unwrap()];
        assert_eq!(r["last_seq"], *seq, "{r}");
        assert_eq!(r["unread"], *seq, "{r}");
        assert_eq!(r["last_message"]["seq"], *seq, "{r}");
        if body.is_empty() {
            assert_eq!(r["last_message"]["deleted"], true, "{r}");
            assert!(r["last_message"].get("body").is_none(), "{r}");
        } else {
            assert_eq!(r["last_message"]["body"], json!(body), "{r}");
        }
    }

    // A read on another device is a change for the reader (unread 0), not for the writer.
    let writer_cursor = catch_up(&writer, None, 100).await.1;
    let phone = user(b, &tenant, "reader").await;
    phone
        .ok("receipt:read", json!({"room_id": room(4), "up_to_seq": 1}))
        .await;
    let after_read = reader.ok("sync:get", json!({"cursor": cursor})).await;
    assert_eq!(
        after_read["rooms"],
        json!([{"room_id": room(4), "last_seq": 1, "unread": 0,
                "last_message": expect_message(&after_read, 0)}])
    );
    assert_eq!(after_read["more"], false);
    let w = writer
        .ok("sync:get", json!({"cursor": writer_cursor}))
        .await;
    assert_eq!(w["rooms"], json!([]), "{w}");

    // A room created with the deleted one's id is a new room: it shows up once joined.
    writer
        .ok(
            "room:create",
            json!({"room_id": "w-del", "visibility": "public"}),
        )
        .await;
    let nothing = reader
        .ok("sync:get", json!({"cursor": after_read["cursor"]}))
        .await;
    assert_eq!(nothing["rooms"], json!([]));
    reader.ok("room:join", json!({"room_id": "w-del"})).await;
    let joined = reader
        .ok("sync:get", json!({"cursor": after_read["cursor"]}))
        .await;
    assert_eq!(ids(joined["rooms"].as_array().unwrap()), vec!["w-del"]);
    assert_eq!(joined["rooms"][0]["last_seq"], 0);
    // Leaving takes a room out.
    reader.ok("room:leave", json!({"room_id": room(4)})).await;
    let (left, _, _) = catch_up(&reader, None, 100).await;
    assert!(!ids(&left).contains(&room(4)));

    // Another tenant's reader sees none of it.
    let intruder = user(b, &unique("t"), "reader").await;
    let theirs = intruder.ok("sync:get", json!({"cursor": "s0"})).await;
    assert_eq!(theirs["rooms"], json!([]));
}

fn expect_message(page: &Value, i: usize) -> Value {
    page["rooms"][i]["last_message"].clone()
}

fn lifted(set: &[(&str, &str)]) -> switchboard_crds::config::DataplaneConfig {
    let mut c = embedded(set);
    lift_limits(&mut c);
    c
}

#[tokio::test]
async fn sync_on_one_node() {
    let node = start(lifted(&[])).await;
    sync_flow(&node, &node).await;
}

#[tokio::test]
async fn sync_across_two_nodes() {
    let Some((a, b)) = redis_pair(&[]).await else {
        return;
    };
    sync_flow(&a, &b).await;
}
