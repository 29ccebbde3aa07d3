//! /webrtc against real parts: TURN credentials from `webrtc:get-ice-servers` tried on
//! the coturn of tests/env with `turnutils_uclient`; a ringing timeout that fires after
//! the node that started the call was SIGKILLed (two nodes, real Redis); call history
//! documents read back from the MongoDB-wire server of tests/env.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../chat/support.rs"]
#[allow(dead_code)]
mod support;

#[path = "../chat/protocol.rs"]
#[allow(dead_code)]
mod protocol;

use std::process::Command;
use std::time::Duration;

use mongodb::bson::{Document, doc};
use serde_json::{Value, json};
use switchboard_crds::config::DataplaneConfig;
use switchboard_crds::duration::HumanDuration;

use support::*;

use switchboard_smoke::endpoint as env;

/// The tests sharing Redis run one at a time: timers and dead-node sweeps are shared by
/// every node on that Redis, and a node torn down by another test while it holds a timer
/// lease or a sweep would delay what this test times.
static SHARED_REDIS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// `from` calls `callee`; the ack's `call`.
async fn initiate(from: &Client, callee: &str, media_type: &str) -> Value {
    from.ok(
        "call:initiate",
        json!({ "callee_id": callee, "media_type": media_type }),
    )
    .await["call"]
        .clone()
}

async fn webrtc_user(node: &Node, tenant: &str, sub: &str) -> Client {
    let t = token(&claims(tenant, sub));
    Client::connect_ns(node, "/webrtc", Some(json!({ "token": t })), None)
        .await
        .expect("connect /webrtc")
}

// === TURN credentials on the real coturn ===

