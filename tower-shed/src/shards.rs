//! Sharded admission: an exact global limit without one counter that every core writes.
//!
//! The limit is a pool of `L` slots. The pool keeps the slots no shard holds (`global`, which
//! goes negative when the limit is cut below what the shards hold). Each shard (one per
//! thread, assigned round-robin) leases slots from the pool in small batches and keeps the ones
//! it is not using as `free`:
//!
//! - admit: take a free slot of this thread's shard (one CAS on a cache line only this thread
//!   normally writes), or lease a batch from the pool, or, when the pool is empty, reclaim the
//!   free slots of all shards into the pool and lease again; otherwise reject;
//! - release: return the slot to the shard; a shard holding more than a batch free, or any
//!   free slot while the pool is over-leased, gives the excess back.
//!
//! Slots are only moved, never created, so the requests in flight (leased minus free, summed
//! over shards) never exceed `L` (a cut to the limit takes effect as requests finish, as with a
//! single counter). Idle shards hold at most a batch of free slots, which any shard reclaims as
//! soon as it needs them: no capacity is lost, idle connections hold nothing. Like a single
//! counter's add-then-undo, the protocol can turn a request away while another thread has
//! slots in transit (taken from the pool, not yet added to its shard); it never lets one too
//! many in. The loom models in this file check both properties.

// The pool's atomics are loom's under `--cfg loom`, so the slot protocol is model-checked.
#[cfg(loom)]
use loom::sync::atomic::{AtomicI64, AtomicU64};
use std::cell::Cell;
#[cfg(not(loom))]
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::atomic::{AtomicUsize, Ordering};

const FREE: u64 = 0xFFFF_FFFF;
const LEASED_ONE: u64 = 1 << 32;

fn free(s: u64) -> u64 {
    s & FREE
}

fn leased(s: u64) -> u64 {
    s >> 32
}

/// Two cache lines per hot atomic, against false sharing and adjacent-line prefetch.
#[derive(Debug)]
#[repr(align(128))]
struct Line<T>(T);

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

const UNASSIGNED: usize = usize::MAX;

thread_local! {
    /// This thread's shard number (assigned on first use), and a per-thread request counter
    /// for sampling.
    static THREAD: Cell<(usize, u32)> = const { Cell::new((UNASSIGNED, 0)) };
}

/// Runs `admit` with this thread's shard number (reduce it with [`Shards::index`]). If it
/// admits, the request is counted and the answer says whether to measure it: one admitted
/// request in `sample_mask + 1`. Rejected attempts are not counted, so that under a periodic
/// load the measured requests cannot all fall on rejected attempts (which would leave the
/// limit algorithm without samples while its limit is low).
#[inline]
pub(crate) fn admit_on_this_thread<T>(
    sample_mask: u32,
    admit: impl FnOnce(usize) -> Option<T>,
) -> Option<(T, bool)> {
    THREAD.with(|t| {
        let (mut shard, seq) = t.get();
        if shard == UNASSIGNED {
            shard = NEXT_SHARD.fetch_add(1, Ordering::Relaxed);
            t.set((shard, seq));
        }
        let admitted = admit(shard)?;
        t.set((shard, seq.wrapping_add(1)));
        Some((admitted, seq & sample_mask == 0))
    })
}

#[derive(Debug)]
pub(crate) struct Shards {
    global: Line<AtomicI64>,
    shards: Box<[Line<AtomicU64>]>,
    mask: usize,
    batch: u64,
}

impl Shards {
    /// A pool of `limit` slots over `shards` shards (rounded up to a power of two).
    pub(crate) fn new(limit: usize, shards: usize, batch: u32) -> Self {
        let n = shards.max(1).next_power_of_two();
        Self {
            global: Line(AtomicI64::new(limit as i64)),
            shards: (0..n).map(|_| Line(AtomicU64::new(0))).collect(),
            mask: n - 1,
            batch: u64::from(batch.max(1)),
        }
    }

    #[inline]
    pub(crate) fn index(&self, thread: usize) -> usize {
        thread & self.mask
    }

