//! toma's own Secret writes come back to it as watch events. Recognising them spares a
//! reconcile that would only read back what it has just written; any other change to a Secret
//! (an edit, a deletion, someone else's write) still wakes its TurnCredential.
//!
//! The watch event of a write can arrive before the write's own answer, which carries the
//! version to recognise. So while a write is under way, the Secret's watch events are held
//! back; once the answer is in, the echo is dropped and anything else wakes the TurnCredential.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use futures::Stream;
use futures::channel::mpsc;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::api::TurnCredential;

type Key = (String, String);

/// What is expected of each Secret toma is writing or has just written. One entry per Secret
/// at most, so it never outgrows the Secrets toma owns.
pub struct OwnWrites {
    pending: Mutex<HashMap<Key, Pending>>,
    wake: mpsc::UnboundedSender<ObjectRef<TurnCredential>>,
}

enum Pending {
    /// A write is under way; the versions of the watch events that arrived meanwhile.
    Writing(Vec<String>),
    /// toma wrote this version and its watch event has not come back yet.
    Written(String),
}

/// A write under way, from [`OwnWrites::writing`]. Dropped without [`Write::done`] (the write
/// failed), it wakes the TurnCredential if its Secret changed meanwhile.
pub struct Write<'a> {
    own_writes: &'a OwnWrites,
    key: Key,
    owner: ObjectRef<TurnCredential>,
    done: bool,
}

impl OwnWrites {
    /// The record of own writes, and the TurnCredentials to reconcile because their Secret changed while
    /// toma was writing it.
    pub fn new() -> (OwnWrites, impl Stream<Item = ObjectRef<TurnCredential>>) {
        let (wake, wakes) = mpsc::unbounded();
        let own_writes = OwnWrites {
            pending: Mutex::default(),
            wake,
        };
        (own_writes, wakes)
    }

    /// Call before `tc` writes its Secret.
    pub fn writing(&self, tc: &TurnCredential) -> Write<'_> {
        let key = (tc.namespace().unwrap_or_default(), tc.secret_name());
        self.lock().insert(key.clone(), Pending::Writing(Vec::new()));
        Write {
            own_writes: self,
            key,
            owner: ObjectRef::from_obj(tc),
            done: false,
        }
    }

    /// Whether a watch event of a Secret (added or modified) calls for a reconcile of its
    /// TurnCredential: false for the echo of toma's write, and for events held back while a
    /// write is under way.
    pub fn is_change(&self, seen: &impl ResourceExt) -> bool {
        let mut pending = self.lock();
        let key = key(seen);
        let version = seen.resource_version().unwrap_or_default();
        match pending.get_mut(&key) {
            Some(Pending::Writing(arrived)) => {
                arrived.push(version);
                false
            }
            Some(Pending::Written(written)) if *written == version => {
                pending.remove(&key);
                false
            }
            _ => true,
        }
    }

    /// Drops what is expected of a Secret that is gone.
    pub fn forget(&self, gone: &impl ResourceExt) {
        self.lock().remove(&key(gone));
    }

    /// Secrets with a write under way or an echo still to come.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Pending>> {
        // A panic while holding the lock leaves the map as valid as before it.
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Ends a write: the events that arrived meanwhile other than `written` wake the owner.
    fn finish(&self, write: &Write<'_>, written: Option<&str>) {
        let mut pending = self.lock();
        let Some(Pending::Writing(arrived)) = pending.remove(&write.key) else {
            return; // another write to the same Secret took over; it decides
        };
        let echo_arrived = written.is_some_and(|w| arrived.iter().any(|a| a == w));
        if let Some(written) = written.filter(|_| !echo_arrived) {
            pending.insert(write.key.clone(), Pending::Written(written.to_string()));
        }
        if arrived.iter().any(|a| Some(a.as_str()) != written) {
            // Only a stopping controller has dropped the receiver, and then it does not matter.
            let _ = self.wake.unbounded_send(write.owner.clone());
        }
    }
}

impl Write<'_> {
    /// The write succeeded and the API server answered with `written`.
    pub fn done(mut self, written: &impl ResourceExt) {
        self.done = true;
        self.own_writes
            .finish(&self, written.resource_version().as_deref());
    }
}

