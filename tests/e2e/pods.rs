//! toma as users run it: its image on the local node, installed by `helm install` with the chart's
//! defaults (cluster-wide) and `-f "$TOMA_HELM_VALUES"`, in a namespace that enforces the
//! "restricted" Pod Security Standard. The pod reaches the API server through the `kubernetes`
//! Service with the standard in-cluster configuration, and the fake Cloudflare, which listens on
//! the host's loopback, at `$TOMA_POD_HOST` (the local node's pod gateway), over HTTP and over
//! HTTPS with a test CA the pod trusts through `extraVolumes` and `SSL_CERT_FILE`.
//!
//! A cluster-wide toma reconciles every namespace, so hack/test.sh runs these tests alone, after
//! the tests that run their own toma. They need `make image`, which imports the image into the
//! node under the chart's default reference.

use std::time::{Duration, Instant};

use fake_cloudflare::{Config, FakeCloudflare};
use kube::Api;
use serde_json::{Value, json};
use toma::api::TurnCredential;
use toma_testkit::{
    TOKEN, TestCa, apply, apply_cloudflare_turn_key, apply_credential, client, delete_namespace, eventually,
    force_rotation, kubectl, start_fake_cloudflare, target_dir, wait_for_reason,
};

use crate::helm::{chart, exists, get_json, helm};

const RELEASE: &str = "toma";
const NAMESPACE: &str = "toma-system";

/// Where pods reach the host's loopback (`hack/cluster.sh env` exports it).
fn pod_host() -> String {
    std::env::var("TOMA_POD_HOST").expect("TOMA_POD_HOST is set: eval \"$(hack/cluster.sh env)\"")
}

fn helm_values() -> String {
    std::env::var("TOMA_HELM_VALUES").expect("TOMA_HELM_VALUES is set: eval \"$(hack/cluster.sh env)\"")
}

/// The fake's base URL as pods see it: its loopback port at the pod gateway.
fn base_url_for_pods(fake: &FakeCloudflare) -> String {
    let port = fake.local_addr().unwrap().port();
    let scheme = fake.base_url().split("://").next().unwrap().to_string();
    format!("{scheme}://{}:{port}", pod_host())
}

/// `helm <command> toma charts/toma -n toma-system -f $TOMA_HELM_VALUES <extra>`, timed.
fn release(command: &str, extra: &[&str]) -> Duration {
    let chart = chart();
    let values = helm_values();
    let mut args = vec![
        command,
        RELEASE,
        chart.to_str().unwrap(),
        "-n",
        NAMESPACE,
        "-f",
        &values,
    ];
    args.extend(extra);
    let started = Instant::now();
    helm(&args).unwrap_or_else(|e| panic!("helm {args:?}: {e}\n{}", describe_pods()));
    started.elapsed()
}

/// The release's pods, for failure messages: their phase, conditions and Events.
fn describe_pods() -> String {
    kubectl(&["describe", "pods", "-n", NAMESPACE], None).unwrap_or_else(|e| e)
}

/// For failure messages: the Lease, the TurnCredentials in `app` and the end of every release
/// pod's log.
fn release_state(app: &str) -> String {
    let get = |args: &[&str]| kubectl(args, None).unwrap_or_else(|e| e);
    let mut state = get(&["get", "lease", RELEASE, "-n", NAMESPACE, "-o", "yaml"]);
    state += &get(&["get", "tc", "-n", app, "-o", "yaml"]);
    for (pod, _, _) in pods() {
        state += &format!("--- log of {pod}\n");
        state += &get(&["logs", &pod, "-n", NAMESPACE, "--tail=40"]);
    }
    state
}

/// Uninstalls the release if it is installed (from an earlier run, or a test that failed).
fn uninstall_if_there() {
    let args = [
        "uninstall",
        RELEASE,
        "-n",
        NAMESPACE,
        "--ignore-not-found",
        "--wait",
    ];
    let _ = helm(&args);
}

/// Removes what an earlier run left and creates the release namespace, enforcing "restricted".
fn fresh_release_namespace() {
    uninstall_if_there();
    if exists("namespace", NAMESPACE, None) {
        let _ = kubectl(&["delete", "namespace", NAMESPACE, "--timeout=120s"], None);
    }
    apply(&format!(
        r#"
apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
  labels:
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/warn: restricted
"#
    ));
}

