//! Wiring the reconcile into a kube-runtime Controller.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};

use crate::api::{KeyKind, KeyName, TurnCredential};
use crate::context::Context;
use crate::events;
use crate::key_resolver::KeyResolver;
use crate::key_watch::{self, Change};
use crate::known_secrets::KnownSecrets;
use crate::metrics::{CredentialLabels, Metrics};
use crate::own_writes::OwnWrites;
use crate::provider::Providers;
use crate::provider::rate_limit::Rate;
use crate::reconcile::{error_policy, reconcile};
use crate::secret::{MANAGED_BY, MANAGED_BY_LABEL};

pub struct Settings {
    /// Watch one namespace only; None watches the whole cluster.
    pub namespace: Option<String>,
    pub concurrency: u16,
    pub provider_timeout: std::time::Duration,
    /// Each key's limit on requests to the provider; None for none.
    pub mint_rate: Option<Rate>,
    /// Names this instance in Events.
    pub instance: Option<String>,
}

/// Re-watches soon after an API server outage: waits double from 0.5 s to at most 5 s (with
/// jitter) and start over after any success. kube's default grows to 30 s and resets only after
/// two quiet minutes, which left toma deaf for a minute after a 15 s outage.
pub(crate) struct WatchBackoff {
    next: Duration,
}

const FIRST_REWATCH: Duration = Duration::from_millis(500);
const MAX_REWATCH: Duration = Duration::from_secs(5);
/// How long a stopping toma waits for queued Events to be written.
const EVENT_FLUSH: Duration = Duration::from_secs(3);

pub(crate) fn watch_backoff() -> WatchBackoff {
    WatchBackoff { next: FIRST_REWATCH }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = (delay * 2).min(MAX_REWATCH);
        Some(delay.mul_f64(rand::random_range(0.75..1.25)))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = FIRST_REWATCH;
    }
}

/// What calls for a reconcile: the spec (generation), the annotations (a rotate request) and
/// deletion. toma's own status writes change none of these, so it never wakes itself up.
fn reconcile_worthy(tc: &TurnCredential) -> Option<u64> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    tc.metadata.generation.hash(&mut hasher);
    tc.metadata.annotations.hash(&mut hasher);
    tc.metadata.deletion_timestamp.is_some().hash(&mut hasher);
    Some(hasher.finish())
}

/// Changes to toma's Secrets that call for a reconcile of their TurnCredential (see
/// [`SecretWakes`]). Secrets are watched metadata-only and only when labelled as toma's: their
/// contents never stream into toma, and other Secrets cost nothing.
fn secret_changes(
    secrets: Api<PartialObjectMeta<Secret>>,
    own_writes: Arc<OwnWrites>,
    known: Arc<KnownSecrets>,
) -> impl Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> {
    let owned = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    let mut wakes = SecretWakes::default();
    watcher(secrets, owned).try_filter_map(move |event| {
        known.observe(&event);
        std::future::ready(Ok(wakes.wakes(event, &own_writes)))
    })
}

/// Which events of toma's Secrets wake their TurnCredential: all but the echoes of toma's own
/// writes and the first list. At start-up every TurnCredential is reconciled anyway, so the
/// first list would only reconcile some of them twice; a later list (the watch started over)
/// may show changes missed meanwhile, so it wakes them.
#[derive(Default)]
struct SecretWakes {
    listed: bool,
}

impl SecretWakes {
    fn wakes(
        &mut self,
        event: watcher::Event<PartialObjectMeta<Secret>>,
        own_writes: &OwnWrites,
    ) -> Option<PartialObjectMeta<Secret>> {
        match event {
            watcher::Event::Apply(secret) if !own_writes.is_change(&secret) => None,
            watcher::Event::Apply(secret) => Some(secret),
            watcher::Event::InitApply(secret) => self.listed.then_some(secret),
            watcher::Event::Delete(secret) => {
                own_writes.forget(&secret);
                Some(secret)
            }
            watcher::Event::InitDone => {
                self.listed = true;
                None
            }
            watcher::Event::Init => None,
        }
    }
}

