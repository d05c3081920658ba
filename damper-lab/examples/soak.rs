//! A long soak: one hour of virtual time through the `damped` stack (and `none`, for
//! comparison), with the process's resident memory sampled every five virtual minutes.
//!
//! ```sh
//! cargo run --release -p damper-lab --example soak                      # both stacks, seed 1
//! cargo run --release -p damper-lab --example soak -- --seed 7 --stacks damped
//! cargo run --release -p damper-lab --example soak -- --minutes 10      # a shorter soak
//! ```
//!
//! The scenario is `damper-lab/soak/soak.toml` (outside `scenarios/`, so the default catalog
//! and the test suite never run it): about 1,000 rps (40% of capacity) over two replicas and two clients, and a
//! ten-minute cycle of brownout, outage, flapping, a hung replica, an overload surge and a
//! capacity cut, repeated six times, so breakers, retry budgets, hedges, latency histograms
//! and limiters all go round their states again and again. Each stack runs in its own child
//! process (so one stack's freed heap does not flatter or blame the other) through the lab's
//! ordinary [`damper_lab::sim::run`], in paused time. It takes a few minutes of wall time in
//! release.
//!
//! # Why resident memory, and what counts as steady
//! A leak in a layer (a map entry per request, a histogram that never rotates, a waker that is
//! never dropped) grows with the number of requests, and an hour is millions of them. `VmRSS`
//! from `/proc/self/status` is read when the run starts, then every five virtual minutes, by a
//! task the soak's [`Stack`] wrapper spawns on the run's own runtime. The lab itself keeps
//! 8 bytes per success (`RunData::latencies_us`, for exact quantiles) and a few per-second
//! series; the table shows that bookkeeping and subtracts it. The verdict compares the
//! adjusted RSS at the end (60 min) with the adjusted RSS after warm-up (5 min): steady when it
//! grew by at most [`MARGIN_KIB`] or [`MARGIN_FRACTION`] of the warm-up figure, whichever is
//! larger: over the ~4 million requests after warm-up, that catches a leak of about a byte per
//! request. The process exits with status 1 if a stack was not steady.
//!
//! The `t=0` figure already holds the precomputed arrivals (16 bytes each, ~70 MiB for the
//! hour). The backend's queue is bounded (`backend.queue`): with the lab's default unbounded
//! queue, `none` piles up a backlog in every brownout and overload and its RSS climbs in steps
//! as the heap's high-water mark rises, which is the simulated server growing, not a layer.
//!
//! The simulation is deterministic for a seed: the `run` line (offered, good, attempts,
//! breaker transitions) is the same on every run; only RSS figures vary slightly.

use damper_lab::model;
use damper_lab::scenario::{self, Scenario};
use damper_lab::sim;
use damper_lab::stacks::{self, BoxSvc, Stack, StackCtx};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::time::Duration;
use tower::ServiceBuilder;
use tower::util::BoxCloneService;

/// Virtual time between samples.
const EVERY: Duration = Duration::from_secs(300);
/// Allowed growth after warm-up, absolute.
const MARGIN_KIB: u64 = 4 * 1024;
/// Allowed growth after warm-up, relative to the warm-up figure.
const MARGIN_FRACTION: f64 = 0.05;
/// Bytes the lab's sampler stores per virtual second at most (ten `(f64, f64)` limit samples,
/// one limit mean and one breaker state).
const LAB_BYTES_PER_SECOND: u64 = 10 * 16 + 8 + 8;
/// Bytes the lab's recorder stores per success (`RunData::latencies_us`).
const LAB_BYTES_PER_SUCCESS: u64 = 8;

/// One RSS reading.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Virtual seconds since the run started (`None`: outside the run).
    at_s: Option<u64>,
    rss_kib: u64,
    successes: u64,
}

impl Sample {
    /// The lab's own per-request bookkeeping at this point, KiB.
    fn lab_kib(&self) -> u64 {
        let secs = self.at_s.unwrap_or(0);
        (self.successes * LAB_BYTES_PER_SUCCESS + secs * LAB_BYTES_PER_SECOND) / 1024
    }

