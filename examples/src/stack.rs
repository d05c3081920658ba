//! The client and server stacks of the examples, composed from the layer crates.
//!
//! Client, outermost first (DESIGN.md): deadline → retry (budget) → hedge (same budget) →
//! breaker → adaptive timeout → transport. Server: 503/`RESOURCE_EXHAUSTED` mapping → shed →
//! deadline enforcement → handler.

use damper_core::BoxError;
use damper_core::Deadline as RequestDeadline;
use damper_core::HasDeadline;
use damper_core::classify::{HttpClassifier, ResultClassifier};
use damper_core::histogram::LatencyHistogram;
use std::sync::Arc;
use std::time::Duration;
use tower::Layer;
use tower_adaptive_timeout::deadline::Deadline;
use tower_adaptive_timeout::{AdaptiveTimeout, AdaptiveTimeoutLayer, DeadlineLayer};
use tower_breaker::{Breaker, BreakerConfig, BreakerLayer};
use tower_hedge::{Hedge, HedgeLayer};
use tower_retry_budget::replay::Replay;
use tower_retry_budget::{Idempotent, Retry, RetryBudget, RetryLayer};
use tower_shed::grpc::{OverloadedAsStatus, OverloadedAsStatusLayer};
use tower_shed::http::{OverloadedAsResponse, OverloadedAsResponseLayer};
use tower_shed::limit::Limit;
use tower_shed::{Shed, ShedHandle, ShedLayer};

/// Knobs of the client stacks.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The `name` label of every layer's metrics.
    pub name: String,
    /// The deadline of a logical request, every attempt included.
    pub deadline: Duration,
    /// Attempts per request, first included.
    pub max_attempts: u32,
    /// Tokens in the retry budget at start.
    pub budget_initial: f64,
    /// Floor of retries per second whatever the traffic.
    pub budget_min_per_sec: f64,
    /// Whether to hedge (HTTP stack only).
    pub hedge: bool,
}

impl ClientOptions {
    /// Defaults for a stack named `name`: 2 s deadline, 3 attempts, default budget, hedging.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            deadline: Duration::from_secs(2),
            max_attempts: 3,
            budget_initial: 0.0,
            budget_min_per_sec: 10.0,
            hedge: true,
        }
    }
}

fn budget(o: &ClientOptions) -> Result<Arc<RetryBudget>, BoxError> {
    Ok(RetryBudget::builder()
        .name(o.name.clone())
        .initial(o.budget_initial)
        .max_tokens(o.budget_initial.max(10.0))
        .min_per_sec(o.budget_min_per_sec)
        .build()?)
}

fn timeout(
    o: &ClientOptions,
    histogram: Arc<LatencyHistogram>,
) -> Result<AdaptiveTimeoutLayer, BoxError> {
    Ok(AdaptiveTimeoutLayer::builder()
        .name(o.name.clone())
        .floor(Duration::from_millis(20))
        .fallback(Duration::from_secs(1))
        .histogram(histogram)
        .build()?)
}

fn breaker(o: &ClientOptions) -> Result<BreakerConfig, BoxError> {
    Ok(BreakerConfig::builder()
        .name(o.name.clone())
        .window(Duration::from_secs(5))
        .min_requests(20)
        .failure_rate(0.5)
        .open_min(Duration::from_millis(500))
        .open_max(Duration::from_secs(5))
        .build()?)
}

/// The HTTP client stack for `http::Request<B>` (`B: Clone`, e.g. `String`).
#[derive(Debug, Clone)]
pub struct ClientHttp {
    deadline: DeadlineLayer,
    retry: RetryLayer<Arc<RetryBudget>, HttpClassifier, Idempotent>,
    hedge: Option<HedgeLayer<tower_hedge::Idempotent, HttpClassifier>>,
    breaker: BreakerLayer<HttpClassifier>,
    timeout: AdaptiveTimeoutLayer,
}

