//! Mutual TLS on links against plaintext links, measured in the same run:
//!
//! ```text
//! cargo run --release -p actormesh-examples --bin tls_bench
//! ```
//!
//! Two nodes, each on an actix system of its own thread (the receiving node's work runs in
//! parallel with the sender's), on one in-process discovery; the same figures once with
//! plaintext links and once with mutual TLS (certificates from `actormesh::DevCa`):
//!
//! 1. remote tell throughput (16-byte payload);
//! 2. sequential remote asks, p50 and p99;
//! 3. the cost of a new link: a fresh node's first ask to the other (TCP connect, TLS
//!    handshake with both certificates checked, HTTP/2 and link handshake, one round trip),
//!    median of several.
//!
//! Every loop is bounded by a count and a wall-clock limit; the figures are printed side by
//! side and the program never fails because of slowness.

use std::time::{Duration, Instant};

use actormesh::prelude::*;
use actormesh::{DevCa, LinkTls, NodeBuilder};
use actormesh_examples::sink::{Count, Hit, Ping, Sink};
use actormesh_examples::{median, micros, rate, BoxError};

/// Tells per throughput round.
const TELLS: u64 = 500_000;
/// Sequential asks measured (after a warmup of a tenth as many).
const ASKS: usize = 10_000;
/// New links measured.
const NEW_LINKS: usize = 30;
/// Wall-clock limit of one round.
const LIMIT: Duration = Duration::from_secs(30);
/// The sender yields to its runtime every this many tells, so its link writer runs.
const YIELD_EVERY: u64 = 4096;

/// The figures of one kind of link.
#[derive(Debug)]
struct Figures {
    tells_per_s: f64,
    ask_p50: Duration,
    ask_p99: Duration,
    new_link: Duration,
}

/// How a node of the run secures its links.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Links {
    Plain,
    Tls,
}

fn builder(
    d: &MemoryDiscovery,
    ca: &DevCa,
    id: &str,
    links: Links,
) -> Result<NodeBuilder, BoxError> {
    let b = Node::builder()
        .cluster("bench")
        .node_id(id)
        .discovery(d.clone());
    Ok(match links {
        Links::Plain => b,
        Links::Tls => b.tls(ca.link_tls(id)?),
    })
}

/// Starts the receiving node on a thread of its own; returns its id and a way to stop it.
fn serve(
    d: MemoryDiscovery,
    tls: Option<LinkTls>,
    id: &'static str,
) -> Result<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>), BoxError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        actix::System::new().block_on(async move {
            let mut b = Node::builder().cluster("bench").node_id(id).discovery(d);
            if let Some(tls) = tls {
                b = b.tls(tls);
            }
            let node = match b.start().await {
                Ok(node) => node,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let sink = node.spawn(Sink::default());
            if let Err(e) = node.register_name("sink", &sink).await {
                let _ = ready_tx.send(Err(e.to_string()));
                return;
            }
            let _ = ready_tx.send(Ok(()));
            // Until the run is over (polled: the thread's runtime must keep running).
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            while stop_rx.try_recv().is_err() {
                tick.tick().await;
            }
            node.shutdown().await;
        });
    });
    ready_rx.recv_timeout(Duration::from_secs(20))??;
    Ok((stop_tx, thread))
}

async fn measure(links: Links) -> Result<Figures, BoxError> {
    let ca = DevCa::new("bench")?;
    let d = MemoryDiscovery::new();
    let server_tls = match links {
        Links::Plain => None,
        Links::Tls => Some(ca.link_tls("server")?),
    };
    let (stop, thread) = serve(d.clone(), server_tls, "server")?;
    let client = builder(&d, &ca, "client", links)?.start().await?;
    let sink = client.lookup::<Sink>("sink").await?;

    // 1. Tells.
    let base = sink.ask(Count).await?;
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < TELLS && start.elapsed() < LIMIT {
        match sink.tell(Hit([7; 16])) {
            Ok(()) => sent += 1,
            Err(_) => tokio::task::yield_now().await,
        }
        if sent.is_multiple_of(YIELD_EVERY) {
            tokio::task::yield_now().await;
        }
    }
    let mut arrived = 0;
    while start.elapsed() < LIMIT * 2 {
        arrived = sink.ask(Count).await? - base;
        if arrived >= sent {
            break;
        }
    }
    let tells_per_s = arrived as f64 / start.elapsed().as_secs_f64();

    // 2. Sequential asks.
    for i in 0..(ASKS / 10) as u64 {
        sink.ask(Ping(i)).await?;
    }
    let mut times = Vec::with_capacity(ASKS);
    let series = Instant::now();
    for i in 0..ASKS as u64 {
        if series.elapsed() > LIMIT {
            break;
        }
        let t = Instant::now();
        sink.ask(Ping(i)).await?;
        times.push(t.elapsed());
    }
    times.sort();
    let ask_p50 = times[times.len() / 2];
    let ask_p99 = times[times.len() * 99 / 100];

    // 3. New links: a fresh node's first ask.
    let mut firsts = Vec::with_capacity(NEW_LINKS);
    for i in 0..NEW_LINKS {
        let id = format!("fresh-{i}");
        let node = builder(&d, &ca, &id, links)?.start().await?;
        let sink = node.lookup::<Sink>("sink").await?;
        let t = Instant::now();
        sink.ask(Ping(0)).await?;
        firsts.push(t.elapsed());
        node.shutdown().await;
    }
    let new_link =
        Duration::from_secs_f64(median(firsts.iter().map(Duration::as_secs_f64).collect()));

    client.shutdown().await;
    let _ = stop.send(());
    let _ = thread.join();
    Ok(Figures {
        tells_per_s,
        ask_p50,
        ask_p99,
        new_link,
    })
}

#[actix::main]
async fn main() {
    let mode = if cfg!(debug_assertions) {
        "DEBUG (numbers meaningless; use --release)"
    } else {
        "release"
    };
    println!("tls_bench ({mode}): plaintext links against mutual TLS, same run");
    let result = async {
        let plain = measure(Links::Plain).await?;
        let tls = measure(Links::Tls).await?;
        println!(
            "{:<34} {:>14} {:>14} {:>8}",
            "figure", "plaintext", "mTLS", "mTLS/plain"
        );
        println!(
            "{:<34} {:>14} {:>14} {:>8.2}",
            "remote tell, msgs/s",
            rate(plain.tells_per_s),
            rate(tls.tells_per_s),
            tls.tells_per_s / plain.tells_per_s
        );
        for (name, p, t) in [
            ("ask round trip p50", plain.ask_p50, tls.ask_p50),
            ("ask round trip p99", plain.ask_p99, tls.ask_p99),
            (
                "new link: first ask of a new node",
                plain.new_link,
                tls.new_link,
            ),
        ] {
            println!(
                "{:<34} {:>14} {:>14} {:>8.2}",
                name,
                micros(p),
                micros(t),
                t.as_secs_f64() / p.as_secs_f64()
            );
        }
        Ok::<_, BoxError>(())
    }
    .await;
    if let Err(e) = result {
        eprintln!("tls_bench: error: {e}");
        std::process::exit(1);
    }
}
