//! Worker mode: hold a share of a scenario's connections, one tokio task each.
//!
//! Reads a [`WorkerSpec`] line on stdin, opens its connections (bounded handshakes in
//! flight), prints [`WorkerMsg::Ready`], then follows the commands `run` (senders start),
//! `drain` (senders stop, receivers keep counting) and `stop` (close everything and
//! print [`WorkerMsg::Report`]). End of stdin counts as `stop`, and so does the spec's
//! deadline: a worker never outlives its coordinator for long.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use jsonwebtoken::{EncodingKey, Header};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::plan::{self, Ready, Report, WorkerMsg, WorkerSpec};
use crate::proto::{self, Packet};

/// The namespace under test.
pub const NS: &str = "/chat";
/// A connection attempt (TCP, WebSocket, Socket.IO connect, room join) gives up after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// One request during set-up (room join or create) gives up after this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// How long tasks get to wind down after `stop`.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Latency histograms are sharded so that tasks on different threads rarely meet.
const SHARDS: usize = 8;
/// A sender that fell this far behind its schedule skips ahead instead of bursting.
const MAX_LAG: Duration = Duration::from_secs(1);

pub type Ws = WebSocketStream<TcpStream>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Connect,
    Run,
    Drain,
    Stop,
}

#[derive(Default)]
struct Counters {
    connected: AtomicU64,
    failed: AtomicU64,
    last_done_us: AtomicU64,
    sent: AtomicU64,
    acks_ok: AtomicU64,
    acks_err: AtomicU64,
    acks_missing: AtomicU64,
    delivered_run: AtomicU64,
    delivered_total: AtomicU64,
    self_delivered: AtomicU64,
    expected: AtomicU64,
    dropped: AtomicU64,
}

struct Shards(Vec<Mutex<Histogram<u64>>>);

impl Shards {
    fn new() -> Self {
        Self((0..SHARDS).map(|_| Mutex::new(plan::histogram())).collect())
    }

    fn record(&self, shard: usize, v: u64) {
        if let Ok(mut h) = self.0[shard % SHARDS].lock() {
            h.saturating_record(v.max(1));
        }
    }

    fn dump(&self) -> plan::HistDump {
        let mut all = plan::histogram();
        for s in &self.0 {
            if let Ok(h) = s.lock() {
                let _ = all.add(&*h);
            }
        }
        plan::dump(&all)
    }
}

struct Ctx {
    spec: WorkerSpec,
    source_ip: IpAddr,
    key: EncodingKey,
    phase: watch::Sender<Phase>,
    handshakes: Semaphore,
    c: Counters,
    connect_hist: Shards,
    ack_hist: Shards,
    delivery_hist: Vec<Shards>,
    errors: Mutex<Vec<String>>,
    ws_config: WebSocketConfig,
}

impl Ctx {
    /// Keep a few distinct error texts (digits folded so that ids do not make them distinct).
    fn note(&self, e: String) {
        if let Ok(mut v) = self.errors.lock() {
            let shape: String = e.chars().filter(|c| !c.is_ascii_digit()).collect();
            if v.len() < 8
                && !v.iter().any(|x| {
                    x.chars()
                        .filter(|c| !c.is_ascii_digit())
                        .collect::<String>()
                        == shape
                })
            {
                v.push(e);
            }
        }
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn token(&self, idx: usize) -> Result<String, String> {
        #[derive(serde::Serialize)]
        struct Claims<'a> {
            sub: String,
            tenant: &'a str,
            name: String,
            iat: u64,
            exp: u64,
        }
        let now = now_us() / 1_000_000;
        let claims = Claims {
            sub: format!("u{idx}"),
            tenant: &self.spec.tenant,
            name: format!("User {idx}"),
            iat: now,
            exp: now + 4 * 3600,
        };
        jsonwebtoken::encode(&Header::default(), &claims, &self.key).map_err(|e| e.to_string())
    }
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn emit_line(msg: &WorkerMsg) {
    use std::io::Write;
    let line = serde_json::to_string(msg).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Entry point of `switchboard-bench --worker`.
pub async fn main() -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let first = lines
        .next_line()
        .await?
        .context("worker: no spec on stdin")?;
    let spec: WorkerSpec = serde_json::from_str(&first).context("worker: bad spec")?;
    let (phase, _) = watch::channel(Phase::Connect);
    let ctx = Arc::new(Ctx {
        source_ip: spec.source_ip.parse().context("worker: source_ip")?,
        key: EncodingKey::from_secret(spec.secret.as_bytes()),
        phase,
        handshakes: Semaphore::new(spec.concurrency.max(1)),
        c: Counters::default(),
        connect_hist: Shards::new(),
        ack_hist: Shards::new(),
        delivery_hist: spec.targets.iter().map(|_| Shards::new()).collect(),
        errors: Mutex::new(Vec::new()),
        ws_config: WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0),
        spec,
    });

