//! The properties, checked as the simulation runs, and its counters.
//!
//! 1. **Convergence** ([`World::check_converged`], once the cluster has been quiet): every
//!    group with a spec has exactly `replicas` live replicas (1 at most for a singleton),
//!    each registered as a member, and every member is a live replica: no duplicate, no
//!    orphan replica, no member left behind by a replica that is gone.
//! 2. **One singleton** ([`World::check_singletons`], after every event): never two live
//!    instances of a singleton group at once, counting a replica from the moment its node
//!    creates it (before it joins its group) until it stops. A replica on a frozen node is
//!    not counted while the node is frozen (it cannot act: the sim has no actor work that
//!    could run then); from the node's resumption on it is, except during the virtual
//!    instant of the resumption itself, when the events that waited run one after the
//!    other: the property is checked again, the resumed nodes included, as the clock leaves
//!    that instant. So a resumed node may not keep a singleton for any virtual time while
//!    another instance lives; whether it could act on it within that instant is not
//!    observable here (there are no asks to replicas).
//! 3. **Fencing** ([`World::record_fence`], at every fence check): an order is applied only
//!    if its fence is the token of the leader etcd has at the moment of the check, and that
//!    token is one its issuer won; the orders of a leader that was deposed are refused.
//! 4. **No work under a lost lease** ([`World::check_order_start`], when a spawn order
//!    takes effect: its replica starts; retires are not covered): the lease epoch of the
//!    link the order came by is alive at etcd. The one exception the fence allows by design
//!    is serving unconfirmed while the store cannot be reached; it is excused only if the
//!    node was seen cut from etcd during the confirmation that timed out (counted in
//!    [`Stats::unconfirmed_lost_starts`]), not when the timeout merely ran late, after a
//!    freeze.
//! 5. **No stale spawn after a freeze** (same place): a spawn order sent before a freeze of its
//!    node that outlived the node's lease, taking effect after the node resumed, carries
//!    the token of the leader etcd has at that moment.

use std::collections::BTreeSet;

use crate::id::{ActorId, NodeId};

use super::world::{node_id, slot, Inc, World};

/// What happened in a run.
#[derive(Debug, Default, Clone)]
pub(crate) struct Stats {
    pub(crate) leaderships: u64,
    pub(crate) spawn_orders: u64,
    pub(crate) retire_orders: u64,
    /// Orders that passed their fence check.
    pub(crate) applied: u64,
    /// Orders refused because their fence was not the current leader's.
    pub(crate) refused_fenced: u64,
    /// Orders refused because the node could not check the fence (cut from etcd).
    pub(crate) refused_unreachable: u64,
    /// Orders applied although their issuer had been deposed between the fence check and
    /// the node acting on it (the check and the action are two etcd requests).
    pub(crate) applied_after_deposition: u64,
    /// Singletons stopped by their host's guard.
    pub(crate) guard_stops: u64,
    pub(crate) faults: u64,
    pub(crate) freezes: u64,
    /// Freezes at whose end etcd had expired the node's lease.
    pub(crate) freezes_outlived: u64,
    /// Orders read while their node's lease was in doubt, held until etcd was asked.
    pub(crate) orders_held: u64,
    /// Orders refused when read: their link's lease was lost.
    pub(crate) orders_refused_by_lease: u64,
    /// Orders that passed their etcd steps but were not started: lease lost or in doubt.
    pub(crate) starts_refused_by_lease: u64,
    /// Orders started under a lease etcd had expired, while serving unconfirmed during a
    /// cut from etcd (allowed by the fence).
    pub(crate) unconfirmed_lost_starts: u64,
    /// Orders sent before a freeze that outlived the lease and started after it.
    pub(crate) stale_starts_after_freeze: u64,
}

impl World {
    /// Numbers an order of `inc`'s controller carrying `fence`.
    pub(crate) fn issue(&mut self, inc: Inc, fence: u64) -> u64 {
        let order = self.next_order;
        self.next_order += 1;
        self.issued.insert(order, (inc, fence));
        self.issued_at.insert(order, self.now);
        order
    }

    /// The fence check of `order` at node `inc` found `current` as etcd's leader token.
    pub(crate) fn record_fence(
        &mut self,
        inc: Inc,
        order: u64,
        fence: u64,
        current: Option<u64>,
        holds: bool,
    ) {
        let Some(&(issuer, issued)) = self.issued.get(&order) else {
            return self.violate(format!("order #{order} was never issued"));
        };
        if issued != fence {
            return self.violate(format!("order #{order} changed its fence on the way"));
        }
        if self.leaders.get(&fence) != Some(&issuer) {
            return self.violate(format!(
                "order #{order} carries token {fence}, which its issuer (inc {issuer}) never won"
            ));
        }
        self.fenced.insert(order, holds);
        if holds {
            self.stats.applied += 1;
            if current != Some(fence) {
                return self.violate(format!(
                    "order #{order} applied at inc {inc} with fence {fence} while the leader's token is {current:?}"
                ));
            }
            if self.etcd.leader().map(|(_, t)| t) != Some(fence) {
                self.stats.applied_after_deposition += 1;
            }
        } else {
            self.stats.refused_fenced += 1;
            let slot = slot(inc);
            self.trace.note(self.now, || {
                format!("n{slot} refuses order #{order}: fence {fence}, leader token {current:?}")
            });
        }
    }

