//! [`ActorRef`]: one reference type for local and remote actors.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::{Addr, Recipient};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tracing::Instrument;

use crate::core::terminated::{Terminated, TerminationReason};
use crate::core::wire::envelope::{decode_payload, encode_payload, Header};
use crate::error::{Error, Result, TellError};
use crate::id::{ActorId, NodeId};
use crate::message::{Accepts, Deliver, RemoteActor, RemoteMessage, ReplyTo, WireValue};
use crate::metrics::Direction;
use crate::runtime::decode::{decode_node, with_decode_node};
use crate::runtime::dispatch::{outcome_until, reply_channel, Outcome};
use crate::runtime::NodeShared;
use crate::stats::DropReason;
use crate::trace;
use crate::transport::link::PeerLink;

/// A reference to an actor of type `A`, on this node or on another one.
///
/// - [`tell`](Self::tell) sends and forgets: at-most-once, never blocks.
/// - [`ask`](Self::ask) sends and waits for the reply: it ends in exactly one of the reply, a
///   typed [`Error`], or a timeout, and fails fast when the target is known to be gone.
///
/// The same code works for local and remote targets; a local send goes straight to the actix
/// mailbox and is never serialized. A reference is serializable: put it in a message and the
/// receiving node can use it (reply-to and callback patterns).
pub struct ActorRef<A: RemoteActor> {
    id: ActorId,
    target: Target<A>,
}

enum Target<A: RemoteActor> {
    Local {
        addr: Addr<A>,
        node: Arc<NodeShared>,
    },
    Remote {
        link: Arc<PeerLink>,
        node: Arc<NodeShared>,
    },
    /// A supervised actor of this node: its address changes with every restart, so it is
    /// looked up at each send.
    Supervised { node: Arc<NodeShared> },
    /// A reference to an actor that was already gone when the reference was resolved.
    Gone {
        node: NodeId,
        addr: SocketAddr,
        local: Arc<NodeShared>,
    },
}

impl<A: RemoteActor> Clone for ActorRef<A> {
    fn clone(&self) -> Self {
        let target = match &self.target {
            Target::Local { addr, node } => Target::Local {
                addr: addr.clone(),
                node: node.clone(),
            },
            Target::Remote { link, node } => Target::Remote {
                link: link.clone(),
                node: node.clone(),
            },
            Target::Supervised { node } => Target::Supervised { node: node.clone() },
            Target::Gone { node, addr, local } => Target::Gone {
                node: node.clone(),
                addr: *addr,
                local: local.clone(),
            },
        };
        ActorRef {
            id: self.id,
            target,
        }
    }
}

impl<A: RemoteActor> fmt::Debug for ActorRef<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActorRef")
            .field("type", &A::NAME)
            .field("node", self.node())
            .field("actor", &self.id)
            .finish()
    }
}

impl<A: RemoteActor> PartialEq for ActorRef<A> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.node() == other.node()
    }
}

impl<A: RemoteActor> Eq for ActorRef<A> {}

impl<A: RemoteActor> std::hash::Hash for ActorRef<A> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state);
        self.node().hash(state);
    }
}

impl<A: RemoteActor> ActorRef<A> {
    pub(crate) fn local(id: ActorId, addr: Addr<A>, node: Arc<NodeShared>) -> Self {
        ActorRef {
            id,
            target: Target::Local { addr, node },
        }
    }

    pub(crate) fn remote(id: ActorId, link: Arc<PeerLink>, node: Arc<NodeShared>) -> Self {
        ActorRef {
            id,
            target: Target::Remote { link, node },
        }
    }

    pub(crate) fn supervised(id: ActorId, node: Arc<NodeShared>) -> Self {
        ActorRef {
            id,
            target: Target::Supervised { node },
        }
    }

    pub(crate) fn gone(
        id: ActorId,
        node: NodeId,
        addr: SocketAddr,
        local: Arc<NodeShared>,
    ) -> Self {
        ActorRef {
            id,
            target: Target::Gone { node, addr, local },
        }
    }

    /// A reference to actor `actor` of `node` (reached at `addr`).
    pub(crate) fn resolve(
        local: &Arc<NodeShared>,
        node: &NodeId,
        addr: SocketAddr,
        actor: ActorId,
    ) -> Result<ActorRef<A>> {
        if node == &local.info.id {
            if local.is_supervised(actor) {
                // Type check; the address itself is looked up at each send (it changes
                // with every restart).
                local.local_addr::<A>(actor)?;
                return Ok(ActorRef::supervised(actor, local.clone()));
            }
            return Ok(match local.local_addr::<A>(actor)? {
                Some(found) => ActorRef::local(actor, found, local.clone()),
                None => ActorRef::gone(actor, node.clone(), addr, local.clone()),
            });
        }
        Ok(ActorRef::remote(
            actor,
            local.link_to(node, addr),
            local.clone(),
        ))
    }

