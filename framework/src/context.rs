//! Actors that a node builds itself: the [`Spawnable`] trait, what such an actor is built
//! with (its actix context, its node and its own reference: [`SpawnContext`]), the methods of
//! [`Node`] that build actors, and the constructors behind them (supervised restarts, the
//! remote side of `spawn_on` and of the controller's spawn orders).

use std::ops::{Deref, DerefMut};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use actix::Context;

use crate::actor_ref::ActorRef;
use crate::core::wire::envelope::{decode_payload, encode_payload, Header, WireError};
use crate::error::{Error, Result};
use crate::id::{ActorId, NodeId};
use crate::message::{RemoteActor, WireValue};
use crate::node::Node;
use crate::runtime::decode::with_decode_node;
use crate::runtime::{lock, read, NodeShared, Respawn};
use crate::supervise::{Decision, RestartHistory, Supervision};

/// An actor that other nodes can spawn by type with [`Node::spawn_on`](crate::Node::spawn_on).
///
/// Register the type on every node that should accept remote spawns with
/// [`NodeBuilder::spawnable`](crate::NodeBuilder::spawnable).
pub trait Spawnable: RemoteActor {
    /// The constructor arguments, sent over the wire.
    type Args: WireValue;

    /// Builds the actor from its arguments, on the node that runs it. `ctx` gives the actix
    /// context, the node and the actor's own reference: keep clones of what the actor needs
    /// later (see [`SpawnContext`](crate::SpawnContext)).
    fn from_args(args: Self::Args, ctx: &mut SpawnContext<'_, Self>) -> Self;
}

/// The context an actor is built in when its node starts it: in
/// [`Spawnable::from_args`](crate::Spawnable::from_args) (deployed replicas, supervised
/// actors, `spawn_on`) and in the closure of [`Node::spawn_with`].
///
/// It dereferences to the actor's actix [`Context`] (schedule work, take its `Addr`), and adds
/// the node the actor runs on and the actor's own [`ActorRef`]. An actor that needs them later
/// (in `started`, in handlers) keeps clones in its fields: both are cheap handles.
///
/// ```
/// use actix::{Actor, Context};
/// use actormesh::{ActorRef, Node, SpawnContext, Spawnable};
///
/// struct Room {
///     name: String,
///     node: Node,
///     me: ActorRef<Room>,
/// }
/// impl Actor for Room {
///     type Context = Context<Self>;
///     fn started(&mut self, _: &mut Context<Self>) {
///         // The node and the own reference are at hand from the start.
///         println!("room {} is {} on node {}", self.name, self.me.id(), self.node.id());
///     }
/// }
/// actormesh::remote_actor!(Room = "chat.Room" {});
///
/// impl Spawnable for Room {
///     type Args = String;
///     fn from_args(name: String, ctx: &mut SpawnContext<'_, Self>) -> Self {
///         Room { name, node: ctx.node().clone(), me: ctx.myself().clone() }
///     }
/// }
/// ```
pub struct SpawnContext<'a, A: RemoteActor> {
    ctx: &'a mut Context<A>,
    node: &'a Node,
    me: &'a ActorRef<A>,
}

impl<'a, A: RemoteActor> SpawnContext<'a, A> {
    pub(crate) fn new(ctx: &'a mut Context<A>, node: &'a Node, me: &'a ActorRef<A>) -> Self {
        SpawnContext { ctx, node, me }
    }

    /// The node the actor runs on: look up names and groups, register names, spawn, read
    /// data given to [`NodeBuilder::data`](crate::NodeBuilder::data).
    pub fn node(&self) -> &Node {
        self.node
    }

    /// The actor's own reference: its id stays the same across restarts of a supervised
    /// actor, and the reference reaches whichever incarnation runs.
    pub fn myself(&self) -> &ActorRef<A> {
        self.me
    }

    /// The actor's id on its node.
    pub fn id(&self) -> ActorId {
        self.me.id()
    }

    /// The actor's actix context (also reachable through `Deref`).
    pub fn context(&mut self) -> &mut Context<A> {
        self.ctx
    }
}

impl<A: RemoteActor> Deref for SpawnContext<'_, A> {
    type Target = Context<A>;

    fn deref(&self) -> &Context<A> {
        self.ctx
    }
}

impl<A: RemoteActor> DerefMut for SpawnContext<'_, A> {
    fn deref_mut(&mut self) -> &mut Context<A> {
        self.ctx
    }
}

impl<A: RemoteActor> std::fmt::Debug for SpawnContext<'_, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpawnContext")
            .field("actor_type", &A::NAME)
            .field("actor", &self.me.id())
            .field("node", self.node.id())
            .finish()
    }
}

