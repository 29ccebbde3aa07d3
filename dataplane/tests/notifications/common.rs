//! Shared helpers of the notification tests.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_crds::config::DataplaneConfig;

use crate::support::{self, Client, Node};

pub use crate::support::SERVICE;

pub fn mk_config() -> DataplaneConfig {
    let mut c = support::mk_config();
    c.service_token = Some(SERVICE.into());
    c
}

/// A client on /notifications for `tenant`/`user`.
pub async fn notif_user(node: &Node, tenant: &str, user: &str) -> Client {
    let t = support::token(&support::claims(tenant, user));
    Client::connect_ns(node, "/notifications", Some(json!({ "token": t })), None)
        .await
        .expect("connect /notifications")
}

/// A fresh id (tenants, users, notifications) so runs never collide.
pub fn fresh(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

pub fn notification(tenant: &str, id: &str, users: &[&str]) -> Value {
    json!({"id": id, "tenant": tenant, "user_ids": users, "type": "message", "priority": "high",
           "title": "New message", "body": "Hello there", "data": {"room": "r1"}})
}

/// POST /api/v1/notifications with the service token; (status, body).
pub async fn post(node: &Node, body: &Value, bearer: Option<&str>) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .post(node.url("/api/v1/notifications"))
        .json(body);
    if let Some(b) = bearer {
        r = r.bearer_auth(b);
    }
    let resp = r.send().await.expect("service api");
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

/// GET the delivery status; (status, body).
pub async fn status(node: &Node, tenant: &str, id: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(node.url(&format!("/api/v1/tenants/{tenant}/notifications/{id}")))
        .bearer_auth(SERVICE)
        .send()
        .await
        .expect("service api");
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

/// Poll the status until `done` says so (or 10 s pass); returns the last body.
pub async fn wait_status(
    node: &Node,
    tenant: &str,
    id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = status(node, tenant, id).await;
        if code == 200 && done(&body["data"]) {
            return body["data"].clone();
        }
        if tokio::time::Instant::now() > deadline {
            panic!("status of {id} never matched: {code} {body}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The state of each delivery record, as `channel:state`.
pub fn states(data: &Value) -> Vec<String> {
    let mut v: Vec<String> = data["deliveries"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    format!(
                        "{}:{}",
                        r["channel"].as_str().unwrap_or(""),
                        r["state"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Kafka brokers from tests/env, or None (skip) outside CI.
pub fn kafka() -> Option<String> {
    switchboard_smoke::endpoint("SWITCHBOARD_TEST_KAFKA_BROKERS")
}

/// Quiet hours from an hour before to an hour after now on `tz`'s wall clock, so the
/// window holds "now" at any minute of the day (across midnight too: start > end).
pub fn quiet_hours_now(tz: &str) -> Value {
    let now = jiff::Timestamp::now().in_tz(tz).expect("time zone");
    let at = |d: jiff::Span| {
        let t = now.checked_add(d).unwrap();
        format!("{:02}:{:02}", t.hour(), t.minute())
    };
    json!({"start": at(jiff::Span::new().hours(-1)), "end": at(jiff::Span::new().hours(1)), "timezone": tz})
}
