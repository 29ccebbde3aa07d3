//! The `sync` scenario: how long `sync:get` takes a user in many rooms to catch up after
//! being away, on the embedded (memory) stores and on Redis, and how many Redis round
//! trips one call makes. Switchboard only (the Node peer has no `sync:get`).
//!
//! ```text
//!  reader ── creates R rooms (writer in each) ── sync:get to the end: cursor C
//!  writer ── one message in each of N rooms (N = 0, 10, 100, R) ─────────────────┐
//!  reader ── catch up from C in pages of `limit`, `repeat` times: time per call ◀┘
//!            (calls change nothing, so every repeat does the same work)
//!  MONITOR ─ one more call per N (Redis only): the commands that mention the run's
//!            tenant and come from a client, not from inside a script = round trips
//! ```

use std::time::Duration;

use anyhow::{Context, bail};
use futures::SinkExt;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;

use crate::proto::{self, Packet};
use crate::report::{group, ms};
use crate::servers::{Env, Kind, Resp, Server};
use crate::worker::{NS, Ws, next_text, now_us, request};

/// What one `sync` run measures.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Rooms the reader is in.
    pub rooms: usize,
    /// Rooms changed while away, one measurement each.
    pub changed: Vec<usize>,
    /// `sync:get` page size.
    pub limit: usize,
    /// Catch-ups timed per measurement.
    pub repeat: usize,
}

/// One measurement: N rooms changed since the cursor.
struct Row {
    backend: &'static str,
    changed: usize,
    pages: usize,
    per_call: Histogram<u64>,
    catch_up: Histogram<u64>,
    round_trips: Option<usize>,
}

/// A sequential /chat client: one request at a time, events ignored.
struct Client {
    ws: Ws,
    next_id: u64,
}

impl Client {
    async fn open(addr: &str, env: &Env, tenant: &str, user: &str) -> anyhow::Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await?;
        let token = token(env, tenant, user)?;
        timeout(Duration::from_secs(10), async {
            loop {
                let t = next_text(&mut ws).await.map_err(anyhow::Error::msg)?;
                match proto::parse(&t, NS) {
                    Packet::Open => ws.send(Message::text(proto::connect(NS, &token))).await?,
                    Packet::Connected => return Ok(()),
                    Packet::ConnectError(e) => bail!("connect refused: {e}"),
                    _ => {}
                }
            }
        })
        .await
        .context("no /chat connect within 10 s")??;
        Ok(Client { ws, next_id: 1 })
    }

    /// The ack's `data`, or an error with the ack's code.
    async fn ok(&mut self, event: &str, data: Value) -> anyhow::Result<Value> {
        self.next_id += 1;
        let args = request(&mut self.ws, self.next_id, event, &data.to_string())
            .await
            .map_err(anyhow::Error::msg)?;
        let mut ack: Value = serde_json::from_str(&args)?;
        if ack[0]["ok"] != true {
            bail!("{event} {data}: {}", ack[0]["error"]);
        }
        Ok(ack[0]["data"].take())
    }

    /// Every page from `cursor` on: (pages, last cursor, rooms listed, each call's µs).
    async fn catch_up(
        &mut self,
        cursor: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<(usize, String, usize, Vec<u64>)> {
        let mut cursor = cursor.map(str::to_owned);
        let (mut pages, mut rooms, mut calls) = (0, 0, Vec::new());
        loop {
            let mut req = json!({ "limit": limit });
            if let Some(c) = &cursor {
                req["cursor"] = json!(c);
            }
            let t = Instant::now();
            let page = self.ok("sync:get", req).await?;
            calls.push(t.elapsed().as_micros() as u64);
            pages += 1;
            rooms += page["rooms"].as_array().map_or(0, Vec::len);
            cursor = page["cursor"].as_str().map(str::to_owned);
            if page["more"] != true {
                return Ok((pages, cursor.unwrap_or_default(), rooms, calls));
            }
        }
    }
}

fn token(env: &Env, tenant: &str, user: &str) -> anyhow::Result<String> {
    let now = now_us() / 1_000_000;
    let claims = json!({ "sub": user, "tenant": tenant, "iat": now, "exp": now + 3600 });
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(env.secret.as_bytes()),
    )?)
}

fn hist() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

