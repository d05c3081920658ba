use crate::future::ResponseFuture;
use crate::policy::RetryPolicy;
use crate::replay::Replay;
use damper_core::metrics::{
    LABEL_NAME, RETRY_ATTEMPTS_TOTAL, RETRY_BUDGET_EXHAUSTED_TOTAL, RETRY_RETRIES_TOTAL,
};
use damper_core::rng::AtomicRng;
use damper_core::spare::Spare;
use damper_core::{Budget, Classify, Deadline};
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tower_service::Service;

/// Metric handles, registered once when the layer is built.
#[derive(Clone)]
pub(crate) struct Metrics {
    pub(crate) attempts: metrics::Counter,
    pub(crate) retries: metrics::Counter,
    pub(crate) exhausted: metrics::Counter,
}

impl Metrics {
    pub(crate) fn new(name: &str) -> Self {
        let name = name.to_owned();
        Self {
            attempts: metrics::counter!(RETRY_ATTEMPTS_TOTAL, LABEL_NAME => name.clone()),
            retries: metrics::counter!(RETRY_RETRIES_TOTAL, LABEL_NAME => name.clone()),
            exhausted: metrics::counter!(RETRY_BUDGET_EXHAUSTED_TOTAL, LABEL_NAME => name),
        }
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Everything a request's future needs besides the inner service.
#[derive(Debug, Clone)]
pub(crate) struct Shared<B, C, P> {
    pub(crate) budget: B,
    pub(crate) classifier: C,
    pub(crate) replay: P,
    pub(crate) policy: RetryPolicy,
    pub(crate) rng: Arc<AtomicRng>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) metrics: Metrics,
    /// Whether a deposit must be dated with a fresh clock reading; see `deposit_reads_clock`.
    pub(crate) deposit_clock: bool,
    /// When the layer was built: the date given to deposits that do not read it.
    pub(crate) built_at: Instant,
}

/// Whether `budget` may read the `now` passed to [`Budget::deposit`].
///
/// Reading the clock costs as much as the rest of the success path (tens of nanoseconds on a
/// virtual machine), and the budgets damper ships ignore `now` on deposit (a decaying
/// [`RetryBudget`](crate::RetryBudget) applies its decay on withdrawals). Those are recognised
/// here and credited without a clock reading; any other budget, including one behind
/// `Arc<dyn Budget>`, gets a fresh `now` every time.
pub(crate) fn deposit_reads_clock<B: 'static>(budget: &B) -> bool {
    use damper_core::budget::{Empty, TokenBucket, Unlimited};
    let any = budget as &dyn std::any::Any;
    !(any.is::<Arc<crate::RetryBudget>>()
        || any.is::<Unlimited>()
        || any.is::<Empty>()
        || any.is::<Arc<TokenBucket>>())
}

/// Retries failed requests under a budget, a deadline and an attempt limit.
///
/// Built by [`RetryLayer`](crate::RetryLayer); see the [crate docs](crate) for the rules.
///
/// # Clone
/// Each clone gets its own copy of the configuration in a new allocation; the budget and the
/// random source stay shared. Per request, the response future then bumps a reference count
/// that only this clone touches, so clones serving requests on different threads share no
/// written cache line except the budget itself.
///
/// # Cancel safety
/// Dropping the response future drops the attempt in flight, or the backoff timer, the copy of
/// the request and the cloned inner service; nothing is left running. A token withdrawn for a
/// retry that is then cancelled during its backoff is not refunded: it counts as an extra
/// attempt in the budget's bound, and the budget stays consistent.
///
/// A request that may be retried carries a reference to a spare copy of the inner service that
/// this clone keeps (made on first use); the inner service is cloned from it only when a retry
/// is actually sent. So the common path clones nothing and bumps no reference count shared
/// with other clones' threads.
pub struct Retry<S, B, C, P> {
    inner: S,
    shared: Arc<Shared<B, C, P>>,
    /// The copy of the inner service that retries are cloned from.
    spare: Spare<S>,
}

impl<S, B, C, P> Retry<S, B, C, P> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared<B, C, P>>) -> Self {
        Self {
            inner,
            shared,
            spare: Spare::new(),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The retry rules in force.
    pub fn policy(&self) -> &RetryPolicy {
        &self.shared.policy
    }
}

impl<S: Clone, B: Clone, C: Clone, P: Clone> Clone for Retry<S, B, C, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::new((*self.shared).clone()),
            spare: Spare::new(),
        }
    }
}

impl<S: fmt::Debug, B: fmt::Debug, C: fmt::Debug, P: fmt::Debug> fmt::Debug for Retry<S, B, C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S, Req, B, C, P> Service<Req> for Retry<S, B, C, P>
where
    S: Service<Req> + Clone,
    B: Budget,
    C: Classify<S::Response, S::Error>,
    P: Replay<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, Req, B, C, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        let shared = &self.shared;
        let mut deadline = shared.replay.deadline(&req);
        if let Some(timeout) = shared.timeout {
            let own = Deadline::after(Instant::now(), timeout);
            if deadline.is_none_or(|d| own < d) {
                shared.replay.set_deadline(&mut req, own);
                deadline = Some(own);
            }
        }
        // Copy the request (and the service) only when a retry is possible at all.
        let copy = if shared.policy.has_attempts_left(1) {
            shared.replay.replay(&req)
        } else {
            None
        };
        let service = copy.as_ref().map(|_| self.spare.handle(&self.inner));
        shared.metrics.attempts.increment(1);
        let fut = self.inner.call(req);
        ResponseFuture::new(fut, service, copy, deadline, self.shared.clone())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use damper_core::budget::{TokenBucket, Unlimited};

    #[test]
    fn only_budgets_known_to_ignore_the_date_skip_the_clock() {
        let plain = crate::RetryBudget::builder().no_decay().build().unwrap();
        assert!(!deposit_reads_clock(&plain));
        // A decaying budget applies its decay on withdrawals, never on deposits.
        let decaying = crate::RetryBudget::builder()
            .ttl(Duration::from_secs(1))
            .build()
            .unwrap();
        assert!(!deposit_reads_clock(&decaying));
        let dynamic: Arc<dyn Budget> = plain;
        assert!(deposit_reads_clock(&dynamic));
        assert!(!deposit_reads_clock(&Unlimited::new()));
        let bucket = Arc::new(TokenBucket::new(0.1, 10.0, 0.0).unwrap());
        assert!(!deposit_reads_clock(&bucket));
    }
}
