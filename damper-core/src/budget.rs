//! The budget that pays for extra attempts.
//!
//! Retries and hedges add load exactly when a dependency may be struggling. A [`Budget`] makes
//! that extra load a bounded share of good traffic: good requests [`deposit`](Budget::deposit),
//! every extra attempt must [`try_withdraw`](Budget::try_withdraw) first, and an empty budget
//! means "fail fast" rather than "add load". `tower-retry-budget` provides the token bucket;
//! `tower-hedge` and the retry layer share one through `Arc`.

use std::sync::Arc;
use tokio::time::Instant;

/// A shared allowance for extra attempts (retries and hedges).
///
/// Implementations are lock-free and shared across clones through `Arc`.
pub trait Budget: Send + Sync {
    /// Credits the budget for one good request completed at `now`.
    fn deposit(&self, now: Instant);

    /// Takes one extra attempt's worth from the budget at `now`; `false` means the attempt must
    /// not be sent.
    fn try_withdraw(&self, now: Instant) -> bool;

    /// The number of extra attempts currently affordable (may be fractional).
    fn balance(&self, now: Instant) -> f64;
}

fn _obj_safe(_: &dyn Budget) {}

impl<B: Budget + ?Sized> Budget for Arc<B> {
    fn deposit(&self, now: Instant) {
        (**self).deposit(now)
    }
    fn try_withdraw(&self, now: Instant) -> bool {
        (**self).try_withdraw(now)
    }
    fn balance(&self, now: Instant) -> f64 {
        (**self).balance(now)
    }
}

impl<B: Budget + ?Sized> Budget for &B {
    fn deposit(&self, now: Instant) {
        (**self).deposit(now)
    }
    fn try_withdraw(&self, now: Instant) -> bool {
        (**self).try_withdraw(now)
    }
    fn balance(&self, now: Instant) -> f64 {
        (**self).balance(now)
    }
}

/// A budget that always allows: for tests, or to turn budgeting off deliberately.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unlimited(());

impl Unlimited {
    /// A new unlimited budget.
    pub const fn new() -> Self {
        Self(())
    }
}

impl Budget for Unlimited {
    fn deposit(&self, _now: Instant) {}
    fn try_withdraw(&self, _now: Instant) -> bool {
        true
    }
    fn balance(&self, _now: Instant) -> f64 {
        f64::INFINITY
    }
}

/// A budget that never allows an extra attempt.
#[derive(Debug, Clone, Copy, Default)]
pub struct Empty(());

impl Empty {
    /// A new empty budget.
    pub const fn new() -> Self {
        Self(())
    }
}

impl Budget for Empty {
    fn deposit(&self, _now: Instant) {}
    fn try_withdraw(&self, _now: Instant) -> bool {
        false
    }
    fn balance(&self, _now: Instant) -> f64 {
        0.0
    }
}
