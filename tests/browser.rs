//! The collect script and a redirect link in a real headless Chromium: a landing page on a
//! second loopback origin loads `/tracks.js` from the collector over TLS, and what the browser
//! sends is checked in the database.
//!
//! Needs Debian's `chromium` (`scripts/test.sh` installs it); never skipped.

mod common;

#[path = "common/chromium.rs"]
mod chromium;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chromium::{Chromium, Site, WAIT, eventually};
use common::{Collector, Options};
use rcgen::PublicKeyData;

/// What the browser calls itself, so the stored device is known.
const ANDROID_UA: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Mobile Safari/537.36";

/// One browser at a time: the machine has few cores.
static BROWSER: Mutex<()> = Mutex::new(());

/// The landing pages: `/landing...` and `/consented...` load the script from `collector`,
/// `/destination...` is where the link leads (no script, so it adds no visit).
fn route(collector: &str, target: &str) -> chromium::Page {
    let path = target.split('?').next().unwrap_or("/");
    let html = "text/html; charset=utf-8";
    let landing = |extra: &str| {
        format!(
            "<!doctype html><html><head><title>landing</title>\
             <script defer src=\"{collector}/tracks.js\" data-game=\"test-game\"{extra}>\
             </script></head><body><h1>Our game</h1></body></html>"
        )
    };
    if path.starts_with("/landing") {
        (200, html, landing(""))
    } else if path.starts_with("/consented") {
        (200, html, landing(" data-consent=\"true\""))
    } else if path.starts_with("/destination") {
        let page = "<!doctype html><title>store</title><p>arrived</p>";
        (200, html, page.to_string())
    } else {
        (404, "text/plain", "not found".to_string())
    }
}

/// The landing site and the collector that allows its origin and links to its
/// `/destination`. The site starts first (its port goes into the collector's config) and
/// learns the collector's origin once that has started.
fn site_and_collector() -> (Site, Collector) {
    let collector_origin = Arc::new(Mutex::new(String::new()));
    let known = collector_origin.clone();
    let site = Site::start(move |target| {
        let origin = known.lock().map(|o| o.clone()).unwrap_or_default();
        route(&origin, target)
    });
    let collector = collector_for(
        &site.origin(),
        &format!("{}/destination?from=link", site.origin()),
    );
    *collector_origin.lock().expect("origin") =
        format!("https://localhost:{}", collector.addr.port());
    (site, collector)
}

/// The collector, allowing `origin`, with a link to `destination`.
fn collector_for(origin: &str, destination: &str) -> Collector {
    Collector::start(Options {
        server_extra: format!("allowed_origins = [\"{origin}\"]"),
        extra: format!(
            r#"
[[links]]
name = "launch"
game = "test-game"
destination = "{destination}"
utm = {{ source = "newsletter", medium = "email", campaign = "launch" }}
"#
        ),
        ..Options::default()
    })
}

/// The base64 SHA-256 of the collector's certificate key, for Chromium to trust it (and only
/// it) without a system-wide CA.
fn trusted_spki(collector: &Collector) -> Vec<String> {
    let pem = std::fs::read_to_string(collector.dir.path().join("tls/key.pem")).expect("key");
    let key = rcgen::KeyPair::from_pem(&pem).expect("leaf key");
    let digest = ring::digest::digest(&ring::digest::SHA256, &key.subject_public_key_info());
    vec![data_encoding::BASE64.encode(digest.as_ref())]
}

/// Each stored visit, oldest first: (page_path, utm_source, utm_campaign, referrer_host,
/// device, os, browser, consent, game, has a view id).
type Row = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    String,
    String,
    bool,
    Option<String>,
    bool,
);

fn visits(collector: &Collector) -> Vec<Row> {
    let db = collector.open_db();
    let mut stmt = db
        .prepare(
            "SELECT page_path, utm_source, utm_campaign, referrer_host, device, os, browser, \
             consent, game, \
             EXISTS (SELECT 1 FROM page_view_keys p WHERE p.visit_id = collect_logs.id) \
             FROM collect_logs ORDER BY id",
        )
        .expect("select");
    stmt.query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
            r.get(8)?,
            r.get(9)?,
        ))
    })
    .expect("query")
    .collect::<Result<_, _>>()
    .expect("rows")
}

/// How many `/collect` requests the collector has answered with `status` (from its debug log).
fn collect_answers(collector: &Collector, status: u64) -> usize {
    collector
        .logs()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| {
            line["message"] == "answered" && line["route"] == "collect" && line["status"] == status
        })
        .count()
}

