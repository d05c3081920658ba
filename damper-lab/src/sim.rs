//! Runs one stack through one scenario in a current-thread runtime with the clock paused.
//!
//! Nothing here reads the wall clock: arrivals are precomputed from the seed, every RNG is
//! derived from it, and tokio's paused clock advances only when every task is idle. The same
//! seed therefore gives the same run, event for event.

use crate::model::{Arrival, Logical, Recorder, Req, RunData, Server, ServerError, sub_seed};
use crate::probe::{LabMetrics, Probes};
use crate::scenario::{Impatient, Scenario};
use crate::stacks::{BUFFER, BoxSvc, Stack, StackCtx};
use damper_core::BoxError;
use damper_core::deadline::Deadline;
use damper_core::error::{Overloaded, find, is_local_rejection};
use damper_core::metrics::{
    BREAKER_STATE, BREAKER_TRANSITIONS_TOTAL, HEDGE_SENT_TOTAL, SHED_LIMIT, TIMEOUT_CURRENT_SECONDS,
};
use damper_core::rng::{Random, SplitMix64};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::{Instant, sleep, sleep_until, timeout_at};
use tower::ServiceBuilder;
use tower::ServiceExt;
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PendingRequests};
use tower::util::BoxCloneService;
use tower_fault_injection::{FaultLayer, FaultSpec, Schedule};

/// Everything one run produced.
#[derive(Debug, Clone, Default)]
pub struct RunOutput {
    /// Per-second counts and latencies.
    pub data: RunData,
    /// Sum of `damper_breaker_transitions_total`, if a layer registered it.
    pub breaker_transitions: Option<u64>,
    /// Hedge attempts per logical request, if the stack hedges.
    pub hedge_extra_load: Option<f64>,
    /// Highest breaker state gauge each second, if a layer registered one.
    pub breaker_state: Option<Vec<f64>>,
    /// Mean concurrency-limit gauge each second, if a layer registered one.
    pub limit: Option<Vec<f64>>,
    /// `(seconds, limit)` sampled every 100 ms, for the limit's coefficient of variation.
    pub limit_samples: Vec<(f64, f64)>,
    /// Mean adaptive attempt timeout each second, in ms, if a layer registered one.
    pub timeout_ms: Option<Vec<f64>>,
    /// Hedges sent each second, if the stack hedges (`hedge_extra_load` is then set too).
    pub hedges: Option<Vec<u64>>,
}

/// A seeded source for tower's p2c balancer (its default seeds from the OS).
#[derive(Debug, Clone)]
struct TowerRng(SplitMix64);

impl tower::util::rng::Rng for TowerRng {
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
}

/// Whole seconds the recorder keeps (arrivals stop at `duration`).
pub fn seconds(sc: &Scenario) -> usize {
    sc.duration.ceil() as usize
}

/// Runs `stack` through `sc` on `arrivals`, deterministically for `seed`.
pub fn run(sc: &Scenario, stack: &dyn Stack, arrivals: &[Arrival], seed: u64) -> RunOutput {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    rt.block_on(simulate(sc, stack, arrivals, seed))
}

fn replica_schedule(sc: &Scenario, replica: u32) -> Schedule {
    let mut b = Schedule::builder();
    for f in sc.faults.iter().filter(|f| f.applies_to(replica)) {
        if f.error_probability <= 0.0 && !f.hang {
            continue;
        }
        let spec = if f.hang {
            FaultSpec::blackout()
        } else {
            FaultSpec::new().error_probability(f.error_probability)
        };
        b = b.between(
            Duration::from_secs_f64(f.start),
            Duration::from_secs_f64(f.end),
            spec,
        );
    }
    b.build()
        .expect("scenario validation keeps error/hang windows disjoint and valid")
}

/// A rejection by a server-side shedder is, to the client, the server's 503 carrying the
/// shedder's `Retry-After` hint if it gave one (damper's shed does, tower's `LoadShed` does
/// not) — never a local rejection of the client's own.
fn as_remote(e: BoxError) -> BoxError {
    if let Some(o) = find::<Overloaded>(&*e) {
        return ServerError::Shed {
            retry_after: o.retry_after(),
        }
        .into();
    }
    if e.is::<tower::load_shed::error::Overloaded>() || is_local_rejection(&*e) {
        ServerError::Shed { retry_after: None }.into()
    } else {
        e
    }
}

