//! etcd as the entity shards use it: revisions, leases, the keys below, transactions, and
//! one watch stream per node over all of them.
//!
//! - `nodes/{id}`: a node's entry, bound to its lease; written only if absent or already
//!   bound to the same lease (a restarted node waits for its previous incarnation's lease to
//!   expire); `draining` once the node leaves.
//! - `leader`: the controller's key, created only if absent, bound to the leader's lease;
//!   its creation revision is the leader's token.
//! - `entities/{kind}/owners/{shard}`: a shard's ownership ([`ShardOwner`]), created only if
//!   absent (a transaction comparing its create revision with 0), bound to the owner's
//!   lease; its creation revision is the *token*. Deleted only by a transaction comparing
//!   its create revision with the token (delete if still ours), or with the lease.
//! - `entities/{kind}/assignment`: the controller's [`Assignment`], not bound to a lease,
//!   written only by the current leader (a transaction comparing the leader key's create
//!   revision with the writer's token) over the version it planned from.
//!
//! A lease expires a TTL after the last keep-alive etcd *received* (checked before every
//! event, so never early), with its keys, one revision each. Every change goes to every
//! open watch, in revision order; the world delivers them with delay.
//!
//! Not modelled: compaction, etcd failing or slow as a whole (a node cut from etcd is).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::core::shard::{Assignment, ShardOwner};
use crate::core::Time;
use crate::id::NodeId;

/// A lease's id; a node's lease epoch is its lease's id.
pub(crate) type LeaseId = u64;

/// A key (the entity type is fixed: one kind per run).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Key {
    /// A node's entry.
    Node(NodeId),
    /// The controller's leader key.
    Leader,
    /// A shard's ownership.
    Owner(u32),
    /// The shards' assignment.
    Assignment,
}

/// A key's value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// A node's entry: whether it is leaving.
    Node {
        /// Leaving: the controller no longer assigns it shards.
        draining: bool,
    },
    /// The leader's node id.
    Leader(NodeId),
    /// A shard's owner.
    Owner(ShardOwner),
    /// The assignment.
    Assignment(Assignment),
}

/// A change a watch sees, or (in a snapshot) a key as it is.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    /// The key.
    pub(crate) key: Key,
    /// Its new value; `None`: deleted.
    pub(crate) value: Option<Value>,
    /// The key's creation revision (the token of an ownership or a leadership).
    pub(crate) create_rev: u64,
    /// The revision of the change.
    pub(crate) rev: u64,
}

/// A request.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// Grant a lease.
    Grant,
    /// Renew a lease.
    KeepAlive(LeaseId),
    /// End a lease (a node that leaves).
    Revoke(LeaseId),
    /// Write a node's entry (see the [module docs](self)).
    Register {
        /// The node's lease.
        lease: LeaseId,
        /// The node.
        node: NodeId,
        /// Whether it is leaving.
        draining: bool,
    },
    /// Create the leader key if absent.
    Campaign {
        /// The candidate's lease.
        lease: LeaseId,
        /// The candidate.
        node: NodeId,
    },
    /// Write the assignment, as the leader of `token`.
    Assign {
        /// The writer's leadership.
        token: u64,
        /// The new assignment (its version: the one it was planned from, plus one).
        assignment: Assignment,
    },
    /// Create a shard's ownership if absent, bound to `lease`.
    Acquire {
        /// The owner's lease.
        lease: LeaseId,
        /// The ownership.
        owner: ShardOwner,
    },
    /// Delete a shard's ownership if its create revision is `token`.
    Release {
        /// The shard.
        shard: u32,
        /// The ownership's token.
        token: u64,
    },
    /// Open the node's watch: a snapshot, then every change after it.
    Watch,
}

/// An answer.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    /// The lease granted.
    Granted(LeaseId),
    /// Whether the lease is alive (renewed).
    Alive(bool),
    /// Whether the write or the revocation was done.
    Done(bool),
    /// The leader's token, if the candidate holds the leader key.
    Won(Option<u64>),
    /// The ownership's token, if created.
    Acquired(Option<u64>),
    /// Whether the ownership was deleted, and at which revision.
    Released {
        /// Deleted by this request.
        deleted: bool,
        /// The revision of the deletion (or the store's revision).
        rev: u64,
    },
    /// Every key as it is, at the store's revision.
    Snapshot(Vec<Change>),
}

/// One key's entry.
#[derive(Debug)]
struct Entry {
    value: Value,
    lease: Option<LeaseId>,
    create_rev: u64,
}

