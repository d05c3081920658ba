//! Bounded memory: a keyed breaker fed a million distinct hostile keys keeps at most its
//! configured number of live breakers, in the shared registry and in each service's local cache.
//!
//! The service is driven directly (its futures are ready at once), without a runtime, so the
//! million calls take a few seconds in a debug build.

use damper::BoxError;
use damper::breaker::{BreakerConfig, KeyedBreakerLayer, State};
use std::future::{Future, Ready, ready};
use std::num::NonZeroUsize;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use tower::{Layer, Service};

const KEYS: u64 = 1_000_000;
const MAX_KEYS: usize = 16;
/// How often the live-key count is read during the flood.
const CHECK_EVERY: u64 = 997;

/// A request: the key a hostile caller chose, and whether the dependency fails it.
#[derive(Debug, Clone)]
struct Req {
    key: u64,
    fail: bool,
}

/// A dependency that answers at once, failing the requests marked so.
#[derive(Debug, Clone, Copy)]
struct Dependency;

impl Service<Req> for Dependency {
    type Response = ();
    type Error = BoxError;
    type Future = Ready<Result<(), BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        ready(if req.fail {
            Err("dependency failed".into())
        } else {
            Ok(())
        })
    }
}

/// Polls a future that must be ready at once.
fn now<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the keyed breaker over a ready service must be ready"),
    }
}

fn layer(max_keys: usize) -> KeyedBreakerLayer<u64, KeyOf> {
    let config = BreakerConfig::builder()
        .name("hostile-keys")
        // One failure opens a key's breaker, so the flood can fill the registry with open ones.
        .consecutive_failures(1)
        .patience(std::time::Duration::ZERO)
        // These tests run on the real clock: an open breaker stays open, refusing everything,
        // for the whole test.
        .open_min(std::time::Duration::from_secs(3600))
        .open_max(std::time::Duration::from_secs(3600))
        .trickle(0.0)
        .stripes(1)
        .seed(1)
        .build()
        .unwrap();
    let key: KeyOf = |r| r.key;
    KeyedBreakerLayer::new(config, key).max_keys(NonZeroUsize::new(max_keys).unwrap())
}

/// The service's local cache size, read from its `Debug` output (the only public view of it).
fn cached_keys<S: std::fmt::Debug>(svc: &S) -> usize {
    let dbg = format!("{svc:?}");
    let (_, rest) = dbg
        .split_once("cached_keys: ")
        .unwrap_or_else(|| panic!("no cached_keys in {dbg}"));
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The key of a dependency that is down.
const DOWN: u64 = u64::MAX;

/// How a request's key is picked.
type KeyOf = fn(&Req) -> u64;
type Keyed = damper::breaker::KeyedBreaker<Dependency, u64, KeyOf>;

/// A keyed breaker bounded to `max_keys` whose `DOWN` key's breaker is open.
fn with_one_key_down(max_keys: usize) -> (KeyedBreakerLayer<u64, KeyOf>, Keyed) {
    let layer = layer(max_keys);
    let mut svc = layer.layer(Dependency);
    let _ = now(svc.call(Req {
        key: DOWN,
        fail: true,
    }));
    assert_eq!(layer.handle(&DOWN).unwrap().state(), State::Open);
    (layer, svc)
}

/// Sends one request per key; checks the live-key bound as it goes. Returns the largest live
/// count seen.
fn flood(max_keys: usize, fail: impl Fn(u64) -> bool) -> usize {
    let (layer, mut svc) = with_one_key_down(max_keys);

    let mut most = 0;
    for i in 0..KEYS {
        let req = Req {
            key: i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            fail: fail(i),
        };
        // Results do not matter here: an open key refuses, a failing key fails.
        let _ = now(svc.call(req));
        if i % CHECK_EVERY == 0 || i == KEYS - 1 {
            let live = layer.len();
            most = most.max(live);
            assert!(live <= max_keys, "{live} live keys after {i} distinct keys");
            let cached = cached_keys(&svc);
            assert!(cached <= max_keys, "{cached} cached keys after {i}");
        }
    }
    most
}

#[test]
fn a_million_hostile_keys_stay_under_the_bound() {
    // Every other key fails (and its breaker opens at once), so the registry holds open and
    // closed breakers alike and must evict both kinds.
    let most = flood(MAX_KEYS, |i| i % 2 == 1);
    // The registry was used up to its bound (so a bound that never binds would be noticed).
    assert_eq!(most, MAX_KEYS);
}

#[test]
fn an_open_breaker_outlives_a_flood_of_fresh_closed_keys() {
    let (layer, mut svc) = with_one_key_down(MAX_KEYS);
    for i in 0..100_000 {
        let _ = now(svc.call(Req {
            key: i,
            fail: false,
        }));
    }
    assert!(layer.len() <= MAX_KEYS);
    // Closed breakers went first: the open one is still live, and still refusing.
    assert_eq!(layer.handle(&DOWN).map(|h| h.state()), Some(State::Open));
    let refused = now(svc.call(Req {
        key: DOWN,
        fail: false,
    }));
    assert!(
        refused
            .unwrap_err()
            .is::<damper::core::error::CircuitOpen>()
    );
}

#[test]
fn clones_and_handles_respect_the_bound_too() {
    let layer = layer(8);
    let mut services: Vec<_> = (0..4).map(|_| layer.layer(Dependency)).collect();
    for i in 0..10_000u64 {
        let svc = &mut services[(i % 4) as usize];
        let _ = now(svc.call(Req {
            key: i,
            fail: i % 3 == 0,
        }));
        // Handles created out of band count against the same bound.
        let _ = layer.handle_for(&(i + (1 << 40)));
        assert!(layer.len() <= 8, "{} live keys", layer.len());
    }
    for svc in &services {
        assert!(cached_keys(svc) <= 8);
    }
}
