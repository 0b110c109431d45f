//! The providers that mint TURN credentials: Cloudflare's TURN service, called over HTTPS, and
//! the TURN REST shared-secret scheme of self-hosted servers, computed locally. The rest of toma
//! sees only [`Key`], [`Providers::mint`], [`Providers::revoke`] and [`ProviderError`].

pub mod cloudflare;
mod error;
pub mod rate_limit;
pub mod shared_secret;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;

pub use self::error::ProviderError;
use crate::api::{CloudflareProvider, KeyName, SecretKeyRef, SharedSecretProvider};
use crate::credential::IceServer;
use crate::metrics::{Metrics, ProviderKindLabels, ProviderLabels};
use crate::secret_value::SecretValue;
use cloudflare::CloudflareClient;
use rate_limit::{Rate, RateLimit};

/// The provider block of a TurnKey or ClusterTurnKey, whichever kind it came from.
#[derive(Clone, Debug, PartialEq)]
pub enum Provider {
    Cloudflare(CloudflareProvider),
    SharedSecret(SharedSecretProvider),
}

impl Provider {
    /// The one provider block; None when the schema was bypassed and both or neither are set.
    pub fn from_blocks(
        cloudflare: Option<&CloudflareProvider>,
        shared_secret: Option<&SharedSecretProvider>,
    ) -> Option<Provider> {
        match (cloudflare, shared_secret) {
            (Some(cf), None) => Some(Provider::Cloudflare(cf.clone())),
            (None, Some(ss)) => Some(Provider::SharedSecret(ss.clone())),
            _ => None,
        }
    }

    /// The Secret key that holds the API token or the shared secret.
    pub fn secret_ref(&self) -> &SecretKeyRef {
        match self {
            Provider::Cloudflare(cf) => &cf.api_token_secret_ref,
            Provider::SharedSecret(ss) => &ss.secret_ref,
        }
    }

    /// The `provider` label of the metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Provider::Cloudflare(_) => "cloudflare",
            Provider::SharedSecret(_) => "shared-secret",
        }
    }
}

/// A key ready to mint with: its provider block and the secret its Secret holds.
#[derive(Debug)]
pub struct Key {
    pub name: KeyName,
    pub provider: Provider,
    pub secret: SecretValue,
}

/// What a mint asks for.
pub struct Request<'a> {
    pub ttl_seconds: i64,
    /// When the credential expires: toma's own reckoning, as Cloudflare's answer carries none.
    pub expires_at: Timestamp,
    pub custom_identifier: Option<&'a str>,
}

/// What came of a revoke.
#[derive(Debug, PartialEq, Eq)]
pub enum Revoked {
    Revoked,
    /// Shared-secret credentials are computed, not issued: there is nothing to revoke.
    NotRevocable,
}

/// The provider clients, recording every request in the metrics. Requests to Cloudflare keep to
/// a rate per key; shared-secret credentials are computed locally and are not limited.
pub struct Providers {
    cloudflare: CloudflareClient,
    rate_limit: RateLimit,
    metrics: Arc<Metrics>,
}

impl Providers {
    /// `rate`: each key's limit on requests to Cloudflare; None for none.
    pub fn new(request_timeout: Duration, rate: Option<Rate>, metrics: Arc<Metrics>) -> Providers {
        Providers {
            cloudflare: CloudflareClient::new(request_timeout),
            rate_limit: RateLimit::new(rate),
            metrics,
        }
    }

    async fn wait_turn(&self, key: &Key) {
        if !self.rate_limit.wait_turn(&key.name).await.is_zero() {
            self.metrics
                .provider_rate_limited
                .get_or_create(&ProviderKindLabels {
                    provider: key.provider.label().into(),
                })
                .inc();
        }
    }

    /// The ICE servers of a new credential, as the provider gave them (unfiltered).
    pub async fn mint(&self, key: &Key, request: &Request<'_>) -> Result<Vec<IceServer>, ProviderError> {
        match &key.provider {
            Provider::Cloudflare(cf) => {
                self.wait_turn(key).await;
                let started = Instant::now();
                let answer = self
                    .cloudflare
                    .generate_ice_servers(
                        base_url(cf),
                        &cf.key_id,
                        &key.secret,
                        request.ttl_seconds,
                        request.custom_identifier,
                    )
                    .await;
                let code = match &answer {
                    Ok(generated) => generated.status.to_string(),
                    Err(error) => error.code(),
                };
                self.observe(&key.provider, started, code);
                Ok(answer?.ice_servers)
            }
            Provider::SharedSecret(ss) => Ok(shared_secret::ice_servers(ss, &key.secret, request.expires_at)),
        }
    }

    /// Revokes the credential with this TURN username.
    pub async fn revoke(&self, key: &Key, username: &str) -> Result<Revoked, ProviderError> {
        let Provider::Cloudflare(cf) = &key.provider else {
            return Ok(Revoked::NotRevocable);
        };
        self.wait_turn(key).await;
        self.cloudflare
            .revoke(base_url(cf), &cf.key_id, &key.secret, username)
            .await?;
        Ok(Revoked::Revoked)
    }

    fn observe(&self, provider: &Provider, started: Instant, code: String) {
        let kind = ProviderKindLabels {
            provider: provider.label().into(),
        };
        self.metrics
            .provider_duration
            .get_or_create(&kind)
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .provider_requests
            .get_or_create(&ProviderLabels {
                provider: kind.provider,
                code,
            })
            .inc();
    }
}

pub fn base_url(cf: &CloudflareProvider) -> &str {
    cf.base_url.as_deref().unwrap_or(cloudflare::DEFAULT_BASE_URL)
}
