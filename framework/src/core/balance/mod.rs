//! Client-side load balancing: which instance of a group gets the next message.
//!
//! Decisions only, no I/O: a [`Balancer`] sees a snapshot of the group's instances
//! ([`Instance`]: identity, weight, asks this caller has in flight to it, whether it may take
//! more) and an optional routing key, and returns the index of the chosen instance. The
//! [`GroupRef`](crate::GroupRef) keeps the snapshot up to date from discovery and from its own
//! bookkeeping; a balancer never blocks and never allocates per pick in the common case.
//!
//! | balancer | picks | for |
//! |---|---|---|
//! | [`RoundRobin`] | each instance in turn | equal instances, equal work |
//! | [`Random`] | uniformly at random | many callers, no coordination |
//! | [`LeastOutstanding`] | fewest asks in flight from this caller | uneven service times |
//! | [`PowerOfTwo`] | the less loaded of two random instances | uneven service times, large groups |
//! | [`ConsistentHash`] | by key: the same key, the same instance | caches, sessions, per-key order |
//! | [`Weighted`] | in proportion to instance weights | instances of different sizes |
//!
//! Write your own by implementing [`Balancer`].

use std::fmt;

use crate::id::{ActorId, NodeId};

mod consistent_hash;
mod least_outstanding;
mod power_of_two;
mod random;
mod round_robin;
mod weighted;

pub use consistent_hash::ConsistentHash;
pub use least_outstanding::LeastOutstanding;
pub use power_of_two::PowerOfTwo;
pub use random::Random;
pub use round_robin::RoundRobin;
pub use weighted::Weighted;

/// One instance of a group as a balancer sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// The node the instance runs on.
    pub node: NodeId,
    /// The actor.
    pub actor: ActorId,
    /// Its relative capacity (default 1); only [`Weighted`] and [`ConsistentHash`] use it.
    pub weight: u32,
    /// Asks this caller has in flight to it.
    pub outstanding: usize,
    /// Whether it may take a message now: not ejected for failing, and below its cap of
    /// asks in flight. A balancer must not pick an unavailable instance.
    pub available: bool,
}

impl Instance {
    /// A stable 64-bit identity of the instance (node and actor), for hashing.
    pub fn identity(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self
            .node
            .as_str()
            .bytes()
            .chain(self.actor.get().to_le_bytes())
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }
}

/// Chooses the instance for the next message. See the [module docs](self).
pub trait Balancer: Send + Sync + fmt::Debug + 'static {
    /// The index in `instances` of the chosen instance, or `None` when no instance is
    /// available. `key` is the routing key of the message, if the caller gave one.
    fn pick(&self, instances: &[Instance], key: Option<u64>) -> Option<usize>;

    /// A short name, for logs and metrics.
    fn name(&self) -> &'static str;
}

/// A small, fast, non-cryptographic generator for balancers (xorshift64*), seeded per
/// instance; deterministic when seeded explicitly (tests).
#[derive(Debug)]
pub(crate) struct Rng(std::sync::atomic::AtomicU64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(std::sync::atomic::AtomicU64::new(seed | 1))
    }

    pub(crate) fn from_entropy() -> Self {
        Rng::new(crate::id::random_u64())
    }

    /// The next number; concurrent callers may see the same one, which is harmless here.
    pub(crate) fn next(&self) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        let mut x = self.0.load(Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0.store(x, Relaxed);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n > 0`).
    pub(crate) fn below(&self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

/// Builds a synthetic group for tests: `n` instances on `nodes` nodes, all available.
#[cfg(test)]
pub(crate) fn synthetic(n: usize, nodes: usize) -> Vec<Instance> {
    (0..n)
        .map(|i| Instance {
            node: NodeId::new(format!("n{}", i % nodes.max(1))),
            actor: ActorId(i as u64 + 1),
            weight: 1,
            outstanding: 0,
            available: true,
        })
        .collect()
}
