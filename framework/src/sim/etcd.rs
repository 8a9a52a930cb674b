//! A model of etcd as actormesh uses it: keys with revisions, leases, prefix watches.
//!
//! - Every change bumps the store's revision; a key remembers the revision it was created at
//!   (the leader key's creation revision is the fencing token, monotonic across leaders).
//! - A lease lives for the TTL after its grant or last keep-alive; when it expires (checked
//!   before every simulated event, so never early) every key bound to it is deleted and the
//!   watchers are told. Keys without a lease (specs) outlive every node.
//! - A watch on a prefix receives every change under it after its creation, in revision
//!   order; the world delivers them to the watching node in order, with delay, and holds
//!   them while the node is cut off from etcd (the real watch resyncs after a break).
//!
//! What is not modelled: compaction, multi-key transactions as one revision (a lease expiry
//! deletes its keys one revision each), request batching, etcd itself failing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::core::model::{GroupMember, GroupSpec, LoadReport, NodeInfo};
use crate::core::Time;
use crate::id::{ActorId, NodeId};

/// A lease's id.
pub(crate) type LeaseId = u64;
/// A watch's id.
pub(crate) type WatchId = u64;

/// A key of the cluster's keyspace (one cluster).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Key {
    /// The controller's leader key (bound to the leader's lease).
    Leader,
    /// A node's entry (bound to its lease).
    Node(NodeId),
    /// A node's latest load report (bound to its lease).
    Load(NodeId),
    /// A group's spec (not bound to any lease).
    Spec(String),
    /// A member of a group (bound to its node's lease).
    Member {
        /// The group.
        group: String,
        /// The node that runs the replica.
        node: NodeId,
        /// The replica.
        actor: ActorId,
    },
}

/// The value of a key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// A node's entry; `leaving` is written just before a graceful leave.
    Node {
        /// What the node publishes.
        info: NodeInfo,
        /// Whether it is leaving.
        leaving: bool,
    },
    /// The leader's node id.
    Leader(NodeId),
    /// A load report.
    Load(LoadReport),
    /// A spec.
    Spec(GroupSpec),
    /// A group member.
    Member(GroupMember),
}

/// What a watch follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Prefix {
    /// Every node entry.
    Nodes,
    /// The leader key.
    Leader,
    /// Every spec.
    Specs,
    /// The members of one group.
    Group(String),
}

impl Prefix {
    /// Whether `key` is under the prefix.
    fn matches(&self, key: &Key) -> bool {
        match (self, key) {
            (Prefix::Nodes, Key::Node(_))
            | (Prefix::Leader, Key::Leader)
            | (Prefix::Specs, Key::Spec(_)) => true,
            (Prefix::Group(g), Key::Member { group, .. }) => g == group,
            _ => false,
        }
    }
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Change {
    /// A key was written.
    Put {
        /// Its previous value, if it had one.
        old: Option<Box<Value>>,
        /// The new value.
        new: Value,
        /// The revision the key was created at.
        create_rev: u64,
    },
    /// A key was deleted.
    Delete {
        /// Its last value.
        old: Value,
    },
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
    next_id: u64,
    kv: BTreeMap<Key, Entry>,
    /// Live leases and when they expire.
    leases: BTreeMap<LeaseId, Time>,
    /// The same, ordered by expiry.
    expiry: BTreeSet<(Time, LeaseId)>,
    watches: BTreeMap<WatchId, Prefix>,
    /// Changes for the watches, not yet taken by the world (see [`Etcd::take_changes`]).
    changes: Vec<(WatchId, Change)>,
}

impl Etcd {
    /// An empty store whose leases live `ttl` after their last renewal.
    pub(crate) fn new(ttl: Duration) -> Self {
        Etcd {
            ttl,
            revision: 0,
            next_id: 1,
            kv: BTreeMap::new(),
            leases: BTreeMap::new(),
            expiry: BTreeSet::new(),
            watches: BTreeMap::new(),
            changes: Vec::new(),
        }
    }

    /// The changes produced since the last call, in order, for their watches.
    pub(crate) fn take_changes(&mut self) -> Vec<(WatchId, Change)> {
        std::mem::take(&mut self.changes)
    }

    /// Grants a lease that expires `ttl` from `now` unless kept alive.
    pub(crate) fn grant(&mut self, now: Time) -> LeaseId {
        let id = self.next_id;
        self.next_id += 1;
        self.leases.insert(id, now + self.ttl);
        self.expiry.insert((now + self.ttl, id));
        id
    }

