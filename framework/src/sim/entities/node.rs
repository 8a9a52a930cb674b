//! A node, as the entity shell would run it around the real core: its lease, its view of
//! etcd, its per-shard states stepped by [`decide`](crate::core::shard::host::decide), the
//! fence on its own clock, routing, and the controller when it leads.
//!
//! - **Lease**: granted, then renewed every tick ([`Config::tick`], TTL / 3, as the etcd
//!   session renews); a confirmed renewal
//!   moves `alive_until` to the renewal's *sending* time plus the TTL (etcd counts from its
//!   receipt, later). A renewal that times out while the lease is in doubt makes it
//!   *unconfirmed* (only the broken [`Rule::MayStart`] cares). etcd saying the lease is gone
//!   loses it: every shard is fenced and forgotten, the leadership dropped, a new lease
//!   granted and the node registered again.
//! - **Shards**: on every change the watch brings, every answer, every activation stopped and
//!   every tick, each shard's next step is `decide(me, epoch, local, assignee, owner,
//!   active)` from the view, carried out as the module docs of
//!   [`core::shard::host`](crate::core::shard::host) say: `Acquire` is a create-if-absent
//!   transaction; `Release` and `ReleaseStale` delete the key only if its create revision
//!   is the token (never another owner's key); `Lost` fences the activations at once. A
//!   leaving node takes no shard (it decides as if an idle shard were assigned to nobody);
//!   its entry says it is leaving, so the controller moves its shards, which it then drains
//!   and releases, and it exits once it holds none.
//! - **Fence**: a handler starts only if the shard is owned or draining under its
//!   activation's token and the rule ([`Rule`]) allows it on the node's clock.
//! - **Routing**: a message for a shard owned here goes to its activation; for a shard
//!   taken, drained or released here, or assigned here but not taken yet, it waits (at most
//!   [`Config::max_wait`]); otherwise it is forwarded to the assignee the view shows (at
//!   most [`Config::max_hops`] times), stamped with the view's assignment version. A
//!   message stamped with a newer version than the view's waits for the view instead
//!   ([`Config::hold_newer`]): forwarding it by the older view bounced it between a node
//!   that had seen a handoff and one that had not, until the hop limit dropped it.
//! - **Leadership**: a registered node campaigns when its view shows no leader, or its own
//!   key while it does not lead; the leader plans at the next tick whenever its view
//!   changed ([`leader`](super::leader)).
//!
//! ## Rules of the shell the simulation found
//!
//! Two of the shell's own mistakes failed convergence (property 3) before the first two
//! rules; neither was in the core, and neither broke property 1 or 2:
//!
//! - Only the answer to the latest `Acquire` of a shard ends its `Acquiring` state. `decide`
//!   compares an ownership's node and lease, not its token: a late refusal of an earlier
//!   attempt (sent under the previous lease) made the shard idle while the latest attempt
//!   succeeded; the node deleted that key as stale, took the shard again, and the first
//!   success's late answer left it hosting under token 126 while its key was token 132
//!   (seed 1427).
//! - A change older than the leadership (the watch catching up after a partition brought
//!   the previous leader's key) does not depose the leader; a node that lost track of its
//!   leadership campaigns again for its own key (seed 958: no leader planned for good).
//! - A stale ownership's token is deleted once: until the watch catches up, the view still
//!   shows it, and deleting it again at every answer only adds requests.

use std::collections::{BTreeMap, VecDeque};

use crate::core::fence::{may_host, may_start, Lease};
use crate::core::shard::host::{decide, Local, Step};
use crate::core::shard::{Assignment, ShardOwner};
use crate::core::Time;
use crate::id::NodeId;

use super::clock::Clock;
use super::config::{Config, Rule};
use super::effects::{Counter, Ctx, Envelope, Out, Timer};
use super::etcd::{Change, Key, LeaseId, Op, Reply, Value};
use super::host::Host;
use super::leader::next_assignment;
use super::store::StoreReply;
use super::view::View;

