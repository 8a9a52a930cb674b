//! An HTTP front door for an actormesh cluster.
//!
//! Clients that are not actors (browsers, mobile apps, other teams' services) reach actors,
//! groups and keyed entities through typed routes: an HTTP method and path, the target, and a
//! closure that turns the request (path and query parameters, a JSON body) into a message.
//! The reply is the JSON response. Any node can run a gateway; gateways hold no state, so run
//! as many as you like behind a load balancer.
//!
//! What every request goes through, in order: the W3C `traceparent` is read (or a trace
//! started), the in-flight cap (503 when full), authentication (bearer JWT with HS256 or
//! RS256, or an API key; 401), the route's scopes (403), its rate limit per client (429), the
//! deadline (`X-Request-Timeout` within the route's cap), the body limit (413) and JSON parsing
//! (400 naming the field), then the ask: `ask_idempotent` retries on another instance for
//! idempotent routes. Failures map to what HTTP clients expect: no instance, node down or
//! overloaded is 503 with `Retry-After`, a passed deadline 504, a handler panic 500 without
//! internals. Every answer carries `X-Trace-Id`, and the actors' spans on every node continue
//! the caller's trace. One access log line per request (target `actormesh_gateway::access`).
//!
//! ```no_run
//! use std::time::Duration;
//! use actormesh_gateway::{Auth, Gateway, RateLimit, Route};
//! # use actix::{Actor, Context, Handler};
//! # use actormesh::prelude::*;
//! # use serde::{Deserialize, Serialize};
//! # #[derive(RemoteMessage, Serialize, Deserialize, Clone)]
//! # #[remote(name = "doc.Greet", result = "String")]
//! # struct Greet(String);
//! # impl actormesh::Idempotent for Greet {}
//! # struct Greeter;
//! # impl Actor for Greeter { type Context = Context<Self>; }
//! # impl Handler<Greet> for Greeter {
//! #     type Result = String;
//! #     fn handle(&mut self, m: Greet, _: &mut Context<Self>) -> String { format!("hello, {}", m.0) }
//! # }
//! # actormesh::remote_actor!(Greeter = "doc.Greeter" { Greet });
//!
//! # async fn run(node: actormesh::Node) -> Result<(), Box<dyn std::error::Error>> {
//! let gateway = Gateway::builder(node)
//!     .auth(Auth::new().jwt_hs256(b"a secret shared with the token issuer").audience("api"))
//!     .rate_limit(RateLimit::per_second(50).burst(100))
//!     .route(
//!         Route::get("/hello/{name}")
//!             .group::<Greeter>("greeters")
//!             .ask_idempotent(|call| Ok(Greet(call.param("name")?)))
//!             .scopes(["greet"])
//!             .timeout(Duration::from_secs(2)),
//!     )
//!     .build()?;
//! let running = gateway.serve("127.0.0.1:8080".parse()?).await?;
//! // ... on SIGTERM:
//! running.shutdown(Duration::from_secs(10)).await;
//! # Ok(()) }
//! ```

mod auth;
mod error;
mod limit;
mod route;
mod server;

pub use auth::{Auth, AuthConfigError, Client};
pub use error::ApiError;
pub use limit::RateLimit;
pub use route::{Bound, Call, Grouped, Keyed, Named, Route, RouteTo, Target};
pub use server::{
    ConfigError, Gateway, GatewayBuilder, RunningGateway, ShutdownReport, TIMEOUT_HEADER,
    TRACE_ID_HEADER,
};
