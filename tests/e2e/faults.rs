//! Faults: the provider misbehaving for a while, toma killed mid-rotation, a credential nearing
//! expiry while the provider fails. Nothing may be lost, and status and Events must say what
//! happened.

use std::time::Duration;

use fake_cloudflare::Fault;
use jiff::Timestamp;

use toma_testkit::{Env, SHORT_LIVED, TOKEN, ready, text};

/// Provider requests time out after this long in these tests.
const PROVIDER_TIMEOUT: &str = "2";

async fn env_with_issued_credential(test: &str) -> Env {
    let mut env = Env::without_toma(test).await;
    env.start_toma_with(&["--provider-timeout-seconds", PROVIDER_TIMEOUT])
        .await;
    env.apply_cloudflare_key(TOKEN);
    env.apply_credential("web", "  ttlSeconds: 3600");
    env.wait_for_reason("web", "Issued").await;
    env
}

/// Sets `fault`, forces a rotation, expects `reason` while the Secret keeps the old credential,
/// then lifts the fault and expects recovery within one backoff step.
async fn provider_fault_then_recovery(test: &str, fault: Fault, reason: &str) {
    let env = env_with_issued_credential(test).await;
    let before = env.secrets().get("web").await.unwrap();
    env.fake.set_fault(fault);
    env.force_rotation("web", "1");

    let failed = env.wait_for_reason("web", reason).await;
    let status = failed.status.clone().unwrap();
    assert_eq!(ready(&failed).unwrap().0, "False");
    let message = &status.conditions[0].message;
    assert!(
        message.contains("the current credential stays in Secret web until"),
        "{message}"
    );
    let during = env.secrets().get("web").await.unwrap();
    assert_eq!(
        during.data, before.data,
        "the Secret changed while the provider failed"
    );
    let events = env.event_reasons();
    assert!(
        events.iter().any(|r| r == reason),
        "no {reason} Event in {events:?}"
    );

    env.fake.clear_fault();
    let lifted = Timestamp::now();
    let recovered = env.wait_for_reason("web", "Issued").await;
    let waited = Timestamp::now().as_second() - lifted.as_second();
    // Backoff starts at 5 s and doubles; the first attempts fail within seconds, so recovery
    // comes within one step of at most 20 s.
    assert!(
        waited <= 25,
        "recovery took {waited} s after the provider recovered"
    );
    let after = env.secrets().get("web").await.unwrap();
    assert_eq!(
        text(&after, "username"),
        env.fake.mints().last().unwrap().username
    );
    assert_eq!(recovered.status.unwrap().failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn provider_answering_401_sets_unauthorized_then_recovers() {
    provider_fault_then_recovery("fault-401", Fault::Unauthorized, "Unauthorized").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn provider_answering_404_sets_key_not_found_then_recovers() {
    provider_fault_then_recovery("fault-404", Fault::NotFound, "KeyNotFound").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn provider_answering_503_sets_provider_error_then_recovers() {
    provider_fault_then_recovery("fault-503", Fault::ServerError { status: 503 }, "ProviderError").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn provider_timing_out_sets_provider_error_then_recovers() {
    provider_fault_then_recovery("fault-slow", Fault::Slow { delay_ms: 5_000 }, "ProviderError").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn malformed_provider_answer_sets_invalid_response_then_recovers() {
    provider_fault_then_recovery("fault-json", Fault::Malformed, "InvalidResponse").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn rate_limit_is_waited_out_as_retry_after_asks() {
    let env = env_with_issued_credential("fault-429").await;
    let before = env.secrets().get("web").await.unwrap();
    env.fake
        .set_fault_times(Fault::RateLimited { retry_after: Some(8) }, 1);
    env.force_rotation("web", "1");

    let limited = env.wait_for_reason("web", "RateLimited").await;
    let failed_at = limited.status.unwrap().last_failure_time.unwrap().0;
    assert_eq!(env.secrets().get("web").await.unwrap().data, before.data);
    env.wait_for_reason("web", "Issued").await;
    let retried_at = env.fake.mints().last().unwrap().issued_at as i64;
    let waited = retried_at - failed_at.as_second();
    assert!(
        (8..=12).contains(&waited),
        "retried {waited} s after a 429 asking for 8 s"
    );
    assert_eq!(env.fake.requests().get(&429), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn a_credential_near_expiry_is_retried_more_often_while_the_provider_fails() {
    let env = Env::start("fault-expiring").await;
    env.apply_cloudflare_key(TOKEN);
    // Renewal is due 10 s after each mint, with 50 s of validity left.
    env.apply_credential("web", SHORT_LIVED);
    let issued = env.wait_for_reason("web", "Issued").await;
    let expires_at = issued.status.unwrap().expires_at.unwrap().0;
    env.fake.set_fault(Fault::ServerError { status: 500 });
    // From here on no rotation can succeed: this is what the Secret must keep holding.
    let kept = env.secrets().get("web").await.unwrap();

    let failing = env.wait_for_reason("web", "ProviderError").await;
    let status = failing.status.unwrap();
    assert_eq!(
        status.expires_at.unwrap().0,
        expires_at,
        "status keeps the old expiry"
    );
    let message = &status.conditions[0].message;
    assert!(message.contains(&expires_at.to_string()), "{message}");
    let metrics = env.metrics().await;
    assert!(
        metrics.contains(&format!(
            "toma_credential_expiration_timestamp_seconds{{namespace=\"{}\",name=\"web\"}} {}",
            env.namespace,
            expires_at.as_second()
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "toma_credential_ready{{namespace=\"{}\",name=\"web\"}} 0",
            env.namespace
        )),
        "{metrics}"
    );

    // Doubling alone (waits of 5, 10, 20 s) would try 4 times before expiry; capping each wait
    // at a quarter of the remaining life tries more often the nearer expiry is.
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs(
            u64::try_from(expires_at.as_second() - Timestamp::now().as_second()).unwrap_or(0),
        );
    tokio::time::sleep_until(deadline).await;
    let attempts = env.fake.requests().get(&500).copied().unwrap_or(0);
    assert!(attempts >= 7, "only {attempts} attempts before expiry");
    let secret = env.secrets().get("web").await.unwrap();
    assert!(secret.data.is_some(), "the Secret was blanked");
    assert_eq!(
        secret.data, kept.data,
        "the Secret changed while the provider failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn toma_killed_mid_rotation_loses_no_secret_and_mints_at_most_once_more_per_kill() {
    let mut env = Env::start("kill").await;
    env.apply_cloudflare_key(TOKEN);
    env.apply_credential("web", SHORT_LIVED);
    env.wait_for_reason("web", "Issued").await;

    let secrets = env.secrets();
    let sampler = {
        let secrets = secrets.clone();
        tokio::spawn(async move {
            let mut missing = 0;
            for _ in 0..200 {
                let secret = secrets.get_opt("web").await.unwrap();
                if secret.is_none_or(|s| s.data.is_none()) {
                    missing += 1;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            missing
        })
    };
    let kills = 5;
    for i in 0..kills {
        // Spread the kills over the 10 s rotation cycle.
        tokio::time::sleep(Duration::from_millis(1_300 + 1_700 * i)).await;
        env.toma.take().unwrap().kill();
        env.start_toma().await;
    }
    assert_eq!(
        sampler.await.unwrap(),
        0,
        "the Secret was missing or empty at some instant"
    );

    let status = env.credentials().get("web").await.unwrap().status.unwrap();
    let mints = env.fake.mints().len() as i64;
    assert!(
        mints <= status.rotations + kills as i64,
        "{mints} mints for {} rotations and {kills} kills",
        status.rotations
    );
    env.assert_secret_holds_a_live_issued_credential("web").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn a_secret_created_by_someone_else_while_toma_mints_is_not_taken_over() {
    let env = Env::start("race").await;
    env.apply_cloudflare_key(TOKEN);
    // The provider takes 3 s to answer the first mint; meanwhile someone creates the Secret.
    env.fake.set_fault_times(Fault::Slow { delay_ms: 3_000 }, 1);
    env.apply_credential("web", "  ttlSeconds: 3600");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        env.secrets().get_opt("web").await.unwrap().is_none(),
        "toma wrote before the mint came back"
    );
    toma_testkit::apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: web, namespace: {}}}\nstringData: {{password: hunter2}}\n",
        env.namespace
    ));

    let tc = env.wait_for_reason("web", "SecretConflict").await;
    let foreign = env.secrets().get("web").await.unwrap();
    assert_eq!(text(&foreign, "password"), "hunter2");
    assert_eq!(foreign.data.as_ref().unwrap().len(), 1, "toma added keys");
    assert!(foreign.metadata.owner_references.is_none(), "toma took ownership");
    assert!(foreign.metadata.labels.is_none(), "toma labelled it");
    assert_eq!(env.fake.mints().len(), 1, "the mint did come back");
    let message = &tc.status.unwrap().conditions[0].message;
    assert!(message.contains("not owned by this TurnCredential"), "{message}");
}
