//! The properties, checked as the run goes, and its counters.
//!
//! 1. **One live activation per key** ([`Checker::hosts`] after every event,
//!    [`Checker::started`] at every handler start): (1a) at no instant are two nodes both able to
//!    handle a message for one shard (its state `Owned` or `Draining` and the fence true on
//!    their own clocks); frozen nodes count too (stricter: their fence must be down before
//!    anyone else can host). A node can become able only at an event of its own in which
//!    it takes or resumes a shard or its lease is renewed, replaced or unconfirmed (between
//!    its events the fence only closes), so checking those nodes as each event ends covers
//!    every instant. (1b) No two
//!    handlers of one key run at once, a handler running from its start to the end of its
//!    work (its save is the store's to fence). (1c) No handler starts on a node whose lease
//!    etcd has expired (checked by the world). A handler whose node was frozen while it ran
//!    is stretched past anything a lease can promise: its overlaps are counted
//!    ([`Stats::stretched_overlaps`]), not failed, and property 2 checks that the store's
//!    fence kept them harmless.
//! 2. **Every acknowledged save survives** ([`Checker::applied`] at every save the store
//!    applies, [`Checker::saves_survive`] at the end): every applied save adds one to the
//!    value the store had (no save is based on a state that misses another, so none is
//!    lost); at the end the store's value (read from the real memory store) is the largest
//!    acknowledged one, except for saves applied after it whose node died before the answer
//!    (never acknowledged, yet applied: counted).
//! 3. **Convergence** ([`converged`], once faults stopped and 60 s passed): every shard is
//!    assigned to a live host (registered, not leaving), the hosts' counts differ by at most
//!    one, and every shard is owned (in etcd) by its assignee, which hosts it under that
//!    token and lease, and no other node holds any state for it.
//! 4. **Determinism**: the same seed gives the same trace hash (the tests).

use std::collections::BTreeMap;

use crate::core::shard::host::Local;
use crate::core::Time;
use crate::id::NodeId;

use super::effects::Counter;
use super::etcd::Etcd;
use super::node::Node;
use super::store::{Applied, Store};

/// What happened in a run.
#[derive(Debug, Default, Clone)]
pub(crate) struct Stats {
    pub(crate) kills: u64,
    pub(crate) restarts: u64,
    pub(crate) joins: u64,
    pub(crate) leaves: u64,
    pub(crate) freezes: u64,
    /// Freezes at whose end etcd had expired the node's lease.
    pub(crate) freezes_outlived: u64,
    pub(crate) partitions: u64,
    pub(crate) slow: u64,
    pub(crate) messages: u64,
    pub(crate) handled: u64,
    pub(crate) fenced: u64,
    pub(crate) dropped: u64,
    /// Messages dropped at the hop limit.
    pub(crate) hop_limit: u64,
    pub(crate) forwarded: u64,
    pub(crate) acked: u64,
    pub(crate) stale_saves: u64,
    pub(crate) stale_loads: u64,
    pub(crate) acquired: u64,
    pub(crate) drained: u64,
    pub(crate) released: u64,
    pub(crate) lost: u64,
    pub(crate) leases_lost: u64,
    pub(crate) leaderships: u64,
    pub(crate) assignments: u64,
    /// Handlers that overlapped one of a node frozen while it ran (property 1's exception).
    pub(crate) stretched_overlaps: u64,
    /// Saves applied whose node died before the answer.
    pub(crate) unanswered_saves: u64,
}

impl Stats {
    /// Counts what a node reported.
    pub(crate) fn count(&mut self, counter: Counter) {
        let field = match counter {
            Counter::Handled => &mut self.handled,
            Counter::Fenced => &mut self.fenced,
            Counter::Dropped => &mut self.dropped,
            Counter::HopLimit => &mut self.hop_limit,
            Counter::Forwarded => &mut self.forwarded,
            Counter::StaleSave => &mut self.stale_saves,
            Counter::StaleLoad => &mut self.stale_loads,
            Counter::Acquired => &mut self.acquired,
            Counter::Drained => &mut self.drained,
            Counter::Released => &mut self.released,
            Counter::Lost => &mut self.lost,
            Counter::LeaseLost => &mut self.leases_lost,
            Counter::Leadership => &mut self.leaderships,
            Counter::Assigned => &mut self.assignments,
        };
        *field += 1;
    }

