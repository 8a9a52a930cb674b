//! A node incarnation: its lease and keep-alives, its membership view, its replicas, and how
//! it carries out the controller's orders (the model of `node::spawn_replica`, `retire`,
//! `check_fence` and `guard_singleton`, and of the etcd session's keep-alive and
//! registration again after a lost lease).

use std::collections::{BTreeMap, BTreeSet};

use crate::core::model::{GroupMember, LoadReport, NodeInfo};
use crate::core::singleton::{guard, Guard, MARGIN};
use crate::core::Time;
use crate::id::{ActorId, NodeId};

use super::etcd::{LeaseId, WatchId};
use super::leader::Leading;
use super::server::{Op, Reply};
use super::world::{node_id, slot, Ev, Inc, Timer, World};

/// The actor type every replica has in the simulation.
pub(crate) const ACTOR_TYPE: &str = "sim.Replica";

/// What a node waits for from etcd.
#[derive(Debug, Clone)]
pub(crate) enum Purpose {
    /// The node's registration.
    Register,
    /// A keep-alive of this lease.
    KeepAlive(LeaseId),
    /// The membership watch.
    WatchNodes,
    /// A campaign for the leadership.
    Campaign,
    /// The fence check of a spawn order.
    FenceSpawn {
        from: Inc,
        order: u64,
        ask: u64,
        group: String,
        singleton: bool,
        fence: u64,
        /// The lease epoch of the link the order came by.
        epoch: u64,
    },
    /// The group membership of a replica just started for a spawn order.
    JoinSpawn {
        from: Inc,
        ask: u64,
        token: u64,
        actor: ActorId,
    },
    /// The fenced registration of a replica for a spawn order
    /// ([`Fixes::fenced_join`](super::world::Fixes::fenced_join)).
    FencedJoin {
        from: Inc,
        order: u64,
        /// The lease epoch of the link the order came by.
        epoch: u64,
        ask: u64,
        fence: u64,
        /// The lease the member key is written under.
        lease: LeaseId,
        group: String,
        singleton: bool,
        /// The actor id reserved for the replica.
        actor: ActorId,
    },
    /// The deletion of a member key, until it is done
    /// ([`Fixes::leave_until_done`](super::world::Fixes::leave_until_done)).
    Leave(String, ActorId),
    /// The fence check of a retire order.
    FenceRetire {
        order: u64,
        group: String,
        actor: ActorId,
        fence: u64,
        /// The lease epoch of the link the order came by.
        epoch: u64,
    },
    /// Asking etcd whether the lease is alive, with frames held meanwhile
    /// ([`fence`](super::fence)).
    ConfirmLease(LeaseId),
    /// The leader's spec watch.
    WatchSpecs(u64),
    /// The leader's following of a group.
    Follow(u64, String),
    /// The leader's load reports.
    ReadLoads(u64),
    /// Nobody waits for the answer.
    Fire,
}

impl Purpose {
    /// Whether the node gives up on the request after the request timeout.
    pub(crate) fn waits(&self) -> bool {
        !matches!(
            self,
            Purpose::KeepAlive(_) | Purpose::ReadLoads(_) | Purpose::Fire
        )
    }

    /// Whether the request carries out an order.
    pub(crate) fn is_order(&self) -> bool {
        matches!(
            self,
            Purpose::FenceSpawn { .. } | Purpose::FencedJoin { .. } | Purpose::FenceRetire { .. }
        )
    }
}

/// What a watch of the node is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Watching {
    /// The membership.
    Nodes,
    /// The leader key (while leading, or waiting for it to go).
    Leader,
    /// The specs, for the leadership with this token.
    Specs(u64),
    /// A followed group, for the leadership with this token.
    Group(u64, String),
}

/// Where the node is in its campaign for the leadership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Campaign {
    /// Not campaigning (not registered yet, or about to try again).
    Idle,
    /// A campaign request is out.
    Asking,
    /// Someone else leads; waiting for the leader key to go.
    Waiting,
    /// Leading.
    Leading,
}