    // Commands; the end of stdin (the coordinator went away) stops everything.
    let cmds = ctx.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let next = match line.trim() {
                plan::CMD_RUN => Phase::Run,
                plan::CMD_DRAIN => Phase::Drain,
                plan::CMD_STOP => Phase::Stop,
                _ => continue,
            };
            cmds.phase.send_if_modified(|p| {
                let moved = next > *p;
                if moved {
                    *p = next;
                }
                moved
            });
            if next == Phase::Stop {
                return;
            }
        }
        cmds.phase.send_replace(Phase::Stop);
    });
    // The deadline: stop, then leave however things stand.
    let dl = ctx.clone();
    tokio::spawn(async move {
        sleep(Duration::from_secs(dl.spec.deadline_secs)).await;
        eprintln!("worker: deadline reached, stopping");
        dl.phase.send_replace(Phase::Stop);
        sleep(STOP_GRACE * 2).await;
        std::process::exit(2);
    });

    let start_us = now_us();
    let mut tasks = JoinSet::new();
    for idx in ctx.spec.first..ctx.spec.first + ctx.spec.count {
        tasks.spawn(connection(ctx.clone(), idx));
    }
    let total = ctx.spec.count as u64;
    let mut phase = ctx.phase.subscribe();
    while ctx.c.connected.load(Relaxed) + ctx.c.failed.load(Relaxed) < total
        && *phase.borrow() != Phase::Stop
    {
        sleep(Duration::from_millis(20)).await;
    }
    emit_line(&WorkerMsg::Ready(Ready {
        connected: ctx.c.connected.load(Relaxed),
        failed: ctx.c.failed.load(Relaxed),
        start_us,
        end_us: ctx.c.last_done_us.load(Relaxed).max(start_us),
        errors: ctx.errors(),
        connect_hist: ctx.connect_hist.dump(),
    }));

    while *phase.borrow_and_update() != Phase::Stop {
        if phase.changed().await.is_err() {
            break;
        }
    }
    let _ = timeout(STOP_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    let c = &ctx.c;
    emit_line(&WorkerMsg::Report(Report {
        sent: c.sent.load(Relaxed),
        acks_ok: c.acks_ok.load(Relaxed),
        acks_err: c.acks_err.load(Relaxed),
        acks_missing: c.acks_missing.load(Relaxed),
        delivered_run: c.delivered_run.load(Relaxed),
        delivered_total: c.delivered_total.load(Relaxed),
        self_delivered: c.self_delivered.load(Relaxed),
        expected: c.expected.load(Relaxed),
        dropped: c.dropped.load(Relaxed),
        ack_hist: ctx.ack_hist.dump(),
        delivery_hist: ctx.delivery_hist.iter().map(Shards::dump).collect(),
        errors: ctx.errors(),
    }));
    Ok(())
}

/// One connection, from the TCP connect to `stop`.
async fn connection(ctx: Arc<Ctx>, idx: usize) {
    let established = {
        let Ok(_permit) = ctx.handshakes.acquire().await else {
            return;
        };
        if *ctx.phase.borrow() == Phase::Stop {
            return;
        }
        let t0 = Instant::now();
        let r = timeout(CONNECT_TIMEOUT, establish(&ctx, idx)).await;
        (r, t0.elapsed())
    };
    let (ws, next_id) = match established {
        (Ok(Ok(ok)), took) => {
            ctx.connect_hist.record(idx, took.as_micros() as u64);
            ctx.c.last_done_us.fetch_max(now_us(), Relaxed);
            ctx.c.connected.fetch_add(1, Relaxed);
            ok
        }
        (Ok(Err(e)), _) => {
            ctx.note(e);
            ctx.c.last_done_us.fetch_max(now_us(), Relaxed);
            ctx.c.failed.fetch_add(1, Relaxed);
            return;
        }
        (Err(_), _) => {
            ctx.note(format!("connect timed out after {CONNECT_TIMEOUT:?}"));
            ctx.c.last_done_us.fetch_max(now_us(), Relaxed);
            ctx.c.failed.fetch_add(1, Relaxed);
            return;
        }
    };
    live(&ctx, idx, ws, next_id).await;
}

