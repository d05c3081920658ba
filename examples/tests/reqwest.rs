//! `damper::reqwest::Client` over real loopback sockets: reqwest's builder API and
//! `reqwest::Response` kept, with the HTTP client stack inside.
//!
//! No sleeps: listeners are bound before clients connect, and the tests read what the server
//! recorded once the client's call has returned.

// The test server records bodies under a lock; no library code runs under it.
#![allow(clippy::disallowed_types)]

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Redirect;
use axum::routing::{get, put};
use damper_core::BoxError;
use damper_examples::net;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The request bodies a route received, in order.
type Bodies = Arc<Mutex<Vec<String>>>;

fn client() -> Result<damper::reqwest::Client, BoxError> {
    // Hedging needs 100 latency samples to start; keep it out of these small tests.
    Ok(damper::ClientStack::http()
        .name("test-reqwest")
        .deadline(Duration::from_secs(5))
        .hedging(false)
        .build_reqwest(reqwest::Client::new())?)
}

/// `/flaky` answers 503 to its first request and 200 (echoing the body) after that; `/down`
/// always 503. Both record every body they receive.
fn app(bodies: Bodies) -> Router {
    let flaky = bodies.clone();
    let down = bodies;
    Router::new()
        .route(
            "/hello",
            get(|headers: HeaderMap| async move {
                let who = headers
                    .get("x-who")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("nobody")
                    .to_owned();
                ([("x-greeted", who.clone())], format!("hello {who}"))
            }),
        )
        .route("/old", get(|| async { Redirect::temporary("/hello") }))
        .route(
            "/flaky",
            put(move |body: String| async move {
                let mut seen = flaky.lock().unwrap();
                seen.push(body.clone());
                if seen.len() == 1 {
                    (StatusCode::SERVICE_UNAVAILABLE, String::new())
                } else {
                    (StatusCode::OK, body)
                }
            }),
        )
        .route(
            "/down",
            put(move |body: String| async move {
                down.lock().unwrap().push(body);
                StatusCode::SERVICE_UNAVAILABLE
            }),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builder_api_gives_a_reqwest_response() -> Result<(), BoxError> {
    let (listener, addr) = net::listen().await?;
    let server = net::spawn_axum(listener, app(Bodies::default()));
    let client = client()?;

    let res: reqwest::Response = client
        .get(format!("http://{addr}/hello"))
        .header("x-who", "ada")
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-greeted"], "ada");
    assert_eq!(res.url().as_str(), format!("http://{addr}/hello"));
    assert_eq!(res.text().await?, "hello ada");

    // After a redirect the response says where it came from, as reqwest's does.
    let res = client.get(format!("http://{addr}/old")).send().await?;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.url().path(), "/hello");
    server.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_requests_body_is_replayed_on_retry() -> Result<(), BoxError> {
    let bodies = Bodies::default();
    let (listener, addr) = net::listen().await?;
    let server = net::spawn_axum(listener, app(bodies.clone()));

    let res = client()?
        .put(format!("http://{addr}/flaky"))
        .body("payload")
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK, "the 503 was retried");
    assert_eq!(res.text().await?, "payload");
    assert_eq!(*bodies.lock().unwrap(), ["payload", "payload"]);
    server.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_body_is_sent_once_and_whole() -> Result<(), BoxError> {
    let bodies = Bodies::default();
    let (listener, addr) = net::listen().await?;
    let server = net::spawn_axum(listener, app(bodies.clone()));

    // `Body::wrap` makes a body reqwest cannot resend; the stack must not try.
    let res = client()?
        .put(format!("http://{addr}/flaky"))
        .body(reqwest::Body::wrap(String::from("streamed")))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "not retried");
    assert_eq!(*bodies.lock().unwrap(), ["streamed"]);

    // A buffered PUT to an endpoint that keeps failing is retried, inside the budget.
    let res = client()?
        .put(format!("http://{addr}/down"))
        .body("x")
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        bodies.lock().unwrap().len() > 2,
        "the buffered PUT was retried"
    );
    server.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_rejections_are_typed_errors() -> Result<(), BoxError> {
    let bodies = Bodies::default();
    let (listener, addr) = net::listen().await?;
    let server = net::spawn_axum(listener, app(bodies.clone()));
    let client = client()?;

    client.handles().breaker().ok_or("breaker on")?.force_open();
    let err = client
        .put(format!("http://{addr}/down"))
        .body("x")
        .send()
        .await
        .expect_err("the breaker is open");
    assert!(err.is_circuit_open(), "{err:?}");
    assert!(!err.is_timeout() && err.as_reqwest().is_none());
    assert!(bodies.lock().unwrap().is_empty(), "nothing was sent");

    // A URL reqwest cannot use is reqwest's builder error, before the stack.
    let err = client.get("not a url").send().await.expect_err("bad URL");
    assert!(err.as_reqwest().is_some_and(reqwest::Error::is_builder));
    server.abort();
    Ok(())
}
