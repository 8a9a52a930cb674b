//! The freeze fault: a node stopped (SIGSTOP) at `t` for `d` processes nothing meanwhile.
//! Its timers, the messages and etcd answers that reach it and its watch streams wait (as a
//! stopped process's timers and socket buffers do); etcd and the other nodes go on, so a
//! freeze longer than the lease gets the node declared down and its replicas replaced. At
//! `t + d` everything that waited is ready at once and runs in an order the seeded RNG
//! chooses (a process resumed with SIGCONT gives no ordering between its threads): a
//! request's timeout may run before its answer, an order before the keep-alive timer.
//!
//! Not modelled: what the node was doing at the instant it stopped (the simulation's events
//! are atomic, a freeze starts between two of them), the kernel dropping what overflows a
//! socket buffer, the order of the messages of one connection (the simulation reorders
//! slow messages anyway), and the node's own clock: it reads the virtual clock, which
//! jumped by `d`, as a monotonic clock does.

use std::time::Duration;

use super::scenario::Fault;
use super::world::{slot, Ev, Frozen, Inc, Thawed, World};

impl World {
    /// Freezes the incarnation of `slot` for `d` (nothing if it is empty or frozen).
    pub(crate) fn freeze(&mut self, slot: usize, d: Duration) {
        let Some(node) = self.nodes[slot].as_ref() else {
            return;
        };
        let (inc, lease) = (node.inc, node.lease);
        if self.frozen.contains_key(&inc) {
            return;
        }
        self.stats.freezes += 1;
        self.trace.note(self.now, || {
            format!(
                "n{slot} frozen for {:.3}s (lease {lease:?})",
                d.as_secs_f64()
            )
        });
        self.frozen.insert(
            inc,
            Frozen {
                since: self.now,
                lease,
                held: Vec::new(),
            },
        );
        self.schedule(self.now + d, Ev::Fault(Fault::Thaw(inc)));
    }

    /// Arms a freeze of `slot` for `d`: it starts when the node next sends a request for an
    /// order (between the order's etcd request and its answer).
    pub(crate) fn arm_freeze(&mut self, slot: usize, d: Duration) {
        if self.nodes[slot].is_some() {
            self.freeze_armed.insert(slot, d);
        }
    }

    /// `inc` just sent a request; freezes it if a freeze is armed and the request is for an
    /// order.
    pub(crate) fn freeze_if_armed(&mut self, inc: Inc, mid_order: bool) {
        if !mid_order {
            return;
        }
        if let Some(d) = self.freeze_armed.remove(&slot(inc)) {
            self.freeze(slot(inc), d);
        }
    }

    /// The event, unless its node is frozen: then it waits for the thaw.
    pub(crate) fn hold_if_frozen(&mut self, ev: Ev) -> Option<Ev> {
        if self.frozen.is_empty() {
            return Some(ev);
        }
        let target = match &ev {
            Ev::FromEtcd { to, .. } | Ev::Peer { to, .. } => *to,
            Ev::Timer { inc, .. } => *inc,
            Ev::Pump(watch) => match self.streams.get(watch) {
                Some(stream) => stream.owner,
                None => return Some(ev),
            },
            Ev::ToEtcd { .. } | Ev::Fault(_) => return Some(ev),
        };
        match self.frozen.get_mut(&target) {
            Some(frozen) => {
                frozen.held.push(ev);
                None
            }
            None => Some(ev),
        }
    }

    /// `inc` resumes: what waited is scheduled now, in a random order.
    pub(crate) fn thaw(&mut self, inc: Inc) {
        let Some(Frozen {
            since,
            lease,
            mut held,
        }) = self.frozen.remove(&inc)
        else {
            return;
        };
        let outlived = lease.is_some_and(|l| !self.etcd.lease_alive(l));
        self.stats.freezes_outlived += u64::from(outlived);
        let (slot, n) = (slot(inc), held.len());
        self.trace.note(self.now, || {
            format!("n{slot} resumes: {n} events waited (lease outlived: {outlived})")
        });
        self.thawed.entry(inc).or_default().push(Thawed {
            since,
            until: self.now,
            outlived,
        });
        // Fisher-Yates, with the run's RNG.
        for i in (1..held.len()).rev() {
            let j = self.rng.below(i + 1);
            held.swap(i, j);
        }
        for ev in held {
            self.schedule(self.now, ev);
        }
    }

    /// Whether `inc` is frozen.
    pub(crate) fn is_frozen(&self, inc: Inc) -> bool {
        self.frozen.contains_key(&inc)
    }

    /// Whether `inc` resumed at this virtual instant.
    pub(crate) fn resumed_now(&self, inc: Inc) -> bool {
        self.thawed
            .get(&inc)
            .and_then(|t| t.last())
            .is_some_and(|t| t.until == self.now)
    }

    /// The clock is about to move to `next` (`None`: the run pauses): when it leaves an
    /// instant at which a node resumed, the singleton property is checked over every node
    /// not frozen, the resumed ones included.
    pub(crate) fn end_instant(&mut self, next: Option<crate::core::Time>) {
        if next.is_some_and(|n| n == self.now) || self.thawed.is_empty() {
            return;
        }
        let now = self.now;
        let resumed = self
            .thawed
            .values()
            .any(|t| t.last().is_some_and(|t| t.until == now));
        if resumed {
            self.check_singletons(true);
        }
    }
}
