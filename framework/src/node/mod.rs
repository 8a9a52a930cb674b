//! The node: one member of a cluster, hosting actors and linking to its peers.
//!
//! # What runs inside a node
//!
//! ```text
//! Node (handle, cheap to clone)
//!  └─ NodeShared
//!      ├─ local actor table     ActorId -> Addr + dispatch table + watchers + names
//!      ├─ transport server      tonic; one task per inbound link reads frames and dispatches
//!      ├─ peer links            one per remote node: outbox -> frames -> tonic stream,
//!      │                        replies and Terminated notices back; reconnect with backoff
//!      ├─ membership task       applies discovery events; a node that is down or left fails
//!      │                        its link (pending asks fail with NodeDown, watchers told)
//!      └─ actors                on the node's arbiter; each holds a guard whose drop removes it
//!                               from the table and tells its watchers
//! ```
//!
//! The node is started with [`Node::builder`] from inside an actix system (`#[actix::main]` or
//! `actix::System::new().block_on`); its actors run on the arbiter that started it and its
//! transport runs on the same tokio runtime.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::Duration;

use actix::dev::channel;
use actix::{ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Recipient};
use actix_rt::ArbiterHandle;
use bytes::Bytes;
use tokio::sync::{broadcast, watch, Notify};

use crate::actor_ref::{with_decode_node, ActorRef, Terminated, TerminationReason};
use crate::discovery::{
    Discovery, GroupMember, GroupSpec, LoadReport, MembershipEvent, NameEntry, NodeInfo,
};
use crate::error::{Error, Result};
use crate::id::{ActorId, NodeId};
use crate::message::{Declaration, RemoteActor, Spawnable};
use crate::stats::{DropReason, Stats, StatsSnapshot};
use crate::supervise::{mailbox_key, take_failed, Decision, RestartHistory, Supervision};
use crate::transport::link::{LinkConfig, PeerLink};
use crate::wire::envelope::{
    decode_payload, encode_payload, Envelopes, Header, WireError, WireTermination,
};
use crate::wire::outbox::Outbox;

mod builder;
pub(crate) mod dispatch;

pub use builder::NodeBuilder;
use dispatch::{send_reply, AskReply, Inbound, LocalDispatch, Typed};

/// The version of the wire protocol; nodes of different versions refuse each other.
pub(crate) const PROTOCOL_VERSION: u32 = 1;

/// Settings fixed when the node starts.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) ask_timeout: Duration,
    pub(crate) load_interval: Duration,
    pub(crate) max_frame: usize,
    pub(crate) send_queue_bytes: usize,
    pub(crate) shutdown_timeout: Duration,
}

/// Builds an actor of a [`Spawnable`] type from wire arguments (the remote side of `spawn_on`).
pub(crate) type SpawnFn = fn(&Arc<NodeShared>, &[u8]) -> std::result::Result<ActorId, WireError>;

/// A running member of a cluster. Clone it freely: every clone is the same node.
///
/// ```no_run
/// # async fn run() -> Result<(), actormesh::Error> {
/// let node = actormesh::Node::builder().cluster("demo").start().await?;
/// println!("node {} listening on {}", node.id(), node.addr());
/// node.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Node {
    pub(crate) shared: Arc<NodeShared>,
}

pub(crate) struct LocalEntry {
    pub(crate) handle: Arc<dyn LocalDispatch>,
    watchers: Vec<Watcher>,
    names: Vec<String>,
    groups: Vec<(String, u32)>,
    /// Restarts the actor by policy when it stops (see `supervise`).
    supervisor: Option<Arc<dyn Respawn>>,
    /// Asked to stop (`ActorRef::stop`): a supervisor does not restart it.
    stop_requested: bool,
}

/// A supervised actor's restart decisions and how to start it again.
pub(crate) trait Respawn: Send + Sync {
    fn decide(&self, failed: bool) -> Decision;
    fn respawn(&self, node: &Arc<NodeShared>, id: ActorId);
}

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
        node.start_actor::<A, _>(id, move |ctx| A::from_args(args, ctx), None);
    }
}

enum Watcher {
    Local(Recipient<Terminated>),
    Remote { outbox: Weak<Outbox>, watch: u64 },
}

/// The state behind every [`Node`] handle and every reference into it.
pub(crate) struct NodeShared {
    pub(crate) info: NodeInfo,
    pub(crate) config: Config,
    pub(crate) link_config: Arc<LinkConfig>,
    pub(crate) stats: Arc<Stats>,
    discovery: Arc<dyn Discovery>,
    actors: RwLock<HashMap<ActorId, LocalEntry>>,
    next_actor: AtomicU64,
    peers: Mutex<HashMap<NodeId, Arc<PeerLink>>>,
    members: RwLock<BTreeMap<NodeId, NodeInfo>>,
    departed: Mutex<HashSet<NodeId>>,
    declarations: RwLock<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
    spawnables: HashMap<&'static str, SpawnFn>,
    placements: HashMap<String, Arc<dyn crate::placement::Placement>>,
    arbiter: ArbiterHandle,
    stopping: AtomicBool,
    shutdown_tx: watch::Sender<bool>,
    inflight: AtomicUsize,
    inflight_done: Notify,
    /// Asks handled by this node's actors, for load reports.
    pub(crate) asks_handled: AtomicU64,
    inbound: Mutex<Vec<Weak<Outbox>>>,
    events: broadcast::Sender<MembershipEvent>,
}

