//! The actors of the cluster scenarios, shared by the scenario node binary and the tests, and
//! the helpers the multi-process tests are written with.
//!
//! The scenario binary `cluster-node` is started N times as real OS processes; the tests drive
//! it through the framework's own API from the test process, itself a node. With etcd
//! ([`NodeSpec::etcd`]) the processes and the test node share one real etcd
//! (`actormesh_testkit::Etcd`) and find each other through it. For group scenarios
//! ([`NodeSpec::workers`]) a process also runs [`Worker`]s that join a group, which the tests
//! address as one with a [`GroupRef`] and tell apart by the [`WorkerId`] they answer.
//!
//! Every wait here is a condition with a deadline: [`wait_for_event`] awaits a membership event,
//! [`poll_until`] retries an operation until it succeeds, [`NodeProcess::wait_exit`] awaits an
//! exit; all are bounded in time and in the number of attempts.
//!
//! The keyed-entity scenarios run `entity-node` processes hosting the [`tally::Tally`]
//! entity, which writes an activation log that [`activation_spans`] reads and
//! [`check_no_overlap`] checks for two live activations of one key.

pub mod browser;
pub mod netns;
pub mod process;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use actix::{Actor, Context, Handler, Message, MessageResult, ResponseFuture};
use actormesh::discovery::{EtcdConfig, EtcdDiscovery};
use actormesh::prelude::*;
use actormesh::MembershipEvent;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::broadcast;
use tokio::time::Instant;

pub mod tally;

/// The lease TTL the etcd scenarios use: a dead node is declared down within about this long.
pub const TTL: Duration = Duration::from_secs(2);

/// How long a `cluster-node` process may take to print `READY`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

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

/// Answers the ids of the members in the receiving node's view, sorted.
#[derive(Debug, Message, Serialize, Deserialize)]
#[rtype(result = "Vec<String>")]
pub struct Members;
impl RemoteMessage for Members {
    const NAME: &'static str = "cluster.Members";
}

/// Reports what its node sees of the cluster (so a test can check a process's view).
#[derive(Debug)]
pub struct Observer {
    node: Node,
}

impl Observer {
    /// An observer of `node` (spawn it on that node).
    pub fn new(node: Node) -> Self {
        Observer { node }
    }
}

impl Actor for Observer {
    type Context = Context<Self>;
}

impl Handler<Members> for Observer {
    type Result = Vec<String>;
    fn handle(&mut self, _: Members, _: &mut Context<Self>) -> Vec<String> {
        let mut ids: Vec<String> = self
            .node
            .members()
            .into_iter()
            .map(|m| m.id.as_str().to_owned())
            .collect();
        ids.sort();
        ids
    }
}

actormesh::remote_actor!(Observer = "cluster.Observer" { Members });

/// Which group worker answered: its node's id and its index among that node's workers
/// (`0..K` for `cluster-node --workers K`). Unique across the cluster.
pub type WorkerId = (String, u32);

/// Work for a group [`Worker`]: answers which worker handled it.
///
/// Handling it only reads the worker's identity, so handling it twice is harmless: it is
/// [`Idempotent`], and a [`GroupRef::ask_idempotent`] may retry it on another instance when
/// the first one fails. `key` is the routing key the tests use with
/// [`GroupRef::ask_keyed`] (the worker ignores it).
#[derive(Debug, Clone, Message, Serialize, Deserialize)]
#[rtype(result = "(String, u32)")]
pub struct Work {
    /// The routing key of the work item.
    pub key: u64,
}
impl RemoteMessage for Work {
    const NAME: &'static str = "cluster.Work";
}
impl Idempotent for Work {}

/// Counted by the [`Worker`] that receives it (for [`GroupRef::broadcast`]).
#[derive(Debug, Clone, Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub struct Ping;
impl RemoteMessage for Ping {
    const NAME: &'static str = "cluster.Ping";
}

/// Answers how many [`Ping`]s the worker has received.
#[derive(Debug, Clone, Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
pub struct Pings;
impl RemoteMessage for Pings {
    const NAME: &'static str = "cluster.Pings";
}

/// One instance of the scenario group (`cluster-node --workers K --group NAME` spawns `K` of
/// them and has each join the group): answers [`Work`] with its [`WorkerId`] and counts
/// [`Ping`]s.
#[derive(Debug)]
pub struct Worker {
    node: String,
    index: u32,
    pings: u64,
}

impl Worker {
    /// Worker number `index` of node `node` (spawn it on that node).
    pub fn new(node: impl Into<String>, index: u32) -> Self {
        Worker {
            node: node.into(),
            index,
            pings: 0,
        }
    }
}

impl Actor for Worker {
    type Context = Context<Self>;
}

impl Handler<Work> for Worker {
    // actix has no `MessageResponse` for tuples: `MessageResult` wraps the answer.
    type Result = MessageResult<Work>;
    fn handle(&mut self, _: Work, _: &mut Context<Self>) -> MessageResult<Work> {
        MessageResult((self.node.clone(), self.index))
    }
}

impl Handler<Ping> for Worker {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {
        self.pings += 1;
    }
}

