//! The controller: keeps every group at its desired state ([`GroupSpec`](crate::GroupSpec)).
//!
//! Every node started with [`NodeBuilder::controller`](crate::NodeBuilder::controller)
//! campaigns for the cluster's leadership ([`Discovery::campaign`](crate::Discovery::campaign));
//! the leader follows the specs, the groups' members and the nodes, and closes the difference:
//! it asks nodes to start replicas where the spec's [`placement`](crate::placement) policy
//! says, and retires the excess. When a node dies, its replicas leave their groups with it and
//! the leader starts replacements on the survivors. When the leader dies, another node takes
//! over. Every order carries the leader's fencing token, and a node checks it against the
//! current leader before acting: a deposed leader cannot act.
//!
//! # How it is built
//!
//! The decisions are a pure state machine, in this module (crate-internal). The leader of
//! the cluster runs one `Controller` for as long as it leads. Its shell feeds
//! it every `Event` it observes (specs, nodes, group members, load reports, the outcomes of
//! its own orders, and a `Event::Tick` every 500 ms) together with the current time, and
//! carries out the `Order`s that `Controller::step` returns. The controller itself does no
//! I/O and reads no clock: the same events at the same times give the same orders, which is
//! what the cluster simulation relies on.
//!
//! After every event the controller:
//!
//! 1. asks for fresh load reports (`Order::ReadLoads`) when some spec autoscales or places
//!    by load, at most once per second;
//! 2. autoscales (see `autoscale`): moves the replica count of an autoscaled spec towards
//!    its load, records it (`Order::PutSpec`) and waits out the cooldown before the next
//!    change;
//! 3. reconciles every followed group with its spec: counts the members on live nodes that
//!    are not retiring (a singleton's members count until they leave, whether their node is
//!    seen up or not) and the replicas on their way, then asks for the missing replicas
//!    where the spec's placement policy says (`Order::Spawn`), or, when nothing is on its
//!    way, retires the excess (`Order::Retire`): on each node the policy picks, the
//!    replica with the highest actor id.
//!
//! A replica asked for counts as *pending* for `PENDING` (or until it shows up as a member,
//! or the ask fails), so that the controller neither asks twice nor waits forever; a replica
//! asked to retire is not counted for as long; a node that cannot run the spec's actor type is
//! left alone for as long. A singleton never has more than one replica, and its pending
//! spawns are not dropped when their node goes down (the node may come back and carry the
//! order out): they end with their answer or the pending window.
//!
//! Every order carries the fencing token of the leadership the controller was created for;
//! the receiving node refuses an order whose token is not the current leader's, so that a
//! deposed leader cannot act.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::core::model::{GroupMember, GroupSpec, LoadReport, NodeInfo, PlacementPolicy};
use crate::core::placement::Placement;
use crate::id::{ActorId, NodeId};

use super::Time;

pub(crate) mod autoscale;
mod reconcile;
#[cfg(test)]
mod tests;

use reconcile::GroupState;

/// How long a replica asked for counts as on its way (and a retiring replica as going, and a
/// node that could not run the actor type as unable) before the controller reconsiders.
pub(crate) const PENDING: Duration = Duration::from_secs(10);

/// The shortest interval between two [`Order::ReadLoads`].
pub(crate) const LOADS_EVERY: Duration = Duration::from_secs(1);

