//! `/collect`, `/measure` and `/healthz` through the real binary over TLS: every success and
//! every refusal, with what the database holds afterwards.

mod common;

use std::time::Duration;

use common::{Alpn, Collector, IPHONE_UA, MEASURE_KEY, OTHER_MEASURE_KEY, Options, tls_connector};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const JSON: &str = "application/json";
const FORM: &str = "application/x-www-form-urlencoded";

fn now() -> i64 {
    tracks_collector::unix_now()
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// One request that must be refused, and how.
struct Refusal {
    name: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
    status: u16,
    code: &'static str,
}

fn refusal(
    name: &'static str,
    content_type: &'static str,
    body: impl Into<Vec<u8>>,
    headers: Vec<(&'static str, &str)>,
    status: u16,
    code: &'static str,
) -> Refusal {
    Refusal {
        name,
        content_type,
        body: body.into(),
        headers: headers
            .into_iter()
            .map(|(n, v)| (n, v.to_string()))
            .collect(),
        status,
        code,
    }
}

/// A `/measure` refusal, with the Authorization value (if any) and a word its message names.
fn measure_refusal(
    name: &'static str,
    content_type: &'static str,
    body: String,
    authorization: Option<&str>,
    status: u16,
    code: &'static str,
    mention: &'static str,
) -> (Refusal, &'static str) {
    let headers = authorization
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    (
        refusal(name, content_type, body, headers, status, code),
        mention,
    )
}

fn with_origins() -> Options {
    Options {
        server_extra: r#"allowed_origins = ["https://mygame.example"]"#.into(),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn collect_stores_a_minimised_visit() {
    let collector = Collector::start(with_origins());
    let answer = collector
        .client()
        .post(
            "/collect",
            JSON,
            r#"{"url": "https://MyGame.example/launch/?utm_source=%20Twitter&utm_medium=Social&utm_campaign=Launch&utm_content=&email=someone%40example.com#top",
                "referrer": "https://t.co/abc?x=1", "consent": false, "game": "test-game"}"#,
            &[("user-agent", IPHONE_UA), ("origin", "https://mygame.example")],
        )
        .await;
    assert_eq!(answer.status, 204, "{:?}", answer.body);
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some("https://mygame.example")
    );

    let db = collector.open_db();
    let column = |name: &str| -> Option<String> {
        db.query_row(&format!("SELECT {name} FROM collect_logs"), [], |r| {
            r.get(0)
        })
        .expect("one visit")
    };
    assert_eq!(column("page_host").as_deref(), Some("mygame.example"));
    assert_eq!(column("page_path").as_deref(), Some("/launch/"));
    assert_eq!(column("utm_source").as_deref(), Some("twitter"));
    assert_eq!(column("utm_medium").as_deref(), Some("social"));
    assert_eq!(column("utm_campaign").as_deref(), Some("launch"));
    assert_eq!(column("utm_content"), None, "an empty UTM value is null");
    assert_eq!(column("referrer_host").as_deref(), Some("t.co"));
    assert_eq!(column("device").as_deref(), Some("smartphone"));
    assert_eq!(column("os").as_deref(), Some("iPhone"));
    assert_eq!(column("browser").as_deref(), Some("Safari"));
    assert_eq!(column("CAST(consent AS TEXT)").as_deref(), Some("0"));
    assert_eq!(column("game").as_deref(), Some("test-game"));
    assert_eq!(column("click_ids"), None, "no click ids without consent");
}

#[tokio::test(flavor = "multi_thread")]
async fn collect_accepts_text_plain_beacons_and_http2() {
    let collector = Collector::start(Options::default());
    let answer = collector
        .h2_client()
        .post(
            "/collect",
            "text/plain;charset=UTF-8",
            r#"{"url": "https://a.example/"}"#,
            &[],
        )
        .await;
    assert_eq!(answer.version, hyper::Version::HTTP_2);
    assert_eq!(answer.status, 204);
    assert_eq!(collector.count("collect_logs"), 1);
}

/// A client that sends its visit and then closes its side of the connection (TLS close_notify
/// and FIN, as a fire-and-forget sender may) still reads the 204, and the visit is stored:
/// the collector reads nothing more while a request waits for its commit.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_closes_its_side_after_a_visit_still_reads_the_answer() {
    let collector = Collector::start(Options::default());
    let ca = collector.ca.as_deref().expect("a TLS collector");
    let tcp = TcpStream::connect(collector.addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let mut tls = tls_connector(&[ca], Alpn::Http1)
        .connect(name, tcp)
        .await
        .expect("handshake");
    let body = r#"{"url": "https://a.example/"}"#;
    let request = format!(
        "POST /collect HTTP/1.1\r\nhost: localhost\r\ncontent-type: {JSON}\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.expect("request");
    tls.shutdown().await.expect("close our side");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer))
        .await
        .expect("the collector answers and closes within 10 s")
        .expect("read the answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer:?}");
    assert_eq!(collector.count("collect_logs"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn click_ids_are_kept_only_with_consent() {
    let collector = Collector::start(Options::default());
    let client = collector.client();
    for consent in [false, true] {
        let body = format!(
            r#"{{"url": "https://a.example/?gclid=CLICK{consent}&other=1", "consent": {consent}}}"#
        );
        assert_eq!(client.post("/collect", JSON, body, &[]).await.status, 204);
    }
    let db = collector.open_db();
    let ids: Vec<(i64, Option<String>)> = db
        .prepare("SELECT consent, click_ids FROM collect_logs ORDER BY id")
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .expect("rows");
    assert_eq!(ids[0], (0, None));
    assert_eq!(ids[1], (1, Some(r#"{"gclid":"CLICKtrue"}"#.to_string())));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_later_report_of_the_same_page_view_updates_consent() {
    let collector = Collector::start(Options::default());
    let client = collector.client();
    let view = r#""id": "view-0123456789""#;
    let first = format!(r#"{{"url": "https://a.example/", "consent": false, {view}}}"#);
    let second = format!(r#"{{"url": "https://a.example/", "consent": true, {view}}}"#);
    assert_eq!(client.post("/collect", JSON, first, &[]).await.status, 204);
    assert_eq!(client.post("/collect", JSON, second, &[]).await.status, 204);
    let db = collector.open_db();
    let (visits, consented): (i64, i64) = db
        .query_row("SELECT count(*), sum(consent) FROM collect_logs", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("counts");
    assert_eq!((visits, consented), (1, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn crawlers_are_answered_but_not_stored() {
    let collector = Collector::start(Options::default());
    let answer = collector
        .client()
        .post(
            "/collect",
            JSON,
            r#"{"url": "https://a.example/"}"#,
            &[(
                "user-agent",
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            )],
        )
        .await;
    assert_eq!(answer.status, 204);
    assert_eq!(collector.count("collect_logs"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn collect_refusals_name_the_problem_and_store_nothing() {
    let collector = Collector::start(with_origins());
    let client = collector.client();
    let cases: Vec<Refusal> = vec![
        refusal(
            "broken JSON",
            JSON,
            b"{\"url\": ".to_vec(),
            vec![],
            400,
            "invalid_json",
        ),
        refusal(
            "missing url",
            JSON,
            b"{\"referrer\": \"https://t.co\"}".to_vec(),
            vec![],
            400,
            "missing_field",
        ),
        refusal(
            "unknown field",
            JSON,
            b"{\"url\": \"https://a.example\", \"ip\": \"1.2.3.4\"}".to_vec(),
            vec![],
            400,
            "unknown_field",
        ),
        refusal(
            "not a web url",
            JSON,
            b"{\"url\": \"javascript:alert(1)\"}".to_vec(),
            vec![],
            400,
            "invalid_url",
        ),
        refusal(
            "unknown game",
            JSON,
            b"{\"url\": \"https://a.example\", \"game\": \"nope\"}".to_vec(),
            vec![],
            400,
            "unknown_game",
        ),
        refusal(
            "bad view id",
            JSON,
            b"{\"url\": \"https://a.example\", \"id\": \"x\"}".to_vec(),
            vec![],
            400,
            "invalid_id",
        ),
        refusal(
            "too big",
            JSON,
            format!("{{\"url\": \"https://a.example/{}\"}}", "a".repeat(9000)).into_bytes(),
            vec![],
            413,
            "payload_too_large",
        ),
        refusal(
            "wrong content type",
            "application/xml",
            b"<visit/>".to_vec(),
            vec![],
            415,
            "unsupported_media_type",
        ),
        refusal(
            "origin not allowed",
            JSON,
            b"{\"url\": \"https://a.example\"}".to_vec(),
            vec![("origin", "https://evil.example")],
            403,
            "origin_not_allowed",
        ),
    ];
    for Refusal {
        name,
        content_type,
        body,
        headers,
        status,
        code,
    } in cases
    {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let answer = client.post("/collect", content_type, body, &headers).await;
        assert_eq!(answer.status, status, "{name}: {:?}", answer.body);
        assert_eq!(answer.error_code(), code, "{name}");
        assert!(
            !answer.json()["message"].as_str().unwrap_or("").is_empty(),
            "{name}"
        );
    }
    let answer = client.get("/collect", &[]).await;
    assert_eq!(answer.status, 405);
    assert_eq!(answer.header("allow"), Some("POST, OPTIONS"));
    assert_eq!(collector.count("collect_logs"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_preflight_answers_allowed_origins_only() {
    let collector = Collector::start(with_origins());
    let client = collector.client();
    let allowed = client
        .method(
            "OPTIONS",
            "/collect",
            &[
                ("origin", "https://mygame.example"),
                ("access-control-request-method", "POST"),
            ],
        )
        .await;
    assert_eq!(allowed.status, 204);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://mygame.example")
    );
    assert_eq!(allowed.header("access-control-allow-methods"), Some("POST"));
    let refused = client
        .method("OPTIONS", "/collect", &[("origin", "https://evil.example")])
        .await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.header("access-control-allow-origin"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn measure_accepts_the_measurement_api_form() {
    let collector = Collector::start(Options::default());
    let stamp = (now() - 3600).to_string();
    let body = format!(
        "user_id=player-1&event_name=first_game_open&ip=198.51.100.23&time_stamp={stamp}&platform=PC&storefront=Steam"
    );
    let answer = collector
        .client()
        .post(
            "/measure",
            FORM,
            body,
            &[("authorization", &bearer(MEASURE_KEY))],
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.json(), serde_json::json!({"accepted": 1}));
    let db = collector.open_db();
    let (game, event, time, platform, storefront): (String, String, i64, String, String) = db
        .query_row(
            "SELECT game, event, event_time, platform, storefront FROM measure_logs",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .expect("one event");
    assert_eq!(game, "test-game");
    assert_eq!(event, "first_game_open");
    assert_eq!(time.to_string(), stamp);
    assert_eq!((platform.as_str(), storefront.as_str()), ("pc", "steam"));
}

#[tokio::test(flavor = "multi_thread")]
async fn measure_json_single_and_batch() {
    let collector = Collector::start(Options::default());
    let client = collector.client();
    let auth = bearer(MEASURE_KEY);
    let single = client
        .post(
            "/measure",
            JSON,
            format!(
                r#"{{"user_id": 12345, "event_name": "game_open", "time_stamp": {}}}"#,
                now()
            ),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(single.status, 200, "{:?}", single.body);
    let batch: Vec<serde_json::Value> = (0..100)
        .map(|i| serde_json::json!({"user_id": format!("p{i}"), "event_name": "game_open", "time_stamp": now().to_string()}))
        .collect();
    let answer = client
        .post(
            "/measure",
            JSON,
            serde_json::to_vec(&batch).expect("json"),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.json()["accepted"], 100);
    assert_eq!(collector.count("measure_logs"), 101);

    // The key names the game: the other game's key stores under the other game.
    let other = client
        .post(
            "/measure",
            JSON,
            r#"{"user_id": "p1", "event_name": "level_up"}"#,
            &[("authorization", &bearer(OTHER_MEASURE_KEY))],
        )
        .await;
    assert_eq!(other.status, 200);
    let games: i64 = collector
        .open_db()
        .query_row(
            "SELECT count(*) FROM measure_logs WHERE game = 'other-game'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(games, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_with_one_bad_event_stores_nothing() {
    let collector = Collector::start(Options::default());
    let body = serde_json::json!([
        {"user_id": "p1", "event_name": "game_open"},
        {"user_id": "p2", "event_name": "game_open", "storefront": "stem"},
        {"user_id": "p3", "event_name": "game_open"}
    ]);
    let answer = collector
        .client()
        .post(
            "/measure",
            JSON,
            body.to_string(),
            &[("authorization", &bearer(MEASURE_KEY))],
        )
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.error_code(), "invalid_storefront");
    let message = answer.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains("events[1].storefront"), "{message}");
    assert_eq!(collector.count("measure_logs"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn measure_refusals_name_the_field_and_store_nothing() {
    let collector = Collector::start(Options::default());
    let client = collector.client();
    let auth = bearer(MEASURE_KEY);
    let old = (now() - 31 * 86_400).to_string();
    let future = (now() + 25 * 3600).to_string();
    let too_many: Vec<serde_json::Value> = (0..101)
        .map(|_| serde_json::json!({"user_id": "p", "event_name": "game_open"}))
        .collect();
    let too_many = serde_json::to_string(&too_many).expect("json");
    let huge = format!(
        r#"[{{"user_id": "{}", "event_name": "game_open"}}]"#,
        "x".repeat(70_000)
    );
    let cases: Vec<(Refusal, &str)> = vec![
        measure_refusal(
            "no key",
            FORM,
            "user_id=a&event_name=game_open".into(),
            None,
            401,
            "missing_measure_key",
            "",
        ),
        measure_refusal(
            "wrong key",
            FORM,
            "user_id=a&event_name=game_open".into(),
            Some("Bearer nope"),
            401,
            "invalid_measure_key",
            "",
        ),
        measure_refusal(
            "broken JSON",
            JSON,
            "{".into(),
            Some(&auth),
            400,
            "invalid_json",
            "",
        ),
        measure_refusal(
            "no user",
            FORM,
            "event_name=game_open".into(),
            Some(&auth),
            400,
            "missing_field",
            "user_id",
        ),
        measure_refusal(
            "no event",
            FORM,
            "user_id=a".into(),
            Some(&auth),
            400,
            "missing_field",
            "event_name",
        ),
        measure_refusal(
            "unknown event",
            FORM,
            "user_id=a&event_name=level_up".into(),
            Some(&auth),
            400,
            "unknown_event",
            "event_name",
        ),
        measure_refusal(
            "unknown storefront",
            FORM,
            "user_id=a&event_name=game_open&storefront=stem".into(),
            Some(&auth),
            400,
            "invalid_storefront",
            "storefront",
        ),
        measure_refusal(
            "unknown platform",
            FORM,
            "user_id=a&event_name=game_open&platform=amiga".into(),
            Some(&auth),
            400,
            "invalid_platform",
            "platform",
        ),
        measure_refusal(
            "bad ip",
            FORM,
            "user_id=a&event_name=game_open&ip=999.1.1.1".into(),
            Some(&auth),
            400,
            "invalid_ip",
            "ip",
        ),
        measure_refusal(
            "too old",
            FORM,
            format!("user_id=a&event_name=game_open&time_stamp={old}"),
            Some(&auth),
            400,
            "time_stamp_out_of_window",
            "time_stamp",
        ),
        measure_refusal(
            "in the future",
            FORM,
            format!("user_id=a&event_name=game_open&time_stamp={future}"),
            Some(&auth),
            400,
            "time_stamp_out_of_window",
            "time_stamp",
        ),
        measure_refusal(
            "not a time",
            FORM,
            "user_id=a&event_name=game_open&time_stamp=yesterday".into(),
            Some(&auth),
            400,
            "invalid_time_stamp",
            "time_stamp",
        ),
        measure_refusal(
            "unknown field",
            FORM,
            "user_id=a&event_name=game_open&email=x".into(),
            Some(&auth),
            400,
            "unknown_field",
            "email",
        ),
        measure_refusal(
            "too many events",
            JSON,
            too_many,
            Some(&auth),
            400,
            "batch_too_large",
            "100",
        ),
        measure_refusal(
            "empty batch",
            JSON,
            "[]".into(),
            Some(&auth),
            400,
            "empty_batch",
            "",
        ),
        measure_refusal(
            "too big",
            JSON,
            huge,
            Some(&auth),
            413,
            "payload_too_large",
            "",
        ),
    ];
    for (
        Refusal {
            name,
            content_type,
            body,
            headers,
            status,
            code,
        },
        mention,
    ) in cases
    {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let answer = client.post("/measure", content_type, body, &headers).await;
        assert_eq!(answer.status, status, "{name}: {:?}", answer.body);
        assert_eq!(answer.error_code(), code, "{name}");
        let message = answer.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(message.contains(mention), "{name}: {message}");
        if status == 401 {
            assert_eq!(answer.header("www-authenticate"), Some("Bearer"), "{name}");
        }
    }
    let wrong_type = client
        .post(
            "/measure",
            "text/plain",
            "user_id=a",
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(wrong_type.status, 415);
    assert_eq!(client.get("/measure", &[]).await.status, 405);
    assert_eq!(collector.count("measure_logs"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_and_unknown_paths() {
    let collector = Collector::start(Options::default());
    let client = collector.client();
    let health = client.get("/healthz", &[]).await;
    assert_eq!(health.status, 200);
    assert_eq!(&health.body[..], b"ok\n");
    let missing = client.get("/admin", &[]).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.error_code(), "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_on_loopback_behind_a_trusted_proxy() {
    let collector = Collector::start(Options {
        tls: false,
        server_extra: r#"trusted_proxies = ["127.0.0.1/32"]"#.into(),
        ..Options::default()
    });
    let client = collector.client();
    // The same forwarded client, twice; then a different one.
    for forwarded in ["203.0.113.5", "203.0.113.5", "203.0.113.6"] {
        let answer = client
            .post(
                "/collect",
                JSON,
                r#"{"url": "https://a.example/"}"#,
                &[("x-forwarded-for", &format!("1.1.1.1, {forwarded}"))],
            )
            .await;
        assert_eq!(answer.status, 204);
    }
    let distinct: i64 = collector
        .open_db()
        .query_row(
            "SELECT count(DISTINCT ip_hash) FROM collect_logs",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(
        distinct, 2,
        "pseudonyms follow the forwarded client, not the proxy"
    );
}

/// `http://` typed at the TLS port: a short plain-text 400 that says to use https://, as
/// nginx's 497 does, instead of an empty reply; nothing is stored, and TLS still works after.
#[tokio::test(flavor = "multi_thread")]
async fn plain_http_on_the_tls_port_is_told_to_use_https() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let collector = Collector::start(Options::default());
    for request in [
        "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_string(),
        format!(
            "POST /collect HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: 30\r\n\r\n{}",
            r#"{"url": "https://a.example/"}"#
        ),
    ] {
        let mut tcp = tokio::net::TcpStream::connect(collector.addr)
            .await
            .expect("connect");
        tcp.write_all(request.as_bytes()).await.expect("write");
        let mut answer = String::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tcp.read_to_string(&mut answer),
        )
        .await
        .expect("an answer within 10 s")
        .expect("read");
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
        assert!(head.contains("Content-Type: text/plain"), "{head}");
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{answer}"
        );
        assert!(body.contains("use https://"), "{body}");
    }
    let answer = collector.client().get("/healthz", &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(collector.count("collect_logs"), 0);
}
