//! How a node carries out the controller's orders: the model of `node::spawn_replica`,
//! `retire` and `check_fence`, today's way or with
//! [`Fixes::fenced_join`](super::world::Fixes::fenced_join).
//!
//! Today's spawn: read the leader (the fence check; refused when it is not the order's
//! token, or when etcd cannot be reached), start the replica, put its member key (a second
//! request; on failure the replica stops). With the fix: put the member key in one
//! transaction with the fence check, then start the replica, provided the lease the key was
//! written under is still the node's (a slow answer may come after the lease was lost and
//! the node registered again under a new one: the key is gone, the replica must not start).
//!
//! A retire reads the leader, then takes the replica out of its group and stops it; the
//! replica is looked up by actor id alone, as the real node does.

use crate::id::ActorId;

use super::node::{Purpose, Replica};
use super::server::{Op, Reply};
use super::world::{node_id, slot, Inc, Msg, World};

impl World {
    /// A message from another node (or from itself), on connection `conn`: an order goes
    /// through the [fence](super::fence) first.
    pub(crate) fn on_message(&mut self, inc: Inc, from: Inc, conn: u64, msg: Msg) {
        match msg {
            Msg::SpawnReply { token, ask, result } => self.spawn_answered(inc, token, ask, result),
            order => self.read_order(inc, from, conn, order),
        }
    }

    /// An order read from a link of lease `epoch` was admitted by the fence.
    pub(crate) fn order_admitted(&mut self, inc: Inc, from: Inc, epoch: u64, msg: Msg) {
        match msg {
            Msg::Spawn {
                order,
                ask,
                group,
                singleton,
                fence,
            } => {
                if !self.cfg.fixes.fenced_join {
                    let purpose = Purpose::FenceSpawn {
                        from,
                        order,
                        ask,
                        group,
                        singleton,
                        fence,
                        epoch,
                    };
                    return self.request(inc, Op::ReadLeader, purpose);
                }
                let Some(node) = self.node_mut(inc) else {
                    return;
                };
                // Registering again: the lease the session still has is gone at etcd.
                let lease = node.lease.unwrap_or(0);
                let actor = node.reserve_actor();
                let member = node.member(actor);
                let op = Op::FencedJoin {
                    order,
                    fence,
                    lease,
                    group: group.clone(),
                    member,
                };
                let purpose = Purpose::FencedJoin {
                    from,
                    order,
                    epoch,
                    ask,
                    fence,
                    lease,
                    group,
                    singleton,
                    actor,
                };
                self.request(inc, op, purpose);
            }
            Msg::Retire {
                order,
                group,
                actor,
                fence,
            } => {
                let purpose = Purpose::FenceRetire {
                    order,
                    group,
                    actor,
                    fence,
                    epoch,
                };
                self.request(inc, Op::ReadLeader, purpose);
            }
            Msg::SpawnReply { .. } => {}
        }
    }

    /// etcd answered a request made for an order.
    pub(crate) fn order_answered(&mut self, inc: Inc, purpose: Purpose, reply: Reply) {
        match (purpose, reply) {
            (
                Purpose::FenceSpawn {
                    from,
                    order,
                    ask,
                    group,
                    singleton,
                    fence,
                    epoch,
                },
                Reply::Leader(leader),
            ) => {
                let current = leader.map(|(_, t)| t);
                if !self.fence_holds(inc, order, fence, current)
                    || !self.may_start_order(inc, order, epoch)
                {
                    return self.spawn_reply(inc, from, fence, ask, Err(false));
                }
                let Some(node) = self.node_mut(inc) else {
                    return;
                };
                let actor = node.reserve_actor();
                let member = node.member(actor);
                node.add_replica(
                    actor,
                    Replica {
                        group: group.clone(),
                        member: false,
                        singleton,
                    },
                );
                let Some(lease) = node.lease else {
                    self.stop_actor(inc, actor);
                    return self.spawn_reply(inc, from, fence, ask, Err(false));
                };
                let op = Op::PutMember {
                    lease,
                    group,
                    member,
                };
                let purpose = Purpose::JoinSpawn {
                    from,
                    ask,
                    token: fence,
                    actor,
                };
                self.request(inc, op, purpose);
            }
            (
                Purpose::JoinSpawn {
                    from,
                    ask,
                    token,
                    actor,
                },
                Reply::Done(joined),
            ) => {
                let Some(node) = self.node_mut(inc) else {
                    return;
                };
                match node.actors.get_mut(&actor) {
                    Some(replica) if joined => {
                        replica.member = true;
                        let singleton = replica.singleton;
                        self.started(inc, actor, singleton);
                        self.spawn_reply(inc, from, token, ask, Ok(actor));
                    }
                    _ => {
                        self.stop_actor(inc, actor);
                        self.spawn_reply(inc, from, token, ask, Err(false));
                    }
                }
            }
            (
                Purpose::FencedJoin {
                    from,
                    order,
                    epoch,
                    ask,
                    fence,
                    lease,
                    group,
                    singleton,
                    actor,
                },
                Reply::Done(joined),
            ) => {
                let Some(node) = self.node_mut(inc) else {
                    return;
                };
                // A key written under a lease the node has lost since went with that lease.
                if !joined || node.lease != Some(lease) {
                    return self.spawn_reply(inc, from, fence, ask, Err(false));
                }
                let purpose = Purpose::FencedJoin {
                    from,
                    order,
                    epoch,
                    ask,
                    fence,
                    lease,
                    group: group.clone(),
                    singleton,
                    actor,
                };
                if !self.may_start_join(inc, purpose) {
                    return;
                }
                let Some(node) = self.node_mut(inc) else {
                    return;
                };
                node.add_replica(
                    actor,
                    Replica {
                        group,
                        member: true,
                        singleton,
                    },
                );
                self.started(inc, actor, singleton);
                self.spawn_reply(inc, from, fence, ask, Ok(actor));
            }
            (
                Purpose::FenceRetire {
                    order,
                    group,
                    actor,
                    fence,
                    epoch,
                },
                Reply::Leader(leader),
            ) => {
                let current = leader.map(|(_, t)| t);
                if self.fence_holds(inc, order, fence, current)
                    && self.may_retire(inc, order, epoch)
                {
                    self.retire(inc, &group, actor);
                }
            }
            (purpose, reply) => {
                debug_assert!(false, "unexpected answer {reply:?} to {purpose:?}")
            }
        }
    }

