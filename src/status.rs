//! The status toma reports. Deterministic: it changes only when the world changed, so writing
//! it never wakes the controller up again for nothing.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{MOUNT_DELAY_SECONDS, TurnCredential, TurnCredentialStatus};
use crate::credential::Credential;
use crate::error::Failure;

pub const READY: &str = "Ready";
pub const ISSUED: &str = "Issued";
/// Whether pods that mount the Secret always read an unexpired credential.
pub const MOUNT_SAFE: &str = "MountSafe";
pub const COVERS_KUBELET_DELAY: &str = "CoversKubeletDelay";
/// The reason of MountSafe=False, and of the Warning Event that reports it.
pub const RENEW_BEFORE_TOO_SHORT: &str = "RenewBeforeTooShort";

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
        conditions: vec![
            condition(tc, &previous, READY, "True", ISSUED, message, now),
            mount_safe_condition(tc, &previous, now),
        ],
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
        conditions: vec![
            condition(tc, &previous, READY, "False", error.reason(), message, now),
            mount_safe_condition(tc, &previous, now),
        ],
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

/// MountSafe: whether the spec renews early enough for a kubelet at its default settings to put
/// the next credential in mounted files before the current one expires. It depends on the spec
/// alone, so it changes only when the spec does.
fn mount_safe_condition(tc: &TurnCredential, previous: &TurnCredentialStatus, now: Timestamp) -> Condition {
    let renew_before = tc.renew_before_seconds();
    if tc.is_mount_safe() {
        let message = format!(
            "credentials are renewed {renew_before} s before they expire, which covers the up to 90 s a kubelet at its default settings takes to update a mounted Secret"
        );
        condition(
            tc,
            previous,
            MOUNT_SAFE,
            "True",
            COVERS_KUBELET_DELAY,
            message,
            now,
        )
    } else {
        let message = format!(
            "credentials are renewed {renew_before} s before they expire, less than the {MOUNT_DELAY_SECONDS} s that pods mounting Secret {} need (a kubelet at its default settings updates a mounted Secret up to 90 s after it changes), so they can read an expired credential; set renewBeforeSeconds to {MOUNT_DELAY_SECONDS} or more (ttlSeconds must be above it), or leave it unset with ttlSeconds of 240 or more. Consumers that read the Secret through the API are not affected",
            tc.secret_name()
        );
        condition(
            tc,
            previous,
            MOUNT_SAFE,
            "False",
            RENEW_BEFORE_TOO_SHORT,
            message,
            now,
        )
    }
}

/// The MountSafe condition of `new` if it has just become False (it was True, or not reported),
/// which toma announces with a Warning Event.
pub fn mount_safety_lost<'a>(
    previous: Option<&TurnCredentialStatus>,
    new: &'a TurnCredentialStatus,
) -> Option<&'a Condition> {
    let now_false = mount_safe_of(new).filter(|c| c.status == "False")?;
    let was_false = previous
        .and_then(mount_safe_of)
        .is_some_and(|c| c.status == "False");
    (!was_false).then_some(now_false)
}

/// The MountSafe condition of `status`, if reported.
pub fn mount_safe_of(status: &TurnCredentialStatus) -> Option<&Condition> {
    status.conditions.iter().find(|c| c.type_ == MOUNT_SAFE)
}

/// A condition of `type_`; its transition time moves only when its status does.
fn condition(
    tc: &TurnCredential,
    previous: &TurnCredentialStatus,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> Condition {
    let last = previous.conditions.iter().find(|c| c.type_ == type_);
    let last_transition_time = match last {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(now),
    };
    Condition {
        type_: type_.into(),
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

    fn mount_safe(status: &TurnCredentialStatus) -> &Condition {
        mount_safe_of(status).unwrap()
    }

    #[test]
    fn a_credential_renewed_120_s_or_more_before_expiry_is_mount_safe() {
        let tc = turn_credential("web");
        let status = issued(&tc, &credential_at(0, 86_400), at(57_600), 1, at(0));
        let condition = mount_safe(&status);
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("True", COVERS_KUBELET_DELAY)
        );
        assert!(
            condition.message.contains("renewed 28800 s before"),
            "{}",
            condition.message
        );
        assert_eq!(status.conditions[0].type_, READY, "Ready comes first");
    }

    #[test]
    fn a_credential_renewed_too_late_for_mounted_files_says_so_even_while_failing() {
        let mut tc = turn_credential("web");
        tc.spec.ttl_seconds = 60;
        tc.spec.renew_before_seconds = Some(50);
        let issued = issued(&tc, &credential_at(0, 60), at(10), 1, at(0));
        let failed = failed(&tc, &invalid_spec(), None, at(0));
        for status in [&issued, &failed] {
            let condition = mount_safe(status);
            assert_eq!(
                (condition.status.as_str(), condition.reason.as_str()),
                ("False", RENEW_BEFORE_TOO_SHORT)
            );
            assert!(
                condition.message.contains("renewed 50 s before")
                    && condition.message.contains("pods mounting Secret web"),
                "{}",
                condition.message
            );
        }
        assert_eq!(ready_state(Some(&issued)), Some(("True".into(), "Issued".into())));
    }

    #[test]
    fn losing_mount_safety_is_announced_once_and_regaining_it_not_at_all() {
        let mut tc = turn_credential("web");
        let safe = issued(&tc, &credential_at(0, 86_400), at(57_600), 1, at(0));
        tc.spec.renew_before_seconds = Some(60);
        let unsafe_ = issued(&tc, &credential_at(0, 86_400), at(86_340), 1, at(5));

        assert!(mount_safety_lost(None, &unsafe_).is_some(), "a new credential");
        assert!(
            mount_safety_lost(Some(&safe), &unsafe_).is_some(),
            "a changed spec"
        );
        assert!(mount_safety_lost(Some(&unsafe_), &unsafe_).is_none(), "a repeat");
        assert!(mount_safety_lost(Some(&unsafe_), &safe).is_none());
        assert!(mount_safety_lost(None, &safe).is_none());
    }

    #[test]
    fn the_mount_safe_transition_time_moves_only_when_it_flips() {
        let mut tc = turn_credential("web");
        tc.spec.renew_before_seconds = Some(60);
        tc.status = Some(issued(&tc, &credential_at(0, 86_400), at(86_340), 1, at(0)));
        let later = failed(&tc, &invalid_spec(), None, at(50));
        assert_eq!(mount_safe(&later).last_transition_time, Time(at(0)));
        tc.status = Some(later);
        tc.spec.renew_before_seconds = None;
        let fixed = issued(&tc, &credential_at(0, 86_400), at(57_600), 1, at(70));
        assert_eq!(mount_safe(&fixed).last_transition_time, Time(at(70)));
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
