//! A deployed group measured against its spec, and why it falls short: a pure function of
//! the spec, the group's members, the live nodes and the leader, shared by
//! [`Node::group_status`](crate::Node::group_status), the leader's warnings and
//! [`GroupRef::wait_for_instances`](crate::GroupRef::wait_for_instances).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::core::model::{GroupMember, GroupSpec, NodeInfo};
use crate::core::placement::{Candidate, Constraints};
use crate::id::NodeId;

/// A deployed group against its spec: how many replicas it should have, how many run, and,
/// when it falls short, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    /// The group.
    pub group: String,
    /// The actor type of its replicas (the spec's).
    pub actor_type: String,
    /// The replicas the spec asks for (at most one for a singleton).
    pub desired: u32,
    /// The members on live nodes.
    pub running: u32,
    /// Why the group cannot reach `desired`, when something stands in the way; `None` when it
    /// is complete or on its way (the controller is starting or retiring replicas).
    pub blocked: Option<Blocked>,
}

impl GroupStatus {
    /// Whether the group runs exactly the replicas its spec asks for.
    pub fn is_complete(&self) -> bool {
        self.running == self.desired
    }

    /// The replicas still missing.
    pub fn missing(&self) -> u32 {
        self.desired.saturating_sub(self.running)
    }

    /// Measures `spec` against the group's `members`, the `live` nodes and whether a
    /// controller leads the cluster (`led`): what
    /// [`Node::group_status`](crate::Node::group_status) answers, for a tool that reads these
    /// from [`Discovery`](crate::Discovery) itself (`read_specs`, `read_group`,
    /// `read_members`, `leader`).
    pub fn assess(
        spec: &GroupSpec,
        members: &[GroupMember],
        live: &[NodeInfo],
        led: bool,
    ) -> GroupStatus {
        assess(spec, members, live, led)
    }
}

impl fmt::Display for GroupStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "group `{}` ({}): {} of {} replicas running",
            self.group, self.actor_type, self.running, self.desired
        )?;
        match &self.blocked {
            Some(blocked) => write!(f, "; pending because {blocked}"),
            None if self.running < self.desired => {
                write!(f, "; the controller is starting the rest")
            }
            None if self.running > self.desired => {
                write!(f, "; the controller is retiring the excess")
            }
            None => Ok(()),
        }
    }
}

/// What keeps a group from its desired replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Blocked {
    /// No node of the cluster leads its controller, so nobody acts on specs.
    NoController,
    /// No live node registered the actor type as spawnable.
    NoSpawnableNode {
        /// The spec's actor type.
        actor_type: String,
    },
    /// Nodes can spawn the type, but none carries the labels the spec selects (or the
    /// anti-affinity label).
    NoMatchingNode {
        /// The spec's actor type.
        actor_type: String,
        /// The nodes that can spawn it.
        spawnable_on: Vec<NodeId>,
        /// The labels the spec requires.
        selector: BTreeMap<String, String>,
        /// The anti-affinity label the spec requires, if any.
        anti_affinity: Option<String>,
    },
    /// The eligible nodes, at the spec's maximum per node, hold fewer replicas than desired.
    AtCapacity {
        /// The nodes that may run replicas.
        eligible: u32,
        /// The spec's maximum per node.
        max_per_node: u32,
    },
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Blocked::NoController => write!(
                f,
                "no node leads the cluster's controller; start at least one node with NodeBuilder::controller(true)"
            ),
            Blocked::NoSpawnableNode { actor_type } => write!(
                f,
                "no live node can spawn `{actor_type}`; register it with NodeBuilder::spawnable::<T>() on the nodes that should run it"
            ),
            Blocked::NoMatchingNode {
                actor_type,
                spawnable_on,
                selector,
                anti_affinity,
            } => {
                let nodes: Vec<&str> = spawnable_on.iter().map(NodeId::as_str).collect();
                write!(
                    f,
                    "nodes {nodes:?} can spawn `{actor_type}` but none carries the labels the spec selects ({selector:?}"
                )?;
                if let Some(key) = anti_affinity {
                    write!(f, ", and the anti-affinity label `{key}`")?;
                }
                write!(f, "); add the labels with NodeBuilder::label or change the spec's selector")
            }
            Blocked::AtCapacity {
                eligible,
                max_per_node,
            } => write!(
                f,
                "{eligible} eligible node(s) at {max_per_node} replica(s) each cannot hold them all; add nodes or raise max_per_node"
            ),
        }
    }
}

