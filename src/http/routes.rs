//! HTTP: routing, body limits, content types and CORS; hands parsed input to `ingest` and the
//! records to `store`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::auth::{authorize, bearer};
use super::client_ip::client_ip;
use super::error::{ApiError, json_bytes_response, json_response};
use super::{dashboard, script};
use crate::app::App;
use crate::attribution::{Query, document, read_rows};
use crate::cluster::PeerRows;
use crate::config::{AllowedOrigins, Scope};
use crate::ingest::collect::{CollectOutcome, CollectRequest, LinkVisit, ServerVisitRequest};
use crate::ingest::measure::{MeasureBody, MeasureRequest};
use crate::ingest::redirect::{destination, find_link, link_utm};
use crate::ingest::{Code, ErrorKind, IngestError};
use crate::store::{Departure, Kind};

/// Largest `/collect` body.
pub(super) const COLLECT_MAX_BYTES: usize = 8 * 1024;
/// Largest `/measure` body.
pub(super) const MEASURE_MAX_BYTES: usize = 64 * 1024;
/// Largest `/api/v1/forget` body.
const FORGET_MAX_BYTES: usize = 4 * 1024;
/// A body that has not fully arrived by then is refused with 408.
const BODY_TIMEOUT: Duration = Duration::from_secs(15);
/// How much of a refused body is still read (and dropped) so that the client, busy sending
/// it, reads the 413 rather than a reset connection; beyond it the connection is closed.
const DRAIN_LIMIT: usize = 256 * 1024;
/// How long a refusal waits for the rest of an unread body.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// A link click waits at most this long for its visit to commit, then redirects anyway.
const LINK_COMMIT_TIMEOUT: Duration = Duration::from_secs(2);
/// `/healthz` gives the writer this long to commit an empty group.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

type HttpResponse = Response<Full<Bytes>>;

pub(super) async fn handle(
    app: Arc<App>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<HttpResponse, Infallible> {
    let (parts, body) = request.into_parts();
    let mut request = Inbound {
        parts,
        body: Some(body),
        peer,
    };
    // Only the route's name is logged: a raw path or query may carry anything. The TRACKS
    // documentation's clients use the `/v1/` paths.
    let path = request.parts.uri.path().to_string();
    let route = route_of(&path);
    let client = request.client_ip(&app);
    let outcome = match admit(&app, route, client) {
        Ok(()) => dispatch(&app, &mut request, route, &path).await,
        Err(refused) => {
            slow_down(&refused).await;
            Err(refused)
        }
    };
    if AUTHENTICATED.contains(&route) && matches!(outcome, Err(ApiError::Unauthenticated { .. })) {
        app.ingest.failed_authentication(client);
    }
    let mut response = match outcome {
        Ok(response) => response,
        Err(err) => {
            let (response, code) = err.into_response();
            app.metrics.refused(route, code, response.status().as_u16());
            // An HTTP/2 client still sending its body reads a stream reset instead of an
            // answer sent before the body was read (curl: "Stream error in the HTTP/2
            // framing layer"); reading what is left first lets the refusal reach it.
            request.drain().await;
            response
        }
    };
    response.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    tracing::debug!(route, status = response.status().as_u16(), "answered");
    Ok(response)
}

/// Endpoints anyone may call without a key or a token (unknown paths too): each address pays
/// for its calls from its `public` bucket, as they cost the server without storing anything.
const PUBLIC: [&str; 6] = [
    "script",
    "dashboard",
    "healthz",
    "time",
    "identity",
    "unknown",
];
/// Endpoints behind a token: an address whose failed attempts are spent is refused before its
/// token is looked at.
const AUTHENTICATED: [&str; 7] = [
    "aggregates",
    "cluster_rows",
    "forget",
    "subject",
    "metrics",
    "ledger",
    "now",
];

/// The route a path names, as logged and counted. The TRACKS documentation's clients use the
/// `/v1/` paths.
fn route_of(path: &str) -> &'static str {
    match path {
        "/collect" | "/v1/collect" => "collect",
        "/tracks.js" => "script",
        "/dashboard" | "/dashboard.js" | "/dashboard.css" => "dashboard",
        "/measure" | "/v1/measure" => "measure",
        "/healthz" => "healthz",
        "/time" => "time",
        "/api/v1/aggregates" => "aggregates",
        crate::cluster::ROWS_PATH => "cluster_rows",
        "/api/v1/identity" => "identity",
        "/api/v1/now" => "now",
        "/api/v1/ledger" => "ledger",
        "/api/v1/forget" => "forget",
        "/api/v1/subject" => "subject",
        "/metrics" => "metrics",
        other if other.starts_with("/r/") => "link",
        _ => "unknown",
    }
}

