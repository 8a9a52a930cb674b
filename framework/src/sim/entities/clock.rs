//! A node's clock: its own origin, and a rate off the virtual clock's by at most the drift
//! bound. The node reads it for everything it times (its lease's deadline, its timers, the
//! hosting fence); etcd and the checks read the virtual clock.
//!
//! Like a monotonic clock it keeps running while the process is stopped (a freeze).

use std::time::Duration;

use crate::core::Time;

/// One million: rates are in parts per million.
const MILLION: i128 = 1_000_000;

/// See the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    /// The node's reading at virtual time zero.
    origin: Duration,
    /// How much faster than the virtual clock it runs, in parts per million (negative:
    /// slower).
    ppm: i64,
}

impl Clock {
    /// A clock reading `origin` at virtual time zero and running `ppm` parts per million
    /// fast (`|ppm|` well below a million).
    pub(crate) fn new(origin: Duration, ppm: i64) -> Self {
        debug_assert!(ppm.abs() < 500_000);
        Clock { origin, ppm }
    }

    /// The node's reading at virtual time `t`.
    pub(crate) fn local(&self, t: Time) -> Time {
        let n = t.as_nanos() as i128;
        let local = n + n * i128::from(self.ppm) / MILLION;
        self.origin + Duration::from_nanos(local as u64)
    }

    /// The virtual time the node's clock takes to advance by `d` (rounded up).
    pub(crate) fn span(&self, d: Duration) -> Duration {
        let n = d.as_nanos() as i128;
        let rate = MILLION + i128::from(self.ppm);
        Duration::from_nanos(((n * MILLION + rate - 1) / rate) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drifting_clock_runs_at_its_rate_from_its_origin() {
        let slow = Clock::new(Duration::from_secs(100), -10_000);
        assert_eq!(slow.local(Duration::ZERO), Duration::from_secs(100));
        assert_eq!(
            slow.local(Duration::from_secs(100)),
            Duration::from_secs(199)
        );
        // 99 s on the slow clock take 100 s of virtual time.
        assert_eq!(slow.span(Duration::from_secs(99)), Duration::from_secs(100));
        let fast = Clock::new(Duration::ZERO, 10_000);
        assert_eq!(
            fast.local(Duration::from_secs(100)),
            Duration::from_secs(101)
        );
        let t = Duration::from_millis(12_345);
        assert!(
            fast.local(t + fast.span(Duration::from_millis(7)))
                >= fast.local(t) + Duration::from_millis(7)
        );
    }
}
