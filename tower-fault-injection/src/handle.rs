//! Switching faults at run time: [`FaultHandle`], backed by a lock-free sequence-locked cell.

use crate::service::Shared;
use crate::spec::{ConfigError, FaultSpec, Latency};
use damper_core::clock::nanos;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::time::Duration;

const PRESENT: u64 = 1;
const KIND_SHIFT: u32 = 1;
const CAP_NONE: u64 = u64::MAX;
const WORDS: usize = 6;

/// A [`FaultSpec`] stored in atomics. Readers never block: they retry if a write overlapped
/// (a sequence lock). Writes are rare (an operator flipping a fault), so writers spin.
#[derive(Debug)]
pub(crate) struct SpecCell {
    seq: AtomicU64,
    words: [AtomicU64; WORDS],
}

fn encode(spec: Option<&FaultSpec>) -> [u64; WORDS] {
    let Some(spec) = spec else {
        return [0; WORDS];
    };
    let (kind, a, b) = match spec.latency {
        None => (0, 0, 0),
        Some(Latency::Fixed(d)) => (1, nanos(d), 0),
        Some(Latency::Uniform { min, max }) => (2, nanos(min), nanos(max)),
        Some(Latency::LogNormal { median, p99 }) => (3, nanos(median), nanos(p99)),
        Some(Latency::Exponential { mean }) => (4, nanos(mean), 0),
    };
    [
        PRESENT | (kind << KIND_SHIFT),
        a,
        b,
        spec.error_probability.to_bits(),
        spec.hang_probability.to_bits(),
        spec.capacity.map_or(CAP_NONE, u64::from),
    ]
}

fn decode(w: [u64; WORDS]) -> Option<FaultSpec> {
    if w[0] & PRESENT == 0 {
        return None;
    }
    let (a, b) = (Duration::from_nanos(w[1]), Duration::from_nanos(w[2]));
    let latency = match w[0] >> KIND_SHIFT {
        1 => Some(Latency::Fixed(a)),
        2 => Some(Latency::Uniform { min: a, max: b }),
        3 => Some(Latency::LogNormal { median: a, p99: b }),
        4 => Some(Latency::Exponential { mean: a }),
        _ => None,
    };
    Some(FaultSpec {
        latency,
        error_probability: f64::from_bits(w[3]),
        hang_probability: f64::from_bits(w[4]),
        capacity: u32::try_from(w[5]).ok(),
    })
}

impl SpecCell {
    pub(crate) fn new() -> Self {
        Self {
            seq: AtomicU64::new(0),
            words: Default::default(),
        }
    }

    /// Cheap check: is a spec stored at all? One relaxed load.
    #[inline]
    pub(crate) fn is_set(&self) -> bool {
        self.words[0].load(Ordering::Relaxed) & PRESENT != 0
    }

    pub(crate) fn load(&self) -> Option<FaultSpec> {
        loop {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let mut w = [0; WORDS];
            for (dst, src) in w.iter_mut().zip(&self.words) {
                *dst = src.load(Ordering::Relaxed);
            }
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                return decode(w);
            }
        }
    }

    pub(crate) fn store(&self, spec: Option<&FaultSpec>) {
        let w = encode(spec);
        // Take the write side: even -> odd.
        let mut s = self.seq.load(Ordering::Relaxed);
        loop {
            if s & 1 == 1 {
                std::hint::spin_loop();
                s = self.seq.load(Ordering::Relaxed);
                continue;
            }
            match self
                .seq
                .compare_exchange_weak(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        fence(Ordering::Release);
        for (dst, src) in self.words.iter().zip(w) {
            dst.store(src, Ordering::Relaxed);
        }
        self.seq.store(s + 2, Ordering::Release);
    }
}

/// Switches a layer's faults at run time. Cloning the handle shares the same switch.
///
/// A spec set here wins over the schedule until [`FaultHandle::clear`]. Reads on the request
/// path take no lock.
///
/// ```
/// use tower_fault_injection::{FaultLayer, FaultSpec};
///
/// let layer = FaultLayer::builder().build().unwrap();
/// let handle = layer.handle();
/// handle.set(FaultSpec::new().error_probability(0.5)).unwrap();
/// assert_eq!(handle.get(), Some(FaultSpec::new().error_probability(0.5)));
/// handle.clear();
/// assert_eq!(handle.get(), None);
/// ```
#[derive(Debug, Clone)]
pub struct FaultHandle {
    shared: Arc<Shared>,
}

impl FaultHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Forces `spec` on every request from now on (checked first).
    pub fn set(&self, spec: FaultSpec) -> Result<(), ConfigError> {
        spec.validate()?;
        self.shared.cell().store(Some(&spec));
        tracing::info!(?spec, "fault injection forced on");
        Ok(())
    }

    /// Returns to the schedule (nothing is injected outside its intervals).
    pub fn clear(&self) {
        self.shared.cell().store(None);
        tracing::info!("fault injection back to schedule");
    }

    /// The spec forced through the handle, if any.
    pub fn get(&self) -> Option<FaultSpec> {
        self.shared.cell().load()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn latency() -> impl Strategy<Value = Option<Latency>> {
        let d = (0u64..10_000_000_000).prop_map(Duration::from_nanos);
        prop_oneof![
            Just(None),
            d.clone().prop_map(|a| Some(Latency::Fixed(a))),
            (d.clone(), d.clone()).prop_map(|(a, b)| Some(Latency::Uniform { min: a, max: b })),
            (d.clone(), d.clone())
                .prop_map(|(a, b)| Some(Latency::LogNormal { median: a, p99: b })),
            d.prop_map(|a| Some(Latency::Exponential { mean: a })),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn cell_round_trips(
            latency in latency(),
            err in 0.0f64..=1.0,
            hang in 0.0f64..=1.0,
            cap in proptest::option::of(any::<u32>()),
        ) {
            let spec = FaultSpec { latency, error_probability: err, hang_probability: hang, capacity: cap };
            let cell = SpecCell::new();
            prop_assert!(!cell.is_set());
            cell.store(Some(&spec));
            prop_assert!(cell.is_set());
            prop_assert_eq!(cell.load(), Some(spec));
            cell.store(None);
            prop_assert_eq!(cell.load(), None);
        }
    }

    #[test]
    fn readers_never_see_a_torn_spec() {
        let cell = Arc::new(SpecCell::new());
        let a = FaultSpec::new()
            .error_probability(0.25)
            .latency(Latency::Fixed(Duration::from_millis(1)));
        let b = FaultSpec::new()
            .hang_probability(0.75)
            .capacity(7)
            .latency(Latency::Uniform {
                min: Duration::from_millis(2),
                max: Duration::from_millis(9),
            });
        cell.store(Some(&a));
        let writer = {
            let cell = cell.clone();
            std::thread::spawn(move || {
                for i in 0..20_000 {
                    cell.store(Some(if i % 2 == 0 { &b } else { &a }));
                }
            })
        };
        for _ in 0..20_000 {
            let got = cell.load().unwrap();
            assert!(got == a || got == b, "torn read {got:?}");
        }
        writer.join().unwrap();
    }

    #[test]
    fn handle_rejects_invalid_specs() {
        let layer = crate::FaultLayer::builder().build().unwrap();
        let h = layer.handle();
        let err = h.set(FaultSpec::new().hang_probability(-1.0)).unwrap_err();
        assert_eq!(err.field(), "hang_probability");
        assert_eq!(h.get(), None);
    }
}
