//! The command line through the real binary: help with examples, exit codes, `init`,
//! `check-config`, `token new`, and the zero-config local instance.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Alpn, Client, binary};
use tracks_collector::testkit::SecretHash;

fn run(args: &[&str], cwd: &std::path::Path) -> Output {
    Command::new(binary())
        .args(args)
        .current_dir(cwd)
        .env_remove("TRACKS_CONFIG")
        .env_remove("TRACKS_DB_KEY")
        .env_remove("RUST_LOG")
        .output()
        .expect("run tracks-collector")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn every_command_has_help_with_an_example() {
    let dir = tempfile::tempdir().expect("dir");
    for command in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["init", "--help"],
        vec!["check-config", "--help"],
        vec!["token", "new", "--help"],
        vec!["stats", "--help"],
    ] {
        let output = run(&command, dir.path());
        assert!(output.status.success(), "{command:?}");
        let help = text(&output.stdout);
        assert!(
            help.contains("Example"),
            "{command:?} has no example:\n{help}"
        );
        assert!(help.contains("tracks-collector"), "{command:?}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().expect("dir");
    assert_eq!(run(&["frobnicate"], dir.path()).status.code(), Some(2));
    assert_eq!(run(&["token", "new"], dir.path()).status.code(), Some(2));
    assert_eq!(
        run(
            &["token", "new", "--name", "x", "--scope", "everything"],
            dir.path()
        )
        .status
        .code(),
        Some(2)
    );
}

/// The secret a `token new` printed (the line starting with `prefix`), as its hash is written in
/// the configuration.
fn printed_hash(stdout: &str, prefix: &str) -> String {
    let secret = stdout
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} line in: {stdout}"));
    SecretHash::of(secret.as_bytes()).to_config_string()
}

#[test]
fn token_new_prints_a_secret_and_its_config_lines() {
    let dir = tempfile::tempdir().expect("dir");
    let output = run(
        &[
            "token",
            "new",
            "--name",
            "central-pull",
            "--scope",
            "aggregates",
            "--scope",
            "metrics",
        ],
        dir.path(),
    );
    assert!(output.status.success());
    let stdout = text(&output.stdout);
    let expected = printed_hash(&stdout, "tc_");
    assert!(
        stdout.contains(&format!("hash = \"{expected}\"")),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#"scopes = ["aggregates", "metrics"]"#),
        "{stdout}"
    );

    let output = run(&["token", "new", "--game", "my-game"], dir.path());
    let stdout = text(&output.stdout);
    let expected = printed_hash(&stdout, "mk_");
    assert!(
        stdout.contains(&format!("measure_key = \"{expected}\"")),
        "{stdout}"
    );

    // A named key, for `measure_keys`: its entry pastes as it is.
    let output = run(
        &[
            "token",
            "new",
            "--game",
            "my-game",
            "--name",
            "build-2026-12",
        ],
        dir.path(),
    );
    assert!(output.status.success());
    let stdout = text(&output.stdout);
    let expected = printed_hash(&stdout, "mk_");
    assert!(
        stdout.contains(&format!(
            "measure_keys = [{{ name = \"build-2026-12\", hash = \"{expected}\" }}]"
        )),
        "{stdout}"
    );
    let output = run(
        &["token", "new", "--game", "my-game", "--name", "Build 12"],
        dir.path(),
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("--name"));
}

#[test]
fn init_writes_a_working_configuration() {
    let dir = tempfile::tempdir().expect("dir");
    let output = run(
        &["init", "--dir", "site", "--game", "space-game"],
        dir.path(),
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let site = dir.path().join("site");
    for file in [
        "collector.toml",
        "data/db.key",
        "tls/cert.pem",
        "tls/key.pem",
        "tls/ca.pem",
    ] {
        assert!(site.join(file).exists(), "{file}");
    }
    use std::os::unix::fs::PermissionsExt;
    for private in ["data/db.key", "tls/key.pem"] {
        let mode = std::fs::metadata(site.join(private))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{private} is private");
    }
    let checked = run(
        &["--config", "site/collector.toml", "check-config"],
        dir.path(),
    );
    assert!(checked.status.success(), "{}", text(&checked.stderr));
    assert!(text(&checked.stdout).contains("valid (1 game(s)"));
    // Beside the zero-config instance (127.0.0.1:8443), not on its port.
    let written = std::fs::read_to_string(site.join("collector.toml")).expect("config");
    assert!(written.contains("listen = \"127.0.0.1:8444\""), "{written}");
    // A second init does not overwrite anything.
    let again = run(&["init", "--dir", "site"], dir.path());
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again.stderr).contains("refusing to overwrite"));
}

