//! Every stack the lab compares, built in one place.
//!
//! A stack is a [`Stack`]: it may wrap each replica on the server side, and it wraps each
//! client's view of the backend on the client side. The driver adds the deadline (the
//! outermost `timeout_at`) itself, so `none` is "deadline only".
//!
//! To add a stack (e.g. `damped` once the damper layers land): implement [`Stack`] and add it
//! to [`registry`]. A stack whose crates do not exist yet is simply not registered, and so left
//! out of the report.

use crate::model::{Req, WireClassifier};
use crate::probe::{Probes, counting};
use crate::scenario::Scenario;
use damper_core::BoxError;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceBuilder;
use tower::buffer::Buffer;
use tower::hedge::Hedge;
use tower::limit::ConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::retry::budget::{Budget, TpsBudget};
use tower::retry::{Policy, RetryLayer};
use tower::timeout::TimeoutLayer;
use tower::util::BoxCloneService;

/// The type every stack consumes and produces.
pub type BoxSvc = BoxCloneService<Req, (), BoxError>;

/// Bound of the `Buffer`s that make unclonable services (balancer, hedge) shareable. Large, so
/// it never pushes back on the open-loop load by itself.
pub const BUFFER: usize = 1 << 16;

/// What a stack gets to know when it is built.
#[derive(Debug)]
pub struct StackCtx<'a> {
    /// The scenario being run.
    pub scenario: &'a Scenario,
    /// The client being built (0-based), or the replica for [`Stack::server`].
    pub index: u32,
    /// A seed for this stack instance (derive, never share, RNGs from it).
    pub seed: u64,
    /// Call counters for metrics the layers do not export themselves.
    pub probes: &'a Probes,
}

/// One way of protecting calls, compared with the others on the same arrivals.
pub trait Stack: Send + Sync {
    /// Its name in the report.
    fn name(&self) -> &'static str;

    /// Wraps one replica on the server side (shared by every client). Default: unchanged.
    fn server(&self, _ctx: &StackCtx<'_>, replica: BoxSvc) -> BoxSvc {
        replica
    }

    /// Wraps one client's views of the replicas, under the client's balancer (only when there
    /// are several replicas; `ctx.index` is the client, `endpoints[r]` is replica `r`).
    /// Default: unchanged.
    fn endpoints(&self, _ctx: &StackCtx<'_>, endpoints: Vec<BoxSvc>) -> Vec<BoxSvc> {
        endpoints
    }

    /// Wraps one client's view of the backend.
    fn client(&self, ctx: &StackCtx<'_>, backend: BoxSvc) -> BoxSvc;
}

/// Every stack that exists, in report order.
pub fn registry() -> Vec<Box<dyn Stack>> {
    vec![
        Box::new(NoneStack),
        Box::new(NaiveStack),
        Box::new(TowerStack),
        Box::new(DampedStack),
        Box::new(FixedBreakerStack),
    ]
}

/// `fixed-breaker`: the `damped` client stack with its breaker swapped for one configured like
/// tower-resilience's defaults — failure rate 50 % over at least 100 calls, a fixed 30 s open
/// wait with no growth and no jitter, one half-open call — so the flapping scenario can show the
/// damped breaker's growing, jittered open periods beside a fixed wait. Only scenarios that name
/// it run it.
#[derive(Debug, Clone, Copy)]
pub struct FixedBreakerStack;

impl Stack for FixedBreakerStack {
    fn name(&self) -> &'static str {
        "fixed-breaker"
    }

    fn client(&self, ctx: &StackCtx<'_>, backend: BoxSvc) -> BoxSvc {
        use damper::breaker::{BreakerConfig, BreakerLayer};
        let stack = damped_client(ctx)
            .breaker(false)
            .build()
            .expect("client stack is valid");
        let fixed = BreakerConfig::builder()
            .name(format!("fixed{}", ctx.index))
            .failure_rate(0.5)
            .min_requests(100)
            .open_min(Duration::from_secs(30))
            .open_max(Duration::from_secs(30))
            .open_multiplier(1.0)
            .open_jitter(0.0)
            .probes(1)
            // The classic breaker: nothing goes through while open but the one probe.
            .trickle(0.0)
            .seed(ctx.seed)
            .build()
            .expect("valid fixed-wait breaker");
        BoxCloneService::new(
            ServiceBuilder::new()
                .layer(stack)
                .layer(BreakerLayer::new(fixed).classifier(WireClassifier))
                .service(backend),
        )
    }
}

