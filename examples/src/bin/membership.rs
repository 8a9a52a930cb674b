//! Membership benchmark on a real etcd: convergence at scale, steady-state etcd load per node,
//! and failure-detection time after SIGKILL.
//!
//! `cargo run --release -p actormesh-examples --bin membership` starts its own etcd (binary on
//! PATH or `ETCD_BIN`), prints every figure beside its baseline or target, and exits 0. It never
//! asserts on speed. Every wait is bounded in time.

use std::time::{Duration, Instant};

use actormesh::discovery::{EtcdConfig, EtcdDiscovery};
use actormesh::{MembershipEvent, MemoryDiscovery, Node, NodeId};
use actormesh_examples::{ms, percentile, ChildProcess};
use actormesh_testkit::Etcd;
use tokio::io::AsyncReadExt;

const TTL: Duration = Duration::from_secs(2);
const STEADY: Duration = Duration::from_secs(10);
const KILLS: usize = 10;

async fn etcd_node(endpoint: &str, id: &str) -> Result<(Node, EtcdDiscovery), actormesh::Error> {
    let discovery = EtcdDiscovery::connect(EtcdConfig::new([endpoint]).lease_ttl(TTL)).await?;
    let node = Node::builder()
        .cluster("membership")
        .node_id(id)
        .discovery(discovery.clone())
        .insecure_links()
        .start()
        .await?;
    Ok((node, discovery))
}

/// Waits until every node's view has `want` members; each node's time since `since`.
async fn converge(nodes: &[Node], want: usize, since: Instant, limit: Duration) -> Vec<Duration> {
    let mut done: Vec<Option<Duration>> = vec![None; nodes.len()];
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && done.iter().any(Option::is_none) {
        for (i, node) in nodes.iter().enumerate() {
            if done[i].is_none() && node.members().len() == want {
                done[i] = Some(since.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut times: Vec<Duration> = done.into_iter().map(|d| d.unwrap_or(limit)).collect();
    times.sort();
    times
}

struct Scale {
    nodes: usize,
    join: Vec<Duration>,
    leave: Vec<Duration>,
    requests_per_node_s: f64,
}

async fn scale_on_etcd(endpoint: &str, n: usize) -> Result<Scale, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let mut nodes = Vec::with_capacity(n);
    let mut discoveries = Vec::with_capacity(n);
    for i in 0..n {
        let (node, d) = etcd_node(endpoint, &format!("n{i}")).await?;
        nodes.push(node);
        discoveries.push(d);
    }
    let join = converge(&nodes, n, started, Duration::from_secs(60)).await;
    let before: u64 = discoveries.iter().map(EtcdDiscovery::requests).sum();
    let t = Instant::now();
    tokio::time::sleep(STEADY).await;
    let after: u64 = discoveries.iter().map(EtcdDiscovery::requests).sum();
    let requests_per_node_s = (after - before) as f64 / n as f64 / t.elapsed().as_secs_f64();
    let leaving = nodes.pop().ok_or("no node")?;
    let left_at = Instant::now();
    leaving.shutdown().await;
    let leave = converge(&nodes, n - 1, left_at, Duration::from_secs(30)).await;
    for node in &nodes {
        node.shutdown().await;
    }
    Ok(Scale {
        nodes: n,
        join,
        leave,
        requests_per_node_s,
    })
}

async fn scale_in_memory(
    n: usize,
) -> Result<(Vec<Duration>, Vec<Duration>), Box<dyn std::error::Error>> {
    let discovery = MemoryDiscovery::new();
    let started = Instant::now();
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        nodes.push(
            Node::builder()
                .cluster("membership")
                .node_id(format!("m{i}"))
                .discovery(discovery.clone())
                .insecure_links()
                .start()
                .await?,
        );
    }
    let join = converge(&nodes, n, started, Duration::from_secs(60)).await;
    let leaving = nodes.pop().ok_or("no node")?;
    let left_at = Instant::now();
    leaving.shutdown().await;
    let leave = converge(&nodes, n - 1, left_at, Duration::from_secs(30)).await;
    for node in &nodes {
        node.shutdown().await;
    }
    Ok((join, leave))
}

async fn detection(endpoint: &str) -> Result<Vec<Duration>, Box<dyn std::error::Error>> {
    let (observer, _d) = etcd_node(endpoint, "observer").await?;
    let mut times = Vec::new();
    for i in 0..KILLS {
        let id = format!("victim-{i}");
        let mut victim = ChildProcess::ready(&["node", endpoint, &id]).await?;
        observer
            .wait_for_node(&NodeId::new(id.as_str()), Duration::from_secs(10))
            .await?;
        let mut events = observer.subscribe();
        victim.child.start_kill()?;
        let killed = Instant::now();
        let seen = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match events.recv().await {
                    Ok(MembershipEvent::Down(down)) if down.as_str() == id => {
                        return Some(killed.elapsed())
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return None,
                }
            }
        })
        .await
        .ok()
        .flatten()
        .ok_or("kill not detected within 15 s")?;
        let _ = victim.child.wait().await;
        println!("   kill {:2}: seen down after {}", i + 1, ms(seen));
        times.push(seen);
    }
    observer.shutdown().await;
    times.sort();
    Ok(times)
}

