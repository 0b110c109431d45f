//! End-to-end tests: the real `toma` binary against a real kube-apiserver, etcd and
//! kube-controller-manager (hack/cluster.sh), driven with kubectl as a user would, with the
//! fake Cloudflare as the provider. Run them with `make test`, which brings the control plane
//! up; they are `#[ignore]`d so that a bare `cargo test` needs no cluster.

mod cli;
mod cluster_wide;
mod disruptive;
mod faults;
mod helm;
mod invalid;
mod keys;
mod leader;
mod mount;
mod pods;
mod rollout;

use std::time::Duration;

use k8s_openapi::ByteString;
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use toma_testkit::{Env, SHORT_LIVED, TOKEN, apply, eventually, kubectl, ready, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn applied_credential_produces_the_documented_secret_and_status() {
    let env = Env::start("happy").await;
    env.apply_cloudflare_key(TOKEN);
    env.apply_credential("web", "  ttlSeconds: 3600\n  secretName: web-ice");

    let tc = env.wait_for_reason("web", "Issued").await;
    let status = tc.status.clone().unwrap();
    let secret = env.secrets().get("web-ice").await.unwrap();

    let mints = env.fake.mints();
    assert_eq!(mints.len(), 1);
    assert_eq!(mints[0].ttl, 3600);
    let ice: serde_json::Value = serde_json::from_str(&text(&secret, "iceServers.json")).unwrap();
    let turn = ice["iceServers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s.get("username").is_some())
        .unwrap();
    assert_eq!(turn["username"], json!(mints[0].username));
    assert_eq!(turn["credential"], json!(mints[0].credential));
    assert_eq!(text(&secret, "username"), mints[0].username);
    assert_eq!(text(&secret, "credential"), mints[0].credential);
    assert!(text(&secret, "urls").lines().any(|l| l.starts_with("turns:")));
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    assert_eq!(secret.labels()["app.kubernetes.io/managed-by"], "toma");
    assert_eq!(secret.owner_references()[0].uid, tc.uid().unwrap());
    let expires_at = status.expires_at.unwrap().0;
    assert_eq!(text(&secret, "expiresAt"), expires_at.to_string());
    assert_eq!(
        secret.annotations()["toma.dev/expires-at"],
        expires_at.to_string()
    );
    let issued_at = status.issued_at.unwrap().0;
    assert_eq!(expires_at.as_second() - issued_at.as_second(), 3600);
    let renewal = status.renewal_time.unwrap().0;
    assert!(
        renewal < expires_at && renewal.as_second() >= issued_at.as_second() + 2400 - 60,
        "renewal at {renewal} for a credential issued at {issued_at}, expiring at {expires_at}"
    );
    assert_eq!(status.observed_generation, tc.metadata.generation);

    let table = kubectl(&["get", "tc", "-n", &env.namespace], None).unwrap();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, vec!["NAME", "READY", "EXPIRES", "AGE"]);
    assert!(
        table.lines().nth(1).unwrap().split_whitespace().nth(1) == Some("True"),
        "{table}"
    );
    let metrics = env.metrics().await;
    assert!(
        metrics.contains(&format!(
            "toma_credential_ready{{namespace=\"{}\",name=\"web\"}} 1",
            env.namespace
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "toma_credential_expiration_timestamp_seconds{{namespace=\"{}\",name=\"web\"}} {}",
            env.namespace,
            expires_at.as_second()
        )),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn short_lived_credential_rotates_on_time_with_one_mint_per_rotation() {
    let env = Env::start("rotate").await;
    env.apply_cloudflare_key(TOKEN);
    env.apply_credential("web", SHORT_LIVED);

    env.wait_for_rotations("web", 4, Duration::from_secs(60)).await;

    let tc = env.credentials().get("web").await.unwrap();
    let status = tc.status.unwrap();
    let mints = env.fake.mints();
    // Between reading status and mints another rotation may have begun.
    assert!(
        mints.len() as i64 == status.rotations || mints.len() as i64 == status.rotations + 1,
        "{} mints for {} rotations",
        mints.len(),
        status.rotations
    );
    for pair in mints.windows(2) {
        let gap = pair[1].issued_at - pair[0].issued_at;
        assert!(
            (6..=12).contains(&gap),
            "rotation {gap} s after the previous one, expected 7.5 to 10"
        );
    }
    let secret = env.secrets().get("web").await.unwrap();
    let latest = env
        .fake
        .mints()
        .into_iter()
        .find(|m| m.username == text(&secret, "username"));
    assert!(
        latest.is_some(),
        "the Secret holds a credential the provider issued"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn restarting_toma_mints_nothing_while_credentials_are_valid() {
    let mut env = Env::start("restart").await;
    env.apply_cloudflare_key(TOKEN);
    env.apply_credential("a", "  ttlSeconds: 3600");
    env.apply_credential("b", "  ttlSeconds: 3600");
    env.wait_for_reason("a", "Issued").await;
    env.wait_for_reason("b", "Issued").await;
    let before = env.fake.mints().len();
    let secret_before = env.secrets().get("a").await.unwrap();

    env.stop_toma();
    env.start_toma().await;
    // Wait until the new process has reconciled both credentials.
    eventually(Duration::from_secs(30), || async {
        let metrics = env.metrics().await;
        metrics
            .lines()
            .any(|l| l.starts_with("toma_reconciles_total ") && !l.ends_with(" 0"))
            && metrics
                .matches("toma_credential_renewal_timestamp_seconds{")
                .count()
                == 2
    })
    .await;

    assert_eq!(env.fake.mints().len(), before, "a restart minted credentials");
    // One reconcile each: the first list of their Secrets wakes neither again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        env.metric("toma_reconciles_total").await,
        2.0,
        "a restart reconciles each credential once"
    );
    let secret_after = env.secrets().get("a").await.unwrap();
    assert_eq!(
        secret_after.resource_version(),
        secret_before.resource_version(),
        "the Secret was rewritten"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn toma_is_not_woken_by_its_own_secret_writes_and_its_events_arrive() {
    const CREDENTIALS: usize = 10;
    let env = Env::start("quiet").await;
    env.apply_cloudflare_key(TOKEN);
    for i in 0..CREDENTIALS {
        env.apply_credential(&format!("tc-{i}"), "  ttlSeconds: 3600");
    }
    for i in 0..CREDENTIALS {
        env.wait_for_reason(&format!("tc-{i}"), "Issued").await;
    }
    // Each Secret write comes back to toma as a watch event, often before the write's own
    // answer. Were it taken for a change, every credential would be reconciled twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let reconciles = env.metric("toma_reconciles_total").await;
    assert_eq!(reconciles, CREDENTIALS as f64, "one reconcile per new credential");
    assert_eq!(env.fake.mints().len(), CREDENTIALS);

    // Events are written in the background, one per issued credential.
    eventually(Duration::from_secs(10), || async {
        let events = kubectl(
            &[
                "get",
                "events",
                "-n",
                &env.namespace,
                "--field-selector",
                "reason=Issued",
                "-o",
                "name",
            ],
            None,
        )
        .unwrap();
        events.lines().count() == CREDENTIALS
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn deleted_or_edited_secret_is_restored_and_deleting_the_credential_collects_it() {
    let env = Env::start("repair").await;
    env.apply_cloudflare_key(TOKEN);
    env.apply_credential("web", "  ttlSeconds: 3600\n  revokeOnDelete: true");
    env.wait_for_reason("web", "Issued").await;
    let secrets = env.secrets();

    secrets.delete("web", &DeleteParams::default()).await.unwrap();
    eventually(Duration::from_secs(20), || async { env.fake.mints().len() == 2 }).await;
    eventually(Duration::from_secs(20), || async {
        secrets
            .get_opt("web")
            .await
            .unwrap()
            .is_some_and(|s| text(&s, "username") == env.fake.mints()[1].username)
    })
    .await;

    let patch = json!({"data": {"credential": ByteString(b"edited".to_vec())}});
    secrets
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually(Duration::from_secs(20), || async { env.fake.mints().len() == 3 }).await;
    eventually(Duration::from_secs(20), || async {
        secrets
            .get("web")
            .await
            .is_ok_and(|s| text(&s, "credential") == env.fake.mints()[2].credential)
    })
    .await;

    // A forced rotation: the replaced credential is still valid, and revoked with the live one.
    env.force_rotation("web", "1");
    eventually(Duration::from_secs(20), || async { env.fake.mints().len() == 4 }).await;
    eventually(Duration::from_secs(20), || async {
        secrets
            .get("web")
            .await
            .is_ok_and(|s| text(&s, "username") == env.fake.mints()[3].username)
    })
    .await;
    let live_username = env.fake.mints()[3].username.clone();
    let replaced_username = env.fake.mints()[2].username.clone();
    kubectl(
        &[
            "delete",
            "tc",
            "web",
            "-n",
            &env.namespace,
            "--wait=true",
            "--timeout=30s",
        ],
        None,
    )
    .unwrap();
    assert_eq!(
        env.fake.revoked(),
        vec![live_username, replaced_username],
        "revokeOnDelete revokes the live credential and the still valid one it replaced"
    );
    // The real garbage collector removes the owned Secret.
    eventually(Duration::from_secs(90), || async {
        secrets.get_opt("web").await.unwrap().is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn forced_rotation_annotation_mints_a_new_credential() {
    let env = Env::start("force").await;
    env.apply_cloudflare_key(TOKEN);
    env.apply_credential("web", "  ttlSeconds: 3600");
    env.wait_for_reason("web", "Issued").await;

    env.force_rotation("web", "1");
    eventually(Duration::from_secs(20), || async { env.fake.mints().len() == 2 }).await;
    eventually(Duration::from_secs(20), || async {
        env.credentials()
            .get("web")
            .await
            .unwrap()
            .status
            .is_some_and(|s| s.rotations == 2)
    })
    .await;
    let secret = env.secrets().get("web").await.unwrap();
    assert_eq!(text(&secret, "username"), env.fake.mints()[1].username);
    assert_eq!(secret.annotations()["toma.dev/rotate-request"], "1");

    // Taking the annotation away asks for nothing: toma only stops recording the request.
    let ns = env.namespace.clone();
    kubectl(
        &["annotate", "turncredential", "web", "-n", &ns, "toma.dev/rotate-"],
        None,
    )
    .unwrap();
    eventually(Duration::from_secs(20), || async {
        let secret = env.secrets().get("web").await.unwrap();
        !secret.annotations().contains_key("toma.dev/rotate-request")
    })
    .await;
    assert_eq!(env.fake.mints().len(), 2, "removing the annotation minted");
    let secret = env.secrets().get("web").await.unwrap();
    assert_eq!(text(&secret, "username"), env.fake.mints()[1].username);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn failures_set_ready_false_with_the_right_reason_and_disturb_nothing() {
    let env = Env::start("failures").await;
    let ns = env.namespace.clone();

    // A TurnKey that does not exist.
    env.apply_credential_with_key("no-key", "{name: missing}", "");
    let tc = env.wait_for_reason("no-key", "KeyNotFound").await;
    assert_eq!(ready(&tc).unwrap().0, "False");
    let message = &tc.status.unwrap().conditions[0].message;
    assert!(
        message.contains(&format!("TurnKey {ns}/missing not found")),
        "{message}"
    );

    // A key whose token Secret is missing.
    apply(&format!(
        r#"
apiVersion: toma.dev/v1alpha1
kind: TurnKey
metadata: {{name: tokenless, namespace: {ns}}}
spec:
  cloudflare: {{keyId: {key}, apiTokenSecretRef: {{name: nowhere, key: api-token}}, baseUrl: {url}}}
"#,
        key = toma_testkit::KEY_ID,
        url = env.fake.base_url()
    ));
    env.apply_credential_with_key("no-token", "{name: tokenless}", "");
    env.wait_for_reason("no-token", "TokenNotFound").await;

    // A wrong token: Unauthorized, and the token appears in no status or Event.
    env.apply_cloudflare_key("wrong-token-e2e-secret");
    env.apply_credential("wrong-token", "");
    let tc = env.wait_for_reason("wrong-token", "Unauthorized").await;
    assert!(env.secrets().get_opt("wrong-token").await.unwrap().is_none());
    let events = kubectl(&["get", "events", "-n", &ns, "-o", "json"], None).unwrap();
    assert!(events.contains("Unauthorized"), "a Warning Event was recorded");
    // The messages name where the token leaked, never the token.
    assert!(
        !events.contains("wrong-token-e2e-secret"),
        "an Event carries the token"
    );
    assert!(
        !format!("{:?}", tc.status).contains("wrong-token-e2e-secret"),
        "the status carries the token"
    );

    // A foreign Secret of the same name: SecretConflict, and the Secret is left as it was.
    env.apply_cloudflare_key(TOKEN);
    apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: taken, namespace: {ns}}}\nstringData: {{password: hunter2}}\n"
    ));
    env.apply_credential("taken", "");
    env.wait_for_reason("taken", "SecretConflict").await;
    let foreign = env.secrets().get("taken").await.unwrap();
    assert_eq!(text(&foreign, "password"), "hunter2");
    assert!(foreign.owner_references().is_empty() && foreign.data.unwrap().len() == 1);

    // Fixing the token recovers the Unauthorized credential.
    env.wait_for_reason("wrong-token", "Issued").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn the_examples_are_accepted_by_the_api_server() {
    let env = Env::without_toma("examples").await;
    for file in [
        "cloudflare-key.yaml",
        "turncredential.yaml",
        "pod.yaml",
        "self-hosted-key.yaml",
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(file);
        let manifest = std::fs::read_to_string(&path)
            .unwrap()
            .replace("namespace: app", &format!("namespace: {}", env.namespace))
            .replace("namespace: toma-system", &format!("namespace: {}", env.namespace));
        if let Err(error) = kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&manifest)) {
            panic!("{file} was rejected: {error}");
        }
    }
}
