//! Over real loopback sockets: a tonic server behind the gRPC server stack, a tonic `Channel`
//! behind the gRPC client stack.

use damper_core::BoxError;
use damper_examples::echo::{self, RunningEcho, say};
use damper_examples::proto::echo_client::EchoClient;
use damper_examples::stack::{ClientGrpc, ClientOptions, ServerGrpc};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;
use tower::ServiceExt;
use tower_shed::limit::Fixed;

async fn server() -> Result<RunningEcho, BoxError> {
    Ok(echo::serve(ServerGrpc::new("test-grpc", Fixed::new(16)?)?).await?)
}

/// A client stack whose budget starts with `tokens` and has no per-second floor, so the number
/// of retries it may send is exactly `tokens` while nothing succeeds.
fn stack(deadline: Duration, tokens: f64) -> Result<ClientGrpc, BoxError> {
    let mut options = ClientOptions::new("test-grpc");
    options.deadline = deadline;
    options.budget_initial = tokens;
    options.budget_min_per_sec = 0.0;
    options.max_attempts = 3;
    ClientGrpc::new(&options)
}

fn code(err: &BoxError) -> Option<tonic::Code> {
    damper_core::error::find::<tonic::Status>(&**err).map(tonic::Status::code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_is_retried_within_the_budget() -> Result<(), BoxError> {
    let server = server().await?;
    let channel = echo::channel(server.addr).await?;
    let calls = || server.stats.calls.load(Ordering::SeqCst);

    // A method that fails once per message: each call succeeds on its retry.
    let client = echo::damped_client(channel.clone(), &stack(Duration::from_secs(3), 3.0)?)?;
    for i in 0..3 {
        let reply = client
            .clone()
            .oneshot(say(&format!("flaky-{i}"), 0))
            .await?;
        assert_eq!(reply.get_ref().message, format!("flaky-{i}"));
    }
    assert_eq!(calls(), 6, "one retry per call");

    // A dead method: 5 calls, 3 attempts allowed each, but only 3 tokens of budget.
    let client = echo::damped_client(channel, &stack(Duration::from_secs(3), 3.0)?)?;
    for _ in 0..5 {
        let err = client
            .clone()
            .oneshot(say("unavailable", 0))
            .await
            .unwrap_err();
        assert_eq!(code(&err), Some(tonic::Code::Unavailable), "{err}");
    }
    assert_eq!(
        calls() - 6,
        5 + 3,
        "5 first attempts and the 3 retries the budget paid for"
    );
    server.task.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_sends_and_respects_grpc_timeout() -> Result<(), BoxError> {
    let server = server().await?;
    let channel = echo::channel(server.addr).await?;
    let client = echo::damped_client(channel, &stack(Duration::from_millis(300), 10.0)?)?;

    // The deadline reaches the handler.
    let reply = client.clone().oneshot(say("hello", 0)).await?;
    let seen = reply.get_ref().deadline_ms;
    assert!((200..=300).contains(&seen), "server saw {seen} ms");

    // A call that would take 3 s ends at the deadline, and is not retried past it.
    let calls = server.stats.calls.load(Ordering::SeqCst);
    let completed = server.stats.completed.load(Ordering::SeqCst);
    let start = Instant::now();
    let err = client.oneshot(say("slow", 3000)).await.unwrap_err();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_millis(1000),
        "{took:?}: {err}"
    );
    assert_eq!(
        server.stats.calls.load(Ordering::SeqCst),
        calls + 1,
        "no retry past the deadline"
    );
    assert_eq!(server.stats.completed.load(Ordering::SeqCst), completed);
    server.task.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_enforces_the_callers_deadline() -> Result<(), BoxError> {
    let server = server().await?;
    // A caller that sends `grpc-timeout` but sets no timer of its own: only the server can end
    // the call.
    let mut raw = EchoClient::new(echo::channel(server.addr).await?);
    let mut req = say("slow", 3000);
    req.set_timeout(Duration::from_millis(200));
    let start = Instant::now();
    let status = raw.say(req).await.unwrap_err();
    let took = start.elapsed();
    // damper's server stack answers DEADLINE_EXCEEDED; tonic's own server also enforces
    // `grpc-timeout` (CANCELLED, "Timeout expired"), with a timer started a moment earlier,
    // so either may answer first. Both are the server ending the call.
    assert!(
        matches!(
            status.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{status:?}"
    );
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    assert_eq!(
        server.stats.completed.load(Ordering::SeqCst),
        0,
        "the handler was cut short"
    );
    server.task.abort();
    Ok(())
}
