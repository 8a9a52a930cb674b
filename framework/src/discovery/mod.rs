//! Discovery: who is in the cluster, where they listen, and which actor holds which name.
//!
//! [`Discovery`] is the one trait every backend implements. The embedded [`MemoryDiscovery`] is
//! shared by the nodes of one process (demos and fast tests); the etcd backend implements the
//! same trait. The trait is shaped for a store with leases and revisions:
//!
//! - [`Discovery::join`] registers the node (bound to a lease in etcd) and returns the current
//!   view *with its revision* plus a stream of every change after that revision, so a node never
//!   misses or double-counts a change;
//! - everything a node registers (its entry, its names) belongs to it and disappears when it
//!   leaves or is declared down;
//! - names are registered with compare-and-set semantics: a taken name is an error, never
//!   silently overwritten.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::error::Error;
use crate::id::{ActorId, NodeId};

#[cfg(feature = "etcd")]
pub mod etcd;
mod memory;

#[cfg(feature = "etcd-tls")]
pub use etcd::EtcdTls;
#[cfg(feature = "etcd")]
pub use etcd::{EtcdConfig, EtcdDiscovery};
pub use memory::MemoryDiscovery;

/// A boxed future returned by [`Discovery`] methods.
pub type DiscoveryFuture<'a, T> =
    Pin<Box<dyn std::future::Future<Output = Result<T, Error>> + Send + 'a>>;

/// What a node publishes about itself. Serialized as JSON where a backend stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's id, unique among live members.
    pub id: NodeId,
    /// The cluster the node belongs to.
    pub cluster: String,
    /// The address other nodes connect to.
    pub addr: SocketAddr,
    /// The wire protocol version the node speaks.
    pub protocol: u32,
    /// The actormesh version the node runs.
    pub version: String,
    /// Operator-chosen labels (zone, role…), used by placement.
    pub labels: BTreeMap<String, String>,
    /// When the node started, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// The actor types other nodes (and the controller) may spawn here.
    #[serde(default)]
    pub spawnable: Vec<String>,
}

/// A change of membership, in the order discovery saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MembershipEvent {
    /// A node joined (or re-registered after an outage).
    Up(NodeInfo),
    /// A node left gracefully.
    Left(NodeId),
    /// A node was declared down (its lease expired, or it was removed without leaving).
    Down(NodeId),
}

impl MembershipEvent {
    /// The node the event is about.
    pub fn node(&self) -> &NodeId {
        match self {
            MembershipEvent::Up(info) => &info.id,
            MembershipEvent::Left(id) | MembershipEvent::Down(id) => id,
        }
    }
}

/// The view a node receives when it joins: the members at `revision`, and every change after.
#[derive(Debug)]
pub struct Membership {
    /// The revision of the snapshot; events carry later revisions.
    pub revision: u64,
    /// The members at `revision`, the joining node included.
    pub members: Vec<NodeInfo>,
    /// Every change after `revision`, with its revision, in order.
    pub events: mpsc::UnboundedReceiver<(u64, MembershipEvent)>,
}

/// Where a named actor lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameEntry {
    /// The node that runs the actor and owns the name.
    pub node: NodeId,
    /// That node's address.
    pub addr: SocketAddr,
    /// The actor.
    pub actor: ActorId,
    /// The actor's declared type name.
    pub actor_type: String,
}

/// What a node reports about its load, periodically, for placement decisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Actors running on the node.
    pub actors: u64,
    /// Asks from other nodes being handled right now.
    pub inflight_asks: u64,
    /// Bytes waiting in the node's send queues towards its peers.
    pub send_queue_bytes: u64,
    /// Asks handled per second since the previous report (local and remote).
    pub asks_per_second: f64,
    /// When the report was made, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// One instance of an actor in a named group (see [`GroupRef`](crate::GroupRef)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    /// The node that runs the instance and owns the membership.
    pub node: NodeId,
    /// That node's address.
    pub addr: SocketAddr,
    /// The actor.
    pub actor: ActorId,
    /// The actor's declared type name.
    pub actor_type: String,
    /// Relative capacity, for weighted balancing (default 1).
    pub weight: u32,
}

