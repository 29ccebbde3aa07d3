//! One embedded node (no Redis, no Kafka): the namespace, the service API delivering
//! directly, and the tenant wall.

use std::time::Duration;

use serde_json::json;

use crate::common::{
    SERVICE, fresh, mk_config, notif_user, notification, post, states, status, wait_status,
};
use crate::support::start;

#[tokio::test]
async fn a_posted_notification_reaches_the_users_sockets_and_inbox() {
    let node = start(mk_config()).await;
    let t = fresh("t");
    let alice = notif_user(&node, &t, "alice").await;
    let alice2 = notif_user(&node, &t, "alice").await;
    let id = fresh("n");
    let (code, body) = post(&node, &notification(&t, &id, &["alice"]), Some(SERVICE)).await;
    assert_eq!(code, 202, "{body}");
    for c in [&alice, &alice2] {
        let ev = c.expect("notification").await;
        assert_eq!(ev["id"], id.as_str());
        assert_eq!(
            (
                ev["type"].as_str(),
                ev["priority"].as_str(),
                ev["title"].as_str()
            ),
            (Some("message"), Some("high"), Some("New message"))
        );
        assert_eq!(ev["data"], json!({"room": "r1"}));
        assert!(ev["created_at"].as_i64().unwrap() > 0);
    }
    let list = alice.ok("notification:list", json!({})).await;
    assert_eq!(list["notifications"][0]["id"], id.as_str());
    assert_eq!(list["notifications"][0]["read"], false);
    let marked = alice
        .ok("notification:mark-read", json!({"ids": [id, "unknown-id"]}))
        .await;
    assert_eq!(marked["marked"], 1);
    let unread = alice
        .ok("notification:list", json!({"unread_only": true}))
        .await;
    assert_eq!(unread["notifications"], json!([]));
    let all = alice.ok("notification:list", json!({"limit": 10})).await;
    assert_eq!(all["notifications"][0]["read"], true);
    let done = wait_status(&node, &t, &id, |d| d["progress"] == "done").await;
    assert_eq!(
        states(&done),
        Vec::<String>::new(),
        "no push devices, no records"
    );

    // The same id again: de-duplicated, no second event.
    let (code, _) = post(&node, &notification(&t, &id, &["alice"]), Some(SERVICE)).await;
    assert_eq!(code, 202);
    assert!(
        alice
            .next("notification", Duration::from_millis(500))
            .await
            .is_none()
    );
    assert_eq!(
        alice.ok("notification:list", json!({})).await["notifications"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn the_inbox_is_bounded_newest_first() {
    let mut cfg = mk_config();
    cfg.notifications.max_in_app_per_user = 3;
    let node = start(cfg).await;
    let t = fresh("t");
    let bob = notif_user(&node, &t, "bob").await;
    // Created in reverse id order, so the order shown is by time, not by id. (A producer's
    // created_at is kept within the past 30 days, never in the future.)
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for i in 0..5 {
        let mut n = notification(&t, &format!("n{}", 4 - i), &["bob"]);
        n["created_at"] = json!(now - 60_000 + i);
        assert_eq!(post(&node, &n, Some(SERVICE)).await.0, 202);
        bob.expect("notification").await;
    }
    let list = bob.ok("notification:list", json!({"limit": 100})).await;
    let ids: Vec<&str> = list["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["n0", "n1", "n2"]);
    assert_eq!(
        bob.err("notification:list", json!({"limit": 0})).await,
        "bad_request"
    );
    assert_eq!(
        bob.err("notification:list", json!({"limit": 101})).await,
        "bad_request"
    );
}

#[tokio::test]
async fn preferences_round_trip_and_bad_payloads_get_bad_request() {
    let node = start(mk_config()).await;
    let c = notif_user(&node, &fresh("t"), "carol").await;
    let p = c.ok("notification:get-preferences", json!({})).await["preferences"].clone();
    assert_eq!(
        p,
        json!({"quiet_hours": null, "min_priority": "all",
               "types": {"message": true, "call": true, "mention": true, "system": true},
               "channels": {"push": true, "in_app": true, "email": false}})
    );
    let set = c
        .ok(
            "notification:set-preferences",
            json!({"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Europe/Paris"}, "min_priority": "high", "types": {"system": false}}),
        )
        .await;
    assert_eq!(
        set["preferences"]["quiet_hours"]["timezone"],
        "Europe/Paris"
    );
    assert_eq!(set["preferences"]["types"]["system"], false);
    assert_eq!(set["preferences"]["types"]["call"], true);
    let got = c.ok("notification:get-preferences", json!({})).await;
    assert_eq!(got, set);
    for bad in [
        json!({"quiet_hours": {"start": "25:00", "end": "07:00", "timezone": "UTC"}}),
        json!({"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Not/AZone"}}),
        json!({"min_priority": "sometimes"}),
        json!({"channels": {"push": "yes"}}),
        json!({"channels": {"pigeon": true}}),
    ] {
        assert_eq!(
            c.err("notification:set-preferences", bad.clone()).await,
            "bad_request",
            "{bad}"
        );
    }
    let r = c
        .req_raw("notification:set-preferences", Some(json!([1, 2])))
        .await;
    assert_eq!(r["error"]["code"], "bad_request");
    // Nothing above changed the stored preferences.
    assert_eq!(c.ok("notification:get-preferences", json!({})).await, set);
}

#[tokio::test]
async fn devices_register_unregister_and_are_bounded() {
    let mut cfg = mk_config();
    // Registrations are rate-limited as room operations; this test makes many at once.
    for b in [
        &mut cfg.limits.per_socket.room,
        &mut cfg.limits.per_user.room,
    ] {
        b.burst = 1000;
    }
    let node = start(cfg).await;
    let c_tenant = fresh("t");
    let c = notif_user(&node, &c_tenant, "dave").await;
    let d = c
        .ok(
            "notification:register-device",
            json!({"platform": "fcm", "token": "tok-1", "app_id": "com.ex.app"}),
        )
        .await;
    assert_eq!(d["device"]["platform"], "fcm");
    assert_eq!(d["device"]["token"], "tok-1");
    let apns = json!({"platform": "apns", "token": "ab".repeat(32), "environment": "sandbox"});
    assert_eq!(
        c.ok("notification:register-device", apns).await["device"]["environment"],
        "sandbox"
    );
    for bad in [
        json!({"platform": "sms", "token": "x"}),
        json!({"platform": "fcm", "token": ""}),
        json!({"platform": "apns", "token": "not hex"}),
        json!({"platform": "fcm", "token": "t", "environment": "sandbox"}),
        json!({"token": "t"}),
    ] {
        assert_eq!(
            c.err("notification:register-device", bad.clone()).await,
            "bad_request",
            "{bad}"
        );
    }
    assert_eq!(
        c.ok("notification:unregister-device", json!({"token": "tok-1"}))
            .await,
        json!({})
    );
    assert_eq!(
        c.err("notification:unregister-device", json!({"token": "tok-1"}))
            .await,
        "not_found"
    );
    for i in 0..19 {
        c.ok(
            "notification:register-device",
            json!({"platform": "fcm", "token": format!("t-{i}")}),
        )
        .await;
    }
    assert_eq!(
        c.err(
            "notification:register-device",
            json!({"platform": "fcm", "token": "one-too-many"})
        )
        .await,
        "forbidden"
    );
    // Re-registering a held token is a refresh, not a new device.
    c.ok(
        "notification:register-device",
        json!({"platform": "fcm", "token": "t-3"}),
    )
    .await;
}

#[tokio::test]
async fn the_service_api_needs_its_token_and_refuses_bad_notifications() {
    let node = start(mk_config()).await;
    let t = fresh("t");
    let n = notification(&t, "n1", &["alice"]);
    assert_eq!(post(&node, &n, None).await.0, 401);
    assert_eq!(post(&node, &n, Some("wrong")).await.0, 401);
    for bad in [
        json!({"id": "n1", "tenant": t, "user_ids": [], "type": "message", "title": "x"}),
        json!({"id": "n:1", "tenant": t, "user_ids": ["a"], "type": "message", "title": "x"}),
        json!({"id": "n1", "tenant": t, "user_ids": ["a"], "type": "fax", "title": "x"}),
        json!({"id": "n1", "tenant": t, "user_ids": ["a"], "type": "message", "title": ""}),
        json!({"id": "n1", "tenant": t, "user_ids": ["a"], "type": "message", "title": "x", "priority": "meh"}),
        json!("not an object"),
    ] {
        let (code, body) = post(&node, &bad, Some(SERVICE)).await;
        assert_eq!(
            (code, body["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{bad} → {body}"
        );
    }
    let off = start(crate::support::mk_config()).await;
    assert_eq!(
        post(&off, &n, Some(SERVICE)).await.0,
        401,
        "no service token configured: only tenants' service JWTs"
    );
    assert_eq!(status(&node, &t, "never-sent").await.0, 404);
}

#[tokio::test]
async fn tenants_are_walls_for_events_lists_devices_and_status() {
    let node = start(mk_config()).await;
    let (acme, evil) = (fresh("acme"), fresh("evil"));
    let a = notif_user(&node, &acme, "alice").await;
    let e = notif_user(&node, &evil, "alice").await;
    e.ok(
        "notification:register-device",
        json!({"platform": "fcm", "token": "shared-token"}),
    )
    .await;
    a.ok(
        "notification:register-device",
        json!({"platform": "fcm", "token": "shared-token"}),
    )
    .await;
    // The phone moved to acme: evil's alice no longer holds the token (and never gets
    // acme's pushes through it, nor acme evil's).
    assert_eq!(
        e.err(
            "notification:unregister-device",
            json!({"token": "shared-token"})
        )
        .await,
        "not_found"
    );

    let id = fresh("n");
    assert_eq!(
        post(&node, &notification(&acme, &id, &["alice"]), Some(SERVICE))
            .await
            .0,
        202
    );
    a.expect("notification").await;
    assert!(
        e.next("notification", Duration::from_millis(500))
            .await
            .is_none(),
        "evil's alice got acme's notification"
    );
    assert_eq!(
        e.ok("notification:list", json!({})).await["notifications"],
        json!([])
    );
    assert_eq!(
        e.ok("notification:mark-read", json!({"ids": [id]})).await["marked"],
        0
    );
    assert_eq!(
        a.ok("notification:list", json!({"unread_only": true}))
            .await["notifications"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    wait_status(&node, &acme, &id, |d| d["progress"] == "done").await;
    assert_eq!(
        status(&node, &evil, &id).await.0,
        404,
        "status through another tenant"
    );
    // Preferences are per tenant too.
    e.ok(
        "notification:set-preferences",
        json!({"types": {"message": false}}),
    )
    .await;
    assert_eq!(
        a.ok("notification:get-preferences", json!({})).await["preferences"]["types"]["message"],
        true
    );
}
