//! Time: the daemon's one clock read and the UTC calendar days that aggregates are cut by.
//! Everything else takes `now` as a parameter, so tests choose the time.

use chrono::{DateTime, NaiveDate, Utc};

pub const DAY_SECS: i64 = 86_400;

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    Utc::now().timestamp()
}

/// The UTC calendar day of a Unix time, `YYYY-MM-DD`.
pub fn utc_day(unix: i64) -> String {
    match DateTime::<Utc>::from_timestamp(unix, 0) {
        // NaiveDate's Display is YYYY-MM-DD, without format-string parsing on the ingest path.
        Some(time) => time.date_naive().to_string(),
        // Outside chrono's range (year ±262,000): not a time any record can have.
        None => "0000-00-00".into(),
    }
}

/// RFC 3339 with seconds, `2026-11-22T10:00:00Z`.
pub(crate) fn rfc3339(unix: i64) -> String {
    DateTime::<Utc>::from_timestamp(unix, 0)
        .map(|time| time.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// A day as the store and the API write it, `YYYY-MM-DD`: what [`parse_day`] reads.
pub(crate) fn day_text(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

/// Parses `YYYY-MM-DD`.
pub fn parse_day(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").ok()
}

/// The Unix time at which a day starts (00:00:00 UTC).
pub(crate) fn day_start(day: NaiveDate) -> i64 {
    day.and_hms_opt(0, 0, 0)
        .map(|time| time.and_utc().timestamp())
        .unwrap_or(0)
}

/// The UTC day of a Unix time, as a date.
pub fn day_of(unix: i64) -> NaiveDate {
    DateTime::<Utc>::from_timestamp(unix, 0)
        .map(|time| time.date_naive())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(1_795_305_599), "2026-11-21");
        assert_eq!(utc_day(1_795_305_600), "2026-11-22");
        assert_eq!(rfc3339(1_795_341_600), "2026-11-22T10:00:00Z");
        let day = parse_day("2026-11-22").expect("date");
        assert_eq!(day_start(day), 1_795_305_600);
        assert_eq!(day_of(1_795_341_600), day);
        assert_eq!(parse_day("2026-13-01"), None);
        assert_eq!(parse_day("yesterday"), None);
    }
}