/// The `damped` client stack for client `ctx.index`, before it is built: the facade's defaults,
/// seeded per client, reading the simulated server's answers with [`WireClassifier`], hedging
/// when the scenario hedges.
fn damped_client(ctx: &StackCtx<'_>) -> damper::ClientStack<WireClassifier> {
    damper::ClientStack::new()
        .classifier(WireClassifier)
        .name(format!("client{}", ctx.index))
        .seed(ctx.seed)
        .hedging(ctx.scenario.tower.hedge.is_some())
}

/// `damped`: damper's stacks through the `damper` facade.
///
/// - client: [`damper::ClientStack`] with its defaults (deadline-aware retry under one budget →
///   hedge, only when the scenario hedges → breaker → adaptive timeout), seeded per client,
///   reading the simulated server's answers with [`WireClassifier`] (a shed is a 503 with
///   pushback, as `ClientStack::http()` reads a real one);
/// - server side, when the scenario sheds on the server (`tower.server_limit` set):
///   [`damper::ServerStack`] with its defaults, per replica.
///
/// - under each client's balancer, when there are several replicas: a `KeyedBreakerLayer`
///   per client, keyed by replica, wrapping each endpoint through `layer_for` in gate mode
///   (tower-breaker's `Mode::Gate`, tripping like the client stack's: near-total failure or
///   load failures, a call abandoned by the client's timeout counting as a timeout), so p2c
///   routes around an open endpoint instead of the client failing fast for all of them; the
///   client's endpoint breakers fail open while more than half of them are not closed.
///
/// The driver supplies each request's deadline (the requests carry it through
/// [`HasDeadline`](damper_core::HasDeadline)).
#[derive(Debug, Clone, Copy)]
pub struct DampedStack;

impl Stack for DampedStack {
    fn name(&self) -> &'static str {
        "damped"
    }

    fn server(&self, ctx: &StackCtx<'_>, replica: BoxSvc) -> BoxSvc {
        if ctx.scenario.tower.server_limit.is_none() {
            return replica;
        }
        let stack = damper::ServerStack::new()
            .name(format!("server{}", ctx.index))
            .build()
            .expect("default server stack is valid");
        BoxCloneService::new(ServiceBuilder::new().layer(stack).service(replica))
    }

    fn endpoints(&self, ctx: &StackCtx<'_>, endpoints: Vec<BoxSvc>) -> Vec<BoxSvc> {
        use damper::breaker::{BreakerConfig, KeyedBreakerLayer, Mode};
        let config = BreakerConfig::builder()
            .name(format!("endpoints{}", ctx.index))
            .consecutive_failures(damper::config::DEFAULT_GATE_CONSECUTIVE_FAILURES)
            .mode(Mode::Gate)
            .seed(ctx.seed)
            .build()
            .expect("valid endpoint breaker");
        // One registry per client, keyed by replica: `layer_for` wraps each endpoint in its
        // key's breaker, in gate mode, and a reconnected endpoint would find its state again.
        let keyed = KeyedBreakerLayer::new(config, |_: &Req| 0usize).classifier(WireClassifier);
        endpoints
            .into_iter()
            .enumerate()
            .map(|(r, endpoint)| {
                BoxCloneService::new(
                    ServiceBuilder::new()
                        .layer(keyed.layer_for(&r))
                        .service(endpoint),
                )
            })
            .collect()
    }

    fn client(&self, ctx: &StackCtx<'_>, backend: BoxSvc) -> BoxSvc {
        let stack = damped_client(ctx)
            .build()
            .expect("default client stack is valid");
        BoxCloneService::new(ServiceBuilder::new().layer(stack).service(backend))
    }
}

/// `none`: nothing but the deadline.
#[derive(Debug, Clone, Copy)]
pub struct NoneStack;

impl Stack for NoneStack {
    fn name(&self) -> &'static str {
        "none"
    }

    fn client(&self, _ctx: &StackCtx<'_>, backend: BoxSvc) -> BoxSvc {
        backend
    }
}

/// `naive`: a fixed per-attempt timeout and immediate retries of every failure.
#[derive(Debug, Clone, Copy)]
pub struct NaiveStack;

/// Retries any failure at once, up to a count.
#[derive(Debug, Clone, Copy)]
pub struct ImmediateRetries {
    left: u32,
}

