//! One test's world: a namespace of its own, the fake Cloudflare, and the real toma binary.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use fake_cloudflare::FakeCloudflare;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::PostParams;
use kube::{Api, Client};
use toma::api::TurnCredential;

use crate::objects::{apply_cloudflare_key, apply_credential, delete_namespace, force_rotation};
use crate::{client, eventually, kubeconfig, kubectl, start_fake_cloudflare, text, wait_for_reason};

/// One test's world. Dropping it stops toma and deletes the namespace and the ClusterTurnKey.
pub struct Env {
    pub client: Client,
    pub namespace: String,
    pub fake: FakeCloudflare,
    pub toma: Option<Toma>,
}

pub struct Toma {
    child: Child,
    pub http: String,
}

impl Toma {
    /// A toma process `child` serving /readyz and /metrics on `http`; killed on drop.
    pub fn new(child: Child, http: String) -> Toma {
        Toma { child, http }
    }

    pub async fn is_ready(&self) -> bool {
        let url = format!("http://{}/readyz", self.http);
        reqwest::get(&url).await.is_ok_and(|r| r.status().is_success())
    }

    /// This process's /metrics text.
    pub async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.http);
        reqwest::get(&url).await.unwrap().text().await.unwrap()
    }

    /// The value of the unlabelled metric `name` in this process's /metrics; panics if it is not
    /// exported, so that a renamed metric fails the test instead of reading as zero.
    pub async fn metric(&self, name: &str) -> f64 {
        metric(&self.metrics().await, name)
    }

    /// Whether this process leads: its `toma_leader` gauge is 1.
    pub async fn is_leading(&self) -> bool {
        let url = format!("http://{}/metrics", self.http);
        match reqwest::get(&url).await {
            Ok(response) => response
                .text()
                .await
                .is_ok_and(|text| text.lines().any(|l| l == "toma_leader 1")),
            Err(_) => false,
        }
    }

    pub async fn wait_ready(&self) {
        eventually(Duration::from_secs(30), || self.is_ready()).await;
    }

    /// Kills the process at once, as a crash or a lost node would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Toma {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.toma.take();
        delete_namespace(&self.namespace);
        let _ = kubectl(
            &[
                "delete",
                "clusterturnkey",
                &self.namespace,
                "--ignore-not-found",
                "--wait=false",
            ],
            None,
        );
    }
}

/// The directory cargo builds into (target/debug), found from the running test binary, which
/// cargo puts in its deps/ subdirectory.
pub fn target_dir() -> PathBuf {
    let test = std::env::current_exe().expect("the test binary has a path");
    let deps = test
        .parent()
        .expect("the test binary is in target/<profile>/deps");
    deps.parent().expect("deps/ is in target/<profile>").to_path_buf()
}

/// The `toma` binary cargo built beside the test (`cargo test` builds it for integration
/// tests of the toma package).
pub fn toma_binary() -> PathBuf {
    let binary = target_dir().join("toma");
    assert!(
        binary.exists(),
        "no toma binary at {}: run the tests with cargo test",
        binary.display()
    );
    binary
}

/// Where toma's log goes for the log name `name`, appended across restarts.
pub fn log_path(name: &str) -> PathBuf {
    let logs = target_dir().join("tmp/e2e-logs");
    std::fs::create_dir_all(&logs).unwrap();
    logs.join(format!("{name}.log"))
}

/// A credential renewed about 10 s after each mint (valid 60 s, renewed 50 s before expiry,
/// less up to 2.5 s of jitter).
pub const SHORT_LIVED: &str = "  ttlSeconds: 60\n  renewBeforeSeconds: 50";

