//! Failover benchmark on a real etcd: how long a deployed group takes to be whole again after
//! a node process is SIGKILLed.
//!
//! `cargo run --release -p actormesh-examples --bin failover` starts its own etcd (binary on
//! PATH or `ETCD_BIN`), 3 child node processes (this binary re-executed with the role `node`)
//! that are controller candidates and run replicas, and deploys a group of 12 replicas from
//! the observing main process (not a candidate, not selected for replicas). Then, 10 times, it
//! SIGKILLs the child that is not the leader and holds the most replicas, measures from the
//! kill until the observer sees 12 live replicas again (none on the dead child, each once),
//! and starts a replacement child. It prints p50/p99 beside the target and the floor (the
//! lease TTL). It never asserts on speed; every wait is bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use actix::{Actor, Context, Handler, Message};
use actormesh::discovery::{EtcdConfig, EtcdDiscovery};
use actormesh::prelude::*;
use actormesh::{Discovery, GroupSpec, PlacementPolicy};
use actormesh_examples::{ms, percentile, BoxError, ChildProcess};
use actormesh_testkit::Etcd;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

const TTL: Duration = Duration::from_secs(2);
const CLUSTER: &str = "failover";
const GROUP: &str = "replicas";
const REPLICAS: usize = 12;
const KILLS: usize = 10;
const TARGET_P99: Duration = Duration::from_secs(3);
/// How long the group may take to be whole again before a run counts as failed.
const LIMIT: Duration = Duration::from_secs(30);

/// Answers the id of the node running the replica.
#[derive(Debug, Clone, Message, Serialize, Deserialize)]
#[rtype(result = "String")]
struct Where;
impl RemoteMessage for Where {
    const NAME: &'static str = "failover.Where";
}
impl Idempotent for Where {}

#[derive(Debug)]
struct Replica {
    node: String,
}

impl Actor for Replica {
    type Context = Context<Self>;
}

impl Handler<Where> for Replica {
    type Result = String;
    fn handle(&mut self, _: Where, _: &mut Context<Self>) -> String {
        self.node.clone()
    }
}

impl Spawnable for Replica {
    /// Unused: a replica reports the node id its process was started with.
    type Args = String;
    fn from_args(_: String, _: &mut actormesh::SpawnContext<'_, Self>) -> Self {
        Replica {
            node: std::env::args().nth(3).unwrap_or_default(),
        }
    }
}

actormesh::remote_actor!(Replica = "failover.Replica" { Where });

async fn discovery(endpoint: &str) -> Result<EtcdDiscovery, actormesh::Error> {
    EtcdDiscovery::connect(EtcdConfig::new([endpoint]).lease_ttl(TTL)).await
}

/// A child node: a controller candidate running replicas, until its stdin closes.
async fn run_node(endpoint: &str, id: &str) -> Result<(), BoxError> {
    let node = Node::builder()
        .cluster(CLUSTER)
        .node_id(id)
        .discovery(discovery(endpoint).await?)
        .insecure_links()
        .label("role", "replica")
        .spawnable::<Replica>()
        .controller(true)
        .start()
        .await?;
    println!("READY");
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    node.shutdown().await;
    Ok(())
}

/// Distinct replicas the observer sees, by node; `None` when one is seen twice.
fn by_node(group: &GroupRef<Replica>) -> Option<BTreeMap<String, usize>> {
    let instances = group.instances();
    let distinct: BTreeSet<(String, u64)> = instances
        .iter()
        .map(|r| (r.node().as_str().to_owned(), r.id().get()))
        .collect();
    if distinct.len() != instances.len() {
        return None;
    }
    let mut counts = BTreeMap::new();
    for (node, _) in distinct {
        *counts.entry(node).or_default() += 1;
    }
    Some(counts)
}

