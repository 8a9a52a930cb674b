//! Entity envelopes from other nodes: routed like a local message (an activation here, a
//! queue while the shard moves, or on to the node that hosts it now).

use std::sync::Arc;

use bytes::Bytes;

use super::{Pending, PendingBody};
use crate::core::wire::envelope::WireError;
use crate::core::wire::outbox::Outbox;
use crate::ratelog::warn_limited;
use crate::runtime::reply::send_reply;
use crate::runtime::{AskReply, NodeShared};
use crate::stats::DropReason;
use crate::trace::TraceContext;

/// An entity request as read from a link.
pub(crate) struct EntityRequest {
    pub(crate) kind: String,
    pub(crate) key: Vec<u8>,
    pub(crate) message: u64,
    pub(crate) payload: Bytes,
    pub(crate) trace: Option<TraceContext>,
    pub(crate) ask: Option<AskReply>,
    pub(crate) hops: u8,
    /// The assignment version the sender routed it by (tells; 0 for asks).
    pub(crate) version: u64,
}

impl NodeShared {
    /// Routes an entity request from another node.
    pub(crate) fn on_entity_request(
        self: &Arc<Self>,
        request: EntityRequest,
        replies: &Arc<Outbox>,
    ) {
        let EntityRequest {
            kind,
            key,
            message,
            payload,
            trace,
            ask,
            hops,
            version,
        } = request;
        let Some(host) = self.entity_kind(&kind) else {
            self.stats.dropped(DropReason::UnknownActor, 1);
            warn_limited!(node = %self.info.id, %kind, "a message for an entity type this node does not know; refused");
            if let Some(ask) = ask {
                send_reply::<()>(
                    self,
                    replies,
                    ask.id,
                    Err(WireError::UnknownActorType { actor_type: kind }),
                );
            }
            return;
        };
        host.submit(
            self,
            Pending {
                key,
                body: PendingBody::Wire {
                    message,
                    payload,
                    trace,
                    ask,
                    hops,
                    version,
                },
            },
        );
    }
}
