//! What a node does about one shard of an entity type: take its ownership, host it, drain it
//! when it is assigned elsewhere, release it, or drop it at once when the ownership is lost.
//!
//! The node keeps a [`Local`] state per shard; [`decide`] gives the next [`Step`] from that
//! state, the shard's assignment, its current owner as the store says, how many activations
//! of the shard are still running here and the node's current lease. The shell carries the
//! step out and records the new state.
//!
//! Single activation rests on two rules kept here and in the shell:
//!
//! - the node takes the ownership only when the store shows none (the previous owner
//!   released it after its activations stopped, or its lease expired), with a transaction
//!   that fails if another node was quicker;
//! - an owned shard whose ownership is gone (the owner key deleted or replaced, or the
//!   node's lease replaced) is [lost](Step::Lost): its activations are fenced at once (none
//!   handles another message) and stopped. The lease deadline rule (`core::fence::may_host`)
//!   covers the time before the store says so.

use super::ShardOwner;
use crate::id::NodeId;

/// A node's state for one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Local {
    /// Not hosted here.
    Idle,
    /// Taking the ownership: a transaction is under way.
    Acquiring,
    /// Hosted here under ownership `token`, taken while the node held lease `epoch`.
    Owned { token: u64, epoch: u64 },
    /// Assigned elsewhere: the activations are stopping after their queued messages; new
    /// messages for the shard wait.
    Draining { token: u64, epoch: u64 },
    /// Every activation stopped: the ownership is being released.
    Releasing { token: u64 },
}

/// What to do next about a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing for now.
    Wait,
    /// Take the ownership (the state becomes [`Local::Acquiring`]).
    Acquire,
    /// Stop the shard's activations after their queued messages and hold new messages (the
    /// state becomes [`Local::Draining`]).
    Drain,
    /// Assigned here again while draining: host it again under the same ownership.
    Resume,
    /// Release the ownership `token` (the state becomes [`Local::Releasing`]).
    Release { token: u64 },
    /// The store shows an ownership of this node that the node does not track (taken by an
    /// earlier incarnation of this state under the same lease): delete it, so that the shard
    /// can be taken again properly.
    ReleaseStale,
    /// The ownership is gone without a release: fence and stop the activations at once,
    /// forget the shard (the state becomes [`Local::Idle`]).
    Lost,
}

/// The next step for a shard in state `local` on node `me`, whose lease is `epoch` now;
/// `assigned` is the shard's assignee, `owner` its owner as the store shows it, `active` the
/// number of its activations still running here.
pub(crate) fn decide(
    me: &NodeId,
    epoch: u64,
    local: Local,
    assigned: Option<&NodeId>,
    owner: Option<&ShardOwner>,
    active: usize,
) -> Step {
    let mine = assigned == Some(me);
    let owned_by = |e: u64| owner.is_some_and(|o| &o.node == me && o.epoch == e) && e == epoch;
    match local {
        Local::Idle => match owner {
            Some(o) if &o.node == me => Step::ReleaseStale,
            None if mine => Step::Acquire,
            _ => Step::Wait,
        },
        Local::Acquiring | Local::Releasing { .. } => Step::Wait,
        Local::Owned { epoch: e, .. } if !owned_by(e) => Step::Lost,
        Local::Owned { .. } if !mine => Step::Drain,
        Local::Owned { .. } => Step::Wait,
        Local::Draining { epoch: e, .. } if !owned_by(e) => Step::Lost,
        Local::Draining { .. } if mine => Step::Resume,
        Local::Draining { token, .. } if active == 0 => Step::Release { token },
        Local::Draining { .. } => Step::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(id: &str) -> NodeId {
        NodeId::new(id)
    }

    fn owner(node: &str, epoch: u64) -> ShardOwner {
        ShardOwner {
            shard: 3,
            node: n(node),
            epoch,
        }
    }

    const OWNED: Local = Local::Owned {
        token: 40,
        epoch: 7,
    };
    const DRAINING: Local = Local::Draining {
        token: 40,
        epoch: 7,
    };

    #[test]
    fn an_assigned_shard_is_taken_only_once_nobody_owns_it() {
        let me = n("a");
        assert_eq!(
            decide(&me, 7, Local::Idle, Some(&me), None, 0),
            Step::Acquire
        );
        // The previous owner still holds it: wait for its release or its lease's expiry.
        let b = owner("b", 3);
        assert_eq!(
            decide(&me, 7, Local::Idle, Some(&me), Some(&b), 0),
            Step::Wait
        );
        assert_eq!(
            decide(&me, 7, Local::Acquiring, Some(&me), None, 0),
            Step::Wait
        );
        // Not assigned here: never taken.
        assert_eq!(
            decide(&me, 7, Local::Idle, Some(&n("b")), None, 0),
            Step::Wait
        );
        assert_eq!(decide(&me, 7, Local::Idle, None, None, 0), Step::Wait);
    }

    #[test]
    fn a_shard_assigned_elsewhere_drains_then_releases() {
        let me = n("a");
        let mine = owner("a", 7);
        let b = n("b");
        assert_eq!(decide(&me, 7, OWNED, Some(&me), Some(&mine), 5), Step::Wait);
        assert_eq!(decide(&me, 7, OWNED, Some(&b), Some(&mine), 5), Step::Drain);
        assert_eq!(
            decide(&me, 7, DRAINING, Some(&b), Some(&mine), 2),
            Step::Wait
        );
        assert_eq!(
            decide(&me, 7, DRAINING, Some(&b), Some(&mine), 0),
            Step::Release { token: 40 }
        );
        // Assigned back while draining.
        assert_eq!(
            decide(&me, 7, DRAINING, Some(&me), Some(&mine), 2),
            Step::Resume
        );
        assert_eq!(
            decide(
                &me,
                7,
                Local::Releasing { token: 40 },
                Some(&b),
                Some(&mine),
                0
            ),
            Step::Wait
        );
    }

    #[test]
    fn an_ownership_gone_without_a_release_is_lost_at_once() {
        let me = n("a");
        // The key expired with the lease.
        assert_eq!(decide(&me, 7, OWNED, Some(&me), None, 5), Step::Lost);
        assert_eq!(decide(&me, 7, DRAINING, Some(&n("b")), None, 5), Step::Lost);
        // Someone else holds it now.
        assert_eq!(
            decide(&me, 7, OWNED, Some(&me), Some(&owner("b", 2)), 5),
            Step::Lost
        );
        // The node's lease was replaced (declared down, registered again).
        assert_eq!(
            decide(&me, 8, OWNED, Some(&me), Some(&owner("a", 7)), 5),
            Step::Lost
        );
        // A key of this node from another lease.
        assert_eq!(
            decide(&me, 7, OWNED, Some(&me), Some(&owner("a", 6)), 5),
            Step::Lost
        );
    }

    #[test]
    fn an_untracked_ownership_of_this_node_is_released() {
        let me = n("a");
        let mine = owner("a", 7);
        assert_eq!(
            decide(&me, 7, Local::Idle, Some(&me), Some(&mine), 0),
            Step::ReleaseStale
        );
    }
}
