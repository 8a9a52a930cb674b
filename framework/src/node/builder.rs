//! Configuring and starting a [`Node`].

use crate::transport::tls::LinkTls;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, watch, Notify};

use super::Node;
use crate::context::spawn_from_wire;
use crate::context::Spawnable;
use crate::core::view::MembershipView;
use crate::core::wire::PROTOCOL_VERSION;
use crate::discovery::{Discovery, MemoryDiscovery, NodeInfo};
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::runtime::{read, write, ActorTable, Config, NodeShared, SpawnFn};
use crate::stats::Stats;
use crate::transport::link::LinkConfig;

/// Configures a [`Node`]; [`NodeBuilder::start`] starts it.
///
/// Values given with [`NodeBuilder::data`], by type.
#[derive(Default)]
struct DataMap(HashMap<std::any::TypeId, Arc<dyn std::any::Any + Send + Sync>>);

impl std::fmt::Debug for DataMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} value(s)", self.0.len())
    }
}

/// Every setting has a default: a random node id, cluster `actormesh`, listening on
/// `127.0.0.1` with a port chosen by the system, and a private [`MemoryDiscovery`] (a cluster of
/// one, unless you hand the same discovery to several nodes).
#[derive(Debug)]
pub struct NodeBuilder {
    cluster: String,
    node_id: Option<NodeId>,
    listen: SocketAddr,
    advertise: Option<SocketAddr>,
    discovery: Option<Arc<dyn Discovery>>,
    labels: BTreeMap<String, String>,
    spawnables: HashMap<&'static str, SpawnFn>,
    data: DataMap,
    placements: HashMap<String, Arc<dyn crate::core::placement::Placement>>,
    ask_timeout: Duration,
    connect_timeout: Duration,
    shutdown_timeout: Duration,
    max_clock_skew: Duration,
    max_frame: usize,
    send_queue_bytes: usize,
    load_interval: Duration,
    controller: Option<bool>,
    tls: Option<LinkTls>,
    insecure_links: bool,
    max_connections: usize,
    handshake_timeout: Duration,
    admin: Option<SocketAddr>,
    /// Hosted entity types (`NodeBuilder::entity`, in `entity/mod.rs`).
    pub(crate) entities: Vec<(
        &'static str,
        crate::runtime::entity::KindConfig,
        Arc<dyn crate::runtime::entity::Activator>,
    )>,
}

impl NodeBuilder {
    pub(crate) fn new() -> Self {
        NodeBuilder {
            cluster: "actormesh".to_owned(),
            node_id: None,
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            advertise: None,
            discovery: None,
            labels: BTreeMap::new(),
            spawnables: HashMap::new(),
            data: DataMap::default(),
            placements: HashMap::new(),
            ask_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            shutdown_timeout: Duration::from_secs(5),
            max_clock_skew: Duration::from_millis(500),
            max_frame: 4 * 1024 * 1024,
            send_queue_bytes: 64 * 1024 * 1024,
            load_interval: Duration::from_secs(5),
            controller: None,
            tls: None,
            insecure_links: false,
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(5),
            admin: None,
            entities: Vec::new(),
        }
    }

    /// Secures every link of this node with mutual TLS (see [`LinkTls`]): the node presents
    /// its certificate, which must name its node id (so set [`node_id`](Self::node_id)), and
    /// accepts only peers whose certificate is signed by the same CA and names the node id
    /// they claim. Every node of a cluster must use TLS, or none.
    ///
    /// A node on a discovery that spans machines (etcd) refuses to start without it unless
    /// [`insecure_links`](Self::insecure_links) says otherwise.
    pub fn tls(mut self, tls: LinkTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Runs plaintext links (h2c) on a discovery that spans machines (etcd), for development
    /// only: anyone who can reach the node's port can then send its actors any message. Logged
    /// at `WARN` when the node starts. The in-process [`MemoryDiscovery`] needs no opt-out.
    pub fn insecure_links(mut self) -> Self {
        self.insecure_links = true;
        self
    }

    /// The most connections the node keeps open at once, links and connections still in
    /// their handshake together (default 1,024); more are closed at once, with a log line.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections.max(1);
        self
    }

