//! When a node may start work that another node asked of it: the fence that keeps a node the
//! cluster gave up on (frozen, starved or cut off from the store past its lease) from acting
//! after it resumes.
//!
//! A node's membership is its lease. The cluster declares the node `Down`, and tells callers
//! `NodeDown`, only after the store expired the lease. The node knows a time until which its
//! lease is certainly alive (its last *confirmed* renewal, counted from when the renewal was
//! sent, plus the TTL: the store counts the TTL from a later moment). So:
//!
//! - work started before that time is started before any caller can have been told the node
//!   is down;
//! - after it the lease is *in doubt*: a request read then is held until the node has asked
//!   the store, and started only if the lease is still alive; refused (not handled) if it was
//!   lost; started anyway if the store cannot be reached (so that an outage of the store does
//!   not stop the cluster; the lease is then *unconfirmed* until the store answers);
//! - every link is stamped with the lease (its *epoch*) under which it was accepted; once that
//!   lease is known lost, nothing from the link is started, and nothing read under it that
//!   still waits in a mailbox either.
//!
//! [`admit`] decides for a frame just read, [`may_start`] for a request about to be handled.
//! Both are pure: the shell (`runtime/fence.rs`) reads the lease state and the clock.

use super::Time;

/// What a node knows of its own lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    /// Which lease (a new one after a lost one: a new incarnation).
    pub(crate) epoch: u64,
    /// The lease is known lost (the store said so); a new one is not granted yet.
    pub(crate) lost: bool,
    /// Until when the lease is certainly alive.
    pub(crate) alive_until: Time,
    /// The store could not be reached to confirm the lease once it was in doubt; the node
    /// serves anyway until the store answers.
    pub(crate) unconfirmed: bool,
}

/// What to do with a frame of requests just read from a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Start its requests.
    Start,
    /// The lease is in doubt: keep the frame until the store has been asked.
    Hold,
    /// The link belongs to a lost lease: refuse every request, none is handled.
    Refuse,
}

/// The decision for a frame read at `now` from a link accepted under lease `link_epoch`.
pub(crate) fn admit(lease: &Lease, link_epoch: u64, now: Time) -> Admit {
    if lease.lost || link_epoch != lease.epoch {
        Admit::Refuse
    } else if now < lease.alive_until || lease.unconfirmed {
        Admit::Start
    } else {
        Admit::Hold
    }
}

/// Whether a request admitted under lease `epoch` may start at `now`, when its handler is
/// about to run (it may have waited in a mailbox while the node was frozen). There is no
/// holding here: a request whose lease is in doubt, and not being served unconfirmed, is
/// refused.
pub(crate) fn may_start(lease: &Lease, epoch: u64, now: Time) -> bool {
    admit(lease, epoch, now) == Admit::Start
}

/// Whether a node may let an activation of a keyed entity handle a message at `now`: its
/// shard was taken under lease `epoch`, and the lease must be certainly alive for `margin`
/// more. Stricter than [`may_start`]: no grace while the store is unreachable
/// (`unconfirmed`), because a new owner takes the shard as soon as the store expires the
/// lease, and the lease's holder stops hosting before that can happen (the singleton guard's
/// rule).
pub(crate) fn may_host(lease: &Lease, epoch: u64, now: Time, margin: Time) -> bool {
    !lease.lost && lease.epoch == epoch && now + margin < lease.alive_until
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn lease(epoch: u64, alive_until_ms: u64) -> Lease {
        Lease {
            epoch,
            lost: false,
            alive_until: Duration::from_millis(alive_until_ms),
            unconfirmed: false,
        }
    }

    fn ms(n: u64) -> Time {
        Duration::from_millis(n)
    }

    #[test]
    fn a_certainly_alive_lease_starts_work_from_its_own_links() {
        let l = lease(7, 2_000);
        assert_eq!(admit(&l, 7, ms(1_999)), Admit::Start);
        assert!(may_start(&l, 7, ms(0)));
    }

    #[test]
    fn past_the_certain_lifetime_work_is_held_then_refused_at_the_handler() {
        // The node was frozen: it resumes after its lease could have expired.
        let l = lease(7, 2_000);
        assert_eq!(admit(&l, 7, ms(2_000)), Admit::Hold);
        assert_eq!(admit(&l, 7, ms(9_000)), Admit::Hold);
        // A request read before the freeze and still in a mailbox is not started.
        assert!(!may_start(&l, 7, ms(9_000)));
    }

    #[test]
    fn a_lost_lease_refuses_everything_read_under_it() {
        let l = Lease {
            lost: true,
            ..lease(7, 2_000)
        };
        assert_eq!(admit(&l, 7, ms(0)), Admit::Refuse);
        assert!(!may_start(&l, 7, ms(0)));
        // The new incarnation refuses the old links, starts on the new ones.
        let renewed = lease(8, 12_000);
        assert_eq!(admit(&renewed, 7, ms(10_000)), Admit::Refuse);
        assert!(!may_start(&renewed, 7, ms(10_000)));
        assert_eq!(admit(&renewed, 8, ms(10_000)), Admit::Start);
    }

    #[test]
    fn a_store_that_cannot_be_reached_does_not_stop_the_node() {
        let l = Lease {
            unconfirmed: true,
            ..lease(7, 2_000)
        };
        assert_eq!(admit(&l, 7, ms(60_000)), Admit::Start);
        assert!(may_start(&l, 7, ms(60_000)));
        // But an old link stays refused.
        assert_eq!(admit(&l, 6, ms(0)), Admit::Refuse);
    }

    #[test]
    fn an_entity_is_hosted_only_while_the_lease_is_certainly_alive_for_the_margin() {
        let l = lease(7, 3_000);
        let margin = ms(300);
        assert!(may_host(&l, 7, ms(2_000), margin));
        assert!(!may_host(&l, 7, ms(2_700), margin));
        assert!(!may_host(&l, 7, ms(9_000), margin));
        // Another lease, a lost one, or an unconfirmed one past its deadline: never.
        assert!(!may_host(&l, 6, ms(0), margin));
        assert!(!may_host(&Lease { lost: true, ..l }, 7, ms(0), margin));
        assert!(!may_host(
            &Lease {
                unconfirmed: true,
                ..l
            },
            7,
            ms(2_800),
            margin
        ));
    }
}
