//! The receiving side of the controller's orders: start a replica of a group, retire one.
//! Every order carries the leader's fencing token, checked against the current leader first.

use std::sync::Arc;

use super::singleton::guard_singleton;
use super::{write, NodeShared};
use crate::core::fence::Admit;
use crate::core::wire::envelope::WireError;
use crate::id::ActorId;

impl NodeShared {
    /// Refuses an order of a controller whose `fence` token is not the current leader's.
    async fn check_fence(&self, fence: u64) -> std::result::Result<(), WireError> {
        match self.discovery.leader(&self.info.cluster).await {
            Ok(Some((_, token))) if token == fence => Ok(()),
            Ok(_) => Err(WireError::Fenced),
            Err(e) => Err(WireError::Codec(format!("cannot check the leader: {e}"))),
        }
    }

    /// Refuses to go on with a spawn order received under lease `epoch` once that lease is
    /// known lost (or replaced): the node was declared down while the order was under way (it
    /// froze between two steps), and the controller places the work elsewhere. A lease merely
    /// in doubt does not stop it: undoing a join the controller has already seen makes it
    /// place another replica while this one may still run (the simulation found two singletons
    /// that way); the singleton guard stops a replica whose lease turns out lost.
    fn still_member(&self, epoch: u64) -> std::result::Result<(), WireError> {
        match self.admit_frame(epoch) {
            Admit::Start | Admit::Hold => Ok(()),
            Admit::Refuse => Err(WireError::NotMember),
        }
    }

    /// Starts a replica of `group` (a controller's order, received under lease `epoch`) and
    /// joins it to the group.
    pub(crate) async fn spawn_replica(
        self: &Arc<Self>,
        actor_type: &str,
        group: &str,
        fence: u64,
        singleton: bool,
        args: &[u8],
        epoch: u64,
    ) -> std::result::Result<ActorId, WireError> {
        if self.is_stopping() {
            return Err(WireError::ShuttingDown);
        }
        self.check_fence(fence).await?;
        self.still_member(epoch)?;
        let spawn = self
            .spawnables
            .get(actor_type)
            .ok_or_else(|| WireError::UnknownActorType {
                actor_type: actor_type.to_owned(),
            })?;
        let actor = spawn(self, args)?;
        let type_name = self
            .handle_of(actor)
            .map(|h| h.type_name())
            .ok_or(WireError::ActorStopped)?;
        let member = self.group_member(actor, type_name, 1);
        if let Err(e) = self
            .discovery
            .join_group(&self.info.cluster, group, &member)
            .await
        {
            self.stop_local(actor);
            return Err(WireError::Codec(format!(
                "the replica could not join its group: {e}"
            )));
        }
        if let Err(e) = self.still_member(epoch) {
            // Joined under a lease that was lost meanwhile, or under the next one: undo.
            self.stop_local(actor);
            let _ = self
                .discovery
                .leave_group(&self.info.cluster, group, &member)
                .await;
            return Err(e);
        }
        if let Some(entry) = write(&self.actors).extra_mut(actor) {
            entry.groups.push((group.to_owned(), 1));
        }
        if singleton {
            tokio::spawn(guard_singleton(Arc::downgrade(self), actor, epoch));
        }
        Ok(actor)
    }

    /// Takes a replica out of `group`, then stops it after its queued messages (a
    /// controller's order).
    pub(crate) async fn retire(
        self: &Arc<Self>,
        actor: ActorId,
        group: &str,
        fence: u64,
    ) -> std::result::Result<(), WireError> {
        // Stopping is always safe: a retire is carried out whatever this node's lease (one
        // refused while the controller counts the replica gone would leave one too many).
        self.check_fence(fence).await?;
        let type_name = self
            .handle_of(actor)
            .map(|h| h.type_name())
            .ok_or(WireError::ActorNotFound)?;
        let member = self.group_member(actor, type_name, 1);
        if let Some(entry) = write(&self.actors).extras.get_mut(&actor) {
            entry.groups.retain(|(g, _)| g != group);
        }
        if let Err(e) = self
            .discovery
            .leave_group(&self.info.cluster, group, &member)
            .await
        {
            tracing::warn!(%group, error = %e, "a retired replica could not leave its group");
        }
        // Callers that picked it before the group view changed still get answers: the stop
        // is queued behind their messages.
        self.stop_local(actor);
        Ok(())
    }
}
