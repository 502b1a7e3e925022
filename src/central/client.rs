//! HTTP: the outgoing side, one request at a time over rustls (POSTs to the central platform,
//! GETs of a cluster peer's cells), with the system's trust roots plus an optional private CA,
//! and a deadline on every step.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use url::Url;

/// The part of an answer body kept for logs: enough for the platform's error message.
const ANSWER_EXCERPT: usize = 512;
/// Answer bodies beyond this are not read.
const ANSWER_LIMIT: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error("cannot read the trust roots in {path}: {message}")]
    Roots { path: String, message: String },
    #[error("cannot connect to {target}: {message}")]
    Connect { target: String, message: String },
    #[error("no connection to {target} within {seconds} s")]
    ConnectTimeout { target: String, seconds: u64 },
    #[error("TLS with {target} failed: {message}")]
    Tls { target: String, message: String },
    #[error("no answer from {target} within {seconds} s")]
    AnswerTimeout { target: String, seconds: u64 },
    #[error("HTTP exchange with {target} failed: {message}")]
    Http { target: String, message: String },
}

/// An answer: its status, a `Retry-After` in seconds when given, and the start of its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Answer {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub excerpt: String,
}

/// What a GET answered: its status and whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fetched {
    pub status: u16,
    pub body: Bytes,
}