#[test]
fn the_script_reports_a_visit_then_consent_then_spa_navigations() {
    let _one = BROWSER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let (site, collector) = site_and_collector();
    let mut browser = Chromium::launch(ANDROID_UA, &trusted_spki(&collector));
    let tab = browser.open_tab();

    // A visitor arrives from a newsletter link on another site.
    let landing = format!(
        "{}/landing?utm_source=Newsletter&utm_campaign=Spring-Sale&email=someone%40example.com#top",
        site.origin()
    );
    browser.navigate(
        &tab,
        &landing,
        Some("http://news.example/issue/12?reader=42"),
    );
    browser.wait_loaded(&tab, &format!("{}/landing", site.origin()));
    eventually("the page view is stored", WAIT, || {
        collector.count("collect_logs") == 1
    });
    let first = visits(&collector).remove(0);
    assert_eq!(first.0, "/landing");
    assert_eq!(first.1.as_deref(), Some("newsletter"));
    assert_eq!(first.2.as_deref(), Some("spring-sale"));
    assert_eq!(first.3.as_deref(), Some("news.example"), "referrer host");
    assert_eq!(
        (first.4.as_str(), first.5.as_str(), first.6.as_str()),
        ("smartphone", "Android", "Chrome"),
        "device from the browser's User-Agent"
    );
    assert!(!first.7, "no consent yet");
    assert_eq!(first.8.as_deref(), Some("test-game"), "data-game");
    assert!(first.9, "the page view carries its random id");
    // No cookie and no storage, on either origin.
    assert_eq!(
        browser.eval(
            &tab,
            "document.cookie + localStorage.length + sessionStorage.length"
        ),
        Ok(serde_json::json!("00"))
    );

    // The consent banner says yes: the same visit's flag flips, no second visit.
    browser
        .eval(&tab, "window.tracks.consent(true)")
        .expect("tracks.consent");
    eventually("consent is recorded on the first visit", WAIT, || {
        visits(&collector).first().is_some_and(|v| v.7)
    });
    assert_eq!(collector.count("collect_logs"), 1, "consent is not a visit");

    // Single-page navigations: replaceState and a fragment change are the same page view;
    // pushState and going back are new ones.
    browser
        .eval(
            &tab,
            "history.replaceState({}, '', '/landing/replaced'); location.hash = 'faq'; \
             history.pushState({}, '', '/landing/step-2')",
        )
        .expect("pushState");
    eventually("the pushState navigation is stored", WAIT, || {
        collector.count("collect_logs") == 2
    });
    browser.eval(&tab, "history.back()").expect("back");
    eventually("the popstate navigation is stored", WAIT, || {
        collector.count("collect_logs") == 3
    });
    // Every /collect answer so far: the page view, the consent update, two navigations.
    eventually("four /collect requests answered", WAIT, || {
        collect_answers(&collector, 204) == 4
    });
    std::thread::sleep(Duration::from_millis(300));
    let rows = visits(&collector);
    let paths: Vec<&str> = rows.iter().map(|row| row.0.as_str()).collect();
    // Going back lands on the entry replaceState rewrote.
    assert_eq!(paths, ["/landing", "/landing/step-2", "/landing/replaced"]);
    assert_eq!(collect_answers(&collector, 204), 4, "no further requests");
    for row in &rows[1..] {
        assert!(row.7, "consent given once holds for later page views");
        assert_eq!(row.3.as_deref(), Some("127.0.0.1"), "the previous page");
        assert_eq!(row.1, None, "the navigated URLs carry no UTMs");
    }

    // data-consent="true" consents from the start.
    browser.navigate(
        &tab,
        &format!("{}/consented?utm_source=ad", site.origin()),
        None,
    );
    eventually("the consented page view is stored", WAIT, || {
        collector.count("collect_logs") == 4
    });
    let last = visits(&collector).pop().expect("a visit");
    assert_eq!(last.0, "/consented");
    assert!(last.7, "data-consent");
}

#[test]
fn a_page_from_an_origin_not_allowed_is_not_recorded() {
    let _one = BROWSER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let (site, collector) = site_and_collector();
    let mut browser = Chromium::launch(ANDROID_UA, &trusted_spki(&collector));
    let tab = browser.open_tab();
    // The same pages under another name: http://localhost:PORT is not the allowed
    // http://127.0.0.1:PORT.
    let elsewhere = format!("http://localhost:{}", site.addr.port());
    browser.navigate(&tab, &format!("{elsewhere}/landing?utm_source=x"), None);
    browser.wait_loaded(&tab, &elsewhere);
    eventually("the collector refuses the report", WAIT, || {
        collect_answers(&collector, 403) >= 1
    });
    assert_eq!(collector.count("collect_logs"), 0);

    // The allowed origin, in the same browser, is recorded.
    browser.navigate(&tab, &format!("{}/landing", site.origin()), None);
    eventually("the allowed page view is stored", WAIT, || {
        collector.count("collect_logs") == 1
    });
}

#[test]
fn a_followed_link_ends_on_its_destination_with_the_utms() {
    let _one = BROWSER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let (site, collector) = site_and_collector();
    let mut browser = Chromium::launch(ANDROID_UA, &trusted_spki(&collector));
    let tab = browser.open_tab();
    let link = format!(
        "https://localhost:{}/r/launch?utm_source=Social&utm_content=Video&url=https://evil.example",
        collector.addr.port()
    );
    browser.navigate(&tab, &link, Some("https://social.example/post/1"));
    let destination = format!("{}/destination", site.origin());
    browser.wait_loaded(&tab, &destination);
    assert_eq!(
        browser.eval(&tab, "location.href"),
        Ok(serde_json::json!(format!(
            "{destination}?from=link&utm_source=social&utm_medium=email&utm_campaign=launch\
             &utm_content=video"
        )))
    );
    assert_eq!(
        browser.eval(&tab, "document.body.textContent"),
        Ok(serde_json::json!("arrived"))
    );

    // The visit was committed before the redirect was answered.
    let (link, source, medium, content, referrer, device, game): (
        String,
        String,
        String,
        String,
        Option<String>,
        String,
        String,
    ) = collector
        .open_db()
        .query_row(
            "SELECT link, utm_source, utm_medium, utm_content, referrer_host, device, game \
             FROM collect_logs",
            [],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            },
        )
        .expect("one link visit");
    assert_eq!(
        (
            link.as_str(),
            source.as_str(),
            medium.as_str(),
            content.as_str()
        ),
        ("launch", "social", "email", "video")
    );
    assert_eq!(referrer.as_deref(), Some("social.example"));
    assert_eq!(device, "smartphone");
    assert_eq!(game, "test-game");
}
