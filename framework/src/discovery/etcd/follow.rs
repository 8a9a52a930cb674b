//! Following a key prefix: read it, watch it from the read's revision, and when the watch
//! breaks, read it again and report the [difference](crate::core::diff) — nothing is missed or
//! reported twice. Each change becomes an event of the view that follows the prefix
//! (membership, group, specs).

use std::collections::BTreeMap;
use std::sync::Weak;
use std::time::Duration;

use etcd_client::{EventType, GetOptions, WatchOptions};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::record::{NodeRecord, NodeState};
use super::{etcd_error, Inner};
use crate::core::diff::{diff, Change};
use crate::discovery::{GroupEvent, GroupMember, GroupSpec, MembershipEvent, SpecEvent};
use crate::error::Error;

impl Inner {
    /// Reads every value under `prefix`: the revision of the read and the values by key.
    /// Malformed values are logged and skipped.
    pub(super) async fn read_prefix<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<(i64, BTreeMap<Vec<u8>, T>), Error> {
        let response = self
            .timed(
                "read",
                self.client()
                    .get(prefix.to_owned(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let revision = response.header().map_or(0, |h| h.revision());
        let mut values = BTreeMap::new();
        for kv in response.kvs() {
            match serde_json::from_slice::<T>(kv.value()) {
                Ok(value) => {
                    values.insert(kv.key().to_vec(), value);
                }
                Err(e) => {
                    tracing::warn!(key = %String::from_utf8_lossy(kv.key()), error = %e, "ignoring a malformed entry")
                }
            }
        }
        Ok((revision, values))
    }
}

/// The membership event of a change under `nodes/`: a node that writes `leaving` before its
/// key goes has left; one whose key just goes (lease expired) is down.
pub(super) fn membership_event(change: Change<NodeRecord>) -> Option<MembershipEvent> {
    match change {
        Change::Put { old, new } => (new.state == NodeState::Up && old.as_ref() != Some(&new))
            .then_some(MembershipEvent::Up(new.info)),
        Change::Delete { old } => Some(match old.state {
            NodeState::Leaving => MembershipEvent::Left(old.info.id),
            NodeState::Up => MembershipEvent::Down(old.info.id),
        }),
    }
}

/// The spec event of a change under `specs/`.
pub(super) fn spec_event(change: Change<GroupSpec>) -> Option<SpecEvent> {
    match change {
        Change::Put { old, new } => (old.as_ref() != Some(&new)).then_some(SpecEvent::Put(new)),
        Change::Delete { old } => Some(SpecEvent::Removed(old.group)),
    }
}

/// The group event of a change under `groups/{group}/members/`.
pub(super) fn group_event(change: Change<GroupMember>) -> Option<GroupEvent> {
    match change {
        Change::Put { old, new } => (old.as_ref() != Some(&new)).then_some(GroupEvent::Joined(new)),
        Change::Delete { old } => Some(GroupEvent::Left(old)),
    }
}

/// Follows every key under `prefix` from `revision + 1`, turning each change into an event
/// with `event`, until the receiver is dropped or the discovery is. When the watch breaks
/// (cancelled, compacted, etcd restarted or unreachable), reads the prefix again, reports the
/// difference with what it knew, and watches from the new revision: nothing is missed or
/// reported twice. While etcd is unreachable it keeps the last view and retries with backoff.
pub(super) async fn follow_prefix<T, E>(
    weak: Weak<Inner>,
    prefix: String,
    mut revision: i64,
    mut known: BTreeMap<Vec<u8>, T>,
    tx: mpsc::UnboundedSender<(u64, E)>,
    event: fn(Change<T>) -> Option<E>,
) where
    T: DeserializeOwned + PartialEq + Clone + Send + 'static,
    E: Send + 'static,
{
    let send = |rev: i64, change: Change<T>| {
        if let Some(e) = event(change) {
            let _ = tx.send((rev as u64, e));
        }
    };
    let mut failures = 0u32;
    loop {
        let watched = async {
            let options = WatchOptions::new()
                .with_prefix()
                .with_progress_notify()
                .with_start_revision(revision + 1);
            let (_watcher, mut stream) = {
                let inner = weak.upgrade().ok_or(Error::Shutdown)?;
                inner
                    .timed("watch", inner.client().watch(prefix.clone(), Some(options)))
                    .await?
            };
            loop {
                let Some(response) = stream.message().await.map_err(|e| etcd_error("watch", e))?
                else {
                    return Err(Error::Discovery("etcd ended the watch".to_owned()));
                };
                if response.compact_revision() > 0 {
                    return Err(Error::Discovery(format!(
                        "watch compacted at revision {}",
                        response.compact_revision()
                    )));
                }
                if response.canceled() {
                    return Err(Error::Discovery(format!(
                        "watch cancelled: {}",
                        response.cancel_reason()
                    )));
                }
                for e in response.events() {
                    let Some(kv) = e.kv() else { continue };
                    revision = revision.max(kv.mod_revision());
                    match e.event_type() {
                        EventType::Put => match serde_json::from_slice::<T>(kv.value()) {
                            Ok(new) => {
                                let old = known.insert(kv.key().to_vec(), new.clone());
                                send(kv.mod_revision(), Change::Put { old, new });
                            }
                            Err(err) => {
                                tracing::warn!(key = %String::from_utf8_lossy(kv.key()), error = %err, "ignoring a malformed entry")
                            }
                        },
                        EventType::Delete => {
                            if let Some(old) = known.remove(kv.key()) {
                                send(kv.mod_revision(), Change::Delete { old });
                            }
                        }
                    }
                }
                if let Some(header) = response.header() {
                    revision = revision.max(header.revision());
                }
            }
        };
        let outcome: Result<(), Error> = tokio::select! {
            outcome = watched => outcome,
            _ = tx.closed() => return,
        };
        match outcome {
            Err(Error::Shutdown) => return,
            Err(e) => {
                failures += 1;
                tracing::warn!(%prefix, error = %e, "etcd watch broke; resyncing");
            }
            Ok(()) => {}
        }
        let backoff =
            (Duration::from_millis(100) * 2u32.pow(failures.min(5))).min(Duration::from_secs(2));
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = tx.closed() => return,
        }
        let Some(inner) = weak.upgrade() else { return };
        match inner.read_prefix::<T>(&prefix).await {
            Ok((rev, fresh)) => {
                failures = 0;
                for (_, change) in diff(&known, &fresh) {
                    send(rev, change);
                }
                known = fresh;
                revision = rev;
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(%prefix, error = %e, "etcd resync failed; keeping the last view");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::NodeId;

    fn record(id: &str, state: NodeState) -> NodeRecord {
        NodeRecord {
            info: crate::core::model::NodeInfo {
                id: NodeId::new(id),
                cluster: "c".to_owned(),
                addr: "127.0.0.1:4000".parse().unwrap(),
                protocol: 1,
                version: "0".to_owned(),
                labels: Default::default(),
                started_at_ms: 0,
                spawnable: Vec::new(),
                admin: None,
            },
            state,
        }
    }

    #[test]
    fn a_node_that_comes_up_is_up_once() {
        let up = record("n1", NodeState::Up);
        let new = |old| Change::Put {
            old,
            new: up.clone(),
        };
        assert_eq!(
            membership_event(new(None)),
            Some(MembershipEvent::Up(up.info.clone()))
        );
        assert_eq!(membership_event(new(Some(up.clone()))), None);
    }

    #[test]
    fn a_node_that_marks_its_leave_then_goes_has_left() {
        let up = record("n1", NodeState::Up);
        let leaving = record("n1", NodeState::Leaving);
        let marked = Change::Put {
            old: Some(up),
            new: leaving.clone(),
        };
        assert_eq!(membership_event(marked), None);
        assert_eq!(
            membership_event(Change::Delete { old: leaving }),
            Some(MembershipEvent::Left(NodeId::new("n1")))
        );
    }

    #[test]
    fn a_node_whose_key_just_goes_is_down() {
        let up = record("n1", NodeState::Up);
        assert_eq!(
            membership_event(Change::Delete { old: up }),
            Some(MembershipEvent::Down(NodeId::new("n1")))
        );
    }
}
