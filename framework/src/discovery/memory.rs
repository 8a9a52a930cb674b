//! The embedded discovery: one shared in-process registry for the nodes of one process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, oneshot, watch};

use super::{
    Assignment, Discovery, DiscoveryFuture, EntityEvent, EntityView, GroupEvent, GroupMember,
    GroupSpec, GroupView, Leadership, LoadReport, Membership, MembershipEvent, NameEntry, NodeInfo,
    ShardOwner, SpecEvent, SpecView,
};
use crate::error::Error;
use crate::id::ActorId;
use crate::id::NodeId;

/// In-process discovery shared by every node given a clone of it.
///
/// The embedded default: no external service, changes are seen at once by every node. Clusters
/// with different names share one instance without seeing each other. [`MemoryDiscovery::fail`]
/// declares a node down as a lease expiry would, for tests and demos.
#[derive(Debug, Clone, Default)]
pub struct MemoryDiscovery {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    revision: u64,
    clusters: HashMap<String, Cluster>,
}

#[derive(Debug, Default)]
struct Cluster {
    members: BTreeMap<NodeId, NodeInfo>,
    names: BTreeMap<String, NameEntry>,
    load: BTreeMap<NodeId, LoadReport>,
    watchers: Vec<mpsc::UnboundedSender<(u64, MembershipEvent)>>,
    groups: BTreeMap<String, Group>,
    leader: Option<Leader>,
    specs: BTreeMap<String, GroupSpec>,
    spec_watchers: Vec<mpsc::UnboundedSender<(u64, SpecEvent)>>,
    campaigners: Vec<(NodeId, oneshot::Sender<Leadership>)>,
    /// Entity type -> host -> shard count.
    entity_hosts: BTreeMap<String, BTreeMap<NodeId, u32>>,
    entities: BTreeMap<String, Entities>,
}

/// One entity type's assignment, owners (with their tokens) and watchers.
#[derive(Debug, Default)]
struct Entities {
    assignment: Option<Assignment>,
    owners: BTreeMap<u32, (ShardOwner, u64)>,
    watchers: Vec<mpsc::UnboundedSender<(u64, EntityEvent)>>,
}

impl Entities {
    fn publish(&mut self, revision: u64, event: EntityEvent) {
        self.watchers
            .retain(|w| w.send((revision, event.clone())).is_ok());
    }
}

#[derive(Debug)]
struct Leader {
    node: NodeId,
    token: u64,
    lost: watch::Sender<bool>,
}

impl Cluster {
    /// Hands leadership to the first waiting campaigner that is still a member.
    fn elect(&mut self, revision: u64) {
        if self.leader.is_some() {
            return;
        }
        while !self.campaigners.is_empty() {
            let (node, tx) = self.campaigners.remove(0);
            if !self.members.contains_key(&node) || tx.is_closed() {
                continue;
            }
            let (lost_tx, lost_rx) = watch::channel(false);
            if tx
                .send(Leadership {
                    token: revision,
                    lost: lost_rx,
                })
                .is_ok()
            {
                self.leader = Some(Leader {
                    node,
                    token: revision,
                    lost: lost_tx,
                });
                return;
            }
        }
    }
}

#[derive(Debug, Default)]
struct Group {
    members: BTreeMap<(NodeId, ActorId), GroupMember>,
    watchers: Vec<mpsc::UnboundedSender<(u64, GroupEvent)>>,
}

impl Group {
    fn publish(&mut self, revision: u64, event: GroupEvent) {
        self.watchers
            .retain(|w| w.send((revision, event.clone())).is_ok());
    }
}

impl Cluster {
    fn publish(&mut self, revision: u64, event: MembershipEvent) {
        self.watchers
            .retain(|w| w.send((revision, event.clone())).is_ok());
    }

