//! What a reconcile must do, decided from the TurnCredential, its Secret and the time alone.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::api::TurnCredential;
use crate::credential::Credential;
use crate::error::Failure;
use crate::schedule;
use crate::secret::{self, FINGERPRINT_ANNOTATION, ROTATE_REQUEST_ANNOTATION};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// The Secret holds a credential minted for the current spec, valid and not yet due.
    Keep(Credential),
    Mint(MintReason),
}

/// Why a new credential is minted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MintReason {
    /// There is no Secret: the TurnCredential is new, or its Secret was deleted.
    NoSecret,
    /// The Secret's data was edited, or toma cannot read it back.
    Repair,
    /// A field of the spec that the credential was minted for changed.
    SpecChanged,
    /// The key now mints differently: another key ID, base URL, URLs or shared secret.
    KeyChanged,
    /// The `toma.dev/rotate` annotation asked for a new credential.
    Forced,
    /// The renewal time came.
    RenewalDue,
    /// The stored credential expired before it could be renewed.
    Expired,
}

impl MintReason {
    /// The reason of the Normal Event that reports the mint.
    pub fn event_reason(self) -> &'static str {
        match self {
            MintReason::NoSecret => "Issued",
            MintReason::Repair => "Repaired",
            MintReason::SpecChanged => "Reissued",
            MintReason::KeyChanged => "ReissuedForKey",
            MintReason::Forced => "ForcedRotation",
            MintReason::RenewalDue => "Rotated",
            MintReason::Expired => "ReissuedAfterExpiry",
        }
    }

    /// The `reason` label of `toma_credentials_minted_total`.
    pub fn label(self) -> &'static str {
        match self {
            MintReason::NoSecret => "NoSecret",
            MintReason::Repair => "Repair",
            MintReason::SpecChanged => "SpecChanged",
            MintReason::KeyChanged => "KeyChanged",
            MintReason::Forced => "Forced",
            MintReason::RenewalDue => "RenewalDue",
            MintReason::Expired => "Expired",
        }
    }

    /// What the Event says happened.
    pub fn describe(self) -> &'static str {
        match self {
            MintReason::NoSecret => "credential issued",
            MintReason::Repair => "edited data replaced with a new credential",
            MintReason::SpecChanged => "credential reissued for the changed spec",
            MintReason::KeyChanged => "credential reissued for the changed key",
            MintReason::Forced => "credential rotated as toma.dev/rotate asked",
            MintReason::RenewalDue => "credential rotated",
            MintReason::Expired => "credential reissued after the previous one expired",
        }
    }
}