/// A replica on a node.
#[derive(Debug, Clone)]
pub(crate) struct Replica {
    /// The group it was started for.
    pub(crate) group: String,
    /// Whether it is registered in its group (its key was written and not deleted by it).
    pub(crate) member: bool,
    pub(crate) singleton: bool,
}

/// A running node incarnation.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) inc: Inc,
    pub(crate) info: NodeInfo,
    /// The lease the node believes it holds.
    pub(crate) lease: Option<LeaseId>,
    /// Until when the lease is certainly alive: the last confirmed renewal, counted from
    /// when it was sent, plus the TTL (`Discovery::lease_deadline`).
    pub(crate) alive_until: Option<Time>,
    pub(crate) registering: bool,
    /// Whether the node registered once (and so follows the membership).
    joined: bool,
    /// The replicas (changed only through [`Node::add_replica`] and
    /// [`Node::remove_replica`]).
    pub(crate) actors: BTreeMap<ActorId, Replica>,
    /// How many of them are singletons.
    pub(crate) singletons: usize,
    next_actor: u64,
    /// The node's membership view, fed by its watch.
    pub(crate) view: BTreeMap<NodeId, NodeInfo>,
    requests: BTreeMap<u64, (Time, Purpose)>,
    /// Member keys being deleted until done
    /// ([`Fixes::leave_until_done`](super::world::Fixes::leave_until_done)).
    pub(crate) leaving: BTreeSet<(String, ActorId)>,
    next_req: u64,
    pub(crate) watches: BTreeMap<WatchId, Watching>,
    pub(crate) campaign: Campaign,
    pub(crate) leading: Option<Leading>,
    /// What the node knows of its lease, for the fence ([`fence`](super::fence)).
    pub(crate) fence: FenceState,
}

/// What a node knows of its lease beyond [`Node::alive_until`], and its links.
#[derive(Debug, Default)]
pub(crate) struct FenceState {
    /// The lease (its id) last granted; 0 before the first.
    pub(crate) epoch: u64,
    /// etcd said the lease is gone; no new one yet.
    pub(crate) lost: bool,
    /// A confirmation of the lease timed out: serving unconfirmed until etcd answers.
    pub(crate) unconfirmed: bool,
    /// The node was seen cut from etcd during the confirmation that timed out (so the
    /// unconfirmed serving is the outage case the fence allows).
    pub(crate) cut_when_unconfirmed: bool,
    /// A confirmation is under way.
    pub(crate) confirming: bool,
    /// The links from each peer: the connection number, the epoch it was accepted under,
    /// and whether it is open.
    pub(crate) links: BTreeMap<Inc, (u64, u64, bool)>,
    /// Orders read while the lease was in doubt: sender, link epoch, order.
    pub(crate) held: Vec<(Inc, u64, super::world::Msg)>,
    /// Spawns whose member key was written, held while the lease was in doubt.
    pub(crate) held_starts: Vec<Purpose>,
}

impl Node {
    /// Remembers a request; its number.
    pub(crate) fn track(&mut self, now: Time, purpose: Purpose) -> u64 {
        self.next_req += 1;
        self.requests.insert(self.next_req, (now, purpose));
        self.next_req
    }

    /// Starts replica `actor`.
    pub(crate) fn add_replica(&mut self, actor: ActorId, replica: Replica) {
        self.singletons += usize::from(replica.singleton);
        if let Some(old) = self.actors.insert(actor, replica) {
            self.singletons -= usize::from(old.singleton);
        }
    }

    /// Stops replica `actor`; what it was.
    pub(crate) fn remove_replica(&mut self, actor: ActorId) -> Option<Replica> {
        let replica = self.actors.remove(&actor)?;
        self.singletons -= usize::from(replica.singleton);
        Some(replica)
    }

    /// What the node's requests in flight are for.
    pub(crate) fn requests(&self) -> impl Iterator<Item = &Purpose> {
        self.requests.values().map(|(_, p)| p)
    }

