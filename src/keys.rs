//! Resolving a TurnCredential's key: the TurnKey or ClusterTurnKey, and the Secret it names.
//! A TurnKey reads its Secret from its own namespace; only a ClusterTurnKey crosses namespaces,
//! to the one it names.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::api::{ClusterTurnKey, KeyKind, Provider, TurnCredential, TurnKey};
use crate::error::{Error, Result};
use crate::secret_value::SecretValue;

/// A key ready to mint with.
#[derive(Debug)]
pub struct ResolvedKey {
    /// `TurnKey app/cloudflare` or `ClusterTurnKey cloudflare`, for messages.
    pub display: String,
    pub provider: Provider,
    pub secret: SecretValue,
}

/// How long a resolved key is reused. Minting a thousand credentials with one key then reads the
/// key and its Secret once rather than a thousand times; a changed token is seen within this.
const KEY_CACHE_TTL: Duration = Duration::from_secs(10);

/// The namespace asking (a TurnKey's scope; empty for a ClusterTurnKey) and the reference.
type CacheKey = (String, crate::api::KeyRef);

/// Keys resolved recently, with when they were read.
#[derive(Default)]
pub struct KeyCache {
    entries: Mutex<HashMap<CacheKey, (Instant, Arc<ResolvedKey>)>>,
}

impl KeyCache {
    /// The key for `tc`, from the cache while it is fresh, else from the API server. Failures
    /// are never cached.
    pub async fn resolve(&self, client: &Client, tc: &TurnCredential) -> Result<Arc<ResolvedKey>> {
        let scope = match tc.spec.key_ref.kind {
            KeyKind::TurnKey => tc.metadata.namespace.clone().unwrap_or_default(),
            KeyKind::ClusterTurnKey => String::new(),
        };
        let cache_key = (scope, tc.spec.key_ref.clone());
        let now = Instant::now();
        {
            let mut entries = self.entries.lock().expect("the key cache lock is never poisoned");
            entries.retain(|_, (at, _)| now.duration_since(*at) < KEY_CACHE_TTL);
            if let Some((_, key)) = entries.get(&cache_key) {
                return Ok(key.clone());
            }
        }
        let key = Arc::new(resolve(client, tc).await?);
        self.entries
            .lock()
            .expect("the key cache lock is never poisoned")
            .insert(cache_key, (now, key.clone()));
        Ok(key)
    }
}

pub async fn resolve(client: &Client, tc: &TurnCredential) -> Result<ResolvedKey> {
    let namespace = tc.metadata.namespace.clone().unwrap_or_default();
    let name = &tc.spec.key_ref.name;
    let (kind, display, provider, secret_namespace) = match tc.spec.key_ref.kind {
        KeyKind::TurnKey => {
            let key = Api::<TurnKey>::namespaced(client.clone(), &namespace)
                .get_opt(name)
                .await
                .map_err(Error::kube(format!("get TurnKey {namespace}/{name}")))?
                .ok_or_else(|| Error::KeyNotFound {
                    kind: "TurnKey",
                    name: format!("{namespace}/{name}"),
                })?;
            let provider =
                Provider::from_blocks(key.spec.cloudflare.as_ref(), key.spec.shared_secret.as_ref());
            (
                "TurnKey",
                format!("TurnKey {namespace}/{name}"),
                provider,
                Some(namespace.clone()),
            )
        }
        KeyKind::ClusterTurnKey => {
            let key = Api::<ClusterTurnKey>::all(client.clone())
                .get_opt(name)
                .await
                .map_err(Error::kube(format!("get ClusterTurnKey {name}")))?
                .ok_or_else(|| Error::KeyNotFound {
                    kind: "ClusterTurnKey",
                    name: name.clone(),
                })?;
            let provider =
                Provider::from_blocks(key.spec.cloudflare.as_ref(), key.spec.shared_secret.as_ref());
            let secret_namespace = provider.as_ref().and_then(|p| p.secret_ref().namespace.clone());
            (
                "ClusterTurnKey",
                format!("ClusterTurnKey {name}"),
                provider,
                secret_namespace,
            )
        }
    };
    let provider = provider.ok_or_else(|| {
        Error::InvalidSpec(format!(
            "{display} must have exactly one of cloudflare or sharedSecret"
        ))
    })?;
    let secret_namespace = secret_namespace
        .ok_or_else(|| Error::InvalidSpec(format!("{display} must name the namespace of its Secret")))?;
    let secret = read_secret_key(client, kind, &secret_namespace, &provider).await?;
    Ok(ResolvedKey {
        display,
        provider,
        secret,
    })
}

async fn read_secret_key(
    client: &Client,
    kind: &'static str,
    namespace: &str,
    provider: &Provider,
) -> Result<SecretValue> {
    let reference = provider.secret_ref();
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(&reference.name)
        .await
        .map_err(Error::kube(format!("get Secret {namespace}/{}", reference.name)))?
        .ok_or_else(|| Error::TokenSecretNotFound {
            kind,
            namespace: namespace.to_string(),
            name: reference.name.clone(),
        })?;
    // Surrounding white space is dropped: a Secret made with `--from-file` from a file that
    // ends in a newline must work the same as one made with `--from-literal`.
    let value = secret
        .data
        .and_then(|mut data| data.remove(&reference.key))
        .map(|bytes| bytes.0.trim_ascii().to_vec())
        .filter(|bytes| !bytes.is_empty())
        .ok_or_else(|| Error::TokenKeyMissing {
            namespace: namespace.to_string(),
            name: reference.name.clone(),
            key: reference.key.clone(),
        })?;
    Ok(SecretValue::new(value))
}
