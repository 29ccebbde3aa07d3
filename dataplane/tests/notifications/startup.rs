//! Start-up refusals that name the config key, and the APNs client built from a real
//! .p8 key (as far as a2 can run here: it cannot be pointed at a local endpoint).

use std::process::Command;

use switchboard_dataplane::push::apns::A2;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SWITCHBOARD_") {
            c.env_remove(k);
        }
    }
    c
}

fn tmp(name: &str, body: &[u8]) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("sb-{}-{name}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn the_worker_names_what_it_is_missing() {
    let out = bin().arg("worker").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("redis.url (SWITCHBOARD_REDIS_URL)"));
    let out = bin()
        .arg("worker")
        .env("SWITCHBOARD_REDIS_URL", "redis://127.0.0.1:1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("notifications.kafka.brokers (SWITCHBOARD_KAFKA_BROKERS)")
    );
}

#[test]
fn kafka_without_redis_is_refused_by_serve_and_worker() {
    for cmd in [&["serve", "--listen", "127.0.0.1:0"][..], &["worker"][..]] {
        let out = bin()
            .args(cmd)
            .env("SWITCHBOARD_KAFKA_BROKERS", "127.0.0.1:9092")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{cmd:?} started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("notifications.kafka.brokers") && err.contains("redis.url"),
            "{cmd:?}: {err}"
        );
    }
}

#[test]
fn a_bad_service_account_or_apns_key_stops_the_node_naming_the_key() {
    let not_json = tmp("sa.json", b"{ nope");
    let out = bin()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("SWITCHBOARD_FCM_SERVICE_ACCOUNT_FILE", &not_json)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("notifications.fcm.service_account_file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let not_key = tmp(
        "key.p8",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    let out = bin()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("SWITCHBOARD_APNS_KEY_FILE", &not_key)
        .env("SWITCHBOARD_APNS_KEY_ID", "ABC123DEFG")
        .env("SWITCHBOARD_APNS_TEAM_ID", "DEF123GHIJ")
        .env("SWITCHBOARD_APNS_TOPIC", "com.example.app")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("notifications.apns.key_file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a2_accepts_a_real_p8_key() {
    // An App Store Connect .p8 is a PKCS#8 P-256 key; make one with openssl.
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .output()
        .expect("openssl");
    assert!(out.status.success());
    let key = tmp("AuthKey.p8", &out.stdout);
    A2::new(key.to_str().unwrap(), "ABC123DEFG", "DEF123GHIJ")
        .expect("a2 signs with a P-256 .p8 key");
    let rsa = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
        ])
        .output()
        .unwrap();
    let wrong = tmp("rsa.p8", &rsa.stdout);
    let e = A2::new(wrong.to_str().unwrap(), "ABC123DEFG", "DEF123GHIJ")
        .err()
        .expect("an RSA key is not an APNs key");
    assert!(e.contains("notifications.apns.key_file"), "{e}");
}
