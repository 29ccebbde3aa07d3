//! `switchboard-bench`: Switchboard against a Node.js socket.io 4.8 peer on the /chat
//! subset (auth, room:join, message:send with ack, message:new), from one run on one
//! machine; and `sync`, Switchboard's `sync:get` catch-up on memory and Redis
//! ([`catchup`]). See tests/bench/README.md.
//!
//! ```text
//!  coordinator ──spawn──▶ server node(s) (child processes, free ports, /proc sampled)
//!       │ stdin/stdout JSON lines
//!       └──spawn──▶ worker 0..W (`--worker`, ≤ per-worker connections, own 127.0.0.x)
//!                      └─ one tokio task per Socket.IO connection over raw WebSocket
//! ```

mod catchup;
mod coord;
mod plan;
mod proto;
mod report;
mod servers;
mod worker;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;

use coord::{IpPool, Opts, Outcome, Scenario};
use plan::SendPlan;
use report::{Table, ms};
use servers::{Env, Kind};

#[derive(Parser, Debug)]
#[command(
    name = "switchboard-bench",
    about = "Load generator: Switchboard vs a Node.js socket.io 4.8 peer on /chat"
)]
struct Cli {
    /// idle | fanout | cross-node | rooms | all | sync
    scenario: Option<String>,
    /// Connections (idle 10000, fanout 10000, cross-node 10000, rooms 20000).
    #[arg(long)]
    connections: Option<usize>,
    /// Seconds of the measured phase (idle 10, others 20; --quick 10 / 5 for idle).
    #[arg(long)]
    duration: Option<u64>,
    /// Messages a second: of the one sender (fanout, cross-node: 20), of each user (rooms: 0.5).
    #[arg(long)]
    rate: Option<f64>,
    /// Members per room in `idle` and `rooms`.
    #[arg(long, default_value_t = 10)]
    room_size: usize,
    /// How far each `idle` connection goes: `transport` (Engine.IO open only),
    /// `connect` (/chat connected, no room) or `join` (and in a room).
    #[arg(long, default_value = "join", value_parser = ["transport", "connect", "join"])]
    stage: String,
    /// Server nodes for `idle` (more than one needs Redis; connections alternate between
    /// them). One process may hold ~19,900 sockets here, so this is how `idle` goes past.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Small variant of every scenario: 1000 connections, 10 s each, cross-node only if
    /// Redis answers. Prints figures, asserts nothing.
    #[arg(long)]
    quick: bool,
    /// Implementations to run, in column order.
    #[arg(long, default_value = "switchboard,node", value_delimiter = ',')]
    servers: Vec<String>,
    /// The switchboard binary (default: next to this one, else target/release, target/debug).
    #[arg(long)]
    switchboard_bin: Option<PathBuf>,
    /// The Node peer's directory (default tests/bench/peers/node).
    #[arg(long)]
    node_peer_dir: Option<PathBuf>,
    /// Redis for the two-node runs (default $SWITCHBOARD_TEST_REDIS_URL, else tests/.state/env).
    #[arg(long)]
    redis_url: Option<String>,
    /// Connections per worker process (each process may open 20,000 files).
    #[arg(long, default_value_t = 15_000)]
    per_worker: usize,
    /// Handshakes in flight per worker.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Drive servers started by hand (e.g. under a profiler) instead of starting them:
    /// their addresses; use with one `--servers` entry and `--secret`.
    #[arg(long, value_delimiter = ',')]
    external: Vec<String>,
    /// PIDs of the `--external` servers, for RSS and CPU.
    #[arg(long, value_delimiter = ',')]
    external_pid: Vec<u32>,
    /// JWT secret (default: a fresh one per invocation).
    #[arg(long)]
    secret: Option<String>,
    /// Also append the tables to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// `sync`: rooms the user is in.
    #[arg(long, default_value_t = 500)]
    sync_rooms: usize,
    /// `sync`: rooms changed while away, one measurement each.
    #[arg(long, default_value = "0,10,100,500", value_delimiter = ',')]
    sync_changed: Vec<usize>,
    /// `sync`: `sync:get` page size (1-100).
    #[arg(long, default_value_t = 100)]
    sync_limit: usize,
    /// `sync`: catch-ups timed per measurement.
    #[arg(long, default_value_t = 20)]
    sync_repeat: usize,
    /// Internal: run as a worker (spec and commands on stdin).
    #[arg(long, hide = true)]
    worker: bool,
}

fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..");
    here.canonicalize().unwrap_or(here)
}

fn find_switchboard(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p);
    }
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        candidates.push(dir.join("switchboard"));
    }
    let root = repo_root();
    candidates.push(root.join("target/release/switchboard"));
    candidates.push(root.join("target/debug/switchboard"));
    candidates.into_iter().find(|p| p.is_file()).context(
        "no switchboard binary: cargo build --release -p switchboard-dataplane (or --switchboard-bin)",
    )
}

fn find_redis(flag: Option<String>) -> Option<String> {
    flag.or_else(|| std::env::var("SWITCHBOARD_TEST_REDIS_URL").ok())
        .or_else(|| {
            let state = std::env::var("SWITCHBOARD_TEST_STATE")
                .map(PathBuf::from)
                .unwrap_or_else(|_| repo_root().join("tests/.state"));
            let text = std::fs::read_to_string(state.join("env")).ok()?;
            text.lines().find_map(|l| {
                l.trim()
                    .trim_start_matches("export ")
                    .strip_prefix("SWITCHBOARD_TEST_REDIS_URL=")
                    .map(|v| v.trim_matches('"').to_owned())
            })
        })
        .filter(|u| !u.is_empty())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new()?;
    if cli.worker {
        return rt.block_on(worker::main());
    }
    rt.block_on(coordinate(cli))
}

/// Results kept for later tables of the same invocation (cross-node reuses fanout).
struct Done {
    scenario: Scenario,
    outcomes: Vec<(Kind, Option<Outcome>)>,
}

