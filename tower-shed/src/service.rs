use crate::ShedHandle;
use crate::future::ResponseFuture;
use crate::layer::Partitioner;
use crate::limiter::{Limiter, Local, Permit};
use damper_core::BoxError;
use damper_core::deadline::HasDeadline;
use damper_core::error::DeadlineExceeded;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::time::Instant;
use tower_service::Service;

/// Sheds load above an adaptive concurrency limit. Built by [`ShedLayer`](crate::ShedLayer);
/// see the [crate docs](crate) for an example.
///
/// - `poll_ready` only forwards the inner service's readiness: no permit is reserved, so idle
///   connections hold none;
/// - `call` takes a permit without a lock, or rejects at once with
///   [`Overloaded`](crate::error::Overloaded) (or queues, in queue mode);
/// - the permit is returned when the response future completes, fails or is dropped.
///
/// Every service built from one layer shares its limit. The inner service must be `Clone`: a
/// queued request keeps the ready inner service it will be called with.
#[derive(Debug)]
pub struct Shed<S, P = ()> {
    inner: S,
    limiter: Arc<Limiter>,
    local: Arc<Local>,
    partitioner: P,
}

impl<S: Clone, P: Clone> Clone for Shed<S, P> {
    fn clone(&self) -> Self {
        // A clone gets its own `Local`, so permits of different clones do not share a
        // reference count (see `Local`).
        Self::new(
            self.inner.clone(),
            self.limiter.clone(),
            self.partitioner.clone(),
        )
    }
}

impl<S, P> Shed<S, P> {
    pub(crate) fn new(inner: S, limiter: Arc<Limiter>, partitioner: P) -> Self {
        Self {
            inner,
            local: Local::new(limiter.clone()),
            limiter,
            partitioner,
        }
    }

    /// The limit, in-flight count and queue of this service's limiter.
    pub fn handle(&self) -> ShedHandle {
        ShedHandle::new(self.limiter.clone())
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the limiter, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, P, Req> Service<Req> for Shed<S, P>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    P: Partitioner<Req>,
    Req: HasDeadline,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let limiter = &self.limiter;
        let p = if limiter.is_partitioned() {
            limiter.partition_index(self.partitioner.partition(&req))
        } else {
            0
        };
        if !limiter.queue_busy()
            && let Some(ticket) = limiter.try_acquire(p)
        {
            let permit = Permit::new(self.local.clone(), ticket);
            return ResponseFuture::running(self.inner.call(req), permit);
        }
        self.slow_path(p, req)
    }
}

impl<S, P> Shed<S, P> {
    /// At the limit: queue (queue mode) or reject.
    #[cold]
    fn slow_path<Req>(&mut self, p: usize, req: Req) -> ResponseFuture<S, Req>
    where
        S: Service<Req> + Clone,
        Req: HasDeadline,
    {
        if self.limiter.queue.is_some() {
            let now = Instant::now();
            let deadline = req.deadline();
            if deadline.is_some_and(|d| d.is_expired(now)) {
                return ResponseFuture::failed(DeadlineExceeded::new().into());
            }
            if let Ok(rx) = self.limiter.enqueue(p, deadline, now) {
                let max_wait = now + self.limiter.max_queue_wait();
                let (until, deadline_bound) = match deadline {
                    Some(d) if d.instant() < max_wait => (d.instant(), true),
                    _ => (max_wait, false),
                };
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                return ResponseFuture::queued(
                    rx,
                    until,
                    deadline_bound,
                    self.limiter.clone(),
                    p,
                    ready,
                    req,
                );
            }
        }
        ResponseFuture::failed(self.limiter.reject(p).into())
    }
}