/// What an etcd request was for.
#[derive(Debug, Clone)]
enum Purpose {
    Watch,
    Grant,
    KeepAlive(LeaseId),
    Register(LeaseId),
    Campaign(LeaseId),
    Assign(Assignment),
    Acquire { shard: u32, epoch: u64 },
    Release { shard: u32, token: u64 },
    ReleaseStale(u32),
}

/// See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Node {
    /// The node's id (kept by a restarted node).
    pub(crate) id: NodeId,
    /// Its clock.
    pub(crate) clock: Clock,
    cfg: Config,
    /// What it knows of its lease (epoch 0 and lost before the first grant).
    pub(crate) lease: Lease,
    granting: bool,
    /// Its entry is written under the current lease.
    pub(crate) registered: bool,
    registering: bool,
    /// Since when it is leaving, on its clock.
    pub(crate) leaving: Option<Time>,
    /// Its view of etcd.
    pub(crate) view: View,
    /// Its state per shard (changed only by [`Node::set`]).
    pub(crate) shards: Vec<Local>,
    /// The shards owned or draining here, as a bit set.
    held: u64,
    /// Whether the shards the node may handle may have grown (a shard taken or resumed, the
    /// lease renewed, replaced or unconfirmed) since the checks last looked: without that
    /// they can only shrink. Cleared by the checks.
    pub(crate) widened: bool,
    /// The stale ownership deleted (or being deleted) per shard, by token: a token tried is
    /// not tried again (its key is gone, or is not that token any more), however long the
    /// watch takes to say so.
    stale: BTreeMap<u32, u64>,
    /// The request taking each shard being acquired: only its answer (or timeout) ends the
    /// `Acquiring` state (an older request's late answer must not).
    acquiring: BTreeMap<u32, u64>,
    /// Messages waiting for their shard.
    pending: BTreeMap<u32, VecDeque<Envelope>>,
    /// Its activations.
    pub(crate) host: Host,
    /// Its leadership's token, while it leads.
    pub(crate) leading: Option<u64>,
    campaigning: bool,
    assigning: bool,
    /// The view changed since the leader last planned (planning again from the same view
    /// gives the same answer).
    plan_due: bool,
    /// Requests waiting for etcd, and when they were sent (node clock).
    reqs: BTreeMap<u64, (Purpose, Time)>,
    next_req: u64,
}

/// Whether a handler of `shard` under ownership `token` (any token: `None`) may start at
/// `now` on a node in `shards` with `lease`, by `cfg.rule`.
fn allowed(
    shards: &[Local],
    lease: &Lease,
    cfg: &Config,
    now: Time,
    shard: u32,
    token: Option<u64>,
) -> bool {
    match shards.get(shard as usize) {
        Some(Local::Owned { token: t, epoch } | Local::Draining { token: t, epoch })
            if token.is_none_or(|x| x == *t) =>
        {
            match cfg.rule {
                Rule::MayHost => may_host(lease, *epoch, now, cfg.margin),
                Rule::MayStart => may_start(lease, *epoch, now),
            }
        }
        _ => false,
    }
}

impl Node {
    /// A node `id` not started yet, with `clock`; `seed` seeds its handlers' durations.
    pub(crate) fn new(id: NodeId, clock: Clock, cfg: Config, seed: u64) -> Self {
        Node {
            id,
            clock,
            lease: Lease {
                epoch: 0,
                lost: true,
                alive_until: Time::ZERO,
                unconfirmed: false,
            },
            granting: false,
            registered: false,
            registering: false,
            leaving: None,
            view: View::new(cfg.shards),
            shards: vec![Local::Idle; cfg.shards as usize],
            held: 0,
            widened: false,
            stale: BTreeMap::new(),
            acquiring: BTreeMap::new(),
            pending: BTreeMap::new(),
            host: Host::new(seed, cfg.work_ms),
            leading: None,
            campaigning: false,
            assigning: false,
            plan_due: true,
            reqs: BTreeMap::new(),
            next_req: 1,
            cfg,
        }
    }

