//! Property tests of every body parser, in process (no sockets): the collect script's JSON (sent
//! as `application/json` or `text/plain`, one parser), `/measure` as a form, as JSON and as a
//! batch, the server-side visit, and a redirect link's path and query. On 10,000 generated
//! inputs each, none panics, every refusal is a 4xx-kind `IngestError` with a code and a
//! message that names the field at fault in a client author's words (never a Rust type or
//! serde's), and what is accepted holds no control character.

mod common;

use std::net::IpAddr;

use common::world::{DAY, HOUR, NOV_1, World};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::BoxedStrategy;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::Value;
use tracks_collector::testkit::LinkConfig;
use tracks_collector::testkit::{
    Campaign, CollectOutcome, CollectRequest, ErrorKind, IngestError, MeasureBody, MeasureRequest,
    NewVisit, ServerVisitRequest, destination, find_link, is_control, link_utm,
};

const CASES: u32 = 10_000;
const NOW: i64 = NOV_1 + 12 * HOUR;
/// The measure key of the zero-config game.
const KEY: &str = "key-demo";

/// Runs `test` on `CASES` inputs from `strategy`; panics with the smallest failing input.
fn check<S: Strategy>(strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    // No regression files: CI's clone is thrown away, and a failure prints its input.
    let config = Config {
        failure_persistence: None,
        ..Config::with_cases(CASES)
    };
    if let Err(err) = TestRunner::new(config).run(&strategy, test) {
        panic!("{err}");
    }
}

/// Runs `test` with a world that has a salt (so that ingest can pseudonymise), then closes
/// its store.
fn with_world(test: impl FnOnce(&World)) {
    let world = World::new(|_| {});
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(world.rotate(NOW - DAY));
    test(&world);
    world.store.close();
}

/// A refusal as `http` answers it: 400 or 401, a stable code, a sentence.
fn refused_well(err: &IngestError) -> Result<(), TestCaseError> {
    prop_assert!(
        matches!(err.kind, ErrorKind::BadInput | ErrorKind::Unauthorized),
        "not a 4xx: {err:?}"
    );
    let code = err.code.as_str();
    prop_assert!(!err.message.trim().is_empty(), "message: {err:?}");
    // What the client sent is echoed in `backticks` or "quotes"; the collector's own words
    // around it never name a Rust type, a serde enum or a module path.
    let own_words = outside_quotes(&err.message);
    for rust in [
        "enum",
        "variant",
        "struct",
        "invalid type:",
        "::",
        "serde",
        "Option<",
    ] {
        prop_assert!(!own_words.contains(rust), "{rust:?} in {err:?}");
    }
    // A fault of one field names it.
    let names_a_field = matches!(
        code,
        "missing_field" | "unknown_field" | "duplicate_field" | "unknown_game" | "unknown_event"
    ) || (code.starts_with("invalid_")
        && !matches!(
            code,
            "invalid_json" | "invalid_encoding" | "invalid_measure_key"
        ));
    prop_assert!(
        !names_a_field || err.message.contains('`'),
        "no field named: {err:?}"
    );
    clean(&err.message)
}

/// `message` without the parts between backticks or double quotes.
fn outside_quotes(message: &str) -> String {
    let mut quote: Option<char> = None;
    message
        .chars()
        .filter(|c| match quote {
            Some(open) if *c == open => {
                quote = None;
                false
            }
            Some(_) => false,
            None if *c == '`' || *c == '"' => {
                quote = Some(*c);
                false
            }
            None => true,
        })
        .collect()
}

fn clean(text: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        !text.chars().any(is_control),
        "a control character in {text:?}"
    );
    Ok(())
}

fn clean_campaign(campaign: &Campaign) -> Result<(), TestCaseError> {
    for value in campaign.values().into_iter().flatten() {
        clean(value)?;
    }
    Ok(())
}

