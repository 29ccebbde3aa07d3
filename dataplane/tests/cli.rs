//! The `switchboard` command line as a user meets it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use switchboard_crds::config::JwtConfig;
use switchboard_dataplane::auth::Verifier;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SWITCHBOARD_") {
            c.env_remove(k);
        }
    }
    c
}

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sb-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn config_check_names_every_bad_key_and_allowed_values() {
    let bad = write(
        "bad.yaml",
        "log_format: xml\njwt:\n  algorithm: none\n  secret: short\nchat:\n  typing_timeout: 1h\n",
    );
    let out = bin().args(["config", "check"]).arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("log_format (SWITCHBOARD_LOG_FORMAT)") && err.contains("text, json"),
        "{err}"
    );
    assert!(
        err.contains("jwt.algorithm (SWITCHBOARD_JWT_ALGORITHM)") && err.contains("HS256, HS384"),
        "{err}"
    );
    assert!(err.contains("chat.typing_timeout"), "{err}");

    let typo = write("typo.yaml", "listn: 0.0.0.0:1\n");
    let out = bin().args(["config", "check"]).arg(&typo).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listn"));

    let good = write(
        "good.toml",
        "listen = \"127.0.0.1:4000\"\n[jwt]\nsecret = \"0123456789abcdef0123456789abcdef\"\n",
    );
    let out = bin().args(["config", "check"]).arg(&good).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn config_default_shows_the_drain_settings_and_the_env_overrides_them() {
    let out = bin().args(["config", "default"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("server:\n  drain_window: 10s\n  reconnect_grace: 30s\n"),
        "{text}"
    );
    let file = write(
        "drain.yaml",
        "jwt:\n  secret: 0123456789abcdef0123456789abcdef\n",
    );
    let out = bin()
        .args(["config", "check"])
        .arg(&file)
        .env("SWITCHBOARD_DRAIN_WINDOW", "20m")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.drain_window (SWITCHBOARD_DRAIN_WINDOW): must be between 0s and 10m"),
        "{err}"
    );
}

