//! What a node holds anyway, read into its metrics at each scrape: drops, members, link
//! queues, entity shards, load.

use std::fmt;
use std::sync::Weak;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;

use crate::metrics::gauge_family;
use crate::runtime::{lock, read, NodeShared};
use crate::stats::DropReason;

/// The collector of a node's state.
pub(crate) struct Snapshot(pub(crate) Weak<NodeShared>);

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Snapshot")
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let Some(node) = self.0.upgrade() else {
            return Ok(());
        };
        let stats = node.stats.snapshot();
        {
            let mut metric = encoder.encode_descriptor(
                "dropped",
                "Messages this node dropped, by reason (each is also logged)",
                None,
                MetricType::Counter,
            )?;
            for reason in DropReason::ALL {
                let labels = [("reason", reason.as_str())];
                ConstCounter::new(stats.dropped(reason)).encode(metric.encode_family(&labels)?)?;
            }
        }
        let states = {
            let view = read(&node.view);
            [
                view.members().count() as i64,
                view.departed().count() as i64,
            ]
        };
        gauge_family(
            &mut encoder,
            "members",
            "Cluster members as this node sees them: up, or departed (left or declared down, not back)",
            ["up", "departed"]
                .into_iter()
                .zip(states)
                .map(|(state, n)| ([("state", state)], n)),
        )?;
        let links: Vec<(String, i64)> = lock(&node.peers)
            .iter()
            .map(|(id, link)| (id.to_string(), link.queued_bytes() as i64))
            .collect();
        gauge_family(
            &mut encoder,
            "link_send_queue_bytes",
            "Bytes waiting in the send queue towards each peer",
            links
                .into_iter()
                .map(|(peer, bytes)| ([("peer", peer)], bytes)),
        )?;
        let entities: Vec<_> = read(&node.entities)
            .values()
            .map(|h| (h.kind, h.status(&node.info.id)))
            .collect();
        for (name, help, pick) in [
            (
                "entity_shards_hosted",
                "Shards of the entity type hosted on this node",
                (|s: &crate::core::shard::EntityStatus| s.hosted_here as i64)
                    as fn(&crate::core::shard::EntityStatus) -> i64,
            ),
            (
                "entity_shards_in_motion",
                "Shards of the entity type being taken, drained or released on this node",
                |s| s.in_motion_here as i64,
            ),
            (
                "entity_activations",
                "Active entities of the type on this node",
                |s| s.activations as i64,
            ),
            (
                "entity_waiting_messages",
                "Messages for the entity type waiting for a shard to settle",
                |s| s.waiting as i64,
            ),
        ] {
            gauge_family(
                &mut encoder,
                name,
                help,
                entities
                    .iter()
                    .map(|(kind, s)| ([("kind", *kind)], pick(s))),
            )?;
        }
        let (load, _) = node.load_report(0, Duration::from_secs(1));
        gauge_family(
            &mut encoder,
            "actors",
            "Actors running on this node",
            [([("node", node.info.id.to_string())], load.actors as i64)],
        )?;
        gauge_family(
            &mut encoder,
            "inflight_asks",
            "Asks from other nodes being handled on this node",
            [(
                [("node", node.info.id.to_string())],
                load.inflight_asks as i64,
            )],
        )?;
        Ok(())
    }
}
