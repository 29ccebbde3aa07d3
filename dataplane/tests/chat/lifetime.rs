//! Token lifetime on live connections (every namespace): `auth:expiring` before `exp`,
//! `auth:refresh` to go on, `auth:expired` and a disconnect at `exp` + leeway. Times are
//! kept short through the config (`jwt.expiry_notice`, `jwt.leeway`), not long sleeps.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use switchboard_crds::config::DataplaneConfig;
use switchboard_crds::duration::HumanDuration;
use switchboard_dataplane::auth::{Claims, now_secs};

use crate::support::*;

const NAMESPACES: [&str; 4] = ["/chat", "/presence", "/webrtc", "/notifications"];

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Told 2 s before `exp`, closed 1 s after it.
fn mk_short_config() -> DataplaneConfig {
    let mut c = mk_config();
    c.jwt.expiry_notice = HumanDuration::from_secs(2);
    c.jwt.leeway = HumanDuration::from_secs(1);
    c
}

/// Claims for `sub@tenant` that expire `ttl` seconds from now.
fn expiring(tenant: &str, sub: &str, ttl: u64) -> Claims {
    let mut c = claims(tenant, sub);
    c.exp = now_secs() + ttl;
    c
}

async fn connect(node: &Node, ns: &str, c: &Claims) -> Client {
    Client::connect_ns(node, ns, Some(json!({ "token": token(c) })), None)
        .await
        .unwrap_or_else(|e| panic!("connect {ns}: {e:?}"))
}

fn expires_at(v: &Value) -> u64 {
    v["expires_at"].as_u64().unwrap_or_else(|| panic!("{v}"))
}

#[tokio::test]
async fn every_namespace_warns_takes_a_refresh_and_closes_the_unrefreshed() {
    let node = start(mk_short_config()).await;
    let tenant = unique("lifetime");
    let old = expiring(&tenant, "alice", 3);
    let mut pairs = Vec::new();
    for ns in NAMESPACES {
        pairs.push((
            ns,
            connect(&node, ns, &old).await,
            connect(&node, ns, &old).await,
        ));
    }
    let run = pairs.into_iter().map(|(ns, stays, goes)| {
        let old = old.clone();
        let tenant = tenant.clone();
        async move {
            // Both are told 2 s before exp, with the token's exp in ms.
            for c in [&stays, &goes] {
                let warned = c
                    .next("auth:expiring", Duration::from_secs(4))
                    .await
                    .unwrap_or_else(|| panic!("{ns}: no auth:expiring"));
                assert_eq!(expires_at(&warned), old.exp * 1000, "{ns}");
            }
            // One refreshes with a new token (another jti, a later exp).
            let new = expiring(&tenant, "alice", 60);
            let acked = stays
                .ok("auth:refresh", json!({ "token": token(&new) }))
                .await;
            assert_eq!(expires_at(&acked), new.exp * 1000, "{ns}");
            // The other is told and closed at exp + leeway.
            let expired = goes.next("auth:expired", Duration::from_secs(4)).await;
            assert_eq!(expired, Some(json!({})), "{ns}: auth:expired");
            assert!(
                goes.wait_closed(Duration::from_secs(1)).await,
                "{ns}: the unrefreshed socket is closed"
            );
            assert!(now_secs() > old.exp, "{ns}: closed before exp + leeway");
            // The refreshed one lives on past the old expiry and still answers.
            assert!(!stays.is_closed(), "{ns}: the refreshed socket was closed");
            let r = stays.req("auth:refresh", json!({})).await;
            assert_eq!(r["error"]["code"], "bad_request", "{ns}: {r}");
            stays
        }
    });
    let refreshed = futures::future::join_all(run).await;
    // The refreshed sockets answer to the new token's jti, no longer to the old one.
    assert_eq!(
        revoke(&node, json!({"tenant": tenant, "jti": old.jti}))
            .await
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(refreshed.iter().all(|c| !c.is_closed()), "old jti kicked");
    assert_eq!(
        node_metric(
            &node,
            "switchboard_forced_disconnects_total{kind=\"token_expired\"}"
        )
        .await,
        Some(4.0)
    );
    assert_eq!(
        node_metric(&node, "switchboard_token_clocks").await,
        Some(4.0)
    );
    // Closed sockets are dropped, and their token tasks with them.
    assert_eq!(
        revoke(&node, json!({"tenant": tenant, "user_id": "alice"}))
            .await
            .status(),
        200
    );
    for c in &refreshed {
        assert!(c.wait_closed(Duration::from_secs(1)).await);
    }
    let mut left = None;
    for _ in 0..50 {
        left = node_metric(&node, "switchboard_token_clocks").await;
        if left == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, Some(0.0), "token tasks outlived their sockets");
}

#[tokio::test]
async fn a_refresh_for_someone_else_revoked_or_forged_is_refused_and_the_old_expiry_stays() {
    // Two nodes sharing Redis when there is one: the revocation is made on the other node.
    let (a, b) = match redis_url() {
        Some(url) => {
            let mk = |id: &str| {
                let mut c = mk_short_config();
                c.redis.url = Some(url.clone());
                c.node_id = Some(unique(id));
                c
            };
            (start(mk("a")).await, Some(start(mk("b")).await))
        }
        None => (start(mk_short_config()).await, None),
    };
    let admin = b.as_ref().unwrap_or(&a);
    let tenant = unique("refresh");
    let mut old = expiring(&tenant, "alice", 4);
    old.sid = Some(unique("login"));
    let socket = connect(&a, "/chat", &old).await;

    let same = |f: fn(&mut Claims)| {
        let mut c = expiring(&tenant, "alice", 600);
        c.sid = old.sid.clone();
        f(&mut c);
        c
    };
    let revoked = same(|_| {});
    assert_eq!(
        revoke(admin, json!({"tenant": tenant, "jti": revoked.jti}))
            .await
            .status(),
        200
    );
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &same(|_| {}),
        &EncodingKey::from_secret(b"not-the-secret-not-the-secret-xx"),
    )
    .unwrap();
    let refused = [
        ("another user", token(&same(|c| c.sub = "mallory".into()))),
        (
            "another tenant",
            token(&same(|c| c.tenant = Some("globex".into()))),
        ),
        (
            "another session",
            token(&same(|c| c.sid = Some("login-other".into()))),
        ),
        ("no session", token(&same(|c| c.sid = None))),
        ("a revoked token", token(&revoked)),
        ("a bad signature", forged),
        (
            "an expired token",
            token(&same(|c| c.exp = now_secs() - 3600)),
        ),
        ("not a token", "nope".to_owned()),
    ];
    for (what, t) in refused {
        let r = socket.req("auth:refresh", json!({ "token": t })).await;
        assert_eq!(r["error"]["code"], "unauthorized", "{what}: {r}");
    }
    // The old expiry stays: told, then closed at the old exp + leeway.
    let warned = socket.next("auth:expiring", Duration::from_secs(4)).await;
    assert_eq!(warned.as_ref().map(expires_at), Some(old.exp * 1000));
    assert_eq!(
        socket.next("auth:expired", Duration::from_secs(5)).await,
        Some(json!({}))
    );
    assert!(socket.wait_closed(Duration::from_secs(1)).await);

    // A good refresh, then revoking the new token (on the other node) kicks the socket.
    let mut c = expiring(&tenant, "bob", 600);
    c.sid = None;
    let bob = connect(&a, "/chat", &c).await;
    let new = expiring(&tenant, "bob", 900);
    bob.ok("auth:refresh", json!({ "token": token(&new) }))
        .await;
    assert_eq!(
        revoke(admin, json!({"tenant": tenant, "jti": new.jti}))
            .await
            .status(),
        200
    );
    assert!(
        bob.wait_closed(Duration::from_secs(1)).await,
        "the new token's revocation reaches the socket"
    );
}

