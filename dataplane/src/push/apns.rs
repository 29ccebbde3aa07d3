//! APNs with token auth (.p8 key) through the `a2` crate, behind [`Transport`] so every
//! decision above it is tested without Apple: which request a notification becomes
//! ([`request`]) and what an answer means ([`classify`]).
//!
//! `a2` 0.10 always talks to Apple's two fixed hosts, so the [`A2`] transport itself
//! (HTTP/2 to api.push.apple.com / api.sandbox.push.apple.com, JWT signing) cannot run
//! against a local endpoint; tests check the payload `a2` builds from a [`Request`]
//! and drive [`Apns`] through a recording transport.
//!
//! Answers (Apple's documented reasons): 410 `Unregistered`/`ExpiredToken` prunes the
//! token unless the device registered again after the reported timestamp;
//! 400 `BadDeviceToken` and `DeviceTokenNotForTopic` prune; 429 and 5xx back off;
//! 403 `ExpiredProviderToken` is retried (a2 signs a fresh token); other 4xx are permanent.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::{Attempt, Provider};
use crate::devices::{Device, Environment};
use crate::notifications::Notification;
use crate::preferences::Priority;

/// How long APNs keeps trying to reach an offline device.
pub const EXPIRATION_SECS: u64 = 24 * 3600;
/// APNs' limit on `apns-collapse-id`.
pub const MAX_COLLAPSE_ID_BYTES: usize = 64;

/// One APNs send, in Switchboard's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub token: String,
    pub sandbox: bool,
    pub topic: String,
    pub title: String,
    pub body: String,
    pub data: Map<String, Value>,
    /// `apns-priority`: 10 sends now, 5 lets the device save power.
    pub priority: u8,
    /// `apns-push-type`: `alert` (shown to the user).
    pub push_type: &'static str,
    /// `apns-expiration`, seconds since the epoch.
    pub expiration: u64,
    /// `apns-collapse-id`, from the notification's `data.collapse_id`.
    pub collapse_id: Option<String>,
}

/// What APNs answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub apns_id: Option<String>,
    pub reason: Option<String>,
    /// For 410: when the token stopped being valid, ms since the epoch.
    pub timestamp_ms: Option<i64>,
}

#[async_trait]
pub trait Transport: Send + Sync {
    /// Send; `Err` is a network-level failure (no answer).
    async fn send(&self, r: Request) -> Result<Reply, String>;
}

/// `apns-collapse-id`: the notification's `data.collapse_id`, else its id (so a repeated
/// send shows once); none when longer than APNs allows.
pub fn collapse_id(n: &Notification) -> Option<String> {
    let c = n
        .data
        .get("collapse_id")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .unwrap_or(&n.id);
    (c.len() <= MAX_COLLAPSE_ID_BYTES).then(|| c.to_owned())
}

/// The request for one device. `created_at` is the notification's acceptance time (ms).
pub fn request(
    n: &Notification,
    d: &Device,
    topic: &str,
    default_sandbox: bool,
    created_at: i64,
) -> Request {
    let collapse_id = collapse_id(n);
    let mut data = n.data.clone();
    data.insert("notification_id".into(), Value::String(n.id.clone()));
    Request {
        token: d.token.clone(),
        sandbox: d
            .environment
            .map_or(default_sandbox, |e| e == Environment::Sandbox),
        topic: d.app_id.clone().unwrap_or_else(|| topic.to_owned()),
        title: n.title.clone(),
        body: n.body.clone(),
        data,
        priority: if n.priority >= Priority::High { 10 } else { 5 },
        push_type: "alert",
        expiration: u64::try_from(created_at / 1000).unwrap_or(0) + EXPIRATION_SECS,
        collapse_id,
    }
}

