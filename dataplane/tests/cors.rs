//! Browsers on other origins (`server.cors_allowed_origins`), as a browser's requests
//! reach a real `switchboard serve`: preflights, long-polling with `Origin`, WebSocket
//! upgrades from listed and other origins, and the HTTP APIs on the internal listener.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::header::HeaderMap;
use serde_json::json;
use switchboard_crds::config::JwtConfig;
use switchboard_dataplane::auth::{Claims, Signer, now_secs};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "cors-test-secret-cors-test-secret-0123";
const ADMIN: &str = "cors-admin-token-cors-admin-token-0123456";
const APP: &str = "https://app.example.com";
const EVIL: &str = "https://evil.example";
const HANDSHAKE: &str = "/socket.io/?EIO=4&transport=polling";

/// A `switchboard serve` child process; killed when dropped.
struct Node {
    child: Child,
    public: String,
    internal: Option<String>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start a node with `origins` (None: the key unset) and, with `split`, its internal
/// APIs on a port of their own.
async fn start(origins: Option<&str>, split: bool) -> Node {
    let public = format!("127.0.0.1:{}", free_port());
    let internal = split.then(|| format!("127.0.0.1:{}", free_port()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SWITCHBOARD_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(["serve", "--listen", &public])
        .env("SWITCHBOARD_JWT_SECRET", SECRET)
        .env("SWITCHBOARD_ADMIN_TOKEN", ADMIN)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(o) = origins {
        cmd.env("SWITCHBOARD_CORS_ALLOWED_ORIGINS", o);
    }
    if let Some(i) = &internal {
        cmd.env("SWITCHBOARD_INTERNAL_LISTEN", i);
    }
    let node = Node {
        child: cmd.spawn().expect("spawn switchboard"),
        public,
        internal,
    };
    for _ in 0..200 {
        if reqwest::get(format!("http://{}/healthz", node.public))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return node;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("switchboard serve did not come up on {}", node.public);
}

fn token(tenant: &str, user: &str) -> String {
    let jwt = JwtConfig {
        secret: Some(SECRET.into()),
        ..JwtConfig::default()
    };
    Signer::hmac(&jwt)
        .unwrap()
        .sign(&Claims {
            sub: user.into(),
            tenant: Some(tenant.into()),
            exp: now_secs() + 600,
            iat: None,
            nbf: None,
            name: None,
            jti: None,
            sid: None,
            iss: None,
            aud: None,
        })
        .unwrap()
}

/// A request as a browser on `origin` sends it (reqwest itself enforces no CORS).
async fn send(
    method: reqwest::Method,
    url: String,
    origin: Option<&str>,
    extra: &[(&str, &str)],
    body: Option<String>,
) -> (reqwest::StatusCode, HeaderMap, String) {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "text/plain;charset=UTF-8")
            .body(b);
    }
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    (status, headers, r.text().await.unwrap())
}

/// A browser's preflight from `origin` for a `method` request with `headers`.
async fn preflight(
    url: String,
    origin: &str,
    method: &str,
    headers: &str,
) -> (reqwest::StatusCode, HeaderMap) {
    let ask = [
        ("access-control-request-method", method),
        ("access-control-request-headers", headers),
    ];
    let (status, h, _) = send(reqwest::Method::OPTIONS, url, Some(origin), &ask, None).await;
    (status, h)
}

fn allow_origin(h: &HeaderMap) -> Option<&str> {
    h.get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap())
}

fn varies_on_origin(h: &HeaderMap) -> bool {
    h.get_all("vary")
        .iter()
        .any(|v| v.to_str().unwrap().to_ascii_lowercase().contains("origin"))
}

/// Open a WebSocket transport with `origin`: Ok(the Engine.IO open packet) or Err(the
/// refusal's HTTP status).
async fn ws_open(addr: &str, origin: Option<&str>) -> Result<String, u16> {
    let mut req = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket")
        .into_client_request()
        .unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((mut ws, _)) => {
            let open = ws.next().await.unwrap().unwrap();
            let open = open.to_text().unwrap().to_owned();
            // A Socket.IO connect on /chat over it, with a good token.
            ws.send(Message::text(format!(
                "40/chat,{}",
                json!({ "token": token("acme", "alice") })
            )))
            .await
            .unwrap();
            loop {
                let m = ws.next().await.unwrap().unwrap();
                let t = m.to_text().unwrap_or_default();
                if t.starts_with("40/chat,") {
                    break;
                }
                assert!(!t.starts_with("44/chat,"), "refused: {t}");
            }
            Ok(open)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert!(
                r.headers().get("access-control-allow-origin").is_none(),
                "a refusal grants nothing"
            );
            Err(r.status().as_u16())
        }
        Err(e) => panic!("ws: {e}"),
    }
}

#[tokio::test]
async fn unset_list_keeps_todays_behaviour() {
    let n = start(None, false).await;
    let url = |p: &str| format!("http://{}{p}", n.public);
    // The measured "before": a polling preflight is not answered as CORS.
    let (status, h) = preflight(url(HANDSHAKE), APP, "POST", "content-type").await;
    assert_eq!(status, 400, "Engine.IO refuses OPTIONS itself");
    assert_eq!(allow_origin(&h), None);
    let (status, h, body) = send(reqwest::Method::GET, url(HANDSHAKE), Some(EVIL), &[], None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("0{"), "{body}");
    assert_eq!(allow_origin(&h), None, "no CORS headers at all");
    assert!(!varies_on_origin(&h));
    assert!(
        ws_open(&n.public, Some(EVIL)).await.is_ok(),
        "no origin check on WebSockets"
    );
}

