//! The kubelet's `cgroupRoot`, made in each cgroup v1 hierarchy of the machine and removed on
//! `down`. The machine's cgroup mounts are never remounted or reconfigured: other work on the
//! machine lives in them. Only our own directory under each hierarchy's root is touched.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::{Error, Result};

const CGROUP_FS: &str = "/sys/fs/cgroup";

/// The v1 hierarchies the kubelet and runc use, plus the unified one of a hybrid host, where
/// runc also places containers.
const HIERARCHIES: [&str; 10] = [
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd", "unified",
];

fn hierarchies() -> Vec<PathBuf> {
    HIERARCHIES
        .iter()
        .map(|h| Path::new(CGROUP_FS).join(h))
        .filter(|p| p.join("cgroup.procs").exists())
        .collect()
}

/// Refuses hosts without the cgroup v1 hierarchies this node is written for.
pub fn check_host() -> Result<()> {
    let found = hierarchies();
    for needed in ["cpu", "memory", "pids", "cpuset"] {
        if !found.iter().any(|p| p.ends_with(needed)) {
            return Err(Error::Missing(format!(
                "the local node needs the cgroup v1 hierarchy {CGROUP_FS}/{needed}, which this machine does not have"
            )));
        }
    }
    Ok(())
}

/// `/<root>` in every hierarchy; cpuset gets the root's CPUs and memory nodes, without which no
/// process could join it.
pub fn create(root: &str) -> Result<()> {
    for hierarchy in hierarchies() {
        let dir = hierarchy.join(root.trim_start_matches('/'));
        fs::create_dir_all(&dir).map_err(Error::io("creating cgroup", &dir))?;
        if hierarchy.ends_with("cpuset") {
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let value = fs::read_to_string(hierarchy.join(file))
                    .map_err(Error::io("reading", hierarchy.join(file)))?;
                fs::write(dir.join(file), value.trim()).map_err(Error::io("writing", dir.join(file)))?;
            }
        }
    }
    Ok(())
}

/// The cgroup directories of `root` in every hierarchy, deepest first.
fn tree(root: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&entry.path(), out);
                }
            }
        }
        out.push(dir.to_path_buf());
    }
    let mut out = Vec::new();
    for hierarchy in hierarchies() {
        let dir = hierarchy.join(root.trim_start_matches('/'));
        if dir.is_dir() {
            walk(&dir, &mut out);
        }
    }
    out
}

/// Every process in `root`'s cgroups: the containers of the node.
pub fn processes(root: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = tree(root)
        .iter()
        .filter_map(|dir| fs::read_to_string(dir.join("cgroup.procs")).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Removes `root` everywhere, deepest directories first. A cgroup can only go once its last
/// process has been reaped, so this retries for a few seconds.
pub fn remove(root: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        let mut busy = Vec::new();
        for dir in tree(root) {
            if let Err(error) = fs::remove_dir(&dir)
                && error.kind() != std::io::ErrorKind::NotFound
            {
                busy.push(dir);
            }
        }
        if busy.is_empty() {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(10) {
            let list: Vec<String> = busy.iter().map(|d| d.display().to_string()).collect();
            return Err(Error::Left(format!("cgroups still in use: {}", list.join(", "))));
        }
        sleep(Duration::from_millis(200));
    }
}
