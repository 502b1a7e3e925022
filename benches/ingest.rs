//! `POST /collect` end to end over TLS on loopback, against a bare hyper+rustls 204 server.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{
    CONNECTIONS, Server, WARM_UP, Workload, client_config, free_port, load, micros_per,
    secs_from_env, toml_path,
};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tracks_collector::config::{SecretHash, TlsFiles};
use tracks_collector::testkit::DbKey;
use tracks_collector::testkit::{CertResolver, generate_self_signed, local_names, server_config};

const DEFAULT_SECS: u64 = 10;
/// Hard cap on measured requests, whatever the duration.
const MAX_REQUESTS: u64 = 2_000_000;
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
    let secs = secs_from_env("INGEST_BENCH_SECS", DEFAULT_SECS);
    let measured = Duration::from_secs(secs);

    // Declared first so it is dropped last, after the servers are gone.
    let dir = tempfile::tempdir().expect("cannot create a temporary directory");
    let cert = generate_self_signed(&dir.path().join("tls"), &local_names())
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
    let base = runtime.block_on(load(
        baseline.addr,
        client_tls.clone(),
        measured,
        workload(),
    ));
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
    let coll = runtime.block_on(load(collector.addr, client_tls, measured, workload()));
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

    println!(
        "server CPU per 204 (incl. warm-up): baseline {:.0} us, collector {:.0} us \
         (of which the store-writer thread {:.0} us)",
        micros_per(base_cpu.all, base.accepted_total),
        micros_per(coll_cpu.all, coll.accepted_total),
        micros_per(coll_cpu.writer, coll.accepted_total),
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
        failed |= result.report_errors(name);
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

/// The same visit on every connection, the way a landing page's script posts it.
fn workload() -> Arc<Workload> {
    Arc::new(Workload {
        method: Method::POST,
        path: "/collect",
        headers: vec![
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::USER_AGENT, HeaderValue::from_static(USER_AGENT)),
            (header::ORIGIN, HeaderValue::from_static(ORIGIN)),
        ],
        body: Box::new(|_| Bytes::from_static(BODY.as_bytes())),
        expect: StatusCode::NO_CONTENT,
        max_requests: MAX_REQUESTS,
    })
}

fn write_config(dir: &Path, port: u16, tls: &TlsFiles) -> PathBuf {
    let key_file = dir.join("db.key");
    DbKey::generate()
        .and_then(|key| key.write_new_file(&key_file))
        .expect("cannot write the database key file");
    // The load generator is one address holding all its connections, as a relay would:
    // above the default per-address cap (64) with any extra probe.
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
         [limits]\n\
         connections_per_address = 1024\n\
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
    let resolver = CertResolver::load(&files).expect("cannot load the baseline's certificate");
    let acceptor = tokio_rustls::TlsAcceptor::from(
        server_config(resolver).expect("cannot build the baseline's TLS config"),
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
