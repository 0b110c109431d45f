//! Reconcile tests against a mocked API server: a tower service that answers from a small
//! in-memory set of objects and records every request, so tests assert what toma wrote.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};

use crate::api::{
    CloudflareProvider, ClusterTurnKey, ClusterTurnKeySpec, SecretKeyRef, SharedSecretProvider,
    TurnCredential,
};
use crate::cloudflare::CloudflareClient;
use crate::context::Context;
use crate::fixtures::{credential_at, turn_credential};
use crate::metrics::Metrics;
use crate::reconcile::reconcile;
use crate::secret::{self, desired_secret};

#[derive(Clone, Debug)]
struct Recorded {
    method: Method,
    path: String,
    body: Value,
}

/// Objects by API path, and every request seen.
#[derive(Default)]
struct World {
    objects: BTreeMap<String, Value>,
    requests: Vec<Recorded>,
    event_writers: Vec<crate::events::Writer>,
}

#[derive(Clone, Default)]
struct MockApi(Arc<Mutex<World>>);

impl MockApi {
    fn put(&self, path: &str, object: impl serde::Serialize) {
        self.0
            .lock()
            .unwrap()
            .objects
            .insert(path.into(), serde_json::to_value(object).unwrap());
    }

    fn requests(&self) -> Vec<Recorded> {
        self.0.lock().unwrap().requests.clone()
    }

    /// The Events written, once every context handed out is dropped and its Events written.
    async fn events(&self) -> Vec<Recorded> {
        let writers = std::mem::take(&mut self.0.lock().unwrap().event_writers);
        for writer in writers {
            assert!(
                writer.finish(Duration::from_secs(5)).await,
                "Events written once the context is dropped"
            );
        }
        self.writes_to(EVENTS)
    }

    fn writes_to(&self, path_prefix: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method != Method::GET && r.path.starts_with(path_prefix))
            .collect()
    }

    fn context(&self) -> Arc<Context> {
        let world = self.0.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let world = world.clone();
            async move {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let path = parts.uri.path().to_string();
                let mut world = world.lock().unwrap();
                world.requests.push(Recorded {
                    method: parts.method.clone(),
                    path: path.clone(),
                    body: body.clone(),
                });
                let (status, answer) = match parts.method {
                    Method::GET => match world.objects.get(&path) {
                        Some(object) => (StatusCode::OK, object.clone()),
                        None => (StatusCode::NOT_FOUND, not_found()),
                    },
                    Method::PATCH => {
                        let key = path.strip_suffix("/status").unwrap_or(&path).to_string();
                        let merged = merge(world.objects.get(&key).cloned(), body);
                        world.objects.insert(key, merged.clone());
                        (StatusCode::OK, merged)
                    }
                    _ => (StatusCode::CREATED, body),
                };
                let response = Response::builder()
                    .status(status)
                    .body(Body::from(answer.to_string().into_bytes()));
                Ok::<_, std::convert::Infallible>(response.unwrap())
            }
        });
        let client = Client::new(service, "default");
        let reporter = Reporter {
            controller: "toma".into(),
            instance: None,
        };
        let (events, writer) = crate::events::start(Recorder::new(client.clone(), reporter));
        self.0.lock().unwrap().event_writers.push(writer);
        Arc::new(Context {
            keys: Default::default(),
            echoes: Arc::new(crate::echoes::Echoes::new().0),
            cloudflare: CloudflareClient::new(Duration::from_secs(5)),
            events,
            metrics: Arc::new(Metrics::default()),
            client,
        })
    }
}

/// Stores the TurnCredential where the API server would, then reconciles it once.
async fn run(
    api: &MockApi,
    ctx: Arc<Context>,
    tc: TurnCredential,
) -> crate::Result<kube::runtime::controller::Action> {
    api.put("/apis/toma.dev/v1alpha1/namespaces/app/turncredentials/web", &tc);
    reconcile(Arc::new(tc), ctx).await
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
}