    /// Whether a message for `shard` may be handled here at `now` (node clock): the
    /// property the checks watch.
    pub(crate) fn may_handle(&self, shard: u32, now: Time) -> bool {
        allowed(&self.shards, &self.lease, &self.cfg, now, shard, None)
    }

    /// The shards the node may handle at `now` (node clock), as a bit set.
    pub(crate) fn able(&self, now: Time) -> u64 {
        let mut able = 0;
        for shard in 0..self.cfg.shards {
            if self.held & 1 << shard != 0 && self.may_handle(shard, now) {
                able |= 1 << shard;
            }
        }
        able
    }

    /// The shards the node holds as owned or draining (whatever its fence says), as a bit
    /// set.
    pub(crate) fn holding(&self) -> u64 {
        self.held
    }

    /// Sets `shard`'s state.
    fn set(&mut self, shard: u32, local: Local) {
        self.shards[shard as usize] = local;
        match local {
            Local::Owned { .. } | Local::Draining { .. } => {
                self.held |= 1 << shard;
                self.widened = true;
            }
            _ => self.held &= !(1 << shard),
        }
    }

    /// Starts the process: its watch, its lease, its timers.
    pub(crate) fn start(&mut self, ctx: &mut Ctx) {
        self.request(Op::Watch, Purpose::Watch, ctx);
        self.grant(ctx);
        ctx.push(Out::Timer {
            after: self.cfg.tick,
            timer: Timer::Tick,
        });
    }

    /// Sends `op`, timed out after [`Config::request_timeout`]; its request number.
    fn request(&mut self, op: Op, purpose: Purpose, ctx: &mut Ctx) -> u64 {
        let req = self.send(op, purpose, ctx);
        ctx.push(Out::Timer {
            after: self.cfg.request_timeout,
            timer: Timer::Timeout(req),
        });
        req
    }

    /// Sends `op` without a timer; its request number.
    fn send(&mut self, op: Op, purpose: Purpose, ctx: &mut Ctx) -> u64 {
        let req = self.next_req;
        self.next_req += 1;
        self.reqs.insert(req, (purpose, ctx.now));
        ctx.push(Out::Etcd { req, op });
        req
    }

    fn grant(&mut self, ctx: &mut Ctx) {
        self.granting = true;
        self.request(Op::Grant, Purpose::Grant, ctx);
    }

    fn register(&mut self, ctx: &mut Ctx) {
        let lease = self.lease.epoch;
        self.registering = true;
        let op = Op::Register {
            lease,
            node: self.id.clone(),
            draining: self.leaving.is_some(),
        };
        self.request(op, Purpose::Register(lease), ctx);
    }

    /// The node starts leaving: it marks its entry (the controller moves its shards), takes
    /// no shard, and exits once every shard is released (or after
    /// [`Config::leave_deadline`]).
    pub(crate) fn leave(&mut self, ctx: &mut Ctx) {
        if self.leaving.is_some() {
            return;
        }
        self.leaving = Some(ctx.now);
        ctx.note("leaves: drains its shards".to_owned());
        if !self.lease.lost {
            self.register(ctx);
        }
        self.reconcile(ctx);
    }

    /// A timer fired.
    pub(crate) fn on_timer(&mut self, timer: Timer, ctx: &mut Ctx) {
        match timer {
            Timer::Tick => {
                self.keep_alive(ctx);
                self.tick(ctx);
                ctx.push(Out::Timer {
                    after: self.cfg.tick,
                    timer: Timer::Tick,
                });
            }
            Timer::Timeout(req) => {
                if let Some((purpose, _)) = self.reqs.remove(&req) {
                    self.timed_out(req, purpose, ctx);
                }
            }
            Timer::Register => {
                if !self.lease.lost && !self.registered && !self.registering {
                    self.register(ctx);
                }
            }
            Timer::Work(act) => self.host.work_done(act, ctx),
        }
    }

