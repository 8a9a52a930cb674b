//! The actor table's life cycle: an actor stopped (restart it or remove it and tell its
//! watchers), stop requests, watches, and typed access to local actors.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::{Addr, Recipient};

use super::dispatch::Typed;
use super::{read, write, LocalDispatch, NodeShared, Watcher};
use crate::core::terminated::{Terminated, TerminationReason};
use crate::core::wire::envelope::{Header, WireTermination};
use crate::error::{Error, Result};
use crate::id::ActorId;
use crate::message::RemoteActor;
use crate::stats::DropReason;
use crate::supervise::Decision;

impl NodeShared {
    /// Whether actor `id` runs here under supervision.
    pub(crate) fn is_supervised(&self, id: ActorId) -> bool {
        read(&self.actors).supervisor(id).is_some()
    }

    /// Called when an actor's guard drops (`failed`: a handler panicked): restarts it if it
    /// is supervised and its policy says so; otherwise removes it and tells its watchers.
    pub(crate) fn actor_stopped(self: &Arc<Self>, id: ActorId, failed: bool) {
        let supervisor = {
            let actors = read(&self.actors);
            // Asked to stop (`ActorRef::stop`, a retirement): not restarted.
            let stop_requested = actors.handles.get(&id).is_some_and(|h| h.stop_requested());
            actors
                .extras
                .get(&id)
                .filter(|_| !stop_requested)
                .and_then(|e| e.supervisor.clone())
        };
        if let Some(supervisor) = supervisor.filter(|_| !self.is_stopping()) {
            match supervisor.decide(failed) {
                Decision::Restart(after) => {
                    if let Ok(rt) = tokio::runtime::Handle::try_current() {
                        tracing::info!(node = %self.info.id, actor = %id, failed, ?after, "restarting a supervised actor");
                        let node = self.clone();
                        rt.spawn(async move {
                            tokio::time::sleep(after).await;
                            if node.is_stopping() {
                                return;
                            }
                            // A stop requested during the backoff is final too.
                            if node.handle_of(id).is_some_and(|h| h.stop_requested()) {
                                node.actor_stopped(id, false);
                            } else {
                                supervisor.respawn(&node, id);
                            }
                        });
                        return;
                    }
                }
                Decision::GiveUp => {
                    tracing::error!(node = %self.info.id, actor = %id, "supervised actor restarted too often; giving up");
                }
                Decision::Stop => {}
            }
        }
        let Some((handle, entry)) = write(&self.actors).remove(id) else {
            return;
        };
        self.entity_stopped(id);
        let stopping = self.stopping.load(Ordering::Acquire);
        let reason = if stopping {
            TerminationReason::NodeShutdown
        } else {
            TerminationReason::Stopped
        };
        for watcher in entry.watchers {
            self.notify_watcher(watcher, id, reason);
        }
        if (entry.names.is_empty() && entry.groups.is_empty()) || stopping {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let node = self.clone();
        let type_name = handle.type_name();
        rt.spawn(async move {
            let name_entry = node.name_entry(id, type_name);
            for name in entry.names {
                if let Err(e) = node
                    .discovery
                    .unregister_name(&node.info.cluster, &name, &name_entry)
                    .await
                {
                    tracing::warn!(%name, error = %e, "could not unregister the name of a stopped actor");
                }
            }
            for (group, weight) in entry.groups {
                let member = node.group_member(id, type_name, weight);
                if let Err(e) = node
                    .discovery
                    .leave_group(&node.info.cluster, &group, &member)
                    .await
                {
                    tracing::warn!(%group, error = %e, "a stopped actor could not leave its group");
                }
            }
        });
    }

    pub(crate) fn notify_watcher(&self, watcher: Watcher, id: ActorId, reason: TerminationReason) {
        match watcher {
            Watcher::Local(recipient) => recipient.do_send(Terminated {
                actor: id,
                node: self.info.id.clone(),
                reason,
            }),
            Watcher::Remote { outbox, watch } => {
                let Some(outbox) = outbox.upgrade() else {
                    return;
                };
                let reason = match reason {
                    TerminationReason::NodeShutdown => WireTermination::NodeShutdown,
                    TerminationReason::NotFound => WireTermination::NotFound,
                    _ => WireTermination::Stopped,
                };
                if outbox
                    .push(&Header::Terminated { watch, reason }, |_| {
                        Ok::<_, String>(())
                    })
                    .is_err()
                {
                    self.stats.dropped(DropReason::LinkFailed, 1);
                    tracing::debug!(%id, "watcher's link is gone; Terminated notice dropped");
                }
            }
        }
    }

    /// Stops local actor `id` after the messages already in its mailbox; returns whether it
    /// was found.
    pub(crate) fn stop_local(&self, id: ActorId) -> bool {
        let Some(handle) = self.handle_of(id) else {
            return false;
        };
        handle.stop();
        true
    }

    pub(crate) fn watch_local(&self, id: ActorId, watcher: Recipient<Terminated>) {
        let mut actors = write(&self.actors);
        match actors.extra_mut(id) {
            Some(entry) => entry.watchers.push(Watcher::Local(watcher)),
            None => {
                drop(actors);
                self.notify_watcher(Watcher::Local(watcher), id, TerminationReason::NotFound);
            }
        }
    }

    /// The dispatch handle of local actor `id`.
    pub(crate) fn handle_of(&self, id: ActorId) -> Option<Arc<dyn LocalDispatch>> {
        read(&self.actors).handles.get(&id).cloned()
    }

    /// The dispatch handle of local actor `id` for a new message: `None` once its stop was
    /// requested as well as when it is gone. Its stop is queued in its mailbox, so a message
    /// queued after it would be dropped unhandled; refusing it here tells the sender that
    /// nothing was done (`ActorNotFound`) instead of "stopped before replying". Inbound
    /// requests check and enqueue on the node's thread with no await between them, and
    /// stops ordered by the controller or a peer are requested on that thread too, so none
    /// slips in between.
    pub(crate) fn deliverable(&self, id: ActorId) -> Option<Arc<dyn LocalDispatch>> {
        read(&self.actors)
            .handles
            .get(&id)
            .filter(|h| !h.stop_requested())
            .cloned()
    }

    /// The typed address of a local actor for a new message: `Ok(None)` when it is gone or
    /// its stop was requested.
    pub(crate) fn local_addr<A: RemoteActor>(&self, id: ActorId) -> Result<Option<Addr<A>>> {
        let Some(handle) = self.deliverable(id) else {
            return Ok(None);
        };
        match handle.as_any().downcast_ref::<Typed<A>>() {
            Some(typed) => Ok(Some(typed.addr.clone())),
            None => Err(Error::WrongActorType {
                expected: A::NAME.to_owned(),
                found: handle.type_name().to_owned(),
            }),
        }
    }
}
