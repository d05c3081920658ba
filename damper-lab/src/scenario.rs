//! Scenario files: the TOML schema, validation with errors that name the field, grid expansion
//! and `--quick` compression.
//!
//! ```toml
//! name = "outage"
//! duration_s = 60
//!
//! [backend]
//! workers = 26          # concurrent workers per replica
//! median_ms = 10        # lognormal service time
//! p99_ms = 50
//!
//! [load]
//! rate = 1000           # or `load = 0.5` (fraction of capacity)
//! deadline_ms = 1000
//!
//! [[faults]]
//! start_s = 10
//! end_s = 40
//! error_probability = 1.0
//! ```

use serde::Deserialize;
use std::fmt;
use std::path::Path;

/// The stacks the lab knows, in report order.
pub const KNOWN_STACKS: &[&str] = &["none", "naive", "tower", "damped", "fixed-breaker"];

/// The stacks a scenario runs when its file names none.
pub const DEFAULT_STACKS: &[&str] = &["none", "naive", "tower", "damped"];

/// A scenario file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// Scenario name (grid cells append `/load85-trigger10s`).
    pub name: String,
    /// One line on what it shows.
    #[serde(default)]
    pub description: String,
    /// Length of the arrival process, in seconds of virtual time.
    pub duration_s: f64,
    /// Stacks to run (default: all that exist).
    #[serde(default)]
    pub stacks: Option<Vec<String>>,
    /// The simulated backend.
    pub backend: BackendFile,
    /// The offered load.
    pub load: LoadFile,
    /// Fault windows.
    #[serde(default)]
    pub faults: Vec<FaultFile>,
    /// `[start_s, end_s]` of the trigger, for recovery and amplification (default: the span of
    /// the faults, else of the load steps).
    #[serde(default)]
    pub window: Option<[f64; 2]>,
    /// The `naive` stack's knobs.
    #[serde(default)]
    pub naive: NaiveConfig,
    /// The `tower` stack's knobs.
    #[serde(default)]
    pub tower: TowerConfig,
    /// Expands the scenario into a grid of base load × trigger length.
    #[serde(default)]
    pub grid: Option<GridFile>,
}

/// `[backend]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendFile {
    /// Replicas behind the power-of-two-choices balancer.
    #[serde(default = "one")]
    pub replicas: u32,
    /// Concurrent workers per replica.
    pub workers: u32,
    /// Queue bound per replica (absent: unbounded, like a naive server).
    #[serde(default)]
    pub queue: Option<u32>,
    /// Median service time.
    pub median_ms: f64,
    /// 99th-percentile service time.
    pub p99_ms: f64,
}

/// `[load]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadFile {
    /// Arrivals per second.
    #[serde(default)]
    pub rate: Option<f64>,
    /// Arrivals as a fraction of the backend's capacity (instead of `rate`).
    #[serde(default)]
    pub load: Option<f64>,
    /// Deadline of each logical request.
    pub deadline_ms: f64,
    /// Independent clients, each with its own stack (arrivals are spread uniformly).
    #[serde(default = "one")]
    pub clients: u32,
    /// Rate changes over time.
    #[serde(default)]
    pub steps: Vec<StepFile>,
    /// Impatient users who retry a failed logical request.
    #[serde(default)]
    pub impatient: Option<Impatient>,
}

/// `[[load.steps]]`: from `at_s` on, the rate (or load) is this.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepFile {
    /// When the new rate starts.
    pub at_s: f64,
    /// New arrivals per second.
    #[serde(default)]
    pub rate: Option<f64>,
    /// New rate as a fraction of capacity.
    #[serde(default)]
    pub load: Option<f64>,
}

/// `[load.impatient]`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Impatient {
    /// Fraction of users who retry after a failure.
    #[serde(default = "one_f")]
    pub fraction: f64,
    /// How many times a user retries.
    #[serde(default = "one")]
    pub retries: u32,
    /// Pause before the user retries.
    pub pause_ms: f64,
}

/// `[[faults]]`: one window of misbehaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultFile {
    /// Start, seconds from the beginning.
    pub start_s: f64,
    /// End (exclusive).
    pub end_s: f64,
    /// Replicas affected (absent: all).
    #[serde(default)]
    pub replicas: Option<Vec<u32>>,
    /// Probability that a request fails at once.
    #[serde(default)]
    pub error_probability: f64,
    /// Requests hang (never answer).
    #[serde(default)]
    pub hang: bool,
    /// Service-time multiplier.
    #[serde(default = "one_f")]
    pub latency_multiplier: f64,
    /// Probability that the multiplier applies to a request (default 1).
    #[serde(default = "one_f")]
    pub multiplier_probability: f64,
    /// Fraction of workers left.
    #[serde(default = "one_f")]
    pub capacity: f64,
    /// Flapping: on for `flap_on_s`, off for `flap_off_s`, repeated within the window.
    #[serde(default)]
    pub flap_on_s: Option<f64>,
    /// See `flap_on_s`.
    #[serde(default)]
    pub flap_off_s: Option<f64>,
}

