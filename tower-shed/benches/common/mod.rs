//! Services shared by tower-shed's benches.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::task::{Context, Poll};
use tower::Service;

/// Always ready, answers at once.
#[derive(Clone, Copy)]
pub(crate) struct Ok1;

impl Service<u64> for Ok1 {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u64) -> Self::Future {
        ready(Ok(req))
    }
}

/// A control with no shared state: ~40 ns of arithmetic per call. Its two-thread scaling
/// shows how much of a second core the machine offers during the run.
#[derive(Clone, Copy)]
pub(crate) struct Work;

impl Service<u64> for Work {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u64) -> Self::Future {
        let mut x = req;
        for _ in 0..40 {
            x = black_box(x.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(7));
        }
        ready(Ok(x))
    }
}
