//! The shard allocator: the controller's pure decision of which node each shard of an entity
//! type is assigned to. Hosts in, a new assignment out.
//!
//! - Shards of a node that no longer hosts the type (down, left, draining) are reassigned at
//!   once: there is nothing to hand over, their owner is gone or going.
//! - Otherwise each host should hold `shards / hosts` shards, the remainder going to the
//!   hosts that hold more already; a host over its share gives shards to hosts under theirs,
//!   at most `max_moves` per call (moves from a live owner are handoffs: rate-limited).
//! - Nothing else moves: a fourth node joining three takes a quarter of the shards and
//!   nothing moves between the three.
//!
//! Ties are broken by node id and shard index, so the same input gives the same output.

use std::collections::{BTreeMap, BTreeSet};

use super::Assignment;
use crate::id::NodeId;

/// The next assignment of `kind` with `shards` shards over `hosts`, from `current` (`None`:
/// the first), moving at most `max_moves` shards between live hosts. `None` when nothing
/// changes.
pub(crate) fn plan(
    kind: &str,
    shards: u32,
    current: Option<&Assignment>,
    hosts: &BTreeSet<NodeId>,
    max_moves: usize,
) -> Option<Assignment> {
    let mut nodes: Vec<Option<NodeId>> = match current {
        Some(a) if a.shards() == shards => a.nodes.clone(),
        _ => vec![None; shards as usize],
    };
    // Shards on nodes that no longer host the type are orphans.
    for node in &mut nodes {
        if node.as_ref().is_some_and(|n| !hosts.contains(n)) {
            *node = None;
        }
    }
    if !hosts.is_empty() {
        balance(&mut nodes, hosts, max_moves);
    }
    let changed = current.is_none_or(|a| a.nodes != nodes);
    changed.then(|| Assignment {
        kind: kind.to_owned(),
        nodes,
        version: current.map_or(1, |a| a.version + 1),
    })
}

fn balance(nodes: &mut [Option<NodeId>], hosts: &BTreeSet<NodeId>, max_moves: usize) {
    let shards = nodes.len();
    let mut held: BTreeMap<&NodeId, Vec<usize>> = hosts.iter().map(|h| (h, Vec::new())).collect();
    for (shard, node) in nodes.iter().enumerate() {
        if let Some(list) = node.as_ref().and_then(|n| held.get_mut(n)) {
            list.push(shard);
        }
    }
    // Targets: the remainder goes to the hosts holding most now (then by id).
    let mut order: Vec<&NodeId> = hosts.iter().collect();
    order.sort_by(|a, b| held[b].len().cmp(&held[a].len()).then(a.cmp(b)));
    let (base, extra) = (shards / hosts.len(), shards % hosts.len());
    let target: BTreeMap<&NodeId, usize> = order
        .iter()
        .enumerate()
        .map(|(i, h)| (*h, base + usize::from(i < extra)))
        .collect();
    // Orphans to the hosts furthest below their target.
    let orphans: Vec<usize> = (0..shards).filter(|s| nodes[*s].is_none()).collect();
    for shard in orphans {
        let host = neediest(&held, &target);
        held.get_mut(host).expect("a host").push(shard);
        nodes[shard] = Some(host.clone());
    }
    // Handoffs from hosts over their target, rate-limited.
    for _ in 0..max_moves {
        let over = held
            .iter()
            .filter(|(h, list)| list.len() > target[*h])
            .max_by(|(a, x), (b, y)| {
                (x.len() - target[*a])
                    .cmp(&(y.len() - target[*b]))
                    .then(b.cmp(a))
            })
            .map(|(h, _)| *h);
        let Some(over) = over else { break };
        let to = neediest(&held, &target);
        if held[to].len() >= target[to] {
            break;
        }
        let shard = held.get_mut(over).and_then(Vec::pop).expect("over target");
        held.get_mut(to).expect("a host").push(shard);
        nodes[shard] = Some(to.clone());
    }
}

