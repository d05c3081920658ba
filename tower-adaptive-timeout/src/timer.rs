//! A timer that is only created when it is first needed.
//!
//! Creating a tokio `Sleep` looks up the runtime handle (an `Arc` clone) even if the timer never
//! fires. A response that is ready on its first poll never needs one, so the deadline layer's
//! future keeps the instant and builds the `Sleep` on the first poll that finds the inner future
//! pending. The timer is inline in the future: nothing is boxed.

use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::time::{Instant, Sleep, sleep_until};

pin_project! {
    #[project = TimerProj]
    pub(crate) enum Timer {
        /// No deadline: never fires.
        Off,
        /// Fires at `at`; not armed yet.
        Idle { at: Instant },
        /// Armed.
        Armed { #[pin] sleep: Sleep },
    }
}

impl Timer {
    /// Polls the timer, arming it first if needed. `Ready` once `at` has passed.
    #[inline]
    pub(crate) fn poll_fire(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let TimerProj::Idle { at } = self.as_mut().project() {
            let at = *at;
            self.set(Timer::Armed {
                sleep: sleep_until(at),
            });
        }
        match self.project() {
            TimerProj::Armed { sleep } => sleep.poll(cx),
            _ => Poll::Pending,
        }
    }
}
