//! Rate limits per client and route (governor's GCRA), and the in-flight cap.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use http::StatusCode;

use crate::error::ApiError;

/// A request rate allowed per client on a route: a steady rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    per: Duration,
    requests: NonZeroU32,
    burst: Option<NonZeroU32>,
}

impl RateLimit {
    /// `requests` per second (at least 1), with a burst of as many.
    pub fn per_second(requests: u32) -> Self {
        RateLimit::per(requests, Duration::from_secs(1))
    }

    /// `requests` per minute (at least 1), with a burst of as many.
    pub fn per_minute(requests: u32) -> Self {
        RateLimit::per(requests, Duration::from_secs(60))
    }

    fn per(requests: u32, per: Duration) -> Self {
        RateLimit {
            per,
            requests: NonZeroU32::new(requests).unwrap_or(NonZeroU32::MIN),
            burst: None,
        }
    }

    /// How many requests may arrive at once after a quiet period (default: the rate's count).
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        self
    }

    fn quota(&self) -> Quota {
        let period = self.per / self.requests.get();
        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(self.requests));
        quota.allow_burst(self.burst.unwrap_or(self.requests))
    }
}

/// One route's limiter, keyed by client identity.
pub(crate) struct Limiter {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl Limiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Limiter {
            limiter: DefaultKeyedRateLimiter::keyed(limit.quota()),
            clock: DefaultClock::default(),
        }
    }

    /// Lets a request of `client` through, or refuses it with 429 and when to come back.
    pub(crate) fn check(&self, client: &str) -> Result<(), ApiError> {
        self.limiter
            .check_key(&client.to_owned())
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(self.clock.now());
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("too many requests from this client on this route; retry in {wait:?}"),
                )
                .with_retry_after(wait)
            })
    }

    /// Forgets clients whose state is back to full capacity (bounds memory to active clients).
    pub(crate) fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_with_retry_after_per_client() {
        let limiter = Limiter::new(RateLimit::per_minute(2));
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_ok());
        let refused = limiter.check("a").unwrap_err();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        let wait = refused.retry_after().unwrap();
        assert!(
            wait > Duration::from_secs(20) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert!(limiter.check("b").is_ok(), "limits are per client");
    }

    #[test]
    fn explicit_burst() {
        let limiter = Limiter::new(RateLimit::per_second(1).burst(3));
        for _ in 0..3 {
            assert!(limiter.check("a").is_ok());
        }
        assert!(limiter.check("a").is_err());
    }
}
