//! The gateway scenario node:
//! `gateway-node CLUSTER NODE_ID --etcd ENDPOINT [--ttl SECS] [--group NAME]`.
//!
//! Joins the cluster through etcd (lease TTL `--ttl`, default 2 s) as a node that runs no
//! actors of its own, and serves an `actormesh-gateway` on a free loopback port with one
//! route: `GET /work/{key}` asks one instance of the group `--group` (default `workers`, the
//! group of `cluster-node --workers K`) with the idempotent [`Work`] message, and answers
//! `{"node": ..., "index": ...}`. Its attempts are bounded (500 ms each, 3 retries on other
//! instances) so that an ask sent to a node that was just killed moves on quickly.
//!
//! Prints `READY <hex of its HTTP address as text>` and serves until its standard input closes
//! or it receives `SIGTERM`; then it drains the gateway (in-flight requests finish, up to 5 s),
//! shuts the node down and exits 0. A node that cannot start exits 1; a bad command line 2.

use std::time::Duration;

use actormesh::discovery::{EtcdConfig, EtcdDiscovery};
use actormesh::{GroupConfig, Node};
use actormesh_cluster_tests::process::{init_stderr_log, take_sigterm, until_stopped};
use actormesh_cluster_tests::{to_hex, Work, Worker, DEFAULT_GROUP};
use actormesh_gateway::{Gateway, Route, RunningGateway};
use serde::Serialize;

const USAGE: &str =
    "usage: gateway-node CLUSTER NODE_ID --etcd ENDPOINT [--ttl SECS] [--group NAME]";

/// The bound on one attempt of an ask to an instance.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);

/// How long the drain at exit may take.
const DRAIN: Duration = Duration::from_secs(5);

/// The parsed command line.
#[derive(Debug)]
struct Args {
    cluster: String,
    id: String,
    etcd: String,
    ttl: Duration,
    group: String,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let (Some(cluster), Some(id)) = (args.next(), args.next()) else {
        return Err(USAGE.to_owned());
    };
    let mut etcd = None;
    let mut ttl = Duration::from_secs(2);
    let mut group = DEFAULT_GROUP.to_owned();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value; {USAGE}"))?;
        match flag.as_str() {
            "--etcd" => etcd = Some(value),
            "--ttl" => {
                let secs: u64 = value.parse().map_err(|e| format!("--ttl {value}: {e}"))?;
                ttl = Duration::from_secs(secs);
            }
            "--group" => group = value,
            other => return Err(format!("unknown option {other}; {USAGE}")),
        }
    }
    Ok(Args {
        cluster,
        id,
        etcd: etcd.ok_or_else(|| format!("--etcd is required; {USAGE}"))?,
        ttl,
        group,
    })
}

/// The answer of `GET /work/{key}`.
#[derive(Serialize)]
struct Answer {
    node: String,
    index: u32,
}

/// Starts the node and the gateway and prints `READY`.
async fn start(args: &Args) -> Result<(Node, RunningGateway), String> {
    let discovery =
        EtcdDiscovery::connect(EtcdConfig::new([args.etcd.clone()]).lease_ttl(args.ttl))
            .await
            .map_err(|e| e.to_string())?;
    let node = Node::builder()
        .cluster(args.cluster.clone())
        .node_id(args.id.clone())
        .discovery(discovery)
        .insecure_links()
        .start()
        .await
        .map_err(|e| e.to_string())?;
    let config = GroupConfig::new()
        .attempt_timeout(ATTEMPT_TIMEOUT)
        .retries(3);
    let gateway = Gateway::builder(node.clone())
        .route(
            Route::get("/work/{key}")
                .group_with::<Worker>(args.group.clone(), config)
                .ask_idempotent_with(
                    |call| {
                        Ok(Work {
                            key: call.param("key")?,
                        })
                    },
                    |(node, index)| Ok(Answer { node, index }),
                ),
        )
        .build()
        .map_err(|e| e.to_string())?;
    let running = match gateway
        .serve("127.0.0.1:0".parse().expect("an address"))
        .await
    {
        Ok(running) => running,
        Err(e) => {
            node.shutdown().await;
            return Err(format!("cannot listen: {e}"));
        }
    };
    println!(
        "READY {}",
        to_hex(running.local_addr().to_string().as_bytes())
    );
    Ok((node, running))
}

#[actix::main]
async fn main() {
    init_stderr_log();
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("gateway-node: {e}");
            std::process::exit(2);
        }
    };
    // Before the node starts: a SIGTERM from then on is a graceful stop.
    let mut terminate = take_sigterm("gateway-node", &args.id);
    let (node, running) = match start(&args).await {
        Ok(started) => started,
        Err(e) => {
            eprintln!("gateway-node {}: cannot start: {e}", args.id);
            std::process::exit(1);
        }
    };
    until_stopped(&mut terminate).await;
    let report = running.shutdown(DRAIN).await;
    eprintln!(
        "gateway-node {}: drained ({} in flight, {} cut off)",
        args.id, report.in_flight_at_start, report.cut_off
    );
    node.shutdown().await;
}
