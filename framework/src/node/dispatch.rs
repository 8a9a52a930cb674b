//! Delivering decoded messages into local actors, and sending replies back.

use std::any::Any;
use std::sync::Arc;

use actix::dev::OneshotSender;
use actix::{Addr, Handler, Message};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::NodeShared;
use crate::actor_ref::with_decode_node;
use crate::id::ActorId;
use crate::message::{Declaration, Deliver, RemoteActor, RemoteMessage, Reply, ReplyTo, WireValue};
use crate::stats::DropReason;
use crate::trace::TraceContext;
use crate::wire::envelope::{decode_payload, encode_payload, Header, WireError};
use crate::wire::outbox::{Outbox, PushError};

/// Decodes one message type from a payload and delivers it into an actor of type `A`.
pub(crate) type DispatchFn<A> = fn(&Addr<A>, Inbound<'_>, &[u8]) -> Result<(), WireError>;

/// Where an inbound message came from and where its reply goes.
pub(crate) struct Inbound<'a> {
    pub(crate) node: &'a Arc<NodeShared>,
    pub(crate) actor: ActorId,
    pub(crate) trace: Option<TraceContext>,
    pub(crate) ask: Option<AskReply>,
    /// Deliver wrapped even when nothing is traced (the target is supervised).
    pub(crate) wrap: bool,
}

/// The return address of an ask.
pub(crate) struct AskReply {
    pub(crate) id: u64,
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) deadline: Instant,
}

/// A local actor as the transport sees it: a type name and a dispatch table.
pub(crate) trait LocalDispatch: Send + Sync {
    fn dispatch(&self, message: u64, inbound: Inbound<'_>, payload: &[u8])
        -> Result<(), WireError>;
    fn type_name(&self) -> &'static str;
    fn as_any(&self) -> &dyn Any;
    /// Asks the actor to stop after the messages already in its mailbox.
    fn stop(&self);
}

/// The typed handle behind [`LocalDispatch`].
pub(crate) struct Typed<A: RemoteActor> {
    pub(crate) addr: Addr<A>,
    pub(crate) declaration: Arc<Declaration<A>>,
    /// Supervised actors always get the wrapped delivery, whose panic catching tells the
    /// supervisor that the actor failed.
    pub(crate) supervised: bool,
}

impl<A: RemoteActor> LocalDispatch for Typed<A> {
    fn dispatch(
        &self,
        message: u64,
        inbound: Inbound<'_>,
        payload: &[u8],
    ) -> Result<(), WireError> {
        match self.declaration.handlers.get(&message) {
            Some((_, dispatch)) => dispatch(
                &self.addr,
                Inbound {
                    wrap: self.supervised,
                    ..inbound
                },
                payload,
            ),
            None => Err(WireError::UnknownMessage {
                actor_type: A::NAME.to_owned(),
                message,
            }),
        }
    }

    fn type_name(&self) -> &'static str {
        A::NAME
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn stop(&self) {
        self.addr.do_send(crate::message::Stop);
    }
}

/// How an ask ended, before it is turned into a local or a wire error.
pub(crate) enum Outcome<T> {
    Value(T),
    Stopped,
    Panicked(String),
    Expired,
}

/// A reply channel pair for one ask, and the future that waits on it.
pub(crate) fn reply_channel<M: Message>() -> (
    Reply<M>,
    impl std::future::Future<Output = Outcome<M::Result>>,
) {
    let (result_tx, result_rx): (OneshotSender<M::Result>, _) = oneshot::channel();
    let (panic_tx, panic_rx) = oneshot::channel::<String>();
    let wait = async move {
        // A panicking handler drops the result sender right after reporting: look at the
        // panic report first so the caller learns of the panic, not just of a stop.
        tokio::select! {
            biased;
            Ok(text) = panic_rx => Outcome::Panicked(text),
            result = result_rx => match result {
                Ok(value) => Outcome::Value(value),
                Err(_) => Outcome::Stopped,
            },
        }
    };
    (
        Reply {
            result: result_tx,
            panic: panic_tx,
        },
        wait,
    )
}

/// Waits for an ask's outcome until `deadline`.
pub(crate) async fn outcome_until<T>(
    deadline: Instant,
    wait: impl std::future::Future<Output = Outcome<T>>,
) -> Outcome<T> {
    tokio::time::timeout_at(deadline, wait)
        .await
        .unwrap_or(Outcome::Expired)
}

/// The [`DispatchFn`] of message type `M` for actor type `A`.
pub(crate) fn dispatch<A, M>(
    addr: &Addr<A>,
    inbound: Inbound<'_>,
    payload: &[u8],
) -> Result<(), WireError>
where
    A: RemoteActor + Handler<Deliver<M>> + Handler<M>,
    M: RemoteMessage,
    M::Result: WireValue,
{
    let _span = tracing::debug_span!(
        "actormesh.deliver",
        node = %inbound.node.info.id,
        actor = %inbound.actor,
        message = M::NAME,
    )
    .entered();
    let message: M =
        with_decode_node(inbound.node, || decode_payload(payload)).map_err(WireError::Codec)?;
    if !addr.connected() {
        return Err(WireError::ActorStopped);
    }
    match inbound.ask {
        None if !inbound.wrap
            && inbound.trace.is_none()
            && !crate::message::handle_spans_enabled() =>
        {
            addr.do_send(message)
        }
        None => addr.do_send(Deliver {
            message,
            reply: None,
            trace: inbound.trace,
            deadline: None,
        }),
        Some(ask) => {
            let node = inbound.node;
            node.asks_handled
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            addr.do_send(Deliver {
                message,
                reply: Some(ReplyTo::Remote(RemoteReply {
                    id: ask.id,
                    outbox: ask.outbox,
                    guard: Some(node.inflight_guard()),
                })),
                trace: inbound.trace,
                deadline: Some(ask.deadline.into_std()),
            });
        }
    }
    Ok(())
}

/// The return address of an ask from another node, carried into the actor with the message.
///
/// Exactly one reply leaves for every ask: the handler's result, its panic, the expiry of
/// the caller's deadline, or, if the message is dropped unhandled (the actor stopped), an
/// "actor stopped" reply sent when this is dropped.
pub(crate) struct RemoteReply {
    pub(crate) id: u64,
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) guard: Option<super::InflightGuard>,
}

