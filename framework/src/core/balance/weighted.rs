//! [`Weighted`]: smooth weighted round robin over the instance weights.

use std::sync::{Mutex, TryLockError};

use super::{Balancer, Instance, Rng};

/// Picks instances in proportion to their [`weight`](Instance::weight) with smooth weighted
/// round robin (nginx's algorithm), deterministic rather than random.
///
/// Each instance has a current weight. On every pick, each available instance's current
/// weight grows by its share of the weight of the available instances, the instance with the
/// highest current weight is picked (the first of them on a tie), and its current weight
/// drops by one. On an unchanged group, a new balancer gives each instance exactly
/// `k × weight` of the first `k × total` picks, and the picks of a heavy instance are
/// interleaved with the others rather than bunched (weights 5, 1, 1 give `a a b a c a a`).
/// An instance of weight 0 is never picked; `None` when no instance of nonzero weight is
/// available. The routing key is ignored.
///
/// nginx adds the weights themselves and subtracts their total; dividing through by the
/// total (in exact fixed point) changes nothing while the same instances stay available,
/// and keeps the proportions right when availability changes from pick to pick, where the
/// integer form would let an instance picked while heavier ones are unavailable get more
/// than its share. Current weights are kept per instance [`identity`](Instance::identity),
/// so instances joining, leaving or moving in the snapshot do not reset the others; a
/// newcomer starts at zero. An unavailable instance keeps its current weight (no credit
/// accrues while it is unavailable, so it does not get a burst when it is back).
///
/// The state is behind a lock held for one pass over the group. A pick never waits for it:
/// if another thread holds it, the pick falls back to weighted random (the same proportions
/// in expectation, without the smoothness), so that concurrent callers never block.
#[derive(Debug)]
pub struct Weighted {
    state: Mutex<State>,
    /// For the picks that find the state busy.
    rng: Rng,
}

/// The current weights of the instances of the last snapshot.
#[derive(Debug, Default)]
struct State {
    /// (identity, current weight in units of [`ONE`]), in the order of the last snapshot.
    peers: Vec<(u64, i128)>,
}

/// One pick, in the units of current weights. A share per pick is `weight × 2^64 / total`
/// units rounded down: even weight 1 among instances of the largest weight gets at least
/// `2^32 / instances` units, and the rounding is under one unit per pick.
const ONE: i128 = 1 << 64;

impl Weighted {
    /// A balancer; the fallback for concurrent picks is seeded from entropy.
    pub fn new() -> Self {
        Weighted {
            state: Mutex::default(),
            rng: Rng::from_entropy(),
        }
    }

    /// A balancer whose fallback for concurrent picks uses a fixed seed (tests). Picks that
    /// do not overlap never depend on the seed.
    pub fn with_seed(seed: u64) -> Self {
        Weighted {
            state: Mutex::default(),
            rng: Rng::new(seed),
        }
    }
}

impl Default for Weighted {
    fn default() -> Self {
        Weighted::new()
    }
}

impl Balancer for Weighted {
    fn pick(&self, instances: &[Instance], _key: Option<u64>) -> Option<usize> {
        let mut state = match self.state.try_lock() {
            Ok(state) => state,
            // Nothing in here panics, but a poisoned state is still a valid state.
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return weighted_random(&self.rng, instances),
        };
        state.pick(instances)
    }

    fn name(&self) -> &'static str {
        "weighted"
    }
}

impl State {
    /// One step of smooth weighted round robin on `instances`.
    fn pick(&mut self, instances: &[Instance]) -> Option<usize> {
        self.sync(instances);
        let total: u64 = instances
            .iter()
            .filter(|instance| eligible(instance))
            .map(|instance| u64::from(instance.weight))
            .sum();
        if total == 0 {
            return None;
        }
        let mut best: Option<(usize, i128)> = None;
        for (i, (instance, (_, current))) in instances.iter().zip(&mut self.peers).enumerate() {
            if !eligible(instance) {
                continue;
            }
            // weight / total in units of ONE: at most ONE, rounded down.
            let share = (u128::from(instance.weight) << 64) / u128::from(total);
            *current = current.saturating_add(share as i128);
            if best.is_none_or(|(_, highest)| *current > highest) {
                best = Some((i, *current));
            }
        }
        let (picked, _) = best?;
        let current = &mut self.peers[picked].1;
        *current = current.saturating_sub(ONE);
        Some(picked)
    }

