use crate::config::BreakerConfig;
use crate::fallback::ServiceFallback;
use crate::handle::BreakerHandle;
use crate::service::Breaker;
use crate::shared::Shared;
use damper_core::classify::ResultClassifier;
use std::sync::Arc;
use tokio::time::Instant;
use tower_layer::Layer;

#[derive(Debug, Clone)]
enum Source {
    /// Each `layer` call builds a new breaker.
    New(Box<BreakerConfig>),
    /// Every service shares this breaker.
    Shared(Arc<Shared>),
}

/// Wraps services in a [`Breaker`]. See the [crate docs](crate) for an example.
///
/// Built with [`BreakerLayer::new`], each call to [`Layer::layer`] creates a new, independent
/// breaker (one per endpoint when used under a balancer). Built with
/// [`BreakerLayer::from_handle`], every service shares the handle's breaker; cloning the layer
/// does not create a new one.
#[derive(Debug, Clone)]
pub struct BreakerLayer<C = ResultClassifier, H = ()> {
    source: Source,
    classifier: C,
    fallback: H,
}

impl BreakerLayer {
    /// A layer building breakers from `config`, classifying results with
    /// [`ResultClassifier`] and without fallback.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            source: Source::New(Box::new(config)),
            classifier: ResultClassifier::new(),
            fallback: (),
        }
    }

    /// A layer whose services all share the breaker of `handle`.
    pub fn from_handle(handle: &BreakerHandle) -> Self {
        Self {
            source: Source::Shared(handle.shared().clone()),
            classifier: ResultClassifier::new(),
            fallback: (),
        }
    }
}

impl Default for BreakerLayer {
    fn default() -> Self {
        Self::new(BreakerConfig::default())
    }
}

impl<C, H> BreakerLayer<C, H> {
    /// Classifies results with `classifier` (e.g. damper-core's `HttpClassifier`, or a closure
    /// `Fn(&Result<T, E>) -> Outcome`).
    pub fn classifier<C2>(self, classifier: C2) -> BreakerLayer<C2, H> {
        BreakerLayer {
            source: self.source,
            classifier,
            fallback: self.fallback,
        }
    }

    /// Answers refused calls with `service` (fail-fast mode) instead of
    /// [`CircuitOpen`](damper_core::error::CircuitOpen).
    pub fn fallback<F>(self, service: F) -> BreakerLayer<C, ServiceFallback<F>> {
        BreakerLayer {
            source: self.source,
            classifier: self.classifier,
            fallback: ServiceFallback::new(service),
        }
    }
}

impl<S, C: Clone, H: Clone> Layer<S> for BreakerLayer<C, H> {
    type Service = Breaker<S, C, H>;

    fn layer(&self, inner: S) -> Self::Service {
        let shared = match &self.source {
            Source::New(config) => Arc::new(Shared::new(config, Instant::now())),
            Source::Shared(shared) => shared.clone(),
        };
        Breaker::from_parts(
            inner,
            shared,
            self.classifier.clone(),
            self.fallback.clone(),
        )
    }
}
