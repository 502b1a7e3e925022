//! Forget blocks, and the data request: through the real binary (the API and the command line
//! beside the running daemon) and, for salts that die, in process with time as a parameter.

mod common;

use std::net::Ipv4Addr;
use std::process::Output;

use common::world::{DAY, HOUR, NOV_1, World, event};
use common::{Answer, Collector, MEASURE_KEY, Options, contains, dump_rows, read_tree};
use serde_json::json;
use tracks_collector::testkit::SecretHash;
use tracks_collector::testkit::purge;

const FORGET_TOKEN: &str = "tc_test_forget_token";
const METRICS_TOKEN: &str = "tc_test_metrics_token";
/// A user id and an address distinctive enough that finding them anywhere is no accident.
const BLOCKED_USER: &str = "blocked-canary-4e1d07";
const SUBJECT_USER: &str = "subject-canary-91c2b3";
const SUBJECT_IP: &str = "203.0.113.91";
const OTHER_IP: &str = "198.51.100.23";

fn options() -> Options {
    Options {
        server_extra: r#"trusted_proxies = ["127.0.0.1/32"]"#.into(),
        extra: format!(
            "[[tokens]]\nname = \"dpo\"\nscopes = [\"forget\"]\nhash = \"{}\"\n\n\
             [[tokens]]\nname = \"ops\"\nscopes = [\"metrics\"]\nhash = \"{}\"\n",
            SecretHash::of(FORGET_TOKEN.as_bytes()).to_config_string(),
            SecretHash::of(METRICS_TOKEN.as_bytes()).to_config_string(),
        ),
        ..Options::default()
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn measure(collector: &Collector, body: &str) -> Answer {
    let content_type = if body.starts_with(['{', '[']) {
        "application/json"
    } else {
        "application/x-www-form-urlencoded"
    };
    collector
        .client()
        .post(
            "/measure",
            content_type,
            body.to_string(),
            &[("authorization", &bearer(MEASURE_KEY))],
        )
        .await
}

async fn metric(collector: &Collector, name: &str) -> u64 {
    let answer = collector
        .client()
        .get("/metrics", &[("authorization", &bearer(METRICS_TOKEN))])
        .await;
    assert_eq!(answer.status, 200);
    let text = String::from_utf8_lossy(&answer.body).into_owned();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn forget_blocks_the_player_until_unforget() {
    let mut collector = Collector::start(options());
    let blocked_form = format!("user_id={BLOCKED_USER}&event_name=game_open");
    let answer = measure(&collector, &blocked_form).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);

    let forgotten = collector
        .client()
        .post(
            "/api/v1/forget",
            "application/json",
            format!(r#"{{"game": "test-game", "user_id": "{BLOCKED_USER}"}}"#),
            &[("authorization", &bearer(FORGET_TOKEN))],
        )
        .await;
    assert_eq!(forgotten.status, 200, "{:?}", forgotten.body);
    assert_eq!(
        forgotten.json(),
        json!({"deleted": {"measure": 1, "collect": 0}, "blocked": true})
    );
    assert_eq!(collector.count("measure_logs"), 0);

    // A batch with the blocked player's event: all accepted, the other player's stored.
    let batch = format!(
        r#"[{{"user_id": "{BLOCKED_USER}", "event_name": "first_game_open"}},
            {{"user_id": "kept-player", "event_name": "first_game_open"}}]"#
    );
    let answer = measure(&collector, &batch).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.json(), json!({"accepted": 2}));
    let answer = measure(&collector, &blocked_form).await;
    assert_eq!(
        (answer.status, answer.json()),
        (200, json!({"accepted": 1}))
    );
    assert_eq!(collector.count("measure_logs"), 1, "only kept-player's");
    assert_eq!(metric(&collector, "tracks_blocked_events_total").await, 2);
    assert_eq!(metric(&collector, "tracks_events_stored_total").await, 2);

    // The block list holds a keyed hash, not the id: not in any decrypted row, not in any byte
    // of the state folder.
    assert_eq!(collector.count("blocked_users"), 1);
    let rows = dump_rows(&collector.open_db());
    assert!(!rows.contains(BLOCKED_USER), "a row holds the raw user id");
    for (path, bytes) in read_tree(&collector.state_dir) {
        assert!(
            !contains(&bytes, BLOCKED_USER.as_bytes()),
            "{} holds the raw user id",
            path.display()
        );
    }

    // A new salt, and a restart: the block holds.
    collector.terminate();
    collector.run_command(&["rotate-salt"]);
    collector.restart();
    let answer = measure(&collector, &blocked_form).await;
    assert_eq!(answer.status, 200);
    assert_eq!(collector.count("measure_logs"), 1, "still blocked");

    // `unforget` beside the running daemon: the writer sees the list as it is on file.
    let player = ["--game", "test-game", "--user-id", BLOCKED_USER];
    let lifted = collector.run_command(&[&["unforget"][..], &player].concat());
    assert!(stdout(&lifted).contains("lifted the block"), "{lifted:?}");
    assert_eq!(collector.count("blocked_users"), 0);
    let answer = measure(&collector, &blocked_form).await;
    assert_eq!(answer.status, 200);
    assert_eq!(collector.count("measure_logs"), 2, "stored again");
    let again = collector.run_command(&[&["unforget"][..], &player].concat());
    assert!(stdout(&again).contains("was not blocked"), "{again:?}");

    // `forget` from the command line blocks too.
    let forgot = collector.run_command(&[&["forget"][..], &player].concat());
    let text = stdout(&forgot);
    assert!(text.contains("deleted 1 game event(s)"), "{text}");
    assert!(text.contains("blocked"), "{text}");
    let answer = measure(&collector, &blocked_form).await;
    assert_eq!(answer.status, 200);
    assert_eq!(collector.count("measure_logs"), 1);
    assert!(!collector.logs().contains(BLOCKED_USER));
}

/// The salts a forget hashed under die with the retention, and the daemon restarts: the block
/// is under a key of its own and outlives them all.
#[tokio::test(flavor = "multi_thread")]
async fn salt_rotations_and_purges_do_not_lift_a_block() {
    let mut world = World::new(|_| {});
    world.rotate(NOV_1).await;
    let first_salts = world.store.load_salts().expect("salts");
    let ip = "192.0.2.44";
    let written = world
        .open(
            "key-demo",
            event("alice", "game_open", json!({})),
            ip,
            NOV_1,
        )
        .await;
    assert_eq!((written.stored, written.blocked), (1, 0));
    let alice = world.ingest.subject("demo-game", "alice").expect("request");
    let report = world
        .store
        .forget(&alice.game, alice.users, alice.block, NOV_1 + HOUR)
        .await
        .expect("forget");
    assert_eq!(report.measure, 1);

    for day in 1..=32 {
        let now = NOV_1 + day * DAY;
        world.rotate(now).await;
        purge(&world.store, &world.salts, &world.config.privacy, now)
            .await
            .expect("purge");
    }
    let live = world.store.load_salts().expect("salts");
    assert!(
        first_salts
            .iter()
            .all(|salt| live.iter().all(|live| live.id != salt.id)),
        "the salts of the forget's time are destroyed"
    );
    world.restart();

    let now = NOV_1 + 32 * DAY + HOUR;
    let written = world
        .open("key-demo", event("alice", "game_open", json!({})), ip, now)
        .await;
    assert_eq!((written.stored, written.blocked), (0, 1), "still blocked");
    let written = world
        .open("key-demo", event("bob", "game_open", json!({})), ip, now)
        .await;
    assert_eq!((written.stored, written.blocked), (1, 0));
    // The same id in another game is another player.
    let written = world
        .open("key-other", event("alice", "game_open", json!({})), ip, now)
        .await;
    assert_eq!((written.stored, written.blocked), (1, 0));
}

/// Every form the canary address and the stored pseudonyms could take in an answer.
fn needles(collector: &Collector) -> Vec<(String, Vec<u8>)> {
    let mut needles = Vec::new();
    for text in [SUBJECT_IP, OTHER_IP] {
        let ip: Ipv4Addr = text.parse().expect("v4");
        needles.push((text.to_string(), text.as_bytes().to_vec()));
        needles.push((format!("{text} as bytes"), ip.octets().to_vec()));
        needles.push((
            format!("{text} as hex"),
            hex::encode(ip.octets()).into_bytes(),
        ));
    }
    let db = collector.open_db();
    let mut pseudonyms: Vec<Vec<u8>> = Vec::new();
    for sql in [
        "SELECT user_hash FROM measure_logs",
        "SELECT ip_hash FROM measure_logs",
        "SELECT ip_hash FROM collect_logs",
        "SELECT hash FROM blocked_users",
    ] {
        let mut stmt = db.prepare(sql).expect("select");
        let rows = stmt.query_map([], |row| row.get(0)).expect("query");
        pseudonyms.extend(rows.map(|row| row.expect("row")));
    }
    assert!(pseudonyms.len() >= 5, "the pseudonyms were read");
    for hash in pseudonyms {
        let hex = hex::encode(&hash);
        needles.push((format!("pseudonym {hex}"), hex.clone().into_bytes()));
        needles.push((
            format!("pseudonym {hex} in upper case"),
            hex.to_uppercase().into_bytes(),
        ));
        needles.push((format!("pseudonym {hex} as bytes"), hash));
    }
    needles
}

fn assert_clean(what: &str, bytes: &[u8], needles: &[(String, Vec<u8>)]) {
    for (name, needle) in needles {
        assert!(!contains(bytes, needle), "{what} holds the {name}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_data_request_shows_events_and_campaigns_but_no_address_or_pseudonym() {
    let collector = Collector::start(options());
    let client = collector.client();
    let visit = client
        .post(
            "/collect",
            "application/json",
            r#"{"url": "https://mygame.example/?utm_source=canarynews&utm_medium=email&utm_campaign=spring-launch&utm_content=banner"}"#,
            &[("x-forwarded-for", SUBJECT_IP)],
        )
        .await;
    assert_eq!(visit.status, 204);
    let events = format!(
        r#"[{{"user_id": "{SUBJECT_USER}", "event_name": "first_game_open", "ip": "{SUBJECT_IP}",
              "platform": "pc", "storefront": "steam"}},
            {{"user_id": "{SUBJECT_USER}", "event_name": "game_open", "ip": "{OTHER_IP}"}},
            {{"user_id": "someone-else", "event_name": "first_game_open", "ip": "{SUBJECT_IP}"}}]"#
    );
    let answer = measure(&collector, &events).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);

    let path = format!("/api/v1/subject?game=test-game&user_id={SUBJECT_USER}");
    let missing = client.get(&path, &[]).await;
    assert_eq!(
        (missing.status, missing.error_code().as_str()),
        (401, "missing_token")
    );
    let wrong_scope = client
        .get(&path, &[("authorization", &bearer(METRICS_TOKEN))])
        .await;
    assert_eq!(
        (wrong_scope.status, wrong_scope.error_code().as_str()),
        (403, "insufficient_scope")
    );
    let auth = bearer(FORGET_TOKEN);
    for (query, code, field) in [
        ("game=test-game", "missing_field", "`user_id`"),
        ("user_id=x", "missing_field", "`game`"),
        ("game=nope&user_id=x", "unknown_game", "`game`"),
        ("game=test-game&user_id=x&ip=1", "unknown_field", "`ip`"),
    ] {
        let answer = client
            .get(
                &format!("/api/v1/subject?{query}"),
                &[("authorization", &auth)],
            )
            .await;
        assert_eq!((answer.status, answer.error_code().as_str()), (400, code));
        let message = answer.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(message.contains(field), "{query}: {message}");
    }

    let answer = client.get(&path, &[("authorization", &auth)]).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let day = tracks_collector::testkit::utc_day(tracks_collector::unix_now());
    let expected = json!({
        "game": "test-game",
        "blocked": false,
        "events": [
            {"day": day, "event": "first_game_open", "platform": "pc", "storefront": "steam",
             "source": "canarynews", "medium": "email", "campaign": "spring-launch",
             "content": "banner", "term": null, "channel": null, "country": null},
            {"day": day, "event": "game_open", "platform": null, "storefront": null,
             "source": "(direct)", "medium": null, "campaign": null, "content": null,
             "term": null, "channel": null, "country": null},
        ],
    });
    assert_eq!(answer.json(), expected);
    let needles = needles(&collector);
    assert_clean("the API's answer", &answer.body, &needles);

    // The command line, beside the daemon: the same JSON, and a table.
    let player = ["subject", "--game", "test-game", "--user-id", SUBJECT_USER];
    let json_output = collector.run_command(&[&player[..], &["--format", "json"]].concat());
    let cli_json: serde_json::Value =
        serde_json::from_slice(&json_output.stdout).expect("the CLI prints JSON");
    assert_eq!(cli_json, expected);
    assert_clean("the CLI's JSON", &json_output.stdout, &needles);
    let table = collector.run_command(&player);
    let text = stdout(&table);
    for shown in [
        "blocked: no",
        "first_game_open",
        "canarynews",
        "spring-launch",
        "(direct)",
    ] {
        assert!(text.contains(shown), "{shown} missing from:\n{text}");
    }
    assert_clean("the CLI's table", &table.stdout, &needles);

    // Once forgotten: nothing held but the block.
    let forgotten = client
        .post(
            "/api/v1/forget",
            "application/json",
            format!(r#"{{"game": "test-game", "user_id": "{SUBJECT_USER}"}}"#),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(forgotten.json()["deleted"]["measure"], 2);
    let answer = client.get(&path, &[("authorization", &auth)]).await;
    assert_eq!(
        answer.json(),
        json!({"game": "test-game", "blocked": true, "events": []})
    );
    assert!(!collector.logs().contains(SUBJECT_USER));
}
