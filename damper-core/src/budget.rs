//! The budget that pays for extra attempts.
//!
//! Retries and hedges add load exactly when a dependency may be struggling. A [`Budget`] makes
//! that extra load a bounded share of good traffic: good requests [`deposit`](Budget::deposit),
//! every extra attempt must [`try_withdraw`](Budget::try_withdraw) first, and an empty budget
//! means "fail fast" rather than "add load". [`TokenBucket`] is the exact, lock-free bucket
//! underneath (it leases whole tokens to per-thread stripes so that threads withdrawing at
//! once do not contend); `tower-retry-budget` builds its retry budget on it, and `tower-hedge`
//! and the retry layer share one through `Arc`.

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

/// How many lease stripes a bucket has. Each thread sticks to one, handed out round-robin, so
/// up to this many threads withdraw without sharing a cache line; more threads share stripes
/// (still exact, just contended).
#[cfg(not(loom))]
const STRIPES: usize = 4;
#[cfg(loom)]
const STRIPES: usize = 2;

/// The most whole tokens a single lease moves from the shared word to a stripe.
#[cfg(not(loom))]
const LEASE_MAX: u64 = 64;
/// A lease takes at most this fraction (1/n) of the shared whole tokens, so a small balance
/// is not hoarded in one stripe.
#[cfg(not(loom))]
const LEASE_SHARE: u64 = 2 * STRIPES as u64;
// Under loom the rule is more eager (any whole tokens, two at most), so that models with a
// handful of tokens exercise leasing and stealing. Exactness does not depend on the lease size.
#[cfg(loom)]
const LEASE_MAX: u64 = 2;
#[cfg(loom)]
const LEASE_SHARE: u64 = 1;

/// The shared word packs the available balance (millionths of a token, low 50 bits) with the
/// number of whole tokens *out* in stripes (leased, or spent from a stripe and not yet reported;
/// high 14 bits).
const AVAIL_BITS: u32 = 50;
const AVAIL_MASK: u64 = (1 << AVAIL_BITS) - 1;
const OUT_MAX: u64 = (1 << (64 - AVAIL_BITS)) - 1;
const _: () = assert!(1_000_000_000 * UNIT <= AVAIL_MASK, "max_tokens must fit");
const _: () = assert!(STRIPES as u64 * LEASE_MAX <= OUT_MAX);

/// A stripe word packs the whole tokens it holds (`rem`, low 32 bits) with the whole tokens
/// spent from it since the shared word last heard of it (`used`, high 32 bits). Both are at
/// most `OUT_MAX`.
const REM_MASK: u64 = u32::MAX as u64;
const USED_ONE: u64 = 1 << 32;

#[inline]
const fn pack(avail: u64, out: u64) -> u64 {
    avail | (out << AVAIL_BITS)
}

/// Keeps each atomic on cache lines of its own (128 bytes: adjacent-line prefetch pairs
/// 64-byte lines).
#[derive(Debug)]
#[repr(align(128))]
struct Padded(AtomicU64);

/// This thread's stripe.
#[cfg(not(loom))]
#[inline]
fn stripe() -> usize {
    crate::sync::thread_number() % STRIPES
}

#[cfg(loom)]
loom::thread_local! {
    static PINNED: std::cell::Cell<usize> = std::cell::Cell::new(0);
}

#[cfg(loom)]
fn stripe() -> usize {
    PINNED.with(|s| s.get())
}

/// Under `--cfg loom` only: puts the calling loom thread on lease stripe `i % 2` (every thread
/// starts on stripe 0), so models can race threads on different stripes. Not part of the API.
#[cfg(loom)]
#[doc(hidden)]
pub fn loom_pin_stripe(i: usize) {
    PINNED.with(|s| s.set(i % STRIPES));
}

/// Takes one whole token from stripe word `s` (marking it spent) if it holds one; otherwise
/// returns the empty stripe's word.
#[inline]
fn take_one(s: &AtomicU64) -> Result<(), u64> {
    let mut cur = s.load(Ordering::Acquire);
    while cur & REM_MASK != 0 {
        match s.compare_exchange_weak(cur, cur - 1 + USED_ONE, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return Ok(()),
            Err(actual) => cur = actual,
        }
    }
    Err(cur)
}

