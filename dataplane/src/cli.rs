//! The `switchboard` command line: `serve`, `token`, `config check`, `contract`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use switchboard_crds::config::{ConfigErrors, DataplaneConfig};
use switchboard_crds::duration::HumanDuration;

use crate::auth::{Claims, SERVICE_SCOPE, ScopedClaims, Signer, now_secs};

#[derive(Parser, Debug)]
#[command(
    name = "switchboard",
    version,
    about = "Switchboard real-time node: chat, presence, calls, notifications over Socket.IO"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a socket node (with no configuration: one node, in memory, dev JWT secret;
    /// with redis.url a JWT key must be configured).
    Serve(ServeArgs),
    /// Run a notification worker: Kafka `notifications` in; in-app, FCM, APNs, e-mail out
    /// (needs redis.url and notifications.kafka.brokers).
    Worker(ServeArgs),
    /// Print a JWT signed with the configured HMAC secret.
    Token(TokenArgs),
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The machine-readable contract, generated from the request and response types.
    Contract {
        #[arg(value_enum)]
        document: Document,
        /// Write it here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// A contract document.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Document {
    /// AsyncAPI 3.0 of the Socket.IO protocol (dataplane/asyncapi.yaml).
    Asyncapi,
    /// OpenAPI 3.1 of the HTTP APIs (dataplane/openapi.yaml).
    Openapi,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate a config file (YAML, or TOML when it ends in .toml) together with the
    /// SWITCHBOARD_* environment, as `serve` would load it; exit 1 on errors.
    Check { file: PathBuf },
    /// Print the default configuration as YAML.
    Default,
}

/// Where the configuration comes from: file, then SWITCHBOARD_* variables, then flags.
#[derive(Args, Debug, Default)]
pub struct ConfigArgs {
    /// Config file (YAML or TOML).
    #[arg(long, short, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Listen address.
    #[arg(long)]
    pub listen: Option<String>,
    /// Redis URL (unset: embedded single-node mode).
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Node id.
    #[arg(long)]
    pub node_id: Option<String>,
    /// Any key, as `key=value` (e.g. `chat.typing_timeout=3s`); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// User id (`sub`).
    #[arg(long)]
    pub sub: String,
    /// Tenant id.
    #[arg(long)]
    pub tenant: String,
    /// Display name.
    #[arg(long)]
    pub name: Option<String>,
    /// Lifetime, e.g. 1h.
    #[arg(long, default_value = "1h")]
    pub ttl: HumanDuration,
    /// Token id (enables revocation by jti).
    #[arg(long)]
    pub jti: Option<String>,
    /// Login session id.
    #[arg(long)]
    pub sid: Option<String>,
    /// `service`: a tenant-scoped service token for the service API (`/api/v1/*`) of
    /// `--tenant` only (`--sub` names the service); it cannot connect as a user.
    #[arg(long, value_parser = [SERVICE_SCOPE])]
    pub scope: Option<String>,
}

impl ConfigArgs {
    /// File, then environment, then flags; not yet validated.
    pub fn load(&self) -> Result<DataplaneConfig, ConfigErrors> {
        let mut cfg = match &self.config {
            Some(path) => DataplaneConfig::from_file(path)?,
            None => DataplaneConfig::default(),
        };
        cfg.apply_env(|v| std::env::var(v).ok())?;
        let mut errors = Vec::new();
        let flags = [
            ("listen", &self.listen),
            ("redis.url", &self.redis_url),
            ("node_id", &self.node_id),
        ];
        for (key, value) in flags {
            if let Some(v) = value {
                errors.extend(cfg.set(key, v).err());
            }
        }
        for kv in &self.set {
            match kv.split_once('=') {
                Some((k, v)) => errors.extend(cfg.set(k.trim(), v).err()),
                None => errors.push(switchboard_crds::config::ConfigError {
                    key: kv.clone(),
                    message: "--set takes KEY=VALUE".into(),
                }),
            }
        }
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

/// A random secret for embedded mode when none is configured.
pub fn dev_secret() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    hex_encode(&bytes)
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn make_token(cfg: &DataplaneConfig, a: &TokenArgs) -> anyhow::Result<String> {
    let now = now_secs();
    let claims = Claims {
        sub: a.sub.clone(),
        tenant: Some(a.tenant.clone()),
        exp: now + a.ttl.0.as_secs(),
        iat: Some(now),
        nbf: None,
        name: a.name.clone(),
        jti: a.jti.clone(),
        sid: a.sid.clone(),
        iss: cfg.jwt.issuer.clone(),
        aud: cfg.jwt.audience.clone(),
    };
    let claims = ScopedClaims {
        claims,
        scope: a.scope.clone().map_or(serde_json::Value::Null, Into::into),
    };
    let signer = Signer::hmac(&cfg.jwt).map_err(anyhow::Error::msg)?;
    signer
        .sign(&claims)
        .map_err(anyhow::Error::msg)
        .context("signing")
}

impl Cli {
    pub fn parse_and_run() -> anyhow::Result<()> {
        Self::parse().run()
    }

    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Config(ConfigCommand::Check { file }) => {
                let mut cfg = DataplaneConfig::from_file(&file)?;
                // Check what a node would run with: the file plus SWITCHBOARD_* variables.
                cfg.apply_env(|v| std::env::var(v).ok())?;
                cfg.validate_serve()?;
                println!("{}: ok", file.display());
                Ok(())
            }
            Command::Contract { document, out } => {
                let doc = match document {
                    Document::Asyncapi => crate::contract::asyncapi(),
                    Document::Openapi => crate::contract::openapi(),
                };
                let text = crate::contract::to_yaml(&doc);
                match out {
                    Some(path) => std::fs::write(&path, text)
                        .with_context(|| format!("writing {}", path.display()))?,
                    None => print!("{text}"),
                }
                Ok(())
            }
            Command::Config(ConfigCommand::Default) => {
                print!("{}", serde_yaml::to_string(&DataplaneConfig::default())?);
                Ok(())
            }
            Command::Token(args) => {
                let cfg = args.config.load()?;
                if cfg.jwt.secret.is_none() {
                    anyhow::bail!(
                        "jwt.secret (SWITCHBOARD_JWT_SECRET) is not set: use the secret the node printed at start-up"
                    );
                }
                cfg.validate()?;
                println!("{}", make_token(&cfg, &args)?);
                Ok(())
            }
            Command::Worker(args) => {
                let mut cfg = args.config.load()?;
                if cfg.jwt.secret.is_none() && cfg.jwt.public_key_file.is_none() {
                    // The worker verifies no tokens; validation still wants a key.
                    cfg.jwt.secret = Some(dev_secret());
                }
                cfg.validate()?;
                crate::telemetry::init(&cfg.log_format);
                let rt = tokio::runtime::Runtime::new()?;
                rt.block_on(crate::worker::run(cfg, shutdown_signal()))
            }
            Command::Serve(args) => {
                let mut cfg = args.config.load()?;
                // Refuses shared mode without a key, before a dev secret could fill it in.
                cfg.validate_serve()?;
                let dev = !cfg.has_jwt_key();
                if dev {
                    cfg.jwt.secret = Some(dev_secret());
                    // The dev secret must suit the configured algorithm (HS*).
                    cfg.validate()?;
                }
                crate::telemetry::init(&cfg.log_format);
                let rt = tokio::runtime::Runtime::new()?;
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::bind(&cfg.listen)
                        .await
                        .with_context(|| {
                            format!("listen (SWITCHBOARD_LISTEN): cannot bind {}", cfg.listen)
                        })?;
                    if dev {
                        print_dev_banner(&cfg, listener.local_addr()?);
                    }
                    crate::server::serve(listener, cfg, shutdown_signal()).await
                })
            }
        }
    }
}

fn print_dev_banner(cfg: &DataplaneConfig, addr: std::net::SocketAddr) {
    let secret = cfg.jwt.secret.as_deref().unwrap_or_default();
    let args = TokenArgs {
        config: ConfigArgs::default(),
        sub: "alice".into(),
        tenant: "acme".into(),
        name: Some("Alice".into()),
        ttl: HumanDuration::from_secs(3600),
        jti: None,
        sid: None,
        scope: None,
    };
    let example = make_token(cfg, &args).unwrap_or_default();
    // Only embedded mode gets here: shared mode refuses to start without a key.
    println!(
        "switchboard on http://{addr} (embedded mode: one node, state in memory)\n\
         No JWT key configured: generated a dev secret for this run.\n\
         Get a token:  SWITCHBOARD_JWT_SECRET={secret} switchboard token --sub alice --tenant acme --name Alice\n\
         Example token (alice@acme, 1h): {example}\n\
         Connect: io('http://{addr}/chat', {{ auth: {{ token }} }})"
    );
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
