//! The inner future and the call loop shared by tower-adaptive-timeout's benches.

use std::convert::Infallible;
use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};
use tower::Service;

/// Ready on the second poll: a layer over it must arm its timer.
pub(crate) struct PendingOnce<T>(pub(crate) Option<T>, pub(crate) bool);

impl<T: Unpin> Future for PendingOnce<T> {
    type Output = Result<T, Infallible>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if !self.1 {
            self.1 = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Ok(self.0.take().expect("polled after completion")))
    }
}

/// One `poll_ready` + `call` + poll to completion, with a no-op waker.
pub(crate) fn call<S>(svc: &mut S, req: u32) -> S::Response
where
    S: Service<u32>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(r) => r.unwrap(),
        Poll::Pending => unreachable!("ready service"),
    }
    let mut fut = pin!(svc.call(req));
    loop {
        if let Poll::Ready(r) = fut.as_mut().poll(&mut cx) {
            return r.unwrap();
        }
    }
}
