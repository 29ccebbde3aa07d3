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

/// Connect, send 60 messages, disconnect, again and again for 5 s, spread over `nodes`:
/// how many were accepted, and over how long. Each connection brings a fresh socket
/// bucket (20 messages); only the user's budget can hold the loop.
async fn reconnect_loop(nodes: &[&Node], tenant: &str) -> (usize, Duration) {
    let owner = user(nodes[0], tenant, "owner").await;
    owner
        .ok(
            "room:create",
            json!({"room_id": "r", "visibility": "public"}),
        )
        .await;
    let started = tokio::time::Instant::now();
    let mut accepted = 0;
    let mut round = 0;
    while started.elapsed() < Duration::from_secs(5) {
        let flooder = user(nodes[round % nodes.len()], tenant, "flooder").await;
        round += 1;
        flooder.ok("room:join", json!({"room_id": "r"})).await;
        for i in 0..60 {
            let r = flooder
                .req(
                    "message:send",
                    json!({"room_id": "r", "body": format!("m{i}")}),
                )
                .await;
            if r["ok"] == true {
                accepted += 1;
            } else {
                assert_eq!(r["error"]["code"], "rate_limited", "{r}");
            }
        }
        flooder.close().await;
    }
    (accepted, started.elapsed())
}

/// Default budgets; the abuse threshold out of the way (a socket that finds the user's
/// budget spent gets ~59 refusals of 60).
fn loop_config() -> switchboard_crds::config::DataplaneConfig {
    let mut c = mk_config();
    c.limits.abuse_threshold = 1000;
    c
}

/// Within 10 % of what the default per-user message budget (20/s, burst 40) allows.
fn assert_within_budget(accepted: usize, over: Duration, what: &str) {
    let expected = 40.0 + 20.0 * over.as_secs_f64();
    eprintln!("{what}: {accepted} messages accepted in {over:.1?} (budget: {expected:.0})");
    assert!(
        (accepted as f64 - expected).abs() <= expected * 0.1,
        "{what}: {accepted} accepted in {over:?}, budget {expected:.0} ± 10 %"
    );
}

/// Issue 14: a reconnect loop used to get ~20 000 messages through in 5 s (the user's
/// bucket went with their last socket).
#[tokio::test]
async fn a_reconnect_loop_gets_the_user_budget_and_no_more() {
    let node = start(loop_config()).await;
    let tenant = format!("rl-{}", uuid::Uuid::new_v4().simple());
    let (accepted, over) = reconnect_loop(&[&node], &tenant).await;
    assert_within_budget(accepted, over, "reconnect loop, one node");
}

/// The same loop alternating between two nodes sharing Redis: one budget, not one per
/// node.
#[tokio::test]
async fn two_nodes_share_one_user_budget() {
    let Some(url) = redis_url() else {
        return;
    };
    let mk = |id: &str| {
        let mut c = loop_config();
        c.redis.url = Some(url.clone());
        c.node_id = Some(format!("{id}-{}", uuid::Uuid::new_v4().simple()));
        c
    };
    let (a, b) = (start(mk("rl-a")).await, start(mk("rl-b")).await);
    let tenant = format!("rl-{}", uuid::Uuid::new_v4().simple());
    let (accepted, over) = reconnect_loop(&[&a, &b], &tenant).await;
    assert_within_budget(accepted, over, "reconnect loop over two nodes");
}