impl RemoteReply {
    /// Queues the reply.
    pub(crate) fn send<T: serde::Serialize>(mut self, outcome: Result<T, WireError>) {
        if let Some(guard) = self.guard.take() {
            send_reply(guard.node(), &self.outbox, self.id, outcome);
        }
    }

    /// The caller's deadline passed before the handler ran.
    pub(crate) fn expired(self) {
        if let Some(guard) = &self.guard {
            guard.node().stats.dropped(DropReason::DeadlineExpired, 1);
        }
        self.send::<()>(Err(WireError::DeadlineExpired));
    }

    /// Replies when an asynchronous handler's result arrives, or at the deadline.
    pub(crate) fn send_later<T: serde::Serialize + Send + 'static>(
        self,
        result: oneshot::Receiver<T>,
        deadline: Option<std::time::Instant>,
    ) {
        let deadline = deadline.map_or_else(
            || Instant::now() + Duration::from_secs(3600),
            Instant::from_std,
        );
        tokio::spawn(async move {
            match tokio::time::timeout_at(deadline, result).await {
                Ok(Ok(value)) => self.send(Ok(value)),
                Ok(Err(_)) => self.send::<()>(Err(WireError::ActorStopped)),
                Err(_) => self.expired(),
            }
        });
    }
}

impl Drop for RemoteReply {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            send_reply::<()>(
                guard.node(),
                &self.outbox,
                self.id,
                Err(WireError::ActorStopped),
            );
        }
    }
}

/// Queues the reply of ask `id` on `outbox`.
pub(crate) fn send_reply<T: serde::Serialize>(
    node: &NodeShared,
    outbox: &Outbox,
    id: u64,
    outcome: Result<T, WireError>,
) {
    let pushed = match outcome {
        Ok(value) => match outbox.push(&Header::Reply { id, error: None }, |b| {
            encode_payload(&value, b)
        }) {
            Err(PushError::Encode(e)) => outbox.push(
                &Header::Reply {
                    id,
                    error: Some(WireError::Codec(format!("reply did not encode: {e}"))),
                },
                |_| Ok::<_, String>(()),
            ),
            Err(PushError::TooLarge(size)) => outbox.push(
                &Header::Reply {
                    id,
                    error: Some(WireError::Codec(format!(
                        "reply of {size} bytes exceeds the maximum frame size"
                    ))),
                },
                |_| Ok::<_, String>(()),
            ),
            other => other,
        },
        Err(e) => outbox.push(&Header::Reply { id, error: Some(e) }, |_| {
            Ok::<_, String>(())
        }),
    };
    if let Err(e) = pushed {
        let reason = match e {
            PushError::Full => DropReason::QueueFull,
            _ => DropReason::LinkFailed,
        };
        node.stats.dropped(reason, 1);
        tracing::debug!(node = %node.info.id, ask = id, error = ?e, "reply dropped: the caller's link is gone or its queue is full");
    }
}
