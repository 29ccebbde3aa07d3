//! The real FCM sender (`push::fcm::Fcm`, OAuth through gcp_auth) against the local
//! HTTP/2 FCM + token endpoint, and FCM delivery through an embedded node.

use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_dataplane::devices::{Device, Platform};
use switchboard_dataplane::notifications::Notification;
use switchboard_dataplane::push::fcm::Fcm;
use switchboard_dataplane::push::{Outcome, deliver};

use crate::common::{
    SERVICE, fresh, mk_config, notif_user, notification, post, quiet_hours_now, states, wait_status,
};
use crate::fake_fcm::start_with_account;
use crate::support::start;

fn mk_device(token: &str) -> Device {
    Device {
        platform: Platform::Fcm,
        token: token.into(),
        app_id: None,
        environment: None,
        registered_at: 0,
    }
}

fn mk_n(id: &str) -> Notification {
    Notification::parse(notification("acme", id, &["alice"]).to_string().as_bytes()).unwrap()
}

#[tokio::test]
async fn each_documented_fcm_answer_leads_to_the_right_outcome() {
    let (fake, sa) = start_with_account().await;
    let fcm = Fcm::new(sa.to_str().unwrap(), &fake.base_url()).unwrap();
    let base = Duration::from_millis(20);

    let (o, n) = deliver(&fcm, &mk_n("n-ok"), &mk_device("ok-1"), 3, base).await;
    assert!(
        fake.seen.lock().unwrap().refused.is_empty(),
        "{:?}",
        fake.seen.lock().unwrap().refused
    );
    assert!(
        matches!(o, Outcome::Sent(Some(ref name)) if name.starts_with("projects/switchboard-test/messages/")),
        "{o:?}"
    );
    assert_eq!(n, 1);

    let (o, n) = deliver(
        &fcm,
        &mk_n("n-unreg"),
        &mk_device("unregistered-1"),
        3,
        base,
    )
    .await;
    assert!(
        matches!(o, Outcome::Prune { ref reason, .. } if reason.starts_with("UNREGISTERED")),
        "{o:?}"
    );
    assert_eq!(n, 1);

    let (o, n) = deliver(&fcm, &mk_n("n-inv"), &mk_device("invalid-1"), 3, base).await;
    assert!(
        matches!(o, Outcome::Failed(ref r) if r.starts_with("INVALID_ARGUMENT")),
        "{o:?}"
    );
    assert_eq!(n, 1, "permanent errors are not retried");

    let t0 = Instant::now();
    let (o, n) = deliver(&fcm, &mk_n("n-quota"), &mk_device("quota-1"), 3, base).await;
    assert!(matches!(o, Outcome::Sent(_)), "{o:?}");
    assert_eq!(n, 2);
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured ({:?})",
        t0.elapsed()
    );

    let (o, n) = deliver(&fcm, &mk_n("n-unav"), &mk_device("unavailable-1"), 3, base).await;
    assert!(matches!(o, Outcome::Sent(_)), "{o:?}");
    assert_eq!(n, 2);

    let (o, n) = deliver(&fcm, &mk_n("n-int"), &mk_device("internal-1"), 3, base).await;
    assert!(
        matches!(o, Outcome::Failed(ref r) if r.contains("INTERNAL") && r.contains("gave up after 3")),
        "{o:?}"
    );
    assert_eq!(n, 3, "attempts are bounded");
    assert_eq!(fake.statuses_for("internal-1"), [500, 500, 500]);
    assert_eq!(fake.statuses_for("quota-1"), [429, 200]);

    // A bare 404 (a wrong URL or project) and SENDER_ID_MISMATCH never prune a token.
    let (o, n) = deliver(&fcm, &mk_n("n-404"), &mk_device("notfound-1"), 3, base).await;
    assert!(
        matches!(o, Outcome::Failed(ref r) if r.contains("NOT_FOUND")),
        "{o:?}"
    );
    assert_eq!(n, 1);
    let (o, _) = deliver(&fcm, &mk_n("n-mm"), &mk_device("mismatch-1"), 3, base).await;
    assert!(
        matches!(o, Outcome::Failed(ref r) if r.starts_with("SENDER_ID_MISMATCH")),
        "{o:?}"
    );

    {
        let seen = fake.seen.lock().unwrap();
        assert!(
            seen.refused.is_empty(),
            "the fake refused: {:?}",
            seen.refused
        );
        assert_eq!(seen.issued.len(), 1, "one OAuth token, reused while valid");
        assert_eq!(seen.not_h2, 0, "every send over HTTP/2");
    }

    // FCM refuses the cached access token (401): one fresh token, and the send goes out
    // in the same attempt.
    fake.revoke_tokens();
    let (o, n) = deliver(&fcm, &mk_n("n-401"), &mk_device("ok-2"), 3, base).await;
    assert!(matches!(o, Outcome::Sent(_)), "{o:?}");
    assert_eq!(n, 1);
    assert_eq!(
        fake.seen.lock().unwrap().issued.len(),
        2,
        "the token was refreshed"
    );
    assert_eq!(fake.accepted().get("n-401"), Some(&1));
}

