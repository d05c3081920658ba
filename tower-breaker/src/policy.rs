//! The breaker's decision algorithm: a lock-free state machine over an exact sliding window.
//!
//! [`Policy`] is a plain struct. Every method takes `now` (tokio's [`Instant`], which obeys
//! paused time) and returns a decision, so each transition can be driven with a fake clock and
//! no runtime. The [`Breaker`](crate::Breaker) service only reads the clock, asks the policy and
//! moves futures.
//!
//! # States
//! ```text
//!            trip (near-total failure / load failure rate / slow rate)
//!   Closed ──────────────────────────────────────────────▶ Open ◀───────────────┐
//!     ▲                                 a trickle of probes │ ▲ a probe fails    │ a probe is
//!     │ `probes` probe successes          (spaced + a share)│ └─(spacing grows   │ sick, or
//!     │                                                     │    only if sick)   │ failures
//!     │                                  a probe succeeds   ▼                    │ outnumber
//!     └─────────────────────────────────────────────── HalfOpen ────────────────┘ successes
//!                                        (slow start: 2^successes in flight)
//! ```
//!
//! # Why a trickle and a ramp
//! A breaker that refuses a call the dependency could have served loses it. The classic
//! breaker (one probe per open period, an open period that doubles) loses most of a flapping
//! dependency's healthy time and holds on for seconds after an outage heals. This one keeps
//! refusing cheap and ending it quick:
//! - it trips on *near-total* failure (a run of failures that the window's success share makes
//!   unlikely by chance, or a window with no success) that has lasted `patience` (1 s), or at
//!   once on evidence that load hurts (a share of timeouts and overload answers, or of slow
//!   calls, or a run ended by a timeout or an overload answer with pushback) — not on a
//!   share of fast errors, which refusing does not cure (that is left to the retry budget);
//!   a fast failure shorter than `patience` costs the dependency little and a trip would
//!   cost a probe's round trip when it heals;
//! - while open it lets through one probe per *probe spacing* and, in fail-fast mode, a
//!   *trickle* share of the calls (5% by default), so that healing shows within a few calls at
//!   1,000 rps and within one spacing at 10 rps;
//! - the spacing grows only on a probe that says the dependency is still sick (a timeout, an
//!   overload answer, a slow or abandoned call; pushback sets it), never on a fast error, and
//!   the growth is forgotten when the breaker closes;
//! - the first successful probe turns it half-open, where it admits up to `2^successes` calls
//!   at once (a slow start) and closes after `probes` successes; a sick probe, or failures
//!   outnumbering successes, reopens it.
//!
//! # The state word
//! The whole state lives in one `AtomicU64`, changed only by compare-and-swap:
//!
//! | bits | field |
//! |---|---|
//! | 63–62 | state: 0 closed, 1 half-open, 2 open |
//! | 61 | forced (by a [`BreakerHandle`](crate::BreakerHandle)) |
//! | 60–56 | level: sets the probe spacing |
//! | 55 | held: open with the next probe set by pushback, so nothing trickles through before it |
//! | 54–40 | generation, bumped by every transition |
//! | 39–0 | closed: when it closed (ms); open: when the next spaced probe is due (ms); half-open: probes in flight (bits 0–11), probe successes (bits 12–23) and failures (bits 24–39) |
//!
//! Admission in the closed state is one atomic load. Calls are counted in the window when
//! admitted ([`Policy::admit`] does it; the service batches admissions from
//! [`Policy::try_admit_closed`] with [`Policy::count_admitted`]); failures and slow calls are
//! counted when they complete. A call remembers the generation it was
//! admitted in; when it completes in a later generation it is a straggler and its outcome is
//! left out (it belongs to a period the breaker already judged). Probe slots are the in-flight
//! count inside the word, so "at most `probes` in flight" is enforced by the same CAS that
//! changes state, and a dropped probe frees its slot only if its generation is still current.
//!
//! # What counts
//! - [`Outcome::Success`] and [`Outcome::CallerError`] are healthy calls. A caller error (a 404,
//!   `INVALID_ARGUMENT`) is evidence that the dependency works: counting it as a failure would
//!   let bad requests open the circuit for everyone, and leaving it out would let a dependency
//!   that only ever answers 4xx never close a half-open breaker.
//! - A [`Failure`] of kind [`FailureKind::LocalRejection`] (an inner shed layer, an inner
//!   breaker, an empty budget) counts as nothing: the request never reached the dependency, so
//!   it says nothing about its health. Its admission is taken back, so a busy local limiter
//!   cannot dilute the failure rate; a probe rejected that way frees its slot.
//! - A call whose response future is dropped (a caller's timeout, a losing hedge) counts as
//!   nothing either, for the same reason, and a dropped probe frees its slot.
//! - Every other failure counts against the dependency. [`FailureKind::Timeout`] and
//!   [`FailureKind::Overload`] are *load failures*: they also count toward
//!   `load_failure_rate`, and a probe failing that way grows the probe spacing. A failure
//!   carrying [`Pushback::After`] (429 or 503 with `Retry-After`, `RESOURCE_EXHAUSTED` with
//!   `grpc-retry-pushback-ms`) also holds the next spaced probe back that long, up to
//!   `open_max`.
//! - A call slower than `slow_call` is slow whatever its outcome; a slow probe fails (the
//!   dependency is still slow).
//! - With `abandoned_fails` (gate mode's default), a call whose response future is dropped
//!   counts as a timeout instead of nothing.
//!
//! # Probe spacing
//! At level `n` the spaced probes come `U(1 − jitter, 1] · min(open_max, open_min ·
//! multiplier^(n−1))` apart. A trip starts at `n = 1` (or one level up when it comes within
//! `healthy_period` of closing, 0 by default); only a sick probe raises `n`.

