//! EtcdDiscovery against a real etcd started by the test (see `actormesh-testkit`).

mod common;

use std::time::Duration;

use actormesh::discovery::{EtcdConfig, EtcdDiscovery};
use actormesh::prelude::*;
use actormesh::{Discovery, DropReason, MembershipEvent};
use actormesh_testkit::Etcd;
use common::*;
use etcd_client::{EventType, GetOptions, WatchOptions};

fn etcd() -> Etcd {
    Etcd::start().expect("the etcd tests need a real etcd")
}

async fn discovery(etcd: &Etcd) -> EtcdDiscovery {
    let config = EtcdConfig::new([etcd.endpoint()]).lease_ttl(Duration::from_secs(2));
    EtcdDiscovery::connect(config)
        .await
        .expect("etcd reachable")
}

async fn node(etcd: &Etcd, cluster: &str, id: &str) -> Node {
    Node::builder()
        .cluster(cluster)
        .node_id(id)
        .discovery(discovery(etcd).await)
        .insecure_links()
        .spawnable::<Counter>()
        .load_report_interval(Duration::from_millis(200))
        .start()
        .await
        .expect("node starts")
}

/// Keys (as strings) under `prefix`, read straight from etcd.
async fn keys(etcd: &Etcd, prefix: &str) -> Vec<(String, String)> {
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    let response = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    response
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap().to_owned(),
                kv.value_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[actix::test]
async fn nodes_register_readable_json_and_see_each_other() {
    let etcd = etcd();
    let a = node(&etcd, "c", "a").await;
    let b = node(&etcd, "c", "b").await;
    a.wait_for_node(b.id(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(b.members().len(), 2, "b's initial read includes a");
    let entries = keys(&etcd, "/actormesh/c/nodes/").await;
    assert_eq!(entries.len(), 2);
    let (key, value) = &entries[0];
    assert_eq!(key, "/actormesh/c/nodes/a");
    let json: serde_json::Value = serde_json::from_str(value).unwrap();
    assert_eq!(json["addr"], a.addr().to_string());
    assert_eq!(json["state"], "up");
    assert!(json["started_at_ms"].as_u64().unwrap() > 0);
    // Asks work over the link as with any discovery.
    let counter = b.spawn(Counter::default());
    b.register_name("ctr", &counter).await.unwrap();
    let remote = a.lookup::<Counter>("ctr").await.unwrap();
    assert_eq!(remote.ask(Add(4)).await.unwrap(), 4);
    let names = keys(&etcd, "/actormesh/c/names/").await;
    assert_eq!(names.len(), 1);
    assert!(
        names[0].1.contains("\"actor_type\":\"test.Counter\""),
        "{names:?}"
    );
    b.shutdown().await;
    a.shutdown().await;
}

#[actix::test]
async fn duplicate_node_id_is_refused_and_clusters_are_isolated() {
    let etcd = etcd();
    let a = node(&etcd, "one", "same").await;
    let err = Node::builder()
        .cluster("one")
        .node_id("same")
        .discovery(discovery(&etcd).await)
        .insecure_links()
        .start()
        .await
        .unwrap_err();
    assert_eq!(err, Error::NodeIdTaken(NodeId::new("same")));
    assert!(err.to_string().contains("already used"));
    let other = node(&etcd, "two", "same").await;
    let third = node(&etcd, "one", "third").await;
    a.wait_for_node(third.id(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(a.members().len(), 2);
    assert_eq!(
        other.members().len(),
        1,
        "cluster two never sees cluster one"
    );
    third.shutdown().await;
    other.shutdown().await;
    a.shutdown().await;
}

#[actix::test]
async fn graceful_leave_removes_every_key_at_once_and_is_seen_as_left() {
    let etcd = etcd();
    let a = node(&etcd, "c", "a").await;
    let b = node(&etcd, "c", "b").await;
    a.wait_for_node(b.id(), Duration::from_secs(5))
        .await
        .unwrap();
    let counter = b.spawn(Counter::default());
    b.register_name("b-counter", &counter).await.unwrap();
    // The load report of b is published (interval 200 ms).
    let load = eventually(
        "b's load report in etcd",
        Duration::from_secs(5),
        || async {
            let load = keys(&etcd, "/actormesh/c/load/b").await;
            if load.is_empty() {
                Err(load)
            } else {
                Ok(load)
            }
        },
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&load[0].1).unwrap();
    assert_eq!(json["actors"], 1);
    let mut events = a.subscribe();
    b.shutdown().await;
    let left: Vec<_> = keys(&etcd, "/actormesh/c/")
        .await
        .into_iter()
        .filter(|(k, _)| k.ends_with("/b") || k.contains("b-counter"))
        .collect();
    assert!(left.is_empty(), "nothing of b remains: {left:?}");
    let event = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let event = events.recv().await.unwrap();
            if matches!(event, MembershipEvent::Left(_) | MembershipEvent::Down(_)) {
                return event;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(event, MembershipEvent::Left(NodeId::new("b")));
    assert!(matches!(
        a.lookup::<Counter>("b-counter").await,
        Err(Error::NameNotFound(_))
    ));
    a.shutdown().await;
}

#[actix::test]
async fn a_discovery_dropped_without_leaving_expires_and_is_seen_down() {
    // A process that dies stops renewing its lease. Dropping a discovery without `leave`
    // is the same: its lease is not revoked, it expires, and the others see `Down`.
    let etcd = etcd();
    let a = node(&etcd, "c", "a").await;
    let mut events = a.subscribe();
    let ghost = discovery(&etcd).await;
    let info = actormesh::NodeInfo {
        id: NodeId::new("ghost"),
        cluster: "c".into(),
        addr: "127.0.0.1:9".parse().unwrap(),
        protocol: 1,
        version: "test".into(),
        labels: Default::default(),
        started_at_ms: 1,
        spawnable: Vec::new(),
        admin: None,
    };
    let membership = ghost.join(&info).await.unwrap();
    assert_eq!(membership.members.len(), 2);
    a.wait_for_node(&NodeId::new("ghost"), Duration::from_secs(5))
        .await
        .unwrap();
    let died = std::time::Instant::now();
    drop(membership);
    drop(ghost);
    let down = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(MembershipEvent::Down(id)) = events.recv().await {
                if id.as_str() == "ghost" {
                    return died.elapsed();
                }
            }
        }
    })
    .await
    .expect("the ghost is seen down");
    // TTL 2 s; etcd checks expiry about every 500 ms.
    assert!(down <= Duration::from_secs(3), "seen down after {down:?}");
    assert_eq!(a.members().len(), 1);
    a.shutdown().await;
}

#[actix::test]
async fn etcd_restart_keeps_the_cluster_serving_and_converging() {
    let mut etcd = etcd();
    let a = node(&etcd, "c", "a").await;
    let b = node(&etcd, "c", "b").await;
    a.wait_for_node(b.id(), Duration::from_secs(5))
        .await
        .unwrap();
    let counter = b.spawn(Counter::default());
    b.register_name("kept", &counter).await.unwrap();
    let remote = a.lookup::<Counter>("kept").await.unwrap();
    etcd.stop();
    // During the outage: asks between live nodes keep working; discovery calls fail cleanly.
    for i in 1..=20 {
        assert_eq!(remote.ask(Add(1)).await.unwrap(), i);
    }
    let err = a.lookup::<Counter>("kept").await.unwrap_err();
    assert!(matches!(err, Error::Discovery(_)), "{err:?}");
    assert_eq!(a.members().len(), 2, "the last view is kept");
    etcd.start_again().unwrap();
    // After: registrations are still there and a newcomer is seen by everyone.
    let c = node(&etcd, "c", "c").await;
    a.wait_for_node(c.id(), Duration::from_secs(10))
        .await
        .unwrap();
    b.wait_for_node(c.id(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(c.members().len(), 3);
    let again = c.lookup::<Counter>("kept").await.unwrap();
    assert_eq!(again.ask(Add(1)).await.unwrap(), 21);
    c.shutdown().await;
    b.shutdown().await;
    a.shutdown().await;
}

#[actix::test]
async fn a_lost_lease_is_replaced_and_names_come_back() {
    let etcd = etcd();
    let a = node(&etcd, "c", "a").await;
    let b = node(&etcd, "c", "b").await;
    a.wait_for_node(b.id(), Duration::from_secs(5))
        .await
        .unwrap();
    let counter = b.spawn(Counter::default());
    b.register_name("survivor", &counter).await.unwrap();
    let mut events = a.subscribe();
    // Expire b's lease behind its back, as a long etcd outage or a freeze would.
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    let lease = client
        .get("/actormesh/c/nodes/b", None)
        .await
        .unwrap()
        .kvs()[0]
        .lease();
    client.lease_revoke(lease).await.unwrap();
    let mut saw_down = false;
    let came_back = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await {
                Ok(MembershipEvent::Down(id)) if id.as_str() == "b" => saw_down = true,
                Ok(MembershipEvent::Up(info)) if info.id.as_str() == "b" && saw_down => return,
                _ => {}
            }
        }
    })
    .await;
    assert!(
        came_back.is_ok(),
        "b re-registered (down first: {saw_down})"
    );
    let new_lease = client
        .get("/actormesh/c/nodes/b", None)
        .await
        .unwrap()
        .kvs()[0]
        .lease();
    assert_ne!(new_lease, lease, "a new lease");
    let found = eventually(
        "the name was registered again",
        Duration::from_secs(5),
        || a.lookup::<Counter>("survivor"),
    )
    .await;
    assert_eq!(
        found.ask(Add(2)).await.unwrap(),
        2,
        "a new link to the new incarnation"
    );
    b.shutdown().await;
    a.shutdown().await;
}

#[actix::test]
async fn credentials_are_used_and_missing_ones_are_a_clear_error() {
    let etcd = etcd();
    let mut admin = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    admin.user_add("root", "s3cret", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.auth_enable().await.unwrap();
    let config = EtcdConfig::new([etcd.endpoint()])
        .lease_ttl(Duration::from_secs(2))
        .credentials("root", "s3cret");
    let with = Node::builder()
        .cluster("auth")
        .discovery(EtcdDiscovery::connect(config).await.unwrap())
        .insecure_links()
        .start()
        .await
        .expect("a node with credentials joins");
    let config = EtcdConfig::new([etcd.endpoint()]).lease_ttl(Duration::from_secs(2));
    let refused = match EtcdDiscovery::connect(config).await {
        Err(e) => e,
        Ok(d) => Node::builder()
            .cluster("auth")
            .discovery(d)
            .insecure_links()
            .start()
            .await
            .unwrap_err(),
    };
    assert!(matches!(refused, Error::Discovery(_)), "{refused:?}");
    assert!(refused.to_string().contains("etcd"), "{refused}");
    let config = EtcdConfig::new([etcd.endpoint()]).credentials("root", "wrong");
    let wrong = match EtcdDiscovery::connect(config).await {
        Err(e) => e,
        Ok(d) => Node::builder()
            .cluster("auth")
            .discovery(d)
            .insecure_links()
            .start()
            .await
            .unwrap_err(),
    };
    assert!(matches!(wrong, Error::Discovery(_)), "{wrong:?}");
    with.shutdown().await;
}

#[actix::test]
async fn a_node_id_that_would_break_the_key_layout_is_refused() {
    let etcd = etcd();
    let err = Node::builder()
        .cluster("c")
        .node_id("rack/7")
        .discovery(discovery(&etcd).await)
        .insecure_links()
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("must not contain '/'"), "{err}");
    assert!(
        keys(&etcd, "/actormesh/").await.is_empty(),
        "nothing registered"
    );
}

#[actix::test]
async fn groups_on_etcd_follow_joins_and_node_death() {
    let etcd = etcd();
    let a = node(&etcd, "g", "a").await;
    let b = node(&etcd, "g", "b").await;
    a.wait_for_node(b.id(), Duration::from_secs(5))
        .await
        .unwrap();
    for node in [&a, &b] {
        for _ in 0..2 {
            let c = node.spawn(Counter::default());
            node.join_group("counters", &c).await.unwrap();
        }
    }
    let group = a.group::<Counter>("counters").await.unwrap();
    group
        .wait_for_instances(4, Duration::from_secs(5))
        .await
        .unwrap();
    let members = keys(&etcd, "/actormesh/g/groups/counters/members/").await;
    assert_eq!(members.len(), 4, "{members:?}");
    assert!(members[0].1.contains("\"weight\":1"));
    // Plain reads (no watch) see the same: the group, the members, a deployed spec; and a
    // group's status says why nothing runs it (no node here leads a controller).
    let reader = discovery(&etcd).await;
    assert_eq!(reader.read_group("g", "counters").await.unwrap().len(), 4);
    assert_eq!(reader.read_members("g").await.unwrap().len(), 2);
    let spec = actormesh::GroupSpec::new::<Counter>("archive", &0, 2).unwrap();
    a.deploy(&spec).await.unwrap();
    assert_eq!(reader.read_specs("g").await.unwrap(), vec![spec]);
    let status = b.group_status("archive").await.unwrap();
    assert_eq!((status.desired, status.running), (2, 0));
    assert_eq!(
        status.blocked,
        Some(actormesh::Blocked::NoController),
        "{status}"
    );
    for _ in 0..8 {
        group.ask(Add(1)).await.unwrap();
    }
    // b leaves: its two instances leave the group with it.
    b.shutdown().await;
    group
        .wait_until(Duration::from_secs(5), |seen| seen.len() == 2)
        .await
        .unwrap_or_else(|e| panic!("b's instances leave the group: {e}"));
    assert_eq!(keys(&etcd, "/actormesh/g/groups/").await.len(), 2);
    a.shutdown().await;
}

/// `read_names` and `read_groups` list what the nodes registered, this cluster's only, and
/// what a node owned goes with it.
#[actix::test]
async fn names_and_groups_are_listed_and_go_with_their_node() {
    let etcd = etcd();
    let a = node(&etcd, "lists", "a").await;
    let b = node(&etcd, "lists", "b").await;
    let other = node(&etcd, "lists-other", "a").await;
    let ca = a.spawn(Counter::default());
    let cb = b.spawn(Counter::default());
    a.register_name("zeta", &ca).await.unwrap();
    b.register_name("alpha", &cb).await.unwrap();
    let hidden = other.spawn(Counter::default());
    other.register_name("hidden", &hidden).await.unwrap();
    a.join_group("g", &ca).await.unwrap();
    b.join_group("g", &cb).await.unwrap();
    b.join_group("h", &cb).await.unwrap();
    let reader = discovery(&etcd).await;
    let names = reader.read_names("lists").await.unwrap();
    let listed: Vec<(&str, &str, u64)> = names
        .iter()
        .map(|(name, e)| (name.as_str(), e.node.as_str(), e.actor.get()))
        .collect();
    assert_eq!(
        listed,
        [("alpha", "b", cb.id().get()), ("zeta", "a", ca.id().get())],
        "sorted by name, this cluster's only"
    );
    assert_eq!(names[0].1.addr, b.addr());
    assert_eq!(
        Some(&names[1].1),
        reader.lookup_name("lists", "zeta").await.unwrap().as_ref(),
        "the listing agrees with a lookup"
    );
    let groups = reader.read_groups("lists").await.unwrap();
    assert_eq!(groups.keys().collect::<Vec<_>>(), ["g", "h"]);
    assert_eq!(groups["g"].len(), 2);
    assert_eq!(groups["h"].len(), 1);
    assert_eq!(groups["h"][0].node, *b.id());
    // b leaves: its name and its memberships go with it.
    b.shutdown().await;
    let names = reader.read_names("lists").await.unwrap();
    assert_eq!(names.len(), 1, "{names:?}");
    assert_eq!(names[0].0, "zeta");
    let groups = reader.read_groups("lists").await.unwrap();
    assert_eq!(groups.keys().collect::<Vec<_>>(), ["g"], "{groups:?}");
    assert_eq!(groups["g"].len(), 1);
    assert!(reader.read_names("nobody").await.unwrap().is_empty());
    a.shutdown().await;
    other.shutdown().await;
}

#[actix::test]
async fn one_leader_with_a_fencing_token_and_takeover_when_it_goes() {
    let etcd = etcd();
    let da = discovery(&etcd).await;
    let db = discovery(&etcd).await;
    // `a` is a bare registration, so that dropping its discovery is a crash (no node keeps
    // the discovery alive).
    let a_info = actormesh::NodeInfo {
        id: NodeId::new("a"),
        cluster: "lead".into(),
        addr: "127.0.0.1:9".parse().unwrap(),
        protocol: 1,
        version: "test".into(),
        labels: Default::default(),
        started_at_ms: 1,
        spawnable: Vec::new(),
        admin: None,
    };
    let a_membership = da.join(&a_info).await.unwrap();
    let b = Node::builder()
        .cluster("lead")
        .node_id("b")
        .discovery(db.clone())
        .insecure_links()
        .start()
        .await
        .unwrap();
    let mut first = da.campaign("lead", &a_info.id).await.unwrap();
    assert_eq!(
        db.leader("lead").await.unwrap(),
        Some((a_info.id.clone(), first.token))
    );
    // What happens to the leader key from now on, as etcd orders it.
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    let (_watcher, mut changes) = client
        .watch(
            "/actormesh/lead/leader",
            Some(WatchOptions::new().with_start_revision(first.token as i64 + 1)),
        )
        .await
        .unwrap();
    let waiting = tokio::spawn({
        let db = db.clone();
        let id = b.id().clone();
        async move { db.campaign("lead", &id).await }
    });
    // The leader crashes (its discovery stops renewing): b takes over within the TTL.
    let started = std::time::Instant::now();
    drop(a_membership);
    drop(da);
    let second = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("b leads within 10 s")
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    assert!(second.token > first.token, "fencing token grows");
    // b waited while a led: its lead starts after a's leader key went (with a's lease).
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let response = changes.message().await.unwrap().expect("the watch goes on");
            if let Some(event) = response.events().first() {
                let at = event.kv().expect("the event names its key").mod_revision();
                return (event.event_type(), at);
            }
        }
    })
    .await
    .expect("the leader key changed");
    assert_eq!(ended.0, EventType::Delete, "a's key went first");
    assert!(
        second.token as i64 > ended.1,
        "b leads from revision {}, a's lead ended at {}",
        second.token,
        ended.1
    );
    assert_eq!(
        db.leader("lead").await.unwrap(),
        Some((b.id().clone(), second.token))
    );
    let lost = tokio::time::timeout(Duration::from_secs(5), first.lost.wait_for(|l| *l)).await;
    assert!(lost.is_ok(), "the deposed leader learns it lost");
    // A graceful leave gives the leadership up at once.
    b.shutdown().await;
    assert_eq!(
        db.leader("lead").await.unwrap(),
        None,
        "the leader key goes with a graceful leave"
    );
}

