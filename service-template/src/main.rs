//! {{project-name}}: a service built on actormesh.
//!
//! `cargo run` starts a node, spawns the service's actor under a cluster-wide name, checks the
//! service end to end from a second node (a named lookup and a remote ask), and exits.
//! `cargo run -- --serve` then keeps serving until Ctrl-C.
//!
//! Environment: `LISTEN` sets the address the node listens on (default `127.0.0.1:0`, a
//! port chosen by the system); `RUST_LOG` sets the log filter (default `info`).

use std::net::SocketAddr;

use actix::{Actor, Context, Handler, Message};
use actormesh::prelude::*;
use serde::{Deserialize, Serialize};

/// The cluster the service's nodes belong to.
const CLUSTER: &str = "{{project-name}}";

/// The cluster-wide name the service's actor is registered under.
const SERVICE: &str = "{{project-name}}.service";

/// Asks the service for a greeting.
#[derive(Debug, Message, Serialize, Deserialize)]
#[rtype(result = "String")]
pub struct Greet {
    /// Who to greet.
    pub name: String,
}

impl RemoteMessage for Greet {
    const NAME: &'static str = "{{crate_name}}.Greet";
}

/// Asks how many greetings the service has answered.
#[derive(Debug, Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
pub struct Served;

impl RemoteMessage for Served {
    const NAME: &'static str = "{{crate_name}}.Served";
}

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

/// Errors of `main`: actormesh's own, a bad `LISTEN`, a failed self-check.
type BoxError = Box<dyn std::error::Error>;

#[actix::main]
async fn main() -> Result<(), BoxError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();

    let listen: SocketAddr = match std::env::var("LISTEN") {
        Ok(addr) => addr.parse()?,
        Err(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let serve = std::env::args().skip(1).any(|arg| arg == "--serve");

    // One process, one embedded discovery. Hand clones of it to every node of the process.
    let discovery = MemoryDiscovery::new();
    let node = Node::builder()
        .cluster(CLUSTER)
        .listen(listen)
        .discovery(discovery.clone())
        .start()
        .await?;
    let service = node.spawn(Greeter::default());
    node.register_name(SERVICE, &service).await?;
    tracing::info!(node = %node.id(), addr = %node.addr(), "serving {SERVICE}");

    let checked = self_check(&discovery).await;
    match &checked {
        Ok(reply) => println!("self-check passed: {reply}"),
        Err(error) => eprintln!("self-check failed: {error}"),
    }
    if checked.is_ok() && serve {
        tracing::info!("serving until Ctrl-C");
        actix_rt::signal::ctrl_c().await?;
    }
    node.shutdown().await;
    checked.map(|_| ())
}

/// Checks the service end to end from a second node: finds it by name, asks it, and returns
/// its reply.
async fn self_check(discovery: &MemoryDiscovery) -> Result<String, BoxError> {
    let client = Node::builder()
        .cluster(CLUSTER)
        .discovery(discovery.clone())
        .start()
        .await?;
    let outcome = ask_service(&client).await;
    client.shutdown().await;
    outcome
}

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
        let discovery = MemoryDiscovery::new();
        let node = Node::builder()
            .cluster(CLUSTER)
            .discovery(discovery.clone())
            .start()
            .await
            .expect("the node starts");
        let service = node.spawn(Greeter::default());
        node.register_name(SERVICE, &service)
            .await
            .expect("the name is free");
        let reply = self_check(&discovery).await.expect("self-check");
        assert_eq!(reply, "hello, self-check");
        node.shutdown().await;
    }
}