    fn remove(&mut self, revision: u64, node: &NodeId, event: MembershipEvent) -> bool {
        if self.members.remove(node).is_none() {
            return false;
        }
        if self.leader.as_ref().is_some_and(|l| &l.node == node) {
            if let Some(leader) = self.leader.take() {
                let _ = leader.lost.send(true);
            }
            self.elect(revision);
        }
        self.names.retain(|_, entry| &entry.node != node);
        self.load.remove(node);
        for hosts in self.entity_hosts.values_mut() {
            hosts.remove(node);
        }
        for entities in self.entities.values_mut() {
            let gone: Vec<u32> = entities
                .owners
                .iter()
                .filter(|(_, (o, _))| &o.node == node)
                .map(|(s, _)| *s)
                .collect();
            for shard in gone {
                entities.owners.remove(&shard);
                entities.publish(revision, EntityEvent::Released(shard));
            }
        }
        for group in self.groups.values_mut() {
            let gone: Vec<_> = group
                .members
                .keys()
                .filter(|(n, _)| n == node)
                .cloned()
                .collect();
            for key in gone {
                if let Some(member) = group.members.remove(&key) {
                    group.publish(revision, GroupEvent::Left(member));
                }
            }
        }
        self.publish(revision, event);
        true
    }
}

impl MemoryDiscovery {
    /// A new, empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Declares `node` down, as the expiry of its lease would: it and its names vanish and
    /// every member sees [`MembershipEvent::Down`]. Returns whether the node was a member.
    pub fn fail(&self, cluster: &str, node: &NodeId) -> bool {
        let mut st = self.lock();
        st.revision += 1;
        let rev = st.revision;
        st.clusters
            .get_mut(cluster)
            .is_some_and(|c| c.remove(rev, node, MembershipEvent::Down(node.clone())))
    }

    /// The latest load report of every member of `cluster`.
    pub fn load(&self, cluster: &str) -> BTreeMap<NodeId, LoadReport> {
        self.lock()
            .clusters
            .get(cluster)
            .map(|c| c.load.clone())
            .unwrap_or_default()
    }

    /// The current members of `cluster`.
    pub fn members(&self, cluster: &str) -> Vec<NodeInfo> {
        self.lock()
            .clusters
            .get(cluster)
            .map(|c| c.members.values().cloned().collect())
            .unwrap_or_default()
    }
}

impl Discovery for MemoryDiscovery {
    fn read_members<'a>(&'a self, cluster: &'a str) -> DiscoveryFuture<'a, Vec<NodeInfo>> {
        Box::pin(async move { Ok(self.members(cluster)) })
    }

    fn read_specs<'a>(&'a self, cluster: &'a str) -> DiscoveryFuture<'a, Vec<GroupSpec>> {
        Box::pin(async move {
            Ok(self
                .lock()
                .clusters
                .get(cluster)
                .map(|c| c.specs.values().cloned().collect())
                .unwrap_or_default())
        })
    }

