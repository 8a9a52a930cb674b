//! {{project-name}}: a service built on actormesh.
//!
//! `cargo run` starts a node, spawns the service's actor and registers it under a cluster-wide
//! name, logs `ready`, and serves until SIGINT (Ctrl-C), SIGTERM or a drain request on the
//! admin listener. Then it drains (`Node::run_until_stopped`: readiness fails, asks being
//! handled finish, queued messages are flushed, the node leaves discovery) and exits 0.
//!
//! `cargo run -- --self-check` checks the service end to end instead: a second node of the same
//! process looks it up by name and asks it, across the transport, then the program exits.
//!
//! Environment:
//!
//! - `LISTEN`: the address the node listens on (default `127.0.0.1:0`, a port chosen by the
//!   system);
//! - `ACTORMESH_ETCD`: comma-separated etcd endpoints (`http://127.0.0.1:2379`). When set, the
//!   node finds the cluster's other nodes through etcd, which needs the `etcd` feature
//!   (`cargo run --features etcd`; building it needs `protoc`). When unset, the node uses an
//!   embedded `MemoryDiscovery`: a cluster of this process alone;
//! - `ACTORMESH_NODE_ID`: this node's id (default: a random one);
//! - `ACTORMESH_TLS_DIR`: a directory holding `ca.pem`, `{node id}.pem` and `{node id}.key`:
//!   mutual TLS on every link (a node on etcd needs it, see the book's "Securing a cluster");
//!   the files may be replaced while the service runs (new connections use them);
//! - `ACTORMESH_INSECURE_LINKS=1`: plaintext links on etcd, for development only;
//! - `ADMIN`: the address of the node's admin listener (`127.0.0.1:9100`): Prometheus
//!   metrics at `/metrics`, `/healthz`, `/readyz`, a live dashboard at `/`, and `POST /drain`
//!   (which drains the service as SIGTERM does); off when unset;
//! - `RUST_LOG`: the log filter (default `info`).

use std::io::IsTerminal;
use std::net::SocketAddr;

use actix::{Actor, Context, Handler};
use actormesh::prelude::*;
use actormesh::Discovery;
use serde::{Deserialize, Serialize};

/// The cluster the service's nodes belong to.
const CLUSTER: &str = "{{project-name}}";

/// The cluster-wide name the service's actor is registered under.
const SERVICE: &str = "{{project-name}}.service";

/// Asks the service for a greeting.
#[derive(Debug, RemoteMessage, Serialize, Deserialize)]
#[remote(name = "{{crate_name}}.Greet", result = "String")]
pub struct Greet {
    /// Who to greet.
    pub name: String,
}

/// Asks how many greetings the service has answered.
#[derive(Debug, RemoteMessage, Serialize, Deserialize)]
#[remote(name = "{{crate_name}}.Served", result = "u64")]
pub struct Served;

/// The service's actor.
#[derive(Debug, Default)]
pub struct Greeter {
    served: u64,
}

impl Actor for Greeter {
    type Context = Context<Self>;
}

impl Handler<Greet> for Greeter {
    type Result = String;

    fn handle(&mut self, msg: Greet, _: &mut Context<Self>) -> String {
        self.served += 1;
        format!("hello, {}", msg.name)
    }
}

impl Handler<Served> for Greeter {
    type Result = u64;

    fn handle(&mut self, _: Served, _: &mut Context<Self>) -> u64 {
        self.served
    }
}

// The stable names of the actor type and the messages it accepts through references.
actormesh::remote_actor!(Greeter = "{{crate_name}}.Greeter" { Greet, Served });

/// Errors of `main`: actormesh's own, a bad `LISTEN`, a signal handler that cannot be set, a
/// failed self-check.
type BoxError = Box<dyn std::error::Error>;

