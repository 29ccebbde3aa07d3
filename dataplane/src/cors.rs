//! Browsers on other origins (`server.cors_allowed_origins`): CORS grants for
//! Engine.IO long-polling and the HTTP APIs, and an `Origin` check on Socket.IO
//! requests, WebSocket upgrades included (CORS does not cover WebSockets: a page on any
//! origin may open one, so the server has to look at `Origin` itself).
//!
//! ```text
//!  request ──▶ Cors::decide(method, path, Origin, Host, preflight headers)   (pure)
//!                 ├─ Pass       list empty: today's behaviour, untouched
//!                 ├─ Preflight  204 + Access-Control-Allow-* for a listed origin
//!                 ├─ Refuse     403 `forbidden`, no grant (a preflight from another
//!                 │             origin; a Socket.IO request from another origin)
//!                 └─ Serve      run the request; grant a listed origin, `Vary: Origin`
//! ```
//!
//! A grant only ever names an origin from the configured list, never what the request
//! sent on its own. Requests without `Origin` (servers, native clients) pass: the check
//! is there for browsers, which always send it cross-origin and never let a page forge it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::drain::transport::ENGINE_IO_PATH;

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE_SECS: &str = "600";
/// The methods the HTTP APIs and Engine.IO polling use.
const ALLOWED_METHODS: &str = "GET, POST";
/// Headers allowed when a preflight names none we can echo.
const DEFAULT_ALLOWED_HEADERS: &str = "authorization, content-type";
/// Longest `Access-Control-Request-Headers` echoed back (a browser lists a few names).
const MAX_REQUEST_HEADERS_LEN: usize = 1024;

/// The node's CORS policy: cheap to clone, built once from the configuration.
#[derive(Clone, Debug, Default)]
pub struct Cors {
    /// The configured origins, as header values (the only values a grant ever carries).
    allowed: Arc<[HeaderValue]>,
}

/// What to do with one request.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// No policy configured: leave the request and its response alone.
    Pass,
    /// A preflight from a listed origin: answer it here.
    Preflight {
        origin: HeaderValue,
        headers: HeaderValue,
    },
    /// Refuse with 403 and no grant.
    Refuse,
    /// Run the request; grant `Some(origin)` (a listed one), or nothing.
    Serve(Option<HeaderValue>),
}

impl Cors {
    /// The policy for `server.cors_allowed_origins`. The configuration was validated, so
    /// every origin is a valid header value; one that were not could never match.
    pub fn new(origins: &[String]) -> Self {
        Self {
            allowed: origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect(),
        }
    }

    /// Decide what a request gets (no I/O).
    pub fn decide(&self, method: &Method, path: &str, headers: &HeaderMap) -> Verdict {
        if self.allowed.is_empty() {
            return Verdict::Pass;
        }
        let mut origins = headers.get_all(header::ORIGIN).iter();
        let Some(origin) = origins.next() else {
            return Verdict::Serve(None);
        };
        // Browsers send one `Origin`; a request with several is no listed origin's
        // (and not the node's own: the first might be, the next not).
        let single = origins.next().is_none();
        let listed = self.allowed.iter().find(|a| single && *a == origin);
        let preflight = method == Method::OPTIONS
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        match (listed, preflight) {
            (Some(origin), true) => Verdict::Preflight {
                origin: origin.clone(),
                headers: allowed_headers(headers),
            },
            (None, true) => Verdict::Refuse,
            (Some(origin), false) => Verdict::Serve(Some(origin.clone())),
            (None, false) if is_engine_io(path) && !(single && is_own_origin(origin, headers)) => {
                Verdict::Refuse
            }
            (None, false) => Verdict::Serve(None),
        }
    }
}

fn is_engine_io(path: &str) -> bool {
    path.strip_prefix(ENGINE_IO_PATH)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// A page served by the node's own host (same host and port) needs no listing.
fn is_own_origin(origin: &HeaderValue, headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin = origin
        .to_str()
        .ok()
        .and_then(|o| switchboard_crds::origin::parse(o).ok());
    matches!((origin, host), (Some(o), Some(h)) if o.is_host(h))
}

/// The request headers a preflight asks for, echoed when they are a plain list of
/// header names (the origin is a listed one; the names carry no authority).
fn allowed_headers(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .filter(|v| {
            let b = v.as_bytes();
            b.len() <= MAX_REQUEST_HEADERS_LEN
                && b.split(|c| *c == b',').all(|name| {
                    let name = name.trim_ascii();
                    !name.is_empty() && HeaderName::from_bytes(name).is_ok()
                })
        })
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static(DEFAULT_ALLOWED_HEADERS))
}

// === the middleware ===

