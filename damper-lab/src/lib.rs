//! The damper scenario lab: simulated backends and open-loop load in virtual time, several
//! protection stacks side by side on the same arrivals, and a deterministic report.
//!
//! `cargo run --release -p damper-lab` runs the built-in catalog (`damper-lab/scenarios/*.toml`)
//! and writes `report.json`, one SVG chart per scenario and `index.html` into
//! `target/damper-lab`. Flags: `--scenario FILE` (repeatable), `--seed N`, `--out DIR`,
//! `--quick`.
//!
//! The same run as a library:
//!
//! ```
//! use damper_lab::{Options, run};
//!
//! let text = r#"
//! name = "tiny"
//! duration_s = 4
//! [backend]
//! workers = 4
//! median_ms = 10
//! p99_ms = 40
//! [load]
//! rate = 50
//! deadline_ms = 500
//! [[faults]]
//! start_s = 1
//! end_s = 2
//! error_probability = 1.0
//! "#;
//! let file = damper_lab::scenario::parse(text, "tiny.toml").unwrap();
//! let scenarios = damper_lab::scenario::expand(&file, false);
//! let report = damper_lab::run_scenarios(&scenarios, 7, 1);
//! let naive = &report.scenarios[0].stacks[1];
//! assert_eq!(naive.name, "naive");
//! assert!(naive.metrics.amplification > 3.0); // every failure retried three times
//! # let _ = Options::default();
//! # let _ = run;
//! ```
//!
//! # How the world is modelled
//! - **Backend**: per replica, `workers` concurrent workers, a FIFO queue (unbounded unless
//!   `backend.queue`), lognormal service times from a median and a p99. Like a naive server it
//!   finishes work whose caller has left. Replicas sit behind tower's p2c balancer.
//! - **Faults**: error probability and hangs through `tower-fault-injection`; latency multipliers and
//!   capacity cuts inside the server model; per replica or all.
//! - **Load**: open-loop Poisson arrivals whose rate steps over time; each logical request has a
//!   deadline; optionally impatient users retry a failed request after a pause.
//! - **Stacks**: see [`stacks`]; the driver adds the deadline itself.
//! - **Oracle**: each scenario's limit, the goodput of a clairvoyant client, derived from the
//!   model rather than simulated: see [`oracle`].

pub mod metrics;
pub mod model;
pub mod oracle;
pub mod probe;
pub mod report;
pub mod scenario;
pub mod sim;
pub mod stacks;

use crate::report::{Report, ScenarioReport, StackReport};
use crate::scenario::{Scenario, ScenarioError};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Command-line options.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Scenario files (empty: the built-in catalog).
    pub scenarios: Vec<PathBuf>,
    /// The seed every RNG derives from.
    pub seed: u64,
    /// Output directory.
    pub out: PathBuf,
    /// Compress timelines for a smoke run.
    pub quick: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            scenarios: Vec::new(),
            seed: 1,
            out: PathBuf::from("target/damper-lab"),
            quick: false,
        }
    }
}

/// The built-in catalog's files, sorted by name.
pub fn catalog() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Loads and expands the scenario files `opts` names (or the catalog).
pub fn load_scenarios(opts: &Options) -> Result<Vec<Scenario>, ScenarioError> {
    let files = if opts.scenarios.is_empty() {
        catalog()
    } else {
        opts.scenarios.clone()
    };
    let mut out = Vec::new();
    for f in files {
        out.extend(scenario::expand(&scenario::load(&f)?, opts.quick));
    }
    Ok(out)
}

/// Runs every scenario with every registered stack it asks for, on up to `threads` threads.
/// Each run is its own paused-clock runtime, so the report does not depend on `threads`.
pub fn run_scenarios(scenarios: &[Scenario], seed: u64, threads: usize) -> Report {
    let registry = stacks::registry();
    let arrivals: Vec<Vec<model::Arrival>> = scenarios
        .iter()
        .map(|sc| model::arrivals(sc, seed))
        .collect();
    // The clairvoyant client's goodput on the same arrivals, per scenario (grid cells too).
    let oracles: Vec<oracle::Oracle> = scenarios
        .iter()
        .zip(&arrivals)
        .map(|(sc, a)| oracle::oracle(sc, a.iter().map(|x| x.at)))
        .collect();
    let oracle_goodput: Vec<f64> = oracles.iter().map(oracle::Oracle::goodput_ratio).collect();
    let mut jobs = Vec::new();
    for (i, sc) in scenarios.iter().enumerate() {
        for (j, st) in registry.iter().enumerate() {
            if sc.stacks.iter().any(|s| s == st.name()) {
                jobs.push((i, j));
            }
        }
    }
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<StackReport>> = vec![None; jobs.len()];
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            let tx = tx.clone();
            let (next, jobs, registry, arrivals, oracle_goodput) =
                (&next, &jobs, &registry, &arrivals, &oracle_goodput);
            scope.spawn(move || {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(i, j)) = jobs.get(k) else { break };
                    let sc = &scenarios[i];
                    let stack = &*registry[j];
                    // Each run on a thread of its own: layers may keep per-thread state
                    // (tower-shed's one-in-n sampling counter), which must not carry over from
                    // one run to the next, or the report would depend on which runs shared a
                    // worker thread.
                    let out = std::thread::scope(|s| {
                        s.spawn(|| sim::run(sc, stack, &arrivals[i], seed))
                            .join()
                            .expect("a simulation run panicked")
                    });
                    let (metrics, series) = metrics::summarize(sc, &out, oracle_goodput[i]);
                    let report = StackReport {
                        name: stack.name().to_owned(),
                        metrics,
                        series,
                    };
                    if tx.send((k, report)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for (k, r) in rx {
            results[k] = Some(r);
        }
    });
    let mut results = results.into_iter();
    let mut report = Report {
        scenarios: Vec::new(),
    };
    let mut last = None;
    for &(i, _) in &jobs {
        if last != Some(i) {
            let sc = &scenarios[i];
            report.scenarios.push(ScenarioReport {
                name: sc.name.clone(),
                description: sc.description.clone(),
                window: sc.window,
                oracle_goodput: round4(oracle_goodput[i]),
                oracle_series: oracles[i]
                    .good_per((1.0 / oracle::BIN_S).round() as usize)
                    .into_iter()
                    .map(|x| (x * 10.0).round() / 10.0)
                    .collect(),
                stacks: Vec::new(),
            });
            last = Some(i);
        }
        if let (Some(Some(r)), Some(s)) = (results.next(), report.scenarios.last_mut()) {
            s.stacks.push(r);
        }
    }
    report
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// Loads the scenarios `opts` names and runs them on every available core.
pub fn run(opts: &Options) -> Result<Report, ScenarioError> {
    let scenarios = load_scenarios(opts)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(run_scenarios(&scenarios, opts.seed, threads))
}
