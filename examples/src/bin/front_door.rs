//! An HTTP front door to a cluster: shopping carts (keyed entities) and a group of stateless
//! quote workers, reached by clients that are not actors through `actormesh-gateway`.
//!
//! Three nodes run in one process on the embedded discovery. Each hosts carts (kept in a
//! `MemoryStore`) and runs one quote worker in the group `quoters`; node-1 also runs the
//! gateway. The routes:
//!
//! - `GET /quote/{sku}`: a price, from any quote worker (public, idempotent, rate-limited to
//!   10 per second per client with bursts of 20);
//! - `GET /carts/{id}`: the cart's contents (public, idempotent);
//! - `POST /carts/{id}/items` with `{"item": "...", "quantity": n}`: adds to the cart (needs an
//!   API key with the scope `carts:write`).
//!
//! The gateway listens on `GATEWAY_ADDR` (default `127.0.0.1:8080`). The API key that may
//! write is `GATEWAY_API_KEY` (default `dev-key`); `GATEWAY_READONLY_KEY` (default
//! `dev-readonly-key`) identifies a client that holds no scope, to show 403. The access log
//! goes to stderr (`RUST_LOG` overrides the default filter
//! `warn,actormesh_gateway=info`).
//!
//! Run it with `cargo run -p actormesh-examples --bin front_door`; it serves until Ctrl-C or
//! SIGTERM, then drains the gateway and shuts the nodes down. With `--self-test` it listens on
//! a free port (unless `GATEWAY_ADDR` is set), sends a few requests itself, checks their
//! statuses and exits: 0 if they were all as expected, 1 otherwise.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorContext, ActorFutureExt, AtomicResponse, Context, Handler, MessageResult,
    ResponseActFuture, ResponseFuture, WrapFuture,
};
use actormesh::prelude::*;
use actormesh::{Entity, EntityConfig, EntityContext, EntityState, MemoryStore};
use actormesh_gateway::{ApiError, Auth, Gateway, RateLimit, Route, RunningGateway};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type BoxError = Box<dyn std::error::Error>;

/// The shard count of the carts: the same on every node.
const SHARDS: u32 = 24;
/// The nodes of the example; the first runs the gateway.
const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];
/// The group of quote workers.
const QUOTERS: &str = "quoters";
/// Where the gateway listens without `GATEWAY_ADDR`.
const DEFAULT_ADDR: &str = "127.0.0.1:8080";
/// The API key that may add items, without `GATEWAY_API_KEY`.
const DEFAULT_API_KEY: &str = "dev-key";
/// The API key without scopes, without `GATEWAY_READONLY_KEY`.
const DEFAULT_READONLY_KEY: &str = "dev-readonly-key";
/// How long a quote takes: it stands for a call to a pricing system.
const QUOTE_WORK: Duration = Duration::from_millis(20);

// ---- the carts: keyed entities --------------------------------------------------------------

/// Adds `quantity` of `item` to the cart; answers the cart once the change is saved, or why
/// it was not saved.
#[derive(Debug, Clone, Serialize, Deserialize, RemoteMessage)]
#[remote(name = "frontdoor.AddItem", result = "Result<CartView, String>")]
struct AddItem {
    item: String,
    quantity: u32,
}

/// Answers the cart's contents (a read: safe to send twice).
#[derive(Debug, Clone, Serialize, Deserialize, RemoteMessage)]
#[remote(name = "frontdoor.ViewCart", result = "CartView")]
struct ViewCart;
impl Idempotent for ViewCart {}

/// A cart as the clients see it: the JSON reply of both cart routes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CartView {
    /// The cart's key.
    cart: String,
    /// Item name to quantity.
    items: BTreeMap<String, u32>,
    /// The number of items in the cart.
    count: u32,
    /// The node its activation runs on.
    node: String,
}

/// One shopping cart: the activation of one key.
struct Cart {
    key: String,
    /// The contents, as last saved.
    items: BTreeMap<String, u32>,
    state: EntityState,
    node: String,
}

impl Cart {
    fn view(&self) -> CartView {
        CartView {
            cart: self.key.clone(),
            items: self.items.clone(),
            count: self.items.values().sum(),
            node: self.node.clone(),
        }
    }
}

impl Actor for Cart {
    type Context = Context<Self>;
}

impl Handler<AddItem> for Cart {
    // Atomic: the cart handles nothing else until the save is done, so concurrent additions
    // cannot overwrite each other.
    type Result = AtomicResponse<Self, Result<CartView, String>>;