    /// Renews `lease` for a TTL from `now`; `false` when the lease is gone.
    pub(crate) fn keep_alive(&mut self, lease: LeaseId, now: Time) -> bool {
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

    /// Ends `lease` now and deletes its keys.
    pub(crate) fn revoke(&mut self, lease: LeaseId) {
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

    /// Writes `key`, bound to `lease` if any; `None` when the lease is gone. Returns the
    /// key's creation revision.
    pub(crate) fn put(&mut self, key: Key, value: Value, lease: Option<LeaseId>) -> Option<u64> {
        if lease.is_some_and(|l| !self.leases.contains_key(&l)) {
            return None;
        }
        self.revision += 1;
        let create_rev = self.kv.get(&key).map_or(self.revision, |e| e.create_rev);
        let old = self.kv.insert(
            key.clone(),
            Entry {
                value: value.clone(),
                lease,
                create_rev,
            },
        );
        self.notify(
            &key,
            Change::Put {
                old: old.map(|e| Box::new(e.value)),
                new: value,
                create_rev,
            },
        );
        Some(create_rev)
    }

    /// Writes `key` only if it does not exist (a transaction comparing its creation revision
    /// with 0); `None` when it exists or the lease is gone.
    pub(crate) fn create(&mut self, key: Key, value: Value, lease: Option<LeaseId>) -> Option<u64> {
        if self.kv.contains_key(&key) {
            return None;
        }
        self.put(key, value, lease)
    }

    /// Deletes `key`; whether it existed.
    pub(crate) fn delete(&mut self, key: &Key) -> bool {
        let Some(entry) = self.kv.remove(key) else {
            return false;
        };
        self.revision += 1;
        self.notify(key, Change::Delete { old: entry.value });
        true
    }

    /// The current leader and its token (the leader key's creation revision).
    pub(crate) fn leader(&self) -> Option<(NodeId, u64)> {
        match self.kv.get(&Key::Leader) {
            Some(Entry {
                value: Value::Leader(node),
                create_rev,
                ..
            }) => Some((node.clone(), *create_rev)),
            _ => None,
        }
    }

    /// The leader's token, if the leader key is bound to `lease`.
    pub(crate) fn leader_bound_to(&self, lease: LeaseId) -> Option<u64> {
        self.kv
            .get(&Key::Leader)
            .filter(|e| e.lease == Some(lease))
            .map(|e| e.create_rev)
    }

    /// The values under `prefix`, in key order.
    pub(crate) fn range(&self, prefix: &Prefix) -> Vec<Value> {
        self.kv
            .iter()
            .filter(|(k, _)| prefix.matches(k))
            .map(|(_, e)| e.value.clone())
            .collect()
    }

    /// Every load report, by node.
    pub(crate) fn loads(&self) -> BTreeMap<NodeId, LoadReport> {
        self.kv
            .iter()
            .filter_map(|(k, e)| match (k, &e.value) {
                (Key::Load(node), Value::Load(load)) => Some((node.clone(), load.clone())),
                _ => None,
            })
            .collect()
    }

    /// Every spec.
    pub(crate) fn specs(&self) -> Vec<GroupSpec> {
        self.range(&Prefix::Specs)
            .into_iter()
            .filter_map(|v| match v {
                Value::Spec(spec) => Some(spec),
                _ => None,
            })
            .collect()
    }

    /// The members of `group`.
    pub(crate) fn members(&self, group: &str) -> Vec<GroupMember> {
        self.range(&Prefix::Group(group.to_owned()))
            .into_iter()
            .filter_map(|v| match v {
                Value::Member(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    /// Starts a watch of `prefix` (changes from now on).
    pub(crate) fn watch(&mut self, prefix: Prefix) -> WatchId {
        let id = self.next_id;
        self.next_id += 1;
        self.watches.insert(id, prefix);
        id
    }

    /// Ends a watch.
    pub(crate) fn unwatch(&mut self, watch: WatchId) {
        self.watches.remove(&watch);
    }

    fn notify(&mut self, key: &Key, change: Change) {
        for (id, prefix) in &self.watches {
            if prefix.matches(key) {
                self.changes.push((*id, change.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Time {
        Duration::from_millis(n)
    }

    #[test]
    fn an_expired_lease_takes_its_keys_and_the_watchers_see_it() {
        let mut etcd = Etcd::new(Duration::from_secs(3));
        let lease = etcd.grant(ms(0));
        let watch = etcd.watch(Prefix::Leader);
        let token = etcd
            .create(Key::Leader, Value::Leader(NodeId::new("a")), Some(lease))
            .unwrap();
        assert_eq!(etcd.leader(), Some((NodeId::new("a"), token)));
        assert!(etcd.keep_alive(lease, ms(2_000)));
        etcd.expire_due(ms(4_999));
        assert!(etcd.leader().is_some());
        etcd.expire_due(ms(5_000));
        assert_eq!(etcd.leader(), None);
        assert!(!etcd.keep_alive(lease, ms(5_000)));
        let changes = etcd.take_changes();
        assert_eq!(changes.len(), 2);
        assert!(changes.iter().all(|(w, _)| *w == watch));
        assert!(matches!(changes[1].1, Change::Delete { .. }));
        // The next leader gets a larger token.
        let next = etcd.grant(ms(5_000));
        let second = etcd
            .create(Key::Leader, Value::Leader(NodeId::new("b")), Some(next))
            .unwrap();
        assert!(second > token);
        assert_eq!(
            etcd.create(Key::Leader, Value::Leader(NodeId::new("c")), Some(next)),
            None
        );
    }
}
