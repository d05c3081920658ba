//! Hostile peers: servers that ask for absurd pushback, callers that send absurd or garbage
//! `grpc-timeout`s, and a server that answers 429 forever. Every delay is clamped, no retry waits
//! past its deadline, and attempts stay inside the retry budget's bound. Virtual time throughout.

// The recorders are shared between a test and the mock servers it spawns; a lock is simplest
// and the library's ban on std locks is about hot paths, not tests.
#![allow(clippy::disallowed_types)]

use damper::BoxError;
use damper::core::classify::HttpClassifier;
use damper::core::deadline::grpc_timeout;
use damper::core::error::DeadlineExceeded;
use damper::core::pushback::{Pushback, parse_grpc_pushback, parse_retry_after};
use damper::core::{Budget, HasDeadline};
use damper::retry_budget::{Idempotent, RetryBudget, RetryLayer};
use damper::timeout::DeadlineLayer;
use damper::{ClientStack, ServerStack};
use http::{HeaderValue, Request, Response, StatusCode};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

const TEN_YEARS: &[u8] = b"315360000";
const YEAR_9999: &[u8] = b"Fri, 31 Dec 9999 23:59:59 GMT";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Hostile header values: huge, negative, malformed, not UTF-8.
const HOSTILE: &[&[u8]] = &[
    TEN_YEARS,
    YEAR_9999,
    b"99999999999999999999999999999999999999999999999999999999999999",
    b"999999999999999999999999999999999999999999999999999999999999999999999",
    b"18446744073709551616",
    b"-1",
    b"-0",
    b"-99999999999999999999999999",
    b"-",
    b"--5",
    b"+5",
    b"1e9",
    b"0x10",
    b"5 s",
    b" 7 ",
    b"\t",
    b"",
    b"\xff\xfe\xfd",
    b"\x80",
    b"Fri, 31 Dec 9999 23:59:59 GM\xff",
    b"Fri, 31 Dec 99999 23:59:59 GMT",
    b"Mon, 99 Feb 2025 99:99:99 GMT",
    b"Sun, 06 Nov 1994 08:49:37 GMT",
    b"\0\0\0",
];

#[test]
fn pushback_parsers_clamp_every_hostile_value() {
    let max = secs(30);
    let now = SystemTime::now();
    for &v in HOSTILE {
        if let Some(d) = parse_retry_after(v, now, max) {
            assert!(
                d <= max,
                "Retry-After {:?} gave {d:?}",
                String::from_utf8_lossy(v)
            );
        }
        if let Some(Pushback::After(d)) = parse_grpc_pushback(v, max) {
            assert!(
                d <= max,
                "pushback {:?} gave {d:?}",
                String::from_utf8_lossy(v)
            );
        }
        if let Ok(d) = grpc_timeout::decode_clamped(v, max) {
            assert!(
                d <= max,
                "grpc-timeout {:?} gave {d:?}",
                String::from_utf8_lossy(v)
            );
        }
    }
    // The two ten-year forms are read (not dropped as garbage) and clamped.
    assert_eq!(parse_retry_after(TEN_YEARS, now, max), Some(max));
    assert_eq!(parse_retry_after(YEAR_9999, now, max), Some(max));
    // Any negative pushback means "do not retry", however long.
    for v in [&b"-1"[..], b"-0", b"-99999999999999999999999999"] {
        assert_eq!(parse_grpc_pushback(v, max), Some(Pushback::DoNotRetry));
    }
    assert_eq!(
        parse_grpc_pushback(b"99999999999999999999999999", max),
        Some(Pushback::After(max))
    );
    assert_eq!(grpc_timeout::decode_clamped(b"99999999H", max), Ok(max));
    assert!(grpc_timeout::decode(b"999999999H").is_err(), "nine digits");
}

/// What the mock server saw: when each attempt of each request arrived.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(u64, Instant)>>>);

impl Seen {
    fn record(&self, id: u64) {
        self.0.lock().unwrap().push((id, Instant::now()));
    }

    fn calls(&self) -> Vec<(u64, Instant)> {
        self.0.lock().unwrap().clone()
    }

    fn times(&self) -> Vec<Instant> {
        self.calls().into_iter().map(|(_, t)| t).collect()
    }
}

fn request(id: u64) -> Request<String> {
    Request::get("http://upstream/item")
        .header("x-id", id)
        .body(String::new())
        .unwrap()
}