    /// Forgets a request (answered, or given up); what it was for.
    pub(crate) fn untrack(&mut self, req: u64) -> Option<(Time, Purpose)> {
        self.requests.remove(&req)
    }

    /// A fresh actor id.
    pub(crate) fn reserve_actor(&mut self) -> ActorId {
        let actor = ActorId(self.next_actor);
        self.next_actor += 1;
        actor
    }

    /// The group member entry of replica `actor`.
    pub(crate) fn member(&self, actor: ActorId) -> GroupMember {
        GroupMember {
            node: self.info.id.clone(),
            addr: self.info.addr,
            actor,
            actor_type: ACTOR_TYPE.to_owned(),
            weight: 1,
        }
    }
}

/// What node `slot` publishes about itself.
fn info(slot: usize) -> NodeInfo {
    NodeInfo {
        id: node_id(slot),
        cluster: "sim".to_owned(),
        addr: ([10, 0, 0, slot as u8], 7000).into(),
        protocol: 1,
        version: "sim".to_owned(),
        labels: BTreeMap::new(),
        started_at_ms: 0,
        spawnable: vec![ACTOR_TYPE.to_owned()],
        admin: None,
    }
}

impl World {
    /// Starts a new incarnation in the empty `slot`: it registers, then keeps its lease
    /// alive every TTL / 3.
    pub(crate) fn start_node(&mut self, slot: usize) {
        if self.nodes[slot].is_some() {
            return;
        }
        let inc = self.new_inc(slot);
        self.nodes[slot] = Some(Node {
            inc,
            info: info(slot),
            lease: None,
            alive_until: None,
            registering: true,
            joined: false,
            actors: BTreeMap::new(),
            singletons: 0,
            next_actor: 1,
            view: BTreeMap::new(),
            requests: BTreeMap::new(),
            leaving: BTreeSet::new(),
            next_req: 0,
            watches: BTreeMap::new(),
            campaign: Campaign::Idle,
            leading: None,
            fence: FenceState::default(),
        });
        self.trace
            .note(self.now, || format!("start n{slot} (inc {inc})"));
        self.register(inc);
        let at = self.now + self.cfg.ttl / 3;
        self.schedule(
            at,
            Ev::Timer {
                inc,
                timer: Timer::KeepAlive,
            },
        );
        if self.cfg.loads {
            let at = self.now + self.rng.millis(0, 2_000);
            self.schedule(
                at,
                Ev::Timer {
                    inc,
                    timer: Timer::ReportLoad,
                },
            );
        }
    }

    /// Ends the incarnation of `slot` at once (a crash, or the end of a graceful leave).
    pub(crate) fn kill(&mut self, slot: usize) {
        let Some(node) = self.nodes[slot].take() else {
            return;
        };
        self.frozen.remove(&node.inc);
        for watch in node.watches.keys() {
            self.cancel_watch(*watch);
        }
    }

    /// Registers (again): a fresh lease, the node key, and the members of the replicas that
    /// are still registered.
    pub(crate) fn register(&mut self, inc: Inc) {
        let load = self.load_report(inc);
        let Some(node) = self.node_mut(inc) else {
            return;
        };
        node.registering = true;
        node.lease = None;
        let members = node
            .actors
            .iter()
            .filter(|(_, r)| r.member)
            .map(|(a, r)| (r.group.clone(), node.member(*a)))
            .collect();
        let op = Op::Register {
            info: node.info.clone(),
            members,
            load,
        };
        self.request(inc, op, Purpose::Register);
    }

    /// The load report of `inc`, when nodes report.
    fn load_report(&self, inc: Inc) -> Option<LoadReport> {
        let node = self.node(inc).filter(|_| self.cfg.loads)?;
        Some(LoadReport {
            actors: node.actors.len() as u64,
            inflight_asks: self.load[slot(inc)],
            send_queue_bytes: 0,
            asks_per_second: 0.0,
            at_ms: self.now.as_millis() as u64,
        })
    }

