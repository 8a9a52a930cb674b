//! The world: virtual clock, event queue, network, etcd's side of every request, and the
//! watch streams.
//!
//! Everything that happens is an [`Ev`] in one queue ordered by (time, sequence number), so
//! that a run is a pure function of its seed. The node's side of things is in
//! [`node`](super::node) and [`leader`](super::leader), the faults in
//! [`scenario`](super::scenario), the properties in [`check`](super::check).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::core::placement::Placement;
use crate::core::Time;
use crate::id::{ActorId, NodeId};

use super::check::Stats;
use super::etcd::{Change, Etcd, Key, WatchId};
pub(crate) use super::fixes::Fixes;
pub(crate) use super::net::Net;
use super::node::{Node, Purpose};
use super::rng::Rng;
use super::scenario::{Fault, Scenario};
use super::server::{Op, Reply};
use super::trace::Trace;

/// A run that needs more events than this is stuck in a loop.
const MAX_EVENTS: u64 = 1_000_000;

/// The id of one node incarnation (a process), unique over a run: a counter, and the
/// incarnation's slot in the low byte.
pub(crate) type Inc = u64;

/// The slot of incarnation `inc`.
pub(crate) fn slot(inc: Inc) -> usize {
    (inc & 0xff) as usize
}

/// The fixed parameters of a run.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Node slots (`n0`, `n1`…); a slot holds at most one incarnation at a time.
    pub(crate) nodes: usize,
    /// The etcd lease TTL (the real default: 3 s).
    pub(crate) ttl: Duration,
    /// The etcd request timeout (the real default: 2 s).
    pub(crate) request_timeout: Duration,
    /// The controller's ask timeout for a spawn (the real default: 5 s).
    pub(crate) ask_timeout: Duration,
    /// The chance that a message between nodes is lost (a connection reset).
    pub(crate) drop_rate: f64,
    /// The chance that a message is slow (50-800 ms instead of 1-20 ms), which reorders it.
    pub(crate) slow_rate: f64,
    /// Whether nodes publish load reports (for autoscaling and least-loaded placement).
    pub(crate) loads: bool,
    /// How the nodes differ from today's node code.
    pub(crate) fixes: Fixes,
    /// Whether nodes fence the work others ask of them by their lease
    /// ([`core::fence`](crate::core::fence)); off only to show that the checks catch its
    /// absence.
    pub(crate) fence: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            nodes: 4,
            ttl: Duration::from_secs(3),
            request_timeout: Duration::from_secs(2),
            ask_timeout: Duration::from_secs(5),
            drop_rate: 0.01,
            slow_rate: 0.02,
            loads: true,
            fixes: Fixes::all(),
            fence: true,
        }
    }
}

/// A message between nodes (the controller's orders and their answers).
#[derive(Debug, Clone)]
pub(crate) enum Msg {
    /// A spawn order of a controller.
    Spawn {
        /// The order's number (for the checks).
        order: u64,
        /// The ask's number at the leader.
        ask: u64,
        group: String,
        singleton: bool,
        fence: u64,
    },
    /// The answer to a spawn order.
    SpawnReply {
        /// The leadership the ask belongs to.
        token: u64,
        ask: u64,
        /// The replica started, or whether the node is unable.
        result: Result<ActorId, bool>,
    },
    /// A retire order of a controller.
    Retire {
        order: u64,
        group: String,
        actor: ActorId,
        fence: u64,
    },
}

/// A node's timer.
#[derive(Debug, Clone)]
pub(crate) enum Timer {
    /// Renew the lease (every TTL / 3).
    KeepAlive,
    /// Publish the load report (every 2 s).
    ReportLoad,
    /// The controller's resync tick of the leadership `token`.
    Tick(u64),
    /// The singleton guard of a replica.
    Guard(ActorId),
    /// An etcd request that got no answer in time.
    Timeout(u64),
    /// A spawn ask of the leadership `token` that got no answer in time.
    AskTimeout(u64, u64),
    /// Try to register again.
    Register,
    /// Campaign again.
    Campaign,
}

/// One thing that happens.
#[derive(Debug, Clone)]
pub(crate) enum Ev {
    /// A request reaches etcd.
    ToEtcd {
        from: Inc,
        req: u64,
        op: Box<Op>,
        /// Whether the node waits for the answer (etcd answers only then).
        answer: bool,
    },
    /// An answer reaches a node.
    FromEtcd { to: Inc, req: u64, reply: Reply },
    /// The next item of a watch stream reaches its node.
    Pump(WatchId),
    /// A message reaches a node, on the sender's connection number `conn` to it.
    Peer {
        from: Inc,
        to: Inc,
        conn: u64,
        msg: Msg,
    },
    /// A node's timer fires.
    Timer { inc: Inc, timer: Timer },
    /// The scenario acts.
    Fault(Fault),
}

