//! The propagation run: how late a rotation reaches a pod that mounts the Secret, on a real node
//! whose kubelet keeps its default settings (syncFrequency 1m), and whether the pod ever reads an
//! expired credential. A busybox pod reads the mounted files once a second; the test polls the
//! Secret every 100 ms to know when toma wrote each version.
//!
//! Run with `hack/propagation.sh`; it prints its figures. PROPAGATION_ROTATIONS (default 5),
//! PROPAGATION_TTL (default 240, the shortest ttl whose default renewBefore is mount-safe) and
//! PROPAGATION_RENEW_BEFORE (default unset) choose the credential.

use std::time::Duration;

use jiff::Timestamp;
use toma::api::{TurnCredential, default_renew_before_seconds};
use toma_testkit::{Env, SecretVersions, TOKEN, consumer_reads, first_reads, start_consumer_pod};

fn setting(name: &str) -> Option<i64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a run of several minutes on a node at default kubelet settings: hack/propagation.sh"]
async fn rotations_reach_a_pod_that_mounts_the_secret() {
    let rotations = setting("PROPAGATION_ROTATIONS").unwrap_or(5) as usize;
    let ttl = setting("PROPAGATION_TTL").unwrap_or(240);
    let renew_before = setting("PROPAGATION_RENEW_BEFORE");
    let env = Env::start("propagation").await;
    env.apply_cloudflare_key(TOKEN);
    let mut spec = format!("  ttlSeconds: {ttl}\n  secretName: web-ice");
    if let Some(renew_before) = renew_before {
        spec.push_str(&format!("\n  renewBeforeSeconds: {renew_before}"));
    }
    env.apply_credential("web", &spec);
    let tc = env.wait_for_reason("web", "Issued").await;
    let versions = SecretVersions::record(env.secrets(), "web-ice");
    start_consumer_pod(&env.namespace, "reader", "web-ice").await;
    let started = Timestamp::now();

    // Until `rotations` versions were written after the pod started and the last of them reached
    // the pod, or had 3 minutes to (a version replaced before the kubelet synced never does).
    let interval = ttl - renew_before.unwrap_or_else(|| default_renew_before_seconds(ttl));
    let limit = Duration::from_secs((rotations as u64 + 2) * interval as u64 + 300);
    let deadline = tokio::time::Instant::now() + limit;
    let mut reported = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let reads = consumer_reads(&env.namespace, "reader");
        let written: Vec<_> = versions
            .versions()
            .into_iter()
            .filter(|v| v.seen_at > started)
            .collect();
        let arrived = first_reads(&versions.versions(), &reads);
        for (version, read_at) in arrived.iter().skip(reported) {
            println!(
                "propagation: {} reached the pod at most {:.1} s after its write",
                version.expires_at,
                delay(version.seen_at, *read_at)
            );
        }
        reported = arrived.len();
        let done = written.get(rotations - 1).is_some_and(|last| {
            arrived.iter().any(|(v, _)| v.expires_at >= last.expires_at)
                || Timestamp::now().duration_since(last.seen_at).as_secs() > 180
        });
        if done {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {rotations} rotations after {limit:?}",
            written.len()
        );
    }

    let reads = consumer_reads(&env.namespace, "reader");
    let all = versions.versions();
    let written: Vec<_> = all
        .iter()
        .filter(|v| v.seen_at > started)
        .take(rotations)
        .collect();
    let arrived: Vec<_> = first_reads(&all, &reads)
        .into_iter()
        .filter(|(v, _)| written.contains(&v))
        .collect();
    let mut delays: Vec<f64> = arrived.iter().map(|(v, at)| delay(v.seen_at, *at)).collect();
    delays.sort_by(f64::total_cmp);
    let expired = reads.iter().filter(|r| r.saw_expired()).count();
    // The poll's time against toma's own record of the write, to the second.
    let skew = written
        .iter()
        .filter_map(|v| Some((v.seen_at.as_millisecond() - v.written_at?.as_millisecond()) as f64 / 1000.0))
        .fold(0.0_f64, f64::max);
    let mount_safe = env.credentials().get("web").await.unwrap();

    println!(
        "propagation: kubelet syncFrequency {}, {} cores",
        std::env::var("TOMA_NODE_SYNC_FREQUENCY").unwrap_or_else(|_| "1m (default)".into()),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "  credential            ttlSeconds {ttl}, renewBeforeSeconds {} ({}), MountSafe {}",
        tc.renew_before_seconds(),
        if renew_before.is_some() { "set" } else { "default" },
        condition(&mount_safe)
    );
    println!("  rotations written     {}", written.len());
    println!(
        "  reached the pod       {} (the rest were replaced before the kubelet synced)",
        arrived.len()
    );
    if !delays.is_empty() {
        println!(
            "  write to file in pod  min {:.1} s, median {:.1} s, max {:.1} s (each at most a second above the true delay)",
            delays[0],
            median(&delays),
            delays[delays.len() - 1]
        );
        println!("  each                  {delays:.1?}");
    }
    println!("  poll after the write  at most {skew:.1} s after managedFields' time (whole seconds)");
    println!("  reads                 {}", reads.len());
    println!("  expired-read instants {expired}");

    assert!(!arrived.is_empty(), "no rotation reached the pod");
    if mount_safe.is_mount_safe() {
        assert_eq!(expired, 0, "a mount-safe credential was read expired");
    }
}

/// Seconds from the poll that saw a write to the end of the second in which the pod first read
/// it: an upper bound, at most about a second above the true delay (the pod reads once a second,
/// and busybox's date has whole seconds).
fn delay(seen_at: Timestamp, read_at: i64) -> f64 {
    (read_at + 1) as f64 - seen_at.as_millisecond() as f64 / 1000.0
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

fn condition(tc: &TurnCredential) -> String {
    tc.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "MountSafe"))
        .map_or("unknown".into(), |c| format!("{} ({})", c.status, c.reason))
}
