//! [`Controller::step`] driven directly: scripts of (time, event, expected orders).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::core::model::Autoscale;
use crate::core::placement::{Candidate, Constraints};

const FENCE: u64 = 7;

fn ms(n: u64) -> Time {
    Duration::from_millis(n)
}

fn node(i: u32) -> NodeInfo {
    NodeInfo {
        id: NodeId::new(format!("n{i}")),
        cluster: "c".to_owned(),
        addr: ([127, 0, 0, 1], 7000 + i as u16).into(),
        protocol: 1,
        version: "test".to_owned(),
        labels: BTreeMap::new(),
        started_at_ms: 0,
        spawnable: vec!["T".to_owned()],
        admin: None,
    }
}

fn id(i: u32) -> NodeId {
    NodeId::new(format!("n{i}"))
}

fn member(n: u32, actor: u64) -> GroupMember {
    GroupMember {
        node: id(n),
        addr: node(n).addr,
        actor: ActorId(actor),
        actor_type: "T".to_owned(),
        weight: 1,
    }
}

fn spec(group: &str, replicas: u32) -> GroupSpec {
    GroupSpec {
        group: group.to_owned(),
        actor_type: "T".to_owned(),
        args: vec![1, 2],
        replicas,
        placement: PlacementPolicy::RoundRobin,
        selector: BTreeMap::new(),
        anti_affinity: None,
        max_per_node: None,
        singleton: false,
        autoscale: None,
    }
}

fn spawn(n: u32, group: &str) -> Order {
    Order::Spawn {
        node: id(n),
        group: group.to_owned(),
        actor_type: "T".to_owned(),
        args: vec![1, 2],
        singleton: false,
        fence: FENCE,
    }
}

fn retire(n: u32, group: &str, actor: u64) -> Order {
    Order::Retire {
        node: id(n),
        group: group.to_owned(),
        actor: ActorId(actor),
        fence: FENCE,
    }
}

fn follow(group: &str) -> Order {
    Order::Follow {
        group: group.to_owned(),
    }
}

fn members(group: &str, members: Vec<GroupMember>) -> Event {
    Event::GroupMembers {
        group: group.to_owned(),
        members,
    }
}

fn joined(group: &str, n: u32, actor: u64) -> Event {
    Event::GroupJoined {
        group: group.to_owned(),
        member: member(n, actor),
    }
}

fn left(group: &str, n: u32, actor: u64) -> Event {
    Event::GroupLeft {
        group: group.to_owned(),
        member: member(n, actor),
    }
}

fn spawned(n: u32, group: &str, actor: u64) -> Event {
    Event::Spawned {
        group: group.to_owned(),
        node: id(n),
        actor: ActorId(actor),
    }
}

fn load(inflight: u64) -> LoadReport {
    LoadReport {
        actors: 0,
        inflight_asks: inflight,
        send_queue_bytes: 0,
        asks_per_second: 0.0,
        at_ms: 0,
    }
}

/// Steps `ctl` through `script`, checking the orders of every step.
fn run(ctl: &mut Controller, script: Vec<(u64, Event, Vec<Order>)>) {
    for (i, (at, event, expected)) in script.into_iter().enumerate() {
        let shown = format!("{event:?}");
        let orders = ctl.step(event, ms(at));
        assert_eq!(orders, expected, "step {i} at {at} ms: {shown}");
    }
}

/// A controller that knows nodes `n0..n{count}`.
fn with_nodes(count: u32) -> Controller {
    let mut ctl = Controller::new(FENCE, BTreeMap::new());
    for i in 0..count {
        assert_eq!(ctl.step(Event::MemberUp(node(i)), ms(0)), vec![]);
    }
    ctl
}

#[test]
fn a_new_spec_is_followed_once_then_spawned_from_its_members() {
    let mut ctl = with_nodes(3);
    run(
        &mut ctl,
        vec![
            (0, Event::SpecPut(spec("g", 3)), vec![follow("g")]),
            // Nothing is decided before the members are known.
            (100, Event::Tick, vec![]),
            (
                200,
                members("g", vec![]),
                vec![spawn(0, "g"), spawn(1, "g"), spawn(2, "g")],
            ),
            // Asked for: pending, not asked again.
            (300, Event::Tick, vec![]),
            (400, Event::SpecPut(spec("g", 3)), vec![]),
            (500, joined("g", 0, 1), vec![]),
        ],
    );
}

#[test]
fn existing_members_count_and_only_the_gap_is_spawned() {
    let mut ctl = with_nodes(3);
    run(
        &mut ctl,
        vec![
            (0, Event::SpecPut(spec("g", 3)), vec![follow("g")]),
            (
                10,
                members("g", vec![member(0, 4), member(1, 9)]),
                vec![spawn(2, "g")],
            ),
        ],
    );
}

