//! The `Echo` service the tonic example and tests serve, and a client over a tonic `Channel`.
//!
//! What the handler does depends on the message, so one server can show every case:
//!
//! | message | answer |
//! |---|---|
//! | `unavailable` | always `UNAVAILABLE` |
//! | `flaky…` | `UNAVAILABLE` the first time a message is seen, then OK |
//! | `pushback:MS:…` | `RESOURCE_EXHAUSTED` with `grpc-retry-pushback-ms: MS` the first time, then OK |
//! | anything else | OK after `work_ms` |
//!
//! Every answer reports the deadline the handler saw (from the caller's `grpc-timeout`, as the
//! server stack's deadline layer stored it on the request).

use crate::proto::echo_server::Echo;
use crate::proto::{SayReply, SayRequest};
use damper_core::HasDeadline;
use damper_core::pushback::GRPC_RETRY_PUSHBACK_MS;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;

/// Counters a test or the example reads back.
#[derive(Debug, Default)]
pub struct EchoStats {
    /// Calls that reached the handler.
    pub calls: AtomicU32,
    /// Calls whose work finished (not cut short by a deadline or a cancelled caller).
    pub completed: AtomicU32,
}

/// The `Echo` service.
#[derive(Debug, Clone, Default)]
pub struct EchoService {
    stats: Arc<EchoStats>,
    seen: Arc<Mutex<HashSet<String>>>,
}

impl EchoService {
    /// A new service with zeroed counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counters, shared with every clone.
    pub fn stats(&self) -> Arc<EchoStats> {
        self.stats.clone()
    }
}

#[tonic::async_trait]
impl Echo for EchoService {
    async fn say(
        &self,
        request: tonic::Request<SayRequest>,
    ) -> Result<tonic::Response<SayReply>, tonic::Status> {
        let attempt = self.stats.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let now = tokio::time::Instant::now();
        let deadline_ms = request
            .deadline()
            .map(|d| u32::try_from(d.remaining(now).as_millis()).unwrap_or(u32::MAX))
            .unwrap_or(0);
        let req = request.into_inner();
        if req.message == "unavailable" {
            return Err(tonic::Status::unavailable("backend unavailable"));
        }
        let first = || async { self.seen.lock().await.insert(req.message.clone()) };
        if req.message.starts_with("flaky") && first().await {
            return Err(tonic::Status::unavailable("first attempt fails"));
        }
        if let Some(rest) = req.message.strip_prefix("pushback:")
            && first().await
        {
            let ms = rest.split(':').next().unwrap_or_default();
            let mut status = tonic::Status::resource_exhausted("busy, come back later");
            if let Ok(v) = ms.parse() {
                status.metadata_mut().insert(GRPC_RETRY_PUSHBACK_MS, v);
            }
            return Err(status);
        }
        tokio::time::sleep(Duration::from_millis(u64::from(req.work_ms))).await;
        self.stats.completed.fetch_add(1, Ordering::Relaxed);
        Ok(tonic::Response::new(SayReply {
            message: req.message,
            deadline_ms,
            attempt,
        }))
    }
}

/// A running `Echo` server.
#[derive(Debug)]
pub struct RunningEcho {
    /// Where it listens (loopback, ephemeral port).
    pub addr: std::net::SocketAddr,
    /// The handler's counters.
    pub stats: Arc<EchoStats>,
    /// The server task; abort it to stop the server.
    pub task: tokio::task::JoinHandle<()>,
}

/// The gRPC server stack, as [`ServerStack::grpc`](damper::ServerStack::grpc) builds it.
pub type ServerGrpc = damper::ServerLayer<damper::shed::grpc::OverloadedAsStatusLayer>;

/// Serves [`EchoService`] behind `stack` on a fresh loopback port. The listener is bound
/// before this returns, so clients may connect at once.
pub async fn serve(stack: ServerGrpc) -> std::io::Result<RunningEcho> {
    let echo = EchoService::new();
    let stats = echo.stats();
    let (listener, addr) = crate::net::listen().await?;
    let task = crate::net::spawn_tonic(listener, |incoming| {
        tonic::transport::Server::builder()
            .layer(stack)
            .add_service(crate::proto::echo_server::EchoServer::new(echo))
            .serve_with_incoming(incoming)
    });
    Ok(RunningEcho { addr, stats, task })
}

/// A tonic `Channel` to `addr`, connected.
pub async fn channel(
    addr: std::net::SocketAddr,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await
}

/// The `Echo` methods that are safe to send twice.
pub const IDEMPOTENT_METHODS: &[&str] = &["/damper.echo.Echo/Say"];

/// Whether `req` calls a method listed in [`IDEMPOTENT_METHODS`]. gRPC calls are all `POST`s,
/// so HTTP's idempotency rules say nothing about them: which methods may be sent twice is the
/// service's contract.
pub fn idempotent_method(req: &damper::tonic::Request) -> bool {
    IDEMPOTENT_METHODS.contains(&req.uri().path())
}

/// Replays the methods [`idempotent_method`] allows.
pub type ReplayEcho = damper::retry_budget::ReplayIf<fn(&damper::tonic::Request) -> bool>;

/// The gRPC client stack for `Echo`, before it is built.
pub type EchoStack = damper::ClientStack<
    damper_core::classify::GrpcClassifier,
    ReplayEcho,
    damper::hedge::Idempotent,
>;

/// Starts [`ClientStack::grpc`](damper::ClientStack::grpc) for `Echo`: only the methods in
/// [`IDEMPOTENT_METHODS`] are retried.
pub fn client_stack() -> EchoStack {
    damper::ClientStack::grpc().replay(damper::retry_budget::ReplayIf::new(
        idempotent_method as fn(&damper::tonic::Request) -> bool,
    ))
}

/// An `Echo` client over `channel`, behind `stack`: a generated client over a
/// [`damper::tonic::Channel`].
///
/// # Errors
/// The stack's configuration is invalid.
pub fn damped_client(
    channel: tonic::transport::Channel,
    stack: EchoStack,
) -> Result<crate::proto::echo_client::EchoClient<damper::tonic::Channel>, damper::ConfigError> {
    Ok(crate::proto::echo_client::EchoClient::new(
        stack.build_tonic(channel)?,
    ))
}

/// A `Say` request.
pub fn say(message: &str, work_ms: u32) -> tonic::Request<SayRequest> {
    tonic::Request::new(SayRequest {
        message: message.to_owned(),
        work_ms,
    })
}
