//! A `reqwest::Client` wrapped in damper's HTTP client stack, against a local flaky server.
//!
//! The server (axum, on an ephemeral loopback port) answers a share of requests with `502 Bad
//! Gateway`, injected by `tower-fault-injection` (5%, then 50%), and adds a few milliseconds of lognormal
//! latency. For each share the client sends 300 GETs, 10 at a time, through: deadline (2 s) → retry (budget) → hedge (same
//! budget) → breaker → adaptive timeout → reqwest. It prints what the caller saw and what the
//! server received. It ends by itself in a second or two.
//!
//! ```text
//! cargo run -p damper-examples --example reqwest-client
//! ```

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::http::StatusCode;
use axum::routing::get;
use damper_core::BoxError;
use damper_examples::net;
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tower::ServiceBuilder;
use tower_fault_injection::{FaultLayer, FaultSpec, HttpResponseInjector, Latency};

const REQUESTS: usize = 300;
const CONCURRENCY: usize = 10;

/// Failures with probability `p`, and a few milliseconds of lognormal latency.
fn spec(p: f64) -> FaultSpec {
    FaultSpec::new()
        .error_probability(p)
        .latency(Latency::LogNormal {
            median: Duration::from_millis(3),
            p99: Duration::from_millis(30),
        })
}

fn report(label: &str, p: f64, outcomes: &[Result<u16, String>], sent: u64) {
    let n = outcomes.len();
    let ok = outcomes.iter().filter(|o| matches!(o, Ok(200))).count();
    let statuses = outcomes.iter().filter_map(|o| o.as_ref().ok().copied());
    let errors: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    println!(
        "\n{label}: {n} GETs, {CONCURRENCY} at a time, server failing {:.0}% with 502",
        p * 100.0
    );
    print!("  statuses the caller saw:");
    for (status, count) in damper_examples::count_statuses(statuses) {
        print!(" {status}×{count}");
    }
    println!();
    if let Some(first) = errors.first() {
        println!("  errors: {} (first: {first})", errors.len());
    }
    println!(
        "  success: {:.1}% (one attempt each: {:.0}%)",
        100.0 * ok as f64 / n as f64,
        100.0 * (1.0 - p)
    );
    println!(
        "  server attempts: {sent} (amplification {:.2})",
        sent as f64 / n as f64
    );
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // --- the flaky server ---
    let attempts = Arc::new(AtomicU64::new(0));
    let counted = attempts.clone();
    let faults = FaultLayer::builder()
        .injector(HttpResponseInjector::new(StatusCode::BAD_GATEWAY))
        .seed(7)
        .build()?;
    let handle = faults.handle();
    let app = Router::new()
        .route("/item", get(|| async { "item\n" }))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|e: BoxError| async move {
                    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                }))
                .map_request(move |req: axum::extract::Request| {
                    counted.fetch_add(1, Ordering::Relaxed);
                    req
                })
                .layer(faults),
        );
    let (listener, addr) = net::listen().await?;
    let server = net::spawn_axum(listener, app);

    // --- the damped client ---
    // The HTTP preset: deadline → retry (budget) → hedge (same budget) → breaker → adaptive
    // timeout. Statuses are classified (502/503/504 retryable, Retry-After honoured) and only
    // idempotent requests are retried or hedged.
    // `build_reqwest` puts the stack inside a reqwest client: the builder API and
    // `reqwest::Response` stay as they are.
    let client = damper::ClientStack::http()
        .name("reqwest-example")
        .deadline(Duration::from_secs(2))
        .build_reqwest(reqwest::Client::new())?;

    let url = format!("http://{addr}/item");
    for (label, p) in [("a good day", 0.05), ("a bad day", 0.5)] {
        handle.set(spec(p))?;
        let before = attempts.load(Ordering::Relaxed);
        let outcomes: Vec<Result<u16, String>> = futures_util::stream::iter(0..REQUESTS)
            .map(|_| {
                let send = client.get(&url).send();
                async move {
                    match send.await {
                        Ok(res) => Ok(res.status().as_u16()),
                        Err(e) => Err(e.to_string()),
                    }
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let sent = attempts.load(Ordering::Relaxed) - before;
        report(label, p, &outcomes, sent);
    }
    println!(
        "\nOn a good day the budget (10% of successes, banked for about half a second) pays for \
         a retry of nearly every failure; on a bad day it runs dry, so extra load stays \
         bounded instead of tripling."
    );

    server.abort();
    Ok(())
}
