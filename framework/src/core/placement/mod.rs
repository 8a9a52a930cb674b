//! Placement: on which nodes a controller should start new replicas of a group, and which
//! replicas it should stop when scaling down.
//!
//! Decisions only, no I/O, no clock: a [`Placement`] sees a snapshot of the nodes
//! ([`Candidate`]: identity, labels, latest [`LoadReport`], replicas of the group already
//! there) and the group's [`Constraints`], and returns indexes into the snapshot, one per
//! replica to add ([`Placement::place`]) or to remove ([`Placement::remove`]). The controller
//! builds the snapshot from discovery and acts on the answer.
//!
//! | policy | new replicas go to | for |
//! |---|---|---|
//! | [`RoundRobin`] | the node with the fewest replicas of the group | equal nodes |
//! | [`LeastLoaded`] | the node with the least load (actors and asks in flight) | nodes shared by many groups |
//! | [`Spread`] | like [`RoundRobin`], never above the even share `ceil(replicas / nodes)` | strict evenness, also with anti-affinity |
//!
//! Every policy honours all of the [`Constraints`]:
//!
//! - **selector**: only nodes carrying every `label = value` of [`Constraints::selector`]
//!   are eligible (see [`eligible`]);
//! - **anti-affinity**: with [`Constraints::anti_affinity`] set to a label key (say `zone`),
//!   replicas are spread as evenly as possible across the distinct values of that label
//!   first, then across the nodes within a value; nodes without the label are not eligible;
//! - **max per node**: no node is given a replica that would take it above
//!   [`Constraints::max_per_node`] replicas of the group.
//!
//! When the constraints leave no room for all the requested replicas, a policy places as
//! many as fit and returns fewer indexes than requested (none at all when nothing fits).
//!
//! Decisions are **deterministic**: the same snapshot gives the same answer, and ties are
//! broken by node id (not by position in the snapshot), so two controllers looking at the
//! same cluster agree, whatever order their snapshots list the nodes in.
//!
//! Scaling down, [`Placement::remove`] first takes replicas off nodes that no longer satisfy
//! the constraints (not selected, or above the maximum per node), then keeps the rest even:
//! by default from the label value with the most replicas (with anti-affinity) and within it
//! from the node with the most replicas.
//!
//! One call handles at most [`MAX_COUNT`] replicas; ask again for more.
//!
//! Write your own policy by implementing [`Placement`].

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::core::model::LoadReport;
use crate::id::NodeId;

mod least_loaded;
mod round_robin;
mod spread;

pub use least_loaded::LeastLoaded;
pub use round_robin::RoundRobin;
pub use spread::Spread;

/// The most replicas one call to [`Placement::place`] or [`Placement::remove`] returns,
/// whatever the count asked for: it bounds the memory and time of a call. A controller that
/// needs more calls again with the updated snapshot.
pub const MAX_COUNT: u32 = 1 << 16;

/// One node as a placement policy sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The node.
    pub node: NodeId,
    /// Its labels (`zone`, `disk`, `region`…), matched by [`Constraints::selector`] and
    /// [`Constraints::anti_affinity`].
    pub labels: BTreeMap<String, String>,
    /// Its latest load report, if it has published one; only [`LeastLoaded`] uses it.
    pub load: Option<LoadReport>,
    /// Replicas of the group already running on the node.
    pub replicas: u32,
}

impl Candidate {
    /// A node without labels, without a load report, without replicas of the group.
    pub fn new(node: NodeId) -> Self {
        Candidate {
            node,
            labels: BTreeMap::new(),
            load: None,
            replicas: 0,
        }
    }

    /// Adds (or replaces) the label `key = value`.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Sets the node's latest load report.
    pub fn load(mut self, load: LoadReport) -> Self {
        self.load = Some(load);
        self
    }

    /// Sets the replicas of the group already on the node.
    pub fn replicas(mut self, replicas: u32) -> Self {
        self.replicas = replicas;
        self
    }
}

