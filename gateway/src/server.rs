//! The gateway: building the router, the per-request pipeline, serving and draining.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actormesh::trace::{continue_trace, in_trace, TraceContext};
use actormesh::Node;
use axum::body::Body;
use axum::extract::{
    ConnectInfo, FromRequestParts as _, MatchedPath, Query, RawPathParams, Request, State,
};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use tokio::sync::{oneshot, Semaphore};
use tracing::Instrument;

use crate::auth::{forbidden, Auth, Client};
use crate::error::ApiError;
use crate::limit::{Limiter, RateLimit};
use crate::route::{Input, Route};

/// The header a client sets to ask for a shorter (or, up to the route's cap, longer) deadline:
/// `250ms`, `2s`, or a bare number of milliseconds.
pub const TIMEOUT_HEADER: &str = "x-request-timeout";

/// The response header carrying the request's trace id (32 hex digits).
pub const TRACE_ID_HEADER: &str = "x-trace-id";

/// How long a client told "overloaded" or "shutting down" should wait.
const RETRY_SOON: Duration = Duration::from_secs(1);

/// After a drain's deadline, how long the cut requests' connections get to take their 503.
const CUT_GRACE: Duration = Duration::from_secs(1);

/// An HTTP gateway in front of a node: see the [crate documentation](crate).
///
/// Stateless: run one on as many nodes as you like behind any HTTP load balancer.
#[derive(Debug)]
pub struct Gateway {
    shared: Arc<Shared>,
}

/// Builds a [`Gateway`]: routes, authentication and limits.
#[derive(Debug)]
pub struct GatewayBuilder {
    node: Node,
    routes: Vec<Route>,
    auth: Auth,
    timeout: Duration,
    max_timeout: Duration,
    rate_limit: Option<RateLimit>,
    max_body_bytes: usize,
    max_in_flight: usize,
    trust_forwarded_for: bool,
}

/// A gateway configuration that cannot work (checked by [`GatewayBuilder::build`]).
#[derive(Debug, thiserror::Error)]
#[error("gateway configuration: {0}")]
pub struct ConfigError(String);

struct RouteState {
    route: Route,
    limiter: Option<Limiter>,
    timeout: Duration,
    max_timeout: Duration,
}

struct Shared {
    node: Node,
    auth: Auth,
    routes: Vec<RouteState>,
    max_body_bytes: usize,
    slots: Arc<Semaphore>,
    max_in_flight: usize,
    in_flight: AtomicUsize,
    trust_forwarded_for: bool,
    /// Set when a shutdown's deadline passed: requests still in flight are answered 503.
    cut: tokio::sync::watch::Sender<bool>,
    /// Request counts and latencies on the node's `/metrics`, when it has an admin listener.
    metrics: Option<GatewayMetrics>,
}

/// Labels of the gateway's metrics: the route template (`/carts/{id}`, or `-` when no route
/// matched), the method and, for counts, the status.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusLabels {
    route: String,
    method: String,
    status: u16,
}

/// The gateway's metrics (registered on the node's [`NodeMetrics`](actormesh::metrics::NodeMetrics)).
struct GatewayMetrics {
    requests: Family<StatusLabels, Counter>,
    latency: Family<RequestLabels, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
}

fn latency_histogram() -> Histogram {
    // 100 µs to about 26 s, doubling.
    Histogram::new(exponential_buckets(0.000_1, 2.0, 19))
}

