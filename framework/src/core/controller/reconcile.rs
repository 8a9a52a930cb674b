//! Reconciliation: what the controller knows of each group, and the orders that close the
//! gap between a group and its spec.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::core::model::{GroupMember, GroupSpec, NodeInfo, PlacementPolicy};
use crate::core::placement::{self, Candidate, Constraints, Placement};
use crate::core::status::{self, Blocked, GroupStatus};
use crate::id::{ActorId, NodeId};

use super::{Controller, Order, Time, PENDING};

/// What the controller knows of one followed group.
#[derive(Debug, Default)]
pub(super) struct GroupState {
    /// The registered members.
    pub(super) members: BTreeMap<(NodeId, ActorId), GroupMember>,
    /// Replicas asked for and not seen yet: the node, the actor once known, when asked.
    pending: Vec<(NodeId, Option<ActorId>, Time)>,
    /// Replicas asked to retire and not gone yet, with when they were asked.
    retiring: BTreeMap<(NodeId, ActorId), Time>,
    /// Nodes that cannot run the spec's actor type (not registered as spawnable there), with
    /// when that was learnt.
    unable: BTreeMap<NodeId, Time>,
    /// Why the group cannot reach its spec, as last reported ([`Order::Report`]).
    blocked: Option<Blocked>,
}

impl GroupState {
    /// A group first seen with `members`.
    pub(super) fn with_members(members: Vec<GroupMember>) -> Self {
        let mut state = GroupState::default();
        for m in members {
            state.members.insert((m.node.clone(), m.actor), m);
        }
        state
    }

    /// `m` joined: it is a member, and no longer pending if it was asked for.
    pub(super) fn joined(&mut self, m: GroupMember) {
        self.pending
            .retain(|(n, a, _)| !(n == &m.node && *a == Some(m.actor)));
        self.members.insert((m.node.clone(), m.actor), m);
    }

    /// `m` left: neither a member nor retiring.
    pub(super) fn left(&mut self, m: &GroupMember) {
        let key = (m.node.clone(), m.actor);
        self.retiring.remove(&key);
        self.members.remove(&key);
    }

    /// `node` started `actor` as asked: the first pending ask of that node without an actor
    /// gets it, or goes if the member is already known.
    pub(super) fn spawned(&mut self, node: NodeId, actor: ActorId) {
        let unseen = self
            .pending
            .iter()
            .position(|(n, a, _)| n == &node && a.is_none());
        if self.members.contains_key(&(node, actor)) {
            if let Some(i) = unseen {
                self.pending.remove(i);
            }
        } else if let Some(i) = unseen {
            self.pending[i].1 = Some(actor);
        }
    }

    /// `node` could not start a replica: its first pending ask without an actor goes, and
    /// the node is left alone for a while if it cannot run the actor type at all.
    pub(super) fn spawn_failed(&mut self, node: NodeId, unable: bool, now: Time) {
        if let Some(i) = self
            .pending
            .iter()
            .position(|(n, a, _)| n == &node && a.is_none())
        {
            self.pending.remove(i);
        }
        if unable {
            self.unable.insert(node, now);
        }
    }
}

/// The constraints of `spec`'s placement.
fn constraints(spec: &GroupSpec) -> Constraints {
    Constraints {
        selector: spec.selector.clone(),
        anti_affinity: spec.anti_affinity.clone(),
        max_per_node: spec.max_per_node,
    }
}

/// The placement policy of `spec`; `None` for a custom policy not in `placements`.
fn policy(
    spec: &GroupSpec,
    placements: &BTreeMap<String, Arc<dyn Placement>>,
) -> Option<Arc<dyn Placement>> {
    Some(match &spec.placement {
        PlacementPolicy::RoundRobin => Arc::new(placement::RoundRobin::new()),
        PlacementPolicy::LeastLoaded => Arc::new(placement::LeastLoaded::new()),
        PlacementPolicy::Spread => Arc::new(placement::Spread::new()),
        PlacementPolicy::Custom(name) => placements.get(name)?.clone(),
    })
}

