//! A node's activations of keyed entities: one per key of a shard it hosts, created by the
//! first message for the key, each with a mailbox handled one message at a time.
//!
//! An activation first loads (claims) its state from the store with its shard's token. A
//! handler starts only if the node's fence allows it at that instant (the node passes its
//! rule in as a `gate`: the shard owned or draining under that token, and the lease rule on
//! the node's clock); otherwise the message is not handled. A handler works for a few
//! milliseconds (longer on a slow node; a freeze stretches it), then saves the counter plus
//! one, and completes when the store answers: acknowledged, or refused because a larger
//! token has claimed the state (the activation is stale: it stops, its mailbox dropped).
//!
//! A draining shard's activations handle what their mailboxes hold and stop; new messages
//! wait at the node, not here. A lost shard's activations are fenced at once: their
//! mailboxes dropped, and those in the middle of a handler (working, saving, loading) kept
//! only until it completes (its save goes on to the store, which fences it; its
//! acknowledgement still counts) as *zombies* that handle nothing more.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::sim::rng::Rng;

use super::effects::{Counter, Ctx, Envelope, Out, Timer};
use super::store::{StoreOp, StoreReply};

/// Whether a handler of a shard's activation holding a token may start now.
pub(crate) type Gate<'a> = &'a dyn Fn(u32, u64) -> bool;

/// Where an activation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Its state is being loaded (store request `req`).
    Loading { req: u64 },
    /// Idle, with its counter.
    Ready { counter: u64 },
    /// A handler works on the counter.
    Working { counter: u64 },
    /// A handler saves `value` (store request `req`).
    Saving { req: u64, value: u64 },
}

/// One activation.
#[derive(Debug)]
struct Act {
    /// Unique on the node.
    id: u64,
    key: String,
    shard: u32,
    /// The shard's ownership token it was created under.
    token: u64,
    phase: Phase,
    mailbox: VecDeque<Envelope>,
    /// Stops once its mailbox is empty.
    draining: bool,
}

/// See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Host {
    acts: BTreeMap<String, Act>,
    zombies: Vec<Act>,
    next_act: u64,
    next_req: u64,
    rng: Rng,
    work_ms: (u64, u64),
    /// How many times slower than normal handlers work (1: normal).
    pub(crate) slow: u64,
}

impl Host {
    /// No activations; handlers work `work_ms` milliseconds, chosen with a generator seeded
    /// with `seed`.
    pub(crate) fn new(seed: u64, work_ms: (u64, u64)) -> Self {
        Host {
            acts: BTreeMap::new(),
            zombies: Vec::new(),
            next_act: 1,
            next_req: 1,
            rng: Rng::new(seed),
            work_ms,
            slow: 1,
        }
    }

    /// Hands `env` to its key's activation under ownership `token`, created if there is
    /// none.
    pub(crate) fn deliver(&mut self, ctx: &mut Ctx, env: Envelope, token: u64, gate: Gate<'_>) {
        let key = env.key.clone();
        if self.acts.get(&key).is_some_and(|a| a.token != token) {
            // An activation of an older ownership (cannot stay: fence it).
            if let Some(old) = self.acts.remove(&key) {
                self.retire(old, ctx);
            }
        }
        if !self.acts.contains_key(&key) {
            let req = self.req();
            ctx.push(Out::Store {
                req,
                op: StoreOp::Load {
                    key: key.clone(),
                    token,
                },
            });
            let act = Act {
                id: self.next_act,
                key: key.clone(),
                shard: env.shard,
                token,
                phase: Phase::Loading { req },
                mailbox: VecDeque::new(),
                draining: false,
            };
            self.next_act += 1;
            self.acts.insert(key.clone(), act);
        }
        if let Some(act) = self.acts.get_mut(&key) {
            act.mailbox.push_back(env);
        }
        self.pump(&key, ctx, gate);
    }

    /// Starts the next handler of `key`'s activation if it is idle; stops it if it is
    /// draining and has nothing left. Whether it stopped.
    fn pump(&mut self, key: &str, ctx: &mut Ctx, gate: Gate<'_>) -> bool {
        let Some(act) = self.acts.get_mut(key) else {
            return false;
        };
        for _ in 0..=act.mailbox.len() {
            let Phase::Ready { counter } = act.phase else {
                return false;
            };
            if act.mailbox.pop_front().is_none() {
                break;
            }
            if !gate(act.shard, act.token) {
                ctx.count(Counter::Fenced);
                continue;
            }
            ctx.count(Counter::Handled);
            ctx.push(Out::Started {
                key: act.key.clone(),
                act: act.id,
            });
            act.phase = Phase::Working { counter };
            let work = self.rng.range(self.work_ms.0, self.work_ms.1) * self.slow;
            ctx.push(Out::Timer {
                after: Duration::from_millis(work),
                timer: Timer::Work(act.id),
            });
            return false;
        }
        let stop =
            act.draining && act.mailbox.is_empty() && matches!(act.phase, Phase::Ready { .. });
        if stop {
            self.acts.remove(key);
        }
        stop
    }

