//! Errors of the hedge layer.
//!
//! A hedge originates no failures of its own: a hedge it cannot afford, cannot fit before the
//! deadline, or cannot send because the inner service is busy is simply not sent, and the
//! request carries on with the attempts already running. So the service's error type is the
//! inner service's, and the only error here is a rejected configuration.

use std::fmt;

/// A hedge configuration was rejected when the layer was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    reason: &'static str,
}

impl ConfigError {
    pub(crate) const fn new(field: &'static str, reason: &'static str) -> Self {
        Self { field, reason }
    }

    /// The name of the offending builder knob, e.g. `"max_extra_load"`.
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
        write!(f, "invalid hedge config `{}`: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}