fn clean_visit(visit: &NewVisit) -> Result<(), TestCaseError> {
    clean_campaign(&visit.campaign)?;
    clean(&visit.device.browser)?;
    if let Some(click_ids) = &visit.click_ids {
        // Stored as JSON text: the values inside, decoded, hold none either.
        let map: serde_json::Map<String, Value> =
            serde_json::from_str(click_ids).map_err(|err| TestCaseError::fail(err.to_string()))?;
        for value in map.values() {
            clean(value.as_str().unwrap_or_default())?;
        }
    }
    Ok(())
}

/// A visit's outcome (`None`: a crawler's, not stored), checked.
fn visited(outcome: Result<Option<NewVisit>, IngestError>) -> Result<(), TestCaseError> {
    match outcome {
        Ok(Some(visit)) => clean_visit(&visit),
        Ok(None) => Ok(()),
        Err(err) => refused_well(&err),
    }
}

/// Pieces of the text a hostile client sends: controls (C0, DEL, C1, bidirectional), what
/// JSON, forms and URLs treat specially, non-ASCII, a value longer than any limit, and words.
/// A text is a few pieces and one arbitrary character: choosing pieces is far cheaper than
/// generating character by character, which counts at 10,000 cases in a debug build.
const PIECES: &[&str] = &[
    "",
    "a",
    "player-1",
    " Twitter ",
    "\0",
    "\u{7}",
    "\t",
    "\n",
    "\r\n",
    "\u{b}",
    "\u{1b}[31m",
    "\u{1b}]0;x\u{7}",
    "\u{7f}",
    "\u{85}",
    "\u{9b}",
    "\u{202e}",
    "\u{2066}",
    "\u{200f}",
    "\u{61c}",
    "\u{fffd}",
    "\u{feff}",
    "\"",
    "\\",
    "\\u0000",
    "%",
    "%00",
    "%FF",
    "&",
    "=",
    "+",
    "#",
    "?",
    "/",
    "é",
    "🎮",
    "\u{10ffff}",
    LONG,
];

/// Longer than a UTM value may be (200 characters).
const LONG: &str = concat!(
    "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz",
    "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz",
    "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz",
);

fn hostile_text() -> impl Strategy<Value = String> {
    let piece = || select(PIECES);
    (
        piece(),
        proptest::option::of(any::<char>()),
        piece(),
        piece(),
    )
        .prop_map(|(first, odd, second, third)| {
            let mut text = String::from(first);
            text.extend(odd);
            text.push_str(second);
            text.push_str(third);
            text
        })
}

/// Pieces of what a form or a query carries: literal, percent-encoded (sequences that are not
/// UTF-8 too), `+`, stray `%`, separators.
const ENCODED: &[&str] = &[
    "",
    "abc",
    "+",
    "%",
    "%4",
    "%zz",
    "=",
    "&",
    "%C3",
    "%C3%A9",
    "%E2%80%AE",
    "%00",
    "%0A",
    "%1B",
    "%7F",
    "%C2%85",
    "%FF",
    "%FE",
    "%2B",
    "%26",
    "%3D",
    "%20",
    "utm_source",
];

fn encoded_component() -> impl Strategy<Value = String> {
    let piece = || select(ENCODED);
    (piece(), proptest::option::of(any::<u8>()), piece(), piece()).prop_map(
        |(first, byte, second, third)| {
            let byte = byte.map(|byte| format!("%{byte:02X}")).unwrap_or_default();
            format!("{first}{byte}{second}{third}")
        },
    )
}

/// `name=value&...` with the endpoint's `names` (or others), repeats allowed.
fn form(names: &'static [&'static str]) -> impl Strategy<Value = String> {
    let name = prop_oneof![4 => select(names).prop_map(str::to_string), 1 => encoded_component()];
    let value = prop_oneof![
        2 => encoded_component(),
        1 => select(vec!["game_open", "pc", "steam", "1793534400", "2026-11-01T12:00:00Z",
                         "198.51.100.4", "player-1"]).prop_map(str::to_string),
    ];
    vec((name, value), 0..5).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("&")
    })
}