impl GatewayMetrics {
    /// The node's gateway metrics, shared by every gateway the node runs; `None` without an
    /// admin listener (or when a service took these names for metrics of other types).
    fn register(node: &Node) -> Option<Self> {
        let registry = node.metrics()?;
        let metrics = (|| {
            Some(GatewayMetrics {
                requests: registry.register_shared(
                    "gateway_requests",
                    "HTTP requests the gateways answered, by route template, method and status",
                    Family::<StatusLabels, Counter>::default,
                )?,
                latency: registry.register_shared(
                    "gateway_request_duration_seconds",
                    "Time from a request's arrival to its answer, by route template and method",
                    || Family::new_with_constructor(latency_histogram as fn() -> Histogram),
                )?,
                in_flight: registry.register_shared(
                    "gateway_in_flight_requests",
                    "Requests the gateways are handling now",
                    Gauge::default,
                )?,
            })
        })();
        if metrics.is_none() {
            tracing::warn!(
                "the node's metrics already hold gateway_* metrics of other types: this gateway records none"
            );
        }
        metrics
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("node", self.node.id())
            .field("routes", &self.routes.len())
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A builder for a gateway that sends through `node`.
    pub fn builder(node: Node) -> GatewayBuilder {
        GatewayBuilder {
            node,
            routes: Vec::new(),
            auth: Auth::new(),
            timeout: Duration::from_secs(10),
            max_timeout: Duration::from_secs(60),
            rate_limit: None,
            max_body_bytes: 1 << 20,
            max_in_flight: 10_000,
            trust_forwarded_for: false,
        }
    }

    /// The gateway as an axum [`Router`], to serve yourself or merge into a larger app. Serve
    /// it with `into_make_service_with_connect_info::<SocketAddr>()` so that anonymous
    /// clients are told apart by address (otherwise they share one rate limit).
    pub fn router(&self) -> Router {
        let mut by_path: BTreeMap<&str, MethodRouter<Arc<Shared>>> = BTreeMap::new();
        for (index, state) in self.shared.routes.iter().enumerate() {
            let filter =
                MethodFilter::try_from(state.route.method.clone()).unwrap_or(MethodFilter::POST);
            let handler = move |shared: State<Arc<Shared>>, request: Request| {
                handle_route(shared.0, index, request)
            };
            let entry = by_path.remove(state.route.path.as_str());
            let method_router = match entry {
                Some(existing) => existing.on(filter, handler),
                None => on(filter, handler),
            };
            by_path.insert(&state.route.path, method_router);
        }
        let mut router = Router::new();
        for (path, method_router) in by_path {
            router = router.route(path, method_router.fallback(method_not_allowed));
        }
        router
            .fallback(not_found)
            .with_state(self.shared.clone())
            .layer(axum::middleware::from_fn_with_state(
                self.shared.clone(),
                observe,
            ))
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(
                |_: Box<dyn std::any::Any + Send>| {
                    tracing::error!(target: "actormesh_gateway", "a route panicked while handling a request");
                    ApiError::internal().into_response()
                },
            ))
    }

    /// Listens on `addr` and serves until [`RunningGateway::shutdown`].
    pub async fn serve(self, addr: SocketAddr) -> std::io::Result<RunningGateway> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        self.serve_on(listener)
    }

    /// Serves on a listener the caller bound.
    pub fn serve_on(self, listener: tokio::net::TcpListener) -> std::io::Result<RunningGateway> {
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let app = self
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        let serving = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        let janitor = {
            let shared = Arc::downgrade(&self.shared);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(10));
                every.tick().await;
                loop {
                    every.tick().await;
                    let Some(shared) = shared.upgrade() else {
                        return;
                    };
                    for route in &shared.routes {
                        if let Some(limiter) = &route.limiter {
                            limiter.forget_idle();
                        }
                    }
                }
            })
        };
        tracing::info!(target: "actormesh_gateway", addr = %local_addr, node = %self.shared.node.id(), routes = self.shared.routes.len(), "gateway listening");
        Ok(RunningGateway {
            local_addr,
            stop: Some(stop),
            serving,
            janitor,
            shared: self.shared,
        })
    }
}

impl GatewayBuilder {
    /// Adds a route.
    pub fn route(mut self, route: Route) -> Self {
        self.routes.push(route);
        self
    }

    /// How callers authenticate (default: not at all; every route is public).
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// The deadline of a request on routes without their own (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The longest deadline a client may ask for with `X-Request-Timeout` (default 60 s).
    pub fn max_timeout(mut self, max: Duration) -> Self {
        self.max_timeout = max;
        self
    }

    /// The rate limit per client on each route without its own (default: none).
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// The largest request body accepted (default 1 MiB): larger ones get 413.
    pub fn max_body_bytes(mut self, max: usize) -> Self {
        self.max_body_bytes = max;
        self
    }