/// Uninstalls the release and deletes the namespaces on drop, whatever the test's outcome.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        uninstall_if_there();
        for namespace in &self.0 {
            delete_namespace(namespace);
        }
        let _ = kubectl(&["delete", "namespace", NAMESPACE, "--wait=false"], None);
    }
}

/// The release's running pods: (name, Ready, restart count), oldest first.
fn pods() -> Vec<(String, bool, i64)> {
    let selector = format!("app.kubernetes.io/instance={RELEASE}");
    let list = get_json(&["pods", "-n", NAMESPACE, "-l", &selector]);
    let mut pods: Vec<(String, String, bool, i64)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let ready = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            let restarts = p["status"]["containerStatuses"][0]["restartCount"]
                .as_i64()
                .unwrap_or(0);
            let created = p["metadata"]["creationTimestamp"].as_str().unwrap().to_string();
            (
                created,
                p["metadata"]["name"].as_str().unwrap().to_string(),
                ready,
                restarts,
            )
        })
        .collect();
    pods.sort();
    pods.into_iter()
        .map(|(_, name, ready, restarts)| (name, ready, restarts))
        .collect()
}

/// The Lease toma's replicas compete for: (holder, transitions).
fn lease() -> (Option<String>, i64) {
    let lease = get_json(&["lease", RELEASE, "-n", NAMESPACE]);
    let holder = lease["spec"]["holderIdentity"].as_str().map(String::from);
    (holder, lease["spec"]["leaseTransitions"].as_i64().unwrap_or(0))
}

/// Waits until `count` pods of the release run, Ready and never restarted, and returns their names.
async fn wait_for_ready_pods(count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pods = pods();
        if pods.len() == count && pods.iter().all(|(_, ready, _)| *ready) {
            for (name, _, restarts) in &pods {
                assert_eq!(
                    *restarts,
                    0,
                    "{name} restarted: its liveness probe failed?\n{}",
                    describe_pods()
                );
            }
            return pods.into_iter().map(|(name, _, _)| name).collect();
        }
        assert!(
            Instant::now() < deadline,
            "never {count} Ready pods: {pods:?}\n{}",
            describe_pods()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The CA's certificate as a ConfigMap in the release namespace, and the values that mount it and
/// point SSL_CERT_FILE at it.
fn trust_test_ca(ca: &TestCa) -> std::path::PathBuf {
    let configmap = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "provider-ca", "namespace": NAMESPACE},
        "data": {"ca.crt": ca.ca_pem},
    });
    apply(&configmap.to_string());
    let values = r#"
replicaCount: 2
extraVolumes:
  - name: provider-ca
    configMap: {name: provider-ca}
extraVolumeMounts:
  - name: provider-ca
    mountPath: /etc/toma/ca
    readOnly: true
extraEnv:
  - name: SSL_CERT_FILE
    value: /etc/toma/ca/ca.crt
"#;
    let path = target_dir().join("tmp/pods-values.yaml");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, values).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane and node of `make test`, and `make image`; alone"]
