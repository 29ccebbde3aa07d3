//! Engine.IO / Socket.IO frames as an attacker writes them, over WebSocket and
//! long-polling: malformed packets, unknown and unjoined namespaces, binary attachments
//! (placeholders with missing or extra attachments), huge ack ids, deep JSON, payloads at
//! and past `limits.max_payload_bytes`, over every event of all four namespaces.
//!
//! The oracle: nothing in the node panics; every well-formed request with an ack id gets
//! a typed ack (`assert_ack`: never `internal` or `unavailable`) without the session
//! ending, unless the node closed it as a slow consumer (its send buffer full: the
//! long-polling session reads rarely; PROTOCOL.md, "Slow consumers"); a malformed frame may end the session, never hang it (a probe sent right
//! after it is answered, or the transport closes); afterwards a normal client is served,
//! and a user of another tenant with the same user id has been sent nothing.
//!
//! Seeded and reproducible: `SWITCHBOARD_FUZZ_SEED` (printed at the start and in every
//! failure) and `SWITCHBOARD_FUZZ_CASES` (default 10 000). The long run (1 000 000 cases)
//! is documented in BENCHMARKS.md, "Frame fuzzing".

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::protocol::{self, NAMESPACES};
use crate::support::*;

/// Cases of the normal test command.
const DEFAULT_CASES: u64 = 10_000;

/// Well-formed requests sent before their acks are awaited.
const WINDOW: usize = 32;

/// How long a batch's acks, or a probe's answer, may take.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// The node's packet cap in this test (the default, `limits.max_payload_bytes`).
const MAX_PAYLOAD: usize = 64 * 1024;

/// Panics raised outside the test code (in the node, its libraries or its tasks), with
/// where they happened.
static NODE_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn watch_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_tests = info.location().is_some_and(|l| l.file().contains("tests/"));
            if !in_tests {
                NODE_PANICS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(info.to_string());
            }
            previous(info);
        }));
    });
}

fn env_u64(var: &str) -> Option<u64> {
    let v = std::env::var(var).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var}={v:?} is not a number")),
    )
}

// === generating cases ===

/// One frame on the wire.
#[derive(Clone, Debug)]
enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

/// A generated case: its frames, and what the oracle may expect.
#[derive(Debug)]
struct Case {
    kind: &'static str,
    frames: Vec<Frame>,
    /// The ack id a well-formed request carries, with its event and payload (for the
    /// failure message).
    ack: Option<(i64, String, String)>,
    /// Well-formed: the session must stay up and the ack (if any) must come. Otherwise
    /// the session may end, and an ack that does come must still be typed.
    well_formed: bool,
    /// Sent over long-polling instead of the WebSocket.
    polling: bool,
}

struct Gen {
    rng: StdRng,
    next_id: i64,
}

/// Leaves that exist or are valid, so payloads often get past the first checks.
fn known(ns: &str) -> &'static [&'static str] {
    match ns {
        "/chat" => &[
            "\"r1\"",
            "\"r2\"",
            "\"bob\"",
            "\"fuzzer\"",
            "\"public\"",
            "\"private\"",
            "1",
            "\"read\"",
            "\"moderator\"",
        ],
        "/presence" => &[
            "\"online\"",
            "\"away\"",
            "\"busy\"",
            "\"offline\"",
            "[\"bob\",\"fuzzer\"]",
            "\"bob\"",
        ],
        "/webrtc" => &[
            "\"bob\"",
            "\"audio\"",
            "\"video\"",
            "[\"bob\",\"carol\"]",
            "\"v=0\"",
            "10",
        ],
        _ => &[
            "\"fcm\"",
            "\"apns\"",
            "\"22:00\"",
            "\"UTC\"",
            "\"high\"",
            "\"urgent\"",
            "\"a-device-token-0123456789abcdef\"",
        ],
    }
}

impl Gen {
    fn id(&mut self) -> i64 {
        self.next_id += 1;
        if self.rng.random_ratio(1, 20) {
            // Huge, still an ack id the protocol can answer.
            i64::MAX - self.next_id
        } else {
            self.next_id
        }
    }

