//! Keys that change under a valid credential: a key that now mints differently re-mints it,
//! spread over a short while; a rotated Cloudflare token does not; a ClusterTurnKey that no
//! longer allows the namespace refuses it and leaves the Secret as it is.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

use super::*;
use crate::api::KeyName;
use crate::fixtures::turn_credential;
use crate::secret::KEY_FINGERPRINT_ANNOTATION;

const NAMESPACE: &str = "/api/v1/namespaces/app";

fn key_name() -> KeyName {
    KeyName::of(&turn_credential("web"))
}

fn key_fingerprint(cluster: &Cluster) -> String {
    cluster.stored_secret().unwrap().annotations()[KEY_FINGERPRINT_ANNOTATION].clone()
}

fn password(cluster: &Cluster) -> Vec<u8> {
    cluster.stored_secret().unwrap().data.unwrap()["credential"]
        .0
        .clone()
}

#[tokio::test]
async fn a_changed_shared_secret_re_mints_once_within_the_spread() {
    let cluster = Cluster::with_shared_secret_key();
    let ctx = cluster.toma();
    cluster
        .reconcile(&ctx, &turn_credential("web"), at(0))
        .await
        .unwrap();
    let (before, fingerprint) = (password(&cluster), key_fingerprint(&cluster));

    // The shared secret changes; the key watch drops the cached key.
    cluster.token_secret("coturn", "secret", "south");
    ctx.keys.forget(&key_name());
    let waiting = cluster.reconcile_stored(&ctx, at(10)).await.unwrap();

    assert_eq!(password(&cluster), before, "re-minted at once, not spread");
    let spread = (1..30)
        .find(|s| waiting == requeue(*s))
        .unwrap_or_else(|| panic!("{waiting:?} is not within the 30 s spread"));
    cluster
        .reconcile_stored(&ctx, at(10 + spread as i64))
        .await
        .unwrap();

    assert_ne!(password(&cluster), before);
    assert_ne!(key_fingerprint(&cluster), fingerprint);
    // Now the credential is of the current key: nothing more is minted.
    let after = password(&cluster);
    cluster.reconcile_stored(&ctx, at(60)).await.unwrap();
    assert_eq!(password(&cluster), after);
    drop(ctx);
    assert_eq!(cluster.event_reasons().await, ["Issued", "ReissuedForKey"]);
}

#[tokio::test]
async fn a_rotated_cloudflare_token_mints_nothing_but_another_key_id_does() {
    let fake = fake_cloudflare().await;
    let cluster = Cluster::default();
    cluster.cloudflare_key(&fake.base_url(), "good-token");
    let ctx = cluster.toma();
    cluster
        .reconcile(&ctx, &turn_credential("web"), at(0))
        .await
        .unwrap();

    fake.add_key(KEY_ID, "rotated-token");
    cluster.cloudflare_key(&fake.base_url(), "rotated-token");
    ctx.keys.forget(&key_name());
    let action = cluster.reconcile_stored(&ctx, at(10)).await.unwrap();
    assert_eq!(fake.mints().len(), 1, "a token rotation re-minted");
    assert!(
        cluster.api.writes_to(SECRET).len() == 1,
        "the Secret was rewritten ({action:?})"
    );

    // Another key ID mints differently: a re-mint, within the spread.
    let other_key = "fedcba9876543210fedcba9876543210";
    fake.add_key(other_key, "rotated-token");
    let mut key: ClusterTurnKey = serde_json::from_value(cluster.api.get(CLUSTER_KEY).unwrap()).unwrap();
    key.spec.cloudflare.as_mut().unwrap().key_id = other_key.into();
    cluster.api.put(CLUSTER_KEY, key);
    ctx.keys.forget(&key_name());
    cluster.reconcile_stored(&ctx, at(20)).await.unwrap();
    cluster.reconcile_stored(&ctx, at(50)).await.unwrap();
    let mints = fake.mints();
    assert_eq!(mints.len(), 2, "{mints:?}");
    assert_eq!(mints[1].key_id, other_key);
}

