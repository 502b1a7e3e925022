//! Attribution stories, in process with time as a parameter: days with salt rotations and
//! restarts between them, the lookback boundary, first vs last touch, consent gating, IPv6
//! prefixes, two games, suppression and `(direct)`. Every expected row is worked out by hand.

mod common;

use common::world::{DAY, HOUR, IPHONE, NOV_1, WINDOWS, World, event, page};
use serde_json::json;
use tracks_collector::testkit::AttributionModel;
use tracks_collector::testkit::Query;

/// A UTC day, for the store's rebuild.
fn day(text: &str) -> chrono::NaiveDate {
    tracks_collector::testkit::parse_day(text).expect("a day")
}

const A: &str = "203.0.113.10";
const B: &str = "203.0.113.20";
const C: &str = "203.0.113.30";

#[tokio::test(flavor = "multi_thread")]
async fn three_days_with_rotations_and_restarts() {
    let mut world = World::new(|_| {});
    assert!(world.rotate(NOV_1).await);

    // Nov 1: A comes twice from the Twitter launch campaign on a phone, B once from the
    // newsletter on a PC (with a referrer).
    let twitter = "utm_source=Twitter&utm_medium=social&utm_campaign=launch";
    world
        .visit(A, page(twitter), IPHONE, NOV_1 + 10 * HOUR)
        .await;
    world
        .visit(A, page(twitter), IPHONE, NOV_1 + 11 * HOUR)
        .await;
    let mut newsletter = page("utm_source=newsletter&utm_medium=email");
    newsletter["referrer"] = json!("https://mail.example/inbox");
    world.visit(B, newsletter, WINDOWS, NOV_1 + 12 * HOUR).await;

    // Nov 2: a new salt, a restart, then A's player opens the game for the first time.
    assert!(world.rotate(NOV_1 + DAY).await);
    world.restart();
    world
        .open(
            "key-demo",
            event(
                "alice",
                "first_game_open",
                json!({"platform": "pc", "storefront": "steam"}),
            ),
            A,
            NOV_1 + DAY + 12 * HOUR,
        )
        .await;

    // Nov 3: another salt and restart; B's and a stranger's first opens, Alice again (a return
    // on day +1 from her first open).
    assert!(world.rotate(NOV_1 + 2 * DAY).await);
    world.restart();
    let nov_3 = NOV_1 + 2 * DAY + 9 * HOUR;
    world
        .open(
            "key-demo",
            event("bob", "first_game_open", json!({"storefront": "epic"})),
            B,
            nov_3,
        )
        .await;
    world
        .open(
            "key-demo",
            event("carol", "first_game_open", json!({})),
            C,
            nov_3,
        )
        .await;
    world
        .open(
            "key-demo",
            event(
                "alice",
                "game_open",
                json!({"platform": "pc", "storefront": "steam"}),
            ),
            A,
            nov_3,
        )
        .await;
    assert_eq!(world.salts.read().expect("ring").live().len(), 3);

    let now = NOV_1 + 3 * DAY;
    let document = world.document("2026-11-01", "2026-11-03", None, now);
    let value = serde_json::to_value(&document).expect("json");
    assert_eq!(value["collector_id"], "local");
    assert_eq!(value["generated_at"], "2026-11-04T00:00:00Z");
    assert_eq!(
        value["attribution"],
        json!({"model": "last_touch", "lookback_days": 14})
    );
    assert_eq!(
        value["traffic"],
        json!([
            {"day": "2026-11-01", "game": null, "source": "newsletter", "medium": "email",
             "campaign": null, "content": null, "term": null, "channel": null, "country": null, "referrer_host": "mail.example",
             "device": "pc", "visits": 1, "visitors": 1, "consented_visits": 0},
            {"day": "2026-11-01", "game": null, "source": "twitter", "medium": "social",
             "campaign": "launch", "content": null, "term": null, "channel": null, "country": null, "referrer_host": null,
             "device": "smartphone", "visits": 2, "visitors": 1, "consented_visits": 0}
        ])
    );
    assert_eq!(
        value["conversions"],
        json!([
            {"day": "2026-11-02", "game": "demo-game", "source": "twitter", "medium": "social",
             "campaign": "launch", "content": null, "term": null, "channel": null, "country": null, "platform": "pc",
             "storefront": "steam", "event": "first_game_open", "events": 1, "users": 1,
             "returned_d1": 1, "returned_d7": 1},
            {"day": "2026-11-03", "game": "demo-game", "source": "(direct)", "medium": null,
             "campaign": null, "content": null, "term": null, "channel": null, "country": null, "platform": null,
             "storefront": null, "event": "first_game_open", "events": 1, "users": 1,
             "returned_d1": 0, "returned_d7": 0},
            {"day": "2026-11-03", "game": "demo-game", "source": "newsletter", "medium": "email",
             "campaign": null, "content": null, "term": null, "channel": null, "country": null, "platform": null,
             "storefront": "epic", "event": "first_game_open", "events": 1, "users": 1,
             "returned_d1": 0, "returned_d7": 0},
            {"day": "2026-11-03", "game": "demo-game", "source": "twitter", "medium": "social",
             "campaign": "launch", "content": null, "term": null, "channel": null, "country": null, "platform": "pc",
             "storefront": "steam", "event": "game_open", "events": 1, "users": 1,
             "returned_d1": 0, "returned_d7": 0}
        ])
    );

    // The incremental roll-ups equal a full recomputation from the raw logs.
    world
        .store
        .rebuild_cells(day("2026-11-01"), day("2026-11-03"))
        .await
        .expect("rebuild");
    let rebuilt = world.document("2026-11-01", "2026-11-03", None, now);
    assert_eq!(rebuilt, document);

    // One game only, and one day only.
    assert!(
        world
            .document("2026-11-01", "2026-11-03", Some("other-game"), now)
            .conversions
            .is_empty()
    );
    assert_eq!(
        world
            .document("2026-11-02", "2026-11-02", None, now)
            .conversions
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_player_and_a_visitor_count_once_per_cell_and_day() {
    let mut world = World::new(|config| config.privacy.salt_rotation_hours = 6);
    world.rotate(NOV_1).await;
    let ads = || page("utm_source=ads");
    // A visits three times on Nov 1: twice before a restart and a salt rotation, once after,
    // under the new salt (a new pseudonym, so a second visitor by design).
    world.visit(A, ads(), WINDOWS, NOV_1 + HOUR).await;
    world.visit(A, ads(), WINDOWS, NOV_1 + 2 * HOUR).await;
    let game_open = |user: &str| event(user, "game_open", json!({}));
    world
        .open("key-demo", game_open("alice"), A, NOV_1 + 3 * HOUR)
        .await;
    world
        .open("key-demo", game_open("alice"), A, NOV_1 + 4 * HOUR)
        .await;
    world.restart();
    assert!(world.rotate(NOV_1 + 7 * HOUR).await);
    world.visit(A, ads(), WINDOWS, NOV_1 + 8 * HOUR).await;
    // Alice keeps her first pseudonym (invariant 4) and is remembered by her records alone.
    world
        .open("key-demo", game_open("alice"), A, NOV_1 + 9 * HOUR)
        .await;
    world
        .open("key-demo", game_open("bob"), A, NOV_1 + 10 * HOUR)
        .await;
    // The next day is another cell: Alice counts there once more.
    world
        .open("key-demo", game_open("alice"), A, NOV_1 + DAY + HOUR)
        .await;

    let now = NOV_1 + DAY + 2 * HOUR;
    let document = world.document("2026-11-01", "2026-11-02", None, now);
    let traffic: Vec<(i64, i64)> = document
        .traffic
        .iter()
        .map(|row| (row.visits, row.visitors))
        .collect();
    assert_eq!(traffic, vec![(3, 2)]);
    assert_eq!(
        world.conversions("2026-11-01", "2026-11-01", now),
        vec![("ads".into(), "game_open".into(), 4, 2)]
    );
    assert_eq!(
        world.conversions("2026-11-02", "2026-11-02", now),
        vec![("ads".into(), "game_open".into(), 1, 1)]
    );
    world
        .store
        .rebuild_cells(day("2026-11-01"), day("2026-11-02"))
        .await
        .expect("rebuild");
    assert_eq!(
        world.document("2026-11-01", "2026-11-02", None, now),
        document
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_lookback_boundary_is_inclusive() {
    let world = World::new(|config| config.attribution.lookback_days = 14);
    world.rotate(NOV_1).await;
    world.visit(A, page("utm_source=ads"), WINDOWS, NOV_1).await;
    world.visit(B, page("utm_source=ads"), WINDOWS, NOV_1).await;
    let edge = NOV_1 + 14 * DAY;
    // A's event is exactly 14 days after the visit: inside. B's one second later: outside.
    world
        .open(
            "key-demo",
            event("a", "first_game_open", json!({"time_stamp": edge})),
            A,
            edge + 60,
        )
        .await;
    world
        .open(
            "key-demo",
            event("b", "first_game_open", json!({"time_stamp": edge + 1})),
            B,
            edge + 60,
        )
        .await;
    assert_eq!(
        world.conversions("2026-11-15", "2026-11-15", edge + 120),
        vec![
            ("(direct)".into(), "first_game_open".into(), 1, 1),
            ("ads".into(), "first_game_open".into(), 1, 1),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn first_touch_and_last_touch() {
    for (model, expected) in [
        (AttributionModel::LastTouch, "second"),
        (AttributionModel::FirstTouch, "first"),
    ] {
        let world = World::new(|config| config.attribution.model = model);
        world.rotate(NOV_1).await;
        world
            .visit(A, page("utm_source=first"), WINDOWS, NOV_1 + HOUR)
            .await;
        // The salt rotates between the two visits: both must still be found.
        assert!(world.rotate(NOV_1 + DAY).await);
        world
            .visit(A, page("utm_source=second"), WINDOWS, NOV_1 + DAY + HOUR)
            .await;
        world
            .open(
                "key-demo",
                event("a", "first_game_open", json!({})),
                A,
                NOV_1 + 2 * DAY,
            )
            .await;
        let conversions = world.conversions("2026-11-03", "2026-11-03", NOV_1 + 2 * DAY + HOUR);
        assert_eq!(
            conversions,
            vec![(expected.into(), "first_game_open".into(), 1, 1)],
            "{model:?}"
        );
    }
}

/// A visit's address entry waits in the writer's memory before it is written to its table
/// (store/deferred.rs); a restart writes it. Linking sees both halves as one: the visit on file
/// wins under first touch, the one in memory under last touch.
#[tokio::test(flavor = "multi_thread")]
async fn linking_finds_visits_on_file_and_in_memory_alike() {
    for (model, expected) in [
        (AttributionModel::LastTouch, "in-memory"),
        (AttributionModel::FirstTouch, "on-file"),
    ] {
        let mut world = World::new(|config| config.attribution.model = model);
        world.rotate(NOV_1).await;
        world
            .visit(A, page("utm_source=on-file"), WINDOWS, NOV_1 + HOUR)
            .await;
        world.restart();
        world
            .visit(A, page("utm_source=in-memory"), WINDOWS, NOV_1 + 2 * HOUR)
            .await;
        world
            .open(
                "key-demo",
                event("a", "first_game_open", json!({})),
                A,
                NOV_1 + 3 * HOUR,
            )
            .await;
        let conversions = world.conversions("2026-11-01", "2026-11-01", NOV_1 + 4 * HOUR);
        assert_eq!(
            conversions,
            vec![(expected.into(), "first_game_open".into(), 1, 1)],
            "{model:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn consent_gating_links_only_consented_visits() {
    let world = World::new(|config| config.attribution.require_consent = true);
    world.rotate(NOV_1).await;
    let mut consented = page("utm_source=yes");
    consented["consent"] = json!(true);
    world
        .visit(A, page("utm_source=no"), WINDOWS, NOV_1 + HOUR)
        .await;
    world.visit(B, consented, WINDOWS, NOV_1 + HOUR).await;
    world
        .open(
            "key-demo",
            event("a", "first_game_open", json!({})),
            A,
            NOV_1 + 2 * HOUR,
        )
        .await;
    world
        .open(
            "key-demo",
            event("b", "first_game_open", json!({})),
            B,
            NOV_1 + 2 * HOUR,
        )
        .await;
    let now = NOV_1 + 3 * HOUR;
    assert_eq!(
        world.conversions("2026-11-01", "2026-11-01", now),
        vec![
            ("(direct)".into(), "first_game_open".into(), 1, 1),
            ("yes".into(), "first_game_open".into(), 1, 1),
        ]
    );
    // Both visits still count in traffic; one of them consented.
    let traffic = world
        .document("2026-11-01", "2026-11-01", None, now)
        .traffic;
    let totals: (i64, i64) = traffic.iter().fold((0, 0), |acc, row| {
        (acc.0 + row.visits, acc.1 + row.consented_visits)
    });
    assert_eq!(totals, (2, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn ipv6_links_within_the_same_prefix_only() {
    let world = World::new(|_| {});
    world.rotate(NOV_1).await;
    world
        .visit(
            "2001:db8:1:2::1",
            page("utm_source=v6"),
            WINDOWS,
            NOV_1 + HOUR,
        )
        .await;
    let later = NOV_1 + 2 * HOUR;
    world
        .open(
            "key-demo",
            event(
                "same",
                "first_game_open",
                json!({"ip": "2001:db8:1:2:ffff::99"}),
            ),
            A,
            later,
        )
        .await;
    world
        .open(
            "key-demo",
            event("other", "first_game_open", json!({"ip": "2001:db8:1:3::1"})),
            A,
            later,
        )
        .await;
    assert_eq!(
        world.conversions("2026-11-01", "2026-11-01", later + HOUR),
        vec![
            ("(direct)".into(), "first_game_open".into(), 1, 1),
            ("v6".into(), "first_game_open".into(), 1, 1),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn visits_link_to_their_own_game_or_to_any_when_they_name_none() {
    let world = World::new(|_| {});
    world.rotate(NOV_1).await;
    let mut for_other = page("utm_source=other-promo");
    for_other["game"] = json!("other-game");
    world.visit(A, for_other, WINDOWS, NOV_1 + HOUR).await;
    world
        .visit(B, page("utm_source=studio-site"), WINDOWS, NOV_1 + HOUR)
        .await;
    let later = NOV_1 + 2 * HOUR;
    world
        .open(
            "key-demo",
            event("a1", "first_game_open", json!({})),
            A,
            later,
        )
        .await;
    world
        .open(
            "key-other",
            event("a2", "first_game_open", json!({})),
            A,
            later,
        )
        .await;
    world
        .open(
            "key-demo",
            event("b1", "first_game_open", json!({})),
            B,
            later,
        )
        .await;
    world
        .open(
            "key-other",
            event("b2", "first_game_open", json!({})),
            B,
            later,
        )
        .await;
    let rows: Vec<(String, String)> = world
        .document("2026-11-01", "2026-11-01", None, later + HOUR)
        .conversions
        .into_iter()
        .map(|row| (row.game, row.campaign.source.unwrap_or_default()))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("demo-game".into(), "(direct)".into()),
            ("demo-game".into(), "studio-site".into()),
            ("other-game".into(), "other-promo".into()),
            ("other-game".into(), "studio-site".into()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn small_cells_merge_into_other_and_totals_hold() {
    let world = World::new(|config| config.privacy.min_cell_size = 2);
    world.rotate(NOV_1).await;
    // "big" has 2 visitors (3 visits); "x", "y", "z" one visitor each.
    for (ip, source) in [
        (A, "big"),
        (B, "big"),
        (A, "big"),
        (C, "x"),
        (A, "y"),
        (B, "z"),
    ] {
        world
            .visit(
                ip,
                page(&format!("utm_source={source}")),
                WINDOWS,
                NOV_1 + HOUR,
            )
            .await;
    }
    let traffic = world
        .document("2026-11-01", "2026-11-01", None, NOV_1 + 2 * HOUR)
        .traffic;
    let rows: Vec<(Option<String>, i64, i64)> = traffic
        .iter()
        .map(|row| (row.campaign.source.clone(), row.visits, row.visitors))
        .collect();
    assert_eq!(
        rows,
        vec![(Some("big".into()), 3, 2), (Some("(other)".into()), 3, 3)]
    );
    assert_eq!(traffic[1].device, "(other)");
    assert_eq!(traffic[1].game.as_deref(), None, "the game is kept");
}

#[tokio::test(flavor = "multi_thread")]
async fn queries_outside_the_window_are_refused() {
    let world = World::new(|config| config.privacy.retention_days = 7);
    let now = NOV_1 + 20 * DAY;
    let parse = |from: &str, to: &str| Query::parse(Some(from), Some(to), None, &world.config, now);
    assert!(parse("2026-11-14", "2026-11-21").is_ok());
    assert_eq!(
        parse("2026-11-13", "2026-11-21").map_err(|e| e.field),
        Err("from")
    );
    assert_eq!(
        parse("2026-11-20", "2026-11-22").map_err(|e| e.field),
        Err("to")
    );
    assert_eq!(
        parse("2026-11-21", "2026-11-20").map_err(|e| e.field),
        Err("from")
    );
    assert_eq!(
        parse("2026-11-2x", "2026-11-21").map_err(|e| e.field),
        Err("from")
    );
    let unknown_game = Query::parse(
        Some("2026-11-20"),
        Some("2026-11-20"),
        Some("nope"),
        &world.config,
        now,
    );
    assert_eq!(unknown_game.map_err(|e| e.field), Err("game"));
}

// Returns: of a conversions row's players, how many have an event of the game on the next UTC
// day (`returned_d1`) and on one of the next seven (`returned_d7`).

const D: &str = "203.0.113.40";
const E: &str = "203.0.113.50";

/// An event of `user` stamped at `time`, arriving at `arrival`.
async fn open_at(world: &World, user: &str, name: &str, ip: &str, time: i64, arrival: i64) {
    let written = world
        .open(
            "key-demo",
            event(user, name, json!({"time_stamp": time})),
            ip,
            arrival,
        )
        .await;
    assert_eq!(
        (written.stored, written.blocked),
        (1, 0),
        "{user} at {time}"
    );
}

/// The conversions of `day` as (source, event, users, returned_d1, returned_d7).
fn returns(world: &World, day: &str, now: i64) -> Vec<(String, String, i64, i64, i64)> {
    world
        .document(day, day, None, now)
        .conversions
        .into_iter()
        .map(|row| {
            (
                row.campaign.source.unwrap_or_default(),
                row.event,
                row.users,
                row.returned_d1,
                row.returned_d7,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn returns_on_the_next_day_within_a_week_and_never() {
    let world = World::new(|_| {});
    world.rotate(NOV_1).await;
    for ip in [A, B, C, D, E] {
        world
            .visit(ip, page("utm_source=ads"), WINDOWS, NOV_1 + 9 * HOUR)
            .await;
    }
    let first = "first_game_open";
    // Nov 1: five first opens from the ads campaign.
    open_at(
        &world,
        "alice",
        first,
        A,
        NOV_1 + 12 * HOUR,
        NOV_1 + 12 * HOUR,
    )
    .await;
    open_at(
        &world,
        "bob",
        first,
        B,
        NOV_1 + 23 * HOUR,
        NOV_1 + 23 * HOUR,
    )
    .await;
    open_at(
        &world,
        "carol",
        first,
        C,
        NOV_1 + 13 * HOUR,
        NOV_1 + 13 * HOUR,
    )
    .await;
    open_at(
        &world,
        "dave",
        first,
        D,
        NOV_1 + 14 * HOUR,
        NOV_1 + 14 * HOUR,
    )
    .await;
    // Alice returns on day +1 (Nov 2, a few minutes after midnight UTC).
    open_at(
        &world,
        "alice",
        "game_open",
        A,
        NOV_1 + DAY + 60,
        NOV_1 + DAY + 60,
    )
    .await;
    // Bob returns on day +7 only (Nov 8, the last day of the week after).
    open_at(
        &world,
        "bob",
        "game_open",
        B,
        NOV_1 + 7 * DAY,
        NOV_1 + 7 * DAY,
    )
    .await;
    // Carol plays again on her first day, then on day +8: neither is a return.
    open_at(
        &world,
        "carol",
        "game_open",
        C,
        NOV_1 + 20 * HOUR,
        NOV_1 + 20 * HOUR,
    )
    .await;
    open_at(
        &world,
        "carol",
        "game_open",
        C,
        NOV_1 + 8 * DAY,
        NOV_1 + 8 * DAY,
    )
    .await;
    // Dave never comes back. Eve's day +1 open arrives before the first open it returns
    // from, which her game reports late (order of arrival does not matter).
    open_at(
        &world,
        "eve",
        "game_open",
        E,
        NOV_1 + DAY + HOUR,
        NOV_1 + DAY + HOUR,
    )
    .await;
    open_at(
        &world,
        "eve",
        first,
        E,
        NOV_1 + 15 * HOUR,
        NOV_1 + DAY + 2 * HOUR,
    )
    .await;

    let now = NOV_1 + 9 * DAY;
    // Nov 1, first opens: 5 players; alice and eve back on Nov 2; bob too within the week.
    // Carol's same-day open is her game_open row's, which nobody returns from.
    assert_eq!(
        returns(&world, "2026-11-01", now),
        vec![
            ("ads".into(), first.into(), 5, 2, 3),
            ("ads".into(), "game_open".into(), 1, 0, 0),
        ]
    );
    // Nov 2: alice's and eve's opens; neither plays on Nov 3..9.
    assert_eq!(
        returns(&world, "2026-11-02", now),
        vec![("ads".into(), "game_open".into(), 2, 0, 0)]
    );
    // Returns look past the asked range: the same answer for a range of Nov 1 alone as for a
    // longer one, and after the roll-ups are rebuilt from the raw logs.
    let document = world.document("2026-11-01", "2026-11-09", None, now);
    world
        .store
        .rebuild_cells(day("2026-11-01"), day("2026-11-09"))
        .await
        .expect("rebuild");
    assert_eq!(
        world.document("2026-11-01", "2026-11-09", None, now),
        document
    );
    assert_eq!(document.conversions[0].returned_d7, 3);
    // A row's returns show in every output: the JSON has them by name.
    let value = serde_json::to_value(&document).expect("json");
    assert_eq!(value["conversions"][0]["returned_d1"], 2);
    assert_eq!(value["conversions"][0]["returned_d7"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_return_across_a_salt_rotation_counts() {
    let mut world = World::new(|_| {});
    assert!(world.rotate(NOV_1).await);
    world
        .visit(A, page("utm_source=ads"), WINDOWS, NOV_1 + HOUR)
        .await;
    let first = "first_game_open";
    open_at(
        &world,
        "alice",
        first,
        A,
        NOV_1 + 2 * HOUR,
        NOV_1 + 2 * HOUR,
    )
    .await;
    // A new salt and a restart: alice keeps the pseudonym of her first records (invariant 4),
    // even from another address.
    assert!(world.rotate(NOV_1 + DAY).await);
    world.restart();
    open_at(
        &world,
        "alice",
        "game_open",
        B,
        NOV_1 + DAY + HOUR,
        NOV_1 + DAY + HOUR,
    )
    .await;
    assert_eq!(world.salts.read().expect("ring").live().len(), 2);
    assert_eq!(
        returns(&world, "2026-11-01", NOV_1 + 2 * DAY),
        vec![("ads".into(), first.into(), 1, 1, 1)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forgotten_player_does_not_count_as_returned() {
    let world = World::new(|_| {});
    world.rotate(NOV_1).await;
    for ip in [A, B, C] {
        world
            .visit(ip, page("utm_source=ads"), WINDOWS, NOV_1 + HOUR)
            .await;
    }
    let first = "first_game_open";
    for (user, ip) in [("alice", A), ("bob", B), ("dave", C)] {
        open_at(&world, user, first, ip, NOV_1 + 2 * HOUR, NOV_1 + 2 * HOUR).await;
    }
    let forget = async |user: &str, now: i64| {
        let subject = world.ingest.subject("demo-game", user).expect("request");
        world
            .store
            .forget(&subject.game, subject.users, subject.block, now)
            .await
            .expect("forget")
    };
    // Dave is forgotten between his first open and his return, which is then dropped.
    assert_eq!(forget("dave", NOV_1 + 3 * HOUR).await.measure, 1);
    let written = world
        .open(
            "key-demo",
            event("dave", "game_open", json!({})),
            C,
            NOV_1 + DAY + HOUR,
        )
        .await;
    assert_eq!((written.stored, written.blocked), (0, 1));
    for (user, ip) in [("alice", A), ("bob", B)] {
        open_at(
            &world,
            user,
            "game_open",
            ip,
            NOV_1 + DAY + HOUR,
            NOV_1 + DAY + HOUR,
        )
        .await;
    }
    let now = NOV_1 + 3 * DAY;
    // The cell's counts are anonymous and stay; returns come from the events on file.
    assert_eq!(
        returns(&world, "2026-11-01", now),
        vec![("ads".into(), first.into(), 3, 2, 2)]
    );
    // Alice is forgotten after her return: both of her events go, and with them her return.
    assert_eq!(forget("alice", NOV_1 + 2 * DAY).await.measure, 2);
    assert_eq!(
        returns(&world, "2026-11-01", now),
        vec![("ads".into(), first.into(), 3, 1, 1)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn small_rows_merge_their_returns_into_other() {
    let world = World::new(|config| config.privacy.min_cell_size = 2);
    world.rotate(NOV_1).await;
    for (ip, source) in [(A, "x"), (B, "y"), (C, "big"), (D, "big")] {
        world
            .visit(
                ip,
                page(&format!("utm_source={source}")),
                WINDOWS,
                NOV_1 + HOUR,
            )
            .await;
    }
    let first = "first_game_open";
    for (user, ip) in [("alice", A), ("bob", B), ("carol", C), ("dave", D)] {
        open_at(&world, user, first, ip, NOV_1 + 2 * HOUR, NOV_1 + 2 * HOUR).await;
    }
    // Alice (x) returns on day +1, carol (big) on day +3; bob and dave never.
    open_at(&world, "alice", "game_open", A, NOV_1 + DAY, NOV_1 + DAY).await;
    open_at(
        &world,
        "carol",
        "game_open",
        C,
        NOV_1 + 3 * DAY,
        NOV_1 + 3 * DAY,
    )
    .await;
    // "x" and "y" have one player each: below the minimum, they merge, returns and all.
    assert_eq!(
        returns(&world, "2026-11-01", NOV_1 + 4 * DAY),
        vec![
            ("big".into(), first.into(), 2, 0, 1),
            ("(other)".into(), first.into(), 2, 1, 1),
        ]
    );
}
