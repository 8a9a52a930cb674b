//! The singleton guard's shell: stops a singleton replica before its node's lease can expire,
//! as [`core::singleton::guard`](crate::core::singleton::guard) decides.

use std::sync::Weak;
use std::time::Instant;

use super::{read, NodeShared};
use crate::core::singleton::{guard, Guard, MARGIN};
use crate::id::ActorId;

/// Stops singleton `actor`, started under lease `epoch`, as soon as its node can no longer be
/// sure that lease is alive: before etcd can expire it and the controller start another
/// instance elsewhere. A lease known lost, or replaced by a new one (the node was declared
/// down while it was frozen, and registered again), stops it at once, whatever the new
/// lease's deadline says.
pub(crate) async fn guard_singleton(weak: Weak<NodeShared>, actor: ActorId, epoch: u64) {
    let origin = Instant::now();
    loop {
        let Some(node) = weak.upgrade() else { return };
        if !read(&node.actors).contains(actor) {
            return;
        }
        let replaced = node.lease.get().is_some_and(|clock| {
            let lease = clock.lease();
            lease.lost || lease.epoch != epoch
        });
        if replaced {
            tracing::warn!(node = %node.info.id, %actor, "singleton stopped: the lease it was started under is gone (this node was declared down)");
            node.stop_local(actor);
            return;
        }
        let deadline = node
            .discovery
            .lease_deadline(&node.info.cluster, &node.info.id)
            .map(|at| at.saturating_duration_since(origin));
        match guard(deadline, origin.elapsed(), MARGIN) {
            // No lease (in-process discovery): nothing to guard against.
            Guard::Unguarded => return,
            Guard::Stop => {
                tracing::warn!(node = %node.info.id, %actor, "singleton stopped: this node may be cut off from etcd");
                node.stop_local(actor);
                return;
            }
            Guard::CheckAt(at) => {
                drop(node);
                tokio::time::sleep_until((origin + at).into()).await;
            }
        }
    }
}