    fn adjusted_kib(&self) -> u64 {
        self.rss_kib.saturating_sub(self.lab_kib())
    }
}

/// `VmRSS` of this process, KiB (0 where `/proc` is missing).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Wraps a registered stack: counts the client's successes and, when the first client is
/// built (inside the run's paused runtime), spawns the RSS sampler.
struct Soaked {
    inner: Box<dyn Stack>,
    samples: Sender<Sample>,
    successes: Arc<AtomicU64>,
    until: Duration,
}

impl Stack for Soaked {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn server(&self, ctx: &StackCtx<'_>, replica: BoxSvc) -> BoxSvc {
        self.inner.server(ctx, replica)
    }

    fn endpoints(&self, ctx: &StackCtx<'_>, endpoints: Vec<BoxSvc>) -> Vec<BoxSvc> {
        self.inner.endpoints(ctx, endpoints)
    }

    fn client(&self, ctx: &StackCtx<'_>, backend: BoxSvc) -> BoxSvc {
        if ctx.index == 0 {
            let (tx, ok, until) = (self.samples.clone(), self.successes.clone(), self.until);
            // The clock is paused and nothing has run yet: this is the run's start.
            let start = tokio::time::Instant::now();
            tokio::spawn(async move {
                let mut at = Duration::ZERO;
                loop {
                    tokio::time::sleep_until(start + at).await;
                    let sample = Sample {
                        at_s: Some(at.as_secs()),
                        rss_kib: rss_kib(),
                        successes: ok.load(Ordering::Relaxed),
                    };
                    if tx.send(sample).is_err() || at >= until {
                        return;
                    }
                    at = (at + EVERY).min(until);
                }
            });
        }
        let ok = self.successes.clone();
        let svc = self.inner.client(ctx, backend);
        BoxCloneService::new(
            ServiceBuilder::new()
                .map_response(move |()| {
                    ok.fetch_add(1, Ordering::Relaxed);
                })
                .service(svc),
        )
    }
}

struct Args {
    seed: u64,
    minutes: f64,
    stacks: Vec<String>,
    child: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        seed: 1,
        minutes: 60.0,
        stacks: vec!["damped".into(), "none".into()],
        child: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--seed" => a.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--minutes" => {
                a.minutes = value()?.parse().map_err(|e| format!("--minutes: {e}"))?;
                if !(a.minutes >= 10.0 && a.minutes <= 60.0) {
                    return Err("--minutes must be in [10, 60]".into());
                }
            }
            "--stacks" => a.stacks = value()?.split(',').map(str::to_owned).collect(),
            "--child" => a.child = Some(value()?),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(a)
}

fn load(minutes: f64) -> Result<Scenario, String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("soak/soak.toml");
    let file = scenario::load(&path).map_err(|e| e.to_string())?;
    let mut sc = scenario::expand(&file, false)
        .pop()
        .ok_or("soak.toml expands to no scenario")?;
    sc.duration = sc.duration.min(minutes * 60.0);
    Ok(sc)
}

