//! Closing one client's Engine.IO transport, and refusing new ones while draining.
//!
//! socketioxide 0.18 has no public way to close a single client's Engine.IO connection:
//! `Socket::disconnect` sends a Socket.IO DISCONNECT packet (the official client reports
//! `io server disconnect` and does not reconnect), and the Engine.IO close it uses for
//! `SocketIo::close` is crate-private and closes every client at once. So the node closes
//! transports with Engine.IO's own means, from outside socketioxide:
//!
//! - **WebSocket**: every TCP connection is accepted through [`TrackedListener`], whose
//!   streams carry a [`Link`]. [`Link::close`] ends the stream's reads (and fails its
//!   writes): Engine.IO sees the connection go, closes the session (the disconnect
//!   handlers run with a transport reason) and drops the stream, so the client sees its
//!   WebSocket close: `transport close`, and it reconnects. Which connection carries a
//!   session is known from the request that opened it: [`gate`] records the upgrade
//!   request of a polling session (`transport=websocket&sid=…`), and a direct WebSocket
//!   session's handshake request, kept by Engine.IO, holds its link as `ConnectInfo`.
//! - **Long-polling**: the node posts the Engine.IO close packet `1` for the session, as
//!   a leaving client does ([`close_polling`]); Engine.IO closes the session. The
//!   client's next poll would get 400 (unknown session); [`gate`] answers it with the
//!   close packet instead, so that client also reports `transport close`.
//!
//! [`gate`] also answers 503 to every Engine.IO handshake (a request without `sid`, any
//! transport) once the drain has begun: the official client retries that, and its retry
//! lands on another node.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use futures::task::AtomicWaker;
use socketioxide::socket::Sid;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use super::Drain;
use super::plan::EngineQuery;

/// Where Engine.IO is served (socketioxide's default `req_path`).
pub const ENGINE_IO_PATH: &str = "/socket.io";
/// Upgrade records kept before dead ones are swept out (the sweep then waits for twice
/// as many as it kept).
const LINK_SWEEP_MIN: usize = 1024;

// === impl Link ===

/// A handle on one accepted TCP connection, with which the drain closes it.
#[derive(Clone, Default)]
pub struct Link(Arc<LinkState>);

#[derive(Default)]
struct LinkState {
    closed: AtomicBool,
    /// The task reading the connection, woken by [`Link::close`].
    reader: AtomicWaker,
}

impl Link {
    /// Close the connection: its reads end now (a parked read is woken) and writes fail.
    pub fn close(&self) {
        self.0.closed.store(true, Ordering::SeqCst);
        self.0.reader.wake();
    }

    pub fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::SeqCst)
    }
}

/// Every request carries the link of the connection it came on (`ConnectInfo<Link>`).
impl axum::extract::connect_info::Connected<IncomingStream<'_, TrackedListener>> for Link {
    fn connect_info(stream: IncomingStream<'_, TrackedListener>) -> Self {
        stream.io().link.clone()
    }
}

// === impl Tracked ===

/// An accepted TCP stream that [`Link::close`] can end.
pub struct Tracked {
    inner: TcpStream,
    link: Link,
}