    /// How many requests may be in flight at once (default 10,000): past it, requests are
    /// shed at once with 503 and `Retry-After` instead of queueing.
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.max(1);
        self
    }

    /// Identifies anonymous clients by the last address of `X-Forwarded-For`: the one the load
    /// balancer in front of the gateway added (the addresses before it came with the request and
    /// may be made up). Only behind a balancer that adds it to every request; otherwise clients
    /// could pick their own rate-limit key.
    pub fn trust_forwarded_for(mut self, trust: bool) -> Self {
        self.trust_forwarded_for = trust;
        self
    }

    /// Checks the routes and builds the gateway. Refused: two routes with the same method and
    /// path, a path axum cannot route, an entity route whose path lacks its key parameter, a
    /// `GET` route whose message is not idempotent, scopes without authentication.
    pub fn build(self) -> Result<Gateway, ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for route in &self.routes {
            let what = format!("{} {}", route.method, route.path);
            if !route.path.starts_with('/') {
                return Err(ConfigError(format!("{what}: a path starts with `/`")));
            }
            if !seen.insert((route.method.clone(), route.path.clone())) {
                return Err(ConfigError(format!("{what} is declared twice")));
            }
            if let Some(key) = &route.key_param {
                if !route.path.contains(&format!("{{{key}}}")) {
                    return Err(ConfigError(format!(
                        "{what}: the entity key parameter `{{{key}}}` is not in the path"
                    )));
                }
            }
            if route.method == Method::GET && !route.idempotent {
                return Err(ConfigError(format!(
                    "{what}: GET requests are retried by clients and proxies, so the route must use `ask_idempotent` (with a message marked `Idempotent`)"
                )));
            }
            if !route.scopes.is_empty() && !self.auth.is_configured() {
                return Err(ConfigError(format!(
                    "{what} requires scopes but the gateway has no authentication configured (`GatewayBuilder::auth`)"
                )));
            }
            if MethodFilter::try_from(route.method.clone()).is_err() {
                return Err(ConfigError(format!("{what}: method not supported")));
            }
        }
        // axum panics on paths it cannot route; find out here, as an error.
        let probe = self.routes.iter().try_for_each(|route| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _ = Router::<()>::new().route(&route.path, axum::routing::get(|| async {}));
            }))
            .map_err(|_| {
                ConfigError(format!(
                    "{} {}: not a valid route path",
                    route.method, route.path
                ))
            })
        });
        probe?;
        let routes = self
            .routes
            .into_iter()
            .map(|route| RouteState {
                limiter: route.rate_limit.or(self.rate_limit).map(Limiter::new),
                timeout: route.timeout.unwrap_or(self.timeout),
                max_timeout: route.max_timeout.unwrap_or(self.max_timeout),
                route,
            })
            .collect();
        let metrics = GatewayMetrics::register(&self.node);
        Ok(Gateway {
            shared: Arc::new(Shared {
                node: self.node,
                auth: self.auth,
                routes,
                max_body_bytes: self.max_body_bytes,
                slots: Arc::new(Semaphore::new(self.max_in_flight)),
                max_in_flight: self.max_in_flight,
                in_flight: AtomicUsize::new(0),
                trust_forwarded_for: self.trust_forwarded_for,
                cut: tokio::sync::watch::Sender::new(false),
                metrics,
            }),
        })
    }
}

/// A serving gateway; stop it with [`shutdown`](Self::shutdown).
#[derive(Debug)]
pub struct RunningGateway {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    serving: tokio::task::JoinHandle<()>,
    janitor: tokio::task::JoinHandle<()>,
    shared: Arc<Shared>,
}

/// How a [`RunningGateway::shutdown`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Requests in flight when the shutdown began.
    pub in_flight_at_start: usize,
    /// Requests still in flight at the deadline, whose connections were closed unanswered.
    pub cut_off: usize,
}