    fn read_group<'a>(
        &'a self,
        cluster: &'a str,
        group: &'a str,
    ) -> DiscoveryFuture<'a, Vec<GroupMember>> {
        Box::pin(async move {
            Ok(self
                .lock()
                .clusters
                .get(cluster)
                .and_then(|c| c.groups.get(group))
                .map(|g| g.members.values().cloned().collect())
                .unwrap_or_default())
        })
    }

    fn read_groups<'a>(
        &'a self,
        cluster: &'a str,
    ) -> DiscoveryFuture<'a, BTreeMap<String, Vec<GroupMember>>> {
        Box::pin(async move {
            Ok(self
                .lock()
                .clusters
                .get(cluster)
                .map(|c| {
                    c.groups
                        .iter()
                        .filter(|(_, g)| !g.members.is_empty())
                        .map(|(name, g)| (name.clone(), g.members.values().cloned().collect()))
                        .collect()
                })
                .unwrap_or_default())
        })
    }

    fn read_names<'a>(&'a self, cluster: &'a str) -> DiscoveryFuture<'a, Vec<(String, NameEntry)>> {
        Box::pin(async move {
            Ok(self
                .lock()
                .clusters
                .get(cluster)
                .map(|c| {
                    c.names
                        .iter()
                        .map(|(name, entry)| (name.clone(), entry.clone()))
                        .collect()
                })
                .unwrap_or_default())
        })
    }

    fn join<'a>(&'a self, me: &'a NodeInfo) -> DiscoveryFuture<'a, Membership> {
        Box::pin(async move {
            let mut st = self.lock();
            st.revision += 1;
            let rev = st.revision;
            let cluster = st.clusters.entry(me.cluster.clone()).or_default();
            if cluster.members.contains_key(&me.id) {
                return Err(Error::NodeIdTaken(me.id.clone()));
            }
            cluster.members.insert(me.id.clone(), me.clone());
            cluster.publish(rev, MembershipEvent::Up(me.clone()));
            let (tx, rx) = mpsc::unbounded_channel();
            cluster.watchers.push(tx);
            Ok(Membership {
                revision: rev,
                members: cluster.members.values().cloned().collect(),
                events: rx,
            })
        })
    }

    fn leave<'a>(&'a self, cluster: &'a str, node: &'a NodeId) -> DiscoveryFuture<'a, ()> {
        Box::pin(async move {
            let mut st = self.lock();
            st.revision += 1;
            let rev = st.revision;
            if let Some(c) = st.clusters.get_mut(cluster) {
                c.remove(rev, node, MembershipEvent::Left(node.clone()));
            }
            Ok(())
        })
    }

    fn register_name<'a>(
        &'a self,
        cluster: &'a str,
        name: &'a str,
        entry: &'a NameEntry,
    ) -> DiscoveryFuture<'a, ()> {
        Box::pin(async move {
            let mut st = self.lock();
            let c = st.clusters.entry(cluster.to_owned()).or_default();
            if !c.members.contains_key(&entry.node) {
                return Err(Error::UnknownNode(entry.node.clone()));
            }
            match c.names.get(name) {
                Some(held) if held != entry => Err(Error::NameTaken {
                    name: name.to_owned(),
                    node: held.node.clone(),
                    actor: held.actor,
                }),
                Some(_) => Ok(()),
                None => {
                    c.names.insert(name.to_owned(), entry.clone());
                    Ok(())
                }
            }
        })
    }

    fn unregister_name<'a>(
        &'a self,
        cluster: &'a str,
        name: &'a str,
        entry: &'a NameEntry,
    ) -> DiscoveryFuture<'a, ()> {
        Box::pin(async move {
            let mut st = self.lock();
            if let Some(c) = st.clusters.get_mut(cluster) {
                if c.names.get(name) == Some(entry) {
                    c.names.remove(name);
                }
            }
            Ok(())
        })
    }

    fn lookup_name<'a>(
        &'a self,
        cluster: &'a str,
        name: &'a str,
    ) -> DiscoveryFuture<'a, Option<NameEntry>> {
        Box::pin(async move {
            Ok(self
                .lock()
                .clusters
                .get(cluster)
                .and_then(|c| c.names.get(name).cloned()))
        })
    }

    fn report_load<'a>(
        &'a self,
        cluster: &'a str,
        node: &'a NodeId,
        load: &'a LoadReport,
    ) -> DiscoveryFuture<'a, ()> {
        Box::pin(async move { self.store_load(cluster, node, load) })
    }

    fn join_group<'a>(
        &'a self,
        cluster: &'a str,
        group: &'a str,
        member: &'a GroupMember,
    ) -> DiscoveryFuture<'a, ()> {
        Box::pin(async move {
            let mut st = self.lock();
            st.revision += 1;
            let rev = st.revision;
            let c = st.clusters.entry(cluster.to_owned()).or_default();
            if !c.members.contains_key(&member.node) {
                return Err(Error::UnknownNode(member.node.clone()));
            }
            let g = c.groups.entry(group.to_owned()).or_default();
            let key = (member.node.clone(), member.actor);
            if g.members.get(&key) != Some(member) {
                g.members.insert(key, member.clone());
                g.publish(rev, GroupEvent::Joined(member.clone()));
            }
            Ok(())
        })
    }

    fn leave_group<'a>(
        &'a self,
        cluster: &'a str,
        group: &'a str,
        member: &'a GroupMember,
    ) -> DiscoveryFuture<'a, ()> {
        Box::pin(async move {
            let mut st = self.lock();
            st.revision += 1;
            let rev = st.revision;
            if let Some(g) = st
                .clusters
                .get_mut(cluster)
                .and_then(|c| c.groups.get_mut(group))
            {
                if let Some(m) = g.members.remove(&(member.node.clone(), member.actor)) {
                    g.publish(rev, GroupEvent::Left(m));
                }
            }
            Ok(())
        })
    }

    fn watch_group<'a>(
        &'a self,
        cluster: &'a str,
        group: &'a str,
    ) -> DiscoveryFuture<'a, GroupView> {
        Box::pin(async move {
            let mut st = self.lock();
            let rev = st.revision;
            let g = st
                .clusters
                .entry(cluster.to_owned())
                .or_default()
                .groups
                .entry(group.to_owned())
                .or_default();
            let (tx, rx) = mpsc::unbounded_channel();
            g.watchers.push(tx);
            Ok(GroupView {
                revision: rev,
                members: g.members.values().cloned().collect(),
                events: rx,
            })
        })
    }

    fn campaign<'a>(
        &'a self,
        cluster: &'a str,
        node: &'a NodeId,
    ) -> DiscoveryFuture<'a, Leadership> {
        Box::pin(async move {
            let rx = {
                let mut st = self.lock();
                st.revision += 1;
                let rev = st.revision;
                let c = st.clusters.entry(cluster.to_owned()).or_default();
                if !c.members.contains_key(node) {
                    return Err(Error::UnknownNode(node.clone()));
                }
                let (tx, rx) = oneshot::channel();
                c.campaigners.push((node.clone(), tx));
                c.elect(rev);
                rx
            };
            rx.await
                .map_err(|_| Error::Discovery("the campaign ended: the node left".to_owned()))
        })
    }

    fn leader<'a>(&'a self, cluster: &'a str) -> DiscoveryFuture<'a, Option<(NodeId, u64)>> {
        Box::pin(async move {
            Ok(self
                .lock()
                .clusters
                .get(cluster)
                .and_then(|c| c.leader.as_ref())
                .map(|l| (l.node.clone(), l.token)))
        })
    }

    fn put_spec<'a>(&'a self, cluster: &'a str, spec: &'a GroupSpec) -> DiscoveryFuture<'a, ()> {
        Box::pin(async move {
            let mut st = self.lock();
            st.revision += 1;
            let rev = st.revision;
            let c = st.clusters.entry(cluster.to_owned()).or_default();
            c.specs.insert(spec.group.clone(), spec.clone());
            c.spec_watchers
                .retain(|w| w.send((rev, SpecEvent::Put(spec.clone()))).is_ok());
            Ok(())
        })
    }

    fn watch_specs<'a>(&'a self, cluster: &'a str) -> DiscoveryFuture<'a, SpecView> {
        Box::pin(async move {
            let mut st = self.lock();
            let c = st.clusters.entry(cluster.to_owned()).or_default();
            let (tx, rx) = mpsc::unbounded_channel();
            c.spec_watchers.push(tx);
            Ok(SpecView {
                specs: c.specs.values().cloned().collect(),
                events: rx,
            })
        })
    }

    fn loads<'a>(&'a self, cluster: &'a str) -> DiscoveryFuture<'a, BTreeMap<NodeId, LoadReport>> {
        Box::pin(async move { Ok(self.load(cluster)) })
    }

    fn register_entity_host<'a>(
        &'a self,
        cluster: &'a str,
        kind: &'a str,
        node: &'a NodeId,
        shards: u32,
    ) -> DiscoveryFuture<'a, ()> {
        Box::pin(async move { self.register_host(cluster, kind, node, shards) })
    }

    fn unregister_entity_host<'a>(
        &'a self,
        cluster: &'a str,
        kind: &'a str,
        node: &'a NodeId,
    ) -> DiscoveryFuture<'a, ()> {
        Box::pin(async move {
            self.with_entities(cluster, kind, |c, _| {
                if let Some(hosts) = c.entity_hosts.get_mut(kind) {
                    hosts.remove(node);
                }
            });
            Ok(())
        })
    }

    fn read_entity_hosts<'a>(
        &'a self,
        cluster: &'a str,
    ) -> DiscoveryFuture<'a, BTreeMap<String, BTreeMap<NodeId, u32>>> {
        Box::pin(async move {
            Ok(self
                .lock()
                .clusters
                .get(cluster)
                .map(|c| c.entity_hosts.clone())
                .unwrap_or_default())
        })
    }

    fn put_assignment<'a>(
        &'a self,
        cluster: &'a str,
        assignment: &'a Assignment,
        token: u64,
    ) -> DiscoveryFuture<'a, ()> {
        Box::pin(async move {
            self.with_entities(cluster, &assignment.kind, |c, rev| {
                if c.leader.as_ref().map(|l| l.token) != Some(token) {
                    return Err(Error::Discovery(format!(
                        "assignment of {} refused: token {token} is not the current leader's",
                        assignment.kind
                    )));
                }
                let e = c.entities.entry(assignment.kind.clone()).or_default();
                e.assignment = Some(assignment.clone());
                e.publish(rev, EntityEvent::Assigned(assignment.clone()));
                Ok(())
            })
        })
    }

    fn read_assignment<'a>(
        &'a self,
        cluster: &'a str,
        kind: &'a str,
    ) -> DiscoveryFuture<'a, Option<Assignment>> {
        Box::pin(async move {
            Ok(self
                .lock()
                .clusters
                .get(cluster)
                .and_then(|c| c.entities.get(kind))
                .and_then(|e| e.assignment.clone()))
        })
    }

    fn watch_entities<'a>(
        &'a self,
        cluster: &'a str,
        kind: &'a str,
    ) -> DiscoveryFuture<'a, EntityView> {
        Box::pin(async move {
            let mut st = self.lock();
            let revision = st.revision;
            let c = st.clusters.entry(cluster.to_owned()).or_default();
            let e = c.entities.entry(kind.to_owned()).or_default();
            let (tx, rx) = mpsc::unbounded_channel();
            e.watchers.push(tx);
            Ok(EntityView {
                revision,
                assignment: e.assignment.clone(),
                owners: e.owners.values().map(|(o, _)| o.clone()).collect(),
                events: rx,
            })
        })
    }

    fn acquire_shard<'a>(
        &'a self,
        cluster: &'a str,
        kind: &'a str,
        shard: u32,
        node: &'a NodeId,
    ) -> DiscoveryFuture<'a, Option<u64>> {
        Box::pin(async move { self.acquire(cluster, kind, shard, node) })
    }

    fn release_shard<'a>(
        &'a self,
        cluster: &'a str,
        kind: &'a str,
        shard: u32,
        node: &'a NodeId,
        token: u64,
    ) -> DiscoveryFuture<'a, ()> {
        Box::pin(async move {
            self.release(cluster, kind, shard, node, token);
            Ok(())
        })
    }
}

