//! The leader's shell around the real [`Controller`]: what `controller::lead` does, on
//! simulated I/O. It feeds the controller the node's membership view, the spec and group
//! watches, the load reports, the answers to its spawn asks and a tick every 500 ms, and
//! carries out the orders: follows groups through etcd, sends spawn and retire orders to the
//! nodes (a spawn ask times out after the ask timeout), records autoscaled specs.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::core::controller::{Controller, Event, Order};
use crate::core::placement::Placement;
use crate::id::NodeId;

use super::node::{Campaign, Purpose, Watching};
use super::server::Op;
use super::world::{slot, Ev, Inc, Msg, Timer, World};

/// How often the leader's controller ticks.
const RESYNC: Duration = Duration::from_millis(500);

/// A node's leadership: its controller and its spawn asks in flight.
#[derive(Debug)]
pub(crate) struct Leading {
    /// The fencing token.
    pub(crate) token: u64,
    pub(crate) ctl: Controller,
    /// Spawn asks in flight: the group and the node asked.
    asks: BTreeMap<u64, (String, NodeId)>,
    next_ask: u64,
}

impl Leading {
    fn new(token: u64, placements: BTreeMap<String, Arc<dyn Placement>>) -> Self {
        Leading {
            token,
            ctl: Controller::new(token, placements),
            asks: BTreeMap::new(),
            next_ask: 0,
        }
    }
}

impl World {
    /// Whether `inc` leads with `token`.
    pub(crate) fn leads(&self, inc: Inc, token: u64) -> bool {
        self.node(inc)
            .and_then(|n| n.leading.as_ref())
            .is_some_and(|l| l.token == token)
    }

    /// `inc` won the campaign with `token`: it starts its controller.
    pub(crate) fn become_leader(&mut self, inc: Inc, token: u64) {
        let placements = self.placements.clone();
        let slot = slot(inc);
        self.stats.leaderships += 1;
        self.leaders.insert(token, inc);
        self.trace
            .note(self.now, || format!("n{slot} leads, token {token}"));
        let Some(node) = self.node_mut(inc) else {
            return;
        };
        node.campaign = Campaign::Leading;
        node.leading = Some(Leading::new(token, placements));
        let view: Vec<_> = node.view.values().cloned().collect();
        for info in view {
            self.feed(inc, Event::MemberUp(info));
        }
        self.request(inc, Op::WatchSpecs, Purpose::WatchSpecs(token));
        self.retry(inc, Timer::Tick(token), RESYNC.as_millis() as u64);
    }

    /// `inc` lost its leadership: its controller goes, and it campaigns again.
    pub(crate) fn step_down(&mut self, inc: Inc) {
        let slot = slot(inc);
        let Some(node) = self.node_mut(inc) else {
            return;
        };
        let Some(leading) = node.leading.take() else {
            return;
        };
        node.campaign = Campaign::Idle;
        let watches: Vec<_> = node
            .watches
            .iter()
            .filter(|(_, w)| !matches!(w, Watching::Nodes))
            .map(|(id, _)| *id)
            .collect();
        for watch in watches {
            if let Some(node) = self.node_mut(inc) {
                node.watches.remove(&watch);
            }
            self.cancel_watch(watch);
        }
        let token = leading.token;
        self.trace.note(self.now, || {
            format!("n{slot} lost the lead (token {token})")
        });
        self.campaign(inc);
    }

    /// The controller's resync tick.
    pub(crate) fn tick(&mut self, inc: Inc, token: u64) {
        if self.leads(inc, token) {
            self.feed(inc, Event::Tick);
            self.retry(inc, Timer::Tick(token), RESYNC.as_millis() as u64);
        }
    }

    /// A spawn ask got no answer within the ask timeout: it failed.
    pub(crate) fn ask_timed_out(&mut self, inc: Inc, token: u64, ask: u64) {
        self.spawn_answered(inc, token, ask, Err(false));
    }

    /// A spawn ask was answered (or timed out).
    pub(crate) fn spawn_answered(
        &mut self,
        inc: Inc,
        token: u64,
        ask: u64,
        result: Result<crate::id::ActorId, bool>,
    ) {
        if !self.leads(inc, token) {
            return;
        }
        let leading = self.node_mut(inc).and_then(|n| n.leading.as_mut());
        let Some((group, node)) = leading.and_then(|l| l.asks.remove(&ask)) else {
            return;
        };
        let event = match result {
            Ok(actor) => Event::Spawned { group, node, actor },
            Err(unable) => Event::SpawnFailed {
                group,
                node,
                unable,
            },
        };
        self.feed(inc, event);
    }

