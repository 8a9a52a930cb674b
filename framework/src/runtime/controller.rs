//! The controller's shell: campaigns for the cluster's leadership and, while leading, feeds
//! the pure [`Controller`](crate::core::controller::Controller) what it observes (specs,
//! nodes, group members, load reports, the outcomes of its orders, a tick) and carries out
//! the orders it returns. Every decision is the core's; this file only does I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};

use super::{read, NodeShared};
use crate::core::controller::{Controller, Event, Order};
use crate::core::model::{GroupEvent, MembershipEvent, SpecEvent};
use crate::core::wire::envelope::{decode_payload, Header, WireError};
use crate::discovery::Leadership;
use crate::error::Error;
use crate::id::{ActorId, NodeId};

/// How often the leader ticks its controller when nothing changes.
const TICK: Duration = Duration::from_millis(500);
/// How long to wait before trying a failed discovery call again.
const RETRY: Duration = Duration::from_millis(500);

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
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
            }
        }
    }
}

/// Leads until the leadership is lost or the node stops.
async fn lead(node: &Arc<NodeShared>, mut leadership: Leadership) {
    let cluster = node.info.cluster.clone();
    let mut shutdown = node.shutdown_signal();
    let mut specs = match node.discovery().watch_specs(&cluster).await {
        Ok(view) => view,
        Err(e) => {
            tracing::warn!(error = %e, "controller cannot read the specs; giving up the lead for now");
            return;
        }
    };
    let placements = node
        .placements
        .iter()
        .map(|(name, policy)| (name.clone(), policy.clone()))
        .collect();
    let mut core = Controller::new(leadership.token, placements);
    // The shard allocator of keyed entities runs as long as this lead.
    let _allocator = AbortOnDrop(tokio::spawn(super::entity::allocate::run(
        Arc::downgrade(node),
        leadership.token,
    )));
    let origin = Instant::now();
    // Answers of the orders (group followers, load reads, spawns) come back on one channel.
    let (tx, mut answers) = mpsc::unbounded_channel::<Event>();
    // Subscribe before reading the members, so that no change falls between the two.
    let mut membership = node.subscribe();
    let mut members = BTreeSet::new();
    let mut orders = Vec::new();
    for info in node.members() {
        members.insert(info.id.clone());
        orders.extend(core.step(Event::MemberUp(info), origin.elapsed()));
    }
    if !specs.specs.is_empty() {
        orders.extend(catch_up(node, &mut core, &mut members, origin).await);
    }
    for spec in specs.specs.drain(..) {
        orders.extend(core.step(Event::SpecPut(spec), origin.elapsed()));
    }
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        for order in orders.drain(..) {
            carry_out(node, order, &tx);
        }
        let events = tokio::select! {
            _ = leadership.lost.changed() => {
                tracing::warn!(node = %node.info.id, "lost the controller's lead");
                return;
            }
            _ = shutdown.wait_for(|stop| *stop) => return,
            event = specs.events.recv() => match event {
                None => return,
                Some((_, SpecEvent::Put(spec))) => vec![Event::SpecPut(spec)],
                Some((_, SpecEvent::Removed(group))) => vec![Event::SpecRemoved(group)],
            },
            Some(event) = answers.recv() => vec![event],
            event = membership.recv() => match event {
                Ok(event) => {
                    match &event {
                        MembershipEvent::Up(info) => members.insert(info.id.clone()),
                        MembershipEvent::Left(id) | MembershipEvent::Down(id) => members.remove(id),
                    };
                    vec![membership_event(event)]
                }
                Err(broadcast::error::RecvError::Lagged(_)) => resync(node, &mut members),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick() => vec![Event::Tick],
        };
        if events.iter().any(|e| matches!(e, Event::SpecPut(_))) {
            orders.extend(catch_up(node, &mut core, &mut members, origin).await);
        }
        for event in events {
            orders.extend(core.step(event, origin.elapsed()));
        }
    }
}

