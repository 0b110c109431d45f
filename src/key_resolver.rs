//! Resolving a TurnCredential's key: the TurnKey or ClusterTurnKey, and the Secret it names.
//! A TurnKey reads its Secret from its own namespace; only a ClusterTurnKey crosses namespaces,
//! to the one it names.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

use crate::api::{ClusterTurnKey, KeyName, TurnCredential, TurnKey};
use crate::error::{Error, Failure};
use crate::provider::{Key, Provider};
use crate::secret::short_hash;
use crate::secret_value::SecretValue;

/// A key as toma last read it, with what tells its versions apart.
#[derive(Debug)]
pub struct Resolved {
    pub key: Key,
    /// Hash of what the key mints with (see [`fingerprint`]); a credential minted with another
    /// fingerprint is re-minted.
    pub fingerprint: String,
    /// When toma first saw the key with this fingerprint: key-change re-mints are spread from here.
    pub seen_at: Timestamp,
    /// A ClusterTurnKey's `namespaceSelector`.
    pub namespace_selector: Option<LabelSelector>,
}

/// Resolves keys, reusing those read before until the key watch says they changed
/// (`forget`). Minting a thousand credentials with one key then reads the key and its Secret
/// once rather than a thousand times.
#[derive(Default)]
pub struct KeyResolver {
    state: Mutex<State>,
    /// Namespaces' labels as the key watch lists them, for `namespaceSelector`; until its first
    /// list is done (or where toma may not watch namespaces) a namespace is read instead.
    namespaces: Mutex<Option<HashMap<String, BTreeMap<String, String>>>>,
}

#[derive(Default)]
struct State {
    /// Each key's cell, filled by the first read of it that succeeds: reconciles that need the
    /// key together wait for that one read. A change replaces the cell, so a read begun before
    /// the change fills only the cell no longer here and is not cached.
    resolved: HashMap<KeyName, Arc<OnceCell<Arc<Resolved>>>>,
    /// Each key's last fingerprint and when it was first seen; kept across `forget`, so a token
    /// rotation does not move a pending key-change re-mint; dropped when the key is deleted.
    seen: HashMap<KeyName, (String, Timestamp)>,
}

impl KeyResolver {
    /// The key for `tc`, from the cache, else from the API server; failures are never cached.
    /// A ClusterTurnKey whose `namespaceSelector` does not match `tc`'s namespace is refused:
    /// that check uses the labels the key watch keeps, or reads the namespace while it has none.
    pub async fn resolve(
        &self,
        client: &Client,
        tc: &TurnCredential,
        now: Timestamp,
    ) -> Result<Arc<Resolved>, Failure> {
        let name = KeyName::of(tc);
        let resolved = self.resolve_name(client, &name, now).await?;
        if let Some(selector) = &resolved.namespace_selector {
            let namespace = tc.namespace().unwrap_or_default();
            if !self.namespace_matches(client, &namespace, selector).await? {
                return Err(Failure::KeyNotAllowed { key: name, namespace });
            }
        }
        Ok(resolved)
    }

    async fn resolve_name(
        &self,
        client: &Client,
        name: &KeyName,
        now: Timestamp,
    ) -> Result<Arc<Resolved>, Failure> {
        let cell = self.cell(name);
        let resolved = cell
            .get_or_try_init(|| self.read_resolved(client, name, now))
            .await?;
        Ok(resolved.clone())
    }

    /// The cell `name` is cached in now.
    fn cell(&self, name: &KeyName) -> Arc<OnceCell<Arc<Resolved>>> {
        self.lock().resolved.entry(name.clone()).or_default().clone()
    }

