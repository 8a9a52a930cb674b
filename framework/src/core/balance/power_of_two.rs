//! [`PowerOfTwo`]: the less loaded of two random available instances.

use super::random::uniform;
use super::{Balancer, Instance, Rng};

/// Draws two distinct available instances uniformly at random and picks the one with fewer
/// asks in flight ([`Instance::outstanding`]); the first drawn on a tie.
///
/// Nearly as good as [`LeastOutstanding`](super::LeastOutstanding) at avoiding slow
/// instances, but a pick costs two random draws rather than a pass over the group, and many
/// callers with stale views do not all herd onto the same least loaded instance. The most
/// loaded instance is never picked while another available instance has fewer outstanding.
/// A single available instance is picked directly. The routing key is ignored.
#[derive(Debug)]
pub struct PowerOfTwo {
    rng: Rng,
}

impl PowerOfTwo {
    /// A balancer seeded from entropy.
    pub fn new() -> Self {
        PowerOfTwo {
            rng: Rng::from_entropy(),
        }
    }

    /// A balancer with a fixed seed: the same picks for the same snapshots (tests).
    pub fn with_seed(seed: u64) -> Self {
        PowerOfTwo {
            rng: Rng::new(seed),
        }
    }
}

impl Default for PowerOfTwo {
    fn default() -> Self {
        PowerOfTwo::new()
    }
}

impl Balancer for PowerOfTwo {
    fn pick(&self, instances: &[Instance], _key: Option<u64>) -> Option<usize> {
        let a = uniform(&self.rng, instances, |_, instance| instance.available)?;
        let Some(b) = uniform(&self.rng, instances, |i, instance| {
            i != a && instance.available
        }) else {
            return Some(a);
        };
        if instances[b].outstanding < instances[a].outstanding {
            Some(b)
        } else {
            Some(a)
        }
    }

    fn name(&self) -> &'static str {
        "power_of_two"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::balance::synthetic;

    fn counts(balancer: &PowerOfTwo, instances: &[Instance], picks: usize) -> Vec<usize> {
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

    #[test]
    fn empty_and_unavailable_give_none() {
        let balancer = PowerOfTwo::with_seed(1);
        assert_eq!(balancer.pick(&[], None), None);
        let mut group = synthetic(6, 2);
        for instance in &mut group {
            instance.available = false;
        }
        for _ in 0..100 {
            assert_eq!(balancer.pick(&group, None), None);
        }
    }

    #[test]
    fn single_available_is_picked_directly() {
        let balancer = PowerOfTwo::with_seed(2);
        let group = synthetic(1, 1);
        assert_eq!(balancer.pick(&group, None), Some(0));
        let mut group = synthetic(9, 3);
        for (i, instance) in group.iter_mut().enumerate() {
            instance.available = i == 6;
            instance.outstanding = 100 - i;
        }
        for _ in 0..100 {
            assert_eq!(balancer.pick(&group, None), Some(6));
        }
    }

    #[test]
    fn two_instances_always_the_less_loaded() {
        let balancer = PowerOfTwo::with_seed(3);
        let mut group = synthetic(2, 2);
        group[0].outstanding = 4;
        group[1].outstanding = 3;
        for _ in 0..1_000 {
            assert_eq!(balancer.pick(&group, None), Some(1));
        }
    }

    #[test]
    fn never_the_most_loaded_with_distinct_loads() {
        let balancer = PowerOfTwo::with_seed(4);
        let n = 10;
        let mut group = synthetic(n, 3);
        // Distinct loads, most loaded in the middle.
        for (instance, load) in group.iter_mut().zip([3, 9, 0, 7, 12, 1, 5, 8, 2, 4]) {
            instance.outstanding = load;
        }
        let picks = 100_000;
        let counts = counts(&balancer, &group, picks);
        assert_eq!(counts[4], 0, "{counts:?}");
        // The least loaded wins whenever it is drawn: with probability 2/n.
        let least = counts[2] as f64 / picks as f64;
        assert!((least - 2.0 / n as f64).abs() < 0.01, "{counts:?}");
        // The second most loaded wins only against the most loaded: 2/(n(n-1)).
        let second = counts[1] as f64 / picks as f64;
        assert!(
            (second - 2.0 / (n * (n - 1)) as f64).abs() < 0.005,
            "{counts:?}"
        );
    }

    #[test]
    fn equal_loads_spread_evenly() {
        let balancer = PowerOfTwo::with_seed(5);
        let group = synthetic(8, 2);
        let counts = counts(&balancer, &group, 80_000);
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn membership_changes_mid_stream() {
        let balancer = PowerOfTwo::with_seed(6);
        let mut group = synthetic(3, 3);
        for (instance, load) in group.iter_mut().zip([1, 2, 3]) {
            instance.outstanding = load;
        }
        let c = counts(&balancer, &group, 3_000);
        assert_eq!(c[2], 0, "{c:?}");

        // A fourth, busier instance joins: it is now the one never picked.
        group.extend(synthetic(4, 3).into_iter().skip(3));
        group[3].outstanding = 10;
        let c = counts(&balancer, &group, 4_000);
        assert!(c[2] > 0 && c[3] == 0, "{c:?}");

        // The least loaded is ejected, then the busiest leaves.
        group[0].available = false;
        let c = counts(&balancer, &group, 3_000);
        assert!(c[0] == 0 && c[3] == 0, "{c:?}");
        group.pop();
        let c = counts(&balancer, &group, 1_000);
        assert_eq!(c, [0, 1_000, 0]);

        // Availability toggled on every pick.
        let mut c = vec![0; group.len()];
        for step in 0..10_000 {
            group[0].available = step % 2 == 0;
            let i = balancer.pick(&group, None).unwrap();
            assert!(group[i].available);
            c[i] += 1;
        }
        assert_eq!(c[2], 0, "{c:?}");
        assert_eq!(PowerOfTwo::default().name(), "power_of_two");
    }

    #[test]
    fn simulated_slow_instance_keeps_a_short_queue() {
        // One arrival per step. Seven fast instances complete an ask with probability 1/4
        // per step, a slow one with probability 1/40: picked at random, the slow one would
        // get 1/8 of the traffic, five times what it serves, and its queue would grow
        // without bound. p2c keeps it short.
        let balancer = PowerOfTwo::with_seed(7);
        let service = Rng::new(8);
        let mut group = synthetic(8, 4);
        let mut max_slow = 0;
        let mut max_fast = 0;
        for _ in 0..50_000 {
            let i = balancer.pick(&group, None).unwrap();
            group[i].outstanding += 1;
            for (j, instance) in group.iter_mut().enumerate() {
                let odds = if j == 0 { 40 } else { 4 };
                if instance.outstanding > 0 && service.below(odds) == 0 {
                    instance.outstanding -= 1;
                }
            }
            max_slow = max_slow.max(group[0].outstanding);
            max_fast = group[1..]
                .iter()
                .map(|instance| instance.outstanding)
                .fold(max_fast, usize::max);
        }
        assert!(max_slow <= 20, "slow {max_slow}, fast {max_fast}");
    }
}