/// Where the replicas of a group may go. The default constrains nothing.
///
/// ```
/// use actormesh::placement::Constraints;
///
/// let constraints = Constraints::new()
///     .select("disk", "ssd")
///     .anti_affinity("zone")
///     .max_per_node(4);
/// assert_eq!(constraints.max_per_node, Some(4));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Constraints {
    /// A node is eligible only if it carries every one of these labels with the same value.
    pub selector: BTreeMap<String, String>,
    /// A label key (say `zone`): spread the replicas as evenly as possible across the
    /// distinct values of this label, then across the nodes within a value. Nodes without
    /// the label are not eligible.
    pub anti_affinity: Option<String>,
    /// The most replicas of the group one node may run.
    pub max_per_node: Option<u32>,
}

impl Constraints {
    /// No constraints: every node is eligible, without limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires the label `key = value` on eligible nodes (in addition to the labels
    /// already required).
    pub fn select(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.selector.insert(key.into(), value.into());
        self
    }

    /// Spreads replicas across the distinct values of the label `key`.
    pub fn anti_affinity(mut self, key: impl Into<String>) -> Self {
        self.anti_affinity = Some(key.into());
        self
    }

    /// Caps the replicas of the group on any one node.
    pub fn max_per_node(mut self, max: u32) -> Self {
        self.max_per_node = Some(max);
        self
    }

    /// Whether `candidate` may run replicas: it matches the selector and, with anti-affinity,
    /// carries the anti-affinity label. [`max_per_node`](Self::max_per_node) is not checked.
    pub fn admits(&self, candidate: &Candidate) -> bool {
        let selected = self
            .selector
            .iter()
            .all(|(key, value)| candidate.labels.get(key) == Some(value));
        let labelled = match &self.anti_affinity {
            Some(key) => candidate.labels.contains_key(key),
            None => true,
        };
        selected && labelled
    }

    /// The anti-affinity value of `candidate`, if anti-affinity is on and it has the label.
    fn domain<'a>(&self, candidate: &'a Candidate) -> Option<&'a str> {
        let key = self.anti_affinity.as_ref()?;
        candidate.labels.get(key).map(String::as_str)
    }
}

/// The indexes of the candidates that [`Constraints::admits`] (selector, and anti-affinity
/// label when anti-affinity is on), in node id order (then snapshot order for duplicates).
pub fn eligible(candidates: &[Candidate], constraints: &Constraints) -> Vec<usize> {
    let mut eligible: Vec<usize> = (0..candidates.len())
        .filter(|&i| constraints.admits(&candidates[i]))
        .collect();
    eligible.sort_by(|&a, &b| candidates[a].node.cmp(&candidates[b].node).then(a.cmp(&b)));
    eligible
}

/// Decides where replicas of a group go and which go when it shrinks. See the
/// [module docs](self).
pub trait Placement: Send + Sync + fmt::Debug + 'static {
    /// Where `count` new replicas should go: one index into `candidates` per replica (an
    /// index repeats when a node gets several). Fewer than `count` indexes (possibly none)
    /// when the constraints leave no room for more, and never more than [`MAX_COUNT`].
    fn place(&self, candidates: &[Candidate], constraints: &Constraints, count: u32) -> Vec<usize>;

    /// Which `count` replicas to remove: one index into `candidates` per replica, each
    /// standing for one replica of the group on that node (an index repeats when a node
    /// loses several). Fewer than `count` when there are fewer replicas, and never more
    /// than [`MAX_COUNT`].
    ///
    /// The default takes replicas off nodes that violate the constraints first (not
    /// admitted by [`Constraints::admits`], then above the maximum per node, fullest
    /// first), then, with anti-affinity, from the label value with the most replicas, and
    /// within it from the node with the most replicas; ties go to the lower node id.
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
            |_, current| Reverse(current),
            |domain, key| (Reverse(domain), *key),
        )
    }

    /// A short name, for logs and metrics.
    fn name(&self) -> &'static str;
}