    /// Reads `name` from the API server, and notes when its fingerprint was first seen.
    async fn read_resolved(
        &self,
        client: &Client,
        name: &KeyName,
        now: Timestamp,
    ) -> Result<Arc<Resolved>, Failure> {
        let (key, namespace_selector) = read(client, name).await?;
        let fingerprint = fingerprint(&key);
        let mut state = self.lock();
        let seen_at = match state.seen.get(name) {
            Some((seen, at)) if *seen == fingerprint => *at,
            _ => {
                state.seen.insert(name.clone(), (fingerprint.clone(), now));
                now
            }
        };
        Ok(Arc::new(Resolved {
            key,
            fingerprint,
            seen_at,
            namespace_selector,
        }))
    }

    /// Whether the labels of `namespace` match `selector`: from the watch's labels once it has
    /// listed namespaces, else from the API server.
    async fn namespace_matches(
        &self,
        client: &Client,
        namespace: &str,
        selector: &LabelSelector,
    ) -> Result<bool, Failure> {
        // The schema admits only selectors that parse; one written past it selects nothing.
        let Ok(selector) = Selector::try_from(selector.clone()) else {
            return Ok(false);
        };
        let watched = self.namespaces_lock().as_ref().map(|listed| {
            listed
                .get(namespace)
                .is_some_and(|labels| selector.matches(labels))
        });
        if let Some(matches) = watched {
            return Ok(matches);
        }
        let found = Api::<Namespace>::all(client.clone())
            .get_metadata_opt(namespace)
            .await
            .map_err(|source| Error::GetNamespace {
                namespace: namespace.into(),
                source,
            })?;
        Ok(found.is_some_and(|ns| selector.matches(ns.labels())))
    }

    /// The watch of namespaces has listed them all once: their labels are read from here on.
    pub fn namespaces_listed(&self, labels: HashMap<String, BTreeMap<String, String>>) {
        *self.namespaces_lock() = Some(labels);
    }

    /// A namespace's labels, as watched after its first list; whether they changed (None: the
    /// namespace was not known).
    pub fn namespace_labelled(&self, namespace: &str, labels: &BTreeMap<String, String>) -> Option<bool> {
        let mut namespaces = self.namespaces_lock();
        let before = namespaces.as_mut()?.insert(namespace.into(), labels.clone());
        before.map(|before| before != *labels)
    }

    pub fn namespace_deleted(&self, namespace: &str) {
        if let Some(namespaces) = self.namespaces_lock().as_mut() {
            namespaces.remove(namespace);
        }
    }

    fn namespaces_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, Option<HashMap<String, BTreeMap<String, String>>>> {
        self.namespaces
            .lock()
            .expect("the namespace labels lock is never poisoned")
    }

    /// Drops the cached `key`: it, or the Secret it reads, changed.
    pub fn forget(&self, key: &KeyName) {
        self.lock().resolved.remove(key);
    }

    /// Drops all that is kept of `key`: it was deleted.
    pub fn deleted(&self, key: &KeyName) {
        let mut state = self.lock();
        state.resolved.remove(key);
        state.seen.remove(key);
    }

    /// Drops every cached key, e.g. when the watch of keys started over and may have missed changes.
    pub fn forget_all(&self) {
        self.lock().resolved.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("the key cache lock is never poisoned")
    }
}

/// What `key` mints with: Cloudflare's key ID and base URL, or the shared-secret URLs, username
/// suffix and the shared secret itself. Not Cloudflare's API token: credentials minted with the
/// old token stay valid, so rotating it re-mints nothing. The hash of a shared secret is kept on
/// the credential's Secret, beside credentials that are themselves HMACs of it: it tells no
/// more about the secret than they do.
pub fn fingerprint(key: &Key) -> String {
    let mut inputs = match &key.provider {
        Provider::Cloudflare(cf) => serde_json::json!({
            "keyId": cf.key_id,
            "baseUrl": crate::provider::base_url(cf),
        })
        .to_string()
        .into_bytes(),
        Provider::SharedSecret(ss) => serde_json::json!({
            "urls": ss.urls,
            "usernameSuffix": ss.username_suffix,
        })
        .to_string()
        .into_bytes(),
    };
    if let Provider::SharedSecret(_) = key.provider {
        inputs.push(0);
        inputs.extend_from_slice(key.secret.expose());
    }
    short_hash(&inputs)
}