    /// Renews the lease. A renewal still unanswered at the next one timed out (renewals
    /// have no timer of their own).
    fn keep_alive(&mut self, ctx: &mut Ctx) {
        let late: Vec<u64> = self
            .reqs
            .iter()
            .filter(|(_, (p, _))| matches!(p, Purpose::KeepAlive(_)))
            .map(|(req, _)| *req)
            .collect();
        for req in late {
            if let Some((purpose, _)) = self.reqs.remove(&req) {
                self.timed_out(req, purpose, ctx);
            }
        }
        if !self.lease.lost {
            let lease = self.lease.epoch;
            self.send(Op::KeepAlive(lease), Purpose::KeepAlive(lease), ctx);
        }
    }

    /// Goes through the shards, campaigns or plans, and exits once a leave is done.
    fn tick(&mut self, ctx: &mut Ctx) {
        if self.lease.lost && !self.granting {
            self.grant(ctx);
        }
        self.reconcile(ctx);
        // No leader, or this node's key without the node leading (it lost track: asking
        // again gives the key's token if it is bound to the node's lease).
        let leader = self.view.leader.as_ref();
        let may_campaign = self.registered
            && self.leaving.is_none()
            && self.view.synced
            && leader.is_none_or(|(id, _)| *id == self.id)
            && self.leading.is_none()
            && !self.campaigning;
        if may_campaign {
            self.campaigning = true;
            let lease = self.lease.epoch;
            let op = Op::Campaign {
                lease,
                node: self.id.clone(),
            };
            self.request(op, Purpose::Campaign(lease), ctx);
        }
        if let Some(token) = self.leading.filter(|_| !self.assigning && self.plan_due) {
            self.plan_due = false;
            if let Some(assignment) = next_assignment(&self.view, &self.cfg) {
                self.assigning = true;
                let op = Op::Assign {
                    token,
                    assignment: assignment.clone(),
                };
                self.request(op, Purpose::Assign(assignment), ctx);
            }
        }
        if let Some(since) = self.leaving {
            let done = self.shards.iter().all(|l| *l == Local::Idle)
                && self.host.is_empty()
                && self.pending.is_empty();
            if done || ctx.now >= since + self.cfg.leave_deadline {
                ctx.note(format!("exits (drained: {done})"));
                let lease = (!self.lease.lost).then_some(self.lease.epoch);
                ctx.push(Out::Exit(lease));
            }
        }
    }

    fn timed_out(&mut self, req: u64, purpose: Purpose, ctx: &mut Ctx) {
        match purpose {
            Purpose::Watch => {
                if !self.view.synced {
                    self.request(Op::Watch, Purpose::Watch, ctx);
                }
            }
            Purpose::Grant => self.granting = false,
            Purpose::KeepAlive(lease) => {
                if lease == self.lease.epoch && ctx.now >= self.lease.alive_until {
                    self.lease.unconfirmed = true;
                    self.widened = true;
                }
            }
            Purpose::Register(_) => {
                self.registering = false;
                self.retry_register(ctx);
            }
            Purpose::Campaign(_) => self.campaigning = false,
            Purpose::Assign(_) => {
                self.assigning = false;
                self.plan_due = true;
            }
            Purpose::Acquire { shard, .. } => {
                if self.acquiring.get(&shard) == Some(&req) {
                    self.acquiring.remove(&shard);
                    self.set(shard, Local::Idle);
                }
            }
            Purpose::Release { shard, token } => {
                if self.shards[shard as usize] == (Local::Releasing { token }) {
                    self.set(shard, Local::Idle);
                }
            }
            Purpose::ReleaseStale(shard) => {
                // No answer: try again.
                self.stale.remove(&shard);
            }
        }
    }

