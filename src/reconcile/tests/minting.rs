//! When toma mints, and what it writes when it does.

use http::Method;
use k8s_openapi::ByteString;
use kube::ResourceExt;

use super::*;
use crate::api::ROTATE_ANNOTATION;
use crate::fixtures::{credential_at, turn_credential};
use crate::secret::{self, desired_secret};

#[tokio::test]
async fn a_missing_secret_is_created_with_a_fresh_credential() {
    let cluster = Cluster::with_shared_secret_key();
    let tc = turn_credential("web");

    let action = cluster.reconcile(&cluster.toma(), &tc, at(0)).await.unwrap();

    assert_eq!(cluster.api.writes_to(SECRET).len(), 1, "one apply of the Secret");
    let secret = cluster.stored_secret().unwrap();
    assert!(secret::is_owned_by(&secret, &tc));
    let credential = secret::stored_credential(&secret).expect("a credential toma can read back");
    assert_eq!(
        credential.turn_pair().unwrap().0,
        "1700086400",
        "the expiry, a day on"
    );
    let status = cluster.stored_status();
    assert_eq!(status["conditions"][0]["reason"], "Issued");
    assert_eq!(status["issuedAt"], "2023-11-14T22:13:20Z");
    assert_eq!(status["expiresAt"], "2023-11-15T22:13:20Z");
    assert_eq!(status["rotations"], 1);
    assert_eq!(cluster.status_writes().len(), 1);
    assert_eq!(cluster.event_reasons().await, ["Issued"]);
    assert_eq!(
        action,
        requeue(3600),
        "renewal is 16 hours away: the hourly resync comes first"
    );
}

#[tokio::test]
async fn a_short_lived_credential_is_renewed_at_half_of_its_life_and_flagged_for_mounts() {
    let cluster = Cluster::with_shared_secret_key();
    let ctx = cluster.toma();
    let mut tc = turn_credential("web");
    tc.spec.ttl_seconds = 60; // renewBefore 30 s by default: too short for any jitter

    let action = cluster.reconcile(&ctx, &tc, at(0)).await.unwrap();
    cluster.reconcile_stored(&ctx, at(1)).await.unwrap();

    let status = cluster.stored_status();
    assert_eq!(status["renewalTime"], "2023-11-14T22:13:50Z");
    assert_eq!(action, requeue(30));
    assert_eq!(status["conditions"][0]["type"], "Ready");
    assert_eq!(status["conditions"][1]["type"], "MountSafe");
    assert_eq!(status["conditions"][1]["status"], "False");
    assert_eq!(status["conditions"][1]["reason"], "RenewBeforeTooShort");
    drop(ctx);
    assert_eq!(
        cluster.event_reasons().await,
        ["Issued", "RenewBeforeTooShort"],
        "one Warning, not one per reconcile"
    );
}

#[tokio::test]
async fn a_credential_renewed_long_enough_before_expiry_is_mount_safe_and_draws_no_warning() {
    let cluster = Cluster::with_shared_secret_key();
    let mut tc = turn_credential("web");
    tc.spec.ttl_seconds = 240; // renewBefore 120 s by default

    let action = cluster.reconcile(&cluster.toma(), &tc, at(0)).await.unwrap();

    let status = cluster.stored_status();
    assert_eq!(status["conditions"][1]["type"], "MountSafe");
    assert_eq!(status["conditions"][1]["status"], "True");
    assert_eq!(status["conditions"][1]["reason"], "CoversKubeletDelay");
    let renewal: Timestamp = status["renewalTime"].as_str().unwrap().parse().unwrap();
    let before_expiry = (at(240) - renewal).get_seconds();
    assert!(
        (120..126).contains(&before_expiry),
        "renewed {before_expiry} s before expiry"
    );
    assert_eq!(action, requeue((renewal - at(0)).get_seconds() as u64));
    assert_eq!(cluster.event_reasons().await, ["Issued"]);
}

