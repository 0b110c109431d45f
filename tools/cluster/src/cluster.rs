//! The cluster as a whole: up, down, status, env, and the operations tests need.
//!
//! Every operation but `env` holds an exclusive lock on `<state dir>.lock`, so concurrent `up`,
//! `down` and friends on one state dir are serialised.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::control_plane::{self, ControlPlane};
use crate::kubeconfig::{self, Credential};
use crate::layout::{self, EnvFile, Layout};
use crate::node::{self, Node, files, gateway};
use crate::process::{self, Lock};
use crate::{Error, Result, Settings, pki};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Every recorded process alive and the apiserver ready.
    Up,
    /// A state dir exists but the cluster in it is not up.
    Stale,
    Absent,
}

pub struct Cluster {
    settings: Settings,
    layout: Layout,
}

/// The ports `up` picks, by their cluster.env keys.
pub const PORTS: [&str; 7] = [
    "ETCD_PORT",
    "ETCD_PEER_PORT",
    "API_PORT",
    "KCM_PORT",
    "SCHEDULER_PORT",
    "KUBELET_PORT",
    "KUBELET_HEALTHZ_PORT",
];

impl Cluster {
    pub fn new(settings: Settings) -> Cluster {
        let layout = Layout::new(&settings.state_dir);
        Cluster { settings, layout }
    }

    pub fn from_env() -> Result<Cluster> {
        Ok(Cluster::new(Settings::from_env()?))
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub(crate) fn lock(&self) -> Result<Lock> {
        Lock::acquire(&self.layout.lock_file())
    }

    pub(crate) fn env(&self) -> EnvFile {
        EnvFile::read(&self.layout.env_file()).unwrap_or_default()
    }

    fn components(env: &EnvFile) -> Vec<&'static str> {
        let mut all = control_plane::COMPONENTS.to_vec();
        if env.get("NODE") == Some("1") {
            all.extend(node::COMPONENTS);
        } else {
            all.retain(|c| *c != "kube-scheduler");
        }
        all
    }

    fn plane<'a>(&'a self, env: &'a EnvFile) -> ControlPlane<'a> {
        ControlPlane {
            settings: &self.settings,
            layout: &self.layout,
            env,
        }
    }

    pub(crate) fn node<'a>(&'a self, env: &'a EnvFile) -> Node<'a> {
        Node {
            settings: &self.settings,
            layout: &self.layout,
            env,
        }
    }

    pub fn status(&self) -> Status {
        if !self.layout.root().is_dir() {
            return Status::Absent;
        }
        let env = self.env();
        if env.port("API_PORT").is_none() {
            return Status::Stale;
        }
        let all_alive = Cluster::components(&env).iter().all(|c| {
            process::recorded_pid(&self.layout, c).is_some_and(|pid| process::is_ours(&self.layout, pid))
        });
        if all_alive && self.plane(&env).apiserver_ready() {
            Status::Up
        } else {
            Status::Stale
        }
    }

    /// Starts the cluster (with the node unless TOMA_NODE=0); a no-op when it is already up.
    pub fn up(&self) -> Result<()> {
        let _lock = self.lock()?;
        let started = Instant::now();
        match self.status() {
            Status::Up => {
                eprintln!(
                    "cluster: already up (state in {}); nothing to do",
                    self.layout.root().display()
                );
                eprint!("{}", self.summary());
                return Ok(());
            }
            Status::Stale => {
                eprintln!(
                    "cluster: found a stale state dir {}; cleaning it",
                    self.layout.root().display()
                );
                self.stop_all()?;
                self.remove_state()?;
            }
            Status::Absent => {}
        }
        let env = self.fresh_env()?;
        if self.settings.node {
            self.node(&env).check()?;
        }
        self.plane(&env).check_binaries()?;
        for tool in ["openssl", "curl"] {
            if process::run(Path::new("sh"), &["-c", &format!("command -v {tool}")]).is_err() {
                return Err(Error::Missing(format!(
                    "{tool} is missing: run hack/prerequisites.sh"
                )));
            }
        }
        let root = self.layout.root();
        layout::create_dirs(&[
            self.layout.logs(),
            root.join("etcd"),
            root.join("apiserver-certs"),
            root.join("kcm-certs"),
        ])?;
        if let Err(error) = self.start(env) {
            eprintln!(
                "cluster: up failed; stopping what was started (logs kept in {})",
                self.layout.logs().display()
            );
            if let Err(stop) = self.stop_all() {
                eprintln!("cluster: {stop}");
            }
            return Err(error);
        }
        eprintln!("cluster: up in {:.1}s", started.elapsed().as_secs_f64());
        eprint!("{}", self.summary());
        Ok(())
    }

    fn fresh_env(&self) -> Result<EnvFile> {
        let ports = process::free_ports(PORTS.len())?;
        let mut env = EnvFile::default();
        env.set("BIN", self.settings.control_plane_bin.display());
        env.set("STATE", self.layout.root().display());
        env.set("KUBECONFIG", self.layout.kubeconfig().display());
        env.set("SERVER", format!("https://127.0.0.1:{}", ports[2]));
        for (key, port) in PORTS.iter().zip(&ports) {
            env.set(key, port);
        }
        env.set("ADMIN_TOKEN_FILE", self.layout.pki("admin.token").display());
        env.set("NODE", if self.settings.node { "1" } else { "0" });
        if self.settings.node {
            let tag = node::tag(&self.layout);
            env.set("NODE_BIN", self.settings.node_bin().display());
            env.set("CGROUP_ROOT", format!("/toma-node-{tag}"));
            env.set("BRIDGE", format!("toma-{tag}"));
            env.set("GATEWAY_VETH", gateway::veth_name(&tag));
        }
        Ok(env)
    }