async fn helm_installed_pods_serve_other_namespaces_over_http_and_https_and_hand_over_on_delete() {
    let app = "e2e-pods-app".to_string();
    delete_namespace(&app);
    eventually(Duration::from_secs(120), || async {
        !exists("namespace", &app, None)
    })
    .await;
    fresh_release_namespace();
    kubectl(&["create", "namespace", &app], None).unwrap();
    let _cleanup = Cleanup(vec![app.clone()]);
    let plain = start_fake_cloudflare(Config::default()).await;
    let ca = TestCa::new(&target_dir().join("tmp/pods-ca"), &[&pod_host()]);
    let secure = start_fake_cloudflare(Config {
        tls: Some(ca.server.clone()),
        ..Config::default()
    })
    .await;

    // The chart's defaults: cluster-wide, one replica, the image `make image` imported.
    let took = release("install", &["--wait", "--timeout=180s"]);
    println!(
        "helm install --wait (one pod Ready on the node): {:.1} s",
        took.as_secs_f64()
    );
    let first = wait_for_ready_pods(1).await;
    let deployment = get_json(&["deployment", RELEASE, "-n", NAMESPACE]);
    let spec = &deployment["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], Value::Null, "the pod is on the pod network");
    assert_eq!(
        spec["containers"][0]["env"].as_array().unwrap().len(),
        3,
        "no extra env: {spec}"
    );
    let running = get_json(&["pod", &first[0], "-n", NAMESPACE]);
    assert!(
        running["status"]["podIP"]
            .as_str()
            .unwrap()
            .starts_with("10.244.")
    );
    assert_eq!(running["spec"]["securityContext"]["runAsUser"], 65532);

    // A TurnCredential in another namespace, Ready through the pod, the fake reached over HTTP.
    apply_cloudflare_turn_key(&app, TOKEN, &base_url_for_pods(&plain));
    apply_credential(
        &app,
        "web",
        "{kind: TurnKey, name: cloudflare}",
        "  ttlSeconds: 3600",
    );
    let credentials: Api<TurnCredential> = Api::namespaced(client().await, &app);
    wait_for_reason(&credentials, "web", "Issued").await;
    assert_eq!(plain.mints().len(), 1);
    assert!(exists("secret", "web", Some(&app)));
    // The chart's ClusterRole lets it watch every kind it watches: keys, their Secrets, namespaces.
    let log = kubectl(&["logs", &first[0], "-n", NAMESPACE], None).unwrap();
    assert!(
        log.contains("TurnCredentials listed") && !log.contains("may not watch"),
        "{log}"
    );

    // Upgrade to two replicas that trust the test CA: the pods roll, one new pod at a time.
    let values = trust_test_ca(&ca);
    let values = values.to_str().unwrap();
    let took = release(
        "upgrade",
        &["--reuse-values", "-f", values, "--wait", "--timeout=180s"],
    );
    println!("helm upgrade --wait to two replicas: {:.1} s", took.as_secs_f64());
    let pair = wait_for_ready_pods(2).await;
    assert!(
        !pair.contains(&first[0]),
        "the upgrade replaced {}: {pair:?}",
        first[0]
    );
    let status: Value =
        serde_json::from_str(&helm(&["status", RELEASE, "-n", NAMESPACE, "-o", "json"]).unwrap()).unwrap();
    assert_eq!(status["version"], 2);

    // The provider over HTTPS, with the CA from the mounted ConfigMap.
    apply(&format!(
        r#"
apiVersion: toma.dev/v1alpha1
kind: TurnKey
metadata: {{name: cloudflare-tls, namespace: {app}}}
spec:
  cloudflare:
    keyId: {key}
    apiTokenSecretRef: {{name: cloudflare-turn, key: api-token}}
    baseUrl: {url}
"#,
        key = toma_testkit::KEY_ID,
        url = base_url_for_pods(&secure),
    ));
    apply_credential(
        &app,
        "secure",
        "{kind: TurnKey, name: cloudflare-tls}",
        "  ttlSeconds: 3600",
    );
    wait_for_reason(&credentials, "secure", "Issued").await;
    assert_eq!(secure.mints().len(), 1, "minted over HTTPS");
    assert!(secure.base_url().starts_with("https://"));

    // Deleting the leader's pod: the kubelet sends SIGTERM, toma releases the Lease, the
    // standby takes it.
    let (leader, transitions) = lease();
    let leader = leader.expect("the Lease has a holder");
    assert!(pair.contains(&leader), "the leader {leader} is one of {pair:?}");
    let standby = pair.iter().find(|p| **p != leader).unwrap().clone();
    let deleted = Instant::now();
    kubectl(&["delete", "pod", &leader, "-n", NAMESPACE, "--wait=false"], None).unwrap();
    let deadline = deleted + Duration::from_secs(30);
    // The standby, or the pod that replaces the deleted one if it asks first: either way a
    // replica other than the one that got SIGTERM.
    let (handed_over, successor) = loop {
        if let (Some(holder), _) = lease()
            && holder != leader
        {
            break (deleted.elapsed(), holder);
        }
        assert!(
            Instant::now() < deadline,
            "no other replica led; the Lease: {:?}",
            lease()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let who = if successor == standby {
        "the standby"
    } else {
        "the replacement pod"
    };
    println!(
        "leader pod deleted -> {who} holds the Lease: {:.2} s (lease duration 15 s)",
        handed_over.as_secs_f64()
    );
    assert!(
        handed_over < Duration::from_secs(15),
        "the standby waited for the lease to expire"
    );
    assert_eq!(lease().1, transitions + 1);
    // The Deployment replaces the deleted pod; the new one stands by.
    wait_for_ready_pods(2).await;
    assert_eq!(
        (plain.mints().len(), secure.mints().len()),
        (1, 1),
        "a valid credential was minted again during the handover"
    );

    // The new leader rotates on request, once.
    force_rotation(&app, "web", "1");
    let deadline = Instant::now() + Duration::from_secs(30);
    while plain.mints().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the new leader {successor} did not rotate web within 30 s\n{}",
            release_state(&app)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(plain.mints().len(), 2, "one rotation, one mint");
    assert_eq!(secure.mints().len(), 1);

    // Uninstall: every object of the release goes, its pods included. The Lease is toma's own
    // runtime state and goes with the namespace; the Secrets toma wrote stay with their
    // TurnCredentials.
    helm(&["uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout=120s"]).unwrap();
    let uninstalled = Instant::now();
    let left = || {
        let args = [
            "get",
            "all,role,rolebinding,serviceaccount",
            "-n",
            NAMESPACE,
            "-o",
            "name",
        ];
        let names = kubectl(&args, None).unwrap();
        names
            .lines()
            .filter(|l| *l != "serviceaccount/default")
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let deadline = uninstalled + Duration::from_secs(60);
    while !left().is_empty() {
        assert!(Instant::now() < deadline, "left in {NAMESPACE}: {:?}", left());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "helm uninstall -> no pod or object of the release left: {:.1} s more",
        uninstalled.elapsed().as_secs_f64()
    );
    for (kind, name) in [("clusterrole", RELEASE), ("clusterrolebinding", RELEASE)] {
        assert!(!exists(kind, name, None), "{kind} {name} left after uninstall");
    }
    assert!(
        exists("secret", "web", Some(&app)),
        "uninstall took a credential's Secret"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane and node of `make test`; alone"]
async fn an_image_that_was_never_built_shows_in_the_pods_events() {
    let namespace = "e2e-pods-missing-image";
    let _ = helm(&[
        "uninstall",
        "missing",
        "-n",
        namespace,
        "--ignore-not-found",
        "--wait",
    ]);
    delete_namespace(namespace);
    eventually(Duration::from_secs(120), || async {
        !exists("namespace", namespace, None)
    })
    .await;
    kubectl(&["create", "namespace", namespace], None).unwrap();
    struct Gone(&'static str);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = helm(&["uninstall", "missing", "-n", self.0, "--ignore-not-found"]);
            let _ = kubectl(&["delete", "namespace", self.0, "--wait=false"], None);
        }
    }
    let _gone = Gone(namespace);
    let chart = chart();
    let values = helm_values();
    // Namespaced, so that this toma (if it ever ran) would touch nothing of other tests.
    helm(&[
        "install",
        "missing",
        chart.to_str().unwrap(),
        "-n",
        namespace,
        "-f",
        &values,
        "--set",
        "image.tag=0.0.0-never-built,namespaced=true",
    ])
    .unwrap();
    let mut events = String::new();
    eventually(Duration::from_secs(60), || {
        events = kubectl(
            &[
                "get",
                "events",
                "-n",
                namespace,
                "--field-selector",
                "involvedObject.kind=Pod",
                "-o",
                "json",
            ],
            None,
        )
        .unwrap_or_default();
        std::future::ready(events.contains("ErrImagePull") || events.contains("ImagePullBackOff"))
    })
    .await;
    let events: Value = serde_json::from_str(&events).unwrap();
    let failed = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["reason"] == "Failed")
        .unwrap_or_else(|| panic!("no Failed Event: {events}"));
    let message = failed["message"].as_str().unwrap();
    println!("the pod's Event for an image never built: {message}");
    assert!(
        message.contains("ghcr.io/toma-dev/toma:0.0.0-never-built"),
        "{message}"
    );
}