/// A page URL: a scheme, a host, a path and a query with UTM parameters and click ids.
fn url() -> impl Strategy<Value = String> {
    let scheme = select(vec!["https", "http", "ftp", "javascript", ""]);
    let host = select(vec![
        "mygame.example",
        "xn--mnchen-3ya.example",
        "[::1]",
        "",
        "a b",
    ]);
    let names: &'static [&'static str] = &[
        "utm_source",
        "UTM_Medium",
        "utm_campaign",
        "utm_content",
        "utm_term",
        "gclid",
        "fbclid",
        "x",
    ];
    (scheme, host, select(ENCODED), form(names), select(ENCODED)).prop_map(
        |(scheme, host, path, query, fragment)| {
            format!("{scheme}://{host}/{path}?{query}#{fragment}")
        },
    )
}

fn json_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => hostile_text().prop_map(Value::from),
        1 => url().prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => (NOW - 40 * DAY..NOW + 600).prop_map(Value::from),
        1 => any::<f64>().prop_map(Value::from),
        1 => any::<bool>().prop_map(Value::from),
        1 => Just(Value::Null),
        1 => select(vec!["game_open", "first_game_open", "pc", "Steam Deck", "itch.io",
                         "198.51.100.4", "2001:db8::1", "view-12345678", "demo-game",
                         "2026-11-01T12:00:00Z", "desktop"]).prop_map(Value::from),
    ]
}

/// Any JSON value: a scalar, or an array or object of scalars.
fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => json_scalar(),
        1 => vec(json_scalar(), 0..3).prop_map(Value::Array),
        1 => vec((hostile_text(), json_scalar()), 0..3)
            .prop_map(|entries| Value::Object(entries.into_iter().collect())),
    ]
}

/// A value that the endpoint's `field` could hold: a plausible one most often (so that most
/// bodies get past the first check and reach the next), else any JSON.
fn field_value(field: &'static str) -> BoxedStrategy<Value> {
    let text = |values: &[&'static str]| select(values.to_vec()).prop_map(Value::from).boxed();
    let plausible = match field {
        "url" | "referrer" => url().prop_map(Value::from).boxed(),
        "consent" => any::<bool>().prop_map(Value::from).boxed(),
        "game" => text(&["demo-game", "other-game", "Demo-Game"]),
        "id" => vec(select(VIEW_ID_CHARS.to_vec()), 4..70)
            .prop_map(|chars| Value::from(chars.into_iter().collect::<String>()))
            .boxed(),
        "user_id" => prop_oneof![
            hostile_text().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
        ]
        .boxed(),
        "event_name" => text(&["game_open", "first_game_open", " game_open ", "page_view"]),
        "ip" => prop_oneof![
            client_ip().prop_map(|ip| Value::from(ip.to_string())),
            text(&["", " ", "198.51.100.4 ", "::ffff:1.2.3.4", "999.1.1.1"]),
        ]
        .boxed(),
        "time_stamp" | "timestamp" => prop_oneof![
            (NOW - 40 * DAY..NOW + 600).prop_map(Value::from),
            (NOW - 40 * DAY..NOW + 600).prop_map(|time| Value::from(time.to_string())),
            (NOW - 40 * DAY..NOW + 600).prop_map(|time| Value::from(time * 1000)),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            text(&[
                "2026-11-01T12:00:00Z",
                "2026-11-01T13:00:00+01:00",
                "2026-11-01",
                "-9223372036854775808"
            ]),
        ]
        .boxed(),
        "platform" => text(&["pc", "Windows", "Steam Deck", "amiga", ""]),
        "storefront" => text(&["steam", "itch.io", "Epic Games Store", "nope"]),
        "device" => text(&["desktop", "mobile", "tv", "toaster", ""]),
        _ => hostile_text().prop_map(Value::from).boxed(),
    };
    prop_oneof![4 => plausible, 1 => json_value().boxed()].boxed()
}

/// What a page view's `id` is made of, and a few characters it must not hold.
const VIEW_ID_CHARS: &[char] = &['a', 'Z', '0', '9', '-', '_', '.', '\u{7}'];

/// A JSON object with the endpoint's `fields` (each there or not, in order), sometimes with
/// more members (unknown keys, or a known one again), written out by hand so that a key may
/// come twice.
fn json_object(fields: &'static [&'static str]) -> impl Strategy<Value = String> {
    let known: Vec<_> = fields
        .iter()
        .map(|field| {
            proptest::option::weighted(0.7, field_value(field))
                .prop_map(move |value| value.map(|value| (field.to_string(), value)))
        })
        .collect();
    let name = prop_oneof![select(fields).prop_map(str::to_string), hostile_text()];
    let extra = prop_oneof![6 => Just(Vec::new()), 1 => vec((name, json_value()), 1..3)];
    (known, extra).prop_map(|(known, extra)| {
        let members: Vec<String> = known
            .into_iter()
            .flatten()
            .chain(extra)
            .map(|(name, value)| format!("{}:{value}", Value::from(name)))
            .collect();
        format!("{{{}}}", members.join(","))
    })
}