    /// A request made for an order got no answer in time: the order fails.
    pub(crate) fn order_timed_out(&mut self, inc: Inc, purpose: Purpose) {
        match purpose {
            Purpose::FenceSpawn {
                from, ask, fence, ..
            } => {
                self.stats.refused_unreachable += 1;
                self.spawn_reply(inc, from, fence, ask, Err(false));
            }
            Purpose::JoinSpawn {
                from,
                ask,
                token,
                actor,
            } => {
                // The key may have been written all the same.
                let group = self
                    .node(inc)
                    .and_then(|n| n.actors.get(&actor))
                    .map(|r| r.group.clone());
                self.stop_actor(inc, actor);
                if let (Some(group), true) = (group, self.cfg.fixes.leave_until_done) {
                    self.leave_group(inc, group, actor);
                }
                self.spawn_reply(inc, from, token, ask, Err(false));
            }
            Purpose::FencedJoin {
                from,
                ask,
                fence,
                group,
                actor,
                ..
            } => {
                self.stats.refused_unreachable += 1;
                // The key may have been written all the same: take it back.
                self.leave_group(inc, group, actor);
                self.spawn_reply(inc, from, fence, ask, Err(false));
            }
            Purpose::FenceRetire { .. } => self.stats.refused_unreachable += 1,
            _ => {}
        }
    }

    /// A replica just started and registered.
    fn started(&mut self, inc: Inc, actor: ActorId, singleton: bool) {
        let slot = slot(inc);
        self.trace.note(self.now, || {
            format!("n{slot} started {actor} (singleton: {singleton})")
        });
        if singleton {
            self.guard(inc, actor);
        }
    }

    /// The fence check of an order (`check_fence`): it holds only if the order carries the
    /// token of the leader etcd has now. Records the order as applied or refused.
    fn fence_holds(&mut self, inc: Inc, order: u64, fence: u64, current: Option<u64>) -> bool {
        let holds = current == Some(fence);
        self.record_fence(inc, order, fence, current, holds);
        holds
    }

    /// Retires replica `actor` of `group` (`retire`): it leaves the group, then stops.
    fn retire(&mut self, inc: Inc, group: &str, actor: ActorId) {
        let Some(node) = self.node_mut(inc) else {
            return;
        };
        let Some(replica) = node.actors.get_mut(&actor) else {
            return;
        };
        if replica.group == group {
            replica.member = false;
        }
        self.leave_group(inc, group.to_owned(), actor);
        let slot = slot(inc);
        self.trace
            .note(self.now, || format!("n{slot} retires {actor} of {group}"));
        self.stop_actor(inc, actor);
    }

    /// Answers a spawn order of `to` (on the link it came by: only to that incarnation).
    pub(crate) fn spawn_reply(
        &mut self,
        inc: Inc,
        to: Inc,
        token: u64,
        ask: u64,
        result: Result<ActorId, bool>,
    ) {
        if self.alive(to) {
            let leader = node_id(slot(to));
            self.send(inc, &leader, Msg::SpawnReply { token, ask, result });
        }
    }
}
