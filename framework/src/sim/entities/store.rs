//! The entity state store: the real [`MemoryStore`], its fencing rule and all, called
//! synchronously (its futures are ready at once), with a record of every save it applied
//! for the checks.
//!
//! A state is a counter (8 bytes, big-endian): a handler loads it (claiming it with its
//! activation's token) once per activation, adds one per message and saves.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use crate::store::{MemoryStore, StateStore};

use super::config::KIND;

/// A request to the store.
#[derive(Debug, Clone)]
pub(crate) enum StoreOp {
    /// Claim and read `key`'s state with `token`.
    Load {
        /// The entity.
        key: String,
        /// The activation's token.
        token: u64,
    },
    /// Save `value` as `key`'s state with `token`.
    Save {
        /// The entity.
        key: String,
        /// The activation's token.
        token: u64,
        /// The counter.
        value: u64,
    },
}

/// The store's answer.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StoreReply {
    /// The counter (0: never saved), or refused (a larger token claimed the state).
    Loaded(Result<u64, ()>),
    /// Saved, or refused.
    Saved(Result<(), ()>),
}

/// A save the store applied.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Applied {
    /// The counter before.
    pub(crate) before: u64,
    /// The counter saved.
    pub(crate) value: u64,
}

/// See the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct Store {
    inner: MemoryStore,
    /// The last value applied per key (the store's state, as the checks follow it).
    applied: BTreeMap<String, u64>,
}

/// Polls a future that is ready at once (the memory store's are).
fn ready<T>(future: impl Future<Output = T>) -> T {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(value) => value,
        Poll::Pending => unreachable!("the memory store answers at once"),
    }
}

fn decode(state: Option<Vec<u8>>) -> u64 {
    state
        .and_then(|s| <[u8; 8]>::try_from(s.as_slice()).ok())
        .map_or(0, u64::from_be_bytes)
}

impl Store {
    /// Carries out `op`; the answer, and the save applied if any.
    pub(crate) fn serve(&mut self, op: &StoreOp) -> (StoreReply, Option<Applied>) {
        match op {
            StoreOp::Load { key, token } => {
                let loaded = ready(self.inner.load(KIND, key.as_bytes(), *token));
                (StoreReply::Loaded(loaded.map(decode).map_err(|_| ())), None)
            }
            StoreOp::Save { key, token, value } => {
                let bytes = value.to_be_bytes();
                let saved = ready(self.inner.save(KIND, key.as_bytes(), *token, &bytes));
                if saved.is_err() {
                    return (StoreReply::Saved(Err(())), None);
                }
                let before = self.applied.insert(key.clone(), *value).unwrap_or(0);
                let applied = Applied {
                    before,
                    value: *value,
                };
                (StoreReply::Saved(Ok(())), Some(applied))
            }
        }
    }

    /// The keys ever saved.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &String> {
        self.applied.keys()
    }

    /// `key`'s state as the store has it, read with a token larger than any (at the end of
    /// a run).
    pub(crate) fn final_value(&self, key: &str) -> Option<u64> {
        ready(self.inner.load(KIND, key.as_bytes(), u64::MAX))
            .ok()
            .map(decode)
    }

    /// The last value applied for `key`.
    pub(crate) fn last_applied(&self, key: &str) -> u64 {
        self.applied.get(key).copied().unwrap_or(0)
    }
}
