//! The e-mail channel through the real SMTP server of tests/env (aiosmtpd, Maildir).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use crate::common::{
    SERVICE, fresh, mk_config, notif_user, notification, post, states, wait_status,
};
use crate::support::start;

fn smtp() -> Option<(String, PathBuf)> {
    let [url, maildir] = switchboard_smoke::endpoints([
        "SWITCHBOARD_TEST_SMTP_URL",
        "SWITCHBOARD_TEST_SMTP_MAILDIR",
    ])?;
    Some((url, PathBuf::from(maildir)))
}

/// Every message in the Maildir that mentions `needle`.
fn mails_with(dir: &std::path::Path, needle: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir.join("new")) else {
        return vec![];
    };
    rd.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter(|m| m.contains(needle))
        .collect()
}

async fn set_email(node: &crate::support::Node, tenant: &str, user: &str, email: &str) -> u16 {
    reqwest::Client::new()
        .put(node.url(&format!("/api/v1/tenants/{tenant}/users/{user}/email")))
        .bearer_auth(SERVICE)
        .json(&json!({ "email": email }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn email_goes_out_when_the_preferences_select_it_and_an_address_is_known() {
    let Some((url, maildir)) = smtp() else { return };
    let mut cfg = mk_config();
    cfg.notifications.email.smtp_url = Some(url);
    cfg.notifications.email.from = Some("Switchboard <noreply@switchboard.test>".into());
    let node = start(cfg).await;
    let t = fresh("t");
    let erin = notif_user(&node, &t, "erin").await;
    assert_eq!(set_email(&node, &t, "erin", "erin@example.test").await, 200);
    assert_eq!(set_email(&node, &t, "erin", "not an address").await, 400);

    // E-mail is off by default: nothing is sent.
    let id0 = fresh("n");
    assert_eq!(
        post(&node, &notification(&t, &id0, &["erin"]), Some(SERVICE))
            .await
            .0,
        202
    );
    let d = wait_status(&node, &t, &id0, |d| d["progress"] == "done").await;
    assert_eq!(states(&d), Vec::<String>::new());

    erin.ok(
        "notification:set-preferences",
        json!({"channels": {"email": true}}),
    )
    .await;
    let id = fresh("n");
    assert_eq!(
        post(&node, &notification(&t, &id, &["erin"]), Some(SERVICE))
            .await
            .0,
        202
    );
    let d = wait_status(&node, &t, &id, |d| d["progress"] == "done").await;
    assert_eq!(states(&d), ["email:sent"], "{d}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mail = loop {
        if let Some(m) = mails_with(&maildir, &id).pop() {
            break m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no mail for {id} in {}",
            maildir.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(mail.contains("To: erin@example.test"), "{mail}");
    assert!(mail.contains("Subject: New message"), "{mail}");
    assert!(mail.contains("Hello there"), "{mail}");
    assert!(mail.contains("noreply@switchboard.test"), "{mail}");
    assert!(mails_with(&maildir, &id0).is_empty());

    // An address from the token's `email` claim, without the registry.
    let mut claims = serde_json::to_value(crate::support::claims(&t, "fay")).unwrap();
    claims["email"] = json!("fay@example.test");
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(crate::support::SECRET.as_bytes()),
    )
    .unwrap();
    let fay = crate::support::Client::connect_ns(
        &node,
        "/notifications",
        Some(json!({ "token": token })),
        None,
    )
    .await
    .unwrap();
    fay.ok(
        "notification:set-preferences",
        json!({"channels": {"email": true}}),
    )
    .await;
    let for_fay = fresh("n");
    assert_eq!(
        post(&node, &notification(&t, &for_fay, &["fay"]), Some(SERVICE))
            .await
            .0,
        202
    );
    let d = wait_status(&node, &t, &for_fay, |d| d["progress"] == "done").await;
    // Never shown in full.
    assert_eq!(d["deliveries"][0]["target"], "f***@example.test", "{d}");
    assert_eq!(d["deliveries"][0]["state"], "sent", "{d}");

    // Quiet hours silence e-mail too; urgent passes.
    erin.ok(
        "notification:set-preferences",
        json!({"quiet_hours": crate::common::quiet_hours_now("Pacific/Auckland")}),
    )
    .await;
    let quiet = fresh("n");
    assert_eq!(
        post(&node, &notification(&t, &quiet, &["erin"]), Some(SERVICE))
            .await
            .0,
        202
    );
    let d = wait_status(&node, &t, &quiet, |d| d["progress"] == "done").await;
    assert_eq!(states(&d), Vec::<String>::new());
    let urgent = fresh("n");
    let mut n = notification(&t, &urgent, &["erin"]);
    n["priority"] = json!("urgent");
    assert_eq!(post(&node, &n, Some(SERVICE)).await.0, 202);
    let d = wait_status(&node, &t, &urgent, |d| d["progress"] == "done").await;
    assert_eq!(states(&d), ["email:sent"]);
}
