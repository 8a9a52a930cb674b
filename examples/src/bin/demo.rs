//! The actormesh demo: three nodes in one process on the embedded discovery.
//!
//! Shows asks and tells across nodes, remote spawn, named lookup, a reference passed inside a
//! message, watching a remote actor, what a caller sees when a node leaves, and the controller
//! making a deployed group whole again on the surviving nodes after a node crashes.
//!
//! Run it with `./scripts/demo.sh` or `cargo run --release -p actormesh-examples --bin demo`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::{Actor, Context, Handler, Message, ResponseFuture};
use actormesh::prelude::*;
use actormesh::{Discovery, GroupSpec};
use serde::{Deserialize, Serialize};

/// Adds to a running total and answers the new total.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
struct Add(u64);
impl RemoteMessage for Add {
    const NAME: &'static str = "demo.Add";
}

/// Answers the total.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
struct Total;
impl RemoteMessage for Total {
    const NAME: &'static str = "demo.Total";
}

/// A counter; spawnable on other nodes with its starting total.
struct Counter {
    total: u64,
}

impl Actor for Counter {
    type Context = Context<Self>;
}

impl Handler<Add> for Counter {
    type Result = u64;
    fn handle(&mut self, msg: Add, _: &mut Context<Self>) -> u64 {
        self.total += msg.0;
        self.total
    }
}

impl Handler<Total> for Counter {
    type Result = u64;
    fn handle(&mut self, _: Total, _: &mut Context<Self>) -> u64 {
        self.total
    }
}

impl Spawnable for Counter {
    type Args = u64;
    fn from_args(start: u64, _: &mut actormesh::SpawnContext<'_, Self>) -> Self {
        Counter { total: start }
    }
}

actormesh::remote_actor!(Counter = "demo.Counter" { Add, Total });

/// Carries a reference to a counter: the auditor asks that counter for its total.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Result<u64, String>")]
struct Audit {
    counter: ActorRef<Counter>,
}
impl RemoteMessage for Audit {
    const NAME: &'static str = "demo.Audit";
}

struct Auditor;

impl Actor for Auditor {
    type Context = Context<Self>;
}

impl Handler<Audit> for Auditor {
    type Result = ResponseFuture<Result<u64, String>>;
    fn handle(&mut self, msg: Audit, _: &mut Context<Self>) -> Self::Result {
        Box::pin(async move { msg.counter.ask(Total).await.map_err(|e| e.to_string()) })
    }
}

actormesh::remote_actor!(Auditor = "demo.Auditor" { Audit });

/// Prints what it is told about terminated actors.
struct Watcher {
    seen: tokio::sync::mpsc::UnboundedSender<Terminated>,
}

impl Actor for Watcher {
    type Context = Context<Self>;
}

impl Handler<Terminated> for Watcher {
    type Result = ();
    fn handle(&mut self, msg: Terminated, _: &mut Context<Self>) {
        let _ = self.seen.send(msg);
    }
}

type BoxError = Box<dyn std::error::Error>;

/// Starts a node of the demo cluster: it can run counters for other nodes and for the
/// controller, and it is a candidate to lead the controller.
async fn start(discovery: &MemoryDiscovery, id: &str) -> Result<Node, Error> {
    Node::builder()
        .cluster("demo")
        .node_id(id)
        .discovery(discovery.clone())
        .spawnable::<Counter>()
        .controller(true)
        .start()
        .await
}

