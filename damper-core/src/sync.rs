//! Atomics, swapped for loom's under `--cfg loom` so the lock-free structures can be model
//! checked.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering, fence};

/// A small number fixed for the calling thread: threads are numbered round-robin the first
/// time they ask. Striped structures use it modulo their stripe count, so that threads working
/// at once mostly touch different cache lines.
#[cfg(not(loom))]
#[inline]
pub(crate) fn thread_number() -> usize {
    use std::cell::Cell;
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static NUMBER: Cell<usize> = const { Cell::new(usize::MAX) });
    NUMBER.with(|n| {
        let mut i = n.get();
        if i == usize::MAX {
            i = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            n.set(i);
        }
        i
    })
}
