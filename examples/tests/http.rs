//! Over real loopback sockets: an axum server behind the HTTP server stack, reqwest behind the
//! HTTP client stack.
//!
//! No sleeps synchronize anything: listeners are bound before clients connect, and the tests
//! wait on what the server reports (a channel of observed requests, a `Notify`).

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use damper::config::LimitAlgorithm;
use damper_core::{BoxError, HasDeadline};
use damper_examples::net;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};
use tower_fault_injection::{FaultLayer, FaultSpec, HttpResponseInjector};

/// What the server saw: path, final status, when the request arrived.
type Seen = (String, u16, Instant);

/// Reports every request's path and final status once it is answered.
async fn observe(tx: mpsc::UnboundedSender<Seen>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let at = Instant::now();
    let res = next.run(req).await;
    let _ = tx.send((path, res.status().as_u16(), at));
    res
}

fn error_layer()
-> HandleErrorLayer<impl Fn(BoxError) -> std::future::Ready<(StatusCode, String)> + Clone, ()> {
    HandleErrorLayer::new(|e: BoxError| {
        std::future::ready((StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    })
}

fn client(deadline: Duration) -> Result<impl Fn(&str) -> ClientCall, BoxError> {
    // Hedging needs 100 latency samples to start; keep it out of these small tests.
    let stack = damper::ClientStack::http()
        .name("test-http")
        .deadline(deadline)
        // The servers here are damper's: they read the deadline from `grpc-timeout`.
        .propagate_deadline(true)
        .hedging(false)
        .build()?;
    let svc = ServiceBuilder::new()
        .layer(stack)
        .service(damper_examples::reqwest_service(reqwest::Client::new()));
    Ok(move |url: &str| {
        let svc = svc.clone();
        let req = http::Request::get(url).body(String::new());
        Box::pin(async move { svc.oneshot(req?).await }) as ClientCall
    })
}

/// `ServerStack::http()` with a fixed limit of `max` requests in flight.
fn server_stack(
    name: &str,
    max: usize,
) -> Result<damper::ServerLayer<damper::shed::http::OverloadedAsResponseLayer>, BoxError> {
    Ok(damper::ServerStack::http()
        .name(name)
        .configure(|c| {
            c.limit.algorithm = Some(LimitAlgorithm::Fixed);
            c.limit.max = Some(max);
        })
        .build()?)
}

type ClientCall =
    std::pin::Pin<Box<dyn Future<Output = Result<http::Response<reqwest::Body>, BoxError>> + Send>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shed_503s_pushback_is_honoured_by_the_client_stack() -> Result<(), BoxError> {
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (tx, mut seen) = mpsc::unbounded_channel();
    let (e, r) = (entered.clone(), release.clone());
    let app = Router::new()
        .route(
            "/hold",
            get(move || async move {
                e.notify_one();
                r.notified().await;
                "held"
            }),
        )
        .route("/b", get(|| async { "b" }))
        // One request at a time: while /hold runs, everything else is shed.
        .layer(
            ServiceBuilder::new()
                .layer(error_layer())
                .layer(server_stack("test-shed", 1)?),
        )
        .layer(middleware::from_fn(move |req, next| {
            observe(tx.clone(), req, next)
        }));
    let (listener, addr) = net::listen().await?;
    let server = net::spawn_axum(listener, app);
    let plain = reqwest::Client::new();

    let hold = tokio::spawn(plain.get(format!("http://{addr}/hold")).send());
    entered.notified().await;

    // A plain client sees the shed response as it is.
    let res = plain.get(format!("http://{addr}/b")).send().await?;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry_after = res.headers()[reqwest::header::RETRY_AFTER]
        .to_str()?
        .to_owned();
    assert_eq!(retry_after, "1", "the hint is rounded up to whole seconds");
    // ... and sent to the millisecond beside it, for clients that read that.
    let hint_ms: u64 = res.headers()["grpc-retry-pushback-ms"].to_str()?.parse()?;
    assert!((1..=1000).contains(&hint_ms), "{hint_ms} ms");
    assert_eq!(
        seen.recv().await.map(|s| (s.0, s.1)),
        Some(("/b".into(), 503))
    );

    // The damped client: its first attempt is shed, and it waits the millisecond pushback (not
    // the rounded-up second) before retrying.
    let call = client(Duration::from_secs(4))?;
    let damped = tokio::spawn(call(&format!("http://{addr}/b")));
    let (path, status, first) = seen.recv().await.ok_or("server gone")?;
    assert_eq!((path.as_str(), status), ("/b", 503));
    release.notify_one();
    assert_eq!(hold.await??.status(), StatusCode::OK);
    assert_eq!(
        seen.recv().await.map(|s| (s.0, s.1)),
        Some(("/hold".into(), 200))
    );

    let res = damped.await??;
    assert_eq!(res.status(), StatusCode::OK);
    let (path, status, second) = seen.recv().await.ok_or("server gone")?;
    assert_eq!((path.as_str(), status), ("/b", 200));
    let waited = second.duration_since(first);
    assert!(
        waited >= Duration::from_millis(hint_ms),
        "retried after {waited:?}, before the {hint_ms} ms hint"
    );
    assert!(seen.try_recv().is_err(), "exactly two attempts");
    server.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushback_beyond_the_deadline_is_not_retried() -> Result<(), BoxError> {
    let (tx, mut seen) = mpsc::unbounded_channel();
    // Every request: 503 with Retry-After: 5, longer than the client's 1 s deadline.
    let faults = FaultLayer::builder()
        .forced(FaultSpec::outage())
        .injector(HttpResponseInjector::service_unavailable(
            Duration::from_secs(5),
        ))
        .build()?;
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(ServiceBuilder::new().layer(error_layer()).layer(faults))
        .layer(middleware::from_fn(move |req, next| {
            observe(tx.clone(), req, next)
        }));
    let (listener, addr) = net::listen().await?;
    let server = net::spawn_axum(listener, app);

    let call = client(Duration::from_secs(1))?;
    // Waiting the 5 s out would have met the 1 s deadline first, and the caller would have
    // got a deadline error, not the server's 503.
    let res = call(&format!("http://{addr}/")).await?;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.recv().await.map(|s| s.1), Some(503));
    assert!(seen.try_recv().is_err(), "one attempt only");
    server.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_deadline_propagates_and_the_server_enforces_it() -> Result<(), BoxError> {
    let finished = Arc::new(AtomicBool::new(false));
    let f = finished.clone();
    let app = Router::new()
        .route(
            "/deadline",
            get(|req: Request| async move {
                let left = req
                    .deadline()
                    .map(|d| d.remaining(Instant::now()).as_millis());
                format!("{}", left.unwrap_or(0))
            }),
        )
        .route(
            "/slow",
            get(move || async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                f.store(true, Ordering::SeqCst);
                "too late"
            }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(error_layer())
                .layer(server_stack("test-deadline", 8)?),
        );
    let (listener, addr) = net::listen().await?;
    let server = net::spawn_axum(listener, app);

    // The client stack's 500 ms deadline travels as `grpc-timeout` and becomes the request's
    // deadline on the server.
    let call = client(Duration::from_millis(500))?;
    let res = call(&format!("http://{addr}/deadline")).await?;
    assert_eq!(res.status(), StatusCode::OK);
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await?
        .to_bytes();
    let left: u64 = std::str::from_utf8(&body)?.parse()?;
    // Never more than the caller's 500 ms; some left (an expired request is not served).
    assert!((1..=500).contains(&left), "server saw {left} ms left");

    // A caller that sends a deadline but does not enforce it itself: the server ends the work
    // at the deadline and answers 504.
    let start = Instant::now();
    let res = reqwest::Client::new()
        .get(format!("http://{addr}/slow"))
        .header("grpc-timeout", "200m")
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    let took = start.elapsed();
    // Not before the deadline (a lower bound holds however slow the machine is); the 504 and
    // the unfinished handler say the server cut it.
    assert!(took >= Duration::from_millis(190), "{took:?}");
    assert!(
        !finished.load(Ordering::SeqCst),
        "the handler was cut short"
    );
    server.abort();
    Ok(())
}