#[actix::test]
async fn a_singleton_stops_itself_when_its_node_is_cut_off_from_etcd() {
    use actix::{Actor, Context, Handler, Message};
    #[derive(Message, serde::Serialize, serde::Deserialize)]
    #[rtype(result = "()")]
    struct Noop;
    impl RemoteMessage for Noop {
        const NAME: &'static str = "etcd-test.Noop";
    }
    struct Lone;
    impl Actor for Lone {
        type Context = Context<Self>;
    }
    impl Handler<Noop> for Lone {
        type Result = ();
        fn handle(&mut self, _: Noop, _: &mut Context<Self>) {}
    }
    impl Spawnable for Lone {
        type Args = ();
        fn from_args(_: (), _: &mut actormesh::SpawnContext<'_, Self>) -> Self {
            Lone
        }
    }
    actormesh::remote_actor!(Lone = "etcd-test.Lone" { Noop });

    let mut etcd = etcd();
    let a = Node::builder()
        .cluster("single")
        .node_id("a")
        .discovery(discovery(&etcd).await)
        .insecure_links()
        .spawnable::<Lone>()
        .controller(true)
        .start()
        .await
        .unwrap();
    a.deploy(&actormesh::GroupSpec::singleton::<Lone>("lone", &()).unwrap())
        .await
        .unwrap();
    let group = a.group::<Lone>("lone").await.unwrap();
    group
        .wait_for_instances(1, Duration::from_secs(10))
        .await
        .unwrap();
    let instance = group.instances()[0].clone();
    let (recipient, mut seen) = watcher();
    instance.watch(recipient);
    // Cut the node off from etcd: it can no longer renew its lease, so the singleton must
    // stop before the lease could expire (TTL 2 s from the last renewal).
    let cut = std::time::Instant::now();
    etcd.stop();
    let t = tokio::time::timeout(Duration::from_secs(5), seen.recv())
        .await
        .expect("the singleton stops by itself")
        .unwrap();
    assert_eq!(t.actor, instance.id());
    assert!(
        cut.elapsed() < Duration::from_secs(2),
        "stopped after {:?}, within the TTL",
        cut.elapsed()
    );
    etcd.start_again().unwrap();
    a.shutdown().await;
}

