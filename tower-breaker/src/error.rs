//! Errors.
//!
//! A refused call fails with [`CircuitOpen`] (inside a [`BoxError`]), which says when the next
//! probe is due; test for it with `err.is::<CircuitOpen>()`. Retry layers treat it as a local
//! rejection and do not retry it ([`damper_core::error::is_local_rejection`]).

pub use crate::config::ConfigError;
pub use damper_core::error::{BoxError, CircuitOpen};