/// A value from the node's `/metrics`: the line that starts with `series`.
async fn node_metric(node: &Node, series: &str) -> Option<f64> {
    let text = reqwest::get(node.url("/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Rounds of connects racing a revocation (each round: `RACERS` sockets of one user).
const ROUNDS: usize = 30;
const RACERS: usize = 16;

#[tokio::test]
async fn a_socket_admitted_while_its_revocation_lands_does_not_survive_it() {
    // Shared mode when Redis is there: admission then takes Redis round trips, the
    // window the old code left open.
    let mut cfg = mk_config();
    if let Some(url) = redis_url() {
        cfg.redis.url = Some(url);
        cfg.node_id = Some(unique("race"));
    }
    let node = start(cfg).await;
    let mut survivors = Vec::new();
    let mut admitted = 0;

    for round in 0..ROUNDS {
        let tenant = unique("race");
        let t = token(&claims(&tenant, "alice"));
        // The revocation goes out as soon as the first socket is in, while the others
        // are still on their way (whatever the machine's speed), a little later each round.
        let first_in = tokio::sync::Notify::new();
        let connects = (0..RACERS).map(|i| {
            let (node, t, first_in) = (&node, t.clone(), &first_in);
            let ns = NAMESPACES[i % NAMESPACES.len()];
            async move {
                tokio::time::sleep(Duration::from_millis(2 * i as u64)).await;
                let c = Client::connect_ns(node, ns, Some(json!({ "token": t })), None)
                    .await
                    .ok();
                first_in.notify_one();
                c.map(|c| (ns, c))
            }
        });
        let revoking = async {
            first_in.notified().await;
            tokio::time::sleep(Duration::from_millis((round % 10) as u64)).await;
            let r = revoke(&node, json!({"tenant": tenant, "user_id": "alice"})).await;
            assert_eq!(r.status(), 200);
        };
        let (clients, ()) = tokio::join!(futures::future::join_all(connects), revoking);
        for (ns, client) in clients.into_iter().flatten() {
            admitted += 1;
            if !client.wait_closed(Duration::from_secs(1)).await {
                survivors.push(format!("round {round}: {ns}"));
            }
        }
    }
    eprintln!(
        "{admitted} of {} sockets got in around their revocation",
        ROUNDS * RACERS
    );
    assert!(
        survivors.is_empty(),
        "sockets survived their user's revocation: {survivors:?}"
    );
}