    /// Lines the current weights up with the snapshot: unchanged if it holds the same
    /// instances in the same order, otherwise carried over by identity (allocates, but only
    /// when the group changed).
    fn sync(&mut self, instances: &[Instance]) {
        let same = self.peers.len() == instances.len()
            && self
                .peers
                .iter()
                .zip(instances)
                .all(|((identity, _), instance)| *identity == instance.identity());
        if same {
            return;
        }
        let mut old = std::mem::take(&mut self.peers);
        old.sort_unstable_by_key(|&(identity, _)| identity);
        self.peers = instances
            .iter()
            .map(|instance| {
                let identity = instance.identity();
                let current = old
                    .binary_search_by_key(&identity, |&(identity, _)| identity)
                    .map_or(0, |at| old[at].1);
                (identity, current)
            })
            .collect();
    }
}

/// Whether the instance may be picked at all.
fn eligible(instance: &Instance) -> bool {
    instance.available && instance.weight > 0
}

/// An available instance of nonzero weight drawn with probability proportional to its
/// weight.
fn weighted_random(rng: &Rng, instances: &[Instance]) -> Option<usize> {
    let total: u64 = instances
        .iter()
        .filter(|instance| eligible(instance))
        .map(|instance| u64::from(instance.weight))
        .sum();
    if total == 0 {
        return None;
    }
    let mut point = ((u128::from(rng.next()) * u128::from(total)) >> 64) as u64;
    for (i, instance) in instances.iter().enumerate() {
        if !eligible(instance) {
            continue;
        }
        let weight = u64::from(instance.weight);
        if point < weight {
            return Some(i);
        }
        point -= weight;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::balance::synthetic;

    fn weighted_group(weights: &[u32]) -> Vec<Instance> {
        let mut group = synthetic(weights.len(), 3);
        for (instance, &weight) in group.iter_mut().zip(weights) {
            instance.weight = weight;
        }
        group
    }

    fn counts(balancer: &Weighted, instances: &[Instance], picks: usize) -> Vec<usize> {
        let mut counts = vec![0; instances.len()];
        for _ in 0..picks {
            let i = balancer
                .pick(instances, None)
                .expect("an instance is available");
            assert!(eligible(&instances[i]), "picked instance {i}");
            counts[i] += 1;
        }
        counts
    }

    /// Asserts that each instance's share of `counts` is within 2% (relative) of its share
    /// of the weight of the eligible instances.
    fn assert_proportional(counts: &[usize], instances: &[Instance]) {
        let picks: usize = counts.iter().sum();
        let total: u32 = instances
            .iter()
            .filter(|instance| eligible(instance))
            .map(|instance| instance.weight)
            .sum();
        for (count, instance) in counts.iter().zip(instances) {
            let expected = if eligible(instance) {
                picks as f64 * f64::from(instance.weight) / f64::from(total)
            } else {
                0.0
            };
            assert!(
                (*count as f64 - expected).abs() <= 0.02 * expected,
                "{counts:?} for {instances:?}"
            );
        }
    }

    #[test]
    fn empty_and_unavailable_give_none() {
        let balancer = Weighted::with_seed(1);
        assert_eq!(balancer.pick(&[], None), None);
        let mut group = weighted_group(&[1, 2, 3]);
        for instance in &mut group {
            instance.available = false;
        }
        assert_eq!(balancer.pick(&group, None), None);
        let zero = weighted_group(&[0, 0]);
        assert_eq!(balancer.pick(&zero, None), None);
        let rng = Rng::new(1);
        assert_eq!(weighted_random(&rng, &group), None);
        assert_eq!(weighted_random(&rng, &zero), None);
        assert_eq!(weighted_random(&rng, &[]), None);
    }

    #[test]
    fn single_instance() {
        let balancer = Weighted::with_seed(1);
        let group = weighted_group(&[7]);
        for _ in 0..10 {
            assert_eq!(balancer.pick(&group, None), Some(0));
        }
        let group = weighted_group(&[0, u32::MAX, 0]);
        for _ in 0..10 {
            assert_eq!(balancer.pick(&group, None), Some(1));
        }
    }

    #[test]
    fn smooth_like_nginx() {
        let balancer = Weighted::new();
        let group = weighted_group(&[5, 1, 1]);
        let picks: Vec<usize> = (0..14)
            .filter_map(|_| balancer.pick(&group, None))
            .collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn exact_proportions_on_a_steady_group() {
        let balancer = Weighted::new();
        let group = weighted_group(&[1, 2, 3, 4]);
        assert_eq!(
            counts(&balancer, &group, 10_000),
            [1_000, 2_000, 3_000, 4_000]
        );
        let group = weighted_group(&[3, 0, 1, 7, 0, 1]);
        let c = counts(&balancer, &group, 120_000);
        assert_eq!(c, [30_000, 0, 10_000, 70_000, 0, 10_000]);
        assert_proportional(&c, &group);
    }

    #[test]
    fn huge_weights_do_not_overflow() {
        let balancer = Weighted::new();
        let group = weighted_group(&[u32::MAX, u32::MAX, 1, u32::MAX - 1]);
        let c = counts(&balancer, &group, 3_000);
        assert_eq!(c[2], 0);
        assert!(
            c[0].abs_diff(c[1]) <= 1 && c[1].abs_diff(c[3]) <= 1,
            "{c:?}"
        );
    }

    #[test]
    fn membership_changes_mid_stream() {
        let balancer = Weighted::new();
        let mut group = weighted_group(&[1, 2, 3]);
        let c = counts(&balancer, &group, 6_001);
        assert_proportional(&c, &group);

        // A heavy instance joins, between rounds.
        let mut joiner = synthetic(4, 3).pop().unwrap();
        joiner.weight = 4;
        group.push(joiner);
        let c = counts(&balancer, &group, 10_000);
        assert_proportional(&c, &group);

        // One leaves from the middle (indices shift), one gets weight 0.
        group.remove(1);
        group[0].weight = 0;
        let c = counts(&balancer, &group, 7_000);
        assert_eq!(c[0], 0);
        assert_proportional(&c, &group);

        // Availability toggled on every third pick; instance 2 is never picked while down.
        group[0].weight = 1;
        let mut c = vec![0; group.len()];
        let mut down = 0;
        for step in 0..24_000 {
            group[2].available = step % 3 != 0;
            let i = balancer.pick(&group, None).unwrap();
            assert!(group[i].available);
            if !group[2].available {
                down += 1;
            }
            c[i] += 1;
        }
        assert_eq!(down, 8_000);
        // Weights 1, 3, 4: while 2 is up (16_000 picks) shares 1/8, 3/8, 4/8; while it is
        // down (8_000 picks) 1/4, 3/4.
        for (count, expected) in c.iter().zip([4_000.0, 12_000.0, 8_000.0]) {
            assert!((*count as f64 - expected).abs() <= 0.02 * expected, "{c:?}");
        }

        // Reordered snapshot: the state follows the instances, not the indices.
        group[2].available = true;
        group.reverse();
        let c = counts(&balancer, &group, 8_000);
        assert_proportional(&c, &group);
    }

    #[test]
    fn weighted_random_fallback_is_proportional() {
        let rng = Rng::new(0xfeed);
        let group = weighted_group(&[1, 2, 0, 3, 4]);
        let mut c = vec![0; group.len()];
        for _ in 0..200_000 {
            c[weighted_random(&rng, &group).unwrap()] += 1;
        }
        assert_eq!(c[2], 0);
        assert_proportional(&c, &group);
    }

    #[test]
    fn concurrent_picks_stay_proportional() {
        let balancer = Weighted::with_seed(5);
        let group = weighted_group(&[1, 3, 0, 4]);
        let totals = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| counts(&balancer, &group, 50_000)))
                .collect();
            let mut totals = vec![0; group.len()];
            for worker in workers {
                for (total, c) in totals.iter_mut().zip(worker.join().unwrap()) {
                    *total += c;
                }
            }
            totals
        });
        assert_eq!(totals[2], 0);
        assert_proportional(&totals, &group);
        assert_eq!(Weighted::default().name(), "weighted");
    }
}
