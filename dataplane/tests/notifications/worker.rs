//! `switchboard worker` as a child process against real Kafka and Redis: delivery to a
//! user's sockets on another node, dead-lettering, de-duplication, and a SIGKILL in the
//! middle of a batch.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};

use crate::common::{
    SERVICE, fresh, kafka, mk_config, notif_user, notification, post, wait_status,
};
use crate::fake_fcm::{FakeFcm, start_with_account};
use crate::support::{Node, redis_url, start};

struct Topics {
    topic: String,
    group: String,
    dlq: String,
}

fn mk_topics() -> Topics {
    let run = fresh("");
    Topics {
        topic: format!("notif-{run}"),
        group: format!("workers-{run}"),
        dlq: format!("notif-dlq-{run}"),
    }
}

/// A worker process; killed (SIGKILL) on drop.
struct Worker(Child);

impl Worker {
    /// The worker's health and metrics address, from the line it prints at start-up.
    fn probes_url(&mut self) -> String {
        use std::io::BufRead;
        let out = self.0.stdout.take().expect("stdout piped");
        let mut line = String::new();
        std::io::BufReader::new(out).read_line(&mut line).unwrap();
        line.trim().rsplit(' ').next().unwrap().to_owned()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_worker(redis: &str, brokers: &str, t: &Topics, fake: &FakeFcm, sa: &Path) -> Worker {
    spawn_worker_with(redis, brokers, t, fake, sa, &[])
}

/// A worker with extra environment (e.g. `SWITCHBOARD_KAFKA_MAX_IN_FLIGHT`).
fn spawn_worker_with(
    redis: &str,
    brokers: &str,
    t: &Topics,
    fake: &FakeFcm,
    sa: &Path,
    env: &[(&str, &str)],
) -> Worker {
    let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("worker")
        .envs(env.iter().copied())
        .env("SWITCHBOARD_REDIS_URL", redis)
        .env("SWITCHBOARD_KAFKA_BROKERS", brokers)
        .env("SWITCHBOARD_KAFKA_TOPIC", &t.topic)
        .env("SWITCHBOARD_KAFKA_GROUP", &t.group)
        .env("SWITCHBOARD_KAFKA_DLQ_TOPIC", &t.dlq)
        .env("SWITCHBOARD_FCM_SERVICE_ACCOUNT_FILE", sa)
        .env("SWITCHBOARD_FCM_BASE_URL", fake.base_url())
        .env("SWITCHBOARD_LISTEN", "127.0.0.1:0")
        .env(
            "RUST_LOG",
            std::env::var("SB_WORKER_LOG").unwrap_or("warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn switchboard worker");
    Worker(child)
}

fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .create()
        .unwrap()
}

async fn produce(p: &FutureProducer, topic: &str, key: &str, value: &[u8]) {
    produce_at(p, topic, key, value).await;
}

/// Produce and return the (partition, offset) the broker gave the message.
async fn produce_at(p: &FutureProducer, topic: &str, key: &str, value: &[u8]) -> (i32, i64) {
    let d = p
        .send(
            FutureRecord::to(topic).key(key).payload(value),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    (d.partition, d.offset)
}

/// The worker group's committed offset on `partition` (None: nothing committed yet).
async fn committed(brokers: &str, t: &Topics, partition: i32) -> Option<i64> {
    let (brokers, group, topic) = (brokers.to_owned(), t.group.clone(), t.topic.clone());
    // Blocking librdkafka call: off the test's runtime, which also runs the fake FCM.
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &group)
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&topic, partition);
        let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
        match got.find_partition(&topic, partition).unwrap().offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        }
    })
    .await
    .unwrap()
}

/// A batch for the worker: `n` users of a fresh tenant, user `i` with one FCM device
/// `{token(i)}-{tenant}-{i}` registered through a node, and one notification per user
/// produced in order (one partition in tests/env).
struct Batch {
    tenant: String,
    node: Node,
    ids: Vec<String>,
    /// (partition, offset) of each notification.
    at: Vec<(i32, i64)>,
}