/// The host furthest below its target (most shards missing; ties: smallest id).
fn neediest<'a>(
    held: &BTreeMap<&'a NodeId, Vec<usize>>,
    target: &BTreeMap<&'a NodeId, usize>,
) -> &'a NodeId {
    held.iter()
        .max_by(|(a, x), (b, y)| {
            let need = |h: &NodeId, l: &Vec<usize>| target[h] as i64 - l.len() as i64;
            need(a, x).cmp(&need(b, y)).then(b.cmp(a))
        })
        .map(|(h, _)| *h)
        .expect("at least one host")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(ids: &[&str]) -> BTreeSet<NodeId> {
        ids.iter().map(|i| NodeId::new(*i)).collect()
    }

    fn counts(a: &Assignment) -> Vec<(String, usize)> {
        let mut c: BTreeMap<String, usize> = BTreeMap::new();
        for n in a.nodes.iter().flatten() {
            *c.entry(n.to_string()).or_default() += 1;
        }
        c.into_iter().collect()
    }

    fn moved(a: &Assignment, b: &Assignment) -> usize {
        a.nodes.iter().zip(&b.nodes).filter(|(x, y)| x != y).count()
    }

    #[test]
    fn the_first_assignment_spreads_evenly() {
        let a = plan("carts", 256, None, &hosts(&["a", "b", "c"]), 0).unwrap();
        assert_eq!(a.version, 1);
        assert_eq!(
            counts(&a),
            [("a".into(), 86), ("b".into(), 85), ("c".into(), 85)]
        );
        assert!(a.nodes.iter().all(Option::is_some));
        // Same input, same output; no change, no new assignment.
        assert_eq!(
            plan("carts", 256, None, &hosts(&["a", "b", "c"]), 0).unwrap(),
            a
        );
        assert_eq!(
            plan("carts", 256, Some(&a), &hosts(&["a", "b", "c"]), 99),
            None
        );
    }

    #[test]
    fn a_fourth_node_takes_a_quarter_and_nothing_else_moves() {
        let three = plan("carts", 256, None, &hosts(&["a", "b", "c"]), 0).unwrap();
        let mut current = three.clone();
        let four = hosts(&["a", "b", "c", "d"]);
        // Rate-limited: 16 moves per round.
        let mut rounds = 0;
        while let Some(next) = plan("carts", 256, Some(&current), &four, 16) {
            assert!(moved(&current, &next) <= 16);
            current = next;
            rounds += 1;
            assert!(rounds < 100);
        }
        assert_eq!(rounds, 4);
        assert_eq!(moved(&three, &current), 64, "ideal: 25 % of 256");
        assert!(counts(&current).iter().all(|(_, n)| *n == 64));
        // Every moved shard went to the new node.
        for (x, y) in three.nodes.iter().zip(&current.nodes) {
            if x != y {
                assert_eq!(y.as_ref().unwrap().as_str(), "d");
            }
        }
    }

    #[test]
    fn a_gone_nodes_shards_are_reassigned_at_once_to_the_others() {
        let three = plan("carts", 90, None, &hosts(&["a", "b", "c"]), 0).unwrap();
        let two = plan("carts", 90, Some(&three), &hosts(&["a", "c"]), 0).unwrap();
        assert_eq!(counts(&two), [("a".into(), 45), ("c".into(), 45)]);
        assert_eq!(moved(&three, &two), 30, "only b's shards move");
    }

    #[test]
    fn without_hosts_nothing_is_assigned_and_a_new_shard_count_starts_over() {
        let a = plan("carts", 8, None, &hosts(&["a"]), 0).unwrap();
        let none = plan("carts", 8, Some(&a), &BTreeSet::new(), 0).unwrap();
        assert!(none.nodes.iter().all(Option::is_none));
        assert_eq!(none.version, 2);
        let resized = plan("carts", 16, Some(&a), &hosts(&["a"]), 0).unwrap();
        assert_eq!(resized.shards(), 16);
        assert_eq!(resized.count(&NodeId::new("a")), 16);
    }

    #[test]
    fn fewer_shards_than_hosts_leaves_some_hosts_empty() {
        let a = plan("carts", 2, None, &hosts(&["a", "b", "c"]), 0).unwrap();
        assert_eq!(a.nodes.iter().flatten().count(), 2);
        assert_eq!(
            plan("carts", 2, Some(&a), &hosts(&["a", "b", "c"]), 10),
            None
        );
    }
}