/// A change of a group's membership.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupEvent {
    /// An instance joined.
    Joined(GroupMember),
    /// An instance left: explicitly, because it stopped, or because its node is gone.
    Left(GroupMember),
}

/// A group's members at `revision` and every change after.
#[derive(Debug)]
pub struct GroupView {
    /// The revision of the snapshot.
    pub revision: u64,
    /// The members at `revision`.
    pub members: Vec<GroupMember>,
    /// Every change after `revision`, in order.
    pub events: mpsc::UnboundedReceiver<(u64, GroupEvent)>,
}

/// The desired state of a group kept by the controller: which actor type, built from which
/// arguments, how many replicas, placed how. Stored as JSON (`specs/{group}` with etcd).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSpec {
    /// The group the replicas join.
    pub group: String,
    /// The [`Spawnable`](crate::Spawnable) actor type (its stable name).
    pub actor_type: String,
    /// The constructor arguments, encoded (see [`GroupSpec::new`]).
    pub args: Vec<u8>,
    /// How many replicas should run.
    pub replicas: u32,
    /// Where new replicas go.
    pub placement: PlacementPolicy,
    /// Only nodes with every one of these labels run replicas.
    pub selector: BTreeMap<String, String>,
    /// Spread replicas across the values of this node label (say `zone`).
    pub anti_affinity: Option<String>,
    /// At most this many replicas on one node.
    pub max_per_node: Option<u32>,
    /// At most one live instance cluster-wide, even across a partition (see
    /// [`controller`](crate::controller)).
    #[serde(default)]
    pub singleton: bool,
    /// Let the controller choose `replicas` from the load, within bounds.
    #[serde(default)]
    pub autoscale: Option<Autoscale>,
}

/// Automatic scaling of a [`GroupSpec`] on its load: the asks in flight on the nodes that
/// run its replicas, per replica, from the nodes' [`LoadReport`]s.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Autoscale {
    /// Never fewer replicas.
    pub min: u32,
    /// Never more replicas.
    pub max: u32,
    /// The asks in flight per replica to aim for.
    pub target_per_replica: f64,
    /// Act only when the load per replica is this fraction above or below the target
    /// (for example 0.25), so that the group does not flap.
    pub hysteresis: f64,
    /// At least this long between two changes, in milliseconds.
    pub cooldown_ms: u64,
}

impl Eq for Autoscale {}

/// The placement policy of a [`GroupSpec`] (see [`placement`](crate::placement)).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlacementPolicy {
    /// The node with the fewest replicas of the group.
    #[default]
    RoundRobin,
    /// The node with the least load.
    LeastLoaded,
    /// Never above the even share.
    Spread,
    /// A policy of your own, registered under this name with
    /// [`NodeBuilder::placement`](crate::NodeBuilder::placement) on every node that may lead
    /// the controller.
    Custom(String),
}

/// A change of the cluster's group specs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpecEvent {
    /// A spec was created or changed.
    Put(GroupSpec),
    /// The spec of this group was removed.
    Removed(String),
}

/// The cluster's group specs and every change after.
#[derive(Debug)]
pub struct SpecView {
    /// The specs now.
    pub specs: Vec<GroupSpec>,
    /// Every change after, in order.
    pub events: mpsc::UnboundedReceiver<(u64, SpecEvent)>,
}

/// Leadership of a cluster (for its controller), won with [`Discovery::campaign`].
#[derive(Debug)]
pub struct Leadership {
    /// The fencing token: every new leader of the cluster gets a larger one. A party that
    /// acts for a leader checks the token against [`Discovery::leader`] and refuses an older
    /// one, so a deposed leader cannot act.
    pub token: u64,
    /// Turns `true` when the leadership is lost (the node left or was declared down, or its
    /// lease expired).
    pub lost: tokio::sync::watch::Receiver<bool>,
}

