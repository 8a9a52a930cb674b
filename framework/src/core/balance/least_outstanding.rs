//! [`LeastOutstanding`]: the available instance with the fewest asks in flight.

use super::{Balancer, Instance, Rng};

/// Picks the available instance with the fewest asks in flight from this caller
/// ([`Instance::outstanding`]), breaking ties uniformly at random.
///
/// Slow instances accumulate outstanding asks and stop being picked until they catch up.
/// Random tie-breaking spreads messages over equally loaded instances (an idle group, or
/// tells, which are never outstanding) instead of always choosing the first of them. Two
/// passes over the group per pick, at most one random draw; the routing key is ignored.
#[derive(Debug)]
pub struct LeastOutstanding {
    rng: Rng,
}

impl LeastOutstanding {
    /// A balancer breaking ties with a generator seeded from entropy.
    pub fn new() -> Self {
        LeastOutstanding {
            rng: Rng::from_entropy(),
        }
    }

    /// A balancer breaking ties with a fixed seed: the same picks for the same snapshots
    /// (tests).
    pub fn with_seed(seed: u64) -> Self {
        LeastOutstanding {
            rng: Rng::new(seed),
        }
    }
}

impl Default for LeastOutstanding {
    fn default() -> Self {
        LeastOutstanding::new()
    }
}

impl Balancer for LeastOutstanding {
    fn pick(&self, instances: &[Instance], _key: Option<u64>) -> Option<usize> {
        // First pass: the minimum, how many instances share it, and the first of them.
        let mut min = usize::MAX;
        let mut ties = 0usize;
        let mut first = None;
        for (i, instance) in instances.iter().enumerate() {
            if !instance.available {
                continue;
            }
            if first.is_none() || instance.outstanding < min {
                min = instance.outstanding;
                ties = 1;
                first = Some(i);
            } else if instance.outstanding == min {
                ties += 1;
            }
        }
        let first = first?;
        if ties == 1 {
            return Some(first);
        }
        // Second pass: a uniformly drawn one of the tied instances.
        let nth = self.rng.below(ties);
        instances
            .iter()
            .enumerate()
            .skip(first)
            .filter(|(_, instance)| instance.available && instance.outstanding == min)
            .nth(nth)
            .map(|(i, _)| i)
    }

    fn name(&self) -> &'static str {
        "least_outstanding"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::balance::synthetic;

    fn min_available(instances: &[Instance]) -> Option<usize> {
        instances
            .iter()
            .filter(|instance| instance.available)
            .map(|instance| instance.outstanding)
            .min()
    }

    #[test]
    fn empty_and_unavailable_give_none() {
        let balancer = LeastOutstanding::with_seed(1);
        assert_eq!(balancer.pick(&[], None), None);
        let mut group = synthetic(3, 1);
        for instance in &mut group {
            instance.available = false;
        }
        assert_eq!(balancer.pick(&group, None), None);
    }

    #[test]
    fn single_instance() {
        let balancer = LeastOutstanding::with_seed(1);
        let mut group = synthetic(1, 1);
        group[0].outstanding = usize::MAX;
        assert_eq!(balancer.pick(&group, None), Some(0));
    }

    #[test]
    fn skips_unavailable_minimum() {
        let balancer = LeastOutstanding::with_seed(3);
        let mut group = synthetic(4, 2);
        for (instance, load) in group.iter_mut().zip([0, 5, 2, 7]) {
            instance.outstanding = load;
        }
        assert_eq!(balancer.pick(&group, None), Some(0));
        group[0].available = false;
        assert_eq!(balancer.pick(&group, None), Some(2));
        group[2].available = false;
        assert_eq!(balancer.pick(&group, None), Some(1));
    }

    #[test]
    fn always_a_minimum_on_random_loads() {
        let balancer = LeastOutstanding::with_seed(5);
        let load = Rng::new(77);
        for round in 0..5_000 {
            let n = 1 + load.below(20);
            let mut group = synthetic(n, 4);
            for instance in &mut group {
                instance.outstanding = load.below(6);
                instance.available = load.below(5) != 0;
            }
            match balancer.pick(&group, None) {
                None => assert!(group.iter().all(|instance| !instance.available)),
                Some(i) => {
                    assert!(group[i].available, "round {round}: {group:?}");
                    assert_eq!(Some(group[i].outstanding), min_available(&group));
                }
            }
        }
    }

    #[test]
    fn ties_spread_evenly() {
        let balancer = LeastOutstanding::with_seed(9);
        let mut group = synthetic(6, 3);
        for (instance, load) in group.iter_mut().zip([3, 1, 4, 1, 5, 1]) {
            instance.outstanding = load;
        }
        let mut counts = [0usize; 6];
        for _ in 0..30_000 {
            counts[balancer.pick(&group, None).unwrap()] += 1;
        }
        assert_eq!((counts[0], counts[2], counts[4]), (0, 0, 0));
        for i in [1, 3, 5] {
            assert!((9_000..11_000).contains(&counts[i]), "{counts:?}");
        }
    }

    #[test]
    fn simulated_load_stays_level() {
        // Each pick adds an ask in flight; a random instance completes one per pick. Through
        // joins, leaves and ejections, every pick is a least loaded available instance.
        let balancer = LeastOutstanding::with_seed(21);
        let completions = Rng::new(4);
        let mut group = synthetic(5, 5);
        for step in 0..20_000 {
            if step == 5_000 {
                // A sixth instance joins, idle: it takes the next picks until level.
                group.extend(synthetic(6, 5).into_iter().skip(5));
            }
            if step == 10_000 {
                // One leaves, taking its asks with it.
                group.remove(1);
            }
            if step == 15_000 {
                group[0].available = false;
            }
            let i = balancer.pick(&group, None).unwrap();
            assert!(group[i].available);
            assert_eq!(Some(group[i].outstanding), min_available(&group));
            group[i].outstanding += 1;
            let done = completions.below(group.len());
            group[done].outstanding = group[done].outstanding.saturating_sub(1);
        }
        assert_eq!(LeastOutstanding::default().name(), "least_outstanding");
    }
}