/// Polls the instances of `group` every 10 ms until `done` holds for them, for at most
/// `timeout`; returns how many run on each node.
async fn wait_for_group(
    group: &GroupRef<Counter>,
    timeout: Duration,
    done: impl Fn(&[ActorRef<Counter>]) -> bool,
) -> Result<BTreeMap<String, usize>, BoxError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let instances = group.instances();
        if done(&instances) {
            let mut per_node = BTreeMap::new();
            for counter in &instances {
                *per_node.entry(counter.node().to_string()).or_insert(0) += 1;
            }
            return Ok(per_node);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "group {} not there within {timeout:?} ({} instances)",
                group.name(),
                instances.len()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// "2 on node-a, 2 on node-b".
fn show(per_node: &BTreeMap<String, usize>) -> String {
    per_node
        .iter()
        .map(|(node, n)| format!("{n} on {node}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[actix::main]
async fn main() -> Result<(), BoxError> {
    let discovery = MemoryDiscovery::new();
    let a = start(&discovery, "node-a").await?;
    let b = start(&discovery, "node-b").await?;
    let c = start(&discovery, "node-c").await?;
    for node in [&a, &b] {
        node.wait_for_node(c.id(), Duration::from_secs(5)).await?;
    }
    println!("1. three nodes on the embedded discovery:");
    for m in a.members() {
        println!("   {} at {}", m.id, m.addr);
    }

    let counter = a.spawn(Counter { total: 0 });
    a.register_name("orders", &counter).await?;
    println!("2. node-a runs a counter, registered as \"orders\"");

    let from_b = b.lookup::<Counter>("orders").await?;
    println!(
        "3. node-b looked it up: actor {} on {} (local to b: {})",
        from_b.id(),
        from_b.node(),
        from_b.is_local()
    );
    for i in 1..=3 {
        if let Err(e) = from_b.tell(Add(i)) {
            return Err(e.error.into());
        }
    }
    println!("   node-b told it Add(1), Add(2), Add(3)");
    let total = from_b.ask(Add(10)).await?;
    println!("   node-b asked Add(10) -> {total}");

    let spawned = a.spawn_on::<Counter>(c.id(), 100).await?;
    println!(
        "4. node-a spawned a counter on {} with 100 -> ask Add(1) = {}",
        spawned.node(),
        spawned.ask(Add(1)).await?
    );

    let auditor = c.spawn(Auditor);
    c.register_name("auditor", &auditor).await?;
    let auditor_from_b = b.lookup::<Auditor>("auditor").await?;
    let audited = auditor_from_b
        .ask(Audit {
            counter: from_b.clone(),
        })
        .await?;
    println!(
        "5. node-b sent node-c a reference to the counter on node-a; node-c asked it: total = {}",
        audited.map_err(std::io::Error::other)?
    );

    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let watcher = Watcher { seen: tx }.start();
    spawned.watch(watcher.recipient());
    println!("6. node-a watches the counter on node-c; node-c shuts down");
    c.shutdown().await;
    match tokio::time::timeout(Duration::from_secs(5), seen.recv()).await {
        Ok(Some(t)) => println!(
            "   node-a was told: actor {} on {} terminated ({:?})",
            t.actor, t.node, t.reason
        ),
        _ => return Err("no Terminated notice within 5 s".into()),
    }
    match spawned.ask(Total).await {
        Err(e) => println!("   a later ask fails fast: {e}"),
        Ok(v) => return Err(format!("ask to a node that left answered {v}").into()),
    }

    let d = start(&discovery, "node-d").await?;
    for (x, y) in [(&a, &d), (&b, &d), (&d, &a), (&d, &b)] {
        x.wait_for_node(y.id(), Duration::from_secs(5)).await?;
    }
    let spec = GroupSpec::new::<Counter>("counters", &0, 6)?;
    a.deploy(&spec).await?;
    println!("7. node-d joins, and node-a deploys a group of 6 counters");
    let counters = a.group::<Counter>("counters").await?;
    let placed = wait_for_group(&counters, Duration::from_secs(5), |c| c.len() == 6).await?;
    let (leader, _) = discovery
        .leader("demo")
        .await?
        .ok_or("no node leads the controller")?;
    println!(
        "   the controller (led by {leader}) runs them: {}",
        show(&placed)
    );
    if !discovery.fail("demo", d.id()) {
        return Err("node-d was not a member".into());
    }
    let crashed = Instant::now();
    println!(
        "   node-d crashes (declared down, as when its lease expires); its counters go with it"
    );
    let placed = wait_for_group(&counters, Duration::from_secs(5), |c| {
        c.len() == 6 && c.iter().all(|counter| counter.node() != d.id())
    })
    .await?;
    println!(
        "   {:.1?} later the group is whole again, on the survivors: {}",
        crashed.elapsed(),
        show(&placed)
    );
    let mut answered = 0;
    for counter in counters.instances() {
        answered += usize::from(counter.ask(Total).await.is_ok());
    }
    println!("   every counter answers an ask: {answered} of 6");

    let dropped = a.stats().dropped_total() + b.stats().dropped_total();
    println!("8. shutting down; messages dropped along the way: {dropped}");
    d.shutdown().await;
    b.shutdown().await;
    a.shutdown().await;
    println!("done");
    Ok(())
}
