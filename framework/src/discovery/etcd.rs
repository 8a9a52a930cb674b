//! Discovery on etcd: the cluster's source of truth for membership and names.
//!
//! # What a node keeps in etcd
//!
//! Under `{prefix}/{cluster}/` (prefix `/actormesh` by default), every value JSON so that
//! `etcdctl get --prefix /actormesh/` is readable:
//!
//! | key | value | bound to |
//! |---|---|---|
//! | `nodes/{node}` | the node's [`NodeInfo`] and its state (`up`, `leaving`) | the node's lease |
//! | `names/{name}` | the [`NameEntry`] of the actor holding the name | the holder's lease |
//! | `load/{node}` | the node's latest [`LoadReport`] | the node's lease |
//!
//! Everything a node writes is bound to its lease, kept alive every third of the TTL: a node
//! that dies (or freezes, or is cut off) loses everything within the TTL, and every other node
//! sees it `Down`. A graceful leave marks the node `leaving` and revokes the lease at once:
//! the others see it `Left`.
//!
//! # The view
//!
//! A node reads `nodes/` once, then watches it from the revision after that read, so it misses
//! and duplicates nothing. When the watch is cancelled or compacted, or etcd restarts, the node
//! reads again, reports the difference as events, and watches from the new revision.
//!
//! # etcd outages
//!
//! While etcd is unreachable a node keeps serving with its last view: links between live
//! nodes and asks over them keep working; nobody is declared down (no node can see a lease
//! expire) and no name can be registered or looked up (those calls fail with
//! [`Error::Discovery`]). When etcd returns, each node renews its lease, or registers anew
//! with a new lease (and re-registers its names) if the old one expired, and resyncs its view.
//! Nodes that died meanwhile are reported `Down` then.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{
    Discovery, DiscoveryFuture, GroupEvent, GroupMember, GroupSpec, GroupView, Leadership,
    LoadReport, Membership, MembershipEvent, NameEntry, NodeInfo, SpecEvent, SpecView,
};
use crate::error::Error;
use crate::id::NodeId;

/// How to reach etcd and how to use it.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    endpoints: Vec<String>,
    prefix: String,
    lease_ttl: Duration,
    credentials: Option<(String, String)>,
    #[cfg(feature = "etcd-tls")]
    tls: Option<EtcdTls>,
    connect_timeout: Duration,
    request_timeout: Duration,
}

/// TLS towards etcd (feature `etcd-tls`): the CA that signed etcd's certificate and, for
/// etcd's `--client-cert-auth`, this node's client certificate. Use `https://` endpoints.
#[cfg(feature = "etcd-tls")]
#[derive(Clone)]
pub struct EtcdTls {
    ca_pem: Vec<u8>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    domain: Option<String>,
}

#[cfg(feature = "etcd-tls")]
impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("EtcdTls")
            .field("client_identity", &self.identity.is_some())
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "etcd-tls")]
impl EtcdTls {
    /// Trust etcd certificates signed by the CA in `ca_pem` (PEM bytes).
    pub fn new(ca_pem: impl Into<Vec<u8>>) -> Self {
        EtcdTls {
            ca_pem: ca_pem.into(),
            identity: None,
            domain: None,
        }
    }

    /// Present this client certificate and key (PEM bytes) to etcd.
    pub fn client_identity(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// The name to verify etcd's certificate against, when it differs from the endpoint host.
    pub fn domain(mut self, name: impl Into<String>) -> Self {
        self.domain = Some(name.into());
        self
    }

    fn options(&self) -> etcd_client::TlsOptions {
        let mut tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
        }
        if let Some(domain) = &self.domain {
            tls = tls.domain_name(domain.clone());
        }
        tls
    }
}

impl EtcdConfig {
    /// etcd at `endpoints` (for example `http://127.0.0.1:2379`), with the defaults: key
    /// prefix `/actormesh`, a lease TTL of 3 s, connect and request timeouts of 2 s.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: "/actormesh".to_owned(),
            lease_ttl: Duration::from_secs(3),
            credentials: None,
            #[cfg(feature = "etcd-tls")]
            tls: None,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(2),
        }
    }

    /// The key prefix (default `/actormesh`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().trim_end_matches('/').to_owned();
        self
    }

    /// The lease TTL: a dead node is seen down within about this long (whole seconds, at
    /// least 2; etcd refuses shorter leases).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_secs(2));
        self
    }

    /// etcd user and password.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// TLS towards etcd (feature `etcd-tls`).
    #[cfg(feature = "etcd-tls")]
    pub fn tls(mut self, tls: EtcdTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// How long connecting to etcd may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one etcd request may take.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    fn ttl_secs(&self) -> i64 {
        self.lease_ttl.as_secs().max(2) as i64
    }
}

