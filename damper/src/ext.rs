//! `ServiceBuilder` methods for each damper layer.

use tower::ServiceBuilder;
use tower_adaptive_timeout::{AdaptiveTimeoutLayer, DeadlineLayer};
use tower_breaker::BreakerLayer;
use tower_hedge::HedgeLayer;
use tower_layer::Stack;
use tower_retry_budget::RetryLayer;
use tower_shed::ShedLayer;

mod sealed {
    pub trait Sealed<L> {}
    impl<L> Sealed<L> for tower::ServiceBuilder<L> {}
}

/// Adds damper's layers to a [`ServiceBuilder`], in the style of tower-http's
/// `ServiceBuilderExt`.
///
/// ```
/// use damper::ServiceBuilderExt;
/// use damper::breaker::{BreakerConfig, BreakerLayer};
/// use damper::retry_budget::{CloneAll, RetryBudget, RetryLayer};
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), damper::BoxError> {
/// let budget = RetryBudget::builder().build()?;
/// let mut svc = ServiceBuilder::new()
///     .retry_budget(RetryLayer::builder(budget).replay(CloneAll::default()).build()?)
///     .breaker(BreakerLayer::new(BreakerConfig::builder().build()?))
///     .service_fn(|n: u32| async move { Ok::<_, damper::BoxError>(n + 1) });
/// assert_eq!(svc.ready().await?.call(1).await?, 2);
/// # Ok(())
/// # }
/// ```
pub trait ServiceBuilderExt<L>: sealed::Sealed<L> + Sized {
    /// Adds a budgeted retry layer.
    fn retry_budget<B, C, P>(
        self,
        layer: RetryLayer<B, C, P>,
    ) -> ServiceBuilder<Stack<RetryLayer<B, C, P>, L>>;
    /// Adds a circuit breaker.
    fn breaker<C, H>(
        self,
        layer: BreakerLayer<C, H>,
    ) -> ServiceBuilder<Stack<BreakerLayer<C, H>, L>>;
    /// Adds a concurrency limiter with load shedding.
    fn shed<P>(self, layer: ShedLayer<P>) -> ServiceBuilder<Stack<ShedLayer<P>, L>>;
    /// Adds a hedging layer.
    fn hedge<E, C>(self, layer: HedgeLayer<E, C>) -> ServiceBuilder<Stack<HedgeLayer<E, C>, L>>;
    /// Adds an adaptive per-attempt timeout.
    fn adaptive_timeout(
        self,
        layer: AdaptiveTimeoutLayer,
    ) -> ServiceBuilder<Stack<AdaptiveTimeoutLayer, L>>;
    /// Adds a deadline for the whole logical request.
    fn deadline(self, layer: DeadlineLayer) -> ServiceBuilder<Stack<DeadlineLayer, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn retry_budget<B, C, P>(
        self,
        layer: RetryLayer<B, C, P>,
    ) -> ServiceBuilder<Stack<RetryLayer<B, C, P>, L>> {
        self.layer(layer)
    }
    fn breaker<C, H>(
        self,
        layer: BreakerLayer<C, H>,
    ) -> ServiceBuilder<Stack<BreakerLayer<C, H>, L>> {
        self.layer(layer)
    }
    fn shed<P>(self, layer: ShedLayer<P>) -> ServiceBuilder<Stack<ShedLayer<P>, L>> {
        self.layer(layer)
    }
    fn hedge<E, C>(self, layer: HedgeLayer<E, C>) -> ServiceBuilder<Stack<HedgeLayer<E, C>, L>> {
        self.layer(layer)
    }
    fn adaptive_timeout(
        self,
        layer: AdaptiveTimeoutLayer,
    ) -> ServiceBuilder<Stack<AdaptiveTimeoutLayer, L>> {
        self.layer(layer)
    }
    fn deadline(self, layer: DeadlineLayer) -> ServiceBuilder<Stack<DeadlineLayer, L>> {
        self.layer(layer)
    }
}
