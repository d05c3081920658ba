//! Whole responses from a hostile peer through the HTTP and gRPC classifiers: status, and
//! arbitrary `retry-after`, `grpc-retry-pushback-ms` and `grpc-status` header bytes.
#![no_main]

use damper_core::classify::{GrpcClassifier, HttpClassifier};
use damper_core::pushback::Pushback;
use http::{HeaderMap, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let code = 100 + u16::from_le_bytes([data[0], data[1]]) % 500;
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    let rest = &data[2..];
    let mut parts = rest.splitn(3, |&b| b == b'\n');
    let mut headers = HeaderMap::new();
    for name in ["retry-after", "grpc-retry-pushback-ms", "grpc-status"] {
        if let Some(v) = parts.next() {
            if let Ok(v) = HeaderValue::from_bytes(v) {
                headers.insert(name, v);
            }
        }
    }
    let max = Duration::from_secs(30);
    let http = HttpClassifier::new().classify_parts(status, &headers);
    let grpc = GrpcClassifier::new().classify_headers(status, &headers);
    for outcome in [http, grpc] {
        if let Some(Pushback::After(d)) = outcome.pushback() {
            assert!(d <= max);
        }
        if outcome.pushback() == Some(Pushback::DoNotRetry) {
            assert!(!outcome.is_retryable());
        }
    }
});
