//! One cross-tenant matrix over every event of all four namespaces and every HTTP route,
//! on two nodes sharing Redis, in both directions: a victim tenant's users (alice, bob)
//! on one node use every event on their own data, while an intruder tenant's users with
//! the same user ids, on the other node, call every event with the victim's room, call,
//! notification and device ids, and every route with their own tenant-scoped service
//! token aimed at the victim. Everything each side is sent — every event of any name and
//! every ack — is recorded; at the end the intruder's record holds nothing of the
//! victim's, and the victim's nothing of the intruder's. The requests come from one
//! builder that must cover `protocol.rs`'s lists, so an event or route added there and
//! not here fails the test.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::protocol::{self, NAMESPACES, ROUTES};
use crate::support::*;
use crate::tenants::every_event;

/// What a side's requests aim at.
struct Target {
    /// A room with messages in it, a live call, a notification, a device token.
    room: String,
    call: String,
    notification: String,
    device: String,
    /// Text only this side writes (message bodies, status, SDP, ...).
    mark: String,
    /// The token an `auth:refresh` sends.
    refresh: String,
}

/// Every request event of `ns`, aimed at `t`.
fn every_request(ns: &str, t: &Target) -> Vec<(&'static str, Value)> {
    let (room, call, mark) = (t.room.as_str(), t.call.as_str(), t.mark.as_str());
    let mut all = match ns {
        "/chat" => {
            let mut chat = every_event(room);
            for (_, payload) in &mut chat {
                if payload.get("body").is_some() {
                    payload["body"] = json!(mark);
                }
            }
            chat.extend([
                (
                    "privacy:set",
                    json!({"read_receipts": true, "typing_indicators": true}),
                ),
                ("sync:get", json!({})),
                (
                    "room:create",
                    json!({"room_id": room, "name": mark, "visibility": "public"}),
                ),
            ]);
            chat
        }
        "/presence" => vec![
            (
                "presence:set-status",
                json!({"status": "busy", "message": mark}),
            ),
            ("presence:activity", json!({})),
            ("presence:subscribe", json!({"user_ids": ["alice", "bob"]})),
            ("presence:get-batch", json!({"user_ids": ["alice", "bob"]})),
            (
                "presence:unsubscribe",
                json!({"user_ids": ["alice", "bob"]}),
            ),
        ],
        "/webrtc" => vec![
            ("webrtc:get-ice-servers", json!({})),
            (
                "webrtc:offer",
                json!({"call_id": call, "to_user_id": "bob", "sdp": mark}),
            ),
            (
                "webrtc:answer",
                json!({"call_id": call, "to_user_id": "bob", "sdp": mark}),
            ),
            (
                "webrtc:ice-candidate",
                json!({"call_id": call, "to_user_id": "bob", "candidate": mark}),
            ),
            (
                "call:report-quality",
                json!({"call_id": call, "latency_ms": 900, "packet_loss_percentage": 9, "jitter_ms": 90, "bitrate_kbps": 1}),
            ),
            (
                "call:add-participant",
                json!({"call_id": call, "user_id": "carol"}),
            ),
            (
                "call:remove-participant",
                json!({"call_id": call, "user_id": "carol"}),
            ),
            ("call:answer", json!({"call_id": call})),
            ("call:reject", json!({"call_id": call, "reason": mark})),
            ("call:hangup", json!({"call_id": call, "reason": mark})),
            ("call:history", json!({})),
            (
                "call:initiate",
                json!({"callee_id": "bob", "media_type": "audio"}),
            ),
            (
                "call:create-group",
                json!({"participant_ids": ["alice", "bob"], "media_type": "video"}),
            ),
        ],
        "/notifications" => vec![
            ("notification:list", json!({})),
            ("notification:get-preferences", json!({})),
            ("notification:mark-read", json!({"ids": [t.notification]})),
            ("notification:unregister-device", json!({"token": t.device})),
            (
                "notification:register-device",
                json!({"platform": "fcm", "token": t.device}),
            ),
            (
                "notification:set-preferences",
                json!({"min_priority": "high"}),
            ),
        ],
        _ => panic!("no namespace {ns}"),
    };
    all.push(("auth:refresh", json!({"token": t.refresh})));
    all
}

/// Every route, called with `bearer` (an intruder's scoped service token) and aimed at
/// the victim tenant's data; the status each must answer.
fn every_route(victim: &str, t: &Target) -> Vec<(&'static str, &'static str, String, Value, u16)> {
    vec![
        // No tenant data behind it; served on the operators' port only.
        ("GET", "/metrics", "/metrics".into(), Value::Null, 200),
        (
            "POST",
            "/admin/v1/revocations",
            "/admin/v1/revocations".into(),
            json!({"tenant": victim, "user_id": "alice"}),
            401,
        ),
        (
            "GET",
            "/admin/v1/tenants/{tenant}/presence/metrics",
            format!("/admin/v1/tenants/{victim}/presence/metrics"),
            Value::Null,
            401,
        ),
        (
            "GET",
            "/admin/v1/tenants/{tenant}/calls/quality",
            format!("/admin/v1/tenants/{victim}/calls/quality"),
            Value::Null,
            401,
        ),
        (
            "POST",
            "/api/v1/notifications",
            "/api/v1/notifications".into(),
            notification(victim, &unique("n"), &t.mark),
            403,
        ),
        (
            "GET",
            "/api/v1/tenants/{tenant}/notifications/{id}",
            format!("/api/v1/tenants/{victim}/notifications/{}", t.notification),
            Value::Null,
            403,
        ),
        (
            "PUT",
            "/api/v1/tenants/{tenant}/users/{user}/email",
            format!("/api/v1/tenants/{victim}/users/alice/email"),
            json!({"email": "intruder@example.test"}),
            403,
        ),
    ]
}

