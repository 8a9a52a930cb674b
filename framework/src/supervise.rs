//! Local supervision: restart an actor by policy when it stops or fails.
//!
//! [`Node::spawn_supervised`](crate::Node::spawn_supervised) starts a
//! [`Spawnable`](crate::Spawnable) actor under a [`Supervision`]: when the actor stops, the
//! node decides from the policy whether to start a fresh one from the same arguments, after an
//! exponential backoff, unless it restarted too often lately (the intensity limit), in which
//! case it gives up: the actor stays stopped and its watchers are told.
//!
//! A restart keeps the actor's identity: the same [`ActorId`](crate::ActorId), so every
//! [`ActorRef`](crate::ActorRef) to it, local or remote, its names and its group memberships
//! stay valid; only its state starts afresh. Messages sent while it is down fail with
//! [`Error::ActorStopped`](crate::Error::ActorStopped) (asks) or are refused (tells).
//!
//! A failure is a panic in a handler; a stop is the actor stopping itself. A panic affects
//! that actor alone: other actors on the same arbiter keep running, and the caller of the
//! ask that panicked gets [`Error::HandlerPanicked`](crate::Error::HandlerPanicked).

use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use actix::Addr;

/// When a supervised actor is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Never: the actor stays stopped.
    Never,
    /// Whenever it stops, failed or not.
    Always,
    /// Only when it failed (a handler panicked), not when it stopped itself.
    OnFailure,
}

/// A restart policy with backoff and an intensity limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Supervision {
    restart: Restart,
    backoff_base: Duration,
    backoff_max: Duration,
    max_restarts: u32,
    within: Duration,
}

impl Supervision {
    /// `restart` with the defaults: backoff from 10 ms doubling to 5 s, at most 5 restarts
    /// within 10 s.
    pub fn new(restart: Restart) -> Self {
        Supervision {
            restart,
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_secs(5),
            max_restarts: 5,
            within: Duration::from_secs(10),
        }
    }

    /// The first pause before a restart, doubled for each restart in the intensity window,
    /// up to `max`.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max.max(base);
        self
    }

    /// At most `max_restarts` restarts within `within`; one more and the supervisor gives up.
    pub fn intensity(mut self, max_restarts: u32, within: Duration) -> Self {
        self.max_restarts = max_restarts;
        self.within = within;
        self
    }

    /// What to do now that the actor stopped (`failed`: a handler panicked).
    pub(crate) fn decide(
        &self,
        history: &mut RestartHistory,
        failed: bool,
        now: Instant,
    ) -> Decision {
        let wanted = match self.restart {
            Restart::Never => false,
            Restart::Always => true,
            Restart::OnFailure => failed,
        };
        if !wanted {
            return Decision::Stop;
        }
        while history
            .0
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.within)
        {
            history.0.pop_front();
        }
        if history.0.len() as u32 >= self.max_restarts {
            return Decision::GiveUp;
        }
        let factor = 2u32.saturating_pow(history.0.len() as u32);
        history.0.push_back(now);
        Decision::Restart(
            self.backoff_base
                .saturating_mul(factor)
                .min(self.backoff_max),
        )
    }
}

/// When the recent restarts of one actor happened.
#[derive(Debug, Default)]
pub(crate) struct RestartHistory(VecDeque<Instant>);

/// The supervisor's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Start it again after the pause.
    Restart(Duration),
    /// The policy does not restart this stop.
    Stop,
    /// Too many restarts lately: stop for good.
    GiveUp,
}

thread_local! {
    /// Mailboxes of actors whose handler panicked on this thread, until their guard drops.
    static FAILED: RefCell<HashSet<u64>> = RefCell::new(HashSet::new());
}

/// A stable key of an actor's mailbox (its address), while the mailbox lives.
pub(crate) fn mailbox_key<A: actix::Actor>(addr: &Addr<A>) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    addr.hash(&mut h);
    h.finish()
}

/// Records that the actor with this mailbox failed (called where a panic is caught).
pub(crate) fn mark_failed(key: u64) {
    FAILED.with(|f| f.borrow_mut().insert(key));
}

/// Whether the actor with this mailbox failed; forgets it.
pub(crate) fn take_failed(key: u64) -> bool {
    FAILED.with(|f| f.borrow_mut().remove(&key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_decide_by_kind_of_stop() {
        let now = Instant::now();
        let mut h = RestartHistory::default();
        assert_eq!(
            Supervision::new(Restart::Never).decide(&mut h, true, now),
            Decision::Stop
        );
        assert_eq!(
            Supervision::new(Restart::OnFailure).decide(&mut h, false, now),
            Decision::Stop
        );
        assert!(matches!(
            Supervision::new(Restart::OnFailure).decide(&mut h, true, now),
            Decision::Restart(_)
        ));
        let mut h = RestartHistory::default();
        assert!(matches!(
            Supervision::new(Restart::Always).decide(&mut h, false, now),
            Decision::Restart(_)
        ));
    }

    #[test]
    fn backoff_doubles_and_intensity_gives_up_then_forgets() {
        let s = Supervision::new(Restart::Always)
            .backoff(Duration::from_millis(10), Duration::from_millis(35))
            .intensity(3, Duration::from_secs(1));
        let t = Instant::now();
        let mut h = RestartHistory::default();
        assert_eq!(
            s.decide(&mut h, true, t),
            Decision::Restart(Duration::from_millis(10))
        );
        assert_eq!(
            s.decide(&mut h, true, t),
            Decision::Restart(Duration::from_millis(20))
        );
        assert_eq!(
            s.decide(&mut h, true, t),
            Decision::Restart(Duration::from_millis(35))
        );
        assert_eq!(s.decide(&mut h, true, t), Decision::GiveUp);
        // Restarts older than the window no longer count.
        let later = t + Duration::from_millis(1001);
        assert_eq!(
            s.decide(&mut h, true, later),
            Decision::Restart(Duration::from_millis(10))
        );
    }

    #[test]
    fn failure_marks_are_taken_once() {
        mark_failed(7);
        assert!(take_failed(7));
        assert!(!take_failed(7));
    }
}
