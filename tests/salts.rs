//! Invariants 3 and 4 in process, with time as a parameter: salts rotate on schedule, a
//! player keeps one pseudonym across rotations, addresses are hashed under the newest salt.

use std::net::IpAddr;

use tracks_collector::testkit::{Config, SecretHash};
use tracks_collector::testkit::{DbKey, Ingest, OpenedStore, Store, open_store};
use tracks_collector::testkit::{MeasureBody, MeasureRequest};
use tracks_collector::testkit::{purge, rotate_salt_if_due};

const T0: i64 = 1_800_000_000;
const HOUR: i64 = 3600;

fn ip() -> IpAddr {
    "198.51.100.4".parse().expect("ip")
}

async fn measure(ingest: &Ingest, store: &Store, user: &str, now: i64) {
    let body = format!("user_id={user}&event_name=game_open");
    let measured = ingest
        .measure(MeasureRequest {
            body: MeasureBody::Form(body.as_bytes()),
            bearer: Some("key"),
            client_ip: ip(),
            now,
        })
        .expect("valid event");
    store.insert_events(measured.events).await.expect("stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn salts_rotate_on_schedule_and_players_keep_their_pseudonym() {
    let dir = tempfile::tempdir().expect("dir");
    let config = Config::zero_config(dir.path(), SecretHash::of(b"key"), SecretHash::of(b"admin"));
    let key = DbKey::generate().expect("key");
    let OpenedStore {
        store,
        salts,
        ingest,
    } = open_store(&config, key.clone()).expect("store");
    let rotate = |now| rotate_salt_if_due(&store, &salts, &config.privacy, now);

    assert!(rotate(T0).await.expect("rotate"), "no salt yet: rotate");
    assert!(
        !rotate(T0 + 23 * HOUR).await.expect("rotate"),
        "not due after 23 h"
    );
    measure(&ingest, &store, "p1", T0 + HOUR).await;

    assert!(
        rotate(T0 + 24 * HOUR).await.expect("rotate"),
        "due after 24 h"
    );
    measure(&ingest, &store, "p1", T0 + 25 * HOUR).await;
    measure(&ingest, &store, "p2", T0 + 25 * HOUR).await;
    assert!(rotate(T0 + 48 * HOUR).await.expect("rotate"));
    measure(&ingest, &store, "p1", T0 + 49 * HOUR).await;
    assert_eq!(salts.read().expect("ring").live().len(), 3);
    assert_eq!(store.load_salts().expect("salts").len(), 3);
    store.close();
    // After a restart the writer knows the pseudonyms on file only from reading them back.
    let store = open_store(&config, key.clone()).expect("store").store;
    measure(&ingest, &store, "p1", T0 + 50 * HOUR).await;
    store.close();

    let db = rusqlite::Connection::open(dir.path().join("collector.db")).expect("open");
    db.execute_batch(&format!("PRAGMA key = \"x'{}'\";", key.to_hex()))
        .expect("key");
    let rows: Vec<(i64, Vec<u8>, i64, i64)> = db
        .prepare(
            "SELECT received_at, user_hash, user_salt_id, ip_salt_id FROM measure_logs ORDER BY id",
        )
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect()
        })
        .expect("rows");
    assert_eq!(rows.len(), 5);
    let (p1_first, p1_second, p2, p1_third, p1_restarted) =
        (&rows[0], &rows[1], &rows[2], &rows[3], &rows[4]);
    // p1 keeps the pseudonym made under salt 1 through two rotations and a restart.
    assert_eq!(p1_first.2, 1);
    assert_eq!((p1_second.1.clone(), p1_second.2), (p1_first.1.clone(), 1));
    assert_eq!((p1_third.1.clone(), p1_third.2), (p1_first.1.clone(), 1));
    assert_eq!(
        (p1_restarted.1.clone(), p1_restarted.2),
        (p1_first.1.clone(), 1)
    );
    // A new player is hashed under the current salt.
    assert_eq!(p2.2, 2);
    assert_ne!(p2.1, p1_first.1);
    // Addresses are always hashed under the newest salt.
    assert_eq!(
        [p1_first.3, p1_second.3, p2.3, p1_third.3, p1_restarted.3],
        [1, 2, 2, 3, 3]
    );
}

/// Invariant 3 with invariant 4: a returning player's recent events keep the pseudonym made
/// under the salt of their first event, so when that salt is destroyed they go with it, though
/// they arrived inside the retention; the player then starts afresh under a live salt.
#[tokio::test(flavor = "multi_thread")]
async fn a_retired_salt_takes_recent_events_still_keyed_by_it() {
    let dir = tempfile::tempdir().expect("dir");
    let config = Config::zero_config(dir.path(), SecretHash::of(b"key"), SecretHash::of(b"admin"));
    let key = DbKey::generate().expect("key");
    let OpenedStore {
        store,
        salts,
        ingest,
    } = open_store(&config, key.clone()).expect("store");
    let day = 24 * HOUR;
    assert!(
        rotate_salt_if_due(&store, &salts, &config.privacy, T0)
            .await
            .expect("salt 1")
    );
    measure(&ingest, &store, "p1", T0 + HOUR).await;
    assert!(
        rotate_salt_if_due(&store, &salts, &config.privacy, T0 + day)
            .await
            .expect("salt 2")
    );
    // Twenty days later p1 is still known under salt 1 (its first event is retained).
    measure(&ingest, &store, "p1", T0 + 20 * day).await;

    // The cut-off (now - 30 days) is T0 + 25 h: salt 2 replaced salt 1 an hour before it, so
    // salt 1 goes, with the first event (past retention) and the second (19 days old).
    let now = T0 + 30 * day + 25 * HOUR;
    let report = purge(&store, &salts, &config.privacy, now)
        .await
        .expect("purge");
    assert_eq!((report.events, report.salts), (2, 1));
    measure(&ingest, &store, "p1", now).await;
    store.close();

    let db = rusqlite::Connection::open(dir.path().join("collector.db")).expect("open");
    db.execute_batch(&format!("PRAGMA key = \"x'{}'\";", key.to_hex()))
        .expect("key");
    let rows: Vec<(i64, i64)> = db
        .prepare("SELECT received_at, user_salt_id FROM measure_logs ORDER BY id")
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .expect("rows");
    assert_eq!(rows, vec![(now, 2)], "only the new event, under salt 2");
}
