//! Load reports: what this node publishes about its load, every interval.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use super::{lock, read, NodeShared};
use crate::core::model::LoadReport;

impl NodeShared {
    /// The node's load now; `asks_per_second` over `elapsed` since `asks_before` was read.
    pub(crate) fn load_report(&self, asks_before: u64, elapsed: Duration) -> (LoadReport, u64) {
        let asks = self.asks_handled.load(Ordering::Relaxed);
        let queued: usize = lock(&self.peers).values().map(|l| l.queued_bytes()).sum();
        let report = LoadReport {
            actors: read(&self.actors).len() as u64,
            inflight_asks: self.inflight.load(Ordering::Relaxed) as u64,
            send_queue_bytes: queued as u64,
            asks_per_second: (asks - asks_before) as f64 / elapsed.as_secs_f64().max(1e-3),
            at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        (report, asks)
    }

    /// Publishes a load report every `interval` until the node shuts down.
    pub(crate) async fn report_load(weak: Weak<Self>, interval: Duration) {
        let Some(node) = weak.upgrade() else { return };
        let mut shutdown = node.shutdown_signal();
        let mut asks_before = node.asks_handled.load(Ordering::Relaxed);
        drop(node);
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            let Some(node) = weak.upgrade() else { return };
            let (report, asks) = node.load_report(asks_before, last.elapsed());
            asks_before = asks;
            last = tokio::time::Instant::now();
            if let Err(e) = node
                .discovery
                .report_load(&node.info.cluster, &node.info.id, &report)
                .await
            {
                tracing::debug!(node = %node.info.id, error = %e, "load report not published");
            } else if let Some(m) = &node.metrics {
                m.load_reported();
            }
        }
    }
}
