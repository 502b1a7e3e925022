//! Two collectors behind HAProxy against one collector alone, on the same machine (issue 35's
//! figure). HAProxy runs the shipped `packaging/haproxy.cfg` as `tests/haproxy.rs` does (TLS
//! passed through, PROXY v2 to the nodes, `balance source`), and the same `POST /collect` load
//! goes, in alternating rounds, to its TCP frontend and to the lone collector directly. Each of
//! the load's connections is a client at a loopback address of its own (127.0.0.10 and on), so
//! the balancer spreads them over both nodes.
//!
//! Each round loads each side for a warm-up, then `HAPROXY_BENCH_SECS` (default 6); the bench
//! prints req/s and p99 per round, the medians and their ratio (two nodes through HAProxy / one
//! node direct), and the CPU each process spent per request. HAProxy, the three collectors and
//! the load generator share the machine's cores, so the ratio says what the balancer and a
//! second process cost here, not what a second machine would add. Every 204 must be a stored
//! visit; errors or a missing visit make the exit status non-zero. No timing is asserted.

mod common;
#[path = "../tests/common/haproxy.rs"]
mod haproxy;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::collector::{USER_AGENT, collect_workload, stored_visits, write_config};
use common::{
    CONNECTIONS, CpuTicks, LoadResult, STARTUP_TIMEOUT, Server, WARM_UP, client_config, free_port,
    load_from, micros_per, process_cpu, secs_from_env,
};
use haproxy::{HaProxy, Layout};
use tracks_collector::testkit::{TlsFiles, generate_self_signed, local_names};

const DEFAULT_SECS: u64 = 6;
const ROUNDS: usize = 3;
/// Hard cap on measured requests per load, whatever the duration.
const MAX_REQUESTS: u64 = 2_000_000;
/// The load's clients are at 127.0.0.{FIRST_HOST + n}, one per connection.
const FIRST_HOST: u8 = 10;
/// HAProxy's own address towards the nodes, the one they take PROXY headers from.
const BALANCER: &str = "127.0.0.2";

fn main() -> ExitCode {
    let secs = secs_from_env("HAPROXY_BENCH_SECS", DEFAULT_SECS);
    let measured = Duration::from_secs(secs);
    let started = Instant::now();

    // Declared first so it is dropped last, after every process is gone.
    let dir = tempfile::tempdir().expect("cannot create a temporary directory");
    // One certificate for every node, as a studio would deploy them behind one name.
    let cert = generate_self_signed(&dir.path().join("tls"), &local_names())
        .expect("cannot generate the TLS certificate");
    let client_tls = client_config(&cert.ca);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the load generator's runtime");

    let [node1, node2, alone] =
        ["node1", "node2", "alone"].map(|name| Node::start(dir.path(), name, &cert.files));
    let front = free_port();
    let haproxy = HaProxy::start(&Layout {
        nodes: [node1.server.addr, node2.server.addr],
        balancer: BALANCER,
        front,
        relays: free_port(),
        nodes_ca: &cert.ca,
        dir: dir.path(),
    });
    let front = SocketAddr::from(([127, 0, 0, 1], front));
    wait_until_accepting(front, &haproxy);
    let sides = Sides {
        runtime: &runtime,
        client_tls: &client_tls,
        measured,
        haproxy: &haproxy,
        front,
        nodes: [&node1, &node2],
        alone: &alone,
    };
    let rounds: Vec<Round> = (0..ROUNDS).map(|round| sides.round(round)).collect();
    // Nothing more reaches the nodes through it.
    drop(haproxy);

    let stopped = [node1, node2, alone].map(Node::stop);
    print_figures(secs, &rounds);
    let failed = check(&rounds, &stopped);
    println!(
        "haproxy bench: took {:.0} s in all",
        started.elapsed().as_secs_f64()
    );
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The load's client addresses, one per connection.
fn clients() -> Vec<IpAddr> {
    (0..CONNECTIONS)
        .map(|n| {
            let host = u8::try_from(n)
                .ok()
                .and_then(|n| n.checked_add(FIRST_HOST))
                .expect("fewer connections than loopback hosts");
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, host))
        })
        .collect()
}