impl MemoryDiscovery {
    /// Runs `f` on the entity state of `kind` in `cluster`, at a new revision.
    fn with_entities<T>(
        &self,
        cluster: &str,
        kind: &str,
        f: impl FnOnce(&mut Cluster, u64) -> T,
    ) -> T {
        let _ = kind;
        let mut st = self.lock();
        st.revision += 1;
        let rev = st.revision;
        let c = st.clusters.entry(cluster.to_owned()).or_default();
        f(c, rev)
    }

    fn member_or_err(c: &Cluster, node: &NodeId) -> Result<(), Error> {
        if c.members.contains_key(node) {
            Ok(())
        } else {
            Err(Error::UnknownNode(node.clone()))
        }
    }
}

/// The keyed-entity half of the trait, kept apart from the rest.
impl MemoryDiscovery {
    fn register_host(
        &self,
        cluster: &str,
        kind: &str,
        node: &NodeId,
        shards: u32,
    ) -> Result<(), Error> {
        self.with_entities(cluster, kind, |c, _| {
            Self::member_or_err(c, node)?;
            c.entity_hosts
                .entry(kind.to_owned())
                .or_default()
                .insert(node.clone(), shards);
            Ok(())
        })
    }

    fn acquire(
        &self,
        cluster: &str,
        kind: &str,
        shard: u32,
        node: &NodeId,
    ) -> Result<Option<u64>, Error> {
        self.with_entities(cluster, kind, |c, rev| {
            Self::member_or_err(c, node)?;
            let e = c.entities.entry(kind.to_owned()).or_default();
            if e.owners.contains_key(&shard) {
                return Ok(None);
            }
            let owner = ShardOwner {
                shard,
                node: node.clone(),
                epoch: 0,
            };
            e.owners.insert(shard, (owner.clone(), rev));
            e.publish(rev, EntityEvent::Owned(owner));
            Ok(Some(rev))
        })
    }

