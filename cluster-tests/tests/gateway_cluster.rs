//! HTTP load through two gateway processes to a group over three node processes, one node
//! SIGKILLed mid-run: the idempotent route sees no 5xx once the failure is detected, and no
//! request outlives its deadline.
//!
//! Real processes on a real etcd (started by the test, lease TTL 2 s): three `cluster-node
//! --workers 1` processes run the group `workers`; two `gateway-node` processes serve
//! `GET /work/{key}` (an `ask_idempotent` to the group); the test process is the HTTP client
//! (hyper) and also a node of the cluster, to see when the cluster declares the killed node
//! down.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actormesh::{MembershipEvent, NodeId};
use actormesh_cluster_tests::{etcd_test_node, NodeProcess, NodeSpec, TTL};
use actormesh_testkit::Etcd;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Notify;
use tokio::time::Instant;

const NODE_BIN: &str = env!("CARGO_BIN_EXE_cluster-node");
const GATEWAY_BIN: &str = env!("CARGO_BIN_EXE_gateway-node");

/// The deadline each request asks for (`X-Request-Timeout`).
const DEADLINE: Duration = Duration::from_secs(3);
/// A request "hangs" when it has no answer this long after its deadline.
const HANG_MARGIN: Duration = Duration::from_secs(1);
/// Concurrent HTTP clients (each sends one request at a time, alternating gateways).
const CLIENTS: usize = 8;
/// The gateways' own view of the cluster lags the test node's by at most this (each watches
/// etcd on its own; the machine may be busy).
const VIEW_SLACK: Duration = Duration::from_millis(500);
/// How many requests the load sends after the killed node was declared down (and the
/// gateways' views settled) before it stops.
const AFTER_DETECTION: usize = 800;

/// One request's outcome.
#[derive(Debug, Clone)]
struct Outcome {
    sent: Instant,
    latency: Duration,
    /// The HTTP status, or 0 when no answer came (connection error or client timeout).
    status: u16,
    node: Option<String>,
}

/// Waits (up to `limit`) until `done` holds for the outcomes, looking again at every answer.
async fn wait_for(
    progress: &Notify,
    outcomes: &Mutex<Vec<Outcome>>,
    limit: Duration,
    what: &str,
    mut done: impl FnMut(&[Outcome]) -> bool,
) {
    let deadline = Instant::now() + limit;
    loop {
        let changed = progress.notified();
        let mut changed = std::pin::pin!(changed);
        changed.as_mut().enable();
        if done(&outcomes.lock().unwrap()) {
            return;
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            panic!("{what}: not within {limit:?}");
        }
    }
}

async fn client_loop(
    index: usize,
    gateways: Arc<Vec<String>>,
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    progress: Arc<Notify>,
) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let deadline_header = format!("{}ms", DEADLINE.as_millis());
    // Bounded in count as well as by `stop`.
    for n in 0..1_000_000u64 {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let gateway = &gateways[(index + n as usize) % gateways.len()];
        let request = http::Request::get(format!("http://{gateway}/work/{n}"))
            .header("x-request-timeout", &deadline_header)
            .body(Empty::new())
            .expect("a request");
        let sent = Instant::now();
        let answer = tokio::time::timeout(DEADLINE + HANG_MARGIN, async {
            let response = client.request(request).await.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, body))
        })
        .await;
        let (status, node) = match answer {
            Ok(Ok((status, body))) => {
                let node = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["node"].as_str().map(str::to_owned));
                (status, node)
            }
            Ok(Err(_)) | Err(_) => (0, None),
        };
        outcomes.lock().unwrap().push(Outcome {
            sent,
            latency: sent.elapsed(),
            status,
            node,
        });
        progress.notify_waiters();
    }
}

