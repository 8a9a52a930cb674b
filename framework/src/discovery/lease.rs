//! What a node knows of its own lease, shared between the discovery backend (which renews
//! it) and the node (which fences itself with it: see `core::fence`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::core::fence::Lease;

/// A node's knowledge of its own lease in a backend with leases (etcd): which lease it holds
/// (its *epoch*: a new one after a lost one), until when that lease is certainly alive, and
/// whether it is known lost.
///
/// The backend writes it ([`renewed`](Self::renewed), [`granted`](Self::granted),
/// [`lost`](Self::lost)); the node reads it for every frame of requests it reads and every
/// remote ask it is about to handle, and refuses work once the lease is lost, so that a node
/// the cluster declared down (it was frozen, starved, or cut off from the store past its
/// TTL) does not act after it resumes. A custom backend with leases returns one from
/// [`Discovery::lease_clock`](super::Discovery::lease_clock) and keeps it current.
#[derive(Debug)]
pub struct LeaseClock {
    origin: Instant,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy)]
struct State {
    epoch: u64,
    lost: bool,
    alive_until: Option<Instant>,
    unconfirmed: bool,
}

/// What the store said when a node asked about its lease
/// ([`Discovery::confirm_lease`](super::Discovery::confirm_lease)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseCheck {
    /// The lease is alive (the clock was renewed).
    Alive,
    /// The lease is gone: the cluster has declared the node down (the clock says lost).
    Lost,
    /// The store could not be reached in time: nobody can tell.
    Unreachable,
}

impl LeaseClock {
    /// The clock of a lease `epoch` granted at `granted_at` (counted from before the grant
    /// was asked for) for `ttl`.
    pub fn new(epoch: u64, granted_at: Instant, ttl: Duration) -> Self {
        LeaseClock {
            origin: granted_at,
            state: Mutex::new(State {
                epoch,
                lost: false,
                alive_until: Some(granted_at + ttl),
                unconfirmed: false,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A renewal of lease `epoch` was confirmed: it is alive until `alive_until` (the
    /// renewal's send time plus the TTL the store answered). A renewal of another lease than
    /// the current one is ignored.
    pub fn renewed(&self, epoch: u64, alive_until: Instant) {
        let mut s = self.state();
        if s.epoch == epoch && !s.lost {
            s.alive_until = Some(s.alive_until.map_or(alive_until, |a| a.max(alive_until)));
            s.unconfirmed = false;
        }
    }

    /// A new lease `epoch` was granted (the node registers again, a new incarnation).
    pub fn granted(&self, epoch: u64, alive_until: Instant) {
        *self.state() = State {
            epoch,
            lost: false,
            alive_until: Some(alive_until),
            unconfirmed: false,
        };
    }

    /// The store says lease `epoch` is gone. From now on nothing received under it starts.
    pub fn lost(&self, epoch: u64) {
        let mut s = self.state();
        if s.epoch == epoch {
            s.lost = true;
            s.alive_until = None;
            s.unconfirmed = false;
        }
    }

    /// The store could not be reached to confirm the lease once it was in doubt: the node
    /// serves anyway (an outage of the store must not stop the cluster) until the store
    /// answers again.
    pub fn unconfirmed(&self, epoch: u64) {
        let mut s = self.state();
        if s.epoch == epoch && !s.lost {
            s.unconfirmed = true;
        }
    }

    /// The current lease.
    pub fn epoch(&self) -> u64 {
        self.state().epoch
    }

    /// Until when the current lease is certainly alive (`None` once it is known lost).
    pub fn alive_until(&self) -> Option<Instant> {
        self.state().alive_until
    }

    /// The state for the pure fence decision, with times counted from the clock's origin.
    pub(crate) fn lease(&self) -> Lease {
        let s = *self.state();
        Lease {
            epoch: s.epoch,
            lost: s.lost,
            alive_until: s
                .alive_until
                .map_or(Duration::ZERO, |a| a.saturating_duration_since(self.origin)),
            unconfirmed: s.unconfirmed,
        }
    }

    /// `at` as a time of the pure core.
    pub(crate) fn time(&self, at: Instant) -> crate::core::Time {
        at.saturating_duration_since(self.origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewals_extend_losses_end_and_grants_start_over() {
        let t0 = Instant::now();
        let clock = LeaseClock::new(7, t0, Duration::from_secs(2));
        assert_eq!(clock.lease().alive_until, Duration::from_secs(2));
        clock.renewed(7, t0 + Duration::from_secs(3));
        assert_eq!(clock.lease().alive_until, Duration::from_secs(3));
        // An older confirmation arriving late does not shorten it.
        clock.renewed(7, t0 + Duration::from_secs(1));
        assert_eq!(clock.lease().alive_until, Duration::from_secs(3));
        // Another lease's renewal is not this one's.
        clock.renewed(6, t0 + Duration::from_secs(9));
        assert_eq!(clock.lease().alive_until, Duration::from_secs(3));
        clock.unconfirmed(7);
        assert!(clock.lease().unconfirmed);
        clock.lost(7);
        let l = clock.lease();
        assert!(l.lost && !l.unconfirmed && l.alive_until == Duration::ZERO);
        // A renewal of the lost lease does not bring it back.
        clock.renewed(7, t0 + Duration::from_secs(9));
        assert!(clock.lease().lost);
        clock.granted(8, t0 + Duration::from_secs(12));
        let l = clock.lease();
        assert_eq!((l.epoch, l.lost), (8, false));
        assert_eq!(clock.alive_until(), Some(t0 + Duration::from_secs(12)));
    }
}
