//! The refusal codes: `docs/api.md` lists exactly the codes the collector has, and the real
//! binary answers each code a client can cause with it, for a request that causes it.

mod common;

use std::collections::BTreeSet;

use common::{Collector, MEASURE_KEY, Options};
use tracks_collector::testkit::Code;
use tracks_collector::testkit::SecretHash;

const JSON: &str = "application/json";
const FORM: &str = "application/x-www-form-urlencoded";
const METRICS_TOKEN: &str = "tc_test_metrics_token";

/// Codes that answer the collector's state, not the request: no request alone causes them.
/// Each is answered by the test named beside it.
const STATE_CODES: &[(&str, &str)] = &[
    (
        "not_ready",
        "src/ingest: no salt yet, only before the first one is made at start",
    ),
    (
        "no_certificate",
        "tests/acme.rs: /healthz before the first ACME certificate",
    ),
    ("overloaded", "tests/abuse_store.rs: a full write queue"),
    ("disk_full", "tests/abuse_store.rs: a full file system"),
    ("not_durable", "tests/abuse_store.rs: a failed sync"),
    ("unavailable", "tests/abuse_store.rs: a store that fails"),
    ("internal", "a bug: logged where it happens"),
    (
        "body_timeout",
        "a body that stalls for 15 s; the connection's own timeouts in tests/abuse.rs",
    ),
];