impl std::fmt::Debug for NodeShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.info.id)
            .field("cluster", &self.info.cluster)
            .field("addr", &self.info.addr)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl Node {
    /// Starts configuring a node.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::new()
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.shared.info.id
    }

    /// The address other nodes reach this node at (the bound port when started with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.shared.info.addr
    }

    /// The cluster this node belongs to.
    pub fn cluster(&self) -> &str {
        &self.shared.info.cluster
    }

    /// What this node published about itself.
    pub fn info(&self) -> &NodeInfo {
        &self.shared.info
    }

    /// The members of the cluster as this node currently sees them, itself included.
    pub fn members(&self) -> Vec<NodeInfo> {
        read(&self.shared.members).values().cloned().collect()
    }

    /// Membership changes from now on: node up, left gracefully, down.
    pub fn subscribe(&self) -> broadcast::Receiver<MembershipEvent> {
        self.shared.events.subscribe()
    }

    /// Waits until `node` is a member in this node's view, for at most `timeout`.
    pub async fn wait_for_node(&self, node: &NodeId, timeout: Duration) -> Result<NodeInfo> {
        let mut events = self.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(info) = read(&self.shared.members).get(node) {
                return Ok(info.clone());
            }
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Err(_) => return Err(Error::UnknownNode(node.clone())),
                Ok(Err(broadcast::error::RecvError::Closed)) => return Err(Error::Shutdown),
                Ok(_) => {}
            }
        }
    }

    /// Creates or replaces the desired state of a group; the cluster's controller (nodes
    /// started with [`NodeBuilder::controller`]) keeps it. See [`controller`](crate::controller).
    pub async fn deploy(&self, spec: &GroupSpec) -> Result<()> {
        self.shared
            .discovery
            .put_spec(&self.shared.info.cluster, spec)
            .await
    }

    /// Changes the number of replicas of a deployed group.
    pub async fn scale(&self, group: &str, replicas: u32) -> Result<()> {
        let shared = &self.shared;
        let view = shared.discovery.watch_specs(&shared.info.cluster).await?;
        let mut spec = view
            .specs
            .into_iter()
            .find(|s| s.group == group)
            .ok_or_else(|| Error::UnknownGroup(group.to_owned()))?;
        spec.replicas = replicas;
        shared.discovery.put_spec(&shared.info.cluster, &spec).await
    }

    /// Counters of dropped messages, by reason.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// How many actors run on this node.
    pub fn actor_count(&self) -> usize {
        read(&self.shared.actors).len()
    }

    /// Starts `actor` on this node and returns its reference.
    ///
    /// The actor lives until it stops itself or the node shuts down (the node keeps its
    /// address, so dropping every reference does not stop it).
    pub fn spawn<A: RemoteActor + Send>(&self, actor: A) -> ActorRef<A> {
        self.shared.spawn_with(move |_| actor)
    }

    /// Starts an actor built by `create` inside its own context (for actors that need their
    /// address or want to schedule work at start).
    pub fn spawn_with<A, F>(&self, create: F) -> ActorRef<A>
    where
        A: RemoteActor,
        F: FnOnce(&mut Context<A>) -> A + Send + 'static,
    {
        self.shared.spawn_with(create)
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
        self.shared.spawn_supervised(args, supervision)
    }

    /// Spawns an actor of a [`Spawnable`] type on `node` (this node included) and returns its
    /// reference. The node must have registered the type with [`NodeBuilder::spawnable`].
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
            return Ok(shared.spawn_with(move |ctx| A::from_args(args, ctx)));
        }
        let addr = read(&shared.members)
            .get(node)
            .map(|m| m.addr)
            .ok_or_else(|| Error::UnknownNode(node.clone()))?;
        let link = shared.link_to(node, addr);
        let reply = link
            .request(
                ActorId(0),
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

    /// Registers `actor` (which must run on this node) under `name`, cluster-wide.
    ///
    /// A name held by another actor is refused with [`Error::NameTaken`]: names are never
    /// overwritten. The name is removed when the actor stops or this node leaves.
    pub async fn register_name<A: RemoteActor>(
        &self,
        name: &str,
        actor: &ActorRef<A>,
    ) -> Result<()> {
        let shared = &self.shared;
        if actor.node() != &shared.info.id {
            return Err(Error::NotLocal {
                node: actor.node().clone(),
                actor: actor.id(),
                what: "register_name",
            });
        }
        if !read(&shared.actors).contains_key(&actor.id()) {
            return Err(Error::ActorNotFound {
                node: shared.info.id.clone(),
                actor: actor.id(),
            });
        }
        let entry = shared.name_entry(actor.id(), A::NAME);
        shared
            .discovery
            .register_name(&shared.info.cluster, name, &entry)
            .await?;
        let recorded = write(&shared.actors)
            .get_mut(&actor.id())
            .map(|e| e.names.push(name.to_owned()))
            .is_some();
        if !recorded {
            // The actor stopped while the name was being registered.
            let _ = shared
                .discovery
                .unregister_name(&shared.info.cluster, name, &entry)
                .await;
            return Err(Error::ActorNotFound {
                node: shared.info.id.clone(),
                actor: actor.id(),
            });
        }
        Ok(())
    }

    /// Removes `name` if it is held by `actor`.
    pub async fn unregister_name<A: RemoteActor>(
        &self,
        name: &str,
        actor: &ActorRef<A>,
    ) -> Result<()> {
        let shared = &self.shared;
        let entry = shared.name_entry(actor.id(), A::NAME);
        if let Some(e) = write(&shared.actors).get_mut(&actor.id()) {
            e.names.retain(|n| n != name);
        }
        shared
            .discovery
            .unregister_name(&shared.info.cluster, name, &entry)
            .await
    }

    /// Adds `actor` (which must run on this node) to `group` with weight 1. It leaves the
    /// group when it stops, when this node leaves, or with [`Node::leave_group`].
    pub async fn join_group<A: RemoteActor>(&self, group: &str, actor: &ActorRef<A>) -> Result<()> {
        self.join_group_weighted(group, actor, 1).await
    }

    /// [`Node::join_group`] with a weight, for [`Weighted`](crate::balance::Weighted) and
    /// [`ConsistentHash`](crate::balance::ConsistentHash) balancing.
    pub async fn join_group_weighted<A: RemoteActor>(
        &self,
        group: &str,
        actor: &ActorRef<A>,
        weight: u32,
    ) -> Result<()> {
        let shared = &self.shared;
        if actor.node() != &shared.info.id {
            return Err(Error::NotLocal {
                node: actor.node().clone(),
                actor: actor.id(),
                what: "join_group",
            });
        }
        if !read(&shared.actors).contains_key(&actor.id()) {
            return Err(Error::ActorNotFound {
                node: shared.info.id.clone(),
                actor: actor.id(),
            });
        }
        let member = shared.group_member(actor.id(), A::NAME, weight);
        shared
            .discovery
            .join_group(&shared.info.cluster, group, &member)
            .await?;
        let recorded = write(&shared.actors)
            .get_mut(&actor.id())
            .map(|e| e.groups.push((group.to_owned(), weight)))
            .is_some();
        if !recorded {
            let _ = shared
                .discovery
                .leave_group(&shared.info.cluster, group, &member)
                .await;
            return Err(Error::ActorNotFound {
                node: shared.info.id.clone(),
                actor: actor.id(),
            });
        }
        Ok(())
    }

    /// Removes `actor` from `group`.
    pub async fn leave_group<A: RemoteActor>(
        &self,
        group: &str,
        actor: &ActorRef<A>,
    ) -> Result<()> {
        let shared = &self.shared;
        let weight = write(&shared.actors)
            .get_mut(&actor.id())
            .and_then(|e| {
                let i = e.groups.iter().position(|(g, _)| g == group)?;
                Some(e.groups.remove(i).1)
            })
            .unwrap_or(1);
        let member = shared.group_member(actor.id(), A::NAME, weight);
        shared
            .discovery
            .leave_group(&shared.info.cluster, group, &member)
            .await
    }

    /// A reference to `group`, balanced round robin. See [`GroupRef`](crate::GroupRef).
    pub async fn group<A: RemoteActor>(&self, group: &str) -> Result<crate::GroupRef<A>> {
        self.group_with(group, crate::GroupConfig::default()).await
    }

    /// A reference to `group` with its balancer, caps, ejection and retries.
    pub async fn group_with<A: RemoteActor>(
        &self,
        group: &str,
        config: crate::GroupConfig,
    ) -> Result<crate::GroupRef<A>> {
        crate::GroupRef::watch(self.shared.clone(), group, config).await
    }

    /// Finds the actor registered under `name` anywhere in the cluster.
    pub async fn lookup<A: RemoteActor>(&self, name: &str) -> Result<ActorRef<A>> {
        let shared = &self.shared;
        let entry = shared
            .discovery
            .lookup_name(&shared.info.cluster, name)
            .await?
            .ok_or_else(|| Error::NameNotFound(name.to_owned()))?;
        if entry.actor_type != A::NAME {
            return Err(Error::WrongActorType {
                expected: A::NAME.to_owned(),
                found: entry.actor_type,
            });
        }
        shared.resolve::<A>(&entry.node, entry.addr, entry.actor)
    }

    /// Turns the bytes of [`ActorRef::to_bytes`] back into a reference usable from this node.
    ///
    /// The actor's node does not need to be in this node's discovery view: the reference
    /// carries its address, and the link's handshake checks the cluster name and node id.
    pub fn actor_ref_from_bytes<A: RemoteActor>(&self, bytes: &[u8]) -> Result<ActorRef<A>> {
        with_decode_node(&self.shared, || decode_payload::<ActorRef<A>>(bytes))
            .map_err(Error::Codec)
    }

    /// Leaves the cluster cleanly: stops taking new work, lets asks being handled here finish
    /// and their replies leave (up to the shutdown timeout), flushes what this node still has
    /// to send, leaves discovery (its names vanish), and stops its actors.
    pub async fn shutdown(&self) {
        self.shared.shutdown().await
    }
}

