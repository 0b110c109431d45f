//! The Helm chart (charts/toma) against the real control plane, with the real helm: it lints
//! and renders in every mode, installs, upgrades and uninstalls cleanly, its Deployment passes
//! the "restricted" Pod Security Standard, and the RBAC it grants is enough for toma's whole
//! happy path, run as the chart's ServiceAccount, and no more.
//!
//! The releases here have no replicas: toma runs as a local process that authenticates with a
//! token of the chart's ServiceAccount, so every API call it makes is authorized by exactly the
//! roles the chart installed. tests/e2e/pods.rs runs the chart's pods on the local node.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fake_cloudflare::FakeCloudflare;
use k8s_openapi::ByteString;
use kube::Api;
use serde_json::{Value, json};
use toma::api::TurnCredential;

use toma_testkit::{
    TOKEN, Toma, apply, apply_cloudflare_key, apply_cloudflare_turn_key, apply_credential, client,
    eventually, force_rotation, free_port, kubectl, log_path, ready, run, start_fake_cloudflare,
    stdout_or_stderr, wait_for_reason, wait_until,
};

const KUBE_VERSION: &str = "1.37.2";

pub(crate) fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/toma")
}

/// Runs helm. Ok(stdout) or Err(stderr).
pub(crate) fn helm(args: &[&str]) -> Result<String, String> {
    stdout_or_stderr(run("helm", args, None))
}

/// `helm template` of the chart with `--set` values, as parsed documents.
fn render(set: &str) -> Vec<Value> {
    let chart = chart();
    let mut args = vec![
        "template",
        "toma",
        chart.to_str().unwrap(),
        "--namespace",
        "toma-system",
        "--kube-version",
        KUBE_VERSION,
    ];
    if !set.is_empty() {
        args.extend(["--set", set]);
    }
    let text = helm(&args).unwrap_or_else(|e| panic!("helm template --set {set} failed: {e}"));
    yaml_documents(&text)
}

fn yaml_documents(text: &str) -> Vec<Value> {
    let documents: Vec<Option<Value>> = serde_saphyr::from_multiple(text).unwrap();
    documents.into_iter().flatten().collect()
}

fn kinds(documents: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = documents
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_string())
        .collect();
    kinds.sort();
    kinds
}

fn find<'a>(documents: &'a [Value], kind: &str, name: &str) -> &'a Value {
    documents
        .iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

/// The rules of a (Cluster)Role as (apiGroup/resource, verb) pairs, resource names ignored.
fn grants(role: &Value) -> BTreeSet<(String, String)> {
    let mut grants = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        for group in rule["apiGroups"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                for verb in rule["verbs"].as_array().unwrap() {
                    let resource = format!("{}/{}", group.as_str().unwrap(), resource.as_str().unwrap());
                    grants.insert((resource, verb.as_str().unwrap().to_string()));
                }
            }
        }
    }
    grants
}

fn container_args(deployment: &Value) -> Vec<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// `kubectl get ... -o json`.
pub(crate) fn get_json(args: &[&str]) -> Value {
    let mut args = [&["get"], args].concat();
    args.extend(["-o", "json"]);
    let out = kubectl(&args, None).unwrap_or_else(|e| panic!("kubectl get {args:?}: {e}"));
    serde_json::from_str(&out).unwrap()
}

pub(crate) fn exists(kind: &str, name: &str, namespace: Option<&str>) -> bool {
    let mut args = vec!["get", kind, name, "--ignore-not-found", "-o", "name"];
    if let Some(ns) = namespace {
        args.extend(["-n", ns]);
    }
    !kubectl(&args, None).unwrap().trim().is_empty()
}

/// toma's /metrics text with one series in every family the alerts may use (empty families
/// are not written at all).
fn exported_metrics() -> String {
    use toma::metrics::{CredentialLabels, Metrics, ReasonLabels};
    let metrics = Metrics::default();
    let credential = CredentialLabels {
        namespace: "app".into(),
        name: "web".into(),
    };
    metrics.expiration.get_or_create(&credential).set(1);
    metrics.renewal.get_or_create(&credential).set(1);
    metrics.ready.get_or_create(&credential).set(0);
    metrics
        .reconcile_errors
        .get_or_create(&ReasonLabels {
            reason: "ProviderError".into(),
        })
        .inc();
    metrics.encode()
}

/// A release of the chart in a namespace of its own. Dropping it uninstalls the release and
/// deletes its namespaces.
struct Release {
    name: String,
    namespace: String,
    /// Other namespaces the test created.
    others: Vec<String>,
}

