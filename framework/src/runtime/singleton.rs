//! The singleton guard's shell: stops a singleton replica before its node's lease can expire,
//! as [`core::singleton::guard`](crate::core::singleton::guard) decides.

use std::sync::Weak;
use std::time::Instant;

use super::{read, NodeShared};
use crate::core::singleton::{guard, Guard, MARGIN};
use crate::id::ActorId;

/// Stops singleton `actor` as soon as its node can no longer be sure its lease is alive:
/// before etcd can expire the lease and the controller start another instance elsewhere.
pub(crate) async fn guard_singleton(weak: Weak<NodeShared>, actor: ActorId) {
    let origin = Instant::now();
    loop {
        let Some(node) = weak.upgrade() else { return };
        if !read(&node.actors).contains(actor) {
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
