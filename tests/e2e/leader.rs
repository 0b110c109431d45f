//! Leader election: of several replicas on one Lease, exactly one leads, and another takes over
//! when it stops or dies.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use toma::leader;
use toma_testkit::{Env, SHORT_LIVED, TOKEN, eventually, kubectl};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn with_two_replicas_one_leads_and_the_other_takes_over_when_it_dies() {
    let env = Env::without_toma("leader").await;
    env.apply_cloudflare_key(TOKEN);
    let lease = leader_elect(&env.namespace);
    let first = env.spawn_toma(&lease);
    eventually(Duration::from_secs(30), || first.is_leading()).await;
    let second = env.spawn_toma(&lease);
    // A standby is ready (so rolling updates and `helm install --wait` finish) but does not lead.
    second.wait_ready().await;
    env.apply_credential("web", SHORT_LIVED);
    env.wait_for_reason("web", "Issued").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !second.is_leading().await,
        "the standby must not lead while the other does"
    );
    assert!(second.metrics().await.contains("toma_leader 0"));

    first.kill();
    // The lease lapses within 15 s; then the standby leads and keeps rotating.
    eventually(Duration::from_secs(40), || second.is_leading()).await;
    let api = env.credentials();
    env.wait_for_more_rotations("web", 2, Duration::from_secs(40))
        .await;

    // Never two writers: every rotation was one mint, spaced as one writer spaces them.
    let mints = env.fake.mints();
    for pair in mints.windows(2) {
        assert!(
            pair[1].issued_at - pair[0].issued_at >= 6,
            "two mints {} s apart",
            pair[1].issued_at - pair[0].issued_at
        );
    }
    let status = api.get("web").await.unwrap().status.unwrap();
    assert!(
        mints.len() as i64 - status.rotations <= 1,
        "{} mints for {} rotations",
        mints.len(),
        status.rotations
    );
    let holder = lease_holder(&env.namespace, LEASE);
    assert!(!holder.is_empty(), "the Lease {LEASE} has no holder");
}

/// Standbys that find the Lease free at the same moment (as every standby does when the leader
/// releases it) race for it: exactly one may win, however the race goes. Each round starts
/// five contenders at once on a free Lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn standbys_that_find_the_lease_free_together_elect_one_leader() {
    const ROUNDS: usize = 16;
    const CONTENDERS: usize = 5;
    let env = Env::without_toma("lease-race").await;
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.namespace);
    for round in 0..ROUNDS {
        let name = format!("race-{round}");
        // As a leader leaves it on release: there, with no holder.
        let free = Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec::default()),
        };
        leases.create(&PostParams::default(), &free).await.unwrap();
        let contenders: Vec<_> = (0..CONTENDERS)
            .map(|i| {
                let (client, name, namespace) = (env.client.clone(), name.clone(), env.namespace.clone());
                tokio::spawn(async move {
                    leader::lead(client, &name, &namespace, &format!("contender-{i}")).await
                })
            })
            .collect();
        eventually(Duration::from_secs(30), || async {
            contenders.iter().any(|c| c.is_finished())
        })
        .await;
        // A contender that wrongly thinks it won does so right after the winner (and learns
        // otherwise only at its first renewal, 10 s on).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut leaders = Vec::new();
        for (i, contender) in contenders.into_iter().enumerate() {
            if contender.is_finished() {
                let leadership = contender.await.unwrap().expect("leader election ran");
                leaders.push((format!("contender-{i}"), leadership));
            } else {
                contender.abort();
            }
        }
        let names: Vec<&str> = leaders.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names.len(), 1, "round {round}: {names:?} all lead");
        assert_eq!(lease_holder(&env.namespace, &name), names[0]);
        for (_, leadership) in leaders {
            leadership.release().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn sigterm_stops_cleanly_and_releases_the_lease_to_the_standby() {
    let env = Env::without_toma("sigterm").await;
    env.apply_cloudflare_key(TOKEN);
    let flags = [&leader_elect(&env.namespace)[..], &["--log-format", "json"]].concat();
    let first = env.spawn_toma(&flags);
    eventually(Duration::from_secs(30), || first.is_leading()).await;
    let second = env.spawn_toma(&flags);
    second.wait_ready().await;
    env.apply_credential("web", "  ttlSeconds: 3600");
    env.wait_for_reason("web", "Issued").await;

    let stopping = tokio::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || first.terminate())
        .await
        .unwrap();
    assert!(status.success(), "toma exited with {status} on SIGTERM");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stopping took {:?}",
        stopping.elapsed()
    );
    // The lease is released, not left to lapse: the standby, reading it every second, leads
    // well before the 15 s lease would have lapsed.
    let holder = lease_holder(&env.namespace, LEASE);
    assert!(
        holder.is_empty() || second.is_leading().await,
        "the lease is still held by {holder}"
    );
    eventually(Duration::from_secs(10), || second.is_leading()).await;
    println!(
        "figure: SIGTERM to the standby leading: {:.1} s",
        stopping.elapsed().as_secs_f64()
    );

    let log = std::fs::read_to_string(env.toma_log()).unwrap();
    assert!(log.lines().count() > 3);
    for line in log.lines() {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            entry["level"].is_string() && entry["timestamp"].is_string(),
            "{line}"
        );
    }
    assert!(log.contains("lease released"));
}

/// The Lease the tomas these tests start compete for.
const LEASE: &str = "toma-e2e";

/// The flags that make a toma compete for [`LEASE`] in `namespace`.
fn leader_elect(namespace: &str) -> [&str; 5] {
    [
        "--leader-elect",
        "--lease-name",
        LEASE,
        "--lease-namespace",
        namespace,
    ]
}

/// The holder of the Lease `name` in `namespace`, empty when none holds it.
fn lease_holder(namespace: &str, name: &str) -> String {
    kubectl(
        &[
            "get",
            "lease",
            name,
            "-n",
            namespace,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    )
    .unwrap_or_else(|e| panic!("reading the Lease {name}: {e}"))
}