/// `[naive]`: a fixed timeout and immediate retries.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NaiveConfig {
    /// Per-attempt timeout.
    pub timeout_ms: f64,
    /// Immediate retries.
    pub retries: u32,
}

impl Default for NaiveConfig {
    fn default() -> Self {
        Self {
            timeout_ms: 300.0,
            retries: 3,
        }
    }
}

/// `[tower]`: which of tower's own layers the scenario calls for.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TowerConfig {
    /// Per-attempt `Timeout` (0 disables).
    pub timeout_ms: f64,
    /// `Retry` with a `TpsBudget` at this percent (0 disables retries).
    pub retry_percent: f64,
    /// Most retries per request.
    pub max_retries: u32,
    /// Client-side `ConcurrencyLimit` + `LoadShed`.
    pub concurrency_limit: Option<u32>,
    /// Server-side `ConcurrencyLimit` + `LoadShed`, per replica.
    pub server_limit: Option<u32>,
    /// `Hedge`.
    pub hedge: Option<HedgeConfig>,
}

impl Default for TowerConfig {
    fn default() -> Self {
        Self {
            timeout_ms: 300.0,
            retry_percent: 20.0,
            max_retries: 3,
            concurrency_limit: None,
            server_limit: None,
            hedge: None,
        }
    }
}

/// `[tower.hedge]`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HedgeConfig {
    /// Latency percentile after which a hedge is sent.
    pub percentile: f64,
    /// Samples needed before hedging starts.
    pub min_data_points: u64,
    /// Histogram rotation period.
    pub period_s: f64,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        Self {
            percentile: 0.95,
            min_data_points: 100,
            period_s: 5.0,
        }
    }
}

/// `[grid]`: base load × trigger length (the first fault's length becomes the trigger), and/or
/// fleet size × rate per client. Each pair is given whole or not at all. With both pairs the
/// fleet sets the rate and the load sets the backend's size (see [`GridFile::load`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridFile {
    /// Base loads, as fractions of capacity. Without a fleet (`clients`, `rate_per_client`)
    /// each cell sets the rate to this share of the backend as written; with one, the cell's
    /// rate is the fleet's and each cell sets `backend.workers` to the fewest per replica that
    /// keep the backend at or below this share: `ceil(rate × mean service time / (load ×
    /// replicas))`, at least 1.
    #[serde(default)]
    pub load: Vec<f64>,
    /// Trigger lengths in seconds.
    #[serde(default)]
    pub trigger_s: Vec<f64>,
    /// Fleet sizes: each cell sets `load.clients`.
    #[serde(default)]
    pub clients: Vec<u32>,
    /// Arrivals per second per client: each cell sets `load.rate` to clients × this.
    #[serde(default)]
    pub rate_per_client: Vec<f64>,
    /// Workers per request per second of the cell's rate: each cell sets `backend.workers` to
    /// `ceil(rate × workers_per_rps / replicas)`, at least 1, so that every cell runs the
    /// backend at the same utilisation. Absent: `backend.workers` as written. Needs a fleet
    /// and no `load` (which sizes the backend itself).
    #[serde(default)]
    pub workers_per_rps: Option<f64>,
    /// Cells left out, by the part of their name after `NAME/` (e.g. `"c1000-r100"`). Each
    /// must name a cell of the grid, and at least one cell must remain.
    #[serde(default)]
    pub skip: Vec<String>,
}

const fn one() -> u32 {
    1
}
const fn one_f() -> f64 {
    1.0
}

/// A scenario file that could not be used: which field, and why.
#[derive(Debug, Clone, PartialEq)]
pub enum ScenarioError {
    /// The file could not be read.
    Io {
        /// The path.
        path: String,
        /// The OS error.
        message: String,
    },
    /// The TOML did not match the schema (the message names the field).
    Parse {
        /// Where it came from.
        source: String,
        /// toml's message, which names the key and the line.
        message: String,
    },
    /// A value is out of range.
    Invalid {
        /// Where it came from.
        source: String,
        /// The offending field, as a TOML path.
        field: String,
        /// Why.
        reason: String,
    },
}

impl ScenarioError {
    /// The field the error is about, where known.
    pub fn field(&self) -> Option<&str> {
        match self {
            ScenarioError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScenarioError::Io { path, message } => write!(f, "{path}: {message}"),
            ScenarioError::Parse { source, message } => {
                write!(f, "{source}: {}", message.trim_end())
            }
            ScenarioError::Invalid {
                source,
                field,
                reason,
            } => write!(f, "{source}: `{field}` {reason}"),
        }
    }
}

impl std::error::Error for ScenarioError {}

/// A fault window, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// Start, seconds.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
    /// Replicas affected (`None`: all).
    pub replicas: Option<Vec<u32>>,
    /// Error probability.
    pub error_probability: f64,
    /// Hang.
    pub hang: bool,
    /// Service-time multiplier.
    pub latency_multiplier: f64,
    /// Probability the multiplier applies.
    pub multiplier_probability: f64,
    /// Fraction of workers left.
    pub capacity: f64,
}

impl Fault {
    /// Whether the fault touches `replica`.
    pub fn applies_to(&self, replica: u32) -> bool {
        self.replicas.as_ref().is_none_or(|r| r.contains(&replica))
    }
}