    fn pick<'a>(&mut self, from: &'a [&'a str]) -> &'a str {
        from[self.rng.random_range(0..from.len())]
    }

    fn string(&mut self) -> String {
        let len = match self.rng.random_range(0..10) {
            0 => self.rng.random_range(100..3000),
            _ => self.rng.random_range(0..12),
        };
        let chars = [
            'a',
            'z',
            ':',
            '{',
            '"',
            '\\',
            '\u{1F44D}',
            '\u{0}',
            '\u{202E}',
            ' ',
            '/',
            ',',
        ];
        let s: String = (0..len)
            .map(|_| chars[self.rng.random_range(0..chars.len())])
            .collect();
        serde_json::to_string(&s).expect("json string")
    }

    /// Random JSON text for `ns`, nested up to `depth`.
    fn json(&mut self, ns: &str, depth: u32) -> String {
        let leaf = depth == 0 || self.rng.random_ratio(2, 5);
        if leaf {
            return match self.rng.random_range(0..10) {
                0 => "null".into(),
                1 => self.rng.random::<bool>().to_string(),
                2 => self.rng.random::<i64>().to_string(),
                3 => ["-1", "0", "18446744073709551615", "1e308", "-0.5", "1.5"]
                    [self.rng.random_range(0..6)]
                .into(),
                4 | 5 => self.string(),
                _ => self.pick(known(ns)).into(),
            };
        }
        let n = self.rng.random_range(0..5);
        if self.rng.random_ratio(1, 4) {
            let items: Vec<String> = (0..n).map(|_| self.json(ns, depth - 1)).collect();
            format!("[{}]", items.join(","))
        } else {
            let keys = protocol::keys(ns);
            let fields: Vec<String> = (0..n)
                .map(|_| {
                    let k = if self.rng.random_ratio(4, 5) {
                        format!("\"{}\"", self.pick(keys))
                    } else {
                        self.string()
                    };
                    format!("{k}:{}", self.json(ns, depth - 1))
                })
                .collect();
            format!("{{{}}}", fields.join(","))
        }
    }

    fn namespace(&mut self) -> &'static str {
        NAMESPACES[self.rng.random_range(0..NAMESPACES.len())].0
    }

    /// An event of `ns` (now and then an unknown one: the node must still answer).
    fn event(&mut self, ns: &str) -> String {
        if self.rng.random_ratio(1, 20) {
            return [
                "room:nope",
                "presence:nope",
                "",
                "__proto__",
                "auth:refresh:x",
            ][self.rng.random_range(0..5)]
            .into();
        }
        let events = protocol::events(ns);
        events[self.rng.random_range(0..events.len())].into()
    }

    /// `42{ns},{id}[event,payload]` with a raw payload text (None: no payload).
    fn request(&mut self, kind: &'static str, ns: &str, payload: Option<String>) -> Case {
        let event = self.event(ns);
        let id = self.id();
        let args = match &payload {
            Some(p) => format!("[{},{p}]", json!(event)),
            None => format!("[{}]", json!(event)),
        };
        let shown = payload.unwrap_or_default();
        Case {
            kind,
            frames: vec![Frame::Text(format!("42{ns},{id}{args}"))],
            ack: Some((id, event, shown.chars().take(300).collect())),
            well_formed: true,
            polling: false,
        }
    }

    fn malformed(&mut self, kind: &'static str, frames: Vec<Frame>) -> Case {
        Case {
            kind,
            frames,
            ack: None,
            well_formed: false,
            polling: false,
        }
    }

