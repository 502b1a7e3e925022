//! HTTP: the listener, TLS handshakes, HTTP/1.1 and HTTP/2, timeouts, limits and graceful
//! shutdown. The only module that knows hyper.

pub(crate) mod acme;
mod asset;
pub(crate) mod auth;
pub(crate) mod client_ip;
mod conn;
mod dashboard;
pub(crate) mod error;
mod frames;
mod limits;
mod proxy_header;
mod routes;
mod script;
pub(crate) mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::HeaderValue;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::app::App;
use crate::config::LimitsConfig;

/// How long shutdown waits for in-flight requests before closing their connections.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent HTTP/2 streams per connection. Each may hold a request head of up to
/// `limits.max_header_bytes` while its handler waits, so this multiplies what one connection
/// holds; a browser or a relay rarely has more than a few requests in flight.
const MAX_H2_STREAMS: u32 = 32;
/// HTTP/2 flow-control windows: how much request body a client may send before the collector
/// reads it. The largest body is 64 KiB (`/measure`), so the stream window is HTTP/2's own
/// default and a connection buffers at most 256 KiB, instead of hyper's 1 MiB each.
const H2_STREAM_WINDOW: u32 = 65_535;
const H2_CONNECTION_WINDOW: u32 = 256 * 1024;
/// HTTP/2 pings: a peer that stops answering them is gone and its connection is closed.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
/// The first pause after a failed accept (EMFILE, ENFILE, ENOBUFS); doubled on each further
/// failure up to `ACCEPT_BACKOFF_MAX`, so a full descriptor table is not retried in a spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Serves `listener` until `shutdown` completes, then stops accepting, lets in-flight requests
/// finish (up to `DRAIN_TIMEOUT`) and returns. With `tls = None` it speaks plain HTTP (the
/// caller has checked that the address is loopback).
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) {
    let limits = app.config.limits;
    let admission = admission(&app);
    // Answers over TLS tell browsers to keep to HTTPS; a plain listener is a loopback behind a
    // proxy, which decides that itself.
    let hsts = tls
        .as_ref()
        .and(app.config.server.hsts.as_deref())
        .and_then(|value| {
            HeaderValue::from_str(value)
                .map_err(|_| tracing::error!("server.hsts is not a valid header value; not sent"))
                .ok()
        });
    let acceptor = tls.map(TlsAcceptor::from);
    let builder = Arc::new(builder(&limits));
    // Every connection holds a receiver: the sender sees them all dropped once drained.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);

    let mut backoff = ACCEPT_BACKOFF;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff = ACCEPT_BACKOFF;
                accepted
            }
            Err(err) => {
                app.metrics.accept_failed(&err);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = &mut shutdown => break,
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let slot = match admission.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                // Closed before a byte is read: the cheapest answer there is.
                app.metrics.connection_refused(refusal.reason());
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(conn::run(conn::Connection {
            stream,
            peer,
            acceptor: acceptor.clone(),
            app: app.clone(),
            builder: builder.clone(),
            hsts: hsts.clone(),
            stopping: stopping.clone(),
            slot,
        }));
    }
    drop(listener);
    drop(stopping);
    tracing::info!("draining in-flight requests");
    let _ = stop.send(true);
    if tokio::time::timeout(DRAIN_TIMEOUT, stop.closed())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within {DRAIN_TIMEOUT:?}; closing them");
    }
}

/// Raises the open-file limit and sets the connection caps below it.
fn admission(app: &App) -> Arc<limits::Admission> {
    let limits = app.config.limits;
    let open_files = match limits::raise_open_file_limit() {
        Ok(open_files) => open_files.now,
        Err(err) => {
            // Without the limit the cap cannot be fitted under it: assume the usual default.
            tracing::warn!(error = %err, "cannot read or raise the open-file limit; assuming 1024");
            1024
        }
    };
    let (total, lowered) = limits::connection_cap(limits.max_connections, open_files);
    if lowered {
        tracing::warn!(
            open_files,
            max_connections = total,
            "limits.max_connections lowered to fit under the open-file limit (raise LimitNOFILE=)"
        );
    }
    tracing::info!(
        open_files,
        max_connections = total,
        connections_per_address = limits.connections_per_address,
        "connection limits"
    );
    // A load balancer speaks for many clients, whether it says so in a header or in a PROXY
    // header.
    let proxies = [
        &app.config.server.trusted_proxies[..],
        &app.config.server.proxy_protocol_from[..],
    ]
    .concat();
    limits::Admission::new(limits.connections_per_address, total, proxies)
}

/// HTTP/1.1 and HTTP/2 with every buffer bounded and the header deadline set.
fn builder(limits: &LimitsConfig) -> auto::Builder<TokioExecutor> {
    let head = limits.max_header_bytes;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The read buffer bounds the request head: past it hyper answers 431 and closes. Its
    // timer drops a client whose head trickles in, and an idle keep-alive connection.
    // Half-closes allowed: hyper then does not read the connection while a request waits
    // for its commit. That read found nothing, but with the request's head still holding the
    // read buffer it allocated a new one each time (about 4 of the HTTP workers' 34 µs per
    // stored visit, profiled). A client that leaves meanwhile is seen when the answer is
    // written; the write it asked for commits either way.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .half_close(true)
        .max_buf_size(usize::try_from(head).unwrap_or(usize::MAX));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_H2_STREAMS)
        .max_header_list_size(head)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .keep_alive_interval(H2_PING_INTERVAL);
    builder
}
