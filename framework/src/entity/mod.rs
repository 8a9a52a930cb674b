//! Keyed entities (virtual actors): actors addressed by a key, activated on first message
//! on the node that hosts the key's shard, passivated when idle, with single activation
//! across the cluster and fenced durable state.
//!
//! Declare a type with [`Entity`] (and [`remote_actor!`](crate::remote_actor) for its
//! messages), host it with [`NodeBuilder::entity`](crate::NodeBuilder::entity), reach any
//! entity from any node with [`Node::entity`](crate::Node::entity):
//!
//! ```
//! use actix::prelude::*;
//! use actormesh::{Entity, EntityConfig, EntityContext, Node, RemoteMessage};
//! use serde::{Deserialize, Serialize};
//!
//! struct Counter {
//!     count: u64,
//! }
//!
//! impl Actor for Counter {
//!     type Context = Context<Self>;
//! }
//!
//! #[derive(Debug, Serialize, Deserialize, RemoteMessage)]
//! #[remote(name = "doc.Add", result = "u64")]
//! struct Add(u64);
//!
//! impl Handler<Add> for Counter {
//!     type Result = u64;
//!     fn handle(&mut self, Add(n): Add, _: &mut Context<Self>) -> u64 {
//!         self.count += n;
//!         self.count
//!     }
//! }
//!
//! actormesh::remote_actor!(Counter = "doc.Counter" { Add });
//!
//! impl Entity for Counter {
//!     const KIND: &'static str = "counters";
//!     fn activate(_ctx: &mut EntityContext<'_, Self>) -> Self {
//!         Counter { count: 0 }
//!     }
//! }
//!
//! # actix::System::new().block_on(async {
//! let node = Node::builder()
//!     .entity::<Counter>(EntityConfig::default().shards(16))
//!     .start()
//!     .await?;
//! let counter = node.entity::<Counter>("visits");
//! counter.tell(Add(1))?;
//! assert_eq!(counter.ask(Add(2)).await?, 3);
//! node.shutdown().await;
//! # Ok::<(), actormesh::Error>(())
//! # }).unwrap();
//! ```

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use actix::Context;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::core::wire::envelope::{decode_payload, encode_payload};
use crate::error::{Error, Result};
use crate::id::ActorId;
use crate::message::RemoteActor;
use crate::node::Node;
use crate::runtime::entity::{Activator, KindConfig};
use crate::runtime::{LocalDispatch, NodeShared};
use crate::store::{printable_key, StateStore};

mod entity_ref;

pub use crate::core::shard::EntityStatus;

pub use entity_ref::EntityRef;

/// An actor type addressed by key: one activation per key in the whole cluster at a time.
///
/// The first message for a key activates it ([`activate`](Self::activate)) on the node that
/// hosts the key's shard; it is passivated (stopped) after the type's idle time and
/// activated again by the next message. Keep what must survive a passivation, a move or a
/// failover in its [state](EntityContext::state), saved with [`EntityState::save`].
pub trait Entity: RemoteActor {
    /// The entity type's name, the same on every node: part of the keys in the store, so
    /// non-empty and without `/`.
    const KIND: &'static str;

    /// Builds the activation of `ctx.key()`, from its saved state if it has one.
    fn activate(ctx: &mut EntityContext<'_, Self>) -> Self;
}

/// How a node hosts an entity type ([`NodeBuilder::entity`](crate::NodeBuilder::entity)).
#[derive(Clone)]
pub struct EntityConfig {
    shards: u32,
    idle_timeout: Duration,
    buffer: usize,
    stop_margin: Duration,
    store: Option<Arc<dyn StateStore>>,
    selector: std::collections::BTreeMap<String, String>,
}

impl Default for EntityConfig {
    /// 256 shards, passivation after 5 minutes idle, 10,000 messages buffered for moving
    /// shards, a 300 ms margin before the lease deadline, no state store.
    fn default() -> Self {
        EntityConfig {
            shards: 256,
            idle_timeout: Duration::from_secs(300),
            buffer: 10_000,
            stop_margin: Duration::from_millis(300),
            store: None,
            selector: std::collections::BTreeMap::new(),
        }
    }
}

impl std::fmt::Debug for EntityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntityConfig")
            .field("shards", &self.shards)
            .field("idle_timeout", &self.idle_timeout)
            .field("buffer", &self.buffer)
            .field("stop_margin", &self.stop_margin)
            .field("store", &self.store)
            .field("selector", &self.selector)
            .finish()
    }
}