    fn handle(&mut self, add: AddItem, _: &mut Context<Self>) -> Self::Result {
        let mut next = self.items.clone();
        *next.entry(add.item).or_insert(0) += add.quantity;
        let state = self.state.clone();
        let save: ResponseActFuture<Self, Result<CartView, String>> = Box::pin(
            async move { state.save(&next).await.map(|()| next) }
                .into_actor(self)
                .map(|saved, cart, _| {
                    // Only a saved change becomes the cart's, and is acknowledged.
                    cart.items = saved.map_err(|e| e.to_string())?;
                    Ok(cart.view())
                }),
        );
        AtomicResponse::new(save)
    }
}

impl Handler<ViewCart> for Cart {
    type Result = MessageResult<ViewCart>;

    fn handle(&mut self, _: ViewCart, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.view())
    }
}

actormesh::remote_actor!(Cart = "frontdoor.Cart" { AddItem, ViewCart });

impl Entity for Cart {
    const KIND: &'static str = "carts";

    fn activate(ctx: &mut EntityContext<'_, Self>) -> Self {
        let items = match ctx.state::<BTreeMap<String, u32>>() {
            Ok(saved) => saved.unwrap_or_default(),
            Err(e) => {
                // Not readable by this version: serve nothing rather than overwrite it.
                eprintln!("cart {:?}: unreadable state: {e}", ctx.key_str());
                ctx.stop();
                BTreeMap::new()
            }
        };
        Cart {
            key: String::from_utf8_lossy(ctx.key()).into_owned(),
            items,
            state: ctx.state_handle(),
            node: ctx.node().id().to_string(),
        }
    }
}

// ---- the quote workers: a group of stateless instances --------------------------------------

/// Asks for the price of one article.
#[derive(Debug, Clone, Serialize, Deserialize, RemoteMessage)]
#[remote(name = "frontdoor.Quote", result = "Price")]
struct Quote {
    sku: String,
}
impl Idempotent for Quote {}

/// A price: the JSON reply of `GET /quote/{sku}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Price {
    /// The article.
    sku: String,
    /// Its price in cents.
    cents: u64,
    /// The currency of `cents`.
    currency: String,
    /// The node of the worker that answered.
    node: String,
}

/// A stateless quote worker: any instance gives the same price.
struct Quoter {
    node: String,
}

impl Actor for Quoter {
    type Context = Context<Self>;
}

impl Handler<Quote> for Quoter {
    // Not bound to the actor: a worker quotes many articles at once.
    type Result = ResponseFuture<Price>;

    fn handle(&mut self, quote: Quote, _: &mut Context<Self>) -> Self::Result {
        let node = self.node.clone();
        Box::pin(async move {
            tokio::time::sleep(QUOTE_WORK).await;
            // A made-up price list: a hash of the article, from 1.00 to 100.99.
            let hash = quote.sku.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
            Price {
                cents: 100 + hash % 10_000,
                currency: "EUR".to_owned(),
                sku: quote.sku,
                node,
            }
        })
    }
}

actormesh::remote_actor!(Quoter = "frontdoor.Quoter" { Quote });

// ---- the HTTP contract ----------------------------------------------------------------------

/// The JSON body of `POST /carts/{id}/items`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewItem {
    item: String,
    quantity: u32,
}