#[test]
fn a_dead_nodes_members_are_replaced_on_the_survivors() {
    let mut ctl = with_nodes(3);
    run(
        &mut ctl,
        vec![
            (0, Event::SpecPut(spec("g", 3)), vec![follow("g")]),
            (
                10,
                members("g", vec![member(0, 1), member(1, 1), member(2, 1)]),
                vec![],
            ),
            (20, Event::MemberDown(id(1)), vec![spawn(0, "g")]),
            // The node's leaving members were already dropped: nothing more.
            (30, left("g", 1, 1), vec![]),
            (40, Event::MemberLeft(id(2)), vec![spawn(0, "g")]),
        ],
    );
}

/// Found by the simulation: a node cut from etcd lost its lease, registered again and put its
/// replica back; the controller saw the replica join before it saw the node come back up. It
/// used to forget members of nodes it did not see up, and so never counted that replica again
/// (one replica too many, for good).
#[test]
fn a_member_seen_before_its_node_is_up_counts_once_the_node_is() {
    let mut ctl = with_nodes(2);
    run(
        &mut ctl,
        vec![
            (0, Event::SpecPut(spec("g", 2)), vec![follow("g")]),
            (0, members("g", vec![member(0, 1), member(1, 1)]), vec![]),
            (10, Event::MemberDown(id(1)), vec![spawn(0, "g")]),
            (20, left("g", 1, 1), vec![]),
            (30, joined("g", 1, 1), vec![]),
            (40, Event::MemberUp(node(1)), vec![]),
            (50, joined("g", 0, 2), vec![]),
            (60, spawned(0, "g", 2), vec![retire(0, "g", 2)]),
        ],
    );
}

/// Found by the simulation: a singleton spawn asked of a node that then went down was
/// carried out when the node came back (it had only lost its lease), while the controller,
/// which had dropped the ask with the node, had already started the singleton elsewhere.
#[test]
fn a_singleton_spawn_asked_of_a_node_that_went_down_is_awaited() {
    let mut ctl = with_nodes(2);
    let mut single = spec("s", 1);
    single.singleton = true;
    let on = |n| Order::Spawn {
        node: id(n),
        group: "s".to_owned(),
        actor_type: "T".to_owned(),
        args: vec![1, 2],
        singleton: true,
        fence: FENCE,
    };
    let failed = Event::SpawnFailed {
        group: "s".to_owned(),
        node: id(0),
        unable: false,
    };
    run(
        &mut ctl,
        vec![
            (0, Event::SpecPut(single), vec![follow("s")]),
            (0, members("s", vec![]), vec![on(0)]),
            (10, Event::MemberDown(id(0)), vec![]),
            // The ask failed (or timed out): now it is safe to ask another node.
            (5_000, failed, vec![on(1)]),
        ],
    );
    // Without an answer, the pending window ends it.
    let mut ctl = with_nodes(2);
    let mut single = spec("s", 1);
    single.singleton = true;
    ctl.step(Event::SpecPut(single), ms(0));
    assert_eq!(ctl.step(members("s", vec![]), ms(0)), vec![on(0)]);
    assert_eq!(ctl.step(Event::MemberDown(id(0)), ms(10)), vec![]);
    assert_eq!(ctl.step(Event::Tick, ms(9_999)), vec![]);
    assert_eq!(ctl.step(Event::Tick, ms(10_000)), vec![on(1)]);
}

/// Found by the simulation: a node lost its lease and registered again, the new leader
/// started the singleton there, then saw the node's old entry go (the membership stream was
/// slower than the group's) and started a second instance elsewhere.
#[test]
fn a_singleton_member_counts_until_it_leaves_even_on_a_node_seen_down() {
    let mut ctl = with_nodes(2);
    let mut single = spec("s", 1);
    single.singleton = true;
    let on = |n| Order::Spawn {
        node: id(n),
        group: "s".to_owned(),
        actor_type: "T".to_owned(),
        args: vec![1, 2],
        singleton: true,
        fence: FENCE,
    };
    run(
        &mut ctl,
        vec![
            (0, Event::SpecPut(single), vec![follow("s")]),
            (0, members("s", vec![member(0, 28)]), vec![]),
            (10, Event::MemberDown(id(0)), vec![]),
            (20, Event::MemberUp(node(0)), vec![]),
            (30, Event::MemberDown(id(0)), vec![]),
            // Really gone: its member leaves with it, and only then is another started.
            (40, left("s", 0, 28), vec![on(1)]),
        ],
    );
}

#[test]
fn a_replica_asked_for_is_asked_again_after_ten_seconds_unseen() {
    let mut ctl = with_nodes(1);
    run(
        &mut ctl,
        vec![
            (0, Event::SpecPut(spec("g", 1)), vec![follow("g")]),
            (0, members("g", vec![]), vec![spawn(0, "g")]),
            (9_999, Event::Tick, vec![]),
            (10_000, Event::Tick, vec![spawn(0, "g")]),
            // Spawned, then seen: settled for good.
            (10_100, spawned(0, "g", 5), vec![]),
            (10_200, joined("g", 0, 5), vec![]),
            (30_000, Event::Tick, vec![]),
        ],
    );
}

