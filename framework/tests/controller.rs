//! The controller: desired-state groups kept across node failures and scaling (in process).

mod common;

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use actix::{Actor, Context, Handler, Message};
use actormesh::prelude::*;
use actormesh::{Discovery, GroupSpec, PlacementPolicy};
use common::Gate;
use serde::{Deserialize, Serialize};

#[derive(Message, Serialize, Deserialize, Clone, Debug)]
#[rtype(result = "String")]
struct Where;
impl RemoteMessage for Where {
    const NAME: &'static str = "ctl.Where";
}
impl Idempotent for Where {}

struct Replica {
    tag: String,
}

impl Actor for Replica {
    type Context = Context<Self>;
}

impl Handler<Where> for Replica {
    type Result = String;
    fn handle(&mut self, _: Where, _: &mut Context<Self>) -> String {
        self.tag.clone()
    }
}

impl Spawnable for Replica {
    type Args = String;
    fn from_args(tag: String, _: &mut actormesh::SpawnContext<'_, Self>) -> Self {
        Replica { tag }
    }
}

/// Keeps an ask in flight on the replica's node: waits at [`SLOW`] until the test opens it.
#[derive(Message, Serialize, Deserialize, Clone, Debug)]
#[rtype(result = "()")]
struct Slow;
impl RemoteMessage for Slow {
    const NAME: &'static str = "ctl.Slow";
}
impl Idempotent for Slow {}

/// Where [`Slow`] waits. Replicas are started by the controller from wire arguments, so the
/// gate is process-wide; only the autoscaler test sends `Slow`.
static SLOW: LazyLock<Gate> = LazyLock::new(Gate::closed);

impl Handler<Slow> for Replica {
    type Result = actix::ResponseFuture<()>;
    fn handle(&mut self, _: Slow, _: &mut Context<Self>) -> Self::Result {
        Box::pin(SLOW.pass())
    }
}

actormesh::remote_actor!(Replica = "ctl.Replica" { Where, Slow });

async fn cluster(n: usize) -> (MemoryDiscovery, Vec<Node>) {
    let discovery = MemoryDiscovery::new();
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(
            Node::builder()
                .cluster("ctl")
                .node_id(format!("n{i}"))
                .discovery(discovery.clone())
                .spawnable::<Replica>()
                .controller(true)
                .load_report_interval(Duration::from_millis(100))
                .start()
                .await
                .unwrap(),
        );
    }
    for a in &nodes {
        for b in &nodes {
            a.wait_for_node(b.id(), Duration::from_secs(5))
                .await
                .unwrap();
        }
    }
    (discovery, nodes)
}

/// Replicas per node as `observer` sees the group.
fn per_node(observer: &GroupRef<Replica>) -> BTreeMap<String, usize> {
    let mut per_node = BTreeMap::new();
    for r in observer.instances() {
        *per_node.entry(r.node().to_string()).or_default() += 1;
    }
    per_node
}

/// Replicas per node as `observer` sees the group, once it sees exactly `n`, none of them on
/// `gone` (a dead node whose replicas the view may still hold).
///
/// Each change the tests wait for only ever moves the count towards `n`, so the first look
/// that matches is the settled state.
async fn settle(
    observer: &GroupRef<Replica>,
    n: usize,
    gone: Option<&NodeId>,
) -> BTreeMap<String, usize> {
    observer
        .wait_until(Duration::from_secs(15), |seen| {
            seen.len() == n && gone.is_none_or(|g| seen.iter().all(|r| r.node() != g))
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the group settles at {n} replicas, none on {gone:?}: {e}; saw {:?}",
                per_node(observer)
            )
        });
    per_node(observer)
}

#[actix::test]
async fn a_deployed_group_is_kept_whole_through_failover_and_scaling() {
    let (discovery, nodes) = cluster(3).await;
    let spec = GroupSpec::new::<Replica>("replicas", &"r".to_owned(), 12)
        .unwrap()
        .placement(PlacementPolicy::Spread);
    nodes[0].deploy(&spec).await.unwrap();
    let observer = nodes[0].group::<Replica>("replicas").await.unwrap();
    let spread = settle(&observer, 12, None).await;
    assert_eq!(
        spread.values().copied().collect::<Vec<_>>(),
        vec![4, 4, 4],
        "{spread:?}"
    );
    // Kill a node holding a third of them: back to 12 on the survivors, each counted once.
    let (leader, _) = discovery.leader("ctl").await.unwrap().unwrap();
    let victim = nodes
        .iter()
        .find(|n| n.id() != &leader)
        .unwrap()
        .id()
        .clone();
    assert!(discovery.fail("ctl", &victim));
    let spread = settle(&observer, 12, Some(&victim)).await;
    assert_eq!(
        spread.values().copied().collect::<Vec<_>>(),
        vec![6, 6],
        "{spread:?}"
    );
    let mut ids: Vec<_> = observer
        .instances()
        .iter()
        .map(|r| (r.node().clone(), r.id()))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 12, "no replica counted twice");
    // Scale down and up again.
    nodes[0].scale("replicas", 4).await.unwrap();
    let spread = settle(&observer, 4, Some(&victim)).await;
    assert_eq!(spread.values().sum::<usize>(), 4);
    assert!(spread.values().all(|&n| n == 2), "{spread:?}");
    nodes[0].scale("replicas", 16).await.unwrap();
    let spread = settle(&observer, 16, Some(&victim)).await;
    assert!(spread.values().all(|&n| n == 8), "{spread:?}");
    assert_eq!(observer.ask_idempotent(Where).await.unwrap(), "r");
    for n in nodes {
        n.shutdown().await;
    }
}

