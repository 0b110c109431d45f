//! Pods that mount the rotated Secret, on the local node (hack/test.sh runs its kubelet with a
//! 10 s syncFrequency), and the MountSafe condition that flags credentials renewed too late for
//! a kubelet at its default settings.

use std::collections::BTreeMap;
use std::time::Duration;

use toma::api::TurnCredential;
use toma_testkit::{
    Env, Read, SHORT_LIVED, SecretVersions, TOKEN, consumer_reads, eventually, first_reads, kubectl,
    start_consumer_pod, wait_until,
};

/// Rotations the pod must see after it started.
const ROTATIONS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane and node of `make test`"]
async fn a_pod_mounting_the_secret_reads_every_rotation_and_never_an_expired_credential() {
    let env = Env::start("mount").await;
    env.apply_cloudflare_key(TOKEN);
    // Renewed about 30 s after each mint, 90 s before expiry: far more than the 15 s a kubelet
    // syncing every 10 s takes to update the mount, and each version lives long enough to be seen.
    env.apply_credential(
        "web",
        "  ttlSeconds: 120\n  renewBeforeSeconds: 90\n  secretName: web-ice",
    );
    env.wait_for_reason("web", "Issued").await;
    let versions = SecretVersions::record(env.secrets(), "web-ice");
    start_consumer_pod(&env.namespace, "reader", "web-ice").await;

    // The version it started with and one per rotation; a rotation is due every ~30 s.
    eventually(Duration::from_secs(240), || async {
        distinct_expiries(&consumer_reads(&env.namespace, "reader")).len() > ROTATIONS
    })
    .await;
    let reads = consumer_reads(&env.namespace, "reader");
    let written = versions.versions();

    let expired: Vec<&Read> = reads.iter().filter(|r| r.saw_expired()).collect();
    assert!(
        expired.is_empty(),
        "the pod read an expired credential: {expired:?}"
    );

    // The pod saw the versions toma wrote, in order, none skipped and none going back.
    let seen = distinct_expiries(&reads);
    let start = written
        .iter()
        .position(|v| Some(v.expires_at) == seen[0])
        .expect("the pod started with a version toma wrote");
    let expected: Vec<_> = written[start..start + seen.len()]
        .iter()
        .map(|v| Some(v.expires_at))
        .collect();
    assert_eq!(seen, expected, "the file changed with each rotation");

    // iceServers.json changed with expiresAt. The two files are read one after the other, so a
    // read can straddle an update: each version is judged by what most of its reads saw.
    let mut digests = BTreeMap::new();
    for expires_at in &seen {
        let mut counts = BTreeMap::<&str, usize>::new();
        for read in reads.iter().filter(|r| r.expires_at == *expires_at) {
            *counts.entry(read.ice_servers_md5.as_str()).or_default() += 1;
        }
        let (digest, _) = counts.into_iter().max_by_key(|(_, n)| *n).unwrap();
        digests.insert(digest, ());
    }
    assert_eq!(
        digests.len(),
        seen.len(),
        "iceServers.json did not change with each rotation"
    );

    // Figures, not assertions: how late each rotation reached the pod.
    for (version, read_at) in first_reads(&written, &reads) {
        // The end of the second of the first read: at most a second above the true delay.
        let delay = (read_at + 1) as f64 - version.seen_at.as_millisecond() as f64 / 1000.0;
        println!(
            "mount: credential expiring {} in the pod at most {delay:.1} s after its write",
            version.expires_at
        );
    }
    println!("mount: {} reads, none expired", reads.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn renew_before_too_short_for_mounted_files_is_flagged_until_the_spec_is_fixed() {
    let env = Env::start("mountsafe").await;
    env.apply_cloudflare_key(TOKEN);
    env.apply_credential("short", SHORT_LIVED);
    env.apply_credential("late", "  ttlSeconds: 3600\n  renewBeforeSeconds: 60");
    env.apply_credential("default", "  ttlSeconds: 240");
    let api = env.credentials();

    for name in ["short", "late"] {
        let tc = wait_until(&api, name, "MountSafe False", Duration::from_secs(60), |tc| {
            condition(tc, "MountSafe") == Some(("False", "RenewBeforeTooShort"))
        })
        .await;
        assert_eq!(condition(&tc, "Ready"), Some(("True", "Issued")), "still Ready");
    }
    // Unset, the renewBefore of a 240 s credential is raised to 120 s: mount-safe.
    let tc = wait_until(&api, "default", "MountSafe True", Duration::from_secs(60), |tc| {
        condition(tc, "MountSafe") == Some(("True", "CoversKubeletDelay"))
    })
    .await;
    let status = tc.status.unwrap();
    let before_expiry = status.expires_at.unwrap().0.as_second() - status.renewal_time.unwrap().0.as_second();
    assert!(
        (120..126).contains(&before_expiry),
        "renewed {before_expiry} s before expiry"
    );

    env.apply_credential("late", "  ttlSeconds: 3600\n  renewBeforeSeconds: 600");
    wait_until(&api, "late", "MountSafe True", Duration::from_secs(60), |tc| {
        condition(tc, "MountSafe") == Some(("True", "CoversKubeletDelay"))
    })
    .await;

    // One Warning each for the two flagged credentials, none for the safe one.
    eventually(Duration::from_secs(10), || async {
        warnings(&env.namespace).len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut flagged = warnings(&env.namespace);
    flagged.sort();
    assert_eq!(flagged, ["late", "short"]);
}

/// The distinct `expiresAt` values the pod read, in the order it read them.
fn distinct_expiries(reads: &[Read]) -> Vec<Option<jiff::Timestamp>> {
    let mut seen: Vec<Option<jiff::Timestamp>> = reads.iter().map(|r| r.expires_at).collect();
    seen.dedup();
    seen
}

/// The (status, reason) of the TurnCredential's condition `type_`.
fn condition<'a>(tc: &'a TurnCredential, type_: &str) -> Option<(&'a str, &'a str)> {
    let condition = tc.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((condition.status.as_str(), condition.reason.as_str()))
}

/// The TurnCredentials with a RenewBeforeTooShort Warning Event.
fn warnings(namespace: &str) -> Vec<String> {
    let names = kubectl(
        &[
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            "reason=RenewBeforeTooShort,type=Warning",
            "-o",
            "jsonpath={range .items[*]}{.involvedObject.name}{\"\\n\"}{end}",
        ],
        None,
    )
    .unwrap();
    names.lines().map(str::to_string).collect()
}
