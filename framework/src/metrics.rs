//! Prometheus metrics of a node, served as text on the admin listener's `/metrics` (see
//! [`NodeBuilder::admin`](crate::NodeBuilder::admin)).
//!
//! Metrics are off unless the node runs an admin listener: then every send, ask and
//! membership change is counted here (a few atomic increments and one hash lookup per
//! message; `BENCHMARKS.md` has the cost beside a node without metrics). Values that exist
//! anyway (drops, members, link queues, entity shards, the last load report) are read when
//! Prometheus scrapes, not counted twice.
//!
//! Every name starts with `actormesh_`, counters end in `_total`, durations are in seconds
//! and sizes in bytes. Labels are bounded: message and actor type names (declared in code),
//! group names, entity types, peer node ids and fixed enumerations; never actor ids or
//! entity keys.
//!
//! Services add their own metrics to the same endpoint with [`NodeMetrics::register`]
//! (the gateway registers its request counters and latency histograms there).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Metric, Registry};

use crate::runtime::{lock, read, NodeShared};
use crate::stats::DropReason;
use crate::Error;

/// Where a message went, seen from the node that counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Direction {
    /// Sent to an actor on the same node.
    Local,
    /// Sent to an actor on another node.
    Outbound,
    /// Received from another node.
    Inbound,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Local => "local",
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MessageLabels {
    message: &'static str,
    direction: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AskLabels {
    message: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct GroupLabels {
    group: String,
}

/// The histogram of one message's ask latency: 50 µs to about 13 s, doubling.
fn ask_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

/// A node's metrics and the registry `/metrics` encodes.
pub struct NodeMetrics {
    registry: Mutex<Registry>,
    messages: Family<MessageLabels, Counter>,
    asks: Family<AskLabels, Histogram, fn() -> Histogram>,
    errors: Family<KindLabels, Counter>,
    membership_events: Family<KindLabels, Counter>,
    decisions: Family<KindLabels, Counter>,
    connects: Family<PeerLabels, Counter>,
    reconnects: Family<PeerLabels, Counter>,
    load_reports: Counter,
    group_desired: Family<GroupLabels, Gauge>,
    group_running: Family<GroupLabels, Gauge>,
    node: Arc<OnceLock<Weak<NodeShared>>>,
    /// Totals for the dashboard's rates: sent (local and outbound), received, asks, errors.
    totals: [AtomicU64; 4],
}

/// The totals [`NodeMetrics::totals`] returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) sent: u64,
    pub(crate) received: u64,
    pub(crate) asks: u64,
    pub(crate) errors: u64,
}

impl fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeMetrics").finish_non_exhaustive()
    }
}