impl Release {
    /// Clears what an earlier run may have left, then creates `namespace` and `others`.
    async fn prepare(name: &str, namespace: &str, others: &[&str]) -> Release {
        let _ = helm(&["uninstall", name, "-n", namespace, "--ignore-not-found"]);
        let all: Vec<&str> = std::iter::once(namespace).chain(others.iter().copied()).collect();
        for ns in &all {
            if exists("namespace", ns, None) {
                let _ = kubectl(&["delete", "namespace", ns, "--wait=false"], None);
                eventually(Duration::from_secs(60), || async {
                    !exists("namespace", ns, None)
                })
                .await;
            }
            kubectl(&["create", "namespace", ns], None).unwrap();
        }
        Release {
            name: name.into(),
            namespace: namespace.into(),
            others: others.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The name of the chart's objects: the release name with the chart's appended.
    fn fullname(&self) -> String {
        format!("{}-toma", self.name)
    }

    fn service_account(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.fullname())
    }

    /// `helm install` (or `upgrade`) with extra flags; panics with helm's message on failure.
    fn helm(&self, command: &str, extra: &[&str]) -> String {
        let chart = chart();
        let mut args = vec![
            command,
            self.name.as_str(),
            chart.to_str().unwrap(),
            "--namespace",
            self.namespace.as_str(),
        ];
        // No pod of the chart: on the local node it would reconcile beside the toma these tests
        // run with the chart's ServiceAccount token. tests/e2e/pods.rs runs the chart's pods.
        args.extend(["--set", "replicaCount=0"]);
        args.extend(extra);
        helm(&args).unwrap_or_else(|e| panic!("helm {args:?} failed: {e}"))
    }

    fn deployment(&self) -> Value {
        get_json(&["deployment", &self.fullname(), "-n", &self.namespace])
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = helm(&[
            "uninstall",
            &self.name,
            "-n",
            &self.namespace,
            "--ignore-not-found",
        ]);
        for ns in std::iter::once(&self.namespace).chain(&self.others) {
            let _ = kubectl(&["delete", "namespace", ns, "--wait=false"], None);
        }
    }
}

/// One line of the `kubectl auth can-i` table: `verb resource [subresource] [-n ns | -A]`.
struct Can {
    verb: &'static str,
    resource: String,
    subresource: Option<&'static str>,
    /// None: all namespaces (or a cluster-scoped resource).
    namespace: Option<String>,
    allowed: bool,
}

fn can(verb: &'static str, resource: &str, namespace: Option<&str>) -> Can {
    Can {
        verb,
        resource: resource.into(),
        subresource: None,
        namespace: namespace.map(String::from),
        allowed: true,
    }
}

fn cannot(verb: &'static str, resource: &str, namespace: Option<&str>) -> Can {
    Can {
        allowed: false,
        ..can(verb, resource, namespace)
    }
}

impl Can {
    fn sub(mut self, subresource: &'static str) -> Can {
        self.subresource = Some(subresource);
        self
    }
}

/// Asks the API server each question as `user`, prints the table and asserts every answer.
fn assert_can_i(user: &str, table: &[Can]) {
    let mut wrong = Vec::new();
    let mut printed = format!("kubectl auth can-i --as={user}\n");
    for case in table {
        let mut args = vec!["auth", "can-i", case.verb, case.resource.as_str()];
        if let Some(sub) = case.subresource {
            args.extend(["--subresource", sub]);
        }
        match &case.namespace {
            Some(ns) => args.extend(["-n", ns.as_str()]),
            None => args.push("--all-namespaces"),
        }
        let as_user = format!("--as={user}");
        args.push(&as_user);
        let output = run("kubectl", &args, None);
        let answer = String::from_utf8_lossy(&output.stdout).trim().to_string();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            answer == "yes" || answer == "no",
            "kubectl {args:?} answered {answer:?}: {stderr}"
        );
        assert!(
            !stderr.contains("doesn't have a resource type"),
            "kubectl {args:?}: {stderr}"
        );
        let allowed = answer == "yes";
        let scope = case
            .namespace
            .as_deref()
            .map_or("(all)".to_string(), |ns| format!("-n {ns}"));
        let resource = match case.subresource {
            Some(sub) => format!("{}/{sub}", case.resource),
            None => case.resource.clone(),
        };
        let mark = if allowed == case.allowed {
            ""
        } else {
            "   <-- expected otherwise"
        };
        printed += &format!(
            "  {:<11} {:<45} {:<28} {answer}{mark}\n",
            case.verb, resource, scope
        );
        if allowed != case.allowed {
            wrong.push(format!("{} {resource} {scope}: {answer}", case.verb));
        }
    }
    println!("{printed}");
    assert!(wrong.is_empty(), "unexpected can-i answers: {wrong:#?}");
}