async fn mk_batch(
    redis: &str,
    brokers: &str,
    t: &Topics,
    n: usize,
    token: impl Fn(usize) -> &'static str,
) -> Batch {
    let tenant = fresh("t");
    let mut cfg = mk_config();
    cfg.redis.url = Some(redis.to_owned());
    let node = start(cfg).await;
    for i in 0..n {
        let c = notif_user(&node, &tenant, &format!("u{i}")).await;
        c.ok(
            "notification:register-device",
            json!({"platform": "fcm", "token": format!("{}-{tenant}-{i}", token(i))}),
        )
        .await;
    }
    let p = producer(brokers);
    let ids: Vec<String> = (0..n).map(|i| format!("n{i}-{}", fresh(""))).collect();
    let mut at = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let v = notification(&tenant, id, &[&format!("u{i}")]).to_string();
        at.push(produce_at(&p, &t.topic, id, v.as_bytes()).await);
    }
    Batch {
        tenant,
        node,
        ids,
        at,
    }
}

/// A node on `redis` and `user` of a fresh tenant on `/notifications`, with one FCM device
/// `{token}-{tenant}-{user}`: (tenant, node, client).
async fn user_with_device(
    redis: &str,
    token: &str,
    user: &str,
) -> (String, Node, crate::support::Client) {
    let tenant = fresh("t");
    let mut cfg = mk_config();
    cfg.redis.url = Some(redis.to_owned());
    let node = start(cfg).await;
    let c = notif_user(&node, &tenant, user).await;
    c.ok(
        "notification:register-device",
        json!({"platform": "fcm", "token": format!("{token}-{tenant}-{user}")}),
    )
    .await;
    (tenant, node, c)
}

/// A consumer of the dead-letter topic from its start, in a group of its own.
fn dlq_reader(brokers: &str, t: &Topics) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", fresh("dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[t.dlq.as_str()]).unwrap();
    consumer
}

