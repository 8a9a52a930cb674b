//! The one error type a caller of actormesh matches on.

use std::time::Duration;

use crate::id::{ActorId, NodeId};

/// What went wrong with a send, an ask, a spawn or a lookup.
///
/// Every variant says what failed and, in its message, what to do next. The enum is
/// `#[non_exhaustive]`: match the variants you act on and keep a catch-all arm.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No reply arrived within the ask's timeout. The message may have been handled before the
    /// deadline; it is not started after it (the deadline travels with the ask, read on the
    /// target's clock with `NodeBuilder::max_clock_skew` allowed).
    #[error("no reply within {after:?}; the message may have been handled before the deadline, but is not started after it: retry only if it is idempotent (raise the timeout with `ask_timeout` or check the target's load)")]
    Timeout {
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The target actor was not running when the message reached it (it had stopped, was
    /// between restarts, or never existed): **the message was not handled**, so sending it
    /// again cannot apply it twice.
    #[error("actor {actor_type} {actor} on node {node} was not running (stopped, between restarts, or never existed): the message was not handled; look the actor up again, or retry once it has restarted")]
    ActorNotFound {
        /// The node that was asked.
        node: NodeId,
        /// The actor that was addressed.
        actor: ActorId,
        /// The declared type name of the actor (`remote_actor!`), as the caller knows it.
        actor_type: &'static str,
    },
    /// The target actor stopped while it held the message (handling it, or holding its
    /// reply), before it replied: the message **may or may not have been handled**.
    #[error("actor {actor_type} {actor} on node {node} stopped while handling the message, before replying: it may or may not have been handled")]
    ActorStopped {
        /// The node of the actor.
        node: NodeId,
        /// The actor that stopped.
        actor: ActorId,
        /// The declared type name of the actor.
        actor_type: &'static str,
    },
    /// The target's node could not be reached (connection refused, reset or lost). It may come back.
    #[error("node {node} is unreachable: {reason}; the message may or may not have been delivered and handled, retry only if it is idempotent")]
    NodeUnreachable {
        /// The node that could not be reached.
        node: NodeId,
        /// What the transport saw.
        reason: String,
    },
    /// Discovery declared the target's node down or gone: its actors are gone with it. The
    /// message was handled before that (its reply lost) or never; the node does not start it
    /// after (a node declared down refuses, when it resumes, what it received before). Also
    /// the answer of a node that is shutting down and refuses new work (not handled).
    #[error("node {node} has left the cluster or is down; the message was not handled after that (it may have been before, with its reply lost): retry only if it is idempotent; its actors are gone, look up or spawn replacements")]
    NodeDown {
        /// The node that is down.
        node: NodeId,
    },
    /// The target's node refused the request without handling it: the cluster had declared
    /// the node down (it was frozen, starved or cut off from the store past its lease) and it
    /// starts nothing it received before that.
    #[error("node {node} refused the message without handling it: the cluster had declared that node down (it was frozen, overloaded or cut off from etcd past its lease) and it is rejoining as a new incarnation; look the actor up again, or retry")]
    NodeFenced {
        /// The node that refused.
        node: NodeId,
    },
    /// The queue towards the target is full; the message was not sent.
    #[error("the send queue towards node {node} is full ({limit_bytes} bytes queued); slow down or use `ask` for backpressure")]
    MailboxFull {
        /// The node whose queue is full.
        node: NodeId,
        /// The configured queue limit.
        limit_bytes: usize,
    },
    /// The message, its reply or a constructor argument could not be encoded or decoded.
    #[error("codec error: {0}; check that both sides run compatible message definitions")]
    Codec(String),
    /// The message is larger than the transport's maximum frame size.
    #[error("message of {size} bytes exceeds the maximum frame size of {limit} bytes; split it or raise `max_frame_size` on every node")]
    MessageTooLarge {
        /// The encoded size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The receiving actor does not accept this message type remotely.
    #[error("actor type `{actor_type}` on the remote node does not accept message `{message}`; add it to its `remote_actor!` declaration")]
    UnknownMessage {
        /// The receiving actor's declared type name.
        actor_type: String,
        /// The stable wire name (or id) of the message.
        message: String,
    },
    /// The remote node does not know the actor type that `spawn_on` asked for.
    #[error("node {node} cannot spawn actor type `{actor_type}`; register it with `NodeBuilder::spawnable` on that node")]
    UnknownActorType {
        /// The node that was asked.
        node: NodeId,
        /// The stable name of the actor type.
        actor_type: String,
    },
    /// The actor found under a name or in a reference is of another type than expected.
    #[error("expected an actor of type `{expected}`, found `{found}`")]
    WrongActorType {
        /// The type the caller asked for.
        expected: String,
        /// The type that is registered.
        found: String,
    },
    /// The handler panicked while handling this message, or the actor's task panicked while
    /// the handler's future for it (`ResponseActFuture`, `AtomicResponse`) was running. The
    /// message was not completed (its effects up to the panic stay), the actor was stopped
    /// (and restarted if supervised).
    ///
    /// A message that crashes its handler is treated as the message's fault, not the
    /// instance's: [`GroupRef::ask_idempotent`](crate::GroupRef::ask_idempotent) does not
    /// retry it on another instance (unless
    /// [`GroupConfig::retry_on_panic`](crate::GroupConfig::retry_on_panic) says so) and no
    /// instance is ejected for it.
    #[error("the handler of actor {actor_type} {actor} on node {node} panicked: {message}; the actor was stopped (restarted if supervised) and the message is not retried elsewhere")]
    HandlerPanicked {
        /// The node of the actor.
        node: NodeId,
        /// The actor whose handler panicked.
        actor: ActorId,
        /// The declared type name of the actor.
        actor_type: &'static str,
        /// The panic payload, if it was a string.
        message: String,
    },
    /// The remote node refused the connection handshake.
    #[error("handshake with {peer} refused: {reason}")]
    HandshakeRefused {
        /// The address or node that refused.
        peer: String,
        /// Why: cluster name, protocol version or node id mismatch.
        reason: String,
    },
    /// No actor is registered under this name.
    #[error("no actor is registered under the name `{0}`")]
    NameNotFound(String),
    /// The name is already registered to another actor.
    #[error("the name `{name}` is already registered to actor {actor} on node {node}; unregister it first or pick another name")]
    NameTaken {
        /// The contested name.
        name: String,
        /// The node holding it.
        node: NodeId,
        /// The actor holding it.
        actor: ActorId,
    },
    /// The operation needs an actor on this node.
    #[error(
        "actor {actor} lives on node {node}, not on this node; {what} only works for local actors"
    )]
    NotLocal {
        /// The remote node.
        node: NodeId,
        /// The actor.
        actor: ActorId,
        /// The operation attempted.
        what: &'static str,
    },
    /// Another live node of the cluster already uses this node id.
    #[error("node id {0} is already used by a live node of this cluster; choose another id or stop the other process")]
    NodeIdTaken(NodeId),
    /// No group of this name is deployed (no spec).
    #[error("no group `{0}` is deployed; deploy a spec with `Node::deploy` first")]
    UnknownGroup(String),
    /// The group has no instance this caller can use (none joined, or all failed this ask).
    #[error("group `{group}` has no instance to take the message; start or join instances, or check that their nodes are up")]
    NoInstances {
        /// The group.
        group: String,
    },
    /// A wait for a group's instances ended before enough were seen.
    #[error(
        "group `{group}` has {seen} of the {wanted} instances waited for after {after:?}: {reason}"
    )]
    GroupNotReady {
        /// The group.
        group: String,
        /// The instances waited for.
        wanted: usize,
        /// The instances seen when the wait ended.
        seen: usize,
        /// How long the wait lasted.
        after: Duration,
        /// Why, as far as this node can tell: the deployed group's status (see
        /// [`Node::group_status`](crate::Node::group_status)), or that nothing deploys or
        /// joins it.
        reason: String,
    },
    /// Every instance of the group is at its cap of asks in flight from this caller.
    #[error("group `{group}` is overloaded: every instance is at its cap of asks in flight; slow down, add instances or raise `max_in_flight`")]
    Overloaded {
        /// The group.
        group: String,
    },
    /// The node is unknown to this node's membership view.
    #[error("node {0} is not a member of this cluster (not in the discovery view)")]
    UnknownNode(NodeId),
    /// The link TLS material cannot be used (unreadable or invalid PEM, a key that does not
    /// match its certificate, a certificate that does not name the node).
    #[error("link TLS: {0}")]
    Tls(String),
    /// The discovery backend failed.
    #[error("discovery error: {0}")]
    Discovery(String),
    /// The local node is shutting down or has shut down.
    #[error("the local node is shut down; start a new node")]
    Shutdown,
    /// Starting the node failed.
    #[error("node failed to start: {0}")]
    Start(String),
    /// A message to an entity could not be delivered in time: no node hosts its type, or its
    /// shard was moving between nodes (or being taken over from a failed node) for the whole
    /// wait. Not handled.
    #[error("entity {kind}/{key} is unavailable: {why}")]
    EntityUnavailable {
        /// The entity type.
        kind: &'static str,
        /// The entity's key (printable form).
        key: String,
        /// Why.
        why: String,
    },
    /// Too many messages are waiting for shards in motion of this entity type on this node
    /// (see `EntityConfig::buffer`): the message was refused, not queued.
    #[error("too many messages wait for moving shards of entity type {kind} on this node ({limit}); retry later")]
    EntityBufferFull {
        /// The entity type.
        kind: &'static str,
        /// The buffer's capacity.
        limit: usize,
    },
    /// A state save (or load) was refused because a newer activation of the entity has
    /// claimed its state: this activation is stale (its shard moved on or its node was
    /// declared down) and must not write.
    #[error("state of entity {kind}/{key} belongs to a newer activation (fencing token {token} is stale)")]
    StaleActivation {
        /// The entity type.
        kind: String,
        /// The entity's key (printable form).
        key: String,
        /// The refused token.
        token: u64,
    },
    /// The state store failed (unreachable, or refused the request).
    #[error("state store: {0}")]
    Store(String),
}

impl Error {
    /// Whether retrying the same operation later (or elsewhere) can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. }
                | Error::NodeUnreachable { .. }
                | Error::NodeFenced { .. }
                | Error::MailboxFull { .. }
                | Error::Overloaded { .. }
                | Error::Discovery(_)
                | Error::EntityUnavailable { .. }
                | Error::EntityBufferFull { .. }
                | Error::Store(_)
        )
    }
}

/// A `tell` that could not be sent: the error and, where the framework still holds it, the
/// message handed back to the caller.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct TellError<M> {
    /// Why the message was not sent.
    pub error: Error,
    /// The undelivered message.
    pub message: M,
}

impl<M> TellError<M> {
    /// The undelivered message.
    pub fn into_inner(self) -> M {
        self.message
    }
}

/// Lets `?` turn a failed [`ActorRef::tell`](crate::ActorRef::tell) into an [`Error`] in a
/// function that returns [`Result`], dropping the undelivered message (match the
/// [`TellError`] instead to get it back).
impl<M> From<TellError<M>> for Error {
    fn from(e: TellError<M>) -> Self {
        e.error
    }
}

/// The result of an ask or any other fallible framework operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
