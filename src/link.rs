//! Linking: which visit brought a game event, and which pseudonym a returning player keeps.
//!
//! The rules of attribution, as plain code over [`Records`], the few questions the store
//! answers about what is on file. The store's writer calls them inside the transaction that
//! stores the event, so a rule sees exactly the visits that were there when the event arrived.
//! Changing the attribution model means changing this file, never SQL.

use crate::campaign::{Campaign, DIRECT};
use crate::clock::DAY_SECS;
use crate::config::{AttributionConfig, AttributionModel};
use crate::privacy::Pseudonym;

/// How a game event finds the visit that brought it (docs/api.md, "Linking game opens to
/// visits").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkRules {
    /// How far before the event a visit may be.
    pub lookback_secs: i64,
    /// Earliest matching visit (first touch) or latest (last touch).
    pub model: AttributionModel,
    /// Only visits whose consent flag is set are linked.
    pub require_consent: bool,
}

impl LinkRules {
    pub fn new(config: &AttributionConfig) -> LinkRules {
        LinkRules {
            lookback_secs: i64::from(config.lookback_days) * DAY_SECS,
            model: config.model,
            require_consent: config.require_consent,
        }
    }

    /// The arrival times (inclusive) a visit must lie between to have brought an event linked
    /// at `link_time`: the lookback window before it.
    pub fn window(&self, link_time: i64) -> (i64, i64) {
        (link_time - self.lookback_secs, link_time)
    }

    fn first_touch(&self) -> bool {
        self.model == AttributionModel::FirstTouch
    }
}

/// The moment an event links from: the earlier of its own time and its arrival. Linking looks
/// only at visits received before both, so recomputing later finds exactly the visits that
/// were there when it arrived.
pub(crate) fn link_time(event_time: i64, received_at: i64) -> i64 {
    event_time.min(received_at)
}

/// Arrival times (unix seconds) that every visit on file under one salt lies between. It may
/// be wider than the visits still there, never narrower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub first: i64,
    pub last: i64,
}

impl Span {
    /// Any time at all: what is known before the store has read what is on file.
    pub(crate) const ANY: Span = Span {
        first: i64::MIN,
        last: i64::MAX,
    };
}

/// The visits one [`Records::visit`] call considers. The store reads the visits of `ip`
/// between `from` and `to` in the order of [`VisitQuery::prefer`] and answers the first that
/// [`VisitQuery::admits`]: the rules stay here, the lookup stays an index range.
#[derive(Debug, Clone, Copy)]
pub(crate) struct VisitQuery<'a> {
    pub ip: &'a Pseudonym,
    /// Arrival times, inclusive.
    pub from: i64,
    pub to: i64,
    /// Visits for this game or for no game.
    pub game: &'a str,
    pub consented_only: bool,
    /// The earliest matching visit, else the latest.
    pub earliest: bool,
}

impl VisitQuery<'_> {
    /// Whether a visit whose page named `game` (none: a landing page for any game), with this
    /// consent flag, may have brought the event.
    pub(crate) fn admits(&self, game: Option<&str>, consent: bool) -> bool {
        for_game(game, self.game) && (consent || !self.consented_only)
    }

    /// The one of two admitted visits linking takes: the earlier (first touch) or the later
    /// (last touch) arrival, and on the same second the lower (or the higher) id, so the
    /// choice never depends on the order the store found them in.
    pub(crate) fn prefer(&self, a: Visit, b: Visit) -> Visit {
        let (a_key, b_key) = (a.rank(), b.rank());
        let a_first = if self.earliest {
            a_key <= b_key
        } else {
            a_key >= b_key
        };
        if a_first { a } else { b }
    }
}

/// Whether a visit whose page named `visit_game` (none: any game) counts for events of `game`.
pub(crate) fn for_game(visit_game: Option<&str>, game: &str) -> bool {
    visit_game.is_none_or(|visit_game| visit_game == game)
}

/// A stored visit, as linking sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Visit {
    pub id: i64,
    pub received_at: i64,
    pub campaign: Campaign,
    pub referrer_host: Option<String>,
    /// The landing page, host and path as minimised at ingest.
    pub page_host: String,
    pub page_path: String,
}

impl Visit {
    /// The order [`VisitQuery::prefer`] ranks visits in, ascending: arrival, then id.
    pub(crate) fn rank(&self) -> (i64, i64) {
        (self.received_at, self.id)
    }
}

/// What linking asks the store about the records on file.
pub(crate) trait Records {
    type Error;

