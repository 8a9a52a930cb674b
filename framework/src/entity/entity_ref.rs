//! [`EntityRef`]: a reference to a keyed entity, on whichever node hosts it.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use bytes::{Bytes, BytesMut};

use super::Entity;
use crate::actor_ref::trace_of;
use crate::core::wire::envelope::{decode_payload, encode_payload, Header};
use crate::error::{Error, Result, TellError};
use crate::id::ActorId;
use crate::message::{Accepts, Deliver, RemoteMessage, ReplyTo, WireValue};
use crate::runtime::decode::with_decode_node;
use crate::runtime::dispatch::{outcome_until, reply_channel, Outcome, Typed};
use crate::runtime::entity::{tell_header, KindHost, Pending, PendingBody, Route, Target};
use crate::runtime::NodeShared;
use crate::stats::DropReason;
use crate::store::printable_key;
use crate::trace::TraceContext;
use tracing::Instrument;

/// The span of one send to an entity: its type, key, message and the trace position.
fn entity_span(
    key: &[u8],
    kind: &'static str,
    message: &'static str,
    op: &'static str,
) -> tracing::Span {
    tracing::debug_span!(
        "actormesh.send",
        entity_kind = kind,
        entity_key = %printable_key(key),
        message,
        kind = op,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    )
}

/// The pause before an ask that a node refused unhandled (its shard had just moved) is
/// routed again, when nothing changed meanwhile.
const REROUTE_PAUSE: Duration = Duration::from_millis(20);

/// A reference to the entity of type `E` with one key, from any node: the first message
/// activates it where its shard is hosted. Cheap to clone; get one with
/// [`Node::entity`](crate::Node::entity).
///
/// - [`tell`](Self::tell): at-most-once; a tell accepted while the entity's shard is moving
///   is held (bounded) and delivered to the new host.
/// - [`ask`](Self::ask): waits for a route while the shard moves, up to its deadline; a node
///   that no longer hosts the shard refuses it unhandled and it is routed again.
/// - [`ask_idempotent`](Self::ask_idempotent): also retries failures after which the
///   message may or may not have been handled (a node died), until the deadline.
pub struct EntityRef<E: Entity> {
    host: Arc<KindHost>,
    key: Arc<[u8]>,
    node: Arc<NodeShared>,
    _type: PhantomData<fn() -> E>,
}

impl<E: Entity> Clone for EntityRef<E> {
    fn clone(&self) -> Self {
        EntityRef {
            host: self.host.clone(),
            key: self.key.clone(),
            node: self.node.clone(),
            _type: PhantomData,
        }
    }
}

impl<E: Entity> std::fmt::Debug for EntityRef<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntityRef")
            .field("kind", &E::KIND)
            .field("key", &printable_key(&self.key))
            .finish()
    }
}

impl<E: Entity> EntityRef<E> {
    pub(crate) fn new(host: Arc<KindHost>, key: &[u8], node: Arc<NodeShared>) -> Self {
        EntityRef {
            host,
            key: Arc::from(key),
            node,
            _type: PhantomData,
        }
    }

