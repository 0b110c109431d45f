//! The objects a benchmark needs on the control plane, and cleaning them up.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fake_cloudflare::FakeCloudflare;
use futures::{StreamExt, TryFutureExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::ObjectMeta;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use toma::api::{
    CloudflareProvider, ClusterTurnKey, ClusterTurnKeySpec, KeyKind, KeyRef, SecretKeyRef, TurnCredential,
    TurnCredentialSpec,
};
use toma::secret::{MANAGED_BY, MANAGED_BY_LABEL};

use crate::Result;

pub const KEY_ID: &str = "0123456789abcdef0123456789abcdef";
pub const TOKEN: &str = "bench-api-token-0123456789";
pub const TOKEN_SECRET: &str = "cloudflare-turn";
pub const TTL_SECONDS: i64 = 86_400;

/// Namespaces (and their ClusterTurnKeys, which share the name) created by this run, so that
/// they are removed whatever happens.
#[derive(Default)]
pub struct Created(Mutex<Vec<String>>);

impl Created {
    pub async fn namespace(&self, client: &Client, prefix: &str) -> Result<String> {
        let name = format!("{prefix}-{:04x}", rand::random::<u16>());
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([("toma.dev/bench".into(), "true".into())])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        self.0.lock().unwrap().push(name.clone());
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await?;
        Ok(name)
    }

    /// Deletes `name` and waits until it is gone, so that the deletion's own API writes (the
    /// namespace controller and the garbage collector) fall outside the next measurement.
    pub async fn remove(&self, client: &Client, name: &str, limit: Duration) -> Result<Duration> {
        self.0.lock().unwrap().retain(|n| n != name);
        delete_namespace(client, name, limit).await
    }

    /// Removes whatever is left, without waiting long.
    pub async fn remove_all(&self, client: &Client) {
        let names: Vec<String> = std::mem::take(&mut *self.0.lock().unwrap());
        for name in names {
            if let Err(error) = delete_namespace(client, &name, Duration::from_secs(120)).await {
                eprintln!("cleanup: namespace {name}: {error}");
            }
        }
    }
}

async fn delete_namespace(client: &Client, name: &str, limit: Duration) -> Result<Duration> {
    let started = Instant::now();
    // Finalizers with no toma to honour them would keep the namespace terminating forever.
    let credentials: Api<TurnCredential> = Api::namespaced(client.clone(), name);
    for tc in list_all(&credentials).await? {
        if !tc.finalizers().is_empty() {
            let clear = json!({"metadata": {"finalizers": null}});
            unless_gone(
                credentials
                    .patch(&tc.name_any(), &PatchParams::default(), &Patch::Merge(&clear))
                    .await,
            )?;
        }
    }
    unless_gone(
        Api::<ClusterTurnKey>::all(client.clone())
            .delete(name, &DeleteParams::default())
            .await,
    )?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces.get_opt(name).await?.is_some() {
        let _ = namespaces.delete(name, &DeleteParams::default()).await;
    }
    while namespaces.get_opt(name).await?.is_some() {
        if started.elapsed() > limit {
            return Err(format!("namespace {name} still there after {limit:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    crate::apiserver::quiesce(client, limit.min(Duration::from_secs(120))).await?;
    Ok(started.elapsed())
}

/// Ok when the object was not there (HTTP 404).
fn unless_gone<T>(result: kube::Result<T>) -> Result<()> {
    match result {
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        other => other.map(drop).map_err(Into::into),
    }
}

/// Every object, read in pages of 500 so that a long list does not time out.
pub async fn list_all<K>(api: &Api<K>) -> Result<Vec<K>>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut all = Vec::new();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await?;
        all.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(all),
        }
    }
}

/// The API token Secret in `namespace` and a ClusterTurnKey of the same name pointing at the fake.
pub async fn create_key(client: &Client, namespace: &str, base_url: &str) -> Result<()> {
    let token = Secret {
        metadata: ObjectMeta {
            name: Some(TOKEN_SECRET.into()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([("api-token".into(), TOKEN.into())])),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &token)
        .await?;
    let key = ClusterTurnKey::new(
        namespace,
        ClusterTurnKeySpec {
            cloudflare: Some(CloudflareProvider {
                key_id: KEY_ID.into(),
                api_token_secret_ref: SecretKeyRef {
                    name: TOKEN_SECRET.into(),
                    key: "api-token".into(),
                    namespace: Some(namespace.into()),
                },
                base_url: Some(base_url.into()),
            }),
            shared_secret: None,
            namespace_selector: None,
        },
    );
    let keys: Api<ClusterTurnKey> = Api::all(client.clone());
    // A leftover of an interrupted run with this name goes first.
    unless_gone(keys.delete(namespace, &DeleteParams::default()).await)?;
    keys.create(&PostParams::default(), &key).await?;
    Ok(())
}

/// The `i`-th TurnCredential of a run, using the namespace's ClusterTurnKey.
pub fn credential(namespace: &str, i: usize) -> TurnCredential {
    let key = KeyRef {
        kind: KeyKind::ClusterTurnKey,
        name: namespace.into(),
    };
    let mut tc = TurnCredential::new(
        &format!("tc-{i:05}"),
        TurnCredentialSpec::with_key(key, TTL_SECONDS),
    );
    tc.metadata.namespace = Some(namespace.into());
    tc
}

/// How the objects of a namespace (TurnCredentials or ExternalSecrets) ended up.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Outcome {
    pub objects: usize,
    pub ready: usize,
    pub secrets: usize,
    /// Secrets that hold a TURN username.
    pub usable_secrets: usize,
    /// Credentials the fake issued that no Secret holds and nobody revoked: of no use to anyone,
    /// and valid at Cloudflare until their ttl ends.
    pub unused_mints: usize,
    /// TurnCredentials whose `status.rotations` is not 1 (each should have been minted once);
    /// None for objects without that count.
    pub rotations_not_one: Option<usize>,
    /// How many TurnCredentials report each `status.rotations` value.
    pub rotations: BTreeMap<i64, usize>,
}

impl Outcome {
    /// Fills in what the Secrets hold, and which of the fake's credentials none of them does.
    pub fn with_secrets(mut self, secrets: &[Secret], fake: &FakeCloudflare) -> Outcome {
        let held: HashSet<&str> = secrets.iter().filter_map(username).collect();
        self.secrets = secrets.len();
        self.usable_secrets = secrets.iter().filter_map(username).count();
        self.unused_mints = unused_mints(
            fake.mints().iter().map(|m| m.username.as_str()),
            &fake.revoked(),
            &held,
        );
        self
    }
}

/// The TURN username a Secret holds (toma's and the ESO template's Secrets both have the key).
fn username(secret: &Secret) -> Option<&str> {
    let value = secret.data.as_ref()?.get(toma::secret::USERNAME_KEY)?;
    std::str::from_utf8(&value.0).ok().filter(|u| !u.is_empty())
}

/// The distinct minted usernames that are neither held nor revoked.
fn unused_mints<'a>(
    minted: impl IntoIterator<Item = &'a str>,
    revoked: &[String],
    held: &HashSet<&str>,
) -> usize {
    let minted: HashSet<&str> = minted.into_iter().collect();
    minted
        .into_iter()
        .filter(|u| !held.contains(u) && !revoked.iter().any(|r| r == u))
        .count()
}

/// The TurnCredentials of `namespace` and toma's Secrets there.
pub async fn outcome(client: &Client, namespace: &str, fake: &FakeCloudflare) -> Result<Outcome> {
    let credentials = list_all(&Api::<TurnCredential>::namespaced(client.clone(), namespace)).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secrets = secrets
        .list(&ListParams::default().labels(&toma_secrets()))
        .await?;
    let mut rotations = BTreeMap::new();
    for tc in &credentials {
        *rotations
            .entry(tc.status.as_ref().map_or(-1, |s| s.rotations))
            .or_insert(0) += 1;
    }
    let outcome = Outcome {
        objects: credentials.len(),
        ready: credentials
            .iter()
            .filter(|tc| crate::progress::is_ready(tc))
            .count(),
        rotations_not_one: Some(credentials.len() - rotations.get(&1).copied().unwrap_or(0)),
        rotations,
        ..Outcome::default()
    };
    Ok(outcome.with_secrets(&secrets.items, fake))
}

/// Creates the `n` objects `create(i)` makes, with `parallelism` requests in flight; returns
/// when the last create was answered.
pub async fn create_each<F, T, E>(
    n: usize,
    parallelism: usize,
    create: impl Fn(usize) -> F,
) -> Result<Instant>
where
    F: Future<Output = std::result::Result<T, E>>,
    E: Into<crate::Error>,
{
    futures::stream::iter(0..n)
        .map(|i| create(i).map_err(Into::into))
        .buffer_unordered(parallelism)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    Ok(Instant::now())
}

/// The label selector of the Secrets toma writes.
pub fn toma_secrets() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret_holding(username: &str) -> Secret {
        Secret {
            data: Some(BTreeMap::from([(
                toma::secret::USERNAME_KEY.to_string(),
                ByteString(username.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        }
    }

    #[test]
    fn a_mint_counts_as_unused_only_when_no_secret_holds_it_and_it_was_not_revoked() {
        let secrets = [secret_holding("a"), secret_holding("b"), Secret::default()];
        let held: HashSet<&str> = secrets.iter().filter_map(username).collect();
        assert_eq!(held, HashSet::from(["a", "b"]));
        let minted = ["a", "b", "c", "d", "d"];
        assert_eq!(unused_mints(minted, &["c".to_string()], &held), 1);
        assert_eq!(unused_mints(["a"], &[], &held), 0);
    }
}