    fn case(&mut self) -> Case {
        let ns = self.namespace();
        let mut case = match self.rng.random_range(0..100) {
            // Arbitrary JSON to a real event.
            0..=49 => {
                let depth = self.rng.random_range(0..5);
                let p = self.json(ns, depth);
                self.request("arbitrary json", ns, Some(p))
            }
            50..=52 => self.request("no payload", ns, None),
            // Deep nesting within serde_json's limit: still a request to answer.
            53..=56 => {
                let d = self.rng.random_range(20..120);
                let p = format!("{{\"room_id\":{}1{}}}", "[".repeat(d), "]".repeat(d));
                self.request("deep json", ns, Some(p))
            }
            // Deeper than serde_json parses (128): read as no payload, still answered.
            57..=58 => {
                let d = self.rng.random_range(129..20_000);
                let p = format!("{}{}", "[".repeat(d), "]".repeat(d));
                self.request("too deep json", ns, Some(p))
            }
            // A payload just under the packet cap: an answer (payload_too_large, ...).
            59..=61 => {
                let body = "x".repeat(self.rng.random_range(MAX_PAYLOAD / 2..MAX_PAYLOAD - 200));
                let key = self.pick(protocol::keys(ns));
                let p = format!("{{\"room_id\":\"r1\",\"{key}\":\"{body}\"}}");
                self.request("large payload", ns, Some(p))
            }
            // Past the cap: the transport refuses it.
            62..=63 => {
                let body = "x".repeat(self.rng.random_range(MAX_PAYLOAD..4 * MAX_PAYLOAD));
                let mut c =
                    self.request("huge payload", ns, Some(format!("{{\"body\":\"{body}\"}}")));
                c.well_formed = false;
                c
            }
            // A binary event with its one attachment.
            64..=67 => {
                let event = self.event(ns);
                let id = self.id();
                let text = format!(
                    "451-{ns},{id}[{},{{\"room_id\":\"r1\",\"body\":{{\"_placeholder\":true,\"num\":0}}}}]",
                    json!(event)
                );
                let bytes: Vec<u8> = (0..self.rng.random_range(0..64))
                    .map(|_| self.rng.random())
                    .collect();
                Case {
                    kind: "binary",
                    frames: vec![Frame::Text(text), Frame::Binary(bytes)],
                    ack: Some((id, event, "<binary attachment>".into())),
                    well_formed: true,
                    polling: false,
                }
            }
            // Attachments missing, extra, numbered wrong, or far too many announced.
            68..=71 => {
                let event = self.event(ns);
                let id = self.id();
                let (announced, sent, num) = match self.rng.random_range(0..5) {
                    0 => (2, 1, 0),
                    1 => (1, 3, 0),
                    2 => (1, 1, 7),
                    3 => (100_000, 2, 0),
                    _ => (0, 1, 0),
                };
                let mut frames = vec![Frame::Text(format!(
                    "45{announced}-{ns},{id}[{},{{\"body\":{{\"_placeholder\":true,\"num\":{num}}}}}]",
                    json!(event)
                ))];
                frames.extend((0..sent).map(|i| Frame::Binary(vec![i; 8])));
                self.malformed("bad attachments", frames)
            }
            // An ack id past what the protocol can carry (i64).
            72..=73 => {
                let frame = format!(
                    "42{ns},{}[\"{}\",{{}}]",
                    "9".repeat(self.rng.random_range(20..400)),
                    self.event(ns)
                );
                self.malformed("huge ack id", vec![Frame::Text(frame)])
            }
            // A namespace that does not exist, or one this session has not joined.
            74..=78 => {
                let other = ["/", "/nope", "/chat/../admin", "/presence2", "//chat"]
                    [self.rng.random_range(0..5)];
                let frame = match self.rng.random_range(0..3) {
                    0 => format!("40{other},{{\"token\":\"x\"}}"),
                    1 => format!("42{other},{}[\"room:create\",{{}}]", self.id()),
                    _ => format!("41{other},"),
                };
                self.malformed("wrong namespace", vec![Frame::Text(frame)])
            }
            // Socket.IO packets that do not parse.
            79..=90 => {
                let id = self.id();
                let p = self.json(ns, 2);
                let valid = format!("42{ns},{id}[\"{}\",{p}]", self.event(ns));
                let frame = match self.rng.random_range(0..8) {
                    0 => {
                        let mut cut = self.rng.random_range(0..valid.len().max(1));
                        while !valid.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        valid[..cut].to_owned()
                    }
                    1 => format!("4{}", self.rng.random_range(7..100)),
                    2 => format!("42{ns},{id}{{\"not\":\"an array\"}}"),
                    3 => format!("42{ns},{id}[]"),
                    4 => format!("42{ns},{id}[42,{{}}]"),
                    5 => format!("43{ns},{id}[{{}}]"),
                    6 => format!("4{}", self.string()),
                    _ => {
                        let mut b = valid.into_bytes();
                        for _ in 0..self.rng.random_range(1..4) {
                            let i = self.rng.random_range(0..b.len());
                            b[i] = self.rng.random_range(0x20..0x7f);
                        }
                        String::from_utf8(b).unwrap_or_default()
                    }
                };
                self.malformed("malformed socket.io", vec![Frame::Text(frame)])
            }
            // Engine.IO packets out of place, unknown or empty; a stray binary frame.
            _ => {
                let frame = match self.rng.random_range(0..7) {
                    0 => Frame::Text(String::new()),
                    1 => Frame::Text("9".into()),
                    2 => Frame::Text("5".into()),
                    3 => Frame::Text("6".into()),
                    4 => Frame::Text("3probe".into()),
                    5 => Frame::Binary(vec![4, 0xff, 0]),
                    _ => Frame::Text("1".into()),
                };
                self.malformed("malformed engine.io", vec![frame])
            }
        };
        // Some of everything over long-polling too.
        case.polling = self.rng.random_ratio(1, 16);
        case
    }
}

