//! One toma for the whole cluster, as the chart installs it. hack/test.sh runs these alone: that
//! toma reconciles every namespace's TurnCredentials.

use std::time::Duration;

use toma_testkit::{Env, KEY_ID, TOKEN, apply, apply_cloudflare_turn_key};

const SOUTH_KEY_ID: &str = "fedcba9876543210fedcba9876543210";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`, alone"]
async fn same_named_turn_keys_in_two_namespaces_never_use_each_others_tokens() {
    let north = Env::without_toma("twin-north").await;
    let south = Env::without_toma("twin-south").await;
    // One fake serves both keys, each with its own token: a token used for the other
    // namespace's key is refused with a 401.
    let fake = &north.fake;
    fake.add_key(SOUTH_KEY_ID, "south-token");
    apply_cloudflare_turn_key(&north.namespace, TOKEN, &fake.base_url());
    let south_key = |token: &str| {
        apply(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: cloudflare-turn, namespace: {ns}}}\nstringData: {{api-token: \"{token}\"}}\n---\napiVersion: toma.dev/v1alpha1\nkind: TurnKey\nmetadata: {{name: cloudflare, namespace: {ns}}}\nspec:\n  cloudflare: {{keyId: {SOUTH_KEY_ID}, apiTokenSecretRef: {{name: cloudflare-turn, key: api-token}}, baseUrl: {url}}}\n",
            ns = south.namespace,
            url = fake.base_url()
        ))
    };
    south_key("south-token");
    let toma = north.start_cluster_wide_toma().await;
    for env in [&north, &south] {
        env.apply_credential_with_key("web", "{name: cloudflare}", "  ttlSeconds: 3600");
        env.wait_for_reason("web", "Issued").await;
    }

    // South's token rotates; both rotate their credentials.
    fake.add_key(SOUTH_KEY_ID, "south-token-2");
    south_key("south-token-2");
    for env in [&north, &south] {
        env.force_rotation("web", "after-south-rotated");
    }
    for env in [&north, &south] {
        env.wait_for_rotations("web", 2, Duration::from_secs(30)).await;
    }

    let mints = fake.mints();
    assert_eq!(mints.len(), 4, "{mints:?}");
    assert_eq!(mints.iter().filter(|m| m.key_id == KEY_ID).count(), 2);
    assert_eq!(mints.iter().filter(|m| m.key_id == SOUTH_KEY_ID).count(), 2);
    assert_eq!(
        fake.requests().get(&401),
        None,
        "a token went to the other namespace's key"
    );
    drop(toma);
}