async fn coordinate(cli: Cli) -> anyhow::Result<()> {
    let kinds: Vec<Kind> = cli
        .servers
        .iter()
        .map(|s| match s.as_str() {
            "switchboard" => Ok(Kind::Switchboard),
            "node" => Ok(Kind::Node),
            other => anyhow::bail!("--servers: unknown {other:?} (switchboard, node)"),
        })
        .collect::<anyhow::Result<_>>()?;
    let scenario = cli
        .scenario
        .clone()
        .unwrap_or_else(|| if cli.quick { "all" } else { "" }.into());
    let names: Vec<&'static str> = match scenario.as_str() {
        "sync" => vec!["sync"],
        "all" => vec!["idle", "fanout", "cross-node", "rooms"],
        "idle" => vec!["idle"],
        "fanout" => vec!["fanout"],
        "cross-node" => vec!["cross-node"],
        "rooms" => vec!["rooms"],
        "" => {
            anyhow::bail!(
                "which scenario? idle | fanout | cross-node | rooms | all | sync (or --quick)"
            )
        }
        other => {
            anyhow::bail!(
                "unknown scenario {other:?}: idle | fanout | cross-node | rooms | all | sync"
            )
        }
    };
    let run_dir = std::env::temp_dir().join(format!("switchboard-bench-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir)?;
    let node_dir = cli
        .node_peer_dir
        .clone()
        .unwrap_or_else(|| repo_root().join("tests/bench/peers/node"));
    let redis_url = match find_redis(cli.redis_url.clone()) {
        Some(u) if servers::redis_reachable(&u).await => Some(u),
        Some(u) => {
            eprintln!("[bench] Redis {u} does not answer: no two-node runs");
            None
        }
        None => None,
    };
    let env = Env {
        switchboard_bin: if kinds.contains(&Kind::Switchboard) && cli.external.is_empty() {
            find_switchboard(cli.switchboard_bin.clone())?
        } else {
            PathBuf::new()
        },
        node_dir,
        redis_url,
        run_dir: run_dir.clone(),
        secret: cli.secret.clone().unwrap_or_else(|| {
            format!(
                "switchboard-bench-secret-{:016x}-{:08x}",
                worker::now_us(),
                std::process::id()
            )
        }),
        clk_tck: servers::clk_tck(),
        external: (!cli.external.is_empty())
            .then(|| (cli.external.clone(), cli.external_pid.clone())),
    };
    let opts = Opts {
        per_worker: cli.per_worker,
        concurrency: cli.concurrency,
    };
    eprintln!(
        "[bench] switchboard {:?}, node peer {:?}, redis {:?}, logs in {}",
        env.switchboard_bin,
        env.node_dir,
        env.redis_url,
        run_dir.display()
    );
    let mut ips = IpPool::new();
    let mut done: Vec<Done> = Vec::new();
    let mut all_tables = String::new();
    if names == ["sync"] {
        let plan = catchup::Plan {
            rooms: cli.sync_rooms,
            changed: cli.sync_changed.clone(),
            limit: cli.sync_limit,
            repeat: cli.sync_repeat.max(1),
        };
        all_tables = catchup::run(&env, &plan).await?;
        println!("{all_tables}");
    }
    let names = if names == ["sync"] { vec![] } else { names };
    for name in names {
        if (name == "cross-node" || (name == "idle" && cli.nodes > 1)) && env.redis_url.is_none() {
            let msg = format!(
                "### {name}\n\nskipped: no Redis (set SWITCHBOARD_TEST_REDIS_URL or run tests/env/envctl up redis)\n"
            );
            println!("{msg}");
            all_tables.push_str(&msg);
            continue;
        }
        let sc = scenario_for(name, &cli);
        // Cross-node compares with a single-node fan-out of the same shape.
        if name == "cross-node" {
            let base = Scenario {
                name: "fanout",
                nodes: 1,
                ..sc.clone()
            };
            if !done.iter().any(|d| same_shape(&d.scenario, &base)) {
                let outcomes = run_all(&env, &base, &kinds, &opts, &mut ips).await;
                done.push(Done {
                    scenario: base.clone(),
                    outcomes,
                });
                let cur = done.last().context("just pushed")?;
                let text = tabulate(&base, cur, None, &kinds, &env).render();
                println!("{text}");
                all_tables.push_str(&text);
                all_tables.push('\n');
            }
        }
        let outcomes = run_all(&env, &sc, &kinds, &opts, &mut ips).await;
        done.push(Done {
            scenario: sc.clone(),
            outcomes,
        });
        let cur = done.last().context("just pushed")?;
        let base = (name == "cross-node")
            .then(|| {
                done.iter().find(|d| {
                    same_shape(
                        &d.scenario,
                        &Scenario {
                            name: "fanout",
                            nodes: 1,
                            ..sc.clone()
                        },
                    )
                })
            })
            .flatten();
        let table = tabulate(&sc, cur, base, &kinds, &env);
        let text = table.render();
        println!("{text}");
        all_tables.push_str(&text);
        all_tables.push('\n');
    }
    if !done.is_empty() {
        let goals = goals(&done, &kinds);
        println!("{goals}");
        all_tables.push_str(&goals);
    }
    if let Some(path) = &cli.markdown {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("open {}", path.display()))?;
        writeln!(f, "{all_tables}")?;
    }
    eprintln!("[bench] server logs kept in {}", run_dir.display());
    Ok(())
}

fn same_shape(a: &Scenario, b: &Scenario) -> bool {
    a.name == b.name
        && a.nodes == b.nodes
        && a.room_size == b.room_size
        && a.connections == b.connections
        && a.send == b.send
        && a.duration == b.duration
}

fn scenario_for(name: &'static str, cli: &Cli) -> Scenario {
    let quick = cli.quick;
    let n = |full: usize| cli.connections.unwrap_or(if quick { 1000 } else { full });
    let secs = |full: u64, q: u64| cli.duration.unwrap_or(if quick { q } else { full });
    match name {
        "idle" => Scenario {
            name,
            connections: n(10_000),
            duration: secs(10, 5),
            room_size: if cli.stage == "join" {
                cli.room_size
            } else {
                0
            },
            transport_only: cli.stage == "transport",
            nodes: cli.nodes.max(1),
            send: SendPlan::None,
            settle: 3,
            drain: 0,
        },
        "fanout" | "cross-node" => {
            let c = n(10_000);
            Scenario {
                name,
                connections: c,
                duration: secs(20, 10),
                room_size: c,
                transport_only: false,
                nodes: if name == "fanout" { 1 } else { 2 },
                send: SendPlan::One {
                    idx: 0,
                    rate: cli.rate.unwrap_or(20.0),
                },
                settle: 2,
                drain: 3,
            }
        }
        _ => Scenario {
            name: "rooms",
            connections: n(20_000),
            duration: secs(20, 10),
            room_size: cli.room_size,
            transport_only: false,
            nodes: 1,
            send: SendPlan::All {
                rate: cli.rate.unwrap_or(0.5),
            },
            settle: 2,
            drain: 3,
        },
    }
}

