//! Tests run on a multi-threaded runtime: kubectl calls block a thread while the in-process
//! fake Cloudflare must keep answering.
//!
//! What every end-to-end test needs: a namespace of its own on the real control plane, the
//! fake Cloudflare in-process, the real `toma` binary watching that namespace, and kubectl.

use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
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
    /// A toma process `child` serving /readyz and /metrics on `http`; killed on drop.
    pub fn new(child: Child, http: String) -> Toma {
        Toma { child, http }
    }

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

pub fn kubeconfig() -> String {
    std::env::var("KUBECONFIG").expect("KUBECONFIG must point at the test control plane: run `make test`")
}

/// Runs `program` (kubectl, helm) with the test kubeconfig, feeding `stdin` if given.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .env("KUBECONFIG", kubeconfig())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} is on PATH (hack/cluster.sh env): {e}"));
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

/// Ok(stdout) if `output` is a success, else Err(stderr).
pub fn stdout_or_stderr(output: Output) -> Result<String, String> {
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Runs kubectl with the test kubeconfig, feeding `stdin` if given. Ok(stdout) or Err(stderr).
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    stdout_or_stderr(run("kubectl", args, stdin))
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
    apply_token_and_key(
        namespace,
        token,
        &format!("kind: ClusterTurnKey\nmetadata: {{name: {namespace}}}"),
        &format!(", namespace: {namespace}"),
        base_url,
    );
}

/// A TurnKey `cloudflare` in `namespace` for the fake Cloudflare at `base_url`, with its token
/// in a Secret `cloudflare-turn` beside it.
pub fn apply_cloudflare_turn_key(namespace: &str, token: &str, base_url: &str) {
    apply_token_and_key(
        namespace,
        token,
        &format!("kind: TurnKey\nmetadata: {{name: cloudflare, namespace: {namespace}}}"),
        "",
        base_url,
    );
}

/// The Secret `cloudflare-turn` in `namespace` holding `token`, and the key described by
/// `kind_and_metadata` reading it (`secret_ref_extra` completes its apiTokenSecretRef).
fn apply_token_and_key(
    namespace: &str,
    token: &str,
    kind_and_metadata: &str,
    secret_ref_extra: &str,
    base_url: &str,
) {
    apply(&format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: cloudflare-turn, namespace: {namespace}}}
stringData: {{api-token: "{token}"}}
---
apiVersion: toma.dev/v1alpha1
{kind_and_metadata}
spec:
  cloudflare:
    keyId: {KEY_ID}
    apiTokenSecretRef: {{name: cloudflare-turn, key: api-token{secret_ref_extra}}}
    baseUrl: {base_url}
"#
    ));
}

/// A TurnCredential `name` in `namespace` with `keyRef: {key_ref}` and extra spec lines.
pub fn apply_credential(namespace: &str, name: &str, key_ref: &str, extra_spec: &str) {
    apply(&format!(
        r#"
apiVersion: toma.dev/v1alpha1
kind: TurnCredential
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  keyRef: {key_ref}
{extra_spec}
"#
    ));
}

/// Sets the annotation `toma.dev/rotate={value}` on the TurnCredential, which forces a rotation
/// whenever the value changes.
pub fn force_rotation(namespace: &str, name: &str, value: &str) {
    kubectl(
        &[
            "annotate",
            "tc",
            name,
            "-n",
            namespace,
            &format!("toma.dev/rotate={value}"),
            "--overwrite",
        ],
        None,
    )
    .unwrap_or_else(|e| panic!("annotating {namespace}/{name}: {e}"));
}

/// A client for the test control plane, as its admin.
pub async fn client() -> Client {
    toma::install_crypto_provider();
    Client::try_default()
        .await
        .expect("a client for the test control plane")
}

/// The fake Cloudflare with `config`, knowing the key KEY_ID with the token TOKEN.
pub async fn start_fake_cloudflare(config: fake_cloudflare::Config) -> FakeCloudflare {
    let fake = FakeCloudflare::start(config).await.unwrap();
    fake.add_key(KEY_ID, TOKEN);
    fake
}

/// Where toma's log goes for the log name `name`, appended across restarts.
pub fn log_path(name: &str) -> std::path::PathBuf {
    let logs = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-logs");
    std::fs::create_dir_all(&logs).unwrap();
    logs.join(format!("{name}.log"))
}

/// A credential renewed about 10 s after each mint (valid 60 s, renewed 50 s before expiry,
/// less up to 2.5 s of jitter).
pub const SHORT_LIVED: &str = "  ttlSeconds: 60\n  renewBeforeSeconds: 50";

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
        let http = format!("127.0.0.1:{}", free_port());
        // Each test's toma logs to <target tmp>/e2e-logs/<namespace>.log, appended across restarts.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.toma_log())
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
        Toma::new(child, http)
    }

    /// The log of every toma this test started.
    pub fn toma_log(&self) -> std::path::PathBuf {
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

    /// Waits until the TurnCredential's Ready condition has `reason`, and returns it.
    pub async fn wait_for_reason(&self, name: &str, reason: &str) -> TurnCredential {
        wait_for_reason(&self.credentials(), name, reason).await
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

/// Waits up to 60 s until the TurnCredential's Ready condition has `reason`, and returns it.
pub async fn wait_for_reason(api: &Api<TurnCredential>, name: &str, reason: &str) -> TurnCredential {
    let what = format!("reason {reason}");
    wait_until(api, name, &what, Duration::from_secs(60), |tc| {
        ready(tc).is_some_and(|(_, r)| r == reason)
    })
    .await
}

/// Polls the TurnCredential every 500 ms until `check` holds, and returns it; after `limit`,
/// panics naming `what` and showing the last status.
pub async fn wait_until(
    api: &Api<TurnCredential>,
    name: &str,
    what: &str,
    limit: Duration,
    check: impl Fn(&TurnCredential) -> bool,
) -> TurnCredential {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let tc = api.get(name).await.unwrap();
        if check(&tc) {
            return tc;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "{name} never reached {what} within {limit:?}; last status: {:?}",
                tc.status
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
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
