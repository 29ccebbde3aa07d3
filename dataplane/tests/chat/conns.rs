//! Connections per user (`limits.max_connections_per_user`): past the cap a handshake
//! gets `too_many_connections`, counted over every namespace and every node; a closed
//! connection frees its place, and a killed node's connections stop counting within one
//! lease (three `presence.heartbeat_ttl`).

use std::time::Duration;

use serde_json::json;
use switchboard_crds::config::DataplaneConfig;
use switchboard_crds::duration::HumanDuration;
use switchboard_dataplane::auth::Claims;

use crate::support::*;

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn capped(max: usize) -> DataplaneConfig {
    let mut c = mk_config();
    c.limits.max_connections_per_user = max;
    // Leases of 3 s, renewed every second.
    c.presence.heartbeat_ttl = HumanDuration::from_secs(1);
    c
}

async fn connect(node: &Node, ns: &str, c: &Claims) -> Result<Client, ConnectError> {
    Client::connect_ns(node, ns, Some(json!({ "token": token(c) })), None).await
}

fn code(e: Result<Client, ConnectError>) -> String {
    match e {
        Ok(_) => "connected".into(),
        Err(ConnectError(m)) => m.split(':').next().unwrap_or_default().to_owned(),
    }
}

#[tokio::test]
async fn past_the_cap_a_handshake_is_refused_on_every_namespace_until_one_closes() {
    let node = start(capped(3)).await;
    let tenant = unique("conns");
    let mine: Vec<Claims> = (0..3).map(|_| claims(&tenant, "alice")).collect();
    let mut held = Vec::new();
    for (c, ns) in mine.iter().zip(["/chat", "/presence", "/webrtc"]) {
        held.push(connect(&node, ns, c).await.expect("within the cap"));
    }
    for ns in ["/chat", "/presence", "/webrtc", "/notifications"] {
        assert_eq!(
            code(connect(&node, ns, &claims(&tenant, "alice")).await),
            "too_many_connections",
            "{ns}"
        );
    }
    // Another user, and the same user id in another tenant, have their own count.
    connect(&node, "/chat", &claims(&tenant, "bob"))
        .await
        .unwrap();
    connect(&node, "/chat", &claims(&unique("other"), "alice"))
        .await
        .unwrap();
    // Still held after several lease renewals.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        code(connect(&node, "/chat", &claims(&tenant, "alice")).await),
        "too_many_connections"
    );
    // A closed connection frees its place.
    revoke(&node, json!({"tenant": tenant, "jti": mine[0].jti})).await;
    assert!(held[0].wait_closed(Duration::from_secs(1)).await);
    let mut freed = Err(ConnectError(String::new()));
    for _ in 0..20 {
        freed = connect(&node, "/notifications", &claims(&tenant, "alice")).await;
        if freed.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(code(freed), "connected");
}

#[tokio::test]
async fn the_cap_holds_across_nodes_and_a_killed_nodes_connections_lapse() {
    let Some(url) = redis_url() else {
        return;
    };
    let mk = |id: &str| {
        let mut c = capped(2);
        c.redis.url = Some(url.clone());
        c.node_id = Some(unique(id));
        c
    };
    let (a, b) = (start(mk("conns-a")).await, start(mk("conns-b")).await);
    let tenant = unique("conns");
    let _on_a = connect(&a, "/chat", &claims(&tenant, "alice"))
        .await
        .unwrap();
    let _on_b = connect(&b, "/presence", &claims(&tenant, "alice"))
        .await
        .unwrap();
    for node in [&a, &b] {
        assert_eq!(
            code(connect(node, "/webrtc", &claims(&tenant, "alice")).await),
            "too_many_connections"
        );
    }
    // Past one lease (3 s): the live connections' leases were renewed in Redis.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        code(connect(&b, "/webrtc", &claims(&tenant, "alice")).await),
        "too_many_connections",
        "renewed leases still count"
    );

    // A node killed without a goodbye: its connection counts until its lease lapses.
    let env = [
        ("SWITCHBOARD_MAX_CONNECTIONS_PER_USER", "2"),
        ("SWITCHBOARD_HEARTBEAT_TTL", "1s"),
    ];
    let mut child = spawn_node(&url, &unique("conns-c"), &env).await;
    let tenant = unique("conns");
    let _one = connect(&a, "/chat", &claims(&tenant, "carol"))
        .await
        .unwrap();
    let _two = connect(&child.node, "/chat", &claims(&tenant, "carol"))
        .await
        .unwrap();
    child.child.kill().unwrap();
    let killed = tokio::time::Instant::now();
    assert_eq!(
        code(connect(&a, "/chat", &claims(&tenant, "carol")).await),
        "too_many_connections",
        "the dead node's lease still counts at first"
    );
    let mut back = Err(ConnectError(String::new()));
    while killed.elapsed() < Duration::from_secs(6) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        back = connect(&a, "/chat", &claims(&tenant, "carol")).await;
        if back.is_ok() {
            break;
        }
    }
    assert_eq!(
        code(back),
        "connected",
        "within one lease (3 s) and a margin"
    );
    eprintln!(
        "a killed node's connection stopped counting after {:?}",
        killed.elapsed()
    );
}
