//! The retry decision, as a plain struct: no runtime, no clock of its own.
//!
//! [`RetryPolicy::decide`] takes an attempt's [`Outcome`], where the request stands (attempts
//! made, whether it can be replayed, its deadline), the budget, a random source and `now`, and
//! returns a [`Decision`]. The [`Retry`](crate::Retry) service only reads tokio's clock, calls it
//! and moves futures, so every rule below is unit-tested with made-up instants.
//!
//! The rules, in order:
//! 1. a success deposits into the budget and is returned;
//! 2. a caller error, a non-retryable failure, a local rejection (breaker open, local limit,
//!    empty budget downstream) or server pushback saying "do not retry" is returned;
//! 3. with no attempts left, or a request that cannot be replayed, the result is returned;
//! 4. the wait is the server's pushback, clamped to `max_pushback`, or else the jittered
//!    backoff;
//! 5. if the deadline cannot fit the wait plus `min_attempt_time`, the result is returned (so
//!    the layer never sleeps past a deadline);
//! 6. the retry withdraws one token; an empty budget returns the result at once;
//! 7. otherwise: retry after the wait.

use damper_core::backoff::Backoff;
use damper_core::pushback::Pushback;
use damper_core::rng::Random;
use damper_core::{Budget, Deadline, FailureKind, Outcome};
use std::time::Duration;
use tokio::time::Instant;

/// The default number of attempts in total (the first one and two retries).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// The default time an attempt must have left before the deadline for a retry to be sent.
pub const DEFAULT_MIN_ATTEMPT_TIME: Duration = Duration::from_millis(10);

/// Why the layer stopped and returned the last result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The attempt succeeded (and deposited into the budget).
    Success,
    /// The dependency answered that the request itself is wrong; retrying cannot help.
    CallerError,
    /// The failure is not retryable.
    NotRetryable,
    /// A local layer rejected the request; retrying would only add load.
    LocalRejection,
    /// The server asked not to retry.
    DoNotRetry,
    /// Every allowed attempt was made.
    AttemptsExhausted,
    /// The request cannot be replayed (not idempotent, body too large or streaming).
    NotReplayable,
    /// The remaining deadline cannot fit the wait plus a minimal attempt.
    Deadline,
    /// The budget had no token for the retry.
    BudgetExhausted,
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Return the attempt's result to the caller.
    Return(Stop),
    /// A token was withdrawn: send the next attempt after this wait.
    Retry(Duration),
}

/// The retry rules; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    backoff: Backoff,
    max_pushback: Duration,
    min_attempt_time: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff: Backoff::default(),
            max_pushback: damper_core::DEFAULT_MAX_PUSHBACK,
            min_attempt_time: DEFAULT_MIN_ATTEMPT_TIME,
        }
    }
}

impl RetryPolicy {
    /// A policy; the values are validated by the layer's builder.
    pub(crate) fn new(
        max_attempts: u32,
        backoff: Backoff,
        max_pushback: Duration,
        min_attempt_time: Duration,
    ) -> Self {
        Self {
            max_attempts,
            backoff,
            max_pushback,
            min_attempt_time,
        }
    }

    /// Attempts allowed in total, first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The backoff between attempts.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// The cap on server pushback.
    pub fn max_pushback(&self) -> Duration {
        self.max_pushback
    }

    /// The time an attempt must have before the deadline.
    pub fn min_attempt_time(&self) -> Duration {
        self.min_attempt_time
    }

    /// Whether a request that has had `attempts` attempts may get another one, budget and
    /// outcome permitting: the layer keeps a copy of the request only then.
    pub fn has_attempts_left(&self, attempts: u32) -> bool {
        attempts < self.max_attempts
    }

