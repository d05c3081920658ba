//! Keyed breakers: one breaker per key (a host, an endpoint, a tenant), with a hard bound on
//! the number of live keys.
//!
//! # Two ways to use it
//! - **Per request** ([`KeyedBreakerLayer`] as a layer): a key extractor picks the key of each
//!   request (e.g. its authority) and the call goes through that key's breaker. Refused calls
//!   fail fast with [`CircuitOpen`](damper_core::error::CircuitOpen): readiness cannot depend on
//!   a request not yet seen, so gate mode does not apply here.
//! - **Per endpoint** ([`KeyedBreakerLayer::layer_for`]): under a balancer each endpoint is its
//!   own service; `layer_for(key)` wraps it in a [`Breaker`](crate::Breaker) bound to that key's
//!   breaker, in the configured mode (gate mode lets tower's p2c route around an open
//!   endpoint). A replaced or reconnected endpoint with the same key finds its breaker's state
//!   again.
//!
//! # Failing open
//! Gating every endpoint would leave a balancer nothing to route to, and an endpoint a
//! breaker gates gets no traffic but its probes. So the breakers of one registry form a pool:
//! while more than `max_ejected` of its live breakers (half, by default) are not closed, the
//! gates of all of them let calls through (Envoy's panic threshold). Such calls count for
//! nothing; the spaced probes still decide when each breaker closes. A pool of one never gates.
//!
//! # Bounded memory
//! Keys may be chosen by whoever sends requests, so the registry holds at most `max_keys`
//! breakers. A new key arriving at a full registry evicts, in order of preference: a closed
//! breaker idle for `idle_timeout`; the least recently used closed breaker; the least recently
//! used breaker of any state. Open breakers are evicted last, so a flood of fresh keys cannot
//! easily flush the breaker of a dependency that is down.
//!
//! # Locking
//! The registry is a `HashMap` behind a mutex, taken only when a service clone meets a key it
//! has not cached (or whose breaker was evicted). Each clone keeps its own map from key to
//! breaker, reached through `&mut self` in `call`, so the per-call path takes no lock: one hash
//! lookup and one atomic load to check the entry was not evicted. A lock-free concurrent map
//! would need a dependency outside the allowed set (or `unsafe`), and a lookup that misses the
//! local map already pays for a hash insert, so a short critical section there costs little.
//! Each clone's map is bounded by `max_keys` too (cleared of evicted entries, then emptied,
//! when full). A clone starts with an empty map, so clone a [`KeyedBreaker`] per connection or
//! per task rather than per request. Request-keyed breakers have no fallback hook.

use crate::config::BreakerConfig;
use crate::fallback::Fallback;
use crate::future::ResponseFuture;
use crate::handle::BreakerHandle;
use crate::layer::BreakerLayer;
use crate::policy::State;
use crate::service::{Sampler, dispatch};
use crate::shared::{Metrics, Pool, Shared};
use damper_core::classify::{Classify, ResultClassifier};
use damper_core::error::BoxError;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

// The registry lock is taken only on a local cache miss, never per call (see the module docs).
#[allow(clippy::disallowed_types)]
type RegistryLock<K> = std::sync::Mutex<HashMap<K, Arc<Shared>>>;

/// The breakers of every key, shared by all services of one [`KeyedBreakerLayer`].
struct Registry<K> {
    map: RegistryLock<K>,
    config: BreakerConfig,
    metrics: Arc<Metrics>,
    origin: Instant,
    /// Set by the layer's builder methods; read on cache misses only.
    max_keys: AtomicUsize,
    idle_nanos: AtomicU64,
    /// The live breakers, for failing open before gating empties the pool.
    pool: Arc<Pool>,
}

