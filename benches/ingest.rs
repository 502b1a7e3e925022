//! `POST /collect` end to end over TLS on loopback, against a bare hyper+rustls 204 server; the
//! collector without and with a country database (`privacy.geoip_db`), and the cost of one
//! country lookup.

mod common;
#[path = "../tests/common/mmdb.rs"]
mod mmdb;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    CONNECTIONS, CpuTicks, LoadResult, Server, WARM_UP, Workload, client_config, free_port, load,
    micros_per, secs_from_env, toml_path,
};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tracks_collector::config::{SecretHash, TlsFiles};
use tracks_collector::testkit::{CertResolver, generate_self_signed, local_names, server_config};
use tracks_collector::testkit::{CountryDb, DbKey};

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

    // The country database, and the visitors' addresses: mostly inside its networks.
    let countries = CountryBench::build(dir.path());
    let addresses = Arc::new(countries.addresses.clone());

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
        workload(addresses.clone()),
    ));
    let base_cpu = baseline.cpu().since(cpu_before);
    baseline.kill();

    // The collector, the real binary, without and then with the country database.
    let off = measure_collector(
        &runtime,
        &dir.path().join("off"),
        &cert.files,
        &client_tls,
        measured,
        &addresses,
        None,
    );
    let on = measure_collector(
        &runtime,
        &dir.path().join("on"),
        &cert.files,
        &client_tls,
        measured,
        &addresses,
        Some(&countries.path),
    );
    drop(runtime);

    println!(
        "ingest bench: {CONNECTIONS} connections, {secs} s after a {} s warm-up, {}, \
         HTTP/1.1 keep-alive, loopback; each visit from its own address (X-Forwarded-For from \
         a trusted proxy)",
        WARM_UP.as_secs(),
        off.load.tls_version
    );
    println!(
        "baseline (bare hyper+rustls 204):      {}",
        base.summary_line()
    );
    println!(
        "collector POST /collect:               {}",
        off.load.summary_line()
    );
    println!(
        "collector POST /collect, country db:   {}",
        on.load.summary_line()
    );

    let ratio = off.load.per_second() / base.per_second();
    println!(
        "ratio collector/baseline: {ratio:.2} (target >= {TARGET_RATIO:.2}){}",
        if ratio >= TARGET_RATIO {
            ""
        } else {
            "  BELOW TARGET"
        }
    );
    println!(
        "ratio country db on/off: {:.2}",
        on.load.per_second() / off.load.per_second()
    );
    println!(
        "country lookup: {:.2} us per address, in process ({} networks, {:.1} MB database, \
         read and verified in {} ms; {:.0}% of the addresses in a network)",
        countries.lookup_us,
        countries.networks,
        countries.bytes as f64 / 1e6,
        countries.open_ms,
        countries.found_share * 100.0,
    );

    println!(
        "server CPU per 204 (incl. warm-up): baseline {:.0} us, collector {:.0} us \
         (writer thread {:.0} us), with the country db {:.0} us (writer thread {:.0} us)",
        micros_per(base_cpu.all, base.accepted_total),
        micros_per(off.cpu.all, off.load.accepted_total),
        micros_per(off.cpu.writer, off.load.accepted_total),
        micros_per(on.cpu.all, on.load.accepted_total),
        micros_per(on.cpu.writer, on.load.accepted_total),
    );

    let mut failed = base.report_errors("baseline");
    for (name, run) in [("collector", &off), ("collector, country db", &on)] {
        failed |= run.load.report_errors(name);
        // Every 204 must be a stored row (the collector commits pending writes on SIGTERM).
        let rows_match = run.visits == Some(run.load.accepted_total);
        println!(
            "{name}: 204 answers (warm-up + measured): {}, rows stored (stats visits): {}{}",
            run.load.accepted_total,
            run.visits
                .map_or_else(|| "unknown".to_string(), |v| v.to_string()),
            if rows_match { "" } else { "  MISMATCH" }
        );
        if !rows_match {
            failed = true;
            println!("!!! {name}: the stored row count differs from the number of 204 answers");
        }
        if !run.stopped_cleanly {
            failed = true;
            println!("!!! {name}: did not exit cleanly after SIGTERM");
        }
    }
    // The database really was used: the visits are counted under countries.
    println!(
        "visits counted under a country: {} of {} with the country db, {} without",
        on.with_country, on.load.accepted_total, off.with_country
    );
    if on.with_country == 0 || off.with_country != 0 {
        failed = true;
        println!("!!! the country database was not used as configured");
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// What one collector run came to.
struct CollectorRun {
    load: LoadResult,
    cpu: CpuTicks,
    /// `stats`' visits, after the stop.
    visits: Option<u64>,
    /// Visits in traffic rows that name a country.
    with_country: u64,
    stopped_cleanly: bool,
}

/// Starts the collector with its own folder (and `geoip_db`, if any), loads it, stops it.
fn measure_collector(
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
    tls: &TlsFiles,
    client_tls: &Arc<rustls::ClientConfig>,
    measured: Duration,
    addresses: &Arc<Vec<HeaderValue>>,
    geoip_db: Option<&Path>,
) -> CollectorRun {
    std::fs::create_dir_all(dir).expect("cannot create the collector's folder");
    let port = free_port();
    let config = write_config(dir, port, tls, geoip_db);
    let binary = env!("CARGO_BIN_EXE_tracks-collector");
    let mut collector = Server::start(
        "collector",
        Command::new(binary)
            .env_remove("RUST_LOG")
            .arg("--config")
            .arg(&config)
            .arg("serve"),
        port,
    );
    eprintln!(
        "ingest bench: loading the collector on {} ({} country database)",
        collector.addr,
        if geoip_db.is_some() {
            "with a"
        } else {
            "without"
        }
    );
    let cpu_before = collector.cpu();
    let load = runtime.block_on(load(
        collector.addr,
        client_tls.clone(),
        measured,
        workload(addresses.clone()),
    ));
    let cpu = collector.cpu().since(cpu_before);
    let stopped_cleanly = collector.terminate();
    CollectorRun {
        load,
        cpu,
        visits: stored_visits(binary, &config),
        with_country: visits_with_country(binary, &config),
        stopped_cleanly,
    }
}

/// The bench's country database: about as many networks as GeoLite2 Country holds, in
/// IPv4 and IPv6, over 250 codes; and the addresses the load sends.
struct CountryBench {
    path: PathBuf,
    networks: usize,
    bytes: usize,
    open_ms: u128,
    lookup_us: f64,
    found_share: f64,
    addresses: Vec<HeaderValue>,
}

const BENCH_NETWORKS_V4: usize = 300_000;
const BENCH_NETWORKS_V6: usize = 100_000;
const BENCH_ADDRESSES: usize = 200_000;
const LOOKUPS: usize = 1_000_000;

impl CountryBench {
    fn build(dir: &Path) -> CountryBench {
        let mut random = SplitMix(0x7261_636b_735f_6763);
        let code = |n: u64| {
            let n = (n % 250) as u8;
            format!("{}{}", char::from(b'A' + n / 26), char::from(b'A' + n % 26))
        };
        let mut prefixes: Vec<(IpAddr, u8)> = Vec::new();
        let mut networks = Vec::new();
        for _ in 0..BENCH_NETWORKS_V4 {
            // Mostly /16../24, as registries hand them out; a few larger blocks.
            let len = if random.next().is_multiple_of(10) {
                8 + (random.next() % 8) as u8
            } else {
                16 + (random.next() % 9) as u8
            };
            let bits = (random.next() as u32) & (u32::MAX << (32 - u32::from(len)));
            let address = IpAddr::V4(Ipv4Addr::from(bits));
            prefixes.push((address, len));
            networks.push(mmdb::Network::from_parts(
                address,
                len,
                &code(random.next()),
            ));
        }
        for _ in 0..BENCH_NETWORKS_V6 {
            // Global unicast (2000::/3), /29../48.
            let len = 29 + (random.next() % 20) as u8;
            let raw =
                (u128::from(random.next()) << 64 | u128::from(random.next())) >> 3 | (1u128 << 125);
            let bits = raw & (u128::MAX << (128 - u32::from(len)));
            let address = IpAddr::V6(Ipv6Addr::from(bits));
            prefixes.push((address, len));
            networks.push(mmdb::Network::from_parts(
                address,
                len,
                &code(random.next()),
            ));
        }
        let path = dir.join("countries.mmdb");
        let bytes = mmdb::country_db_bytes("GeoLite2-Country", &networks);
        std::fs::write(&path, &bytes).expect("cannot write the country database");

        // Nine in ten visitors come from an address inside a network, the rest from anywhere.
        let addresses: Vec<IpAddr> = (0..BENCH_ADDRESSES)
            .map(|_| {
                if random.next().is_multiple_of(10) {
                    return IpAddr::V4(Ipv4Addr::from(random.next() as u32));
                }
                let (network, len) = prefixes[(random.next() % prefixes.len() as u64) as usize];
                match network {
                    IpAddr::V4(v4) => {
                        let host = (random.next() as u32) & !(u32::MAX << (32 - u32::from(len)));
                        IpAddr::V4(Ipv4Addr::from(u32::from(v4) | host))
                    }
                    IpAddr::V6(v6) => {
                        let host =
                            u128::from(random.next()) & !(u128::MAX << (128 - u32::from(len)));
                        IpAddr::V6(Ipv6Addr::from(u128::from(v6) | host))
                    }
                }
            })
            .collect();

        let opened = Instant::now();
        let db = CountryDb::open(&path).expect("the bench's country database opens");
        let open_ms = opened.elapsed().as_millis();
        let found = addresses
            .iter()
            .filter(|address| db.lookup(**address).is_some())
            .count();
        let started = Instant::now();
        for n in 0..LOOKUPS {
            std::hint::black_box(db.lookup(std::hint::black_box(addresses[n % addresses.len()])));
        }
        let lookup_us = started.elapsed().as_secs_f64() * 1e6 / LOOKUPS as f64;
        CountryBench {
            path,
            networks: networks.len(),
            bytes: bytes.len(),
            open_ms,
            lookup_us,
            found_share: found as f64 / addresses.len() as f64,
            addresses: addresses
                .iter()
                .map(|address| {
                    HeaderValue::from_str(&address.to_string()).expect("an address is a header")
                })
                .collect(),
        }
    }
}

/// A small, seeded generator: the same database and addresses on every run.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The same visit on every connection, the way a landing page's script posts it, each from
/// its own visitor's address as a reverse proxy forwards it.
fn workload(addresses: Arc<Vec<HeaderValue>>) -> Arc<Workload> {
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
        request_headers: Some(Box::new(move |n| {
            vec![(
                HeaderName::from_static("x-forwarded-for"),
                addresses[(n % addresses.len() as u64) as usize].clone(),
            )]
        })),
        expect: StatusCode::NO_CONTENT,
        max_requests: MAX_REQUESTS,
    })
}

