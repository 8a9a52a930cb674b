//! Actors and messages shared by the integration tests.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::time::Duration;

use actix::{Actor, ActorContext, Context, Handler, Message, Recipient};
use actormesh::prelude::*;
use serde::{Deserialize, Serialize};

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

#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
pub struct Sleep(pub u64);
impl RemoteMessage for Sleep {
    const NAME: &'static str = "test.Sleep";
}

/// Keeps the counter busy (no other message is handled meanwhile) for the given milliseconds.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
pub struct Busy(pub u64);
impl RemoteMessage for Busy {
    const NAME: &'static str = "test.Busy";
}

impl Handler<Busy> for Counter {
    type Result = actix::AtomicResponse<Self, ()>;
    fn handle(&mut self, msg: Busy, _: &mut Context<Self>) -> Self::Result {
        use actix::WrapFuture;
        actix::AtomicResponse::new(Box::pin(
            tokio::time::sleep(Duration::from_millis(msg.0)).into_actor(self),
        ))
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
}

impl Actor for Counter {
    type Context = Context<Self>;
}

impl Spawnable for Counter {
    type Args = u64;
    fn from_args(args: u64, _: &mut Context<Self>) -> Self {
        Counter { total: args }
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

impl Handler<Sleep> for Counter {
    type Result = actix::ResponseFuture<()>;
    fn handle(&mut self, msg: Sleep, _: &mut Context<Self>) -> Self::Result {
        Box::pin(tokio::time::sleep(Duration::from_millis(msg.0)))
    }
}

actormesh::remote_actor!(Counter = "test.Counter" { Add, Get, Stop, Panic, Sleep, Echoed, Busy });

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

/// Waits until `cond` holds, polling on an interval, for at most `limit`.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

/// Spawns a `Counter` on `host` and returns a reference to it as seen from `from`.
pub async fn counter_seen_from(host: &Node, from: &Node, name: &str) -> ActorRef<Counter> {
    let counter = host.spawn(Counter::default());
    host.register_name(name, &counter).await.unwrap();
    from.lookup::<Counter>(name).await.unwrap()
}
