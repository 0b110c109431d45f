//! Failures: each becomes Ready=False with its reason, the Secret is never touched, and the
//! retry is scheduled.

use http::{Method, StatusCode};
use serde_json::json;

use super::*;
use crate::api::UrlFilter;
use crate::fixtures::{credential_at, turn_credential};
use crate::secret::desired_secret;

#[tokio::test]
async fn foreign_secret_is_not_overwritten() {
    let cluster = Cluster::with_shared_secret_key();
    cluster
        .api
        .put(SECRET, plain_secret("web", "password", "hunter2"));

    cluster.reconcile_web_once().await;

    assert!(
        cluster.api.writes_to(SECRETS).is_empty(),
        "the foreign Secret was written"
    );
    let status = cluster.stored_status();
    assert_eq!(status["conditions"][0]["status"], "False");
    assert_eq!(status["conditions"][0]["reason"], "SecretConflict");
    assert_eq!(cluster.event_reasons().await, ["SecretConflict"]);
}

#[tokio::test]
async fn a_secret_that_appears_while_toma_mints_is_not_taken_over() {
    // toma reads no Secret (the GET answers 404), mints, and by the time it writes, someone
    // else has created the Secret: the create-only write is refused and the Secret stays theirs.
    let cluster = Cluster::with_shared_secret_key();
    cluster
        .api
        .put(SECRET, plain_secret("web", "password", "hunter2"));
    cluster.api.fail_once(Method::GET, SECRET, StatusCode::NOT_FOUND);

    cluster.reconcile_web_once().await;

    let writes = cluster.api.writes_to(SECRET);
    assert_eq!(writes.len(), 1, "one create-only write: {writes:?}");
    assert_eq!(writes[0].body["metadata"]["resourceVersion"], "1");
    let secret = cluster.stored_secret().unwrap();
    assert_eq!(
        secret.data.unwrap()["password"].0,
        b"hunter2".to_vec(),
        "the foreign Secret was overwritten"
    );
    assert!(secret.metadata.owner_references.is_none());
    let status = cluster.stored_status();
    assert_eq!(status["conditions"][0]["status"], "False");
    assert_eq!(status["conditions"][0]["reason"], "SecretConflict");
    assert_eq!(cluster.event_reasons().await, ["SecretConflict"]);
}

#[tokio::test]
async fn a_first_write_creates_the_secret_only_if_it_is_still_absent() {
    let cluster = Cluster::with_shared_secret_key();

    cluster.reconcile_web_once().await;

    let writes = cluster.api.writes_to(SECRET);
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].body["metadata"]["resourceVersion"], "1");
    let secret = cluster.stored_secret().expect("the Secret was created");
    assert!(secret.data.unwrap().contains_key("iceServers.json"));
    assert_eq!(cluster.stored_status()["conditions"][0]["reason"], "Issued");
}

#[tokio::test]
async fn missing_key_sets_key_not_found_and_keeps_the_secret() {
    let cluster = Cluster::default();
    let mut tc = turn_credential("web");
    tc.spec.ttl_seconds = 600; // a changed minting field: a new credential is due
    let old = credential_at(NOW - 60, 86_400);
    cluster
        .api
        .put(SECRET, desired_secret(&turn_credential("web"), &old, 1));

    let action = cluster.reconcile(&cluster.toma(), &tc, at(0)).await.unwrap();

    assert!(
        cluster.api.writes_to(SECRETS).is_empty(),
        "the Secret was touched"
    );
    let status = cluster.stored_status();
    assert_eq!(status["conditions"][0]["reason"], "KeyNotFound");
    assert_eq!(
        status["conditions"][0]["message"],
        "ClusterTurnKey cloudflare not found; the current credential stays in Secret web until 2023-11-15T22:12:20Z"
    );
    assert_eq!(status["expiresAt"], "2023-11-15T22:12:20Z");
    assert_eq!(status["failures"], 1);
    assert_eq!(action, requeue(5));
}

#[tokio::test]
async fn missing_token_key_sets_token_not_found() {
    let cluster = Cluster::with_shared_secret_key();
    cluster.token_secret("coturn", "other-key", "x");

    cluster.reconcile_web_once().await;

    let status = cluster.stored_status();
    assert_eq!(status["conditions"][0]["reason"], "TokenNotFound");
    assert_eq!(
        status["conditions"][0]["message"],
        "Secret toma-system/coturn has no non-empty key secret"
    );
}

#[tokio::test]
async fn a_url_filter_that_leaves_no_turn_url_is_an_invalid_spec() {
    let cluster = Cluster::with_shared_secret_key();
    let mut tc = turn_credential("web");
    tc.spec.url_filter = Some(UrlFilter {
        exclude_ports: vec![3478],
        ..UrlFilter::default()
    });

    cluster.reconcile(&cluster.toma(), &tc, at(0)).await.unwrap();

    assert!(cluster.stored_secret().is_none());
    let status = cluster.stored_status();
    assert_eq!(status["conditions"][0]["reason"], "InvalidSpec");
    assert!(
        status["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid spec: no TURN URL is left after spec.urlFilter")
    );
}