/// Starting actors with a [`SpawnContext`] (the methods of [`Node`] that build actors).
impl Node {
    /// Starts an actor built by `create` inside its own context, which gives the actor's
    /// actix context, this node and the actor's own reference (see [`SpawnContext`]).
    pub fn spawn_with<A, F>(&self, create: F) -> ActorRef<A>
    where
        A: RemoteActor,
        F: FnOnce(&mut SpawnContext<'_, A>) -> A + Send + 'static,
    {
        let id = self.shared.next_actor_id();
        let create = constructor::<A, _>(&self.shared, id, false, create);
        let addr = self.shared.start_actor(id, create, None);
        ActorRef::local(id, addr, self.shared.clone())
    }

    /// Starts an actor of a [`Spawnable`] type here under `supervision`: it is started again
    /// from `args` (keeping its id, references, names and groups) when it stops or fails, as
    /// the policy says. See [`supervise`](crate::supervise).
    pub fn spawn_supervised<A: Spawnable>(
        &self,
        args: A::Args,
        supervision: Supervision,
    ) -> ActorRef<A>
    where
        A::Args: Clone + Sync,
    {
        let id = spawn_supervised::<A>(&self.shared, args, supervision);
        ActorRef::supervised(id, self.shared.clone())
    }

    /// Spawns an actor of a [`Spawnable`] type on `node` (this node included) and returns its
    /// reference. The node must have registered the type with [`NodeBuilder::spawnable`](crate::NodeBuilder::spawnable).
    pub async fn spawn_on<A: Spawnable>(
        &self,
        node: &NodeId,
        args: A::Args,
    ) -> Result<ActorRef<A>> {
        let shared = &self.shared;
        if shared.stopping.load(Ordering::Acquire) {
            return Err(Error::Shutdown);
        }
        if node == &shared.info.id {
            return Ok(spawn_from_args::<A>(shared, args));
        }
        let addr = read(&shared.view)
            .get(node)
            .map(|m| m.addr)
            .ok_or_else(|| Error::UnknownNode(node.clone()))?;
        let link = shared.link_to(node, addr);
        let reply = link
            .request(
                (ActorId(0), A::NAME),
                shared.config.ask_timeout,
                |id| Header::Spawn {
                    id,
                    actor_type: A::NAME.to_owned(),
                },
                |buf| encode_payload(&args, buf),
            )
            .await?;
        let actor: u64 = decode_payload(&reply).map_err(Error::Codec)?;
        Ok(ActorRef::remote(ActorId(actor), link, shared.clone()))
    }
}

/// The constructor of actor `id` on `node`: `build` gets the actix context wrapped in a
/// [`SpawnContext`]. A supervised actor's own reference is the supervised one, which reaches
/// every later incarnation.
pub(crate) fn constructor<A, F>(
    node: &Arc<NodeShared>,
    id: ActorId,
    supervised: bool,
    build: F,
) -> impl FnOnce(&mut Context<A>) -> A + Send + 'static
where
    A: RemoteActor,
    F: FnOnce(&mut SpawnContext<'_, A>) -> A + Send + 'static,
{
    let node = Node {
        shared: node.clone(),
    };
    move |ctx: &mut Context<A>| {
        let me = if supervised {
            ActorRef::supervised(id, node.shared.clone())
        } else {
            ActorRef::local(id, actix::AsyncContext::address(ctx), node.shared.clone())
        };
        build(&mut SpawnContext::new(ctx, &node, &me))
    }
}

/// Starts a `Spawnable` actor on `node` from `args`, unsupervised.
pub(crate) fn spawn_from_args<A: Spawnable>(node: &Arc<NodeShared>, args: A::Args) -> ActorRef<A> {
    let id = node.next_actor_id();
    let create = constructor::<A, _>(node, id, false, move |ctx| A::from_args(args, ctx));
    let addr = node.start_actor(id, create, None);
    ActorRef::local(id, addr, node.clone())
}

/// The remote side of `spawn_on` for actor type `A` (registered by
/// [`NodeBuilder::spawnable`](crate::NodeBuilder::spawnable)).
pub(crate) fn spawn_from_wire<A: Spawnable>(
    node: &Arc<NodeShared>,
    payload: &[u8],
) -> std::result::Result<ActorId, WireError> {
    let args: A::Args =
        with_decode_node(node, || decode_payload(payload)).map_err(WireError::Codec)?;
    Ok(spawn_from_args::<A>(node, args).id())
}

/// Starts a `Spawnable` actor on `node` under `supervision`; returns its id.
pub(crate) fn spawn_supervised<A: Spawnable>(
    node: &Arc<NodeShared>,
    args: A::Args,
    supervision: Supervision,
) -> ActorId
where
    A::Args: Clone + Sync,
{
    let id = node.next_actor_id();
    let supervisor = Arc::new(SupervisedSpawn::<A> {
        args: args.clone(),
        supervision,
        history: Mutex::new(RestartHistory::default()),
    });
    let create = constructor::<A, _>(node, id, true, move |ctx| A::from_args(args, ctx));
    node.spawn_supervised(id, supervisor, create);
    id
}

/// A supervised actor's policy, restart history and constructor arguments.
struct SupervisedSpawn<A: Spawnable> {
    args: A::Args,
    supervision: Supervision,
    history: Mutex<RestartHistory>,
}

impl<A: Spawnable> Respawn for SupervisedSpawn<A>
where
    A::Args: Clone + Sync,
{
    fn decide(&self, failed: bool) -> Decision {
        self.supervision
            .decide(&mut lock(&self.history), failed, std::time::Instant::now())
    }

    fn respawn(&self, node: &Arc<NodeShared>, id: ActorId) {
        let args = self.args.clone();
        let create = constructor::<A, _>(node, id, true, move |ctx| A::from_args(args, ctx));
        node.start_actor::<A, _>(id, create, None);
    }
}
