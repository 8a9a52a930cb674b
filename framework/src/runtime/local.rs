//! The node's own task set on its arbiter thread, where its actors run.
//!
//! An actor's task can only be created inside a tokio `LocalSet`. actix's set is entered only
//! while actix polls its own tasks, and tokio offers no way to ask whether a call is inside
//! it; a spawn from anywhere else (a `tokio::spawn` task, another thread) would panic. So each
//! node owns a `LocalSet` of its own, driven by one task on its arbiter: any code running on
//! the arbiter's thread can put an actor's task into it at once, without a round trip through
//! the arbiter's queue (spawn rate and memory: BENCHMARKS.md, spawning). Spawns from other
//! threads go through the arbiter (see `spawn.rs`).
//!
//! The set lives exactly as long as its driver task: when the actix system stops and drops
//! that task, the set and every actor in it go with it, as actix's own tasks do.

use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::sync::Arc;

use tokio::task::LocalSet;

use super::NodeShared;

/// A node's set on this thread: held strongly until its driver task takes it, then weakly.
enum Slot {
    Starting(Rc<LocalSet>),
    Running(Weak<LocalSet>),
}

thread_local! {
    /// The sets of the nodes whose arbiter is this thread, by node.
    static SETS: RefCell<Vec<(usize, Slot)>> = const { RefCell::new(Vec::new()) };
}

fn key(node: &Arc<NodeShared>) -> usize {
    Arc::as_ptr(node) as usize
}

/// Creates `node`'s set on this thread (its arbiter's) and schedules the task that drives it.
pub(crate) fn install(node: &Arc<NodeShared>) {
    let key = key(node);
    SETS.with(|sets| {
        let mut sets = sets.borrow_mut();
        sets.retain(|(_, slot)| match slot {
            Slot::Starting(_) => true,
            Slot::Running(set) => set.strong_count() > 0,
        });
        sets.push((key, Slot::Starting(Rc::new(LocalSet::new()))));
    });
    let scheduled = node.arbiter.spawn_fn(move || {
        let Some(set) = SETS.with(|sets| {
            let mut sets = sets.borrow_mut();
            let (_, slot) = sets.iter_mut().find(|(k, _)| *k == key)?;
            let Slot::Starting(set) = slot else {
                return None;
            };
            let set = set.clone();
            *slot = Slot::Running(Rc::downgrade(&set));
            Some(set)
        }) else {
            return;
        };
        actix_rt::spawn(async move {
            set.run_until(std::future::pending::<()>()).await;
        });
    });
    if !scheduled {
        SETS.with(|sets| sets.borrow_mut().retain(|(k, _)| *k != key));
    }
}

/// `node`'s set, if this thread is its arbiter's and the set is alive.
pub(crate) fn current(node: &Arc<NodeShared>) -> Option<Rc<LocalSet>> {
    let key = key(node);
    SETS.with(|sets| {
        let sets = sets.borrow();
        match &sets.iter().find(|(k, _)| *k == key)?.1 {
            Slot::Starting(set) => Some(set.clone()),
            Slot::Running(set) => set.upgrade(),
        }
    })
}
