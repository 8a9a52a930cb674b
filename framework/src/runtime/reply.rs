//! Replies to asks from other nodes: exactly one reply leaves for every ask.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::panics::Notice;
use super::{InflightGuard, NodeShared};
use crate::core::wire::envelope::{encode_payload, Header, WireError};
use crate::core::wire::outbox::{Outbox, PushError};
use crate::stats::DropReason;

/// The return address of an ask from another node, carried into the actor with the message.
///
/// Exactly one reply leaves for every ask: the handler's result, its panic, the expiry of
/// the caller's deadline, "stopped while handling" when an asynchronous handler's result
/// never came, or, if the message is dropped before its handler ran (the actor stopped with
/// it in its mailbox), "not running, not handled" sent when this is dropped.
pub(crate) struct RemoteReply {
    pub(crate) id: u64,
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) guard: Option<InflightGuard>,
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

    /// Replies when an asynchronous handler's result arrives, or at the deadline. A result
    /// sender gone without a result means the actor stopped while handling the ask, or, if
    /// the actor's `notice` is set, that its task panicked.
    pub(crate) fn send_later<T: serde::Serialize + Send + 'static>(
        self,
        result: oneshot::Receiver<T>,
        notice: Option<Arc<Notice>>,
        deadline: Option<std::time::Instant>,
    ) {
        let deadline = deadline.map_or_else(
            || Instant::now() + Duration::from_secs(3600),
            Instant::from_std,
        );
        tokio::spawn(async move {
            match tokio::time::timeout_at(deadline, result).await {
                Ok(Ok(value)) => self.send(Ok(value)),
                Ok(Err(_)) => {
                    let error = match notice.as_deref().and_then(Notice::panic) {
                        Some(text) => WireError::HandlerPanicked(text.to_owned()),
                        None => WireError::ActorStopped,
                    };
                    self.send::<()>(Err(error))
                }
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
                Err(WireError::ActorNotFound),
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