#[actix::test]
async fn another_node_takes_over_when_the_leader_dies() {
    let (discovery, nodes) = cluster(3).await;
    let spec = GroupSpec::new::<Replica>("taken-over", &"t".to_owned(), 6).unwrap();
    nodes[0].deploy(&spec).await.unwrap();
    let observer_node = |leader: &NodeId| nodes.iter().find(|n| n.id() != leader).unwrap().clone();
    let (leader, first_token) = discovery.leader("ctl").await.unwrap().unwrap();
    let survivor = observer_node(&leader);
    let observer = survivor.group::<Replica>("taken-over").await.unwrap();
    settle(&observer, 6, None).await;
    assert!(discovery.fail("ctl", &leader));
    let (next, token) = discovery
        .leader("ctl")
        .await
        .unwrap()
        .expect("a new leader");
    assert_ne!(next, leader);
    assert!(token > first_token);
    // The new leader restores the replicas the old one's node held and follows new specs.
    settle(&observer, 6, Some(&leader)).await;
    survivor.scale("taken-over", 2).await.unwrap();
    settle(&observer, 2, Some(&leader)).await;
    for n in nodes {
        n.shutdown().await;
    }
}

#[actix::test]
async fn scaling_an_unknown_group_is_a_clear_error() {
    let (_d, nodes) = cluster(1).await;
    let err = nodes[0].scale("nothing", 3).await.unwrap_err();
    assert!(matches!(err, Error::UnknownGroup(_)), "{err:?}");
    nodes[0].shutdown().await;
}

#[actix::test]
async fn a_singleton_has_one_instance_and_moves_when_its_node_dies() {
    let (discovery, nodes) = cluster(3).await;
    let spec = GroupSpec::singleton::<Replica>("only", &"s".to_owned()).unwrap();
    nodes[0].deploy(&spec).await.unwrap();
    let observer = nodes[0].group::<Replica>("only").await.unwrap();
    settle(&observer, 1, None).await;
    let actors = |nodes: &[Node]| nodes.iter().map(Node::actor_count).sum::<usize>();
    let before = actors(&nodes);
    // Asking for more changes nothing: a singleton stays one. The leader applies spec changes
    // in order and its orders reach each node in order, so once a group deployed after the
    // scale request has a replica on every node, every node has received whatever the leader
    // ordered for the request.
    nodes[0].scale("only", 3).await.unwrap();
    let later = GroupSpec::new::<Replica>("later", &"l".to_owned(), 3)
        .unwrap()
        .max_per_node(1);
    nodes[0].deploy(&later).await.unwrap();
    nodes[0]
        .group::<Replica>("later")
        .await
        .unwrap()
        .wait_for_instances(3, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        actors(&nodes),
        before + 3,
        "only the later group's replicas started"
    );
    assert_eq!(observer.instances().len(), 1, "a singleton stays one");
    let host = observer.instances()[0].node().clone();
    // Observe from a node that will survive.
    let watcher_node = nodes.iter().find(|n| n.id() != &host).unwrap();
    let observer = watcher_node.group::<Replica>("only").await.unwrap();
    settle(&observer, 1, None).await;
    assert!(discovery.fail("ctl", &host));
    // Every change of the observer's view is looked at: never two instances at once.
    let mut max_seen = 0;
    observer
        .wait_until(Duration::from_secs(10), |instances| {
            max_seen = max_seen.max(instances.len());
            matches!(instances, [one] if one.node() != &host)
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the singleton moved off the dead node: {e}; saw {:?}",
                per_node(&observer)
            )
        });
    assert!(max_seen <= 1, "never two instances");
    for n in nodes {
        n.shutdown().await;
    }
}