impl Handler<Pings> for Worker {
    type Result = u64;
    fn handle(&mut self, _: Pings, _: &mut Context<Self>) -> u64 {
        self.pings
    }
}

actormesh::remote_actor!(Worker = "cluster.Worker" { Work, Ping, Pings });

/// The group the workers of `cluster-node --workers K` join unless `--group` says otherwise.
pub const DEFAULT_GROUP: &str = "workers";

/// The process's node id as replicas report it (set once by `cluster-node` at start).
static LOCAL_NODE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
/// Numbers the replicas started in this process.
static NEXT_INSTANCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Records the id of the node this process runs (what [`Where`] answers); first call wins.
pub fn set_local_node(id: &str) {
    let _ = LOCAL_NODE.set(id.to_owned());
}

/// Where a [`Replica`] runs: its node's id, the tag it was built with, and its instance
/// number (unique among the replicas started in its process, fresh after a restart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Whereabouts {
    /// The node running the replica.
    pub node: String,
    /// The tag of its spec (its constructor argument).
    pub tag: String,
    /// Its instance number within its process.
    pub instance: u64,
}

/// Answers the replica's [`Whereabouts`]. Reading only: [`Idempotent`].
#[derive(Debug, Clone, Message, Serialize, Deserialize)]
#[rtype(result = "Whereabouts")]
pub struct Where;
impl RemoteMessage for Where {
    const NAME: &'static str = "cluster.Where";
}
impl Idempotent for Where {}

/// Makes the replica's handler panic (the caller gets `Error::HandlerPanicked`).
#[derive(Debug, Clone, Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub struct Crash;
impl RemoteMessage for Crash {
    const NAME: &'static str = "cluster.Crash";
}

/// Adds one to the replica's counter and answers it (its state: 1 after a fresh start).
#[derive(Debug, Clone, Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
pub struct Bump;
impl RemoteMessage for Bump {
    const NAME: &'static str = "cluster.Bump";
}

/// The replica the controller scenarios deploy (`cluster-node` registers it as spawnable),
/// also used as the supervised actor of `--supervised-worker` and its neighbour.
#[derive(Debug)]
pub struct Replica {
    tag: String,
    instance: u64,
    bumps: u64,
}

impl Replica {
    /// A replica built with `tag`.
    pub fn new(tag: impl Into<String>) -> Self {
        Replica {
            tag: tag.into(),
            instance: NEXT_INSTANCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            bumps: 0,
        }
    }
}

impl Actor for Replica {
    type Context = Context<Self>;
}

impl Handler<Where> for Replica {
    type Result = MessageResult<Where>;
    fn handle(&mut self, _: Where, _: &mut Context<Self>) -> MessageResult<Where> {
        MessageResult(Whereabouts {
            node: LOCAL_NODE.get().cloned().unwrap_or_default(),
            tag: self.tag.clone(),
            instance: self.instance,
        })
    }
}

impl Handler<Crash> for Replica {
    type Result = ();
    fn handle(&mut self, _: Crash, _: &mut Context<Self>) {
        panic!("replica {} asked to crash", self.instance);
    }
}

impl Handler<Bump> for Replica {
    type Result = u64;
    fn handle(&mut self, _: Bump, _: &mut Context<Self>) -> u64 {
        self.bumps += 1;
        self.bumps
    }
}

impl Spawnable for Replica {
    type Args = String;
    fn from_args(tag: String, _: &mut actormesh::SpawnContext<'_, Self>) -> Self {
        Replica::new(tag)
    }
}

actormesh::remote_actor!(Replica = "cluster.Replica" { Where, Crash, Bump });

/// Keeps the receiving node's thread busy: the handler spins (a synchronous loop, no sleep,
/// no yield) for `ms` milliseconds, then answers how many it actually spun.
#[derive(Debug, Clone, Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
pub struct Spin {
    /// How long to spin, in milliseconds.
    pub ms: u64,
}
impl RemoteMessage for Spin {
    const NAME: &'static str = "cluster.Spin";
}

/// An actor whose handler monopolises its node's thread on request (`cluster-node --etcd
/// --fault-actors` registers one as `spinner-{NODE_ID}`).
#[derive(Debug, Default)]
pub struct Spinner;

impl Actor for Spinner {
    type Context = Context<Self>;
}

