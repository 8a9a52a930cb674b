//! Keyed entities in etcd: the hosts of each entity type (bound to their leases), the
//! controller's assignment (written only under the current leader's token) and the shards'
//! owners (created only if absent, bound to the owner's lease; the create revision is the
//! ownership's token).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use super::{lock, Inner};
use crate::core::diff::Change;
use crate::discovery::{Assignment, EntityEvent, ShardOwner};
use crate::error::Error;
use crate::id::NodeId;

/// A value under `entities/{kind}/`: the assignment or one shard's owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub(super) enum EntityRecord {
    Assignment(Assignment),
    Owner(ShardOwner),
}

/// The entity event of a change under `entities/{kind}/`.
pub(super) fn entity_event(change: Change<EntityRecord>) -> Option<EntityEvent> {
    match change {
        Change::Put { old, new } if old.as_ref() == Some(&new) => None,
        Change::Put { new, .. } => Some(match new {
            EntityRecord::Assignment(a) => EntityEvent::Assigned(a),
            EntityRecord::Owner(o) => EntityEvent::Owned(o),
        }),
        Change::Delete {
            old: EntityRecord::Owner(o),
        } => Some(EntityEvent::Released(o.shard)),
        Change::Delete { .. } => None,
    }
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|e| Error::Discovery(e.to_string()))
}

impl Inner {
    /// Puts `node`'s host key for `kind` under its lease; put again after a lost lease.
    pub(super) async fn register_entity_host(
        &self,
        cluster: &str,
        kind: &str,
        node: &NodeId,
        shards: u32,
    ) -> Result<(), Error> {
        if kind.contains('/') || kind.is_empty() {
            return Err(Error::Discovery(format!(
                "entity type names must be non-empty and must not contain '/': {kind:?}"
            )));
        }
        let session = self
            .session(cluster, node)
            .ok_or_else(|| Error::UnknownNode(node.clone()))?;
        let key = self.keys(cluster).entity_host(kind, node);
        let value = json(&shards)?;
        self.put_leased(&session, key.clone(), value.clone())
            .await?;
        lock(&session.groups).insert(key, value);
        Ok(())
    }

    pub(super) async fn unregister_entity_host(
        &self,
        cluster: &str,
        kind: &str,
        node: &NodeId,
    ) -> Result<(), Error> {
        let key = self.keys(cluster).entity_host(kind, node);
        if let Some(session) = self.session(cluster, node) {
            lock(&session.groups).remove(&key);
        }
        self.timed("delete entity host", self.client().delete(key, None))
            .await
            .map(|_| ())
    }

    pub(super) async fn read_entity_hosts(
        &self,
        cluster: &str,
    ) -> Result<BTreeMap<String, BTreeMap<NodeId, u32>>, Error> {
        let keys = self.keys(cluster);
        let (_, values) = self.read_prefix::<u32>(&keys.entity_hosts()).await?;
        let mut hosts: BTreeMap<String, BTreeMap<NodeId, u32>> = BTreeMap::new();
        for (key, shards) in values {
            if let Some((kind, node)) = keys.entity_host_of(&key) {
                hosts.entry(kind).or_default().insert(node, shards);
            }
        }
        Ok(hosts)
    }

    /// Writes the assignment if `token` is the create revision of the leader key.
    pub(super) async fn put_assignment(
        &self,
        cluster: &str,
        assignment: &Assignment,
        token: u64,
    ) -> Result<(), Error> {
        let keys = self.keys(cluster);
        let txn = Txn::new()
            .when([Compare::create_revision(
                keys.leader(),
                CompareOp::Equal,
                token as i64,
            )])
            .and_then([TxnOp::put(
                keys.assignment(&assignment.kind),
                json(&EntityRecord::Assignment(assignment.clone()))?,
                None,
            )]);
        let response = self.timed("put assignment", self.client().txn(txn)).await?;
        if response.succeeded() {
            Ok(())
        } else {
            Err(Error::Discovery(format!(
                "assignment of {} refused: token {token} is not the current leader's",
                assignment.kind
            )))
        }
    }

    pub(super) async fn read_assignment(
        &self,
        cluster: &str,
        kind: &str,
    ) -> Result<Option<Assignment>, Error> {
        let response = self
            .timed(
                "read assignment",
                self.client().get(self.keys(cluster).assignment(kind), None),
            )
            .await?;
        match response.kvs().first() {
            None => Ok(None),
            Some(kv) => match serde_json::from_slice::<EntityRecord>(kv.value()) {
                Ok(EntityRecord::Assignment(a)) => Ok(Some(a)),
                _ => Err(Error::Discovery(format!(
                    "malformed assignment of entity type {kind}"
                ))),
            },
        }
    }

    /// Creates the owner key of `shard` under `node`'s lease if absent: its revision.
    pub(super) async fn acquire_shard(
        &self,
        cluster: &str,
        kind: &str,
        shard: u32,
        node: &NodeId,
    ) -> Result<Option<u64>, Error> {
        let session = self
            .session(cluster, node)
            .ok_or_else(|| Error::UnknownNode(node.clone()))?;
        let lease = session.lease.load(Ordering::Acquire);
        let owner = ShardOwner {
            shard,
            node: node.clone(),
            epoch: lease as u64,
        };
        let key = self.keys(cluster).shard_owner(kind, shard);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                json(&EntityRecord::Owner(owner))?,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let response = self.timed("acquire shard", self.client().txn(txn)).await?;
        let revision = response.header().map_or(0, |h| h.revision());
        Ok(response.succeeded().then_some(revision as u64))
    }

    /// Deletes the owner key of `shard` if `node` holds it (with `token`, unless 0).
    pub(super) async fn release_shard(
        &self,
        cluster: &str,
        kind: &str,
        shard: u32,
        node: &NodeId,
        token: u64,
    ) -> Result<(), Error> {
        let key = self.keys(cluster).shard_owner(kind, shard);
        let compare = if token != 0 {
            Compare::create_revision(key.clone(), CompareOp::Equal, token as i64)
        } else {
            // Whatever this node holds: compare the value's node.
            let response = self
                .timed("read shard owner", self.client().get(key.clone(), None))
                .await?;
            let Some(kv) = response.kvs().first() else {
                return Ok(());
            };
            match serde_json::from_slice::<EntityRecord>(kv.value()) {
                Ok(EntityRecord::Owner(o)) if &o.node == node => {
                    Compare::create_revision(key.clone(), CompareOp::Equal, kv.create_revision())
                }
                _ => return Ok(()),
            }
        };
        let txn = Txn::new()
            .when([compare])
            .and_then([TxnOp::delete(key, None)]);
        self.timed("release shard", self.client().txn(txn))
            .await
            .map(|_| ())
    }

    /// Reads `entities/{kind}/`: its revision and values.
    pub(super) async fn read_entities(
        &self,
        cluster: &str,
        kind: &str,
    ) -> Result<(i64, BTreeMap<Vec<u8>, EntityRecord>), Error> {
        self.read_prefix::<EntityRecord>(&self.keys(cluster).entities(kind))
            .await
    }
}