#[tokio::test]
async fn repeated_failure_emits_no_second_event() {
    let cluster = Cluster::default();
    let ctx = cluster.toma();
    cluster
        .reconcile(&ctx, &turn_credential("web"), at(0))
        .await
        .unwrap();

    let action = cluster.reconcile_stored(&ctx, at(5)).await.unwrap();

    assert_eq!(cluster.stored_status()["failures"], 2);
    assert_eq!(action, requeue(10), "backoff doubled");
    drop(ctx);
    assert_eq!(
        cluster.event_reasons().await,
        ["KeyNotFound"],
        "one Event per transition"
    );
}

#[tokio::test]
async fn a_failure_after_success_clears_the_renewal_time_in_the_stored_status() {
    // Server-side apply removes what toma applied before and leaves out now; a merge patch of
    // the same status would leave the old renewal time standing.
    let cluster = Cluster::with_shared_secret_key();
    let mut tc = turn_credential("web");
    cluster.reconcile(&cluster.toma(), &tc, at(0)).await.unwrap();
    assert!(cluster.stored_status()["renewalTime"].is_string());

    cluster.api.remove(CLUSTER_KEY);
    tc = cluster.stored_credential();
    tc.spec.ttl_seconds = 600;
    let restarted = cluster.toma(); // with no key in its cache
    cluster.reconcile(&restarted, &tc, at(10)).await.unwrap();

    let status = cluster.stored_status();
    assert_eq!(status["conditions"][0]["reason"], "KeyNotFound");
    assert_eq!(
        status.get("renewalTime"),
        None,
        "renewal time left from the success"
    );
    assert_eq!(
        status["expiresAt"], "2023-11-15T22:13:20Z",
        "the old credential still counts"
    );
    assert_eq!(status["rotations"], 1);
}

#[tokio::test]
async fn wrong_token_sets_unauthorized_without_leaking_the_token() {
    let fake = fake_cloudflare().await;
    let cluster = Cluster::default();
    cluster.cloudflare_key(&fake.base_url(), "wrong-token-value");

    cluster.reconcile_web_once().await;

    assert!(cluster.api.writes_to(SECRETS).is_empty());
    assert_eq!(cluster.stored_status()["conditions"][0]["reason"], "Unauthorized");
    let everything_written = format!("{:?}", cluster.api.requests());
    assert!(
        !everything_written.contains("wrong-token-value"),
        "the token reached the API server"
    );
}

#[tokio::test]
async fn rate_limit_requeues_after_retry_after() {
    let fake = fake_cloudflare().await;
    fake.set_fault(fake_cloudflare::Fault::RateLimited {
        retry_after: Some(42),
    });
    let cluster = Cluster::default();
    cluster.cloudflare_key(&fake.base_url(), "good-token");

    let action = cluster.reconcile_web_once().await;

    assert_eq!(action, requeue(42));
    assert_eq!(cluster.stored_status()["conditions"][0]["reason"], "RateLimited");
}

#[tokio::test]
async fn malformed_answer_sets_invalid_response() {
    let fake = fake_cloudflare().await;
    fake.set_fault(fake_cloudflare::Fault::Malformed);
    let cluster = Cluster::default();
    cluster.cloudflare_key(&fake.base_url(), "good-token");

    cluster.reconcile_web_once().await;

    assert!(cluster.api.writes_to(SECRETS).is_empty());
    assert_eq!(
        cluster.stored_status()["conditions"][0]["reason"],
        "InvalidResponse"
    );
}

#[tokio::test]
async fn unknown_key_id_sets_key_not_found() {
    let fake = fake_cloudflare::FakeCloudflare::start(fake_cloudflare::Config::default())
        .await
        .unwrap();
    let cluster = Cluster::default();
    cluster.cloudflare_key(&fake.base_url(), "good-token");

    cluster.reconcile_web_once().await;

    let status = cluster.stored_status();
    assert_eq!(status["conditions"][0]["reason"], "KeyNotFound");
    assert_eq!(
        status["conditions"][0]["message"],
        json!(format!(
            "ClusterTurnKey cloudflare: the provider does not know TURN key ID {KEY_ID} (HTTP 404); check spec.cloudflare.keyId"
        ))
    );
}

#[tokio::test]
async fn a_foreign_secret_the_watch_cannot_see_is_found_by_the_refused_write_and_read_from_then_on() {
    let cluster = Cluster::with_shared_secret_key();
    cluster
        .api
        .put(SECRET, plain_secret("web", "password", "hunter2"));
    // toma's Secret watch has listed its own Secrets; the foreign one is not labelled as toma's.
    let ctx = cluster.toma_with_no_secrets_listed();

    cluster
        .reconcile(&ctx, &turn_credential("web"), at(0))
        .await
        .unwrap();

    // Written without a read, refused, then read: a conflict.
    assert_eq!(cluster.methods_on(SECRET, 0), [Method::PATCH, Method::GET]);
    assert_eq!(
        cluster.stored_status()["conditions"][0]["reason"],
        "SecretConflict"
    );
    assert_eq!(
        cluster.stored_secret().unwrap().data.unwrap()["password"].0,
        b"hunter2".to_vec()
    );

    // The retry reads first, and writes nothing.
    let before = cluster.api.requests().len();
    cluster.reconcile_stored(&ctx, at(5)).await.unwrap();
    assert_eq!(cluster.methods_on(SECRET, before), [Method::GET]);
}
