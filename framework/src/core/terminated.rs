//! The notice a watcher gets when a watched actor terminates (see
//! [`ActorRef::watch`](crate::ActorRef::watch)).

use actix::Message;

use crate::id::{ActorId, NodeId};

/// Sent to a watcher when a watched actor terminates. See [`ActorRef::watch`](crate::ActorRef::watch).
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct Terminated {
    /// The actor that terminated.
    pub actor: ActorId,
    /// Its node.
    pub node: NodeId,
    /// Why.
    pub reason: TerminationReason,
}

/// Why a watched actor terminated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TerminationReason {
    /// The actor stopped (by itself, or after a handler panicked).
    Stopped,
    /// The actor did not exist (any more) when the watch was set up.
    NotFound,
    /// Its node shut down.
    NodeShutdown,
    /// Its node was declared down or left the cluster.
    NodeDown,
}
