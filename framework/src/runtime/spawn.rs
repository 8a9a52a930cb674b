//! Starting actors on the node's arbiter, plain or supervised, from a constructor closure
//! (the constructors of `Spawnable` types, with their `SpawnContext`, are built in
//! `context.rs`, above the runtime).

use std::any::TypeId;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context as TaskContext, Poll};

use actix::dev::channel::{self, AddressReceiver};
use actix::{Addr, Context};
use tokio::task::LocalSet;

use super::dispatch::Typed;
use super::local;
use super::panics::{self, Notice};
use super::{lock, read, write, NodeShared, Respawn};
use crate::id::ActorId;
use crate::message::{Declaration, RemoteActor};
use crate::supervise::{mailbox_key, mark_failed, take_failed};

impl NodeShared {
    /// The dispatch table of an actor type, built once per node.
    fn declaration<A: RemoteActor>(&self) -> Arc<Declaration<A>> {
        let key = TypeId::of::<A>();
        if let Some(d) = read(&self.declarations).get(&key) {
            if let Ok(d) = d.clone().downcast::<Declaration<A>>() {
                return d;
            }
        }
        let d = Arc::new(Declaration::<A>::build());
        write(&self.declarations).insert(key, d.clone());
        d
    }

    /// Starts an actor built by `create` in its context; returns its id and address.
    pub(crate) fn spawn_with<A, F>(self: &Arc<Self>, create: F) -> (ActorId, Addr<A>)
    where
        A: RemoteActor,
        F: FnOnce(&mut Context<A>) -> A + Send + 'static,
    {
        let id = self.next_actor_id();
        (id, self.start_actor(id, create, None))
    }

    /// A fresh actor id.
    pub(crate) fn next_actor_id(&self) -> ActorId {
        ActorId(self.next_actor.fetch_add(1, Ordering::Relaxed))
    }

    /// Starts actor `id` under `supervisor` (see `supervise`), built by `create`.
    pub(crate) fn spawn_supervised<A, F>(
        self: &Arc<Self>,
        id: ActorId,
        supervisor: Arc<dyn Respawn>,
        create: F,
    ) where
        A: RemoteActor,
        F: FnOnce(&mut Context<A>) -> A + Send + 'static,
    {
        self.start_actor::<A, _>(id, create, Some(supervisor));
    }

    /// Starts (or, for an id already in the table, restarts) actor `id` on the node's
    /// arbiter with a fresh mailbox, and returns its address.
    ///
    /// Memory per actor is a product figure (see BENCHMARKS.md): the actor costs one map
    /// entry, one dispatch handle and the task that runs its context, whose future also holds
    /// the guard that removes it from the table when it stops. Nothing else is allocated per
    /// idle actor; node shutdown stops actors through the table.
    pub(crate) fn start_actor<A, F>(
        self: &Arc<Self>,
        id: ActorId,
        create: F,
        supervisor: Option<Arc<dyn Respawn>>,
    ) -> Addr<A>
    where
        A: RemoteActor,
        F: FnOnce(&mut Context<A>) -> A + Send + 'static,
    {
        let (tx, rx) = channel::channel(16);
        let addr = Addr::new(tx);
        let mut actors = write(&self.actors);
        if let Some(supervisor) = supervisor {
            actors.extras.entry(id).or_default().supervisor = Some(supervisor);
        }
        let handle = Arc::new(Typed {
            addr: addr.clone(),
            declaration: self.declaration::<A>(),
            supervised: actors.supervisor(id).is_some(),
            stopping: AtomicBool::new(false),
        });
        actors.handles.insert(id, handle);
        drop(actors);
        let guard = ActorGuard {
            node: Arc::downgrade(self),
            id,
            mailbox: mailbox_key(&addr),
        };
        match local::current(self) {
            // On the arbiter's thread: the actor's task is created now.
            Some(set) => start_now(&set, guard, rx, create),
            None => self.enqueue_start(guard, rx, create),
        }
        addr
    }

