//! The controller: keeps every group at its desired state ([`GroupSpec`]).
//!
//! Every node started with [`NodeBuilder::controller`](crate::NodeBuilder::controller)
//! campaigns for the cluster's leadership ([`Discovery::campaign`]); the leader follows the
//! specs, the groups' members and the nodes, and closes the difference: it asks nodes to
//! start replicas where the spec's [`placement`](crate::placement) policy says, and retires
//! the excess (a retired replica leaves its group first, then stops after the messages already
//! queued for it). When a node dies, its replicas leave their groups with it and the leader
//! starts replacements on the survivors. When the leader dies, another node takes over.
//!
//! Every order carries the leader's fencing token, and a node checks it against the current
//! leader before acting: a deposed leader cannot act.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::discovery::{
    Autoscale, GroupEvent, GroupMember, GroupSpec, Leadership, LoadReport, PlacementPolicy,
    SpecEvent,
};
use crate::error::{Error, Result};
use crate::id::{ActorId, NodeId};
use crate::message::Spawnable;
use crate::node::NodeShared;
use crate::placement::{self, Candidate, Constraints, Placement};
use crate::wire::envelope::{encode_payload, Header};

/// How long a replica asked for counts as on its way before the leader asks again.
const PENDING: Duration = Duration::from_secs(10);
/// How often the leader reconciles when nothing changes.
const RESYNC: Duration = Duration::from_millis(500);

impl GroupSpec {
    /// A spec of `replicas` replicas of actor type `A`, built from `args`, in `group`.
    pub fn new<A: Spawnable>(
        group: impl Into<String>,
        args: &A::Args,
        replicas: u32,
    ) -> Result<Self> {
        let mut buf = bytes::BytesMut::new();
        encode_payload(args, &mut buf).map_err(Error::Codec)?;
        Ok(GroupSpec {
            group: group.into(),
            actor_type: A::NAME.to_owned(),
            args: buf.to_vec(),
            replicas,
            placement: PlacementPolicy::default(),
            selector: BTreeMap::new(),
            anti_affinity: None,
            max_per_node: None,
            singleton: false,
            autoscale: None,
        })
    }

    /// Let the controller choose the replica count from the group's load, between `min` and
    /// `max`, aiming at `target_per_replica` asks in flight per replica, acting only beyond
    /// 25 % of the target either way and at most every 5 s (see [`Autoscale`]).
    pub fn autoscale(mut self, min: u32, max: u32, target_per_replica: f64) -> Self {
        self.autoscale = Some(Autoscale {
            min,
            max: max.max(min),
            target_per_replica,
            hysteresis: 0.25,
            cooldown_ms: 5_000,
        });
        self
    }

    /// Replaces the autoscaling settings (hysteresis and cooldown included).
    pub fn autoscale_with(mut self, autoscale: Autoscale) -> Self {
        self.autoscale = Some(autoscale);
        self
    }

    /// A singleton of actor type `A`: at most one live instance cluster-wide at any moment,
    /// restarted elsewhere when its node dies. Its host stops it as soon as it can no longer
    /// be sure its etcd lease is alive (cut off from etcd), before the lease can expire and
    /// the controller start a replacement; with the in-process discovery there is no lease
    /// and nothing to guard against.
    pub fn singleton<A: Spawnable>(group: impl Into<String>, args: &A::Args) -> Result<Self> {
        let mut spec = Self::new::<A>(group, args, 1)?;
        spec.singleton = true;
        Ok(spec)
    }

    /// The placement policy (default [`PlacementPolicy::RoundRobin`]).
    pub fn placement(mut self, policy: PlacementPolicy) -> Self {
        self.placement = policy;
        self
    }

    /// Only nodes with the label `key = value` run replicas.
    pub fn select(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.selector.insert(key.into(), value.into());
        self
    }

    /// Spread the replicas across the values of the node label `key`.
    pub fn anti_affinity(mut self, key: impl Into<String>) -> Self {
        self.anti_affinity = Some(key.into());
        self
    }

    /// At most `max` replicas on one node.
    pub fn max_per_node(mut self, max: u32) -> Self {
        self.max_per_node = Some(max);
        self
    }

    fn constraints(&self) -> Constraints {
        Constraints {
            selector: self.selector.clone(),
            anti_affinity: self.anti_affinity.clone(),
            max_per_node: self.max_per_node,
        }
    }

