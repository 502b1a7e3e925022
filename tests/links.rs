//! `GET /tracks.js` and `GET /r/{link}` through the real binary over TLS: the script's caching
//! and encoding, a link's visit and redirect, and the requests that try to steer a redirect.

mod common;

use std::io::Read;

use common::{Collector, IPHONE_UA, Options};

const SCRIPT: &str = include_str!("../src/http/tracks.js");
const GOOGLEBOT_UA: &str =
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

/// Where `launch` sends a visitor who brought no UTM parameters of their own.
const LAUNCH_DEFAULT: &str = "https://store.example/app/480/?l=english&utm_source=newsletter&utm_medium=email&utm_campaign=launch";

fn with_links() -> Options {
    Options {
        extra: r#"
[[links]]
name = "launch"
game = "test-game"
destination = "https://store.example/app/480/?l=english"
utm = { source = "Newsletter", medium = "email", campaign = "launch" }

[[links]]
name = "poisoned"
destination = "https://poison.example/"

[[links]]
name = "plain"
destination = "https://store.example/plain"
forward_utm = false
"#
        .into(),
        ..Options::default()
    }
}

fn gunzip(bytes: &[u8]) -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .expect("a gzip body");
    text
}

// -- /tracks.js ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn the_script_is_served_gzipped_cacheable_and_small() {
    let collector = Collector::start(Options::default());
    let client = collector.client();

    let gzipped = client
        .get("/tracks.js", &[("accept-encoding", "gzip, deflate, br")])
        .await;
    assert_eq!(gzipped.status, 200);
    assert_eq!(
        gzipped.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(gzipped.header("content-encoding"), Some("gzip"));
    assert_eq!(gzipped.header("vary"), Some("Accept-Encoding"));
    assert_eq!(
        gzipped.header("cache-control"),
        Some("public, max-age=3600")
    );
    assert!(gzipped.header("set-cookie").is_none());
    assert!(
        gzipped.body.len() < 1024,
        "tracks.js is {} bytes gzipped; the budget is under 1 KiB",
        gzipped.body.len()
    );
    assert_eq!(gunzip(&gzipped.body), SCRIPT);
    let gzip_tag = gzipped.header("etag").expect("an ETag").to_string();
    assert!(gzip_tag.starts_with('"'), "a strong ETag: {gzip_tag}");

    let plain = client.get("/tracks.js", &[]).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.body, SCRIPT.as_bytes());
    let plain_tag = plain.header("etag").expect("an ETag").to_string();
    assert_ne!(plain_tag, gzip_tag, "each encoding has its own strong ETag");

    let refused = client
        .get("/tracks.js", &[("accept-encoding", "gzip;q=0, identity")])
        .await;
    assert_eq!(refused.header("content-encoding"), None);
    assert_eq!(refused.body, SCRIPT.as_bytes());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_script_revalidates_with_its_etag() {
    let collector = Collector::start(Options::default());
    let client = collector.h2_client();
    let first = client
        .get("/tracks.js", &[("accept-encoding", "gzip")])
        .await;
    let tag = first.header("etag").expect("an ETag").to_string();

    for (accept, if_none_match) in [
        ("gzip", tag.clone()),
        ("gzip", format!("\"other\", W/{tag}")),
        ("identity", tag.clone()),
    ] {
        let again = client
            .get(
                "/tracks.js",
                &[
                    ("accept-encoding", accept),
                    ("if-none-match", &if_none_match),
                ],
            )
            .await;
        assert_eq!(again.status, 304, "If-None-Match: {if_none_match}");
        assert!(again.body.is_empty());
        assert!(again.header("etag").is_some());
        assert_eq!(again.header("cache-control"), Some("public, max-age=3600"));
    }

    let changed = client
        .get("/tracks.js", &[("if-none-match", "\"an-older-script\"")])
        .await;
    assert_eq!(changed.status, 200);
    assert_eq!(changed.body, SCRIPT.as_bytes());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_script_answers_head_and_refuses_other_methods() {
    let collector = Collector::start(Options::default());
    let client = collector.client();
    let head = client
        .method("HEAD", "/tracks.js", &[("accept-encoding", "gzip")])
        .await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let get = client
        .get("/tracks.js", &[("accept-encoding", "gzip")])
        .await;
    assert_eq!(
        head.header("content-length"),
        Some(get.body.len().to_string().as_str())
    );
    assert_eq!(head.header("etag"), get.header("etag"));

    let post = client.post("/tracks.js", "text/plain", "x", &[]).await;
    assert_eq!(post.status, 405);
    assert_eq!(post.error_code(), "method_not_allowed");
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
}

// -- /r/{link} -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_link_records_the_visit_then_redirects_with_the_utms() {
    let collector = Collector::start(with_links());
    let answer = collector
        .client()
        .get(
            "/r/launch?utm_source=%20Twitter&utm_content=Banner&gclid=CLICK&email=a%40b.example",
            &[
                ("user-agent", IPHONE_UA),
                ("referer", "https://t.co/abc?x=1"),
            ],
        )
        .await;
    assert_eq!(answer.status, 302);
    assert_eq!(
        answer.header("location"),
        Some(
            "https://store.example/app/480/?l=english&utm_source=twitter&utm_medium=email&utm_campaign=launch&utm_content=banner"
        )
    );
    assert_eq!(answer.header("cache-control"), Some("no-store"));

    // The 302 came after the commit: the row is there without waiting.
    let db = collector.open_db();
    let row: Vec<Option<String>> = db
        .query_row(
            "SELECT link, game, page_host, page_path, utm_source, utm_medium, utm_campaign, \
             utm_content, utm_term, referrer_host, device, CAST(consent AS TEXT), click_ids \
             FROM collect_logs",
            [],
            |row| (0..13).map(|i| row.get(i)).collect(),
        )
        .expect("one visit");
    let expected = [
        Some("launch"),
        Some("test-game"),
        Some("store.example"),
        Some("/r/launch"),
        Some("twitter"),
        Some("email"),
        Some("launch"),
        Some("banner"),
        None,
        Some("t.co"),
        Some("smartphone"),
        Some("0"),
        None,
    ];
    assert_eq!(
        row,
        expected.map(|v| v.map(str::to_string)).to_vec(),
        "link, game, page, UTMs, referrer host, device, consent, click ids"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_link_without_forwarding_keeps_its_destination_exact() {
    let collector = Collector::start(with_links());
    let answer = collector
        .client()
        .get("/r/plain?utm_source=forum", &[("user-agent", IPHONE_UA)])
        .await;
    assert_eq!(answer.status, 302);
    assert_eq!(
        answer.header("location"),
        Some("https://store.example/plain")
    );
    let (source, game): (Option<String>, Option<String>) = collector
        .open_db()
        .query_row("SELECT utm_source, game FROM collect_logs", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("one visit");
    assert_eq!(source.as_deref(), Some("forum"), "recorded, not forwarded");
    assert_eq!(game, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn crawlers_and_head_requests_are_redirected_but_not_recorded() {
    let collector = Collector::start(with_links());
    let client = collector.client();
    let crawler = client
        .get("/r/launch", &[("user-agent", GOOGLEBOT_UA)])
        .await;
    assert_eq!(crawler.status, 302);
    assert_eq!(crawler.header("location"), Some(LAUNCH_DEFAULT));
    let head = client
        .method("HEAD", "/r/launch", &[("user-agent", IPHONE_UA)])
        .await;
    assert_eq!(head.status, 302);
    assert_eq!(head.header("location"), Some(LAUNCH_DEFAULT));
    assert_eq!(collector.count("collect_logs"), 0);
}

/// A click whose visit cannot be stored still reaches the destination, and the log says so.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_write_still_redirects() {
    let collector = Collector::start(with_links());
    // A trigger stands in for a write that fails (a full disk, a broken page).
    let key = std::fs::read_to_string(&collector.key_file).expect("key file");
    rusqlite::Connection::open(&collector.db_path)
        .expect("open")
        .execute_batch(&format!(
            "PRAGMA key = \"x'{}'\";
             CREATE TRIGGER poison BEFORE INSERT ON collect_logs
             WHEN NEW.page_host = 'poison.example' BEGIN SELECT RAISE(ABORT, 'poisoned'); END;",
            key.trim()
        ))
        .expect("trigger");
    let answer = collector
        .client()
        .get("/r/poisoned", &[("user-agent", IPHONE_UA)])
        .await;
    assert_eq!(answer.status, 302);
    assert_eq!(answer.header("location"), Some("https://poison.example/"));
    assert_eq!(collector.count("collect_logs"), 0);
    // The log reaches the test through a pipe and a reader thread, a moment after the answer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !collector
        .logs()
        .contains("a link visit was not stored; redirected anyway")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no log line about the lost visit:\n{}",
            collector.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_links_and_other_methods_are_refused() {
    let collector = Collector::start(with_links());
    let client = collector.client();
    for path in ["/r/nope", "/r/", "/r", "/r/Launch"] {
        let answer = client.get(path, &[("user-agent", IPHONE_UA)]).await;
        assert_eq!(answer.status, 404, "{path}");
        assert!(answer.header("location").is_none(), "{path}");
        let code = answer.error_code();
        assert!(
            code == "unknown_link" || code == "not_found",
            "{path}: {code}"
        );
    }
    let post = client.post("/r/launch", "text/plain", "x", &[]).await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_eq!(collector.count("collect_logs"), 0);
}

/// Every request that tries to point the redirect elsewhere answers 404 or a 302 to the
/// configured destination (with at most the UTM values changed, as query values).
#[tokio::test(flavor = "multi_thread")]
async fn no_request_can_steer_a_link_elsewhere() {
    let collector = Collector::start(with_links());
    let client = collector.client();
    let targets = [
        "/r/%2F%2Fevil.example",
        "/r/%2f%2fevil.example/",
        "/r//evil.example",
        "/r///evil.example",
        "//evil.example/r/launch",
        "/r/launch//evil.example",
        "/r/launch/evil.example",
        "/r/launch/https://evil.example",
        "/r/launch%2F%2Fevil.example",
        "/r/launch%2F..%2F..%2Fevil.example",
        "/r/../r/launch",
        "/r/%5Cevil.example",
        "/r/%5C%5Cevil.example",
        "/r/\\evil.example",
        "/r/\\\\evil.example",
        "/r/launch\\evil.example",
        "/r/launch@evil.example",
        "/r/https:evil.example",
        "/r/launch%00",
        "/r/launch%0d%0aLocation:%20https://evil.example",
        "/r/launch?url=https://evil.example",
        "/r/launch?url=%2F%2Fevil.example",
        "/r/launch?destination=https://evil.example",
        "/r/launch?redirect=//evil.example",
        "/r/launch?redirect_uri=https%3A%2F%2Fevil.example&next=/evil&to=evil.example",
        "/r/launch?@evil.example",
        "/r/launch?utm_source=//evil.example",
        "/r/launch?utm_source=x%0d%0aLocation:%20https://evil.example",
        "/r/launch?utm_source=%23@evil.example",
        "https://evil.example/r/launch",
    ];
    for target in targets {
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: evil.example\r\nUser-Agent: {IPHONE_UA}\r\n\
             X-Forwarded-Host: evil.example\r\nConnection: close\r\n\r\n"
        );
        let answer = client.raw(request.as_bytes()).await;
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("{target}: no status line in {answer:?}"));
        let locations: Vec<&str> = answer
            .split("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("location").then(|| value.trim())
            })
            .collect();
        match status {
            404 => assert!(locations.is_empty(), "{target}: {answer}"),
            302 => {
                assert_eq!(locations.len(), 1, "{target}: {answer}");
                let location = url::Url::parse(locations[0]).expect("an absolute Location");
                assert_eq!(location.scheme(), "https", "{target}");
                assert_eq!(location.host_str(), Some("store.example"), "{target}");
                assert_eq!(location.path(), "/app/480/", "{target}");
                assert_eq!(location.fragment(), None, "{target}");
                if !target.contains("utm_") {
                    assert_eq!(locations[0], LAUNCH_DEFAULT, "{target}");
                }
                let pairs: Vec<(String, String)> = location.query_pairs().into_owned().collect();
                for (key, _) in &pairs {
                    assert!(
                        key == "l" || key.starts_with("utm_"),
                        "{target}: {key} was forwarded"
                    );
                }
            }
            other => panic!("{target}: answered {other}: {answer}"),
        }
    }
}
