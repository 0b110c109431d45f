//! Watching what keys are made of: TurnKeys, ClusterTurnKeys, the Secrets that hold their tokens,
//! and the labels of namespaces (for ClusterTurnKeys' `namespaceSelector`). A change drops the
//! cached key and wakes the TurnCredentials that use it, so a fixed key takes effect within
//! seconds and a changed one re-mints (spread by the reconcile, see `reconcile::check_key`).
//!
//! - Keys are watched whole: they are small and few.
//! - Token Secrets are watched one by one, metadata only, with a field selector on the name, so
//!   no other Secret streams into toma. A Secret's watch starts when a key names it and stops
//!   when none does.
//! - What toma first lists is taken as it is: at start-up every TurnCredential is reconciled
//!   anyway. After that, anything new or changed is a change; a watch that starts over and lists
//!   something other than it knew is one too.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use futures::stream::{AbortHandle, BoxStream, SelectAll, abortable};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde::Serialize;
use tracing::{debug, warn};

use crate::api::{ClusterTurnKey, KeyKind, KeyName, TurnKey};
use crate::controller::watch_backoff;
use crate::key_resolver::{KeyParts, KeyResolver};

/// What changed, for the controller to wake the TurnCredentials concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The key, or the Secret it reads, changed: wake the TurnCredentials that name it.
    Key(KeyName),
    /// The namespace's labels changed: wake its TurnCredentials that use a ClusterTurnKey.
    Namespace(String),
}

/// The changes to keys that toma can see. With `namespace`, TurnKeys there and that namespace's
/// labels; otherwise every TurnKey and every namespace. ClusterTurnKeys either way. A kind toma
/// may not watch (namespaced mode grants no ClusterTurnKeys or namespaces) is left unwatched,
/// with one warning: a change to it takes effect at the next retry.
pub fn changes(
    client: Client,
    namespace: Option<String>,
    keys: Arc<KeyResolver>,
) -> impl Stream<Item = Change> + Send {
    let mut watch = KeyWatch {
        client: Some(client.clone()),
        keys,
        ..KeyWatch::default()
    };
    let (turn_keys, namespaces) = match &namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            watcher::Config::default().fields(&format!("metadata.name={ns}")),
        ),
        None => (Api::all(client.clone()), watcher::Config::default()),
    };
    watch.add_source(TurnKey::KIND, watch_keys::<TurnKey>(turn_keys));
    watch.add_source(
        ClusterTurnKey::KIND,
        watch_keys::<ClusterTurnKey>(Api::all(client.clone())),
    );
    let namespaces = watcher(Api::<PartialObjectMeta<Namespace>>::all(client), namespaces)
        .backoff(watch_backoff())
        .map(Observed::Namespace)
        .boxed();
    watch.add_source(NAMESPACE, namespaces);
    futures::stream::unfold(watch, |mut watch| async move {
        loop {
            if let Some(change) = watch.ready.pop() {
                return Some((change, watch));
            }
            let observed = watch.sources.next().await?;
            watch.observe(observed);
        }
    })
}

const NAMESPACE: &str = "Namespace";

/// Whether the API server refused the watch for want of permission.
fn is_forbidden(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 403,
        watcher::Error::WatchError(status) => status.code == 403,
        _ => false,
    }
}

/// A key as the watch sees it: its name, the Secret it reads, and a hash of its spec.
struct SeenKey {
    name: KeyName,
    secret: Option<ObjectRef<Secret>>,
    spec: u64,
}

/// TurnKeys and ClusterTurnKeys, seen alike.
trait WatchedKey:
    kube::Resource<DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    const KIND: &'static str;
    fn seen(&self) -> SeenKey;
}

impl WatchedKey for TurnKey {
    const KIND: &'static str = "TurnKey";
    fn seen(&self) -> SeenKey {
        SeenKey {
            name: KeyName {
                kind: KeyKind::TurnKey,
                namespace: self.namespace(),
                name: self.name_any(),
            },
            secret: KeyParts::of_turn_key(self).token_secret(),
            spec: hash_of(&self.spec),
        }
    }
}

