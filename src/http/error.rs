//! HTTP: every refusal as a JSON body `{"error", "message"}`, its status mapped in one match.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

use crate::ingest::{Code, ErrorKind, IngestError};
use crate::store::StoreError;

/// Seconds a client is asked to wait after a 503.
const RETRY_AFTER_SECS: &str = "1";

#[derive(Debug)]
pub(crate) enum ApiError {
    Ingest(IngestError),
    /// A write the store did not acknowledge; the code says whether it may be stored.
    Store(StoreError),
    /// `/healthz`: the store takes no writes now. The answer names only the reason's code: it
    /// is unauthenticated, and the store's error text (paths, SQLite's words) is for the log.
    Unhealthy(StoreError),
    NotFound,
    /// `/healthz` with `[server.acme]` before the first certificate arrived.
    NoCertificate,
    /// A bug, not the client's fault; details are logged where it happens.
    Internal,
    /// `/r/{link}` names no configured link.
    UnknownLink,
    MethodNotAllowed {
        allow: &'static str,
    },
    UnsupportedMediaType {
        expected: &'static str,
    },
    PayloadTooLarge {
        limit: usize,
    },
    LengthRequired,
    BodyTimeout,
    BadBody,
    OriginNotAllowed,
    Unauthenticated {
        code: Code,
        message: &'static str,
    },
    Forbidden {
        message: String,
    },
    BadQuery(crate::attribution::QueryError),
    /// A query parameter the endpoint does not know.
    UnknownParameter(String),
}

impl From<IngestError> for ApiError {
    fn from(err: IngestError) -> ApiError {
        ApiError::Ingest(err)
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        ApiError::Store(err)
    }
}

impl ApiError {
    /// The answer, and its machine code (the JSON `error`), which metrics count it by.
    pub(crate) fn into_response(self) -> (Response<Full<Bytes>>, &'static str) {
        let status = self.status();
        let extra = self.header();
        let (code, message) = self.code_and_message();
        let mut response = json_response(
            status,
            serde_json::json!({ "error": code.as_str(), "message": message }),
        );
        if let Some((name, value)) = extra {
            response.headers_mut().insert(name, value);
        }
        (response, code.as_str())
    }

