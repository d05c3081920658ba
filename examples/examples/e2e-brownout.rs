//! The real-network twin of the lab: a brownout, then an outage, over loopback sockets.
//!
//! An axum backend on an ephemeral port runs a `tower-fault-injection` schedule (healthy → brownout →
//! outage → healthy). An open-loop client sends 200 requests per second for 5 s, each with a
//! 1 s deadline, first with plain reqwest (no middleware), then through damper's HTTP client
//! stack. Each run gets a fresh backend, so both meet the same faults at the same times. It
//! prints a per-second table per run and a summary: goodput (share of requests that got a 200
//! in time), amplification (backend attempts per logical request) and latency quantiles of
//! the successes.
//!
//! `--more` adds two runs: naive retries (3 attempts, no budget) and damper without its
//! adaptive timeout.
//!
//! This is a demo in real time (about 12 s, 24 s with `--more`); numbers vary from run to run and machine to
//! machine. The lab (`damper-lab`) measures the same things deterministically in virtual time.
//!
//! ```text
//! cargo run --release -p damper-examples --example e2e-brownout [-- --more]
//! ```

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::http::StatusCode;
use axum::routing::get;
use damper_core::BoxError;
use damper_examples::net;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};
use tower_fault_injection::{FaultLayer, FaultSpec, HttpResponseInjector, Latency, Schedule};

const RATE: u64 = 200;
const SECONDS: u64 = 5;
const DEADLINE: Duration = Duration::from_millis(1000);

/// Phases of the fault schedule, by second.
const PHASES: [&str; SECONDS as usize] = ["healthy", "brownout", "brownout", "outage", "healthy"];

fn schedule() -> Result<Schedule, BoxError> {
    let s = Duration::from_secs;
    let normal = Latency::LogNormal {
        median: Duration::from_millis(4),
        p99: Duration::from_millis(20),
    };
    Ok(Schedule::builder()
        .between(s(0), s(1), FaultSpec::new().latency(normal))
        // Brownout: 10× slower with a long tail, 10% errors, and room for only 12 requests at
        // once (the rest are refused at once), as a backend with too few workers left.
        .between(
            s(1),
            s(3),
            FaultSpec::new()
                .latency(Latency::LogNormal {
                    median: Duration::from_millis(40),
                    p99: Duration::from_millis(400),
                })
                .error_probability(0.1)
                .capacity(12),
        )
        .between(s(3), s(4), FaultSpec::outage())
        .between(s(4), s(5), FaultSpec::new().latency(normal))
        .build()?)
}

/// Backend attempts, per second of the run.
#[derive(Debug)]
struct Attempts {
    start: Instant,
    per_second: [AtomicU64; SECONDS as usize + 2],
}

impl Attempts {
    fn record(&self) {
        let i = (self.start.elapsed().as_secs() as usize).min(self.per_second.len() - 1);
        self.per_second[i].fetch_add(1, Ordering::Relaxed);
    }

    fn total(&self) -> u64 {
        self.per_second
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum()
    }
}

/// Starts a fresh backend whose fault schedule starts now.
async fn backend() -> Result<(String, Arc<Attempts>, tokio::task::JoinHandle<()>), BoxError> {
    let attempts = Arc::new(Attempts {
        start: Instant::now(),
        per_second: Default::default(),
    });
    let counted = attempts.clone();
    let faults = FaultLayer::builder()
        .name("e2e-backend")
        .schedule(schedule()?)
        .start(attempts.start)
        .seed(42)
        .injector(HttpResponseInjector::new(StatusCode::SERVICE_UNAVAILABLE))
        .build()?;
    let app = Router::new().route("/", get(|| async { "ok" })).layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|e: BoxError| async move {
                (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }))
            .map_request(move |req: axum::extract::Request| {
                counted.record();
                req
            })
            .layer(faults),
    );
    let (listener, addr) = net::listen().await?;
    Ok((
        format!("http://{addr}/"),
        attempts,
        net::spawn_axum(listener, app),
    ))
}

type Client = BoxCloneSyncService<http::Request<String>, http::Response<reqwest::Body>, BoxError>;

/// One logical request: when it started (offset into the run), how long it took, and whether
/// the caller got a 200 within its deadline.
#[derive(Debug, Clone, Copy)]
struct Record {
    second: usize,
    latency: Duration,
    ok: bool,
}