/// Wait until the worker group's committed offset on `partition` is `want`.
async fn until_committed(brokers: &str, t: &Topics, partition: i32, want: i64, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let c = committed(brokers, t, partition).await;
        if c == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "committed {c:?}, expected {want}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Wait until `f` holds, polling every 50 ms, at most `secs` seconds.
async fn until(secs: u64, what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_worker_delivers_across_nodes_dead_letters_and_deduplicates() {
    let (Some(redis), Some(brokers)) = (redis_url(), kafka()) else {
        return;
    };
    let (fake, sa) = start_with_account().await;
    let t = mk_topics();
    let mut cfg = mk_config();
    cfg.redis.url = Some(redis.clone());
    cfg.notifications.kafka.brokers = vec![brokers.clone()];
    cfg.notifications.kafka.topic = t.topic.clone();
    let (a, b) = (start(cfg.clone()).await, start(cfg).await);
    let (acme, evil) = (fresh("acme"), fresh("evil"));
    // Alice's socket is on node B; her device is registered through node A.
    let alice_b = notif_user(&b, &acme, "alice").await;
    let alice_a = notif_user(&a, &acme, "alice").await;
    alice_a
        .ok(
            "notification:register-device",
            json!({"platform": "fcm", "token": format!("ok-{acme}-alice")}),
        )
        .await;
    let evil_alice = notif_user(&a, &evil, "alice").await;
    evil_alice
        .ok(
            "notification:register-device",
            json!({"platform": "fcm", "token": format!("ok-{evil}-alice")}),
        )
        .await;
    let mut w = spawn_worker(&redis, &brokers, &t, &fake, &sa);
    let probes = w.probes_url();
    let get = |p: &str| reqwest::get(format!("{probes}{p}"));
    assert_eq!(get("/readyz").await.unwrap().text().await.unwrap(), "ready");

    // Through the service API on node A → Kafka → worker.
    let id = fresh("n");
    let (code, body) = post(&a, &notification(&acme, &id, &["alice"]), Some(SERVICE)).await;
    assert_eq!(code, 202, "{body}");
    let ev = alice_b
        .next("notification", Duration::from_secs(30))
        .await
        .expect("in-app on node B");
    assert_eq!(ev["id"], id.as_str());
    alice_a.expect("notification").await;
    let data = wait_status(&a, &acme, &id, |d| d["progress"] == "done").await;
    assert_eq!(data["deliveries"][0]["state"], "sent", "{data}");
    assert_eq!(fake.accepted().get(&id), Some(&1));

    // The same id produced again, plus a malformed message: one push, one event, one DLQ entry.
    let p = producer(&brokers);
    produce(
        &p,
        &t.topic,
        &id,
        notification(&acme, &id, &["alice"]).to_string().as_bytes(),
    )
    .await;
    produce(
        &p,
        &t.topic,
        "bad-1",
        b"{\"id\": \"x\", \"tenant\": \"acme\"}",
    )
    .await;
    let marker = fresh("n");
    produce(
        &p,
        &t.topic,
        &marker,
        notification(&acme, &marker, &["alice"])
            .to_string()
            .as_bytes(),
    )
    .await;
    let ev = alice_b
        .next("notification", Duration::from_secs(30))
        .await
        .expect("marker");
    assert_eq!(
        ev["id"],
        marker.as_str(),
        "the replayed id was emitted again"
    );
    assert_eq!(
        fake.accepted().get(&id),
        Some(&1),
        "the replayed id was pushed again"
    );
    assert!(
        evil_alice
            .next("notification", Duration::from_millis(300))
            .await
            .is_none(),
        "crossed tenants"
    );
    assert!(
        !fake
            .statuses_for(&format!("ok-{evil}-alice"))
            .iter()
            .any(|_| true),
        "pushed to another tenant's device"
    );

    let consumer = dlq_reader(&brokers, &t);
    let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("a DLQ message")
        .unwrap();
    let v: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("invalid notification JSON"),
        "{v}"
    );
    assert_eq!(v["topic"], t.topic.as_str());
    assert_eq!(v["payload"], "{\"id\": \"x\", \"tenant\": \"acme\"}");
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    for line in [
        r#"switchboard_notification_deliveries_total{provider="fcm",outcome="sent"} 2"#,
        r#"switchboard_notification_deliveries_total{provider="in_app",outcome="sent"} 2"#,
        r#"switchboard_notifications_total{kind="duplicate"} 1"#,
        r#"switchboard_notifications_total{kind="dead_lettered"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    let h = m
        .headers()
        .unwrap()
        .iter()
        .find(|h| h.key == "x-switchboard-dlq-reason")
        .expect("reason header");
    assert!(String::from_utf8_lossy(h.value.unwrap()).contains("missing field"));
}

#[tokio::test]
async fn a_worker_killed_mid_batch_delivers_everything_and_repeats_only_the_send_in_flight() {
    let (Some(redis), Some(brokers)) = (redis_url(), kafka()) else {
        return;
    };
    let (fake, sa) = start_with_account().await;
    let t = mk_topics();
    const N: usize = 60;
    let Batch { ids, .. } = mk_batch(&redis, &brokers, &t, N, |_| "ok").await;
    // At most IN_FLIGHT messages are processed at once, so at most that many sends can be
    // in flight at the kill (and be repeated by the next worker).
    const IN_FLIGHT: usize = 4;
    let w1 = spawn_worker_with(
        &redis,
        &brokers,
        &t,
        &fake,
        &sa,
        &[("SWITCHBOARD_KAFKA_MAX_IN_FLIGHT", &IN_FLIGHT.to_string())],
    );
    until(60, "the first pushes", || fake.accepted().len() >= N / 3).await;
    // Hold every further send in flight, let finished ones settle, then SIGKILL.
    let gate = fake.hold.write().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_kill: HashSet<String> = fake.accepted().into_keys().collect();
    drop(w1);
    drop(gate);
    assert!(
        before_kill.len() < N,
        "the batch finished before the kill; raise N"
    );
    let _w2 = spawn_worker(&redis, &brokers, &t, &fake, &sa);
    until(90, "every notification pushed", || {
        fake.accepted().len() == N
    })
    .await;
    // Let the restarted worker go through any replayed messages.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let accepted = fake.accepted();
    let twice: Vec<_> = accepted.iter().filter(|(_, n)| **n > 1).collect();
    for id in &before_kill {
        assert_eq!(accepted[id], 1, "{id} was pushed again after the restart");
    }
    eprintln!(
        "killed after {} of {N} pushes; pushed twice: {twice:?} (only sends in flight at the kill may be)",
        before_kill.len()
    );
    assert!(
        twice.len() <= IN_FLIGHT,
        "more duplicates than messages in flight at the kill: {twice:?}"
    );
    assert!(twice.iter().all(|(id, _)| !before_kill.contains(*id)));
    // Such a repeat carries the notification's id as its tray tag / collapse id, so the
    // device replaces the first copy instead of showing two.
    let tags = fake.seen.lock().unwrap().tags.clone();
    for (id, _) in &twice {
        assert!(
            tags.iter()
                .filter(|(i, _)| i == *id)
                .all(|(i, tag)| tag == i)
        );
    }
    for id in &ids {
        assert!(accepted.contains_key(id), "{id} never pushed");
    }
}

#[tokio::test]
async fn a_stalled_push_holds_back_neither_later_notifications_nor_more_than_its_own_offset() {
    let (Some(redis), Some(brokers)) = (redis_url(), kafka()) else {
        return;
    };
    let (fake, sa) = start_with_account().await;
    let t = mk_topics();
    const N: usize = 12;
    // u0's device answers only when the test lets it (a provider stuck on one message).
    let stall = fake.stall.write().await;
    let Batch { ids, at, .. } =
        mk_batch(
            &redis,
            &brokers,
            &t,
            N,
            |i| {
                if i == 0 { "stall" } else { "ok" }
            },
        )
        .await;
    // One partition: the stalled message comes first, the others after it.
    let (part, first) = at[0];
    assert!(at.iter().all(|(p, o)| *p == part && *o >= first));
    let last = at.iter().map(|(_, o)| *o).max().unwrap();
    let _w = spawn_worker(&redis, &brokers, &t, &fake, &sa);
    until(
        60,
        "the later notifications, while the first is stalled",
        || fake.accepted().len() == N - 1,
    )
    .await;
    assert!(!fake.accepted().contains_key(&ids[0]));
    // Later messages are done, the first is not: nothing past it may be committed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = committed(&brokers, &t, part).await;
    assert!(
        c.is_none_or(|c| c <= first),
        "committed {c:?} past the unfinished offset {first}"
    );
    drop(stall);
    until(30, "the stalled notification", || {
        fake.accepted().len() == N
    })
    .await;
    until_committed(&brokers, &t, part, last + 1, "all are done").await;
    assert!(fake.accepted().values().all(|n| *n == 1));
}

#[tokio::test]
async fn a_worker_stopped_by_sigterm_mid_batch_leaves_nothing_undelivered() {
    let (Some(redis), Some(brokers)) = (redis_url(), kafka()) else {
        return;
    };
    let (fake, sa) = start_with_account().await;
    let t = mk_topics();
    const N: usize = 30;
    // This one's push stalls; the messages after it finish around it.
    const STALLED: usize = N / 3;
    let stall = fake.stall.write().await;
    let Batch {
        tenant,
        node,
        ids,
        at,
    } = mk_batch(&redis, &brokers, &t, N, |i| {
        if i == STALLED { "stall" } else { "ok" }
    })
    .await;
    let (part, stalled_at) = at[STALLED];
    let mut w1 = spawn_worker(&redis, &brokers, &t, &fake, &sa);
    until(60, "every push but the stalled one", || {
        fake.accepted().len() == N - 1
    })
    .await;
    // Everything before the stalled message is committed, nothing after it.
    until_committed(
        &brokers,
        &t,
        part,
        stalled_at,
        "the prefix before the stall",
    )
    .await;
    // Stop the worker cleanly (SIGTERM) with the stalled message in flight: its final
    // offset commit must not cover it, although every later message is done.
    let pid = w1.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while w1.0.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker ignored SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = committed(&brokers, &t, part).await;
    assert_eq!(
        c,
        Some(stalled_at),
        "the final commit must stop at the unfinished message"
    );
    assert!(!fake.accepted().contains_key(&ids[STALLED]));
    drop(stall);
    let _w2 = spawn_worker(&redis, &brokers, &t, &fake, &sa);
    for id in &ids {
        let d = wait_status(&node, &tenant, id, |d| d["progress"] == "done").await;
        assert_eq!(d["deliveries"][0]["state"], "sent", "{id}: {d}");
    }
    let accepted = fake.accepted();
    for (i, id) in ids.iter().enumerate() {
        if i != STALLED {
            assert_eq!(accepted[id], 1, "{id} was pushed again after the restart");
        }
    }
}

/// Throughput of one worker (not part of the suite: `cargo test --test notifications
/// -- --ignored worker_throughput --nocapture` with Kafka and Redis up).
#[tokio::test]
#[ignore]
async fn worker_throughput() {
    throughput("ok", 2000, None).await;
}

/// The same with a provider that takes 100 ms per send, at the default in-flight limit
/// and at 1 (one message at a time, as the worker did before the limit existed).
#[tokio::test]
#[ignore]
async fn worker_throughput_slow_provider() {
    throughput("slow", 300, None).await;
    throughput("slow", 50, Some(1)).await;
}

async fn throughput(token: &str, n: usize, max_in_flight: Option<usize>) {
    let (Some(redis), Some(brokers)) = (redis_url(), kafka()) else {
        return;
    };
    let (fake, sa) = start_with_account().await;
    let t = mk_topics();
    let (tenant, _node, _c) = user_with_device(&redis, token, "u").await;
    let p = producer(&brokers);
    for i in 0..n {
        let id = format!("n{i}");
        produce(
            &p,
            &t.topic,
            &id,
            notification(&tenant, &id, &["u"]).to_string().as_bytes(),
        )
        .await;
    }
    let limit = max_in_flight.map(|m| m.to_string());
    let env: Vec<(&str, &str)> = limit
        .iter()
        .map(|l| ("SWITCHBOARD_KAFKA_MAX_IN_FLIGHT", l.as_str()))
        .collect();
    let t0 = std::time::Instant::now();
    let _w = spawn_worker_with(&redis, &brokers, &t, &fake, &sa, &env);
    until(300, "all pushed", || fake.accepted().len() == n).await;
    let took = t0.elapsed();
    eprintln!(
        "{n} notifications (1 user, 1 FCM device `{token}-`, in-app + push, max_in_flight {}) through one worker in {took:?} incl. group join: {:.0}/s",
        limit.as_deref().unwrap_or("default"),
        n as f64 / took.as_secs_f64()
    );
}

/// ms since the epoch, now.
#[tokio::test]
async fn notifications_older_than_max_age_are_dead_lettered_as_stale_not_pushed() {
    let (Some(redis), Some(brokers)) = (redis_url(), kafka()) else {
        return;
    };
    let (fake, sa) = start_with_account().await;
    let t = mk_topics();
    let (tenant, node, alice) = user_with_device(&redis, "ok", "alice").await;
    // What a group whose offsets expired re-reads: two notifications from 2 h ago (one
    // with its `created_at`, one known only by its Kafka timestamp), then a new one.
    let two_hours_ago = switchboard_dataplane::clock::now_ms() - 2 * 3600 * 1000;
    let p = producer(&brokers);
    let old_created = fresh("old-created-");
    let mut v = notification(&tenant, &old_created, &["alice"]);
    v["created_at"] = json!(two_hours_ago);
    produce(&p, &t.topic, &old_created, v.to_string().as_bytes()).await;
    let old_produced = fresh("old-produced-");
    p.send(
        FutureRecord::to(&t.topic)
            .key(&old_produced)
            .payload(
                notification(&tenant, &old_produced, &["alice"])
                    .to_string()
                    .as_bytes(),
            )
            .timestamp(two_hours_ago),
        Duration::from_secs(30),
    )
    .await
    .map_err(|(e, _)| e)
    .unwrap();
    let new = fresh("new-");
    let v = notification(&tenant, &new, &["alice"]).to_string();
    produce(&p, &t.topic, &new, v.as_bytes()).await;

    let mut w = spawn_worker_with(
        &redis,
        &brokers,
        &t,
        &fake,
        &sa,
        &[("SWITCHBOARD_NOTIFICATIONS_MAX_AGE", "1h")],
    );
    let probes = w.probes_url();
    let ev = alice
        .next("notification", Duration::from_secs(30))
        .await
        .expect("the new notification arrives");
    assert_eq!(ev["id"], new.as_str(), "an old notification was delivered");
    let data = wait_status(&node, &tenant, &new, |d| d["progress"] == "done").await;
    assert_eq!(data["deliveries"][0]["state"], "sent", "{data}");
    assert!(
        alice
            .next("notification", Duration::from_millis(500))
            .await
            .is_none(),
        "an old notification was delivered in-app"
    );
    let pushed = fake.accepted();
    assert_eq!(pushed.get(&new), Some(&1));
    assert_eq!(pushed.get(&old_created), None, "pushed an old notification");
    assert_eq!(
        pushed.get(&old_produced),
        None,
        "pushed an old notification"
    );
    let listed = alice.ok("notification:list", json!({})).await;
    assert_eq!(
        listed["notifications"].as_array().unwrap().len(),
        1,
        "{listed}"
    );

    let consumer = dlq_reader(&brokers, &t);
    let mut stale = HashSet::new();
    while stale.len() < 2 {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("two stale DLQ messages")
            .unwrap();
        let v: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        assert_eq!(v["reason"], "stale", "{v}");
        let h = m
            .headers()
            .unwrap()
            .iter()
            .find(|h| h.key == "x-switchboard-dlq-reason")
            .expect("reason header");
        assert_eq!(h.value, Some(&b"stale"[..]));
        let payload: Value = serde_json::from_str(v["payload"].as_str().unwrap()).unwrap();
        stale.insert(payload["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(stale, HashSet::from([old_created, old_produced]));
    let metrics = reqwest::get(format!("{probes}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"switchboard_notifications_total{kind="stale"} 2"#),
        "{metrics}"
    );
}
