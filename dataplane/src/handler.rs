//! The thin layer between Socket.IO and the capabilities: authenticate the handshake,
//! then for every request event: rate-limit, decode, call, ack, count.

use std::future::Future;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Event, Extension, SocketRef, State, TryData};

use crate::app::App;
use crate::auth::lifetime::{self, Clock};
use crate::auth::{AuthError, Identity};
use crate::conns::{self, Held};
use crate::error::{AckError, Code, envelope};
use crate::hub::{session_room, token_room, user_room};
use crate::limits::{Class, SocketLimits, Verdict};
use crate::metrics::Metrics;

/// What a request handler gets: the app, the socket and who it is.
pub struct Cx<A: Adapter> {
    pub app: App,
    pub socket: SocketRef<A>,
    pub id: Arc<Identity>,
}

/// Per-socket limiter state (extensions hold clones, so it sits behind an `Arc`).
pub type SocketLimitsRef = Arc<Mutex<SocketLimits>>;

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct HandshakeAuth {
    token: Option<String>,
}

/// The token of a handshake: `auth.token`, else the `Authorization: Bearer` header.
pub fn handshake_token<A: Adapter>(
    s: &SocketRef<A>,
    auth: Result<Value, impl std::fmt::Display>,
) -> Option<String> {
    auth.ok()
        .and_then(|v| serde_json::from_value::<HandshakeAuth>(v).ok())
        .and_then(|a| a.token)
        .or_else(|| {
            s.req_parts()
                .headers
                .get(http::header::AUTHORIZATION)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.strip_prefix("Bearer "))
                .map(str::to_owned)
        })
}

/// The Socket.IO rooms an identity's sockets sit in (user, session, token), so a
/// revocation or a kick reaches them wherever they are.
fn identity_rooms(id: &Identity) -> Vec<String> {
    let (t, u) = (id.tenant.as_str(), id.user_id.as_str());
    let mut rooms = vec![user_room(t, u)];
    rooms.extend(id.sid.as_deref().map(|sid| session_room(t, sid)));
    rooms.extend(id.jti.as_deref().map(|jti| token_room(t, jti)));
    rooms
}

/// Authenticate a handshake (every namespace's admission starts here): verify the token,
/// refuse revoked ones, join the identity rooms (user, session, token), leave the
/// identity, its token clock and limiter state in the socket's extensions, and take
/// `auth:refresh`.
pub async fn authenticate<A: Adapter>(
    s: &SocketRef<A>,
    app: &App,
    auth: Result<Value, impl std::fmt::Display>,
) -> Result<Arc<Identity>, AuthError> {
    let result = async {
        let token = handshake_token(s, auth).ok_or_else(|| {
            AuthError::Unauthorized(
                "no token: send auth.token or an Authorization: Bearer header".into(),
            )
        })?;
        let id = app.verifier.verify(&token)?;
        match app.stores.revocations.check(&id).await {
            Ok(None) => {}
            Ok(Some(reason)) => return Err(AuthError::Revoked(reason)),
            Err(e) => {
                tracing::warn!(error = %e, "revocation check failed");
                return Err(AuthError::Unavailable);
            }
        }
        // A lease among the user's connections, on every node (released at the
        // disconnect; one taken by an admission that fails later lapses on its own).
        let held = Held {
            tenant: id.tenant.clone(),
            user_id: id.user_id.clone(),
            conn: conns::member(s.ns(), &conn_id(app, &s.id)),
        };
        let max = app.config.limits.max_connections_per_user;
        let lease = conns::lease(app.config.presence.heartbeat_ttl.0);
        match app.stores.conns.admit(&held, max, lease).await {
            Ok(true) => Ok((id, held)),
            Ok(false) => Err(AuthError::TooManyConnections(max)),
            Err(e) => {
                tracing::warn!(error = %e, "connection lease store failed");
                Err(AuthError::Unavailable)
            }
        }
    }
    .await;
    match result {
        Ok((id, held)) => {
            let id = Arc::new(id);
            s.extensions.insert(Arc::new(held));
            s.join(identity_rooms(&id));
            s.extensions.insert(id.clone());
            s.extensions.insert(Clock::new(id.exp));
            s.extensions.insert::<SocketLimitsRef>(Arc::default());
            on(s, lifetime::REFRESH, Class::Room, refresh::<A>);
            s.on_fallback(unknown_event::<A>);
            Ok(id)
        }
        Err(e) => {
            Metrics::kind(&app.metrics.auth_failures, e.code());
            Err(e)
        }
    }
}