/// A kubeconfig file that authenticates as the chart's ServiceAccount, with a token from the
/// TokenRequest API, against the same server and CA as the test kubeconfig.
fn service_account_kubeconfig(release: &Release) -> PathBuf {
    let token = kubectl(
        &[
            "create",
            "token",
            &release.fullname(),
            "-n",
            &release.namespace,
            "--duration=1h",
        ],
        None,
    )
    .unwrap();
    // --raw: the CA data itself. The admin's client key comes with it, so `admin` is never
    // printed.
    let admin = get_json_raw(&["config", "view", "--raw", "--minify", "-o", "json"]);
    let cluster = admin["clusters"][0]["cluster"].clone();
    assert!(
        cluster["server"].is_string(),
        "no server in the test kubeconfig's first cluster"
    );
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": "toma", "user": {"token": token.trim()}}],
        "contexts": [{"name": "toma", "context": {"cluster": "test", "user": "toma", "namespace": release.namespace}}],
        "current-context": "toma",
    });
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{}.kubeconfig", release.name));
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    path
}

fn get_json_raw(args: &[&str]) -> Value {
    let out = kubectl(args, None).unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"));
    serde_json::from_str(&out).unwrap()
}

/// The real toma binary, authenticated as the chart's ServiceAccount, logging to
/// target/tmp/e2e-logs/<name>.log. Killed on drop.
struct Operator {
    _toma: Toma,
    log: PathBuf,
}

/// The command line and environment the chart's Deployment gives toma's container, with the
/// downward-API values filled in as the kubelet would for pod `pod`, and `--http-addr` left
/// out (the caller picks a local port). The image's entrypoint is `/toma run`.
fn container_command(release: &Release, pod: &str) -> (Vec<String>, Vec<(String, String)>) {
    let deployment = release.deployment();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args = container_args(&deployment)
        .into_iter()
        .filter(|a| !a.starts_with("--http-addr"))
        .collect();
    let env = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.name") => pod.to_string(),
                Some("metadata.namespace") => release.namespace.clone(),
                Some(other) => panic!("no downward-API value for {other}"),
                None => e["value"].as_str().unwrap().to_string(),
            };
            (e["name"].as_str().unwrap().to_string(), value)
        })
        .collect();
    (args, env)
}

impl Operator {
    /// Runs `toma run` with the chart container's `args` and `env` plus `extra_args`, and
    /// waits until it is ready.
    async fn start(
        kubeconfig: &Path,
        log_name: &str,
        (args, env): (Vec<String>, Vec<(String, String)>),
        extra_args: &[&str],
    ) -> Operator {
        toma::install_crypto_provider();
        let http = format!("127.0.0.1:{}", free_port());
        let log = log_path(log_name);
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_toma"))
            .arg("run")
            .args(&args)
            .args(extra_args)
            .args(["--http-addr", &http])
            .env_clear()
            .envs(env)
            .env("KUBECONFIG", kubeconfig)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("the toma binary runs");
        let toma = Toma::new(child, http);
        toma.wait_ready().await;
        Operator { _toma: toma, log }
    }

    /// Runs toma as `release`'s ServiceAccount with the command line and environment of the
    /// release's Deployment for pod `pod`, plus `extra_args`.
    async fn for_release(release: &Release, pod: &str, extra_args: &[&str]) -> Operator {
        let kubeconfig = service_account_kubeconfig(release);
        let command = container_command(release, pod);
        Operator::start(&kubeconfig, &release.namespace, command, extra_args).await
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

/// A Deployment for rolloutRestartTargets. Its pods never run (its image is nowhere to pull).
fn consumer_deployment(namespace: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: consumer, namespace: {namespace}}}
spec:
  selector: {{matchLabels: {{app: consumer}}}}
  template:
    metadata: {{labels: {{app: consumer}}}}
    spec:
      containers: [{{name: app, image: registry.example.com/app:1}}]
"#
    )
}

