//! Small time helpers: RFC 3339 formatting and human durations, without a calendar crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::CoreError;

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Formats microseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn format_rfc3339(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (inverse of `civil_from_days`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Reads an RFC 3339 time (`2026-11-27T07:30:00Z`, `…T07:30:00.5+01:00`; a space may replace
/// the `T`) as microseconds since the epoch.
pub fn parse_rfc3339(text: &str) -> Result<i64, CoreError> {
    let bad = || CoreError::InvalidTime(text.to_string());
    let b = text.trim().as_bytes();
    let num = |from: usize, len: usize| -> Result<i64, CoreError> {
        let part = b.get(from..from + len).ok_or_else(bad)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        std::str::from_utf8(part)
            .map_err(|_| bad())?
            .parse()
            .map_err(|_| bad())
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return Err(bad());
    }
    if b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (h, mi, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let digits = &text.trim()[start..i];
        if digits.is_empty() {
            return Err(bad());
        }
        let six: String = digits
            .chars()
            .chain(std::iter::repeat('0'))
            .take(6)
            .collect();
        micros = six.parse().map_err(|_| bad())?;
    }
    let offset_secs = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let off = num(i + 1, 2)? * 3600 + num(i + 4, 2)? * 60;
            if sign == b'+' { off } else { -off }
        }
        _ => return Err(bad()),
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_secs;
    Ok(secs * 1_000_000 + micros)
}

/// Reads `90s`, `30m`, `8h`, `7d` (or a plain number of seconds).
pub fn parse_duration(text: &str) -> Result<Duration, CoreError> {
    let text = text.trim();
    let bad = || CoreError::InvalidDuration(text.to_string());
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err(bad());
    }
    n.checked_mul(mult).map(Duration::from_secs).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            format_rfc3339(1_796_000_000_123_456),
            "2026-11-30T00:53:20.123456Z"
        );
        assert_eq!(
            format_rfc3339(951_782_400_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("8h").ok(), Some(Duration::from_secs(28_800)));
        assert_eq!(parse_duration("90").ok(), Some(Duration::from_secs(90)));
        assert_eq!(
            parse_duration("2d").ok(),
            Some(Duration::from_secs(172_800))
        );
        assert!(parse_duration("8x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("-1h").is_err());
    }
}

#[cfg(test)]
mod rfc3339_tests {
    use super::*;

    #[test]
    fn parses_what_it_formats_and_offsets() {
        for micros in [
            0i64,
            1_764_228_600_123_456,
            951_782_400_000_000,
            -86_400_000_000,
        ] {
            assert_eq!(parse_rfc3339(&format_rfc3339(micros)).unwrap(), micros);
        }
        assert_eq!(
            parse_rfc3339("2026-11-27T08:30:00+01:00").unwrap(),
            parse_rfc3339("2026-11-27T07:30:00Z").unwrap()
        );
        assert_eq!(parse_rfc3339("1970-01-01 00:00:01.5Z").unwrap(), 1_500_000);
        for bad in [
            "",
            "2026-11-27",
            "2026-13-01T00:00:00Z",
            "2026-11-27T07:30:00",
            "x026-11-27T07:30:00Z",
            "2026-11-27T07:30:00+0100",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }
}