/// The store. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Etcd {
    ttl: Duration,
    revision: u64,
    next_lease: LeaseId,
    kv: BTreeMap<Key, Entry>,
    /// Live leases and when they expire.
    leases: BTreeMap<LeaseId, Time>,
    /// The same, ordered by expiry.
    expiry: BTreeSet<(Time, LeaseId)>,
    /// Changes not yet taken by the world for the watches.
    changes: Vec<Change>,
}

impl Etcd {
    /// An empty store whose leases live `ttl` after their last renewal.
    pub(crate) fn new(ttl: Duration) -> Self {
        Etcd {
            ttl,
            revision: 0,
            next_lease: 1,
            kv: BTreeMap::new(),
            leases: BTreeMap::new(),
            expiry: BTreeSet::new(),
            changes: Vec::new(),
        }
    }

    /// The changes since the last call, in revision order.
    pub(crate) fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    /// Whether there are changes to take.
    pub(crate) fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    /// Carries out `op` arriving at `now`.
    pub(crate) fn serve(&mut self, op: Op, now: Time) -> Reply {
        match op {
            Op::Grant => {
                let id = self.next_lease;
                self.next_lease += 1;
                self.leases.insert(id, now + self.ttl);
                self.expiry.insert((now + self.ttl, id));
                Reply::Granted(id)
            }
            Op::KeepAlive(lease) => Reply::Alive(self.keep_alive(lease, now)),
            Op::Revoke(lease) => {
                let alive = self.lease_alive(lease);
                self.revoke(lease);
                Reply::Done(alive)
            }
            Op::Register {
                lease,
                node,
                draining,
            } => {
                let key = Key::Node(node);
                let taken = self.kv.get(&key).is_some_and(|e| e.lease != Some(lease));
                Reply::Done(!taken && self.put(key, Value::Node { draining }, Some(lease)))
            }
            Op::Campaign { lease, node } => match self.kv.get(&Key::Leader) {
                Some(e) => Reply::Won((e.lease == Some(lease)).then_some(e.create_rev)),
                None => {
                    self.put(Key::Leader, Value::Leader(node), Some(lease));
                    Reply::Won(self.kv.get(&Key::Leader).map(|e| e.create_rev))
                }
            },
            Op::Assign { token, assignment } => {
                let leads = self
                    .kv
                    .get(&Key::Leader)
                    .is_some_and(|e| e.create_rev == token);
                let base = match self.kv.get(&Key::Assignment).map(|e| &e.value) {
                    Some(Value::Assignment(a)) => a.version,
                    _ => 0,
                };
                let ok = leads && assignment.version == base + 1;
                Reply::Done(ok && self.put(Key::Assignment, Value::Assignment(assignment), None))
            }
            Op::Acquire { lease, owner } => {
                let key = Key::Owner(owner.shard);
                if self.kv.contains_key(&key)
                    || !self.put(key.clone(), Value::Owner(owner), Some(lease))
                {
                    return Reply::Acquired(None);
                }
                Reply::Acquired(self.kv.get(&key).map(|e| e.create_rev))
            }
            Op::Release { shard, token } => {
                let key = Key::Owner(shard);
                let ours = self.kv.get(&key).is_some_and(|e| e.create_rev == token);
                let deleted = ours && self.delete(&key);
                Reply::Released {
                    deleted,
                    rev: self.revision,
                }
            }
            Op::Watch => Reply::Snapshot(
                self.kv
                    .iter()
                    .map(|(key, e)| Change {
                        key: key.clone(),
                        value: Some(e.value.clone()),
                        create_rev: e.create_rev,
                        rev: self.revision,
                    })
                    .collect(),
            ),
        }
    }

    /// Renews `lease` for a TTL from `now`; `false` when the lease is gone.
    fn keep_alive(&mut self, lease: LeaseId, now: Time) -> bool {
        let Some(expires) = self.leases.get_mut(&lease) else {
            return false;
        };
        self.expiry.remove(&(*expires, lease));
        *expires = now + self.ttl;
        self.expiry.insert((now + self.ttl, lease));
        true
    }

    /// Whether `lease` is alive.
    pub(crate) fn lease_alive(&self, lease: LeaseId) -> bool {
        self.leases.contains_key(&lease)
    }

    /// Expires every lease whose time has come by `now`.
    pub(crate) fn expire_due(&mut self, now: Time) {
        while let Some(&(at, lease)) = self.expiry.first() {
            if at > now {
                return;
            }
            self.revoke(lease);
        }
    }

