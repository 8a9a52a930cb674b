//! Groups across real node processes on one real etcd: `cluster-node --workers K` processes
//! run the instances of the group `workers`, the test process (itself a node of the same
//! cluster) addresses them as one with a `GroupRef`.
//!
//! Each test starts its own etcd (`actormesh_testkit::Etcd`; it fails with install
//! instructions when etcd is missing, it never skips) and its own processes with a 2 s lease
//! TTL. The tests run one at a time: they measure how soon a dead node leaves the group, which
//! CPU contention between concurrently running clusters would blur.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actormesh::balance::{ConsistentHash, RoundRobin};
use actormesh::{DropReason, GroupConfig, GroupRef, Node, NodeId};
use actormesh_cluster_tests::{
    etcd_keys, etcd_test_node, poll_until, NodeProcess, NodeSpec, Ping, Pings, Work, Worker,
    WorkerId, DEFAULT_GROUP, TTL,
};
use actormesh_testkit::Etcd;
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_cluster-node");

/// How long a process, the test node or a group instance may take to appear in a view.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a graceful stop may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause between two attempts of a polled condition.
const POLL: Duration = Duration::from_millis(20);
/// A dead node is declared down within the TTL plus this (as in `etcd_cluster.rs`)...
const DETECTION_SLACK: Duration = Duration::from_secs(1);
/// ... and its instances leave every caller's view of the group within this much more (the
/// group is watched on its own etcd watch, and the machine may be busy).
const GROUP_MARGIN: Duration = Duration::from_secs(1);

/// The layout of the group: 8 instances over 3 processes.
const LAYOUT: [(&str, u32); 3] = [("p1", 3), ("p2", 3), ("p3", 2)];

/// One scenario at a time: detection times are measured.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn start_etcd() -> Etcd {
    Etcd::start().expect("the etcd group tests need a real etcd")
}

/// Starts one process of `cluster` on etcd at `endpoint` running `workers` group workers.
async fn start_process(endpoint: &str, cluster: &str, id: &str, workers: u32) -> NodeProcess {
    NodeSpec::new(BIN, cluster, id)
        .etcd(endpoint)
        .ttl(TTL)
        .workers(workers)
        .start()
        .await
        .unwrap_or_else(|e| panic!("{id} starts: {e}"))
}

/// Starts the processes of `layout` (id, workers), then the test node `driver`, and waits
/// until the test node sees every process.
async fn start_cluster(
    endpoint: &str,
    cluster: &str,
    layout: &[(&str, u32)],
) -> (Node, Vec<NodeProcess>) {
    let mut procs = Vec::new();
    for &(id, workers) in layout {
        procs.push(start_process(endpoint, cluster, id, workers).await);
    }
    let me = etcd_test_node(endpoint, cluster, "driver")
        .await
        .expect("the test node joins");
    for &(id, _) in layout {
        me.wait_for_node(&NodeId::new(id), JOIN_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("the test node sees {id}: {e}"));
    }
    (me, procs)
}

/// The instances `group` currently sees, counted by node.
fn instances_by_node(group: &GroupRef<Worker>) -> BTreeMap<String, u32> {
    let mut counts = BTreeMap::new();
    for instance in group.instances() {
        *counts
            .entry(instance.node().as_str().to_owned())
            .or_default() += 1;
    }
    counts
}

fn layout_counts(layout: &[(&str, u32)]) -> BTreeMap<String, u32> {
    layout.iter().map(|&(id, k)| (id.to_owned(), k)).collect()
}

/// Every worker of `layout`.
fn all_workers(layout: &[(&str, u32)]) -> BTreeSet<WorkerId> {
    layout
        .iter()
        .flat_map(|&(id, k)| (0..k).map(move |i| (id.to_owned(), i)))
        .collect()
}

