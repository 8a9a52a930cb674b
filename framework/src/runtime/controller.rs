//! The controller's shell: campaigns for the cluster's leadership and, while leading, keeps
//! every deployed group at its desired state (see [`controller`](crate::controller)).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::NodeShared;
use crate::core::controller::autoscale::decide_scale;
use crate::core::model::{
    GroupEvent, GroupMember, GroupSpec, LoadReport, PlacementPolicy, SpecEvent,
};
use crate::core::placement::{self, Candidate, Constraints, Placement};
use crate::core::wire::envelope::Header;
use crate::discovery::Leadership;
use crate::error::Error;
use crate::id::{ActorId, NodeId};

/// How long a replica asked for counts as on its way before the leader asks again.
const PENDING: Duration = Duration::from_secs(10);
/// How often the leader reconciles when nothing changes.
const RESYNC: Duration = Duration::from_millis(500);

fn constraints(spec: &GroupSpec) -> Constraints {
    Constraints {
        selector: spec.selector.clone(),
        anti_affinity: spec.anti_affinity.clone(),
        max_per_node: spec.max_per_node,
    }
}

fn policy(spec: &GroupSpec, node: &NodeShared) -> Option<Arc<dyn Placement>> {
    Some(match &spec.placement {
        PlacementPolicy::RoundRobin => Arc::new(placement::RoundRobin::new()),
        PlacementPolicy::LeastLoaded => Arc::new(placement::LeastLoaded::new()),
        PlacementPolicy::Spread => Arc::new(placement::Spread::new()),
        PlacementPolicy::Custom(name) => node.placement(name)?,
    })
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
        let Some(policy) = policy(spec, node) else {
            tracing::warn!(%group, placement = ?spec.placement, "unknown placement policy on the leader; register it with NodeBuilder::placement");
            continue;
        };
        let constraints = constraints(spec);
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
            .map_err(|e| {
                matches!(
                    e,
                    crate::core::wire::envelope::WireError::UnknownActorType { .. }
                )
            })
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
                Ok(bytes) => crate::core::wire::envelope::decode_payload::<u64>(&bytes)
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
