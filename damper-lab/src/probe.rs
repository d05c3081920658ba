//! What the lab reads from the layers under test: a `metrics` recorder installed while a run's
//! stacks are built (damper layers register their `damper_*` handles then), and call counters
//! the stacks place around layers that export nothing (tower's `Hedge`).

// Registration happens once per layer at build time, outside the request path; the map is read
// once per sampled second. Single-threaded run, never contended.
#![allow(clippy::disallowed_types)]

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A `metrics` recorder that keeps every counter and gauge in an atomic, by name.
#[derive(Debug, Default)]
pub struct LabMetrics {
    cells: Mutex<BTreeMap<String, Vec<Arc<AtomicU64>>>>,
}

impl LabMetrics {
    fn cell(&self, key: &Key) -> Arc<AtomicU64> {
        let cell = Arc::new(AtomicU64::new(0));
        self.cells
            .lock()
            .expect("metrics lock")
            .entry(key.name().to_owned())
            .or_default()
            .push(cell.clone());
        cell
    }

    /// Whether any layer registered `name`.
    pub fn has(&self, name: &str) -> bool {
        self.cells.lock().expect("metrics lock").contains_key(name)
    }

    /// The sum of every counter registered as `name`, if any was.
    pub fn counter_sum(&self, name: &str) -> Option<u64> {
        let cells = self.cells.lock().expect("metrics lock");
        cells
            .get(name)
            .map(|v| v.iter().map(|c| c.load(Ordering::Relaxed)).sum())
    }

    /// The values of every gauge registered as `name`.
    pub fn gauges(&self, name: &str) -> Vec<f64> {
        let cells = self.cells.lock().expect("metrics lock");
        cells.get(name).map_or_else(Vec::new, |v| {
            v.iter()
                .map(|c| f64::from_bits(c.load(Ordering::Relaxed)))
                .collect()
        })
    }
}

impl Recorder for LabMetrics {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.cell(key))
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// Call counters around a hedging layer, for `hedge_extra_load` when the layer exports no
/// metric of its own.
#[derive(Debug, Default, Clone)]
pub struct Probes {
    /// Requests entering the hedging layer.
    pub hedge_outer: Arc<AtomicU64>,
    /// Attempts leaving it (originals and hedges).
    pub hedge_inner: Arc<AtomicU64>,
}

/// A request mapper that counts calls; use with `ServiceBuilder::map_request`.
pub fn counting<R>(c: Arc<AtomicU64>) -> impl Fn(R) -> R + Clone + Send + Sync + 'static {
    move |r| {
        c.fetch_add(1, Ordering::Relaxed);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_counters_and_gauges_by_name() {
        let rec = LabMetrics::default();
        metrics::with_local_recorder(&rec, || {
            let a = metrics::counter!("damper_breaker_transitions_total", "name" => "a");
            let b = metrics::counter!("damper_breaker_transitions_total", "name" => "b");
            let g = metrics::gauge!("damper_shed_limit");
            a.increment(2);
            b.increment(3);
            g.set(42.0);
        });
        assert_eq!(rec.counter_sum("damper_breaker_transitions_total"), Some(5));
        assert_eq!(rec.gauges("damper_shed_limit"), [42.0]);
        assert_eq!(rec.counter_sum("damper_hedge_sent_total"), None);
        assert!(!rec.has("damper_hedge_sent_total"));
    }
}
