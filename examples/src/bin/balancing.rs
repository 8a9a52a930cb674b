//! Balancing benchmark: 8 instances over 3 nodes, one of them 10x slower; every balancer
//! under the same fixed offered load, side by side.
//!
//! `cargo run --release -p actormesh-examples --bin balancing` prints, for each balancer, the
//! latency (p50, p99, max), the throughput and the errors at a fixed open-loop arrival rate,
//! and the share of asks the slow instance got, beside round robin as the baseline. It then
//! prints round robin's spread on equal instances and the share of keys consistent hashing
//! moves when a ninth instance joins, beside their ideals. It never asserts on speed; every
//! loop is bounded in count and time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::{Actor, AtomicResponse, Context, Handler, Message, WrapFuture};
use actormesh::balance::{
    ConsistentHash, LeastOutstanding, PowerOfTwo, Random, RoundRobin, Weighted,
};
use actormesh::prelude::*;
use actormesh_examples::{ms, percentile};
use serde::{Deserialize, Serialize};

/// Fast instances take this long per request; the slow one ten times as long.
const SERVICE: Duration = Duration::from_millis(2);
/// Open-loop arrivals per second, about 60 % of the group's capacity.
const RATE: u64 = 2_000;
/// How long each balancer is offered the load.
const RUN: Duration = Duration::from_secs(4);
/// Every ask gives up after this long (the slow instance's backlog is dropped unhandled).
const TIMEOUT: Duration = Duration::from_secs(2);

/// One request; answers the index of the instance that served it.
#[derive(Message, Serialize, Deserialize, Clone)]
#[rtype(result = "u32")]
struct Request;
impl RemoteMessage for Request {
    const NAME: &'static str = "bench.Request";
}
impl Idempotent for Request {}

/// An instance serving one request at a time, taking `service` each.
struct Server {
    index: u32,
    service: Duration,
}

impl Actor for Server {
    type Context = Context<Self>;
}

impl Handler<Request> for Server {
    type Result = AtomicResponse<Self, u32>;
    fn handle(&mut self, _: Request, _: &mut Context<Self>) -> Self::Result {
        let (index, service) = (self.index, self.service);
        // Atomic: the actor serves one request at a time, like a single-threaded server.
        AtomicResponse::new(Box::pin(
            async move {
                tokio::time::sleep(service).await;
                index
            }
            .into_actor(self),
        ))
    }
}

actormesh::remote_actor!(Server = "bench.Server" { Request });

/// Builds the group configuration of one balancer run.
type MakeConfig = fn() -> GroupConfig;

struct Outcome {
    latencies: Vec<Duration>,
    errors: u64,
    per_instance: HashMap<u32, u64>,
    elapsed: Duration,
}

/// Spawns 8 servers over the 3 hosts (index 7 slow unless `all_equal`) in group `group`.
async fn spawn_group(hosts: &[Node], group: &str, all_equal: bool) -> Result<(), Error> {
    for index in 0..8u32 {
        let host = &hosts[index as usize % hosts.len()];
        let service = if index == 7 && !all_equal {
            SERVICE * 10
        } else {
            SERVICE
        };
        let server = host.spawn(Server { index, service });
        host.join_group(group, &server).await?;
    }
    Ok(())
}

