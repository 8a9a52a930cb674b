//! [`RoundRobin`]: each new replica on the eligible node with the fewest replicas.

use super::{place_with, Candidate, Constraints, Placement};

/// Puts each new replica on the eligible node with the fewest replicas of the group, ties to
/// the lower node id.
///
/// On a fresh group this is round robin over the eligible nodes in node id order (12
/// replicas on 3 nodes: 4, 4, 4); on an uneven group it fills the emptiest nodes first, and
/// no node ends above `max(its replicas before, ceil(replicas / nodes))`. Load reports are
/// ignored.
///
/// With [`anti_affinity`](Constraints::anti_affinity), evenness across label values comes
/// first: each replica goes to the value with the fewest replicas, then to the node with the
/// fewest within it, even if a value with few nodes then gets more replicas per node (2
/// zones, one with 1 node and one with 2: 6 replicas go 3 to the lone node, 3 to the pair).
/// Use [`Spread`](super::Spread) to bound the replicas per node instead.
///
/// Removal is the default of [`Placement::remove`].
#[derive(Debug, Clone, Default)]
pub struct RoundRobin {
    _private: (),
}

impl RoundRobin {
    /// The policy.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Placement for RoundRobin {
    fn place(&self, candidates: &[Candidate], constraints: &Constraints, count: u32) -> Vec<usize> {
        place_with(
            candidates,
            constraints,
            count,
            |_, _| None,
            |candidate, placed| u64::from(candidate.replicas).saturating_add(placed),
            |domain, &replicas| (domain, replicas),
        )
    }

    fn name(&self) -> &'static str {
        "round_robin"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::placement::testing::*;

    #[test]
    fn fresh_group_is_round_robin() {
        let policy = RoundRobin::new();
        let candidates = nodes(&[0, 0, 0]);
        let picks = policy.place(&candidates, &Constraints::new(), 12);
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2]);
        assert_eq!(after_place(&candidates, &picks), [4, 4, 4]);
        assert_eq!(policy.name(), "round_robin");
    }

    #[test]
    fn uneven_group_fills_the_emptiest_first() {
        let policy = RoundRobin::default();
        let candidates = nodes(&[5, 1, 0]);
        let picks = policy.place(&candidates, &Constraints::new(), 4);
        assert_eq!(picks, [2, 1, 2, 1]);
        assert_eq!(after_place(&candidates, &picks), [5, 3, 2]);
        let picks = policy.place(&candidates, &Constraints::new(), 9);
        assert_eq!(after_place(&candidates, &picks), [5, 5, 5]);
    }

    #[test]
    fn spread_bound_holds() {
        let policy = RoundRobin::new();
        for n in 1..=7 {
            for r in 0..=50u32 {
                let candidates = nodes(&vec![0; n]);
                let picks = policy.place(&candidates, &Constraints::new(), r);
                assert_eq!(picks.len(), r as usize);
                let counts = after_place(&candidates, &picks);
                let bound = u64::from(r).div_ceil(n as u64);
                assert!(counts.iter().all(|&c| c <= bound), "{r} on {n}: {counts:?}");
                // Adding to a group that is already even keeps it within the bound.
                let more = policy.place(&nodes(&vec![2; n]), &Constraints::new(), r);
                let counts = after_place(&nodes(&vec![2; n]), &more);
                let bound = (2 * n as u64 + u64::from(r)).div_ceil(n as u64);
                assert!(counts.iter().all(|&c| c <= bound), "{r} on {n}: {counts:?}");
            }
        }
    }

    #[test]
    fn selector_excludes_nodes() {
        let policy = RoundRobin::new();
        let candidates: Vec<Candidate> = nodes(&[0, 0, 0, 0])
            .into_iter()
            .zip(["ssd", "hdd", "ssd", "ssd"])
            .map(|(c, disk)| c.label("disk", disk))
            .collect();
        let constraints = Constraints::new().select("disk", "ssd");
        let picks = policy.place(&candidates, &constraints, 6);
        assert_eq!(after_place(&candidates, &picks), [2, 0, 2, 2]);
        let both = constraints.select("region", "eu");
        assert!(policy.place(&candidates, &both, 6).is_empty());
    }

    #[test]
    fn anti_affinity_across_two_zones() {
        let policy = RoundRobin::new();
        let candidates: Vec<Candidate> = nodes(&[0, 0, 0, 0])
            .into_iter()
            .zip(["a", "a", "b", ""])
            .map(|(c, zone)| match zone {
                "" => c, // no zone label: not eligible
                zone => c.label("zone", zone),
            })
            .collect();
        let constraints = Constraints::new().anti_affinity("zone");
        let picks = policy.place(&candidates, &constraints, 4);
        assert_eq!(after_place(&candidates, &picks), [1, 1, 2, 0]);
        let picks = policy.place(&candidates, &constraints, 6);
        assert_eq!(after_place(&candidates, &picks), [2, 1, 3, 0]);
        let zones = per_label(&candidates, &picks, "zone");
        assert_eq!(zones.values().copied().collect::<Vec<_>>(), [3, 3]);
        // An uneven start: the emptier zone catches up first.
        let mut uneven = candidates.clone();
        uneven[0].replicas = 3;
        let picks = policy.place(&uneven, &constraints, 5);
        assert_eq!(after_place(&uneven, &picks), [3, 1, 4, 0]);
    }

    #[test]
    fn max_per_node_caps_and_returns_fewer() {
        let policy = RoundRobin::new();
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
        let policy = RoundRobin::new();
        let candidates = nodes(&[5, 2, 3]);
        let picks = policy.remove(&candidates, &Constraints::new(), 3);
        assert_eq!(picks, [0, 0, 0]);
        assert_eq!(after_remove(&candidates, &picks), [2, 2, 3]);
        let picks = policy.remove(&candidates, &Constraints::new(), 7);
        assert_eq!(after_remove(&candidates, &picks), [1, 1, 1]);
        // Violations go first: over the cap, then the fullest.
        let picks = policy.remove(&candidates, &Constraints::new().max_per_node(2), 5);
        assert_eq!(picks, [0, 0, 0, 2, 0]);
        // With anti-affinity: the fuller zone first, then the zone with the fullest node.
        let zoned: Vec<Candidate> = nodes(&[2, 2, 3])
            .into_iter()
            .zip(["a", "a", "b"])
            .map(|(c, zone)| c.label("zone", zone))
            .collect();
        let picks = policy.remove(&zoned, &Constraints::new().anti_affinity("zone"), 2);
        assert_eq!(after_remove(&zoned, &picks), [1, 2, 2]);
    }

    #[test]
    fn degenerate_inputs_and_determinism() {
        degenerate_inputs(&RoundRobin::new());
        deterministic(&RoundRobin::new());
    }
}
