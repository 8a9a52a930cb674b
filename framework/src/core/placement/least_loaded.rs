//! [`LeastLoaded`]: each new replica on the eligible node with the least load.

use std::cmp::Reverse;

use super::{place_with, remove_with, Candidate, Constraints, Placement};

/// Puts each new replica on the eligible node with the least load, counting the replicas
/// placed by this call; ties go to the node with the fewest replicas of the group, then to
/// the lower node id.
///
/// The load of a node is the actors it runs plus the asks it is handling
/// ([`LoadReport::actors`](crate::discovery::LoadReport::actors) `+`
/// [`inflight_asks`](crate::discovery::LoadReport::inflight_asks)), plus one per replica
/// placed on it in this call. The actors count is at least the replicas of the group on the
/// node (a report older than the last placements does not make a node look emptier than
/// it is). **A node without a load report counts as running only its replicas of the
/// group**: a node that just joined and has not reported yet is taken as idle, and is
/// filled first. Send queues and ask rates are not used.
///
/// Low-load nodes are filled until they catch up with the others, then the replicas spread
/// evenly: on nodes of equal load this is [`RoundRobin`](super::RoundRobin).
///
/// With [`anti_affinity`](Constraints::anti_affinity), evenness across label values comes
/// first, then load within a value: the least loaded node of the value with the fewest
/// replicas.
///
/// Removal is the default of [`Placement::remove`], except that among equally full nodes
/// the most loaded loses a replica first.
#[derive(Debug, Clone, Default)]
pub struct LeastLoaded {
    _private: (),
}

impl LeastLoaded {
    /// The policy.
    pub fn new() -> Self {
        Self::default()
    }
}

/// The load of `candidate` before this call (see [`LeastLoaded`]).
fn load(candidate: &Candidate) -> u64 {
    let replicas = u64::from(candidate.replicas);
    match &candidate.load {
        Some(report) => report
            .actors
            .max(replicas)
            .saturating_add(report.inflight_asks),
        None => replicas,
    }
}

impl Placement for LeastLoaded {
    fn place(&self, candidates: &[Candidate], constraints: &Constraints, count: u32) -> Vec<usize> {
        place_with(
            candidates,
            constraints,
            count,
            |_, _| None,
            |candidate, placed| {
                (
                    load(candidate).saturating_add(placed),
                    u64::from(candidate.replicas).saturating_add(placed),
                )
            },
            |domain, &key| (domain, key),
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
            |candidate, left| {
                let removed = u64::from(candidate.replicas).saturating_sub(left);
                (
                    Reverse(left),
                    Reverse(load(candidate).saturating_sub(removed)),
                )
            },
            |domain, &key| (Reverse(domain), key),
        )
    }

    fn name(&self) -> &'static str {
        "least_loaded"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::placement::testing::{load as report, *};

    /// Candidates `n0`, `n1`… without replicas, with `actors` actors each.
    fn loaded(actors: &[u64]) -> Vec<Candidate> {
        nodes(&vec![0; actors.len()])
            .into_iter()
            .zip(actors)
            .map(|(c, &a)| c.load(report(a, 0)))
            .collect()
    }

