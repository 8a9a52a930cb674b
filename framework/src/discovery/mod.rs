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
use std::pin::Pin;

use tokio::sync::mpsc;

pub use crate::core::model::{
    Autoscale, GroupEvent, GroupMember, GroupSpec, LoadReport, MembershipEvent, NameEntry,
    NodeInfo, PlacementPolicy, SpecEvent,
};
pub use crate::core::shard::{Assignment, EntityEvent, ShardOwner};
use crate::error::Error;
use crate::id::NodeId;

#[cfg(feature = "etcd")]
pub mod etcd;
mod lease;
mod memory;

#[cfg(feature = "etcd-tls")]
pub use etcd::EtcdTls;
#[cfg(feature = "etcd")]
pub use etcd::{EtcdConfig, EtcdDiscovery};
pub use lease::{LeaseCheck, LeaseClock};
pub use memory::MemoryDiscovery;

/// A boxed future returned by [`Discovery`] methods.
pub type DiscoveryFuture<'a, T> =
    Pin<Box<dyn std::future::Future<Output = Result<T, Error>> + Send + 'a>>;

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

/// The cluster's group specs and every change after.
#[derive(Debug)]
pub struct SpecView {
    /// The specs now.
    pub specs: Vec<GroupSpec>,
    /// Every change after, in order.
    pub events: mpsc::UnboundedReceiver<(u64, SpecEvent)>,
}

/// An entity type's assignment and shard owners at `revision`, and every change after.
#[derive(Debug)]
pub struct EntityView {
    /// The revision of the snapshot.
    pub revision: u64,
    /// The assignment at `revision`, if the controller has written one.
    pub assignment: Option<Assignment>,
    /// The shards' owners at `revision`.
    pub owners: Vec<ShardOwner>,
    /// Every change after `revision`, in order.
    pub events: mpsc::UnboundedReceiver<(u64, EntityEvent)>,
}

/// The error of a backend that does not implement an optional read (`what`, say "listing
/// names").
fn not_supported(what: &str) -> Error {
    Error::Discovery(format!("{what} is not supported by this discovery backend"))
}

