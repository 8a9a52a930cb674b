//! A three-node in-process cluster with the test services, and a small HTTP client.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actormesh::prelude::*;
use actormesh::{Entity, EntityConfig, EntityContext, Idempotent};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

// ---- the services -------------------------------------------------------------------------

/// A group member that greets, sleeps on request and panics on request.
pub struct Greeter {
    pub node: String,
}

impl Actor for Greeter {
    type Context = Context<Self>;
}

#[derive(Debug, Clone, Serialize, Deserialize, RemoteMessage)]
#[remote(name = "gw.Greet", result = "Greeting")]
pub struct Greet {
    pub name: String,
}
impl Idempotent for Greet {}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Greeting {
    pub text: String,
    pub node: String,
}

/// `Slow` handlers running now on every node of the process, by their `ms`: each test asks
/// for durations of its own, so tests running at once do not count each other's.
static SLOW_RUNNING: std::sync::Mutex<std::collections::BTreeMap<u64, usize>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());
/// Notified whenever a `Slow` handler starts or ends.
static SLOW_CHANGED: tokio::sync::Notify = tokio::sync::Notify::const_new();

fn slow_changed(ms: u64, up: bool) {
    let mut running = SLOW_RUNNING.lock().unwrap();
    let n = running.entry(ms).or_default();
    *n = if up { *n + 1 } else { n.saturating_sub(1) };
    SLOW_CHANGED.notify_waiters();
}

/// Waits (up to 10 s) until `n` handlers of `Slow { ms }` are running at once.
pub async fn wait_for_slow(ms: u64, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let changed = SLOW_CHANGED.notified();
        let mut changed = std::pin::pin!(changed);
        changed.as_mut().enable();
        let running = SLOW_RUNNING.lock().unwrap().get(&ms).copied().unwrap_or(0);
        if running >= n {
            return;
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            panic!("{n} `Slow {{ ms: {ms} }}` handlers never ran at once ({running} did)");
        }
    }
}

/// Sleeps `ms` then answers the node's name.
#[derive(Debug, Clone, Serialize, Deserialize, RemoteMessage)]
#[remote(name = "gw.Slow", result = "String")]
pub struct Slow {
    pub ms: u64,
}
impl Idempotent for Slow {}

/// Panics in the handler.
#[derive(Debug, Clone, Serialize, Deserialize, RemoteMessage)]
#[remote(name = "gw.Boom", result = "()")]
pub struct Boom;

impl Handler<Greet> for Greeter {
    type Result = MessageResult<Greet>;
    fn handle(&mut self, m: Greet, _: &mut Context<Self>) -> Self::Result {
        MessageResult(Greeting {
            text: format!("hello, {}", m.name),
            node: self.node.clone(),
        })
    }
}

impl Handler<Slow> for Greeter {
    type Result = ResponseActFuture<Self, String>;
    fn handle(&mut self, m: Slow, _: &mut Context<Self>) -> Self::Result {
        let node = self.node.clone();
        slow_changed(m.ms, true);
        Box::pin(
            async move {
                // The handler's work: taking this long.
                tokio::time::sleep(Duration::from_millis(m.ms)).await;
                slow_changed(m.ms, false);
                node
            }
            .into_actor(self),
        )
    }
}

impl Handler<Boom> for Greeter {
    type Result = ();
    fn handle(&mut self, _: Boom, _: &mut Context<Self>) {
        panic!("secret internal detail 4711");
    }
}

actormesh::remote_actor!(Greeter = "gw.Greeter" { Greet, Slow, Boom });

/// A named actor that counts what it was told.
#[derive(Default)]
pub struct Ledger {
    entries: Vec<String>,
}

impl Actor for Ledger {
    type Context = Context<Self>;
}

#[derive(Debug, Clone, Serialize, Deserialize, RemoteMessage)]
#[remote(name = "gw.Append", result = "usize")]
pub struct Append {
    pub entry: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, RemoteMessage)]
#[remote(name = "gw.Entries", result = "Vec<String>")]
pub struct Entries;
impl Idempotent for Entries {}

impl Handler<Append> for Ledger {
    type Result = usize;
    fn handle(&mut self, m: Append, _: &mut Context<Self>) -> usize {
        self.entries.push(m.entry);
        self.entries.len()
    }
}

impl Handler<Entries> for Ledger {
    type Result = MessageResult<Entries>;
    fn handle(&mut self, _: Entries, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.entries.clone())
    }
}

actormesh::remote_actor!(Ledger = "gw.Ledger" { Append, Entries });

/// A keyed entity: a running total per key.
pub struct Tally {
    total: u64,
    node: String,
}

impl Actor for Tally {
    type Context = Context<Self>;
}

impl Entity for Tally {
    const KIND: &'static str = "tallies";
    fn activate(ctx: &mut EntityContext<'_, Self>) -> Self {
        Tally {
            total: 0,
            node: ctx.node().id().to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, RemoteMessage)]
#[remote(name = "gw.Add", result = "Total")]
pub struct Add {
    pub amount: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, RemoteMessage)]
