//! Property tests of the pushback and deadline parsers: hostile input never panics and never
//! yields more than the clamp; well-formed input round-trips.

use damper_core::deadline::grpc_timeout::{self, decode, decode_clamped, encode};
use damper_core::pushback::{Pushback, parse_grpc_pushback, parse_http_date, parse_retry_after};
use proptest::prelude::*;
use std::time::{Duration, SystemTime};

/// The largest `grpc-timeout` value: 99999999 hours.
const GRPC_TIMEOUT_MAX: Duration = Duration::from_secs(99_999_999 * 3600);

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]; // 1970-01-01 was a Thursday
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Formats seconds since the epoch as an IMF-fixdate, independently of the parser: walks the
/// calendar year by year and month by month.
fn imf_fixdate(secs: u64) -> String {
    let is_leap = |y: u64| y.is_multiple_of(4) && (!y.is_multiple_of(100) || y.is_multiple_of(400));
    let mut days = secs / 86_400;
    let weekday = DAYS[(days % 7) as usize];
    let mut year = 1970;
    loop {
        let len = if is_leap(year) { 366 } else { 365 };
        if days < len {
            break;
        }
        days -= len;
        year += 1;
    }
    let month_len = [
        31,
        if is_leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut month = 0;
    while days >= month_len[month] {
        days -= month_len[month];
        month += 1;
    }
    let rem = secs % 86_400;
    format!(
        "{weekday}, {:02} {} {year:04} {:02}:{:02}:{:02} GMT",
        days + 1,
        MONTHS[month],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Seconds of 9999-12-31T23:59:59Z, the last date an IMF-fixdate can hold.
const LAST_DATE: u64 = 253_402_300_799;

fn epoch(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (0u64..=u64::MAX, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        (0u32..64, any::<u64>(), 0u32..1_000_000_000)
            .prop_map(|(shift, s, n)| Duration::new(s >> shift, n)),
        (0u64..10_000_000_000_000).prop_map(Duration::from_nanos),
    ]
}

/// A well-formed date with one character (possibly multi-byte) written over it, kept at 29
/// bytes: the inputs that reach the parser's field checks.
fn mangled_date() -> impl Strategy<Value = Vec<u8>> {
    (0..=LAST_DATE, 0usize..29, any::<char>()).prop_map(|(secs, at, c)| {
        let mut b = imf_fixdate(secs).into_bytes();
        let mut buf = [0; 4];
        let c = c.encode_utf8(&mut buf).as_bytes();
        let end = (at + c.len()).min(29);
        b.splice(at..end, c.iter().copied());
        b.truncate(29);
        b
    })
}

/// Header-like bytes: mostly digits, signs, date characters and whitespace, sometimes anything.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        prop::collection::vec(
            prop::sample::select(b"0123456789 -+\t,:.GMTSunNovabc\xff\x80".to_vec()),
            0..40
        ),
        prop::collection::vec(prop::sample::select(b"0123456789".to_vec()), 0..80),
        mangled_date(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn retry_after_never_panics_and_respects_the_clamp(
        value in header_bytes(),
        now_secs in 0..=LAST_DATE + 86_400,
        max in any_duration(),
    ) {
        if let Some(d) = parse_retry_after(&value, epoch(now_secs), max) {
            prop_assert!(d <= max);
        }
    }

    #[test]
    fn grpc_pushback_never_panics_and_respects_the_clamp(
        value in header_bytes(),
        max in any_duration(),
    ) {
        match parse_grpc_pushback(&value, max) {
            Some(Pushback::After(d)) => prop_assert!(d <= max),
            Some(Pushback::DoNotRetry) => prop_assert!(value.contains(&b'-')),
            None => {}
        }
    }

    #[test]
    fn http_date_never_panics(value in header_bytes()) {
        if let Some(t) = parse_http_date(&value) {
            prop_assert!(t >= SystemTime::UNIX_EPOCH);
            prop_assert!(t <= epoch(LAST_DATE + 86_400 * 31));
        }
    }

    #[test]
    fn grpc_timeout_decode_never_panics(value in header_bytes(), max in any_duration()) {
        let decoded = decode(&value);
        if let Ok(d) = decoded {
            prop_assert!(d <= GRPC_TIMEOUT_MAX);
            prop_assert!((2..=9).contains(&value.len()));
        }
        match decode_clamped(&value, max) {
            Ok(d) => prop_assert_eq!(Ok(d), decoded.map(|v| v.min(max))),
            Err(_) => prop_assert!(decoded.is_err()),
        }
    }

    #[test]
    fn delta_seconds_are_exact_up_to_the_clamp(secs: u64, max in any_duration(), pad in 0usize..3) {
        let text = format!("{:pad$}{secs}{:pad$}", "", "");
        let got = parse_retry_after(text.as_bytes(), SystemTime::UNIX_EPOCH, max);
        prop_assert_eq!(got, Some(Duration::from_secs(secs).min(max)));
    }

    #[test]
    fn grpc_pushback_values_are_exact(ms: u64, negative: bool, max in any_duration()) {
        let text = if negative { format!("-{ms}") } else { ms.to_string() };
        let want = if negative {
            Pushback::DoNotRetry
        } else {
            Pushback::After(Duration::from_millis(ms).min(max))
        };
        prop_assert_eq!(parse_grpc_pushback(text.as_bytes(), max), Some(want));
    }

    #[test]
    fn http_dates_round_trip(secs in 0..=LAST_DATE, now_secs in 0..=LAST_DATE, max in any_duration()) {
        let text = imf_fixdate(secs);
        prop_assert_eq!(parse_http_date(text.as_bytes()), Some(epoch(secs)), "{}", text);
        let want = Duration::from_secs(secs.saturating_sub(now_secs)).min(max);
        prop_assert_eq!(parse_retry_after(text.as_bytes(), epoch(now_secs), max), Some(want));
    }

    #[test]
    fn grpc_timeout_values_decode_exactly(n in 0u64..=99_999_999, unit in 0usize..6, zeros in 0usize..8) {
        let (c, scale) = [
            ('n', Duration::from_nanos(1)),
            ('u', Duration::from_micros(1)),
            ('m', Duration::from_millis(1)),
            ('S', Duration::from_secs(1)),
            ('M', Duration::from_secs(60)),
            ('H', Duration::from_secs(3600)),
        ][unit];
        let digits = n.to_string();
        let padded = format!("{}{digits}", "0".repeat(zeros.min(8 - digits.len())));
        let want = scale * u32::try_from(n).unwrap();
        prop_assert_eq!(decode(format!("{padded}{c}").as_bytes()), Ok(want));
        // Nine digits are one too many, whatever their value.
        let nine = format!("{}{digits}{c}", "0".repeat(9 - digits.len()));
        prop_assert!(decode(nine.as_bytes()).is_err());
    }

    /// encode → decode never shortens the deadline, and lengthens it by less than one unit of
    /// the resolution `encode` chose, which is the finest whose value fits in 8 digits.
    #[test]
    fn grpc_timeout_round_trip(d in any_duration()) {
        let text = encode(d);
        let (digits, unit) = text.split_at(text.len() - 1);
        prop_assert!(!digits.is_empty() && digits.len() <= 8, "{}", text);
        let scale: u128 = match unit {
            "n" => 1,
            "u" => 1_000,
            "m" => 1_000_000,
            "S" => 1_000_000_000,
            "M" => 60_000_000_000,
            "H" => 3_600_000_000_000,
            _ => return Err(TestCaseError::fail(format!("bad unit in {text}"))),
        };
        let back = decode(text.as_bytes()).expect("encode output decodes");
        if d <= GRPC_TIMEOUT_MAX {
            prop_assert!(back >= d, "{:?} -> {} -> {:?}", d, text, back);
            prop_assert!((back - d).as_nanos() < scale, "{:?} -> {} -> {:?}", d, text, back);
            // No finer unit would have fitted (the previous one in the ladder).
            let finer = [1u128, 1_000, 1_000_000, 1_000_000_000, 60_000_000_000]
                .into_iter()
                .filter(|&s| s < scale)
                .max();
            if let Some(f) = finer {
                prop_assert!(d.as_nanos().div_ceil(f) > 99_999_999, "{} not finest for {:?}", text, d);
            }
        } else {
            prop_assert_eq!(back, GRPC_TIMEOUT_MAX);
        }
        prop_assert_eq!(grpc_timeout::HEADER, "grpc-timeout");
    }
}

#[test]
fn formatter_agrees_with_known_dates() {
    assert_eq!(imf_fixdate(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    assert_eq!(imf_fixdate(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_eq!(imf_fixdate(951_825_600), "Tue, 29 Feb 2000 12:00:00 GMT");
    assert_eq!(imf_fixdate(LAST_DATE), "Fri, 31 Dec 9999 23:59:59 GMT");
}

#[test]
fn multibyte_characters_in_a_date_are_rejected() {
    // 29 bytes of valid UTF-8 whose multi-byte characters straddle the parser's field offsets.
    for s in [
        "Sun, 06 Nov 1994 08:49:3é GM",
        "Sé, 06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Né 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 €",
    ] {
        assert_eq!(s.len(), 29, "{s}");
        assert_eq!(parse_http_date(s.as_bytes()), None, "{s}");
    }
}
