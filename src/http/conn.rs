//! HTTP: one connection from accept to close, with a deadline on every phase: the TLS
//! handshake, the first request (first bytes, protocol detection, headers), idling between
//! requests, and the connection's age.

use std::convert::Infallible;
use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::frames::ControlBudget;
use super::limits::Slot;
use super::routes;
use crate::app::App;
use crate::config::LimitsConfig;

/// How long a connection asked to close (HTTP/2 GOAWAY, HTTP/1.1 close after the answer) may
/// take to do so when no request is in flight: a peer that ignores it is dropped then.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long requests in flight may still run on a connection asked to close. Bodies have
/// their own deadline (15 s); this is the bound behind it.
const REQUEST_GRACE: Duration = Duration::from_secs(30);

/// An accepted connection and what serving it takes.
pub(super) struct Connection {
    pub(super) stream: TcpStream,
    pub(super) peer: SocketAddr,
    /// `None` on a plain-HTTP loopback listener.
    pub(super) acceptor: Option<TlsAcceptor>,
    pub(super) app: Arc<App>,
    pub(super) builder: Arc<auto::Builder<TokioExecutor>>,
    /// The `Strict-Transport-Security` value, on TLS connections only.
    pub(super) hsts: Option<HeaderValue>,
    /// Turns true on shutdown; held until the connection ends, which is what drain waits for.
    pub(super) stopping: watch::Receiver<bool>,
    /// The connection's place under the caps, freed when it ends.
    pub(super) slot: Slot,
}

pub(super) async fn run(connection: Connection) {
    let Connection {
        mut stream,
        peer,
        acceptor,
        app,
        builder,
        hsts,
        stopping,
        slot,
    } = connection;
    let limits = app.config.limits;
    // Behind a load balancer that passes TLS through, its PROXY header names the client.
    let proxies = &app.config.server.proxy_protocol_from;
    let peer = match tokio::time::timeout(
        limits.handshake_timeout,
        super::proxy_header::client_of(&mut stream, peer, proxies),
    )
    .await
    {
        Ok(Ok(client)) => client,
        Ok(Err(reason)) => return app.metrics.connection_refused(reason),
        Err(_) => return app.metrics.connection_refused("handshake_timeout"),
    };
    let Some(acceptor) = acceptor else {
        return serve(stream, peer, app, &builder, &limits, None, stopping, slot).await;
    };
    let handshake = async {
        if speaks_plain_http(&stream).await {
            return Err(stream);
        }
        Ok(acceptor.accept(stream).await)
    };
    match tokio::time::timeout(limits.handshake_timeout, handshake).await {
        // A TLS-ALPN-01 validation: the handshake was the answer.
        Ok(Ok(Ok(stream)))
            if stream.get_ref().1.alpn_protocol() == Some(super::acme::ACME_TLS_ALPN) => {}
        Ok(Ok(Ok(stream))) => {
            serve(stream, peer, app, &builder, &limits, hsts, stopping, slot).await
        }
        Ok(Ok(Err(err))) => {
            tracing::debug!(error = %err, "TLS handshake failed");
            app.metrics.connection_refused("tls_handshake_failed");
        }
        Ok(Err(stream)) => {
            app.metrics.connection_refused("plain_http");
            answer_plain_http(stream).await;
        }
        Err(_) => app.metrics.connection_refused("handshake_timeout"),
    }
}

/// The answer to plain HTTP on the TLS port, as nginx's 497 does: a person who typed
/// `http://` learns why the page is empty. Nothing of the request is read as a request; the
/// answer holds nothing of the server's but its scheme.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Length: 81\r\n\
Connection: close\r\n\r\n\
This port speaks HTTPS only: use https:// in the address. Nothing was recorded.\r\n";

/// Whether the client's first bytes are an HTTP request line rather than a TLS record, whose
/// first byte is a content type (0x14..=0x18), never a capital letter.
async fn speaks_plain_http(stream: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(stream.peek(&mut first).await, Ok(1) if first[0].is_ascii_uppercase())
}

