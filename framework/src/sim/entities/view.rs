//! A node's view of etcd: a snapshot, then its watch's changes as they arrive (late, in
//! order), and the results of the node's own transactions as soon as it has them.
//!
//! An ownership's entry remembers the revision it was last changed at, so that a change the
//! watch brings late (the deletion of the previous owner's key, seen after this node took
//! the shard and learned so from its transaction's answer) does not undo a newer one. The
//! assignment is kept by version for the same reason (the leader learns its own writes
//! first).

use std::collections::BTreeMap;

use crate::core::shard::{Assignment, ShardOwner};
use crate::id::NodeId;

use super::etcd::{Change, Key, Value};

/// See the [module docs](self).
#[derive(Debug)]
pub(crate) struct View {
    /// Whether the snapshot arrived.
    pub(crate) synced: bool,
    /// Registered nodes and whether each is leaving.
    pub(crate) nodes: BTreeMap<NodeId, bool>,
    /// The leader and its token.
    pub(crate) leader: Option<(NodeId, u64)>,
    /// The shards' owners and their tokens, by shard.
    owners: Vec<Option<(ShardOwner, u64)>>,
    /// The revision of the latest change seen per shard's ownership.
    owner_rev: Vec<u64>,
    /// The assignment.
    pub(crate) assignment: Option<Assignment>,
}

impl View {
    /// An empty view of `shards` shards, before the snapshot.
    pub(crate) fn new(shards: u32) -> Self {
        View {
            synced: false,
            nodes: BTreeMap::new(),
            leader: None,
            owners: vec![None; shards as usize],
            owner_rev: vec![0; shards as usize],
            assignment: None,
        }
    }

    /// Starts over from a snapshot.
    pub(crate) fn reset(&mut self, snapshot: &[Change]) {
        *self = View::new(self.owners.len() as u32);
        for change in snapshot {
            self.apply(change);
        }
        self.synced = true;
    }

    /// Applies a change from the watch.
    pub(crate) fn apply(&mut self, change: &Change) {
        match (&change.key, &change.value) {
            (Key::Node(id), Some(Value::Node { draining })) => {
                self.nodes.insert(id.clone(), *draining);
            }
            (Key::Node(id), None) => {
                self.nodes.remove(id);
            }
            (Key::Leader, Some(Value::Leader(id))) => {
                self.leader = Some((id.clone(), change.create_rev));
            }
            (Key::Leader, None) => self.leader = None,
            (Key::Owner(shard), value) => {
                let s = *shard as usize;
                if self.owner_rev.get(s).is_none_or(|r| *r >= change.rev) {
                    return;
                }
                self.owner_rev[s] = change.rev;
                self.owners[s] = match value {
                    Some(Value::Owner(o)) => Some((o.clone(), change.create_rev)),
                    _ => None,
                };
            }
            (Key::Assignment, Some(Value::Assignment(a))) => self.assigned(a),
            _ => {}
        }
    }

    /// This node created `owner`'s key with token `token` (its create revision).
    pub(crate) fn acquired(&mut self, owner: ShardOwner, token: u64) {
        let change = Change {
            key: Key::Owner(owner.shard),
            value: Some(Value::Owner(owner)),
            create_rev: token,
            rev: token,
        };
        self.apply(&change);
    }

    /// This node deleted `shard`'s ownership at revision `rev`.
    pub(crate) fn released(&mut self, shard: u32, rev: u64) {
        let change = Change {
            key: Key::Owner(shard),
            value: None,
            create_rev: 0,
            rev,
        };
        self.apply(&change);
    }

    /// An assignment written (seen on the watch, or by the leader that wrote it).
    pub(crate) fn assigned(&mut self, a: &Assignment) {
        if self
            .assignment
            .as_ref()
            .is_none_or(|c| c.version < a.version)
        {
            self.assignment = Some(a.clone());
        }
    }

    /// `shard`'s owner as the node sees it.
    pub(crate) fn owner(&self, shard: u32) -> Option<&ShardOwner> {
        self.owners.get(shard as usize)?.as_ref().map(|(o, _)| o)
    }

    /// `shard`'s ownership token as the node sees it.
    pub(crate) fn token(&self, shard: u32) -> Option<u64> {
        self.owners.get(shard as usize)?.as_ref().map(|(_, t)| *t)
    }

    /// The version of the assignment the node sees (0: none yet).
    pub(crate) fn version(&self) -> u64 {
        self.assignment.as_ref().map_or(0, |a| a.version)
    }

    /// `shard`'s assignee as the node sees it.
    pub(crate) fn assignee(&self, shard: u32) -> Option<&NodeId> {
        self.assignment.as_ref().and_then(|a| a.node(shard))
    }
}