/// `turnutils_uclient` between two allocations (-y) with these credentials: did the
/// messages go through the relay?
fn allocates(port: &str, username: &str, password: &str) -> (bool, String) {
    let out = Command::new("timeout")
        .args([
            "60",
            "turnutils_uclient",
            "-y",
            "-c",
            "-n",
            "2",
            "-m",
            "1",
            "-v",
        ])
        .args(["-u", username, "-w", password, "-p", port, "127.0.0.1"])
        .output()
        .expect("turnutils_uclient (Debian package coturn) runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The closing `tot_recv_msgs=N` line counts what came back through the relays.
    let received = text
        .lines()
        .rev()
        .find_map(|l| l.split("tot_recv_msgs=").nth(1))
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    let relayed = out.status.success() && text.contains("Received relay addr") && received > 0;
    (relayed, text)
}

fn turn_config(secret: &str, ttl: Duration) -> Option<DataplaneConfig> {
    let mut c = mk_config();
    c.webrtc.turn_urls = vec![env("SWITCHBOARD_TEST_TURN_URL")?];
    c.webrtc.stun_urls = vec![env("SWITCHBOARD_TEST_STUN_URL")?];
    c.webrtc.turn_secret = Some(secret.to_owned());
    c.webrtc.turn_ttl = HumanDuration(ttl);
    Some(c)
}

async fn issued(config: DataplaneConfig, user: &str) -> (String, String, Value) {
    let node = start(config).await;
    let c = webrtc_user(&node, &unique("t"), user).await;
    let data = c.ok("webrtc:get-ice-servers", json!({})).await;
    let turn = data["ice_servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s.get("username").is_some())
        .cloned()
        .expect("a TURN entry");
    (
        turn["username"].as_str().unwrap().to_owned(),
        turn["credential"].as_str().unwrap().to_owned(),
        data,
    )
}

#[tokio::test]
async fn issued_turn_credentials_allocate_on_coturn_and_bad_ones_are_refused() {
    let (Some(port), Some(secret), Some(previous)) = (
        env("SWITCHBOARD_TEST_TURN_PORT"),
        env("SWITCHBOARD_TEST_TURN_SECRET"),
        env("SWITCHBOARD_TEST_TURN_PREVIOUS_SECRET"),
    ) else {
        return;
    };
    let day = Duration::from_secs(24 * 3600);

    let (user, pass, data) = issued(turn_config(&secret, day).unwrap(), "alice").await;
    assert_eq!(data["ttl"], json!(86_400));
    assert_eq!(
        data["ice_servers"][0]["urls"][0],
        json!(env("SWITCHBOARD_TEST_STUN_URL").unwrap())
    );
    let (expiry, who) = user.split_once(':').unwrap();
    assert_eq!(who, "alice");
    let left = expiry.parse::<u64>().unwrap() - switchboard_dataplane::auth::now_secs();
    assert!((86_390..=86_400).contains(&left), "expires in {left}s");
    let (ok, out) = allocates(&port, &user, &pass);
    assert!(ok, "issued credentials did not allocate:\n{out}");

    // Mid-rotation: a node still on the previous secret issues credentials coturn takes.
    let (user, pass, _) = issued(turn_config(&previous, day).unwrap(), "bob").await;
    let (ok, out) = allocates(&port, &user, &pass);
    assert!(ok, "previous-secret credentials did not allocate:\n{out}");

    // Signed with a secret coturn does not know: refused.
    let (user, pass, _) = issued(
        turn_config("not-the-secret-this-coturn-knows", day).unwrap(),
        "mallory",
    )
    .await;
    let (ok, out) = allocates(&port, &user, &pass);
    assert!(
        !ok && out.contains("Cannot complete Allocation"),
        "wrong secret allocated:\n{out}"
    );

    // Made by the same code the node uses, with an expiry a minute ago: refused.
    let issued_at = switchboard_dataplane::auth::now_secs() - 120;
    let (user, pass) = switchboard_dataplane::ice::turn_credentials(
        &secret,
        "carol",
        issued_at,
        Duration::from_secs(60),
    );
    let (ok, out) = allocates(&port, &user, &pass);
    assert!(
        !ok && out.contains("Cannot complete Allocation"),
        "expired credentials allocated:\n{out}"
    );
}

// === a ringing timeout outlives the node that started the call ===

fn redis_node_config(url: &str, ringing: Duration) -> DataplaneConfig {
    let mut c = mk_config();
    c.redis.url = Some(url.to_owned());
    c.node_id = Some(unique("survivor"));
    c.calls.ringing_timeout = HumanDuration(ringing);
    c
}

#[tokio::test]
async fn ringing_times_out_after_the_callers_node_was_killed() {
    let Some(url) = redis_url() else { return };
    let _one_at_a_time = SHARED_REDIS.lock().await;
    let ringing = Duration::from_secs(2);
    let survivor = start(redis_node_config(&url, ringing)).await;
    let mut doomed = spawn_node(
        &url,
        &unique("doomed"),
        &[("SWITCHBOARD_RINGING_TIMEOUT", "2s")],
    )
    .await;
    let tenant = unique("t");
    let alice = webrtc_user(&doomed.node, &tenant, "alice").await;
    let bob = webrtc_user(&survivor, &tenant, "bob").await;

    let call = initiate(&alice, "bob", "audio").await;
    let started = tokio::time::Instant::now();
    let incoming = bob.expect("call:incoming").await;
    assert_eq!(incoming["call"]["id"], call["id"]);

    doomed.child.kill().unwrap(); // SIGKILL: no goodbye, no timers of its own left
    let ended = bob
        .next("call:ended", ringing + Duration::from_secs(3))
        .await
        .expect("call:ended on the surviving node");
    let took = started.elapsed();
    assert_eq!(ended["reason"], "timeout");
    assert_eq!(ended["call"]["id"], call["id"]);
    assert!(
        took >= ringing - Duration::from_millis(100),
        "fired early: {took:?}"
    );
    eprintln!(
        "ringing timeout fired {took:?} after initiate (ringing_timeout {ringing:?}, caller's node SIGKILLed)"
    );
    // Bob is free again.
    let again = bob
        .ok(
            "call:initiate",
            json!({ "callee_id": "carol", "media_type": "audio" }),
        )
        .await;
    assert_eq!(again["call"]["state"], "ringing");
}

#[tokio::test]
async fn a_participant_on_a_killed_node_ends_the_call_as_disconnected() {
    let Some(url) = redis_url() else { return };
    let _one_at_a_time = SHARED_REDIS.lock().await;
    let (ttl, grace) = (Duration::from_secs(2), Duration::from_secs(1));
    let mut cfg = redis_node_config(&url, Duration::from_secs(30));
    cfg.presence.heartbeat_ttl = HumanDuration(ttl);
    cfg.calls.disconnect_grace = HumanDuration(grace);
    let survivor = start(cfg).await;
    let mut doomed = spawn_node(
        &url,
        &unique("doomed"),
        &[
            ("SWITCHBOARD_HEARTBEAT_TTL", "2s"),
            ("SWITCHBOARD_CALL_DISCONNECT_GRACE", "1s"),
        ],
    )
    .await;
    let tenant = unique("t");
    let alice = webrtc_user(&survivor, &tenant, "alice").await;
    let bob = webrtc_user(&doomed.node, &tenant, "bob").await;
    let call = initiate(&alice, "bob", "audio").await;
    bob.expect("call:incoming").await;
    bob.ok("call:answer", json!({ "call_id": call["id"] }))
        .await;
    alice.expect("call:answered").await;

    doomed.child.kill().unwrap(); // bob's node dies: no disconnect handler runs there
    let killed = tokio::time::Instant::now();
    let ended = alice
        .next("call:ended", ttl * 2 + grace + Duration::from_secs(2))
        .await
        .expect("call:ended after the dead node was swept");
    assert_eq!(ended["reason"], "disconnected");
    assert_eq!(ended["call"]["id"], call["id"]);
    let took = killed.elapsed();
    assert!(took >= grace, "ended before the grace period: {took:?}");
    eprintln!(
        "call ended as disconnected {took:?} after the callee's node was SIGKILLed (heartbeat TTL {ttl:?}, grace {grace:?})"
    );
}

// === history in MongoDB ===

#[tokio::test]
async fn ended_calls_are_written_to_mongodb_with_times_reason_and_quality() {
    let (Some(url), Some(mongo)) = (redis_url(), env("SWITCHBOARD_TEST_MONGODB_URI")) else {
        return;
    };
    let _one_at_a_time = SHARED_REDIS.lock().await;
    let database = unique("sb_calls").replace('-', "_");
    let mk = || {
        let mut c = redis_node_config(&url, Duration::from_secs(30));
        c.calls.mongodb_uri = Some(mongo.clone());
        c.calls.mongodb_database = database.clone();
        c
    };
    let (a, b) = (start(mk()).await, start(mk()).await);
    let tenant = unique("t");
    let alice = webrtc_user(&a, &tenant, "alice").await;
    let bob = webrtc_user(&b, &tenant, "bob").await;
    let call = initiate(&alice, "bob", "video").await;
    let id = call["id"].as_str().unwrap().to_owned();
    bob.expect("call:incoming").await;
    bob.ok("call:answer", json!({ "call_id": id })).await;
    let q = json!({ "call_id": id, "latency_ms": 80, "packet_loss_percentage": 0.5, "jitter_ms": 4, "bitrate_kbps": 900 });
    let issues = bob.ok("call:report-quality", q).await;
    assert_eq!(issues["issues"], json!([]));
    tokio::time::sleep(Duration::from_millis(120)).await;
    bob.ok("call:hangup", json!({ "call_id": id })).await;
    alice.expect("call:ended").await;

    // call:ended does not wait for the write: the record follows through the outbox.
    let client = mongodb::Client::with_uri_str(&mongo).await.unwrap();
    let db = client.database(&database);
    let calls = db.collection::<Document>("calls");
    let mut rec = None;
    for _ in 0..50 {
        rec = calls.find_one(doc! { "_id": &id }).await.unwrap();
        if rec.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rec = rec.expect("the call document");
    assert_eq!(rec.get_str("tenant").unwrap(), tenant);
    assert_eq!(rec.get_str("end_reason").unwrap(), "hangup");
    assert_eq!(rec.get_str("kind").unwrap(), "direct");
    assert!(rec.get_i64("duration_ms").unwrap() >= 100, "{rec:?}");
    let parts = rec.get_array("participants").unwrap();
    assert_eq!(parts.len(), 2);
    for p in parts {
        let p = p.as_document().unwrap();
        let (j, l) = (
            p.get_i64("joined_at").unwrap(),
            p.get_i64("left_at").unwrap(),
        );
        assert!(l >= j, "{p:?}");
    }
    let quality = rec.get_document("quality").unwrap();
    assert_eq!(quality.get_i64("reports").unwrap(), 1);
    let indexes = calls.list_index_names().await.unwrap();
    assert!(
        indexes.iter().any(|n| n == "tenant_user_created"),
        "{indexes:?}"
    );

    // call:history reads the same documents back; another tenant sees none of them.
    let h = alice.ok("call:history", json!({ "limit": 5 })).await;
    assert_eq!(h["calls"][0]["id"], json!(id));
    assert!(h["calls"][0].get("tenant").is_none());
    let stranger = webrtc_user(&b, &unique("t"), "alice").await;
    assert_eq!(
        stranger.ok("call:history", json!({})).await["calls"],
        json!([])
    );
    db.drop().await.unwrap();
}

// === embedded mode, and any payload gets a typed answer ===

fn embedded_config() -> DataplaneConfig {
    let mut cfg = mk_config();
    cfg.calls.ringing_timeout = HumanDuration(Duration::from_secs(1));
    // The fuzzer sends fast; it is not testing the limiter.
    lift_limits(&mut cfg);
    cfg
}

#[tokio::test]
async fn embedded_node_rings_times_out_keeps_history_and_answers_any_payload() {
    let node = start(embedded_config()).await;
    let tenant = unique("t");
    let alice = webrtc_user(&node, &tenant, "alice").await;
    let bob = webrtc_user(&node, &tenant, "bob").await;
    let call = initiate(&alice, "bob", "audio").await;
    let id = call["id"].as_str().unwrap().to_owned();
    assert_eq!(bob.expect("call:incoming").await["call"]["id"], json!(id));
    let ended = bob
        .next("call:ended", Duration::from_secs(3))
        .await
        .expect("timeout");
    assert_eq!(ended["reason"], "timeout");

    let call = initiate(&alice, "bob", "video").await;
    let id2 = call["id"].as_str().unwrap().to_owned();
    bob.ok("call:answer", json!({ "call_id": id2 })).await;
    let poor = json!({ "call_id": id2, "latency_ms": 900, "packet_loss_percentage": 0.5, "jitter_ms": 4, "bitrate_kbps": 900 });
    assert_eq!(
        bob.ok("call:report-quality", poor).await["issues"],
        json!(["high_latency"])
    );
    bob.ok("call:hangup", json!({ "call_id": id2 })).await;
    // What operators see: reports, their issues by kind, calls ended by reason.
    let metrics = node.metrics().await;
    for line in [
        "switchboard_call_quality_reports_total 1",
        "switchboard_call_quality_issues_total{kind=\"high_latency\"} 1",
        "switchboard_calls_ended_total{kind=\"timeout\"} 1",
        "switchboard_calls_ended_total{kind=\"hangup\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    let h = alice.ok("call:history", json!({})).await;
    let ids: Vec<&str> = h["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![id2.as_str(), id.as_str()]);

    // A live call so that random payloads meet a real call id too.
    let live = initiate(&alice, "bob", "audio").await["id"].clone();
    let events = protocol::events("/webrtc");
    let known = vec![live, json!("bob"), json!("audio"), json!("video")];
    fuzz(
        &alice,
        &events,
        arb_payload(protocol::WEBRTC_KEYS, known),
        400,
    )
    .await;
    assert_eq!(
        reqwest::get(node.url("/healthz")).await.unwrap().status(),
        200
    );
    alice.ok("webrtc:get-ice-servers", json!({})).await;
}

/// Pages of `call:history` in MongoDB do not skip calls created in the same millisecond.
#[tokio::test]
async fn mongodb_history_pages_break_created_at_ties_by_id() {
    use switchboard_dataplane::calls::history::{CallHistory, CallRecord, Cursor, MongoHistory};
    use switchboard_dataplane::calls::quality::Summary;
    use switchboard_dataplane::calls::{Call, Media};
    let Some(mongo) = env("SWITCHBOARD_TEST_MONGODB_URI") else {
        return;
    };
    let database = unique("sb_page").replace('-', "_");
    let h = MongoHistory::connect(&mongo, &database).await.unwrap();
    let tenant = unique("t");
    for id in ["c_a", "c_b", "c_c", "c_d"] {
        let c = Call::direct(id.into(), "alice", "bob", Media::Audio, 100).busy(100);
        h.record(&CallRecord::of(&tenant, &c, Summary::default()))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor: Option<Cursor> = None;
    loop {
        let page = h.list(&tenant, "bob", 3, cursor.as_ref()).await.unwrap();
        let Some(last) = page.last() else { break };
        cursor = Some(Cursor {
            created_at: last.created_at,
            id: Some(last.id.clone()),
        });
        seen.extend(page.iter().map(|r| r.id.clone()));
    }
    assert_eq!(seen, ["c_d", "c_c", "c_b", "c_a"]);
    assert!(
        h.list(&unique("t"), "bob", 10, None)
            .await
            .unwrap()
            .is_empty(),
        "another tenant sees none"
    );
    let client = mongodb::Client::with_uri_str(&mongo).await.unwrap();
    client.database(&database).drop().await.unwrap();
}

/// Call history per user is bounded by age (`calls.history_max_age`): a call older than
/// it is never listed, and recording one of its participants' next calls deletes it from
/// MongoDB; another tenant's old call of the same users stays until its own tenant writes.
#[tokio::test]
async fn mongodb_history_past_its_max_age_is_not_listed_and_is_deleted() {
    use switchboard_dataplane::calls::history::{CallHistory, CallRecord, MongoHistory};
    use switchboard_dataplane::calls::quality::Summary;
    use switchboard_dataplane::calls::{Call, Media};
    let Some(mongo) = env("SWITCHBOARD_TEST_MONGODB_URI") else {
        return;
    };
    let database = unique("sb_age").replace('-', "_");
    let hour = 3_600_000;
    let h = MongoHistory::connect(&mongo, &database)
        .await
        .unwrap()
        .with_max_age(Some(hour));
    let (tenant, other) = (unique("t"), unique("t"));
    let now = switchboard_dataplane::app::now_ms();
    let call =
        |id: &str, at: i64| Call::direct(id.into(), "alice", "bob", Media::Audio, at).busy(at);
    let client = mongodb::Client::with_uri_str(&mongo).await.unwrap();
    let coll = client
        .database(&database)
        .collection::<mongodb::bson::Document>("calls");
    // Written before they aged (as by a node without an age limit); call ids are unique
    // over tenants (`_id`).
    for (t, id) in [(&tenant, "c_old_1"), (&other, "c_old_2")] {
        let rec = CallRecord::of(t, &call(id, now - 2 * hour), Summary::default());
        coll.insert_one(mongodb::bson::to_document(&rec).unwrap())
            .await
            .unwrap();
    }
    assert!(h.list(&tenant, "bob", 10, None).await.unwrap().is_empty());
    let count = |t: String| {
        let coll = coll.clone();
        async move {
            coll.count_documents(mongodb::bson::doc! {"tenant": t})
                .await
                .unwrap()
        }
    };
    h.record(&CallRecord::of(
        &tenant,
        &call("c_new", now),
        Summary::default(),
    ))
    .await
    .unwrap();
    let listed: Vec<String> = h
        .list(&tenant, "bob", 10, None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, ["c_new"]);
    assert_eq!(count(tenant.clone()).await, 1, "the old call was deleted");
    assert_eq!(
        count(other.clone()).await,
        1,
        "the other tenant's is its own"
    );
    client.database(&database).drop().await.unwrap();
}

/// Default limits: a mesh peer's signaling burst (an offer and 20 candidates for each of
/// 7 others) all goes through, and reads still have their own budget afterwards.
#[tokio::test]
async fn a_mesh_peers_signaling_burst_fits_the_default_limits() {
    let node = start(mk_config()).await;
    let tenant = unique("t");
    let alice = webrtc_user(&node, &tenant, "alice").await;
    let bob = webrtc_user(&node, &tenant, "bob").await;
    let id = initiate(&alice, "bob", "video").await["id"].clone();
    bob.ok("call:answer", json!({ "call_id": id })).await;
    for i in 0..7 {
        alice
            .ok(
                "webrtc:offer",
                json!({ "call_id": id, "to_user_id": "bob", "sdp": format!("v=0 {i}") }),
            )
            .await;
        for j in 0..20 {
            let c = json!({ "candidate": format!("candidate:{i} {j} udp 1 10.0.0.1 9 typ host") });
            alice
                .ok(
                    "webrtc:ice-candidate",
                    json!({ "call_id": id, "to_user_id": "bob", "candidate": c }),
                )
                .await;
        }
    }
    for _ in 0..30 {
        alice.ok("call:history", json!({})).await;
    }
}

// === history outbox: MongoDB down, the ending node killed ===

/// A TCP proxy in front of the MongoDB server that can be cut (open connections dropped,
/// new ones refused) and restored.
struct Proxy {
    addr: std::net::SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (u, c) = (up.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !u.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let target = target.clone();
                let h = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                c.lock().unwrap().push(h);
            }
        });
        Proxy { addr, up, conns }
    }

    fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn an_ended_call_reaches_mongodb_after_an_outage_though_its_node_was_killed() {
    let (Some(url), Some(mongo)) = (redis_url(), env("SWITCHBOARD_TEST_MONGODB_URI")) else {
        return;
    };
    // mongodb://[user:pass@]host:port/...: the proxy stands in for the one host (the
    // credentials pass through it). A replica set's driver would find the other members
    // and go around the proxy, so several hosts (or mongodb+srv) cannot be tested here.
    let rest = mongo.strip_prefix("mongodb://").unwrap_or_default();
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), authority),
    };
    if host.is_empty() || host.contains(',') {
        switchboard_smoke::skip_or_fail(
            "the outage test needs SWITCHBOARD_TEST_MONGODB_URI to be mongodb:// with one host",
        );
        return;
    }
    let _one_at_a_time = SHARED_REDIS.lock().await;
    let proxy = Proxy::start(host.to_owned()).await;
    let proxied = format!("mongodb://{userinfo}{}{tail}", proxy.addr);
    let database = unique("sb_outbox").replace('-', "_");

    let mut doomed = spawn_node(
        &url,
        &unique("doomed"),
        &[
            ("SWITCHBOARD_MONGODB_URI", proxied.as_str()),
            ("SWITCHBOARD_MONGODB_DATABASE", database.as_str()),
        ],
    )
    .await;
    let mut cfg = redis_node_config(&url, Duration::from_secs(30));
    cfg.calls.mongodb_uri = Some(proxied.clone());
    cfg.calls.mongodb_database = database.clone();
    let survivor = start(cfg).await;
    let tenant = unique("t");
    let alice = webrtc_user(&doomed.node, &tenant, "alice").await;
    let bob = webrtc_user(&survivor, &tenant, "bob").await;
    let id = initiate(&alice, "bob", "audio").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    bob.expect("call:incoming").await;
    bob.ok("call:answer", json!({ "call_id": id })).await;

    proxy.cut();
    let t0 = tokio::time::Instant::now();
    alice.ok("call:hangup", json!({ "call_id": id })).await;
    let ended = bob.expect("call:ended").await;
    assert_eq!(ended["reason"], "hangup");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "call:ended waited for the database: {:?}",
        t0.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    doomed.child.kill().unwrap(); // the node that ended the call never writes it
    let _ = doomed.child.wait();

    let direct = mongodb::Client::with_uri_str(&mongo).await.unwrap();
    let calls = direct.database(&database).collection::<Document>("calls");
    assert!(
        calls.find_one(doc! { "_id": &id }).await.unwrap().is_none(),
        "written while the database was cut off?"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.restore();
    let t1 = tokio::time::Instant::now();
    let mut rec = None;
    while t1.elapsed() < Duration::from_secs(30) {
        rec = calls.find_one(doc! { "_id": &id }).await.unwrap();
        if rec.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rec = rec.expect("the surviving node drained the outbox");
    assert_eq!(rec.get_str("end_reason").unwrap(), "hangup");
    assert_eq!(rec.get_str("tenant").unwrap(), tenant);
    assert_eq!(calls.count_documents(doc! { "_id": &id }).await.unwrap(), 1);
    eprintln!(
        "history record written {:?} after the database came back (ending node SIGKILLed)",
        t1.elapsed()
    );
    assert_eq!(
        bob.ok("call:history", json!({})).await["calls"][0]["id"],
        json!(id)
    );
    direct.database(&database).drop().await.unwrap();
}
