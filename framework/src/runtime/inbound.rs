//! Requests from other nodes: one frame of envelopes at a time, each dispatched to its actor
//! or order handler; replies go back on the stream the request came on.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::entity::inbound::EntityRequest;
use super::reply::send_reply;
use super::{lock, write, AskReply, Inbound, NodeShared, Watcher};
use crate::core::fence::Admit;
use crate::core::terminated::TerminationReason;
use crate::core::wire::envelope::{Envelopes, Header, WireError};
use crate::core::wire::outbox::Outbox;
use crate::id::ActorId;
use crate::ratelog::warn_limited;
use crate::stats::DropReason;

impl NodeShared {
    /// Handles one frame of requests from a peer, read from a link accepted under lease
    /// `epoch`; replies go to `replies`. A frame read while the node's lease is in doubt is
    /// held until the store answers; one from a link of a lost lease is refused (`fence.rs`).
    pub(crate) fn on_request_frame(
        self: &Arc<Self>,
        frame: Bytes,
        replies: &Arc<Outbox>,
        epoch: u64,
    ) {
        match self.admit_frame(epoch) {
            Admit::Start => {}
            Admit::Hold => return self.hold(frame, replies, epoch),
            Admit::Refuse => return self.refuse_frame(frame, replies),
        }
        for envelope in Envelopes::new(frame) {
            let (header, payload) = match envelope {
                Ok(ok) => ok,
                Err(e) => {
                    self.stats.dropped(DropReason::Malformed, 1);
                    warn_limited!(node = %self.info.id, error = %e, "dropped a malformed envelope");
                    continue;
                }
            };
            self.on_request(header, payload, replies, epoch);
        }
    }

    fn on_request(
        self: &Arc<Self>,
        header: Header,
        payload: Bytes,
        replies: &Arc<Outbox>,
        epoch: u64,
    ) {
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
                            fence: None,
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
                deadline_unix_ms,
                trace,
            } => {
                let target = ActorId(target);
                if self.stopping.load(Ordering::Acquire) {
                    self.stats.dropped(DropReason::ShuttingDown, 1);
                    send_reply::<()>(self, replies, id, Err(WireError::ShuttingDown));
                    return;
                }
                let Some(left) = time_left(
                    timeout_ms,
                    deadline_unix_ms,
                    crate::id::unix_ms(std::time::SystemTime::now()),
                    self.config.max_clock_skew,
                ) else {
                    self.stats.dropped(DropReason::DeadlineExpired, 1);
                    warn_limited!(node = %self.info.id, actor = %target, "an ask arrived after its caller's deadline (it waited in a buffer or this node was frozen, or the clocks differ by more than the allowed skew); not started");
                    send_reply::<()>(self, replies, id, Err(WireError::DeadlineExpired));
                    return;
                };
                let deadline = tokio::time::Instant::now() + left;
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
                                epoch,
                            }),
                            wrap: false,
                            fence: None,
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
                        .spawn_replica(&actor_type, &group, fence, singleton, &payload, epoch)
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
            Header::EntityTell {
                kind,
                key,
                message,
                hops,
                version,
                trace,
            } => self.on_entity_request(
                EntityRequest {
                    kind,
                    key,
                    message,
                    payload,
                    trace,
                    ask: None,
                    hops,
                    version,
                },
                replies,
            ),
            Header::EntityAsk {
                id,
                kind,
                key,
                message,
                timeout_ms,
                deadline_unix_ms,
                trace,
            } => {
                let Some(left) = time_left(
                    timeout_ms,
                    deadline_unix_ms,
                    crate::id::unix_ms(std::time::SystemTime::now()),
                    self.config.max_clock_skew,
                ) else {
                    self.stats.dropped(DropReason::DeadlineExpired, 1);
                    send_reply::<()>(self, replies, id, Err(WireError::DeadlineExpired));
                    return;
                };
                let ask = AskReply {
                    id,
                    outbox: replies.clone(),
                    deadline: tokio::time::Instant::now() + left,
                    epoch,
                };
                self.on_entity_request(
                    EntityRequest {
                        kind,
                        key,
                        message,
                        payload,
                        trace,
                        ask: Some(ask),
                        hops: 0,
                        version: 0,
                    },
                    replies,
                )
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

/// The time an ask may still wait here: what the caller said it waits (`timeout_ms`, counted
/// from now), but never past the caller's absolute deadline, read on this node's clock with
/// up to `skew` of disagreement allowed between the two clocks. `None` when nothing is left:
/// the caller has given up, so the work must not start.
fn time_left(
    timeout_ms: u32,
    deadline_unix_ms: u64,
    now_unix_ms: u64,
    skew: Duration,
) -> Option<Duration> {
    let skew_ms = u64::try_from(skew.as_millis()).unwrap_or(u64::MAX);
    let by_clock = deadline_unix_ms
        .saturating_add(skew_ms)
        .saturating_sub(now_unix_ms);
    let left = u64::from(timeout_ms).min(by_clock);
    (left > 0).then(|| Duration::from_millis(left))
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
        WireError::NotMember => DropReason::Fenced,
        WireError::NotOwner => DropReason::UnknownActor,
        WireError::EntityBufferFull => DropReason::QueueFull,
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

    fn listen_limits(&self) -> crate::transport::listener::Limits {
        self.config.listen
    }

    fn tls(&self) -> Option<crate::transport::tls::LinkTls> {
        self.config.tls.clone()
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

    fn link_epoch(&self) -> u64 {
        NodeShared::link_epoch(self)
    }

    fn on_request_frame(self: &Arc<Self>, frame: Bytes, replies: &Arc<Outbox>, epoch: u64) {
        NodeShared::on_request_frame(self, frame, replies, epoch)
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

#[cfg(test)]
mod tests {
    use super::*;

    const SKEW: Duration = Duration::from_millis(500);

    #[test]
    fn the_callers_deadline_bounds_the_time_left() {
        let now = 1_000_000;
        // In time: the shorter of the two.
        assert_eq!(
            time_left(5_000, now + 5_000, now, SKEW),
            Some(Duration::from_millis(5_000))
        );
        assert_eq!(
            time_left(5_000, now + 1_000, now, SKEW),
            Some(Duration::from_millis(1_500))
        );
        // The ask waited 8 s in a frozen node's socket: its caller gave up 3 s ago.
        assert_eq!(time_left(5_000, now - 3_000, now, SKEW), None);
        // Within the allowed skew, a deadline just past on this clock still runs briefly.
        assert_eq!(
            time_left(5_000, now - 200, now, SKEW),
            Some(Duration::from_millis(300))
        );
        assert_eq!(time_left(5_000, now - 500, now, SKEW), None);
        // Absurd values do not overflow.
        assert_eq!(
            time_left(u32::MAX, u64::MAX, now, Duration::MAX),
            Some(Duration::from_millis(u64::from(u32::MAX)))
        );
        assert_eq!(time_left(5_000, 0, u64::MAX, SKEW), None);
    }
}
