//! Groups: many instances of one actor type across nodes, addressed as one.
//!
//! An instance joins a named group with [`Node::join_group`](crate::Node::join_group); it
//! leaves explicitly, when it stops, or when its node leaves or dies. Every
//! [`GroupRef`] follows the group's membership live through discovery and spreads messages
//! over the instances with its [`Balancer`]:
//!
//! - [`GroupRef::ask`] goes to one instance and is never retried behind the caller's back;
//! - [`GroupRef::ask_idempotent`] (messages marked [`Idempotent`]) is retried on another
//!   instance when an instance fails, within the one deadline of the ask;
//! - [`GroupRef::tell`] goes to one instance, [`GroupRef::broadcast`] to all.
//!
//! Each caller tracks its asks in flight per instance (what [`LeastOutstanding`] and
//! [`PowerOfTwo`] balance on), caps them ([`GroupConfig::max_in_flight`]), and takes an
//! instance whose asks keep failing out of rotation for a while ([`Ejection`]), then lets one
//! ask probe it. When every instance is at its cap, an ask waits for room until its deadline
//! ([`Saturation::Wait`], the default) or fails at once ([`Saturation::Fail`]), in both cases
//! with [`Error::Overloaded`].
//!
//! [`LeastOutstanding`]: crate::balance::LeastOutstanding
//! [`PowerOfTwo`]: crate::balance::PowerOfTwo

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::actor_ref::ActorRef;
use crate::core::balance::{Balancer, Instance, RoundRobin};
use crate::discovery::{GroupEvent, GroupMember};
use crate::error::{Error, Result};
use crate::id::{ActorId, NodeId};
use crate::message::{Accepts, RemoteActor, RemoteMessage, WireValue};
use crate::runtime::NodeShared;

pub use crate::core::health::Ejection;
use crate::core::health::Health;

/// A message that is safe to handle more than once: a [`GroupRef`] may retry it on another
/// instance when the first one fails ([`GroupRef::ask_idempotent`]).
pub trait Idempotent: RemoteMessage + Clone
where
    Self::Result: WireValue,
{
}

/// What an ask does when every instance is at its cap of asks in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Saturation {
    /// Wait for room until the ask's deadline, then fail with [`Error::Overloaded`].
    #[default]
    Wait,
    /// Fail at once with [`Error::Overloaded`].
    Fail,
}

/// How long [`GroupRef::wait_for_instances`] may spend, after its timeout, reading why the
/// group is short.
const STATUS_READ: Duration = Duration::from_secs(1);

/// How a [`GroupRef`] balances, caps, ejects and retries.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    balancer: Arc<dyn Balancer>,
    max_in_flight: usize,
    saturation: Saturation,
    ejection: Ejection,
    retries: u32,
    retry_on_panic: u32,
    attempt_timeout: Option<Duration>,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            balancer: Arc::new(RoundRobin::new()),
            max_in_flight: 1024,
            saturation: Saturation::Wait,
            ejection: Ejection::default(),
            retries: 2,
            retry_on_panic: 0,
            attempt_timeout: None,
        }
    }
}

impl GroupConfig {
    /// The defaults: round robin, 1024 asks in flight per instance, wait when saturated,
    /// eject after 5 failures in a row, 2 retries of idempotent asks.
    pub fn new() -> Self {
        Self::default()
    }

    /// The balancer (default [`RoundRobin`]).
    pub fn balancer(mut self, balancer: impl Balancer) -> Self {
        self.balancer = Arc::new(balancer);
        self
    }

    /// The cap of this caller's asks in flight to one instance (default 1024).
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.max(1);
        self
    }

    /// What an ask does when every instance is at its cap (default [`Saturation::Wait`]).
    pub fn saturation(mut self, saturation: Saturation) -> Self {
        self.saturation = saturation;
        self
    }

    /// When failing instances are ejected, and for how long.
    pub fn ejection(mut self, ejection: Ejection) -> Self {
        self.ejection = ejection;
        self
    }

    /// How many other instances an idempotent ask may be retried on (default 2).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// How many other instances an idempotent ask whose handler panicked may be retried on
    /// (default 0, and never more than [`GroupConfig::retries`] in all).
    ///
    /// A message that crashes its handler usually crashes every instance it reaches (a
    /// "query of death"), so by default its caller gets [`Error::HandlerPanicked`] at once
    /// and no other instance sees it. Raise this only for handlers that can panic for
    /// reasons of their instance (a corrupted cache, say), not of the message.
    pub fn retry_on_panic(mut self, retries: u32) -> Self {
        self.retry_on_panic = retries;
        self
    }

    /// The longest one attempt of an idempotent ask may take (default: all the time left),
    /// so that a frozen instance leaves time to retry on another.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }
}

