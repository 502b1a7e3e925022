//! Hostile internet, the store's side: one address flooding visits must not slow the writer,
//! a failed sync or a full disk must never be answered untruthfully, and hostile text must not
//! reach the store.
//!
//! The durability tests mount small file systems (tmpfs, and ext4 on a loop device whose blocks
//! live in a tmpfs) to make real disks fail; they need root and say so, then pass, where
//! mounting is not allowed.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::world::{DAY, HOUR, IPHONE, NOV_1, World, page};
use common::{Collector, Options};
use serde_json::json;
use tracks_collector::testkit::{
    Campaign, CollectRequest, MeasureBody, MeasureRequest, ServerVisitRequest, VisitWrite,
    is_control, link_utm,
};

const NOW: i64 = NOV_1 + 12 * HOUR;
const FLOODER: &str = "203.0.113.7";

/// Issue 16, item 3: with 1.4 M visits from one address in the hour, a consent update (every
/// page view of tracks.js carries an id) walked them all: 183 ms in the writer, seconds of
/// waiting for everyone else. It must find its page view by the id through an index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_view_lookup_costs_one_probe_however_many_visits_the_address_sent() {
    const VISITS: usize = 100_000;
    const CHUNK: usize = 4_000;
    let world = World::new(|_| {});
    world.rotate(NOW - DAY).await;
    let flood = world.new_visit(FLOODER, &page("utm_source=flood"), IPHONE, NOW);
    for chunk in 0..VISITS / CHUNK {
        let pending: Vec<_> = (0..CHUNK)
            .map(|n| {
                let store = world.store.clone();
                let mut visit = flood.clone();
                visit.received_at = NOW - 1 - ((chunk * CHUNK + n) % 3_000) as i64;
                tokio::spawn(async move { store.insert_visit(visit).await })
            })
            .collect();
        for visit in pending {
            visit.await.expect("task").expect("stored");
        }
    }

    // Each new page view is looked up before it is stored (no match: the old plan walked
    // every visit of the address in the hour), then its consent is updated (a match, behind
    // all of them). Times are printed for the record, not asserted: this machine's speed
    // varies. Commit and sync are included.
    let view = |n: usize, consent: bool| {
        json!({"url": "https://mygame.example/", "id": format!("view-under-load-{n}"),
               "consent": consent})
    };
    let mut times = (Vec::new(), Vec::new());
    for n in 0..5 {
        let visit = world.new_visit(FLOODER, &view(n, false), IPHONE, NOW);
        let started = Instant::now();
        let written = world.store.insert_visit(visit).await.expect("stored");
        times.0.push(started.elapsed());
        assert_eq!(written, VisitWrite::Inserted, "page view {n}");
    }
    for round in 0..11 {
        let visit = world.new_visit(FLOODER, &view(0, round % 2 == 0), IPHONE, NOW);
        let started = Instant::now();
        let written = world.store.insert_visit(visit).await.expect("stored");
        times.1.push(started.elapsed());
        assert_eq!(written, VisitWrite::ConsentUpdated, "round {round}");
    }
    for (what, times) in [
        ("a new page view", &mut times.0),
        ("a consent update", &mut times.1),
    ] {
        times.sort();
        eprintln!(
            "{what} with {VISITS} visits from the address in the hour: median {:?} (min {:?}, max {:?})",
            times[times.len() / 2],
            times[0],
            times[times.len() - 1]
        );
    }

    let traffic = world
        .document("2026-11-01", "2026-11-01", None, NOW)
        .traffic;
    let visits: i64 = traffic.iter().map(|row| row.visits).sum();
    let consented: i64 = traffic.iter().map(|row| row.consented_visits).sum();
    assert_eq!(visits, VISITS as i64 + 5, "updates count no visit");
    assert_eq!(consented, 1, "the last update gave consent");
    world.store.close();
}