/// The key `name`, read from the API server now.
pub async fn resolve(client: &Client, name: &KeyName) -> Result<Key, Failure> {
    Ok(read(client, name).await?.0)
}

/// What a TurnKey or ClusterTurnKey says about minting: its provider block, where its Secret is
/// (a TurnKey's own namespace, the namespace a ClusterTurnKey's secretRef names) and a
/// ClusterTurnKey's namespaceSelector. The key watch reads keys through it too.
pub struct KeyParts {
    /// None when the schema was bypassed and both or neither block is set.
    pub provider: Option<Provider>,
    /// None for a ClusterTurnKey written past the schema without a secretRef namespace.
    pub secret_namespace: Option<String>,
    pub namespace_selector: Option<LabelSelector>,
}

impl KeyParts {
    pub fn of_turn_key(key: &TurnKey) -> KeyParts {
        let spec = &key.spec;
        KeyParts {
            provider: Provider::from_blocks(spec.cloudflare.as_ref(), spec.shared_secret.as_ref()),
            secret_namespace: key.namespace(),
            namespace_selector: None,
        }
    }

    pub fn of_cluster_turn_key(key: &ClusterTurnKey) -> KeyParts {
        let spec = &key.spec;
        let provider = Provider::from_blocks(spec.cloudflare.as_ref(), spec.shared_secret.as_ref());
        KeyParts {
            secret_namespace: provider.as_ref().and_then(|p| p.secret_ref().namespace.clone()),
            provider,
            namespace_selector: spec.namespace_selector.clone(),
        }
    }

    /// The Secret holding the API token or shared secret.
    pub fn token_secret(&self) -> Option<ObjectRef<Secret>> {
        let name = &self.provider.as_ref()?.secret_ref().name;
        Some(ObjectRef::new(name).within(self.secret_namespace.as_deref()?))
    }
}

