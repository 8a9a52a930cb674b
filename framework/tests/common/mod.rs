//! Actors, messages and waiting helpers shared by the integration tests.
//!
//! The tests wait on conditions, never for "long enough": work is kept in flight with a
//! [`Gate`] the test opens (not a handler that sleeps), a future's state is checked with
//! [`poll_once`], and a state that can only be observed by looking at it is awaited with
//! [`eventually`], which fails with what it last saw.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use actix::{Actor, ActorContext, Context, Handler, Message, Recipient};
use actormesh::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

pub mod accounts;
pub mod link;

/// Holds handlers until the test lets them through, and tells the test how many arrived.
///
/// A handler calls [`Gate::pass`]; the test awaits [`Gate::arrived`] to know the work is being
/// handled (in flight), then lets it go with [`Gate::let_through`] or [`Gate::open`]. Cheap to
/// clone: every clone is the same gate.
#[derive(Clone)]
pub struct Gate(Arc<GateState>);

struct GateState {
    /// Permits to pass; closed means open for everyone.
    pass: Semaphore,
    /// One permit per arrival, ever.
    arrived: Semaphore,
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("open", &self.0.pass.is_closed())
            .field("arrived", &self.0.arrived.available_permits())
            .finish()
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::closed()
    }
}

impl Gate {
    /// A closed gate: every handler waits at it.
    pub fn closed() -> Self {
        Gate(Arc::new(GateState {
            pass: Semaphore::new(0),
            arrived: Semaphore::new(0),
        }))
    }

    /// Arrives at the gate and waits until it lets this one through.
    pub async fn pass(&self) {
        self.0.arrived.add_permits(1);
        if let Ok(permit) = self.0.pass.acquire().await {
            permit.forget();
        }
    }

    /// Waits until `n` handlers in all have arrived at the gate (at most 10 s).
    pub async fn arrived(&self, n: u32) {
        let seen = tokio::time::timeout(Duration::from_secs(10), self.0.arrived.acquire_many(n))
            .await
            .unwrap_or_else(|_| panic!("{n} arrivals at the gate within 10 s: {self:?}"));
        // Given back: the count is of arrivals ever, not since the last look.
        drop(seen);
    }

    /// Lets `n` waiting (or future) handlers through.
    pub fn let_through(&self, n: usize) {
        self.0.pass.add_permits(n);
    }

    /// Opens the gate for good: every handler passes, now and later.
    pub fn open(&self) {
        self.0.pass.close();
    }
}

/// Polls `future` once: its output if it is already done, `None` if it waits.
pub async fn poll_once<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        Poll::Ready(match Pin::new(&mut *future).poll(cx) {
            Poll::Ready(output) => Some(output),
            Poll::Pending => None,
        })
    })
    .await
}

#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u64")]
pub struct Add(pub u64);
impl RemoteMessage for Add {
    const NAME: &'static str = "test.Add";
}

#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "u64")]
pub struct Get;
impl RemoteMessage for Get {
    const NAME: &'static str = "test.Get";
}

#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
pub struct Stop;
impl RemoteMessage for Stop {
    const NAME: &'static str = "test.Stop";
}

#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
pub struct Panic;
impl RemoteMessage for Panic {
    const NAME: &'static str = "test.Panic";
}

/// Waits at the counter's [`Gate`]; the counter handles other messages meanwhile.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
pub struct Hold;
impl RemoteMessage for Hold {
    const NAME: &'static str = "test.Hold";
}

/// Keeps the counter busy at its [`Gate`]: no other message is handled until it passes.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
pub struct Block;
impl RemoteMessage for Block {
    const NAME: &'static str = "test.Block";
}

impl Handler<Block> for Counter {
    type Result = actix::AtomicResponse<Self, ()>;
    fn handle(&mut self, _: Block, _: &mut Context<Self>) -> Self::Result {
        use actix::WrapFuture;
        let gate = self.gate.clone();
        actix::AtomicResponse::new(Box::pin(async move { gate.pass().await }.into_actor(self)))
    }
}

/// Answers the length of its payload.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "usize")]
pub struct Echoed(pub Vec<u8>);
impl RemoteMessage for Echoed {
    const NAME: &'static str = "test.Echoed";
}

impl Handler<Echoed> for Counter {
    type Result = usize;
    fn handle(&mut self, msg: Echoed, _: &mut Context<Self>) -> usize {
        msg.0.len()
    }
}

/// Asks `counter` (a reference that travelled inside the message) to add `amount` and
/// returns what it answered: the reply-to pattern across nodes.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "Result<u64, String>")]
pub struct Forward {
    pub counter: ActorRef<Counter>,
    pub amount: u64,
}
impl RemoteMessage for Forward {
    const NAME: &'static str = "test.Forward";
}

#[derive(Default)]
pub struct Counter {
    pub total: u64,
    /// Where [`Hold`] and [`Block`] wait (closed unless the test opens it).
    pub gate: Gate,
}

impl Counter {
    /// A counter whose [`Hold`] and [`Block`] wait at `gate`.
    pub fn gated(gate: &Gate) -> Self {
        Counter {
            total: 0,
            gate: gate.clone(),
        }
    }
}

impl Actor for Counter {
    type Context = Context<Self>;
}

impl Spawnable for Counter {
    type Args = u64;
    fn from_args(args: u64, _: &mut actormesh::SpawnContext<'_, Self>) -> Self {
        Counter {
            total: args,
            gate: Gate::closed(),
        }
    }
}

