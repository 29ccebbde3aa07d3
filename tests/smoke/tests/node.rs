//! Smoke tests of the real node (`tests/env/envctl up … containerd images kubelet
//! kube_proxy coredns`) and of the images `images/build` made:
//! - a pod of the Switchboard image reaches Running and Ready through its real readiness
//!   probe, as the image's user (65532) with a read-only root file system;
//! - its `/healthz` answers at the pod IP, and through a ClusterIP Service (kube-proxy)
//!   from the host and, by its DNS name (CoreDNS), from another pod;
//! - `kubectl logs` and `kubectl exec` work (`switchboard --version` inside the container);
//! - the OCI layouts validate (`umoci stat`, `skopeo inspect`), and the Switchboard images
//!   hold nothing but the program, the libraries `ldd` lists, the CA bundle and
//!   passwd/group: no shell.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use switchboard_smoke::endpoints;
use switchboard_smoke::http_get;
use switchboard_smoke::kube::{client, delete_namespace, eventually, fresh_namespace};

const VARS: [&str; 6] = [
    "SWITCHBOARD_TEST_KUBECTL",
    "SWITCHBOARD_TEST_NODE_NAME",
    "SWITCHBOARD_TEST_IMAGES",
    "SWITCHBOARD_TEST_IMAGE_TAG",
    "SWITCHBOARD_TEST_IMAGE_REGISTRY",
    "SWITCHBOARD_TEST_CRICTL",
];

/// The environment of the real node, as `envctl up` exported it.
struct Env {
    kubectl: String,
    images: PathBuf,
    tag: String,
    registry: String,
    crictl: String,
}

impl Env {
    fn get() -> Option<Self> {
        let [kubectl, _node, images, tag, registry, crictl] = endpoints(VARS)?;
        Some(Self {
            kubectl,
            images: images.into(),
            tag,
            registry,
            crictl,
        })
    }

    fn image(&self, name: &str) -> String {
        format!("{}/{name}:{}", self.registry, self.tag)
    }

