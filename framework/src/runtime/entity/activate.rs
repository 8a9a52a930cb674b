//! An activation's life: its state loaded (claiming it with the shard's token), the actor
//! started, passivated when idle, and what its stop releases (queued messages go on, a drain
//! may end).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::{Activation, KindHost, KindState, Pending};
use crate::core::shard::host::Local;
use crate::id::ActorId;
use crate::runtime::{lock, read, NodeShared};

impl KindHost {
    /// Records a loading activation of `key` in `shard` (under the lock).
    pub(super) fn begin_activation(
        &self,
        st: &mut KindState,
        key: &[u8],
        shard: u32,
        token: u64,
        queue: VecDeque<Pending>,
    ) {
        st.shards[shard as usize].active += 1;
        st.keys.insert(
            key.to_vec(),
            Activation::Loading {
                shard,
                token,
                queue,
            },
        );
    }

    /// Loads the state of `key` (if the type has a store) and starts the activation.
    pub(super) fn load_and_start(
        self: &Arc<Self>,
        node: &Arc<NodeShared>,
        key: Vec<u8>,
        token: u64,
    ) {
        let Some(store) = self.config.store.clone() else {
            self.finish_activation(node, key, token, Ok(None));
            return;
        };
        let host = self.clone();
        let weak = Arc::downgrade(node);
        let kind = self.kind;
        node.arbiter.spawn(async move {
            let loaded = store.load(kind, &key, token).await;
            if let Some(node) = weak.upgrade() {
                host.finish_activation(&node, key, token, loaded);
            }
        });
    }

    /// Starts the activation once its state is loaded, if its shard is still held under the
    /// same token; otherwise (or if the load failed) drops it and sends its queue on.
    fn finish_activation(
        self: &Arc<Self>,
        node: &Arc<NodeShared>,
        key: Vec<u8>,
        token: u64,
        loaded: Result<Option<Vec<u8>>, crate::error::Error>,
    ) {
        let still_owned = {
            let st = lock(&self.state);
            match st.keys.get(&key) {
                Some(Activation::Loading {
                    shard, token: t, ..
                }) if *t == token => {
                    matches!(st.shards[*shard as usize].local, Local::Owned { token: held, .. } if held == token)
                }
                _ => false,
            }
        };
        let load_failed = loaded.is_err();
        let started = match (&loaded, still_owned, &self.activator) {
            (Ok(_), true, Some(activator)) => {
                let state = loaded.ok().flatten();
                activator.start(node, &key, token, state)
            }
            _ => {
                if let Err(e) = &loaded {
                    crate::ratelog::warn_limited!(node = %node.info.id, kind = self.kind, error = %e, "an entity's state could not be loaded; its messages wait for the next try");
                }
                None
            }
        };
        let mut st = lock(&self.state);
        let Some(Activation::Loading { shard, queue, .. }) = st.keys.remove(&key) else {
            return;
        };
        let queue = match started {
            Some((id, handle)) => {
                st.by_id.insert(id, key.clone());
                st.keys.insert(
                    key,
                    Activation::Active {
                        shard,
                        id,
                        handle,
                        last_used: Instant::now(),
                    },
                );
                queue
            }
            None => {
                let slot = &mut st.shards[shard as usize];
                slot.active = slot.active.saturating_sub(1);
                if load_failed && still_owned {
                    // Kept waiting in the shard's queue; the type's task retries.
                    let slot = &mut st.shards[shard as usize];
                    slot.queue.extend(queue);
                    VecDeque::new()
                } else {
                    queue
                }
            }
        };
        drop(st);
        self.resubmit(node, queue);
        self.changed.notify_waiters();
        self.kick.notify_one();
    }

    /// Stops the activations of `shard` after their queued messages (new messages wait).
    pub(super) fn stop_shard(&self, st: &mut KindState, shard: u32) {
        let keys: Vec<Vec<u8>> = st
            .keys
            .iter()
            .filter(|(_, a)| matches!(a, Activation::Active { shard: s, .. } if *s == shard))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            stop_activation(st, &key);
        }
    }

    /// Passivates the activations idle for longer than the type's idle time.
    pub(super) fn passivate_idle(&self) {
        let idle = self.config.idle;
        let now = Instant::now();
        let mut st = lock(&self.state);
        let keys: Vec<Vec<u8>> = st
            .keys
            .iter()
            .filter(|(_, a)| {
                matches!(a, Activation::Active { last_used, .. } if now.duration_since(*last_used) >= idle)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            stop_activation(&mut st, &key);
        }
    }

    /// Activation `id` stopped: forget it, and send the messages that waited for it on.
    /// `false` when it is not an activation of this type.
    pub(crate) fn on_stopped(self: &Arc<Self>, node: &Arc<NodeShared>, id: ActorId) -> bool {
        let mut st = lock(&self.state);
        let Some(key) = st.by_id.remove(&id) else {
            return false;
        };
        let queue = match st.keys.remove(&key) {
            Some(Activation::Active { shard, .. }) => {
                let slot = &mut st.shards[shard as usize];
                slot.active = slot.active.saturating_sub(1);
                VecDeque::new()
            }
            Some(Activation::Stopping { shard, queue, .. }) => {
                let slot = &mut st.shards[shard as usize];
                slot.active = slot.active.saturating_sub(1);
                queue
            }
            Some(other) => {
                // A newer activation of the key (this id was an older one).
                st.keys.insert(key, other);
                VecDeque::new()
            }
            None => VecDeque::new(),
        };
        drop(st);
        self.resubmit(node, queue);
        self.changed.notify_waiters();
        self.kick.notify_one();
        true
    }
}

/// Marks `key`'s activation stopping and asks it to stop after its queued messages.
fn stop_activation(st: &mut KindState, key: &[u8]) {
    if let Some(Activation::Active {
        shard, id, handle, ..
    }) = st.keys.remove(key)
    {
        handle.stop();
        st.by_id.insert(id, key.to_vec());
        st.keys.insert(
            key.to_vec(),
            Activation::Stopping {
                shard,
                queue: VecDeque::new(),
            },
        );
    }
}

impl NodeShared {
    /// Tells the entity types that actor `id` stopped (it may be an activation).
    pub(crate) fn entity_stopped(self: &Arc<Self>, id: ActorId) {
        let kinds: Vec<Arc<KindHost>> = read(&self.entities).values().cloned().collect();
        for host in kinds {
            if host.on_stopped(self, id) {
                return;
            }
        }
    }
}
