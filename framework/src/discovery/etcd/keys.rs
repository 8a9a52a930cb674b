//! The key layout: where each thing lives under `{prefix}/{cluster}/` (the table is in the
//! [module docs](super)). Pure string building, nothing else.
//!
//! Node ids, cluster names and group names must not contain `/`, or one key could fall under
//! another's prefix: `join`, `join_group` and `put_spec` refuse them before writing anything.

use crate::core::model::GroupMember;
use crate::id::NodeId;

/// The keys of one cluster, all under `{prefix}/{cluster}/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Keys {
    /// `{prefix}/{cluster}/`.
    root: String,
}

impl Keys {
    /// The keys of `cluster` under `prefix` (which has no trailing `/`).
    pub(super) fn new(prefix: &str, cluster: &str) -> Self {
        Keys {
            root: format!("{prefix}/{cluster}/"),
        }
    }

    /// `nodes/`: the prefix of every node's [record](super::record::NodeRecord).
    pub(super) fn nodes(&self) -> String {
        format!("{}nodes/", self.root)
    }

    /// `nodes/{node}`.
    pub(super) fn node(&self, node: &NodeId) -> String {
        format!("{}nodes/{}", self.root, node)
    }

    /// `names/`: the prefix of every registered name.
    pub(super) fn names(&self) -> String {
        format!("{}names/", self.root)
    }

    /// `names/{name}`.
    pub(super) fn name(&self, name: &str) -> String {
        format!("{}names/{}", self.root, name)
    }

    /// The name a key under [`names`](Self::names) registers; `None` for any other key.
    pub(super) fn name_of(&self, key: &[u8]) -> Option<String> {
        let name = key.strip_prefix(self.names().as_bytes())?;
        Some(String::from_utf8_lossy(name).into_owned())
    }

    /// `load/`: the prefix of every node's load report.
    pub(super) fn loads(&self) -> String {
        format!("{}load/", self.root)
    }

    /// `load/{node}`.
    pub(super) fn load(&self, node: &NodeId) -> String {
        format!("{}load/{}", self.root, node)
    }

    /// The node a key under [`loads`](Self::loads) belongs to; `None` for any other key.
    pub(super) fn node_of_load(&self, key: &[u8]) -> Option<NodeId> {
        let id = key.strip_prefix(self.loads().as_bytes())?;
        Some(NodeId::new(String::from_utf8_lossy(id)))
    }

    /// `specs/`: the prefix of every group spec.
    pub(super) fn specs(&self) -> String {
        format!("{}specs/", self.root)
    }

    /// `specs/{group}`.
    pub(super) fn spec(&self, group: &str) -> String {
        format!("{}specs/{}", self.root, group)
    }

    /// `entity-hosts/`: the prefix of every entity type's hosts.
    pub(super) fn entity_hosts(&self) -> String {
        format!("{}entity-hosts/", self.root)
    }

    /// `entity-hosts/{kind}/{node}`: `node` hosts entity type `kind` (bound to its lease).
    pub(super) fn entity_host(&self, kind: &str, node: &NodeId) -> String {
        format!("{}entity-hosts/{kind}/{node}", self.root)
    }

    /// The entity type and node of a key under [`entity_hosts`](Self::entity_hosts).
    pub(super) fn entity_host_of(&self, key: &[u8]) -> Option<(String, NodeId)> {
        let rest = key.strip_prefix(self.entity_hosts().as_bytes())?;
        let rest = String::from_utf8_lossy(rest);
        let (kind, node) = rest.split_once('/')?;
        Some((kind.to_owned(), NodeId::new(node)))
    }

    /// `entities/{kind}/`: the assignment and the owners of entity type `kind`.
    pub(super) fn entities(&self, kind: &str) -> String {
        format!("{}entities/{kind}/", self.root)
    }

    /// `entities/{kind}/assignment`.
    pub(super) fn assignment(&self, kind: &str) -> String {
        format!("{}assignment", self.entities(kind))
    }

    /// `entities/{kind}/owners/{shard}` (bound to the owner's lease).
    pub(super) fn shard_owner(&self, kind: &str, shard: u32) -> String {
        format!("{}owners/{shard:05}", self.entities(kind))
    }

    /// `leader`: the key the cluster's leader holds.
    pub(super) fn leader(&self) -> String {
        format!("{}leader", self.root)
    }

    /// `groups/`: the prefix of every group's members.
    pub(super) fn groups(&self) -> String {
        format!("{}groups/", self.root)
    }

