//! The Secret toma writes: what it holds, whether it is ours, and whether it is still intact.
//! All pure functions; the reconcile does the I/O.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::api::TurnCredential;
use crate::credential::{Credential, IceConfig};

pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "toma";
pub const ISSUED_AT_ANNOTATION: &str = "toma.dev/issued-at";
pub const EXPIRES_AT_ANNOTATION: &str = "toma.dev/expires-at";
/// Hash of the spec fields a credential was minted for; a change means a new credential.
pub const FINGERPRINT_ANNOTATION: &str = "toma.dev/fingerprint";
/// Hash of what the key minted the credential with (see `key_resolver::fingerprint`).
pub const KEY_FINGERPRINT_ANNOTATION: &str = "toma.dev/key-fingerprint";
/// Hash of the data toma wrote; a mismatch means somebody edited the data.
pub const CHECKSUM_ANNOTATION: &str = "toma.dev/checksum";
/// How many credentials were minted for the TurnCredential, this one included. Kept on the
/// Secret, so the count survives a stale read of the TurnCredential's status.
pub const ROTATIONS_ANNOTATION: &str = "toma.dev/rotations";
/// The value of the TurnCredential's `toma.dev/rotate` annotation the credential was minted
/// for, so that a forced rotation can be told from a changed spec.
pub const ROTATE_REQUEST_ANNOTATION: &str = "toma.dev/rotate-request";

/// The TURN username and expiry of the credential that the current one replaced, while that one
/// is still valid, so that revoking on delete can revoke it too.
pub const PREVIOUS_USERNAME_ANNOTATION: &str = "toma.dev/previous-username";
pub const PREVIOUS_EXPIRES_AT_ANNOTATION: &str = "toma.dev/previous-expires-at";

pub const ICE_SERVERS_KEY: &str = "iceServers.json";
pub const USERNAME_KEY: &str = "username";
pub const CREDENTIAL_KEY: &str = "credential";
pub const URLS_KEY: &str = "urls";
pub const EXPIRES_AT_KEY: &str = "expiresAt";

