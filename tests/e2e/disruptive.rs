//! Tests that disturb the whole control plane. hack/test.sh runs them alone, after the rest.

use std::process::Command;
use std::time::Duration;

use jiff::Timestamp;

use toma_testkit::{Env, SHORT_LIVED, TOKEN, eventually};

/// Stops the test control plane's apiserver for `seconds`, then brings it back.
fn restart_apiserver(seconds: u64) {
    let kubeconfig = std::path::PathBuf::from(std::env::var("KUBECONFIG").unwrap());
    let status = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/hack/cluster.sh"))
        .args(["restart-apiserver", &seconds.to_string()])
        .env("TOMA_CLUSTER_DIR", kubeconfig.parent().unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "hack/cluster.sh restart-apiserver failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`, alone"]
async fn an_api_server_outage_is_ridden_out_and_rotation_resumes() {
    let env = Env::start("outage").await;
    env.apply_cloudflare_key(TOKEN);
    env.apply_credential("web", SHORT_LIVED);
    env.wait_for_reason("web", "Issued").await;

    // Longer than a rotation period: one renewal falls inside the outage.
    restart_apiserver(15);
    let back = Timestamp::now();

    env.wait_for_more_rotations("web", 2, Duration::from_secs(40))
        .await;
    env.assert_secret_holds_a_live_issued_credential("web").await;

    // The watch is back: a forced rotation is acted on at once.
    let before = env.fake.mints().len();
    env.force_rotation("web", "after-outage");
    let annotated = Timestamp::now();
    eventually(Duration::from_secs(10), || async {
        env.fake.mints().len() > before
    })
    .await;
    let reacted = env.fake.mints().last().unwrap().issued_at as i64 - annotated.as_second();
    assert!(
        reacted <= 5,
        "forced rotation took {reacted} s after the outage ended at {back}"
    );
}
