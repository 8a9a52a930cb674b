//! Graceful shutdown: drain, leave discovery, stop actors, close links.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use super::{lock, read, NodeShared};

impl NodeShared {
    pub(crate) async fn shutdown(self: &Arc<Self>) {
        self.draining.store(true, Ordering::Release);
        if self.shutdown_started.swap(true, Ordering::AcqRel) {
            // Another call drains: wait for it to finish.
            let mut stopped = self.shutdown_signal();
            let _ = stopped.wait_for(|s| *s).await;
            return;
        }
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        let deadline = tokio::time::Instant::now() + self.config.shutdown_timeout;
        // 0. Hand hosted entity shards over (their activations finish their queued messages),
        //    still serving everything meanwhile: messages for the moving shards are held and
        //    forwarded to their new hosts.
        self.drain_entities(deadline).await;
        if self.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::info!(node = %self.info.id, "shutting down: draining in-flight asks");
        // 1. Let the asks being handled here finish and their replies leave.
        let drained = tokio::time::timeout_at(deadline, async {
            loop {
                let notified = self.inflight_done.notified();
                if self.inflight.load(Ordering::Acquire) == 0 {
                    break;
                }
                notified.await;
            }
            let inbound: Vec<_> = lock(&self.inbound)
                .iter()
                .filter_map(Weak::upgrade)
                .collect();
            for outbox in inbound {
                outbox.drained().await;
            }
            let links: Vec<_> = lock(&self.peers).values().cloned().collect();
            for link in links {
                link.drained().await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(node = %self.info.id, "shutdown timeout reached with work still in flight");
        }
        // 2. Leave the cluster: peers see Left and fail fast from now on.
        if let Err(e) = self
            .discovery
            .leave(&self.info.cluster, &self.info.id)
            .await
        {
            tracing::warn!(node = %self.info.id, error = %e, "could not leave discovery cleanly");
        }
        // 3. Stop actors, the server and inbound links; close outbound links.
        let _ = self.shutdown_tx.send(true);
        let actors: Vec<_> = read(&self.actors).handles.values().cloned().collect();
        for actor in actors {
            actor.stop();
        }
        let links: Vec<_> = lock(&self.peers).drain().map(|(_, l)| l).collect();
        for link in links {
            link.close();
        }
        tracing::info!(node = %self.info.id, "shut down");
    }
}
