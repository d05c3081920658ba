//! A spare copy of a service, for layers that may send more attempts later (retries, hedges).
//!
//! Cloning a service on every request just in case it is needed later bumps the reference
//! counts inside it (a breaker's state, a timeout's policy, a connection pool), and those
//! counts are shared by every thread that uses the service: two threads then trade the same
//! cache lines on every request. A [`Spare`] keeps one copy per *service clone* (made on first
//! use); a request that may need another attempt carries a [`SpareHandle`], a reference count
//! only that service clone touches, and the inner service is cloned from it only when another
//! attempt is actually sent.
//!
//! ```
//! use damper_core::spare::Spare;
//!
//! #[derive(Clone)]
//! struct Backend;
//!
//! let inner = Backend;
//! let mut spare = Spare::new();
//! // Per request that may be retried: a cheap handle, no clone of the service.
//! let handle = spare.handle(&inner);
//! // When a retry is actually sent: one clone.
//! let _for_the_retry: Backend = handle.try_clone().expect("not being cloned elsewhere");
//! ```

use std::fmt;
use std::sync::Arc;

/// One service clone's spare copy of its inner service. See the [module docs](self).
pub struct Spare<S>(Option<Arc<tokio::sync::Mutex<S>>>);

impl<S> Spare<S> {
    /// No copy yet; [`handle`](Self::handle) makes it on first use.
    pub const fn new() -> Self {
        Self(None)
    }
}

impl<S> Default for Spare<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> fmt::Debug for Spare<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spare")
            .field("made", &self.0.is_some())
            .finish()
    }
}

impl<S: Clone> Spare<S> {
    /// A handle to the spare copy, cloning `inner` into it on first use.
    pub fn handle(&mut self, inner: &S) -> SpareHandle<S> {
        SpareHandle(
            self.0
                .get_or_insert_with(|| Arc::new(tokio::sync::Mutex::new(inner.clone())))
                .clone(),
        )
    }
}

/// What a request carries to reach its service clone's spare copy later.
pub struct SpareHandle<S>(Arc<tokio::sync::Mutex<S>>);

impl<S> fmt::Debug for SpareHandle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpareHandle").finish_non_exhaustive()
    }
}

impl<S: Clone> SpareHandle<S> {
    /// A fresh clone of the spare copy, or `None` in the rare moment another request is cloning
    /// it (the lock is only ever tried, never waited for): treat that like a service that is
    /// not ready.
    pub fn try_clone(&self) -> Option<S> {
        self.0.try_lock().ok().map(|spare| spare.clone())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counted(Arc<AtomicUsize>);

    impl Clone for Counted {
        fn clone(&self) -> Self {
            self.0.fetch_add(1, Ordering::SeqCst);
            Self(self.0.clone())
        }
    }

    #[test]
    fn one_copy_per_spare_and_one_clone_per_use() {
        let clones = Arc::new(AtomicUsize::new(0));
        let inner = Counted(clones.clone());
        let mut spare = Spare::new();
        let handles: Vec<_> = (0..100).map(|_| spare.handle(&inner)).collect();
        assert_eq!(clones.load(Ordering::SeqCst), 1, "the copy, made once");
        assert!(handles[7].try_clone().is_some());
        assert_eq!(clones.load(Ordering::SeqCst), 2);
        // While another holder is cloning, the lock is not waited for.
        let held = handles[0].0.try_lock().unwrap();
        assert!(handles[1].try_clone().is_none());
        drop(held);
        assert!(handles[1].try_clone().is_some());
    }
}