/// A node's entry under `nodes/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct NodeRecord {
    #[serde(flatten)]
    info: NodeInfo,
    state: NodeState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum NodeState {
    Up,
    Leaving,
}

/// Discovery backed by etcd. See the [module docs](self).
///
/// One instance can register several nodes (each with its own lease); cloning shares the
/// connection.
#[derive(Debug, Clone)]
pub struct EtcdDiscovery {
    inner: Arc<Inner>,
}

struct Inner {
    config: EtcdConfig,
    client: Client,
    requests: Arc<AtomicU64>,
    sessions: Mutex<HashMap<(String, NodeId), Arc<Session>>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdDiscovery")
            .field("endpoints", &self.config.endpoints)
            .field("prefix", &self.config.prefix)
            .field("requests", &self.requests)
            .finish_non_exhaustive()
    }
}

/// What one registered node owns.
#[derive(Debug)]
struct Session {
    record: Mutex<NodeRecord>,
    lease: AtomicI64,
    names: Mutex<HashMap<String, NameEntry>>,
    /// Group membership keys and values, put again after a lost lease.
    groups: Mutex<HashMap<String, Vec<u8>>>,
    load: Mutex<Option<LoadReport>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The last confirmed renewal, counted from when it was sent, plus the TTL.
    alive_until: Mutex<Option<std::time::Instant>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn etcd_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Discovery(format!("etcd {what} failed: {e}"))
}