    fn record(&self, env: &mut EnvFile, key: &str, pid: u32) -> Result<()> {
        env.set(key, pid);
        env.write(&self.layout.env_file())
    }

    fn start(&self, mut env: EnvFile) -> Result<()> {
        fs::create_dir_all(self.layout.root()).map_err(Error::io("creating", self.layout.root()))?;
        env.write(&self.layout.env_file())?;
        pki::generate(&self.layout)?;
        let api_port = env.port("API_PORT").unwrap_or_default();
        let pid = self.plane(&env).start_etcd()?;
        self.record(&mut env, "ETCD_PID", pid)?;
        let pid = self.plane(&env).start_apiserver()?;
        self.record(&mut env, "APISERVER_PID", pid)?;
        for (stem, user, _) in pki::TOKEN_USERS {
            let file = if stem == "admin" {
                self.layout.kubeconfig()
            } else {
                self.layout.root().join(format!("{stem}.kubeconfig"))
            };
            kubeconfig::write(
                &self.layout,
                &file,
                api_port,
                user,
                Credential::Token(&pki::token(&self.layout, stem)?),
            )?;
        }
        layout::write(&self.layout.helm_values(), &files::helm_values())?;
        if let Some(crds) = &self.settings.crds {
            self.plane(&env).apply_crds(crds)?;
        }
        let pid = self.plane(&env).start_controller_manager()?;
        self.record(&mut env, "KCM_PID", pid)?;
        if !self.settings.node {
            return Ok(());
        }
        let node_started = Instant::now();
        let pid = self.plane(&env).start_scheduler()?;
        self.record(&mut env, "SCHEDULER_PID", pid)?;
        self.node(&env).prepare(&self.plane(&env))?;
        let gateway = self.node(&env).start_gateway()?;
        self.record(&mut env, "GATEWAY_PID", gateway)?;
        let pid = self.node(&env).start_relay(gateway)?;
        self.record(&mut env, "RELAY_PID", pid)?;
        let pid = self.node(&env).start_holder()?;
        self.record(&mut env, "HOLDER_PID", pid)?;
        let pid = self.node(&env).start_containerd()?;
        self.record(&mut env, "CONTAINERD_PID", pid)?;
        self.node(&env).import_node_images()?;
        let pid = self.node(&env).start_kubelet()?;
        self.record(&mut env, "KUBELET_PID", pid)?;
        self.node(&env).wait_ready(&self.plane(&env), pid, None)?;
        eprintln!(
            "cluster: node {} Ready {:.1}s after its start",
            files::NODE_NAME,
            node_started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    fn require_up(&self) -> Result<EnvFile> {
        if self.status() != Status::Up {
            return Err(Error::NotUp(self.layout.root().to_path_buf()));
        }
        Ok(self.env())
    }

    fn require_node(&self) -> Result<EnvFile> {
        let env = self.require_up()?;
        if env.get("NODE") != Some("1") {
            return Err(Error::Missing(format!(
                "the cluster in {} runs no node (it was started with TOMA_NODE=0)",
                self.layout.root().display()
            )));
        }
        Ok(env)
    }

    /// Stops the apiserver for `downtime`, then starts it again on the same port with the same
    /// state: for tests of how clients ride out an API outage.
    pub fn restart_apiserver(&self, downtime: Duration) -> Result<()> {
        let _lock = self.lock()?;
        let mut env = self.require_up()?;
        if let Some(pid) = process::recorded_pid(&self.layout, "kube-apiserver") {
            process::stop(&self.layout, "kube-apiserver", pid)?;
        }
        eprintln!("cluster: kube-apiserver stopped for {}s", downtime.as_secs_f64());
        std::thread::sleep(downtime);
        let pid = self.plane(&env).start_apiserver()?;
        self.record(&mut env, "APISERVER_PID", pid)?;
        eprintln!("cluster: kube-apiserver is back");
        Ok(())
    }

    /// Restarts the kubelet (pods keep running) and waits for the node to be Ready again.
    pub fn restart_kubelet(&self) -> Result<()> {
        let _lock = self.lock()?;
        let mut env = self.require_node()?;
        let previous = self.node(&env).heartbeat(&self.plane(&env));
        if let Some(pid) = process::recorded_pid(&self.layout, "kubelet") {
            process::stop(&self.layout, "kubelet", pid)?;
        }
        let pid = self.node(&env).start_kubelet()?;
        self.record(&mut env, "KUBELET_PID", pid)?;
        self.node(&env)
            .wait_ready(&self.plane(&env), pid, previous.as_deref())
    }

    /// Imports an image archive into the node, optionally under `reference`.
    pub fn import_image(&self, archive: &Path, reference: Option<&str>) -> Result<()> {
        let _lock = self.lock()?;
        let env = self.require_node()?;
        self.node(&env).import_image(archive, reference)
    }
}