/// The service [`ClientHttp`] builds. With hedging off, the hedge layer is skipped.
pub type ClientHttpService<S> = Deadline<
    Retry<
        tower::util::Either<
            Hedge<
                Breaker<AdaptiveTimeout<S>, HttpClassifier>,
                tower_hedge::Idempotent,
                HttpClassifier,
            >,
            Breaker<AdaptiveTimeout<S>, HttpClassifier>,
        >,
        Arc<RetryBudget>,
        HttpClassifier,
        Idempotent,
    >,
>;

impl ClientHttp {
    /// Builds the stack: one budget for retries and hedges, one histogram for the adaptive
    /// timeout (which records) and the hedge delay (which only reads).
    pub fn new(o: &ClientOptions) -> Result<Self, BoxError> {
        let budget = budget(o)?;
        let timeout = timeout(
            o,
            Arc::new(LatencyHistogram::new(tokio::time::Instant::now())),
        )?;
        let hedge = if o.hedge {
            Some(
                HedgeLayer::builder()
                    .name(o.name.clone())
                    .max_extra_load(0.05)
                    .histogram(timeout.histogram().clone())
                    .record_latencies(false)
                    .budget(budget.clone())
                    .eligible_with(tower_hedge::Idempotent::new())
                    .classify_with(HttpClassifier::new())
                    .build()?,
            )
        } else {
            None
        };
        Ok(Self {
            deadline: DeadlineLayer::builder()
                .name(o.name.clone())
                .timeout(o.deadline)
                .build()?,
            retry: RetryLayer::builder(budget)
                .name(o.name.clone())
                .classifier(HttpClassifier::new())
                .max_attempts(o.max_attempts)
                .build()?,
            hedge,
            breaker: BreakerLayer::new(breaker(o)?).classifier(HttpClassifier::new()),
            timeout,
        })
    }
}

impl<S> Layer<S> for ClientHttp {
    type Service = ClientHttpService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let below = self.breaker.layer(self.timeout.layer(inner));
        let middle = match &self.hedge {
            Some(h) => tower::util::Either::Left(h.layer(below)),
            None => tower::util::Either::Right(below),
        };
        self.deadline.layer(self.retry.layer(middle))
    }
}

/// Replays every gRPC request of a client whose methods are all idempotent (as `Echo/Say`),
/// and carries the deadline on the request so the layers below (and the channel) see it.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllIdempotent;

impl<T: Clone> Replay<tonic::Request<T>> for AllIdempotent {
    fn replay(&self, req: &tonic::Request<T>) -> Option<tonic::Request<T>> {
        Some(tonic::Request::from_parts(
            req.metadata().clone(),
            req.extensions().clone(),
            req.get_ref().clone(),
        ))
    }

    fn deadline(&self, req: &tonic::Request<T>) -> Option<RequestDeadline> {
        req.deadline()
    }

    fn set_deadline(&self, req: &mut tonic::Request<T>, deadline: RequestDeadline) {
        req.set_deadline(deadline);
    }
}

/// The gRPC client stack, over `tonic::Request<T>` (messages, which a retry can copy; a
/// tonic `Channel`'s streaming body cannot be replayed). The retry layer's timeout sets the
/// request's deadline; [`propagate`] below puts it on the wire as `grpc-timeout`.
#[derive(Debug, Clone)]
pub struct ClientGrpc {
    retry: RetryLayer<Arc<RetryBudget>, ResultClassifier, AllIdempotent>,
    breaker: BreakerLayer,
    timeout: AdaptiveTimeoutLayer,
    budget: Arc<RetryBudget>,
}

/// The service [`ClientGrpc`] builds.
pub type ClientGrpcService<S> =
    Retry<Breaker<AdaptiveTimeout<S>>, Arc<RetryBudget>, ResultClassifier, AllIdempotent>;

