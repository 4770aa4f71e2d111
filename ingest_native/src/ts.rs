//! Reading times: RFC 3339 parsing, epoch conversions and the text used in reject reasons.
//!
//! All times are `i64` microseconds since the Unix epoch, UTC. RFC 3339 fractions beyond
//! microseconds are truncated (PostgreSQL keeps microseconds); an offset is required (`Z`,
//! `z`, or `±HH:MM`; `-00:00` is read as UTC). The date/time separator may be `T`, `t` or a
//! space (RFC 3339 section 5.6 allows the latter). Leap seconds (`:60`) are refused, since
//! PostgreSQL would fold them into the next minute and break the (`device_id`, `time`) identity.

/// Microseconds from the Unix epoch to PostgreSQL's epoch, 2000-01-01T00:00:00Z.
pub const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

const US_PER_SECOND: i64 = 1_000_000;
const SECONDS_PER_DAY: i64 = 86_400;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
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

fn digits(bytes: &[u8]) -> Option<i64> {
    bytes.iter().try_fold(0_i64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
    })
}

/// Parses an RFC 3339 date-time with offset into Unix microseconds; `None` if it is not one.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut rest = &b[19..];
    let mut micros = 0_i64;
    if let [b'.', tail @ ..] = rest {
        let n = tail.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        for i in 0..6 {
            micros = micros * 10
                + tail
                    .get(i)
                    .filter(|_| i < n)
                    .map_or(0, |&c| i64::from(c - b'0'));
        }
        rest = &tail[n..];
    }
    let offset_seconds = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let oh = digits(&[*h1, *h2])?;
            let om = digits(&[*m1, *m2])?;
            if oh > 23 || om > 59 {
                return None;
            }
            let secs = oh * 3600 + om * 60;
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * SECONDS_PER_DAY + hour * 3600 + minute * 60 + second - offset_seconds;
    Some(seconds * US_PER_SECOND + micros)
}

/// Unix microseconds of epoch milliseconds, or `None` if that overflows.
pub fn from_epoch_ms(ms: i64) -> Option<i64> {
    ms.checked_mul(1000)
}

/// RFC 3339 text in UTC (`Z`), with a fraction only when there is one; for reject reasons.
pub fn format_rfc3339(us: i64) -> String {
    let seconds = us.div_euclid(US_PER_SECOND);
    let micros = us.rem_euclid(US_PER_SECOND);
    let days = seconds.div_euclid(SECONDS_PER_DAY);
    let sod = seconds.rem_euclid(SECONDS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return format!("{us} us since the Unix epoch");
    }
    let (h, m, s) = (sod / 3600, sod / 60 % 60, sod % 60);
    if micros == 0 {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{micros:06}Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_and_offsets_name_the_same_instant() {
        let z = parse_rfc3339("2024-03-01T12:00:00Z").unwrap();
        assert_eq!(z, 1_709_294_400 * US_PER_SECOND);
        assert_eq!(parse_rfc3339("2024-03-01T14:30:00+02:30"), Some(z));
        assert_eq!(parse_rfc3339("2024-03-01T07:00:00-05:00"), Some(z));
        assert_eq!(parse_rfc3339("2024-03-01t12:00:00z"), Some(z));
        assert_eq!(parse_rfc3339("2024-03-01 12:00:00-00:00"), Some(z));
    }

    #[test]
    fn fractions_keep_microseconds_and_truncate_the_rest() {
        let base = parse_rfc3339("2024-03-01T12:00:00Z").unwrap();
        assert_eq!(
            parse_rfc3339("2024-03-01T12:00:00.5Z"),
            Some(base + 500_000)
        );
        assert_eq!(
            parse_rfc3339("2024-03-01T12:00:00.123456Z"),
            Some(base + 123_456)
        );
        assert_eq!(
            parse_rfc3339("2024-03-01T12:00:00.123456999Z"),
            Some(base + 123_456)
        );
    }

    #[test]
    fn malformed_or_impossible_times_are_refused() {
        for bad in [
            "2024-03-01T12:00:00",
            "2024-03-01T12:00:00.Z",
            "2024-02-30T12:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T23:59:60Z",
            "2024-01-01T00:00:00+24:00",
            "2024-01-01T00:00:00+0100",
            "2024-01-01X00:00:00Z",
            "+2024-01-01T00:00:00Z",
            "2024-1-01T00:00:00Z",
            "1709294400000",
            "",
            "2024-01-01T00:00:00Zjunk",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        assert!(parse_rfc3339("2024-02-29T00:00:00Z").is_some());
    }

    #[test]
    fn formatting_inverts_parsing() {
        for text in [
            "1999-01-01T00:00:00Z",
            "2024-02-29T23:59:59.000001Z",
            "1969-12-31T23:59:59.5Z",
        ] {
            let us = parse_rfc3339(text).unwrap();
            let formatted = format_rfc3339(us);
            assert_eq!(parse_rfc3339(&formatted), Some(us), "{text} -> {formatted}");
        }
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(-500_000), "1969-12-31T23:59:59.500000Z");
        assert!(format_rfc3339(i64::MAX).ends_with("us since the Unix epoch"));
    }

    #[test]
    fn civil_dates_round_trip_over_centuries() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn epoch_ms_overflow_is_caught() {
        assert_eq!(from_epoch_ms(1), Some(1000));
        assert_eq!(from_epoch_ms(i64::MAX), None);
    }
}