/// A lock-free, exact token bucket: the core of every damper budget.
///
/// Each deposit adds `ratio` tokens, capped at `max_tokens`; each withdrawal takes one whole
/// token or fails. It has no notion of time: `tower-retry-budget` adds a per-second floor and
/// decay on top.
///
/// # Why leases
/// A single shared counter updated with compare-and-swap is exact, but two threads withdrawing
/// at once bounce its cache line between cores and each withdrawal gets several times slower
/// than on one thread. So the balance is split: a shared word holds deposits (in millionths of
/// a token), and a few cache-padded *stripes* (one per thread, round-robin) hold whole tokens
/// *leased* from it. A withdrawal takes a token from its own stripe — a compare-and-swap on a
/// line no other thread writes — and only when the stripe is empty does it touch the shared
/// word, leasing up to 64 whole tokens at once (at most 1/8 of the shared whole tokens, so a
/// small balance is not hoarded). When both its stripe and the shared word lack a whole token,
/// it steals one from another stripe before failing. Tokens only ever move (deposit → shared
/// word → stripe → withdrawal), each move a compare-and-swap, so no token is spent twice.
///
/// # What is guaranteed
/// - **No overdraw**, over any interleaving: *successful withdrawals ≤ initial + ratio ×
///   deposits* (the ratio rounded down to millionths of a token, at least one millionth).
///   Draining ([`drain`](Self::drain)) only removes tokens.
/// - **The cap bounds the total**: the shared word also counts the whole tokens out in stripes
///   (leased, or spent from a stripe and not yet reported back), and a deposit credits at most
///   `max_tokens − (shared + out)`. So *shared + leased ≤ `max_tokens`* at every moment, and
///   the burst a full bucket can pay is at most `max_tokens` — exactly as with a single
///   counter. Spent tokens are reported back when their stripe leases again, or swept by a
///   deposit that the cap would cut short while tokens are out, so no credit is lost to them:
///   called one at a time, the bucket credits, pays and refuses exactly as a single counter
///   would. (A deposit racing withdrawals from a stripe can still be cut short by tokens spent
///   after its sweep looked.)
/// - **A whole token pays**: with no other call in progress, a withdrawal fails only when
///   [`balance`](Self::balance) (shared + every stripe) is below one token. Under concurrency a
///   withdrawal can also fail while another thread's lease or [`drain`](Self::drain) is moving
///   tokens between the shared word and a stripe (a window of two atomic operations; the
///   moving tokens are in neither place), or while a stripe it has already scanned is refilled.
///   A single counter cannot fail that way: this window is the price of scaling.
/// - Four stripes: up to four threads withdraw without sharing a line; more threads share
///   stripes round-robin, which stays exact and only brings back some contention.
/// - [`balance`](Self::balance) reads the shared word and then each stripe, so under
///   concurrency it is a snapshot of no single moment; it is exact when nothing else runs.
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
    /// `pack(avail, out)`; invariant `avail + out × UNIT ≤ max`, and `out` ≥ the whole tokens
    /// in and spent from stripes not yet reported.
    shared: Padded,
    stripes: [Padded; STRIPES],
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
            shared: Padded(AtomicU64::new(pack(to_units(initial), 0))),
            stripes: std::array::from_fn(|_| Padded(AtomicU64::new(0))),
            deposit: to_units(ratio).max(1),
            max: to_units(max_tokens),
        })
    }

    /// Credits one deposit of `ratio` tokens, up to the cap; `false` if the bucket was full and
    /// nothing was credited.
    #[inline]
    pub fn deposit(&self) -> bool {
        self.deposit_units(self.deposit)
    }

    /// Credits `tokens` (not scaled by the ratio), up to the cap. Negative or NaN is ignored.
    pub fn deposit_tokens(&self, tokens: f64) {
        if tokens > 0.0 {
            self.deposit_units((tokens.min(1e9) * UNIT as f64) as u64);
        }
    }

    #[inline]
    fn deposit_units(&self, units: u64) -> bool {
        let mut swept = false;
        let mut cur = self.shared.0.load(Ordering::Acquire);
        loop {
            let (avail, out) = (cur & AVAIL_MASK, cur >> AVAIL_BITS);
            let room = self.max.saturating_sub(avail + out * UNIT);
            if room < units && out > 0 && !swept {
                // The cap cuts this deposit short while tokens are out, and some of those may
                // have been spent: learn how many (once per deposit) and look again.
                swept = true;
                if self.sweep() {
                    cur = self.shared.0.load(Ordering::Acquire);
                    continue;
                }
            }
            if room == 0 {
                return false;
            }
            let next = pack(avail + units.min(room), out);
            match self.shared.0.compare_exchange_weak(
                cur,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Reports every stripe's spent tokens to the shared word; `true` if there were any.
    #[cold]
    fn sweep(&self) -> bool {
        let mut spent = 0;
        for s in &self.stripes {
            let mut cur = s.0.load(Ordering::Acquire);
            while cur >= USED_ONE {
                match s.0.compare_exchange_weak(
                    cur,
                    cur & REM_MASK,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        spent += cur >> 32;
                        break;
                    }
                    Err(actual) => cur = actual,
                }
            }
        }
        if spent > 0 {
            // `out` counts at least these tokens, so the subtraction stays in its field.
            self.shared
                .0
                .fetch_sub(spent << AVAIL_BITS, Ordering::AcqRel);
        }
        spent > 0
    }

    /// Takes one token if there is one.
    #[inline]
    pub fn try_withdraw(&self) -> bool {
        self.withdraw_at(stripe())
    }

    /// Takes one token, starting at stripe `i`.
    #[inline]
    fn withdraw_at(&self, i: usize) -> bool {
        match take_one(&self.stripes[i].0) {
            Ok(()) => true,
            Err(cur) => self.withdraw_slow(i, cur),
        }
    }

    /// Stripe `i` was found empty (its word: `cur`): lease from the shared word, else steal
    /// from a stripe.
    #[inline(never)]
    fn withdraw_slow(&self, i: usize, mut cur: u64) -> bool {
        let s = &self.stripes[i].0;
        let spent = loop {
            if cur & REM_MASK != 0 {
                // Refilled meanwhile by a thread sharing the stripe.
                match take_one(s) {
                    Ok(()) => return true,
                    Err(actual) => cur = actual,
                }
            } else if cur == 0 {
                break 0;
            } else {
                // Take its spent count, to report it with the lease.
                match s.compare_exchange_weak(cur, 0, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => break cur >> 32,
                    Err(actual) => cur = actual,
                }
            }
        };
        match self.lease(i, spent) {
            Ok(()) => true,
            // No token out means no stripe holds one: the common "empty budget" case ends here.
            Err(0) => false,
            Err(_) => self.steal(i),
        }
    }

    /// Reports `spent` tokens of stripe `i` and, if the shared word has a whole token, takes
    /// one for the caller and leases more to the stripe. Without a whole token, returns the
    /// number of tokens out in stripes.
    fn lease(&self, i: usize, spent: u64) -> Result<(), u64> {
        let mut cur = self.shared.0.load(Ordering::Acquire);
        loop {
            let (avail, out) = (cur & AVAIL_MASK, (cur >> AVAIL_BITS) - spent);
            let whole = avail / UNIT;
            let (next, lease) = if whole == 0 {
                if spent == 0 {
                    return Err(out);
                }
                (pack(avail, out), 0)
            } else {
                // One token for the caller, the rest to the stripe; `out` stays in its field.
                let lease = (whole / LEASE_SHARE)
                    .clamp(1, LEASE_MAX)
                    .min(OUT_MAX - out + 1);
                (pack(avail - lease * UNIT, out + lease - 1), lease)
            };
            match self.shared.0.compare_exchange_weak(
                cur,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) if lease == 0 => return Err(out),
                Ok(_) => {
                    if lease > 1 {
                        self.stripes[i].0.fetch_add(lease - 1, Ordering::AcqRel);
                    }
                    return Ok(());
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Takes one token from the first stripe (from `i` on) that holds one.
    #[cold]
    fn steal(&self, i: usize) -> bool {
        (0..STRIPES).any(|k| take_one(&self.stripes[(i + k) % STRIPES].0).is_ok())
    }

    /// Moves every stripe's tokens back to the shared word (and reports spent ones).
    fn recall(&self) {
        for s in &self.stripes {
            let cur = s.0.swap(0, Ordering::AcqRel);
            if cur != 0 {
                let (rem, spent) = (cur & REM_MASK, cur >> 32);
                // `avail + rem × UNIT ≤ max` (they were counted in `out`), so neither field
                // over- or underflows into the other.
                self.shared.0.fetch_add(
                    (rem * UNIT).wrapping_sub((rem + spent) << AVAIL_BITS),
                    Ordering::AcqRel,
                );
            }
        }
    }

    /// Removes up to `tokens` tokens (for decay); returns how many were removed.
    ///
    /// Leased tokens are first moved back to the shared word, so the drain can reach them.
    pub fn drain(&self, tokens: f64) -> f64 {
        if tokens.is_nan() || tokens <= 0.0 {
            return 0.0;
        }
        self.recall();
        let want = (tokens.min(1e9) * UNIT as f64) as u64;
        let mut cur = self.shared.0.load(Ordering::Acquire);
        loop {
            let take = want.min(cur & AVAIL_MASK);
            if take == 0 {
                return 0.0;
            }
            match self.shared.0.compare_exchange_weak(
                cur,
                cur - take,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return take as f64 / UNIT as f64,
                Err(actual) => cur = actual,
            }
        }
    }

    /// The current balance in tokens: the shared word plus every stripe's leased tokens.
    #[inline]
    pub fn balance(&self) -> f64 {
        let shared = self.shared.0.load(Ordering::Acquire);
        let mut units = shared & AVAIL_MASK;
        // No token out means every stripe is empty: one load is enough.
        if shared >> AVAIL_BITS != 0 {
            for s in &self.stripes {
                units += (s.0.load(Ordering::Acquire) & REM_MASK) * UNIT;
            }
        }
        units as f64 / UNIT as f64
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
        TokenBucket::deposit(self);
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

/// Test-only view of the accounting: `(avail units, out, Σ rem, Σ used)`.
#[cfg(test)]
impl TokenBucket {
    fn parts(&self) -> (u64, u64, u64, u64) {
        let g = self.shared.0.load(Ordering::Acquire);
        let (mut rem, mut used) = (0, 0);
        for s in &self.stripes {
            let v = s.0.load(Ordering::Acquire);
            rem += v & REM_MASK;
            used += v >> 32;
        }
        (g & AVAIL_MASK, g >> AVAIL_BITS, rem, used)
    }

    /// Checks the invariants that hold when no call is in progress.
    fn assert_consistent(&self) {
        let (avail, out, rem, used) = self.parts();
        assert_eq!(
            out,
            rem + used,
            "out counts exactly the tokens in and spent from stripes"
        );
        assert!(
            avail + out * UNIT <= self.max,
            "the cap bounds shared + out"
        );
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        let credited = (0..1000).filter(|_| b.deposit()).count();
        // Six deposits fill it; the rest find it full and say so.
        assert_eq!(credited, 6);
        assert_eq!(b.balance(), 3.0);
        assert!(b.try_withdraw() && b.try_withdraw() && b.try_withdraw());
        assert!(!b.try_withdraw());
        assert!(b.deposit());
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
    fn a_lease_moves_whole_tokens_to_the_stripe_and_balance_counts_them() {
        let b = TokenBucket::new(1.0, 1000.0, 1000.0).unwrap();
        assert!(b.withdraw_at(0));
        // A lease of 64 (the most, and under 1/8 of 1000): one paid, 63 left in stripe 0.
        assert_eq!(b.parts(), (936 * UNIT, 63, 63, 0));
        assert_eq!(b.balance(), 999.0);
        assert!(b.withdraw_at(0));
        assert_eq!(b.parts(), (936 * UNIT, 63, 62, 1));
        b.assert_consistent();
    }

    #[test]
    fn a_small_balance_is_not_hoarded() {
        // 10 tokens: a lease takes at most 1/8 of the shared whole tokens, so just the one paid.
        let b = TokenBucket::new(1.0, 10.0, 10.0).unwrap();
        assert!(b.withdraw_at(0));
        assert_eq!(b.parts(), (9 * UNIT, 0, 0, 0));
        // 40 tokens: a lease of 5, four of them left in the stripe.
        let b = TokenBucket::new(1.0, 40.0, 40.0).unwrap();
        assert!(b.withdraw_at(1));
        assert_eq!(b.parts(), (35 * UNIT, 4, 4, 0));
    }

    #[test]
    fn a_withdrawal_steals_from_other_stripes_before_failing() {
        let b = TokenBucket::new(1.0, 64.0, 64.0).unwrap();
        assert!(b.withdraw_at(0)); // lease of 8: 7 left in stripe 0, 56 shared
        assert_eq!(b.parts(), (56 * UNIT, 7, 7, 0));
        // Stripe 1 drains the shared word, then takes stripe 0's seven tokens.
        let n = (0..100).take_while(|_| b.withdraw_at(1)).count();
        assert_eq!(n, 63);
        assert_eq!(b.balance(), 0.0);
        assert!(!b.withdraw_at(0) && !b.withdraw_at(2));
        b.assert_consistent();
    }

    #[test]
    fn the_cap_counts_leased_tokens_and_spent_ones_are_reported() {
        let b = TokenBucket::new(1.0, 100.0, 100.0).unwrap();
        assert!(b.withdraw_at(0)); // lease of 12: 11 in stripe 0, 88 shared
        b.deposit();
        b.deposit();
        // The cap counts the 11 leased tokens: only the one withdrawn is credited back.
        assert_eq!(b.balance(), 100.0);
        assert_eq!(b.parts(), (89 * UNIT, 11, 11, 0));
        for _ in 0..5 {
            assert!(b.withdraw_at(0));
        }
        assert_eq!(b.balance(), 95.0);
        // Five tokens spent from the stripe: a deposit at the cap learns of them.
        for _ in 0..3 {
            b.deposit();
        }
        assert_eq!(b.balance(), 98.0);
        assert_eq!(b.parts(), (92 * UNIT, 6, 6, 0));
        b.assert_consistent();
    }

    #[test]
    fn drain_reaches_leased_tokens() {
        let b = TokenBucket::new(1.0, 1000.0, 1000.0).unwrap();
        assert!(b.withdraw_at(0));
        assert!(b.withdraw_at(1));
        assert_eq!(b.balance(), 998.0);
        assert_eq!(b.drain(990.5), 990.5);
        assert_eq!(b.parts(), (7 * UNIT + UNIT / 2, 0, 0, 0));
        assert_eq!(b.drain(10.0), 7.5);
        assert!(!b.withdraw_at(0));
        b.deposit_tokens(5.0);
        assert_eq!(b.balance(), 5.0);
        b.assert_consistent();
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
        b.assert_consistent();
    }

    #[test]
    fn concurrent_deposits_and_withdrawals_pay_at_most_what_was_credited() {
        let b = Arc::new(TokenBucket::new(0.5, 200.0, 150.0).unwrap());
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let b = b.clone();
                std::thread::spawn(move || {
                    let mut paid = 0u64;
                    for i in 0..5000 {
                        if (i + t) % 3 == 0 {
                            TokenBucket::deposit(&b);
                        } else {
                            paid += TokenBucket::try_withdraw(&b) as u64;
                        }
                    }
                    paid
                })
            })
            .collect();
        let paid: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        b.assert_consistent();
        // Deposits were made while the bucket was capped, so only an upper bound holds: the
        // balance left plus what was paid never exceeds what went in.
        let deposits = (0..4u64)
            .map(|t| (0..5000u64).filter(|i| (i + t) % 3 == 0).count() as f64)
            .sum::<f64>();
        assert!(paid as f64 + TokenBucket::balance(&b) <= 150.0 + 0.5 * deposits + 1e-6);
        assert!(TokenBucket::balance(&b) <= 200.0);
        assert!(paid > 150);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Deposit,
        DepositTokens(f64),
        Withdraw(usize),
        Drain(f64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Deposit),
            1 => (0.0f64..20.0).prop_map(Op::DepositTokens),
            6 => (0..STRIPES).prop_map(Op::Withdraw),
            1 => (0.0f64..30.0).prop_map(Op::Drain),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Called one at a time, from any stripes, the leased bucket credits, pays and refuses
        /// exactly as a single counter capped at `max_tokens` would; so it never pays more than
        /// initial + credited, and its balance never exceeds the cap.
        #[test]
        fn one_at_a_time_it_matches_a_single_counter(
            ratio in 0.01f64..=1.0,
            max_tokens in 1.0f64..500.0,
            initial_frac in 0.0f64..=1.0,
            ops in proptest::collection::vec(op(), 0..400),
        ) {
            let initial = max_tokens * initial_frac;
            let b = TokenBucket::new(ratio, max_tokens, initial).unwrap();
            let (max, dep) = (b.max, b.deposit);
            // The reference: one counter in millionths of a token.
            let mut model = (initial * UNIT as f64).round() as u64;
            let (mut credited, mut paid) = (model, 0u64);
            for op in ops {
                match op {
                    Op::Deposit => {
                        b.deposit();
                        let next = (model + dep).min(max);
                        credited += next - model;
                        model = next;
                    }
                    Op::DepositTokens(t) => {
                        b.deposit_tokens(t);
                        let next = (model + (t * UNIT as f64) as u64).min(max);
                        credited += next - model;
                        model = next;
                    }
                    Op::Withdraw(i) => {
                        let ok = b.withdraw_at(i);
                        prop_assert_eq!(ok, model >= UNIT, "pays iff a whole token is banked");
                        if ok {
                            model -= UNIT;
                            paid += 1;
                        }
                    }
                    Op::Drain(t) => {
                        let want = (t * UNIT as f64) as u64;
                        let took = b.drain(t);
                        prop_assert_eq!(took, want.min(model) as f64 / UNIT as f64);
                        model -= want.min(model);
                    }
                }
                prop_assert_eq!(b.balance(), model as f64 / UNIT as f64);
                prop_assert!(model <= max);
                prop_assert!(paid * UNIT <= credited);
                b.assert_consistent();
            }
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// A thread on stripe `stripe` making one withdrawal.
    fn withdraw_on(b: &Arc<TokenBucket>, stripe: usize) -> thread::JoinHandle<u32> {
        let b = b.clone();
        thread::spawn(move || {
            loom_pin_stripe(stripe);
            b.try_withdraw() as u32
        })
    }

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
            b.assert_consistent();
        });
    }

    // Stripe 0 holds a leased token and the shared word one more. A thread on stripe 1 leases
    // the shared token, then steals stripe 0's, while a thread on stripe 0 spends from it: two
    // tokens, two payments, whatever the interleaving, and the accounting adds up.
    #[test]
    fn loom_lease_and_steal_never_overdraw() {
        loom::model(|| {
            let b = Arc::new(TokenBucket::new(1.0, 3.0, 3.0).unwrap());
            assert!(b.try_withdraw()); // a lease of 2: one paid, one left in stripe 0
            assert_eq!(b.parts(), (UNIT, 1, 1, 0));
            let thief = {
                let b = b.clone();
                thread::spawn(move || {
                    loom_pin_stripe(1);
                    b.try_withdraw() as u32 + b.try_withdraw() as u32
                })
            };
            let owner = withdraw_on(&b, 0);
            let got = thief.join().unwrap() + owner.join().unwrap();
            assert_eq!(got, 2);
            assert_eq!(b.balance(), 0.0);
            b.assert_consistent();
            assert!(!b.try_withdraw());
        });
    }

    // Two withdrawals on different stripes race for leases and steals while a deposit at the
    // cap sweeps spent tokens: never more is paid than was credited, the cap holds, and `out`
    // neither leaks nor underflows.
    #[test]
    fn loom_deposit_at_the_cap_races_leases_and_steals() {
        loom::model(|| {
            let b = Arc::new(TokenBucket::new(1.0, 3.0, 3.0).unwrap());
            assert!(b.try_withdraw()); // stripe 0: one leased token; shared: one
            b.deposit(); // shared: two, so shared + out is at the cap
            assert_eq!(b.parts(), (2 * UNIT, 1, 1, 0));
            let t0 = withdraw_on(&b, 0);
            let t1 = withdraw_on(&b, 1);
            // At the cap while a token is out: each deposit sweeps for spent tokens.
            let d = {
                let b = b.clone();
                thread::spawn(move || {
                    b.deposit();
                    b.deposit();
                })
            };
            let got = 1 + t0.join().unwrap() + t1.join().unwrap();
            d.join().unwrap();
            let left = b.balance();
            assert!(left <= 3.0);
            assert!(f64::from(got) + left <= 6.0 + 1e-9, "{got} + {left}");
            b.assert_consistent();
            // Nothing is stuck: what is left can be spent from any stripe.
            let mut more = 0;
            while b.try_withdraw() {
                more += 1;
            }
            assert_eq!(f64::from(more), left.floor());
        });
    }

    // A drain (decay) recalls leased tokens while a thread on the leasing stripe spends and
    // another leases: what is paid plus drained plus left is exactly what was banked.
    #[test]
    fn loom_drain_recalls_leases_exactly() {
        loom::model(|| {
            let b = Arc::new(TokenBucket::new(1.0, 4.0, 4.0).unwrap());
            assert!(b.try_withdraw()); // stripe 0: one leased; shared: two
            let t0 = withdraw_on(&b, 0);
            let t1 = withdraw_on(&b, 1);
            let d = {
                let b = b.clone();
                thread::spawn(move || b.drain(1.5))
            };
            let got = t0.join().unwrap() + t1.join().unwrap();
            let drained = d.join().unwrap();
            let left = b.balance();
            assert!((f64::from(got) + drained + left - 3.0).abs() < 1e-9);
            assert!(drained <= 1.5 + 1e-9);
            b.assert_consistent();
        });
    }
}