/// A client for requests with a Bearer token: JSON POSTs, and GETs of JSON.
#[derive(Clone)]
pub(crate) struct Client {
    tls: TlsConnector,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Client {
    /// Trusts the system's roots and the certificates in `extra_roots` (PEM). `timeout`
    /// bounds the connection (TCP and TLS) and, separately, the wait for the answer.
    pub(crate) fn new(
        extra_roots: Option<&Path>,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let mut roots = RootCertStore::empty();
        // An unreadable system store is not fatal: a private CA in `extra_roots` may be all
        // that is needed, and a connection to a public platform then fails with a clear error.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(path) = extra_roots {
            let roots_error = |message: String| ClientError::Roots {
                path: path.display().to_string(),
                message,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|err| roots_error(err.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| roots_error(err.to_string()))?;
            if certs.is_empty() {
                return Err(roots_error("no PEM certificate in it".into()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|err| roots_error(err.to_string()))?;
            }
        }
        let mut config = rustls::ClientConfig::builder_with_provider(crate::crypto::provider())
            .with_safe_default_protocol_versions()
            .map_err(|err| ClientError::Roots {
                path: "(built-in)".into(),
                message: err.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Client {
            tls: TlsConnector::from(Arc::new(config)),
            timeout,
        })
    }

    /// POSTs `body` as JSON to `url` with `Authorization: Bearer {token}` and the `headers`
    /// given, on a fresh connection.
    pub(super) async fn post_json(
        &self,
        url: &Url,
        token: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Answer, ClientError> {
        let build = |host: &str| build_request(url, host, token, headers, body);
        let (status, retry_after, body) = self.send(url, build, ANSWER_LIMIT).await?;
        // A body too large or broken still leaves the status, which decides what happens.
        let excerpt = body
            .map(|bytes| {
                String::from_utf8_lossy(&bytes[..bytes.len().min(ANSWER_EXCERPT)]).into_owned()
            })
            .unwrap_or_default();
        Ok(Answer {
            status,
            retry_after,
            excerpt,
        })
    }

    /// GETs `url` with `Authorization: Bearer {token}` on a fresh connection, reading at most
    /// `limit` bytes of the answer; a longer one is an error.
    pub(crate) async fn get(
        &self,
        url: &Url,
        token: &str,
        limit: usize,
    ) -> Result<Fetched, ClientError> {
        let build = |host: &str| {
            hyper::Request::get(path_and_query(url))
                .header(hyper::header::HOST, authority(url, host))
                .header(hyper::header::ACCEPT, "application/json")
                .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
                .header(hyper::header::USER_AGENT, USER_AGENT)
                .body(Full::new(Bytes::new()))
        };
        let (status, _, body) = self.send(url, build, limit).await?;
        let body = body.ok_or_else(|| ClientError::Http {
            target: url.host_str().unwrap_or_default().to_string(),
            message: format!("the answer is longer than {limit} bytes, or was cut"),
        })?;
        Ok(Fetched { status, body })
    }

    /// One exchange with `url`'s host: connects (TLS for https), sends what `build` makes for
    /// the host, and reads the status, `Retry-After` and the body (`None` when it is over
    /// `limit` bytes or broken).
    async fn send(
        &self,
        url: &Url,
        build: impl FnOnce(&str) -> Result<hyper::Request<Full<Bytes>>, hyper::http::Error>,
        limit: usize,
    ) -> Result<Exchanged, ClientError> {
        let host = url.host_str().unwrap_or_default().to_string();
        let port = url.port_or_known_default().unwrap_or(443);
        let target = format!("{host}:{port}");
        let seconds = self.timeout.as_secs();
        let tcp = tokio::time::timeout(self.timeout, TcpStream::connect((host.as_str(), port)))
            .await
            .map_err(|_| ClientError::ConnectTimeout {
                target: target.clone(),
                seconds,
            })?
            .map_err(|err| ClientError::Connect {
                target: target.clone(),
                message: err.to_string(),
            })?;
        let _ = tcp.set_nodelay(true);

        let request = build(&host).map_err(|err| ClientError::Http {
            target: target.clone(),
            message: err.to_string(),
        })?;
        if url.scheme() == "https" {
            // IP literals in URLs come bracketed for IPv6; ServerName wants them bare.
            let name =
                ServerName::try_from(host.trim_matches(['[', ']']).to_string()).map_err(|err| {
                    ClientError::Tls {
                        target: target.clone(),
                        message: err.to_string(),
                    }
                })?;
            let tls = tokio::time::timeout(self.timeout, self.tls.connect(name, tcp))
                .await
                .map_err(|_| ClientError::ConnectTimeout {
                    target: target.clone(),
                    seconds,
                })?
                .map_err(|err| ClientError::Tls {
                    target: target.clone(),
                    message: err.to_string(),
                })?;
            self.exchange(tls, request, &target, limit).await
        } else {
            self.exchange(tcp, request, &target, limit).await
        }
    }

    async fn exchange<S>(
        &self,
        stream: S,
        request: hyper::Request<Full<Bytes>>,
        target: &str,
        limit: usize,
    ) -> Result<Exchanged, ClientError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let http_error = |err: &dyn std::fmt::Display| ClientError::Http {
            target: target.to_string(),
            message: err.to_string(),
        };
        let seconds = self.timeout.as_secs();
        let answer = async {
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|err| http_error(&err))?;
            // The connection is driven beside the request; it ends when the exchange does.
            let driver = tokio::spawn(connection);
            let response = sender
                .send_request(request)
                .await
                .map_err(|err| http_error(&err))?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(hyper::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u64>().ok());
            let body = Limited::new(response.into_body(), limit)
                .collect()
                .await
                .ok()
                .map(|collected| collected.to_bytes());
            driver.abort();
            Ok((status, retry_after, body))
        };
        tokio::time::timeout(self.timeout, answer)
            .await
            .map_err(|_| ClientError::AnswerTimeout {
                target: target.to_string(),
                seconds,
            })?
    }
}

/// The Bearer token kept in `path`: one line without spaces. The error says what is wrong
/// with the file, for a message that names it.
pub(crate) fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|err| err.to_string())?;
    let token = text.trim();
    if token.is_empty() {
        return Err("the file is empty".into());
    }
    if token.chars().any(|c| c.is_control() || c == ' ') {
        return Err("the token must be one line without spaces".into());
    }
    Ok(token.to_string())
}

/// Status, `Retry-After` and the body of one exchange.
type Exchanged = (u16, Option<u64>, Option<Bytes>);

const USER_AGENT: &str = concat!("tracks-collector/", env!("CARGO_PKG_VERSION"));

fn build_request(
    url: &Url,
    host: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<hyper::Request<Full<Bytes>>, hyper::http::Error> {
    let mut builder = hyper::Request::post(path_and_query(url))
        .header(hyper::header::HOST, authority(url, host))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::CONTENT_LENGTH, body.len())
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(hyper::header::USER_AGENT, USER_AGENT);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::from(body)))
}

fn authority(url: &Url, host: &str) -> String {
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

fn path_and_query(url: &Url) -> String {
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_string(),
    }
}