/// The error of a backend that does not keep keyed entities.
fn no_entities() -> Error {
    Error::Discovery("this discovery backend does not support keyed entities".to_owned())
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

    /// Every name registered in `cluster`, with the actor each points to, sorted by name: a
    /// read of the store as it is now, no watch (what an operator lists; nodes resolve names
    /// one at a time with [`lookup_name`](Self::lookup_name)).
    ///
    /// Optional: the default fails with [`Error::Discovery`] saying that the backend does not
    /// support it, so a backend written before this method still compiles. The memory and
    /// etcd backends implement it.
    fn read_names<'a>(
        &'a self,
        _cluster: &'a str,
    ) -> DiscoveryFuture<'a, Vec<(String, NameEntry)>> {
        Box::pin(async { Err(not_supported("listing names")) })
    }

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

    /// The group specs of `cluster` as the store holds them now (a read, no watch).
    fn read_specs<'a>(&'a self, cluster: &'a str) -> DiscoveryFuture<'a, Vec<GroupSpec>>;

    /// The members of `group` as the store holds them now (a read, no watch).
    fn read_group<'a>(
        &'a self,
        cluster: &'a str,
        group: &'a str,
    ) -> DiscoveryFuture<'a, Vec<GroupMember>>;

    /// Every group of `cluster` that has members, with its members, by group name: a read of
    /// the store as it is now, no watch (what an operator lists; groups without a member are
    /// absent, deployed or not).
    ///
    /// Optional: the default fails with [`Error::Discovery`] saying that the backend does not
    /// support it, so a backend written before this method still compiles. The memory and
    /// etcd backends implement it.
    fn read_groups<'a>(
        &'a self,
        _cluster: &'a str,
    ) -> DiscoveryFuture<'a, BTreeMap<String, Vec<GroupMember>>> {
        Box::pin(async { Err(not_supported("listing groups")) })
    }

    /// The live members of `cluster` as the store holds them now: a fresh read, not a
    /// follower's view. Specs and members are followed on separate watches, so a node's view
    /// of the members may lag behind a spec it has already seen; the controller reads the
    /// members afresh when a spec arrives so that it never places replicas on a view older
    /// than the spec.
    fn read_members<'a>(&'a self, cluster: &'a str) -> DiscoveryFuture<'a, Vec<NodeInfo>>;

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

    /// Whether the cluster this backend holds can span machines (etcd: yes; the in-process
    /// memory discovery: no). A node on such a backend refuses to start with plaintext links
    /// unless told so (`NodeBuilder::insecure_links`).
    fn spans_machines(&self) -> bool {
        false
    }

    /// What `node` knows of its own lease, kept current by the backend: the node fences
    /// itself with it (it starts no work received under a lease that is lost, and holds work
    /// while the lease is in doubt until [`confirm_lease`](Self::confirm_lease) answers).
    /// `None` (the default) when the backend has no leases: nothing to fence.
    fn lease_clock(&self, _cluster: &str, _node: &NodeId) -> Option<std::sync::Arc<LeaseClock>> {
        None
    }

    /// Asks the store, now, whether `node`'s lease is alive, and updates its
    /// [`LeaseClock`]: [`LeaseCheck::Alive`] (renewed), [`LeaseCheck::Lost`] (the cluster has
    /// declared the node down; marked lost), or [`LeaseCheck::Unreachable`] when the store
    /// cannot answer within the backend's request timeout. Called by a node whose lease is in
    /// doubt (it was frozen or starved, or renewals failed). The default, for backends
    /// without leases, answers `Alive`.
    fn confirm_lease<'a>(
        &'a self,
        _cluster: &'a str,
        _node: &'a NodeId,
    ) -> DiscoveryFuture<'a, LeaseCheck> {
        Box::pin(async { Ok(LeaseCheck::Alive) })
    }

    /// The current leader of `cluster` and its token, if any.
    fn leader<'a>(&'a self, cluster: &'a str) -> DiscoveryFuture<'a, Option<(NodeId, u64)>>;

    /// Registers `node` as a host of entity type `kind` with `shards` shards (owned by the
    /// node: it goes when the node leaves or is declared down).
    fn register_entity_host<'a>(
        &'a self,
        _cluster: &'a str,
        _kind: &'a str,
        _node: &'a NodeId,
        _shards: u32,
    ) -> DiscoveryFuture<'a, ()> {
        Box::pin(async { Err(no_entities()) })
    }

    /// Withdraws `node` as a host of `kind` (it drains: the controller moves its shards).
    fn unregister_entity_host<'a>(
        &'a self,
        _cluster: &'a str,
        _kind: &'a str,
        _node: &'a NodeId,
    ) -> DiscoveryFuture<'a, ()> {
        Box::pin(async { Err(no_entities()) })
    }

    /// The hosts of every entity type: type -> node -> its shard count.
    fn read_entity_hosts<'a>(
        &'a self,
        _cluster: &'a str,
    ) -> DiscoveryFuture<'a, BTreeMap<String, BTreeMap<NodeId, u32>>> {
        Box::pin(async { Err(no_entities()) })
    }

    /// Writes `assignment` if, and only if, `token` is the current leader's token; fails
    /// with [`Error::Discovery`] otherwise (a deposed controller cannot move shards).
    fn put_assignment<'a>(
        &'a self,
        _cluster: &'a str,
        _assignment: &'a Assignment,
        _token: u64,
    ) -> DiscoveryFuture<'a, ()> {
        Box::pin(async { Err(no_entities()) })
    }

    /// The assignment of `kind` now (a read, no watch).
    fn read_assignment<'a>(
        &'a self,
        _cluster: &'a str,
        _kind: &'a str,
    ) -> DiscoveryFuture<'a, Option<Assignment>> {
        Box::pin(async { Err(no_entities()) })
    }

    /// The assignment and owners of `kind` and every change after, as for
    /// [`Discovery::join`].
    fn watch_entities<'a>(
        &'a self,
        _cluster: &'a str,
        _kind: &'a str,
    ) -> DiscoveryFuture<'a, EntityView> {
        Box::pin(async { Err(no_entities()) })
    }

    /// Takes the ownership of `shard` of `kind` for `node`, bound to its lease, if nobody
    /// holds it: `Some(token)`, a token larger than any earlier owner's of the shard, or
    /// `None` when another node holds it.
    fn acquire_shard<'a>(
        &'a self,
        _cluster: &'a str,
        _kind: &'a str,
        _shard: u32,
        _node: &'a NodeId,
    ) -> DiscoveryFuture<'a, Option<u64>> {
        Box::pin(async { Err(no_entities()) })
    }

    /// Releases the ownership of `shard` if it is still the one `node` took with `token`
    /// (`token` 0: whatever ownership `node` holds).
    fn release_shard<'a>(
        &'a self,
        _cluster: &'a str,
        _kind: &'a str,
        _shard: u32,
        _node: &'a NodeId,
        _token: u64,
    ) -> DiscoveryFuture<'a, ()> {
        Box::pin(async { Err(no_entities()) })
    }

    /// Publishes the latest load report of `node` (owned by the node, replaced each time).
    fn report_load<'a>(
        &'a self,
        cluster: &'a str,
        node: &'a NodeId,
        load: &'a LoadReport,
    ) -> DiscoveryFuture<'a, ()>;
}