/// The value of the unlabelled metric `name` in a /metrics text; panics if it is not there.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} is not exported"))
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Env {
    /// A fresh namespace named after the test, the fake Cloudflare with one key, and toma.
    pub async fn start(test: &str) -> Env {
        let mut env = Env::without_toma(test).await;
        env.start_toma().await;
        env
    }

    /// A fresh namespace named after the test and the fake Cloudflare with one key.
    pub async fn without_toma(test: &str) -> Env {
        // A random suffix keeps concurrent runs on one control plane apart.
        let namespace = format!("e2e-{test}-{:04x}", rand::random::<u16>()).replace('_', "-");
        let client = client().await;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        // A leftover from an earlier run goes first.
        if namespaces.get_opt(&namespace).await.unwrap().is_some() {
            delete_namespace(&namespace);
            eventually(Duration::from_secs(60), || async {
                namespaces.get_opt(&namespace).await.unwrap().is_none()
            })
            .await;
        }
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}})).unwrap();
        namespaces.create(&PostParams::default(), &ns).await.unwrap();

        let fake = start_fake_cloudflare(fake_cloudflare::Config::default()).await;
        Env {
            client,
            namespace,
            fake,
            toma: None,
        }
    }

    /// Starts toma watching this test's namespace, and waits until it is ready.
    pub async fn start_toma(&mut self) {
        self.start_toma_with(&[]).await;
    }

    /// Starts toma watching this test's namespace with `extra` flags, and waits until it is
    /// ready.
    pub async fn start_toma_with(&mut self, extra: &[&str]) {
        let toma = self.spawn_toma(extra);
        toma.wait_ready().await;
        self.toma = Some(toma);
    }

    /// Starts another toma on this namespace with `extra` flags, without waiting.
    pub fn spawn_toma(&self, extra: &[&str]) -> Toma {
        self.spawn_toma_watching(Some(&self.namespace), extra)
    }

    /// Starts a toma that watches the whole cluster, logging to this test's log, and waits until
    /// it is ready. Only for tests that run alone: it reconciles every test's TurnCredentials.
    pub async fn start_cluster_wide_toma(&self) -> Toma {
        let toma = self.spawn_toma_watching(None, &[]);
        toma.wait_ready().await;
        toma
    }

    fn spawn_toma_watching(&self, namespace: Option<&str>, extra: &[&str]) -> Toma {
        let http = format!("127.0.0.1:{}", free_port());
        // Each test's toma logs to <target tmp>/e2e-logs/<namespace>.log, appended across restarts.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.toma_log())
            .unwrap();
        let child = Command::new(toma_binary())
            .args(["run", "--http-addr", &http])
            .args(namespace.map(|ns| ["--namespace", ns]).into_iter().flatten())
            .args(extra)
            .env("KUBECONFIG", kubeconfig())
            .env(
                "RUST_LOG",
                std::env::var("TOMA_E2E_LOG").unwrap_or_else(|_| "info,toma=debug".into()),
            )
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("the toma binary runs");
        Toma::new(child, http)
    }

    /// The log of every toma this test started.
    pub fn toma_log(&self) -> PathBuf {
        log_path(&self.namespace)
    }

    pub fn stop_toma(&mut self) {
        self.toma.take();
    }

    /// A ClusterTurnKey named after the namespace, its token Secret in the namespace.
    pub fn apply_cloudflare_key(&self, token: &str) {
        apply_cloudflare_key(&self.namespace, token, &self.fake.base_url());
    }

    /// A TurnCredential `name` using this test's ClusterTurnKey, with extra spec lines.
    pub fn apply_credential(&self, name: &str, extra_spec: &str) {
        let key_ref = format!("{{kind: ClusterTurnKey, name: {}}}", self.namespace);
        self.apply_credential_with_key(name, &key_ref, extra_spec);
    }

    /// A TurnCredential `name` in this test's namespace with `keyRef: {key_ref}`.
    pub fn apply_credential_with_key(&self, name: &str, key_ref: &str, extra_spec: &str) {
        apply_credential(&self.namespace, name, key_ref, extra_spec);
    }

    /// Forces a rotation of the TurnCredential `name`: see [`force_rotation`].
    pub fn force_rotation(&self, name: &str, value: &str) {
        force_rotation(&self.namespace, name, value);
    }

    pub fn credentials(&self) -> Api<TurnCredential> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The reasons of the Events in this test's namespace.
    pub fn event_reasons(&self) -> Vec<String> {
        let jsonpath = "jsonpath={.items[*].reason}";
        kubectl(&["get", "events", "-n", &self.namespace, "-o", jsonpath], None)
            .unwrap()
            .split_whitespace()
            .map(String::from)
            .collect()
    }

    /// Waits until the TurnCredential's Ready condition has `reason`, and returns it.
    pub async fn wait_for_reason(&self, name: &str, reason: &str) -> TurnCredential {
        wait_for_reason(&self.credentials(), name, reason).await
    }

    /// toma's /metrics text.
    pub async fn metrics(&self) -> String {
        self.toma.as_ref().expect("toma runs").metrics().await
    }

    /// The value of toma's unlabelled metric `name`: see [`Toma::metric`].
    pub async fn metric(&self, name: &str) -> f64 {
        self.toma.as_ref().expect("toma runs").metric(name).await
    }
}

impl Toma {
    /// The process's resident memory in KiB (VmRSS) and its peak (VmHWM). Used by the soak.
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Toma {
    /// Sends SIGTERM, as Kubernetes does to stop a pod, and waits for the exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }
}

impl Env {
    /// Waits until the TurnCredential has been rotated `more` times beyond what its status
    /// says now.
    pub async fn wait_for_more_rotations(&self, name: &str, more: i64, limit: Duration) {
        let now = self
            .credentials()
            .get(name)
            .await
            .unwrap()
            .status
            .map_or(0, |s| s.rotations);
        self.wait_for_rotations(name, now + more, limit).await;
    }

    /// Waits until the TurnCredential's status counts at least `rotations` rotations.
    pub async fn wait_for_rotations(&self, name: &str, rotations: i64, limit: Duration) {
        let api = self.credentials();
        eventually(limit, || async {
            api.get(name)
                .await
                .unwrap()
                .status
                .is_some_and(|s| s.rotations >= rotations)
        })
        .await;
    }

    /// Asserts that the Secret holds an unexpired credential that the provider issued.
    pub async fn assert_secret_holds_a_live_issued_credential(&self, name: &str) {
        let secret = self.secrets().get(name).await.unwrap();
        let expires_at: jiff::Timestamp = text(&secret, "expiresAt").parse().unwrap();
        assert!(
            expires_at > jiff::Timestamp::now(),
            "the Secret holds an expired credential"
        );
        let username = text(&secret, "username");
        assert!(
            self.fake.mints().iter().any(|m| m.username == username),
            "the provider never issued {username}"
        );
    }
}
