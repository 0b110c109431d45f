//! etcd, kube-apiserver and kube-controller-manager, all on 127.0.0.1, and kube-scheduler when
//! the node runs (it comes from the node's build and only places pods on it).
//!
//! Choices, and where they deviate from the envtest defaults:
//! - Ports are picked free at `up`, never the well-known 2379/2380/6443/10257/10259, so a second
//!   cluster (another TOMA_CLUSTER_DIR) does not collide with this one.
//! - The ServiceAccount admission plugin stays enabled and the controller manager creates the
//!   `default` ServiceAccount of every namespace, as on a real cluster; `up` waits for it.
//! - The ServiceAccount issuer is https://kubernetes.default.svc.cluster.local (the kubeadm
//!   default), so tokens do not depend on a random port.
//! - --endpoint-reconciler-type=none: with --advertise-address=127.0.0.1 the lease reconciler
//!   refuses to start ("may not be in the loopback range"). The `kubernetes` Service has no
//!   endpoints; pods that talk to the apiserver run on the host network and are told its
//!   loopback address (see the Helm values file).
//! - The controller manager runs what a workload needs on one node: garbage collection, namespace
//!   deletion, ServiceAccounts and their root CA ConfigMap, Deployments, ReplicaSets,
//!   StatefulSets, DaemonSets, EndpointSlices, ClusterRole aggregation and node lifecycle (without
//!   it the node's not-ready taint is never lifted and pods stay Pending).
//! - Garbage collector and CRDs (measured): a dependent of a custom resource whose CRD was created
//!   after the controller manager started is collected only after its next discovery resync,
//!   ~30 s later. TOMA_CLUSTER_CRDS installs CRDs before it starts.
//! - The controller manager and scheduler authenticate requests to their own ports with
//!   TokenReview/SubjectAccessReview, with --authentication-skip-lookup: the apiserver runs no
//!   aggregation front proxy, and the lookup would fail over and over.
//! - etcd: --unsafe-no-fsync (test data) and explicit peer flags, so nothing binds 2379/2380.

use std::path::PathBuf;
use std::time::Duration;

use crate::layout::{EnvFile, Layout};
use crate::process::{self, launch};
use crate::{Error, Result, Settings, wait};

pub const COMPONENTS: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

const CONTROLLERS: &str = "garbage-collector-controller,namespace-controller,serviceaccount-controller,\
serviceaccount-token-controller,root-ca-certificate-publisher-controller,deployment-controller,\
replicaset-controller,statefulset-controller,daemonset-controller,endpointslice-controller,\
clusterrole-aggregation-controller,node-lifecycle-controller";

pub struct ControlPlane<'a> {
    pub settings: &'a Settings,
    pub layout: &'a Layout,
    pub env: &'a EnvFile,
}

