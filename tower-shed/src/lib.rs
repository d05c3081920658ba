//! Work in progress.
#![forbid(unsafe_code)]
pub mod error;
pub mod limit;