/// The instances of a group, addressed as one. Cheap to clone; clones share the view.
pub struct GroupRef<A: RemoteActor> {
    shared: Arc<GroupShared<A>>,
}

impl<A: RemoteActor> Clone for GroupRef<A> {
    fn clone(&self) -> Self {
        GroupRef {
            shared: self.shared.clone(),
        }
    }
}

impl<A: RemoteActor> std::fmt::Debug for GroupRef<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupRef")
            .field("group", &self.shared.name)
            .field("type", &A::NAME)
            .field("balancer", &self.shared.config.balancer.name())
            .field("instances", &self.shared.lock().len())
            .finish()
    }
}

struct GroupShared<A: RemoteActor> {
    name: String,
    node: Arc<NodeShared>,
    config: GroupConfig,
    slots: Mutex<Vec<Slot<A>>>,
    changed: Notify,
    watcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl<A: RemoteActor> Drop for GroupShared<A> {
    fn drop(&mut self) {
        if let Some(task) = self.watcher.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

struct Slot<A: RemoteActor> {
    member: GroupMember,
    target: ActorRef<A>,
    in_flight: usize,
    health: Health,
}

/// Why no instance could be picked.
enum NoPick {
    Empty,
    Saturated,
    Excluded,
}

/// An ask in flight to one instance: releases its slot when done.
struct InFlight<'a, A: RemoteActor> {
    group: &'a GroupShared<A>,
    node: NodeId,
    actor: ActorId,
    ok: Option<bool>,
}

impl<A: RemoteActor> Drop for InFlight<'_, A> {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut slots = self.group.lock();
        if let Some(slot) = slots
            .iter_mut()
            .find(|s| s.member.actor == self.actor && s.member.node == self.node)
        {
            slot.in_flight = slot.in_flight.saturating_sub(1);
            if let Some(ok) = self.ok {
                if slot.health.record(ok, now, &self.group.config.ejection) {
                    tracing::warn!(group = %self.group.name, node = %self.node, actor = %self.actor, "instance ejected after repeated failures");
                }
            }
        }
        drop(slots);
        self.group.changed.notify_waiters();
    }
}

/// Errors that say the instance (or its node) failed, not the caller or the message.
///
/// A handler panic is not one: it is blamed on the message (see
/// [`GroupConfig::retry_on_panic`]), so it neither ejects the instance nor moves the
/// message on to another by default.
fn instance_failed(e: &Error) -> bool {
    matches!(
        e,
        Error::Timeout { .. }
            | Error::NodeUnreachable { .. }
            | Error::NodeDown { .. }
            | Error::ActorStopped { .. }
            | Error::ActorNotFound { .. }
            | Error::NodeFenced { .. }
    )
}