use crate::config::{BreakerConfig, Mode};
use crate::sync::{AtomicU64, Ordering, fence};
use crate::window::{Counts, Sample, Window};
use damper_core::backoff::Backoff;
use damper_core::classify::{Failure, FailureKind, Outcome};
use damper_core::clock::{Origin, nanos};
use damper_core::pushback::Pushback;
use damper_core::rng::AtomicRng;
use std::fmt;
use std::num::NonZeroU64;
use std::time::Duration;
use tokio::time::Instant;

/// A breaker state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Calls flow; outcomes are counted.
    Closed,
    /// A few probe calls are admitted to test the dependency.
    HalfOpen,
    /// Calls are refused until the open period ends.
    Open,
}

impl State {
    /// The value of the `damper_breaker_state` gauge: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> f64 {
        match self {
            State::Closed => 0.0,
            State::HalfOpen => 1.0,
            State::Open => 2.0,
        }
    }

    /// `closed`, `half_open` or `open`: the `state` label of metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::HalfOpen => "half_open",
            State::Open => "open",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a transition happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The window's failure rate reached its threshold.
    FailureRate,
    /// The window's slow-call rate reached its threshold.
    SlowCallRate,
    /// `consecutive_failures` failures in a row.
    ConsecutiveFailures,
    /// A probe succeeded while open: the breaker ramps up.
    ProbeSucceeded,
    /// The window's share of load failures (timeouts, overload answers) reached
    /// `load_failure_rate`.
    LoadFailureRate,
    /// A probe failed (or was slow).
    ProbeFailed,
    /// Enough probes succeeded.
    ProbesSucceeded,
    /// A handle forced the state.
    Forced,
    /// A handle reset the breaker.
    Reset,
}

/// A state change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    /// The state left.
    pub from: State,
    /// The state entered.
    pub to: State,
    /// Why.
    pub reason: Reason,
    /// When.
    pub at: Instant,
    /// For a transition to open: how long until the next probe (`None` if forced open).
    pub open_for: Option<Duration>,
    /// Consecutive openings so far (1 for the first after a healthy period).
    pub level: u32,
}

/// The right to make one call, given by [`Policy::admit`]. Hand it back with
/// [`Policy::on_outcome`] or [`Policy::on_drop`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit(NonZeroU64);

// One word, so a permit moves with one load and one store: bits 0–14 the era (generation) it
// was admitted in, bit 15 set for a probe, bit 16 always set, bit 17 set once the call was
// made (a reserved permit dropped unused is not an abandoned call), bits 18–63 when the call
// started in microseconds after the origin plus one (0 = not timed).
const PERMIT_PROBE: u64 = 1 << 15;
const PERMIT_SET: u64 = 1 << 16;
const PERMIT_CALLED: u64 = 1 << 17;
const PERMIT_START_SHIFT: u32 = 18;
const PERMIT_START_MAX: u64 = (1 << (64 - PERMIT_START_SHIFT)) - 1;

impl Permit {
    /// Whether this is a half-open probe.
    #[inline]
    pub fn is_probe(&self) -> bool {
        self.0.get() & PERMIT_PROBE != 0
    }

    #[inline]
    fn new(era: u64, probe: bool) -> Self {
        let bits = (era & GEN_MASK) | if probe { PERMIT_PROBE } else { 0 } | PERMIT_SET;
        Self(NonZeroU64::new(bits).unwrap_or(NonZeroU64::MIN))
    }

    #[inline]
    fn era(self) -> u64 {
        self.0.get() & GEN_MASK
    }

    /// Marks the permit's call as made.
    #[inline]
    pub(crate) fn called(self) -> Self {
        Self(self.0 | PERMIT_CALLED)
    }

    /// Whether the call was made.
    #[inline]
    pub(crate) fn was_called(self) -> bool {
        self.0.get() & PERMIT_CALLED != 0
    }

    /// When the call started (µs after the origin, plus one), or 0.
    #[inline]
    fn start(self) -> u64 {
        self.0.get() >> PERMIT_START_SHIFT
    }
}

/// A refused call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// When the next probe is due, or `None` if it waits on probes in flight or a forced state.
    pub retry_at: Option<Instant>,
    /// Time until the next probe is due (zero while probes are in flight; `Duration::MAX` while
    /// forced open).
    pub next_probe_in: Duration,
}

/// The decision for one call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admission {
    /// Make the call.
    Admitted(Permit),
    /// Refuse it.
    Rejected(Rejection),
}

/// What handing back a permit did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Effect {
    /// Nothing anyone waits for.
    None,
    /// A probe slot became free.
    SlotFreed,
    /// The state changed.
    Transition(Transition),
}

/// A copy of the breaker's state at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    /// The state.
    pub state: State,
    /// Whether a handle forced it.
    pub forced: bool,
    /// Consecutive openings (0 before the first).
    pub level: u32,
    /// What the window holds (empty unless closed).
    pub counts: Counts,
    /// Time until the next probe when open.
    pub next_probe_in: Option<Duration>,
    /// Probes in flight when half-open.
    pub probes_in_flight: u32,
    /// Transitions since the breaker was built.
    pub transitions: u64,
}

