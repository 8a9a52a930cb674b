//! The etcd [`StateStore`]: one key per entity, its value the claiming token and the state,
//! every claim and save one compare-and-set transaction on the key's revision.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use super::{stale, StateStore, StoreFuture};
use crate::discovery::EtcdDiscovery;
use crate::error::Error;

/// The largest state the etcd store accepts: etcd refuses requests over 1.5 MiB by default
/// (`--max-request-bytes`), and a store of many entities should stay far below that.
pub const MAX_STATE_BYTES: usize = 1 << 20;

/// How many times a claim or save retries when another writer changed the key between its
/// read and its transaction.
const ATTEMPTS: u32 = 8;

/// Entity state in etcd, on the connection of an [`EtcdDiscovery`], under
/// `{prefix}/{cluster}/entity-state/{kind}/{key in hex}`.
///
/// Each value is the token that last claimed the state (8 bytes), whether a state was saved
/// (1 byte) and the state. A state larger than [`MAX_STATE_BYTES`] (1 MiB) is refused with
/// [`Error::Store`]: etcd keeps every revision of every key until compaction, so it suits
/// small states (counters, carts, sessions), not documents.
#[derive(Clone)]
pub struct EtcdStateStore {
    discovery: EtcdDiscovery,
    root: String,
}

impl std::fmt::Debug for EtcdStateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStateStore")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

struct Current {
    token: u64,
    state: Option<Vec<u8>>,
    /// The key's modification revision; 0 when the key does not exist.
    revision: i64,
}

impl EtcdStateStore {
    /// A store for the entities of `cluster`, on `discovery`'s connection.
    pub fn new(discovery: &EtcdDiscovery, cluster: &str) -> Self {
        let (_, prefix, _) = discovery.client_for_store();
        EtcdStateStore {
            discovery: discovery.clone(),
            root: format!("{prefix}/{cluster}/entity-state/"),
        }
    }

    fn key(&self, kind: &str, key: &[u8]) -> String {
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}{kind}/{hex}", self.root)
    }

    async fn read(&self, key: &str) -> Result<Current, Error> {
        let (mut client, _, timeout) = self.discovery.client_for_store();
        let response = timed(timeout, "state read", client.get(key, None)).await?;
        let Some(kv) = response.kvs().first() else {
            return Ok(Current {
                token: 0,
                state: None,
                revision: 0,
            });
        };
        let value = kv.value();
        if value.len() < 9 {
            return Err(Error::Store(format!(
                "malformed state value under {key} ({} bytes)",
                value.len()
            )));
        }
        let mut token = [0u8; 8];
        token.copy_from_slice(&value[..8]);
        Ok(Current {
            token: u64::from_be_bytes(token),
            state: (value[8] == 1).then(|| value[9..].to_vec()),
            revision: kv.mod_revision(),
        })
    }

    /// Writes `token` and `state` if the key is still at `revision`; `false` if it moved.
    async fn write(
        &self,
        key: &str,
        revision: i64,
        token: u64,
        state: Option<&[u8]>,
    ) -> Result<bool, Error> {
        let (mut client, _, timeout) = self.discovery.client_for_store();
        let mut value = Vec::with_capacity(9 + state.map_or(0, <[u8]>::len));
        value.extend_from_slice(&token.to_be_bytes());
        value.push(u8::from(state.is_some()));
        value.extend_from_slice(state.unwrap_or_default());
        let compare = if revision == 0 {
            Compare::create_revision(key, CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(key, CompareOp::Equal, revision)
        };
        let txn = Txn::new()
            .when([compare])
            .and_then([TxnOp::put(key, value, None)]);
        let response = timed(timeout, "state write", client.txn(txn)).await?;
        Ok(response.succeeded())
    }
}

impl StateStore for EtcdStateStore {
    fn load<'a>(
        &'a self,
        kind: &'a str,
        key: &'a [u8],
        token: u64,
    ) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let path = self.key(kind, key);
            for _ in 0..ATTEMPTS {
                let current = self.read(&path).await?;
                if current.token > token {
                    return Err(stale(kind, key, token));
                }
                if current.token == token && current.revision != 0 {
                    return Ok(current.state);
                }
                // Claim: write our token, keeping the state.
                if self
                    .write(&path, current.revision, token, current.state.as_deref())
                    .await?
                {
                    return Ok(current.state);
                }
            }
            Err(Error::Store(format!(
                "state of {kind} changed under every one of {ATTEMPTS} claims; too much contention"
            )))
        })
    }

    fn save<'a>(
        &'a self,
        kind: &'a str,
        key: &'a [u8],
        token: u64,
        state: &'a [u8],
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if state.len() > MAX_STATE_BYTES {
                return Err(Error::Store(format!(
                    "a state of {} bytes exceeds the etcd store's limit of {MAX_STATE_BYTES} bytes; use the PostgreSQL store for large states",
                    state.len()
                )));
            }
            let path = self.key(kind, key);
            for _ in 0..ATTEMPTS {
                let current = self.read(&path).await?;
                if current.token > token {
                    return Err(stale(kind, key, token));
                }
                if self
                    .write(&path, current.revision, token, Some(state))
                    .await?
                {
                    return Ok(());
                }
            }
            Err(Error::Store(format!(
                "state of {kind} changed under every one of {ATTEMPTS} saves; too much contention"
            )))
        })
    }
}

async fn timed<T>(
    timeout: Duration,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::Store(format!("etcd {what} failed: {e}"))),
        Err(_) => Err(Error::Store(format!(
            "etcd {what} did not answer within {timeout:?}"
        ))),
    }
}