    /// Queues the start of an actor on the node's arbiter (actors can only be started inside
    /// the arbiter's task context, and a spawn may come from anywhere).
    ///
    /// Starts wait in one plain vector per actor type and constructor type, drained by one
    /// call on the arbiter per batch: a million spawns before the first yield cost one
    /// contiguous vector, freed whole once they start, rather than a million boxed closures
    /// whose freed memory the allocator keeps scattered between the actors' allocations.
    fn enqueue_start<A, F>(self: &Arc<Self>, guard: ActorGuard, rx: AddressReceiver<A>, create: F)
    where
        A: RemoteActor,
        F: FnOnce(&mut Context<A>) -> A + Send + 'static,
    {
        let key = TypeId::of::<(A, F)>();
        let first = {
            let mut queues = lock(&self.starts);
            let queue = queues
                .entry(key)
                .or_insert_with(|| Box::new(PendingStarts::<A, F>::new()));
            let pending = queue
                .downcast_mut::<PendingStarts<A, F>>()
                .expect("a start queue holds the starts of its own key's types");
            pending.push((guard, rx, create));
            pending.len() == 1
        };
        if !first {
            return; // A drain is already scheduled; it will take this one too.
        }
        let node = Arc::downgrade(self);
        let scheduled = self.arbiter.spawn_fn(move || {
            if let Some(node) = node.upgrade() {
                node.drain_starts::<A, F>();
            }
        });
        if !scheduled {
            // The arbiter is gone: drop the queued starts; their guards remove them from the
            // table and tell their watchers.
            tracing::error!(node = %self.info.id, "the node's arbiter has stopped; actor not started");
            let queued = lock(&self.starts).remove(&key);
            drop(queued);
        }
    }

    /// Starts every queued actor of one type (on the arbiter, inside its task context).
    fn drain_starts<A, F>(self: &Arc<Self>)
    where
        A: RemoteActor,
        F: FnOnce(&mut Context<A>) -> A + Send + 'static,
    {
        let Some(queue) = lock(&self.starts).remove(&TypeId::of::<(A, F)>()) else {
            return;
        };
        let Ok(pending) = queue.downcast::<PendingStarts<A, F>>() else {
            return;
        };
        let Some(set) = local::current(self) else {
            // The node's set is gone (the system is stopping): the guards tell the table.
            return;
        };
        for (guard, rx, create) in *pending {
            start_now(&set, guard, rx, create);
        }
    }
}

/// Creates an actor in its context and puts its task into the node's set.
fn start_now<A, F>(set: &LocalSet, guard: ActorGuard, rx: AddressReceiver<A>, create: F)
where
    A: RemoteActor,
    F: FnOnce(&mut Context<A>) -> A,
{
    let mut ctx = Context::with_receiver(rx);
    let actor = create(&mut ctx);
    // The guard lives as long as the actor's task: it drops when the actor stops, also after
    // a panic the task caught.
    let _entered = set.enter();
    set.spawn_local(Guarded {
        running: ctx.into_future(actor),
        notice: None,
        guard,
    });
}

/// Actors of one type waiting to be started by the arbiter.
type PendingStarts<A, F> = Vec<(ActorGuard, AddressReceiver<A>, F)>;

/// An actor's running context and its guard, in one future: the guard costs no allocation
/// of its own and the task stays the size of a bare actix actor's (an `async` block would
/// hold the context future twice).
struct Guarded<F> {
    running: F,
    /// Set when the task panics, for the callers of the asks in progress (see
    /// `panics::Notice`); created at the actor's first ask.
    notice: Option<Arc<Notice>>,
    guard: ActorGuard,
}

impl<F: Future<Output = ()> + Unpin> Future for Guarded<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = &mut *self;
        let running = &mut this.running;
        match panics::poll_actor(&mut this.notice, || Pin::new(running).poll(cx)) {
            Ok(poll) => poll,
            Err(caught) => {
                // A panic outside a handler's own call (a handler's future, `started`,
                // `stopping`): the actor is over. Its task ends here; the asks it held are
                // answered "panicked" through the notice when it is dropped.
                if let Some(node) = this.guard.node.upgrade() {
                    let actor_type = node.handle_of(this.guard.id).map(|h| h.type_name());
                    tracing::error!(
                        node = %node.info.id,
                        actor = %this.guard.id,
                        actor_type = actor_type.unwrap_or("unknown"),
                        panic = %caught.message,
                        at = caught.location.as_deref().unwrap_or("unknown"),
                        "actor panicked outside a handler call (in a handler's future or a life-cycle method); stopping it"
                    );
                    if let Some(backtrace) = caught.backtrace {
                        tracing::debug!(actor = %this.guard.id, "backtrace of the panic:\n{backtrace}");
                    }
                }
                mark_failed(this.guard.mailbox);
                Poll::Ready(())
            }
        }
    }
}

struct ActorGuard {
    node: Weak<NodeShared>,
    id: ActorId,
    /// The key of the actor's mailbox, under which a caught panic is recorded.
    mailbox: u64,
}

impl Drop for ActorGuard {
    fn drop(&mut self) {
        // A panic that was not caught (a plain tell) unwinds through here; a caught one was
        // recorded under the mailbox's key.
        let failed = std::thread::panicking() | take_failed(self.mailbox);
        if let Some(node) = self.node.upgrade() {
            node.actor_stopped(self.id, failed);
        }
    }
}