fn closed_error() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "closed by the drain")
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        me.link.0.reader.register(cx.waker());
        if me.link.is_closed() {
            return Poll::Ready(Ok(())); // end of stream
        }
        Pin::new(&mut me.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        if me.link.is_closed() {
            return Poll::Ready(Err(closed_error()));
        }
        Pin::new(&mut me.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        if me.link.is_closed() {
            return Poll::Ready(Err(closed_error()));
        }
        Pin::new(&mut me.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

// === impl TrackedListener ===

/// The node's listener: TCP with `TCP_NODELAY` (small Socket.IO frames, an ack then an
/// update, must not wait for Nagle), each stream with its [`Link`].
pub struct TrackedListener(TcpListener);

impl TrackedListener {
    pub fn new(listener: TcpListener) -> Self {
        Self(listener)
    }
}

impl Listener for TrackedListener {
    type Io = Tracked;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Tracked, SocketAddr) {
        loop {
            match self.0.accept().await {
                Ok((tcp, addr)) => {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, "TCP_NODELAY not set");
                    }
                    let link = Link::default();
                    return (Tracked { inner: tcp, link }, addr);
                }
                // A connection that went before it was accepted: take the next one.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                    ) => {}
                // Out of file descriptors and the like: wait instead of spinning.
                Err(e) => {
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

// === impl Upgrades ===

/// Engine.IO session → the connection its WebSocket upgrade came on. Entries of closed
/// connections are swept out as the map grows, so it holds about as many entries as the
/// node has WebSocket connections.
#[derive(Default)]
pub struct Upgrades {
    map: Mutex<HashMap<Sid, Weak<LinkState>>>,
    sweep_at: AtomicUsize,
}

impl Upgrades {
    fn record(&self, sid: Sid, link: &Link) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.sweep_at.load(Ordering::Relaxed).max(LINK_SWEEP_MIN) {
            map.retain(|_, l| l.strong_count() > 0);
            self.sweep_at.store(map.len() * 2, Ordering::Relaxed);
        }
        map.insert(sid, Arc::downgrade(&link.0));
    }

    /// The live connection of `sid`'s WebSocket upgrade, if it had one.
    pub fn get(&self, sid: Sid) -> Option<Link> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&sid).and_then(Weak::upgrade).map(Link)
    }
}

/// The link a session's handshake request came on, when that handshake was a direct
/// WebSocket one (that connection then carries the session).
pub fn websocket_handshake_link(parts: &axum::http::request::Parts) -> Option<Link> {
    let query = EngineQuery::parse(parts.uri.query().unwrap_or_default());
    if !query.websocket {
        return None;
    }
    parts
        .extensions
        .get::<ConnectInfo<Link>>()
        .map(|ConnectInfo(l)| l.clone())
}

// === the gate ===

/// Middleware in front of Engine.IO: while draining, handshakes get 503 and polls of a
/// session the drain closed get the close packet; WebSocket upgrades are recorded.
pub async fn gate(State(drain): State<Drain>, req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with(ENGINE_IO_PATH) {
        return next.run(req).await;
    }
    let query = EngineQuery::parse(req.uri().query().unwrap_or_default());
    let Some(sid) = query.sid else {
        if drain.is_draining() {
            return refused();
        }
        return next.run(req).await;
    };
    let sid = sid.parse::<Sid>().ok();
    if let Some(sid) = sid {
        if query.websocket {
            if let Some(ConnectInfo(link)) = req.extensions().get::<ConnectInfo<Link>>() {
                drain.0.upgrades.record(sid, link);
            }
        } else if req.method() == Method::GET && drain.closed_by_drain(sid) {
            return close_packet();
        }
    }
    next.run(req).await
}

/// 503 for a new connection: the official client retries, and lands on another node.
fn refused() -> Response {
    let mut r = crate::http::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "this node is shutting down; connect again (another node will answer)",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    r
}

/// The Engine.IO v4 close packet as a polling response.
fn close_packet() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
        "1",
    )
        .into_response()
}

/// Close a long-polling session the way a leaving client does: post the close packet.
/// Returns whether Engine.IO took it (false: the session was gone, or is on WebSocket).
pub async fn close_polling(router: &axum::Router, sid: Sid) -> bool {
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!(
            "{ENGINE_IO_PATH}/?EIO=4&transport=polling&sid={sid}"
        ))
        .header(header::CONTENT_TYPE, "text/plain;charset=UTF-8")
        .body(Body::from("1"));
    let Ok(req) = req else {
        return false;
    };
    match router.clone().oneshot(req).await {
        Ok(res) => res.status().is_success(),
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_closed_link_ends_a_parked_read_and_fails_writes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut tracked = TrackedListener::new(listener);
        let mut peer = TcpStream::connect(addr).await.unwrap();
        let (mut io, _) = tracked.accept().await;
        let link = io.link.clone();
        peer.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(io.read(&mut buf).await.unwrap(), 2);
        // A read parked on an idle connection ends when the link is closed.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            let n = io.read(&mut buf).await.unwrap();
            (n, io.write_all(b"x").await.is_err())
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        link.close();
        let (n, write_failed) = tokio::time::timeout(Duration::from_secs(2), reader)
            .await
            .expect("the read was woken")
            .unwrap();
        assert_eq!(n, 0, "end of stream");
        assert!(write_failed);
        // The stream was dropped with the task: the peer sees the connection end.
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(2), peer.read_to_end(&mut rest))
            .await
            .expect("peer sees the close")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }

    #[test]
    fn upgrades_forget_closed_connections() {
        let up = Upgrades::default();
        let sid = Sid::new();
        let link = Link::default();
        up.record(sid, &link);
        assert!(up.get(sid).is_some());
        drop(link);
        assert!(up.get(sid).is_none(), "the connection is gone");
        for _ in 0..LINK_SWEEP_MIN + 1 {
            up.record(Sid::new(), &Link::default());
        }
        let len = up.map.lock().unwrap().len();
        assert!(len < LINK_SWEEP_MIN, "dead entries swept: {len}");
    }
}
