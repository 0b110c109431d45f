//! Live keys: a fixed key, token or Secret takes effect within seconds, not at the next retry; a
//! key edit re-mints the credentials that use it, a token rotation does not; a ClusterTurnKey's
//! namespaceSelector decides who may mint with it, and relabelling a namespace is acted on at
//! once; the per-key rate limit spreads a burst.

use std::time::Duration;

use jiff::Timestamp;
use toma::api::TurnCredential;
use toma_testkit::{Env, KEY_ID, TOKEN, apply, kubectl, ready, text, wait_until};

/// A TurnKey `name` in `namespace` reading the token from Secret `secret`.
fn turn_key(env: &Env, name: &str, secret: &str) {
    apply(&format!(
        "apiVersion: toma.dev/v1alpha1\nkind: TurnKey\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  cloudflare: {{keyId: {KEY_ID}, apiTokenSecretRef: {{name: {secret}, key: api-token}}, baseUrl: {url}}}\n",
        ns = env.namespace,
        url = env.fake.base_url()
    ));
}

fn token_secret(env: &Env, name: &str, token: &str) {
    apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\nstringData: {{api-token: \"{token}\"}}\n",
        ns = env.namespace
    ));
}

fn seconds(time: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> i64 {
    time.as_ref().expect("a time in the status").0.as_second()
}

/// The retry toma has scheduled after the failure `tc` reports (it holds no credential yet).
fn next_retry(tc: &TurnCredential) -> i64 {
    let status = tc.status.as_ref().unwrap();
    let failed_at = status.last_failure_time.as_ref().expect("a failure time").0;
    let delay = toma::schedule::retry_delay(status.failures as u32, None, failed_at, None);
    failed_at.as_second() + delay.as_secs() as i64
}

/// Waits until `name` has failed with `reason` three times (its next retry 20 s away), runs
/// `fix`, and checks that it is Issued within 5 s and before that retry was due.
async fn recovers_at_once_when_fixed(env: &Env, name: &str, reason: &str, fix: impl FnOnce()) {
    let failing = wait_until(
        &env.credentials(),
        name,
        &format!("three {reason} failures"),
        Duration::from_secs(60),
        |tc| ready(tc).is_some_and(|(_, r)| r == reason) && tc.status.as_ref().unwrap().failures >= 3,
    )
    .await;
    let retry = next_retry(&failing);
    fix();
    let fixed = Timestamp::now();
    let issued = env.wait_for_reason(name, "Issued").await;
    let issued_at = seconds(&issued.status.unwrap().issued_at);
    let took = Timestamp::now().as_second() - fixed.as_second();
    eprintln!(
        "{name}: {reason} fixed, Issued after {took} s (retry was due in {} s)",
        retry - fixed.as_second()
    );
    assert!(took <= 5, "{name} took {took} s to recover from {reason}");
    assert!(issued_at < retry, "{name} recovered by its retry, not by the fix");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn a_fixed_key_token_or_secret_takes_effect_within_five_seconds() {
    let env = Env::start("live-keys").await;
    // A TurnKey that does not exist yet; one whose token Secret does not; a wrong token.
    env.apply_credential_with_key("no-key", "{name: later}", "");
    turn_key(&env, "tokenless", "later-token");
    env.apply_credential_with_key("no-token", "{name: tokenless}", "");
    turn_key(&env, "wrong", "wrong-token");
    token_secret(&env, "wrong-token", "not-the-token");
    env.apply_credential_with_key("unauthorized", "{name: wrong}", "");

    recovers_at_once_when_fixed(&env, "no-key", "KeyNotFound", || {
        token_secret(&env, "later-key-token", TOKEN);
        turn_key(&env, "later", "later-key-token");
    })
    .await;
    recovers_at_once_when_fixed(&env, "no-token", "TokenNotFound", || {
        token_secret(&env, "later-token", TOKEN)
    })
    .await;
    recovers_at_once_when_fixed(&env, "unauthorized", "Unauthorized", || {
        token_secret(&env, "wrong-token", TOKEN)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn a_key_edit_re_mints_its_credentials_and_a_token_rotation_does_not() {
    let env = Env::start("key-edit").await;
    env.apply_cloudflare_key(TOKEN);
    env.apply_credential("a", "  ttlSeconds: 3600");
    env.apply_credential("b", "  ttlSeconds: 3600");
    env.wait_for_reason("a", "Issued").await;
    env.wait_for_reason("b", "Issued").await;
    let secrets = env.secrets();
    let username = async |name: &str| text(&secrets.get(name).await.unwrap(), "username");
    let (a, b) = (username("a").await, username("b").await);

    // The token rotates: the old one is refused from now on, the credentials minted with it
    // stay valid, and nothing is minted. toma is woken by the Secret (a reconcile of each).
    env.fake.add_key(KEY_ID, "rotated-token");
    let reconciles = env.metric("toma_reconciles_total").await;
    env.apply_cloudflare_key("rotated-token");
    toma_testkit::eventually(Duration::from_secs(5), || async {
        env.metric("toma_reconciles_total").await >= reconciles + 2.0
    })
    .await;
    // Longer than the 30 s over which a key change spreads its re-mints.
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(env.fake.mints().len(), 2, "a token rotation re-minted");

    // Another key ID: both credentials are re-minted with it, with the rotated token.
    let other_key = "fedcba9876543210fedcba9876543210";
    env.fake.add_key(other_key, "rotated-token");
    let edited = Timestamp::now();
    apply(&format!(
        "apiVersion: toma.dev/v1alpha1\nkind: ClusterTurnKey\nmetadata: {{name: {ns}}}\nspec:\n  cloudflare: {{keyId: {other_key}, apiTokenSecretRef: {{name: cloudflare-turn, key: api-token, namespace: {ns}}}, baseUrl: {url}}}\n",
        ns = env.namespace,
        url = env.fake.base_url()
    ));
    for (name, old) in [("a", &a), ("b", &b)] {
        env.wait_for_rotations(name, 2, Duration::from_secs(40)).await;
        let now = username(name).await;
        assert_ne!(&now, old, "{name} kept the credential of the old key");
    }
    let took = Timestamp::now().as_second() - edited.as_second();
    eprintln!("both re-minted within {took} s of the key edit");
    let mints = env.fake.mints();
    assert_eq!(mints.len(), 4, "{mints:?}");
    assert!(mints[2..].iter().all(|m| m.key_id == other_key));
    assert_eq!(
        env.fake.requests().get(&401),
        None,
        "a request went out with the old token"
    );
    let events = env.event_reasons();
    let reissued = events.iter().filter(|r| *r == "ReissuedForKey").count();
    assert_eq!(reissued, 2, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn a_cluster_key_serves_only_the_namespaces_its_selector_allows() {
    let env = Env::start("key-selector").await;
    let ns = env.namespace.clone();
    let key = |selector: &str| {
        apply(&format!(
            "apiVersion: toma.dev/v1alpha1\nkind: ClusterTurnKey\nmetadata: {{name: {ns}}}\nspec:\n  namespaceSelector: {selector}\n  cloudflare: {{keyId: {KEY_ID}, apiTokenSecretRef: {{name: cloudflare-turn, key: api-token, namespace: {ns}}}, baseUrl: {url}}}\n",
            url = env.fake.base_url()
        ))
    };
    env.apply_cloudflare_key(TOKEN);
    key("{matchLabels: {e2e-turn: allowed}}");
    env.apply_credential("web", "  ttlSeconds: 3600");

    let refused = env.wait_for_reason("web", "KeyNotAllowed").await;
    assert_eq!(ready(&refused).unwrap().0, "False");
    assert!(env.secrets().get_opt("web").await.unwrap().is_none());
    assert!(env.fake.mints().is_empty(), "minted for a refused namespace");

    // Labelled: allowed, at once.
    recovers_at_once_when_fixed(&env, "web", "KeyNotAllowed", || {
        kubectl(&["label", "namespace", &ns, "e2e-turn=allowed"], None).unwrap();
    })
    .await;
    let issued = env.secrets().get("web").await.unwrap();

    // Unlabelled: refused at once; the Secret keeps its credential, which is not renewed.
    kubectl(&["label", "namespace", &ns, "e2e-turn-"], None).unwrap();
    let unlabelled = Timestamp::now();
    env.wait_for_reason("web", "KeyNotAllowed").await;
    let took = Timestamp::now().as_second() - unlabelled.as_second();
    assert!(took <= 5, "the relabel took {took} s to be acted on");
    assert_eq!(env.secrets().get("web").await.unwrap().data, issued.data);

    // The selector changes to one the namespace matches: allowed again, nothing re-minted.
    key(&format!(
        "{{matchExpressions: [{{key: kubernetes.io/metadata.name, operator: In, values: [{ns}]}}]}}"
    ));
    env.wait_for_reason("web", "Issued").await;
    assert_eq!(env.secrets().get("web").await.unwrap().data, issued.data);
    assert_eq!(env.fake.mints().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn the_per_key_rate_limit_spreads_a_burst() {
    let mut env = Env::without_toma("rate-limit").await;
    env.start_toma_with(&["--mint-rate-per-key", "4", "--mint-burst-per-key", "1"])
        .await;
    env.apply_cloudflare_key(TOKEN);
    let key_ref = format!("{{kind: ClusterTurnKey, name: {}}}", env.namespace);
    let burst: String = (0..8)
        .map(|i| {
            format!(
                "apiVersion: toma.dev/v1alpha1\nkind: TurnCredential\nmetadata: {{name: c{i}, namespace: {ns}}}\nspec:\n  keyRef: {key_ref}\n---\n",
                ns = env.namespace
            )
        })
        .collect();
    apply(&burst);
    for i in 0..8 {
        env.wait_for_reason(&format!("c{i}"), "Issued").await;
    }
    let mints = env.fake.mints();
    let span =
        mints.iter().map(|m| m.issued_at).max().unwrap() - mints.iter().map(|m| m.issued_at).min().unwrap();
    let waited = env
        .metric("toma_provider_rate_limited_total{provider=\"cloudflare\"}")
        .await;
    eprintln!("8 mints over {span} s, {waited} waited for the limit");
    // One at once, then one every 250 ms: 1.75 s from the first to the last.
    assert!(span >= 1, "8 mints within one second at 4 a second");
    assert!(waited >= 5.0, "only {waited} requests waited");
    assert_eq!(env.fake.requests().get(&429), None);
}
