//! Two collectors behind HAProxy, run from `packaging/haproxy.cfg` with loopback addresses put
//! in: browsers' visits pass through with their TLS untouched and are routed by their address,
//! the relay's events by the player address it names in `Tracks-Route`, and the two frontends
//! hash alike, so every game open reaches the node that holds its player's visit and is linked
//! there (issue 35, routing). Each player is a source address of its own in 127.0.0.0/8.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::central::free_port;
use common::haproxy::{HaProxy, Layout};
use common::relay::{Relay, RelayFiles, wait_until};
use common::{Collector, MEASURE_KEY, Options, visit_on};
use serde_json::json;

/// Players, each at 127.0.0.{FIRST_HOST + n}.
const PLAYERS: u8 = 24;
const FIRST_HOST: u8 = 10;
/// HAProxy's own address towards the nodes, the one they take PROXY headers from; the test
/// talks to the nodes directly from 127.0.0.1.
const BALANCER: &str = "127.0.0.2";

fn player(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, FIRST_HOST + n)
}

/// A landing-page visit from `from`, through HAProxy's TCP frontend at `front`; the status
/// line, or why there is none.
async fn visit(front: u16, from: Ipv4Addr, cas: &[&Path]) -> Result<String, String> {
    let socket = tokio::net::TcpSocket::new_v4().map_err(|err| err.to_string())?;
    socket
        .bind(SocketAddr::from((from, 0)))
        .map_err(|err| err.to_string())?;
    let tcp = socket
        .connect(SocketAddr::from(([127, 0, 0, 1], front)))
        .await
        .map_err(|err| err.to_string())?;
    let body = r#"{"url": "https://mygame.example/?utm_source=balanced&utm_campaign=launch"}"#;
    visit_on(tcp, cas, body).await
}

/// (visits, linked events, unlinked events) on file at `node`.
fn held(node: &Collector) -> (i64, i64, i64) {
    let db = node.open_db();
    let count = |sql: &str| db.query_row(sql, [], |row| row.get(0)).expect(sql);
    (
        count("SELECT count(*) FROM collect_logs"),
        count("SELECT count(*) FROM measure_logs WHERE visit_id IS NOT NULL"),
        count("SELECT count(*) FROM measure_logs WHERE visit_id IS NULL"),
    )
}

/// Two nodes with one certificate, HAProxy in front of them from the shipped file.
struct Cluster {
    nodes: [Collector; 2],
    haproxy: HaProxy,
    /// The nodes' CA.
    ca: std::path::PathBuf,
    /// HAProxy's TCP frontend, and its relays' frontend.
    front: u16,
    relays: u16,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let nodes = [(); 2].map(|_| {
            Collector::start(Options {
                server_extra: format!("proxy_protocol_from = [\"{BALANCER}/32\"]"),
                ..Options::default()
            })
        });
        // One certificate for the collector's name on both nodes, as a studio would deploy
        // them: the second node takes the first's and reads it on SIGHUP. (Two test CAs of one
        // name in HAProxy's CA file would not both verify.)
        for file in ["cert.pem", "key.pem"] {
            std::fs::copy(
                nodes[0].dir.path().join("tls").join(file),
                nodes[1].dir.path().join("tls").join(file),
            )
            .expect(file);
        }
        let hup = Command::new("kill")
            .args(["-HUP", &nodes[1].pid().to_string()])
            .status()
            .expect("kill");
        assert!(hup.success());
        nodes[1].logs_once_they_contain("reloaded the TLS certificate");
        let ca = nodes[0].ca.clone().expect("TLS");
        let dir = tempfile::tempdir().expect("dir");
        let (front, relays) = (free_port(), free_port());
        let haproxy = HaProxy::start(&Layout {
            nodes: [nodes[0].addr, nodes[1].addr],
            balancer: BALANCER,
            front,
            relays,
            nodes_ca: &ca,
            dir: dir.path(),
        });
        Cluster {
            nodes,
            haproxy,
            ca,
            front,
            relays,
            dir,
        }
    }

    async fn visit(&self, from: Ipv4Addr) -> Result<String, String> {
        visit(self.front, from, &[&self.ca]).await
    }

    /// A visit from `from`, tried until it is answered 204 (at most 20 s).
    async fn visit_until_stored(&self, from: Ipv4Addr) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.visit(from).await {
                Ok(status) if status == STORED => return,
                other => assert!(
                    Instant::now() < deadline,
                    "visit from {from}: {other:?}\n{}",
                    self.haproxy.logs()
                ),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Visits on file at each node.
    fn visits(&self) -> Vec<i64> {
        self.nodes.iter().map(|node| held(node).0).collect()
    }
}