impl ControlPlane<'_> {
    fn bin(&self, name: &str) -> PathBuf {
        self.settings.control_plane_bin.join(name)
    }

    fn port(&self, key: &str) -> u16 {
        self.env
            .port(key)
            .unwrap_or_else(|| panic!("{key} is written to cluster.env before any start"))
    }

    pub fn check_binaries(&self) -> Result<()> {
        for name in ["etcd", "kube-apiserver", "kube-controller-manager", "kubectl"] {
            let path = self.bin(name);
            if !path.is_file() {
                return Err(Error::Missing(format!(
                    "{} is missing: run hack/build-control-plane.sh (or hack/prerequisites.sh)",
                    path.display()
                )));
            }
        }
        Ok(())
    }

    pub fn start_etcd(&self) -> Result<u32> {
        let (port, peer) = (self.port("ETCD_PORT"), self.port("ETCD_PEER_PORT"));
        let data = self.layout.root().join("etcd");
        let pid = launch(
            self.layout,
            "etcd",
            &self.bin("etcd"),
            [
                "--name=toma".to_string(),
                format!("--data-dir={}", data.display()),
                format!("--listen-client-urls=http://127.0.0.1:{port}"),
                format!("--advertise-client-urls=http://127.0.0.1:{port}"),
                format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
                format!("--initial-cluster=toma=http://127.0.0.1:{peer}"),
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
            &[],
        )?;
        let url = format!("http://127.0.0.1:{port}/health");
        wait::until_ready(self.layout, "etcd", pid, Duration::from_secs(30), "ready", || {
            wait::get(&url, None, None).is_some_and(|body| body.contains(r#""health":"true""#))
        })?;
        Ok(pid)
    }

    pub fn start_apiserver(&self) -> Result<u32> {
        let pki = |file: &str| self.layout.pki(file).display().to_string();
        let root = self.layout.root().display().to_string();
        let pid = launch(
            self.layout,
            "kube-apiserver",
            &self.bin("kube-apiserver"),
            [
                format!("--etcd-servers=http://127.0.0.1:{}", self.port("ETCD_PORT")),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                "--endpoint-reconciler-type=none".into(),
                format!("--secure-port={}", self.port("API_PORT")),
                format!("--cert-dir={root}/apiserver-certs"),
                format!("--tls-cert-file={}", pki("apiserver.crt")),
                format!("--tls-private-key-file={}", pki("apiserver.key")),
                format!("--client-ca-file={}", pki("ca.crt")),
                format!("--token-auth-file={}", pki("tokens.csv")),
                format!(
                    "--kubelet-client-certificate={}",
                    pki("apiserver-kubelet-client.crt")
                ),
                format!("--kubelet-client-key={}", pki("apiserver-kubelet-client.key")),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", pki("sa.pub")),
                format!("--service-account-signing-key-file={}", pki("sa.key")),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                "--authorization-mode=RBAC".into(),
                "--allow-privileged=true".into(),
                "--v=1".into(),
            ],
            &[],
        )?;
        wait::until_ready(
            self.layout,
            "kube-apiserver",
            pid,
            self.settings.ready_timeout,
            "ready",
            || self.apiserver_ready(),
        )?;
        Ok(pid)
    }

    pub fn apiserver_ready(&self) -> bool {
        let url = format!("https://127.0.0.1:{}/readyz", self.port("API_PORT"));
        wait::body_is(
            &url,
            Some(&self.layout.pki("ca.crt")),
            Some(&self.layout.pki("admin.header")),
            "ok",
        )
    }

    pub fn start_controller_manager(&self) -> Result<u32> {
        let kubeconfig = self.layout.root().join("kcm.kubeconfig").display().to_string();
        let pki = |file: &str| self.layout.pki(file).display().to_string();
        let port = self.port("KCM_PORT");
        let pid = launch(
            self.layout,
            "kube-controller-manager",
            &self.bin("kube-controller-manager"),
            [
                format!("--kubeconfig={kubeconfig}"),
                format!("--authentication-kubeconfig={kubeconfig}"),
                format!("--authorization-kubeconfig={kubeconfig}"),
                "--authentication-skip-lookup=true".into(),
                format!("--client-ca-file={}", pki("ca.crt")),
                format!("--controllers={CONTROLLERS}"),
                "--leader-elect=false".into(),
                "--use-service-account-credentials=false".into(),
                format!("--service-account-private-key-file={}", pki("sa.key")),
                format!("--root-ca-file={}", pki("ca.crt")),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={port}"),
                format!("--cert-dir={}/kcm-certs", self.layout.root().display()),
                "--v=1".into(),
            ],
            &[],
        )?;
        let url = format!("https://127.0.0.1:{port}/healthz");
        wait::until_healthy(self.layout, "kube-controller-manager", pid, &url)?;
        // Proves the controller manager reaches the apiserver and its controllers run.
        wait::until_ready(
            self.layout,
            "kube-controller-manager",
            pid,
            Duration::from_secs(60),
            "default ServiceAccount created",
            || {
                self.kubectl(&["-n", "default", "get", "serviceaccount", "default"])
                    .is_ok()
            },
        )?;
        Ok(pid)
    }

    pub fn start_scheduler(&self) -> Result<u32> {
        let kubeconfig = self
            .layout
            .root()
            .join("scheduler.kubeconfig")
            .display()
            .to_string();
        let port = self.port("SCHEDULER_PORT");
        let pid = launch(
            self.layout,
            "kube-scheduler",
            &self.settings.node_bin().join("kube-scheduler"),
            [
                format!("--kubeconfig={kubeconfig}"),
                format!("--authentication-kubeconfig={kubeconfig}"),
                format!("--authorization-kubeconfig={kubeconfig}"),
                "--authentication-skip-lookup=true".into(),
                format!("--client-ca-file={}", self.layout.pki("ca.crt").display()),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={port}"),
                "--v=1".into(),
            ],
            &[],
        )?;
        let url = format!("https://127.0.0.1:{port}/healthz");
        wait::until_healthy(self.layout, "kube-scheduler", pid, &url)?;
        Ok(pid)
    }

    /// kubectl with the admin kubeconfig; its output, or its stderr as the error.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let kubeconfig = self.layout.kubeconfig().display().to_string();
        let mut all = vec!["--kubeconfig", &kubeconfig, "--request-timeout=10s"];
        all.extend_from_slice(args);
        process::run(&self.bin("kubectl"), &all)
    }

    pub fn apply_crds(&self, path: &std::path::Path) -> Result<()> {
        eprintln!(
            "cluster: installing CRDs from {} before the controller manager starts",
            path.display()
        );
        let path = path.display().to_string();
        self.kubectl(&["apply", "--server-side", "-R", "-f", &path])?;
        self.kubectl(&[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=60s",
        ])?;
        Ok(())
    }
}
