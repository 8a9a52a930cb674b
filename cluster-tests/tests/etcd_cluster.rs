//! Real node processes on one real etcd, driven from the test process (itself a node of the
//! same cluster on the same etcd): membership, failure detection and names under faults.
//!
//! Each test starts its own etcd (`actormesh_testkit::Etcd`; it fails with install
//! instructions when etcd is missing) and its own `cluster-node` processes with a 2 s lease
//! TTL. The tests run one at a time (they measure detection times, which CPU contention
//! between concurrently running clusters would blur).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actormesh::{Error, MembershipEvent, Node, NodeId};
use actormesh_cluster_tests::netns::{self, NetnsPlan};
use actormesh_cluster_tests::{
    etcd_entries, etcd_keys, etcd_lease_of, etcd_test_node, members_seen_by, poll_until,
    wait_for_event, Add, Counter, NodeProcess, NodeSpec, Relay, WhoAreYou, TTL,
};
use actormesh_testkit::Etcd;
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_cluster-node");

/// A dead node must be declared down within the TTL plus this.
const DETECTION_SLACK: Duration = Duration::from_secs(1);
/// How long a process or the test node may take to appear in a view.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a graceful stop may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause between two attempts of a polled condition.
const POLL: Duration = Duration::from_millis(50);
/// "Promptly": an operation that must not wait for a timeout.
const PROMPT: Duration = Duration::from_millis(500);

/// One scenario at a time: detection times are measured.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn start_etcd() -> Etcd {
    Etcd::start().expect("the etcd cluster tests need a real etcd")
}

fn id(s: &str) -> NodeId {
    NodeId::new(s)
}

/// Starts processes `ids` of `cluster` on etcd at `endpoint`, then the test node `driver`, and
/// waits until the test node sees every process.
async fn start_cluster(endpoint: &str, cluster: &str, ids: &[&str]) -> (Node, Vec<NodeProcess>) {
    let mut procs = Vec::new();
    for p in ids {
        let process = NodeProcess::start_etcd(BIN, endpoint, cluster, p)
            .await
            .unwrap_or_else(|e| panic!("{p} starts: {e}"));
        procs.push(process);
    }
    let me = etcd_test_node(endpoint, cluster, "driver")
        .await
        .expect("the test node joins");
    for p in ids {
        me.wait_for_node(&id(p), JOIN_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("the test node sees {p}: {e}"));
    }
    (me, procs)
}

/// The ids in `node`'s view, sorted.
fn member_ids(node: &Node) -> Vec<String> {
    let mut ids: Vec<String> = node
        .members()
        .into_iter()
        .map(|m| m.id.as_str().to_owned())
        .collect();
    ids.sort();
    ids
}

