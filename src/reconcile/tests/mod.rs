//! Reconciles against the in-memory API server of `fixtures::mock_api`, at times the tests
//! choose, so that every expected value is a literal.

mod deletion;
mod failures;
mod keys;
mod minting;
mod rollout;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use serde_json::Value;

use super::reconcile_at;
use crate::api::{
    CloudflareProvider, ClusterTurnKey, ClusterTurnKeySpec, SecretKeyRef, SharedSecretProvider,
    TurnCredential,
};
use crate::context::Context;
use crate::events::Writer;
use crate::fixtures::mock_api::{MockApi, Recorded};

/// 2023-11-14T22:13:20Z.
const NOW: i64 = 1_700_000_000;
const SECRETS: &str = "/api/v1/namespaces/app/secrets";
const SECRET: &str = "/api/v1/namespaces/app/secrets/web";
const CREDENTIAL: &str = "/apis/toma.dev/v1alpha1/namespaces/app/turncredentials/web";
const CREDENTIAL_STATUS: &str = "/apis/toma.dev/v1alpha1/namespaces/app/turncredentials/web/status";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/app/events";
const CLUSTER_KEY: &str = "/apis/toma.dev/v1alpha1/clusterturnkeys/cloudflare";
const COTURN_SECRET: &str = "/api/v1/namespaces/toma-system/secrets/coturn";
const KEY_ID: &str = "0123456789abcdef0123456789abcdef";

/// `NOW` moved by `seconds`.
fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(NOW + seconds).unwrap()
}

/// The API server, and the Event writers of every toma that ran against it.
#[derive(Default)]
struct Cluster {
    api: MockApi,
    writers: Mutex<Vec<Writer>>,
}

impl Cluster {
    /// A toma process of its own: its own key cache, record of writes and Event queue.
    fn toma(&self) -> Arc<Context> {
        let (ctx, writer) = Context::test(self.api.client());
        self.writers.lock().unwrap().push(writer);
        ctx
    }

    /// A toma whose Secret watch has listed its Secrets and found none.
    fn toma_with_no_secrets_listed(&self) -> Arc<Context> {
        let ctx = self.toma();
        ctx.known_secrets.observe(&kube::runtime::watcher::Event::Init);
        ctx.known_secrets
            .observe(&kube::runtime::watcher::Event::InitDone);
        ctx
    }

    /// The methods of the requests to `path`, from the `from`th request on.
    fn methods_on(&self, path: &str, from: usize) -> Vec<http::Method> {
        self.api.requests()[from..]
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.method.clone())
            .collect()
    }

    /// Stores `tc` as the API server would, then reconciles it as stored, at `now`.
    async fn reconcile(&self, ctx: &Context, tc: &TurnCredential, now: Timestamp) -> crate::Result<Action> {
        self.api.put(CREDENTIAL, tc);
        self.reconcile_stored(ctx, now).await
    }

    /// A new TurnCredential `web`, reconciled once by a toma of its own at `NOW`.
    async fn reconcile_web_once(&self) -> Action {
        let tc = crate::fixtures::turn_credential("web");
        self.reconcile(&self.toma(), &tc, at(0)).await.unwrap()
    }

    /// Reconciles the TurnCredential as the API server holds it, at `now`.
    async fn reconcile_stored(&self, ctx: &Context, now: Timestamp) -> crate::Result<Action> {
        reconcile_at(&self.stored_credential(), ctx, now).await
    }

    fn stored_credential(&self) -> TurnCredential {
        serde_json::from_value(self.api.get(CREDENTIAL).expect("a stored TurnCredential")).unwrap()
    }

    fn stored_secret(&self) -> Option<Secret> {
        self.api.get(SECRET).map(|s| serde_json::from_value(s).unwrap())
    }

    /// The status as the API server holds it.
    fn stored_status(&self) -> Value {
        self.api.get(CREDENTIAL).unwrap()["status"].clone()
    }

    fn status_writes(&self) -> Vec<Recorded> {
        self.api.writes_to(CREDENTIAL_STATUS)
    }

    /// The reasons of the Events written, once every toma is dropped and its queue written.
    async fn event_reasons(&self) -> Vec<String> {
        let writers = std::mem::take(&mut *self.writers.lock().unwrap());
        for writer in writers {
            assert!(
                writer.finish(Duration::from_secs(5)).await,
                "Events written once the context is dropped"
            );
        }
        self.api
            .writes_to(EVENTS)
            .iter()
            .map(|e| e.body["reason"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// A cluster with a ClusterTurnKey `cloudflare` (whatever its provider) with a shared secret.
    fn with_shared_secret_key() -> Cluster {
        let cluster = Cluster::default();
        let provider = SharedSecretProvider {
            secret_ref: secret_key_ref("coturn", "secret"),
            urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
            username_suffix: None,
        };
        let spec = ClusterTurnKeySpec {
            cloudflare: None,
            shared_secret: Some(provider),
            namespace_selector: None,
        };
        cluster
            .api
            .put(CLUSTER_KEY, ClusterTurnKey::new("cloudflare", spec));
        cluster.token_secret("coturn", "secret", "north");
        cluster
    }

    /// A ClusterTurnKey `cloudflare` minting at `base_url` with `token`.
    fn cloudflare_key(&self, base_url: &str, token: &str) {
        let provider = CloudflareProvider {
            key_id: KEY_ID.into(),
            api_token_secret_ref: secret_key_ref("cf", "api-token"),
            base_url: Some(base_url.into()),
        };
        let spec = ClusterTurnKeySpec {
            cloudflare: Some(provider),
            shared_secret: None,
            namespace_selector: None,
        };
        self.api.put(CLUSTER_KEY, ClusterTurnKey::new("cloudflare", spec));
        self.token_secret("cf", "api-token", token);
    }

    /// A Secret `name` in toma-system holding `value` under `key`.
    fn token_secret(&self, name: &str, key: &str, value: &str) {
        let path = format!("/api/v1/namespaces/toma-system/secrets/{name}");
        self.api.put(&path, plain_secret(name, key, value));
    }
}

fn secret_key_ref(name: &str, key: &str) -> SecretKeyRef {
    SecretKeyRef {
        name: name.into(),
        key: key.into(),
        namespace: Some("toma-system".into()),
    }
}

/// A Secret nobody in particular owns.
fn plain_secret(name: &str, key: &str, value: &str) -> Secret {
    let mut secret = Secret {
        data: Some(BTreeMap::from([(
            key.into(),
            ByteString(value.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    };
    secret.metadata.name = Some(name.into());
    secret
}

async fn fake_cloudflare() -> fake_cloudflare::FakeCloudflare {
    let fake = fake_cloudflare::FakeCloudflare::start(fake_cloudflare::Config::default())
        .await
        .unwrap();
    fake.add_key(KEY_ID, "good-token");
    fake
}

fn requeue(seconds: u64) -> Action {
    Action::requeue(Duration::from_secs(seconds))
}
