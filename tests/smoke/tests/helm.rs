//! Smoke tests of the helm binary of the test environment (`tests/env/envctl up helm`):
//! it is the pinned version, and it renders charts for the Kubernetes version the test
//! environment runs, both offline and when it asks the API server.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use switchboard_smoke::{endpoint, unique_name};

/// A pinned version from tests/env/versions.env.
fn pinned(name: &str) -> Result<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../env/versions.env");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name}=")))
        .map(|v| v.trim().to_string())
        .with_context(|| format!("{name} is not in {}", path.display()))
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(prefix: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(unique_name(prefix));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run helm with its state directories inside `home`; its stdout, or an error with stderr.
fn helm(helm: &str, home: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(helm)
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .with_context(|| format!("running {helm}"))?;
    ensure!(
        out.status.success(),
        "helm {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// A chart whose one template shows what helm thinks of the cluster's version.
fn write_chart(dir: &Path) -> Result<PathBuf> {
    let chart = dir.join("capabilities");
    std::fs::create_dir_all(chart.join("templates"))?;
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: capabilities\nversion: 0.1.0\n",
    )?;
    std::fs::write(
        chart.join("templates/configmap.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: capabilities\ndata:\n  \
         kubeVersion: {{ .Capabilities.KubeVersion.Version | quote }}\n  \
         kubeMajor: {{ .Capabilities.KubeVersion.Major | quote }}\n  \
         kubeMinor: {{ .Capabilities.KubeVersion.Minor | quote }}\n",
    )?;
    Ok(chart)
}

/// The value of `key: "value"` in rendered YAML.
fn rendered(yaml: &str, key: &str) -> Option<String> {
    yaml.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
        .map(|v| v.trim_matches('"').to_string())
}

#[test]
fn helm_reports_the_pinned_version() -> Result<()> {
    let Some(bin) = endpoint("SWITCHBOARD_TEST_HELM") else {
        return Ok(());
    };
    let home = Scratch::new("sb-helm-version")?;
    let version = helm(&bin, &home.0, &["version", "--template", "{{ .Version }}"])?;
    assert_eq!(version.trim(), pinned("HELM_VERSION")?);
    Ok(())
}

#[test]
fn template_renders_for_the_environments_kubernetes() -> Result<()> {
    let Some(bin) = endpoint("SWITCHBOARD_TEST_HELM") else {
        return Ok(());
    };
    let Some(kube) = endpoint("SWITCHBOARD_TEST_KUBE_VERSION") else {
        return Ok(());
    };
    let (major, minor) = kube
        .trim_start_matches('v')
        .split('.')
        .collect::<Vec<_>>()
        .get(0..2)
        .map(|p| (p[0].to_string(), p[1].to_string()))
        .context("SWITCHBOARD_TEST_KUBE_VERSION is not vMAJOR.MINOR.PATCH")?;
    let home = Scratch::new("sb-helm-template")?;
    let chart = write_chart(&home.0)?;
    let chart = chart.to_str().context("non-UTF-8 temp dir")?;

    // Offline, helm renders its built-in version, which the build set to the
    // environment's MAJOR.MINOR (helm keeps no patch number there).
    let offline = helm(&bin, &home.0, &["template", "smoke", chart])?;
    assert_eq!(
        rendered(&offline, "kubeMajor"),
        Some(major.clone()),
        "{offline}"
    );
    assert_eq!(
        rendered(&offline, "kubeMinor"),
        Some(minor.clone()),
        "{offline}"
    );
    assert_eq!(
        rendered(&offline, "kubeVersion"),
        Some(format!("v{major}.{minor}.0")),
        "{offline}"
    );

    // Asking the API server, helm sees the exact version it runs.
    if let Some(kubeconfig) = endpoint("KUBECONFIG") {
        let live = helm(
            &bin,
            &home.0,
            &[
                "template",
                "smoke",
                chart,
                "--validate",
                "--kubeconfig",
                &kubeconfig,
            ],
        )?;
        assert_eq!(rendered(&live, "kubeVersion"), Some(kube.clone()), "{live}");
    }
    Ok(())
}