    /// The entity's key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    fn unavailable(&self, why: String) -> Error {
        Error::EntityUnavailable {
            kind: E::KIND,
            key: printable_key(&self.key),
            why,
        }
    }

    /// Sends `message` without waiting (at-most-once). Fails at once when this node's buffer
    /// for moving shards of the type is full, or the message does not encode.
    pub fn tell<M>(&self, message: M) -> std::result::Result<(), TellError<M>>
    where
        E: Accepts<M>,
        M: RemoteMessage,
        M::Result: WireValue,
    {
        if self.host.is_full() {
            return Err(TellError {
                error: Error::EntityBufferFull {
                    kind: E::KIND,
                    limit: self.host.config.buffer,
                },
                message,
            });
        }
        let span = entity_span(&self.key, E::KIND, M::NAME, "tell");
        let trace = trace_of(&span);
        let key = self.key.to_vec();
        let send_key = key.clone();
        let send = move |node: &Arc<NodeShared>, target: Target| {
            send_tell::<E, M>(node, send_key, message, trace, target)
        };
        self.host.submit(
            &self.node,
            Pending {
                key,
                body: PendingBody::Typed(Box::new(send)),
            },
        );
        Ok(())
    }

    /// Sends `message` and waits for the reply, up to the node's ask timeout.
    pub async fn ask<M>(&self, message: M) -> Result<M::Result>
    where
        E: Accepts<M>,
        M: RemoteMessage,
        M::Result: WireValue,
    {
        self.ask_timeout(message, self.node.config.ask_timeout)
            .await
    }

    /// Sends `message` and waits for the reply up to `timeout`: the wait for a route while
    /// the entity's shard moves counts in it. Fails with [`Error::EntityUnavailable`] when
    /// no route came in time (not handled).
    pub async fn ask_timeout<M>(&self, message: M, timeout: Duration) -> Result<M::Result>
    where
        E: Accepts<M>,
        M: RemoteMessage,
        M::Result: WireValue,
    {
        let span = entity_span(&self.key, E::KIND, M::NAME, "ask");
        let trace = trace_of(&span);
        self.ask_traced(message, timeout, trace)
            .instrument(span)
            .await
    }

    async fn ask_traced<M>(
        &self,
        message: M,
        timeout: Duration,
        trace: Option<TraceContext>,
    ) -> Result<M::Result>
    where
        E: Accepts<M>,
        M: RemoteMessage,
        M::Result: WireValue,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut encoded: Option<Bytes> = None;
        let mut message = Some(message);
        for _ in 0..100_000 {
            let changed = self.host.changed.notified();
            tokio::pin!(changed);
            let route = self.host.route(&self.node, &self.key, changed.as_mut());
            match route {
                Route::Go(Target::Local { id, handle, fence }) => {
                    let Some(addr) = typed_addr::<E>(&handle) else {
                        return Err(self.unavailable("its activation has another type".into()));
                    };
                    let Some(message) = message.take() else {
                        break;
                    };
                    let delivery = Deliver {
                        message,
                        reply: None,
                        trace,
                        deadline: Some(deadline.into_std()),
                        fence,
                    };
                    return self.ask_local(&addr, id, delivery, timeout).await;
                }
                Route::Go(Target::Remote(link, _)) => {
                    let Some(m) = message.as_ref() else { break };
                    let payload = match &encoded {
                        Some(p) => p.clone(),
                        None => {
                            let mut buf = BytesMut::new();
                            encode_payload(m, &mut buf).map_err(Error::Codec)?;
                            let p = buf.freeze();
                            encoded = Some(p.clone());
                            p
                        }
                    };
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if left.is_zero() {
                        return Err(Error::Timeout { after: timeout });
                    }
                    let kind = E::KIND;
                    let key = self.key.to_vec();
                    let timeout_ms = u32::try_from(left.as_millis()).unwrap_or(u32::MAX);
                    let deadline_unix_ms = crate::id::unix_ms(std::time::SystemTime::now() + left);
                    let answer = link
                        .request(
                            (ActorId(0), E::KIND),
                            left,
                            |id| Header::EntityAsk {
                                id,
                                kind: kind.to_owned(),
                                key,
                                message: M::WIRE_ID,
                                timeout_ms,
                                deadline_unix_ms,
                                trace,
                            },
                            |buf| {
                                buf.extend_from_slice(&payload);
                                Ok(())
                            },
                        )
                        .await;
                    match answer {
                        Ok(bytes) => {
                            return with_decode_node(&self.node, || {
                                decode_payload::<M::Result>(&bytes)
                            })
                            .map_err(Error::Codec)
                        }
                        // Refused unhandled: its shard moved, or its node was fenced.
                        Err(Error::EntityUnavailable { .. } | Error::NodeFenced { .. }) => {
                            let pause = tokio::time::sleep(REROUTE_PAUSE);
                            tokio::select! {
                                _ = changed => {}
                                _ = pause => {}
                            }
                        }
                        Err(Error::EntityBufferFull { .. }) => {
                            return Err(Error::EntityBufferFull {
                                kind: E::KIND,
                                limit: self.host.config.buffer,
                            })
                        }
                        Err(e) => return Err(e),
                    }
                }
                Route::Go(Target::Fail(e)) => {
                    return Err(self.unavailable(format!("refused: {e:?}")));
                }
                Route::Wait => {
                    if !self.host.wait_slot() {
                        return Err(Error::EntityBufferFull {
                            kind: E::KIND,
                            limit: self.host.config.buffer,
                        });
                    }
                    let expired = tokio::select! {
                        _ = changed => false,
                        _ = tokio::time::sleep_until(deadline) => true,
                    };
                    self.host.end_wait();
                    if expired {
                        return Err(self.unavailable(self.host.why_waiting(&self.key)));
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.unavailable(self.host.why_waiting(&self.key)));
            }
        }
        Err(self.unavailable("routed too many times".into()))
    }

    /// Delivers an ask into a local activation and waits for its outcome until the
    /// delivery's deadline.
    async fn ask_local<M>(
        &self,
        addr: &Addr<E>,
        id: ActorId,
        mut delivery: Deliver<M>,
        timeout: Duration,
    ) -> Result<M::Result>
    where
        E: Accepts<M>,
        M: RemoteMessage,
        M::Result: WireValue,
    {
        let (reply, wait) = reply_channel::<M>();
        let deadline = delivery
            .deadline
            .map_or_else(tokio::time::Instant::now, tokio::time::Instant::from_std);
        delivery.reply = Some(ReplyTo::Caller(reply));
        E::deliver(addr, delivery);
        match outcome_until(deadline, wait).await {
            Outcome::Value(v) => Ok(v),
            Outcome::Stopped => Err(Error::ActorStopped {
                node: self.node.info.id.clone(),
                actor: id,
                actor_type: E::NAME,
            }),
            Outcome::NotHandled => Err(self.unavailable(
                "its activation stopped or was fenced before handling the message (not handled)"
                    .into(),
            )),
            Outcome::Panicked(text) => Err(Error::HandlerPanicked {
                node: self.node.info.id.clone(),
                actor: id,
                actor_type: E::NAME,
                message: text,
            }),
            Outcome::Expired => Err(Error::Timeout { after: timeout }),
        }
    }

    /// Like [`ask`](Self::ask), retrying every transient failure (a node that died or was
    /// fenced, a moving shard, a lost link, an activation that stopped) until the node's ask
    /// timeout: for messages marked [`Idempotent`](crate::Idempotent), safe to handle twice.
    /// A handler panic is not retried. Returns the last error when the deadline passes.
    pub async fn ask_idempotent<M>(&self, message: M) -> Result<M::Result>
    where
        E: Accepts<M>,
        M: crate::group::Idempotent,
        M::Result: WireValue,
    {
        self.ask_idempotent_timeout(message, self.node.config.ask_timeout)
            .await
    }

    /// [`ask_idempotent`](Self::ask_idempotent) within `timeout` in all.
    pub async fn ask_idempotent_timeout<M>(
        &self,
        message: M,
        timeout: Duration,
    ) -> Result<M::Result>
    where
        E: Accepts<M>,
        M: crate::group::Idempotent,
        M::Result: WireValue,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(10);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout { after: timeout });
            }
            match self.ask_timeout(message.clone(), left).await {
                Ok(v) => return Ok(v),
                Err(e) if retryable(&e) => {
                    if tokio::time::Instant::now() + pause >= deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Whether an idempotent ask tries again after `e`.
fn retryable(e: &Error) -> bool {
    e.is_transient()
        || matches!(
            e,
            Error::NodeDown { .. } | Error::ActorNotFound { .. } | Error::ActorStopped { .. }
        )
}

/// The typed address behind a dispatch handle of an activation of `E`.
fn typed_addr<E: Entity>(handle: &Arc<dyn crate::runtime::LocalDispatch>) -> Option<Addr<E>> {
    handle
        .as_any()
        .downcast_ref::<Typed<E>>()
        .map(|t| t.addr.clone())
}

/// Delivers a typed tell where it is to go.
fn send_tell<E, M>(
    node: &Arc<NodeShared>,
    key: Vec<u8>,
    message: M,
    trace: Option<TraceContext>,
    target: Target,
) where
    E: Entity + Accepts<M>,
    M: RemoteMessage,
    M::Result: WireValue,
{
    match target {
        Target::Local { handle, fence, .. } => match typed_addr::<E>(&handle) {
            Some(addr) => E::deliver(
                &addr,
                Deliver {
                    message,
                    reply: None,
                    trace,
                    deadline: None,
                    fence,
                },
            ),
            None => node.stats.dropped(DropReason::UnknownActor, 1),
        },
        Target::Remote(link, version) => {
            let header = tell_header(E::KIND, key, M::WIRE_ID, trace, 1, version);
            if let Err(e) = link.send(&header, |buf| encode_payload(&message, buf)) {
                node.stats.dropped(DropReason::LinkFailed, 1);
                crate::ratelog::warn_limited!(node = %node.info.id, kind = E::KIND, error = %e, "an entity tell could not be sent");
            }
        }
        Target::Fail(e) => {
            node.stats.dropped(DropReason::QueueFull, 1);
            crate::ratelog::warn_limited!(node = %node.info.id, kind = E::KIND, error = ?e, "an entity tell was refused");
        }
    }
}