    fn release(&self, cluster: &str, kind: &str, shard: u32, node: &NodeId, token: u64) {
        self.with_entities(cluster, kind, |c, rev| {
            let e = c.entities.entry(kind.to_owned()).or_default();
            let ours = e
                .owners
                .get(&shard)
                .is_some_and(|(o, t)| &o.node == node && (token == 0 || *t == token));
            if ours {
                e.owners.remove(&shard);
                e.publish(rev, EntityEvent::Released(shard));
            }
        })
    }
}

impl MemoryDiscovery {
    fn store_load(&self, cluster: &str, node: &NodeId, load: &LoadReport) -> Result<(), Error> {
        let mut st = self.lock();
        let c = st
            .clusters
            .get_mut(cluster)
            .filter(|c| c.members.contains_key(node))
            .ok_or_else(|| Error::UnknownNode(node.clone()))?;
        c.load.insert(node.clone(), load.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ActorId;

    fn info(cluster: &str, id: &str) -> NodeInfo {
        NodeInfo {
            id: NodeId::new(id),
            cluster: cluster.into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            protocol: 1,
            version: "test".into(),
            labels: Default::default(),
            started_at_ms: 0,
            spawnable: Vec::new(),
            admin: None,
        }
    }

    fn entry(node: &str, actor: u64) -> NameEntry {
        NameEntry {
            node: NodeId::new(node),
            addr: "127.0.0.1:1".parse().unwrap(),
            actor: ActorId(actor),
            actor_type: "t".into(),
        }
    }

    #[tokio::test]
    async fn join_sees_snapshot_then_events_in_order() {
        let d = MemoryDiscovery::new();
        let mut a = d.join(&info("c", "a")).await.unwrap();
        assert_eq!(a.members.len(), 1);
        let b = d.join(&info("c", "b")).await.unwrap();
        assert_eq!(b.members.len(), 2);
        assert!(b.revision > a.revision);
        d.leave("c", &NodeId::new("b")).await.unwrap();
        let (r1, e1) = a.events.recv().await.unwrap();
        let (r2, e2) = a.events.recv().await.unwrap();
        assert!(matches!(e1, MembershipEvent::Up(ref i) if i.id.as_str() == "b"));
        assert_eq!(e2, MembershipEvent::Left(NodeId::new("b")));
        assert!(r1 < r2);
    }

    #[tokio::test]
    async fn duplicate_node_id_is_refused() {
        let d = MemoryDiscovery::new();
        let _a = d.join(&info("c", "a")).await.unwrap();
        let err = d.join(&info("c", "a")).await.unwrap_err();
        assert_eq!(err, Error::NodeIdTaken(NodeId::new("a")));
        // Another cluster may use the same id.
        d.join(&info("other", "a")).await.unwrap();
    }

    #[tokio::test]
    async fn group_members_join_leave_and_vanish_with_their_node() {
        let d = MemoryDiscovery::new();
        let _a = d.join(&info("c", "a")).await.unwrap();
        let member = |node: &str, actor| GroupMember {
            node: NodeId::new(node),
            addr: "127.0.0.1:1".parse().unwrap(),
            actor: ActorId(actor),
            actor_type: "t".into(),
            weight: 1,
        };
        d.join_group("c", "g", &member("a", 1)).await.unwrap();
        let mut view = d.watch_group("c", "g").await.unwrap();
        assert_eq!(view.members, vec![member("a", 1)]);
        let err = d
            .join_group("c", "g", &member("ghost", 9))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::UnknownNode(_)));
        d.join_group("c", "g", &member("a", 2)).await.unwrap();
        d.leave_group("c", "g", &member("a", 1)).await.unwrap();
        assert_eq!(
            view.events.recv().await.unwrap().1,
            GroupEvent::Joined(member("a", 2))
        );
        assert_eq!(
            view.events.recv().await.unwrap().1,
            GroupEvent::Left(member("a", 1))
        );
        assert!(d.fail("c", &NodeId::new("a")));
        assert_eq!(
            view.events.recv().await.unwrap().1,
            GroupEvent::Left(member("a", 2))
        );
        assert!(d.watch_group("c", "g").await.unwrap().members.is_empty());
    }

