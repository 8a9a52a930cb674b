//! Groups and client-side balancing across in-process nodes.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use actix::{Actor, Context, Handler, Message, ResponseFuture};
use actormesh::balance::{ConsistentHash, LeastOutstanding, PowerOfTwo};
use actormesh::prelude::*;
use actormesh::Saturation;
use common::{eventually, poll_once, Gate};
use serde::{Deserialize, Serialize};

/// Answers which worker handled it, when the worker's [`Pace`] lets it.
#[derive(Message, Serialize, Deserialize, Clone, Debug)]
#[rtype(result = "u64")]
struct Work;
impl RemoteMessage for Work {
    const NAME: &'static str = "groups.Work";
}
impl Idempotent for Work {}

/// Counts broadcasts.
#[derive(Message, Serialize, Deserialize, Clone, Debug)]
#[rtype(result = "()")]
struct Ping;
impl RemoteMessage for Ping {
    const NAME: &'static str = "groups.Ping";
}

/// How many pings it saw.
#[derive(Message, Serialize, Deserialize, Clone, Debug)]
#[rtype(result = "u64")]
struct Pings;
impl RemoteMessage for Pings {
    const NAME: &'static str = "groups.Pings";
}

/// How a worker answers [`Work`].
#[derive(Clone)]
enum Pace {
    /// At once.
    Now,
    /// After a fixed delay: a slow instance.
    After(Duration),
    /// When the test lets it through the gate.
    AtGate(Gate),
}

struct Worker {
    id: u64,
    pace: Pace,
    pings: u64,
}

impl Actor for Worker {
    type Context = Context<Self>;
}

