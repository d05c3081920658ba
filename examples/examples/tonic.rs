//! A tonic 0.14 server behind damper's gRPC server stack, and a client with the gRPC client
//! stack over a tonic `Channel`, on an ephemeral loopback port:
//!
//! 1. `grpc-timeout` propagation: the client's deadline reaches the server's handler;
//! 2. the deadline is enforced: a call that would take 2 s ends at its 300 ms deadline;
//! 3. shedding: a burst beyond the server's limit gets `RESOURCE_EXHAUSTED` with
//!    `grpc-retry-pushback-ms`;
//! 4. budgeted retries of `UNAVAILABLE`: a flaky method is retried to success; a dead one gets
//!    only what the retry budget allows.
//!
//! ```text
//! cargo run -p damper-examples --example tonic
//! ```

use damper::config::LimitAlgorithm;
use damper_core::BoxError;
use damper_core::pushback::GRPC_RETRY_PUSHBACK_MS;
use damper_examples::echo::{self, say};
use damper_examples::proto::SayReply;
use damper_examples::proto::echo_client::EchoClient;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

/// A short description of a call's result.
fn describe(res: &Result<tonic::Response<SayReply>, tonic::Status>) -> String {
    match res {
        Ok(r) => format!(
            "OK (server saw a deadline of {} ms)",
            r.get_ref().deadline_ms
        ),
        Err(s) => format!("{:?}: {}", s.code(), s.message()),
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // --- server: ServerStack::grpc(), at most 8 in flight → deadline enforcement → Echo ---
    let server_stack = damper::ServerStack::grpc()
        .name("tonic-example")
        .configure(|c| {
            c.limit.algorithm = Some(LimitAlgorithm::Fixed);
            c.limit.max = Some(8);
        })
        .build()?;
    let server = echo::serve(server_stack).await?;
    let stats = server.stats.clone();

    // --- client: ClientStack::grpc() (deadline → retry (budget) → breaker → adaptive
    // timeout) around a tonic Channel ---
    let channel = echo::channel(server.addr).await?;
    let stack = echo::client_stack()
        .name("tonic-example")
        .deadline(Duration::from_millis(300))
        .configure(|c| {
            c.budget.initial = Some(5.0);
            c.budget.min_per_sec = Some(0.0);
        });
    let damped = stack.build_tonic(channel.clone())?;
    let budget = damped.handles().budget().clone();
    let mut client = EchoClient::new(damped);

    println!("1. grpc-timeout propagation (client deadline 300 ms)");
    let res = client.say(say("hello", 5)).await;
    println!("   {}", describe(&res));

    println!("2. deadline enforcement: a 2 s call under a 300 ms deadline");
    let completed = stats.completed.load(Ordering::Relaxed);
    let start = Instant::now();
    let res = client.say(say("slow", 2000)).await;
    println!("   {} after {:?}", describe(&res), start.elapsed());
    println!(
        "   the handler's work was cut short: {}",
        stats.completed.load(Ordering::Relaxed) == completed
    );
    // Several timers end this call at the same instant: the client stack's deadline, the tonic
    // transport's timer for the `grpc-timeout` the stack sent (which tonic alone reports as
    // CANCELLED), and the server's. The damped channel reports each as DEADLINE_EXCEEDED;
    // `tests/grpc.rs` checks the server alone.

    println!("3. a burst of 30 concurrent 200 ms calls at a server limited to 8 in flight");
    let mut raw = EchoClient::new(channel.clone());
    let burst: Vec<_> = (0..30)
        .map(|_| {
            let mut raw = raw.clone();
            tokio::spawn(async move { raw.say(say("burst", 200)).await })
        })
        .collect();
    let (mut ok, mut exhausted, mut pushback) = (0, 0, None);
    for task in burst {
        match task.await? {
            Ok(_) => ok += 1,
            Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                exhausted += 1;
                pushback = pushback.or_else(|| {
                    s.metadata()
                        .get(GRPC_RETRY_PUSHBACK_MS)
                        .and_then(|v| v.to_str().ok().map(str::to_owned))
                });
            }
            Err(s) => println!("   unexpected {s:?}"),
        }
    }
    println!(
        "   OK: {ok}, RESOURCE_EXHAUSTED: {exhausted}, grpc-retry-pushback-ms: {}",
        pushback.as_deref().unwrap_or("none")
    );
    // The raw client keeps working once the burst is over.
    raw.say(say("after the burst", 1)).await?;

    println!("4. budgeted retries of UNAVAILABLE (budget: 5 tokens, no floor)");
    let before = stats.calls.load(Ordering::Relaxed);
    let mut ok = 0;
    for i in 0..3 {
        let res = client.say(say(&format!("flaky-{i}"), 1)).await;
        ok += u32::from(res.is_ok());
    }
    println!(
        "   flaky method, 3 calls: {ok} OK after {} server attempts",
        stats.calls.load(Ordering::Relaxed) - before
    );
    let before = stats.calls.load(Ordering::Relaxed);
    let mut failed = 0;
    for _ in 0..10 {
        let res = client.say(say("unavailable", 1)).await;
        failed += u32::from(res.is_err());
    }
    println!(
        "   dead method, 10 calls: {failed} failed after {} server attempts (10 + what was left \
         in the budget, not 10 × 3); budget balance now {:.1}",
        stats.calls.load(Ordering::Relaxed) - before,
        damper_core::Budget::balance(&*budget, Instant::now())
    );

    server.task.abort();
    Ok(())
}
