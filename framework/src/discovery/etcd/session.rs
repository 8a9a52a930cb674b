//! What a registered node owns in etcd, all bound to its lease: its record, its names, its
//! group memberships and its load report. The lease is kept alive every third of the TTL;
//! after an outage that outlived it, the node is registered again under a new lease.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use tokio::task::JoinHandle;

use super::record::NodeRecord;
use super::{lock, within, Inner};
use crate::discovery::{LeaseCheck, LeaseClock, LoadReport, NameEntry};
use crate::error::Error;

/// What one registered node owns.
#[derive(Debug)]
pub(super) struct Session {
    pub(super) record: Mutex<NodeRecord>,
    pub(super) lease: AtomicI64,
    pub(super) names: Mutex<HashMap<String, NameEntry>>,
    /// Group membership keys and values, put again after a lost lease.
    pub(super) groups: Mutex<HashMap<String, Vec<u8>>>,
    pub(super) load: Mutex<Option<LoadReport>>,
    pub(super) tasks: Mutex<Vec<JoinHandle<()>>>,
    /// What the node knows of its lease: which one, until when it is certainly alive (the
    /// last confirmed renewal, counted from when it was sent, plus the TTL), whether it is
    /// known lost. The node fences itself with it.
    pub(super) clock: Arc<LeaseClock>,
}

impl Session {
    /// A node registered under `lease`, granted at `granted_at` for `ttl`, owning nothing
    /// else yet.
    pub(super) fn new(record: NodeRecord, lease: i64, granted_at: Instant, ttl: Duration) -> Self {
        Session {
            record: Mutex::new(record),
            lease: AtomicI64::new(lease),
            names: Mutex::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
            load: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
            clock: Arc::new(LeaseClock::new(epoch(lease), granted_at, ttl)),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

impl Inner {
    /// Puts the node record under a fresh lease if nobody holds the key; returns the lease.
    pub(super) async fn register(&self, record: &NodeRecord) -> Result<i64, Error> {
        let key = self.keys(&record.info.cluster).node(&record.info.id);
        let grant = self
            .timed(
                "lease grant",
                self.client().lease_grant(self.config.ttl_secs(), None),
            )
            .await?;
        let lease = grant.id();
        let value = serde_json::to_vec(record).map_err(|e| Error::Discovery(e.to_string()))?;
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let response = self.timed("register", self.client().txn(txn)).await?;
        if !response.succeeded() {
            let _ = self
                .timed("lease revoke", self.client().lease_revoke(lease))
                .await;
            return Err(Error::NodeIdTaken(record.info.id.clone()));
        }
        Ok(lease)
    }

    /// Puts `value` at `key` under the session's lease.
    pub(super) async fn put_leased(
        &self,
        session: &Session,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), Error> {
        let lease = session.lease.load(Ordering::Acquire);
        self.timed(
            "put",
            self.client()
                .put(key, value, Some(PutOptions::new().with_lease(lease))),
        )
        .await
        .map(|_| ())
    }

    /// Compare-and-set registration of a name under the holder's lease.
    pub(super) async fn claim_name(
        &self,
        lease: i64,
        key: String,
        entry: &NameEntry,
        name: &str,
    ) -> Result<(), Error> {
        let value = serde_json::to_vec(entry).map_err(|e| Error::Discovery(e.to_string()))?;
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key, None)]);
        let response = self.timed("register name", self.client().txn(txn)).await?;
        if response.succeeded() {
            return Ok(());
        }
        for op in response.op_responses() {
            if let TxnOpResponse::Get(get) = op {
                if let Some(kv) = get.kvs().first() {
                    let held: NameEntry = serde_json::from_slice(kv.value())
                        .map_err(|e| Error::Discovery(format!("malformed name entry: {e}")))?;
                    if &held == entry {
                        return Ok(());
                    }
                    return Err(Error::NameTaken {
                        name: name.to_owned(),
                        node: held.node,
                        actor: held.actor,
                    });
                }
            }
        }
        // Deleted between the compare and the get: try once more next time.
        Err(Error::Discovery(format!(
            "name `{name}` changed while registering; retry"
        )))
    }
}

