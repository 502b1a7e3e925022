//! The store's page cache (issue 18): SQLite's own, with the temporary page number of B-tree
//! swaps kept inside the database's range. Its own test binary, so that the cache is in place
//! before anything in the process starts SQLite, as in the daemon.

use serde_json::json;
use tracks_collector::testkit::{Config, SecretHash};
use tracks_collector::testkit::{DbKey, OpenedStore, open_store};
use tracks_collector::testkit::{MeasureBody, MeasureRequest, page_cache, rotate_salt_if_due};

const T0: i64 = 1_800_000_000;
const BATCHES: usize = 60;
const EVENTS: usize = 100;

/// Game opens of many players store their pseudonyms at random places of an index, which
/// splits its pages mid-tree: SQLite swaps pages through the temporary number, in this cache,
/// and every event is in a sound database afterwards. (What the cache saves, a walk over all
/// of it at each commit, is measured by `cargo bench --bench ingest`, not here.)
#[tokio::test(flavor = "multi_thread")]
async fn mid_tree_page_swaps_go_through_the_cache_and_leave_a_sound_database() {
    page_cache::install().expect("installed before SQLite's first use");
    let dir = tempfile::tempdir().expect("dir");
    let mut config =
        Config::zero_config(dir.path(), SecretHash::of(b"key"), SecretHash::of(b"admin"));
    config.storage.cache_mib = 8;
    let key = DbKey::generate().expect("key");
    let path = config.storage.path.clone();
    let OpenedStore {
        store,
        salts,
        ingest,
    } = open_store(&config, key.clone()).expect("store");
    rotate_salt_if_due(&store, &salts, &config.privacy, T0)
        .await
        .expect("salt");
    let moved_before = page_cache::keys_moved();
    for batch in 0..BATCHES {
        let events: Vec<_> = (0..EVENTS)
            .map(|n| json!({"user_id": format!("player-{batch}-{n}"), "event_name": "game_open"}))
            .collect();
        let body = serde_json::to_vec(&events).expect("json");
        let measured = ingest
            .measure(MeasureRequest {
                body: MeasureBody::Json(&body),
                bearer: Some("key"),
                // An address per batch, each within its rate limit.
                client_ip: format!("198.51.100.{}", batch + 1).parse().expect("ip"),
                now: T0 + batch as i64,
            })
            .expect("valid events");
        store.insert_events(measured.events).await.expect("stored");
    }
    store.close();
    assert!(
        page_cache::keys_moved() > moved_before,
        "no page was swapped through the temporary number: the test no longer splits mid-tree"
    );

    let db = rusqlite::Connection::open(&path).expect("open");
    db.execute_batch(&format!("PRAGMA key = \"x'{}'\";", key.to_hex()))
        .expect("key");
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .expect("integrity check");
    assert_eq!(check, "ok");
    let (events, players): (i64, i64) = db
        .query_row(
            "SELECT count(*), count(DISTINCT user_hash) FROM measure_logs",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("count");
    assert_eq!(events, (BATCHES * EVENTS) as i64);
    assert_eq!(players, events, "every player has a pseudonym of their own");
}
