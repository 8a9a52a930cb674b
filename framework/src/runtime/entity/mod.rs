//! Keyed entities on a node: where a message for an entity goes (an activation here,
//! another node, or a queue while its shard moves), the activations' life cycle, and the
//! shards this node hosts.
//!
//! - this file: the per-type state ([`KindHost`]), routing and the queues;
//! - `shards.rs`: the per-type task that follows the store (assignment, owners) and carries
//!   out `core::shard::host::decide`'s steps: take, drain, release, lose;
//! - `activate.rs`: starting an activation (its state loaded first), passivation, and what
//!   happens when an activation stops;
//! - `inbound.rs`: entity envelopes from other nodes;
//! - `allocate.rs`: the leader's allocator loop (`core::shard::alloc::plan`);
//! - `drain.rs`: handing every shard over before a graceful shutdown.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

use super::fence::FenceStamp;
use super::reply::send_reply;
use super::{lock, read, AskReply, Inbound, LocalDispatch, NodeShared};
use crate::core::fence::may_host;
use crate::core::shard::host::Local;
use crate::core::shard::{shard_of, Assignment, ShardOwner};
use crate::core::wire::envelope::{Header, WireError};
use crate::id::{ActorId, NodeId};
use crate::ratelog::warn_limited;
use crate::stats::DropReason;
use crate::store::StateStore;
use crate::trace::TraceContext;
use crate::transport::link::PeerLink;

pub(crate) mod activate;
pub(crate) mod allocate;
pub(crate) mod drain;
pub(crate) mod inbound;
pub(crate) mod shards;

/// How many nodes may forward one tell for a shard in motion before it is dropped.
pub(crate) const MAX_HOPS: u8 = 4;

/// Starts an activation of one entity type: built above the runtime (it knows the user's
/// type), called by the runtime with the key, the ownership token and the loaded state.
pub(crate) trait Activator: Send + Sync + std::fmt::Debug {
    /// Starts the activation of `key` and returns its id and dispatch handle.
    fn start(
        &self,
        node: &Arc<NodeShared>,
        key: &[u8],
        token: u64,
        state: Option<Vec<u8>>,
    ) -> Option<(ActorId, Arc<dyn LocalDispatch>)>;
}

/// One entity type's settings on this node.
#[derive(Clone, Debug)]
pub(crate) struct KindConfig {
    pub(crate) shards: u32,
    pub(crate) idle: Duration,
    pub(crate) buffer: usize,
    pub(crate) margin: Duration,
    pub(crate) store: Option<Arc<dyn StateStore>>,
    /// Only nodes with every one of these labels host the type.
    pub(crate) selector: std::collections::BTreeMap<String, String>,
}

/// One entity type on this node: hosted here (`activator` set) or only sent to.
pub(crate) struct KindHost {
    pub(crate) kind: &'static str,
    pub(crate) config: KindConfig,
    pub(crate) activator: Option<Arc<dyn Activator>>,
    pub(crate) state: Mutex<KindState>,
    /// Woken at every change that may let a waiting message go.
    pub(crate) changed: Notify,
    /// Wakes the type's task (an activation stopped, a step finished).
    pub(crate) kick: Notify,
    /// The type's task is running.
    pub(crate) started: AtomicBool,
}

/// What a node knows and holds of one entity type.
#[derive(Default)]
pub(crate) struct KindState {
    pub(crate) assignment: Option<Assignment>,
    pub(crate) owners: HashMap<u32, ShardOwner>,
    pub(crate) shards: Vec<Slot>,
    pub(crate) keys: HashMap<Vec<u8>, Activation>,
    pub(crate) by_id: HashMap<ActorId, Vec<u8>>,
    /// Messages waiting for the type's assignment or for a node to send to.
    pub(crate) unrouted: VecDeque<Pending>,
    /// Messages queued anywhere for this type, and asks waiting: bounded by the buffer.
    pub(crate) waiting: usize,
    /// Shards whose stale ownership is being released.
    pub(crate) releasing_stale: Vec<u32>,
    /// The node no longer hosts the type (graceful shutdown): nothing is taken any more.
    pub(crate) withdrawn: bool,
}

/// A node's hold on one shard.
pub(crate) struct Slot {
    pub(crate) local: Local,
    /// Messages waiting for the shard to be taken here, or for its drain to end.
    pub(crate) queue: VecDeque<Pending>,
    /// Activations of the shard here (loading, running or stopping).
    pub(crate) active: usize,
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            local: Local::Idle,
            queue: VecDeque::new(),
            active: 0,
        }
    }
}

