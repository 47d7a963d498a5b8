//! Civil time in UTC: the instants and months a price book and a billing
//! period are written in, as milliseconds since the epoch.

use jiff::civil::{self, DateTime};
use jiff::fmt::strtime;
use jiff::SignedDuration;

use crate::Ms;

/// The Unix epoch, as a civil datetime in UTC.
const EPOCH: DateTime = civil::date(1970, 1, 1).to_datetime(civil::Time::midnight());

/// Whether `s` has exactly the shape of `pattern`, where `9` stands for one
/// ASCII digit and any other character for itself. jiff's `strptime` is
/// lenient (it skips blanks, takes a sign or fewer digits); checking the
/// shape first keeps the accepted forms exactly the documented ones.
fn has_shape(s: &str, pattern: &str) -> bool {
    s.len() == pattern.len()
        && s.bytes().zip(pattern.bytes()).all(|(c, p)| match p {
            b'9' => c.is_ascii_digit(),
            _ => c == p,
        })
}

/// A civil datetime in UTC → milliseconds since the epoch.
fn ms_of(dt: DateTime) -> Ms {
    // Civil datetimes span years -9999..=9999, far inside i64 milliseconds.
    dt.duration_since(EPOCH).as_millis() as Ms
}

/// Milliseconds since the epoch → civil datetime in UTC (clamped to jiff's
/// years -9999..=9999; every time [`parse_time`] reads is inside).
fn civil_of(t: Ms) -> DateTime {
    EPOCH.saturating_add(SignedDuration::from_millis(t))
}

/// `2026-11-15` or `2026-11-15T08:00:00Z` → milliseconds (UTC).
pub fn parse_time(s: &str) -> Result<Ms, String> {
    let bad = |why: &dyn std::fmt::Display| {
        format!("{s:?}: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC){why}")
    };
    let parsed = if has_shape(s, "9999-99-99") {
        civil::Date::strptime("%Y-%m-%d", s).map(|d| d.to_datetime(civil::Time::midnight()))
    } else if has_shape(s, "9999-99-99T99:99:99Z") && !s.ends_with(":60Z") {
        // (jiff reads a leap second as :59; it is refused, as ever.)
        DateTime::strptime("%Y-%m-%dT%H:%M:%SZ", s)
    } else {
        return Err(bad(&""));
    };
    parsed.map(ms_of).map_err(|e| bad(&format_args!(": {e}")))
}

/// `2026-11` → [start, end) of that month, UTC.
pub fn parse_month(s: &str) -> Result<(Ms, Ms), String> {
    let bad = || format!("period {s:?}: expected YYYY-MM");
    if !has_shape(s, "9999-99") {
        return Err(bad());
    }
    let tm = strtime::parse("%Y-%m", s).map_err(|e| format!("{}: {e}", bad()))?;
    let (Some(y), Some(m)) = (tm.year(), tm.month()) else {
        return Err(bad());
    };
    if !(1970..=9999).contains(&y) {
        return Err(format!("{}: years 1970 to 9999", bad()));
    }
    let first = civil::Date::new(y, m, 1).map_err(|e| format!("{}: {e}", bad()))?;
    let start = ms_of(first.to_datetime(civil::Time::midnight()));
    // The end is computed from the month's length, not as the next month's
    // first day, which for 9999-12 is past jiff's last year.
    Ok((start, start + i64::from(first.days_in_month()) * 86_400_000))
}

/// The month (`YYYY-MM`, UTC) that contains `t`.
pub fn month_of(t: Ms) -> String {
    civil_of(t).strftime("%Y-%m").to_string()
}

/// `t` as `YYYY-MM-DDTHH:MM:SSZ` (UTC, whole seconds), the form [`parse_time`] reads.
pub fn format_time(t: Ms) -> String {
    civil_of(t).strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_months() {
        assert_eq!(parse_time("1970-01-01"), Ok(0));
        assert_eq!(parse_time("2026-11-29T00:00:00Z"), Ok(1_795_910_400_000));
        assert_eq!(
            parse_month("2026-11"),
            Ok((1_793_491_200_000, 1_796_083_200_000))
        );
        assert_eq!(
            parse_month("2026-12").unwrap().1,
            parse_time("2027-01-01").unwrap()
        );
        assert!(parse_time("2026-02-30").is_err());
        assert!(parse_time("2026-11-29T25:00:00Z").is_err());
        assert!(parse_month("2026-13").is_err());
        assert!(parse_month("2026-1").is_err());
        for m in ["1970-01", "2024-02", "2026-11", "2026-12", "2100-03"] {
            let (a, b) = parse_month(m).unwrap();
            assert_eq!(month_of(a), m);
            assert_eq!(month_of(b - 1), m);
        }
        for t in [
            "1970-01-01T00:00:00Z",
            "2024-02-29T23:59:59Z",
            "2026-11-29T12:34:56Z",
        ] {
            assert_eq!(format_time(parse_time(t).unwrap()), t);
        }
        assert!(parse_month("26-11").is_err());
    }

    #[test]
    fn times_keep_their_exact_forms_and_range() {
        for bad in [
            "2026-11-5",
            " 2026-11-05",
            "2026-11-05 ",
            "+026-11-05",
            "2026-11-05T8:00:00Z",
            "2026-11-05T08:00:00",
            "2026-11-05T08:00:00+00:00",
            "2026-11-05T08:00:00.5Z",
            "2026-11-05T23:59:60Z",
            "2026-11-05T24:00:00Z",
            "2026-00-05",
            "2025-02-29",
            "",
        ] {
            let e = parse_time(bad).unwrap_err();
            assert!(e.contains("expected YYYY-MM-DD"), "{bad:?}: {e}");
        }
        assert_eq!(parse_time("2024-02-29T23:59:59Z").unwrap() % 1000, 0);
        assert_eq!(parse_time("1969-12-31T23:59:59Z"), Ok(-1000));
        assert_eq!(format_time(-1), "1969-12-31T23:59:59Z");
        assert_eq!(format_time(1_500), "1970-01-01T00:00:01Z");
        assert_eq!(month_of(-1), "1969-12");
        assert_eq!(
            parse_time("9999-12-31T23:59:59Z").unwrap() + 1000,
            parse_month("9999-12").unwrap().1
        );
        for bad in ["1969-12", "2026-00", "2026-1 ", "2026/11", "+2026-11"] {
            let e = parse_month(bad).unwrap_err();
            assert!(
                e.starts_with(&format!("period {bad:?}: expected YYYY-MM")),
                "{e}"
            );
        }
    }
}
