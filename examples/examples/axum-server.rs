//! An axum 0.8 app behind damper's server stack: load shedding with `503 Service Unavailable`
//! and `Retry-After`, deadline enforcement, and a Prometheus `/metrics` endpoint.
//!
//! The example serves on an ephemeral loopback port, fires a burst of concurrent requests at
//! itself, prints how many were served and how many were shed, and prints the `damper_*` lines
//! of its own `/metrics`. It ends by itself in about a second.
//!
//! ```text
//! cargo run -p damper-examples --example axum-server
//! ```

use axum::Router;
use axum::routing::get;
use damper_core::BoxError;
use damper_examples::net;
use metrics_exporter_prometheus::PrometheusBuilder;
use std::time::Duration;

/// A handler that takes 50 ms of "work".
async fn work() -> &'static str {
    tokio::time::sleep(Duration::from_millis(50)).await;
    "done\n"
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // The recorder first: layers register their metric handles when they are built.
    let prometheus = PrometheusBuilder::new().install_recorder()?;

    // The HTTP preset: an adaptive (Gradient2) concurrency limit, here starting at 16 requests
    // in flight; 503 + Retry-After for the excess; the caller's `grpc-timeout` enforced.
    let stack = damper::ServerStack::http()
        .name("axum-example")
        .configure(|c| {
            c.limit.initial = Some(16);
            c.limit.min = Some(4);
            c.limit.max = Some(64);
        })
        .build()?;
    let shed = stack
        .shed_handle()
        .cloned()
        .ok_or("shedding is on in the preset")?;

    let app = Router::new()
        .route("/work", get(work))
        // `infallible()`: the stack answers 503 for shed requests and 504 for requests whose
        // deadline passed; any other error becomes a logged 500. No `HandleErrorLayer` needed.
        .layer(stack.infallible())
        // Added after `.layer(..)`, so the shedder does not guard the metrics endpoint.
        .route("/metrics", get(move || async move { prometheus.render() }));

    let (listener, addr) = net::listen().await?;
    let server = net::spawn_axum(listener, app);
    println!("serving on http://{addr} (limit {})", shed.limit());

    // A burst of 200 concurrent requests: far more than the limit.
    let client = reqwest::Client::new();
    let burst = (0..200).map(|_| {
        let client = client.clone();
        tokio::spawn(async move {
            let res = client.get(format!("http://{addr}/work")).send().await?;
            let retry_after = res
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok().map(str::to_owned));
            Ok::<_, reqwest::Error>((res.status().as_u16(), retry_after))
        })
    });
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for task in burst.collect::<Vec<_>>() {
        let (status, after) = task.await??;
        statuses.push(status);
        if status == 503 {
            retry_after = retry_after.or(after);
        }
    }

    println!("\nburst of {} concurrent GET /work:", statuses.len());
    for (status, n) in damper_examples::count_statuses(statuses) {
        println!("  {status}: {n}");
    }
    match retry_after {
        Some(v) => println!("  shed responses carry Retry-After: {v}"),
        None => println!("  no request was shed"),
    }

    let text = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    println!("\nGET /metrics (damper_* series):");
    for line in text.lines().filter(|l| l.starts_with("damper_")) {
        println!("  {line}");
    }

    server.abort();
    Ok(())
}
