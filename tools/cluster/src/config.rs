//! Settings, from the environment variables `hack/cluster.sh` has always read plus the node's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Error, Result};

/// The versions `hack/build-control-plane.sh` and `hack/build-node.sh` build; they name the cache
/// directories. The scripts pass the directories they built into explicitly
/// (`TOMA_CONTROL_PLANE_BIN`, `TOMA_NODE_DIR`), so these only matter when the binary runs alone.
pub const CONTROL_PLANE_CACHE: &str = "control-plane-k8s-v1.37.2-etcd-v3.7.3-helm-v3.22.0";
pub const NODE_CACHE: &str = "node-k8s-v1.37.2-containerd-v2.4.2-runc-v1.5.2";
pub const PAUSE_IMAGE: &str = "localhost/pause:3.10.2";
pub const BUSYBOX_IMAGE: &str = "localhost/busybox:latest";

#[derive(Debug, Clone)]
pub struct Settings {
    /// State directory (TOMA_CLUSTER_DIR, default /tmp/toma-cluster).
    pub state_dir: PathBuf,
    /// Manifests applied once the apiserver is ready, before the controller manager starts, so
    /// that its garbage collector knows their kinds at once (TOMA_CLUSTER_CRDS).
    pub crds: Option<PathBuf>,
    /// How long to wait for the apiserver's /readyz (TOMA_CLUSTER_READY_TIMEOUT, seconds).
    pub ready_timeout: Duration,
    /// Whether `up` starts the node (TOMA_NODE, default 1; 0 starts the control plane alone).
    pub node: bool,
    /// The kubelet's syncFrequency (TOMA_NODE_SYNC_FREQUENCY, a Go duration, default the
    /// kubelet's own 1m). It bounds how late a mounted Secret's change reaches a pod.
    pub sync_frequency: String,
    /// etcd, kube-apiserver, kube-controller-manager, kubectl, helm (TOMA_CONTROL_PLANE_BIN).
    pub control_plane_bin: PathBuf,
    /// The node's build: bin/ and images/ (TOMA_NODE_DIR).
    pub node_dir: PathBuf,
    /// The toma-cluster binary, which the pod relay runs as (`toma-cluster relay`): the running
    /// executable unless TOMA_CLUSTER_EXE names it (tests that use the library do).
    pub cluster_exe: PathBuf,
}

