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
//! sees it `Down`. The keep-alive runs on a thread of its own (with the etcd connection and
//! the watches), so a node whose actors keep its thread busy for longer than the TTL is not
//! declared `Down` for it. A graceful leave marks the node `leaving` and revokes the lease at once:
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
//!
//! [`NodeInfo`]: crate::discovery::NodeInfo
//! [`NameEntry`]: crate::discovery::NameEntry
//! [`LoadReport`]: crate::discovery::LoadReport

// Where things are:
//
// - `config`: `EtcdConfig`, `EtcdTls`, the client options;
// - `keys`: the key layout of the table above;
// - `record`: the value under `nodes/{node}`;
// - `session`: the lease of a registered node, its keep-alive, re-registration after its loss;
// - `follow`: following a prefix (read, watch, resync by diff) and its events;
// - `election`: the leader key;
// - `io`: the thread (a runtime of its own) where the etcd connection, the keep-alives and the
//   watches run, out of reach of the node's actors;
// - `discovery_impl`: the `Discovery` trait on top of all that.
mod config;
mod discovery_impl;
mod election;
mod entities;
mod follow;
mod io;
mod keys;
mod record;
mod session;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use etcd_client::Client;

pub use config::EtcdConfig;
#[cfg(feature = "etcd-tls")]
pub use config::EtcdTls;

use crate::error::Error;
use crate::id::NodeId;
use keys::Keys;
use session::Session;

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
    /// Where the connection's tasks, the keep-alives and the watches run.
    io: io::IoThread,
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

impl EtcdDiscovery {
    /// Connects to etcd. Fails with [`Error::Discovery`] when etcd cannot be reached.
    pub async fn connect(config: EtcdConfig) -> Result<Self, Error> {
        let options = config.connect_options();
        let io = io::IoThread::start().map_err(|e| {
            Error::Discovery(format!("cannot start the etcd keep-alive thread: {e}"))
        })?;
        // Connected from the I/O thread, so that the connection's own tasks run there.
        let connect = io.spawn(Client::connect(config.endpoints.clone(), Some(options)));
        let client = tokio::time::timeout(config.connect_timeout, connect)
            .await
            .map_err(|_| {
                Error::Discovery(format!(
                    "cannot reach etcd at {:?} within {:?}; is it running?",
                    config.endpoints, config.connect_timeout
                ))
            })?
            .map_err(|e| Error::Discovery(format!("the etcd connect task failed: {e}")))?
            .map_err(|e| etcd_error(&format!("connect to {:?}", config.endpoints), e))?;
        Ok(EtcdDiscovery {
            inner: Arc::new(Inner {
                config,
                client,
                io,
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

    /// The shared client (counting the request about to be sent), the key prefix and the
    /// request timeout: for the etcd state store, which shares this connection.
    pub(crate) fn client_for_store(&self) -> (Client, String, Duration) {
        (
            self.inner.client(),
            self.inner.config.prefix.clone(),
            self.inner.config.request_timeout,
        )
    }
}

impl Inner {
    /// The keys of `cluster`.
    fn keys(&self, cluster: &str) -> Keys {
        Keys::new(&self.config.prefix, cluster)
    }

    /// The client, counting the request about to be sent.
    fn client(&self) -> Client {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.client.clone()
    }

    /// Runs one request with the configured request timeout.
    async fn timed<T, E: std::fmt::Display>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, Error> {
        within(self.config.request_timeout, what, fut).await
    }

    /// The session of `node` in `cluster`, if this instance registered it.
    fn session(&self, cluster: &str, node: &NodeId) -> Option<Arc<Session>> {
        lock(&self.sessions)
            .get(&(cluster.to_owned(), node.clone()))
            .cloned()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn etcd_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Discovery(format!("etcd {what} failed: {e}"))
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