impl<A: RemoteActor> GroupShared<A> {
    fn lock(&self) -> MutexGuard<'_, Vec<Slot<A>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn apply(&self, event: GroupEvent) {
        match event {
            GroupEvent::Joined(member) => self.add(member),
            GroupEvent::Left(member) => {
                self.lock()
                    .retain(|s| !(s.member.node == member.node && s.member.actor == member.actor));
            }
        }
        self.changed.notify_waiters();
    }

    fn add(&self, member: GroupMember) {
        if member.actor_type != A::NAME {
            tracing::warn!(group = %self.name, found = %member.actor_type, expected = A::NAME, "group member of another actor type ignored");
            return;
        }
        let target = match ActorRef::resolve(&self.node, &member.node, member.addr, member.actor) {
            Ok(target) => target,
            Err(e) => {
                tracing::warn!(group = %self.name, error = %e, "group member could not be resolved");
                return;
            }
        };
        let mut slots = self.lock();
        slots.retain(|s| !(s.member.node == member.node && s.member.actor == member.actor));
        slots.push(Slot {
            member,
            target,
            in_flight: 0,
            health: Health::default(),
        });
    }

    /// Picks an instance and counts it in flight until the returned guard drops; `exclude`
    /// lists instances that already failed this ask. `count` is false for tells, which are
    /// not held back by the cap of asks in flight.
    fn pick(
        &self,
        key: Option<u64>,
        exclude: &[(NodeId, ActorId)],
        count: bool,
    ) -> std::result::Result<(ActorRef<A>, InFlight<'_, A>), NoPick> {
        let now = Instant::now();
        let mut slots = self.lock();
        if slots.is_empty() {
            return Err(NoPick::Empty);
        }
        let cap = self.config.max_in_flight;
        let excluded = |s: &Slot<A>| {
            exclude
                .iter()
                .any(|(n, a)| n == &s.member.node && *a == s.member.actor)
        };
        let view = |ignore_health: bool| -> Vec<Instance> {
            slots
                .iter()
                .map(|s| Instance {
                    node: s.member.node.clone(),
                    actor: s.member.actor,
                    weight: s.member.weight,
                    outstanding: s.in_flight,
                    available: !excluded(s)
                        && (!count || s.in_flight < cap)
                        && (ignore_health || s.health.available(now)),
                })
                .collect()
        };
        let mut instances = view(false);
        if !instances.iter().any(|i| i.available) {
            // Every instance that is not saturated is ejected: use them anyway rather than
            // fail (an ejection is a guess; a dead node is removed by discovery).
            instances = view(true);
        }
        let Some(index) = self
            .config
            .balancer
            .pick(&instances, key)
            .filter(|&i| instances.get(i).is_some_and(|x| x.available))
        else {
            let saturated = slots.iter().any(|s| !excluded(s) && s.in_flight >= cap);
            return Err(if saturated {
                NoPick::Saturated
            } else {
                NoPick::Excluded
            });
        };
        let slot = &mut slots[index];
        // Counted until the guard drops: at the reply for an ask, at once for a tell.
        slot.in_flight += 1;
        let guard = InFlight {
            group: self,
            node: slot.member.node.clone(),
            actor: slot.member.actor,
            ok: None,
        };
        Ok((slot.target.clone(), guard))
    }

    /// Picks, waiting for room until `deadline` when saturated and configured to wait.
    async fn pick_until(
        &self,
        key: Option<u64>,
        exclude: &[(NodeId, ActorId)],
        deadline: tokio::time::Instant,
    ) -> Result<(ActorRef<A>, InFlight<'_, A>)> {
        loop {
            let notified = self.changed.notified();
            match self.pick(key, exclude, true) {
                Ok(picked) => return Ok(picked),
                Err(NoPick::Empty) => {
                    return Err(Error::NoInstances {
                        group: self.name.clone(),
                    })
                }
                Err(NoPick::Excluded) => {
                    return Err(Error::NoInstances {
                        group: self.name.clone(),
                    })
                }
                Err(NoPick::Saturated) if self.config.saturation == Saturation::Fail => {
                    return Err(Error::Overloaded {
                        group: self.name.clone(),
                    })
                }
                Err(NoPick::Saturated) => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return Err(Error::Overloaded {
                            group: self.name.clone(),
                        });
                    }
                }
            }
        }
    }
}

