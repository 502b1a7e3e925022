//! A fake central TRACKS platform for tests: HTTPS on 127.0.0.1 with its own CA, recording
//! every request it gets and answering as the test tells it to.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracks_collector::testkit::GeneratedCert;

/// How the platform answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Behaviour {
    /// 200 `{"status":"ok"}`.
    Accept,
    /// This status, with a short JSON error body.
    Status(u16),
    /// Waits this long, then accepts (a client with a shorter timeout has gone by then).
    Delay(Duration),
}

/// One request the platform received.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub method: String,
    pub path: String,
    pub authorization: String,
    pub idempotency_key: String,
    pub content_type: String,
    /// The document's signature headers (`tracks-signature`, ...), lower-case names.
    pub signature: std::collections::BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// The status it was answered with (`Delay` records 200, whether or not the client waited).
    pub status: u16,
}

impl Received {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON document")
    }
}

struct State {
    behaviour: Behaviour,
    received: Vec<Received>,
}

pub(crate) struct FakeCentral {
    pub addr: SocketAddr,
    /// The CA the platform's certificate chains to: the collector's `central.ca_file`.
    pub ca: PathBuf,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for FakeCentral {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A CA and a leaf for localhost in `dir`.
pub(crate) fn certificate(dir: &std::path::Path) -> GeneratedCert {
    tracks_collector::testkit::generate_self_signed(dir, &tracks_collector::testkit::local_names())
        .expect("certificate")
}

/// A loopback port nothing listens on (yet): connections to it are refused.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

impl FakeCentral {
    pub(crate) async fn start(behaviour: Behaviour) -> FakeCentral {
        let dir = tempfile::tempdir().expect("temp dir");
        let certificate = certificate(dir.path());
        FakeCentral::start_with(0, behaviour, &certificate, dir).await
    }

    /// On `port`, with a certificate made beforehand (a collector may trust its CA before
    /// the platform listens).
    pub(crate) async fn start_with(
        port: u16,
        behaviour: Behaviour,
        generated: &GeneratedCert,
        dir: tempfile::TempDir,
    ) -> FakeCentral {
        let resolver =
            tracks_collector::testkit::CertResolver::load(&generated.files).expect("load");
        let tls = tracks_collector::testkit::server_config(resolver).expect("tls config");
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let state = Arc::new(Mutex::new(State {
            behaviour,
            received: Vec::new(),
        }));
        let serving = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let state = serving.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service =
                        hyper::service::service_fn(move |request| answer(state.clone(), request));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeCentral {
            addr,
            ca: generated.ca.clone(),
            state,
            task,
            _dir: dir,
        }
    }

    /// The base URL for `central.url`.
    pub(crate) fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    pub(crate) fn set(&self, behaviour: Behaviour) {
        self.state.lock().expect("state").behaviour = behaviour;
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.state.lock().expect("state").received.clone()
    }

    /// The requests answered 2xx.
    pub(crate) fn acknowledged(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .collect()
    }

    /// Waits (at most `limit`) until `done` holds for the requests received so far.
    pub(crate) async fn wait_until(
        &self,
        limit: Duration,
        what: &str,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + limit;
        loop {
            let received = self.received();
            if done(&received) {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "the central platform did not see {what} within {limit:?}; it got {} requests: {:?}",
                received.len(),
                received
                    .iter()
                    .map(|r| (r.status, r.idempotency_key.clone()))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn answer(
    state: Arc<Mutex<State>>,
    request: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (method, path) = (
        request.method().to_string(),
        request.uri().path().to_string(),
    );
    let (authorization, idempotency_key, content_type) = (
        header("authorization"),
        header("idempotency-key"),
        header("content-type"),
    );
    let signature = [
        "tracks-signature",
        "tracks-ledger-prev",
        "tracks-signing-key",
    ]
    .into_iter()
    .map(|name| (name.to_string(), header(name)))
    .collect();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let behaviour = state.lock().expect("state").behaviour.clone();
    let status = match &behaviour {
        Behaviour::Accept | Behaviour::Delay(_) => 200,
        Behaviour::Status(status) => *status,
    };
    state.lock().expect("state").received.push(Received {
        method,
        path,
        authorization,
        idempotency_key,
        content_type,
        signature,
        body,
        status,
    });
    if let Behaviour::Delay(delay) = behaviour {
        tokio::time::sleep(delay).await;
    }
    let body = if status == 200 {
        r#"{"status":"ok"}"#.to_string()
    } else {
        format!(r#"{{"error":"test","message":"the fake platform answers {status}"}}"#)
    };
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
    Ok(response)
}
