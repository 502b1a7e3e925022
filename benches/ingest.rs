//! `POST /collect` end to end over TLS on loopback, against two baselines (this executable
//! re-run as a bare hyper+rustls server, `benches/common/sealed_log.rs`): one that answers 204
//! once the body is read (HTTP and TLS alone), and a sealed log that answers once the body is
//! sealed with AES-256-GCM and fdatasynced to a preallocated file by one writer thread, syncs
//! grouped: the least a durable, encrypted ingest can cost here. The target (collector at
//! least `TARGET_RATIO` of it) is against the sealed log; the ratios to the bare one are
//! informational. In phases of one run:
//!
//! 1. the bare baseline, then the sealed log, each for `INGEST_BENCH_SECS` (default 10) after
//!    a warm-up;
//! 2. the collector (the real binary, SQLCipher store) on an empty store, the same way; then
//!    the same visits from a crawler's User-Agent, which the collector answers 204 without
//!    storing: the HTTP path alone (TLS, parsing, checks), the ceiling any store leaves below;
//!    then the visits again while another address floods `/healthz` on as many connections:
//!    what health checks cost the writer;
//! 3. growth: the same collector keeps running and `/collect` loads its store up to at least
//!    `INGEST_BENCH_GROW_VISITS` visits (default 1,000,000, at most 20,000,000; 0 skips this
//!    phase and the next two), bounded by request count and by a time limit;
//! 4. the collector again on the grown store, then both baselines again right after, so that
//!    each ratio compares measurements taken side by side;
//! 5. the collector on a fresh empty store with a country database (`privacy.geoip_db`), and
//!    the cost of one country lookup.
//!
//! Each collector's peak RSS (`VmHWM`) is read just before it stops and compared with its
//! page cache (`storage.cache_mib`) plus 64 MiB. Every 2xx answer must be a stored row.
//!
//! `INGEST_BENCH_COLLECTOR` names another build's binary to load instead of this build's: an
//! earlier commit's, for a before/after with the same bench.

mod common;
#[path = "../tests/common/mmdb.rs"]
mod mmdb;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::collector::{USER_AGENT, Visitor, collect_workload, stored_visits, write_config};
use common::sealed_log::{self, Role};
use common::{
    CONNECTIONS, CpuTicks, LoadResult, Server, WARM_UP, Workload, client_config, count_from_env,
    free_port, load, load_requests, micros_per, secs_from_env, toml_path,
};
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use tracks_collector::testkit::{Config, CountryDb, TlsFiles};
use tracks_collector::testkit::{generate_self_signed, local_names};

const DEFAULT_SECS: u64 = 10;
/// Hard cap on measured requests, whatever the duration.
const MAX_REQUESTS: u64 = 2_000_000;
const TARGET_RATIO: f64 = 0.6;

const GROW_VAR: &str = "INGEST_BENCH_GROW_VISITS";
/// About the store `storage.cache_mib`'s default is sized for.
const DEFAULT_GROW_VISITS: u64 = 1_000_000;
const MAX_GROW_VISITS: u64 = 20_000_000;
/// The growth stops at the time this rate would take, plus a minute: a stalled collector
/// ends the bench instead of holding it.
const MIN_GROWTH_RATE: u64 = 250;
/// The collector's resident memory beyond its page cache that the target allows.
const RSS_ALLOWANCE_MIB: u64 = 64;
const MIB: f64 = 1024.0 * 1024.0;

/// Answered like a visit and not stored.
const CRAWLER_AGENT: &str =
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

