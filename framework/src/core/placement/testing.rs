//! Helpers for the tests of the policies.

use std::collections::BTreeMap;

use super::{Candidate, Constraints, Placement, MAX_COUNT};
use crate::core::model::LoadReport;
use crate::id::NodeId;

/// Candidates `n0`, `n1`… with the given replicas.
pub(crate) fn nodes(replicas: &[u32]) -> Vec<Candidate> {
    replicas
        .iter()
        .enumerate()
        .map(|(i, &r)| Candidate::new(NodeId::new(format!("n{i}"))).replicas(r))
        .collect()
}

/// A load report with `actors` actors and `inflight` asks in flight.
pub(crate) fn load(actors: u64, inflight: u64) -> LoadReport {
    LoadReport {
        actors,
        inflight_asks: inflight,
        send_queue_bytes: 0,
        asks_per_second: 0.0,
        at_ms: 0,
    }
}

/// The replicas of each candidate once `picks` are added.
pub(crate) fn after_place(candidates: &[Candidate], picks: &[usize]) -> Vec<u64> {
    let mut counts: Vec<u64> = candidates.iter().map(|c| u64::from(c.replicas)).collect();
    for &i in picks {
        counts[i] += 1;
    }
    counts
}

/// The replicas of each candidate once `picks` are removed.
pub(crate) fn after_remove(candidates: &[Candidate], picks: &[usize]) -> Vec<u64> {
    let mut counts: Vec<u64> = candidates.iter().map(|c| u64::from(c.replicas)).collect();
    for &i in picks {
        counts[i] -= 1;
    }
    counts
}

/// How many picks each node id got.
pub(crate) fn by_node(candidates: &[Candidate], picks: &[usize]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for &i in picks {
        *counts
            .entry(candidates[i].node.as_str().to_owned())
            .or_default() += 1;
    }
    counts
}

/// The replicas per value of `key` once `picks` are added.
pub(crate) fn per_label(
    candidates: &[Candidate],
    picks: &[usize],
    key: &str,
) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for (c, n) in candidates.iter().zip(after_place(candidates, picks)) {
        if let Some(value) = c.labels.get(key) {
            *counts.entry(value.clone()).or_default() += n;
        }
    }
    counts
}

/// A fixed reordering of `candidates` (reversed, then rotated).
pub(crate) fn shuffled(candidates: &[Candidate]) -> Vec<Candidate> {
    let mut shuffled: Vec<Candidate> = candidates.iter().rev().cloned().collect();
    let len = shuffled.len();
    if len > 0 {
        shuffled.rotate_left(len / 3 + 1);
    }
    shuffled
}

/// Checks that `policy` neither panics nor misbehaves on degenerate inputs.
pub(crate) fn degenerate_inputs(policy: &dyn Placement) {
    let none = Constraints::new();
    assert!(policy.place(&[], &none, 5).is_empty());
    assert!(policy.remove(&[], &none, 5).is_empty());
    let three = nodes(&[0, 1, 2]);
    assert!(policy.place(&three, &none, 0).is_empty());
    assert!(policy.remove(&three, &none, 0).is_empty());

    // Everything filtered out.
    let ssd = Constraints::new().select("disk", "ssd");
    assert!(policy.place(&three, &ssd, 5).is_empty());
    let zoned = Constraints::new().anti_affinity("zone");
    assert!(policy.place(&three, &zoned, 5).is_empty());
    assert!(policy
        .place(&three, &Constraints::new().max_per_node(0), 5)
        .is_empty());
    // Unadmitted nodes still lose their replicas.
    assert_eq!(policy.remove(&three, &ssd, 10).len(), 3);

    // Huge counts, replicas and loads.
    let capped = Constraints::new().max_per_node(3);
    assert_eq!(policy.place(&three, &capped, u32::MAX).len(), 3 + 2 + 1);
    let picks = policy.place(&three, &none, u32::MAX);
    assert_eq!(picks.len(), MAX_COUNT as usize);
    let full: Vec<Candidate> = nodes(&[u32::MAX, u32::MAX - 1, 0])
        .into_iter()
        .map(|c| c.load(load(u64::MAX, u64::MAX)))
        .collect();
    let picks = policy.place(&full, &none, 100);
    assert_eq!(picks.len(), 100);
    let picks = policy.place(&full, &Constraints::new().max_per_node(u32::MAX), 100);
    assert_eq!(after_place(&full, &picks)[0], u64::from(u32::MAX));
    assert_eq!(
        policy.remove(&full, &none, u32::MAX).len(),
        MAX_COUNT as usize
    );
    let picks = policy.remove(&nodes(&[2, 0, 1]), &none, u32::MAX);
    assert_eq!(after_remove(&nodes(&[2, 0, 1]), &picks), [0, 0, 0]);
}

/// Checks that `policy` answers the same for the same snapshot, and gives the same node
/// ids for a reordered snapshot.
pub(crate) fn deterministic(policy: &dyn Placement) {
    let zones = ["a", "b", "c"];
    let candidates: Vec<Candidate> = nodes(&[3, 0, 1, 4, 0, 2, 1])
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            c.label("zone", zones[i % 3])
                .load(load(10 * (i as u64 % 2), 0))
        })
        .collect();
    for constraints in [
        Constraints::new(),
        Constraints::new().anti_affinity("zone"),
        Constraints::new().max_per_node(4),
        Constraints::new().anti_affinity("zone").max_per_node(3),
    ] {
        for count in [1, 5, 13, 40] {
            let picks = policy.place(&candidates, &constraints, count);
            assert_eq!(picks, policy.place(&candidates, &constraints, count));
            let other = shuffled(&candidates);
            let again = policy.place(&other, &constraints, count);
            assert_eq!(
                by_node(&candidates, &picks),
                by_node(&other, &again),
                "{constraints:?} {count}"
            );

            let picks = policy.remove(&candidates, &constraints, count);
            assert_eq!(picks, policy.remove(&candidates, &constraints, count));
            let again = policy.remove(&other, &constraints, count);
            assert_eq!(
                by_node(&candidates, &picks),
                by_node(&other, &again),
                "{constraints:?} {count}"
            );
        }
    }
}