    #[tokio::test]
    async fn one_leader_at_a_time_and_a_larger_token_for_the_next() {
        let d = MemoryDiscovery::new();
        let _a = d.join(&info("c", "a")).await.unwrap();
        let _b = d.join(&info("c", "b")).await.unwrap();
        let a = NodeId::new("a");
        let b = NodeId::new("b");
        let mut first = d.campaign("c", &a).await.unwrap();
        assert_eq!(d.leader("c").await.unwrap(), Some((a.clone(), first.token)));
        let waiting = tokio::spawn({
            let d = d.clone();
            async move { d.campaign("c", &NodeId::new("b")).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "b waits while a leads");
        assert!(d.fail("c", &a));
        first.lost.changed().await.unwrap();
        assert!(*first.lost.borrow(), "a learns it lost the leadership");
        let second = waiting.await.unwrap().unwrap();
        assert!(second.token > first.token, "fencing token grows");
        assert_eq!(d.leader("c").await.unwrap(), Some((b, second.token)));
        assert!(matches!(
            d.campaign("c", &NodeId::new("ghost")).await,
            Err(Error::UnknownNode(_))
        ));
    }

    #[tokio::test]
    async fn clusters_are_isolated() {
        let d = MemoryDiscovery::new();
        let mut a = d.join(&info("one", "a")).await.unwrap();
        let _b = d.join(&info("two", "b")).await.unwrap();
        assert!(
            a.events.try_recv().is_err(),
            "no event from another cluster"
        );
        assert_eq!(d.members("one").len(), 1);
    }

    #[tokio::test]
    async fn names_are_exclusive_and_vanish_with_their_node() {
        let d = MemoryDiscovery::new();
        let _a = d.join(&info("c", "a")).await.unwrap();
        let _b = d.join(&info("c", "b")).await.unwrap();
        d.register_name("c", "svc", &entry("a", 1)).await.unwrap();
        d.register_name("c", "svc", &entry("a", 1)).await.unwrap();
        let err = d
            .register_name("c", "svc", &entry("b", 2))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NameTaken { .. }));
        // Only the holder can unregister.
        d.unregister_name("c", "svc", &entry("b", 2)).await.unwrap();
        assert_eq!(
            d.lookup_name("c", "svc").await.unwrap(),
            Some(entry("a", 1))
        );
        assert!(d.fail("c", &NodeId::new("a")));
        assert_eq!(d.lookup_name("c", "svc").await.unwrap(), None);
        d.register_name("c", "svc", &entry("b", 2)).await.unwrap();
    }