    /// The status of each error, in one place.
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Ingest(err) => match err.kind {
                ErrorKind::BadInput => StatusCode::BAD_REQUEST,
                ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
                ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                ErrorKind::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            },
            ApiError::Store(_) | ApiError::Unhealthy(_) | ApiError::NoCertificate => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::NotFound | ApiError::UnknownLink => StatusCode::NOT_FOUND,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::LengthRequired => StatusCode::LENGTH_REQUIRED,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::BadBody | ApiError::BadQuery(_) | ApiError::UnknownParameter(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::OriginNotAllowed | ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
        }
    }

    /// The one header some answers add: when to come back, what the endpoint accepts, or
    /// which credentials it takes.
    fn header(&self) -> Option<(HeaderName, HeaderValue)> {
        let bearer = || (header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        let retry_soon = || {
            (
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            )
        };
        match self {
            ApiError::Ingest(err) => match err.kind {
                ErrorKind::BadInput => None,
                ErrorKind::Unauthorized => Some(bearer()),
                ErrorKind::Unavailable => Some(retry_soon()),
                ErrorKind::RateLimited(wait) => {
                    // Whole seconds, rounded up: a client waiting that long finds a token.
                    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                    Some((header::RETRY_AFTER, HeaderValue::from(secs.max(1))))
                }
            },
            ApiError::Store(_) | ApiError::Unhealthy(_) | ApiError::NoCertificate => {
                Some(retry_soon())
            }
            ApiError::MethodNotAllowed { allow } => {
                Some((header::ALLOW, HeaderValue::from_static(allow)))
            }
            ApiError::Unauthenticated { .. } => Some(bearer()),
            ApiError::NotFound
            | ApiError::Internal
            | ApiError::UnknownLink
            | ApiError::UnsupportedMediaType { .. }
            | ApiError::PayloadTooLarge { .. }
            | ApiError::LengthRequired
            | ApiError::BodyTimeout
            | ApiError::BadBody
            | ApiError::OriginNotAllowed
            | ApiError::Forbidden { .. }
            | ApiError::BadQuery(_)
            | ApiError::UnknownParameter(_) => None,
        }
    }

    /// The machine code and the sentence of each error.
    fn code_and_message(self) -> (Code, String) {
        match self {
            ApiError::Ingest(err) => (err.code, err.message),
            ApiError::Store(err) => {
                log_store_error(&err);
                let (code, message) = store_refusal(&err);
                (code, message.to_string())
            }
            ApiError::Unhealthy(err) => (
                store_refusal(&err).0,
                "the store takes no writes; the collector's log says why".to_string(),
            ),
            ApiError::NoCertificate => (
                Code::NoCertificate,
                "no certificate yet: it is being ordered from the ACME CA; the log says why it \
                 has not arrived"
                    .into(),
            ),
            ApiError::NotFound => (Code::NotFound, "no such endpoint".into()),
            ApiError::Internal => (
                Code::Internal,
                "the collector could not answer this request".into(),
            ),
            ApiError::UnknownLink => (
                Code::UnknownLink,
                "no link of this name is configured (see [[links]] in the configuration)".into(),
            ),
            ApiError::MethodNotAllowed { allow } => (
                Code::MethodNotAllowed,
                format!("this endpoint accepts {allow}"),
            ),
            ApiError::UnsupportedMediaType { expected } => (
                Code::UnsupportedMediaType,
                format!(
                    "Content-Type must be {expected}: send the header `Content-Type: {}`",
                    expected.split(' ').next().unwrap_or(expected)
                ),
            ),
            ApiError::PayloadTooLarge { limit } => (
                Code::PayloadTooLarge,
                format!("the body must be at most {limit} bytes"),
            ),
            ApiError::LengthRequired => (
                Code::LengthRequired,
                "send a Content-Length header or a chunked body".into(),
            ),
            ApiError::BodyTimeout => (
                Code::BodyTimeout,
                "the request body did not arrive in time".into(),
            ),
            ApiError::BadBody => (Code::BadBody, "the request body could not be read".into()),
            ApiError::OriginNotAllowed => (
                Code::OriginNotAllowed,
                "this origin may not report visits here (server.allowed_origins)".into(),
            ),
            ApiError::Unauthenticated { code, message } => (code, message.to_string()),
            ApiError::Forbidden { message } => (Code::InsufficientScope, message),
            ApiError::BadQuery(err) => (query_code(&err), err.to_string()),
            ApiError::UnknownParameter(name) => (
                Code::UnknownField,
                format!("unknown query parameter `{name}`"),
            ),
        }
    }
}

/// Logs a store error that is the store's fault: its details go to the log, never to the
/// client. A full queue, a slow store and a full disk are the load's and the disk's, and have
/// their own codes.
fn log_store_error(err: &StoreError) {
    if !matches!(
        err,
        StoreError::QueueFull | StoreError::Slow(_) | StoreError::DiskFull
    ) {
        tracing::error!(error = %err, "store error while answering a request");
    }
}

/// The code of a query the aggregates endpoints refuse.
fn query_code(err: &crate::attribution::QueryError) -> Code {
    match (err.missing, err.field) {
        (true, _) => Code::MissingField,
        (false, "game") => Code::UnknownGame,
        (false, _) => Code::InvalidQuery,
    }
}

/// The code and sentence of a write the store did not acknowledge. Each code makes one
/// promise (docs/api.md, "What an answer guarantees"): `not_durable` alone may have been stored;
/// the others were not.
fn store_refusal(err: &StoreError) -> (Code, &'static str) {
    match err {
        StoreError::QueueFull | StoreError::Slow(_) => (
            Code::Overloaded,
            "the collector is busy; nothing was stored; retry shortly",
        ),
        StoreError::DiskFull => (
            Code::DiskFull,
            "the collector's disk is full; nothing was stored; retry later",
        ),
        StoreError::NotDurable(_) => (
            Code::NotDurable,
            "the data may have been stored, but the collector cannot tell whether it reached \
             the disk; a retry may count it twice",
        ),
        _ => (
            Code::Unavailable,
            "the collector cannot store data right now; nothing was stored; retry later",
        ),
    }
}

pub(crate) fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    json_bytes_response(status, body.to_string().into_bytes())
}

/// A JSON answer already serialised (large documents skip the `Value` tree).
pub(crate) fn json_bytes_response(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