impl Handler<Spin> for Spinner {
    type Result = u64;
    fn handle(&mut self, msg: Spin, _: &mut Context<Self>) -> u64 {
        let started = std::time::Instant::now();
        let until = started + Duration::from_millis(msg.ms);
        // Bounded by the clock: the loop ends `ms` after it started.
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
        u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

actormesh::remote_actor!(Spinner = "cluster.Spinner" { Spin });

/// Applies the operation `id` to the [`Ledger`]: it records the id and answers how many
/// operations it has applied so far (this one included).
#[derive(Debug, Clone, Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
pub struct Apply {
    /// The operation's id, fresh for every ask.
    pub id: u64,
}
impl RemoteMessage for Apply {
    const NAME: &'static str = "cluster.Apply";
}

/// Answers the ids of the operations the [`Ledger`] applied, in the order it applied them
/// (an id applied twice appears twice).
#[derive(Debug, Clone, Message, Serialize, Deserialize)]
#[rtype(result = "Vec<u64>")]
pub struct Applied;
impl RemoteMessage for Applied {
    const NAME: &'static str = "cluster.Applied";
}

/// A counter that remembers which operations it applied, so a test can compare what was
/// executed with what its callers were told (`cluster-node --etcd --fault-actors` registers
/// one as `ledger-{NODE_ID}`).
#[derive(Debug, Default)]
pub struct Ledger {
    applied: Vec<u64>,
}

impl Actor for Ledger {
    type Context = Context<Self>;
}

impl Handler<Apply> for Ledger {
    type Result = u64;
    fn handle(&mut self, msg: Apply, _: &mut Context<Self>) -> u64 {
        self.applied.push(msg.id);
        self.applied.len() as u64
    }
}

impl Handler<Applied> for Ledger {
    type Result = Vec<u64>;
    fn handle(&mut self, _: Applied, _: &mut Context<Self>) -> Vec<u64> {
        self.applied.clone()
    }
}

actormesh::remote_actor!(Ledger = "cluster.Ledger" { Apply, Applied });

/// The label `cluster-node --controller` processes carry, which replica specs select.
pub const REPLICA_LABEL: (&str, &str) = ("role", "replica");

/// How to start one `cluster-node` process: its cluster, id and options.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    binary: String,
    cluster: String,
    id: String,
    etcd: Option<String>,
    ttl: Duration,
    listen: Option<IpAddr>,
    netns: Option<String>,
    workers: u32,
    group: Option<String>,
    controller: bool,
    supervised_worker: bool,
    fault_actors: bool,
    env: Vec<(String, String)>,
    capture_log: bool,
    open_files_limit: Option<u32>,
    admin: bool,
}

impl NodeSpec {
    /// Node `id` of `cluster`, run from `binary` (`env!("CARGO_BIN_EXE_cluster-node")`), with a
    /// private in-memory discovery unless [`NodeSpec::etcd`] is set.
    pub fn new(binary: &str, cluster: &str, id: &str) -> Self {
        NodeSpec {
            binary: binary.to_owned(),
            cluster: cluster.to_owned(),
            id: id.to_owned(),
            etcd: None,
            ttl: TTL,
            listen: None,
            netns: None,
            workers: 0,
            group: None,
            controller: false,
            supervised_worker: false,
            fault_actors: false,
            env: Vec::new(),
            capture_log: false,
            open_files_limit: None,
            admin: false,
        }
    }

    /// Joins through etcd at `endpoint` (with lease TTL [`TTL`] unless [`NodeSpec::ttl`]).
    pub fn etcd(mut self, endpoint: &str) -> Self {
        self.etcd = Some(endpoint.to_owned());
        self
    }

    /// The lease TTL (whole seconds).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Listens on (and is reached at) `ip` instead of 127.0.0.1.
    pub fn listen(mut self, ip: IpAddr) -> Self {
        self.listen = Some(ip);
        self
    }

    /// Runs the process inside the network namespace `name` (`ip netns exec`, needs root).
    pub fn netns(mut self, name: &str) -> Self {
        self.netns = Some(name.to_owned());
        self
    }

    /// Spawns `k` [`Worker`]s in the process, each a member of the group (`--workers K`).
    pub fn workers(mut self, k: u32) -> Self {
        self.workers = k;
        self
    }

    /// The group the workers join (`--group NAME`; default [`DEFAULT_GROUP`]).
    pub fn group(mut self, name: &str) -> Self {
        self.group = Some(name.to_owned());
        self
    }

    /// Makes the process a controller candidate carrying [`REPLICA_LABEL`] (`--controller`).
    pub fn controller(mut self) -> Self {
        self.controller = true;
        self
    }

    /// Runs a supervised [`Replica`] named `sup-{id}` and a plain one named `neighbour-{id}`
    /// (`--supervised-worker`).
    pub fn supervised_worker(mut self) -> Self {
        self.supervised_worker = true;
        self
    }

    /// Runs a [`Spinner`] named `spinner-{id}` and a [`Ledger`] named `ledger-{id}`
    /// (`--fault-actors`, with [`NodeSpec::etcd`]).
    pub fn fault_actors(mut self) -> Self {
        self.fault_actors = true;
        self
    }

    /// Sets the environment variable `key` to `value` in the process (for example `RUST_LOG`,
    /// which the node binaries' log filter reads; without it they log errors only).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Keeps what the process writes to its stderr (its log) in [`NodeProcess::log`] instead
    /// of passing it on to the test's stderr.
    pub fn capture_log(mut self) -> Self {
        self.capture_log = true;
        self
    }

    /// Runs the process with at most `n` open files: the binary is started as
    /// `sh -c 'ulimit -n N && exec BINARY ARGS…'`, so its pid is still the node's. `ulimit -n`
    /// sets the soft and the hard limit both: the node's own raise of its soft limit to the
    /// hard one cannot lift it.
    pub fn open_files_limit(mut self, n: u32) -> Self {
        self.open_files_limit = Some(n);
        self
    }