fn notification(tenant: &str, id: &str, mark: &str) -> Value {
    json!({"id": id, "tenant": tenant, "user_ids": ["alice", "bob"], "type": "message",
           "priority": "high", "title": mark, "body": mark, "data": {"mark": mark}})
}

async fn http(node: &Node, method: &str, path: &str, bearer: &str, body: &Value) -> (u16, String) {
    let c = reqwest::Client::new();
    let mut r = c
        .request(method.parse().expect("method"), node.url(path))
        .bearer_auth(bearer);
    if !body.is_null() {
        r = r.json(body);
    }
    let resp = r.send().await.expect("http");
    (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    )
}

/// One user of `tenant` on all four namespaces.
struct Person {
    clients: Vec<(&'static str, Client)>,
}

impl Person {
    async fn connect(node: &Node, tenant: &str, sub: &str) -> Person {
        let t = token(&claims(tenant, sub));
        let mut clients = Vec::new();
        for (ns, _) in NAMESPACES {
            let c = Client::connect_ns(node, ns, Some(json!({ "token": t })), None)
                .await
                .unwrap_or_else(|e| panic!("{tenant}/{sub} on {ns}: {e:?}"));
            clients.push((*ns, c));
        }
        Person { clients }
    }

    fn on(&self, ns: &str) -> &Client {
        &self
            .clients
            .iter()
            .find(|(n, _)| *n == ns)
            .expect("namespace")
            .1
    }

    /// Every request event, in namespace order; the acks as text.
    async fn call_everything(&self, t: &Target) -> Vec<String> {
        let mut acks = Vec::new();
        for (ns, c) in &self.clients {
            for (event, payload) in every_request(ns, t) {
                let ack = c.req(event, payload.clone()).await;
                assert_ack(event, &payload, &ack);
                acks.push(format!("{ns} {event} → {ack}"));
            }
        }
        acks
    }

    /// Everything this person was sent (waits `within`), as `ns event data` lines.
    async fn record(&self, within: Duration) -> Vec<String> {
        let all = futures::future::join_all(self.clients.iter().map(|(ns, c)| async move {
            c.received(within)
                .await
                .into_iter()
                .map(|(e, d)| format!("{ns} {e} {d}"))
                .collect::<Vec<_>>()
        }))
        .await;
        all.into_iter().flatten().collect()
    }
}

fn leaks<'a>(record: &'a [String], secrets: &[&str]) -> Vec<&'a String> {
    record
        .iter()
        .filter(|line| secrets.iter().any(|s| line.contains(s)))
        .collect()
}

