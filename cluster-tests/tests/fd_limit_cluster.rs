//! Issue 11, "correct behaviour at the file-descriptor limit", against a real `cluster-node`
//! process started with at most 256 open files and a real etcd, driven from the test process
//! (itself a node of the same cluster):
//!
//! - 400 plain TCP connections to the node's listening address, held open without a byte sent,
//!   run the node out of descriptors; while they are held its accept loop pauses between two
//!   failed accepts instead of spinning: the process uses well under one core;
//! - once they are dropped the node accepts again: the test node looks up the process's counter
//!   and asks it (links are made on first use, so this link is accepted after the flood).
//!
//! The test starts its own etcd on free loopback ports and its own process.

use std::net::SocketAddr;
use std::time::Duration;

use actormesh::NodeId;
use actormesh_cluster_tests::{
    etcd_test_node, poll_until, CapturedLog, Counter, NodeSpec, WhoAreYou,
};
use actormesh_testkit::Etcd;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_cluster-node");

/// The process's limit of open files (soft and hard).
const OPEN_FILES: u32 = 256;
/// The connections the test opens and holds: more than the process can accept.
const CONNECTIONS: usize = 400;
/// How long all the connects together may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the node's CPU time is measured while the connections are held.
const HOLD: Duration = Duration::from_secs(2);
/// The most of one core the node may use while it is out of descriptors (a busy accept loop
/// uses all of it).
const MAX_CPU_PERCENT: f64 = 50.0;
/// The log line of the accept loop when it runs out of descriptors.
const EXHAUSTED_LINE: &str = "out of file descriptors";
/// How long the node may take to run out of descriptors once the connections are open.
const EXHAUST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the node may take to accept again once the connections are dropped: the held
/// connections it accepted are closed at their handshake deadline (5 s) at the latest.
const RECOVER_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the process or the test node may take to appear in a view.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a graceful stop may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// The timeout of an ask that must be answered.
const ASK: Duration = Duration::from_secs(2);
/// Pause between two attempts of a polled condition.
const POLL: Duration = Duration::from_millis(50);

/// The CPU time (user + system) process `pid` has used, in clock ticks: fields 14 and 15 of
/// `/proc/PID/stat`.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/stat: {e}"));
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let (_, rest) = stat
        .rsplit_once(')')
        .unwrap_or_else(|| panic!("malformed /proc/{pid}/stat: {stat}"));
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (the state).
    let field = |n: usize| -> u64 {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .unwrap_or_else(|| panic!("no field {n} in /proc/{pid}/stat: {stat}"))
    };
    field(14) + field(15)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 if it cannot be read).
fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|&ticks| ticks > 0)
        .unwrap_or(100)
}

/// The soft limit of open files of process `pid`, from `/proc/PID/limits`.
fn open_files_limit(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// How many descriptors process `pid` has open (`None` if `/proc/PID/fd` cannot be read).
fn open_descriptors(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// The log lines saying the accept loop ran out of descriptors.
fn exhausted_lines(log: &CapturedLog) -> usize {
    log.lines()
        .iter()
        .filter(|line| line.contains(EXHAUSTED_LINE))
        .count()
}

/// Opens `n` TCP connections to `addr` at once; returns those the kernel completed within
/// [`CONNECT_TIMEOUT`] and how many did not complete.
async fn open_connections(addr: SocketAddr, n: usize) -> (Vec<TcpStream>, usize) {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let mut connects = JoinSet::new();
    for _ in 0..n {
        connects.spawn(tokio::time::timeout_at(deadline, TcpStream::connect(addr)));
    }
    let mut open = Vec::with_capacity(n);
    let mut failed = 0;
    // Bounded: `n` tasks, each cut off at the deadline.
    while let Some(joined) = connects.join_next().await {
        match joined {
            Ok(Ok(Ok(stream))) => open.push(stream),
            _ => failed += 1,
        }
    }
    (open, failed)
}

#[actix::test]
async fn a_node_out_of_descriptors_neither_spins_nor_stops_accepting() {
    let started = Instant::now();
    let etcd = Etcd::start().expect("the fd-limit cluster test needs a real etcd");
    let endpoint = etcd.endpoint();
    let mut p1 = NodeSpec::new(BIN, "fdlimit", "p1")
        .etcd(&endpoint)
        .open_files_limit(OPEN_FILES)
        .env("RUST_LOG", "warn")
        .capture_log()
        .start()
        .await
        .unwrap_or_else(|e| panic!("p1 starts: {e}"));
    let log = p1.log.clone().expect("the log is captured");
    assert_eq!(
        open_files_limit(p1.pid),
        Some(u64::from(OPEN_FILES)),
        "p1 runs with at most {OPEN_FILES} open files, its raise of the soft limit included"
    );
    let me = etcd_test_node(&endpoint, "fdlimit", "driver")
        .await
        .expect("the test node joins");
    // Only the view: no link to p1 is made before the flood.
    let addr = me
        .wait_for_node(&NodeId::new("p1"), JOIN_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("the test node sees p1: {e}"))
        .addr;
    assert!(addr.ip().is_loopback(), "{addr} is not a loopback address");
    let descriptors_before = open_descriptors(p1.pid);

    let (held, not_connected) = open_connections(addr, CONNECTIONS).await;
    let connected = held.len();
    eprintln!(
        "{connected} of {CONNECTIONS} connections accepted by the kernel ({not_connected} not)"
    );
    poll_until(
        "p1 runs out of descriptors",
        EXHAUST_TIMEOUT,
        POLL,
        || async {
            match exhausted_lines(&log) {
                0 => Err("no such log line yet"),
                _ => Ok(()),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; p1's log ends with {:?}", log.last(20)));
    let descriptors_held = open_descriptors(p1.pid);

    let ticks_per_second = clock_ticks_per_second();
    let ticks_before = cpu_ticks(p1.pid);
    let hold_started = Instant::now();
    let mut hold = tokio::time::interval(HOLD);
    hold.tick().await; // The first tick is immediate.
    hold.tick().await;
    let ticks = cpu_ticks(p1.pid) - ticks_before;
    let held_for = hold_started.elapsed();
    let cpu_percent = 100.0 * ticks as f64 / ticks_per_second as f64 / held_for.as_secs_f64();
    eprintln!(
        "p1 used {cpu_percent:.1} % of a core over {held_for:?} out of descriptors \
         ({ticks} ticks at {ticks_per_second}/s; \
         descriptors open: {descriptors_before:?} before, {descriptors_held:?} held)"
    );
    assert!(
        cpu_percent < MAX_CPU_PERCENT,
        "p1 used {cpu_percent:.1} % of a core while out of descriptors (limit \
         {MAX_CPU_PERCENT} %): its accept loop spins"
    );

    drop(held);
    let dropped = Instant::now();
    let answered = poll_until(
        "the test node asks counter-p1 after the flood",
        RECOVER_TIMEOUT,
        POLL,
        || async {
            let counter = me.lookup::<Counter>("counter-p1").await?;
            counter.ask_timeout(WhoAreYou, ASK).await
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; p1's log ends with {:?}", log.last(20)));
    let recovered_in = dropped.elapsed();
    assert_eq!(answered, p1.pid, "counter-p1 answered from p1's process");
    eprintln!(
        "p1 accepted again {recovered_in:?} after the connections were dropped \
         (descriptors open: {:?})",
        open_descriptors(p1.pid)
    );

    let status = p1
        .stop(STOP_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("p1 stops: {e}"));
    assert!(status.success(), "p1 exited with {status}");
    me.shutdown().await;
    drop(etcd);
    eprintln!("the test ran {:?}", started.elapsed());
}
