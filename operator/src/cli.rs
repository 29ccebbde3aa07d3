//! The `switchboard-operator` command line: `run` and `crd`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use switchboard_crds::duration::HumanDuration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{Instrument, info, info_span, warn};

use crate::http::{Health, serve};
use crate::lease::Elector;
use crate::reconcile::{Context, run_controller};

#[derive(Parser, Debug)]
#[command(
    name = "switchboard-operator",
    version,
    about = "Kubernetes operator for Switchboard RealtimeClusters"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Reconcile RealtimeClusters (leader-elected; standby replicas wait).
    Run(RunArgs),
    /// Print the RealtimeCluster CustomResourceDefinition as YAML.
    Crd,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Address of /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "SWITCHBOARD_OPERATOR_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub listen: SocketAddr,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "SWITCHBOARD_OPERATOR_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Namespace of the leader-election Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "SWITCHBOARD_OPERATOR_LEASE",
        default_value = "switchboard-operator"
    )]
    pub lease_name: String,
    /// This replica's identity in the Lease (the pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// How long a Lease lasts without renewal.
    #[arg(
        long,
        env = "SWITCHBOARD_OPERATOR_LEASE_DURATION",
        default_value = "15s"
    )]
    pub lease_duration: HumanDuration,
    /// `text` or `json`.
    #[arg(long, env = "SWITCHBOARD_LOG_FORMAT", default_value = "text",
          value_parser = ["text", "json"])]
    pub log_format: String,
}

impl Args {
    pub async fn parse_and_run() -> anyhow::Result<()> {
        match Self::parse().command {
            Command::Crd => {
                print!("{}", switchboard_crds::crd_yaml()?);
                Ok(())
            }
            Command::Run(args) => run(args).await,
        }
    }
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_tracing(&args.log_format);
    crate::install_crypto_provider();
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or $KUBECONFIG)")?;
    let identity = match args.identity {
        Some(id) => id,
        None => hostname_or_pid(),
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen {}: cannot bind", args.listen))?;
    let health = Health::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let http = tokio::spawn(
        serve(listener, health.clone(), stopped(stop_rx.clone())).instrument(info_span!("http")),
    );
    let elector = Elector::new(
        client.clone(),
        &args.lease_namespace,
        &args.lease_name,
        &identity,
        args.lease_duration.0.max(Duration::from_secs(3)),
    );

    let signal = shutdown_signal();
    tokio::pin!(signal);
    let ready = health.ready.clone();
    let acquire = async {
        // Ready as soon as the API server answers, leader or not.
        loop {
            let sent = tokio::time::Instant::now();
            match elector.try_lead().await {
                Ok(lead) => {
                    ready.store(true, Ordering::Relaxed);
                    if lead {
                        return sent;
                    }
                }
                Err(e) => warn!(error = %e, "leader election: API error"),
            }
            tokio::time::sleep(elector.renew_every()).await;
        }
    };
    let led_since = tokio::select! {
        _ = &mut signal => {
            let _ = stop_tx.send(true);
            let _ = http.await;
            return Ok(());
        }
        sent = acquire => sent,
    };
    info!(identity = %identity, lease = %args.lease_name, "leading");
    health.metrics.leader.set(1);
    let ctx = Context::new(client, health.metrics.clone(), Some(identity));
    let controller = run_controller(
        ctx,
        args.watch_namespace.as_deref(),
        stopped(stop_rx.clone()),
    );
    let mut controller = Box::pin(controller);
    let (lost, controller_done) = tokio::select! {
        _ = &mut signal => (false, false),
        _ = elector.hold(led_since) => (true, false),
        _ = &mut controller => (false, true),
    };
    if lost {
        // Not the leader any more: stop every reconcile now, mid-write if need be
        // (the next leader starts over from what is stored), instead of letting them finish.
        drop(controller);
        health.metrics.leader.set(0);
        let _ = stop_tx.send(true);
        let _ = http.await;
        anyhow::bail!(
            "lost the leader Lease {}; exiting so no two replicas write",
            args.lease_name
        );
    }
    let _ = stop_tx.send(true);
    if !controller_done {
        // Shutting down while leading: let in-flight reconciles finish before giving up
        // the Lease.
        controller.await;
    }
    health.metrics.leader.set(0);
    if let Err(e) = elector.release().await {
        warn!(error = %e, "releasing the Lease failed; another replica takes over when it expires");
    }
    let _ = http.await;
    Ok(())
}

fn hostname_or_pid() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("switchboard-operator-{}", std::process::id()))
}
