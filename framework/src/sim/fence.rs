//! The node's fence ([`core::fence`](crate::core::fence), as `runtime/fence.rs` uses it): a
//! node that the cluster gave up on starts nothing it was asked under the lease it lost.
//!
//! Every link between two nodes is stamped, when the receiver accepts it (its first message
//! on a new connection), with the receiver's lease epoch (the lease id; a new one after a
//! lost lease). An order read from a link is admitted ([`admit`]): started; held while the
//! lease is in doubt (past the node's `alive_until`) until etcd has been asked (a keep-alive
//! with the request timeout: alive, then started; lost, then refused; no answer, then
//! started *unconfirmed* until etcd answers); refused if the link's lease is lost, and the
//! link closed (the sender opens a new one, stamped with the new lease, for its next
//! message; what was still on its way on the old one is lost with it). When the order is
//! about to take effect (the replica starts), after its etcd requests, [`may_start`]
//! decides again with the link's epoch: the node may have been frozen in between. A retire
//! about to stop its replica is refused only if that lease is known lost (see
//! `World::may_retire`).
//!
//! The orders are the only requests between nodes the simulation has (an actor's asks are
//! not modelled), so they are what the fence is checked on. A leader's orders to its own
//! node come by no link (nothing to admit); they are stamped with the lease they were read
//! under and checked with [`may_start`] like the others. (The real runtime stamps remote
//! asks only; whether a local spawn order is fenced there is not what this models.)

use crate::core::fence::{admit, may_start, Admit, Lease};
use crate::core::Time;

use super::etcd::LeaseId;
use super::node::Purpose;
use super::server::Op;
use super::world::{slot, Inc, Msg, World};

impl World {
    /// What `inc` knows of its lease, as the fence reads it.
    fn lease_known(&self, inc: Inc) -> Option<Lease> {
        let node = self.node(inc)?;
        Some(Lease {
            epoch: node.fence.epoch,
            lost: node.fence.lost || node.fence.epoch == 0,
            alive_until: node.alive_until.unwrap_or(Time::ZERO),
            unconfirmed: node.fence.unconfirmed,
        })
    }

    /// The epoch of the link from `from` that a message on connection `conn` came by: a
    /// new connection is accepted under the current lease; `None` for a message of a
    /// connection the node closed.
    fn link_epoch(&mut self, inc: Inc, from: Inc, conn: u64) -> Option<u64> {
        let node = self.node_mut(inc)?;
        let epoch = node.fence.epoch;
        match node.fence.links.get(&from).copied() {
            Some((c, e, open)) if c == conn => open.then_some(e),
            Some((c, _, _)) if c > conn => None,
            _ => {
                node.fence.links.insert(from, (conn, epoch, true));
                Some(epoch)
            }
        }
    }

    /// Closes the link from `from` (its sender opens a new one for its next message).
    fn close_link(&mut self, inc: Inc, from: Inc) {
        let Some(node) = self.node_mut(inc) else {
            return;
        };
        if let Some(link) = node.fence.links.get_mut(&from) {
            link.2 = false;
            let next = link.0 + 1;
            self.conns.insert((from, inc), next);
        }
    }

    /// An order arrives from `from` on connection `conn`. A leader's order to its own node
    /// comes by no link: it is not admitted, only stamped with the lease it was read under
    /// (and [`may_start`] applies to it when it is about to take effect).
    pub(crate) fn read_order(&mut self, inc: Inc, from: Inc, conn: u64, msg: Msg) {
        if from == inc {
            let epoch = self.node(inc).map_or(0, |n| n.fence.epoch);
            return self.order_admitted(inc, from, epoch, msg);
        }
        if let Some(epoch) = self.link_epoch(inc, from, conn) {
            self.admit_order(inc, from, epoch, msg);
        }
    }

    /// Starts, holds or refuses an order read from a link of lease `epoch`.
    fn admit_order(&mut self, inc: Inc, from: Inc, epoch: u64, msg: Msg) {
        let Some(lease) = self.lease_known(inc) else {
            return;
        };
        let admitted = if self.cfg.fence {
            admit(&lease, epoch, self.now)
        } else {
            Admit::Start
        };
        match admitted {
            Admit::Start => self.order_admitted(inc, from, epoch, msg),
            Admit::Hold => {
                self.stats.orders_held += 1;
                if let Some(node) = self.node_mut(inc) {
                    node.fence.held.push((from, epoch, msg));
                }
                self.confirm_lease(inc);
            }
            Admit::Refuse => {
                self.stats.orders_refused_by_lease += 1;
                let slot = slot(inc);
                self.trace.note(self.now, || {
                    format!("n{slot} refuses an order read under lost lease {epoch}")
                });
                self.close_link(inc, from);
                if let Msg::Spawn { ask, fence, .. } = msg {
                    self.spawn_reply(inc, from, fence, ask, Err(false));
                }
            }
        }
    }

    /// Asks etcd whether the lease is alive (unless asking already).
    fn confirm_lease(&mut self, inc: Inc) {
        let Some(node) = self.node_mut(inc) else {
            return;
        };
        if node.fence.confirming {
            return;
        }
        match node.lease.filter(|_| !node.registering) {
            Some(lease) => {
                node.fence.confirming = true;
                self.request(inc, Op::KeepAlive(lease), Purpose::ConfirmLease(lease));
            }
            None => {
                node.fence.lost = true;
                self.release_held(inc);
            }
        }
    }

