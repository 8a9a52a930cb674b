//! [`ConsistentHash`]: weighted rendezvous hashing on the routing key.

use super::random::uniform;
use super::{Balancer, Instance, Rng};

/// Routes by key with weighted rendezvous hashing (highest random weight): the same key goes
/// to the same instance while the group is unchanged.
///
/// Every instance gets a score for the key, `weight / -ln(u)` where `u` in (0, 1) is a hash
/// of the key and the instance's [`identity`](Instance::identity), and the available
/// instance with the highest score takes the key. Hence:
///
/// - the choice depends on the instances, not on their order in the snapshot;
/// - an instance joining one of `N` takes about `1/(N+1)` of the keys, all from the others,
///   and an instance leaving hands only its own keys over, spread over the others;
/// - an instance takes a share of the keys proportional to its weight; an instance of
///   weight 0 is never picked;
/// - when the instance of a key is unavailable, the key goes to the available instance with
///   the next highest score, and comes back when it is available again; `None` when no
///   instance of nonzero weight is available.
///
/// A pick is one pass over the group (a hash and a logarithm per instance), without
/// allocating.
///
/// **Without a key** it behaves like [`Random`](super::Random): uniformly at random among
/// the available instances of nonzero weight (weights do not skew that choice, and the load
/// bound does not apply).
///
/// **Bounded load** ([`with_load_bound`](Self::with_load_bound), off by default): an
/// instance takes a key only while its asks in flight are below `c` times its fair share of
/// the load, `c × (total outstanding + 1) × weight / total weight` over the available
/// instances;
/// otherwise the key goes on to the next highest score. With equal weights that is about
/// `c` times the average, so a hot key cannot pile onto one instance, at the price of
/// moving some of its messages (and per-key ordering) elsewhere while it is hot. There is
/// always an instance below the bound, so the bound never makes a pick fail.
#[derive(Debug)]
pub struct ConsistentHash {
    rng: Rng,
    /// `c`, at least 1, if loads are bounded.
    load_bound: Option<f64>,
}

impl ConsistentHash {
    /// A balancer without load bound; picks without a key are seeded from entropy.
    pub fn new() -> Self {
        ConsistentHash {
            rng: Rng::from_entropy(),
            load_bound: None,
        }
    }

    /// A balancer without load bound whose picks without a key use a fixed seed (tests).
    /// Picks with a key never depend on the seed.
    pub fn with_seed(seed: u64) -> Self {
        ConsistentHash {
            rng: Rng::new(seed),
            load_bound: None,
        }
    }

    /// Bounds the load: an instance takes a key only while its outstanding asks are below
    /// `c` times its fair share (see the [type docs](Self)). Typical values are 1.25 to 2;
    /// the lower, the more evenly loaded and the less sticky. `c` below 1 (or NaN) is taken
    /// as 1, and an infinite `c` means no bound.
    pub fn with_load_bound(mut self, c: f64) -> Self {
        self.load_bound = if c.is_infinite() {
            None
        } else {
            // `max` maps NaN to 1 as well.
            Some(c.max(1.0))
        };
        self
    }

    /// The instance for `key`: the highest score among the available instances of nonzero
    /// weight, below the load bound if there is one.
    fn by_key(&self, instances: &[Instance], key: u64) -> Option<usize> {
        // The fair share of load per unit of weight, times c, if loads are bounded.
        let per_weight = self.load_bound.and_then(|c| {
            let (load, weight) = instances.iter().filter(|instance| eligible(instance)).fold(
                (0u64, 0u64),
                |(load, weight), instance| {
                    (
                        load.saturating_add(instance.outstanding as u64),
                        weight + u64::from(instance.weight),
                    )
                },
            );
            (weight > 0).then(|| c * (load as f64 + 1.0) / weight as f64)
        });

        let key_hash = mix(key);
        // The best of all and the best below the bound, as (score, identity, index).
        let mut best: Option<(f64, u64, usize)> = None;
        let mut best_bounded: Option<(f64, u64, usize)> = None;
        for (i, instance) in instances.iter().enumerate() {
            if !eligible(instance) {
                continue;
            }
            let identity = instance.identity();
            let candidate = (score(key_hash, identity, instance.weight), identity, i);
            if beats(candidate, best) {
                best = Some(candidate);
            }
            if let Some(per_weight) = per_weight {
                let share = per_weight * f64::from(instance.weight);
                if (instance.outstanding as f64) < share && beats(candidate, best_bounded) {
                    best_bounded = Some(candidate);
                }
            }
        }
        // Without a bound `best_bounded` stays empty. With one it is empty only if rounding
        // put every instance at its bound: then the bound is ignored rather than fail.
        best_bounded.or(best).map(|(_, _, i)| i)
    }
}