/// Compares desired with actual for every spec and gives the orders that close the gap.
pub(super) fn reconcile(ctl: &mut Controller, now: Time, orders: &mut Vec<Order>) {
    let live = &ctl.live;
    for (group, spec) in &ctl.specs {
        let Some(state) = ctl.groups.get_mut(group) else {
            continue;
        };
        // A spawn asked of a node that went down may still complete: the node can come
        // back (registered again after a lost lease) and carry the order out. For a
        // singleton that would be a second instance, so its pending spawns wait for their
        // answer (the shell always gives one) or for the pending window to pass.
        state.pending.retain(|(n, _, at)| {
            (spec.singleton || live.contains_key(n)) && now.saturating_sub(*at) < PENDING
        });
        state
            .retiring
            .retain(|_, at| now.saturating_sub(*at) < PENDING);
        state
            .unable
            .retain(|_, at| now.saturating_sub(*at) < PENDING);
        // Members on nodes that are not up do not count, but they are not forgotten either:
        // their keys go with their node's lease (and leave), or come back with the node when
        // it registers again, and the group's events and the membership's come on different
        // streams, so a member may well be seen before its node is. A singleton's members
        // count until they leave, up or not: a node seen down late may have registered again
        // already and run the singleton under its new lease, and the members of a node that
        // is really gone leave at the same moment as the node.
        let counted: Vec<&GroupMember> = state
            .members
            .iter()
            .filter(|((n, _), _)| spec.singleton || live.contains_key(n))
            .filter(|(k, _)| !state.retiring.contains_key(*k))
            .map(|(_, m)| m)
            .collect();
        // Only members on live nodes can be retired.
        let active: Vec<&GroupMember> = counted
            .iter()
            .copied()
            .filter(|m| live.contains_key(&m.node))
            .collect();
        let have = counted.len() as u32 + state.pending.len() as u32;
        let mut per_node: BTreeMap<&NodeId, u32> = BTreeMap::new();
        for m in &counted {
            *per_node.entry(&m.node).or_default() += 1;
        }
        for (n, _, _) in &state.pending {
            *per_node.entry(n).or_default() += 1;
        }
        let candidates: Vec<Candidate> = live
            .values()
            .filter(|info| {
                !state.unable.contains_key(&info.id)
                    && info.spawnable.iter().any(|t| t == &spec.actor_type)
            })
            .map(|info| Candidate {
                node: info.id.clone(),
                labels: info.labels.clone(),
                load: ctl.loads.get(&info.id).cloned(),
                replicas: per_node.get(&info.id).copied().unwrap_or(0),
            })
            .collect();
        let Some(policy) = policy(spec, &ctl.placements) else {
            tracing::warn!(%group, placement = ?spec.placement, "unknown placement policy on the leader; register it with NodeBuilder::placement");
            continue;
        };
        let constraints = constraints(spec);
        let replicas = if spec.singleton {
            spec.replicas.min(1)
        } else {
            spec.replicas
        };
        if have < replicas {
            let mut asked = Vec::new();
            for index in policy.place(&candidates, &constraints, replicas - have) {
                if let Some(c) = candidates.get(index) {
                    asked.push(c.node.clone());
                }
            }
            // Nothing could be placed and nothing is on its way: say why, once per change.
            let blocked = if asked.is_empty() && state.pending.is_empty() {
                let members: Vec<GroupMember> = state.members.values().cloned().collect();
                let nodes: Vec<NodeInfo> = live.values().cloned().collect();
                Some(status::assess(spec, &members, &nodes, true))
            } else {
                None
            };
            report(group, &mut state.blocked, blocked, orders);
            for target in asked {
                state.pending.push((target.clone(), None, now));
                orders.push(Order::Spawn {
                    node: target,
                    group: group.clone(),
                    actor_type: spec.actor_type.clone(),
                    args: spec.args.clone(),
                    singleton: spec.singleton,
                    fence: ctl.fence,
                });
            }
        } else {
            report(group, &mut state.blocked, None, orders);
        }
        if have >= replicas && state.pending.is_empty() && (active.len() as u32) > replicas {
            let excess = active.len() as u32 - replicas;
            let mut taken: Vec<(NodeId, ActorId)> = Vec::new();
            for index in policy.remove(&candidates, &constraints, excess) {
                let Some(at) = candidates.get(index).map(|c| &c.node) else {
                    continue;
                };
                let victim = active
                    .iter()
                    .filter(|m| &m.node == at && !taken.contains(&(m.node.clone(), m.actor)))
                    .max_by_key(|m| m.actor);
                if let Some(m) = victim {
                    taken.push((m.node.clone(), m.actor));
                }
            }
            for (at, actor) in taken {
                state.retiring.insert((at.clone(), actor), now);
                orders.push(Order::Retire {
                    node: at,
                    group: group.clone(),
                    actor,
                    fence: ctl.fence,
                });
            }
        }
    }
}

/// Gives an [`Order::Report`] when the reason `group` cannot reach its spec changed (a new
/// reason, or none any more); `status` is `None` when the group is not stuck.
fn report(
    group: &str,
    reported: &mut Option<Blocked>,
    status: Option<GroupStatus>,
    orders: &mut Vec<Order>,
) {
    let status = status.filter(|s| s.blocked.is_some());
    let blocked = status.as_ref().and_then(|s| s.blocked.clone());
    if blocked == *reported {
        return;
    }
    *reported = blocked;
    orders.push(Order::Report {
        group: group.to_owned(),
        status,
    });
}
