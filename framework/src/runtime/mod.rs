//! The node runtime: the state behind every `Node` and every reference into it, and the
//! shells that act on it.
//!
//! # What runs inside a node
//!
//! ```text
//! Node (public handle, node/)            ─┐
//!  └─ NodeShared (this module)            │ the runtime
//!      ├─ actor table      table.rs, spawn.rs: ActorId -> dispatch handle, watchers, names,
//!      │                   groups, supervisor; each actor holds a guard whose drop removes it
//!      │                   from the table (or restarts it) and tells its watchers
//!      ├─ inbound requests inbound.rs: frames from peers' links -> dispatch.rs -> mailboxes;
//!      │                   replies through reply.rs
//!      ├─ orders           orders.rs: the receiving side of the controller's fenced orders;
//!      │                   singleton.rs guards singleton replicas
//!      ├─ membership view  membership.rs: applies discovery events; a node that is down or left
//!      │                   fails its link (pending asks fail with NodeDown, watchers told)
//!      ├─ load reports     load.rs
//!      ├─ controller shell controller.rs: campaign, then feed core::controller and carry out
//!      │                   its orders
//!      └─ shutdown         shutdown.rs
//! ```
//!
//! Below the runtime: the transport (`transport/`, which reaches the runtime only through
//! [`transport::server::Acceptor`](crate::transport::server::Acceptor)), discovery
//! (`discovery/`, the `Discovery` trait) and the I/O-free core (`core/`). This file holds only
//! the state and the small accessors every shell uses; each shell is one file of `impl
//! NodeShared`.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::Duration;

use actix::{Addr, Recipient};
use actix_rt::ArbiterHandle;
use tokio::sync::{broadcast, watch, Notify};
use tokio::time::Instant;

use crate::core::model::{GroupMember, MembershipEvent, NameEntry, NodeInfo};
use crate::core::placement::Placement;
use crate::core::terminated::Terminated;
use crate::core::view::MembershipView;
use crate::core::wire::envelope::WireError;
use crate::core::wire::outbox::Outbox;
use crate::discovery::Discovery;
use crate::id::{ActorId, NodeId};
use crate::stats::Stats;
use crate::supervise::Decision;
use crate::trace::TraceContext;
use crate::transport::link::{LinkConfig, PeerLink};

pub(crate) mod controller;
pub(crate) mod decode;
pub(crate) mod dispatch;
pub(crate) mod entity;
pub(crate) mod fence;
pub(crate) mod inbound;
pub(crate) mod load;
pub(crate) mod local;
pub(crate) mod membership;
pub(crate) mod orders;
pub(crate) mod panics;
pub(crate) mod reply;
pub(crate) mod shutdown;
pub(crate) mod singleton;
pub(crate) mod spawn;
pub(crate) mod status;
pub(crate) mod table;

/// Settings fixed when the node starts.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) ask_timeout: Duration,
    pub(crate) load_interval: Duration,
    pub(crate) max_frame: usize,
    pub(crate) send_queue_bytes: usize,
    pub(crate) shutdown_timeout: Duration,
    /// How far two nodes' wall clocks may disagree (see `NodeBuilder::max_clock_skew`).
    pub(crate) max_clock_skew: Duration,
    /// Link TLS (`NodeBuilder::tls`), shared with the outbound links' configuration.
    pub(crate) tls: Option<crate::transport::tls::LinkTls>,
    /// The accepting side's limits.
    pub(crate) listen: crate::transport::listener::Limits,
}

/// Builds an actor of a [`Spawnable`] type from wire arguments (the remote side of `spawn_on`).
pub(crate) type SpawnFn = fn(&Arc<NodeShared>, &[u8]) -> std::result::Result<ActorId, WireError>;

/// The node's actors: a dispatch handle for each, and, apart, what only some actors have
/// (watchers, names, groups, a supervisor), so that an idle actor costs one map entry.
#[derive(Default)]
pub(crate) struct ActorTable {
    pub(crate) handles: HashMap<ActorId, Arc<dyn LocalDispatch>>,
    pub(crate) extras: HashMap<ActorId, EntryExtra>,
}