impl Default for ConsistentHash {
    fn default() -> Self {
        ConsistentHash::new()
    }
}

impl Balancer for ConsistentHash {
    fn pick(&self, instances: &[Instance], key: Option<u64>) -> Option<usize> {
        match key {
            Some(key) => self.by_key(instances, key),
            None => uniform(&self.rng, instances, |_, instance| eligible(instance)),
        }
    }

    fn name(&self) -> &'static str {
        "consistent_hash"
    }
}

/// Whether the instance may be picked at all.
fn eligible(instance: &Instance) -> bool {
    instance.available && instance.weight > 0
}

/// Whether `candidate` beats `best`: a higher score, or on an exact tie (all but impossible)
/// the higher identity, so that the choice never depends on the order of the snapshot.
fn beats(candidate: (f64, u64, usize), best: Option<(f64, u64, usize)>) -> bool {
    match best {
        None => true,
        Some((score, identity, _)) => {
            candidate.0 > score || (candidate.0 == score && candidate.1 > identity)
        }
    }
}

/// The rendezvous score of an instance for a key: `weight / -ln(u)`, with `u` a hash of both
/// mapped into (0, 1). `-1 / ln(u)` ranks instances like `u` itself, and multiplying by the
/// weight makes an instance win with probability proportional to its weight (the winner of
/// a race of exponential variables of rates `weight`).
fn score(key_hash: u64, identity: u64, weight: u32) -> f64 {
    let h = mix(key_hash ^ identity);
    // The top 53 bits, at the centre of their interval: strictly inside (0, 1).
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(weight) / -u.ln()
}