async fn run_all(
    env: &Env,
    sc: &Scenario,
    kinds: &[Kind],
    opts: &Opts,
    ips: &mut IpPool,
) -> Vec<(Kind, Option<Outcome>)> {
    let mut out = Vec::new();
    for &k in kinds {
        if k == Kind::Node && env.external.is_none() && !servers::node_peer_present(&env.node_dir) {
            eprintln!(
                "[bench] {} {}: skipped, no peer at {} (server.mjs and node_modules)",
                sc.name,
                k.short(),
                env.node_dir.display()
            );
            out.push((k, None));
            continue;
        }
        match coord::run(env, sc, k, opts, ips).await {
            Ok(o) => out.push((k, Some(o))),
            Err(e) => {
                eprintln!("[bench] {} {}: failed: {e:#}", sc.name, k.short());
                out.push((k, None));
            }
        }
    }
    out
}

fn describe(sc: &Scenario) -> String {
    match (&sc.send, sc.name) {
        (SendPlan::None, _) if sc.transport_only => format!(
            "idle: {} Engine.IO WebSocket connections (no namespace), held {} s",
            sc.connections, sc.duration
        ),
        (SendPlan::None, _) if sc.room_size == 0 => format!(
            "idle: {} connections on /chat (no room), held {} s",
            sc.connections, sc.duration
        ),
        (SendPlan::None, _) => format!(
            "idle: {} connections on /chat, each in a room of {}, on {} node(s), held {} s",
            sc.connections, sc.room_size, sc.nodes, sc.duration
        ),
        (SendPlan::One { rate, .. }, n) => format!(
            "{n}: one room of {} members on {} node(s), one sender at {rate} msg/s for {} s",
            sc.connections, sc.nodes, sc.duration
        ),
        (SendPlan::All { rate }, _) => format!(
            "rooms: {} connections in {} rooms of {}, every user sends {rate} msg/s for {} s",
            sc.connections,
            sc.connections.div_ceil(sc.room_size.max(1)),
            sc.room_size,
            sc.duration
        ),
    }
}

