//! A client-side limit on requests to the provider, per key, so that a burst (a thousand new
//! TurnCredentials, or a key edit that re-mints them all) reaches the provider at a steady rate
//! instead of tripping its limits. A request over the limit waits its turn; none is refused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::api::KeyName;

/// How many requests per second, and how many at once after a quiet spell.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

impl Rate {
    /// The default: 100 requests a second with bursts of 100 per key, a fifth of the 500
    /// credentials a second that Cloudflare says to start at.
    pub const DEFAULT: Rate = Rate {
        per_second: 100.0,
        burst: 100,
    };
}

/// The limit of every key, kept as each key's theoretical arrival time (GCRA): one request every
/// `1 / per_second`, up to `burst` early.
pub struct RateLimit {
    /// None: no limit.
    rate: Option<Rate>,
    next: Mutex<HashMap<KeyName, Instant>>,
}

impl RateLimit {
    pub fn new(rate: Option<Rate>) -> RateLimit {
        RateLimit {
            rate: rate.filter(|r| r.per_second > 0.0),
            next: Mutex::default(),
        }
    }

    /// Waits until a request with `key` is within the limit, and counts it. Returns how long it
    /// waited.
    pub async fn wait_turn(&self, key: &KeyName) -> Duration {
        let wait = self.reserve(key, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        wait
    }

    /// Counts a request with `key` made at `now`, and says how long it must wait first.
    fn reserve(&self, key: &KeyName, now: Instant) -> Duration {
        let Some(rate) = self.rate else {
            return Duration::ZERO;
        };
        let interval = Duration::from_secs_f64(1.0 / rate.per_second);
        let tolerance = interval * rate.burst.saturating_sub(1);
        let mut next = self.next.lock().expect("the rate limit lock is never poisoned");
        // Forget keys that have been quiet long enough to have their whole burst back.
        next.retain(|_, at| *at > now);
        let at = next.get(key).copied().unwrap_or(now).max(now);
        next.insert(key.clone(), at + interval);
        (at - tolerance).saturating_duration_since(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::KeyKind;

    fn key(name: &str) -> KeyName {
        KeyName {
            kind: KeyKind::ClusterTurnKey,
            namespace: None,
            name: name.into(),
        }
    }

    #[test]
    fn a_burst_goes_at_once_and_the_rest_at_the_rate() {
        let limit = RateLimit::new(Some(Rate {
            per_second: 10.0,
            burst: 5,
        }));
        let now = Instant::now();
        let waits: Vec<Duration> = (0..8).map(|_| limit.reserve(&key("a"), now)).collect();
        let ms: Vec<u128> = waits.iter().map(|w| w.as_millis()).collect();
        assert_eq!(ms, [0, 0, 0, 0, 0, 100, 200, 300]);
        // Another key has a limit of its own.
        assert_eq!(limit.reserve(&key("b"), now), Duration::ZERO);
        // After a quiet second the burst is back.
        let later = now + Duration::from_secs(2);
        assert_eq!(limit.reserve(&key("a"), later), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_thousand_requests_take_as_long_as_the_rate_says() {
        let limit = RateLimit::new(Some(Rate::DEFAULT));
        let started = Instant::now();
        for _ in 0..1000 {
            limit.wait_turn(&key("a")).await;
        }
        // 100 at once, then 900 at 100 a second.
        let took = started.elapsed().as_secs_f64();
        assert!((8.9..9.1).contains(&took), "took {took} s");
    }

    #[test]
    fn no_rate_means_no_wait() {
        let limit = RateLimit::new(None);
        let now = Instant::now();
        assert!((0..1000).all(|_| limit.reserve(&key("a"), now).is_zero()));
        let zero = RateLimit::new(Some(Rate {
            per_second: 0.0,
            burst: 1,
        }));
        assert!(zero.reserve(&key("a"), now).is_zero());
    }
}
