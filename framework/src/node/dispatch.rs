//! Delivering decoded messages into local actors, and sending replies back.

use std::any::Any;
use std::sync::Arc;

use actix::dev::OneshotSender;
use actix::{Addr, Handler, Message};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::NodeShared;
use crate::actor_ref::with_decode_node;
use crate::id::ActorId;
use crate::message::{Declaration, Deliver, RemoteActor, RemoteMessage, Reply, WireValue};
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
}

/// The typed handle behind [`LocalDispatch`].
pub(crate) struct Typed<A: RemoteActor> {
    pub(crate) addr: Addr<A>,
    pub(crate) declaration: Arc<Declaration<A>>,
}

impl<A: RemoteActor> LocalDispatch for Typed<A> {
    fn dispatch(
        &self,
        message: u64,
        inbound: Inbound<'_>,
        payload: &[u8],
    ) -> Result<(), WireError> {
        match self.declaration.handlers.get(&message) {
            Some((_, dispatch)) => dispatch(&self.addr, inbound, payload),
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
    A: RemoteActor + Handler<Deliver<M>>,
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
        None => addr.do_send(Deliver {
            message,
            reply: None,
            trace: inbound.trace,
            deadline: None,
        }),
        Some(ask) => {
            let (reply, wait) = reply_channel::<M>();
            addr.do_send(Deliver {
                message,
                reply: Some(reply),
                trace: inbound.trace,
                deadline: Some(ask.deadline.into_std()),
            });
            inbound
                .node
                .asks_handled
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let guard = inbound.node.inflight_guard();
            tokio::spawn(async move {
                let outcome = match outcome_until(ask.deadline, wait).await {
                    Outcome::Value(v) => Ok(v),
                    Outcome::Stopped => Err(WireError::ActorStopped),
                    Outcome::Panicked(text) => Err(WireError::HandlerPanicked(text)),
                    Outcome::Expired => {
                        guard.0.stats.dropped(DropReason::DeadlineExpired, 1);
                        tracing::debug!(
                            ask = ask.id,
                            "the caller's deadline passed before a reply"
                        );
                        Err(WireError::DeadlineExpired)
                    }
                };
                send_reply(&guard.0, &ask.outbox, ask.id, outcome);
            });
        }
    }
    Ok(())
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
