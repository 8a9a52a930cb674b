//! The controller's decision, as the leader makes it every tick: the real allocator
//! ([`core::shard::alloc::plan`](crate::core::shard::alloc::plan)) over the nodes that host
//! the type now (registered in the leader's view, not leaving), from the assignment the
//! leader sees, at most [`Config::max_moves`] handoffs between live hosts at a time.
//!
//! The leader writes the result as the holder of its token over the version it planned from
//! (see [`etcd`](super::etcd)): a deposed leader's write, or one planned from a stale view,
//! is refused and planned again at the next tick.

use std::collections::BTreeSet;

use crate::core::shard::alloc::plan;
use crate::core::shard::Assignment;
use crate::id::NodeId;

use super::config::{Config, KIND};
use super::view::View;

/// The nodes that host the type, as `view` shows them.
pub(crate) fn hosts(view: &View) -> BTreeSet<NodeId> {
    view.nodes
        .iter()
        .filter(|(_, draining)| !**draining)
        .map(|(id, _)| id.clone())
        .collect()
}

/// The next assignment to write, if the leader's view calls for one.
pub(crate) fn next_assignment(view: &View, cfg: &Config) -> Option<Assignment> {
    plan(
        KIND,
        cfg.shards,
        view.assignment.as_ref(),
        &hosts(view),
        cfg.max_moves,
    )
}
