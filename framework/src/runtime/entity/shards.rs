//! The task of one entity type on a node: follows the type's assignment and owners in the
//! store and, for a hosted type, carries out `core::shard::host::decide`'s steps for every
//! shard (take, drain, release, lose), passivates idle activations and sends held messages
//! on when they can go.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::{KindHost, Pending, Slot};
use crate::core::shard::host::{decide, Local, Step};
use crate::core::shard::{EntityEvent, ShardOwner};
use crate::discovery::EntityView;
use crate::runtime::{lock, NodeShared};

/// How often the task looks at its shards when nothing happens (the lease guard, retries).
const TICK: Duration = Duration::from_millis(100);
/// The pause before a failed store call is tried again.
const RETRY: Duration = Duration::from_millis(250);

/// Starts the task of `host` once.
pub(crate) fn start(node: &Arc<NodeShared>, host: &Arc<KindHost>) {
    if host.started.swap(true, Ordering::AcqRel) {
        return;
    }
    node.arbiter.spawn(run(Arc::downgrade(node), host.clone()));
}

async fn run(weak: Weak<NodeShared>, host: Arc<KindHost>) {
    let Some(mut view) = watch(&weak, &host).await else {
        return;
    };
    let Some(node) = weak.upgrade() else { return };
    let mut shutdown = node.shutdown_signal();
    apply_view(&node, &host, &mut view);
    if host.hosts() {
        register(&node, &host).await;
    }
    drop(node);
    let mut last_sweep = Instant::now();
    let sweep_every = (host.config.idle / 4).max(TICK);
    loop {
        let Some(node) = weak.upgrade() else { return };
        if host.hosts() {
            step(&node, &host);
            if last_sweep.elapsed() >= sweep_every {
                host.passivate_idle();
                last_sweep = Instant::now();
            }
        }
        release_held(&node, &host);
        let kicked = host.kick.notified();
        tokio::select! {
            event = view.events.recv() => match event {
                Some((_, event)) => apply(&node, &host, event),
                None => return,
            },
            _ = kicked => {}
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Follows the type in the store, retrying until it answers or the node goes.
async fn watch(weak: &Weak<NodeShared>, host: &KindHost) -> Option<EntityView> {
    loop {
        let node = weak.upgrade()?;
        if node.is_stopping() {
            return None;
        }
        match node
            .discovery
            .watch_entities(&node.info.cluster, host.kind)
            .await
        {
            Ok(view) => return Some(view),
            Err(e) => {
                tracing::warn!(node = %node.info.id, kind = host.kind, error = %e, "cannot follow an entity type in discovery; retrying");
            }
        }
        drop(node);
        tokio::time::sleep(RETRY).await;
    }
}

/// Registers this node as a host of the type, retrying until discovery answers.
async fn register(node: &Arc<NodeShared>, host: &KindHost) {
    for attempt in 0u32.. {
        if node.is_stopping() || lock(&host.state).withdrawn {
            return;
        }
        match node
            .discovery
            .register_entity_host(
                &node.info.cluster,
                host.kind,
                &node.info.id,
                host.config.shards,
            )
            .await
        {
            Ok(()) => return,
            Err(e) => {
                if attempt % 20 == 0 {
                    tracing::warn!(node = %node.info.id, kind = host.kind, error = %e, "cannot register as a host of an entity type; retrying");
                }
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

fn apply_view(node: &Arc<NodeShared>, host: &Arc<KindHost>, view: &mut EntityView) {
    {
        let mut st = lock(&host.state);
        st.owners = view.owners.iter().map(|o| (o.shard, o.clone())).collect();
    }
    if let Some(a) = view.assignment.take() {
        apply(node, host, EntityEvent::Assigned(a));
    }
}

/// Applies one change of the store.
fn apply(node: &Arc<NodeShared>, host: &Arc<KindHost>, event: EntityEvent) {
    let mut st = lock(&host.state);
    match event {
        EntityEvent::Assigned(a) => {
            if a.shards() != host.config.shards && host.hosts() {
                crate::ratelog::warn_limited!(node = %node.info.id, kind = host.kind, ours = host.config.shards, theirs = a.shards(), "the cluster's assignment of an entity type has another shard count than this node's configuration; this node follows the cluster's");
            }
            if st.shards.len() != a.nodes.len() {
                // Indexes into the slots stay valid: no resize while anything refers to one
                // (a shard held or in motion, an activation, a queued message).
                let busy = st
                    .shards
                    .iter()
                    .any(|s| s.local != Local::Idle || !s.queue.is_empty())
                    || !st.keys.is_empty();
                if busy {
                    crate::ratelog::warn_limited!(node = %node.info.id, kind = host.kind, "the shard count of an entity type changed while shards were hosted here; ignored");
                    return;
                }
                st.shards = (0..a.nodes.len()).map(|_| Slot::default()).collect();
            }
            st.assignment = Some(a);
        }
        EntityEvent::Owned(owner) => {
            st.owners.insert(owner.shard, owner);
        }
        EntityEvent::Released(shard) => {
            st.owners.remove(&shard);
        }
    }
    drop(st);
    host.changed.notify_waiters();
}

/// What a step asks for, carried out once the lock is released.
enum Action {
    Acquire(u32),
    Release { shard: u32, token: u64 },
    ReleaseStale(u32),
    Resubmit(VecDeque<Pending>),
}

/// Decides and carries out the next step of every shard.
fn step(node: &Arc<NodeShared>, host: &Arc<KindHost>) {
    let epoch = match node.lease.get() {
        None => 0,
        Some(clock) => {
            let lease = clock.lease();
            if lease.lost {
                u64::MAX
            } else {
                lease.epoch
            }
        }
    };
    let me = node.info.id.clone();
    let mut actions = Vec::new();
    {
        let mut st = lock(&host.state);
        let Some(assignment) = st.assignment.clone() else {
            return;
        };
        for shard in 0..assignment.shards() {
            let i = shard as usize;
            let assigned = if st.withdrawn {
                None
            } else {
                assignment.node(shard)
            };
            let owner = st.owners.get(&shard).cloned();
            let slot = &st.shards[i];
            match decide(
                &me,
                epoch,
                slot.local,
                assigned,
                owner.as_ref(),
                slot.active,
            ) {
                Step::Wait => {}
                // A node whose lease is known lost takes nothing until it has a new one.
                Step::Acquire if epoch == u64::MAX => {}
                Step::Acquire => {
                    st.shards[i].local = Local::Acquiring;
                    actions.push(Action::Acquire(shard));
                }
                Step::Drain => {
                    if let Local::Owned { token, epoch } = st.shards[i].local {
                        st.shards[i].local = Local::Draining { token, epoch };
                        host.stop_shard(&mut st, shard);
                        tracing::debug!(node = %me, kind = host.kind, shard, "draining a shard assigned elsewhere");
                    }
                }
                Step::Resume => {
                    if let Local::Draining { token, epoch } = st.shards[i].local {
                        st.shards[i].local = Local::Owned { token, epoch };
                        let queue = std::mem::take(&mut st.shards[i].queue);
                        actions.push(Action::Resubmit(queue));
                    }
                }
                Step::Release { token } => {
                    st.shards[i].local = Local::Releasing { token };
                    actions.push(Action::Release { shard, token });
                }
                Step::ReleaseStale => {
                    if !st.releasing_stale.contains(&shard) {
                        st.releasing_stale.push(shard);
                        actions.push(Action::ReleaseStale(shard));
                    }
                }
                Step::Lost => {
                    tracing::warn!(node = %me, kind = host.kind, shard, "lost a shard's ownership (this node's lease expired or was replaced); its activations are fenced and stopped");
                    st.shards[i].local = Local::Idle;
                    // Their handlers are fenced already: the stamps carry the lease the
                    // shard was taken under.
                    host.stop_shard(&mut st, shard);
                    let queue = std::mem::take(&mut st.shards[i].queue);
                    actions.push(Action::Resubmit(queue));
                }
            }
        }
    }
    for action in actions {
        match action {
            Action::Acquire(shard) => acquire(node, host, shard, epoch),
            Action::Release { shard, token } => release(node, host, shard, token),
            Action::ReleaseStale(shard) => release(node, host, shard, 0),
            Action::Resubmit(queue) => host.resubmit(node, queue),
        }
    }
}

fn acquire(node: &Arc<NodeShared>, host: &Arc<KindHost>, shard: u32, epoch: u64) {
    let weak = Arc::downgrade(node);
    let host = host.clone();
    node.arbiter.spawn(async move {
        let Some(node) = weak.upgrade() else { return };
        let taken = node
            .discovery
            .acquire_shard(&node.info.cluster, host.kind, shard, &node.info.id)
            .await;
        let mut st = lock(&host.state);
        if st.shards[shard as usize].local != Local::Acquiring {
            return;
        }
        let queue = match taken {
            Ok(Some(token)) => {
                tracing::debug!(node = %node.info.id, kind = host.kind, shard, token, "took a shard");
                st.shards[shard as usize].local = Local::Owned { token, epoch };
                st.owners.insert(
                    shard,
                    ShardOwner {
                        shard,
                        node: node.info.id.clone(),
                        epoch,
                    },
                );
                std::mem::take(&mut st.shards[shard as usize].queue)
            }
            Ok(None) => {
                st.shards[shard as usize].local = Local::Idle;
                VecDeque::new()
            }
            Err(e) => {
                st.shards[shard as usize].local = Local::Idle;
                crate::ratelog::warn_limited!(node = %node.info.id, kind = host.kind, shard, error = %e, "could not take a shard; retrying");
                VecDeque::new()
            }
        };
        drop(st);
        // What waited goes first, then the asks that wait by themselves: in order.
        host.resubmit(&node, queue);
        host.changed.notify_waiters();
        host.kick.notify_one();
    });
}

fn release(node: &Arc<NodeShared>, host: &Arc<KindHost>, shard: u32, token: u64) {
    let weak = Arc::downgrade(node);
    let host = host.clone();
    node.arbiter.spawn(async move {
        let Some(node) = weak.upgrade() else { return };
        let released = node
            .discovery
            .release_shard(&node.info.cluster, host.kind, shard, &node.info.id, token)
            .await;
        let mut st = lock(&host.state);
        if token == 0 {
            st.releasing_stale.retain(|s| *s != shard);
            if released.is_ok() {
                st.owners.remove(&shard);
            }
            drop(st);
            host.kick.notify_one();
            return;
        }
        if st.shards[shard as usize].local != (Local::Releasing { token }) {
            return;
        }
        let queue = match released {
            Ok(()) => {
                tracing::debug!(node = %node.info.id, kind = host.kind, shard, "handed a shard over");
                st.shards[shard as usize].local = Local::Idle;
                if st.owners.get(&shard).is_some_and(|o| o.node == node.info.id) {
                    st.owners.remove(&shard);
                }
                std::mem::take(&mut st.shards[shard as usize].queue)
            }
            Err(e) => {
                // Try again at the next step (nothing runs: the activations are gone).
                let epoch = node.lease.get().map_or(0, |c| c.epoch());
                st.shards[shard as usize].local = Local::Draining { token, epoch };
                crate::ratelog::warn_limited!(node = %node.info.id, kind = host.kind, shard, error = %e, "could not release a shard; retrying");
                VecDeque::new()
            }
        };
        drop(st);
        // What waited goes first, then the asks that wait by themselves: in order.
        host.resubmit(&node, queue);
        host.changed.notify_waiters();
        host.kick.notify_one();
    });
}

/// Sends on what waited and can go now: messages without a route (the assignment or a
/// link came), and those held for hosted shards while the lease was in doubt or a state
/// failed to load.
fn release_held(node: &Arc<NodeShared>, host: &Arc<KindHost>) {
    let unrouted = host.take_unrouted();
    host.resubmit(node, unrouted);
    let held: Vec<VecDeque<Pending>> = {
        let mut st = lock(&host.state);
        let hostable: Vec<usize> = st
            .shards
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                !s.queue.is_empty()
                    && matches!(s.local, Local::Owned { epoch, .. } if host.hostable(node, epoch))
            })
            .map(|(i, _)| i)
            .collect();
        hostable
            .into_iter()
            .map(|i| std::mem::take(&mut st.shards[i].queue))
            .collect()
    };
    for queue in held {
        host.resubmit(node, queue);
    }
    host.changed.notify_waiters();
}