/// The largest in-flight or success count a half-open word holds (12 bits each).
const HALF_OPEN_COUNT: u64 = 0xfff;
const STATE_SHIFT: u32 = 62;
const FORCED: u64 = 1 << 61;
const LEVEL_SHIFT: u32 = 56;
const LEVEL_MAX: u64 = 0x1f;
/// Open and held back by pushback: no trickle until the next spaced probe.
const HELD: u64 = 1 << 55;
const GEN_SHIFT: u32 = 40;
const GEN_MASK: u64 = 0x7fff;
const PAYLOAD: u64 = (1 << 40) - 1;
/// The open-until payload of a forced-open breaker: never.
const NEVER: u64 = PAYLOAD;

#[derive(Clone, Copy, PartialEq, Eq)]
struct Word(u64);

impl Word {
    fn new(state: State, forced: bool, level: u64, era: u64, payload: u64) -> Self {
        let s = match state {
            State::Closed => 0,
            State::HalfOpen => 1,
            State::Open => 2,
        };
        Word(
            (s << STATE_SHIFT)
                | if forced { FORCED } else { 0 }
                | (level.min(LEVEL_MAX) << LEVEL_SHIFT)
                | ((era & GEN_MASK) << GEN_SHIFT)
                | (payload & PAYLOAD),
        )
    }

    #[inline]
    fn state(self) -> State {
        match self.0 >> STATE_SHIFT {
            0 => State::Closed,
            1 => State::HalfOpen,
            _ => State::Open,
        }
    }

    #[inline]
    fn forced(self) -> bool {
        self.0 & FORCED != 0
    }

    /// Marks an open word as held back by pushback (see [`HELD`]).
    fn held_if(self, held: bool) -> Self {
        if held { Word(self.0 | HELD) } else { self }
    }

    #[inline]
    fn held(self) -> bool {
        self.0 & HELD != 0
    }

    #[inline]
    fn level(self) -> u64 {
        (self.0 >> LEVEL_SHIFT) & LEVEL_MAX
    }

    #[inline]
    fn era(self) -> u64 {
        (self.0 >> GEN_SHIFT) & GEN_MASK
    }

    #[inline]
    fn payload(self) -> u64 {
        self.0 & PAYLOAD
    }

    fn in_flight(self) -> u64 {
        self.0 & HALF_OPEN_COUNT
    }

    fn successes(self) -> u64 {
        (self.0 >> 12) & HALF_OPEN_COUNT
    }

    fn failures(self) -> u64 {
        (self.0 >> 24) & 0xffff
    }

    /// How many probes a half-open breaker may have in flight: `2^successes` (a slow start).
    fn allowance(self) -> u64 {
        (1u64 << self.successes().min(11)).min(HALF_OPEN_COUNT)
    }

    fn half_open(era: u64, level: u64, in_flight: u64, successes: u64, failures: u64) -> Self {
        Self::new(
            State::HalfOpen,
            false,
            level,
            era,
            (failures.min(0xffff) << 24)
                | (successes.min(HALF_OPEN_COUNT) << 12)
                | in_flight.min(HALF_OPEN_COUNT),
        )
    }
}

impl fmt::Debug for Word {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Word")
            .field("state", &self.state())
            .field("forced", &self.forced())
            .field("level", &self.level())
            .field("generation", &self.era())
            .field("payload", &self.payload())
            .finish()
    }
}

/// Keeps a hot atomic alone on its cache lines.
#[derive(Debug)]
#[repr(align(128))]
struct Padded<T>(T);

/// What an outcome means to the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Healthy,
    /// `load`: a timeout or an overload answer, evidence that load hurts (counted toward
    /// `load_failure_rate`). `urgent`: a timeout or an overload answer with pushback, which
    /// trips without waiting out the patience and, from a probe, grows the spacing; a bare
    /// overload answer (a 503 without `Retry-After`) is also what a crashed backend behind a
    /// proxy sends, so alone it waits like a fast error.
    Failed {
        pushback: Option<Duration>,
        load: bool,
        urgent: bool,
    },
    Neutral,
}

impl Verdict {
    fn pushback(self) -> Option<Duration> {
        match self {
            Verdict::Failed { pushback, .. } => pushback,
            _ => None,
        }
    }
}

/// How many failures in a row trip the breaker, for a run of `run` failures ending a window
/// that holds `total` calls of which `failures` failed, with `n` the configured minimum run
/// and `min_requests` the window's minimum volume. Judged on the window *before* the run: with
/// `s` its success share, the run needed is `max(n, RUN_SCALE / s)`, so that a run this long
/// has a chance of about `e^−RUN_SCALE` (5·10⁻⁵) of coming by luck from a dependency failing
/// at its usual rate. Before the window holds `min_requests` calls, `s` is `usual`: the share
/// the probes saw before the breaker last closed (1 at first). With no success in a full
/// window the run can never be long enough (the failure rate decides instead).
fn run_needed(n: u64, run: u64, total: u64, failures: u64, min_requests: u64, usual: f64) -> u64 {
    let before = total.saturating_sub(run);
    if before < min_requests {
        return n.max(min_volume(usual));
    }
    let healthy = before.saturating_sub(failures.saturating_sub(run));
    if healthy == 0 {
        return u64::MAX;
    }
    n.max((RUN_SCALE * before).div_ceil(healthy))
}

/// `RUN_SCALE / usual`, rounded up: how many calls, all failing, are evidence of near-total
/// failure from a dependency that usually succeeds at the share `usual`.
fn min_volume(usual: f64) -> u64 {
    if usual >= 1.0 {
        return 0;
    }
    let v = RUN_SCALE as f64 / usual.max(1e-6);
    if v >= u64::MAX as f64 {
        u64::MAX
    } else {
        v.ceil() as u64
    }
}

