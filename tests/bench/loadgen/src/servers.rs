//! The servers under test, started as child processes on free ports, watched through
//! /proc (RSS, CPU time) and killed by PID when their run is over.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, timeout};

/// Which implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Switchboard,
    Node,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Switchboard => "Switchboard",
            Kind::Node => "Node socket.io 4.8",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Kind::Switchboard => "switchboard",
            Kind::Node => "node",
        }
    }
}

/// Where things are, and what every server of one invocation shares.
#[derive(Clone, Debug)]
pub struct Env {
    pub switchboard_bin: PathBuf,
    pub node_dir: PathBuf,
    pub redis_url: Option<String>,
    /// Config files and server logs.
    pub run_dir: PathBuf,
    pub secret: String,
    pub clk_tck: u64,
    /// Servers started by someone else (e.g. under a profiler): their addresses and the
    /// PIDs to sample. Nothing is started or killed then.
    pub external: Option<(Vec<String>, Vec<u32>)>,
}

/// A running server node.
pub struct Server {
    pub addr: String,
    pub pid: u32,
    pub log: PathBuf,
    child: Child,
}

/// What /proc says about a process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub rss_kib: u64,
    /// utime + stime, clock ticks.
    pub cpu_ticks: u64,
}

impl std::ops::Add for Sample {
    type Output = Sample;
    fn add(self, o: Sample) -> Sample {
        Sample {
            rss_kib: self.rss_kib + o.rss_kib,
            cpu_ticks: self.cpu_ticks + o.cpu_ticks,
        }
    }
}

/// RSS and CPU time of `pid`, from /proc/PID/status (VmRSS) and /proc/PID/stat.
pub fn sample(pid: u32) -> Option<Sample> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name in parentheses start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(Sample {
        rss_kib,
        cpu_ticks: utime + stime,
    })
}

/// Sum of the samples of several processes (missing ones count as zero).
pub fn sample_all(pids: &[u32]) -> Sample {
    pids.iter()
        .filter_map(|p| sample(*p))
        .fold(Sample::default(), |a, b| a + b)
}

/// Clock ticks per second for /proc/PID/stat times.
pub fn clk_tck() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// A port nobody listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Limits high enough that the rate limiter never answers `rate_limited` in a benchmark.
pub fn switchboard_config() -> String {
    let bucket = "{rate: 1000000, burst: 1000000}";
    let classes = format!(
        "    message: {bucket}\n    typing: {bucket}\n    read: {bucket}\n    room: {bucket}\n    signal: {bucket}\n"
    );
    format!(
        "# written by switchboard-bench: limits out of the way\nlimits:\n  per_socket:\n{classes}  per_user:\n{classes}  abuse_threshold: 1000000\n"
    )
}

/// Whether the Node peer is there to be started.
pub fn node_peer_present(dir: &Path) -> bool {
    dir.join("server.mjs").is_file() && dir.join("node_modules").is_dir()
}

impl Server {
    /// Start node `n` of `nodes` of `kind`; with `nodes > 1` they share `env.redis_url`.
    pub async fn start(env: &Env, kind: Kind, n: usize, nodes: usize) -> anyhow::Result<Server> {
        let redis = if nodes > 1 {
            Some(
                env.redis_url
                    .clone()
                    .context("a multi-node run needs Redis (SWITCHBOARD_TEST_REDIS_URL)")?,
            )
        } else {
            None
        };
        Self::launch(env, kind, n, redis).await
    }