    /// Runs the node's admin listener on a free loopback port (`--admin 127.0.0.1:0`); its
    /// address is in the node's [`NodeInfo::admin`](actormesh::NodeInfo::admin).
    pub fn admin(mut self) -> Self {
        self.admin = true;
        self
    }

    /// The node id.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn command(&self) -> Command {
        // The program that runs the binary, and the arguments before the node's own: `sh` and
        // `ip netns exec` both exec what they run, so the child's pid is the node's.
        let mut program = self.binary.clone();
        let mut prefix: Vec<String> = Vec::new();
        if let Some(n) = self.open_files_limit {
            // The binary and its arguments reach the script as `$0 "$@"`: no quoting needed.
            prefix = vec![
                "-c".to_owned(),
                format!("ulimit -n {n} && exec \"$0\" \"$@\""),
                program,
            ];
            program = "sh".to_owned();
        }
        if let Some(ns) = &self.netns {
            let mut wrapped = vec!["netns".to_owned(), "exec".to_owned(), ns.clone(), program];
            wrapped.append(&mut prefix);
            prefix = wrapped;
            program = "ip".to_owned();
        }
        let mut command = Command::new(program);
        command.args(prefix).args([&self.cluster, &self.id]);
        if let Some(endpoint) = &self.etcd {
            command
                .args(["--etcd", endpoint])
                .args(["--ttl", &self.ttl.as_secs().to_string()]);
        }
        if let Some(ip) = self.listen {
            command.args(["--listen", &ip.to_string()]);
        }
        if self.workers > 0 {
            command.args(["--workers", &self.workers.to_string()]);
        }
        if let Some(group) = &self.group {
            command.args(["--group", group]);
        }
        if self.controller {
            command.arg("--controller");
        }
        if self.supervised_worker {
            command.arg("--supervised-worker");
        }
        if self.fault_actors {
            command.arg("--fault-actors");
        }
        if self.admin {
            command.args(["--admin", "127.0.0.1:0"]);
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command.stdin(Stdio::piped()).kill_on_drop(true);
        command
    }

    /// Starts the process and waits (up to [`READY_TIMEOUT`]) until it prints `READY`.
    ///
    /// Its stderr goes to the test's (or to [`NodeProcess::log`] with
    /// [`NodeSpec::capture_log`]); its stdin stays open (closing it stops the node).
    pub async fn start(&self) -> Result<NodeProcess, String> {
        let id = &self.id;
        let stderr = if self.capture_log {
            Stdio::piped()
        } else {
            Stdio::inherit()
        };
        let mut child = self
            .command()
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary))?;
        let pid = child.id().ok_or("the process is already gone")?;
        let log = child.stderr.take().map(CapturedLog::collect);
        // Where to look when the start fails.
        let its_log = || match &log {
            Some(log) => format!("; the end of its log: {:?}", log.last(20)),
            None => " (see its stderr above)".to_owned(),
        };
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(READY_TIMEOUT, lines.next_line())
            .await
            .map_err(|_| {
                format!(
                    "{id} did not report ready within {READY_TIMEOUT:?}{}",
                    its_log()
                )
            })?
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{id} exited before it was ready{}", its_log()))?;
        let hex = line
            .strip_prefix("READY ")
            .ok_or_else(|| format!("unexpected first line from {id}: {line}"))?;
        let counter = from_hex(hex).ok_or("malformed reference")?;
        Ok(NodeProcess {
            id: id.clone(),
            pid,
            child,
            counter,
            log,
        })
    }

    /// Runs a process expected to fail at start: waits (up to `timeout`) for it to exit and
    /// returns how it exited and what it wrote to stderr. A process still running at the
    /// deadline is killed and reported as an error.
    pub async fn run_to_exit(&self, timeout: Duration) -> Result<(ExitStatus, String), String> {
        let mut child = self
            .command()
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary))?;
        let mut stderr = child.stderr.take().ok_or("no stderr")?;
        let outcome = tokio::time::timeout(timeout, async {
            let mut text = String::new();
            stderr
                .read_to_string(&mut text)
                .await
                .map_err(|e| e.to_string())?;
            let status = child.wait().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((status, text))
        })
        .await;
        match outcome {
            Ok(result) => result,
            Err(_) => {
                let _ = child.start_kill();
                Err(format!("{} still running after {timeout:?}", self.id))
            }
        }
    }
}

/// A running `cluster-node` process (killed on drop).
#[derive(Debug)]
pub struct NodeProcess {
    /// Its node id.
    pub id: String,
    /// Its process id.
    pub pid: u32,
    /// The OS process.
    pub child: Child,
    /// `ActorRef<Counter>::to_bytes()` of its counter (for `entity-node`: of its
    /// [`tally::Probe`]).
    pub counter: Vec<u8>,
    /// Its stderr, when started with [`NodeSpec::capture_log`].
    pub log: Option<CapturedLog>,
}