    /// How long a new connection may take to become a link, TLS handshake included (default
    /// 5 s); a connection that sends nothing, or anything but a valid link handshake, is
    /// closed then.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Gives the node a value its actors can read with [`Node::data`] (one value per type; a
    /// second call with the same type replaces the first).
    ///
    /// This is how process-local dependencies (a database pool, a configuration, a client)
    /// reach actors that the node builds itself: deployed replicas, supervised restarts and
    /// `spawn_on` from other nodes, whose constructor arguments travel over the wire and so
    /// cannot carry them. Read them in [`Spawnable::from_args`](crate::Spawnable::from_args)
    /// through [`SpawnContext::node`](crate::SpawnContext::node).
    pub fn data<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.data
            .0
            .insert(std::any::TypeId::of::<T>(), Arc::new(value));
        self
    }

    /// The cluster's name. Nodes of different clusters never talk to each other.
    pub fn cluster(mut self, name: impl Into<String>) -> Self {
        self.cluster = name.into();
        self
    }

    /// This node's id (default: random). Must be unique among the cluster's live nodes.
    pub fn node_id(mut self, id: impl Into<NodeId>) -> Self {
        self.node_id = Some(id.into());
        self
    }

    /// The address to listen on; port 0 lets the system choose (see [`Node::addr`]).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// The address other nodes connect to, when it differs from the listen address (NAT,
    /// containers, listening on `0.0.0.0`).
    pub fn advertise(mut self, addr: SocketAddr) -> Self {
        self.advertise = Some(addr);
        self
    }

    /// The discovery backend. Hand clones of one [`MemoryDiscovery`] to nodes of one process.
    pub fn discovery(mut self, discovery: impl Discovery) -> Self {
        self.discovery = Some(Arc::new(discovery));
        self
    }

    /// A label published with the node (for example `zone=eu-1`).
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Lets other nodes spawn actors of type `A` here with [`Node::spawn_on`].
    pub fn spawnable<A: Spawnable>(mut self) -> Self {
        self.spawnables.insert(A::NAME, spawn_from_wire::<A>);
        self
    }

    /// Registers a placement policy of your own under `name`, for group specs with
    /// [`PlacementPolicy::Custom`](crate::PlacementPolicy::Custom). Register it on every node
    /// that may lead the controller.
    pub fn placement(
        mut self,
        name: impl Into<String>,
        policy: impl crate::core::placement::Placement,
    ) -> Self {
        self.placements.insert(name.into(), Arc::new(policy));
        self
    }

    /// The timeout of [`ActorRef::ask`](crate::ActorRef::ask) and of remote spawns
    /// (default 5 s).
    pub fn ask_timeout(mut self, timeout: Duration) -> Self {
        self.ask_timeout = timeout;
        self
    }

    /// How long a connection attempt to a peer may take (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long [`Node::shutdown`] waits for in-flight work (default 5 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How far the wall clocks of two nodes may disagree (default 500 ms).
    ///
    /// Every remote ask carries its caller's deadline as a wall-clock time, so that an ask
    /// that waited in a kernel buffer or in a frozen node (a stopped process, a VM paused)
    /// past the moment its caller gave up is not started late: the receiver drops it
    /// unhandled. The receiver reads that deadline on its own clock and allows this much
    /// disagreement: work may start at most this long after its caller gave up, and an ask is
    /// dropped early only if the clocks differ by more. Keep the nodes' clocks synchronised
    /// (NTP, chrony) well within it.
    pub fn max_clock_skew(mut self, skew: Duration) -> Self {
        self.max_clock_skew = skew;
        self
    }

    /// The largest frame (and so the largest single message) sent or accepted, in bytes
    /// (default 4 MiB). Set the same value on every node.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame = bytes.max(1024);
        self
    }

    /// How many bytes may wait in the send queue towards one peer (default 64 MiB). When the
    /// queue is full, `tell` fails with [`Error::MailboxFull`] and hands the message back, and
    /// `ask` fails with the same error.
    pub fn send_queue_bytes(mut self, bytes: usize) -> Self {
        self.send_queue_bytes = bytes;
        self
    }

    /// How often the node publishes its [`LoadReport`](crate::LoadReport) to discovery
    /// (default 5 s). One write per node per interval, whatever the cluster's size.
    pub fn load_report_interval(mut self, interval: Duration) -> Self {
        self.load_interval = interval.max(Duration::from_millis(100));
        self
    }

    /// Makes this node a candidate for the cluster's controller, which keeps deployed groups
    /// at their desired state (see [`controller`](crate::controller)) and assigns the shards
    /// of keyed entities; default off, except on a node that hosts an entity type
    /// ([`entity`](Self::entity)), where it is on unless set here.
    pub fn controller(mut self, enabled: bool) -> Self {
        self.controller = Some(enabled);
        self
    }

    /// Runs an admin HTTP listener on `addr`: Prometheus metrics at `/metrics`, `/healthz`,
    /// `/readyz`, the cluster's status in JSON at `/status`, a live dashboard at `/`, and
    /// `POST /drain` (see the [`admin` listener's table](crate::metrics) and the book's
    /// "Operating a cluster"). Metrics are recorded only on a node with an admin listener.
    ///
    /// Port 0 picks a free port ([`Node::admin_addr`] tells which). When `addr`'s IP is
    /// unspecified (`0.0.0.0`), other nodes and the CLI are told the node's advertised IP
    /// with the admin port. The listener has no authentication: keep it on a private network.
    pub fn admin(mut self, addr: SocketAddr) -> Self {
        self.admin = Some(addr);
        self
    }

    /// Binds the listener, starts the transport, joins discovery and returns the node.
    ///
    /// Must run inside an actix system (`#[actix::main]`, `#[actix::test]`): the node's
    /// actors run on the arbiter that calls this.
    pub async fn start(mut self) -> Result<Node> {
        let entities = std::mem::take(&mut self.entities);
        let run_controller = self.controller.unwrap_or(!entities.is_empty());
        let arbiter = actix_rt::Arbiter::try_current().ok_or_else(|| {
            Error::Start(
                "no actix arbiter here: start the node inside an actix system (#[actix::main] or #[actix::test])"
                    .to_owned(),
            )
        })?;
        crate::transport::listener::raise_open_files_limit();
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .map_err(|e| Error::Start(format!("cannot listen on {}: {e}", self.listen)))?;
        let bound = listener
            .local_addr()
            .map_err(|e| Error::Start(format!("no local address: {e}")))?;
        let addr = match self.advertise {
            Some(addr) => addr,
            None if bound.ip().is_unspecified() => {
                return Err(Error::Start(format!(
                    "listening on {bound}: set `advertise` to the address other nodes should use"
                )))
            }
            None => bound,
        };
        let admin = match self.admin {
            Some(at) => {
                let listener = tokio::net::TcpListener::bind(at).await.map_err(|e| {
                    Error::Start(format!("cannot listen for the admin listener on {at}: {e}"))
                })?;
                let bound = listener
                    .local_addr()
                    .map_err(|e| Error::Start(format!("no local admin address: {e}")))?;
                let shown = if bound.ip().is_unspecified() {
                    SocketAddr::new(addr.ip(), bound.port())
                } else {
                    bound
                };
                Some((listener, shown))
            }
            None => None,
        };
        let metrics = admin.as_ref().map(|_| crate::metrics::NodeMetrics::new());
        let id = self.node_id.unwrap_or_else(NodeId::random);
        let info = NodeInfo {
            id: id.clone(),
            cluster: self.cluster.clone(),
            addr,
            protocol: PROTOCOL_VERSION,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            labels: self.labels,
            started_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            spawnable: self.spawnables.keys().map(|k| (*k).to_owned()).collect(),
            admin: admin.as_ref().map(|(_, shown)| *shown),
        };
        let discovery = self
            .discovery
            .unwrap_or_else(|| Arc::new(MemoryDiscovery::new()));
        match &self.tls {
            Some(tls) => tls.check_own_name(&id)?,
            None if discovery.spans_machines() && !self.insecure_links => {
                return Err(Error::Start(format!(
                    "node {id} uses a discovery that spans machines but its links have no TLS: anyone who can reach {addr} could send its actors any message. Configure `NodeBuilder::tls` (see the book's 'Securing a cluster'), or call `NodeBuilder::insecure_links()` for development"
                )));
            }
            None if discovery.spans_machines() => {
                tracing::warn!(node = %id, %addr, "INSECURE: links are plaintext and unauthenticated (NodeBuilder::insecure_links); anyone who can reach this address can send this node's actors any message. For development only");
            }
            None => {}
        }
        let stats = Arc::new(Stats::default());
        let link_config = Arc::new(LinkConfig {
            tls: self.tls.clone(),
            local: id.clone(),
            cluster: self.cluster.clone(),
            connect_timeout: self.connect_timeout,
            max_frame: self.max_frame,
            send_queue_bytes: self.send_queue_bytes,
            stats: stats.clone(),
            metrics: metrics.clone(),
        });
        let (shutdown_tx, _) = watch::channel(false);
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(NodeShared {
            info: info.clone(),
            config: Config {
                ask_timeout: self.ask_timeout,
                load_interval: self.load_interval,
                max_frame: self.max_frame,
                send_queue_bytes: self.send_queue_bytes,
                shutdown_timeout: self.shutdown_timeout,
                max_clock_skew: self.max_clock_skew,
                tls: self.tls,
                listen: crate::transport::listener::Limits {
                    max_connections: self.max_connections,
                    handshake_timeout: self.handshake_timeout,
                },
            },
            link_config,
            stats,
            discovery: discovery.clone(),
            actors: RwLock::new(ActorTable::default()),
            next_actor: AtomicU64::new(1),
            peers: Mutex::new(HashMap::new()),
            view: RwLock::new(MembershipView::new(id.clone(), [])),
            declarations: RwLock::new(HashMap::new()),
            spawnables: self.spawnables,
            data: self.data.0,
            placements: self.placements,
            arbiter,
            stopping: AtomicBool::new(false),
            shutdown_tx,
            inflight: AtomicUsize::new(0),
            inflight_done: Notify::new(),
            inbound: Mutex::new(Vec::new()),
            starts: Mutex::new(HashMap::new()),
            asks_handled: AtomicU64::new(0),
            events,
            lease: std::sync::OnceLock::new(),
            entities: RwLock::new(
                entities
                    .into_iter()
                    .map(|(kind, config, activator)| {
                        // A node whose labels do not match the selector only sends.
                        let hosts = config
                            .selector
                            .iter()
                            .all(|(k, v)| info.labels.get(k) == Some(v));
                        let host = crate::runtime::entity::KindHost::new(
                            kind,
                            config,
                            hosts.then_some(activator),
                        );
                        (kind, Arc::new(host))
                    })
                    .collect(),
            ),
            held: Mutex::new(Default::default()),
            metrics,
            draining: AtomicBool::new(false),
            shutdown_started: AtomicBool::new(false),
            drain_requested: Notify::new(),
            drain_waiters: AtomicUsize::new(0),
        });
        crate::runtime::local::install(&shared);
        crate::runtime::panics::install_hook();
        let membership = match discovery.join(&info).await {
            Ok(m) => m,
            Err(e) => {
                let _ = shared.shutdown_tx.send(true);
                return Err(e);
            }
        };
        // Links are stamped with the lease they are accepted under: serve once it is known
        // (peers that connect meanwhile wait in the listener's backlog).
        if let Some(clock) = discovery.lease_clock(&info.cluster, &id) {
            let _ = shared.lease.set(clock);
        }
        crate::transport::server::serve(shared.clone(), listener);
        *write(&shared.view) = MembershipView::new(id.clone(), membership.members);
        // After the first view: the admin listener's list of nodes starts from it.
        if let Some((listener, shown)) = admin {
            crate::admin::serve(&shared, listener);
            tracing::info!(node = %id, admin = %shown, "admin listener: /metrics /healthz /readyz /status, dashboard at /");
        }
        let weak = Arc::downgrade(&shared);
        let mut events = membership.events;
        tokio::spawn(async move {
            while let Some((_revision, event)) = events.recv().await {
                let Some(node) = weak.upgrade() else { return };
                node.apply(event);
            }
        });
        tokio::spawn(NodeShared::report_load(
            Arc::downgrade(&shared),
            shared.config.load_interval,
        ));
        if run_controller {
            tokio::spawn(crate::runtime::controller::run(Arc::downgrade(&shared)));
        }
        let hosted: Vec<_> = read(&shared.entities).values().cloned().collect();
        for host in hosted {
            crate::runtime::entity::shards::start(&shared, &host);
        }
        tracing::info!(node = %id, cluster = %self.cluster, %addr, "node started");
        Ok(Node { shared })
    }
}
