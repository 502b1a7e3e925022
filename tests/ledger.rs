//! What left the server, proved: every document that leaves is signed with the collector's
//! identity and recorded in a hash-chained ledger. Through the real binary: a push to a test
//! platform checked by the Python example of docs/api.md as written there, pulls checked
//! against `/api/v1/identity`, `ledger verify` catching an edited row, a deleted row and a
//! changed document, and a key rotation the chain survives.

mod common;

use std::process::Command;
use std::time::Duration;

use common::central::{Behaviour, FakeCentral};
use common::{Collector, Options, binary};
use tracks_collector::testkit::SecretHash;

const PULL_TOKEN: &str = "tc_test_pull_token";
const METRICS_TOKEN: &str = "tc_test_metrics_token";

fn tokens() -> String {
    format!(
        "[[tokens]]\nname = \"central-pull\"\nscopes = [\"aggregates\"]\nhash = \"{}\"\n\n\
         [[tokens]]\nname = \"ops\"\nscopes = [\"metrics\"]\nhash = \"{}\"\n",
        SecretHash::of(PULL_TOKEN.as_bytes()).to_config_string(),
        SecretHash::of(METRICS_TOKEN.as_bytes()).to_config_string(),
    )
}

fn today() -> String {
    tracks_collector::testkit::utc_day(tracks_collector::unix_now())
}

/// The Python block under "Verifying a document" in docs/api.md, as written there.
fn python_example() -> String {
    let api = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md"))
        .expect("docs/api.md");
    let section = api
        .split("### Verifying a document")
        .nth(1)
        .expect("a section `Verifying a document` in docs/api.md");
    section
        .split("```python\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a python block in it")
        .to_string()
}

/// Runs the docs' `verify` on a document and its headers; whether it passed.
fn python_verifies(body: &[u8], headers: &serde_json::Value, public_key: &str) -> bool {
    let dir = tempfile::tempdir().expect("dir");
    let (body_path, headers_path) = (dir.path().join("body"), dir.path().join("headers.json"));
    std::fs::write(&body_path, body).expect("body");
    std::fs::write(&headers_path, headers.to_string()).expect("headers");
    let program = format!(
        "{}\nimport json, sys\nverify(open(sys.argv[1], 'rb').read(), \
         json.load(open(sys.argv[2])), sys.argv[3])\nprint('verified')\n",
        python_example()
    );
    let output = Command::new("python3")
        .arg("-c")
        .arg(program)
        .arg(&body_path)
        .arg(&headers_path)
        .arg(public_key)
        .output()
        .expect("python3");
    let said = String::from_utf8_lossy(&output.stdout);
    output.status.success() && said.contains("verified")
}

async fn identity(collector: &Collector) -> serde_json::Value {
    let answer = collector.client().get("/api/v1/identity", &[]).await;
    assert_eq!(answer.status, 200);
    answer.json()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pushed_document_verifies_with_the_docs_python_example() {
    let central = FakeCentral::start(Behaviour::Accept).await;
    let token_dir = tempfile::tempdir().expect("dir");
    let token_file = token_dir.path().join("central.token");
    std::fs::write(&token_file, "tc_central_push_token\n").expect("token");
    let collector = Collector::start(Options {
        extra: format!(
            "[central]\nurl = \"{}\"\ncollector_id = \"studio-test-1\"\ntoken_file = \"{}\"\n\
             ca_file = \"{}\"\npush_schedule = \"* * * * * *\"\n",
            central.url(),
            token_file.display(),
            central.ca.display(),
        ),
        ..Options::default()
    });
    let visit = collector
        .client()
        .post(
            "/collect",
            "application/json",
            r#"{"url": "https://mygame.example/?utm_source=newsletter"}"#,
            &[],
        )
        .await;
    assert_eq!(visit.status, 204);
    let received = central
        .wait_until(Duration::from_secs(30), "a pushed document", |r| {
            !r.is_empty()
        })
        .await;
    let pushed = &received[0];
    let headers = serde_json::to_value(&pushed.signature).expect("headers");
    let public_key = identity(&collector).await["public_key"]
        .as_str()
        .expect("public_key")
        .to_string();
    assert!(
        python_verifies(&pushed.body, &headers, &public_key),
        "the docs' example refused a pushed document: {headers}"
    );
    let mut changed = pushed.body.clone();
    let at = changed.len() / 2;
    changed[at] ^= 0x01;
    assert!(
        !python_verifies(&changed, &headers, &public_key),
        "a document changed by one byte verified"
    );
    // The push is in the ledger, to the platform's URL.
    let ledger = collector.run_command(&["ledger", "--format", "json"]);
    let rows: serde_json::Value = serde_json::from_slice(&ledger.stdout).expect("json");
    assert_eq!(rows[0]["kind"], "push");
    assert!(
        rows[0]["destination"]
            .as_str()
            .is_some_and(|to| to.starts_with(&central.url())),
        "{rows}"
    );
}

/// Runs `sql` on the decrypted file, as anyone holding the database key could.
fn tamper(collector: &Collector, sql: &str) {
    let key = std::fs::read_to_string(&collector.key_file).expect("key file");
    let conn = rusqlite::Connection::open(&collector.db_path).expect("open");
    conn.execute_batch(&format!("PRAGMA key = \"x'{}'\"; {sql};", key.trim()))
        .expect("tamper");
}

/// `ledger verify`: its exit status and what it said.
fn verify(collector: &Collector, extra: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(binary())
        .arg("--config")
        .arg(&collector.config_path)
        .arg("ledger")
        .arg("verify")
        .args(extra)
        .output()
        .expect("ledger verify");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), said)
}

