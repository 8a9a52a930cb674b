//! Keyed entities measured beside plain `ActorRef`s in the same run.
//!
//! ```text
//! cargo run --release -p actormesh-examples --bin entity_bench
//! ```
//!
//! Nodes of one process on loopback links (the in-process discovery), so both sides of every
//! comparison pay the same transport:
//!
//! 1. first-message activations per second from a node that does not host the type, beside
//!    asks per second to already-active entities and to plain remote actors (64 askers);
//! 2. tells per second to 1,000 active remote entities beside tells to 1,000 plain remote
//!    actors, and ask latency p50/p99 of both;
//! 3. handoff time per shard when a host shuts down gracefully with active entities;
//! 4. the share of keys that move when a 4th host joins 3 (ideal 25 %);
//! 5. memory per idle active entity beside a plain idle actor (each in a child process of
//!    its own, RSS before and after 100,000).
//!
//! The time until a SIGKILLed owner's entities answer again needs real processes and etcd:
//! `cluster-tests/tests/entities_cluster.rs` prints it. Every loop here is bounded by a count
//! and a wall-clock limit; nothing fails because of slowness.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actormesh::prelude::*;
use actormesh::{Entity, EntityConfig, EntityContext, MemoryDiscovery};
use serde::{Deserialize, Serialize};

use actormesh_examples::BoxError;

/// Events per second.
fn rate(n: u64, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64().max(1e-9)
}

const SHARDS: u32 = 256;
const FRESH_KEYS: usize = 20_000;
const ACTIVE: usize = 1_000;
const TELLS: usize = 400_000;
const ASKERS: usize = 64;
const SEQ_ASKS: usize = 5_000;
const MEMORY_N: usize = 100_000;
const PLACEMENT_KEYS: usize = 4_000;
const LIMIT: Duration = Duration::from_secs(60);

struct Slot {
    count: u64,
    node: String,
}

impl Actor for Slot {
    type Context = Context<Self>;
}

#[derive(Debug, Clone, Serialize, Deserialize, RemoteMessage)]
#[remote(name = "bench.Get", result = "u64")]
struct Get;

#[derive(Debug, Clone, Serialize, Deserialize, RemoteMessage)]
#[remote(name = "bench.Bump", result = "()")]
struct Bump;

#[derive(Debug, Clone, Serialize, Deserialize, RemoteMessage)]
#[remote(name = "bench.Where", result = "String")]
struct Where;

impl Handler<Get> for Slot {
    type Result = u64;
    fn handle(&mut self, _: Get, _: &mut Context<Self>) -> u64 {
        self.count
    }
}

impl Handler<Bump> for Slot {
    type Result = ();
    fn handle(&mut self, _: Bump, _: &mut Context<Self>) {
        self.count += 1;
    }
}

impl Handler<Where> for Slot {
    type Result = String;
    fn handle(&mut self, _: Where, _: &mut Context<Self>) -> String {
        self.node.clone()
    }
}

actormesh::remote_actor!(Slot = "bench.Slot" { Get, Bump, Where });

impl Entity for Slot {
    const KIND: &'static str = "slots";
    fn activate(ctx: &mut EntityContext<'_, Self>) -> Self {
        Slot {
            count: 0,
            node: ctx.node().id().to_string(),
        }
    }
}

async fn host(cluster: &str, discovery: &MemoryDiscovery) -> Result<Node, BoxError> {
    Ok(Node::builder()
        .cluster(cluster)
        .discovery(discovery.clone())
        .entity::<Slot>(EntityConfig::default().shards(SHARDS).buffer(100_000))
        .start()
        .await?)
}

async fn client(cluster: &str, discovery: &MemoryDiscovery) -> Result<Node, BoxError> {
    Ok(Node::builder()
        .cluster(cluster)
        .discovery(discovery.clone())
        .start()
        .await?)
}