    /// Takes a slot for shard `i`; `false` if the limit is reached. Returns the number in
    /// flight before this one when known cheaply (the shard's own count otherwise).
    #[inline]
    pub(crate) fn acquire(&self, i: usize) -> bool {
        let shard = &self.shards[i].0;
        let mut s = shard.load(Ordering::Acquire);
        while free(s) > 0 && self.global.0.load(Ordering::Acquire) >= 0 {
            match shard.compare_exchange_weak(s, s - 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
        self.acquire_slow(shard)
    }

    #[cold]
    fn acquire_slow(&self, shard: &AtomicU64) -> bool {
        if self.lease(shard) {
            return true;
        }
        // The pool is empty: bring every idle slot back to it, then try once more.
        if self.reclaim() > 0 {
            return self.lease(shard);
        }
        false
    }

    /// Leases up to a batch from the pool; uses one slot at once.
    fn lease(&self, shard: &AtomicU64) -> bool {
        let global = &self.global.0;
        let mut g = global.load(Ordering::Acquire);
        while g > 0 {
            let take = (g as u64).min(self.batch);
            match global.compare_exchange_weak(
                g,
                g - take as i64,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    shard.fetch_add(take * LEASED_ONE + (take - 1), Ordering::AcqRel);
                    return true;
                }
                Err(now) => g = now,
            }
        }
        false
    }

    /// Moves every shard's free slots back to the pool; returns how many.
    fn reclaim(&self) -> u64 {
        let mut total = 0;
        for shard in self.shards.iter() {
            total += self.give_back(&shard.0, |free| free);
        }
        total
    }

    /// Takes `amount(free)` free slots out of `shard` and returns them to the pool.
    fn give_back(&self, shard: &AtomicU64, amount: impl Fn(u64) -> u64) -> u64 {
        let mut s = shard.load(Ordering::Acquire);
        loop {
            let give = amount(free(s)).min(free(s));
            if give == 0 {
                return 0;
            }
            let next = s - give * LEASED_ONE - give;
            match shard.compare_exchange_weak(s, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    self.global.0.fetch_add(give as i64, Ordering::AcqRel);
                    return give;
                }
                Err(now) => s = now,
            }
        }
    }

    /// Returns shard `i`'s slot.
    #[inline]
    pub(crate) fn release(&self, i: usize) {
        let shard = &self.shards[i].0;
        let s = shard.fetch_add(1, Ordering::AcqRel) + 1;
        if free(s) > self.batch || self.global.0.load(Ordering::Acquire) < 0 {
            self.trim(shard);
        }
    }

    #[cold]
    fn trim(&self, shard: &AtomicU64) {
        if self.global.0.load(Ordering::Acquire) < 0 {
            self.give_back(shard, |free| free);
        } else {
            let batch = self.batch;
            self.give_back(shard, |free| free.saturating_sub(batch));
        }
    }

