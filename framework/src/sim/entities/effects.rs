//! What a node asks of the world: the node's code ([`node`](super::node),
//! [`host`](super::host)) reads its own clock and returns these; the world sends, schedules
//! and records them. Nothing here knows the virtual time.

use std::time::Duration;

use crate::core::Time;
use crate::id::NodeId;

use super::etcd::{LeaseId, Op};
use super::store::StoreOp;

/// A client's message to the entity of `key`.
#[derive(Debug, Clone)]
pub(crate) struct Envelope {
    /// The message's number (unique in a run).
    pub(crate) id: u64,
    /// The entity.
    pub(crate) key: String,
    /// Its shard.
    pub(crate) shard: u32,
    /// How many times nodes forwarded it.
    pub(crate) hops: u32,
    /// The version of the assignment its sender routed it by (0: sent without one).
    pub(crate) version: u64,
    /// When it reached this node, on the node's clock.
    pub(crate) since: Time,
}

/// A node's timer.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Timer {
    /// Renew the lease, go through the shards (and plan, when leading).
    Tick,
    /// The etcd request `req` got no answer in time.
    Timeout(u64),
    /// Write the node's entry again (refused while a previous incarnation's lives).
    Register,
    /// The handler of activation `act` finished its work.
    Work(u64),
}

/// Something that happened on a node, counted in the run's statistics.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    /// A message handled (its handler started).
    Handled,
    /// A queued message not handled: the fence said no when its handler was to start.
    Fenced,
    /// A message dropped: waited too long for its shard, or dropped with a stopped
    /// activation.
    Dropped,
    /// A message dropped because it was forwarded [`Config::max_hops`] times.
    ///
    /// [`Config::max_hops`]: super::config::Config::max_hops
    HopLimit,
    /// A message forwarded to the shard's assignee.
    Forwarded,
    /// A save refused by the store (a larger token claimed the state).
    StaleSave,
    /// A load refused by the store.
    StaleLoad,
    /// A shard's ownership taken.
    Acquired,
    /// A shard drained (assigned elsewhere).
    Drained,
    /// A shard's ownership released after its drain.
    Released,
    /// A shard's ownership lost (gone without a release, or the lease changed).
    Lost,
    /// A lease found lost (etcd said so).
    LeaseLost,
    /// A leadership won.
    Leadership,
    /// An assignment written.
    Assigned,
}

/// See the [module docs](self).
#[derive(Debug, Clone)]
pub(crate) enum Out {
    /// Send `op` to etcd as request `req`.
    Etcd {
        /// The request's number at the node.
        req: u64,
        /// The request.
        op: Op,
    },
    /// Send `op` to the state store as request `req`.
    Store {
        /// The request's number at the node.
        req: u64,
        /// The request.
        op: StoreOp,
    },
    /// Fire `timer` after `after` on the node's clock.
    Timer {
        /// How long, on the node's clock.
        after: Duration,
        /// Which.
        timer: Timer,
    },
    /// Forward a message to the node `to`.
    Forward {
        /// The node the message's shard is assigned to, as the sender sees it.
        to: NodeId,
        /// The message.
        env: Envelope,
    },
    /// A handler of `key` starts (activation `act`).
    Started {
        /// The entity.
        key: String,
        /// The activation.
        act: u64,
    },
    /// The handler of activation `act` finished its work (its save is on its way).
    Ended {
        /// The entity.
        key: String,
        /// The activation.
        act: u64,
    },
    /// The store acknowledged save `req` of `key`, with `value`.
    Acked {
        /// The entity.
        key: String,
        /// The counter saved.
        value: u64,
        /// The save's request number.
        req: u64,
    },
    /// Something to count.
    Count(Counter),
    /// A notable step, for the trace.
    Note(String),
    /// The node is done leaving: the process exits (after revoking lease `lease`).
    Exit(Option<LeaseId>),
}

/// What a node's code is handed: its clock's reading, and where its effects go.
#[derive(Debug)]
pub(crate) struct Ctx {
    /// The node's clock now.
    pub(crate) now: Time,
    /// The effects, in order.
    pub(crate) out: Vec<Out>,
}

impl Ctx {
    /// A context at `now` on the node's clock.
    pub(crate) fn new(now: Time) -> Self {
        Ctx {
            now,
            out: Vec::new(),
        }
    }

    /// Adds an effect.
    pub(crate) fn push(&mut self, out: Out) {
        self.out.push(out);
    }

    /// Counts `counter`.
    pub(crate) fn count(&mut self, counter: Counter) {
        self.out.push(Out::Count(counter));
    }

    /// Notes a step.
    pub(crate) fn note(&mut self, what: String) {
        self.out.push(Out::Note(what));
    }
}