/// Good enough for these tests: top-level keys of the patch replace the object's.
fn merge(existing: Option<Value>, patch: Value) -> Value {
    let mut object = existing.unwrap_or_else(|| json!({}));
    if let (Some(target), Some(patch)) = (object.as_object_mut(), patch.as_object()) {
        for (k, v) in patch {
            target.insert(k.clone(), v.clone());
        }
    }
    object
}

const SECRETS: &str = "/api/v1/namespaces/app/secrets";
const CREDENTIAL_STATUS: &str = "/apis/toma.dev/v1alpha1/namespaces/app/turncredentials/web/status";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/app/events";

fn shared_secret_key(api: &MockApi) {
    let key = ClusterTurnKey::new(
        "cloudflare",
        ClusterTurnKeySpec {
            cloudflare: None,
            shared_secret: Some(SharedSecretProvider {
                secret_ref: SecretKeyRef {
                    name: "coturn".into(),
                    key: "secret".into(),
                    namespace: Some("toma-system".into()),
                },
                urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
                username_suffix: None,
            }),
        },
    );
    api.put("/apis/toma.dev/v1alpha1/clusterturnkeys/cloudflare", key);
    api.put(
        "/api/v1/namespaces/toma-system/secrets/coturn",
        token_secret("coturn", "secret", "north"),
    );
}

fn token_secret(name: &str, key: &str, value: &str) -> Secret {
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

fn status_of(request: &Recorded) -> &Value {
    &request.body["status"]
}

#[tokio::test]
async fn missing_secret_is_created_with_a_fresh_credential() {
    let api = MockApi::default();
    shared_secret_key(&api);
    let tc = turn_credential("web");

    let action = run(&api, api.context(), tc.clone()).await.unwrap();

    let applied = api.writes_to(&format!("{SECRETS}/web"));
    assert_eq!(applied.len(), 1, "one apply of the Secret");
    let secret: Secret = serde_json::from_value(applied[0].body.clone()).unwrap();
    assert!(secret::is_owned_by(&secret, &tc));
    let credential = secret::stored_credential(&secret).expect("a credential toma can read back");
    assert!(
        credential.turn_pair().unwrap().0.parse::<i64>().is_ok(),
        "shared-secret username is the expiry"
    );

    let statuses = api.writes_to(CREDENTIAL_STATUS);
    assert_eq!(statuses.len(), 1);
    assert_eq!(status_of(&statuses[0])["conditions"][0]["reason"], "Issued");
    assert_eq!(status_of(&statuses[0])["rotations"], 1);
    let events = api.events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].body["reason"], "Issued");
    // Renewal at two thirds of a day, give or take the jitter, capped by the hourly resync.
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(3600))
    );
}

#[tokio::test]
async fn restart_with_valid_credential_mints_nothing() {
    let api = MockApi::default();
    let mut tc = turn_credential("web");
    let now = jiff::Timestamp::now().as_second();
    let credential = credential_at(now - 60, 86_400);
    api.put(&format!("{SECRETS}/web"), desired_secret(&tc, &credential, 1));
    // The status as toma left it, so nothing needs writing either.
    let renewal = crate::schedule::renewal_time(
        credential.issued_at,
        credential.expires_at,
        tc.renew_before_seconds(),
        "uid-1",
    );
    let status = crate::status::issued(&tc, &credential, renewal, 1, credential.issued_at);
    tc.status = Some(status);

    run(&api, api.context(), tc).await.unwrap();

    let requests = api.requests();
    assert_eq!(requests.len(), 1, "only the Secret is read: {requests:?}");
    assert_eq!(
        (requests[0].method.clone(), requests[0].path.as_str()),
        (Method::GET, format!("{SECRETS}/web").as_str())
    );
}

