//! HTTP: every refusal as a JSON body `{"error", "message"}` with its status, in one match.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
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
        let mut extra: Vec<(header::HeaderName, HeaderValue)> = Vec::new();
        let (status, code, message): (StatusCode, Code, String) = match self {
            ApiError::Ingest(err) => {
                let status = match err.kind {
                    ErrorKind::BadInput => StatusCode::BAD_REQUEST,
                    ErrorKind::Unauthorized => {
                        extra.push((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
                        StatusCode::UNAUTHORIZED
                    }
                    ErrorKind::Unavailable => {
                        extra.push((
                            header::RETRY_AFTER,
                            HeaderValue::from_static(RETRY_AFTER_SECS),
                        ));
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                    ErrorKind::RateLimited(wait) => {
                        // Whole seconds, rounded up: a client waiting that long finds a token.
                        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                        extra.push((header::RETRY_AFTER, HeaderValue::from(secs.max(1))));
                        StatusCode::TOO_MANY_REQUESTS
                    }
                };
                (status, err.code, err.message)
            }
            ApiError::Store(err) => {
                extra.push((
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECS),
                ));
                if !matches!(
                    err,
                    StoreError::QueueFull | StoreError::Slow(_) | StoreError::DiskFull
                ) {
                    // Details go to the log, never to the client.
                    tracing::error!(error = %err, "store error while answering a request");
                }
                let (code, message) = store_refusal(&err);
                (StatusCode::SERVICE_UNAVAILABLE, code, message.to_string())
            }
            ApiError::Unhealthy(err) => {
                extra.push((
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECS),
                ));
                let (code, _) = store_refusal(&err);
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    code,
                    "the store takes no writes; the collector's log says why".to_string(),
                )
            }
            ApiError::NoCertificate => {
                extra.push((
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECS),
                ));
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Code::NoCertificate,
                    "no certificate yet: it is being ordered from the ACME CA; the log says why \
                     it has not arrived"
                        .into(),
                )
            }
            ApiError::NotFound => (
                StatusCode::NOT_FOUND,
                Code::NotFound,
                "no such endpoint".into(),
            ),
            ApiError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Internal,
                "the collector could not answer this request".into(),
            ),
            ApiError::UnknownLink => (
                StatusCode::NOT_FOUND,
                Code::UnknownLink,
                "no link of this name is configured (see [[links]] in the configuration)".into(),
            ),
            ApiError::MethodNotAllowed { allow } => {
                extra.push((header::ALLOW, HeaderValue::from_static(allow)));
                (
                    StatusCode::METHOD_NOT_ALLOWED,
                    Code::MethodNotAllowed,
                    format!("this endpoint accepts {allow}"),
                )
            }
            ApiError::UnsupportedMediaType { expected } => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Code::UnsupportedMediaType,
                format!(
                    "Content-Type must be {expected}: send the header `Content-Type: {}`",
                    expected.split(' ').next().unwrap_or(expected)
                ),
            ),
            ApiError::PayloadTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                Code::PayloadTooLarge,
                format!("the body must be at most {limit} bytes"),
            ),
            ApiError::LengthRequired => (
                StatusCode::LENGTH_REQUIRED,
                Code::LengthRequired,
                "send a Content-Length header or a chunked body".into(),
            ),
            ApiError::BodyTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                Code::BodyTimeout,
                "the request body did not arrive in time".into(),
            ),
            ApiError::BadBody => (
                StatusCode::BAD_REQUEST,
                Code::BadBody,
                "the request body could not be read".into(),
            ),
            ApiError::OriginNotAllowed => (
                StatusCode::FORBIDDEN,
                Code::OriginNotAllowed,
                "this origin may not report visits here (server.allowed_origins)".into(),
            ),
            ApiError::Unauthenticated { code, message } => {
                extra.push((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
                (StatusCode::UNAUTHORIZED, code, message.to_string())
            }
            ApiError::Forbidden { message } => {
                (StatusCode::FORBIDDEN, Code::InsufficientScope, message)
            }
            ApiError::BadQuery(err) => {
                let code = match (err.missing, err.field) {
                    (true, _) => Code::MissingField,
                    (false, "game") => Code::UnknownGame,
                    (false, _) => Code::InvalidQuery,
                };
                (StatusCode::BAD_REQUEST, code, err.to_string())
            }
            ApiError::UnknownParameter(name) => (
                StatusCode::BAD_REQUEST,
                Code::UnknownField,
                format!("unknown query parameter `{name}`"),
            ),
        };
        let mut response = json_response(
            status,
            serde_json::json!({ "error": code.as_str(), "message": message }),
        );
        for (name, value) in extra {
            response.headers_mut().insert(name, value);
        }
        (response, code.as_str())
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
