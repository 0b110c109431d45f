//! Deletion with revokeOnDelete: the finalizer, the revoke, and letting go.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use serde_json::json;

use super::*;
use crate::context::Context;
use crate::error::Error;
use crate::fixtures::turn_credential;

#[tokio::test]
async fn deleting_with_revoke_on_delete_revokes_and_releases_the_finalizer() {
    let fake = fake_cloudflare().await;
    let cluster = Cluster::default();
    cluster.cloudflare_key(&fake.base_url(), "good-token");
    let mut tc = turn_credential("web");
    tc.spec.revoke_on_delete = true;
    let ctx = cluster.toma();
    cluster.reconcile(&ctx, &tc, at(0)).await.unwrap();
    let stored = cluster.api.get(CREDENTIAL).unwrap();
    assert_eq!(stored["metadata"]["finalizers"], json!(["toma.dev/revoke"]));
    assert_eq!(
        stored["metadata"]["name"], "web",
        "the finalizer patch kept the rest"
    );

    let mut deleted = cluster.stored_credential();
    deleted.metadata.deletion_timestamp = Some(Time(at(60)));
    cluster.reconcile(&ctx, &deleted, at(60)).await.unwrap();

    assert_eq!(fake.revoked(), vec![fake.mints()[0].username.clone()]);
    assert_eq!(
        cluster.api.get(CREDENTIAL).unwrap()["metadata"]["finalizers"],
        json!([])
    );
    drop(ctx);
    assert_eq!(cluster.event_reasons().await, ["Issued", "Revoked"]);
}

#[tokio::test]
async fn a_finalizer_update_from_a_stale_read_is_refused_rather_than_lost() {
    let cluster = Cluster::with_shared_secret_key();
    let mut tc = turn_credential("web");
    tc.spec.revoke_on_delete = true;
    cluster.api.put(CREDENTIAL, &tc);
    let stale = cluster.stored_credential();
    let mut edited = stale.clone();
    edited.metadata.finalizers = Some(vec!["example.com/keep".into()]);
    cluster.api.put(CREDENTIAL, &edited); // someone else's finalizer, and a newer version

    let error = reconcile_at(&stale, &cluster.toma(), at(0)).await.unwrap_err();

    assert!(matches!(error, Error::SetFinalizers { .. }), "{error}");
    assert_eq!(
        cluster.api.get(CREDENTIAL).unwrap()["metadata"]["finalizers"],
        json!(["example.com/keep"])
    );
}

/// A TurnCredential `web` with revokeOnDelete, issued by the fake at `NOW` through `ctx`.
async fn issued_with_revoke_on_delete(
    cluster: &Cluster,
    ctx: &Context,
    fake: &fake_cloudflare::FakeCloudflare,
) {
    cluster.cloudflare_key(&fake.base_url(), "good-token");
    let mut tc = turn_credential("web");
    tc.spec.revoke_on_delete = true;
    cluster.reconcile(ctx, &tc, at(0)).await.unwrap();
}

/// Marks the stored TurnCredential deleted at `at(seconds)` and reconciles it.
async fn delete(cluster: &Cluster, ctx: &Context, seconds: i64) {
    let mut deleted = cluster.stored_credential();
    deleted.metadata.deletion_timestamp = Some(Time(at(seconds)));
    cluster.reconcile(ctx, &deleted, at(seconds)).await.unwrap();
}

#[tokio::test]
async fn deleting_revokes_the_credential_and_the_still_valid_one_it_replaced() {
    let fake = fake_cloudflare().await;
    let cluster = Cluster::default();
    let ctx = cluster.toma();
    issued_with_revoke_on_delete(&cluster, &ctx, &fake).await;
    let mut tc = cluster.stored_credential();
    tc.annotations_mut()
        .insert(crate::api::ROTATE_ANNOTATION.into(), "1".into());
    cluster.reconcile(&ctx, &tc, at(10)).await.unwrap();
    let secret = cluster.stored_secret().unwrap();
    let mints = fake.mints();
    assert_eq!(
        crate::secret::previous(&secret).map(|p| p.username),
        Some(mints[0].username.clone()),
        "the Secret remembers the credential it replaced"
    );

    delete(&cluster, &ctx, 20).await;

    assert_eq!(
        fake.revoked(),
        [mints[1].username.clone(), mints[0].username.clone()]
    );
    drop(ctx);
    assert_eq!(
        cluster.event_reasons().await,
        ["Issued", "ForcedRotation", "Revoked"]
    );
}

#[tokio::test]
async fn deleting_when_the_secret_is_gone_says_nothing_was_revoked() {
    let fake = fake_cloudflare().await;
    let cluster = Cluster::default();
    let ctx = cluster.toma();
    issued_with_revoke_on_delete(&cluster, &ctx, &fake).await;
    cluster.api.remove(SECRET);

    delete(&cluster, &ctx, 20).await;

    assert!(fake.revoked().is_empty());
    assert_eq!(
        cluster.api.get(CREDENTIAL).unwrap()["metadata"]["finalizers"],
        json!([])
    );
    drop(ctx);
    assert_eq!(cluster.event_reasons().await, ["Issued", "NotRevoked"]);
}