/// What to do about `tc`, whose Secret is `existing`, at `now`. A Secret that `tc` does not own
/// is never touched: that is a `SecretConflict`.
pub fn plan(tc: &TurnCredential, existing: Option<&Secret>, now: Timestamp) -> Result<Plan, Failure> {
    let Some(secret) = existing else {
        return Ok(Plan::Mint(MintReason::NoSecret));
    };
    if !secret::is_owned_by(secret, tc) {
        return Err(Failure::SecretConflict {
            secret: ObjectRef::from_obj(secret),
        });
    }
    let Some(credential) = secret::stored_credential(secret) else {
        return Ok(Plan::Mint(MintReason::Repair));
    };
    let minted_for = secret.annotations().get(FINGERPRINT_ANNOTATION);
    if minted_for != Some(&secret::fingerprint(tc)) {
        // Only the rotate request differs if the spec, with the request the Secret records,
        // gives the Secret's fingerprint. A removed request asks for nothing.
        let recorded = secret
            .annotations()
            .get(ROTATE_REQUEST_ANNOTATION)
            .map(String::as_str);
        let same_spec = minted_for == Some(&secret::fingerprint_with_rotate_request(tc, recorded));
        match (same_spec, tc.rotate_request()) {
            (false, _) => return Ok(Plan::Mint(MintReason::SpecChanged)),
            (true, Some(_)) => return Ok(Plan::Mint(MintReason::Forced)),
            (true, None) => {}
        }
    }
    if !credential.is_valid_at(now) {
        return Ok(Plan::Mint(MintReason::Expired));
    }
    if now >= schedule::renewal_of(tc, &credential) {
        return Ok(Plan::Mint(MintReason::RenewalDue));
    }
    Ok(Plan::Keep(credential))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ROTATE_ANNOTATION;
    use crate::fixtures::{credential_at, turn_credential};
    use crate::secret::{CREDENTIAL_KEY, desired_secret};
    use jiff::SignedDuration;
    use k8s_openapi::ByteString;

    const ISSUED: i64 = 1_700_000_000;
    const TTL: i64 = 86_400;

    fn at(offset: i64) -> Timestamp {
        Timestamp::from_second(ISSUED + offset).unwrap()
    }

    fn stored(tc: &TurnCredential) -> Secret {
        desired_secret(tc, &credential_at(ISSUED, TTL), 1)
    }

    fn with_rotate(tc: &TurnCredential, value: &str) -> TurnCredential {
        let mut tc = tc.clone();
        tc.annotations_mut()
            .insert(ROTATE_ANNOTATION.into(), value.into());
        tc
    }

    #[test]
    fn each_situation_gets_its_plan() {
        let tc = turn_credential("web");
        let renewal = schedule::renewal_of(&tc, &credential_at(ISSUED, TTL));
        let just_before_renewal = renewal - SignedDuration::from_secs(1);
        let mut edited = stored(&tc);
        edited
            .data
            .as_mut()
            .unwrap()
            .insert(CREDENTIAL_KEY.into(), ByteString(b"edited".to_vec()));
        let mut shorter = tc.clone();
        shorter.spec.ttl_seconds = 600;
        let forced = with_rotate(&tc, "1");
        let forced_again = with_rotate(&tc, "2");

        let cases: [(&str, &TurnCredential, Option<Secret>, Timestamp, Plan); 10] = [
            ("no Secret", &tc, None, at(60), Plan::Mint(MintReason::NoSecret)),
            (
                "edited data",
                &tc,
                Some(edited),
                at(60),
                Plan::Mint(MintReason::Repair),
            ),
            (
                "changed ttl",
                &shorter,
                Some(stored(&tc)),
                at(60),
                Plan::Mint(MintReason::SpecChanged),
            ),
            (
                "rotate annotation added",
                &forced,
                Some(stored(&tc)),
                at(60),
                Plan::Mint(MintReason::Forced),
            ),
            (
                "rotate annotation changed",
                &forced_again,
                Some(stored(&forced)),
                at(60),
                Plan::Mint(MintReason::Forced),
            ),
            (
                "renewal time reached",
                &tc,
                Some(stored(&tc)),
                renewal,
                Plan::Mint(MintReason::RenewalDue),
            ),
            (
                "expired",
                &tc,
                Some(stored(&tc)),
                at(TTL),
                Plan::Mint(MintReason::Expired),
            ),
            (
                "valid and not due",
                &tc,
                Some(stored(&tc)),
                just_before_renewal,
                Plan::Keep(credential_at(ISSUED, TTL)),
            ),
            (
                "forced and still fresh",
                &forced,
                Some(stored(&forced)),
                at(60),
                Plan::Keep(credential_at(ISSUED, TTL)),
            ),
            (
                "rotate annotation removed",
                &tc,
                Some(stored(&forced)),
                at(60),
                Plan::Keep(credential_at(ISSUED, TTL)),
            ),
        ];
        for (situation, tc, secret, now, expected) in cases {
            assert_eq!(plan(tc, secret.as_ref(), now).unwrap(), expected, "{situation}");
        }
    }

    #[test]
    fn a_spec_change_together_with_a_rotate_request_is_a_spec_change() {
        let tc = turn_credential("web");
        let mut both = with_rotate(&tc, "1");
        both.spec.ttl_seconds = 600;
        assert_eq!(
            plan(&both, Some(&stored(&tc)), at(60)).unwrap(),
            Plan::Mint(MintReason::SpecChanged)
        );
    }

    #[test]
    fn a_secret_of_someone_else_is_a_conflict() {
        let tc = turn_credential("web");
        let mut foreign = stored(&tc);
        foreign.metadata.owner_references = None;
        let failure = plan(&tc, Some(&foreign), at(60)).unwrap_err();
        assert_eq!(failure.reason(), "SecretConflict");
        assert!(
            failure.to_string().starts_with("Secret app/web exists"),
            "{failure}"
        );
    }
}