    fn policy(&self, node: &NodeShared) -> Option<Arc<dyn Placement>> {
        Some(match &self.placement {
            PlacementPolicy::RoundRobin => Arc::new(placement::RoundRobin::new()),
            PlacementPolicy::LeastLoaded => Arc::new(placement::LeastLoaded::new()),
            PlacementPolicy::Spread => Arc::new(placement::Spread::new()),
            PlacementPolicy::Custom(name) => node.placement(name)?,
        })
    }
}

/// Campaigns until the node shuts down; leads while it is the leader.
pub(crate) async fn run(weak: Weak<NodeShared>) {
    loop {
        let Some(node) = weak.upgrade() else { return };
        if node.is_stopping() {
            return;
        }
        let mut shutdown = node.shutdown_signal();
        let campaign = async {
            node.discovery()
                .campaign(&node.info.cluster, &node.info.id)
                .await
        };
        let won = tokio::select! {
            won = campaign => won,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        match won {
            Ok(leadership) => {
                tracing::info!(node = %node.info.id, token = leadership.token, "leading the cluster's controller");
                lead(&node, leadership).await;
            }
            Err(e) => {
                tracing::warn!(node = %node.info.id, error = %e, "campaign failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
            }
        }
    }
}

/// What the leader knows of one group.
#[derive(Default)]
struct GroupState {
    members: BTreeMap<(NodeId, ActorId), GroupMember>,
    /// Replicas asked for and not seen yet: the node, the actor once known, when asked.
    pending: Vec<(NodeId, Option<ActorId>, Instant)>,
    /// Replicas asked to retire and not gone yet.
    retiring: BTreeMap<(NodeId, ActorId), Instant>,
    /// Nodes that cannot run the spec's actor type (not registered as spawnable there).
    unable: BTreeMap<NodeId, Instant>,
}

/// The outcome of an order, reported back to the leader loop.
enum Outcome {
    Spawned {
        group: String,
        node: NodeId,
        actor: ActorId,
    },
    SpawnFailed {
        group: String,
        node: NodeId,
        unable: bool,
    },
}

async fn lead(node: &Arc<NodeShared>, mut leadership: Leadership) {
    let cluster = node.info.cluster.clone();
    let mut shutdown = node.shutdown_signal();
    let mut specs_view = match node.discovery().watch_specs(&cluster).await {
        Ok(view) => view,
        Err(e) => {
            tracing::warn!(error = %e, "controller cannot read the specs; giving up the lead for now");
            return;
        }
    };
    let mut specs: BTreeMap<String, GroupSpec> = specs_view
        .specs
        .drain(..)
        .map(|s| (s.group.clone(), s))
        .collect();
    let (group_tx, mut group_rx) = mpsc::unbounded_channel::<(String, GroupEvent)>();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Outcome>();
    let mut groups: HashMap<String, GroupState> = HashMap::new();
    let mut membership = node.subscribe();
    for group in specs.keys() {
        follow_group(node, group, &mut groups, &group_tx).await;
    }
    let mut loads: BTreeMap<NodeId, LoadReport> = BTreeMap::new();
    let mut loads_at: Option<Instant> = None;
    let mut scaled_at: HashMap<String, Instant> = HashMap::new();
    loop {
        let wants_loads = specs
            .values()
            .any(|s| s.autoscale.is_some() || s.placement == PlacementPolicy::LeastLoaded);
        if wants_loads && loads_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            if let Ok(fresh) = node.discovery().loads(&cluster).await {
                loads = fresh;
            }
            loads_at = Some(Instant::now());
        }
        for (group, replicas) in autoscale(&specs, &groups, &loads, &scaled_at) {
            if let Some(spec) = specs.get_mut(&group) {
                tracing::info!(%group, from = spec.replicas, to = replicas, "autoscaling");
                spec.replicas = replicas;
                scaled_at.insert(group, Instant::now());
                if let Err(e) = node.discovery().put_spec(&cluster, spec).await {
                    tracing::warn!(error = %e, "could not record the autoscaled replica count");
                }
            }
        }
        reconcile(
            node,
            leadership.token,
            &specs,
            &mut groups,
            &loads,
            &done_tx,
        );
        let wake = tokio::select! {
            _ = leadership.lost.changed() => Wake::Lost,
            _ = shutdown.wait_for(|stop| *stop) => Wake::Stop,
            event = specs_view.events.recv() => Wake::Spec(event.map(|(_, e)| e)),
            Some((group, event)) = group_rx.recv() => Wake::Group(group, event),
            Some(outcome) = done_rx.recv() => Wake::Done(outcome),
            _ = membership.recv() => Wake::Tick,
            _ = tokio::time::sleep(RESYNC) => Wake::Tick,
        };
        match wake {
            Wake::Lost => {
                tracing::warn!(node = %node.info.id, "lost the controller's lead");
                return;
            }
            Wake::Stop | Wake::Spec(None) => return,
            Wake::Spec(Some(SpecEvent::Put(spec))) => {
                let group = spec.group.clone();
                specs.insert(group.clone(), spec);
                follow_group(node, &group, &mut groups, &group_tx).await;
            }
            Wake::Spec(Some(SpecEvent::Removed(group))) => {
                specs.remove(&group);
            }
            Wake::Group(group, event) => {
                if let Some(state) = groups.get_mut(&group) {
                    match event {
                        GroupEvent::Joined(m) => {
                            state
                                .pending
                                .retain(|(n, a, _)| !(n == &m.node && *a == Some(m.actor)));
                            state.members.insert((m.node.clone(), m.actor), m);
                        }
                        GroupEvent::Left(m) => {
                            state.retiring.remove(&(m.node.clone(), m.actor));
                            state.members.remove(&(m.node.clone(), m.actor));
                        }
                    }
                }
            }
            Wake::Done(Outcome::Spawned {
                group,
                node: at,
                actor,
            }) => {
                if let Some(state) = groups.get_mut(&group) {
                    let unseen = state
                        .pending
                        .iter()
                        .position(|(n, a, _)| n == &at && a.is_none());
                    if state.members.contains_key(&(at.clone(), actor)) {
                        if let Some(i) = unseen {
                            state.pending.remove(i);
                        }
                    } else if let Some(i) = unseen {
                        state.pending[i].1 = Some(actor);
                    }
                }
            }
            Wake::Done(Outcome::SpawnFailed {
                group,
                node: at,
                unable,
            }) => {
                if let Some(state) = groups.get_mut(&group) {
                    if let Some(i) = state
                        .pending
                        .iter()
                        .position(|(n, a, _)| n == &at && a.is_none())
                    {
                        state.pending.remove(i);
                    }
                    if unable {
                        state.unable.insert(at, Instant::now());
                    }
                }
            }
            Wake::Tick => {}
        }
    }
}

/// Why the leader loop woke up.
enum Wake {
    Lost,
    Stop,
    Spec(Option<SpecEvent>),
    Group(String, GroupEvent),
    Done(Outcome),
    Tick,
}

/// The autoscaled groups whose replica count should change, and to what.
fn autoscale(
    specs: &BTreeMap<String, GroupSpec>,
    groups: &HashMap<String, GroupState>,
    loads: &BTreeMap<NodeId, LoadReport>,
    scaled_at: &HashMap<String, Instant>,
) -> Vec<(String, u32)> {
    let mut changes = Vec::new();
    for (group, spec) in specs {
        let (Some(policy), Some(state)) = (spec.autoscale, groups.get(group)) else {
            continue;
        };
        let hosts: std::collections::BTreeSet<&NodeId> =
            state.members.keys().map(|(n, _)| n).collect();
        let load: f64 = hosts
            .iter()
            .filter_map(|n| loads.get(*n))
            .map(|l| l.inflight_asks as f64)
            .sum();
        let cooling = scaled_at
            .get(group)
            .is_some_and(|t| t.elapsed() < Duration::from_millis(policy.cooldown_ms));
        if let Some(to) = decide_scale(&policy, spec.replicas, load, cooling) {
            changes.push((group.clone(), to));
        }
    }
    changes
}

/// The replica count an autoscaled group should move to, if any: aims at the target load
/// per replica, within bounds, only beyond the hysteresis band and not while cooling down.
pub(crate) fn decide_scale(
    policy: &Autoscale,
    current: u32,
    load: f64,
    cooling: bool,
) -> Option<u32> {
    let (min, max) = (policy.min, policy.max.max(policy.min));
    if current < min || current > max {
        return Some(current.clamp(min, max));
    }
    let target_ok = policy.target_per_replica.is_finite() && policy.target_per_replica > 0.0;
    if cooling || !target_ok || !load.is_finite() {
        return None;
    }
    let per_replica = load / f64::from(current.max(1));
    let wanted = ((load / policy.target_per_replica).ceil() as u32).clamp(min, max);
    let band = policy.hysteresis.max(0.0);
    if wanted > current && per_replica > policy.target_per_replica * (1.0 + band) {
        return Some(wanted);
    }
    if wanted < current && per_replica < policy.target_per_replica * (1.0 - band) {
        return Some(wanted);
    }
    None
}

/// Starts following the members of `group` (once).
async fn follow_group(
    node: &Arc<NodeShared>,
    group: &str,
    groups: &mut HashMap<String, GroupState>,
    tx: &mpsc::UnboundedSender<(String, GroupEvent)>,
) {
    if groups.contains_key(group) {
        return;
    }
    let view = match node
        .discovery()
        .watch_group(&node.info.cluster, group)
        .await
    {
        Ok(view) => view,
        Err(e) => {
            tracing::warn!(%group, error = %e, "controller cannot follow the group");
            return;
        }
    };
    let mut state = GroupState::default();
    for m in view.members {
        state.members.insert((m.node.clone(), m.actor), m);
    }
    groups.insert(group.to_owned(), state);
    let tx = tx.clone();
    let name = group.to_owned();
    let mut events = view.events;
    tokio::spawn(async move {
        while let Some((_, event)) = events.recv().await {
            if tx.send((name.clone(), event)).is_err() {
                return;
            }
        }
    });
}

/// Compares desired with actual for every spec and sends the orders that close the gap.
fn reconcile(
    node: &Arc<NodeShared>,
    fence: u64,
    specs: &BTreeMap<String, GroupSpec>,
    groups: &mut HashMap<String, GroupState>,
    loads: &BTreeMap<NodeId, LoadReport>,
    done: &mpsc::UnboundedSender<Outcome>,
) {
    let now = Instant::now();
    let live: BTreeMap<NodeId, crate::discovery::NodeInfo> = node
        .members()
        .into_iter()
        .map(|m| (m.id.clone(), m))
        .collect();
    for (group, spec) in specs {
        let Some(state) = groups.get_mut(group) else {
            continue;
        };
        state.members.retain(|(n, _), _| live.contains_key(n));
        state
            .pending
            .retain(|(n, _, at)| live.contains_key(n) && now.duration_since(*at) < PENDING);
        state
            .retiring
            .retain(|_, at| now.duration_since(*at) < PENDING);
        state
            .unable
            .retain(|_, at| now.duration_since(*at) < PENDING);
        let active: Vec<&GroupMember> = state
            .members
            .iter()
            .filter(|(k, _)| !state.retiring.contains_key(*k))
            .map(|(_, m)| m)
            .collect();
        let have = active.len() as u32 + state.pending.len() as u32;
        let mut per_node: BTreeMap<&NodeId, u32> = BTreeMap::new();
        for m in &active {
            *per_node.entry(&m.node).or_default() += 1;
        }
        for (n, _, _) in &state.pending {
            *per_node.entry(n).or_default() += 1;
        }
        let candidates: Vec<Candidate> = live
            .values()
            .filter(|info| {
                !state.unable.contains_key(&info.id)
                    && info.spawnable.iter().any(|t| t == &spec.actor_type)
            })
            .map(|info| Candidate {
                node: info.id.clone(),
                labels: info.labels.clone(),
                load: loads.get(&info.id).cloned(),
                replicas: per_node.get(&info.id).copied().unwrap_or(0),
            })
            .collect();
        let Some(policy) = spec.policy(node) else {
            tracing::warn!(%group, placement = ?spec.placement, "unknown placement policy on the leader; register it with NodeBuilder::placement");
            continue;
        };
        let constraints = spec.constraints();
        let replicas = if spec.singleton {
            spec.replicas.min(1)
        } else {
            spec.replicas
        };
        if have < replicas {
            for index in policy.place(&candidates, &constraints, replicas - have) {
                let Some(target) = candidates.get(index).map(|c| c.node.clone()) else {
                    continue;
                };
                state.pending.push((target.clone(), None, now));
                order_spawn(node, fence, spec, target, done.clone());
            }
        } else if state.pending.is_empty() && (active.len() as u32) > replicas {
            let excess = active.len() as u32 - replicas;
            let mut taken: Vec<(NodeId, ActorId)> = Vec::new();
            for index in policy.remove(&candidates, &constraints, excess) {
                let Some(at) = candidates.get(index).map(|c| &c.node) else {
                    continue;
                };
                let victim = active
                    .iter()
                    .filter(|m| &m.node == at && !taken.contains(&(m.node.clone(), m.actor)))
                    .max_by_key(|m| m.actor);
                if let Some(m) = victim {
                    taken.push((m.node.clone(), m.actor));
                }
            }
            for (at, actor) in taken {
                state.retiring.insert((at.clone(), actor), now);
                order_retire(node, fence, group, at, actor);
            }
        }
    }
}

fn order_spawn(
    node: &Arc<NodeShared>,
    fence: u64,
    spec: &GroupSpec,
    target: NodeId,
    done: mpsc::UnboundedSender<Outcome>,
) {
    let node = node.clone();
    let spec = spec.clone();
    tokio::spawn(async move {
        let outcome = if target == node.info.id {
            node.spawn_replica(
                &spec.actor_type,
                &spec.group,
                fence,
                spec.singleton,
                &spec.args,
            )
            .await
            .map_err(|e| matches!(e, crate::wire::envelope::WireError::UnknownActorType { .. }))
        } else {
            let Some(addr) = node
                .members()
                .into_iter()
                .find(|m| m.id == target)
                .map(|m| m.addr)
            else {
                let _ = done.send(Outcome::SpawnFailed {
                    group: spec.group,
                    node: target,
                    unable: false,
                });
                return;
            };
            let link = node.link_to(&target, addr);
            let reply = link
                .request(
                    ActorId(0),
                    node.config.ask_timeout,
                    |id| Header::SpawnReplica {
                        id,
                        actor_type: spec.actor_type.clone(),
                        group: spec.group.clone(),
                        fence,
                        singleton: spec.singleton,
                    },
                    |buf| {
                        buf.extend_from_slice(&spec.args);
                        Ok(())
                    },
                )
                .await;
            match reply {
                Ok(bytes) => crate::wire::envelope::decode_payload::<u64>(&bytes)
                    .map(ActorId)
                    .map_err(|_| false),
                Err(e) => Err(matches!(e, Error::UnknownActorType { .. })),
            }
        };
        let report = match outcome {
            Ok(actor) => Outcome::Spawned {
                group: spec.group,
                node: target,
                actor,
            },
            Err(unable) => {
                tracing::warn!(group = %spec.group, node = %target, unable, "a replica could not be started");
                Outcome::SpawnFailed {
                    group: spec.group,
                    node: target,
                    unable,
                }
            }
        };
        let _ = done.send(report);
    });
}

fn order_retire(node: &Arc<NodeShared>, fence: u64, group: &str, target: NodeId, actor: ActorId) {
    let node = node.clone();
    let group = group.to_owned();
    tokio::spawn(async move {
        let result = if target == node.info.id {
            node.retire(actor, &group, fence)
                .await
                .map_err(|e| format!("{e:?}"))
        } else {
            match node
                .members()
                .into_iter()
                .find(|m| m.id == target)
                .map(|m| m.addr)
            {
                None => Err("node gone".to_owned()),
                Some(addr) => node
                    .link_to(&target, addr)
                    .request(
                        actor,
                        node.config.ask_timeout,
                        |id| Header::Retire {
                            id,
                            target: actor.0,
                            group: group.clone(),
                            fence,
                        },
                        |_| Ok(()),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            }
        };
        if let Err(e) = result {
            tracing::warn!(%group, node = %target, %actor, error = %e, "a replica could not be retired");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Autoscale {
        Autoscale {
            min: 2,
            max: 10,
            target_per_replica: 4.0,
            hysteresis: 0.25,
            cooldown_ms: 1_000,
        }
    }

    #[test]
    fn scales_up_and_down_to_the_target_within_bounds() {
        let p = policy();
        assert_eq!(decide_scale(&p, 2, 40.0, false), Some(10));
        assert_eq!(decide_scale(&p, 4, 400.0, false), Some(10), "capped at max");
        assert_eq!(decide_scale(&p, 8, 4.0, false), Some(2), "floored at min");
        assert_eq!(
            decide_scale(&p, 1, 0.0, false),
            Some(2),
            "below min is corrected"
        );
    }

    #[test]
    fn hysteresis_and_cooldown_prevent_flapping() {
        let p = policy();
        // 4 replicas at 4.5 per replica: within 25 % of the target, no change.
        assert_eq!(decide_scale(&p, 4, 18.0, false), None);
        assert_eq!(decide_scale(&p, 4, 14.0, false), None);
        // Beyond the band it acts, but not while cooling down.
        assert_eq!(decide_scale(&p, 4, 24.0, false), Some(6));
        assert_eq!(decide_scale(&p, 4, 24.0, true), None);
        // A nonsense target does nothing.
        let zero = Autoscale {
            target_per_replica: 0.0,
            ..p
        };
        assert_eq!(decide_scale(&zero, 4, 24.0, false), None);
    }
}