#[test]
fn token_is_signed_with_the_configured_secret() {
    let secret = "0123456789abcdef0123456789abcdef";
    let out = bin()
        .env("SWITCHBOARD_JWT_SECRET", secret)
        .args([
            "token", "--sub", "alice", "--tenant", "acme", "--name", "Alice", "--ttl", "10m",
            "--sid", "s1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let v = Verifier::new(&JwtConfig {
        secret: Some(secret.into()),
        ..JwtConfig::default()
    })
    .unwrap();
    let id = v.verify(token.trim()).unwrap();
    assert_eq!(
        (
            id.tenant.as_str(),
            id.user_id.as_str(),
            id.name.as_str(),
            id.sid.as_deref()
        ),
        ("acme", "alice", "Alice", Some("s1"))
    );
    assert!(id.exp <= switchboard_dataplane::auth::now_secs() + 600);
    assert!(v.verify_service(token.trim()).is_err(), "a user's token");

    // A tenant-scoped service token: a service token only.
    let out = bin()
        .env("SWITCHBOARD_JWT_SECRET", secret)
        .args([
            "token", "--scope", "service", "--sub", "billing", "--tenant", "acme",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let service = String::from_utf8(out.stdout).unwrap();
    let id = v.verify_service(service.trim()).unwrap();
    assert_eq!(
        (id.tenant.as_str(), id.user_id.as_str()),
        ("acme", "billing")
    );
    assert!(
        v.verify(service.trim()).is_err(),
        "a service token is no user's"
    );

    let out = bin()
        .args(["token", "--sub", "alice", "--tenant", "acme"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SWITCHBOARD_JWT_SECRET"));
}

#[test]
fn serve_refuses_a_bad_setting_at_start_up_naming_it() {
    let out = bin()
        .env("SWITCHBOARD_LISTEN", "not-an-address")
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listen (SWITCHBOARD_LISTEN)"), "{err}");

    let out = bin()
        .env("SWITCHBOARD_REDIS_URL", "http://nope")
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("redis.url (SWITCHBOARD_REDIS_URL)"));

    // Admin and service tokens shorter than 32 bytes, named by key and variable, never
    // shown.
    let out = bin()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("SWITCHBOARD_ADMIN_TOKEN", "admin-short")
        .env("SWITCHBOARD_SERVICE_TOKEN", "service-short")
        .output()
        .unwrap();
    assert!(!out.status.success(), "started with short bearer tokens");
    let err = String::from_utf8_lossy(&out.stderr);
    for named in [
        "admin_token (SWITCHBOARD_ADMIN_TOKEN): must be at least 32 bytes",
        "service_token (SWITCHBOARD_SERVICE_TOKEN): must be at least 32 bytes",
    ] {
        assert!(err.contains(named), "{named} not in: {err}");
    }
    assert!(
        !err.contains("admin-short") && !err.contains("service-short"),
        "{err}"
    );

    // The internal listener's address is taken: named, and the node does not start.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = bin()
        .env("SWITCHBOARD_LISTEN", "127.0.0.1:0")
        .env(
            "SWITCHBOARD_INTERNAL_LISTEN",
            taken.local_addr().unwrap().to_string(),
        )
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.internal_listen (SWITCHBOARD_INTERNAL_LISTEN): cannot bind"),
        "{err}"
    );
}

#[test]
fn zero_config_serve_prints_a_working_token() {
    use std::io::{BufRead, BufReader};
    let mut child = bin()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut secret = None;
    let mut token = None;
    for _ in 0..10 {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(rest) = line.split("SWITCHBOARD_JWT_SECRET=").nth(1) {
            secret = rest.split_whitespace().next().map(str::to_owned);
        }
        if let Some(rest) = line.strip_prefix("Example token (alice@acme, 1h): ") {
            token = Some(rest.trim().to_owned());
        }
        if secret.is_some() && token.is_some() {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let (secret, token) = (
        secret.expect("dev secret printed"),
        token.expect("token printed"),
    );
    let v = Verifier::new(&JwtConfig {
        secret: Some(secret),
        ..JwtConfig::default()
    })
    .unwrap();
    assert_eq!(v.verify(&token).unwrap().user_id, "alice");
}

#[test]
fn serve_refuses_to_start_when_the_call_history_database_does_not_answer() {
    // Nothing listens on port 1: start-up fails and names the key, it does not hang.
    let started = std::time::Instant::now();
    let out = bin()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("SWITCHBOARD_JWT_SECRET", "0123456789abcdef0123456789abcdef")
        .env("SWITCHBOARD_MONGODB_URI", "mongodb://127.0.0.1:1/")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("calls.mongodb_uri (SWITCHBOARD_MONGODB_URI)"),
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn shared_mode_without_a_jwt_key_refuses_to_start_naming_the_keys() {
    // Nothing needs to listen at the Redis URL: the node must stop before connecting.
    let out = bin()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("SWITCHBOARD_REDIS_URL", "redis://127.0.0.1:1")
        .output()
        .unwrap();
    assert!(!out.status.success(), "shared mode started without a key");
    let err = String::from_utf8_lossy(&out.stderr);
    for name in [
        "jwt.secret",
        "SWITCHBOARD_JWT_SECRET",
        "jwt.public_key_file",
        "SWITCHBOARD_JWT_PUBLIC_KEY_FILE",
    ] {
        assert!(err.contains(name), "{name} not named: {err}");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("SWITCHBOARD_JWT_SECRET="),
        "a dev secret was generated: {stdout}"
    );

    // `config check` applies the same rule.
    let file = write("shared.yaml", "redis:\n  url: redis://127.0.0.1:1\n");
    let out = bin().args(["config", "check"]).arg(&file).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SWITCHBOARD_JWT_PUBLIC_KEY_FILE"));
}