fn fmt_mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// Runs one stack (in this process) and prints its table; `Ok(true)` when steady.
// The wall clock is only reported, never used by the simulation.
#[allow(clippy::disallowed_types)]
fn soak_one(args: &Args, name: &str) -> Result<bool, String> {
    let wall = std::time::Instant::now();
    let sc = load(args.minutes)?;
    let inner = stacks::registry()
        .into_iter()
        .find(|s| s.name() == name)
        .ok_or(format!("no stack named {name}"))?;
    let process_start = rss_kib();
    let arrivals = model::arrivals(&sc, args.seed);
    let (tx, rx) = channel();
    let successes = Arc::new(AtomicU64::new(0));
    let stack = Soaked {
        inner,
        samples: tx,
        successes: successes.clone(),
        until: Duration::from_secs_f64(sc.duration),
    };
    let out = sim::run(&sc, &stack, &arrivals, args.seed);
    drop(stack);
    let mut samples: Vec<Sample> = rx.try_iter().collect();
    let n_arrivals = arrivals.len();
    drop(arrivals);
    let offered: u64 = out.data.offered.iter().sum();
    let good: u64 = out.data.good.iter().sum();
    let attempts: u64 = out.data.attempts.iter().sum();
    let per_minute: Vec<String> = out
        .data
        .offered
        .chunks(60)
        .zip(out.data.good.chunks(60))
        .map(|(o, g)| {
            let (o, g): (u64, u64) = (o.iter().sum(), g.iter().sum());
            format!("{:.0}", 100.0 * g as f64 / o.max(1) as f64)
        })
        .collect();
    let transitions = out
        .breaker_transitions
        .map_or("-".to_owned(), |t| t.to_string());
    let hedges = out
        .hedge_extra_load
        .map_or("-".to_owned(), |h| format!("{h:.4}"));
    drop(out);
    samples.push(Sample {
        at_s: None,
        rss_kib: rss_kib(),
        successes: 0,
    });

    println!(
        "\n== {name}: {} virtual minutes, seed {}, {n_arrivals} arrivals ==",
        sc.duration / 60.0,
        args.seed
    );
    println!(
        "run: offered {offered}, good {good} ({:.4}), attempts {attempts}, breaker transitions {transitions}, hedges/request {hedges}",
        good as f64 / offered.max(1) as f64
    );
    println!("goodput by minute (%): {}", per_minute.join(" "));
    println!(
        "process start (before arrivals are generated): {} MiB",
        fmt_mib(process_start)
    );
    println!(
        "{:>8} {:>10} {:>12} {:>14} {:>14}",
        "virtual", "RSS MiB", "successes", "lab log MiB", "RSS-log MiB"
    );
    for s in &samples {
        let at = s
            .at_s
            .map_or("after".to_owned(), |t| format!("{}m", t / 60));
        println!(
            "{at:>8} {:>10} {:>12} {:>14} {:>14}",
            fmt_mib(s.rss_kib),
            s.successes,
            fmt_mib(s.lab_kib()),
            fmt_mib(s.adjusted_kib())
        );
    }
    let warm = samples.iter().find(|s| s.at_s == Some(EVERY.as_secs()));
    let end = samples.iter().rev().find(|s| s.at_s.is_some());
    let (Some(warm), Some(end)) = (warm, end) else {
        return Err("the run produced no warm-up or end sample".into());
    };
    let growth = end.adjusted_kib() as i64 - warm.adjusted_kib() as i64;
    let allowed = MARGIN_KIB.max((warm.adjusted_kib() as f64 * MARGIN_FRACTION) as u64);
    let steady = growth <= allowed as i64;
    println!(
        "verdict: {} (RSS-log {} MiB at 5m -> {} MiB at {}m: {:+.1} MiB, allowed +{} MiB); wall {:.1} s",
        if steady { "STEADY" } else { "GROWING" },
        fmt_mib(warm.adjusted_kib()),
        fmt_mib(end.adjusted_kib()),
        end.at_s.unwrap_or(0) / 60,
        growth as f64 / 1024.0,
        fmt_mib(allowed),
        wall.elapsed().as_secs_f64()
    );
    Ok(steady)
}

// The wall clock is only reported, never used by the simulation.
#[allow(clippy::disallowed_types)]
fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(name) = &args.child {
        return match soak_one(&args, name) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("soak: {e}");
                ExitCode::from(2)
            }
        };
    }
    let wall = std::time::Instant::now();
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    let mut verdicts = Vec::new();
    for name in &args.stacks {
        let status = Command::new(&exe)
            .args(["--child", name, "--seed", &args.seed.to_string()])
            .args(["--minutes", &args.minutes.to_string()])
            .status();
        verdicts.push((name, status.ok().and_then(|s| s.code())));
    }
    println!("\nsummary (wall {:.1} s):", wall.elapsed().as_secs_f64());
    let mut all = true;
    for (name, code) in verdicts {
        let v = match code {
            Some(0) => "steady",
            Some(1) => "GROWING",
            _ => "FAILED",
        };
        all &= code == Some(0);
        println!("  {name:<8} {v}");
    }
    if all {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
