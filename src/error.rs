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

    #[error("failed to {action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

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
                ProviderError::Unauthorized { .. } | ProviderError::BotBlocked => "Unauthorized",
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

    /// The provider's Retry-After, when it gave one.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Error::Provider { source, .. } => source.retry_after(),
            _ => None,
        }
    }
}
