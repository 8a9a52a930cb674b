//! Prometheus metrics of a node, served as text on the admin listener's `/metrics` (see
//! [`NodeBuilder::admin`](crate::NodeBuilder::admin)).
//!
//! Metrics are off unless the node runs an admin listener: then every send, ask and
//! membership change is counted here, on counters and histograms each thread owns (a load
//! and a store per count, no lock; summed at a scrape). `BENCHMARKS.md` has the cost beside
//! a node without metrics: 29 instructions per local tell, about 630 per remote ask. Values that exist
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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Metric, Registry};

use crate::Error;

/// Ids of the nodes' registries, for the threads' counter caches.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One thread's counter of one message and direction on one node. Only that thread writes it.
#[derive(Debug)]
struct Slot {
    message: &'static str,
    direction: Direction,
    count: AtomicU64,
}

impl Slot {
    #[inline]
    fn bump(&self) {
        add_owned(&self.count, 1);
    }
}

/// Every thread's message counters of one node, read at a scrape.
#[derive(Debug, Default)]
struct MessageCounts {
    slots: Mutex<Vec<Arc<Slot>>>,
}

/// (registry id, message name's address, direction).
type SlotKey = (u64, usize, Direction);

/// The hash of the threads' slot maps. Their keys are registry ids, addresses of static
/// names and small enums, chosen by the program and not by its inputs: a multiply-rotate
/// hash is enough (SipHash cost more than the rest of an ask's metrics).
#[derive(Default)]
struct SlotHasher(u64);

impl std::hash::Hasher for SlotHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A thread's map of slots.
type SlotMap<K, V> =
    std::collections::HashMap<K, Arc<V>, std::hash::BuildHasherDefault<SlotHasher>>;

thread_local! {
    /// The counter this thread used last (hot loops send one message type to one node).
    static LAST: std::cell::RefCell<Option<(SlotKey, Arc<Slot>)>> =
        const { std::cell::RefCell::new(None) };
    /// This thread's counters, by node, message and direction.
    static SLOTS: std::cell::RefCell<SlotMap<SlotKey, Slot>> =
        std::cell::RefCell::new(SlotMap::default());
    /// This thread's ask latencies, by node and message.
    static ASK_SLOTS: std::cell::RefCell<SlotMap<(u64, usize), AskSlot>> =
        std::cell::RefCell::new(SlotMap::default());
}

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

/// Bounded buckets of the ask latency histogram: 50 µs to about 13 s, doubling.
const ASK_BUCKETS: usize = 19;
/// The first bucket's upper bound, in nanoseconds.
const ASK_FIRST_BOUND_NANOS: u64 = 50_000;

/// One thread's ask latencies of one message on one node. Only that thread writes it.
#[derive(Debug)]
struct AskSlot {
    message: &'static str,
    /// Asks per bucket (not cumulative); the last past the largest bound.
    buckets: [AtomicU64; ASK_BUCKETS + 1],
    sum_nanos: AtomicU64,
}

impl AskSlot {
    fn observe(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        add_owned(&self.buckets[ask_bucket(nanos)], 1);
        add_owned(&self.sum_nanos, nanos);
    }
}

