//! Arbitrary HTTP requests to both listeners of a node with `server.internal_listen`:
//! every route of `protocol::ROUTES` and paths next to them, with any method, query
//! string, headers (tokens of every kind, garbage) and body (valid-looking JSON, random
//! JSON, bytes, past the body limit). Every answer comes within the timeout, is never a
//! 5xx, and every error is the typed JSON envelope with a code that blames the request.
//! Seeded (`SWITCHBOARD_FUZZ_SEED`, printed at the start); `SWITCHBOARD_FUZZ_CASES`
//! scales it with the frame fuzzer (a fiftieth of its cases, at least 2 000).

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::protocol::ROUTES;
use crate::support::*;

struct Gen {
    rng: StdRng,
    tenant: String,
    scoped_own: String,
    scoped_other: String,
}

impl Gen {
    fn one<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.rng.random_range(0..from.len())]
    }

    fn segment(&mut self) -> String {
        match self.rng.random_range(0..8) {
            0 => self.tenant.clone(),
            1 => "alice".into(),
            2 => "..".into(),
            3 => "%2e%2e%2fadmin".into(),
            4 => "x".repeat(self.rng.random_range(100..3000)),
            5 => "%ff%fe%00".into(),
            6 => "%F0%9F%91%8D".into(),
            _ => "n-1".into(),
        }
    }

    fn path(&mut self) -> String {
        let (_, route) = ROUTES[self.rng.random_range(0..ROUTES.len())];
        let mut path: String = route
            .split('/')
            .map(|part| {
                if part.starts_with('{') {
                    self.segment()
                } else {
                    part.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        match self.rng.random_range(0..10) {
            0 => path.push('/'),
            1 => path.push_str("/extra"),
            2 => path = path.replace("/v1/", "/v2/"),
            3 => path = path.to_uppercase(),
            _ => {}
        }
        if self.rng.random_ratio(1, 3) {
            let q = match self.rng.random_range(0..4) {
                0 => "tenant=other&user_id=alice".to_owned(),
                1 => "a=%ZZ&&=&b".to_owned(),
                2 => format!("x={}", "y".repeat(2000)),
                _ => "ttl_s=-1".to_owned(),
            };
            path = format!("{path}?{q}");
        }
        path
    }

    fn bearer(&mut self) -> Option<String> {
        match self.rng.random_range(0..9) {
            0 => None,
            1 => Some(format!("Bearer {ADMIN}")),
            2 => Some(format!("Bearer {SERVICE}")),
            3 => Some(format!("Bearer {}", self.scoped_own)),
            4 => Some(format!("Bearer {}", self.scoped_other)),
            5 => Some(format!("Bearer {}", token(&claims(&self.tenant, "alice")))),
            6 => Some("Basic YWRtaW46YWRtaW4=".into()),
            7 => Some(format!(
                "Bearer {}",
                "A".repeat(self.rng.random_range(0..5000))
            )),
            _ => Some(format!("Bearer {}x", &ADMIN[..ADMIN.len() - 1])),
        }
    }

    fn body(&mut self) -> Vec<u8> {
        let t = self.tenant.clone();
        let v = match self.rng.random_range(0..10) {
            0 => json!({"tenant": t, "user_id": "alice"}),
            1 => json!({"tenant": t, "jti": "x".repeat(200), "ttl_s": u64::MAX}),
            2 => json!({"id": "n-1", "tenant": t, "user_ids": ["alice"], "type": "message",
                        "priority": "high", "title": "t", "body": "b", "data": {}}),
            3 => json!({"email": "alice@example.test"}),
            4 => json!({"tenant": [t], "user_ids": {"a": 1}, "ttl_s": "1"}),
            5 => {
                return (0..self.rng.random_range(0..200))
                    .map(|_| self.rng.random())
                    .collect();
            }
            6 => return Vec::new(),
            7 => return format!("{}1{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
            8 => return vec![b'x'; self.rng.random_range(2 * 1024 * 1024..3 * 1024 * 1024)],
            _ => json!(null),
        };
        v.to_string().into_bytes()
    }
}

/// The error envelope with a code that blames the request.
fn assert_typed(what: &str, status: u16, body: &[u8]) {
    let v: Value = serde_json::from_slice(body).unwrap_or_else(|_| {
        panic!(
            "{what} → {status} without the JSON envelope: {:?}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )
    });
    assert_eq!(v["ok"], json!(false), "{what} → {status} {v}");
    let code = v["error"]["code"].as_str().unwrap_or_default();
    assert!(
        CODES.contains(&code) && !["internal", "unavailable"].contains(&code),
        "{what} → {status} {v}"
    );
    assert!(v["error"]["message"].is_string(), "{what} → {status} {v}");
}

#[tokio::test]
async fn any_http_request_gets_a_typed_4xx_never_a_5xx_or_a_hang() {
    let cases = std::env::var("SWITCHBOARD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(2_000, |c| (c / 50).max(2_000));
    let seed = std::env::var("SWITCHBOARD_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("http fuzzing: SWITCHBOARD_FUZZ_SEED={seed} cases={cases}");
    let mut cfg = mk_config();
    cfg.service_token = Some(SERVICE.into());
    let (public, internal) = start_split(cfg).await;
    let tenant = unique("t");
    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed),
        scoped_own: service_token(&tenant).0,
        scoped_other: service_token(&unique("other")).0,
        tenant,
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let methods = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "BREW",
    ];
    let content_types = [
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=--",
        "application/json; charset=utf-16",
    ];
    let mut by_status = std::collections::BTreeMap::<u16, u64>::new();
    for i in 0..cases {
        let node = if g.rng.random_ratio(1, 5) {
            &public
        } else {
            &internal
        };
        let method = g.one(&methods);
        let path = g.path();
        let body = g.body();
        let big = body.len() > 1024 * 1024;
        let what = format!(
            "seed {seed} case {i}: {method} {:.200} ({} body bytes)",
            path,
            body.len()
        );
        let mut req = http
            .request(method.parse().expect("method"), node.url(&path))
            .body(body);
        if let Some(b) = g.bearer() {
            req = req.header("authorization", b);
        }
        if g.rng.random_ratio(2, 3) {
            req = req.header("content-type", g.one(&content_types));
        }
        if g.rng.random_ratio(1, 10) {
            req = req
                .header("x-forwarded-for", "10.0.0.1, ::1")
                .header("accept", "*/*;q=x");
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => panic!("{what} → no answer in time: {e}"),
            // A body past the limit may be cut off while it is still being sent.
            Err(_) if big => continue,
            Err(e) => panic!("{what} → no answer: {e}"),
        };
        let status = resp.status().as_u16();
        *by_status.entry(status).or_default() += 1;
        let bytes = resp.bytes().await.unwrap_or_default();
        assert!(
            status < 500,
            "{what} → {status} {:?}",
            String::from_utf8_lossy(&bytes)
        );
        if status >= 400 && method != "HEAD" {
            assert_typed(&what, status, &bytes);
        }
    }
    println!("http fuzzing: answers by status {by_status:?}");
    // Both ports still serve.
    assert_eq!(
        http.get(public.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = revoke(&internal, json!({"tenant": "t", "jti": "after-fuzz"})).await;
    assert_eq!(r.status(), 200);
}
