//! The keyed-entity scenario node:
//! `entity-node CLUSTER NODE_ID --etcd ENDPOINT [--ttl SECS] [--listen IP]`.
//!
//! Joins the cluster through etcd (lease TTL `--ttl`, default 2 s), hosts the
//! [`Tally`] entity type (64 shards, the default stop margin) with its state in the store
//! named by the environment variable `ENTITY_STORE` (`etcd`, the default, or `postgres`,
//! with the connection string in `ENTITY_PG`), spawns a
//! [`Probe`] registered as `entity-probe-{NODE_ID}` (a name survives the node's rejoining
//! after it was declared down; a reference does not), prints
//! `READY <hex reference to the probe>` and serves until its standard
//! input closes or it receives `SIGTERM`; then it shuts down gracefully (handing its shards
//! over) and exits 0. `--listen IP` makes it listen (and be reached) on that address instead
//! of 127.0.0.1.
//!
//! The activations write their activation log to the file named by `ENTITY_LOG` (see
//! `actormesh_cluster_tests::tally`).
//!
//! When the node cannot start, the error is printed to stderr and the process exits with
//! code 1; a bad command line or environment exits 2.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use actormesh::discovery::{EtcdConfig, EtcdDiscovery};
use actormesh::store::{EtcdStateStore, PostgresStateStore};
use actormesh::{EntityConfig, Node, StateStore};
use actormesh_cluster_tests::process::{init_stderr_log, take_sigterm, until_stopped};
use actormesh_cluster_tests::tally::{probe_name, Probe, Tally, PG_ENV, SHARDS, STORE_ENV};
use actormesh_cluster_tests::to_hex;

const USAGE: &str = "usage: entity-node CLUSTER NODE_ID --etcd ENDPOINT [--ttl SECS] [--listen IP]";

/// Where the entities' state lives, from `ENTITY_STORE`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StoreKind {
    /// `etcd`: the etcd store, on the discovery's connection.
    Etcd,
    /// `postgres`: the PostgreSQL store, connected with the string in `ENTITY_PG`.
    Postgres(String),
}

impl FromStr for StoreKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "etcd" => Ok(StoreKind::Etcd),
            "postgres" => std::env::var(PG_ENV)
                .map(StoreKind::Postgres)
                .map_err(|e| format!("{STORE_ENV}=postgres needs {PG_ENV}: {e}")),
            other => Err(format!(
                "{STORE_ENV}={other}: unknown store (known: etcd, postgres)"
            )),
        }
    }
}

impl StoreKind {
    /// The store from the environment (`etcd` when unset).
    fn from_env() -> Result<Self, String> {
        match std::env::var(STORE_ENV) {
            Ok(name) => name.parse(),
            Err(std::env::VarError::NotPresent) => Ok(StoreKind::Etcd),
            Err(e) => Err(format!("{STORE_ENV}: {e}")),
        }
    }

    /// Builds the store for `cluster`.
    async fn open(
        self,
        discovery: &EtcdDiscovery,
        cluster: &str,
    ) -> Result<Arc<dyn StateStore>, actormesh::Error> {
        match self {
            StoreKind::Etcd => Ok(Arc::new(EtcdStateStore::new(discovery, cluster))),
            StoreKind::Postgres(conninfo) => {
                Ok(Arc::new(PostgresStateStore::connect(&conninfo).await?))
            }
        }
    }
}

/// The parsed command line and environment.
#[derive(Debug)]
struct Args {
    cluster: String,
    id: String,
    etcd: String,
    ttl: Duration,
    listen: Option<IpAddr>,
    store: StoreKind,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let (Some(cluster), Some(id)) = (args.next(), args.next()) else {
        return Err(USAGE.to_owned());
    };
    let mut etcd = None;
    let mut ttl = Duration::from_secs(2);
    let mut listen = None;
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
            "--listen" => {
                listen = Some(
                    value
                        .parse()
                        .map_err(|e| format!("--listen {value}: {e}"))?,
                )
            }
            other => return Err(format!("unknown option {other}; {USAGE}")),
        }
    }
    Ok(Args {
        cluster,
        id,
        etcd: etcd.ok_or_else(|| format!("--etcd is required; {USAGE}"))?,
        ttl,
        listen,
        store: StoreKind::from_env()?,
    })
}

/// Starts the node and prints `READY`; returns the running node.
async fn start(args: &Args) -> Result<Node, actormesh::Error> {
    let discovery =
        EtcdDiscovery::connect(EtcdConfig::new([args.etcd.clone()]).lease_ttl(args.ttl)).await?;
    let store = args.store.clone().open(&discovery, &args.cluster).await?;
    let mut builder = Node::builder()
        .cluster(args.cluster.clone())
        .node_id(args.id.clone())
        .discovery(discovery)
        .insecure_links()
        .load_report_interval(Duration::from_millis(500))
        .entity::<Tally>(EntityConfig::default().shards(SHARDS).store(store));
    if let Some(ip) = args.listen {
        builder = builder.listen(SocketAddr::new(ip, 0));
    }
    let node = builder.start().await?;
    let probe = node.spawn(Probe::new(node.clone()));
    if let Err(e) = node.register_name(&probe_name(&args.id), &probe).await {
        node.shutdown().await;
        return Err(e);
    }
    println!("READY {}", to_hex(&probe.to_bytes()));
    Ok(node)
}

#[actix::main]
async fn main() {
    init_stderr_log();
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("entity-node: {e}");
            std::process::exit(2);
        }
    };
    // Before the node starts: a SIGTERM from then on is a graceful stop.
    let mut terminate = take_sigterm("entity-node", &args.id);
    let node = match start(&args).await {
        Ok(node) => node,
        Err(e) => {
            eprintln!("entity-node {}: cannot start: {e}", args.id);
            std::process::exit(1);
        }
    };
    until_stopped(&mut terminate).await;
    node.shutdown().await;
}