#[actix::main]
async fn main() -> Result<(), BoxError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal())
        .init();

    let listen: SocketAddr = match std::env::var("LISTEN") {
        Ok(addr) => addr.parse()?,
        Err(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    if std::env::args().skip(1).any(|arg| arg == "--self-check") {
        let reply = self_check(listen).await?;
        println!("self-check passed: {reply}");
        return Ok(());
    }
    serve(listen).await
}

/// Serves until SIGINT, SIGTERM or a drain request on the admin listener, then drains the
/// node (readiness fails, asks being handled finish, the node leaves the cluster).
async fn serve(listen: SocketAddr) -> Result<(), BoxError> {
    let node = match std::env::var("ACTORMESH_ETCD") {
        Ok(endpoints) => start_node(listen, etcd_discovery(&endpoints).await?).await?,
        Err(_) => start_node(listen, MemoryDiscovery::new()).await?,
    };
    let service = node.spawn(Greeter::default());
    node.register_name(SERVICE, &service).await?;
    // The signal handlers are installed here, before saying `ready`: a signal sent as soon as
    // the service is ready finds them in place, not the default action (which kills).
    let stopped = node.run_until_stopped();
    tracing::info!(
        node = %node.id(),
        addr = %node.addr(),
        admin = ?node.admin_addr(),
        "ready: serving {SERVICE} until Ctrl-C or SIGTERM"
    );
    let cause = stopped.await?;
    tracing::info!(?cause, "stopped");
    Ok(())
}

/// Starts a node of the service's cluster on `discovery`, with link TLS from
/// `ACTORMESH_TLS_DIR` if set.
async fn start_node(listen: SocketAddr, discovery: impl Discovery) -> Result<Node, BoxError> {
    let mut builder = Node::builder().cluster(CLUSTER).listen(listen);
    if let Ok(admin) = std::env::var("ADMIN") {
        builder = builder.admin(admin.parse()?);
    }
    let id = std::env::var("ACTORMESH_NODE_ID").ok();
    if let Some(id) = &id {
        builder = builder.node_id(id.as_str());
    }
    if let Ok(dir) = std::env::var("ACTORMESH_TLS_DIR") {
        let id = id.ok_or(
            "ACTORMESH_TLS_DIR needs ACTORMESH_NODE_ID: the node id its certificate names",
        )?;
        let dir = std::path::Path::new(&dir);
        builder = builder.tls(actormesh::LinkTls::from_files(
            dir.join("ca.pem"),
            dir.join(format!("{id}.pem")),
            dir.join(format!("{id}.key")),
        )?);
    } else if std::env::var("ACTORMESH_INSECURE_LINKS").is_ok_and(|v| v == "1") {
        builder = builder.insecure_links();
    }
    Ok(builder.discovery(discovery).start().await?)
}

/// Connects to the etcd at `endpoints` (comma-separated).
#[cfg(feature = "etcd")]
async fn etcd_discovery(endpoints: &str) -> Result<impl Discovery, BoxError> {
    use actormesh::discovery::{EtcdConfig, EtcdDiscovery};

    let endpoints: Vec<&str> = endpoints
        .split(',')
        .map(str::trim)
        .filter(|endpoint| !endpoint.is_empty())
        .collect();
    if endpoints.is_empty() {
        return Err("ACTORMESH_ETCD is set but names no endpoint".into());
    }
    tracing::info!(?endpoints, "discovery: etcd");
    Ok(EtcdDiscovery::connect(EtcdConfig::new(endpoints)).await?)
}

/// Without the `etcd` feature there is no etcd discovery: says how to get it.
#[cfg(not(feature = "etcd"))]
async fn etcd_discovery(_endpoints: &str) -> Result<MemoryDiscovery, BoxError> {
    let hint = "ACTORMESH_ETCD is set, but this build has no etcd discovery: \
                build with `--features etcd` (needs protoc), or unset ACTORMESH_ETCD";
    Err(hint.into())
}

/// Checks the service end to end: starts it on one node, then from a second node of the same
/// process finds it by name, asks it, and returns its reply.
async fn self_check(listen: SocketAddr) -> Result<String, BoxError> {
    // One process, one embedded discovery: every node of the process gets a clone of it.
    let discovery = MemoryDiscovery::new();
    let node = start_node(listen, discovery.clone()).await?;
    let service = node.spawn(Greeter::default());
    node.register_name(SERVICE, &service).await?;
    let client = Node::builder()
        .cluster(CLUSTER)
        .discovery(discovery)
        .start()
        .await?;
    let outcome = ask_service(&client).await;
    client.shutdown().await;
    node.shutdown().await;
    outcome
}

/// Finds the service from `client`, asks it, and checks what it answers.
async fn ask_service(client: &Node) -> Result<String, BoxError> {
    let service = client.lookup::<Greeter>(SERVICE).await?;
    if service.is_local() {
        return Err("the service should be on another node".into());
    }
    let greet = Greet {
        name: "self-check".to_owned(),
    };
    let reply = service.ask(greet).await?;
    if reply != "hello, self-check" {
        return Err(format!("unexpected reply: {reply:?}").into());
    }
    let served = service.ask(Served).await?;
    if served == 0 {
        return Err("the service counted no greeting".into());
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix::test]
    async fn answers_through_a_remote_reference() {
        let reply = self_check(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("self-check");
        assert_eq!(reply, "hello, self-check");
    }
}
