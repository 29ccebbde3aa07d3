//! The JWT attack matrix: every refusal gives the protocol's connect_error code.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use switchboard_dataplane::auth::now_secs;

use crate::support::*;

async fn refused(node: &Node, token: &str) -> String {
    match Client::connect(node, Some(token)).await {
        Ok(_) => panic!("token was accepted"),
        Err(ConnectError(m)) => m,
    }
}

fn code(message: &str) -> &str {
    message.split(':').next().unwrap_or_default()
}

/// An RSA key pair for this test run (the one maker the push stand-in uses too), the
/// public half also written to a file: (public key file, private PEM, public PEM).
fn rsa_keys() -> (PathBuf, Vec<u8>, Vec<u8>) {
    let (private, public) = switchboard_fakes::fcm::rsa_keys();
    let path = std::env::temp_dir().join(format!("sb-rsa-{}.pem", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, &public).unwrap();
    (path, private.into_bytes(), public)
}

#[tokio::test]
async fn hmac_node_refuses_every_bad_token_with_its_code() {
    let mut cfg = mk_config();
    cfg.jwt.issuer = Some("https://id.example".into());
    cfg.jwt.audience = Some("switchboard".into());
    let node = start(cfg.clone()).await;
    let good = || {
        let mut c = claims("acme", "alice");
        c.iss = Some("https://id.example".into());
        c.aud = Some("switchboard".into());
        c
    };
    Client::connect(&node, Some(&token(&good())))
        .await
        .expect("a good token connects");

    assert_eq!(
        code(&match Client::connect(&node, None).await {
            Err(ConnectError(m)) => m,
            Ok(_) => panic!("no token accepted"),
        }),
        "unauthorized"
    );

    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(serde_json::to_vec(&good()).unwrap())
    );
    assert_eq!(code(&refused(&node, &none).await), "unauthorized");

    let mut c = good();
    c.exp = now_secs() - 3600;
    assert_eq!(code(&refused(&node, &token(&c)).await), "token_expired");

    let mut c = good();
    c.nbf = Some(now_secs() + 3600);
    assert_eq!(code(&refused(&node, &token(&c)).await), "unauthorized");

    let mut c = good();
    c.iss = Some("https://evil.example".into());
    assert_eq!(code(&refused(&node, &token(&c)).await), "unauthorized");

    let mut c = good();
    c.aud = Some("another-app".into());
    assert_eq!(code(&refused(&node, &token(&c)).await), "unauthorized");

    let mut c = good();
    c.tenant = None;
    assert_eq!(code(&refused(&node, &token(&c)).await), "tenant_required");

    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &good(),
        &EncodingKey::from_secret(b"not-the-secret-not-the-secret-xx"),
    )
    .unwrap();
    assert!(refused(&node, &forged).await.contains("bad signature"));

    // An RS256 token (the attacker's own key) is refused by an HS256 node.
    let (_, private, _) = rsa_keys();
    let rs = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &good(),
        &EncodingKey::from_rsa_pem(&private).unwrap(),
    )
    .unwrap();
    assert_eq!(code(&refused(&node, &rs).await), "unauthorized");

    // A tampered payload with the original signature.
    let t = token(&good());
    let parts: Vec<&str> = t.split('.').collect();
    let mut c = good();
    c.sub = "mallory".into();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(serde_json::to_vec(&c).unwrap()),
        parts[2]
    );
    assert!(refused(&node, &tampered).await.contains("bad signature"));
}

#[tokio::test]
async fn rsa_node_refuses_hs256_signed_with_its_public_key() {
    let (public_path, private, public_pem) = rsa_keys();
    let mut cfg = mk_config();
    cfg.jwt.secret = None;
    cfg.jwt.algorithm = "RS256".into();
    cfg.jwt.public_key_file = Some(public_path.display().to_string());
    let node = start(cfg).await;
    let c = claims("acme", "alice");
    let good = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &c,
        &EncodingKey::from_rsa_pem(&private).unwrap(),
    )
    .unwrap();
    Client::connect(&node, Some(&good))
        .await
        .expect("RS256 token connects");
    // Key confusion: HS256 keyed with the public key PEM must not pass.
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &c,
        &EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    assert_eq!(code(&refused(&node, &confused).await), "unauthorized");
}