#[test]
fn a_failed_spawn_is_asked_again_and_an_unable_node_is_avoided_for_a_while() {
    let mut ctl = with_nodes(2);
    let failed = |n, unable| Event::SpawnFailed {
        group: "g".to_owned(),
        node: id(n),
        unable,
    };
    run(
        &mut ctl,
        vec![
            (0, Event::SpecPut(spec("g", 1)), vec![follow("g")]),
            (0, members("g", vec![]), vec![spawn(0, "g")]),
            (10, failed(0, false), vec![spawn(0, "g")]),
            (20, failed(0, true), vec![spawn(1, "g")]),
            (30, failed(1, true), vec![]),
            // The unable memory lasts ten seconds.
            (10_019, Event::Tick, vec![]),
            (10_020, Event::Tick, vec![spawn(0, "g")]),
        ],
    );
}

#[test]
fn scaling_down_retires_the_highest_actor_on_the_chosen_nodes_once_nothing_is_pending() {
    let mut ctl = with_nodes(2);
    let four = vec![member(0, 1), member(0, 3), member(1, 2), member(1, 8)];
    run(
        &mut ctl,
        vec![
            (0, Event::SpecPut(spec("g", 6)), vec![follow("g")]),
            (0, members("g", four), vec![spawn(0, "g"), spawn(1, "g")]),
            // Scaled down while two replicas are on their way: wait for them.
            (10, Event::SpecPut(spec("g", 1)), vec![]),
            (
                20,
                Event::SpawnFailed {
                    group: "g".to_owned(),
                    node: id(0),
                    unable: false,
                },
                vec![],
            ),
            (
                30,
                Event::SpawnFailed {
                    group: "g".to_owned(),
                    node: id(1),
                    unable: false,
                },
                vec![retire(0, "g", 3), retire(1, "g", 8), retire(0, "g", 1)],
            ),
            // Retiring replicas are not counted, nor retired twice.
            (40, Event::Tick, vec![]),
            (50, left("g", 0, 3), vec![]),
            // A retire that never completes is given up after ten seconds and asked again.
            (
                10_030,
                Event::Tick,
                vec![retire(1, "g", 8), retire(0, "g", 1)],
            ),
        ],
    );
}

#[test]
fn a_singleton_never_has_more_than_one_replica() {
    let mut ctl = with_nodes(3);
    let mut single = spec("s", 3);
    single.singleton = true;
    let Order::Spawn { singleton, .. } = ({
        assert_eq!(ctl.step(Event::SpecPut(single), ms(0)), vec![follow("s")]);
        let orders = ctl.step(members("s", vec![]), ms(0));
        assert_eq!(orders.len(), 1, "{orders:?}");
        orders.into_iter().next().unwrap()
    }) else {
        panic!("not a spawn")
    };
    assert!(singleton);
    assert_eq!(ctl.step(joined("s", 0, 1), ms(10)), vec![]);
    assert_eq!(ctl.step(spawned(0, "s", 1), ms(20)), vec![]);
    // A second member (say, back after a partition healed): one of the two is retired.
    let orders = ctl.step(joined("s", 1, 4), ms(30));
    assert_eq!(orders, vec![retire(0, "s", 1)]);
}

/// Always the last candidate.
#[derive(Debug)]
struct Last;

impl Placement for Last {
    fn place(&self, candidates: &[Candidate], _: &Constraints, count: u32) -> Vec<usize> {
        vec![candidates.len() - 1; count as usize]
    }
    fn name(&self) -> &'static str {
        "last"
    }
}

#[test]
fn a_custom_policy_is_looked_up_by_name_and_an_unknown_one_does_nothing() {
    let placements: BTreeMap<String, Arc<dyn Placement>> =
        [("last".to_owned(), Arc::new(Last) as Arc<dyn Placement>)].into();
    let mut ctl = Controller::new(FENCE, placements);
    for i in 0..3 {
        ctl.step(Event::MemberUp(node(i)), ms(0));
    }
    let mut custom = spec("c", 2);
    custom.placement = PlacementPolicy::Custom("last".to_owned());
    let mut unknown = spec("u", 2);
    unknown.placement = PlacementPolicy::Custom("nobody".to_owned());
    run(
        &mut ctl,
        vec![
            (0, Event::SpecPut(custom), vec![follow("c")]),
            (0, Event::SpecPut(unknown), vec![follow("u")]),
            (0, members("u", vec![]), vec![]),
            (0, members("c", vec![]), vec![spawn(2, "c"), spawn(2, "c")]),
            (20_000, Event::Tick, vec![spawn(2, "c"), spawn(2, "c")]),
        ],
    );
}

