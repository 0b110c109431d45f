//! What can go wrong at a provider, classified so that a wrong token reads differently from an
//! outage. No variant ever carries the token, a credential, or more than a short cut of a body.

use std::time::Duration;

#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ProviderError {
    #[error("the provider refused the API token (HTTP {status}); check the token in the key's Secret")]
    Unauthorized { status: u16 },
    #[error(
        "the API token holds characters an HTTP header cannot carry; check the token in the key's Secret"
    )]
    MalformedToken,
    #[error("the provider blocked the request as a bot (HTTP 403, error code 1010)")]
    BotBlocked,
    #[error("the provider does not know TURN key ID {key_id} (HTTP 404); check spec.cloudflare.keyId")]
    UnknownKey { key_id: String },
    #[error("the provider is rate limiting requests (HTTP 429){}", retry_after_note(.retry_after))]
    RateLimited { retry_after: Option<Duration> },
    #[error("the provider rejected the request (HTTP {status}): {detail}")]
    Rejected { status: u16, detail: String },
    #[error("the provider failed (HTTP {status})")]
    ServerError { status: u16 },
    #[error("the provider did not answer in time")]
    Timeout,
    #[error("could not reach the provider: {0}")]
    Unreachable(String),
    #[error("the provider's answer is malformed: {0}")]
    MalformedAnswer(String),
}

fn retry_after_note(retry_after: &Option<Duration>) -> String {
    retry_after
        .map(|d| format!("; retry after {} s", d.as_secs()))
        .unwrap_or_default()
}

impl ProviderError {
    /// The condition reason users see for it.
    pub fn reason(&self) -> &'static str {
        match self {
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
        }
    }

    /// Whether asking again later may succeed with nothing changed: an outage or a rate limit,
    /// as opposed to a wrong key or token.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ProviderError::RateLimited { .. }
                | ProviderError::ServerError { .. }
                | ProviderError::Timeout
                | ProviderError::Unreachable(_)
                | ProviderError::Rejected { .. }
        )
    }

    /// The delay the provider asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// The `code` label of `toma_provider_requests_total`: the HTTP status, or what happened
    /// instead of one.
    pub fn code(&self) -> String {
        match self {
            ProviderError::Unauthorized { status }
            | ProviderError::Rejected { status, .. }
            | ProviderError::ServerError { status } => status.to_string(),
            ProviderError::BotBlocked => "403".into(),
            ProviderError::UnknownKey { .. } => "404".into(),
            ProviderError::RateLimited { .. } => "429".into(),
            ProviderError::Timeout => "timeout".into(),
            ProviderError::Unreachable(_) => "unreachable".into(),
            // A malformed answer came with a success status.
            ProviderError::MalformedAnswer(_) => "malformed".into(),
            // The token could not be put in a header, so nothing was sent.
            ProviderError::MalformedToken => "not-sent".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_outages_and_rate_limits_are_worth_retrying_unchanged() {
        assert!(ProviderError::ServerError { status: 503 }.is_transient());
        assert!(ProviderError::RateLimited { retry_after: None }.is_transient());
        assert!(!ProviderError::Unauthorized { status: 401 }.is_transient());
        assert!(!ProviderError::UnknownKey { key_id: "k".into() }.is_transient());
    }

    #[test]
    fn each_failure_has_the_reason_and_code_users_see() {
        let cases = [
            (ProviderError::BotBlocked, "Unauthorized", "403"),
            (ProviderError::MalformedToken, "Unauthorized", "not-sent"),
            (
                ProviderError::UnknownKey { key_id: "k".into() },
                "KeyNotFound",
                "404",
            ),
            (
                ProviderError::RateLimited { retry_after: None },
                "RateLimited",
                "429",
            ),
            (
                ProviderError::MalformedAnswer("x".into()),
                "InvalidResponse",
                "malformed",
            ),
            (ProviderError::Timeout, "ProviderError", "timeout"),
            (ProviderError::ServerError { status: 502 }, "ProviderError", "502"),
        ];
        for (error, reason, code) in cases {
            assert_eq!((error.reason(), error.code().as_str()), (reason, code), "{error}");
        }
    }
}
