//! The singleton scenario node: `singleton-node CLUSTER NODE_ID ETCD_ENDPOINT LOG_FILE`.
//!
//! A controller candidate that can run the `Beacon` singleton. A running beacon appends
//! `pid incarnation unix_ms` to LOG_FILE every 20 ms: the test reads that log, not the
//! framework's word, to check that two beacons never ran at the same time. The node serves
//! until its standard input closes.

use std::io::Write;
use std::time::Duration;

use actix::{Actor, AsyncContext, Context, Handler, Message};
use actormesh::discovery::{EtcdConfig, EtcdDiscovery};
use actormesh::{Node, RemoteMessage, Spawnable};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

/// Answers the beacon's process id.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "u32")]
struct Pid;
impl RemoteMessage for Pid {
    const NAME: &'static str = "singleton.Pid";
}

/// The singleton: logs a heartbeat every 20 ms while it lives.
struct Beacon {
    log: String,
    incarnation: u64,
}

impl Actor for Beacon {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.beat();
        ctx.run_interval(Duration::from_millis(20), |beacon, _| beacon.beat());
    }
}

impl Beacon {
    fn beat(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let line = format!("{} {} {now}\n", std::process::id(), self.incarnation);
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.log)
        {
            let _ = file.write_all(line.as_bytes());
        }
    }
}

impl Handler<Pid> for Beacon {
    type Result = u32;
    fn handle(&mut self, _: Pid, _: &mut Context<Self>) -> u32 {
        std::process::id()
    }
}

impl Spawnable for Beacon {
    type Args = String;
    fn from_args(log: String, _: &mut actormesh::SpawnContext<'_, Self>) -> Self {
        Beacon {
            log,
            incarnation: rand_incarnation(),
        }
    }
}

fn rand_incarnation() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::process::id())
}

actormesh::remote_actor!(Beacon = "singleton.Beacon" { Pid });

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [cluster, id, etcd, _log] = args.as_slice() else {
        return Err("usage: singleton-node CLUSTER NODE_ID ETCD_ENDPOINT LOG_FILE".into());
    };
    let discovery =
        EtcdDiscovery::connect(EtcdConfig::new([etcd.as_str()]).lease_ttl(Duration::from_secs(2)))
            .await?;
    let node = Node::builder()
        .cluster(cluster.as_str())
        .node_id(id.as_str())
        .discovery(discovery)
        .insecure_links()
        .spawnable::<Beacon>()
        .controller(true)
        .start()
        .await?;
    println!("READY");
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    node.shutdown().await;
    Ok(())
}