/// A routing key for consistent hashing, from any hashable value.
fn key_of(key: &impl Hash) -> u64 {
    // SipHash with fixed keys: the same key gives the same number in every process.
    let mut hasher = std::hash::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

impl<A: RemoteActor> GroupRef<A> {
    pub(crate) async fn watch(
        node: Arc<NodeShared>,
        name: &str,
        config: GroupConfig,
    ) -> Result<Self> {
        let mut view = node
            .discovery()
            .watch_group(&node.info.cluster, name)
            .await?;
        let shared = Arc::new(GroupShared {
            name: name.to_owned(),
            node,
            config,
            slots: Mutex::new(Vec::new()),
            changed: Notify::new(),
            watcher: Mutex::new(None),
        });
        for member in view.members.drain(..) {
            shared.add(member);
        }
        let weak: Weak<GroupShared<A>> = Arc::downgrade(&shared);
        let mut events = view.events;
        let task = tokio::spawn(async move {
            while let Some((_revision, event)) = events.recv().await {
                let Some(group) = weak.upgrade() else { return };
                group.apply(event);
            }
        });
        *shared.watcher.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        Ok(GroupRef { shared })
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The instances this caller currently sees.
    pub fn instances(&self) -> Vec<ActorRef<A>> {
        self.shared
            .lock()
            .iter()
            .map(|s| s.target.clone())
            .collect()
    }

    /// Waits until at least `n` instances are seen, for at most `timeout`.
    ///
    /// On timeout the error ([`Error::GroupNotReady`]) says why as far as this node can tell:
    /// for a deployed group, its status (say, no live node can spawn its actor type); for
    /// another, that no spec deploys it and no instance joined it.
    pub async fn wait_for_instances(&self, n: usize, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            if self.shared.lock().len() >= n {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let group = &self.shared.name;
                // A bounded look, so that a slow discovery does not stretch the wait much.
                let status =
                    tokio::time::timeout(STATUS_READ, self.shared.node.group_status(group)).await;
                let reason = match status {
                    Ok(Ok(Some(status))) => status.to_string(),
                    Ok(Ok(None)) => format!(
                        "no spec deploys group `{group}` (Node::deploy) and no instance of it joined it (Node::join_group)"
                    ),
                    Ok(Err(e)) => format!("its status could not be read: {e}"),
                    Err(_) => format!("its status could not be read within {STATUS_READ:?}"),
                };
                return Err(Error::GroupNotReady {
                    group: group.clone(),
                    wanted: n,
                    seen: self.shared.lock().len(),
                    after: timeout,
                    reason,
                });
            }
        }
    }

    /// Waits until the instances this caller sees satisfy `condition`, for at most
    /// `timeout` ([`Error::Timeout`] then).
    ///
    /// `condition` gets the current instances at once, then again after every change of this
    /// caller's view of the group (a member joined or left); nothing is polled. For start-up
    /// and tests: "until the group has three instances, none of them on node `n2`".
    ///
    /// ```no_run
    /// # async fn run(group: actormesh::GroupRef<impl actormesh::RemoteActor>, dead: actormesh::NodeId) -> actormesh::Result<()> {
    /// use std::time::Duration;
    /// group
    ///     .wait_until(Duration::from_secs(5), |instances| {
    ///         instances.len() == 3 && instances.iter().all(|i| i.node() != &dead)
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&[ActorRef<A>]) -> bool,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            if condition(&self.instances()) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(Error::Timeout { after: timeout });
            }
        }
    }

    /// Sends `message` to the instance the balancer picks, without waiting (at-most-once).
    pub fn tell<M>(&self, message: M) -> Result<()>
    where
        A: Accepts<M>,
        M: RemoteMessage,
        M::Result: WireValue,
    {
        let (target, _slot) =
            self.shared
                .pick(None, &[], false)
                .map_err(|_| Error::NoInstances {
                    group: self.shared.name.clone(),
                })?;
        target.tell(message).map_err(|e| e.error)
    }

    /// Sends `message` to every instance; returns how many accepted it.
    pub fn broadcast<M>(&self, message: M) -> usize
    where
        A: Accepts<M>,
        M: RemoteMessage + Clone,
        M::Result: WireValue,
    {
        self.instances()
            .iter()
            .filter(|target| target.tell(message.clone()).is_ok())
            .count()
    }

    /// Asks one instance, with the node's ask timeout. Never retried: on failure the error
    /// reaches the caller (see [`GroupRef::ask_idempotent`]).
    pub async fn ask<M>(&self, message: M) -> Result<M::Result>
    where
        A: Accepts<M>,
        M: RemoteMessage,
        M::Result: WireValue,
    {
        self.ask_routed(None, message, self.shared.node.config.ask_timeout)
            .await
    }

    /// Asks the instance that `key` maps to (with a [`ConsistentHash`] balancer, the same
    /// key reaches the same instance while membership is unchanged).
    ///
    /// [`ConsistentHash`]: crate::balance::ConsistentHash
    pub async fn ask_keyed<M>(&self, key: &impl Hash, message: M) -> Result<M::Result>
    where
        A: Accepts<M>,
        M: RemoteMessage,
        M::Result: WireValue,
    {
        self.ask_routed(
            Some(key_of(key)),
            message,
            self.shared.node.config.ask_timeout,
        )
        .await
    }

    /// Asks one instance, waiting for room and the reply up to `timeout` in all.
    pub async fn ask_timeout<M>(&self, message: M, timeout: Duration) -> Result<M::Result>
    where
        A: Accepts<M>,
        M: RemoteMessage,
        M::Result: WireValue,
    {
        self.ask_routed(None, message, timeout).await
    }

    async fn ask_routed<M>(
        &self,
        key: Option<u64>,
        message: M,
        timeout: Duration,
    ) -> Result<M::Result>
    where
        A: Accepts<M>,
        M: RemoteMessage,
        M::Result: WireValue,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let (target, mut slot) = self.shared.pick_until(key, &[], deadline).await?;
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let result = target.ask_timeout(message, remaining).await;
        slot.ok = match &result {
            // The message's fault, not the instance's: no health record either way.
            Err(Error::HandlerPanicked { .. }) => None,
            Err(e) => Some(!instance_failed(e)),
            Ok(_) => Some(true),
        };
        result
    }

    /// Asks one instance and, if it fails (node down or unreachable, actor gone or stopped,
    /// attempt timeout), retries on other instances, up to [`GroupConfig::retries`] times,
    /// all within the node's ask timeout.
    ///
    /// A handler panic is not retried: the caller gets [`Error::HandlerPanicked`] at once and
    /// no other instance sees the message ("query of death" protection; see
    /// [`GroupConfig::retry_on_panic`] to opt in to bounded retries).
    pub async fn ask_idempotent<M>(&self, message: M) -> Result<M::Result>
    where
        A: Accepts<M>,
        M: Idempotent,
        M::Result: WireValue,
    {
        self.ask_idempotent_timeout(message, self.shared.node.config.ask_timeout)
            .await
    }

    /// [`GroupRef::ask_idempotent`] within `timeout` in all.
    pub async fn ask_idempotent_timeout<M>(
        &self,
        message: M,
        timeout: Duration,
    ) -> Result<M::Result>
    where
        A: Accepts<M>,
        M: Idempotent,
        M::Result: WireValue,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut failed: Vec<(NodeId, ActorId)> = Vec::new();
        let mut last_error = None;
        let mut panic_retries = self.shared.config.retry_on_panic;
        for _ in 0..=self.shared.config.retries {
            let picked = match self.shared.pick_until(None, &failed, deadline).await {
                Ok(picked) => picked,
                // Everyone left has failed this ask already: report the last failure.
                Err(Error::NoInstances { .. }) if last_error.is_some() => break,
                Err(e) => return Err(e),
            };
            let (target, mut slot) = picked;
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                break;
            }
            let attempt = self
                .shared
                .config
                .attempt_timeout
                .map_or(remaining, |t| t.min(remaining));
            match target.ask_timeout(message.clone(), attempt).await {
                Ok(value) => {
                    slot.ok = Some(true);
                    return Ok(value);
                }
                Err(e @ Error::HandlerPanicked { .. }) => {
                    // The instance is not blamed (no health record), and the message goes no
                    // further unless the caller opted in.
                    slot.ok = None;
                    if panic_retries == 0 {
                        return Err(e);
                    }
                    panic_retries -= 1;
                    tracing::debug!(group = %self.shared.name, error = %e, "idempotent ask panicked its handler; retrying on another instance as configured");
                    failed.push((target.node().clone(), target.id()));
                    last_error = Some(e);
                }
                Err(e) if instance_failed(&e) => {
                    slot.ok = Some(false);
                    tracing::debug!(group = %self.shared.name, error = %e, "idempotent ask failed on one instance; retrying on another");
                    failed.push((target.node().clone(), target.id()));
                    last_error = Some(e);
                }
                Err(e) => {
                    slot.ok = Some(true);
                    return Err(e);
                }
            }
        }
        Err(last_error.unwrap_or(Error::Timeout { after: timeout }))
    }
}
