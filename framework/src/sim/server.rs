//! etcd's side of the nodes' requests: what each request does to the store, and its answer
//! (or, for a request that opens a watch, the watch's first item).

use std::collections::{BTreeMap, VecDeque};

use crate::core::model::{GroupMember, GroupSpec, LoadReport, NodeInfo};
use crate::id::{ActorId, NodeId};

use super::etcd::{Key, LeaseId, Prefix, Value};
use super::world::{member_key, node_id, slot, Ev, Inc, Item, Stream, World};

/// A request to etcd.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// Grant a lease, create the node key (if absent) and put back the node's members and
    /// load under it (a first join, or a registration again after a lost lease).
    Register {
        info: NodeInfo,
        members: Vec<(String, GroupMember)>,
        load: Option<LoadReport>,
    },
    /// Renew a lease.
    KeepAlive(LeaseId),
    /// Watch the nodes (the stream opens with their entries).
    WatchNodes,
    /// Create the leader key under the lease if nobody holds it; either way, watch it.
    Campaign(LeaseId),
    /// Read the leader key (a fence check).
    ReadLeader,
    /// Put a member key under the lease.
    PutMember {
        lease: LeaseId,
        group: String,
        member: GroupMember,
    },
    /// Put the member only if `fence` is the current leader's token (one transaction: the
    /// fenced registration of [`Fixes::fenced_join`](super::world::Fixes)).
    FencedJoin {
        /// The order's number (for the checks).
        order: u64,
        fence: u64,
        lease: LeaseId,
        group: String,
        member: GroupMember,
    },
    /// Delete a member key of the sending node.
    DeleteMember { group: String, actor: ActorId },
    /// Put the node's load report under the lease.
    PutLoad(LeaseId, LoadReport),
    /// Mark the node leaving, then revoke its lease (a graceful shutdown).
    Leave(LeaseId, NodeInfo),
    /// Watch the specs (the stream opens with them).
    WatchSpecs,
    /// Watch a group's members (the stream opens with them).
    WatchGroup(String),
    /// Read every load report.
    ReadLoads,
    /// Write a spec (not under any lease).
    PutSpec(GroupSpec),
}

/// etcd's answer to a request.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    /// The new lease, or `None` when the node key is taken.
    Registered(Option<LeaseId>),
    /// Whether the lease was renewed.
    KeptAlive(bool),
    /// The values under a newly watched prefix (the watch is the stream that carries this).
    Snapshot(Vec<Value>),
    /// The campaign's outcome: `Some(token)` when won; the watch of the leader key comes with it.
    Campaign(Option<u64>),
    /// The campaign could not be run (the lease is gone).
    CampaignFailed,
    /// The current leader and its token.
    Leader(Option<(NodeId, u64)>),
    /// Whether a write was applied.
    Done(bool),
    /// Every load report.
    Loads(BTreeMap<NodeId, LoadReport>),
}

impl World {
    /// etcd serves a request of `from`.
    pub(crate) fn serve(&mut self, from: Inc, req: u64, op: Op, answer: bool) {
        let now = self.now;
        let id = node_id(slot(from));
        let reply = match op {
            Op::Register {
                info,
                members,
                load,
            } => {
                let lease = self.etcd.grant(now);
                let node = Value::Node {
                    info,
                    leaving: false,
                };
                if self
                    .etcd
                    .create(Key::Node(id.clone()), node, Some(lease))
                    .is_none()
                {
                    self.etcd.revoke(lease);
                    Reply::Registered(None)
                } else {
                    for (group, m) in members {
                        let key = member_key(&group, &m.node, m.actor);
                        self.etcd.put(key, Value::Member(m), Some(lease));
                    }
                    if let Some(load) = load {
                        self.etcd.put(Key::Load(id), Value::Load(load), Some(lease));
                    }
                    Reply::Registered(Some(lease))
                }
            }
            Op::KeepAlive(lease) => Reply::KeptAlive(self.etcd.keep_alive(lease, now)),
            Op::WatchNodes => return self.open(from, req, Prefix::Nodes, None),
            Op::Campaign(lease) => {
                if !self.etcd.lease_alive(lease) {
                    Reply::CampaignFailed
                } else {
                    let mut won = self
                        .etcd
                        .create(Key::Leader, Value::Leader(id), Some(lease));
                    if self.cfg.fixes.reclaim_leadership {
                        won = won.or_else(|| self.etcd.leader_bound_to(lease));
                    }
                    return self.open(from, req, Prefix::Leader, Some(Reply::Campaign(won)));
                }
            }
            Op::ReadLeader => Reply::Leader(self.etcd.leader()),
            Op::PutMember {
                lease,
                group,
                member,
            } => {
                let key = member_key(&group, &member.node, member.actor);
                let value = Value::Member(member);
                Reply::Done(self.etcd.put(key, value, Some(lease)).is_some())
            }
            Op::FencedJoin {
                order,
                fence,
                lease,
                group,
                member,
            } => {
                let current = self.etcd.leader().map(|(_, t)| t);
                let holds = current == Some(fence);
                self.record_fence(from, order, fence, current, holds);
                let key = member_key(&group, &member.node, member.actor);
                let value = Value::Member(member);
                Reply::Done(holds && self.etcd.put(key, value, Some(lease)).is_some())
            }
            Op::DeleteMember { group, actor } => {
                Reply::Done(self.etcd.delete(&member_key(&group, &id, actor)))
            }
            Op::PutLoad(lease, load) => Reply::Done(
                self.etcd
                    .put(Key::Load(id), Value::Load(load), Some(lease))
                    .is_some(),
            ),
            Op::Leave(lease, info) => {
                let leaving = Value::Node {
                    info,
                    leaving: true,
                };
                let ok = self.etcd.put(Key::Node(id), leaving, Some(lease)).is_some();
                self.etcd.revoke(lease);
                Reply::Done(ok)
            }
            Op::WatchSpecs => return self.open(from, req, Prefix::Specs, None),
            Op::WatchGroup(group) => return self.open(from, req, Prefix::Group(group), None),
            Op::ReadLoads => Reply::Loads(self.etcd.loads()),
            Op::PutSpec(spec) => {
                let key = Key::Spec(spec.group.clone());
                Reply::Done(self.etcd.put(key, Value::Spec(spec), None).is_some())
            }
        };
        if !answer {
            return;
        }
        let at = now + self.delay();
        self.schedule(
            at,
            Ev::FromEtcd {
                to: from,
                req,
                reply,
            },
        );
    }

    /// Opens a watch of `prefix` for `from`: the stream's first item answers the request,
    /// with `reply` or else the snapshot of the prefix.
    fn open(&mut self, from: Inc, req: u64, prefix: Prefix, reply: Option<Reply>) {
        let reply = reply.unwrap_or_else(|| Reply::Snapshot(self.etcd.range(&prefix)));
        let watch = self.etcd.watch(prefix);
        self.streams.insert(
            watch,
            Stream {
                owner: from,
                req,
                items: VecDeque::from([Item::Opened(reply)]),
                pumping: false,
            },
        );
        self.kick(watch);
    }
}
