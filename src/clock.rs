//! Time: where "now" comes from, and the shop's local time format `YYYY-MM-DD HH:MM:SS`.

use chrono::{
    DateTime, Datelike as _, Days, LocalResult, NaiveDateTime, TimeZone as _, Timelike as _,
};
use chrono_tz::Tz;

/// Seconds since the Unix epoch, UTC. Rendering in the shop's time zone is the edge's job.
pub type Timestamp = i64;

/// The source of "now". Tests fix it so that golden responses are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    System,
    Fixed(Timestamp),
}

impl Clock {
    pub fn now(&self) -> Timestamp {
        match self {
            Clock::System => chrono::Utc::now().timestamp(),
            Clock::Fixed(at) => *at,
        }
    }
}

/// 800–1200, at random: multiplies a retry's wait to spread the retries of many jobs by ±20%.
pub fn jitter_permille() -> i64 {
    let mut bytes = [0u8; 2];
    let random = getrandom::fill(&mut bytes)
        .map(|()| u16::from_le_bytes(bytes))
        .unwrap_or(0);
    800 + i64::from(random % 401)
}

/// Milliseconds since the epoch by the system clock: the outbox schedules by it even when the
/// service's clock is fixed (tests), since retries must really wait.
pub fn system_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

const LOCAL_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// Reads `YYYY-MM-DD HH:MM:SS` as a local time in `timezone`. In the hour that a DST change
/// repeats, the earlier instant is taken; a time that the change skips is rejected.
pub fn parse_local_datetime(text: &str, timezone: Tz) -> Option<Timestamp> {
    let naive = NaiveDateTime::parse_from_str(text, LOCAL_FORMAT).ok()?;
    match timezone.from_local_datetime(&naive) {
        LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => Some(at.timestamp()),
        LocalResult::None => None,
    }
}

/// Writes a timestamp as `YYYY-MM-DD HH:MM:SS` in `timezone`.
pub fn format_local_datetime(at: Timestamp, timezone: Tz) -> String {
    // Written field by field: chrono's `format` interprets the pattern on every call, which
    // showed in the profile of a status read.
    match DateTime::from_timestamp(at, 0) {
        Some(utc) => {
            let local = utc.with_timezone(&timezone);
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                local.year(),
                local.month(),
                local.day(),
                local.hour(),
                local.minute(),
                local.second()
            )
        }
        None => String::new(),
    }
}

/// The local dates `YYYYMMDD` of the day before, the day of, and the day after `at`.
pub fn neighbouring_local_dates(at: Timestamp, timezone: Tz) -> Vec<String> {
    let Some(utc) = DateTime::from_timestamp(at, 0) else {
        return Vec::new();
    };
    let today = utc.with_timezone(&timezone).date_naive();
    [
        today.checked_sub_days(Days::new(1)),
        Some(today),
        today.checked_add_days(Days::new(1)),
    ]
    .into_iter()
    .flatten()
    .map(|day| day.format("%Y%m%d").to_string())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_times_round_trip_in_warsaw() {
        let at = parse_local_datetime("2026-11-20 10:00:00", Tz::Europe__Warsaw).unwrap();
        assert_eq!(at, 1_795_165_200); // 09:00 UTC
        assert_eq!(
            format_local_datetime(at, Tz::Europe__Warsaw),
            "2026-11-20 10:00:00"
        );
        // Summer time, single-digit fields, and the last second of a year.
        for text in [
            "2026-07-01 00:05:09",
            "2026-12-31 23:59:59",
            "1999-01-02 03:04:05",
        ] {
            let at = parse_local_datetime(text, Tz::Europe__Warsaw).unwrap();
            assert_eq!(format_local_datetime(at, Tz::Europe__Warsaw), text);
        }
        assert_eq!(format_local_datetime(0, Tz::UTC), "1970-01-01 00:00:00");
        assert!(parse_local_datetime("2026-03-29 02:30:00", Tz::Europe__Warsaw).is_none());
        assert!(parse_local_datetime("2026-11-20T10:00:00", Tz::Europe__Warsaw).is_none());
    }

    #[test]
    fn neighbouring_days_follow_the_local_calendar() {
        // 23:30 UTC on 19 Nov is already 20 Nov in Warsaw.
        let at = parse_local_datetime("2026-11-20 00:30:00", Tz::Europe__Warsaw).unwrap();
        assert_eq!(
            neighbouring_local_dates(at, Tz::Europe__Warsaw),
            ["20261119", "20261120", "20261121"]
        );
    }
}