/// Every campaign value of the traffic rows, for scans.
fn campaign_values(world: &World) -> Vec<String> {
    world
        .document("2026-11-01", "2026-11-01", None, NOW)
        .traffic
        .into_iter()
        .flat_map(|row| {
            row.campaign
                .values()
                .into_iter()
                .flatten()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Item 8: `%1B`, `%07`, `%0A`, `%00` and bidirectional controls in UTM values were stored as
/// sent and printed raw. From a URL (the script's page, a link's query) and from a server-side
/// visit's fields alike, they are removed and the visit kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_never_reach_a_stored_utm_value() {
    let world = World::new(|_| {});
    world.rotate(NOW - DAY).await;
    world
        .visit(
            FLOODER,
            page("utm_source=twit%1Bter%07&utm_medium=e%0Amail%00&utm_campaign=%E2%80%AElaunch"),
            IPHONE,
            NOW,
        )
        .await;
    let server_visit = json!({"event_name": "page_view", "source": "news\u{7}letter",
                              "channel": "paid\u{1b}_social", "browser": "Fire\u{0}fox"});
    let body = server_visit.to_string();
    let visit = world
        .ingest
        .server_visit(ServerVisitRequest {
            body: body.as_bytes(),
            bearer: Some("key-demo"),
            client_ip: FLOODER.parse().expect("ip"),
            now: NOW,
        })
        .expect("a server-side visit");
    assert_eq!(visit.device.browser, "Firefox");
    world
        .store
        .insert_visit(Box::new(visit))
        .await
        .expect("stored");

    let values = campaign_values(&world);
    for expected in ["twitter", "email", "launch", "newsletter", "paid_social"] {
        assert!(
            values.iter().any(|value| value == expected),
            "{expected} in {values:?}"
        );
    }
    assert!(
        !values.iter().any(|value| value.chars().any(is_control)),
        "{values:?}"
    );
    let linked = link_utm(
        &Campaign::default(),
        Some("utm_source=%1B%5D0%3Bowned%07x&utm_term=%0D%0Aforged"),
    );
    assert_eq!(linked.source.as_deref(), Some("]0;ownedx"));
    assert_eq!(linked.term.as_deref(), Some("forged"));
    world.store.close();
}

/// A game event through ingest; the refusal, if any.
fn measure(world: &World, body: MeasureBody<'_>) -> Result<usize, (String, String)> {
    world
        .ingest
        .measure(MeasureRequest {
            body,
            bearer: Some("key-demo"),
            client_ip: FLOODER.parse().expect("ip"),
            now: NOW,
        })
        .map(|measured| measured.events.len())
        .map_err(|err| (err.code.to_string(), err.message))
}

/// Item 8: a user id is an identifier, so one with a control character is refused (400),
/// naming the field, rather than stored as another player than the one it prints as.
#[tokio::test]
async fn a_user_id_with_a_control_character_is_refused() {
    let world = World::new(|_| {});
    world.rotate(NOW - DAY).await;
    for body in [
        json!({"user_id": "player\u{7}one", "event_name": "game_open"}),
        json!({"user_id": "player\u{202e}eno", "event_name": "game_open"}),
        json!([{"user_id": "player", "event_name": "game_open"},
               {"user_id": "player\u{0}", "event_name": "game_open"}]),
    ] {
        let text = body.to_string();
        let (code, message) = measure(&world, MeasureBody::Json(text.as_bytes())).expect_err(&text);
        assert_eq!(code, "invalid_user_id", "{text}");
        assert!(message.contains("user_id`"), "{message}");
    }
    let (code, _) = measure(
        &world,
        MeasureBody::Form(b"user_id=player%1Bone&event_name=game_open"),
    )
    .expect_err("a form too");
    assert_eq!(code, "invalid_user_id");
    // Surrounding white space is trimmed, as before: not a control character that stays.
    assert_eq!(
        measure(
            &world,
            MeasureBody::Form(b"user_id=player%0A&event_name=game_open")
        ),
        Ok(1)
    );
    world.store.close();
}

/// Item 8: form values whose percent-decoded bytes are not UTF-8 became U+FFFD, so
/// `user_id=%FF` and `user_id=%FE` were one player. They are refused, by field name.
#[tokio::test]
async fn a_form_value_that_is_not_utf8_is_refused() {
    let world = World::new(|_| {});
    world.rotate(NOW - DAY).await;
    for body in [
        &b"user_id=%FF&event_name=game_open"[..],
        b"user_id=%FE&event_name=game_open",
        b"user_id=ok&event_name=game_open&platform=%C3",
        b"user_id=ok&event_name=game_open&storefront=\xff",
    ] {
        let (code, message) =
            measure(&world, MeasureBody::Form(body)).expect_err(&String::from_utf8_lossy(body));
        assert_eq!(code, "invalid_encoding");
        assert!(message.contains('`'), "names the field: {message}");
    }
    assert!(
        measure(
            &world,
            MeasureBody::Form(b"user_id=%FF&event_name=game_open")
        )
        .is_err_and(|(_, message)| message.contains("`user_id`"))
    );
    assert_eq!(
        measure(
            &world,
            MeasureBody::Form("user_id=%C3%A9t%C3%A9&event_name=game_open".as_bytes())
        ),
        Ok(1),
        "UTF-8 is fine"
    );
    world.store.close();
}

/// Item 8: in JSON a key sent twice meant the last one won, while a form refused it. Every
/// JSON body refuses it now (400 `duplicate_field`), at any depth, and a body that is not
/// UTF-8 is refused even where the field is ignored (`clientId`).
#[tokio::test]
async fn json_keys_sent_twice_and_bytes_that_are_not_utf8_are_refused() {
    let world = World::new(|_| {});
    world.rotate(NOW - DAY).await;
    for body in [
        r#"{"user_id": "a", "event_name": "game_open", "user_id": "b"}"#,
        r#"[{"user_id": "a", "event_name": "game_open"},
            {"user_id": "b", "event_name": "game_open", "event_name": "first_game_open"}]"#,
    ] {
        let (code, message) = measure(&world, MeasureBody::Json(body.as_bytes())).expect_err(body);
        assert_eq!(code, "duplicate_field", "{body}");
        assert!(message.contains("appears more than once"), "{message}");
    }
    let collect = |body: &[u8]| {
        world
            .ingest
            .collect(CollectRequest {
                body,
                user_agent: Some(IPHONE),
                client_ip: FLOODER.parse().expect("ip"),
                now: NOW,
            })
            .map(|_| ())
            .map_err(|err| err.code.as_str())
    };
    assert_eq!(
        collect(br#"{"url": "https://a.example/", "consent": false, "consent": true}"#),
        Err("duplicate_field")
    );
    let server_visit = |body: &[u8]| {
        world
            .ingest
            .server_visit(ServerVisitRequest {
                body,
                bearer: Some("key-demo"),
                client_ip: FLOODER.parse().expect("ip"),
                now: NOW,
            })
            .map(|_| ())
            .map_err(|err| err.code.as_str())
    };
    assert_eq!(
        server_visit(br#"{"source": "a", "source": "b"}"#),
        Err("duplicate_field")
    );
    assert_eq!(
        server_visit(b"{\"source\": \"a\", \"clientId\": \"\xff\xfe\"}"),
        Err("invalid_json")
    );
    assert_eq!(
        server_visit(b"{\"source\": \"a\", \"clientId\": {\"k\": 1, \"k\": 2}}"),
        Err("duplicate_field")
    );
    assert_eq!(
        collect(b"{\"url\": \"https://a.example/\xc3\"}"),
        Err("invalid_json")
    );
    assert_eq!(server_visit(br#"{"source": "a", "clientId": "x"}"#), Ok(()));
    world.store.close();
}

/// File systems a test mounted, undone in reverse order on drop.
struct Mounts {
    dir: tempfile::TempDir,
    undo: Vec<Undo>,
}

enum Undo {
    Unmount(PathBuf),
    Detach(String),
}

impl Mounts {
    fn new() -> Mounts {
        Mounts {
            dir: tempfile::tempdir().expect("temp dir"),
            undo: Vec::new(),
        }
    }

    /// A tmpfs of `size` (e.g. `8m`) at a new folder `name`.
    fn tmpfs(&mut self, name: &str, size: &str) -> Result<PathBuf, String> {
        let point = self.dir.path().join(name);
        std::fs::create_dir(&point).map_err(|err| err.to_string())?;
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ],
            &[point.as_path()],
        )?;
        self.undo.push(Undo::Unmount(point.clone()));
        Ok(point)
    }

    /// An ext4 file system of 128 MiB at a new folder `name`, whose blocks live in a sparse
    /// file on a 32 MiB tmpfs: the thin-provisioned disk of a VM. Once that tmpfs is full, the
    /// file system still takes writes into the page cache, and their write-back fails: fsync
    /// answers an error. Answers the mount point, the tmpfs and the loop device.
    fn thin_ext4(&mut self, name: &str) -> Result<(PathBuf, PathBuf, String), String> {
        let backing = self.tmpfs(&format!("{name}-blocks"), "32m")?;
        let image = backing.join("disk.img");
        run("truncate", &["-s", "128M"], &[image.as_path()])?;
        let device = run("losetup", &["-f", "--show"], &[image.as_path()])?;
        let device = device.trim().to_string();
        self.undo.push(Undo::Detach(device.clone()));
        // No journal: a failed journal write would turn the file system read-only, and the
        // test is about the data's write-back. Inode tables are written now, not in the
        // background while the disk is full.
        run(
            "mkfs.ext4",
            &[
                "-q",
                "-O",
                "^has_journal",
                "-N",
                "1024",
                "-E",
                "lazy_itable_init=0,nodiscard",
            ],
            &[Path::new(&device)],
        )?;
        let point = self.dir.path().join(name);
        std::fs::create_dir(&point).map_err(|err| err.to_string())?;
        run("mount", &[device.as_str()], &[point.as_path()])?;
        self.undo.push(Undo::Unmount(point.clone()));
        Ok((point, backing, device))
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for step in self.undo.drain(..).rev() {
            let _ = match step {
                Undo::Unmount(point) => run("umount", &[], &[point.as_path()]),
                Undo::Detach(device) => run("losetup", &["-d", device.as_str()], &[]),
            };
        }
    }
}

/// Runs a system command; its output, or why it failed.
fn run(program: &str, args: &[&str], paths: &[&Path]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .args(paths)
        .output()
        .map_err(|err| format!("{program}: {err}"))?;
    if !output.status.success() {
        return Err(format!(
            "{program} {args:?} {paths:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Takes every free block of the file system holding `dir`; answers the file to delete.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("filler");
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(err) if err.raw_os_error() == Some(28) => break, // ENOSPC
            Err(err) => panic!("filling {}: {err}", dir.display()),
        }
    }
    path
}

/// A collector on plain HTTP (quicker) keeping its state in `state_dir`.
fn collector_in(state_dir: &Path) -> Collector {
    Collector::start(Options {
        tls: false,
        state_dir: Some(state_dir.to_path_buf()),
        log_level: "info".into(),
        // Every visit comes from this one address: the store refuses, not the rate limit.
        extra: "[limits]\nvisits_per_second = 100000\nvisits_burst = 100000\n".into(),
        ..Options::default()
    })
}

/// Each answer to a numbered visit: (status, error code).
type Answers = BTreeMap<usize, (u16, String)>;

/// Sends visit `n` (its campaign is `v{n}`, to find it in the database).
async fn send_visit(collector: &Collector, n: usize, answers: &mut Answers) -> (u16, String) {
    let body = json!({"url": format!("https://mygame.example/?utm_campaign=v{n}")});
    let answer = collector
        .client()
        .post("/collect", "application/json", body.to_string(), &[])
        .await;
    let code = if answer.status == 204 {
        String::new()
    } else {
        answer.error_code()
    };
    answers.insert(n, (answer.status, code.clone()));
    (answer.status, code)
}

/// Sends visits from `first` until one is not acknowledged (at most 3,000), then `after` more.
async fn send_until_refused(
    collector: &Collector,
    first: usize,
    after: usize,
    answers: &mut Answers,
) -> usize {
    let mut n = first;
    let refused = loop {
        let (status, _) = send_visit(collector, n, answers).await;
        n += 1;
        if status != 204 {
            break n - 1;
        }
        assert!(n < first + 3_000, "the full disk never refused a write");
    };
    for _ in 0..after {
        send_visit(collector, n, answers).await;
        n += 1;
    }
    refused
}

/// How many answers of each kind, for the test's output.
fn tally(answers: &Answers) -> BTreeMap<String, usize> {
    let mut tally = BTreeMap::new();
    for (status, code) in answers.values() {
        *tally.entry(format!("{status} {code}")).or_insert(0) += 1;
    }
    tally
}

/// The visits (by number) that the database holds, as the daemon's SQLite sees them.
fn stored_visits(collector: &Collector) -> Vec<usize> {
    let conn = collector.open_db();
    let mut stmt = conn
        .prepare("SELECT utm_campaign FROM collect_logs WHERE utm_campaign LIKE 'v%'")
        .expect("query");
    let campaigns: Vec<String> = stmt
        .query_map([], |row| row.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows");
    campaigns
        .iter()
        .filter_map(|campaign| campaign[1..].parse().ok())
        .collect()
}

/// The promise of each answer (docs/api.md, "What an answer guarantees"): a 2xx is stored, a 503
/// other than `not_durable` is not; `not_durable` may be either.
fn assert_answers_told_the_truth(answers: &Answers, stored: &[usize]) {
    for (n, (status, code)) in answers {
        let kept = stored.contains(n);
        match (*status, code.as_str()) {
            (204, _) => assert!(
                kept,
                "visit {n} was acknowledged but is not stored; answers {answers:?}"
            ),
            (503, "not_durable") => {}
            (503, code) => assert!(
                !kept,
                "visit {n} was refused ({code}) but is stored; answers {answers:?}"
            ),
            other => panic!("visit {n}: unexpected answer {other:?}; answers {answers:?}"),
        }
    }
}

/// A read transaction left open, as a long aggregates query holds one: the WAL cannot start
/// over while it lasts, so every write appends to it (and, on a full disk, fails).
fn reading(collector: &Collector) -> rusqlite::Connection {
    let conn = collector.open_db();
    conn.execute_batch("BEGIN").expect("begin");
    conn.query_row("SELECT count(*) FROM collect_logs", [], |row| {
        row.get::<_, i64>(0)
    })
    .expect("a read");
    conn
}

async fn wait_healthy(collector: &Collector) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let health = collector.client().get("/healthz", &[]).await;
        if health.status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz still answers {} {:?} with room on the disk",
            health.status,
            String::from_utf8_lossy(&health.body)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Item 5: on a full disk every write failed while `/healthz` answered 200 (its empty commit
/// wrote nothing). It writes now: 503 `disk_full` with the reason while the disk is full, 200
/// again once there is room, and no refused visit is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_tells_a_full_disk_and_its_end() {
    let mut mounts = Mounts::new();
    let state = match mounts.tmpfs("state", "8m") {
        Ok(state) => state,
        Err(err) => {
            eprintln!("SKIPPED: cannot mount a tmpfs ({err}); this test needs root and mount(8)");
            return;
        }
    };
    let collector = collector_in(&state);
    let mut answers = Answers::new();
    for n in 0..3 {
        assert_eq!(send_visit(&collector, n, &mut answers).await.0, 204);
    }
    assert_eq!(collector.client().get("/healthz", &[]).await.status, 200);

    // Without a reader the WAL may start over inside the space it has, and small writes
    // (a healthz probe) then succeed on a full disk, truthfully: that would be a race.
    let reader = reading(&collector);
    let filler = fill(&state);
    let refused = send_until_refused(&collector, 3, 3, &mut answers).await;
    assert_eq!(
        answers[&refused],
        (503, "disk_full".to_string()),
        "{answers:?}"
    );
    // A health check reuses the last probe's result for a second: past it, a new probe.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let health = collector.client().get("/healthz", &[]).await;
    assert_eq!(
        (health.status, health.error_code()),
        (503, "disk_full".to_string()),
        "{:?}",
        String::from_utf8_lossy(&health.body)
    );
    // The reason's code for anyone who asks; the store's own words only in the log.
    let body = String::from_utf8_lossy(&health.body).into_owned();
    assert!(
        !body.contains("disk is full") && !body.contains(&state.display().to_string()),
        "the unauthenticated answer carries the store's error text: {body}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !collector.logs().contains("the health probe failed") {
        assert!(Instant::now() < deadline, "the log says why");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(health.header("retry-after").is_some());

    // A flood on the full disk: every group fails, and the journal (which may share the disk)
    // gets a line and a count, not a line per failed group.
    let lines_before = collector.logs().lines().count();
    let first = answers.len() + 100;
    for n in first..first + 300 {
        let (status, _) = send_visit(&collector, n, &mut answers).await;
        assert_eq!(status, 503);
    }
    let flood = collector
        .logs()
        .lines()
        .skip(lines_before)
        .collect::<Vec<_>>()
        .join("\n");
    let failed_groups = flood.matches("a write group failed to commit").count();
    assert!(
        failed_groups <= 1 && flood.lines().count() < 20,
        "300 refused visits wrote {} log lines:\n{flood}",
        flood.lines().count()
    );

    drop(reader);
    std::fs::remove_file(&filler).expect("free the disk");
    wait_healthy(&collector).await;
    let next = answers.len() + 10;
    assert_eq!(send_visit(&collector, next, &mut answers).await.0, 204);
    assert_answers_told_the_truth(&answers, &stored_visits(&collector));
    eprintln!("answers on a full disk: {:?}", tally(&answers));
    drop(collector);
}

/// Item 5: a commit whose WAL sync failed was answered 503 "cannot store, retry", yet stored,
/// so retrying clients made duplicates; and a later sync that succeeded acknowledged writes
/// the kernel had already lost track of. Now such a group is answered 503 `not_durable` (it
/// may be stored), no write is acknowledged until a probe has put everything into the synced
/// database file, every 503 but `not_durable` is a write that is not stored, and every 2xx
/// survives a crash and a cold page cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_is_answered_as_unknown_and_nothing_unsynced_is_acknowledged() {
    let mut mounts = Mounts::new();
    let (state, blocks, device) = match mounts.thin_ext4("state") {
        Ok(made) => made,
        Err(err) => {
            eprintln!(
                "SKIPPED: cannot make a failing disk ({err}); this test needs root, mount(8), \
                 losetup(8) and mkfs.ext4(8)"
            );
            return;
        }
    };
    let mut collector = collector_in(&state);
    let mut answers = Answers::new();
    for n in 0..3 {
        assert_eq!(send_visit(&collector, n, &mut answers).await.0, 204);
    }

    let filler = fill(&blocks);
    let failed = send_until_refused(&collector, 3, 5, &mut answers).await;
    assert_eq!(
        answers[&failed],
        (503, "not_durable".to_string()),
        "a commit whose sync failed may be stored; answers {answers:?}"
    );
    // A visit acknowledged after the failure needs the probe's success before it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let recovered = collector.logs().contains("writes reach the disk again");
    for (n, (status, _)) in answers.range(failed..) {
        assert!(
            *status != 204 || recovered,
            "visit {n} was acknowledged after a failed sync without a probe reaching the disk; \
             answers {answers:?}, logs:\n{}",
            collector.logs()
        );
    }
    assert_answers_told_the_truth(&answers, &stored_visits(&collector));

    std::fs::remove_file(&filler).expect("free the blocks");
    wait_healthy(&collector).await;
    assert!(collector.logs().contains("writes reach the disk again"));
    let next = answers.keys().max().copied().unwrap_or(0) + 1;
    for n in next..next + 3 {
        assert_eq!(send_visit(&collector, n, &mut answers).await.0, 204);
    }
    assert_answers_told_the_truth(&answers, &stored_visits(&collector));

    // What the disk holds: the daemon dies, the page cache of the file system goes with an
    // unmount, and a new daemon opens what is left.
    collector.kill9();
    run("umount", &[], &[state.as_path()]).expect("umount");
    run("mount", &[device.as_str()], &[state.as_path()]).expect("mount again");
    collector.restart();
    assert_eq!(collector.client().get("/healthz", &[]).await.status, 200);
    assert!(collector.terminate().success());
    assert_answers_told_the_truth(&answers, &stored_visits(&collector));
    eprintln!(
        "answers around a failed sync: {:?}; the first failure was visit {failed}",
        tally(&answers)
    );
}
