//! Keyed entities on real node processes and a real etcd, under faults: an owner SIGKILLed,
//! frozen past its lease, cut off by a network partition; a rolling restart; tells during a
//! graceful handoff.
//!
//! Three `entity-node` processes host the `Tally` entity (64 shards, state in the etcd
//! store, lease TTL 2 s); the test process is a client node of the same cluster that hosts
//! nothing. The entities write an activation log themselves (one file per process, see
//! `actormesh_cluster_tests::tally`); the checks read those logs and the answers the client
//! got, not the framework's word:
//!
//! - single activation: no two activations of a key were live at once across processes
//!   (`check_no_overlap`);
//! - no acknowledged increment lost: each increment is saved before it is acknowledged, so
//!   per key the acknowledged values only grow, the final value is at least the last one
//!   acknowledged, and it is at most the acknowledged increments plus those whose outcome
//!   the client could not know (see [`check_increments`]);
//! - recovery: the time from the fault until each entity of the faulty node answers again.
//!
//! Each test starts its own etcd and processes; the tests run one at a time (they measure
//! recovery times). Every wait is a condition with a deadline; the load is bounded in time
//! and count and targets loopback (and, for the partition, a network namespace the test
//! makes itself).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actormesh::discovery::{EtcdConfig, EtcdDiscovery};
use actormesh::{EntityRef, Error, MembershipEvent, Node, NodeId};
use actormesh_cluster_tests::netns::{self, NetnsPlan};
use actormesh_cluster_tests::tally::{
    probe_name, wall_us, Get, Hosting, HostingNow, Increment, Note, Probe, Refused, Tally, Where,
    LOG_ENV, PG_ENV, SHARDS, STORE_ENV,
};
use actormesh_cluster_tests::{
    activation_spans, check_no_overlap, etcd_entries, parse_log_line, poll_until, wait_for_event,
    ActivationSpan, LogLine, NodeProcess, NodeSpec, TTL,
};
use actormesh_testkit::{Etcd, Postgres};
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_entity-node");

/// How many keys the load drives.
const KEYS: usize = 50;
/// Pause between two looks at a polled condition.
const POLL: Duration = Duration::from_millis(50);
/// The timeout of one ask of the load under faults: short, so that an ask stuck on a dead
/// or frozen node gives way to one routed to the new owner soon after the takeover.
const FAULT_ATTEMPT: Duration = Duration::from_secs(1);
/// The pause before an attempt that failed is retried.
const RETRY_PAUSE: Duration = Duration::from_millis(25);
/// The pause between two increments of one key (the load's pace: at most 20 per second and
/// key).
const PACE: Duration = Duration::from_millis(50);
/// At most this many increments per key in a test.
const MAX_OPS_PER_KEY: u64 = 2_000;
/// At most this many attempts per increment.
const MAX_ATTEMPTS: u32 = 1_000;
/// How long an increment may take under a fault (its node must be declared down first).
const FAULT_OP_DEADLINE: Duration = Duration::from_secs(15);
/// How long an increment may take during a graceful handoff, its first ask included: the
/// node's ask timeout.
const GRACEFUL_OP_DEADLINE: Duration = Duration::from_secs(5);
/// Increments acknowledged per key before a fault is injected.
const WARM_UP: usize = 10;
/// How long the shards may take to settle on their assignees.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the entities of a failed node may take to answer again (checked as a bound;
/// the target, TTL + 1 s, is printed).
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a graceful stop may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// One scenario at a time: recovery times are measured.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Request ids of the load and tell ids, unique in the test process.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("k{i:02}")).collect()
}

/// One `entity-node` process of a scenario.
#[derive(Debug)]
struct Proc {
    id: String,
    /// `id#incarnation`: tells a restarted node's processes apart in the logs.
    label: String,
    process: NodeProcess,
}

/// A scenario: its etcd, its processes, the client node, the activation logs.
struct Scenario {
    cluster: &'static str,
    _etcd: Etcd,
    endpoint: String,
    dir: PathBuf,
    client: Node,
    procs: Vec<Proc>,
    /// Every process's activation log (label, path), exited ones included.
    logs: Vec<(String, PathBuf)>,
    incarnations: HashMap<String, u32>,
    /// The store the processes use: `etcd`, or `postgres` on this server.
    postgres: Option<Postgres>,
}