/// Waits until `group` sees exactly the instances of `layout`.
async fn wait_for_layout(group: &GroupRef<Worker>, layout: &[(&str, u32)], what: &str) {
    let wanted = layout_counts(layout);
    poll_until(what, JOIN_TIMEOUT, POLL, || async {
        let seen = instances_by_node(group);
        if seen == wanted {
            Ok(())
        } else {
            Err(format!("sees {seen:?}, wants {wanted:?}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Stops the processes gracefully (each must exit 0), then the test's nodes.
async fn stop_all(nodes: Vec<Node>, procs: Vec<NodeProcess>) {
    for mut p in procs {
        let status = p
            .stop(STOP_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{} stops: {e}", p.id));
        assert!(status.success(), "{} exited with {status}", p.id);
    }
    for node in nodes {
        node.shutdown().await;
    }
}

// ---------------------------------------------------------------------------------------------
// A node dies under load: idempotent callers see no error.

/// How many callers ask concurrently.
const CALLERS: u64 = 4;
/// Each caller starts an ask at most this often.
const PACE: Duration = Duration::from_millis(2);
/// Bounds on each caller: asks, and time (the test stops them long before either).
const MAX_ASKS_PER_CALLER: u64 = 20_000;
const LOAD_DEADLINE: Duration = Duration::from_secs(40);
/// Answers before the kill.
const WARM_UP_ANSWERS: u64 = 200;
/// How many more answers the callers get once the dead node's instances have left the group.
const ANSWERS_AFTER: u64 = 200;
/// The longest one attempt of an idempotent ask may take before it is retried elsewhere.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);

/// One idempotent ask as a caller saw it.
#[derive(Debug)]
struct Answer {
    /// When it completed.
    at: Instant,
    /// How long it took.
    took: Duration,
    outcome: Result<WorkerId, String>,
}

/// What one caller did: its asks, and whether it ran into its own bounds (instead of being
/// stopped by the test).
#[derive(Debug)]
struct Calls {
    answers: Vec<Answer>,
    hit_bound: bool,
}

/// How a caller asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asks {
    /// `ask_idempotent`: retried on another instance when one fails.
    Idempotent,
    /// `ask`: never retried, failures reach the caller.
    Plain,
}

/// Asks `group` every [`PACE`] until `stop`, for at most [`MAX_ASKS_PER_CALLER`] asks and
/// [`LOAD_DEADLINE`].
async fn caller(
    group: GroupRef<Worker>,
    asks: Asks,
    index: u64,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
) -> Calls {
    let deadline = Instant::now() + LOAD_DEADLINE;
    let mut tick = tokio::time::interval(PACE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut answers = Vec::new();
    for n in 0..MAX_ASKS_PER_CALLER {
        if stop.load(Ordering::Acquire) {
            return Calls {
                answers,
                hit_bound: false,
            };
        }
        if Instant::now() >= deadline {
            break;
        }
        tick.tick().await;
        let started = Instant::now();
        let work = Work {
            key: index * MAX_ASKS_PER_CALLER + n,
        };
        let outcome = match asks {
            Asks::Idempotent => group.ask_idempotent(work).await,
            Asks::Plain => group.ask(work).await,
        }
        .map_err(|e| e.to_string());
        answers.push(Answer {
            at: Instant::now(),
            took: started.elapsed(),
            outcome,
        });
        answered.fetch_add(1, Ordering::Release);
    }
    Calls {
        answers,
        hit_bound: true,
    }
}

/// A group of 8 instances over 3 processes under constant idempotent asks; one process (3
/// instances) is SIGKILLed. No idempotent caller sees an error, answers go on throughout, and
/// the dead process's instances leave the group within the TTL (plus slack).
///
/// A plain caller (its own group reference, `ask`, never retried) runs alongside as a
/// control: it does see errors, which shows that the kill did hit the callers and that the
/// retries are what hid it.
#[actix::test]
async fn a_killed_node_leaves_the_group_and_idempotent_callers_see_no_error() {
    let _serial = SERIAL.lock().await;
    let etcd = start_etcd();
    let endpoint = etcd.endpoint();
    let started = Instant::now();
    let (me, mut procs) = start_cluster(&endpoint, "gkill", &LAYOUT).await;

    let config = GroupConfig::new()
        .balancer(RoundRobin::new())
        // Why a bound on each attempt: a killed process's link does not always fail at once.
        // Its open connection breaks at once, but an ask sent while the link waits to
        // reconnect (backing off up to seconds) waits in its queue until the next attempt to
        // connect fails, and the node is declared down (every ask to it failing at once) only
        // once its lease expires, a TTL after the kill. Without a bound, one attempt could
        // spend that long on the dead instance; with it, the ask moves on to another.
        .attempt_timeout(ATTEMPT_TIMEOUT)
        // The killed process runs 3 of the 8 instances: before discovery removes them, one ask
        // may meet all three in a row (round robin over a snapshot in which they happen to be
        // neighbours), so it needs 3 retries to be sure of reaching a live one. 4 attempts of
        // at most ATTEMPT_TIMEOUT fit in the node's 5 s ask timeout.
        .retries(3);
    let group = me
        .group_with::<Worker>(DEFAULT_GROUP, config)
        .await
        .expect("the test node watches the group");
    wait_for_layout(&group, &LAYOUT, "the test node sees the 8 instances").await;
    assert_eq!(group.instances().len(), 8);
    let plain = me
        .group_with::<Worker>(
            DEFAULT_GROUP,
            GroupConfig::new().balancer(RoundRobin::new()),
        )
        .await
        .expect("the test node watches the group again");
    wait_for_layout(&plain, &LAYOUT, "the control caller sees the 8 instances").await;
    eprintln!(
        "[group-kill] 3 processes, 8 instances and the test node up in {:?}",
        started.elapsed()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let callers: Vec<_> = (0..CALLERS)
        .map(|c| {
            tokio::spawn(caller(
                group.clone(),
                Asks::Idempotent,
                c,
                stop.clone(),
                answered.clone(),
            ))
        })
        .collect();
    let control = tokio::spawn(caller(
        plain,
        Asks::Plain,
        CALLERS,
        stop.clone(),
        Arc::new(AtomicU64::new(0)),
    ));
    poll_until("the callers warm up", JOIN_TIMEOUT, POLL, || async {
        let n = answered.load(Ordering::Acquire);
        if n >= WARM_UP_ANSWERS {
            Ok(())
        } else {
            Err(format!("{n} answers"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // SIGKILL p1 (workers p1/0, p1/1, p1/2) with asks in flight.
    let killed = Instant::now();
    let mut p1 = procs.remove(0);
    p1.kill().await.expect("p1 is killed");
    let survivors = &LAYOUT[1..];
    let removed_by = TTL + DETECTION_SLACK + GROUP_MARGIN;
    // Polled for longer than the bound so that a late removal is measured, then asserted.
    poll_until(
        "p1's instances leave the group",
        removed_by * 3,
        POLL,
        || async {
            let seen = instances_by_node(&group);
            if seen.contains_key("p1") {
                Err(format!("still sees {seen:?}"))
            } else {
                Ok(())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let removed_at = Instant::now();
    let removed = removed_at - killed;
    assert!(
        removed <= removed_by,
        "p1's instances left the group {removed:?} after the kill (TTL {TTL:?}, bound {removed_by:?})"
    );
    assert_eq!(
        instances_by_node(&group),
        layout_counts(survivors),
        "only the survivors' instances remain"
    );
    let keys = etcd_keys(&endpoint, "/actormesh/gkill/groups/workers/members/")
        .await
        .unwrap();
    assert_eq!(keys.len(), 5, "{keys:?}");
    assert!(!keys.iter().any(|k| k.contains("/p1/")), "{keys:?}");

    // The load goes on with the shrunk group for a number of answers, then stops.
    let at_removal = answered.load(Ordering::Acquire);
    poll_until(
        "the callers go on with the shrunk group",
        JOIN_TIMEOUT,
        POLL,
        || async {
            let after = answered.load(Ordering::Acquire) - at_removal;
            if after >= ANSWERS_AFTER {
                Ok(())
            } else {
                Err(format!("{after} answers since the removal"))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    stop.store(true, Ordering::Release);
    let mut answers = Vec::new();
    for (c, task) in callers.into_iter().enumerate() {
        let calls = tokio::time::timeout(JOIN_TIMEOUT, task)
            .await
            .unwrap_or_else(|_| panic!("caller {c} stops within {JOIN_TIMEOUT:?}"))
            .expect("caller task");
        assert!(
            !calls.hit_bound,
            "caller {c} ran into its bounds before the test stopped it"
        );
        answers.extend(calls.answers);
    }
    answers.sort_by_key(|a| a.at);
    let control = tokio::time::timeout(JOIN_TIMEOUT, control)
        .await
        .unwrap_or_else(|_| panic!("the control caller stops within {JOIN_TIMEOUT:?}"))
        .expect("control caller task");
    assert!(!control.hit_bound, "the control caller ran into its bounds");
    let control_errors: BTreeMap<String, u32> = control
        .answers
        .iter()
        .filter_map(|a| a.outcome.as_ref().err())
        .fold(BTreeMap::new(), |mut kinds, e| {
            // The kind of error: its text up to the first colon.
            *kinds
                .entry(e.split(':').next().unwrap_or(e).to_owned())
                .or_default() += 1;
            kinds
        });

    let errors: Vec<&Answer> = answers.iter().filter(|a| a.outcome.is_err()).collect();
    let before: Vec<&Answer> = answers.iter().filter(|a| a.at < killed).collect();
    let during: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.at >= killed && a.at < removed_at)
        .collect();
    let after: Vec<&Answer> = answers.iter().filter(|a| a.at >= removed_at).collect();
    let slowest = answers.iter().map(|a| a.took).max().unwrap_or_default();
    let slowest_during = during.iter().map(|a| a.took).max().unwrap_or_default();
    // The longest time without any answer from the kill on.
    let mut longest_gap = Duration::ZERO;
    let mut last = killed;
    for a in answers.iter().filter(|a| a.at >= killed) {
        longest_gap = longest_gap.max(a.at - last);
        last = a.at;
    }
    eprintln!(
        "[group-kill] p1's instances left the group {removed:?} after SIGKILL; {} idempotent \
         asks: {} before the kill, {} until the removal, {} after; {} errors; slowest ask \
         {slowest:?} ({slowest_during:?} until the removal); longest time without an answer \
         after the kill {longest_gap:?}; the control caller's {} plain asks failed {} times \
         ({control_errors:?}); the test node dropped {} messages to the dead link",
        answers.len(),
        before.len(),
        during.len(),
        after.len(),
        errors.len(),
        control.answers.len(),
        control_errors.values().sum::<u32>(),
        me.stats().dropped(DropReason::LinkFailed),
    );
    assert!(
        errors.is_empty(),
        "{} of {} idempotent asks failed; first: {:?}",
        errors.len(),
        answers.len(),
        errors.first()
    );
    let answered_before: BTreeSet<WorkerId> = before
        .iter()
        .filter_map(|a| a.outcome.clone().ok())
        .collect();
    assert_eq!(
        answered_before,
        all_workers(&LAYOUT),
        "all 8 instances answered before the kill"
    );
    assert!(
        during.len() >= 10,
        "answers continue between the kill and the removal: {}",
        during.len()
    );
    assert!(
        after.len() >= 10,
        "answers continue after the removal: {}",
        after.len()
    );
    let answered_after: BTreeSet<WorkerId> = after
        .iter()
        .filter_map(|a| a.outcome.clone().ok())
        .collect();
    assert_eq!(
        answered_after,
        all_workers(survivors),
        "after the removal, the 5 survivors answer"
    );
    assert!(
        !control_errors.is_empty(),
        "the plain control caller saw no error: the kill never hit a caller"
    );
    // Retries, not failure detection, kept the callers going: answers never stopped for as
    // long as it takes to declare the node down.
    assert!(
        longest_gap < TTL,
        "no answer for {longest_gap:?} after the kill"
    );

    // Plain asks only reach the survivors now.
    for n in 0..40 {
        let (node, _) = group
            .ask(Work { key: n })
            .await
            .unwrap_or_else(|e| panic!("plain ask {n} after the removal: {e}"));
        assert_ne!(node, "p1");
    }
    stop_all(vec![me], procs).await;
}

// ---------------------------------------------------------------------------------------------
// Consistent hashing across callers and processes.

/// How many keys are mapped.
const KEYS: u64 = 1_000;

/// Which worker each key `0..KEYS` reaches through `group` (asked one key at a time).
async fn owners(group: &GroupRef<Worker>, who: &str) -> Vec<WorkerId> {
    let mut owners = Vec::with_capacity(KEYS as usize);
    for key in 0..KEYS {
        let owner = group
            .ask_keyed(&key, Work { key })
            .await
            .unwrap_or_else(|e| panic!("{who}: key {key}: {e}"));
        owners.push(owner);
    }
    owners
}

/// The keys whose owners differ.
fn differing(a: &[WorkerId], b: &[WorkerId]) -> Vec<usize> {
    (0..a.len()).filter(|&k| a[k] != b[k]).collect()
}

/// With consistent hashing, 1,000 keys reach the same instance on every ask, from every
/// caller (another group reference, another node); a fourth process with one instance takes
/// about 1/9 of the keys, and no other key moves.
#[actix::test]
async fn consistent_hashing_keeps_keys_on_their_instance_until_the_group_changes() {
    let _serial = SERIAL.lock().await;
    let etcd = start_etcd();
    let endpoint = etcd.endpoint();
    let (me, mut procs) = start_cluster(&endpoint, "ghash", &LAYOUT).await;
    // A second client node in the test process, with its own links and its own etcd watch.
    let client = etcd_test_node(&endpoint, "ghash", "client2")
        .await
        .expect("the second client node joins");
    let config = || GroupConfig::new().balancer(ConsistentHash::new());
    let group = me
        .group_with::<Worker>(DEFAULT_GROUP, config())
        .await
        .unwrap();
    let again = me
        .group_with::<Worker>(DEFAULT_GROUP, config())
        .await
        .unwrap();
    let other = client
        .group_with::<Worker>(DEFAULT_GROUP, config())
        .await
        .unwrap();
    for (who, g) in [("group", &group), ("again", &again), ("client2", &other)] {
        wait_for_layout(g, &LAYOUT, &format!("{who} sees the 8 instances")).await;
    }

    let started = Instant::now();
    let first = owners(&group, "first pass").await;
    let took = started.elapsed();
    let mut share: BTreeMap<&WorkerId, u32> = BTreeMap::new();
    for owner in &first {
        *share.entry(owner).or_default() += 1;
    }
    eprintln!("[group-hash] {KEYS} keyed asks in {took:?}; keys per instance: {share:?}");
    assert_eq!(
        share.keys().map(|w| (*w).clone()).collect::<BTreeSet<_>>(),
        all_workers(&LAYOUT),
        "the keys spread over all 8 instances"
    );

    // Nothing changes: every key reaches the same instance, from every caller.
    for (who, g) in [
        ("the same group reference", &group),
        ("another group reference", &again),
        ("another node", &other),
    ] {
        let now = owners(g, who).await;
        let moved = differing(&first, &now);
        assert!(
            moved.is_empty(),
            "{who}: {} keys reached another instance, e.g. key {}: {:?} then {:?}",
            moved.len(),
            moved[0],
            first[moved[0]],
            now[moved[0]]
        );
    }

    // A fourth process with one instance joins.
    procs.push(start_process(&endpoint, "ghash", "p4", 1).await);
    let grown = [LAYOUT[0], LAYOUT[1], LAYOUT[2], ("p4", 1)];
    for (who, g) in [("group", &group), ("client2", &other)] {
        wait_for_layout(g, &grown, &format!("{who} sees the 9 instances")).await;
    }
    let newcomer: WorkerId = ("p4".to_owned(), 0);
    let second = owners(&group, "after p4 joined").await;
    let moved = differing(&first, &second);
    let stray: Vec<usize> = moved
        .iter()
        .copied()
        .filter(|&k| second[k] != newcomer)
        .collect();
    eprintln!(
        "[group-hash] after p4 joined, {} of {KEYS} keys moved (expected about {}), {} of \
         them elsewhere than p4",
        moved.len(),
        KEYS / 9,
        stray.len()
    );
    assert!(
        stray.is_empty(),
        "keys moved between instances that were there throughout, e.g. key {}: {:?} then {:?}",
        stray[0],
        first[stray[0]],
        second[stray[0]]
    );
    let to_newcomer = second.iter().filter(|&w| *w == newcomer).count();
    assert_eq!(to_newcomer, moved.len(), "p4 took exactly the moved keys");
    assert!(
        (KEYS as usize / 20..=KEYS as usize / 5).contains(&moved.len()),
        "{} of {KEYS} keys moved; expected about 1/9",
        moved.len()
    );
    // The other caller agrees on the new mapping.
    let from_other = owners(&other, "another node, after p4 joined").await;
    let disagree = differing(&second, &from_other);
    assert!(
        disagree.is_empty(),
        "the callers disagree on {} keys after p4 joined",
        disagree.len()
    );
    stop_all(vec![client, me], procs).await;
}

// ---------------------------------------------------------------------------------------------
// Broadcast.

/// A broadcast reaches each of the 8 instances across the 3 processes exactly once; round
/// robin spreads plain asks exactly evenly over them.
#[actix::test]
async fn broadcast_reaches_all_eight_instances_across_processes() {
    let _serial = SERIAL.lock().await;
    let etcd = start_etcd();
    let endpoint = etcd.endpoint();
    let (me, procs) = start_cluster(&endpoint, "gcast", &LAYOUT).await;
    let group = me.group::<Worker>(DEFAULT_GROUP).await.unwrap();
    wait_for_layout(&group, &LAYOUT, "the test node sees the 8 instances").await;
    let keys = etcd_keys(&endpoint, "/actormesh/gcast/groups/workers/members/")
        .await
        .unwrap();
    assert_eq!(keys.len(), 8, "{keys:?}");

    assert_eq!(group.broadcast(Ping), 8, "every instance accepted the ping");
    let mut reached = BTreeSet::new();
    for instance in group.instances() {
        let pings = poll_until(
            &format!("{} {} counts the ping", instance.node(), instance.id()),
            JOIN_TIMEOUT,
            POLL,
            || async {
                match instance.ask(Pings).await {
                    Ok(0) => Err("no ping yet".to_owned()),
                    Ok(n) => Ok(n),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pings, 1, "exactly one ping");
        reached.insert(instance.ask(Work { key: 0 }).await.unwrap());
    }
    assert_eq!(reached, all_workers(&LAYOUT), "the 8 distinct workers");

    let mut spread: BTreeMap<WorkerId, u32> = BTreeMap::new();
    for key in 0..80 {
        *spread
            .entry(group.ask(Work { key }).await.unwrap())
            .or_default() += 1;
    }
    assert_eq!(spread.len(), 8, "{spread:?}");
    assert!(
        spread.values().all(|&n| n == 10),
        "exactly even: {spread:?}"
    );
    stop_all(vec![me], procs).await;
}