impl EtcdDiscovery {
    /// Connects to etcd. Fails with [`Error::Discovery`] when etcd cannot be reached.
    pub async fn connect(config: EtcdConfig) -> Result<Self, Error> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_timeout(config.request_timeout)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        if let Some((user, password)) = &config.credentials {
            options = options.with_user(user.clone(), password.clone());
        }
        #[cfg(feature = "etcd-tls")]
        if let Some(tls) = &config.tls {
            options = options.with_tls(tls.options());
        }
        let connect = Client::connect(config.endpoints.clone(), Some(options));
        let client = tokio::time::timeout(config.connect_timeout, connect)
            .await
            .map_err(|_| {
                Error::Discovery(format!(
                    "cannot reach etcd at {:?} within {:?}; is it running?",
                    config.endpoints, config.connect_timeout
                ))
            })?
            .map_err(|e| etcd_error(&format!("connect to {:?}", config.endpoints), e))?;
        Ok(EtcdDiscovery {
            inner: Arc::new(Inner {
                config,
                client,
                requests: Arc::new(AtomicU64::new(0)),
                sessions: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// How many requests this instance has sent to etcd (keep-alives included).
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// The configuration.
    pub fn config(&self) -> &EtcdConfig {
        &self.inner.config
    }
}

impl Inner {
    fn cluster_prefix(&self, cluster: &str) -> String {
        format!("{}/{}/", self.config.prefix, cluster)
    }

    fn node_key(&self, cluster: &str, node: &NodeId) -> String {
        format!("{}nodes/{}", self.cluster_prefix(cluster), node)
    }

    fn name_key(&self, cluster: &str, name: &str) -> String {
        format!("{}names/{}", self.cluster_prefix(cluster), name)
    }

    fn specs_prefix(&self, cluster: &str) -> String {
        format!("{}specs/", self.cluster_prefix(cluster))
    }

    fn leader_key(&self, cluster: &str) -> String {
        format!("{}leader", self.cluster_prefix(cluster))
    }

    fn nodes_prefix(&self, cluster: &str) -> String {
        format!("{}nodes/", self.cluster_prefix(cluster))
    }

    fn group_prefix(&self, cluster: &str, group: &str) -> String {
        format!("{}groups/{}/members/", self.cluster_prefix(cluster), group)
    }

    fn group_key(&self, cluster: &str, group: &str, member: &GroupMember) -> String {
        format!(
            "{}{}/{}",
            self.group_prefix(cluster, group),
            member.node,
            member.actor.get()
        )
    }

    fn load_key(&self, cluster: &str, node: &NodeId) -> String {
        format!("{}load/{}", self.cluster_prefix(cluster), node)
    }

    fn client(&self) -> Client {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.client.clone()
    }

    async fn timed<T, E: std::fmt::Display>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, Error> {
        within(self.config.request_timeout, what, fut).await
    }

    fn session(&self, cluster: &str, node: &NodeId) -> Option<Arc<Session>> {
        lock(&self.sessions)
            .get(&(cluster.to_owned(), node.clone()))
            .cloned()
    }

    /// Puts the node record under a fresh lease if nobody holds the key; returns the lease.
    async fn register(&self, record: &NodeRecord) -> Result<i64, Error> {
        let cluster = &record.info.cluster;
        let key = self.node_key(cluster, &record.info.id);
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

    /// Reads every value under `prefix`: the revision of the read and the values by key.
    /// Malformed values are logged and skipped.
    async fn read_prefix<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<(i64, HashMap<Vec<u8>, T>), Error> {
        let response = self
            .timed(
                "read",
                self.client()
                    .get(prefix.to_owned(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let revision = response.header().map_or(0, |h| h.revision());
        let mut values = HashMap::new();
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

    /// Puts `value` at `key` under the session's lease.
    async fn put_leased(
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
    async fn claim_name(
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

impl Discovery for EtcdDiscovery {
    fn join<'a>(&'a self, me: &'a NodeInfo) -> super::DiscoveryFuture<'a, Membership> {
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
            let prefix = inner.nodes_prefix(&me.cluster);
            let (revision, nodes) = inner.read_prefix::<NodeRecord>(&prefix).await?;
            let members: Vec<NodeInfo> = nodes.values().map(|r| r.info.clone()).collect();
            let session = Arc::new(Session {
                record: Mutex::new(record),
                lease: AtomicI64::new(lease),
                names: Mutex::new(HashMap::new()),
                groups: Mutex::new(HashMap::new()),
                load: Mutex::new(None),
                tasks: Mutex::new(Vec::new()),
                alive_until: Mutex::new(Some(granted_at + inner.config.lease_ttl)),
            });
            let (tx, rx) = mpsc::unbounded_channel();
            let keepalive =
                tokio::spawn(keep_alive(Arc::downgrade(inner), Arc::downgrade(&session)));
            let watch = tokio::spawn(follow_prefix(
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
                .put_leased(&session, inner.node_key(cluster, node), value)
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
                .claim_name(lease, inner.name_key(cluster, name), entry, name)
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
            let key = inner.name_key(cluster, name);
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
                    inner.client().get(inner.name_key(cluster, name), None),
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
                .put_leased(&session, inner.load_key(cluster, node), value)
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
            let key = inner.group_key(cluster, group, member);
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
            let key = inner.group_key(cluster, group, member);
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
            let prefix = inner.group_prefix(cluster, group);
            let (revision, known) = inner.read_prefix::<GroupMember>(&prefix).await?;
            let (tx, rx) = mpsc::unbounded_channel();
            let members = known.values().cloned().collect();
            tokio::spawn(follow_prefix(
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
        Box::pin(async move {
            let inner = &self.inner;
            let key = inner.leader_key(cluster);
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
                    tokio::spawn(watch_leadership(
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
        })
    }

    fn leader<'a>(&'a self, cluster: &'a str) -> DiscoveryFuture<'a, Option<(NodeId, u64)>> {
        Box::pin(async move {
            let inner = &self.inner;
            let response = inner
                .timed(
                    "read leader",
                    inner.client().get(inner.leader_key(cluster), None),
                )
                .await?;
            match response.kvs().first() {
                None => Ok(None),
                Some(kv) => serde_json::from_slice::<NodeId>(kv.value())
                    .map(|node| Some((node, kv.create_revision() as u64)))
                    .map_err(|e| Error::Discovery(format!("malformed leader entry: {e}"))),
            }
        })
    }

    fn put_spec<'a>(&'a self, cluster: &'a str, spec: &'a GroupSpec) -> DiscoveryFuture<'a, ()> {
        Box::pin(async move {
            if spec.group.contains('/') {
                return Err(Error::Discovery(
                    "group names used with etcd must not contain '/'".to_owned(),
                ));
            }
            let inner = &self.inner;
            let key = format!("{}{}", inner.specs_prefix(cluster), spec.group);
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
            let prefix = inner.specs_prefix(cluster);
            let (revision, known) = inner.read_prefix::<GroupSpec>(&prefix).await?;
            let (tx, rx) = mpsc::unbounded_channel();
            let specs = known.values().cloned().collect();
            tokio::spawn(follow_prefix(
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
            .and_then(|s| *lock(&s.alive_until))
    }

    fn loads<'a>(
        &'a self,
        cluster: &'a str,
    ) -> DiscoveryFuture<'a, std::collections::BTreeMap<NodeId, LoadReport>> {
        Box::pin(async move {
            let inner = &self.inner;
            let prefix = format!("{}load/", inner.cluster_prefix(cluster));
            let (_, loads) = inner.read_prefix::<LoadReport>(&prefix).await?;
            Ok(loads
                .into_iter()
                .filter_map(|(key, load)| {
                    let id = key.strip_prefix(prefix.as_bytes())?;
                    Some((NodeId::new(String::from_utf8_lossy(id)), load))
                })
                .collect())
        })
    }
}

/// Keeps the session's lease alive; after an outage that outlived the lease, registers the
/// node and its names again under a new lease. Ends when the discovery is dropped: a
/// process that dies stops renewing, and its lease expires.
async fn keep_alive(weak: Weak<Inner>, session: Weak<Session>) {
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
                let sent = std::time::Instant::now();
                within(timeout, "keep-alive", keeper.keep_alive()).await?;
                match within(timeout, "keep-alive", stream.message()).await? {
                    Some(r) if r.ttl() > 0 => {
                        if let Some(s) = session.upgrade() {
                            *lock(&s.alive_until) =
                                Some(sent + Duration::from_secs(r.ttl() as u64));
                        }
                    }
                    _ => return Ok::<_, Error>(()), // the lease is gone
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
                tracing::warn!(%node, "etcd lease expired; registering again");
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

/// Runs `fut` with a timeout, turning both failures into [`Error::Discovery`].
async fn within<T, E: std::fmt::Display>(
    timeout: Duration,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, Error> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => result.map_err(|e| etcd_error(what, e)),
        Err(_) => Err(Error::Discovery(format!(
            "etcd {what} timed out after {timeout:?}; is etcd reachable?"
        ))),
    }
}

async fn reregister(inner: &Inner, session: &Session) -> Result<(), Error> {
    let record = lock(&session.record).clone();
    let granted_at = std::time::Instant::now();
    let lease = inner.register(&record).await?;
    session.lease.store(lease, Ordering::Release);
    *lock(&session.alive_until) = Some(granted_at + inner.config.lease_ttl);
    let cluster = record.info.cluster.clone();
    let names: Vec<_> = lock(&session.names)
        .iter()
        .map(|(n, e)| (n.clone(), e.clone()))
        .collect();
    for (name, entry) in names {
        if let Err(e) = inner
            .claim_name(lease, inner.name_key(&cluster, &name), &entry, &name)
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
            .put_leased(session, inner.load_key(&cluster, &record.info.id), value)
            .await?;
    }
    Ok(())
}

/// A change under a followed prefix.
enum Change<T> {
    /// A key was written: its previous value (if it had one) and the new one.
    Put { old: Option<T>, new: T },
    /// A key was deleted: its last value.
    Delete { old: T },
}

/// The membership event of a change under `nodes/`: a node that writes `leaving` before its
/// key goes has left; one whose key just goes (lease expired) is down.
fn membership_event(change: Change<NodeRecord>) -> Option<MembershipEvent> {
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
fn spec_event(change: Change<GroupSpec>) -> Option<SpecEvent> {
    match change {
        Change::Put { old, new } => (old.as_ref() != Some(&new)).then_some(SpecEvent::Put(new)),
        Change::Delete { old } => Some(SpecEvent::Removed(old.group)),
    }
}

/// The group event of a change under `groups/{group}/members/`.
fn group_event(change: Change<GroupMember>) -> Option<GroupEvent> {
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
async fn follow_prefix<T, E>(
    weak: Weak<Inner>,
    prefix: String,
    mut revision: i64,
    mut known: HashMap<Vec<u8>, T>,
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
                for (key, new) in &fresh {
                    let old = known.get(key).cloned();
                    if old.as_ref() != Some(new) {
                        send(
                            rev,
                            Change::Put {
                                old,
                                new: new.clone(),
                            },
                        );
                    }
                }
                for (key, old) in &known {
                    if !fresh.contains_key(key) {
                        send(rev, Change::Delete { old: old.clone() });
                    }
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