/// The next text frame that is not a ping (pings are answered here).
pub async fn next_text(ws: &mut Ws) -> Result<String, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                if proto::parse(t.as_str(), NS) == Packet::Ping {
                    ws.send(Message::text(proto::PONG))
                        .await
                        .map_err(|e| format!("send pong: {e}"))?;
                } else {
                    return Ok(t.as_str().to_owned());
                }
            }
            Some(Ok(Message::Close(_))) | None => return Err("closed by the server".into()),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("websocket: {e}")),
        }
    }
}

/// Send a request and wait for its ack; returns the ack's argument array.
pub async fn request(ws: &mut Ws, id: u64, event: &str, data: &str) -> Result<String, String> {
    ws.send(Message::text(proto::emit(NS, id, event, data)))
        .await
        .map_err(|e| format!("send {event}: {e}"))?;
    timeout(REQUEST_TIMEOUT, async {
        loop {
            let t = next_text(ws).await?;
            match proto::parse(&t, NS) {
                Packet::Ack { id: got, args } if got == id => return Ok(args.to_owned()),
                Packet::Disconnect | Packet::Close => {
                    return Err(format!("disconnected while waiting for {event}"));
                }
                _ => {}
            }
        }
    })
    .await
    .map_err(|_| format!("no ack to {event} within {REQUEST_TIMEOUT:?}"))?
}

