//! Bench support: the real binary (or a baseline) as a child process on loopback, and a TLS
//! load generator with keep-alive connections, a warm-up and bounded measured windows.
#![allow(dead_code)]

pub(crate) mod collector;
pub(crate) mod sealed_log;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, TcpListener as StdTcpListener, TcpStream as StdTcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

pub(crate) const CONNECTIONS: usize = 64;
pub(crate) const WARM_UP: Duration = Duration::from_secs(2);
/// A request that takes longer than this counts as an error (and its connection is replaced).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server gets to start accepting connections.
pub(crate) const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the collector gets to drain and commit after SIGTERM.
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The measured window from an environment variable (whole seconds, at least 1) or `default`.
pub(crate) fn secs_from_env(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|secs| *secs > 0)
            .unwrap_or_else(|| panic!("{name} must be a whole number of seconds, at least 1")),
        Err(_) => default,
    }
}

/// A count from an environment variable (a whole number, at most `max`) or `default`.
pub(crate) fn count_from_env(name: &str, default: u64, max: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|count| *count <= max)
            .unwrap_or_else(|| panic!("{name} must be a whole number from 0 to {max}")),
        Err(_) => default,
    }
}

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

/// A server process; killed when dropped, so a panic never leaves one behind.
pub(crate) struct Server {
    pub name: &'static str,
    child: Option<Child>,
    pub addr: SocketAddr,
}

