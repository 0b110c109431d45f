//! rolloutRestartTargets: a target is restarted when the Secret's content differs from what it
//! records, once per window however many TurnCredentials ask, and a lost restart is made up.
//! Time is paused: the restart window passes as soon as nothing else is left to run.

use std::time::Duration;

use http::{Method, StatusCode};
use kube::ResourceExt;
use serde_json::{Value, json};

use super::*;
use crate::api::{ROTATE_ANNOTATION, RolloutKind, RolloutTarget};
use crate::fixtures::{credential_at, turn_credential};
use crate::rollout::{RESTART_WINDOW, RESTARTED_AT_ANNOTATION, checksum_annotation};
use crate::secret::{self, CHECKSUM_ANNOTATION, desired_secret};

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/app/deployments";
const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/app/deployments/consumer";

/// A TurnCredential `name` that restarts the Deployments `targets`.
fn restarting(name: &str, targets: &[&str]) -> TurnCredential {
    let mut tc = turn_credential(name);
    tc.metadata.uid = Some(format!("uid-{name}"));
    tc.spec.rollout_restart_targets = targets
        .iter()
        .map(|target| RolloutTarget {
            kind: RolloutKind::Deployment,
            name: (*target).into(),
        })
        .collect();
    tc
}

fn credential_path(name: &str) -> String {
    format!("/apis/toma.dev/v1alpha1/namespaces/app/turncredentials/{name}")
}

/// A workload as a user applied it: no annotations of toma's yet.
fn workload(kind: &str, name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "app"},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "localhost/busybox:latest"}]},
            },
        },
    })
}

impl Cluster {
    /// A cluster with the shared-secret key and the Deployment `consumer`.
    fn with_consumer() -> Cluster {
        let cluster = Cluster::with_shared_secret_key();
        cluster.api.put(DEPLOYMENT, workload("Deployment", "consumer"));
        cluster
    }

    /// Stores `tc` and reconciles it as stored, at `now`.
    async fn reconcile_named(&self, ctx: &Context, tc: &TurnCredential, now: Timestamp) -> Action {
        self.api.put(&credential_path(&tc.name_any()), tc);
        reconcile_at(tc, ctx, now).await.unwrap()
    }

    /// The pod-template annotations of the Deployment `consumer`.
    fn consumer_template_annotations(&self) -> Value {
        self.api.get(DEPLOYMENT).unwrap()["spec"]["template"]["metadata"]["annotations"].clone()
    }

    /// What the Deployment `consumer` records for the TurnCredential `name`.
    fn recorded_checksum(&self, name: &str) -> Option<String> {
        let annotations = self.consumer_template_annotations();
        annotations[checksum_annotation(name)].as_str().map(String::from)
    }

    /// The `toma.dev/checksum` of the Secret `name`.
    fn secret_checksum(&self, name: &str) -> String {
        let secret: Secret =
            serde_json::from_value(self.api.get(&format!("{SECRETS}/{name}")).unwrap()).unwrap();
        secret.annotations()[CHECKSUM_ANNOTATION].clone()
    }

    /// The patches sent to the Deployment `consumer`, failed ones included.
    fn consumer_patches(&self) -> usize {
        self.api.writes_to(DEPLOYMENT).len()
    }
}

fn forced(mut tc: TurnCredential, request: &str) -> TurnCredential {
    tc.annotations_mut()
        .insert(ROTATE_ANNOTATION.into(), request.into());
    tc
}

#[tokio::test(start_paused = true)]
async fn a_target_that_records_nothing_yet_is_restarted_once_and_records_the_secrets_checksum() {
    let cluster = Cluster::with_consumer();

    let action = cluster
        .reconcile(&cluster.toma(), &restarting("web", &["consumer"]), at(0))
        .await
        .unwrap();

    assert_eq!(cluster.consumer_patches(), 1);
    assert_eq!(
        cluster.recorded_checksum("web"),
        Some(cluster.secret_checksum("web"))
    );
    let annotations = cluster.consumer_template_annotations();
    assert_eq!(annotations[RESTARTED_AT_ANNOTATION], "2023-11-14T22:13:20Z");
    let password = secret::stored_credential(&cluster.stored_secret().unwrap())
        .unwrap()
        .turn_pair()
        .unwrap()
        .1
        .to_string();
    let deployment = cluster.api.get(DEPLOYMENT).unwrap().to_string();
    assert!(
        !deployment.contains(&password),
        "the Deployment carries the TURN password"
    );
    assert_eq!(action, requeue(3600));
}