impl ClientGrpc {
    /// Builds the stack.
    pub fn new(o: &ClientOptions) -> Result<Self, BoxError> {
        let budget = budget(o)?;
        Ok(Self {
            retry: RetryLayer::builder(budget.clone())
                .name(o.name.clone())
                .replay(AllIdempotent)
                .max_attempts(o.max_attempts)
                .timeout(o.deadline)
                .build()?,
            breaker: BreakerLayer::new(breaker(o)?),
            timeout: timeout(
                o,
                Arc::new(LatencyHistogram::new(tokio::time::Instant::now())),
            )?,
            budget,
        })
    }

    /// The retry budget.
    pub fn budget(&self) -> &Arc<RetryBudget> {
        &self.budget
    }
}

impl<S> Layer<S> for ClientGrpc {
    type Service = ClientGrpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.retry
            .layer(self.breaker.layer(self.timeout.layer(inner)))
    }
}

/// Wraps a tonic `Channel` (or any `http::Request` service) so the deadline a request carries
/// goes out as `grpc-timeout` and is enforced on this hop too.
pub fn propagate<S>(channel: S) -> Result<Deadline<S>, BoxError> {
    Ok(DeadlineLayer::builder()
        .propagate(true)
        .build()?
        .layer(channel))
}

/// Server stack over HTTP: 503 + `Retry-After` for shed requests, 504 for requests whose
/// (`grpc-timeout`) deadline passed.
#[derive(Debug, Clone)]
pub struct ServerHttp {
    shed: ShedLayer,
    deadline: DeadlineLayer,
}

/// The service [`ServerHttp`] builds.
pub type ServerHttpService<S> = OverloadedAsResponse<Shed<Deadline<S>>>;

/// The longest deadline a server accepts from a caller's `grpc-timeout`.
pub const MAX_INCOMING_DEADLINE: Duration = Duration::from_secs(30);

impl ServerHttp {
    /// A server stack named `name` with the concurrency limit `limit`.
    pub fn new(name: &str, limit: impl Limit + 'static) -> Result<Self, BoxError> {
        Ok(Self {
            shed: ShedLayer::builder(limit)
                .name(name)
                .retry_after(Duration::from_millis(100), Duration::from_secs(5))
                .build()?,
            deadline: DeadlineLayer::builder()
                .name(name)
                .accept_grpc_timeout(MAX_INCOMING_DEADLINE)
                .propagate(false)
                .build()?,
        })
    }

    /// The limiter's live view.
    pub fn handle(&self) -> ShedHandle {
        self.shed.handle()
    }
}

impl<S> Layer<S> for ServerHttp {
    type Service = ServerHttpService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OverloadedAsResponseLayer::new().layer(self.shed.layer(self.deadline.layer(inner)))
    }
}

/// Server stack over gRPC: `RESOURCE_EXHAUSTED` + `grpc-retry-pushback-ms` for shed requests,
/// `DEADLINE_EXCEEDED` for requests whose `grpc-timeout` passed.
#[derive(Debug, Clone)]
pub struct ServerGrpc {
    shed: ShedLayer,
    deadline: DeadlineLayer,
}

/// The service [`ServerGrpc`] builds.
pub type ServerGrpcService<S> = OverloadedAsStatus<Shed<Deadline<S>>>;

impl ServerGrpc {
    /// A server stack named `name` with the concurrency limit `limit`.
    pub fn new(name: &str, limit: impl Limit + 'static) -> Result<Self, BoxError> {
        let http = ServerHttp::new(name, limit)?;
        Ok(Self {
            shed: http.shed,
            deadline: http.deadline,
        })
    }

    /// The limiter's live view.
    pub fn handle(&self) -> ShedHandle {
        self.shed.handle()
    }
}

impl<S> Layer<S> for ServerGrpc {
    type Service = ServerGrpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OverloadedAsStatusLayer::new().layer(self.shed.layer(self.deadline.layer(inner)))
    }
}
