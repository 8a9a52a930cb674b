//! Targeted scenarios, built by hand on the simulated cluster: a deposed leader that still
//! believes it leads, a singleton stopped by its guard during a short cut from etcd, and a
//! campaign that won but whose answer was lost.

use std::time::Duration;

use crate::core::controller::Event;
use crate::core::Time;

use super::scenario::spec;
use super::world::{slot, Config, Fixes, Inc, World};

/// A quiet cluster of `nodes` nodes (no message lost or slow) with a group `g` of 3 replicas
/// and a singleton `s`, settled for 20 s.
pub(super) fn settled(nodes: usize, fixes: Fixes) -> World {
    settled_with(Config {
        nodes,
        fixes,
        ..Config::default()
    })
}

/// [`settled`] with `cfg` (but never a message lost or slow).
pub(super) fn settled_with(cfg: Config) -> World {
    let nodes = cfg.nodes;
    let cfg = Config {
        drop_rate: 0.0,
        slow_rate: 0.0,
        loads: false,
        ..cfg
    };
    let mut world = World::new(cfg, 7);
    world.put_spec(spec("g", 3));
    let mut s = spec("s", 1);
    s.singleton = true;
    world.put_spec(s);
    for slot in 0..nodes {
        world.start_node(slot);
    }
    assert!(world.run_until(secs(20)), "{:?}", world.violation);
    world.check_converged();
    assert_eq!(world.violation, None, "{}", world.trace.tail());
    world
}

pub(super) fn secs(n: u64) -> Time {
    Duration::from_secs(n)
}

/// The incarnation of the leader etcd has.
pub(super) fn leader(world: &World) -> Option<Inc> {
    let (id, _) = world.etcd.leader()?;
    let slot = super::world::slot_of_id(&id)?;
    world.nodes[slot].as_ref().map(|n| n.inc)
}

/// Runs in steps of `step` until `done` holds (at most `limit` more); whether it did.
pub(super) fn run_until_true(
    world: &mut World,
    step: Duration,
    limit: Duration,
    done: impl Fn(&World) -> bool,
) -> bool {
    let end = world.now + limit;
    while world.now < end {
        if done(world) {
            return true;
        }
        let next = world.now + step;
        assert!(
            world.run_until(next),
            "{:?}\n{}",
            world.violation,
            world.trace.tail()
        );
    }
    done(world)
}

/// Property 3, targeted: the leader is cut from etcd but not from the other nodes. Its
/// lease expires, another node is elected, and the old leader, whose watches are silent,
/// still believes it leads. Told (by hand) that the group must shrink and then grow, it sends
/// retire and spawn orders to every node: every one of them is refused.
#[test]
fn a_deposed_leader_that_still_believes_it_leads_has_every_order_refused() {
    let mut world = settled(4, Fixes::all());
    let old = leader(&world).expect("a leader");
    let old_slot = slot(old);
    world.net.etcd_cut.insert(old_slot);
    let elected = run_until_true(&mut world, Duration::from_millis(50), secs(10), |w| {
        leader(w).is_some_and(|l| l != old)
    });
    assert!(elected, "no new leader\n{}", world.trace.tail());
    let deposed = world
        .node(old)
        .and_then(|n| n.leading.as_ref())
        .map(|l| l.token);
    let token = deposed.expect("the old leader still believes it leads");
    let first = world.next_order;

    let mut shrink = spec("g", 0);
    shrink.replicas = 0;
    world.feed(old, Event::SpecPut(shrink));
    let grow = spec("g", 6);
    world.feed(old, Event::SpecPut(grow));
    let host = world.etcd.members("s").first().map(|m| m.node.clone());
    if let Some(host) = host {
        world.feed(old, Event::MemberDown(host));
    }
    assert!(
        world.run_until(world.now + secs(5)),
        "{:?}",
        world.violation
    );

    let sent: Vec<u64> = world
        .issued
        .range(first..)
        .filter(|(_, (i, _))| *i == old)
        .map(|(o, _)| *o)
        .collect();
    let checked: Vec<bool> = sent
        .iter()
        .filter_map(|o| world.fenced.get(o).copied())
        .collect();
    assert!(
        checked.len() >= 6,
        "only {} of {} orders were checked",
        checked.len(),
        sent.len()
    );
    assert!(
        checked.iter().all(|applied| !applied),
        "an order of the deposed leader was applied"
    );
    eprintln!(
        "deposed leader (token {token}): {} orders sent after the election, {} checked and refused by the fence, none applied (the rest were asked of itself, cut from etcd: not checkable, refused)",
        sent.len(),
        checked.len()
    );

    // Healed, the old leader learns it was deposed, and the cluster settles.
    world.net.etcd_cut.remove(&old_slot);
    assert!(
        world.run_until(world.now + secs(60)),
        "{:?}",
        world.violation
    );
    assert!(world.node(old).is_some_and(|n| n.leading.is_none()));
    world.check_converged();
    assert_eq!(world.violation, None, "{}", world.trace.tail());
}

