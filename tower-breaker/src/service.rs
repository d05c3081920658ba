use crate::config::Mode;
use crate::fallback::Fallback;
use crate::future::{Guard, Local, ResponseFuture};
use crate::handle::BreakerHandle;
use crate::policy::Admission;
use crate::shared::Shared;
use damper_core::classify::{Classify, ResultClassifier};
use damper_core::error::{BoxError, CircuitOpen};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::sync::futures::OwnedNotified;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

/// A circuit breaker around `S`. Built by [`BreakerLayer`](crate::BreakerLayer); see the
/// [crate docs](crate) for an example.
///
/// Clones share one breaker (its state, window and handle); each clone keeps its own readiness
/// reservation.
pub struct Breaker<S, C = ResultClassifier, H = ()> {
    inner: S,
    local: Arc<Local<C>>,
    fallback: H,
    gate: bool,
    /// Gate mode: the permit reserved by `poll_ready` for the next `call`.
    reserved: Option<Guard<C>>,
    /// Gate mode: wakes the task when the next probe is due. Allocated once, then reset.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Gate mode: wakes the task on any transition or freed probe slot.
    notified: Option<Pin<Box<OwnedNotified>>>,
    clock: ClockSampler,
}

/// Decides which calls read the clock.
///
/// # Clock sampling
/// Reading the clock costs more than everything else the breaker does for a successful call
/// (about 20–30 ns, more in some VMs), and a success never trips the breaker, so successes do
/// not read it: they are counted in the sub-window of the latest time the breaker observed.
/// Each clone reads the clock on one call in `k` and tells the window; `k` doubles (up to 64)
/// while `k` calls take less than a thousandth of a sub-window (1 ms by default) and halves
/// (down to 1) otherwise. So a success is attributed to a time at most `k` of its clone's calls
/// earlier, which is exact at low rates (every call reads the clock) and within about a
/// millisecond at high rates. Failures, slow-call timing and probes always read the clock.
#[derive(Debug, Clone)]
pub(crate) struct ClockSampler {
    countdown: u32,
    k: u32,
    last: Option<Instant>,
}

impl ClockSampler {
    const MAX_K: u32 = 64;

    pub(crate) const fn new() -> Self {
        Self {
            countdown: 0,
            k: 1,
            last: None,
        }
    }

    /// Counts a call; reads the clock on every `k`-th and returns the time read.
    #[inline]
    fn tick(&mut self, span: impl FnOnce() -> std::time::Duration) -> Option<Instant> {
        if self.countdown > 1 {
            self.countdown -= 1;
            return None;
        }
        let now = Instant::now();
        let fast = self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < span());
        self.k = if fast {
            (self.k * 2).min(Self::MAX_K)
        } else {
            (self.k / 2).max(1)
        };
        self.countdown = self.k;
        self.last = Some(now);
        Some(now)
    }
}

impl<S, C, H> Breaker<S, C, H> {
    pub(crate) fn from_parts(inner: S, shared: Arc<Shared>, classifier: C, fallback: H) -> Self {
        Self {
            inner,
            gate: shared.mode == Mode::Gate,
            local: Arc::new(Local { shared, classifier }),
            fallback,
            reserved: None,
            sleep: None,
            notified: None,
            clock: ClockSampler::new(),
        }
    }

    /// A handle on this breaker: state, transitions, forcing, subscriptions.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle::from_shared(self.local.shared.clone())
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the breaker, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Gate mode: reserves a permit, or registers for a wake-up when one may be available.
    fn poll_gate(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let shared = &self.local.shared;
        if let Some(permit) = shared.policy.try_admit_closed() {
            self.reserved = Some(Guard::new(self.local.clone(), permit));
            return Poll::Ready(());
        }
        loop {
            // Arm the notification before looking at the state, so a transition in between
            // is not missed.
            let notified = self
                .notified
                .get_or_insert_with(|| Box::pin(shared.notify.clone().notified_owned()));
            notified.as_mut().enable();
            match shared.policy.admit(Instant::now()) {
                (Admission::Admitted(permit), transition) => {
                    if let Some(t) = transition {
                        shared.publish(t);
                    }
                    self.reserved = Some(Guard::new(self.local.clone(), permit));
                    return Poll::Ready(());
                }
                (Admission::Rejected(rejection), _) => {
                    if notified.as_mut().poll(cx).is_ready() {
                        self.notified = None;
                        continue;
                    }
                    if let Some(at) = rejection.retry_at {
                        let sleep = self
                            .sleep
                            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                        if sleep.deadline() != at {
                            sleep.as_mut().reset(at);
                        }
                        if sleep.as_mut().poll(cx).is_ready() {
                            continue;
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<S: Clone, C: Clone, H: Clone> Clone for Breaker<S, C, H> {
    fn clone(&self) -> Self {
        Self::from_parts(
            self.inner.clone(),
            self.local.shared.clone(),
            self.local.classifier.clone(),
            self.fallback.clone(),
        )
    }
}

impl<S: fmt::Debug, C, H> fmt::Debug for Breaker<S, C, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("inner", &self.inner)
            .field("shared", &self.local.shared)
            .field("reserved", &self.reserved)
            .finish_non_exhaustive()
    }
}

impl<S, C, H, Req> Service<Req> for Breaker<S, C, H>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error>,
    H: Fallback<Req, S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, H::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.gate && self.reserved.is_none() {
            ready!(self.poll_gate(cx));
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let reserved = self.reserved.take();
        dispatch(
            &self.local,
            reserved,
            &mut self.clock,
            &mut self.inner,
            &mut self.fallback,
            req,
        )
    }
}

/// Admits (or uses the reserved permit), samples the clock, and calls `inner` — or refuses.
pub(crate) fn dispatch<S, C, H, Req>(
    local: &Arc<Local<C>>,
    reserved: Option<Guard<C>>,
    clock: &mut ClockSampler,
    inner: &mut S,
    fallback: &mut H,
    req: Req,
) -> ResponseFuture<S::Future, H::Future, C>
where
    S: Service<Req>,
    H: Fallback<Req, S::Response>,
{
    let shared = &local.shared;
    let guard = match reserved {
        Some(guard) => guard,
        None => {
            let permit = match shared.policy.try_admit_closed() {
                Some(permit) => permit,
                None => match shared.policy.admit(Instant::now()) {
                    (Admission::Admitted(permit), transition) => {
                        if let Some(t) = transition {
                            shared.publish(t);
                        }
                        permit
                    }
                    (Admission::Rejected(rejection), _) => {
                        shared.rejected();
                        let open = CircuitOpen::new(rejection.next_probe_in);
                        return match fallback.fallback(req, open) {
                            Some(fut) => ResponseFuture::fallback(fut),
                            None => ResponseFuture::rejected(open),
                        };
                    }
                },
            };
            Guard::new(local.clone(), permit)
        }
    };
    let policy = &shared.policy;
    if let Some(now) = clock.tick(|| policy.sample_span()) {
        policy.observe(now);
    }
    ResponseFuture::called(inner.call(req), guard.start())
}
