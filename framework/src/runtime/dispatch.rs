//! Delivering decoded messages into local actors: the typed dispatch handle of an actor, and
//! the reply channel of a local ask.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::dev::OneshotSender;
use actix::{Addr, Message};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::panics::Fate;
use super::{Inbound, LocalDispatch};
use crate::core::wire::envelope::WireError;
use crate::message::{Declaration, RemoteActor, Reply};

/// The typed handle behind [`LocalDispatch`].
pub(crate) struct Typed<A: RemoteActor> {
    pub(crate) addr: Addr<A>,
    pub(crate) declaration: Arc<Declaration<A>>,
    /// Supervised actors always get the wrapped delivery, whose panic catching tells the
    /// supervisor that the actor failed.
    pub(crate) supervised: bool,
    /// Set by `stop` (it fits in the padding after `supervised`: no memory per actor).
    pub(crate) stopping: AtomicBool,
}

impl<A: RemoteActor> LocalDispatch for Typed<A> {
    fn dispatch(
        &self,
        message: u64,
        inbound: Inbound<'_>,
        payload: &[u8],
    ) -> Result<(), WireError> {
        match self.declaration.handlers.get(&message) {
            Some((name, dispatch)) => {
                if let Some(m) = &inbound.node.metrics {
                    m.message(name, crate::metrics::Direction::Inbound);
                }
                dispatch(
                    &self.addr,
                    Inbound {
                        wrap: self.supervised,
                        ..inbound
                    },
                    payload,
                )
            }
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
        self.stopping.store(true, Ordering::Release);
        self.addr.do_send(crate::message::Stop);
    }

    fn stop_requested(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

/// How an ask ended, before it is turned into a local or a wire error.
pub(crate) enum Outcome<T> {
    Value(T),
    /// The actor stopped while it held the message (its handler had started).
    Stopped,
    /// The actor never started handling the message.
    NotHandled,
    Panicked(String),
    Expired,
}

/// How an ask ended: its result, or what its fate says of the missing result (sent before
/// the result sender goes); without a word, the actor stopped while it held the ask.
fn ended<T, E>(result: Result<T, E>, fate: Option<Fate>) -> Outcome<T> {
    match (result, fate) {
        (Ok(value), _) => Outcome::Value(value),
        (Err(_), Some(Fate::Panicked(text))) => Outcome::Panicked(text),
        (Err(_), Some(Fate::NotHandled)) => Outcome::NotHandled,
        (Err(_), Some(Fate::Expired)) => Outcome::Expired,
        (Err(_), Some(Fate::Started(notice))) => match notice.panic() {
            Some(text) => Outcome::Panicked(text.to_owned()),
            None => Outcome::Stopped,
        },
        (Err(_), None) => Outcome::Stopped,
    }
}

/// A reply channel pair for one ask, and the future that waits on it.
pub(crate) fn reply_channel<M: Message>() -> (
    Reply<M>,
    impl std::future::Future<Output = Outcome<M::Result>>,
) {
    let (result_tx, result_rx): (OneshotSender<M::Result>, _) = oneshot::channel();
    let (fate_tx, fate_rx) = oneshot::channel::<Fate>();
    let wait = async move {
        let (mut result_rx, mut fate_rx) = (result_rx, fate_rx);
        tokio::select! {
            biased;
            // The result first: an ask answered keeps its answer, whatever came after.
            result = &mut result_rx => ended(result, fate_rx.try_recv().ok()),
            fate = &mut fate_rx => match fate {
                // The handler runs: its result, or why none came.
                Ok(Fate::Started(notice)) => {
                    ended(result_rx.await, Some(Fate::Started(notice)))
                }
                Ok(fate) => ended(Err(()), Some(fate)),
                Err(_) => ended(result_rx.await, None),
            },
        }
    };
    (
        Reply {
            result: Some(result_tx),
            fate: Some(fate_tx),
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