/// Axum middleware applying [`Cors::decide`] to every request of a router:
/// `router.layer(axum::middleware::from_fn_with_state(cors, cors::layer))`.
pub async fn layer(State(cors): State<Cors>, req: Request, next: Next) -> Response {
    match cors.decide(req.method(), req.uri().path(), req.headers()) {
        Verdict::Pass => next.run(req).await,
        Verdict::Preflight { origin, headers } => {
            let mut r = StatusCode::NO_CONTENT.into_response();
            grant(r.headers_mut(), origin);
            let h = r.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(ALLOWED_METHODS),
            );
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, headers);
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(PREFLIGHT_MAX_AGE_SECS),
            );
            h.append(
                header::VARY,
                HeaderValue::from_static(
                    "access-control-request-method, access-control-request-headers",
                ),
            );
            r
        }
        Verdict::Refuse => {
            let mut r = crate::http::error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this origin is not in server.cors_allowed_origins",
            );
            vary(r.headers_mut());
            r
        }
        Verdict::Serve(origin) => {
            let mut r = next.run(req).await;
            match origin {
                Some(origin) => grant(r.headers_mut(), origin),
                None => vary(r.headers_mut()),
            }
            r
        }
    }
}

/// Grant `origin` (credentials included: a page may send cookies, e.g. a load
/// balancer's affinity cookie with `withCredentials`).
fn grant(h: &mut HeaderMap, origin: HeaderValue) {
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    vary(h);
}

/// The answer depends on `Origin`: caches must keep one per origin.
fn vary(h: &mut HeaderMap) {
    h.append(header::VARY, HeaderValue::from_static("origin"));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const APP: &str = "https://app.example.com";

    fn mk_cors() -> Cors {
        Cors::new(&[APP.into(), "http://localhost:5173".into()])
    }

    fn mk_headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn no_list_leaves_everything_as_it_was() {
        let h = mk_headers(&[("origin", "https://evil.example"), ("host", "node:3000")]);
        for m in [Method::GET, Method::POST, Method::OPTIONS] {
            assert_eq!(Cors::default().decide(&m, "/socket.io/", &h), Verdict::Pass);
        }
    }

    #[test]
    fn preflight_from_a_listed_origin_is_answered_with_its_requested_headers() {
        let h = mk_headers(&[
            ("origin", APP),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization, content-type, x-trace",
            ),
        ]);
        for path in ["/socket.io/", "/api/v1/notifications"] {
            assert_eq!(
                mk_cors().decide(&Method::OPTIONS, path, &h),
                Verdict::Preflight {
                    origin: HeaderValue::from_static(APP),
                    headers: HeaderValue::from_static("authorization, content-type, x-trace"),
                }
            );
        }
    }

    #[test]
    fn a_preflight_asking_for_odd_header_names_gets_the_default_list() {
        let long = "x,".repeat(MAX_REQUEST_HEADERS_LEN);
        for asked in ["a b", "x,,y", long.as_str()] {
            let h = mk_headers(&[
                ("origin", APP),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", asked),
            ]);
            let Verdict::Preflight { headers, .. } = mk_cors().decide(&Method::OPTIONS, "/", &h)
            else {
                panic!("a listed origin gets a preflight answer")
            };
            assert_eq!(headers, DEFAULT_ALLOWED_HEADERS);
        }
    }

    #[test]
    fn other_origins_never_get_a_grant_and_engine_io_refuses_them() {
        for other in [
            "https://evil.example",
            "https://app.example.com.evil.example",
            "https://APP.example.com",
            "null",
            "https://app.example.com/",
        ] {
            let h = mk_headers(&[
                ("origin", other),
                ("host", "node:3000"),
                ("access-control-request-method", "GET"),
            ]);
            let c = mk_cors();
            assert_eq!(
                c.decide(&Method::OPTIONS, "/socket.io/", &h),
                Verdict::Refuse
            );
            assert_eq!(c.decide(&Method::OPTIONS, "/api/v1/x", &h), Verdict::Refuse);
            assert_eq!(c.decide(&Method::GET, "/socket.io/", &h), Verdict::Refuse);
            assert_eq!(c.decide(&Method::GET, "/socket.io", &h), Verdict::Refuse);
            assert_eq!(
                c.decide(&Method::POST, "/api/v1/x", &h),
                Verdict::Serve(None)
            );
            assert_eq!(
                c.decide(&Method::GET, "/socket.iox", &h),
                Verdict::Serve(None)
            );
        }
    }

    #[test]
    fn several_origin_headers_are_no_listed_origin() {
        let mut h = mk_headers(&[("host", "node:3000")]);
        for o in ["http://node:3000", APP] {
            h.append(header::ORIGIN, HeaderValue::from_static(o));
        }
        let c = mk_cors();
        assert_eq!(c.decide(&Method::GET, "/socket.io/", &h), Verdict::Refuse);
        assert_eq!(
            c.decide(&Method::GET, "/api/v1/x", &h),
            Verdict::Serve(None)
        );
    }

    #[test]
    fn a_listed_origin_is_granted_as_configured_and_the_node_s_own_passes() {
        let c = mk_cors();
        let h = mk_headers(&[("origin", APP)]);
        assert_eq!(
            c.decide(&Method::GET, "/socket.io/", &h),
            Verdict::Serve(Some(HeaderValue::from_static(APP)))
        );
        let own = mk_headers(&[("origin", "http://node:3000"), ("host", "node:3000")]);
        assert_eq!(
            c.decide(&Method::GET, "/socket.io/", &own),
            Verdict::Serve(None)
        );
        let no_origin = mk_headers(&[("host", "node:3000")]);
        assert_eq!(
            c.decide(&Method::GET, "/socket.io/", &no_origin),
            Verdict::Serve(None)
        );
    }
}
