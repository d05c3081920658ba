//! The server stack: shed (adaptive limit, CoDel/LIFO queue, partitions) → deadline
//! enforcement → handler.

use crate::client::{build_shed, field_err};
use crate::config::{ConfigError, ServerConfig};
use crate::optional::{Maybe, Optional};
use std::fmt;
use tower_adaptive_timeout::DeadlineLayer;
use tower_adaptive_timeout::deadline::Deadline;
use tower_layer::{Identity, Layer};
use tower_shed::{Shed, ShedHandle, ShedLayer};

/// Builds the server stack. `M` turns overload rejections into protocol responses: nothing for
/// [`ServerStack::new`] (callers get the `Overloaded` error), 503 + `Retry-After` for
/// [`ServerStack::http`], `RESOURCE_EXHAUSTED` + `grpc-retry-pushback-ms` for
/// [`ServerStack::grpc`].
#[derive(Debug, Clone)]
pub struct ServerStack<M = Identity> {
    config: ServerConfig,
    map: M,
    grpc_timeout: bool,
}

impl Default for ServerStack {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerStack {
    /// A stack for any request type: shed with an adaptive (Gradient2) limit; rejections are
    /// `damper_core::error::Overloaded` errors. Deadlines are enforced for requests that carry
    /// one ([`damper_core::HasDeadline`]).
    pub fn new() -> Self {
        Self {
            config: ServerConfig::default(),
            map: Identity::new(),
            grpc_timeout: false,
        }
    }
}

#[cfg(feature = "http")]
impl ServerStack<tower_shed::http::OverloadedAsResponseLayer> {
    /// The HTTP preset: shed requests get `503 Service Unavailable` with a computed
    /// `Retry-After`; an incoming `grpc-timeout` header sets the request's deadline (clamped),
    /// and requests whose caller's deadline already passed are dropped before the handler.
    pub fn http() -> Self {
        Self {
            config: ServerConfig::default(),
            map: tower_shed::http::OverloadedAsResponseLayer::new(),
            grpc_timeout: true,
        }
    }
}

#[cfg(feature = "grpc")]
impl ServerStack<tower_shed::grpc::OverloadedAsStatusLayer> {
    /// The gRPC preset (a tonic server's `http::Request`s): shed requests get
    /// `RESOURCE_EXHAUSTED` with `grpc-retry-pushback-ms`; the caller's `grpc-timeout` is
    /// enforced (clamped).
    pub fn grpc() -> Self {
        Self {
            config: ServerConfig::default(),
            map: tower_shed::grpc::OverloadedAsStatusLayer::new(),
            grpc_timeout: true,
        }
    }
}

impl<M> ServerStack<M> {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Edits the configuration in place.
    pub fn configure(mut self, f: impl FnOnce(&mut ServerConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// The `name` label on every metric of the stack.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = Some(name.into());
        self
    }

    /// Validates the configuration and builds the layer. Errors name the offending field, as
    /// `server.limit.max`.
    pub fn build(self) -> Result<ServerLayer<M>, ConfigError> {
        let cfg = &self.config;
        let name = cfg.name.clone().unwrap_or_else(|| "server".to_owned());
        let shed = if cfg.limit.enabled.unwrap_or(true) {
            let mut shed = build_shed(&cfg.limit, "server.limit", &name, None)?;
            if !cfg.partitions.is_empty() {
                let mut total = 0.0;
                for (i, p) in cfg.partitions.iter().enumerate() {
                    if !(p.share.is_finite() && p.share > 0.0 && p.share <= 1.0) {
                        return Err(ConfigError::new(
                            format!("server.partitions[{i}].share"),
                            "must be in (0, 1]",
                        ));
                    }
                    total += p.share;
                }
                if total > 1.0 + 1e-9 {
                    return Err(ConfigError::new(
                        "server.partitions",
                        "guaranteed shares add up to more than 1",
                    ));
                }
                // Partitions need the builder; rebuild with them.
                let mut b = crate::client::shed_builder(&cfg.limit, "server.limit", &name, None)?;
                for p in &cfg.partitions {
                    b = b.partition(p.name.clone(), p.share);
                }
                shed = b
                    .build()
                    .map_err(|e| field_err("server.partitions", e.field(), e.reason()))?;
            }
            Some(shed)
        } else {
            None
        };
        let d = &cfg.deadline;
        if d.max.is_some_and(|m| m.is_zero()) {
            return Err(field_err(
                "server.deadline",
                "max",
                "must be greater than zero",
            ));
        }
        let deadline = if d.enabled {
            let mut b = DeadlineLayer::builder().name(name.clone()).propagate(false);
            if self.grpc_timeout {
                b = b.accept_grpc_timeout(d.max.unwrap_or(damper_core::DEFAULT_MAX_PUSHBACK));
            }
            if let Some(t) = d.default {
                b = b.timeout(t);
            }
            Some(b.build().map_err(|e| {
                // Name the config keys, not the builder's knobs.
                let field = match e.field() {
                    "timeout" => "default",
                    "accept_grpc_timeout" => "max",
                    other => other,
                };
                field_err("server.deadline", field, e.reason())
            })?)
        } else {
            None
        };
        Ok(ServerLayer {
            handle: shed.as_ref().map(ShedLayer::handle),
            map: self.map,
            shed: Optional(shed),
            deadline: Optional(deadline),
        })
    }
}

/// The server stack as a [`Layer`]; built by [`ServerStack::build`].
#[derive(Clone)]
pub struct ServerLayer<M = Identity> {
    handle: Option<ShedHandle>,
    map: M,
    shed: Optional<ShedLayer>,
    deadline: Optional<DeadlineLayer>,
}

impl<M> fmt::Debug for ServerLayer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerLayer")
            .field("shed", &self.shed.0.is_some())
            .field("deadline", &self.deadline.0.is_some())
            .finish()
    }
}

impl<M> ServerLayer<M> {
    /// The limiter's state (limit, in flight, queued), if shedding is on.
    pub fn shed_handle(&self) -> Option<&ShedHandle> {
        self.handle.as_ref()
    }
}

/// The service a [`ServerLayer`] builds around `S`, before the protocol mapping `M`.
pub type ServerService<S> = Maybe<Shed<Maybe<Deadline<S>, S>>, Maybe<Deadline<S>, S>>;

impl<S, M> Layer<S> for ServerLayer<M>
where
    M: Layer<ServerService<S>>,
{
    type Service = M::Service;

    fn layer(&self, inner: S) -> Self::Service {
        let s = self.deadline.layer(inner);
        let s = self.shed.layer(s);
        self.map.layer(s)
    }
}
