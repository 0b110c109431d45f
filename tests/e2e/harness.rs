//! Tests run on a multi-threaded runtime: kubectl calls block a thread while the in-process
//! fake Cloudflare must keep answering.
//!
//! What every end-to-end test needs: a namespace of its own on the real control plane, the
//! fake Cloudflare in-process, the real `toma` binary watching that namespace, and kubectl.

use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fake_cloudflare::FakeCloudflare;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::PostParams;
use kube::{Api, Client};
use toma::api::TurnCredential;

pub const KEY_ID: &str = "0123456789abcdef0123456789abcdef";
pub const TOKEN: &str = "e2e-api-token-0123456789";

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
    pub async fn is_ready(&self) -> bool {
        let url = format!("http://{}/readyz", self.http);
        reqwest::get(&url).await.is_ok_and(|r| r.status().is_success())
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

fn kubeconfig() -> String {
    std::env::var("KUBECONFIG").expect("KUBECONFIG must point at the test control plane: run `make test`")
}

/// Runs kubectl with the test kubeconfig, feeding `stdin` if given. Ok(stdout) or Err(stderr).
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut child = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl is on PATH (hack/cluster.sh env)");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

pub fn apply(manifest: &str) {
    if let Err(error) = kubectl(&["apply", "-f", "-"], Some(manifest)) {
        panic!("kubectl apply failed: {error}\n{manifest}");
    }
}

/// Deletes a namespace without waiting. Finalizers on its TurnCredentials are dropped first:
/// with no toma left to honour them they would keep the namespace terminating forever.
fn delete_namespace(namespace: &str) {
    if let Ok(names) = kubectl(&["get", "turncredentials", "-n", namespace, "-o", "name"], None) {
        for name in names.lines() {
            let clear = r#"{"metadata":{"finalizers":null}}"#;
            let _ = kubectl(
                &["patch", name, "-n", namespace, "--type=merge", "-p", clear],
                None,
            );
        }
    }
    let _ = kubectl(&["delete", "namespace", namespace, "--wait=false"], None);
}

/// A ClusterTurnKey named `namespace` for the fake Cloudflare at `base_url`, with its token in a
/// Secret `cloudflare-turn` in `namespace`.
pub fn apply_cloudflare_key(namespace: &str, token: &str, base_url: &str) {
    apply(&format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: cloudflare-turn, namespace: {namespace}}}
stringData: {{api-token: "{token}"}}
---
apiVersion: toma.dev/v1alpha1
kind: ClusterTurnKey
metadata: {{name: {namespace}}}
spec:
  cloudflare:
    keyId: {KEY_ID}
    apiTokenSecretRef: {{name: cloudflare-turn, key: api-token, namespace: {namespace}}}
    baseUrl: {base_url}
"#
    ));
}

/// A credential renewed about 10 s after each mint (valid 60 s, renewed 50 s before expiry,
/// less up to 2.5 s of jitter).
pub const SHORT_LIVED: &str = "  ttlSeconds: 60\n  renewBeforeSeconds: 50";

fn free_port() -> u16 {
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
        toma::install_crypto_provider();
        // A random suffix keeps concurrent runs on one control plane apart.
        let namespace = format!("e2e-{test}-{:04x}", rand::random::<u16>()).replace('_', "-");
        let client = Client::try_default()
            .await
            .expect("a client for the test control plane");
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

        let fake = FakeCloudflare::start(fake_cloudflare::Config::default())
            .await
            .unwrap();
        fake.add_key(KEY_ID, TOKEN);
        Env {
            client,
            namespace,
            fake,
            toma: None,
        }
    }

    /// Starts toma watching this test's namespace, and waits until it is ready.
    pub async fn start_toma(&mut self) {
        let toma = self.spawn_toma(&[]);
        toma.wait_ready().await;
        self.toma = Some(toma);
    }

    /// Starts another toma on this namespace with `extra` flags, without waiting.
    pub fn spawn_toma(&self, extra: &[&str]) -> Toma {
        let http = format!("127.0.0.1:{}", free_port());
        // Each test's toma logs to <target tmp>/e2e-logs/<namespace>.log, appended across restarts.
        let logs = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-logs");
        std::fs::create_dir_all(&logs).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(format!("{}.log", self.namespace)))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_toma"))
            .args(["run", "--namespace", &self.namespace, "--http-addr", &http])
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
        Toma { child, http }
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
        let ns = &self.namespace;
        apply(&format!(
            r#"
apiVersion: toma.dev/v1alpha1
kind: TurnCredential
metadata: {{name: {name}, namespace: {ns}}}
spec:
  keyRef: {{kind: ClusterTurnKey, name: {ns}}}
{extra_spec}
"#
        ));
    }

    pub fn credentials(&self) -> Api<TurnCredential> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Waits until the TurnCredential's Ready condition has `reason`, and returns it.
    pub async fn wait_for_reason(&self, name: &str, reason: &str) -> TurnCredential {
        let api = self.credentials();
        let mut last = None;
        for _ in 0..120 {
            let tc = api.get(name).await.unwrap();
            if ready(&tc).is_some_and(|(_, r)| r == reason) {
                return tc;
            }
            last = Some(tc);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!(
            "{name} never reached reason {reason}; last status: {:?}",
            last.and_then(|tc| tc.status)
        );
    }

    /// toma's /metrics text.
    pub async fn metrics(&self) -> String {
        let http = &self.toma.as_ref().expect("toma runs").http;
        reqwest::get(format!("http://{http}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// The Ready condition's (status, reason).
pub fn ready(tc: &TurnCredential) -> Option<(String, String)> {
    let condition = tc
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")?;
    Some((condition.status.clone(), condition.reason.clone()))
}

pub fn text(secret: &Secret, key: &str) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

/// Polls `check` every 250 ms until it holds, panicking after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

impl Toma {
    /// The process's resident memory in KiB (VmRSS) and its peak (VmHWM). Used by the soak.
    #[allow(dead_code)]
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
        let api = self.credentials();
        let now = api.get(name).await.unwrap().status.map_or(0, |s| s.rotations);
        eventually(limit, || async {
            api.get(name)
                .await
                .unwrap()
                .status
                .is_some_and(|s| s.rotations >= now + more)
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
