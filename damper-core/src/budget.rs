//! The budget that pays for extra attempts.
//!
//! Retries and hedges add load exactly when a dependency may be struggling. A [`Budget`] makes
//! that extra load a bounded share of good traffic: good requests [`deposit`](Budget::deposit),
//! every extra attempt must [`try_withdraw`](Budget::try_withdraw) first, and an empty budget
//! means "fail fast" rather than "add load". `tower-retry-budget` provides the token bucket;
//! `tower-hedge` and the retry layer share one through `Arc`.

use crate::sync::{AtomicU64, Ordering};
use std::fmt;
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

/// Fixed-point scale: balances are kept in millionths of a token.
const UNIT: u64 = 1_000_000;

/// A budget configuration was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidBudget {
    field: &'static str,
    reason: &'static str,
}

impl InvalidBudget {
    /// A rejection of `field` for `reason`.
    pub const fn new(field: &'static str, reason: &'static str) -> Self {
        Self { field, reason }
    }

    /// The name of the offending field.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// Why it was rejected.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for InvalidBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid budget `{}`: {}", self.field, self.reason)
    }
}

impl std::error::Error for InvalidBudget {}

/// A lock-free, exact token bucket: the core of every damper budget.
///
/// Each deposit adds `ratio` tokens, capped at `max_tokens`; each withdrawal takes one whole
/// token or fails. The balance is one `AtomicU64` in millionths of a token, updated with
/// compare-and-swap, so concurrent withdrawals can never overdraw it and no deposit is lost.
/// It has no notion of time: `tower-retry-budget` adds a per-second floor and decay on top.
///
/// The bound it keeps, over any sequence of calls: *successful withdrawals ≤ initial +
/// ratio × deposits* (rounded down to millionths of a token per deposit).
///
/// ```
/// use damper_core::budget::TokenBucket;
///
/// // 10% extra load, at most 5 tokens banked, starting empty.
/// let bucket = TokenBucket::new(0.1, 5.0, 0.0).unwrap();
/// assert!(!bucket.try_withdraw());
/// for _ in 0..10 {
///     bucket.deposit();
/// }
/// assert!(bucket.try_withdraw());
/// assert!(!bucket.try_withdraw());
/// ```
#[derive(Debug)]
pub struct TokenBucket {
    balance: AtomicU64,
    deposit: u64,
    max: u64,
}

impl TokenBucket {
    /// A bucket that credits `ratio` tokens per deposit (in `(0, 1]`), holds at most
    /// `max_tokens` (≥ 1) and starts with `initial` tokens (in `[0, max_tokens]`).
    pub fn new(ratio: f64, max_tokens: f64, initial: f64) -> Result<Self, InvalidBudget> {
        if !(ratio.is_finite() && ratio > 0.0 && ratio <= 1.0) {
            return Err(InvalidBudget::new("ratio", "must be in (0, 1]"));
        }
        if !(max_tokens.is_finite() && (1.0..=1e9).contains(&max_tokens)) {
            return Err(InvalidBudget::new("max_tokens", "must be in [1, 1e9]"));
        }
        if !(initial.is_finite() && initial >= 0.0 && initial <= max_tokens) {
            return Err(InvalidBudget::new("initial", "must be in [0, max_tokens]"));
        }
        let to_units = |t: f64| (t * UNIT as f64).round() as u64;
        Ok(Self {
            balance: AtomicU64::new(to_units(initial)),
            deposit: to_units(ratio).max(1),
            max: to_units(max_tokens),
        })
    }

    /// Credits one deposit of `ratio` tokens, up to the cap.
    #[inline]
    pub fn deposit(&self) {
        self.deposit_units(self.deposit);
    }

    /// Credits `tokens` (not scaled by the ratio), up to the cap. Negative or NaN is ignored.
    pub fn deposit_tokens(&self, tokens: f64) {
        if tokens > 0.0 {
            self.deposit_units((tokens.min(1e9) * UNIT as f64) as u64);
        }
    }