/// What the controller's shell observed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// A spec was created or changed (or was there when the leadership began).
    SpecPut(GroupSpec),
    /// The spec of this group was removed.
    SpecRemoved(String),
    /// A node is up (or was there when the leadership began).
    MemberUp(NodeInfo),
    /// A node was declared down.
    MemberDown(NodeId),
    /// A node left gracefully.
    MemberLeft(NodeId),
    /// The members of a group at the moment the shell started following it (the answer to
    /// [`Order::Follow`]).
    GroupMembers {
        /// The group.
        group: String,
        /// Its members then.
        members: Vec<GroupMember>,
    },
    /// A member joined a followed group.
    GroupJoined {
        /// The group.
        group: String,
        /// The member.
        member: GroupMember,
    },
    /// A member left a followed group.
    GroupLeft {
        /// The group.
        group: String,
        /// The member.
        member: GroupMember,
    },
    /// The latest load reports (the answer to [`Order::ReadLoads`]).
    Loads(BTreeMap<NodeId, LoadReport>),
    /// An [`Order::Spawn`] succeeded: the node started `actor`.
    Spawned {
        /// The group.
        group: String,
        /// The node that was asked.
        node: NodeId,
        /// The replica it started.
        actor: ActorId,
    },
    /// An [`Order::Spawn`] failed.
    SpawnFailed {
        /// The group.
        group: String,
        /// The node that was asked.
        node: NodeId,
        /// Whether the node cannot run the actor type at all (not registered as spawnable).
        unable: bool,
    },
    /// Time passed (the shell ticks every 500 ms).
    Tick,
}

/// What the controller wants done.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Order {
    /// Start following the members of `group`, and answer with [`Event::GroupMembers`], then
    /// [`Event::GroupJoined`] and [`Event::GroupLeft`]. Given once per group; the shell keeps
    /// trying until it can answer.
    Follow {
        /// The group.
        group: String,
    },
    /// Fetch the nodes' load reports and answer with [`Event::Loads`].
    ReadLoads,
    /// Ask `node` to start a replica of `group`; answer with [`Event::Spawned`] or
    /// [`Event::SpawnFailed`].
    Spawn {
        /// The node.
        node: NodeId,
        /// The group the replica joins.
        group: String,
        /// The spec's actor type.
        actor_type: String,
        /// The spec's encoded constructor arguments.
        args: Vec<u8>,
        /// Whether the replica is a singleton (its host guards it, see
        /// [`singleton`](super::singleton)).
        singleton: bool,
        /// The leadership's fencing token.
        fence: u64,
    },
    /// Ask `node` to retire replica `actor` of `group` (leave the group, then stop).
    Retire {
        /// The node.
        node: NodeId,
        /// The group.
        group: String,
        /// The replica.
        actor: ActorId,
        /// The leadership's fencing token.
        fence: u64,
    },
    /// Record this spec in discovery (the autoscaler changed its replica count).
    PutSpec(GroupSpec),
    /// Tell the operator that `group` cannot reach its spec and why (`Some`), or that it no
    /// longer is stuck (`None`). Given once per change, not on every reconciliation.
    Report {
        /// The group.
        group: String,
        /// Its status while stuck.
        status: Option<crate::core::status::GroupStatus>,
    },
}

