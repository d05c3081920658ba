//! Jittered exponential backoff.
//!
//! # Why jitter
//! Clients that back off on the same schedule retry in lockstep and hit a recovering dependency
//! in synchronized waves. Randomizing the wait spreads them out. Of the common variants, *full
//! jitter* (`U(0, min(max, min·mult^n))`) and *decorrelated jitter*
//! (`min(max, U(min, 3·previous))`) need the fewest calls to drain a contended resource; full
//! jitter is the default.
//!
//! ```
//! use damper_core::backoff::Backoff;
//! use damper_core::rng::SplitMix64;
//! use std::time::Duration;
//!
//! let backoff = Backoff::builder()
//!     .min(Duration::from_millis(25))
//!     .max(Duration::from_secs(1))
//!     .build()
//!     .expect("valid backoff");
//! let mut rng = SplitMix64::new(42);
//! let first = backoff.delay(1, Duration::ZERO, &mut rng);
//! assert!(first <= Duration::from_millis(25));
//! ```

use crate::rng::Random;
use std::fmt;
use std::time::Duration;

/// How randomness is applied to the exponential schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// `U(0, min(max, min·mult^(n−1)))` — the default.
    #[default]
    Full,
    /// `min(max, U(min, 3·previous))`, with `previous = min` before the first retry.
    Decorrelated,
    /// `d/2 + U(0, d/2)` with `d = min(max, min·mult^(n−1))`.
    Equal,
    /// No randomness: `min(max, min·mult^(n−1))`. Only for tests and single clients.
    None,
}

/// Exponential backoff with jitter, validated when built.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    multiplier: f64,
    jitter: Jitter,
}

/// A [`Backoff`] configuration was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidBackoff {
    field: &'static str,
    reason: &'static str,
}

impl InvalidBackoff {
    /// The name of the offending field.
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl fmt::Display for InvalidBackoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid backoff `{}`: {}", self.field, self.reason)
    }
}

impl std::error::Error for InvalidBackoff {}

/// Builds a [`Backoff`]; see [`Backoff::builder`].
#[derive(Debug, Clone, Copy)]
pub struct BackoffBuilder {
    inner: Backoff,
}

impl Default for Backoff {
    /// 25 ms growing ×2 up to 1 s, full jitter.
    fn default() -> Self {
        Self {
            min: Duration::from_millis(25),
            max: Duration::from_secs(1),
            multiplier: 2.0,
            jitter: Jitter::Full,
        }
    }
}

impl BackoffBuilder {
    /// The base delay (the first retry's upper bound for full jitter). Default 25 ms.
    pub fn min(mut self, min: Duration) -> Self {
        self.inner.min = min;
        self
    }

    /// The cap on any delay. Default 1 s.
    pub fn max(mut self, max: Duration) -> Self {
        self.inner.max = max;
        self
    }

    /// Growth per attempt; at least 1. Default 2.
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.inner.multiplier = multiplier;
        self
    }

    /// The jitter strategy. Default [`Jitter::Full`].
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.inner.jitter = jitter;
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<Backoff, InvalidBackoff> {
        let b = self.inner;
        if b.max.is_zero() {
            return Err(InvalidBackoff {
                field: "max",
                reason: "must be greater than zero",
            });
        }
        if b.min > b.max {
            return Err(InvalidBackoff {
                field: "min",
                reason: "must not exceed max",
            });
        }
        if !(b.multiplier.is_finite() && b.multiplier >= 1.0 && b.multiplier <= 1000.0) {
            return Err(InvalidBackoff {
                field: "multiplier",
                reason: "must be a finite number in [1, 1000]",
            });
        }
        Ok(b)
    }
}

impl Backoff {
    /// Starts from the defaults (25 ms, ×2, 1 s, full jitter).
    pub fn builder() -> BackoffBuilder {
        BackoffBuilder {
            inner: Self::default(),
        }
    }

    /// The base delay.
    pub fn min(&self) -> Duration {
        self.min
    }

    /// The cap.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The growth factor.
    pub fn multiplier(&self) -> f64 {
        self.multiplier
    }

    /// The jitter strategy.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// The un-jittered ceiling for retry number `retry` (1 for the first retry).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(1024) as i32;
        let secs = self.min.as_secs_f64() * self.multiplier.powi(exp);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs).min(self.max)
        }
    }

    /// The delay before retry number `retry` (1 for the first retry). `previous` is the delay
    /// used before the previous retry (only decorrelated jitter reads it). Always in `[0, max]`.
    pub fn delay<R: Random>(&self, retry: u32, previous: Duration, mut rng: R) -> Duration {
        let d = match self.jitter {
            Jitter::None => self.ceiling(retry),
            Jitter::Full => self.ceiling(retry).mul_f64(rng.next_f64()),
            Jitter::Equal => {
                let c = self.ceiling(retry);
                c / 2 + (c / 2).mul_f64(rng.next_f64())
            }
            Jitter::Decorrelated => {
                let prev = if previous.is_zero() {
                    self.min
                } else {
                    previous
                };
                let hi = prev.saturating_mul(3).min(self.max).max(self.min);
                self.min + (hi - self.min).mul_f64(rng.next_f64())
            }
        };
        d.min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    #[test]
    fn invalid_configs_name_the_field() {
        let e = Backoff::builder()
            .min(Duration::from_secs(2))
            .max(Duration::from_secs(1))
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "min");
        let e = Backoff::builder().multiplier(f64::NAN).build().unwrap_err();
        assert_eq!(e.field(), "multiplier");
        let e = Backoff::builder()
            .min(Duration::ZERO)
            .max(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "max");
    }

    #[test]
    fn ceiling_grows_and_caps() {
        let b = Backoff::builder()
            .min(Duration::from_millis(10))
            .max(Duration::from_millis(100))
            .jitter(Jitter::None)
            .build()
            .unwrap();
        let mut rng = SplitMix64::new(0);
        assert_eq!(
            b.delay(1, Duration::ZERO, &mut rng),
            Duration::from_millis(10)
        );
        assert_eq!(
            b.delay(2, Duration::ZERO, &mut rng),
            Duration::from_millis(20)
        );
        assert_eq!(
            b.delay(4, Duration::ZERO, &mut rng),
            Duration::from_millis(80)
        );
        assert_eq!(
            b.delay(5, Duration::ZERO, &mut rng),
            Duration::from_millis(100)
        );
        assert_eq!(
            b.delay(u32::MAX, Duration::ZERO, &mut rng),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn full_jitter_spreads_over_the_whole_range() {
        let b = Backoff::default();
        let mut rng = SplitMix64::new(3);
        let (mut lo, mut hi) = (0, 0);
        for _ in 0..1000 {
            let d = b.delay(1, Duration::ZERO, &mut rng);
            assert!(d <= Duration::from_millis(25));
            if d < Duration::from_millis(5) {
                lo += 1;
            }
            if d > Duration::from_millis(20) {
                hi += 1;
            }
        }
        assert!(lo > 100 && hi > 100, "lo {lo} hi {hi}");
    }
}
