//! The controller across real node processes on one real etcd: `cluster-node --controller`
//! processes campaign for the lead and run the replicas of a deployed group; the test process
//! (itself a node of the cluster, not a candidate and not selected for replicas) deploys,
//! scales, kills processes and watches the group.
//!
//! Each test starts its own etcd (`actormesh_testkit::Etcd`; it fails when etcd is missing) and
//! its own processes with a 2 s lease TTL. The tests run one at a time: they measure how soon
//! the group is whole again, which CPU contention would blur. Every wait is a condition with a
//! deadline; every loop is bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actormesh::discovery::EtcdDiscovery;
use actormesh::{Discovery, Error, GroupRef, GroupSpec, Node, NodeId, PlacementPolicy};
use actormesh_cluster_tests::{
    etcd_discovery, poll_until, Bump, Crash, NodeProcess, NodeSpec, Replica, Where, REPLICA_LABEL,
    TTL,
};
use actormesh_testkit::Etcd;
use tokio::sync::Semaphore;
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_cluster-node");

/// How long a process or the test node may take to appear in a view.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a group may take to reach a new replica count when nothing fails.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a graceful stop may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause between two looks at a polled condition.
const POLL: Duration = Duration::from_millis(20);
/// After a SIGKILL of a non-leader, the group must be whole within this (TTL + 2 s, plus a
/// margin for a shared 2-core machine).
const FAILOVER_LIMIT: Duration = Duration::from_secs(6);
/// After a SIGKILL of the leader, a new leader within this (TTL + 1 s, plus a margin).
const TAKEOVER_LIMIT: Duration = Duration::from_secs(5);

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn start_etcd() -> Etcd {
    Etcd::start().expect("the controller cluster tests need a real etcd")
}

/// The processes, the test node and its discovery (to ask who leads).
struct Cluster {
    me: Node,
    discovery: EtcdDiscovery,
    procs: Vec<NodeProcess>,
    cluster: String,
}

/// Starts `ids` as processes of `cluster` (`--controller` when `controller`,
/// `--supervised-worker` when `supervised`), then the test node, which waits to see them all.
async fn start_cluster(
    endpoint: &str,
    cluster: &str,
    ids: &[&str],
    controller: bool,
    supervised: bool,
) -> Cluster {
    let mut procs = Vec::new();
    for id in ids {
        let mut spec = NodeSpec::new(BIN, cluster, id).etcd(endpoint).ttl(TTL);
        if controller {
            spec = spec.controller();
        }
        if supervised {
            spec = spec.supervised_worker();
        }
        procs.push(
            spec.start()
                .await
                .unwrap_or_else(|e| panic!("{id} starts: {e}")),
        );
    }
    let discovery = etcd_discovery(endpoint, TTL)
        .await
        .expect("the test node's discovery connects");
    let me = Node::builder()
        .cluster(cluster)
        .node_id("driver")
        .discovery(discovery.clone())
        .insecure_links()
        .load_report_interval(Duration::from_millis(500))
        .start()
        .await
        .expect("the test node joins");
    for id in ids {
        me.wait_for_node(&NodeId::new(*id), JOIN_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("the test node sees {id}: {e}"));
    }
    Cluster {
        me,
        discovery,
        procs,
        cluster: cluster.to_owned(),
    }
}

impl Cluster {
    async fn leader(&self) -> Option<(NodeId, u64)> {
        self.discovery.leader(&self.cluster).await.ok().flatten()
    }

