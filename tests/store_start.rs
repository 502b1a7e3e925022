//! The store's first use in a fresh process, with several threads opening stores at once (as
//! the test binaries do, each test on its own thread). Its own test binary: each round is a
//! fresh process, this binary run again.

use std::process::Command;
use std::sync::{Arc, Barrier};

use tracks_collector::testkit::AttributionConfig;
use tracks_collector::testkit::{DbKey, LinkRules, Store};

/// Set in a child: open the stores instead of running the rounds.
const CHILD: &str = "TRACKS_STORE_START_CHILD";
/// What a child prints once all its stores opened: a child that ran no test prints nothing.
const OPENED: &str = "all stores opened";
const ROUNDS: usize = 60;
const THREADS: usize = 8;

/// SQLite set SQLCipher up after it had marked itself started, outside its lock: a thread that
/// opened a store meanwhile failed its `PRAGMA key` ("sqlcipher not initialized"), in about
/// one such process in 30. Every store of every round opens now.
#[test]
fn stores_opened_at_once_in_a_fresh_process_all_open() {
    if std::env::var_os(CHILD).is_some() {
        open_at_once();
        return;
    }
    let exe = std::env::current_exe().expect("this test binary");
    for round in 0..ROUNDS {
        let child = Command::new(&exe)
            .args([
                "--exact",
                "stores_opened_at_once_in_a_fresh_process_all_open",
                "--nocapture",
                "--quiet",
            ])
            .env(CHILD, "1")
            .output()
            .expect("run the child");
        assert!(
            child.status.success(),
            "round {round}: a store did not open\n{}",
            String::from_utf8_lossy(&child.stderr)
        );
        assert!(
            String::from_utf8_lossy(&child.stdout).contains(OPENED),
            "round {round}: the child did not run the test"
        );
    }
}

/// Opens `THREADS` stores on as many threads, released together.
fn open_at_once() {
    let start = Arc::new(Barrier::new(THREADS));
    let openers: Vec<_> = (0..THREADS)
        .map(|_| {
            let start = start.clone();
            std::thread::spawn(move || {
                let dir = tempfile::tempdir().expect("dir");
                let key = DbKey::generate().expect("key");
                let rules = LinkRules::new(&AttributionConfig::default());
                start.wait();
                let store = Store::open(&dir.path().join("collector.db"), key, rules, 8);
                store.map(|store| store.close())
            })
        })
        .collect();
    for opener in openers {
        if let Err(err) = opener.join().expect("opener thread") {
            panic!("{err}");
        }
    }
    println!("{OPENED}");
}
