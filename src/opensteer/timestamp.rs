//! A log entry's timestamp (SPEC §5): the first of `ts`, `timestamp`,
//! `time`, `createdAt` that is there, as RFC 3339 text or a unix time in
//! seconds or milliseconds, read as unix microseconds.

use serde_json::value::RawValue;

/// The keys that may hold an entry's timestamp, in order of preference.
pub const TIMESTAMP_KEYS: [&str; 4] = ["ts", "timestamp", "time", "createdAt"];

/// A unix time below this is in seconds, one at or above it in
/// milliseconds: 10^11 seconds is the year 5138, and 10^11 milliseconds is
/// March 1973, so no plausible log time is read in the wrong unit.
pub const SECONDS_BELOW: f64 = 1e11;

/// The timestamp a value stands for, in unix microseconds: a JSON string
/// in RFC 3339 form (`2026-01-01T00:00:00.123Z`, any offset, `t`/`z`/a
/// space accepted, fraction to the microsecond), or a JSON number, in
/// seconds below [`SECONDS_BELOW`] and milliseconds from there (fractions
/// kept to the microsecond). Anything else is no timestamp.
pub fn timestamp_us(value: &RawValue) -> Option<i64> {
    let text = value.get();
    match text.as_bytes().first()? {
        b'"' => rfc3339_us(&serde_json::from_str::<String>(text).ok()?),
        b'-' | b'0'..=b'9' => unix_us(text),
        _ => None,
    }
}

/// A JSON number's text as a unix time, in microseconds.
fn unix_us(text: &str) -> Option<i64> {
    if let Ok(n) = text.parse::<i64>() {
        let per_unit = if (n as f64).abs() < SECONDS_BELOW {
            1_000_000
        } else {
            1_000
        };
        return n.checked_mul(per_unit);
    }
    let x: f64 = text.parse().ok()?;
    let us = if x.abs() < SECONDS_BELOW {
        x * 1e6
    } else {
        x * 1e3
    };
    // i64 holds ±9.2e18 µs; f64 casts saturate, so refuse what does not fit.
    (us.is_finite() && us.abs() < 9e18).then(|| us.round() as i64)
}

/// RFC 3339 (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`) in unix microseconds.
pub fn rfc3339_us(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        digits.iter().try_fold(0i64, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    let sep = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        // 60: a leap second.
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if sep(i, b".") {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 6 {
                micros = micros * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..6 {
            micros *= 10;
        }
    }
    let offset_secs = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && sep(i + 3, b":") => {
            let (h, m) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            let secs = h * 3600 + m * 60;
            if *sign == b'+' {
                secs
            } else {
                -secs
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(secs * 1_000_000 + micros)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar
/// (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn ts(json: &str) -> Option<i64> {
        timestamp_us(&RawValue::from_string(json.to_owned()).unwrap())
    }

    /// 2026-01-01T00:00:00Z in microseconds.
    const NEW_YEAR_US: i64 = 1_767_225_600_000_000;

    #[test]
    fn every_form_of_one_instant_reads_the_same() {
        let cases = [
            r#""2026-01-01T00:00:00Z""#,
            r#""2026-01-01t00:00:00z""#,
            r#""2026-01-01 00:00:00Z""#,
            r#""2026-01-01T02:00:00+02:00""#,
            r#""2025-12-31T19:30:00-04:30""#,
            r#""2026-01-01T00:00:00.000000000Z""#,
            "1767225600",
            "1767225600000",
            "1767225600.0",
            "1.7672256e9",
            "1767225600000.0",
        ];
        for json in cases {
            assert_eq!(ts(json), Some(NEW_YEAR_US), "{json}");
        }
    }

    #[test]
    fn fractions_are_kept_to_the_microsecond() {
        assert_eq!(
            ts(r#""2026-01-01T00:00:00.5Z""#),
            Some(NEW_YEAR_US + 500_000)
        );
        assert_eq!(
            ts(r#""2026-01-01T00:00:00.1234567Z""#),
            Some(NEW_YEAR_US + 123_456)
        );
        assert_eq!(ts("1767225600.25"), Some(NEW_YEAR_US + 250_000));
        assert_eq!(ts("1767225600123.5"), Some(NEW_YEAR_US + 123_500));
    }

    #[test]
    fn seconds_and_milliseconds_are_told_apart_at_ten_to_the_eleventh() {
        assert_eq!(ts("99999999999"), Some(99_999_999_999 * 1_000_000));
        assert_eq!(ts("100000000000"), Some(100_000_000_000 * 1_000));
        assert_eq!(ts("0"), Some(0));
        assert_eq!(ts("-86400"), Some(-86_400_000_000));
    }

    #[test]
    fn what_is_not_a_timestamp_is_none() {
        for json in [
            r#""yesterday""#,
            r#""2026-01-01""#,
            r#""2026-01-01T00:00:00""#,
            r#""2026-13-01T00:00:00Z""#,
            r#""2026-02-29T00:00:00Z""#,
            r#""2026-01-01T24:00:00Z""#,
            r#""2026-01-01T00:00:00.Z""#,
            r#""2026-01-01T00:00:00+2:00""#,
            r#""2026-01-01T00:00:00Z ""#,
            r#""1767225600""#,
            "true",
            "null",
            "{}",
            "[1]",
            "1e400",
            "99999999999999999999",
        ] {
            assert_eq!(ts(json), None, "{json}");
        }
        assert!(ts(r#""2024-02-29T00:00:00Z""#).is_some(), "a leap day");
    }

    proptest! {
        #[test]
        fn rfc3339_agrees_with_humantime_for_utc(secs in 0u64..253_402_300_799, micros in 0u32..1_000_000) {
            let t = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros.into());
            let text = humantime::format_rfc3339_micros(t).to_string();
            prop_assert_eq!(rfc3339_us(&text), Some(secs as i64 * 1_000_000 + i64::from(micros)));
        }

        #[test]
        fn timestamps_never_panic(text in ".{0,40}") {
            let _ = rfc3339_us(&text);
            if let Ok(raw) = RawValue::from_string(text.clone()) {
                let _ = timestamp_us(&raw);
            }
        }
    }
}