/// The key `name` and, for a ClusterTurnKey, its namespaceSelector.
async fn read(client: &Client, name: &KeyName) -> Result<(Key, Option<LabelSelector>), Failure> {
    let name = name.clone();
    let parts = match &name.namespace {
        Some(namespace) => {
            let key: TurnKey = get_key(Api::namespaced(client.clone(), namespace), &name).await?;
            KeyParts::of_turn_key(&key)
        }
        None => {
            let key: ClusterTurnKey = get_key(Api::all(client.clone()), &name).await?;
            KeyParts::of_cluster_turn_key(&key)
        }
    };
    let provider = parts
        .provider
        .ok_or_else(|| Failure::NoProviderBlock { key: name.clone() })?;
    let secret_namespace = parts
        .secret_namespace
        .ok_or_else(|| Failure::NoSecretNamespace { key: name.clone() })?;
    let secret = read_secret_key(client, &name, &secret_namespace, &provider).await?;
    let key = Key {
        name,
        provider,
        secret,
    };
    Ok((key, parts.namespace_selector))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CloudflareProvider, KeyKind, SecretKeyRef, TurnKeySpec};
    use crate::fixtures::mock_api::MockApi;
    use crate::fixtures::turn_credential;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    /// When every test resolves.
    const NOW: Timestamp = Timestamp::constant(1_700_000_000, 0);

    fn key_in(api: &MockApi, namespace: &str, token: &str) {
        let spec = TurnKeySpec {
            cloudflare: Some(CloudflareProvider {
                key_id: format!("key-{namespace}"),
                api_token_secret_ref: SecretKeyRef {
                    name: "cf".into(),
                    key: "api-token".into(),
                    namespace: None,
                },
                base_url: None,
            }),
            shared_secret: None,
        };
        let path = format!("/apis/toma.dev/v1alpha1/namespaces/{namespace}/turnkeys/cloudflare");
        api.put(&path, TurnKey::new("cloudflare", spec));
        let mut secret = Secret {
            data: Some(BTreeMap::from([("api-token".into(), ByteString(token.into()))])),
            ..Secret::default()
        };
        secret.metadata.name = Some("cf".into());
        api.put(&format!("/api/v1/namespaces/{namespace}/secrets/cf"), secret);
    }

    fn credential_in(namespace: &str) -> TurnCredential {
        let mut tc = turn_credential("web");
        tc.spec.key_ref.kind = KeyKind::TurnKey;
        tc.metadata.namespace = Some(namespace.into());
        tc
    }

    #[tokio::test]
    async fn same_named_turn_keys_in_two_namespaces_never_lend_each_other_their_tokens() {
        let api = MockApi::default();
        key_in(&api, "north", "token-north");
        key_in(&api, "south", "token-south");
        let keys = KeyResolver::default();
        let token = async |namespace: &str| {
            let resolved = keys
                .resolve(&api.client(), &credential_in(namespace), NOW)
                .await
                .unwrap();
            String::from_utf8(resolved.key.secret.expose().to_vec()).unwrap()
        };

        for _ in 0..2 {
            // Read, then from the cache: each namespace its own.
            assert_eq!(token("north").await, "token-north");
            assert_eq!(token("south").await, "token-south");
        }
        // South's token rotates; the key watch drops south's key only.
        key_in(&api, "south", "token-south-2");
        keys.forget(&KeyName::of(&credential_in("south")));
        assert_eq!(token("south").await, "token-south-2");
        assert_eq!(token("north").await, "token-north");
    }

    #[tokio::test]
    async fn credentials_that_resolve_a_key_together_read_it_once() {
        let api = MockApi::default();
        key_in(&api, "north", "token-north");
        let keys = KeyResolver::default();
        let tc = credential_in("north");
        let client = api.client();
        let resolves = (0..16).map(|_| keys.resolve(&client, &tc, NOW));
        for resolved in futures::future::join_all(resolves).await {
            assert_eq!(resolved.unwrap().key.secret.expose(), b"token-north");
        }
        let reads = |path: &str| api.requests().iter().filter(|r| r.path == path).count();
        assert_eq!(
            reads("/apis/toma.dev/v1alpha1/namespaces/north/turnkeys/cloudflare"),
            1
        );
        assert_eq!(reads("/api/v1/namespaces/north/secrets/cf"), 1);
    }

    #[tokio::test]
    async fn a_key_read_while_it_changes_is_not_cached() {
        let api = MockApi::default();
        key_in(&api, "north", "old");
        let keys = KeyResolver::default();
        let tc = credential_in("north");
        let name = KeyName::of(&tc);
        // A read begins (in the cell the key is cached in now), and a change lands before it ends.
        let client = api.client();
        let cell = keys.cell(&name);
        keys.forget(&name);
        let read = cell
            .get_or_try_init(|| keys.read_resolved(&client, &name, NOW))
            .await
            .unwrap();
        assert_eq!(read.key.secret.expose(), b"old");
        assert!(
            keys.lock().resolved.is_empty(),
            "a read that raced a change was cached"
        );
        key_in(&api, "north", "new");
        let resolved = keys.resolve(&client, &tc, NOW).await.unwrap();
        assert_eq!(resolved.key.secret.expose(), b"new");
    }

    #[tokio::test]
    async fn a_deleted_key_leaves_nothing_behind() {
        let api = MockApi::default();
        key_in(&api, "north", "token-north");
        let keys = KeyResolver::default();
        let tc = credential_in("north");
        keys.resolve(&api.client(), &tc, NOW).await.unwrap();
        keys.forget(&KeyName::of(&tc));
        assert_eq!(keys.lock().seen.len(), 1, "a change keeps when the key was seen");
        keys.deleted(&KeyName::of(&tc));
        let state = keys.lock();
        assert!(state.resolved.is_empty() && state.seen.is_empty());
    }
}