/// A namespace admitted the socket (its connect handler runs this): check revocation
/// once more, then follow the token's lifetime (`auth:expiring`, then `auth:expired` and
/// a disconnect unless the client refreshes).
///
/// Why check again: a socket enters its namespace (where a revocation's disconnect can
/// find it) only once admission is over, so a revocation that landed between the
/// handshake's check and that moment would miss it. Any revocation stored before this
/// check is seen here; any later one finds the socket in its identity rooms.
pub async fn admitted<A: Adapter>(s: &SocketRef<A>, app: &App) {
    // Renewed from now on, until `released` (at the disconnect).
    if let Some(held) = s.extensions.get::<Arc<Held>>() {
        app.leases.hold(held);
    }
    let Some(id) = s.extensions.get::<Arc<Identity>>() else {
        return;
    };
    let verdict = app.stores.revocations.check(&id).await;
    if !matches!(verdict, Ok(None)) {
        match verdict {
            Ok(Some(reason)) => {
                tracing::info!(tenant = %id.tenant, user = %id.user_id, reason, "revoked during admission, disconnecting");
                Metrics::kind(&app.metrics.disconnects, "revoked");
            }
            // Refused, never waved through: the client reconnects and is checked afresh.
            _ => {
                tracing::warn!(tenant = %id.tenant, user = %id.user_id, "revocation check failed after admission, disconnecting");
                Metrics::kind(&app.metrics.disconnects, "unavailable");
            }
        }
        let _ = s.clone().disconnect();
        return;
    }
    let (Some(clock), Some(hub)) = (s.extensions.get::<Clock>(), app.hub()) else {
        return;
    };
    lifetime::spawn(
        &clock,
        lifetime::Target {
            hub: hub.clone(),
            ns: s.ns().to_owned(),
            sid: s.id,
            notice: app.config.jwt.expiry_notice.0,
            leeway: app.config.jwt.leeway.0,
            disconnects: app.metrics.disconnects.clone(),
            live: app.metrics.token_clocks.clone(),
        },
    );
}

/// A socket is gone (every namespace's disconnect handler runs this): its connection
/// lease goes, so the user may connect again.
pub async fn released<A: Adapter>(s: &SocketRef<A>, app: &App) {
    let Some(held) = s.extensions.get::<Arc<Held>>() else {
        return;
    };
    app.leases.drop_conn(&held.conn);
    if let Err(e) = app.stores.conns.release(&held).await {
        tracing::warn!(error = %e, "connection lease not released; it lapses within one lease");
    }
}

