//! The run's trace: a hash of every event (for the determinism check) and the tail of the
//! notable ones (for the failure message).

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::core::Time;

use super::world::Ev;

/// How many notes the tail keeps.
const TAIL: usize = 80;

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
    /// An event is about to run.
    pub(crate) fn event(&mut self, at: Time, seq: u64, ev: &Ev) {
        self.events += 1;
        let (kind, who) = match ev {
            Ev::ToEtcd { from, req, .. } => (1, from ^ req << 32),
            Ev::FromEtcd { to, req, .. } => (2, to ^ req << 32),
            Ev::Pump(watch) => (3, *watch),
            Ev::Peer { from, to, .. } => (4, from ^ to << 32),
            Ev::Timer { inc, .. } => (5, *inc),
            Ev::Fault(_) => (6, 0),
        };
        for word in [at.as_nanos() as u64, seq, kind, who] {
            self.events_hash = (self.events_hash ^ word).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Something notable happened (made lazily: most runs never print their trace).
    pub(crate) fn note(&mut self, at: Time, what: impl FnOnce() -> String) {
        let what = what();
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
