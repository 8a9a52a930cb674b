//! [`Spread`]: replicas as even as possible, with a hard bound per node.

use std::cmp::Reverse;

use super::{place_with, remove_with, Candidate, Constraints, Placement};

/// Puts each new replica on the eligible node with the fewest replicas of the group (ties
/// to the lower node id), never taking a node above the even share
/// `ceil(total / eligible nodes)`, where `total` counts the replicas on the eligible nodes
/// and the new ones (replicas on nodes the constraints do not admit are not counted: they
/// are for removal).
///
/// A node that already runs more than its share keeps them, but gets no more; there is
/// always room for all the new replicas within the bound, so a call returns fewer than asked
/// only because of [`max_per_node`](Constraints::max_per_node). Load reports are ignored.
///
/// With [`anti_affinity`](Constraints::anti_affinity), each replica goes to the label value
/// with the fewest replicas, then to the node with the fewest within it, but the bound per
/// node comes first: 2 zones, one with 1 node and one with 2, get 6 replicas as 2 and 2 + 2
/// (where [`RoundRobin`](super::RoundRobin) gives 3 to the lone node, and 2 + 1).
///
/// Removal, after the replicas that violate the constraints, takes from the node with the
/// most replicas first (the fuller label value first among equally full nodes, then the
/// lower node id), so that the bound keeps holding for the replicas that stay.
#[derive(Debug, Clone, Default)]
pub struct Spread {
    _private: (),
}

impl Spread {
    /// The policy.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Placement for Spread {
    fn place(&self, candidates: &[Candidate], constraints: &Constraints, count: u32) -> Vec<usize> {
        place_with(
            candidates,
            constraints,
            count,
            |layout, existing| {
                let nodes = layout.eligible.len() as u64;
                let total = existing.saturating_add(u64::from(count.min(super::MAX_COUNT)));
                (nodes > 0).then(|| total.div_ceil(nodes))
            },
            |candidate, placed| u64::from(candidate.replicas).saturating_add(placed),
            |domain, &replicas| (domain, replicas),
        )
    }

    fn remove(
        &self,
        candidates: &[Candidate],
        constraints: &Constraints,
        count: u32,
    ) -> Vec<usize> {
        remove_with(
            candidates,
            constraints,
            count,
            |_, left| Reverse(left),
            |domain, &left| (left, Reverse(domain)),
        )
    }

    fn name(&self) -> &'static str {
        "spread"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::placement::testing::*;
    use crate::core::placement::RoundRobin;

    /// Candidates without replicas, labelled `zone` with `zones`.
    fn zoned(zones: &[&str]) -> Vec<Candidate> {
        nodes(&vec![0; zones.len()])
            .into_iter()
            .zip(zones)
            .map(|(c, &zone)| c.label("zone", zone))
            .collect()
    }

