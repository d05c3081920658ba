//! `grpc-retry-pushback-ms` from a hostile peer: never panics, never exceeds the clamp.
#![no_main]

use damper_core::pushback::{Pushback, parse_grpc_pushback};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let max = Duration::from_secs(10);
    if let Some(Pushback::After(d)) = parse_grpc_pushback(data, max) {
        assert!(d <= max);
    }
});