/// Run the plan on memory and, when Redis answers, on Redis; print and return the table.
pub async fn run(env: &Env, plan: &Plan) -> anyhow::Result<String> {
    let mut rows = Vec::new();
    let backends: Vec<(&'static str, Option<String>)> = std::iter::once(("memory", None))
        .chain(env.redis_url.clone().map(|u| ("redis", Some(u))))
        .collect();
    for (backend, redis) in backends {
        let mut server = Server::launch(env, Kind::Switchboard, 0, redis.clone()).await?;
        let tenant = format!("bench-sync-{}-{backend}", std::process::id());
        let r = measure(env, plan, &server.addr, &tenant, backend, redis.as_deref()).await;
        server.kill().await;
        if let Some(url) = &redis {
            match crate::servers::redis_forget(url, &format!("*{tenant}*")).await {
                Ok(n) => eprintln!("[bench] sync: removed {n} keys of {tenant}"),
                Err(e) => eprintln!("[bench] sync: cleaning {tenant}: {e:#}"),
            }
        }
        rows.extend(r?);
    }
    Ok(render(plan, &rows))
}

async fn measure(
    env: &Env,
    plan: &Plan,
    addr: &str,
    tenant: &str,
    backend: &'static str,
    redis: Option<&str>,
) -> anyhow::Result<Vec<Row>> {
    let mut reader = Client::open(addr, env, tenant, "reader").await?;
    let mut writer = Client::open(addr, env, tenant, "writer").await?;
    let t = Instant::now();
    for i in 0..plan.rooms {
        reader
            .ok(
                "room:create",
                json!({ "room_id": format!("r{i:04}"), "visibility": "private", "members": ["writer"] }),
            )
            .await?;
    }
    eprintln!(
        "[bench] sync {backend}: {} rooms created in {:.1} s",
        plan.rooms,
        t.elapsed().as_secs_f64()
    );
    let (_, mut cursor, listed, _) = reader.catch_up(None, plan.limit).await?;
    if listed != plan.rooms {
        bail!("the first sync listed {listed} rooms, not {}", plan.rooms);
    }
    let mut rows = Vec::new();
    for &n in &plan.changed {
        for i in 0..n.min(plan.rooms) {
            writer
                .ok(
                    "message:send",
                    json!({ "room_id": format!("r{i:04}"), "body": format!("while you were away {i}") }),
                )
                .await?;
        }
        let (mut per_call, mut catch_up) = (hist()?, hist()?);
        let mut pages = 0;
        let mut next = cursor.clone();
        for _ in 0..plan.repeat {
            let t = Instant::now();
            let (p, c, listed, calls) = reader.catch_up(Some(&cursor), plan.limit).await?;
            catch_up.record(t.elapsed().as_micros() as u64)?;
            for us in calls {
                per_call.record(us)?;
            }
            if listed != n.min(plan.rooms) {
                bail!("{n} rooms changed, sync listed {listed}");
            }
            (pages, next) = (p, c);
        }
        let round_trips = match redis {
            Some(url) => {
                Some(count_round_trips(url, tenant, &mut reader, &cursor, plan.limit).await?)
            }
            None => None,
        };
        rows.push(Row {
            backend,
            changed: n,
            pages,
            per_call,
            catch_up,
            round_trips,
        });
        cursor = next;
    }
    Ok(rows)
}

/// Redis commands of one `sync:get` call (the first page from `cursor`) that mention the
/// tenant and are sent by a client (not run inside a script), seen through MONITOR.
async fn count_round_trips(
    url: &str,
    tenant: &str,
    reader: &mut Client,
    cursor: &str,
    limit: usize,
) -> anyhow::Result<usize> {
    let mut monitor = Resp::connect(url).await?;
    monitor.call(&["MONITOR"]).await?;
    reader
        .ok("sync:get", json!({ "cursor": cursor, "limit": limit }))
        .await?;
    let marker = format!("bench-sync-marker-{tenant}");
    Resp::connect(url).await?.call(&["ECHO", &marker]).await?;
    let tag = format!("{{{tenant}}}");
    let mut n = 0;
    timeout(Duration::from_secs(10), async {
        loop {
            let line = monitor.line().await?;
            if line.contains(&marker) {
                return anyhow::Ok(());
            }
            if line.contains(&tag) && !line.contains(" lua]") {
                n += 1;
            }
        }
    })
    .await
    .context("MONITOR: the marker did not come within 10 s")??;
    Ok(n)
}

fn render(plan: &Plan, rows: &[Row]) -> String {
    let mut out = format!(
        "### sync: a user in {} rooms catches up on N changed rooms, pages of {} ({} catch-ups each)\n\n",
        plan.rooms, plan.limit, plan.repeat
    );
    out.push_str("| stores | rooms changed | pages | per call p50 | per call p99 | catch-up p50 | catch-up p99 | Redis round trips per call |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    let f = |v: Option<f64>| v.map_or_else(|| "–".into(), |v| format!("{} ms", group(v, 2)));
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.backend,
            r.changed,
            r.pages,
            f(ms(&r.per_call, 0.5)),
            f(ms(&r.per_call, 0.99)),
            f(ms(&r.catch_up, 0.5)),
            f(ms(&r.catch_up, 0.99)),
            r.round_trips.map_or_else(|| "–".into(), |n| n.to_string()),
        ));
    }
    out
}
