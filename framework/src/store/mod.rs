//! Durable entity state: the [`StateStore`] trait, fenced by the activation's token, and its
//! in-memory implementation. The etcd store (feature `etcd`) and the PostgreSQL store
//! (feature `postgres`) implement the same trait.
//!
//! # Fencing
//!
//! Every activation of an entity holds a *fencing token*: the token of its shard's ownership,
//! larger for every new owner of the shard. The store keeps, next to each entity's state, the
//! largest token that has claimed it:
//!
//! - [`load`](StateStore::load) with token `t` *claims* the state: from then on any load or
//!   save with a token smaller than `t` is refused with [`Error::StaleActivation`];
//! - [`save`](StateStore::save) with token `t` succeeds only if no larger token has claimed
//!   the state, and is then durable (acknowledged only once the store has it).
//!
//! So a stale activation (its node was frozen past its lease, or cut off, while a new owner
//! took the shard over and loaded the state) can no longer write: its save is refused rather
//! than overwrite what the new activation acknowledged. Both the claim and the check are one
//! atomic step in each store (a compare-and-set in etcd, a conditional `UPDATE` in
//! PostgreSQL, a lock in memory).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use crate::error::Error;

#[cfg(feature = "etcd")]
mod etcd;
#[cfg(feature = "etcd")]
pub use etcd::{EtcdStateStore, MAX_STATE_BYTES as ETCD_MAX_STATE_BYTES};

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStateStore;

/// A boxed future returned by [`StateStore`] methods.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// Where entities keep their state between activations. See the [module docs](self) for the
/// fencing contract every implementation keeps.
///
/// `kind` is the entity type's name and `key` the entity's key; the pair names one state.
pub trait StateStore: Send + Sync + fmt::Debug + 'static {
    /// Claims the state of `kind`/`key` for an activation holding `token` and returns it
    /// (`None`: never saved). Fails with [`Error::StaleActivation`] if a larger token has
    /// claimed it already.
    fn load<'a>(
        &'a self,
        kind: &'a str,
        key: &'a [u8],
        token: u64,
    ) -> StoreFuture<'a, Option<Vec<u8>>>;

    /// Saves `state` for the activation holding `token`. Fails with
    /// [`Error::StaleActivation`] if a larger token has claimed the state; on `Ok` the state
    /// is durable as far as the store goes.
    fn save<'a>(
        &'a self,
        kind: &'a str,
        key: &'a [u8],
        token: u64,
        state: &'a [u8],
    ) -> StoreFuture<'a, ()>;
}

/// The printable form of an entity key: UTF-8 keys as they are, others in hex.
pub(crate) fn printable_key(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_owned(),
        _ => key.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// The error of a refused token.
pub(crate) fn stale(kind: &str, key: &[u8], token: u64) -> Error {
    Error::StaleActivation {
        kind: kind.to_owned(),
        key: printable_key(key),
        token,
    }
}

/// States kept in this process's memory, for demos and tests with the in-process discovery
/// (give it to the nodes of one process with `EntityConfig::store`). Everything is lost with
/// the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    states: Mutex<HashMap<(String, Vec<u8>), Slot>>,
}

#[derive(Debug, Default)]
struct Slot {
    token: u64,
    state: Option<Vec<u8>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with_slot<T>(&self, kind: &str, key: &[u8], f: impl FnOnce(&mut Slot) -> T) -> T {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let slot = states.entry((kind.to_owned(), key.to_vec())).or_default();
        f(slot)
    }
}

impl StateStore for MemoryStore {
    fn load<'a>(
        &'a self,
        kind: &'a str,
        key: &'a [u8],
        token: u64,
    ) -> StoreFuture<'a, Option<Vec<u8>>> {
        let result = self.with_slot(kind, key, |slot| {
            if slot.token > token {
                return Err(stale(kind, key, token));
            }
            slot.token = token;
            Ok(slot.state.clone())
        });
        Box::pin(async move { result })
    }

    fn save<'a>(
        &'a self,
        kind: &'a str,
        key: &'a [u8],
        token: u64,
        state: &'a [u8],
    ) -> StoreFuture<'a, ()> {
        let result = self.with_slot(kind, key, |slot| {
            if slot.token > token {
                return Err(stale(kind, key, token));
            }
            slot.token = token;
            slot.state = Some(state.to_vec());
            Ok(())
        });
        Box::pin(async move { result })
    }
}

/// The fencing contract, run against any [`StateStore`]: the memory store's unit tests here,
/// the etcd and PostgreSQL stores' integration tests with real servers.
#[doc(hidden)]
pub async fn check_fencing_contract(store: &dyn StateStore, kind: &str) {
    let key = b"contract-key".as_slice();
    assert_eq!(store.load(kind, key, 5).await.unwrap(), None);
    store.save(kind, key, 5, b"one").await.unwrap();
    assert_eq!(
        store.load(kind, key, 5).await.unwrap().as_deref(),
        Some(b"one".as_slice())
    );
    // A newer activation claims the state by loading it.
    assert_eq!(
        store.load(kind, key, 9).await.unwrap().as_deref(),
        Some(b"one".as_slice())
    );
    // The stale one can no longer write, nor read.
    let refused = store.save(kind, key, 5, b"stale").await.unwrap_err();
    assert!(
        matches!(refused, Error::StaleActivation { token: 5, .. }),
        "{refused}"
    );
    assert!(matches!(
        store.load(kind, key, 5).await.unwrap_err(),
        Error::StaleActivation { .. }
    ));
    store.save(kind, key, 9, b"two").await.unwrap();
    assert_eq!(
        store.load(kind, key, 9).await.unwrap().as_deref(),
        Some(b"two".as_slice())
    );
    // Keys and kinds are apart; binary keys work.
    let binary = [0u8, 255, 1, b'/'];
    assert_eq!(store.load(kind, &binary, 1).await.unwrap(), None);
    store.save(kind, &binary, 1, &[7; 3]).await.unwrap();
    assert_eq!(
        store.load(kind, &binary, 2).await.unwrap().as_deref(),
        Some([7u8; 3].as_slice())
    );
    let other_kind = format!("{kind}-other");
    assert_eq!(store.load(&other_kind, key, 1).await.unwrap(), None);
    // An empty state is a state.
    store.save(kind, key, 9, b"").await.unwrap();
    assert_eq!(
        store.load(kind, key, 10).await.unwrap().as_deref(),
        Some(b"".as_slice())
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_store_keeps_the_fencing_contract() {
        check_fencing_contract(&MemoryStore::new(), "carts").await;
    }

    #[test]
    fn keys_print_as_text_or_hex() {
        assert_eq!(printable_key(b"cart-42"), "cart-42");
        assert_eq!(printable_key(&[0, 255]), "00ff");
        assert_eq!(printable_key(b"a\nb"), "610a62");
    }
}
