use crate::handle::{FaultHandle, SpecCell};
use crate::inject::ErrorInjector;
use crate::policy::FaultPolicy;
use crate::schedule::Schedule;
use crate::service::{Fault, Shared};
use crate::spec::{ConfigError, FaultSpec};
use std::borrow::Cow;
use std::sync::Arc;
use tokio::time::Instant;
use tower_layer::Layer;

/// Builds [`Fault`] services. See the crate docs for an example.
///
/// Cloning the layer does not copy its state: every service it builds shares one schedule, one
/// [`FaultHandle`], one seeded random source and one capacity count.
#[derive(Debug, Clone)]
pub struct FaultLayer<I = ErrorInjector> {
    shared: Arc<Shared>,
    injector: I,
}

impl FaultLayer {
    /// Starts a layer configuration.
    pub fn builder() -> FaultLayerBuilder {
        FaultLayerBuilder {
            schedule: Schedule::empty(),
            start: None,
            seed: 0,
            forced: None,
            name: Cow::Borrowed("fault"),
            injector: ErrorInjector::new(),
        }
    }
}

impl<I> FaultLayer<I> {
    /// The handle that switches faults at run time.
    pub fn handle(&self) -> FaultHandle {
        FaultHandle::new(self.shared.clone())
    }
}

impl<S, I: Clone> Layer<S> for FaultLayer<I> {
    type Service = Fault<S, I>;

    fn layer(&self, inner: S) -> Self::Service {
        Fault::new(inner, self.shared.clone(), self.injector.clone())
    }
}

/// Configures a [`FaultLayer`]. Consuming methods; [`FaultLayerBuilder::build`] validates.
#[derive(Debug, Clone)]
pub struct FaultLayerBuilder<I = ErrorInjector> {
    schedule: Schedule,
    start: Option<Instant>,
    seed: u64,
    forced: Option<FaultSpec>,
    name: Cow<'static, str>,
    injector: I,
}

impl<I> FaultLayerBuilder<I> {
    /// The fault schedule (default: empty, so nothing is injected unless forced).
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// The instant the schedule is measured from (default: when [`build`](Self::build) runs).
    pub fn start(mut self, start: Instant) -> Self {
        self.start = Some(start);
        self
    }

    /// Seeds the random draws (default 0). The same seed and the same sequence of calls give
    /// the same faults.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Forces `spec` from the start, as [`FaultHandle::set`] would.
    pub fn forced(mut self, spec: FaultSpec) -> Self {
        self.forced = Some(spec);
        self
    }

    /// The `name` label of this layer's metrics (default `"fault"`).
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = name.into();
        self
    }

    /// What an injected failure returns (default [`ErrorInjector`]).
    pub fn injector<J>(self, injector: J) -> FaultLayerBuilder<J> {
        FaultLayerBuilder {
            schedule: self.schedule,
            start: self.start,
            seed: self.seed,
            forced: self.forced,
            name: self.name,
            injector,
        }
    }

    /// Validates the configuration and builds the layer; registers its metrics.
    pub fn build(self) -> Result<FaultLayer<I>, ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        let cell = SpecCell::new();
        if let Some(spec) = &self.forced {
            spec.validate()?;
            cell.store(Some(spec));
        }
        let start = self.start.unwrap_or_else(Instant::now);
        let policy = FaultPolicy::new(self.schedule, start);
        Ok(FaultLayer {
            shared: Arc::new(Shared::new(policy, cell, self.seed, &self.name)),
            injector: self.injector,
        })
    }
}
