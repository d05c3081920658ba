//! The facade's stacks, end to end on in-process services, in paused time.

use damper::config::{ClientConfig, ServerConfig};
use damper::core::error::{CircuitOpen, DeadlineExceeded};
use damper::{BoxError, ClientStack, ServerStack};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tower::{Service, ServiceBuilder, ServiceExt};

/// A backend that counts calls and fails while `failing` is set.
#[derive(Clone, Default)]
struct Backend {
    calls: Arc<AtomicU64>,
    failing: Arc<std::sync::atomic::AtomicBool>,
}

impl Backend {
    fn service(&self) -> tower::util::BoxCloneService<u32, u32, BoxError> {
        let calls = self.calls.clone();
        let failing = self.failing.clone();
        tower::util::BoxCloneService::new(tower::service_fn(move |n: u32| {
            calls.fetch_add(1, Ordering::Relaxed);
            let fail = failing.load(Ordering::Relaxed);
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if fail {
                    Err::<u32, BoxError>("backend down".into())
                } else {
                    Ok(n)
                }
            }
        }))
    }
}

#[tokio::test(start_paused = true)]
async fn an_outage_costs_little_extra_load_and_trips_the_breaker() {
    let backend = Backend::default();
    backend.failing.store(true, Ordering::Relaxed);
    let layer = ClientStack::new().name("outage").seed(1).build().unwrap();
    let handles = layer.handles().clone();
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service(backend.service());

    let requests = 2_000u64;
    let mut failures = 0;
    for i in 0..requests {
        let res = svc.ready().await.unwrap().call(i as u32).await;
        if res.is_err() {
            failures += 1;
        }
        tokio::time::advance(Duration::from_millis(1)).await;
    }
    assert_eq!(failures, requests, "nothing can succeed during an outage");
    let attempts = backend.calls.load(Ordering::Relaxed);
    // The breaker trips after `min_requests` calls and lets only probes through; the budget
    // pays for at most a few floor retries. Far below the naive 3×.
    assert!(
        attempts < requests / 5,
        "{attempts} backend attempts for {requests} requests"
    );
    assert_eq!(
        handles.breaker().unwrap().state(),
        damper::breaker::State::Open,
        "the breaker should be open"
    );
}

