//! Spawning benchmark: how fast actors start, locally and on another node, and how much memory
//! an idle actor costs, each against a baseline measured in the same run.
//!
//! ```text
//! cargo run --release -p actormesh-examples --bin spawning
//! ```
//!
//! 1. Local spawn rate: `Node::spawn` of 200,000 idle actors (then one ask to the last, and
//!    a wait until every actor's `started` ran) against bare actix `Actor::start` of the same
//!    actor type, same count, same thread.
//! 2. Remote spawn rate: `Node::spawn_on` from this process to a node in a child process on
//!    loopback, sequentially and with 64 concurrent spawners, against the local `Node::spawn`
//!    rate of figure 1 (and, for reference, remote asks over the same link).
//! 3. Memory per idle actor: 1,000,000 idle actors on one node, in a child process of its own,
//!    measured with `VmRSS` / `VmHWM` of `/proc/self/status`, against the same count of bare
//!    actix actors in another child process. Target: at most 1 KiB per actor. Measured twice:
//!    all spawn calls first, then in batches of 10,000 that start before the next batch.
//!
//! The binary re-executes itself as its child processes (`spawning serve-node`, `spawning
//! mem-mesh N`, `spawning mem-actix N`, `spawning mem-mesh-batched N`, `spawning
//! mem-actix-batched N`). Every loop is bounded by a count and every wait by a
//! wall-clock limit; the bench prints its figures beside their baselines and targets and never
//! fails because of slowness.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix::{Actor, Context, Handler, Message};
use actormesh::prelude::*;
use actormesh::{Discovery, NodeInfo};
use serde::{Deserialize, Serialize};
use tokio::process::Command;

use actormesh_examples::{
    announce, exit_when_stdin_closes, median, micros, percentile, rate, BoxError, ChildProcess,
};

// ---------------------------------------------------------------------------------------------
// Sizes and limits.
// ---------------------------------------------------------------------------------------------

/// Actors per round of the local spawn figure.
const LOCAL_SPAWNS: usize = 200_000;
/// Rounds of the local spawn figure (after one discarded warmup round), alternating which side
/// goes first; the median is kept.
const LOCAL_ROUNDS: usize = 5;
/// Remote spawns before measuring (the link is set up by the first).
const REMOTE_WARMUP: usize = 200;
/// Sequential remote spawns measured.
const SEQ_REMOTE_SPAWNS: usize = 5_000;
/// Concurrent remote spawners.
const SPAWNERS: usize = 64;
/// Remote spawns of the concurrent figure, over all spawners (64 × 320).
const CONCURRENT_REMOTE_SPAWNS: usize = 20_480;
/// Idle actors of the memory figure.
const MEMORY_ACTORS: usize = 1_000_000;
/// The second series of the memory figure spawns this many actors at a time and waits for
/// them to start before the next batch, so no large queue of actors waiting to start builds up.
const MEMORY_BATCH: usize = 10_000;
/// Memory set aside per actor when checking `MemAvailable` before the memory figure (four
/// times the target, to leave room for a transient peak).
const RESERVE_PER_ACTOR: u64 = 4096;
/// Memory left to the rest of the machine when checking `MemAvailable`.
const RESERVE_MARGIN: u64 = 2 << 30;
/// Wall-clock limit of one measured series.
const ROUND_LIMIT: Duration = Duration::from_secs(30);
/// How long the ask to the last spawned actor may wait for it (and every actor before it) to
/// start.
const START_LIMIT: Duration = Duration::from_secs(120);
/// Wall-clock limit of one memory child process.
const CHILD_LIMIT: Duration = Duration::from_secs(300);
/// The cluster of every node of this bench.
const CLUSTER: &str = "spawning";

// ---------------------------------------------------------------------------------------------
// The idle actor (one actor type serves actix and actormesh).
// ---------------------------------------------------------------------------------------------