fn main() -> ExitCode {
    if sealed_log::run_role_if_asked() {
        return ExitCode::SUCCESS;
    }
    let secs = secs_from_env("INGEST_BENCH_SECS", DEFAULT_SECS);
    let measured = Duration::from_secs(secs);
    let grow_visits = count_from_env(GROW_VAR, DEFAULT_GROW_VISITS, MAX_GROW_VISITS);

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

    let base = measure_baselines(
        dir.path(),
        &runtime,
        &cert.files,
        &client_tls,
        measured,
        &addresses,
    );

    // The collector, the real binary, on an empty store; then on the same store grown.
    let mut collector = Collector::start(&dir.path().join("off"), &cert.files, None);
    let empty = collector.measure(&runtime, &client_tls, measured, synthesized(EMPTY_RUN));
    // Not stored, so the stored rows must still match the 204s of the other loads.
    let unstored = collector.measure_workload(
        &runtime,
        &client_tls,
        measured,
        collect_workload(CRAWLER_AGENT, Some(synthesized(EMPTY_RUN)), MAX_REQUESTS),
    );
    let (flooded, health_checks) =
        collector.measure_flooded(&runtime, &client_tls, measured, synthesized(FLOODED_RUN));
    let grown = (grow_visits > 0).then(|| {
        let growth = collector.grow(&runtime, &client_tls, grow_visits, &empty);
        let load = collector.measure(&runtime, &client_tls, measured, synthesized(GROWN_RUN));
        (growth, load)
    });
    let off = collector.stop(empty, Some(flooded), grown);
    // Right after, so that the grown store's ratio compares neighbouring measurements.
    let base_again = off.grown.as_ref().map(|_| {
        measure_baselines(
            dir.path(),
            &runtime,
            &cert.files,
            &client_tls,
            measured,
            &addresses,
        )
    });

    // The collector with the country database, on a fresh empty store.
    let mut collector =
        Collector::start(&dir.path().join("on"), &cert.files, Some(&countries.path));
    let with_db = collector.measure(&runtime, &client_tls, measured, listed(&addresses));
    let on = collector.stop(with_db, None, None);
    drop(runtime);

    println!(
        "ingest bench: {CONNECTIONS} connections, {secs} s after a {} s warm-up, {}, \
         HTTP/1.1 keep-alive, loopback; each visit from its own address (X-Forwarded-For from \
         a trusted proxy)",
        WARM_UP.as_secs(),
        off.empty.load.tls_version
    );
    println!(
        "baseline (bare hyper+rustls 204):      {}",
        base.bare.load.summary_line()
    );
    println!(
        "sealed log (AES-256-GCM, one writer, grouped fdatasync): {}",
        base.sealed.load.summary_line()
    );
    println!(
        "collector POST /collect, empty store:  {}",
        off.empty.load.summary_line()
    );
    println!(
        "collector, a crawler's (not stored):   {}",
        unstored.load.summary_line()
    );
    if let Some(flooded) = &off.flooded {
        println!(
            "collector POST /collect, /healthz flooded: {}",
            flooded.load.summary_line()
        );
    }
    println!(
        "GET /healthz, the flood beside it:    {}",
        health_checks.summary_line()
    );
    if let (Some((growth, after)), Some(base_again)) = (&off.grown, &base_again) {
        let seconds = growth.took.as_secs_f64();
        println!(
            "growth to {grow_visits} visits: {} visits in {seconds:.1} s ({:.0} visits/s, \
             p99 {:.2} ms), {} visits stored before the next measurement",
            growth.load.accepted_total,
            growth.load.accepted_total as f64 / seconds.max(1e-9),
            f64::from(growth.load.p99_us) / 1000.0,
            growth.stored_after,
        );
        println!(
            "collector POST /collect, {} visits: {}",
            growth.stored_after,
            after.load.summary_line()
        );
        println!(
            "baseline again, right after:           {}",
            base_again.bare.load.summary_line()
        );
        println!(
            "sealed log again, right after:         {}",
            base_again.sealed.load.summary_line()
        );
    } else {
        println!("growth: skipped ({GROW_VAR}=0)");
    }
    println!(
        "collector POST /collect, country db:   {}",
        on.empty.load.summary_line()
    );

    // The target is against the sealed log: what durable, encrypted storage costs at least.
    print_ratio(
        "ratio collector/sealed log, empty store",
        off.empty.load.per_second() / base.sealed.load.per_second(),
    );
    if let (Some((growth, after)), Some(base_again)) = (&off.grown, &base_again) {
        print_ratio(
            &format!(
                "ratio collector/sealed log, after growing to {} visits",
                growth.stored_after
            ),
            after.load.per_second() / base_again.sealed.load.per_second(),
        );
    }
    println!(
        "ratio collector/bare baseline, empty store: {:.2}",
        off.empty.load.per_second() / base.bare.load.per_second(),
    );
    if let (Some((growth, after)), Some(base_again)) = (&off.grown, &base_again) {
        println!(
            "ratio collector/bare baseline, after growing to {} visits: {:.2}",
            growth.stored_after,
            after.load.per_second() / base_again.bare.load.per_second(),
        );
    }
    println!(
        "ratio sealed log/bare baseline: {:.2}{}",
        base.sealed.load.per_second() / base.bare.load.per_second(),
        base_again
            .as_ref()
            .map_or_else(String::new, |again| format!(
                ", {:.2} measured again",
                again.sealed.load.per_second() / again.bare.load.per_second()
            ))
    );
    println!(
        "ratio collector/bare baseline without the store (a crawler's, the HTTP path alone): \
         {:.2}",
        unstored.load.per_second() / base.bare.load.per_second()
    );
    if let Some(flooded) = &off.flooded {
        println!(
            "ratio /collect with /healthz flooded to without: {:.2}",
            flooded.load.per_second() / off.empty.load.per_second()
        );
    }
    println!(
        "ratio country db on/off: {:.2}",
        on.empty.load.per_second() / off.empty.load.per_second()
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

    let per_204 = |run: &Measured| {
        format!(
            "{:.0} us (writer thread {:.0} us)",
            micros_per(run.cpu.all, run.load.accepted_total),
            micros_per(run.cpu.writer, run.load.accepted_total),
        )
    };
    println!(
        "server CPU per 204 (incl. warm-up): baseline {:.0} us, sealed log {:.0} us, collector \
         {}, a crawler's (not stored) {:.0} us, with the country db {}",
        micros_per(base.bare.cpu.all, base.bare.load.accepted_total),
        micros_per(base.sealed.cpu.all, base.sealed.load.accepted_total),
        per_204(&off.empty),
        micros_per(unstored.cpu.all, unstored.load.accepted_total),
        per_204(&on.empty),
    );
    if let (Some((growth, after)), Some(base_again)) = (&off.grown, &base_again) {
        println!(
            "server CPU per 204 (incl. warm-up), grown store: baseline {:.0} us, sealed log \
             {:.0} us, collector on {} visits {}",
            micros_per(base_again.bare.cpu.all, base_again.bare.load.accepted_total),
            micros_per(
                base_again.sealed.cpu.all,
                base_again.sealed.load.accepted_total
            ),
            growth.stored_after,
            per_204(after),
        );
    }

    let mut failed = base.bare.load.report_errors("baseline");
    failed |= base.sealed.load.report_errors("sealed log");
    failed |= unstored.load.report_errors("collector, a crawler's");
    // Not a failure: a collector that rate limits keyless calls answers most of them 429.
    println!(
        "the /healthz flood's other answers: {:?}",
        health_checks.errors
    );
    if let Some(flooded) = &off.flooded {
        failed |= flooded.load.report_errors("collector, /healthz flooded");
    }
    if let Some(base_again) = &base_again {
        failed |= base_again.bare.load.report_errors("baseline again");
        failed |= base_again.sealed.load.report_errors("sealed log again");
    }
    for (name, run) in [("collector", &off), ("collector, country db", &on)] {
        failed |= run.empty.load.report_errors(name);
        if let Some((growth, after)) = &run.grown {
            failed |= growth.load.report_errors(&format!("{name}, growth"));
            failed |= after.load.report_errors(&format!("{name}, grown store"));
            if growth.stored_after < growth.target {
                failed = true;
                println!(
                    "!!! {name}: the growth reached {} of {} visits (errors, or its time limit)",
                    growth.stored_after, growth.target
                );
            }
        }
        // Every 204 must be a stored row (the collector commits pending writes on SIGTERM).
        let accepted = run.accepted_total();
        let rows_match = run.visits == Some(accepted);
        println!(
            "{name}: 204 answers (warm-up + measured{}): {accepted}, rows stored (stats \
             visits): {}{}",
            if run.grown.is_some() { " + growth" } else { "" },
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
        run.print_peak_rss(&format!("{name}, {accepted} visits stored"));
    }
    // The database really was used: the visits are counted under countries.
    println!(
        "visits counted under a country: {} of {} with the country db, {} without",
        on.with_country,
        on.accepted_total(),
        off.with_country
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

fn print_ratio(label: &str, ratio: f64) {
    println!(
        "{label}: {ratio:.2} (target >= {TARGET_RATIO:.2}){}",
        if ratio >= TARGET_RATIO {
            ""
        } else {
            "  BELOW TARGET"
        }
    );
}

/// One timed load and the server CPU it took (warm-up included).
struct Measured {
    load: LoadResult,
    cpu: CpuTicks,
}

/// The two baselines, measured one right after the other.
struct Baselines {
    bare: Measured,
    sealed: Measured,
}

fn measure_baselines(
    dir: &Path,
    runtime: &tokio::runtime::Runtime,
    tls: &TlsFiles,
    client_tls: &Arc<rustls::ClientConfig>,
    measured: Duration,
    addresses: &Arc<Vec<HeaderValue>>,
) -> Baselines {
    let measure = |role| measure_baseline(role, dir, runtime, tls, client_tls, measured, addresses);
    Baselines {
        bare: measure(Role::Bare),
        sealed: measure(Role::Sealed),
    }
}

/// Starts a baseline (this same executable in the server `role`; the sealed log's file in
/// `dir`), loads it, kills it.
fn measure_baseline(
    role: Role,
    dir: &Path,
    runtime: &tokio::runtime::Runtime,
    tls: &TlsFiles,
    client_tls: &Arc<rustls::ClientConfig>,
    measured: Duration,
    addresses: &Arc<Vec<HeaderValue>>,
) -> Measured {
    let port = free_port();
    let name = match role {
        Role::Bare => "baseline",
        Role::Sealed => "sealed log",
    };
    let log_dir = dir.join("sealed-log");
    let mut baseline = Server::start(
        name,
        &mut sealed_log::role_command(role, port, tls, &log_dir),
        port,
    );
    eprintln!("ingest bench: loading the {name} on {}", baseline.addr);
    let cpu_before = baseline.cpu();
    let load = runtime.block_on(load(
        baseline.addr,
        client_tls.clone(),
        measured,
        collect_workload(USER_AGENT, Some(listed(addresses)), MAX_REQUESTS),
    ));
    let cpu = baseline.cpu().since(cpu_before);
    baseline.kill();
    Measured { load, cpu }
}

/// The growth phase: how far and how fast the store grew.
struct Growth {
    load: LoadResult,
    took: Duration,
    /// `INGEST_BENCH_GROW_VISITS`.
    target: u64,
    /// Visits answered 204 since the collector started, growth included.
    stored_after: u64,
}

/// What one collector process came to, from its start to its stop.
struct CollectorRun {
    empty: Measured,
    /// The visits while `/healthz` was flooded.
    flooded: Option<Measured>,
    /// The growth, and the measurement on the grown store.
    grown: Option<(Growth, Measured)>,
    /// `stats`' visits, after the stop.
    visits: Option<u64>,
    /// Visits in traffic rows that name a country.
    with_country: u64,
    stopped_cleanly: bool,
    peak_rss_bytes: Option<u64>,
    cache_mib: u32,
}

impl CollectorRun {
    /// The 204 answers over every load of this process: each one a promised row.
    fn accepted_total(&self) -> u64 {
        self.empty.load.accepted_total
            + self
                .flooded
                .as_ref()
                .map_or(0, |run| run.load.accepted_total)
            + self.grown.as_ref().map_or(0, |(growth, after)| {
                growth.load.accepted_total + after.load.accepted_total
            })
    }

    /// Compares the process's peak RSS with its page cache plus the allowance; `about` says
    /// which process it was.
    fn print_peak_rss(&self, about: &str) {
        let limit_mib = u64::from(self.cache_mib) + RSS_ALLOWANCE_MIB;
        let Some(bytes) = self.peak_rss_bytes else {
            println!("collector peak RSS: unknown, no VmHWM in /proc ({about})");
            return;
        };
        let within = bytes <= limit_mib * 1024 * 1024;
        println!(
            "collector peak RSS: {:.1} MiB (limit: cache_mib + {RSS_ALLOWANCE_MIB} = \
             {limit_mib} MiB) {} ({about})",
            bytes as f64 / MIB,
            if within { "BELOW LIMIT" } else { "ABOVE LIMIT" }
        );
    }
}

/// The collector, the real binary, serving its own folder.
struct Collector {
    server: Server,
    binary: PathBuf,
    config: PathBuf,
    cache_mib: u32,
}

impl Collector {
    /// Starts the collector on `dir` (with `geoip_db`, if any).
    fn start(dir: &Path, tls: &TlsFiles, geoip_db: Option<&Path>) -> Collector {
        std::fs::create_dir_all(dir).expect("cannot create the collector's folder");
        let port = free_port();
        let config = ingest_config(dir, port, tls, geoip_db);
        // The page cache the collector really gets, default or not.
        let cache_mib = Config::load(&config)
            .expect("the bench's config does not load")
            .storage
            .cache_mib;
        let binary = std::env::var_os("INGEST_BENCH_COLLECTOR").map_or_else(
            || env!("CARGO_BIN_EXE_tracks-collector").into(),
            PathBuf::from,
        );
        let server = Server::start(
            "collector",
            Command::new(&binary)
                .env_remove("RUST_LOG")
                .arg("--config")
                .arg(&config)
                .arg("serve"),
            port,
        );
        eprintln!(
            "ingest bench: started the collector on {} ({} country database)",
            server.addr,
            if geoip_db.is_some() {
                "with a"
            } else {
                "without"
            }
        );
        Collector {
            server,
            binary,
            config,
            cache_mib,
        }
    }

    /// A warm-up, then `measured`, of the landing page's visits from `visitor`.
    fn measure(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        client_tls: &Arc<rustls::ClientConfig>,
        measured: Duration,
        visitor: Visitor,
    ) -> Measured {
        self.measure_workload(
            runtime,
            client_tls,
            measured,
            collect_workload(USER_AGENT, Some(visitor), MAX_REQUESTS),
        )
    }

    /// [`Collector::measure`] while as many connections from another address ask `/healthz`
    /// as fast as it answers; answers the visits' load and the health checks'.
    fn measure_flooded(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        client_tls: &Arc<rustls::ClientConfig>,
        measured: Duration,
        visitor: Visitor,
    ) -> (Measured, LoadResult) {
        eprintln!(
            "ingest bench: loading the collector on {} while /healthz is flooded",
            self.server.addr
        );
        let cpu_before = self.server.cpu();
        let (visits, checks) = runtime.block_on(async {
            tokio::join!(
                load(
                    self.server.addr,
                    client_tls.clone(),
                    measured,
                    collect_workload(USER_AGENT, Some(visitor), MAX_REQUESTS),
                ),
                load(
                    self.server.addr,
                    client_tls.clone(),
                    measured,
                    health_flood()
                ),
            )
        });
        let visits = Measured {
            load: visits,
            cpu: self.server.cpu().since(cpu_before),
        };
        (visits, checks)
    }

    /// A warm-up, then `measured`, of `workload`.
    fn measure_workload(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        client_tls: &Arc<rustls::ClientConfig>,
        measured: Duration,
        workload: Arc<Workload>,
    ) -> Measured {
        eprintln!(
            "ingest bench: loading the collector on {}",
            self.server.addr
        );
        let cpu_before = self.server.cpu();
        let load = runtime.block_on(load(
            self.server.addr,
            client_tls.clone(),
            measured,
            workload,
        ));
        Measured {
            load,
            cpu: self.server.cpu().since(cpu_before),
        }
    }

    /// Loads the store until it holds at least `target` visits, counting those `empty` stored.
    fn grow(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        client_tls: &Arc<rustls::ClientConfig>,
        target: u64,
        empty: &Measured,
    ) -> Growth {
        let requests = target.saturating_sub(empty.load.accepted_total);
        let time_limit = Duration::from_secs(60 + requests / MIN_GROWTH_RATE);
        eprintln!(
            "ingest bench: growing the store to {target} visits ({requests} requests, at most \
             {} s)",
            time_limit.as_secs()
        );
        let started = Instant::now();
        let load = runtime.block_on(load_requests(
            self.server.addr,
            client_tls.clone(),
            requests,
            time_limit,
            collect_workload(USER_AGENT, Some(synthesized(GROWTH)), MAX_REQUESTS),
        ));
        let took = started.elapsed();
        self.server.check_alive();
        Growth {
            stored_after: empty.load.accepted_total + load.accepted_total,
            load,
            took,
            target,
        }
    }

    /// Reads the peak RSS, stops the collector (SIGTERM) and reads what it stored.
    fn stop(
        mut self,
        empty: Measured,
        flooded: Option<Measured>,
        grown: Option<(Growth, Measured)>,
    ) -> CollectorRun {
        let peak_rss_bytes = self.server.peak_rss_bytes();
        let stopped_cleanly = self.server.terminate();
        CollectorRun {
            empty,
            flooded,
            grown,
            visits: stored_visits(&self.binary, &self.config),
            with_country: visits_with_country(&self.binary, &self.config),
            stopped_cleanly,
            peak_rss_bytes,
            cache_mib: self.cache_mib,
        }
    }
}

/// Visitors from the bench's address list, from its first entry.
fn listed(addresses: &Arc<Vec<HeaderValue>>) -> Visitor {
    let addresses = addresses.clone();
    Box::new(move |n| addresses[(n % addresses.len() as u64) as usize].clone())
}

/// Where each load of the collector without the country database takes its visitors from
/// `synthesized`: ranges of 2^28 requests apart, so that every visit it stores comes from an
/// address of its own, a new visitor, as the load asks (each load is bounded by
/// `MAX_REQUESTS`, the growth by 20 M visits). The crawler's visits, not stored, reuse the
/// empty store's.
const EMPTY_RUN: u32 = 0;
const FLOODED_RUN: u32 = 1 << 28;
const GROWTH: u32 = 2 << 28;
const GROWN_RUN: u32 = 3 << 28;

/// Distinct IPv4 visitors from the `first`-th on: multiplying by an odd number is a bijection
/// on u32, so no address repeats below 2^32 requests.
fn synthesized(first: u32) -> Visitor {
    Box::new(move |n| {
        let address = Ipv4Addr::from((n as u32).wrapping_add(first).wrapping_mul(0x9e37_79b1));
        HeaderValue::from_str(&address.to_string()).expect("an address is a header")
    })
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
/// More than a load with the country database sends (about 200,000 in 10 s), so that its visits
/// come from addresses of their own, as those of the collector without it do.
const BENCH_ADDRESSES: usize = 500_000;
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

/// Health checks from one address that sends no visits, as a monitor gone wild (or an
/// attacker who found the unauthenticated endpoint) would.
fn health_flood() -> Arc<Workload> {
    Arc::new(Workload {
        method: Method::GET,
        path: "/healthz",
        headers: vec![(
            HeaderName::from_static("x-forwarded-for"),
            HeaderValue::from_static("192.0.2.250"),
        )],
        body: Box::new(|_| Bytes::new()),
        request_headers: None,
        expect: StatusCode::OK,
        max_requests: MAX_REQUESTS,
    })
}

fn ingest_config(dir: &Path, port: u16, tls: &TlsFiles, geoip_db: Option<&Path>) -> PathBuf {
    // The load generator is one address holding all its connections, as a relay would:
    // above the default per-address cap (64) with any extra probe. It stands for a reverse
    // proxy: the visits' own addresses are in X-Forwarded-For, and not rate limited here.
    let privacy = geoip_db.map_or_else(String::new, |path| {
        format!("[privacy]\ngeoip_db = {}\n\n", toml_path(path))
    });
    write_config(
        dir,
        port,
        tls,
        "trusted_proxies = [\"127.0.0.1/32\"]\n",
        &privacy,
    )
}

/// The visits of the traffic rows that name a country (`aggregates --format json`), read
/// after the collector has stopped.
fn visits_with_country(binary: &Path, config: &Path) -> u64 {
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