#[tokio::test(start_paused = true)]
async fn nothing_is_restarted_while_the_secrets_content_is_unchanged() {
    let cluster = Cluster::with_consumer();
    let ctx = cluster.toma();
    cluster
        .reconcile(&ctx, &restarting("web", &["consumer"]), at(0))
        .await
        .unwrap();
    cluster.reconcile_stored(&ctx, at(10)).await.unwrap();
    let before = cluster.api.requests().len();

    // A restarted toma, its credential still valid: one read of the Secret, of the key, and of
    // the target.
    cluster.reconcile_stored(&cluster.toma(), at(600)).await.unwrap();

    assert_eq!(
        cluster.consumer_patches(),
        1,
        "only the first reconcile restarted"
    );
    let after: Vec<_> = cluster.api.requests()[before..]
        .iter()
        .filter(|r| !r.path.starts_with(EVENTS))
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    assert_eq!(
        after,
        [
            (Method::GET, SECRET.to_string()),
            (Method::GET, CLUSTER_KEY.to_string()),
            (Method::GET, COTURN_SECRET.to_string()),
            (Method::GET, DEPLOYMENT.to_string())
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_rotation_restarts_the_target_for_the_new_content() {
    let cluster = Cluster::with_consumer();
    let ctx = cluster.toma();
    let tc = restarting("web", &["consumer"]);
    cluster.reconcile(&ctx, &tc, at(0)).await.unwrap();
    let first = cluster.secret_checksum("web");

    cluster.reconcile(&ctx, &forced(tc, "1"), at(10)).await.unwrap();

    assert_eq!(cluster.consumer_patches(), 2);
    let second = cluster.secret_checksum("web");
    assert_ne!(second, first, "a new credential is new content");
    assert_eq!(cluster.recorded_checksum("web"), Some(second));
    let annotations = cluster.consumer_template_annotations();
    assert_eq!(annotations[RESTARTED_AT_ANNOTATION], "2023-11-14T22:13:30Z");
}

#[tokio::test(start_paused = true)]
async fn a_deleted_secret_recreated_with_a_new_credential_restarts_the_target() {
    let cluster = Cluster::with_consumer();
    let ctx = cluster.toma();
    cluster
        .reconcile(&ctx, &restarting("web", &["consumer"]), at(0))
        .await
        .unwrap();
    let first = cluster.secret_checksum("web");

    cluster.api.remove(SECRET);
    cluster.reconcile_stored(&ctx, at(60)).await.unwrap();

    assert_eq!(cluster.consumer_patches(), 2);
    let recreated = cluster.secret_checksum("web");
    assert_ne!(recreated, first);
    assert_eq!(cluster.recorded_checksum("web"), Some(recreated));
}

#[tokio::test(start_paused = true)]
async fn two_credentials_rotating_one_deployment_within_the_window_restart_it_once() {
    let cluster = Cluster::with_consumer();
    let ctx = cluster.toma();
    let (a, b) = (restarting("a", &["consumer"]), restarting("b", &["consumer"]));

    // b comes two seconds after a, while a's restart waits for the window to close.
    let later = Duration::from_secs(2);
    assert!(later < RESTART_WINDOW);
    tokio::join!(cluster.reconcile_named(&ctx, &a, at(0)), async {
        tokio::time::sleep(later).await;
        cluster.reconcile_named(&ctx, &b, at(2)).await
    });

    assert_eq!(cluster.consumer_patches(), 1, "one patch for both");
    assert_eq!(cluster.recorded_checksum("a"), Some(cluster.secret_checksum("a")));
    assert_eq!(cluster.recorded_checksum("b"), Some(cluster.secret_checksum("b")));
    let annotations = cluster.consumer_template_annotations();
    assert_eq!(
        annotations[RESTARTED_AT_ANNOTATION], "2023-11-14T22:13:20Z",
        "the time the window opened"
    );
}

#[tokio::test(start_paused = true)]
async fn credentials_rotating_one_deployment_further_apart_than_the_window_restart_it_each() {
    let cluster = Cluster::with_consumer();
    let ctx = cluster.toma();
    let (a, b) = (restarting("a", &["consumer"]), restarting("b", &["consumer"]));
    let later = RESTART_WINDOW + Duration::from_secs(1);

    tokio::join!(cluster.reconcile_named(&ctx, &a, at(0)), async {
        tokio::time::sleep(later).await;
        cluster.reconcile_named(&ctx, &b, at(6)).await
    });

    assert_eq!(cluster.consumer_patches(), 2);
    assert_eq!(cluster.recorded_checksum("a"), Some(cluster.secret_checksum("a")));
    assert_eq!(cluster.recorded_checksum("b"), Some(cluster.secret_checksum("b")));
}

#[tokio::test(start_paused = true)]
async fn a_failed_restart_is_reported_and_made_up_on_the_next_reconcile() {
    let cluster = Cluster::with_consumer();
    let ctx = cluster.toma();
    let tc = restarting("web", &["consumer"]);
    cluster.reconcile(&ctx, &tc, at(0)).await.unwrap();
    let restarted_for = cluster.recorded_checksum("web");
    cluster
        .api
        .fail_once(Method::PATCH, DEPLOYMENT, StatusCode::INTERNAL_SERVER_ERROR);

    let action = cluster.reconcile(&ctx, &forced(tc, "1"), at(10)).await.unwrap();

    assert_eq!(action, requeue(60), "back soon to try again");
    assert_eq!(cluster.stored_status()["conditions"][0]["reason"], "Issued");
    assert_eq!(
        cluster.recorded_checksum("web"),
        restarted_for,
        "not restarted yet"
    );
    assert_ne!(restarted_for, Some(cluster.secret_checksum("web")));

    let action = cluster.reconcile_stored(&ctx, at(70)).await.unwrap();

    assert_eq!(cluster.stored_status()["rotations"], 2, "nothing minted");
    assert_eq!(
        cluster.consumer_patches(),
        3,
        "the first, the failed one, the retry"
    );
    assert_eq!(
        cluster.recorded_checksum("web"),
        Some(cluster.secret_checksum("web"))
    );
    assert_eq!(action, requeue(3600));
    drop(ctx);
    assert_eq!(
        cluster.event_reasons().await,
        ["Issued", "ForcedRotation", "RolloutRestartFailed"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_restart_lost_after_the_secret_was_written_is_made_up_by_the_next_toma() {
    // As a crash between the Secret write and the patch leaves them: the Secret holds a new
    // credential, the target records the one before.
    let cluster = Cluster::default();
    let tc = restarting("web", &["consumer"]);
    let current = credential_at(NOW - 60, 86_400);
    let replaced = credential_at(NOW - 3600, 86_400);
    cluster.api.put(SECRET, desired_secret(&tc, &current, 2));
    let mut consumer = workload("Deployment", "consumer");
    consumer["spec"]["template"]["metadata"]["annotations"] =
        json!({checksum_annotation("web"): secret::content_checksum(&replaced)});
    cluster.api.put(DEPLOYMENT, consumer);

    cluster.reconcile(&cluster.toma(), &tc, at(0)).await.unwrap();

    assert!(
        cluster.api.writes_to(SECRETS).is_empty(),
        "nothing minted or rewritten"
    );
    assert_eq!(cluster.consumer_patches(), 1);
    assert_eq!(
        cluster.recorded_checksum("web"),
        Some(secret::content_checksum(&current))
    );
}

#[tokio::test(start_paused = true)]
async fn a_missing_target_does_not_fail_the_reconcile_or_hold_back_the_others() {
    let cluster = Cluster::with_consumer();
    let ctx = cluster.toma();

    let action = cluster
        .reconcile(&ctx, &restarting("web", &["gone", "consumer"]), at(0))
        .await
        .unwrap();

    assert_eq!(cluster.stored_status()["conditions"][0]["reason"], "Issued");
    assert_eq!(cluster.consumer_patches(), 1);
    assert!(cluster.api.writes_to(&format!("{DEPLOYMENTS}/gone")).is_empty());
    assert_eq!(action, requeue(3600), "nothing to try again until it appears");
    drop(ctx);
    assert_eq!(cluster.event_reasons().await, ["Issued", "RolloutRestartFailed"]);
}

#[tokio::test(start_paused = true)]
async fn stateful_sets_and_daemon_sets_are_restarted_at_their_own_paths() {
    let cluster = Cluster::with_shared_secret_key();
    let statefulset = "/apis/apps/v1/namespaces/app/statefulsets/db";
    let daemonset = "/apis/apps/v1/namespaces/app/daemonsets/agent";
    cluster.api.put(statefulset, workload("StatefulSet", "db"));
    cluster.api.put(daemonset, workload("DaemonSet", "agent"));
    let mut tc = restarting("web", &[]);
    tc.spec.rollout_restart_targets = vec![
        RolloutTarget {
            kind: RolloutKind::StatefulSet,
            name: "db".into(),
        },
        RolloutTarget {
            kind: RolloutKind::DaemonSet,
            name: "agent".into(),
        },
    ];

    cluster.reconcile(&cluster.toma(), &tc, at(0)).await.unwrap();

    let checksum = cluster.secret_checksum("web");
    for path in [statefulset, daemonset] {
        assert_eq!(cluster.api.writes_to(path).len(), 1, "{path}");
        let template = &cluster.api.get(path).unwrap()["spec"]["template"];
        assert_eq!(
            template["metadata"]["annotations"][checksum_annotation("web")],
            checksum
        );
    }
}
