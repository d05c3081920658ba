use crate::config::Mode;
use crate::fallback::Fallback;
use crate::future::{Guard, Local, ResponseFuture};
use crate::handle::BreakerHandle;
use crate::policy::Admission;
use crate::shared::{Shared, stripe};
use damper_core::classify::{Classify, ResultClassifier};
use damper_core::error::{BoxError, CircuitOpen};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::sync::futures::OwnedNotified;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

/// A circuit breaker around `S`. Built by [`BreakerLayer`](crate::BreakerLayer); see the
/// [crate docs](crate) for an example.
///
/// Clones share one breaker (its state, window and handle); each clone keeps its own readiness
/// reservation.
///
/// # Clock sampling and batched counting
/// Reading the clock costs more than everything else the breaker does for a successful call
/// (20–30 ns, more in some VMs), and so does each atomic read-modify-write. A success can never
/// trip the breaker, so successes neither read the clock nor touch the window when they
/// complete. Instead each clone counts the calls it admits in a plain field and adds them to
/// the window in one batch on every `k`-th call, when it also reads the clock and tells the
/// window the time. `k` doubles (up to 64) while `k` calls take less than a thousandth of a
/// sub-window (1 ms by default) and halves (down to 1) otherwise: at low rates every call is
/// counted at once with its exact time, at high rates a batch spans about a millisecond. A
/// batch is counted in the sub-window of the previous clock read. Failures, timed (slow-call)
/// calls and probes always read the clock and are recorded at once; because a failure can be
/// recorded before the batch holding its admission, the trip check uses
/// `max(calls, failures)` as the number of calls. A clone's unflushed batch is counted when
/// the clone is dropped.
pub struct Breaker<S, C = ResultClassifier, H = ()> {
    inner: S,
    sampler: Sampler<C>,
    fallback: H,
    gate: bool,
    /// Gate mode: the permit reserved (and counted) by `poll_ready` for the next `call`.
    reserved: Option<Guard<C>>,
    /// Gate mode: wakes the task when the next probe is due. Allocated once, then reset.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Gate mode: wakes the task on any transition or freed probe slot.
    notified: Option<Pin<Box<OwnedNotified>>>,
}

/// One clone's view of a breaker: the handle its futures keep, its clock sampling and its
/// batch of admissions not yet counted. See [`Breaker`]'s clock sampling.
pub(crate) struct Sampler<C> {
    pub(crate) local: Arc<Local<C>>,
    countdown: u32,
    k: u32,
    last: Option<Instant>,
    pending: u64,
    /// Calls left before a clone that shares its parent's `Local` gets its own (0 = has it).
    until_own: u32,
}

impl<C> Sampler<C> {
    const MAX_K: u32 = 64;
    /// Calls a clone makes on its parent's `Local` before allocating its own.
    const SHARE_CALLS: u32 = 64;

    pub(crate) fn new(shared: Arc<Shared>, classifier: C) -> Self {
        Self {
            local: Arc::new(Local { shared, classifier }),
            countdown: 0,
            k: 1,
            last: None,
            pending: 0,
            until_own: 0,
        }
    }

    /// A sampler for a clone. It starts on its parent's `Local` (no allocation, so cloning a
    /// breaker per request stays cheap) and takes its own after [`Self::SHARE_CALLS`] calls, so
    /// long-lived clones on different threads do not share a reference count.
    fn fork(&self) -> Self {
        Self {
            local: self.local.clone(),
            countdown: 0,
            k: 1,
            last: None,
            pending: 0,
            until_own: Self::SHARE_CALLS,
        }
    }

    /// Counts one admitted call and, on every `k`-th call, reads the clock, flushes the batch
    /// and tells the window the time.
    #[inline]
    fn admitted(&mut self)
    where
        C: Clone,
    {
        self.pending += 1;
        if self.until_own > 0 {
            self.own_soon();
        }
        self.tick();
    }

    #[cold]
    #[inline(never)]
    fn own_soon(&mut self)
    where
        C: Clone,
    {
        self.until_own -= 1;
        if self.until_own == 0 {
            self.local = Arc::new(Local {
                shared: self.local.shared.clone(),
                classifier: self.local.classifier.clone(),
            });
        }
    }

