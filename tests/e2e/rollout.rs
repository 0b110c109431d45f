//! rolloutRestartTargets on the real node: a Deployment whose container reads two Secrets into
//! environment variables is restarted when their content changes, once for two TurnCredentials
//! rotated together, not at all when toma restarts with nothing changed, and once more by the
//! next toma when the one before was killed between its Secret write and its restart.

use std::time::Duration;

use serde_json::Value;
use toma_testkit::{Env, TOKEN, apply, eventually, kubectl, text};

/// Both TurnCredentials restart the Deployment `consumer`.
const RESTARTING_CONSUMER: &str =
    "  ttlSeconds: 3600\n  rolloutRestartTargets: [{kind: Deployment, name: consumer}]";

/// A Deployment whose pod prints the usernames of the Secrets `web` and `backup`, read into
/// environment variables at start-up, and then sleeps. sh as PID 1 ignores SIGTERM, so a short
/// grace period lets old pods go quickly.
fn consumer_deployment(namespace: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: consumer, namespace: {namespace}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: consumer}}}}
  template:
    metadata: {{labels: {{app: consumer}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: localhost/busybox:latest
        imagePullPolicy: IfNotPresent
        command: [sh, -c, 'echo "web=$TURN_USERNAME backup=$BACKUP_USERNAME"; sleep 3600']
        env:
        - name: TURN_USERNAME
          valueFrom: {{secretKeyRef: {{name: web, key: username}}}}
        - name: BACKUP_USERNAME
          valueFrom: {{secretKeyRef: {{name: backup, key: username}}}}
"#
    )
}

fn get_json(args: &[&str]) -> Value {
    let args = [&["get"], args, &["-o", "json"]].concat();
    let out = kubectl(&args, None).unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"));
    serde_json::from_str(&out).unwrap()
}

/// How many times the Deployment's pod template has changed: its generation (the spec changes
/// only by restarts here) and its ReplicaSets (one per template).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rollouts {
    generation: i64,
    replica_sets: usize,
}

/// The Deployment's generation.
fn generation(namespace: &str) -> i64 {
    let deployment = get_json(&["deployment", "consumer", "-n", namespace]);
    deployment["metadata"]["generation"].as_i64().unwrap()
}

impl Rollouts {
    /// Read once the Deployment controller has caught up (after [`wait_for_rollout`]).
    fn of(namespace: &str) -> Rollouts {
        let replica_sets = get_json(&["replicasets", "-l", "app=consumer", "-n", namespace]);
        Rollouts {
            generation: generation(namespace),
            replica_sets: replica_sets["items"].as_array().unwrap().len(),
        }
    }

    /// The template changes since `before`, as told by the generation; the ReplicaSets agree.
    fn since(self, before: Rollouts) -> i64 {
        let changes = self.generation - before.generation;
        assert_eq!(
            self.replica_sets as i64 - before.replica_sets as i64,
            changes,
            "one new ReplicaSet per template change: {before:?} then {self:?}"
        );
        changes
    }
}

/// Waits until the Deployment's newest template is rolled out and available.
fn wait_for_rollout(namespace: &str) {
    let args = [
        "rollout",
        "status",
        "deployment/consumer",
        "-n",
        namespace,
        "--timeout=180s",
    ];
    kubectl(&args, None).unwrap_or_else(|e| panic!("the consumer never rolled out: {e}"));
}

