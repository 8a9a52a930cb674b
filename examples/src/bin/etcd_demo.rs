//! actormesh on etcd: three nodes of one cluster find each other through a real etcd.
//!
//! Start an etcd (v3.4 or newer), then run the demo with its client URL:
//!
//! ```text
//! etcd --data-dir /tmp/am-etcd --listen-client-urls http://127.0.0.1:2379 \
//!      --advertise-client-urls http://127.0.0.1:2379
//! cargo run -p actormesh-examples --bin etcd_demo -- http://127.0.0.1:2379
//! ```
//!
//! The demo starts three nodes of the cluster `etcd-demo`, each with its own connection to
//! etcd (as three processes would have), registers a counter on one node and asks it from
//! another, prints the keys the nodes keep in etcd, then shuts the counter's node down
//! gracefully: its keys are gone, the others see it leave, and references to it fail fast.
//! It exits 0 when everything behaved as described, and leaves no key behind.
//!
//! With `--pause` after the URL, the demo waits for Enter before the shutdown, so that the keys
//! can be looked at with `etcdctl get --prefix /actormesh/` meanwhile.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use actix::{Actor, Context, Handler, Message};
use actormesh::discovery::{EtcdConfig, EtcdDiscovery};
use actormesh::prelude::*;
use actormesh::MembershipEvent;
use etcd_client::{Client, GetOptions};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;

/// The cluster the demo's nodes join; its keys live under `/actormesh/etcd-demo/`.
const CLUSTER: &str = "etcd-demo";
/// The lease TTL: a node that stops renewing is declared down within about this long.
const LEASE_TTL: Duration = Duration::from_secs(3);
/// How often each node publishes its load report (default 5 s; shorter to see it at once).
const LOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Adds to a running total and answers the new total.
#[derive(Debug, Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
struct Add(u64);

impl RemoteMessage for Add {
    const NAME: &'static str = "etcd_demo.Add";
}

/// A counter.
#[derive(Default)]
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

actormesh::remote_actor!(Counter = "etcd_demo.Counter" { Add });

/// Starts node `id` of the demo's cluster, with its own connection to etcd.
async fn start(endpoint: &str, id: &str) -> Result<Node, Error> {
    let config = EtcdConfig::new([endpoint]).lease_ttl(LEASE_TTL);
    let discovery = EtcdDiscovery::connect(config).await?;
    Node::builder()
        .cluster(CLUSTER)
        .node_id(id)
        .label("zone", "local")
        .discovery(discovery)
        .insecure_links()
        .load_report_interval(LOAD_INTERVAL)
        .start()
        .await
}

/// The keys under `prefix` with their lease (0 for none) and value, read straight from etcd.
async fn keys(etcd: &mut Client, prefix: &str) -> Result<Vec<(String, i64, String)>, String> {
    let response = etcd
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| format!("cannot read {prefix} from etcd: {e}"))?;
    Ok(response
        .kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.lease(),
                String::from_utf8_lossy(kv.value()).into_owned(),
            )
        })
        .collect())
}

/// Prints every key under `prefix` with its lease (in hex, as `etcdctl` shows leases), and its
/// value when `values` is set.
async fn print_keys(etcd: &mut Client, prefix: &str, values: bool) -> Result<(), String> {
    for (key, lease, value) in keys(etcd, prefix).await? {
        println!("   {key}  (lease {lease:x})");
        if values {
            println!("      {value}");
        }
    }
    Ok(())
}

