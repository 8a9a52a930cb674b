//! A singleton under repeated SIGKILLs of its host: never two live instances, checked by a
//! log the instances write themselves (not by the framework's word).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actix::{Actor, Context, Handler, Message};
use actormesh::discovery::{EtcdConfig, EtcdDiscovery};
use actormesh::{GroupSpec, Node, RemoteMessage, Spawnable};
use actormesh_cluster_tests::poll_until;
use actormesh_testkit::Etcd;
use serde::{Deserialize, Serialize};

const BIN: &str = env!("CARGO_BIN_EXE_singleton-node");

/// Pause between two looks at a polled condition.
const POLL: Duration = Duration::from_millis(20);
/// Heartbeats the last instance logs before the log is read (one every 20 ms).
const LAST_BEATS: usize = 10;

/// The test's view of the beacon type the nodes run (same stable names).
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "u32")]
struct Pid;
impl RemoteMessage for Pid {
    const NAME: &'static str = "singleton.Pid";
}

struct Beacon;
impl Actor for Beacon {
    type Context = Context<Self>;
}
impl Handler<Pid> for Beacon {
    type Result = u32;
    fn handle(&mut self, _: Pid, _: &mut Context<Self>) -> u32 {
        std::process::id()
    }
}
impl Spawnable for Beacon {
    type Args = String;
    fn from_args(_: String, _: &mut actormesh::SpawnContext<'_, Self>) -> Self {
        Beacon
    }
}
actormesh::remote_actor!(Beacon = "singleton.Beacon" { Pid });

struct Proc {
    id: String,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(etcd: &str, id: &str, log: &str) -> Proc {
    let mut child = Command::new(BIN)
        .args(["single", id, etcd, log])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start singleton-node");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("READY line");
    assert_eq!(line.trim(), "READY", "{id} did not start");
    Proc {
        id: id.to_owned(),
        child,
    }
}

#[actix::test]
async fn never_two_live_singletons_under_repeated_kills() {
    let etcd = Etcd::start().expect("the cluster tests need a real etcd");
    let endpoint = etcd.endpoint();
    let log = std::env::temp_dir().join(format!("actormesh-singleton-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let log_path = log.display().to_string();
    let mut procs: Vec<Proc> = (1..=3)
        .map(|i| start(&endpoint, &format!("s{i}"), &log_path))
        .collect();
    let discovery = EtcdDiscovery::connect(
        EtcdConfig::new([endpoint.as_str()]).lease_ttl(Duration::from_secs(2)),
    )
    .await
    .unwrap();
    let observer = Node::builder()
        .cluster("single")
        .node_id("observer")
        .discovery(discovery)
        .insecure_links()
        .start()
        .await
        .unwrap();
    for p in &procs {
        observer
            .wait_for_node(&p.id.as_str().into(), Duration::from_secs(10))
            .await
            .unwrap();
    }
    observer
        .deploy(&GroupSpec::singleton::<Beacon>("beacon", &log_path).unwrap())
        .await
        .unwrap();
    let group = observer.group::<Beacon>("beacon").await.unwrap();
    group
        .wait_for_instances(1, Duration::from_secs(10))
        .await
        .unwrap();

    let mut last_pid = 0;
    for round in 0..4 {
        let host = group.instances()[0].node().clone();
        let index = procs
            .iter()
            .position(|p| p.id == host.as_str())
            .expect("the host is one of ours");
        let mut victim = procs.remove(index);
        victim.child.kill().unwrap();
        let _ = victim.child.wait();
        let killed = Instant::now();
        // Wait until the singleton runs elsewhere (the dead host's lease must expire first).
        last_pid = poll_until(
            &format!("round {round}: the singleton comes back"),
            Duration::from_secs(15),
            POLL,
            || async {
                match group.instances().as_slice() {
                    [one] if one.node() != &host => one.ask(Pid).await.map_err(|e| e.to_string()),
                    seen => Err(format!("{} instances", seen.len())),
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        eprintln!("round {round}: singleton back after {:?}", killed.elapsed());
        procs.push(start(&endpoint, &format!("s{}", round + 4), &log_path));
    }
    // Let the last instance beat a little (its life then has a span that another instance
    // could overlap), then read the log the instances wrote.
    poll_until(
        "the last instance beats",
        Duration::from_secs(10),
        POLL,
        || async {
            let text = std::fs::read_to_string(&log).map_err(|e| e.to_string())?;
            let pid = last_pid.to_string();
            let beats = text
                .lines()
                .filter(|line| line.split_whitespace().next() == Some(pid.as_str()))
                .count();
            if beats >= LAST_BEATS {
                Ok(())
            } else {
                Err(format!("{beats} beats of pid {pid}"))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    observer.shutdown().await;
    drop(procs);
    let text = std::fs::read_to_string(&log).unwrap();
    let mut spans: BTreeMap<(u32, u64), (u128, u128)> = BTreeMap::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [pid, incarnation, at] = parts.as_slice() else {
            continue;
        };
        let key = (pid.parse().unwrap(), incarnation.parse().unwrap());
        let at: u128 = at.parse().unwrap();
        let span = spans.entry(key).or_insert((at, at));
        span.0 = span.0.min(at);
        span.1 = span.1.max(at);
    }
    let mut lives: Vec<(u128, u128)> = spans.values().copied().collect();
    lives.sort();
    assert!(
        lives.len() >= 5,
        "five lives expected (one per kill and the last): {lives:?}"
    );
    for pair in lives.windows(2) {
        assert!(
            pair[1].0 > pair[0].1,
            "two singletons were alive at once: {:?} and {:?}",
            pair[0],
            pair[1]
        );
    }
    let _ = std::fs::remove_file(&log);
}
