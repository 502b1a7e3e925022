//! `POST /collect` end to end over TLS on loopback, against a bare hyper+rustls 204 server.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener as StdTcpListener, TcpStream as StdTcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;
use tracks_collector::config::{SecretHash, TlsFiles};
use tracks_collector::http::tls;
use tracks_collector::store::DbKey;

const CONNECTIONS: usize = 64;
const WARM_UP: Duration = Duration::from_secs(2);
const DEFAULT_SECS: u64 = 10;
/// Hard cap on measured requests, whatever the duration.
const MAX_REQUESTS: u64 = 2_000_000;
/// A request that takes longer than this counts as an error (and its connection is replaced).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server gets to start accepting connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the collector gets to drain and commit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const TARGET_RATIO: f64 = 0.6;

const ROLE_VAR: &str = "INGEST_BENCH_ROLE";
const PORT_VAR: &str = "INGEST_BENCH_PORT";
const CERT_VAR: &str = "INGEST_BENCH_CERT";
const KEY_VAR: &str = "INGEST_BENCH_KEY";

const GAME: &str = "bench-game";
const ORIGIN: &str = "https://mygame.example";
const USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
     (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const BODY: &str = concat!(
    r#"{"url":"https://mygame.example/landing?utm_source=twitter&utm_medium=social"#,
    r#"&utm_campaign=launch","referrer":"https://t.co/abc","consent":true,"game":"bench-game"}"#
);

fn main() -> ExitCode {
    if std::env::var(ROLE_VAR).as_deref() == Ok("baseline") {
        run_baseline();
        return ExitCode::SUCCESS;
    }
    let secs = match std::env::var("INGEST_BENCH_SECS") {
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|secs| *secs > 0)
            .expect("INGEST_BENCH_SECS must be a whole number of seconds, at least 1"),
        Err(_) => DEFAULT_SECS,
    };
    let measured = Duration::from_secs(secs);

    // Declared first so it is dropped last, after the servers are gone.
    let dir = tempfile::tempdir().expect("cannot create a temporary directory");
    let cert = tls::generate_self_signed(&dir.path().join("tls"), &tls::local_names())
        .expect("cannot generate the TLS certificate");
    let client_tls = client_config(&cert.ca);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the load generator's runtime");

    // The baseline: this same executable in its server role.
    let baseline_port = free_port();
    let mut baseline = Server::start(
        "baseline",
        Command::new(std::env::current_exe().expect("cannot find the bench executable"))
            .env(ROLE_VAR, "baseline")
            .env(PORT_VAR, baseline_port.to_string())
            .env(CERT_VAR, &cert.files.cert)
            .env(KEY_VAR, &cert.files.key),
        baseline_port,
    );
    eprintln!("ingest bench: loading the baseline on {}", baseline.addr);
    let cpu_before = baseline.cpu();
    let base = runtime.block_on(load(baseline.addr, client_tls.clone(), measured));
    let base_cpu = baseline.cpu().since(cpu_before);
    baseline.kill();

    // The collector: the real binary with its own config, database and key.
    let collector_port = free_port();
    let config = write_config(dir.path(), collector_port, &cert.files);
    let binary = env!("CARGO_BIN_EXE_tracks-collector");
    let mut collector = Server::start(
        "collector",
        Command::new(binary)
            .env_remove("RUST_LOG")
            .arg("--config")
            .arg(&config)
            .arg("serve"),
        collector_port,
    );
    eprintln!("ingest bench: loading the collector on {}", collector.addr);
    let cpu_before = collector.cpu();
    let coll = runtime.block_on(load(collector.addr, client_tls, measured));
    let coll_cpu = collector.cpu().since(cpu_before);
    drop(runtime);
    let stopped_cleanly = collector.terminate();

    println!(
        "ingest bench: {CONNECTIONS} connections, {secs} s after a {} s warm-up, {}, \
         HTTP/1.1 keep-alive, loopback",
        WARM_UP.as_secs(),
        coll.tls_version
    );
    println!("baseline (bare hyper+rustls 204):  {}", base.summary_line());
    println!("collector POST /collect:           {}", coll.summary_line());

    let ratio = coll.per_second() / base.per_second();
    println!(
        "ratio collector/baseline: {ratio:.2} (target >= {TARGET_RATIO:.2}){}",
        if ratio >= TARGET_RATIO {
            ""
        } else {
            "  BELOW TARGET"
        }
    );

    let per_request = |ticks: u64, requests: u64| {
        ticks as f64 * 1e6 / CLOCK_TICKS_PER_SEC / requests.max(1) as f64
    };
    println!(
        "server CPU per 204 (incl. warm-up): baseline {:.0} us, collector {:.0} us \
         (of which the store-writer thread {:.0} us)",
        per_request(base_cpu.all, base.accepted_total),
        per_request(coll_cpu.all, coll.accepted_total),
        per_request(coll_cpu.writer, coll.accepted_total),
    );

    // Every 204 must be a stored row (the collector commits pending writes on SIGTERM).
    let visits = stored_visits(binary, &config);
    let rows_match = visits == Some(coll.accepted_total);
    println!(
        "collector 204 answers (warm-up + measured): {}, rows stored (stats visits): {}{}",
        coll.accepted_total,
        visits.map_or_else(|| "unknown".to_string(), |v| v.to_string()),
        if rows_match { "" } else { "  MISMATCH" }
    );

    let mut failed = false;
    for (name, result) in [("baseline", &base), ("collector", &coll)] {
        if result.error_count > 0 {
            failed = true;
            println!(
                "!!! {name}: {} ERRORS — these numbers are not valid:",
                result.error_count
            );
            for (kind, count) in &result.errors {
                println!("!!!   {count} x {kind}");
            }
        }
    }
    if !rows_match {
        failed = true;
        println!("!!! collector: the stored row count differs from the number of 204 answers");
    }
    if !stopped_cleanly {
        failed = true;
        println!("!!! collector: did not exit cleanly after SIGTERM");
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

/// A server process; killed when dropped, so a panic never leaves one behind.
struct Server {
    name: &'static str,
    child: Option<Child>,
    addr: SocketAddr,
}

impl Server {
    fn start(name: &'static str, command: &mut Command, port: u16) -> Server {
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
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("the {} server exited before accepting: {status}", self.name);
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                panic!(
                    "the {} server did not accept connections on {} within {STARTUP_TIMEOUT:?}",
                    self.name, self.addr
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// CPU time used so far by the server's threads, from /proc (Linux).
    fn cpu(&self) -> CpuTicks {
        let mut ticks = CpuTicks::default();
        let Some(child) = self.child.as_ref() else {
            return ticks;
        };
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", child.id())) else {
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

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit; true if it exited with status 0 in time.
    fn terminate(&mut self) -> bool {
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

/// Linux reports CPU times in USER_HZ, which is 100 on every mainstream architecture.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

#[derive(Debug, Default, Clone, Copy)]
struct CpuTicks {
    all: u64,
    /// The collector's SQLite writer thread.
    writer: u64,
}

impl CpuTicks {
    fn since(self, before: CpuTicks) -> CpuTicks {
        CpuTicks {
            all: self.all.saturating_sub(before.all),
            writer: self.writer.saturating_sub(before.writer),
        }
    }
}

/// A port that was free a moment ago (the server binds it right after).
fn free_port() -> u16 {
    StdTcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("cannot find a free loopback port")
        .port()
}

fn write_config(dir: &Path, port: u16, tls: &TlsFiles) -> PathBuf {
    let key_file = dir.join("db.key");
    DbKey::generate()
        .and_then(|key| key.write_new_file(&key_file))
        .expect("cannot write the database key file");
    let text = format!(
        "[server]\n\
         listen = \"127.0.0.1:{port}\"\n\
         tls_cert = {cert}\n\
         tls_key = {key}\n\
         allowed_origins = [\"{ORIGIN}\"]\n\
         \n\
         [storage]\n\
         path = {db}\n\
         key_file = {key_file}\n\
         \n\
         [[games]]\n\
         id = \"{GAME}\"\n\
         measure_key = \"{measure_key}\"\n\
         \n\
         [log]\n\
         level = \"warn\"\n\
         format = \"json\"\n",
        cert = toml_path(&tls.cert),
        key = toml_path(&tls.key),
        db = toml_path(&dir.join("collector.db")),
        key_file = toml_path(&key_file),
        measure_key = SecretHash::of(b"ingest bench measure key").to_config_string(),
    );
    let path = dir.join("collector.toml");
    std::fs::write(&path, text).expect("cannot write the collector's config file");
    path
}

/// A TOML basic string holding `path`.
fn toml_path(path: &Path) -> String {
    let text = path
        .to_str()
        .expect("the temporary directory's path is not UTF-8");
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `stats --format json`'s `visits`, read after the collector has stopped.
fn stored_visits(binary: &str, config: &Path) -> Option<u64> {
    let output = Command::new(binary)
        .env_remove("RUST_LOG")
        .arg("--config")
        .arg(config)
        .args(["stats", "--format", "json"])
        .stderr(Stdio::inherit())
        .output()
        .expect("cannot run the collector's stats command");
    if !output.status.success() {
        println!("!!! `stats --format json` failed: {}", output.status);
        return None;
    }
    let stats: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("`stats --format json` did not print JSON");
    let visits = stats.get("visits").and_then(serde_json::Value::as_u64);
    if visits.is_none() {
        println!("!!! `stats --format json` has no numeric `visits` field: {stats}");
    }
    visits
}

/// The baseline role: bare hyper + rustls with the collector's TLS setup, 204 to everything,
/// until killed.
fn run_baseline() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let port: u16 = var(PORT_VAR).parse().expect("the port is not a number");
    let files = TlsFiles {
        cert: PathBuf::from(var(CERT_VAR)),
        key: PathBuf::from(var(KEY_VAR)),
    };
    let resolver = tls::CertResolver::load(&files).expect("cannot load the baseline's certificate");
    let acceptor = tokio_rustls::TlsAcceptor::from(
        tls::server_config(resolver).expect("cannot build the baseline's TLS config"),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the baseline's runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("the baseline cannot bind its port");
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10));
        builder.http2().timer(TokioTimer::new());
        let builder = Arc::new(builder);
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            let builder = builder.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    |request: Request<hyper::body::Incoming>| async move {
                        // Read the body like the collector does, then answer.
                        let _ = request.into_body().collect().await;
                        let mut response = Response::new(Full::new(Bytes::new()));
                        *response.status_mut() = StatusCode::NO_CONTENT;
                        Ok::<_, std::convert::Infallible>(response)
                    },
                );
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Load generator
// ---------------------------------------------------------------------------------------------

fn client_config(ca: &Path) -> Arc<rustls::ClientConfig> {
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

/// The time windows shared by every connection.
struct Plan {
    addr: SocketAddr,
    tls: TlsConnector,
    measure_from: Instant,
    measure_until: Instant,
    /// Measured requests started so far, against `MAX_REQUESTS`.
    started: AtomicU64,
}

#[derive(Default)]
struct ConnResult {
    latencies_us: Vec<u32>,
    /// 204s in the measured window.
    measured_ok: u64,
    /// 204s in any phase: each one is a row the collector promised to keep.
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

struct LoadResult {
    requests: u64,
    elapsed: Duration,
    p50_us: u32,
    p99_us: u32,
    accepted_total: u64,
    error_count: u64,
    errors: BTreeMap<String, u64>,
    tls_version: String,
}

impl LoadResult {
    fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn summary_line(&self) -> String {
        format!(
            "{:>7.0} req/s  p50 {:.2} ms  p99 {:.2} ms  ({} errors)",
            self.per_second(),
            f64::from(self.p50_us) / 1000.0,
            f64::from(self.p99_us) / 1000.0,
            self.error_count
        )
    }
}

async fn load(addr: SocketAddr, tls: Arc<rustls::ClientConfig>, measured: Duration) -> LoadResult {
    let measure_from = Instant::now() + WARM_UP;
    let plan = Arc::new(Plan {
        addr,
        tls: TlsConnector::from(tls),
        measure_from,
        measure_until: measure_from + measured,
        started: AtomicU64::new(0),
    });
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| tokio::spawn(connection(plan.clone())))
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

/// One keep-alive connection posting visits until the measured window ends; reconnects after a
/// transport error.
async fn connection(plan: Arc<Plan>) -> ConnResult {
    let mut result = ConnResult::default();
    let host = HeaderValue::from_str(&format!("localhost:{}", plan.addr.port()))
        .expect("a valid Host header");
    let mut sender: Option<Sender> = None;
    loop {
        let now = Instant::now();
        if now >= plan.measure_until {
            break;
        }
        let measuring = now >= plan.measure_from;
        if measuring && plan.started.fetch_add(1, Ordering::Relaxed) >= MAX_REQUESTS {
            break;
        }
        let ready = match sender.as_mut() {
            Some(ready) => ready,
            None => match connect(&plan, &mut result).await {
                Ok(fresh) => sender.insert(fresh),
                Err(err) => {
                    result.error(format!("connect: {err}"));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let request = Request::builder()
            .method(Method::POST)
            .uri("/collect")
            .header(header::HOST, host.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, USER_AGENT)
            .header(header::ORIGIN, ORIGIN)
            .body(Full::new(Bytes::from_static(BODY.as_bytes())))
            .expect("a valid request");
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
            Ok(Ok(StatusCode::NO_CONTENT)) => {
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

async fn connect(plan: &Plan, result: &mut ConnResult) -> Result<Sender, String> {
    let tcp = tokio::net::TcpStream::connect(plan.addr)
        .await
        .map_err(|err| err.to_string())?;
    tcp.set_nodelay(true).map_err(|err| err.to_string())?;
    let name = ServerName::try_from("localhost").expect("a valid server name");
    let stream = plan
        .tls
        .connect(name, tcp)
        .await
        .map_err(|err| format!("TLS: {err}"))?;
    if result.tls_version.is_none() {
        result.tls_version = Some(match stream.get_ref().1.protocol_version() {
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