/// The Secret for `credential`, the `rotations`th minted for `tc`, owned by `tc` so it is garbage
/// collected with it.
pub fn desired_secret(tc: &TurnCredential, credential: &Credential, rotations: i64) -> Secret {
    let data = secret_data(credential);
    let template = tc.spec.secret_template.clone().unwrap_or_default();

    let mut labels = template.labels;
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    let mut annotations = template.annotations;
    annotations.insert(ISSUED_AT_ANNOTATION.into(), credential.issued_at.to_string());
    annotations.insert(EXPIRES_AT_ANNOTATION.into(), credential.expires_at.to_string());
    annotations.insert(FINGERPRINT_ANNOTATION.into(), fingerprint(tc));
    annotations.insert(CHECKSUM_ANNOTATION.into(), checksum(&data));
    annotations.insert(ROTATIONS_ANNOTATION.into(), rotations.to_string());
    if let Some(request) = tc.rotate_request() {
        annotations.insert(ROTATE_REQUEST_ANNOTATION.into(), request.into());
    }

    Secret {
        metadata: ObjectMeta {
            name: Some(tc.secret_name()),
            namespace: tc.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: tc.controller_owner_ref(&()).map(|owner| vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
}

fn secret_data(credential: &Credential) -> BTreeMap<String, ByteString> {
    let ice_json = serde_json::to_vec(&credential.ice_config()).expect("ICE servers serialize to JSON");
    let urls: Vec<&str> = credential.urls().collect();
    let (username, password) = credential.turn_pair().unwrap_or_default();
    let text = |s: &str| ByteString(s.as_bytes().to_vec());
    BTreeMap::from([
        (ICE_SERVERS_KEY.into(), ByteString(ice_json)),
        (USERNAME_KEY.into(), text(username)),
        (CREDENTIAL_KEY.into(), text(password)),
        (URLS_KEY.into(), text(&(urls.join("\n") + "\n"))),
        (EXPIRES_AT_KEY.into(), text(&credential.expires_at.to_string())),
    ])
}

/// The credential a newer one replaced: enough to revoke it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Previous {
    pub username: String,
    pub expires_at: Timestamp,
}

impl Previous {
    pub fn of(credential: &Credential) -> Option<Previous> {
        let (username, _) = credential.turn_pair()?;
        Some(Previous {
            username: username.into(),
            expires_at: credential.expires_at,
        })
    }
}

/// The replaced credential a Secret records, if any.
pub fn previous(secret: &Secret) -> Option<Previous> {
    let annotations = secret.metadata.annotations.as_ref()?;
    Some(Previous {
        username: annotations.get(PREVIOUS_USERNAME_ANNOTATION)?.clone(),
        expires_at: annotations.get(PREVIOUS_EXPIRES_AT_ANNOTATION)?.parse().ok()?,
    })
}

/// Records on `secret` the fingerprint of the key its credential was minted with.
pub fn record_key_fingerprint(secret: &mut Secret, fingerprint: &str) {
    secret
        .annotations_mut()
        .insert(KEY_FINGERPRINT_ANNOTATION.into(), fingerprint.into());
}

/// The fingerprint of the key the stored credential was minted with, if the Secret records one.
pub fn key_fingerprint(secret: &Secret) -> Option<&str> {
    secret
        .annotations()
        .get(KEY_FINGERPRINT_ANNOTATION)
        .map(String::as_str)
}

/// Records on `secret` the credential that its credential replaced.
pub fn record_previous(secret: &mut Secret, previous: &Previous) {
    let annotations = secret.annotations_mut();
    annotations.insert(PREVIOUS_USERNAME_ANNOTATION.into(), previous.username.clone());
    annotations.insert(
        PREVIOUS_EXPIRES_AT_ANNOTATION.into(),
        previous.expires_at.to_string(),
    );
}

/// True when `secret` is controlled by `tc` (same UID). Anything else is not toma's to touch.
pub fn is_owned_by(secret: &Secret, tc: &TurnCredential) -> bool {
    let Some(uid) = tc.uid() else { return false };
    secret
        .owner_references()
        .iter()
        .any(|owner| owner.controller == Some(true) && owner.uid == uid)
}

/// The credential a Secret holds, if toma wrote it and nobody changed its data since.
pub fn stored_credential(secret: &Secret) -> Option<Credential> {
    let data = secret.data.as_ref()?;
    let annotations = secret.metadata.annotations.as_ref()?;
    if annotations.get(CHECKSUM_ANNOTATION)? != &checksum(data) {
        return None;
    }
    let config: IceConfig = serde_json::from_slice(&data.get(ICE_SERVERS_KEY)?.0).ok()?;
    Some(Credential {
        ice_servers: config.ice_servers,
        issued_at: annotations.get(ISSUED_AT_ANNOTATION)?.parse().ok()?,
        expires_at: annotations.get(EXPIRES_AT_ANNOTATION)?.parse().ok()?,
    })
}

/// The rotation count recorded on a Secret; 0 when there is none.
pub fn rotations(secret: &Secret) -> i64 {
    secret
        .annotations()
        .get(ROTATIONS_ANNOTATION)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The spec fields a stored credential was minted for. Changing any of them (the key, the ttl,
/// the URL filter, the custom identifier, or the rotate annotation) calls for a new credential;
/// the renewal margin and the Secret's labels do not.
pub fn fingerprint(tc: &TurnCredential) -> String {
    fingerprint_with_rotate_request(tc, tc.rotate_request())
}

/// The fingerprint `tc`'s spec would have with another rotate request.
pub fn fingerprint_with_rotate_request(tc: &TurnCredential, rotate_request: Option<&str>) -> String {
    let minting_inputs = serde_json::json!({
        "keyRef": tc.spec.key_ref,
        "ttlSeconds": tc.spec.ttl_seconds,
        "urlFilter": tc.url_filter(),
        "customIdentifier": tc.spec.custom_identifier,
        "rotate": rotate_request,
    });
    short_hash(minting_inputs.to_string().as_bytes())
}

/// The checksum of the data that `credential` is written as: the value of the Secret's
/// `toma.dev/checksum`, and what workloads restarted for it record (see `rollout`). A SHA-256 over
/// all of the data, the TURN password included, cut to 128 bits: it tells contents apart and
/// gives nothing away about them.
pub fn content_checksum(credential: &Credential) -> String {
    checksum(&secret_data(credential))
}

fn checksum(data: &BTreeMap<String, ByteString>) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in data {
        hasher.update((key.len() as u64).to_be_bytes());
        hasher.update(key.as_bytes());
        hasher.update((value.0.len() as u64).to_be_bytes());
        hasher.update(&value.0);
    }
    hex(&hasher.finalize()[..16])
}

/// 32 hex digits of the SHA-256 of `bytes`.
pub(crate) fn short_hash(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes)[..16])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The part of a Secret that toma owns, as it stands, for comparison with `desired_secret`.
pub fn owned_fields_match(existing: &Secret, desired: &Secret) -> bool {
    let contains_all = |have: &Option<BTreeMap<String, String>>, want: &Option<BTreeMap<String, String>>| {
        let empty = BTreeMap::new();
        let have = have.as_ref().unwrap_or(&empty);
        want.iter().flatten().all(|(k, v)| have.get(k) == Some(v))
    };
    existing.data == desired.data
        && existing.type_ == desired.type_
        && contains_all(&existing.metadata.labels, &desired.metadata.labels)
        && contains_all(&existing.metadata.annotations, &desired.metadata.annotations)
        && desired
            .metadata
            .owner_references
            .iter()
            .flatten()
            .all(|o| existing.owner_references().contains(o))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{credential_at, turn_credential};

    #[test]
    fn desired_secret_holds_the_documented_keys_and_metadata() {
        let tc = turn_credential("web");
        let cred = credential_at(1_700_000_000, 86_400);
        let secret = desired_secret(&tc, &cred, 1);
        let data = secret.data.as_ref().unwrap();
        let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();

        let ice: serde_json::Value = serde_json::from_str(&text(ICE_SERVERS_KEY)).unwrap();
        assert_eq!(ice["iceServers"][1]["username"], "user-1");
        assert_eq!(ice["iceServers"][1]["credential"], "cred-1");
        assert_eq!(text(USERNAME_KEY), "user-1");
        assert_eq!(text(CREDENTIAL_KEY), "cred-1");
        assert_eq!(
            text(URLS_KEY),
            "stun:stun.example.com:3478\nturn:turn.example.com:3478?transport=udp\n"
        );
        assert_eq!(text(EXPIRES_AT_KEY), "2023-11-15T22:13:20Z");
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
        assert_eq!(secret.labels()[MANAGED_BY_LABEL], "toma");
        assert_eq!(secret.annotations()[ISSUED_AT_ANNOTATION], "2023-11-14T22:13:20Z");
        assert_eq!(
            secret.annotations()[EXPIRES_AT_ANNOTATION],
            "2023-11-15T22:13:20Z"
        );
        let owner = &secret.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("TurnCredential", Some(true))
        );
    }

    #[test]
    fn secret_template_labels_and_annotations_are_added() {
        let mut tc = turn_credential("web");
        tc.spec.secret_template = Some(crate::api::SecretTemplate {
            labels: BTreeMap::from([("team".into(), "rtc".into())]),
            annotations: BTreeMap::from([("note".into(), "x".into())]),
        });
        let secret = desired_secret(&tc, &credential_at(0, 60), 1);
        assert_eq!(secret.labels()["team"], "rtc");
        assert_eq!(secret.labels()[MANAGED_BY_LABEL], "toma");
        assert_eq!(secret.annotations()["note"], "x");
    }

    #[test]
    fn secret_name_defaults_to_the_turn_credential_name() {
        let mut tc = turn_credential("web");
        assert_eq!(desired_secret(&tc, &credential_at(0, 60), 1).name_any(), "web");
        tc.spec.secret_name = Some("web-ice".into());
        assert_eq!(
            desired_secret(&tc, &credential_at(0, 60), 1).name_any(),
            "web-ice"
        );
    }

    #[test]
    fn stored_credential_round_trips() {
        let tc = turn_credential("web");
        let cred = credential_at(1_700_000_000, 600);
        assert_eq!(stored_credential(&desired_secret(&tc, &cred, 1)), Some(cred));
    }

    #[test]
    fn the_content_checksum_is_the_secrets_checksum_and_changes_with_the_credential() {
        let tc = turn_credential("web");
        let cred = credential_at(1_700_000_000, 600);
        let secret = desired_secret(&tc, &cred, 1);
        assert_eq!(secret.annotations()[CHECKSUM_ANNOTATION], content_checksum(&cred));
        assert_ne!(
            content_checksum(&cred),
            content_checksum(&credential_at(1_700_000_060, 600))
        );
    }

    #[test]
    fn tampered_data_is_not_trusted() {
        let tc = turn_credential("web");
        let mut secret = desired_secret(&tc, &credential_at(1_700_000_000, 600), 1);
        secret
            .data
            .as_mut()
            .unwrap()
            .insert(CREDENTIAL_KEY.into(), ByteString(b"edited".to_vec()));
        assert_eq!(stored_credential(&secret), None);
    }

    #[test]
    fn foreign_secret_is_not_owned() {
        let tc = turn_credential("web");
        let mut secret = desired_secret(&tc, &credential_at(0, 60), 1);
        assert!(is_owned_by(&secret, &tc));
        secret.metadata.owner_references = None;
        assert!(!is_owned_by(&secret, &tc));
    }

    #[test]
    fn secret_of_an_earlier_turn_credential_with_the_same_name_is_not_owned() {
        let tc = turn_credential("web");
        let secret = desired_secret(&tc, &credential_at(0, 60), 1);
        let mut recreated = turn_credential("web");
        recreated.metadata.uid = Some("another-uid".into());
        assert!(!is_owned_by(&secret, &recreated));
    }

    #[test]
    fn fingerprint_changes_with_minting_fields_only() {
        let tc = turn_credential("web");
        let base = fingerprint(&tc);

        let mut ttl = tc.clone();
        ttl.spec.ttl_seconds = 600;
        assert_ne!(fingerprint(&ttl), base);

        let mut rotate = tc.clone();
        rotate
            .annotations_mut()
            .insert(crate::api::ROTATE_ANNOTATION.into(), "1".into());
        assert_ne!(fingerprint(&rotate), base);

        let mut renew = tc.clone();
        renew.spec.renew_before_seconds = Some(100);
        assert_eq!(fingerprint(&renew), base);
    }

    #[test]
    fn owned_fields_match_ignores_fields_others_added() {
        let tc = turn_credential("web");
        let desired = desired_secret(&tc, &credential_at(0, 60), 1);
        let mut existing = desired.clone();
        existing
            .labels_mut()
            .insert("added-by-someone".into(), "x".into());
        assert!(owned_fields_match(&existing, &desired));
        existing.labels_mut().remove(MANAGED_BY_LABEL);
        assert!(!owned_fields_match(&existing, &desired));
    }
}