impl Settings {
    pub fn from_env() -> Result<Settings> {
        Settings::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Settings> {
        let state = get("TOMA_CLUSTER_DIR").unwrap_or_else(|| "/tmp/toma-cluster".into());
        let state = state.trim_end_matches('/');
        if !state.starts_with('/') || state.len() < 2 {
            return Err(Error::Setting {
                name: "TOMA_CLUSTER_DIR",
                value: state.into(),
                reason: "must be an absolute path other than /",
            });
        }
        let timeout = get("TOMA_CLUSTER_READY_TIMEOUT").unwrap_or_else(|| "120".into());
        let ready_timeout = timeout.parse::<u64>().map_err(|_| Error::Setting {
            name: "TOMA_CLUSTER_READY_TIMEOUT",
            value: timeout.clone(),
            reason: "must be a whole number of seconds",
        })?;
        let node = match get("TOMA_NODE").as_deref() {
            None | Some("1") | Some("true") => true,
            Some("0") | Some("false") => false,
            Some(other) => {
                return Err(Error::Setting {
                    name: "TOMA_NODE",
                    value: other.into(),
                    reason: "must be 1 or 0",
                });
            }
        };
        let sync_frequency = get("TOMA_NODE_SYNC_FREQUENCY").unwrap_or_else(|| "1m".into());
        if !is_go_duration(&sync_frequency) {
            return Err(Error::Setting {
                name: "TOMA_NODE_SYNC_FREQUENCY",
                value: sync_frequency,
                reason: "must be a positive Go duration such as 10s, 1m or 1m30s",
            });
        }
        let cache = cache_root(&get);
        Ok(Settings {
            state_dir: PathBuf::from(state),
            crds: get("TOMA_CLUSTER_CRDS").map(PathBuf::from),
            ready_timeout: Duration::from_secs(ready_timeout),
            node,
            sync_frequency,
            control_plane_bin: get("TOMA_CONTROL_PLANE_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| cache.join(CONTROL_PLANE_CACHE).join("bin")),
            node_dir: get("TOMA_NODE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| cache.join(NODE_CACHE)),
            cluster_exe: get("TOMA_CLUSTER_EXE")
                .map(PathBuf::from)
                .or_else(|| std::env::current_exe().ok())
                .unwrap_or_else(|| PathBuf::from("toma-cluster")),
        })
    }

    pub fn node_bin(&self) -> PathBuf {
        self.node_dir.join("bin")
    }

    pub fn node_image(&self, file: &str) -> PathBuf {
        self.node_dir.join("images").join(file)
    }
}

/// The cache the build scripts fill: TOMA_CACHE, else $XDG_CACHE_HOME/toma, else ~/.cache/toma.
fn cache_root(get: &impl Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(dir) = get("TOMA_CACHE") {
        return PathBuf::from(dir);
    }
    let base = get("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(&get("HOME").unwrap_or_else(|| "/root".into())).join(".cache"));
    base.join("toma")
}

/// A positive duration as Go's time.ParseDuration reads it, limited to whole numbers: "10s",
/// "1m", "1m30s", "500ms".
pub fn is_go_duration(text: &str) -> bool {
    let mut rest = text;
    let mut positive = false;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        positive |= rest[..digits].bytes().any(|b| b != b'0');
        rest = &rest[digits..];
        let unit = ["ns", "us", "ms", "s", "m", "h"]
            .into_iter()
            .find(|unit| rest.starts_with(unit) && !(*unit == "m" && rest.starts_with("ms")));
        match unit {
            Some(unit) => rest = &rest[unit.len()..],
            None => return false,
        }
    }
    positive
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings> {
        Settings::from_lookup(|name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn defaults_are_the_ones_hack_cluster_sh_always_had() {
        let s = settings(&[("HOME", "/home/u")]).unwrap();
        assert_eq!(s.state_dir, PathBuf::from("/tmp/toma-cluster"));
        assert_eq!(s.ready_timeout, Duration::from_secs(120));
        assert!(s.node);
        assert_eq!(s.sync_frequency, "1m");
        assert_eq!(s.node_dir, PathBuf::from("/home/u/.cache/toma").join(NODE_CACHE));
    }

    #[test]
    fn node_can_be_left_out_and_its_sync_shortened() {
        let s = settings(&[("TOMA_NODE", "0"), ("TOMA_NODE_SYNC_FREQUENCY", "10s")]).unwrap();
        assert!(!s.node);
        assert_eq!(s.sync_frequency, "10s");
    }

    #[test]
    fn a_sync_frequency_the_kubelet_would_refuse_is_refused_here() {
        for bad in ["", "10", "s", "-5s", "0s", "1.5m", "10 s", "5d"] {
            assert!(!is_go_duration(bad), "{bad:?} accepted");
        }
        for good in ["10s", "1m", "1m30s", "500ms", "2h"] {
            assert!(is_go_duration(good), "{good:?} refused");
        }
        let error = settings(&[("TOMA_NODE_SYNC_FREQUENCY", "ten")]).unwrap_err();
        assert!(error.to_string().contains("TOMA_NODE_SYNC_FREQUENCY"));
    }

    #[test]
    fn a_relative_or_root_state_dir_is_refused() {
        assert!(settings(&[("TOMA_CLUSTER_DIR", "tmp/x")]).is_err());
        assert!(settings(&[("TOMA_CLUSTER_DIR", "/")]).is_err());
        let s = settings(&[("TOMA_CLUSTER_DIR", "/tmp/c/")]).unwrap();
        assert_eq!(s.state_dir, PathBuf::from("/tmp/c"));
    }
}