// === the sessions ===

/// What came back while waiting.
#[derive(Default)]
struct Stats {
    acks: u64,
    reconnects: u64,
    /// Polling sessions the node closed as slow consumers (PROTOCOL.md): a well-formed
    /// request may end one, since the session read its buffer too rarely.
    slow_closes: u64,
    events: u64,
    connect_errors: u64,
}

/// Where the answers are checked: acks by id (the well-formed requests' and the others'),
/// and the stats.
struct Oracle {
    seed: u64,
    expected: HashMap<i64, (String, String)>,
    optional: HashMap<i64, (String, String)>,
    stats: Stats,
}

impl Oracle {
    /// A Socket.IO packet from the node (without the Engine.IO `4`). Returns false when
    /// it ends a namespace (`41`).
    fn packet(&mut self, p: &str) -> bool {
        if let Some(rest) = p.strip_prefix('3') {
            let (_, rest) = rest.split_once(',').unwrap_or(("", rest));
            let split = rest.find('[').unwrap_or(0);
            let (id, data) = rest.split_at(split);
            let id: i64 = id
                .parse()
                .unwrap_or_else(|_| panic!("seed {}: an ack with id {id:?}: {p}", self.seed));
            let ack: Value = serde_json::from_str(data)
                .unwrap_or_else(|e| panic!("seed {}: ack {p}: {e}", self.seed));
            let req = self
                .expected
                .remove(&id)
                .or_else(|| self.optional.remove(&id));
            if let Some((event, payload)) = req {
                // The seed is printed at the start of the test's output.
                assert_ack(
                    &event,
                    &json!(payload),
                    &ack.get(0).cloned().unwrap_or(Value::Null),
                );
                self.stats.acks += 1;
            }
        } else if p.starts_with('2') {
            self.stats.events += 1;
        } else if p.starts_with('4') {
            self.stats.connect_errors += 1;
        } else if p.starts_with('1') {
            return false;
        }
        true
    }
}

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket session joined to all four namespaces.
pub(crate) async fn open_ws(node: &Node, token: &str) -> Ws {
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", node.addr);
    // Small frames go out at once (no Nagle delay on a request-then-wait pattern).
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .expect("ws");
    for (ns, _) in NAMESPACES {
        ws.send(Message::text(format!(
            "40{ns},{}",
            json!({ "token": token })
        )))
        .await
        .expect("connect");
    }
    let mut joined = 0;
    while joined < NAMESPACES.len() {
        match tokio::time::timeout(ANSWER_WITHIN, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                if t.starts_with("40/") {
                    joined += 1;
                } else if t.starts_with("44/") {
                    panic!("namespace refused: {t}");
                } else if t.as_str() == "2" {
                    let _ = ws.send(Message::text("3")).await;
                }
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("session did not open: {other:?}"),
        }
    }
    ws
}

