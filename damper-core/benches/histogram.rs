//! Recording into `LatencyHistogram` against `hdrhistogram` behind a mutex (the usual way to
//! share it), on one thread and on two threads sharing one histogram, in the same run; plus the
//! read side: a full quantile query and a `QuantileCache` hit.
//!
//! Two-thread figures are total throughput: each thread records half of criterion's iterations
//! into the shared histogram, and the time reported per iteration is wall time divided by the
//! total, so perfect scaling halves the one-thread figure.
//!
//! The `record cpu` group repeats the one-thread figures in the recording thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`), which time spent descheduled on a shared machine does not
//! inflate.
//!
//! ```text
//! cargo bench -p damper-core --bench histogram -- --warm-up-time 1 --measurement-time 3
//! ```
// The clock is criterion's wall clock for `iter_custom`, and the mutex is the peer being
// measured, not library code.
#![allow(
    clippy::disallowed_types,
    reason = "benchmark: std Instant times threads, std Mutex wraps the hdrhistogram peer"
)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use damper_core::histogram::{LatencyHistogram, QuantileCache};
use damper_core::rng::{Random, SplitMix64};
use hdrhistogram::Histogram;
use std::hint::black_box;
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant as WallClock};
use tokio::time::Instant;

/// Latencies to record, cycled through: log-uniform from 1 µs to 100 s, so every bucket range
/// is touched and neither histogram gets a branch-predictor-friendly constant.
fn latencies() -> Vec<u64> {
    let mut rng = SplitMix64::new(7);
    (0..4096)
        .map(|_| (1e3 * 1e8f64.powf(rng.next_f64())) as u64)
        .collect()
}

/// hdrhistogram over the same range at 2 significant figures (≤ 1% error; damper's is ≤ 1.6%).
fn hdr() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 100_000_000_000, 2).expect("valid bounds")
}

/// Runs `record(thread, value)` for `iters` values in total, split over two threads started
/// together, and returns the wall time from the common start to the last thread's end.
fn two_threads(iters: u64, values: &[u64], record: &(dyn Fn(usize, u64) + Sync)) -> Duration {
    let start = Barrier::new(2);
    let per_thread = iters.div_ceil(2);
    let spans: Vec<(WallClock, WallClock)> = thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|t| {
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    let begin = WallClock::now();
                    for (i, v) in values.iter().cycle().skip(t * 997).enumerate() {
                        if i as u64 == per_thread {
                            break;
                        }
                        record(t, black_box(*v));
                    }
                    (begin, WallClock::now())
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let begin = spans.iter().map(|s| s.0).min().unwrap();
    let end = spans.iter().map(|s| s.1).max().unwrap();
    end - begin
}

fn record(c: &mut Criterion) {
    let values = latencies();
    let now = Instant::now();

    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Elements(1));

    g.bench_function("damper/1 thread", |b| {
        let h = LatencyHistogram::new(now);
        let mut it = values.iter().cycle();
        b.iter(|| h.record(Duration::from_nanos(*it.next().unwrap()), black_box(now)));
    });
    g.bench_function("hdrhistogram+mutex/1 thread", |b| {
        let h = Mutex::new(hdr());
        let mut it = values.iter().cycle();
        b.iter(|| h.lock().unwrap().saturating_record(*it.next().unwrap()));
    });

    g.bench_function("damper/2 threads", |b| {
        let h = LatencyHistogram::new(now);
        b.iter_custom(|iters| {
            two_threads(iters, &values, &|_, v| {
                h.record(Duration::from_nanos(v), black_box(now))
            })
        });
    });
    // The machine's own two-thread ceiling: each thread records into a histogram of its own,
    // so nothing is shared. Compare the shared figures above with this, not with an ideal 2×.
    g.bench_function(
        "reference: damper, one histogram per thread/2 threads",
        |b| {
            let hs = [LatencyHistogram::new(now), LatencyHistogram::new(now)];
            b.iter_custom(|iters| {
                two_threads(iters, &values, &|t, v| {
                    hs[t].record(Duration::from_nanos(v), black_box(now))
                })
            });
        },
    );
    g.bench_function("hdrhistogram+mutex/2 threads", |b| {
        let h = Mutex::new(hdr());
        b.iter_custom(|iters| {
            two_threads(iters, &values, &|_, v| {
                h.lock().unwrap().saturating_record(v)
            })
        });
    });
    g.finish();
}

/// The calling thread's CPU time.
fn thread_cpu() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One-thread recording measured in thread CPU time, so a loaded machine does not inflate it.
fn record_cpu(c: &mut Criterion) {
    let values = latencies();
    let now = Instant::now();
    let mut g = c.benchmark_group("record cpu");
    g.throughput(Throughput::Elements(1));
    g.bench_function("damper/1 thread", |b| {
        let h = LatencyHistogram::new(now);
        let mut it = values.iter().cycle();
        b.iter_custom(|iters| {
            let t0 = thread_cpu();
            for _ in 0..iters {
                h.record(Duration::from_nanos(*it.next().unwrap()), black_box(now));
            }
            thread_cpu() - t0
        });
    });
    g.bench_function("hdrhistogram+mutex/1 thread", |b| {
        let h = Mutex::new(hdr());
        let mut it = values.iter().cycle();
        b.iter_custom(|iters| {
            let t0 = thread_cpu();
            for _ in 0..iters {
                h.lock().unwrap().saturating_record(*it.next().unwrap());
            }
            thread_cpu() - t0
        });
    });
    g.finish();
}

fn read(c: &mut Criterion) {
    let values = latencies();
    let now = Instant::now();
    let h = LatencyHistogram::new(now);
    for v in &values {
        h.record(Duration::from_nanos(*v), now);
    }
    let mut peer = hdr();
    for v in &values {
        peer.saturating_record(*v);
    }

    let mut g = c.benchmark_group("read");
    g.bench_function("damper/quantile p99", |b| {
        b.iter(|| h.quantile(black_box(0.99), now))
    });
    g.bench_function("hdrhistogram/value_at_quantile p99", |b| {
        b.iter(|| peer.value_at_quantile(black_box(0.99)))
    });
    let cache = QuantileCache::new(0.99, Duration::from_millis(100), now);
    cache.get(&h, now);
    g.bench_function("damper/QuantileCache::get hit", |b| {
        b.iter(|| cache.get(&h, black_box(now)))
    });
    g.finish();
}

criterion_group!(benches, record, record_cpu, read);
criterion_main!(benches);
