//! When to renew a credential and when to try again after a failure.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::api::TurnCredential;
use crate::credential::Credential;

/// The most that renewal is moved earlier, so credentials created together spread out.
const MAX_JITTER: Duration = Duration::from_secs(300);
const FIRST_RETRY: Duration = Duration::from_secs(5);
const MAX_RETRY: Duration = Duration::from_secs(300);
/// Even while failing, try at least this many times before a valid credential expires.
const ATTEMPTS_BEFORE_EXPIRY: u32 = 4;
const MIN_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between attempts once the stored credential has expired.
const LAPSED_RETRY: Duration = Duration::from_secs(30);

/// When to mint the next credential: `renew_before` ahead of expiry, moved earlier by a jitter of
/// up to 5% of `renew_before` (at most 5 minutes). The jitter is derived from `seed` (the
/// object's UID), so the same credential always gets the same renewal time and status is stable.
pub fn renewal_time(
    issued_at: Timestamp,
    expires_at: Timestamp,
    renew_before_seconds: i64,
    seed: &str,
) -> Timestamp {
    let renew_before = Duration::from_secs(renew_before_seconds.max(0) as u64);
    let max_jitter = (renew_before / 20).min(MAX_JITTER);
    let jitter = if max_jitter.is_zero() {
        Duration::ZERO
    } else {
        let mut hasher = StableHasher::default();
        seed.hash(&mut hasher);
        issued_at.as_second().hash(&mut hasher);
        // Whole seconds: Kubernetes keeps times to the second, and a renewal time that reads back
        // unchanged keeps the status from being rewritten on every reconcile.
        Duration::from_secs(hasher.finish() % max_jitter.as_secs().max(1))
    };
    let at = expires_at - SignedDuration::try_from(renew_before + jitter).unwrap_or(SignedDuration::ZERO);
    at.max(issued_at)
}

/// A whole number of seconds in `0..spread`, the same for the same `seed`: spreads the work
/// that one event starts for many objects.
pub fn spread(seed: &str, spread: i64) -> i64 {
    let mut hasher = StableHasher::default();
    seed.hash(&mut hasher);
    (hasher.finish() % spread.max(1) as u64) as i64
}

/// When `tc` mints the credential after `credential`.
pub fn renewal_of(tc: &TurnCredential, credential: &Credential) -> Timestamp {
    let seed = tc.metadata.uid.as_deref().unwrap_or_default();
    renewal_time(
        credential.issued_at,
        credential.expires_at,
        tc.renew_before_seconds(),
        seed,
    )
}

/// How long to wait before the next attempt after `failures` consecutive failures: doubling
/// from 5 s up to 5 min, never sooner than the provider's Retry-After; while a valid credential
/// exists, short enough to try several times before it expires, and at most 30 s once it has.
/// A Retry-After longer than half of the valid credential's remaining life is cut to that half,
/// so that toma asks again before the credential lapses; once it has lapsed, Retry-After holds.
pub fn retry_delay(
    failures: u32,
    retry_after: Option<Duration>,
    now: Timestamp,
    expires_at: Option<Timestamp>,
) -> Duration {
    let doubling = FIRST_RETRY.saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)));
    let retry_after = retry_after.unwrap_or(Duration::ZERO);
    let delay = match expires_at {
        Some(expires_at) if expires_at > now => {
            let remaining = Duration::try_from(expires_at - now).unwrap_or(Duration::ZERO);
            let backoff = doubling.min(MAX_RETRY).min(remaining / ATTEMPTS_BEFORE_EXPIRY);
            backoff.max(retry_after.min(remaining / 2))
        }
        // The stored credential has lapsed and its users are without TURN: keep trying often.
        Some(_) => doubling.min(LAPSED_RETRY).max(retry_after),
        None => doubling.min(MAX_RETRY).max(retry_after),
    };
    delay.max(MIN_RETRY)
}

/// How long until `at`, at least a second so a requeue never spins.
pub fn until(now: Timestamp, at: Timestamp) -> Duration {
    Duration::try_from(at - now)
        .unwrap_or(Duration::ZERO)
        .max(MIN_RETRY)
}

/// FNV-1a: stable across Rust releases, unlike `DefaultHasher`, so jitter survives upgrades.
struct StableHasher(u64);

impl Default for StableHasher {
    fn default() -> Self {
        StableHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for StableHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn renewal_is_at_two_thirds_of_life_minus_a_small_jitter() {
        let renewal = renewal_time(at(0), at(86_400), 86_400 / 3, "uid-1");
        let two_thirds = at(57_600);
        assert!(renewal <= two_thirds);
        assert!(
            renewal >= two_thirds - SignedDuration::from_secs(300),
            "{renewal}"
        );
    }

    #[test]
    fn renewal_time_is_in_whole_seconds_so_it_reads_back_unchanged() {
        for i in 0..50 {
            let renewal = renewal_time(at(0), at(86_400), 28_800, &format!("uid-{i}"));
            assert_eq!(renewal.subsec_nanosecond(), 0);
        }
    }

    #[test]
    fn renewal_time_is_stable_for_the_same_credential() {
        assert_eq!(
            renewal_time(at(0), at(600), 200, "uid-1"),
            renewal_time(at(0), at(600), 200, "uid-1")
        );
    }

    #[test]
    fn credentials_created_together_renew_at_different_times() {
        let times: std::collections::BTreeSet<_> = (0..100)
            .map(|i| renewal_time(at(0), at(86_400), 28_800, &format!("uid-{i}")))
            .collect();
        // 100 draws from 300 whole seconds: about 85 distinct values are expected.
        assert!(times.len() > 70, "only {} distinct renewal times", times.len());
    }

    #[test]
    fn renewal_is_never_before_issue() {
        assert_eq!(renewal_time(at(100), at(160), 60, "uid"), at(100));
    }

    #[test]
    fn retries_double_up_to_five_minutes() {
        let delays: Vec<u64> = (1..=9)
            .map(|n| retry_delay(n, None, at(0), None).as_secs())
            .collect();
        assert_eq!(delays, vec![5, 10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn retry_after_is_honoured() {
        assert_eq!(
            retry_delay(1, Some(Duration::from_secs(42)), at(0), None),
            Duration::from_secs(42)
        );
    }

    #[test]
    fn a_retry_after_beyond_the_credentials_life_is_cut_to_half_of_what_is_left() {
        let hour = Some(Duration::from_secs(3600));
        assert_eq!(
            retry_delay(1, hour, at(0), Some(at(600))),
            Duration::from_secs(300)
        );
        assert_eq!(
            retry_delay(1, hour, at(0), Some(at(86_400))),
            Duration::from_secs(3600)
        );
        assert_eq!(
            retry_delay(1, hour, at(1000), Some(at(900))),
            Duration::from_secs(3600),
            "lapsed"
        );
    }

    #[test]
    fn retries_get_more_frequent_as_expiry_nears() {
        let far = retry_delay(9, None, at(0), Some(at(86_400)));
        let near = retry_delay(9, None, at(0), Some(at(120)));
        assert_eq!(far, Duration::from_secs(300));
        assert_eq!(near, Duration::from_secs(30));
    }

    #[test]
    fn a_lapsed_credential_is_retried_at_least_every_30_seconds() {
        assert_eq!(
            retry_delay(9, None, at(1000), Some(at(900))),
            Duration::from_secs(30)
        );
        assert_eq!(retry_delay(9, None, at(1000), None), Duration::from_secs(300));
    }

    #[test]
    fn a_requeue_is_never_zero() {
        assert_eq!(until(at(10), at(5)), Duration::from_secs(1));
    }
}
