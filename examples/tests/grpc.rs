//! Over real loopback sockets: a tonic server behind the gRPC server stack, a tonic `Channel`
//! behind the gRPC client stack.

use damper::config::LimitAlgorithm;
use damper_core::BoxError;
use damper_examples::echo::{self, EchoStack, RunningEcho, say};
use damper_examples::proto::echo_client::EchoClient;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

async fn server() -> Result<RunningEcho, BoxError> {
    let stack = damper::ServerStack::grpc()
        .name("test-grpc")
        .configure(|c| {
            c.limit.algorithm = Some(LimitAlgorithm::Fixed);
            c.limit.max = Some(16);
        })
        .build()?;
    Ok(echo::serve(stack).await?)
}

/// A client stack whose budget starts with `tokens` and has no per-second floor, so the number
/// of retries it may send is exactly `tokens` while nothing succeeds.
fn stack(deadline: Duration, tokens: f64) -> EchoStack {
    echo::client_stack()
        .name("test-grpc")
        .deadline(deadline)
        .configure(|c| {
            c.budget.initial = Some(tokens);
            c.budget.min_per_sec = Some(0.0);
            c.retry.max_attempts = Some(3);
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_is_retried_within_the_budget() -> Result<(), BoxError> {
    let server = server().await?;
    let channel = echo::channel(server.addr).await?;
    let calls = || server.stats.calls.load(Ordering::SeqCst);

    // A method that fails once per message: each call succeeds on its retry.
    let mut client = echo::damped_client(channel.clone(), stack(Duration::from_secs(3), 3.0))?;
    for i in 0..3 {
        let reply = client.say(say(&format!("flaky-{i}"), 0)).await?;
        assert_eq!(reply.get_ref().message, format!("flaky-{i}"));
    }
    assert_eq!(calls(), 6, "one retry per call");

    // A dead method: 5 calls, 3 attempts allowed each, but only 3 tokens of budget.
    let mut client = echo::damped_client(channel, stack(Duration::from_secs(3), 3.0))?;
    for _ in 0..5 {
        let status = client.say(say("unavailable", 0)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
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
    let mut client = echo::damped_client(channel, stack(Duration::from_millis(300), 10.0))?;

    // The deadline reaches the handler.
    let reply = client.say(say("hello", 0)).await?;
    let seen = reply.get_ref().deadline_ms;
    assert!((1..=300).contains(&seen), "server saw {seen} ms");

    // A call that would take 3 s ends at the deadline, and is not retried past it.
    let calls = server.stats.calls.load(Ordering::SeqCst);
    let completed = server.stats.completed.load(Ordering::SeqCst);
    let start = Instant::now();
    let err = client.say(say("slow", 3000)).await.unwrap_err();
    let took = start.elapsed();
    // Whichever timer ends it (the stack's, or the tonic transport's for the grpc-timeout the
    // stack sent, which tonic alone reports as CANCELLED), the caller sees DEADLINE_EXCEEDED.
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(took >= Duration::from_millis(290), "{took:?}: {err:?}");
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
    assert!(took >= Duration::from_millis(190), "{took:?}");
    assert_eq!(
        server.stats.completed.load(Ordering::SeqCst),
        0,
        "the handler was cut short"
    );
    server.task.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_exhausted_pushback_is_honoured() -> Result<(), BoxError> {
    let server = server().await?;
    let channel = echo::channel(server.addr).await?;
    let calls = || server.stats.calls.load(Ordering::SeqCst);
    let mut client = echo::damped_client(channel, stack(Duration::from_secs(3), 10.0))?;

    // The server asks for 400 ms: the retry comes no sooner, and succeeds.
    let start = Instant::now();
    client.say(say("pushback:400:a", 0)).await?;
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert_eq!(calls(), 2);

    // A negative pushback means "do not retry".
    let status = client.say(say("pushback:-1:b", 0)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(calls(), 3, "no retry");

    // A pushback longer than what is left of the deadline is not waited out: waiting would
    // have met the 3 s deadline first, and the caller would see DEADLINE_EXCEEDED.
    let status = client.say(say("pushback:10000:c", 0)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(calls(), 4, "no retry");
    server.task.abort();
    Ok(())
}

/// A `Say` request that may be sent twice: it carries an `idempotency-key`, which is what the
/// gRPC preset asks before it retries or hedges a call.
fn keyed(message: &str, work_ms: u32) -> tonic::Request<damper_examples::proto::SayRequest> {
    let mut req = say(message, work_ms);
    req.metadata_mut().insert(
        "idempotency-key",
        tonic::metadata::MetadataValue::try_from(message).expect("ascii"),
    );
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_client_over_the_damped_channel() -> Result<(), BoxError> {
    let server = server().await?;
    let calls = || server.stats.calls.load(Ordering::SeqCst);
    // The library's channel with the plain gRPC preset: retries, hedges and a breaker on.
    let channel = damper::ClientStack::grpc()
        .name("test-grpc-channel")
        .deadline(Duration::from_secs(5))
        .configure(|c| {
            c.hedge.enabled = true;
            c.hedge.fixed_delay = Some(Duration::from_millis(50));
            // Each call earns half a hedge token, so the first calls pay for one hedge; the
            // retry budget, which hedges draw on too, starts with a few tokens.
            c.hedge.max_extra_load = Some(0.5);
            c.budget.initial = Some(5.0);
            c.breaker.trickle = Some(0.0);
        })
        .build_tonic(echo::channel(server.addr).await?)?;
    let mut client = EchoClient::new(channel.clone());

    // A retry: the buffered request body is sent again, and the second attempt succeeds.
    let reply = client.say(keyed("flaky-channel", 0)).await?;
    assert_eq!(reply.get_ref().message, "flaky-channel");
    assert_eq!(reply.get_ref().attempt, 2);
    assert_eq!(calls(), 2, "one retry");

    // Without a key the call is sent once: a POST is not assumed idempotent.
    let status = client.say(say("flaky-unkeyed", 0)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(calls(), 3, "no retry");

    // A hedge: the slow call outlives the 50 ms hedge delay, so a second copy goes out, and
    // the reply comes from one of the two.
    let reply = client.say(keyed("slow-hedged", 300)).await?;
    assert_eq!(reply.get_ref().message, "slow-hedged");
    assert_eq!(calls(), 5, "the call and its hedge");

    // An open breaker: the caller sees UNAVAILABLE, and nothing reaches the server.
    let breaker = channel.handles().breaker().expect("the breaker is on");
    breaker.force_open();
    let status = client.say(keyed("while-open", 0)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(calls(), 5, "not sent");
    breaker.force_closed();
    client.say(keyed("after", 0)).await?;
    assert_eq!(calls(), 6);
    server.task.abort();
    Ok(())
}
