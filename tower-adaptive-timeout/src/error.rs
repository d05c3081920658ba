//! Errors of this crate.
//!
//! The layers return [`BoxError`](damper_core::BoxError)s, so the errors they originate are found
//! with `err.is::<Elapsed>()` / `err.is::<DeadlineExceeded>()` however the stack is ordered:
//!
//! - [`Elapsed`]: one attempt ran past its adaptive timeout. The logical request may still have
//!   time left, so a retry layer above may try again.
//! - [`DeadlineExceeded`]: the logical request's deadline passed (or had already passed when the
//!   request arrived). Nothing more can usefully be tried.
//!
//! [`ConfigError`] is returned by the builders when a knob is out of range.

use std::fmt;

pub use damper_core::error::{DeadlineExceeded, Elapsed};

/// A configuration value was rejected when a layer was built.
///
/// [`ConfigError::field`] names the offending knob, exactly as spelled in
/// [`TimeoutConfig`](crate::TimeoutConfig) and the builders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    reason: &'static str,
}

impl ConfigError {
    pub(crate) const fn new(field: &'static str, reason: &'static str) -> Self {
        Self { field, reason }
    }

    /// The name of the rejected field.
    pub const fn field(&self) -> &'static str {
        self.field
    }

    /// Why it was rejected.
    pub const fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid timeout config `{}`: {}",
            self.field, self.reason
        )
    }
}

impl std::error::Error for ConfigError {}
