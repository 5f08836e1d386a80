//! The timestamp of a log line, `2026-11-21T15:46:47.389082Z` (RFC 3339, UTC, microseconds) as
//! tracing-subscriber's own `SystemTime` writes it, but with the date and time of day formatted
//! once per second per thread instead of once per line: every call writes an access line, and
//! converting the clock to a calendar date on each one was ~2,300 of the ~120,000 instructions
//! a GetProvider call costs (issue 7). tracing-subscriber has no cached timer and the `time`
//! crate none either; the cache is the only hand-written part, the calendar is `time`'s.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// The log lines' timer.
#[derive(Clone, Copy, Debug, Default)]
pub struct CachedUtc;

/// The second last formatted on this thread, and its `YYYY-MM-DDTHH:MM:SS`.
struct Second {
    unix: u64,
    text: String,
}

thread_local! {
    static SECOND: RefCell<Second> = const {
        RefCell::new(Second { unix: u64::MAX, text: String::new() })
    };
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix second (UTC).
fn date_time(unix: u64) -> String {
    let mut text = String::with_capacity(19);
    match i64::try_from(unix)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
    {
        Some(t) => {
            let _ = write!(
                text,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
        }
        None => text.push_str("9999-12-31T23:59:59"),
    }
    text
}

/// Writes `at` as the line's timestamp.
fn write_at(w: &mut impl fmt::Write, at: SystemTime) -> fmt::Result {
    // A clock before 1970 is written as 1970: logs do not fail over it.
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let unix = since.as_secs();
    SECOND.with(|second| {
        let mut second = second.borrow_mut();
        if second.unix != unix {
            second.text = date_time(unix);
            second.unix = unix;
        }
        w.write_str(&second.text)?;
        write!(w, ".{:06}Z", since.subsec_micros())
    })
}

impl FormatTime for CachedUtc {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        write_at(w, SystemTime::now())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn text(at: SystemTime) -> String {
        let mut s = String::new();
        write_at(&mut s, at).unwrap();
        s
    }

    #[test]
    fn writes_rfc3339_utc_with_microseconds() {
        let at = UNIX_EPOCH + Duration::new(1_795_276_007, 389_082_123);
        assert_eq!(text(at), "2026-11-21T15:46:47.389082Z");
        assert_eq!(text(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        // A leap day, and the cache moving on to the next second.
        let leap = UNIX_EPOCH + Duration::new(1_709_251_199, 999_999_000);
        assert_eq!(text(leap), "2024-02-29T23:59:59.999999Z");
        assert_eq!(
            text(leap + Duration::from_micros(1)),
            "2024-03-01T00:00:00.000000Z"
        );
        // Back to an earlier second: not the cached one.
        assert_eq!(text(at), "2026-11-21T15:46:47.389082Z");
    }

    #[test]
    fn agrees_with_rfc3339_formatting_of_the_same_instant() {
        let now = SystemTime::now();
        let expected = time::OffsetDateTime::from(now)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        // `time` writes as many fraction digits as needed; compare the whole seconds and
        // the microseconds.
        let ours = text(now);
        assert_eq!(ours[..19], expected[..19]);
        let micros = now.duration_since(UNIX_EPOCH).unwrap().subsec_micros();
        assert_eq!(ours[19..], format!(".{micros:06}Z"));
    }
}