/// TCP from this worker's source address, WebSocket, Engine.IO open, Socket.IO connect to
/// /chat with a fresh token, then the room (join; create when it does not exist yet).
/// Returns the socket and the next free ack id.
async fn establish(ctx: &Ctx, idx: usize) -> Result<(Ws, u64), String> {
    let target = &ctx.spec.targets[ctx.spec.target_of(idx)];
    let addr: SocketAddr = target
        .parse()
        .map_err(|e| format!("target {target}: {e}"))?;
    let sock = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    sock.bind(SocketAddr::new(ctx.source_ip, 0))
        .map_err(|e| format!("bind {}: {e}", ctx.source_ip))?;
    let stream = sock
        .connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let url = format!("ws://{target}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(ctx.ws_config))
        .await
        .map_err(|e| format!("websocket handshake: {e}"))?;
    loop {
        let t = next_text(&mut ws).await?;
        if proto::parse(&t, NS) == Packet::Open {
            break;
        }
    }
    if ctx.spec.transport_only {
        return Ok((ws, 1));
    }
    let token = ctx.token(idx)?;
    ws.send(Message::text(proto::connect(NS, &token)))
        .await
        .map_err(|e| format!("send connect: {e}"))?;
    loop {
        let t = next_text(&mut ws).await?;
        match proto::parse(&t, NS) {
            Packet::Connected => break,
            Packet::ConnectError(e) => return Err(format!("connect refused: {e}")),
            _ => {}
        }
    }
    let mut id = 1;
    if let Some(room) = ctx.spec.room_of(idx) {
        let room_id = format!("{}{room}", ctx.spec.room_prefix);
        let join = serde_json::json!({ "room_id": room_id }).to_string();
        let create = serde_json::json!({ "room_id": room_id, "visibility": "public" }).to_string();
        let mut joined = false;
        // join; not_found → create (which joins); conflict (another member created it
        // meanwhile) → join again.
        for _ in 0..3 {
            let args = request(&mut ws, id, "room:join", &join).await?;
            id += 1;
            if proto::ack_ok(&args) {
                joined = true;
                break;
            }
            if proto::ack_code(&args) != Some("not_found") {
                return Err(format!("room:join refused: {args}"));
            }
            let args = request(&mut ws, id, "room:create", &create).await?;
            id += 1;
            if proto::ack_ok(&args) {
                joined = true;
                break;
            }
            if proto::ack_code(&args) != Some("conflict") {
                return Err(format!("room:create refused: {args}"));
            }
        }
        if !joined {
            return Err(format!("could not join room {room_id}"));
        }
    }
    Ok((ws, id))
}

/// The connection's life after set-up: answer pings, count deliveries, send when told.
async fn live(ctx: &Ctx, idx: usize, mut ws: Ws, mut next_id: u64) {
    let spec = &ctx.spec;
    let rate = spec.rate_of(idx);
    let period = (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate));
    let others = spec.room_members(idx).saturating_sub(1) as u64;
    let room_id = spec
        .room_of(idx)
        .map(|r| format!("{}{r}", spec.room_prefix))
        .unwrap_or_default();
    let node = spec.target_of(idx);
    let mut phase_rx = ctx.phase.subscribe();
    let mut next_send: Option<Instant> = None;
    let mut pending: VecDeque<(u64, Instant)> = VecDeque::new();
    loop {
        let phase = *phase_rx.borrow_and_update();
        if phase == Phase::Stop {
            break;
        }
        if phase == Phase::Run
            && next_send.is_none()
            && let Some(p) = period
        {
            // Spread first sends over one period (golden-ratio sequence over indices).
            let frac = (idx as f64 * 0.618_033_988_75).fract();
            next_send = Some(Instant::now() + p.mul_f64(frac));
        }
        let send_at = next_send.filter(|_| phase == Phase::Run);
        tokio::select! {
            changed = phase_rx.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            m = ws.next() => {
                let text = match m {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        ctx.c.dropped.fetch_add(1, Relaxed);
                        ctx.note(format!("connection lost during the {phase:?} phase"));
                        break;
                    }
                    Some(Ok(_)) => continue,
                };
                match proto::parse(text.as_str(), NS) {
                    Packet::Ping => {
                        let pong = ws.send(Message::text(proto::PONG)).await;
                        if pong.is_err() {
                            ctx.c.dropped.fetch_add(1, Relaxed);
                            break;
                        }
                    }
                    Packet::Event(args) if proto::event_name(args) == Some("message:new") => {
                        match proto::body_stamp(args) {
                            Some((_, from)) if from == idx => {
                                ctx.c.self_delivered.fetch_add(1, Relaxed);
                            }
                            Some((sent_us, _)) => {
                                ctx.delivery_hist[node].record(idx, now_us().saturating_sub(sent_us));
                                ctx.c.delivered_total.fetch_add(1, Relaxed);
                                if phase == Phase::Run {
                                    ctx.c.delivered_run.fetch_add(1, Relaxed);
                                }
                            }
                            None => ctx.note(format!("message:new without a stamp: {:.200}", args)),
                        }
                    }
                    Packet::Ack { id, args } => {
                        if let Some(pos) = pending.iter().position(|(i, _)| *i == id)
                            && let Some((_, at)) = pending.remove(pos)
                        {
                            ctx.ack_hist.record(idx, at.elapsed().as_micros() as u64);
                            if proto::ack_ok(args) {
                                ctx.c.acks_ok.fetch_add(1, Relaxed);
                            } else {
                                ctx.c.acks_err.fetch_add(1, Relaxed);
                                ctx.note(format!("message:send refused: {:.200}", args));
                            }
                        }
                    }
                    Packet::Disconnect | Packet::Close => {
                        ctx.c.dropped.fetch_add(1, Relaxed);
                        ctx.note(format!("disconnected by the server during the {phase:?} phase"));
                        break;
                    }
                    _ => {}
                }
            }
            _ = sleep_until(send_at.unwrap_or_else(Instant::now)), if send_at.is_some() => {
                let (Some(at), Some(p)) = (send_at, period) else { continue };
                let id = next_id;
                next_id += 1;
                let body = proto::stamp(now_us(), idx);
                let data = format!(r#"{{"room_id":"{room_id}","body":"{body}"}}"#);
                if ws.send(Message::text(proto::emit(NS, id, "message:send", &data))).await.is_err() {
                    ctx.c.dropped.fetch_add(1, Relaxed);
                    break;
                }
                pending.push_back((id, Instant::now()));
                ctx.c.sent.fetch_add(1, Relaxed);
                ctx.c.expected.fetch_add(others, Relaxed);
                let now = Instant::now();
                let next = at + p;
                next_send = Some(if next + MAX_LAG < now { now + p } else { next });
            }
        }
    }
    ctx.c.acks_missing.fetch_add(pending.len() as u64, Relaxed);
}