#[tokio::test]
async fn a_restarted_toma_with_a_valid_credential_mints_and_writes_nothing() {
    let cluster = Cluster::with_shared_secret_key();
    cluster.reconcile_web_once().await;
    let before = cluster.api.requests().len();

    cluster.reconcile_stored(&cluster.toma(), at(600)).await.unwrap();

    // Events of the first toma may still be on their way: they are not the second's.
    let after: Vec<_> = cluster.api.requests()[before..]
        .iter()
        .filter(|r| !r.path.starts_with(EVENTS))
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    // The key is read to see that it still mints as the credential was minted: once per key,
    // as the key watch keeps it fresh afterwards.
    assert_eq!(
        after,
        [
            (Method::GET, SECRET.to_string()),
            (Method::GET, CLUSTER_KEY.to_string()),
            (Method::GET, COTURN_SECRET.to_string())
        ],
        "only the Secret and the key are read"
    );
}

#[tokio::test]
async fn reconciling_an_up_to_date_credential_again_writes_nothing() {
    let cluster = Cluster::with_shared_secret_key();
    let ctx = cluster.toma();
    cluster
        .reconcile(&ctx, &turn_credential("web"), at(0))
        .await
        .unwrap();
    let writes = |cluster: &Cluster| {
        let requests = cluster.api.requests();
        requests
            .iter()
            .filter(|r| r.method != Method::GET && !r.path.starts_with(EVENTS))
            .count()
    };
    let before = writes(&cluster);

    cluster.reconcile_stored(&ctx, at(1)).await.unwrap();

    assert_eq!(writes(&cluster), before, "a second reconcile wrote again");
    drop(ctx);
    assert_eq!(cluster.event_reasons().await, ["Issued"]);
}

#[tokio::test]
async fn each_reason_for_a_new_credential_has_its_event_and_metric() {
    let cluster = Cluster::with_shared_secret_key();
    let ctx = cluster.toma();
    let mut tc = turn_credential("web");
    cluster.reconcile(&ctx, &tc, at(0)).await.unwrap();

    tc.annotations_mut().insert(ROTATE_ANNOTATION.into(), "1".into());
    cluster.reconcile(&ctx, &tc, at(10)).await.unwrap();
    tc.spec.ttl_seconds = 600; // renewBefore 200 s, jitter under 10 s
    cluster.reconcile(&ctx, &tc, at(20)).await.unwrap();
    cluster.reconcile_stored(&ctx, at(420)).await.unwrap(); // renewal due
    cluster.reconcile_stored(&ctx, at(420 + 600)).await.unwrap(); // expired
    let mut edited = cluster.stored_secret().unwrap();
    edited
        .data
        .as_mut()
        .unwrap()
        .insert("credential".into(), ByteString(b"x".to_vec()));
    cluster.api.put(SECRET, edited);
    cluster.reconcile_stored(&ctx, at(1030)).await.unwrap();
    cluster.api.remove(SECRET);
    cluster.reconcile_stored(&ctx, at(1040)).await.unwrap();

    let metrics = ctx.metrics.encode();
    for reason in [
        "NoSecret",
        "Forced",
        "SpecChanged",
        "RenewalDue",
        "Expired",
        "Repair",
    ] {
        let count = if reason == "NoSecret" { 2 } else { 1 };
        let series = format!(
            "toma_credentials_minted_total{{provider=\"shared-secret\",reason=\"{reason}\"}} {count}"
        );
        assert!(metrics.contains(&series), "{series} in\n{metrics}");
    }
    assert_eq!(cluster.stored_status()["rotations"], 7);
    drop(ctx);
    assert_eq!(
        cluster.event_reasons().await,
        [
            "Issued",
            "ForcedRotation",
            "Reissued",
            "Rotated",
            "ReissuedAfterExpiry",
            "Repaired",
            "Issued"
        ]
    );
}

#[tokio::test]
async fn a_label_someone_else_added_to_the_secret_survives_a_new_credential() {
    let cluster = Cluster::with_shared_secret_key();
    let ctx = cluster.toma();
    let mut tc = turn_credential("web");
    cluster.reconcile(&ctx, &tc, at(0)).await.unwrap();
    let mut labelled = cluster.stored_secret().unwrap();
    labelled.labels_mut().insert("team".into(), "rtc".into());
    cluster.api.put(SECRET, labelled);

    tc.annotations_mut().insert(ROTATE_ANNOTATION.into(), "1".into());
    cluster.reconcile(&ctx, &tc, at(10)).await.unwrap();

    let secret = cluster.stored_secret().unwrap();
    assert_eq!(secret.labels()["team"], "rtc");
    assert_eq!(secret::rotations(&secret), 2, "and the new credential is there");
}