/// The eligible nodes of a snapshot, with their anti-affinity domains.
#[derive(Debug)]
struct Layout {
    /// Indexes of the eligible candidates, in node id order.
    eligible: Vec<usize>,
    /// The domain of each eligible candidate (parallel to `eligible`); all 0 without
    /// anti-affinity.
    domain: Vec<usize>,
    /// The number of domains (at least 1).
    domains: usize,
}

impl Layout {
    fn new(candidates: &[Candidate], constraints: &Constraints) -> Self {
        let eligible = eligible(candidates, constraints);
        let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
        let domain = eligible
            .iter()
            .map(|&i| match constraints.domain(&candidates[i]) {
                Some(value) => {
                    let next = ids.len();
                    *ids.entry(value).or_insert(next)
                }
                None => 0,
            })
            .collect();
        Layout {
            eligible,
            domain,
            domains: ids.len().max(1),
        }
    }

    /// The sum of `replicas` over the eligible nodes of each domain.
    fn domain_counts(&self, replicas: impl Fn(usize) -> u64) -> Vec<u64> {
        let mut counts = vec![0u64; self.domains];
        for (&i, &d) in self.eligible.iter().zip(&self.domain) {
            counts[d] = counts[d].saturating_add(replicas(i));
        }
        counts
    }
}

/// A node the greedy loop may add replicas to or take replicas off.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// The index of the candidate.
    index: usize,
    /// Its anti-affinity domain.
    domain: usize,
    /// How many replicas may be added to it (or taken off it).
    room: u64,
}

/// Whether the greedy loop adds replicas or takes them off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Add,
    Take,
}

/// The greedy loop shared by all policies: up to `limit` times, picks the domain with the
/// smallest `rank(domain count, key of its best node)`, then in it the node with the
/// smallest `key(candidate index, replicas moved to or from it so far)`, ties to the earlier
/// slot (slots come in node id order). A node leaves the race when its room is used up.
/// `O((slots + limit) × log(slots))`.
fn greedy<K, G>(
    slots: &[Slot],
    mut domain_counts: Vec<u64>,
    limit: usize,
    step: Step,
    key: impl Fn(usize, u64) -> K,
    rank: impl Fn(u64, &K) -> G,
) -> Vec<usize>
where
    K: Ord,
    G: Ord,
{
    let mut picked = Vec::new();
    let mut moved = vec![0u64; slots.len()];
    // Per domain, its nodes with room left, best first.
    let mut nodes: Vec<BTreeSet<(K, usize)>> =
        (0..domain_counts.len()).map(|_| BTreeSet::new()).collect();
    for (s, slot) in slots.iter().enumerate() {
        if slot.room > 0 && slot.domain < nodes.len() {
            nodes[slot.domain].insert((key(slot.index, 0), s));
        }
    }
    // The domains with a node with room left, best first, by their best node.
    let entry = |d: usize, nodes: &[BTreeSet<(K, usize)>], counts: &[u64]| {
        nodes[d]
            .first()
            .map(|(best, s)| (rank(counts[d], best), *s, d))
    };
    let mut domains = BTreeSet::new();
    for d in 0..nodes.len() {
        domains.extend(entry(d, &nodes, &domain_counts));
    }
    while picked.len() < limit {
        let Some((_, _, d)) = domains.pop_first() else {
            break;
        };
        let Some((_, s)) = nodes[d].pop_first() else {
            continue;
        };
        let slot = slots[s];
        picked.push(slot.index);
        moved[s] += 1;
        if moved[s] < slot.room {
            nodes[d].insert((key(slot.index, moved[s]), s));
        }
        domain_counts[d] = match step {
            Step::Add => domain_counts[d].saturating_add(1),
            Step::Take => domain_counts[d].saturating_sub(1),
        };
        domains.extend(entry(d, &nodes, &domain_counts));
    }
    picked
}

/// How many replicas a call may handle when asked for `count`.
fn limit(count: u32) -> usize {
    count.min(MAX_COUNT) as usize
}