/// Offers `RATE` asks per second for `RUN` through `group`, open loop.
async fn offer(group: GroupRef<Server>) -> Outcome {
    let started = Instant::now();
    let total = (RATE * RUN.as_millis() as u64) / 1000;
    let mut tasks = Vec::with_capacity(total as usize);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let per_tick = RATE / 1000;
    let mut sent = 0;
    while sent < total && started.elapsed() < RUN * 2 {
        tick.tick().await;
        for _ in 0..per_tick {
            let g = group.clone();
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let r = g.ask_timeout(Request, TIMEOUT).await;
                (t.elapsed(), r)
            }));
            sent += 1;
        }
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut errors = 0;
    let mut per_instance = HashMap::new();
    for task in tasks {
        match task.await {
            Ok((latency, Ok(index))) => {
                latencies.push(latency);
                *per_instance.entry(index).or_default() += 1;
            }
            _ => errors += 1,
        }
    }
    latencies.sort();
    Outcome {
        latencies,
        errors,
        per_instance,
        elapsed: started.elapsed(),
    }
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let discovery = MemoryDiscovery::new();
    let mut hosts = Vec::new();
    for i in 0..3 {
        hosts.push(
            Node::builder()
                .cluster("balancing")
                .node_id(format!("host-{i}"))
                .discovery(discovery.clone())
                .ask_timeout(TIMEOUT)
                .start()
                .await?,
        );
    }
    let caller = Node::builder()
        .cluster("balancing")
        .node_id("caller")
        .discovery(discovery.clone())
        .ask_timeout(TIMEOUT)
        .start()
        .await?;
    for h in &hosts {
        caller.wait_for_node(h.id(), Duration::from_secs(5)).await?;
    }
    println!(
        "actormesh balancing bench: 8 instances over 3 nodes, caller on a 4th (all asks remote)"
    );
    println!(
        "service time {:?} (instance 7: {:?}), one request at a time per instance; offered load {RATE} asks/s for {RUN:?}; ask timeout {TIMEOUT:?}",
        SERVICE,
        SERVICE * 10
    );
    println!(
        "machine: {} cores\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let balancers: Vec<(&str, MakeConfig)> = vec![
        ("round_robin", || {
            GroupConfig::new().balancer(RoundRobin::new())
        }),
        ("random", || GroupConfig::new().balancer(Random::new())),
        ("least_outstanding", || {
            GroupConfig::new().balancer(LeastOutstanding::new())
        }),
        ("power_of_two", || {
            GroupConfig::new().balancer(PowerOfTwo::new())
        }),
        ("consistent_hash", || {
            GroupConfig::new().balancer(ConsistentHash::new())
        }),
        ("weighted", || GroupConfig::new().balancer(Weighted::new())),
    ];
    let mut rows = Vec::new();
    for (i, (name, config)) in balancers.iter().enumerate() {
        let group_name = format!("slow-{i}");
        spawn_group(&hosts, &group_name, false).await?;
        let group = caller.group_with::<Server>(&group_name, config()).await?;
        group.wait_for_instances(8, Duration::from_secs(5)).await?;
        let out = offer(group).await;
        let served: u64 = out.per_instance.values().sum();
        let slow_share = *out.per_instance.get(&7).unwrap_or(&0) as f64 / served.max(1) as f64;
        println!(
            "   {name:18} p50 {} p99 {} max {}  {:7.0} asks/s  errors {:5}  answered by the slow instance {:5.1} %",
            ms(percentile(&out.latencies, 50.0)),
            ms(percentile(&out.latencies, 99.0)),
            ms(*out.latencies.last().unwrap_or(&Duration::ZERO)),
            served as f64 / out.elapsed.as_secs_f64(),
            out.errors,
            slow_share * 100.0
        );
        rows.push((name.to_string(), out, slow_share));
        // Let the slow instance drop its expired backlog before the next run.
        tokio::time::sleep(TIMEOUT).await;
    }

    // Round robin's spread on equal instances.
    spawn_group(&hosts, "equal", true).await?;
    let equal = caller
        .group_with::<Server>("equal", GroupConfig::new().balancer(RoundRobin::new()))
        .await?;
    equal.wait_for_instances(8, Duration::from_secs(5)).await?;
    let mut counts: HashMap<u32, u64> = HashMap::new();
    for _ in 0..4_000 {
        if let Ok(index) = equal.ask(Request).await {
            *counts.entry(index).or_default() += 1;
        }
    }
    let max = counts.values().max().copied().unwrap_or(0) as f64;
    let min = counts.values().min().copied().unwrap_or(0) as f64;
    let spread = if min > 0.0 { max / min } else { f64::INFINITY };

    // Consistent hashing: keys moved when a ninth instance joins.
    let hashing = caller
        .group_with::<Server>("equal", GroupConfig::new().balancer(ConsistentHash::new()))
        .await?;
    hashing
        .wait_for_instances(8, Duration::from_secs(5))
        .await?;
    const KEYS: u32 = 2_000;
    let mut owner = Vec::with_capacity(KEYS as usize);
    for key in 0..KEYS {
        owner.push(hashing.ask_keyed(&key, Request).await?);
    }
    let ninth = hosts[0].spawn(Server {
        index: 8,
        service: SERVICE,
    });
    hosts[0].join_group("equal", &ninth).await?;
    hashing
        .wait_for_instances(9, Duration::from_secs(5))
        .await?;
    let mut moved = 0;
    let mut moved_elsewhere = 0;
    for key in 0..KEYS {
        let now = hashing.ask_keyed(&key, Request).await?;
        if now != owner[key as usize] {
            moved += 1;
            if now != 8 {
                moved_elsewhere += 1;
            }
        }
    }

    let rr = &rows[0].1;
    println!("\n(weighted: every instance has weight 1 here, so it runs as round robin; consistent_hash: no key, so it picks as random)");
    println!("balancer           | p50        | p99        | asks/s  | errors | slow share | p99 vs round robin");
    println!("-------------------|------------|------------|---------|--------|------------|-------------------");
    for (name, out, share) in &rows {
        let served: u64 = out.per_instance.values().sum();
        println!(
            "{name:18} | {} | {} | {:7.0} | {:6} | {:9.1}% | {:.2}x",
            ms(percentile(&out.latencies, 50.0)),
            ms(percentile(&out.latencies, 99.0)),
            served as f64 / out.elapsed.as_secs_f64(),
            out.errors,
            share * 100.0,
            percentile(&out.latencies, 99.0).as_secs_f64()
                / percentile(&rr.latencies, 99.0).as_secs_f64().max(1e-9)
        );
    }
    println!(
        "\nround robin spread on 8 equal instances (4,000 asks): max/min = {spread:.3} (target <= 1.05; ideal 1.000); counts {:?}",
        {
            let mut c: Vec<_> = counts.into_iter().collect();
            c.sort();
            c.into_iter().map(|(_, n)| n).collect::<Vec<_>>()
        }
    );
    println!(
        "consistent hashing, 8 -> 9 instances: {moved} of {KEYS} keys moved = {:.1} % (ideal 1/9 = 11.1 %); moved to an old instance: {moved_elsewhere}",
        moved as f64 * 100.0 / KEYS as f64
    );
    caller.shutdown().await;
    for h in hosts {
        h.shutdown().await;
    }
    Ok(())
}