    fn kubectl(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.kubectl)
            .args(args)
            .output()
            .with_context(|| format!("running kubectl {args:?}"))?;
        ok(&out, &format!("kubectl {args:?}"))
    }

    fn apply(&self, yaml: &str) -> Result<()> {
        use std::io::Write;
        let mut child = Command::new(&self.kubectl)
            .args(["apply", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("kubectl stdin")?
            .write_all(yaml.as_bytes())?;
        ok(&child.wait_with_output()?, "kubectl apply").map(drop)
    }
}

fn ok(out: &Output, what: &str) -> Result<String> {
    ensure!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What pins a pod to the real node: its label and the toleration of its taint.
const ON_REAL_NODE: &str = r#"
  nodeSelector: {switchboard.dev/node: real}
  tolerations: [{key: switchboard.dev/real-node, operator: Exists, effect: NoSchedule}]"#;

#[tokio::test]
async fn switchboard_pod_serves_on_the_real_node() -> Result<()> {
    let Some(env) = Env::get() else { return Ok(()) };
    let client = client().await?;
    // fresh_namespace waits for the default ServiceAccount: pods are refused before it.
    let ns = fresh_namespace(&client, "real-node").await?;
    let result = serves_on_the_real_node(&env, &ns).await;
    delete_namespace(&client, &ns).await;
    result
}

async fn serves_on_the_real_node(env: &Env, n: &str) -> Result<()> {
    env.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: sb, namespace: {n}, labels: {{app: sb}}}}
spec:{ON_REAL_NODE}
  automountServiceAccountToken: false
  securityContext: {{runAsNonRoot: true, seccompProfile: {{type: RuntimeDefault}}}}
  containers:
  - name: switchboard
    image: {image}
    imagePullPolicy: IfNotPresent
    args: [serve]
    env:
    - {{name: SWITCHBOARD_JWT_SECRET, value: smoke-test-secret-smoke-test-secret}}
    - {{name: SWITCHBOARD_LISTEN, value: "0.0.0.0:3000"}}
    ports: [{{containerPort: 3000, name: http}}]
    readinessProbe: {{httpGet: {{path: /readyz, port: 3000}}, periodSeconds: 1}}
    securityContext:
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      capabilities: {{drop: [ALL]}}
---
apiVersion: v1
kind: Service
metadata: {{name: sb, namespace: {n}}}
spec:
  selector: {{app: sb}}
  ports: [{{port: 80, targetPort: 3000}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: probe, namespace: {n}}}
spec:{ON_REAL_NODE}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 0
  containers:
  - name: probe
    image: {probe}
    imagePullPolicy: IfNotPresent
    command: [sleep, "3600"]
    securityContext: {{readOnlyRootFilesystem: true, allowPrivilegeEscalation: false}}
"#,
        image = env.image("switchboard"),
        probe = env.image("probe"),
    ))?;
    for pod in ["sb", "probe"] {
        env.kubectl(&[
            "wait",
            "-n",
            n,
            "--for=condition=Ready",
            "--timeout=120s",
            &format!("pod/{pod}"),
        ])
        .with_context(|| {
            format!(
                "pod {pod} not Ready: {}",
                env.kubectl(&["describe", "-n", n, "pod", pod])
                    .unwrap_or_default()
            )
        })?;
    }

    // /healthz at the pod IP, from the host.
    let ip = env.kubectl(&[
        "get",
        "pod",
        "-n",
        n,
        "sb",
        "-o",
        "jsonpath={.status.podIP}",
    ])?;
    let (status, _) = http_get(&ip, 3000, "/healthz").await?;
    assert_eq!(status, 200, "/healthz at the pod IP {ip}");
    assert!(ip.starts_with("10.244.0."), "pod IP {ip} is on the bridge");

    // Through the ClusterIP from the host (kube-proxy's nftables rules).
    let cluster_ip = env.kubectl(&[
        "get",
        "svc",
        "-n",
        n,
        "sb",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])?;
    eventually(
        "ClusterIP from the host",
        Duration::from_secs(30),
        || async { Ok(http_get(&cluster_ip, 80, "/healthz").await?.0 == 200) },
    )
    .await?;

    // From another pod, by the Service's DNS name (CoreDNS) through the ClusterIP.
    let name = format!("sb.{n}.svc.cluster.local");
    // (busybox-static 1.35's wget crashes on this kernel; nc speaks HTTP/1.0 by hand.)
    let request = format!("printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {name} 80");
    let answer = std::sync::Mutex::new(String::new());
    eventually(
        "Service by name from a pod",
        Duration::from_secs(30),
        || async {
            let out = env.kubectl(&["exec", "-n", n, "probe", "--", "sh", "-c", &request])?;
            let ok = out.starts_with("HTTP/1.0 200");
            *answer.lock().unwrap_or_else(|e| e.into_inner()) = out;
            Ok(ok)
        },
    )
    .await?;
    let answer = answer.into_inner().unwrap_or_else(|e| e.into_inner());
    assert!(answer.ends_with("ok"), "/healthz through {name}: {answer}");
    let lookup = env.kubectl(&["exec", "-n", n, "probe", "--", "nslookup", &name])?;
    assert!(
        lookup.contains(&cluster_ip),
        "{name} resolves to {cluster_ip}: {lookup}"
    );
    let api = env.kubectl(&[
        "exec",
        "-n",
        n,
        "probe",
        "--",
        "nslookup",
        "kubernetes.default.svc.cluster.local",
    ])?;
    assert!(
        api.contains("10.96.0.1"),
        "the API server's Service resolves: {api}"
    );
    // Nothing outside the cluster resolves: no pod ever asks an outside resolver.
    let outside = Command::new(&env.kubectl)
        .args(["exec", "-n", n, "probe", "--", "nslookup", "example.com"])
        .output()?;
    assert!(
        !outside.status.success(),
        "example.com must not resolve in a pod"
    );

    // kubectl logs and exec (the image has no shell; exec runs the program itself).
    let logs = env.kubectl(&["logs", "-n", n, "sb"])?;
    assert!(
        !logs.trim().is_empty(),
        "kubectl logs shows the node's start-up"
    );
    let version = env.kubectl(&[
        "exec",
        "-n",
        n,
        "sb",
        "--",
        "/usr/bin/switchboard",
        "--version",
    ])?;
    assert!(
        version.contains(&env.tag),
        "switchboard --version inside the container: {version}"
    );
    let shell = Command::new(&env.kubectl)
        .args(["exec", "-n", n, "sb", "--", "/bin/sh", "-c", "true"])
        .output()?;
    assert!(!shell.status.success(), "the image has no /bin/sh");

    // The image's user, and a read-only root: seen from inside the other pod as well.
    let id = env.kubectl(&["exec", "-n", n, "probe", "--", "id", "-u"])?;
    assert_eq!(id.trim(), "65532", "the probe runs as its image's user");
    let touch = Command::new(&env.kubectl)
        .args(["exec", "-n", n, "probe", "--", "touch", "/x"])
        .output()?;
    assert!(!touch.status.success(), "the root file system is read-only");
    let (uid, root_ro) = container_process(env, n, "sb", "switchboard")?;
    assert_eq!(uid, 65532, "switchboard runs as the image's user");
    assert!(root_ro, "switchboard's root file system is read-only");
    Ok(())
}

/// The (real uid, root mounted read-only) of a container's main process, read on the host
/// through the CRI (crictl inspect gives its PID).
fn container_process(env: &Env, ns: &str, pod: &str, container: &str) -> Result<(u32, bool)> {
    let out = Command::new(&env.crictl)
        .args([
            "ps",
            "-q",
            "--name",
            container,
            "--label",
            &format!("io.kubernetes.pod.namespace={ns}"),
            "--label",
            &format!("io.kubernetes.pod.name={pod}"),
        ])
        .output()?;
    let id = ok(&out, "crictl ps")?
        .lines()
        .next()
        .context("no container")?
        .to_string();
    let out = Command::new(&env.crictl)
        .args([
            "inspect",
            "-o",
            "go-template",
            "--template",
            "{{.info.pid}}",
            &id,
        ])
        .output()?;
    let pid: u32 = ok(&out, "crictl inspect")?.trim().parse()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .context("no Uid line")?
        .parse()?;
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    let root_ro = mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(4) == Some(&"/"))
        .is_some_and(|f| f.get(5).is_some_and(|o| o.split(',').any(|x| x == "ro")));
    Ok((uid, root_ro))
}

