//! Resolving a TurnCredential's key: the TurnKey or ClusterTurnKey, and the Secret it names.
//! A TurnKey reads its Secret from its own namespace; only a ClusterTurnKey crosses namespaces,
//! to the one it names.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use crate::api::{ClusterTurnKey, KeyName, TurnCredential, TurnKey};
use crate::error::{Error, Failure};
use crate::provider::{Key, Provider};
use crate::secret_value::SecretValue;

/// How long a resolved key is reused. Minting a thousand credentials with one key then reads the
/// key and its Secret once rather than a thousand times; a changed token is seen within this.
const KEY_CACHE_TTL: Duration = Duration::from_secs(10);

/// Resolves keys, reusing those resolved recently.
#[derive(Default)]
pub struct KeyResolver {
    /// By key (a TurnKey's name includes its namespace), with when it was read.
    recent: Mutex<HashMap<KeyName, (Instant, Arc<Key>)>>,
}

impl KeyResolver {
    /// The key for `tc`, from the cache while it is fresh, else from the API server. Failures
    /// are never cached.
    pub async fn resolve(&self, client: &Client, tc: &TurnCredential) -> Result<Arc<Key>, Failure> {
        let name = KeyName::of(tc);
        let now = Instant::now();
        {
            let mut recent = self.recent.lock().expect("the key cache lock is never poisoned");
            recent.retain(|_, (at, _)| now.duration_since(*at) < KEY_CACHE_TTL);
            if let Some((_, key)) = recent.get(&name) {
                return Ok(key.clone());
            }
        }
        let key = Arc::new(resolve(client, &name).await?);
        self.recent
            .lock()
            .expect("the key cache lock is never poisoned")
            .insert(name, (now, key.clone()));
        Ok(key)
    }
}

/// The key `name`, read from the API server now.
pub async fn resolve(client: &Client, name: &KeyName) -> Result<Key, Failure> {
    let name = name.clone();
    let (provider, secret_namespace) = match &name.namespace {
        Some(namespace) => {
            let key: TurnKey = get_key(Api::namespaced(client.clone(), namespace), &name).await?;
            let spec = key.spec;
            let provider = Provider::from_blocks(spec.cloudflare.as_ref(), spec.shared_secret.as_ref());
            (provider, Some(namespace.clone()))
        }
        None => {
            let key: ClusterTurnKey = get_key(Api::all(client.clone()), &name).await?;
            let spec = key.spec;
            let provider = Provider::from_blocks(spec.cloudflare.as_ref(), spec.shared_secret.as_ref());
            let secret_namespace = provider.as_ref().and_then(|p| p.secret_ref().namespace.clone());
            (provider, secret_namespace)
        }
    };
    let provider = provider.ok_or_else(|| Failure::NoProviderBlock { key: name.clone() })?;
    let secret_namespace =
        secret_namespace.ok_or_else(|| Failure::NoSecretNamespace { key: name.clone() })?;
    let secret = read_secret_key(client, &name, &secret_namespace, &provider).await?;
    Ok(Key {
        name,
        provider,
        secret,
    })
}

async fn get_key<K>(api: Api<K>, name: &KeyName) -> Result<K, Failure>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    api.get_opt(&name.name)
        .await
        .map_err(|source| Error::GetKey {
            key: name.clone(),
            source,
        })?
        .ok_or_else(|| Failure::KeyNotFound { key: name.clone() })
}

async fn read_secret_key(
    client: &Client,
    key: &KeyName,
    namespace: &str,
    provider: &Provider,
) -> Result<SecretValue, Failure> {
    let reference = provider.secret_ref();
    let secret_ref = ObjectRef::<Secret>::new(&reference.name).within(namespace);
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(&reference.name)
        .await
        .map_err(|source| Error::GetKeySecret {
            secret: secret_ref.clone(),
            source,
        })?
        .ok_or_else(|| Failure::TokenSecretNotFound {
            secret: secret_ref.clone(),
            key_kind: key.kind_name(),
        })?;
    // Surrounding white space is dropped: a Secret made with `--from-file` from a file that
    // ends in a newline must work the same as one made with `--from-literal`.
    let value = secret
        .data
        .and_then(|mut data| data.remove(&reference.key))
        .map(|bytes| bytes.0.trim_ascii().to_vec())
        .filter(|bytes| !bytes.is_empty())
        .ok_or_else(|| Failure::TokenKeyMissing {
            secret: secret_ref,
            entry: reference.key.clone(),
        })?;
    Ok(SecretValue::new(value))
}