/// What an APNs answer means.
pub fn classify(r: &Reply) -> Attempt {
    let reason = r.reason.clone().unwrap_or_default();
    let text = format!("{reason} ({})", r.status);
    match (r.status, reason.as_str()) {
        (200, _) => Attempt::Sent(r.apns_id.clone()),
        (410, _) => Attempt::Prune {
            reason: text,
            unless_after: r.timestamp_ms,
        },
        (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => Attempt::Prune {
            reason: text,
            unless_after: None,
        },
        (403, "ExpiredProviderToken") => Attempt::Retry {
            reason: text,
            after: None,
        },
        (429, _) | (500..=599, _) => Attempt::Retry {
            reason: text,
            after: None,
        },
        _ => Attempt::Permanent(text),
    }
}

pub struct Apns {
    transport: Arc<dyn Transport>,
    topic: String,
    sandbox: bool,
    /// Topics a device's `app_id` may name (`notifications.apns.allowed_topics`, or the
    /// configured topic alone): the key signs for every app of the team.
    allowed: Vec<String>,
}

impl Apns {
    pub fn new(
        transport: Arc<dyn Transport>,
        topic: String,
        sandbox: bool,
        allowed_topics: &[String],
    ) -> Self {
        let allowed = if allowed_topics.is_empty() {
            vec![topic.clone()]
        } else {
            allowed_topics.to_vec()
        };
        Self {
            transport,
            topic,
            sandbox,
            allowed,
        }
    }

    /// Is this device's topic one the configuration allows?
    pub fn allows(&self, d: &Device) -> bool {
        d.app_id.as_ref().is_none_or(|a| self.allowed.contains(a))
    }
}

#[async_trait]
impl Provider for Apns {
    fn name(&self) -> &'static str {
        "apns"
    }

    async fn attempt(&self, n: &Notification, d: &Device) -> Attempt {
        if !self.allows(d) {
            return Attempt::Permanent(format!(
                "app_id {:?} is not in notifications.apns.allowed_topics",
                d.app_id.as_deref().unwrap_or_default()
            ));
        }
        let created = n.created_at.unwrap_or_else(crate::app::now_ms);
        match self
            .transport
            .send(request(n, d, &self.topic, self.sandbox, created))
            .await
        {
            Ok(reply) => classify(&reply),
            Err(e) => Attempt::Retry {
                reason: format!("apns request: {e}"),
                after: None,
            },
        }
    }
}

// === impl A2 ===

/// The real transport: a2 clients for production and sandbox, signing with the .p8 key.
pub struct A2 {
    production: a2::Client,
    sandbox: a2::Client,
}

impl A2 {
    pub fn new(key_file: &str, key_id: &str, team_id: &str) -> Result<Self, String> {
        let pem = std::fs::read(key_file)
            .map_err(|e| format!("notifications.apns.key_file: cannot read {key_file:?}: {e}"))?;
        let client = |endpoint| {
            a2::Client::token(
                &mut pem.as_slice(),
                key_id,
                team_id,
                a2::ClientConfig::new(endpoint),
            )
            .map_err(|e| format!("notifications.apns.key_file: not a usable .p8 key: {e}"))
        };
        Ok(Self {
            production: client(a2::Endpoint::Production)?,
            sandbox: client(a2::Endpoint::Sandbox)?,
        })
    }
}

/// The payload a2 sends for a request (its JSON body; the headers come from the options).
pub fn a2_payload(r: &Request) -> Result<a2::request::payload::Payload<'_>, String> {
    use a2::NotificationBuilder;
    let builder = a2::DefaultNotificationBuilder::new()
        .set_title(&r.title)
        .set_body(&r.body)
        .set_sound("default");
    let options = a2::NotificationOptions {
        apns_id: None,
        apns_push_type: Some(a2::PushType::Alert),
        apns_expiration: Some(r.expiration),
        apns_priority: Some(if r.priority == 10 {
            a2::Priority::High
        } else {
            a2::Priority::Normal
        }),
        apns_topic: Some(&r.topic),
        apns_collapse_id: r
            .collapse_id
            .as_deref()
            .and_then(|c| a2::CollapseId::new(c).ok()),
    };
    let mut payload = builder.build(&r.token, options);
    payload
        .add_custom_data("data", &r.data)
        .map_err(|e| format!("apns payload: {e}"))?;
    Ok(payload)
}