#[tokio::test]
async fn cloudflare_mint_writes_the_ice_servers_it_answered() {
    let fake = fake_cloudflare().await;
    let cluster = Cluster::default();
    cluster.cloudflare_key(&fake.base_url(), "good-token\n");

    cluster.reconcile_web_once().await;

    let mints = fake.mints();
    assert_eq!(mints.len(), 1, "exactly one mint");
    assert_eq!(mints[0].ttl, 86_400);
    let credential = secret::stored_credential(&cluster.stored_secret().unwrap()).unwrap();
    assert_eq!(
        credential.turn_pair(),
        Some((mints[0].username.as_str(), mints[0].credential.as_str()))
    );
}

#[tokio::test]
async fn credentials_minted_together_read_their_key_once() {
    let cluster = Cluster::with_shared_secret_key();
    let ctx = cluster.toma();
    for name in ["a", "b", "c"] {
        let mut tc = turn_credential(name);
        tc.metadata.uid = Some(format!("uid-{name}"));
        let path = format!("/apis/toma.dev/v1alpha1/namespaces/app/turncredentials/{name}");
        cluster.api.put(&path, &tc);
        reconcile_at(&tc, &ctx, at(0)).await.unwrap();
    }

    let key_reads = cluster
        .api
        .requests()
        .iter()
        .filter(|r| r.path == CLUSTER_KEY)
        .count();
    assert_eq!(key_reads, 1);
    assert_eq!(cluster.api.writes_to(SECRETS).len(), 3);
}

#[tokio::test]
async fn a_stale_status_does_not_undo_the_rotation_count() {
    let cluster = Cluster::default();
    let tc = turn_credential("web"); // as the watch cache may still show it: no status yet
    cluster
        .api
        .put(SECRET, desired_secret(&tc, &credential_at(NOW - 60, 86_400), 3));

    cluster.reconcile(&cluster.toma(), &tc, at(0)).await.unwrap();

    assert!(
        cluster.api.writes_to(SECRETS).is_empty(),
        "nothing to mint or rewrite"
    );
    assert_eq!(cluster.stored_status()["rotations"], 3);
}

#[tokio::test]
async fn removing_the_rotate_annotation_mints_nothing() {
    let cluster = Cluster::with_shared_secret_key();
    let ctx = cluster.toma();
    let mut tc = turn_credential("web");
    tc.annotations_mut().insert(ROTATE_ANNOTATION.into(), "1".into());
    cluster.reconcile(&ctx, &tc, at(0)).await.unwrap();
    let minted = secret::stored_credential(&cluster.stored_secret().unwrap());

    tc.annotations_mut().remove(ROTATE_ANNOTATION);
    cluster.reconcile(&ctx, &tc, at(10)).await.unwrap();

    let secret = cluster.stored_secret().unwrap();
    assert_eq!(secret::stored_credential(&secret), minted, "the same credential");
    assert!(
        !secret
            .annotations()
            .contains_key(secret::ROTATE_REQUEST_ANNOTATION)
    );
    assert_eq!(cluster.stored_status()["rotations"], 1);
    drop(ctx);
    assert_eq!(cluster.event_reasons().await, ["Issued"]);
}

#[tokio::test]
async fn a_new_credential_whose_secret_the_watch_knows_to_be_absent_is_written_unread() {
    let cluster = Cluster::with_shared_secret_key();
    let ctx = cluster.toma_with_no_secrets_listed();

    cluster
        .reconcile(&ctx, &turn_credential("web"), at(0))
        .await
        .unwrap();

    assert_eq!(
        cluster.methods_on(SECRET, 0),
        [Method::PATCH],
        "one create-only write, no read"
    );
    assert_eq!(
        cluster.api.writes_to(SECRET)[0].body["metadata"]["resourceVersion"],
        "1"
    );
    assert_eq!(cluster.stored_status()["conditions"][0]["reason"], "Issued");
    // Now known: the next reconcile reads it, and writes nothing.
    let before = cluster.api.writes_to(SECRET).len();
    cluster.reconcile_stored(&ctx, at(60)).await.unwrap();
    assert_eq!(cluster.api.writes_to(SECRET).len(), before);
}
