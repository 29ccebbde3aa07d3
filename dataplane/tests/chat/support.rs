//! Test support: real nodes on 127.0.0.1:0 and a small Socket.IO v4 client over
//! Engine.IO long-polling (the wire format any official client speaks), so a test sees
//! exactly the packets, acks and connect errors a client app would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_crds::config::DataplaneConfig;
use switchboard_dataplane::app::Stores;
use switchboard_dataplane::auth::{Claims, Signer, now_secs};
use tokio::sync::{mpsc, oneshot};

pub const SECRET: &str = "test-secret-test-secret-test-secret!";
pub const ADMIN: &str = "admin-token-for-tests-admin-token-for-tests";
/// The global service token of the tests that configure one.
#[allow(dead_code)] // not every suite calls the service API
pub const SERVICE: &str = "service-token-for-tests-service-token-for-tests";

/// A running node; dropped → shut down.
pub struct Node {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub fn mk_config() -> DataplaneConfig {
    let mut c = DataplaneConfig::default();
    c.jwt.secret = Some(SECRET.into());
    c.admin_token = Some(ADMIN.into());
    c
}

/// A node of the shared Redis at `url` with node id `id` and heartbeat TTL `ttl`.
pub fn redis_cfg(url: &str, id: &str, ttl: &str) -> DataplaneConfig {
    let mut c = mk_config();
    c.redis.url = Some(url.into());
    c.node_id = Some(id.into());
    c.set("presence.heartbeat_ttl", ttl).unwrap();
    c
}

/// Redis for multi-node tests: `SWITCHBOARD_TEST_REDIS_URL`. Missing: fail under CI,
/// skip (None) otherwise.
pub fn redis_url() -> Option<String> {
    switchboard_smoke::endpoint("SWITCHBOARD_TEST_REDIS_URL")
}

pub async fn start(config: DataplaneConfig) -> Node {
    launch(config, None, Box::new(|s| s)).await
}

/// A node whose stores go through `wrap` (to count calls or make steps fail).
pub async fn start_with(
    config: DataplaneConfig,
    wrap: impl FnOnce(Stores) -> Stores + Send + 'static,
) -> Node {
    launch(config, None, Box::new(wrap)).await
}

/// A node with its internal APIs on a listener of their own (`server.internal_listen`):
/// (the public node, the internal address as a node that is stopped with the public one).
pub async fn start_split(config: DataplaneConfig) -> (Node, Node) {
    let internal = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = internal.local_addr().expect("addr");
    (
        launch(config, Some(internal), Box::new(|s| s)).await,
        Node::external(addr),
    )
}

type Wrap = Box<dyn FnOnce(Stores) -> Stores + Send>;

async fn launch(
    config: DataplaneConfig,
    internal: Option<tokio::net::TcpListener>,
    wrap: Wrap,
) -> Node {
    config.validate().expect("test config is valid");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = rx.await;
    };
    let (ready_tx, ready_rx) = oneshot::channel();
    tokio::spawn(async move {
        let r = switchboard_dataplane::serve_with(listener, internal, config, wrap, shutdown);
        let _ = ready_tx.send(());
        if let Err(e) = r.await {
            eprintln!("node failed: {e:#}");
        }
    });
    let _ = ready_rx.await;
    let node = Node {
        addr,
        stop: Some(tx),
    };
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http
            .get(node.url("/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return node;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("node on {addr} did not come up");
}

impl Node {
    /// A node running in another process (stopped by its owner).
    pub fn external(addr: SocketAddr) -> Node {
        Node { addr, stop: None }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The node's `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Sessions the node closed as slow consumers (their send buffer was full when an
    /// ack was due): `switchboard_forced_disconnects_total{kind="slow_consumer"}`.
    pub async fn slow_consumer_closes(&self) -> u64 {
        let m = self.metrics().await;
        m.lines()
            .find_map(|l| {
                l.strip_prefix("switchboard_forced_disconnects_total{kind=\"slow_consumer\"} ")
            })
            .map_or(0, |n| n.trim().parse().expect("a count"))
    }
}

pub fn claims(tenant: &str, sub: &str) -> Claims {
    Claims {
        sub: sub.into(),
        tenant: Some(tenant.into()),
        exp: now_secs() + 3600,
        iat: Some(now_secs()),
        nbf: None,
        name: Some(capitalize(sub)),
        jti: Some(format!("jti-{sub}-{}", uuid::Uuid::new_v4().simple())),
        sid: None,
        iss: None,
        aud: None,
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

pub fn token(claims: &Claims) -> String {
    let cfg = mk_config();
    Signer::hmac(&cfg.jwt)
        .expect("signer")
        .sign(claims)
        .expect("sign")
}

/// A tenant-scoped service token for `tenant` (sub: the service's name), and its `jti`.
#[allow(dead_code)] // not every suite calls the service API
pub fn service_token(tenant: &str) -> (String, String) {
    let claims = claims(tenant, "billing-backend");
    let jti = claims.jti.clone().unwrap_or_default();
    let token = Signer::hmac(&mk_config().jwt)
        .expect("signer")
        .sign(&switchboard_dataplane::auth::ScopedClaims::service(claims))
        .expect("sign");
    (token, jti)
}

/// A Socket.IO client on one namespace.
pub struct Client {
    http: reqwest::Client,
    base: String,
    ns: String,
    next_ack: Mutex<u64>,
    acks: Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>,
    events: tokio::sync::Mutex<mpsc::Receiver<(String, Value)>>,
    /// Engine.IO forbids overlapping POSTs on one session.
    post_lock: tokio::sync::Mutex<()>,
    pub closed: Arc<tokio::sync::Notify>,
    closed_flag: Arc<std::sync::atomic::AtomicBool>,
    /// How the session ended, in the official client's words (`transport close`: the
    /// Engine.IO close packet; `io server disconnect`: a Socket.IO namespace disconnect;
    /// `transport error`: a poll failed), and when.
    closed_how: Arc<Mutex<Option<(&'static str, tokio::time::Instant)>>>,
}

/// A refused namespace connection: the `connect_error` message.
#[derive(Debug)]
pub struct ConnectError(pub String);

fn packets(body: &str) -> Vec<String> {
    body.split('\x1e').map(str::to_owned).collect()
}

impl Client {
    /// Connect to `/chat` with `auth: { token }` (or no auth when `token` is None).
    pub async fn connect(node: &Node, token: Option<&str>) -> Result<Client, ConnectError> {
        Self::connect_ns(node, "/chat", token.map(|t| json!({ "token": t })), None).await
    }

    /// Connect with `auth` in the CONNECT packet and/or an `Authorization: Bearer` header.
    pub async fn connect_ns(
        node: &Node,
        ns: &str,
        auth: Option<Value>,
        bearer: Option<&str>,
    ) -> Result<Client, ConnectError> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(b) = bearer {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {b}").parse().expect("header"),
            );
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .expect("http client");
        let open = http
            .get(node.url("/socket.io/?EIO=4&transport=polling"))
            .send()
            .await
            .map_err(|e| ConnectError(format!("http: {e}")))?
            .text()
            .await
            .map_err(|e| ConnectError(format!("http: {e}")))?;
        let handshake: Value = serde_json::from_str(open.strip_prefix('0').unwrap_or(&open))
            .map_err(|e| ConnectError(format!("open packet {open:?}: {e}")))?;
        let sid = handshake["sid"]
            .as_str()
            .ok_or_else(|| ConnectError("no sid".into()))?
            .to_owned();
        let base = node.url(&format!("/socket.io/?EIO=4&transport=polling&sid={sid}"));
        let connect = match auth {
            Some(a) => format!("40{ns},{a}"),
            None => format!("40{ns},"),
        };
        http.post(&base)
            .body(connect)
            .send()
            .await
            .map_err(|e| ConnectError(format!("post: {e}")))?;
        // Read until the namespace answers.
        let mut early = Vec::new();
        let verdict = loop {
            let body = http
                .get(&base)
                .send()
                .await
                .map_err(|e| ConnectError(format!("poll: {e}")))?
                .text()
                .await
                .map_err(|e| ConnectError(format!("poll: {e}")))?;
            let mut verdict = None;
            for p in packets(&body) {
                if let Some(rest) = p.strip_prefix(&format!("40{ns},")) {
                    verdict = Some(Ok(rest.to_owned()));
                } else if let Some(rest) = p.strip_prefix(&format!("44{ns},")) {
                    let v: Value = serde_json::from_str(rest).unwrap_or(Value::Null);
                    verdict = Some(Err(ConnectError(
                        v["message"].as_str().unwrap_or(rest).to_owned(),
                    )));
                } else if p == "2" {
                    let _ = http.post(&base).body("3").send().await;
                } else {
                    early.push(p);
                }
            }
            if let Some(v) = verdict {
                break v;
            }
        };
        verdict?;
        let (tx, rx) = mpsc::channel(1024);
        let client = Client {
            http,
            base,
            ns: ns.to_owned(),
            next_ack: Mutex::new(0),
            acks: Arc::default(),
            events: tokio::sync::Mutex::new(rx),
            post_lock: tokio::sync::Mutex::new(()),
            closed: Arc::default(),
            closed_flag: Arc::default(),
            closed_how: Arc::default(),
        };
        client.spawn_poller(tx, early);
        Ok(client)
    }

    fn spawn_poller(&self, tx: mpsc::Sender<(String, Value)>, early: Vec<String>) {
        let (http, base, ns, acks, closed, flag) = (
            self.http.clone(),
            self.base.clone(),
            self.ns.clone(),
            self.acks.clone(),
            self.closed.clone(),
            self.closed_flag.clone(),
        );
        let how = self.closed_how.clone();
        let ended = move |reason: &'static str| {
            how.lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert((reason, tokio::time::Instant::now()));
        };
        tokio::spawn(async move {
            let mut pending = early;
            loop {
                for p in pending.drain(..) {
                    if p == "2" {
                        let _ = http.post(&base).body("3").send().await;
                    } else if p == "1" || p.starts_with(&format!("41{ns}")) {
                        ended(if p == "1" {
                            "transport close"
                        } else {
                            "io server disconnect"
                        });
                        flag.store(true, std::sync::atomic::Ordering::SeqCst);
                        closed.notify_waiters();
                        return;
                    } else if let Some(rest) = p.strip_prefix(&format!("42{ns},")) {
                        if let Ok(Value::Array(mut a)) = serde_json::from_str::<Value>(rest) {
                            let name = a
                                .first()
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned();
                            let data = if a.len() > 1 {
                                a.remove(1)
                            } else {
                                Value::Null
                            };
                            let _ = tx.send((name, data)).await;
                        }
                    } else if let Some(rest) = p.strip_prefix(&format!("43{ns},")) {
                        let split = rest.find('[').unwrap_or(0);
                        let (id, data) = rest.split_at(split);
                        if let (Ok(id), Ok(Value::Array(mut a))) =
                            (id.parse::<u64>(), serde_json::from_str::<Value>(data))
                        {
                            let v = if a.is_empty() {
                                Value::Null
                            } else {
                                a.remove(0)
                            };
                            if let Some(s) =
                                acks.lock().unwrap_or_else(|e| e.into_inner()).remove(&id)
                            {
                                let _ = s.send(v);
                            }
                        }
                    }
                }
                match http
                    .get(&base)
                    .timeout(Duration::from_secs(40))
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => match r.text().await {
                        Ok(body) => pending = packets(&body),
                        Err(_) => break,
                    },
                    _ => break,
                }
            }
            ended("transport error");
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            closed.notify_waiters();
        });
    }

    /// Emit a request event with `data` and wait for its ack.
    pub async fn req(&self, event: &str, data: Value) -> Value {
        self.req_raw(event, Some(data)).await
    }

    /// Emit with any payload (None: no payload at all) and wait for the ack.
    pub async fn req_raw(&self, event: &str, data: Option<Value>) -> Value {
        let id = {
            let mut n = self.next_ack.lock().unwrap_or_else(|e| e.into_inner());
            *n += 1;
            *n
        };
        let (tx, rx) = oneshot::channel();
        self.acks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let args = match data {
            Some(d) => json!([event, d]),
            None => json!([event]),
        };
        self.post(format!("42{},{id}{args}", self.ns)).await;
        match tokio::time::timeout(Duration::from_secs(5), rx).await {
            Ok(Ok(v)) => v,
            _ => panic!("no ack for {event} within 5s"),
        }
    }

    /// Emit a request event (with an ack id, so the server computes an ack) and do not
    /// wait for the ack.
    #[allow(dead_code)] // tests/drain.rs
    pub async fn req_nowait(&self, event: &str, data: Value) {
        let id = {
            let mut n = self.next_ack.lock().unwrap_or_else(|e| e.into_inner());
            *n += 1;
            *n
        };
        self.post(format!("42{},{id}{}", self.ns, json!([event, data])))
            .await;
    }

    pub async fn ok(&self, event: &str, data: Value) -> Value {
        let r = self.req(event, data.clone()).await;
        assert_eq!(r["ok"], json!(true), "{event} {data} → {r}");
        r["data"].clone()
    }

    pub async fn err(&self, event: &str, data: Value) -> String {
        let r = self.req(event, data.clone()).await;
        assert_eq!(r["ok"], json!(false), "{event} {data} should fail → {r}");
        r["error"]["code"].as_str().unwrap_or_default().to_owned()
    }

    async fn post(&self, body: String) {
        let _g = self.post_lock.lock().await;
        let _ = self.http.post(&self.base).body(body).send().await;
    }

    /// The next event named `name` within `within` (other events are dropped).
    pub async fn next(&self, name: &str, within: Duration) -> Option<Value> {
        let mut rx = self.events.lock().await;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((n, v))) if n == name => return Some(v),
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    }

    /// Every event that arrives within `within`, of any name, in order (waits the whole
    /// time: for a record of everything a client was sent).
    #[allow(dead_code)] // not every suite records
    pub async fn received(&self, within: Duration) -> Vec<(String, Value)> {
        let mut rx = self.events.lock().await;
        let deadline = tokio::time::Instant::now() + within;
        let mut all = Vec::new();
        while let Ok(Some(e)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            all.push(e);
        }
        all
    }

    pub async fn expect(&self, name: &str) -> Value {
        self.next(name, Duration::from_secs(3))
            .await
            .unwrap_or_else(|| panic!("no {name} event within 3s"))
    }

    /// Leave the namespace and close the session, as `socket.disconnect()` does.
    #[allow(dead_code)] // tests/drain.rs
    pub async fn close(self) {
        self.post(format!("41{},", self.ns)).await;
        self.post("1".into()).await;
    }

    /// How and when the session ended (see `closed_how`), once it has.
    #[allow(dead_code)] // tests/drain.rs
    pub fn closed_how(&self) -> Option<(&'static str, tokio::time::Instant)> {
        *self.closed_how.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True once the server closed this client's session or namespace.
    pub fn is_closed(&self) -> bool {
        self.closed_flag.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub async fn wait_closed(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if self.is_closed() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.is_closed()
    }
}

/// A client connected to /presence for `tenant`/`user`.
pub async fn presence_user(node: &Node, tenant: &str, sub: &str) -> Client {
    let t = token(&claims(tenant, sub));
    Client::connect_ns(node, "/presence", Some(json!({ "token": t })), None)
        .await
        .expect("connect /presence")
}

/// A connected client for `tenant`/`user`.
pub async fn user(node: &Node, tenant: &str, sub: &str) -> Client {
    Client::connect(node, Some(&token(&claims(tenant, sub))))
        .await
        .expect("connect")
}

/// POST a revocation to the admin API.
pub async fn revoke(node: &Node, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(node.url("/admin/v1/revocations"))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .expect("admin api")
}

/// A node in its own process (the `switchboard` binary), so it can be killed with SIGKILL.
pub struct ChildNode {
    pub child: std::process::Child,
    pub node: Node,
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `switchboard serve` on a free port with Redis at `url`, node id `id` and extra
/// environment `env`; wait until it is ready.
pub async fn spawn_node(url: &str, id: &str, env: &[(&str, &str)]) -> ChildNode {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--redis-url",
            url,
            "--node-id",
            id,
        ])
        .env("SWITCHBOARD_JWT_SECRET", SECRET)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn switchboard");
    let node = Node::external(format!("127.0.0.1:{port}").parse().expect("addr"));
    for _ in 0..200 {
        if reqwest::get(node.url("/readyz"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return ChildNode { child, node };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("child node did not come up");
}

/// A node in its own process with a 2 s heartbeat TTL (to be killed) and a surviving
/// in-process node with the same TTL, both on the shared Redis at `url`.
pub async fn doomed_and_survivor(url: &str) -> (ChildNode, Node) {
    let doomed = spawn_node(
        url,
        &unique("doomed"),
        &[("SWITCHBOARD_HEARTBEAT_TTL", "2s")],
    )
    .await;
    let survivor = start(redis_cfg(url, &unique("survivor"), "2s")).await;
    (doomed, survivor)
}

// === fresh ids and node pairs ===

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Two nodes sharing Redis, with `set` applied to both configs.
pub async fn redis_pair(set: &[(&str, &str)]) -> Option<(Node, Node)> {
    let url = redis_url()?;
    let mk = |id: &str| {
        let mut c = mk_config();
        c.redis.url = Some(url.clone());
        c.node_id = Some(unique(id));
        for (k, v) in set {
            c.set(k, v).unwrap();
        }
        // The race test sends bursts; it is not testing the limiter.
        lift_limits(&mut c);
        c
    };
    Some((start(mk("node-a")).await, start(mk("node-b")).await))
}

/// Rate limits out of the way, for tests that send bursts (they do not test the limiter).
pub fn lift_limits(c: &mut DataplaneConfig) {
    for b in [&mut c.limits.per_socket, &mut c.limits.per_user] {
        for bucket in [
            &mut b.message,
            &mut b.typing,
            &mut b.read,
            &mut b.room,
            &mut b.signal,
        ] {
            bucket.rate = 10_000.0;
            bucket.burst = 10_000;
        }
    }
}

pub fn embedded(set: &[(&str, &str)]) -> switchboard_crds::config::DataplaneConfig {
    let mut c = mk_config();
    for (k, v) in set {
        c.set(k, v).unwrap();
    }
    c
}

// === fuzzing: arbitrary payloads and the ack check ===

/// The ack error codes of PROTOCOL.md.
pub const CODES: &[&str] = &[
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

/// Random JSON (nested up to 3 levels) whose object keys are often from `keys` and whose
/// leaves are often one of `known` (an id that exists, a valid enum value), so payloads
/// get past the first checks.
pub fn arb_payload(
    keys: &'static [&'static str],
    known: Vec<Value>,
) -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z:{} ]{0,12}".prop_map(Value::from),
        proptest::sample::select(known),
        Just(json!(-1)),
        Just(json!(u64::MAX)),
    ];
    let key = prop_oneof![
        proptest::sample::select(keys).prop_map(str::to_owned),
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

/// An ack is `{ok: true, data}` or `{ok: false, error: {code, message}}` with a known code
/// that blames the request: the stores are up while fuzzing, so `unavailable` or
/// `internal` for a payload means bad input reached a fault path.
pub fn assert_ack(event: &str, payload: &Value, ack: &Value) {
    match ack["ok"].as_bool() {
        Some(true) => assert!(ack.get("data").is_some(), "{event} {payload} → {ack}"),
        Some(false) => {
            let code = ack["error"]["code"].as_str().unwrap_or_default();
            assert!(
                CODES.contains(&code),
                "{event} {payload} → unknown code in {ack}"
            );
            assert!(
                !["unavailable", "internal"].contains(&code),
                "{event} {payload} → a server fault for a client's payload: {ack}"
            );
            assert!(
                ack["error"]["message"].is_string(),
                "{event} {payload} → {ack}"
            );
        }
        None => panic!("{event} {payload} → not an ack envelope: {ack}"),
    }
}

/// Send every event non-object payloads and no payload, then `rounds` random payloads
/// (deterministic), checking that each answer is a well-formed ack.
pub async fn fuzz(
    client: &Client,
    events: &[&str],
    strategy: impl proptest::strategy::Strategy<Value = Value>,
    rounds: usize,
) {
    use proptest::strategy::ValueTree;
    for event in events {
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
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for i in 0..rounds {
        let payload = strategy.new_tree(&mut runner).expect("value").current();
        let event = events[i % events.len()];
        let ack = client.req(event, payload.clone()).await;
        assert_ack(event, &payload, &ack);
    }
}

// === a private Redis, to count what a request costs ===

/// A `redis-server` of this test alone on a free 127.0.0.x port (so the commands it sees
/// are this test's); stopped (by its pid) on drop.
pub struct PrivateRedis {
    child: std::process::Child,
    pub addr: SocketAddr,
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PrivateRedis {
    /// Start one; `None` (or a failure under `CI=true`) when `redis-server` is missing.
    pub async fn start() -> Option<PrivateRedis> {
        Self::start_with(&[]).await
    }

    /// [`PrivateRedis::start`] with more `redis-server` arguments (`--maxmemory 16mb`…).
    pub async fn start_with(extra: &[&str]) -> Option<PrivateRedis> {
        if std::process::Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var("CI").is_err(),
                "redis-server is needed for this test under CI"
            );
            return None;
        }
        let host = format!("127.0.0.{}", 2 + std::process::id() % 250);
        let port = std::net::TcpListener::bind(format!("{host}:0"))
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--bind",
                &host,
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        // Owned at once: dropped (killed and waited for) on every path below.
        let redis = PrivateRedis {
            child,
            addr: format!("{host}:{port}").parse().expect("addr"),
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(redis.addr).await.is_ok() {
                return Some(redis);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on {} did not come up", redis.addr);
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// A connected fred client of this server.
    pub async fn client(&self) -> fred::clients::Client {
        use fred::interfaces::ClientLike;
        let config = fred::prelude::Config::from_url(&self.url()).expect("url");
        let client = fred::prelude::Builder::from_config(config)
            .build()
            .expect("client");
        client.init().await.expect("connect");
        client
    }

    /// Start recording every command the server runs (`MONITOR`).
    pub async fn monitor(&self) -> Monitor {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let mut s = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("monitor connection");
        s.write_all(b"MONITOR\r\n").await.expect("MONITOR");
        let mut lines = BufReader::new(s).lines();
        assert_eq!(
            lines.next_line().await.expect("read").as_deref(),
            Some("+OK")
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                sink.lock().unwrap().push(l);
            }
        });
        Monitor { seen, task }
    }
}

/// The commands a [`PrivateRedis`] ran, as `MONITOR` prints them:
/// `+<time> [<db> <client address | lua>] "CMD" "arg" ...`.
pub struct Monitor {
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What some requests cost in Redis: the commands that mention a key part.
#[derive(Debug, Default, PartialEq)]
pub struct Cost {
    /// Commands sent by clients (round trips, pipelines aside).
    pub round_trips: usize,
    /// Commands run inside scripts.
    pub in_scripts: usize,
    /// Bytes of all those command lines (arguments included).
    pub bytes: usize,
    /// The commands, by name (to spot the ones whose work grows with a collection).
    pub names: Vec<String>,
}

impl Monitor {
    /// Forget what was recorded so far, once the commands in flight have been printed.
    pub async fn reset(&self) {
        tokio::time::sleep(Duration::from_millis(150)).await;
        self.seen.lock().unwrap().clear();
    }

    /// The cost of what ran since the last [`Monitor::reset`], counting only commands
    /// whose line contains `part` (a key fragment).
    pub async fn cost(&self, part: &str) -> Cost {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let seen = self.seen.lock().unwrap();
        let mut c = Cost::default();
        for l in seen.iter().filter(|l| l.contains(part)) {
            if l.contains(" lua] ") {
                c.in_scripts += 1;
            } else {
                c.round_trips += 1;
            }
            c.bytes += l.len();
            if let Some(name) = l.split("] \"").nth(1).and_then(|r| r.split('"').next()) {
                c.names.push(name.to_uppercase());
            }
        }
        c
    }
}
