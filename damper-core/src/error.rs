//! Errors that damper layers originate.
//!
//! Each is a small, cheap `Debug + Display + Error + Send + Sync` value. Layers that originate
//! failures return them inside a [`BoxError`], so callers match with `err.is::<Overloaded>()`
//! (or [`find`] to look through wrapped sources) however the layers are ordered.
//!
//! Local rejections ([`Overloaded`], [`CircuitOpen`], [`BudgetExhausted`]) mean the request never
//! reached the dependency. Retrying them against the same dependency only adds load, so retry and
//! hedge layers check [`is_local_rejection`] first.

use std::error::Error;
use std::fmt;
use std::time::Duration;

/// A type-erased error, as tower uses.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// The request was rejected locally because a concurrency limit or queue is full.
///
/// Never sent to the dependency. [`Overloaded::retry_after`] may say when capacity is expected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overloaded {
    retry_after: Option<Duration>,
}

impl Overloaded {
    /// A new overload rejection with no hint.
    pub const fn new() -> Self {
        Self { retry_after: None }
    }

    /// A rejection that suggests trying again after `retry_after`.
    pub const fn with_retry_after(retry_after: Duration) -> Self {
        Self {
            retry_after: Some(retry_after),
        }
    }

    /// When the layer expects capacity again, if it knows.
    pub const fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.retry_after {
            Some(d) => write!(f, "service overloaded; retry after {d:?}"),
            None => f.write_str("service overloaded"),
        }
    }
}

impl Error for Overloaded {}

/// The circuit breaker is open: the request was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitOpen {
    next_probe_in: Duration,
}

impl CircuitOpen {
    /// A rejection whose next probe is due in `next_probe_in`.
    pub const fn new(next_probe_in: Duration) -> Self {
        Self { next_probe_in }
    }

    /// Time until the breaker admits its next probe (zero when a probe is already in flight).
    pub const fn next_probe_in(&self) -> Duration {
        self.next_probe_in
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "circuit open; next probe in {:?}", self.next_probe_in)
    }
}

impl Error for CircuitOpen {}

/// One attempt ran longer than its (adaptive) timeout.
///
/// Distinct from [`DeadlineExceeded`]: an attempt timeout may be retried if the deadline allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed {
    timeout: Duration,
}

impl Elapsed {
    /// An attempt that was cut off after `timeout`.
    pub const fn new(timeout: Duration) -> Self {
        Self { timeout }
    }

    /// The timeout that applied to the attempt.
    pub const fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attempt timed out after {:?}", self.timeout)
    }
}

impl Error for Elapsed {}

/// The logical request's deadline passed. Nothing more can usefully be tried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeadlineExceeded(());

impl DeadlineExceeded {
    /// A new deadline-exceeded error.
    pub const fn new() -> Self {
        Self(())
    }
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request deadline exceeded")
    }
}

impl Error for DeadlineExceeded {}

/// An extra attempt (retry or hedge) was wanted but the budget had no tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetExhausted(());

impl BudgetExhausted {
    /// A new budget-exhausted error.
    pub const fn new() -> Self {
        Self(())
    }
}

impl fmt::Display for BudgetExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("retry budget exhausted")
    }
}

impl Error for BudgetExhausted {}

/// Finds an error of type `E` in `err` or its chain of sources.
pub fn find<'a, E: Error + 'static>(err: &'a (dyn Error + 'static)) -> Option<&'a E> {
    let mut cur: Option<&'a (dyn Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        cur = e.source();
    }
    None
}

/// Whether `err` (or any of its sources) is a rejection made locally, before the dependency saw
/// the request: [`Overloaded`], [`CircuitOpen`] or [`BudgetExhausted`].
///
/// Such errors must not be retried against the same dependency.
///
/// ```
/// use damper_core::error::{is_local_rejection, BoxError, CircuitOpen, Elapsed};
/// use std::time::Duration;
///
/// let open: BoxError = Box::new(CircuitOpen::new(Duration::from_secs(1)));
/// assert!(is_local_rejection(&*open));
/// let timeout: BoxError = Box::new(Elapsed::new(Duration::from_millis(100)));
/// assert!(!is_local_rejection(&*timeout));
/// ```
pub fn is_local_rejection(err: &(dyn Error + 'static)) -> bool {
    find::<Overloaded>(err).is_some()
        || find::<CircuitOpen>(err).is_some()
        || find::<BudgetExhausted>(err).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(BoxError);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn local_rejection_is_found_through_sources() {
        let e = Wrapper(Box::new(Overloaded::new()));
        assert!(is_local_rejection(&e));
        let e = Wrapper(Box::new(DeadlineExceeded::new()));
        assert!(!is_local_rejection(&e));
        assert!(is_local_rejection(&BudgetExhausted::new()));
    }

    #[test]
    fn messages_are_short_and_lowercase() {
        assert_eq!(Overloaded::new().to_string(), "service overloaded");
        assert_eq!(
            DeadlineExceeded::new().to_string(),
            "request deadline exceeded"
        );
        assert!(
            CircuitOpen::new(Duration::from_secs(2))
                .to_string()
                .starts_with("circuit open")
        );
    }

    fn assert_send_sync<T: Send + Sync + Error + 'static>() {}

    #[test]
    fn errors_are_send_sync() {
        assert_send_sync::<Overloaded>();
        assert_send_sync::<CircuitOpen>();
        assert_send_sync::<Elapsed>();
        assert_send_sync::<DeadlineExceeded>();
        assert_send_sync::<BudgetExhausted>();
    }
}
