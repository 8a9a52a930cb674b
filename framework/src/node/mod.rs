//! The node: one member of a cluster, hosting actors and linking to its peers.
//!
//! [`Node`] is the public handle; the state behind it and everything the node does on its own
//! (the actor table, inbound requests, the controller's orders, the membership view, load
//! reports, shutdown) is the runtime, in `runtime/`.
//!
//! The node is started with [`Node::builder`] from inside an actix system (`#[actix::main]` or
//! `actix::System::new().block_on`); its actors run on the arbiter that started it and its
//! transport runs on the same tokio runtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::actor_ref::ActorRef;
use crate::core::model::{GroupSpec, MembershipEvent, NodeInfo};
use crate::core::wire::envelope::decode_payload;
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::message::RemoteActor;
use crate::runtime::decode::with_decode_node;
use crate::runtime::{read, write, NodeShared};
use crate::stats::StatsSnapshot;

mod builder;
mod spec;

pub use builder::NodeBuilder;

/// A running member of a cluster. Clone it freely: every clone is the same node.
///
/// A node runs until [`Node::shutdown`] (or until the actix system it runs in stops).
/// Dropping every `Node` handle does **not** stop it: it keeps serving its actors, its names
/// and its groups, as actors keep running when their references are dropped (and actors may
/// hold handles of their own, see [`SpawnContext::node`](crate::SpawnContext::node)). Keep a handle to shut it down
/// cleanly: a node whose system stops without `shutdown` leaves its peers to find it gone
/// when its discovery registration expires (the etcd lease's TTL), not at once.
///
/// ```no_run
/// # async fn run() -> Result<(), actormesh::Error> {
/// let node = actormesh::Node::builder().cluster("demo").start().await?;
/// println!("node {} listening on {}", node.id(), node.addr());
/// node.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Node {
    pub(crate) shared: Arc<NodeShared>,
}

