//! A seed's faults: a bounded number of them at random times while the faults last, each
//! ending by then (a kill's restart may come a little later).
//!
//! - **kill**: the process is gone (its lease expires at etcd a TTL after its last renewal);
//!   half of them are restarted with the same node id 1-20 s later (it registers once the
//!   previous incarnation's lease is gone);
//! - **freeze** (SIGSTOP) for 0.2-12 s, the leader in a third of them: the node's timers,
//!   answers, messages and watch wait, its clock runs on; on resumption what waited runs, in
//!   a random order;
//! - **partition** of a node from etcd for 0.5-15 s (the leader in a third): its requests
//!   and etcd's answers are lost, its watch waits; the clients and the other nodes still
//!   reach it, and it reaches the state store;
//! - **slow** node for 2-20 s: its handlers work 2-10 times longer (at most 200 ms, within
//!   the margin), its messages take 20-300 ms more each way;
//! - **leave**: the node drains, the controller moves its shards, it releases them and
//!   exits;
//! - **join** of a new node.
//!
//! Kills and leaves spare the last two nodes that host; joins stop at eight nodes. Clock
//! drift is not a fault: every node's clock runs off by up to ±1 % from its start.

use std::time::Duration;

use crate::core::Time;
use crate::id::NodeId;
use crate::sim::rng::Rng;

/// One fault, or the end of one. Targets are chosen when the fault happens.
#[derive(Debug, Clone)]
pub(crate) enum Fault {
    /// Kill a node; restart it after the delay, if any.
    Kill {
        /// When to restart it with the same id.
        restart: Option<Duration>,
    },
    /// Start a node with this id again.
    Restart(NodeId),
    /// Start a new node.
    Join,
    /// A node leaves gracefully.
    Leave,
    /// Stop a node for `d`.
    Freeze {
        /// How long.
        d: Duration,
        /// The leader (else any node).
        leader: bool,
    },
    /// The end of a freeze of incarnation `0`.
    Thaw(u64),
    /// Cut a node from etcd for `d`.
    Partition {
        /// How long.
        d: Duration,
        /// The leader (else any node).
        leader: bool,
    },
    /// The end of a partition of incarnation `0`.
    Heal(u64),
    /// Slow a node down by `factor` for `d`.
    Slow {
        /// How long.
        d: Duration,
        /// How many times slower its handlers are.
        factor: u64,
    },
    /// The end of a slowdown of incarnation `0`.
    Fast(u64),
}

/// Draws a run's faults for a duration.
pub(crate) type FaultsFn = fn(&mut Rng, Duration) -> Vec<(Time, Fault)>;

/// Only graceful changes, for `faults_for`: 2 to 8 leaves and joins (no kill, freeze,
/// partition or slowdown), so every message is expected to be handled.
pub(crate) fn handoffs(rng: &mut Rng, faults_for: Duration) -> Vec<(Time, Fault)> {
    let end = faults_for.as_millis() as u64;
    (0..rng.range(2, 8))
        .map(|_| {
            let at = rng.range(5_000, end.saturating_sub(1_000).max(5_000));
            let fault = if rng.chance(0.5) {
                Fault::Leave
            } else {
                Fault::Join
            };
            (Duration::from_millis(at), fault)
        })
        .collect()
}

/// The faults of a run whose faults last `faults_for`, by time.
pub(crate) fn faults(rng: &mut Rng, faults_for: Duration) -> Vec<(Time, Fault)> {
    let count = rng.range(2, 12);
    let mut faults = Vec::new();
    let end = faults_for.as_millis() as u64;
    for _ in 0..count {
        let at = rng.range(5_000, end.saturating_sub(1_000).max(5_000));
        // What is left of the faulty period: durations end by then.
        let left = end.saturating_sub(at).max(100);
        let d =
            |rng: &mut Rng, lo: u64, hi: u64| Duration::from_millis(rng.range(lo, hi).min(left));
        let fault = match rng.below(100) {
            0..=11 => Fault::Kill {
                restart: rng
                    .chance(0.5)
                    .then(|| Duration::from_millis(rng.range(1_000, 20_000))),
            },
            12..=21 => Fault::Join,
            22..=31 => Fault::Leave,
            32..=56 => {
                // Freezes past the TTL (3 s) in about half of them.
                let d = if rng.chance(0.5) {
                    d(rng, 200, 2_500)
                } else {
                    d(rng, 2_500, 12_000)
                };
                Fault::Freeze {
                    d,
                    leader: rng.chance(0.33),
                }
            }
            57..=84 => Fault::Partition {
                d: d(rng, 500, 15_000),
                leader: rng.chance(0.33),
            },
            _ => Fault::Slow {
                d: d(rng, 2_000, 20_000),
                factor: rng.range(2, 10),
            },
        };
        faults.push((Duration::from_millis(at), fault));
    }
    faults
}