    /// etcd answered a confirmation of `lease` sent at `sent`.
    pub(crate) fn lease_confirmed(&mut self, inc: Inc, lease: LeaseId, sent: Time, alive: bool) {
        let ttl = self.cfg.ttl;
        let Some(node) = self.node_mut(inc) else {
            return;
        };
        node.fence.confirming = false;
        if node.lease == Some(lease) {
            if alive {
                node.alive_until = node.alive_until.max(Some(sent + ttl));
                node.fence.unconfirmed = false;
            } else {
                self.lease_lost(inc, lease);
            }
        }
        self.release_held(inc);
    }

    /// A confirmation of `lease` sent at `sent` got no answer in time: etcd cannot be
    /// reached, the node serves unconfirmed.
    pub(crate) fn confirmation_timed_out(&mut self, inc: Inc, lease: LeaseId, sent: Time) {
        let cut = self.cut_seen.get(&slot(inc)).is_some_and(|t| *t >= sent);
        let Some(node) = self.node_mut(inc) else {
            return;
        };
        node.fence.confirming = false;
        if node.lease == Some(lease) {
            node.fence.unconfirmed = true;
            node.fence.cut_when_unconfirmed = cut;
        }
        self.release_held(inc);
    }

    /// etcd said `lease` is gone: the node knows it lost it, closes every link (all of that
    /// lease or older) and registers again.
    pub(crate) fn lease_lost(&mut self, inc: Inc, lease: LeaseId) {
        let Some(node) = self.node_mut(inc) else {
            return;
        };
        if node.lease != Some(lease) || node.registering {
            return;
        }
        node.fence.lost = true;
        let peers: Vec<Inc> = node.fence.links.keys().copied().collect();
        for peer in peers {
            self.close_link(inc, peer);
        }
        let slot = slot(inc);
        self.trace.note(self.now, || {
            format!("n{slot} lost lease {lease}; registering again")
        });
        self.register(inc);
        self.release_held(inc);
    }

    /// Goes through the held orders again.
    fn release_held(&mut self, inc: Inc) {
        let Some(node) = self.node_mut(inc) else {
            return;
        };
        let starts = std::mem::take(&mut node.fence.held_starts);
        for (from, epoch, msg) in std::mem::take(&mut node.fence.held) {
            self.admit_order(inc, from, epoch, msg);
        }
        for join in starts {
            self.order_answered(inc, join, super::server::Reply::Done(true));
        }
    }

    /// Whether the replica of a spawn whose member key etcd just wrote (`join`, a
    /// [`Purpose::FencedJoin`]) may start now: [`admit`] with the link's epoch, so that a
    /// lease in doubt holds the start until etcd has been asked (refusing it would withdraw
    /// a key the controller may have seen: a member that never ran, which the controller
    /// counts and then loses). Refused: answered as failed. Held: started or refused when
    /// etcd answers.
    pub(crate) fn may_start_join(&mut self, inc: Inc, join: Purpose) -> bool {
        let Purpose::FencedJoin {
            from,
            order,
            epoch,
            ask,
            fence,
            ..
        } = join
        else {
            return false;
        };
        let Some(lease) = self.lease_known(inc) else {
            return false;
        };
        if !self.cfg.fence {
            self.check_order_start(inc, order, epoch);
            return true;
        }
        match admit(&lease, epoch, self.now) {
            Admit::Start => self.may_start_order(inc, order, epoch),
            Admit::Hold => {
                self.stats.orders_held += 1;
                if let Some(node) = self.node_mut(inc) {
                    node.fence.held_starts.push(join);
                }
                self.confirm_lease(inc);
                false
            }
            Admit::Refuse => {
                self.stats.starts_refused_by_lease += 1;
                let slot = slot(inc);
                self.trace.note(self.now, || {
                    format!("n{slot} does not start order #{order}: its lease {epoch} is lost")
                });
                self.spawn_reply(inc, from, fence, ask, Err(false));
                false
            }
        }
    }

    /// Whether a retire order of `inc` read under lease `epoch` may take effect now: not
    /// if the lease is known lost (or is not the node's any more); carried out while the
    /// lease is only in doubt, unlike [`may_start`], because a retire stops a replica, the
    /// direction the fence wants, and a retire refused without the controller knowing
    /// leaves a replica running that the controller counts as gone (with `may_start`, seed
    /// 436 ended with two instances of a singleton on one node: the controller replaced the
    /// one whose retire was refused). Not checked by properties 4 and 5, which cover spawns.
    pub(crate) fn may_retire(&mut self, inc: Inc, order: u64, epoch: u64) -> bool {
        let Some(lease) = self.lease_known(inc) else {
            return false;
        };
        if self.cfg.fence && (lease.lost || lease.epoch != epoch) {
            self.stats.starts_refused_by_lease += 1;
            let slot = slot(inc);
            self.trace.note(self.now, || {
                format!("n{slot} does not retire for order #{order}: its lease {epoch} is lost")
            });
            return false;
        }
        true
    }

    /// Whether an order of `inc` read under lease `epoch` may take effect now; the
    /// property checks if it does.
    pub(crate) fn may_start_order(&mut self, inc: Inc, order: u64, epoch: u64) -> bool {
        let Some(lease) = self.lease_known(inc) else {
            return false;
        };
        if self.cfg.fence && !may_start(&lease, epoch, self.now) {
            self.stats.starts_refused_by_lease += 1;
            let slot = slot(inc);
            self.trace.note(self.now, || {
                format!(
                    "n{slot} does not start order #{order}: its lease {epoch} is lost or in doubt"
                )
            });
            return false;
        }
        self.check_order_start(inc, order, epoch);
        true
    }
}