/// The rate limits a route's callers pay before it runs (`/collect`, `/r/` and `/measure` pay
/// theirs inside, per visit and per event).
fn admit(app: &App, route: &str, client: std::net::IpAddr) -> Result<(), ApiError> {
    if PUBLIC.contains(&route) {
        app.ingest.admit_public(client)?;
    } else if AUTHENTICATED.contains(&route) {
        app.ingest.admit_authentication(client)?;
    }
    Ok(())
}

/// The longest a refusal of a spent bucket is held back.
const MOST_HELD_BACK: Duration = Duration::from_secs(1);

/// A 429 for a keyless call or a failed authentication is answered when the bucket has a cell
/// again (at most a second): a refusal costs next to nothing, so a client that asks again as
/// soon as it is answered would otherwise take as much of the server as it likes, each of its
/// connections now one request per wait.
async fn slow_down(refused: &ApiError) {
    if let ApiError::Ingest(IngestError {
        kind: ErrorKind::RateLimited(wait),
        ..
    }) = refused
    {
        tokio::time::sleep((*wait).min(MOST_HELD_BACK)).await;
    }
}

async fn dispatch(
    app: &Arc<App>,
    request: &mut Inbound,
    route: &str,
    path: &str,
) -> Result<HttpResponse, ApiError> {
    match route {
        "collect" => collect(app, request).await,
        "script" => script::serve(&request.parts.method, &request.parts.headers),
        "dashboard" => {
            let asset = match path {
                "/dashboard.js" => &*dashboard::SCRIPT,
                "/dashboard.css" => &*dashboard::STYLE,
                _ => &*dashboard::PAGE,
            };
            dashboard::serve(asset, &request.parts.method, &request.parts.headers)
        }
        "measure" => measure(app, request).await,
        "healthz" => healthz(app, request).await,
        "time" => time(request),
        "aggregates" => aggregates(app, request).await,
        "cluster_rows" => cluster_rows(app, request).await,
        "identity" => identity(app, request).await,
        "now" => now(app, request).await,
        "ledger" => ledger(app, request).await,
        "forget" => forget(app, request).await,
        "subject" => subject(app, request).await,
        "metrics" => metrics(app, request).await,
        "link" => {
            let name = path.strip_prefix("/r/").unwrap_or_default();
            link(app, request, name).await
        }
        _ => Err(ApiError::NotFound),
    }
}

/// A request whose body is read at most once.
struct Inbound {
    parts: hyper::http::request::Parts,
    /// `None` once read.
    body: Option<Incoming>,
    peer: SocketAddr,
}

impl Inbound {
    fn method(&self) -> &Method {
        &self.parts.method
    }

    fn headers(&self) -> &HeaderMap {
        &self.parts.headers
    }

    /// The client's address: the peer, or what a trusted proxy says it is.
    fn client_ip(&self, app: &App) -> std::net::IpAddr {
        client_ip(
            self.peer.ip(),
            &self.parts.headers,
            &app.config.server.trusted_proxies,
            app.config.server.client_ip_header,
        )
    }

