//! [`Random`]: uniformly at random among the available instances.

use super::{Balancer, Instance, Rng};

/// Picks uniformly at random among the available instances.
///
/// Stateless apart from its generator, so many independent callers spread their messages
/// evenly without coordinating. A pick costs one random draw when most instances are
/// available, and one pass over the group otherwise. The routing key is ignored.
#[derive(Debug)]
pub struct Random {
    rng: Rng,
}

impl Random {
    /// A balancer seeded from entropy.
    pub fn new() -> Self {
        Random {
            rng: Rng::from_entropy(),
        }
    }

    /// A balancer with a fixed seed: the same picks for the same snapshots (tests).
    pub fn with_seed(seed: u64) -> Self {
        Random {
            rng: Rng::new(seed),
        }
    }
}

impl Default for Random {
    fn default() -> Self {
        Random::new()
    }
}

impl Balancer for Random {
    fn pick(&self, instances: &[Instance], _key: Option<u64>) -> Option<usize> {
        uniform(&self.rng, instances, |_, instance| instance.available)
    }

    fn name(&self) -> &'static str {
        "random"
    }
}

/// How many blind draws [`uniform`] tries before it counts the eligible instances.
const DRAWS: usize = 4;

/// The index of an instance drawn uniformly among those for which `eligible(index,
/// instance)` holds, or `None` if there is none. Does not allocate.
///
/// A few draws over the whole slice first (each accepted draw is uniform among the eligible
/// instances), then, if they all missed, one counting pass and one draw among the eligible:
/// uniform either way, and cheap when most instances are eligible.
pub(super) fn uniform(
    rng: &Rng,
    instances: &[Instance],
    eligible: impl Fn(usize, &Instance) -> bool,
) -> Option<usize> {
    let n = instances.len();
    if n == 0 {
        return None;
    }
    for _ in 0..DRAWS {
        let i = rng.below(n);
        if eligible(i, &instances[i]) {
            return Some(i);
        }
    }
    let count = instances
        .iter()
        .enumerate()
        .filter(|&(i, instance)| eligible(i, instance))
        .count();
    if count == 0 {
        return None;
    }
    let nth = rng.below(count);
    instances
        .iter()
        .enumerate()
        .filter(|&(i, instance)| eligible(i, instance))
        .nth(nth)
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::balance::synthetic;

    fn counts(balancer: &Random, instances: &[Instance], picks: usize) -> Vec<usize> {
        let mut counts = vec![0; instances.len()];
        for _ in 0..picks {
            let i = balancer
                .pick(instances, None)
                .expect("an instance is available");
            assert!(instances[i].available, "picked unavailable instance {i}");
            counts[i] += 1;
        }
        counts
    }

    /// Pearson's chi-square statistic of `counts` against a uniform distribution over the
    /// instances whose count is expected to be non-zero.
    fn chi_square(counts: &[usize], expected: f64) -> f64 {
        counts
            .iter()
            .map(|&c| {
                let d = c as f64 - expected;
                d * d / expected
            })
            .sum()
    }

    #[test]
    fn empty_and_unavailable_give_none() {
        let balancer = Random::with_seed(1);
        assert_eq!(balancer.pick(&[], None), None);
        let mut group = synthetic(5, 2);
        for instance in &mut group {
            instance.available = false;
        }
        for _ in 0..100 {
            assert_eq!(balancer.pick(&group, None), None);
            assert_eq!(balancer.pick(&group, Some(3)), None);
        }
    }

    #[test]
    fn single_instance() {
        let balancer = Random::with_seed(2);
        let group = synthetic(1, 1);
        for _ in 0..100 {
            assert_eq!(balancer.pick(&group, None), Some(0));
        }
    }

    #[test]
    fn roughly_uniform() {
        let balancer = Random::with_seed(0x5eed);
        let group = synthetic(10, 3);
        let picks = 100_000;
        let counts = counts(&balancer, &group, picks);
        // 9 degrees of freedom: P(chi2 > 40) is about 1e-5.
        let chi2 = chi_square(&counts, picks as f64 / 10.0);
        assert!(chi2 < 40.0, "chi2 = {chi2}, counts = {counts:?}");
    }

    #[test]
    fn uniform_among_available_when_most_are_unavailable() {
        // 3 of 50 available: the blind draws mostly miss and the counting pass decides.
        let balancer = Random::with_seed(11);
        let mut group = synthetic(50, 5);
        for (i, instance) in group.iter_mut().enumerate() {
            instance.available = matches!(i, 3 | 17 | 49);
        }
        let picks = 30_000;
        let counts = counts(&balancer, &group, picks);
        let live: Vec<usize> = [3, 17, 49].iter().map(|&i| counts[i]).collect();
        assert_eq!(live.iter().sum::<usize>(), picks);
        // 2 degrees of freedom: P(chi2 > 25) is about 4e-6.
        let chi2 = chi_square(&live, picks as f64 / 3.0);
        assert!(chi2 < 25.0, "chi2 = {chi2}, counts = {live:?}");
    }

    #[test]
    fn membership_changes_mid_stream() {
        let balancer = Random::with_seed(99);
        let mut group = synthetic(4, 2);
        let before = counts(&balancer, &group, 8_000);
        assert!(
            before.iter().all(|&c| (1_700..2_300).contains(&c)),
            "{before:?}"
        );

        // Two instances join.
        group.extend(synthetic(6, 2).into_iter().skip(4));
        let joined = counts(&balancer, &group, 12_000);
        assert!(
            joined.iter().all(|&c| (1_700..2_300).contains(&c)),
            "{joined:?}"
        );

        // One leaves, another becomes unavailable.
        group.remove(0);
        group[2].available = false;
        let changed = counts(&balancer, &group, 8_000);
        assert_eq!(changed[2], 0);
        for (i, &c) in changed.iter().enumerate() {
            if i != 2 {
                assert!((1_700..2_300).contains(&c), "{changed:?}");
            }
        }

        // And it comes back.
        group[2].available = true;
        let back = counts(&balancer, &group, 10_000);
        assert!(
            back.iter().all(|&c| (1_700..2_300).contains(&c)),
            "{back:?}"
        );
    }

    #[test]
    fn seeded_is_deterministic() {
        let group = synthetic(16, 4);
        let a = Random::with_seed(42);
        let b = Random::with_seed(42);
        for _ in 0..1_000 {
            assert_eq!(a.pick(&group, None), b.pick(&group, None));
        }
        assert_eq!(Random::default().name(), "random");
    }
}
