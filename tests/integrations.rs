//! The engine snippets of `docs/integrations/`, as the real binary sees them: for Unity, Unreal
//! and Godot, the exact request the page's snippet sends (method, path, headers, body encoding)
//! is replayed over TLS after a campaign visit from the same address; it must be accepted,
//! attributed to that visit, and counted once when the snippet retries it. Each page is read
//! too, so that the snippet and the replay cannot drift apart.

mod common;

use common::{Collector, MEASURE_KEY, Options};
use http_body_util::Full;
use hyper::body::Bytes;
use serde_json::json;

const WINDOWS_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// One engine's request, as its snippet builds it.
struct Replay {
    /// The page under `docs/integrations/`.
    page: &'static str,
    /// What the page's snippet must say for the replay to be the request it sends.
    snippet_says: &'static [&'static str],
    content_type: &'static str,
    /// Headers the engine adds by itself, besides the content type and the key.
    engine_headers: &'static [(&'static str, &'static str)],
    /// The body for an event that happened at this unix time.
    body: fn(i64) -> String,
    /// What the collector stores for the snippet's `platform`.
    platform: &'static str,
}

fn page(name: &str) -> String {
    let path = format!("{}/docs/integrations/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
}

/// A campaign visit from this machine, then the replayed game open (twice: the snippet's
/// retry after a lost answer), then what was stored.
async fn replay(replay: Replay, campaign: &str) {
    let text = page(replay.page);
    for needle in replay.snippet_says {
        assert!(
            text.contains(needle),
            "{} no longer says {needle:?}: update the replay with the snippet",
            replay.page
        );
    }
    let collector = Collector::start(Options::default());
    let client = collector.client();
    let visit =
        json!({"url": format!("https://mygame.example/?utm_source={campaign}&utm_medium=video")});
    let answer = client
        .post(
            "/collect",
            "application/json",
            visit.to_string(),
            &[("user-agent", WINDOWS_UA)],
        )
        .await;
    assert_eq!(answer.status, 204, "{:?}", answer.body);
    // The game is opened after the visit: the time the snippet stamps on the event.
    let body = (replay.body)(tracks_collector::unix_now());

    for attempt in ["first", "retry"] {
        let mut request = hyper::Request::post("/measure")
            .header("host", "localhost")
            .header("content-type", replay.content_type)
            .header("authorization", format!("Bearer {MEASURE_KEY}"));
        for (name, value) in replay.engine_headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.clone())))
            .expect("request");
        let answer = client.send(request).await;
        assert_eq!(
            (answer.status, answer.json()),
            (200, json!({"accepted": 1})),
            "{} ({attempt}): {}",
            replay.page,
            String::from_utf8_lossy(&answer.body)
        );
    }

    let stored: Vec<(String, Option<String>, String, String, bool)> = collector
        .open_db()
        .prepare(
            "SELECT event, source, platform, storefront, visit_id IS NOT NULL FROM measure_logs",
        )
        .expect("query")
        .query_map([], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        })
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(
        stored,
        vec![(
            "first_game_open".to_string(),
            Some(campaign.to_string()),
            replay.platform.to_string(),
            "steam".to_string(),
            true
        )],
        "{}: one event, attributed to the visit",
        replay.page
    );
}

/// A SHA-256 in hex, as the snippets make `user_id`.
const HASHED_USER: &str = "3f0c6b9a1d2e4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2be1";

