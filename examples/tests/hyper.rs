//! Over real loopback sockets: hyper-util's legacy client, the transport under reqwest and
//! many proxies, used directly under `ClientStack::http()`.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::any;
use bytes::Bytes;
use damper_core::BoxError;
use damper_examples::net;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tower::{ServiceBuilder, ServiceExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hyper_util_legacy_client_works_under_the_http_stack() -> Result<(), BoxError> {
    // The first call after each reset is answered 503, the next ones 200, whatever the method.
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let app = Router::new().route(
        "/flaky",
        any(move || {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    (StatusCode::SERVICE_UNAVAILABLE, "busy")
                } else {
                    (StatusCode::OK, "ok")
                }
            }
        }),
    );
    let (listener, addr) = net::listen().await?;
    let server = net::spawn_axum(listener, app);

    let transport = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let stack = damper::ClientStack::http()
        .name("hyper-util")
        .deadline(Duration::from_secs(5))
        .build()?;
    let client = ServiceBuilder::new().layer(stack).service(transport);

    // A GET with an in-memory body: the stack copies it for the retry of the 503.
    let req = http::Request::get(format!("http://{addr}/flaky")).body(Full::new(Bytes::new()))?;
    let res = client.clone().oneshot(req).await?;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.into_body().collect().await?.to_bytes(), "ok");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the 503 was retried once");

    // A POST is not idempotent: its 503 is not retried.
    calls.store(0, Ordering::SeqCst);
    let req = http::Request::post(format!("http://{addr}/flaky"))
        .body(Full::new(Bytes::from_static(b"order")))?;
    let res = client.oneshot(req).await?;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "sent once");
    server.abort();
    Ok(())
}