fn build(
    sc: &Scenario,
    stack: &dyn Stack,
    seed: u64,
    start: Instant,
    rec: &Arc<Recorder>,
    probes: &Probes,
) -> Vec<BoxSvc> {
    let replicas: Vec<BoxSvc> = (0..sc.replicas)
        .map(|r| {
            let server = Server::new(
                sc,
                r,
                start,
                sub_seed(seed, &format!("server{r}")),
                rec.clone(),
            );
            let faults = FaultLayer::builder()
                .schedule(replica_schedule(sc, r))
                .start(start)
                .seed(sub_seed(seed, &format!("fault{r}")))
                .name(format!("replica{r}"))
                .build()
                .expect("valid fault layer");
            let core = BoxCloneService::new(ServiceBuilder::new().layer(faults).service(server));
            let ctx = StackCtx {
                scenario: sc,
                index: r,
                seed: sub_seed(seed, &format!("server-stack{r}")),
                probes,
            };
            let protected = stack.server(&ctx, core);
            // Counted outside the server-side stack: a request the server sheds still reached
            // it. Its rejection reaches the client as a remote 503, never as a local rejection.
            let rec = rec.clone();
            BoxCloneService::new(
                ServiceBuilder::new()
                    .map_request(move |req: Req| {
                        rec.attempt(&req);
                        req
                    })
                    .map_err(as_remote)
                    .service(protected),
            )
        })
        .collect();
    (0..sc.clients)
        .map(|c| {
            let backend = if replicas.len() == 1 {
                replicas[0].clone()
            } else {
                let ctx = StackCtx {
                    scenario: sc,
                    index: c,
                    seed: sub_seed(seed, &format!("endpoints{c}")),
                    probes,
                };
                let list = ServiceList::new(
                    stack
                        .endpoints(&ctx, replicas.clone())
                        .into_iter()
                        .map(|s| PendingRequests::new(s, CompleteOnResponse::default()))
                        .collect::<Vec<_>>(),
                );
                let rng = TowerRng(SplitMix64::new(sub_seed(seed, &format!("p2c{c}"))));
                let balance = Balance::from_rng(list, rng);
                BoxCloneService::new(Buffer::new(balance, BUFFER))
            };
            let ctx = StackCtx {
                scenario: sc,
                index: c,
                seed: sub_seed(seed, &format!("client{c}")),
                probes,
            };
            stack.client(&ctx, backend)
        })
        .collect()
}

struct LogicalCtx {
    rec: Arc<Recorder>,
    deadline: Duration,
    impatient: Option<Impatient>,
    end: Instant,
    seed: u64,
    next_id: AtomicU64,
}

