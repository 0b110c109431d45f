//! The node: containerd and runc, the kubelet, the pause and busybox images, the pod network.
//! See `namespace` for where they run and `files` for how they are configured.

mod cgroups;
pub mod files;
pub mod gateway;
pub mod namespace;
mod stop;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{BUSYBOX_IMAGE, PAUSE_IMAGE};
use crate::control_plane::ControlPlane;
use crate::kubeconfig::{self, Credential};
use crate::layout::{self, EnvFile, Layout};
use crate::process::{self, launch};
use crate::{Error, Result, Settings, wait};

pub const COMPONENTS: [&str; 5] = ["pod-gateway", "pod-relay", "node-holder", "containerd", "kubelet"];

const NODE_BINARIES: [&str; 6] = [
    "kubelet",
    "kube-scheduler",
    "containerd",
    "containerd-shim-runc-v2",
    "ctr",
    "runc",
];

/// Binds the group every node's certificate carries to the built-in `system:node` role. The
/// apiserver runs RBAC only (no Node authorizer), as kubeadm clusters did before 1.8.
const NODE_RBAC: &str = "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: toma-local-nodes
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:node
subjects:
  - apiGroup: rbac.authorization.k8s.io
    kind: Group
    name: system:nodes
";

pub struct Node<'a> {
    pub settings: &'a Settings,
    pub layout: &'a Layout,
    pub env: &'a EnvFile,
}

/// A short tag derived from the state dir, so that two clusters on one machine get distinct
/// cgroups and bridges (FNV-1a: stable, unlike std's hasher).
pub fn tag(layout: &Layout) -> String {
    let hash = layout
        .root()
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ *b as u64).wrapping_mul(0x100000001b3)
        });
    format!("{:08x}", hash as u32)
}

