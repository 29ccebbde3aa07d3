//! `server.internal_listen`: the internal APIs (`/metrics`, `/admin/*`, `/api/*`) on a
//! port of their own, and the public port serving only Socket.IO and the probes.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

const SERVICE: &str = "service-token-for-the-internal-listener-test";

#[tokio::test]
async fn the_internal_apis_answer_on_their_own_port_only() {
    let mut cfg = mk_config();
    cfg.service_token = Some(SERVICE.into());
    let (public, internal) = start_split(cfg).await;
    let http = reqwest::Client::new();
    let status = |r: reqwest::Response| r.status().as_u16();

    // Both ports answer the probes (the kubelet may use either).
    for node in [&public, &internal] {
        for probe in ["/healthz", "/readyz"] {
            let r = http.get(node.url(probe)).send().await.unwrap();
            assert_eq!(status(r), 200, "{probe} on {}", node.url(""));
        }
    }

    // The public port: none of the internal routes, with or without their tokens.
    let note = json!({"id": "n-1", "tenant": "acme", "user_ids": ["alice"], "type": "mention",
        "priority": "normal", "title": "t", "body": "b"});
    let on_public = [
        http.get(public.url("/metrics")),
        http.post(public.url("/admin/v1/revocations"))
            .bearer_auth(ADMIN)
            .json(&json!({"tenant": "acme", "user_id": "alice"})),
        http.get(public.url("/admin/v1/tenants/acme/presence/metrics"))
            .bearer_auth(ADMIN),
        http.post(public.url("/api/v1/notifications"))
            .bearer_auth(SERVICE)
            .json(&note),
        http.get(public.url("/api/v1/tenants/acme/notifications/n-1"))
            .bearer_auth(SERVICE),
    ];
    for req in on_public {
        let r = req.send().await.unwrap();
        let url = r.url().to_string();
        assert_eq!(status(r), 404, "{url} is served on the public port");
    }

    // Socket.IO is on the public port, not on the internal one.
    let alice = user(&public, "acme", "alice").await;
    let r = http
        .get(internal.url("/socket.io/?EIO=4&transport=polling"))
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), 404, "Engine.IO on the internal port");

    // The internal port: metrics, the service API, and an admin revocation that kicks the
    // public port's socket.
    let metrics = http.get(internal.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics
            .text()
            .await
            .unwrap()
            .contains("switchboard_connections")
    );
    let r = http
        .post(internal.url("/api/v1/notifications"))
        .bearer_auth(SERVICE)
        .json(&note)
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), 202);
    assert_eq!(
        revoke(&internal, json!({"tenant": "acme", "user_id": "alice"}))
            .await
            .status(),
        200
    );
    assert!(alice.wait_closed(Duration::from_secs(1)).await, "kicked");
}