fn write_config(dir: &Path, port: u16, tls: &TlsFiles, geoip_db: Option<&Path>) -> PathBuf {
    let key_file = dir.join("db.key");
    DbKey::generate()
        .and_then(|key| key.write_new_file(&key_file))
        .expect("cannot write the database key file");
    // The load generator is one address holding all its connections, as a relay would:
    // above the default per-address cap (64) with any extra probe. It stands for a reverse
    // proxy: the visits' own addresses are in X-Forwarded-For, and not rate limited here.
    let privacy = geoip_db.map_or_else(String::new, |path| {
        format!("[privacy]\ngeoip_db = {}\n\n", toml_path(path))
    });
    let text = format!(
        "[server]\n\
         listen = \"127.0.0.1:{port}\"\n\
         tls_cert = {cert}\n\
         tls_key = {key}\n\
         allowed_origins = [\"{ORIGIN}\"]\n\
         trusted_proxies = [\"127.0.0.1/32\"]\n\
         \n\
         [storage]\n\
         path = {db}\n\
         key_file = {key_file}\n\
         \n\
         {privacy}\
         [[games]]\n\
         id = \"{GAME}\"\n\
         measure_key = \"{measure_key}\"\n\
         \n\
         [limits]\n\
         connections_per_address = 1024\n\
         visits_per_second = 1000000\n\
         visits_burst = 1000000\n\
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

/// The visits of the traffic rows that name a country (`aggregates --format json`), read
/// after the collector has stopped.
fn visits_with_country(binary: &str, config: &Path) -> u64 {
    let output = Command::new(binary)
        .env_remove("RUST_LOG")
        .arg("--config")
        .arg(config)
        .args(["aggregates", "--format", "json"])
        .stderr(Stdio::inherit())
        .output()
        .expect("cannot run the collector's aggregates command");
    let document: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
    document["traffic"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter(|row| row["country"].is_string())
                .filter_map(|row| row["visits"].as_u64())
                .sum()
        })
        .unwrap_or(0)
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