/// The first column of the table under `## Error codes` in docs/api.md.
fn documented_codes() -> Vec<String> {
    let api = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md"))
        .expect("docs/api.md");
    let section = api
        .split("\n## ")
        .find(|section| section.starts_with("Error codes"))
        .expect("a section `## Error codes` in docs/api.md");
    section
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|line| line.split('`').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_documented_codes_are_the_collectors_codes() {
    let documented = documented_codes();
    let unique: BTreeSet<&str> = documented.iter().map(String::as_str).collect();
    assert_eq!(unique.len(), documented.len(), "a code listed twice");
    let codes: BTreeSet<&str> = Code::ALL.iter().map(|code| code.as_str()).collect();
    assert_eq!(
        unique, codes,
        "docs/api.md, `## Error codes`, against the collector's codes"
    );
}

/// A request, and the status and code it must be answered with.
struct Case {
    code: &'static str,
    status: u16,
    send: Send,
}

enum Send {
    Post {
        path: &'static str,
        content_type: &'static str,
        body: String,
        headers: Vec<(&'static str, String)>,
    },
    Get {
        path: String,
        headers: Vec<(&'static str, String)>,
    },
    /// Bytes no HTTP library would send.
    Raw(&'static str),
}

fn measure(body: &str) -> Send {
    let content_type = if body.starts_with(['{', '[']) {
        JSON
    } else {
        FORM
    };
    Send::Post {
        path: "/measure",
        content_type,
        body: body.to_string(),
        headers: vec![("authorization", format!("Bearer {MEASURE_KEY}"))],
    }
}

fn collect(body: &str) -> Send {
    Send::Post {
        path: "/collect",
        content_type: JSON,
        body: body.to_string(),
        headers: Vec::new(),
    }
}

fn get(path: &str, token: Option<&str>) -> Send {
    Send::Get {
        path: path.to_string(),
        headers: token
            .map(|token| vec![("authorization", format!("Bearer {token}"))])
            .unwrap_or_default(),
    }
}

fn case(code: &'static str, status: u16, send: Send) -> Case {
    Case { code, status, send }
}

fn client_cases() -> Vec<Case> {
    let now = tracks_collector::unix_now();
    let event = r#"{"user_id":"p","event_name":"game_open"}"#;
    vec![
        case("invalid_json", 400, collect(r#"{"url": "#)),
        case(
            "invalid_encoding",
            400,
            measure("user_id=%FF&event_name=game_open"),
        ),
        case(
            "unknown_field",
            400,
            measure(r#"{"user_id":"p","event_name":"game_open","email":"x"}"#),
        ),
        case(
            "duplicate_field",
            400,
            measure("user_id=a&user_id=b&event_name=game_open"),
        ),
        case(
            "missing_field",
            400,
            measure(r#"{"event_name":"game_open"}"#),
        ),
        case(
            "invalid_field",
            400,
            collect(r#"{"url":"https://mygame.example/","consent":"yes"}"#),
        ),
        case(
            "invalid_query",
            400,
            get(
                "/api/v1/aggregates?from=yesterday",
                Some("tc_test_pull_token"),
            ),
        ),
        case(
            "invalid_url",
            400,
            collect(r#"{"url":"javascript:alert(1)"}"#),
        ),
        case(
            "invalid_id",
            400,
            collect(r#"{"url":"https://mygame.example/","id":"x"}"#),
        ),
        case(
            "invalid_game",
            400,
            collect(r#"{"url":"https://mygame.example/","game":5}"#),
        ),
        case(
            "unknown_game",
            400,
            collect(r#"{"url":"https://mygame.example/","game":"nope"}"#),
        ),
        case(
            "invalid_user_id",
            400,
            measure(r#"{"user_id":true,"event_name":"game_open"}"#),
        ),
        case(
            "invalid_event_name",
            400,
            measure(r#"{"user_id":"p","event_name":5}"#),
        ),
        case(
            "unknown_event",
            400,
            measure("user_id=p&event_name=level_up"),
        ),
        case(
            "invalid_ip",
            400,
            measure("user_id=p&event_name=game_open&ip=999.1.1.1"),
        ),
        case(
            "invalid_time_stamp",
            400,
            measure("user_id=p&event_name=game_open&time_stamp=yesterday"),
        ),
        case(
            "time_stamp_out_of_window",
            400,
            measure(&format!(
                "user_id=p&event_name=game_open&time_stamp={}",
                now + 3 * 86_400
            )),
        ),
        case(
            "invalid_platform",
            400,
            measure(r#"{"user_id":"p","event_name":"game_open","platform":5}"#),
        ),
        case(
            "invalid_storefront",
            400,
            measure("user_id=p&event_name=game_open&storefront=nope"),
        ),
        case(
            "invalid_event_id",
            400,
            measure(r#"{"user_id":"p","event_name":"game_open","event_id":""}"#),
        ),
        case("empty_batch", 400, measure("[]")),
        case(
            "batch_too_large",
            400,
            measure(&format!("[{}]", vec![event; 101].join(","))),
        ),
        case("not_found", 404, get("/nope", None)),
        case("unknown_link", 404, get("/r/nope", None)),
        case("method_not_allowed", 405, get("/collect", None)),
        case(
            "unsupported_media_type",
            415,
            Send::Post {
                path: "/collect",
                content_type: "application/xml",
                body: "<visit/>".into(),
                headers: Vec::new(),
            },
        ),
        case(
            "payload_too_large",
            413,
            collect(&format!(
                r#"{{"url":"https://mygame.example/{}"}}"#,
                "a".repeat(9000)
            )),
        ),
        case(
            "length_required",
            411,
            Send::Raw(
                "POST /collect HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                 Connection: close\r\n\r\n",
            ),
        ),
        case(
            "bad_body",
            400,
            Send::Raw(
                "POST /collect HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                 Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
            ),
        ),
        case(
            "origin_not_allowed",
            403,
            Send::Post {
                path: "/collect",
                content_type: JSON,
                body: r#"{"url":"https://mygame.example/"}"#.into(),
                headers: vec![("origin", "https://evil.example".into())],
            },
        ),
        case(
            "missing_measure_key",
            401,
            Send::Post {
                path: "/measure",
                content_type: FORM,
                body: "user_id=p&event_name=game_open".into(),
                headers: Vec::new(),
            },
        ),
        case(
            "invalid_measure_key",
            401,
            Send::Post {
                path: "/measure",
                content_type: FORM,
                body: "user_id=p&event_name=game_open".into(),
                headers: vec![("authorization", "Bearer mk_not_a_key".into())],
            },
        ),
        case("missing_token", 401, get("/metrics", None)),
        case(
            "invalid_token",
            401,
            get("/metrics", Some("tc_not_a_token")),
        ),
        case(
            "insufficient_scope",
            403,
            get("/api/v1/aggregates", Some(METRICS_TOKEN)),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn each_code_a_client_can_cause_is_answered_for_its_fault() {
    let collector = Collector::start(Options {
        server_extra: "allowed_origins = [\"https://mygame.example\"]".into(),
        extra: format!(
            "[[tokens]]\nname = \"pull\"\nscopes = [\"aggregates\"]\nhash = \"{}\"\n\n\
             [[tokens]]\nname = \"ops\"\nscopes = [\"metrics\"]\nhash = \"{}\"\n",
            SecretHash::of(b"tc_test_pull_token").to_config_string(),
            SecretHash::of(METRICS_TOKEN.as_bytes()).to_config_string(),
        ),
        ..Options::default()
    });
    let client = collector.client();
    let mut answered = BTreeSet::new();
    for Case { code, status, send } in client_cases() {
        let (got_status, body) = match send {
            Send::Post {
                path,
                content_type,
                body,
                headers,
            } => {
                let headers: Vec<(&str, &str)> =
                    headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                let answer = client.post(path, content_type, body, &headers).await;
                (answer.status, answer.json())
            }
            Send::Get { path, headers } => {
                let headers: Vec<(&str, &str)> =
                    headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                let answer = client.get(&path, &headers).await;
                (answer.status, answer.json())
            }
            Send::Raw(request) => {
                let answer = client.raw(request.as_bytes()).await;
                let status = answer
                    .split(' ')
                    .nth(1)
                    .and_then(|status| status.parse().ok())
                    .unwrap_or(0);
                let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
                (status, serde_json::from_str(body).unwrap_or_default())
            }
        };
        assert_eq!(
            (got_status, body["error"].as_str()),
            (status, Some(code)),
            "{body}"
        );
        let message = body["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{code}: no message");
        answered.insert(code);
    }
    // A client that keeps asking: the one code that needs many requests.
    let mut limited = None;
    for _ in 0..200 {
        let answer = client.get("/time", &[]).await;
        if answer.status == 429 {
            limited = Some(answer.error_code());
            break;
        }
    }
    assert_eq!(
        limited.as_deref(),
        Some("rate_limited"),
        "200 calls of /time"
    );
    answered.insert("rate_limited");
    assert_eq!(
        collector.count("collect_logs") + collector.count("measure_logs"),
        0
    );

    let state: BTreeSet<&str> = STATE_CODES.iter().map(|(code, _)| *code).collect();
    assert!(answered.is_disjoint(&state));
    let covered: BTreeSet<&str> = answered.union(&state).copied().collect();
    let codes: BTreeSet<&str> = Code::ALL.iter().map(|code| code.as_str()).collect();
    assert_eq!(
        covered, codes,
        "every code is caused here or named in STATE_CODES"
    );
}