    /// The group of a key under [`groups`](Self::groups)
    /// (`groups/{group}/members/{node}/{actor}`); `None` for any other key.
    pub(super) fn group_of_member(&self, key: &[u8]) -> Option<String> {
        let rest = key.strip_prefix(self.groups().as_bytes())?;
        let rest = String::from_utf8_lossy(rest);
        let (group, tail) = rest.split_once('/')?;
        tail.starts_with("members/").then(|| group.to_owned())
    }

    /// `groups/{group}/members/`: the prefix of the group's members.
    pub(super) fn group_members(&self, group: &str) -> String {
        format!("{}groups/{}/members/", self.root, group)
    }

    /// `groups/{group}/members/{node}/{actor}`.
    pub(super) fn group_member(&self, group: &str, member: &GroupMember) -> String {
        format!(
            "{}{}/{}",
            self.group_members(group),
            member.node,
            member.actor.get()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ActorId;

    fn keys() -> Keys {
        Keys::new("/actormesh", "prod")
    }

    fn member(node: &str, actor: u64) -> GroupMember {
        GroupMember {
            node: NodeId::new(node),
            addr: "127.0.0.1:4000".parse().unwrap(),
            actor: ActorId(actor),
            actor_type: "t".to_owned(),
            weight: 1,
        }
    }

    #[test]
    fn the_layout_of_the_module_docs() {
        let k = keys();
        let n1 = NodeId::new("n1");
        assert_eq!(k.nodes(), "/actormesh/prod/nodes/");
        assert_eq!(k.node(&n1), "/actormesh/prod/nodes/n1");
        assert_eq!(k.names(), "/actormesh/prod/names/");
        assert_eq!(k.name("svc.a"), "/actormesh/prod/names/svc.a");
        assert_eq!(k.groups(), "/actormesh/prod/groups/");
        assert_eq!(k.loads(), "/actormesh/prod/load/");
        assert_eq!(k.load(&n1), "/actormesh/prod/load/n1");
        assert_eq!(k.specs(), "/actormesh/prod/specs/");
        assert_eq!(k.spec("g"), "/actormesh/prod/specs/g");
        assert_eq!(k.leader(), "/actormesh/prod/leader");
        assert_eq!(k.group_members("g"), "/actormesh/prod/groups/g/members/");
        assert_eq!(
            k.group_member("g", &member("n1", 7)),
            "/actormesh/prod/groups/g/members/n1/7"
        );
    }

    #[test]
    fn keys_fall_under_their_prefixes() {
        let k = keys();
        let n1 = NodeId::new("n1");
        assert!(k.node(&n1).starts_with(&k.nodes()));
        assert!(k.load(&n1).starts_with(&k.loads()));
        assert!(k.spec("g").starts_with(&k.specs()));
        assert!(k
            .group_member("g", &member("n1", 7))
            .starts_with(&k.group_members("g")));
    }

    #[test]
    fn clusters_and_prefixes_do_not_share_keys() {
        let n1 = NodeId::new("n1");
        let a = Keys::new("/actormesh", "a");
        let b = Keys::new("/actormesh", "b");
        let other = Keys::new("/other", "a");
        assert!(!b.node(&n1).starts_with(&a.nodes()));
        assert!(!other.node(&n1).starts_with(&a.nodes()));
    }

    #[test]
    fn the_name_and_the_group_of_a_key() {
        let k = keys();
        assert_eq!(
            k.name_of(k.name("svc.a").as_bytes()),
            Some("svc.a".to_owned())
        );
        assert_eq!(k.name_of(k.spec("svc.a").as_bytes()), None);
        let key = k.group_member("g", &member("n1", 7));
        assert_eq!(k.group_of_member(key.as_bytes()), Some("g".to_owned()));
        assert_eq!(k.group_of_member(k.spec("g").as_bytes()), None);
        assert_eq!(
            Keys::new("/actormesh", "other").group_of_member(key.as_bytes()),
            None
        );
    }

    #[test]
    fn the_node_of_a_load_key() {
        let k = keys();
        let n1 = NodeId::new("n1");
        assert_eq!(k.node_of_load(k.load(&n1).as_bytes()), Some(n1.clone()));
        assert_eq!(k.node_of_load(k.node(&n1).as_bytes()), None);
        assert_eq!(
            Keys::new("/actormesh", "other").node_of_load(k.load(&n1).as_bytes()),
            None
        );
    }
}
