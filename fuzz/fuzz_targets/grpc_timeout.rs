//! `grpc-timeout` decoding: malformed values are rejected, valid ones round-trip.
#![no_main]

use damper_core::deadline::grpc_timeout::{decode, decode_clamped, encode};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = decode(data) {
        // A valid value has 1–8 digits and a unit.
        assert!(data.len() >= 2 && data.len() <= 9);
        let again = decode(encode(d).as_bytes()).expect("encoded values decode");
        assert!(again >= d);
        let max = Duration::from_secs(300);
        assert!(decode_clamped(data, max).unwrap() <= max);
    }
});
