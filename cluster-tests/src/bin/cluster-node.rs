//! The scenario node:
//! `cluster-node CLUSTER NODE_ID [--etcd ENDPOINT] [--ttl SECS] [--listen IP] [--load-ms MS]
//! [--workers K] [--group NAME] [--controller] [--supervised-worker] [--fault-actors]`.
//!
//! Starts a node, spawns a `Counter`, prints `READY <hex reference>` and serves until its
//! standard input closes, then shuts down gracefully and exits 0.
//!
//! Without `--etcd` the node uses a private in-memory discovery (a cluster of one, reached
//! through references handed over by the test). With `--etcd ENDPOINT` it joins the cluster
//! through etcd (lease TTL `--ttl`, default 2 s; load reports every `--load-ms`, default
//! 500 ms) and registers its `Counter` as `counter-{NODE_ID}` and an `Observer` as
//! `observer-{NODE_ID}`. `--listen IP` makes it listen (and be reached) on that address
//! instead of 127.0.0.1.
//!
//! `--workers K` (default 0) also spawns `K` `Worker`s, numbered `0..K`, each a member of the
//! group `--group NAME` (default `workers`), before `READY` is printed: once the process is
//! ready, its workers are in the group (in etcd with `--etcd`). A graceful stop or a death
//! takes them out of the group with the node.
//!
//! Every process registers `Replica` as spawnable (the controller scenarios deploy it).
//! `--controller` makes the node a candidate for the cluster's controller and labels it
//! `role=replica` (which the scenarios' specs select, so the test node gets no replica).
//! `--supervised-worker` (with `--etcd`) spawns a `Replica` under `Restart::OnFailure`
//! supervision, named `sup-{NODE_ID}`, and a plain one named `neighbour-{NODE_ID}`.
//! `--fault-actors` (with `--etcd`) spawns a `Spinner` (its handler keeps the node's thread
//! busy on request) named `spinner-{NODE_ID}` and a `Ledger` (records the operations it
//! applied) named `ledger-{NODE_ID}`.
//!
//! `--admin ADDR` runs the node's admin listener there (metrics, health, status, dashboard,
//! `POST /drain`; port 0 picks one, which the node's entry in discovery tells). The process
//! also ends after a drain request or SIGTERM, once the node has drained.
//!
//! When the node cannot start (for example its id is used by a live node of the cluster) the
//! error is printed to stderr and the process exits with code 1; a bad command line exits 2.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use actormesh::discovery::{EtcdConfig, EtcdDiscovery};
use actormesh::{Node, Restart, Supervision};
use actormesh_cluster_tests::{
    set_local_node, to_hex, Counter, Ledger, Observer, Replica, Spinner, Worker, DEFAULT_GROUP,
    REPLICA_LABEL,
};
use tokio::io::AsyncReadExt;

const USAGE: &str = "usage: cluster-node CLUSTER NODE_ID [--etcd ENDPOINT] [--ttl SECS] \
                     [--listen IP] [--load-ms MS] [--workers K] [--group NAME] \
                     [--controller] [--supervised-worker] [--fault-actors] [--admin ADDR]";

/// The parsed command line.
#[derive(Debug)]
struct Args {
    cluster: String,
    id: String,
    etcd: Option<String>,
    ttl: Duration,
    listen: Option<IpAddr>,
    load_interval: Duration,
    workers: u32,
    group: String,
    controller: bool,
    supervised_worker: bool,
    fault_actors: bool,
    admin: Option<SocketAddr>,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let (Some(cluster), Some(id)) = (args.next(), args.next()) else {
        return Err(USAGE.to_owned());
    };
    let mut parsed = Args {
        cluster,
        id,
        etcd: None,
        ttl: Duration::from_secs(2),
        listen: None,
        load_interval: Duration::from_millis(500),
        workers: 0,
        group: DEFAULT_GROUP.to_owned(),
        controller: false,
        supervised_worker: false,
        fault_actors: false,
        admin: None,
    };
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--controller" => {
                parsed.controller = true;
                continue;
            }
            "--supervised-worker" => {
                parsed.supervised_worker = true;
                continue;
            }
            "--fault-actors" => {
                parsed.fault_actors = true;
                continue;
            }
            _ => {}
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value; {USAGE}"))?;
        match flag.as_str() {
            "--etcd" => parsed.etcd = Some(value),
            "--ttl" => {
                let secs: u64 = value.parse().map_err(|e| format!("--ttl {value}: {e}"))?;
                parsed.ttl = Duration::from_secs(secs);
            }
            "--listen" => {
                parsed.listen = Some(
                    value
                        .parse()
                        .map_err(|e| format!("--listen {value}: {e}"))?,
                )
            }
            "--load-ms" => {
                let ms: u64 = value
                    .parse()
                    .map_err(|e| format!("--load-ms {value}: {e}"))?;
                parsed.load_interval = Duration::from_millis(ms);
            }
            "--workers" => {
                parsed.workers = value
                    .parse()
                    .map_err(|e| format!("--workers {value}: {e}"))?;
            }
            "--group" => parsed.group = value,
            "--admin" => {
                parsed.admin = Some(value.parse().map_err(|e| format!("--admin {value}: {e}"))?)
            }
            other => return Err(format!("unknown option {other}; {USAGE}")),
        }
    }
    Ok(parsed)
}

