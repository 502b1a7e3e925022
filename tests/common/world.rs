//! Test support: a collector's state without the HTTP layer (config, store, salts, ingest),
//! driven with time as a parameter.

use std::net::IpAddr;

use serde_json::{Value, json};
use tracks_collector::testkit::Ingest;
use tracks_collector::testkit::SharedSalts;
use tracks_collector::testkit::rotate_salt_if_due;
use tracks_collector::testkit::{CollectOutcome, CollectRequest};
use tracks_collector::testkit::{Config, GameConfig, MeasureKey, SecretHash};
use tracks_collector::testkit::{DbKey, EventsWritten, NewVisit, Store};
use tracks_collector::testkit::{Document, Query, read_document};
use tracks_collector::testkit::{MeasureBody, MeasureRequest};
use tracks_collector::testkit::{OpenedStore, open_store};

/// 2026-11-01T00:00:00Z.
pub(crate) const NOV_1: i64 = 1_793_491_200;
pub(crate) const HOUR: i64 = 3600;
pub(crate) const DAY: i64 = 86_400;

pub(crate) const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
pub(crate) const WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

/// A collector's state without the HTTP layer: config, store, salts, ingest.
pub(crate) struct World {
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub key: DbKey,
    pub store: Store,
    pub salts: SharedSalts,
    pub ingest: Ingest,
}

impl World {
    pub(crate) fn new(tweak: impl FnOnce(&mut Config)) -> World {
        let dir = tempfile::tempdir().expect("dir");
        let mut config = Config::zero_config(
            dir.path(),
            SecretHash::of(b"key-demo"),
            SecretHash::of(b"admin"),
        );
        config.games.push(GameConfig {
            id: "other-game".into(),
            measure_keys: vec![MeasureKey {
                name: MeasureKey::SINGLE_NAME.into(),
                hash: SecretHash::of(b"key-other"),
            }],
            events: vec!["first_game_open".into(), "game_open".into()],
        });
        tweak(&mut config);
        let key = DbKey::generate().expect("key");
        let (store, salts, ingest) = open(&config, &key);
        World {
            dir,
            config,
            key,
            store,
            salts,
            ingest,
        }
    }

    /// The state of a collector's own configuration and key file: e.g. to write a story into
    /// the database of a stopped daemon.
    pub(crate) fn on(config: Config, key: DbKey) -> World {
        let (store, salts, ingest) = open(&config, &key);
        World {
            dir: tempfile::tempdir().expect("dir"),
            config,
            key,
            store,
            salts,
            ingest,
        }
    }

    /// Stops and starts again on the same file: salts come back from the database.
    pub(crate) fn restart(&mut self) {
        self.store.close();
        let (store, salts, ingest) = open(&self.config, &self.key);
        (self.store, self.salts, self.ingest) = (store, salts, ingest);
        assert!(self.dir.path().exists());
    }

    /// Dies as `kill -9` would right after the last commit, then starts again on the same
    /// file: what the writer held in memory is lost, the WAL is recovered.
    pub(crate) fn crash(&mut self) {
        self.store.crash();
        let (store, salts, ingest) = open(&self.config, &self.key);
        (self.store, self.salts, self.ingest) = (store, salts, ingest);
    }

    pub(crate) async fn rotate(&self, now: i64) -> bool {
        rotate_salt_if_due(&self.store, &self.salts, &self.config.privacy, now)
            .await
            .expect("rotation")
    }

    pub(crate) async fn visit(&self, ip: &str, body: Value, ua: &str, now: i64) {
        let visit = self.new_visit(ip, &body, ua, now);
        self.store.insert_visit(visit).await.expect("stored");
    }

    /// The visit that ingest makes of the collect script's `body`, not stored yet.
    pub(crate) fn new_visit(&self, ip: &str, body: &Value, ua: &str, now: i64) -> Box<NewVisit> {
        let body = body.to_string();
        let outcome = self
            .ingest
            .collect(CollectRequest {
                body: body.as_bytes(),
                user_agent: Some(ua),
                client_ip: ip.parse::<IpAddr>().expect("ip"),
                now,
            })
            .expect("valid visit");
        let CollectOutcome::Visit(visit) = outcome else {
            panic!("not a crawler")
        };
        visit
    }

    /// Sends one event (or a batch) through ingest and the writer; answers what was stored and
    /// what was dropped as blocked.
    pub(crate) async fn open(&self, key: &str, event: Value, ip: &str, now: i64) -> EventsWritten {
        let body = event.to_string();
        let measured = self
            .ingest
            .measure(MeasureRequest {
                body: MeasureBody::Json(body.as_bytes()),
                bearer: Some(key),
                client_ip: ip.parse::<IpAddr>().expect("ip"),
                now,
            })
            .expect("valid event");
        self.store
            .insert_events(measured.events)
            .await
            .expect("stored")
    }

    pub(crate) fn document(&self, from: &str, to: &str, game: Option<&str>, now: i64) -> Document {
        let query = Query::parse(Some(from), Some(to), game, &self.config, now).expect("query");
        read_document(
            &self.store.reader().expect("reader"),
            &self.config,
            &query,
            now,
        )
        .expect("document")
    }

    /// The conversions as (source, event, events, users), for compact assertions.
    pub(crate) fn conversions(
        &self,
        from: &str,
        to: &str,
        now: i64,
    ) -> Vec<(String, String, i64, i64)> {
        self.document(from, to, None, now)
            .conversions
            .into_iter()
            .map(|row| {
                (
                    row.campaign.source.unwrap_or_default(),
                    row.event,
                    row.events,
                    row.users,
                )
            })
            .collect()
    }
}

fn open(config: &Config, key: &DbKey) -> (Store, SharedSalts, Ingest) {
    let OpenedStore {
        store,
        salts,
        ingest,
    } = open_store(config, key.clone()).expect("store");
    (store, salts, ingest)
}

pub(crate) fn page(query: &str) -> Value {
    json!({ "url": format!("https://mygame.example/?{query}") })
}

pub(crate) fn event(user: &str, name: &str, extra: Value) -> Value {
    let mut event = json!({ "user_id": user, "event_name": name });
    if let (Some(event), Some(extra)) = (event.as_object_mut(), extra.as_object()) {
        event.extend(extra.clone());
    }
    event
}