    /// Adds another run's counts.
    pub(crate) fn add(&mut self, o: &Stats) {
        let pairs = [
            (&mut self.kills, o.kills),
            (&mut self.restarts, o.restarts),
            (&mut self.joins, o.joins),
            (&mut self.leaves, o.leaves),
            (&mut self.freezes, o.freezes),
            (&mut self.freezes_outlived, o.freezes_outlived),
            (&mut self.partitions, o.partitions),
            (&mut self.slow, o.slow),
            (&mut self.messages, o.messages),
            (&mut self.handled, o.handled),
            (&mut self.fenced, o.fenced),
            (&mut self.dropped, o.dropped),
            (&mut self.hop_limit, o.hop_limit),
            (&mut self.forwarded, o.forwarded),
            (&mut self.acked, o.acked),
            (&mut self.stale_saves, o.stale_saves),
            (&mut self.stale_loads, o.stale_loads),
            (&mut self.acquired, o.acquired),
            (&mut self.drained, o.drained),
            (&mut self.released, o.released),
            (&mut self.lost, o.lost),
            (&mut self.leases_lost, o.leases_lost),
            (&mut self.leaderships, o.leaderships),
            (&mut self.assignments, o.assignments),
            (&mut self.stretched_overlaps, o.stretched_overlaps),
            (&mut self.unanswered_saves, o.unanswered_saves),
        ];
        for (field, value) in pairs {
            *field += value;
        }
    }
}

/// A handler running (from its start to the end of its work).
#[derive(Debug)]
struct Running {
    /// Its node's incarnation.
    inc: u64,
    /// Its activation.
    act: u64,
    since: Time,
    /// Its node was frozen while it ran.
    stretched: bool,
}

/// The state the properties need. See the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct Checker {
    running: BTreeMap<String, Vec<Running>>,
    /// The largest acknowledged value per key.
    acked: BTreeMap<String, u64>,
    /// Saves applied, not acknowledged yet: (incarnation, request) → (key, value).
    unacked: BTreeMap<(u64, u64), (String, u64)>,
}

impl Checker {
    /// Property 1, first half, after an event in which `node` (with its clock's reading)
    /// ran: no shard it may handle may be handled by any of `others` (on their clocks at
    /// `virtual_now`). A node can become able to handle a shard only at an event of its own (the
    /// fence only closes as time passes), so checking the nodes that ran covers every
    /// instant.
    pub(crate) fn hosts<'a>(
        &self,
        (node, now): (&Node, Time),
        others: impl Iterator<Item = &'a Node>,
        virtual_now: Time,
    ) -> Result<(), String> {
        let able = node.able(now);
        if able == 0 {
            return Ok(());
        }
        for other in others.filter(|n| !std::ptr::eq(*n, node)) {
            let both = other.holding() & able;
            if both == 0 {
                continue;
            }
            let then = other.clock.local(virtual_now);
            let mut both = (0..64).filter(|s| both & 1 << s != 0);
            if let Some(shard) = both.find(|s| other.may_handle(*s, then)) {
                let show = |n: &Node| {
                    format!(
                        "{} ({:?}, lease {:?})",
                        n.id, n.shards[shard as usize], n.lease
                    )
                };
                return Err(format!(
                    "two nodes may handle shard {shard} at once: {} and {}",
                    show(node),
                    show(other)
                ));
            }
        }
        Ok(())
    }

    /// Property 1, second half: a handler of `key` starts on incarnation `inc` (activation
    /// `act`) at `now`.
    pub(crate) fn started(
        &mut self,
        stats: &mut Stats,
        inc: u64,
        key: &str,
        act: u64,
        now: Time,
    ) -> Result<(), String> {
        let running = self.running.entry(key.to_owned()).or_default();
        for other in running.iter() {
            if other.stretched {
                stats.stretched_overlaps += 1;
            } else {
                return Err(format!(
                    "two handlers of {key} at once: inc {} (activation {}, since {:.3}s) and inc {inc} (activation {act})",
                    other.inc,
                    other.act,
                    other.since.as_secs_f64()
                ));
            }
        }
        running.push(Running {
            inc,
            act,
            since: now,
            stretched: false,
        });
        Ok(())
    }

    /// The handler of activation `act` on `inc` finished its work.
    pub(crate) fn ended(&mut self, inc: u64, key: &str, act: u64) {
        if let Some(running) = self.running.get_mut(key) {
            running.retain(|r| (r.inc, r.act) != (inc, act));
        }
    }

    /// `inc` is frozen: its running handlers are stretched.
    pub(crate) fn frozen(&mut self, inc: u64) {
        for r in self.running.values_mut().flatten() {
            if r.inc == inc {
                r.stretched = true;
            }
        }
    }

    /// `inc` is gone (killed or exited): its handlers with it.
    pub(crate) fn gone(&mut self, inc: u64) {
        for running in self.running.values_mut() {
            running.retain(|r| r.inc != inc);
        }
    }

    /// Property 2: the store applied save `req` of `inc` for `key`.
    pub(crate) fn applied(
        &mut self,
        inc: u64,
        req: u64,
        key: &str,
        applied: Applied,
    ) -> Result<(), String> {
        self.unacked
            .insert((inc, req), (key.to_owned(), applied.value));
        if applied.value != applied.before + 1 {
            return Err(format!(
                "lost update: the store had {} for {key} and applied a save of {} (inc {inc})",
                applied.before, applied.value
            ));
        }
        Ok(())
    }

    /// Save `req` of `inc` for `key` was acknowledged with `value`.
    pub(crate) fn acked(
        &mut self,
        inc: u64,
        req: u64,
        key: &str,
        value: u64,
    ) -> Result<(), String> {
        if self.unacked.remove(&(inc, req)).is_none() {
            return Err(format!(
                "inc {inc} acknowledged a save of {key} ({value}) the store never applied"
            ));
        }
        let max = self.acked.entry(key.to_owned()).or_default();
        *max = (*max).max(value);
        Ok(())
    }

    /// Property 2 at the end: every key's state in the store is its largest acknowledged
    /// value, but for saves after it that were never answered because their node died.
    pub(crate) fn saves_survive(
        &self,
        store: &Store,
        stats: &mut Stats,
        alive: impl Fn(u64) -> bool,
    ) -> Result<(), String> {
        for key in store.keys() {
            let value = store.final_value(key);
            let last = store.last_applied(key);
            if value != Some(last) {
                return Err(format!(
                    "the store has {value:?} for {key}, its last applied save was {last}"
                ));
            }
            let acked = self.acked.get(key).copied().unwrap_or(0);
            let unanswered: Vec<_> = self.unacked.iter().filter(|(_, (k, _))| k == key).collect();
            let after = unanswered.iter().filter(|(_, (_, v))| *v > acked).count() as u64;
            if last < acked || after != last - acked {
                return Err(format!(
                    "{key}: the store has {last}, the largest acknowledged save is {acked}, and {after} saves after it went unanswered"
                ));
            }
            if let Some(((inc, req), _)) = unanswered.iter().find(|((inc, _), _)| alive(*inc)) {
                return Err(format!(
                    "{key}: save {req} of inc {inc}, still alive, was applied but never answered"
                ));
            }
            stats.unanswered_saves += unanswered.len() as u64;
        }
        Ok(())
    }
}