    /// Ends `lease` and deletes its keys.
    fn revoke(&mut self, lease: LeaseId) {
        if let Some(expires) = self.leases.remove(&lease) {
            self.expiry.remove(&(expires, lease));
        }
        let keys: Vec<Key> = self
            .kv
            .iter()
            .filter(|(_, e)| e.lease == Some(lease))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.delete(&key);
        }
    }

    /// Writes `key`, bound to `lease` if any; `false` when the lease is gone.
    fn put(&mut self, key: Key, value: Value, lease: Option<LeaseId>) -> bool {
        if lease.is_some_and(|l| !self.leases.contains_key(&l)) {
            return false;
        }
        self.revision += 1;
        let create_rev = self.kv.get(&key).map_or(self.revision, |e| e.create_rev);
        self.changes.push(Change {
            key: key.clone(),
            value: Some(value.clone()),
            create_rev,
            rev: self.revision,
        });
        self.kv.insert(
            key,
            Entry {
                value,
                lease,
                create_rev,
            },
        );
        true
    }

    /// Deletes `key`; whether it existed.
    fn delete(&mut self, key: &Key) -> bool {
        let Some(entry) = self.kv.remove(key) else {
            return false;
        };
        self.revision += 1;
        self.changes.push(Change {
            key: key.clone(),
            value: None,
            create_rev: entry.create_rev,
            rev: self.revision,
        });
        true
    }

    /// A shard's owner and token.
    pub(crate) fn owner(&self, shard: u32) -> Option<(&ShardOwner, u64)> {
        match self.kv.get(&Key::Owner(shard)) {
            Some(Entry {
                value: Value::Owner(o),
                create_rev,
                ..
            }) => Some((o, *create_rev)),
            _ => None,
        }
    }

    /// The assignment.
    pub(crate) fn assignment(&self) -> Option<&Assignment> {
        match self.kv.get(&Key::Assignment).map(|e| &e.value) {
            Some(Value::Assignment(a)) => Some(a),
            _ => None,
        }
    }

    /// A node's entry: whether it is draining, if it exists.
    pub(crate) fn node_entry(&self, node: &NodeId) -> Option<bool> {
        match self.kv.get(&Key::Node(node.clone())).map(|e| &e.value) {
            Some(Value::Node { draining }) => Some(*draining),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Time {
        Duration::from_millis(n)
    }

    fn owner(node: &str, epoch: u64) -> ShardOwner {
        ShardOwner {
            shard: 3,
            node: NodeId::new(node),
            epoch,
        }
    }

    #[test]
    fn an_ownership_is_created_once_deleted_only_by_its_token_and_expires_with_its_lease() {
        let mut etcd = Etcd::new(Duration::from_secs(3));
        let Reply::Granted(a) = etcd.serve(Op::Grant, ms(0)) else {
            panic!()
        };
        let Reply::Granted(b) = etcd.serve(Op::Grant, ms(0)) else {
            panic!()
        };
        let Reply::Acquired(Some(token)) = etcd.serve(
            Op::Acquire {
                lease: a,
                owner: owner("a", a),
            },
            ms(1),
        ) else {
            panic!()
        };
        assert!(matches!(
            etcd.serve(
                Op::Acquire {
                    lease: b,
                    owner: owner("b", b)
                },
                ms(2)
            ),
            Reply::Acquired(None)
        ));
        // Not the token: nothing deleted.
        assert!(matches!(
            etcd.serve(
                Op::Release {
                    shard: 3,
                    token: token + 1
                },
                ms(3)
            ),
            Reply::Released { deleted: false, .. }
        ));
        // Lease a renewed at 2 s lives until 5 s (b, never renewed, until 3 s).
        assert!(matches!(
            etcd.serve(Op::KeepAlive(a), ms(2_000)),
            Reply::Alive(true)
        ));
        etcd.expire_due(ms(4_999));
        assert_eq!(etcd.owner(3).map(|(_, t)| t), Some(token));
        etcd.expire_due(ms(5_000));
        assert_eq!(etcd.owner(3), None);
        let changes = etcd.take_changes();
        assert!(changes.last().is_some_and(|c| c.value.is_none()));
        let Reply::Granted(c) = etcd.serve(Op::Grant, ms(5_000)) else {
            panic!()
        };
        let Reply::Acquired(Some(next)) = etcd.serve(
            Op::Acquire {
                lease: c,
                owner: owner("c", c),
            },
            ms(5_001),
        ) else {
            panic!()
        };
        assert!(next > token, "tokens grow");
    }
}
