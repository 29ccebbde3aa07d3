//! Coordinator: for one scenario and one implementation, start the server node(s),
//! spread the connections over worker processes and source addresses, step the
//! workers through connect → run → drain → stop, watch the servers through /proc,
//! then kill everything it started.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::{Instant, sleep, timeout};

use crate::plan::{self, Report, SendPlan, WorkerMsg, WorkerSpec};
use crate::servers::{self, Env, Kind, Server};
use crate::worker::now_us;

/// One scenario, as run against each implementation.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub connections: usize,
    /// Seconds of the measured phase (held idle, or sending).
    pub duration: u64,
    pub room_size: usize,
    /// Idle only: connections stop after the Engine.IO open.
    pub transport_only: bool,
    pub nodes: usize,
    pub send: SendPlan,
    /// Seconds between the last connection and the RSS sample.
    pub settle: u64,
    /// Seconds receivers keep counting after the senders stop.
    pub drain: u64,
}

/// Knobs of the harness itself.
#[derive(Clone, Debug)]
pub struct Opts {
    /// Connections per worker process (the open-file limit is per process).
    pub per_worker: usize,
    /// Handshakes in flight per worker.
    pub concurrency: usize,
}

/// Hands out loopback source addresses 127.0.0.2, .3, … so that no two workers of one
/// invocation share one, and none meets the TIME_WAIT ports of an earlier run.
pub struct IpPool(u32);

impl IpPool {
    pub fn new() -> Self {
        IpPool(0)
    }

    pub fn take(&mut self) -> String {
        let c = self.0;
        self.0 += 1;
        format!("127.0.{}.{}", (c / 250) % 250, c % 250 + 2)
    }
}

/// What one run measured.
pub struct Outcome {
    pub planned: usize,
    pub connected: u64,
    pub failed: u64,
    /// First attempt to last completion, over all workers.
    pub connect_secs: f64,
    pub connect_hist: Histogram<u64>,
    /// Server RSS (sum over nodes) with no client, after connecting and settling, and the
    /// highest seen during the measured phase.
    pub rss_empty_kib: u64,
    pub rss_loaded_kib: u64,
    pub rss_peak_kib: u64,
    /// Server CPU (sum over nodes) in % of one core, while connecting and while measured.
    pub cpu_connect_pct: f64,
    pub cpu_run_pct: f64,
    /// The load generator's own CPU while measured (it shares the cores).
    pub loadgen_cpu_pct: f64,
    pub run_secs: f64,
    pub counts: Report,
    pub ack_hist: Histogram<u64>,
    /// Delivery latency by the receiver's node.
    pub delivery: Vec<Histogram<u64>>,
    pub errors: Vec<String>,
}

impl Outcome {
    pub fn delivery_all(&self) -> Histogram<u64> {
        let mut h = plan::histogram();
        for d in &self.delivery {
            let _ = h.add(d);
        }
        h
    }

    pub fn rss_per_conn_kib(&self) -> Option<f64> {
        (self.connected > 0).then(|| {
            (self.rss_loaded_kib as f64 - self.rss_empty_kib as f64) / self.connected as f64
        })
    }
}