/// A 64-bit finalizer (SplitMix64's): a bijection in which every input bit flips about half
/// of the output bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::balance::synthetic;
    use crate::id::{ActorId, NodeId};

    const KEYS: u64 = 10_000;

    /// The keys of the tests: arbitrary but fixed, not consecutive.
    fn key(k: u64) -> u64 {
        k.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xdead_beef
    }

    /// For each key, the identity of the instance it goes to.
    fn assignment(balancer: &ConsistentHash, instances: &[Instance]) -> Vec<u64> {
        (0..KEYS)
            .map(|k| {
                let i = balancer.pick(instances, Some(key(k))).expect("available");
                assert!(instances[i].available && instances[i].weight > 0);
                instances[i].identity()
            })
            .collect()
    }

    fn instance(node: &str, actor: u64) -> Instance {
        Instance {
            node: NodeId::new(node),
            actor: ActorId(actor),
            weight: 1,
            outstanding: 0,
            available: true,
        }
    }

    #[test]
    fn empty_and_unavailable_give_none() {
        let balancer = ConsistentHash::with_seed(1).with_load_bound(1.25);
        assert_eq!(balancer.pick(&[], Some(1)), None);
        assert_eq!(balancer.pick(&[], None), None);
        let mut group = synthetic(4, 2);
        for instance in &mut group {
            instance.available = false;
        }
        for k in 0..100 {
            assert_eq!(balancer.pick(&group, Some(key(k))), None);
            assert_eq!(balancer.pick(&group, None), None);
        }
        // Available but all of weight 0.
        for instance in &mut group {
            instance.available = true;
            instance.weight = 0;
        }
        assert_eq!(balancer.pick(&group, Some(5)), None);
        assert_eq!(balancer.pick(&group, None), None);
    }

    #[test]
    fn single_instance() {
        let balancer = ConsistentHash::with_seed(1);
        let group = synthetic(1, 1);
        for k in 0..100 {
            assert_eq!(balancer.pick(&group, Some(key(k))), Some(0));
        }
        assert_eq!(balancer.pick(&group, None), Some(0));
    }

    #[test]
    fn stable_across_picks_balancers_and_order() {
        let group = synthetic(8, 3);
        let first = assignment(&ConsistentHash::with_seed(1), &group);
        // Again, with another balancer (another caller), and with the snapshot reversed.
        assert_eq!(assignment(&ConsistentHash::new(), &group), first);
        let mut reversed = group.clone();
        reversed.reverse();
        assert_eq!(assignment(&ConsistentHash::with_seed(2), &reversed), first);
        // Several balancers in a row.
        let balancer = ConsistentHash::default();
        for _ in 0..3 {
            assert_eq!(assignment(&balancer, &group), first);
        }
    }

    #[test]
    fn equal_weights_spread_evenly() {
        let group = synthetic(8, 3);
        let balancer = ConsistentHash::new();
        let mut counts = vec![0u64; group.len()];
        for k in 0..8 * KEYS {
            counts[balancer.pick(&group, Some(key(k))).unwrap()] += 1;
        }
        // Expected 10_000 each, standard deviation about 94.
        assert!(
            counts.iter().all(|&c| (9_500..10_500).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn adding_one_moves_about_one_in_n_all_to_it() {
        let balancer = ConsistentHash::new();
        let mut group = synthetic(8, 4);
        let before = assignment(&balancer, &group);
        let joining = instance("n-new", 1_000);
        group.insert(3, joining.clone());
        let after = assignment(&balancer, &group);
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        for (b, a) in before.iter().zip(&after) {
            assert!(
                b == a || *a == joining.identity(),
                "moved to an old instance"
            );
        }
        let fraction = moved as f64 / KEYS as f64;
        assert!((fraction - 1.0 / 9.0).abs() <= 0.03, "moved {fraction}");
    }

    #[test]
    fn removing_one_moves_only_its_keys() {
        let balancer = ConsistentHash::new();
        let mut group = synthetic(9, 3);
        let before = assignment(&balancer, &group);
        let leaving = group.remove(4).identity();
        let after = assignment(&balancer, &group);
        let mut spread = std::collections::HashMap::new();
        for (b, a) in before.iter().zip(&after) {
            if *b == leaving {
                *spread.entry(*a).or_insert(0) += 1;
            } else {
                assert_eq!(b, a, "a key of a remaining instance moved");
            }
        }
        // Its keys spread over all the others.
        assert_eq!(spread.len(), 8, "{spread:?}");
        let moved: usize = spread.values().sum();
        assert!((800..1_400).contains(&moved), "moved {moved}");
    }

    #[test]
    fn weights_skew_proportionally() {
        let mut group = synthetic(4, 4);
        for (instance, weight) in group.iter_mut().zip([1, 2, 1, 4]) {
            instance.weight = weight;
        }
        let balancer = ConsistentHash::new();
        let keys = 10 * KEYS;
        let mut counts = [0u64; 4];
        for k in 0..keys {
            counts[balancer.pick(&group, Some(key(k))).unwrap()] += 1;
        }
        for (count, weight) in counts.iter().zip([1.0, 2.0, 1.0, 4.0]) {
            let share = *count as f64 / keys as f64;
            assert!((share - weight / 8.0).abs() < 0.01, "{counts:?}");
        }
        // Weight 2 gets about twice weight 1.
        let ratio = counts[1] as f64 / counts[0] as f64;
        assert!((1.9..2.1).contains(&ratio), "ratio {ratio}");
    }

    #[test]
    fn weight_zero_never_picked() {
        let mut group = synthetic(5, 2);
        group[1].weight = 0;
        group[3].weight = 0;
        let balancer = ConsistentHash::with_seed(3);
        for k in 0..KEYS {
            let i = balancer.pick(&group, Some(key(k))).unwrap();
            assert!(i != 1 && i != 3);
            let i = balancer.pick(&group, None).unwrap();
            assert!(i != 1 && i != 3);
        }
    }

    #[test]
    fn unavailable_falls_through_to_next_highest_and_back() {
        let balancer = ConsistentHash::new();
        let mut group = synthetic(6, 3);
        let before = assignment(&balancer, &group);
        // Instance 2 is ejected: its keys go where they would go without it, others stay.
        group[2].available = false;
        let ejected = assignment(&balancer, &group);
        let mut without = group.clone();
        without.remove(2);
        assert_eq!(ejected, assignment(&balancer, &without));
        for (b, e) in before.iter().zip(&ejected) {
            assert!(b == e || *b == group[2].identity());
        }
        // Two more ejected: still the next highest among the rest.
        group[0].available = false;
        group[5].available = false;
        let three_down = assignment(&balancer, &group);
        let rest: Vec<Instance> = [1, 3, 4].iter().map(|&i| group[i].clone()).collect();
        assert_eq!(three_down, assignment(&balancer, &rest));
        // All back: every key returns to its instance.
        for instance in &mut group {
            instance.available = true;
        }
        assert_eq!(assignment(&balancer, &group), before);
    }

    #[test]
    fn without_key_like_random() {
        let balancer = ConsistentHash::with_seed(17);
        let mut group = synthetic(5, 5);
        group[4].available = false;
        let mut counts = [0usize; 5];
        for _ in 0..40_000 {
            counts[balancer.pick(&group, None).unwrap()] += 1;
        }
        assert_eq!(counts[4], 0);
        assert!(
            counts[..4].iter().all(|&c| (9_400..10_600).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn membership_changes_mid_stream() {
        // Joins, leaves and ejections between rounds of picks: every key goes where a fresh
        // balancer sends it on the available instances alone, and a key leaves an instance
        // that is still available only for one that was not available the round before.
        let balancer = ConsistentHash::new();
        let mut group = synthetic(6, 3);
        let live = |group: &[Instance]| -> Vec<Instance> {
            group
                .iter()
                .filter(|instance| instance.available)
                .cloned()
                .collect()
        };
        let mut owner = assignment(&balancer, &group);
        let mut was_live: Vec<u64> = group.iter().map(Instance::identity).collect();
        let mut next_actor = 100;
        for step in 0..60usize {
            match step % 4 {
                0 => {
                    next_actor += 1;
                    group.push(instance("joiner", next_actor));
                }
                1 => {
                    group.remove((step * 7) % group.len());
                }
                2 => {
                    let i = (step * 5) % group.len();
                    if !group[i].available || live(&group).len() > 2 {
                        group[i].available = !group[i].available;
                    }
                }
                _ => {}
            }
            let now = assignment(&balancer, &group);
            let reference = live(&group);
            assert_eq!(now, assignment(&ConsistentHash::new(), &reference));
            let is_live: Vec<u64> = reference.iter().map(Instance::identity).collect();
            for (k, (old, new)) in owner.iter().zip(&now).enumerate() {
                if old != new && is_live.contains(old) {
                    assert!(
                        !was_live.contains(new),
                        "step {step}: key {k} moved between instances available throughout"
                    );
                }
            }
            owner = now;
            was_live = is_live;
        }
    }

    #[test]
    fn load_bound_off_when_idle_and_clamped() {
        let group = synthetic(8, 4);
        let plain = assignment(&ConsistentHash::new(), &group);
        // No load: every instance is below any bound, so the bound changes nothing.
        for c in [1.0, 1.25, 2.0, 0.5, f64::NAN, f64::INFINITY, -3.0] {
            let bounded = ConsistentHash::new().with_load_bound(c);
            assert_eq!(assignment(&bounded, &group), plain, "c = {c}");
        }
    }

    #[test]
    fn load_bound_moves_a_hot_key_and_keeps_loads_level() {
        let c = 1.25;
        let balancer = ConsistentHash::new().with_load_bound(c);
        let mut group = synthetic(8, 4);
        let hot = key(1);
        let home = balancer.pick(&group, Some(hot)).unwrap();
        // Only the hot key, asks never complete: it overflows from its home instance to
        // the next ones, and no instance goes above c times its share.
        for _ in 0..8_000 {
            let total: usize = group.iter().map(|instance| instance.outstanding).sum();
            let i = balancer.pick(&group, Some(hot)).unwrap();
            let bound = c * (total as f64 + 1.0) / group.len() as f64;
            assert!((group[i].outstanding as f64) < bound);
            group[i].outstanding += 1;
        }
        let max = group
            .iter()
            .map(|instance| instance.outstanding)
            .max()
            .unwrap();
        assert_eq!(group[home].outstanding, max);
        assert!(max as f64 <= c * 1_000.0 + 1.0, "{group:?}");
        // Unbounded, the same key stays home whatever its load.
        let unbounded = ConsistentHash::new();
        assert_eq!(unbounded.pick(&group, Some(hot)), Some(home));

        // The home instance drains: the key returns to it.
        group[home].outstanding = 0;
        assert_eq!(balancer.pick(&group, Some(hot)), Some(home));
    }

    #[test]
    fn load_bound_is_weighted() {
        let c = 1.5;
        let balancer = ConsistentHash::new().with_load_bound(c);
        let mut group = synthetic(4, 4);
        for (instance, weight) in group.iter_mut().zip([1, 1, 2, 4]) {
            instance.weight = weight;
        }
        // Many keys, asks never complete: loads stay within c times their weighted share.
        for k in 0..20_000 {
            let total: usize = group.iter().map(|instance| instance.outstanding).sum();
            let i = balancer.pick(&group, Some(key(k))).unwrap();
            let share = c * (total as f64 + 1.0) * f64::from(group[i].weight) / 8.0;
            assert!((group[i].outstanding as f64) < share);
            group[i].outstanding += 1;
        }
        for (instance, weight) in group.iter().zip([1.0, 1.0, 2.0, 4.0]) {
            let share = instance.outstanding as f64 / 20_000.0;
            assert!((share - weight / 8.0).abs() < 0.02, "{group:?}");
        }
        assert_eq!(balancer.name(), "consistent_hash");
    }
}