/// What the pod of the Deployment's newest ReplicaSet printed at start-up.
async fn newest_pod_log(namespace: &str) -> String {
    let replica_sets = get_json(&["replicasets", "-l", "app=consumer", "-n", namespace]);
    let revision = |rs: &Value| {
        let annotation = &rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"];
        annotation.as_str().unwrap().parse::<u64>().unwrap()
    };
    let newest = replica_sets["items"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|rs| revision(rs))
        .expect("the Deployment has a ReplicaSet")
        .clone();
    let hash = newest["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap();
    let selector = format!("app=consumer,pod-template-hash={hash}");
    let mut log = String::new();
    eventually(Duration::from_secs(60), || {
        log = kubectl(&["logs", "-l", &selector, "-n", namespace], None).unwrap_or_default();
        std::future::ready(!log.trim().is_empty())
    })
    .await;
    log.trim().to_string()
}

/// What the consumer's pods should print for the Secrets as they are now.
async fn expected_log(env: &Env) -> String {
    let secrets = env.secrets();
    let web = text(&secrets.get("web").await.unwrap(), "username");
    let backup = text(&secrets.get("backup").await.unwrap(), "username");
    format!("web={web} backup={backup}")
}

/// Waits until the Deployment's template records the current checksum of both Secrets.
async fn wait_until_restarted_for_both(env: &Env) {
    let keys = ["web", "backup"].map(toma::rollout::checksum_annotation);
    eventually(Duration::from_secs(60), || async {
        let template = &get_json(&["deployment", "consumer", "-n", &env.namespace])["spec"]["template"];
        let recorded = &template["metadata"]["annotations"];
        let mut current = true;
        for (name, key) in ["web", "backup"].iter().zip(&keys) {
            let secret = env.secrets().get(name).await.unwrap();
            let checksum = secret.metadata.annotations.unwrap()["toma.dev/checksum"].clone();
            current &= recorded[key].as_str() == Some(checksum.as_str());
        }
        current
    })
    .await;
}

/// Waits until toma has finished at least `count` reconciles since it started. A reconcile
/// finishes only after the restarts it asked for were sent.
async fn wait_for_finished_reconciles(env: &Env, count: u64) {
    eventually(Duration::from_secs(60), || async {
        env.metric("toma_reconcile_duration_seconds_count").await >= count as f64
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane and the node of `make test`"]
async fn env_var_consumers_restart_once_per_content_change_and_see_the_new_credential() {
    let mut env = Env::start("rollout").await;
    let ns = env.namespace.clone();
    env.apply_cloudflare_key(TOKEN);
    env.apply_credential("web", RESTARTING_CONSUMER);
    env.apply_credential("backup", RESTARTING_CONSUMER);
    env.wait_for_reason("web", "Issued").await;
    env.wait_for_reason("backup", "Issued").await;
    // The Deployment does not exist yet: a Warning Event, and the credentials are Ready anyway.
    eventually(Duration::from_secs(20), || async {
        let args = [
            "get",
            "events",
            "-n",
            &ns,
            "--field-selector",
            "reason=RolloutRestartFailed",
            "-o",
            "name",
        ];
        !kubectl(&args, None).unwrap().trim().is_empty()
    })
    .await;

    apply(&consumer_deployment(&ns));
    wait_for_rollout(&ns);
    assert_eq!(newest_pod_log(&ns).await, expected_log(&env).await);
    let started = Rollouts::of(&ns);

    // A burst: both TurnCredentials rotated at once, both restarting the consumer.
    env.force_rotation("web", "1");
    env.force_rotation("backup", "1");
    env.wait_for_rotations("web", 2, Duration::from_secs(30)).await;
    env.wait_for_rotations("backup", 2, Duration::from_secs(30)).await;
    wait_until_restarted_for_both(&env).await;
    wait_for_rollout(&ns);
    let rotated = Rollouts::of(&ns);
    let per_burst = rotated.since(started);
    println!("rollout restarts per rotation burst (2 TurnCredentials rotated together): {per_burst}");
    assert_eq!(per_burst, 1, "two rotations together are one rollout");
    let log = newest_pod_log(&ns).await;
    assert_eq!(
        log,
        expected_log(&env).await,
        "the new pod reads the new credentials"
    );
    let mints = env.fake.mints();
    assert_eq!(mints.len(), 4);
    assert!(mints[2..].iter().all(|m| log.contains(&m.username)), "{log}");

    // toma restarts with every credential valid: nothing minted, nothing restarted.
    env.stop_toma();
    env.start_toma().await;
    wait_for_finished_reconciles(&env, 2).await;
    let on_restart = Rollouts::of(&ns).since(rotated);
    println!("rollout restarts when toma restarts with unchanged content: {on_restart}");
    assert_eq!(on_restart, 0);
    assert_eq!(env.fake.mints().len(), 4, "the restart minted");

    // toma killed once the new Secret is written, before the restart window closed: the next
    // toma makes the restart up.
    env.force_rotation("web", "2");
    eventually(Duration::from_secs(30), || async {
        let secret = env.secrets().get("web").await.unwrap();
        env.fake.mints().len() == 5 && text(&secret, "username") == env.fake.mints()[4].username
    })
    .await;
    env.toma.take().expect("toma runs").kill();
    let lost = generation(&ns) == rotated.generation;
    env.start_toma().await;
    wait_until_restarted_for_both(&env).await;
    wait_for_rollout(&ns);
    let made_up = Rollouts::of(&ns).since(rotated);
    println!(
        "rollout restarts after toma was killed between the Secret write and the restart: {made_up} ({})",
        if lost {
            "the kill came inside the window: the next toma made the restart up"
        } else {
            "the restart was sent before the kill"
        }
    );
    assert_eq!(made_up, 1);
    assert_eq!(env.fake.mints().len(), 5, "the next toma minted again");
    assert_eq!(newest_pod_log(&ns).await, expected_log(&env).await);
}