impl EntityConfig {
    /// The number of shards keys map to (at least 1). Every node of the cluster must use
    /// the same count for a type: it is the cluster's layout. The allocator assigns shards
    /// only to hosts with the count most hosts have; a node with another count hosts nothing
    /// (it logs the mismatch and routes by the cluster's count). The count of a running
    /// cluster cannot be changed (its assignment is kept in the store).
    pub fn shards(mut self, shards: u32) -> Self {
        self.shards = shards.max(1);
        self
    }

    /// How long an activation may receive nothing before it is passivated.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// How many messages of this type may wait on this node for shards in motion (and
    /// asks for a route); past it, sends fail with [`Error::EntityBufferFull`].
    pub fn buffer(mut self, buffer: usize) -> Self {
        self.buffer = buffer;
        self
    }

    /// How long before its lease could expire a node stops letting activations handle
    /// messages (etcd discovery). It must cover clock drift over a TTL and the time a
    /// handler runs once started: a handler still running when a new owner takes over
    /// overlaps it (its state saves are refused by the store's fence).
    pub fn stop_margin(mut self, margin: Duration) -> Self {
        self.stop_margin = margin;
        self
    }

    /// Hosts the type only on nodes with label `key` = `value` (with every label given this
    /// way, as a group's selector; see [`NodeBuilder::label`](crate::NodeBuilder::label)).
    /// On other nodes the type is only sent to: they take no shard. Give every node the same
    /// configuration and let the labels decide.
    pub fn selector(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.selector.insert(key.into(), value.into());
        self
    }

    /// Where activations load and save their state.
    pub fn store(mut self, store: Arc<dyn StateStore>) -> Self {
        self.store = Some(store);
        self
    }

    pub(crate) fn into_kind(self) -> KindConfig {
        KindConfig {
            shards: self.shards,
            idle: self.idle_timeout,
            buffer: self.buffer,
            margin: self.stop_margin,
            store: self.store,
            selector: self.selector,
        }
    }
}

/// What an activation gets when it is built: its key, its saved state, its node, a handle
/// to save its state, and its actix context (also through `Deref`).
pub struct EntityContext<'a, E: Entity> {
    ctx: &'a mut Context<E>,
    node: &'a Node,
    key: &'a [u8],
    state: Option<Vec<u8>>,
    handle: EntityState,
}

impl<E: Entity> EntityContext<'_, E> {
    /// The entity's key.
    pub fn key(&self) -> &[u8] {
        self.key
    }

    /// The entity's key as text, if it is UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        std::str::from_utf8(self.key).ok()
    }

    /// The node the activation runs on.
    pub fn node(&self) -> &Node {
        self.node
    }

    /// The state last saved for this entity (`Ok(None)`: never saved, or no store). Fails
    /// with [`Error::Codec`] when the saved bytes are not an `S`.
    pub fn state<S: DeserializeOwned>(&self) -> Result<Option<S>> {
        self.state
            .as_deref()
            .map(decode_payload::<S>)
            .transpose()
            .map_err(Error::Codec)
    }

    /// The handle that saves this activation's state (clone it into the actor).
    pub fn state_handle(&self) -> EntityState {
        self.handle.clone()
    }

    /// The actix context.
    pub fn context(&mut self) -> &mut Context<E> {
        self.ctx
    }
}

impl<E: Entity> Deref for EntityContext<'_, E> {
    type Target = Context<E>;

    fn deref(&self) -> &Context<E> {
        self.ctx
    }
}

impl<E: Entity> DerefMut for EntityContext<'_, E> {
    fn deref_mut(&mut self) -> &mut Context<E> {
        self.ctx
    }
}

impl<E: Entity> std::fmt::Debug for EntityContext<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntityContext")
            .field("kind", &E::KIND)
            .field("key", &printable_key(self.key))
            .field("token", &self.handle.token)
            .finish_non_exhaustive()
    }
}

/// Saves one activation's state, fenced by its token: a save from an activation that a
/// newer one has replaced (its shard moved on, or its node was declared down) fails with
/// [`Error::StaleActivation`] and changes nothing.
#[derive(Clone)]
pub struct EntityState {
    store: Option<Arc<dyn StateStore>>,
    kind: &'static str,
    key: Arc<[u8]>,
    token: u64,
}

