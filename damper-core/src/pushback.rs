//! Server pushback: how long a server asks us to wait before trying again.
//!
//! Parsers take raw header bytes, because values come from untrusted peers: anything that is not
//! a well-formed value gives `None`, and every delay is clamped to a caller-chosen maximum. None of
//! them panics or overflows, whatever the input.
//!
//! ```
//! use damper_core::pushback::{parse_grpc_pushback, parse_retry_after, Pushback};
//! use std::time::{Duration, SystemTime};
//!
//! let max = Duration::from_secs(30);
//! let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
//! assert_eq!(parse_retry_after(b"120", now, max), Some(Duration::from_secs(30)));
//! assert_eq!(
//!     parse_retry_after(b"Wed, 21 Oct 2015 07:28:05 GMT", now, max),
//!     Some(Duration::from_secs(5))
//! );
//! assert_eq!(parse_grpc_pushback(b"-1", max), Some(Pushback::DoNotRetry));
//! assert_eq!(parse_grpc_pushback(b"250", max), Some(Pushback::After(Duration::from_millis(250))));
//! ```

use std::time::{Duration, SystemTime};

/// The `Retry-After` header.
pub const RETRY_AFTER: &str = "retry-after";
/// The gRPC pushback trailer/header.
pub const GRPC_RETRY_PUSHBACK_MS: &str = "grpc-retry-pushback-ms";

/// What a server asked of our retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushback {
    /// Wait this long (already clamped) before the next attempt.
    After(Duration),
    /// Do not retry this request.
    DoNotRetry,
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !matches!(b, b' ' | b'\t'));
    let end = v.iter().rposition(|b| !matches!(b, b' ' | b'\t'));
    match (start, end) {
        (Some(s), Some(e)) => &v[s..=e],
        _ => &[],
    }
}

/// Parses unsigned decimal digits, saturating instead of overflowing. `None` if empty or not all
/// digits.
fn parse_digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 64 {
        return None;
    }
    let mut n: u64 = 0;
    for &d in v {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.saturating_mul(10).saturating_add(u64::from(d - b'0'));
    }
    Some(n)
}

/// `delay` as the value of a `Retry-After` header: whole seconds, rounded up (the header
/// cannot say less than a second), saturating at `u64::MAX`.
pub fn retry_after_secs(delay: Duration) -> u64 {
    delay
        .as_secs()
        .saturating_add(u64::from(delay.subsec_nanos() > 0))
}

/// `delay` as the value of a `grpc-retry-pushback-ms` header: milliseconds, rounded up (so a
/// hint under a millisecond is not sent as "retry at once"), saturating at `u64::MAX`.
pub fn pushback_millis(delay: Duration) -> u64 {
    let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    ms.saturating_add(u64::from(!delay.subsec_nanos().is_multiple_of(1_000_000)))
}

/// Parses `Retry-After` (RFC 9110 §10.2.3): delta-seconds, or an HTTP-date (IMF-fixdate) read
/// against the wall-clock `now`. The result is clamped to `max`; a date in the past gives zero.
/// Malformed values give `None`.
pub fn parse_retry_after(value: &[u8], now: SystemTime, max: Duration) -> Option<Duration> {
    let v = trim(value);
    if let Some(secs) = parse_digits(v) {
        return Some(Duration::from_secs(secs).min(max));
    }
    let at = parse_http_date(v)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO).min(max))
}