#[tokio::test(flavor = "multi_thread")]
async fn ledger_verify_catches_an_edited_row_a_deleted_row_and_a_changed_document() {
    let mut collector = Collector::start(Options {
        extra: tokens(),
        ..Options::default()
    });
    let client = collector.client();
    let public_key = identity(&collector).await["public_key"]
        .as_str()
        .expect("key")
        .to_string();
    let auth = format!("Bearer {PULL_TOKEN}");
    let path = format!("/api/v1/aggregates?from={}&to={}", today(), today());
    let mut pulled = Vec::new();
    for _ in 0..3 {
        let answer = client.get(&path, &[("authorization", &auth)]).await;
        assert_eq!(answer.status, 200);
        let headers: serde_json::Value = [
            "tracks-signature",
            "tracks-ledger-prev",
            "tracks-signing-key",
        ]
        .iter()
        .map(|name| {
            (
                name.to_string(),
                serde_json::Value::from(answer.header(name).unwrap_or_default()),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
        assert!(
            python_verifies(&answer.body, &headers, &public_key),
            "{headers}"
        );
        pulled.push(answer.body.to_vec());
    }
    // The dashboard's view of it: the fingerprint and the newest rows, to a metrics token.
    let ledger = client
        .get(
            "/api/v1/ledger?limit=2",
            &[("authorization", &format!("Bearer {METRICS_TOKEN}"))],
        )
        .await;
    assert_eq!(ledger.status, 200);
    let ledger = ledger.json();
    assert_eq!(ledger["rows"].as_array().map(Vec::len), Some(2));
    assert_eq!(ledger["rows"][0]["seq"], 3);
    assert_eq!(ledger["rows"][0]["destination"], "central-pull");
    assert!(!ledger.to_string().contains(PULL_TOKEN));
    collector.terminate();

    let (status, said) = verify(&collector, &[]);
    assert_eq!(status, Some(0), "{said}");
    assert!(
        said.contains("3 row(s), chain and signatures hold"),
        "{said}"
    );
    let document = collector.dir.path().join("pulled.json");
    std::fs::write(&document, &pulled[1]).expect("write");
    let (status, said) = verify(&collector, &["--document", &document.display().to_string()]);
    assert_eq!(status, Some(0), "{said}");
    assert!(said.contains("recorded by row"), "{said}");

    // 1. A document changed by one byte is recorded by no row.
    let mut changed = pulled[1].clone();
    changed[10] ^= 0x01;
    std::fs::write(&document, &changed).expect("write");
    let (status, said) = verify(&collector, &["--document", &document.display().to_string()]);
    assert_eq!(status, Some(1), "{said}");
    assert!(
        said.contains("no ledger row records this document"),
        "{said}"
    );

    // 2. An edited row, by SQL on the decrypted file: that row is named.
    let backup = std::fs::read(&collector.db_path).expect("backup");
    tamper(
        &collector,
        "UPDATE ledger SET destination = 'nobody' WHERE seq = 2",
    );
    let (status, said) = verify(&collector, &[]);
    assert_eq!(status, Some(1), "{said}");
    assert!(said.contains("row 2: its fields do not hash"), "{said}");
    std::fs::write(&collector.db_path, &backup).expect("restore");
    assert_eq!(verify(&collector, &[]).0, Some(0));

    // 3. A deleted row: the row after it no longer chains.
    tamper(&collector, "DELETE FROM ledger WHERE seq = 2");
    let (status, said) = verify(&collector, &[]);
    assert_eq!(status, Some(1), "{said}");
    assert!(
        said.contains("row 3: it does not name the row before it"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_key_continues_the_chain_and_old_documents_still_verify() {
    let mut collector = Collector::start(Options {
        extra: format!("{}\n[ledger]\nkeep_documents = true\n", tokens()),
        ..Options::default()
    });
    let auth = format!("Bearer {PULL_TOKEN}");
    let path = format!("/api/v1/aggregates?from={}&to={}", today(), today());
    let before = collector
        .client()
        .get(&path, &[("authorization", &auth)])
        .await;
    let old_key = identity(&collector).await["public_key"].clone();
    // While the daemon runs: it carries the rotation out and signs with the new key at once.
    let rotated = collector.run_command(&["identity", "rotate"]);
    assert!(
        String::from_utf8_lossy(&rotated.stdout).contains("signed by the old key and the new one")
    );
    let new_key = identity(&collector).await["public_key"].clone();
    assert_ne!(old_key, new_key);
    let after = collector
        .client()
        .get(&path, &[("authorization", &auth)])
        .await;
    assert_eq!(after.header("tracks-signing-key"), new_key.as_str());
    assert_eq!(before.header("tracks-signing-key"), old_key.as_str());
    collector.terminate();
    let (status, said) = verify(&collector, &[]);
    assert_eq!(status, Some(0), "{said}");
    assert!(said.contains("3 row(s)"), "{said}");
    let document = collector.dir.path().join("before.json");
    std::fs::write(&document, &before.body).expect("write");
    let (status, said) = verify(&collector, &["--document", &document.display().to_string()]);
    assert_eq!(
        status,
        Some(0),
        "a document signed before the rotation: {said}"
    );
    // Kept documents are shown as they left.
    let shown = collector.run_command(&["ledger", "show", "1"]);
    assert_eq!(
        String::from_utf8_lossy(&shown.stdout).trim_end(),
        String::from_utf8_lossy(&before.body)
    );
    let printed = collector.run_command(&["identity"]);
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(
        printed.contains(new_key.as_str().unwrap_or("?")),
        "{printed}"
    );
}