impl Handler<Work> for Worker {
    type Result = ResponseFuture<u64>;
    fn handle(&mut self, _: Work, _: &mut Context<Self>) -> Self::Result {
        let (id, pace) = (self.id, self.pace.clone());
        Box::pin(async move {
            match pace {
                Pace::Now => {}
                // The balancing test's subject: an instance that is slow, not one that is held.
                Pace::After(delay) => tokio::time::sleep(delay).await,
                Pace::AtGate(gate) => gate.pass().await,
            }
            id
        })
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

/// Stops the worker.
#[derive(Message, Serialize, Deserialize, Clone, Debug)]
#[rtype(result = "()")]
struct Quit;
impl RemoteMessage for Quit {
    const NAME: &'static str = "groups.Quit";
}

impl Handler<Quit> for Worker {
    type Result = ();
    fn handle(&mut self, _: Quit, ctx: &mut Context<Self>) {
        actix::ActorContext::stop(ctx);
    }
}

actormesh::remote_actor!(Worker = "groups.Worker" { Work, Ping, Pings, Quit });

fn worker(id: u64) -> Worker {
    Worker {
        id,
        pace: Pace::Now,
        pings: 0,
    }
}

async fn cluster(n: usize) -> (MemoryDiscovery, Vec<Node>) {
    let discovery = MemoryDiscovery::new();
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(
            Node::builder()
                .cluster("groups")
                .node_id(format!("n{i}"))
                .discovery(discovery.clone())
                .start()
                .await
                .unwrap(),
        );
    }
    for a in &nodes {
        for b in &nodes {
            a.wait_for_node(b.id(), Duration::from_secs(5))
                .await
                .unwrap();
        }
    }
    (discovery, nodes)
}

/// 8 workers over the 3 nodes: worker i on node i % 3. Returns their references.
async fn eight_workers(nodes: &[Node]) -> Vec<ActorRef<Worker>> {
    let mut refs = Vec::new();
    for i in 0..8u64 {
        let node = &nodes[i as usize % nodes.len()];
        let w = node.spawn(worker(i));
        node.join_group("workers", &w).await.unwrap();
        refs.push(w);
    }
    refs
}

async fn shutdown(nodes: Vec<Node>) {
    for n in nodes {
        n.shutdown().await;
    }
}

#[actix::test]
async fn round_robin_spreads_evenly_and_broadcast_reaches_all() {
    let (_d, nodes) = cluster(3).await;
    eight_workers(&nodes).await;
    let group = nodes[0].group::<Worker>("workers").await.unwrap();
    assert_eq!(group.instances().len(), 8);
    let mut seen: HashMap<u64, u32> = HashMap::new();
    for _ in 0..800 {
        *seen.entry(group.ask(Work).await.unwrap()).or_default() += 1;
    }
    assert_eq!(seen.len(), 8);
    assert!(seen.values().all(|&n| n == 100), "exactly even: {seen:?}");
    assert_eq!(group.broadcast(Ping), 8);
    for target in group.instances() {
        assert_eq!(target.ask(Pings).await.unwrap(), 1);
    }
    group.tell(Ping).unwrap();
    shutdown(nodes).await;
}

#[actix::test]
async fn membership_follows_joins_stops_and_node_death() {
    let (discovery, nodes) = cluster(3).await;
    let refs = eight_workers(&nodes).await;
    let group = nodes[0].group::<Worker>("workers").await.unwrap();
    // A new instance joins live.
    let ninth = nodes[1].spawn(worker(8));
    nodes[1].join_group("workers", &ninth).await.unwrap();
    group
        .wait_for_instances(9, Duration::from_secs(5))
        .await
        .unwrap();
    // An instance that stops leaves by itself; an explicit leave works too.
    nodes[1].leave_group("workers", &ninth).await.unwrap();
    refs[3].ask(Quit).await.unwrap(); // worker 3, on node n0, stops
                                      // A group view has no change event to await: look at it.
    let ids = |group: &GroupRef<Worker>| -> Vec<_> {
        group
            .instances()
            .iter()
            .map(|r| (r.node().to_string(), r.id()))
            .collect()
    };
    group
        .wait_until(Duration::from_secs(5), |seen| seen.len() == 7)
        .await
        .unwrap_or_else(|e| panic!("the group shrinks to 7: {e}; saw {:?}", ids(&group)));
    // Node n2 dies: its instances (2 and 5) vanish from the group.
    assert!(discovery.fail("groups", nodes[2].id()));
    group
        .wait_until(Duration::from_secs(5), |seen| {
            seen.iter().all(|r| r.node() != nodes[2].id())
        })
        .await
        .unwrap_or_else(|e| panic!("n2's instances leave: {e}; saw {:?}", ids(&group)));
    assert_eq!(group.instances().len(), 5);
    shutdown(nodes).await;
}

#[actix::test]
async fn idempotent_callers_see_no_error_when_a_node_dies() {
    let (discovery, nodes) = cluster(3).await;
    eight_workers(&nodes).await;
    let group = nodes[0].group::<Worker>("workers").await.unwrap();
    let caller = group.clone();
    let (progress, mut answers) = tokio::sync::watch::channel(0);
    let load = tokio::spawn(async move {
        let mut answered = 0;
        for _ in 0..2_000 {
            caller
                .ask_idempotent(Work)
                .await
                .expect("idempotent asks never fail here");
            answered += 1;
            progress.send_replace(answered);
        }
        answered
    });
    tokio::time::timeout(Duration::from_secs(10), answers.wait_for(|&n| n >= 100))
        .await
        .expect("the load runs")
        .expect("the load goes on");
    // Node n1 crashes with asks in flight to its workers (1, 4, 7).
    assert!(discovery.fail("groups", nodes[1].id()));
    assert_eq!(load.await.unwrap(), 2_000);
    // Plain asks are never retried; they only reach live instances from now on.
    for _ in 0..50 {
        let id = group.ask(Work).await.unwrap();
        assert!(![1, 4, 7].contains(&id), "worker {id} is on the dead node");
    }
    shutdown(nodes).await;
}

#[actix::test]
async fn consistent_hashing_keeps_keys_on_their_instance() {
    let (_d, nodes) = cluster(3).await;
    eight_workers(&nodes).await;
    let config = GroupConfig::new().balancer(ConsistentHash::new());
    let group = nodes[0]
        .group_with::<Worker>("workers", config.clone())
        .await
        .unwrap();
    let other = nodes[2]
        .group_with::<Worker>("workers", config)
        .await
        .unwrap();
    let mut owner = HashMap::new();
    for key in 0..500u32 {
        owner.insert(key, group.ask_keyed(&key, Work).await.unwrap());
    }
    assert!(
        owner.values().collect::<HashSet<_>>().len() >= 6,
        "keys spread over the instances"
    );
    for key in 0..500u32 {
        assert_eq!(
            group.ask_keyed(&key, Work).await.unwrap(),
            owner[&key],
            "stable"
        );
        assert_eq!(
            other.ask_keyed(&key, Work).await.unwrap(),
            owner[&key],
            "same on every caller"
        );
    }
    // Adding a ninth instance moves about 1/9 of the keys, all of them to the newcomer.
    let ninth = nodes[1].spawn(worker(8));
    nodes[1].join_group("workers", &ninth).await.unwrap();
    group
        .wait_for_instances(9, Duration::from_secs(5))
        .await
        .unwrap();
    let mut moved = 0;
    for key in 0..500u32 {
        let now = group.ask_keyed(&key, Work).await.unwrap();
        if now != owner[&key] {
            assert_eq!(now, 8, "a key only ever moves to the new instance");
            moved += 1;
        }
    }
    assert!(
        (25..=90).contains(&moved),
        "moved {moved} of 500 (expected about 56)"
    );
    shutdown(nodes).await;
}

#[actix::test]
async fn least_outstanding_and_p2c_avoid_a_slow_instance() {
    let (_d, nodes) = cluster(2).await;
    let slow = nodes[1].spawn(Worker {
        id: 99,
        pace: Pace::After(Duration::from_millis(50)),
        pings: 0,
    });
    nodes[1].join_group("mixed", &slow).await.unwrap();
    for i in 0..3 {
        let w = nodes[i % 2].spawn(worker(i as u64));
        nodes[i % 2].join_group("mixed", &w).await.unwrap();
    }
    for config in [
        GroupConfig::new().balancer(LeastOutstanding::new()),
        GroupConfig::new().balancer(PowerOfTwo::new()),
    ] {
        let group = nodes[0]
            .group_with::<Worker>("mixed", config)
            .await
            .unwrap();
        group
            .wait_for_instances(4, Duration::from_secs(5))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let g = group.clone();
            tasks.push(tokio::spawn(async move {
                let mut slow_hits = 0;
                for _ in 0..25 {
                    if g.ask(Work).await.unwrap() == 99 {
                        slow_hits += 1;
                    }
                }
                slow_hits
            }));
        }
        let mut slow_hits = 0;
        for t in tasks {
            slow_hits += t.await.unwrap();
        }
        // Round robin would send a quarter (100 of 400) to the slow instance.
        assert!(
            slow_hits < 60,
            "{slow_hits} of 400 asks went to the slow instance"
        );
    }
    shutdown(nodes).await;
}

