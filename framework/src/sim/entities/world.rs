//! The world: virtual clock, event queue, network, etcd's and the state store's side of
//! every request, the watch streams, the clients and the faults.
//!
//! Everything that happens is an [`Ev`] in one queue ordered by (time, sequence number), so
//! that a run is a pure function of its seed. The nodes' code ([`node`](super::node)) reads
//! its own clock and returns [`Out`]s, which the world carries out here: nothing below this
//! file knows the world.
//!
//! The network: a message takes 1-20 ms, 2 % of them 50-800 ms (reordering them); a slow
//! node's take 20-300 ms more. Between nodes and from clients nothing is lost but to a dead
//! node; etcd's requests and answers are lost to a partition of their node, and its watch
//! waits until the partition heals.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::time::Duration;

use crate::core::shard::shard_of;
use crate::core::Time;
use crate::id::NodeId;
use crate::sim::rng::Rng;

use super::check::{converged, Checker, Stats};
use super::clock::Clock;
use super::config::Config;
use super::effects::{Ctx, Envelope, Out, Timer};
use super::etcd::{Change, Etcd, Op, Reply};
use super::node::Node;
use super::scenario::{Fault, FaultsFn};
use super::store::{Store, StoreOp, StoreReply};
use super::trace::Trace;

/// A run that needs more events than this is stuck in a loop.
const MAX_EVENTS: u64 = 2_000_000;

/// A process: one incarnation of a node (a restart is a new one), unique over a run.
pub(crate) type Inc = u64;

/// A property, as the failures name it.
pub(crate) type Property = &'static str;

/// One thing that happens.
#[derive(Debug, Clone)]
enum Ev {
    /// A request reaches etcd.
    ToEtcd { from: Inc, req: u64, op: Op },
    /// etcd's answer reaches a node.
    FromEtcd { to: Inc, req: u64, reply: Reply },
    /// The next item of a node's watch reaches it.
    Pump(Inc),
    /// A request reaches the state store.
    ToStore { from: Inc, req: u64, op: StoreOp },
    /// The store's answer reaches a node.
    FromStore {
        to: Inc,
        req: u64,
        reply: StoreReply,
    },
    /// A message reaches a node.
    Deliver { to: Inc, env: Envelope },
    /// A node's timer fires.
    Timer { inc: Inc, timer: Timer },
    /// A client sends its next message.
    Client,
    /// The scenario acts.
    Fault(Fault),
}

impl Ev {
    /// The event's kind and who it is for, for the trace's hash.
    fn who(&self) -> (u64, u64) {
        match self {
            Ev::ToEtcd { from, req, .. } => (1, from ^ req << 16),
            Ev::FromEtcd { to, req, .. } => (2, to ^ req << 16),
            Ev::Pump(inc) => (3, *inc),
            Ev::ToStore { from, req, .. } => (4, from ^ req << 16),
            Ev::FromStore { to, req, .. } => (5, to ^ req << 16),
            Ev::Deliver { to, env } => (6, to ^ env.id << 16),
            Ev::Timer { inc, .. } => (7, *inc),
            Ev::Client => (8, 0),
            Ev::Fault(_) => (9, 0),
        }
    }