async fn run(label: &str, title: &str, client: Client) -> Result<Summary, BoxError> {
    let (url, attempts, server) = backend().await?;
    let start = attempts.start;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity((RATE * SECONDS) as usize);
    for _ in 0..RATE * SECONDS {
        tick.tick().await;
        let client = client.clone();
        let req = http::Request::get(&url).body(String::new())?;
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let res = tokio::time::timeout(DEADLINE, client.oneshot(req)).await;
            let ok = matches!(res, Ok(Ok(ref r)) if r.status() == StatusCode::OK);
            Record {
                second: sent.duration_since(start).as_secs() as usize,
                latency: sent.elapsed(),
                ok,
            }
        }));
    }
    let mut records = Vec::with_capacity(tasks.len());
    for t in tasks {
        records.push(t.await?);
    }
    server.abort();

    println!("\n{title}");
    println!(
        "{:>4} {:<9} {:>5} {:>5} {:>6} {:>9} {:>8}",
        "sec", "phase", "sent", "ok", "failed", "attempts", "p99 ms"
    );
    for (sec, phase) in PHASES.iter().enumerate() {
        let here: Vec<Record> = records
            .iter()
            .filter(|r| r.second == sec)
            .copied()
            .collect();
        let ok: Vec<Duration> = here.iter().filter(|r| r.ok).map(|r| r.latency).collect();
        println!(
            "{:>4} {:<9} {:>5} {:>5} {:>6} {:>9} {:>8}",
            sec,
            phase,
            here.len(),
            ok.len(),
            here.len() - ok.len(),
            attempts.per_second[sec].load(Ordering::Relaxed),
            quantile(ok, 0.99).map_or("-".to_owned(), |d| format!("{:.1}", ms(d))),
        );
    }
    Ok(Summary::new(label, &records, attempts.total()))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn quantile(mut v: Vec<Duration>, q: f64) -> Option<Duration> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    Some(v[i])
}

#[derive(Debug)]
struct Summary {
    label: String,
    requests: usize,
    ok: usize,
    attempts: u64,
    p50: Option<Duration>,
    p99: Option<Duration>,
}

impl Summary {
    fn new(label: &str, records: &[Record], attempts: u64) -> Self {
        let ok: Vec<Duration> = records.iter().filter(|r| r.ok).map(|r| r.latency).collect();
        Self {
            label: label.to_owned(),
            requests: records.len(),
            ok: ok.len(),
            attempts,
            p50: quantile(ok.clone(), 0.5),
            p99: quantile(ok, 0.99),
        }
    }

    fn print(&self) {
        let q = |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.1}", ms(d)));
        println!(
            "{:<16} {:>9.1}% {:>13.2} {:>8} {:>8}",
            self.label,
            100.0 * self.ok as f64 / self.requests as f64,
            self.attempts as f64 / self.requests as f64,
            q(self.p50),
            q(self.p99),
        );
    }
}

/// The naive baseline of `--more`: up to 3 attempts on any failure, at once, no budget.
fn naive_retries(inner: Client) -> Client {
    BoxCloneSyncService::new(tower::service_fn(move |req: http::Request<String>| {
        let inner = inner.clone();
        async move {
            let mut last = None;
            for _ in 0..3 {
                let copy = http::Request::builder()
                    .method(req.method().clone())
                    .uri(req.uri().clone())
                    .body(req.body().clone())?;
                match inner.clone().oneshot(copy).await {
                    Ok(res) if res.status() == StatusCode::OK => return Ok(res),
                    other => last = Some(other),
                }
            }
            last.unwrap_or_else(|| Err("no attempt".into()))
        }
    }))
}

fn damped(
    stack: damper::ClientStack<
        damper_core::classify::HttpClassifier,
        damper::retry_budget::Idempotent,
        damper::hedge::Idempotent,
    >,
    http: &reqwest::Client,
) -> Result<Client, BoxError> {
    Ok(BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(stack.name("e2e-brownout").deadline(DEADLINE).build()?)
            .service(damper_examples::reqwest_service(http.clone())),
    ))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // `--more` adds two runs: naive retries, and damper without its adaptive timeout.
    let more = std::env::args().any(|a| a == "--more");
    println!(
        "{RATE} requests/s for {SECONDS} s, deadline {} ms, over loopback; phases by second: {}",
        DEADLINE.as_millis(),
        PHASES.join(", ")
    );
    let http = reqwest::Client::new();
    let plain = BoxCloneSyncService::new(damper_examples::reqwest_service(http.clone()));

    let mut summaries =
        vec![run("none", "without the stack (plain reqwest)", plain.clone()).await?];
    if more {
        summaries.push(
            run(
                "naive retry x3",
                "naive retries (3 attempts, no budget)",
                naive_retries(plain),
            )
            .await?,
        );
    }
    summaries.push(
        run(
            "damper",
            "with damper's client stack (ClientStack::http())",
            damped(damper::ClientStack::http(), &http)?,
        )
        .await?,
    );
    if more {
        summaries.push(
            run(
                "damper, no a.t.",
                "damper without the adaptive timeout",
                damped(damper::ClientStack::http().timeout(false), &http)?,
            )
            .await?,
        );
    }

    println!("\nsummary");
    println!(
        "{:<16} {:>10} {:>13} {:>8} {:>8}",
        "stack", "goodput", "amplification", "p50 ms", "p99 ms"
    );
    for s in &summaries {
        s.print();
    }
    Ok(())
}