/// Keeps the node's thread busy (a long synchronous handler).
#[derive(actix::Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "()")]
struct Spin(u64);
impl RemoteMessage for Spin {
    const NAME: &'static str = "etcd-test.Spin";
}

struct Spinner;
impl actix::Actor for Spinner {
    type Context = actix::Context<Self>;
}
impl actix::Handler<Spin> for Spinner {
    type Result = ();
    fn handle(&mut self, msg: Spin, _: &mut actix::Context<Self>) {
        let until = std::time::Instant::now() + Duration::from_millis(msg.0);
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
    }
}
actormesh::remote_actor!(Spinner = "etcd-test.Spinner" { Spin });

/// The lease and create revision of `key`, read straight from etcd.
async fn lease_of(etcd: &Etcd, key: &str) -> (i64, i64) {
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    let response = client.get(key, None).await.unwrap();
    let kv = response.kvs().first().expect("the key exists");
    (kv.lease(), kv.create_revision())
}

/// A handler that keeps the node's only thread busy for three times the lease TTL does not get
/// the node declared down: its lease is kept alive from a thread of its own, so its key is
/// never deleted (same lease, same create revision) and the node never re-registers.
#[actix::test]
async fn a_busy_handler_does_not_get_its_node_declared_down() {
    let etcd = etcd();
    let busy = node(&etcd, "busy", "busy").await;
    let key = "/actormesh/busy/nodes/busy";
    let before = lease_of(&etcd, key).await;
    let spinner = busy.spawn(Spinner);
    // TTL 2 s (see `discovery`): 6 s of a thread that answers nothing else.
    spinner
        .ask_timeout(Spin(6_000), Duration::from_secs(30))
        .await
        .unwrap();
    let after = lease_of(&etcd, key).await;
    assert_eq!(
        before, after,
        "the node kept its lease and its registration through the busy period"
    );
    busy.shutdown().await;
}