    /// The actor's id within its node.
    pub fn id(&self) -> ActorId {
        self.id
    }

    /// The node the actor runs on.
    pub fn node(&self) -> &NodeId {
        match &self.target {
            Target::Local { node, .. } | Target::Supervised { node } => &node.info.id,
            Target::Remote { link, .. } => &link.node,
            Target::Gone { node, .. } => node,
        }
    }

    /// Whether the actor runs on the node that holds this reference.
    pub fn is_local(&self) -> bool {
        matches!(
            self.target,
            Target::Local { .. } | Target::Supervised { .. }
        )
    }

    /// The actix address of a local actor (`None` for a remote one).
    pub fn local_addr(&self) -> Option<&Addr<A>> {
        match &self.target {
            Target::Local { addr, .. } => Some(addr),
            _ => None,
        }
    }

    /// For a supervised actor, a plain local reference to its current incarnation (`None`
    /// while it is down between restarts); for any other reference, `None`.
    #[allow(clippy::option_option)]
    fn current_incarnation(&self) -> Option<Option<ActorRef<A>>> {
        let Target::Supervised { node } = &self.target else {
            return None;
        };
        Some(
            node.local_addr::<A>(self.id)
                .ok()
                .flatten()
                .map(|addr| ActorRef::local(self.id, addr, node.clone())),
        )
    }

    fn holder(&self) -> &Arc<NodeShared> {
        match &self.target {
            Target::Local { node, .. }
            | Target::Remote { node, .. }
            | Target::Supervised { node } => node,
            Target::Gone { local, .. } => local,
        }
    }

    /// The actor was not running: the message was not handled.
    fn not_found(&self) -> Error {
        Error::ActorNotFound {
            node: self.node().clone(),
            actor: self.id,
            actor_type: A::NAME,
        }
    }

    /// The actor stopped while it held the message.
    fn stopped(&self) -> Error {
        Error::ActorStopped {
            node: self.node().clone(),
            actor: self.id,
            actor_type: A::NAME,
        }
    }

    /// Sends `message` without waiting for it to be handled (at-most-once).
    ///
    /// Returns an error, with the message handed back, when the send is known to fail: the
    /// actor stopped, its node is down, the send queue towards its node is full
    /// ([`Error::MailboxFull`]; `tell` never blocks), or the message does not encode. A message
    /// accepted here can still be lost with a link or node failure; such losses are counted in
    /// [`Node::stats`](crate::Node::stats) and logged.
    pub fn tell<M>(&self, message: M) -> std::result::Result<(), TellError<M>>
    where
        A: Accepts<M>,
        M: RemoteMessage,
        M::Result: WireValue,
    {
        let span = send_span(self.node(), self.id, M::NAME, "tell");
        let trace = trace_of(&span);
        let _entered = span.enter();
        match &self.target {
            Target::Local { addr, node } => {
                if let Some(m) = &node.metrics {
                    m.message(M::NAME, Direction::Local);
                }
                tell_local(self.id, addr, node, message, trace, false)
            }
            Target::Remote { link, node } => {
                if let Some(m) = &node.metrics {
                    m.message(M::NAME, Direction::Outbound);
                }
                let header = Header::Tell {
                    target: self.id.0,
                    message: M::WIRE_ID,
                    trace,
                };
                match link.send(&header, |buf| encode_payload(&message, buf)) {
                    Ok(()) => Ok(()),
                    Err(error) => Err(TellError { error, message }),
                }
            }
            Target::Supervised { node } => self.tell_supervised(node, message, trace),
            Target::Gone { .. } => Err(TellError {
                error: self.not_found(),
                message,
            }),
        }
    }

    /// `tell` to a supervised actor: to its current incarnation, always wrapped so that its
    /// supervisor learns of a panic. Kept out of line: the plain local path stays small.
    #[cold]
    #[inline(never)]
    fn tell_supervised<M>(
        &self,
        node: &Arc<NodeShared>,
        message: M,
        trace: Option<trace::TraceContext>,
    ) -> std::result::Result<(), TellError<M>>
    where
        A: Accepts<M>,
        M: RemoteMessage,
        M::Result: WireValue,
    {
        match node.local_addr::<A>(self.id) {
            Ok(Some(addr)) => tell_local(self.id, &addr, node, message, trace, true),
            _ => Err(TellError {
                error: self.not_found(),
                message,
            }),
        }
    }

