//! The status toma reports. Deterministic: it changes only when the world changed, so writing
//! it never wakes the controller up again for nothing.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{TurnCredential, TurnCredentialStatus};
use crate::credential::Credential;
use crate::error::Failure;

pub const READY: &str = "Ready";
pub const ISSUED: &str = "Issued";

/// Status after a successful reconcile: the Secret holds `credential`, the `rotations`th minted,
/// renewed at `renewal`.
pub fn issued(
    tc: &TurnCredential,
    credential: &Credential,
    renewal: Timestamp,
    rotations: i64,
    now: Timestamp,
) -> TurnCredentialStatus {
    let previous = tc.status.clone().unwrap_or_default();
    let message = format!(
        "Secret {} holds a credential valid until {}; the next is minted at {}",
        tc.secret_name(),
        credential.expires_at,
        renewal
    );
    TurnCredentialStatus {
        conditions: vec![ready_condition(tc, &previous, "True", ISSUED, message, now)],
        observed_generation: tc.metadata.generation,
        secret_name: Some(tc.secret_name()),
        issued_at: Some(Time(credential.issued_at)),
        expires_at: Some(Time(credential.expires_at)),
        renewal_time: Some(Time(renewal)),
        rotations,
        failures: 0,
        last_failure_time: previous.last_failure_time,
    }
}

/// Status after a failed reconcile. What the Secret still holds (if anything) is described by
/// `current`, so `expiresAt` keeps telling how long the old credential lasts.
pub fn failed(
    tc: &TurnCredential,
    error: &Failure,
    current: Option<&Credential>,
    now: Timestamp,
) -> TurnCredentialStatus {
    let previous = tc.status.clone().unwrap_or_default();
    let message = match current.filter(|c| c.is_valid_at(now)) {
        Some(c) => format!(
            "{error}; the current credential stays in Secret {} until {}",
            tc.secret_name(),
            c.expires_at
        ),
        None => error.to_string(),
    };
    TurnCredentialStatus {
        conditions: vec![ready_condition(
            tc,
            &previous,
            "False",
            error.reason(),
            message,
            now,
        )],
        observed_generation: tc.metadata.generation,
        secret_name: Some(tc.secret_name()),
        issued_at: current.map(|c| Time(c.issued_at)),
        expires_at: current.map(|c| Time(c.expires_at)),
        renewal_time: None,
        rotations: previous.rotations,
        failures: previous.failures + 1,
        last_failure_time: Some(Time(now)),
    }
}

/// The Ready condition; its transition time moves only when its status does.
fn ready_condition(
    tc: &TurnCredential,
    previous: &TurnCredentialStatus,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> Condition {
    let last = previous.conditions.iter().find(|c| c.type_ == READY);
    let last_transition_time = match last {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(now),
    };
    Condition {
        type_: READY.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: tc.metadata.generation,
        last_transition_time,
    }
}

/// The Ready condition's (status, reason), to tell a transition from a repeat.
pub fn ready_state(status: Option<&TurnCredentialStatus>) -> Option<(String, String)> {
    let condition = status?.conditions.iter().find(|c| c.type_ == READY)?;
    Some((condition.status.clone(), condition.reason.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{credential_at, turn_credential};

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn invalid_spec() -> Failure {
        Failure::NoTurnUrlLeft {
            key: crate::api::KeyName::of(&turn_credential("web")),
        }
    }

    #[test]
    fn issued_status_is_ready_with_times_and_counts_the_rotation() {
        let tc = turn_credential("web");
        let cred = credential_at(1000, 600);
        let status = issued(&tc, &cred, at(1400), 1, at(1000));
        assert_eq!(ready_state(Some(&status)), Some(("True".into(), "Issued".into())));
        assert_eq!(status.expires_at, Some(Time(at(1600))));
        assert_eq!(status.renewal_time, Some(Time(at(1400))));
        assert_eq!(status.rotations, 1);
        assert_eq!(status.observed_generation, Some(1));
        assert_eq!(status.secret_name.as_deref(), Some("web"));
    }

    #[test]
    fn repeating_a_reconcile_gives_the_same_status() {
        let mut tc = turn_credential("web");
        let cred = credential_at(1000, 600);
        tc.status = Some(issued(&tc, &cred, at(1400), 1, at(1000)));
        let again = issued(&tc, &cred, at(1400), 1, at(1100));
        assert_eq!(Some(again), tc.status);
    }

    #[test]
    fn failure_keeps_the_old_expiry_counts_failures_and_says_the_credential_stays() {
        let mut tc = turn_credential("web");
        let cred = credential_at(1000, 600);
        tc.status = Some(issued(&tc, &cred, at(1400), 1, at(1000)));
        let error = invalid_spec();
        let status = failed(&tc, &error, Some(&cred), at(1450));
        assert_eq!(
            ready_state(Some(&status)),
            Some(("False".into(), "InvalidSpec".into()))
        );
        assert_eq!(status.expires_at, Some(Time(at(1600))));
        assert_eq!(status.failures, 1);
        assert_eq!(status.rotations, 1);
        assert!(status.conditions[0].message.contains("stays in Secret web until"));
        assert_eq!(status.conditions[0].last_transition_time, Time(at(1450)));
    }

    #[test]
    fn success_after_failures_resets_the_failure_count() {
        let mut tc = turn_credential("web");
        tc.status = Some(failed(&tc, &invalid_spec(), None, at(10)));
        let status = issued(&tc, &credential_at(20, 600), at(400), 1, at(20));
        assert_eq!(status.failures, 0);
        assert_eq!(status.last_failure_time, Some(Time(at(10))));
    }

    #[test]
    fn transition_time_stays_while_the_condition_status_stays() {
        let mut tc = turn_credential("web");
        tc.status = Some(failed(&tc, &invalid_spec(), None, at(10)));
        let status = failed(&tc, &invalid_spec(), None, at(50));
        assert_eq!(status.conditions[0].last_transition_time, Time(at(10)));
        assert_eq!(status.failures, 2);
    }
}