    /// `None` if certainly no visit of `ip` arrived between `from` and `to`; otherwise a span
    /// that holds every such visit. Answered from memory: it only orders and prunes lookups.
    fn visit_span(&self, ip: &Pseudonym, from: i64, to: i64) -> Option<Span>;

    /// The one visit `query` asks for, if there is one.
    fn visit(&self, query: &VisitQuery<'_>) -> Result<Option<Visit>, Self::Error>;

    /// Whether any event of this user pseudonym is on file.
    fn has_user(&self, user: &Pseudonym) -> Result<bool, Self::Error>;
}

/// The campaign an event is attributed to, and the visit it came from (`None`: direct).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Attribution {
    pub visit_id: Option<i64>,
    /// The visit's UTM parameters, its source falling back to the referrer's host;
    /// `(direct)` without a visit.
    pub campaign: Campaign,
    /// The visit's referrer host and landing page; `None` without a visit.
    pub landing: Option<Landing>,
}

/// Where a linked visit came from and landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Landing {
    pub referrer_host: Option<String>,
    pub page_host: String,
    pub page_path: String,
}

impl Attribution {
    fn direct() -> Attribution {
        Attribution {
            visit_id: None,
            campaign: Campaign {
                source: Some(DIRECT.to_string()),
                ..Campaign::default()
            },
            landing: None,
        }
    }

    fn of(visit: Visit) -> Attribution {
        let mut campaign = visit.campaign;
        if campaign.source.is_none() {
            campaign.source = visit.referrer_host.clone();
        }
        if campaign.source.is_none() {
            campaign.source = Some(DIRECT.to_string());
        }
        Attribution {
            visit_id: Some(visit.id),
            campaign,
            landing: Some(Landing {
                referrer_host: visit.referrer_host,
                page_host: visit.page_host,
                page_path: visit.page_path,
            }),
        }
    }
}

/// The visit that brought an event: same IP pseudonym under any live salt (`ips`), same game
/// or no game, inside the lookback window before `link_time`, consented if required; the
/// latest (last touch) or earliest (first touch) of them.
pub(crate) fn attribute<R: Records>(
    records: &R,
    ips: &[Pseudonym],
    game: &str,
    link_time: i64,
    rules: &LinkRules,
) -> Result<Attribution, R::Error> {
    let first_touch = rules.first_touch();
    let (from, to) = rules.window(link_time);
    let mut candidates: Vec<(Span, &Pseudonym)> = ips
        .iter()
        .filter_map(|ip| Some((records.visit_span(ip, from, to)?, ip)))
        .collect();
    // The salt that may hold the best visit first: once a visit is found, the salts whose
    // visits all came later (first touch) or earlier (last touch) cannot beat it.
    if first_touch {
        candidates.sort_by_key(|(span, _)| span.first);
    } else {
        candidates.sort_by_key(|(span, _)| std::cmp::Reverse(span.last));
    }
    let mut best: Option<Visit> = None;
    for (span, ip) in candidates {
        if let Some(best) = &best {
            let beaten = if first_touch {
                span.first > best.received_at
            } else {
                span.last < best.received_at
            };
            if beaten {
                break;
            }
        }
        let query = VisitQuery {
            ip,
            from,
            to,
            game,
            consented_only: rules.require_consent,
            earliest: first_touch,
        };
        let Some(found) = records.visit(&query)? else {
            continue;
        };
        best = Some(match best {
            None => found,
            Some(best) => query.prefer(best, found),
        });
    }
    Ok(best.map_or_else(Attribution::direct, Attribution::of))
}