/// A scenario ready to run: validated, grid cell chosen, times resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Name in the report.
    pub name: String,
    /// One line on what it shows.
    pub description: String,
    /// Arrivals stop after this many seconds.
    pub duration: f64,
    /// Stacks requested.
    pub stacks: Vec<String>,
    /// Replicas.
    pub replicas: u32,
    /// Workers per replica.
    pub workers: u32,
    /// Queue bound per replica.
    pub queue: Option<u32>,
    /// Median service time, seconds.
    pub median: f64,
    /// p99 service time, seconds.
    pub p99: f64,
    /// Rate steps `(from_s, rps)`, the first at 0.
    pub rates: Vec<(f64, f64)>,
    /// Deadline, seconds.
    pub deadline: f64,
    /// Clients.
    pub clients: u32,
    /// Impatient users.
    pub impatient: Option<Impatient>,
    /// Faults, flapping expanded.
    pub faults: Vec<Fault>,
    /// Trigger window for recovery and amplification.
    pub window: Option<(f64, f64)>,
    /// When the trigger is a load step (no faults): the plateau after it has had 2 s to settle,
    /// where an adaptive limit is in use and its steadiness (`limit_cv`) is measured.
    pub plateau: Option<(f64, f64)>,
    /// Seconds goodput must hold ≥ 95% to count as recovered.
    pub hold: f64,
    /// `naive` knobs.
    pub naive: NaiveConfig,
    /// `tower` knobs.
    pub tower: TowerConfig,
}

impl Scenario {
    /// Mean service time of the lognormal, seconds.
    pub fn mean_service(&self) -> f64 {
        mean_service(self.median, self.p99)
    }

    /// Requests per second all replicas can serve when healthy.
    pub fn capacity_rps(&self) -> f64 {
        f64::from(self.workers) * f64::from(self.replicas) / self.mean_service()
    }

    /// The arrival rate at `t` seconds.
    pub fn rate_at(&self, t: f64) -> f64 {
        self.rates
            .iter()
            .rev()
            .find(|(from, _)| *from <= t)
            .map_or(0.0, |r| r.1)
    }
}

/// The 99th percentile of the standard normal distribution.
const Z99: f64 = 2.326_347_874_040_841;

/// Mean of a lognormal with this median and p99.
pub fn mean_service(median: f64, p99: f64) -> f64 {
    let sigma = (p99 / median).ln() / Z99;
    median * (sigma * sigma / 2.0).exp()
}

struct Check<'a> {
    source: &'a str,
}

impl Check<'_> {
    fn err(&self, field: impl Into<String>, reason: &str) -> ScenarioError {
        ScenarioError::Invalid {
            source: self.source.to_owned(),
            field: field.into(),
            reason: reason.to_owned(),
        }
    }

    fn positive(&self, field: &str, v: f64) -> Result<(), ScenarioError> {
        if v.is_finite() && v > 0.0 {
            Ok(())
        } else {
            Err(self.err(field, "must be a finite number greater than zero"))
        }
    }

    fn unit(&self, field: &str, v: f64) -> Result<(), ScenarioError> {
        if (0.0..=1.0).contains(&v) {
            Ok(())
        } else {
            Err(self.err(field, "must be in [0, 1]"))
        }
    }
}

/// Parses a scenario file's text; `source` names it in errors.
pub fn parse(text: &str, source: &str) -> Result<ScenarioFile, ScenarioError> {
    let file: ScenarioFile = toml::from_str(text).map_err(|e| ScenarioError::Parse {
        source: source.to_owned(),
        message: e.to_string(),
    })?;
    validate(&file, source)?;
    Ok(file)
}

/// Reads and parses a scenario file.
pub fn load(path: &Path) -> Result<ScenarioFile, ScenarioError> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ScenarioError::Io {
        path: source.clone(),
        message: e.to_string(),
    })?;
    parse(&text, &source)
}

