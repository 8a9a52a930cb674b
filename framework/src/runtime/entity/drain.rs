//! Handing every hosted shard over before a graceful shutdown: the node withdraws as a
//! host, the controller assigns its shards elsewhere, the node drains each (its activations
//! finish their queued messages and stop), releases it, and forwards what arrived meanwhile
//! to the new owner.

use std::sync::Arc;

use crate::core::shard::host::Local;
use crate::runtime::{lock, read, NodeShared};

impl NodeShared {
    /// Withdraws from every hosted entity type and waits, until `deadline`, for every shard
    /// to be handed over. Returns how many shards were still held at the deadline.
    pub(crate) async fn drain_entities(self: &Arc<Self>, deadline: tokio::time::Instant) -> usize {
        let hosts: Vec<_> = read(&self.entities)
            .values()
            .filter(|h| h.hosts())
            .cloned()
            .collect();
        if hosts.is_empty() {
            return 0;
        }
        for host in &hosts {
            lock(&host.state).withdrawn = true;
            if let Err(e) = self
                .discovery
                .unregister_entity_host(&self.info.cluster, host.kind, &self.info.id)
                .await
            {
                tracing::warn!(node = %self.info.id, kind = host.kind, error = %e, "could not withdraw as an entity host; its shards move when this node leaves");
            }
            host.kick.notify_one();
        }
        let held = || -> usize {
            hosts
                .iter()
                .map(|h| {
                    let st = lock(&h.state);
                    let assigned_here =
                        st.assignment.as_ref().map_or(0, |a| a.count(&self.info.id));
                    let held = st.shards.iter().filter(|s| s.local != Local::Idle).count();
                    held.max(assigned_here)
                })
                .sum()
        };
        let send_unrouted = || {
            for host in &hosts {
                let unrouted = host.take_unrouted();
                host.resubmit(self, unrouted);
            }
        };
        tracing::info!(node = %self.info.id, shards = held(), "handing entity shards over");
        loop {
            let waits: Vec<_> = hosts.iter().map(|h| h.changed.notified()).collect();
            let left = held();
            if left == 0 {
                // What waited for the new assignment goes to the new hosts now (the links
                // are drained before the node leaves).
                send_unrouted();
                return 0;
            }
            let any = futures_util::future::select_all(waits.into_iter().map(Box::pin));
            if tokio::time::timeout_at(deadline, any).await.is_err() {
                tracing::warn!(node = %self.info.id, shards = left, "shutdown deadline reached with entity shards not handed over; they move when this node's registration goes");
                // What waited goes where this node's view sends it now rather than nowhere.
                send_unrouted();
                return held();
            }
        }
    }
}
