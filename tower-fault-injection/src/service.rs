use crate::error::FaultKind;
use crate::future::ResponseFuture;
use crate::handle::{FaultHandle, SpecCell};
use crate::inject::{ErrorInjector, Inject};
use crate::policy::{Action, FaultPolicy};
use damper_core::BoxError;
use damper_core::metrics::{FAULT_INJECTED_TOTAL, LABEL_NAME, LABEL_REASON};
use damper_core::rng::AtomicRng;
use metrics::Counter;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use tokio::time::Instant;
use tower_service::Service;

#[derive(Debug)]
struct Counters {
    latency: Counter,
    error: Counter,
    hang: Counter,
    capacity: Counter,
}

impl Counters {
    fn register(name: &str) -> Self {
        let c = |reason: &'static str| metrics::counter!(FAULT_INJECTED_TOTAL, LABEL_NAME => name.to_owned(), LABEL_REASON => reason);
        Self {
            latency: c("latency"),
            error: c("error"),
            hang: c("hang"),
            capacity: c("capacity"),
        }
    }
}

/// State shared by a layer, every service it builds and their clones.
#[derive(Debug)]
pub(crate) struct Shared {
    policy: FaultPolicy,
    scheduled: bool,
    cell: SpecCell,
    rng: AtomicRng,
    in_flight: AtomicU32,
    counters: Counters,
}

impl Shared {
    pub(crate) fn new(policy: FaultPolicy, cell: SpecCell, seed: u64, name: &str) -> Self {
        Self {
            scheduled: !policy.schedule().is_empty(),
            policy,
            cell,
            rng: AtomicRng::new(seed),
            in_flight: AtomicU32::new(0),
            counters: Counters::register(name),
        }
    }

    pub(crate) fn cell(&self) -> &SpecCell {
        &self.cell
    }
}

/// Holds one slot of a capacity cut until the response completes or is dropped.
#[derive(Debug)]
pub(crate) struct InFlightGuard(Arc<Shared>);

impl InFlightGuard {
    fn try_acquire(shared: &Arc<Shared>, cap: u32) -> Option<Self> {
        shared
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(shared.clone()))
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Injects faults into the service it wraps. Built by [`FaultLayer`](crate::FaultLayer); see the
/// crate docs for an example.
///
/// Clones share the layer's schedule, handle, random source and capacity count.
#[derive(Debug, Clone)]
pub struct Fault<S, I = ErrorInjector> {
    inner: S,
    shared: Arc<Shared>,
    injector: I,
}

impl<S, I> Fault<S, I> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>, injector: I) -> Self {
        Self {
            inner,
            shared,
            injector,
        }
    }

    /// The handle that switches this service's faults (shared with its layer).
    pub fn handle(&self) -> FaultHandle {
        FaultHandle::new(self.shared.clone())
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, I, Req> Service<Req> for Fault<S, I>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    I: Inject<S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &self.shared;
        let forced_set = shared.cell.is_set();
        // Disabled: one relaxed load and a branch, no clock read, no allocation.
        if !shared.scheduled && !forced_set {
            return ResponseFuture::passthrough(self.inner.call(req));
        }
        let forced = if forced_set { shared.cell.load() } else { None };
        let Some(spec) = shared.policy.spec_at(Instant::now(), forced) else {
            return ResponseFuture::passthrough(self.inner.call(req));
        };
        let decision = FaultPolicy::decide(&spec, &shared.rng);
        let guard = match decision.capacity {
            Some(cap) => match InFlightGuard::try_acquire(shared, cap) {
                Some(g) => Some(g),
                None => {
                    shared.counters.capacity.increment(1);
                    return ResponseFuture::injected(
                        self.injector.inject(FaultKind::Capacity),
                        None,
                    );
                }
            },
            None => None,
        };
        if decision.delay.is_some() {
            shared.counters.latency.increment(1);
        }
        match decision.action {
            Action::Pass => ResponseFuture::inner(self.inner.call(req), decision.delay, guard),
            Action::Error => {
                shared.counters.error.increment(1);
                ResponseFuture::injected(self.injector.inject(FaultKind::Error), decision.delay)
            }
            Action::Hang => {
                shared.counters.hang.increment(1);
                ResponseFuture::hang()
            }
        }
    }
}