/// Parses `grpc-retry-pushback-ms`: a non-negative integer is a delay in milliseconds (clamped
/// to `max`); a negative integer means "do not retry". Anything else gives `None` (the gRPC spec
/// says to treat it as no pushback).
pub fn parse_grpc_pushback(value: &[u8], max: Duration) -> Option<Pushback> {
    let v = trim(value);
    if let Some(rest) = v.strip_prefix(b"-") {
        parse_digits(rest)?;
        return Some(Pushback::DoNotRetry);
    }
    let ms = parse_digits(v)?;
    Some(Pushback::After(Duration::from_millis(ms).min(max)))
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) into a `SystemTime`. Obsolete date
/// forms, out-of-range fields and years past 9999 give `None`.
pub fn parse_http_date(v: &[u8]) -> Option<SystemTime> {
    // "Sun, 06 Nov 1994 08:49:37 GMT" is exactly 29 bytes.
    if v.len() != 29 {
        return None;
    }
    // Only ASCII is valid, and it keeps every slice below on a character boundary.
    if !v.is_ascii() {
        return None;
    }
    let s = std::str::from_utf8(v).ok()?;
    let b = s.as_bytes();
    if &b[3..5] != b", " || b[7] != b' ' || b[11] != b' ' || b[16] != b' ' || &b[25..] != b" GMT" {
        return None;
    }
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    if !DAYS.contains(&&s[0..3]) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> { parse_digits(&b[r]) };
    let day = num(5..7)?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == &s[8..11])? as u64 + 1;
    let year = num(12..16)?;
    if b[19] != b':' || b[22] != b':' {
        return None;
    }
    let hour = num(17..19)?;
    let min = num(20..22)?;
    let sec = num(23..25)?;
    if year < 1970 || day == 0 || day > 31 || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Days since 1970-01-01 for a proleptic Gregorian date (year ≥ 1970).
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(60);

    #[test]
    fn hints_are_encoded_rounded_up_and_saturating() {
        assert_eq!(retry_after_secs(Duration::ZERO), 0);
        assert_eq!(retry_after_secs(Duration::from_millis(20)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_secs(Duration::from_millis(3001)), 4);
        assert_eq!(retry_after_secs(Duration::MAX), u64::MAX);
        assert_eq!(pushback_millis(Duration::ZERO), 0);
        assert_eq!(pushback_millis(Duration::from_micros(300)), 1);
        assert_eq!(pushback_millis(Duration::from_millis(20)), 20);
        assert_eq!(pushback_millis(Duration::from_micros(20_001)), 21);
        assert_eq!(pushback_millis(Duration::MAX), u64::MAX);
        // What is sent parses back to at least the hint (up to the clamp).
        let d = Duration::from_micros(1_500);
        let back = parse_grpc_pushback(pushback_millis(d).to_string().as_bytes(), MAX);
        assert_eq!(back, Some(Pushback::After(Duration::from_millis(2))));
    }

    fn epoch(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn retry_after_table() {
        let now = epoch(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        let cases: &[(&[u8], Option<Duration>)] = &[
            (b"0", Some(Duration::ZERO)),
            (b"5", Some(Duration::from_secs(5))),
            (b" 7 ", Some(Duration::from_secs(7))),
            (b"315360000", Some(MAX)), // ten years
            (b"99999999999999999999999999999", Some(MAX)),
            (b"-5", None),
            (b"1.5", None),
            (b"", None),
            (b"soon", None),
            (b"\xff\xfe", None),
            (b"Sun, 06 Nov 1994 08:49:37 GMT", Some(Duration::ZERO)),
            (
                b"Sun, 06 Nov 1994 08:49:47 GMT",
                Some(Duration::from_secs(10)),
            ),
            (b"Sat, 05 Nov 1994 08:49:37 GMT", Some(Duration::ZERO)), // past
            (b"Fri, 31 Dec 9999 23:59:59 GMT", Some(MAX)),            // far future
            (b"Sun, 06 Nov 1994 25:49:37 GMT", None),
            (b"Sun, 06 Xyz 1994 08:49:37 GMT", None),
            (b"Sunday, 06-Nov-94 08:49:37 GMT", None),
            (b"Sun, 06 Nov 1994 08:49:37 UTC", None),
            // Found by fuzzing: 29 bytes with a multi-byte character across a slice boundary.
            (b"Wed, 83 Oct 2015 \r7\t\t\t[:\xce\xbe:0s", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_retry_after(input, now, MAX),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn known_dates() {
        assert_eq!(
            parse_http_date(b"Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(SystemTime::UNIX_EPOCH)
        );
        assert_eq!(
            parse_http_date(b"Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(epoch(784_111_777))
        );
        assert_eq!(
            parse_http_date(b"Tue, 29 Feb 2000 12:00:00 GMT"),
            Some(epoch(951_825_600))
        );
    }

    #[test]
    fn grpc_pushback_table() {
        let cases: &[(&[u8], Option<Pushback>)] = &[
            (b"0", Some(Pushback::After(Duration::ZERO))),
            (b"150", Some(Pushback::After(Duration::from_millis(150)))),
            (b"-1", Some(Pushback::DoNotRetry)),
            (b"-99999999999999999999", Some(Pushback::DoNotRetry)),
            (b"99999999999999999999999", Some(Pushback::After(MAX))),
            (b"-", None),
            (b"--1", None),
            (b"abc", None),
            (b"1e3", None),
            (b"", None),
            (b"\x80", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_grpc_pushback(input, MAX),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
}