#[tokio::test]
async fn header_auth_and_revocation_by_jti_sid_and_user() {
    let node = start(mk_config()).await;
    let c = claims("acme", "alice");
    let via_header = Client::connect_ns(&node, "/chat", None, Some(&token(&c)))
        .await
        .expect("bearer header connects");

    // Revoke the jti: the live socket is kicked within 1 s and the token cannot reconnect.
    let started = tokio::time::Instant::now();
    assert_eq!(
        revoke(&node, json!({"tenant": "acme", "jti": c.jti}))
            .await
            .status(),
        200
    );
    assert!(
        via_header.wait_closed(Duration::from_secs(1)).await,
        "kicked within 1s"
    );
    eprintln!("jti kick took {:?}", started.elapsed());
    assert_eq!(code(&refused(&node, &token(&c)).await), "token_revoked");

    // Session: every token of the session goes, other sessions stay.
    let mut s1 = claims("acme", "bob");
    s1.sid = Some("login-1".into());
    let mut s2 = claims("acme", "bob");
    s2.sid = Some("login-2".into());
    let (a, b) = (
        Client::connect(&node, Some(&token(&s1))).await.unwrap(),
        Client::connect(&node, Some(&token(&s2))).await.unwrap(),
    );
    assert_eq!(
        revoke(&node, json!({"tenant": "acme", "sid": "login-1"}))
            .await
            .status(),
        200
    );
    assert!(a.wait_closed(Duration::from_secs(1)).await);
    assert!(
        !b.wait_closed(Duration::from_millis(300)).await,
        "another session stays"
    );
    let mut again = claims("acme", "bob");
    again.sid = Some("login-1".into());
    assert_eq!(code(&refused(&node, &token(&again)).await), "token_revoked");

    // User: tokens issued up to now go; a token issued later works. Other tenants' bob is untouched.
    let other_tenant = user(&node, "globex", "bob").await;
    assert_eq!(
        revoke(&node, json!({"tenant": "acme", "user_id": "bob"}))
            .await
            .status(),
        200
    );
    assert!(b.wait_closed(Duration::from_secs(1)).await);
    assert!(
        !other_tenant.wait_closed(Duration::from_millis(300)).await,
        "tenant wall"
    );
    let mut old = claims("acme", "bob");
    old.iat = Some(now_secs() - 10);
    assert_eq!(code(&refused(&node, &token(&old)).await), "token_revoked");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut fresh = claims("acme", "bob");
    fresh.iat = Some(now_secs() + 1);
    Client::connect(&node, Some(&token(&fresh)))
        .await
        .expect("a token issued after the revocation works");

    // The admin API needs its token and a well-formed body.
    let http = reqwest::Client::new();
    let r = http
        .post(node.url("/admin/v1/revocations"))
        .json(&json!({"tenant": "acme", "jti": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(revoke(&node, json!({"tenant": "acme"})).await.status(), 400);
    assert_eq!(
        revoke(&node, json!({"tenant": "acme", "jti": "x", "sid": "y"}))
            .await
            .status(),
        400
    );
    assert_eq!(
        revoke(&node, json!({"tenant": "a:b", "jti": "x"}))
            .await
            .status(),
        400
    );
}

#[tokio::test]
async fn a_jti_or_sid_too_long_to_revoke_is_refused_at_the_handshake() {
    let node = start(mk_config()).await;
    let tenant = format!("longids-{}", uuid::Uuid::new_v4().simple());
    for ns in ["/chat", "/presence", "/webrtc", "/notifications"] {
        let mut long_jti = claims(&tenant, "alice");
        long_jti.jti = Some("j".repeat(129));
        let mut long_sid = claims(&tenant, "alice");
        long_sid.sid = Some("s".repeat(129));
        for (what, c) in [("jti", long_jti), ("sid", long_sid)] {
            let auth = json!({ "token": token(&c) });
            match Client::connect_ns(&node, ns, Some(auth), None).await {
                Ok(_) => panic!("{ns}: a token with a 129-byte {what} was accepted"),
                Err(ConnectError(m)) => {
                    assert_eq!(code(&m), "unauthorized", "{ns} {what}: {m}");
                    assert!(m.contains(what), "{ns}: the message names the claim: {m}");
                }
            }
        }
    }
    // The longest accepted jti connects, and revoking it by that id kicks and refuses it.
    let mut c = claims(&tenant, "alice");
    let id = uuid::Uuid::new_v4().simple().to_string();
    c.jti = Some(format!("{id}{}", "j".repeat(128 - id.len())));
    let live = Client::connect(&node, Some(&token(&c)))
        .await
        .expect("a 128-byte jti connects");
    assert_eq!(
        revoke(&node, json!({"tenant": tenant, "jti": c.jti}))
            .await
            .status(),
        200
    );
    assert!(live.wait_closed(Duration::from_secs(1)).await, "kicked");
    assert_eq!(code(&refused(&node, &token(&c)).await), "token_revoked");
}

#[tokio::test]
async fn a_revoked_socket_gets_no_turn_credentials_even_if_its_kick_was_lost() {
    use fred::interfaces::ClientLike;
    use switchboard_dataplane::auth::revocation::redis::RedisRevocations;
    use switchboard_dataplane::auth::revocation::{RevocationStore, Target};

    let Some(url) = redis_url() else {
        return;
    };
    let mut cfg = mk_config();
    cfg.redis.url = Some(url.clone());
    cfg.node_id = Some(format!("turn-{}", uuid::Uuid::new_v4().simple()));
    cfg.webrtc.turn_urls = vec!["turn:turn.example.test:3478".into()];
    cfg.webrtc.turn_secret = Some("turn-secret-for-tests".into());
    let node = start(cfg).await;
    let tenant = format!("turn-{}", uuid::Uuid::new_v4().simple());
    let c = claims(&tenant, "alice");
    let socket = Client::connect_ns(&node, "/webrtc", Some(json!({ "token": token(&c) })), None)
        .await
        .expect("connect /webrtc");
    let ice = socket.ok("webrtc:get-ice-servers", json!({})).await;
    assert!(
        ice["ice_servers"][0]["credential"].is_string(),
        "TURN credentials before the revocation: {ice}"
    );

    // The revocation is stored but its kick never reaches the node (Redis pub/sub is at
    // most once): written straight to the store, without the admin API's broadcast.
    let mut rc = fred::prelude::Config::from_url(&url).unwrap();
    rc.version = fred::types::RespVersion::RESP3;
    let client = fred::prelude::Builder::from_config(rc).build().unwrap();
    client.init().await.unwrap();
    RedisRevocations::new(client)
        .revoke(
            &tenant,
            &Target::Jti(c.jti.clone().unwrap()),
            Duration::from_secs(60),
        )
        .await
        .unwrap();

    let r = socket.req("webrtc:get-ice-servers", json!({})).await;
    assert_eq!(r["error"]["code"], "unauthorized", "{r}");
    assert!(r.get("data").is_none(), "no credentials: {r}");
    assert!(
        socket.wait_closed(Duration::from_secs(1)).await,
        "and the socket is disconnected"
    );
}