async fn logical(svc: BoxSvc, ctx: Arc<LogicalCtx>, mut id: u64) {
    let mut tries = 0;
    loop {
        let born = Instant::now();
        let deadline = Deadline::after(born, ctx.deadline);
        let l = Arc::new(Logical::new(born, deadline));
        ctx.rec.offered(born);
        let req = Req { logical: l.clone() };
        let res = timeout_at(deadline.instant(), svc.clone().oneshot(req)).await;
        if let Ok(Ok(())) = res {
            let now = Instant::now();
            l.succeed(now);
            ctx.rec.success(born, now);
            return;
        }
        let Some(imp) = ctx.impatient else { return };
        if tries >= imp.retries {
            return;
        }
        let mut rng = SplitMix64::new(ctx.seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        if rng.next_f64() >= imp.fraction {
            return;
        }
        tries += 1;
        // A person pauses between 0.5× and 1.5× the configured time.
        let pause = imp.pause_ms / 1e3 * (0.5 + rng.next_f64());
        sleep(Duration::from_secs_f64(pause)).await;
        if Instant::now() >= ctx.end {
            return;
        }
        id = ctx.next_id.fetch_add(1, Ordering::Relaxed);
    }
}

async fn simulate(sc: &Scenario, stack: &dyn Stack, arrivals: &[Arrival], seed: u64) -> RunOutput {
    let start = Instant::now();
    let secs = seconds(sc);
    let rec = Arc::new(Recorder::new(start, secs));
    let lab = Arc::new(LabMetrics::default());
    let probes = Probes::default();
    let clients =
        metrics::with_local_recorder(&*lab, || build(sc, stack, seed, start, &rec, &probes));

    let end = start + Duration::from_secs_f64(sc.duration);
    let sampler = {
        let lab = lab.clone();
        let want_limit = lab.has(SHED_LIMIT);
        let want_breaker = lab.has(BREAKER_STATE);
        let want_timeout = lab.has(TIMEOUT_CURRENT_SECONDS);
        let want_hedges = sc.tower.hedge.is_some();
        let probes = probes.clone();
        // Hedges sent so far: damper's counter, or the attempts tower's `Hedge` added.
        let hedges_so_far = move |lab: &LabMetrics| {
            lab.counter_sum(HEDGE_SENT_TOTAL).unwrap_or_else(|| {
                let outer = probes.hedge_outer.load(Ordering::Relaxed);
                probes
                    .hedge_inner
                    .load(Ordering::Relaxed)
                    .saturating_sub(outer)
            })
        };
        tokio::spawn(async move {
            let mut limit = Vec::new();
            let mut limit_samples = Vec::new();
            let mut breaker = Vec::new();
            let mut timeout = Vec::new();
            let mut hedges = Vec::new();
            let mut hedged = 0;
            let (mut sum, mut timeout_sum) = (0.0, 0.0);
            let mut tick = 0u64;
            if !(want_limit || want_breaker || want_timeout || want_hedges) {
                return (None, None, limit_samples, None, None);
            }
            loop {
                tick += 1;
                sleep_until(start + Duration::from_millis(100 * tick)).await;
                if want_limit {
                    let g = lab.gauges(SHED_LIMIT);
                    let mean = g.iter().sum::<f64>() / g.len().max(1) as f64;
                    limit_samples.push((tick as f64 / 10.0, mean));
                    sum += mean;
                }
                if want_timeout {
                    let g = lab.gauges(TIMEOUT_CURRENT_SECONDS);
                    timeout_sum += g.iter().sum::<f64>() / g.len().max(1) as f64;
                }
                if tick.is_multiple_of(10) {
                    if want_hedges {
                        let now = hedges_so_far(&lab);
                        hedges.push(now.saturating_sub(hedged));
                        hedged = now;
                    }
                    if want_timeout {
                        // Mean of the ten samples, in ms with one decimal.
                        timeout.push((timeout_sum * 1e3).round() / 10.0);
                        timeout_sum = 0.0;
                    }
                    if want_limit {
                        limit.push(sum / 10.0);
                        sum = 0.0;
                    }
                    if want_breaker {
                        let max = lab.gauges(BREAKER_STATE).into_iter().fold(0.0, f64::max);
                        breaker.push(max);
                    }
                    if tick / 10 >= secs as u64 {
                        break;
                    }
                }
            }
            (
                want_breaker.then_some(breaker),
                want_limit.then_some(limit),
                limit_samples,
                want_timeout.then_some(timeout),
                want_hedges.then_some(hedges),
            )
        })
    };

    let ctx = Arc::new(LogicalCtx {
        rec: rec.clone(),
        deadline: Duration::from_secs_f64(sc.deadline),
        impatient: sc.impatient,
        end,
        seed: sub_seed(seed, "users"),
        next_id: AtomicU64::new(arrivals.len() as u64),
    });
    for (id, a) in arrivals.iter().enumerate() {
        let at = start + Duration::from_secs_f64(a.at);
        if at > Instant::now() {
            sleep_until(at).await;
        }
        let svc = clients[a.client as usize].clone();
        tokio::spawn(logical(svc, ctx.clone(), id as u64));
    }
    // Everything born before the end resolves by its deadline.
    sleep_until(end + Duration::from_secs_f64(sc.deadline) + Duration::from_millis(10)).await;
    let (breaker_state, limit, limit_samples, timeout_ms, hedges) =
        sampler.await.unwrap_or_default();

    let data = rec.take();
    let offered: u64 = data.offered.iter().sum();
    let hedge_extra_load = if let Some(sent) = lab.counter_sum(HEDGE_SENT_TOTAL) {
        Some(sent as f64 / offered.max(1) as f64)
    } else {
        let outer = probes.hedge_outer.load(Ordering::Relaxed);
        let inner = probes.hedge_inner.load(Ordering::Relaxed);
        (outer > 0).then(|| inner.saturating_sub(outer) as f64 / outer as f64)
    };
    RunOutput {
        breaker_transitions: lab.counter_sum(BREAKER_TRANSITIONS_TOTAL),
        hedge_extra_load,
        breaker_state,
        limit,
        limit_samples,
        timeout_ms,
        // The sampler counts for every stack of a hedging scenario; a stack without a hedging
        // layer has no hedges to report, not a series of zeros.
        hedges: hedges.filter(|_| hedge_extra_load.is_some()),
        data,
    }
}
