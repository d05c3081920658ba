//! The [`ResponseFuture`] of [`Hedge`](crate::Hedge).

use crate::eligible::Eligible;
use crate::policy::Fire;
use crate::service::Shared;
use damper_core::spare::SpareHandle;
use damper_core::{Classify, Deadline, FailureKind};
use pin_project_lite::pin_project;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

/// What a request needs to send its hedges: a clone of the inner service (polled for readiness
/// only when a hedge is due), the spare copy of the request, and the schedule.
pub(crate) struct Armed<S, Req> {
    /// The service clone's spare copy, that `svc` is cloned from when a hedge is due.
    pub(crate) source: SpareHandle<S>,
    pub(crate) svc: Option<S>,
    pub(crate) spare: Req,
    pub(crate) at: Instant,
    pub(crate) delay: Duration,
    /// How long after a denied (or not ready) hedge to ask again, growing 1.25× with each denial;
    /// `None` if denied hedges are not asked for again.
    pub(crate) recheck: Option<Duration>,
    pub(crate) left: u32,
    pub(crate) deadline: Option<Deadline>,
}

pin_project! {
    /// The response future of [`Hedge`](crate::Hedge): the first attempt, then up to
    /// `max_hedges` hedges, racing; the first healthy answer wins and the rest are dropped.
    ///
    /// Holds at most one timer, created only if the first attempt is still pending when first
    /// polled, and reset (not re-allocated) between hedges. The first attempt is held inline;
    /// hedges are boxed when sent, so a request that is never hedged carries (and moves through
    /// the layers above) the space of one attempt, not two.
    ///
    /// # Cancel safety
    /// Dropping it drops every attempt still running; nothing is recorded for them.
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct ResponseFuture<S, Req, E, C>
    where
        S: Service<Req>,
    {
        #[pin]
        primary: Option<S::Future>,
        // The first hedge, boxed when sent: only the few hedged requests pay for its space,
        // and every other request's future (and every layer above that holds it) stays the
        // size of one attempt.
        hedge: Option<Pin<Box<S::Future>>>,
        #[pin]
        sleep: Option<Sleep>,
        // Hedges beyond the first (only with `max_hedges` > 1), boxed when sent.
        more: Vec<(Pin<Box<S::Future>>, Instant)>,
        primary_start: Instant,
        hedge_start: Instant,
        armed: Option<Armed<S, Req>>,
        failed: Option<Result<S::Response, S::Error>>,
        shared: Arc<Shared<E, C>>,
    }
}

impl<S, Req, E, C> fmt::Debug for ResponseFuture<S, Req, E, C>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("primary_running", &self.primary.is_some())
            .field(
                "hedges_running",
                &(self.hedge.is_some() as usize + self.more.len()),
            )
            .field("armed", &self.armed.is_some())
            .finish_non_exhaustive()
    }
}

impl<S, Req, E, C> ResponseFuture<S, Req, E, C>
where
    S: Service<Req>,
{
    pub(crate) fn new(
        primary: S::Future,
        start: Instant,
        armed: Option<Armed<S, Req>>,
        shared: Arc<Shared<E, C>>,
    ) -> Self {
        Self {
            primary: Some(primary),
            hedge: None,
            sleep: None,
            more: Vec::new(),
            primary_start: start,
            hedge_start: start,
            armed,
            failed: None,
            shared,
        }
    }
}

