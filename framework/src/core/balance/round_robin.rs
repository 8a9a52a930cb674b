//! [`RoundRobin`]: each available instance in turn.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Balancer, Instance};

/// Picks each available instance in turn.
///
/// A cursor remembers the position after the last pick; the next pick is the first available
/// instance at or after it, wrapping around. Unavailable instances are skipped without
/// giving their turn to their neighbour twice, so over `k * N` picks on `N` available
/// instances each gets exactly `k`, also when picks come from many threads at once. When the
/// group changes between picks the cursor simply continues from its position in the new
/// snapshot. The routing key is ignored.
///
/// [`new`](Self::new) starts at a random position, so that many callers that start together
/// do not all send their first message to the same instance;
/// [`with_seed`](Self::with_seed) starts at a fixed one (tests).
#[derive(Debug)]
pub struct RoundRobin {
    /// The position after the last pick (taken modulo the group size).
    cursor: AtomicUsize,
}

impl RoundRobin {
    /// A balancer starting at a random position.
    pub fn new() -> Self {
        RoundRobin::with_seed(crate::id::random_u64())
    }

    /// A balancer whose first pick starts at position `seed` modulo the group size.
    pub fn with_seed(seed: u64) -> Self {
        RoundRobin {
            // Truncation on 32-bit targets only changes the start position.
            cursor: AtomicUsize::new(seed as usize),
        }
    }
}

impl Default for RoundRobin {
    fn default() -> Self {
        RoundRobin::new()
    }
}

impl Balancer for RoundRobin {
    fn pick(&self, instances: &[Instance], _key: Option<u64>) -> Option<usize> {
        let n = instances.len();
        if n == 0 {
            return None;
        }
        let mut picked = None;
        // One successful update per pick: concurrent picks are serialized on the cursor, so
        // the sequence of picks is exactly the sequential round robin.
        let updated = self
            .cursor
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cursor| {
                let start = cursor % n;
                let found = (start..n).chain(0..start).find(|&i| instances[i].available);
                picked = found;
                found.map(|i| i + 1)
            });
        updated.ok().and(picked)
    }

    fn name(&self) -> &'static str {
        "round_robin"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::balance::synthetic;

    fn counts(balancer: &RoundRobin, instances: &[Instance], picks: usize) -> Vec<usize> {
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

    fn spread(counts: &[usize]) -> f64 {
        let live: Vec<usize> = counts.iter().copied().filter(|&c| c > 0).collect();
        let max = *live.iter().max().unwrap() as f64;
        let min = *live.iter().min().unwrap() as f64;
        max / min
    }

    #[test]
    fn empty_and_unavailable_give_none() {
        let balancer = RoundRobin::with_seed(0);
        assert_eq!(balancer.pick(&[], None), None);
        let mut group = synthetic(4, 2);
        for instance in &mut group {
            instance.available = false;
        }
        assert_eq!(balancer.pick(&group, None), None);
        // The cursor did not move: the next pick on the full group starts where it was.
        group[0].available = true;
        group[1].available = true;
        assert_eq!(balancer.pick(&group, None), Some(0));
    }

    #[test]
    fn single_instance() {
        let balancer = RoundRobin::new();
        let group = synthetic(1, 1);
        for _ in 0..10 {
            assert_eq!(balancer.pick(&group, None), Some(0));
        }
    }

    #[test]
    fn in_order() {
        let balancer = RoundRobin::with_seed(0);
        let group = synthetic(3, 3);
        let picks: Vec<usize> = (0..7).filter_map(|_| balancer.pick(&group, None)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn exactly_fair_on_equal_instances() {
        for (n, seed) in [(1, 0), (2, 5), (7, 123), (10, u64::MAX)] {
            let balancer = RoundRobin::with_seed(seed);
            let group = synthetic(n, 3);
            let k = 1_000;
            assert_eq!(counts(&balancer, &group, k * n), vec![k; n]);
        }
        // Also from a random start, over many picks.
        let balancer = RoundRobin::new();
        let group = synthetic(13, 4);
        let counts = counts(&balancer, &group, 130_000);
        assert!(spread(&counts) <= 1.05, "{counts:?}");
    }

    #[test]
    fn skipping_does_not_double_a_neighbour() {
        // Instance 1 is unavailable; 2 must not get its turn as well as its own.
        let balancer = RoundRobin::with_seed(0);
        let mut group = synthetic(4, 2);
        group[1].available = false;
        let picks: Vec<usize> = (0..6).filter_map(|_| balancer.pick(&group, None)).collect();
        assert_eq!(picks, [0, 2, 3, 0, 2, 3]);
        let counts = counts(&balancer, &group, 3_000);
        assert_eq!(counts, [1_000, 0, 1_000, 1_000]);
    }

    #[test]
    fn membership_changes_mid_stream() {
        let balancer = RoundRobin::with_seed(0);
        let mut group = synthetic(4, 2);
        let c = counts(&balancer, &group, 4_001);
        assert!(spread(&c) <= 1.05, "{c:?}");

        // Two join.
        group.extend(synthetic(6, 2).into_iter().skip(4));
        let c = counts(&balancer, &group, 6_000);
        assert_eq!(c, vec![1_000; 6]);

        // One leaves (indices shift), one is ejected.
        group.remove(2);
        group[0].available = false;
        let c = counts(&balancer, &group, 4_000);
        assert_eq!(c, [0, 1_000, 1_000, 1_000, 1_000]);

        // Toggled on every pick: the others stay even.
        let mut c = vec![0; group.len()];
        for step in 0..10_000 {
            group[3].available = step % 2 == 0;
            let i = balancer.pick(&group, None).unwrap();
            assert!(group[i].available);
            c[i] += 1;
        }
        let others: Vec<usize> = [1, 2, 4].iter().map(|&i| c[i]).collect();
        assert!(spread(&others) <= 1.05, "{c:?}");
        assert!(c[0] == 0 && c[3] > 0, "{c:?}");

        // Shrinks below the cursor position.
        group.truncate(2);
        group[0].available = true;
        let c = counts(&balancer, &group, 2_000);
        assert_eq!(c, [1_000, 1_000]);
    }

    #[test]
    fn exactly_fair_across_threads() {
        let balancer = RoundRobin::with_seed(3);
        let group = synthetic(8, 2);
        let totals = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| counts(&balancer, &group, 10_000)))
                .collect();
            let mut totals = vec![0; group.len()];
            for worker in workers {
                for (total, c) in totals.iter_mut().zip(worker.join().unwrap()) {
                    *total += c;
                }
            }
            totals
        });
        assert_eq!(totals, vec![5_000; 8]);
        assert_eq!(RoundRobin::default().name(), "round_robin");
    }
}
