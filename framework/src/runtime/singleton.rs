//! The singleton guard: stops a singleton replica before its node's lease can expire.

use std::sync::Weak;
use std::time::Duration;

use super::{read, NodeShared};
use crate::id::ActorId;

/// Stops singleton `actor` as soon as its node can no longer be sure its lease is alive:
/// before etcd can expire the lease and the controller start another instance elsewhere.
pub(crate) async fn guard_singleton(weak: Weak<NodeShared>, actor: ActorId) {
    const MARGIN: Duration = Duration::from_millis(300);
    loop {
        let Some(node) = weak.upgrade() else { return };
        if !read(&node.actors).contains(actor) {
            return;
        }
        let Some(deadline) = node
            .discovery
            .lease_deadline(&node.info.cluster, &node.info.id)
        else {
            // No lease (in-process discovery): nothing to guard against.
            return;
        };
        let stop_at = deadline.checked_sub(MARGIN).unwrap_or(deadline);
        if std::time::Instant::now() >= stop_at {
            tracing::warn!(node = %node.info.id, %actor, "singleton stopped: this node may be cut off from etcd");
            node.stop_local(actor);
            return;
        }
        drop(node);
        let wait = stop_at.saturating_duration_since(std::time::Instant::now());
        tokio::time::sleep(wait.min(Duration::from_millis(200))).await;
    }
}