/// Read from the WebSocket until `done` holds for the oracle; false when the session
/// ended first. Panics (with the seed) when neither happens in time.
async fn read_ws(ws: &mut Ws, o: &mut Oracle, done: impl Fn(&Oracle) -> bool, what: &str) -> bool {
    let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
    while !done(o) {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!(
                "seed {}: no answer within {ANSWER_WITHIN:?} for {what} (missing acks: {:?})",
                o.seed,
                o.expected.values().take(5).collect::<Vec<_>>()
            ),
            Ok(Some(Ok(Message::Text(t)))) => {
                let t = t.as_str();
                if t == "2" {
                    let _ = ws.send(Message::text("3")).await;
                } else if t == "1" {
                    return false;
                } else if let Some(p) = t.strip_prefix('4')
                    && !o.packet(p)
                {
                    return false;
                }
            }
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => return false,
            Ok(Some(Ok(_))) => {}
        }
    }
    true
}

async fn send_ws(ws: &mut Ws, frames: &[Frame]) -> bool {
    for f in frames {
        let m = match f {
            Frame::Text(t) => Message::text(t.clone()),
            Frame::Binary(b) => Message::binary(b.clone()),
        };
        if ws.send(m).await.is_err() {
            return false;
        }
    }
    true
}

/// A long-polling session joined to all four namespaces: its URL.
pub(crate) async fn open_polling(http: &reqwest::Client, node: &Node, token: &str) -> String {
    let open = http
        .get(node.url("/socket.io/?EIO=4&transport=polling"))
        .send()
        .await
        .expect("open")
        .text()
        .await
        .expect("open");
    let hs: Value = serde_json::from_str(open.trim_start_matches('0')).expect("handshake");
    let base = node.url(&format!(
        "/socket.io/?EIO=4&transport=polling&sid={}",
        hs["sid"].as_str().expect("sid")
    ));
    let connects: Vec<String> = NAMESPACES
        .iter()
        .map(|(ns, _)| format!("40{ns},{}", json!({ "token": token })))
        .collect();
    http.post(&base)
        .body(connects.join("\x1e"))
        .send()
        .await
        .expect("connect");
    let mut joined = 0;
    while joined < NAMESPACES.len() {
        let body = http
            .get(&base)
            .send()
            .await
            .expect("poll")
            .text()
            .await
            .expect("poll");
        for p in body.split('\x1e') {
            if p.starts_with("40/") {
                joined += 1;
            } else if p == "2" {
                http.post(&base).body("3").send().await.expect("pong");
            }
        }
    }
    base
}