impl NodeProcess {
    /// Starts `binary` as node `id` of `cluster` with in-memory discovery and waits (up to
    /// 20 s) for it to be ready.
    pub async fn start(binary: &str, cluster: &str, id: &str) -> Result<NodeProcess, String> {
        NodeSpec::new(binary, cluster, id).start().await
    }

    /// Starts `binary` as node `id` of `cluster` joining through etcd at `endpoint` with a
    /// lease TTL of [`TTL`], and waits for it to be ready.
    pub async fn start_etcd(
        binary: &str,
        endpoint: &str,
        cluster: &str,
        id: &str,
    ) -> Result<NodeProcess, String> {
        NodeSpec::new(binary, cluster, id)
            .etcd(endpoint)
            .start()
            .await
    }

    /// Sends `signal` (a name such as `STOP`, `CONT`, `KILL`) with the `kill` command.
    pub fn signal(&self, signal: &str) -> Result<(), String> {
        send_signal(self.pid, signal)
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .map_err(|_| format!("{} did not exit within {timeout:?}", self.id))?
            .map_err(|e| e.to_string())
    }

    /// Closes its stdin (the node shuts down gracefully) and waits up to `timeout` for it to
    /// exit.
    pub async fn stop(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        drop(self.child.stdin.take());
        self.wait_exit(timeout).await
    }

    /// `SIGKILL`s the process and reaps it.
    pub async fn kill(&mut self) -> Result<ExitStatus, String> {
        self.child.start_kill().map_err(|e| e.to_string())?;
        self.wait_exit(Duration::from_secs(10)).await
    }
}

/// At most this many lines of a captured log are kept (the rest are only counted).
const MAX_CAPTURED_LINES: usize = 100_000;

/// At most this many lines of a captured log are read (a bound on the reading loop; far more
/// than any scenario writes).
const MAX_READ_LINES: u64 = 100_000_000;

/// The lines a process wrote to its stderr (see [`NodeSpec::capture_log`]), read as they come
/// by a task of the test, with ANSI colour codes removed. Clones share the lines.
#[derive(Debug, Clone, Default)]
pub struct CapturedLog(std::sync::Arc<std::sync::Mutex<LogLines>>);

#[derive(Debug, Default)]
struct LogLines {
    kept: Vec<String>,
    total: u64,
}

impl CapturedLog {
    /// Starts reading `stderr` into a new log (a task of the current tokio runtime).
    fn collect(stderr: tokio::process::ChildStderr) -> Self {
        let log = CapturedLog::default();
        let sink = log.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            for _ in 0..MAX_READ_LINES {
                line.clear();
                // Bytes, not `lines()`: a line that is not UTF-8 must not stop the reading
                // (the process would block once the pipe is full).
                match reader.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => sink.push(strip_ansi(&String::from_utf8_lossy(&line))),
                }
            }
        });
        log
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogLines> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, line: String) {
        let mut lines = self.lock();
        lines.total += 1;
        if lines.kept.len() < MAX_CAPTURED_LINES {
            lines.kept.push(line.trim_end().to_owned());
        }
    }

    /// The lines read so far (at most the first 100 000).
    pub fn lines(&self) -> Vec<String> {
        self.lock().kept.clone()
    }

    /// The last `n` lines kept so far.
    pub fn last(&self, n: usize) -> Vec<String> {
        let lines = self.lock();
        lines.kept[lines.kept.len().saturating_sub(n)..].to_vec()
    }

    /// How many lines were read so far, kept or not.
    pub fn total(&self) -> u64 {
        self.lock().total
    }
}

/// `text` without ANSI escape sequences (`ESC [ … letter`), as a terminal would show it.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            // Parameters and intermediates, then one final byte in '@'..='~'.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// The value of the field `name` (`name=value`, as `tracing`'s default format writes it) in a
/// log line, if the line has it.
pub fn log_field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let pattern = format!("{name}=");
    let mut rest = line;
    // Bounded by the line's length: each step moves past one occurrence.
    for _ in 0..line.len() {
        let at = rest.find(&pattern)?;
        let before = rest[..at].chars().next_back();
        let value = &rest[at + pattern.len()..];
        if before.is_none_or(char::is_whitespace) {
            return Some(value.split_whitespace().next().unwrap_or(""));
        }
        rest = value;
    }
    None
}

/// Sends `signal` (`STOP`, `CONT`…) to process `pid` with the `kill` command.
pub fn send_signal(pid: u32, signal: &str) -> Result<(), String> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .map_err(|e| format!("cannot run kill: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -{signal} {pid} failed: {status}"))
    }
}

/// An [`EtcdDiscovery`] on `endpoint` with lease TTL `ttl`.
pub async fn etcd_discovery(endpoint: &str, ttl: Duration) -> Result<EtcdDiscovery, Error> {
    EtcdDiscovery::connect(EtcdConfig::new([endpoint.to_owned()]).lease_ttl(ttl)).await
}