    /// Reads the whole body, refusing more than `limit` bytes (early, from Content-Length,
    /// when the client announced it) and bodies that trickle in too slowly.
    async fn read_body(&mut self, limit: usize) -> Result<Bytes, ApiError> {
        let announced = header_str(self.headers(), header::CONTENT_LENGTH)
            .map(|value| value.trim().parse::<u64>().map_err(|_| ApiError::BadBody))
            .transpose()?;
        if announced.is_some_and(|length| length > (limit + DRAIN_LIMIT) as u64) {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        let Some(mut body) = self.body.take() else {
            return Err(ApiError::BadBody);
        };
        let chunked = self.headers().contains_key(header::TRANSFER_ENCODING);
        if announced.is_none()
            && !chunked
            && self.parts.version < hyper::Version::HTTP_2
            && body.is_end_stream()
        {
            return Err(ApiError::LengthRequired);
        }
        let capacity = announced.map_or(0, |length| length.min(limit as u64) as usize);
        let read = async move {
            let mut kept = Vec::with_capacity(capacity);
            let mut seen = 0usize;
            while let Some(frame) = body.frame().await {
                let Ok(data) = frame.map_err(|_| ApiError::BadBody)?.into_data() else {
                    continue; // trailers
                };
                seen = seen.saturating_add(data.len());
                if seen > limit + DRAIN_LIMIT {
                    break;
                }
                if seen <= limit {
                    kept.extend_from_slice(&data);
                }
            }
            if seen > limit {
                return Err(ApiError::PayloadTooLarge { limit });
            }
            Ok(Bytes::from(kept))
        };
        tokio::time::timeout(BODY_TIMEOUT, read)
            .await
            .map_err(|_| ApiError::BodyTimeout)?
    }

    /// Reads and drops what is left of the body, up to `DRAIN_LIMIT` bytes and `DRAIN_TIMEOUT`:
    /// past either the connection may be cut, which a client that sends that much or that
    /// slowly has earned.
    async fn drain(&mut self) {
        let Some(mut body) = self.body.take() else {
            return;
        };
        if body.is_end_stream() {
            return;
        }
        let drain = async move {
            let mut seen = 0usize;
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    seen = seen.saturating_add(data.len());
                    if seen > DRAIN_LIMIT {
                        break;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
    }
}

async fn collect(app: &App, request: &mut Inbound) -> Result<HttpResponse, ApiError> {
    let origin = allowed_origin(&app.config.server.allowed_origins, request.headers())?;
    let mut response = match *request.method() {
        Method::OPTIONS => preflight(),
        Method::POST => {
            require_media_type(
                request.headers(),
                &["application/json", "text/plain"],
                "application/json or text/plain",
            )?;
            let body = request.read_body(COLLECT_MAX_BYTES).await?;
            if let Some(key) = bearer(request.headers()) {
                return server_visit(app, request, &body, key).await;
            }
            app.ingest.admit_visit(request.client_ip(app))?;
            let outcome = app.ingest.collect(CollectRequest {
                body: &body,
                user_agent: header_str(request.headers(), header::USER_AGENT),
                client_ip: request.client_ip(app),
                now: crate::unix_now(),
            });
            match outcome {
                Ok(CollectOutcome::Visit(visit)) => {
                    app.store.insert_visit(visit).await?;
                    app.metrics.visit_stored();
                }
                Ok(CollectOutcome::Crawler) => app.metrics.crawler_seen(),
                Err(err) => return Err(err.into()),
            }
            empty(StatusCode::NO_CONTENT)
        }
        _ => {
            return Err(ApiError::MethodNotAllowed {
                allow: "POST, OPTIONS",
            });
        }
    };
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    Ok(response)
}

/// A server-side web visit: `/v1/collect` (or `/collect`) with a measure key, as a
/// telemetry server or a web backend sends it. Answered like `/measure`.
async fn server_visit(
    app: &App,
    request: &Inbound,
    body: &[u8],
    key: &str,
) -> Result<HttpResponse, ApiError> {
    let visit = app.ingest.server_visit(ServerVisitRequest {
        body,
        bearer: Some(key),
        client_ip: request.client_ip(app),
        now: crate::unix_now(),
    })?;
    app.store.insert_visit(Box::new(visit)).await?;
    app.metrics.visit_stored();
    Ok(json_response(
        StatusCode::OK,
        serde_json::json!({ "accepted": 1 }),
    ))
}

async fn measure(app: &App, request: &mut Inbound) -> Result<HttpResponse, ApiError> {
    if request.method() != Method::POST {
        return Err(ApiError::MethodNotAllowed { allow: "POST" });
    }
    let media = require_media_type(
        request.headers(),
        &["application/json", "application/x-www-form-urlencoded"],
        "application/json or application/x-www-form-urlencoded",
    )?;
    let body = request.read_body(MEASURE_MAX_BYTES).await?;
    let body = if media == "application/json" {
        MeasureBody::Json(&body)
    } else {
        MeasureBody::Form(&body)
    };
    let measured = app.ingest.measure(MeasureRequest {
        body,
        bearer: bearer(request.headers()),
        client_ip: request.client_ip(app),
        now: crate::unix_now(),
    })?;
    let written = app.store.insert_events(measured.events).await?;
    app.metrics.events_stored(written.stored);
    app.metrics.events_blocked(written.blocked);
    app.metrics.events_duplicate(written.duplicates);
    app.metrics
        .events_accepted(measured.game, measured.key, written.accepted());
    // 200, as the TRACKS Measurement API answers; the events are on disk (invariant 8).
    Ok(json_response(
        StatusCode::OK,
        serde_json::json!({ "accepted": written.accepted() }),
    ))
}

/// `GET /r/{link}`: records the visit, then redirects to the link's configured destination.
///
/// Only the exact name of a configured link matches, and the `Location` is built from the
/// configuration alone (plus UTM values as query values): nothing in the request can point it
/// elsewhere. A visit that cannot be stored (store full or failing, no salt yet) is logged and
/// the visitor redirected all the same: a lost click is better than a broken link.
async fn link(app: &App, request: &Inbound, name: &str) -> Result<HttpResponse, ApiError> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return Err(ApiError::MethodNotAllowed { allow: "GET, HEAD" });
    }
    let link = find_link(&app.config.links, name).ok_or(ApiError::UnknownLink)?;
    // Link previews (HEAD) are not recorded, so only a followed link takes a token.
    if request.method() == Method::GET {
        app.ingest.admit_visit(request.client_ip(app))?;
    }
    let utm = link_utm(&link.utm, request.parts.uri.query());
    let location = HeaderValue::from_str(destination(link, &utm).as_str()).map_err(|_| {
        tracing::error!(link = %link.name, "the link's destination is not a valid Location");
        ApiError::Internal
    })?;
    // HEAD is what link previewers and checkers send, not a person following the link.
    if request.method() == Method::GET {
        let headers = request.headers();
        let visit = LinkVisit {
            link: &link.name,
            game: link.game.as_deref(),
            // The host the visitor is sent to: from the configuration, never the request.
            page_host: link.destination.host_str().unwrap_or_default(),
            utm,
            referrer: header_str(headers, header::REFERER),
            user_agent: header_str(headers, header::USER_AGENT),
            client_ip: request.client_ip(app),
            now: crate::unix_now(),
        };
        record_link_visit(app, visit).await;
    }
    let mut response = empty(StatusCode::FOUND);
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    // Every click must reach the collector to be counted.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Stores a link visit, waiting for its commit (bounded); failures are logged, not answered.
async fn record_link_visit(app: &App, visit: LinkVisit<'_>) {
    let visit = match app.ingest.link_visit(visit) {
        Ok(CollectOutcome::Visit(visit)) => visit,
        Ok(CollectOutcome::Crawler) => return app.metrics.crawler_seen(),
        Err(err) => {
            return tracing::warn!(
                code = err.code.as_str(),
                "a link visit was refused; redirected anyway"
            );
        }
    };
    match tokio::time::timeout(LINK_COMMIT_TIMEOUT, app.store.insert_visit(visit)).await {
        Ok(Ok(_)) => app.metrics.visit_stored(),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "a link visit was not stored; redirected anyway")
        }
        Err(_) => tracing::warn!(
            timeout = ?LINK_COMMIT_TIMEOUT,
            "a link visit was not committed in time; redirected anyway (it may still be)"
        ),
    }
}