// === the images ===

/// The files of an image's one layer (paths without the leading `./` or `/`).
fn layer_files(env: &Env, name: &str) -> Result<BTreeSet<String>> {
    let out = Command::new("tar")
        .arg("-tzf")
        .arg(layer_path(env, name)?)
        .output()?;
    Ok(ok(&out, "tar -tzf")?
        .lines()
        .map(|l| {
            l.trim_start_matches("./")
                .trim_start_matches('/')
                .to_string()
        })
        .filter(|l| !l.is_empty() && l != "." && !l.ends_with('/'))
        .collect())
}

/// The shared libraries `ldd` lists for `bin` (the loader too), without the leading `/`.
fn ldd(bin: &Path) -> Result<BTreeSet<String>> {
    let out = Command::new("ldd").arg(bin).output()?;
    Ok(ok(&out, "ldd")?
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(|w| w.trim_start_matches('/').to_string())
        .collect())
}

#[test]
fn images_validate_and_hold_only_what_they_need() -> Result<()> {
    let Some(env) = Env::get() else { return Ok(()) };
    let release = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release");
    for (name, bin) in [
        ("switchboard", "switchboard"),
        ("switchboard-operator", "switchboard-operator"),
    ] {
        let layout = env.images.join(name);
        let reference = format!("{}:{}", layout.display(), env.tag);
        let stat = Command::new("umoci")
            .args(["stat", "--image", &reference])
            .output()?;
        ok(&stat, &format!("umoci stat {reference}"))?;
        let inspect = Command::new("skopeo")
            .args(["inspect", "--config", &format!("oci:{reference}")])
            .output()?;
        let config: serde_json::Value = serde_json::from_str(&ok(&inspect, "skopeo inspect")?)?;
        assert_eq!(config["config"]["User"], "65532:65532", "{name}: user");
        assert_eq!(
            config["config"]["Entrypoint"][0],
            format!("/usr/bin/{bin}"),
            "{name}: entrypoint"
        );
        let labels = &config["config"]["Labels"];
        for key in [
            "org.opencontainers.image.source",
            "org.opencontainers.image.version",
            "org.opencontainers.image.revision",
        ] {
            assert!(labels[key].is_string(), "{name}: label {key}");
        }
        assert_eq!(labels["org.opencontainers.image.version"], env.tag.as_str());

        let mut expected = ldd(&release.join(bin))?;
        expected.extend([
            format!("usr/bin/{bin}"),
            "etc/passwd".into(),
            "etc/group".into(),
            "etc/ssl/certs/ca-certificates.crt".into(),
        ]);
        let files = layer_files(&env, name)?;
        assert_eq!(
            files, expected,
            "{name}: exactly the program, its libraries, CA bundle, passwd"
        );
        assert!(
            !files.iter().any(|f| f.ends_with("bin/sh")),
            "{name}: no shell"
        );
        let passwd = Command::new("tar")
            .args(["-xzOf"])
            .arg(layer_path(&env, name)?)
            .arg("etc/passwd")
            .output()?;
        assert!(
            ok(&passwd, "tar")?.contains(":65532:65532:"),
            "{name}: passwd entry for 65532"
        );
    }
    // The other images validate too, and are tagged as the CRD's defaults say.
    for (name, tag) in [
        ("redis", env.tag.as_str()),
        ("coturn", env.tag.as_str()),
        ("probe", env.tag.as_str()),
    ] {
        let reference = format!("{}:{tag}", env.images.join(name).display());
        ok(
            &Command::new("umoci")
                .args(["stat", "--image", &reference])
                .output()?,
            &format!("umoci stat {reference}"),
        )?;
    }
    if !env.images.join("pause").join("index.json").exists() {
        bail!("no pause image layout");
    }
    Ok(())
}

/// The blob of an image's one layer, read from its OCI layout (index -> manifest -> layer).
fn layer_path(env: &Env, name: &str) -> Result<PathBuf> {
    let layout = env.images.join(name);
    let blob = |digest: &str| -> Result<PathBuf> {
        let (alg, hex) = digest.split_once(':').context("digest")?;
        Ok(layout.join("blobs").join(alg).join(hex))
    };
    let json = |p: &Path| -> Result<serde_json::Value> {
        let bytes = std::fs::read(p).with_context(|| p.display().to_string())?;
        Ok(serde_json::from_slice(&bytes)?)
    };
    let index = json(&layout.join("index.json"))?;
    let manifest = json(&blob(
        index["manifests"][0]["digest"]
            .as_str()
            .context("manifest")?,
    )?)?;
    let layers = manifest["layers"].as_array().context("layers")?;
    ensure!(layers.len() == 1, "{name}: one layer, got {}", layers.len());
    blob(layers[0]["digest"].as_str().context("layer digest")?)
}
