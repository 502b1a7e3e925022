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

use common::central::{Behaviour, FakeCentral, free_port};
use common::haproxy::{HaProxy, Layout};
use common::relay::{Relay, RelayFiles, wait_until};
use common::{Collector, MEASURE_KEY, Options, post_on, visit_on};
use serde_json::json;
use tracks_collector::testkit::SecretHash;

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
    let body = r#"{"url": "https://mygame.example/?utm_source=balanced&utm_campaign=launch"}"#;
    visit_at(SocketAddr::from(([127, 0, 0, 1], front)), from, cas, body).await
}

/// A visit with `body` from `from` to `to`: HAProxy's frontend, or a collector itself.
async fn visit_at(
    to: SocketAddr,
    from: Ipv4Addr,
    cas: &[&Path],
    body: &str,
) -> Result<String, String> {
    visit_on(connect_from(from, to).await?, cas, body).await
}

/// A TCP connection from `from` (a player's own address) to `to`.
async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> Result<tokio::net::TcpStream, String> {
    let socket = tokio::net::TcpSocket::new_v4().map_err(|err| err.to_string())?;
    socket
        .bind(SocketAddr::from((from, 0)))
        .map_err(|err| err.to_string())?;
    socket.connect(to).await.map_err(|err| err.to_string())
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
        Cluster::start_with(String::new(), false)
    }

    /// Joined, and node1 pushes the merged documents (`cluster.push`).
    fn start_pushing(extra: String) -> Cluster {
        Cluster::start_joined(extra, true)
    }

    /// With `extra` in each node's configuration; `joined`: the nodes name each other in a
    /// `[cluster]` (node1 and node2), read each other with [`CLUSTER_TOKEN`], and take it for
    /// the aggregates too.
    fn start_with(extra: String, joined: bool) -> Cluster {
        if joined {
            return Cluster::start_joined(extra, false);
        }
        Cluster::start_nodes(extra, None)
    }

    fn start_joined(extra: String, first_pushes: bool) -> Cluster {
        Cluster::start_nodes(extra, Some(first_pushes))
    }

    /// `join`: `None` leaves the nodes apart; `Some(first_pushes)` joins them.
    fn start_nodes(extra: String, join_them: Option<bool>) -> Cluster {
        let mut nodes = [(); 2].map(|_| {
            Collector::start(Options {
                server_extra: format!("proxy_protocol_from = [\"{BALANCER}/32\"]"),
                extra: extra.clone(),
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
        nodes[1].ca = nodes[0].ca.clone();
        let ca = nodes[0].ca.clone().expect("TLS");
        let dir = tempfile::tempdir().expect("dir");
        if let Some(first_pushes) = join_them {
            join(&mut nodes, &ca, dir.path(), first_pushes);
        }
        let (front, relays) = (free_port(), free_port());
        let haproxy = HaProxy::start(&Layout {
            nodes: [nodes[0].addr, nodes[1].addr],
            balancer: BALANCER,
            front,
            relays,
            nodes_ca: &ca,
            dir: dir.path(),
        });
        // Both frontends listen before the test sends anything.
        for port in [front, relays] {
            wait_until("HAProxy listens", || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
        }
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

    /// Game events on file on both nodes, linked or not.
    fn events(&self) -> i64 {
        self.nodes
            .iter()
            .map(|node| {
                let (_, linked, unlinked) = held(node);
                linked + unlinked
            })
            .sum()
    }

    /// The relay example in front of HAProxy's relays' frontend, trusting the address its
    /// callers name in `X-Forwarded-For`.
    fn relay(&self, files: &RelayFiles) -> Relay {
        Relay::start_for(
            &format!("https://127.0.0.1:{}", self.relays),
            &self.dir.path().join("haproxy-tls/ca.pem"),
            files,
            &["--trust-forwarded"],
        )
    }
}

const STORED: &str = "HTTP/1.1 204 No Content";

/// The token of the joined nodes: each reads the other with it (`peer`), the test reads the
/// aggregates with it.
const CLUSTER_TOKEN: &str = "tc_the_cluster_test_token";

/// Each node names the other in `[cluster]` (as https://127.0.0.1:port, trusting `ca`), then
/// both start again on their ports with it, before HAProxy sends them anything.
fn join(nodes: &mut [Collector; 2], ca: &Path, dir: &Path, first_pushes: bool) {
    let token_file = dir.join("peer.token");
    std::fs::write(&token_file, format!("{CLUSTER_TOKEN}\n")).expect("token file");
    let ports = [nodes[0].addr.port(), nodes[1].addr.port()];
    for (index, node) in nodes.iter_mut().enumerate() {
        let section = format!(
            "\n[cluster]\nnode = \"node{me}\"\nca_file = \"{ca}\"\ntimeout_secs = 5\npush = {push}\n\n\
             [[cluster.peers]]\nname = \"node{other}\"\nurl = \"https://127.0.0.1:{port}\"\n\
             token_file = \"{token}\"\n\n\
             [[tokens]]\nname = \"cluster\"\nscopes = [\"aggregates\", \"peer\"]\nhash = \"{hash}\"\n",
            me = index + 1,
            other = 2 - index,
            push = first_pushes && index == 0,
            ca = ca.display(),
            port = ports[1 - index],
            token = token_file.display(),
            hash = SecretHash::of(CLUSTER_TOKEN.as_bytes()).to_config_string(),
        );
        let config = std::fs::read_to_string(&node.config_path).expect("config");
        std::fs::write(&node.config_path, config + &section).expect("config");
        node.kill9();
        node.start_again();
    }
}

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
    let relay = cluster.relay(&files);
    for n in 0..PLAYERS {
        let event = json!({"user_id": format!("player-{n}"), "event_name": "first_game_open"});
        let answer = relay
            .post(event, &[("x-forwarded-for", &player(n).to_string())])
            .await;
        assert_eq!(answer.status, 202, "{:?}", answer.body);
    }
    wait_until("every relayed event is stored", || {
        cluster.events() == i64::from(PLAYERS)
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

/// The campaign of player `n`: five campaigns of four or five players, and one of two, which
/// `min_cell_size = 3` folds into `(other)` wherever it is.
fn campaign_of(n: u8) -> String {
    if n < PLAYERS - 2 {
        format!("c{}", n % 5)
    } else {
        "rare".into()
    }
}

fn visit_body(n: u8) -> String {
    format!(
        r#"{{"url": "https://mygame.example/launch?utm_source=ads&utm_campaign={}"}}"#,
        campaign_of(n)
    )
}

/// The day's document at `node` (the merged view, or `view=local`).
async fn aggregates(node: &Collector, view: Option<&str>) -> serde_json::Value {
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let view = view.map(|view| format!("&view={view}")).unwrap_or_default();
    let answer = node
        .client()
        .get(
            &format!("/api/v1/aggregates?from={today}&to={today}{view}"),
            &[("authorization", &format!("Bearer {CLUSTER_TOKEN}"))],
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.json()
}

/// The document's rows, all four kinds: what a single collector's must equal.
fn rows(document: &serde_json::Value) -> serde_json::Value {
    json!({
        "traffic": document["traffic"],
        "conversions": document["conversions"],
        "sources": document["sources"],
        "pages": document["pages"],
    })
}

fn visits_in(document: &serde_json::Value) -> i64 {
    document["traffic"]
        .as_array()
        .expect("traffic")
        .iter()
        .map(|row| row["visits"].as_i64().expect("visits"))
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_merged_view_of_two_nodes_equals_one_collector_given_the_same_traffic() {
    let mut cluster = Cluster::start_with("[privacy]\nmin_cell_size = 3\n".into(), true);
    let reference = Collector::start(Options {
        extra: format!(
            "[privacy]\nmin_cell_size = 3\n\n\
             [[tokens]]\nname = \"cluster\"\nscopes = [\"aggregates\"]\nhash = \"{}\"\n",
            SecretHash::of(CLUSTER_TOKEN.as_bytes()).to_config_string()
        ),
        ..Options::default()
    });
    let ca = reference.ca.clone().expect("TLS");

    // The same visits, from the same addresses: through HAProxy to the two nodes, and straight
    // to the reference.
    for n in 0..PLAYERS {
        let body = visit_body(n);
        let front = SocketAddr::from(([127, 0, 0, 1], cluster.front));
        let through = visit_at(front, player(n), &[&cluster.ca], &body).await;
        assert_eq!(through.as_deref(), Ok(STORED), "{}", cluster.haproxy.logs());
        let direct = visit_at(reference.addr, player(n), &[&ca], &body).await;
        assert_eq!(direct.as_deref(), Ok(STORED));
    }
    // The same game opens: to the two nodes, one player in four from the game itself (from
    // the player's address, through HAProxy's TCP frontend) and the others through the relay
    // example; straight to the reference, with the player's address in `ip`. Every third
    // player also plays again.
    let files = RelayFiles::new(MEASURE_KEY);
    let relay = cluster.relay(&files);
    let front = SocketAddr::from(([127, 0, 0, 1], cluster.front));
    let bearer = format!("Authorization: Bearer {MEASURE_KEY}\r\n");
    let mut events = 0;
    for n in 0..PLAYERS {
        let names: &[&str] = if n % 3 == 0 {
            &["first_game_open", "game_open"]
        } else {
            &["first_game_open"]
        };
        for name in names {
            let event = json!({"user_id": format!("player-{n}"), "event_name": name});
            if n % 4 == 1 {
                let tcp = connect_from(player(n), front).await.expect("connect");
                let body = event.to_string();
                let status = post_on(tcp, &[&cluster.ca], "/measure", &bearer, &body).await;
                assert_eq!(status.as_deref(), Ok("HTTP/1.1 200 OK"));
            } else {
                let answer = relay
                    .post(
                        event.clone(),
                        &[("x-forwarded-for", &player(n).to_string())],
                    )
                    .await;
                assert_eq!(answer.status, 202, "{:?}", answer.body);
            }
            let mut direct = event;
            direct["ip"] = json!(player(n).to_string());
            let answer = reference
                .client()
                .post(
                    "/measure",
                    "application/json",
                    direct.to_string(),
                    &[("authorization", &format!("Bearer {MEASURE_KEY}"))],
                )
                .await;
            assert_eq!(answer.status, 200, "{:?}", answer.body);
            events += 1;
        }
    }
    wait_until("every event is stored", || cluster.events() == events);

    // Either node answers the merged view; it is the reference's, row for row, suppression
    // included, and says which nodes it holds.
    let expected = rows(&aggregates(&reference, None).await);
    for (index, node) in cluster.nodes.iter().enumerate() {
        let merged = aggregates(node, None).await;
        assert_eq!(rows(&merged), expected, "node{}'s merged view", index + 1);
        let mut nodes = vec!["node1", "node2"];
        if index == 1 {
            nodes.reverse();
        }
        assert_eq!(
            merged["cluster"],
            json!({"merged": nodes, "unreachable": []})
        );
    }
    assert!(
        expected["traffic"]
            .as_array()
            .expect("traffic")
            .iter()
            .any(|row| row["campaign"] == "(other)"),
        "the rare campaign is folded into (other): {expected}"
    );
    // Suppressed after the merge, not before: some campaign of at least three visitors is
    // shown merged, while one node alone holds too few of its visitors to show it.
    let locals = [
        aggregates(&cluster.nodes[0], Some("local")).await,
        aggregates(&cluster.nodes[1], Some("local")).await,
    ];
    let shown = |document: &serde_json::Value, campaign: &str| {
        document["traffic"]
            .as_array()
            .expect("traffic")
            .iter()
            .any(|row| row["campaign"] == campaign)
    };
    assert!(
        (0..5).any(|c| {
            let campaign = format!("c{c}");
            shown(&expected, &campaign) && locals.iter().any(|local| !shown(local, &campaign))
        }),
        "no campaign shows the merge before suppression: {locals:?}"
    );
    assert!(locals.iter().all(|local| local.get("cluster").is_none()));
    // The rows before suppression go to the `peer` scope only, and hold what the document
    // folds into (other).
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let path = format!("/api/v1/cluster/rows?from={today}&to={today}");
    let bearer = format!("Bearer {CLUSTER_TOKEN}");
    let refused = reference
        .client()
        .get(&path, &[("authorization", &bearer)])
        .await;
    assert_eq!(
        refused.status, 403,
        "an aggregates token reads a node's rows"
    );
    let peer_rows = cluster.nodes[0]
        .client()
        .get(&path, &[("authorization", &bearer)])
        .await;
    assert_eq!(peer_rows.status, 200);
    assert_eq!(peer_rows.json()["node"], "node1");
    assert!(
        peer_rows.json()["traffic"]
            .as_array()
            .expect("traffic")
            .iter()
            .all(|row| row["campaign"] != "(other)")
    );
    // The command line merges the same way, from the other node.
    let output = cluster.nodes[1].run_command(&[
        "aggregates",
        "--cluster",
        "--format",
        "json",
        "--from",
        &today,
        "--to",
        &today,
    ]);
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(rows(&printed), expected);

    // A node killed: the merged view says it is missing, and the visits go on, all of them
    // to the node that is left.
    let before = visits_in(&expected);
    cluster.nodes[1].kill9();
    let merged = aggregates(&cluster.nodes[0], None).await;
    assert_eq!(merged["cluster"]["merged"], json!(["node1"]));
    assert_eq!(merged["cluster"]["unreachable"][0]["node"], "node2");
    assert!(visits_in(&merged) < before, "{merged}");
    for n in 0..PLAYERS {
        cluster.visit_until_stored(player(n)).await;
    }
    // Back again: its data is there, and the merged view holds every acknowledged visit.
    cluster.nodes[1].start_again();
    let merged = aggregates(&cluster.nodes[0], None).await;
    assert_eq!(
        merged["cluster"],
        json!({"merged": ["node1", "node2"], "unreachable": []})
    );
    assert_eq!(visits_in(&merged), before + i64::from(PLAYERS));
}

#[tokio::test(flavor = "multi_thread")]
async fn one_node_pushes_the_merged_documents_and_sends_a_day_again_when_a_node_returns() {
    let central = FakeCentral::start(Behaviour::Accept).await;
    let token_dir = tempfile::tempdir().expect("dir");
    let token_file = token_dir.path().join("central.token");
    std::fs::write(&token_file, "tc_the_central_token\n").expect("token");
    let mut cluster = Cluster::start_pushing(format!(
        "[central]\nurl = \"{url}\"\ncollector_id = \"studio-cluster\"\ntoken_file = \"{token}\"\n\
         ca_file = \"{ca}\"\npush_schedule = \"* * * * * *\"\ntimeout_secs = 5\n\
         retry_max_secs = 2\n",
        url = central.url(),
        token = token_file.display(),
        ca = central.ca.display(),
    ));
    for n in 0..PLAYERS {
        cluster.visit_until_stored(player(n)).await;
    }
    let whole = |received: &[common::central::Received]| {
        received.last().is_some_and(|last| {
            let document = last.json();
            visits_in(&document) == i64::from(PLAYERS)
                && document["cluster"] == json!({"merged": ["node1", "node2"], "unreachable": []})
        })
    };
    let received = central
        .wait_until(Duration::from_secs(20), "the merged day", whole)
        .await;
    // Only node1 pushes: every document is a merged one, from node1's point of view.
    assert!(
        received
            .iter()
            .all(|r| r.json()["cluster"]["merged"][0] == "node1"),
        "a document not pushed by node1"
    );
    assert!(
        cluster.nodes[1]
            .logs()
            .contains("not pushing: the cluster's node with cluster.push = true")
    );

    // node2 gone: the day is sent without it, saying so; back: sent again, whole.
    cluster.nodes[1].kill9();
    let seen = received.len();
    central
        .wait_until(
            Duration::from_secs(20),
            "the day without node2",
            |received| {
                received[seen..]
                    .iter()
                    .any(|r| r.json()["cluster"]["unreachable"][0]["node"] == "node2")
            },
        )
        .await;
    cluster.nodes[1].start_again();
    let seen = central.received().len();
    central
        .wait_until(Duration::from_secs(20), "the day whole again", |received| {
            received.len() > seen && whole(received)
        })
        .await;
}