/// Starts the test's own node: `id` of `cluster` on etcd at `endpoint`, lease TTL [`TTL`].
///
/// Must run inside the actix system of the test (`#[actix::test]`).
pub async fn etcd_test_node(endpoint: &str, cluster: &str, id: &str) -> Result<Node, Error> {
    Node::builder()
        .cluster(cluster)
        .node_id(id)
        .discovery(etcd_discovery(endpoint, TTL).await?)
        .insecure_links()
        .load_report_interval(Duration::from_millis(500))
        .start()
        .await
}

/// The entries (key, value) under `prefix` in etcd at `endpoint`, read with a client of its
/// own, within 5 s.
pub async fn etcd_entries(endpoint: &str, prefix: &str) -> Result<Vec<(String, String)>, String> {
    let read = async {
        let mut client = etcd_client::Client::connect([endpoint], None)
            .await
            .map_err(|e| format!("cannot connect to etcd at {endpoint}: {e}"))?;
        let response = client
            .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
            .await
            .map_err(|e| format!("etcd get {prefix}: {e}"))?;
        Ok(response
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                )
            })
            .collect())
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| format!("etcd get {prefix} took more than 5 s"))?
}

/// The lease `key` is bound to in etcd at `endpoint` (`None` if the key is absent; 0 when it
/// has no lease), read with a client of its own, within 5 s.
pub async fn etcd_lease_of(endpoint: &str, key: &str) -> Result<Option<i64>, String> {
    let read = async {
        let mut client = etcd_client::Client::connect([endpoint], None)
            .await
            .map_err(|e| format!("cannot connect to etcd at {endpoint}: {e}"))?;
        let response = client
            .get(key, None)
            .await
            .map_err(|e| format!("etcd get {key}: {e}"))?;
        Ok(response.kvs().first().map(|kv| kv.lease()))
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| format!("etcd get {key} took more than 5 s"))?
}

/// The keys under `prefix` in etcd at `endpoint` (see [`etcd_entries`]).
pub async fn etcd_keys(endpoint: &str, prefix: &str) -> Result<Vec<String>, String> {
    Ok(etcd_entries(endpoint, prefix)
        .await?
        .into_iter()
        .map(|(key, _)| key)
        .collect())
}

/// What a node saw while waiting: the events before the awaited one.
#[derive(Debug, Clone, Default)]
pub struct Seen(pub Vec<MembershipEvent>);

impl Seen {
    /// Whether any event seen is about `node`.
    pub fn mentions(&self, node: &str) -> bool {
        self.0.iter().any(|e| e.node().as_str() == node)
    }
}

/// Receives membership events until one satisfies `wanted`, for at most `timeout` (and at
/// most 10 000 events). Returns it and the events received before it.
///
/// Fails if the deadline passes, the node shuts down, or events were lost (the receiver lagged:
/// no claim about what was seen can be made then).
pub async fn wait_for_event(
    events: &mut broadcast::Receiver<MembershipEvent>,
    timeout: Duration,
    mut wanted: impl FnMut(&MembershipEvent) -> bool,
) -> Result<(MembershipEvent, Seen), String> {
    let deadline = Instant::now() + timeout;
    let mut seen = Seen::default();
    for _ in 0..10_000 {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => {
                return Err(format!(
                    "no such event within {timeout:?}; saw {:?}",
                    seen.0
                ))
            }
            Ok(Err(broadcast::error::RecvError::Closed)) => {
                return Err("the node shut down".to_owned())
            }
            Ok(Err(broadcast::error::RecvError::Lagged(n))) => {
                return Err(format!("{n} membership events were lost"))
            }
            Ok(Ok(event)) if wanted(&event) => return Ok((event, seen)),
            Ok(Ok(event)) => seen.0.push(event),
        }
    }
    Err(format!(
        "no such event among 10 000; saw {:?}",
        seen.0.last()
    ))
}

/// Runs `attempt` every `interval` until it succeeds, for at most `timeout` (each attempt is
/// cut off at the deadline too). The error names `what` and the last failure.
pub async fn poll_until<T, E, F, Fut>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut attempt: F,
) -> Result<T, String>
where
    E: fmt::Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let deadline = started + timeout;
    let max_attempts = timeout.as_millis() / interval.as_millis().max(1) + 1;
    let mut last = String::from("no attempt finished");
    for _ in 0..max_attempts {
        match tokio::time::timeout_at(deadline, attempt()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => last = format!("{e:?}"),
            Err(_) => break,
        }
        if Instant::now() + interval >= deadline {
            break;
        }
        // The pause between two attempts: the state of other processes can only be looked at.
        tokio::time::sleep(interval).await;
    }
    Err(format!(
        "{what}: not done after {:?}; last failure: {last}",
        started.elapsed()
    ))
}

/// The member ids `node`'s process sees, asked from `me` through the name `observer-{node}`.
pub async fn members_seen_by(me: &Node, node: &str) -> Result<Vec<String>, Error> {
    let observer = me.lookup::<Observer>(&format!("observer-{node}")).await?;
    observer.ask_timeout(Members, Duration::from_secs(2)).await
}