    /// Sends `message` and waits for the reply, up to the node's ask timeout (see
    /// [`NodeBuilder::ask_timeout`](crate::NodeBuilder::ask_timeout)).
    pub async fn ask<M>(&self, message: M) -> Result<M::Result>
    where
        A: Accepts<M>,
        M: RemoteMessage,
        M::Result: WireValue,
    {
        let timeout = self.holder().config.ask_timeout;
        self.ask_timeout(message, timeout).await
    }

    /// Sends `message` and waits for the reply up to `timeout`. The receiving node drops the
    /// work if it is still queued when the caller has given up.
    pub async fn ask_timeout<M>(&self, message: M, timeout: Duration) -> Result<M::Result>
    where
        A: Accepts<M>,
        M: RemoteMessage,
        M::Result: WireValue,
    {
        if let Some(current) = self.current_incarnation() {
            return match current {
                Some(local) => Box::pin(local.ask_timeout(message, timeout)).await,
                None => Err(self.not_found()),
            };
        }
        let span = send_span(self.node(), self.id, M::NAME, "ask");
        let trace = trace_of(&span);
        let metrics = match &self.target {
            Target::Local { node, .. } => node.metrics.as_ref().map(|m| (m, Direction::Local)),
            Target::Remote { node, .. } => node.metrics.as_ref().map(|m| (m, Direction::Outbound)),
            _ => None,
        };
        let Some((metrics, direction)) = metrics else {
            return self
                .ask_traced(message, timeout, trace)
                .instrument(span)
                .await;
        };
        metrics.message(M::NAME, direction);
        let started = std::time::Instant::now();
        let outcome = self
            .ask_traced(message, timeout, trace)
            .instrument(span)
            .await;
        metrics.ask_done(M::NAME, started.elapsed(), outcome.as_ref().err());
        outcome
    }

    async fn ask_traced<M>(
        &self,
        message: M,
        timeout: Duration,
        trace: Option<trace::TraceContext>,
    ) -> Result<M::Result>
    where
        A: Accepts<M>,
        M: RemoteMessage,
        M::Result: WireValue,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        match &self.target {
            Target::Local { addr, node } => {
                if !addr.connected() {
                    return Err(self.not_found());
                }
                node.asks_handled
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (reply, wait) = reply_channel::<M>();
                A::deliver(
                    addr,
                    Deliver {
                        message,
                        reply: Some(ReplyTo::Caller(reply)),
                        trace,
                        deadline: Some(deadline.into_std()),
                        fence: None,
                    },
                );
                match outcome_until(deadline, wait).await {
                    Outcome::Value(v) => Ok(v),
                    Outcome::Stopped => Err(self.stopped()),
                    Outcome::NotHandled => Err(self.not_found()),
                    Outcome::Panicked(text) => Err(Error::HandlerPanicked {
                        node: self.node().clone(),
                        actor: self.id,
                        actor_type: A::NAME,
                        message: text,
                    }),
                    Outcome::Expired => Err(Error::Timeout { after: timeout }),
                }
            }
            Target::Remote { link, node } => {
                let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
                let deadline_unix_ms = crate::id::unix_ms(std::time::SystemTime::now() + timeout);
                let target = self.id.0;
                let bytes = link
                    .request(
                        (self.id, A::NAME),
                        timeout,
                        |id| Header::Ask {
                            id,
                            target,
                            message: M::WIRE_ID,
                            timeout_ms,
                            deadline_unix_ms,
                            trace,
                        },
                        move |buf| encode_payload(&message, buf),
                    )
                    .await?;
                with_decode_node(node, || decode_payload::<M::Result>(&bytes)).map_err(Error::Codec)
            }
            Target::Supervised { .. } | Target::Gone { .. } => Err(self.not_found()),
        }
    }

    /// Asks the actor to stop once it has handled the messages already in its mailbox
    /// (messages sent after this may be refused). A supervised actor stopped this way is not
    /// restarted. Fails when the actor is known gone or its node unreachable.
    pub fn stop(&self) -> Result<()> {
        match &self.target {
            Target::Local { node, .. } | Target::Supervised { node } => {
                if node.stop_local(self.id) {
                    Ok(())
                } else {
                    Err(self.not_found())
                }
            }
            Target::Remote { link, .. } => {
                link.send(&Header::Stop { target: self.id.0 }, |_| Ok(()))
            }
            Target::Gone { .. } => Err(self.not_found()),
        }
    }

    /// Tells `watcher` with a [`Terminated`] message when this actor stops, or when its node
    /// leaves or is declared down. If the actor is already gone, `watcher` is told at once.
    pub fn watch(&self, watcher: Recipient<Terminated>) {
        match &self.target {
            Target::Local { node, .. } | Target::Supervised { node } => {
                node.watch_local(self.id, watcher)
            }
            Target::Remote { link, .. } => link.watch(self.id, watcher),
            Target::Gone { node, .. } => watcher.do_send(Terminated {
                actor: self.id,
                node: node.clone(),
                reason: TerminationReason::NotFound,
            }),
        }
    }

    /// The reference as bytes, to hand to another node out of band (a file, a database, a
    /// command line). [`Node::actor_ref_from_bytes`](crate::Node::actor_ref_from_bytes) turns
    /// them back into a reference.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut buf = bytes::BytesMut::new();
        // Encoding a WireRef into memory cannot fail.
        let _ = encode_payload(&self.wire(), &mut buf);
        buf.to_vec()
    }

    fn wire(&self) -> WireRef {
        let (node, addr) = match &self.target {
            Target::Local { node, .. } | Target::Supervised { node } => {
                (node.info.id.clone(), node.info.addr)
            }
            Target::Remote { link, .. } => (link.node.clone(), link.addr),
            Target::Gone { node, addr, .. } => (node.clone(), *addr),
        };
        WireRef {
            node,
            addr,
            actor: self.id,
            actor_type: A::NAME.to_owned(),
        }
    }
}