/// The pseudonym a returning player keeps: the oldest of their candidates (one per live salt,
/// newest salt first) that already has a record, so one player keeps one pseudonym while any
/// of their records is retained (invariant 4). `None`: a player never seen.
pub(crate) fn returning_user<R: Records>(
    records: &R,
    candidates: &[Pseudonym],
) -> Result<Option<Pseudonym>, R::Error> {
    for candidate in candidates.iter().rev() {
        if records.has_user(candidate)? {
            return Ok(Some(*candidate));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records held in a list, answering as the store does.
    #[derive(Default)]
    struct Listed {
        visits: Vec<(Pseudonym, Option<&'static str>, bool, Visit)>,
        users: Vec<Pseudonym>,
    }

    impl Records for Listed {
        type Error = std::convert::Infallible;

        fn visit_span(&self, ip: &Pseudonym, _from: i64, _to: i64) -> Option<Span> {
            let times = self
                .visits
                .iter()
                .filter(|(on, ..)| on == ip)
                .map(|(.., visit)| visit.received_at);
            let (first, last) = times.fold(None, |span: Option<(i64, i64)>, at| {
                Some(span.map_or((at, at), |(f, l)| (f.min(at), l.max(at))))
            })?;
            Some(Span { first, last })
        }

        fn visit(&self, query: &VisitQuery<'_>) -> Result<Option<Visit>, Self::Error> {
            Ok(self
                .visits
                .iter()
                .filter(|(ip, game, consent, visit)| {
                    ip == query.ip
                        && (query.from..=query.to).contains(&visit.received_at)
                        && query.admits(*game, *consent)
                })
                .map(|(.., visit)| visit.clone())
                .reduce(|a, b| query.prefer(a, b)))
        }

        fn has_user(&self, user: &Pseudonym) -> Result<bool, Self::Error> {
            Ok(self.users.contains(user))
        }
    }

    fn ip(salt_id: i64) -> Pseudonym {
        Pseudonym {
            salt_id,
            hash: [7; 16],
        }
    }

    fn visit(id: i64, received_at: i64, source: Option<&str>, referrer: Option<&str>) -> Visit {
        Visit {
            id,
            received_at,
            campaign: Campaign {
                source: source.map(str::to_string),
                medium: Some("m".into()),
                ..Campaign::default()
            },
            referrer_host: referrer.map(str::to_string),
            page_host: "mygame.example".into(),
            page_path: "/".into(),
        }
    }

    fn rules(model: AttributionModel, require_consent: bool) -> LinkRules {
        LinkRules {
            lookback_secs: 100,
            model,
            require_consent,
        }
    }

    fn source(attribution: &Attribution) -> &str {
        attribution.campaign.source.as_deref().unwrap_or_default()
    }

    #[test]
    fn last_and_first_touch_pick_across_salts_inside_the_window() {
        let records = Listed {
            visits: vec![
                (ip(1), None, true, visit(1, 850, Some("too-old"), None)),
                (ip(1), Some("g"), true, visit(2, 920, Some("first"), None)),
                (ip(2), None, true, visit(3, 990, None, Some("ref.example"))),
                (
                    ip(2),
                    Some("other"),
                    true,
                    visit(4, 995, Some("other-game"), None),
                ),
                (ip(2), None, true, visit(5, 1001, Some("after"), None)),
            ],
            users: vec![],
        };
        let ips = [ip(2), ip(1)];
        let last = attribute(
            &records,
            &ips,
            "g",
            1000,
            &rules(AttributionModel::LastTouch, false),
        );
        let last = last.expect("infallible");
        assert_eq!((last.visit_id, source(&last)), (Some(3), "ref.example"));
        assert_eq!(last.campaign.medium.as_deref(), Some("m"));
        let first = attribute(
            &records,
            &ips,
            "g",
            1000,
            &rules(AttributionModel::FirstTouch, false),
        );
        let first = first.expect("infallible");
        assert_eq!((first.visit_id, source(&first)), (Some(2), "first"));
    }

    #[test]
    fn no_visit_or_no_consent_is_direct() {
        let records = Listed {
            visits: vec![(ip(1), None, false, visit(1, 990, Some("ads"), None))],
            users: vec![],
        };
        let direct = attribute(
            &records,
            &[ip(1)],
            "g",
            1000,
            &rules(AttributionModel::LastTouch, true),
        );
        let direct = direct.expect("infallible");
        assert_eq!(direct, Attribution::direct());
        assert_eq!(source(&direct), DIRECT);
        assert_eq!(direct.campaign.medium, None);
        let linked = attribute(
            &records,
            &[ip(1)],
            "g",
            1000,
            &rules(AttributionModel::LastTouch, false),
        );
        assert_eq!(linked.expect("infallible").visit_id, Some(1));
    }

    #[test]
    fn a_returning_player_keeps_the_oldest_pseudonym_on_file() {
        let records = Listed {
            visits: vec![],
            users: vec![ip(2), ip(3)],
        };
        // Newest salt first: 4, 3, 2, 1.
        let candidates = [ip(4), ip(3), ip(2), ip(1)];
        assert_eq!(returning_user(&records, &candidates), Ok(Some(ip(2))));
        assert_eq!(returning_user(&records, &[ip(5)]), Ok(None));
        assert_eq!(link_time(10, 20), 10);
        assert_eq!(link_time(30, 20), 20);
    }
}
