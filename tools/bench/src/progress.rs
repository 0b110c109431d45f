//! Knowing when all N credentials are done: two watches on the namespace (the operator's
//! objects, TurnCredentials or ExternalSecrets, for Ready=True, and the Secrets it writes,
//! metadata only), started before the first create. The moment the last one arrives is taken
//! from the watch event itself, not from a poll.

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use toma::api::TurnCredential;

use crate::Result;

#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub ready: usize,
    pub secrets: usize,
    /// When both counts first reached the target.
    pub done_at: Option<Instant>,
}

/// Watches until dropped.
pub struct Tracker {
    progress: watch::Receiver<Progress>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Which Secrets of the namespace count: those with `labels` (a selector), and of those the
/// ones whose name `counts`.
pub struct Secrets {
    pub labels: Option<String>,
    pub counts: fn(&str) -> bool,
}

/// TurnCredentials and the Secrets toma writes.
pub async fn track_credentials(client: &Client, namespace: &str, target: usize) -> Result<Tracker> {
    let secrets = Secrets {
        labels: Some(crate::cluster::toma_secrets()),
        counts: |_| true,
    };
    let credentials: Api<TurnCredential> = Api::namespaced(client.clone(), namespace);
    track(credentials, is_ready, client, namespace, secrets, target).await
}

/// Starts both watches on `namespace`, `objects` for `is_ready` and `secrets`, and returns once
/// each has listed what is there.
pub async fn track<K>(
    objects: Api<K>,
    is_ready: fn(&K) -> bool,
    client: &Client,
    namespace: &str,
    secrets: Secrets,
    target: usize,
) -> Result<Tracker>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let (tx, rx) = watch::channel(Progress::default());
    let tx = Arc::new(tx);

    let ready_events = watcher(objects, watcher::Config::default())
        .default_backoff()
        .map(move |event| event.map(|e| names(e, is_ready)));
    // Metadata only: the bench needs to know that a Secret is there, not what it holds.
    let secret_api: Api<PartialObjectMeta<Secret>> = Api::namespaced(client.clone(), namespace);
    let mut config = watcher::Config::default();
    if let Some(labels) = &secrets.labels {
        config = config.labels(labels);
    }
    let counts = secrets.counts;
    let secret_events = watcher(secret_api, config)
        .default_backoff()
        .map(move |event| event.map(|e| names(e, |s| counts(&s.name_any()))));

    let (ready_listed, ready_listed_rx) = oneshot::channel();
    let (secrets_listed, secrets_listed_rx) = oneshot::channel();
    let tasks = vec![
        tokio::spawn(count(ready_events, tx.clone(), target, Kind::Ready, ready_listed)),
        tokio::spawn(count(secret_events, tx, target, Kind::Secrets, secrets_listed)),
    ];
    let tracker = Tracker { progress: rx, tasks };
    let listed = async {
        let _ = ready_listed_rx.await;
        let _ = secrets_listed_rx.await;
    };
    tokio::time::timeout(Duration::from_secs(60), listed)
        .await
        .map_err(|_| "the watches did not list the namespace within 60 s")?;
    Ok(tracker)
}

impl Tracker {
    pub fn now(&self) -> Progress {
        *self.progress.borrow()
    }

    /// Waits until all are Ready with their Secrets, and returns when that happened.
    pub async fn done(&mut self, limit: Duration) -> Result<Instant> {
        let waited = tokio::time::timeout(limit, self.progress.wait_for(|p| p.done_at.is_some()))
            .await
            .map(|r| r.map(|progress| progress.done_at));
        match waited {
            Ok(Ok(done_at)) => Ok(done_at.expect("waited for it")),
            Ok(Err(_)) => Err("the watches stopped".into()),
            Err(_) => {
                let p = self.now();
                Err(format!(
                    "not done within {limit:?}: {} Ready, {} Secrets",
                    p.ready, p.secrets
                )
                .into())
            }
        }
    }
}

pub fn is_ready(tc: &TurnCredential) -> bool {
    toma::status::ready_state(tc.status.as_ref()).is_some_and(|(status, _)| status == "True")
}

/// An event reduced to (name, whether it counts).
fn names<K: ResourceExt>(event: Event<K>, counts: impl Fn(&K) -> bool) -> Event<(String, bool)> {
    let pair = |k: K| (k.name_any(), counts(&k));
    match event {
        Event::Apply(k) => Event::Apply(pair(k)),
        Event::Delete(k) => Event::Delete(pair(k)),
        Event::Init => Event::Init,
        Event::InitApply(k) => Event::InitApply(pair(k)),
        Event::InitDone => Event::InitDone,
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Ready,
    Secrets,
}

/// Keeps the set of names for which the watch says `true`, and publishes its size.
async fn count(
    events: impl Stream<Item = std::result::Result<Event<(String, bool)>, watcher::Error>>,
    tx: Arc<watch::Sender<Progress>>,
    target: usize,
    kind: Kind,
    listed: oneshot::Sender<()>,
) {
    let mut names = HashSet::new();
    let mut listed = Some(listed);
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => names.clear(),
            Ok(Event::Apply((name, yes)) | Event::InitApply((name, yes))) => {
                if yes {
                    names.insert(name);
                } else {
                    names.remove(&name);
                }
            }
            Ok(Event::Delete((name, _))) => {
                names.remove(&name);
            }
            Ok(Event::InitDone) => {
                if let Some(listed) = listed.take() {
                    let _ = listed.send(());
                }
            }
            Err(error) => {
                eprintln!("watch error (retrying): {error}");
                continue;
            }
        }
        let len = names.len();
        tx.send_if_modified(|p| {
            let slot = match kind {
                Kind::Ready => &mut p.ready,
                Kind::Secrets => &mut p.secrets,
            };
            let changed = *slot != len;
            *slot = len;
            if p.done_at.is_none() && p.ready >= target && p.secrets >= target {
                p.done_at = Some(Instant::now());
                return true;
            }
            changed
        });
    }
}
