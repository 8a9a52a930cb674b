//! The fixed parameters of an entity simulation run, and the hosting rule under test.

use std::time::Duration;

/// The entity type the simulation hosts: a counter per key.
pub(crate) const KIND: &str = "counter";

/// Which rule lets an activation handle a message, on the node's clock (see
/// [`core::fence`](crate::core::fence)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    /// [`may_host`](crate::core::fence::may_host): the lease certainly alive for the margin
    /// more. The rule.
    MayHost,
    /// [`may_start`](crate::core::fence::may_start), the orders' laxer rule: no margin, and
    /// served *unconfirmed* while etcd cannot be reached. Broken for hosting: only to show
    /// that the checks catch it.
    MayStart,
}

/// The parameters of a run. Durations a node waits are on its own clock.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Shards of the entity type (at most 64: the checks keep them in a bit set).
    pub(crate) shards: u32,
    /// Keys the clients send to (`k0`, `k1`…).
    pub(crate) keys: usize,
    /// The lease TTL (the real default: 3 s).
    pub(crate) ttl: Duration,
    /// How long a node waits for an etcd answer.
    pub(crate) request_timeout: Duration,
    /// `may_host`'s margin: covers the longest handler's work and the clock drift.
    pub(crate) margin: Duration,
    /// How often a node renews its lease (TTL / 3, as the etcd session does), goes through
    /// its shards, and its controller plans when it leads.
    pub(crate) tick: Duration,
    /// The controller's handoffs between live hosts per tick.
    pub(crate) max_moves: usize,
    /// A handler's work on a normal node, in milliseconds (lowest, highest).
    pub(crate) work_ms: (u64, u64),
    /// How many times a message is forwarded between nodes before it is dropped (the
    /// runtime's `MAX_HOPS`).
    pub(crate) max_hops: u32,
    /// A node whose assignment is older than the one a message was routed by holds the
    /// message until its view catches up, instead of forwarding it by its older view (the
    /// runtime's rule; off only to show what it prevents).
    pub(crate) hold_newer: bool,
    /// How long a node keeps a message waiting for its shard before dropping it.
    pub(crate) max_wait: Duration,
    /// How long a leaving node drains before it leaves anyway.
    pub(crate) leave_deadline: Duration,
    /// The largest clock drift, in parts per million (10 000: 1 %).
    pub(crate) drift_ppm: i64,
    /// The hosting rule.
    pub(crate) rule: Rule,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            shards: 16,
            keys: 48,
            ttl: Duration::from_secs(3),
            request_timeout: Duration::from_secs(2),
            margin: Duration::from_millis(500),
            tick: Duration::from_secs(1),
            max_moves: 2,
            work_ms: (1, 20),
            max_hops: u32::from(crate::runtime::entity::MAX_HOPS),
            hold_newer: true,
            max_wait: Duration::from_secs(10),
            leave_deadline: Duration::from_secs(30),
            drift_ppm: 10_000,
            rule: Rule::MayHost,
        }
    }
}
