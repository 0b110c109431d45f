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
    // Not due for renewal for an hour: only the watch can make toma mint for it again.
    env.apply_credential("steady", "  ttlSeconds: 3600");
    env.wait_for_reason("web", "Issued").await;
    env.wait_for_reason("steady", "Issued").await;
    let steady_mints = || {
        let mut mints = env.fake.mints();
        mints.retain(|m| m.ttl == 3600);
        mints
    };
    assert_eq!(steady_mints().len(), 1);

    // Longer than a rotation period: one renewal falls inside the outage.
    restart_apiserver(15);
    let back = Timestamp::now();

    env.wait_for_more_rotations("web", 2, Duration::from_secs(40))
        .await;
    env.assert_secret_holds_a_live_issued_credential("web").await;

    // The watch is back: a forced rotation is acted on without waiting for any renewal.
    env.force_rotation("steady", "after-outage");
    let annotated = Timestamp::now();
    eventually(Duration::from_secs(20), || async { steady_mints().len() == 2 }).await;
    eprintln!(
        "forced rotation acted on {} s after the annotation; the outage ended at {back}",
        steady_mints()[1].issued_at as i64 - annotated.as_second()
    );
}