impl Policy<Req, (), BoxError> for ImmediateRetries {
    type Future = Ready<()>;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<(), BoxError>) -> Option<Ready<()>> {
        if result.is_ok() || self.left == 0 {
            return None;
        }
        self.left -= 1;
        Some(ready(()))
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

impl Stack for NaiveStack {
    fn name(&self) -> &'static str {
        "naive"
    }

    fn client(&self, ctx: &StackCtx<'_>, backend: BoxSvc) -> BoxSvc {
        let n = ctx.scenario.naive;
        BoxCloneService::new(
            ServiceBuilder::new()
                .layer(RetryLayer::new(ImmediateRetries { left: n.retries }))
                .layer(TimeoutLayer::new(Duration::from_secs_f64(
                    n.timeout_ms / 1e3,
                )))
                .service(backend),
        )
    }
}

/// `tower`: tower's own layers, as the scenario's `[tower]` table calls for.
///
/// Client side, outermost first: `Retry` (TpsBudget) → `Hedge` → `LoadShed` →
/// `ConcurrencyLimit` → `Timeout`. Server side: `LoadShed` → `ConcurrencyLimit` per replica.
#[derive(Debug, Clone, Copy)]
pub struct TowerStack;

/// Retries failures while tower's `TpsBudget` allows; never retries a local load-shed
/// rejection.
#[derive(Debug, Clone)]
pub struct BudgetRetries {
    budget: Arc<TpsBudget>,
    left: u32,
}

impl Policy<Req, (), BoxError> for BudgetRetries {
    type Future = Ready<()>;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<(), BoxError>) -> Option<Ready<()>> {
        match result {
            Ok(()) => {
                self.budget.deposit();
                None
            }
            Err(e) if e.is::<tower::load_shed::error::Overloaded>() => None,
            Err(_) => {
                if self.left == 0 || !self.budget.withdraw() {
                    return None;
                }
                self.left -= 1;
                Some(ready(()))
            }
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

/// Hedges every request.
#[derive(Debug, Clone, Copy)]
pub struct HedgeAll;

impl tower::hedge::Policy<Req> for HedgeAll {
    fn clone_request(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }

    fn can_retry(&self, _req: &Req) -> bool {
        true
    }
}

impl Stack for TowerStack {
    fn name(&self) -> &'static str {
        "tower"
    }

    fn server(&self, ctx: &StackCtx<'_>, replica: BoxSvc) -> BoxSvc {
        match ctx.scenario.tower.server_limit {
            Some(limit) => BoxCloneService::new(
                ServiceBuilder::new()
                    .layer(LoadShedLayer::new())
                    .layer(ConcurrencyLimitLayer::new(limit as usize))
                    .service(replica),
            ),
            None => replica,
        }
    }

    fn client(&self, ctx: &StackCtx<'_>, backend: BoxSvc) -> BoxSvc {
        let t = ctx.scenario.tower;
        let mut svc = backend;
        if t.timeout_ms > 0.0 {
            svc = BoxCloneService::new(
                ServiceBuilder::new()
                    .layer(TimeoutLayer::new(Duration::from_secs_f64(
                        t.timeout_ms / 1e3,
                    )))
                    .service(svc),
            );
        }
        if let Some(limit) = t.concurrency_limit {
            svc = BoxCloneService::new(
                ServiceBuilder::new()
                    .layer(LoadShedLayer::new())
                    .layer(ConcurrencyLimitLayer::new(limit as usize))
                    .service(svc),
            );
        }
        if let Some(h) = t.hedge {
            let inner = ServiceBuilder::new()
                .map_request(counting::<Req>(ctx.probes.hedge_inner.clone()))
                .service(svc);
            let hedge = Hedge::new::<Req>(
                inner,
                HedgeAll,
                h.min_data_points,
                h.percentile as f32,
                Duration::from_secs_f64(h.period_s),
            );
            svc = BoxCloneService::new(
                ServiceBuilder::new()
                    .map_request(counting::<Req>(ctx.probes.hedge_outer.clone()))
                    .service(Buffer::new(hedge, BUFFER)),
            );
        }
        if t.retry_percent > 0.0 {
            let budget = Arc::new(TpsBudget::new(
                Duration::from_secs(10),
                10,
                (t.retry_percent / 100.0) as f32,
            ));
            svc = BoxCloneService::new(
                ServiceBuilder::new()
                    .layer(RetryLayer::new(BudgetRetries {
                        budget,
                        left: t.max_retries,
                    }))
                    .service(svc),
            );
        }
        svc
    }
}
