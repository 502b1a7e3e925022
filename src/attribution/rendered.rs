//! Attribution: each day's part of the aggregates document, rendered once and kept while the
//! day's cells are unchanged, so that reading a month renders only the days that changed.
//!
//! A document's rows are ordered by day first and suppressed within their day (`rows`), so
//! the document of a range is its days' parts one after the other. A part is current while the
//! day's version (`store`, migration 0020: bumped by triggers in the transaction that changes
//! any of the day's cells) is the one it was rendered at; versions and cells are read in one
//! snapshot. The bytes equal those of [`super::document`] serialised, which the store's model
//! test checks after every step.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::NaiveDate;
use serde::Serialize;

use super::document::{Query, Rows, Settings, document, read_day, retention_days};
use crate::clock::day_text;
use crate::config::Config;
use crate::rows::suppress;
use crate::store::{Reader, StoreError};

/// The page cache of a read that renders days: a day's cells are read through their key, a
/// table lookup each, and with SQLite's default 2 MiB each page was read back and decrypted
/// again and again (a month of 1.3 M conversion cells: 19.6 s, against 7.1 s with this).
const READ_CACHE_MIB: u32 = 64;

/// The document's lists, in its order; each day's part holds one of each.
const LISTS: [&str; 4] = ["traffic", "conversions", "sources", "pages"];

/// The rendered days of one daemon, at most `limit` bytes of them; the least recently used go
/// first.
#[derive(Debug)]
pub struct Rendered {
    limit: usize,
    days: Mutex<Days>,
}

#[derive(Debug, Default)]
struct Days {
    entries: HashMap<Key, Entry>,
    bytes: usize,
    uses: u64,
}

/// What a day's part depends on beyond its cells.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    day: NaiveDate,
    game: Option<String>,
    min_cell_size: u32,
}

#[derive(Debug)]
struct Entry {
    part: Arc<Part>,
    used: u64,
}

/// One day's rows, suppressed and serialised: for each list, its rows' JSON joined by commas.
#[derive(Debug)]
struct Part {
    version: i64,
    lists: [Vec<u8>; 4],
}

impl Part {
    fn bytes(&self) -> usize {
        self.lists.iter().map(Vec::len).sum()
    }
}

/// The document's fields before its lists, as [`super::Document`] names them.
#[derive(Serialize)]
struct Head {
    collector_id: String,
    generated_at: String,
    from: String,
    to: String,
    attribution: Settings,
}

impl Rendered {
    /// As many bytes as `storage.cache_mib`, the writer's page cache.
    pub fn for_config(config: &Config) -> Rendered {
        Rendered::new(usize::try_from(config.storage.cache_mib).unwrap_or(usize::MAX) << 20)
    }

    pub fn new(limit: usize) -> Rendered {
        Rendered {
            limit,
            days: Mutex::default(),
        }
    }

    /// The document of `query`, serialised: [`super::read_document`]'s, from the days already
    /// rendered at their current version and the others read and rendered now.
    pub fn document(
        &self,
        reader: &Reader,
        config: &Config,
        query: &Query,
        now: i64,
    ) -> Result<Vec<u8>, StoreError> {
        self.forget_before(retention_days(config, now).0);
        let (parts, _) = self.parts(reader, config, query, &|| false)?;
        assemble(config, query, now, &parts)
    }

