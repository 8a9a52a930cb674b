//! Repeated log lines, limited: a flood of bad input (malformed envelopes, refused links) must
//! not turn into a flood of log lines, which costs the node's thread more than the input
//! itself. Each call site of [`warn_limited!`] logs its first [`PER_WINDOW`] occurrences in
//! every [`WINDOW`] and counts the rest; the next line it logs carries the count of those it
//! left out (`suppressed = N`), so the log stays bounded and nothing goes unaccounted.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The lines one call site logs per window.
pub(crate) const PER_WINDOW: u32 = 10;

/// The window.
pub(crate) const WINDOW: Duration = Duration::from_secs(1);

/// The state of one call site.
#[derive(Debug)]
pub(crate) struct Limiter(Mutex<Window>);

#[derive(Debug)]
struct Window {
    start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl Limiter {
    /// A limiter that has logged nothing yet.
    pub(crate) const fn new() -> Self {
        Limiter(Mutex::new(Window {
            start: None,
            logged: 0,
            suppressed: 0,
        }))
    }

    /// `Some(n)` when this occurrence is to be logged, `n` being the occurrences left out
    /// since the last line logged; `None` when it is to be counted only.
    pub(crate) fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if w.start
            .is_none_or(|start| now.saturating_duration_since(start) >= WINDOW)
        {
            w.start = Some(now);
            w.logged = 0;
        }
        if w.logged < PER_WINDOW {
            w.logged += 1;
            Some(std::mem::take(&mut w.suppressed))
        } else {
            w.suppressed += 1;
            None
        }
    }
}

/// `tracing::warn!`, limited per call site (see the [module docs](self)); the line gets a
/// `suppressed` field.
macro_rules! warn_limited {
    ($($arg:tt)+) => {{
        static LIMIT: $crate::ratelog::Limiter = $crate::ratelog::Limiter::new();
        if let Some(suppressed) = LIMIT.admit() {
            ::tracing::warn!(suppressed, $($arg)+);
        }
    }};
}
pub(crate) use warn_limited;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_first_of_each_window_and_counts_the_rest() {
        let limiter = Limiter::new();
        let t0 = Instant::now();
        let logged: Vec<Option<u64>> = (0..25).map(|_| limiter.admit_at(t0)).collect();
        assert_eq!(
            logged.iter().filter(|l| l.is_some()).count(),
            PER_WINDOW as usize
        );
        assert!(logged[..PER_WINDOW as usize].iter().all(|l| *l == Some(0)));
        // Still the same window: counted.
        assert_eq!(limiter.admit_at(t0 + WINDOW / 2), None);
        // A new window: logged again, with the count of those left out.
        assert_eq!(limiter.admit_at(t0 + WINDOW), Some(16));
        assert_eq!(limiter.admit_at(t0 + WINDOW), Some(0));
    }
}
