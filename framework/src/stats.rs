//! Counters of what a node dropped and why. Nothing is dropped silently: every drop is counted
//! here and logged.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a message or envelope was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// The send queue towards a peer was full.
    QueueFull,
    /// The link to a peer failed with the message queued or in flight.
    LinkFailed,
    /// The peer node is down.
    NodeDown,
    /// No local actor with the addressed id.
    UnknownActor,
    /// The actor does not accept the message type.
    UnknownMessage,
    /// The envelope or frame was malformed.
    Malformed,
    /// The payload did not decode.
    Decode,
    /// The target actor had stopped.
    ActorStopped,
    /// The ask's deadline passed before the handler ran.
    DeadlineExpired,
    /// The node was shutting down.
    ShuttingDown,
    /// A reply arrived for an ask nobody waits for any more (timed out).
    LateReply,
    /// The node's lease was lost (the cluster declared it down) or in doubt when the request
    /// was to start: refused unhandled.
    Fenced,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 12] = [
        DropReason::QueueFull,
        DropReason::LinkFailed,
        DropReason::NodeDown,
        DropReason::UnknownActor,
        DropReason::UnknownMessage,
        DropReason::Malformed,
        DropReason::Decode,
        DropReason::ActorStopped,
        DropReason::DeadlineExpired,
        DropReason::ShuttingDown,
        DropReason::LateReply,
        DropReason::Fenced,
    ];

    /// A short snake_case label, as used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::LinkFailed => "link_failed",
            DropReason::NodeDown => "node_down",
            DropReason::UnknownActor => "unknown_actor",
            DropReason::UnknownMessage => "unknown_message",
            DropReason::Malformed => "malformed",
            DropReason::Decode => "decode",
            DropReason::ActorStopped => "actor_stopped",
            DropReason::DeadlineExpired => "deadline_expired",
            DropReason::ShuttingDown => "shutting_down",
            DropReason::LateReply => "late_reply",
            DropReason::Fenced => "fenced",
        }
    }
}

/// The live counters of a node.
#[derive(Default)]
pub(crate) struct Stats {
    dropped: [AtomicU64; DropReason::ALL.len()],
}

impl fmt::Debug for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.snapshot().fmt(f)
    }
}

impl Stats {
    /// Counts `n` drops for `reason`.
    pub(crate) fn dropped(&self, reason: DropReason, n: u64) {
        self.dropped[reason as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            dropped: std::array::from_fn(|i| self.dropped[i].load(Ordering::Relaxed)),
        }
    }
}

/// A copy of a node's counters at one moment. See [`Node::stats`](crate::Node::stats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSnapshot {
    dropped: [u64; DropReason::ALL.len()],
}

impl StatsSnapshot {
    /// How many messages were dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize]
    }

    /// How many messages were dropped in all.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }
}