/// Counts the asks it handled (the count is shared with the test).
struct Tally(std::sync::Arc<std::sync::atomic::AtomicU64>);
impl actix::Actor for Tally {
    type Context = actix::Context<Self>;
}
impl actix::Handler<Add> for Tally {
    type Result = u64;
    fn handle(&mut self, msg: Add, _: &mut actix::Context<Self>) -> u64 {
        self.0.fetch_add(msg.0, std::sync::atomic::Ordering::SeqCst) + msg.0
    }
}
actormesh::remote_actor!(Tally = "etcd-test.Tally" { Add });

/// Keeps its node's thread stuck (as SIGSTOP would) until the test releases it.
#[derive(actix::Message, serde::Serialize, serde::Deserialize, Debug)]
#[rtype(result = "()")]
struct Stick;
impl RemoteMessage for Stick {
    const NAME: &'static str = "etcd-test.Stick";
}
struct Stuck {
    stuck: std::sync::Arc<std::sync::atomic::AtomicBool>,
    release: std::sync::Arc<std::sync::atomic::AtomicBool>,
}
impl actix::Actor for Stuck {
    type Context = actix::Context<Self>;
}
impl actix::Handler<Stick> for Stuck {
    type Result = ();
    fn handle(&mut self, _: Stick, _: &mut actix::Context<Self>) {
        use std::sync::atomic::Ordering::SeqCst;
        self.stuck.store(true, SeqCst);
        let bound = std::time::Instant::now() + Duration::from_secs(30);
        while !self.release.load(SeqCst) && std::time::Instant::now() < bound {
            std::hint::spin_loop();
        }
        self.stuck.store(false, SeqCst);
    }
}
actormesh::remote_actor!(Stuck = "etcd-test.Stuck" { Stick });

