//! Helpers for tests against the test environment's API server: an admin client, polling,
//! and fresh namespaces.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::config::KubeConfigOptions;
use kube::{Api, Client, Config};

use crate::unique_name;

/// A client for the admin kubeconfig in $KUBECONFIG.
pub async fn client() -> Result<Client> {
    // Both ring and aws-lc-rs are in the dependency tree, so rustls cannot pick one itself.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Config::from_kubeconfig(&KubeConfigOptions::default())
        .await
        .context("reading $KUBECONFIG")?;
    Ok(Client::try_from(config)?)
}

/// Poll `check` every 250 ms until it says true, or fail after `limit`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_error = Some(e),
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {limit:?} waiting for {what} (last error: {last_error:?})");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A fresh namespace whose default ServiceAccount exists (pods are refused before it does).
pub async fn fresh_namespace(client: &Client, prefix: &str) -> Result<String> {
    let name = unique_name(prefix);
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
    eventually(
        "the default ServiceAccount",
        Duration::from_secs(60),
        || async { Ok(accounts.get_opt("default").await?.is_some()) },
    )
    .await?;
    Ok(name)
}

pub async fn delete_namespace(client: &Client, name: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}
