//! The soak: 100 credentials with a 60 s ttl for 15 minutes (SOAK_SECONDS) under random
//! provider faults. A sampler lists every Secret every second and counts the instants when a
//! Secret held an expired credential while the provider was reachable: there must be none.
//! Run with `hack/soak.sh`; it prints its figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use fake_cloudflare::Fault;
use jiff::Timestamp;
use kube::api::{ListParams, PostParams};
use toma::api::{KeyKind, KeyRef, TurnCredential, TurnCredentialSpec};
use toma_testkit::{Env, TOKEN};

const CREDENTIALS: usize = 100;

fn faults() -> Vec<Fault> {
    vec![
        Fault::ServerError { status: 503 },
        Fault::RateLimited { retry_after: Some(3) },
        Fault::Slow { delay_ms: 4_000 },
        Fault::Malformed,
        Fault::Unauthorized,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a 15-minute run: hack/soak.sh"]
async fn a_soak_under_random_provider_faults_never_leaves_an_expired_credential() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(900);
    let mut env = Env::without_toma("soak").await;
    let toma = env.spawn_toma(&["--provider-timeout-seconds", "2"]);
    toma.wait_ready().await;
    env.toma = Some(toma);
    env.apply_cloudflare_key(TOKEN);

    let api = env.credentials();
    for i in 0..CREDENTIALS {
        let mut tc = TurnCredential::new(
            &format!("c{i:03}"),
            TurnCredentialSpec::with_key(
                KeyRef {
                    kind: KeyKind::ClusterTurnKey,
                    name: env.namespace.clone(),
                },
                60,
            ),
        );
        tc.metadata.namespace = Some(env.namespace.clone());
        api.create(&PostParams::default(), &tc).await.unwrap();
    }
    toma_testkit::eventually(Duration::from_secs(120), || async {
        env.secrets()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len()
            > CREDENTIALS
    })
    .await;
    let (rss_start, _) = env.toma.as_ref().unwrap().memory_kib();

    // Faults come and go: 5 to 12 s of a random fault, then 10 to 30 s without.
    let reachable = Arc::new(AtomicBool::new(true));
    let stop = Arc::new(AtomicBool::new(false));
    let injector = {
        let (fake, reachable, stop) = (env.fake.clone(), reachable.clone(), stop.clone());
        tokio::spawn(async move {
            let mut episodes = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(rand::random_range(10..30))).await;
                let fault = faults()[rand::random_range(0..faults().len())].clone();
                reachable.store(false, Ordering::Relaxed);
                fake.set_fault(fault);
                episodes += 1;
                tokio::time::sleep(Duration::from_secs(rand::random_range(5..12))).await;
                fake.clear_fault();
                reachable.store(true, Ordering::Relaxed);
            }
            episodes
        })
    };
    let violations = Arc::new(AtomicU64::new(0));
    let samples = Arc::new(AtomicU64::new(0));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let secrets = env.secrets();
    while tokio::time::Instant::now() < deadline {
        let was_reachable = reachable.load(Ordering::Relaxed);
        let listed = secrets
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=toma"))
            .await
            .unwrap();
        let now = Timestamp::now();
        let expired = listed
            .items
            .iter()
            .filter(|s| {
                toma_testkit::text(s, "expiresAt")
                    .parse::<Timestamp>()
                    .is_ok_and(|e| e <= now)
            })
            .count();
        assert_eq!(listed.items.len(), CREDENTIALS, "a Secret went missing");
        if expired > 0 && was_reachable && reachable.load(Ordering::Relaxed) {
            violations.fetch_add(1, Ordering::Relaxed);
            eprintln!("{now}: {expired} expired credentials while the provider was reachable");
        }
        samples.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let episodes = injector.await.unwrap();

    let (rss_end, rss_peak) = env.toma.as_ref().unwrap().memory_kib();
    let rotations: i64 = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|tc| tc.status.as_ref().map_or(0, |s| s.rotations))
        .sum();
    let metrics = env.metrics().await;
    let errors: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("toma_reconcile_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    println!(
        "soak: {CREDENTIALS} credentials, ttl 60 s, {seconds} s, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("  fault episodes        {episodes}");
    println!("  samples               {}", samples.load(Ordering::Relaxed));
    println!("  rotations             {rotations}");
    println!("  mints                 {}", env.fake.mints().len());
    println!("  failed attempts       {errors}");
    println!(
        "  expired-while-reachable instants  {}",
        violations.load(Ordering::Relaxed)
    );
    println!(
        "  toma RSS              start {} MiB, end {} MiB, peak {} MiB",
        rss_start / 1024,
        rss_end / 1024,
        rss_peak / 1024
    );
    assert_eq!(violations.load(Ordering::Relaxed), 0);
    assert!(
        env.fake.mints().len() as i64 >= rotations,
        "status counts more rotations than were minted"
    );
}