impl Node {
    /// Starts configuring a node.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::new()
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.shared.info.id
    }

    /// The address other nodes reach this node at (the bound port when started with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.shared.info.addr
    }

    /// The cluster this node belongs to.
    pub fn cluster(&self) -> &str {
        &self.shared.info.cluster
    }

    /// What this node published about itself.
    pub fn info(&self) -> &NodeInfo {
        &self.shared.info
    }

    /// The members of the cluster as this node currently sees them, itself included.
    pub fn members(&self) -> Vec<NodeInfo> {
        read(&self.shared.view).members().cloned().collect()
    }

    /// Membership changes from now on: node up, left gracefully, down.
    pub fn subscribe(&self) -> broadcast::Receiver<MembershipEvent> {
        self.shared.events.subscribe()
    }

    /// Waits until `node` is a member in this node's view, for at most `timeout`.
    pub async fn wait_for_node(&self, node: &NodeId, timeout: Duration) -> Result<NodeInfo> {
        self.shared.wait_for_member(node, timeout).await
    }

    /// Creates or replaces the desired state of a group; the cluster's controller (nodes
    /// started with [`NodeBuilder::controller`]) keeps it. See [`controller`](crate::controller).
    pub async fn deploy(&self, spec: &GroupSpec) -> Result<()> {
        self.shared
            .discovery
            .put_spec(&self.shared.info.cluster, spec)
            .await
    }

    /// Changes the number of replicas of a deployed group.
    pub async fn scale(&self, group: &str, replicas: u32) -> Result<()> {
        let shared = &self.shared;
        let specs = shared.discovery.read_specs(&shared.info.cluster).await?;
        let mut spec = specs
            .into_iter()
            .find(|s| s.group == group)
            .ok_or_else(|| Error::UnknownGroup(group.to_owned()))?;
        spec.replicas = replicas;
        shared.discovery.put_spec(&shared.info.cluster, &spec).await
    }

    /// How deployed group `group` stands against its spec: replicas desired and running and,
    /// when it falls short, why (no node can spawn its type, no node carries the selected
    /// labels, no controller leads...). Read afresh from discovery.
    ///
    /// Fails with [`Error::UnknownGroup`] when no spec is deployed for the group.
    pub async fn group_status(&self, group: &str) -> Result<crate::GroupStatus> {
        self.shared
            .group_status(group)
            .await?
            .ok_or_else(|| Error::UnknownGroup(group.to_owned()))
    }

    /// Counters of dropped messages, by reason.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// How many actors run on this node.
    pub fn actor_count(&self) -> usize {
        read(&self.shared.actors).len()
    }

    /// The value of type `T` given to this node with
    /// [`NodeBuilder::data`](crate::NodeBuilder::data), if any.
    ///
    /// ```
    /// # #[actix::main] async fn main() -> actormesh::Result<()> {
    /// struct Greeting(&'static str);
    /// let node = actormesh::Node::builder().data(Greeting("hello")).start().await?;
    /// assert_eq!(node.data::<Greeting>().map(|g| g.0), Some("hello"));
    /// assert!(node.data::<u32>().is_none());
    /// # node.shutdown().await; Ok(()) }
    /// ```
    pub fn data<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.shared
            .data
            .get(&std::any::TypeId::of::<T>())
            .and_then(|v| v.downcast_ref::<T>())
    }

    /// Starts `actor` on this node and returns its reference.
    ///
    /// The actor lives until it stops itself or the node shuts down (the node keeps its
    /// address, so dropping every reference does not stop it).
    pub fn spawn<A: RemoteActor + Send>(&self, actor: A) -> ActorRef<A> {
        let (id, addr) = self.shared.spawn_with(move |_| actor);
        ActorRef::local(id, addr, self.shared.clone())
    }

    /// Registers `actor` (which must run on this node) under `name`, cluster-wide.
    ///
    /// A name held by another actor is refused with [`Error::NameTaken`]: names are never
    /// overwritten. The name is removed when the actor stops or this node leaves.
    pub async fn register_name<A: RemoteActor>(
        &self,
        name: &str,
        actor: &ActorRef<A>,
    ) -> Result<()> {
        let shared = &self.shared;
        if actor.node() != &shared.info.id {
            return Err(Error::NotLocal {
                node: actor.node().clone(),
                actor: actor.id(),
                what: "register_name",
            });
        }
        if !read(&shared.actors).contains(actor.id()) {
            return Err(Error::ActorNotFound {
                node: shared.info.id.clone(),
                actor: actor.id(),
                actor_type: A::NAME,
            });
        }
        let entry = shared.name_entry(actor.id(), A::NAME);
        shared
            .discovery
            .register_name(&shared.info.cluster, name, &entry)
            .await?;
        let recorded = write(&shared.actors)
            .extra_mut(actor.id())
            .map(|e| e.names.push(name.to_owned()))
            .is_some();
        if !recorded {
            // The actor stopped while the name was being registered.
            let _ = shared
                .discovery
                .unregister_name(&shared.info.cluster, name, &entry)
                .await;
            return Err(Error::ActorNotFound {
                node: shared.info.id.clone(),
                actor: actor.id(),
                actor_type: A::NAME,
            });
        }
        Ok(())
    }

    /// Removes `name` if it is held by `actor`.
    pub async fn unregister_name<A: RemoteActor>(
        &self,
        name: &str,
        actor: &ActorRef<A>,
    ) -> Result<()> {
        let shared = &self.shared;
        let entry = shared.name_entry(actor.id(), A::NAME);
        if let Some(e) = write(&shared.actors).extras.get_mut(&actor.id()) {
            e.names.retain(|n| n != name);
        }
        shared
            .discovery
            .unregister_name(&shared.info.cluster, name, &entry)
            .await
    }

    /// Adds `actor` (which must run on this node) to `group` with weight 1. It leaves the
    /// group when it stops, when this node leaves, or with [`Node::leave_group`].
    pub async fn join_group<A: RemoteActor>(&self, group: &str, actor: &ActorRef<A>) -> Result<()> {
        self.join_group_weighted(group, actor, 1).await
    }

    /// [`Node::join_group`] with a weight, for [`Weighted`](crate::balance::Weighted) and
    /// [`ConsistentHash`](crate::balance::ConsistentHash) balancing.
    pub async fn join_group_weighted<A: RemoteActor>(
        &self,
        group: &str,
        actor: &ActorRef<A>,
        weight: u32,
    ) -> Result<()> {
        let shared = &self.shared;
        if actor.node() != &shared.info.id {
            return Err(Error::NotLocal {
                node: actor.node().clone(),
                actor: actor.id(),
                what: "join_group",
            });
        }
        if !read(&shared.actors).contains(actor.id()) {
            return Err(Error::ActorNotFound {
                node: shared.info.id.clone(),
                actor: actor.id(),
                actor_type: A::NAME,
            });
        }
        let member = shared.group_member(actor.id(), A::NAME, weight);
        shared
            .discovery
            .join_group(&shared.info.cluster, group, &member)
            .await?;
        let recorded = write(&shared.actors)
            .extra_mut(actor.id())
            .map(|e| e.groups.push((group.to_owned(), weight)))
            .is_some();
        if !recorded {
            let _ = shared
                .discovery
                .leave_group(&shared.info.cluster, group, &member)
                .await;
            return Err(Error::ActorNotFound {
                node: shared.info.id.clone(),
                actor: actor.id(),
                actor_type: A::NAME,
            });
        }
        Ok(())
    }

    /// Removes `actor` from `group`.
    pub async fn leave_group<A: RemoteActor>(
        &self,
        group: &str,
        actor: &ActorRef<A>,
    ) -> Result<()> {
        let shared = &self.shared;
        let weight = write(&shared.actors)
            .extras
            .get_mut(&actor.id())
            .and_then(|e| {
                let i = e.groups.iter().position(|(g, _)| g == group)?;
                Some(e.groups.remove(i).1)
            })
            .unwrap_or(1);
        let member = shared.group_member(actor.id(), A::NAME, weight);
        shared
            .discovery
            .leave_group(&shared.info.cluster, group, &member)
            .await
    }

    /// A reference to `group`, balanced round robin. See [`GroupRef`](crate::GroupRef).
    pub async fn group<A: RemoteActor>(&self, group: &str) -> Result<crate::GroupRef<A>> {
        self.group_with(group, crate::GroupConfig::default()).await
    }

    /// A reference to `group` with its balancer, caps, ejection and retries.
    pub async fn group_with<A: RemoteActor>(
        &self,
        group: &str,
        config: crate::GroupConfig,
    ) -> Result<crate::GroupRef<A>> {
        crate::GroupRef::watch(self.shared.clone(), group, config).await
    }

    /// Finds the actor registered under `name` anywhere in the cluster.
    pub async fn lookup<A: RemoteActor>(&self, name: &str) -> Result<ActorRef<A>> {
        let shared = &self.shared;
        let entry = shared
            .discovery
            .lookup_name(&shared.info.cluster, name)
            .await?
            .ok_or_else(|| Error::NameNotFound(name.to_owned()))?;
        if entry.actor_type != A::NAME {
            return Err(Error::WrongActorType {
                expected: A::NAME.to_owned(),
                found: entry.actor_type,
            });
        }
        ActorRef::resolve(shared, &entry.node, entry.addr, entry.actor)
    }

    /// Turns the bytes of [`ActorRef::to_bytes`] back into a reference usable from this node.
    ///
    /// The actor's node does not need to be in this node's discovery view: the reference
    /// carries its address, and the link's handshake checks the cluster name and node id.
    pub fn actor_ref_from_bytes<A: RemoteActor>(&self, bytes: &[u8]) -> Result<ActorRef<A>> {
        with_decode_node(&self.shared, || decode_payload::<ActorRef<A>>(bytes))
            .map_err(Error::Codec)
    }

    /// The address of the node's admin listener, when it runs one (see
    /// [`NodeBuilder::admin`]).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.shared.info.admin
    }

    /// The node's metrics, when it runs an admin listener: a service adds its own with
    /// [`NodeMetrics::register`](crate::metrics::NodeMetrics::register).
    pub fn metrics(&self) -> Option<&crate::metrics::NodeMetrics> {
        self.shared.metrics.as_deref()
    }

    /// Whether a graceful shutdown has begun (a signal, a drain request, [`Node::shutdown`]).
    pub fn is_draining(&self) -> bool {
        self.shared
            .draining
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Serves until SIGTERM or SIGINT (Ctrl-C), a `POST /drain` on the admin listener, or a
    /// shutdown from elsewhere; then drains: readiness fails at once, entity shards are handed
    /// over, asks being handled finish and replies leave, the node leaves discovery, all
    /// within [`NodeBuilder::shutdown_timeout`]. The one call a service's `main` ends with.
    ///
    /// Returns what stopped it. Fails only when the signal handlers cannot be installed.
    ///
    /// The signal handlers are in place when this returns, before the future is first
    /// polled: create it, then say the service is ready, then await it, and a signal sent as
    /// soon as the service is ready is not lost.
    pub fn run_until_stopped(
        &self,
    ) -> impl std::future::Future<Output = std::io::Result<StopCause>> + '_ {
        self.run_until_stopped_with(|| async {})
    }

    /// [`run_until_stopped`](Self::run_until_stopped), running `before_drain` once readiness
    /// fails and before the node itself drains: stop what feeds the node first (an HTTP
    /// gateway finishing its requests, a queue consumer).
    pub fn run_until_stopped_with<F, Fut>(
        &self,
        before_drain: F,
    ) -> impl std::future::Future<Output = std::io::Result<StopCause>> + '_
    where
        F: FnOnce() -> Fut + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        use tokio::signal::unix::{signal, SignalKind};
        // Installed now, not at the first poll.
        let signals = signal(SignalKind::terminate())
            .and_then(|term| Ok((term, signal(SignalKind::interrupt())?)));
        let drain = self.shared.drain_requested.notified();
        let mut stopped = self.shared.shutdown_signal();
        // Counted while waiting: a drain request is then carried out here, in order (what
        // `before_drain` stops goes first), not by the admin listener.
        struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            }
        }
        self.shared
            .drain_waiters
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let waiting = Waiting(&self.shared.drain_waiters);
        async move {
            let _waiting = waiting;
            let (mut term, mut int) = signals?;
            let cause = tokio::select! {
                _ = term.recv() => StopCause::Terminate,
                _ = int.recv() => StopCause::Interrupt,
                _ = drain => StopCause::DrainRequest,
                _ = stopped.wait_for(|s| *s) => StopCause::Shutdown,
            };
            tracing::info!(node = %self.id(), ?cause, "draining: handing work over and leaving the cluster");
            self.shared
                .draining
                .store(true, std::sync::atomic::Ordering::Release);
            before_drain().await;
            self.shutdown().await;
            tracing::info!(node = %self.id(), "stopped");
            Ok(cause)
        }
    }

    /// Leaves the cluster cleanly: stops taking new work, lets asks being handled here finish
    /// and their replies leave (up to the shutdown timeout), flushes what this node still has
    /// to send, leaves discovery (its names vanish), and stops its actors.
    pub async fn shutdown(&self) {
        self.shared.shutdown().await
    }
}

/// What ended [`Node::run_until_stopped`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopCause {
    /// SIGTERM (Kubernetes, systemd, `kill`).
    Terminate,
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// `POST /drain` on the admin listener (`actormesh drain <node>`).
    DrainRequest,
    /// The node was shut down from elsewhere ([`Node::shutdown`]).
    Shutdown,
}

#[cfg(test)]
mod fence_tests;
#[cfg(test)]
mod tests;