impl<S, Req, E, C> Future for ResponseFuture<S, Req, E, C>
where
    S: Service<Req> + Clone,
    E: Eligible<Req>,
    C: Classify<S::Response, S::Error>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let policy = &*this.shared.policy;
        loop {
            // 1. The attempts, first attempt first.
            let mut done = None;
            if let Some(f) = this.primary.as_mut().as_pin_mut()
                && let Poll::Ready(r) = f.poll(cx)
            {
                this.primary.set(None);
                done = Some((r, *this.primary_start, true));
            }
            if done.is_none()
                && let Some(f) = this.hedge.as_mut()
                && let Poll::Ready(r) = f.as_mut().poll(cx)
            {
                *this.hedge = None;
                done = Some((r, *this.hedge_start, false));
            }
            if done.is_none() {
                for i in 0..this.more.len() {
                    if let Poll::Ready(r) = this.more[i].0.as_mut().poll(cx) {
                        let (_, start) = this.more.swap_remove(i);
                        done = Some((r, start, false));
                        break;
                    }
                }
            }

            if let Some((result, start, first)) = done {
                let now = Instant::now();
                let outcome = this.shared.classify.classify(&result);
                let latency = now.saturating_duration_since(start);
                if outcome.is_healthy() {
                    policy.record(latency, now);
                    // A superseded attempt that ran longer than the winner is a censored
                    // sample of the tail: record its elapsed time. A hedge superseded sooner
                    // says nothing (its elapsed time would drag the quantile down).
                    let censored = |started: Instant| {
                        let elapsed = now.saturating_duration_since(started);
                        if elapsed >= latency {
                            policy.record(elapsed, now);
                        }
                    };
                    if this.primary.is_some() {
                        censored(*this.primary_start);
                    }
                    if this.hedge.is_some() {
                        censored(*this.hedge_start);
                    }
                    for (_, started) in this.more.iter() {
                        censored(*started);
                    }
                    // Losers are dropped at once, before the answer is handed back.
                    this.primary.set(None);
                    *this.hedge = None;
                    this.more.clear();
                    this.sleep.set(None);
                    *this.armed = None;
                    if !first {
                        policy.on_hedge_won();
                    }
                    return Poll::Ready(result);
                }
                // Timeouts are censored samples too; other failures are usually fast and
                // would drag the quantile down, so they are not recorded.
                if outcome
                    .failure()
                    .is_some_and(|f| f.kind == FailureKind::Timeout)
                {
                    policy.record(latency, now);
                }
                if this.failed.is_none() {
                    *this.failed = Some(result);
                }
                let running =
                    this.primary.is_some() || this.hedge.is_some() || !this.more.is_empty();
                if !running {
                    // Every attempt failed: no hedge is sent after that (a hedge is not a
                    // retry). The first failure is the answer.
                    this.sleep.set(None);
                    *this.armed = None;
                    return Poll::Ready(this.failed.take().expect("a failure was stored"));
                }
                continue;
            }

            // 2. The hedge timer, created only once the first attempt has had to wait.
            let Some(armed) = this.armed.as_mut() else {
                return Poll::Pending;
            };
            if this.sleep.is_none() {
                this.sleep.set(Some(tokio::time::sleep_until(armed.at)));
            }
            let Some(sleep) = this.sleep.as_mut().as_pin_mut() else {
                return Poll::Pending;
            };
            if sleep.poll(cx).is_pending() {
                return Poll::Pending;
            }

            // 3. The timer fired: send a hedge if the policy and the inner service agree.
            let now = Instant::now();
            let (source, svc) = (&armed.source, &mut armed.svc);
            let decision = policy.on_fire(now, armed.deadline, || {
                if svc.is_none() {
                    // `None` only while another request's hedge is cloning it: treated as not
                    // ready, and asked again later.
                    *svc = source.try_clone();
                }
                svc.as_mut()
                    .is_some_and(|s| matches!(s.poll_ready(cx), Poll::Ready(Ok(()))))
            });
            let next = match decision {
                Fire::Send => {
                    // The next hedge, if any is left, is one delay later.
                    let delay = armed.delay;
                    armed.left -= 1;
                    let copy = if armed.left > 0 {
                        this.shared.eligible.hedge_copy(&armed.spare)
                    } else {
                        None
                    };
                    let fut = match copy {
                        Some(req) => {
                            // Ready was polled on this clone; the next hedge clones afresh.
                            let mut svc = armed.svc.take().expect("polled ready");
                            svc.call(req)
                        }
                        None => {
                            let last = this.armed.take().expect("armed");
                            last.svc.expect("polled ready").call(last.spare)
                        }
                    };
                    if this.hedge.is_none() {
                        *this.hedge = Some(Box::pin(fut));
                        *this.hedge_start = now;
                    } else {
                        this.more.push((Box::pin(fut), now));
                    }
                    Some(delay)
                }
                // No token (or no capacity) now: ask again later, at a growing gap. The
                // attempts still running then are ever more likely the truly slow ones, and
                // the budget refills meanwhile, so a tight budget goes to the worst stragglers
                // instead of to whichever requests crossed the delay first. Every hedge sent
                // still pays a token: the extra-load bound is unchanged.
                Fire::NotReady | Fire::BudgetDenied => match armed.recheck {
                    Some(gap) => {
                        // 1.25×: often enough to catch tokens as they are deposited, with a
                        // handful of wake-ups even for a request that hangs to its deadline.
                        armed.recheck = Some(gap.saturating_add(gap / 4));
                        Some(gap)
                    }
                    None => {
                        // This hedge is given up; the next (with `max_hedges` > 1) is one
                        // delay later.
                        armed.left -= 1;
                        Some(armed.delay)
                    }
                },
                Fire::Deadline => None,
            };
            // The next hedge is due after `next`, unless that is past the clock's range (as in
            // `Hedge::call`, a delay that far away is never reached: nothing more is armed).
            let again = this
                .armed
                .as_mut()
                .zip(next)
                .filter(|(armed, _)| armed.left > 0)
                .and_then(|(armed, gap)| Some((now.checked_add(gap)?, armed)));
            match again {
                Some((at, armed)) => {
                    armed.at = at;
                    if let Some(sleep) = this.sleep.as_mut().as_pin_mut() {
                        sleep.reset(at);
                    }
                }
                _ => {
                    *this.armed = None;
                    this.sleep.set(None);
                }
            }
        }
    }
}
