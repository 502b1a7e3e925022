//! `run` in this process: a start that fails half-way leaves no task of the daemon behind.

use std::time::Duration;

use tracks_collector::testkit::DbKey;
use tracks_collector::testkit::{Config, SecretHash};

const MEASURE_KEY: &str = "mk_shutdown_test_key_0123456789abcdef";

#[test]
fn a_start_that_fails_half_way_leaves_no_task() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("collector.db");
    DbKey::generate()
        .expect("a key")
        .write_new_file(&dir.path().join("db.key"))
        .expect("key");
    // The identity is read after the store opened and the first tasks started (the SIGHUP
    // reloader, the ACME loop): a key that is not one ends the start there.
    std::fs::write(dir.path().join("identity.key"), "not a key\n").expect("identity");
    let config_path = dir.path().join("collector.toml");
    std::fs::write(
        &config_path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n\
             [server.acme]\ndomains = [\"collect.test\"]\n\
             directory = \"https://127.0.0.1:1/dir\"\ncache_dir = \"{acme}\"\n\n\
             [storage]\npath = \"{db}\"\nkey_file = \"{key}\"\n\n\
             [[games]]\nid = \"test-game\"\nmeasure_key = \"{hash}\"\n",
            acme = dir.path().join("acme").display(),
            db = db.display(),
            key = dir.path().join("db.key").display(),
            hash = SecretHash::of(MEASURE_KEY.as_bytes()).to_config_string(),
        ),
    )
    .expect("config");
    let config = Config::load(&config_path).expect("a valid configuration");

    runtime.block_on(async {
        let metrics = tokio::runtime::Handle::current().metrics();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listener");
        let claim = tracks_collector::testkit::Claim::take(&db)
            .await
            .expect("the folder is free");
        let before = metrics.num_alive_tasks();
        let failed = tracks_collector::run(
            config,
            tracks_collector::KeySources::default(),
            listener,
            claim,
            std::future::pending(),
        )
        .await
        .expect_err("the identity key is not one");
        assert!(
            format!("{failed:#}").contains("identity"),
            "fails at the identity: {failed:#}"
        );
        // Aborted tasks are reaped at their next poll, within moments.
        let mut alive = metrics.num_alive_tasks();
        for _ in 0..100 {
            if alive <= before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            alive = metrics.num_alive_tasks();
        }
        assert_eq!(alive, before, "tasks left running after the failed start");
    });
    // The store closed with the failed start: the folder can be claimed again.
    runtime.block_on(async {
        tracks_collector::testkit::Claim::take(&db)
            .await
            .expect("the folder is free again");
    });
}