#[actix::test]
async fn the_autoscaler_follows_the_load_within_bounds() {
    let (discovery, nodes) = cluster(2).await;
    // A caller that runs no replicas, so that every ask is remote and counted in flight.
    let caller = Node::builder()
        .cluster("ctl")
        .node_id("caller")
        .discovery(discovery.clone())
        .start()
        .await
        .unwrap();
    for n in &nodes {
        caller
            .wait_for_node(n.id(), Duration::from_secs(5))
            .await
            .unwrap();
    }
    let spec = GroupSpec::new::<Replica>("elastic", &"e".to_owned(), 1)
        .unwrap()
        .autoscale_with(actormesh::Autoscale {
            min: 1,
            max: 6,
            target_per_replica: 4.0,
            hysteresis: 0.25,
            cooldown_ms: 300,
        });
    nodes[0].deploy(&spec).await.unwrap();
    let group = caller.group::<Replica>("elastic").await.unwrap();
    settle(&group, 1, None).await;
    // 40 callers keep asks in flight (held at the gate): 40 / 4 = 10 replicas wanted, capped
    // at 6.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..40 {
        let g = group.clone();
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            for _ in 0..1_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let _ = g.ask_idempotent(Slow).await;
            }
        }));
    }
    settle(&group, 6, None).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    SLOW.open();
    for t in load {
        t.await.unwrap();
    }
    // Idle: back to the minimum, never below.
    settle(&group, 1, None).await;
    caller.shutdown().await;
    for n in nodes {
        n.shutdown().await;
    }
}

/// Puts every replica on the node with the largest id.
#[derive(Debug)]
struct LastNode;

impl actormesh::placement::Placement for LastNode {
    fn place(
        &self,
        candidates: &[actormesh::placement::Candidate],
        _: &actormesh::placement::Constraints,
        count: u32,
    ) -> Vec<usize> {
        let last = (0..candidates.len()).max_by_key(|&i| candidates[i].node.clone());
        last.map(|i| vec![i; count as usize]).unwrap_or_default()
    }

    fn name(&self) -> &'static str {
        "last_node"
    }
}

#[actix::test]
async fn a_custom_placement_policy_plugs_into_the_controller() {
    let discovery = MemoryDiscovery::new();
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(
            Node::builder()
                .cluster("custom")
                .node_id(format!("n{i}"))
                .discovery(discovery.clone())
                .spawnable::<Replica>()
                .placement("last", LastNode)
                .controller(true)
                .start()
                .await
                .unwrap(),
        );
    }
    for n in &nodes {
        nodes[0]
            .wait_for_node(n.id(), Duration::from_secs(5))
            .await
            .unwrap();
    }
    let spec = GroupSpec::new::<Replica>("custom", &"c".to_owned(), 3)
        .unwrap()
        .placement(PlacementPolicy::Custom("last".into()));
    nodes[0].deploy(&spec).await.unwrap();
    let group = nodes[0].group::<Replica>("custom").await.unwrap();
    let per_node = settle(&group, 3, None).await;
    assert_eq!(
        per_node.into_iter().collect::<Vec<_>>(),
        vec![("n2".to_owned(), 3)]
    );
    for n in nodes {
        n.shutdown().await;
    }
}

/// A spec no live node can run: `deploy` succeeds (nodes may come later), the group's status
/// says why it is pending and what to do, a wait for its instances names the reason, and once
/// a node that can spawn the type joins, the group fills up.
#[actix::test]
async fn a_spec_no_node_can_run_says_why_until_one_can() {
    let discovery = MemoryDiscovery::new();
    let leader = Node::builder()
        .cluster("ctl")
        .node_id("leader")
        .discovery(discovery.clone())
        .controller(true)
        .start()
        .await
        .unwrap();
    let spec = GroupSpec::new::<Replica>("archive", &"a".to_owned(), 2).unwrap();
    leader.deploy(&spec).await.unwrap();
    let status = leader.group_status("archive").await.unwrap();
    assert_eq!((status.desired, status.running), (2, 0));
    assert!(
        matches!(&status.blocked, Some(actormesh::Blocked::NoSpawnableNode { actor_type }) if actor_type == "ctl.Replica"),
        "{status:?}"
    );
    let text = status.to_string();
    assert!(
        text.contains("no live node can spawn `ctl.Replica`"),
        "{text}"
    );
    assert!(text.contains("NodeBuilder::spawnable"), "{text}");

    let group = leader.group::<Replica>("archive").await.unwrap();
    match group
        .wait_for_instances(2, Duration::from_millis(200))
        .await
    {
        Err(Error::GroupNotReady {
            wanted,
            seen,
            reason,
            ..
        }) => {
            assert_eq!((wanted, seen), (2, 0));
            assert!(reason.contains("no live node can spawn"), "{reason}");
        }
        other => panic!("expected GroupNotReady, got {other:?}"),
    }
    // A group nobody deploys or joins says that instead.
    let nobody = leader.group::<Replica>("nobody").await.unwrap();
    let err = nobody
        .wait_for_instances(1, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no spec deploys"), "{err}");
    assert!(matches!(
        leader.group_status("nobody").await,
        Err(Error::UnknownGroup(_))
    ));

    // A node that can run it joins: the controller fills the group.
    let worker = Node::builder()
        .cluster("ctl")
        .node_id("worker")
        .discovery(discovery.clone())
        .spawnable::<Replica>()
        .start()
        .await
        .unwrap();
    group
        .wait_for_instances(2, Duration::from_secs(10))
        .await
        .unwrap();
    let status = leader.group_status("archive").await.unwrap();
    assert!(status.is_complete(), "{status}");
    assert_eq!(status.blocked, None);
    worker.shutdown().await;
    leader.shutdown().await;
}