impl<K: Hash + Eq + Clone + fmt::Debug> Registry<K> {
    fn get(&self, key: &K, now: Instant) -> Arc<Shared> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(shared) = map.get(key) {
            return shared.clone();
        }
        // `while`, not `if`: `max_keys` may have been lowered since the registry filled up.
        while map.len() >= self.max_keys() {
            self.evict_one(&mut map, now);
        }
        let label = format!("{key:?}");
        let shared = Arc::new(
            Shared::with_metrics(
                &self.config.for_key(&label),
                self.origin,
                self.metrics.clone(),
                Some(label),
            )
            .join(&self.pool),
        );
        map.insert(key.clone(), shared.clone());
        shared
    }

    fn evict_one(&self, map: &mut HashMap<K, Arc<Shared>>, now: Instant) {
        let epoch_now = map.values().next().map_or(0, |s| s.policy.epoch_of(now));
        let sub = self.config.window.as_nanos() / 10;
        let idle_epochs = (u128::from(self.idle_nanos.load(Ordering::Relaxed)) / sub.max(1)) as u64;
        // Rank: idle closed (0), closed (1), other (2); then least recently used.
        let victim = map
            .iter()
            .min_by_key(|(_, s)| {
                let last = s.policy.last_epoch();
                let closed = s.policy.state() == State::Closed;
                let rank = match (closed, epoch_now.saturating_sub(last) >= idle_epochs) {
                    (true, true) => 0,
                    (true, false) => 1,
                    _ => 2,
                };
                (rank, last)
            })
            .map(|(k, _)| k.clone());
        if let Some(k) = victim
            && let Some(s) = map.remove(&k)
        {
            s.evicted.store(true, Ordering::Relaxed);
            s.leave_pool();
        }
    }

    fn max_keys(&self) -> usize {
        self.max_keys.load(Ordering::Relaxed)
    }

    fn peek(&self, key: &K) -> Option<Arc<Shared>> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).cloned()
    }

    fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// One breaker per key; see the [module docs](self).
///
/// Cloning the layer shares its registry of breakers.
pub struct KeyedBreakerLayer<K, E, C = ResultClassifier> {
    registry: Arc<Registry<K>>,
    extractor: E,
    classifier: C,
}

impl<K, E: Clone, C: Clone> Clone for KeyedBreakerLayer<K, E, C> {
    fn clone(&self) -> Self {
        Self {
            registry: self.registry.clone(),
            extractor: self.extractor.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<K, E, C> fmt::Debug for KeyedBreakerLayer<K, E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBreakerLayer")
            .field("name", &self.registry.config.name)
            .field("max_keys", &self.registry.max_keys)
            .field("idle_nanos", &self.registry.idle_nanos)
            .finish_non_exhaustive()
    }
}

/// The default bound on live keys.
pub const DEFAULT_MAX_KEYS: usize = 1024;
/// The default idle time after which a closed key's breaker is the first to be evicted.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

impl<K, E> KeyedBreakerLayer<K, E> {
    /// Breakers built from `config`, one per key that `extractor` (`Fn(&Req) -> K`) picks, at
    /// most [`DEFAULT_MAX_KEYS`] live keys.
    ///
    /// Keyed breakers report transitions and rejections under the config's `name` only (no
    /// per-key labels, so the keys cannot blow up metric cardinality) and set no state gauge;
    /// tracing events carry the key.
    pub fn new(config: BreakerConfig, extractor: E) -> Self {
        let metrics = Metrics::register(config.name.clone(), false);
        Self {
            registry: Arc::new(Registry {
                map: RegistryLock::new(HashMap::new()),
                metrics,
                origin: Instant::now(),
                max_keys: AtomicUsize::new(DEFAULT_MAX_KEYS),
                idle_nanos: AtomicU64::new(DEFAULT_IDLE_TIMEOUT.as_nanos() as u64),
                pool: Arc::new(Pool::new(config.max_ejected)),
                config,
            }),
            extractor,
            classifier: ResultClassifier::new(),
        }
    }
}

impl<K, E, C> KeyedBreakerLayer<K, E, C> {
    /// The bound on live keys. Default [`DEFAULT_MAX_KEYS`]. Applies to the registry this
    /// layer shares with its clones and services.
    pub fn max_keys(self, max_keys: NonZeroUsize) -> Self {
        self.registry
            .max_keys
            .store(max_keys.get(), Ordering::Relaxed);
        self
    }

    /// How long a closed breaker must go unused before it is the first to be evicted. Default
    /// [`DEFAULT_IDLE_TIMEOUT`]. Applies to the registry this layer shares with its clones and
    /// services.
    pub fn idle_timeout(self, idle: Duration) -> Self {
        let nanos = u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX);
        self.registry.idle_nanos.store(nanos, Ordering::Relaxed);
        self
    }