/// Places up to `count` replicas greedily on the eligible nodes: each goes to the domain
/// with the smallest `rank(domain replicas, key of its best node)` and in it to the node with
/// the smallest `key(candidate, replicas placed on it in this call)`, never taking a node
/// above `max_per_node` or above `cap` (given the layout and the eligible replicas).
fn place_with<K, G>(
    candidates: &[Candidate],
    constraints: &Constraints,
    count: u32,
    cap: impl FnOnce(&Layout, u64) -> Option<u64>,
    key: impl Fn(&Candidate, u64) -> K,
    rank: impl Fn(u64, &K) -> G,
) -> Vec<usize>
where
    K: Ord,
    G: Ord,
{
    let layout = Layout::new(candidates, constraints);
    let counts = layout.domain_counts(|i| u64::from(candidates[i].replicas));
    let existing = counts.iter().fold(0u64, |sum, &n| sum.saturating_add(n));
    let cap = match (cap(&layout, existing), constraints.max_per_node) {
        (Some(a), Some(b)) => a.min(u64::from(b)),
        (a, b) => a.or(b.map(u64::from)).unwrap_or(u64::MAX),
    };
    let slots: Vec<Slot> = layout
        .eligible
        .iter()
        .zip(&layout.domain)
        .map(|(&index, &domain)| Slot {
            index,
            domain,
            room: cap.saturating_sub(u64::from(candidates[index].replicas)),
        })
        .collect();
    greedy(
        &slots,
        counts,
        limit(count),
        Step::Add,
        |i, placed| key(&candidates[i], placed),
        rank,
    )
}

/// Removes up to `count` replicas: first the replicas on nodes the constraints do not admit
/// and those above `max_per_node` (the fullest node first), then greedily from the domain
/// with the smallest `rank(domain replicas, key of its best node)` and in it from the node
/// with the smallest `key(candidate, replicas left on it)`.
fn remove_with<K, G>(
    candidates: &[Candidate],
    constraints: &Constraints,
    count: u32,
    key: impl Fn(&Candidate, u64) -> K,
    rank: impl Fn(u64, &K) -> G,
) -> Vec<usize>
where
    K: Ord,
    G: Ord,
{
    let limit = limit(count);
    let layout = Layout::new(candidates, constraints);
    let mut admitted = vec![false; candidates.len()];
    for &i in &layout.eligible {
        admitted[i] = true;
    }
    let cap = constraints.max_per_node.map_or(u64::MAX, u64::from);

    // First the replicas that violate the constraints, from every node, fullest first.
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| candidates[a].node.cmp(&candidates[b].node).then(a.cmp(&b)));
    let excess: Vec<Slot> = order
        .into_iter()
        .map(|index| {
            let replicas = u64::from(candidates[index].replicas);
            let room = if admitted[index] {
                replicas.saturating_sub(cap)
            } else {
                replicas
            };
            Slot {
                index,
                domain: 0,
                room,
            }
        })
        .collect();
    let mut removed = greedy(
        &excess,
        vec![0],
        limit,
        Step::Take,
        |i, taken| Reverse(u64::from(candidates[i].replicas).saturating_sub(taken)),
        |_, key| *key,
    );

    // Then the rest, keeping them even.
    let mut left: Vec<u64> = candidates.iter().map(|c| u64::from(c.replicas)).collect();
    for &i in &removed {
        left[i] = left[i].saturating_sub(1);
    }
    let slots: Vec<Slot> = layout
        .eligible
        .iter()
        .zip(&layout.domain)
        .map(|(&index, &domain)| Slot {
            index,
            domain,
            room: left[index],
        })
        .collect();
    let counts = layout.domain_counts(|i| left[i]);
    removed.extend(greedy(
        &slots,
        counts,
        limit - removed.len(),
        Step::Take,
        |i, taken| key(&candidates[i], left[i].saturating_sub(taken)),
        rank,
    ));
    removed
}

#[cfg(test)]
pub(crate) mod testing;
