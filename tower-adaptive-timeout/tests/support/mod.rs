//! Shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use damper_core::deadline::{Deadline, HasDeadline};
use std::time::Duration;
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready, assert_ready_ok, task};
use tower_adaptive_timeout::{BoxError, DeadlineHeaders};
use tower_layer::Layer;
use tower_service::Service;
use tower_test::mock::{self, Mock};

/// A request that carries a deadline and a `grpc-timeout` header like an `http::Request` would,
/// without the `http` feature.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Req {
    pub deadline: Option<Deadline>,
    /// The incoming `grpc-timeout` value.
    pub incoming: Option<Vec<u8>>,
    /// The `grpc-timeout` value written for the next hop.
    pub outgoing: Option<String>,
}

impl Req {
    pub fn with_deadline(deadline: Deadline) -> Self {
        Self {
            deadline: Some(deadline),
            ..Self::default()
        }
    }

    pub fn with_incoming(value: &str) -> Self {
        Self {
            incoming: Some(value.as_bytes().to_vec()),
            ..Self::default()
        }
    }
}

impl HasDeadline for Req {
    fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }

    fn set_deadline(&mut self, deadline: Deadline) -> bool {
        self.deadline = Some(deadline);
        true
    }
}

impl DeadlineHeaders for Req {
    fn grpc_timeout(&self) -> Option<&[u8]> {
        self.incoming.as_deref()
    }

    fn set_grpc_timeout(&mut self, remaining: Duration) {
        self.outgoing = Some(damper_core::deadline::grpc_timeout::encode(remaining));
    }
}

pub const MS: Duration = Duration::from_millis(1);

/// `a` is within 3 % of `b` (histogram buckets are within 1.6 % of their values).
pub fn close(a: Duration, b: Duration) -> bool {
    a.abs_diff(b).as_secs_f64() <= b.as_secs_f64() * 0.03
}

/// A request whose deadline has passed fails with `DeadlineExceeded` on the first poll and
/// never reaches the inner service.
pub fn expired_request_fails_fast<L>(layer: L)
where
    L: Layer<Mock<Req, u32>>,
    L::Service: Service<Req, Response = u32, Error = BoxError>,
{
    let (mut svc, mut handle) = mock::spawn_layer::<Req, u32, _>(layer);
    let req = Req::with_deadline(Deadline::at(Instant::now()));
    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call(req));
    let err = assert_ready!(fut.poll()).unwrap_err();
    assert!(err.is::<tower_adaptive_timeout::error::DeadlineExceeded>());
    assert_pending!(handle.poll_request());
}