fn id_of<B>(req: &Request<B>) -> u64 {
    req.headers()["x-id"].to_str().unwrap().parse().unwrap()
}

/// A server that answers every request with `status` and one header.
fn server(
    seen: Seen,
    status: StatusCode,
    header: Option<(&'static str, HeaderValue)>,
) -> impl Service<Request<String>, Response = Response<String>, Error = BoxError, Future: Send>
+ Clone
+ Send {
    tower::service_fn(move |req: Request<String>| {
        seen.record(id_of(&req));
        let mut res = Response::new(String::new());
        *res.status_mut() = status;
        if let Some((name, value)) = &header {
            res.headers_mut().insert(*name, value.clone());
        }
        async move { Ok::<_, BoxError>(res) }
    })
}

/// A retry layer for HTTP with pushback clamped to `max_pushback` and plenty of budget.
fn retry_layer(
    max_pushback: Duration,
    timeout: Option<Duration>,
) -> RetryLayer<Arc<RetryBudget>, HttpClassifier, Idempotent> {
    let budget = RetryBudget::builder().initial(10.0).build().unwrap();
    let mut b = RetryLayer::builder(budget)
        .classifier(HttpClassifier::new())
        .replay(Idempotent::default())
        .max_attempts(3)
        .max_pushback(max_pushback)
        .seed(7);
    if let Some(t) = timeout {
        b = b.timeout(t);
    }
    b.build().unwrap()
}

/// The gaps between consecutive attempts.
fn gaps(times: &[Instant]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

/// Sends one GET through a retry layer (clamp `max_pushback`, optional overall `timeout`) to a
/// server that always answers `status` with `header: value`; returns the final status and when
/// each attempt reached the server.
async fn retry_once(
    max_pushback: Duration,
    timeout: Option<Duration>,
    status: StatusCode,
    header: &'static str,
    value: &[u8],
) -> (StatusCode, Vec<Instant>) {
    let seen = Seen::default();
    let header = (header, HeaderValue::from_bytes(value).unwrap());
    let mut svc =
        retry_layer(max_pushback, timeout).layer(server(seen.clone(), status, Some(header)));
    let res = svc.ready().await.unwrap().call(request(1)).await.unwrap();
    (res.status(), seen.times())
}

#[tokio::test(start_paused = true)]
async fn retry_after_of_ten_years_waits_only_the_clamp() {
    let clamp = secs(2);
    for value in [TEN_YEARS, YEAR_9999, b"99999999999999999999999999999999"] {
        let start = Instant::now();
        let (status, times) = retry_once(
            clamp,
            None,
            StatusCode::TOO_MANY_REQUESTS,
            "retry-after",
            value,
        )
        .await;
        assert_eq!(status, 429);
        assert_eq!(times.len(), 3, "{:?}", String::from_utf8_lossy(value));
        // Each retry waited the clamp exactly: the server asked for years.
        assert_eq!(gaps(&times), vec![clamp, clamp]);
        assert_eq!(start.elapsed(), clamp * 2);
    }
}

#[tokio::test(start_paused = true)]
async fn clamped_pushback_that_does_not_fit_the_deadline_is_not_waited() {
    // The clamp (2 s) is longer than the whole deadline (1 s): no retry, no waiting.
    let start = Instant::now();
    let (status, times) = retry_once(
        secs(2),
        Some(secs(1)),
        StatusCode::TOO_MANY_REQUESTS,
        "retry-after",
        TEN_YEARS,
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(times.len(), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

/// The pushback clamp the table tests use.
const CLAMP: Duration = Duration::from_secs(2);
/// The default backoff (full jitter, 25 ms doubling, at most 1 s) bounds what garbage gets.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// For each `(value, attempts the server sees, the most any retry may wait)`: one request to a
/// server answering `status` with `header: value`, retried with pushback clamped to `CLAMP`.
async fn assert_waits(
    status: StatusCode,
    header: &'static str,
    cases: &[(&[u8], usize, Duration)],
) {
    for &(value, attempts, most) in cases {
        let label = String::from_utf8_lossy(value);
        let (got, times) = retry_once(CLAMP, None, status, header, value).await;
        assert_eq!(got, status, "{label}");
        assert_eq!(times.len(), attempts, "{label}");
        for gap in gaps(&times) {
            assert!(gap <= most, "{label}: waited {gap:?}, at most {most:?}");
        }
        if most == CLAMP {
            assert_eq!(gaps(&times), vec![CLAMP, CLAMP], "{label}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn negative_absurd_and_garbage_grpc_pushback() {
    assert_waits(
        StatusCode::SERVICE_UNAVAILABLE,
        "grpc-retry-pushback-ms",
        &[
            (b"-1", 1, Duration::ZERO),
            (b"-0", 1, Duration::ZERO),
            (b"-99999999999999999999999999", 1, Duration::ZERO),
            (b"99999999999999999999999999", 3, CLAMP),
            (b"18446744073709551616", 3, CLAMP),
            (b"315360000000", 3, CLAMP),
            (b"-", 3, BACKOFF_MAX),
            (b"+5", 3, BACKOFF_MAX),
            (b"1e9", 3, BACKOFF_MAX),
            (b"\xff\xfe\xfd", 3, BACKOFF_MAX),
            (b"\x80", 3, BACKOFF_MAX),
            (b" 250 ", 3, Duration::from_millis(250)),
        ],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn garbage_retry_after_falls_back_to_backoff_and_past_dates_wait_nothing() {
    assert_waits(
        StatusCode::TOO_MANY_REQUESTS,
        "retry-after",
        &[
            (b"\xff\xfe\xfd", 3, BACKOFF_MAX),
            (b"-5", 3, BACKOFF_MAX),
            (b"5 s", 3, BACKOFF_MAX),
            (b"1e9", 3, BACKOFF_MAX),
            (b"Fri, 31 Dec 99999 23:59:59 GMT", 3, BACKOFF_MAX),
            (b"Mon, 99 Feb 2025 99:99:99 GMT", 3, BACKOFF_MAX),
            (b"Fri, 31 Dec 9999 23:59:59 GM\xff", 3, BACKOFF_MAX),
            (b"Sun, 06 Nov 1994 08:49:37 GMT", 3, Duration::ZERO),
            (b"0", 3, Duration::ZERO),
            (TEN_YEARS, 3, CLAMP),
            (YEAR_9999, 3, CLAMP),
        ],
    )
    .await;
}

/// What the handler behind a server stack saw of the caller's deadline.
#[derive(Clone, Default)]
struct SawDeadline(Arc<Mutex<Vec<Option<Duration>>>>);

/// A handler that records the remaining time of the deadline it was handed, then either answers
/// or hangs forever.
fn handler(
    saw: SawDeadline,
    hang: bool,
) -> impl Service<Request<String>, Response = Response<String>, Error = BoxError, Future: Send>
+ Clone
+ Send {
    tower::service_fn(move |req: Request<String>| {
        let remaining = req.deadline().map(|d| d.remaining(Instant::now()));
        saw.0.lock().unwrap().push(remaining);
        async move {
            if hang {
                std::future::pending::<()>().await;
            }
            Ok::<_, BoxError>(Response::new(String::new()))
        }
    })
}

fn with_grpc_timeout(value: &[u8]) -> Request<String> {
    let mut req = request(1);
    req.headers_mut()
        .insert("grpc-timeout", HeaderValue::from_bytes(value).unwrap());
    req
}

#[tokio::test(start_paused = true)]
async fn grpc_timeout_of_99999999_hours_is_clamped_by_the_server_stack() {
    let max = damper::core::DEFAULT_MAX_PUSHBACK;
    let saw = SawDeadline::default();
    let layer = ServerStack::http().build().unwrap();
    let mut svc = layer.layer(handler(saw.clone(), true));
    let start = Instant::now();
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(with_grpc_timeout(b"99999999H"))
        .await
        .unwrap();
    // The HTTP preset answers an expired deadline with 504.
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    // The hanging handler was cut off at the clamp, not in eleven thousand years.
    assert_eq!(start.elapsed(), max);
    assert_eq!(*saw.0.lock().unwrap(), vec![Some(max)]);
}

#[tokio::test(start_paused = true)]
async fn deadline_layer_clamps_and_ignores_garbage_grpc_timeouts() {
    let max = secs(5);
    let layer = DeadlineLayer::builder()
        .accept_grpc_timeout(max)
        .build()
        .unwrap();
    // (header, the deadline the handler must see)
    let cases: &[(&[u8], Option<Duration>)] = &[
        (b"99999999H", Some(max)),
        (b"99999999M", Some(max)),
        (b"99999999S", Some(max)),
        (b"99999999m", Some(max)),
        (b"1S", Some(secs(1))),
        (b"0n", Some(Duration::ZERO)),
        (b"999999999H", None),
        (b"-5S", None),
        (b"5", None),
        (b"H", None),
        (b"5h", None),
        (b"5 S", None),
        (b"\xff\xfeS", None),
        (b"1e9S", None),
        (b"", None),
    ];
    for &(value, want) in cases {
        let label = String::from_utf8_lossy(value);
        let saw = SawDeadline::default();
        let mut svc = layer.layer(handler(saw.clone(), false));
        let res = svc
            .ready()
            .await
            .unwrap()
            .call(with_grpc_timeout(value))
            .await;
        if want == Some(Duration::ZERO) {
            // Already expired: refused before the handler.
            let err = res.unwrap_err();
            assert!(err.is::<DeadlineExceeded>(), "{label}: {err}");
            assert!(saw.0.lock().unwrap().is_empty(), "{label}");
        } else {
            res.unwrap_or_else(|e| panic!("{label}: {e}"));
            assert_eq!(*saw.0.lock().unwrap(), vec![want], "{label}");
        }
    }
}

/// Runs `ClientStack::http()` (with or without its breaker) against a server that answers 429
/// forever, at 100 requests a second for ten virtual minutes; returns what the server saw and
/// what callers got.
async fn http_client_against_429_forever(
    retry_after: Option<&'static [u8]>,
    breaker: bool,
    floor_per_sec: Option<f64>,
) -> Run {
    const RPS: u64 = 100;
    const RUN: Duration = Duration::from_secs(600);
    let deadline = secs(10);
    let clamp = secs(2);
    let seen = Seen::default();
    let header = retry_after.map(|v| ("retry-after", HeaderValue::from_bytes(v).unwrap()));
    let layer = ClientStack::http()
        .deadline(deadline)
        .seed(3)
        .configure(|c| {
            c.retry.max_pushback = Some(clamp);
            c.budget.min_per_sec = floor_per_sec;
        })
        .breaker(breaker)
        .build()
        .unwrap();
    let budget = layer.handles().budget().clone();
    let breaker = layer.handles().breaker().cloned();
    let svc = layer.layer(server(seen.clone(), StatusCode::TOO_MANY_REQUESTS, header));
    let start = Instant::now();
    let done: Arc<Mutex<Vec<(Instant, Instant)>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    let n = RUN.as_secs() * RPS;
    for id in 0..n {
        tokio::time::sleep_until(start + Duration::from_millis(id * 1000 / RPS)).await;
        let svc = svc.clone();
        let done = done.clone();
        tasks.spawn(async move {
            let sent = Instant::now();
            // 429 forever: every outcome is the 429 itself or a local rejection (open
            // breaker); either way it comes back.
            let _ = svc.oneshot(request(id)).await;
            done.lock().unwrap().push((sent, Instant::now()));
        });
    }
    while tasks.join_next().await.is_some() {}
    let done = done.lock().unwrap().clone();
    Run {
        requests: n,
        elapsed: start.elapsed(),
        calls: seen.calls(),
        done,
        deadline,
        clamp,
        initial: budget.config().initial,
        floor_per_sec: budget.config().min_per_sec,
        transitions: breaker.map(|b| b.transitions()),
        balance: budget.balance(Instant::now()),
        start,
    }
}

struct Run {
    requests: u64,
    elapsed: Duration,
    calls: Vec<(u64, Instant)>,
    done: Vec<(Instant, Instant)>,
    deadline: Duration,
    clamp: Duration,
    initial: f64,
    floor_per_sec: f64,
    /// The breaker's transitions, if it is in the stack.
    transitions: Option<u64>,
    balance: f64,
    start: Instant,
}

impl Run {
    /// Attempts beyond the first of each request (retries and hedges).
    fn extra_attempts(&self) -> u64 {
        let mut ids: Vec<u64> = self.calls.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        self.calls.len() as u64 - ids.len() as u64
    }

    /// Checks the invariants every run must keep, whatever the server sends.
    fn check_bounds(&self) {
        assert_eq!(
            self.done.len() as u64,
            self.requests,
            "every request returned"
        );
        // No caller waited past its deadline (retries never sleep beyond it).
        for (sent, back) in &self.done {
            assert!(
                *back - *sent <= self.deadline,
                "a request took {:?}",
                *back - *sent
            );
        }
        // Per request: attempts are at most the clamp apart and all inside the deadline.
        let mut by_id: std::collections::BTreeMap<u64, Vec<Instant>> = Default::default();
        for (id, t) in &self.calls {
            by_id.entry(*id).or_default().push(*t);
        }
        for (id, times) in &by_id {
            let first = times[0];
            for (i, t) in times.iter().enumerate() {
                assert!(*t - first <= self.deadline, "request {id} attempt {i}");
            }
            for gap in gaps(times) {
                assert!(gap <= self.clamp, "request {id} waited {gap:?}");
            }
        }
        // Amplification: no success ever deposits, so extra attempts come only from the
        // initial tokens and the floor, if any (one token of burst).
        let burst = if self.floor_per_sec > 0.0 { 1.0 } else { 0.0 };
        let bound = self.initial + self.floor_per_sec * self.elapsed.as_secs_f64() + burst;
        let extra = self.extra_attempts() as f64;
        assert!(
            extra <= bound,
            "{extra} extra attempts, bound {bound} over {:?}",
            self.elapsed
        );
        assert!(self.balance < 1.0, "the budget has no tokens to give");
        if let Some(transitions) = self.transitions {
            // The breaker opened, and so took most of the load off the server.
            assert!(transitions >= 1, "the breaker never opened");
            assert!(
                (self.calls.len() as u64) < self.requests / 10,
                "{} of {} requests reached the server",
                self.calls.len(),
                self.requests
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn http_client_against_a_server_answering_429_forever() {
    let hostile = http_client_against_429_forever(Some(TEN_YEARS), true, None).await;
    hostile.check_bounds();
    let plain = http_client_against_429_forever(None, true, None).await;
    plain.check_bounds();
    // The run lasted the ten minutes plus at most one deadline.
    assert!(hostile.elapsed <= secs(600) + hostile.deadline);
    assert!(hostile.start.elapsed() >= secs(600));
    // Pushback holds the open breaker back: the classifier reads the ten years as its own clamp
    // (30 s), so nothing reaches the server for at least that long after the trip (not even
    // the trickle), where without pushback the breaker's trickle and spaced probes keep
    // calling it well within 30 s; fewer calls reach the server.
    let first_open = |run: &Run| {
        let times: Vec<Instant> = run.calls.iter().map(|(_, t)| *t).collect();
        // The first long silence is the first open period.
        gaps(&times)
            .into_iter()
            .find(|g| *g >= Duration::from_secs(1))
    };
    let hostile_first = first_open(&hostile).expect("the breaker opened");
    let plain_first = first_open(&plain).unwrap_or_default();
    assert!(hostile_first >= secs(30), "{hostile_first:?}");
    assert!(plain_first < secs(30), "{plain_first:?}");
    eprintln!(
        "429 forever, 10 min at 100 rps: with Retry-After {} calls ({} extra), first open {:?}; \
         without {} calls ({} extra), first open {:?}",
        hostile.calls.len(),
        hostile.extra_attempts(),
        hostile_first,
        plain.calls.len(),
        plain.extra_attempts(),
        plain_first,
    );
    assert!(
        hostile.calls.len() < plain.calls.len(),
        "pushback {} calls, plain {}",
        hostile.calls.len(),
        plain.calls.len()
    );
}

/// Without a breaker every retry reaches the server: the budget alone bounds them. Nothing ever
/// succeeds, so with the defaults (no floor) only the reserve the budget starts with is spent;
/// with a floor, the floor is the only source of tokens.
#[tokio::test(start_paused = true)]
async fn retry_budget_alone_bounds_attempts_against_429_forever() {
    let run = http_client_against_429_forever(Some(TEN_YEARS), false, None).await;
    run.check_bounds();
    assert_eq!(run.floor_per_sec, 0.0, "no floor by default");
    assert_eq!(
        run.extra_attempts() as f64,
        run.initial,
        "only the initial reserve is spent"
    );
    assert!(
        run.initial >= 1.0,
        "a new client can retry its first failure"
    );

    let run = http_client_against_429_forever(Some(TEN_YEARS), false, Some(10.0)).await;
    run.check_bounds();
    let extra = run.extra_attempts() as f64;
    let floor = run.floor_per_sec * run.elapsed.as_secs_f64();
    // Callers want two retries each (120 000 in all); the floor hands out about ten a second.
    assert!(
        extra >= 0.9 * floor.min(run.floor_per_sec * 600.0),
        "{extra} extra attempts"
    );
    assert!(
        run.calls.len() as u64 >= run.requests,
        "every request reached the server"
    );
    eprintln!(
        "429 forever, no breaker: {} requests, {} extra attempts over {:?} (bound {floor:.0} + 1)",
        run.requests, extra, run.elapsed
    );
}
