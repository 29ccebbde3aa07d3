//! Correctness under faults: a stored message is always delivered, and presence and
//! online writes after a disconnect land even when the store fails for a while.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use switchboard_dataplane::error::StoreError;
use switchboard_dataplane::presence::{Change, PresenceStore, Snapshot, Transition};
use switchboard_dataplane::receipts::{Kind, Privacy, ReceiptStore};
use switchboard_dataplane::typing::{TypingStore, Typist};

use crate::support::*;

fn down() -> StoreError {
    StoreError::Unavailable("injected failure".into())
}

/// Receipts whose pointers cannot move; everything else passes through.
struct NoAdvance(Arc<dyn ReceiptStore>);

#[async_trait]
impl ReceiptStore for NoAdvance {
    async fn advance(&self, _: &str, _: &str, _: &str, _: Kind, _: u64) -> Result<u64, StoreError> {
        Err(down())
    }
    async fn pointers(
        &self,
        t: &str,
        u: &str,
        rooms: &[String],
        k: Kind,
    ) -> Result<Vec<u64>, StoreError> {
        self.0.pointers(t, u, rooms, k).await
    }
    async fn forget_room(&self, t: &str, r: &str, users: &[String]) -> Result<(), StoreError> {
        self.0.forget_room(t, r, users).await
    }
    async fn privacy(&self, t: &str, u: &str) -> Result<Privacy, StoreError> {
        self.0.privacy(t, u).await
    }
    async fn set_privacy(&self, t: &str, u: &str, p: Privacy) -> Result<(), StoreError> {
        self.0.set_privacy(t, u, p).await
    }
}

/// Typing indicators that start but cannot stop.
struct NoStop(Arc<dyn TypingStore>);

#[async_trait]
impl TypingStore for NoStop {
    async fn start(&self, t: &str, r: &str, who: Typist, now: i64) -> Result<bool, StoreError> {
        self.0.start(t, r, who, now).await
    }
    async fn stop(&self, _: &str, _: &str, _: &str, _: i64) -> Result<bool, StoreError> {
        Err(down())
    }
    async fn expire(&self, t: &str, r: &str, u: &str, now: i64) -> Result<bool, StoreError> {
        self.0.expire(t, r, u, now).await
    }
    async fn clear_room(&self, t: &str, r: &str) -> Result<(), StoreError> {
        self.0.clear_room(t, r).await
    }
    async fn active(&self, t: &str, r: &str, now: i64) -> Result<Vec<Typist>, StoreError> {
        self.0.active(t, r, now).await
    }
}

