//! Outlier ejection of one group instance: decisions only, time passed in.

use std::time::{Duration, Instant};

/// When an instance that keeps failing is taken out of rotation, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    /// Consecutive failed asks that eject an instance (default 5).
    pub consecutive_failures: u32,
    /// How long the first ejection lasts (default 1 s); each ejection in a row doubles it.
    pub base: Duration,
    /// The longest ejection (default 30 s).
    pub max: Duration,
}

impl Default for Ejection {
    fn default() -> Self {
        Ejection {
            consecutive_failures: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

/// The health of one instance as one caller sees it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Health {
    failures: u32,
    ejected_until: Option<Instant>,
    ejections: u32,
}

impl Health {
    /// Whether the instance may be picked at `now`. After an ejection ends, the instance is
    /// on probation: the next ask is the probe, and one more failure ejects it again.
    pub(crate) fn available(&self, now: Instant) -> bool {
        self.ejected_until.is_none_or(|until| now >= until)
    }

    /// Records the outcome of one ask; returns whether this ejected the instance.
    pub(crate) fn record(&mut self, ok: bool, now: Instant, policy: &Ejection) -> bool {
        if ok {
            self.failures = 0;
            if self.ejected_until.is_some_and(|until| now >= until) {
                self.ejected_until = None;
                self.ejections = 0;
            }
            return false;
        }
        self.failures += 1;
        let on_probation = self.ejected_until.is_some_and(|until| now >= until);
        if self.failures >= policy.consecutive_failures.max(1) || on_probation {
            let factor = 2u32.saturating_pow(self.ejections.min(16));
            let length = policy.base.saturating_mul(factor).min(policy.max);
            self.ejected_until = Some(now + length);
            self.ejections += 1;
            self.failures = 0;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejects_after_consecutive_failures_then_probes_back() {
        let policy = Ejection::default();
        let t0 = Instant::now();
        let mut h = Health::default();
        for _ in 0..4 {
            assert!(!h.record(false, t0, &policy));
        }
        assert!(h.available(t0));
        assert!(h.record(false, t0, &policy), "the fifth failure ejects");
        assert!(!h.available(t0 + Duration::from_millis(999)));
        assert!(
            h.available(t0 + Duration::from_secs(1)),
            "probation after the ejection"
        );
        // A failing probe ejects again at once, for twice as long.
        let t1 = t0 + Duration::from_secs(1);
        assert!(h.record(false, t1, &policy));
        assert!(!h.available(t1 + Duration::from_millis(1999)));
        assert!(h.available(t1 + Duration::from_secs(2)));
        // A successful probe restores it fully.
        let t2 = t1 + Duration::from_secs(2);
        h.record(true, t2, &policy);
        assert!(h.available(t2));
        for _ in 0..4 {
            assert!(!h.record(false, t2, &policy), "the count starts again");
        }
    }

    #[test]
    fn success_resets_the_count_and_ejection_is_capped() {
        let policy = Ejection {
            consecutive_failures: 2,
            base: Duration::from_secs(10),
            max: Duration::from_secs(15),
        };
        let t = Instant::now();
        let mut h = Health::default();
        h.record(false, t, &policy);
        h.record(true, t, &policy);
        assert!(!h.record(false, t, &policy), "not consecutive");
        assert!(h.record(false, t, &policy));
        let t = t + Duration::from_secs(10);
        assert!(h.record(false, t, &policy));
        assert!(!h.available(t + Duration::from_secs(14)));
        assert!(h.available(t + Duration::from_secs(15)), "capped at max");
    }
}