/// Polls until every node of `nodes` has a load report under `prefix`, for at most 5 s.
async fn wait_for_load_reports(etcd: &mut Client, prefix: &str, nodes: &[&Node]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(entries) = keys(etcd, &format!("{prefix}load/")).await {
            let reported = |n: &&Node| entries.iter().any(|(k, _, _)| k.ends_with(n.id().as_str()));
            if nodes.iter().all(reported) {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Waits for the next `Left` or `Down` event, for at most `timeout`.
async fn next_departure(
    events: &mut tokio::sync::broadcast::Receiver<MembershipEvent>,
    timeout: Duration,
) -> Option<MembershipEvent> {
    tokio::time::timeout(timeout, async {
        loop {
            match events.recv().await {
                Ok(e @ (MembershipEvent::Left(_) | MembershipEvent::Down(_))) => return Some(e),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

#[actix::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("etcd_demo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The tour; any error ends it.
async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let endpoint = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:2379".to_owned());
    let pause = match args.next().as_deref() {
        None => false,
        Some("--pause") => true,
        Some(other) => {
            return Err(format!(
                "unexpected argument `{other}`; usage: etcd_demo [ETCD_URL] [--pause]"
            )
            .into())
        }
    };
    let prefix = format!("/actormesh/{CLUSTER}/");

    let a = start(&endpoint, "node-a").await?;
    let b = start(&endpoint, "node-b").await?;
    let c = start(&endpoint, "node-c").await?;
    for node in [&a, &b] {
        node.wait_for_node(c.id(), Duration::from_secs(5)).await?;
    }
    println!("1. three nodes joined the cluster `{CLUSTER}` through etcd at {endpoint}:");
    for member in a.members() {
        println!("   {} at {}", member.id, member.addr);
    }

    let counter = c.spawn(Counter::default());
    c.register_name("orders", &counter).await?;
    let orders = a.lookup::<Counter>("orders").await?;
    println!(
        "2. node-c runs a counter registered as \"orders\"; node-a looked it up \
         (on {}, local to node-a: {}) and asked Add(42) -> {}",
        orders.node(),
        orders.is_local(),
        orders.ask(Add(42)).await?
    );

    let mut etcd = Client::connect([endpoint.as_str()], None)
        .await
        .map_err(|e| format!("cannot connect to etcd at {endpoint}: {e}"))?;
    if !wait_for_load_reports(&mut etcd, &prefix, &[&a, &b, &c]).await {
        return Err("the nodes did not publish their load reports within 5 s".into());
    }
    println!("3. what the nodes keep in etcd (each key bound to its node's lease):");
    print_keys(&mut etcd, &prefix, true).await?;

    if pause {
        println!(
            "   paused: look with `etcdctl --endpoints {endpoint} get --prefix {prefix}`, \
             then press Enter"
        );
        let mut line = String::new();
        tokio::io::BufReader::new(tokio::io::stdin())
            .read_line(&mut line)
            .await?;
    }

    let mut events = a.subscribe();
    c.shutdown().await;
    println!("4. node-c shut down gracefully (marked `leaving`, lease revoked); the keys left:");
    print_keys(&mut etcd, &prefix, false).await?;
    let remaining = keys(&mut etcd, &prefix).await?;
    if let Some((key, _, _)) = remaining
        .iter()
        .find(|(k, _, _)| k.ends_with("/node-c") || k.ends_with("/orders"))
    {
        return Err(format!("{key} outlived node-c's graceful leave").into());
    }
    match next_departure(&mut events, Duration::from_secs(5)).await {
        Some(MembershipEvent::Left(id)) if id == *c.id() => println!("   node-a saw: {id} left"),
        other => return Err(format!("node-a expected node-c to leave, saw {other:?}").into()),
    }
    match orders.ask(Add(1)).await {
        Err(e @ Error::NodeDown { .. }) => println!("   node-a's reference fails fast: {e}"),
        other => {
            return Err(format!("expected NodeDown from the gone counter, got {other:?}").into())
        }
    }
    match a.lookup::<Counter>("orders").await {
        Err(e @ Error::NameNotFound(_)) => println!("   and the name is gone: {e}"),
        other => return Err(format!("expected NameNotFound, got {other:?}").into()),
    }

    b.shutdown().await;
    a.shutdown().await;
    let left = keys(&mut etcd, &prefix).await?;
    if !left.is_empty() {
        return Err(format!("keys left behind: {left:?}").into());
    }
    println!("5. node-b and node-a shut down too; nothing is left under {prefix}");
    Ok(())
}