impl NodeMetrics {
    pub(crate) fn new() -> Arc<Self> {
        let node = Arc::new(OnceLock::new());
        let mut registry = Registry::with_prefix("actormesh");
        let messages = Family::<MessageLabels, Counter>::default();
        registry.register(
            "messages",
            "Messages sent through actor references (local: to an actor on this node; outbound: to another node) and received from other nodes (inbound), by message name",
            messages.clone(),
        );
        let asks: Family<AskLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(ask_histogram);
        registry.register(
            "ask_duration_seconds",
            "Time from sending an ask to its reply or error, by message name",
            asks.clone(),
        );
        let errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "ask_errors",
            "Asks that failed, by error kind",
            errors.clone(),
        );
        let membership_events = Family::<KindLabels, Counter>::default();
        registry.register(
            "membership_events",
            "Membership changes this node saw (up, down, left)",
            membership_events.clone(),
        );
        let decisions = Family::<KindLabels, Counter>::default();
        registry.register(
            "controller_decisions",
            "Orders the controller gave while this node led (spawn, retire, scale)",
            decisions.clone(),
        );
        let connects = Family::<PeerLabels, Counter>::default();
        registry.register(
            "link_connects",
            "Links to peers established, by peer node",
            connects.clone(),
        );
        let reconnects = Family::<PeerLabels, Counter>::default();
        registry.register(
            "link_reconnects",
            "Links to peers established again after one was lost, by peer node",
            reconnects.clone(),
        );
        let load_reports = Counter::default();
        registry.register(
            "load_reports",
            "Load reports this node published",
            load_reports.clone(),
        );
        let group_desired = Family::<GroupLabels, Gauge>::default();
        registry.register(
            "group_desired_replicas",
            "Replicas the group's spec asks for (groups with a spec)",
            group_desired.clone(),
        );
        let group_running = Family::<GroupLabels, Gauge>::default();
        registry.register(
            "group_running_replicas",
            "Members of the group on live nodes",
            group_running.clone(),
        );
        registry.register_collector(Box::new(Snapshot(node.clone())));
        Arc::new(NodeMetrics {
            registry: Mutex::new(registry),
            messages,
            asks,
            errors,
            membership_events,
            decisions,
            connects,
            reconnects,
            load_reports,
            group_desired,
            group_running,
            node,
            totals: Default::default(),
        })
    }

    /// Lets the scrape read the node's own state (drops, members, links, entities).
    pub(crate) fn attach(&self, node: Weak<NodeShared>) {
        let _ = self.node.set(node);
    }

    pub(crate) fn totals(&self) -> Totals {
        let [sent, received, asks, errors] = &self.totals;
        Totals {
            sent: sent.load(Ordering::Relaxed),
            received: received.load(Ordering::Relaxed),
            asks: asks.load(Ordering::Relaxed),
            errors: errors.load(Ordering::Relaxed),
        }
    }

    /// Adds `metric` to this node's `/metrics` as `actormesh_{name}` (counters get `_total`
    /// appended by the encoder). For a service's own metrics, and the gateway's.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        lock(&self.registry).register(name, help, metric);
    }

    /// The metrics in the Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = lock(&self.registry);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }

    pub(crate) fn message(&self, message: &'static str, direction: Direction) {
        self.messages
            .get_or_create(&MessageLabels {
                message,
                direction: direction.as_str(),
            })
            .inc();
        let total = if direction == Direction::Inbound {
            1
        } else {
            0
        };
        self.totals[total].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn ask_done(&self, message: &'static str, took: Duration, error: Option<&Error>) {
        self.asks
            .get_or_create(&AskLabels { message })
            .observe(took.as_secs_f64());
        self.totals[2].fetch_add(1, Ordering::Relaxed);
        if let Some(e) = error {
            self.totals[3].fetch_add(1, Ordering::Relaxed);
            self.errors
                .get_or_create(&KindLabels { kind: e.kind() })
                .inc();
        }
    }

    pub(crate) fn membership_event(&self, kind: &'static str) {
        self.membership_events
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    pub(crate) fn decision(&self, kind: &'static str) {
        self.decisions.get_or_create(&KindLabels { kind }).inc();
    }

    pub(crate) fn link_connected(&self, peer: &str, again: bool) {
        let labels = PeerLabels {
            peer: peer.to_owned(),
        };
        self.connects.get_or_create(&labels).inc();
        if again {
            self.reconnects.get_or_create(&labels).inc();
        }
    }

    pub(crate) fn load_reported(&self) {
        self.load_reports.inc();
    }

    /// Replaces the groups' desired and running replicas (read from discovery at a scrape).
    pub(crate) fn set_groups(&self, groups: &[(String, Option<u32>, u32)]) {
        self.group_desired.clear();
        self.group_running.clear();
        for (group, desired, running) in groups {
            let labels = GroupLabels {
                group: group.clone(),
            };
            if let Some(d) = desired {
                self.group_desired.get_or_create(&labels).set(i64::from(*d));
            }
            self.group_running
                .get_or_create(&labels)
                .set(i64::from(*running));
        }
    }
}

/// What the node knows anyway, read at each scrape.
struct Snapshot(Arc<OnceLock<Weak<NodeShared>>>);

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Snapshot")
    }
}

fn gauge_family<'a, L: EncodeLabelSet + 'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (L, i64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in values {
        ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let Some(node) = self.0.get().and_then(Weak::upgrade) else {
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

impl Error {
    /// A short, stable name of the error's kind (`timeout`, `node_down`, …), for metrics and
    /// logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Timeout { .. } => "timeout",
            Error::ActorNotFound { .. } => "actor_not_found",
            Error::ActorStopped { .. } => "actor_stopped",
            Error::NodeUnreachable { .. } => "node_unreachable",
            Error::NodeDown { .. } => "node_down",
            Error::NodeFenced { .. } => "node_fenced",
            Error::MailboxFull { .. } => "mailbox_full",
            Error::Codec(_) => "codec",
            Error::MessageTooLarge { .. } => "message_too_large",
            Error::UnknownMessage { .. } => "unknown_message",
            Error::UnknownActorType { .. } => "unknown_actor_type",
            Error::WrongActorType { .. } => "wrong_actor_type",
            Error::HandlerPanicked { .. } => "handler_panicked",
            Error::HandshakeRefused { .. } => "handshake_refused",
            Error::NameNotFound(_) => "name_not_found",
            Error::NameTaken { .. } => "name_taken",
            Error::NotLocal { .. } => "not_local",
            Error::NodeIdTaken(_) => "node_id_taken",
            Error::UnknownGroup(_) => "unknown_group",
            Error::NoInstances { .. } => "no_instances",
            Error::GroupNotReady { .. } => "group_not_ready",
            Error::Overloaded { .. } => "overloaded",
            Error::UnknownNode(_) => "unknown_node",
            Error::Tls(_) => "tls",
            Error::Discovery(_) => "discovery",
            Error::Shutdown => "shutdown",
            Error::Start(_) => "start",
            Error::EntityUnavailable { .. } => "entity_unavailable",
            Error::EntityBufferFull { .. } => "entity_buffer_full",
            Error::StaleActivation { .. } => "stale_activation",
            Error::Store(_) => "store",
        }
    }
}
