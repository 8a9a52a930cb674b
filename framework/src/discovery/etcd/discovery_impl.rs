//! The [`Discovery`] trait on etcd: each method on top of the [session](super::session), the
//! [follower](super::follow) and the [election](super::election).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use tokio::sync::mpsc;

use super::entities::{entity_event, EntityRecord};
use super::follow::{follow_prefix, group_event, membership_event, spec_event};
use super::record::{NodeRecord, NodeState};
use super::session::{keep_alive, Session};
use super::{election, lock, EtcdDiscovery};
use crate::discovery::{
    Assignment, Discovery, DiscoveryFuture, EntityView, GroupMember, GroupSpec, GroupView,
    Leadership, LeaseCheck, LeaseClock, LoadReport, Membership, NameEntry, NodeInfo, SpecView,
};
use crate::error::Error;
use crate::id::NodeId;

impl Discovery for EtcdDiscovery {
    fn register_entity_host<'a>(
        &'a self,
        cluster: &'a str,
        kind: &'a str,
        node: &'a NodeId,
        shards: u32,
    ) -> DiscoveryFuture<'a, ()> {
        Box::pin(self.inner.register_entity_host(cluster, kind, node, shards))
    }

    fn unregister_entity_host<'a>(
        &'a self,
        cluster: &'a str,
        kind: &'a str,
        node: &'a NodeId,
    ) -> DiscoveryFuture<'a, ()> {
        Box::pin(self.inner.unregister_entity_host(cluster, kind, node))
    }

    fn read_entity_hosts<'a>(
        &'a self,
        cluster: &'a str,
    ) -> DiscoveryFuture<'a, BTreeMap<String, BTreeMap<NodeId, u32>>> {
        Box::pin(self.inner.read_entity_hosts(cluster))
    }

    fn put_assignment<'a>(
        &'a self,
        cluster: &'a str,
        assignment: &'a Assignment,
        token: u64,
    ) -> DiscoveryFuture<'a, ()> {
        Box::pin(self.inner.put_assignment(cluster, assignment, token))
    }

    fn read_assignment<'a>(
        &'a self,
        cluster: &'a str,
        kind: &'a str,
    ) -> DiscoveryFuture<'a, Option<Assignment>> {
        Box::pin(self.inner.read_assignment(cluster, kind))
    }

    fn watch_entities<'a>(
        &'a self,
        cluster: &'a str,
        kind: &'a str,
    ) -> DiscoveryFuture<'a, EntityView> {
        Box::pin(async move {
            let inner = &self.inner;
            let (revision, values) = inner.read_entities(cluster, kind).await?;
            let mut assignment = None;
            let mut owners = Vec::new();
            for value in values.values() {
                match value {
                    EntityRecord::Assignment(a) => assignment = Some(a.clone()),
                    EntityRecord::Owner(o) => owners.push(o.clone()),
                }
            }
            let (tx, rx) = mpsc::unbounded_channel();
            inner.io.spawn(follow_prefix(
                Arc::downgrade(inner),
                inner.keys(cluster).entities(kind),
                revision,
                values,
                tx,
                entity_event,
            ));
            Ok(EntityView {
                revision: revision as u64,
                assignment,
                owners,
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
        Box::pin(self.inner.acquire_shard(cluster, kind, shard, node))
    }

    fn release_shard<'a>(
        &'a self,
        cluster: &'a str,
        kind: &'a str,
        shard: u32,
        node: &'a NodeId,
        token: u64,
    ) -> DiscoveryFuture<'a, ()> {
        Box::pin(self.inner.release_shard(cluster, kind, shard, node, token))
    }

    fn read_specs<'a>(&'a self, cluster: &'a str) -> DiscoveryFuture<'a, Vec<GroupSpec>> {
        Box::pin(async move {
            let inner = &self.inner;
            let (_, specs) = inner
                .read_prefix::<GroupSpec>(&inner.keys(cluster).specs())
                .await?;
            Ok(specs.into_values().collect())
        })
    }

    fn read_group<'a>(
        &'a self,
        cluster: &'a str,
        group: &'a str,
    ) -> DiscoveryFuture<'a, Vec<GroupMember>> {
        Box::pin(async move {
            let inner = &self.inner;
            let prefix = inner.keys(cluster).group_members(group);
            let (_, members) = inner.read_prefix::<GroupMember>(&prefix).await?;
            Ok(members.into_values().collect())
        })
    }

    fn read_groups<'a>(
        &'a self,
        cluster: &'a str,
    ) -> DiscoveryFuture<'a, BTreeMap<String, Vec<GroupMember>>> {
        Box::pin(async move {
            let inner = &self.inner;
            let keys = inner.keys(cluster);
            let (_, members) = inner.read_prefix::<GroupMember>(&keys.groups()).await?;
            let mut groups: BTreeMap<String, Vec<GroupMember>> = BTreeMap::new();
            for (key, member) in members {
                if let Some(group) = keys.group_of_member(&key) {
                    groups.entry(group).or_default().push(member);
                }
            }
            Ok(groups)
        })
    }

    fn read_names<'a>(&'a self, cluster: &'a str) -> DiscoveryFuture<'a, Vec<(String, NameEntry)>> {
        Box::pin(async move {
            let inner = &self.inner;
            let keys = inner.keys(cluster);
            let (_, names) = inner.read_prefix::<NameEntry>(&keys.names()).await?;
            // Keys come sorted, and so do the names under one prefix.
            Ok(names
                .into_iter()
                .filter_map(|(key, entry)| Some((keys.name_of(&key)?, entry)))
                .collect())
        })
    }

    fn read_members<'a>(&'a self, cluster: &'a str) -> DiscoveryFuture<'a, Vec<NodeInfo>> {
        Box::pin(async move {
            let inner = &self.inner;
            let prefix = inner.keys(cluster).nodes();
            let (_, nodes) = inner.read_prefix::<NodeRecord>(&prefix).await?;
            Ok(nodes
                .into_values()
                .filter(|r| r.state == NodeState::Up)
                .map(|r| r.info)
                .collect())
        })
    }

    fn join<'a>(&'a self, me: &'a NodeInfo) -> DiscoveryFuture<'a, Membership> {
        Box::pin(async move {
            if me.id.as_str().contains('/') || me.cluster.contains('/') {
                return Err(Error::Discovery(
                    "node ids and cluster names used with etcd must not contain '/'".to_owned(),
                ));
            }
            let inner = &self.inner;
            let record = NodeRecord {
                info: me.clone(),
                state: NodeState::Up,
            };
            let granted_at = std::time::Instant::now();
            let lease = inner.register(&record).await?;
            let prefix = inner.keys(&me.cluster).nodes();
            let (revision, nodes) = inner.read_prefix::<NodeRecord>(&prefix).await?;
            let members: Vec<NodeInfo> = nodes.values().map(|r| r.info.clone()).collect();
            let session = Arc::new(Session::new(
                record,
                lease,
                granted_at,
                inner.config.lease_ttl,
            ));
            let (tx, rx) = mpsc::unbounded_channel();
            let keepalive = inner
                .io
                .spawn(keep_alive(Arc::downgrade(inner), Arc::downgrade(&session)));
            let watch = inner.io.spawn(follow_prefix(
                Arc::downgrade(inner),
                prefix,
                revision,
                nodes,
                tx,
                membership_event,
            ));
            lock(&session.tasks).extend([keepalive, watch]);
            lock(&inner.sessions).insert((me.cluster.clone(), me.id.clone()), session);
            Ok(Membership {
                revision: revision as u64,
                members,
                events: rx,
            })
        })
    }

    fn leave<'a>(&'a self, cluster: &'a str, node: &'a NodeId) -> DiscoveryFuture<'a, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            let Some(session) = lock(&inner.sessions).remove(&(cluster.to_owned(), node.clone()))
            else {
                return Ok(());
            };
            for task in lock(&session.tasks).drain(..) {
                task.abort();
            }
            let record = {
                let mut record = lock(&session.record);
                record.state = NodeState::Leaving;
                record.clone()
            };
            let value = serde_json::to_vec(&record).map_err(|e| Error::Discovery(e.to_string()))?;
            // Mark the leave, so that the others see `Left`, not `Down`; then drop everything.
            inner
                .put_leased(&session, inner.keys(cluster).node(node), value)
                .await?;
            let lease = session.lease.load(Ordering::Acquire);
            inner
                .timed("lease revoke", inner.client().lease_revoke(lease))
                .await?;
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
            let inner = &self.inner;
            let session = inner
                .session(cluster, &entry.node)
                .ok_or_else(|| Error::UnknownNode(entry.node.clone()))?;
            let lease = session.lease.load(Ordering::Acquire);
            inner
                .claim_name(lease, inner.keys(cluster).name(name), entry, name)
                .await?;
            lock(&session.names).insert(name.to_owned(), entry.clone());
            Ok(())
        })
    }

    fn unregister_name<'a>(
        &'a self,
        cluster: &'a str,
        name: &'a str,
        entry: &'a NameEntry,
    ) -> DiscoveryFuture<'a, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            if let Some(session) = inner.session(cluster, &entry.node) {
                lock(&session.names).remove(name);
            }
            let key = inner.keys(cluster).name(name);
            let value = serde_json::to_vec(entry).map_err(|e| Error::Discovery(e.to_string()))?;
            let txn = Txn::new()
                .when([Compare::value(key.clone(), CompareOp::Equal, value)])
                .and_then([TxnOp::delete(key, None)]);
            inner
                .timed("unregister name", inner.client().txn(txn))
                .await
                .map(|_| ())
        })
    }

    fn lookup_name<'a>(
        &'a self,
        cluster: &'a str,
        name: &'a str,
    ) -> DiscoveryFuture<'a, Option<NameEntry>> {
        Box::pin(async move {
            let inner = &self.inner;
            let response = inner
                .timed(
                    "lookup name",
                    inner.client().get(inner.keys(cluster).name(name), None),
                )
                .await?;
            match response.kvs().first() {
                None => Ok(None),
                Some(kv) => serde_json::from_slice(kv.value()).map(Some).map_err(|e| {
                    Error::Discovery(format!("malformed name entry for `{name}`: {e}"))
                }),
            }
        })
    }

    fn report_load<'a>(
        &'a self,
        cluster: &'a str,
        node: &'a NodeId,
        load: &'a LoadReport,
    ) -> DiscoveryFuture<'a, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            let session = inner
                .session(cluster, node)
                .ok_or_else(|| Error::UnknownNode(node.clone()))?;
            *lock(&session.load) = Some(load.clone());
            let value = serde_json::to_vec(load).map_err(|e| Error::Discovery(e.to_string()))?;
            inner
                .put_leased(&session, inner.keys(cluster).load(node), value)
                .await
        })
    }

    fn join_group<'a>(
        &'a self,
        cluster: &'a str,
        group: &'a str,
        member: &'a GroupMember,
    ) -> DiscoveryFuture<'a, ()> {
        Box::pin(async move {
            if group.contains('/') {
                return Err(Error::Discovery(
                    "group names used with etcd must not contain '/'".to_owned(),
                ));
            }
            let inner = &self.inner;
            let session = inner
                .session(cluster, &member.node)
                .ok_or_else(|| Error::UnknownNode(member.node.clone()))?;
            let key = inner.keys(cluster).group_member(group, member);
            let value = serde_json::to_vec(member).map_err(|e| Error::Discovery(e.to_string()))?;
            inner
                .put_leased(&session, key.clone(), value.clone())
                .await?;
            lock(&session.groups).insert(key, value);
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
            let inner = &self.inner;
            let key = inner.keys(cluster).group_member(group, member);
            if let Some(session) = inner.session(cluster, &member.node) {
                lock(&session.groups).remove(&key);
            }
            inner
                .timed("leave group", inner.client().delete(key, None))
                .await
                .map(|_| ())
        })
    }

    fn watch_group<'a>(
        &'a self,
        cluster: &'a str,
        group: &'a str,
    ) -> DiscoveryFuture<'a, GroupView> {
        Box::pin(async move {
            let inner = &self.inner;
            let prefix = inner.keys(cluster).group_members(group);
            let (revision, known) = inner.read_prefix::<GroupMember>(&prefix).await?;
            let (tx, rx) = mpsc::unbounded_channel();
            let members = known.values().cloned().collect();
            inner.io.spawn(follow_prefix(
                Arc::downgrade(inner),
                prefix,
                revision,
                known,
                tx,
                group_event,
            ));
            Ok(GroupView {
                revision: revision as u64,
                members,
                events: rx,
            })
        })
    }

    fn campaign<'a>(
        &'a self,
        cluster: &'a str,
        node: &'a NodeId,
    ) -> DiscoveryFuture<'a, Leadership> {
        Box::pin(election::campaign(&self.inner, cluster, node))
    }

    fn leader<'a>(&'a self, cluster: &'a str) -> DiscoveryFuture<'a, Option<(NodeId, u64)>> {
        Box::pin(election::leader(&self.inner, cluster))
    }

    fn put_spec<'a>(&'a self, cluster: &'a str, spec: &'a GroupSpec) -> DiscoveryFuture<'a, ()> {
        Box::pin(async move {
            if spec.group.contains('/') {
                return Err(Error::Discovery(
                    "group names used with etcd must not contain '/'".to_owned(),
                ));
            }
            let inner = &self.inner;
            let key = inner.keys(cluster).spec(&spec.group);
            let value = serde_json::to_vec(spec).map_err(|e| Error::Discovery(e.to_string()))?;
            inner
                .timed("put spec", inner.client().put(key, value, None))
                .await
                .map(|_| ())
        })
    }

    fn watch_specs<'a>(&'a self, cluster: &'a str) -> DiscoveryFuture<'a, SpecView> {
        Box::pin(async move {
            let inner = &self.inner;
            let prefix = inner.keys(cluster).specs();
            let (revision, known) = inner.read_prefix::<GroupSpec>(&prefix).await?;
            let (tx, rx) = mpsc::unbounded_channel();
            let specs = known.values().cloned().collect();
            inner.io.spawn(follow_prefix(
                Arc::downgrade(inner),
                prefix,
                revision,
                known,
                tx,
                spec_event,
            ));
            Ok(SpecView { specs, events: rx })
        })
    }

    fn lease_deadline(&self, cluster: &str, node: &NodeId) -> Option<std::time::Instant> {
        self.inner
            .session(cluster, node)
            .and_then(|s| s.clock.alive_until())
    }

    fn spans_machines(&self) -> bool {
        true
    }

    fn lease_clock(&self, cluster: &str, node: &NodeId) -> Option<Arc<LeaseClock>> {
        self.inner.session(cluster, node).map(|s| s.clock.clone())
    }

    fn confirm_lease<'a>(
        &'a self,
        cluster: &'a str,
        node: &'a NodeId,
    ) -> DiscoveryFuture<'a, LeaseCheck> {
        Box::pin(async move {
            let Some(session) = self.inner.session(cluster, node) else {
                return Err(Error::Discovery(format!(
                    "node {node} is not registered with this discovery"
                )));
            };
            Ok(super::session::confirm(&self.inner, &session).await)
        })
    }

    fn loads<'a>(&'a self, cluster: &'a str) -> DiscoveryFuture<'a, BTreeMap<NodeId, LoadReport>> {
        Box::pin(async move {
            let inner = &self.inner;
            let keys = inner.keys(cluster);
            let (_, loads) = inner.read_prefix::<LoadReport>(&keys.loads()).await?;
            Ok(loads
                .into_iter()
                .filter_map(|(key, load)| Some((keys.node_of_load(&key)?, load)))
                .collect())
        })
    }
}