impl Node<'_> {
    fn bin(&self, name: &str) -> PathBuf {
        self.settings.node_bin().join(name)
    }

    /// Says what is missing before anything starts.
    pub fn check(&self) -> Result<()> {
        for name in NODE_BINARIES {
            if !self.bin(name).is_file() {
                return Err(Error::Missing(format!(
                    "the node's {name} is missing from {}: run hack/build-node.sh (or start the control plane alone with TOMA_NODE=0)",
                    self.settings.node_bin().display()
                )));
            }
        }
        for image in ["pause.tar", "busybox.tar"] {
            if !self.settings.node_image(image).is_file() {
                return Err(Error::Missing(format!(
                    "the node's image {} is missing: run hack/build-node.sh",
                    self.settings.node_image(image).display()
                )));
            }
        }
        for (tool, package) in [
            ("/usr/lib/cni/bridge", "containernetworking-plugins"),
            ("/usr/lib/cni/host-local", "containernetworking-plugins"),
            ("/usr/lib/cni/loopback", "containernetworking-plugins"),
            ("/usr/bin/nsenter", "util-linux"),
            ("/usr/bin/unshare", "util-linux"),
            ("/usr/bin/ip", "iproute2"),
            ("/usr/sbin/nft", "nftables"),
        ] {
            if !Path::new(tool).exists() {
                return Err(Error::Missing(format!(
                    "{tool} is missing: install Debian's {package} (hack/build-node.sh does)"
                )));
            }
        }
        // SAFETY: a plain getter.
        if unsafe { libc::geteuid() } != 0 {
            return Err(Error::Missing("the local node needs root (mount namespaces, cgroups); start the control plane alone with TOMA_NODE=0".into()));
        }
        self.check_gateway()?;
        cgroups::check_host()
    }

    fn get(&self, key: &str) -> String {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("{key} is written to cluster.env before the node starts"))
            .to_string()
    }

    /// Writes the node's files and makes its cgroups.
    pub fn prepare(&self, control_plane: &ControlPlane) -> Result<()> {
        let dirs: Vec<PathBuf> = [
            "var-log",
            "var-lib/upper",
            "var-lib/work",
            "sysctl",
            "cni",
            "ipam",
            "pod-logs",
            "kubelet",
            "containerd/opt",
            "runc",
            "volume-plugins",
            "registries/_default",
        ]
        .iter()
        .map(|d| self.layout.node(d))
        .collect();
        layout::create_dirs(&dirs)?;
        for (setting, value) in files::SYSCTLS {
            layout::write(
                &self.layout.node(&format!("sysctl/{}", setting.replace('/', "."))),
                &format!("{value}\n"),
            )?;
        }
        layout::write(&self.layout.node("resolv.conf"), "nameserver 127.0.0.1\n")?;
        layout::write(
            &self.layout.node("registries/_default/hosts.toml"),
            files::REGISTRY_HOSTS,
        )?;
        layout::write(
            &self.layout.node("containerd.toml"),
            &files::containerd_config(self.layout, &self.settings.node_bin(), PAUSE_IMAGE),
        )?;
        layout::write(
            &self.layout.node("cni/10-toma.conflist"),
            &files::cni_conflist(&self.get("BRIDGE"), &self.layout.node("ipam")),
        )?;
        let ports = files::Ports {
            kubelet: self.env.port("KUBELET_PORT").unwrap_or_default(),
            kubelet_healthz: self.env.port("KUBELET_HEALTHZ_PORT").unwrap_or_default(),
        };
        layout::write(
            &self.layout.node("kubelet.yaml"),
            &files::kubelet_config(
                self.layout,
                &ports,
                &self.get("CGROUP_ROOT"),
                &self.settings.sync_frequency,
            ),
        )?;
        let api_port = self.env.port("API_PORT").unwrap_or_default();
        kubeconfig::write(
            self.layout,
            &self.layout.root().join("kubelet.kubeconfig"),
            api_port,
            "system:node:127.0.0.1",
            Credential::Certificate {
                cert: &self.layout.pki("kubelet.crt"),
                key: &self.layout.pki("kubelet.key"),
            },
        )?;
        layout::write(&self.layout.node("rbac.yaml"), NODE_RBAC)?;
        control_plane.kubectl(&[
            "apply",
            "--server-side",
            "-f",
            &self.layout.node("rbac.yaml").display().to_string(),
        ])?;
        cgroups::create(&self.get("CGROUP_ROOT"))
    }

    pub fn start_holder(&self) -> Result<u32> {
        let (program, args) = namespace::holder_command(self.layout);
        let pid = launch(self.layout, "node-holder", &program, args, &[])?;
        wait::until_ready(
            self.layout,
            "node-holder",
            pid,
            Duration::from_secs(10),
            "mounts ready",
            || namespace::holder_ready(self.layout),
        )?;
        Ok(pid)
    }

    fn holder(&self) -> Result<u32> {
        process::recorded_pid(self.layout, "node-holder")
            .filter(|&pid| process::is_ours(self.layout, pid))
            .ok_or_else(|| Error::NotUp(self.layout.root().to_path_buf()))
    }

    /// The shims are found on PATH, so the node's bin directory comes first.
    fn path_env(&self) -> Vec<(&'static str, String)> {
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
        vec![("PATH", format!("{}:{path}", self.settings.node_bin().display()))]
    }

    pub fn start_containerd(&self) -> Result<u32> {
        let holder = self.holder()?;
        let config = self.layout.node("containerd.toml").display().to_string();
        let (program, args) =
            namespace::enter(holder, &self.bin("containerd"), vec!["--config".into(), config]);
        let pid = launch(self.layout, "containerd", &program, args, &self.path_env())?;
        wait::until_ready(
            self.layout,
            "containerd",
            pid,
            Duration::from_secs(60),
            "serving",
            || self.ctr(&["version"]).is_ok(),
        )?;
        Ok(pid)
    }

    /// ctr inside the node's mount namespace, where containerd's /run is.
    fn ctr(&self, args: &[&str]) -> Result<String> {
        let holder = self.holder()?.to_string();
        let ctr = self.bin("ctr").display().to_string();
        let socket = self.layout.node("containerd.sock").display().to_string();
        let mut all = vec![
            "-t",
            &holder,
            "-m",
            "--",
            &ctr,
            "--address",
            &socket,
            "--namespace",
            "k8s.io",
        ];
        all.extend_from_slice(args);
        process::run(Path::new("nsenter"), &all)
    }

    /// Imports an image archive (docker-save or OCI) into the node's containerd, where the
    /// kubelet finds it. With `reference`, the archive's image is also tagged by that name.
    pub fn import_image(&self, archive: &Path, reference: Option<&str>) -> Result<()> {
        let archive = std::fs::canonicalize(archive).map_err(Error::io("reading image archive", archive))?;
        let archive = archive.display().to_string();
        match reference {
            None => self.ctr(&["images", "import", &archive])?,
            Some(reference) => self.ctr(&["images", "import", "--index-name", reference, &archive])?,
        };
        Ok(())
    }

    pub fn start_kubelet(&self) -> Result<u32> {
        let holder = self.holder()?;
        let args = vec![
            format!("--config={}", self.layout.node("kubelet.yaml").display()),
            format!(
                "--kubeconfig={}",
                self.layout.root().join("kubelet.kubeconfig").display()
            ),
            format!("--root-dir={}", self.layout.node("kubelet").display()),
            format!("--cert-dir={}", self.layout.node("kubelet/pki").display()),
            format!("--hostname-override={}", files::NODE_NAME),
            "--v=1".into(),
        ];
        let (program, args) = namespace::enter(holder, &self.bin("kubelet"), args);
        let pid = launch(self.layout, "kubelet", &program, args, &self.path_env())?;
        let url = format!("http://127.0.0.1:{}/healthz", self.get("KUBELET_HEALTHZ_PORT"));
        wait::until_healthy(self.layout, "kubelet", pid, &url)?;
        Ok(pid)
    }

    /// When the kubelet last posted the node's Ready condition, if it ever did.
    pub fn heartbeat(&self, control_plane: &ControlPlane) -> Option<String> {
        let query = r#"-o=jsonpath={.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}"#;
        control_plane
            .kubectl(&["get", "node", files::NODE_NAME, query])
            .ok()
            .filter(|t| !t.is_empty())
    }

    /// Ready, with the not-ready taint lifted by the node lifecycle controller, so pods can land;
    /// and, after a restart, reported by the new kubelet (a heartbeat other than `previous`).
    pub fn wait_ready(&self, control_plane: &ControlPlane, pid: u32, previous: Option<&str>) -> Result<()> {
        let query = r#"-o=jsonpath={.status.conditions[?(@.type=="Ready")].status} {.spec.taints[*].key}"#;
        wait::until_ready(
            self.layout,
            "kubelet",
            pid,
            Duration::from_secs(120),
            "node Ready",
            || {
                control_plane
                    .kubectl(&["get", "node", files::NODE_NAME, query])
                    .is_ok_and(|out| out.trim() == "True")
                    && (previous.is_none() || self.heartbeat(control_plane).as_deref() != previous)
            },
        )
    }

    pub fn import_node_images(&self) -> Result<()> {
        self.import_image(&self.settings.node_image("pause.tar"), None)?;
        self.import_image(&self.settings.node_image("busybox.tar"), None)?;
        let listed = self.ctr(&["images", "list", "--quiet"])?;
        for image in [PAUSE_IMAGE, BUSYBOX_IMAGE] {
            if !listed
                .lines()
                .any(|l| l == image || l == format!("docker.io/{image}"))
            {
                return Err(Error::Missing(format!(
                    "{image} is not in containerd after importing it"
                )));
            }
        }
        Ok(())
    }
}