#[tokio::test]
async fn foreign_secret_is_not_overwritten() {
    let api = MockApi::default();
    shared_secret_key(&api);
    api.put(
        &format!("{SECRETS}/web"),
        token_secret("web", "password", "hunter2"),
    );

    run(&api, api.context(), turn_credential("web")).await.unwrap();

    assert!(
        api.writes_to(SECRETS).is_empty(),
        "the foreign Secret was written"
    );
    let statuses = api.writes_to(CREDENTIAL_STATUS);
    assert_eq!(status_of(&statuses[0])["conditions"][0]["status"], "False");
    assert_eq!(
        status_of(&statuses[0])["conditions"][0]["reason"],
        "SecretConflict"
    );
    assert_eq!(api.events().await[0].body["reason"], "SecretConflict");
}

#[tokio::test]
async fn tampered_secret_is_repaired_with_a_new_credential() {
    let api = MockApi::default();
    shared_secret_key(&api);
    let tc = turn_credential("web");
    let now = jiff::Timestamp::now().as_second();
    let mut secret = desired_secret(&tc, &credential_at(now - 60, 86_400), 1);
    secret
        .data
        .as_mut()
        .unwrap()
        .insert("credential".into(), ByteString(b"edited".to_vec()));
    api.put(&format!("{SECRETS}/web"), secret);

    run(&api, api.context(), tc.clone()).await.unwrap();

    let applied = api.writes_to(&format!("{SECRETS}/web"));
    assert_eq!(applied.len(), 1);
    let repaired: Secret = serde_json::from_value(applied[0].body.clone()).unwrap();
    assert!(secret::stored_credential(&repaired).is_some());
    assert_eq!(api.events().await[0].body["reason"], "Rotated");
}

#[tokio::test]
async fn missing_key_sets_key_not_found_and_keeps_the_secret() {
    let api = MockApi::default();
    let mut tc = turn_credential("web");
    tc.spec.ttl_seconds = 600; // a changed minting field: a new credential is due
    let now = jiff::Timestamp::now().as_second();
    let old = credential_at(now - 60, 86_400);
    api.put(
        &format!("{SECRETS}/web"),
        desired_secret(&turn_credential("web"), &old, 1),
    );

    let action = run(&api, api.context(), tc).await.unwrap();

    assert!(api.writes_to(SECRETS).is_empty(), "the Secret was touched");
    let status = status_of(&api.writes_to(CREDENTIAL_STATUS)[0]).clone();
    assert_eq!(status["conditions"][0]["reason"], "KeyNotFound");
    assert!(
        status["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .contains("ClusterTurnKey cloudflare not found")
    );
    assert_eq!(status["expiresAt"], json!(old.expires_at.to_string()));
    assert_eq!(status["failures"], 1);
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(5))
    );
}

#[tokio::test]
async fn missing_token_key_sets_token_not_found() {
    let api = MockApi::default();
    shared_secret_key(&api);
    api.put(
        "/api/v1/namespaces/toma-system/secrets/coturn",
        token_secret("coturn", "other-key", "x"),
    );

    run(&api, api.context(), turn_credential("web")).await.unwrap();

    let status = status_of(&api.writes_to(CREDENTIAL_STATUS)[0]).clone();
    assert_eq!(status["conditions"][0]["reason"], "TokenNotFound");
    assert!(
        status["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .contains("has no non-empty key secret")
    );
}

#[tokio::test]
async fn repeated_failure_emits_no_second_event() {
    let api = MockApi::default();
    let tc = turn_credential("web");
    let ctx = api.context();
    run(&api, ctx.clone(), tc.clone()).await.unwrap();
    let mut after_first = tc.clone();
    after_first.status =
        serde_json::from_value(status_of(&api.writes_to(CREDENTIAL_STATUS)[0]).clone()).unwrap();

    let action = run(&api, ctx, after_first).await.unwrap();

    assert_eq!(api.events().await.len(), 1, "one Event per transition");
    assert_eq!(status_of(&api.writes_to(CREDENTIAL_STATUS)[1])["failures"], 2);
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(10)),
        "backoff doubled"
    );
}