async fn run_node(endpoint: &str, id: &str) -> Result<(), Box<dyn std::error::Error>> {
    let (node, _d) = etcd_node(endpoint, id).await?;
    println!("READY");
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    node.shutdown().await;
    Ok(())
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [role, endpoint, id] = args.as_slice() {
        if role == "node" {
            return run_node(endpoint, id).await;
        }
    }
    let etcd = Etcd::start()?;
    let endpoint = etcd.endpoint();
    println!("actormesh membership bench (etcd at {endpoint}, lease TTL {TTL:?})");
    println!(
        "machine: {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    println!("\n1. membership at scale: nodes join one by one, then one leaves");
    let (mem_join, mem_leave) = scale_in_memory(100).await?;
    let mut scales = Vec::new();
    for n in [10, 50, 100] {
        let s = scale_on_etcd(&endpoint, n).await?;
        println!(
            "   {:3} nodes on etcd: all views agree {} after the first join (p50 {}, p99 {}); one leaves -> p50 {} p99 {}; {:.2} etcd requests/node/s at steady state",
            s.nodes,
            ms(*s.join.last().unwrap_or(&Duration::ZERO)),
            ms(percentile(&s.join, 50.0)),
            ms(percentile(&s.join, 99.0)),
            ms(percentile(&s.leave, 50.0)),
            ms(percentile(&s.leave, 99.0)),
            s.requests_per_node_s
        );
        scales.push(s);
    }
    println!(
        "   baseline, 100 nodes on the in-process discovery: leave seen p50 {} p99 {}",
        ms(percentile(&mem_leave, 50.0)),
        ms(percentile(&mem_leave, 99.0))
    );

    println!("\n2. failure detection: SIGKILL of a node process, {KILLS} times");
    let kills = detection(&endpoint).await?;

    let s100 = scales.last().ok_or("no scale run")?;
    let s10 = scales.first().ok_or("no scale run")?;
    println!("\nfigure                                   | actormesh   | baseline / target");
    println!(
        "-----------------------------------------|-------------|------------------------------"
    );
    println!(
        "100 nodes: one leaves, seen by all p50    | {} | in-process discovery {}",
        ms(percentile(&s100.leave, 50.0)),
        ms(percentile(&mem_leave, 50.0))
    );
    println!(
        "100 nodes: one leaves, seen by all p99    | {} | in-process discovery {}",
        ms(percentile(&s100.leave, 99.0)),
        ms(percentile(&mem_leave, 99.0))
    );
    println!(
        "100 nodes: join, all views agree (max)   | {} | in-process discovery {}",
        ms(*s100.join.last().unwrap_or(&Duration::ZERO)),
        ms(*mem_join.last().unwrap_or(&Duration::ZERO))
    );
    println!(
        "etcd requests/node/s, 100 vs 10 nodes    | {:5.2} /{:5.2} | flat (ratio {:.2}; no polling)",
        s100.requests_per_node_s,
        s10.requests_per_node_s,
        s100.requests_per_node_s / s10.requests_per_node_s.max(1e-9)
    );
    println!(
        "SIGKILL detection p50                    | {} | floor TTL {}, target <= TTL + 1 s",
        ms(percentile(&kills, 50.0)),
        ms(TTL)
    );
    println!(
        "SIGKILL detection p99                    | {} | target <= {} : {}",
        ms(percentile(&kills, 99.0)),
        ms(TTL + Duration::from_secs(1)),
        if percentile(&kills, 99.0) <= TTL + Duration::from_secs(1) {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}