/// A path parameter that names a cart or an article: 1 to 64 letters, digits, `-` or `_`.
fn checked_name(name: &str, value: &str) -> Result<String, ApiError> {
    let fits = (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if fits {
        Ok(value.to_owned())
    } else {
        Err(ApiError::bad_request(
            name,
            format!("`{name}` is 1 to 64 letters, digits, `-` or `_`"),
        ))
    }
}

/// The gateway: its authentication, limits and three routes, sending through `node`.
fn gateway(node: &Node, api_key: &str, readonly_key: &str) -> Result<Gateway, BoxError> {
    let auth = Auth::new()
        .api_key(api_key, "dev", ["carts:write"])
        .api_key(readonly_key, "dashboard", []);
    let gateway = Gateway::builder(node.clone())
        .auth(auth)
        // Every route, per client (API key, or address when anonymous), unless it has its own.
        .rate_limit(RateLimit::per_second(50).burst(100))
        .max_body_bytes(16 * 1024)
        .max_in_flight(1_000)
        .timeout(Duration::from_secs(5))
        .max_timeout(Duration::from_secs(10))
        .route(
            Route::get("/quote/{sku}")
                .group::<Quoter>(QUOTERS)
                .ask_idempotent(|call| {
                    Ok(Quote {
                        sku: checked_name("sku", call.param_str("sku")?)?,
                    })
                })
                .public()
                .timeout(Duration::from_secs(2))
                .rate_limit(RateLimit::per_second(10).burst(20)),
        )
        .route(
            Route::get("/carts/{id}")
                .entity::<Cart>("id")
                .ask_idempotent(|call| {
                    checked_name("id", call.param_str("id")?)?;
                    Ok(ViewCart)
                })
                .public(),
        )
        .route(
            Route::post("/carts/{id}/items")
                .entity::<Cart>("id")
                .body::<NewItem>()
                .ask_with(
                    |call| {
                        checked_name("id", call.param_str("id")?)?;
                        let NewItem { item, quantity } = call.body;
                        let item = checked_name("item", &item)?;
                        if !(1..=99).contains(&quantity) {
                            return Err(ApiError::bad_request(
                                "quantity",
                                "`quantity` is from 1 to 99",
                            ));
                        }
                        Ok(AddItem { item, quantity })
                    },
                    // Not saved (the store refused, or the cart is moving): nothing changed,
                    // the client may try again.
                    |saved| {
                        saved.map_err(|_| {
                            ApiError::unavailable(
                                "the cart could not save the change; nothing was added",
                                Duration::from_secs(1),
                            )
                        })
                    },
                )
                .scopes(["carts:write"])
                .timeout(Duration::from_secs(3)),
        )
        .build()?;
    Ok(gateway)
}

// ---- the cluster ----------------------------------------------------------------------------

/// Starts a node of the `shop` cluster that hosts carts and runs one quote worker.
async fn start_node(
    discovery: &MemoryDiscovery,
    id: &str,
    store: &Arc<MemoryStore>,
) -> Result<Node, BoxError> {
    let node = Node::builder()
        .cluster("shop")
        .node_id(id)
        .discovery(discovery.clone())
        .shutdown_timeout(Duration::from_secs(3))
        .entity::<Cart>(EntityConfig::default().shards(SHARDS).store(store.clone()))
        .start()
        .await?;
    let worker = node.spawn(Quoter {
        node: id.to_owned(),
    });
    node.join_group(QUOTERS, &worker).await?;
    Ok(node)
}

/// Waits (at most 5 s) until every shard of the carts is held by the node it is assigned to.
async fn settled(nodes: &[Node]) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let statuses: Vec<_> = nodes
            .iter()
            .filter_map(|n| n.entity_status(Cart::KIND))
            .collect();
        let hosted: usize = statuses.iter().map(|s| s.hosted_here).sum();
        let still = statuses
            .iter()
            .all(|s| s.in_motion_here == 0 && s.hosted_here == s.assigned_here);
        if hosted == SHARDS as usize && still {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("the shards did not settle within 5 s: {statuses:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The value of the environment variable `name`, or `default`.
fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// Prints a few curl command lines against `addr`.
fn print_usage(addr: SocketAddr) {
    // Show the key itself only when it is the development default.
    let key = match std::env::var("GATEWAY_API_KEY") {
        Ok(_) => "$GATEWAY_API_KEY".to_owned(),
        Err(_) => DEFAULT_API_KEY.to_owned(),
    };
    println!(
        "front door listening on http://{addr} (gateway on {})",
        NODES[0]
    );
    println!("try:");
    println!("  curl -s http://{addr}/quote/apple");
    println!(
        "  curl -s -X POST http://{addr}/carts/alice/items -H \"X-Api-Key: {key}\" \
         -H 'Content-Type: application/json' -d '{{\"item\": \"apple\", \"quantity\": 2}}'"
    );
    println!("  curl -s http://{addr}/carts/alice");
    println!(
        "  curl -s -i -X POST http://{addr}/carts/alice/items \
         -H 'Content-Type: application/json' -d '{{\"item\": \"pear\", \"quantity\": 1}}'"
    );
    println!("Ctrl-C or SIGTERM to stop");
}

/// Waits for Ctrl-C, or SIGTERM on Unix; answers which came.
async fn stop_signal() -> Result<&'static str, BoxError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            interrupted = tokio::signal::ctrl_c() => interrupted.map(|()| "Ctrl-C").map_err(Into::into),
            _ = terminate.recv() => Ok("SIGTERM"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok("Ctrl-C")
    }
}

/// Starts the cluster and the gateway, then serves until a signal (or, with `self_test`,
/// sends the test requests), and stops everything.
async fn run(self_test: bool) -> Result<(), BoxError> {
    let api_key = env_or("GATEWAY_API_KEY", DEFAULT_API_KEY);
    let readonly_key = env_or("GATEWAY_READONLY_KEY", DEFAULT_READONLY_KEY);
    if readonly_key == api_key {
        return Err("GATEWAY_READONLY_KEY must differ from GATEWAY_API_KEY".into());
    }
    let addr: SocketAddr = match std::env::var("GATEWAY_ADDR") {
        Ok(addr) => addr
            .parse()
            .map_err(|e| format!("GATEWAY_ADDR {addr:?}: {e}"))?,
        Err(_) if self_test => "127.0.0.1:0".parse()?,
        Err(_) => DEFAULT_ADDR.parse()?,
    };

    let discovery = MemoryDiscovery::new();
    let store = Arc::new(MemoryStore::new());
    let mut nodes = Vec::new();
    for id in NODES {
        nodes.push(start_node(&discovery, id, &store).await?);
    }
    settled(&nodes).await?;
    nodes[0]
        .group::<Quoter>(QUOTERS)
        .await?
        .wait_for_instances(NODES.len(), Duration::from_secs(5))
        .await?;

    let running = gateway(&nodes[0], &api_key, &readonly_key)?
        .serve(addr)
        .await
        .map_err(|e| format!("listening on {addr}: {e}"))?;
    let addr = running.local_addr();
    let outcome = if self_test {
        self_test_requests(addr, &api_key, &readonly_key).await
    } else {
        print_usage(addr);
        let signal = stop_signal().await?;
        println!("{signal}: draining the gateway");
        Ok(())
    };
    stop(running, nodes).await;
    outcome
}

/// Drains the gateway (at most 10 s), then shuts the nodes down.
async fn stop(running: RunningGateway, nodes: Vec<Node>) {
    let report = running.shutdown(Duration::from_secs(10)).await;
    println!(
        "gateway stopped: {} requests in flight at the start of the drain, {} cut off",
        report.in_flight_at_start, report.cut_off
    );
    for node in nodes {
        node.shutdown().await;
    }
    println!("nodes stopped");
}

// ---- --self-test: a few real requests -------------------------------------------------------

/// What one HTTP exchange answered.
struct Answer {
    status_line: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    /// The value of the header `name` (case-insensitive), if present.
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one HTTP/1.1 request on a new connection and reads the answer.
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Answer, BoxError> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    let declares_length = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !declares_length {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await?;
    tokio::time::timeout(Duration::from_secs(10), read_answer(&mut stream))
        .await
        .map_err(|_| format!("{method} {path}: no answer within 10 s"))?
}

/// Reads a response: its head, then as many body bytes as its `Content-Length` says (or up to
/// the end of the connection).
async fn read_answer(stream: &mut tokio::net::TcpStream) -> Result<Answer, BoxError> {
    let mut raw = Vec::new();
    let mut chunk = [0_u8; 4096];
    loop {
        let read = stream.read(&mut chunk).await?;
        raw.extend_from_slice(&chunk[..read]);
        let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n");
        if let Some(end) = head_end {
            let head = String::from_utf8_lossy(&raw[..end]).into_owned();
            let mut lines = head.split("\r\n");
            let status_line = lines.next().unwrap_or_default().to_owned();
            let headers: Vec<(String, String)> = lines
                .filter_map(|line| line.split_once(':'))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect();
            let length = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse::<usize>().ok());
            let body = &raw[end + 4..];
            if read == 0 || length.is_some_and(|n| body.len() >= n) {
                let status = status_line
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("not an HTTP status line: {status_line:?}"))?;
                return Ok(Answer {
                    status,
                    status_line,
                    headers,
                    body: String::from_utf8_lossy(body).into_owned(),
                });
            }
        }
        if read == 0 {
            return Err("the connection closed before a complete answer".into());
        }
    }
}

/// Checks as they are made: prints each answer's status line, and counts the surprises.
struct Checks {
    addr: SocketAddr,
    failed: usize,
}

impl Checks {
    /// Sends a request and checks its status, and that the body contains `contains`.
    async fn expect(
        &mut self,
        what: &str,
        request: (&str, &str, &[(&str, &str)], &str),
        status: u16,
        contains: &str,
    ) -> Option<Answer> {
        let (method, path, headers, body) = request;
        match send(self.addr, method, path, headers, body).await {
            Ok(answer) => {
                let ok = answer.status == status && answer.body.contains(contains);
                let mark = if ok { "ok  " } else { "FAIL" };
                println!("{mark} {method} {path} ({what}): {}", answer.status_line);
                if !ok {
                    println!(
                        "     expected {status} with {contains:?}; body: {}",
                        answer.body
                    );
                    self.failed += 1;
                }
                Some(answer)
            }
            Err(e) => {
                println!("FAIL {method} {path} ({what}): {e}");
                self.failed += 1;
                None
            }
        }
    }

    /// Records a check made by hand.
    fn check(&mut self, what: &str, ok: bool) {
        println!("{} {what}", if ok { "ok  " } else { "FAIL" });
        if !ok {
            self.failed += 1;
        }
    }
}

/// Sends the self-test's requests to the gateway at `addr`; an error if any answer was not
/// as expected.
async fn self_test_requests(
    addr: SocketAddr,
    api_key: &str,
    readonly_key: &str,
) -> Result<(), BoxError> {
    println!("self-test against http://{addr}");
    let mut checks = Checks { addr, failed: 0 };
    let json = ("Content-Type", "application/json");
    let writer = [json, ("X-Api-Key", api_key)];
    let reader = [json, ("X-Api-Key", readonly_key)];

    let quote = checks
        .expect(
            "a quote",
            ("GET", "/quote/apple", &[], ""),
            200,
            "\"sku\":\"apple\"",
        )
        .await;
    if let Some(quote) = quote {
        let trace_id = quote.header("x-trace-id").unwrap_or_default();
        checks.check(
            "the answer carries a 32-digit X-Trace-Id",
            trace_id.len() == 32,
        );
    }
    let add = r#"{"item": "apple", "quantity": 2}"#;
    let path = "/carts/alice/items";
    checks
        .expect(
            "add with the key",
            ("POST", path, &writer, add),
            200,
            "\"apple\":2",
        )
        .await;
    checks
        .expect(
            "read the cart",
            ("GET", "/carts/alice", &[], ""),
            200,
            "\"count\":2",
        )
        .await;
    checks
        .expect(
            "add without a key",
            ("POST", path, &[json], add),
            401,
            "unauthorized",
        )
        .await;
    checks
        .expect(
            "add without the scope",
            ("POST", path, &reader, add),
            403,
            "carts:write",
        )
        .await;
    let wrong = r#"{"item": "apple", "quantity": "two"}"#;
    checks
        .expect(
            "a malformed body",
            ("POST", path, &writer, wrong),
            400,
            "\"field\":\"quantity\"",
        )
        .await;
    let zero = r#"{"item": "apple", "quantity": 0}"#;
    checks
        .expect(
            "a refused quantity",
            ("POST", path, &writer, zero),
            400,
            "\"field\":\"quantity\"",
        )
        .await;
    let text = [("Content-Type", "text/plain"), ("X-Api-Key", api_key)];
    checks
        .expect(
            "a body not JSON",
            ("POST", path, &text, "apple"),
            415,
            "unsupported_media_type",
        )
        .await;
    // Declares a body over the limit: refused on the headers, before the body is sent.
    let large = [json, ("X-Api-Key", api_key), ("Content-Length", "100000")];
    checks
        .expect(
            "a body too large",
            ("POST", path, &large, ""),
            413,
            "payload_too_large",
        )
        .await;
    let hurried = [("X-Request-Timeout", "5ms")];
    checks
        .expect(
            "a deadline shorter than the work",
            ("GET", "/quote/pear", &hurried, ""),
            504,
            "deadline_exceeded",
        )
        .await;
    checks
        .expect(
            "no such route",
            ("GET", "/orders", &[], ""),
            404,
            "not_found",
        )
        .await;
    checks
        .expect(
            "no such method",
            ("DELETE", "/carts/alice", &[], ""),
            405,
            "method_not_allowed",
        )
        .await;

    // 10 quotes per second and client, bursts of 20: 30 at once meet the limit.
    let burst = (0..30).map(|_| send(addr, "GET", "/quote/plum", &[], ""));
    let mut limited = None;
    for answer in futures_util::future::join_all(burst).await {
        let answer = answer?;
        if answer.status == 429 {
            limited = Some(answer);
        }
    }
    match limited {
        Some(answer) => {
            println!(
                "ok   GET /quote/plum (30 at once, over the rate limit): {}",
                answer.status_line
            );
            checks.check(
                "the 429 says when to come back (Retry-After)",
                answer.header("retry-after").is_some(),
            );
        }
        None => checks.check("a burst over the rate limit is refused with 429", false),
    }

    if checks.failed == 0 {
        println!("self-test passed");
        Ok(())
    } else {
        Err(format!("self-test: {} checks failed", checks.failed).into())
    }
}

/// Sets up the log, then runs the example (or its self-test).
#[actix::main]
async fn main() -> Result<(), BoxError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,actormesh_gateway=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let self_test = std::env::args().skip(1).any(|arg| arg == "--self-test");
    if self_test {
        // Every wait is bounded; this bounds the whole test as well.
        match tokio::time::timeout(Duration::from_secs(60), run(true)).await {
            Ok(done) => done,
            Err(_) => Err("the self-test did not finish within 60 s".into()),
        }
    } else {
        run(false).await
    }
}
