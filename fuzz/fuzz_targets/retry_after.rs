//! `Retry-After` from a hostile peer: never panics, never exceeds the clamp.
#![no_main]

use damper_core::pushback::{parse_http_date, parse_retry_after};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, SystemTime};

fuzz_target!(|data: &[u8]| {
    let max = Duration::from_secs(30);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    if let Some(d) = parse_retry_after(data, now, max) {
        assert!(d <= max);
    }
    if let Some(t) = parse_http_date(data) {
        assert!(t >= SystemTime::UNIX_EPOCH);
    }
});