#[actix::test]
async fn saturation_waits_or_fails_as_configured() {
    let (_d, nodes) = cluster(1).await;
    let gate = Gate::closed();
    let w = nodes[0].spawn(Worker {
        id: 1,
        pace: Pace::AtGate(gate.clone()),
        pings: 0,
    });
    nodes[0].join_group("one", &w).await.unwrap();
    let failing = nodes[0]
        .group_with::<Worker>(
            "one",
            GroupConfig::new()
                .max_in_flight(1)
                .saturation(Saturation::Fail),
        )
        .await
        .unwrap();
    let busy = failing.clone();
    let first = tokio::spawn(async move { busy.ask(Work).await });
    gate.arrived(1).await; // the first ask is in flight, held in the handler
    let err = failing.ask(Work).await.unwrap_err();
    assert!(matches!(err, Error::Overloaded { .. }), "{err:?}");
    gate.let_through(1);
    assert_eq!(first.await.unwrap().unwrap(), 1);
    let waiting = nodes[0]
        .group_with::<Worker>("one", GroupConfig::new().max_in_flight(1))
        .await
        .unwrap();
    let busy = waiting.clone();
    let first = tokio::spawn(async move { busy.ask(Work).await });
    gate.arrived(2).await;
    let mut second = Box::pin(waiting.ask(Work));
    assert!(
        poll_once(&mut second).await.is_none(),
        "no room: the ask waits instead of failing"
    );
    gate.open();
    assert_eq!(second.await.unwrap(), 1, "waited for room");
    assert_eq!(first.await.unwrap().unwrap(), 1);
    let empty = nodes[0].group::<Worker>("nobody").await.unwrap();
    assert!(matches!(
        empty.ask(Work).await,
        Err(Error::NoInstances { .. })
    ));
    shutdown(nodes).await;
}

