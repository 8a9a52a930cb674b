//! Keyed entities' shards, without I/O: which shard a key is in, which node a shard is
//! assigned to (the [allocator](alloc)), and what a node does about each shard
//! ([host](host)).
//!
//! Keys map to a fixed number of shards per entity type ([`shard_of`], a stable hash). The
//! elected controller keeps an [`Assignment`] per type: the node each shard should be on.
//! A node hosts a shard only while it holds the shard's *ownership*, a key in the store bound
//! to the node's lease ([`ShardOwner`]); the assigned node takes the ownership only once the
//! previous owner's is gone (released after a drain, or expired with its lease). The
//! ownership's token (the store's revision when it was taken) fences the state the shard's
//! entities save.

use serde::{Deserialize, Serialize};

use crate::id::NodeId;

pub(crate) mod alloc;
pub(crate) mod host;

/// The shard of `key` among `shards`: FNV-1a 64 of the key's bytes, modulo the count. Stable
/// across processes, versions and platforms (it is part of the cluster's layout).
pub(crate) fn shard_of(key: &[u8], shards: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // Fold the high bits in: FNV's low bits alone are weak for short keys.
    let folded = hash ^ (hash >> 32);
    (folded % u64::from(shards.max(1))) as u32
}

/// Where the shards of one entity type should be: written by the controller, read by every
/// node that sends to or hosts the type. Serialized as JSON where a backend stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The entity type.
    pub kind: String,
    /// The node each shard is assigned to, by shard index (`None`: no node hosts the type).
    pub nodes: Vec<Option<NodeId>>,
    /// Grows with every change the controller writes.
    pub version: u64,
}

impl Assignment {
    /// The number of shards.
    pub fn shards(&self) -> u32 {
        self.nodes.len() as u32
    }

    /// The node shard `shard` is assigned to.
    pub fn node(&self, shard: u32) -> Option<&NodeId> {
        self.nodes.get(shard as usize).and_then(Option::as_ref)
    }

    /// How many shards are assigned to `node`.
    pub fn count(&self, node: &NodeId) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.as_ref() == Some(node))
            .count()
    }
}

/// Who holds a shard now: the value of the shard's ownership key, bound to `node`'s lease
/// `epoch` (gone when the owner releases it or its lease expires).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardOwner {
    /// The shard.
    pub shard: u32,
    /// The owning node.
    pub node: NodeId,
    /// The owner's lease when it took the shard (0 without leases).
    pub epoch: u64,
}

/// What a node holds of one entity type (`Node::entity_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntityStatus {
    /// The type's shard count in the cluster's assignment (0: no assignment yet).
    pub shards: u32,
    /// Shards the assignment puts on this node.
    pub assigned_here: usize,
    /// Shards this node holds and serves.
    pub hosted_here: usize,
    /// Shards of this node being taken, drained or released.
    pub in_motion_here: usize,
    /// Running activations on this node.
    pub activations: usize,
    /// Messages waiting on this node for shards in motion.
    pub waiting: usize,
    /// The version of the assignment this node follows.
    pub assignment_version: u64,
}

/// A change under an entity type's keys in the store, in the order the store made them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntityEvent {
    /// The controller wrote a new assignment.
    Assigned(Assignment),
    /// A node took a shard's ownership.
    Owned(ShardOwner),
    /// A shard's ownership went (released, or expired with its owner's lease).
    Released(u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shard_of_a_key_is_stable_and_spread() {
        // Pinned: changing the hash would move every entity of a running cluster.
        assert_eq!(shard_of(b"cart-42", 256), shard_of(b"cart-42", 256));
        assert_eq!(shard_of(b"", 256), shard_of(b"", 256));
        assert_eq!(shard_of(b"anything", 1), 0);
        assert_eq!(shard_of(b"anything", 0), 0);
        let mut counts = vec![0u32; 64];
        for i in 0..64_000 {
            counts[shard_of(format!("user-{i}").as_bytes(), 64) as usize] += 1;
        }
        let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
        assert!(min > 850 && max < 1150, "uneven spread: {min}..{max}");
    }

    #[test]
    fn known_values_do_not_change() {
        let pinned: Vec<u32> = ["a", "b", "cart-1", "cart-2", "account-99"]
            .iter()
            .map(|k| shard_of(k.as_bytes(), 1024))
            .collect();
        assert_eq!(pinned, PINNED);
    }

    const PINNED: [u32; 5] = [192, 745, 612, 77, 116];
}