/// A discovery backend. See the [module docs](self) for the contract.
pub trait Discovery: Send + Sync + fmt::Debug + 'static {
    /// Registers `me` and returns the view and its change stream.
    ///
    /// Fails with [`Error::NodeIdTaken`] when a live node of the same cluster has the id.
    fn join<'a>(&'a self, me: &'a NodeInfo) -> DiscoveryFuture<'a, Membership>;

    /// Removes the node and everything it owns at once.
    fn leave<'a>(&'a self, cluster: &'a str, node: &'a NodeId) -> DiscoveryFuture<'a, ()>;

    /// Registers `name` for `entry`, owned by `entry.node`.
    ///
    /// Fails with [`Error::NameTaken`] when another actor holds the name; registering the
    /// same entry twice succeeds.
    fn register_name<'a>(
        &'a self,
        cluster: &'a str,
        name: &'a str,
        entry: &'a NameEntry,
    ) -> DiscoveryFuture<'a, ()>;

    /// Removes `name` if, and only if, it is still held by `entry`.
    fn unregister_name<'a>(
        &'a self,
        cluster: &'a str,
        name: &'a str,
        entry: &'a NameEntry,
    ) -> DiscoveryFuture<'a, ()>;

    /// Finds the actor registered under `name`.
    fn lookup_name<'a>(
        &'a self,
        cluster: &'a str,
        name: &'a str,
    ) -> DiscoveryFuture<'a, Option<NameEntry>>;

    /// Adds `member` to `group`, owned by `member.node` (it leaves with its node).
    fn join_group<'a>(
        &'a self,
        cluster: &'a str,
        group: &'a str,
        member: &'a GroupMember,
    ) -> DiscoveryFuture<'a, ()>;

    /// Removes `member` from `group`.
    fn leave_group<'a>(
        &'a self,
        cluster: &'a str,
        group: &'a str,
        member: &'a GroupMember,
    ) -> DiscoveryFuture<'a, ()>;

    /// The members of `group` and every change after, as for [`Discovery::join`].
    fn watch_group<'a>(
        &'a self,
        cluster: &'a str,
        group: &'a str,
    ) -> DiscoveryFuture<'a, GroupView>;

    /// Creates or replaces the spec of `spec.group` (not bound to any node's lease: desired
    /// state outlives the nodes).
    fn put_spec<'a>(&'a self, cluster: &'a str, spec: &'a GroupSpec) -> DiscoveryFuture<'a, ()>;

    /// The group specs of `cluster` and every change after.
    fn watch_specs<'a>(&'a self, cluster: &'a str) -> DiscoveryFuture<'a, SpecView>;

    /// Waits until `node` (registered with [`Discovery::join`]) leads `cluster`. Only one
    /// node leads at a time; when the leader goes, one of the waiting nodes takes over with a
    /// larger token. Drop the future to stop campaigning.
    fn campaign<'a>(
        &'a self,
        cluster: &'a str,
        node: &'a NodeId,
    ) -> DiscoveryFuture<'a, Leadership>;

    /// The latest load report of every node of `cluster` that published one.
    fn loads<'a>(&'a self, cluster: &'a str) -> DiscoveryFuture<'a, BTreeMap<NodeId, LoadReport>>;

    /// Until when `node`'s registration is certainly alive: its last renewal that etcd
    /// confirmed, counted from when it was sent, plus the TTL. `None` when the backend has no
    /// leases (memory discovery) or the node is not registered here.
    fn lease_deadline(&self, _cluster: &str, _node: &NodeId) -> Option<std::time::Instant> {
        None
    }

    /// The current leader of `cluster` and its token, if any.
    fn leader<'a>(&'a self, cluster: &'a str) -> DiscoveryFuture<'a, Option<(NodeId, u64)>>;

    /// Publishes the latest load report of `node` (owned by the node, replaced each time).
    fn report_load<'a>(
        &'a self,
        cluster: &'a str,
        node: &'a NodeId,
        load: &'a LoadReport,
    ) -> DiscoveryFuture<'a, ()>;
}
