//! Errors of this crate.
//!
//! The retry layer originates no failure of its own: when it stops retrying, the caller gets the
//! last attempt's result unchanged, so `Retry<S>` keeps `S::Error`. The only error here is the
//! rejection of an invalid configuration, returned when a budget or layer is built.

use std::fmt;

/// A budget or retry configuration was rejected when built.
///
/// [`field`](ConfigError::field) names the offending builder knob, so a configuration read from
/// a file can point at the line to fix.
///
/// ```
/// use tower_retry_budget::RetryBudget;
///
/// let err = RetryBudget::builder().ratio(1.5).build().unwrap_err();
/// assert_eq!(err.field(), "ratio");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    reason: &'static str,
}

impl ConfigError {
    pub(crate) const fn new(field: &'static str, reason: &'static str) -> Self {
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

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid retry config `{}`: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}