/// How many fast failures per success a half-open breaker tolerates before it reopens: a
/// dependency that succeeds more than one call in 40 is not failing near-totally, and the
/// rest is the retry budget's job.
const RAMP_RATIO: u64 = 40;

/// The trickle right after a trip on fast errors: one refused call in 4, thinning to the
/// configured share (one in 20 by default) as spaced probes keep failing. Most fast failures
/// are short, and the sooner a probe sees the dependency healed the less the trip costs; a
/// long one pays for the thicker trickle only for its first few spacings.
const TRICKLE_FIRST: u64 = 4;

/// The run-length half of the consecutive-failure word.
const RUN_MASK: u64 = u32::MAX as u64;

/// See [`run_needed`].
const RUN_SCALE: u64 = 10;

#[inline]
fn verdict(outcome: &Outcome) -> Verdict {
    match outcome {
        Outcome::Success | Outcome::CallerError => Verdict::Healthy,
        Outcome::Failure(Failure {
            kind: FailureKind::LocalRejection,
            ..
        }) => Verdict::Neutral,
        Outcome::Failure(f) => {
            let pushback = match f.pushback {
                Some(Pushback::After(d)) => Some(d),
                _ => None,
            };
            Verdict::Failed {
                pushback,
                load: matches!(f.kind, FailureKind::Timeout | FailureKind::Overload),
                urgent: f.kind == FailureKind::Timeout
                    || (f.kind == FailureKind::Overload && pushback.is_some()),
            }
        }
    }
}

/// The breaker's state machine and window. See the [module docs](self).
pub struct Policy {
    state: Padded<AtomicU64>,
    /// The current run of failures: its length (low 32 bits) and how many were urgent (high).
    consecutive: Padded<AtomicU64>,
    /// Calls refused while open, for the trickle (only touched while open).
    refused: Padded<AtomicU64>,
    /// While open, every `trickle_div`-th refused call is let through: [`TRICKLE_FIRST`]
    /// after a trip on fast errors (most such failures are short), doubling at each spaced
    /// probe up to `trickle_every`; `trickle_every` at once after load evidence.
    trickle_div: AtomicU64,
    /// The success share (`f64` bits) the probes saw before the last close: the usual share
    /// while the window is too young to tell.
    usual: AtomicU64,
    /// When the current run of failures started (ms after the origin).
    run_start: AtomicU64,
    transitions: AtomicU64,
    window: Window,
    origin: Origin,
    rng: AtomicRng,
    min_requests: u64,
    failure_rate: f64,
    load_failure_rate: f64,
    slow_call: Option<(Duration, f64)>,
    consecutive_failures: Option<u64>,
    /// Every `trickle_every`-th refused call is let through as a probe (0: none).
    trickle_every: u64,
    abandoned_fails: bool,
    open: Backoff,
    open_jitter: f64,
    healthy_ms: u64,
    patience_ms: u64,
    probes: u64,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("state", &Word(self.state.0.load(Ordering::Relaxed)))
            .field("sub_window", &self.window.sub_window())
            .field("min_requests", &self.min_requests)
            .field("failure_rate", &self.failure_rate)
            .field("probes", &self.probes)
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// A closed breaker whose clock starts at `origin`.
    pub fn new(config: &BreakerConfig, origin: Instant) -> Self {
        // Seeded once from the wall clock and a process-wide counter, so breakers built at the
        // same instant still draw different jitter.
        let seed = config.seed.unwrap_or_else(damper_core::rng::clock_seed);
        Self {
            state: Padded(AtomicU64::new(Word::new(State::Closed, false, 0, 0, 0).0)),
            consecutive: Padded(AtomicU64::new(0)),
            refused: Padded(AtomicU64::new(0)),
            trickle_div: AtomicU64::new(0),
            usual: AtomicU64::new(1f64.to_bits()),
            run_start: AtomicU64::new(0),
            transitions: AtomicU64::new(0),
            window: Window::new(config.window, config.stripes),
            origin: Origin::new(origin),
            rng: AtomicRng::new(seed),
            min_requests: config.min_requests,
            failure_rate: config.failure_rate,
            load_failure_rate: config.load_failure_rate,
            slow_call: config.slow_call,
            consecutive_failures: config.consecutive_failures,
            // Gate mode is asked from `poll_ready`, where a count of asks is not a count of
            // calls: it sends only the spaced probes.
            trickle_every: if config.trickle > 0.0 && config.mode != Mode::Gate {
                (1.0 / config.trickle).round() as u64
            } else {
                0
            },
            abandoned_fails: config.abandoned_fails(),
            open: config.open,
            open_jitter: config.open_jitter,
            healthy_ms: u64::try_from(config.healthy_period.as_millis()).unwrap_or(u64::MAX),
            patience_ms: u64::try_from(config.patience.as_millis()).unwrap_or(u64::MAX),
            probes: u64::from(config.probes),
        }
    }

    #[inline]
    fn load(&self) -> Word {
        Word(self.state.0.load(Ordering::Acquire))
    }