/// One activation's state.
pub(crate) enum Activation {
    /// Its state is loading: messages wait.
    Loading {
        shard: u32,
        token: u64,
        queue: VecDeque<Pending>,
    },
    /// Running.
    Active {
        shard: u32,
        id: ActorId,
        handle: Arc<dyn LocalDispatch>,
        last_used: Instant,
    },
    /// Stopping after its queued messages: new ones wait for a fresh activation.
    Stopping {
        shard: u32,
        queue: VecDeque<Pending>,
    },
}

/// A message that waits (for a shard to be taken, an activation to load, a drain to end).
pub(crate) struct Pending {
    pub(crate) key: Vec<u8>,
    pub(crate) body: PendingBody,
}

/// Delivers a typed tell from this node where it is told.
pub(crate) type SendTyped = Box<dyn FnOnce(&Arc<NodeShared>, Target) + Send>;

/// What waits.
pub(crate) enum PendingBody {
    /// A tell from this node, typed: the closure delivers it where it is told.
    Typed(SendTyped),
    /// A request from another node, encoded.
    Wire {
        message: u64,
        payload: Bytes,
        trace: Option<TraceContext>,
        ask: Option<AskReply>,
        hops: u8,
        /// The version of the assignment the sender routed it by.
        version: u64,
    },
}

/// Where a message goes once it can go.
pub(crate) enum Target {
    /// An activation here, with the fence its handler checks.
    Local {
        id: ActorId,
        handle: Arc<dyn LocalDispatch>,
        fence: Option<FenceStamp>,
    },
    /// The node the shard is assigned to, by the assignment of this version.
    Remote(Arc<PeerLink>, u64),
    /// Nowhere: refused.
    Fail(WireError),
}

/// Where a message for a key is to go now, decided under the type's lock.
enum Place {
    Go(Target),
    /// Wait in the type's queue (no assignment yet, or no link to its node yet).
    Unrouted,
    /// Wait in the shard's queue.
    Shard(u32),
    /// Wait in the activation's queue.
    Key,
    /// Start an activation (taken under `token`, lease `epoch`) and wait in its queue.
    Activate {
        shard: u32,
        token: u64,
    },
}

/// The answer to a caller that can wait by itself (an ask from this node).
pub(crate) enum Route {
    Go(Target),
    /// Wait for a change: the future is registered before the lock was released.
    Wait,
}

impl KindHost {
    pub(crate) fn new(
        kind: &'static str,
        config: KindConfig,
        activator: Option<Arc<dyn Activator>>,
    ) -> Self {
        KindHost {
            kind,
            config,
            activator,
            state: Mutex::new(KindState::default()),
            changed: Notify::new(),
            kick: Notify::new(),
            started: AtomicBool::new(false),
        }
    }

    /// Whether this node hosts the type.
    pub(crate) fn hosts(&self) -> bool {
        self.activator.is_some()
    }

    /// Whether an activation of a shard taken under lease `epoch` may handle a message now.
    pub(crate) fn hostable(&self, node: &NodeShared, epoch: u64) -> bool {
        match node.lease.get() {
            None => true,
            Some(clock) => may_host(
                &clock.lease(),
                epoch,
                clock.time(Instant::now()),
                self.config.margin,
            ),
        }
    }

    fn stamp(&self, node: &NodeShared, epoch: u64) -> Option<FenceStamp> {
        node.lease
            .get()
            .map(|clock| FenceStamp::hosting(clock.clone(), epoch, self.config.margin))
    }

    /// Decides where a message for `key` goes, under the lock.
    fn place(&self, node: &Arc<NodeShared>, st: &mut KindState, key: &[u8]) -> Place {
        let Some(assignment) = &st.assignment else {
            return Place::Unrouted;
        };
        let shards = assignment.shards();
        if shards == 0 {
            return Place::Unrouted;
        }
        let shard = shard_of(key, shards);
        let assignee = assignment.node(shard).cloned();
        let Some(slot) = st.shards.get(shard as usize) else {
            return Place::Unrouted;
        };
        match slot.local {
            Local::Owned { token, epoch } => {
                if !self.hostable(node, epoch) {
                    return Place::Shard(shard);
                }
                match st.keys.get_mut(key) {
                    Some(Activation::Active {
                        id,
                        handle,
                        last_used,
                        ..
                    }) => {
                        *last_used = Instant::now();
                        Place::Go(Target::Local {
                            id: *id,
                            handle: handle.clone(),
                            fence: self.stamp(node, epoch),
                        })
                    }
                    Some(_) => Place::Key,
                    None => Place::Activate { shard, token },
                }
            }
            Local::Idle => match assignee {
                // Withdrawn (shutting down): wait for the shard's new assignee.
                Some(n) if n == node.info.id && st.withdrawn => Place::Unrouted,
                Some(n) if n == node.info.id => Place::Shard(shard),
                Some(n) => match node.peer(&n) {
                    Some(link) => Place::Go(Target::Remote(link, assignment.version)),
                    None => Place::Unrouted,
                },
                None => Place::Unrouted,
            },
            _ => Place::Shard(shard),
        }
    }

