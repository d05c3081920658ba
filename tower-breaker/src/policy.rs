//! The breaker's decision algorithm: a lock-free state machine over an exact sliding window.
//!
//! [`Policy`] is a plain struct. Every method takes `now` (tokio's [`Instant`], which obeys
//! paused time) and returns a decision, so each transition can be driven with a fake clock and
//! no runtime. The [`Breaker`](crate::Breaker) service only reads the clock, asks the policy and
//! moves futures.
//!
//! # States
//! ```text
//!            trip (rate / slow rate / consecutive)
//!   Closed ───────────────────────────────────────▶ Open ◀─────────────┐
//!     ▲                                              │ open period     │ any probe fails
//!     │ `probes` probe successes                     ▼ elapsed         │ (level + 1)
//!     └──────────────────────────────────────── HalfOpen ──────────────┘
//! ```
//!
//! # The state word
//! The whole state lives in one `AtomicU64`, changed only by compare-and-swap:
//!
//! | bits | field |
//! |---|---|
//! | 63–62 | state: 0 closed, 1 half-open, 2 open |
//! | 61 | forced (by a [`BreakerHandle`](crate::BreakerHandle)) |
//! | 60–55 | level: how many consecutive openings (sets the open period) |
//! | 54–40 | generation, bumped by every transition |
//! | 39–0 | closed: when it closed (ms); open: when the next probe is due (ms); half-open: probes in flight (bits 0–15) and probe successes (bits 16–31) |
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
//! - Every other failure counts against the dependency. A failure carrying
//!   [`Pushback::After`] (429 or 503 with `Retry-After`, `RESOURCE_EXHAUSTED` with
//!   `grpc-retry-pushback-ms`) also lengthens the open period it causes, or the current one, up
//!   to `open_max`.
//! - A call slower than `slow_call` is slow whatever its outcome; while half-open a slow probe
//!   fails (the dependency is still slow).
//!
//! # Open periods
//! The `n`-th consecutive opening lasts `U(1 − jitter, 1] · min(open_max, open_min ·
//! multiplier^(n−1))`. Reopening from half-open increments `n`; so does tripping again soon
//! after closing (flapping). Tripping after the breaker stayed closed for `healthy_period`
//! starts again at `n = 1`.

use crate::config::BreakerConfig;
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
    /// The open period ended and a probe was admitted.
    ProbeDue,
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
// was admitted in, bit 15 set for a probe, bit 16 always set, bits 17–63 when the call started
// in microseconds after the origin plus one (0 = not timed).
const PERMIT_PROBE: u64 = 1 << 15;
const PERMIT_SET: u64 = 1 << 16;
const PERMIT_START_SHIFT: u32 = 17;
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

