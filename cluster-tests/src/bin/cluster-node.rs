//! The scenario node: `cluster-node CLUSTER NODE_ID`.
//!
//! Starts a node, spawns a `Counter`, prints `READY <hex reference>` and serves until its
//! standard input closes, then shuts down gracefully and exits 0.

use actormesh::Node;
use actormesh_cluster_tests::{to_hex, Counter};
use tokio::io::AsyncReadExt;

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let (Some(cluster), Some(id)) = (args.next(), args.next()) else {
        return Err("usage: cluster-node CLUSTER NODE_ID".into());
    };
    let node = Node::builder().cluster(cluster).node_id(id).start().await?;
    let counter = node.spawn(Counter::default());
    println!("READY {}", to_hex(&counter.to_bytes()));
    // Serve until the test closes stdin.
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    node.shutdown().await;
    Ok(())
}