/// Spawns the `--workers` workers and has each join the `--group` group.
async fn spawn_workers(node: &Node, args: &Args) -> Result<(), actormesh::Error> {
    for index in 0..args.workers {
        let worker = node.spawn(Worker::new(args.id.clone(), index));
        node.join_group(&args.group, &worker).await?;
    }
    Ok(())
}

/// Starts the node and prints `READY`; returns the running node.
async fn start(args: &Args) -> Result<Node, actormesh::Error> {
    set_local_node(&args.id);
    let mut builder = Node::builder()
        .cluster(args.cluster.clone())
        .node_id(args.id.clone())
        .spawnable::<Replica>()
        .controller(args.controller);
    if args.controller {
        builder = builder.label(REPLICA_LABEL.0, REPLICA_LABEL.1);
    }
    if let Some(ip) = args.listen {
        builder = builder.listen(SocketAddr::new(ip, 0));
    }
    if let Some(admin) = args.admin {
        builder = builder.admin(admin);
    }
    let Some(endpoint) = &args.etcd else {
        let node = builder.start().await?;
        let counter = node.spawn(Counter::default());
        if let Err(e) = spawn_workers(&node, args).await {
            node.shutdown().await;
            return Err(e);
        }
        println!("READY {}", to_hex(&counter.to_bytes()));
        return Ok(node);
    };
    let discovery =
        EtcdDiscovery::connect(EtcdConfig::new([endpoint.clone()]).lease_ttl(args.ttl)).await?;
    let node = builder
        .discovery(discovery)
        .insecure_links()
        .load_report_interval(args.load_interval)
        .start()
        .await?;
    let counter = node.spawn(Counter::default());
    let observer = node.spawn(Observer::new(node.clone()));
    let registered = async {
        node.register_name(&format!("counter-{}", args.id), &counter)
            .await?;
        node.register_name(&format!("observer-{}", args.id), &observer)
            .await?;
        if args.fault_actors {
            let spinner = node.spawn(Spinner);
            node.register_name(&format!("spinner-{}", args.id), &spinner)
                .await?;
            let ledger = node.spawn(Ledger::default());
            node.register_name(&format!("ledger-{}", args.id), &ledger)
                .await?;
        }
        if args.supervised_worker {
            let supervised = node.spawn_supervised::<Replica>(
                format!("sup-{}", args.id),
                Supervision::new(Restart::OnFailure),
            );
            node.register_name(&format!("sup-{}", args.id), &supervised)
                .await?;
            let neighbour = node.spawn(Replica::new(format!("neighbour-{}", args.id)));
            node.register_name(&format!("neighbour-{}", args.id), &neighbour)
                .await?;
        }
        spawn_workers(&node, args).await
    };
    if let Err(e) = registered.await {
        node.shutdown().await;
        return Err(e);
    }
    println!("READY {}", to_hex(&counter.to_bytes()));
    Ok(node)
}

#[actix::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("cluster-node: {e}");
            std::process::exit(2);
        }
    };
    let node = match start(&args).await {
        Ok(node) => node,
        Err(e) => {
            // Display, not Debug: the message says what went wrong (e.g. "already used").
            eprintln!("cluster-node {}: cannot start: {e}", args.id);
            std::process::exit(1);
        }
    };
    // Serve until the test closes stdin, or a drain request or SIGTERM drains the node.
    let mut sink = Vec::new();
    let mut stdin = tokio::io::stdin();
    tokio::select! {
        _ = stdin.read_to_end(&mut sink) => node.shutdown().await,
        stopped = node.run_until_stopped() => {
            if let Err(e) = stopped {
                eprintln!("cluster-node {}: {e}", args.id);
                node.shutdown().await;
            }
        }
    }
    // The read of stdin runs on a blocking thread that nothing can interrupt: after a drain
    // request the runtime would wait for it forever. The node has drained: exit now.
    std::process::exit(0);
}