/// The parts of an actor's table entry that most actors never use.
#[derive(Default)]
pub(crate) struct EntryExtra {
    pub(crate) watchers: Vec<Watcher>,
    pub(crate) names: Vec<String>,
    pub(crate) groups: Vec<(String, u32)>,
    /// Restarts the actor by policy when it stops (see `supervise`), unless its stop was
    /// requested (`LocalDispatch::stop_requested`).
    pub(crate) supervisor: Option<Arc<dyn Respawn>>,
}

impl ActorTable {
    /// Whether actor `id` is in the table.
    pub(crate) fn contains(&self, id: ActorId) -> bool {
        self.handles.contains_key(&id)
    }

    /// How many actors are in the table.
    pub(crate) fn len(&self) -> usize {
        self.handles.len()
    }

    /// The optional parts of actor `id`'s entry, created on first use; `None` if the actor is
    /// not in the table.
    pub(crate) fn extra_mut(&mut self, id: ActorId) -> Option<&mut EntryExtra> {
        if !self.handles.contains_key(&id) {
            return None;
        }
        Some(self.extras.entry(id).or_default())
    }

    /// The supervisor of actor `id`, if it is supervised.
    pub(crate) fn supervisor(&self, id: ActorId) -> Option<&Arc<dyn Respawn>> {
        self.extras.get(&id)?.supervisor.as_ref()
    }

    /// Removes actor `id`: its handle and its optional parts.
    pub(crate) fn remove(&mut self, id: ActorId) -> Option<(Arc<dyn LocalDispatch>, EntryExtra)> {
        let handle = self.handles.remove(&id)?;
        Some((handle, self.extras.remove(&id).unwrap_or_default()))
    }
}

/// A supervised actor's restart decisions and how to start it again.
pub(crate) trait Respawn: Send + Sync {
    fn decide(&self, failed: bool) -> Decision;
    fn respawn(&self, node: &Arc<NodeShared>, id: ActorId);
}

/// Who is told when an actor of the table terminates.
pub(crate) enum Watcher {
    Local(Recipient<Terminated>),
    Remote { outbox: Weak<Outbox>, watch: u64 },
}

