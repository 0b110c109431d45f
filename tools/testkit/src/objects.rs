//! The objects tests apply: keys with their token Secrets, TurnCredentials, rotate requests.
use fake_cloudflare::FakeCloudflare;
use kube::Client;

use crate::{KEY_ID, TOKEN, apply, kubectl};

/// Deletes a namespace without waiting. Finalizers on its TurnCredentials are dropped first:
/// with no toma left to honour them they would keep the namespace terminating forever.
pub fn delete_namespace(namespace: &str) {
    if let Ok(names) = kubectl(&["get", "turncredentials", "-n", namespace, "-o", "name"], None) {
        for name in names.lines() {
            let clear = r#"{"metadata":{"finalizers":null}}"#;
            let _ = kubectl(
                &["patch", name, "-n", namespace, "--type=merge", "-p", clear],
                None,
            );
        }
    }
    let _ = kubectl(&["delete", "namespace", namespace, "--wait=false"], None);
}

/// A ClusterTurnKey named `namespace` for the fake Cloudflare at `base_url`, with its token in a
/// Secret `cloudflare-turn` in `namespace`.
pub fn apply_cloudflare_key(namespace: &str, token: &str, base_url: &str) {
    apply_token_and_key(
        namespace,
        token,
        &format!("kind: ClusterTurnKey\nmetadata: {{name: {namespace}}}"),
        &format!(", namespace: {namespace}"),
        base_url,
    );
}

/// A TurnKey `cloudflare` in `namespace` for the fake Cloudflare at `base_url`, with its token
/// in a Secret `cloudflare-turn` beside it.
pub fn apply_cloudflare_turn_key(namespace: &str, token: &str, base_url: &str) {
    apply_token_and_key(
        namespace,
        token,
        &format!("kind: TurnKey\nmetadata: {{name: cloudflare, namespace: {namespace}}}"),
        "",
        base_url,
    );
}

/// The Secret `cloudflare-turn` in `namespace` holding `token`, and the key described by
/// `kind_and_metadata` reading it (`secret_ref_extra` completes its apiTokenSecretRef).
fn apply_token_and_key(
    namespace: &str,
    token: &str,
    kind_and_metadata: &str,
    secret_ref_extra: &str,
    base_url: &str,
) {
    apply(&format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: cloudflare-turn, namespace: {namespace}}}
stringData: {{api-token: "{token}"}}
---
apiVersion: toma.dev/v1alpha1
{kind_and_metadata}
spec:
  cloudflare:
    keyId: {KEY_ID}
    apiTokenSecretRef: {{name: cloudflare-turn, key: api-token{secret_ref_extra}}}
    baseUrl: {base_url}
"#
    ));
}

/// A TurnCredential `name` in `namespace` with `keyRef: {key_ref}` and extra spec lines.
pub fn apply_credential(namespace: &str, name: &str, key_ref: &str, extra_spec: &str) {
    apply(&format!(
        r#"
apiVersion: toma.dev/v1alpha1
kind: TurnCredential
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  keyRef: {key_ref}
{extra_spec}
"#
    ));
}

/// Sets the annotation `toma.dev/rotate={value}` on the TurnCredential, which forces a rotation
/// whenever the value changes.
pub fn force_rotation(namespace: &str, name: &str, value: &str) {
    kubectl(
        &[
            "annotate",
            "tc",
            name,
            "-n",
            namespace,
            &format!("toma.dev/rotate={value}"),
            "--overwrite",
        ],
        None,
    )
    .unwrap_or_else(|e| panic!("annotating {namespace}/{name}: {e}"));
}

/// A client for the test control plane, as its admin.
pub async fn client() -> Client {
    toma::install_crypto_provider();
    Client::try_default()
        .await
        .expect("a client for the test control plane")
}

/// The fake Cloudflare with `config`, knowing the key KEY_ID with the token TOKEN.
pub async fn start_fake_cloudflare(config: fake_cloudflare::Config) -> FakeCloudflare {
    let fake = FakeCloudflare::start(config).await.unwrap();
    fake.add_key(KEY_ID, TOKEN);
    fake
}