/// One case over long-polling, followed by a probe: the probe's ack, or the session's
/// end (`Err` saying how it ended).
async fn polling_case(
    http: &reqwest::Client,
    base: &str,
    case: &Case,
    probe: i64,
    o: &mut Oracle,
) -> Result<(), String> {
    let mut packets: Vec<String> = case
        .frames
        .iter()
        .map(|f| match f {
            Frame::Text(t) => t.clone(),
            Frame::Binary(b) => {
                use base64::Engine;
                format!("b{}", base64::engine::general_purpose::STANDARD.encode(b))
            }
        })
        .collect();
    packets.push(format!("42/presence,{probe}[\"presence:activity\",{{}}]"));
    o.optional
        .insert(probe, ("presence:activity".into(), "{}".into()));
    let posted = http.post(base).body(packets.join("\x1e")).send().await;
    match posted {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => return Err(format!("POST answered {}", r.status())),
        Err(e) => return Err(format!("POST failed: {e:?}")),
    }
    let deadline = Instant::now() + ANSWER_WITHIN;
    loop {
        let own = case.ack.as_ref().map(|(id, ..)| *id);
        let answered = |id: i64| !o.expected.contains_key(&id) && !o.optional.contains_key(&id);
        if answered(probe) && (!case.well_formed || own.is_none_or(answered)) {
            return Ok(());
        }
        assert!(
            Instant::now() < deadline,
            "seed {}: no answer within {ANSWER_WITHIN:?} over polling for {case:?}",
            o.seed
        );
        let got = match http.get(base).timeout(ANSWER_WITHIN).send().await {
            Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
            Ok(r) => return Err(format!("GET answered {}", r.status())),
            Err(e) => return Err(format!("GET failed (no ack, no close): {e:?}")),
        };
        for p in got.split('\x1e') {
            if p == "2" {
                let _ = http.post(base).body("3").send().await;
            } else if p == "1" {
                return Err("the node closed the session".into());
            } else if let Some(p) = p.strip_prefix('4')
                && !o.packet(p)
            {
                return Err(format!("the node left a namespace: {p}"));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_frame_gets_a_typed_answer_or_a_closed_session_and_the_node_keeps_serving() {
    watch_panics();
    let cases = env_u64("SWITCHBOARD_FUZZ_CASES").unwrap_or(DEFAULT_CASES);
    let seed = env_u64("SWITCHBOARD_FUZZ_SEED").unwrap_or_else(|| rand::rng().random());
    println!("frame fuzzing: SWITCHBOARD_FUZZ_SEED={seed} SWITCHBOARD_FUZZ_CASES={cases}");

    let mut cfg = mk_config();
    lift_limits(&mut cfg);
    cfg.limits.max_connections_per_user = 10_000;
    cfg.limits.max_payload_bytes = MAX_PAYLOAD as u64;
    let node = start(cfg).await;
    let tenant = unique("fuzzed");
    let fuzzer = token(&claims(&tenant, "fuzzer"));

    // Same user id, another tenant, on two namespaces: it must be sent nothing.
    let bystander = user(&node, &unique("bystander"), "fuzzer").await;
    let t = token(&claims(&unique("bystander"), "fuzzer"));
    let watcher = Client::connect_ns(&node, "/presence", Some(json!({ "token": t })), None)
        .await
        .expect("connect /presence");
    watcher
        .ok("presence:subscribe", json!({"user_ids": ["fuzzer", "bob"]}))
        .await;
    // Rooms and a callee for the requests to meet.
    let owner = Client::connect_ns(&node, "/chat", Some(json!({ "token": fuzzer })), None)
        .await
        .expect("connect");
    for r in ["r1", "r2"] {
        owner
            .ok("room:create", json!({"room_id": r, "visibility": "public"}))
            .await;
    }
    let bob_token = token(&claims(&tenant, "bob"));
    let _bob = Client::connect_ns(&node, "/webrtc", Some(json!({ "token": bob_token })), None)
        .await
        .expect("connect");

    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed),
        next_id: 0,
    };
    let mut o = Oracle {
        seed,
        expected: HashMap::new(),
        optional: HashMap::new(),
        stats: Stats::default(),
    };
    let mut http = reqwest::Client::new();
    let mut ws = open_ws(&node, &fuzzer).await;
    let mut polling = open_polling(&http, &node, &fuzzer).await;
    let mut batch: Vec<Frame> = Vec::new();
    let mut kinds: HashMap<&'static str, u64> = HashMap::new();

    let started = Instant::now();
    for i in 0..cases {
        if i > 0 && i % 100_000 == 0 {
            let rate = i as f64 / started.elapsed().as_secs_f64();
            println!(
                "frame fuzzing: {i} cases, {rate:.0} cases/s, {} sessions ended by the node",
                o.stats.reconnects
            );
        }
        let case = g.case();
        *kinds.entry(case.kind).or_default() += 1;
        let context = format!(
            "seed {seed} case {i} ({}): {:.300?}",
            case.kind, case.frames
        );
        if case.polling {
            if let Some((id, e, p)) = &case.ack {
                let target = if case.well_formed {
                    &mut o.expected
                } else {
                    &mut o.optional
                };
                target.insert(*id, (e.clone(), p.clone()));
            }
            let probe = g.id();
            let outcome = polling_case(&http, &polling, &case, probe, &mut o).await;
            if let Err(how) = outcome {
                let slow_closes = node.slow_consumer_closes().await;
                let slow = slow_closes > o.stats.slow_closes;
                o.stats.slow_closes = slow_closes;
                assert!(
                    !case.well_formed || slow,
                    "the polling session ended after a well-formed request ({how}): {context}"
                );
                o.stats.reconnects += 1;
                o.optional.clear();
                if let Some((id, ..)) = &case.ack {
                    o.expected.remove(id); // lost with the slow consumer's session
                }
                // A fresh connection pool: the node may have closed the pooled
                // connection (a 413 for a body past the cap) as the client reuses it.
                http = reqwest::Client::new();
                polling = open_polling(&http, &node, &fuzzer).await;
            }
            continue;
        }
        if case.well_formed {
            if let Some((id, e, p)) = &case.ack {
                o.expected.insert(*id, (e.clone(), p.clone()));
            }
            batch.extend(case.frames);
            if batch.len() >= WINDOW {
                let sent = send_ws(&mut ws, &batch).await;
                batch.clear();
                let alive =
                    sent && read_ws(&mut ws, &mut o, |o| o.expected.is_empty(), &context).await;
                assert!(
                    alive,
                    "the session ended during well-formed requests: {context}"
                );
            }
            continue;
        }
        // A malformed case: settle what is in flight, send it, then a probe.
        let sent = send_ws(&mut ws, &batch).await;
        batch.clear();
        let alive = sent && read_ws(&mut ws, &mut o, |o| o.expected.is_empty(), &context).await;
        assert!(
            alive,
            "the session ended during well-formed requests: {context}"
        );
        let probe = g.id();
        o.optional
            .insert(probe, ("presence:activity".into(), "{}".into()));
        let mut frames = case.frames;
        frames.push(Frame::Text(format!(
            "42/presence,{probe}[\"presence:activity\",{{}}]"
        )));
        let alive = send_ws(&mut ws, &frames).await
            && read_ws(
                &mut ws,
                &mut o,
                |o| !o.optional.contains_key(&probe),
                &context,
            )
            .await;
        if !alive {
            o.stats.reconnects += 1;
            o.optional.clear();
            ws = open_ws(&node, &fuzzer).await;
        }
    }
    let alive = send_ws(&mut ws, &batch).await
        && read_ws(&mut ws, &mut o, |o| o.expected.is_empty(), "the last batch").await;
    assert!(
        alive,
        "seed {seed}: the session ended during the last batch"
    );
    let took = started.elapsed();
    println!(
        "frame fuzzing: {cases} cases in {took:.1?} ({:.0} cases/s), {} acks checked, {} sessions ended by the node ({} slow consumers), {} events, {} connect errors; by kind: {kinds:?}",
        cases as f64 / took.as_secs_f64(),
        o.stats.acks,
        o.stats.reconnects,
        o.stats.slow_closes,
        o.stats.events,
        o.stats.connect_errors,
    );

    let panics = NODE_PANICS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert!(
        panics.is_empty(),
        "seed {seed}: the node panicked: {panics:#?}"
    );
    // Still serving a normal client, on both transports.
    let after = user(&node, &tenant, "after").await;
    after
        .ok(
            "room:create",
            json!({"room_id": "after-fuzz", "visibility": "public"}),
        )
        .await;
    after
        .ok(
            "message:send",
            json!({"room_id": "after-fuzz", "body": "still here"}),
        )
        .await;
    let mut ws = open_ws(&node, &fuzzer).await;
    let id = g.id();
    o.expected.insert(id, ("unread:get".into(), "{}".into()));
    assert!(
        send_ws(
            &mut ws,
            &[Frame::Text(format!("42/chat,{id}[\"unread:get\",{{}}]"))]
        )
        .await
    );
    assert!(
        read_ws(
            &mut ws,
            &mut o,
            |o| o.expected.is_empty(),
            "a normal request after fuzzing"
        )
        .await
    );
    // The other tenant's same-named user heard nothing of it.
    let heard = bystander.received(Duration::from_millis(200)).await;
    assert!(
        heard.is_empty(),
        "seed {seed}: another tenant's user got {heard:?}"
    );
    let heard = watcher.received(Duration::from_millis(200)).await;
    assert!(
        heard.is_empty(),
        "seed {seed}: another tenant's watcher got {heard:?}"
    );
}