    /// Steps the leader's controller with `event` and carries out the orders (and the
    /// events they cause at once).
    pub(crate) fn feed(&mut self, inc: Inc, event: Event) {
        let mut work = VecDeque::from([event]);
        let mut steps = 0;
        while let Some(event) = work.pop_front() {
            steps += 1;
            if steps > 10_000 {
                return self.violate("the controller loops on events it causes".to_owned());
            }
            let now = self.now;
            self.note_event(inc, &event);
            let Some(leading) = self.node_mut(inc).and_then(|n| n.leading.as_mut()) else {
                return;
            };
            let orders = leading.ctl.step(event, now);
            for order in orders {
                self.execute(inc, order, &mut work);
            }
        }
    }

    /// Notes the membership events a controller sees.
    fn note_event(&mut self, inc: Inc, event: &Event) {
        let slot = slot(inc);
        let what = match event {
            Event::MemberUp(info) => format!("up {}", info.id),
            Event::MemberDown(id) => format!("down {id}"),
            Event::MemberLeft(id) => format!("left {id}"),
            Event::GroupJoined { group, member } => {
                format!("{group} joined by {} {}", member.node, member.actor)
            }
            Event::GroupLeft { group, member } => {
                format!("{group} left by {} {}", member.node, member.actor)
            }
            _ => return,
        };
        self.trace
            .note(self.now, || format!("n{slot} controller sees {what}"));
    }

    /// Carries out one order of the controller of `inc`.
    fn execute(&mut self, inc: Inc, order: Order, work: &mut VecDeque<Event>) {
        let (now, ask_timeout) = (self.now, self.cfg.ask_timeout);
        let slot = slot(inc);
        let Some(node) = self.node_mut(inc) else {
            return;
        };
        let Some(leading) = node.leading.as_mut() else {
            return;
        };
        let token = leading.token;
        match order {
            Order::Follow { group } => {
                let op = Op::WatchGroup(group.clone());
                self.request(inc, op, Purpose::Follow(token, group));
            }
            Order::ReadLoads => self.request(inc, Op::ReadLoads, Purpose::ReadLoads(token)),
            Order::Spawn {
                node: target,
                group,
                singleton,
                fence,
                ..
            } => {
                if !node.view.contains_key(&target) {
                    work.push_back(Event::SpawnFailed {
                        group,
                        node: target,
                        unable: false,
                    });
                    return;
                }
                leading.next_ask += 1;
                let ask = leading.next_ask;
                leading.asks.insert(ask, (group.clone(), target.clone()));
                let order = self.issue(inc, fence);
                self.stats.spawn_orders += 1;
                self.trace.note(now, || {
                    format!("n{slot} orders spawn #{order} of {group} on {target} (fence {fence})")
                });
                let msg = Msg::Spawn {
                    order,
                    ask,
                    group,
                    singleton,
                    fence,
                };
                self.send(inc, &target, msg);
                self.schedule(
                    now + ask_timeout,
                    Ev::Timer {
                        inc,
                        timer: Timer::AskTimeout(token, ask),
                    },
                );
            }
            Order::Retire {
                node: target,
                group,
                actor,
                fence,
            } => {
                if !node.view.contains_key(&target) {
                    return;
                }
                let order = self.issue(inc, fence);
                self.stats.retire_orders += 1;
                self.trace.note(now, || {
                    format!("n{slot} orders retire #{order} of {group} {actor} on {target} (fence {fence})")
                });
                let msg = Msg::Retire {
                    order,
                    group,
                    actor,
                    fence,
                };
                self.send(inc, &target, msg);
            }
            Order::Report { group, status } => {
                self.trace.note(now, || match &status {
                    Some(status) => format!("n{slot} reports {status}"),
                    None => format!("n{slot} reports {group} no longer stuck"),
                });
            }
            Order::PutSpec(spec) => {
                let replicas = spec.replicas;
                let group = spec.group.clone();
                self.trace
                    .note(now, || format!("n{slot} autoscales {group} to {replicas}"));
                self.request(inc, Op::PutSpec(spec), Purpose::Fire);
            }
        }
    }
}