fn cloudflare_key(api: &MockApi, base_url: &str, token: &str) {
    let key = ClusterTurnKey::new(
        "cloudflare",
        ClusterTurnKeySpec {
            cloudflare: Some(CloudflareProvider {
                key_id: "0123456789abcdef0123456789abcdef".into(),
                api_token_secret_ref: SecretKeyRef {
                    name: "cf".into(),
                    key: "api-token".into(),
                    namespace: Some("toma-system".into()),
                },
                base_url: Some(base_url.into()),
            }),
            shared_secret: None,
        },
    );
    api.put("/apis/toma.dev/v1alpha1/clusterturnkeys/cloudflare", key);
    api.put(
        "/api/v1/namespaces/toma-system/secrets/cf",
        token_secret("cf", "api-token", token),
    );
}

async fn fake_cloudflare() -> fake_cloudflare::FakeCloudflare {
    let fake = fake_cloudflare::FakeCloudflare::start(fake_cloudflare::Config::default())
        .await
        .unwrap();
    fake.add_key("0123456789abcdef0123456789abcdef", "good-token");
    fake
}

#[tokio::test]
async fn cloudflare_mint_writes_the_ice_servers_it_answered() {
    let fake = fake_cloudflare().await;
    let api = MockApi::default();
    cloudflare_key(&api, &fake.base_url(), "good-token\n");

    run(&api, api.context(), turn_credential("web")).await.unwrap();

    let mints = fake.mints();
    assert_eq!(mints.len(), 1, "exactly one mint");
    assert_eq!(mints[0].ttl, 86_400);
    let secret: Secret =
        serde_json::from_value(api.writes_to(&format!("{SECRETS}/web"))[0].body.clone()).unwrap();
    let credential = secret::stored_credential(&secret).unwrap();
    assert_eq!(
        credential.turn_pair(),
        Some((mints[0].username.as_str(), mints[0].credential.as_str()))
    );
}

#[tokio::test]
async fn wrong_token_sets_unauthorized_without_leaking_the_token() {
    let fake = fake_cloudflare().await;
    let api = MockApi::default();
    cloudflare_key(&api, &fake.base_url(), "wrong-token-value");

    run(&api, api.context(), turn_credential("web")).await.unwrap();

    assert!(api.writes_to(SECRETS).is_empty());
    let status = status_of(&api.writes_to(CREDENTIAL_STATUS)[0]).clone();
    assert_eq!(status["conditions"][0]["reason"], "Unauthorized");
    let everything_written = format!("{:?}", api.requests());
    assert!(
        !everything_written.contains("wrong-token-value"),
        "the token reached the API server"
    );
}

#[tokio::test]
async fn rate_limit_requeues_after_retry_after() {
    let fake = fake_cloudflare().await;
    fake.set_fault(fake_cloudflare::Fault::RateLimited {
        retry_after: Some(42),
    });
    let api = MockApi::default();
    cloudflare_key(&api, &fake.base_url(), "good-token");

    let action = run(&api, api.context(), turn_credential("web")).await.unwrap();

    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(42))
    );
    let status = status_of(&api.writes_to(CREDENTIAL_STATUS)[0]).clone();
    assert_eq!(status["conditions"][0]["reason"], "RateLimited");
}

#[tokio::test]
async fn malformed_answer_sets_invalid_response() {
    let fake = fake_cloudflare().await;
    fake.set_fault(fake_cloudflare::Fault::Malformed);
    let api = MockApi::default();
    cloudflare_key(&api, &fake.base_url(), "good-token");

    run(&api, api.context(), turn_credential("web")).await.unwrap();

    assert!(api.writes_to(SECRETS).is_empty());
    let status = status_of(&api.writes_to(CREDENTIAL_STATUS)[0]).clone();
    assert_eq!(status["conditions"][0]["reason"], "InvalidResponse");
}