#[test]
fn loads_are_read_at_most_once_a_second_and_only_when_needed() {
    let mut ctl = with_nodes(1);
    let mut least = spec("l", 1);
    least.placement = PlacementPolicy::LeastLoaded;
    run(
        &mut ctl,
        vec![
            (0, Event::SpecPut(spec("g", 0)), vec![follow("g")]),
            (100, Event::Tick, vec![]),
            (
                200,
                Event::SpecPut(least),
                vec![follow("l"), Order::ReadLoads],
            ),
            (700, Event::Tick, vec![]),
            (1_199, Event::Tick, vec![]),
            (1_200, Event::Tick, vec![Order::ReadLoads]),
            (1_300, Event::SpecRemoved("l".to_owned()), vec![]),
            (5_000, Event::Tick, vec![]),
        ],
    );
}

#[test]
fn the_autoscaler_waits_for_loads_then_scales_and_cools_down() {
    let mut ctl = with_nodes(2);
    let mut auto = spec("a", 1);
    auto.autoscale = Some(Autoscale {
        min: 1,
        max: 4,
        target_per_replica: 2.0,
        hysteresis: 0.25,
        cooldown_ms: 5_000,
    });
    let scaled = |replicas| {
        let mut s = auto.clone();
        s.replicas = replicas;
        Order::PutSpec(s)
    };
    let loads = |a: u64, b: u64| Event::Loads([(id(0), load(a)), (id(1), load(b))].into());
    run(
        &mut ctl,
        vec![
            (
                0,
                Event::SpecPut(auto.clone()),
                vec![follow("a"), Order::ReadLoads],
            ),
            (0, members("a", vec![member(0, 1)]), vec![]),
            // No loads yet: no scaling on no data.
            (500, Event::Tick, vec![]),
            // 6 asks on the one host, target 2: 3 replicas.
            (
                600,
                loads(6, 100),
                vec![scaled(3), spawn(1, "a"), spawn(0, "a")],
            ),
            (1_000, Event::Tick, vec![Order::ReadLoads]),
            (1_100, joined("a", 1, 1), vec![]),
            (1_150, spawned(1, "a", 1), vec![]),
            (1_200, joined("a", 0, 2), vec![]),
            (1_250, spawned(0, "a", 2), vec![]),
            // Far more load, but cooling down until 5.6 s.
            (1_300, loads(50, 50), vec![]),
            (5_599, Event::Tick, vec![Order::ReadLoads]),
            (5_600, Event::Tick, vec![scaled(4), spawn(1, "a")]),
        ],
    );
}

#[test]
fn the_same_events_at_the_same_times_give_the_same_orders() {
    let script = || {
        let mut ctl = with_nodes(4);
        let mut all = Vec::new();
        all.extend(ctl.step(Event::SpecPut(spec("g", 5)), ms(0)));
        all.extend(ctl.step(members("g", vec![member(3, 1)]), ms(1)));
        all.extend(ctl.step(Event::MemberDown(id(3)), ms(2)));
        all.extend(ctl.step(Event::Tick, ms(20_000)));
        all
    };
    assert_eq!(script(), script());
    assert_eq!(script().len(), 1 + 4 + 1 + 5);
}

/// A spec that no live node can run is reported once (not on every tick), with the reason;
/// the report clears when a node that can run it joins, and the replicas are asked for.
#[test]
fn a_spec_no_node_can_run_is_reported_once_and_cleared_when_one_can() {
    let mut ctl = Controller::new(FENCE, BTreeMap::new());
    let mut other = node(0);
    other.spawnable = vec!["U".to_owned()];
    assert_eq!(ctl.step(Event::MemberUp(other), ms(0)), vec![]);
    assert_eq!(
        ctl.step(Event::SpecPut(spec("g", 2)), ms(0)),
        vec![follow("g")]
    );
    let orders = ctl.step(members("g", vec![]), ms(1));
    let [Order::Report {
        group,
        status: Some(status),
    }] = orders.as_slice()
    else {
        panic!("expected one report, got {orders:?}");
    };
    assert_eq!(group, "g");
    assert_eq!((status.desired, status.running), (2, 0));
    assert!(
        matches!(&status.blocked, Some(crate::core::status::Blocked::NoSpawnableNode { actor_type }) if actor_type == "T"),
        "{status:?}"
    );
    run(
        &mut ctl,
        vec![
            (500, Event::Tick, vec![]),
            (1000, Event::Tick, vec![]),
            (
                1500,
                Event::MemberUp(node(1)),
                vec![
                    Order::Report {
                        group: "g".to_owned(),
                        status: None,
                    },
                    spawn(1, "g"),
                    spawn(1, "g"),
                ],
            ),
        ],
    );
}