    /// Waits (bounded) until some node leads; returns it and its token.
    async fn wait_leader(&self) -> (NodeId, u64) {
        poll_until("a leader", JOIN_TIMEOUT, POLL, || async {
            self.leader().await.ok_or("no leader yet")
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn process(&mut self, id: &NodeId) -> NodeProcess {
        let at = self
            .procs
            .iter()
            .position(|p| p.id == id.as_str())
            .unwrap_or_else(|| panic!("no process {id}"));
        self.procs.remove(at)
    }

    /// Stops the processes gracefully (each must exit 0), then the test node.
    async fn stop(self) {
        for mut p in self.procs {
            let status = p
                .stop(STOP_TIMEOUT)
                .await
                .unwrap_or_else(|e| panic!("{} stops: {e}", p.id));
            assert!(status.success(), "{} exited with {status}", p.id);
        }
        self.me.shutdown().await;
    }
}

fn spec(group: &str, tag: &str, replicas: u32) -> GroupSpec {
    GroupSpec::new::<Replica>(group, &tag.to_owned(), replicas)
        .expect("the spec encodes")
        .placement(PlacementPolicy::Spread)
        .select(REPLICA_LABEL.0, REPLICA_LABEL.1)
}

/// The distinct instances `group` sees, counted by node, and whether none is seen twice.
fn by_node(group: &GroupRef<Replica>) -> (BTreeMap<String, usize>, usize, usize) {
    let instances = group.instances();
    let distinct: BTreeSet<(String, u64)> = instances
        .iter()
        .map(|r| (r.node().as_str().to_owned(), r.id().get()))
        .collect();
    let mut counts = BTreeMap::new();
    for (node, _) in &distinct {
        *counts.entry(node.clone()).or_default() += 1;
    }
    (counts, distinct.len(), instances.len())
}

/// Waits until `group` sees exactly `n` distinct instances, none on `excluded`, satisfying
/// `shape`; returns the count per node and when it was first seen so.
///
/// Every change the tests wait for only moves the group towards that state (the count goes
/// one way, the dead node's instances only leave), so the first look that matches it is the
/// settled group, not a state passed through.
async fn settle(
    group: &GroupRef<Replica>,
    n: usize,
    excluded: &[&str],
    timeout: Duration,
    shape: impl Fn(&BTreeMap<String, usize>) -> bool,
) -> (BTreeMap<String, usize>, Instant) {
    let what = format!(
        "group {} settles at {n} (excluding {excluded:?})",
        group.name()
    );
    poll_until(&what, timeout, POLL, || async {
        let (counts, distinct, total) = by_node(group);
        let ok = distinct == n
            && total == n
            && excluded.iter().all(|x| !counts.contains_key(*x))
            && shape(&counts);
        if ok {
            Ok((counts, Instant::now()))
        } else {
            Err(format!("{counts:?}, {distinct} distinct of {total}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

fn even(counts: &BTreeMap<String, usize>) -> bool {
    let max = counts.values().copied().max().unwrap_or(0);
    let min = counts.values().copied().min().unwrap_or(0);
    max - min <= 1
}

/// Asks every instance `group` sees for its whereabouts: each answers, from the node its
/// reference names, with `tag`, and no (node, instance) answers twice.
async fn all_answer(group: &GroupRef<Replica>, tag: &str) {
    let mut seen = BTreeSet::new();
    for r in group.instances() {
        let w = r
            .ask_timeout(Where, Duration::from_secs(3))
            .await
            .unwrap_or_else(|e| panic!("replica {} on {} answers: {e}", r.id(), r.node()));
        assert_eq!(w.node, r.node().as_str());
        assert_eq!(w.tag, tag);
        assert!(
            seen.insert((w.node, w.instance)),
            "a replica answered twice"
        );
    }
}

// ---------------------------------------------------------------------------------------------

#[actix::test]
async fn a_killed_node_s_replicas_are_replaced_on_the_survivors() {
    let _serial = SERIAL.lock().await;
    let etcd = start_etcd();
    let mut c = start_cluster(
        &etcd.endpoint(),
        "ctl-failover",
        &["p1", "p2", "p3"],
        true,
        false,
    )
    .await;
    c.me.deploy(&spec("replicas", "f", 12)).await.unwrap();
    let group = c.me.group::<Replica>("replicas").await.unwrap();
    let (counts, _) = settle(&group, 12, &[], SETTLE_TIMEOUT, |c| {
        c.len() == 3 && c.values().all(|&n| n == 4)
    })
    .await;
    println!("deployed: {counts:?}");
    all_answer(&group, "f").await;

    let (leader, _) = c.wait_leader().await;
    let victim_id = ["p1", "p2", "p3"]
        .into_iter()
        .find(|p| *p != leader.as_str())
        .unwrap();
    let mut victim = c.process(&NodeId::new(victim_id));
    victim.kill().await.expect("SIGKILL");
    let killed = Instant::now();
    let (counts, whole_at) = settle(&group, 12, &[victim_id], SETTLE_TIMEOUT, |c| {
        c.len() == 2 && c.values().all(|&n| n == 6)
    })
    .await;
    let took = whole_at - killed;
    println!(
        "failover: killed {victim_id} (leader {leader}); 12 live replicas again after {took:?}: {counts:?}"
    );
    assert!(
        took <= FAILOVER_LIMIT,
        "the group was whole again only after {took:?} (limit {FAILOVER_LIMIT:?})"
    );
    all_answer(&group, "f").await;
    c.stop().await;
}

#[actix::test]
async fn another_process_takes_over_when_the_leader_is_killed() {
    let _serial = SERIAL.lock().await;
    let etcd = start_etcd();
    let mut c = start_cluster(
        &etcd.endpoint(),
        "ctl-leader",
        &["p1", "p2", "p3"],
        true,
        false,
    )
    .await;
    c.me.deploy(&spec("replicas", "l", 6)).await.unwrap();
    let group = c.me.group::<Replica>("replicas").await.unwrap();
    settle(&group, 6, &[], SETTLE_TIMEOUT, |c| {
        c.len() == 3 && c.values().all(|&n| n == 2)
    })
    .await;
    let (leader, token) = c.wait_leader().await;
    let mut old = c.process(&leader);
    old.kill().await.expect("SIGKILL");
    let killed = Instant::now();
    let (next, next_token) = poll_until("a new leader", JOIN_TIMEOUT, POLL, || async {
        match c.leader().await {
            Some((n, t)) if n != leader => Ok((n, t)),
            other => Err(format!("leader {other:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let took = killed.elapsed();
    println!("takeover: {leader} (token {token}) killed; {next} leads (token {next_token}) after {took:?}");
    assert!(
        next_token > token,
        "the new token {next_token} is not larger than {token}"
    );
    assert!(
        took <= TAKEOVER_LIMIT,
        "a new leader only after {took:?} (limit {TAKEOVER_LIMIT:?})"
    );
    // The new leader replaces the killed leader's replicas...
    let (counts, whole_at) = settle(&group, 6, &[leader.as_str()], SETTLE_TIMEOUT, |c| {
        c.len() == 2 && c.values().all(|&n| n == 3)
    })
    .await;
    println!(
        "takeover: 6 replicas again after {:?}: {counts:?}",
        whole_at - killed
    );
    all_answer(&group, "l").await;
    // ... and applies a scale request.
    c.me.scale("replicas", 2).await.unwrap();
    let (counts, _) = settle(&group, 2, &[leader.as_str()], SETTLE_TIMEOUT, even).await;
    println!("takeover: scaled to 2: {counts:?}");
    all_answer(&group, "l").await;
    c.stop().await;
}

/// How many callers ask during the scale-down.
const CALLERS: usize = 4;

/// Results of the plain asks made during a scale-down.
#[derive(Debug, Default)]
struct Asks {
    ok: u64,
    /// Refused before the message reached a running replica (it had already stopped).
    not_found: u64,
    no_instances: u64,
    /// Any other error (none expected).
    other: Vec<Error>,
}

#[actix::test]
async fn scaling_up_and_down_stays_even_and_plain_asks_are_not_lost() {
    let _serial = SERIAL.lock().await;
    let etcd = start_etcd();
    let c = start_cluster(
        &etcd.endpoint(),
        "ctl-scale",
        &["p1", "p2", "p3"],
        true,
        false,
    )
    .await;
    c.me.deploy(&spec("replicas", "s", 4)).await.unwrap();
    let group = c.me.group::<Replica>("replicas").await.unwrap();
    let (counts, _) = settle(&group, 4, &[], SETTLE_TIMEOUT, even).await;
    println!("scale 4: {counts:?}");
    assert_eq!(counts.len(), 3, "{counts:?}");
    c.me.scale("replicas", 16).await.unwrap();
    let (counts, _) = settle(&group, 16, &[], SETTLE_TIMEOUT, even).await;
    println!("scale 16: {counts:?}");
    assert_eq!(counts.len(), 3, "{counts:?}");

    // Callers ask (plain `ask`, never retried) while the group shrinks to 4.
    let stop = Arc::new(AtomicBool::new(false));
    // One permit per caller once it has an answer.
    let asking = Arc::new(Semaphore::new(0));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let group = group.clone();
            let stop = stop.clone();
            let asking = asking.clone();
            actix_rt::spawn(async move {
                let mut asks = Asks::default();
                for _ in 0..20_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match group.ask(Where).await {
                        Ok(w) => {
                            assert_eq!(w.tag, "s", "an answer from a stranger: {w:?}");
                            asks.ok += 1;
                            if asks.ok == 1 {
                                asking.add_permits(1);
                            }
                        }
                        Err(Error::ActorNotFound { .. }) => asks.not_found += 1,
                        Err(Error::NoInstances { .. }) => asks.no_instances += 1,
                        Err(e) => asks.other.push(e),
                    }
                    // Pacing, not a wait: ~1 ask/ms per caller, a load that starves no process.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                asks
            })
        })
        .collect();
    drop(
        tokio::time::timeout(JOIN_TIMEOUT, asking.acquire_many(CALLERS as u32))
            .await
            .expect("every caller has an answer before the scale-down"),
    );
    c.me.scale("replicas", 4).await.unwrap();
    let (counts, _) = settle(&group, 4, &[], SETTLE_TIMEOUT, even).await;
    println!("scale back to 4: {counts:?}");
    assert_eq!(counts.len(), 3, "{counts:?}");
    stop.store(true, Ordering::Relaxed);
    let mut asks = Asks::default();
    for caller in callers {
        let one = tokio::time::timeout(Duration::from_secs(10), caller)
            .await
            .expect("the caller stops")
            .expect("the caller did not panic");
        asks.ok += one.ok;
        asks.not_found += one.not_found;
        asks.no_instances += one.no_instances;
        asks.other.extend(one.other);
    }
    println!(
        "asks during the scale-down: {} answered, {} refused (replica already stopped), {} with no instance, other errors {:?}",
        asks.ok, asks.not_found, asks.no_instances, asks.other
    );
    assert!(asks.ok > 0, "{asks:?}");
    assert!(
        asks.other.is_empty(),
        "asks failed after they may have been accepted: {:?}",
        asks.other
    );
    all_answer(&group, "s").await;
    c.stop().await;
}

#[actix::test]
async fn a_panicking_handler_restarts_its_actor_alone() {
    let _serial = SERIAL.lock().await;
    let etcd = start_etcd();
    let c = start_cluster(&etcd.endpoint(), "ctl-supervise", &["p1"], false, true).await;
    let sup = c.me.lookup::<Replica>("sup-p1").await.unwrap();
    let neighbour = c.me.lookup::<Replica>("neighbour-p1").await.unwrap();
    for expected in 1..=3 {
        assert_eq!(sup.ask(Bump).await.unwrap(), expected);
    }
    assert_eq!(neighbour.ask(Bump).await.unwrap(), 1);
    let before = sup.ask(Where).await.unwrap();

    let err = sup.ask(Crash).await.unwrap_err();
    let crashed = Instant::now();
    assert!(matches!(err, Error::HandlerPanicked { .. }), "{err:?}");
    // The neighbour on the same process keeps its state and answers at once.
    assert_eq!(
        neighbour
            .ask_timeout(Bump, Duration::from_millis(500))
            .await
            .unwrap(),
        2
    );
    // The supervised actor answers again under its name, with a fresh state.
    let bumps = poll_until(
        "the supervised actor answers again",
        Duration::from_secs(5),
        POLL,
        || async {
            c.me.lookup::<Replica>("sup-p1")
                .await?
                .ask_timeout(Bump, Duration::from_millis(500))
                .await
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "supervision: answering again {:?} after the crash",
        crashed.elapsed()
    );
    assert_eq!(bumps, 1, "the restarted actor starts afresh");
    let again = c.me.lookup::<Replica>("sup-p1").await.unwrap();
    assert_eq!(again.id(), sup.id(), "same actor id after the restart");
    let after = again.ask(Where).await.unwrap();
    assert_eq!(after.tag, before.tag);
    assert_ne!(after.instance, before.instance, "a fresh instance");
    assert_eq!(neighbour.ask(Bump).await.unwrap(), 3);
    c.stop().await;
}