    /// The handler of activation `id` finished its work: its save goes to the store.
    pub(crate) fn work_done(&mut self, id: u64, ctx: &mut Ctx) {
        let req = self.next_req;
        let act = self
            .acts
            .values_mut()
            .chain(self.zombies.iter_mut())
            .find(|a| a.id == id);
        let Some(act) = act else { return };
        let Phase::Working { counter } = act.phase else {
            return;
        };
        self.next_req += 1;
        let value = counter + 1;
        act.phase = Phase::Saving { req, value };
        ctx.push(Out::Ended {
            key: act.key.clone(),
            act: act.id,
        });
        ctx.push(Out::Store {
            req,
            op: StoreOp::Save {
                key: act.key.clone(),
                token: act.token,
                value,
            },
        });
    }

    /// The store answered request `req`. Whether an activation stopped.
    pub(crate) fn on_store(
        &mut self,
        req: u64,
        reply: StoreReply,
        ctx: &mut Ctx,
        gate: Gate<'_>,
    ) -> bool {
        let waits = |a: &Act| matches!(a.phase, Phase::Loading { req: r } | Phase::Saving { req: r, .. } if r == req);
        if let Some(i) = self.zombies.iter().position(waits) {
            let zombie = self.zombies.remove(i);
            if let (Phase::Saving { value, .. }, StoreReply::Saved(Ok(()))) = (zombie.phase, reply)
            {
                ctx.push(Out::Acked {
                    key: zombie.key,
                    value,
                    req,
                });
            }
            return true;
        }
        let Some(key) = self.acts.values().find(|a| waits(a)).map(|a| a.key.clone()) else {
            return false;
        };
        let Some(act) = self.acts.get_mut(&key) else {
            return false;
        };
        match (act.phase, reply) {
            (Phase::Loading { .. }, StoreReply::Loaded(Ok(counter))) => {
                act.phase = Phase::Ready { counter };
            }
            (Phase::Saving { value, .. }, StoreReply::Saved(Ok(()))) => {
                ctx.push(Out::Acked {
                    key: key.clone(),
                    value,
                    req,
                });
                act.phase = Phase::Ready { counter: value };
            }
            (_, refused) => {
                ctx.count(match refused {
                    StoreReply::Loaded(_) => Counter::StaleLoad,
                    StoreReply::Saved(_) => Counter::StaleSave,
                });
                let shard = act.shard;
                ctx.note(format!(
                    "activation of {key} (shard {shard}) is stale: the store refused its token"
                ));
                if let Some(act) = self.acts.remove(&key) {
                    Self::drop_mailbox(act.mailbox, ctx);
                }
                return true;
            }
        }
        self.pump(&key, ctx, gate)
    }

    /// The shard is draining: its activations stop once their mailboxes are handled.
    pub(crate) fn drain(&mut self, shard: u32, ctx: &mut Ctx, gate: Gate<'_>) {
        let keys = self.keys_of(shard);
        for key in keys {
            if let Some(act) = self.acts.get_mut(&key) {
                act.draining = true;
            }
            self.pump(&key, ctx, gate);
        }
    }

    /// The shard is hosted here again: its activations that did not stop yet go on.
    pub(crate) fn resume(&mut self, shard: u32) {
        for act in self.acts.values_mut().filter(|a| a.shard == shard) {
            act.draining = false;
        }
    }

    /// The shard is lost: its activations handle nothing more, now.
    pub(crate) fn fence(&mut self, shard: u32, ctx: &mut Ctx) {
        for key in self.keys_of(shard) {
            if let Some(act) = self.acts.remove(&key) {
                self.retire(act, ctx);
            }
        }
    }

    /// Drops `act`'s mailbox; keeps it as a zombie while a handler or a load is under way.
    fn retire(&mut self, mut act: Act, ctx: &mut Ctx) {
        Self::drop_mailbox(std::mem::take(&mut act.mailbox), ctx);
        if !matches!(act.phase, Phase::Ready { .. }) {
            self.zombies.push(act);
        }
    }

    fn drop_mailbox(mailbox: VecDeque<Envelope>, ctx: &mut Ctx) {
        for _ in mailbox {
            ctx.count(Counter::Dropped);
        }
    }

    fn keys_of(&self, shard: u32) -> Vec<String> {
        self.acts
            .values()
            .filter(|a| a.shard == shard)
            .map(|a| a.key.clone())
            .collect()
    }

    /// The shard's activations still running here (zombies included).
    pub(crate) fn active(&self, shard: u32) -> usize {
        self.acts.values().filter(|a| a.shard == shard).count()
            + self.zombies.iter().filter(|a| a.shard == shard).count()
    }

    /// Whether no activation runs here.
    pub(crate) fn is_empty(&self) -> bool {
        self.acts.is_empty() && self.zombies.is_empty()
    }

    fn req(&mut self) -> u64 {
        self.next_req += 1;
        self.next_req - 1
    }
}
