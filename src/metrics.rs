//! Prometheus metrics, served in the OpenMetrics text format on `/metrics`.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicI64;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::reflector::{Lookup, ObjectRef};

use crate::api::TurnCredential;
use crate::plan::MintReason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderKindLabels {
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MintLabels {
    pub provider: String,
    /// Why the credential was minted: a `MintReason`.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CredentialLabels {
    pub namespace: String,
    pub name: String,
}

impl CredentialLabels {
    pub fn of(tc: &TurnCredential) -> CredentialLabels {
        CredentialLabels {
            namespace: ResourceExt::namespace(tc).unwrap_or_default(),
            name: tc.name_any(),
        }
    }
}

impl<K: Lookup + ?Sized> From<&ObjectRef<K>> for CredentialLabels {
    fn from(object: &ObjectRef<K>) -> CredentialLabels {
        CredentialLabels {
            namespace: object.namespace.clone().unwrap_or_default(),
            name: object.name.clone(),
        }
    }
}

pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Counter,
    pub reconcile_errors: Family<ReasonLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub mints: Family<MintLabels, Counter>,
    pub provider_requests: Family<ProviderLabels, Counter>,
    pub provider_duration: Family<ProviderKindLabels, Histogram>,
    /// Requests that waited for the per-key rate limit before going out.
    pub provider_rate_limited: Family<ProviderKindLabels, Counter>,
    pub expiration: Family<CredentialLabels, Gauge<i64, AtomicI64>>,
    pub renewal: Family<CredentialLabels, Gauge<i64, AtomicI64>>,
    pub ready: Family<CredentialLabels, Gauge<i64, AtomicI64>>,
    /// 1 while this instance leads (always, without leader election), else 0.
    pub leader: Gauge<i64, AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("toma");
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconciles of TurnCredentials", reconciles.clone());
        let reconcile_errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciles by reason",
            reconcile_errors.clone(),
        );
        let reconcile_duration =
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            reconcile_duration.clone(),
        );
        let mints = Family::<MintLabels, Counter>::default();
        registry.register(
            "credentials_minted",
            "Credentials minted, by provider and reason",
            mints.clone(),
        );
        let provider_requests = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "provider_requests",
            "Requests to the provider API by HTTP status code (or timeout, unreachable)",
            provider_requests.clone(),
        );
        let provider_duration = Family::<ProviderKindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
        });
        registry.register(
            "provider_request_duration_seconds",
            "Latency of requests to the provider API",
            provider_duration.clone(),
        );
        let provider_rate_limited = Family::<ProviderKindLabels, Counter>::default();
        registry.register(
            "provider_rate_limited",
            "Requests to the provider API that waited for the per-key rate limit",
            provider_rate_limited.clone(),
        );
        let expiration = Family::<CredentialLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "credential_expiration_timestamp_seconds",
            "When the credential in each TurnCredential's Secret expires (Unix time)",
            expiration.clone(),
        );
        let renewal = Family::<CredentialLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "credential_renewal_timestamp_seconds",
            "When toma will mint the next credential for each TurnCredential (Unix time)",
            renewal.clone(),
        );
        let ready = Family::<CredentialLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "credential_ready",
            "1 when the TurnCredential's Ready condition is True, 0 when False",
            ready.clone(),
        );
        let leader = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "leader",
            "1 while this instance leads and writes (always, without leader election), 0 while it stands by",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            mints,
            provider_requests,
            provider_duration,
            provider_rate_limited,
            expiration,
            renewal,
            ready,
            leader,
        }
    }
}

impl Metrics {
    /// Counts a reconcile and measures it until the returned guard is dropped, early returns included.
    pub fn reconcile_started(&self) -> DurationGuard<'_> {
        self.reconciles.inc();
        DurationGuard {
            histogram: &self.reconcile_duration,
            start: Instant::now(),
        }
    }

    pub fn count_error(&self, reason: &str) {
        self.reconcile_errors
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn count_mint(&self, provider: &str, reason: MintReason) {
        self.mints
            .get_or_create(&MintLabels {
                provider: provider.into(),
                reason: reason.label().into(),
            })
            .inc();
    }

    /// The TurnCredential's Secret holds a credential valid until `expires_at`, renewed at `renewal`.
    pub fn credential_ready(&self, credential: &CredentialLabels, expires_at: Timestamp, renewal: Timestamp) {
        self.expiration
            .get_or_create(credential)
            .set(expires_at.as_second());
        self.renewal.get_or_create(credential).set(renewal.as_second());
        self.ready.get_or_create(credential).set(1);
    }

    pub fn credential_not_ready(&self, credential: &CredentialLabels) {
        self.ready.get_or_create(credential).set(0);
    }

    /// Drops the series of a TurnCredential that is gone.
    pub fn forget_credential(&self, credential: &CredentialLabels) {
        self.expiration.remove(credential);
        self.renewal.remove(credential);
        self.ready.remove(credential);
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String never fails");
        text
    }
}

pub struct DurationGuard<'a> {
    histogram: &'a Histogram,
    start: Instant,
}

impl Drop for DurationGuard<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}