#[async_trait]
impl Transport for A2 {
    async fn send(&self, r: Request) -> Result<Reply, String> {
        let client = if r.sandbox {
            &self.sandbox
        } else {
            &self.production
        };
        let payload = a2_payload(&r)?;
        match client.send(payload).await {
            Ok(resp) => Ok(Reply {
                status: resp.code,
                apns_id: resp.apns_id,
                reason: None,
                timestamp_ms: None,
            }),
            Err(a2::Error::ResponseError(resp)) => Ok(Reply {
                status: resp.code,
                apns_id: resp.apns_id,
                reason: resp.error.as_ref().map(|e| format!("{:?}", e.reason)),
                timestamp_ms: resp
                    .error
                    .as_ref()
                    .and_then(|e| e.timestamp)
                    .and_then(|t| i64::try_from(t).ok()),
            }),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use crate::devices::Platform;
    use crate::push::{Outcome, deliver};

    fn mk_n(priority: &str) -> Notification {
        Notification::parse(
            json!({"id": "n1", "tenant": "t", "user_ids": ["u"], "type": "message", "priority": priority,
                   "title": "Hello", "body": "World", "data": {"collapse_id": "room-7", "room": "r7"}})
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    }

    fn mk_d(env: Option<Environment>) -> Device {
        Device {
            platform: Platform::Apns,
            token: "ab".repeat(32),
            app_id: None,
            environment: env,
            registered_at: 1_000,
        }
    }

    fn reply(status: u16, reason: Option<&str>, ts: Option<i64>) -> Reply {
        Reply {
            status,
            apns_id: Some("id-1".into()),
            reason: reason.map(str::to_owned),
            timestamp_ms: ts,
        }
    }

    #[test]
    fn requests_carry_priority_push_type_expiration_collapse_id_and_environment() {
        let r = request(
            &mk_n("urgent"),
            &mk_d(None),
            "com.ex.app",
            false,
            1_700_000_000_000,
        );
        assert_eq!(
            (r.priority, r.push_type, r.expiration),
            (10, "alert", 1_700_000_000 + EXPIRATION_SECS)
        );
        assert_eq!(r.collapse_id.as_deref(), Some("room-7"));
        assert_eq!(r.topic, "com.ex.app");
        assert!(!r.sandbox);
        let r = request(
            &mk_n("normal"),
            &mk_d(Some(Environment::Sandbox)),
            "com.ex.app",
            false,
            0,
        );
        assert_eq!(r.priority, 5);
        assert!(r.sandbox);
        let mut long = mk_n("low");
        long.data
            .insert("collapse_id".into(), json!("x".repeat(65)));
        assert_eq!(request(&long, &mk_d(None), "t", true, 0).collapse_id, None);
    }

    #[test]
    fn a2_builds_the_payload_from_the_request() {
        use a2::request::payload::PayloadLike;
        let r = request(&mk_n("high"), &mk_d(None), "com.ex.app", false, 0);
        let p = a2_payload(&r).unwrap();
        let body: Value = serde_json::from_str(&p.to_json_string().unwrap()).unwrap();
        assert_eq!(
            body["aps"]["alert"],
            json!({"title": "Hello", "body": "World"})
        );
        assert_eq!(body["aps"]["sound"], "default");
        assert_eq!(body["data"]["room"], "r7");
        assert_eq!(body["data"]["notification_id"], "n1");
        assert_eq!(p.device_token, "ab".repeat(32));
        assert_eq!(p.options.apns_topic, Some("com.ex.app"));
        assert_eq!(p.options.apns_expiration, Some(EXPIRATION_SECS));
        assert!(matches!(p.options.apns_priority, Some(a2::Priority::High)));
        assert!(matches!(
            p.options.apns_push_type,
            Some(a2::PushType::Alert)
        ));
        assert!(p.options.apns_collapse_id.is_some());
    }

    #[test]
    fn each_documented_answer_is_classified() {
        assert_eq!(
            classify(&reply(200, None, None)),
            Attempt::Sent(Some("id-1".into()))
        );
        assert_eq!(
            classify(&reply(410, Some("Unregistered"), Some(5_000))),
            Attempt::Prune {
                reason: "Unregistered (410)".into(),
                unless_after: Some(5_000)
            }
        );
        assert!(matches!(
            classify(&reply(400, Some("BadDeviceToken"), None)),
            Attempt::Prune {
                unless_after: None,
                ..
            }
        ));
        assert!(matches!(
            classify(&reply(400, Some("DeviceTokenNotForTopic"), None)),
            Attempt::Prune { .. }
        ));
        assert!(matches!(
            classify(&reply(400, Some("PayloadTooLarge"), None)),
            Attempt::Permanent(_)
        ));
        assert!(matches!(
            classify(&reply(429, Some("TooManyRequests"), None)),
            Attempt::Retry { .. }
        ));
        assert!(matches!(
            classify(&reply(500, Some("InternalServerError"), None)),
            Attempt::Retry { .. }
        ));
        assert!(matches!(
            classify(&reply(503, Some("ServiceUnavailable"), None)),
            Attempt::Retry { .. }
        ));
        assert!(matches!(
            classify(&reply(403, Some("ExpiredProviderToken"), None)),
            Attempt::Retry { .. }
        ));
        assert!(matches!(
            classify(&reply(403, Some("InvalidProviderToken"), None)),
            Attempt::Permanent(_)
        ));
    }

    /// A transport that answers from a script and records what it was asked.
    struct Scripted {
        replies: Mutex<Vec<Result<Reply, String>>>,
        seen: Mutex<Vec<Request>>,
    }

    #[async_trait]
    impl Transport for Scripted {
        async fn send(&self, r: Request) -> Result<Reply, String> {
            self.seen.lock().unwrap().push(r);
            self.replies.lock().unwrap().remove(0)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_provider_retries_429_and_5xx_then_reports_a_410_prune_with_its_time() {
        let t = Arc::new(Scripted {
            replies: Mutex::new(vec![
                Ok(reply(429, Some("TooManyRequests"), None)),
                Err("connection reset".into()),
                Ok(reply(503, Some("ServiceUnavailable"), None)),
                Ok(reply(410, Some("Unregistered"), Some(2_000))),
            ]),
            seen: Mutex::default(),
        });
        let apns = Apns::new(t.clone(), "com.ex.app".into(), false, &[]);
        let (o, n) = deliver(
            &apns,
            &mk_n("high"),
            &mk_d(None),
            5,
            std::time::Duration::from_millis(10),
        )
        .await;
        assert_eq!(n, 4);
        assert_eq!(
            o,
            Outcome::Prune {
                reason: "Unregistered (410)".into(),
                unless_after: Some(2_000)
            }
        );
        assert_eq!(t.seen.lock().unwrap().len(), 4);
    }

    #[tokio::test]
    async fn a_topic_outside_the_allowlist_is_never_sent() {
        let t = Arc::new(Scripted {
            replies: Mutex::new(vec![Ok(reply(200, None, None))]),
            seen: Mutex::default(),
        });
        let apns = Apns::new(t.clone(), "com.ex.app".into(), false, &[]);
        let mut d = mk_d(None);
        d.app_id = Some("com.other.team-app".into());
        let a = apns.attempt(&mk_n("high"), &d).await;
        assert!(
            matches!(a, Attempt::Permanent(ref r) if r.contains("allowed_topics")),
            "{a:?}"
        );
        assert!(
            t.seen.lock().unwrap().is_empty(),
            "sent to a topic not allowed"
        );
        d.app_id = Some("com.ex.app".into());
        assert!(matches!(
            apns.attempt(&mk_n("high"), &d).await,
            Attempt::Sent(_)
        ));
        let listed = Apns::new(
            t.clone(),
            "com.ex.app".into(),
            false,
            &["com.ex.app".into(), "com.ex.app.beta".into()],
        );
        d.app_id = Some("com.ex.app.beta".into());
        assert!(listed.allows(&d));
    }
}
