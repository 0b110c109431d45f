//! Restarting workloads after a rotation, for consumers that read the Secret only at start-up
//! (environment variables). Done the way `kubectl rollout restart` does it: a pod-template
//! annotation with the time.

use std::fmt::Debug;

use jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::warn;

use crate::api::{RolloutKind, TurnCredential};
use crate::context::Context;

pub const RESTARTED_AT_ANNOTATION: &str = "toma.dev/restartedAt";

/// Restarts every target. A failure is reported as a Warning Event and does not fail the
/// reconcile: the Secret already holds the new credential.
pub async fn restart_targets(tc: &TurnCredential, ctx: &Context, now: Timestamp) {
    let namespace = tc.namespace().unwrap_or_default();
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: now.to_string()}}}}});
    for target in &tc.spec.rollout_restart_targets {
        let client = ctx.client.clone();
        let result = match target.kind {
            RolloutKind::Deployment => restart::<Deployment>(client, &namespace, &target.name, &patch).await,
            RolloutKind::StatefulSet => {
                restart::<StatefulSet>(client, &namespace, &target.name, &patch).await
            }
            RolloutKind::DaemonSet => restart::<DaemonSet>(client, &namespace, &target.name, &patch).await,
        };
        if let Err(error) = result {
            warn!(kind = ?target.kind, target = target.name, %error, "rollout restart failed");
            let note = format!("could not restart {:?} {}: {error}", target.kind, target.name);
            ctx.events
                .publish(tc, EventType::Warning, "RolloutRestartFailed", note)
                .await;
        }
    }
}

async fn restart<K>(client: Client, namespace: &str, name: &str, patch: &Value) -> kube::Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    Api::<K>::namespaced(client, namespace)
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(drop)
}