    fn retry_register(&mut self, ctx: &mut Ctx) {
        ctx.push(Out::Timer {
            after: self.cfg.tick,
            timer: Timer::Register,
        });
    }

    /// etcd answered request `req`.
    pub(crate) fn on_etcd(&mut self, req: u64, reply: Reply, ctx: &mut Ctx) {
        let Some((purpose, sent)) = self.reqs.remove(&req) else {
            return;
        };
        match (purpose, reply) {
            (Purpose::Grant, Reply::Granted(lease)) => {
                self.granting = false;
                self.widened = true;
                self.lease = Lease {
                    epoch: lease,
                    lost: false,
                    alive_until: sent + self.cfg.ttl,
                    unconfirmed: false,
                };
                self.registered = false;
                ctx.note(format!("holds lease {lease}"));
                self.register(ctx);
            }
            (Purpose::KeepAlive(lease), Reply::Alive(alive)) => {
                if lease != self.lease.epoch || self.lease.lost {
                    return;
                }
                if alive {
                    self.lease.alive_until = self.lease.alive_until.max(sent + self.cfg.ttl);
                    self.widened = true;
                    self.lease.unconfirmed = false;
                } else {
                    self.lease_lost(ctx);
                }
            }
            (Purpose::Register(lease), Reply::Done(done)) => {
                if lease != self.lease.epoch || self.lease.lost {
                    return;
                }
                self.registering = false;
                if done {
                    self.registered = true;
                    self.reconcile(ctx);
                } else {
                    self.retry_register(ctx);
                }
            }
            (Purpose::Campaign(lease), Reply::Won(won)) => {
                self.campaigning = false;
                if let Some(token) = won.filter(|_| lease == self.lease.epoch && !self.lease.lost) {
                    self.leading = Some(token);
                    self.plan_due = true;
                    ctx.count(Counter::Leadership);
                    ctx.note(format!("leads (token {token})"));
                }
            }
            (Purpose::Assign(assignment), Reply::Done(done)) => {
                self.assigning = false;
                self.plan_due = true;
                if done {
                    ctx.count(Counter::Assigned);
                    self.view.assigned(&assignment);
                    self.reconcile(ctx);
                }
            }
            (Purpose::Acquire { shard, epoch }, Reply::Acquired(token)) => {
                let current = self.acquiring.get(&shard) == Some(&req);
                if current {
                    self.acquiring.remove(&shard);
                }
                match token {
                    Some(token) => {
                        let owner = ShardOwner {
                            shard,
                            node: self.id.clone(),
                            epoch,
                        };
                        self.view.acquired(owner, token);
                        if current && epoch == self.lease.epoch && !self.lease.lost {
                            self.set(shard, Local::Owned { token, epoch });
                            ctx.count(Counter::Acquired);
                            ctx.note(format!("owns shard {shard} (token {token})"));
                        }
                    }
                    None => {
                        if current {
                            self.set(shard, Local::Idle);
                        }
                    }
                }
                self.reconcile(ctx);
            }
            (Purpose::Release { shard, token }, Reply::Released { deleted, rev }) => {
                if deleted {
                    self.view.released(shard, rev);
                    ctx.count(Counter::Released);
                }
                if self.shards[shard as usize] == (Local::Releasing { token }) {
                    self.set(shard, Local::Idle);
                    ctx.note(format!(
                        "released shard {shard} (token {token}, deleted: {deleted})"
                    ));
                }
                self.reconcile(ctx);
            }
            (Purpose::ReleaseStale(shard), Reply::Released { deleted, rev }) => {
                if deleted {
                    self.view.released(shard, rev);
                }
                self.reconcile(ctx);
            }
            _ => {}
        }
    }

