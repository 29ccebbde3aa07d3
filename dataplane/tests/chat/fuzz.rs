//! Arbitrary JSON to every /chat event: every answer is a well-formed ack with a
//! protocol error code, and the node keeps serving.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};

use crate::support::*;

const CODES: &[&str] = &[
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "conflict",
    "busy",
    "rate_limited",
    "payload_too_large",
    "unavailable",
    "internal",
];

const EVENTS: &[&str] = &[
    "room:create",
    "room:join",
    "room:leave",
    "room:invite",
    "room:members",
    "message:send",
    "message:history",
    "message:delivered",
    "receipt:read",
    "receipt:batch",
    "unread:get",
    "typing:start",
    "typing:stop",
    "typing:get-aggregated",
    "privacy:set",
];

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z:{} ]{0,12}".prop_map(Value::from),
        Just(json!("general")),
        Just(json!(-1)),
        Just(json!(u64::MAX)),
    ];
    let key = prop_oneof![
        Just("room_id".to_owned()),
        Just("body".to_owned()),
        Just("up_to_seq".to_owned()),
        Just("visibility".to_owned()),
        Just("user_ids".to_owned()),
        Just("receipts".to_owned()),
        Just("limit".to_owned()),
        Just("meta".to_owned()),
        Just("kind".to_owned()),
        Just("reply_to".to_owned()),
        "[a-z_]{1,8}",
    ];
    leaf.prop_recursive(3, 24, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn assert_ack(event: &str, payload: &Value, ack: &Value) {
    match ack["ok"].as_bool() {
        Some(true) => assert!(ack.get("data").is_some(), "{event} {payload} → {ack}"),
        Some(false) => {
            let code = ack["error"]["code"].as_str().unwrap_or_default();
            assert!(
                CODES.contains(&code),
                "{event} {payload} → unknown code in {ack}"
            );
            assert!(
                ack["error"]["message"].is_string(),
                "{event} {payload} → {ack}"
            );
        }
        None => panic!("{event} {payload} → not an ack envelope: {ack}"),
    }
}

#[tokio::test]
async fn arbitrary_payloads_get_typed_answers() {
    let mut cfg = mk_config();
    // The fuzzer sends fast; it is not testing the limiter.
    for b in [&mut cfg.limits.per_socket, &mut cfg.limits.per_user] {
        for bucket in [&mut b.message, &mut b.typing, &mut b.read, &mut b.room] {
            bucket.rate = 10_000.0;
            bucket.burst = 10_000;
        }
    }
    let node = start(cfg).await;
    let client = user(&node, "acme", "fuzzer").await;
    client
        .ok(
            "room:create",
            json!({"room_id": "general", "visibility": "public"}),
        )
        .await;

    // Shapes that are not objects at all, and no payload.
    for event in EVENTS {
        for payload in [
            json!("text"),
            json!(42),
            json!([1, 2]),
            json!(null),
            json!(true),
        ] {
            let ack = client.req(event, payload.clone()).await;
            assert_ack(event, &payload, &ack);
        }
        let ack = client.req_raw(event, None).await;
        assert_ack(event, &Value::Null, &ack);
    }

    let mut runner = TestRunner::deterministic();
    let strategy = arb_json();
    for i in 0..400 {
        let payload = strategy.new_tree(&mut runner).expect("value").current();
        let event = EVENTS[i % EVENTS.len()];
        let ack = client.req(event, payload.clone()).await;
        assert_ack(event, &payload, &ack);
    }
    // Still serving.
    client
        .ok(
            "message:send",
            json!({"room_id": "general", "body": "still here"}),
        )
        .await;
    assert_eq!(
        reqwest::get(node.url("/healthz")).await.unwrap().status(),
        200
    );
}