fn validate(f: &ScenarioFile, source: &str) -> Result<(), ScenarioError> {
    let c = Check { source };
    if f.name.is_empty() || f.name.contains(['/', '\\', ' ']) {
        return Err(c.err("name", "must be non-empty, without spaces or slashes"));
    }
    c.positive("duration_s", f.duration_s)?;
    if let Some(stacks) = &f.stacks {
        for (i, s) in stacks.iter().enumerate() {
            if !KNOWN_STACKS.contains(&s.as_str()) {
                return Err(c.err(
                    format!("stacks[{i}]"),
                    &format!("must be one of {}", KNOWN_STACKS.join(", ")),
                ));
            }
        }
    }
    let b = &f.backend;
    if b.replicas == 0 {
        return Err(c.err("backend.replicas", "must be at least 1"));
    }
    if b.workers == 0 {
        return Err(c.err("backend.workers", "must be at least 1"));
    }
    if b.queue == Some(0) {
        return Err(c.err(
            "backend.queue",
            "must be at least 1 (omit it for unbounded)",
        ));
    }
    c.positive("backend.median_ms", b.median_ms)?;
    c.positive("backend.p99_ms", b.p99_ms)?;
    if b.p99_ms < b.median_ms {
        return Err(c.err("backend.p99_ms", "must be at least backend.median_ms"));
    }
    let l = &f.load;
    match (l.rate, l.load, &f.grid) {
        (Some(r), None, _) => c.positive("load.rate", r)?,
        (None, Some(x), _) => c.positive("load.load", x)?,
        (None, None, Some(g)) if !g.load.is_empty() || !g.rate_per_client.is_empty() => {}
        (Some(_), Some(_), _) => {
            return Err(c.err("load.rate", "give either load.rate or load.load, not both"));
        }
        (None, None, _) => return Err(c.err("load.rate", "is required (or load.load)")),
    }
    c.positive("load.deadline_ms", l.deadline_ms)?;
    if l.clients == 0 {
        return Err(c.err("load.clients", "must be at least 1"));
    }
    let mut last = 0.0;
    for (i, s) in l.steps.iter().enumerate() {
        let p = format!("load.steps[{i}]");
        if !(s.at_s.is_finite() && s.at_s > last) {
            return Err(c.err(
                format!("{p}.at_s"),
                "must be after the previous step and greater than zero",
            ));
        }
        last = s.at_s;
        match (s.rate, s.load) {
            (Some(r), None) => c.positive(&format!("{p}.rate"), r)?,
            (None, Some(x)) => c.positive(&format!("{p}.load"), x)?,
            _ => return Err(c.err(format!("{p}.rate"), "give exactly one of rate or load")),
        }
    }
    if let Some(imp) = &l.impatient {
        c.unit("load.impatient.fraction", imp.fraction)?;
        c.positive("load.impatient.pause_ms", imp.pause_ms)?;
    }
    for (i, fault) in f.faults.iter().enumerate() {
        let p = format!("faults[{i}]");
        if !(fault.start_s.is_finite() && fault.start_s >= 0.0) {
            return Err(c.err(format!("{p}.start_s"), "must be zero or more"));
        }
        if !(fault.end_s.is_finite() && fault.end_s > fault.start_s) {
            return Err(c.err(format!("{p}.end_s"), "must be after start_s"));
        }
        c.unit(&format!("{p}.error_probability"), fault.error_probability)?;
        c.unit(
            &format!("{p}.multiplier_probability"),
            fault.multiplier_probability,
        )?;
        c.positive(&format!("{p}.latency_multiplier"), fault.latency_multiplier)?;
        if !(fault.capacity > 0.0 && fault.capacity <= 1.0) {
            return Err(c.err(format!("{p}.capacity"), "must be in (0, 1]"));
        }
        if let Some(r) = &fault.replicas
            && let Some(bad) = r.iter().find(|r| **r >= b.replicas)
        {
            return Err(c.err(
                format!("{p}.replicas"),
                &format!(
                    "names replica {bad}, but backend.replicas is {}",
                    b.replicas
                ),
            ));
        }
        match (fault.flap_on_s, fault.flap_off_s) {
            (None, None) => {}
            (Some(on), Some(off)) => {
                c.positive(&format!("{p}.flap_on_s"), on)?;
                c.positive(&format!("{p}.flap_off_s"), off)?;
            }
            _ => {
                return Err(c.err(
                    format!("{p}.flap_on_s"),
                    "flap_on_s and flap_off_s go together",
                ));
            }
        }
    }
    // Error and hang windows become one tower-fault-injection schedule per replica, so they may not
    // overlap on a replica.
    for (i, a) in f.faults.iter().enumerate() {
        for b2 in &f.faults[..i] {
            let injects = |x: &FaultFile| x.error_probability > 0.0 || x.hang;
            let shared_replica = (0..b.replicas).any(|r| {
                a.replicas.as_ref().is_none_or(|v| v.contains(&r))
                    && b2.replicas.as_ref().is_none_or(|v| v.contains(&r))
            });
            if injects(a)
                && injects(b2)
                && shared_replica
                && a.start_s < b2.end_s
                && b2.start_s < a.end_s
            {
                return Err(c.err(
                    format!("faults[{i}].start_s"),
                    "error/hang windows must not overlap on a replica",
                ));
            }
        }
    }
    if let Some([a, z]) = f.window
        && !(a.is_finite() && z > a)
    {
        return Err(c.err("window", "must be [start_s, end_s] with end after start"));
    }
    c.positive("naive.timeout_ms", f.naive.timeout_ms)?;
    let t = &f.tower;
    if !(t.timeout_ms.is_finite() && t.timeout_ms >= 0.0) {
        return Err(c.err("tower.timeout_ms", "must be zero (off) or more"));
    }
    if !(0.0..=1000.0).contains(&t.retry_percent) {
        return Err(c.err("tower.retry_percent", "must be in [0, 1000]"));
    }
    if t.concurrency_limit == Some(0) {
        return Err(c.err("tower.concurrency_limit", "must be at least 1"));
    }
    if t.server_limit == Some(0) {
        return Err(c.err("tower.server_limit", "must be at least 1"));
    }
    if let Some(h) = &t.hedge {
        if !(h.percentile > 0.0 && h.percentile < 1.0) {
            return Err(c.err("tower.hedge.percentile", "must be in (0, 1)"));
        }
        if !(1.0..=60.0).contains(&h.period_s) {
            return Err(c.err("tower.hedge.period_s", "must be in [1, 60]"));
        }
    }
    if let Some(g) = &f.grid {
        let loads = !(g.load.is_empty() && g.trigger_s.is_empty());
        let fleet = !(g.clients.is_empty() && g.rate_per_client.is_empty());
        if !loads && !fleet {
            return Err(c.err(
                "grid",
                "must list load and trigger_s, or clients and rate_per_client",
            ));
        }
        if loads {
            if g.load.is_empty() {
                return Err(c.err("grid.load", "must list at least one load"));
            }
            for (i, x) in g.load.iter().enumerate() {
                c.positive(&format!("grid.load[{i}]"), *x)?;
            }
            if g.trigger_s.is_empty() {
                return Err(c.err("grid.trigger_s", "must list at least one length"));
            }
            for (i, x) in g.trigger_s.iter().enumerate() {
                c.positive(&format!("grid.trigger_s[{i}]"), *x)?;
            }
            if f.faults.is_empty() {
                return Err(c.err("faults", "a grid needs a first fault to use as the trigger"));
            }
        }
        if fleet {
            if g.clients.is_empty() {
                return Err(c.err("grid.clients", "must list at least one fleet size"));
            }
            if let Some(i) = g.clients.iter().position(|n| *n == 0) {
                return Err(c.err(format!("grid.clients[{i}]"), "must be at least 1"));
            }
            if g.rate_per_client.is_empty() {
                return Err(c.err("grid.rate_per_client", "must list at least one rate"));
            }
            for (i, x) in g.rate_per_client.iter().enumerate() {
                c.positive(&format!("grid.rate_per_client[{i}]"), *x)?;
            }
        }
        if let Some(w) = g.workers_per_rps {
            c.positive("grid.workers_per_rps", w)?;
            if !fleet {
                return Err(c.err(
                    "grid.workers_per_rps",
                    "needs clients and rate_per_client (it scales the workers with their rate)",
                ));
            }
            if loads {
                return Err(c.err(
                    "grid.workers_per_rps",
                    "cannot be combined with grid.load, which sizes the workers itself",
                ));
            }
        }
        let names: Vec<String> = grid_cells(g).into_iter().map(|(n, _)| n).collect();
        for (i, s) in g.skip.iter().enumerate() {
            if !names.contains(s) {
                return Err(c.err(
                    format!("grid.skip[{i}]"),
                    &format!("`{s}` names no cell of this grid ({})", names.join(", ")),
                ));
            }
        }
        if names.iter().all(|n| g.skip.contains(n)) {
            return Err(c.err("grid.skip", "leaves no cell to run"));
        }
    }
    Ok(())
}