/// One activation of an entity key in one process, as its activation log tells it (see
/// [`tally`]): from its `start` line to its last line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationSpan {
    /// The process whose log it is in (a label chosen by the reader, e.g. `p1#2`).
    pub process: String,
    /// The node id in its lines.
    pub node: String,
    /// The entity key.
    pub key: String,
    /// When it started (µs on the wall clock).
    pub start: u64,
    /// Its last `handle` line, if it handled anything.
    pub last_handle: Option<u64>,
    /// Its `stop` line, if it stopped (a killed process logs none).
    pub stop: Option<u64>,
}

impl ActivationSpan {
    /// Where its interval ends: its last `handle` line or its `stop` line, whichever is later
    /// (only the last `handle` line when `with_stop` is false); its start if it has neither.
    pub fn end(&self, with_stop: bool) -> u64 {
        let stop = if with_stop { self.stop } else { None };
        [Some(self.start), self.last_handle, stop]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(self.start)
    }
}

/// One parsed line of an activation log: `<µs> <node> <key> <event> [detail…]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Wall-clock µs.
    pub at: u64,
    /// The node id.
    pub node: String,
    /// The entity key.
    pub key: String,
    /// `start`, `handle`, `fenced-save` or `stop`.
    pub event: String,
    /// The rest of the line (may be empty).
    pub detail: String,
}

/// Parses one line of an activation log.
pub fn parse_log_line(line: &str) -> Result<LogLine, String> {
    let mut parts = line.splitn(5, ' ');
    let (Some(at), Some(node), Some(key), Some(event)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("malformed activation log line: {line:?}"));
    };
    let at = at
        .parse()
        .map_err(|e| format!("malformed time in {line:?}: {e}"))?;
    Ok(LogLine {
        at,
        node: node.to_owned(),
        key: key.to_owned(),
        event: event.to_owned(),
        detail: parts.next().unwrap_or("").trim_end().to_owned(),
    })
}

/// The activations in the activation log `text` of process `process`, in the log's order.
/// A `handle`, `fenced-save` or `stop` line of a key with no activation in the log fails; so
/// does a `start` of a key whose previous activation in the same process logged no `stop`
/// (two activations of one key in one process at once).
pub fn activation_spans(process: &str, text: &str) -> Result<Vec<ActivationSpan>, String> {
    let mut spans: Vec<ActivationSpan> = Vec::new();
    // The index of each key's latest activation in `spans`.
    let mut latest: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let line = parse_log_line(line).map_err(|e| format!("{process} line {}: {e}", n + 1))?;
        let open = latest.get(&line.key).copied();
        match line.event.as_str() {
            "start" => {
                if let Some(i) = open {
                    if spans[i].stop.is_none() {
                        return Err(format!(
                            "{process} line {}: {} started again at {} while its activation started at {} had not stopped",
                            n + 1,
                            line.key,
                            line.at,
                            spans[i].start
                        ));
                    }
                }
                latest.insert(line.key.clone(), spans.len());
                spans.push(ActivationSpan {
                    process: process.to_owned(),
                    node: line.node,
                    key: line.key,
                    start: line.at,
                    last_handle: None,
                    stop: None,
                });
            }
            event @ ("handle" | "stop" | "fenced-save") => {
                let Some(i) = open.filter(|i| spans[*i].stop.is_none()) else {
                    return Err(format!(
                        "{process} line {}: `{event}` of {} outside any activation",
                        n + 1,
                        line.key
                    ));
                };
                match event {
                    "handle" => spans[i].last_handle = Some(line.at),
                    "stop" => spans[i].stop = Some(line.at),
                    _ => {}
                }
            }
            other => return Err(format!("{process} line {}: unknown event {other:?}", n + 1)),
        }
    }
    Ok(spans)
}