impl NodeShared {
    /// A placement policy registered with [`NodeBuilder::placement`].
    pub(crate) fn placement(&self, name: &str) -> Option<Arc<dyn crate::placement::Placement>> {
        self.placements.get(name).cloned()
    }

    /// The members of the cluster as this node sees them.
    pub(crate) fn members(&self) -> Vec<NodeInfo> {
        read(&self.members).values().cloned().collect()
    }

    /// Membership changes from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<MembershipEvent> {
        self.events.subscribe()
    }

    pub(crate) fn discovery(&self) -> &dyn Discovery {
        &*self.discovery
    }

    fn group_member(&self, actor: ActorId, actor_type: &str, weight: u32) -> GroupMember {
        GroupMember {
            node: self.info.id.clone(),
            addr: self.info.addr,
            actor,
            actor_type: actor_type.to_owned(),
            weight,
        }
    }

    fn name_entry(&self, actor: ActorId, actor_type: &str) -> NameEntry {
        NameEntry {
            node: self.info.id.clone(),
            addr: self.info.addr,
            actor,
            actor_type: actor_type.to_owned(),
        }
    }

    /// The dispatch table of an actor type, built once per node.
    fn declaration<A: RemoteActor>(&self) -> Arc<Declaration<A>> {
        let key = TypeId::of::<A>();
        if let Some(d) = read(&self.declarations).get(&key) {
            if let Ok(d) = d.clone().downcast::<Declaration<A>>() {
                return d;
            }
        }
        let d = Arc::new(Declaration::<A>::build());
        write(&self.declarations).insert(key, d.clone());
        d
    }

    pub(crate) fn spawn_with<A, F>(self: &Arc<Self>, create: F) -> ActorRef<A>
    where
        A: RemoteActor,
        F: FnOnce(&mut Context<A>) -> A + Send + 'static,
    {
        let id = ActorId(self.next_actor.fetch_add(1, Ordering::Relaxed));
        let addr = self.start_actor(id, create, None);
        ActorRef::local(id, addr, self.clone())
    }

    /// Starts a supervised actor (see `supervise`).
    pub(crate) fn spawn_supervised<A: Spawnable>(
        self: &Arc<Self>,
        args: A::Args,
        supervision: Supervision,
    ) -> ActorRef<A>
    where
        A::Args: Clone + Sync,
    {
        let id = ActorId(self.next_actor.fetch_add(1, Ordering::Relaxed));
        let supervisor = Arc::new(SupervisedSpawn::<A> {
            args: args.clone(),
            supervision,
            history: Mutex::new(RestartHistory::default()),
        });
        self.start_actor::<A, _>(id, move |ctx| A::from_args(args, ctx), Some(supervisor));
        ActorRef::supervised(id, self.clone())
    }

    /// Starts (or, for an id already in the table, restarts) actor `id` on the node's
    /// arbiter with a fresh mailbox, and returns its address.
    fn start_actor<A, F>(
        self: &Arc<Self>,
        id: ActorId,
        create: F,
        supervisor: Option<Arc<dyn Respawn>>,
    ) -> Addr<A>
    where
        A: RemoteActor,
        F: FnOnce(&mut Context<A>) -> A + Send + 'static,
    {
        let (tx, rx) = channel::channel(16);
        let addr = Addr::new(tx);
        let mut actors = write(&self.actors);
        let supervised =
            supervisor.is_some() || actors.get(&id).is_some_and(|e| e.supervisor.is_some());
        let handle = Arc::new(Typed {
            addr: addr.clone(),
            declaration: self.declaration::<A>(),
            supervised,
        });
        {
            match actors.get_mut(&id) {
                Some(entry) => entry.handle = handle,
                None => {
                    actors.insert(
                        id,
                        LocalEntry {
                            handle,
                            watchers: Vec::new(),
                            names: Vec::new(),
                            groups: Vec::new(),
                            supervisor,
                            stop_requested: false,
                        },
                    );
                }
            }
        }
        drop(actors);
        let guard = ActorGuard {
            node: Arc::downgrade(self),
            id,
            mailbox: mailbox_key(&addr),
        };
        let mut shutdown = self.shutdown_tx.subscribe();
        let started = self.arbiter.spawn_fn(move || {
            let mut ctx = Context::with_receiver(rx);
            let actor = create(&mut ctx);
            // The guard lives as long as the actor's context: it goes when the actor stops.
            ctx.spawn(
                actix::fut::wrap_future::<_, A>(async move {
                    let _guard = guard;
                    let _ = shutdown.wait_for(|stop| *stop).await;
                })
                .map(|_, _, ctx: &mut Context<A>| ctx.stop()),
            );
            actix_rt::spawn(ctx.into_future(actor));
        });
        if !started {
            // The arbiter is gone; the closure (and the guard in it) was dropped.
            tracing::error!(node = %self.info.id, "the node's arbiter has stopped; actor not started");
        }
        addr
    }

    /// Whether actor `id` runs here under supervision.
    pub(crate) fn is_supervised(&self, id: ActorId) -> bool {
        read(&self.actors)
            .get(&id)
            .is_some_and(|e| e.supervisor.is_some())
    }

    /// Called when an actor's guard drops (`failed`: a handler panicked): restarts it if it
    /// is supervised and its policy says so; otherwise removes it and tells its watchers.
    fn actor_stopped(self: &Arc<Self>, id: ActorId, failed: bool) {
        let supervisor = read(&self.actors)
            .get(&id)
            .filter(|e| !e.stop_requested)
            .and_then(|e| e.supervisor.clone());
        if let Some(supervisor) = supervisor.filter(|_| !self.is_stopping()) {
            match supervisor.decide(failed) {
                Decision::Restart(after) => {
                    if let Ok(rt) = tokio::runtime::Handle::try_current() {
                        tracing::info!(node = %self.info.id, actor = %id, failed, ?after, "restarting a supervised actor");
                        let node = self.clone();
                        rt.spawn(async move {
                            tokio::time::sleep(after).await;
                            if !node.is_stopping() {
                                supervisor.respawn(&node, id);
                            }
                        });
                        return;
                    }
                }
                Decision::GiveUp => {
                    tracing::error!(node = %self.info.id, actor = %id, "supervised actor restarted too often; giving up");
                }
                Decision::Stop => {}
            }
        }
        let Some(entry) = write(&self.actors).remove(&id) else {
            return;
        };
        let stopping = self.stopping.load(Ordering::Acquire);
        let reason = if stopping {
            TerminationReason::NodeShutdown
        } else {
            TerminationReason::Stopped
        };
        for watcher in entry.watchers {
            self.notify_watcher(watcher, id, reason);
        }
        if (entry.names.is_empty() && entry.groups.is_empty()) || stopping {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let node = self.clone();
        let type_name = entry.handle.type_name();
        rt.spawn(async move {
            let name_entry = node.name_entry(id, type_name);
            for name in entry.names {
                if let Err(e) = node
                    .discovery
                    .unregister_name(&node.info.cluster, &name, &name_entry)
                    .await
                {
                    tracing::warn!(%name, error = %e, "could not unregister the name of a stopped actor");
                }
            }
            for (group, weight) in entry.groups {
                let member = node.group_member(id, type_name, weight);
                if let Err(e) = node
                    .discovery
                    .leave_group(&node.info.cluster, &group, &member)
                    .await
                {
                    tracing::warn!(%group, error = %e, "a stopped actor could not leave its group");
                }
            }
        });
    }

    fn notify_watcher(&self, watcher: Watcher, id: ActorId, reason: TerminationReason) {
        match watcher {
            Watcher::Local(recipient) => recipient.do_send(Terminated {
                actor: id,
                node: self.info.id.clone(),
                reason,
            }),
            Watcher::Remote { outbox, watch } => {
                let Some(outbox) = outbox.upgrade() else {
                    return;
                };
                let reason = match reason {
                    TerminationReason::NodeShutdown => WireTermination::NodeShutdown,
                    TerminationReason::NotFound => WireTermination::NotFound,
                    _ => WireTermination::Stopped,
                };
                if outbox
                    .push(&Header::Terminated { watch, reason }, |_| {
                        Ok::<_, String>(())
                    })
                    .is_err()
                {
                    self.stats.dropped(DropReason::LinkFailed, 1);
                    tracing::debug!(%id, "watcher's link is gone; Terminated notice dropped");
                }
            }
        }
    }

    /// Refuses an order of a controller whose `fence` token is not the current leader's.
    async fn check_fence(&self, fence: u64) -> std::result::Result<(), WireError> {
        match self.discovery.leader(&self.info.cluster).await {
            Ok(Some((_, token))) if token == fence => Ok(()),
            Ok(_) => Err(WireError::Fenced),
            Err(e) => Err(WireError::Codec(format!("cannot check the leader: {e}"))),
        }
    }

    /// Starts a replica of `group` (a controller's order) and joins it to the group.
    pub(crate) async fn spawn_replica(
        self: &Arc<Self>,
        actor_type: &str,
        group: &str,
        fence: u64,
        singleton: bool,
        args: &[u8],
    ) -> std::result::Result<ActorId, WireError> {
        if self.is_stopping() {
            return Err(WireError::ShuttingDown);
        }
        self.check_fence(fence).await?;
        let spawn = self
            .spawnables
            .get(actor_type)
            .ok_or_else(|| WireError::UnknownActorType {
                actor_type: actor_type.to_owned(),
            })?;
        let actor = spawn(self, args)?;
        let type_name = read(&self.actors)
            .get(&actor)
            .map(|e| e.handle.type_name())
            .ok_or(WireError::ActorStopped)?;
        let member = self.group_member(actor, type_name, 1);
        if let Err(e) = self
            .discovery
            .join_group(&self.info.cluster, group, &member)
            .await
        {
            self.stop_local(actor);
            return Err(WireError::Codec(format!(
                "the replica could not join its group: {e}"
            )));
        }
        if let Some(entry) = write(&self.actors).get_mut(&actor) {
            entry.groups.push((group.to_owned(), 1));
        }
        if singleton {
            tokio::spawn(guard_singleton(Arc::downgrade(self), actor));
        }
        Ok(actor)
    }

    /// Takes a replica out of `group`, then stops it after its queued messages (a
    /// controller's order).
    pub(crate) async fn retire(
        self: &Arc<Self>,
        actor: ActorId,
        group: &str,
        fence: u64,
    ) -> std::result::Result<(), WireError> {
        self.check_fence(fence).await?;
        let type_name = read(&self.actors)
            .get(&actor)
            .map(|e| e.handle.type_name())
            .ok_or(WireError::ActorNotFound)?;
        let member = self.group_member(actor, type_name, 1);
        if let Some(entry) = write(&self.actors).get_mut(&actor) {
            entry.groups.retain(|(g, _)| g != group);
        }
        if let Err(e) = self
            .discovery
            .leave_group(&self.info.cluster, group, &member)
            .await
        {
            tracing::warn!(%group, error = %e, "a retired replica could not leave its group");
        }
        // Callers that picked it before the group view changed still get answers: the stop
        // is queued behind their messages.
        self.stop_local(actor);
        Ok(())
    }

    /// Stops local actor `id` after the messages already in its mailbox; returns whether it
    /// was found.
    pub(crate) fn stop_local(&self, id: ActorId) -> bool {
        let mut actors = write(&self.actors);
        let Some(entry) = actors.get_mut(&id) else {
            return false;
        };
        entry.stop_requested = true;
        entry.handle.stop();
        true
    }

    pub(crate) fn watch_local(&self, id: ActorId, watcher: Recipient<Terminated>) {
        let mut actors = write(&self.actors);
        match actors.get_mut(&id) {
            Some(entry) => entry.watchers.push(Watcher::Local(watcher)),
            None => {
                drop(actors);
                self.notify_watcher(Watcher::Local(watcher), id, TerminationReason::NotFound);
            }
        }
    }

    fn handle_of(&self, id: ActorId) -> Option<Arc<dyn LocalDispatch>> {
        read(&self.actors).get(&id).map(|e| e.handle.clone())
    }

    /// The typed address of a local actor: `Ok(None)` when it is gone.
    pub(crate) fn local_addr<A: RemoteActor>(&self, id: ActorId) -> Result<Option<Addr<A>>> {
        let Some(handle) = self.handle_of(id) else {
            return Ok(None);
        };
        match handle.as_any().downcast_ref::<Typed<A>>() {
            Some(typed) => Ok(Some(typed.addr.clone())),
            None => Err(Error::WrongActorType {
                expected: A::NAME.to_owned(),
                found: handle.type_name().to_owned(),
            }),
        }
    }

    /// A reference to actor `actor` of `node` (reached at `addr`).
    pub(crate) fn resolve<A: RemoteActor>(
        self: &Arc<Self>,
        node: &NodeId,
        addr: SocketAddr,
        actor: ActorId,
    ) -> Result<ActorRef<A>> {
        if node == &self.info.id {
            if self.is_supervised(actor) {
                // Type check; the address itself is looked up at each send (it changes
                // with every restart).
                self.local_addr::<A>(actor)?;
                return Ok(ActorRef::supervised(actor, self.clone()));
            }
            return Ok(match self.local_addr::<A>(actor)? {
                Some(local) => ActorRef::local(actor, local, self.clone()),
                None => ActorRef::gone(actor, node.clone(), addr, self.clone()),
            });
        }
        Ok(ActorRef::remote(
            actor,
            self.link_to(node, addr),
            self.clone(),
        ))
    }

    /// The link to `node`, created on first use.
    pub(crate) fn link_to(&self, node: &NodeId, addr: SocketAddr) -> Arc<PeerLink> {
        let mut peers = lock(&self.peers);
        if let Some(link) = peers.get(node) {
            return link.clone();
        }
        let down = lock(&self.departed).contains(node) || self.stopping.load(Ordering::Acquire);
        let link = PeerLink::start(self.link_config.clone(), node.clone(), addr, down);
        peers.insert(node.clone(), link.clone());
        link
    }

    /// The node's load now; `asks_per_second` over `elapsed` since `asks_before` was read.
    fn load_report(&self, asks_before: u64, elapsed: Duration) -> (LoadReport, u64) {
        let asks = self.asks_handled.load(Ordering::Relaxed);
        let queued: usize = lock(&self.peers).values().map(|l| l.queued_bytes()).sum();
        let report = LoadReport {
            actors: read(&self.actors).len() as u64,
            inflight_asks: self.inflight.load(Ordering::Relaxed) as u64,
            send_queue_bytes: queued as u64,
            asks_per_second: (asks - asks_before) as f64 / elapsed.as_secs_f64().max(1e-3),
            at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        (report, asks)
    }

    /// Publishes a load report every `interval` until the node shuts down.
    async fn report_load(weak: Weak<Self>, interval: Duration) {
        let Some(node) = weak.upgrade() else { return };
        let mut shutdown = node.shutdown_signal();
        let mut asks_before = node.asks_handled.load(Ordering::Relaxed);
        drop(node);
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            let Some(node) = weak.upgrade() else { return };
            let (report, asks) = node.load_report(asks_before, last.elapsed());
            asks_before = asks;
            last = tokio::time::Instant::now();
            if let Err(e) = node
                .discovery
                .report_load(&node.info.cluster, &node.info.id, &report)
                .await
            {
                tracing::debug!(node = %node.info.id, error = %e, "load report not published");
            }
        }
    }

    fn inflight_guard(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        InflightGuard(self.clone())
    }

    /// Handles one frame of requests from a peer; replies go to `replies`.
    pub(crate) fn on_request_frame(self: &Arc<Self>, frame: Bytes, replies: &Arc<Outbox>) {
        for envelope in Envelopes::new(frame) {
            let (header, payload) = match envelope {
                Ok(ok) => ok,
                Err(e) => {
                    self.stats.dropped(DropReason::Malformed, 1);
                    tracing::warn!(node = %self.info.id, error = %e, "dropped a malformed envelope");
                    continue;
                }
            };
            self.on_request(header, payload, replies);
        }
    }

    fn on_request(self: &Arc<Self>, header: Header, payload: Bytes, replies: &Arc<Outbox>) {
        match header {
            Header::Tell {
                target,
                message,
                trace,
            } => {
                let target = ActorId(target);
                let outcome = match self.handle_of(target) {
                    None => Err(WireError::ActorNotFound),
                    Some(handle) => handle.dispatch(
                        message,
                        Inbound {
                            node: self,
                            actor: target,
                            trace,
                            ask: None,
                            wrap: false,
                        },
                        &payload,
                    ),
                };
                if let Err(e) = outcome {
                    let reason = drop_reason(&e);
                    self.stats.dropped(reason, 1);
                    tracing::warn!(node = %self.info.id, actor = %target, error = ?e, "dropped a remote tell");
                }
            }
            Header::Ask {
                id,
                target,
                message,
                timeout_ms,
                trace,
            } => {
                let target = ActorId(target);
                if self.stopping.load(Ordering::Acquire) {
                    self.stats.dropped(DropReason::ShuttingDown, 1);
                    send_reply::<()>(self, replies, id, Err(WireError::ShuttingDown));
                    return;
                }
                let deadline =
                    tokio::time::Instant::now() + Duration::from_millis(u64::from(timeout_ms));
                let outcome = match self.handle_of(target) {
                    None => Err(WireError::ActorNotFound),
                    Some(handle) => handle.dispatch(
                        message,
                        Inbound {
                            node: self,
                            actor: target,
                            trace,
                            ask: Some(AskReply {
                                id,
                                outbox: replies.clone(),
                                deadline,
                            }),
                            wrap: false,
                        },
                        &payload,
                    ),
                };
                if let Err(e) = outcome {
                    self.stats.dropped(drop_reason(&e), 1);
                    tracing::warn!(node = %self.info.id, actor = %target, error = ?e, "refused a remote ask");
                    send_reply::<()>(self, replies, id, Err(e));
                }
            }
            Header::Spawn { id, actor_type } => {
                let outcome = if self.stopping.load(Ordering::Acquire) {
                    Err(WireError::ShuttingDown)
                } else {
                    match self.spawnables.get(actor_type.as_str()) {
                        Some(spawn) => spawn(self, &payload).map(|a| a.0),
                        None => Err(WireError::UnknownActorType { actor_type }),
                    }
                };
                send_reply(self, replies, id, outcome);
            }
            Header::SpawnReplica {
                id,
                actor_type,
                group,
                fence,
                singleton,
            } => {
                let node = self.clone();
                let replies = replies.clone();
                tokio::spawn(async move {
                    let outcome = node
                        .spawn_replica(&actor_type, &group, fence, singleton, &payload)
                        .await;
                    send_reply(&node, &replies, id, outcome.map(|a| a.0));
                });
            }
            Header::Retire {
                id,
                target,
                group,
                fence,
            } => {
                let node = self.clone();
                let replies = replies.clone();
                tokio::spawn(async move {
                    let outcome = node.retire(ActorId(target), &group, fence).await;
                    send_reply(&node, &replies, id, outcome);
                });
            }
            Header::Stop { target } => {
                if !self.stop_local(ActorId(target)) {
                    self.stats.dropped(DropReason::UnknownActor, 1);
                    tracing::debug!(node = %self.info.id, actor = target, "stop for an actor that is not here");
                }
            }
            Header::Watch { watch, target } => {
                let target = ActorId(target);
                let mut actors = write(&self.actors);
                let watcher = Watcher::Remote {
                    outbox: Arc::downgrade(replies),
                    watch,
                };
                match actors.get_mut(&target) {
                    Some(entry) => entry.watchers.push(watcher),
                    None => {
                        drop(actors);
                        self.notify_watcher(watcher, target, TerminationReason::NotFound);
                    }
                }
            }
            other @ (Header::Reply { .. } | Header::Terminated { .. }) => {
                self.stats.dropped(DropReason::Malformed, 1);
                tracing::warn!(node = %self.info.id, header = ?other, "a reply-direction envelope arrived as a request; dropped");
            }
        }
    }

    /// Records a new inbound link's reply queue (flushed at shutdown).
    pub(crate) fn track_inbound(&self, outbox: &Arc<Outbox>) {
        let mut inbound = lock(&self.inbound);
        inbound.retain(|w| w.strong_count() > 0);
        inbound.push(Arc::downgrade(outbox));
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown_tx.subscribe()
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Applies one membership change to the view and the links.
    fn apply(&self, event: MembershipEvent) {
        match &event {
            MembershipEvent::Up(info) => {
                write(&self.members).insert(info.id.clone(), info.clone());
                if lock(&self.departed).remove(&info.id) {
                    // A new incarnation: old references keep their dead link, new ones connect.
                    lock(&self.peers).remove(&info.id);
                }
            }
            MembershipEvent::Left(id) | MembershipEvent::Down(id) => {
                let graceful = matches!(event, MembershipEvent::Left(_));
                write(&self.members).remove(id);
                if id == &self.info.id {
                    if !self.is_stopping() {
                        tracing::error!(node = %id, "discovery declared this node down; its peers consider its actors gone");
                    }
                } else {
                    lock(&self.departed).insert(id.clone());
                    if let Some(link) = lock(&self.peers).get(id).cloned() {
                        link.mark_down(graceful);
                    }
                }
            }
        }
        let _ = self.events.send(event);
    }

    async fn shutdown(self: &Arc<Self>) {
        if self.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        let deadline = tokio::time::Instant::now() + self.config.shutdown_timeout;
        tracing::info!(node = %self.info.id, "shutting down: draining in-flight asks");
        // 1. Let the asks being handled here finish and their replies leave.
        let drained = tokio::time::timeout_at(deadline, async {
            loop {
                let notified = self.inflight_done.notified();
                if self.inflight.load(Ordering::Acquire) == 0 {
                    break;
                }
                notified.await;
            }
            let inbound: Vec<_> = lock(&self.inbound)
                .iter()
                .filter_map(Weak::upgrade)
                .collect();
            for outbox in inbound {
                outbox.drained().await;
            }
            let links: Vec<_> = lock(&self.peers).values().cloned().collect();
            for link in links {
                link.drained().await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(node = %self.info.id, "shutdown timeout reached with work still in flight");
        }
        // 2. Leave the cluster: peers see Left and fail fast from now on.
        if let Err(e) = self
            .discovery
            .leave(&self.info.cluster, &self.info.id)
            .await
        {
            tracing::warn!(node = %self.info.id, error = %e, "could not leave discovery cleanly");
        }
        // 3. Stop actors, the server and inbound links; close outbound links.
        let _ = self.shutdown_tx.send(true);
        let links: Vec<_> = lock(&self.peers).drain().map(|(_, l)| l).collect();
        for link in links {
            link.close();
        }
        tracing::info!(node = %self.info.id, "shut down");
    }
}

fn drop_reason(e: &WireError) -> DropReason {
    match e {
        WireError::ActorNotFound => DropReason::UnknownActor,
        WireError::UnknownMessage { .. } => DropReason::UnknownMessage,
        WireError::Codec(_) => DropReason::Decode,
        WireError::ActorStopped | WireError::HandlerPanicked(_) => DropReason::ActorStopped,
        WireError::DeadlineExpired => DropReason::DeadlineExpired,
        WireError::ShuttingDown => DropReason::ShuttingDown,
        WireError::UnknownActorType { .. } => DropReason::UnknownActor,
        WireError::Fenced => DropReason::ShuttingDown,
    }
}

/// Stops singleton `actor` as soon as its node can no longer be sure its lease is alive:
/// before etcd can expire the lease and the controller start another instance elsewhere.
async fn guard_singleton(weak: Weak<NodeShared>, actor: ActorId) {
    const MARGIN: Duration = Duration::from_millis(300);
    loop {
        let Some(node) = weak.upgrade() else { return };
        if !read(&node.actors).contains_key(&actor) {
            return;
        }
        let Some(deadline) = node
            .discovery
            .lease_deadline(&node.info.cluster, &node.info.id)
        else {
            // No lease (in-process discovery): nothing to guard against.
            return;
        };
        let stop_at = deadline.checked_sub(MARGIN).unwrap_or(deadline);
        if std::time::Instant::now() >= stop_at {
            tracing::warn!(node = %node.info.id, %actor, "singleton stopped: this node may be cut off from etcd");
            node.stop_local(actor);
            return;
        }
        drop(node);
        let wait = stop_at.saturating_duration_since(std::time::Instant::now());
        tokio::time::sleep(wait.min(Duration::from_millis(200))).await;
    }
}

struct ActorGuard {
    node: Weak<NodeShared>,
    id: ActorId,
    /// The key of the actor's mailbox, under which a caught panic is recorded.
    mailbox: u64,
}

impl Drop for ActorGuard {
    fn drop(&mut self) {
        // A panic that was not caught (a plain tell) unwinds through here; a caught one was
        // recorded under the mailbox's key.
        let failed = std::thread::panicking() | take_failed(self.mailbox);
        if let Some(node) = self.node.upgrade() {
            node.actor_stopped(self.id, failed);
        }
    }
}

/// Counts an ask being handled here until its reply is queued.
pub(crate) struct InflightGuard(Arc<NodeShared>);

impl InflightGuard {
    pub(crate) fn node(&self) -> &Arc<NodeShared> {
        &self.0
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        if self.0.inflight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.inflight_done.notify_waiters();
        }
    }
}

/// The remote side of `spawn_on` for actor type `A`.
pub(crate) fn spawn_from_wire<A: Spawnable>(
    node: &Arc<NodeShared>,
    payload: &[u8],
) -> std::result::Result<ActorId, WireError> {
    let args: A::Args =
        with_decode_node(node, || decode_payload(payload)).map_err(WireError::Codec)?;
    Ok(node.spawn_with(move |ctx| A::from_args(args, ctx)).id())
}

#[cfg(test)]
mod tests;