    /// Renders the days of `query` not rendered at their current version, ahead of the reads
    /// that will want them, until `stop` says so; how many days it rendered.
    pub fn prepare(
        &self,
        reader: &Reader,
        config: &Config,
        query: &Query,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<usize, StoreError> {
        Ok(self.parts(reader, config, query, stop)?.1)
    }

    /// The part of each day of `query`, in day order: as rendered before where the day's
    /// version is unchanged, else read and rendered now (while `stop` says no; the days left
    /// are then missing); and how many it rendered.
    fn parts(
        &self,
        reader: &Reader,
        config: &Config,
        query: &Query,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<(Vec<Arc<Part>>, usize), StoreError> {
        let days: Vec<NaiveDate> = query
            .from
            .iter_days()
            .take_while(|day| *day <= query.to)
            .collect();
        let key = |day: NaiveDate| Key {
            day,
            game: query.game.clone(),
            min_cell_size: config.privacy.min_cell_size,
        };
        let min = i64::from(config.privacy.min_cell_size);
        reader.keep_pages(READ_CACHE_MIB)?;
        reader.snapshot(|reader| -> Result<(Vec<Arc<Part>>, usize), StoreError> {
            let versions = reader.day_versions(&query.from_day(), &query.to_day())?;
            let mut parts: BTreeMap<NaiveDate, Arc<Part>> = days
                .iter()
                .filter_map(|&day| Some((day, self.find(&key(day), version_of(&versions, day))?)))
                .collect();
            let missing: Vec<NaiveDate> = days
                .iter()
                .copied()
                .filter(|day| !parts.contains_key(day))
                .collect();
            let mut rendered = 0;
            for (day, part) in render_missing(reader, &versions, query, &missing, min, stop)? {
                self.keep(key(day), part.clone());
                parts.insert(day, part);
                rendered += 1;
            }
            Ok((parts.into_values().collect(), rendered))
        })
    }

    fn find(&self, key: &Key, version: i64) -> Option<Arc<Part>> {
        let mut days = self.days.lock().unwrap_or_else(PoisonError::into_inner);
        days.uses += 1;
        let used = days.uses;
        let entry = days.entries.get_mut(key)?;
        if entry.part.version != version {
            return None;
        }
        entry.used = used;
        Some(entry.part.clone())
    }

    fn keep(&self, key: Key, part: Arc<Part>) {
        let size = part.bytes();
        if size > self.limit {
            return;
        }
        let mut days = self.days.lock().unwrap_or_else(PoisonError::into_inner);
        days.uses += 1;
        let used = days.uses;
        if let Some(old) = days.entries.insert(key, Entry { part, used }) {
            days.bytes -= old.part.bytes();
        }
        days.bytes += size;
        while days.bytes > self.limit {
            let Some(oldest) = days
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.used)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            days.remove(&oldest);
        }
    }

    /// Drops the days before `oldest`: a day that left the retention window leaves the cache.
    fn forget_before(&self, oldest: NaiveDate) {
        let mut days = self.days.lock().unwrap_or_else(PoisonError::into_inner);
        let gone: Vec<Key> = days
            .entries
            .keys()
            .filter(|key| key.day < oldest)
            .cloned()
            .collect();
        for key in gone {
            days.remove(&key);
        }
    }
}

impl Days {
    fn remove(&mut self, key: &Key) {
        if let Some(entry) = self.entries.remove(key) {
            self.bytes -= entry.part.bytes();
        }
    }
}

/// The parts of the `missing` days, in the reader's open snapshot at its `versions`, until
/// `stop` says so.
///
/// Every second day goes to a helper thread on a connection of its own: a launch changes eight
/// days between two reads, and two cores render them in about half the time. The helper reads
/// in a snapshot of its own, a moment later than the read's; a day it rendered at another
/// version than the read's snapshot holds is rendered again on the read's connection, so the
/// document is still one snapshot's.
fn render_missing(
    reader: &Reader,
    versions: &BTreeMap<String, i64>,
    query: &Query,
    missing: &[NaiveDate],
    min: i64,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<Vec<(NaiveDate, Arc<Part>)>, StoreError> {
    let mine: Vec<NaiveDate> = missing.iter().copied().step_by(2).collect();
    let theirs: Vec<NaiveDate> = missing.iter().copied().skip(1).step_by(2).collect();
    let helper = if theirs.is_empty() {
        None
    } else {
        reader
            .another()
            .map_or_else(|err| helper_failed(&err), Some)
    };
    let (own, helped) = std::thread::scope(|scope| {
        let helping = helper.map(|helper| {
            let theirs = &theirs;
            scope.spawn(move || render_apart(&helper, query, theirs, min, stop))
        });
        let own = render_each(reader, versions, query, &mine, min, stop);
        // A helper that failed leaves its days to this thread.
        let helped = match helping.map(|helping| helping.join()) {
            None => Vec::new(),
            Some(Ok(Ok(parts))) => parts,
            Some(Ok(Err(err))) => helper_failed(&err),
            Some(Err(_)) => helper_failed(&"it panicked"),
        };
        (own, helped)
    });
    let mut parts = own?;
    parts.extend(
        helped
            .into_iter()
            .filter(|(day, part)| part.version == version_of(versions, *day)),
    );
    let left: Vec<NaiveDate> = missing
        .iter()
        .copied()
        .filter(|day| !parts.iter().any(|(done, _)| done == day))
        .collect();
    parts.extend(render_each(reader, versions, query, &left, min, stop)?);
    Ok(parts)
}

/// Says why a read renders all its days itself: slower, still the same document.
fn helper_failed<T: Default>(why: &dyn std::fmt::Display) -> T {
    tracing::warn!(error = %why, "the helper thread of an aggregates read could not render its days; the read renders them");
    T::default()
}

/// The parts of `days`, in the reader's open snapshot at its `versions`, until `stop` says so.
fn render_each(
    reader: &Reader,
    versions: &BTreeMap<String, i64>,
    query: &Query,
    days: &[NaiveDate],
    min: i64,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<Vec<(NaiveDate, Arc<Part>)>, StoreError> {
    let mut parts = Vec::with_capacity(days.len());
    for &day in days {
        if stop() {
            break;
        }
        // A day at a time: what a read holds beyond the parts is one day's rows.
        let rows = read_day(reader, &day_text(day), query.game.as_deref())?;
        let version = version_of(versions, day);
        parts.push((day, Arc::new(render(rows, min, version)?)));
    }
    Ok(parts)
}

/// The version of `day` in a snapshot's `versions`; a day never written is at version 0.
fn version_of(versions: &BTreeMap<String, i64>, day: NaiveDate) -> i64 {
    versions.get(&day_text(day)).copied().unwrap_or(0)
}

/// [`render_each`] in a snapshot of the reader's own, at its versions then.
fn render_apart(
    reader: &Reader,
    query: &Query,
    days: &[NaiveDate],
    min: i64,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<Vec<(NaiveDate, Arc<Part>)>, StoreError> {
    reader.keep_pages(READ_CACHE_MIB)?;
    reader.snapshot(|reader| {
        let versions = reader.day_versions(&query.from_day(), &query.to_day())?;
        render_each(reader, &versions, query, days, min, stop)
    })
}

/// One day's part: its rows suppressed as [`super::document`] does, each list serialised.
fn render(rows: Rows, min: i64, version: i64) -> Result<Part, StoreError> {
    Ok(Part {
        version,
        lists: [
            joined(&suppress(rows.traffic, min))?,
            joined(&suppress(rows.conversions, min))?,
            joined(&suppress(rows.sources, min))?,
            joined(&suppress(rows.pages, min))?,
        ],
    })
}

fn joined<R: Serialize>(rows: &[R]) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, row).map_err(unserialisable)?;
    }
    Ok(out)
}

fn unserialisable(err: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("a row that cannot be serialised: {err}"))
}

