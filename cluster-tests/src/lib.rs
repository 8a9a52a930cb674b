//! The actors of the cluster scenarios, shared by the scenario node binary and the tests.
//!
//! The scenario binary `cluster-node` is started N times as real OS processes; the tests drive
//! it through the framework's own API from the test process, itself a node.

use std::process::Stdio;
use std::time::Duration;

use actix::{Actor, Context, Handler, Message, ResponseFuture};
use actormesh::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Adds to the counter; answers the new total.
#[derive(Debug, Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
pub struct Add(pub u64);
impl RemoteMessage for Add {
    const NAME: &'static str = "cluster.Add";
}

/// Answers which process handled it.
#[derive(Debug, Message, Serialize, Deserialize)]
#[rtype(result = "u32")]
pub struct WhoAreYou;
impl RemoteMessage for WhoAreYou {
    const NAME: &'static str = "cluster.WhoAreYou";
}

/// Asks `counter` to add `amount` from the receiving process (a reference crossing processes).
#[derive(Debug, Message, Serialize, Deserialize)]
#[rtype(result = "Result<u64, String>")]
pub struct Relay {
    /// Where to send the `Add`.
    pub counter: ActorRef<Counter>,
    /// How much to add.
    pub amount: u64,
}
impl RemoteMessage for Relay {
    const NAME: &'static str = "cluster.Relay";
}

/// A counter that also relays.
#[derive(Debug, Default)]
pub struct Counter {
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

impl Handler<WhoAreYou> for Counter {
    type Result = u32;
    fn handle(&mut self, _: WhoAreYou, _: &mut Context<Self>) -> u32 {
        std::process::id()
    }
}

impl Handler<Relay> for Counter {
    type Result = ResponseFuture<Result<u64, String>>;
    fn handle(&mut self, msg: Relay, _: &mut Context<Self>) -> Self::Result {
        Box::pin(async move {
            msg.counter
                .ask(Add(msg.amount))
                .await
                .map_err(|e| e.to_string())
        })
    }
}

actormesh::remote_actor!(Counter = "cluster.Counter" { Add, WhoAreYou, Relay });

/// Encodes bytes as lowercase hex (for passing references on a command line or pipe).
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes lowercase hex; `None` on malformed input.
pub fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A `cluster-node` process: its child handle and the reference to its counter (as bytes).
#[derive(Debug)]
pub struct NodeProcess {
    /// The OS process (killed on drop).
    pub child: Child,
    /// `ActorRef<Counter>::to_bytes()` of its counter.
    pub counter: Vec<u8>,
}

impl NodeProcess {
    /// Starts `binary` as node `id` of `cluster` and waits (up to 20 s) for it to be ready.
    pub async fn start(binary: &str, cluster: &str, id: &str) -> Result<NodeProcess, String> {
        let mut child = Command::new(binary)
            .args([cluster, id])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {binary}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .map_err(|_| format!("{id} did not report ready within 20 s"))?
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{id} exited before it was ready"))?;
        let hex = line
            .strip_prefix("READY ")
            .ok_or_else(|| format!("unexpected first line from {id}: {line}"))?;
        let counter = from_hex(hex).ok_or("malformed reference")?;
        Ok(NodeProcess { child, counter })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects_garbage() {
        assert_eq!(
            from_hex(&to_hex(&[0, 1, 254, 255])),
            Some(vec![0, 1, 254, 255])
        );
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }
}
