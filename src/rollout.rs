//! Restarting workloads whose pods read the Secret only at start-up (environment variables), when
//! the Secret's content changed since they were last restarted for it.
//!
//! A target records, for each TurnCredential that restarts it, the checksum of the Secret content
//! it was restarted for, in a pod-template annotation (see [`checksum_annotation`]); changing the
//! pod template is what restarts the pods, as `kubectl rollout restart` does. Every successful
//! reconcile compares what each target records with the Secret and restarts the targets where they
//! differ: after a new credential, and also when the credential was kept, which makes up a restart
//! lost to a crash between the Secret write and the patch.
//!
//! Restarts of one workload are gathered for [`RESTART_WINDOW`] and sent as one patch, so that
//! TurnCredentials rotated together restart it once.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, Shared, join_all};
use futures::{FutureExt, TryFutureExt};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::api::{RolloutKind, TurnCredential};
use crate::context::Context;
use crate::error::Error;
use crate::reconcile::FIELD_MANAGER;
use crate::secret;

/// When toma last restarted the workload. Only for people: the decision is the checksum's.
pub const RESTARTED_AT_ANNOTATION: &str = "toma.dev/restartedAt";
/// What [`checksum_annotation`] starts with.
pub const CHECKSUM_ANNOTATION_PREFIX: &str = "toma.dev/checksum-";
/// How long restarts of one workload are gathered into one patch, from the first that asks.
/// Long enough for TurnCredentials rotated together (one `kubectl annotate`, one key's outage
/// ending) to meet; short enough that a restart is never far behind its Secret.
pub const RESTART_WINDOW: Duration = Duration::from_secs(5);

/// The pod-template annotation in which a workload records the checksum of the Secret content it
/// was restarted for, one per TurnCredential. The name part of an annotation key has at most 63
/// characters and a TurnCredential's name up to 253, so the key carries a hash of the name:
/// `toma.dev/checksum-` and 12 hex digits. The TurnCredential is in the workload's namespace.
pub fn checksum_annotation(turn_credential: &str) -> String {
    let hash = secret::short_hash(turn_credential.as_bytes());
    format!("{CHECKSUM_ANNOTATION_PREFIX}{}", &hash[..12])
}

/// A workload to restart: a target of a TurnCredential, in its namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Workload {
    pub kind: RolloutKind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// What became of one target.
enum Outcome {
    /// It records the Secret's current checksum already.
    Current,
    Restarted,
    Missing,
}

/// Restarts every target of `tc` that does not record `checksum`, the Secret's, and waits for the
/// patches (at most [`RESTART_WINDOW`] and the patch itself). A target that is missing or cannot
/// be restarted gets a Warning Event and does not fail the reconcile: the Secret already holds
/// the credential. Returns false when a target could not be read or patched, so that the
/// reconcile comes back soon to try again.
///
/// Cost: one GET per target on every reconcile of a TurnCredential that has targets (at least
/// hourly, and on every change); a TurnCredential without targets makes no call at all. A
/// restart adds one PATCH per workload and window, however many TurnCredentials asked for it.
pub async fn restart_stale_targets(
    tc: &TurnCredential,
    ctx: &Context,
    checksum: &str,
    now: Timestamp,
) -> bool {
    let key = checksum_annotation(&tc.name_any());
    let namespace = tc.namespace().unwrap_or_default();
    let workloads = tc.spec.rollout_restart_targets.iter().map(|target| Workload {
        kind: target.kind,
        namespace: namespace.clone(),
        name: target.name.clone(),
    });
    let outcomes = join_all(workloads.map(|workload| async {
        let outcome = restart_if_stale(ctx, &workload, &key, checksum, now).await;
        (workload, outcome)
    }))
    .await;
    let mut all_done = true;
    for (workload, outcome) in outcomes {
        let note = match outcome {
            Ok(Outcome::Current) => continue,
            Ok(Outcome::Restarted) => {
                info!(%workload, "restarted for the Secret's new content");
                continue;
            }
            Ok(Outcome::Missing) => {
                warn!(%workload, "rollout restart target not found");
                format!("{workload} not found; nothing to restart")
            }
            Err(error) => {
                all_done = false;
                warn!(%error, "rollout restart failed");
                error.to_string()
            }
        };
        ctx.events
            .publish(tc, EventType::Warning, "RolloutRestartFailed", note)
            .await;
    }
    all_done
}