async fn healthz(app: &App, request: &Inbound) -> Result<HttpResponse, ApiError> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return Err(ApiError::MethodNotAllowed { allow: "GET, HEAD" });
    }
    // With ACME, nothing is served to clients until the first certificate arrives.
    if app.acme.as_ref().is_some_and(|acme| !acme.ready()) {
        return Err(ApiError::NoCertificate);
    }
    // A real write, answered once on disk: a full disk or a failing sync shows here even
    // when no other write came in. At most one a second, whoever asks.
    match app.store.probe(HEALTH_TIMEOUT).await {
        Ok(()) => {
            let mut response = Response::new(Full::new(Bytes::from_static(b"ok\n")));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(response)
        }
        Err(err) => Err(ApiError::Unhealthy(err)),
    }
}

/// `GET /time`: the server's clock, so that a game whose clock is off can send event times the
/// collector reads right (the offset is the answer minus the local time, less half the round
/// trip). No store, no key: it tells nothing but the time.
fn time(request: &Inbound) -> Result<HttpResponse, ApiError> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return Err(ApiError::MethodNotAllowed { allow: "GET, HEAD" });
    }
    let now = chrono::Utc::now();
    let mut response = json_response(
        StatusCode::OK,
        serde_json::json!({
            "unix": now.timestamp(),
            "unix_ms": now.timestamp_millis(),
            "utc": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// A blocking task that panicked: a bug, logged here, answered 500.
fn panicked(err: tokio::task::JoinError) -> ApiError {
    tracing::error!(error = %err, "a request's blocking task failed");
    ApiError::Internal
}

/// `GET /metrics`, scope `metrics`: the Prometheus text format.
async fn metrics(app: &Arc<App>, request: &Inbound) -> Result<HttpResponse, ApiError> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return Err(ApiError::MethodNotAllowed { allow: "GET, HEAD" });
    }
    authorize(&app.config.tokens, request.headers(), Scope::Metrics)?;
    let reading = app.clone();
    let outbox = tokio::task::spawn_blocking(move || reading.store.reader()?.outbox_stats())
        .await
        .map_err(panicked)??;
    let (database_bytes, wal_bytes) = app.store.file_sizes();
    let gauges = crate::metrics::Gauges {
        writable: app.store.is_writable(),
        outbox,
        database_bytes,
        wal_bytes,
        acme: app.acme.as_ref().map(|acme| acme.status.gauges()),
    };
    let text = crate::metrics::prometheus(&app.metrics.snapshot(), &gauges, crate::unix_now());
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET /api/v1/aggregates?from=YYYY-MM-DD&to=YYYY-MM-DD[&game=ID][&view=cluster|local]`,
/// scope `aggregates`. In a cluster, the merged view of every node it reaches unless
/// `view=local` asks for this node's own.
async fn aggregates(app: &Arc<App>, request: &Inbound) -> Result<HttpResponse, ApiError> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return Err(ApiError::MethodNotAllowed { allow: "GET, HEAD" });
    }
    let token = authorize(&app.config.tokens, request.headers(), Scope::Aggregates)?
        .name
        .clone();
    let [from, to, game, view] = query_parameters(request, ["from", "to", "game", "view"])?;
    let now = crate::unix_now();
    let query = day_range(app, [from, to, game], now)?;
    let cluster = match view.as_deref() {
        None | Some("cluster") => app.cluster.clone(),
        Some("local") => None,
        Some(_) => {
            return Err(ApiError::BadQuery(crate::attribution::QueryError {
                field: "view",
                message: "must be cluster or local".into(),
                missing: false,
            }));
        }
    };
    let range = (query.from_day(), query.to_day());
    let body = match cluster {
        None => {
            let app = app.clone();
            tokio::task::spawn_blocking(move || {
                let reader = app.store.reader()?;
                app.rendered.document(&reader, &app.config, &query, now)
            })
            .await
            .map_err(panicked)??
        }
        Some(cluster) => merged_document(app, &cluster, query, now).await?,
    };
    depart(app, request, Kind::Pull, token, range, body, now).await
}

/// The days `[from, to]` and the `game` a read asks for, within the retention window.
fn day_range(
    app: &App,
    [from, to, game]: [Option<String>; 3],
    now: i64,
) -> Result<Query, ApiError> {
    Query::parse(
        from.as_deref(),
        to.as_deref(),
        game.as_deref(),
        &app.config,
        now,
    )
    .map_err(ApiError::BadQuery)
}

/// The document of `query` over every node of the cluster that answers.
async fn merged_document(
    app: &Arc<App>,
    cluster: &crate::cluster::Cluster,
    query: Query,
    now: i64,
) -> Result<Vec<u8>, ApiError> {
    let (from, to, game) = (query.from_day(), query.to_day(), query.game.clone());
    let (reading, range) = (app.clone(), (from.clone(), to.clone()));
    let local = tokio::task::spawn_blocking(move || {
        read_rows(
            &reading.store.reader()?,
            &range.0,
            &range.1,
            game.as_deref(),
        )
    })
    .await
    .map_err(panicked)??;
    let (rows, status) = cluster
        .merged(local, &from, &to, query.game.as_deref())
        .await;
    read_bytes(app, move |app| {
        Ok(document(&app.config, &query, rows, Some(status), now))
    })
    .await
}

/// `GET /api/v1/cluster/rows?from=YYYY-MM-DD&to=YYYY-MM-DD[&game=ID]`, scope `peer`: this
/// node's rows before suppression, for another node of its cluster to merge. Only a node with
/// a `[cluster]` section answers.
async fn cluster_rows(app: &Arc<App>, request: &Inbound) -> Result<HttpResponse, ApiError> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return Err(ApiError::MethodNotAllowed { allow: "GET, HEAD" });
    }
    let token = authorize(&app.config.tokens, request.headers(), Scope::Peer)?
        .name
        .clone();
    let Some(cluster) = app.cluster.clone() else {
        return Err(ApiError::NotFound);
    };
    let parameters = query_parameters(request, ["from", "to", "game"])?;
    let now = crate::unix_now();
    let query = day_range(app, parameters, now)?;
    let range = (query.from_day(), query.to_day());
    let body = read_bytes(app, move |app| {
        let rows = read_rows(
            &app.store.reader()?,
            &query.from_day(),
            &query.to_day(),
            query.game.as_deref(),
        )?;
        Ok(PeerRows::of(cluster.node(), rows))
    })
    .await?;
    depart(app, request, Kind::Peer, token, range, body, now).await
}

/// Answers `body`, signed and in the ledger (on disk) before it leaves: what is not recorded
/// is not answered. A HEAD sends nothing and records nothing.
async fn depart(
    app: &App,
    request: &Inbound,
    kind: Kind,
    token: String,
    range: (String, String),
    body: Vec<u8>,
    now: i64,
) -> Result<HttpResponse, ApiError> {
    let signed = if *request.method() == Method::GET {
        let departure = Departure::of(kind, token, range, &body, app.config.ledger.keep_documents);
        let signed = app
            .store
            .record_departure(departure, app.signer.current(), now)
            .await?;
        Some(signed)
    } else {
        None
    };
    let mut response = json_bytes_response(StatusCode::OK, body);
    for (name, value) in signed.iter().flat_map(|signed| signed.headers()) {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    Ok(response)
}

/// How far back "now" reaches.
const NOW_WINDOW_SECS: i64 = 30 * 60;

/// `GET /api/v1/now`, scope `aggregates`: the visitors of the last 30 minutes, for the
/// dashboard. Fewer than `privacy.min_cell_size` is said as such, as any small cell is.
async fn now(app: &Arc<App>, request: &Inbound) -> Result<HttpResponse, ApiError> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return Err(ApiError::MethodNotAllowed { allow: "GET, HEAD" });
    }
    authorize(&app.config.tokens, request.headers(), Scope::Aggregates)?;
    query_parameters(request, [])?;
    let since = crate::unix_now() - NOW_WINDOW_SECS;
    read_json(app, move |app| {
        let visitors = app.store.reader()?.visitors_since(since)?;
        let min = i64::from(app.config.privacy.min_cell_size);
        Ok(if visitors > 0 && visitors < min {
            serde_json::json!({"minutes": NOW_WINDOW_SECS / 60, "visitors": null, "fewer_than": min})
        } else {
            serde_json::json!({"minutes": NOW_WINDOW_SECS / 60, "visitors": visitors})
        })
    })
    .await
}

/// `GET /api/v1/identity`: the public key that signs what leaves, for anyone to check a
/// document with. Public by design.
async fn identity(app: &Arc<App>, request: &Inbound) -> Result<HttpResponse, ApiError> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return Err(ApiError::MethodNotAllowed { allow: "GET, HEAD" });
    }
    let public = app.signer.current().public_key();
    Ok(json_response(
        StatusCode::OK,
        serde_json::json!({
            "algorithm": "ed25519",
            "public_key": hex::encode(public),
            "fingerprint": crate::identity::fingerprint(&public),
        }),
    ))
}

/// `GET /api/v1/ledger?limit=N`, scope `metrics`: the newest ledger rows (what left, when and
/// to whom), for the dashboard and operators.
async fn ledger(app: &Arc<App>, request: &Inbound) -> Result<HttpResponse, ApiError> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return Err(ApiError::MethodNotAllowed { allow: "GET, HEAD" });
    }
    authorize(&app.config.tokens, request.headers(), Scope::Metrics)?;
    let [limit] = query_parameters(request, ["limit"])?;
    let limit = match limit {
        None => 20,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|limit| (1..=1000).contains(limit))
            .ok_or_else(|| {
                ApiError::BadQuery(crate::attribution::QueryError {
                    field: "limit",
                    message: "must be a number from 1 to 1000".into(),
                    missing: false,
                })
            })?,
    };
    read_json(app, move |app| {
        let rows = app.store.reader()?.ledger()?;
        let public = app.signer.current().public_key();
        let newest: Vec<_> = rows.iter().rev().take(limit).collect();
        Ok(serde_json::json!({
            "fingerprint": crate::identity::fingerprint(&public),
            "rows": newest,
        }))
    })
    .await
}

/// Answers 200 with what `read` reads from the store, as JSON. Reading (a month of cells takes
/// a while) and serialising both run off the async workers, and straight to bytes (a
/// tens-of-megabytes document through serde_json::Value costs double).
async fn read_json<T: serde::Serialize>(
    app: &Arc<App>,
    read: impl FnOnce(&App) -> Result<T, ApiError> + Send + 'static,
) -> Result<HttpResponse, ApiError> {
    let body = read_bytes(app, read).await?;
    Ok(json_bytes_response(StatusCode::OK, body))
}

/// What `read` reads, serialised to JSON bytes off the async workers.
async fn read_bytes<T: serde::Serialize>(
    app: &Arc<App>,
    read: impl FnOnce(&App) -> Result<T, ApiError> + Send + 'static,
) -> Result<Vec<u8>, ApiError> {
    let app = app.clone();
    tokio::task::spawn_blocking(move || -> Result<Vec<u8>, ApiError> {
        serde_json::to_vec(&read(&app)?).map_err(|err| {
            tracing::error!(error = %err, "cannot serialise an answer");
            ApiError::Internal
        })
    })
    .await
    .map_err(panicked)?
}

/// `POST /api/v1/forget {"game", "user_id"}`, scope `forget`.
async fn forget(app: &App, request: &mut Inbound) -> Result<HttpResponse, ApiError> {
    if request.method() != Method::POST {
        return Err(ApiError::MethodNotAllowed { allow: "POST" });
    }
    authorize(&app.config.tokens, request.headers(), Scope::Forget)?;
    require_media_type(request.headers(), &["application/json"], "application/json")?;
    let body = request.read_body(FORGET_MAX_BYTES).await?;
    let target = app.ingest.forget_json(&body)?;
    let report = app
        .store
        .forget(&target.game, target.users, target.block, crate::unix_now())
        .await?;
    tracing::info!(
        measure = report.measure,
        collect = report.collect,
        "forgot and blocked a player on request"
    );
    // The block is committed with the deletions, so an answer at all means it holds.
    Ok(json_response(
        StatusCode::OK,
        serde_json::json!({
            "deleted": { "measure": report.measure, "collect": report.collect },
            "blocked": true,
        }),
    ))
}

/// `GET /api/v1/subject?game=ID&user_id=...`, scope `forget`: what is held about one player
/// (the TRACKS data request), without an address or a pseudonym.
async fn subject(app: &Arc<App>, request: &Inbound) -> Result<HttpResponse, ApiError> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return Err(ApiError::MethodNotAllowed { allow: "GET, HEAD" });
    }
    authorize(&app.config.tokens, request.headers(), Scope::Forget)?;
    let [game, user_id] = query_parameters(request, ["game", "user_id"])?;
    let required = |value: Option<String>, name: &str| {
        value.ok_or_else(|| IngestError::bad(Code::MissingField, format!("`{name}` is required")))
    };
    let target = app
        .ingest
        .subject(&required(game, "game")?, &required(user_id, "user_id")?)?;
    read_json(app, move |app| {
        Ok(app
            .store
            .reader()?
            .subject(&target.game, &target.users, &target.block)?)
    })
    .await
}

/// The values of the query parameters `names`, in their order; any other parameter is refused
/// by name (a mistyped one must not be silently ignored).
fn query_parameters<const N: usize>(
    request: &Inbound,
    names: [&str; N],
) -> Result<[Option<String>; N], ApiError> {
    let mut values: [Option<String>; N] = std::array::from_fn(|_| None);
    let query = request.parts.uri.query().unwrap_or("");
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let index = names
            .iter()
            .position(|name| *name == key)
            .ok_or_else(|| ApiError::UnknownParameter(key.chars().take(64).collect()))?;
        values[index] = Some(value.into_owned());
    }
    Ok(values)
}

/// The CORS preflight answer for an allowed origin.
fn preflight() -> HttpResponse {
    let mut response = empty(StatusCode::NO_CONTENT);
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    response
}

/// A request without `Origin` is not a browser's cross-origin request and passes; one with an
/// origin outside `allowed_origins` is refused before its body is read.
fn allowed_origin(
    allowed: &AllowedOrigins,
    headers: &HeaderMap,
) -> Result<Option<HeaderValue>, ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(None);
    };
    let permitted = origin.to_str().is_ok_and(|text| allowed.allows(text));
    if permitted {
        Ok(Some(origin.clone()))
    } else {
        Err(ApiError::OriginNotAllowed)
    }
}

/// Returns the media type (lower-case, without parameters) if it is one of `accepted`.
fn require_media_type(
    headers: &HeaderMap,
    accepted: &[&'static str],
    expected: &'static str,
) -> Result<&'static str, ApiError> {
    let media = header_str(headers, header::CONTENT_TYPE)
        .and_then(|value| value.split(';').next())
        .map(|media| media.trim().to_ascii_lowercase());
    media
        .and_then(|media| {
            accepted
                .iter()
                .find(|candidate| **candidate == media)
                .copied()
        })
        .ok_or(ApiError::UnsupportedMediaType { expected })
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

fn empty(status: StatusCode) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}