    /// The incarnation the event happens in, if it happens in one (a frozen one holds it).
    fn target(&self) -> Option<Inc> {
        match self {
            Ev::FromEtcd { to, .. } | Ev::FromStore { to, .. } | Ev::Deliver { to, .. } => {
                Some(*to)
            }
            Ev::Pump(inc) | Ev::Timer { inc, .. } => Some(*inc),
            Ev::ToEtcd { .. } | Ev::ToStore { .. } | Ev::Client | Ev::Fault(_) => None,
        }
    }
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
#[derive(Debug)]
enum Item {
    Snapshot(Vec<Change>),
    Change(Change),
}

/// A node's watch: its items on their way, in order.
#[derive(Debug, Default)]
struct Stream {
    items: VecDeque<Item>,
    /// Whether a [`Ev::Pump`] is scheduled.
    pumping: bool,
}

/// A frozen incarnation: the lease it held, and what reached it meanwhile.
#[derive(Debug)]
struct Frozen {
    lease: u64,
    held: Vec<Ev>,
}

/// The simulated cluster. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct World {
    pub(crate) cfg: Config,
    pub(crate) now: Time,
    rng: Rng,
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    pub(crate) etcd: Etcd,
    store: Store,
    nodes: BTreeMap<Inc, Node>,
    by_id: BTreeMap<NodeId, Inc>,
    streams: BTreeMap<Inc, Stream>,
    frozen: BTreeMap<Inc, Frozen>,
    /// Incarnations cut from etcd.
    cut: BTreeSet<Inc>,
    /// Slow incarnations and how slow.
    slow: BTreeMap<Inc, u64>,
    next_inc: Inc,
    next_node: u64,
    next_msg: u64,
    /// Clients send until then.
    clients_until: Time,
    checker: Checker,
    pub(crate) stats: Stats,
    pub(crate) trace: Trace,
    /// The first failure of each property, in order.
    pub(crate) failures: Vec<(Property, String)>,
    /// Whether the run goes on after a failure (to see which other properties fail).
    pub(crate) keep_going: bool,
    /// The incarnations that ran in the current event.
    touched: Vec<Inc>,
}

impl World {
    /// A cluster with `cfg`, nothing started; `rng` chooses everything from here on.
    pub(crate) fn new(cfg: Config, rng: Rng) -> Self {
        World {
            etcd: Etcd::new(cfg.ttl),
            cfg,
            now: Time::ZERO,
            rng,
            queue: BinaryHeap::new(),
            seq: 0,
            store: Store::default(),
            nodes: BTreeMap::new(),
            by_id: BTreeMap::new(),
            streams: BTreeMap::new(),
            frozen: BTreeMap::new(),
            cut: BTreeSet::new(),
            slow: BTreeMap::new(),
            next_inc: 1,
            next_node: 0,
            next_msg: 1,
            clients_until: Time::ZERO,
            checker: Checker::default(),
            stats: Stats::default(),
            trace: Trace::default(),
            failures: Vec::new(),
            keep_going: false,
            touched: Vec::new(),
        }
    }

    /// Starts `nodes` nodes and schedules the random scenario: clients from 2 s until 10 s
    /// before `end`, faults for `faults_for`.
    /// `make` draws the faults ([`faults`](super::scenario::faults) or [`handoffs`](super::scenario::handoffs)).
    pub(crate) fn random_scenario(
        &mut self,
        nodes: usize,
        faults_for: Duration,
        end: Time,
        make: FaultsFn,
    ) {
        let faults = make(&mut self.rng, faults_for);
        for _ in 0..nodes {
            self.join();
        }
        self.clients_until = end.saturating_sub(Duration::from_secs(10));
        self.schedule(Duration::from_secs(2), Ev::Client);
        for (at, fault) in faults {
            self.schedule(at, Ev::Fault(fault));
        }
    }

