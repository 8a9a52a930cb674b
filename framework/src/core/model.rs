//! The cluster's data model (no I/O): what nodes publish about themselves, group members,
//! names, load reports, group specs and the events that change them. Discovery backends store
//! these values; the controller, the views and the simulation decide on them.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::id::{ActorId, NodeId};

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
    /// The address of the node's admin listener (metrics, health, status, dashboard), when it
    /// runs one (see [`NodeBuilder::admin`](crate::NodeBuilder::admin)).
    #[serde(default)]
    pub admin: Option<SocketAddr>,
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
