//! Requests from other nodes: one frame of envelopes at a time, each dispatched to its actor
//! or order handler; replies go back on the stream the request came on.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::reply::send_reply;
use super::{lock, write, AskReply, Inbound, NodeShared, Watcher};
use crate::core::terminated::TerminationReason;
use crate::core::wire::envelope::{Envelopes, Header, WireError};
use crate::core::wire::outbox::Outbox;
use crate::id::ActorId;
use crate::ratelog::warn_limited;
use crate::stats::DropReason;

impl NodeShared {
    /// Handles one frame of requests from a peer; replies go to `replies`.
    pub(crate) fn on_request_frame(self: &Arc<Self>, frame: Bytes, replies: &Arc<Outbox>) {
        for envelope in Envelopes::new(frame) {
            let (header, payload) = match envelope {
                Ok(ok) => ok,
                Err(e) => {
                    self.stats.dropped(DropReason::Malformed, 1);
                    warn_limited!(node = %self.info.id, error = %e, "dropped a malformed envelope");
                    continue;
                }
            };
            self.on_request(header, payload, replies);
        }
    }

    fn on_request(self: &Arc<Self>, header: Header, payload: Bytes, replies: &Arc<Outbox>) {
        match header {
            Header::Tell {
                target,
                message,
                trace,
            } => {
                let target = ActorId(target);
                let outcome = match self.deliverable(target) {
                    None => Err(WireError::ActorNotFound),
                    Some(handle) => handle.dispatch(
                        message,
                        Inbound {
                            node: self,
                            actor: target,
                            trace,
                            ask: None,
                            wrap: false,
                        },
                        &payload,
                    ),
                };
                if let Err(e) = outcome {
                    let reason = drop_reason(&e);
                    self.stats.dropped(reason, 1);
                    warn_limited!(node = %self.info.id, actor = %target, error = ?e, "dropped a remote tell");
                }
            }
            Header::Ask {
                id,
                target,
                message,
                timeout_ms,
                trace,
            } => {
                let target = ActorId(target);
                if self.stopping.load(Ordering::Acquire) {
                    self.stats.dropped(DropReason::ShuttingDown, 1);
                    send_reply::<()>(self, replies, id, Err(WireError::ShuttingDown));
                    return;
                }
                let deadline =
                    tokio::time::Instant::now() + Duration::from_millis(u64::from(timeout_ms));
                let outcome = match self.deliverable(target) {
                    None => Err(WireError::ActorNotFound),
                    Some(handle) => handle.dispatch(
                        message,
                        Inbound {
                            node: self,
                            actor: target,
                            trace,
                            ask: Some(AskReply {
                                id,
                                outbox: replies.clone(),
                                deadline,
                            }),
                            wrap: false,
                        },
                        &payload,
                    ),
                };
                if let Err(e) = outcome {
                    self.stats.dropped(drop_reason(&e), 1);
                    warn_limited!(node = %self.info.id, actor = %target, error = ?e, "refused a remote ask");
                    send_reply::<()>(self, replies, id, Err(e));
                }
            }
            Header::Spawn { id, actor_type } => {
                let outcome = if self.stopping.load(Ordering::Acquire) {
                    Err(WireError::ShuttingDown)
                } else {
                    match self.spawnables.get(actor_type.as_str()) {
                        Some(spawn) => spawn(self, &payload).map(|a| a.0),
                        None => Err(WireError::UnknownActorType { actor_type }),
                    }
                };
                send_reply(self, replies, id, outcome);
            }
            Header::SpawnReplica {
                id,
                actor_type,
                group,
                fence,
                singleton,
            } => {
                let node = self.clone();
                let replies = replies.clone();
                tokio::spawn(async move {
                    let outcome = node
                        .spawn_replica(&actor_type, &group, fence, singleton, &payload)
                        .await;
                    send_reply(&node, &replies, id, outcome.map(|a| a.0));
                });
            }
            Header::Retire {
                id,
                target,
                group,
                fence,
            } => {
                let node = self.clone();
                let replies = replies.clone();
                tokio::spawn(async move {
                    let outcome = node.retire(ActorId(target), &group, fence).await;
                    send_reply(&node, &replies, id, outcome);
                });
            }
            Header::Stop { target } => {
                if !self.stop_local(ActorId(target)) {
                    self.stats.dropped(DropReason::UnknownActor, 1);
                    tracing::debug!(node = %self.info.id, actor = target, "stop for an actor that is not here");
                }
            }
            Header::Watch { watch, target } => {
                let target = ActorId(target);
                let mut actors = write(&self.actors);
                let watcher = Watcher::Remote {
                    outbox: Arc::downgrade(replies),
                    watch,
                };
                match actors.extra_mut(target) {
                    Some(entry) => entry.watchers.push(watcher),
                    None => {
                        drop(actors);
                        self.notify_watcher(watcher, target, TerminationReason::NotFound);
                    }
                }
            }
            other @ (Header::Reply { .. } | Header::Terminated { .. }) => {
                self.stats.dropped(DropReason::Malformed, 1);
                warn_limited!(node = %self.info.id, header = ?other, "a reply-direction envelope arrived as a request; dropped");
            }
        }
    }

    /// Records a new inbound link's reply queue (flushed at shutdown).
    pub(crate) fn track_inbound(&self, outbox: &Arc<Outbox>) {
        let mut inbound = lock(&self.inbound);
        inbound.retain(|w| w.strong_count() > 0);
        inbound.push(Arc::downgrade(outbox));
    }
}

fn drop_reason(e: &WireError) -> DropReason {
    match e {
        WireError::ActorNotFound => DropReason::UnknownActor,
        WireError::UnknownMessage { .. } => DropReason::UnknownMessage,
        WireError::Codec(_) => DropReason::Decode,
        WireError::ActorStopped | WireError::HandlerPanicked(_) => DropReason::ActorStopped,
        WireError::DeadlineExpired => DropReason::DeadlineExpired,
        WireError::ShuttingDown => DropReason::ShuttingDown,
        WireError::UnknownActorType { .. } => DropReason::UnknownActor,
        WireError::Fenced => DropReason::ShuttingDown,
    }
}

impl crate::transport::server::Acceptor for NodeShared {
    fn node_id(&self) -> &crate::id::NodeId {
        &self.info.id
    }

    fn cluster(&self) -> &str {
        &self.info.cluster
    }

    fn limits(&self) -> (usize, usize) {
        (self.config.max_frame, self.config.send_queue_bytes)
    }

    fn is_stopping(&self) -> bool {
        NodeShared::is_stopping(self)
    }

    fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        NodeShared::shutdown_signal(self)
    }

    fn track_inbound(&self, outbox: &Arc<Outbox>) {
        NodeShared::track_inbound(self, outbox)
    }

    fn on_request_frame(self: &Arc<Self>, frame: Bytes, replies: &Arc<Outbox>) {
        NodeShared::on_request_frame(self, frame, replies)
    }

    fn spawn_reader<F: std::future::Future<Output = ()> + Send + 'static>(
        self: &Arc<Self>,
        reader: F,
    ) {
        match super::local::current(self) {
            Some(set) => {
                set.spawn_local(reader);
            }
            None => {
                tokio::spawn(reader);
            }
        }
    }
}
