//! Errors: the overload rejection (re-exported from `damper-core`) and configuration errors.
//!
//! The limiter originates two failures, both as a [`BoxError`](damper_core::BoxError):
//! [`Overloaded`] when a request is shed (at the limit, queue full, or queued too long), and
//! [`DeadlineExceeded`] when a queued request's deadline passed before it could start. Both are
//! local rejections in the sense of [`damper_core::error::is_local_rejection`] or plainly not
//! retryable, so damper's retry layer does not retry them.

use std::fmt;

pub use damper_core::error::{DeadlineExceeded, Overloaded};

/// A limiter or limit algorithm was configured with an invalid value.
///
/// Names the offending field, so `Aimd::builder().backoff(2.0).build()` fails with
/// `invalid backoff: must be in [0.5, 1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    reason: &'static str,
}

impl ConfigError {
    pub(crate) const fn new(field: &'static str, reason: &'static str) -> Self {
        Self { field, reason }
    }

    /// The name of the invalid field (as its builder method is named).
    pub const fn field(&self) -> &'static str {
        self.field
    }

    /// Why the value was rejected.
    pub const fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}
