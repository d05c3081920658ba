use super::{Limit, Sample};
use crate::error::ConfigError;
use tokio::time::Instant;

/// A limit that never changes: a plain concurrency cap, with the limiter's lock-free admission,
/// queueing and partitions.
///
/// ```
/// use tower_shed::limit::{Fixed, Limit};
/// assert_eq!(Fixed::new(64).unwrap().limit(), 64);
/// assert!(Fixed::new(0).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixed {
    limit: usize,
}

impl Fixed {
    /// A fixed limit of `limit` concurrent requests (1 to `u32::MAX`).
    pub fn new(limit: usize) -> Result<Self, ConfigError> {
        if limit == 0 || limit > u32::MAX as usize {
            return Err(ConfigError::new("limit", "must be in [1, u32::MAX]"));
        }
        Ok(Self { limit })
    }
}

impl Limit for Fixed {
    fn limit(&self) -> usize {
        self.limit
    }

    fn update(&mut self, _sample: Sample, _now: Instant) -> usize {
        self.limit
    }
}