/// Adds to a counter only this thread writes: a load and a store, no read-modify-write.
#[inline]
fn add_owned(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// The bucket of an ask that took `nanos`: the first whose upper bound (50 µs × 2^i) is at
/// least that, or the overflow bucket.
fn ask_bucket(nanos: u64) -> usize {
    let q = nanos.saturating_sub(1) / ASK_FIRST_BOUND_NANOS;
    ((u64::BITS - q.leading_zeros()) as usize).min(ASK_BUCKETS)
}

/// Every thread's ask latency slots of one node, read at a scrape.
#[derive(Debug, Default)]
struct AskTimes {
    slots: Mutex<Vec<Arc<AskSlot>>>,
}

/// A node's metrics and the registry `/metrics` encodes.
pub struct NodeMetrics {
    registry: Mutex<Registry>,
    /// Metrics registered by [`NodeMetrics::register_shared`], by name.
    shared: Mutex<std::collections::HashMap<String, Box<dyn std::any::Any + Send + Sync>>>,
    messages: Arc<MessageCounts>,
    /// This registry's id in the threads' caches of message counters.
    id: u64,
    asks: Arc<AskTimes>,
    errors: Family<KindLabels, Counter>,
    membership_events: Family<KindLabels, Counter>,
    decisions: Family<KindLabels, Counter>,
    connects: Family<PeerLabels, Counter>,
    reconnects: Family<PeerLabels, Counter>,
    load_reports: Counter,
    group_desired: Family<GroupLabels, Gauge>,
    group_running: Family<GroupLabels, Gauge>,
    /// Totals for the dashboard's rates: asks, errors.
    totals: [AtomicU64; 2],
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
        let mut registry = Registry::with_prefix("actormesh");
        let asks = Arc::new(AskTimes::default());
        registry.register_collector(Box::new(AsksCollector(asks.clone())));
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
            "Orders the controller gave while this node led, by kind (spawn, retire, put_spec, follow, read_loads, report)",
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
        let messages = Arc::new(MessageCounts::default());
        registry.register_collector(Box::new(MessagesCollector(messages.clone())));
        Arc::new(NodeMetrics {
            registry: Mutex::new(registry),
            shared: Mutex::default(),
            messages,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            asks,
            errors,
            membership_events,
            decisions,
            connects,
            reconnects,
            load_reports,
            group_desired,
            group_running,
            totals: Default::default(),
        })
    }

    /// Adds a collector that reads values at each scrape.
    pub(crate) fn add_collector(&self, collector: impl Collector) {
        lock(&self.registry).register_collector(Box::new(collector));
    }

    pub(crate) fn totals(&self) -> Totals {
        let [asks, errors] = &self.totals;
        let (mut sent, mut received) = (0, 0);
        for slot in lock(&self.messages.slots).iter() {
            let n = slot.count.load(Ordering::Relaxed);
            match slot.direction {
                Direction::Inbound => received += n,
                Direction::Local | Direction::Outbound => sent += n,
            }
        }
        Totals {
            sent,
            received,
            asks: asks.load(Ordering::Relaxed),
            errors: errors.load(Ordering::Relaxed),
        }
    }

    /// Adds `metric` to this node's `/metrics` as `actormesh_{name}` (counters get `_total`
    /// appended by the encoder). For a service's own metrics, and the gateway's.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        lock(&self.registry).register(name, help, metric);
    }

    /// The metric that an earlier call registered under `name`, or `make()`'s, registered now
    /// as [`register`](Self::register) would: for components of which a node may run several
    /// (two gateways on one node count into one family, instead of writing the same metric
    /// twice, which Prometheus refuses). `None` when `name` was shared as another type.
    pub fn register_shared<M: Metric + Clone>(
        &self,
        name: &str,
        help: &str,
        make: impl FnOnce() -> M,
    ) -> Option<M> {
        let mut shared = lock(&self.shared);
        if let Some(existing) = shared.get(name) {
            return existing.downcast_ref::<M>().cloned();
        }
        let metric = make();
        shared.insert(name.to_owned(), Box::new(metric.clone()));
        lock(&self.registry).register(name, help, metric.clone());
        Some(metric)
    }

    /// The metrics in the Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = lock(&self.registry);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }

    /// Counts one message: on the sending thread's own counter (found through a per-thread
    /// cache, the last one used first), so the hot path takes no lock and shares no cache
    /// line with other threads.
    #[inline]
    pub(crate) fn message(&self, message: &'static str, direction: Direction) {
        let key = (self.id, message.as_ptr() as usize, direction);
        let hit = LAST.with(|last| match &*last.borrow() {
            Some((k, slot)) if *k == key => {
                slot.bump();
                true
            }
            _ => false,
        });
        if !hit {
            self.message_slow(key, message, direction);
        }
    }

    #[cold]
    fn message_slow(&self, key: SlotKey, message: &'static str, direction: Direction) {
        let slot = SLOTS.with(|slots| {
            slots
                .borrow_mut()
                .entry(key)
                .or_insert_with(|| {
                    let slot = Arc::new(Slot {
                        message,
                        direction,
                        count: AtomicU64::new(0),
                    });
                    lock(&self.messages.slots).push(slot.clone());
                    slot
                })
                .clone()
        });
        slot.bump();
        LAST.with(|last| *last.borrow_mut() = Some((key, slot)));
    }

    /// Times one ask, on the asking thread's own histogram of its message (no lock, no
    /// shared cache line), and counts its error.
    pub(crate) fn ask_done(&self, message: &'static str, took: Duration, error: Option<&Error>) {
        let key = (self.id, message.as_ptr() as usize);
        ASK_SLOTS.with(|slots| {
            slots
                .borrow_mut()
                .entry(key)
                .or_insert_with(|| {
                    let slot = Arc::new(AskSlot {
                        message,
                        buckets: Default::default(),
                        sum_nanos: AtomicU64::new(0),
                    });
                    lock(&self.asks.slots).push(slot.clone());
                    slot
                })
                .observe(took)
        });
        self.totals[0].fetch_add(1, Ordering::Relaxed);
        if let Some(e) = error {
            self.totals[1].fetch_add(1, Ordering::Relaxed);
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

/// The message counters of every thread, summed per message and direction at a scrape.
#[derive(Debug)]
struct MessagesCollector(Arc<MessageCounts>);

impl Collector for MessagesCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let mut sums: std::collections::BTreeMap<(&'static str, &'static str), u64> =
            Default::default();
        for slot in lock(&self.0.slots).iter() {
            *sums
                .entry((slot.message, slot.direction.as_str()))
                .or_default() += slot.count.load(Ordering::Relaxed);
        }
        let mut metric = encoder.encode_descriptor(
            "messages",
            "Messages sent through actor references (local: to an actor on this node; outbound: to another node) and received from other nodes (inbound), by message name",
            None,
            MetricType::Counter,
        )?;
        for ((message, direction), n) in sums {
            let labels = MessageLabels { message, direction };
            ConstCounter::new(n).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Encodes the ask latency histograms: every thread's slots summed by message.
#[derive(Debug)]
struct AsksCollector(Arc<AskTimes>);

impl Collector for AsksCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let mut sums: std::collections::BTreeMap<&'static str, ([u64; ASK_BUCKETS + 1], u64)> =
            Default::default();
        for slot in lock(&self.0.slots).iter() {
            let (buckets, sum) = sums.entry(slot.message).or_default();
            for (total, b) in buckets.iter_mut().zip(&slot.buckets) {
                *total += b.load(Ordering::Relaxed);
            }
            *sum = sum.wrapping_add(slot.sum_nanos.load(Ordering::Relaxed));
        }
        let mut metric = encoder.encode_descriptor(
            "ask_duration_seconds",
            "Time from sending an ask to its reply or error, by message name",
            None,
            MetricType::Histogram,
        )?;
        for (message, (counts, sum_nanos)) in sums {
            // The count is the buckets' total, so `_count` and the `+Inf` bucket agree even
            // while asks are being timed.
            let count = counts.iter().sum();
            let bounds = (0..ASK_BUCKETS)
                .map(|i| (ASK_FIRST_BOUND_NANOS << i) as f64 / 1e9)
                .chain([f64::INFINITY]);
            let buckets: Vec<(f64, u64)> = bounds.zip(counts).collect();
            metric
                .encode_family(&AskLabels { message })?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    sum_nanos as f64 / 1e9,
                    count,
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }
}

/// A gauge family with constant values, for collectors that read state at a scrape.
pub(crate) fn gauge_family<L: EncodeLabelSet>(
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ask_buckets_are_the_first_bound_at_least_the_time() {
        assert_eq!(ask_bucket(0), 0);
        assert_eq!(ask_bucket(50_000), 0);
        assert_eq!(ask_bucket(50_001), 1);
        assert_eq!(ask_bucket(100_000), 1);
        assert_eq!(ask_bucket(100_001), 2);
        assert_eq!(ask_bucket(50_000 << 18), 18);
        assert_eq!(ask_bucket((50_000 << 18) + 1), ASK_BUCKETS, "overflow");
        assert_eq!(ask_bucket(u64::MAX), ASK_BUCKETS);
    }

    #[test]
    fn asks_timed_on_several_threads_are_one_histogram_per_message() {
        let metrics = NodeMetrics::new();
        let times = [30u64, 70, 70, 20_000];
        std::thread::scope(|s| {
            for (i, micros) in times.into_iter().enumerate() {
                let metrics = &metrics;
                s.spawn(move || {
                    let error = (i == 3).then_some(Error::Timeout {
                        after: Duration::from_millis(20),
                    });
                    metrics.ask_done("t.Q", Duration::from_micros(micros), error.as_ref());
                });
            }
        });
        metrics.ask_done("t.Other", Duration::from_micros(10), None);
        let text = metrics.encode();
        let line = |l: &str| text.lines().any(|x| x == l);
        let q = |le: &str, n: u64| {
            line(&format!(
                r#"actormesh_ask_duration_seconds_bucket{{message="t.Q",le="{le}"}} {n}"#
            ))
        };
        assert!(q("5e-05", 1) && q("0.0001", 3) && q("0.0128", 3), "{text}");
        assert!(q("0.0256", 4) && q("13.1072", 4) && q("+Inf", 4), "{text}");
        assert_eq!(text.matches(r#"message="t.Q",le="#).count(), 20, "{text}");
        assert!(
            line(r#"actormesh_ask_duration_seconds_count{message="t.Q"} 4"#),
            "{text}"
        );
        assert!(
            line(r#"actormesh_ask_duration_seconds_sum{message="t.Q"} 0.02017"#),
            "{text}"
        );
        assert!(
            line(r#"actormesh_ask_duration_seconds_count{message="t.Other"} 1"#),
            "{text}"
        );
        assert!(
            line(r#"actormesh_ask_errors_total{kind="timeout"} 1"#),
            "{text}"
        );
    }
}
