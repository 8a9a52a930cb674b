//! The gateway benchmark: HTTP requests through the gateway to a group on another node,
//! beside a bare axum handler doing the same work in process, loaded by `wrk` in the same run.
//!
//! Two nodes in this process on the embedded discovery, each on a thread of its own, linked over
//! loopback TCP: `edge` runs
//! the gateway (`GET /quote/{sku}`: an `ask_idempotent` to the group `pricers`), `pricing` runs
//! two `Pricer` instances. A third target, `GET /local/{sku}`, asks a `Pricer` on the gateway's
//! own node: what the gateway itself costs, without the hop between nodes. The baseline is an axum server with the same route computing the
//! same answer itself. Each is loaded by `wrk -t1 -c{connections} -d{seconds}s --latency` after
//! a 2 s warm-up; the figures printed are wrk's: requests/s, p50 and p99, and the difference.
//!
//! Run it with `./scripts/bench-gateway.sh` (installs wrk when missing) or
//! `cargo run --release -p actormesh-gateway --example gateway_bench -- [--seconds S]
//! [--connections C]`.

use std::net::SocketAddr;
use std::time::Duration;

use actix::{Actor, Context, Handler, MessageResult};
use actormesh::prelude::*;
use actormesh::Idempotent;
use actormesh_gateway::{Gateway, Route};
use serde::{Deserialize, Serialize};

/// Asks for the price of `sku`.
#[derive(Debug, Clone, Serialize, Deserialize, RemoteMessage)]
#[remote(name = "bench.Quote", result = "Price")]
struct Quote {
    sku: u64,
}
impl Idempotent for Quote {}

/// A price.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Price {
    sku: u64,
    cents: u64,
}

/// The work both servers do: a price from the SKU.
fn price(sku: u64) -> Price {
    Price {
        sku,
        cents: sku.wrapping_mul(37).wrapping_add(1_99) % 100_000,
    }
}

/// One instance of the group `pricers`.
struct Pricer;

impl Actor for Pricer {
    type Context = Context<Self>;
}

impl Handler<Quote> for Pricer {
    type Result = MessageResult<Quote>;
    fn handle(&mut self, m: Quote, _: &mut Context<Self>) -> Self::Result {
        MessageResult(price(m.sku))
    }
}

actormesh::remote_actor!(Pricer = "bench.Pricer" { Quote });

/// What wrk measured.
#[derive(Debug, Default)]
struct Figures {
    requests_per_sec: f64,
    p50: Duration,
    p99: Duration,
    errors: u64,
}

/// Reads wrk's duration notation (`812.00us`, `1.23ms`, `2.00s`).
fn wrk_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else {
        return None;
    };
    number
        .parse::<f64>()
        .ok()
        .map(|n| Duration::from_secs_f64(n * scale))
}

fn parse_wrk(output: &str) -> Figures {
    let mut figures = Figures::default();
    for line in output.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", n] => figures.requests_per_sec = n.parse().unwrap_or(0.0),
            ["50%", d] => figures.p50 = wrk_duration(d).unwrap_or_default(),
            ["99%", d] => figures.p99 = wrk_duration(d).unwrap_or_default(),
            ["Non-2xx", "or", "3xx", "responses:", n] => figures.errors += n.parse().unwrap_or(0),
            ["Socket", "errors:", ..] => figures.errors += 1,
            _ => {}
        }
    }
    figures
}