/// The state behind every [`Node`](crate::Node) handle and every reference into it.
pub(crate) struct NodeShared {
    pub(crate) info: NodeInfo,
    pub(crate) config: Config,
    pub(crate) link_config: Arc<LinkConfig>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) discovery: Arc<dyn Discovery>,
    pub(crate) actors: RwLock<ActorTable>,
    pub(crate) next_actor: AtomicU64,
    pub(crate) peers: Mutex<HashMap<NodeId, Arc<PeerLink>>>,
    /// Who is a member, as this node sees it.
    pub(crate) view: RwLock<MembershipView>,
    pub(crate) declarations: RwLock<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
    pub(crate) spawnables: HashMap<&'static str, SpawnFn>,
    /// Values given with `NodeBuilder::data`, by type.
    pub(crate) data: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    pub(crate) placements: HashMap<String, Arc<dyn Placement>>,
    pub(crate) arbiter: ArbiterHandle,
    pub(crate) stopping: AtomicBool,
    pub(crate) shutdown_tx: watch::Sender<bool>,
    pub(crate) inflight: AtomicUsize,
    pub(crate) inflight_done: Notify,
    /// Asks handled by this node's actors, for load reports.
    pub(crate) asks_handled: AtomicU64,
    pub(crate) inbound: Mutex<Vec<Weak<Outbox>>>,
    /// Actors waiting for the arbiter to start them, one queue per actor and constructor type
    /// (see `spawn.rs`).
    pub(crate) starts: Mutex<HashMap<TypeId, Box<dyn Any + Send>>>,
    pub(crate) events: broadcast::Sender<MembershipEvent>,
    /// What this node knows of its lease, once joined to a discovery with leases.
    pub(crate) lease: std::sync::OnceLock<Arc<crate::discovery::LeaseClock>>,
    /// The keyed entity types this node hosts or sends to, by name.
    pub(crate) entities: RwLock<HashMap<&'static str, Arc<entity::KindHost>>>,
    /// Request frames read while the lease was in doubt (see `fence.rs`).
    pub(crate) held: Mutex<fence::Held>,
    /// The node's metrics, when it runs an admin listener.
    pub(crate) metrics: Option<Arc<crate::metrics::NodeMetrics>>,
    /// A graceful shutdown has begun (readiness fails from then on).
    pub(crate) draining: AtomicBool,
    /// `shutdown` has been called (a second call waits for the first).
    pub(crate) shutdown_started: AtomicBool,
    /// Woken when a drain is asked for on the admin listener.
    pub(crate) drain_requested: Notify,
    /// `Node::run_until_stopped` calls waiting: they carry out a drain request themselves.
    pub(crate) drain_waiters: AtomicUsize,
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

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl NodeShared {
    /// The members of the cluster as this node sees them.
    pub(crate) fn members(&self) -> Vec<NodeInfo> {
        read(&self.view).members().cloned().collect()
    }

    /// Membership changes from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<MembershipEvent> {
        self.events.subscribe()
    }

    pub(crate) fn discovery(&self) -> &dyn Discovery {
        &*self.discovery
    }

    pub(crate) fn group_member(
        &self,
        actor: ActorId,
        actor_type: &str,
        weight: u32,
    ) -> GroupMember {
        GroupMember {
            node: self.info.id.clone(),
            addr: self.info.addr,
            actor,
            actor_type: actor_type.to_owned(),
            weight,
        }
    }

    pub(crate) fn name_entry(&self, actor: ActorId, actor_type: &str) -> NameEntry {
        NameEntry {
            node: self.info.id.clone(),
            addr: self.info.addr,
            actor,
            actor_type: actor_type.to_owned(),
        }
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown_tx.subscribe()
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    pub(crate) fn inflight_guard(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        InflightGuard(self.clone())
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

/// Decodes one message type from a payload and delivers it into an actor of type `A`.
pub(crate) type DispatchFn<A> = fn(&Addr<A>, Inbound<'_>, &[u8]) -> Result<(), WireError>;

/// Where an inbound message came from and where its reply goes.
pub(crate) struct Inbound<'a> {
    pub(crate) node: &'a Arc<NodeShared>,
    pub(crate) actor: ActorId,
    pub(crate) trace: Option<TraceContext>,
    pub(crate) ask: Option<AskReply>,
    /// Deliver wrapped even when nothing is traced (the target is supervised).
    pub(crate) wrap: bool,
    /// A keyed entity's message: the fence its handler checks (instead of the link's lease
    /// for an ask), also for a tell.
    pub(crate) fence: Option<fence::FenceStamp>,
}

/// The return address of an ask.
pub(crate) struct AskReply {
    pub(crate) id: u64,
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) deadline: Instant,
    /// The lease under which the ask was read (see `fence.rs`).
    pub(crate) epoch: u64,
}

/// A local actor as the transport sees it: a type name and a dispatch table.
pub(crate) trait LocalDispatch: Send + Sync {
    fn dispatch(&self, message: u64, inbound: Inbound<'_>, payload: &[u8])
        -> Result<(), WireError>;
    fn type_name(&self) -> &'static str;
    fn as_any(&self) -> &dyn Any;
    /// Asks the actor to stop after the messages already in its mailbox; from then on
    /// [`LocalDispatch::stop_requested`] is true.
    fn stop(&self);
    /// Whether [`LocalDispatch::stop`] was called: new messages are refused, not queued
    /// behind the stop (where they would be dropped unhandled).
    fn stop_requested(&self) -> bool;
}