/// Sends [`PLAIN_HTTP_ANSWER`], then reads what the client still sends for a moment before
/// closing: a close with unread bytes would reset the connection before the answer is read.
async fn answer_plain_http(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const LINGER: Duration = Duration::from_secs(1);
    let exchange = async {
        stream.write_all(PLAIN_HTTP_ANSWER).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(LINGER, exchange).await;
}

/// Serves HTTP on `stream` until the client closes it or a deadline passes.
#[allow(clippy::too_many_arguments)]
async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    app: Arc<App>,
    builder: &auto::Builder<TokioExecutor>,
    limits: &LimitsConfig,
    hsts: Option<HeaderValue>,
    mut stopping: watch::Receiver<bool>,
    _slot: Slot,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let service = {
        let (activity, app) = (activity.clone(), app.clone());
        service_fn(move |request| {
            answer(app.clone(), peer, request, hsts.clone(), activity.begin())
        })
    };
    // HTTP/2 control frames past their budget end the connection (see `frames`).
    let stream = ControlBudget::new(stream, app.metrics.clone());
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let deadlines = Deadlines::new(limits, Instant::now());
    let mut closing: Option<Closing> = None;
    loop {
        let wake = match &closing {
            Some(closing) => closing.look_again,
            None => deadlines.next(&activity.now()),
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    ended_with_error(&app, &*err, &activity.now(), closing.is_some());
                }
                return;
            }
            // Shutdown (or the sender gone, which means the same): finish and close.
            _ = stopping.changed(), if closing.is_none() => {
                connection.as_mut().graceful_shutdown();
                closing = Some(Closing::new(Close::Shutdown, Instant::now()));
            }
            () = activity.changed.notified(), if closing.is_none() => {}
            () = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                let state = activity.now();
                match &mut closing {
                    None => {
                        if let Some(close) = deadlines.passed(&state, now) {
                            close.count(&app);
                            connection.as_mut().graceful_shutdown();
                            closing = Some(Closing::new(close, now));
                        }
                    }
                    Some(closing) => {
                        if closing.give_up(&state, now) {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// Answers one request through the routes, with the HSTS header on TLS connections. `busy`
/// counts it in flight until the answer is made.
async fn answer(
    app: Arc<App>,
    peer: SocketAddr,
    request: Request<Incoming>,
    hsts: Option<HeaderValue>,
    busy: Busy,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = match routes::handle(app, peer, request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if let Some(hsts) = hsts {
        response
            .headers_mut()
            .insert(header::STRICT_TRANSPORT_SECURITY, hsts);
    }
    drop(busy);
    Ok(response)
}

/// A connection asked to close, waiting for it to do so.
#[derive(Debug, Clone, Copy)]
struct Closing {
    close: Close,
    since: Instant,
    /// When to check whether it is done, and drop it if it has no request in flight.
    look_again: Instant,
}

impl Closing {
    fn new(close: Close, since: Instant) -> Closing {
        Closing {
            close,
            since,
            look_again: since + CLOSE_GRACE,
        }
    }

    /// At `now`, past `look_again`: whether to drop the connection, which has not closed
    /// (no request is left in flight, or they have had `REQUEST_GRACE`); if not, when to look
    /// again.
    fn give_up(&mut self, state: &ActivityState, now: Instant) -> bool {
        if state.in_flight == 0 || now >= self.since + REQUEST_GRACE {
            tracing::debug!(
                close = ?self.close,
                "the connection did not close in time; dropped"
            );
            return true;
        }
        // Requests still run: look again shortly.
        self.look_again = now + Duration::from_secs(1);
        false
    }
}

/// Why the collector asked a connection to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// No request arrived in time after connecting: a refusal, counted.
    HeaderTimeout,
    /// Answered before, then nothing for `idle_timeout`: normal.
    Idle,
    /// Older than `max_connection_age` and answering a request: normal.
    Age,
    Shutdown,
}

impl Close {
    fn count(self, app: &App) {
        match self {
            Close::HeaderTimeout => app.metrics.connection_refused("header_timeout"),
            Close::Idle | Close::Age | Close::Shutdown => {
                tracing::debug!(close = ?self, "closing a connection");
            }
        }
    }
}

/// What the service has seen on one connection, shared with its requests.
#[derive(Debug)]
struct Activity {
    state: Mutex<ActivityState>,
    /// Woken when a request starts (an old connection is retired with its answer) and when the
    /// last one in flight is answered (the idle deadline starts then).
    changed: Notify,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ActivityState {
    /// Requests being answered now.
    in_flight: usize,
    /// Whether any request has reached the service.
    requested: bool,
    /// When `in_flight` last went to zero (or the connection started).
    idle_since: Instant,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            state: Mutex::new(ActivityState {
                in_flight: 0,
                requested: false,
                idle_since: Instant::now(),
            }),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> ActivityState {
        *self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A request starts; it ends when the guard drops (answered, or dropped by hyper when the
    /// client reset it).
    fn begin(self: &Arc<Self>) -> Busy {
        let mut state = self.lock();
        state.in_flight += 1;
        state.requested = true;
        drop(state);
        self.changed.notify_one();
        Busy(self.clone())
    }
}

struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
            drop(state);
            self.0.changed.notify_one();
        }
    }
}

/// The deadlines of one connection, from its configuration and start.
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    header: Duration,
    idle: Duration,
    /// When the connection is too old.
    retire_at: Instant,
}

impl Deadlines {
    fn new(limits: &LimitsConfig, started: Instant) -> Deadlines {
        Deadlines {
            header: limits.header_timeout,
            idle: limits.idle_timeout,
            retire_at: started + limits.max_connection_age,
        }
    }

    /// When to look at the connection next.
    fn next(&self, state: &ActivityState) -> Instant {
        if state.in_flight > 0 {
            // The end of the request wakes the loop; only age applies meanwhile.
            return self.retire_at;
        }
        let wait = if state.requested {
            self.idle
        } else {
            self.header
        };
        state.idle_since + wait
    }

    /// Why the connection must close at `now`, if it must. Age retires a connection only while
    /// it answers a request, so the answer says so (`Connection: close`, or GOAWAY beside
    /// it): closing an idle HTTP/1.1 connection would race a request the client is sending.
    fn passed(&self, state: &ActivityState, now: Instant) -> Option<Close> {
        if state.in_flight > 0 {
            return (now >= self.retire_at).then_some(Close::Age);
        }
        let (wait, close) = if state.requested {
            (self.idle, Close::Idle)
        } else {
            (self.header, Close::HeaderTimeout)
        };
        (now >= state.idle_since + wait).then_some(close)
    }
}

/// Counts what a connection that ended with an error says about its client. Errors after the
/// collector asked the connection to close are its own doing; resets and other I/O errors are
/// the network's and only logged at debug.
fn ended_with_error(
    app: &App,
    err: &(dyn std::error::Error + 'static),
    state: &ActivityState,
    closing: bool,
) {
    tracing::debug!(error = %err, "connection ended with an error");
    if closing {
        return;
    }
    if let Some(reason) = refusal_reason(err, state) {
        app.metrics.connection_refused(reason);
    }
}

/// The refusal a connection error stands for, if it is one.
fn refusal_reason(
    err: &(dyn std::error::Error + 'static),
    state: &ActivityState,
) -> Option<&'static str> {
    let hyper_err = err.downcast_ref::<hyper::Error>()?;
    if hyper_err.is_timeout() {
        // hyper times the wait for each HTTP/1.1 request head, so an idle keep-alive
        // connection that has been answered ends this way too; that is no refusal.
        return (!state.requested || state.in_flight > 0).then_some("header_timeout");
    }
    if hyper_err.is_parse_too_large() {
        return Some("header_too_large");
    }
    if hyper_err.is_parse() {
        return Some("malformed_request");
    }
    let h2_err = hyper_err.source()?.downcast_ref::<h2::Error>()?;
    if !(h2_err.is_go_away() && h2_err.is_library()) {
        return None;
    }
    // ENHANCE_YOUR_CALM is h2's answer to floods: streams reset as soon as opened (the
    // "rapid reset" attack), endless CONTINUATION frames, too many errors of its own.
    Some(if h2_err.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) {
        "http2_flood"
    } else {
        "http2_protocol_error"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LimitsConfig {
        LimitsConfig {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connection_age: Duration::from_secs(3600),
            ..LimitsConfig::default()
        }
    }

    fn state(in_flight: usize, requested: bool, idle_since: Instant) -> ActivityState {
        ActivityState {
            in_flight,
            requested,
            idle_since,
        }
    }

    #[test]
    fn a_connection_without_a_request_has_the_header_deadline() {
        let start = Instant::now();
        let deadlines = Deadlines::new(&limits(), start);
        let fresh = state(0, false, start);
        assert_eq!(deadlines.next(&fresh), start + Duration::from_secs(10));
        assert_eq!(
            deadlines.passed(&fresh, start + Duration::from_secs(9)),
            None
        );
        assert_eq!(
            deadlines.passed(&fresh, start + Duration::from_secs(10)),
            Some(Close::HeaderTimeout)
        );
    }

    #[test]
    fn an_answered_connection_has_the_idle_deadline_and_a_busy_one_none() {
        let start = Instant::now();
        let deadlines = Deadlines::new(&limits(), start);
        let answered_at = start + Duration::from_secs(5);
        let idle = state(0, true, answered_at);
        assert_eq!(deadlines.next(&idle), answered_at + Duration::from_secs(60));
        assert_eq!(
            deadlines.passed(&idle, answered_at + Duration::from_secs(60)),
            Some(Close::Idle)
        );
        let busy = state(1, true, start);
        assert_eq!(
            deadlines.passed(&busy, start + Duration::from_secs(600)),
            None
        );
        assert_eq!(deadlines.next(&busy), start + Duration::from_secs(3600));
    }

    #[test]
    fn an_old_connection_retires_with_its_next_answer() {
        let start = Instant::now();
        let deadlines = Deadlines::new(&limits(), start);
        let old = start + Duration::from_secs(3600);
        assert_eq!(
            deadlines.passed(&state(3, true, start), old),
            Some(Close::Age)
        );
        // Between requests it waits for the next one, or for the idle deadline.
        let between = state(0, true, old - Duration::from_secs(1));
        assert_eq!(deadlines.passed(&between, old), None);
        assert_eq!(deadlines.next(&between), old + Duration::from_secs(59));
    }
}
