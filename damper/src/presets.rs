//! Names for the presets' layers and services, so that a struct field or a function signature
//! can hold a built stack without spelling out its nested types.
//!
//! ```
//! use damper::HttpClientService;
//!
//! /// A client of the users API, with the HTTP preset around its transport.
//! struct UsersApi<T> {
//!     http: HttpClientService<T>,
//! }
//!
//! # fn main() -> Result<(), damper::ConfigError> {
//! # use tower::Layer;
//! let stack: damper::HttpClientLayer = damper::ClientStack::http().name("users").build()?;
//! let transport = tower::service_fn(|_: http::Request<String>| async {
//!     Ok::<_, damper::BoxError>(http::Response::new(String::new()))
//! });
//! let api = UsersApi { http: stack.layer(transport) };
//! # let _ = api.http;
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "http")]
use damper_core::classify::HttpClassifier;

/// The layer [`ClientStack::http`](crate::ClientStack::http) builds.
#[cfg(feature = "http")]
pub type HttpClientLayer =
    crate::ClientLayer<HttpClassifier, tower_retry_budget::Idempotent, tower_hedge::Idempotent>;

/// The service [`HttpClientLayer`] builds around a transport `T`.
#[cfg(feature = "http")]
pub type HttpClientService<T> = crate::ClientService<
    T,
    HttpClassifier,
    tower_retry_budget::Idempotent,
    tower_hedge::Idempotent,
>;

/// The layer [`ClientStack::grpc`](crate::ClientStack::grpc) builds.
#[cfg(feature = "grpc")]
pub type GrpcClientLayer = crate::ClientLayer<
    damper_core::classify::GrpcClassifier,
    tower_retry_budget::Idempotent,
    tower_hedge::Idempotent,
>;

/// The service [`GrpcClientLayer`] builds around a transport `T`.
#[cfg(feature = "grpc")]
pub type GrpcClientService<T> = crate::ClientService<
    T,
    damper_core::classify::GrpcClassifier,
    tower_retry_budget::Idempotent,
    tower_hedge::Idempotent,
>;

/// The layer [`ServerStack::http`](crate::ServerStack::http) builds (`P`: the partitioner).
#[cfg(feature = "http")]
pub type HttpServerLayer<P = ()> =
    crate::ServerLayer<tower_shed::http::OverloadedAsResponseLayer, P>;

/// The service [`HttpServerLayer`] builds around a handler `S`.
#[cfg(feature = "http")]
pub type HttpServerService<S, P = ()> =
    tower_shed::http::OverloadedAsResponse<crate::ServerService<S, P>>;

/// The layer [`ServerStack::grpc`](crate::ServerStack::grpc) builds (`P`: the partitioner).
#[cfg(feature = "grpc")]
pub type GrpcServerLayer<P = ()> = crate::ServerLayer<tower_shed::grpc::OverloadedAsStatusLayer, P>;

/// The service [`GrpcServerLayer`] builds around a tonic service `S`.
#[cfg(feature = "grpc")]
pub type GrpcServerService<S, P = ()> =
    tower_shed::grpc::OverloadedAsStatus<crate::ServerService<S, P>>;