    /// etcd says the lease is gone: everything it held is fenced and forgotten.
    fn lease_lost(&mut self, ctx: &mut Ctx) {
        let lease = self.lease.epoch;
        ctx.count(Counter::LeaseLost);
        ctx.note(format!("lost lease {lease}"));
        self.lease.lost = true;
        self.registered = false;
        self.registering = false;
        self.leading = None;
        self.campaigning = false;
        for shard in 0..self.cfg.shards {
            match self.shards[shard as usize] {
                Local::Owned { .. } | Local::Draining { .. } => {
                    self.host.fence(shard, ctx);
                    ctx.count(Counter::Lost);
                }
                Local::Idle => continue,
                Local::Acquiring | Local::Releasing { .. } => {}
            }
            self.set(shard, Local::Idle);
        }
        self.stale.clear();
        self.acquiring.clear();
        self.grant(ctx);
    }

    /// The watch's first item: every key as it is.
    pub(crate) fn on_snapshot(&mut self, snapshot: &[Change], ctx: &mut Ctx) {
        self.view.reset(snapshot);
        self.plan_due = true;
        self.reconcile(ctx);
    }

    /// The watch's next change.
    pub(crate) fn on_change(&mut self, change: &Change, ctx: &mut Ctx) {
        if !self.view.synced {
            return;
        }
        self.view.apply(change);
        self.plan_due = true;
        if let (Key::Leader, Some(token)) = (&change.key, self.leading) {
            // Changes older than the leadership (the watch can be late) say nothing of it.
            let deposed = change.rev > token
                && match &change.value {
                    Some(Value::Leader(_)) => change.create_rev != token,
                    _ => true,
                };
            if deposed {
                self.leading = None;
                ctx.note(format!("no longer leads (token {token})"));
            }
        }
        self.reconcile(ctx);
    }

    /// A message reached the node.
    pub(crate) fn on_message(&mut self, mut env: Envelope, ctx: &mut Ctx) {
        env.since = ctx.now;
        self.route(env, ctx);
    }

    /// The state store answered request `req`.
    pub(crate) fn on_store(&mut self, req: u64, reply: StoreReply, ctx: &mut Ctx) {
        let now = ctx.now;
        let (shards, lease, cfg) = (&self.shards, &self.lease, &self.cfg);
        let gate = |s: u32, t: u64| allowed(shards, lease, cfg, now, s, Some(t));
        if self.host.on_store(req, reply, ctx, &gate) {
            self.reconcile(ctx);
        }
    }

    fn route(&mut self, env: Envelope, ctx: &mut Ctx) {
        let shard = env.shard;
        match self.shards[shard as usize] {
            Local::Owned { token, .. } => {
                let now = ctx.now;
                let (shards, lease, cfg) = (&self.shards, &self.lease, &self.cfg);
                let gate = |s: u32, t: u64| allowed(shards, lease, cfg, now, s, Some(t));
                self.host.deliver(ctx, env, token, &gate);
            }
            Local::Idle => match self.view.assignee(shard) {
                // Routed here by a newer assignment than this node has seen: forwarding it by
                // the older one would send it back; it waits for the view to catch up.
                Some(_) if self.cfg.hold_newer && env.version > self.view.version() => {
                    self.pending.entry(shard).or_default().push_back(env)
                }
                Some(to) if *to != self.id => {
                    if env.hops >= self.cfg.max_hops {
                        ctx.count(Counter::HopLimit);
                        return;
                    }
                    ctx.count(Counter::Forwarded);
                    let to = to.clone();
                    ctx.push(Out::Forward {
                        to,
                        env: Envelope {
                            hops: env.hops + 1,
                            version: self.view.version(),
                            ..env
                        },
                    });
                }
                _ => self.pending.entry(shard).or_default().push_back(env),
            },
            _ => self.pending.entry(shard).or_default().push_back(env),
        }
    }