    #[inline]
    fn deposit_units(&self, units: u64) {
        let mut cur = self.balance.load(Ordering::Relaxed);
        loop {
            if cur >= self.max {
                return;
            }
            let next = cur.saturating_add(units).min(self.max);
            match self
                .balance
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Takes one token if there is one.
    #[inline]
    pub fn try_withdraw(&self) -> bool {
        let mut cur = self.balance.load(Ordering::Relaxed);
        loop {
            if cur < UNIT {
                return false;
            }
            match self.balance.compare_exchange_weak(
                cur,
                cur - UNIT,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Removes up to `tokens` tokens (for decay); returns how many were removed.
    pub fn drain(&self, tokens: f64) -> f64 {
        if tokens.is_nan() || tokens <= 0.0 {
            return 0.0;
        }
        let want = (tokens.min(1e9) * UNIT as f64) as u64;
        let mut cur = self.balance.load(Ordering::Relaxed);
        loop {
            let take = want.min(cur);
            if take == 0 {
                return 0.0;
            }
            match self.balance.compare_exchange_weak(
                cur,
                cur - take,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return take as f64 / UNIT as f64,
                Err(actual) => cur = actual,
            }
        }
    }

    /// The current balance in tokens.
    #[inline]
    pub fn balance(&self) -> f64 {
        self.balance.load(Ordering::Relaxed) as f64 / UNIT as f64
    }

    /// Tokens credited per deposit.
    pub fn ratio(&self) -> f64 {
        self.deposit as f64 / UNIT as f64
    }

    /// The cap on the balance, in tokens.
    pub fn max_tokens(&self) -> f64 {
        self.max as f64 / UNIT as f64
    }
}

impl Budget for TokenBucket {
    fn deposit(&self, _now: Instant) {
        TokenBucket::deposit(self)
    }
    fn try_withdraw(&self, _now: Instant) -> bool {
        TokenBucket::try_withdraw(self)
    }
    fn balance(&self, _now: Instant) -> f64 {
        TokenBucket::balance(self)
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn invalid_configs_name_the_field() {
        assert_eq!(
            TokenBucket::new(0.0, 10.0, 0.0).unwrap_err().field(),
            "ratio"
        );
        assert_eq!(
            TokenBucket::new(1.5, 10.0, 0.0).unwrap_err().field(),
            "ratio"
        );
        assert_eq!(
            TokenBucket::new(f64::NAN, 10.0, 0.0).unwrap_err().field(),
            "ratio"
        );
        assert_eq!(
            TokenBucket::new(0.1, 0.5, 0.0).unwrap_err().field(),
            "max_tokens"
        );
        assert_eq!(
            TokenBucket::new(0.1, 10.0, 11.0).unwrap_err().field(),
            "initial"
        );
        assert_eq!(
            TokenBucket::new(0.1, 10.0, -1.0).unwrap_err().field(),
            "initial"
        );
    }

    #[test]
    fn deposits_fund_withdrawals_at_the_ratio() {
        let b = TokenBucket::new(0.2, 100.0, 0.0).unwrap();
        for _ in 0..50 {
            b.deposit();
        }
        let mut n = 0;
        while b.try_withdraw() {
            n += 1;
        }
        assert_eq!(n, 10);
        assert!(b.balance() < 1.0);
    }

    #[test]
    fn the_cap_bounds_a_burst() {
        let b = TokenBucket::new(0.5, 3.0, 0.0).unwrap();
        for _ in 0..1000 {
            b.deposit();
        }
        assert_eq!(b.balance(), 3.0);
        assert!(b.try_withdraw() && b.try_withdraw() && b.try_withdraw());
        assert!(!b.try_withdraw());
    }

    #[test]
    fn drain_takes_at_most_the_balance() {
        let b = TokenBucket::new(0.1, 10.0, 2.5).unwrap();
        assert_eq!(b.drain(1.0), 1.0);
        assert_eq!(b.drain(5.0), 1.5);
        assert_eq!(b.drain(5.0), 0.0);
        assert_eq!(b.drain(f64::NAN), 0.0);
    }

    #[test]
    fn concurrent_withdrawals_never_overdraw() {
        let b = Arc::new(TokenBucket::new(0.1, 1000.0, 100.0).unwrap());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    (0..1000).filter(|_| TokenBucket::try_withdraw(&b)).count()
                })
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 100);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    // Two withdrawals race a deposit over a balance of one token: at most one token's worth
    // more than was ever credited is spent, and the balance never wraps.
    #[test]
    fn loom_withdrawals_never_overdraw() {
        loom::model(|| {
            let b = Arc::new(TokenBucket::new(0.5, 2.0, 1.0).unwrap());
            let w =
                |b: Arc<TokenBucket>| thread::spawn(move || TokenBucket::try_withdraw(&b) as u32);
            let t1 = w(b.clone());
            let t2 = w(b.clone());
            let d = {
                let b = b.clone();
                thread::spawn(move || TokenBucket::deposit(&b))
            };
            let got = t1.join().unwrap() + t2.join().unwrap();
            d.join().unwrap();
            // 1 initial + 0.5 deposited: exactly one whole token can be spent.
            assert_eq!(got, 1);
            assert!((TokenBucket::balance(&b) - 0.5).abs() < 1e-9);
        });
    }
}
