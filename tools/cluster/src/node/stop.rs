//! Stopping the node so that nothing is left: no container, shim, mount, network namespace,
//! cgroup or bridge.
//!
//! Order matters. The kubelet goes first, so it restarts nothing. Then the containers are killed
//! through the cgroups they live in (they are test pods; no grace is owed), and their shims reap
//! them. Then containerd, then the shims and anything else inside the node's mount namespace,
//! then the holder: once no process is left in the namespace, the kernel drops it and every mount
//! and network namespace bound inside it. Then the pod gateway (relay, veth pair, the holder of
//! its network namespace). Last the emptied cgroups and the bridge, which lives in the host's
//! network namespace because containerd does.

use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::{Node, cgroups, namespace};
use crate::{Error, Result, process};

/// The binaries a stray process of the node may be running.
const NODE_EXES: [&str; 5] = ["kubelet", "containerd", "containerd-shim-runc-v2", "runc", "ctr"];

impl Node<'_> {
    /// Stops the node; the error lists what could not be removed.
    pub fn stop(&self) -> Result<Vec<u32>> {
        let mut stopped = Vec::new();
        let mut left = Vec::new();
        let holder =
            process::recorded_pid(self.layout, "node-holder").filter(|&p| process::is_ours(self.layout, p));
        let mount_ns = holder.and_then(namespace::mount_namespace);
        let cgroup_root = self.env.get("CGROUP_ROOT").map(str::to_string);

        if let Err(error) = self.stop_component("kubelet", &mut stopped) {
            left.push(error.to_string());
        }
        if let Some(root) = &cgroup_root {
            kill_until_empty(|| cgroups::processes(root), Duration::from_secs(10));
        }
        if let Err(error) = self.stop_component("containerd", &mut stopped) {
            left.push(error.to_string());
        }
        // Shims, and anything an interrupted `up` or `down` left running.
        let strays = || {
            let mut pids = self.strays();
            if let Some(ns) = &mount_ns {
                pids.extend(namespace::members(ns).into_iter().filter(|&p| Some(p) != holder));
            }
            pids.sort_unstable();
            pids.dedup();
            pids
        };
        stopped.extend(strays());
        kill_until_empty(strays, Duration::from_secs(10));
        if let Err(error) = self.stop_component("node-holder", &mut stopped) {
            left.push(error.to_string());
        }
        if let Some(ns) = &mount_ns {
            kill_until_empty(|| namespace::members(ns), Duration::from_secs(5));
            if !namespace::members(ns).is_empty() {
                left.push(format!("processes still in the node's mount namespace {ns}"));
            }
        }
        self.stop_gateway(&mut stopped, &mut left);
        if let Some(root) = &cgroup_root
            && let Err(error) = cgroups::remove(root)
        {
            left.push(error.to_string());
        }
        if let Some(bridge) = self.env.get("BRIDGE")
            && Path::new("/sys/class/net").join(bridge).exists()
            && let Err(error) = process::run(Path::new("ip"), &["link", "delete", bridge])
        {
            left.push(error.to_string());
        }
        if left.is_empty() {
            Ok(stopped)
        } else {
            Err(Error::Left(left.join("; ")))
        }
    }

    pub(super) fn stop_component(&self, name: &str, stopped: &mut Vec<u32>) -> Result<()> {
        if let Some(pid) = process::recorded_pid(self.layout, name) {
            stopped.push(pid);
            process::stop(self.layout, name, pid)?;
        }
        Ok(())
    }

    /// Processes of the node's binaries with the state dir on their command line.
    fn strays(&self) -> Vec<u32> {
        process::all_pids()
            .into_iter()
            .filter(|&pid| process::is_ours(self.layout, pid))
            .filter(|&pid| {
                process::exe(pid)
                    .is_some_and(|exe| NODE_EXES.iter().any(|name| exe.ends_with(&format!("/{name}"))))
            })
            .collect()
    }
}

/// SIGKILLs what `list` returns until it returns nothing or `limit` passes.
fn kill_until_empty(list: impl Fn() -> Vec<u32>, limit: Duration) {
    let started = Instant::now();
    loop {
        let pids = list();
        if pids.is_empty() || started.elapsed() > limit {
            return;
        }
        for pid in pids {
            process::kill(pid);
        }
        sleep(Duration::from_millis(100));
    }
}
