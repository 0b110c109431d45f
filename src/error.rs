//! One error variant per failing step, each saying what was being done and to which object.
//! `reason()` is the condition reason, the Event reason and the metric label.

use crate::cloudflare::ProviderError;

#[derive(thiserror::Error, Debug)]
pub enum Error {
    #[error("{kind} {name} not found")]
    KeyNotFound { kind: &'static str, name: String },

    #[error("Secret {namespace}/{name} holding the {kind}'s token was not found")]
    TokenSecretNotFound {
        kind: &'static str,
        namespace: String,
        name: String,
    },

    #[error("Secret {namespace}/{name} has no non-empty key {key}")]
    TokenKeyMissing {
        namespace: String,
        name: String,
        key: String,
    },

    #[error("invalid spec: {0}")]
    InvalidSpec(String),

    #[error(
        "Secret {namespace}/{name} exists and is not owned by this TurnCredential; toma will not overwrite it"
    )]
    SecretConflict { namespace: String, name: String },

    #[error("{key}: {source}")]
    Provider {
        key: String,
        #[source]
        source: ProviderError,
    },

    #[error("failed to {action}: {}", describe_kube_error(.source))]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The API server's own words for a refused call (kube's text for it embeds a Debug dump).
fn describe_kube_error(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} (HTTP {} {})", status.message, status.code, status.reason),
        other => other.to_string(),
    }
}

impl Error {
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Error::KeyNotFound { .. } => "KeyNotFound",
            Error::TokenSecretNotFound { .. } | Error::TokenKeyMissing { .. } => "TokenNotFound",
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::SecretConflict { .. } => "SecretConflict",
            Error::Provider { source, .. } => match source {
                ProviderError::Unauthorized { .. }
                | ProviderError::BotBlocked
                | ProviderError::MalformedToken => "Unauthorized",
                ProviderError::UnknownKey { .. } => "KeyNotFound",
                ProviderError::RateLimited { .. } => "RateLimited",
                ProviderError::MalformedAnswer(_) => "InvalidResponse",
                ProviderError::Rejected { .. }
                | ProviderError::ServerError { .. }
                | ProviderError::Timeout
                | ProviderError::Unreachable(_) => "ProviderError",
            },
            Error::Kube { .. } => "KubernetesError",
        }
    }

    /// Whether trying again later may succeed with nothing changed: an outage, a rate limit or
    /// a Kubernetes API error, as opposed to a wrong key, token or spec.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Kube { .. } => true,
            Error::Provider { source, .. } => matches!(
                source,
                ProviderError::RateLimited { .. }
                    | ProviderError::ServerError { .. }
                    | ProviderError::Timeout
                    | ProviderError::Unreachable(_)
                    | ProviderError::Rejected { .. }
            ),
            _ => false,
        }
    }

    /// The provider's Retry-After, when it gave one.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Error::Provider { source, .. } => source.retry_after(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_api_call_reads_as_the_api_servers_message() {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": 403, "reason": "Forbidden",
            "message": "clusterturnkeys.toma.dev \"cf\" is forbidden: User \"x\" cannot get resource"
        }))
        .unwrap();
        let error = Error::Kube {
            action: "get ClusterTurnKey cf".into(),
            source: kube::Error::Api(Box::new(status)),
        };
        assert_eq!(
            error.to_string(),
            "failed to get ClusterTurnKey cf: clusterturnkeys.toma.dev \"cf\" is forbidden: User \"x\" cannot get resource (HTTP 403 Forbidden)"
        );
    }

    #[test]
    fn only_outages_and_rate_limits_are_worth_retrying_unchanged() {
        let provider = |source| Error::Provider {
            key: "k".into(),
            source,
        };
        assert!(provider(ProviderError::ServerError { status: 503 }).is_transient());
        assert!(provider(ProviderError::RateLimited { retry_after: None }).is_transient());
        assert!(!provider(ProviderError::Unauthorized { status: 401 }).is_transient());
        assert!(!provider(ProviderError::UnknownKey { key_id: "k".into() }).is_transient());
        assert!(!Error::InvalidSpec("x".into()).is_transient());
    }
}