#[test]
fn configuration_errors_name_key_and_line_and_exit_2() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[privacy]\nretention_days = 45\n",
    )
    .expect("write");
    let output = run(&["--config", "bad.toml", "check-config"], dir.path());
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(":5:") && stderr.contains("privacy.retention_days"),
        "{stderr}"
    );

    std::fs::write(
        &config,
        "[server]\nlisten = \"0.0.0.0:8080\"\ntls = false\n",
    )
    .expect("write");
    let output = run(&["--config", "bad.toml", "serve"], dir.path());
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("server.tls"),
        "{}",
        text(&output.stderr)
    );

    std::fs::write(&config, "[server]\nlisten = \"127.0.0.1:0\"\nfoo = 1\n").expect("write");
    let output = Command::new(binary())
        .arg("check-config")
        .current_dir(dir.path())
        .env("TRACKS_CONFIG", "bad.toml")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2), "TRACKS_CONFIG is read");
    assert!(
        text(&output.stderr).contains("server.foo"),
        "{}",
        text(&output.stderr)
    );

    let missing = run(&["--config", "nope.toml", "check-config"], dir.path());
    assert_eq!(missing.status.code(), Some(2));
    let said = text(&missing.stderr);
    assert!(said.contains("nope.toml"), "{said}");
    assert_eq!(
        said.matches("No such file or directory").count(),
        1,
        "the OS reason once: {said}"
    );
}

/// The packaged example, as installed: its all-zero placeholder hashes are refused by
/// `check-config` with the line of each and the command that makes the real one.
#[test]
fn check_config_refuses_the_examples_placeholder_hashes() {
    let dir = tempfile::tempdir().expect("dir");
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/collector.example.toml"
    ))
    .expect("example");
    let line_of = |needle: &str| {
        example
            .lines()
            .position(|line| line.starts_with(needle))
            .map(|index| index + 1)
            .expect(needle)
    };
    std::fs::write(dir.path().join("collector.toml"), &example).expect("write");
    let output = run(&["--config", "collector.toml", "check-config"], dir.path());
    assert_eq!(output.status.code(), Some(2));
    let said = text(&output.stderr);
    for (key, line, fix) in [
        (
            "games[0].measure_key",
            line_of("measure_key = \"blake3:0000"),
            "token new --game my-game",
        ),
        (
            "tokens[0].hash",
            line_of("hash = \"blake3:0000"),
            "token new --name central-pull --scope aggregates",
        ),
    ] {
        assert!(
            said.lines().any(
                |said| said.contains(&format!("collector.toml:{line}: `{key}`"))
                    && said.contains(fix)
            ),
            "{key} at line {line}: {said}"
        );
    }
}

/// `serve` names the configuration key of a file it cannot read, and says what to do.
#[test]
fn serve_names_the_key_of_a_missing_certificate() {
    let dir = tempfile::tempdir().expect("dir");
    let init = run(&["init", "--dir", "site"], dir.path());
    assert!(init.status.success(), "{}", text(&init.stderr));
    std::fs::remove_file(dir.path().join("site/tls/cert.pem")).expect("remove");
    let output = run(&["--config", "site/collector.toml", "serve"], dir.path());
    assert!(!output.status.success());
    let said = text(&output.stderr);
    assert!(
        said.contains("collector.toml:") && said.contains("`server.tls_cert`"),
        "{said}"
    );
    assert!(
        said.contains("no such file; put the certificate chain"),
        "{said}"
    );
}