/// An event in the queue: the earliest time first, then the earliest scheduled.
#[derive(Debug)]
struct Scheduled {
    at: Time,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    /// Reversed: `BinaryHeap` is a max-heap.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// One item of a watch stream.
#[derive(Debug, Clone)]
pub(crate) enum Item {
    /// The answer to the request that opened the watch.
    Opened(Reply),
    /// A change after it.
    Change(Box<Change>),
}

/// A watch's items on their way to the node that opened it, in order.
#[derive(Debug)]
pub(crate) struct Stream {
    pub(crate) owner: Inc,
    /// The request that opened it.
    pub(crate) req: u64,
    pub(crate) items: VecDeque<Item>,
    /// Whether a [`Ev::Pump`] is scheduled.
    pub(crate) pumping: bool,
}

/// The simulated cluster. See the [module docs](self).
pub(crate) struct World {
    pub(crate) cfg: Config,
    pub(crate) now: Time,
    pub(crate) rng: Rng,
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    pub(crate) etcd: Etcd,
    /// The live incarnation of each slot.
    pub(crate) nodes: Vec<Option<Node>>,
    next_inc: Inc,
    pub(crate) streams: BTreeMap<WatchId, Stream>,
    pub(crate) net: Net,
    /// The custom placement policies every leader knows.
    pub(crate) placements: BTreeMap<String, Arc<dyn Placement>>,
    /// The asks in flight on each slot, as its load reports say.
    pub(crate) load: Vec<u64>,
    pub(crate) next_order: u64,
    /// Every order issued: its issuer and fence.
    pub(crate) issued: BTreeMap<u64, (Inc, u64)>,
    /// The outcome of every fence check: the order and whether it was applied.
    pub(crate) fenced: BTreeMap<u64, bool>,
    /// Every leadership: the token and the incarnation that won it.
    pub(crate) leaders: BTreeMap<u64, Inc>,
    pub(crate) stats: Stats,
    pub(crate) trace: Trace,
    pub(crate) scenario: Option<Scenario>,
    /// The first property violation seen.
    pub(crate) violation: Option<String>,
    /// The frozen incarnations ([`freeze`](super::freeze)).
    pub(crate) frozen: BTreeMap<Inc, Frozen>,
    /// Every freeze that ended, by incarnation.
    pub(crate) thawed: BTreeMap<Inc, Vec<Thawed>>,
    /// The current connection number of each (sender, receiver) pair: a receiver that
    /// closes a link makes the sender open a new one.
    pub(crate) conns: BTreeMap<(Inc, Inc), u64>,
    /// When each order was issued.
    pub(crate) issued_at: BTreeMap<u64, Time>,
    /// The last time each slot was seen cut from etcd.
    pub(crate) cut_seen: BTreeMap<usize, Time>,
    /// Freezes waiting for their node's next order (see `World::arm_freeze`).
    pub(crate) freeze_armed: BTreeMap<usize, Duration>,
}

/// A frozen incarnation (SIGSTOP): what reached it meanwhile waits here.
#[derive(Debug)]
pub(crate) struct Frozen {
    pub(crate) since: Time,
    /// The lease it believed it held when frozen.
    pub(crate) lease: Option<super::etcd::LeaseId>,
    /// The events that reached it, in arrival order.
    pub(crate) held: Vec<Ev>,
}

/// A freeze that ended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Thawed {
    pub(crate) since: Time,
    pub(crate) until: Time,
    /// Whether etcd had expired the node's lease by the end of the freeze.
    pub(crate) outlived: bool,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("now", &self.now)
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

impl World {
    /// An empty cluster: etcd and `cfg.nodes` empty slots, nothing scheduled.
    pub(crate) fn new(cfg: Config, seed: u64) -> Self {
        let placements: BTreeMap<String, Arc<dyn Placement>> = [(
            super::scenario::CUSTOM.to_owned(),
            Arc::new(super::scenario::Backwards) as Arc<dyn Placement>,
        )]
        .into();
        World {
            etcd: Etcd::new(cfg.ttl),
            nodes: (0..cfg.nodes).map(|_| None).collect(),
            load: vec![0; cfg.nodes],
            cfg,
            now: Time::ZERO,
            rng: Rng::new(seed),
            queue: BinaryHeap::new(),
            seq: 0,
            next_inc: 1,
            streams: BTreeMap::new(),
            net: Net::default(),
            placements,
            next_order: 1,
            issued: BTreeMap::new(),
            fenced: BTreeMap::new(),
            leaders: BTreeMap::new(),
            stats: Stats::default(),
            trace: Trace::default(),
            scenario: None,
            violation: None,
            frozen: BTreeMap::new(),
            thawed: BTreeMap::new(),
            conns: BTreeMap::new(),
            issued_at: BTreeMap::new(),
            cut_seen: BTreeMap::new(),
            freeze_armed: BTreeMap::new(),
        }
    }