const STORED: &str = "HTTP/1.1 204 No Content";

#[tokio::test(flavor = "multi_thread")]
async fn haproxy_sends_each_players_visit_and_relayed_game_open_to_one_node() {
    let cluster = Cluster::start();

    // Each player's visit, from the player's own address.
    for n in 0..PLAYERS {
        cluster.visit_until_stored(player(n)).await;
    }
    let visits = cluster.visits();
    assert_eq!(visits.iter().sum::<i64>(), i64::from(PLAYERS));
    assert!(
        visits.iter().all(|&count| count > 0),
        "the addresses are spread over both nodes: {visits:?}"
    );

    // The players' game opens, through one relay (one source address for all of them) in
    // front of HAProxy's second frontend.
    let files = RelayFiles::new(MEASURE_KEY);
    let relay = Relay::start_for(
        &format!("https://127.0.0.1:{}", cluster.relays),
        &cluster.dir.path().join("haproxy-tls/ca.pem"),
        &files,
        &["--trust-forwarded"],
    );
    for n in 0..PLAYERS {
        let event = json!({"user_id": format!("player-{n}"), "event_name": "first_game_open"});
        let answer = relay
            .post(event, &[("x-forwarded-for", &player(n).to_string())])
            .await;
        assert_eq!(answer.status, 202, "{:?}", answer.body);
    }
    wait_until("every relayed event is stored", || {
        cluster
            .nodes
            .iter()
            .map(|node| {
                let (_, linked, unlinked) = held(node);
                linked + unlinked
            })
            .sum::<i64>()
            == i64::from(PLAYERS)
    });

    // Every game open reached its player's visit: each node linked as many as it holds visits.
    for (node, visits) in cluster.nodes.iter().zip(visits) {
        let (_, linked, unlinked) = held(node);
        assert_eq!(
            (linked, unlinked),
            (visits, 0),
            "a node's game opens are its visitors' ({}\n{})",
            relay.logs(),
            cluster.haproxy.logs()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_killed_under_load_loses_no_acknowledged_visit_and_its_share_moves() {
    let mut cluster = Cluster::start();
    for n in 0..PLAYERS {
        cluster.visit_until_stored(player(n)).await;
    }
    // Round after round of one visit from every player, all at once; the second node is
    // killed (SIGKILL) while the third round is in flight. A visit answered 204 is counted; one
    // that got no answer, or an error, was not acknowledged.
    let mut acknowledged = i64::from(PLAYERS);
    let mut failed_after_kill = Vec::new();
    let mut killed_at = None;
    for round in 0..12u8 {
        let mut visits = tokio::task::JoinSet::new();
        for n in 0..PLAYERS {
            let (front, ca) = (cluster.front, cluster.ca.clone());
            visits.spawn(async move { (n, visit(front, player(n), &[&ca]).await) });
        }
        if round == 2 {
            tokio::time::sleep(Duration::from_millis(3)).await;
            cluster.nodes[1].kill9();
            killed_at = Some(Instant::now());
        }
        while let Some(done) = visits.join_next().await {
            match done.expect("visit task") {
                (_, Ok(status)) if status == STORED => acknowledged += 1,
                (n, _) => failed_after_kill.push((round, n)),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let killed_at = killed_at.expect("killed");
    // The last rounds, seconds after the kill, all reached the node that is left.
    assert!(
        failed_after_kill.iter().all(|&(round, _)| round < 9),
        "failures {:.1} s after the kill and later: {failed_after_kill:?}\n{}",
        killed_at.elapsed().as_secs_f64(),
        cluster.haproxy.logs()
    );

    println!(
        "{acknowledged} visits acknowledged, {} not (round, player): {failed_after_kill:?}",
        failed_after_kill.len()
    );

    // The node comes back with what it had acknowledged, and takes its share again.
    cluster.nodes[1].start_again();
    // Every 204 is a stored row, on one node or the other; a visit the killed node stored but
    // could not answer is the only kind of row more.
    let visits = cluster.visits();
    let stored = visits.iter().sum::<i64>();
    let unanswered = i64::try_from(failed_after_kill.len()).expect("count");
    assert!(
        (acknowledged..=acknowledged + unanswered).contains(&stored),
        "{acknowledged} acknowledged, {unanswered} not, {stored} stored: {visits:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let before = cluster.visits()[1];
        for n in 0..PLAYERS {
            cluster.visit_until_stored(player(n)).await;
        }
        if cluster.visits()[1] > before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second node took no visit back: {}",
            cluster.haproxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