struct Worker {
    child: Child,
    pid: u32,
    stdin: ChildStdin,
    out: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    async fn spawn(spec: &WorkerSpec) -> anyhow::Result<Worker> {
        let exe = std::env::current_exe().context("own executable")?;
        let mut child = Command::new(exe)
            .arg("--worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("spawn worker")?;
        let pid = child.id().context("worker pid")?;
        let mut stdin = child.stdin.take().context("worker stdin")?;
        let out = BufReader::new(child.stdout.take().context("worker stdout")?).lines();
        let mut line = serde_json::to_string(spec)?;
        line.push('\n');
        stdin.write_all(line.as_bytes()).await?;
        stdin.flush().await?;
        Ok(Worker {
            child,
            pid,
            stdin,
            out,
        })
    }

    async fn send(&mut self, cmd: &str) {
        let _ = self.stdin.write_all(format!("{cmd}\n").as_bytes()).await;
        let _ = self.stdin.flush().await;
    }

    async fn recv(&mut self) -> anyhow::Result<WorkerMsg> {
        loop {
            let line = self
                .out
                .next_line()
                .await?
                .context("worker exited without answering")?;
            match serde_json::from_str(&line) {
                Ok(m) => return Ok(m),
                Err(_) => eprintln!("[worker {}] {line}", self.pid),
            }
        }
    }

    async fn finish(mut self) {
        drop(self.stdin);
        if timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}

fn pct(ticks: u64, clk_tck: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    ticks as f64 / clk_tck as f64 / secs * 100.0
}

/// Run `sc` against `kind`: start, measure, stop. Everything started here is stopped here.
pub async fn run(
    env: &Env,
    sc: &Scenario,
    kind: Kind,
    opts: &Opts,
    ips: &mut IpPool,
) -> anyhow::Result<Outcome> {
    if let Some((addrs, pids)) = &env.external {
        eprintln!(
            "[bench] {} against external {addrs:?} (pids {pids:?})",
            sc.name
        );
        let tenant = format!("bench-{}-{}", kind.short(), now_us() % 1_000_000_000);
        return drive(
            env,
            sc,
            kind,
            opts,
            ips,
            addrs.clone(),
            pids,
            &mut [],
            &tenant,
        )
        .await;
    }
    let mut nodes: Vec<Server> = Vec::new();
    for n in 0..sc.nodes {
        match Server::start(env, kind, n, sc.nodes).await {
            Ok(s) => nodes.push(s),
            Err(e) => {
                for s in &mut nodes {
                    s.kill().await;
                }
                return Err(e);
            }
        }
    }
    let pids: Vec<u32> = nodes.iter().map(|s| s.pid).collect();
    eprintln!(
        "[bench] {} {}: {} node(s) pid {:?} on {:?}",
        sc.name,
        kind.short(),
        nodes.len(),
        pids,
        nodes.iter().map(|s| s.addr.as_str()).collect::<Vec<_>>()
    );
    let targets: Vec<String> = nodes.iter().map(|s| s.addr.clone()).collect();
    let tenant = format!("bench-{}-{}", kind.short(), now_us() % 1_000_000_000);
    let result = drive(
        env, sc, kind, opts, ips, targets, &pids, &mut nodes, &tenant,
    )
    .await;
    for s in &mut nodes {
        s.kill().await;
    }
    // What the nodes kept in Redis under this run's tenant (Switchboard's `sb:{tenant}:…`,
    // the peer's `bench:peer:{tenant}:…`) goes with the run.
    if sc.nodes > 1
        && let Some(url) = &env.redis_url
    {
        match servers::redis_forget(url, &format!("*{tenant}*")).await {
            Ok(n) => eprintln!("[bench]   removed {n} Redis keys of tenant {tenant}"),
            Err(e) => eprintln!("[bench]   could not clean Redis keys of {tenant}: {e:#}"),
        }
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    env: &Env,
    sc: &Scenario,
    kind: Kind,
    opts: &Opts,
    ips: &mut IpPool,
    targets: Vec<String>,
    pids: &[u32],
    nodes: &mut [Server],
    tenant: &str,
) -> anyhow::Result<Outcome> {
    sleep(Duration::from_secs(1)).await;
    let empty = servers::sample_all(pids);
    let per = opts.per_worker.max(1);
    let n_workers = sc.connections.div_ceil(per).max(1);
    // Connect budget: generous, but bounded.
    let connect_budget = Duration::from_secs(120 + (sc.connections / 50) as u64);
    let deadline_secs = connect_budget.as_secs() + sc.settle + sc.duration + sc.drain + 60;
    let mut workers = Vec::new();
    let cpu0 = servers::sample_all(pids);
    let t_connect = Instant::now();
    for w in 0..n_workers {
        let first = w * per;
        let count = per.min(sc.connections - first);
        let spec = WorkerSpec {
            targets: targets.clone(),
            source_ip: ips.take(),
            secret: env.secret.clone(),
            tenant: tenant.to_owned(),
            first,
            count,
            total: sc.connections,
            room_size: sc.room_size,
            room_prefix: "r".into(),
            transport_only: sc.transport_only,
            send: sc.send.clone(),
            concurrency: opts.concurrency,
            deadline_secs,
        };
        workers.push(Worker::spawn(&spec).await?);
    }
    let mut out = Outcome {
        planned: sc.connections,
        connected: 0,
        failed: 0,
        connect_secs: 0.0,
        connect_hist: plan::histogram(),
        rss_empty_kib: empty.rss_kib,
        rss_loaded_kib: 0,
        rss_peak_kib: 0,
        cpu_connect_pct: 0.0,
        cpu_run_pct: 0.0,
        loadgen_cpu_pct: 0.0,
        run_secs: 0.0,
        counts: Report::default(),
        ack_hist: plan::histogram(),
        delivery: targets.iter().map(|_| plan::histogram()).collect(),
        errors: Vec::new(),
    };
    let result = async {
        let (mut start, mut end) = (u64::MAX, 0u64);
        for w in &mut workers {
            let msg = timeout(connect_budget, w.recv()).await.map_err(|_| {
                anyhow::anyhow!("workers still connecting after {connect_budget:?}")
            })??;
            let WorkerMsg::Ready(r) = msg else {
                bail!("worker answered out of turn");
            };
            out.connected += r.connected;
            out.failed += r.failed;
            start = start.min(r.start_us);
            end = end.max(r.end_us);
            plan::merge(&mut out.connect_hist, &r.connect_hist);
            add_errors(&mut out.errors, r.errors);
        }
        let connect_wall = t_connect.elapsed().as_secs_f64();
        out.connect_secs = end.saturating_sub(start) as f64 / 1e6;
        out.cpu_connect_pct = pct(
            servers::sample_all(pids).cpu_ticks - cpu0.cpu_ticks,
            env.clk_tck,
            connect_wall,
        );
        eprintln!(
            "[bench]   connected {} / {} in {:.1}s ({} failed)",
            out.connected, sc.connections, out.connect_secs, out.failed
        );
        sleep(Duration::from_secs(sc.settle)).await;
        out.rss_loaded_kib = servers::sample_all(pids).rss_kib;
        let wpids: Vec<u32> = workers.iter().map(|w| w.pid).collect();
        let (s0, w0, t0) = (
            servers::sample_all(pids),
            servers::sample_all(&wpids),
            Instant::now(),
        );
        for w in &mut workers {
            w.send(plan::CMD_RUN).await;
        }
        let until = t0 + Duration::from_secs(sc.duration);
        let mut peak = s0.rss_kib;
        while Instant::now() < until {
            sleep(Duration::from_millis(500).min(until - Instant::now())).await;
            peak = peak.max(servers::sample_all(pids).rss_kib);
            for s in nodes.iter_mut() {
                if !s.alive() {
                    bail!(
                        "{} node {} died during the run:\n{}",
                        kind.label(),
                        s.addr,
                        s.log_tail()
                    );
                }
            }
        }
        let (s1, w1) = (servers::sample_all(pids), servers::sample_all(&wpids));
        out.run_secs = t0.elapsed().as_secs_f64();
        out.rss_peak_kib = peak.max(s1.rss_kib);
        out.cpu_run_pct = pct(s1.cpu_ticks - s0.cpu_ticks, env.clk_tck, out.run_secs);
        out.loadgen_cpu_pct = pct(
            w1.cpu_ticks.saturating_sub(w0.cpu_ticks),
            env.clk_tck,
            out.run_secs,
        );
        if sc.drain > 0 {
            for w in &mut workers {
                w.send(plan::CMD_DRAIN).await;
            }
            sleep(Duration::from_secs(sc.drain)).await;
        }
        for w in &mut workers {
            w.send(plan::CMD_STOP).await;
        }
        for w in &mut workers {
            let msg = timeout(Duration::from_secs(30), w.recv())
                .await
                .map_err(|_| anyhow::anyhow!("worker did not report within 30 s of stop"))??;
            let WorkerMsg::Report(r) = msg else {
                bail!("worker answered out of turn");
            };
            let c = &mut out.counts;
            c.sent += r.sent;
            c.acks_ok += r.acks_ok;
            c.acks_err += r.acks_err;
            c.acks_missing += r.acks_missing;
            c.delivered_run += r.delivered_run;
            c.delivered_total += r.delivered_total;
            c.self_delivered += r.self_delivered;
            c.expected += r.expected;
            c.dropped += r.dropped;
            plan::merge(&mut out.ack_hist, &r.ack_hist);
            for (i, d) in r.delivery_hist.iter().enumerate() {
                if let Some(h) = out.delivery.get_mut(i) {
                    plan::merge(h, d);
                }
            }
            add_errors(&mut out.errors, r.errors);
        }
        Ok(())
    }
    .await;
    for w in workers {
        w.finish().await;
    }
    result.map(|()| out)
}

fn add_errors(into: &mut Vec<String>, more: Vec<String>) {
    for e in more {
        if into.len() < 8 && !into.contains(&e) {
            into.push(e);
        }
    }
}