/// A body: a JSON object of the endpoint (most often), any bytes, or such an object with a
/// byte changed.
fn json_body(fields: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => json_object(fields).prop_map(String::into_bytes),
        1 => vec(any::<u8>(), 0..200),
        2 => (json_object(fields), any::<prop::sample::Index>(), any::<u8>()).prop_map(
            |(object, at, byte)| {
                let mut bytes = object.into_bytes();
                let at = at.index(bytes.len() + 1);
                bytes.insert(at, byte);
                bytes
            }
        ),
    ]
}

fn client_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
    ]
}

fn bearer() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        8 => Just(Some(KEY.to_string())),
        1 => Just(None),
        1 => hostile_text().prop_map(Some),
    ]
}

const COLLECT_FIELDS: &[&str] = &["url", "referrer", "consent", "game", "id"];
const EVENT_FIELDS: &[&str] = &[
    "user_id",
    "event_name",
    "ip",
    "time_stamp",
    "timestamp",
    "platform",
    "event_id",
    "storefront",
];
const SERVER_VISIT_FIELDS: &[&str] = &[
    "event_name",
    "timestamp",
    "channel",
    "campaign",
    "source",
    "medium",
    "term",
    "content",
    "clientId",
    "sessionId",
    "ip",
    "device",
    "browser",
    "url",
    "referrer",
    "consent",
];

#[test]
fn collect_bodies() {
    let user_agent = prop_oneof![
        Just(None),
        Just(Some(common::world::IPHONE.to_string())),
        Just(Some("Googlebot/2.1".to_string())),
        hostile_text().prop_map(Some),
    ];
    let inputs = (json_body(COLLECT_FIELDS), user_agent, client_ip());
    with_world(|world| {
        check(inputs, |(body, user_agent, client_ip)| {
            let outcome = world.ingest.collect(CollectRequest {
                body: &body,
                user_agent: user_agent.as_deref(),
                client_ip,
                now: NOW,
            });
            visited(outcome.map(|outcome| match outcome {
                CollectOutcome::Visit(visit) => Some(*visit),
                CollectOutcome::Crawler => None,
            }))
        })
    });
}

/// A measure request's outcome, checked.
fn measured(
    world: &World,
    body: MeasureBody<'_>,
    bearer: Option<&str>,
    ip: IpAddr,
) -> Result<(), TestCaseError> {
    let outcome = world.ingest.measure(MeasureRequest {
        body,
        bearer,
        client_ip: ip,
        now: NOW,
    });
    match outcome {
        Ok(measured) => {
            prop_assert!(!measured.events.is_empty());
            Ok(())
        }
        Err(err) => refused_well(&err),
    }
}