fn tabulate(sc: &Scenario, cur: &Done, base: Option<&Done>, kinds: &[Kind], env: &Env) -> Table {
    let outs: Vec<Option<&Outcome>> = kinds
        .iter()
        .map(|k| {
            cur.outcomes
                .iter()
                .find(|(kk, _)| kk == k)
                .and_then(|(_, o)| o.as_ref())
        })
        .collect();
    let bases: Vec<Option<&Outcome>> = kinds
        .iter()
        .map(|k| {
            base.and_then(|b| {
                b.outcomes
                    .iter()
                    .find(|(kk, _)| kk == k)
                    .and_then(|(_, o)| o.as_ref())
            })
        })
        .collect();
    let mut t = Table::new(describe(sc), kinds.to_vec());
    t.text("connections established", &outs, |o| {
        format!("{} / {}", o.connected, o.planned)
    });
    match sc.name {
        "idle" => {
            t.num("connect rate (conn/s)", 0, &outs, |o| {
                (o.connect_secs > 0.0).then(|| o.connected as f64 / o.connect_secs)
            });
            t.num("connect+join latency p50 (ms)", 1, &outs, |o| {
                ms(&o.connect_hist, 0.5)
            });
            t.num("connect+join latency p99 (ms)", 1, &outs, |o| {
                ms(&o.connect_hist, 0.99)
            });
            t.num("server RSS, no connections (MiB)", 1, &outs, |o| {
                Some(o.rss_empty_kib as f64 / 1024.0)
            });
            t.num("server RSS, all connected (MiB)", 1, &outs, |o| {
                Some(o.rss_loaded_kib as f64 / 1024.0)
            });
            t.num("server RSS per connection (KiB)", 2, &outs, |o| {
                o.rss_per_conn_kib()
            });
            t.num("server CPU while connecting (% of a core)", 0, &outs, |o| {
                Some(o.cpu_connect_pct)
            });
            t.num("server CPU while idle (% of a core)", 1, &outs, |o| {
                Some(o.cpu_run_pct)
            });
        }
        _ => {
            let per_s = |v: u64, o: &Outcome| (o.run_secs > 0.0).then(|| v as f64 / o.run_secs);
            t.num("messages sent", 0, &outs, |o| Some(o.counts.sent as f64));
            t.num("acks/s", 0, &outs, |o| per_s(o.counts.acks_ok, o));
            t.num("deliveries/s (message:new received)", 0, &outs, |o| {
                per_s(o.counts.delivered_run, o)
            });
            t.num("delivered / expected (%)", 2, &outs, |o| {
                (o.counts.expected > 0)
                    .then(|| o.counts.delivered_total as f64 * 100.0 / o.counts.expected as f64)
            });
            for (label, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999), ("max", 1.0)] {
                t.num(&format!("delivery latency {label} (ms)"), 2, &outs, |o| {
                    ms(&o.delivery_all(), q)
                });
            }
            if sc.nodes > 1 {
                for (node, what) in [(0, "sender's node"), (1, "other node")] {
                    t.num(
                        &format!("delivery p99, receivers on the {what} (ms)"),
                        2,
                        &outs,
                        |o| o.delivery.get(node).and_then(|h| ms(h, 0.99)),
                    );
                }
                let added = |q: f64, node: Option<usize>| {
                    move |(o, b): (Option<&Outcome>, Option<&Outcome>)| -> Option<f64> {
                        let (o, b) = (o?, b?);
                        let two = match node {
                            Some(n) => ms(o.delivery.get(n)?, q)?,
                            None => ms(&o.delivery_all(), q)?,
                        };
                        Some(two - ms(&b.delivery_all(), q)?)
                    }
                };
                let pairs: Vec<(Option<&Outcome>, Option<&Outcome>)> =
                    outs.iter().copied().zip(bases.iter().copied()).collect();
                for (label, f) in [
                    (
                        "single-node p99, same N and rate (ms)",
                        Box::new(|(_, b): (Option<&Outcome>, Option<&Outcome>)| {
                            ms(&b?.delivery_all(), 0.99)
                        })
                            as Box<dyn Fn((Option<&Outcome>, Option<&Outcome>)) -> Option<f64>>,
                    ),
                    ("added p99, all receivers (ms)", Box::new(added(0.99, None))),
                    (
                        "added p99, other-node receivers (ms)",
                        Box::new(added(0.99, Some(1))),
                    ),
                ] {
                    let cells = pairs
                        .iter()
                        .map(|p| match f(*p) {
                            Some(v) => report::Cell::Num(v, 2),
                            None => report::Cell::Missing,
                        })
                        .collect();
                    t.rows.push(report::Row {
                        metric: label.into(),
                        cells,
                        ratio: true,
                    });
                }
            }
            t.num("send→ack latency p50 (ms)", 2, &outs, |o| {
                ms(&o.ack_hist, 0.5)
            });
            t.num("send→ack latency p99 (ms)", 2, &outs, |o| {
                ms(&o.ack_hist, 0.99)
            });
            t.num("server CPU (% of a core, all nodes)", 0, &outs, |o| {
                Some(o.cpu_run_pct)
            });
            t.num("server RSS peak (MiB, all nodes)", 1, &outs, |o| {
                Some(o.rss_peak_kib as f64 / 1024.0)
            });
        }
    }
    t.num("load generator CPU (% of a core)", 0, &outs, |o| {
        Some(o.loadgen_cpu_pct)
    });
    for (k, o) in kinds.iter().zip(&outs) {
        match o {
            None if *k == Kind::Node && !servers::node_peer_present(&env.node_dir) => t
                .notes
                .push(format!("{}: not run (peer not present)", k.label())),
            None => t
                .notes
                .push(format!("{}: run failed (see stderr)", k.label())),
            Some(o) => {
                let c = &o.counts;
                if o.failed > 0 || c.dropped > 0 || c.acks_err > 0 || c.acks_missing > 0 {
                    t.notes.push(format!(
                        "{}: {} connects failed, {} dropped, {} acks refused, {} unanswered",
                        k.label(),
                        o.failed,
                        c.dropped,
                        c.acks_err,
                        c.acks_missing
                    ));
                }
                if c.self_delivered > 0 {
                    t.notes.push(format!(
                        "{}: echoed {} messages to their sender (not counted)",
                        k.label(),
                        c.self_delivered
                    ));
                }
                for e in &o.errors {
                    t.notes.push(format!("{}: {e}", k.label()));
                }
            }
        }
    }
    t
}