fn strings(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

async fn counter(me: &Node, node: &str) -> actormesh::ActorRef<Counter> {
    me.lookup::<Counter>(&format!("counter-{node}"))
        .await
        .unwrap_or_else(|e| panic!("counter-{node} is registered: {e}"))
}

/// Waits until the process `node` no longer has `gone` in its view, up to `deadline` (but at
/// least a few polls from now); returns when that was seen.
async fn wait_gone_in(me: &Node, node: &str, gone: &str, deadline: Instant) -> Instant {
    let timeout = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(250));
    poll_until(
        &format!("{node} declares {gone} down"),
        timeout,
        POLL,
        || async {
            let members = members_seen_by(me, node).await.map_err(|e| e.to_string())?;
            if members.iter().any(|m| m == gone) {
                Err(format!("{node} still sees {members:?}"))
            } else {
                Ok(())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    Instant::now()
}

/// Stops the processes gracefully (each must exit 0), then the test node.
async fn stop_all(me: Node, procs: Vec<NodeProcess>) {
    for mut p in procs {
        let status = p
            .stop(STOP_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{} stops: {e}", p.id));
        assert!(status.success(), "{} exited with {status}", p.id);
    }
    me.shutdown().await;
}

#[actix::test]
async fn three_processes_form_a_cluster_and_ask_each_other() {
    let _serial = SERIAL.lock().await;
    let etcd = start_etcd();
    let started = Instant::now();
    let (me, procs) = start_cluster(&etcd.endpoint(), "form", &["p1", "p2", "p3"]).await;
    eprintln!(
        "[form] 3 processes + test node up in {:?}",
        started.elapsed()
    );
    assert_eq!(member_ids(&me), strings(&["driver", "p1", "p2", "p3"]));

    let mut counters = Vec::new();
    for p in &procs {
        let c = counter(&me, &p.id).await;
        assert_eq!(c.ask(WhoAreYou).await.unwrap(), p.pid, "{} answers", p.id);
        assert_eq!(c.ask(Add(1)).await.unwrap(), 1);
        counters.push(c);
    }
    // The processes ask each other with references the test looked up: p1 -> p2 -> p3 -> p1.
    for (i, amount) in [(0, 10), (1, 100), (2, 1000)] {
        let target = counters[(i + 1) % 3].clone();
        let relayed = counters[i]
            .ask(Relay {
                counter: target,
                amount,
            })
            .await
            .unwrap();
        assert_eq!(relayed, Ok(1 + amount), "p{} relays", i + 1);
    }
    // Every process sees the whole cluster through etcd.
    let all = strings(&["driver", "p1", "p2", "p3"]);
    for p in &procs {
        poll_until(
            &format!("{} sees everyone", p.id),
            JOIN_TIMEOUT,
            POLL,
            || async {
                let seen = members_seen_by(&me, &p.id)
                    .await
                    .map_err(|e| e.to_string())?;
                if seen == all {
                    Ok(())
                } else {
                    Err(format!("{seen:?}"))
                }
            },
        )
        .await
        .unwrap();
    }
    stop_all(me, procs).await;
}

#[actix::test]
async fn a_killed_process_is_declared_down_within_the_ttl_and_asks_to_it_fail_fast() {
    let _serial = SERIAL.lock().await;
    let etcd = start_etcd();
    let endpoint = etcd.endpoint();
    let (me, mut procs) = start_cluster(&endpoint, "kill", &["p1", "p2", "p3"]).await;
    let c1 = counter(&me, "p1").await;
    let c2 = counter(&me, "p2").await;
    let c3 = counter(&me, "p3").await;
    // p2 has a link to p1 before the kill.
    let relayed = c2
        .ask(Relay {
            counter: c1.clone(),
            amount: 1,
        })
        .await
        .unwrap();
    assert_eq!(relayed, Ok(1));

    let mut events = me.subscribe();
    let killed = Instant::now();
    procs[0].child.start_kill().unwrap();
    let (event, seen) = wait_for_event(&mut events, TTL * 5, |e| e.node() == &id("p1"))
        .await
        .unwrap();
    let detected = killed.elapsed();
    eprintln!("[kill] the test node saw {event:?} {detected:?} after SIGKILL");
    assert_eq!(
        event,
        MembershipEvent::Down(id("p1")),
        "seen before: {seen:?}"
    );
    assert!(
        detected <= TTL + DETECTION_SLACK,
        "p1 declared down {detected:?} after the kill (TTL {TTL:?})"
    );
    procs
        .remove(0)
        .wait_exit(Duration::from_secs(5))
        .await
        .unwrap();

    // The test's own asks to p1 fail with NodeDown at once.
    let asked = Instant::now();
    let err = c1.ask(Add(1)).await.unwrap_err();
    assert!(
        matches!(&err, Error::NodeDown { node } if node == &id("p1")),
        "{err:?}"
    );
    assert!(asked.elapsed() < PROMPT, "took {:?}", asked.elapsed());

    // p2 relaying to p1 fails fast, whether or not p2 has applied the Down yet.
    let asked = Instant::now();
    let relayed = c2
        .ask(Relay {
            counter: c1.clone(),
            amount: 1,
        })
        .await
        .unwrap();
    let took = asked.elapsed();
    assert!(relayed.is_err(), "{relayed:?}");
    assert!(took < PROMPT, "p2's relay to the dead p1 took {took:?}");
    // p2 declares p1 down too; then its error says so.
    let p2_saw = wait_gone_in(&me, "p2", "p1", killed + TTL + DETECTION_SLACK).await;
    eprintln!(
        "[kill] p2 no longer listed p1 {:?} after SIGKILL; first relay error ({took:?}): {:?}",
        p2_saw - killed,
        relayed
    );
    let relayed = c2
        .ask(Relay {
            counter: c1.clone(),
            amount: 1,
        })
        .await
        .unwrap();
    let message = relayed.expect_err("p1 is down");
    assert!(
        message.contains("p1") && message.contains("down"),
        "{message}"
    );

    // Everything p1 owned is gone from etcd; the others answer on.
    let keys = etcd_keys(&endpoint, "/actormesh/kill/").await.unwrap();
    assert!(!keys.iter().any(|k| k.contains("p1")), "{keys:?}");
    assert!(matches!(
        me.lookup::<Counter>("counter-p1").await,
        Err(Error::NameNotFound(_))
    ));
    assert_eq!(c3.ask(Add(1)).await.unwrap(), 1);
    assert_eq!(member_ids(&me), strings(&["driver", "p2", "p3"]));
    stop_all(me, procs).await;
}

#[actix::test]
async fn a_frozen_process_is_declared_down_and_comes_back_after_sigcont() {
    let _serial = SERIAL.lock().await;
    let etcd = start_etcd();
    let endpoint = etcd.endpoint();
    let (me, procs) = start_cluster(&endpoint, "freeze", &["p1", "p2", "p3"]).await;
    let c3 = counter(&me, "p3").await;
    assert_eq!(c3.ask(Add(1)).await.unwrap(), 1);
    let pid = procs[2].pid;
    let key = "/actormesh/freeze/nodes/p3";
    let lease_before = etcd_lease_of(&endpoint, key)
        .await
        .unwrap()
        .expect("p3 registered");

    let mut events = me.subscribe();
    procs[2].signal("STOP").unwrap();
    let stopped = Instant::now();
    let (event, seen) = wait_for_event(&mut events, TTL * 5, |e| e.node() == &id("p3"))
        .await
        .unwrap();
    let detected = stopped.elapsed();
    eprintln!("[freeze] the test node saw {event:?} {detected:?} after SIGSTOP");
    assert_eq!(
        event,
        MembershipEvent::Down(id("p3")),
        "seen before: {seen:?}"
    );
    assert!(
        detected <= TTL + DETECTION_SLACK,
        "p3 declared down {detected:?} after SIGSTOP (TTL {TTL:?})"
    );
    let asked = Instant::now();
    let err = c3.ask(Add(1)).await.unwrap_err();
    assert!(matches!(err, Error::NodeDown { .. }), "{err:?}");
    assert!(asked.elapsed() < PROMPT, "took {:?}", asked.elapsed());
    // The others see it down too.
    for p in ["p1", "p2"] {
        wait_gone_in(&me, p, "p3", stopped + TTL + DETECTION_SLACK).await;
    }

    procs[2].signal("CONT").unwrap();
    let resumed = Instant::now();
    let (event, seen) = wait_for_event(&mut events, Duration::from_secs(15), |e| {
        e.node() == &id("p3")
    })
    .await
    .unwrap();
    let back = resumed.elapsed();
    assert!(
        matches!(event, MembershipEvent::Up(_)),
        "{event:?} (before: {seen:?})"
    );
    // Re-registered with a new lease: its names resolve again, to the same process.
    let c3 = poll_until(
        "counter-p3 resolves again",
        Duration::from_secs(15),
        POLL,
        || {
            let me = &me;
            async move {
                let c = me.lookup::<Counter>("counter-p3").await?;
                let who = c.ask_timeout(WhoAreYou, Duration::from_secs(2)).await?;
                Ok::<_, Error>((c, who))
            }
        },
    )
    .await
    .unwrap();
    let resolvable = resumed.elapsed();
    eprintln!("[freeze] after SIGCONT: Up after {back:?}, counter-p3 answers after {resolvable:?}");
    assert_eq!(c3.1, pid);
    assert_eq!(
        c3.0.ask(Add(1)).await.unwrap(),
        2,
        "the same actor, its state kept"
    );
    assert_eq!(member_ids(&me), strings(&["driver", "p1", "p2", "p3"]));
    let keys = etcd_keys(&endpoint, "/actormesh/freeze/").await.unwrap();
    for key in ["nodes/p3", "names/counter-p3", "names/observer-p3"] {
        assert!(
            keys.contains(&format!("/actormesh/freeze/{key}")),
            "{key} missing: {keys:?}"
        );
    }
    let lease_after = etcd_lease_of(&endpoint, key)
        .await
        .unwrap()
        .expect("p3 registered");
    assert_ne!(
        lease_after, lease_before,
        "p3 registered again under a new lease"
    );
    // p3 itself sees everyone again.
    poll_until("p3 sees everyone", JOIN_TIMEOUT, POLL, || async {
        let seen = members_seen_by(&me, "p3")
            .await
            .map_err(|e| e.to_string())?;
        if seen == strings(&["driver", "p1", "p2", "p3"]) {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await
    .unwrap();
    stop_all(me, procs).await;
}

/// Counts of the background asks of the etcd restart scenario.
#[derive(Debug, Default)]
struct Load {
    ok: AtomicU64,
    failed: AtomicU64,
    failures: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Load {
    fn record(&self, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
                if failures.len() < 10 {
                    failures.push(e);
                }
            }
        }
    }
}

#[actix::test]
async fn asks_keep_working_while_etcd_restarts_and_the_cluster_converges_after() {
    let _serial = SERIAL.lock().await;
    let etcd = start_etcd();
    let endpoint = etcd.endpoint();
    let (me, mut procs) = start_cluster(&endpoint, "restart", &["p1", "p2", "p3"]).await;
    let c1 = counter(&me, "p1").await;
    let c2 = counter(&me, "p2").await;
    let mut events = me.subscribe();

    // Background load over existing links: the test node asks p1, and p2 asks p1 (relay).
    let load = Arc::new(Load::default());
    let task = {
        let load = load.clone();
        let (c1, c2) = (c1.clone(), c2.clone());
        actix_rt::spawn(async move {
            let until = Instant::now() + Duration::from_secs(120);
            for _ in 0..100_000 {
                if load.stop.load(Ordering::Relaxed) || Instant::now() > until {
                    return;
                }
                let direct = c1.ask(Add(1)).await.map(|_| ()).map_err(|e| e.to_string());
                load.record(direct.map_err(|e| format!("test -> p1: {e}")));
                let relayed = match c2
                    .ask(Relay {
                        counter: c1.clone(),
                        amount: 1,
                    })
                    .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("p2 -> p1: {e}")),
                    Err(e) => Err(format!("test -> p2: {e}")),
                };
                load.record(relayed);
                // Pacing, not a wait: a light, steady load that leaves lease renewals room.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let ok = |load: &Load| load.ok.load(Ordering::Relaxed);
    poll_until("the load runs", Duration::from_secs(10), POLL, || async {
        if ok(&load) >= 10 {
            Ok(())
        } else {
            Err(ok(&load))
        }
    })
    .await
    .unwrap();

    // etcd goes away for longer than the TTL.
    let mut etcd = etcd;
    etcd.stop();
    let outage = Instant::now();
    let ok_before = ok(&load);
    let err = poll_until(
        "lookups fail during the outage",
        Duration::from_secs(10),
        POLL,
        || {
            let me = &me;
            async move {
                match me.lookup::<Counter>("counter-p1").await {
                    Err(e @ Error::Discovery(_)) => Ok(e),
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await
    .unwrap();
    let min_outage = TTL + DETECTION_SLACK;
    poll_until(
        "asks keep working during the outage",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async {
            let done = ok(&load) - ok_before;
            if outage.elapsed() >= min_outage && done >= 20 {
                Ok(())
            } else {
                Err(done)
            }
        },
    )
    .await
    .unwrap();
    let during = ok(&load) - ok_before;
    assert_eq!(
        load.failed.load(Ordering::Relaxed),
        0,
        "asks failed while etcd was down: {:?}",
        load.failures.lock().unwrap()
    );
    eprintln!(
        "[restart] etcd down for {:?}: {during} asks succeeded meanwhile; a lookup failed with: {err}",
        outage.elapsed()
    );

    // etcd comes back (blocking start, off the runtime so the load keeps running).
    let etcd = tokio::task::spawn_blocking(move || etcd.start_again().map(|()| etcd))
        .await
        .unwrap()
        .expect("etcd starts again");
    let back = Instant::now();
    eprintln!(
        "[restart] etcd healthy again after an outage of {:?}",
        outage.elapsed()
    );

    // Converged without restarting anything: every name resolves and answers...
    for p in ["p1", "p2", "p3"] {
        poll_until(
            &format!("counter-{p} resolves after the restart"),
            Duration::from_secs(15),
            POLL,
            || {
                let me = &me;
                async move {
                    let c = me.lookup::<Counter>(&format!("counter-{p}")).await?;
                    c.ask_timeout(WhoAreYou, Duration::from_secs(2)).await
                }
            },
        )
        .await
        .unwrap();
    }
    eprintln!(
        "[restart] all names resolvable {:?} after etcd was back",
        back.elapsed()
    );
    // ...and a process joining now is seen by everyone and can be looked up.
    let p4 = NodeProcess::start_etcd(BIN, &endpoint, "restart", "p4")
        .await
        .unwrap();
    me.wait_for_node(&id("p4"), JOIN_TIMEOUT).await.unwrap();
    let c4 = counter(&me, "p4").await;
    assert_eq!(c4.ask(WhoAreYou).await.unwrap(), p4.pid);
    procs.push(p4);
    let all = strings(&["driver", "p1", "p2", "p3", "p4"]);
    for p in ["p1", "p2", "p3", "p4"] {
        poll_until(
            &format!("{p} sees everyone"),
            JOIN_TIMEOUT,
            POLL,
            || async {
                let seen = members_seen_by(&me, p).await.map_err(|e| e.to_string())?;
                if seen == all {
                    Ok(())
                } else {
                    Err(format!("{seen:?}"))
                }
            },
        )
        .await
        .unwrap();
    }
    eprintln!(
        "[restart] p4 joined and everyone sees everyone {:?} after etcd was back",
        back.elapsed()
    );

    load.stop.store(true, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("the load stops")
        .unwrap();
    let (total_ok, failed) = (ok(&load), load.failed.load(Ordering::Relaxed));
    eprintln!("[restart] load: {total_ok} asks succeeded, {failed} failed");
    assert_eq!(failed, 0, "{:?}", load.failures.lock().unwrap());
    // Nobody was declared down or left: the only change is p4 joining.
    let mut changes = Vec::new();
    for _ in 0..10_000 {
        match events.try_recv() {
            Ok(e) => changes.push(e),
            Err(_) => break,
        }
    }
    assert!(
        changes
            .iter()
            .all(|e| matches!(e, MembershipEvent::Up(info) if info.id == id("p4"))),
        "{changes:?}"
    );
    assert_eq!(member_ids(&me), all);
    stop_all(me, procs).await;
    drop(etcd);
}

#[actix::test]
async fn a_graceful_stop_removes_its_keys_at_once_and_is_seen_as_left() {
    let _serial = SERIAL.lock().await;
    let etcd = start_etcd();
    let endpoint = etcd.endpoint();
    let prefix = "/actormesh/graceful/";
    let (me, mut procs) = start_cluster(&endpoint, "graceful", &["p1", "p2"]).await;
    let c2 = counter(&me, "p2").await;
    assert_eq!(c2.ask(Add(1)).await.unwrap(), 1);
    // Everything p2 owns is there (the load report comes after its first interval).
    let expected: BTreeSet<String> = [
        "nodes/p2",
        "names/counter-p2",
        "names/observer-p2",
        "load/p2",
    ]
    .iter()
    .map(|k| format!("{prefix}{k}"))
    .collect();
    poll_until(
        "p2's keys are in etcd",
        Duration::from_secs(10),
        POLL,
        || async {
            let keys: BTreeSet<String> = etcd_keys(&endpoint, prefix)
                .await?
                .into_iter()
                .filter(|k| k.contains("p2"))
                .collect();
            if keys == expected {
                Ok(())
            } else {
                Err(format!("{keys:?}"))
            }
        },
    )
    .await
    .unwrap();

    let mut events = me.subscribe();
    let mut p2 = procs.remove(1);
    let stopping = Instant::now();
    let status = p2.stop(STOP_TIMEOUT).await.unwrap();
    assert!(status.success(), "{status:?}");
    let exited = stopping.elapsed();
    let keys = etcd_keys(&endpoint, prefix).await.unwrap();
    assert!(
        !keys.iter().any(|k| k.contains("p2")),
        "right after p2 exited: {keys:?}"
    );
    assert!(keys.contains(&format!("{prefix}nodes/p1")), "{keys:?}");
    let (event, seen) = wait_for_event(&mut events, TTL * 5, |e| e.node() == &id("p2"))
        .await
        .unwrap();
    eprintln!(
        "[graceful] p2 exited {exited:?} after its stdin closed; the test node saw {event:?} {:?} after",
        stopping.elapsed()
    );
    assert_eq!(
        event,
        MembershipEvent::Left(id("p2")),
        "seen before: {seen:?}"
    );
    let err = c2.ask(Add(1)).await.unwrap_err();
    assert!(matches!(err, Error::NodeDown { .. }), "{err:?}");
    assert!(matches!(
        me.lookup::<Counter>("counter-p2").await,
        Err(Error::NameNotFound(_))
    ));
    stop_all(me, procs).await;
}

#[actix::test]
async fn a_duplicate_node_id_is_refused_and_the_first_keeps_answering() {
    let _serial = SERIAL.lock().await;
    let etcd = start_etcd();
    let endpoint = etcd.endpoint();
    let (me, procs) = start_cluster(&endpoint, "dup", &["p1"]).await;
    let first = me.members().into_iter().find(|m| m.id == id("p1")).unwrap();

    let (status, stderr) = NodeSpec::new(BIN, "dup", "p1")
        .etcd(&endpoint)
        .run_to_exit(Duration::from_secs(20))
        .await
        .unwrap();
    eprintln!(
        "[dup] the second p1 exited with {status}: {}",
        stderr.trim()
    );
    assert!(!status.success(), "the duplicate must fail: {status}");
    assert!(stderr.contains("already used"), "stderr: {stderr}");

    // The first p1 is untouched: still the member, still holding its name, still answering.
    let c1 = counter(&me, "p1").await;
    assert_eq!(c1.ask(WhoAreYou).await.unwrap(), procs[0].pid);
    assert_eq!(c1.ask(Add(1)).await.unwrap(), 1);
    let now = me.members().into_iter().find(|m| m.id == id("p1")).unwrap();
    assert_eq!(now, first);
    let entries = etcd_entries(&endpoint, "/actormesh/dup/nodes/p1")
        .await
        .unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(
        entries[0].1.contains(&first.addr.to_string()),
        "{entries:?}"
    );
    stop_all(me, procs).await;
}

#[actix::test]
async fn two_clusters_on_one_etcd_never_see_each_other() {
    let _serial = SERIAL.lock().await;
    let etcd = start_etcd();
    let endpoint = etcd.endpoint();
    let me = etcd_test_node(&endpoint, "main", "driver").await.unwrap();
    let mut events = me.subscribe();

    // Cluster "other": o1, and a p1 (an id that cluster "main" uses too).
    let mut others = Vec::new();
    for p in ["o1", "p1"] {
        others.push(
            NodeProcess::start_etcd(BIN, &endpoint, "other", p)
                .await
                .unwrap(),
        );
    }
    let other_nodes = poll_until("cluster other is in etcd", JOIN_TIMEOUT, POLL, || async {
        let entries = etcd_entries(&endpoint, "/actormesh/other/nodes/").await?;
        if entries.len() == 2 {
            Ok(entries)
        } else {
            Err(format!("{entries:?}"))
        }
    })
    .await
    .unwrap();
    let other_p1 = &other_nodes
        .iter()
        .find(|(k, _)| k == "/actormesh/other/nodes/p1")
        .expect("other/p1 registered")
        .1;

    // Cluster "main": p1.
    let main_p1 = NodeProcess::start_etcd(BIN, &endpoint, "main", "p1")
        .await
        .unwrap();
    let (event, seen) = wait_for_event(&mut events, JOIN_TIMEOUT, |e| e.node() == &id("p1"))
        .await
        .unwrap();
    assert!(seen.0.is_empty(), "events about cluster other: {seen:?}");
    let MembershipEvent::Up(info) = event else {
        panic!("expected p1 up, got {event:?}")
    };
    assert_eq!(info.cluster, "main");
    assert!(
        !other_p1.contains(&info.addr.to_string()),
        "main's p1 ({}) must not be other's ({other_p1})",
        info.addr
    );
    assert_eq!(member_ids(&me), strings(&["driver", "p1"]));
    // Names are per cluster too: counter-p1 is main's p1; counter-o1 does not exist here.
    let c1 = counter(&me, "p1").await;
    assert_eq!(c1.ask(WhoAreYou).await.unwrap(), main_p1.pid);
    assert!(matches!(
        me.lookup::<Counter>("counter-o1").await,
        Err(Error::NameNotFound(_))
    ));
    // And the other cluster still sees only itself, from etcd's side.
    let keys = etcd_keys(&endpoint, "/actormesh/other/nodes/")
        .await
        .unwrap();
    assert_eq!(
        keys,
        strings(&["/actormesh/other/nodes/o1", "/actormesh/other/nodes/p1"])
    );
    let mut all = others;
    all.push(main_p1);
    stop_all(me, all).await;
}

/// The namespaces of this file's partition test.
const NETNS: NetnsPlan = NetnsPlan {
    prefix: "actormesh-part-",
    tag: "am",
    subnet: 213,
};

#[actix::test]
async fn a_partitioned_process_is_declared_down_within_the_ttl() {
    let _serial = SERIAL.lock().await;
    let Some(partition) = netns::partition_or_skip(NETNS) else {
        return;
    };
    let etcd = start_etcd();
    let endpoint = etcd.endpoint();
    let proxy =
        netns::forward_to_etcd(SocketAddr::from((partition.host_ip, 0)), etcd.client_port())
            .await
            .unwrap();
    let ns_endpoint = format!("http://{proxy}");

    // p1 listens on the host end of the veth (so p3 can reach it), p2 on loopback, p3 in the
    // namespace, reaching etcd through the forwarder.
    let host_ip = IpAddr::V4(partition.host_ip);
    let mut procs = Vec::new();
    for spec in [
        NodeSpec::new(BIN, "part", "p1")
            .etcd(&endpoint)
            .listen(host_ip),
        NodeSpec::new(BIN, "part", "p2").etcd(&endpoint),
        NodeSpec::new(BIN, "part", "p3")
            .etcd(&ns_endpoint)
            .listen(IpAddr::V4(partition.ns_ip))
            .netns(partition.name()),
    ] {
        let process = spec
            .start()
            .await
            .unwrap_or_else(|e| panic!("{} starts: {e}", spec.id()));
        procs.push(process);
    }
    let me = etcd_test_node(&endpoint, "part", "driver").await.unwrap();
    for p in ["p1", "p2", "p3"] {
        me.wait_for_node(&id(p), JOIN_TIMEOUT).await.unwrap();
    }
    let info = me.members().into_iter().find(|m| m.id == id("p3")).unwrap();
    assert_eq!(info.addr.ip(), IpAddr::V4(partition.ns_ip));
    // Traffic crosses the veth both ways before the cut.
    let c1 = counter(&me, "p1").await;
    let c3 = counter(&me, "p3").await;
    assert_eq!(c3.ask(WhoAreYou).await.unwrap(), procs[2].pid);
    let relayed = c3
        .ask(Relay {
            counter: c1.clone(),
            amount: 1,
        })
        .await
        .unwrap();
    assert_eq!(relayed, Ok(1), "p3 (namespace) asks p1 (host)");
    let relayed = c1
        .ask(Relay {
            counter: c3.clone(),
            amount: 1,
        })
        .await
        .unwrap();
    assert_eq!(relayed, Ok(1), "p1 (host) asks p3 (namespace)");

    let mut events = me.subscribe();
    partition.cut().unwrap();
    let cut = Instant::now();
    let (event, seen) = wait_for_event(&mut events, TTL * 5, |e| e.node() == &id("p3"))
        .await
        .unwrap();
    let detected = cut.elapsed();
    assert_eq!(
        event,
        MembershipEvent::Down(id("p3")),
        "seen before: {seen:?}"
    );
    assert!(
        detected <= TTL + DETECTION_SLACK,
        "p3 declared down {detected:?} after the cut (TTL {TTL:?})"
    );
    let mut by_process = Vec::new();
    for p in ["p1", "p2"] {
        let at = wait_gone_in(&me, p, "p3", cut + TTL + DETECTION_SLACK).await;
        by_process.push((p, at - cut));
    }
    eprintln!(
        "[partition] the test node saw p3 down {detected:?} after the cut; p1, p2 no longer listed it after {by_process:?}"
    );
    let asked = Instant::now();
    let err = c3.ask(Add(1)).await.unwrap_err();
    assert!(matches!(err, Error::NodeDown { .. }), "{err:?}");
    assert!(asked.elapsed() < PROMPT, "took {:?}", asked.elapsed());

    let mut p3 = procs.pop().unwrap();
    p3.kill().await.unwrap();
    stop_all(me, procs).await;
    drop(partition);
}