    /// Schedules `ev` at `at`.
    pub(crate) fn schedule(&mut self, at: Time, ev: Ev) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at: at.max(self.now),
            seq: self.seq,
            ev,
        });
    }

    /// Runs events until `until` (or until a property fails); whether all went well.
    pub(crate) fn run_until(&mut self, until: Time) -> bool {
        while self.violation.is_none() {
            if self.queue.peek().is_none_or(|next| next.at > until) {
                break;
            }
            let Some(Scheduled { at, seq, ev }) = self.queue.pop() else {
                break;
            };
            if self.trace.events >= MAX_EVENTS {
                self.violate(format!("runaway: more than {MAX_EVENTS} events"));
                break;
            }
            self.end_instant(Some(at));
            self.now = at;
            self.trace.event(at, seq, &ev);
            self.etcd.expire_due(at);
            self.flush_changes();
            self.handle(ev);
            self.flush_changes();
            for cut in &self.net.etcd_cut {
                self.cut_seen.insert(*cut, at);
            }
            self.check_singletons(false);
        }
        self.end_instant(self.queue.peek().map(|next| next.at));
        self.now = self.now.max(until);
        self.violation.is_none()
    }

    fn handle(&mut self, ev: Ev) {
        let Some(ev) = self.hold_if_frozen(ev) else {
            return;
        };
        match ev {
            Ev::ToEtcd {
                from,
                req,
                op,
                answer,
            } => {
                let slot = slot(from);
                if !self.net.etcd_cut.contains(&slot) {
                    self.serve(from, req, *op, answer);
                }
            }
            Ev::FromEtcd { to, req, reply } => {
                if self.alive(to) && !self.net.etcd_cut.contains(&slot(to)) {
                    self.on_reply(to, req, reply);
                }
            }
            Ev::Pump(watch) => self.pump(watch),
            Ev::Peer {
                from,
                to,
                conn,
                msg,
            } => {
                if self.alive(to) && self.net.peers(slot(from), slot(to)) {
                    self.on_message(to, from, conn, msg);
                }
            }
            Ev::Timer { inc, timer } => {
                if self.alive(inc) {
                    self.on_timer(inc, timer);
                }
            }
            Ev::Fault(fault) => self.on_fault(fault),
        }
    }

    /// Whether incarnation `inc` is running.
    pub(crate) fn alive(&self, inc: Inc) -> bool {
        self.node(inc).is_some()
    }

    /// Incarnation `inc`, if it is running.
    pub(crate) fn node(&self, inc: Inc) -> Option<&Node> {
        let slot = slot(inc);
        self.nodes[slot].as_ref().filter(|n| n.inc == inc)
    }

    /// Incarnation `inc`, if it is running.
    pub(crate) fn node_mut(&mut self, inc: Inc) -> Option<&mut Node> {
        let slot = slot(inc);
        self.nodes[slot].as_mut().filter(|n| n.inc == inc)
    }

    /// A fresh incarnation id for `slot`.
    pub(crate) fn new_inc(&mut self, slot: usize) -> Inc {
        let inc = self.next_inc << 8 | slot as u64;
        self.next_inc += 1;
        inc
    }

    /// A network delay: mostly 1-20 ms, sometimes 50-800 ms.
    pub(crate) fn delay(&mut self) -> Duration {
        if self.rng.chance(self.cfg.slow_rate) {
            self.rng.millis(50, 800)
        } else {
            self.rng.millis(1, 20)
        }
    }

    /// Sends `op` from `inc` to etcd for `purpose` (lost if `inc` is cut from etcd); the
    /// purposes that wait for an answer time out.
    pub(crate) fn request(&mut self, inc: Inc, op: Op, purpose: Purpose) {
        let now = self.now;
        let waits = purpose.waits();
        let mid_order = purpose.is_order();
        let answer = !matches!(purpose, Purpose::Fire);
        let Some(node) = self.node_mut(inc) else {
            return;
        };
        let req = node.track(now, purpose);
        if waits {
            let at = now + self.cfg.request_timeout;
            self.schedule(
                at,
                Ev::Timer {
                    inc,
                    timer: Timer::Timeout(req),
                },
            );
        }
        if !self.net.etcd_cut.contains(&slot(inc)) {
            let at = now + self.delay();
            self.schedule(
                at,
                Ev::ToEtcd {
                    from: inc,
                    req,
                    op: Box::new(op),
                    answer,
                },
            );
        }
        self.freeze_if_armed(inc, mid_order);
    }

    /// Sends `msg` from `from` to the live incarnation of the node `to`, if any, unless the
    /// message is lost.
    pub(crate) fn send(&mut self, from: Inc, to: &NodeId, msg: Msg) {
        let Some(to_slot) = slot_of_id(to) else {
            return;
        };
        let Some(target) = self
            .nodes
            .get(to_slot)
            .and_then(|n| n.as_ref())
            .map(|n| n.inc)
        else {
            return;
        };
        let conn = self.conns.get(&(from, target)).copied().unwrap_or(0);
        if target == from {
            self.schedule(
                self.now,
                Ev::Peer {
                    from,
                    to: target,
                    conn,
                    msg,
                },
            );
            return;
        }
        if self.rng.chance(self.cfg.drop_rate) || !self.net.peers(slot(from), to_slot) {
            return;
        }
        let at = self.now + self.delay();
        self.schedule(
            at,
            Ev::Peer {
                from,
                to: target,
                conn,
                msg,
            },
        );
    }

    /// Moves etcd's new changes into their streams.
    fn flush_changes(&mut self) {
        for (watch, change) in self.etcd.take_changes() {
            if let Some(stream) = self.streams.get_mut(&watch) {
                stream.items.push_back(Item::Change(Box::new(change)));
                self.kick(watch);
            }
        }
    }

    /// Schedules the delivery of a stream's next item, unless one is scheduled.
    pub(crate) fn kick(&mut self, watch: WatchId) {
        let delay = self.delay();
        if let Some(stream) = self.streams.get_mut(&watch) {
            if !stream.pumping && !stream.items.is_empty() {
                stream.pumping = true;
                let at = self.now + delay;
                self.schedule(at, Ev::Pump(watch));
            }
        }
    }

    /// Delivers a stream's next item, or holds it while the node is cut from etcd.
    fn pump(&mut self, watch: WatchId) {
        let Some(stream) = self.streams.get(&watch) else {
            return;
        };
        let (owner, req) = (stream.owner, stream.req);
        if !self.alive(owner) {
            self.cancel_watch(watch);
            return;
        }
        if self.net.etcd_cut.contains(&slot(owner)) {
            let at = self.now + Duration::from_millis(500);
            self.schedule(at, Ev::Pump(watch));
            return;
        }
        let Some(stream) = self.streams.get_mut(&watch) else {
            return;
        };
        stream.pumping = false;
        let Some(item) = stream.items.pop_front() else {
            return;
        };
        match item {
            Item::Opened(reply) => self.on_opened(owner, req, watch, reply),
            Item::Change(change) => self.on_change(owner, watch, *change),
        }
        self.kick(watch);
    }

    /// Ends a watch and drops what it still had to deliver.
    pub(crate) fn cancel_watch(&mut self, watch: WatchId) {
        self.etcd.unwatch(watch);
        self.streams.remove(&watch);
    }

    /// Records the first property violation.
    pub(crate) fn violate(&mut self, what: String) {
        if self.violation.is_none() {
            self.trace.note(self.now, || format!("VIOLATION: {what}"));
            self.violation = Some(what);
        }
    }
}

/// The node id of slot `slot`.
pub(crate) fn node_id(slot: usize) -> NodeId {
    NodeId::new(format!("n{slot}"))
}

/// The slot of node id `id`.
pub(crate) fn slot_of_id(id: &NodeId) -> Option<usize> {
    id.as_str().strip_prefix('n')?.parse().ok()
}

/// The key of a group member.
pub(crate) fn member_key(group: &str, node: &NodeId, actor: ActorId) -> Key {
    Key::Member {
        group: group.to_owned(),
        node: node.clone(),
        actor,
    }
}