    #[test]
    fn fresh_group_is_even() {
        let policy = Spread::new();
        let candidates = nodes(&[0, 0, 0]);
        let picks = policy.place(&candidates, &Constraints::new(), 12);
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2]);
        assert_eq!(after_place(&candidates, &picks), [4, 4, 4]);
        assert_eq!(policy.name(), "spread");
    }

    #[test]
    fn uneven_group_fills_the_emptiest_first() {
        let policy = Spread::default();
        let candidates = nodes(&[5, 1, 0]);
        let picks = policy.place(&candidates, &Constraints::new(), 4);
        assert_eq!(picks, [2, 1, 2, 1]);
        assert_eq!(after_place(&candidates, &picks), [5, 3, 2]);
    }

    #[test]
    fn spread_bound_holds() {
        let policy = Spread::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |below: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % below) as u32
        };
        for n in 1..=7 {
            for r in 0..=40u32 {
                for zones in 0..=3 {
                    let (mut candidates, constraints) = match zones {
                        0 => (nodes(&vec![0; n]), Constraints::new()),
                        z => {
                            let labels: Vec<String> =
                                (0..n).map(|i| format!("z{}", i % z)).collect();
                            let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
                            (zoned(&labels), Constraints::new().anti_affinity("zone"))
                        }
                    };
                    // A fresh group: nobody above the share.
                    let picks = policy.place(&candidates, &constraints, r);
                    assert_eq!(picks.len(), r as usize);
                    let bound = u64::from(r).div_ceil(n as u64);
                    let counts = after_place(&candidates, &picks);
                    assert!(
                        counts.iter().all(|&c| c <= bound),
                        "{r}/{n}/{zones}: {counts:?}"
                    );

                    // An uneven group: whoever gets a new replica stays within the share.
                    for c in &mut candidates {
                        c.replicas = next(6);
                    }
                    let picks = policy.place(&candidates, &constraints, r);
                    assert_eq!(picks.len(), r as usize);
                    let existing: u64 = candidates.iter().map(|c| u64::from(c.replicas)).sum();
                    let bound = (existing + u64::from(r)).div_ceil(n as u64);
                    let counts = after_place(&candidates, &picks);
                    for &i in &picks {
                        assert!(counts[i] <= bound, "{r}/{n}/{zones}: {counts:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn selector_excludes_nodes() {
        let policy = Spread::new();
        let candidates: Vec<Candidate> = nodes(&[0, 0, 9, 0])
            .into_iter()
            .zip(["ssd", "ssd", "hdd", "ssd"])
            .map(|(c, disk)| c.label("disk", disk))
            .collect();
        let constraints = Constraints::new().select("disk", "ssd");
        // The share counts the selected nodes and their replicas only: ceil(7 / 3) = 3.
        let picks = policy.place(&candidates, &constraints, 7);
        assert_eq!(after_place(&candidates, &picks), [3, 2, 9, 2]);
        let none = Constraints::new().select("disk", "nvme");
        assert!(policy.place(&candidates, &none, 7).is_empty());
    }

    #[test]
    fn anti_affinity_across_two_zones() {
        let policy = Spread::new();
        let constraints = Constraints::new().anti_affinity("zone");
        let candidates = zoned(&["a", "a", "b"]);
        let picks = policy.place(&candidates, &constraints, 4);
        assert_eq!(after_place(&candidates, &picks), [1, 1, 2]);
        let picks = policy.place(&candidates, &constraints, 5);
        assert_eq!(after_place(&candidates, &picks), [2, 1, 2]);
        // The bound per node wins over evenness across zones.
        let picks = policy.place(&candidates, &constraints, 6);
        assert_eq!(after_place(&candidates, &picks), [2, 2, 2]);
        let picks = RoundRobin::new().place(&candidates, &constraints, 6);
        assert_eq!(after_place(&candidates, &picks), [2, 1, 3]);
        // Nodes without the label are not eligible.
        let mut partial = candidates.clone();
        partial.push(Candidate::new(crate::NodeId::new("n3")));
        let picks = policy.place(&partial, &constraints, 6);
        assert_eq!(after_place(&partial, &picks), [2, 2, 2, 0]);
    }

    #[test]
    fn max_per_node_caps_and_returns_fewer() {
        let policy = Spread::new();
        let candidates = nodes(&[0, 0, 0]);
        let constraints = Constraints::new().max_per_node(2);
        let picks = policy.place(&candidates, &constraints, 10);
        assert_eq!(picks.len(), 6);
        assert_eq!(after_place(&candidates, &picks), [2, 2, 2]);
        let candidates = nodes(&[3, 1, 0]);
        let picks = policy.place(&candidates, &constraints, 10);
        assert_eq!(after_place(&candidates, &picks), [3, 2, 2]);
    }

    #[test]
    fn remove_picks_the_fullest() {
        let policy = Spread::new();
        let candidates = nodes(&[5, 2, 3]);
        let picks = policy.remove(&candidates, &Constraints::new(), 3);
        assert_eq!(picks, [0, 0, 0]);
        assert_eq!(after_remove(&candidates, &picks), [2, 2, 3]);
        // With anti-affinity the fullest node goes first, keeping the share (9 / 3 = 3),
        // where removing by zone first would leave 4 on the lone node of zone a.
        let zones: Vec<Candidate> = zoned(&["a", "b", "b"])
            .into_iter()
            .map(|c| c.replicas(4))
            .collect();
        let constraints = Constraints::new().anti_affinity("zone");
        let picks = policy.remove(&zones, &constraints, 3);
        assert_eq!(picks, [1, 2, 0]);
        assert_eq!(after_remove(&zones, &picks), [3, 3, 3]);
        let picks = RoundRobin::new().remove(&zones, &constraints, 3);
        assert_eq!(after_remove(&zones, &picks), [4, 2, 3]);
    }

    #[test]
    fn degenerate_inputs_and_determinism() {
        degenerate_inputs(&Spread::new());
        deterministic(&Spread::new());
    }
}