#[remote(name = "gw.Read", result = "Total")]
pub struct Read;
impl Idempotent for Read {}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Total {
    pub total: u64,
    pub node: String,
}

impl Handler<Add> for Tally {
    type Result = MessageResult<Add>;
    fn handle(&mut self, m: Add, _: &mut Context<Self>) -> Self::Result {
        self.total += m.amount;
        MessageResult(Total {
            total: self.total,
            node: self.node.clone(),
        })
    }
}

impl Handler<Read> for Tally {
    type Result = MessageResult<Read>;
    fn handle(&mut self, _: Read, _: &mut Context<Self>) -> Self::Result {
        MessageResult(Total {
            total: self.total,
            node: self.node.clone(),
        })
    }
}

actormesh::remote_actor!(Tally = "gw.Tally" { Add, Read });

// ---- the cluster --------------------------------------------------------------------------

/// Three nodes: `a` runs the gateway (and hosts nothing), `b` and `c` each run a `Greeter` in
/// group `greeters` and host the `Tally` entities; `b` runs the `Ledger` named `ledger`.
pub struct Cluster {
    pub a: Node,
    pub b: Node,
    pub c: Node,
}

impl Cluster {
    pub async fn start() -> Cluster {
        let discovery = MemoryDiscovery::new();
        let node = |id: &str, host: bool| {
            let mut builder = Node::builder()
                .node_id(id)
                .discovery(discovery.clone())
                .ask_timeout(Duration::from_secs(5));
            if host {
                builder = builder.entity::<Tally>(EntityConfig::default().shards(8));
            }
            builder.start()
        };
        let a = node("gw-a", false).await.unwrap();
        let b = node("gw-b", true).await.unwrap();
        let c = node("gw-c", true).await.unwrap();
        for n in [&b, &c] {
            let greeter = n.spawn(Greeter {
                node: n.id().to_string(),
            });
            n.join_group("greeters", &greeter).await.unwrap();
        }
        let ledger = b.spawn(Ledger::default());
        b.register_name("ledger", &ledger).await.unwrap();
        let group = a.group::<Greeter>("greeters").await.unwrap();
        group
            .wait_for_instances(2, Duration::from_secs(10))
            .await
            .unwrap();
        Cluster { a, b, c }
    }

    pub async fn stop(self) {
        for n in [self.a, self.b, self.c] {
            n.shutdown().await;
        }
    }
}

// ---- routes used by several tests ----------------------------------------------------------

/// `GET {path}` (with a `{name}` parameter): `Greet` one instance of `group`.
pub fn greet_route(path: &str, group: &str) -> actormesh_gateway::Route {
    actormesh_gateway::Route::get(path)
        .group::<Greeter>(group)
        .ask_idempotent(|call| {
            Ok(Greet {
                name: call.param("name")?,
            })
        })
}

/// `GET {path}` (with an `{id}` parameter): `Read` the `Tally` entity of that key.
pub fn read_tally_route(path: &str) -> actormesh_gateway::Route {
    actormesh_gateway::Route::get(path)
        .entity::<Tally>("id")
        .ask_idempotent(|_| Ok(Read))
}

// ---- HTTP ---------------------------------------------------------------------------------

/// What a request got back.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: serde_json::Value,
    pub text: String,
}

impl Answer {
    pub fn error_code(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }
    pub fn field(&self) -> &str {
        self.body["field"].as_str().unwrap_or("")
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A plain HTTP/1.1 client (hyper's), one connection pool.
#[derive(Clone)]
pub struct Http {
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    base: String,
}

impl Http {
    pub fn new(addr: std::net::SocketAddr) -> Http {
        Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{addr}"),
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, &[], "").await
    }

    pub async fn post(&self, path: &str, body: &str) -> Answer {
        self.send(
            Method::POST,
            path,
            &[("content-type", "application/json")],
            body,
        )
        .await
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        self.try_send(method, path, headers, Bytes::from(body.to_owned()))
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    pub async fn try_send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Answer, String> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
            .await
            .map_err(|_| "no answer within 30 s".to_owned())?
            .map_err(|e| format!("{e:?}"))?;
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
            text,
        })
    }
}

/// Counts answers by status.
#[derive(Default, Clone)]
pub struct Statuses(Arc<std::sync::Mutex<HashMap<u16, u64>>>);

impl Statuses {
    pub fn add(&self, status: StatusCode) {
        *self.0.lock().unwrap().entry(status.as_u16()).or_default() += 1;
    }
    pub fn get(&self, status: u16) -> u64 {
        self.0.lock().unwrap().get(&status).copied().unwrap_or(0)
    }
}

pub static COUNTER: AtomicU64 = AtomicU64::new(0);

pub fn next() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}
