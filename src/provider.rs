//! Minting a credential with a resolved key, whichever provider it names.

use std::time::Instant;

use jiff::{SignedDuration, Timestamp};

use crate::api::{Provider, TurnCredential};
use crate::cloudflare::{CloudflareClient, DEFAULT_BASE_URL, ProviderError};
use crate::credential::{Credential, filter_urls};
use crate::error::{Error, Result};
use crate::keys::ResolvedKey;
use crate::metrics::{Metrics, ProviderKindLabels, ProviderLabels};

pub async fn mint(
    tc: &TurnCredential,
    key: &ResolvedKey,
    cloudflare: &CloudflareClient,
    metrics: &Metrics,
    now: Timestamp,
) -> Result<Credential> {
    let ttl = tc.spec.ttl_seconds;
    // The window starts when the request is sent, so toma's expiry is never later than the provider's.
    let expires_at = now + SignedDuration::from_secs(ttl);
    let (label, ice_servers) = match &key.provider {
        Provider::Cloudflare(cf) => {
            let base_url = cf.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL);
            let started = Instant::now();
            let answer = cloudflare
                .generate_ice_servers(
                    base_url,
                    &cf.key_id,
                    &key.secret,
                    ttl,
                    tc.spec.custom_identifier.as_deref(),
                )
                .await;
            let kind = ProviderKindLabels {
                provider: "cloudflare".into(),
            };
            metrics
                .provider_duration
                .get_or_create(&kind)
                .observe(started.elapsed().as_secs_f64());
            let code = match &answer {
                Ok(generated) => generated.status.to_string(),
                Err(error) => status_label(error),
            };
            metrics
                .provider_requests
                .get_or_create(&ProviderLabels {
                    provider: kind.provider,
                    code,
                })
                .inc();
            let generated = answer.map_err(|source| Error::Provider {
                key: key.display.clone(),
                source,
            })?;
            ("cloudflare", generated.ice_servers)
        }
        Provider::SharedSecret(ss) => (
            "shared-secret",
            crate::shared_secret::ice_servers(ss, &key.secret, expires_at),
        ),
    };
    let ice_servers = filter_urls(ice_servers, &tc.url_filter());
    let credential = Credential {
        ice_servers,
        issued_at: now,
        expires_at,
    };
    if credential.turn_pair().is_none() {
        return Err(Error::InvalidSpec(format!(
            "no TURN URL is left after spec.urlFilter; the provider offered none that the filter allows ({})",
            key.display
        )));
    }
    metrics
        .mints
        .get_or_create(&ProviderKindLabels {
            provider: label.into(),
        })
        .inc();
    Ok(credential)
}

fn status_label(error: &ProviderError) -> String {
    match error {
        ProviderError::Unauthorized { status } => status.to_string(),
        ProviderError::BotBlocked => "403".into(),
        ProviderError::UnknownKey { .. } => "404".into(),
        ProviderError::RateLimited { .. } => "429".into(),
        ProviderError::Rejected { status, .. } | ProviderError::ServerError { status } => status.to_string(),
        ProviderError::Timeout => "timeout".into(),
        ProviderError::Unreachable(_) => "unreachable".into(),
        // A malformed answer came with a success status.
        ProviderError::MalformedAnswer(_) => "malformed".into(),
        // The token could not be put in a header, so nothing was sent.
        ProviderError::MalformedToken => "not-sent".into(),
    }
}