/// The victim tenant on `home`, the intruder on `away`.
async fn one_way(home: &Node, away: &Node, victim: &str, intruder: &str) {
    let vmark = unique("victim-secret");
    let imark = unique("intruder-secret");
    let (alice, bob) = (
        Person::connect(home, victim, "alice").await,
        Person::connect(home, victim, "bob").await,
    );
    // The victim's data: a room with a message, a second room for its own exercise, a
    // live call, a status, a device and a notification.
    let room = unique("room");
    let own_room = unique("room");
    for r in [&room, &own_room] {
        alice
            .on("/chat")
            .ok("room:create", json!({"room_id": r, "visibility": "public"}))
            .await;
        bob.on("/chat").ok("room:join", json!({"room_id": r})).await;
    }
    alice
        .on("/chat")
        .ok("message:send", json!({"room_id": room, "body": vmark}))
        .await;
    alice
        .on("/presence")
        .ok(
            "presence:set-status",
            json!({"status": "busy", "message": vmark}),
        )
        .await;
    bob.on("/presence")
        .ok("presence:subscribe", json!({"user_ids": ["alice"]}))
        .await;
    let call = alice
        .on("/webrtc")
        .ok(
            "call:initiate",
            json!({"callee_id": "bob", "media_type": "audio"}),
        )
        .await["call"]["id"]
        .as_str()
        .expect("call id")
        .to_owned();
    let device = unique("device-token");
    bob.on("/notifications")
        .ok(
            "notification:register-device",
            json!({"platform": "fcm", "token": device}),
        )
        .await;
    let notification_id = unique("n");
    let (status, body) = http(
        home,
        "POST",
        "/api/v1/notifications",
        SERVICE,
        &notification(victim, &notification_id, &vmark),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    alice.on("/notifications").expect("notification").await;
    let secrets = [
        vmark.as_str(),
        call.as_str(),
        notification_id.as_str(),
        device.as_str(),
    ];

    let (eve, mallory) = (
        Person::connect(away, intruder, "alice").await,
        Person::connect(away, intruder, "bob").await,
    );
    // The intruder aims at the victim's ids, with the victim's own token to refresh to.
    let aimed = Target {
        room: room.clone(),
        call: call.clone(),
        notification: notification_id.clone(),
        device: device.clone(),
        mark: imark.clone(),
        refresh: token(&claims(victim, "alice")),
    };
    let own = Target {
        room: own_room,
        call: call.clone(),
        notification: notification_id.clone(),
        device: format!("{vmark}-other-device"),
        mark: vmark.clone(),
        refresh: token(&claims(victim, "alice")),
    };
    let (scoped, _) = service_token(intruder);
    let (intruder_acks, victim_acks, routes) = tokio::join!(
        async {
            let mut acks = eve.call_everything(&aimed).await;
            acks.extend(mallory.call_everything(&aimed).await);
            acks
        },
        alice.call_everything(&own),
        async {
            let mut answers = Vec::new();
            for (method, route, path, body, want) in every_route(victim, &aimed) {
                let (status, text) = http(home, method, &path, &scoped, &body).await;
                assert_eq!(
                    status, want,
                    "{method} {path} with {intruder}'s service token → {text}"
                );
                answers.push(format!("{method} {route} → {text}"));
            }
            // In its own tenant, to users with the victim's user ids.
            let (status, text) = http(
                away,
                "POST",
                "/api/v1/notifications",
                &scoped,
                &notification(intruder, &unique("n"), &imark),
            )
            .await;
            assert_eq!(status, 202, "{text}");
            answers
        },
    );
    // The intruder's refresh to the victim's token is refused.
    assert!(
        intruder_acks
            .iter()
            .filter(|a| a.contains("auth:refresh"))
            .all(|a| a.contains("unauthorized")),
        "{intruder_acks:#?}"
    );
    assert!(
        victim_acks
            .iter()
            .any(|a| a.contains("message:send") && a.contains("\"ok\":true"))
    );

    let settle = Duration::from_millis(700);
    let (heard_by_intruder, heard_by_victim) = tokio::join!(
        async {
            let mut r = eve.record(settle).await;
            r.extend(mallory.record(settle).await);
            r
        },
        async {
            let mut r = alice.record(settle).await;
            r.extend(bob.record(settle).await);
            r
        },
    );
    // Events: none names anything of the victim's. Answers may echo the ids the intruder
    // sent (`no call "c_..."`), never the victim's content.
    let leaked = leaks(&heard_by_intruder, &secrets);
    assert!(
        leaked.is_empty(),
        "{intruder} was sent {victim}'s data: {leaked:#?}\nall it was sent: {heard_by_intruder:#?}"
    );
    let answers = [intruder_acks, routes].concat();
    let leaked = leaks(&answers, &[vmark.as_str()]);
    assert!(
        leaked.is_empty(),
        "{intruder} was answered with {victim}'s data: {leaked:#?}"
    );
    let leaked = leaks(&heard_by_victim, &[imark.as_str()]);
    assert!(
        leaked.is_empty(),
        "{victim} was sent {intruder}'s data: {leaked:#?}"
    );
    // The recorder hears what it should: bob got the victim's own traffic.
    assert!(
        heard_by_victim
            .iter()
            .any(|l| l.starts_with("/chat message:new") && l.contains(&vmark)),
        "{heard_by_victim:#?}"
    );
}

#[test]
fn the_matrix_covers_every_listed_event_and_route() {
    let t = Target {
        room: "r".into(),
        call: "c".into(),
        notification: "n".into(),
        device: "d".into(),
        mark: "m".into(),
        refresh: "t".into(),
    };
    for (ns, _) in NAMESPACES {
        let built: BTreeSet<&str> = every_request(ns, &t).iter().map(|(e, _)| *e).collect();
        let listed: BTreeSet<&str> = protocol::events(ns).into_iter().collect();
        assert_eq!(built, listed, "the matrix's requests on {ns}");
    }
    let built: BTreeSet<(&str, &str)> = every_route("v", &t)
        .iter()
        .map(|(m, r, ..)| (*m, *r))
        .collect();
    let listed: BTreeSet<(&str, &str)> = ROUTES.iter().copied().collect();
    assert_eq!(built, listed, "the matrix's routes");
}

#[tokio::test]
async fn nothing_crosses_tenants_on_any_event_or_route_either_way() {
    // Ringing calls end after 5 s: the calls each side starts are over before the sides
    // swap (a user in a ringing call cannot start another).
    let set = [("service_token", SERVICE), ("calls.ringing_timeout", "5s")];
    let Some((n1, n2)) = redis_pair(&set).await else {
        return;
    };
    let (acme, globex) = (unique("acme"), unique("globex"));
    one_way(&n1, &n2, &acme, &globex).await;
    tokio::time::sleep(Duration::from_millis(5500)).await;
    one_way(&n2, &n1, &globex, &acme).await;
}