impl Handler<Add> for Counter {
    type Result = u64;
    fn handle(&mut self, msg: Add, _: &mut Context<Self>) -> u64 {
        self.total += msg.0;
        self.total
    }
}

impl Handler<Get> for Counter {
    type Result = u64;
    fn handle(&mut self, _: Get, _: &mut Context<Self>) -> u64 {
        self.total
    }
}

impl Handler<Stop> for Counter {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Panic> for Counter {
    type Result = ();
    fn handle(&mut self, _: Panic, _: &mut Context<Self>) {
        panic!("asked to panic");
    }
}

impl Handler<Hold> for Counter {
    type Result = actix::ResponseFuture<()>;
    fn handle(&mut self, _: Hold, _: &mut Context<Self>) -> Self::Result {
        let gate = self.gate.clone();
        Box::pin(async move { gate.pass().await })
    }
}

actormesh::remote_actor!(Counter = "test.Counter" { Add, Get, Stop, Panic, Hold, Echoed, Block });

/// Forwards to the counter in the message.
pub struct Forwarder;

impl Actor for Forwarder {
    type Context = Context<Self>;
}

impl Handler<Forward> for Forwarder {
    type Result = actix::ResponseFuture<Result<u64, String>>;
    fn handle(&mut self, msg: Forward, _: &mut Context<Self>) -> Self::Result {
        Box::pin(async move {
            msg.counter
                .ask(Add(msg.amount))
                .await
                .map_err(|e| e.to_string())
        })
    }
}

actormesh::remote_actor!(Forwarder = "test.Forwarder" { Forward });

/// Records `Terminated` notices.
pub struct Watcher {
    pub seen: tokio::sync::mpsc::UnboundedSender<Terminated>,
}

impl Actor for Watcher {
    type Context = Context<Self>;
}

impl Handler<Terminated> for Watcher {
    type Result = ();
    fn handle(&mut self, msg: Terminated, _: &mut Context<Self>) {
        let _ = self.seen.send(msg);
    }
}

pub fn watcher() -> (
    Recipient<Terminated>,
    tokio::sync::mpsc::UnboundedReceiver<Terminated>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = Watcher { seen: tx }.start();
    (addr.recipient(), rx)
}

/// Two nodes sharing one memory discovery.
pub async fn pair() -> (MemoryDiscovery, Node, Node) {
    let discovery = MemoryDiscovery::new();
    let a = Node::builder()
        .cluster("test")
        .node_id("a")
        .discovery(discovery.clone())
        .spawnable::<Counter>()
        .ask_timeout(Duration::from_secs(5))
        .start()
        .await
        .expect("node a starts");
    let b = Node::builder()
        .cluster("test")
        .node_id("b")
        .discovery(discovery.clone())
        .spawnable::<Counter>()
        .start()
        .await
        .expect("node b starts");
    a.wait_for_node(b.id(), Duration::from_secs(5))
        .await
        .unwrap();
    b.wait_for_node(a.id(), Duration::from_secs(5))
        .await
        .unwrap();
    (discovery, a, b)
}

/// How often [`eventually`] looks.
const POLL: Duration = Duration::from_millis(10);

/// Waits for a state that can only be observed by looking at it (a view, a counter, a
/// registry): runs `poll` until it answers `Ok`, for at most `limit`, and returns its value.
/// `Err` carries what was observed; on timeout, the test fails naming `what` and the last
/// observation.
///
/// Prefer an event when the API offers one (`Node::subscribe`, `Node::wait_for_node`,
/// `GroupRef::wait_for_instances`, `ActorRef::watch`, an ask's reply, a [`Gate`]).
pub async fn eventually<T, S, F, Fut>(what: &str, limit: Duration, mut poll: F) -> T
where
    S: fmt::Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, S>>,
{
    let started = tokio::time::Instant::now();
    let deadline = started + limit;
    let mut last = String::from("no look finished");
    loop {
        match tokio::time::timeout_at(deadline, poll()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(seen)) => last = format!("{seen:?}"),
            Err(_) => break,
        }
        if tokio::time::Instant::now() + POLL >= deadline {
            break;
        }
        // The pause between two looks: nothing signals this state, it can only be looked at.
        tokio::time::sleep(POLL).await;
    }
    panic!(
        "{what}: not seen within {limit:?} (looked for {:?}); last seen: {last}",
        started.elapsed()
    );
}

/// [`eventually`] for a condition checked without awaiting.
pub async fn eventually_now<T, S: fmt::Debug>(
    what: &str,
    limit: Duration,
    mut look: impl FnMut() -> Result<T, S>,
) -> T {
    eventually(what, limit, || std::future::ready(look())).await
}

/// Spawns a `Counter` on `host` and returns a reference to it as seen from `from`.
pub async fn counter_seen_from(host: &Node, from: &Node, name: &str) -> ActorRef<Counter> {
    let counter = host.spawn(Counter::default());
    host.register_name(name, &counter).await.unwrap();
    from.lookup::<Counter>(name).await.unwrap()
}

/// [`counter_seen_from`] for a counter whose [`Hold`] and [`Block`] wait at the returned gate.
pub async fn gated_counter_seen_from(
    host: &Node,
    from: &Node,
    name: &str,
) -> (ActorRef<Counter>, Gate) {
    let gate = Gate::closed();
    let counter = host.spawn(Counter::gated(&gate));
    host.register_name(name, &counter).await.unwrap();
    (from.lookup::<Counter>(name).await.unwrap(), gate)
}