impl Server {
    pub(crate) fn start(name: &'static str, command: &mut Command, port: u16) -> Server {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start the {name} server: {err}"));
        let mut server = Server {
            name,
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        server.wait_until_accepting();
        server
    }

    fn wait_until_accepting(&mut self) {
        let started = Instant::now();
        loop {
            if StdTcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            self.check_alive();
            if started.elapsed() > STARTUP_TIMEOUT {
                panic!(
                    "the {} server did not accept connections on {} within {STARTUP_TIMEOUT:?}",
                    self.name, self.addr
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Panics if the process has exited.
    pub(crate) fn check_alive(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!("the {} server exited early: {status}", self.name);
        }
    }

    /// CPU time used so far by the server's threads, from /proc (Linux).
    pub(crate) fn cpu(&self) -> CpuTicks {
        self.child
            .as_ref()
            .map_or_else(CpuTicks::default, |child| process_cpu(child.id()))
    }

    /// The most memory the process has held resident so far (`VmHWM`, Linux), in bytes.
    pub(crate) fn peak_rss_bytes(&self) -> Option<u64> {
        let child = self.child.as_ref()?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
        // `VmHWM:    12345 kB`: the kernel always reports it in KiB.
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit; true if it exited with status 0 in time.
    pub(crate) fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .is_ok_and(|status| status.success());
        if !sent {
            eprintln!("cannot send SIGTERM to the {} server", self.name);
        }
        let started = Instant::now();
        while started.elapsed() < STOP_TIMEOUT {
            match child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// CPU time used so far by the threads of process `pid`, from /proc (Linux); zero once it is
/// gone.
pub(crate) fn process_cpu(pid: u32) -> CpuTicks {
    let mut ticks = CpuTicks::default();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return ticks;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ...`: utime and stime are the 12th and 13th fields after comm.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let used: u64 = fields
            .get(11..13)
            .map(|pair| pair.iter().filter_map(|f| f.parse::<u64>().ok()).sum())
            .unwrap_or(0);
        ticks.all += used;
        if head.ends_with("(store-writer") {
            ticks.writer += used;
        }
    }
    ticks
}

/// Linux reports CPU times in USER_HZ, which is 100 on every mainstream architecture.
pub(crate) const CLOCK_TICKS_PER_SEC: f64 = 100.0;

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct CpuTicks {
    pub all: u64,
    /// The collector's SQLite writer thread.
    pub writer: u64,
}

impl CpuTicks {
    pub(crate) fn since(self, before: CpuTicks) -> CpuTicks {
        CpuTicks {
            all: self.all.saturating_sub(before.all),
            writer: self.writer.saturating_sub(before.writer),
        }
    }
}

/// Microseconds of CPU per unit of work, from clock ticks.
pub(crate) fn micros_per(ticks: u64, units: u64) -> f64 {
    ticks as f64 * 1e6 / CLOCK_TICKS_PER_SEC / units.max(1) as f64
}

/// A port that was free a moment ago (the server binds it right after).
pub(crate) fn free_port() -> u16 {
    StdTcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("cannot find a free loopback port")
        .port()
}

/// A TOML basic string holding `path`.
pub(crate) fn toml_path(path: &Path) -> String {
    let text = path
        .to_str()
        .expect("the temporary directory's path is not UTF-8");
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

// ---------------------------------------------------------------------------------------------
// Load generator
// ---------------------------------------------------------------------------------------------

pub(crate) fn client_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("cannot read ca.pem") {
        roots
            .add(cert.expect("ca.pem holds a bad certificate"))
            .expect("rustls refuses the generated CA");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("the ring provider supports the default TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// What every connection of a load sends, and what counts as success.
pub(crate) struct Workload {
    pub method: Method,
    pub path: &'static str,
    /// Sent in this order after `Host`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body of the n-th request of the load (n counts warm-up requests too, from 0).
    pub body: Box<dyn Fn(u64) -> Bytes + Send + Sync>,
    /// Headers of the n-th request on top of `headers` (e.g. a client address per request).
    pub request_headers: Option<RequestHeaders>,
    pub expect: StatusCode,
    /// Hard cap on measured requests, whatever the duration.
    pub max_requests: u64,
}

/// The headers of the n-th request of a load.
pub(crate) type RequestHeaders = Box<dyn Fn(u64) -> Vec<(HeaderName, HeaderValue)> + Send + Sync>;

/// The time windows shared by every connection.
struct Plan {
    addr: SocketAddr,
    /// The addresses the connections bind to, the n-th connection to the n-th (round robin);
    /// empty: the system picks.
    sources: Vec<IpAddr>,
    tls: TlsConnector,
    workload: Arc<Workload>,
    measure_from: Instant,
    measure_until: Instant,
    /// Hard cap on measured requests.
    max_requests: u64,
    /// Measured requests started so far, against `max_requests`.
    started: AtomicU64,
    /// Every request built so far: the body generator's sequence number.
    built: AtomicU64,
}

#[derive(Default)]
struct ConnResult {
    latencies_us: Vec<u32>,
    /// Expected answers in the measured window.
    measured_ok: u64,
    /// Expected answers in any phase: each one is data the collector promised to keep.
    accepted_total: u64,
    error_count: u64,
    errors: BTreeMap<String, u64>,
    last_finish: Option<Instant>,
    tls_version: Option<String>,
}

impl ConnResult {
    fn error(&mut self, kind: String) {
        self.error_count += 1;
        *self.errors.entry(kind).or_default() += 1;
    }
}

pub(crate) struct LoadResult {
    pub requests: u64,
    pub elapsed: Duration,
    pub p50_us: u32,
    pub p99_us: u32,
    pub accepted_total: u64,
    pub error_count: u64,
    pub errors: BTreeMap<String, u64>,
    pub tls_version: String,
}

impl LoadResult {
    pub(crate) fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub(crate) fn summary_line(&self) -> String {
        format!(
            "{:>7.0} req/s  p50 {:.2} ms  p99 {:.2} ms  ({} errors)",
            self.per_second(),
            f64::from(self.p50_us) / 1000.0,
            f64::from(self.p99_us) / 1000.0,
            self.error_count
        )
    }

    /// Prints the errors of a run, if any; true if there were some.
    pub(crate) fn report_errors(&self, name: &str) -> bool {
        if self.error_count == 0 {
            return false;
        }
        println!(
            "!!! {name}: {} ERRORS — these numbers are not valid:",
            self.error_count
        );
        for (kind, count) in &self.errors {
            println!("!!!   {count} x {kind}");
        }
        true
    }
}

/// `CONNECTIONS` keep-alive connections send `workload` for `WARM_UP`, then for `measured`
/// (or until `max_requests` measured requests started).
pub(crate) async fn load(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    measured: Duration,
    workload: Arc<Workload>,
) -> LoadResult {
    let max_requests = workload.max_requests;
    run_load(
        addr,
        tls,
        WARM_UP,
        measured,
        max_requests,
        workload,
        Vec::new(),
    )
    .await
}

/// [`load`] with the n-th connection bound to the n-th of `sources` (round robin): clients at
/// addresses of their own on loopback (127.0.0.0/8), for a balancer that routes by address.
pub(crate) async fn load_from(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    measured: Duration,
    workload: Arc<Workload>,
    sources: Vec<IpAddr>,
) -> LoadResult {
    let max_requests = workload.max_requests;
    run_load(
        addr,
        tls,
        WARM_UP,
        measured,
        max_requests,
        workload,
        sources,
    )
    .await
}

/// `CONNECTIONS` keep-alive connections send `workload` until `requests` requests started
/// (or `time_limit` passed), without a warm-up: every request counts as measured. For loads
/// that fill a store to a size rather than time it.
pub(crate) async fn load_requests(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    requests: u64,
    time_limit: Duration,
    workload: Arc<Workload>,
) -> LoadResult {
    run_load(
        addr,
        tls,
        Duration::ZERO,
        time_limit,
        requests,
        workload,
        Vec::new(),
    )
    .await
}

async fn run_load(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    warm_up: Duration,
    measured: Duration,
    max_requests: u64,
    workload: Arc<Workload>,
    sources: Vec<IpAddr>,
) -> LoadResult {
    let measure_from = Instant::now() + warm_up;
    let plan = Arc::new(Plan {
        addr,
        sources,
        tls: TlsConnector::from(tls),
        workload,
        measure_from,
        measure_until: measure_from + measured,
        max_requests,
        started: AtomicU64::new(0),
        built: AtomicU64::new(0),
    });
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|n| {
            let source = (!plan.sources.is_empty()).then(|| plan.sources[n % plan.sources.len()]);
            tokio::spawn(connection(plan.clone(), source))
        })
        .collect();

    let mut latencies = Vec::new();
    let mut result = LoadResult {
        requests: 0,
        elapsed: Duration::ZERO,
        p50_us: 0,
        p99_us: 0,
        accepted_total: 0,
        error_count: 0,
        errors: BTreeMap::new(),
        tls_version: "none".into(),
    };
    let mut last_finish = plan.measure_from;
    for task in tasks {
        let conn = task.await.expect("a load connection panicked");
        latencies.extend(conn.latencies_us);
        result.requests += conn.measured_ok;
        result.accepted_total += conn.accepted_total;
        result.error_count += conn.error_count;
        for (kind, count) in conn.errors {
            *result.errors.entry(kind).or_default() += count;
        }
        if let Some(finish) = conn.last_finish {
            last_finish = last_finish.max(finish);
        }
        if let Some(version) = conn.tls_version {
            result.tls_version = version;
        }
    }
    result.elapsed = last_finish - plan.measure_from;
    latencies.sort_unstable();
    let percentile = |p: usize| match latencies.len() {
        0 => 0,
        n => latencies[(n - 1) * p / 100],
    };
    result.p50_us = percentile(50);
    result.p99_us = percentile(99);
    result
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One keep-alive connection (from `source`, if any) sending the workload until the measured
/// window ends; reconnects after a transport error.
async fn connection(plan: Arc<Plan>, source: Option<IpAddr>) -> ConnResult {
    let mut result = ConnResult::default();
    let workload = plan.workload.clone();
    let host = HeaderValue::from_str(&format!("localhost:{}", plan.addr.port()))
        .expect("a valid Host header");
    let mut sender: Option<Sender> = None;
    loop {
        let now = Instant::now();
        if now >= plan.measure_until {
            break;
        }
        let measuring = now >= plan.measure_from;
        if measuring && plan.started.fetch_add(1, Ordering::Relaxed) >= plan.max_requests {
            break;
        }
        let ready = match sender.as_mut() {
            Some(ready) => ready,
            None => match connect(&plan.tls, plan.addr, source, &mut result.tls_version).await {
                Ok(fresh) => sender.insert(fresh),
                Err(err) => {
                    result.error(format!("connect: {err}"));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let mut request = Request::builder()
            .method(workload.method.clone())
            .uri(workload.path)
            .header(header::HOST, host.clone());
        for (name, value) in &workload.headers {
            request = request.header(name, value);
        }
        let n = plan.built.fetch_add(1, Ordering::Relaxed);
        if let Some(headers) = &workload.request_headers {
            for (name, value) in headers(n) {
                request = request.header(name, value);
            }
        }
        let body = (workload.body)(n);
        let request = request.body(Full::new(body)).expect("a valid request");
        let begin = Instant::now();
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, async {
            ready.ready().await?;
            let response = ready.send_request(request).await?;
            let status = response.status();
            response.into_body().collect().await?;
            Ok::<_, hyper::Error>(status)
        })
        .await;
        let end = Instant::now();
        let measured = begin >= plan.measure_from && begin < plan.measure_until;
        match outcome {
            Ok(Ok(status)) if status == workload.expect => {
                result.accepted_total += 1;
                if measured {
                    result.measured_ok += 1;
                    let micros = (end - begin).as_micros();
                    result
                        .latencies_us
                        .push(u32::try_from(micros).unwrap_or(u32::MAX));
                    result.last_finish = Some(end);
                }
            }
            Ok(Ok(status)) => result.error(format!("status {}", status.as_u16())),
            Ok(Err(err)) => {
                result.error(format!("transport: {err}"));
                sender = None;
            }
            Err(_) => {
                result.error(format!("timeout after {REQUEST_TIMEOUT:?}"));
                sender = None;
            }
        }
    }
    result
}

/// A TLS + HTTP/1.1 client connection to `addr` (as `localhost`), from `source` if one is
/// given; notes the TLS version in `tls_version` if it is still unknown.
async fn connect(
    tls: &TlsConnector,
    addr: SocketAddr,
    source: Option<IpAddr>,
    tls_version: &mut Option<String>,
) -> Result<Sender, String> {
    let tcp = match source {
        None => tokio::net::TcpStream::connect(addr).await,
        Some(source) => {
            let socket = match source {
                IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
                IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
            }
            .map_err(|err| err.to_string())?;
            socket
                .bind(SocketAddr::new(source, 0))
                .map_err(|err| format!("bind {source}: {err}"))?;
            socket.connect(addr).await
        }
    }
    .map_err(|err| err.to_string())?;
    tcp.set_nodelay(true).map_err(|err| err.to_string())?;
    let name = ServerName::try_from("localhost").expect("a valid server name");
    let stream = tls
        .connect(name, tcp)
        .await
        .map_err(|err| format!("TLS: {err}"))?;
    if tls_version.is_none() {
        *tls_version = Some(match stream.get_ref().1.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3".to_string(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2".to_string(),
            other => format!("{other:?}"),
        });
    }
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| format!("HTTP handshake: {err}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One request on a fresh connection: the answer's status and body, or why there is none.
pub(crate) async fn request_once(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    request: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), String> {
    tokio::time::timeout(timeout, async {
        let response = send_once(addr, tls, request).await?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|err| err.to_string())?
            .to_bytes();
        Ok((status, body))
    })
    .await
    .map_err(|_| format!("no answer within {timeout:?}"))?
}

/// One request on a fresh connection: the answer's status and its body's length, each chunk
/// dropped as it arrives (as `curl -o /dev/null` does), so a large answer's time is the
/// server's and the transfer's, not the client's copy of it.
pub(crate) async fn request_counted(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    request: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<(StatusCode, u64), String> {
    tokio::time::timeout(timeout, async {
        let response = send_once(addr, tls, request).await?;
        let status = response.status();
        let mut body = response.into_body();
        let mut length = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|err| err.to_string())?;
            length += frame.data_ref().map_or(0, |data| data.len() as u64);
        }
        Ok((status, length))
    })
    .await
    .map_err(|_| format!("no answer within {timeout:?}"))?
}

async fn send_once(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    request: Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let connector = TlsConnector::from(tls);
    let mut sender = connect(&connector, addr, None, &mut None).await?;
    sender.ready().await.map_err(|err| err.to_string())?;
    sender
        .send_request(request)
        .await
        .map_err(|err| err.to_string())
}