    /// Classifies results with `classifier`.
    pub fn classifier<C2>(self, classifier: C2) -> KeyedBreakerLayer<K, E, C2> {
        KeyedBreakerLayer {
            registry: self.registry,
            extractor: self.extractor,
            classifier,
        }
    }

    /// The number of live keys.
    pub fn len(&self) -> usize
    where
        K: Hash + Eq + Clone + fmt::Debug,
    {
        self.registry.len()
    }

    /// Whether no key has a breaker.
    pub fn is_empty(&self) -> bool
    where
        K: Hash + Eq + Clone + fmt::Debug,
    {
        self.len() == 0
    }

    /// The handle of `key`'s breaker, if it is live.
    pub fn handle(&self, key: &K) -> Option<BreakerHandle>
    where
        K: Hash + Eq + Clone + fmt::Debug,
    {
        self.registry.peek(key).map(BreakerHandle::from_shared)
    }

    /// The handle of `key`'s breaker, creating it if needed (this may evict another key).
    pub fn handle_for(&self, key: &K) -> BreakerHandle
    where
        K: Hash + Eq + Clone + fmt::Debug,
    {
        BreakerHandle::from_shared(self.registry.get(key, Instant::now()))
    }

    /// A layer wrapping one endpoint in `key`'s breaker, in the configured [`Mode`]
    /// (use [`Mode::Gate`] under a balancer).
    ///
    /// [`Mode`]: crate::Mode
    /// [`Mode::Gate`]: crate::Mode::Gate
    pub fn layer_for(&self, key: &K) -> BreakerLayer<C>
    where
        K: Hash + Eq + Clone + fmt::Debug,
        C: Clone,
    {
        BreakerLayer::from_handle(&self.handle_for(key)).classifier(self.classifier.clone())
    }
}

impl<S, K, E: Clone, C: Clone> Layer<S> for KeyedBreakerLayer<K, E, C> {
    type Service = KeyedBreaker<S, K, E, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedBreaker {
            inner,
            registry: self.registry.clone(),
            extractor: self.extractor.clone(),
            classifier: self.classifier.clone(),
            cache: HashMap::new(),
        }
    }
}

/// A breaker per request key, built by [`KeyedBreakerLayer`].
pub struct KeyedBreaker<S, K, E, C = ResultClassifier> {
    inner: S,
    registry: Arc<Registry<K>>,
    extractor: E,
    classifier: C,
    cache: HashMap<K, Sampler<C>>,
}

impl<S: Clone, K, E: Clone, C: Clone> Clone for KeyedBreaker<S, K, E, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            registry: self.registry.clone(),
            extractor: self.extractor.clone(),
            classifier: self.classifier.clone(),
            cache: HashMap::new(),
        }
    }
}

impl<S: fmt::Debug, K, E, C> fmt::Debug for KeyedBreaker<S, K, E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBreaker")
            .field("inner", &self.inner)
            .field("cached_keys", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl<S, K, E, C> KeyedBreaker<S, K, E, C> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the breaker, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, K, E, C, Req> Service<Req> for KeyedBreaker<S, K, E, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone + fmt::Debug,
    E: Fn(&Req) -> K,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, <() as Fallback<Req, S::Response>>::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let key = (self.extractor)(&req);
        let fresh = matches!(
            self.cache.get(&key),
            Some(s) if !s.local.shared.evicted.load(Ordering::Relaxed)
        );
        if !fresh {
            let shared = self.registry.get(&key, Instant::now());
            if self.cache.len() >= self.registry.max_keys() {
                self.cache
                    .retain(|_, s| !s.local.shared.evicted.load(Ordering::Relaxed));
                if self.cache.len() >= self.registry.max_keys() {
                    self.cache.clear();
                }
            }
            let sampler = Sampler::new(shared, self.classifier.clone());
            self.cache.insert(key.clone(), sampler);
        }
        let sampler = self.cache.get_mut(&key).expect("just inserted");
        dispatch(None, sampler, &mut self.inner, &mut (), req)
    }
}