impl std::fmt::Debug for EntityState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntityState")
            .field("kind", &self.kind)
            .field("key", &printable_key(&self.key))
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl EntityState {
    /// Saves `state`; on `Ok` the store has it. Acknowledge a change to a caller only after
    /// this returned `Ok`.
    ///
    /// Save from a handler that returns an [`AtomicResponse`](actix::AtomicResponse): the
    /// actor handles nothing else until the save has answered, so two changes cannot
    /// interleave (with a plain `ResponseActFuture` two concurrent handlers read the same old
    /// state and one update is lost), and a passivation or a drain (queued behind it) waits
    /// for it. The state is encoded with bincode (serde): a type that gains a field cannot
    /// read the states saved before; version it (an enum) or keep your own bytes.
    pub async fn save<S: Serialize>(&self, state: &S) -> Result<()> {
        let Some(store) = &self.store else {
            return Err(Error::Store(format!(
                "entity type {} has no state store: set one with EntityConfig::store",
                self.kind
            )));
        };
        let mut buf = bytes::BytesMut::new();
        encode_payload(state, &mut buf).map_err(Error::Codec)?;
        store.save(self.kind, &self.key, self.token, &buf).await
    }

    /// The activation's fencing token (its shard ownership's; larger for every new owner).
    pub fn token(&self) -> u64 {
        self.token
    }
}

/// Starts activations of `E`.
struct TypedActivator<E>(PhantomData<fn() -> E>);

impl<E: Entity> std::fmt::Debug for TypedActivator<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Activator({})", E::KIND)
    }
}

impl<E: Entity> Activator for TypedActivator<E> {
    fn start(
        &self,
        node: &Arc<NodeShared>,
        key: &[u8],
        token: u64,
        state: Option<Vec<u8>>,
    ) -> Option<(ActorId, Arc<dyn LocalDispatch>)> {
        let handle = EntityState {
            store: node
                .entity_kind(E::KIND)
                .and_then(|h| h.config.store.clone()),
            kind: E::KIND,
            key: Arc::from(key),
            token,
        };
        let owner = Node {
            shared: node.clone(),
        };
        let key = key.to_vec();
        let (id, _addr) = node.spawn_with(move |ctx: &mut Context<E>| {
            E::activate(&mut EntityContext {
                ctx,
                node: &owner,
                key: &key,
                state,
                handle,
            })
        });
        // In the table from its start until its stop (gone only if the node's arbiter is).
        node.handle_of(id).map(|dispatch| (id, dispatch))
    }
}

/// The activator of `E`, for the node builder.
pub(crate) fn activator<E: Entity>() -> Arc<dyn Activator> {
    Arc::new(TypedActivator::<E>(PhantomData))
}

/// Hosting entity types ([`NodeBuilder::entity`](crate::NodeBuilder::entity)).
impl crate::node::NodeBuilder {
    /// Hosts entity type `E` on this node, with `config` (shard count, idle time, state
    /// store...): the node registers as a host, the controller assigns it a share of the
    /// type's shards, and it activates the entities of the shards it holds. Any node can send
    /// to the type with [`Node::entity`](crate::Node::entity) without hosting it.
    pub fn entity<E: Entity>(mut self, config: EntityConfig) -> Self {
        self.entities.retain(|(kind, _, _)| *kind != E::KIND);
        self.entities
            .push((E::KIND, config.into_kind(), activator::<E>()));
        self
    }
}

/// Reaching entities ([`Node::entity`], [`Node::entity_status`]).
impl Node {
    /// A reference to the keyed entity of type `E` with `key`, wherever it is hosted: the
    /// first message activates it (see [`Entity`](crate::Entity)). Works on any node of the
    /// cluster, whether it hosts `E` ([`NodeBuilder::entity`](crate::NodeBuilder::entity))
    /// or not; no lookup happens here.
    pub fn entity<E: Entity>(&self, key: impl AsRef<[u8]>) -> EntityRef<E> {
        let host = {
            let known = crate::runtime::read(&self.shared.entities)
                .get(E::KIND)
                .cloned();
            match known {
                Some(host) => host,
                None => {
                    let mut kinds = crate::runtime::write(&self.shared.entities);
                    kinds
                        .entry(E::KIND)
                        .or_insert_with(|| {
                            std::sync::Arc::new(crate::runtime::entity::KindHost::new(
                                E::KIND,
                                EntityConfig::default().into_kind(),
                                None,
                            ))
                        })
                        .clone()
                }
            }
        };
        crate::runtime::entity::shards::start(&self.shared, &host);
        EntityRef::new(host, key.as_ref(), self.shared.clone())
    }

    /// What this node holds of entity type `kind` now (`None`: the node neither hosts nor
    /// sent to the type).
    pub fn entity_status(&self, kind: &str) -> Option<crate::entity::EntityStatus> {
        let host = crate::runtime::read(&self.shared.entities)
            .get(kind)
            .cloned()?;
        Some(host.status(&self.shared.info.id))
    }
}