    #[tokio::test]
    async fn names_and_groups_are_listed_and_go_with_their_node() {
        let d = MemoryDiscovery::new();
        assert!(
            d.read_names("c").await.unwrap().is_empty(),
            "unknown cluster"
        );
        let _a = d.join(&info("c", "a")).await.unwrap();
        let _b = d.join(&info("c", "b")).await.unwrap();
        let _other = d.join(&info("other", "a")).await.unwrap();
        d.register_name("c", "zeta", &entry("b", 2)).await.unwrap();
        d.register_name("c", "alpha", &entry("a", 1)).await.unwrap();
        d.register_name("other", "hidden", &entry("a", 9))
            .await
            .unwrap();
        assert_eq!(
            d.read_names("c").await.unwrap(),
            vec![
                ("alpha".to_owned(), entry("a", 1)),
                ("zeta".to_owned(), entry("b", 2)),
            ],
            "sorted by name, this cluster's only"
        );
        let member = |node: &str, actor| GroupMember {
            node: NodeId::new(node),
            addr: "127.0.0.1:1".parse().unwrap(),
            actor: ActorId(actor),
            actor_type: "t".into(),
            weight: 1,
        };
        d.join_group("c", "g", &member("a", 1)).await.unwrap();
        d.join_group("c", "g", &member("b", 2)).await.unwrap();
        d.join_group("c", "h", &member("b", 3)).await.unwrap();
        let groups = d.read_groups("c").await.unwrap();
        assert_eq!(groups.keys().collect::<Vec<_>>(), ["g", "h"]);
        assert_eq!(groups["g"], vec![member("a", 1), member("b", 2)]);
        assert!(d.fail("c", &NodeId::new("b")));
        assert_eq!(
            d.read_names("c").await.unwrap(),
            vec![("alpha".to_owned(), entry("a", 1))]
        );
        let groups = d.read_groups("c").await.unwrap();
        assert_eq!(
            groups.len(),
            1,
            "a group whose last member went is not listed"
        );
        assert_eq!(groups["g"], vec![member("a", 1)]);
    }
}