#[actix::test]
async fn a_killed_node_behind_two_gateways_costs_no_5xx_after_detection_and_no_hang() {
    let etcd = Etcd::start().expect("the gateway cluster test needs a real etcd");
    let endpoint = etcd.endpoint();
    let cluster = "gwkill";
    let mut workers = Vec::new();
    for id in ["w1", "w2", "w3"] {
        let process = NodeSpec::new(NODE_BIN, cluster, id)
            .etcd(&endpoint)
            .ttl(TTL)
            .workers(1)
            .start()
            .await
            .unwrap_or_else(|e| panic!("{id} starts: {e}"));
        workers.push(process);
    }
    let mut gateways: Vec<NodeProcess> = Vec::new();
    let mut addresses = Vec::new();
    for id in ["gw1", "gw2"] {
        let process = NodeSpec::new(GATEWAY_BIN, cluster, id)
            .etcd(&endpoint)
            .ttl(TTL)
            .start()
            .await
            .unwrap_or_else(|e| panic!("{id} starts: {e}"));
        addresses.push(String::from_utf8(process.counter.clone()).expect("an address"));
        gateways.push(process);
    }
    let me = etcd_test_node(&endpoint, cluster, "observer")
        .await
        .expect("the test node joins");
    let mut events = me.subscribe();

    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let progress = Arc::new(Notify::new());
    let addresses = Arc::new(addresses);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            tokio::spawn(client_loop(
                i,
                addresses.clone(),
                stop.clone(),
                outcomes.clone(),
                progress.clone(),
            ))
        })
        .collect();

    // Warm up: every worker answered, 300 answers in all.
    wait_for(
        &progress,
        &outcomes,
        Duration::from_secs(20),
        "the load reaches all three workers",
        |outcomes| {
            let seen: std::collections::BTreeSet<&str> = outcomes
                .iter()
                .filter(|o| o.status == 200)
                .filter_map(|o| o.node.as_deref())
                .collect();
            seen.len() == 3 && outcomes.len() >= 300
        },
    )
    .await;

    let killed_at = Instant::now();
    workers[1].signal("KILL").expect("SIGKILL w2");
    let victim = NodeId::new("w2");
    let detected_at = tokio::time::timeout(TTL + Duration::from_secs(5), async {
        loop {
            match events.recv().await {
                Ok(MembershipEvent::Down(id)) | Ok(MembershipEvent::Left(id)) if id == victim => {
                    return Instant::now();
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("membership events ended: {e}"),
            }
        }
    })
    .await
    .expect("the cluster declares the killed node down within the TTL + 5 s");
    // Keep the load on after detection.
    let settled = detected_at + VIEW_SLACK;
    wait_for(
        &progress,
        &outcomes,
        Duration::from_secs(30),
        "the load goes on after detection",
        |outcomes| outcomes.iter().filter(|o| o.sent >= settled).count() >= AFTER_DETECTION,
    )
    .await;
    stop.store(true, Ordering::Release);
    for client in clients {
        client.await.expect("a client loop");
    }

    let outcomes = outcomes.lock().unwrap().clone();
    let mut before: BTreeMap<u16, u64> = BTreeMap::new();
    let mut during: BTreeMap<u16, u64> = BTreeMap::new();
    let mut after: BTreeMap<u16, u64> = BTreeMap::new();
    let mut latencies_after = Vec::new();
    let mut worst = Duration::ZERO;
    for o in &outcomes {
        worst = worst.max(o.latency);
        let bucket = if o.sent < killed_at {
            &mut before
        } else if o.sent < settled {
            &mut during
        } else {
            latencies_after.push(o.latency);
            &mut after
        };
        *bucket.entry(o.status).or_default() += 1;
    }
    latencies_after.sort();
    let p99 = latencies_after
        .get(latencies_after.len().saturating_sub(1) * 99 / 100)
        .copied()
        .unwrap_or_default();
    eprintln!(
        "[gateway-kill] {} requests; detection {:?} after the kill; statuses before the kill {before:?}, \
         kill..detection+{VIEW_SLACK:?} {during:?}, after {after:?}; worst latency {worst:?}, p99 after {p99:?}",
        outcomes.len(),
        detected_at - killed_at
    );
    let server_errors_after: u64 = after
        .iter()
        .filter(|(status, _)| **status >= 500)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        server_errors_after, 0,
        "5xx answers after the failure was detected: {after:?}"
    );
    let no_answer: u64 = [&before, &during, &after]
        .iter()
        .map(|b| b.get(&0).copied().unwrap_or(0))
        .sum();
    assert_eq!(
        no_answer, 0,
        "requests without an answer by their deadline + {HANG_MARGIN:?}"
    );
    assert!(worst <= DEADLINE + HANG_MARGIN, "worst latency {worst:?}");
    assert!(
        after.get(&200).copied().unwrap_or(0) >= AFTER_DETECTION as u64,
        "the load went on after detection: {after:?}"
    );
    let nodes_after: std::collections::BTreeSet<String> = outcomes
        .iter()
        .filter(|o| o.sent >= settled)
        .filter_map(|o| o.node.clone())
        .collect();
    assert!(!nodes_after.contains("w2"), "answers from the dead node");

    // Graceful stops: the gateways drain, the workers leave.
    for mut process in gateways.into_iter().chain(workers.into_iter()) {
        if process.id == "w2" {
            continue;
        }
        drop(process.child.stdin.take());
        let status = process
            .wait_exit(Duration::from_secs(15))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(status.success(), "{} exited with {status}", process.id);
    }
    me.shutdown().await;
}
