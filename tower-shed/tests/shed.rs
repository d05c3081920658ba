//! Behaviour of the limiter service: permits, rejection, queueing, partitions, adaptation.

use damper_core::deadline::{Deadline, HasDeadline};
use damper_core::error::{DeadlineExceeded, Overloaded, is_local_rejection};
use std::time::Duration;
use tokio::time::{Instant, advance};
use tokio_test::{assert_pending, assert_ready, assert_ready_ok};
use tower_shed::ShedLayer;
use tower_shed::limit::{Aimd, Fixed};
use tower_test::{assert_request_eq, mock};

const MS: Duration = Duration::from_millis(1);

/// A request that can carry a deadline.
#[derive(Debug, Clone, PartialEq)]
struct Req {
    id: u32,
    class: &'static str,
    deadline: Option<Deadline>,
}

impl Req {
    fn new(id: u32) -> Self {
        Self {
            id,
            class: "",
            deadline: None,
        }
    }
    fn class(id: u32, class: &'static str) -> Self {
        Self {
            class,
            ..Self::new(id)
        }
    }
}

impl HasDeadline for Req {
    fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }
    fn set_deadline(&mut self, deadline: Deadline) -> bool {
        self.deadline = Some(deadline);
        true
    }
}

#[tokio::test(start_paused = true)]
async fn permits_return_on_success_error_and_drop() {
    let layer = ShedLayer::new(Fixed::new(3).unwrap());
    let handle = layer.handle();
    let (mut svc, mut mock) = mock::spawn_layer::<&'static str, &'static str, _>(layer);

    let mut futs = Vec::new();
    for req in ["ok", "err", "drop"] {
        assert_ready_ok!(svc.poll_ready());
        futs.push(tokio_test::task::spawn(svc.call(req)));
    }
    assert_eq!(handle.in_flight(), 3);
    let mut drop_fut = futs.pop().unwrap();
    let mut err_fut = futs.pop().unwrap();
    let mut ok_fut = futs.pop().unwrap();

    assert_request_eq!(mock, "ok").send_response("done");
    assert_eq!(assert_ready_ok!(ok_fut.poll()), "done");
    assert_eq!(handle.in_flight(), 2);

    assert_request_eq!(mock, "err").send_error("boom");
    assert!(assert_ready!(err_fut.poll()).is_err());
    assert_eq!(handle.in_flight(), 1);

    let _req = assert_request_eq!(mock, "drop");
    assert_pending!(drop_fut.poll());
    drop(drop_fut);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn rejects_at_the_limit_with_a_local_overload_error() {
    let layer = ShedLayer::new(Fixed::new(1).unwrap());
    let handle = layer.handle();
    let (mut svc, mut mock) = mock::spawn_layer::<&'static str, &'static str, _>(layer);

    assert_ready_ok!(svc.poll_ready());
    let first = svc.call("first");
    // poll_ready stays Ready from the limiter's side at the limit: rejection happens in `call`.
    assert_ready_ok!(svc.poll_ready());
    let err = svc.call("second").await.unwrap_err();
    let overloaded = err.downcast_ref::<Overloaded>().expect("overloaded");
    assert!(overloaded.retry_after().is_some());
    assert!(is_local_rejection(&*err), "retry layers must not retry it");

    // The rejected request never reached the inner service.
    assert_request_eq!(mock, "first").send_response("one");
    assert_eq!(first.await.unwrap(), "one");
    assert!(mock.poll_request().is_pending());
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn poll_ready_reserves_nothing() {
    let layer = ShedLayer::new(Fixed::new(1).unwrap());
    let handle = layer.handle();
    let (mut svc, mut mock) = mock::spawn_layer::<&'static str, &'static str, _>(layer);
    // The inner service's backpressure passes through.
    mock.allow(0);
    assert_pending!(svc.poll_ready());
    mock.allow(1);
    assert!(svc.is_woken());
    // An idle connection polls readiness and never calls: no permit is held.
    assert_ready_ok!(svc.poll_ready());
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn inner_not_ready_errors_pass_through() {
    let (mut svc, mut mock) =
        mock::spawn_layer::<&'static str, &'static str, _>(ShedLayer::new(Fixed::new(1).unwrap()));
    mock.send_error("broken");
    assert!(assert_ready!(svc.poll_ready()).is_err());
}

#[tokio::test(start_paused = true)]
async fn limit_backs_off_on_slow_responses_and_recovers() {
    let aimd = Aimd::builder()
        .initial_limit(10)
        .latency_threshold(50 * MS)
        .backoff(0.5)
        .build()
        .unwrap();
    let layer = ShedLayer::new(aimd);
    let handle = layer.handle();
    let (mut svc, mut mock) = mock::spawn_layer::<Req, &'static str, _>(layer);

    // Ten slow requests: the first completion cuts the limit, the rest of the same RTT do not.
    let mut futs = Vec::new();
    for id in 0..10 {
        assert_ready_ok!(svc.poll_ready());
        futs.push(tokio_test::task::spawn(svc.call(Req::new(id))));
    }
    advance(80 * MS).await;
    for (id, fut) in futs.iter_mut().enumerate() {
        assert_request_eq!(mock, Req::new(id as u32)).send_response("slow");
        assert_ready_ok!(fut.poll());
    }
    assert_eq!(handle.limit(), 5, "cut once per RTT, by the backoff factor");

    // Fast responses with the limit in use grow it back (one step per RTT's worth of samples).
    let mut id = 100;
    for _ in 0..40 {
        let n = handle.limit();
        let mut futs = Vec::new();
        for _ in 0..n {
            assert_ready_ok!(svc.poll_ready());
            futs.push(tokio_test::task::spawn(svc.call(Req::new(id))));
            id += 1;
        }
        advance(MS).await;
        for fut in futs.iter_mut() {
            let (_, respond) = mock.next_request().await.unwrap();
            respond.send_response("fast");
            assert_ready_ok!(fut.poll());
        }
    }
    assert!(handle.limit() >= 10, "recovered to {}", handle.limit());
    assert_eq!(handle.in_flight(), 0);
}

fn queue_layer(limit: usize) -> ShedLayer {
    ShedLayer::builder(Fixed::new(limit).unwrap())
        .queue(8)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn queued_requests_run_fifo_when_a_permit_frees() {
    let layer = queue_layer(1);
    let handle = layer.handle();
    let (mut svc, mut mock) = mock::spawn_layer::<Req, &'static str, _>(layer);

    assert_ready_ok!(svc.poll_ready());
    let mut first = tokio_test::task::spawn(svc.call(Req::new(1)));
    let mut queued = Vec::new();
    for id in 2..=4 {
        assert_ready_ok!(svc.poll_ready());
        let mut f = tokio_test::task::spawn(svc.call(Req::new(id)));
        assert_pending!(f.poll());
        queued.push(f);
    }
    assert_eq!(handle.queued(), 3);
    assert_eq!(handle.in_flight(), 1);

    // Queue not standing (< 100 ms): FIFO, each waiter takes the permit the previous frees.
    let (req, respond) = mock.next_request().await.unwrap();
    assert_eq!(req.id, 1);
    advance(10 * MS).await;
    respond.send_response("ok");
    assert_ready_ok!(first.poll());
    for (i, id) in (2..=4).enumerate() {
        assert!(queued[i].is_woken());
        assert_pending!(queued[i].poll()); // now running in the inner service
        assert_eq!(handle.in_flight(), 1);
        let (req, respond) = mock.next_request().await.unwrap();
        assert_eq!(req.id, id);
        advance(10 * MS).await;
        respond.send_response("ok");
        assert_ready_ok!(queued[i].poll());
    }
    assert_eq!(handle.queued(), 0);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn codel_sheds_after_the_interval_and_full_queue_rejects() {
    let layer = ShedLayer::builder(Fixed::new(1).unwrap())
        .queue(2)
        .build()
        .unwrap();
    let handle = layer.handle();
    let (mut svc, mut mock) = mock::spawn_layer::<Req, &'static str, _>(layer);

    assert_ready_ok!(svc.poll_ready());
    let _running = svc.call(Req::new(1));
    let mut waiting = Vec::new();
    for id in 2..=3 {
        assert_ready_ok!(svc.poll_ready());
        let mut f = tokio_test::task::spawn(svc.call(Req::new(id)));
        assert_pending!(f.poll());
        waiting.push(f);
    }
    // Queue full: rejected at once.
    assert_ready_ok!(svc.poll_ready());
    let err = svc.call(Req::new(4)).await.unwrap_err();
    assert!(err.is::<Overloaded>());

    // Nobody finishes: after the CoDel interval (100 ms) the waiters are shed.
    advance(99 * MS).await;
    assert_pending!(waiting[0].poll());
    advance(2 * MS).await;
    for f in waiting.iter_mut() {
        let err = assert_ready!(f.poll()).unwrap_err();
        assert!(err.is::<Overloaded>(), "{err}");
    }
    assert_eq!(handle.queued(), 0);
    let _ = mock.next_request().await.unwrap();
    assert!(mock.poll_request().is_pending(), "shed requests never ran");
}

#[tokio::test(start_paused = true)]
async fn standing_queue_switches_to_lifo_and_sheds_old_waiters() {
    let layer = ShedLayer::builder(Fixed::new(1).unwrap())
        .queue(16)
        .build()
        .unwrap();
    let (mut svc, mut mock) = mock::spawn_layer::<Req, &'static str, _>(layer);

    // Keep the queue non-empty for more than 100 ms with a steady trickle of completions.
    assert_ready_ok!(svc.poll_ready());
    let mut running = tokio_test::task::spawn(svc.call(Req::new(0)));
    let mut waiters = Vec::new();
    for id in 1..=3 {
        assert_ready_ok!(svc.poll_ready());
        let mut f = tokio_test::task::spawn(svc.call(Req::new(id)));
        assert_pending!(f.poll());
        waiters.push((id, f));
    }
    // 60 ms: finish the running request; FIFO admits the oldest waiter (1).
    advance(60 * MS).await;
    let (req, respond) = mock.next_request().await.unwrap();
    assert_eq!(req.id, 0);
    respond.send_response("ok");
    assert_ready_ok!(running.poll());
    let (first_id, mut first) = waiters.remove(0);
    assert_eq!(first_id, 1);
    assert_pending!(first.poll());
    let (req, respond) = mock.next_request().await.unwrap();
    assert_eq!(req.id, 1);

    // 110 ms: the queue has not been empty for over 100 ms: it stands. Add a fresh waiter.
    advance(50 * MS).await;
    assert_ready_ok!(svc.poll_ready());
    let mut fresh = tokio_test::task::spawn(svc.call(Req::new(99)));
    assert_pending!(fresh.poll());
    advance(MS).await;
    respond.send_response("ok");
    assert_ready_ok!(first.poll());

    // Waiters 2 and 3 waited ~111 ms > 5 ms target: shed. The fresh one (1 ms) runs: LIFO.
    for (_, f) in waiters.iter_mut() {
        let err = assert_ready!(f.poll()).unwrap_err();
        assert!(err.is::<Overloaded>());
    }
    assert_pending!(fresh.poll());
    let (req, respond) = mock.next_request().await.unwrap();
    assert_eq!(req.id, 99);
    respond.send_response("ok");
    assert_ready_ok!(fresh.poll());
}

#[tokio::test(start_paused = true)]
async fn lifo_order_while_standing() {
    let layer = ShedLayer::builder(Fixed::new(1).unwrap())
        .queue(16)
        .codel_target(50 * MS)
        .codel_interval(100 * MS)
        .build()
        .unwrap();
    let (mut svc, mut mock) = mock::spawn_layer::<Req, &'static str, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let mut running = tokio_test::task::spawn(svc.call(Req::new(0)));
    // Keep one waiter around from t=0 so the queue stands after 100 ms.
    assert_ready_ok!(svc.poll_ready());
    let mut old = tokio_test::task::spawn(svc.call(Req::new(1)));
    assert_pending!(old.poll());
    advance(101 * MS).await;
    // The old one is shed at the next drain; two fresh ones arrive 10 ms apart.
    assert_ready_ok!(svc.poll_ready());
    let mut a = tokio_test::task::spawn(svc.call(Req::new(2)));
    assert_pending!(a.poll());
    advance(10 * MS).await;
    assert_ready_ok!(svc.poll_ready());
    let mut b = tokio_test::task::spawn(svc.call(Req::new(3)));
    assert_pending!(b.poll());
    let (_, respond) = mock.next_request().await.unwrap();
    respond.send_response("ok");
    assert_ready_ok!(running.poll());
    // Newest first.
    assert_pending!(b.poll());
    let (req, _respond) = mock.next_request().await.unwrap();
    assert_eq!(req.id, 3);
    assert_pending!(a.poll());
    assert!(assert_ready!(old.poll()).unwrap_err().is::<Overloaded>());
}

#[tokio::test(start_paused = true)]
async fn queued_request_past_its_deadline_is_dropped_before_work_starts() {
    let layer = queue_layer(1);
    let handle = layer.handle();
    let (mut svc, mut mock) = mock::spawn_layer::<Req, &'static str, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let mut running = tokio_test::task::spawn(svc.call(Req::new(1)));

    let mut late = Req::new(2);
    late.set_deadline(Deadline::after(Instant::now(), 20 * MS));
    assert_ready_ok!(svc.poll_ready());
    let mut late = tokio_test::task::spawn(svc.call(late));
    assert_pending!(late.poll());

    // The deadline passes while waiting: the request fails without reaching the service.
    advance(21 * MS).await;
    let err = assert_ready!(late.poll()).unwrap_err();
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    assert_eq!(handle.queued(), 0);

    // Already expired on arrival at a full limiter: fails at once.
    let mut expired = Req::new(3);
    expired.set_deadline(Deadline::at(Instant::now()));
    assert_ready_ok!(svc.poll_ready());
    assert!(
        svc.call(expired)
            .await
            .unwrap_err()
            .is::<DeadlineExceeded>()
    );

    let (req, respond) = mock.next_request().await.unwrap();
    assert_eq!(req.id, 1);
    respond.send_response("ok");
    assert_ready_ok!(running.poll());
    assert!(mock.poll_request().is_pending());
}

#[tokio::test(start_paused = true)]
async fn dropped_waiter_leaves_the_queue_and_frees_nothing_twice() {
    let layer = queue_layer(1);
    let handle = layer.handle();
    let (mut svc, mut mock) = mock::spawn_layer::<Req, &'static str, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let mut running = tokio_test::task::spawn(svc.call(Req::new(1)));
    assert_ready_ok!(svc.poll_ready());
    let mut waiter = tokio_test::task::spawn(svc.call(Req::new(2)));
    assert_pending!(waiter.poll());
    drop(waiter);
    // The permit freed by the running request is not lost to the vanished waiter.
    let (_, respond) = mock.next_request().await.unwrap();
    respond.send_response("ok");
    assert_ready_ok!(running.poll());
    assert_eq!(handle.in_flight(), 0);
    assert_eq!(handle.queued(), 0);
    assert_ready_ok!(svc.poll_ready());
    let mut next = tokio_test::task::spawn(svc.call(Req::new(3)));
    assert_pending!(next.poll());
    assert_eq!(handle.in_flight(), 1);
}

fn partitioned(limit: usize) -> tower_shed::ShedLayer<fn(&Req) -> &'static str> {
    ShedLayer::builder(Fixed::new(limit).unwrap())
        .partition("critical", 0.8)
        .partition("best_effort", 0.2)
        .partition_with((|r: &Req| r.class) as fn(&Req) -> &'static str)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn best_effort_borrows_idle_capacity_but_critical_keeps_its_share() {
    let layer = partitioned(10);
    let handle = layer.handle();
    let (mut svc, _mock) = mock::spawn_layer::<Req, &'static str, _>(layer);
    let mut call = |req: Req| {
        assert_ready_ok!(svc.poll_ready());
        tokio_test::task::spawn(svc.call(req))
    };

    // Alone, best effort may use the whole limit.
    let mut be: Vec<_> = (0..10)
        .map(|i| call(Req::class(i, "best_effort")))
        .collect();
    assert_eq!(handle.partition_in_flight("best_effort"), Some(10));
    let mut extra = call(Req::class(10, "best_effort"));
    assert!(assert_ready!(extra.poll()).unwrap_err().is::<Overloaded>());

    // Critical arrives at a full limiter: turned away once, which claims its share.
    let mut c = call(Req::class(100, "critical"));
    assert!(assert_ready!(c.poll()).unwrap_err().is::<Overloaded>());

    // As best effort drains, it may not take the freed permits back: they go to critical.
    for _ in 0..8 {
        drop(be.pop());
        let mut again = call(Req::class(11, "best_effort"));
        assert!(assert_ready!(again.poll()).unwrap_err().is::<Overloaded>());
    }
    let crit: Vec<_> = (0..8)
        .map(|i| call(Req::class(200 + i, "critical")))
        .collect();
    assert_eq!(handle.partition_in_flight("critical"), Some(8));
    assert_eq!(handle.partition_in_flight("best_effort"), Some(2));
    assert_eq!(handle.in_flight(), 10);
    drop(crit);
    drop(be);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn best_effort_keeps_its_guarantee_under_critical_flood() {
    let layer = partitioned(10);
    let handle = layer.handle();
    let (mut svc, _mock) = mock::spawn_layer::<Req, &'static str, _>(layer);
    let mut call = |req: Req| {
        assert_ready_ok!(svc.poll_ready());
        tokio_test::task::spawn(svc.call(req))
    };
    // Best effort holds one request; critical floods.
    let _be = call(Req::class(0, "best_effort"));
    let mut crit = Vec::new();
    for i in 0..20 {
        let mut f = call(Req::class(i, "critical"));
        if f.poll().is_pending() {
            crit.push(f);
        }
    }
    // Critical borrows everything except best effort's unused guarantee (2 − 1 = 1).
    assert_eq!(crit.len(), 8);
    let _be2 = call(Req::class(1, "best_effort"));
    assert_eq!(handle.partition_in_flight("best_effort"), Some(2));
    // Unknown classes fall into the last partition (best effort), which is now full.
    let mut unknown = call(Req::class(2, "mystery"));
    assert!(
        assert_ready!(unknown.poll())
            .unwrap_err()
            .is::<Overloaded>()
    );
}

#[test]
fn invalid_builder_settings_name_the_field() {
    let l = || ShedLayer::builder(Fixed::new(1).unwrap());
    let field = |r: Result<ShedLayer, tower_shed::error::ConfigError>| r.unwrap_err().field();
    assert_eq!(field(l().sample_every(3).build()), "sample_every");
    assert_eq!(field(l().queue(0).build()), "queue");
    assert_eq!(
        field(l().codel_target(Duration::ZERO).build()),
        "codel_target"
    );
    assert_eq!(
        field(l().codel_target(200 * MS).codel_interval(100 * MS).build()),
        "codel_interval"
    );
    assert_eq!(
        field(l().partition("a", 0.8).partition("b", 0.3).build()),
        "partition"
    );
    assert_eq!(
        field(l().partition("a", 0.5).partition("a", 0.5).build()),
        "partition"
    );
    assert_eq!(field(l().retry_after(MS * 2, MS).build()), "retry_after");
    // Upper bounds (regressions: Duration::MAX was accepted, then overflowed an instant when a
    // request was queued or a partition claimed its share).
    const DAY: Duration = Duration::from_secs(86_400);
    const NS: Duration = Duration::from_nanos(1);
    assert_eq!(
        field(l().codel_target(DAY + NS).codel_interval(DAY + NS).build()),
        "codel_target"
    );
    assert_eq!(
        field(
            l().codel_target(Duration::MAX)
                .codel_interval(Duration::MAX)
                .build()
        ),
        "codel_target"
    );
    assert_eq!(
        field(l().codel_interval(DAY + NS).build()),
        "codel_interval"
    );
    assert_eq!(
        field(l().codel_interval(Duration::MAX).build()),
        "codel_interval"
    );
    assert_eq!(field(l().claim_ttl(DAY + NS).build()), "claim_ttl");
    assert_eq!(field(l().claim_ttl(Duration::MAX).build()), "claim_ttl");
    assert!(
        l().codel_target(DAY)
            .codel_interval(DAY)
            .claim_ttl(DAY)
            .build()
            .is_ok()
    );
    assert!(l().claim_ttl(Duration::ZERO).build().is_ok());
}

/// A fixed limit that counts the samples it is fed.
#[derive(Debug)]
struct Counting(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl tower_shed::limit::Limit for Counting {
    fn limit(&self) -> usize {
        1
    }
    fn update(&mut self, _: tower_shed::limit::Sample, _: Instant) -> usize {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        1
    }
}

#[tokio::test(start_paused = true)]
async fn one_admitted_request_in_n_is_measured_whatever_is_rejected_between() {
    // Regression: rejected attempts used to advance the sampling counter, so under a periodic
    // load (admit, reject, admit, reject …, with one in two measured) every admitted request
    // was measured, and with the phase shifted none would be: a limit pinned low for a probe
    // then never heard from its requests again.
    let fed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let layer = ShedLayer::builder(Counting(fed.clone()))
        .sample_every(2)
        .build()
        .unwrap();
    let (mut svc, mut mock) = mock::spawn_layer::<&'static str, &'static str, _>(layer);
    for _ in 0..8 {
        assert_ready_ok!(svc.poll_ready());
        let admitted = svc.call("admitted");
        assert_ready_ok!(svc.poll_ready());
        assert!(svc.call("rejected").await.is_err());
        assert_request_eq!(mock, "admitted").send_response("ok");
        admitted.await.unwrap();
    }
    assert_eq!(fed.load(std::sync::atomic::Ordering::Relaxed), 4);
}

/// A fixed limit that counts the samples it is fed and the requests they stand for.
#[derive(Debug, Clone, Default)]
struct Tally {
    samples: std::sync::Arc<std::sync::atomic::AtomicU64>,
    weight: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Tally {
    fn read(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.samples.load(Relaxed), self.weight.load(Relaxed))
    }
}

impl tower_shed::limit::Limit for Tally {
    fn limit(&self) -> usize {
        1_000
    }
    fn update(&mut self, s: tower_shed::limit::Sample, _: Instant) -> usize {
        use std::sync::atomic::Ordering::Relaxed;
        self.samples.fetch_add(1, Relaxed);
        self.weight.fetch_add(u64::from(s.weight), Relaxed);
        1_000
    }
}

#[tokio::test(start_paused = true)]
async fn sampling_thins_out_above_the_rate_cap_and_comes_back_below_it() {
    use tower::{Layer, Service, ServiceExt};
    let tally = Tally::default();
    let layer = ShedLayer::builder(tally.clone())
        .sample_every(1)
        .max_samples_per_sec(1_000)
        .build()
        .unwrap();
    let mut svc = layer.layer(tower::service_fn(|_: u32| async {
        Ok::<_, damper_core::BoxError>(())
    }));

    // 20,000 requests a second for 3 s: over the last second at most 1,000 are measured,
    // and together they stand for about the 20,000 sent.
    let mut mark = (0, 0);
    for ms in 0..3_000 {
        if ms == 2_000 {
            mark = tally.read();
        }
        for i in 0..20 {
            svc.ready().await.unwrap().call(i).await.unwrap();
        }
        advance(Duration::from_millis(1)).await;
    }
    let now = tally.read();
    let (samples, weight) = (now.0 - mark.0, now.1 - mark.1);
    assert!((250..=1_000).contains(&samples), "{samples} samples");
    assert!(
        (15_000..=25_000).contains(&weight),
        "{samples} samples stood for {weight} requests"
    );

    // 200 a second, under the cap: within a second every request is measured again.
    for _ in 0..200 {
        svc.ready().await.unwrap().call(0).await.unwrap();
        advance(Duration::from_millis(5)).await;
    }
    let mark = tally.read();
    for _ in 0..200 {
        svc.ready().await.unwrap().call(0).await.unwrap();
        advance(Duration::from_millis(5)).await;
    }
    let now = tally.read();
    assert_eq!((now.0 - mark.0, now.1 - mark.1), (200, 200));
}