/// Waits (bounded) until `done` holds, polling every 20 ms.
async fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tick.tick().await;
    }
}

/// Issue 10's zombie execution, in one process: node b's thread is stuck (as a frozen
/// process's would be) with asks from a waiting in its socket, while the cluster gives up on
/// b (its lease is revoked; a is told `NodeDown`). When b's thread resumes, b has learned from
/// etcd (on its own I/O thread) that the lease is gone: it refuses every ask it received under
/// it, handles none, and serves again as a new incarnation.
#[actix::test]
async fn a_node_declared_down_while_stuck_handles_nothing_it_received_before() {
    use std::sync::atomic::Ordering::SeqCst;
    use std::sync::atomic::{AtomicBool, AtomicU64};
    use std::sync::Arc;

    let etcd = etcd();
    let handled = Arc::new(AtomicU64::new(0));
    let stuck = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    // b on a thread of its own: a and the test go on while b's thread is stuck.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Node>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let b_thread = {
        let endpoint = etcd.endpoint().to_owned();
        let (handled, stuck, release) = (handled.clone(), stuck.clone(), release.clone());
        std::thread::spawn(move || {
            actix::System::new().block_on(async move {
                let config = EtcdConfig::new([endpoint]).lease_ttl(Duration::from_secs(2));
                let b = Node::builder()
                    .cluster("stuck")
                    .node_id("b")
                    .discovery(EtcdDiscovery::connect(config).await.unwrap())
                    .insecure_links()
                    .start()
                    .await
                    .unwrap();
                let tally = b.spawn(Tally(handled));
                b.register_name("tally", &tally).await.unwrap();
                let stuck = b.spawn(Stuck { stuck, release });
                b.register_name("stuck", &stuck).await.unwrap();
                ready_tx.send(b.clone()).unwrap();
                let _ = stop_rx.await;
                b.shutdown().await;
            })
        })
    };
    let b = tokio::task::spawn_blocking(move || ready_rx.recv_timeout(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("b starts");
    let a = node(&etcd, "stuck", "a").await;
    a.wait_for_node(b.id(), Duration::from_secs(5))
        .await
        .unwrap();
    let tally = a.lookup::<Tally>("tally").await.unwrap();
    assert_eq!(tally.ask(Add(0)).await.unwrap(), 0, "the link works");
    let key = "/actormesh/stuck/nodes/b";
    let (lease, _) = lease_of(&etcd, key).await;

    // b's thread gets stuck; five asks wait in its socket.
    a.lookup::<Stuck>("stuck")
        .await
        .unwrap()
        .tell(Stick)
        .unwrap();
    until("b's thread is stuck", Duration::from_secs(10), || {
        stuck.load(SeqCst)
    })
    .await;
    let asks: Vec<_> = (0..5)
        .map(|_| {
            let tally = tally.clone();
            tokio::spawn(async move { tally.ask_timeout(Add(1), Duration::from_secs(20)).await })
        })
        .collect();
    // The cluster gives up on b: its lease goes (as when etcd expires it during a freeze).
    let mut events = a.subscribe();
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    client.lease_revoke(lease).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(MembershipEvent::Down(id)) = events.recv().await {
                if id.as_str() == "b" {
                    return;
                }
            }
        }
    })
    .await
    .expect("a sees b down");
    for ask in asks {
        let outcome = ask.await.unwrap();
        assert!(
            matches!(outcome, Err(Error::NodeDown { .. })),
            "the caller was told NodeDown: {outcome:?}"
        );
    }
    // b registers again (from its etcd thread) while its actors' thread is still stuck.
    let mut relisted = false;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    for _ in 0..200 {
        tick.tick().await;
        let response = client.get(key, None).await.unwrap();
        if response.kvs().first().is_some_and(|kv| kv.lease() != lease) {
            relisted = true;
            break;
        }
    }
    assert!(relisted, "b registered again under a new lease");
    // b resumes: the five asks are read now, under the lost lease. None is handled.
    release.store(true, SeqCst);
    until(
        "b refused or handled the asks",
        Duration::from_secs(10),
        || b.stats().dropped(DropReason::Fenced) >= 5 || handled.load(SeqCst) > 0,
    )
    .await;
    assert_eq!(
        handled.load(SeqCst),
        0,
        "no ask received under the lost lease was handled"
    );
    assert_eq!(b.stats().dropped(DropReason::Fenced), 5, "all five refused");
    // The new incarnation serves new links.
    let again = eventually(
        "the name is registered again",
        Duration::from_secs(10),
        || a.lookup::<Tally>("tally"),
    )
    .await;
    assert_eq!(again.ask(Add(1)).await.unwrap(), 1);
    a.shutdown().await;
    let _ = stop_tx.send(());
    tokio::task::spawn_blocking(move || b_thread.join())
        .await
        .unwrap()
        .unwrap();
}

/// Secure by default: a node on etcd (a cluster that spans machines) does not start with
/// plaintext links unless told so, and says how to fix it.
#[actix::test]
async fn a_node_on_etcd_needs_tls_or_an_explicit_opt_out() {
    let etcd = etcd();
    let err = Node::builder()
        .cluster("secure-default")
        .node_id("plain")
        .discovery(discovery(&etcd).await)
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Start(text) if text.contains("NodeBuilder::tls") && text.contains("insecure_links")),
        "{err}"
    );
    let dev = Node::builder()
        .cluster("secure-default")
        .node_id("dev")
        .discovery(discovery(&etcd).await)
        .insecure_links()
        .start()
        .await
        .expect("an explicit opt-out starts");
    dev.shutdown().await;
}
