//! Who can reach whom: the cuts between nodes and etcd.

use std::collections::BTreeSet;

/// Who is cut from whom.
#[derive(Debug, Default)]
pub(crate) struct Net {
    /// Slots cut from etcd.
    pub(crate) etcd_cut: BTreeSet<usize>,
    /// Pairs of slots cut from each other (lower slot first).
    pub(crate) peer_cut: BTreeSet<(usize, usize)>,
}

impl Net {
    /// Whether `a` and `b` can talk.
    pub(crate) fn peers(&self, a: usize, b: usize) -> bool {
        a == b || !self.peer_cut.contains(&(a.min(b), a.max(b)))
    }
}