/// Steps into the controller, as `MemberUp`, the members a fresh read of discovery holds that
/// it was not told of yet (recording them as told), and returns the orders. Specs and members
/// arrive on separate watches: without this, a spec written just after a node joined could be
/// placed on a view that lacks the node, and the replicas would crowd on the nodes the view
/// had. A failed read leaves the view as it is (the watch catches up; placement is only less
/// even).
async fn catch_up(
    node: &NodeShared,
    core: &mut Controller,
    told: &mut BTreeSet<NodeId>,
    origin: Instant,
) -> Vec<Order> {
    let now = match node.discovery().read_members(&node.info.cluster).await {
        Ok(now) => now,
        Err(e) => {
            tracing::warn!(node = %node.info.id, error = %e, "could not read the members afresh before placing a spec; using the node's view");
            return Vec::new();
        }
    };
    now.into_iter()
        .filter(|m| told.insert(m.id.clone()))
        .flat_map(|m| core.step(Event::MemberUp(m), origin.elapsed()))
        .collect()
}

fn membership_event(event: MembershipEvent) -> Event {
    match event {
        MembershipEvent::Up(info) => Event::MemberUp(info),
        MembershipEvent::Down(id) => Event::MemberDown(id),
        MembershipEvent::Left(id) => Event::MemberLeft(id),
    }
}

/// After missed membership events: the difference between what the controller was told and
/// the node's view now, as events (a node missing now is reported down).
fn resync(node: &NodeShared, told: &mut BTreeSet<NodeId>) -> Vec<Event> {
    let now: BTreeMap<NodeId, _> = node
        .members()
        .into_iter()
        .map(|m| (m.id.clone(), m))
        .collect();
    let mut events: Vec<Event> = told
        .iter()
        .filter(|id| !now.contains_key(*id))
        .map(|id| Event::MemberDown(id.clone()))
        .collect();
    events.extend(now.values().cloned().map(Event::MemberUp));
    *told = now.into_keys().collect();
    events
}

/// Carries out one order in the background; its answer, if any, comes back through `answers`.
fn carry_out(node: &Arc<NodeShared>, order: Order, answers: &mpsc::UnboundedSender<Event>) {
    if let Some(m) = &node.metrics {
        let kind = match &order {
            Order::Follow { .. } => "follow",
            Order::ReadLoads => "read_loads",
            Order::Report { .. } => "report",
            Order::PutSpec(_) => "put_spec",
            Order::Spawn { .. } => "spawn",
            Order::Retire { .. } => "retire",
            #[allow(unreachable_patterns)]
            _ => "other",
        };
        m.decision(kind);
    }
    match order {
        Order::Follow { group } => {
            tokio::spawn(follow(node.clone(), group, answers.clone()));
        }
        Order::ReadLoads => {
            let node = node.clone();
            let answers = answers.clone();
            tokio::spawn(async move {
                match node.discovery().loads(&node.info.cluster).await {
                    Ok(loads) => {
                        let _ = answers.send(Event::Loads(loads));
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "controller could not read the load reports")
                    }
                }
            });
        }
        Order::Report { group, status } => match status {
            Some(status) => {
                tracing::warn!(node = %node.info.id, %group, "{status}");
            }
            None => tracing::info!(node = %node.info.id, %group, "the group is no longer stuck"),
        },
        Order::PutSpec(spec) => {
            let node = node.clone();
            tokio::spawn(async move {
                tracing::info!(group = %spec.group, replicas = spec.replicas, "autoscaling");
                if let Err(e) = node.discovery().put_spec(&node.info.cluster, &spec).await {
                    tracing::warn!(error = %e, "could not record the autoscaled replica count");
                }
            });
        }
        Order::Spawn {
            node: target,
            group,
            actor_type,
            args,
            singleton,
            fence,
        } => {
            let node = node.clone();
            let answers = answers.clone();
            tokio::spawn(async move {
                let outcome =
                    spawn_replica(&node, &target, &group, &actor_type, &args, singleton, fence)
                        .await;
                let answer = match outcome {
                    Ok(actor) => Event::Spawned {
                        group,
                        node: target,
                        actor,
                    },
                    Err(unable) => {
                        tracing::warn!(%group, node = %target, unable, "a replica could not be started");
                        Event::SpawnFailed {
                            group,
                            node: target,
                            unable,
                        }
                    }
                };
                let _ = answers.send(answer);
            });
        }
        Order::Retire {
            node: target,
            group,
            actor,
            fence,
        } => {
            let node = node.clone();
            tokio::spawn(async move {
                if let Err(e) = retire(&node, &target, &group, actor, fence).await {
                    tracing::warn!(%group, node = %target, %actor, error = %e, "a replica could not be retired");
                }
            });
        }
    }
}