/// The project's targets, judged from this invocation's figures where it has them.
fn goals(done: &[Done], kinds: &[Kind]) -> String {
    let get = |name: &str, k: Kind| -> Option<&Outcome> {
        done.iter()
            .filter(|d| d.scenario.name == name)
            .flat_map(|d| d.outcomes.iter())
            .find(|(kk, _)| *kk == k)
            .and_then(|(_, o)| o.as_ref())
    };
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "not measured",
    };
    let mut s =
        String::from("### goals (this run)\n\n| goal | figures | verdict |\n|---|---|---|\n");
    let _ = kinds;
    // Idle memory.
    let sb = get("idle", Kind::Switchboard).and_then(Outcome::rss_per_conn_kib);
    let nd = get("idle", Kind::Node).and_then(Outcome::rss_per_conn_kib);
    s.push_str(&format!(
        "| server RSS per idle connection ≤ 8 KiB | Switchboard {} KiB | {} |\n",
        sb.map(|v| format!("{v:.2}")).unwrap_or("–".into()),
        verdict(sb.map(|v| v <= 8.0))
    ));
    s.push_str(&format!(
        "| … and ≤ 1/4 of Node's | Node {} KiB, ratio {} | {} |\n",
        nd.map(|v| format!("{v:.2}")).unwrap_or("–".into()),
        sb.zip(nd)
            .map(|(a, b)| format!("{:.2}", a / b))
            .unwrap_or("–".into()),
        verdict(sb.zip(nd).map(|(a, b)| a <= b / 4.0))
    ));
    // Fan-out.
    let rate = |o: &Outcome| o.counts.delivered_run as f64 / o.run_secs.max(1e-9);
    let f_sb = get("fanout", Kind::Switchboard);
    let f_nd = get("fanout", Kind::Node);
    let d = f_sb.zip(f_nd).map(|(a, b)| rate(a) / rate(b).max(1e-9));
    // At a rate both sustain, both deliver the offered load: the ratio says nothing.
    let kept_up = |o: &Outcome| {
        o.counts.expected > 0 && o.counts.delivered_total * 1000 >= o.counts.expected * 995
    };
    let both_kept_up = f_sb
        .zip(f_nd)
        .is_some_and(|(a, b)| kept_up(a) && kept_up(b));
    s.push_str(&format!(
        "| fan-out ≥ 3× Node's deliveries/s | {} vs {} /s, ratio {} | {} |\n",
        f_sb.map(|o| format!("{:.0}", rate(o)))
            .unwrap_or("–".into()),
        f_nd.map(|o| format!("{:.0}", rate(o)))
            .unwrap_or("–".into()),
        d.map(|v| format!("{v:.2}")).unwrap_or("–".into()),
        if both_kept_up {
            "not measured: both delivered the whole offered load (raise --rate)"
        } else {
            verdict(d.map(|v| v >= 3.0))
        }
    ));
    let p = |o: &Outcome| ms(&o.delivery_all(), 0.99);
    let pr = f_sb
        .and_then(p)
        .zip(f_nd.and_then(p))
        .map(|(a, b)| a / b.max(1e-9));
    s.push_str(&format!(
        "| fan-out p99 ≤ 1/3 of Node's | {} vs {} ms, ratio {} | {} |\n",
        f_sb.and_then(p)
            .map(|v| format!("{v:.2}"))
            .unwrap_or("–".into()),
        f_nd.and_then(p)
            .map(|v| format!("{v:.2}"))
            .unwrap_or("–".into()),
        pr.map(|v| format!("{v:.2}")).unwrap_or("–".into()),
        verdict(pr.map(|v| v <= 1.0 / 3.0))
    ));
    // Cross-node.
    let x = get("cross-node", Kind::Switchboard)
        .and_then(p)
        .zip(f_sb.and_then(p))
        .map(|(two, one)| two - one);
    s.push_str(&format!(
        "| cross-node added p99 ≤ 2 ms | Switchboard {} ms | {} |\n",
        x.map(|v| format!("{v:.2}")).unwrap_or("–".into()),
        verdict(x.map(|v| v <= 2.0))
    ));
    s.push_str("| 200k concurrent connections on this box | see BENCHMARKS.md (one server process can open 20,000 files here) | not measured by these scenarios |\n");
    s
}
