//! toma keeps short-lived TURN credentials fresh in Kubernetes Secrets. For each TurnCredential:
//!
//! 1. **watch**: `controller` wakes a reconcile when its spec or its Secret changes, or renewal is due;
//! 2. **plan**: `plan` decides from the TurnCredential, its Secret and the time whether to mint;
//! 3. **mint**: `provider` asks Cloudflare, or computes a shared-secret credential, with the key
//!    that `key_resolver` reads;
//! 4. **write**: `reconcile` applies the Secret that `secret` describes;
//! 5. **report**: status (`status`), an Event (`events`), metrics, and the next renewal (`schedule`).
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod context;
pub mod controller;
pub mod credential;
pub mod error;
pub mod events;
pub mod key_resolver;
pub mod key_watch;
pub mod known_secrets;
pub mod leader;
pub mod metrics;
pub mod own_writes;
pub mod plan;
pub mod provider;
pub mod reconcile;
pub mod rollout;
pub mod schedule;
pub mod secret;
pub mod secret_value;
pub mod server;
pub mod status;

#[cfg(test)]
pub mod fixtures;

pub use error::{Error, Failure, Result};
pub use provider::{cloudflare, shared_secret};

/// What toma calls itself to the API server and to Cloudflare (whose edge answers requests
/// without a User-Agent with 403 `error code: 1010`).
pub const USER_AGENT: &str = concat!("toma/", env!("CARGO_PKG_VERSION"));

/// Picks ring as the TLS crypto provider for the whole process (kube uses it too), once.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Fails only if another provider was installed first, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The CRDs, as the multi-document YAML that `toma crds` prints and `crds/` holds.
pub fn crds_yaml() -> String {
    use kube::CustomResourceExt;
    let crds = [
        api::TurnCredential::crd(),
        api::TurnKey::crd(),
        api::ClusterTurnKey::crd(),
    ];
    crds.iter()
        .map(|crd| serde_saphyr::to_string(crd).expect("CRDs serialize to YAML"))
        .collect::<Vec<_>>()
        .join("---\n")
}