/// Actors of this process whose `started` ran and whose `stopped` has not.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// A request answered with nothing: proves the actor runs.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
struct Ping;
impl RemoteMessage for Ping {
    const NAME: &'static str = "spawning.Ping";
}

/// An actor with no state that does nothing until pinged.
struct Idle;

impl Actor for Idle {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        LIVE.fetch_add(1, Ordering::Relaxed);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Handler<Ping> for Idle {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
}

actormesh::remote_actor!(Idle = "spawning.Idle" { Ping });

impl Spawnable for Idle {
    type Args = ();
    fn from_args(_: (), _: &mut actormesh::SpawnContext<'_, Self>) -> Self {
        Idle
    }
}

/// Waits until `LIVE` equals `target`, for at most `limit`; returns whether it did.
async fn wait_live(target: usize, limit: Duration) -> bool {
    let start = Instant::now();
    let mut spins = 0u32;
    while LIVE.load(Ordering::Relaxed) != target {
        if start.elapsed() > limit {
            return false;
        }
        if spins < 10_000 {
            spins += 1;
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    true
}

async fn start_node(spawnable: bool) -> Result<Node, BoxError> {
    start_node_on(MemoryDiscovery::new(), spawnable).await
}

async fn start_node_on(discovery: MemoryDiscovery, spawnable: bool) -> Result<Node, BoxError> {
    let builder = Node::builder()
        .cluster(CLUSTER)
        .listen("127.0.0.1:0".parse()?)
        .discovery(discovery);
    let builder = if spawnable {
        builder.spawnable::<Idle>()
    } else {
        builder
    };
    Ok(builder.start().await?)
}

// ---------------------------------------------------------------------------------------------
// Entry point.
// ---------------------------------------------------------------------------------------------

#[actix::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let role = args.get(1).cloned().unwrap_or_default();
    let count = args.get(2).map(String::as_str);
    let result = match role.as_str() {
        "serve-node" => serve_node().await,
        "mem-mesh" => memory_child(true, false, count).await,
        "mem-actix" => memory_child(false, false, count).await,
        "mem-mesh-batched" => memory_child(true, true, count).await,
        "mem-actix-batched" => memory_child(false, true, count).await,
        "" | "run" => run().await,
        other => Err(format!("unknown role `{other}`; run without arguments").into()),
    };
    match result {
        // A memory child leaves at once: tearing down a million actors is not measured.
        Ok(()) if role.starts_with("mem-") => std::process::exit(0),
        Ok(()) => {}
        Err(e) => {
            eprintln!("spawning {role}: error: {e}");
            std::process::exit(1);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Children.
// ---------------------------------------------------------------------------------------------

/// `spawning serve-node`: a node that accepts remote spawns of `Idle`; prints what its peers
/// need in their discovery view: `id addr protocol version started_at_ms`.
async fn serve_node() -> Result<(), BoxError> {
    exit_when_stdin_closes();
    let node = start_node(true).await?;
    let info = node.info();
    announce(&format!(
        "{} {} {} {} {}",
        info.id, info.addr, info.protocol, info.version, info.started_at_ms
    ))?;
    std::future::pending::<()>().await;
    Ok(())
}

/// The `VmRSS` and `VmHWM` of this process, in KiB (Linux).
fn rss_kib() -> Result<(u64, u64), BoxError> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| -> Result<u64, BoxError> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .ok_or_else(|| format!("no {name} in /proc/self/status"))?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .ok_or("malformed /proc/self/status")?
            .parse()?)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Asks the last actor spawned (through the node or bare actix) and waits for its answer: every
/// actor spawned before it has started by then.
async fn ping_last(
    last: Option<&ActorRef<Idle>>,
    addrs: &[actix::Addr<Idle>],
) -> Result<(), BoxError> {
    match (last, addrs.last()) {
        (Some(actor), _) => actor.ask_timeout(Ping, START_LIMIT).await?,
        (None, Some(addr)) => tokio::time::timeout(START_LIMIT, addr.send(Ping))
            .await
            .map_err(|_| "the last actor did not answer in time")??,
        (None, None) => return Err("no actor spawned".into()),
    }
    Ok(())
}

/// `spawning mem-mesh N` / `spawning mem-actix N` (and their `-batched` forms): spawns `N` idle
/// actors and prints, on one line of `key=value` pairs, this process's memory before, after
/// the spawn calls returned, and after every actor started, with its peak.
async fn memory_child(mesh: bool, batched: bool, count: Option<&str>) -> Result<(), BoxError> {
    let n: usize = count.ok_or("missing actor count")?.parse()?;
    if n == 0 {
        return Err("the actor count must be positive".into());
    }
    let node = if mesh {
        Some(start_node(false).await?)
    } else {
        None
    };
    // Let the node's tasks (server, membership, load reports) reach their steady state.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let live_before = LIVE.load(Ordering::Relaxed);
    let (before, _) = rss_kib()?;
    let start = Instant::now();
    // actix stops an actor when its last `Addr` drops: the baseline keeps them all here. The
    // node keeps its actors' addresses itself; the references it returns are dropped at once.
    let mut addrs = Vec::new();
    if node.is_none() {
        addrs.reserve_exact(n);
    }
    let mut last = None;
    let batch = if batched { MEMORY_BATCH } else { n };
    let mut spawned = 0;
    while spawned < n {
        let k = batch.min(n - spawned);
        match &node {
            Some(node) => {
                for _ in 0..k {
                    last = Some(node.spawn(Idle));
                }
            }
            None => {
                for _ in 0..k {
                    addrs.push(Idle.start());
                }
            }
        }
        spawned += k;
        if spawned < n {
            ping_last(last.as_ref(), &addrs).await?;
        }
    }
    let spawned = start.elapsed();
    let (queued, _) = rss_kib()?;
    ping_last(last.as_ref(), &addrs).await?;
    let all_started = wait_live(live_before + n, START_LIMIT).await;
    let ready = start.elapsed();
    let (after, peak) = rss_kib()?;
    let live = LIVE.load(Ordering::Relaxed).saturating_sub(live_before);
    let registered = node.as_ref().map_or(addrs.len(), Node::actor_count);
    announce(&format!(
        "actors={n} live={live} registered={registered} all_started={} \
         before_kib={before} queued_kib={queued} after_kib={after} peak_kib={peak} \
         spawn_ms={:.1} ready_ms={:.1}",
        u8::from(all_started),
        spawned.as_secs_f64() * 1e3,
        ready.as_secs_f64() * 1e3,
    ))?;
    drop(last);
    drop(addrs);
    Ok(())
}

/// The child node's announcement, as a member entry of the parent's discovery view.
fn child_info(line: &str) -> Result<NodeInfo, BoxError> {
    let mut parts = line.split_whitespace();
    let mut next = |what: &str| {
        parts
            .next()
            .ok_or_else(|| format!("the child's announcement has no {what}: `{line}`"))
    };
    Ok(NodeInfo {
        id: NodeId::new(next("id")?),
        cluster: CLUSTER.to_owned(),
        addr: next("addr")?.parse()?,
        protocol: next("protocol")?.parse()?,
        version: next("version")?.to_owned(),
        labels: Default::default(),
        started_at_ms: next("start time")?.parse()?,
        spawnable: vec![<Idle as actormesh::RemoteActor>::NAME.to_owned()],
        admin: None,
    })
}

/// What a memory child measured.
struct Memory {
    values: HashMap<String, f64>,
    pid: Option<u32>,
}

impl Memory {
    fn get(&self, key: &str) -> f64 {
        self.values.get(key).copied().unwrap_or(f64::NAN)
    }

    fn actors(&self) -> f64 {
        self.get("actors")
    }

    /// Growth of the resident set from before spawning to `key`, per actor, in bytes.
    fn per_actor(&self, key: &str) -> f64 {
        (self.get(key) - self.get("before_kib")) * 1024.0 / self.actors()
    }
}

/// Runs `spawning <role> <n>` to its end and reads its measurement line.
async fn memory_run(role: &str, n: usize) -> Result<Memory, BoxError> {
    let child = Command::new(std::env::current_exe()?)
        .arg(role)
        .arg(n.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id();
    let output = tokio::time::timeout(CHILD_LIMIT, child.wait_with_output())
        .await
        .map_err(|_| format!("child `{role}` did not finish within {CHILD_LIMIT:?}"))??;
    if !output.status.success() {
        return Err(format!("child `{role}` failed: {}", output.status).into());
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .rfind(|l| l.starts_with("actors="))
        .ok_or_else(|| format!("child `{role}` printed no measurement"))?;
    let mut values = HashMap::new();
    for pair in line.split_whitespace() {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("malformed measurement `{pair}`"))?;
        values.insert(key.to_owned(), value.parse()?);
    }
    Ok(Memory { values, pid })
}

// ---------------------------------------------------------------------------------------------
// 1. Local spawn.
// ---------------------------------------------------------------------------------------------

/// Bare actix: `n` × `Idle.start()`, then a `send` to the last and a wait until all started.
async fn local_actix(n: usize) -> Result<Duration, BoxError> {
    let live_before = LIVE.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut addrs = Vec::with_capacity(n);
    for _ in 0..n {
        addrs.push(Idle.start());
    }
    let last = addrs.last().ok_or("no actor spawned")?;
    tokio::time::timeout(START_LIMIT, last.send(Ping))
        .await
        .map_err(|_| "the last actix actor did not answer in time")??;
    if !wait_live(live_before + n, ROUND_LIMIT).await {
        return Err("not every actix actor started in time".into());
    }
    let elapsed = start.elapsed();
    // Dropping the addresses stops the actors; wait for them before the next round.
    drop(addrs);
    if !wait_live(live_before, ROUND_LIMIT).await {
        println!("   (warning: actix actors still alive after {ROUND_LIMIT:?})");
    }
    Ok(elapsed)
}

/// actormesh: `n` × `node.spawn(Idle)` on a fresh node, then an ask to the last and a wait
/// until all started.
async fn local_actormesh(n: usize) -> Result<Duration, BoxError> {
    let node = start_node(false).await?;
    let live_before = LIVE.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut last = None;
    for _ in 0..n {
        last = Some(node.spawn(Idle));
    }
    last.ok_or("no actor spawned")?
        .ask_timeout(Ping, START_LIMIT)
        .await?;
    if !wait_live(live_before + n, ROUND_LIMIT).await {
        return Err("not every actormesh actor started in time".into());
    }
    let elapsed = start.elapsed();
    if node.actor_count() != n {
        return Err(format!("the node counts {} actors, not {n}", node.actor_count()).into());
    }
    // Shutting the node down stops its actors; wait for them before the next round.
    tokio::time::timeout(Duration::from_secs(10), node.shutdown())
        .await
        .map_err(|_| "the node did not shut down within 10 s")?;
    if !wait_live(live_before, ROUND_LIMIT).await {
        println!("   (warning: actormesh actors still alive after {ROUND_LIMIT:?})");
    }
    Ok(elapsed)
}

// ---------------------------------------------------------------------------------------------
// 2. Remote spawn.
// ---------------------------------------------------------------------------------------------

/// One series of remote operations.
struct Series {
    done: usize,
    elapsed: Duration,
    cut: bool,
    /// Per-operation latencies (sequential series only), sorted.
    latencies: Vec<Duration>,
}

impl Series {
    fn rate(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64()
    }

    fn describe(&self) -> String {
        let mut s = format!(
            "{:>10} ({} in {:.2} s)",
            rate(self.rate()),
            self.done,
            self.elapsed.as_secs_f64()
        );
        if !self.latencies.is_empty() {
            s.push_str(&format!(
                "  p50 {}  p99 {}  max {}",
                micros(percentile(&self.latencies, 50.0)),
                micros(percentile(&self.latencies, 99.0)),
                micros(percentile(&self.latencies, 100.0))
            ));
        }
        if self.cut {
            s.push_str(" [time limit: partial]");
        }
        s
    }
}

/// `n` sequential `spawn_on` calls to `target`; pings the last spawned actor at the end.
async fn seq_spawn(node: &Node, target: &NodeId, n: usize) -> Result<Series, BoxError> {
    let mut latencies = Vec::with_capacity(n);
    let mut last = None;
    let start = Instant::now();
    for _ in 0..n {
        if start.elapsed() > ROUND_LIMIT {
            break;
        }
        let t = Instant::now();
        last = Some(node.spawn_on::<Idle>(target, ()).await?);
        latencies.push(t.elapsed());
    }
    let elapsed = start.elapsed();
    last.ok_or("no actor spawned")?.ask(Ping).await?;
    latencies.sort();
    Ok(Series {
        done: latencies.len(),
        elapsed,
        cut: latencies.len() < n,
        latencies,
    })
}

/// `total` `spawn_on` calls to `target` from `SPAWNERS` concurrent tasks.
async fn concurrent_spawn(node: &Node, target: &NodeId, total: usize) -> Result<Series, BoxError> {
    let per_task = total / SPAWNERS;
    let start = Instant::now();
    let tasks: Vec<_> = (0..SPAWNERS)
        .map(|_| {
            let node = node.clone();
            let target = target.clone();
            actix_rt::spawn(async move {
                let mut done = 0usize;
                let mut last = None;
                for _ in 0..per_task {
                    if start.elapsed() > ROUND_LIMIT {
                        break;
                    }
                    last = Some(node.spawn_on::<Idle>(&target, ()).await?);
                    done += 1;
                }
                Ok::<_, actormesh::Error>((done, last))
            })
        })
        .collect();
    let mut done = 0;
    let mut last = None;
    for task in tasks {
        let (d, l) = task.await??;
        done += d;
        last = l.or(last);
    }
    let elapsed = start.elapsed();
    last.ok_or("no actor spawned")?.ask(Ping).await?;
    Ok(Series {
        done,
        elapsed,
        cut: done < per_task * SPAWNERS,
        latencies: Vec::new(),
    })
}

/// Reference: `n` sequential asks to one remote actor over the same link.
async fn seq_ask(actor: &ActorRef<Idle>, n: usize) -> Result<Series, BoxError> {
    let mut latencies = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        if start.elapsed() > ROUND_LIMIT {
            break;
        }
        let t = Instant::now();
        actor.ask(Ping).await?;
        latencies.push(t.elapsed());
    }
    let elapsed = start.elapsed();
    latencies.sort();
    Ok(Series {
        done: latencies.len(),
        elapsed,
        cut: latencies.len() < n,
        latencies,
    })
}

/// Reference: `total` asks to one remote actor from `SPAWNERS` concurrent tasks.
async fn concurrent_ask(actor: &ActorRef<Idle>, total: usize) -> Result<Series, BoxError> {
    let per_task = total / SPAWNERS;
    let start = Instant::now();
    let tasks: Vec<_> = (0..SPAWNERS)
        .map(|_| {
            let actor = actor.clone();
            actix_rt::spawn(async move {
                let mut done = 0usize;
                for _ in 0..per_task {
                    if start.elapsed() > ROUND_LIMIT {
                        break;
                    }
                    actor.ask(Ping).await?;
                    done += 1;
                }
                Ok::<_, actormesh::Error>(done)
            })
        })
        .collect();
    let mut done = 0;
    for task in tasks {
        done += task.await??;
    }
    Ok(Series {
        done,
        elapsed: start.elapsed(),
        cut: done < per_task * SPAWNERS,
        latencies: Vec::new(),
    })
}

// ---------------------------------------------------------------------------------------------
// The parent: run everything and print the table.
// ---------------------------------------------------------------------------------------------

fn machine() -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "?".to_owned());
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned());
    format!("nproc {nproc}, cpu {cpu}, load average {load} at start")
}

/// A field of `/proc/meminfo`, in KiB.
fn meminfo_kib(name: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find(|l| l.starts_with(name))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn mib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

/// One row of the final table.
struct Row {
    figure: &'static str,
    actormesh: String,
    baseline: String,
    ratio: String,
    target: &'static str,
    /// `None`: reported only.
    met: Option<bool>,
}

async fn run() -> Result<(), BoxError> {
    println!("actormesh spawning bench");
    println!("machine: {}", machine());
    println!(
        "build: {}",
        if cfg!(debug_assertions) {
            "DEBUG (numbers meaningless; use --release)"
        } else {
            "release"
        }
    );
    println!();
    let mut rows = Vec::new();

    // 1. Local spawn.
    println!(
        "1. local spawn, {LOCAL_SPAWNS} idle actors per round, same thread, until the last answers \
         and every `started` ran (median of {LOCAL_ROUNDS})"
    );
    let per_s = |d: Duration| LOCAL_SPAWNS as f64 / d.as_secs_f64();
    let b = per_s(local_actix(LOCAL_SPAWNS).await?);
    let m = per_s(local_actormesh(LOCAL_SPAWNS).await?);
    println!(
        "   warmup:  actix Idle.start() {:>10}   Node::spawn {:>10}   (discarded)",
        rate(b),
        rate(m)
    );
    let (mut bare, mut mesh) = (Vec::new(), Vec::new());
    for round in 1..=LOCAL_ROUNDS {
        let (b, m) = if round % 2 == 1 {
            let b = per_s(local_actix(LOCAL_SPAWNS).await?);
            (b, per_s(local_actormesh(LOCAL_SPAWNS).await?))
        } else {
            let m = per_s(local_actormesh(LOCAL_SPAWNS).await?);
            (per_s(local_actix(LOCAL_SPAWNS).await?), m)
        };
        println!(
            "   round {round}: actix Idle.start() {:>10}   Node::spawn {:>10}",
            rate(b),
            rate(m)
        );
        bare.push(b);
        mesh.push(m);
    }
    let (local_bare, local_mesh) = (median(bare), median(mesh));
    let overhead = (local_bare / local_mesh - 1.0) * 100.0;
    println!(
        "   median: actix {}  actormesh {}  overhead {overhead:+.1}% (time per spawn)",
        rate(local_bare),
        rate(local_mesh)
    );
    rows.push(Row {
        figure: "1. local spawn (actors/s)",
        actormesh: rate(local_mesh),
        baseline: rate(local_bare),
        ratio: format!("overhead {overhead:+.0}%"),
        target: "(reported)",
        met: None,
    });
    println!();

    // 2. Remote spawn.
    println!(
        "2. remote spawn: Node::spawn_on::<Idle> from this process to a node in a child process, loopback"
    );
    let discovery = MemoryDiscovery::new();
    let node = start_node_on(discovery.clone(), false).await?;
    let child = ChildProcess::start(&["serve-node"]).await?;
    let info = child_info(&child.line)?;
    // An in-process discovery does not reach the child: put the child's entry (which it
    // printed) into this process's view, as a shared discovery service would.
    let _child_entry = discovery.join(&info).await?;
    node.wait_for_node(&info.id, Duration::from_secs(5)).await?;
    println!(
        "   child pid {:?}: node {} at {} (entered into this process's MemoryDiscovery from its announcement)",
        child.child.id(),
        info.id,
        info.addr
    );
    let warm = seq_spawn(&node, &info.id, REMOTE_WARMUP).await?;
    println!("   warmup: {} (discarded)", warm.describe());
    let seq = seq_spawn(&node, &info.id, SEQ_REMOTE_SPAWNS).await?;
    println!("   sequential spawn_on:       {}", seq.describe());
    let conc = concurrent_spawn(&node, &info.id, CONCURRENT_REMOTE_SPAWNS).await?;
    println!("   {SPAWNERS} concurrent spawners:    {}", conc.describe());
    let pinged = node.spawn_on::<Idle>(&info.id, ()).await?;
    let seq_ref = seq_ask(&pinged, SEQ_REMOTE_SPAWNS).await?;
    let conc_ref = concurrent_ask(&pinged, CONCURRENT_REMOTE_SPAWNS).await?;
    println!(
        "   reference, same link: sequential ask {}",
        seq_ref.describe()
    );
    println!(
        "   reference, same link: {SPAWNERS} concurrent askers {}",
        conc_ref.describe()
    );
    println!(
        "   baseline: local Node::spawn {} (figure 1); sequential spawn_on = {:.2}% of it, \
         {:.2}x the time of a sequential ask; {SPAWNERS} spawners = {:.2}% of it, {:.0}% of the \
         concurrent ask rate",
        rate(local_mesh),
        seq.rate() / local_mesh * 100.0,
        seq_ref.rate() / seq.rate(),
        conc.rate() / local_mesh * 100.0,
        conc.rate() / conc_ref.rate() * 100.0
    );
    rows.push(Row {
        figure: "2a. remote spawn, sequential",
        actormesh: rate(seq.rate()),
        baseline: rate(local_mesh),
        ratio: format!("{:.2}% of local", seq.rate() / local_mesh * 100.0),
        target: "(reported)",
        met: None,
    });
    rows.push(Row {
        figure: "2b. remote spawn, 64 spawners",
        actormesh: rate(conc.rate()),
        baseline: rate(local_mesh),
        ratio: format!("{:.2}% of local", conc.rate() / local_mesh * 100.0),
        target: "(reported)",
        met: None,
    });
    drop(pinged);
    tokio::time::timeout(Duration::from_secs(10), node.shutdown())
        .await
        .map_err(|_| "the node did not shut down within 10 s")?;
    child.stop().await;
    println!();

    // 3. Memory per idle actor.
    let available = meminfo_kib("MemAvailable:");
    let mut actors = MEMORY_ACTORS;
    let scaled = match available {
        Some(kib) => {
            let usable = (kib * 1024).saturating_sub(RESERVE_MARGIN);
            let fits = usable / RESERVE_PER_ACTOR;
            if fits < actors as u64 {
                actors = ((fits / 100_000) * 100_000).max(50_000) as usize;
                true
            } else {
                false
            }
        }
        None => false,
    };
    println!(
        "3. memory per idle actor: {actors} actors on one node, each side in a child process of its own"
    );
    println!(
        "   MemAvailable {} (one child at a time; {RESERVE_PER_ACTOR} B/actor + 2 GiB set aside): {}",
        available.map_or_else(|| "unknown".to_owned(), |k| mib(k as f64)),
        if scaled {
            format!("SCALED DOWN from {MEMORY_ACTORS} to {actors} actors")
        } else {
            format!("running the full {actors}")
        }
    );
    let bare = memory_run("mem-actix", actors).await?;
    let mesh = memory_run("mem-mesh", actors).await?;
    let bare_batched = memory_run("mem-actix-batched", actors).await?;
    let mesh_batched = memory_run("mem-mesh-batched", actors).await?;
    for (name, m) in [
        ("actix Idle.start(), all spawn calls first", &bare),
        ("actormesh Node::spawn, all spawn calls first", &mesh),
        ("actix Idle.start(), batches of 10,000", &bare_batched),
        ("actormesh Node::spawn, batches of 10,000", &mesh_batched),
    ] {
        println!(
            "   {name} (child pid {:?}): VmRSS {} before, {} after the spawn calls, {} once all \
             started; VmHWM {}",
            m.pid,
            mib(m.get("before_kib")),
            mib(m.get("queued_kib")),
            mib(m.get("after_kib")),
            mib(m.get("peak_kib"))
        );
        println!(
            "      {:.0} actors live (started), {:.0} registered, all started: {}; spawn calls {:.0} ms \
             ({}), all started after {:.0} ms ({})",
            m.get("live"),
            m.get("registered"),
            if m.get("all_started") == 1.0 {
                "yes"
            } else {
                "NO"
            },
            m.get("spawn_ms"),
            rate(m.actors() / m.get("spawn_ms") * 1e3),
            m.get("ready_ms"),
            rate(m.actors() / m.get("ready_ms") * 1e3)
        );
        println!(
            "      per actor: {:.0} B once all started (RSS growth / actors), {:.0} B right after \
             the spawn calls, {:.0} B at the peak (VmHWM - RSS before)",
            m.per_actor("after_kib"),
            m.per_actor("queued_kib"),
            m.per_actor("peak_kib")
        );
    }
    println!(
        "   (the actix baseline keeps the {actors} Addr in a Vec, 24 B each: actix stops an actor \
         when its last Addr drops; the node keeps its actors' addresses itself)"
    );
    let (m, b) = (mesh.per_actor("after_kib"), bare.per_actor("after_kib"));
    println!(
        "   per idle actor: actormesh {m:.0} B, actix {b:.0} B ({:.2}x; actormesh adds {:.0} B); \
         target <= 1024 B (Erlang ~2.6 KB per process, Akka claims ~400 B)",
        m / b,
        m - b
    );
    rows.push(Row {
        figure: "3. memory per idle actor",
        actormesh: format!("{m:.0} B"),
        baseline: format!("{b:.0} B"),
        ratio: format!("{:.2}x", m / b),
        target: "<= 1024 B",
        met: Some(m <= 1024.0),
    });
    let (mb, bb) = (
        mesh_batched.per_actor("after_kib"),
        bare_batched.per_actor("after_kib"),
    );
    println!(
        "   spawned in batches of {MEMORY_BATCH} (each started before the next): actormesh {mb:.0} B, \
         actix {bb:.0} B ({:.2}x; actormesh adds {:.0} B)",
        mb / bb,
        mb - bb
    );
    rows.push(Row {
        figure: "3. same, batches of 10,000",
        actormesh: format!("{mb:.0} B"),
        baseline: format!("{bb:.0} B"),
        ratio: format!("{:.2}x", mb / bb),
        target: "<= 1024 B",
        met: Some(mb <= 1024.0),
    });
    let (mp, bp) = (mesh.get("peak_kib"), bare.get("peak_kib"));
    rows.push(Row {
        figure: "3. peak RSS (VmHWM)",
        actormesh: mib(mp),
        baseline: mib(bp),
        ratio: format!("{:.2}x", mp / bp),
        target: "(reported)",
        met: None,
    });
    println!();

    // The table.
    println!(
        "{:<30} | {:>12} | {:>12} | {:>17} | {:<10} | met",
        "figure", "actormesh", "baseline", "ratio", "target"
    );
    println!("{}", "-".repeat(30 + 12 + 12 + 17 + 10 + 4 + 5 * 3));
    for r in &rows {
        println!(
            "{:<30} | {:>12} | {:>12} | {:>17} | {:<10} | {}",
            r.figure,
            r.actormesh,
            r.baseline,
            r.ratio,
            r.target,
            match r.met {
                None => "-",
                Some(true) => "yes",
                Some(false) => "NO",
            }
        );
    }
    println!(
        "baselines: 1 and 3 = bare actix Idle.start() (same actor type, same run); \
         2 = local Node::spawn of figure 1"
    );
    if scaled {
        println!("NOTE: figure 3 ran with {actors} actors, not {MEMORY_ACTORS} (MemAvailable)");
    }
    Ok(())
}