/// The host of the singleton `s` and the replica, if it runs.
pub(super) fn singleton_host(world: &World) -> Option<(Inc, crate::id::ActorId)> {
    world.nodes.iter().flatten().find_map(|n| {
        n.actors
            .iter()
            .find(|(_, r)| r.group == "s")
            .map(|(a, _)| (n.inc, *a))
    })
}

/// The singleton's host is cut from etcd just long enough for its guard to stop the
/// singleton, and renews its lease right after the cut heals. The replica's member key was
/// to be deleted while the host was cut off.
fn cut_until_the_guard_stops_the_singleton(fixes: Fixes) -> World {
    let mut world = settled(3, fixes);
    let (host, _) = singleton_host(&world).expect("the singleton runs");
    world.net.etcd_cut.insert(slot(host));
    let stopped = run_until_true(&mut world, Duration::from_millis(5), secs(5), |w| {
        singleton_host(w).is_none()
    });
    assert!(stopped, "the guard did not stop the singleton");
    world.net.etcd_cut.remove(&slot(host));
    world.keep_alive(host);
    assert!(
        world.run_until(world.now + secs(30)),
        "{:?}",
        world.violation
    );
    assert!(world.node(host).is_some(), "the host died");
    world
}

/// Today's node tries the deletion of a stopped replica's member key once: cut off from
/// etcd, that try is lost, the lease survives the short cut, and the key stays: the
/// controller counts a singleton that no longer runs, for good.
#[test]
fn todays_single_leave_leaves_a_stopped_singletons_key_behind() {
    let mut world = cut_until_the_guard_stops_the_singleton(Fixes {
        leave_until_done: false,
        ..Fixes::all()
    });
    assert!(
        singleton_host(&world).is_none(),
        "the singleton was started again"
    );
    world.check_converged();
    let violation = world.violation.expect("a member without a live replica");
    assert!(
        violation.contains("members without a live replica [("),
        "{violation}"
    );
}

/// With the deletion retried until etcd answers, the key goes after the cut and the
/// controller starts the singleton again.
#[test]
fn a_leave_retried_until_done_lets_the_singleton_start_again() {
    let mut world = cut_until_the_guard_stops_the_singleton(Fixes::all());
    assert!(singleton_host(&world).is_some(), "{}", world.trace.tail());
    world.check_converged();
    assert_eq!(world.violation, None, "{}", world.trace.tail());
}

/// The leader dies; the next node's campaign wins at etcd, but the node is cut from etcd
/// before the answer arrives, for longer than its request timeout and shorter than its lease.
fn lose_a_won_campaign_answer(fixes: Fixes) -> (World, Inc) {
    let mut world = settled_with(Config {
        nodes: 3,
        request_timeout: Duration::from_millis(500),
        fixes,
        ..Config::default()
    });
    let old = leader(&world).expect("a leader");
    world.kill(slot(old));
    let elected = run_until_true(&mut world, Duration::from_millis(1), secs(10), |w| {
        leader(w).is_some_and(|l| l != old)
    });
    assert!(elected, "no new leader\n{}", world.trace.tail());
    let new = leader(&world).expect("a new leader");
    assert!(
        world.node(new).is_some_and(|n| n.leading.is_none()),
        "answered already"
    );
    world.net.etcd_cut.insert(slot(new));
    assert!(world.run_until(world.now + Duration::from_millis(700)));
    world.net.etcd_cut.remove(&slot(new));
    assert!(
        world.run_until(world.now + secs(30)),
        "{:?}",
        world.violation
    );
    (world, new)
}

/// Today's campaign retries after the lost answer, finds the leader key taken (by its own
/// lease) and waits for it to go, which never happens while the node lives: nobody leads.
#[test]
fn todays_campaign_waits_for_ever_on_its_own_key_when_a_won_answer_is_lost() {
    let (world, new) = lose_a_won_campaign_answer(Fixes {
        reclaim_leadership: false,
        ..Fixes::all()
    });
    assert_eq!(leader(&world), Some(new), "the key is still the node's");
    let leading = world
        .nodes
        .iter()
        .flatten()
        .filter(|n| n.leading.is_some())
        .count();
    assert_eq!(leading, 0, "somebody leads");
}

/// A campaign that finds the key bound to its own lease takes the leadership it had won.
#[test]
fn a_campaign_that_finds_its_own_key_leads() {
    let (mut world, new) = lose_a_won_campaign_answer(Fixes::all());
    assert!(
        world.node(new).is_some_and(|n| n.leading.is_some()),
        "{}",
        world.trace.tail()
    );
    world.check_converged();
    assert_eq!(world.violation, None, "{}", world.trace.tail());
}