#[test]
fn measure_forms() {
    let inputs = (form(EVENT_FIELDS), bearer(), client_ip());
    with_world(|world| {
        check(inputs, |(body, bearer, ip)| {
            let accepted = world
                .ingest
                .measure(MeasureRequest {
                    body: MeasureBody::Form(body.as_bytes()),
                    bearer: bearer.as_deref(),
                    client_ip: ip,
                    now: NOW,
                })
                .is_ok();
            // The generated forms hold no U+FFFD of their own: one in the lenient decoding
            // is a byte sequence that is not UTF-8, which must have been refused.
            let lossy = url::form_urlencoded::parse(body.as_bytes())
                .any(|(name, value)| name.contains('\u{fffd}') || value.contains('\u{fffd}'));
            prop_assert!(!(accepted && lossy), "accepted bytes that are not UTF-8");
            measured(
                world,
                MeasureBody::Form(body.as_bytes()),
                bearer.as_deref(),
                ip,
            )
        })
    });
}

#[test]
fn measure_json_events() {
    let inputs = (json_body(EVENT_FIELDS), bearer(), client_ip());
    with_world(|world| {
        check(inputs, |(body, bearer, ip)| {
            measured(world, MeasureBody::Json(&body), bearer.as_deref(), ip)
        })
    });
}

#[test]
fn measure_json_batches() {
    let valid = r#"{"user_id":"p","event_name":"game_open"}"#;
    // A full batch costs a hundred events' hashing: rarely, enough to cross the limit.
    let batch = prop_oneof![
        60 => vec(json_object(EVENT_FIELDS), 0..4),
        1 => (99usize..=101).prop_map(move |count| vec![valid.to_string(); count]),
    ]
    .prop_map(|events| format!("[{}]", events.join(",")));
    with_world(|world| {
        check((batch, client_ip()), |(body, ip)| {
            measured(world, MeasureBody::Json(body.as_bytes()), Some(KEY), ip)
        })
    });
}

#[test]
fn server_side_visits() {
    let inputs = (json_body(SERVER_VISIT_FIELDS), bearer(), client_ip());
    with_world(|world| {
        check(inputs, |(body, bearer, client_ip)| {
            let outcome = world.ingest.server_visit(ServerVisitRequest {
                body: &body,
                bearer: bearer.as_deref(),
                client_ip,
                now: NOW,
            });
            visited(outcome.map(Some))
        })
    });
}

/// A link's path segment and query: only the exact name finds it, the destination keeps its
/// scheme, host and path, and no UTM value holds a control character.
#[test]
fn redirect_paths_and_queries() {
    let link = LinkConfig {
        name: "steam-launch".into(),
        game: None,
        destination: url::Url::parse("https://store.example/app/480/?l=en").expect("url"),
        utm: Campaign {
            source: Some("newsletter".into()),
            ..Campaign::default()
        },
        forward_utm: true,
    };
    let links = vec![link];
    let segment = prop_oneof![
        Just("steam-launch".to_string()),
        Just("Steam-Launch".to_string()),
        encoded_component(),
        hostile_text(),
    ];
    let names: &'static [&'static str] = &[
        "utm_source",
        "utm_medium",
        "utm_campaign",
        "utm_content",
        "utm_term",
        "UTM_TERM",
        "x",
    ];
    let query = prop_oneof![1 => Just(None), 6 => form(names).prop_map(Some)];
    check((segment, query), |(segment, query)| {
        let found = find_link(&links, &segment);
        prop_assert_eq!(found.is_some(), segment == "steam-launch");
        let link = &links[0];
        let utm = link_utm(&link.utm, query.as_deref());
        clean_campaign(&utm)?;
        let to = destination(link, &utm);
        prop_assert_eq!(to.scheme(), "https");
        prop_assert_eq!(to.host_str(), Some("store.example"));
        prop_assert_eq!(to.path(), "/app/480/");
        prop_assert_eq!(to.fragment(), None);
        Ok(())
    });
}