impl Drop for Write<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.own_writes.finish(self, None);
        }
    }
}

fn key(object: &impl ResourceExt) -> Key {
    (object.namespace().unwrap_or_default(), object.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::turn_credential;
    use futures::{FutureExt, StreamExt};
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::ObjectMeta;

    fn secret(name: &str, version: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                namespace: Some("app".into()),
                name: Some(name.into()),
                resource_version: Some(version.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// The TurnCredentials woken so far.
    fn woken(wakes: &mut (impl Stream<Item = ObjectRef<TurnCredential>> + Unpin)) -> Vec<String> {
        let mut names = Vec::new();
        while let Some(Some(owner)) = wakes.next().now_or_never() {
            names.push(owner.name);
        }
        names
    }

    #[test]
    fn the_echo_of_a_write_is_not_a_change_once() {
        let (own_writes, wakes) = OwnWrites::new();
        let mut wakes = Box::pin(wakes);
        let tc = turn_credential("web");
        own_writes.writing(&tc).done(&secret("web", "7"));
        assert!(!own_writes.is_change(&secret("web", "7")));
        assert!(
            own_writes.is_change(&secret("web", "7")),
            "a second event of it is news"
        );
        assert!(own_writes.is_empty());
        assert!(woken(&mut wakes).is_empty());
    }

    #[test]
    fn an_echo_that_beats_the_answer_is_held_back_and_dropped() {
        let (own_writes, wakes) = OwnWrites::new();
        let mut wakes = Box::pin(wakes);
        let tc = turn_credential("web");
        let write = own_writes.writing(&tc);
        assert!(!own_writes.is_change(&secret("web", "7")), "held back");
        write.done(&secret("web", "7"));
        assert!(own_writes.is_empty(), "nothing left to expect");
        assert!(woken(&mut wakes).is_empty(), "it was only the echo");
    }

    #[test]
    fn other_changes_while_writing_wake_the_owner() {
        let (own_writes, wakes) = OwnWrites::new();
        let mut wakes = Box::pin(wakes);
        let tc = turn_credential("web");
        let write = own_writes.writing(&tc);
        assert!(!own_writes.is_change(&secret("web", "6")), "held back");
        write.done(&secret("web", "7"));
        assert_eq!(woken(&mut wakes), vec!["web"]);
        assert!(!own_writes.is_change(&secret("web", "7")), "the echo still comes");
    }

    #[test]
    fn a_failed_write_wakes_the_owner_only_if_the_secret_changed_meanwhile() {
        let (own_writes, wakes) = OwnWrites::new();
        let mut wakes = Box::pin(wakes);
        let tc = turn_credential("web");
        drop(own_writes.writing(&tc));
        assert!(woken(&mut wakes).is_empty());
        assert!(own_writes.is_empty());

        let write = own_writes.writing(&tc);
        assert!(!own_writes.is_change(&secret("web", "8")));
        drop(write);
        assert_eq!(woken(&mut wakes), vec!["web"]);
        assert!(
            own_writes.is_change(&secret("web", "9")),
            "nothing held back any more"
        );
    }

    #[test]
    fn other_versions_and_other_secrets_are_changes() {
        let (own_writes, _wakes) = OwnWrites::new();
        let tc = turn_credential("web");
        own_writes.writing(&tc).done(&secret("web", "7"));
        assert!(
            own_writes.is_change(&secret("web", "8")),
            "someone else's later write"
        );
        assert!(own_writes.is_change(&secret("api", "7")), "another Secret");
        assert!(
            !own_writes.is_change(&secret("web", "7")),
            "the echo, still expected"
        );
    }

    #[test]
    fn a_newer_write_replaces_the_older_and_a_deletion_forgets() {
        let (own_writes, _wakes) = OwnWrites::new();
        let tc = turn_credential("web");
        own_writes.writing(&tc).done(&secret("web", "7"));
        own_writes.writing(&tc).done(&secret("web", "9"));
        assert_eq!(own_writes.len(), 1);
        assert!(own_writes.is_change(&secret("web", "7")));
        own_writes.forget(&secret("web", "9"));
        assert!(own_writes.is_change(&secret("web", "9")));
    }
}