/// Waits until the group has `REPLICAS` distinct replicas, none on `dead`; the time since
/// `since`, or `None` after `LIMIT`.
async fn whole(group: &GroupRef<Replica>, dead: Option<&str>, since: Instant) -> Option<Duration> {
    let deadline = Instant::now() + LIMIT;
    while Instant::now() < deadline {
        if let Some(counts) = by_node(group) {
            let total: usize = counts.values().sum();
            if total == REPLICAS && dead.is_none_or(|d| !counts.contains_key(d)) {
                return Some(since.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// Every replica the observer sees answers from its own node.
async fn all_answer(group: &GroupRef<Replica>) -> Result<(), BoxError> {
    for r in group.instances() {
        let node = r.ask_timeout(Where, Duration::from_secs(3)).await?;
        if node != r.node().as_str() {
            return Err(format!("replica on {} says it runs on {node}", r.node()).into());
        }
    }
    Ok(())
}

async fn bench(endpoint: &str) -> Result<Vec<Duration>, BoxError> {
    let mut children: Vec<(String, ChildProcess)> = Vec::new();
    let mut next = 0;
    for _ in 0..3 {
        let id = format!("c{next}");
        next += 1;
        children.push((
            id.clone(),
            ChildProcess::ready(&["node", endpoint, &id]).await?,
        ));
    }
    let watch = discovery(endpoint).await?;
    let observer = Node::builder()
        .cluster(CLUSTER)
        .node_id("observer")
        .discovery(watch.clone())
        .insecure_links()
        .start()
        .await?;
    for (id, _) in &children {
        observer
            .wait_for_node(&NodeId::new(id.as_str()), Duration::from_secs(10))
            .await?;
    }
    let spec = GroupSpec::new::<Replica>(GROUP, &String::new(), REPLICAS as u32)?
        .placement(PlacementPolicy::Spread)
        .select("role", "replica");
    observer.deploy(&spec).await?;
    let group = observer.group::<Replica>(GROUP).await?;
    let started = Instant::now();
    whole(&group, None, started)
        .await
        .ok_or("the group never reached 12 replicas")?;
    println!(
        "   deployed 12 replicas in {}: {:?}",
        ms(started.elapsed()),
        by_node(&group)
    );
    let mut times = Vec::new();
    for i in 0..KILLS {
        let (leader, _) = watch.leader(CLUSTER).await?.ok_or("no leader")?;
        let counts = by_node(&group).unwrap_or_default();
        let victim = children
            .iter()
            .map(|(id, _)| id.clone())
            .filter(|id| id != leader.as_str())
            .max_by_key(|id| counts.get(id).copied().unwrap_or(0))
            .ok_or("no non-leader child")?;
        let at = children
            .iter()
            .position(|(id, _)| *id == victim)
            .ok_or("victim gone")?;
        let (_, mut process) = children.remove(at);
        let held = counts.get(&victim).copied().unwrap_or(0);
        process.child.start_kill()?;
        let killed = Instant::now();
        let took = whole(&group, Some(&victim), killed)
            .await
            .ok_or_else(|| format!("kill {}: the group was not whole within {LIMIT:?}", i + 1))?;
        let _ = tokio::time::timeout(Duration::from_secs(10), process.child.wait()).await;
        all_answer(&group).await?;
        println!(
            "   kill {:2}: {victim} (held {held:2}, leader {leader}) -> 12 live replicas after {} {:?}",
            i + 1,
            ms(took),
            by_node(&group).unwrap_or_default()
        );
        times.push(took);
        let id = format!("c{next}");
        next += 1;
        children.push((
            id.clone(),
            ChildProcess::ready(&["node", endpoint, &id]).await?,
        ));
        observer
            .wait_for_node(&NodeId::new(id.as_str()), Duration::from_secs(10))
            .await?;
    }
    for (_, c) in children {
        c.stop().await;
    }
    observer.shutdown().await;
    times.sort();
    Ok(times)
}

#[actix::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [role, endpoint, id] = args.as_slice() {
        if role == "node" {
            return run_node(endpoint, id).await;
        }
    }
    let etcd = Etcd::start()?;
    let endpoint = etcd.endpoint();
    println!("actormesh failover bench (etcd at {endpoint}, lease TTL {TTL:?})");
    println!(
        "machine: {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "\n3 controller nodes, a group of {REPLICAS} replicas; SIGKILL of a non-leader, {KILLS} times"
    );
    let times = bench(&endpoint).await?;
    let p50 = percentile(&times, 50.0);
    let p99 = percentile(&times, 99.0);
    println!("\nfigure                                   | actormesh   | floor / target");
    println!(
        "-----------------------------------------|-------------|------------------------------"
    );
    println!(
        "group whole again after SIGKILL, p50     | {} | floor TTL {}",
        ms(p50),
        ms(TTL)
    );
    println!(
        "group whole again after SIGKILL, p99     | {} | target <= {} : {}",
        ms(p99),
        ms(TARGET_P99),
        if p99 <= TARGET_P99 { "met" } else { "NOT met" }
    );
    Ok(())
}