#[tokio::test]
async fn unknown_key_id_sets_key_not_found() {
    let fake = fake_cloudflare::FakeCloudflare::start(fake_cloudflare::Config::default())
        .await
        .unwrap();
    let api = MockApi::default();
    cloudflare_key(&api, &fake.base_url(), "good-token");

    run(&api, api.context(), turn_credential("web")).await.unwrap();

    let status = status_of(&api.writes_to(CREDENTIAL_STATUS)[0]).clone();
    assert_eq!(status["conditions"][0]["reason"], "KeyNotFound");
    assert!(
        status["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .contains("does not know TURN key ID")
    );
}

#[tokio::test]
async fn deleting_with_revoke_on_delete_revokes_and_releases_the_finalizer() {
    let fake = fake_cloudflare().await;
    let api = MockApi::default();
    cloudflare_key(&api, &fake.base_url(), "good-token");
    let mut tc = turn_credential("web");
    tc.spec.revoke_on_delete = true;
    let ctx = api.context();
    run(&api, ctx.clone(), tc.clone()).await.unwrap();
    let finalizer_patch = api.writes_to("/apis/toma.dev/v1alpha1/namespaces/app/turncredentials/web");
    assert_eq!(
        finalizer_patch[0].body["metadata"]["finalizers"],
        json!(["toma.dev/revoke"])
    );

    tc.metadata.finalizers = Some(vec!["toma.dev/revoke".into()]);
    tc.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::now(),
    ));
    run(&api, ctx, tc).await.unwrap();

    assert_eq!(fake.revoked(), vec![fake.mints()[0].username.clone()]);
    let last = api
        .writes_to("/apis/toma.dev/v1alpha1/namespaces/app/turncredentials/web")
        .pop()
        .unwrap();
    assert_eq!(last.body["metadata"]["finalizers"], json!([]));
}

#[tokio::test]
async fn a_stale_status_does_not_undo_the_rotation_count() {
    let api = MockApi::default();
    let tc = turn_credential("web"); // as the watch cache may still show it: no status yet
    let now = jiff::Timestamp::now().as_second();
    api.put(
        &format!("{SECRETS}/web"),
        desired_secret(&tc, &credential_at(now - 60, 86_400), 3),
    );

    run(&api, api.context(), tc).await.unwrap();

    assert!(api.writes_to(SECRETS).is_empty(), "nothing to mint or rewrite");
    assert_eq!(status_of(&api.writes_to(CREDENTIAL_STATUS)[0])["rotations"], 3);
}

#[tokio::test]
async fn reconciling_an_up_to_date_credential_again_writes_nothing() {
    let api = MockApi::default();
    shared_secret_key(&api);
    let ctx = api.context();
    run(&api, ctx.clone(), turn_credential("web")).await.unwrap();
    // The TurnCredential as the API server now holds it, times in whole seconds.
    let stored: TurnCredential = serde_json::from_value(
        api.0.lock().unwrap().objects["/apis/toma.dev/v1alpha1/namespaces/app/turncredentials/web"].clone(),
    )
    .unwrap();
    // Events are written in the background; they are counted once both reconciles are done.
    let writes = |api: &MockApi| {
        api.requests()
            .iter()
            .filter(|r| r.method != Method::GET && !r.path.starts_with(EVENTS))
            .count()
    };
    let before = writes(&api);

    run(&api, ctx, stored).await.unwrap();

    assert_eq!(writes(&api), before, "a second reconcile wrote again");
    assert_eq!(api.events().await.len(), 1, "the Issued Event only");
}

#[tokio::test]
async fn credentials_minted_together_read_their_key_once() {
    let api = MockApi::default();
    shared_secret_key(&api);
    let ctx = api.context();
    for name in ["a", "b", "c"] {
        let mut tc = turn_credential(name);
        tc.metadata.uid = Some(format!("uid-{name}"));
        api.put(
            &format!("/apis/toma.dev/v1alpha1/namespaces/app/turncredentials/{name}"),
            &tc,
        );
        reconcile(Arc::new(tc), ctx.clone()).await.unwrap();
    }

    let key_reads = api
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/clusterturnkeys/cloudflare"))
        .count();
    assert_eq!(key_reads, 1);
    assert_eq!(api.writes_to(SECRETS).len(), 3);
}