const STATE_SHIFT: u32 = 62;
const FORCED: u64 = 1 << 61;
const LEVEL_SHIFT: u32 = 55;
const LEVEL_MAX: u64 = 0x3f;
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
        self.0 & 0xffff
    }

    fn successes(self) -> u64 {
        (self.0 >> 16) & 0xffff
    }

    fn half_open(era: u64, level: u64, in_flight: u64, successes: u64) -> Self {
        Self::new(
            State::HalfOpen,
            false,
            level,
            era,
            (successes << 16) | in_flight,
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
    Failed { pushback: Option<Duration> },
    Neutral,
}

#[inline]
fn verdict(outcome: &Outcome) -> Verdict {
    match outcome {
        Outcome::Success | Outcome::CallerError => Verdict::Healthy,
        Outcome::Failure(Failure {
            kind: FailureKind::LocalRejection,
            ..
        }) => Verdict::Neutral,
        Outcome::Failure(f) => Verdict::Failed {
            pushback: match f.pushback {
                Some(Pushback::After(d)) => Some(d),
                _ => None,
            },
        },
    }
}

/// The breaker's state machine and window. See the [module docs](self).
pub struct Policy {
    state: Padded<AtomicU64>,
    consecutive: Padded<AtomicU64>,
    transitions: AtomicU64,
    window: Window,
    origin: Origin,
    rng: AtomicRng,
    min_requests: u64,
    failure_rate: f64,
    slow_call: Option<(Duration, f64)>,
    consecutive_failures: Option<u64>,
    open: Backoff,
    open_jitter: f64,
    healthy_ms: u64,
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
        let seed = config.seed.unwrap_or_else(|| {
            // Seeded once from the wall clock and a process-wide counter, so breakers built at
            // the same instant still draw different jitter.
            static BUILT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = BUILT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0x5eed, nanos)
                ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        });
        Self {
            state: Padded(AtomicU64::new(Word::new(State::Closed, false, 0, 0, 0).0)),
            consecutive: Padded(AtomicU64::new(0)),
            transitions: AtomicU64::new(0),
            window: Window::new(config.window, config.stripes),
            origin: Origin::new(origin),
            rng: AtomicRng::new(seed),
            min_requests: config.min_requests,
            failure_rate: config.failure_rate,
            slow_call: config.slow_call,
            consecutive_failures: config.consecutive_failures,
            open: config.open,
            open_jitter: config.open_jitter,
            healthy_ms: u64::try_from(config.healthy_period.as_millis()).unwrap_or(u64::MAX),
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

    /// Whether calls must be timed (a slow-call threshold is set).
    #[inline]
    pub fn times_calls(&self) -> bool {
        self.slow_call.is_some()
    }

    /// Marks `permit`'s call as started at `now` (needed to detect slow calls).
    #[inline]
    pub fn stamp(&self, mut permit: Permit, now: Instant) -> Permit {
        let micros = self.origin.nanos(now) / 1_000;
        // Past ~4 years of uptime the start no longer fits; such a call is simply not timed.
        let start = if micros < PERMIT_START_MAX {
            micros + 1
        } else {
            0
        };
        let bits =
            (permit.0.get() & ((1 << PERMIT_START_SHIFT) - 1)) | (start << PERMIT_START_SHIFT);
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
        if self.consecutive_failures.is_some() && self.consecutive.0.load(Ordering::Relaxed) != 0 {
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
    /// breaker whose period has ended turns half-open and admits this call as its first probe
    /// (the returned transition).
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
                    if now < until {
                        let r = Rejection {
                            retry_at: Some(until),
                            next_probe_in: until - now,
                        };
                        return (Admission::Rejected(r), None);
                    }
                    let era = w.era() + 1;
                    if self.cas(w, Word::half_open(era, w.level(), 1, 0)) {
                        let t = self.transitioned(State::Open, State::HalfOpen, Reason::ProbeDue);
                        let permit = Permit::new(era & GEN_MASK, true);
                        let t = t(now, None, w.level());
                        return (Admission::Admitted(permit), Some(t));
                    }
                }
                State::HalfOpen => {
                    if w.in_flight() + w.successes() >= self.probes {
                        let r = Rejection {
                            retry_at: None,
                            next_probe_in: Duration::ZERO,
                        };
                        return (Admission::Rejected(r), None);
                    }
                    let next =
                        Word::half_open(w.era(), w.level(), w.in_flight() + 1, w.successes());
                    if self.cas(w, next) {
                        let permit = Permit::new(w.era(), true);
                        return (Admission::Admitted(permit), None);
                    }
                }
            }
        }
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
        loop {
            let w = self.load();
            if w.state() != State::HalfOpen || w.era() != permit.era() || w.in_flight() == 0 {
                return Effect::None;
            }
            let (level, era) = (w.level(), w.era());
            match verdict {
                Verdict::Neutral => {
                    let next = Word::half_open(era, level, w.in_flight() - 1, w.successes());
                    if self.cas(w, next) {
                        return Effect::SlotFreed;
                    }
                }
                Verdict::Healthy if !slow => {
                    let successes = w.successes() + 1;
                    if successes >= self.probes {
                        // Nobody records into the window while half-open, so clearing it here
                        // cannot lose a closed-state sample.
                        self.window.clear();
                        let next = Word::new(State::Closed, false, level, era + 1, self.ms(now));
                        if self.cas(w, next) {
                            self.consecutive.0.store(0, Ordering::Relaxed);
                            let t = self.transitioned(
                                State::HalfOpen,
                                State::Closed,
                                Reason::ProbesSucceeded,
                            );
                            return Effect::Transition(t(now, None, level));
                        }
                    } else {
                        let next = Word::half_open(era, level, w.in_flight() - 1, successes);
                        if self.cas(w, next) {
                            return Effect::None;
                        }
                    }
                }
                Verdict::Healthy | Verdict::Failed { .. } => {
                    let pushback = match verdict {
                        Verdict::Failed { pushback } => pushback,
                        _ => None,
                    };
                    let level = (level + 1).min(LEVEL_MAX);
                    let d = self.open_period(level, pushback);
                    let next = Word::new(State::Open, false, level, era + 1, self.until_ms(now, d));
                    if self.cas(w, next) {
                        let t =
                            self.transitioned(State::HalfOpen, State::Open, Reason::ProbeFailed);
                        return Effect::Transition(t(now, Some(d), level));
                    }
                }
            }
        }
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
            if let Verdict::Failed { pushback: Some(d) } = verdict {
                self.extend_open(w, (permit.era() + 1) & GEN_MASK, d, now);
            }
            return Effect::None;
        }
        let epoch = self.window.epoch(self.origin.nanos(now));
        let failure = match verdict {
            Verdict::Neutral => {
                self.window.retract(stripe, epoch);
                return Effect::None;
            }
            Verdict::Healthy => false,
            Verdict::Failed { .. } => true,
        };
        self.window.record(stripe, epoch, Sample { failure, slow });
        let slow_trigger = slow && self.slow_call.is_some();
        if !failure {
            if self.consecutive_failures.is_some()
                && self.consecutive.0.load(Ordering::Relaxed) != 0
            {
                self.consecutive.0.store(0, Ordering::Relaxed);
            }
            if !slow_trigger {
                return Effect::None;
            }
        }
        if w.forced() {
            return Effect::None;
        }
        let mut reason = None;
        if let (true, Some(n)) = (failure, self.consecutive_failures) {
            if self.consecutive.0.fetch_add(1, Ordering::Relaxed) + 1 >= n {
                reason = Some(Reason::ConsecutiveFailures);
            }
        }
        if reason.is_none() {
            // Of two failures recorded at once, at least one sum must see both (a store-load
            // pattern that needs a full fence; only failures and slow calls pay for it).
            fence(Ordering::SeqCst);
            let c = self.window.sum(epoch);
            // Admissions are counted in batches, so a failure may be recorded before its
            // admission is: the total is at least the failures (and the slow calls).
            let total = c.total.max(c.failures).max(c.slow);
            if total >= self.min_requests {
                let total = total as f64;
                if failure && c.failures as f64 >= self.failure_rate * total {
                    reason = Some(Reason::FailureRate);
                } else if let (true, Some((_, rate))) = (slow_trigger, self.slow_call) {
                    if c.slow as f64 >= rate * total {
                        reason = Some(Reason::SlowCallRate);
                    }
                }
            }
        }
        let Some(reason) = reason else {
            return Effect::None;
        };
        let pushback = match verdict {
            Verdict::Failed { pushback } => pushback,
            _ => None,
        };
        let now_ms = self.ms(now);
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
        );
        if self.cas(w, next) {
            self.consecutive.0.store(0, Ordering::Relaxed);
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
            let next = Word::new(State::Open, false, w.level(), w.era(), until);
            if self.cas(w, next) {
                return;
            }
            w = self.load();
        }
    }

    /// Hands back the permit of a call whose response future was dropped before completing:
    /// neither a success nor a failure. A probe frees its slot; a closed-state call's
    /// admission is taken back.
    pub fn on_drop(&self, permit: Permit, stripe: usize) -> Effect {
        if permit.is_probe() {
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
