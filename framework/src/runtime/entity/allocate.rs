//! The leader's shard allocator: reads which nodes host each entity type, plans the next
//! assignment with `core::shard::alloc::plan` and writes it under the leader's token.

use std::collections::{BTreeSet, HashMap};
use std::sync::Weak;
use std::time::Duration;

use crate::core::shard::alloc::plan;
use crate::core::shard::Assignment;
use crate::runtime::{read, NodeShared};

/// How often the allocator looks at the hosts.
const ROUND: Duration = Duration::from_millis(250);
/// The most shards moved from a live host to another per round (handoffs are
/// rate-limited; shards of gone hosts move at once).
pub(crate) const MOVES_PER_ROUND: usize = 16;

/// Allocates shards for as long as it runs: the controller's shell runs it while it leads
/// with `token`, and drops it when the lead ends.
pub(crate) async fn run(weak: Weak<NodeShared>, token: u64) {
    let mut known: HashMap<String, Option<Assignment>> = HashMap::new();
    loop {
        let Some(node) = weak.upgrade() else { return };
        round(&node, token, &mut known).await;
        let mut events = node.subscribe();
        drop(node);
        tokio::select! {
            _ = tokio::time::sleep(ROUND) => {}
            _ = events.recv() => {}
        }
    }
}

async fn round(node: &NodeShared, token: u64, known: &mut HashMap<String, Option<Assignment>>) {
    let cluster = &node.info.cluster;
    let hosts = match node.discovery.read_entity_hosts(cluster).await {
        Ok(hosts) => hosts,
        Err(e) => {
            tracing::warn!(error = %e, "the shard allocator cannot read the entity hosts");
            return;
        }
    };
    let members: BTreeSet<_> = read(&node.view).members().map(|m| m.id.clone()).collect();
    let kinds: BTreeSet<String> = hosts.keys().cloned().chain(known.keys().cloned()).collect();
    for kind in kinds {
        let of_kind = hosts.get(&kind);
        let current = match known.get(&kind) {
            Some(current) => current.clone(),
            None => match node.discovery.read_assignment(cluster, &kind).await {
                Ok(current) => current,
                Err(e) => {
                    tracing::warn!(%kind, error = %e, "the shard allocator cannot read an assignment");
                    continue;
                }
            },
        };
        // The shard count the hosts agree on (the most common); a cluster without hosts
        // keeps its count.
        let shards = of_kind
            .and_then(|h| most_common(h.values().copied()))
            .or_else(|| current.as_ref().map(Assignment::shards));
        let Some(shards) = shards else {
            continue;
        };
        let live: BTreeSet<_> = of_kind
            .map(|h| {
                h.iter()
                    .filter(|(n, s)| **s == shards && members.contains(*n))
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default();
        match plan(&kind, shards, current.as_ref(), &live, MOVES_PER_ROUND) {
            None => {
                known.insert(kind, current);
            }
            Some(next) => match node.discovery.put_assignment(cluster, &next, token).await {
                Ok(()) => {
                    tracing::debug!(%kind, version = next.version, "new shard assignment");
                    known.insert(kind, Some(next));
                }
                Err(e) => {
                    tracing::warn!(%kind, error = %e, "the shard allocator could not write an assignment");
                    known.remove(&kind);
                }
            },
        }
    }
}

fn most_common(values: impl Iterator<Item = u32>) -> Option<u32> {
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by(|(a, x), (b, y)| x.cmp(y).then(b.cmp(a)))
        .map(|(v, _)| v)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_most_common_shard_count_wins_ties_to_the_smaller() {
        assert_eq!(super::most_common([256, 256, 64].into_iter()), Some(256));
        assert_eq!(super::most_common([256, 64].into_iter()), Some(64));
        assert_eq!(super::most_common([].into_iter()), None);
    }
}
