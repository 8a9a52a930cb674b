//! Delivering decoded messages into local actors: the typed dispatch handle of an actor, and
//! the reply channel of a local ask.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::dev::OneshotSender;
use actix::{Addr, Message};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Inbound, LocalDispatch};
use crate::core::wire::envelope::WireError;
use crate::message::{Declaration, Fate, RemoteActor, Reply};

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

/// A reply channel pair for one ask, and the future that waits on it.
pub(crate) fn reply_channel<M: Message>() -> (
    Reply<M>,
    impl std::future::Future<Output = Outcome<M::Result>>,
) {
    let (result_tx, result_rx): (OneshotSender<M::Result>, _) = oneshot::channel();
    let (fate_tx, fate_rx) = oneshot::channel::<Fate>();
    let wait = async move {
        // A panicking handler drops the result sender right after reporting: look at the
        // fate first so the caller learns of the panic (or that nothing ran), not just of a
        // stop.
        tokio::select! {
            biased;
            Ok(fate) = fate_rx => match fate {
                Fate::Panicked(text) => Outcome::Panicked(text),
                Fate::NotHandled => Outcome::NotHandled,
                Fate::Expired => Outcome::Expired,
            },
            result = result_rx => match result {
                Ok(value) => Outcome::Value(value),
                Err(_) => Outcome::Stopped,
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