/// The document: its head, then each list made of the days' parts in day order.
fn assemble(
    config: &Config,
    query: &Query,
    now: i64,
    parts: &[Arc<Part>],
) -> Result<Vec<u8>, StoreError> {
    // The head's fields as the one builder of documents fills them.
    let empty = document(config, query, Rows::default(), None, now);
    let head = Head {
        collector_id: empty.collector_id,
        generated_at: empty.generated_at,
        from: empty.from,
        to: empty.to,
        attribution: empty.attribution,
    };
    let size: usize = parts.iter().map(|part| part.bytes() + LISTS.len()).sum();
    let mut out = Vec::with_capacity(size + 512);
    serde_json::to_writer(&mut out, &head).map_err(unserialisable)?;
    // The head's closing brace gives way to the lists.
    out.pop();
    for (index, name) in LISTS.iter().enumerate() {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":[");
        let mut lists = parts
            .iter()
            .map(|part| &part.lists[index])
            .filter(|list| !list.is_empty());
        if let Some(list) = lists.next() {
            out.extend_from_slice(list);
        }
        for list in lists {
            out.push(b',');
            out.extend_from_slice(list);
        }
        out.push(b']');
    }
    out.push(b'}');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::Campaign;
    use crate::config::SecretHash;
    use crate::rows::{ConversionRow, PageRow, SourceCounts, SourceRow, TrafficRow};

    /// The days with rows: one without conversions, and rows below the cell size.
    const DAYS: [(&str, usize); 3] = [("2026-11-02", 3), ("2026-11-03", 0), ("2026-11-05", 2)];

    /// The rows of `days`, in day order.
    fn rows(days: &[(&str, usize)]) -> Rows {
        let mut rows = Rows::default();
        for &(day, sources) in days {
            for (index, visitors) in [(0, 1), (1, 5), (2, 2), (3, 9)]
                .into_iter()
                .take(sources + 1)
            {
                let campaign = Campaign {
                    source: Some(format!("source{index}")),
                    ..Campaign::default()
                };
                rows.traffic.push(TrafficRow {
                    day: day.into(),
                    game: Some("g".into()),
                    campaign: campaign.clone(),
                    referrer_host: None,
                    device: "pc".into(),
                    country: None,
                    visits: visitors * 2,
                    visitors,
                    consented_visits: visitors,
                });
                let counts = SourceCounts {
                    visits: visitors * 2,
                    visitors,
                    players: visitors / 2,
                };
                rows.sources.push(SourceRow {
                    day: day.into(),
                    game: Some("g".into()),
                    referrer_host: Some(format!("ref{index}.example")),
                    counts,
                });
                rows.pages.push(PageRow {
                    day: day.into(),
                    game: Some("g".into()),
                    page: Some(format!("g.example/p{index}")),
                    counts,
                });
                if day != "2026-11-03" {
                    rows.conversions.push(ConversionRow {
                        day: day.into(),
                        game: "g".into(),
                        campaign,
                        platform: Some("windows".into()),
                        storefront: None,
                        country: Some("DE".into()),
                        event: "first_game_open".into(),
                        events: visitors + 1,
                        users: visitors,
                        returned_d1: visitors / 3,
                        returned_d7: visitors / 2,
                    });
                }
            }
        }
        rows
    }

    /// A document put together from its days' parts is, byte for byte, the one built and
    /// serialised whole, with or without suppression, over days with and without rows.
    #[test]
    fn a_document_of_parts_is_the_whole_document() {
        let dir = std::path::Path::new("/nonexistent");
        let mut config = Config::zero_config(dir, SecretHash::of(b"demo"), SecretHash::of(b"x"));
        let now = 1_764_979_200; // only the head's generated_at
        let query = Query {
            from: NaiveDate::from_ymd_opt(2026, 11, 1).expect("a day"),
            to: NaiveDate::from_ymd_opt(2026, 11, 6).expect("a day"),
            game: None,
        };
        for min in [1, 3] {
            config.privacy.min_cell_size = min;
            let whole = document(&config, &query, rows(&DAYS), None, now);
            let parts: Vec<Arc<Part>> = query
                .from
                .iter_days()
                .take_while(|day| *day <= query.to)
                .map(|day| {
                    let of_day: Vec<_> =
                        DAYS.into_iter().filter(|d| d.0 == day_text(day)).collect();
                    Arc::new(render(rows(&of_day), i64::from(min), 1).expect("a part"))
                })
                .collect();
            let assembled = assemble(&config, &query, now, &parts).expect("a document");
            assert_eq!(
                String::from_utf8(assembled).expect("UTF-8"),
                serde_json::to_string(&whole).expect("JSON"),
                "min_cell_size {min}"
            );
        }
    }

    /// The cache keeps at most its limit, the least recently used leaving first, and a part
    /// is found only at the version it was rendered at.
    #[test]
    fn the_cache_keeps_its_limit_and_finds_only_current_parts() {
        let rendered = Rendered::new(25);
        let key = |day: u32| Key {
            day: NaiveDate::from_ymd_opt(2026, 11, day).expect("a day"),
            game: None,
            min_cell_size: 1,
        };
        let part = |version: i64| {
            Arc::new(Part {
                version,
                lists: [vec![b'x'; 10], Vec::new(), Vec::new(), Vec::new()],
            })
        };
        rendered.keep(key(1), part(1));
        rendered.keep(key(2), part(1));
        assert!(rendered.find(&key(1), 1).is_some());
        assert!(rendered.find(&key(1), 2).is_none(), "a newer version");
        rendered.keep(key(3), part(1));
        assert!(
            rendered.find(&key(2), 1).is_none(),
            "the least recently used left"
        );
        assert!(rendered.find(&key(1), 1).is_some());
        assert!(rendered.find(&key(3), 1).is_some());
        rendered.forget_before(key(3).day);
        assert!(rendered.find(&key(1), 1).is_none(), "before the window");
        assert!(rendered.find(&key(3), 1).is_some());
        let days = rendered.days.lock().expect("the lock");
        assert_eq!(days.bytes, 10);
    }
}
