//! Response futures.

use crate::policy::Attempt;
use crate::service::Shared;
use damper_core::BoxError;
use damper_core::error::{DeadlineExceeded, Elapsed};
use metrics::Counter;
use pin_project_lite::pin_project;
use std::fmt;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::{Instant, Sleep, sleep_until};

pin_project! {
    /// The response future of [`AdaptiveTimeout`](crate::AdaptiveTimeout).
    ///
    /// Resolves to the inner response, to [`Elapsed`] if the attempt outlived its adaptive
    /// timeout, or to [`DeadlineExceeded`] if the request's deadline passed first (or had
    /// passed before the call).
    ///
    /// # When the timeout starts
    /// For an attempt that is sampled or has a deadline, at the call. For the others (above
    /// `max_samples_per_sec`, most attempts) at the first poll that finds the inner future
    /// pending: the service reads no clock for them at the call, which is most of what a
    /// request costs it. A response future is normally polled as soon as it is returned; one
    /// left unpolled has its timer start late by that gap, and one ready on its first poll
    /// never reads the clock at all.
    ///
    /// # Cancel safety
    /// Dropping it drops the inner future; the policy learns nothing from a dropped attempt (its
    /// latency is unknown).
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct ResponseFuture<F> {
        // `None` if the call never reached the inner service, and once the attempt has failed
        // (it is abandoned: dropped at once). Then the future fails again if polled.
        #[pin]
        inner: Option<F>,
        // tokio's `Sleep` registers with the timer only when first polled (or reset), so
        // creating it at the call costs a handle clone and no clock read.
        #[pin]
        sleep: Option<Sleep>,
        // The attempt's timeout, and whether it is the deadline's remainder.
        timeout: Duration,
        limited: bool,
        // The attempt's start was not read at the call: the sleep is reset to end `timeout`
        // after the first poll that finds `inner` pending.
        unarmed: bool,
        observer: Observer,
    }
}

/// Who hears about the attempt's outcome.
enum Observer {
    /// A sampled attempt, started at `start` in backoff generation `generation`: the policy
    /// learns from it.
    Policy {
        shared: Arc<Shared>,
        start: Instant,
        generation: u64,
    },
    /// Not sampled: only its metric counts it if its timer fires (`Elapsed`, or
    /// `DeadlineExceeded` if the deadline bounds the attempt). No reference count is taken
    /// unless a metrics recorder is installed.
    Metric(Counter),
}

impl<F> ResponseFuture<F> {
    /// An attempt that started at `start`, or, if `start` is `None` (an unsampled attempt
    /// without a deadline, for which the clock was not read), whose timer starts at the first
    /// poll that finds `inner` pending.
    #[inline(always)]
    pub(crate) fn new(
        inner: F,
        start: Option<Instant>,
        attempt: Attempt,
        shared: &Arc<Shared>,
    ) -> Self {
        let (observer, at) = match start {
            Some(start) if attempt.sampled() => (
                Observer::Policy {
                    shared: shared.clone(),
                    start,
                    generation: attempt.generation(),
                },
                start + attempt.timeout(),
            ),
            Some(start) => (
                Observer::Metric(shared.counter_for(&attempt).clone()),
                start + attempt.timeout(),
            ),
            // Any instant will do: the sleep is reset before it is first polled.
            None => (
                Observer::Metric(shared.counter_for(&attempt).clone()),
                shared.policy.origin(),
            ),
        };
        // Nothing to drop if building the sleep unwinds (it does only outside a runtime, and
        // then the observer's reference count leaks): that lets the sleep be built in place,
        // not beside the future and copied in.
        let observer = ManuallyDrop::new(observer);
        Self {
            sleep: Some(sleep_until(at)),
            inner: Some(inner),
            timeout: attempt.timeout(),
            limited: attempt.limited_by_deadline(),
            unarmed: start.is_none(),
            observer: ManuallyDrop::into_inner(observer),
        }
    }

    /// A request whose deadline had passed before the call.
    pub(crate) fn expired() -> Self {
        Self {
            inner: None,
            sleep: None,
            timeout: Duration::ZERO,
            limited: true,
            unarmed: false,
            observer: Observer::Metric(Counter::noop()),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ResponseFuture");
        d.field("timeout", &self.timeout)
            .field("limited_by_deadline", &self.limited)
            .field("failed", &self.inner.is_none());
        if let Observer::Policy { start, .. } = &self.observer {
            d.field("start", start);
        }
        d.finish_non_exhaustive()
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    // Always inlined (so is `new`): a few lines on the hot path, which the compiler otherwise
    // sometimes leaves out of line in a crate with many instantiations. The rare parts are
    // the out-of-line functions below.
    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(Err(failure(*this.limited, *this.timeout)));
        };
        if let Poll::Ready(result) = inner.poll(cx) {
            if let (Ok(_), Observer::Policy { shared, start, .. }) = (&result, &*this.observer) {
                succeeded(shared, *start);
            }
            return Poll::Ready(result.map_err(Into::into));
        }
        if let Some(mut sleep) = this.sleep.as_mut().as_pin_mut() {
            if *this.unarmed {
                *this.unarmed = false;
                // The timeout is at most a day (the configured ceiling): no overflow.
                sleep.as_mut().reset(Instant::now() + *this.timeout);
            }
            ready!(sleep.poll(cx));
        }
        fired(this.observer, *this.limited, *this.timeout);
        // Drop the inner future and the timer now (the attempt is abandoned); polled again,
        // the future fails again.
        this.inner.set(None);
        this.sleep.set(None);
        Poll::Ready(Err(failure(*this.limited, *this.timeout)))
    }
}

/// The error of an attempt whose timer fired (or that never started).
fn failure(limited: bool, timeout: Duration) -> BoxError {
    if limited {
        Box::new(DeadlineExceeded::new())
    } else {
        Box::new(Elapsed::new(timeout))
    }
}

/// A sampled attempt that started at `start` succeeded: the policy learns its latency.
#[cold]
#[inline(never)]
fn succeeded(shared: &Shared, start: Instant) {
    let now = Instant::now();
    shared.on_success(now.saturating_duration_since(start), now);
}

/// The attempt's timer fired: count it, and teach the policy if the attempt was sampled.
#[cold]
#[inline(never)]
fn fired(observer: &Observer, limited: bool, timeout: Duration) {
    match observer {
        Observer::Metric(counter) => counter.increment(1),
        Observer::Policy { shared, .. } if limited => shared.on_deadline_exceeded(),
        // The timer fired at exactly this instant: no need to read the clock.
        Observer::Policy {
            shared,
            start,
            generation,
        } => shared.on_timeout(&Attempt::timed_out(timeout, *generation), *start + timeout),
    }
}
