//! `cluster_service`: one node per process, the way a service runs in production (and in the
//! Kubernetes manifests of `deploy/`): a group of greeters kept at `REPLICAS` by the
//! controller, an HTTP gateway in front of it, and the admin listener (metrics, health,
//! status, dashboard). SIGTERM, Ctrl-C or `actormesh drain <node>` drain it: readiness fails
//! at once, the gateway finishes its requests, the node hands its work over and leaves.
//!
//! Configured from the environment (every variable optional):
//!
//! - `ACTORMESH_CLUSTER` (default `shop`), `ACTORMESH_NODE_ID` (default: the host name, which
//!   is the pod name in Kubernetes);
//! - `ACTORMESH_ETCD`: comma-separated etcd endpoints; unset, the node uses an embedded
//!   in-memory discovery (a cluster of this process alone);
//! - `LISTEN` (default `127.0.0.1:7100`) and `ADVERTISE` (the address other nodes dial;
//!   needed when `LISTEN` is `0.0.0.0:…`);
//! - `ADMIN` (default `127.0.0.1:9100`), `GATEWAY` (default `127.0.0.1:8080`);
//! - `REPLICAS` (default 3): the greeters the controller keeps across the cluster;
//! - `DRAIN_TIMEOUT` (seconds, default 20): the whole drain's budget (a quarter for the
//!   gateway's requests in flight, the rest for the node's own drain);
//! - `ACTORMESH_TLS_DIR` (`ca.pem`, `{node id}.pem`, `{node id}.key`) for mutual TLS on
//!   links, or `ACTORMESH_INSECURE_LINKS=1` (development only);
//! - `RUST_LOG` (default `info`).
//!
//! `curl http://127.0.0.1:8080/hello/ada` answers `{"greeting":"hello, ada","node":"…"}`.

use std::net::SocketAddr;
use std::time::Duration;

use actix::{Actor, Context, Handler};
use actormesh::discovery::{EtcdConfig, EtcdDiscovery};
use actormesh::prelude::*;
use actormesh::{GroupSpec, Idempotent, SpawnContext, Spawnable};
use actormesh_gateway::{Gateway, Route};
use serde::{Deserialize, Serialize};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The group of greeters.
const GREETERS: &str = "greeters";

/// Asks a greeter to greet someone.
#[derive(Debug, Clone, Serialize, Deserialize, RemoteMessage)]
#[remote(name = "service.Greet", result = "Greeting")]
struct Greet {
    name: String,
}
impl Idempotent for Greet {}

/// A greeting: the JSON reply of `GET /hello/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Greeting {
    greeting: String,
    node: String,
}

/// A greeter: stateless, any instance answers the same.
struct Greeter {
    node: String,
}

impl Actor for Greeter {
    type Context = Context<Self>;
}

impl Handler<Greet> for Greeter {
    type Result = actix::MessageResult<Greet>;

    fn handle(&mut self, msg: Greet, _: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(Greeting {
            greeting: format!("hello, {}", msg.name),
            node: self.node.clone(),
        })
    }
}

impl Spawnable for Greeter {
    type Args = ();
    fn from_args(_: (), ctx: &mut SpawnContext<'_, Self>) -> Self {
        Greeter {
            node: ctx.node().id().to_string(),
        }
    }
}

actormesh::remote_actor!(Greeter = "service.Greeter" { Greet });

/// An environment variable, or `default`.
fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// An address from the environment, naming the variable when it does not parse.
fn env_addr(name: &str, default: &str) -> Result<SocketAddr, BoxError> {
    let value = env_or(name, default);
    value
        .parse()
        .map_err(|e| format!("{name}={value}: not an address ({e})").into())
}

fn env_number(name: &str, default: u64) -> Result<u64, BoxError> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|e| format!("{name}={v}: not a number ({e})").into()),
        Err(_) => Ok(default),
    }
}

/// The part of the drain budget the gateway gets to finish its requests.
fn gateway_drain(total: Duration) -> Duration {
    total / 4
}

async fn start_node() -> Result<Node, BoxError> {
    let id = match std::env::var("ACTORMESH_NODE_ID") {
        Ok(id) => id,
        Err(_) => std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .ok_or("set ACTORMESH_NODE_ID (no /etc/hostname to default to)")?,
    };
    // The whole drain's budget: a quarter for the gateway's requests, the rest for the node.
    let drain = Duration::from_secs(env_number("DRAIN_TIMEOUT", 20)?);
    let drain = drain - gateway_drain(drain);
    let mut builder = Node::builder()
        .cluster(env_or("ACTORMESH_CLUSTER", "shop"))
        .node_id(id.as_str())
        .listen(env_addr("LISTEN", "127.0.0.1:7100")?)
        .admin(env_addr("ADMIN", "127.0.0.1:9100")?)
        .spawnable::<Greeter>()
        .controller(true)
        .shutdown_timeout(drain);
    if std::env::var("ADVERTISE").is_ok() {
        builder = builder.advertise(env_addr("ADVERTISE", "")?);
    }
    if let Ok(dir) = std::env::var("ACTORMESH_TLS_DIR") {
        let dir = std::path::Path::new(&dir);
        builder = builder.tls(actormesh::LinkTls::from_files(
            dir.join("ca.pem"),
            dir.join(format!("{id}.pem")),
            dir.join(format!("{id}.key")),
        )?);
    } else if std::env::var("ACTORMESH_INSECURE_LINKS").as_deref() == Ok("1") {
        builder = builder.insecure_links();
    }
    if let Ok(endpoints) = std::env::var("ACTORMESH_ETCD") {
        let endpoints: Vec<String> = endpoints.split(',').map(str::to_owned).collect();
        let discovery = EtcdDiscovery::connect(EtcdConfig::new(endpoints)).await?;
        builder = builder.discovery(discovery);
    }
    Ok(builder.start().await?)
}

#[actix::main]
async fn main() -> Result<(), BoxError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();

    let drain_total = Duration::from_secs(env_number("DRAIN_TIMEOUT", 20)?);
    let node = start_node().await?;
    let replicas = u32::try_from(env_number("REPLICAS", 3)?)?;
    // The first node deploys the group; later ones leave the stored spec alone (an operator
    // may have scaled it with `actormesh scale`).
    if let Err(actormesh::Error::UnknownGroup(_)) = node.group_status(GREETERS).await {
        node.deploy(&GroupSpec::new::<Greeter>(GREETERS, &(), replicas)?)
            .await?;
    }
    let gateway = Gateway::builder(node.clone())
        .route(
            Route::get("/hello/{name}")
                .group::<Greeter>(GREETERS)
                .ask_idempotent(|call| {
                    Ok(Greet {
                        name: call.param_str("name")?.to_owned(),
                    })
                })
                .public(),
        )
        .build()?
        .serve(env_addr("GATEWAY", "127.0.0.1:8080")?)
        .await?;
    // Ready once the group can answer: the controller has started a greeter somewhere.
    node.group::<Greeter>(GREETERS)
        .await?
        .wait_for_instances(1, Duration::from_secs(30))
        .await?;
    tracing::info!(
        node = %node.id(),
        gateway = %gateway.local_addr(),
        admin = ?node.admin_addr(),
        "ready: GET /hello/{{name}} on the gateway; dashboard on the admin listener"
    );

    let cause = node
        .run_until_stopped_with(move || async move {
            // The gateway stops taking requests first and finishes those in flight.
            let report = gateway.shutdown(gateway_drain(drain_total)).await;
            tracing::info!(?report, "gateway drained");
        })
        .await?;
    tracing::info!(?cause, "stopped");
    Ok(())
}