    /// Where a message that can wait by itself goes now; on [`Route::Wait`], `waiter` was
    /// registered for the next change before the lock was released. Starts an activation if
    /// one is needed.
    pub(crate) fn route(
        self: &Arc<Self>,
        node: &Arc<NodeShared>,
        key: &[u8],
        waiter: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
    ) -> Route {
        let mut st = lock(&self.state);
        let place = self.place(node, &mut st, key);
        waiter.enable();
        match place {
            Place::Go(target) => Route::Go(target),
            Place::Activate { shard, token } => {
                self.begin_activation(&mut st, key, shard, token, VecDeque::new());
                drop(st);
                self.load_and_start(node, key.to_vec(), token);
                Route::Wait
            }
            Place::Unrouted | Place::Shard(_) | Place::Key => Route::Wait,
        }
    }

    /// Sends `pending` where it goes now, or queues it (bounded by the type's buffer).
    pub(crate) fn submit(self: &Arc<Self>, node: &Arc<NodeShared>, pending: Pending) {
        let mut st = lock(&self.state);
        let mut place = self.place(node, &mut st, &pending.key);
        if let (
            Place::Go(Target::Remote(_, ours)),
            PendingBody::Wire {
                ask: None, version, ..
            },
        ) = (&place, &pending.body)
        {
            // A tell routed here by a newer assignment than this node's: sending it on by
            // the older one would bounce it back (and drop it after a few hops). It waits
            // until this node's view catches up.
            if version > ours {
                place = Place::Unrouted;
            }
        }
        let queued = match place {
            Place::Go(target) => {
                drop(st);
                return self.deliver(node, pending, target);
            }
            Place::Activate { shard, token } => {
                let key = pending.key.clone();
                st.waiting += 1;
                self.begin_activation(&mut st, &key, shard, token, VecDeque::from([pending]));
                drop(st);
                self.load_and_start(node, key, token);
                return;
            }
            _ if st.waiting >= self.config.buffer => Err(pending),
            Place::Unrouted => {
                st.unrouted.push_back(pending);
                Ok(())
            }
            Place::Shard(shard) => {
                st.shards[shard as usize].queue.push_back(pending);
                Ok(())
            }
            Place::Key => {
                match st.keys.get_mut(&pending.key) {
                    Some(
                        Activation::Loading { queue, .. } | Activation::Stopping { queue, .. },
                    ) => queue.push_back(pending),
                    _ => unreachable!("placed in the queue of an activation that has one"),
                }
                Ok(())
            }
        };
        match queued {
            Ok(()) => st.waiting += 1,
            Err(pending) => {
                drop(st);
                node.stats.dropped(DropReason::QueueFull, 1);
                warn_limited!(node = %node.info.id, kind = self.kind, limit = self.config.buffer, "entity buffer full: a message for a moving shard was refused");
                self.deliver(node, pending, Target::Fail(WireError::EntityBufferFull));
            }
        }
    }

    /// Sends every message of `queue` on again (after the change that held it ended).
    pub(crate) fn resubmit(self: &Arc<Self>, node: &Arc<NodeShared>, queue: VecDeque<Pending>) {
        if queue.is_empty() {
            return;
        }
        {
            let mut st = lock(&self.state);
            st.waiting = st.waiting.saturating_sub(queue.len());
        }
        for pending in queue {
            self.submit(node, pending);
        }
    }

    /// What this node holds of the type now.
    pub(crate) fn status(&self, me: &NodeId) -> crate::core::shard::EntityStatus {
        let st = lock(&self.state);
        crate::core::shard::EntityStatus {
            shards: st.assignment.as_ref().map_or(0, Assignment::shards),
            assigned_here: st.assignment.as_ref().map_or(0, |a| a.count(me)),
            hosted_here: st
                .shards
                .iter()
                .filter(|s| matches!(s.local, Local::Owned { .. }))
                .count(),
            in_motion_here: st
                .shards
                .iter()
                .filter(|s| !matches!(s.local, Local::Owned { .. } | Local::Idle))
                .count(),
            activations: st
                .keys
                .values()
                .filter(|a| matches!(a, Activation::Active { .. }))
                .count(),
            waiting: st.waiting,
            assignment_version: st.assignment.as_ref().map_or(0, |a| a.version),
        }
    }

    /// Whether the buffer for waiting messages is full.
    pub(crate) fn is_full(&self) -> bool {
        lock(&self.state).waiting >= self.config.buffer
    }