impl RunningGateway {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Requests being handled now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Stops accepting connections and lets the requests in flight finish (idle keep-alive
    /// connections are closed) for up to `deadline`; requests still running then are
    /// answered `503 shutting_down` with `Retry-After` (their messages may still be handled,
    /// as after a timeout), and the connections closed.
    pub async fn shutdown(mut self, deadline: Duration) -> ShutdownReport {
        let in_flight_at_start = self.in_flight();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.janitor.abort();
        let cut_off = match tokio::time::timeout(deadline, &mut self.serving).await {
            Ok(_) => 0,
            Err(_) => {
                let left = self.in_flight();
                self.shared.cut.send_replace(true);
                // The cut requests answer at once; their connections then close.
                if tokio::time::timeout(CUT_GRACE, &mut self.serving)
                    .await
                    .is_err()
                {
                    self.serving.abort();
                }
                left
            }
        };
        tracing::info!(target: "actormesh_gateway", addr = %self.local_addr, in_flight_at_start, cut_off, "gateway stopped");
        ShutdownReport {
            in_flight_at_start,
            cut_off,
        }
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        self.janitor.abort();
        if self.stop.is_some() {
            self.serving.abort();
        }
    }
}

/// The request's trace position (set by [`observe`]).
#[derive(Clone, Copy)]
struct Traced(TraceContext);

/// The client that made the request, for the access log (set by the route handler).
#[derive(Clone)]
struct ClientId(String);

/// Outermost step of every request: trace context in and out, the in-flight cap, one access
/// log line.
async fn observe(
    State(shared): State<Arc<Shared>>,
    mut request: Request,
    next: axum::middleware::Next,
) -> Response {
    let started = Instant::now();
    let parent = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::from_traceparent);
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "-".to_owned(), |m| m.as_str().to_owned());
    let span = tracing::info_span!(
        "actormesh.gateway.request",
        method = %method,
        route = %route,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        parent_span_id = tracing::field::Empty,
    );
    // With OpenTelemetry export on, the caller is the exported span's parent and `here` is
    // that span's own position.
    let here = continue_trace(&span, parent);
    request.extensions_mut().insert(Traced(here));
    let mut response = match shared.slots.clone().try_acquire_owned() {
        Ok(slot) => {
            shared.in_flight.fetch_add(1, Ordering::Relaxed);
            let _done = InFlight(&shared.in_flight);
            if let Some(m) = &shared.metrics {
                m.in_flight.inc();
            }
            let mut cut = shared.cut.subscribe();
            let handling = in_trace(here, next.run(request)).instrument(span);
            let response = tokio::select! {
                response = handling => response,
                _ = cut.wait_for(|cut| *cut) => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting_down",
                    "the gateway shut down before the request finished; it may or may not have been handled",
                )
                .with_retry_after(RETRY_SOON)
                .with_trace_id(here.trace_id_hex())
                .into_response(),
            };
            drop(slot);
            if let Some(m) = &shared.metrics {
                m.in_flight.dec();
            }
            response
        }
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!(
                "the gateway has {} requests in flight; retry later",
                shared.max_in_flight
            ),
        )
        .with_retry_after(RETRY_SOON)
        .with_trace_id(here.trace_id_hex())
        .into_response(),
    };
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&here.trace_id_hex()) {
        headers.insert(TRACE_ID_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&here.to_traceparent()) {
        headers.insert("traceresponse", v);
    }
    let client = response
        .extensions()
        .get::<ClientId>()
        .map_or("-", |c| c.0.as_str());
    if let Some(m) = &shared.metrics {
        let labels = RequestLabels {
            route: route.clone(),
            // Bounded: the methods a route can have, anything else as `other`.
            method: match method.as_str() {
                m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => {
                    m.to_owned()
                }
                _ => "other".to_owned(),
            },
        };
        m.latency
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        m.requests
            .get_or_create(&StatusLabels {
                route: labels.route,
                method: labels.method,
                status: response.status().as_u16(),
            })
            .inc();
    }
    tracing::info!(
        target: "actormesh_gateway::access",
        method = %method,
        route = %route,
        status = response.status().as_u16(),
        latency_us = started.elapsed().as_micros() as u64,
        client,
        trace_id = %here.trace_id_hex(),
        "request"
    );
    response
}

/// Counts a request in flight until dropped (also when the connection is cut mid-request).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn trace_id_of(request: &Request) -> String {
    request
        .extensions()
        .get::<Traced>()
        .map_or_else(String::new, |t| t.0.trace_id_hex())
}

async fn not_found(request: Request) -> Response {
    let trace = trace_id_of(&request);
    ApiError::not_found(format!(
        "no route for {} {}",
        request.method(),
        request.uri().path()
    ))
    .with_trace_id(trace)
    .into_response()
}

async fn method_not_allowed(request: Request) -> Response {
    let trace = trace_id_of(&request);
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
    .with_trace_id(trace)
    .into_response()
}

/// Runs one route: authenticate, authorize, rate-limit, read the body, send, answer.
async fn handle_route(shared: Arc<Shared>, index: usize, request: Request) -> Response {
    let trace = trace_id_of(&request);
    let (client, result) = run_route(&shared, index, request).await;
    let mut response = match result {
        Ok(response) => response,
        Err(error) => error.with_trace_id(trace).into_response(),
    };
    response.extensions_mut().insert(ClientId(client));
    response
}

