//! The run's trace: a hash of every event and note (for the determinism check) and the tail
//! of the notes (for the failure message).

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::core::Time;

/// How many notes the tail keeps.
const TAIL: usize = 60;

/// See the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct Trace {
    /// Every note so far (`DefaultHasher::new` has fixed keys: deterministic).
    hash: DefaultHasher,
    /// Events run.
    pub(crate) events: u64,
    /// Every event so far (FNV-style: the events are many, the notes few).
    events_hash: u64,
    /// The latest notes.
    tail: VecDeque<(Time, String)>,
}

impl Trace {
    /// An event of kind `kind` for `who` scheduled as number `seq` is about to run at `at`.
    pub(crate) fn event(&mut self, at: Time, seq: u64, kind: u64, who: u64) {
        self.events += 1;
        for word in [at.as_nanos() as u64, seq, kind, who] {
            self.events_hash = (self.events_hash ^ word).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Something notable happened.
    pub(crate) fn note(&mut self, at: Time, what: String) {
        at.hash(&mut self.hash);
        what.hash(&mut self.hash);
        if self.tail.len() == TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back((at, what));
    }

    /// The hash of everything so far.
    pub(crate) fn hash(&self) -> u64 {
        self.hash.finish() ^ self.events_hash
    }

    /// The latest notes, one a line.
    pub(crate) fn tail(&self) -> String {
        let mut out = String::new();
        for (at, what) in &self.tail {
            out.push_str(&format!("  {:>10.3}s  {what}\n", at.as_secs_f64()));
        }
        out
    }
}