/// How much `--quick` compresses the timeline (and the recovery hold).
pub const QUICK_SCALE: f64 = 0.25;

/// Resolves a parsed file into the scenarios it describes (one, or one per grid cell).
/// `quick` compresses every time position by [`QUICK_SCALE`]; latencies, timeouts and deadlines
/// stay as written.
pub fn expand(f: &ScenarioFile, quick: bool) -> Vec<Scenario> {
    let q = if quick { QUICK_SCALE } else { 1.0 };
    let Some(g) = &f.grid else {
        return vec![resolve(f, f.name.clone(), Cell::default(), q)];
    };
    grid_cells(g)
        .into_iter()
        .filter(|(suffix, _)| !g.skip.contains(suffix))
        .map(|(suffix, cell)| resolve(f, format!("{}/{suffix}", f.name), cell, q))
        .collect()
}

/// Every cell of `g`, skipped ones too, with its name after `NAME/`: loads × triggers ×
/// fleet sizes × rates per client, in that order of nesting.
fn grid_cells(g: &GridFile) -> Vec<(String, Cell)> {
    // Either dimension may be absent: it then contributes one cell that changes nothing.
    let mut loads: Vec<(String, Option<(f64, f64)>)> = Vec::new();
    for &load in &g.load {
        for &trig in &g.trigger_s {
            let name = format!("load{}-trigger{}s", (load * 100.0).round(), fmt_num(trig));
            loads.push((name, Some((load, trig))));
        }
    }
    if loads.is_empty() {
        loads.push((String::new(), None));
    }
    let mut fleets: Vec<(String, Option<(u32, f64)>)> = Vec::new();
    for &n in &g.clients {
        for &r in &g.rate_per_client {
            fleets.push((format!("c{n}-r{}", fmt_num(r)), Some((n, r))));
        }
    }
    if fleets.is_empty() {
        fleets.push((String::new(), None));
    }
    let mut out = Vec::new();
    for (load_name, load) in &loads {
        for (fleet_name, fleet) in &fleets {
            let parts: Vec<&str> = [load_name.as_str(), fleet_name.as_str()]
                .into_iter()
                .filter(|p| !p.is_empty())
                .collect();
            let cell = Cell {
                load: load.map(|l| l.0),
                trigger: load.map(|l| l.1),
                fleet: *fleet,
                workers_per_rps: g.workers_per_rps,
            };
            out.push((parts.join("-"), cell));
        }
    }
    out
}