#[tokio::test]
async fn a_listed_origin_connects_over_long_polling() {
    let n = start(Some(&format!("{APP}, http://localhost:5173")), false).await;
    let url = |p: &str| format!("http://{}{p}", n.public);

    let (status, h) = preflight(url(HANDSHAKE), APP, "POST", "content-type").await;
    assert_eq!(status, 204);
    assert_eq!(allow_origin(&h), Some(APP));
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-allow-methods"], "GET, POST");
    assert_eq!(h["access-control-allow-headers"], "content-type");
    assert_eq!(h["access-control-max-age"], "600");
    assert!(varies_on_origin(&h));

    // Handshake, namespace connect (POST), its answer (GET): each granted to APP.
    let (status, h, body) = send(reqwest::Method::GET, url(HANDSHAKE), Some(APP), &[], None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(allow_origin(&h), Some(APP));
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert!(varies_on_origin(&h));
    let open: serde_json::Value = serde_json::from_str(body.strip_prefix('0').unwrap()).unwrap();
    let sid = open["sid"].as_str().unwrap().to_owned();
    let session = url(&format!("{HANDSHAKE}&sid={sid}"));
    let connect = format!("40/chat,{}", json!({ "token": token("acme", "alice") }));
    let (status, h, body) = send(
        reqwest::Method::POST,
        session.clone(),
        Some(APP),
        &[],
        Some(connect),
    )
    .await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "ok"));
    assert_eq!(allow_origin(&h), Some(APP));
    let (status, h, body) = send(reqwest::Method::GET, session, Some(APP), &[], None).await;
    assert_eq!(status, 200);
    assert!(
        body.split('\x1e')
            .any(|p| p.starts_with("40/chat,{\"sid\"")),
        "connected: {body:?}"
    );
    assert_eq!(allow_origin(&h), Some(APP));

    // The second listed origin gets its own value, never the first's.
    let (_, h, _) = send(
        reqwest::Method::GET,
        url(HANDSHAKE),
        Some("http://localhost:5173"),
        &[],
        None,
    )
    .await;
    assert_eq!(allow_origin(&h), Some("http://localhost:5173"));
}

#[tokio::test]
async fn other_origins_get_no_grant_and_their_sockets_are_refused() {
    let n = start(Some(APP), false).await;
    let url = |p: &str| format!("http://{}{p}", n.public);
    // Lookalikes of the listed origin are other origins.
    for other in [
        EVIL,
        "https://app.example.com.evil.example",
        "http://app.example.com",
        "https://app.example.com:8443",
        "null",
    ] {
        let (status, h) = preflight(url(HANDSHAKE), other, "GET", "content-type").await;
        assert_eq!(status, 403, "{other}");
        assert_eq!(allow_origin(&h), None, "{other}");
        assert!(h.get("access-control-allow-credentials").is_none());
        let (status, h, body) =
            send(reqwest::Method::GET, url(HANDSHAKE), Some(other), &[], None).await;
        assert_eq!(status, 403, "{other}: {body}");
        assert_eq!(allow_origin(&h), None, "{other}");
        let e: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(e["error"]["code"], "forbidden");
        assert_eq!(ws_open(&n.public, Some(other)).await, Err(403), "{other}");
    }
    // A listed origin, a client without Origin (a server, a native app) and a page of
    // the node's own origin still connect over WebSocket.
    let own = format!("http://{}", n.public);
    for origin in [Some(APP), None, Some(own.as_str())] {
        let open = ws_open(&n.public, origin).await;
        assert!(open.is_ok_and(|o| o.starts_with("0{")), "{origin:?}");
    }
    // Plain routes still answer another origin, without a grant.
    let (status, h, _) = send(reqwest::Method::GET, url("/healthz"), Some(EVIL), &[], None).await;
    assert_eq!(status, 200);
    assert_eq!(allow_origin(&h), None);
    assert!(varies_on_origin(&h));
}

#[tokio::test]
async fn the_http_apis_on_the_internal_listener_are_granted_to_listed_origins_only() {
    let n = start(Some(APP), true).await;
    let internal = n.internal.clone().unwrap();
    let api = format!("http://{internal}/admin/v1/tenants/acme/presence/metrics");
    let bearer = format!("Bearer {ADMIN}");
    let auth = [("authorization", bearer.as_str())];

    let (status, h) = preflight(api.clone(), APP, "GET", "authorization").await;
    assert_eq!(status, 204);
    assert_eq!(allow_origin(&h), Some(APP));
    assert_eq!(h["access-control-allow-headers"], "authorization");
    let (status, h, body) = send(reqwest::Method::GET, api.clone(), Some(APP), &auth, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(allow_origin(&h), Some(APP));

    let (status, h) = preflight(api.clone(), EVIL, "GET", "authorization").await;
    assert_eq!(status, 403);
    assert_eq!(allow_origin(&h), None);
    // Served (the browser keeps the answer from the page), never granted.
    let (status, h, _) = send(reqwest::Method::GET, api.clone(), Some(EVIL), &auth, None).await;
    assert_eq!(status, 200);
    assert_eq!(allow_origin(&h), None);
    // A backend without Origin is untouched.
    let (status, h, _) = send(reqwest::Method::GET, api, None, &auth, None).await;
    assert_eq!(status, 200);
    assert_eq!(allow_origin(&h), None);
}