/// A valid file naming files `serve` cannot read: valid (exit 0), with one warning per file.
#[test]
fn check_config_warns_about_files_serve_could_not_read() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join("collector.toml"),
        "[server]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"tls/none.pem\"\ntls_key = \"tls/none-key.pem\"\n\n\
         [storage]\npath = \"data/collector.db\"\nkey_file = \"data/db.key\"\n\n\
         [central]\nurl = \"https://tracks.example\"\ncollector_id = \"eu-1\"\n\
         token_file = \"central.token\"\n",
    )
    .expect("write");
    let output = Command::new(binary())
        .args(["--config", "collector.toml", "check-config"])
        .current_dir(dir.path())
        .env_remove("TRACKS_DB_KEY")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .expect("run");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    // Each names the file, and the key with its line in collector.toml.
    for (named, key) in [
        ("tls/none.pem", "collector.toml:3: `server.tls_cert`"),
        ("data/db.key", "collector.toml:8: `storage.key_file`"),
        ("central.token", "collector.toml:13: `central.token_file`"),
    ] {
        assert!(
            stderr.lines().any(|line| line.starts_with("warning: ")
                && line.contains(named)
                && line.contains(key)),
            "no warning naming {named} at {key}: {stderr}"
        );
    }
    assert!(text(&output.stdout).contains("3 warning(s)"));

    // Once the files exist, no warning.
    let init = run(&["init", "--dir", "site"], dir.path());
    assert!(init.status.success(), "{}", text(&init.stderr));
    let checked = run(
        &["--config", "site/collector.toml", "check-config"],
        dir.path(),
    );
    assert!(checked.status.success());
    assert_eq!(text(&checked.stderr), "", "no warnings for a complete site");
}

/// The README's first command: `serve` with no configuration at all.
#[tokio::test(flavor = "multi_thread")]
async fn zero_config_serve_runs_a_local_instance() {
    // The zero-config port is fixed: another program on it would answer in the instance's
    // place, with another certificate.
    let addr: std::net::SocketAddr = "127.0.0.1:8443".parse().expect("addr");
    drop(std::net::TcpListener::bind(addr).unwrap_or_else(|err| {
        panic!("127.0.0.1:8443, the zero-config port, is taken by another process: {err}")
    }));
    let dir = tempfile::tempdir().expect("dir");
    let mut child = Command::new(binary())
        .arg("serve")
        .current_dir(dir.path())
        .env_remove("TRACKS_CONFIG")
        .env_remove("TRACKS_DB_KEY")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("serve");
    let state = dir.path().join("tracks-data");
    let ca = state.join("tls/ca.pem");
    let deadline = Instant::now() + Duration::from_secs(20);
    let health = loop {
        if ca.exists() && std::net::TcpStream::connect(addr).is_ok() {
            break Client::new(addr, Some(&ca), Alpn::Http1)
                .get("/healthz", &[])
                .await;
        }
        assert!(
            Instant::now() < deadline,
            "the local instance did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(health.status, 200);
    let key = std::fs::read_to_string(state.join("demo-game.measure-key")).expect("demo key");
    let answer = Client::new(addr, Some(&ca), Alpn::Http1)
        .post(
            "/measure",
            "application/x-www-form-urlencoded",
            "user_id=player-1&event_name=first_game_open&storefront=steam",
            &[("authorization", &format!("Bearer {}", key.trim()))],
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    // A page on a local development server may report visits.
    let visit = Client::new(addr, Some(&ca), Alpn::Http1)
        .post(
            "/collect",
            "application/json",
            r#"{"url": "http://localhost:3000/?utm_source=local"}"#,
            &[("origin", "http://localhost:3000")],
        )
        .await;
    assert_eq!(visit.status, 204, "{:?}", visit.body);
    // The API token it wrote opens the authenticated endpoints.
    let token = std::fs::read_to_string(state.join("admin.token")).expect("admin token");
    let bearer = format!("Bearer {}", token.trim());
    let metrics = Client::new(addr, Some(&ca), Alpn::Http1)
        .get("/metrics", &[("authorization", &bearer)])
        .await;
    assert_eq!(metrics.status, 200);
    let today = tracks_collector::testkit::utc_day(tracks_collector::unix_now());
    let aggregates = Client::new(addr, Some(&ca), Alpn::Http1)
        .get(
            &format!("/api/v1/aggregates?from={today}&to={today}"),
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(aggregates.status, 200);
    assert_eq!(aggregates.json()["traffic"][0]["source"], "local");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("wait");
    assert!(status.success());
    // It said where its dashboard is, with the token it wrote, and how to stop it.
    let mut said = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut said)
        .expect("stderr");
    assert!(
        said.contains(&format!(
            "the dashboard is at https://localhost:8443/dashboard#token={}\n",
            token.trim()
        )),
        "{said}"
    );
    assert!(said.contains("stop it with Ctrl-C"), "{said}");
    let stats = run(&["stats", "--format", "json"], dir.path());
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("stats json");
    assert_eq!(stats["events"], 1);
}