async fn restart_if_stale(
    ctx: &Context,
    workload: &Workload,
    key: &str,
    checksum: &str,
    now: Timestamp,
) -> Result<Outcome, Error> {
    let object = workloads(ctx.client.clone(), workload)
        .get_opt(&workload.name)
        .await
        .map_err(|source| Error::GetWorkload {
            workload: workload.clone(),
            source,
        })?;
    let Some(object) = object else {
        return Ok(Outcome::Missing);
    };
    if recorded_checksum(&object, key) == Some(checksum) {
        return Ok(Outcome::Current);
    }
    ctx.restarts
        .restart(&ctx.client, workload, key, checksum, now)
        .await?;
    Ok(Outcome::Restarted)
}

/// What `workload` records under `key` in its pod template.
fn recorded_checksum<'a>(workload: &'a DynamicObject, key: &str) -> Option<&'a str> {
    let annotations = workload.data.pointer("/spec/template/metadata/annotations")?;
    annotations.get(key)?.as_str()
}

/// The patch that a workload's window will send once it closes, and is shared by every
/// restart that asked for the workload within it.
type Sent = Shared<BoxFuture<'static, Result<(), Arc<kube::Error>>>>;

/// The restarts gathered for each workload, until its window closes. One toma process's: two
/// replicas never both reconcile, since only the leader does.
#[derive(Default)]
pub struct Restarts {
    open: Arc<Mutex<HashMap<Workload, Batch>>>,
}

struct Batch {
    annotations: BTreeMap<String, String>,
    sent: Sent,
}

impl Restarts {
    /// Records `key: checksum` in `workload`'s pod template, in one patch with whatever else is
    /// recorded for it until the window closes (the window opens with the first restart that asks,
    /// at `now`), and waits for that patch.
    pub async fn restart(
        &self,
        client: &Client,
        workload: &Workload,
        key: &str,
        checksum: &str,
        now: Timestamp,
    ) -> Result<(), Error> {
        let sent = {
            let mut open = self.open.lock().expect("no restart panics holding the lock");
            let batch = open.entry(workload.clone()).or_insert_with(|| Batch {
                annotations: BTreeMap::new(),
                sent: self.send_when_closed(client.clone(), workload.clone(), now),
            });
            batch.annotations.insert(key.into(), checksum.into());
            batch.sent.clone()
        };
        // Driven by whichever of the restarts that wait for it is polled: none of them
        // owns the patch.
        sent.await.map_err(|source| Error::RestartWorkload {
            workload: workload.clone(),
            source,
        })
    }

    fn send_when_closed(&self, client: Client, workload: Workload, now: Timestamp) -> Sent {
        let open = self.open.clone();
        async move {
            tokio::time::sleep(RESTART_WINDOW).await;
            let batch = open
                .lock()
                .expect("no restart panics holding the lock")
                .remove(&workload);
            let mut annotations = batch.map(|b| b.annotations).unwrap_or_default();
            annotations.insert(RESTARTED_AT_ANNOTATION.into(), now.to_string());
            let patch = json!({"spec": {"template": {"metadata": {"annotations": annotations}}}});
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            };
            workloads(client, &workload)
                .patch(&workload.name, &params, &Patch::Merge(&patch))
                .map_ok(drop)
                .map_err(Arc::new)
                .await
        }
        .boxed()
        .shared()
    }
}

fn workloads(client: Client, workload: &Workload) -> Api<DynamicObject> {
    let resource = match workload.kind {
        RolloutKind::Deployment => ApiResource::erase::<Deployment>(&()),
        RolloutKind::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
        RolloutKind::DaemonSet => ApiResource::erase::<DaemonSet>(&()),
    };
    Api::namespaced_with(client, &workload.namespace, &resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_annotation_is_a_valid_key_for_any_turn_credential_name() {
        let longest = "a".repeat(253);
        for name in ["web", longest.as_str()] {
            let key = checksum_annotation(name);
            let (prefix, name_part) = key.split_once('/').unwrap();
            assert_eq!(prefix, "toma.dev");
            assert!(name_part.len() <= 63, "{key}");
            assert!(
                name_part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{key}"
            );
        }
        assert_eq!(checksum_annotation("web"), checksum_annotation("web"));
        assert_ne!(checksum_annotation("web"), checksum_annotation("api"));
    }
}
