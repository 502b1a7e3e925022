//! Bench support: the collector's config file for a bench that loads `POST /collect`, and the
//! visits it stored, read with its own CLI once it has stopped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper::body::Bytes;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use tracks_collector::testkit::{DbKey, SecretHash, TlsFiles};

use super::{Workload, toml_path};

/// The game the benches' visits name.
pub(crate) const GAME: &str = "bench-game";
/// The landing page's origin, allowed to report visits.
pub(crate) const ORIGIN: &str = "https://mygame.example";
/// A desktop browser's User-Agent.
pub(crate) const USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
     (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
/// The visit a landing page's script posts, less its page view's id (`visit_body`).
const VISIT: &str = concat!(
    r#"{"url":"https://mygame.example/landing?utm_source=twitter&utm_medium=social"#,
    r#"&utm_campaign=launch","referrer":"https://t.co/abc","consent":true,"game":"bench-game""#
);

/// The body of a page view as the script sends it: the visit with an id of its own, four
/// random 32-bit numbers (`tracks.js`), here drawn from a counter over the whole process so
/// that no two loads repeat one (a repeated id updates its visit instead of adding one).
fn visit_body() -> Bytes {
    static VIEWS: AtomicU64 = AtomicU64::new(0);
    let view = VIEWS.fetch_add(1, Ordering::Relaxed);
    let random = blake3::hash(&view.to_le_bytes());
    let words: Vec<String> = random.as_bytes()[..16]
        .chunks_exact(4)
        .map(|word| u32::from_le_bytes([word[0], word[1], word[2], word[3]]).to_string())
        .collect();
    Bytes::from(format!(r#"{VISIT},"id":"v{}"}}"#, words.join("-")))
}

/// The `X-Forwarded-For` address of the n-th request of a load.
pub(crate) type Visitor = Box<dyn Fn(u64) -> HeaderValue + Send + Sync>;

/// The same visit on every request, each a page view of its own, the way a landing page's
/// script posts it from a browser with `user_agent`; with `forwarded`, each from the address a
/// reverse proxy names for it.
pub(crate) fn collect_workload(
    user_agent: &'static str,
    forwarded: Option<Visitor>,
    max_requests: u64,
) -> Arc<Workload> {
    Arc::new(Workload {
        method: Method::POST,
        path: "/collect",
        headers: vec![
            // A beacon's string body.
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain;charset=UTF-8"),
            ),
            (header::USER_AGENT, HeaderValue::from_static(user_agent)),
            (header::ORIGIN, HeaderValue::from_static(ORIGIN)),
        ],
        body: Box::new(|_| visit_body()),
        request_headers: forwarded.map(|visitor| {
            Box::new(move |n| vec![(HeaderName::from_static("x-forwarded-for"), visitor(n))])
                as super::RequestHeaders
        }),
        expect: StatusCode::NO_CONTENT,
        max_requests,
    })
}

/// Writes `collector.toml` and a new database key in `dir`, for a collector on
/// 127.0.0.1:`port` with `tls`, the bench game, and the per-address limits raised out of the
/// load's way. `server` is added to `[server]` (one line or more, each ending in a newline);
/// `tables` comes after `[storage]`.
pub(crate) fn write_config(
    dir: &Path,
    port: u16,
    tls: &TlsFiles,
    server: &str,
    tables: &str,
) -> PathBuf {
    let key_file = dir.join("db.key");
    DbKey::generate()
        .and_then(|key| key.write_new_file(&key_file))
        .expect("cannot write the database key file");
    let text = format!(
        "[server]\n\
         listen = \"127.0.0.1:{port}\"\n\
         tls_cert = {cert}\n\
         tls_key = {key}\n\
         allowed_origins = [\"{ORIGIN}\"]\n\
         {server}\
         \n\
         [storage]\n\
         path = {db}\n\
         key_file = {key_file}\n\
         \n\
         {tables}\
         [[games]]\n\
         id = \"{GAME}\"\n\
         measure_key = \"{measure_key}\"\n\
         \n\
         [limits]\n\
         connections_per_address = 1024\n\
         visits_per_second = 1000000\n\
         visits_burst = 1000000\n\
         \n\
         [log]\n\
         level = \"warn\"\n\
         format = \"json\"\n",
        cert = toml_path(&tls.cert),
        key = toml_path(&tls.key),
        db = toml_path(&dir.join("collector.db")),
        key_file = toml_path(&key_file),
        measure_key = SecretHash::of(b"bench measure key").to_config_string(),
    );
    let path = dir.join("collector.toml");
    std::fs::write(&path, text).expect("cannot write the collector's config file");
    path
}

/// `stats --format json`'s `visits`, read after the collector has stopped.
pub(crate) fn stored_visits(binary: &Path, config: &Path) -> Option<u64> {
    let output = Command::new(binary)
        .env_remove("RUST_LOG")
        .arg("--config")
        .arg(config)
        .args(["stats", "--format", "json"])
        .stderr(Stdio::inherit())
        .output()
        .expect("cannot run the collector's stats command");
    if !output.status.success() {
        println!("!!! `stats --format json` failed: {}", output.status);
        return None;
    }
    let stats: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("`stats --format json` did not print JSON");
    let visits = stats.get("visits").and_then(serde_json::Value::as_u64);
    if visits.is_none() {
        println!("!!! `stats --format json` has no numeric `visits` field: {stats}");
    }
    visits
}