#[actix::test]
async fn a_failing_instance_is_ejected_and_probed_back() {
    let (_d, nodes) = cluster(1).await;
    // Never opened while the test runs: the instance is frozen.
    let freeze = Gate::closed();
    let frozen = nodes[0].spawn(Worker {
        id: 66,
        pace: Pace::AtGate(freeze.clone()),
        pings: 0,
    });
    let healthy = nodes[0].spawn(worker(1));
    nodes[0].join_group("flaky", &frozen).await.unwrap();
    nodes[0].join_group("flaky", &healthy).await.unwrap();
    let config = GroupConfig::new()
        .attempt_timeout(Duration::from_millis(20))
        .ejection(actormesh::Ejection {
            consecutive_failures: 2,
            base: Duration::from_millis(300),
            max: Duration::from_secs(1),
        });
    let group = nodes[0]
        .group_with::<Worker>("flaky", config)
        .await
        .unwrap();
    // Idempotent asks route around the frozen instance; after two timeouts it is ejected.
    for _ in 0..20 {
        assert_eq!(group.ask_idempotent(Work).await.unwrap(), 1);
    }
    // Ejected: plain asks all reach the healthy instance without waiting on the frozen one.
    let started = std::time::Instant::now();
    for _ in 0..10 {
        assert_eq!(
            group
                .ask_timeout(Work, Duration::from_secs(5))
                .await
                .unwrap(),
            1
        );
    }
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "no ask waited on the frozen instance"
    );
    // After the ejection, a probe goes to it again (and fails again): asks reach the healthy
    // instance until one is the probe.
    eventually(
        "the ejected instance is probed after its ejection",
        Duration::from_secs(5),
        || async {
            match group.ask_timeout(Work, Duration::from_millis(30)).await {
                Err(e) => Ok(e),
                Ok(id) => Err(format!("answered by {id}")),
            }
        },
    )
    .await;
    freeze.open();
    shutdown(nodes).await;
}

/// `GroupRef::wait_until` wakes on every change of the view (a join here, from another node)
/// and ends in `Error::Timeout` when the condition never holds.
#[actix::test]
async fn wait_until_follows_the_view_and_times_out() {
    let (_d, nodes) = cluster(2).await;
    let group = nodes[0].group::<Worker>("waited").await.unwrap();
    let joiner = {
        let node = nodes[1].clone();
        actix::spawn(async move {
            let w = node.spawn(worker(1));
            node.join_group("waited", &w).await.unwrap();
        })
    };
    group
        .wait_until(Duration::from_secs(5), |seen| {
            seen.len() == 1 && seen[0].node() == nodes[1].id()
        })
        .await
        .unwrap();
    joiner.await.unwrap();
    let never = group
        .wait_until(Duration::from_millis(50), |seen| seen.len() == 2)
        .await;
    assert!(matches!(never, Err(Error::Timeout { .. })), "{never:?}");
    shutdown(nodes).await;
}

/// A message that makes a moderator's handler panic (a "query of death").
#[derive(Message, Serialize, Deserialize, Clone, Debug)]
#[rtype(result = "u64")]
struct Poison;
impl RemoteMessage for Poison {
    const NAME: &'static str = "groups.Poison";
}
impl Idempotent for Poison {}

/// Handler panics of every moderator of the test below, by their `tag`.
static PANICS: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());

struct Moderator {
    tag: u64,
}

impl Actor for Moderator {
    type Context = Context<Self>;
}

impl Spawnable for Moderator {
    type Args = u64;
    fn from_args(tag: u64, _: &mut actormesh::SpawnContext<'_, Self>) -> Self {
        Moderator { tag }
    }
}

impl Handler<Work> for Moderator {
    type Result = u64;
    fn handle(&mut self, _: Work, _: &mut Context<Self>) -> u64 {
        self.tag
    }
}

/// Like [`Poison`], but the panic comes from the handler's future, in the actor's task.
#[derive(Message, Serialize, Deserialize, Clone, Debug)]
#[rtype(result = "u64")]
struct AsyncPoison;
impl RemoteMessage for AsyncPoison {
    const NAME: &'static str = "groups.AsyncPoison";
}
impl Idempotent for AsyncPoison {}

impl Handler<AsyncPoison> for Moderator {
    type Result = actix::ResponseActFuture<Self, u64>;
    fn handle(&mut self, _: AsyncPoison, _: &mut Context<Self>) -> Self::Result {
        use actix::{ActorFutureExt, WrapFuture};
        Box::pin(
            tokio::task::yield_now()
                .into_actor(self)
                .map(|_, me: &mut Moderator, _| {
                    PANICS.lock().unwrap().push(me.tag);
                    panic!("moderator {} choked on it later", me.tag)
                }),
        )
    }
}