    /// Routes the waiting messages again; drops those that waited too long.
    fn route_pending(&mut self, ctx: &mut Ctx) {
        if self.pending.is_empty() {
            return;
        }
        for (_, queue) in std::mem::take(&mut self.pending) {
            for env in queue {
                if ctx.now >= env.since + self.cfg.max_wait {
                    ctx.count(Counter::Dropped);
                } else {
                    self.route(env, ctx);
                }
            }
        }
    }

    /// Takes every shard's next steps, then routes the waiting messages.
    fn reconcile(&mut self, ctx: &mut Ctx) {
        if self.view.synced && self.registered && !self.lease.lost {
            for shard in 0..self.cfg.shards {
                // A step can make the next possible at once (a drain with nothing running
                // releases); three cover every chain.
                for _ in 0..3 {
                    let local = self.shards[shard as usize];
                    // A leaving node takes no shard; it gives up its own as the controller
                    // moves them.
                    let assigned = match local {
                        Local::Idle if self.leaving.is_some() => None,
                        _ => self.view.assignee(shard),
                    };
                    // Only a draining shard's step depends on its activations.
                    let active = match local {
                        Local::Draining { .. } => self.host.active(shard),
                        _ => 0,
                    };
                    let owner = self.view.owner(shard);
                    let step = decide(&self.id, self.lease.epoch, local, assigned, owner, active);
                    if !self.carry_out(shard, step, ctx) {
                        break;
                    }
                }
            }
        }
        self.route_pending(ctx);
    }

    /// Carries out `step` for `shard`; whether deciding again may give another step.
    fn carry_out(&mut self, shard: u32, step: Step, ctx: &mut Ctx) -> bool {
        let s = shard as usize;
        match (step, self.shards[s]) {
            (Step::Acquire, _) => {
                self.set(shard, Local::Acquiring);
                let epoch = self.lease.epoch;
                let owner = ShardOwner {
                    shard,
                    node: self.id.clone(),
                    epoch,
                };
                let op = Op::Acquire {
                    lease: epoch,
                    owner,
                };
                let req = self.request(op, Purpose::Acquire { shard, epoch }, ctx);
                self.acquiring.insert(shard, req);
                false
            }
            (Step::Drain, Local::Owned { token, epoch }) => {
                self.set(shard, Local::Draining { token, epoch });
                ctx.count(Counter::Drained);
                ctx.note(format!("drains shard {shard} (token {token})"));
                let now = ctx.now;
                let (shards, lease, cfg) = (&self.shards, &self.lease, &self.cfg);
                let gate = |s: u32, t: u64| allowed(shards, lease, cfg, now, s, Some(t));
                self.host.drain(shard, ctx, &gate);
                true
            }
            (Step::Resume, Local::Draining { token, epoch }) => {
                self.set(shard, Local::Owned { token, epoch });
                ctx.note(format!("hosts shard {shard} again (token {token})"));
                self.host.resume(shard);
                false
            }
            (Step::Release { token }, _) => {
                self.set(shard, Local::Releasing { token });
                self.request(
                    Op::Release { shard, token },
                    Purpose::Release { shard, token },
                    ctx,
                );
                false
            }
            (Step::ReleaseStale, _) => {
                let token = self.view.token(shard);
                if let Some(token) = token.filter(|t| self.stale.get(&shard) != Some(t)) {
                    self.stale.insert(shard, token);
                    ctx.note(format!(
                        "deletes its stale ownership of shard {shard} (token {token})"
                    ));
                    let op = Op::Release { shard, token };
                    self.request(op, Purpose::ReleaseStale(shard), ctx);
                }
                false
            }
            (Step::Lost, local) => {
                ctx.count(Counter::Lost);
                ctx.note(format!(
                    "lost shard {shard} ({local:?}); owner seen: {:?}",
                    self.view.owner(shard)
                ));
                self.host.fence(shard, ctx);
                self.set(shard, Local::Idle);
                true
            }
            _ => false,
        }
    }
}