impl Scenario {
    /// Starts etcd and the client node (listening on `client_ip`, loopback by default).
    async fn new(cluster: &'static str, etcd: Etcd, client_ip: Option<IpAddr>) -> Scenario {
        let endpoint = etcd.endpoint();
        let dir = std::env::temp_dir().join(format!(
            "actormesh-entities-{cluster}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        println!("[{cluster}] activation logs in {}", dir.display());
        let discovery = EtcdDiscovery::connect(EtcdConfig::new([endpoint.clone()]).lease_ttl(TTL))
            .await
            .expect("the client connects to etcd");
        let mut builder = Node::builder()
            .cluster(cluster)
            .node_id("client")
            .discovery(discovery)
            .insecure_links();
        if let Some(ip) = client_ip {
            builder = builder.listen(SocketAddr::new(ip, 0));
        }
        let client = builder.start().await.expect("the client node starts");
        Scenario {
            cluster,
            _etcd: etcd,
            endpoint,
            dir,
            client,
            procs: Vec::new(),
            logs: Vec::new(),
            incarnations: HashMap::new(),
            postgres: None,
        }
    }

    /// Keeps the entities' state in a PostgreSQL server of this scenario instead of etcd.
    fn with_postgres(mut self) -> Scenario {
        let pg = Postgres::start().expect("the PostgreSQL entity test needs a real PostgreSQL");
        println!(
            "[{}] state in PostgreSQL at {}",
            self.cluster,
            pg.conninfo()
        );
        self.postgres = Some(pg);
        self
    }

    /// The spec of node `id` on this scenario's etcd (before its log is set).
    fn spec(&self, id: &str) -> NodeSpec {
        NodeSpec::new(BIN, self.cluster, id).etcd(&self.endpoint)
    }

    /// Starts a process from `spec` with a fresh activation log and waits until it is ready.
    async fn spawn(&mut self, spec: NodeSpec) {
        let id = spec.id().to_owned();
        let n = self.incarnations.entry(id.clone()).or_insert(0);
        *n += 1;
        let label = format!("{id}#{n}");
        let log = self.dir.join(format!("{id}-{n}.log"));
        let spec = spec.env(LOG_ENV, &log.display().to_string());
        let spec = match &self.postgres {
            None => spec.env(STORE_ENV, "etcd"),
            Some(pg) => spec.env(STORE_ENV, "postgres").env(PG_ENV, &pg.conninfo()),
        };
        let process = spec
            .start()
            .await
            .unwrap_or_else(|e| panic!("{label} starts: {e}"));
        self.logs.push((label.clone(), log));
        self.procs.push(Proc { id, label, process });
    }

    /// Starts `ids` on loopback.
    async fn start_nodes(&mut self, ids: &[&str]) {
        for id in ids {
            let spec = self.spec(id);
            self.spawn(spec).await;
        }
    }

    fn proc(&self, id: &str) -> &Proc {
        self.procs
            .iter()
            .find(|p| p.id == id)
            .unwrap_or_else(|| panic!("no process {id}"))
    }

    /// Takes process `id` out of the scenario (to kill or stop it).
    fn take(&mut self, id: &str) -> Proc {
        let i = self
            .procs
            .iter()
            .position(|p| p.id == id)
            .unwrap_or_else(|| panic!("no process {id}"));
        self.procs.remove(i)
    }

    /// Waits until nodes `ids` hold every shard between them, each exactly its assignment
    /// and that a balanced one (the allocator moves shards between live hosts a few at a
    /// time), none in motion; returns what each holds.
    async fn settled(&self, ids: &[&str]) -> Vec<(String, Hosting)> {
        let probes: Vec<String> = ids.iter().map(|id| (*id).to_owned()).collect();
        let client = &self.client;
        poll_until(
            &format!("[{}] shards settled on {ids:?}", self.cluster),
            SETTLE_TIMEOUT,
            POLL,
            || {
                let probes = &probes;
                async move {
                    let mut all = Vec::new();
                    for id in probes {
                        // By name: a node declared down and back has a new incarnation,
                        // which references from before do not reach.
                        let probe = client
                            .lookup::<Probe>(&probe_name(id))
                            .await
                            .map_err(|e| format!("{id}: {e}"))?;
                        let hosting = probe
                            .ask_timeout(HostingNow, Duration::from_secs(1))
                            .await
                            .map_err(|e| format!("{id}: {e}"))?
                            .ok_or_else(|| format!("{id} has no status of the type"))?;
                        all.push((id.clone(), hosting));
                    }
                    let hosted: usize = all.iter().map(|(_, h)| h.hosted).sum();
                    let share = SHARDS as usize / probes.len();
                    let each = all.iter().all(|(_, h)| {
                        h.shards == SHARDS
                            && h.in_motion == 0
                            && (share..=share + 1).contains(&h.assigned)
                            && h.hosted == h.assigned
                    });
                    if each && hosted == SHARDS as usize {
                        Ok(all)
                    } else {
                        Err(format!("{all:?}"))
                    }
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The controller leader's record in etcd (the leader runs the shard allocator).
    async fn leader(&self) -> String {
        let key = format!("/actormesh/{}/leader", self.cluster);
        match etcd_entries(&self.endpoint, &key).await {
            Ok(entries) => entries
                .into_iter()
                .map(|(_, v)| v)
                .next()
                .unwrap_or_else(|| "none".into()),
            Err(e) => format!("unknown ({e})"),
        }
    }

    /// Notes when the client sees `node` declared down (within `RECOVERY_TIMEOUT`).
    fn watch_down(&self, node: &str) -> tokio::task::JoinHandle<Option<Instant>> {
        let mut events = self.client.subscribe();
        let id = NodeId::new(node);
        actix_rt::spawn(async move {
            wait_for_event(
                &mut events,
                RECOVERY_TIMEOUT,
                |e| matches!(e, MembershipEvent::Down(n) if *n == id),
            )
            .await
            .ok()
            .map(|_| Instant::now())
        })
    }

    /// Where each key is activated now (activating it).
    async fn locate(&self, keys: &[String]) -> BTreeMap<String, String> {
        let mut placed = BTreeMap::new();
        for key in keys {
            let tally = self.client.entity::<Tally>(key);
            let node = poll_until(
                &format!("{key} answers Where"),
                Duration::from_secs(10),
                POLL,
                || tally.ask_timeout(Where, Duration::from_secs(2)),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
            placed.insert(key.clone(), node);
        }
        placed
    }

    /// The final value of each key.
    async fn finals(&self, keys: &[String]) -> Vec<u64> {
        let mut values = Vec::new();
        for key in keys {
            let tally = self.client.entity::<Tally>(key);
            let value = poll_until(
                &format!("{key} answers Get"),
                Duration::from_secs(10),
                POLL,
                || tally.ask_timeout(Get, Duration::from_secs(2)),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
            values.push(value);
        }
        values
    }

    /// Stops the client node, then every process still in the scenario gracefully (each
    /// must exit 0), and reads every activation log.
    async fn finish(mut self) -> Logs {
        self.client.shutdown().await;
        for mut p in std::mem::take(&mut self.procs) {
            let status = p
                .process
                .stop(STOP_TIMEOUT)
                .await
                .unwrap_or_else(|e| panic!("{} stops: {e}", p.label));
            assert!(status.success(), "{} exited with {status}", p.label);
        }
        Logs::read(&self.logs, self.dir.clone())
    }
}

/// The activation logs of a scenario, read after its processes exited.
struct Logs {
    spans: Vec<ActivationSpan>,
    /// Every line, with the label of its process.
    lines: Vec<(String, LogLine)>,
    /// Where the files are (kept for a look when a check fails).
    dir: PathBuf,
}

impl Logs {
    fn read(files: &[(String, PathBuf)], dir: PathBuf) -> Logs {
        let mut spans = Vec::new();
        let mut lines = Vec::new();
        for (label, path) in files {
            let text = std::fs::read_to_string(path)
                .unwrap_or_else(|e| panic!("{label}'s activation log {}: {e}", path.display()));
            spans.extend(activation_spans(label, &text).unwrap_or_else(|e| panic!("{e}")));
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                lines.push((label.clone(), parse_log_line(line).unwrap()));
            }
        }
        Logs { spans, lines, dir }
    }

    /// Removes the files once every check passed.
    fn remove(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Checks that no key had two live activations; `fenced` is a process whose activations
    /// started before `since` (µs) end at their last `handle` line: they were fenced by the
    /// loss of its lease, and their `stop` lines come whenever the process hears of it.
    fn check_single_activation(&self, scenario: &str, fenced: Option<(&str, u64)>) {
        let relaxed = |s: &ActivationSpan| {
            fenced.is_some_and(|(label, since)| s.process == label && s.start < since)
        };
        let checked = check_no_overlap(&self.spans, |s| !relaxed(s))
            .unwrap_or_else(|e| panic!("[{scenario}] {e}"));
        println!(
            "[{scenario}] single activation: {checked} activations in {} log lines, no overlap",
            self.lines.len()
        );
    }

    /// The lines of process `label` at or after `since` (µs), by event.
    fn events_of(&self, label: &str, since: u64) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for (process, line) in &self.lines {
            if process == label && line.at >= since {
                *counts.entry(line.event.clone()).or_insert(0) += 1;
            }
        }
        counts
    }
}

/// One acknowledged increment.
#[derive(Debug, Clone, Copy)]
struct Ack {
    started: Instant,
    done: Instant,
    value: u64,
}

/// What the load saw of one key.
#[derive(Debug, Default, Clone)]
struct KeyStats {
    acks: Vec<Ack>,
    /// Attempts whose outcome the client cannot know (the increment may have been applied).
    ambiguous: u64,
    /// Attempts certainly not applied (refused unhandled, or the save was refused).
    not_applied: u64,
    /// Increments that were not acknowledged within their deadline.
    failed_ops: u64,
    /// Failed attempts by kind of error.
    errors: BTreeMap<String, u64>,
    /// Acknowledged values that did not grow (a lost write).
    regressions: Vec<String>,
    /// Handler refusals because the save was stale.
    stale: u64,
    /// When the first failed attempts ended, and their kind of error.
    error_times: Vec<(Instant, String)>,
}

/// At most this many failed attempts per key are kept with their time.
const ERROR_TIMES_KEPT: usize = 50;

impl KeyStats {
    fn failed(&mut self, at: Instant, kind: String) {
        if self.error_times.len() < ERROR_TIMES_KEPT {
            self.error_times.push((at, kind.clone()));
        }
        *self.errors.entry(kind).or_insert(0) += 1;
    }
}

/// What one attempt's outcome means for the count.
enum Outcome {
    Acked(u64),
    NotApplied(String),
    Ambiguous(String),
}

/// The variant name of an error.
fn error_kind(e: &Error) -> String {
    let debug = format!("{e:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("?")
        .to_owned()
}

fn classify(result: Result<Result<u64, Refused>, Error>) -> Outcome {
    match result {
        Ok(Ok(value)) => Outcome::Acked(value),
        // The store refused the save: not applied.
        Ok(Err(Refused::Stale(_))) => Outcome::NotApplied("Refused::Stale".into()),
        // The save may have reached the store.
        Ok(Err(Refused::Store(_))) => Outcome::Ambiguous("Refused::Store".into()),
        // Refused unhandled, by contract.
        Err(
            e @ (Error::EntityUnavailable { .. }
            | Error::EntityBufferFull { .. }
            | Error::NodeFenced { .. }
            | Error::ActorNotFound { .. }),
        ) => Outcome::NotApplied(error_kind(&e)),
        // Timeout, NodeUnreachable, NodeDown, ActorStopped...: maybe handled.
        Err(e) => Outcome::Ambiguous(error_kind(&e)),
    }
}

/// Whether the load may retry after an error of kind `kind` (what `ask_idempotent` retries,
/// and a failed save).
fn retryable(kind: &str) -> bool {
    matches!(
        kind,
        "Timeout"
            | "NodeUnreachable"
            | "NodeFenced"
            | "MailboxFull"
            | "Discovery"
            | "EntityUnavailable"
            | "EntityBufferFull"
            | "Store"
            | "NodeDown"
            | "ActorNotFound"
            | "ActorStopped"
            | "Refused::Store"
    )
}

/// Increments on every key, one at a time per key, each retried until acknowledged or its
/// deadline passes, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    stats: Arc<Vec<Mutex<KeyStats>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
    attempt: Duration,
}

impl Load {
    /// Starts the load: each ask times out after `attempt`, each increment after
    /// `op_deadline`.
    fn start(client: &Node, keys: &[String], attempt: Duration, op_deadline: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let stats: Arc<Vec<Mutex<KeyStats>>> =
            Arc::new(keys.iter().map(|_| Mutex::default()).collect());
        let tasks = keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let tally = client.entity::<Tally>(key);
                actix_rt::spawn(drive(
                    tally,
                    stats.clone(),
                    i,
                    stop.clone(),
                    (attempt, op_deadline),
                ))
            })
            .collect();
        Load {
            stop,
            stats,
            tasks,
            started: Instant::now(),
            attempt,
        }
    }

    fn snapshot(&self) -> Vec<KeyStats> {
        self.stats
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect()
    }

    /// Waits until every key has `n` acknowledged increments started at or after `since`.
    async fn wait_acks_since(&self, what: &str, since: Instant, n: usize, timeout: Duration) {
        poll_until(what, timeout, POLL, || async {
            let behind: Vec<usize> = self
                .snapshot()
                .iter()
                .enumerate()
                .filter(|(_, s)| s.acks.iter().filter(|a| a.started >= since).count() < n)
                .map(|(i, _)| i)
                .collect();
            if behind.is_empty() {
                Ok(())
            } else {
                Err(format!("keys {behind:?} behind"))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Stops the load and returns what it saw.
    async fn stop(self) -> (Vec<KeyStats>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let ran = self.started.elapsed();
        for task in self.tasks {
            tokio::time::timeout(self.attempt + Duration::from_secs(2), task)
                .await
                .expect("a load task ends within its attempt")
                .expect("a load task panicked");
        }
        let stats = self
            .stats
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect();
        (stats, ran)
    }
}

/// The load of one key.
async fn drive(
    tally: EntityRef<Tally>,
    stats: Arc<Vec<Mutex<KeyStats>>>,
    i: usize,
    stop: Arc<AtomicBool>,
    (attempt, op_deadline): (Duration, Duration),
) {
    let mut last = 0;
    for _ in 0..MAX_OPS_PER_KEY {
        let op = Instant::now();
        let mut acked = false;
        for _ in 0..MAX_ATTEMPTS {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let left = op_deadline.saturating_sub(op.elapsed());
            if left.is_zero() {
                break;
            }
            let started = Instant::now();
            let result = tally
                .ask_timeout(Increment(next_id()), attempt.min(left))
                .await;
            let done = Instant::now();
            {
                let mut s = stats[i].lock().unwrap_or_else(|p| p.into_inner());
                match classify(result) {
                    Outcome::Acked(value) => {
                        if value <= last {
                            s.regressions
                                .push(format!("acknowledged {value} after {last}"));
                        }
                        last = value;
                        s.acks.push(Ack {
                            started,
                            done,
                            value,
                        });
                        acked = true;
                    }
                    Outcome::NotApplied(kind) => {
                        s.not_applied += 1;
                        if kind == "Refused::Stale" {
                            s.stale += 1;
                        }
                        s.failed(done, kind);
                    }
                    Outcome::Ambiguous(kind) => {
                        s.ambiguous += 1;
                        s.failed(done, kind);
                    }
                }
            }
            if acked {
                break;
            }
            // The load's retry pace (bounded attempts per key), not a wait for a state.
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        if !acked && !stop.load(Ordering::Relaxed) {
            stats[i]
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .failed_ops += 1;
        }
        // The load's pace: at most 20 increments per second and key.
        tokio::time::sleep(PACE).await;
    }
}

/// Totals of the load, for the printed figures.
#[derive(Debug, Default)]
struct Totals {
    acked: u64,
    ambiguous: u64,
    not_applied: u64,
    failed_ops: u64,
    stale: u64,
    /// Increments applied beyond the acknowledged ones (from ambiguous attempts).
    surplus: u64,
    /// The latencies of the acknowledged asks, sorted.
    latencies: Vec<Duration>,
    errors: BTreeMap<String, u64>,
}

/// Checks (b), no acknowledged increment lost, and returns the totals.
///
/// The state is saved before an increment is acknowledged, so every acknowledged increment
/// is in the store, and the acknowledged values of a key only grow. The final value counts
/// every increment *applied*: the acknowledged ones, plus those of attempts whose outcome
/// the client could not know (a timeout, a node that died or was declared down while it
/// held the ask: applied or not) and that it then retried under a new request. Attempts
/// refused unhandled (by contract) or whose save was refused (stale) were not applied. So,
/// per key: `acked <= final <= acked + ambiguous`, and `final >= last acknowledged value`;
/// with no ambiguous attempt, `final == acked`.
/// What a fault scenario measured once its load stopped: per-key outcomes, final counts and
/// the failed node's keys' recovery times.
struct Ended {
    stats: Vec<KeyStats>,
    ran: Duration,
    finals: Vec<u64>,
    times: Vec<(Duration, String)>,
}

impl Ended {
    /// Stops `load` and reads the final counts (before the scenario's processes stop).
    async fn collect(
        sc: &Scenario,
        load: Load,
        keys: &[String],
        victim_keys: &[String],
        fault: Instant,
        at: Instant,
    ) -> Ended {
        let (stats, ran) = load.stop().await;
        let finals = sc.finals(keys).await;
        let times = recoveries(keys, &stats, victim_keys, fault, at);
        Ended {
            stats,
            ran,
            finals,
            times,
        }
    }

    /// Prints the recovery from `what` and checks every acknowledged increment.
    async fn report(
        &self,
        name: &str,
        what: &str,
        keys: &[String],
        fault: Instant,
        down: tokio::task::JoinHandle<Option<Instant>>,
    ) -> Totals {
        let declared = down.await.ok().flatten().map(|at| at - fault);
        print_recovery(name, what, &self.times, declared);
        let totals = check_increments(name, keys, &self.stats, &self.finals);
        print_totals(name, &totals, self.ran);
        totals
    }
}

fn check_increments(scenario: &str, keys: &[String], stats: &[KeyStats], finals: &[u64]) -> Totals {
    let mut totals = Totals::default();
    let mut problems = Vec::new();
    for ((key, s), &value) in keys.iter().zip(stats).zip(finals) {
        let acked = s.acks.len() as u64;
        let last = s.acks.last().map_or(0, |a| a.value);
        if !s.regressions.is_empty() {
            problems.push(format!("{key}: {:?}", s.regressions));
        }
        if value < last || value < acked {
            problems.push(format!(
                "{key}: final {value} < acknowledged ({acked} increments, last value {last}): an acknowledged increment was lost"
            ));
        }
        if value > acked + s.ambiguous {
            problems.push(format!(
                "{key}: final {value} > {acked} acknowledged + {} of unknown outcome: an increment reported not handled was applied",
                s.ambiguous
            ));
        }
        totals.acked += acked;
        totals.ambiguous += s.ambiguous;
        totals.not_applied += s.not_applied;
        totals.failed_ops += s.failed_ops;
        totals.stale += s.stale;
        totals.surplus += value.saturating_sub(acked);
        totals
            .latencies
            .extend(s.acks.iter().map(|a| a.done - a.started));
        for (kind, n) in &s.errors {
            *totals.errors.entry(kind.clone()).or_insert(0) += n;
        }
    }
    assert!(problems.is_empty(), "[{scenario}] {problems:#?}");
    totals.latencies.sort();
    totals
}

fn print_totals(scenario: &str, totals: &Totals, ran: Duration) {
    let latency = |q: f64| {
        let n = totals.latencies.len();
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n.max(1));
        totals.latencies.get(rank - 1).copied().unwrap_or_default()
    };
    println!(
        "[{scenario}] latency of the acknowledged asks: p50 {:.1?}, p99 {:.1?}, max {:.1?}",
        latency(0.5),
        latency(0.99),
        latency(1.0)
    );
    println!(
        "[{scenario}] load: {} increments acknowledged in {ran:.1?} ({:.0}/s); {} attempts of unknown outcome, {} not applied ({} stale saves), {} increments failed; final values exceed the acknowledged ones by {} in all; errors by kind: {:?}",
        totals.acked,
        totals.acked as f64 / ran.as_secs_f64().max(0.001),
        totals.ambiguous,
        totals.not_applied,
        totals.stale,
        totals.failed_ops,
        totals.surplus,
        totals.errors
    );
}

/// The failed attempts of the load, in time order: when each ended (from `origin`), its
/// key and its kind of error (at most `n`).
fn error_timeline(keys: &[String], stats: &[KeyStats], origin: Instant, n: usize) -> Vec<String> {
    let mut all: Vec<(Duration, &str, &str)> = keys
        .iter()
        .zip(stats)
        .flat_map(|(key, s)| {
            s.error_times
                .iter()
                .map(move |(at, kind)| (*at - origin, key.as_str(), kind.as_str()))
        })
        .collect();
    all.sort();
    all.into_iter()
        .take(n)
        .map(|(at, key, kind)| format!("{at:.2?} {key} {kind}"))
        .collect()
}

/// The time from `fault` until each of `victim_keys` answered an increment started at or
/// after `since`, sorted.
fn recoveries(
    keys: &[String],
    stats: &[KeyStats],
    victim_keys: &[String],
    fault: Instant,
    since: Instant,
) -> Vec<(Duration, String)> {
    let mut times: Vec<(Duration, String)> = keys
        .iter()
        .zip(stats)
        .filter(|(k, _)| victim_keys.contains(k))
        .map(|(k, s)| {
            let ack = s
                .acks
                .iter()
                .find(|a| a.started >= since)
                .unwrap_or_else(|| panic!("{k} never answered after the fault"));
            (ack.done - fault, k.clone())
        })
        .collect();
    times.sort();
    times
}

/// The `q` quantile (nearest rank) of sorted `times`.
fn quantile(times: &[(Duration, String)], q: f64) -> Duration {
    let rank = ((q * times.len() as f64).ceil() as usize).clamp(1, times.len());
    times[rank - 1].0
}

fn print_recovery(
    scenario: &str,
    fault: &str,
    times: &[(Duration, String)],
    declared_down: Option<Duration>,
) {
    let p99 = quantile(times, 0.99);
    let target = TTL + Duration::from_secs(1);
    println!(
        "[{scenario}] recovery after {fault} (the client saw it down after {declared_down:?}) of {} entities: p50 {:?}, p99 {p99:?}, max {:?} (target p99 <= TTL + 1 s = {target:?}: {})",
        times.len(),
        quantile(times, 0.5),
        times.last().map(|t| t.0).unwrap_or_default(),
        if p99 <= target { "met" } else { "MISSED" }
    );
    assert!(
        p99 <= RECOVERY_TIMEOUT,
        "[{scenario}] recovery p99 {p99:?}: {times:?}"
    );
}

/// The node hosting the most keys, and its keys.
fn busiest(placed: &BTreeMap<String, String>) -> (String, Vec<String>) {
    let mut by_node: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (key, node) in placed {
        by_node.entry(node).or_default().push(key.clone());
    }
    let (node, keys) = by_node
        .into_iter()
        .max_by_key(|(_, keys)| keys.len())
        .expect("keys are placed");
    (node.to_owned(), keys)
}

fn placement_counts(placed: &BTreeMap<String, String>) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for node in placed.values() {
        *counts.entry(node.as_str()).or_insert(0) += 1;
    }
    counts
}

/// The handle lines of activations of `label` started before `before` (µs) that come at or
/// after the start of an activation of the same key in another process started at or after
/// `before`: the stale process handled a key that another had taken over.
fn handled_after_takeover(logs: &Logs, label: &str, before: u64) -> Vec<String> {
    let mut takeover: HashMap<&str, u64> = HashMap::new();
    for span in &logs.spans {
        if span.process != label && span.start >= before {
            let at = takeover.entry(span.key.as_str()).or_insert(span.start);
            *at = (*at).min(span.start);
        }
    }
    let mut late = Vec::new();
    let mut open: HashMap<&str, bool> = HashMap::new();
    for (process, line) in &logs.lines {
        if process != label {
            continue;
        }
        if line.event == "start" {
            // Whether this activation of the key started before the fault.
            open.insert(line.key.as_str(), line.at < before);
            continue;
        }
        let old = open.get(line.key.as_str()).copied().unwrap_or(false);
        if old && line.event == "handle" {
            if let Some(&at) = takeover.get(line.key.as_str()) {
                if line.at >= at {
                    late.push(format!(
                        "{} handled {} ({}) at {}, after another process activated it at {at}",
                        label, line.key, line.detail, line.at
                    ));
                }
            }
        }
    }
    late
}

fn start_etcd() -> Etcd {
    Etcd::start().expect("the entity cluster tests need a real etcd")
}

#[actix::test]
async fn an_owner_killed_under_load_loses_no_acknowledged_increment() {
    let _serial = SERIAL.lock().await;
    let sc = Scenario::new("kill", start_etcd(), None).await;
    killed_owner(sc).await;
}

#[actix::test]
async fn an_owner_killed_under_load_loses_no_increment_acknowledged_in_postgresql() {
    let _serial = SERIAL.lock().await;
    let sc = Scenario::new("kill-pg", start_etcd(), None)
        .await
        .with_postgres();
    killed_owner(sc).await;
}

/// SIGKILL of the busiest owner under load; checks recovery, acknowledged increments and
/// single activation.
async fn killed_owner(mut sc: Scenario) {
    let name = sc.cluster;
    sc.start_nodes(&["p1", "p2", "p3"]).await;
    let hosting = sc.settled(&["p1", "p2", "p3"]).await;
    println!("[{name}] settled: {hosting:?}");
    let keys = keys();
    let placed = sc.locate(&keys).await;
    let (victim, victim_keys) = busiest(&placed);
    println!(
        "[{name}] keys per node: {:?}; killing {victim}",
        placement_counts(&placed)
    );
    let load = Load::start(&sc.client, &keys, FAULT_ATTEMPT, FAULT_OP_DEADLINE);
    load.wait_acks_since("warm-up", load.started, WARM_UP, Duration::from_secs(20))
        .await;

    println!("[{name}] leader: {}", sc.leader().await);
    let down = sc.watch_down(&victim);
    let mut p = sc.take(&victim);
    let fault = Instant::now();
    p.process.kill().await.expect("SIGKILL");
    let dead = Instant::now();
    load.wait_acks_since(
        "every key answers after the kill",
        dead,
        1,
        RECOVERY_TIMEOUT,
    )
    .await;
    let survivors: Vec<&str> = ["p1", "p2", "p3"]
        .into_iter()
        .filter(|id| *id != victim)
        .collect();
    sc.settled(&survivors).await;
    // A little more load on the new owners.
    load.wait_acks_since(
        "load after the failover",
        Instant::now(),
        3,
        Duration::from_secs(20),
    )
    .await;
    let ended = Ended::collect(&sc, load, &keys, &victim_keys, fault, dead).await;
    let logs = sc.finish().await;
    let what = format!("SIGKILL of {victim}");
    let totals = ended.report(name, &what, &keys, fault, down).await;
    // The killed process logs nothing after its death: every activation ends at its last
    // line, stops included.
    logs.check_single_activation(name, None);
    assert_eq!(
        totals.failed_ops, 0,
        "[{name}] every increment was acknowledged in time"
    );
    logs.remove();
}

/// Rounds of tells to the frozen node's entities during the freeze (one per key each).
const FROZEN_TELL_ROUNDS: usize = 5;

#[actix::test]
async fn an_owner_frozen_past_its_lease_handles_nothing_after_the_takeover() {
    let _serial = SERIAL.lock().await;
    let name = "freeze";
    let mut sc = Scenario::new(name, start_etcd(), None).await;
    sc.start_nodes(&["p1", "p2", "p3"]).await;
    sc.settled(&["p1", "p2", "p3"]).await;
    let keys = keys();
    let placed = sc.locate(&keys).await;
    let (victim, victim_keys) = busiest(&placed);
    println!(
        "[{name}] keys per node: {:?}; freezing {victim}",
        placement_counts(&placed)
    );
    let load = Load::start(&sc.client, &keys, FAULT_ATTEMPT, FAULT_OP_DEADLINE);
    load.wait_acks_since("warm-up", load.started, WARM_UP, Duration::from_secs(20))
        .await;

    println!("[{name}] leader: {}", sc.leader().await);
    let down = sc.watch_down(&victim);
    let label = sc.proc(&victim).label.clone();
    let frozen_wall = wall_us();
    let fault = Instant::now();
    sc.proc(&victim).process.signal("STOP").unwrap();
    let frozen = Instant::now();
    // Tells to the frozen node's entities: they wait in its socket buffers (the client
    // still routes to it), and must not be handled by its stale activations when it
    // resumes (at most once: they may be dropped).
    let mut frozen_tells = Vec::new();
    for _ in 0..FROZEN_TELL_ROUNDS {
        for key in &victim_keys {
            let id = next_id();
            if sc.client.entity::<Tally>(key).tell(Note(id)).is_ok() {
                frozen_tells.push(id);
            }
        }
    }
    load.wait_acks_since(
        "every key answers during the freeze",
        frozen,
        1,
        RECOVERY_TIMEOUT,
    )
    .await;
    // The freeze itself: past the lease (TTL) and then some, whatever the recovery took.
    tokio::time::sleep_until(fault + TTL + Duration::from_secs(1)).await;
    let cont_wall = wall_us();
    sc.proc(&victim).process.signal("CONT").unwrap();
    let resumed = Instant::now();
    println!(
        "[{name}] {victim} frozen for {:?}",
        resumed.duration_since(fault)
    );
    // It rejoins under a new lease and is given shards again.
    let hosting = sc.settled(&["p1", "p2", "p3"]).await;
    println!(
        "[{name}] {victim} hosts shards again {:?} after SIGCONT: {hosting:?}",
        resumed.elapsed()
    );
    load.wait_acks_since(
        "load after the rejoin",
        Instant::now(),
        3,
        Duration::from_secs(20),
    )
    .await;
    let ended = Ended::collect(&sc, load, &keys, &victim_keys, fault, frozen).await;
    let logs = sc.finish().await;
    let what = format!("SIGSTOP of {victim}");
    let totals = ended.report(name, &what, &keys, fault, down).await;
    println!(
        "[{name}] lines {label} logged after SIGCONT: {:?}",
        logs.events_of(&label, cont_wall)
    );
    let mut tells_by: BTreeMap<&str, usize> = BTreeMap::new();
    for (process, line) in &logs.lines {
        let tell = line
            .detail
            .strip_prefix("note ")
            .and_then(|id| id.parse().ok());
        if tell.is_some_and(|id| frozen_tells.contains(&id)) {
            *tells_by.entry(process.as_str()).or_insert(0) += 1;
        }
    }
    println!(
        "[{name}] {} tells sent to {victim}'s entities during the freeze; handled by: {tells_by:?} (the rest dropped)",
        frozen_tells.len()
    );
    let late = handled_after_takeover(&logs, &label, frozen_wall);
    assert!(
        late.is_empty(),
        "[{name}] the frozen process handled keys another process had taken over: {late:#?}"
    );
    logs.check_single_activation(name, Some((&label, frozen_wall)));
    assert_eq!(
        totals.failed_ops, 0,
        "[{name}] every increment was acknowledged in time"
    );
    logs.remove();
}

// ---- network partition (needs root and `ip netns`, like etcd_cluster.rs's) ----

/// The namespaces of this file's partition test.
const NETNS: NetnsPlan = NetnsPlan {
    prefix: "actormesh-ent-",
    tag: "ae",
    subnet: 214,
};

#[actix::test]
async fn an_owner_cut_off_by_a_partition_is_replaced_without_overlap() {
    let _serial = SERIAL.lock().await;
    let name = "partition";
    let Some(partition) = netns::partition_or_skip(NETNS) else {
        return;
    };
    let etcd = start_etcd();
    let proxy =
        netns::forward_to_etcd(SocketAddr::from((partition.host_ip, 0)), etcd.client_port())
            .await
            .unwrap();
    let ns_endpoint = format!("http://{proxy}");
    // Everyone on the host listens on the host end of the veth (reachable from the
    // namespace); p3 runs in the namespace and reaches etcd through the forwarder.
    let host_ip = IpAddr::V4(partition.host_ip);
    let mut sc = Scenario::new(name, etcd, Some(host_ip)).await;
    for id in ["p1", "p2"] {
        let spec = sc.spec(id).listen(host_ip);
        sc.spawn(spec).await;
    }
    let spec = NodeSpec::new(BIN, name, "p3")
        .etcd(&ns_endpoint)
        .listen(IpAddr::V4(partition.ns_ip))
        .netns(partition.name());
    sc.spawn(spec).await;
    sc.settled(&["p1", "p2", "p3"]).await;
    let keys = keys();
    let placed = sc.locate(&keys).await;
    let victim = "p3";
    let victim_keys: Vec<String> = placed
        .iter()
        .filter(|(_, n)| *n == victim)
        .map(|(k, _)| k.clone())
        .collect();
    println!(
        "[{name}] keys per node: {:?}; cutting {victim} off",
        placement_counts(&placed)
    );
    assert!(!victim_keys.is_empty(), "p3 hosts some of the keys");
    let load = Load::start(&sc.client, &keys, FAULT_ATTEMPT, FAULT_OP_DEADLINE);
    load.wait_acks_since("warm-up", load.started, WARM_UP, Duration::from_secs(20))
        .await;

    println!("[{name}] leader: {}", sc.leader().await);
    let down = sc.watch_down(victim);
    let label = sc.proc(victim).label.clone();
    let cut_wall = wall_us();
    let fault = Instant::now();
    partition.cut().unwrap();
    let cut = Instant::now();
    load.wait_acks_since("every key answers after the cut", cut, 1, RECOVERY_TIMEOUT)
        .await;
    sc.settled(&["p1", "p2"]).await;
    load.wait_acks_since(
        "load after the takeover",
        Instant::now(),
        3,
        Duration::from_secs(20),
    )
    .await;
    let ended = Ended::collect(&sc, load, &keys, &victim_keys, fault, cut).await;
    let mut p3 = sc.take(victim);
    p3.process.kill().await.expect("SIGKILL p3");
    let logs = sc.finish().await;
    drop(partition);
    let totals = ended
        .report(name, "the partition of p3", &keys, fault, down)
        .await;
    println!(
        "[{name}] lines {label} logged after the cut: {:?}",
        logs.events_of(&label, cut_wall)
    );
    let late = handled_after_takeover(&logs, &label, cut_wall);
    assert!(
        late.is_empty(),
        "[{name}] the cut-off process handled keys another process had taken over: {late:#?}"
    );
    logs.check_single_activation(name, Some((&label, cut_wall)));
    assert_eq!(
        totals.failed_ops, 0,
        "[{name}] every increment was acknowledged in time"
    );
    logs.remove();
}

#[actix::test]
async fn a_rolling_restart_under_load_loses_nothing_and_fails_no_ask() {
    let _serial = SERIAL.lock().await;
    let name = "rolling";
    let ids = ["p1", "p2", "p3"];
    let mut sc = Scenario::new(name, start_etcd(), None).await;
    sc.start_nodes(&ids).await;
    sc.settled(&ids).await;
    let keys = keys();
    sc.locate(&keys).await;
    let load = Load::start(
        &sc.client,
        &keys,
        GRACEFUL_OP_DEADLINE,
        GRACEFUL_OP_DEADLINE,
    );
    load.wait_acks_since("warm-up", load.started, WARM_UP, Duration::from_secs(20))
        .await;
    let mut terms = Vec::new();
    for id in ids {
        let mut p = sc.take(id);
        let asked = Instant::now();
        terms.push(format!("{id} at {:.2?}", asked - load.started));
        p.process.signal("TERM").unwrap();
        let status = p
            .process
            .wait_exit(STOP_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{} stops: {e}", p.label));
        assert!(status.success(), "{} exited with {status}", p.label);
        let left = asked.elapsed();
        let spec = sc.spec(id);
        sc.spawn(spec).await;
        let hosting = sc.settled(&ids).await;
        let hosted = hosting
            .iter()
            .find(|(n, _)| n == id)
            .map_or(0, |(_, h)| h.hosted);
        println!(
            "[{name}] {} handed its shards over and exited {left:?} after SIGTERM; its successor hosts {hosted} shards {:?} after SIGTERM",
            p.label,
            asked.elapsed()
        );
        load.wait_acks_since(
            &format!("every key answers after the restart of {id}"),
            Instant::now(),
            2,
            Duration::from_secs(20),
        )
        .await;
    }
    let origin = load.started;
    let (stats, ran) = load.stop().await;
    let finals = sc.finals(&keys).await;
    let logs = sc.finish().await;

    let totals = check_increments(name, &keys, &stats, &finals);
    print_totals(name, &totals, ran);
    if totals.ambiguous + totals.not_applied > 0 {
        println!(
            "[{name}] failed attempts (time since the load started, key, error), SIGTERMs {terms:?}: {:?}",
            error_timeline(&keys, &stats, origin, 30)
        );
    }
    logs.check_single_activation(name, None);
    let unexpected: Vec<&String> = totals.errors.keys().filter(|k| !retryable(k)).collect();
    assert!(
        unexpected.is_empty(),
        "[{name}] asks failed with errors that are not retryable: {:?}",
        totals.errors
    );
    assert_eq!(
        totals.stale, 0,
        "[{name}] a graceful handoff leaves no stale activation to refuse"
    );
    assert_eq!(
        totals.failed_ops, 0,
        "[{name}] every increment was acknowledged within its deadline ({GRACEFUL_OP_DEADLINE:?})"
    );
    logs.remove();
}

/// The rounds of tells of the handoff scenario.
const MAX_TELL_ROUNDS: u32 = 1_000;
/// The pause between two rounds of tells (one per key).
const TELL_PACE: Duration = Duration::from_millis(20);

#[actix::test]
async fn tells_accepted_during_a_graceful_handoff_are_handled_exactly_once() {
    let _serial = SERIAL.lock().await;
    let name = "tells";
    let ids = ["p1", "p2", "p3"];
    let mut sc = Scenario::new(name, start_etcd(), None).await;
    sc.start_nodes(&ids).await;
    sc.settled(&ids).await;
    let keys = keys();
    let placed = sc.locate(&keys).await;
    let (victim, victim_keys) = busiest(&placed);
    println!(
        "[{name}] keys per node: {:?}; stopping {victim}",
        placement_counts(&placed)
    );

    // Tells on every key, round after round, until stopped.
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let sender = {
        let refs: Vec<EntityRef<Tally>> = keys.iter().map(|k| sc.client.entity(k)).collect();
        let keys = keys.clone();
        let stop = stop.clone();
        let rounds = rounds.clone();
        actix_rt::spawn(async move {
            let mut accepted: BTreeMap<u64, String> = BTreeMap::new();
            let mut refused = 0u64;
            for _ in 0..MAX_TELL_ROUNDS {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                for (key, tally) in keys.iter().zip(&refs) {
                    let id = next_id();
                    match tally.tell(Note(id)) {
                        Ok(()) => {
                            accepted.insert(id, key.clone());
                        }
                        Err(_) => refused += 1,
                    }
                }
                rounds.fetch_add(1, Ordering::Relaxed);
                // The tells' pace: one round per key every 20 ms while the handoff runs.
                tokio::time::sleep(TELL_PACE).await;
            }
            (accepted, refused)
        })
    };
    let wait_rounds = |n: u64, what: &'static str| {
        let rounds = rounds.clone();
        async move {
            let from = rounds.load(Ordering::Relaxed);
            poll_until(what, Duration::from_secs(20), POLL, || {
                let rounds = rounds.clone();
                async move {
                    let now = rounds.load(Ordering::Relaxed);
                    if now >= from + n {
                        Ok(())
                    } else {
                        Err(format!("{} rounds", now - from))
                    }
                }
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        }
    };
    wait_rounds(10, "tells before the stop").await;
    let mut p = sc.take(&victim);
    let asked = Instant::now();
    p.process.signal("TERM").unwrap();
    let status = p
        .process
        .wait_exit(STOP_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{} stops: {e}", p.label));
    assert!(status.success(), "{} exited with {status}", p.label);
    println!(
        "[{name}] {} handed its shards over and exited {:?} after SIGTERM, {} rounds of tells sent so far",
        p.label,
        asked.elapsed(),
        rounds.load(Ordering::Relaxed)
    );
    let survivors: Vec<&str> = ids.into_iter().filter(|id| *id != victim).collect();
    sc.settled(&survivors).await;
    wait_rounds(10, "tells after the stop").await;
    stop.store(true, Ordering::Relaxed);
    let (accepted, refused) = tokio::time::timeout(Duration::from_secs(10), sender)
        .await
        .expect("the sender stops")
        .expect("the sender panicked");

    // Every accepted tell ends up handled somewhere: wait for the logs to show them all.
    let files = sc.logs.clone();
    let handled = |files: &[(String, PathBuf)]| -> BTreeMap<u64, Vec<String>> {
        let mut seen: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for (label, path) in files {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            for line in text.lines() {
                let Ok(line) = parse_log_line(line) else {
                    continue;
                };
                if let Some(id) = line.detail.strip_prefix("note ") {
                    if let Ok(id) = id.parse::<u64>() {
                        seen.entry(id).or_default().push(label.clone());
                    }
                }
            }
        }
        seen
    };
    let waited = poll_until(
        "every accepted tell is handled",
        Duration::from_secs(15),
        POLL,
        || {
            let files = &files;
            let accepted = &accepted;
            async move {
                let seen = handled(files);
                let missing = accepted.keys().filter(|id| !seen.contains_key(id)).count();
                if missing == 0 {
                    Ok(())
                } else {
                    Err(format!("{missing} of {} not handled yet", accepted.len()))
                }
            }
        },
    )
    .await;
    let logs = sc.finish().await;
    // Counted again once every process exited: the complete logs.
    let mut seen: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (label, line) in &logs.lines {
        if let Some(id) = line.detail.strip_prefix("note ") {
            let id: u64 = id.parse().expect("a tell id");
            seen.entry(id).or_default().push(label.clone());
        }
    }

    let mut lost = Vec::new();
    let mut twice = Vec::new();
    let mut on_victim = 0;
    for (id, key) in &accepted {
        let from_victim = victim_keys.contains(key);
        if from_victim {
            on_victim += 1;
        }
        match seen.get(id).map_or(0, Vec::len) {
            1 => {}
            0 => lost.push((*id, key.clone(), from_victim)),
            _ => twice.push((*id, key.clone(), seen[id].clone())),
        }
    }
    let unknown = seen.keys().filter(|id| !accepted.contains_key(id)).count();
    println!(
        "[{name}] {} tells accepted ({on_victim} to keys of {victim}), {refused} refused; handled: {} lost, {} twice, {unknown} never sent",
        accepted.len(),
        lost.len(),
        twice.len()
    );
    logs.check_single_activation(name, None);
    assert!(
        twice.is_empty(),
        "[{name}] tells handled more than once: {:?}",
        &twice[..twice.len().min(20)]
    );
    let lost_on_victim: Vec<_> = lost.iter().filter(|l| l.2).collect();
    assert!(
        lost_on_victim.is_empty(),
        "[{name}] {} accepted tells to keys of the leaving node were never handled (first: {:?}); wait: {waited:?}",
        lost_on_victim.len(),
        &lost_on_victim[..lost_on_victim.len().min(20)]
    );
    assert!(
        lost.is_empty(),
        "[{name}] {} accepted tells to keys of the staying nodes were never handled (first: {:?})",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    assert_eq!(unknown, 0, "[{name}] handled tells that were never sent");
    logs.remove();
}