/// The controller of one leadership. See the [module docs](self).
pub(crate) struct Controller {
    /// The leadership's fencing token, carried by every order.
    fence: u64,
    /// The custom placement policies, by the name a spec refers to them with.
    placements: BTreeMap<String, Arc<dyn Placement>>,
    /// The specs, by group.
    specs: BTreeMap<String, GroupSpec>,
    /// The groups an [`Order::Follow`] was given for.
    following: BTreeSet<String>,
    /// What is known of each followed group (from its [`Event::GroupMembers`] on).
    groups: BTreeMap<String, GroupState>,
    /// The live nodes.
    live: BTreeMap<NodeId, NodeInfo>,
    /// The latest load reports.
    loads: BTreeMap<NodeId, LoadReport>,
    /// Whether a load report answer came in during this leadership (the autoscaler waits
    /// for one, not to scale on no data).
    loads_known: bool,
    /// When the last [`Order::ReadLoads`] was given.
    loads_at: Option<Time>,
    /// When each group was last autoscaled.
    scaled_at: BTreeMap<String, Time>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("fence", &self.fence)
            .field("placements", &self.placements.keys().collect::<Vec<_>>())
            .field("specs", &self.specs.keys().collect::<Vec<_>>())
            .field("groups", &self.groups)
            .field("live", &self.live.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Controller {
    /// The controller of the leadership with fencing token `fence`, with the custom placement
    /// policies a spec may name ([`PlacementPolicy::Custom`]).
    pub(crate) fn new(fence: u64, placements: BTreeMap<String, Arc<dyn Placement>>) -> Self {
        Controller {
            fence,
            placements,
            specs: BTreeMap::new(),
            following: BTreeSet::new(),
            groups: BTreeMap::new(),
            live: BTreeMap::new(),
            loads: BTreeMap::new(),
            loads_known: false,
            loads_at: None,
            scaled_at: BTreeMap::new(),
        }
    }

    /// One event in, the orders it causes out. Deterministic: same events + same times =>
    /// same orders.
    pub(crate) fn step(&mut self, event: Event, now: Time) -> Vec<Order> {
        let mut orders = Vec::new();
        self.apply(event, now, &mut orders);
        self.read_loads(now, &mut orders);
        self.autoscale(now, &mut orders);
        reconcile::reconcile(self, now, &mut orders);
        orders
    }

    /// Takes `event` into account.
    fn apply(&mut self, event: Event, now: Time, orders: &mut Vec<Order>) {
        match event {
            Event::SpecPut(spec) => {
                let group = spec.group.clone();
                self.specs.insert(group.clone(), spec);
                if self.following.insert(group.clone()) {
                    orders.push(Order::Follow { group });
                }
            }
            Event::SpecRemoved(group) => {
                self.specs.remove(&group);
            }
            Event::MemberUp(info) => {
                self.live.insert(info.id.clone(), info);
            }
            Event::MemberDown(id) | Event::MemberLeft(id) => {
                self.live.remove(&id);
            }
            Event::GroupMembers { group, members } => {
                self.groups
                    .entry(group)
                    .or_insert_with(|| GroupState::with_members(members));
            }
            Event::GroupJoined { group, member } => {
                if let Some(state) = self.groups.get_mut(&group) {
                    state.joined(member);
                }
            }
            Event::GroupLeft { group, member } => {
                if let Some(state) = self.groups.get_mut(&group) {
                    state.left(&member);
                }
            }
            Event::Loads(loads) => {
                self.loads = loads;
                self.loads_known = true;
            }
            Event::Spawned { group, node, actor } => {
                if let Some(state) = self.groups.get_mut(&group) {
                    state.spawned(node, actor);
                }
            }
            Event::SpawnFailed {
                group,
                node,
                unable,
            } => {
                if let Some(state) = self.groups.get_mut(&group) {
                    state.spawn_failed(node, unable, now);
                }
            }
            Event::Tick => {}
        }
    }

    /// Asks for load reports when some spec needs them and the last ask is a second old.
    fn read_loads(&mut self, now: Time, orders: &mut Vec<Order>) {
        let wants_loads = self
            .specs
            .values()
            .any(|s| s.autoscale.is_some() || s.placement == PlacementPolicy::LeastLoaded);
        if wants_loads
            && self
                .loads_at
                .is_none_or(|at| now.saturating_sub(at) >= LOADS_EVERY)
        {
            orders.push(Order::ReadLoads);
            self.loads_at = Some(now);
        }
    }

    /// Moves the replica count of autoscaled specs towards their load.
    fn autoscale(&mut self, now: Time, orders: &mut Vec<Order>) {
        if !self.loads_known {
            return;
        }
        let changes = autoscale::changes(
            &self.specs,
            &self.groups,
            &self.live,
            &self.loads,
            &self.scaled_at,
            now,
        );
        for (group, replicas) in changes {
            if let Some(spec) = self.specs.get_mut(&group) {
                tracing::info!(%group, from = spec.replicas, to = replicas, "autoscaling");
                spec.replicas = replicas;
                self.scaled_at.insert(group, now);
                orders.push(Order::PutSpec(spec.clone()));
            }
        }
    }
}