/// Calls `svc` at 10 requests a second for `secs` seconds; returns the successes.
async fn at_ten_rps(svc: &mut tower::util::BoxCloneService<u32, u32, BoxError>, secs: u32) -> u64 {
    let mut ok = 0;
    for i in 0..secs * 10 {
        if svc.ready().await.unwrap().call(i).await.is_ok() {
            ok += 1;
        }
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    ok
}

#[tokio::test(start_paused = true)]
async fn a_slow_client_keeps_the_successes_of_a_mostly_failing_dependency() {
    // At 10 requests a second, six times: 20 s healthy, then 20 s in which 90% of calls fail at
    // random. Right after each onset the window is still mostly healthy, so a short run of
    // failures looks like an outage: a run of 20 comes within seconds about half the time, and
    // a breaker that trips on it refuses the one call in ten that would succeed. The default
    // run of 100 is evidence of near-total failure, so it stays closed and the client keeps
    // its successes.
    let calls = Arc::new(AtomicU64::new(0));
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (c, f) = (calls.clone(), failing.clone());
    let backend = tower::service_fn(move |n: u32| {
        let k = c.fetch_add(1, Ordering::Relaxed);
        // A fixed pseudo-random 10% of call numbers succeed (SplitMix64's output mix).
        let mut z = k.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let ok = !f.load(Ordering::Relaxed) || (z ^ (z >> 31)) % 10 == 0;
        async move {
            if ok {
                Ok(n)
            } else {
                Err::<u32, BoxError>("flaky".into())
            }
        }
    });
    let layer = ClientStack::new().retries(false).seed(3).build().unwrap();
    let handles = layer.handles().clone();
    let mut svc =
        tower::util::BoxCloneService::new(ServiceBuilder::new().layer(layer).service(backend));
    let mut ok_failing = 0;
    for _ in 0..6 {
        failing.store(false, Ordering::Relaxed);
        at_ten_rps(&mut svc, 20).await;
        failing.store(true, Ordering::Relaxed);
        ok_failing += at_ten_rps(&mut svc, 20).await;
    }
    let breaker = handles.breaker().unwrap();
    assert_eq!(breaker.transitions(), 0, "the breaker tripped");
    assert_eq!(
        calls.load(Ordering::Relaxed),
        2400,
        "every call reached the dependency"
    );
    assert!(
        (80..=160).contains(&ok_failing),
        "{ok_failing} successes of 1,200"
    );

    // A dependency that is down still trips it at this rate, within the 100 calls.
    let backend = Backend::default();
    backend.failing.store(true, Ordering::Relaxed);
    let layer = ClientStack::new().retries(false).seed(3).build().unwrap();
    let handles = layer.handles().clone();
    let mut svc = tower::util::BoxCloneService::new(
        ServiceBuilder::new()
            .layer(layer)
            .service(backend.service()),
    );
    at_ten_rps(&mut svc, 30).await;
    assert!(
        handles.breaker().unwrap().transitions() >= 1,
        "never tripped"
    );
    let attempts = backend.calls.load(Ordering::Relaxed);
    assert!(
        attempts < 200,
        "{attempts} of 300 calls reached a dependency that is down"
    );
}

/// `requests` calls, `gap` apart, through the client stack (no breaker, no hedging) over a
/// backend whose every twentieth attempt fails: 5% of the traffic, under the budget's 10%.
/// Returns the successes and the attempts the backend saw.
async fn every_twentieth_attempt_fails(seed: u64, requests: u32, gap: Duration) -> (u32, u64) {
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let backend = tower::service_fn(move |n: u32| {
        let k = c.fetch_add(1, Ordering::Relaxed);
        async move {
            if k % 20 == 19 {
                Err::<u32, BoxError>("flaky".into())
            } else {
                Ok(n)
            }
        }
    });
    let layer = ClientStack::new()
        .breaker(false)
        .hedging(false)
        .seed(seed)
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new().layer(layer).service(backend);
    let mut ok = 0;
    for i in 0..requests {
        if svc.ready().await.unwrap().call(i).await.is_ok() {
            ok += 1;
        }
        tokio::time::advance(gap).await;
    }
    (ok, calls.load(Ordering::Relaxed))
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_within_the_budget() {
    // 100 rps: the budget's bank (what the last half second of successes earned) holds about
    // five tokens. (At 10 rps it holds half of one, lent as a whole one every other time:
    // `a_ten_rps_client_retries_its_odd_failures_in_proportion_to_its_bank`.)
    let (ok, calls) = every_twentieth_attempt_fails(7, 3_000, Duration::from_millis(10)).await;
    // Without retries 150 would fail; ten successes earn each retry, so every one is retried
    // (and the retries that fail in turn as well).
    assert_eq!(ok, 3_000, "{ok} of 3,000 succeeded");
    assert_eq!(calls, 3_000 + 157);
}

#[tokio::test(start_paused = true)]
async fn a_ten_rps_client_retries_its_odd_failures_in_proportion_to_its_bank() {
    // 10 rps for 100 s: 50 odd failures. The bank holds about ratio x 9.5 rps x 0.5 s = 0.475
    // of a token when one comes, lent as a whole token with that probability: many are
    // retried, not all (a fleet of such clients must not spend a whole token each in the
    // first second of an outage).
    let mut retried = 0;
    for seed in 0..4 {
        let (_, calls) =
            every_twentieth_attempt_fails(seed, 1_000, Duration::from_millis(100)).await;
        retried += calls - 1_000;
    }
    // About 4 x 50 x 0.475 = 95 in expectation (a retry can fail too and be asked again).
    assert!(
        (50..=150).contains(&retried),
        "{retried} of ~200 failures retried"
    );
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_is_a_local_rejection_and_is_not_retried() {
    let backend = Backend::default();
    let layer = ClientStack::new().hedging(false).build().unwrap();
    layer.handles().breaker().unwrap().force_open();
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service(backend.service());
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(
        damper::core::error::find::<CircuitOpen>(&*err).is_some(),
        "{err}"
    );
    assert_eq!(backend.calls.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_all_attempts() {
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let backend = tower::service_fn(move |_n: u32| {
        c.fetch_add(1, Ordering::Relaxed);
        async move {
            std::future::pending::<()>().await;
            Ok::<u32, BoxError>(0)
        }
    });
    let layer = ClientStack::new()
        .deadline(Duration::from_millis(300))
        .hedging(false)
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new().layer(layer).service(backend);
    let start = tokio::time::Instant::now();
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    let took = start.elapsed();
    assert!(
        damper::core::error::find::<DeadlineExceeded>(&*err).is_some(),
        "expected DeadlineExceeded, got {err}"
    );
    assert!(took <= Duration::from_millis(301), "took {took:?}");
}

#[tokio::test(start_paused = true)]
async fn services_built_from_one_layer_share_one_breaker() {
    let backend = Backend::default();
    backend.failing.store(true, Ordering::Relaxed);
    // Trip on the first run of 20, and let nothing trickle through while open.
    let layer = ClientStack::new()
        .retries(false)
        .hedging(false)
        .configure(|c| {
            c.breaker.patience = Some(Duration::ZERO);
            c.breaker.trickle = Some(0.0);
        })
        .build()
        .unwrap();
    let mut a = ServiceBuilder::new()
        .layer(layer.clone())
        .service(backend.service());
    let mut b = ServiceBuilder::new()
        .layer(layer.clone())
        .service(backend.service());
    for i in 0..50 {
        let _ = a.ready().await.unwrap().call(i).await;
    }
    let before = backend.calls.load(Ordering::Relaxed);
    let err = b.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(
        damper::core::error::find::<CircuitOpen>(&*err).is_some(),
        "{err}"
    );
    assert_eq!(backend.calls.load(Ordering::Relaxed), before);
}

#[test]
fn invalid_client_values_name_the_field() {
    let cases: Vec<(&str, &str)> = vec![
        ("[budget]\nratio = 2.0", "client.budget.ratio"),
        ("[budget]\nmax_tokens = 0.5", "client.budget.max_tokens"),
        ("[retry]\nmax_attempts = 0", "client.retry.max_attempts"),
        (
            "[retry]\nbackoff_min = \"2s\"\nbackoff_max = \"1s\"",
            "client.retry.backoff_min",
        ),
        (
            "[retry]\nbackoff_multiplier = 0.5",
            "client.retry.backoff_multiplier",
        ),
        (
            "[hedge]\nmax_extra_load = 1.5",
            "client.hedge.max_extra_load",
        ),
        ("[hedge]\nmax_hedges = 0", "client.hedge.max_hedges"),
        (
            "[breaker]\nfailure_rate = 1.5",
            "client.breaker.failure_rate",
        ),
        ("[breaker]\nprobes = 0", "client.breaker.probes"),
        ("[timeout]\nquantile = 1.5", "client.timeout.quantile"),
        ("[timeout]\nmultiplier = 0.5", "client.timeout.multiplier"),
        (
            "[limit]\nenabled = true\nalgorithm = \"fixed\"",
            "client.limit.max",
        ),
        (
            "[limit]\nenabled = true\nmin = 10\nmax = 5",
            "client.limit.max",
        ),
    ];
    for (toml_text, path) in cases {
        let config: ClientConfig = toml::from_str(toml_text).expect(toml_text);
        let err = ClientStack::new().config(config).build().unwrap_err();
        assert_eq!(err.path(), path, "{toml_text}: {err}");
        assert!(!err.reason().is_empty());
    }
}

#[test]
fn invalid_server_values_name_the_field() {
    let cases: Vec<(&str, &str)> = vec![
        (
            "[limit]\nalgorithm = \"fixed\"\nmax = 0",
            "server.limit.max",
        ),
        // Found by fuzzing: a queue this long used to be allocated up front and abort.
        ("[limit]\nqueue = 5555555555510", "server.limit.queue"),
        ("[deadline]\ndefault = \"0s\"", "server.deadline.default"),
        ("[deadline]\nmax = \"0s\"", "server.deadline.max"),
        (
            "[[partitions]]\nname = \"critical\"\nshare = 1.5",
            "server.partitions[0].share",
        ),
        (
            "[[partitions]]\nname = \"a\"\nshare = 0.8\n[[partitions]]\nname = \"b\"\nshare = 0.5",
            "server.partitions",
        ),
    ];
    for (toml_text, path) in cases {
        let config: ServerConfig = toml::from_str(toml_text).expect(toml_text);
        let err = ServerStack::new().config(config).build().unwrap_err();
        assert_eq!(err.path(), path, "{toml_text}: {err}");
    }
}

#[test]
fn configs_round_trip_and_reject_unknown_fields() {
    let text = r#"
        name = "payments"
        deadline = "1500ms"
        [budget]
        ratio = 0.2
        ttl = "10s"
        [retry]
        max_attempts = 2
        jitter = "decorrelated"
        [breaker]
        mode = "gate"
        open_min = "2s"
        [limit]
        enabled = true
        algorithm = "vegas"
        max = 64
    "#;
    let config: ClientConfig = toml::from_str(text).unwrap();
    assert_eq!(config.deadline, Some(Duration::from_millis(1500)));
    assert_eq!(config.budget.ttl, Some(Duration::from_secs(10)));
    let again: ClientConfig = toml::from_str(&toml::to_string(&config).unwrap()).unwrap();
    assert_eq!(config, again);
    let json: ClientConfig =
        serde_json::from_str(&serde_json::to_string(&config).unwrap()).unwrap();
    assert_eq!(config, json);
    ClientStack::new().config(config).build().unwrap();

    let err = toml::from_str::<ClientConfig>("[retry]\nmax_atempts = 2").unwrap_err();
    assert!(err.to_string().contains("max_atempts"), "{err}");
    let err = toml::from_str::<ClientConfig>("deadline = \"soon\"").unwrap_err();
    assert!(err.to_string().contains("duration"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn the_http_server_stack_sheds_with_503_retry_after_and_a_millisecond_hint() {
    let mut config = ServerConfig::default();
    config.limit.algorithm = Some(damper::config::LimitAlgorithm::Fixed);
    config.limit.max = Some(1);
    let layer = ServerStack::http().config(config).build().unwrap();
    let handle = layer.shed_handle().unwrap().clone();
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|_req: http::Request<()>| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
        });
    let first = svc.ready().await.unwrap().call(http::Request::new(()));
    let first = tokio::spawn(first);
    tokio::task::yield_now().await;
    assert_eq!(handle.in_flight(), 1);
    let second = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap();
    assert_eq!(second.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert!(second.headers().contains_key(http::header::RETRY_AFTER));
    // The same hint to the millisecond, which a damper client reads before `Retry-After`.
    let ms: u64 = second.headers()["grpc-retry-pushback-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ms > 0, "{ms}");
    let outcome = damper::core::classify::HttpClassifier::new()
        .classify_parts(second.status(), second.headers());
    let hint = match outcome {
        damper::core::classify::Outcome::Failure(f) => f.pushback,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        hint,
        Some(damper::core::pushback::Pushback::After(
            Duration::from_millis(ms)
        ))
    );
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), http::StatusCode::OK);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_server_queue_sees_the_callers_deadline() {
    // One request at a time, the rest queued: a caller's grpc-timeout must bound its wait in
    // the queue, not only its time in the handler.
    let mut config = ServerConfig::default();
    config.limit.algorithm = Some(damper::config::LimitAlgorithm::Fixed);
    config.limit.max = Some(1);
    config.limit.queue = Some(4);
    let layer = ServerStack::http().config(config).build().unwrap();
    let handle = layer.shed_handle().unwrap().clone();
    let started = Arc::new(AtomicU64::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    let (s, r) = (started.clone(), release.clone());
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service_fn(move |_req: http::Request<()>| {
            s.fetch_add(1, Ordering::Relaxed);
            let r = r.clone();
            async move {
                r.notified().await;
                Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
            }
        });
    let hold = tokio::spawn(svc.ready().await.unwrap().call(http::Request::new(())));
    tokio::task::yield_now().await;
    assert_eq!(handle.in_flight(), 1);

    let req = http::Request::builder()
        .header("grpc-timeout", "50m")
        .body(())
        .unwrap();
    let queued = svc.ready().await.unwrap().call(req);
    let start = tokio::time::Instant::now();
    let res = queued.await.unwrap();
    assert_eq!(res.status(), http::StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(50),
        "at the caller's deadline"
    );
    assert_eq!(
        started.load(Ordering::Relaxed),
        1,
        "the expired request never started"
    );
    assert_eq!(handle.queued(), 0, "and left the queue");

    release.notify_one();
    assert_eq!(hold.await.unwrap().unwrap().status(), http::StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn the_http_server_stack_drops_requests_whose_caller_gave_up() {
    let layer = ServerStack::http().build().unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service_fn(move |_req: http::Request<()>| {
            c.fetch_add(1, Ordering::Relaxed);
            async { Ok::<_, std::convert::Infallible>(http::Response::new(String::new())) }
        });
    // A caller that allows zero time has already given up.
    let req = http::Request::builder()
        .header("grpc-timeout", "0m")
        .body(())
        .unwrap();
    // The deadline is resolved outside the shedder and the HTTP mapping answers its expiry.
    let res = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(res.status(), http::StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(calls.load(Ordering::Relaxed), 0);
    // A caller with time left is served.
    let req = http::Request::builder()
        .header("grpc-timeout", "5S")
        .body(())
        .unwrap();
    let res = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(res.status(), http::StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn the_http_client_preset_retries_only_idempotent_requests() {
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let backend = tower::service_fn(move |_req: http::Request<String>| {
        c.fetch_add(1, Ordering::Relaxed);
        async {
            Ok::<_, BoxError>(
                http::Response::builder()
                    .status(502)
                    .body(String::new())
                    .unwrap(),
            )
        }
    });
    let layer = ClientStack::http().breaker(false).seed(3).build().unwrap();
    let mut svc = ServiceBuilder::new().layer(layer).service(backend);
    let get = http::Request::get("/").body(String::new()).unwrap();
    let res = svc.ready().await.unwrap().call(get).await.unwrap();
    assert_eq!(res.status(), 502);
    let after_get = calls.load(Ordering::Relaxed);
    assert!(after_get >= 2, "a GET is retried ({after_get} attempts)");
    let post = http::Request::post("/").body(String::new()).unwrap();
    let res = svc.ready().await.unwrap().call(post).await.unwrap();
    assert_eq!(res.status(), 502);
    assert_eq!(
        calls.load(Ordering::Relaxed),
        after_get + 1,
        "a POST is sent once"
    );
}

/// The `grpc-timeout` of each attempt a backend saw, in microseconds (0: none), up to four.
#[derive(Default)]
struct Seen {
    count: AtomicU64,
    micros: [AtomicU64; 4],
}

impl Seen {
    fn all(&self) -> Vec<u64> {
        let n = self.count.load(Ordering::Relaxed).min(4) as usize;
        self.micros[..n]
            .iter()
            .map(|m| m.load(Ordering::Relaxed))
            .collect()
    }
}

type HttpBackend =
    tower::util::BoxCloneService<http::Request<String>, http::Response<String>, BoxError>;

/// A backend that records the `grpc-timeout` each attempt carries and answers `status` after
/// `latency`.
fn recording_backend(latency: Duration, status: u16) -> (Arc<Seen>, HttpBackend) {
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    let backend = tower::service_fn(move |req: http::Request<String>| {
        let micros = req.headers().get("grpc-timeout").map_or(0, |v| {
            let v = v.to_str().unwrap();
            v.strip_suffix('u').unwrap().parse().unwrap()
        });
        let i = s.count.fetch_add(1, Ordering::Relaxed) as usize;
        if let Some(slot) = s.micros.get(i) {
            slot.store(micros, Ordering::Relaxed);
        }
        async move {
            tokio::time::sleep(latency).await;
            Ok::<_, BoxError>(
                http::Response::builder()
                    .status(status)
                    .body(String::new())
                    .unwrap(),
            )
        }
    });
    (seen, tower::util::BoxCloneService::new(backend))
}

#[tokio::test(start_paused = true)]
async fn every_attempt_tells_the_server_the_time_left_when_it_is_sent() {
    // The first attempt is answered 503 after 600 ms: its retry must say about 1.4 s is left
    // of the 2 s deadline, not 2 s again.
    let (seen, backend) = recording_backend(Duration::from_millis(600), 503);
    let layer = ClientStack::http()
        .breaker(false)
        .hedging(false)
        .deadline(Duration::from_secs(2))
        .propagate_deadline(true)
        .seed(5)
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new().layer(layer).service(backend);
    let get = http::Request::get("/").body(String::new()).unwrap();
    let _ = svc.ready().await.unwrap().call(get).await;
    let seen = seen.all();
    assert!(seen.len() >= 2, "{seen:?}");
    assert_eq!(seen[0], 2_000_000, "{seen:?}");
    assert!(
        (1_000_000..=1_400_000).contains(&seen[1]),
        "the retry says {} us are left: {seen:?}",
        seen[1]
    );
}

#[tokio::test(start_paused = true)]
async fn a_callers_shorter_grpc_timeout_wins_over_the_stacks_deadline() {
    // The caller allows 100 ms (as tonic's `Request::set_timeout` writes it); the stack's
    // deadline is 2 s. The backend answers after 300 ms: too late for the caller.
    let (seen, backend) = recording_backend(Duration::from_millis(300), 200);
    let layer = ClientStack::http()
        .breaker(false)
        .hedging(false)
        .retries(false)
        .deadline(Duration::from_secs(2))
        .propagate_deadline(true)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new().layer(layer).service(backend);
    let get = http::Request::get("/")
        .header("grpc-timeout", "100m")
        .body(String::new())
        .unwrap();
    ends_at_the_callers_100ms(svc, get, &seen).await;
}

/// Sends `req` (carrying `grpc-timeout: 100m`) to a backend that answers after 300 ms: the
/// call must fail with `DeadlineExceeded` at 100 ms, the backend told 100 ms once.
async fn ends_at_the_callers_100ms<S>(mut svc: S, req: http::Request<String>, seen: &Seen)
where
    S: Service<http::Request<String>, Error = BoxError>,
    S::Response: std::fmt::Debug,
{
    let start = tokio::time::Instant::now();
    let err = svc.ready().await.unwrap().call(req).await.unwrap_err();
    assert!(
        damper::core::error::find::<DeadlineExceeded>(&*err).is_some(),
        "{err}"
    );
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(seen.all(), [100_000]);
}

#[tokio::test(start_paused = true)]
async fn the_http_preset_enforces_its_deadline_without_sending_it() {
    // A third-party API gets no gRPC header unless asked; the deadline still holds.
    let (seen, backend) = recording_backend(Duration::from_millis(300), 200);
    let layer = ClientStack::http()
        .breaker(false)
        .hedging(false)
        .retries(false)
        .deadline(Duration::from_millis(100))
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new().layer(layer).service(backend);
    let get = http::Request::get("/").body(String::new()).unwrap();
    let err = svc.ready().await.unwrap().call(get).await.unwrap_err();
    assert!(
        damper::core::error::find::<DeadlineExceeded>(&*err).is_some(),
        "{err}"
    );
    assert_eq!(seen.all(), [0], "no grpc-timeout was sent");
}

#[tokio::test(start_paused = true)]
async fn propagation_is_a_config_switch() {
    let config: ClientConfig =
        toml::from_str("deadline = \"2s\"\npropagate_deadline = true").unwrap();
    let (seen, backend) = recording_backend(Duration::from_millis(1), 200);
    let layer = ClientStack::http().config(config).build().unwrap();
    let svc = ServiceBuilder::new().layer(layer).service(backend);
    let get = http::Request::get("/").body(String::new()).unwrap();
    svc.oneshot(get).await.unwrap();
    assert_eq!(seen.all(), [2_000_000]);
}

#[cfg(feature = "grpc")]
#[tokio::test(start_paused = true)]
async fn the_grpc_preset_honours_a_callers_grpc_timeout_without_a_deadline_of_its_own() {
    // tonic's `Request::set_timeout(100 ms)`, and no `deadline` on the stack: the call still
    // ends at 100 ms, and the server is told so.
    let (seen, backend) = recording_backend(Duration::from_millis(300), 200);
    let layer = ClientStack::grpc().breaker(false).build().unwrap();
    let svc = ServiceBuilder::new().layer(layer).service(backend);
    let req = http::Request::post("/echo.Echo/Say")
        .header("grpc-timeout", "100m")
        .body(String::new())
        .unwrap();
    ends_at_the_callers_100ms(svc, req, &seen).await;
}

#[tokio::test(start_paused = true)]
async fn a_decaying_hedge_bank_is_a_config_switch_and_is_validated() {
    let config: ClientConfig = toml::from_str("[hedge]\nbank_ttl = \"200ms\"").unwrap();
    assert_eq!(config.hedge.bank_ttl, Some(Duration::from_millis(200)));
    let layer = ClientStack::new()
        .hedging(true)
        .config(config)
        .build()
        .unwrap();
    assert!(layer.handles().hedge().is_some());
    let bad: ClientConfig = toml::from_str("[hedge]\nbank_ttl = \"0s\"").unwrap();
    let err = ClientStack::new().config(bad).build().unwrap_err();
    assert_eq!(err.path(), "client.hedge.bank_ttl");
}

#[tokio::test(start_paused = true)]
async fn the_infallible_http_server_stack_drops_into_axums_router_layer() {
    // No HandleErrorLayer: `Router::layer` accepts the stack because its error is Infallible.
    let app: axum::Router = axum::Router::new()
        .route("/", axum::routing::get(|| async { "hello" }))
        .layer(
            ServerStack::http()
                .name("axum")
                .build()
                .unwrap()
                .infallible(),
        );
    let res = app
        .clone()
        .oneshot(
            http::Request::get("/")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), http::StatusCode::OK);
    // A caller whose deadline has passed is answered by the stack, not the handler.
    let late = http::Request::get("/")
        .header("grpc-timeout", "0m")
        .body(axum::body::Body::empty())
        .unwrap();
    let res = app.oneshot(late).await.unwrap();
    assert_eq!(res.status(), http::StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn errors_below_the_infallible_stack_become_500s() {
    let mut svc = ServiceBuilder::new()
        .layer(ServerStack::http().build().unwrap().infallible())
        .service_fn(|_req: http::Request<()>| async {
            Err::<http::Response<String>, BoxError>("boom".into())
        });
    let res: Result<http::Response<String>, std::convert::Infallible> = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await;
    let res = res.unwrap();
    assert_eq!(res.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        res.body().is_empty(),
        "the error's text is logged, not sent"
    );
}

#[tokio::test(start_paused = true)]
async fn server_partitions_keep_a_busy_critical_class_its_share() {
    use damper::HeaderPartitioner;
    use damper::config::PartitionConfig;
    // Ten in flight at most: eight guaranteed to `critical`, two to `batch`, sorted by the
    // `x-priority` header; anything else is best effort, in the last partition (`batch`).
    let mut config = ServerConfig::default();
    config.limit.algorithm = Some(damper::config::LimitAlgorithm::Fixed);
    config.limit.max = Some(10);
    config.partitions = vec![
        PartitionConfig {
            name: "critical".into(),
            share: 0.8,
        },
        PartitionConfig {
            name: "batch".into(),
            share: 0.2,
        },
    ];
    let layer = ServerStack::http()
        .config(config)
        .partition_with(HeaderPartitioner::new(
            http::HeaderName::from_static("x-priority"),
            ["critical", "batch"],
        ))
        .build()
        .unwrap();
    let handle = layer.shed_handle().unwrap().clone();
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let r = release.clone();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service_fn(move |_req: http::Request<()>| {
            let r = r.clone();
            async move {
                let _permit = r.acquire().await;
                Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
            }
        });
    let req = |class: Option<&str>| {
        let mut b = http::Request::builder();
        if let Some(c) = class {
            b = b.header("x-priority", c);
        }
        b.body(()).unwrap()
    };
    let mut held = Vec::new();
    let mut send = |class: Option<&str>| {
        let call = svc.clone().oneshot(req(class));
        held.push(tokio::spawn(call));
    };
    // Two critical calls in flight make the class active: its unused share (six) is reserved.
    send(Some("critical"));
    send(Some("critical"));
    // Batch gets its own two, and nothing of the reserved share.
    send(Some("batch"));
    send(Some("batch"));
    tokio::task::yield_now().await;
    assert_eq!(handle.in_flight(), 4);
    for class in [Some("batch"), None, Some("unknown")] {
        let res = svc.clone().oneshot(req(class)).await.unwrap();
        assert_eq!(
            res.status(),
            http::StatusCode::SERVICE_UNAVAILABLE,
            "{class:?} borrows no reserved share"
        );
    }
    // Critical still has six of its eight.
    for _ in 0..6 {
        send(Some("critical"));
    }
    tokio::task::yield_now().await;
    assert_eq!(handle.in_flight(), 10, "critical got its whole share");
    release.add_permits(10);
    for call in held {
        assert_eq!(call.await.unwrap().unwrap().status(), http::StatusCode::OK);
    }
}

#[test]
fn partitions_without_a_partitioner_are_rejected() {
    let mut config = ServerConfig::default();
    config.partitions = vec![damper::config::PartitionConfig {
        name: "critical".into(),
        share: 0.5,
    }];
    let err = ServerStack::http().config(config).build().unwrap_err();
    assert!(err.to_string().contains("server.partitions"), "{err}");
    assert!(err.to_string().contains("partition_with"), "{err}");
}