/// Secrets, as metadata only: kube asks the API server for `PartialObjectMetadata`.
fn secrets_metadata(client: &Client, namespace: Option<&str>) -> Api<PartialObjectMeta<Secret>> {
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The TurnCredentials that `change` concerns.
fn affected(credentials: &Store<TurnCredential>, change: &Change) -> Vec<ObjectRef<TurnCredential>> {
    let concerned = |tc: &TurnCredential| match change {
        Change::Key(key) => KeyName::of(tc) == *key,
        Change::Namespace(namespace) => {
            tc.spec.key_ref.kind == KeyKind::ClusterTurnKey && tc.namespace().as_ref() == Some(namespace)
        }
    };
    credentials
        .state()
        .iter()
        .filter(|tc| concerned(tc))
        .map(|tc| ObjectRef::from_obj(&**tc))
        .collect()
}

#[derive(Debug, thiserror::Error)]
#[error("TurnCredentials cannot be listed ({0}); are the CRDs installed and may toma list them?")]
pub struct NotQueryable(#[source] kube::Error);

/// Runs the controller until `shutdown` resolves, then lets in-flight reconciles finish.
/// `synced` turns true once the first list of TurnCredentials has been read.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    synced: Arc<AtomicBool>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), NotQueryable> {
    let credentials = match &settings.namespace {
        Some(ns) => Api::<TurnCredential>::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let secrets = secrets_metadata(&client, settings.namespace.as_deref());
    credentials
        .list(&ListParams::default().limit(1))
        .await
        .map_err(NotQueryable)?;

    let (reader, writer) = reflector::store();
    let trigger = watcher(credentials, watcher::Config::default().any_semantic())
        .backoff(watch_backoff())
        // toma never reads managedFields; dropping them before the store keeps a large
        // cluster's TurnCredentials in a fraction of the memory.
        .modify(|tc| tc.managed_fields_mut().clear())
        .reflect(writer)
        // Readiness comes from the stream itself: the store's wait_until_ready wakes only
        // one waiter, and the controller is already that one.
        .inspect_ok(move |event| {
            if matches!(event, watcher::Event::InitDone) && !synced.swap(true, Ordering::Relaxed) {
                info!("TurnCredentials listed; ready");
            }
        })
        .applied_objects()
        .predicate_filter(reconcile_worthy, Default::default());

    let reporter = Reporter {
        controller: "toma".into(),
        instance: settings.instance.clone(),
    };
    let (events, event_writer) = events::start(Recorder::new(client.clone(), reporter));
    let (own_writes, woken_by_secret_changes) = OwnWrites::new();
    let own_writes = Arc::new(own_writes);
    let keys = Arc::new(KeyResolver::default());
    let credentials_store = reader.clone();
    let woken_by_key_changes = key_watch::changes(client.clone(), settings.namespace.clone(), keys.clone())
        .flat_map(move |change| futures::stream::iter(affected(&credentials_store, &change)));
    let known_secrets = Arc::new(KnownSecrets::default());
    let ctx = Arc::new(Context {
        keys,
        known_secrets: known_secrets.clone(),
        own_writes: own_writes.clone(),
        restarts: Default::default(),
        providers: Providers::new(settings.provider_timeout, settings.mint_rate, metrics.clone()),
        events,
        metrics: metrics.clone(),
        client,
    });
    Controller::for_stream(trigger, reader)
        .owns_stream(secret_changes(secrets, own_writes, known_secrets))
        .reconcile_on(woken_by_secret_changes)
        .reconcile_on(woken_by_key_changes)
        .trigger_backoff(watch_backoff())
        .with_config(ControllerConfig::default().concurrency(settings.concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            match result {
                Ok(_) => {}
                // A deleted TurnCredential: drop its per-credential series.
                Err(controller::Error::ObjectNotFound(object)) => {
                    metrics.forget_credential(&CredentialLabels::from(&*object))
                }
                Err(controller::Error::ReconcilerFailed(..)) => {} // logged by error_policy
                Err(other) => warn!(error = %other, "controller"),
            }
            std::future::ready(())
        })
        .await;
    // The controller, and with it every sender of Events, is gone: write what is still queued.
    if !event_writer.finish(EVENT_FLUSH).await {
        warn!("stopped before every queued Event was written");
    }
    info!("controller stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::mock_api::MockApi;

    #[tokio::test]
    async fn toma_watches_only_its_own_secrets_and_only_their_metadata() {
        // A cluster full of other Secrets costs toma nothing only while both hold.
        let api = MockApi::default();
        let own_writes = Arc::new(OwnWrites::new().0);
        let changes = secret_changes(
            secrets_metadata(&api.client(), None),
            own_writes,
            Default::default(),
        );
        futures::pin_mut!(changes);

        let _ = changes.next().await; // the mock has no list to give: an error, after the request

        let list = &api.requests()[0];
        assert_eq!(list.path, "/api/v1/secrets");
        assert!(
            list.query
                .contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dtoma"),
            "{}",
            list.query
        );
        assert!(
            list.accept.contains("as=PartialObjectMetadata"),
            "{}",
            list.accept
        );
    }

    #[test]
    fn a_key_change_wakes_its_users_and_a_namespace_change_those_on_cluster_keys_there() {
        use crate::api::KeyRef;
        let credential = |namespace: &str, name: &str, kind: KeyKind, key: &str| {
            let mut tc = crate::fixtures::turn_credential(name);
            tc.metadata.namespace = Some(namespace.into());
            tc.spec.key_ref = KeyRef {
                kind,
                name: key.into(),
            };
            tc
        };
        let (reader, mut writer) = reflector::store();
        for tc in [
            credential("app", "web", KeyKind::ClusterTurnKey, "cf"),
            credential("app", "local", KeyKind::TurnKey, "cf"),
            credential("other", "web", KeyKind::ClusterTurnKey, "cf"),
            credential("other", "beta", KeyKind::ClusterTurnKey, "beta"),
            credential("other", "local", KeyKind::TurnKey, "cf"),
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(tc));
        }
        let woken = |change: Change| {
            let mut names: Vec<String> = affected(&reader, &change)
                .iter()
                .map(|r| format!("{}/{}", r.namespace.as_deref().unwrap_or_default(), r.name))
                .collect();
            names.sort();
            names
        };
        let cluster_key = Change::Key(KeyName {
            kind: KeyKind::ClusterTurnKey,
            namespace: None,
            name: "cf".into(),
        });
        assert_eq!(woken(cluster_key), ["app/web", "other/web"]);
        // A TurnKey of one namespace is not its namesake in another.
        let turn_key = Change::Key(KeyName {
            kind: KeyKind::TurnKey,
            namespace: Some("other".into()),
            name: "cf".into(),
        });
        assert_eq!(woken(turn_key), ["other/local"]);
        assert_eq!(
            woken(Change::Namespace("other".into())),
            ["other/beta", "other/web"]
        );
    }

    #[test]
    fn rewatching_waits_at_most_five_seconds_and_starts_over_after_a_success() {
        let mut backoff = watch_backoff();
        let delays: Vec<Duration> = (&mut backoff).take(8).collect();
        assert!(delays[0] <= Duration::from_millis(625));
        assert!(delays.iter().all(|d| *d <= MAX_REWATCH.mul_f64(1.25)));
        assert!(delays[7] >= MAX_REWATCH.mul_f64(0.75));
        backoff.reset();
        assert!(backoff.next().unwrap() <= Duration::from_millis(625));
    }

    #[test]
    fn the_first_list_of_secrets_wakes_nothing_and_a_later_list_wakes_what_it_lists() {
        use watcher::Event::{Apply, Delete, Init, InitApply, InitDone};
        let own_writes = OwnWrites::new().0;
        let mut wakes = SecretWakes::default();
        let secret = || {
            let mut secret = PartialObjectMeta::<Secret>::default();
            secret.metadata.name = Some("web".into());
            secret.metadata.namespace = Some("app".into());
            secret
        };
        let mut woken = |event| wakes.wakes(event, &own_writes).is_some();

        assert!(!woken(Init));
        assert!(!woken(InitApply(secret())), "the first list");
        assert!(!woken(InitDone));
        assert!(woken(Apply(secret())), "an edit");
        assert!(woken(Delete(secret())));
        // The watch starts over: what it lists may have changed meanwhile.
        assert!(!woken(Init));
        assert!(woken(InitApply(secret())), "a later list");
    }
}