/// What one grid cell changes in the file it expands.
#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    /// Base load, as a fraction of capacity.
    load: Option<f64>,
    /// Trigger length, seconds.
    trigger: Option<f64>,
    /// Clients and the rate of each.
    fleet: Option<(u32, f64)>,
    /// See [`GridFile::workers_per_rps`].
    workers_per_rps: Option<f64>,
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

fn resolve(f: &ScenarioFile, name: String, cell: Cell, q: f64) -> Scenario {
    let Cell {
        load: grid_load,
        trigger,
        fleet,
        workers_per_rps,
    } = cell;
    let b = &f.backend;
    let (median, p99) = (b.median_ms / 1e3, b.p99_ms / 1e3);
    let replicas = f64::from(b.replicas);
    // Whole workers per replica, at least one.
    let whole = |x: f64| (x.ceil() as u32).max(1);
    let workers = match (fleet, grid_load, workers_per_rps) {
        (Some((n, r)), None, Some(w)) => whole(f64::from(n) * r * w / replicas),
        (Some((n, r)), Some(x), _) => {
            whole(f64::from(n) * r * mean_service(median, p99) / (x * replicas))
        }
        _ => b.workers,
    };
    let capacity = f64::from(workers) * replicas / mean_service(median, p99);
    let rps = |rate: Option<f64>, load: Option<f64>| match (rate, load) {
        (Some(r), _) => r,
        (None, Some(x)) => x * capacity,
        (None, None) => 0.0,
    };
    let base = match (fleet, grid_load) {
        (Some((n, r)), _) => f64::from(n) * r,
        (None, Some(x)) => x * capacity,
        (None, None) => rps(f.load.rate, f.load.load),
    };
    let mut rates = vec![(0.0, base)];
    for s in &f.load.steps {
        rates.push((s.at_s * q, rps(s.rate, s.load)));
    }
    let mut faults = Vec::new();
    for (i, ff) in f.faults.iter().enumerate() {
        let end = match (i, trigger) {
            (0, Some(t)) => ff.start_s + t,
            _ => ff.end_s,
        };
        let mk = |start: f64, end: f64| Fault {
            start: start * q,
            end: end * q,
            replicas: ff.replicas.clone(),
            error_probability: ff.error_probability,
            hang: ff.hang,
            latency_multiplier: ff.latency_multiplier,
            multiplier_probability: ff.multiplier_probability,
            capacity: ff.capacity,
        };
        match (ff.flap_on_s, ff.flap_off_s) {
            (Some(on), Some(off)) => {
                let mut t = ff.start_s;
                while t < end {
                    let e = (t + on).min(end);
                    faults.push(mk(t, e));
                    t = e + off;
                }
            }
            _ => faults.push(mk(ff.start_s, end)),
        }
    }
    let window = match f.window {
        Some([a, z]) => Some((a * q, z * q)),
        None if !faults.is_empty() => Some((
            faults.iter().map(|x| x.start).fold(f64::INFINITY, f64::min),
            faults.iter().map(|x| x.end).fold(0.0, f64::max),
        )),
        None if rates.len() > 1 => Some((rates[1].0, rates.last().map_or(0.0, |r| r.0))),
        None => None,
    };
    let plateau = match window {
        Some((a, z)) if faults.is_empty() && a + 2.0 * q < z => Some((a + 2.0 * q, z)),
        _ => None,
    };
    let stacks = f
        .stacks
        .clone()
        .unwrap_or_else(|| DEFAULT_STACKS.iter().map(|s| (*s).to_owned()).collect());
    Scenario {
        name,
        description: f.description.clone(),
        duration: f.duration_s * q,
        stacks,
        replicas: b.replicas,
        workers,
        queue: b.queue,
        median,
        p99,
        rates,
        deadline: f.load.deadline_ms / 1e3,
        clients: fleet.map_or(f.load.clients, |(n, _)| n),
        impatient: f.load.impatient,
        faults,
        window,
        plateau,
        hold: 5.0 * q,
        naive: f.naive,
        tower: f.tower,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
name = "t"
duration_s = 20
[backend]
workers = 10
median_ms = 10
p99_ms = 50
[load]
rate = 100
deadline_ms = 500
[[faults]]
start_s = 5
end_s = 10
error_probability = 1.0
"#;

    fn with(extra: &str) -> String {
        format!("{OK}{extra}")
    }

    #[test]
    fn a_good_file_parses_and_resolves() {
        let f = parse(OK, "ok.toml").unwrap();
        let s = expand(&f, false);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].window, Some((5.0, 10.0)));
        assert_eq!(s[0].rate_at(3.0), 100.0);
        assert_eq!(s[0].stacks.len(), DEFAULT_STACKS.len());
        let quick = expand(&f, true);
        assert_eq!(quick[0].duration, 5.0);
        assert_eq!(quick[0].faults[0].start, 1.25);
    }

    /// (file text, the field the error must name)
    #[test]
    fn invalid_files_name_the_field() {
        let table: Vec<(String, &str)> = vec![
            (OK.replace("workers = 10", "workers = 0"), "backend.workers"),
            (OK.replace("p99_ms = 50", "p99_ms = 5"), "backend.p99_ms"),
            (
                OK.replace("median_ms = 10", "median_ms = -1"),
                "backend.median_ms",
            ),
            (
                OK.replace("duration_s = 20", "duration_s = 0"),
                "duration_s",
            ),
            (
                OK.replace("rate = 100", "rate = 100\nload = 0.5"),
                "load.rate",
            ),
            (OK.replace("rate = 100", ""), "load.rate"),
            (
                OK.replace("deadline_ms = 500", "deadline_ms = 0"),
                "load.deadline_ms",
            ),
            (
                OK.replace("error_probability = 1.0", "error_probability = 1.5"),
                "faults[0].error_probability",
            ),
            (OK.replace("end_s = 10", "end_s = 4"), "faults[0].end_s"),
            (with("capacity = 0\n"), "faults[0].capacity"),
            (with("replicas = [3]\n"), "faults[0].replicas"),
            (with("flap_on_s = 2\n"), "faults[0].flap_on_s"),
            (
                with("[[faults]]\nstart_s = 8\nend_s = 12\nhang = true\n"),
                "faults[1].start_s",
            ),
            (
                with("[[load.steps]]\nat_s = 0\nrate = 5\n"),
                "load.steps[0].at_s",
            ),
            (
                with("[load.impatient]\nfraction = 2\npause_ms = 100\n"),
                "load.impatient.fraction",
            ),
            (with("[tower]\nretry_percent = -1\n"), "tower.retry_percent"),
            (
                with("[tower.hedge]\npercentile = 1.0\n"),
                "tower.hedge.percentile",
            ),
            (with("[grid]\nload = []\ntrigger_s = [2]\n"), "grid.load"),
            (
                OK.replace("name = \"t\"", "name = \"t\"\nstacks = [\"fancy\"]"),
                "stacks[0]",
            ),
            (OK.replace("name = \"t\"", "name = \"a b\""), "name"),
        ];
        for (text, field) in table {
            let err = parse(&text, "x.toml").unwrap_err();
            assert_eq!(err.field(), Some(field), "{err}");
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    /// Schema errors come from toml and still name the key.
    #[test]
    fn schema_errors_name_the_key() {
        let table: &[(String, &str)] = &[
            (OK.replace("workers = 10", "wrkers = 10"), "wrkers"),
            (OK.replace("workers = 10", ""), "workers"),
            (OK.replace("rate = 100", "rate = \"fast\""), "rate"),
            (with("bogus = 1\n"), "bogus"),
            (
                with("[grid]\nclients = [-1]\nrate_per_client = [1]\n"),
                "clients",
            ),
        ];
        for (text, key) in table {
            let err = parse(text, "x.toml").unwrap_err();
            assert!(matches!(err, ScenarioError::Parse { .. }), "{err}");
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn grid_expands_into_named_cells() {
        let text =
            with("[grid]\nload = [0.5, 0.85]\ntrigger_s = [2, 10]\n").replace("rate = 100\n", "");
        let f = parse(&text, "g.toml").unwrap();
        let cells = expand(&f, false);
        let names: Vec<_> = cells.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "t/load50-trigger2s",
                "t/load50-trigger10s",
                "t/load85-trigger2s",
                "t/load85-trigger10s"
            ]
        );
        assert_eq!(cells[1].faults[0].end, 15.0);
        let cap = cells[3].capacity_rps();
        assert!((cells[3].rate_at(0.0) - 0.85 * cap).abs() < 1e-9);
    }

    #[test]
    fn a_fleet_grid_sets_clients_rate_and_workers() {
        let text =
            with("[grid]\nclients = [1, 100]\nrate_per_client = [2, 10]\nworkers_per_rps = 0.02\n")
                .replace("rate = 100\n", "");
        let cells = expand(&parse(&text, "g.toml").unwrap(), false);
        let names: Vec<_> = cells.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["t/c1-r2", "t/c1-r10", "t/c100-r2", "t/c100-r10"]);
        let c = &cells[3];
        assert_eq!(c.clients, 100);
        assert_eq!(c.rate_at(0.0), 1000.0);
        assert_eq!(c.workers, 20);
        // At least one worker, and the fault window is the file's own.
        assert_eq!(cells[0].workers, 1);
        assert_eq!((c.faults[0].start, c.faults[0].end), (5.0, 10.0));
        // Both dimensions at once: names join, each cell takes both. The fleet sets the rate
        // (10 × 5, not the file's 100 or half the file's backend); the load sizes the backend
        // to the fewest workers that keep it at or below 50%.
        let text =
            with("[grid]\nload = [0.5]\ntrigger_s = [2]\nclients = [10]\nrate_per_client = [5]\n");
        let cells = expand(&parse(&text, "g.toml").unwrap(), false);
        assert_eq!(cells.len(), 1);
        let c = &cells[0];
        assert_eq!(c.name, "t/load50-trigger2s-c10-r5");
        assert_eq!(c.clients, 10);
        assert_eq!(c.rate_at(0.0), 50.0);
        assert_eq!(c.faults[0].end, 7.0);
        // 50 rps at a ~12.7 ms mean service time is 0.63 busy workers: 2 keep it under 50%.
        assert_eq!(c.workers, 2);
        let load = c.rate_at(0.0) / c.capacity_rps();
        assert!(load <= 0.5 && load > 0.25, "{load}");
    }

    #[test]
    fn a_grid_skips_the_cells_it_names() {
        let text =
            with("[grid]\nclients = [1, 100]\nrate_per_client = [2, 10]\nskip = [\"c100-r10\"]\n");
        let cells = expand(&parse(&text, "g.toml").unwrap(), false);
        let names: Vec<_> = cells.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["t/c1-r2", "t/c1-r10", "t/c100-r2"]);
        // Joined names are skipped whole, the other cells of the same load kept.
        let text = with(
            "[grid]\nload = [0.5, 0.8]\ntrigger_s = [2]\nclients = [1, 2]\nrate_per_client = [5]\n\
             skip = [\"load80-trigger2s-c2-r5\"]\n",
        );
        let cells = expand(&parse(&text, "g.toml").unwrap(), false);
        let names: Vec<_> = cells.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "t/load50-trigger2s-c1-r5",
                "t/load50-trigger2s-c2-r5",
                "t/load80-trigger2s-c1-r5"
            ]
        );
    }

    #[test]
    fn a_fleet_grid_rejects_half_pairs_and_bad_values() {
        for (grid, field) in [
            ("clients = [10]\n", "grid.rate_per_client"),
            ("rate_per_client = [10]\n", "grid.clients"),
            ("clients = [0]\nrate_per_client = [1]\n", "grid.clients[0]"),
            (
                "clients = [1]\nrate_per_client = [-1]\n",
                "grid.rate_per_client[0]",
            ),
            (
                "clients = [1]\nrate_per_client = [1]\nworkers_per_rps = 0\n",
                "grid.workers_per_rps",
            ),
            ("workers_per_rps = 1\n", "grid"),
            ("load = [0.5]\n", "grid.trigger_s"),
            ("trigger_s = [2]\n", "grid.load"),
            ("load = [0.5]\ntrigger_s = [0]\n", "grid.trigger_s[0]"),
            (
                "load = [0.5]\ntrigger_s = [2]\nworkers_per_rps = 0.02\n",
                "grid.workers_per_rps",
            ),
            (
                "load = [0.5]\ntrigger_s = [2]\nclients = [1]\nrate_per_client = [1]\n\
                 workers_per_rps = 0.02\n",
                "grid.workers_per_rps",
            ),
            (
                "clients = [1]\nrate_per_client = [inf]\n",
                "grid.rate_per_client[0]",
            ),
            (
                "clients = [1, 2]\nrate_per_client = [1]\nskip = [\"c2-r1\", \"c3-r1\"]\n",
                "grid.skip[1]",
            ),
            (
                "clients = [1]\nrate_per_client = [1]\nskip = [\"c1-r1\"]\n",
                "grid.skip",
            ),
        ] {
            let text = with(&format!("[grid]\n{grid}"));
            let err = parse(&text, "g.toml").unwrap_err();
            match err {
                ScenarioError::Invalid { field: f, .. } => assert_eq!(f, field, "{grid}"),
                other => panic!("{grid}: {other}"),
            }
        }
    }

    #[test]
    fn flapping_expands() {
        let text = with("flap_on_s = 1\nflap_off_s = 1\n");
        let s = &expand(&parse(&text, "f.toml").unwrap(), false)[0];
        let spans: Vec<_> = s.faults.iter().map(|f| (f.start, f.end)).collect();
        assert_eq!(spans, [(5.0, 6.0), (7.0, 8.0), (9.0, 10.0)]);
    }

    #[test]
    fn flapping_takes_fractional_seconds() {
        let text = with("flap_on_s = 0.5\nflap_off_s = 1.5\n");
        let s = &expand(&parse(&text, "f.toml").unwrap(), false)[0];
        let spans: Vec<_> = s.faults.iter().map(|f| (f.start, f.end)).collect();
        assert_eq!(spans, [(5.0, 5.5), (7.0, 7.5), (9.0, 9.5)]);
        // 0.5 s on / 0.5 s off: five phases in the 5 s window, each 0.5 s long.
        let text = with("flap_on_s = 0.5\nflap_off_s = 0.5\n");
        let s = &expand(&parse(&text, "f.toml").unwrap(), false)[0];
        assert_eq!(s.faults.len(), 5);
        assert!(
            s.faults
                .iter()
                .all(|f| (f.end - f.start - 0.5).abs() < 1e-12)
        );
        assert_eq!(s.faults.last().map(|f| f.start), Some(9.0));
    }

    #[test]
    fn lognormal_mean() {
        // sigma = ln 5 / 2.326; mean = median * exp(sigma^2 / 2)
        let m = mean_service(0.010, 0.050);
        assert!((m - 0.01270).abs() < 1e-4, "{m}");
    }
}