#[tokio::test(flavor = "multi_thread")]
async fn the_unity_snippet_is_accepted_and_attributed() {
    // WWWForm: the fields in the order added, URL-encoded; UnityWebRequest adds its agent.
    let body = |opened: i64| {
        format!(
            "user_id={HASHED_USER}&event_name=first_game_open\
             &event_id=9b2f6a0e-4c1d-4f7e-8a55-0c3e2b1d7f10&time_stamp={opened}\
             &platform=WindowsPlayer&storefront=steam"
        )
    };
    replay(
        Replay {
            page: "unity.md",
            snippet_says: &[
                "UnityWebRequest.Post(MeasureUrl, form)",
                "\"https://collect.example.com/measure\"",
                "request.SetRequestHeader(\"Authorization\", \"Bearer \" + MeasureKey)",
                "form.AddField(\"user_id\", UserId())",
                "form.AddField(\"event_name\", next.event_name)",
                "form.AddField(\"event_id\", next.event_id)",
                "form.AddField(\"time_stamp\", next.time_stamp.ToString())",
                "form.AddField(\"platform\", Application.platform.ToString())",
                "form.AddField(\"storefront\", \"steam\")",
                "Guid.NewGuid().ToString()",
                "ToUnixTimeSeconds()",
            ],
            content_type: "application/x-www-form-urlencoded",
            engine_headers: &[
                (
                    "user-agent",
                    "UnityPlayer/2022.3.20f1 (UnityWebRequest/1.0, libcurl/8.5.0-DEV)",
                ),
                ("x-unity-version", "2022.3.20f1"),
                ("accept", "*/*"),
                ("accept-encoding", "deflate, gzip"),
            ],
            body,
            platform: "pc",
        },
        "unity-trailer",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_unreal_snippet_is_accepted_and_attributed() {
    // FJsonSerializer with the condensed policy, the fields in the order set; the time from
    // FDateTime::ToIso8601, with milliseconds.
    let body = |opened: i64| {
        let opened = chrono::DateTime::from_timestamp(opened, 0)
            .map(|time| time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            .unwrap_or_default();
        format!(
            "{{\"user_id\":\"{HASHED_USER}\",\"event_name\":\"first_game_open\",\
             \"event_id\":\"0f8e2c55-2b7a-4c2e-9d61-3a1b7e5c4d20\",\"timestamp\":\"{opened}\",\
             \"platform\":\"Windows\",\"storefront\":\"steam\"}}"
        )
    };
    replay(
        Replay {
            page: "unreal.md",
            snippet_says: &[
                "Request->SetVerb(TEXT(\"POST\"))",
                "TEXT(\"https://collect.example.com/measure\")",
                "Request->SetHeader(TEXT(\"Content-Type\"), TEXT(\"application/json\"))",
                "Request->SetHeader(TEXT(\"Authorization\"), FString(TEXT(\"Bearer \")) + MeasureKey)",
                "TCondensedJsonPrintPolicy",
                "Body->SetStringField(TEXT(\"user_id\"), UserId())",
                "Body->SetStringField(TEXT(\"event_name\")",
                "Body->SetStringField(TEXT(\"event_id\")",
                "Body->SetStringField(TEXT(\"timestamp\")",
                "Body->SetStringField(TEXT(\"platform\"), UGameplayStatics::GetPlatformName())",
                "Body->SetStringField(TEXT(\"storefront\"), TEXT(\"steam\"))",
                "FDateTime::UtcNow().ToIso8601()",
                "EGuidFormats::DigitsWithHyphensLower",
            ],
            content_type: "application/json",
            engine_headers: &[
                (
                    "user-agent",
                    "MyGame/++UE5+Release-5.4-CL-0 Windows/10.0.22631.1.256.64bit",
                ),
                ("accept", "*/*"),
                ("accept-encoding", "deflate, gzip"),
            ],
            body,
            platform: "pc",
        },
        "unreal-showcase",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_godot_snippet_is_accepted_and_attributed() {
    // JSON.stringify sorts the keys and writes no spaces; the time is an integer.
    let body = |opened: i64| {
        format!(
            "{{\"event_id\":\"6c1f0e9a2b7d4e5f8a9b0c1d2e3f4a5b\",\"event_name\":\"first_game_open\",\
             \"platform\":\"pc\",\"storefront\":\"steam\",\"time_stamp\":{opened},\
             \"user_id\":\"{HASHED_USER}\"}}"
        )
    };
    replay(
        Replay {
            page: "godot.md",
            snippet_says: &[
                "_http.request(MEASURE_URL, headers, HTTPClient.METHOD_POST, body)",
                "\"https://collect.example.com/measure\"",
                "\"Content-Type: application/json\"",
                "\"Authorization: Bearer \" + MEASURE_KEY",
                "JSON.stringify({",
                "\"user_id\": _user_id(),",
                "\"event_name\": pending[\"event_name\"],",
                "\"event_id\": pending[\"event_id\"],",
                "\"time_stamp\": int(pending[\"time_stamp\"]),",
                "\"platform\": _platform(),",
                "\"storefront\": \"steam\",",
                "generate_random_bytes(16).hex_encode()",
            ],
            content_type: "application/json",
            engine_headers: &[
                ("user-agent", "GodotEngine/4.3.stable.official (Windows)"),
                ("accept", "*/*"),
            ],
            body,
            platform: "pc",
        },
        "godot-jam",
    )
    .await;
}
