//! Deletion with revokeOnDelete: the finalizer, the revoke, and letting go.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::*;
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
    let cluster = Cluster::default();
    cluster.shared_secret_key();
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