/// Waits until HAProxy's frontend accepts connections.
fn wait_until_accepting(addr: SocketAddr, haproxy: &HaProxy) {
    let started = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            started.elapsed() < STARTUP_TIMEOUT,
            "HAProxy did not accept connections on {addr} within {STARTUP_TIMEOUT:?}:\n{}",
            haproxy.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A collector, the real binary, serving a folder of its own; it takes PROXY headers from the
/// balancer's address only, as the shipped example says (the lone node too, so that the three
/// are configured alike).
struct Node {
    name: &'static str,
    server: Server,
    config: PathBuf,
}

impl Node {
    fn start(root: &Path, name: &'static str, tls: &TlsFiles) -> Node {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("cannot create the collector's folder");
        let port = free_port();
        let server_lines = format!("proxy_protocol_from = [\"{BALANCER}/32\"]\n");
        let config = write_config(&dir, port, tls, &server_lines, "");
        let server = Server::start(
            "collector",
            Command::new(binary())
                .env_remove("RUST_LOG")
                .arg("--config")
                .arg(&config)
                .arg("serve"),
            port,
        );
        eprintln!("haproxy bench: started {name} on {}", server.addr);
        Node {
            name,
            server,
            config,
        }
    }

    fn cpu(&self) -> CpuTicks {
        self.server.cpu()
    }

    /// Stops the collector (SIGTERM, it commits what it acknowledged) and reads what it stored.
    fn stop(mut self) -> Stopped {
        let clean = self.server.terminate();
        Stopped {
            name: self.name,
            clean,
            visits: stored_visits(Path::new(binary()), &self.config),
        }
    }
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_tracks-collector")
}

/// A collector after its stop.
struct Stopped {
    name: &'static str,
    clean: bool,
    /// `stats`' visits.
    visits: Option<u64>,
}

/// One load on one side, and the CPU each process spent on it (warm-up included).
struct Side {
    load: LoadResult,
    /// HAProxy's, when it was in the path.
    balancer_us: f64,
    /// The collectors' together.
    nodes_us: f64,
    /// This process's: the load generator's.
    client_us: f64,
}

/// Both sides, measured one after the other.
struct Round {
    cluster: Side,
    direct: Side,
}

/// One side of a round.
type Pick = fn(&Round) -> &Side;

impl Round {
    fn cluster(&self) -> &Side {
        &self.cluster
    }

    fn direct(&self) -> &Side {
        &self.direct
    }
}

/// What a round needs to load either side.
struct Sides<'a> {
    runtime: &'a tokio::runtime::Runtime,
    client_tls: &'a Arc<rustls::ClientConfig>,
    measured: Duration,
    haproxy: &'a HaProxy,
    front: SocketAddr,
    nodes: [&'a Node; 2],
    alone: &'a Node,
}

impl Sides<'_> {
    /// Loads both sides, in turns: the one that went second in a round goes first in the next,
    /// so that a machine that slows down or speeds up favours neither.
    fn round(&self, round: usize) -> Round {
        let cluster = || self.measure(self.front, Some(self.haproxy), &self.nodes);
        let direct = || self.measure(self.alone.server.addr, None, &[self.alone]);
        eprintln!("haproxy bench: round {} of {ROUNDS}", round + 1);
        if round.is_multiple_of(2) {
            let cluster = cluster();
            Round {
                cluster,
                direct: direct(),
            }
        } else {
            let direct = direct();
            Round {
                cluster: cluster(),
                direct,
            }
        }
    }

    /// A warm-up, then the measured window, at `addr`; `balancer` and `nodes` are the
    /// processes in the path.
    fn measure(&self, addr: SocketAddr, balancer: Option<&HaProxy>, nodes: &[&Node]) -> Side {
        let cpu = || {
            (
                balancer.map_or(0, |haproxy| process_cpu(haproxy.pid()).all),
                nodes.iter().map(|node| node.cpu().all).sum::<u64>(),
                process_cpu(std::process::id()).all,
            )
        };
        let before = cpu();
        let load = self.runtime.block_on(load_from(
            addr,
            self.client_tls.clone(),
            self.measured,
            collect_workload(USER_AGENT, None, MAX_REQUESTS),
            clients(),
        ));
        let after = cpu();
        let per_request =
            |ticks: u64, before: u64| micros_per(ticks.saturating_sub(before), load.accepted_total);
        Side {
            balancer_us: per_request(after.0, before.0),
            nodes_us: per_request(after.1, before.1),
            client_us: per_request(after.2, before.2),
            load,
        }
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn print_figures(secs: u64, rounds: &[Round]) {
    let tls = rounds
        .first()
        .map_or("TLS", |round| round.cluster.load.tls_version.as_str());
    let cores = std::thread::available_parallelism().map_or(0, |cores| cores.get());
    println!(
        "haproxy bench: {CONNECTIONS} connections, each from an address of its own \
         (127.0.0.{FIRST_HOST} and on), {} rounds of {secs} s per side after a {} s warm-up \
         each, {tls}, HTTP/1.1 keep-alive, loopback; HAProxy, the collectors and the load \
         generator share {cores} cores",
        rounds.len(),
        WARM_UP.as_secs(),
    );
    for (n, round) in rounds.iter().enumerate() {
        println!(
            "round {}: two nodes through HAProxy {}",
            n + 1,
            round.cluster.load.summary_line()
        );
        println!(
            "round {}: one node direct           {}",
            n + 1,
            round.direct.load.summary_line()
        );
    }
    let rate = |side: Pick| median(rounds.iter().map(|r| side(r).load.per_second()).collect());
    let p99 = |side: Pick| {
        median(
            rounds
                .iter()
                .map(|r| f64::from(side(r).load.p99_us) / 1000.0)
                .collect(),
        )
    };
    let (cluster, direct): (Pick, Pick) = (Round::cluster, Round::direct);
    println!(
        "median: two nodes through HAProxy {:.0} req/s, p99 {:.2} ms",
        rate(cluster),
        p99(cluster)
    );
    println!(
        "median: one node direct           {:.0} req/s, p99 {:.2} ms",
        rate(direct),
        p99(direct)
    );
    let per_round: Vec<String> = rounds
        .iter()
        .map(|r| {
            format!(
                "{:.2}",
                r.cluster.load.per_second() / r.direct.load.per_second()
            )
        })
        .collect();
    println!(
        "ratio two nodes through HAProxy / one node direct: {:.2} (of the medians; per round {})",
        rate(cluster) / rate(direct),
        per_round.join(", ")
    );
    let cpu =
        |side: Pick, part: fn(&Side) -> f64| median(rounds.iter().map(|r| part(side(r))).collect());
    println!(
        "CPU per 204 (medians, warm-ups included): through HAProxy: HAProxy {:.0} us, the two \
         nodes {:.0} us, the load generator {:.0} us; direct: the node {:.0} us, the load \
         generator {:.0} us",
        cpu(cluster, |s| s.balancer_us),
        cpu(cluster, |s| s.nodes_us),
        cpu(cluster, |s| s.client_us),
        cpu(direct, |s| s.nodes_us),
        cpu(direct, |s| s.client_us),
    );
}

/// Prints what went wrong, if anything: errors, a visit acknowledged and not stored, a node
/// that took no visit, a collector that did not stop cleanly. True if something did.
fn check(rounds: &[Round], stopped: &[Stopped; 3]) -> bool {
    let mut failed = false;
    for (n, round) in rounds.iter().enumerate() {
        failed |= round
            .cluster
            .load
            .report_errors(&format!("round {}, two nodes through HAProxy", n + 1));
        failed |= round
            .direct
            .load
            .report_errors(&format!("round {}, one node direct", n + 1));
    }
    for node in stopped {
        if !node.clean {
            failed = true;
            println!("!!! {}: did not exit cleanly after SIGTERM", node.name);
        }
    }
    let [node1, node2, alone] = stopped;
    let acknowledged =
        |side: Pick| -> u64 { rounds.iter().map(|r| side(r).load.accepted_total).sum() };
    let through = acknowledged(Round::cluster);
    let stored = node1.visits.zip(node2.visits).map(|(a, b)| a + b);
    println!(
        "two nodes: 204 answers (warm-ups + measured): {through}, visits stored (stats): {} \
         ({} on node1, {} on node2){}",
        known(stored),
        known(node1.visits),
        known(node2.visits),
        if stored == Some(through) {
            ""
        } else {
            "  MISMATCH"
        }
    );
    let direct = acknowledged(Round::direct);
    println!(
        "one node: 204 answers (warm-ups + measured): {direct}, visits stored (stats): {}{}",
        known(alone.visits),
        if alone.visits == Some(direct) {
            ""
        } else {
            "  MISMATCH"
        }
    );
    if stored != Some(through) || alone.visits != Some(direct) {
        failed = true;
        println!("!!! the stored visits differ from the 204 answers");
    }
    if node1.visits == Some(0) || node2.visits == Some(0) {
        failed = true;
        println!("!!! HAProxy sent every visit to one node: the figure is not of two nodes");
    }
    failed
}

fn known(count: Option<u64>) -> String {
    count.map_or_else(|| "unknown".to_string(), |count| count.to_string())
}