    #[inline]
    fn tick(&mut self) {
        if self.countdown > 1 {
            self.countdown -= 1;
        } else {
            self.sample();
        }
    }

    /// Flushes the batch, reads the clock and adapts `k`.
    #[cold]
    #[inline(never)]
    fn sample(&mut self) {
        let policy = &self.local.shared.policy;
        policy.count_admitted(std::mem::take(&mut self.pending), stripe());
        let now = Instant::now();
        policy.observe(now);
        let span: Duration = policy.sample_span();
        let fast = self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < span);
        self.k = if fast {
            (self.k * 2).min(Self::MAX_K)
        } else {
            (self.k / 2).max(1)
        };
        self.countdown = self.k;
        self.last = Some(now);
    }
}

impl<C> Drop for Sampler<C> {
    fn drop(&mut self) {
        self.local
            .shared
            .policy
            .count_admitted(self.pending, stripe());
    }
}

impl<C> fmt::Debug for Sampler<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sampler")
            .field("k", &self.k)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl<S, C, H> Breaker<S, C, H> {
    pub(crate) fn from_parts(inner: S, shared: Arc<Shared>, classifier: C, fallback: H) -> Self {
        Self {
            inner,
            gate: shared.mode == Mode::Gate,
            sampler: Sampler::new(shared, classifier),
            fallback,
            reserved: None,
            sleep: None,
            notified: None,
        }
    }

    /// A handle on this breaker: state, transitions, forcing, subscriptions.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle::from_shared(self.sampler.local.shared.clone())
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
    fn poll_gate(&mut self, cx: &mut Context<'_>) -> Poll<()>
    where
        C: Clone,
    {
        if let Some(permit) = self.sampler.local.shared.policy.try_admit_closed() {
            // Reserving is admitting: a reservation dropped unused is taken back like a
            // dropped call.
            self.reserved = Some(Guard::new(self.sampler.local.clone(), permit));
            self.sampler.admitted();
            return Poll::Ready(());
        }
        let local = &self.sampler.local;
        let shared = &local.shared;
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
                    self.reserved = Some(Guard::new(local.clone(), permit));
                    return Poll::Ready(());
                }
                (Admission::Rejected(rejection), _) => {
                    if shared.fails_open() {
                        // Most of the pool is gated: let the call through, counting nothing.
                        self.reserved = Some(Guard::new(local.clone(), shared.policy.bypass()));
                        return Poll::Ready(());
                    }
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

impl<S: Clone, C, H: Clone> Clone for Breaker<S, C, H> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            sampler: self.sampler.fork(),
            fallback: self.fallback.clone(),
            gate: self.gate,
            reserved: None,
            sleep: None,
            notified: None,
        }
    }
}

impl<S: fmt::Debug, C, H> fmt::Debug for Breaker<S, C, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("inner", &self.inner)
            .field("shared", &self.sampler.local.shared)
            .field("reserved", &self.reserved)
            .finish_non_exhaustive()
    }
}

impl<S, C, H, Req> Service<Req> for Breaker<S, C, H>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
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
            reserved,
            &mut self.sampler,
            &mut self.inner,
            &mut self.fallback,
            req,
        )
    }
}

/// Admits (or uses the reserved permit), counts the admission, and calls `inner` — or
/// refuses.
#[inline]
pub(crate) fn dispatch<S, C, H, Req>(
    reserved: Option<Guard<C>>,
    sampler: &mut Sampler<C>,
    inner: &mut S,
    fallback: &mut H,
    req: Req,
) -> ResponseFuture<S::Future, H::Future, C>
where
    S: Service<Req>,
    H: Fallback<Req, S::Response>,
    C: Clone,
{
    let guard = match reserved {
        Some(guard) => guard,
        None => {
            let shared = &sampler.local.shared;
            match shared.policy.try_admit_closed() {
                Some(permit) => {
                    let guard = Guard::new(sampler.local.clone(), permit);
                    sampler.admitted();
                    guard
                }
                // Not closed: the policy decides, and counts a closed admission itself.
                None => match shared.policy.admit(Instant::now()) {
                    (Admission::Admitted(permit), transition) => {
                        if let Some(t) = transition {
                            shared.publish(t);
                        }
                        Guard::new(sampler.local.clone(), permit)
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
            }
        }
    };
    ResponseFuture::called(inner.call(req), guard.start())
}
