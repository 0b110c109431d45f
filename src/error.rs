//! What can fail, one variant per failing step, each naming the object it concerns.
//!
//! - [`Error`]: a Kubernetes API call failed. Those of the reconcile's own bookkeeping (reading
//!   the Secret, writing status or finalizers) reach the controller's error policy, which retries
//!   soon; they are the only errors that can. Those of restarting a workload become a Warning
//!   Event and leave the reconcile a success.
//! - [`Failure`]: the credential could not be kept fresh (a missing key, a refused token, a
//!   foreign Secret, an outage, or an API call made on the way). Reported in status, an Event
//!   and a metric; its `reason()` is the condition reason.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::ObjectRef;

use crate::api::{KeyName, TurnCredential};
use crate::provider::ProviderError;
use crate::rollout::Workload;

#[derive(thiserror::Error, Debug)]
pub enum Error {
    #[error("failed to get Secret {}: {}", named(.secret), api_message(.source))]
    GetSecret {
        secret: ObjectRef<Secret>,
        #[source]
        source: kube::Error,
    },

    #[error("failed to apply Secret {}: {}", named(.secret), api_message(.source))]
    ApplySecret {
        secret: ObjectRef<Secret>,
        #[source]
        source: kube::Error,
    },

    #[error("failed to patch status of TurnCredential {}: {}", named(.turn_credential), api_message(.source))]
    PatchStatus {
        turn_credential: ObjectRef<TurnCredential>,
        #[source]
        source: kube::Error,
    },

    #[error("failed to update finalizers of TurnCredential {}: {}", named(.turn_credential), api_message(.source))]
    SetFinalizers {
        turn_credential: ObjectRef<TurnCredential>,
        #[source]
        source: kube::Error,
    },

    #[error("failed to get {key}: {}", api_message(.source))]
    GetKey {
        key: KeyName,
        #[source]
        source: kube::Error,
    },

    #[error("failed to get Secret {}: {}", named(.secret), api_message(.source))]
    GetKeySecret {
        secret: ObjectRef<Secret>,
        #[source]
        source: kube::Error,
    },

    #[error("failed to get Namespace {namespace}: {}", api_message(.source))]
    GetNamespace {
        namespace: String,
        #[source]
        source: kube::Error,
    },

    #[error("failed to get {workload}: {}", api_message(.source))]
    GetWorkload {
        workload: Workload,
        #[source]
        source: kube::Error,
    },

    /// Shared: one patch restarts a workload for every TurnCredential that asked within the window.
    #[error("failed to restart {workload}: {}", api_message(.source))]
    RestartWorkload {
        workload: Workload,
        #[source]
        source: Arc<kube::Error>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn reason(&self) -> &'static str {
        "KubernetesError"
    }
}

#[derive(thiserror::Error, Debug)]
pub enum Failure {
    #[error("{key} not found")]
    KeyNotFound { key: KeyName },

    #[error("{key} does not allow namespace {namespace}: its labels do not match spec.namespaceSelector")]
    KeyNotAllowed { key: KeyName, namespace: String },

    #[error("Secret {} holding the {key_kind}'s token was not found", named(.secret))]
    TokenSecretNotFound {
        secret: ObjectRef<Secret>,
        /// TurnKey or ClusterTurnKey.
        key_kind: &'static str,
    },

    #[error("Secret {} has no non-empty key {entry}", named(.secret))]
    TokenKeyMissing {
        secret: ObjectRef<Secret>,
        entry: String,
    },

    /// Only a key written past the schema's validation can have none or both.
    #[error("invalid spec: {key} must have exactly one of cloudflare or sharedSecret")]
    NoProviderBlock { key: KeyName },

    /// Only a ClusterTurnKey written past the schema's validation can lack it.
    #[error("invalid spec: {key} must name the namespace of its Secret")]
    NoSecretNamespace { key: KeyName },

    #[error(
        "invalid spec: no TURN URL is left after spec.urlFilter; the provider offered none that the filter allows ({key})"
    )]
    NoTurnUrlLeft { key: KeyName },

    #[error("Secret {} exists and is not owned by this TurnCredential; toma will not overwrite it", named(.secret))]
    SecretConflict { secret: ObjectRef<Secret> },

    #[error("{key}: {source}")]
    Provider {
        key: KeyName,
        #[source]
        source: ProviderError,
    },

    /// Boxed: a Kubernetes error is large and rare.
    #[error(transparent)]
    Api(Box<Error>),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure::Api(Box::new(error))
    }
}

