//! Graceful drain of a socket node: on SIGTERM (or the `shutdown` future of
//! [`crate::serve`]) the node sends its clients elsewhere a few at a time, lets the work
//! in flight finish, and exits.
//!
//! ```text
//!  shutdown ──▶ Drain::begin ──▶ /readyz 503; Engine.IO handshakes 503 (transport::gate)
//!                    │
//!                    ▼ plan::close_times(sessions, server.drain_window)        (pure)
//!   every session: `server:draining {within_ms}` on each of its namespaces
//!                    ▼ at its time
//!   close its Engine.IO transport (transport::{Link::close, close_polling}): the client
//!   sees `transport close` and reconnects to another node; its presence device and call
//!   treat the close as "coming back" (presence::tracker::release, Calls::disconnected_within)
//!                    ▼
//!   wait until no session is left and nothing is in flight (≤ DRAIN_IN_FLIGHT_WAIT)
//! ```
//!
//! Why the transport and never a Socket.IO namespace disconnect, and how a single
//! client's transport is closed: see [`transport`].

pub mod plan;
pub mod transport;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::json;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use socketioxide::{SendError, SocketError};
use switchboard_crds::config::DRAIN_IN_FLIGHT_WAIT;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::app::App;
use transport::{Link, Upgrades};

/// The event every client gets when the drain begins.
pub const DRAINING_EVENT: &str = "server:draining";

/// `server:draining`: the connection is closed at transport level within `within_ms`;
/// the client reconnects (to another node) on its own.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub struct Draining {
    pub within_ms: u64,
}

/// The drain event every namespace sends.
pub fn server_events(ns: &'static str) -> [crate::contract::ServerEvent; 1] {
    [crate::contract::ServerEvent::of::<Draining>(
        ns,
        DRAINING_EVENT,
        "The node is going away; the connection will close within within_ms.",
    )]
}
/// How often the end of the drain checks for sessions and work still running.
const SETTLE_POLL: Duration = Duration::from_millis(20);

/// The drain's state, shared by the HTTP layer, the handlers and the drain itself.
/// Cheap to clone.
#[derive(Clone, Default)]
pub struct Drain(Arc<Shared>);

#[derive(Default)]
struct Shared {
    /// Set once, when the drain begins; never cleared (the process is leaving).
    draining: AtomicBool,
    /// Engine.IO sessions the drain closed. Their disconnect handlers treat the close as
    /// "the client comes back elsewhere", and polls on them get the close packet. Holds
    /// at most the sessions the node had when it drained.
    closed: Mutex<HashSet<Sid>>,
    /// Which connection carries each upgraded WebSocket session.
    upgrades: Upgrades,
    /// Slow consumers whose transport is being closed (see [`send_failed`]).
    slow: Mutex<HashSet<Sid>>,
    /// The node's own HTTP service, through which long-polling sessions are closed; set
    /// once it exists.
    router: OnceLock<axum::Router>,
    /// Request handlers running now.
    in_flight: AtomicUsize,
    idle: Notify,
}

/// Held while a request handler runs (see [`Drain::busy`]).
pub struct Busy(Drain);

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.0.idle.notify_waiters();
        }
    }
}

impl Drain {
    pub fn begin(&self) {
        self.0.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.0.draining.load(Ordering::SeqCst)
    }

    /// Whether the drain closed this session (its client is expected to come back,
    /// on another node). Asked on every long poll and every disconnect: without a drain
    /// it answers without taking the lock.
    pub fn closed_by_drain(&self, sid: Sid) -> bool {
        self.is_draining() && self.closed().contains(&sid)
    }

    fn closed(&self) -> std::sync::MutexGuard<'_, HashSet<Sid>> {
        self.0.closed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The node's HTTP service, once built (see [`send_failed`]).
    pub fn set_router(&self, router: axum::Router) {
        let _ = self.0.router.set(router);
    }