/// Measures `spec` against the group's `members`, the `live` nodes and whether a controller
/// leads the cluster.
pub(crate) fn assess(
    spec: &GroupSpec,
    members: &[GroupMember],
    live: &[NodeInfo],
    led: bool,
) -> GroupStatus {
    let desired = if spec.singleton {
        spec.replicas.min(1)
    } else {
        spec.replicas
    };
    let up: BTreeSet<&NodeId> = live.iter().map(|n| &n.id).collect();
    let running = members.iter().filter(|m| up.contains(&m.node)).count() as u32;
    let spawnable: Vec<&NodeInfo> = live
        .iter()
        .filter(|n| n.spawnable.iter().any(|t| t == &spec.actor_type))
        .collect();
    let constraints = Constraints {
        selector: spec.selector.clone(),
        anti_affinity: spec.anti_affinity.clone(),
        max_per_node: spec.max_per_node,
    };
    let eligible = spawnable
        .iter()
        .filter(|n| {
            constraints.admits(&Candidate {
                labels: n.labels.clone(),
                ..Candidate::new(n.id.clone())
            })
        })
        .count() as u32;
    let blocked = if running >= desired {
        None
    } else if spawnable.is_empty() {
        Some(Blocked::NoSpawnableNode {
            actor_type: spec.actor_type.clone(),
        })
    } else if eligible == 0 {
        Some(Blocked::NoMatchingNode {
            actor_type: spec.actor_type.clone(),
            spawnable_on: spawnable.iter().map(|n| n.id.clone()).collect(),
            selector: spec.selector.clone(),
            anti_affinity: spec.anti_affinity.clone(),
        })
    } else if let Some(max) = spec
        .max_per_node
        .filter(|max| eligible.saturating_mul(*max) < desired)
    {
        Some(Blocked::AtCapacity {
            eligible,
            max_per_node: max,
        })
    } else if !led {
        Some(Blocked::NoController)
    } else {
        None
    };
    GroupStatus {
        group: spec.group.clone(),
        actor_type: spec.actor_type.clone(),
        desired,
        running,
        blocked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::PlacementPolicy;
    use crate::id::ActorId;

    fn node(id: &str, spawnable: &[&str], labels: &[(&str, &str)]) -> NodeInfo {
        NodeInfo {
            id: NodeId::new(id),
            cluster: "c".to_owned(),
            addr: "127.0.0.1:1".parse().unwrap(),
            protocol: 1,
            version: "test".to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            started_at_ms: 0,
            spawnable: spawnable.iter().map(|s| (*s).to_owned()).collect(),
            admin: None,
        }
    }

    fn spec(replicas: u32) -> GroupSpec {
        GroupSpec {
            group: "archive".to_owned(),
            actor_type: "chat.Archiver".to_owned(),
            args: Vec::new(),
            replicas,
            placement: PlacementPolicy::Spread,
            selector: BTreeMap::new(),
            anti_affinity: None,
            max_per_node: None,
            singleton: false,
            autoscale: None,
        }
    }

    fn member(node: &str, actor: u64) -> GroupMember {
        GroupMember {
            node: NodeId::new(node),
            actor: ActorId(actor),
            actor_type: "chat.Archiver".to_owned(),
            addr: "127.0.0.1:1".parse().unwrap(),
            weight: 1,
        }
    }

    #[test]
    fn no_spawnable_node_says_to_register_the_type() {
        let live = [node("a", &["chat.Room"], &[])];
        let status = assess(&spec(2), &[], &live, true);
        assert_eq!(status.running, 0);
        assert_eq!(status.missing(), 2);
        assert!(matches!(
            status.blocked,
            Some(Blocked::NoSpawnableNode { .. })
        ));
        let text = status.to_string();
        assert!(
            text.contains("no live node can spawn `chat.Archiver`"),
            "{text}"
        );
        assert!(text.contains("NodeBuilder::spawnable"), "{text}");
    }

    #[test]
    fn labels_capacity_and_leader_are_told_apart() {
        let live = [
            node("a", &["chat.Archiver"], &[("disk", "hdd")]),
            node("b", &["chat.Archiver"], &[("disk", "ssd")]),
        ];
        let mut s = spec(3);
        s.selector.insert("disk".to_owned(), "nvme".to_owned());
        assert!(matches!(
            assess(&s, &[], &live, true).blocked,
            Some(Blocked::NoMatchingNode { .. })
        ));
        s.selector.insert("disk".to_owned(), "ssd".to_owned());
        s.max_per_node = Some(2);
        assert_eq!(
            assess(&s, &[member("b", 1)], &live, true).blocked,
            Some(Blocked::AtCapacity {
                eligible: 1,
                max_per_node: 2
            })
        );
        s.max_per_node = None;
        assert_eq!(
            assess(&s, &[], &live, false).blocked,
            Some(Blocked::NoController)
        );
        // Nothing in the way: the controller is on it.
        let status = assess(&s, &[member("b", 1)], &live, true);
        assert_eq!(status.blocked, None);
        assert!(status.to_string().contains("1 of 3"), "{status}");
    }

    #[test]
    fn members_on_nodes_that_are_gone_do_not_run() {
        let live = [node("a", &["chat.Archiver"], &[])];
        let status = assess(&spec(2), &[member("a", 1), member("gone", 1)], &live, true);
        assert_eq!((status.running, status.desired), (1, 2));
        assert!(!status.is_complete());
        let mut single = spec(5);
        single.singleton = true;
        let status = assess(&single, &[member("a", 1)], &live, true);
        assert!(status.is_complete(), "a singleton wants one: {status}");
    }
}