async fn wrk(url: &str, connections: u32, seconds: u32) -> Result<Figures, String> {
    let output = tokio::process::Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            url,
        ])
        .output()
        .await
        .map_err(|e| {
            format!("cannot run wrk ({e}): install it (Debian: apt-get install wrk; ./scripts/bench-gateway.sh does)")
        })?;
    if !output.status.success() {
        return Err(format!(
            "wrk failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(parse_wrk(&String::from_utf8_lossy(&output.stdout)))
}

fn arg(name: &str, default: u32) -> u32 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds = arg("--seconds", 10);
    let connections = arg("--connections", 32);
    let discovery = MemoryDiscovery::new();
    let edge = Node::builder()
        .node_id("edge")
        .discovery(discovery.clone())
        .start()
        .await?;
    // The pricing node runs on a thread (and actix system) of its own, as it would in its own
    // process: the gateway's thread does only the gateway's work.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let pricing_discovery = discovery.clone();
    let pricing_thread = std::thread::spawn(move || {
        actix::System::new().block_on(async move {
            let started = async {
                let pricing = Node::builder()
                    .node_id("pricing")
                    .discovery(pricing_discovery)
                    .start()
                    .await?;
                for _ in 0..2 {
                    let pricer = pricing.spawn(Pricer);
                    pricing.join_group("pricers", &pricer).await?;
                }
                Ok::<_, actormesh::Error>(pricing)
            }
            .await;
            match started {
                Ok(pricing) => {
                    let _ = ready_tx.send(Ok(()));
                    let _ = stop_rx.await;
                    pricing.shutdown().await;
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                }
            }
        })
    });
    ready_rx.recv()??;
    // The same service on the gateway's own node: the gateway's cost without the network hop.
    let local = edge.spawn(Pricer);
    edge.join_group("local-pricers", &local).await?;
    edge.group::<Pricer>("local-pricers")
        .await?
        .wait_for_instances(1, Duration::from_secs(10))
        .await?;
    edge.group::<Pricer>("pricers")
        .await?
        .wait_for_instances(2, Duration::from_secs(10))
        .await?;

    let gateway = Gateway::builder(edge.clone())
        .route(
            Route::get("/quote/{sku}")
                .group::<Pricer>("pricers")
                .ask_idempotent(|call| {
                    Ok(Quote {
                        sku: call.param("sku")?,
                    })
                }),
        )
        .route(
            Route::get("/local/{sku}")
                .group::<Pricer>("local-pricers")
                .ask_idempotent(|call| {
                    Ok(Quote {
                        sku: call.param("sku")?,
                    })
                }),
        )
        .build()?
        .serve("127.0.0.1:0".parse()?)
        .await?;

    let bare =
        axum::Router::new().route(
            "/quote/{sku}",
            axum::routing::get(
                |axum::extract::Path(sku): axum::extract::Path<u64>| async move {
                    axum::Json(price(sku))
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let bare_addr: SocketAddr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, bare).await;
    });

    println!(
        "gateway benchmark: wrk -t1 -c{connections} -d{seconds}s, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let targets = [
        (
            "bare axum handler, in process",
            format!("http://{bare_addr}/quote/42"),
        ),
        (
            "gateway -> remote group ask",
            format!("http://{}/quote/42", gateway.local_addr()),
        ),
        (
            "gateway -> group on its own node",
            format!("http://{}/local/42", gateway.local_addr()),
        ),
    ];
    let mut results = Vec::new();
    for (name, url) in &targets {
        wrk(url, connections, 2).await?; // warm-up
        let figures = wrk(url, connections, seconds).await?;
        println!(
            "{name:<32} {:>10.0} req/s   p50 {:>9.3?}   p99 {:>9.3?}   errors {}",
            figures.requests_per_sec, figures.p50, figures.p99, figures.errors
        );
        results.push(figures);
    }
    let bare = &results[0];
    for (i, label) in [(1, "remote group"), (2, "local group")] {
        let through = &results[i];
        println!(
            "gateway ({label}) / bare: {:.2}x the requests/s; added latency p50 {:.3?}, p99 {:.3?}",
            through.requests_per_sec / bare.requests_per_sec.max(1.0),
            through.p50.saturating_sub(bare.p50),
            through.p99.saturating_sub(bare.p99),
        );
    }
    gateway.shutdown(Duration::from_secs(5)).await;
    let _ = stop_tx.send(());
    let _ = pricing_thread.join();
    edge.shutdown().await;
    Ok(())
}
