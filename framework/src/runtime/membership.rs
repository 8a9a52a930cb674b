//! The node's membership view: applies discovery's events, and the links to the members.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{lock, write, NodeShared};
use crate::core::model::MembershipEvent;
use crate::id::NodeId;
use crate::transport::link::PeerLink;

impl NodeShared {
    /// The link to `node`, created on first use.
    pub(crate) fn link_to(&self, node: &NodeId, addr: SocketAddr) -> Arc<PeerLink> {
        let mut peers = lock(&self.peers);
        if let Some(link) = peers.get(node) {
            return link.clone();
        }
        let down = lock(&self.departed).contains(node) || self.stopping.load(Ordering::Acquire);
        let link = PeerLink::start(self.link_config.clone(), node.clone(), addr, down);
        peers.insert(node.clone(), link.clone());
        link
    }

    /// Applies one membership change to the view and the links.
    pub(crate) fn apply(&self, event: MembershipEvent) {
        match &event {
            MembershipEvent::Up(info) => {
                write(&self.members).insert(info.id.clone(), info.clone());
                if lock(&self.departed).remove(&info.id) {
                    // A new incarnation: old references keep their dead link, new ones connect.
                    lock(&self.peers).remove(&info.id);
                }
            }
            MembershipEvent::Left(id) | MembershipEvent::Down(id) => {
                let graceful = matches!(event, MembershipEvent::Left(_));
                write(&self.members).remove(id);
                if id == &self.info.id {
                    if !self.is_stopping() {
                        tracing::error!(node = %id, "discovery declared this node down; its peers consider its actors gone");
                    }
                } else {
                    lock(&self.departed).insert(id.clone());
                    if let Some(link) = lock(&self.peers).get(id).cloned() {
                        link.mark_down(graceful);
                    }
                }
            }
        }
        let _ = self.events.send(event);
    }
}