/// Follows the members of `group` until the leadership ends (the answers' receiver goes):
/// their list first, then every change, retrying while discovery cannot answer.
async fn follow(node: Arc<NodeShared>, group: String, answers: mpsc::UnboundedSender<Event>) {
    let view = loop {
        match node
            .discovery()
            .watch_group(&node.info.cluster, &group)
            .await
        {
            Ok(view) => break view,
            Err(e) => {
                tracing::warn!(%group, error = %e, "controller cannot follow the group; retrying");
                if answers.is_closed() {
                    return;
                }
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    drop(node);
    let members = view.members;
    if answers
        .send(Event::GroupMembers {
            group: group.clone(),
            members,
        })
        .is_err()
    {
        return;
    }
    let mut events = view.events;
    while let Some((_, event)) = events.recv().await {
        let answer = match event {
            GroupEvent::Joined(member) => Event::GroupJoined {
                group: group.clone(),
                member,
            },
            GroupEvent::Left(member) => Event::GroupLeft {
                group: group.clone(),
                member,
            },
        };
        if answers.send(answer).is_err() {
            return;
        }
    }
}

/// Asks `target` (this node included) to start a replica; `Err(true)` when it cannot run the
/// actor type at all.
async fn spawn_replica(
    node: &Arc<NodeShared>,
    target: &NodeId,
    group: &str,
    actor_type: &str,
    args: &[u8],
    singleton: bool,
    fence: u64,
) -> Result<ActorId, bool> {
    if target == &node.info.id {
        return node
            .spawn_replica(actor_type, group, fence, singleton, args, node.link_epoch())
            .await
            .map_err(|e| matches!(e, WireError::UnknownActorType { .. }));
    }
    // A member the controller learnt of from a fresh read (see `catch_up_events`) may not be in
    // this node's view yet: wait for the view, unless the node is known gone.
    if read(&node.view).has_departed(target) {
        return Err(false);
    }
    let Ok(info) = node.wait_for_member(target, node.config.ask_timeout).await else {
        return Err(false);
    };
    let addr = info.addr;
    let reply = node
        .link_to(target, addr)
        .request(
            (ActorId(0), "(replica being spawned)"),
            node.config.ask_timeout,
            |id| Header::SpawnReplica {
                id,
                actor_type: actor_type.to_owned(),
                group: group.to_owned(),
                fence,
                singleton,
            },
            |buf| {
                buf.extend_from_slice(args);
                Ok(())
            },
        )
        .await;
    match reply {
        Ok(bytes) => decode_payload::<u64>(&bytes)
            .map(ActorId)
            .map_err(|_| false),
        Err(e) => Err(matches!(e, Error::UnknownActorType { .. })),
    }
}

/// Asks `target` (this node included) to retire replica `actor` of `group`.
async fn retire(
    node: &Arc<NodeShared>,
    target: &NodeId,
    group: &str,
    actor: ActorId,
    fence: u64,
) -> Result<(), String> {
    if target == &node.info.id {
        return node
            .retire(actor, group, fence)
            .await
            .map_err(|e| format!("{e:?}"));
    }
    let Some(addr) = node.member_addr(target) else {
        return Err("node gone".to_owned());
    };
    node.link_to(target, addr)
        .request(
            (actor, "(replica being retired)"),
            node.config.ask_timeout,
            |id| Header::Retire {
                id,
                target: actor.0,
                group: group.to_owned(),
                fence,
            },
            |_| Ok(()),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Aborts a task when dropped (a task that lives as long as a scope).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
