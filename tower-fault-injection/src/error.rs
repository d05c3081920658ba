//! The error an injected fault produces.

use std::fmt;

/// Which injected fault failed the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// An injected error (drawn with the spec's error probability).
    Error,
    /// The request was over the capacity cut.
    Capacity,
}

/// A request failed because a fault was injected, not because the inner service failed.
///
/// Returned (boxed) by [`ErrorInjector`](crate::ErrorInjector), the default injector. Callers
/// see it as a dependency failure: it is not a local rejection, so retry layers treat it as they
/// would a real error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InjectedFault {
    kind: FaultKind,
}

impl InjectedFault {
    /// An injected failure of `kind`.
    pub const fn new(kind: FaultKind) -> Self {
        Self { kind }
    }

    /// Which fault it was.
    pub const fn kind(&self) -> FaultKind {
        self.kind
    }
}

impl fmt::Display for InjectedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            FaultKind::Error => f.write_str("injected fault"),
            FaultKind::Capacity => f.write_str("injected capacity cut: over capacity"),
        }
    }
}

impl std::error::Error for InjectedFault {}
