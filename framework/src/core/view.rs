//! The membership view of one node: who is a member now, and who departed (so that a later
//! `Up` of the same id is known to be a new incarnation). Pure: events in, the consequence for
//! the node's links out.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::model::{MembershipEvent, NodeInfo};
use crate::id::NodeId;

/// The cluster's members as one node sees them.
#[derive(Debug)]
pub(crate) struct MembershipView {
    me: NodeId,
    members: BTreeMap<NodeId, NodeInfo>,
    departed: BTreeSet<NodeId>,
}

/// What a membership event means for the node that applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ViewChange {
    /// Nothing beyond the view itself.
    Nothing,
    /// A node that had departed is back as a new incarnation: references made from now on
    /// must get a new link; old ones keep the dead one.
    NewIncarnation(NodeId),
    /// Another node left (`graceful`) or was declared down: its link fails.
    Departed { node: NodeId, graceful: bool },
    /// Discovery says this node itself is gone (declared down, or its own leave).
    SelfGone,
}

impl MembershipView {
    /// The view of node `me`, starting from `members`.
    pub(crate) fn new(me: NodeId, members: impl IntoIterator<Item = NodeInfo>) -> Self {
        MembershipView {
            me,
            members: members.into_iter().map(|m| (m.id.clone(), m)).collect(),
            departed: BTreeSet::new(),
        }
    }

    /// Applies one event; returns what it means for the node's links.
    pub(crate) fn apply(&mut self, event: &MembershipEvent) -> ViewChange {
        match event {
            MembershipEvent::Up(info) => {
                self.members.insert(info.id.clone(), info.clone());
                if self.departed.remove(&info.id) {
                    ViewChange::NewIncarnation(info.id.clone())
                } else {
                    ViewChange::Nothing
                }
            }
            MembershipEvent::Left(id) | MembershipEvent::Down(id) => {
                self.members.remove(id);
                if id == &self.me {
                    return ViewChange::SelfGone;
                }
                self.departed.insert(id.clone());
                ViewChange::Departed {
                    node: id.clone(),
                    graceful: matches!(event, MembershipEvent::Left(_)),
                }
            }
        }
    }

    /// The entry of member `id`.
    pub(crate) fn get(&self, id: &NodeId) -> Option<&NodeInfo> {
        self.members.get(id)
    }

    /// Every member, in id order.
    pub(crate) fn members(&self) -> impl Iterator<Item = &NodeInfo> {
        self.members.values()
    }

    /// The nodes that left or were declared down and have not come back.
    pub(crate) fn departed(&self) -> impl Iterator<Item = &NodeId> {
        self.departed.iter()
    }

    /// Whether `id` left or was declared down and has not come back.
    pub(crate) fn has_departed(&self, id: &NodeId) -> bool {
        self.departed.contains(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str) -> NodeInfo {
        NodeInfo {
            id: NodeId::new(id),
            cluster: "c".into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            protocol: 1,
            version: "0".into(),
            labels: BTreeMap::new(),
            started_at_ms: 0,
            spawnable: Vec::new(),
            admin: None,
        }
    }

    #[test]
    fn departures_and_new_incarnations() {
        let mut view = MembershipView::new(NodeId::new("me"), [info("me"), info("a")]);
        assert_eq!(view.members().count(), 2);
        assert_eq!(
            view.apply(&MembershipEvent::Up(info("b"))),
            ViewChange::Nothing
        );
        assert_eq!(
            view.apply(&MembershipEvent::Down(NodeId::new("a"))),
            ViewChange::Departed {
                node: NodeId::new("a"),
                graceful: false
            }
        );
        assert!(view.has_departed(&NodeId::new("a")));
        assert!(view.get(&NodeId::new("a")).is_none());
        assert_eq!(
            view.apply(&MembershipEvent::Left(NodeId::new("b"))),
            ViewChange::Departed {
                node: NodeId::new("b"),
                graceful: true
            }
        );
        assert_eq!(
            view.apply(&MembershipEvent::Up(info("a"))),
            ViewChange::NewIncarnation(NodeId::new("a"))
        );
        assert!(!view.has_departed(&NodeId::new("a")));
        assert_eq!(
            view.apply(&MembershipEvent::Down(NodeId::new("me"))),
            ViewChange::SelfGone
        );
        let ids: Vec<_> = view.members().map(|m| m.id.as_str().to_owned()).collect();
        assert_eq!(ids, ["a"]);
    }
}