    #[test]
    fn fresh_group_is_even() {
        let policy = LeastLoaded::new();
        let candidates = nodes(&[0, 0, 0]);
        let picks = policy.place(&candidates, &Constraints::new(), 12);
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2]);
        assert_eq!(after_place(&candidates, &picks), [4, 4, 4]);
        let candidates = loaded(&[7, 7, 7]);
        let picks = policy.place(&candidates, &Constraints::new(), 12);
        assert_eq!(after_place(&candidates, &picks), [4, 4, 4]);
        assert_eq!(policy.name(), "least_loaded");
    }

    #[test]
    fn uneven_group_fills_the_emptiest_first() {
        let policy = LeastLoaded::default();
        // Without reports, a node's load is its replicas.
        let candidates = nodes(&[5, 1, 0]);
        let picks = policy.place(&candidates, &Constraints::new(), 4);
        assert_eq!(picks, [2, 1, 2, 1]);
        assert_eq!(after_place(&candidates, &picks), [5, 3, 2]);
        // A stale report (fewer actors than replicas) counts the replicas.
        let stale: Vec<Candidate> = candidates
            .iter()
            .map(|c| c.clone().load(report(0, 0)))
            .collect();
        assert_eq!(policy.place(&stale, &Constraints::new(), 4), picks);
    }

    #[test]
    fn prefers_low_load_and_spreads_when_equal() {
        let policy = LeastLoaded::new();
        let candidates = loaded(&[100, 10, 50]);
        assert_eq!(policy.place(&candidates, &Constraints::new(), 1), [1]);
        let picks = policy.place(&candidates, &Constraints::new(), 45);
        // n1 catches up with n2 (40 replicas), then the two alternate.
        assert_eq!(after_place(&candidates, &picks), [0, 42, 3]);
        assert!(picks[..40].iter().all(|&i| i == 1));
        assert_eq!(picks[40..], [2, 1, 2, 1, 2]);

        // Asks in flight count as load.
        let busy: Vec<Candidate> = nodes(&[0, 0, 0])
            .into_iter()
            .zip([0, 100, 0])
            .map(|(c, inflight)| c.load(report(5, inflight)))
            .collect();
        let picks = policy.place(&busy, &Constraints::new(), 6);
        assert_eq!(after_place(&busy, &picks), [3, 0, 3]);

        // A node without a report is taken as running only its replicas.
        let mixed = vec![
            Candidate::new(crate::NodeId::new("a")).load(report(5, 0)),
            Candidate::new(crate::NodeId::new("b")).replicas(3),
        ];
        assert_eq!(policy.place(&mixed, &Constraints::new(), 3), [1, 1, 0]);
    }

    #[test]
    fn spread_bound_holds_on_equal_loads() {
        let policy = LeastLoaded::new();
        for n in 1..=7 {
            for r in 0..=50u32 {
                for actors in [0, 1_000] {
                    let candidates = loaded(&vec![actors; n]);
                    let picks = policy.place(&candidates, &Constraints::new(), r);
                    assert_eq!(picks.len(), r as usize);
                    let counts = after_place(&candidates, &picks);
                    let bound = u64::from(r).div_ceil(n as u64);
                    assert!(counts.iter().all(|&c| c <= bound), "{r} on {n}: {counts:?}");
                }
            }
        }
    }

    #[test]
    fn selector_excludes_nodes() {
        let policy = LeastLoaded::new();
        // The least loaded node is not selected.
        let candidates: Vec<Candidate> = loaded(&[0, 10, 10])
            .into_iter()
            .zip(["hdd", "ssd", "ssd"])
            .map(|(c, disk)| c.label("disk", disk))
            .collect();
        let constraints = Constraints::new().select("disk", "ssd");
        let picks = policy.place(&candidates, &constraints, 4);
        assert_eq!(after_place(&candidates, &picks), [0, 2, 2]);
        let none = Constraints::new().select("disk", "nvme");
        assert!(policy.place(&candidates, &none, 4).is_empty());
    }

    #[test]
    fn anti_affinity_across_two_zones() {
        let policy = LeastLoaded::new();
        // Zone a: n0 idle, n1 busy; zone b: n2 fairly busy.
        let candidates: Vec<Candidate> = loaded(&[0, 100, 50])
            .into_iter()
            .zip(["a", "a", "b"])
            .map(|(c, zone)| c.label("zone", zone))
            .collect();
        let constraints = Constraints::new().anti_affinity("zone");
        let picks = policy.place(&candidates, &constraints, 4);
        assert_eq!(after_place(&candidates, &picks), [2, 0, 2]);
        let picks = policy.place(&candidates, &constraints, 7);
        let zones = per_label(&candidates, &picks, "zone");
        assert_eq!(zones.values().copied().collect::<Vec<_>>(), [4, 3]);
        // Without anti-affinity, load alone decides.
        let picks = policy.place(&candidates, &Constraints::new(), 4);
        assert_eq!(after_place(&candidates, &picks), [4, 0, 0]);
    }

    #[test]
    fn max_per_node_caps_and_returns_fewer() {
        let policy = LeastLoaded::new();
        let candidates = loaded(&[0, 50, 100]);
        let constraints = Constraints::new().max_per_node(2);
        let picks = policy.place(&candidates, &constraints, 10);
        assert_eq!(picks, [0, 0, 1, 1, 2, 2]);
        let candidates = nodes(&[3, 1, 0]);
        let picks = policy.place(&candidates, &constraints, 10);
        assert_eq!(after_place(&candidates, &picks), [3, 2, 2]);
    }

    #[test]
    fn remove_picks_the_fullest_then_the_busiest() {
        let policy = LeastLoaded::new();
        let candidates = nodes(&[5, 2, 3]);
        let picks = policy.remove(&candidates, &Constraints::new(), 3);
        assert_eq!(picks, [0, 0, 0]);
        assert_eq!(after_remove(&candidates, &picks), [2, 2, 3]);
        // Equally full: the busier node first.
        let candidates: Vec<Candidate> = nodes(&[2, 2, 2])
            .into_iter()
            .zip([10, 90, 50])
            .map(|(c, actors)| c.load(report(actors, 0)))
            .collect();
        let picks = policy.remove(&candidates, &Constraints::new(), 3);
        assert_eq!(picks, [1, 2, 0]);
        // Violations first.
        let labelled: Vec<Candidate> = nodes(&[1, 3, 1])
            .into_iter()
            .zip(["ssd", "ssd", "hdd"])
            .map(|(c, disk)| c.label("disk", disk))
            .collect();
        let picks = policy.remove(&labelled, &Constraints::new().select("disk", "ssd"), 2);
        assert_eq!(picks, [2, 1]);
    }

    #[test]
    fn degenerate_inputs_and_determinism() {
        degenerate_inputs(&LeastLoaded::new());
        deterministic(&LeastLoaded::new());
    }
}