    /// Start node `n` of `kind`, on Redis at `redis` (shared mode) or embedded (`None`).
    pub async fn launch(
        env: &Env,
        kind: Kind,
        n: usize,
        redis: Option<String>,
    ) -> anyhow::Result<Server> {
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let log = env.run_dir.join(format!("{}-{port}.log", kind.short()));
        let out = fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = match kind {
            Kind::Switchboard => {
                let cfg = env.run_dir.join("switchboard.yaml");
                fs::write(&cfg, switchboard_config())?;
                let mut c = Command::new(&env.switchboard_bin);
                c.arg("serve")
                    .arg("--config")
                    .arg(&cfg)
                    .args(["--listen", &addr])
                    .args(["--node-id", &format!("bench-{n}")]);
                if let Some(url) = &redis {
                    c.args(["--redis-url", url]);
                }
                // Only what this run sets: no SWITCHBOARD_* from the caller's environment.
                for (k, _) in std::env::vars() {
                    if k.starts_with("SWITCHBOARD_") {
                        c.env_remove(k);
                    }
                }
                c.env("SWITCHBOARD_JWT_SECRET", &env.secret)
                    .env("RUST_LOG", "warn");
                c
            }
            Kind::Node => {
                let mut c = Command::new("node");
                c.arg("server.mjs")
                    .current_dir(&env.node_dir)
                    .env("PORT", port.to_string())
                    .env("HOST", "127.0.0.1")
                    .env("BENCH_JWT_SECRET", &env.secret)
                    .env("NODE_ENV", "production")
                    .env_remove("REDIS_URL");
                if let Some(url) = &redis {
                    c.env("REDIS_URL", url);
                }
                c
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("start {} ({cmd:?})", kind.label()))?;
        let pid = child.id().context("server has no pid")?;
        let mut s = Server {
            addr,
            pid,
            log,
            child,
        };
        if let Err(e) = s.wait_healthy(Duration::from_secs(30)).await {
            let tail = s.log_tail();
            s.kill().await;
            bail!("{} did not become healthy: {e:#}\n{tail}", kind.label());
        }
        Ok(s)
    }

    async fn wait_healthy(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("exited with {status}");
            }
            if healthz(&self.addr).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("GET /healthz on {} failed for {within:?}", self.addr);
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// Last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kill by PID and reap.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// `GET /healthz` answers 200.
pub async fn healthz(addr: &str) -> bool {
    let probe = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let req = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.ok()?;
        let head = String::from_utf8_lossy(&buf[..n]).into_owned();
        Some(head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"))
    };
    timeout(Duration::from_secs(2), probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// `redis://[user:pass@]host:port[/db]` answers a TCP connect.
pub async fn redis_reachable(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))
    else {
        return false;
    };
    let hostport = rest.rsplit('@').next().unwrap_or(rest);
    let hostport = hostport.split('/').next().unwrap_or(hostport);
    matches!(
        timeout(Duration::from_secs(2), TcpStream::connect(hostport)).await,
        Ok(Ok(_))
    )
}

/// Delete the keys matching `pattern` (SCAN + UNLINK over plain RESP): what a
/// multi-node run left in Redis under its own tenant. Returns how many went.
pub async fn redis_forget(url: &str, pattern: &str) -> anyhow::Result<u64> {
    let mut r = Resp::connect(url).await?;
    let (mut cursor, mut gone) = ("0".to_string(), 0u64);
    // Bounded: at most 100,000 SCAN pages.
    for _ in 0..100_000 {
        let reply = r
            .call(&["SCAN", &cursor, "MATCH", pattern, "COUNT", "1000"])
            .await?;
        let Value::Array(mut parts) = reply else {
            bail!("SCAN: unexpected reply");
        };
        let keys = match parts.pop() {
            Some(Value::Array(k)) => k,
            _ => bail!("SCAN: no key list"),
        };
        cursor = match parts.pop() {
            Some(Value::Bulk(c)) => c,
            _ => bail!("SCAN: no cursor"),
        };
        let keys: Vec<String> = keys
            .into_iter()
            .filter_map(|k| match k {
                Value::Bulk(s) => Some(s),
                _ => None,
            })
            .collect();
        if !keys.is_empty() {
            let mut args = vec!["UNLINK"];
            args.extend(keys.iter().map(String::as_str));
            if let Value::Int(n) = r.call(&args).await? {
                gone += n.max(0) as u64;
            }
        }
        if cursor == "0" {
            break;
        }
    }
    Ok(gone)
}

/// A RESP reply, as much of it as SCAN and UNLINK need.
pub enum Value {
    Simple,
    Int(i64),
    Bulk(String),
    Nil,
    Array(Vec<Value>),
}

/// A plain RESP connection (no client library: the harness needs a handful of commands).
pub struct Resp {
    io: tokio::io::BufReader<TcpStream>,
}

impl Resp {
    /// Connect to a `redis://[[user]:pass@]host:port[/db]` URL (AUTH and SELECT done).
    pub async fn connect(url: &str) -> anyhow::Result<Resp> {
        let rest = url
            .strip_prefix("redis://")
            .context("only redis:// URLs are supported")?;
        let (auth, hostdb) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (hostport, db) = match hostdb.split_once('/') {
            Some((h, d)) => (h, Some(d).filter(|d| !d.is_empty())),
            None => (hostdb, None),
        };
        let stream = timeout(Duration::from_secs(5), TcpStream::connect(hostport)).await??;
        let mut r = Resp {
            io: tokio::io::BufReader::new(stream),
        };
        if let Some(a) = auth {
            let (user, pass) = a.split_once(':').unwrap_or(("", a));
            if user.is_empty() {
                r.call(&["AUTH", pass]).await?;
            } else {
                r.call(&["AUTH", user, pass]).await?;
            }
        }
        if let Some(d) = db {
            r.call(&["SELECT", d]).await?;
        }
        Ok(r)
    }

    pub async fn call(&mut self, args: &[&str]) -> anyhow::Result<Value> {
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.io.get_mut().write_all(req.as_bytes()).await?;
        timeout(Duration::from_secs(10), self.read())
            .await
            .context("redis: no answer within 10 s")?
    }

    /// One line of a reply (MONITOR sends one per command).
    pub async fn line(&mut self) -> anyhow::Result<String> {
        use tokio::io::AsyncBufReadExt;
        let mut l = String::new();
        if self.io.read_line(&mut l).await? == 0 {
            bail!("redis closed the connection");
        }
        Ok(l.trim_end_matches(['\r', '\n']).to_owned())
    }

    async fn read(&mut self) -> anyhow::Result<Value> {
        // Iterative over nested arrays: a stack of (items so far, items expected).
        let mut stack: Vec<(Vec<Value>, usize)> = Vec::new();
        loop {
            let l = self.line().await?;
            let (tag, body) = l.split_at(l.len().min(1));
            let mut v = match tag {
                "+" => Value::Simple,
                "-" => bail!("redis: {body}"),
                ":" => Value::Int(body.parse()?),
                "$" => {
                    let n: i64 = body.parse()?;
                    if n < 0 {
                        Value::Nil
                    } else {
                        let mut buf = vec![0u8; n as usize + 2];
                        self.io.read_exact(&mut buf).await?;
                        buf.truncate(n as usize);
                        Value::Bulk(String::from_utf8_lossy(&buf).into_owned())
                    }
                }
                "*" => {
                    let n: i64 = body.parse()?;
                    if n <= 0 {
                        Value::Array(Vec::new())
                    } else {
                        stack.push((Vec::with_capacity(n as usize), n as usize));
                        continue;
                    }
                }
                other => bail!("redis: unexpected reply type {other:?}"),
            };
            loop {
                match stack.last_mut() {
                    None => return Ok(v),
                    Some((items, want)) => {
                        items.push(v);
                        if items.len() < *want {
                            break;
                        }
                        let (items, _) = stack.pop().context("stack")?;
                        v = Value::Array(items);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_proc_entry() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0);
    }

    #[test]
    fn the_config_loads_as_the_nodes_own_with_the_limits_out_of_the_way() {
        use switchboard_crds::config::DataplaneConfig;
        let mut cfg = DataplaneConfig::from_str(&switchboard_config(), false).unwrap();
        let l = &cfg.limits;
        for b in [&l.per_socket, &l.per_user] {
            for bucket in [b.message, b.typing, b.read, b.room] {
                assert_eq!((bucket.rate, bucket.burst), (1_000_000.0, 1_000_000));
            }
        }
        assert_eq!(l.abuse_threshold, 1_000_000);
        cfg.jwt.secret = Some("x".repeat(32));
        cfg.validate().unwrap();
    }
}