#[tokio::test]
async fn a_refused_fresh_token_is_a_permanent_failure_not_a_loop() {
    let (fake, sa) = start_with_account().await;
    let fcm = Fcm::new(sa.to_str().unwrap(), &fake.base_url()).unwrap();
    let base = Duration::from_millis(20);
    let (o, _) = deliver(&fcm, &mk_n("n-a"), &mk_device("ok-a"), 3, base).await;
    assert!(matches!(o, Outcome::Sent(_)));
    // Every token, the fresh one included, is refused from now on.
    fake.seen.lock().unwrap().refuse_all_tokens = true;
    let (o, n) = deliver(&fcm, &mk_n("n-b"), &mk_device("ok-b"), 3, base).await;
    assert!(
        matches!(o, Outcome::Failed(ref r) if r.contains("fresh OAuth token")),
        "{o:?}"
    );
    assert_eq!(n, 1, "not retried");
    assert_eq!(fake.seen.lock().unwrap().issued.len(), 2, "refreshed once");
}

#[tokio::test]
async fn concurrent_sends_share_the_connection() {
    let (fake, sa) = start_with_account().await;
    let fcm = std::sync::Arc::new(Fcm::new(sa.to_str().unwrap(), &fake.base_url()).unwrap());
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let fcm = fcm.clone();
            tokio::spawn(async move {
                deliver(
                    fcm.as_ref(),
                    &mk_n(&format!("c{i}")),
                    &mk_device(&format!("slow-{i}")),
                    1,
                    Duration::ZERO,
                )
                .await
            })
        })
        .collect();
    for t in tasks {
        assert!(matches!(t.await.unwrap().0, Outcome::Sent(_)));
    }
    eprintln!("200 concurrent FCM sends in {:?}", t0.elapsed());
    assert_eq!(fake.accepted().len(), 200);
    let seen = fake.seen.lock().unwrap();
    assert_eq!(seen.not_h2, 0);
    // Each send takes 100 ms at the fake; 200 of them overlapped.
    assert!(
        seen.max_in_flight > 1,
        "sends never overlapped (at most {} in flight)",
        seen.max_in_flight
    );
    eprintln!("at most {} sends in flight at once", seen.max_in_flight);
}

#[tokio::test]
async fn a_node_pushes_records_status_and_prunes_dead_tokens() {
    let (fake, sa) = start_with_account().await;
    let mut cfg = mk_config();
    cfg.notifications.fcm.service_account_file = Some(sa.to_str().unwrap().into());
    cfg.notifications.fcm.base_url = fake.base_url();
    let node = start(cfg).await;
    let t = fresh("t");
    let alice = notif_user(&node, &t, "alice").await;
    for token in ["ok-a1", "unregistered-a2", "invalid-a3"] {
        alice
            .ok(
                "notification:register-device",
                json!({"platform": "fcm", "token": token}),
            )
            .await;
    }
    // An iPhone too, but this node has no APNs key: recorded as failed, with the reason.
    alice
        .ok(
            "notification:register-device",
            json!({"platform": "apns", "token": "ab".repeat(32)}),
        )
        .await;
    let id = fresh("n");
    assert_eq!(
        post(&node, &notification(&t, &id, &["alice"]), Some(SERVICE))
            .await
            .0,
        202
    );
    let data = wait_status(&node, &t, &id, |d| d["progress"] == "done").await;
    assert_eq!(
        states(&data),
        ["apns:failed", "fcm:failed", "fcm:pruned", "fcm:sent"],
        "{data}"
    );
    let apns = data["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["channel"] == "apns")
        .unwrap();
    assert_eq!(apns["reason"], "apns is not configured on this worker");
    let failed = data["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["state"] == "failed" && r["channel"] == "fcm")
        .unwrap();
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .starts_with("INVALID_ARGUMENT"),
        "{failed}"
    );
    // The pruned token is gone: the next notification does not try it.
    let id2 = fresh("n");
    assert_eq!(
        post(&node, &notification(&t, &id2, &["alice"]), Some(SERVICE))
            .await
            .0,
        202
    );
    let data = wait_status(&node, &t, &id2, |d| d["progress"] == "done").await;
    assert_eq!(
        states(&data),
        ["apns:failed", "fcm:failed", "fcm:sent"],
        "{data}"
    );
    assert_eq!(fake.statuses_for("unregistered-a2"), [404]);
    // Quiet hours all day: in-app only, no push.
    alice
        .ok(
            "notification:set-preferences",
            json!({"quiet_hours": quiet_hours_now("UTC")}),
        )
        .await;
    let id3 = fresh("n");
    assert_eq!(
        post(&node, &notification(&t, &id3, &["alice"]), Some(SERVICE))
            .await
            .0,
        202
    );
    let data = wait_status(&node, &t, &id3, |d| d["progress"] == "done").await;
    assert_eq!(states(&data), Vec::<String>::new());
    // Urgent passes quiet hours.
    let id4 = fresh("n");
    let mut urgent = notification(&t, &id4, &["alice"]);
    urgent["priority"] = json!("urgent");
    assert_eq!(post(&node, &urgent, Some(SERVICE)).await.0, 202);
    let data = wait_status(&node, &t, &id4, |d| d["progress"] == "done").await;
    assert_eq!(states(&data), ["apns:failed", "fcm:failed", "fcm:sent"]);
    let metrics = node.metrics().await;
    assert!(
        metrics.contains(
            r#"switchboard_notification_deliveries_total{provider="fcm",outcome="pruned"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"switchboard_notification_deliveries_total{provider="fcm",outcome="sent"} 3"#
        ),
        "{metrics}"
    );
}
