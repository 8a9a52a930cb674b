//! Leader election: one node of a cluster holds `leader`, bound to its lease, and the key's
//! create revision is its fencing token. Others wait for the key to go, then try again.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchOptions};

use super::{etcd_error, Inner};
use crate::discovery::Leadership;
use crate::error::Error;
use crate::id::NodeId;

/// Campaigns for `cluster`'s leadership as `node` until it wins: puts `leader` under the
/// node's lease if nobody holds it, else waits for the holder's key to go and tries again.
pub(super) async fn campaign(
    inner: &Arc<Inner>,
    cluster: &str,
    node: &NodeId,
) -> Result<Leadership, Error> {
    let key = inner.keys(cluster).leader();
    let value = serde_json::to_vec(node).map_err(|e| Error::Discovery(e.to_string()))?;
    let mut failures = 0u32;
    loop {
        let session = inner
            .session(cluster, node)
            .ok_or_else(|| Error::UnknownNode(node.clone()))?;
        let lease = session.lease.load(Ordering::Acquire);
        drop(session);
        // The leader key is bound to the leader's lease: it goes with the leader.
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                value.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let attempt = match inner.timed("campaign", inner.client().txn(txn)).await {
            Ok(response) => response,
            Err(e) => {
                failures += 1;
                tracing::warn!(%cluster, error = %e, "campaign failed; retrying");
                let backoff = (Duration::from_millis(100) * 2u32.pow(failures.min(5)))
                    .min(Duration::from_secs(2));
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let revision = attempt.header().map_or(0, |h| h.revision());
        if attempt.succeeded() {
            let (lost_tx, lost_rx) = tokio::sync::watch::channel(false);
            inner.io.spawn(watch_leadership(
                Arc::downgrade(inner),
                key,
                revision,
                lost_tx,
            ));
            return Ok(Leadership {
                token: revision as u64,
                lost: lost_rx,
            });
        }
        // Someone else leads: wait until the key goes, then try again.
        if let Err(e) = wait_for_delete(inner, &key, revision).await {
            tracing::warn!(%cluster, error = %e, "watching the leader failed; retrying");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The current leader of `cluster` and its fencing token, if any.
pub(super) async fn leader(inner: &Inner, cluster: &str) -> Result<Option<(NodeId, u64)>, Error> {
    let response = inner
        .timed(
            "read leader",
            inner.client().get(inner.keys(cluster).leader(), None),
        )
        .await?;
    match response.kvs().first() {
        None => Ok(None),
        Some(kv) => serde_json::from_slice::<NodeId>(kv.value())
            .map(|node| Some((node, kv.create_revision() as u64)))
            .map_err(|e| Error::Discovery(format!("malformed leader entry: {e}"))),
    }
}

/// Waits until `key` is deleted (after `revision`), or is absent.
async fn wait_for_delete(inner: &Inner, key: &str, revision: i64) -> Result<(), Error> {
    let options = WatchOptions::new().with_start_revision(revision + 1);
    let (_watcher, mut stream) = inner
        .timed(
            "watch leader",
            inner.client().watch(key.to_owned(), Some(options)),
        )
        .await?;
    loop {
        let Some(response) = stream
            .message()
            .await
            .map_err(|e| etcd_error("watch leader", e))?
        else {
            return Err(Error::Discovery("etcd ended the watch".to_owned()));
        };
        if response.canceled() || response.compact_revision() > 0 {
            return Err(Error::Discovery(
                "leader watch cancelled or compacted".to_owned(),
            ));
        }
        if response
            .events()
            .iter()
            .any(|e| e.event_type() == EventType::Delete)
        {
            return Ok(());
        }
    }
}

/// Sets `lost` when the leader key created at `token` is deleted or replaced; when the watch
/// breaks, reads the key again to decide. Ends when nobody holds the receiver any more.
async fn watch_leadership(
    weak: Weak<Inner>,
    key: String,
    token: i64,
    lost: tokio::sync::watch::Sender<bool>,
) {
    let mut revision = token;
    loop {
        let watched = async {
            let options = WatchOptions::new().with_start_revision(revision + 1);
            let (_watcher, mut stream) = {
                let inner = weak.upgrade().ok_or(Error::Shutdown)?;
                inner
                    .timed(
                        "watch leader",
                        inner.client().watch(key.clone(), Some(options)),
                    )
                    .await?
            };
            loop {
                let Some(response) = stream
                    .message()
                    .await
                    .map_err(|e| etcd_error("watch leader", e))?
                else {
                    return Err(Error::Discovery("etcd ended the watch".to_owned()));
                };
                for e in response.events() {
                    let Some(kv) = e.kv() else { continue };
                    revision = revision.max(kv.mod_revision());
                    if e.event_type() == EventType::Delete || kv.create_revision() != token {
                        return Ok(());
                    }
                }
                if response.canceled() || response.compact_revision() > 0 {
                    return Err(Error::Discovery(
                        "leader watch cancelled or compacted".to_owned(),
                    ));
                }
            }
        };
        let outcome = tokio::select! {
            outcome = watched => outcome,
            _ = lost.closed() => return,
        };
        match outcome {
            Ok(()) | Err(Error::Shutdown) => {
                let _ = lost.send(true);
                return;
            }
            Err(e) => tracing::warn!(error = %e, "leader watch broke; checking the key"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Some(inner) = weak.upgrade() else {
            let _ = lost.send(true);
            return;
        };
        match inner
            .timed("read leader", inner.client().get(key.clone(), None))
            .await
        {
            Ok(response) => {
                let still = response
                    .kvs()
                    .first()
                    .is_some_and(|kv| kv.create_revision() == token);
                if !still {
                    let _ = lost.send(true);
                    return;
                }
                revision = revision.max(response.header().map_or(revision, |h| h.revision()));
            }
            // etcd unreachable: the lease may still be alive; keep checking.
            Err(e) => tracing::warn!(error = %e, "cannot read the leader key"),
        }
    }
}
