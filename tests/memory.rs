//! Memory with a cluster full of other Secrets: toma runs with 100 TurnCredentials, then 500
//! unrelated Secrets of 1 MiB each appear in the namespace it watches. Its Secret watch is
//! metadata-only and limited to `app.kubernetes.io/managed-by=toma`, so its resident memory must
//! stay where it was and nothing it does may change: no reconcile, no mint. Prints its figures.
//! Run with `hack/memory.sh`. (`make test` keeps the cheap check: the unit test on the watch's
//! query in src/controller.rs.)

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, ObjectMeta, PostParams};
use toma::api::{KeyKind, KeyRef, TurnCredential, TurnCredentialSpec};
use toma_testkit::{Env, TOKEN, eventually, ready};

const CREDENTIALS: usize = 100;
const OTHER_SECRETS: usize = 500;
const MIB: usize = 1024 * 1024;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// toma's RSS in MiB, sampled every 500 ms for `period`: (last, highest).
async fn rss_over(env: &Env, period: Duration) -> (f64, f64) {
    let toma = env.toma.as_ref().expect("toma runs");
    let mut highest = 0;
    let mut last = 0;
    let until = Instant::now() + period;
    while Instant::now() < until {
        last = toma.memory_kib().0;
        highest = highest.max(last);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    (last as f64 / 1024.0, highest as f64 / 1024.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes 500 MiB into the cluster: hack/memory.sh"]
async fn five_hundred_unrelated_one_mib_secrets_leave_tomas_memory_and_work_unchanged() {
    let others = setting("MEMORY_SECRETS", OTHER_SECRETS);
    let mut env = Env::without_toma("memory").await;
    env.start_toma().await;
    env.apply_cloudflare_key(TOKEN);
    let api = env.credentials();
    for i in 0..CREDENTIALS {
        let key = KeyRef {
            kind: KeyKind::ClusterTurnKey,
            name: env.namespace.clone(),
        };
        let mut tc = TurnCredential::new(&format!("c{i:03}"), TurnCredentialSpec::with_key(key, 3600));
        tc.metadata.namespace = Some(env.namespace.clone());
        api.create(&PostParams::default(), &tc).await.unwrap();
    }
    eventually(Duration::from_secs(180), || async {
        let list = api.list(&ListParams::default()).await.unwrap();
        list.items
            .iter()
            .filter(|tc| ready(tc).is_some_and(|(status, _)| status == "True"))
            .count()
            == CREDENTIALS
    })
    .await;
    let (_, before) = rss_over(&env, Duration::from_secs(10)).await;
    let reconciles = env.metric("toma_reconciles_total").await;
    let mints = env.fake.mints().len();

    // Unrelated Secrets: no toma label, 1 MiB of data each (distinct, so nothing compresses).
    let secrets = env.secrets();
    let started = Instant::now();
    for i in 0..others {
        let blob: Vec<u8> = (0..MIB).map(|b| (b * 31 + i * 7) as u8).collect();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(format!("unrelated-{i:04}")),
                labels: Some(BTreeMap::from([("app".to_string(), "other".to_string())])),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([("blob".to_string(), ByteString(blob))])),
            ..Secret::default()
        };
        secrets.create(&PostParams::default(), &secret).await.unwrap();
    }
    let written = started.elapsed();
    let (after, peak) = rss_over(&env, Duration::from_secs(20)).await;
    let reconciles_after = env.metric("toma_reconciles_total").await;
    let mints_after = env.fake.mints().len();

    println!(
        "memory: {CREDENTIALS} TurnCredentials, then {others} unrelated Secrets of 1 MiB in the same namespace"
    );
    println!("  Secrets written in      {:.1} s", written.as_secs_f64());
    println!("  toma RSS before         {before:.1} MiB (highest of 10 s)");
    println!("  toma RSS after          {after:.1} MiB (highest of 20 s after the writes: {peak:.1} MiB)");
    println!("  difference              {:+.1} MiB", peak - before);
    println!("  reconciles              {reconciles} before, {reconciles_after} after");
    println!("  mints                   {mints} before, {mints_after} after");
    assert_eq!(
        reconciles_after, reconciles,
        "the unrelated Secrets caused reconciles"
    );
    assert_eq!(mints_after, mints, "the unrelated Secrets caused mints");
    // A watch that is not label-filtered or not metadata-only would hold 500 MiB.
    assert!(
        peak - before < 16.0,
        "toma's memory grew by {:.1} MiB",
        peak - before
    );
}