    /// Count a request handler as running until the guard drops: the drain waits for it.
    pub fn busy(&self) -> Busy {
        self.0.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    pub fn in_flight(&self) -> usize {
        self.0.in_flight.load(Ordering::SeqCst)
    }

    /// Resolves when no request handler runs.
    pub async fn idle(&self) {
        loop {
            let notified = self.0.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }
}

// === sessions ===

/// One Engine.IO session of this node (a client's connection, with all its namespaces).
pub struct Session {
    pub sid: Sid,
    /// Its current transport is WebSocket.
    pub websocket: bool,
    /// The connection carrying it, when it is on WebSocket and the node knows which.
    pub link: Option<Link>,
}

/// This node's sessions, as the drain needs them; implemented by the Socket.IO server.
pub trait Sessions: Send + Sync {
    /// The sessions connected to at least one namespace, in connection order of no
    /// particular meaning.
    fn sessions(&self, upgrades: &Upgrades) -> Vec<Session>;
    /// Session `sid` as it is now (its transport may have changed since a listing), if
    /// it is still connected.
    fn find(&self, sid: Sid, upgrades: &Upgrades) -> Option<Session>;
    /// Emit `server:draining {within_ms}` on every namespace of session `sid`.
    fn notify(&self, sid: Sid, within_ms: u64);
}

/// The namespaces a session may be connected to.
const NAMESPACES: [&str; 4] = [
    crate::hub::CHAT,
    crate::presence::tracker::PRESENCE,
    crate::notifications::NOTIFICATIONS,
    crate::calls::service::WEBRTC,
];

/// What the drain needs to know of a socket's session.
fn session_of<A: Adapter>(s: &SocketRef<A>, upgrades: &Upgrades) -> Session {
    let websocket = s.transport_type() == socketioxide::TransportType::Websocket;
    let link = websocket
        .then(|| {
            upgrades
                .get(s.id)
                .or_else(|| transport::websocket_handshake_link(s.req_parts()))
        })
        .flatten();
    Session {
        sid: s.id,
        websocket,
        link,
    }
}

impl<A: Adapter> Sessions for SocketIo<A> {
    fn sessions(&self, upgrades: &Upgrades) -> Vec<Session> {
        let mut seen: HashSet<Sid> = HashSet::new();
        let mut out: Vec<Session> = Vec::new();
        for ns in NAMESPACES {
            let Some(op) = self.of(ns) else { continue };
            for s in op.local().sockets() {
                if seen.insert(s.id) {
                    out.push(session_of(&s, upgrades));
                }
            }
        }
        out
    }

    fn find(&self, sid: Sid, upgrades: &Upgrades) -> Option<Session> {
        NAMESPACES
            .iter()
            .find_map(|ns| self.of(*ns).and_then(|op| op.get_socket(sid)))
            .map(|s| session_of(&s, upgrades))
    }

    fn notify(&self, sid: Sid, within_ms: u64) {
        let data = json!(Draining { within_ms });
        for ns in NAMESPACES {
            if let Some(s) = self.of(ns).and_then(|op| op.get_socket(sid))
                && let Err(e) = s.emit(DRAINING_EVENT, &data)
            {
                tracing::debug!(error = %e, ns, "server:draining not sent");
            }
        }
    }
}

// === the drain ===

/// What a drain did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Sessions closed by the drain (late arrivals included).
    pub closed: usize,
    /// Sessions still open when the node stopped waiting.
    pub left: usize,
    /// Request handlers still running when the node stopped waiting.
    pub in_flight: usize,
}

/// Drain the node: see the module docs. `router` is the node's own HTTP service, through
/// which long-polling sessions are closed.
pub async fn run(app: &App, sessions: &dyn Sessions, router: &axum::Router) -> Report {
    let drain = &app.drain;
    drain.begin();
    let window = app.config.server.drain_window.0;
    let start = Instant::now();
    let list = sessions.sessions(&drain.0.upgrades);
    let times = plan::close_times(list.len(), window);
    tracing::info!(
        sessions = list.len(),
        window_ms = window.as_millis() as u64,
        "draining: readiness off, new connections refused"
    );
    for (s, at) in list.iter().zip(&times) {
        sessions.notify(s.sid, plan::within_ms(*at));
    }
    let mut report = Report::default();
    for (s, at) in list.into_iter().zip(times) {
        tokio::time::sleep_until(start + at).await;
        // As the session is now: it may have upgraded to WebSocket, or left.
        if let Some(now) = sessions.find(s.sid, &drain.0.upgrades) {
            close(app, router, now).await;
            report.closed += 1;
        }
    }
    // Clients that were between their Engine.IO handshake and a namespace when the drain
    // began: they are told and closed now.
    let late: Vec<Session> = sessions
        .sessions(&drain.0.upgrades)
        .into_iter()
        .filter(|s| !drain.closed_by_drain(s.sid))
        .collect();
    for s in late {
        sessions.notify(s.sid, 0);
        close(app, router, s).await;
        report.closed += 1;
    }
    settle(app, sessions, &mut report).await;
    tracing::info!(
        closed = report.closed,
        left = report.left,
        in_flight = report.in_flight,
        elapsed_ms = start.elapsed().as_millis() as u64,
        "drained"
    );
    report
}

/// Close one session's transport.
async fn close(app: &App, router: &axum::Router, s: Session) {
    app.drain.closed().insert(s.sid);
    crate::metrics::Metrics::kind(&app.metrics.disconnects, "drain");
    close_transport(router, s).await;
}

/// Close one session's Engine.IO transport (see [`transport`]).
async fn close_transport(router: &axum::Router, s: Session) {
    match (s.websocket, s.link) {
        (true, Some(link)) => link.close(),
        (true, None) => {
            // Not seen arriving (cannot happen with the tracked listener); leave it to
            // the end of the process, which closes it like any other.
            tracing::warn!(sid = %s.sid, "no connection known for a WebSocket session");
        }
        (false, _) => {
            if !transport::close_polling(router, s.sid).await {
                tracing::debug!(sid = %s.sid, "polling session already gone");
            }
        }
    }
}

/// After the last close: wait until the sessions' disconnect handlers are done (a
/// socket leaves its namespace when its handler returns), no request handler runs, and
/// the node's other work in flight (call history writes, direct notification
/// deliveries) is done; at most [`DRAIN_IN_FLIGHT_WAIT`].
async fn settle(app: &App, sessions: &dyn Sessions, report: &mut Report) {
    let deadline = Instant::now() + DRAIN_IN_FLIGHT_WAIT;
    let work = async {
        loop {
            if sessions.sessions(&app.drain.0.upgrades).is_empty() {
                break;
            }
            tokio::time::sleep(SETTLE_POLL).await;
        }
        app.drain.idle().await;
        if let Some(calls) = app.calls() {
            calls.settle().await;
        }
        if let Some(intake) = app.intake() {
            intake.idle().await;
        }
    };
    if tokio::time::timeout_at(deadline, work).await.is_err() {
        tracing::warn!(
            wait_ms = DRAIN_IN_FLIGHT_WAIT.as_millis() as u64,
            "work still in flight at the end of the drain; exiting anyway"
        );
    }
    report.left = sessions.sessions(&app.drain.0.upgrades).len();
    report.in_flight = app.drain.in_flight();
}

// === slow consumers ===

/// A packet for socket `s` (the ack of `event`) could not be sent. When its session's
/// send buffer (Engine.IO's `max_buffer_size`) is full, the client reads slower than it
/// is sent to: the packet is lost, so the session's transport is closed (counted as
/// `switchboard_forced_disconnects_total{kind="slow_consumer"}`, logged at warn) rather
/// than the client left waiting. The official client sees its transport end (`transport
/// close` on WebSocket, `transport error` on polling), reconnects and catches up
/// (`sync:get`, `message:history`). A socket already gone is not news.
pub fn send_failed<A: Adapter>(app: &App, s: &SocketRef<A>, event: &str, e: &SendError) {
    if !matches!(e, SendError::Socket(SocketError::InternalChannelFull)) {
        tracing::debug!(error = %e, event, sid = %s.id, "ack not sent");
        return;
    }
    let drain = &app.drain.0;
    if !drain
        .slow
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(s.id)
    {
        return; // already being closed
    }
    tracing::warn!(sid = %s.id, ns = s.ns(), event, "send buffer full: closing a slow consumer");
    crate::metrics::Metrics::kind(&app.metrics.disconnects, "slow_consumer");
    let session = session_of(s, &drain.upgrades);
    let app = app.clone();
    tokio::spawn(async move {
        let sid = session.sid;
        match app.drain.0.router.get() {
            Some(router) => close_transport(router, session).await,
            None => tracing::error!(%sid, "no HTTP service to close a slow consumer with"),
        }
        app.drain
            .0
            .slow
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&sid);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_waits_for_every_busy_handler() {
        let d = Drain::default();
        let (a, b) = (d.busy(), d.busy());
        let waiter = tokio::spawn({
            let d = d.clone();
            async move { d.idle().await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(a);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished(), "one handler still runs");
        drop(b);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("idle once both are done")
            .unwrap();
        assert_eq!(d.in_flight(), 0);
        d.idle().await;
    }

    #[test]
    fn only_a_drain_closes_sessions() {
        let d = Drain::default();
        let sid = Sid::new();
        d.closed().insert(sid);
        assert!(!d.is_draining());
        assert!(!d.closed_by_drain(sid), "no drain, no drained session");
        d.begin();
        assert!(d.is_draining());
        assert!(d.closed_by_drain(sid));
        assert!(!d.closed_by_drain(Sid::new()));
    }
}