fn allow_only_labelled_namespaces(cluster: &Cluster) {
    let mut key: ClusterTurnKey = serde_json::from_value(cluster.api.get(CLUSTER_KEY).unwrap()).unwrap();
    key.spec.namespace_selector = Some(LabelSelector {
        match_labels: Some(BTreeMap::from([("turn".into(), "allowed".into())])),
        ..LabelSelector::default()
    });
    cluster.api.put(CLUSTER_KEY, key);
}

fn namespace_app(cluster: &Cluster, labels: &[(&str, &str)]) {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    cluster.api.put(
        NAMESPACE,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "app", "labels": labels}
        }),
    );
}

#[tokio::test]
async fn a_cluster_key_mints_only_for_the_namespaces_its_selector_allows() {
    let cluster = Cluster::with_shared_secret_key();
    allow_only_labelled_namespaces(&cluster);
    namespace_app(&cluster, &[("team", "web")]);
    let ctx = cluster.toma();

    cluster
        .reconcile(&ctx, &turn_credential("web"), at(0))
        .await
        .unwrap();
    let status = cluster.stored_status();
    assert_eq!(status["conditions"][0]["status"], "False");
    assert_eq!(status["conditions"][0]["reason"], "KeyNotAllowed");
    assert_eq!(
        status["conditions"][0]["message"],
        "ClusterTurnKey cloudflare does not allow namespace app: its labels do not match spec.namespaceSelector"
    );
    assert!(
        cluster.stored_secret().is_none(),
        "minted for a refused namespace"
    );

    // Labelled: allowed.
    namespace_app(&cluster, &[("team", "web"), ("turn", "allowed")]);
    cluster.reconcile_stored(&ctx, at(10)).await.unwrap();
    assert_eq!(cluster.stored_status()["conditions"][0]["reason"], "Issued");
    let issued = cluster.stored_secret().unwrap();

    // Unlabelled again: refused, and the Secret keeps its credential until it expires.
    namespace_app(&cluster, &[("team", "web")]);
    cluster.reconcile_stored(&ctx, at(20)).await.unwrap();
    assert_eq!(
        cluster.stored_status()["conditions"][0]["reason"],
        "KeyNotAllowed"
    );
    assert_eq!(cluster.stored_secret().unwrap().data, issued.data);
    // ...and is not renewed when renewal comes.
    cluster.reconcile_stored(&ctx, at(86_000)).await.unwrap();
    assert_eq!(cluster.stored_secret().unwrap().data, issued.data);
    drop(ctx);
    assert_eq!(
        cluster.event_reasons().await,
        ["KeyNotAllowed", "Issued", "KeyNotAllowed"]
    );
}

#[tokio::test]
async fn once_namespaces_are_watched_the_selector_reads_their_labels_without_a_request() {
    let cluster = Cluster::with_shared_secret_key();
    allow_only_labelled_namespaces(&cluster);
    let ctx = cluster.toma();
    // What the key watch hands on after listing namespaces, and after a relabel.
    ctx.keys
        .namespaces_listed(std::collections::HashMap::from([("app".into(), BTreeMap::new())]));

    cluster
        .reconcile(&ctx, &turn_credential("web"), at(0))
        .await
        .unwrap();
    assert_eq!(
        cluster.stored_status()["conditions"][0]["reason"],
        "KeyNotAllowed"
    );

    let allowed = BTreeMap::from([("turn".to_string(), "allowed".to_string())]);
    assert_eq!(ctx.keys.namespace_labelled("app", &allowed), Some(true));
    cluster.reconcile_stored(&ctx, at(10)).await.unwrap();
    assert_eq!(cluster.stored_status()["conditions"][0]["reason"], "Issued");
    assert!(
        cluster.api.requests().iter().all(|r| r.path != NAMESPACE),
        "the namespace was read"
    );
}