    /// Decides what follows attempt number `attempts` (1 for the first), whose outcome is
    /// `outcome`. `replayable` says whether a copy of the request is at hand; `previous` is the
    /// wait before the previous retry (zero before the first). Withdraws from `budget` when it
    /// decides to retry, and deposits when the attempt succeeded.
    #[allow(clippy::too_many_arguments)]
    pub fn decide<B: Budget + ?Sized, R: Random>(
        &self,
        outcome: &Outcome,
        attempts: u32,
        replayable: bool,
        deadline: Option<Deadline>,
        previous: Duration,
        budget: &B,
        rng: R,
        now: Instant,
    ) -> Decision {
        let failure = match outcome {
            Outcome::Success => {
                budget.deposit(now);
                return Decision::Return(Stop::Success);
            }
            Outcome::CallerError => return Decision::Return(Stop::CallerError),
            Outcome::Failure(f) => f,
        };
        if failure.kind == FailureKind::LocalRejection {
            return Decision::Return(Stop::LocalRejection);
        }
        if failure.pushback == Some(Pushback::DoNotRetry) {
            return Decision::Return(Stop::DoNotRetry);
        }
        if !failure.retryable {
            return Decision::Return(Stop::NotRetryable);
        }
        if !self.has_attempts_left(attempts) {
            return Decision::Return(Stop::AttemptsExhausted);
        }
        if !replayable {
            return Decision::Return(Stop::NotReplayable);
        }
        let wait = match failure.pushback {
            Some(Pushback::After(d)) => d.min(self.max_pushback),
            _ => self.backoff.delay(attempts, previous, rng),
        };
        if let Some(deadline) = deadline
            && deadline.remaining(now) < wait.saturating_add(self.min_attempt_time)
        {
            return Decision::Return(Stop::Deadline);
        }
        if !budget.try_withdraw(now) {
            return Decision::Return(Stop::BudgetExhausted);
        }
        Decision::Retry(wait)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use damper_core::Failure;
    use damper_core::backoff::Jitter;
    use damper_core::budget::{Empty, TokenBucket, Unlimited};
    use damper_core::rng::SplitMix64;

    fn fixed(ms: u64) -> RetryPolicy {
        let backoff = Backoff::builder()
            .min(Duration::from_millis(ms))
            .max(Duration::from_millis(ms * 100))
            .jitter(Jitter::None)
            .build()
            .unwrap();
        RetryPolicy::new(
            3,
            backoff,
            Duration::from_secs(5),
            Duration::from_millis(10),
        )
    }

    fn err() -> Outcome {
        Outcome::Failure(Failure::retryable(FailureKind::Error))
    }

    #[test]
    fn decision_table() {
        let p = fixed(20);
        let now = Instant::now();
        let rng = || SplitMix64::new(1);
        let d = |o: Outcome, attempts, replayable, deadline: Option<Deadline>| {
            p.decide(
                &o,
                attempts,
                replayable,
                deadline,
                Duration::ZERO,
                &Unlimited::new(),
                rng(),
                now,
            )
        };
        let ms = Duration::from_millis;
        let after = |x| Some(Deadline::after(now, ms(x)));
        let cases = [
            (
                d(Outcome::Success, 1, true, None),
                Decision::Return(Stop::Success),
            ),
            (
                d(Outcome::CallerError, 1, true, None),
                Decision::Return(Stop::CallerError),
            ),
            (
                d(
                    Outcome::Failure(Failure::fatal(FailureKind::Error)),
                    1,
                    true,
                    None,
                ),
                Decision::Return(Stop::NotRetryable),
            ),
            (
                d(
                    Outcome::Failure(Failure::fatal(FailureKind::LocalRejection)),
                    1,
                    true,
                    None,
                ),
                Decision::Return(Stop::LocalRejection),
            ),
            (
                // Even if some classifier calls a local rejection retryable.
                d(
                    Outcome::Failure(Failure::retryable(FailureKind::LocalRejection)),
                    1,
                    true,
                    None,
                ),
                Decision::Return(Stop::LocalRejection),
            ),
            (
                d(
                    Outcome::Failure(
                        Failure::retryable(FailureKind::Overload)
                            .with_pushback(Some(Pushback::DoNotRetry)),
                    ),
                    1,
                    true,
                    None,
                ),
                Decision::Return(Stop::DoNotRetry),
            ),
            (
                d(err(), 3, true, None),
                Decision::Return(Stop::AttemptsExhausted),
            ),
            (
                d(err(), 1, false, None),
                Decision::Return(Stop::NotReplayable),
            ),
            (d(err(), 1, true, None), Decision::Retry(ms(20))),
            (d(err(), 2, true, None), Decision::Retry(ms(40))),
            // Pushback replaces the backoff, clamped to max_pushback (5 s).
            (
                d(
                    Outcome::Failure(
                        Failure::retryable(FailureKind::Overload)
                            .with_pushback(Some(Pushback::After(ms(700)))),
                    ),
                    1,
                    true,
                    None,
                ),
                Decision::Retry(ms(700)),
            ),
            (
                d(
                    Outcome::Failure(
                        Failure::retryable(FailureKind::Overload)
                            .with_pushback(Some(Pushback::After(ms(60_000)))),
                    ),
                    1,
                    true,
                    None,
                ),
                Decision::Retry(ms(5_000)),
            ),
            // Deadline: wait 20 + min attempt 10 must fit.
            (d(err(), 1, true, after(30)), Decision::Retry(ms(20))),
            (
                d(err(), 1, true, after(29)),
                Decision::Return(Stop::Deadline),
            ),
            (
                d(err(), 1, true, after(0)),
                Decision::Return(Stop::Deadline),
            ),
        ];
        for (i, (got, want)) in cases.iter().enumerate() {
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn budget_is_charged_only_for_retries_and_credited_only_for_successes() {
        let p = fixed(1);
        let now = Instant::now();
        let b = TokenBucket::new(0.5, 10.0, 1.0).unwrap();
        let go = |o: Outcome, attempts| {
            p.decide(
                &o,
                attempts,
                true,
                None,
                Duration::ZERO,
                &b,
                SplitMix64::new(0),
                now,
            )
        };
        // Not retried: nothing withdrawn.
        go(Outcome::CallerError, 1);
        go(err(), 3);
        assert_eq!(b.balance(), 1.0);
        assert_eq!(go(err(), 1), Decision::Retry(Duration::from_millis(1)));
        assert_eq!(b.balance(), 0.0);
        assert_eq!(go(err(), 1), Decision::Return(Stop::BudgetExhausted));
        go(Outcome::Success, 1);
        go(Outcome::Success, 1);
        assert_eq!(b.balance(), 1.0);
        // A deadline too short does not spend a token.
        let tight = Some(Deadline::after(now, Duration::from_millis(5)));
        let d = p.decide(
            &err(),
            1,
            true,
            tight,
            Duration::ZERO,
            &b,
            SplitMix64::new(0),
            now,
        );
        assert_eq!(d, Decision::Return(Stop::Deadline));
        assert_eq!(b.balance(), 1.0);
        let d = p.decide(
            &err(),
            1,
            true,
            None,
            Duration::ZERO,
            &Empty::new(),
            SplitMix64::new(0),
            now,
        );
        assert_eq!(d, Decision::Return(Stop::BudgetExhausted));
    }

    #[test]
    fn full_jitter_by_default_stays_under_the_ceiling() {
        let p = RetryPolicy::default();
        let now = Instant::now();
        let mut rng = SplitMix64::new(9);
        let mut distinct = std::collections::HashSet::new();
        for _ in 0..100 {
            match p.decide(
                &err(),
                2,
                true,
                None,
                Duration::ZERO,
                &Unlimited::new(),
                &mut rng,
                now,
            ) {
                Decision::Retry(w) => {
                    assert!(w <= Duration::from_millis(50));
                    distinct.insert(w);
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(distinct.len() > 50);
    }
}