    #[inline]
    fn cas(&self, old: Word, new: Word) -> bool {
        self.state
            .0
            .compare_exchange(old.0, new.0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn ms(&self, now: Instant) -> u64 {
        (self.origin.nanos(now) / 1_000_000).min(NEVER - 1)
    }

    /// The payload for "open until `now + d`", rounded up to the next millisecond.
    fn until_ms(&self, now: Instant, d: Duration) -> u64 {
        let end = self.origin.nanos(now).saturating_add(nanos(d));
        end.div_ceil(1_000_000).min(NEVER - 1)
    }

    fn instant_of(&self, ms: u64) -> Instant {
        self.origin.instant() + Duration::from_millis(ms)
    }

    /// Whether a call whose response future is dropped counts as a timed-out call (see
    /// [`BreakerConfigBuilder::abandoned_fails`](crate::config::BreakerConfigBuilder::abandoned_fails));
    /// the caller then reports it with [`Policy::on_outcome`] instead of [`Policy::on_drop`].
    #[inline]
    pub fn abandoned_fails(&self) -> bool {
        self.abandoned_fails
    }

    /// Whether calls must be timed (a slow-call threshold is set).
    #[inline]
    pub fn times_calls(&self) -> bool {
        self.slow_call.is_some()
    }

    /// Marks `permit`'s call as made and started at `now` (the time is needed to detect slow
    /// calls).
    #[inline]
    pub fn stamp(&self, mut permit: Permit, now: Instant) -> Permit {
        let micros = self.origin.nanos(now) / 1_000;
        // Past ~4 years of uptime the start no longer fits; such a call is simply not timed.
        let start = if micros < PERMIT_START_MAX {
            micros + 1
        } else {
            0
        };
        let bits = (permit.0.get() & ((1 << PERMIT_START_SHIFT) - 1))
            | PERMIT_CALLED
            | (start << PERMIT_START_SHIFT);
        permit.0 = NonZeroU64::new(bits).unwrap_or(permit.0);
        permit
    }

    /// The current state.
    #[inline]
    pub fn state(&self) -> State {
        self.load().state()
    }

    /// Transitions since the breaker was built.
    pub fn transitions(&self) -> u64 {
        self.transitions.load(Ordering::Relaxed)
    }

    /// The most recent epoch (sub-window index) any caller observed.
    #[inline]
    pub(crate) fn last_epoch(&self) -> u64 {
        self.window.last_epoch()
    }

    /// The epoch of `now`.
    pub(crate) fn epoch_of(&self, now: Instant) -> u64 {
        self.origin.nanos(now) / nanos(self.window.sub_window()).max(1)
    }

    /// Tells the window the time is `now` without recording a call: admissions counted later
    /// with [`Policy::count_admitted`] go to `now`'s sub-window (or a later one).
    #[inline]
    pub fn observe(&self, now: Instant) {
        self.window.epoch(self.origin.nanos(now));
    }

    /// The span of calls one clock read may stand for (1/1000 of a sub-window): see
    /// [`Breaker`](crate::Breaker)'s clock sampling.
    #[inline]
    pub(crate) fn sample_span(&self) -> Duration {
        self.window.sub_window() / 1000
    }

    /// Counts `n` calls admitted with [`Policy::try_admit_closed`] into the window, in the
    /// sub-window of the latest time any caller observed ([`Policy::observe`] or
    /// [`Policy::on_outcome`]). `stripe` picks the counters this thread writes.
    #[inline]
    pub fn count_admitted(&self, n: u64, stripe: usize) {
        if n > 0 {
            self.window.admitted(stripe, self.window.last_epoch(), n);
        }
    }

    /// The fast path for a healthy, untimed call admitted while closed: its admission is
    /// already counted and a success can never trip the breaker, so nothing is read or written
    /// but the consecutive-failure run. Returns `false` (and does nothing) for a probe or a
    /// timed call, which need [`Policy::on_outcome`].
    #[inline]
    pub fn on_healthy(&self, permit: Permit) -> bool {
        if permit.is_probe() || permit.start() != 0 {
            return false;
        }
        if self.consecutive.0.load(Ordering::Relaxed) != 0 {
            self.consecutive.0.store(0, Ordering::Relaxed);
        }
        true
    }

    /// The fast path: admits a call if the breaker is closed, with one atomic load and no
    /// clock read. `None` means "ask [`Policy::admit`]". The caller counts the admission with
    /// [`Policy::count_admitted`] (the service batches them).
    #[inline]
    pub fn try_admit_closed(&self) -> Option<Permit> {
        let w = self.load();
        (w.state() == State::Closed).then_some(Permit::new(w.era(), false))
    }

    /// Decides whether a call may be made at `now`, counting an admission while closed. An open
    /// breaker admits a probe when a spaced probe is due or the call falls in the trickle; a
    /// half-open one while fewer than its allowance are in flight. (The transition slot is
    /// kept for callers; admitting no longer changes the state.)
    pub fn admit(&self, now: Instant) -> (Admission, Option<Transition>) {
        loop {
            let w = self.load();
            match w.state() {
                State::Closed => {
                    let permit = Permit::new(w.era(), false);
                    let epoch = self.window.epoch(self.origin.nanos(now));
                    self.window.admitted(0, epoch, 1);
                    return (Admission::Admitted(permit), None);
                }
                State::Open => {
                    if w.forced() {
                        let r = Rejection {
                            retry_at: None,
                            next_probe_in: Duration::MAX,
                        };
                        return (Admission::Rejected(r), None);
                    }
                    let until = self.instant_of(w.payload());
                    let permit = Permit::new(w.era(), true);
                    if now >= until {
                        // A spaced probe is due: let this call through and set the next one.
                        let d = self.open_period(w.level(), None);
                        let next = Word::new(
                            State::Open,
                            false,
                            w.level(),
                            w.era(),
                            self.until_ms(now, d),
                        );
                        if self.cas(w, next) {
                            // Each spaced probe is more evidence the dependency is still down:
                            // the trickle thins towards its configured share.
                            let every = self.trickle_div.load(Ordering::Relaxed);
                            let thinner = every.saturating_mul(2).min(self.trickle_every);
                            self.trickle_div.store(thinner, Ordering::Relaxed);
                            return (Admission::Admitted(permit), None);
                        }
                        continue;
                    }
                    let every = self.trickle_div.load(Ordering::Relaxed);
                    if every != 0
                        && !w.held()
                        && self.refused.0.fetch_add(1, Ordering::Relaxed) % every == every - 1
                    {
                        return (Admission::Admitted(permit), None);
                    }
                    let r = Rejection {
                        retry_at: Some(until),
                        next_probe_in: until - now,
                    };
                    return (Admission::Rejected(r), None);
                }
                State::HalfOpen => {
                    if w.in_flight() >= w.allowance() {
                        let r = Rejection {
                            retry_at: None,
                            next_probe_in: Duration::ZERO,
                        };
                        return (Admission::Rejected(r), None);
                    }
                    let next = Word::half_open(
                        w.era(),
                        w.level(),
                        w.in_flight() + 1,
                        w.successes(),
                        w.failures(),
                    );
                    if self.cas(w, next) {
                        let permit = Permit::new(w.era(), true);
                        return (Admission::Admitted(permit), None);
                    }
                }
            }
        }
    }

    /// A permit that counts for nothing whatever becomes of its call: its era is never
    /// current. For a gate failing open.
    pub(crate) fn bypass(&self) -> Permit {
        Permit::new(self.load().era().wrapping_add(GEN_MASK / 2), false)
    }

    /// Counts a transition and returns a builder for its record.
    fn transitioned(
        &self,
        from: State,
        to: State,
        reason: Reason,
    ) -> impl FnOnce(Instant, Option<Duration>, u64) -> Transition {
        self.transitions.fetch_add(1, Ordering::Relaxed);
        move |at, open_for, level| Transition {
            from,
            to,
            reason,
            at,
            open_for,
            level: level as u32,
        }
    }

    /// The open period of the `level`-th consecutive opening, pushback included.
    fn open_period(&self, level: u64, pushback: Option<Duration>) -> Duration {
        let ceiling = self.open.ceiling(level as u32);
        let d = if self.open_jitter > 0.0 {
            ceiling.mul_f64(1.0 - self.open_jitter * self.rng.next_f64())
        } else {
            ceiling
        };
        d.max(pushback.unwrap_or_default()).min(self.open.max())
    }

    /// Hands back the permit of a call that completed at `now` with `outcome`. `stripe` picks
    /// the window counters this thread writes (any value is correct; distinct values per
    /// thread avoid sharing cache lines).
    pub fn on_outcome(
        &self,
        permit: Permit,
        outcome: &Outcome,
        now: Instant,
        stripe: usize,
    ) -> Effect {
        let verdict = verdict(outcome);
        let slow = match self.slow_call {
            Some((limit, _)) if permit.start() != 0 => {
                let end = self.origin.nanos(now) / 1_000;
                end.saturating_sub(permit.start() - 1) >= nanos(limit) / 1_000
            }
            _ => false,
        };
        if permit.is_probe() {
            self.probe_outcome(permit, verdict, slow, now)
        } else {
            self.closed_outcome(permit, verdict, slow, now, stripe)
        }
    }

    fn probe_outcome(&self, permit: Permit, verdict: Verdict, slow: bool, now: Instant) -> Effect {
        let good = verdict == Verdict::Healthy && !slow;
        let sick = slow || matches!(verdict, Verdict::Failed { urgent: true, .. });
        let pushback = verdict.pushback();
        loop {
            let w = self.load();
            if w.era() != permit.era() || w.forced() {
                return Effect::None;
            }
            let (level, era) = (w.level(), w.era());
            match w.state() {
                State::Closed => return Effect::None,
                State::Open => {
                    if verdict == Verdict::Neutral && !slow {
                        return Effect::None;
                    }
                    if good {
                        let (next, to, reason) = if self.probes <= 1 {
                            (
                                self.closed_word(level, era, now),
                                State::Closed,
                                Reason::ProbesSucceeded,
                            )
                        } else {
                            (
                                Word::half_open(era + 1, level, 0, 1, 0),
                                State::HalfOpen,
                                Reason::ProbeSucceeded,
                            )
                        };
                        if to == State::Closed {
                            // Nobody records into the window while open.
                            self.window.clear();
                        }
                        if self.cas(w, next) {
                            if to == State::Closed {
                                self.consecutive.0.store(0, Ordering::Relaxed);
                                self.set_usual(1, 0);
                            }
                            let t = self.transitioned(State::Open, to, reason);
                            return Effect::Transition(t(now, None, level));
                        }
                        continue;
                    }
                    // Still failing: only evidence of sickness grows the spacing, and pushback
                    // holds the next spaced probe back.
                    if !sick && pushback.is_none() {
                        return Effect::None;
                    }
                    let level = if sick {
                        (level + 1).min(LEVEL_MAX)
                    } else {
                        level
                    };
                    let d = self.open_period(level, pushback);
                    let until = self.until_ms(now, d).max(w.payload());
                    let next = Word::new(State::Open, false, level, era, until)
                        .held_if(w.held() || pushback.is_some());
                    if next == w || self.cas(w, next) {
                        return Effect::None;
                    }
                }
                State::HalfOpen => {
                    if w.in_flight() == 0 {
                        return Effect::None;
                    }
                    let (in_flight, successes, failures) =
                        (w.in_flight() - 1, w.successes(), w.failures());
                    if verdict == Verdict::Neutral && !slow {
                        let next = Word::half_open(era, level, in_flight, successes, failures);
                        if self.cas(w, next) {
                            return Effect::SlotFreed;
                        }
                        continue;
                    }
                    if good {
                        if successes + 1 >= self.probes {
                            // Nobody records into the window while half-open, so clearing it
                            // here cannot lose a closed-state sample.
                            self.window.clear();
                            if self.cas(w, self.closed_word(level, era, now)) {
                                self.consecutive.0.store(0, Ordering::Relaxed);
                                self.set_usual(successes + 1, failures);
                                let t = self.transitioned(
                                    State::HalfOpen,
                                    State::Closed,
                                    Reason::ProbesSucceeded,
                                );
                                return Effect::Transition(t(now, None, level));
                            }
                            continue;
                        }
                        // One more success doubles the allowance: wake the waiters.
                        let next = Word::half_open(era, level, in_flight, successes + 1, failures);
                        if self.cas(w, next) {
                            return Effect::SlotFreed;
                        }
                        continue;
                    }
                    if !sick && pushback.is_none() && failures + 1 < RAMP_RATIO * successes {
                        // A fast error among enough successes: the dependency is no longer
                        // failing near-totally, and what is left is the retry budget's job.
                        let next = Word::half_open(era, level, in_flight, successes, failures + 1);
                        if self.cas(w, next) {
                            return Effect::SlotFreed;
                        }
                        continue;
                    }
                    let level = if sick {
                        (level + 1).min(LEVEL_MAX)
                    } else {
                        level.max(1)
                    };
                    let d = self.open_period(level, pushback);
                    let next = Word::new(State::Open, false, level, era + 1, self.until_ms(now, d))
                        .held_if(pushback.is_some());
                    if self.cas(w, next) {
                        self.trickle_div
                            .store(self.trickle_every, Ordering::Relaxed);
                        let t =
                            self.transitioned(State::HalfOpen, State::Open, Reason::ProbeFailed);
                        return Effect::Transition(t(now, Some(d), level));
                    }
                }
            }
        }
    }

    /// Remembers the success share the probes of a closing half-open period saw, as the
    /// usual share until the window holds enough calls to tell (see [`run_needed`]).
    fn set_usual(&self, successes: u64, failures: u64) {
        let share = successes as f64 / (successes + failures).max(1) as f64;
        self.usual.store(share.to_bits(), Ordering::Relaxed);
    }

    /// The word of a breaker closing at `now` from generation `era` at `level`.
    fn closed_word(&self, level: u64, era: u64, now: Instant) -> Word {
        Word::new(State::Closed, false, level, era + 1, self.ms(now))
    }

    fn closed_outcome(
        &self,
        permit: Permit,
        verdict: Verdict,
        slow: bool,
        now: Instant,
        stripe: usize,
    ) -> Effect {
        let w = self.load();
        if w.state() != State::Closed || w.era() != permit.era() {
            // A straggler from a closed period already judged. Its pushback still lengthens the
            // open period it helped to cause.
            if let Verdict::Failed {
                pushback: Some(d), ..
            } = verdict
            {
                self.extend_open(w, (permit.era() + 1) & GEN_MASK, d, now);
            }
            return Effect::None;
        }
        let epoch = self.window.epoch(self.origin.nanos(now));
        let (failure, load, urgent) = match verdict {
            Verdict::Neutral => {
                self.window.retract(stripe, epoch);
                return Effect::None;
            }
            Verdict::Healthy => (false, false, false),
            Verdict::Failed { load, urgent, .. } => (true, load, urgent),
        };
        self.window.record(
            stripe,
            epoch,
            Sample {
                failure,
                load,
                slow,
            },
        );
        let slow_trigger = slow && self.slow_call.is_some();
        if !failure {
            if self.consecutive.0.load(Ordering::Relaxed) != 0 {
                self.consecutive.0.store(0, Ordering::Relaxed);
            }
            if !slow_trigger {
                return Effect::None;
            }
        }
        if w.forced() {
            return Effect::None;
        }
        // The run of failures (low half of the word) and how many of them were urgent (high).
        let (run, urgent_run) = if failure {
            let add = 1 | (u64::from(urgent) << 32);
            let v = self.consecutive.0.fetch_add(add, Ordering::Relaxed) + add;
            (v & RUN_MASK, v >> 32)
        } else {
            (0, 0)
        };
        let now_ms = self.ms(now);
        if run == 1 {
            self.run_start.store(now_ms, Ordering::Relaxed);
        }
        // A run of fast errors trips only once it has lasted `patience`: until then sending
        // costs the dependency little, and a trip would cost a probe's round trip at healing.
        // A run mostly of urgent failures (timeouts, pushback) trips at once; a stray timeout
        // in a run of fast errors does not make it urgent.
        let patient = (urgent && urgent_run * 2 >= run)
            || now_ms.saturating_sub(self.run_start.load(Ordering::Relaxed)) >= self.patience_ms;
        // Of two failures recorded at once, at least one sum must see both (a store-load
        // pattern that needs a full fence; only failures and slow calls pay for it).
        fence(Ordering::SeqCst);
        let c = self.window.sum(epoch);
        // Admissions are counted in batches, so a failure may be recorded before its
        // admission is: the total is at least the failures (and the slow calls).
        let total = c.total.max(c.failures).max(c.slow);
        let mut reason = None;
        if let (Some(n), true) = (self.consecutive_failures, patient) {
            let usual = f64::from_bits(self.usual.load(Ordering::Relaxed));
            if run >= n && run >= run_needed(n, run, total, c.failures, self.min_requests, usual) {
                reason = Some(Reason::ConsecutiveFailures);
            }
        }
        if reason.is_none() && total >= self.min_requests {
            let t = total as f64;
            // A young window after a close to a dependency that fails often: the failure
            // rate needs as much volume as a run would.
            let usual = f64::from_bits(self.usual.load(Ordering::Relaxed));
            if failure
                && c.failures as f64 >= self.failure_rate * t
                && total >= min_volume(usual)
                && (patient || self.failure_rate < 1.0)
            {
                reason = Some(Reason::FailureRate);
            } else if load && c.load_failures as f64 >= self.load_failure_rate * t {
                reason = Some(Reason::LoadFailureRate);
            } else if let (true, Some((_, rate))) = (slow_trigger, self.slow_call)
                && c.slow as f64 >= rate * t
            {
                reason = Some(Reason::SlowCallRate);
            }
        }
        let Some(reason) = reason else {
            return Effect::None;
        };
        let pushback = verdict.pushback();
        let level = if now_ms.saturating_sub(w.payload()) >= self.healthy_ms {
            1
        } else {
            (w.level() + 1).min(LEVEL_MAX)
        };
        let d = self.open_period(level, pushback);
        let next = Word::new(
            State::Open,
            false,
            level,
            w.era() + 1,
            self.until_ms(now, d),
        )
        .held_if(pushback.is_some());
        if self.cas(w, next) {
            self.consecutive.0.store(0, Ordering::Relaxed);
            let first = if urgent || slow_trigger {
                self.trickle_every
            } else {
                TRICKLE_FIRST.min(self.trickle_every)
            };
            self.trickle_div.store(first, Ordering::Relaxed);
            let t = self.transitioned(State::Closed, State::Open, reason);
            return Effect::Transition(t(now, Some(d), level));
        }
        Effect::None
    }

    /// Lengthens the open period of generation `era` to `now + pushback` (at most `open_max`).
    fn extend_open(&self, mut w: Word, era: u64, pushback: Duration, now: Instant) {
        loop {
            if w.state() != State::Open || w.forced() || w.era() != era {
                return;
            }
            let until = self.until_ms(now, pushback.min(self.open.max()));
            if until <= w.payload() {
                return;
            }
            let next = Word::new(State::Open, false, w.level(), w.era(), until).held_if(true);
            if self.cas(w, next) {
                return;
            }
            w = self.load();
        }
    }

    /// Hands back the permit of a call whose response future was dropped before completing:
    /// neither a success nor a failure. A half-open probe frees its slot; an open breaker's
    /// probe reserved and never used gives the spaced probe back (it is due again); a
    /// closed-state call's admission is taken back.
    pub fn on_drop(&self, permit: Permit, stripe: usize) -> Effect {
        if permit.is_probe() {
            if !permit.was_called() {
                loop {
                    let w = self.load();
                    if w.state() != State::Open || w.forced() || w.era() != permit.era() {
                        break;
                    }
                    let next = Word::new(State::Open, false, w.level(), w.era(), 0);
                    if self.cas(w, next) {
                        return Effect::SlotFreed;
                    }
                }
            }
            return self.probe_outcome(permit, Verdict::Neutral, false, self.origin.instant());
        }
        let w = self.load();
        if w.state() == State::Closed && w.era() == permit.era() {
            self.window.retract(stripe, self.window.last_epoch());
        }
        Effect::None
    }

    fn force(&self, to: State, forced: bool, reason: Reason, now: Instant) -> Option<Transition> {
        if to == State::Closed {
            self.window.clear();
            self.consecutive.0.store(0, Ordering::Relaxed);
        }
        loop {
            let w = self.load();
            let level = if reason == Reason::Reset {
                0
            } else {
                w.level()
            };
            let payload = match to {
                State::Open => NEVER,
                _ => self.ms(now),
            };
            let next = Word::new(to, forced, level, w.era() + 1, payload);
            if self.cas(w, next) {
                let t = self.transitioned(w.state(), to, reason);
                return Some(t(now, None, level));
            }
        }
    }

    /// Holds the breaker open (refusing every call, no probes) until [`Policy::reset`] or
    /// [`Policy::force_closed`].
    pub fn force_open(&self, now: Instant) -> Option<Transition> {
        self.force(State::Open, true, Reason::Forced, now)
    }

    /// Holds the breaker closed (admitting every call, never tripping) until
    /// [`Policy::reset`] or [`Policy::force_open`]. The window is cleared.
    pub fn force_closed(&self, now: Instant) -> Option<Transition> {
        self.force(State::Closed, true, Reason::Forced, now)
    }

    /// Closes the breaker and forgets its history: empty window, first open period next time.
    pub fn reset(&self, now: Instant) -> Option<Transition> {
        self.force(State::Closed, false, Reason::Reset, now)
    }

    /// A copy of the state at `now`.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let w = self.load();
        let counts = if w.state() == State::Closed {
            self.window.sum(self.epoch_of(now))
        } else {
            Counts::default()
        };
        Snapshot {
            state: w.state(),
            forced: w.forced(),
            level: w.level() as u32,
            counts,
            next_probe_in: match w.state() {
                State::Open if w.forced() => Some(Duration::MAX),
                State::Open => Some(self.instant_of(w.payload()).saturating_duration_since(now)),
                _ => None,
            },
            probes_in_flight: if w.state() == State::HalfOpen {
                w.in_flight() as u32
            } else {
                0
            },
            transitions: self.transitions(),
        }
    }
}