async fn run_route(
    shared: &Shared,
    index: usize,
    request: Request,
) -> (String, Result<Response, ApiError>) {
    let state = &shared.routes[index];
    let (mut parts, body) = request.into_parts();
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let anonymous = Client::anonymous(client_ip(&parts.headers, peer, shared.trust_forwarded_for));
    let client = match shared.auth.authenticate(&parts.headers) {
        Ok(Some(client)) => client,
        Ok(None) => anonymous,
        Err(e) => return (anonymous.id, Err(e)),
    };
    let id = client.id.clone();
    let result = async {
        authorize(shared, state, &client)?;
        if let Some(limiter) = &state.limiter {
            limiter.check(&client.id)?;
        }
        let timeout = deadline(&parts.headers, state)?;
        let params = RawPathParams::from_request_parts(&mut parts, &())
            .await
            .map_err(|e| ApiError::bad_request("path", e.body_text()))?
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let query = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map_err(|e| ApiError::bad_request("query", e.body_text()))?
            .0;
        check_content_type(&parts.headers)?;
        let body = read_body(body, shared.max_body_bytes, &parts.headers).await?;
        let input = Input {
            body,
            params,
            query,
            headers: parts.headers,
            client,
            node: shared.node.clone(),
            timeout,
        };
        let call = state.route.endpoint.call(input);
        // The ask's own deadline ends it; this bound also covers finding the target (a
        // group's first lookup, a name), so no request outlives its deadline.
        match tokio::time::timeout(timeout + Duration::from_millis(50), call).await {
            Ok(result) => result,
            Err(_) => Err(crate::error::from_actor_error(&actormesh::Error::Timeout {
                after: timeout,
            })),
        }
    }
    .await;
    (id, result)
}

fn authorize(shared: &Shared, state: &RouteState, client: &Client) -> Result<(), ApiError> {
    let route = &state.route;
    let needs_auth = shared.auth.is_configured() && !route.public;
    if needs_auth && !client.authenticated {
        return Err(crate::auth::unauthorized(
            "invalid_request",
            "this route requires credentials: `Authorization: Bearer <token>` or `X-Api-Key`",
        ));
    }
    let missing: Vec<&str> = route
        .scopes
        .iter()
        .map(String::as_str)
        .filter(|s| !client.scopes.contains(*s))
        .collect();
    if !missing.is_empty() {
        if !client.authenticated {
            return Err(crate::auth::unauthorized(
                "invalid_request",
                "this route requires credentials",
            ));
        }
        return Err(forbidden(&missing));
    }
    Ok(())
}

/// The request's deadline: the client's `X-Request-Timeout` (capped) or the route's.
fn deadline(headers: &HeaderMap, state: &RouteState) -> Result<Duration, ApiError> {
    let Some(value) = headers.get(TIMEOUT_HEADER) else {
        return Ok(state.timeout);
    };
    let asked = value
        .to_str()
        .ok()
        .and_then(parse_duration)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            ApiError::bad_request(
                TIMEOUT_HEADER,
                "X-Request-Timeout must be a positive duration such as `250ms`, `2s` or `1500`",
            )
        })?;
    Ok(asked.min(state.max_timeout))
}

fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Some(ms) = text.strip_suffix("ms") {
        return ms.trim().parse().ok().map(Duration::from_millis);
    }
    if let Some(s) = text.strip_suffix('s') {
        return s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
            .map(Duration::from_secs_f64);
    }
    text.parse().ok().map(Duration::from_millis)
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("request bodies are JSON (`Content-Type: application/json`), not `{essence}`"),
    )
    .with_field("content-type"))
}

async fn read_body(body: Body, max: usize, headers: &HeaderMap) -> Result<bytes::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body exceeds the limit of {max} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, max).await.map_err(|e| {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        let mut limited = false;
        while let Some(c) = cause {
            limited |= c.is::<http_body_util::LengthLimitError>();
            cause = c.source();
        }
        if limited {
            too_large()
        } else {
            ApiError::bad_request("body", format!("the request body could not be read: {e}"))
        }
    })
}

fn client_ip(headers: &HeaderMap, peer: Option<IpAddr>, trust_forwarded_for: bool) -> IpAddr {
    let forwarded = trust_forwarded_for
        .then(|| headers.get("x-forwarded-for"))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|v| v.trim().parse().ok());
    forwarded
        .or(peer)
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_from_the_timeout_header() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1500"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("NaNs"), None);
    }

    #[test]
    fn forwarded_for_only_when_trusted() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("10.1.2.3, 10.0.0.1"),
        );
        let peer = Some(IpAddr::from([127, 0, 0, 1]));
        assert_eq!(
            client_ip(&headers, peer, false),
            IpAddr::from([127, 0, 0, 1])
        );
        // The last address is the one the trusted balancer added; the ones before it came
        // from the client and may be made up.
        assert_eq!(client_ip(&headers, peer, true), IpAddr::from([10, 0, 0, 1]));
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("not an address"),
        );
        assert_eq!(
            client_ip(&headers, peer, true),
            IpAddr::from([127, 0, 0, 1])
        );
    }
}