    /// Requests in flight: slots leased and not free, over all shards.
    pub(crate) fn in_flight(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.0.load(Ordering::Acquire);
                leased(s).saturating_sub(free(s)) as usize
            })
            .sum()
    }

    /// The limit changed from `old` to `new`: the pool grows or shrinks by the difference.
    pub(crate) fn resize(&self, old: usize, new: usize) {
        self.global
            .0
            .fetch_add(new as i64 - old as i64, Ordering::AcqRel);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn slots_move_but_never_exceed_the_limit() {
        let s = Shards::new(5, 4, 2);
        // Shard 0 leases a batch of 2, uses both, then 3 more one batch at a time.
        let mut held = Vec::new();
        for i in [0, 0, 1, 2, 1] {
            assert!(s.acquire(i));
            held.push(i);
        }
        assert_eq!(s.in_flight(), 5);
        assert!(!s.acquire(0) && !s.acquire(1) && !s.acquire(2));
        // Shard 2 frees a slot; shard 0 reclaims it.
        s.release(2);
        assert_eq!(s.in_flight(), 4);
        assert!(s.acquire(0));
        assert!(!s.acquire(2));
        assert_eq!(s.in_flight(), 5);
    }

    #[test]
    fn idle_free_slots_are_reclaimed_and_cuts_apply_as_requests_finish() {
        let s = Shards::new(4, 2, 4);
        assert!(s.acquire(0)); // shard 0 leases 4, uses 1
        s.release(0); // shard 0 holds 4 free
        assert_eq!(s.in_flight(), 0);
        for _ in 0..4 {
            assert!(s.acquire(1)); // reclaimed from idle shard 0
        }
        assert!(!s.acquire(0));
        // Cut 4 -> 2: no admission until two finish.
        s.resize(4, 2);
        s.release(1);
        assert!(!s.acquire(0));
        s.release(1);
        assert!(!s.acquire(0));
        s.release(1);
        assert!(s.acquire(0));
        assert!(!s.acquire(1));
        assert_eq!(s.in_flight(), 2);
    }

    #[test]
    fn threads_never_hold_more_than_the_limit() {
        const LIMIT: usize = 6;
        let s = Shards::new(LIMIT, 4, 2);
        let held = AtomicUsize::new(0);
        let admitted = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for t in 0..4 {
                let (s, held, admitted) = (&s, &held, &admitted);
                scope.spawn(move || {
                    let mut mine = 0;
                    for n in 0..20_000 {
                        // Hold up to 3 at a time, release in bursts.
                        if mine < 3 && n % 5 != 4 {
                            if s.acquire(t) {
                                let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                                assert!(now <= LIMIT, "{now} held");
                                admitted.fetch_add(1, Ordering::Relaxed);
                                mine += 1;
                            }
                        } else {
                            while mine > 0 {
                                held.fetch_sub(1, Ordering::SeqCst);
                                s.release(t);
                                mine -= 1;
                            }
                        }
                    }
                    while mine > 0 {
                        held.fetch_sub(1, Ordering::SeqCst);
                        s.release(t);
                        mine -= 1;
                    }
                });
            }
        });
        assert_eq!(s.in_flight(), 0);
        assert!(admitted.load(Ordering::Relaxed) > 1000);
        // Every slot is back: the whole limit can be taken again from one shard.
        for _ in 0..LIMIT {
            assert!(s.acquire(0));
        }
        assert!(!s.acquire(1));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicUsize;

    /// Two threads on two shards race for one slot: never both in, and the slot comes back.
    #[test]
    fn loom_one_slot_two_shards() {
        loom::model(|| {
            let pool = Arc::new(Shards::new(1, 2, 1));
            let held = Arc::new(AtomicUsize::new(0));
            let threads: Vec<_> = (0..2)
                .map(|i| {
                    let (pool, held) = (pool.clone(), held.clone());
                    loom::thread::spawn(move || {
                        if pool.acquire(i) {
                            assert_eq!(held.fetch_add(1, Ordering::SeqCst), 0);
                            held.fetch_sub(1, Ordering::SeqCst);
                            pool.release(i);
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(pool.in_flight(), 0);
            assert!(pool.acquire(1));
            assert!(!pool.acquire(0));
        });
    }

    /// Batches larger than the limit, two rounds per thread: reclaiming idle slots from the
    /// other shard never lets two requests hold the single slot.
    #[test]
    fn loom_reclaim_never_over_admits() {
        loom::model(|| {
            let pool = Arc::new(Shards::new(1, 2, 4));
            let held = Arc::new(AtomicUsize::new(0));
            let threads: Vec<_> = (0..2)
                .map(|i| {
                    let (pool, held) = (pool.clone(), held.clone());
                    loom::thread::spawn(move || {
                        for _ in 0..2 {
                            if pool.acquire(i) {
                                assert_eq!(held.fetch_add(1, Ordering::SeqCst), 0);
                                held.fetch_sub(1, Ordering::SeqCst);
                                pool.release(i);
                            }
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(pool.in_flight(), 0);
            assert!(pool.acquire(0));
            assert!(!pool.acquire(1));
        });
    }

    /// A limit cut racing with admissions: once everything is released, exactly the new
    /// limit can be taken.
    #[test]
    fn loom_cut_while_admitting() {
        loom::model(|| {
            let pool = Arc::new(Shards::new(2, 2, 2));
            let p = pool.clone();
            let worker = loom::thread::spawn(move || {
                if p.acquire(0) {
                    p.release(0);
                }
            });
            // Not guaranteed: slots in transit between the pool and a shard are briefly
            // invisible, so admission may reject while the worker moves them.
            let got = pool.acquire(1);
            pool.resize(2, 1);
            if got {
                pool.release(1);
            }
            worker.join().unwrap();
            assert_eq!(pool.in_flight(), 0);
            assert!(pool.acquire(1));
            assert!(!pool.acquire(0));
        });
    }
}
