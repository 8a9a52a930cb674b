//! When the host of a singleton must stop it.
//!
//! A singleton's group membership is bound to its host's lease: when the host is cut off from
//! the store, the lease expires, the membership goes and the controller starts a replacement
//! elsewhere. The host must have stopped its instance before that can happen, so it stops it
//! as soon as it can no longer be sure its lease is alive: at the lease deadline it knows for
//! certain (its last *confirmed* renewal, counted from when the renewal was sent, plus the
//! TTL) minus a safety margin that absorbs scheduling delays and clock drift.
//!
//! [`guard`] is that decision, pure: the shell calls it, stops the instance on
//! [`Guard::Stop`] and calls again at the time [`Guard::CheckAt`] names.

use std::time::Duration;

use super::Time;

/// The margin before the lease deadline at which the host stops its singleton.
pub(crate) const MARGIN: Duration = Duration::from_millis(300);

/// The longest wait between two checks, so that a deadline that moves (a renewal that was
/// confirmed, or one that was not) is taken into account soon.
pub(crate) const RECHECK: Duration = Duration::from_millis(200);

/// What the host of a singleton does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Guard {
    /// No lease (in-process discovery): nothing to guard against, stop checking.
    Unguarded,
    /// The lease may expire soon or has: stop the singleton now.
    Stop,
    /// Still safe: check again at this time.
    CheckAt(Time),
}

/// The guard's decision at `now` for a host whose lease is certainly alive until `deadline`
/// (`None`: no lease at all), stopping `margin` before it: [`Guard::Stop`] once
/// `now >= deadline - margin`, otherwise [`Guard::CheckAt`] the earlier of that moment and
/// `now + RECHECK`.
pub(crate) fn guard(deadline: Option<Time>, now: Time, margin: Duration) -> Guard {
    let Some(deadline) = deadline else {
        return Guard::Unguarded;
    };
    let stop_at = deadline.saturating_sub(margin);
    if now >= stop_at {
        Guard::Stop
    } else {
        Guard::CheckAt(stop_at.min(now + RECHECK))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Time {
        Duration::from_millis(n)
    }

    #[test]
    fn without_a_lease_there_is_nothing_to_guard() {
        assert_eq!(guard(None, ms(0), MARGIN), Guard::Unguarded);
        assert_eq!(guard(None, ms(99_000), MARGIN), Guard::Unguarded);
    }

    #[test]
    fn far_from_the_deadline_it_checks_again_soon() {
        assert_eq!(
            guard(Some(ms(3_000)), ms(1_000), MARGIN),
            Guard::CheckAt(ms(1_200))
        );
    }

    #[test]
    fn near_the_deadline_it_checks_exactly_at_the_stop_time() {
        // Stop time 2_700: closer than the recheck period.
        assert_eq!(
            guard(Some(ms(3_000)), ms(2_600), MARGIN),
            Guard::CheckAt(ms(2_700))
        );
    }

    #[test]
    fn it_stops_from_the_margin_on_and_after_the_deadline() {
        assert_eq!(guard(Some(ms(3_000)), ms(2_700), MARGIN), Guard::Stop);
        assert_eq!(guard(Some(ms(3_000)), ms(2_999), MARGIN), Guard::Stop);
        assert_eq!(guard(Some(ms(3_000)), ms(5_000), MARGIN), Guard::Stop);
    }

    #[test]
    fn a_deadline_within_the_margin_of_the_origin_stops_at_once() {
        assert_eq!(guard(Some(ms(200)), ms(0), MARGIN), Guard::Stop);
    }

    #[test]
    fn a_zero_margin_stops_at_the_deadline() {
        assert_eq!(
            guard(Some(ms(500)), ms(499), Duration::ZERO),
            Guard::CheckAt(ms(500))
        );
        assert_eq!(guard(Some(ms(500)), ms(500), Duration::ZERO), Guard::Stop);
    }
}
