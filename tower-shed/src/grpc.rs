//! Server side over gRPC: overload rejections become `RESOURCE_EXHAUSTED` with pushback.
//!
//! Put [`OverloadedAsStatusLayer`] outside the [`ShedLayer`](crate::ShedLayer) on a tonic
//! server (e.g. with `Server::builder().layer(..)`): a shed request is answered with a
//! trailers-only `RESOURCE_EXHAUSTED` response carrying `grpc-retry-pushback-ms` (the limiter's
//! hint in milliseconds), which gRPC clients and damper's retry layer honour; a queued request
//! whose deadline passed gets `DEADLINE_EXCEEDED`. Other errors pass through.
//!
//! ```
//! use std::time::Duration;
//! use tower_shed::error::Overloaded;
//! use tower_shed::grpc::overloaded_status;
//!
//! let status = overloaded_status(&Overloaded::with_retry_after(Duration::from_millis(250)));
//! assert_eq!(status.code(), tonic::Code::ResourceExhausted);
//! assert_eq!(status.metadata().get("grpc-retry-pushback-ms").unwrap(), "250");
//! ```

use crate::http::{RejectionResponse, Respond, RespondLayer};
use damper_core::BoxError;
use damper_core::error::{DeadlineExceeded, Overloaded};
use damper_core::pushback::{GRPC_RETRY_PUSHBACK_MS, pushback_millis};
use http::Response;
use tonic::Status;
use tonic::metadata::MetadataValue;

/// The `RESOURCE_EXHAUSTED` status for a rejection, with `grpc-retry-pushback-ms` when the
/// rejection has a hint.
pub fn overloaded_status(err: &Overloaded) -> Status {
    let mut status = Status::resource_exhausted("service overloaded");
    if let Some(after) = err.retry_after() {
        let ms = pushback_millis(after);
        status
            .metadata_mut()
            .insert(GRPC_RETRY_PUSHBACK_MS, MetadataValue::from(ms));
    }
    status
}

/// `RESOURCE_EXHAUSTED` with `grpc-retry-pushback-ms` for [`Overloaded`], `DEADLINE_EXCEEDED`
/// for [`DeadlineExceeded`], as trailers-only gRPC responses.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcStatus;

impl RejectionResponse for GrpcStatus {
    fn response<B: Default>(err: &BoxError) -> Option<Response<B>> {
        if let Some(o) = err.downcast_ref::<Overloaded>() {
            Some(overloaded_status(o).into_http())
        } else if err.is::<DeadlineExceeded>() {
            Some(Status::deadline_exceeded("request deadline exceeded").into_http())
        } else {
            None
        }
    }
}

/// Maps the limiter's errors to gRPC statuses. See the [module docs](self).
pub type OverloadedAsStatusLayer = RespondLayer<GrpcStatus>;
/// Maps the limiter's errors to gRPC statuses. See the [module docs](self).
pub type OverloadedAsStatus<S> = Respond<S, GrpcStatus>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tower::{Service, ServiceBuilder, ServiceExt};

    #[tokio::test]
    async fn rejection_becomes_resource_exhausted_with_pushback() {
        let mut svc = ServiceBuilder::new()
            .layer(OverloadedAsStatusLayer::new())
            .service_fn(|fail: bool| async move {
                if fail {
                    Err::<Response<String>, BoxError>(Box::new(Overloaded::with_retry_after(
                        Duration::from_millis(40),
                    )))
                } else {
                    Err(DeadlineExceeded::new().into())
                }
            });
        let res = svc.ready().await.unwrap().call(true).await.unwrap();
        assert_eq!(res.headers()["grpc-status"], "8");
        assert_eq!(res.headers()[GRPC_RETRY_PUSHBACK_MS], "40");
        let status = Status::from_header_map(res.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        let res = svc.ready().await.unwrap().call(false).await.unwrap();
        assert_eq!(res.headers()["grpc-status"], "4");
    }
}