    fn schedule(&mut self, at: Time, ev: Ev) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at: at.max(self.now),
            seq: self.seq,
            ev,
        });
    }

    /// Records a failure of `property` (the first of each).
    fn fail(&mut self, property: Property, what: String) {
        if self.failures.iter().all(|(p, _)| *p != property) {
            self.trace.note(
                self.now,
                format!("VIOLATION of property {property}: {what}"),
            );
            self.failures.push((property, what));
        }
    }

    fn failed(&self, property: Property) -> bool {
        self.failures.iter().any(|(p, _)| *p == property)
    }

    /// Runs events until `until` (or the first failure, unless [`Self::keep_going`]);
    /// whether no property failed.
    pub(crate) fn run_until(&mut self, until: Time) -> bool {
        while self.keep_going || self.failures.is_empty() {
            if self.queue.peek().is_none_or(|next| next.at > until) {
                break;
            }
            let Some(Scheduled { at, seq, ev }) = self.queue.pop() else {
                break;
            };
            if self.trace.events >= MAX_EVENTS {
                self.fail("runaway", format!("more than {MAX_EVENTS} events"));
                break;
            }
            self.now = at;
            let (kind, who) = ev.who();
            self.trace.event(at, seq, kind, who);
            self.etcd.expire_due(at);
            self.flush_changes();
            self.handle(ev);
            self.flush_changes();
            self.check_hosts();
        }
        self.now = self.now.max(until);
        self.failures.is_empty()
    }

    /// Property 1's first half over the nodes that ran in the last event and may handle
    /// more shards than before it (a node's shards can only become two nodes' at an event in
    /// which one of them widened: else they only shrink).
    fn check_hosts(&mut self) {
        let mut touched = std::mem::take(&mut self.touched);
        for inc in touched.drain(..) {
            let Some(node) = self.nodes.get_mut(&inc) else {
                continue;
            };
            if !std::mem::take(&mut node.widened) || self.failed("1a") {
                continue;
            }
            let node = &self.nodes[&inc];
            let now = self.now;
            let checked =
                self.checker
                    .hosts((node, node.clock.local(now)), self.nodes.values(), now);
            if let Err(what) = checked {
                self.fail("1a", what);
            }
        }
        self.touched = touched;
    }

    /// The end of the run: properties 2 and 3.
    pub(crate) fn check_end(&mut self) {
        let nodes = &self.nodes;
        if let Err(what) = self
            .checker
            .saves_survive(&self.store, &mut self.stats, |inc| nodes.contains_key(&inc))
        {
            self.fail("2", what);
        }
        if let Err(what) = converged(&self.etcd, self.cfg.shards, self.nodes.values()) {
            self.fail("3", what);
        }
    }

    fn handle(&mut self, ev: Ev) {
        if let Some(frozen) = ev.target().and_then(|inc| self.frozen.get_mut(&inc)) {
            frozen.held.push(ev);
            return;
        }
        match ev {
            Ev::ToEtcd { from, req, op } => {
                if self.cut.contains(&from) {
                    return;
                }
                let watch = matches!(op, Op::Watch);
                let reply = self.etcd.serve(op, self.now);
                match reply {
                    Reply::Snapshot(snapshot) if watch => {
                        if self.nodes.contains_key(&from) {
                            let stream = Stream {
                                items: [Item::Snapshot(snapshot)].into(),
                                pumping: false,
                            };
                            self.streams.insert(from, stream);
                            self.kick(from);
                        }
                    }
                    reply => {
                        let at = self.now + self.delay(from);
                        self.schedule(
                            at,
                            Ev::FromEtcd {
                                to: from,
                                req,
                                reply,
                            },
                        );
                    }
                }
            }
            Ev::FromEtcd { to, req, reply } => {
                if !self.cut.contains(&to) {
                    self.with_node(to, |n, ctx| n.on_etcd(req, reply, ctx));
                }
            }
            Ev::Pump(inc) => self.pump(inc),
            Ev::ToStore { from, req, op } => {
                let (reply, applied) = self.store.serve(&op);
                if let (Some(applied), StoreOp::Save { key, .. }) = (applied, &op) {
                    if let Err(what) = self.checker.applied(from, req, key, applied) {
                        self.fail("2", what);
                    }
                }
                let at = self.now + self.delay(from);
                self.schedule(
                    at,
                    Ev::FromStore {
                        to: from,
                        req,
                        reply,
                    },
                );
            }
            Ev::FromStore { to, req, reply } => {
                self.with_node(to, |n, ctx| n.on_store(req, reply, ctx));
            }
            Ev::Deliver { to, env } => self.with_node(to, |n, ctx| n.on_message(env, ctx)),
            Ev::Timer { inc, timer } => self.with_node(inc, |n, ctx| n.on_timer(timer, ctx)),
            Ev::Client => self.client(),
            Ev::Fault(fault) => self.on_fault(fault),
        }
    }

    /// Runs `f` on incarnation `inc`, if it is alive, with its clock's reading, and carries
    /// out what it returns.
    fn with_node(&mut self, inc: Inc, f: impl FnOnce(&mut Node, &mut Ctx)) {
        let Some(node) = self.nodes.get_mut(&inc) else {
            return;
        };
        let mut ctx = Ctx::new(node.clock.local(self.now));
        f(node, &mut ctx);
        self.touched.push(inc);
        self.carry_out(inc, ctx.out);
    }

    fn carry_out(&mut self, inc: Inc, outs: Vec<Out>) {
        let mut exit = None;
        for out in outs {
            match out {
                Out::Etcd { req, op } => {
                    if !self.cut.contains(&inc) {
                        let at = self.now + self.delay(inc);
                        self.schedule(at, Ev::ToEtcd { from: inc, req, op });
                    }
                }
                Out::Store { req, op } => {
                    let at = self.now + self.delay(inc);
                    self.schedule(at, Ev::ToStore { from: inc, req, op });
                }
                Out::Timer { after, timer } => {
                    let Some(node) = self.nodes.get(&inc) else {
                        continue;
                    };
                    let at = self.now + node.clock.span(after);
                    self.schedule(at, Ev::Timer { inc, timer });
                }
                Out::Forward { to, env } => match self.by_id.get(&to).copied() {
                    Some(target) => {
                        let at = self.now + self.delay(inc) + self.delay(target);
                        self.schedule(at, Ev::Deliver { to: target, env });
                    }
                    None => self.stats.dropped += 1,
                },
                Out::Started { key, act } => {
                    let now = self.now;
                    if let Err(what) = self.checker.started(&mut self.stats, inc, &key, act, now) {
                        self.fail("1b", what);
                    }
                    let lease = self.nodes.get(&inc).map_or(0, |n| n.lease.epoch);
                    if !self.etcd.lease_alive(lease) {
                        let what = format!(
                            "a handler of {key} starts on inc {inc} under lease {lease}, which etcd expired"
                        );
                        self.fail("1c", what);
                    }
                }
                Out::Ended { key, act } => self.checker.ended(inc, &key, act),
                Out::Acked { key, value, req } => {
                    self.stats.acked += 1;
                    if let Err(what) = self.checker.acked(inc, req, &key, value) {
                        self.fail("2", what);
                    }
                }
                Out::Count(counter) => self.stats.count(counter),
                Out::Note(what) => {
                    let id = self.nodes.get(&inc).map(|n| n.id.to_string());
                    let what = format!("{} {what}", id.unwrap_or_default());
                    self.trace.note(self.now, what);
                }
                Out::Exit(lease) => exit = Some(lease),
            }
        }
        if let Some(lease) = exit {
            if let Some(lease) = lease.filter(|_| !self.cut.contains(&inc)) {
                let at = self.now + self.delay(inc);
                let op = Op::Revoke(lease);
                self.schedule(
                    at,
                    Ev::ToEtcd {
                        from: inc,
                        req: 0,
                        op,
                    },
                );
            }
            self.remove(inc);
        }
    }

    /// A network delay for a message to or from `inc`.
    fn delay(&mut self, inc: Inc) -> Duration {
        let base = if self.rng.chance(0.02) {
            self.rng.millis(50, 800)
        } else {
            self.rng.millis(1, 20)
        };
        match self.slow.get(&inc) {
            Some(factor) => base + Duration::from_millis(self.rng.range(10, 30) * factor),
            None => base,
        }
    }

    /// Moves etcd's new changes into every watch.
    fn flush_changes(&mut self) {
        if !self.etcd.has_changes() {
            return;
        }
        let changes = self.etcd.take_changes();
        let watchers: Vec<Inc> = self.streams.keys().copied().collect();
        for inc in watchers {
            if let Some(stream) = self.streams.get_mut(&inc) {
                stream
                    .items
                    .extend(changes.iter().cloned().map(Item::Change));
            }
            self.kick(inc);
        }
    }

    /// Schedules the delivery of a watch's next item, unless one is scheduled.
    fn kick(&mut self, inc: Inc) {
        let due = self
            .streams
            .get(&inc)
            .is_some_and(|s| !s.pumping && !s.items.is_empty());
        if due {
            let at = self.now + self.delay(inc);
            if let Some(stream) = self.streams.get_mut(&inc) {
                stream.pumping = true;
            }
            self.schedule(at, Ev::Pump(inc));
        }
    }

    /// Delivers a watch's next item, or holds it while the node is cut from etcd.
    fn pump(&mut self, inc: Inc) {
        if self.cut.contains(&inc) {
            let at = self.now + Duration::from_millis(200);
            self.schedule(at, Ev::Pump(inc));
            return;
        }
        let Some(stream) = self.streams.get_mut(&inc) else {
            return;
        };
        stream.pumping = false;
        let Some(item) = stream.items.pop_front() else {
            return;
        };
        match item {
            Item::Snapshot(snapshot) => self.with_node(inc, |n, ctx| n.on_snapshot(&snapshot, ctx)),
            Item::Change(change) => self.with_node(inc, |n, ctx| n.on_change(&change, ctx)),
        }
        self.kick(inc);
    }

    /// A client sends a message for a random key: to the node etcd's assignment names, as
    /// a client that follows the assignment would, or (a quarter of them, and while there is
    /// no assignment) to any node.
    fn client(&mut self) {
        if self.now >= self.clients_until {
            return;
        }
        let next = self.now + self.rng.millis(200, 600);
        self.schedule(next, Ev::Client);
        let incs: Vec<Inc> = self.nodes.keys().copied().collect();
        if incs.is_empty() {
            return;
        }
        let key = format!("k{}", self.rng.below(self.cfg.keys));
        let shard = shard_of(key.as_bytes(), self.cfg.shards);
        // A client with an up-to-date view routes by it (and says so); otherwise any node.
        let version = self.etcd.assignment().map_or(0, |a| a.version);
        let assignee = self
            .etcd
            .assignment()
            .and_then(|a| a.node(shard))
            .and_then(|id| self.by_id.get(id).copied());
        let any = incs[self.rng.below(incs.len())];
        let (to, version) = match assignee {
            Some(inc) if self.rng.chance(0.75) => (inc, version),
            _ => (any, 0),
        };
        let env = Envelope {
            id: self.next_msg,
            shard,
            key,
            hops: 0,
            version,
            since: Time::ZERO,
        };
        self.next_msg += 1;
        self.stats.messages += 1;
        let at = self.now + self.delay(to);
        self.schedule(at, Ev::Deliver { to, env });
    }

    /// Starts a process for node `id`.
    fn start(&mut self, id: NodeId) {
        let inc = self.next_inc;
        self.next_inc += 1;
        let drift = self.cfg.drift_ppm;
        let ppm = self.rng.range(0, 2 * drift as u64) as i64 - drift;
        let clock = Clock::new(self.rng.millis(0, 1_000_000), ppm);
        let node = Node::new(id.clone(), clock, self.cfg.clone(), self.rng.next_u64());
        self.trace.note(
            self.now,
            format!("{id} starts (inc {inc}, clock {ppm:+} ppm)"),
        );
        self.nodes.insert(inc, node);
        self.by_id.insert(id, inc);
        self.with_node(inc, |n, ctx| n.start(ctx));
    }

    /// Starts a new node.
    fn join(&mut self) {
        let id = NodeId::new(format!("n{}", self.next_node));
        self.next_node += 1;
        self.start(id);
    }

    /// Incarnation `inc` is gone.
    fn remove(&mut self, inc: Inc) {
        if let Some(node) = self.nodes.remove(&inc) {
            self.by_id.remove(&node.id);
        }
        self.streams.remove(&inc);
        self.frozen.remove(&inc);
        self.cut.remove(&inc);
        self.slow.remove(&inc);
        self.checker.gone(inc);
    }

    /// The live incarnations that host (not leaving); a kill or a leave must spare two.
    fn hosts(&self) -> Vec<Inc> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.leaving.is_none())
            .map(|(inc, _)| *inc)
            .collect()
    }

    /// The hosts that can be told to leave (not frozen: a frozen node runs nothing).
    fn may_leave(&self) -> Vec<Inc> {
        let mut hosts = self.hosts();
        hosts.retain(|inc| !self.frozen.contains_key(inc));
        hosts
    }

    /// A target: the leader if `leader` and there is one, else any live incarnation.
    fn target(&mut self, leader: bool) -> Option<Inc> {
        if leader {
            if let Some((inc, _)) = self.nodes.iter().find(|(_, n)| n.leading.is_some()) {
                return Some(*inc);
            }
        }
        let incs: Vec<Inc> = self.nodes.keys().copied().collect();
        (!incs.is_empty()).then(|| incs[self.rng.below(incs.len())])
    }

    fn on_fault(&mut self, fault: Fault) {
        match fault {
            Fault::Join => {
                if self.nodes.len() < 8 {
                    self.stats.joins += 1;
                    self.join();
                }
            }
            Fault::Restart(id) => {
                if !self.by_id.contains_key(&id) {
                    self.stats.restarts += 1;
                    self.start(id);
                }
            }
            Fault::Kill { restart } => {
                let hosts = self.hosts();
                if hosts.len() > 2 {
                    let inc = hosts[self.rng.below(hosts.len())];
                    let id = self.nodes[&inc].id.clone();
                    self.stats.kills += 1;
                    self.trace
                        .note(self.now, format!("{id} killed (inc {inc})"));
                    self.remove(inc);
                    if let Some(after) = restart {
                        let at = self.now + after;
                        self.schedule(at, Ev::Fault(Fault::Restart(id)));
                    }
                }
            }
            Fault::Leave => {
                let candidates = self.may_leave();
                if self.hosts().len() > 2 && !candidates.is_empty() {
                    let inc = candidates[self.rng.below(candidates.len())];
                    self.stats.leaves += 1;
                    self.with_node(inc, |n, ctx| n.leave(ctx));
                }
            }
            Fault::Freeze { d, leader } => {
                let Some(inc) = self.target(leader) else {
                    return;
                };
                if self.frozen.contains_key(&inc) {
                    return;
                }
                let node = &self.nodes[&inc];
                let (id, lease) = (node.id.clone(), node.lease.epoch);
                self.stats.freezes += 1;
                self.trace.note(
                    self.now,
                    format!("{id} frozen for {:.3}s (lease {lease})", d.as_secs_f64()),
                );
                self.frozen.insert(
                    inc,
                    Frozen {
                        lease,
                        held: Vec::new(),
                    },
                );
                self.checker.frozen(inc);
                let at = self.now + d;
                self.schedule(at, Ev::Fault(Fault::Thaw(inc)));
            }
            Fault::Thaw(inc) => self.thaw(inc),
            Fault::Partition { d, leader } => {
                let Some(inc) = self.target(leader) else {
                    return;
                };
                if self.cut.insert(inc) {
                    self.stats.partitions += 1;
                    let id = self.nodes[&inc].id.clone();
                    self.trace.note(
                        self.now,
                        format!("{id} cut from etcd for {:.3}s", d.as_secs_f64()),
                    );
                    let at = self.now + d;
                    self.schedule(at, Ev::Fault(Fault::Heal(inc)));
                }
            }
            Fault::Heal(inc) => {
                if self.cut.remove(&inc) {
                    let id = self.nodes.get(&inc).map(|n| n.id.to_string());
                    self.trace.note(
                        self.now,
                        format!("{} reaches etcd again", id.unwrap_or_default()),
                    );
                }
            }
            Fault::Slow { d, factor } => {
                let Some(inc) = self.target(false) else {
                    return;
                };
                if self.slow.insert(inc, factor).is_none() {
                    self.stats.slow += 1;
                    if let Some(node) = self.nodes.get_mut(&inc) {
                        node.host.slow = factor;
                    }
                    let at = self.now + d;
                    self.schedule(at, Ev::Fault(Fault::Fast(inc)));
                }
            }
            Fault::Fast(inc) => {
                self.slow.remove(&inc);
                if let Some(node) = self.nodes.get_mut(&inc) {
                    node.host.slow = 1;
                }
            }
        }
    }

    /// `inc` resumes: what waited is scheduled now, in a random order.
    fn thaw(&mut self, inc: Inc) {
        let Some(Frozen { lease, mut held }) = self.frozen.remove(&inc) else {
            return;
        };
        let outlived = !self.etcd.lease_alive(lease);
        self.stats.freezes_outlived += u64::from(outlived);
        let id = self.nodes.get(&inc).map(|n| n.id.to_string());
        self.trace.note(
            self.now,
            format!(
                "{} resumes: {} events waited (lease outlived: {outlived})",
                id.unwrap_or_default(),
                held.len()
            ),
        );
        // Fisher-Yates, with the run's generator.
        for i in (1..held.len()).rev() {
            let j = self.rng.below(i + 1);
            held.swap(i, j);
        }
        for ev in held {
            self.schedule(self.now, ev);
        }
    }
}