impl Handler<Poison> for Moderator {
    type Result = u64;
    fn handle(&mut self, _: Poison, _: &mut Context<Self>) -> u64 {
        PANICS.lock().unwrap().push(self.tag);
        panic!("moderator {} cannot take this post", self.tag);
    }
}

actormesh::remote_actor!(Moderator = "groups.Moderator" { Work, Poison, AsyncPoison });

/// A message that crashes its handler reaches one instance only, its caller gets the panic as
/// a typed error at once, and no instance is ejected for it; `retry_on_panic` is opt-in and
/// bounded.
#[actix::test]
async fn a_message_that_panics_its_handler_is_not_retried_and_ejects_no_one() {
    let (_d, nodes) = cluster(3).await;
    let supervision = actormesh::Supervision::new(actormesh::Restart::OnFailure)
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .intensity(100, Duration::from_secs(60));
    let mut moderators = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let moderator = node.spawn_supervised::<Moderator>(i as u64, supervision);
        node.join_group("moderators", &moderator).await.unwrap();
        moderators.push(moderator);
    }
    // Asked directly, not through the group (whose health records are under test).
    let all_running = || async {
        for m in &moderators {
            eventually(
                "the moderator runs again",
                Duration::from_secs(5),
                || async { m.ask(Work).await },
            )
            .await;
        }
    };
    // Ejection after 2 failures in a row, so that blaming the instances would show.
    let config = GroupConfig::new().ejection(actormesh::Ejection {
        consecutive_failures: 2,
        base: Duration::from_secs(30),
        max: Duration::from_secs(30),
    });
    let group = nodes[0]
        .group_with::<Moderator>("moderators", config)
        .await
        .unwrap();
    group
        .wait_for_instances(3, Duration::from_secs(5))
        .await
        .unwrap();
    // Round robin: the first instance gets two poisoned asks in a row, which would eject it
    // if a panic were blamed on the instance.
    for round in 1..=4 {
        all_running().await;
        match group.ask_idempotent(Poison).await {
            Err(Error::HandlerPanicked {
                actor_type,
                message,
                ..
            }) => {
                assert_eq!(actor_type, "groups.Moderator");
                assert!(message.contains("cannot take this post"), "{message}");
            }
            other => panic!("expected the handler's panic, got {other:?}"),
        }
        assert_eq!(
            PANICS.lock().unwrap().len(),
            round,
            "one instance per poisoned ask: {:?}",
            PANICS.lock().unwrap()
        );
    }
    // The same when the panic comes from the handler's future (in the actor's task, after the
    // handler returned): one instance, the panic as the caller's error.
    PANICS.lock().unwrap().clear();
    for round in 1..=2 {
        all_running().await;
        match group.ask_idempotent(AsyncPoison).await {
            Err(Error::HandlerPanicked { message, .. }) => {
                assert!(message.contains("choked on it later"), "{message}")
            }
            other => panic!("expected the future's panic, got {other:?}"),
        }
        assert_eq!(PANICS.lock().unwrap().len(), round);
    }
    // Every instance still takes work: none was ejected.
    all_running().await;
    let mut seen = HashSet::new();
    for _ in 0..30 {
        seen.insert(group.ask_idempotent(Work).await.unwrap());
    }
    assert_eq!(seen.len(), 3, "every instance answers: {seen:?}");

    // Opted in: one more instance sees it, no more.
    PANICS.lock().unwrap().clear();
    let retrying = nodes[0]
        .group_with::<Moderator>(
            "moderators",
            GroupConfig::new().retries(2).retry_on_panic(1),
        )
        .await
        .unwrap();
    retrying
        .wait_for_instances(3, Duration::from_secs(5))
        .await
        .unwrap();
    all_running().await;
    assert!(matches!(
        retrying.ask_idempotent(Poison).await,
        Err(Error::HandlerPanicked { .. })
    ));
    let panicked = PANICS.lock().unwrap().clone();
    assert_eq!(panicked.len(), 2, "{panicked:?}");
    assert_ne!(panicked[0], panicked[1], "retried on another instance");
    shutdown(nodes).await;
}