/// Keeps the session's lease alive; after an outage that outlived the lease, registers the
/// node and its names again under a new lease. Ends when the discovery is dropped: a
/// process that dies stops renewing, and its lease expires.
pub(super) async fn keep_alive(weak: Weak<Inner>, session: Weak<Session>) {
    let Some((period, timeout, requests)) = weak.upgrade().map(|i| {
        (
            i.config.lease_ttl / 3,
            i.config.request_timeout,
            i.requests.clone(),
        )
    }) else {
        return;
    };
    let mut failures = 0u32;
    loop {
        let Some(lease) = session.upgrade().map(|s| s.lease.load(Ordering::Acquire)) else {
            return;
        };
        let alive = async {
            let (mut keeper, mut stream) = {
                let inner = weak.upgrade().ok_or(Error::Shutdown)?;
                inner
                    .timed("keep-alive", inner.client().lease_keep_alive(lease))
                    .await?
            };
            loop {
                if weak.strong_count() == 0 {
                    return Err(Error::Shutdown);
                }
                requests.fetch_add(1, Ordering::Relaxed);
                let sent = Instant::now();
                within(timeout, "keep-alive", keeper.keep_alive()).await?;
                match within(timeout, "keep-alive", stream.message()).await? {
                    Some(r) if r.ttl() > 0 => {
                        if let Some(s) = session.upgrade() {
                            s.clock
                                .renewed(epoch(lease), sent + Duration::from_secs(r.ttl() as u64));
                        }
                    }
                    _ => {
                        // The lease is gone: fence before registering again.
                        if let Some(s) = session.upgrade() {
                            s.clock.lost(epoch(lease));
                        }
                        return Ok::<_, Error>(());
                    }
                }
                tokio::time::sleep(period).await;
            }
        };
        match alive.await {
            Err(Error::Shutdown) => return,
            Ok(()) => {
                let (Some(inner), Some(s)) = (weak.upgrade(), session.upgrade()) else {
                    return;
                };
                let node = lock(&s.record).info.id.clone();
                tracing::warn!(%node, "etcd lease expired (the cluster declared this node down); requests received under it are refused, registering again as a new incarnation");
                match reregister(&inner, &s).await {
                    Ok(()) => failures = 0,
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(%node, error = %e, "could not register again");
                    }
                }
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "etcd keep-alive failed; retrying");
            }
        }
        let backoff = (Duration::from_millis(100) * 2u32.pow(failures.min(5)))
            .min(period.max(Duration::from_millis(200)));
        tokio::time::sleep(backoff).await;
    }
}

/// Registers the session's node again under a new lease, then its names (a name someone
/// else took meanwhile is dropped), its group memberships and its last load report.
async fn reregister(inner: &Inner, session: &Session) -> Result<(), Error> {
    let record = lock(&session.record).clone();
    let granted_at = Instant::now();
    let lease = inner.register(&record).await?;
    session.lease.store(lease, Ordering::Release);
    session
        .clock
        .granted(epoch(lease), granted_at + inner.config.lease_ttl);
    let keys = inner.keys(&record.info.cluster);
    let names: Vec<_> = lock(&session.names)
        .iter()
        .map(|(n, e)| (n.clone(), e.clone()))
        .collect();
    for (name, entry) in names {
        if let Err(e) = inner
            .claim_name(lease, keys.name(&name), &entry, &name)
            .await
        {
            tracing::warn!(%name, error = %e, "name lost while this node was cut off from etcd");
            lock(&session.names).remove(&name);
        }
    }
    let groups: Vec<_> = lock(&session.groups)
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, value) in groups {
        inner.put_leased(session, key, value).await?;
    }
    let load = lock(&session.load).clone();
    if let Some(load) = load {
        let value = serde_json::to_vec(&load).map_err(|e| Error::Discovery(e.to_string()))?;
        inner
            .put_leased(session, keys.load(&record.info.id), value)
            .await?;
    }
    Ok(())
}

/// A lease id as the epoch of a [`LeaseClock`].
fn epoch(lease: i64) -> u64 {
    lease as u64
}

/// Asks etcd about the session's lease, now, and updates its clock; retried until the
/// request timeout has passed before the answer is [`LeaseCheck::Unreachable`].
pub(super) async fn confirm(inner: &Inner, session: &Session) -> LeaseCheck {
    let lease = session.lease.load(Ordering::Acquire);
    let until = Instant::now() + inner.config.request_timeout;
    let mut pause = Duration::from_millis(20);
    loop {
        let sent = Instant::now();
        let left = until.saturating_duration_since(sent);
        match within(
            left.max(Duration::from_millis(1)),
            "lease time-to-live",
            inner.client().lease_time_to_live(lease, None),
        )
        .await
        {
            Ok(r) if r.ttl() > 0 => {
                session
                    .clock
                    .renewed(epoch(lease), sent + Duration::from_secs(r.ttl() as u64));
                return LeaseCheck::Alive;
            }
            Ok(_) => {
                session.clock.lost(epoch(lease));
                return LeaseCheck::Lost;
            }
            Err(e) => {
                if Instant::now() + pause >= until {
                    tracing::debug!(error = %e, "cannot confirm the lease with etcd");
                    return LeaseCheck::Unreachable;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
        }
    }
}
