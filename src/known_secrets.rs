//! Which of toma's Secrets exist, as its Secret watch (label-filtered, metadata only) lists them,
//! so that a reconcile of a new TurnCredential need not read a Secret that is not there. Only
//! names are kept: two strings a Secret.
//!
//! A Secret known here is read as before. One not known is written without being read, with the
//! create-only precondition; if it exists after all (someone else's, or toma's own with its
//! label removed), the write is refused and the reconcile reads it then.

use std::collections::HashSet;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;

type Name = (String, String);

#[derive(Default)]
pub struct KnownSecrets {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The watch has listed toma's Secrets at least once.
    listed: bool,
    names: HashSet<Name>,
    /// What a list under way has found so far, and what toma wrote meanwhile.
    listing: Option<(HashSet<Name>, HashSet<Name>)>,
}

impl KnownSecrets {
    /// Whether toma's Secret `namespace/name` is known not to exist. False until the first list
    /// is done: then nothing is known.
    pub fn is_absent(&self, namespace: &str, name: &str) -> bool {
        let state = self.lock();
        state.listed && !state.names.contains(&(namespace.to_owned(), name.to_owned()))
    }

    /// toma has just written this Secret: known at once, before its watch event arrives.
    pub fn written(&self, namespace: &str, name: &str) {
        let name = (namespace.to_owned(), name.to_owned());
        let mut state = self.lock();
        if let Some((_, written)) = &mut state.listing {
            written.insert(name.clone());
        }
        state.names.insert(name);
    }

    pub fn observe(&self, event: &watcher::Event<PartialObjectMeta<Secret>>) {
        let name_of = |s: &PartialObjectMeta<Secret>| (s.namespace().unwrap_or_default(), s.name_any());
        let mut state = self.lock();
        match event {
            watcher::Event::Init => state.listing = Some(Default::default()),
            watcher::Event::InitApply(secret) => {
                let name = name_of(secret);
                state.listing.get_or_insert_default().0.insert(name);
            }
            watcher::Event::InitDone => {
                // What toma wrote during the list stays: its watch event may still be on the way.
                let (listed, written) = state.listing.take().unwrap_or_default();
                state.names = listed.into_iter().chain(written).collect();
                state.listed = true;
            }
            watcher::Event::Apply(secret) => {
                state.names.insert(name_of(secret));
            }
            watcher::Event::Delete(secret) => {
                state.names.remove(&name_of(secret));
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("the known Secrets lock is never poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str) -> PartialObjectMeta<Secret> {
        let mut secret = PartialObjectMeta::<Secret>::default();
        secret.metadata.name = Some(name.into());
        secret.metadata.namespace = Some("app".into());
        secret
    }

    #[test]
    fn nothing_is_absent_until_the_first_list_is_done() {
        let known = KnownSecrets::default();
        assert!(!known.is_absent("app", "web"));
        known.observe(&watcher::Event::Init);
        known.observe(&watcher::Event::InitApply(secret("old")));
        assert!(!known.is_absent("app", "web"));
        known.observe(&watcher::Event::InitDone);
        assert!(known.is_absent("app", "web"));
        assert!(!known.is_absent("app", "old"));
    }

    #[test]
    fn writes_and_watch_events_keep_it_current() {
        let known = KnownSecrets::default();
        known.observe(&watcher::Event::Init);
        known.observe(&watcher::Event::InitDone);
        known.written("app", "web");
        assert!(!known.is_absent("app", "web"));
        known.observe(&watcher::Event::Delete(secret("web")));
        assert!(known.is_absent("app", "web"));
        known.observe(&watcher::Event::Apply(secret("web")));
        assert!(!known.is_absent("app", "web"));
        // A list that starts over replaces what was known.
        known.observe(&watcher::Event::Init);
        known.observe(&watcher::Event::InitApply(secret("other")));
        known.observe(&watcher::Event::InitDone);
        assert!(known.is_absent("app", "web"));
        assert!(!known.is_absent("app", "other"));
        // Written during a list: known, though the list did not see it.
        known.observe(&watcher::Event::Init);
        known.written("app", "new");
        known.observe(&watcher::Event::InitDone);
        assert!(!known.is_absent("app", "new"));
    }
}
