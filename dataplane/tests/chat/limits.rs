//! A flooder is slowed, then disconnected; others are unaffected.

use std::time::Duration;

use serde_json::json;
use switchboard_crds::config::Bucket;

use crate::support::*;

#[tokio::test]
async fn flooder_is_rate_limited_then_disconnected() {
    let mut cfg = mk_config();
    cfg.limits.per_socket.message = Bucket {
        rate: 1.0,
        burst: 5,
    };
    cfg.limits.abuse_threshold = 10;
    let node = start(cfg).await;
    let flooder = user(&node, "acme", "flooder").await;
    let calm = user(&node, "acme", "calm").await;
    flooder
        .ok(
            "room:create",
            json!({"room_id": "r", "visibility": "public", "members": ["calm"]}),
        )
        .await;

    let mut codes = Vec::new();
    // Burst of 5, then refusals; the 10th refusal crosses the abuse threshold.
    for i in 0..15 {
        let r = flooder
            .req(
                "message:send",
                json!({"room_id": "r", "body": format!("spam {i}")}),
            )
            .await;
        codes.push(if r["ok"] == true {
            "ok".to_owned()
        } else {
            r["error"]["code"].as_str().unwrap().to_owned()
        });
    }
    assert_eq!(codes.iter().filter(|c| *c == "ok").count(), 5, "{codes:?}");
    assert!(
        codes.iter().skip(5).all(|c| c == "rate_limited"),
        "{codes:?}"
    );
    assert!(
        flooder.wait_closed(Duration::from_secs(2)).await,
        "past the abuse threshold the flooder is disconnected"
    );
    // The calm user still chats.
    calm.ok("message:send", json!({"room_id": "r", "body": "hello"}))
        .await;
    let m = node.metrics().await;
    assert!(
        m.contains("switchboard_forced_disconnects_total{kind=\"abuse\"} 1"),
        "{m}"
    );
}