/// For requests that hand out something that cannot be taken back (TURN credentials):
/// is this socket's token still unrevoked? A revoked socket gets `unauthorized` and is
/// disconnected after the ack (its revocation's kick, at most once over Redis pub/sub,
/// did not reach it); `unavailable` when revocations cannot be checked.
pub async fn not_revoked<A: Adapter>(cx: &Cx<A>) -> Result<(), AckError> {
    let id = cx
        .socket
        .extensions
        .get::<Arc<Identity>>()
        .unwrap_or_else(|| cx.id.clone());
    match cx.app.stores.revocations.check(&id).await {
        Ok(None) => Ok(()),
        Ok(Some(reason)) => {
            tracing::info!(tenant = %id.tenant, user = %id.user_id, reason, "revoked socket still connected, disconnecting");
            Metrics::kind(&cx.app.metrics.disconnects, "revoked");
            Err(AckError::revoked(AuthError::Revoked(reason).to_string()))
        }
        Err(e) => {
            tracing::warn!(error = %e, "revocation check failed");
            Err(AckError::new(
                Code::Unavailable,
                "revocations cannot be checked right now, retry later",
            ))
        }
    }
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Refresh {
    token: String,
}

/// `auth:refresh {token}`: go on with a new token of the same tenant, user and (when
/// set) session. Anything else, a revoked token or a bad one gets `unauthorized` and
/// changes nothing: the old expiry stays.
async fn refresh<A: Adapter>(cx: Cx<A>, req: Refresh) -> Result<Refreshed, AckError> {
    let s = &cx.socket;
    let Some(clock) = s.extensions.get::<Clock>() else {
        return Err(AckError::new(
            Code::Internal,
            "no token clock on this socket",
        ));
    };
    let _one_at_a_time = clock.refreshing().await;
    // As of now: a refresh before this one may have replaced the handshake's identity.
    let current = s.extensions.get::<Arc<Identity>>().unwrap_or(cx.id);
    let refused = |e: AuthError| {
        Metrics::kind(&cx.app.metrics.auth_failures, e.code());
        let code = match e {
            AuthError::Unavailable => Code::Unavailable,
            _ => Code::Unauthorized,
        };
        AckError::new(code, e.to_string())
    };
    let new = cx.app.verifier.verify(&req.token).map_err(refused)?;
    current.check_refresh(&new).map_err(refused)?;
    // Into the new token's rooms before its revocation check, so a revocation that
    // lands after the check still finds this socket.
    let (old_rooms, new_rooms) = (identity_rooms(&current), identity_rooms(&new));
    let added: Vec<String> = new_rooms
        .iter()
        .filter(|r| !old_rooms.contains(r))
        .cloned()
        .collect();
    s.join(added.clone());
    let verdict = match cx.app.stores.revocations.check(&new).await {
        Ok(None) => Ok(()),
        Ok(Some(reason)) => Err(AuthError::Revoked(reason)),
        Err(e) => {
            tracing::warn!(error = %e, "revocation check failed");
            Err(AuthError::Unavailable)
        }
    };
    if let Err(e) = verdict {
        s.leave(added);
        return Err(refused(e));
    }
    // The old token's own rooms go: revoking it no longer concerns this socket.
    s.leave(
        old_rooms
            .into_iter()
            .filter(|r| !new_rooms.contains(r))
            .collect::<Vec<_>>(),
    );
    let exp = new.exp;
    s.extensions.insert(Arc::new(new));
    clock.set(exp);
    tracing::debug!(tenant = %current.tenant, user = %current.user_id, exp, "token refreshed");
    Ok(Refreshed {
        expires_at: exp.saturating_mul(1000),
    })
}

/// The id of a connection in the stores: `node_id/socket_id`, so a node's entries can be
/// told apart (the dead-node sweep and the online flags rely on it).
pub fn conn_id(app: &App, sid: &impl std::fmt::Display) -> String {
    format!("{}/{sid}", app.node_id)
}

/// Decode a request payload. A missing payload reads as `{}`.
pub fn decode<T: DeserializeOwned>(
    data: Result<Value, impl std::fmt::Display>,
) -> Result<T, AckError> {
    let v = match data {
        Ok(Value::Null) | Err(_) => Value::Object(Default::default()),
        Ok(v) => v,
    };
    if !v.is_object() {
        return Err(AckError::bad_request("the payload must be a JSON object"));
    }
    serde_json::from_value(v).map_err(|e| AckError::bad_request(format!("invalid payload: {e}")))
}

/// The ack `data` of a request that answers nothing more than "done": `{}`.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct Done {}

/// `auth:refresh`'s ack.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct Refreshed {
    /// The new token's `exp`, in ms.
    pub expires_at: u64,
}

/// The request events every namespace takes (registered in [`authenticate`]).
pub fn request_events(ns: &'static str) -> [crate::contract::RequestEvent; 1] {
    [crate::contract::RequestEvent::of(
        ns,
        lifetime::REFRESH,
        Class::Room,
        refresh::<socketioxide::adapter::LocalAdapter>,
    )]
}

/// The ack's `data` of a typed answer.
fn ack_data<T: Serialize>(data: T) -> Result<Value, AckError> {
    serde_json::to_value(data).map_err(|e| {
        tracing::error!(error = %e, "ack data did not serialize");
        AckError::new(Code::Internal, "internal error")
    })
}