/// A tell into a local mailbox. `wrap` forces the wrapped delivery (supervised targets).
#[inline]
fn tell_local<A, M>(
    id: ActorId,
    addr: &Addr<A>,
    node: &NodeShared,
    message: M,
    trace: Option<trace::TraceContext>,
    wrap: bool,
) -> std::result::Result<(), TellError<M>>
where
    A: Accepts<M>,
    M: RemoteMessage,
    M::Result: WireValue,
{
    if !addr.connected() {
        node.stats.dropped(DropReason::ActorStopped, 1);
        return Err(TellError {
            error: Error::ActorNotFound {
                node: node.info.id.clone(),
                actor: id,
                actor_type: A::NAME,
            },
            message,
        });
    }
    if !wrap && trace.is_none() && !crate::message::handle_spans_enabled() {
        // Nothing to trace and no reply to route: the plain actix path. A panic in the
        // handler still stops the actor and tells its watchers.
        A::deliver_plain(addr, message);
    } else {
        A::deliver(
            addr,
            Deliver {
                message,
                reply: None,
                trace,
                deadline: None,
                fence: None,
            },
        );
    }
    Ok(())
}

/// The span of one send: node and actor of the target, message name, trace position.
fn send_span(
    node: &NodeId,
    actor: ActorId,
    message: &'static str,
    kind: &'static str,
) -> tracing::Span {
    tracing::debug_span!(
        "actormesh.send",
        target_node = %node,
        actor = %actor,
        message,
        kind,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    )
}

/// The trace position of a send, recorded in its span; `None` when the span is disabled.
pub(crate) fn trace_of(span: &tracing::Span) -> Option<trace::TraceContext> {
    if span.is_disabled() {
        return None;
    }
    #[allow(unused_mut)]
    let mut ctx = trace::child_of_current();
    // With OpenTelemetry recording, the position carried to the other node is the span's own.
    #[cfg(feature = "otlp")]
    if let Some(otel) = trace::otel::position(span) {
        ctx = otel;
    }
    trace::record(span, &ctx);
    Some(ctx)
}

/// What a reference looks like on the wire.
#[derive(Serialize, Deserialize)]
struct WireRef {
    node: NodeId,
    addr: SocketAddr,
    actor: ActorId,
    actor_type: String,
}

impl<A: RemoteActor> Serialize for ActorRef<A> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.wire().serialize(serializer)
    }
}

impl<'de, A: RemoteActor> Deserialize<'de> for ActorRef<A> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let wire = WireRef::deserialize(deserializer)?;
        if wire.actor_type != A::NAME {
            return Err(D::Error::custom(format!(
                "reference to an actor of type `{}` where `{}` was expected",
                wire.actor_type,
                A::NAME
            )));
        }
        let node = decode_node().ok_or_else(|| {
            D::Error::custom("an ActorRef can only be decoded by an actormesh node (it arrived outside a message)")
        })?;
        ActorRef::resolve(&node, &wire.node, wire.addr, wire.actor)
            .map_err(|e| D::Error::custom(e.to_string()))
    }
}