    /// Counts an ask that waits by itself; `false` when the buffer is full.
    pub(crate) fn wait_slot(&self) -> bool {
        let mut st = lock(&self.state);
        if st.waiting >= self.config.buffer {
            return false;
        }
        st.waiting += 1;
        true
    }

    /// An ask that waited by itself goes on.
    pub(crate) fn end_wait(&self) {
        let mut st = lock(&self.state);
        st.waiting = st.waiting.saturating_sub(1);
    }

    /// The messages waiting for the assignment, to send on after it changed.
    pub(crate) fn take_unrouted(&self) -> VecDeque<Pending> {
        std::mem::take(&mut lock(&self.state).unrouted)
    }

    /// Why a message for this type cannot go now, in words (for an ask that gave up).
    pub(crate) fn why_waiting(&self, key: &[u8]) -> String {
        let st = lock(&self.state);
        match &st.assignment {
            None => format!(
                "no node hosts entity type {} (no assignment yet)",
                self.kind
            ),
            Some(a) => {
                let shard = shard_of(key, a.shards());
                match a.node(shard) {
                    None => format!("no node hosts entity type {}", self.kind),
                    Some(n) => format!(
                        "shard {shard} is assigned to {n} and was moving or being taken over for the whole wait"
                    ),
                }
            }
        }
    }
}

impl KindHost {
    /// Delivers `pending` to `target`.
    pub(crate) fn deliver(&self, node: &Arc<NodeShared>, pending: Pending, target: Target) {
        let Pending { key, body } = pending;
        match body {
            PendingBody::Typed(send) => send(node, target),
            PendingBody::Wire {
                message,
                payload,
                trace,
                ask,
                hops,
                version: _,
            } => match target {
                Target::Local { id, handle, fence } => {
                    let reply = ask.as_ref().map(|a| (a.id, a.outbox.clone()));
                    let outcome = handle.dispatch(
                        message,
                        Inbound {
                            node,
                            actor: id,
                            trace,
                            ask,
                            wrap: false,
                            fence,
                        },
                        &payload,
                    );
                    if let Err(e) = outcome {
                        refuse(node, reply, e);
                    }
                }
                Target::Remote(link, version) => match ask {
                    // The caller routes it again, with its own deadline.
                    Some(ask) => {
                        send_reply::<()>(node, &ask.outbox, ask.id, Err(WireError::NotOwner))
                    }
                    None if hops >= MAX_HOPS => {
                        node.stats.dropped(DropReason::UnknownActor, 1);
                        warn_limited!(node = %node.info.id, kind = self.kind, "an entity tell was forwarded {MAX_HOPS} times without reaching its shard; dropped");
                    }
                    None => {
                        let header = tell_header(self.kind, key, message, trace, hops + 1, version);
                        let sent = link.send(&header, |buf| {
                            buf.extend_from_slice(&payload);
                            Ok(())
                        });
                        if let Err(e) = sent {
                            node.stats.dropped(DropReason::LinkFailed, 1);
                            warn_limited!(node = %node.info.id, kind = self.kind, error = %e, "could not forward an entity tell to the node that hosts its shard now");
                        }
                    }
                },
                Target::Fail(e) => refuse(node, ask.map(|a| (a.id, a.outbox)), e),
            },
        }
    }
}

/// Refuses a request: its ask (if any) is answered with `e`; a tell is counted dropped.
fn refuse(
    node: &NodeShared,
    reply: Option<(u64, Arc<crate::core::wire::outbox::Outbox>)>,
    e: WireError,
) {
    match reply {
        Some((id, outbox)) => send_reply::<()>(node, &outbox, id, Err(e)),
        None => {
            node.stats.dropped(DropReason::UnknownActor, 1);
            warn_limited!(node = %node.info.id, error = ?e, "an entity tell was dropped");
        }
    }
}

impl NodeShared {
    /// The link to a member of the view, if it is one.
    pub(crate) fn peer(&self, id: &NodeId) -> Option<Arc<PeerLink>> {
        if let Some(link) = lock(&self.peers).get(id) {
            return Some(link.clone());
        }
        let addr = read(&self.view).get(id).map(|info| info.addr)?;
        Some(self.link_to(id, addr))
    }

    /// The entity type `kind` on this node, if registered.
    pub(crate) fn entity_kind(&self, kind: &str) -> Option<Arc<KindHost>> {
        read(&self.entities).get(kind).cloned()
    }
}

/// The header of a tell to an entity.
pub(crate) fn tell_header(
    kind: &str,
    key: Vec<u8>,
    message: u64,
    trace: Option<TraceContext>,
    hops: u8,
    version: u64,
) -> Header {
    Header::EntityTell {
        kind: kind.to_owned(),
        key,
        message,
        hops,
        version,
        trace,
    }
}
