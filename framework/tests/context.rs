//! Actors started by a node reach their node, their own reference and the node's data: from
//! `from_args`, `started` and handlers, whether spawned remotely, supervised or with
//! `spawn_with`.

mod common;

use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, WrapFuture};
use actormesh::prelude::*;
use actormesh::{Restart, Supervision};
use common::eventually;
use serde::{Deserialize, Serialize};

/// What a room knows about itself.
#[derive(Message, Serialize, Deserialize, Clone, Debug)]
#[rtype(result = "Whoami")]
struct Who;
impl RemoteMessage for Who {
    const NAME: &'static str = "context.Who";
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Whoami {
    node: String,
    me: u64,
    greeting: String,
    /// Whether `started` registered the room's name.
    registered: bool,
}

/// Crashes the room (to see its identity survive a restart).
#[derive(Message, Serialize, Deserialize, Clone, Debug)]
#[rtype(result = "()")]
struct Crash;
impl RemoteMessage for Crash {
    const NAME: &'static str = "context.Crash";
}

/// A process-local dependency handed to actors through the node (not over the wire).
struct Greeting(String);

struct Room {
    name: String,
    node: Node,
    me: ActorRef<Room>,
    greeting: String,
    registered: bool,
}

impl Actor for Room {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Register the room under its name, cluster-wide, from `started`.
        let (node, me, name) = (self.node.clone(), self.me.clone(), self.name.clone());
        ctx.wait(
            async move { node.register_name(&name, &me).await }
                .into_actor(self)
                .map(|registered, room, _| room.registered = registered.is_ok()),
        );
    }
}

impl Spawnable for Room {
    type Args = String;
    fn from_args(name: String, ctx: &mut SpawnContext<'_, Self>) -> Self {
        let greeting = ctx
            .node()
            .data::<Greeting>()
            .map_or_else(|| "no greeting".to_owned(), |g| g.0.clone());
        assert_eq!(ctx.id(), ctx.myself().id());
        // The actix context is there too.
        let _addr = ctx.address();
        Room {
            name,
            node: ctx.node().clone(),
            me: ctx.myself().clone(),
            greeting,
            registered: false,
        }
    }
}

impl Handler<Who> for Room {
    type Result = actix::MessageResult<Who>;
    fn handle(&mut self, _: Who, _: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(Whoami {
            node: self.node.id().to_string(),
            me: self.me.id().get(),
            greeting: self.greeting.clone(),
            registered: self.registered,
        })
    }
}

impl Handler<Crash> for Room {
    type Result = ();
    fn handle(&mut self, _: Crash, _: &mut Context<Self>) {
        panic!("room {} crashes on purpose", self.name);
    }
}

actormesh::remote_actor!(Room = "context.Room" { Who, Crash });

async fn two_nodes() -> (Node, Node) {
    let discovery = MemoryDiscovery::new();
    let a = Node::builder()
        .cluster("context")
        .node_id("a")
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    let b = Node::builder()
        .cluster("context")
        .node_id("b")
        .discovery(discovery)
        .spawnable::<Room>()
        .data(Greeting("hello from b".to_owned()))
        .start()
        .await
        .unwrap();
    a.wait_for_node(b.id(), Duration::from_secs(5))
        .await
        .unwrap();
    (a, b)
}

#[actix::test]
async fn a_remotely_spawned_actor_reaches_its_node_its_reference_and_the_node_data() {
    let (a, b) = two_nodes().await;
    let room = a
        .spawn_on::<Room>(b.id(), "lobby".to_owned())
        .await
        .unwrap();
    let who = room.ask(Who).await.unwrap();
    assert_eq!(who.node, "b");
    assert_eq!(who.me, room.id().get());
    assert_eq!(who.greeting, "hello from b");
    assert!(who.registered, "started registered the name");
    // The name it registered from `started`, with its own reference, leads to it.
    let found = a.lookup::<Room>("lobby").await.unwrap();
    assert_eq!((found.node(), found.id()), (room.node(), room.id()));
    b.shutdown().await;
    a.shutdown().await;
}

#[actix::test]
async fn a_supervised_actor_keeps_its_own_reference_across_restarts() {
    let (a, b) = two_nodes().await;
    let supervision = Supervision::new(Restart::OnFailure)
        .backoff(Duration::from_millis(1), Duration::from_millis(5));
    let room = b.spawn_supervised::<Room>("kitchen".to_owned(), supervision);
    let before = room.ask(Who).await.unwrap();
    assert_eq!(before.me, room.id().get());
    assert!(matches!(
        room.ask(Crash).await,
        Err(Error::HandlerPanicked { .. })
    ));
    // The restarted incarnation is built again with the same id and its own reference.
    let after = eventually("the room runs again", Duration::from_secs(5), || async {
        room.ask(Who).await
    })
    .await;
    assert_eq!(after.me, room.id().get());
    assert_eq!(after.greeting, "hello from b");
    b.shutdown().await;
    a.shutdown().await;
}

#[actix::test]
async fn spawn_with_gives_the_same_context() {
    let (a, b) = two_nodes().await;
    let room = b.spawn_with(|ctx: &mut SpawnContext<'_, Room>| Room {
        name: "hall".to_owned(),
        node: ctx.node().clone(),
        me: ctx.myself().clone(),
        greeting: "local".to_owned(),
        registered: false,
    });
    let who = room.ask(Who).await.unwrap();
    assert_eq!((who.node.as_str(), who.me), ("b", room.id().get()));
    assert!(b.data::<Greeting>().is_some());
    assert!(a.data::<Greeting>().is_none());
    b.shutdown().await;
    a.shutdown().await;
}