    /// Campaigns for the leadership, unless already at it.
    pub(crate) fn campaign(&mut self, inc: Inc) {
        let Some(node) = self.node_mut(inc) else {
            return;
        };
        let Some(lease) = node.lease.filter(|_| node.campaign == Campaign::Idle) else {
            return;
        };
        node.campaign = Campaign::Asking;
        self.request(inc, Op::Campaign(lease), Purpose::Campaign);
    }

    /// A node's timer fired.
    pub(crate) fn on_timer(&mut self, inc: Inc, timer: Timer) {
        match timer {
            Timer::KeepAlive => {
                self.keep_alive(inc);
                let at = self.now + self.cfg.ttl / 3;
                self.schedule(at, Ev::Timer { inc, timer });
            }
            Timer::ReportLoad => {
                let lease = self.node(inc).and_then(|n| n.lease);
                if let (Some(lease), Some(load)) = (lease, self.load_report(inc)) {
                    self.request(inc, Op::PutLoad(lease, load), Purpose::Fire);
                }
                let at = self.now + std::time::Duration::from_secs(2);
                self.schedule(at, Ev::Timer { inc, timer });
            }
            Timer::Guard(actor) => self.guard(inc, actor),
            Timer::Timeout(req) => self.on_timeout(inc, req),
            Timer::Register => self.register(inc),
            Timer::Campaign => self.campaign(inc),
            Timer::Tick(token) => self.tick(inc, token),
            Timer::AskTimeout(token, ask) => self.ask_timed_out(inc, token, ask),
        }
    }

    /// Renews the lease of `inc` (unless it is registering).
    pub(crate) fn keep_alive(&mut self, inc: Inc) {
        let Some(node) = self.node(inc) else { return };
        if let Some(lease) = node.lease.filter(|_| !node.registering) {
            self.request(inc, Op::KeepAlive(lease), Purpose::KeepAlive(lease));
        }
    }

    /// The singleton guard of `actor` (`guard_singleton`).
    pub(crate) fn guard(&mut self, inc: Inc, actor: ActorId) {
        let now = self.now;
        let Some(node) = self.node(inc) else { return };
        if !node.actors.get(&actor).is_some_and(|r| r.singleton) {
            return;
        }
        match guard(node.alive_until, now, MARGIN) {
            Guard::Unguarded => {}
            Guard::Stop => {
                self.stats.guard_stops += 1;
                self.trace.note(now, || {
                    format!("n{} guard stops singleton {actor}", slot(inc))
                });
                self.stop_actor(inc, actor);
            }
            Guard::CheckAt(at) => self.schedule(
                at,
                Ev::Timer {
                    inc,
                    timer: Timer::Guard(actor),
                },
            ),
        }
    }

    /// Stops replica `actor`; a registered one leaves its group (`actor_stopped`).
    pub(crate) fn stop_actor(&mut self, inc: Inc, actor: ActorId) {
        let Some(node) = self.node_mut(inc) else {
            return;
        };
        let Some(replica) = node.remove_replica(actor) else {
            return;
        };
        if replica.member {
            self.leave_group(inc, replica.group, actor);
        }
    }

    /// Deletes the member key of `actor` in `group`: once (today), or until etcd answers
    /// ([`Fixes::leave_until_done`](super::world::Fixes::leave_until_done)).
    pub(crate) fn leave_group(&mut self, inc: Inc, group: String, actor: ActorId) {
        let op = Op::DeleteMember {
            group: group.clone(),
            actor,
        };
        if !self.cfg.fixes.leave_until_done {
            return self.request(inc, op, Purpose::Fire);
        }
        if let Some(node) = self.node_mut(inc) {
            node.leaving.insert((group.clone(), actor));
        }
        self.request(inc, op, Purpose::Leave(group, actor));
    }

