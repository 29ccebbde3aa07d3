//! Tenant-scoped service tokens: a service JWT (`scope: "service"`) acts on every
//! service route in its own tenant only (403 `forbidden` elsewhere); the global
//! `service_token` keeps working for every tenant; the delivery-status API never shows a
//! push token or an e-mail address in full.

use serde_json::{Value, json};

use crate::common::{SERVICE, fresh, mk_config, notif_user, notification, wait_status};
use crate::support::{self, Client, ConnectError, Node, service_token, start};

/// Any request to the node; (status, JSON body).
async fn call(node: &Node, method: &str, path: &str, bearer: &str, body: Value) -> (u16, Value) {
    let http = reqwest::Client::new();
    let url = node.url(path);
    let r = match method {
        "GET" => http.get(url),
        "PUT" => http.put(url).json(&body),
        _ => http.post(url).json(&body),
    };
    let resp = r.bearer_auth(bearer).send().await.expect("http");
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

/// Every service route, acting in `tenant` (the notification id `id` for the status).
fn service_routes(tenant: &str, id: &str) -> Vec<(&'static str, String, Value)> {
    vec![
        (
            "POST",
            "/api/v1/notifications".into(),
            notification(tenant, &fresh("n"), &["alice"]),
        ),
        (
            "GET",
            format!("/api/v1/tenants/{tenant}/notifications/{id}"),
            Value::Null,
        ),
        (
            "PUT",
            format!("/api/v1/tenants/{tenant}/users/alice/email"),
            json!({"email": "alice@example.test"}),
        ),
    ]
}

#[tokio::test]
async fn a_tenant_scoped_service_token_acts_in_its_tenant_only() {
    let node = start(mk_config()).await;
    let (acme, evil) = (fresh("acme"), fresh("evil"));
    let (scoped, jti) = service_token(&acme);
    // A notification of each tenant, through the global token.
    let (acme_n, evil_n) = (fresh("n"), fresh("n"));
    for (t, id) in [(&acme, &acme_n), (&evil, &evil_n)] {
        let (code, body) = call(
            &node,
            "POST",
            "/api/v1/notifications",
            SERVICE,
            notification(t, id, &["alice"]),
        )
        .await;
        assert_eq!(code, 202, "global token in {t}: {body}");
    }

    for (method, path, body) in service_routes(&acme, &acme_n) {
        let (code, resp) = call(&node, method, &path, &scoped, body).await;
        assert!(
            [200, 202].contains(&code) && resp["ok"] == true,
            "{method} {path} in its own tenant: {code} {resp}"
        );
    }
    for (method, path, body) in service_routes(&evil, &evil_n) {
        let (code, resp) = call(&node, method, &path, &scoped, body).await;
        assert_eq!(code, 403, "{method} {path} in another tenant: {resp}");
        assert_eq!(resp["ok"], false, "{resp}");
        assert_eq!(resp["error"]["code"], "forbidden", "{resp}");
        assert!(resp["error"]["message"].is_string(), "{resp}");
        assert!(resp.get("data").is_none(), "{resp}");
    }
    // Another tenant's notification id through its own tenant's path: unknown there.
    let (code, _) = call(
        &node,
        "GET",
        &format!("/api/v1/tenants/{acme}/notifications/{evil_n}"),
        &scoped,
        Value::Null,
    )
    .await;
    assert_eq!(code, 404);
    // The global token still acts everywhere.
    for (method, path, body) in service_routes(&evil, &evil_n) {
        let (code, resp) = call(&node, method, &path, SERVICE, body).await;
        assert!([200, 202].contains(&code), "global {method} {path}: {resp}");
    }

    // Not a key to anything else: the admin API, a user connection.
    let admin = [
        (
            "POST",
            "/admin/v1/revocations".to_owned(),
            json!({"tenant": acme, "user_id": "alice"}),
        ),
        (
            "GET",
            format!("/admin/v1/tenants/{acme}/presence/metrics"),
            Value::Null,
        ),
        (
            "GET",
            format!("/admin/v1/tenants/{acme}/calls/quality"),
            Value::Null,
        ),
    ];
    for (method, path, body) in admin {
        let (code, resp) = call(&node, method, &path, &scoped, body).await;
        assert_eq!(code, 401, "{method} {path} with a service token: {resp}");
    }
    let Err(ConnectError(e)) = Client::connect_ns(
        &node,
        "/notifications",
        Some(json!({ "token": scoped })),
        None,
    )
    .await
    else {
        panic!("a service token connected as a user");
    };
    assert!(e.starts_with("unauthorized"), "{e}");

    // A user's token is no service token; a revoked service token stops working.
    let user = support::token(&support::claims(&acme, "alice"));
    for (method, path, body) in service_routes(&acme, &acme_n) {
        let (code, resp) = call(&node, method, &path, &user, body).await;
        assert_eq!(code, 401, "{method} {path} with a user's token: {resp}");
        assert_eq!(resp["error"]["code"], "unauthorized");
    }
    let revoked = support::revoke(&node, json!({"tenant": acme, "jti": jti})).await;
    assert_eq!(revoked.status(), 200);
    for (method, path, body) in service_routes(&acme, &acme_n) {
        let (code, resp) = call(&node, method, &path, &scoped, body).await;
        assert_eq!(code, 401, "{method} {path} after revocation: {resp}");
    }
}

#[tokio::test]
async fn service_tokens_work_without_a_global_token() {
    let node = start(support::mk_config()).await;
    let t = fresh("t");
    let (scoped, _) = service_token(&t);
    let n = notification(&t, &fresh("n"), &["alice"]);
    assert_eq!(
        call(&node, "POST", "/api/v1/notifications", &scoped, n.clone())
            .await
            .0,
        202
    );
    let (code, resp) = call(&node, "POST", "/api/v1/notifications", SERVICE, n).await;
    assert_eq!(
        (code, &resp["error"]["code"]),
        (401, &json!("unauthorized"))
    );
}

/// The status API shows which devices a notification went to without giving their
/// push tokens away.
#[tokio::test]
async fn the_delivery_status_never_shows_a_push_token_in_full() {
    let node = start(mk_config()).await;
    let t = fresh("t");
    let push_token = format!("fcm-token-{}", uuid::Uuid::new_v4().simple());
    let alice = notif_user(&node, &t, "alice").await;
    alice
        .ok(
            "notification:register-device",
            json!({"platform": "fcm", "token": push_token}),
        )
        .await;
    alice.close().await;
    let (scoped, _) = service_token(&t);
    let id = fresh("n");
    let (code, _) = call(
        &node,
        "POST",
        "/api/v1/notifications",
        &scoped,
        notification(&t, &id, &["alice"]),
    )
    .await;
    assert_eq!(code, 202);
    let done = wait_status(&node, &t, &id, |d| {
        d["progress"] == "done" && d["deliveries"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let fcm = done["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["channel"] == "fcm")
        .unwrap_or_else(|| panic!("no fcm record: {done}"));
    let tail = &push_token[push_token.len() - 4..];
    assert_eq!(fcm["target"], format!("***{tail}"), "{done}");
    assert!(!done.to_string().contains(&push_token), "{done}");
}