    /// Property 2: at most one live instance of each singleton group. Runs after every
    /// event, so it looks closer only when there are two singleton replicas at all. Frozen
    /// nodes do not count; nodes resumed at this instant count only at its `end`.
    pub(crate) fn check_singletons(&mut self, end: bool) {
        let singletons: usize = self.nodes.iter().flatten().map(|n| n.singletons).sum();
        if singletons < 2 {
            return;
        }
        let counted =
            |n: &&super::node::Node| !self.is_frozen(n.inc) && (end || !self.resumed_now(n.inc));
        for (slot, node) in self.nodes.iter().enumerate() {
            let Some(node) = node.as_ref().filter(counted) else {
                continue;
            };
            for (actor, replica) in node.actors.iter().filter(|(_, r)| r.singleton) {
                let twin = self.nodes[slot..]
                    .iter()
                    .enumerate()
                    .find_map(|(i, other)| {
                        let other = other.as_ref().filter(counted)?;
                        other
                            .actors
                            .iter()
                            .find(|(a, r)| {
                                r.singleton && r.group == replica.group && (i > 0 || *a > actor)
                            })
                            .map(|(a, _)| (slot + i, *a))
                    });
                if let Some(twin) = twin {
                    let group = replica.group.clone();
                    return self.violate(format!(
                        "two live instances of singleton {group}: {:?} and {twin:?}",
                        (slot, *actor)
                    ));
                }
            }
        }
    }

    /// Properties 4 and 5: order `order` of `inc`, read from a link of lease `epoch`,
    /// takes effect now.
    pub(crate) fn check_order_start(&mut self, inc: Inc, order: u64, epoch: u64) {
        let slot = slot(inc);
        if !self.etcd.lease_alive(epoch) {
            let excused = self
                .node(inc)
                .is_some_and(|n| n.fence.unconfirmed && n.fence.cut_when_unconfirmed);
            if !excused {
                return self.violate(format!(
                    "n{slot} (inc {inc}) starts order #{order} read under lease {epoch}, which etcd expired"
                ));
            }
            self.stats.unconfirmed_lost_starts += 1;
        }
        let sent = self.issued_at.get(&order).copied();
        let stale = self.thawed.get(&inc).is_some_and(|thaws| {
            thaws
                .iter()
                .any(|t| t.outlived && sent.is_some_and(|s| s < t.since) && self.now >= t.until)
        });
        if !stale {
            return;
        }
        self.stats.stale_starts_after_freeze += 1;
        let fence = self.issued.get(&order).map(|(_, f)| *f);
        let current = self.etcd.leader().map(|(_, t)| t);
        if fence != current {
            self.violate(format!(
                "n{slot} (inc {inc}) resumed from a freeze that outlived its lease and starts order #{order}, sent before the freeze with token {fence:?}; the leader's token is {current:?}"
            ));
        }
    }

    /// Property 1: every group with a spec is at its spec, its members and its live
    /// replicas are the same, and nothing is counted twice.
    pub(crate) fn check_converged(&mut self) {
        let mut problems = Vec::new();
        for spec in self.etcd.specs() {
            let want = if spec.singleton {
                spec.replicas.min(1)
            } else {
                spec.replicas
            } as usize;
            let members: Vec<(NodeId, ActorId)> = self
                .etcd
                .members(&spec.group)
                .into_iter()
                .map(|m| (m.node, m.actor))
                .collect();
            let unique: BTreeSet<_> = members.iter().cloned().collect();
            let mut live = BTreeSet::new();
            for (slot, node) in self.nodes.iter().enumerate() {
                let Some(node) = node else { continue };
                for (actor, replica) in &node.actors {
                    if replica.group == spec.group {
                        live.insert((node_id(slot), *actor));
                    }
                }
            }
            let ghosts: Vec<_> = unique.difference(&live).collect();
            let orphans: Vec<_> = live.difference(&unique).collect();
            if unique.len() != members.len()
                || !ghosts.is_empty()
                || !orphans.is_empty()
                || live.len() != want
            {
                problems.push(format!(
                    "group {} wants {want}: {} live replicas {live:?}, members without a live replica {ghosts:?}, live replicas not members {orphans:?}",
                    spec.group,
                    live.len(),
                ));
            }
        }
        if !problems.is_empty() {
            let leader = self
                .nodes
                .iter()
                .flatten()
                .find_map(|n| {
                    n.leading
                        .as_ref()
                        .map(|l| format!("{}: {:?}", n.info.id, l.ctl))
                })
                .unwrap_or_else(|| "none".to_owned());
            self.violate(format!(
                "not converged: {}\nthe leader's controller: {leader}",
                problems.join("; ")
            ));
        }
    }
}
