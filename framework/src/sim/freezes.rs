//! Targeted freezes: the host of a singleton, in the middle of an order, stopped (SIGSTOP)
//! for three lease TTLs, then resumed; with the fence, and without it to show that the
//! properties catch what the fence prevents.

use std::time::Duration;

use super::node::Purpose;
use super::scenario::spec;
use super::targeted::{run_until_true, secs, settled_with, singleton_host};
use super::world::{slot, Config, Inc, World};

/// Whether `inc` waits for etcd's answer to a fenced join (a spawn order half done).
fn joining(world: &World, inc: Inc) -> bool {
    world.node(inc).is_some_and(|n| n.orders_in_flight() > 0)
}

/// A settled cluster of 3 nodes; the host of the singleton `s` is armed to freeze for
/// 3 TTLs as soon as it sends the etcd request of its next order, and the operator grows
/// group `g` so that the leader orders a spawn on every node. Runs until the host resumed
/// and 1 s more; the host's incarnation.
fn freeze_the_singletons_host_mid_order(fence: bool) -> (World, Inc) {
    let mut world = settled_with(Config {
        nodes: 3,
        fence,
        ..Config::default()
    });
    let (host, _) = singleton_host(&world).expect("the singleton runs");
    let ttl = world.cfg.ttl;
    world.arm_freeze(slot(host), 3 * ttl);
    world.put_spec(spec("g", 6));
    let frozen = run_until_true(&mut world, Duration::from_millis(1), secs(5), |w| {
        w.is_frozen(host)
    });
    assert!(frozen, "the host got no order\n{}", world.trace.tail());
    assert!(joining(&world, host), "frozen outside an order");
    let since = world.now;
    // While it is frozen, its lease expires and the singleton is started elsewhere.
    let elsewhere = |w: &World| {
        w.nodes
            .iter()
            .flatten()
            .any(|n| n.inc != host && n.actors.values().any(|r| r.group == "s"))
    };
    let replaced = run_until_true(&mut world, Duration::from_millis(10), 3 * ttl, elsewhere);
    assert!(
        replaced,
        "the singleton was not replaced\n{}",
        world.trace.tail()
    );
    assert!(
        world.is_frozen(host),
        "resumed before the replacement\n{}",
        world.trace.tail()
    );
    // Without the fence, this is where a property fails.
    world.run_until(since + 3 * ttl + secs(1));
    (world, host)
}

/// With the fence, the resumed host starts nothing it was asked under its lost lease: the
/// spawn whose etcd transaction passed before the freeze is held (the lease is in doubt)
/// until etcd says the lease is gone, then not started; its singleton is stopped at once,
/// and the cluster settles with one instance.
#[test]
fn a_host_frozen_for_three_ttls_mid_order_starts_nothing_when_it_resumes() {
    let (mut world, host) = freeze_the_singletons_host_mid_order(true);
    assert_eq!(world.violation, None, "{}", world.trace.tail());
    assert!(!world.is_frozen(host) && world.node(host).is_some());
    let thaw = world.thawed.get(&host).and_then(|t| t.last()).copied();
    assert!(thaw.is_some_and(|t| t.outlived), "{thaw:?}");
    assert!(
        world.stats.orders_held >= 1,
        "{:?}\n{}",
        world.stats,
        world.trace.tail()
    );
    let others: Vec<_> = world
        .node(host)
        .map(|n| n.actors.values().filter(|r| r.group == "s").count())
        .into_iter()
        .collect();
    assert_eq!(others, vec![0], "the resumed host kept its singleton");
    assert!(
        world.run_until(world.now + secs(60)),
        "{:?}",
        world.violation
    );
    world.check_converged();
    assert_eq!(world.violation, None, "{}", world.trace.tail());
    eprintln!("freeze of 3 TTLs mid-order: {:?}", world.stats);
}

/// Without the fence, the same freeze ends with the host starting the replica of the spawn
/// whose answer waited while it was frozen, under the lease etcd expired: property 4 fails.
#[test]
fn without_the_fence_the_resumed_host_starts_an_order_under_its_lost_lease() {
    let (world, _) = freeze_the_singletons_host_mid_order(false);
    let violation = world.violation.expect("a violation without the fence");
    assert!(violation.contains("which etcd expired"), "{violation}");
}

impl super::node::Node {
    /// The etcd requests for orders this node waits for.
    pub(crate) fn orders_in_flight(&self) -> usize {
        self.requests()
            .filter(|p| matches!(p, Purpose::FencedJoin { .. }))
            .count()
    }
}