impl Failure {
    pub const SECRET_CONFLICT: &str = "SecretConflict";

    /// The condition reason, the Event reason and the metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::KeyNotFound { .. } => "KeyNotFound",
            Failure::KeyNotAllowed { .. } => "KeyNotAllowed",
            Failure::TokenSecretNotFound { .. } | Failure::TokenKeyMissing { .. } => "TokenNotFound",
            Failure::NoProviderBlock { .. }
            | Failure::NoSecretNamespace { .. }
            | Failure::NoTurnUrlLeft { .. } => "InvalidSpec",
            Failure::SecretConflict { .. } => Failure::SECRET_CONFLICT,
            Failure::Provider { source, .. } => source.reason(),
            Failure::Api(error) => error.reason(),
        }
    }

    /// Whether trying again later may succeed with nothing changed: an outage, a rate limit or
    /// a Kubernetes API error, as opposed to a wrong key, token or spec.
    pub fn is_transient(&self) -> bool {
        match self {
            Failure::Api(_) => true,
            Failure::Provider { source, .. } => source.is_transient(),
            _ => false,
        }
    }

    /// The provider's Retry-After, when it gave one.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Failure::Provider { source, .. } => source.retry_after(),
            _ => None,
        }
    }
}

/// `namespace/name`, or `name` for a cluster-scoped object.
fn named<K: kube::Resource>(object: &ObjectRef<K>) -> String {
    match &object.namespace {
        Some(namespace) => format!("{namespace}/{}", object.name),
        None => object.name.clone(),
    }
}

/// The API server's own words for a refused call (kube's text for it embeds a Debug dump).
fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} (HTTP {} {})", status.message, status.code, status.reason),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::KeyKind;

    fn cluster_key(name: &str) -> KeyName {
        KeyName {
            kind: KeyKind::ClusterTurnKey,
            namespace: None,
            name: name.into(),
        }
    }

    #[test]
    fn a_refused_api_call_reads_as_the_api_servers_message() {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": 403, "reason": "Forbidden",
            "message": "clusterturnkeys.toma.dev \"cf\" is forbidden: User \"x\" cannot get resource"
        }))
        .unwrap();
        let error = Error::GetKey {
            key: cluster_key("cf"),
            source: kube::Error::Api(Box::new(status)),
        };
        assert_eq!(
            error.to_string(),
            "failed to get ClusterTurnKey cf: clusterturnkeys.toma.dev \"cf\" is forbidden: User \"x\" cannot get resource (HTTP 403 Forbidden)"
        );
    }

    #[test]
    fn the_objects_are_named_with_their_namespace() {
        let failure = Failure::TokenSecretNotFound {
            secret: ObjectRef::new("cf-token").within("toma-system"),
            key_kind: cluster_key("cf").kind_name(),
        };
        assert_eq!(
            failure.to_string(),
            "Secret toma-system/cf-token holding the ClusterTurnKey's token was not found"
        );
        assert_eq!(failure.reason(), "TokenNotFound");
    }

    #[test]
    fn wrong_keys_and_specs_are_not_worth_retrying_unchanged_but_outages_are() {
        let provider = |source| Failure::Provider {
            key: cluster_key("k"),
            source,
        };
        assert!(provider(ProviderError::ServerError { status: 503 }).is_transient());
        assert!(!provider(ProviderError::Unauthorized { status: 401 }).is_transient());
        assert!(
            !Failure::NoTurnUrlLeft {
                key: cluster_key("k")
            }
            .is_transient()
        );
        assert!(
            !Failure::KeyNotFound {
                key: cluster_key("k")
            }
            .is_transient()
        );
    }

    #[test]
    fn every_invalid_spec_case_keeps_the_invalid_spec_reason() {
        for failure in [
            Failure::NoProviderBlock {
                key: cluster_key("k"),
            },
            Failure::NoSecretNamespace {
                key: cluster_key("k"),
            },
            Failure::NoTurnUrlLeft {
                key: cluster_key("k"),
            },
        ] {
            assert_eq!(failure.reason(), "InvalidSpec");
            assert!(failure.to_string().starts_with("invalid spec: "), "{failure}");
        }
    }
}