impl WatchedKey for ClusterTurnKey {
    const KIND: &'static str = "ClusterTurnKey";
    fn seen(&self) -> SeenKey {
        SeenKey {
            name: KeyName {
                kind: KeyKind::ClusterTurnKey,
                namespace: None,
                name: self.name_any(),
            },
            secret: KeyParts::of_cluster_turn_key(self).token_secret(),
            spec: hash_of(&self.spec),
        }
    }
}

fn watch_keys<K: WatchedKey>(api: Api<K>) -> BoxStream<'static, Observed> {
    watcher(api, watcher::Config::default())
        .backoff(watch_backoff())
        .map(|event| Observed::Key(K::KIND, event.map(seen)))
        .boxed()
}

fn seen<K: WatchedKey>(event: watcher::Event<K>) -> watcher::Event<SeenKey> {
    match event {
        watcher::Event::Apply(key) => watcher::Event::Apply(key.seen()),
        watcher::Event::Delete(key) => watcher::Event::Delete(key.seen()),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(key) => watcher::Event::InitApply(key.seen()),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

fn hash_of(value: &impl Serialize) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(value)
        .expect("a spec serializes to JSON")
        .hash(&mut hasher);
    hasher.finish()
}

enum Observed {
    /// From the watch of one kind of key (TurnKey or ClusterTurnKey).
    Key(&'static str, watcher::Result<watcher::Event<SeenKey>>),
    Secret(
        ObjectRef<Secret>,
        watcher::Result<watcher::Event<PartialObjectMeta<Secret>>>,
    ),
    Namespace(watcher::Result<watcher::Event<PartialObjectMeta<Namespace>>>),
}

#[derive(Default)]
struct KeyWatch {
    /// None only in unit tests, where no Secret is watched.
    client: Option<Client>,
    keys: Arc<KeyResolver>,
    sources: SelectAll<BoxStream<'static, Observed>>,
    /// Stops the watch of each kind: TurnKey, ClusterTurnKey, Namespace.
    stops: HashMap<&'static str, AbortHandle>,
    /// Changes not yet handed on.
    ready: Vec<Change>,
    /// Each key's spec hash and the Secret it reads.
    known: HashMap<KeyName, (u64, Option<ObjectRef<Secret>>)>,
    /// The kinds of key whose first list is done.
    listed: Vec<&'static str>,
    secrets: HashMap<ObjectRef<Secret>, SecretWatch>,
    /// Whether namespaces have been listed once, and what their first list has found so far.
    namespaces_listed: bool,
    namespace_listing: Option<HashMap<String, BTreeMap<String, String>>>,
}

/// The watch of one token Secret.
struct SecretWatch {
    stop: AbortHandle,
    /// The API server refused it: not tried again while a key names the Secret.
    forbidden: bool,
    /// The resourceVersion last seen (None: absent); None until the first list is done.
    last: Option<Option<String>>,
    /// What the list under way has found so far.
    listing: Option<Option<String>>,
}

impl KeyWatch {
    fn add_source(&mut self, what: &'static str, events: BoxStream<'static, Observed>) {
        let (events, stop) = abortable(events);
        self.sources.push(events.boxed());
        self.stops.insert(what, stop);
    }

    fn observe(&mut self, observed: Observed) {
        match observed {
            Observed::Key(kind, Ok(event)) => self.key_event(kind, event),
            Observed::Secret(secret, Ok(event)) => self.secret_event(&secret, event),
            Observed::Namespace(Ok(event)) => self.namespace_event(event),
            Observed::Key(kind, Err(error)) => self.failed(kind, &error),
            Observed::Namespace(Err(error)) => self.failed(NAMESPACE, &error),
            Observed::Secret(secret, Err(error)) => match self.secrets.get_mut(&secret) {
                Some(watch) if is_forbidden(&error) && !watch.forbidden => {
                    watch.forbidden = true;
                    watch.stop.abort();
                    warn!(%error, secret = %secret, "toma may not watch this key's Secret; a change to it takes effect at the next retry");
                }
                _ => warn!(%error, secret = %secret, "watching a key's Secret"),
            },
        }
    }

    /// The watch of `what` failed; it tries again, unless it was refused.
    fn failed(&mut self, what: &'static str, error: &watcher::Error) {
        if !is_forbidden(error) {
            warn!(%error, "watching {what}s");
        } else if let Some(stop) = self.stops.remove(what) {
            stop.abort();
            warn!(%error, "toma may not watch {what}s; a change to one takes effect at the next retry");
        }
    }

    fn key_event(&mut self, kind: &'static str, event: watcher::Event<SeenKey>) {
        let listed = self.listed.contains(&kind);
        match event {
            // Starting over: changes may have been missed meanwhile.
            watcher::Event::Init if listed => self.keys.forget_all(),
            watcher::Event::Init => {}
            watcher::Event::InitApply(key) => self.key_seen(key, listed),
            watcher::Event::Apply(key) => self.key_seen(key, true),
            watcher::Event::InitDone => self.listed.push(kind),
            watcher::Event::Delete(key) => {
                self.known.remove(&key.name);
                self.keys.deleted(&key.name);
                self.changed(key.name);
                self.stop_unused_secret_watches();
            }
        }
    }

    /// `key` as listed or changed; `new_is_change` says whether a key not known before counts as
    /// a change (not in the first list).
    fn key_seen(&mut self, key: SeenKey, new_is_change: bool) {
        let before = self
            .known
            .insert(key.name.clone(), (key.spec, key.secret.clone()));
        let changed = match &before {
            Some((spec, _)) => *spec != key.spec,
            None => new_is_change,
        };
        if let Some(secret) = key.secret {
            self.watch_secret(secret);
        }
        self.stop_unused_secret_watches();
        if changed {
            self.changed(key.name);
        }
    }

    fn watch_secret(&mut self, secret: ObjectRef<Secret>) {
        if self.secrets.contains_key(&secret) {
            return;
        }
        let stop = match &self.client {
            Some(client) => {
                let namespace = secret.namespace.clone().unwrap_or_default();
                let only_it = watcher::Config::default().fields(&format!("metadata.name={}", secret.name));
                let api = Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), &namespace);
                let (events, stop) = abortable(watcher(api, only_it).backoff(watch_backoff()));
                let observed = secret.clone();
                self.sources
                    .push(events.map(move |e| Observed::Secret(observed.clone(), e)).boxed());
                stop
            }
            None => AbortHandle::new_pair().0,
        };
        debug!(secret = %secret, "watching a key's Secret");
        self.secrets.insert(
            secret,
            SecretWatch {
                stop,
                forbidden: false,
                last: None,
                listing: None,
            },
        );
    }

    fn stop_unused_secret_watches(&mut self) {
        let known = &self.known;
        self.secrets.retain(|secret, watch| {
            let used = known.values().any(|(_, s)| s.as_ref() == Some(secret));
            if !used {
                watch.stop.abort();
            }
            used
        });
    }

    fn secret_event(&mut self, secret: &ObjectRef<Secret>, event: watcher::Event<PartialObjectMeta<Secret>>) {
        let Some(watch) = self.secrets.get_mut(secret) else {
            return; // no key names it any more
        };
        let version = match event {
            watcher::Event::Init => {
                watch.listing = Some(None);
                return;
            }
            watcher::Event::InitApply(found) => {
                watch.listing = Some(found.resource_version());
                return;
            }
            watcher::Event::InitDone => watch.listing.take().flatten(),
            watcher::Event::Apply(found) => found.resource_version(),
            watcher::Event::Delete(_) => None,
        };
        let before = watch.last.replace(version.clone());
        if before.is_some_and(|before| before != version) {
            let users: Vec<KeyName> = self
                .known
                .iter()
                .filter(|(_, (_, s))| s.as_ref() == Some(secret))
                .map(|(name, _)| name.clone())
                .collect();
            for key in users {
                self.changed(key);
            }
        }
    }

    /// Namespaces' labels go to the resolver, which checks `namespaceSelector` against them.
    fn namespace_event(&mut self, event: watcher::Event<PartialObjectMeta<Namespace>>) {
        match event {
            watcher::Event::Init if !self.namespaces_listed => self.namespace_listing = Some(HashMap::new()),
            watcher::Event::Init => {}
            watcher::Event::InitApply(ns) | watcher::Event::Apply(ns) => {
                let name = ns.name_any();
                if let Some(listing) = &mut self.namespace_listing {
                    listing.insert(name, ns.labels().clone());
                } else if self.keys.namespace_labelled(&name, ns.labels()) != Some(false) {
                    // Relabelled, or new since the first list.
                    self.ready.push(Change::Namespace(name));
                }
            }
            watcher::Event::InitDone => {
                if let Some(listing) = self.namespace_listing.take() {
                    self.keys.namespaces_listed(listing);
                    self.namespaces_listed = true;
                }
            }
            watcher::Event::Delete(ns) => self.keys.namespace_deleted(&ns.name_any()),
        }
    }

    fn changed(&mut self, key: KeyName) {
        debug!(key = %key, "key changed");
        self.keys.forget(&key);
        self.ready.push(Change::Key(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CloudflareProvider, SecretKeyRef, TurnKeySpec};
    use std::collections::BTreeMap;

    fn turn_key(namespace: &str, key_id: &str, secret: &str) -> TurnKey {
        let mut key = TurnKey::new(
            "cloudflare",
            TurnKeySpec {
                cloudflare: Some(CloudflareProvider {
                    key_id: key_id.into(),
                    api_token_secret_ref: SecretKeyRef {
                        name: secret.into(),
                        key: "api-token".into(),
                        namespace: None,
                    },
                    base_url: None,
                }),
                shared_secret: None,
            },
        );
        key.metadata.namespace = Some(namespace.into());
        key
    }

    fn key_name(namespace: &str) -> KeyName {
        KeyName {
            kind: KeyKind::TurnKey,
            namespace: Some(namespace.into()),
            name: "cloudflare".into(),
        }
    }

    fn token_secret(namespace: &str, name: &str, version: &str) -> PartialObjectMeta<Secret> {
        let mut secret = PartialObjectMeta::<Secret>::default();
        secret.metadata.name = Some(name.into());
        secret.metadata.namespace = Some(namespace.into());
        secret.metadata.resource_version = Some(version.into());
        secret
    }

    fn namespace(name: &str, labels: &[(&str, &str)]) -> PartialObjectMeta<Namespace> {
        let mut ns = PartialObjectMeta::<Namespace>::default();
        ns.metadata.name = Some(name.into());
        ns.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        );
        ns
    }

    fn key(watch: &mut KeyWatch, event: watcher::Event<TurnKey>) -> Vec<Change> {
        watch.observe(Observed::Key("TurnKey", Ok(seen(event))));
        std::mem::take(&mut watch.ready)
    }

    /// A watch that has listed `keys` as its first list.
    fn listed(keys: &[TurnKey]) -> KeyWatch {
        let mut watch = KeyWatch::default();
        assert_eq!(key(&mut watch, watcher::Event::Init), []);
        for listed in keys {
            assert_eq!(key(&mut watch, watcher::Event::InitApply(listed.clone())), []);
        }
        assert_eq!(key(&mut watch, watcher::Event::InitDone), []);
        watch
    }

    fn secret(watch: &mut KeyWatch, event: watcher::Event<PartialObjectMeta<Secret>>) -> Vec<Change> {
        let reference = ObjectRef::new("cf-token").within("app");
        watch.observe(Observed::Secret(reference, Ok(event)));
        std::mem::take(&mut watch.ready)
    }

    #[test]
    fn the_first_list_is_no_change_and_what_follows_is() {
        let mut watch = listed(&[turn_key("app", "k1", "cf-token")]);

        let edited = key(
            &mut watch,
            watcher::Event::Apply(turn_key("app", "k2", "cf-token")),
        );
        assert_eq!(edited, [Change::Key(key_name("app"))]);
        // Only metadata changed (a label, a status): the spec is the same.
        let mut relabelled = turn_key("app", "k2", "cf-token");
        relabelled.metadata.labels = Some(BTreeMap::from([("team".into(), "a".into())]));
        assert_eq!(key(&mut watch, watcher::Event::Apply(relabelled)), []);
        // A key created after the first list: a TurnCredential may be waiting for it.
        let created = key(
            &mut watch,
            watcher::Event::Apply(turn_key("other", "k3", "cf-token")),
        );
        assert_eq!(created, [Change::Key(key_name("other"))]);
        let deleted = key(
            &mut watch,
            watcher::Event::Delete(turn_key("other", "k3", "cf-token")),
        );
        assert_eq!(deleted, [Change::Key(key_name("other"))]);
    }

    #[test]
    fn a_watch_that_starts_over_reports_what_changed_meanwhile_only() {
        let mut watch = listed(&[turn_key("app", "k1", "cf-token"), turn_key("b", "k1", "cf-token")]);

        key(&mut watch, watcher::Event::Init);
        assert_eq!(
            key(
                &mut watch,
                watcher::Event::InitApply(turn_key("app", "k1", "cf-token"))
            ),
            []
        );
        let changed = key(
            &mut watch,
            watcher::Event::InitApply(turn_key("b", "k9", "cf-token")),
        );
        assert_eq!(changed, [Change::Key(key_name("b"))]);
    }

    #[test]
    fn a_token_secret_is_watched_while_a_key_names_it_and_its_changes_are_the_keys() {
        let mut watch = listed(&[turn_key("app", "k1", "cf-token")]);
        assert!(
            watch
                .secrets
                .contains_key(&ObjectRef::new("cf-token").within("app"))
        );

        // The Secret's own first list: what it is now is no change.
        assert_eq!(secret(&mut watch, watcher::Event::Init), []);
        assert_eq!(
            secret(
                &mut watch,
                watcher::Event::InitApply(token_secret("app", "cf-token", "7"))
            ),
            []
        );
        assert_eq!(secret(&mut watch, watcher::Event::InitDone), []);

        let rotated = secret(
            &mut watch,
            watcher::Event::Apply(token_secret("app", "cf-token", "8")),
        );
        assert_eq!(rotated, [Change::Key(key_name("app"))]);
        let deleted = secret(
            &mut watch,
            watcher::Event::Delete(token_secret("app", "cf-token", "8")),
        );
        assert_eq!(deleted, [Change::Key(key_name("app"))]);
        let created = secret(
            &mut watch,
            watcher::Event::Apply(token_secret("app", "cf-token", "9")),
        );
        assert_eq!(created, [Change::Key(key_name("app"))]);

        // The key now reads another Secret: the old one is no longer watched.
        key(
            &mut watch,
            watcher::Event::Apply(turn_key("app", "k1", "cf-token-2")),
        );
        assert!(
            !watch
                .secrets
                .contains_key(&ObjectRef::new("cf-token").within("app"))
        );
        assert!(
            watch
                .secrets
                .contains_key(&ObjectRef::new("cf-token-2").within("app"))
        );
        assert_eq!(
            secret(
                &mut watch,
                watcher::Event::Apply(token_secret("app", "cf-token", "10"))
            ),
            []
        );
    }

    #[test]
    fn a_token_secret_absent_at_first_is_a_change_when_it_appears() {
        let mut watch = listed(&[turn_key("app", "k1", "cf-token")]);
        secret(&mut watch, watcher::Event::Init);
        secret(&mut watch, watcher::Event::InitDone);

        let created = secret(
            &mut watch,
            watcher::Event::Apply(token_secret("app", "cf-token", "3")),
        );
        assert_eq!(created, [Change::Key(key_name("app"))]);
    }

    #[test]
    fn a_namespace_whose_labels_change_is_a_change() {
        let mut watch = KeyWatch::default();
        let mut ns = |event| {
            watch.observe(Observed::Namespace(Ok(event)));
            std::mem::take(&mut watch.ready)
        };
        ns(watcher::Event::Init);
        assert_eq!(ns(watcher::Event::InitApply(namespace("app", &[]))), []);
        ns(watcher::Event::InitDone);
        assert_eq!(
            ns(watcher::Event::Apply(namespace("app", &[]))),
            [],
            "no label changed"
        );
        let labelled = ns(watcher::Event::Apply(namespace("app", &[("turn", "yes")])));
        assert_eq!(labelled, [Change::Namespace("app".into())]);
        let created = ns(watcher::Event::Apply(namespace("new", &[])));
        assert_eq!(created, [Change::Namespace("new".into())]);
        // The resolver holds the labels the watch saw, for namespaceSelector.
        let yes = BTreeMap::from([("turn".to_string(), "yes".to_string())]);
        assert_eq!(watch.keys.namespace_labelled("app", &yes), Some(false));
    }
}