/// The happy path through the operator: Issued, the Secret written, an Event recorded, a
/// forced rotation restarting the consumer Deployment for the new content, and the Secret
/// collected with its TurnCredential. Every call is made by toma under the chart's RBAC.
async fn happy_path(namespace: &str, key_ref: &str, fake: &FakeCloudflare) {
    apply(&consumer_deployment(namespace));
    apply_credential(
        namespace,
        "web",
        key_ref,
        "  ttlSeconds: 3600\n  secretName: web-ice\n  rolloutRestartTargets: [{kind: Deployment, name: consumer}]",
    );
    let credentials: Api<TurnCredential> = Api::namespaced(client().await, namespace);
    let tc = wait_for_reason(&credentials, "web", "Issued").await;
    assert_eq!(fake.mints().len(), 1);

    let secret = get_json(&["secret", "web-ice", "-n", namespace]);
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["uid"],
        json!(tc.metadata.uid.clone().unwrap())
    );
    assert_eq!(
        secret["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "toma"
    );
    for key in ["iceServers.json", "username", "credential", "urls", "expiresAt"] {
        assert!(secret["data"][key].is_string(), "the Secret has no {key}");
    }
    let events = get_json(&["events.events.k8s.io", "-n", namespace]);
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "Issued"
                && e["regarding"]["name"] == "web"
                && e["reportingController"] == "toma"),
        "toma recorded an Issued Event: {events}"
    );

    force_rotation(namespace, "web", "1");
    let recorded = toma::rollout::checksum_annotation("web");
    eventually(Duration::from_secs(30), || async {
        let secret = get_json(&["secret", "web-ice", "-n", namespace]);
        let template = get_json(&["deployment", "consumer", "-n", namespace])["spec"]["template"].clone();
        let annotations = &template["metadata"]["annotations"];
        fake.mints().len() == 2
            && secret["data"]["username"] == json!(ByteString(fake.mints()[1].username.clone().into_bytes()))
            && annotations[&recorded] == secret["metadata"]["annotations"]["toma.dev/checksum"]
            && annotations["toma.dev/restartedAt"].is_string()
    })
    .await;
    assert_eq!(fake.mints().len(), 2, "the forced rotation minted once");

    kubectl(&["delete", "tc", "web", "-n", namespace, "--timeout=30s"], None).unwrap();
    eventually(Duration::from_secs(60), || async {
        !exists("secret", "web-ice", Some(namespace))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn chart_lints_strictly_and_renders_every_mode_as_documented() {
    let chart = chart();
    let chart = chart.to_str().unwrap();
    let modes = [
        "",
        "namespaced=true",
        "namespaced=true,watchNamespace=app,serviceMonitor.enabled=true,prometheusRule.enabled=true,podDisruptionBudget.enabled=true,replicaCount=2,serviceMonitor.labels.release=prom,prometheusRule.labels.release=prom",
        "serviceMonitor.enabled=true,prometheusRule.enabled=true,podDisruptionBudget.enabled=true,replicaCount=3",
        "leaderElection.enabled=false,rbac.rolloutRestart=false,rbac.aggregateToDefaultRoles=false",
    ];
    for set in modes {
        let mut args = vec!["lint", "--strict", chart, "--kube-version", KUBE_VERSION];
        if !set.is_empty() {
            args.extend(["--set", set]);
        }
        let out = helm(&args).unwrap_or_else(|e| panic!("helm lint --set {set}: {e}"));
        assert!(
            !out.contains("[WARNING]") && !out.contains("[ERROR]"),
            "helm lint --set {set}:\n{out}"
        );
    }

    // Cluster mode: ClusterRoles named after the release, the Lease Role in the release namespace.
    let docs = render("");
    assert_eq!(
        kinds(&docs),
        [
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
    );
    let cluster_role = grants(find(&docs, "ClusterRole", "toma"));
    assert!(cluster_role.contains(&("toma.dev/clusterturnkeys".into(), "get".into())));
    assert!(cluster_role.contains(&("apps/deployments".into(), "get".into())));
    assert!(cluster_role.contains(&("apps/deployments".into(), "patch".into())));
    let lease_role = find(&docs, "Role", "toma-leader-election");
    assert_eq!(lease_role["metadata"]["namespace"], "toma-system");
    let deployment = find(&docs, "Deployment", "toma");
    let args = container_args(deployment);
    assert!(args.contains(&"--leader-elect".into()) && args.contains(&"--lease-name=toma".into()));
    assert!(!args.iter().any(|a| a.starts_with("--namespace")));
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"], "ghcr.io/toma-dev/toma:0.1.0",
        "the tag defaults to the appVersion"
    );
    assert_eq!(
        deployment["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}),
        "one pod at a time, new pod first, so that `helm install --wait` waits for every replica"
    );

    // Namespaced mode with everything optional turned on.
    let docs = render(modes[2]);
    assert_eq!(
        kinds(&docs),
        [
            "Deployment",
            "PodDisruptionBudget",
            "PrometheusRule",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ServiceMonitor"
        ]
    );
    let role = find(&docs, "Role", "toma");
    assert_eq!(role["metadata"]["namespace"], "app");
    assert!(
        !grants(role)
            .iter()
            .any(|(resource, _)| resource.ends_with("clusterturnkeys")),
        "namespaced mode grants no ClusterTurnKey access"
    );
    assert_eq!(
        find(&docs, "RoleBinding", "toma")["subjects"][0]["namespace"],
        "toma-system"
    );
    assert!(container_args(find(&docs, "Deployment", "toma")).contains(&"--namespace=app".into()));
    let service = find(&docs, "Service", "toma");
    let monitor = find(&docs, "ServiceMonitor", "toma");
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        service["spec"]["selector"]
    );
    assert_eq!(
        find(&docs, "PodDisruptionBudget", "toma")["spec"],
        json!({
            "maxUnavailable": 1,
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
            "selector": {"matchLabels": service["spec"]["selector"]},
        })
    );

    // Every metric the alerts use is one toma exports.
    let exported = exported_metrics();
    let rule = find(&docs, "PrometheusRule", "toma");
    // Prometheus operators select rules and monitors by a label of the user's choosing.
    for labelled in [rule, monitor] {
        assert_eq!(labelled["metadata"]["labels"]["release"], "prom");
    }
    let rules = rule["spec"]["groups"][0]["rules"].as_array().unwrap();
    assert!(rules.len() >= 3);
    for rule in rules {
        let expr = rule["expr"].as_str().unwrap();
        let metrics: Vec<&str> = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("toma_"))
            .collect();
        assert!(!metrics.is_empty(), "{expr}");
        for metric in metrics {
            let family = metric.strip_suffix("_total").unwrap_or(metric);
            assert!(
                exported.contains(&format!("# TYPE {family} ")),
                "alert {} uses {metric}, which toma does not export",
                rule["alert"]
            );
        }
    }
    let alerts: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    assert_eq!(
        alerts,
        [
            "TurnCredentialRenewalOverdue",
            "TurnCredentialExpired",
            "TurnCredentialNotReady",
            "TomaReconcileErrors",
            "TomaAbsent"
        ]
    );
    // No alert fires on a fixed horizon, which short ttls would always be inside.
    assert!(
        rules
            .iter()
            .all(|r| !r["expr"].as_str().unwrap().contains("< 3600"))
    );
    let absent = rules.iter().find(|r| r["alert"] == "TomaAbsent").unwrap();
    assert_eq!(
        absent["expr"],
        "absent(toma_reconciles_total{job=\"toma\", namespace=\"toma-system\"})"
    );

    // Without leader election and rollout restarts: no Lease Role, no flag, no apps access.
    let docs = render(modes[4]);
    assert!(
        !docs
            .iter()
            .any(|d| d["metadata"]["name"] == "toma-leader-election")
    );
    assert!(!container_args(find(&docs, "Deployment", "toma")).contains(&"--leader-elect".into()));
    assert!(
        !grants(find(&docs, "ClusterRole", "toma"))
            .iter()
            .any(|(resource, _)| resource.starts_with("apps/"))
    );
    assert_eq!(kinds(&docs).iter().filter(|k| *k == "ClusterRole").count(), 1);

    // Wrong values are refused with a message that names them.
    let refused = [
        ("bogus=1", "bogus"),
        ("logFormat=xml", "logFormat"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        (
            "replicaCount=2,leaderElection.enabled=false",
            "leaderElection.enabled",
        ),
        ("watchNamespace=app", "namespaced=true"),
        (
            "podDisruptionBudget.enabled=true,podDisruptionBudget.minAvailable=1",
            "not both",
        ),
    ];
    for (set, expected) in refused {
        let error = helm(&[
            "template",
            "toma",
            chart,
            "--kube-version",
            KUBE_VERSION,
            "--set",
            set,
        ])
        .expect_err(set);
        assert!(error.contains(expected), "--set {set}: {error}");
    }
    let error = helm(&["template", "toma", chart, "--kube-version", "1.32.0"]).unwrap_err();
    assert!(error.contains("kubeVersion"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn chart_installs_a_restricted_deployment_then_upgrades_and_uninstalls_cleanly() {
    let release = Release::prepare("helm-life", "e2e-helm-life", &[]).await;
    let ns = release.namespace.clone();
    let name = release.fullname();
    // The CRDs are already installed (as by `kubectl apply --server-side -f crds/`).
    release.helm("install", &["--skip-crds"]);

    let deployment = release.deployment();
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(pod["serviceAccountName"], json!(name));
    assert_eq!(
        pod["securityContext"],
        json!({"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}})
    );
    assert_eq!(
        container["securityContext"],
        json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}})
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let args = container_args(&deployment);
    for expected in ["--http-addr=0.0.0.0:8080", "--log-format=text", "--leader-elect"] {
        assert!(args.contains(&expected.to_string()), "{expected} in {args:?}");
    }
    assert!(args.contains(&format!("--lease-name={name}")));
    let env = container["env"].as_array().unwrap();
    assert!(
        env.iter().any(|e| e["name"] == "POD_NAMESPACE"
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace")
    );

    assert!(exists("serviceaccount", &name, Some(&ns)));
    let binding = get_json(&["clusterrolebinding", &name]);
    assert_eq!(binding["roleRef"]["name"], json!(name));
    assert_eq!(
        binding["subjects"][0],
        json!({"kind": "ServiceAccount", "name": name, "namespace": ns})
    );
    let cluster_role = grants(&get_json(&["clusterrole", &name]));
    assert!(cluster_role.contains(&("/secrets".into(), "patch".into())));
    assert!(!cluster_role.contains(&("/secrets".into(), "delete".into())));
    let edit = get_json(&["clusterrole", &format!("{name}-edit")]);
    assert_eq!(
        edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"],
        "true"
    );
    let lease_role = get_json(&["role", &format!("{name}-leader-election"), "-n", &ns]);
    assert_eq!(lease_role["rules"][1]["resourceNames"], json!([name]));
    let service = get_json(&["service", &name, "-n", &ns]);
    assert_eq!(service["spec"]["ports"][0]["port"], 8080);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    for (key, value) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&deployment["spec"]["template"]["metadata"]["labels"][key], value);
    }

    // The "restricted" Pod Security Standard, enforced by the API server's admission.
    kubectl(
        &[
            "label",
            "namespace",
            &ns,
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/warn=restricted",
        ],
        None,
    )
    .unwrap();
    let pod_from = |spec: &Value| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "psa-check", "namespace": ns}, "spec": spec})
            .to_string()
    };
    let admitted = run(
        "kubectl",
        &["create", "--dry-run=server", "-f", "-"],
        Some(&pod_from(pod)),
    );
    assert!(
        admitted.status.success(),
        "the chart's pod is refused: {}",
        String::from_utf8_lossy(&admitted.stderr)
    );
    let mut bare = pod.clone();
    bare.as_object_mut().unwrap().remove("securityContext");
    bare["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("securityContext");
    let refused = run(
        "kubectl",
        &["create", "--dry-run=server", "-f", "-"],
        Some(&pod_from(&bare)),
    );
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("violates PodSecurity"),
        "the namespace does enforce the restricted standard"
    );
    let manifest = helm(&["get", "manifest", &release.name, "-n", &ns]).unwrap();
    let rendered = yaml_documents(&manifest)
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .unwrap();
    let mut copy = rendered.clone();
    copy["metadata"]["name"] = json!("psa-check");
    let dry_run = run(
        "kubectl",
        &["create", "--dry-run=server", "-f", "-"],
        Some(&copy.to_string()),
    );
    let warnings = String::from_utf8_lossy(&dry_run.stderr);
    assert!(dry_run.status.success(), "{warnings}");
    assert!(!warnings.contains("PodSecurity"), "{warnings}");
    let template = &mut copy["spec"]["template"]["spec"];
    template.as_object_mut().unwrap().remove("securityContext");
    template["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("securityContext");
    let dry_run = run(
        "kubectl",
        &["create", "--dry-run=server", "-f", "-"],
        Some(&copy.to_string()),
    );
    assert!(
        String::from_utf8_lossy(&dry_run.stderr).contains("would violate PodSecurity"),
        "a Deployment without the security contexts draws a warning"
    );

    // Upgrade: a changed value reaches the Deployment.
    release.helm(
        "upgrade",
        &["--skip-crds", "--reuse-values", "--set", "logFormat=json"],
    );
    assert!(container_args(&release.deployment()).contains(&"--log-format=json".into()));
    let status: Value =
        serde_json::from_str(&helm(&["status", &release.name, "-n", &ns, "-o", "json"]).unwrap()).unwrap();
    assert_eq!(status["version"], 2);
    assert_eq!(status["info"]["status"], "deployed");

    // Uninstall: every object of the release goes, cluster-scoped ones included.
    helm(&["uninstall", &release.name, "-n", &ns]).unwrap();
    let lease = format!("{name}-leader-election");
    let gone: [(&str, &str, Option<&str>); 9] = [
        ("deployment", &name, Some(&ns)),
        ("serviceaccount", &name, Some(&ns)),
        ("service", &name, Some(&ns)),
        ("role", &lease, Some(&ns)),
        ("rolebinding", &lease, Some(&ns)),
        ("clusterrole", &name, None),
        ("clusterrole", &format!("{name}-edit"), None),
        ("clusterrole", &format!("{name}-view"), None),
        ("clusterrolebinding", &name, None),
    ];
    for (kind, object, namespace) in gone {
        eventually(Duration::from_secs(30), || async {
            !exists(kind, object, namespace)
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn chart_installs_with_its_crds_where_they_exist_and_uninstall_keeps_them() {
    let generated =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/toma.dev.yaml")).unwrap();
    let packaged = std::fs::read_to_string(chart().join("crds/toma.dev.yaml")).unwrap();
    assert_eq!(
        packaged, generated,
        "the chart's CRDs are stale: run hack/generate.sh"
    );

    let release = Release::prepare("helm-crds", "e2e-helm-crds", &[]).await;
    // No --skip-crds: helm finds the CRDs present and leaves them as they are.
    release.helm("install", &[]);
    assert!(exists(
        "deployment",
        &release.fullname(),
        Some(&release.namespace)
    ));
    let manifest = helm(&["get", "manifest", &release.name, "-n", &release.namespace]).unwrap();
    assert!(
        !manifest.contains("kind: CustomResourceDefinition"),
        "CRDs are not part of the release"
    );

    helm(&["uninstall", &release.name, "-n", &release.namespace]).unwrap();
    for crd in [
        "turncredentials.toma.dev",
        "turnkeys.toma.dev",
        "clusterturnkeys.toma.dev",
    ] {
        let crd = get_json(&["crd", crd]);
        assert!(
            crd["metadata"]["deletionTimestamp"].is_null(),
            "helm kept {}",
            crd["metadata"]["name"]
        );
        assert!(
            crd["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn chart_rbac_is_enough_for_the_whole_happy_path_and_no_more() {
    let app = "e2e-helm-rbac-app";
    let release = Release::prepare("helm-rbac", "e2e-helm-rbac", &[app]).await;
    let ns = release.namespace.clone();
    let name = release.fullname();
    release.helm("install", &["--skip-crds"]);

    let lease = format!("leases.coordination.k8s.io/{name}");
    let table = [
        can("list", "turncredentials.toma.dev", None),
        can("watch", "turncredentials.toma.dev", None),
        can("patch", "turncredentials.toma.dev", Some(app)),
        can("patch", "turncredentials.toma.dev", Some(app)).sub("status"),
        can("update", "turncredentials.toma.dev", Some(app)).sub("finalizers"),
        can("get", "turnkeys.toma.dev", Some(app)),
        can("get", "clusterturnkeys.toma.dev", None),
        can("list", "turnkeys.toma.dev", None),
        can("watch", "turnkeys.toma.dev", None),
        can("list", "clusterturnkeys.toma.dev", None),
        can("watch", "clusterturnkeys.toma.dev", None),
        can("get", "namespaces", None),
        can("list", "namespaces", None),
        can("watch", "namespaces", None),
        can("get", "secrets", Some(&ns)),
        can("list", "secrets", None),
        can("watch", "secrets", None),
        can("create", "secrets", Some(app)),
        can("patch", "secrets", Some(app)),
        can("create", "events.events.k8s.io", Some(app)),
        can("patch", "events.events.k8s.io", Some(app)),
        can("get", "deployments.apps", Some(app)),
        can("get", "statefulsets.apps", Some(app)),
        can("get", "daemonsets.apps", Some(app)),
        can("patch", "deployments.apps", Some(app)),
        can("patch", "statefulsets.apps", Some(app)),
        can("patch", "daemonsets.apps", Some(app)),
        can("create", "leases.coordination.k8s.io", Some(&ns)),
        can("get", &lease, Some(&ns)),
        can("patch", &lease, Some(&ns)),
        cannot("delete", "secrets", Some(app)),
        cannot("update", "secrets", Some(app)),
        cannot("get", "pods", Some(app)),
        cannot("list", "configmaps", Some(app)),
        cannot("create", "turncredentials.toma.dev", Some(app)),
        cannot("update", "turncredentials.toma.dev", Some(app)),
        cannot("delete", "turncredentials.toma.dev", Some(app)),
        cannot("patch", "turnkeys.toma.dev", Some(app)),
        cannot("create", "clusterturnkeys.toma.dev", None),
        cannot("patch", "namespaces", None),
        cannot("create", "events", Some(app)),
        cannot("list", "deployments.apps", Some(app)),
        cannot("update", "deployments.apps", Some(app)),
        cannot("delete", "deployments.apps", Some(app)),
        cannot("update", "leases.coordination.k8s.io", Some(&ns)),
        cannot("patch", "leases.coordination.k8s.io/other", Some(&ns)),
        cannot("create", "leases.coordination.k8s.io", Some(app)),
        cannot("create", "serviceaccounts/token", Some(&ns)),
        cannot("create", "clusterrolebindings.rbac.authorization.k8s.io", None),
        cannot("escalate", "clusterroles.rbac.authorization.k8s.io", None),
        cannot("impersonate", "serviceaccounts", Some(&ns)),
    ];
    assert_can_i(&release.service_account(), &table);

    let fake = start_fake_cloudflare(fake_cloudflare::Config::default()).await;
    // The token Secret lives in toma's namespace, as in the documented install.
    apply_cloudflare_key(&ns, TOKEN, &fake.base_url());
    let _key = ClusterTurnKeyGuard(ns.clone());

    // toma runs with the chart's own arguments and environment. It watches the app namespace
    // only (the one extra flag), so that it leaves alone the TurnCredentials of the tests
    // running beside this one; the ClusterRole still authorizes every call, and the can-i
    // table above covers the cluster-wide list and watch.
    let operator = Operator::for_release(&release, "helm-rbac-0", &["--namespace", app]).await;
    let lease = get_json(&["lease", &name, "-n", &ns]);
    assert_eq!(lease["spec"]["holderIdentity"], "helm-rbac-0");

    happy_path(app, &format!("{{kind: ClusterTurnKey, name: {ns}}}"), &fake).await;
    let log = operator.log().to_lowercase();
    assert!(!log.contains("forbidden"), "toma was refused something:\n{log}");
}

/// Deletes the test's ClusterTurnKey when dropped.
struct ClusterTurnKeyGuard(String);

impl Drop for ClusterTurnKeyGuard {
    fn drop(&mut self) {
        let _ = kubectl(
            &[
                "delete",
                "clusterturnkey",
                &self.0,
                "--ignore-not-found",
                "--wait=false",
            ],
            None,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn namespaced_chart_confines_toma_to_the_namespace_it_watches() {
    let app = "e2e-helm-nsd-app";
    let other = "e2e-helm-nsd-other";
    let release = Release::prepare("helm-nsd", "e2e-helm-nsd", &[app, other]).await;
    let ns = release.namespace.clone();
    let name = release.fullname();
    release.helm(
        "install",
        &[
            "--skip-crds",
            "--set",
            &format!("namespaced=true,watchNamespace={app}"),
        ],
    );
    assert!(!exists("clusterrole", &name, None) && !exists("clusterrolebinding", &name, None));
    assert!(exists("role", &name, Some(app)) && exists("rolebinding", &name, Some(app)));
    assert!(container_args(&release.deployment()).contains(&format!("--namespace={app}")));

    let lease = format!("leases.coordination.k8s.io/{name}");
    let table = [
        can("list", "turncredentials.toma.dev", Some(app)),
        can("watch", "turncredentials.toma.dev", Some(app)),
        can("patch", "turncredentials.toma.dev", Some(app)).sub("status"),
        can("get", "turnkeys.toma.dev", Some(app)),
        can("get", "secrets", Some(app)),
        can("watch", "secrets", Some(app)),
        can("create", "secrets", Some(app)),
        can("patch", "secrets", Some(app)),
        can("create", "events.events.k8s.io", Some(app)),
        can("get", "deployments.apps", Some(app)),
        can("patch", "deployments.apps", Some(app)),
        can("create", "leases.coordination.k8s.io", Some(&ns)),
        can("patch", &lease, Some(&ns)),
        cannot("list", "turncredentials.toma.dev", None),
        cannot("list", "turncredentials.toma.dev", Some(other)),
        cannot("get", "turnkeys.toma.dev", Some(other)),
        cannot("get", "clusterturnkeys.toma.dev", None),
        cannot("get", "secrets", Some(other)),
        cannot("patch", "secrets", Some(other)),
        cannot("list", "secrets", None),
        cannot("get", "secrets", Some(&ns)),
        cannot("get", "secrets", Some("kube-system")),
        cannot("create", "events.events.k8s.io", Some(other)),
        cannot("get", "deployments.apps", Some(other)),
        cannot("patch", "deployments.apps", Some(other)),
        cannot("create", "leases.coordination.k8s.io", Some(app)),
        cannot("delete", "secrets", Some(app)),
        cannot("get", "pods", Some(app)),
    ];
    assert_can_i(&release.service_account(), &table);

    let fake = start_fake_cloudflare(fake_cloudflare::Config::default()).await;
    apply_cloudflare_turn_key(app, TOKEN, &fake.base_url());
    // Exactly the chart's command line: in namespaced mode it already names the namespace.
    let _operator = Operator::for_release(&release, "helm-nsd-0", &[]).await;
    happy_path(app, "{kind: TurnKey, name: cloudflare}", &fake).await;

    // A ClusterTurnKey is out of reach in namespaced mode, and the TurnCredential says so.
    apply_credential(app, "cluster-key", "{kind: ClusterTurnKey, name: anything}", "");
    let credentials: Api<TurnCredential> = Api::namespaced(client().await, app);
    let tc = wait_until(
        &credentials,
        "cluster-key",
        "Ready False",
        Duration::from_secs(30),
        |tc| ready(tc).is_some_and(|(status, _)| status == "False"),
    )
    .await;
    let status = tc.status.unwrap();
    let message = &status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .message;
    assert!(
        message.contains("ClusterTurnKey anything") && message.to_lowercase().contains("forbidden"),
        "{message}"
    );
    assert_eq!(fake.mints().len(), 2, "nothing was minted for it");
}