/// Register a request event: `f` gets the decoded payload and returns the ack's `data`.
/// The request and ack types are the ones the contract documents describe
/// ([`crate::contract`]), so what is documented is what is decoded and sent.
pub fn on<A, Req, Resp, F, Fut>(s: &SocketRef<A>, event: &'static str, class: Class, f: F)
where
    A: Adapter,
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    F: Fn(Cx<A>, Req) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, AckError>> + Send + 'static,
{
    s.on(
        event,
        move |s: SocketRef<A>,
              TryData(data): TryData<Value>,
              ack: AckSender<A>,
              State(app): State<App>,
              Extension(id): Extension<Arc<Identity>>,
              Extension(limits): Extension<SocketLimitsRef>| async move {
            // The drain waits for this handler (its ack, its writes) before the node exits.
            let _busy = app.drain.busy();
            let started = tokio::time::Instant::now();
            app.presence.activity(&id.tenant, &id.user_id);
            let verdict = app
                .limits
                .check(&limits, &id.tenant, &id.user_id, class, started)
                .await;
            let result = match verdict {
                Verdict::Allow => match decode::<Req>(data) {
                    Ok(req) => f(
                        Cx {
                            app: app.clone(),
                            socket: s.clone(),
                            id: id.clone(),
                        },
                        req,
                    )
                    .await
                    .and_then(ack_data),
                    Err(e) => Err(e),
                },
                Verdict::Limited | Verdict::Abusive => Err(limited(event)),
            };
            answer(&app, &s, &id, ack, event, started, &result, verdict);
        },
    );
}

fn limited(event: &str) -> AckError {
    AckError::new(
        Code::RateLimited,
        format!("too many {event} events, slow down"),
    )
}

/// Ack a request, count it under `label`, and disconnect the socket when the answer or
/// the limiter says so. An ack the socket's full send buffer cannot take closes its
/// session ([`crate::drain::send_failed`]).
#[allow(clippy::too_many_arguments)]
fn answer<A: Adapter>(
    app: &App,
    s: &SocketRef<A>,
    id: &Identity,
    ack: AckSender<A>,
    label: &str,
    started: tokio::time::Instant,
    result: &Result<Value, AckError>,
    verdict: Verdict,
) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(e) => e.code.as_str(),
    };
    app.metrics.event(label, outcome, started.elapsed());
    if let Err(e) = ack.send(&envelope(result)) {
        crate::drain::send_failed(app, s, label, &e);
    }
    if matches!(result, Err(e) if e.then_disconnect) {
        let _ = s.clone().disconnect();
    }
    if verdict == Verdict::Abusive {
        tracing::warn!(tenant = %id.tenant, user = %id.user_id, event = label, "abuse threshold crossed, disconnecting");
        Metrics::kind(&app.metrics.disconnects, "abuse");
        let _ = s.clone().disconnect();
    }
}

/// An event no handler of the namespace takes: `bad_request` (when the client asked for
/// an ack), never a silent drop. It counts against the `read` rate limits like any cheap
/// request, and under the event label `unknown` (client-chosen names would make the
/// metric unbounded).
async fn unknown_event<A: Adapter>(
    s: SocketRef<A>,
    Event(event): Event,
    ack: AckSender<A>,
    State(app): State<App>,
    Extension(id): Extension<Arc<Identity>>,
    Extension(limits): Extension<SocketLimitsRef>,
) {
    let started = tokio::time::Instant::now();
    let verdict = app
        .limits
        .check(&limits, &id.tenant, &id.user_id, Class::Read, started)
        .await;
    let result = match verdict {
        Verdict::Allow => {
            let shown: String = event.chars().take(64).collect();
            Err(AckError::bad_request(format!(
                "unknown event {shown:?} on {}",
                s.ns()
            )))
        }
        Verdict::Limited | Verdict::Abusive => Err(limited("unknown")),
    };
    answer(&app, &s, &id, ack, "unknown", started, &result, verdict);
}