/// Waits (bounded) until the hosts hold every shard, balanced.
async fn settled(hosts: &[&Node]) -> Result<(), BoxError> {
    let started = Instant::now();
    loop {
        let statuses: Vec<_> = hosts
            .iter()
            .filter_map(|n| n.entity_status("slots"))
            .collect();
        let hosted: usize = statuses.iter().map(|s| s.hosted_here).sum();
        let low = SHARDS as usize / hosts.len();
        if hosted == SHARDS as usize
            && statuses.iter().all(|s| {
                s.in_motion_here == 0 && s.assigned_here >= low && s.hosted_here == s.assigned_here
            })
        {
            return Ok(());
        }
        if started.elapsed() > LIMIT {
            return Err(format!("shards not settled: {statuses:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs `n` asks with `ASKERS` concurrent askers, `ask(i)` making the i-th; returns asks/s.
async fn concurrent<F, Fut>(n: usize, ask: F) -> Result<f64, BoxError>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<u64, Error>>,
{
    let started = Instant::now();
    let next = std::cell::Cell::new(0usize);
    let workers = (0..ASKERS).map(|_| async {
        loop {
            let i = next.get();
            if i >= n || started.elapsed() > LIMIT {
                return Ok::<(), Error>(());
            }
            next.set(i + 1);
            ask(i).await?;
        }
    });
    for result in futures_util::future::join_all(workers).await {
        result?;
    }
    Ok(rate(n.min(next.get()) as u64, started.elapsed()))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn latency<F, Fut>(ask: F) -> Result<(Duration, Duration), BoxError>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<u64, Error>>,
{
    let mut samples = Vec::with_capacity(SEQ_ASKS);
    for i in 0..SEQ_ASKS {
        let t = Instant::now();
        ask(i).await?;
        samples.push(t.elapsed());
    }
    samples.sort();
    Ok((percentile(&samples, 0.5), percentile(&samples, 0.99)))
}

async fn throughput_and_latency() -> Result<(), BoxError> {
    let discovery = MemoryDiscovery::new();
    let h = host("bench", &discovery).await?;
    let c = client("bench", &discovery).await?;
    settled(&[&h]).await?;
    // Plain actors on the host, reached from the client.
    let mut plain = Vec::with_capacity(ACTIVE);
    for i in 0..ACTIVE {
        let slot = h.spawn(Slot {
            count: 0,
            node: h.id().to_string(),
        });
        let name = format!("plain-{i}");
        h.register_name(&name, &slot).await?;
        plain.push(c.lookup::<Slot>(&name).await?);
    }
    let entities: Vec<_> = (0..ACTIVE)
        .map(|i| c.entity::<Slot>(format!("active-{i}")))
        .collect();
    for e in &entities {
        e.ask(Get).await?;
    }

    println!("1. first-message activations (client node -> host node, {ASKERS} askers)");
    let fresh = concurrent(FRESH_KEYS, |i| {
        let e = c.entity::<Slot>(format!("fresh-{i}"));
        async move { e.ask(Get).await }
    })
    .await?;
    let warm = concurrent(FRESH_KEYS, |i| {
        let e = entities[i % ACTIVE].clone();
        async move { e.ask(Get).await }
    })
    .await?;
    let plain_rate = concurrent(FRESH_KEYS, |i| {
        let a = plain[i % ACTIVE].clone();
        async move { a.ask(Get).await }
    })
    .await?;
    println!("   activations:                    {fresh:>12.0} /s");
    println!("   asks to active entities:        {warm:>12.0} /s");
    println!("   asks to plain remote ActorRefs: {plain_rate:>12.0} /s  (baseline)");

    println!("2. tells to {ACTIVE} active remote entities vs {ACTIVE} plain remote actors");
    for round in 0..2 {
        let started = Instant::now();
        for i in 0..TELLS {
            entities[i % ACTIVE].tell(Bump)?;
            if i % 4096 == 0 {
                tokio::task::yield_now().await;
            }
        }
        // Drained when the last entity has counted its share.
        for e in &entities {
            e.ask(Get).await?;
        }
        let entity_rate = rate(TELLS as u64, started.elapsed());
        let started = Instant::now();
        for i in 0..TELLS {
            plain[i % ACTIVE].tell(Bump)?;
            if i % 4096 == 0 {
                tokio::task::yield_now().await;
            }
        }
        for a in &plain {
            a.ask(Get).await?;
        }
        let plain_rate = rate(TELLS as u64, started.elapsed());
        println!(
            "   round {round}: entities {entity_rate:>10.0} /s   plain ActorRef {plain_rate:>10.0} /s   ratio {:.2}",
            entity_rate / plain_rate
        );
    }
    let (ep50, ep99) = latency(|i| {
        let e = entities[i % ACTIVE].clone();
        async move { e.ask(Get).await }
    })
    .await?;
    let (pp50, pp99) = latency(|i| {
        let a = plain[i % ACTIVE].clone();
        async move { a.ask(Get).await }
    })
    .await?;
    println!(
        "   sequential ask p50/p99: entities {:.1}/{:.1} µs   plain ActorRef {:.1}/{:.1} µs",
        ep50.as_secs_f64() * 1e6,
        ep99.as_secs_f64() * 1e6,
        pp50.as_secs_f64() * 1e6,
        pp99.as_secs_f64() * 1e6
    );
    c.shutdown().await;
    h.shutdown().await;
    Ok(())
}

async fn handoff() -> Result<(), BoxError> {
    println!("3. graceful handoff: a host with {ACTIVE}0 active entities shuts down");
    let discovery = MemoryDiscovery::new();
    let a = host("handoff", &discovery).await?;
    let b = host("handoff", &discovery).await?;
    settled(&[&a, &b]).await?;
    for i in 0..ACTIVE * 10 {
        a.entity::<Slot>(format!("h-{i}")).tell(Bump)?;
    }
    for i in 0..ACTIVE * 10 {
        a.entity::<Slot>(format!("h-{i}")).ask(Get).await?;
    }
    let held = b.entity_status("slots").map_or(0, |s| s.hosted_here);
    let active = b.entity_status("slots").map_or(0, |s| s.activations);
    let started = Instant::now();
    b.shutdown().await;
    let took = started.elapsed();
    println!(
        "   {held} shards, {active} activations handed over in {:.1} ms: {:.2} ms per shard",
        took.as_secs_f64() * 1e3,
        took.as_secs_f64() * 1e3 / held.max(1) as f64
    );
    a.shutdown().await;
    Ok(())
}

async fn placement() -> Result<(), BoxError> {
    println!("4. keys moved when a 4th host joins 3 ({PLACEMENT_KEYS} keys, {SHARDS} shards)");
    let discovery = MemoryDiscovery::new();
    let a = host("place", &discovery).await?;
    let b = host("place", &discovery).await?;
    let c = host("place", &discovery).await?;
    settled(&[&a, &b, &c]).await?;
    let mut before = BTreeMap::new();
    for i in 0..PLACEMENT_KEYS {
        let key = format!("p-{i}");
        before.insert(key.clone(), a.entity::<Slot>(&key).ask(Where).await?);
    }
    let d = host("place", &discovery).await?;
    let started = Instant::now();
    settled(&[&a, &b, &c, &d]).await?;
    let rebalance = started.elapsed();
    let mut moved = 0;
    let mut to_new = 0;
    for (key, was) in &before {
        let now = a.entity::<Slot>(key).ask(Where).await?;
        if &now != was {
            moved += 1;
            if now == d.id().to_string() {
                to_new += 1;
            }
        }
    }
    println!(
        "   moved {:.1} % of keys (ideal 25 %), {to_new} of {moved} to the new host; rebalanced in {:.0} ms",
        100.0 * moved as f64 / PLACEMENT_KEYS as f64,
        rebalance.as_secs_f64() * 1e3
    );
    for n in [d, c, b, a] {
        n.shutdown().await;
    }
    Ok(())
}

fn rss_kib() -> Result<u64, BoxError> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or("malformed VmRSS")?
        .parse()?)
}

/// In a child process: RSS per idle entity or plain actor.
async fn memory(which: &str) -> Result<(), BoxError> {
    let discovery = MemoryDiscovery::new();
    let h = host("mem", &discovery).await?;
    settled(&[&h]).await?;
    let before = rss_kib()?;
    if which == "entities" {
        for i in 0..MEMORY_N {
            h.entity::<Slot>(format!("m-{i}")).tell(Bump)?;
            if i % 4096 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let started = Instant::now();
        while h.entity_status("slots").map_or(0, |s| s.activations) < MEMORY_N
            && started.elapsed() < LIMIT
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    } else {
        let mut refs = Vec::with_capacity(MEMORY_N);
        for _ in 0..MEMORY_N {
            refs.push(h.spawn(Slot {
                count: 0,
                node: String::new(),
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::mem::forget(refs);
    }
    let after = rss_kib()?;
    println!(
        "{}",
        (after.saturating_sub(before)) * 1024 / MEMORY_N as u64
    );
    Ok(())
}

fn child_memory(which: &str) -> Result<u64, BoxError> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .arg(which)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .last()
        .ok_or("no output from the memory child")?
        .trim()
        .parse()?)
}

#[actix::main]
async fn main() -> Result<(), BoxError> {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("entities") => return memory("entities").await,
        Some("actors") => return memory("actors").await,
        _ => {}
    }
    println!("actormesh entity bench ({SHARDS} shards, in-process nodes on loopback links)");
    throughput_and_latency().await?;
    handoff().await?;
    placement().await?;
    println!("5. memory per idle active entity ({MEMORY_N}, each in its own process)");
    let entity = child_memory("entities")?;
    let actor = child_memory("actors")?;
    println!("   entity {entity} B   plain actor {actor} B  (baseline)");
    Ok(())
}