/// Property 3: after the quiet period, every shard is assigned to a live host, balanced,
/// and owned by its assignee. `nodes`: the live incarnations.
pub(crate) fn converged<'a>(
    etcd: &Etcd,
    shards: u32,
    nodes: impl Iterator<Item = &'a Node> + Clone,
) -> Result<(), String> {
    let hosts: BTreeMap<&NodeId, &Node> = nodes
        .clone()
        .filter(|n| {
            n.leaving.is_none()
                && n.registered
                && !n.lease.lost
                && etcd.lease_alive(n.lease.epoch)
                && etcd.node_entry(&n.id) == Some(false)
        })
        .map(|n| (&n.id, n))
        .collect();
    if hosts.is_empty() {
        return Err("no live host".to_owned());
    }
    let Some(assignment) = etcd.assignment() else {
        return Err("no assignment".to_owned());
    };
    let mut counts: BTreeMap<&NodeId, usize> = hosts.keys().map(|h| (*h, 0)).collect();
    for shard in 0..shards {
        let Some(assignee) = assignment.node(shard) else {
            return Err(format!("shard {shard} is not assigned"));
        };
        let Some(count) = counts.get_mut(assignee) else {
            return Err(format!(
                "shard {shard} is assigned to {assignee}, not a live host"
            ));
        };
        *count += 1;
        let host = hosts[assignee];
        let owner = etcd.owner(shard);
        let owned = owner.is_some_and(|(o, token)| {
            o.node == *assignee
                && o.epoch == host.lease.epoch
                && host.shards[shard as usize]
                    == (Local::Owned {
                        token,
                        epoch: o.epoch,
                    })
        });
        if !owned {
            return Err(format!(
                "shard {shard} is assigned to {assignee} ({:?}, lease {}) but owned by {owner:?}",
                host.shards[shard as usize], host.lease.epoch
            ));
        }
        if let Some(other) = nodes
            .clone()
            .find(|n| n.id != *assignee && n.shards[shard as usize] != Local::Idle)
        {
            return Err(format!(
                "shard {shard} is owned by {assignee} but {} still holds it as {:?}",
                other.id, other.shards[shard as usize]
            ));
        }
    }
    let (min, max) = (
        counts.values().min().copied().unwrap_or(0),
        counts.values().max().copied().unwrap_or(0),
    );
    if max > min + 1 {
        return Err(format!("unbalanced: {counts:?}"));
    }
    Ok(())
}
