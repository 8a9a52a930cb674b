//! The node's membership view: applies discovery's events, and the links to the members.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use super::{lock, read, write, NodeShared};
use crate::core::model::{MembershipEvent, NodeInfo};
use crate::core::view::ViewChange;
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::transport::link::PeerLink;

impl NodeShared {
    /// The link to `node`, created on first use.
    pub(crate) fn link_to(&self, node: &NodeId, addr: SocketAddr) -> Arc<PeerLink> {
        let mut peers = lock(&self.peers);
        if let Some(link) = peers.get(node) {
            return link.clone();
        }
        let down = read(&self.view).has_departed(node) || self.stopping.load(Ordering::Acquire);
        let link = PeerLink::start(self.link_config.clone(), node.clone(), addr, down);
        peers.insert(node.clone(), link.clone());
        link
    }

    /// The address of member `node`, if it is one.
    pub(crate) fn member_addr(&self, node: &NodeId) -> Option<SocketAddr> {
        read(&self.view).get(node).map(|m| m.addr)
    }

    /// Waits until `node` is a member in this node's view, for at most `timeout`.
    pub(crate) async fn wait_for_member(
        &self,
        node: &NodeId,
        timeout: Duration,
    ) -> Result<NodeInfo> {
        let mut events = self.events.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(info) = read(&self.view).get(node) {
                return Ok(info.clone());
            }
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Err(_) => return Err(Error::UnknownNode(node.clone())),
                Ok(Err(broadcast::error::RecvError::Closed)) => return Err(Error::Shutdown),
                Ok(_) => {}
            }
        }
    }

    /// Applies one membership change to the view and the links.
    pub(crate) fn apply(&self, event: MembershipEvent) {
        if let Some(m) = &self.metrics {
            m.membership_event(match &event {
                MembershipEvent::Up(_) => "up",
                MembershipEvent::Down(_) => "down",
                MembershipEvent::Left(_) => "left",
            });
        }
        let change = write(&self.view).apply(&event);
        match change {
            ViewChange::Nothing => {}
            ViewChange::NewIncarnation(id) => {
                // Old references keep their dead link; new ones connect afresh.
                lock(&self.peers).remove(&id);
            }
            ViewChange::Departed { node, graceful } => {
                if let Some(link) = lock(&self.peers).get(&node).cloned() {
                    link.mark_down(graceful);
                }
            }
            ViewChange::SelfGone => {
                if !self.is_stopping() {
                    tracing::error!(node = %self.info.id, "discovery declared this node down; its peers consider its actors gone");
                }
            }
        }
        let _ = self.events.send(event);
    }
}