/// Checks that no two activations of one key were live at once, across every process: for
/// each key, every activation's interval (its start to its [end](ActivationSpan::end)) ends
/// before the next one starts. `with_stop(span)` says whether a span's `stop` line ends its
/// interval (true for activations that stopped in order: drained, passivated) or only its
/// last `handle` line does (an activation fenced by a lost lease, whose stop is logged
/// whenever its process hears of the loss, after it stopped handling).
///
/// Returns how many activations were checked, or the first overlap found per key (at most
/// ten, in words).
pub fn check_no_overlap(
    spans: &[ActivationSpan],
    with_stop: impl Fn(&ActivationSpan) -> bool,
) -> Result<usize, String> {
    let mut by_key: std::collections::BTreeMap<&str, Vec<&ActivationSpan>> =
        std::collections::BTreeMap::new();
    for span in spans {
        by_key.entry(&span.key).or_default().push(span);
    }
    let mut overlaps = Vec::new();
    for (key, mut list) in by_key {
        list.sort_by_key(|s| (s.start, s.end(true)));
        // The activation that reaches furthest so far.
        let mut furthest: Option<(&ActivationSpan, u64)> = None;
        for span in list {
            if let Some((before, end)) = furthest {
                // Two lines of one process can share a microsecond; two processes' cannot
                // both be first.
                let overlap = if before.process == span.process {
                    span.start < end
                } else {
                    span.start <= end
                };
                if overlap {
                    overlaps.push(format!(
                        "{key}: the activation on {} ({}) from {} to {} overlaps the one on {} ({}) from {} ({} µs of overlap)",
                        before.process,
                        before.node,
                        before.start,
                        end,
                        span.process,
                        span.node,
                        span.start,
                        end - span.start
                    ));
                    break;
                }
            }
            let end = span.end(with_stop(span));
            if furthest.is_none_or(|(_, e)| end > e) {
                furthest = Some((span, end));
            }
        }
    }
    if overlaps.is_empty() {
        Ok(spans.len())
    } else {
        let n = overlaps.len();
        overlaps.truncate(10);
        Err(format!(
            "{n} keys had two live activations at once: {}",
            overlaps.join("; ")
        ))
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

    #[test]
    fn log_lines_lose_their_colours_and_give_their_fields() {
        let line = "\u{1b}[33m WARN\u{1b}[0m \u{1b}[2mactormesh\u{1b}[0m: dropped a malformed envelope \u{1b}[3msuppressed\u{1b}[0m\u{1b}[2m=\u{1b}[0m42 \u{1b}[3mnode\u{1b}[0m\u{1b}[2m=\u{1b}[0mp1";
        let plain = strip_ansi(line);
        assert_eq!(
            plain,
            " WARN actormesh: dropped a malformed envelope suppressed=42 node=p1"
        );
        assert_eq!(log_field(&plain, "suppressed"), Some("42"));
        assert_eq!(log_field(&plain, "node"), Some("p1"));
        assert_eq!(log_field("unsuppressed=1", "suppressed"), None);
        assert_eq!(
            log_field("x unsuppressed=1 suppressed=2", "suppressed"),
            Some("2")
        );
    }

    fn spans(logs: &[(&str, &str)]) -> Vec<ActivationSpan> {
        logs.iter()
            .flat_map(|(process, text)| activation_spans(process, text).unwrap())
            .collect()
    }

    #[test]
    fn a_clean_handoff_passes_the_overlap_check() {
        let logs = [
            (
                "p1",
                "100 p1 k1 start token 1 count 0\n110 p1 k1 handle inc 1\n120 p1 k1 stop\n\
                 105 p1 k2 start token 1 count 0\n",
            ),
            (
                "p2",
                "130 p2 k1 start token 2 count 1\n140 p2 k1 handle get\n\
                 150 p2 k2 start token 3 count 0\n",
            ),
        ];
        assert_eq!(check_no_overlap(&spans(&logs), |_| true), Ok(4));
    }

    #[test]
    fn two_live_activations_of_a_key_fail_the_overlap_check() {
        // p1 handles k1 after p2 activated it.
        let logs = [
            (
                "p1",
                "100 p1 k1 start token 1 count 0\n135 p1 k1 handle inc 7\n",
            ),
            ("p2", "130 p2 k1 start token 2 count 0\n"),
        ];
        let err = check_no_overlap(&spans(&logs), |_| true).unwrap_err();
        assert!(err.contains("k1") && err.contains("5 µs"), "{err}");
        // The same with the late line a stop: an overlap only if stops count.
        let logs = [
            (
                "p1",
                "100 p1 k1 start\n110 p1 k1 handle get\n135 p1 k1 stop\n",
            ),
            ("p2", "130 p2 k1 start\n"),
        ];
        assert!(check_no_overlap(&spans(&logs), |_| true).is_err());
        assert_eq!(
            check_no_overlap(&spans(&logs), |s| s.process != "p1"),
            Ok(2)
        );
        // A fenced save after the new start is no handling.
        let logs = [
            (
                "p1",
                "100 p1 k1 start\n110 p1 k1 handle inc 3\n140 p1 k1 fenced-save 3\n",
            ),
            ("p2", "130 p2 k1 start\n"),
        ];
        assert_eq!(check_no_overlap(&spans(&logs), |_| true), Ok(2));
        // A long activation overlapping one that is not its direct successor.
        let logs = [
            ("p1", "100 p1 k1 start\n300 p1 k1 handle get\n"),
            ("p2", "110 p2 k1 start\n120 p2 k1 stop\n"),
            ("p3", "200 p3 k1 start\n"),
        ];
        let err = check_no_overlap(&spans(&logs), |_| true).unwrap_err();
        assert!(err.contains("1 keys"), "{err}");
    }

    #[test]
    fn the_activation_log_reader_refuses_what_cannot_be() {
        let twice = "100 p1 k1 start\n110 p1 k1 start\n";
        assert!(activation_spans("p1", twice)
            .unwrap_err()
            .contains("had not stopped"));
        assert!(activation_spans("p1", "100 p1 k1 handle get\n")
            .unwrap_err()
            .contains("outside any activation"));
        assert!(activation_spans("p1", "x p1 k1 start\n").is_err());
        assert!(activation_spans("p1", "100 p1 k1\n").is_err());
        let again =
            activation_spans("p1", "100 p1 k1 start\n110 p1 k1 stop\n120 p1 k1 start\n").unwrap();
        assert_eq!(again.len(), 2);
        assert_eq!(again[1].end(true), 120);
    }
}
