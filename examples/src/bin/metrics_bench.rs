//! What metrics cost on the hot path: local and remote tells, and sequential remote asks,
//! between nodes without an admin listener (metrics off) and nodes with one (metrics on:
//! every message counted by name and direction, every ask timed), in the same run, rounds
//! alternating between the two.
//!
//! `cargo run --release -p actormesh-examples --bin metrics_bench`
//!
//! `metrics_bench --only <local|remote|ask> --metrics <on|off> --n <N>` runs one workload of
//! `N` messages on one pair and exits: `scripts/bench-metrics-instructions.sh` runs it under
//! `valgrind --tool=callgrind` at two sizes and prints the instructions per message with
//! metrics off and on (counts that do not depend on what else the machine runs).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actormesh::prelude::*;
use actormesh_examples::sink::{Count, Hit, Sink};
use actormesh_examples::{median, BoxError};

/// Tells per round of the local figure.
const LOCAL_MESSAGES: u64 = 1_000_000;
/// Tells per round of the remote figure.
const REMOTE_MESSAGES: u64 = 300_000;
/// Sequential asks per round.
const ASKS: u64 = 5_000;
/// Rounds per figure and side (after one discarded warm-up round each).
const ROUNDS: usize = 5;
/// Yield to the runtime every this many sends (lets the receiver and the link run).
const YIELD_EVERY: u64 = 256;

/// Two nodes on one discovery; with an admin listener (metrics on) when `metrics`.
async fn pair(cluster: &str, metrics: bool) -> Result<(Node, Node), BoxError> {
    let discovery = MemoryDiscovery::new();
    let start = |id: &str| {
        let mut b = Node::builder()
            .cluster(cluster)
            .node_id(id)
            .discovery(discovery.clone());
        if metrics {
            b = b.admin(SocketAddr::from(([127, 0, 0, 1], 0)));
        }
        b.start()
    };
    let a = start("a").await?;
    let b = start("b").await?;
    a.wait_for_node(b.id(), Duration::from_secs(5)).await?;
    Ok((a, b))
}

async fn tells(sink: &ActorRef<Sink>, n: u64) -> Result<f64, BoxError> {
    let base = sink.ask(Count).await?;
    let start = Instant::now();
    let mut sent = 0;
    while sent < n {
        match sink.tell(Hit([sent as u8; 16])) {
            Ok(()) => sent += 1,
            Err(e) if matches!(e.error, actormesh::Error::MailboxFull { .. }) => {
                tokio::task::yield_now().await
            }
            Err(e) => return Err(e.error.into()),
        }
        if sent % YIELD_EVERY == 0 {
            tokio::task::yield_now().await;
        }
    }
    // Bounded wait for the receiver to count them all.
    for _ in 0..100_000 {
        if sink.ask(Count).await? - base >= n {
            return Ok(n as f64 / start.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    Err("the sink did not count every tell".into())
}

async fn asks(sink: &ActorRef<Sink>, n: u64) -> Result<Duration, BoxError> {
    let mut took = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let t = Instant::now();
        sink.ask(Count).await?;
        took.push(t.elapsed());
    }
    took.sort();
    Ok(took[took.len() / 2])
}

/// Runs `round` for off and on alternately, discarding one warm-up each; returns the medians.
async fn figure<F, Fut>(name: &str, mut round: F) -> Result<(f64, f64), BoxError>
where
    F: FnMut(bool) -> Fut,
    Fut: std::future::Future<Output = Result<f64, BoxError>>,
{
    round(false).await?;
    round(true).await?;
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        // Alternate which side goes first.
        if i % 2 == 0 {
            off.push(round(false).await?);
            on.push(round(true).await?);
        } else {
            on.push(round(true).await?);
            off.push(round(false).await?);
        }
    }
    let (off, on) = (median(off), median(on));
    println!(
        "{name:<34} metrics off {off:>14.0}   metrics on {on:>14.0}   on/off {:.3}",
        on / off
    );
    Ok((off, on))
}

/// One workload (`--only`), on one pair (`--metrics on|off`), of `--n` messages.
async fn only(args: &[String]) -> Result<(), BoxError> {
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .ok_or_else(|| format!("{flag} <value> is required with --only"))
    };
    let what = value("--only")?.as_str();
    let metrics = match value("--metrics")?.as_str() {
        "on" => true,
        "off" => false,
        other => return Err(format!("--metrics on|off, not {other}").into()),
    };
    let n: u64 = value("--n")?.parse()?;
    let (a, b) = pair("only", metrics).await?;
    let sink = b.spawn(Sink::default());
    b.register_name("sink", &sink).await?;
    let remote = a.lookup::<Sink>("sink").await?;
    match what {
        "local" => {
            tells(&b.spawn(Sink::default()), n).await?;
        }
        "remote" => {
            tells(&remote, n).await?;
        }
        "ask" => {
            asks(&remote, n).await?;
        }
        other => return Err(format!("--only local|remote|ask, not {other}").into()),
    }
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}

#[actix::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--only") {
        return only(&args).await;
    }
    println!(
        "metrics bench ({} build), medians of {ROUNDS} alternating rounds",
        if cfg!(debug_assertions) {
            "DEBUG: numbers meaningless"
        } else {
            "release"
        }
    );
    let (off_a, off_b) = pair("off", false).await?;
    let (on_a, on_b) = pair("on", true).await?;
    assert!(off_a.metrics().is_none() && on_a.metrics().is_some());
    let local = [off_a.spawn(Sink::default()), on_a.spawn(Sink::default())];
    let remote = {
        let s_off = off_b.spawn(Sink::default());
        off_b.register_name("sink", &s_off).await?;
        let s_on = on_b.spawn(Sink::default());
        on_b.register_name("sink", &s_on).await?;
        [
            off_a.lookup::<Sink>("sink").await?,
            on_a.lookup::<Sink>("sink").await?,
        ]
    };
    figure("local tell (msgs/s)", |on| {
        let sink = local[usize::from(on)].clone();
        async move { tells(&sink, LOCAL_MESSAGES).await }
    })
    .await?;
    figure("remote tell 16 B (msgs/s)", |on| {
        let sink = remote[usize::from(on)].clone();
        async move { tells(&sink, REMOTE_MESSAGES).await }
    })
    .await?;
    figure("remote ask, sequential (p50 µs)", |on| {
        let sink = remote[usize::from(on)].clone();
        async move { Ok(asks(&sink, ASKS).await?.as_secs_f64() * 1e6) }
    })
    .await?;
    for node in [off_a, off_b, on_a, on_b] {
        node.shutdown().await;
    }
    Ok(())
}