/// The value of a counter line of `/metrics` (0 when absent).
fn counter(metrics: &str, line_start: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_stored_message_is_acked_ok_and_broadcast_when_receipts_and_typing_fail() {
    let node = start_with(mk_config(), |mut s| {
        s.receipts = Arc::new(NoAdvance(s.receipts));
        s.typing = Arc::new(NoStop(s.typing));
        s
    })
    .await;
    let alice = user(&node, "acme", "alice").await;
    let bob = user(&node, "acme", "bob").await;
    alice
        .ok(
            "room:create",
            json!({"room_id": "r", "visibility": "private", "members": ["bob"]}),
        )
        .await;
    alice.ok("typing:start", json!({"room_id": "r"})).await;
    let sent = alice
        .req("message:send", json!({"room_id": "r", "body": "hello"}))
        .await;
    assert_eq!(sent["ok"], true, "the ack of a stored message: {sent}");
    assert_eq!(sent["data"]["message"]["seq"], 1, "{sent}");
    let got = bob
        .next("message:new", Duration::from_secs(1))
        .await
        .expect("bob gets the stored message");
    assert_eq!(got["message"]["body"], "hello");
    // It is in the history too, and the failures were counted by kind.
    let history = bob.ok("message:history", json!({"room_id": "r"})).await;
    assert_eq!(history["messages"].as_array().unwrap().len(), 1);
    let m = node.metrics().await;
    let fails = |kind: &str| {
        counter(
            &m,
            &format!("switchboard_side_effect_failures_total{{kind=\"{kind}\"}}"),
        )
    };
    assert_eq!(fails("receipt"), 2.0, "read and delivered pointers: {m}");
    assert_eq!(fails("typing"), 1.0, "{m}");
    // Another tenant's member of a room of the same name saw nothing.
    let intruder = user(&node, "globex", "bob").await;
    assert!(
        intruder
            .next("message:new", Duration::from_millis(300))
            .await
            .is_none()
    );
}

/// A presence store whose disconnects fail `fail` times before they land.
struct FlakyDisconnect {
    inner: Arc<dyn PresenceStore>,
    fail: usize,
    tried: AtomicUsize,
}

#[async_trait]
impl PresenceStore for FlakyDisconnect {
    async fn change(
        &self,
        t: &str,
        u: &str,
        change: &Change,
        now: i64,
    ) -> Result<Option<(Snapshot, Transition)>, StoreError> {
        if matches!(change, Change::Disconnect { .. })
            && self.tried.fetch_add(1, Ordering::SeqCst) < self.fail
        {
            return Err(down());
        }
        self.inner.change(t, u, change, now).await
    }
    async fn snapshots(&self, t: &str, users: &[String]) -> Result<Vec<Snapshot>, StoreError> {
        self.inner.snapshots(t, users).await
    }
    async fn heartbeat(&self, node: &str, ttl: Duration) -> Result<(), StoreError> {
        self.inner.heartbeat(node, ttl).await
    }
    async fn dead_nodes(&self) -> Result<Vec<String>, StoreError> {
        self.inner.dead_nodes().await
    }
    async fn node_conns(&self, node: &str) -> Result<Vec<(String, String, String)>, StoreError> {
        self.inner.node_conns(node).await
    }
    async fn claim_reap(&self, node: &str) -> Result<bool, StoreError> {
        self.inner.claim_reap(node).await
    }
    async fn forget_node(&self, node: &str) -> Result<(), StoreError> {
        self.inner.forget_node(node).await
    }
    async fn record(
        &self,
        t: &str,
        u: &str,
        tr: Transition,
        date: &str,
    ) -> Result<u64, StoreError> {
        self.inner.record(t, u, tr, date).await
    }
    async fn online_count(&self, t: &str) -> Result<u64, StoreError> {
        self.inner.online_count(t).await
    }
    async fn history(
        &self,
        t: &str,
        dates: &[String],
    ) -> Result<Vec<switchboard_dataplane::presence::Daily>, StoreError> {
        self.inner.history(t, dates).await
    }
}

#[tokio::test]
async fn a_failed_presence_write_after_a_disconnect_is_retried_until_it_lands() {
    const FAILURES: usize = 3;
    let node = start_with(mk_config(), |mut s| {
        s.presence = Arc::new(FlakyDisconnect {
            inner: s.presence,
            fail: FAILURES,
            tried: AtomicUsize::new(0),
        });
        s
    })
    .await;
    let watcher = presence_user(&node, "acme", "watcher").await;
    watcher
        .ok("presence:subscribe", json!({"user_ids": ["alice"]}))
        .await;
    let alice = presence_user(&node, "acme", "alice").await;
    let online = watcher
        .next("presence:update", Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(online["presence"]["status"], "online");
    alice.close().await;
    // Three failed writes, then one that lands: alice goes offline for everyone.
    let offline = watcher
        .next("presence:update", Duration::from_secs(10))
        .await
        .expect("the disconnect lands after the store recovers");
    assert_eq!(offline["presence"]["status"], "offline", "{offline}");
    assert_eq!(
        watcher
            .ok("presence:get-batch", json!({"user_ids": ["alice"]}))
            .await["presences"][0]["status"],
        "offline"
    );
    let m = node.metrics().await;
    assert_eq!(
        counter(&m, "switchboard_disconnect_write_retries_total"),
        FAILURES as f64,
        "{m}"
    );
}

/// Whether `room:members` shows `who` online.
async fn shown_online(c: &Client, room: &str, who: &str) -> bool {
    let m = c.ok("room:members", json!({ "room_id": room })).await;
    m["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["user_id"] == who)
        .unwrap_or_else(|| panic!("{who} is not a member: {m}"))["online"]
        == true
}

#[tokio::test]
async fn a_killed_nodes_chat_online_flags_go_within_two_ttls() {
    let Some(url) = redis_url() else { return };
    let ttl = Duration::from_secs(2);
    let (mut doomed, survivor) = doomed_and_survivor(&url).await;
    let tenant = unique("t");
    let bob = user(&survivor, &tenant, "bob").await;
    bob.ok(
        "room:create",
        json!({"room_id": "r", "visibility": "private", "members": ["alice", "carol"]}),
    )
    .await;
    // alice is on the doomed node only (/chat, no /presence); carol on both.
    let _alice = user(&doomed.node, &tenant, "alice").await;
    let _carol_doomed = user(&doomed.node, &tenant, "carol").await;
    let _carol = user(&survivor, &tenant, "carol").await;
    assert!(shown_online(&bob, "r", "alice").await);

    doomed.child.kill().unwrap(); // SIGKILL: no goodbye
    let killed = tokio::time::Instant::now();
    let deadline = killed + ttl * 2 + Duration::from_millis(1000);
    while shown_online(&bob, "r", "alice").await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "alice still shown online {:?} after her node was killed (heartbeat TTL {ttl:?})",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "alice's online flag gone {:?} after SIGKILL",
        killed.elapsed()
    );
    assert!(
        shown_online(&bob, "r", "carol").await,
        "carol's connection on the survivor keeps her online"
    );
    // The same user ids in another tenant were never online.
    let other = unique("t");
    let eve = user(&survivor, &other, "eve").await;
    eve.ok(
        "room:create",
        json!({"room_id": "r", "visibility": "private", "members": ["carol"]}),
    )
    .await;
    assert!(!shown_online(&eve, "r", "carol").await);
}