    /// An etcd request got no answer in time.
    fn on_timeout(&mut self, inc: Inc, req: u64) {
        let Some(node) = self.node_mut(inc) else {
            return;
        };
        let Some((sent, purpose)) = node.requests.remove(&req) else {
            return;
        };
        match purpose {
            Purpose::Register => self.retry(inc, Timer::Register, 1_000),
            Purpose::WatchNodes => self.request(inc, Op::WatchNodes, Purpose::WatchNodes),
            Purpose::Campaign => {
                node.campaign = Campaign::Idle;
                self.retry(inc, Timer::Campaign, 500);
            }
            Purpose::Leave(group, actor) => {
                if node.leaving.contains(&(group.clone(), actor)) {
                    self.leave_group(inc, group, actor);
                }
            }
            Purpose::WatchSpecs(token) => {
                if self.leads(inc, token) {
                    self.request(inc, Op::WatchSpecs, Purpose::WatchSpecs(token));
                }
            }
            Purpose::Follow(token, group) => {
                if self.leads(inc, token) {
                    let op = Op::WatchGroup(group.clone());
                    self.request(inc, op, Purpose::Follow(token, group));
                }
            }
            Purpose::KeepAlive(_) | Purpose::ReadLoads(_) | Purpose::Fire => {}
            Purpose::ConfirmLease(lease) => self.confirmation_timed_out(inc, lease, sent),
            order => self.order_timed_out(inc, order),
        }
    }

    /// Schedules `timer` of `inc` in `ms` milliseconds.
    pub(crate) fn retry(&mut self, inc: Inc, timer: Timer, ms: u64) {
        let at = self.now + std::time::Duration::from_millis(ms);
        self.schedule(at, Ev::Timer { inc, timer });
    }

    /// etcd answered a request of `inc`.
    pub(crate) fn on_reply(&mut self, inc: Inc, req: u64, reply: Reply) {
        let ttl = self.cfg.ttl;
        let slot = slot(inc);
        let Some(node) = self.node_mut(inc) else {
            return;
        };
        let Some((sent, purpose)) = node.requests.remove(&req) else {
            return;
        };
        match (purpose, reply) {
            (Purpose::Register, Reply::Registered(Some(lease))) => {
                let first = !node.joined;
                node.joined = true;
                node.lease = Some(lease);
                node.alive_until = Some(sent + ttl);
                node.registering = false;
                node.fence.epoch = lease;
                node.fence.lost = false;
                node.fence.unconfirmed = false;
                // The keys of the previous lease are gone with it.
                node.leaving.clear();
                self.trace
                    .note(self.now, || format!("n{slot} registered, lease {lease}"));
                if first {
                    self.request(inc, Op::WatchNodes, Purpose::WatchNodes);
                }
                self.campaign(inc);
            }
            (Purpose::Register, _) => self.retry(inc, Timer::Register, 1_000),
            (Purpose::KeepAlive(lease), Reply::KeptAlive(true)) => {
                if node.lease == Some(lease) {
                    node.alive_until = node.alive_until.max(Some(sent + ttl));
                    node.fence.unconfirmed = false;
                }
            }
            (Purpose::KeepAlive(lease), Reply::KeptAlive(false)) => {
                self.lease_lost(inc, lease);
            }
            (Purpose::Campaign, _) => {
                node.campaign = Campaign::Idle;
                self.retry(inc, Timer::Campaign, 500);
            }
            (Purpose::Leave(group, actor), _) => {
                node.leaving.remove(&(group, actor));
            }
            (Purpose::ReadLoads(token), Reply::Loads(loads)) => {
                if self.leads(inc, token) {
                    self.feed(inc, crate::core::controller::Event::Loads(loads));
                }
            }
            (Purpose::Fire, _) => {}
            (Purpose::ConfirmLease(lease), Reply::KeptAlive(alive)) => {
                self.lease_confirmed(inc, lease, sent, alive)
            }
            (order, reply) => self.order_answered(inc, order, reply),
        }
    }
}
