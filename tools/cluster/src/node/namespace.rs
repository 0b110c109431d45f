//! The node's private mount namespace. containerd, the kubelet, the shims and runc run inside
//! it, so every mount they and the pods make (container root filesystems, Secret volumes,
//! network namespaces) stays there and disappears with it. Inside it:
//! - a tmpfs on /run (shim sockets, runc state);
//! - /var/log bound to the cluster's folder, and an overlay on /var/lib whose upper directory is
//!   the cluster's, because the kubelet hard-codes /var/lib/kubelet/device-plugins and CNI caches
//!   in /var/lib/cni: neither lands on the host;
//! - the kernel settings the kubelet writes, each /proc/sys file covered by one of ours;
//! - `/` made rshared, as on a systemd host, so the kubelet's volume mounts reach containers.
//!
//! The holder is a shell that makes those mounts and then sleeps; everything else enters its
//! namespace with nsenter.

use std::fs;
use std::path::{Path, PathBuf};

use crate::layout::Layout;
use crate::process;

const HOLDER_SCRIPT: &str = r#"set -e
node=$1
mount -t tmpfs -o mode=0755 tmpfs /run
mount --bind "$node/var-log" /var/log
mount -t overlay overlay -o "lowerdir=/var/lib,upperdir=$node/var-lib/upper,workdir=$node/var-lib/work" /var/lib
for setting in "$node"/sysctl/*; do
  mount --bind "$setting" "/proc/sys/$(basename "$setting" | tr . /)"
done
mount --make-rshared /
touch "$node/holder.ready"
while :; do sleep 3600; done
"#;

/// `unshare --mount --propagation private sh -c <script> holder <node dir>`: unshare execs the
/// shell in place, so the recorded PID is the holder's.
pub fn holder_command(layout: &Layout) -> (PathBuf, Vec<String>) {
    (
        PathBuf::from("unshare"),
        vec![
            "--mount".into(),
            "--propagation".into(),
            "private".into(),
            "sh".into(),
            "-c".into(),
            HOLDER_SCRIPT.into(),
            "toma-node-holder".into(),
            layout.node("").display().to_string().trim_end_matches('/').into(),
        ],
    )
}

pub fn holder_ready(layout: &Layout) -> bool {
    layout.node("holder.ready").exists()
}

/// `nsenter -t <holder> -m -- program args...`: nsenter execs the program in place (it forks
/// only for a PID namespace), so the recorded PID is the program's.
pub fn enter(holder: u32, program: &Path, args: Vec<String>) -> (PathBuf, Vec<String>) {
    let mut all = vec![
        "-t".into(),
        holder.to_string(),
        "-m".into(),
        "--".into(),
        program.display().to_string(),
    ];
    all.extend(args);
    (PathBuf::from("nsenter"), all)
}

/// The identity of a process's mount namespace, e.g. "mnt:[4026532501]".
pub fn mount_namespace(pid: u32) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|p| p.display().to_string())
}

/// Every live process in that mount namespace.
pub fn members(namespace: &str) -> Vec<u32> {
    process::all_pids()
        .into_iter()
        .filter(|&pid| process::alive(pid) && mount_namespace(pid).as_deref() == Some(namespace))
        .collect()
}
