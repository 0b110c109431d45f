//! Stopping the cluster: the node first, then the control plane in reverse start order, then
//! anything an interrupted `up` left running; the state dir goes only once nothing is left.

use std::fs;
use std::time::Instant;

use crate::cluster::{Cluster, PORTS};
use crate::{Error, Result, control_plane, process};

impl Cluster {
    /// Stops everything and removes the state dir. Fails, keeping the state dir, if a process,
    /// mount, cgroup or port is left.
    pub fn down(&self) -> Result<()> {
        let _lock = self.lock()?;
        let started = Instant::now();
        self.stop_all()?;
        if self.layout().root().exists() {
            self.remove_state()?;
            eprintln!("cluster: down in {:.1}s", started.elapsed().as_secs_f64());
        } else {
            eprintln!("cluster: not up (no {})", self.layout().root().display());
        }
        Ok(())
    }

    pub(crate) fn stop_all(&self) -> Result<()> {
        let env = self.env();
        let mut left = Vec::new();
        let mut stopped = Vec::new();
        if env.get("NODE") == Some("1") || self.layout().node("").exists() {
            match self.node(&env).stop() {
                Ok(pids) => stopped.extend(pids),
                Err(error) => left.push(error.to_string()),
            }
        }
        for name in control_plane::COMPONENTS.iter().rev() {
            if let Some(pid) = process::recorded_pid(self.layout(), name) {
                stopped.push(pid);
                if let Err(error) = process::stop(self.layout(), name, pid) {
                    left.push(error.to_string());
                }
            }
        }
        for pid in self.strays() {
            eprintln!(
                "cluster: stopping stray process {pid} ({})",
                process::exe(pid).unwrap_or_default()
            );
            stopped.push(pid);
            if let Err(error) = process::stop(self.layout(), "stray", pid) {
                left.push(error.to_string());
            }
        }
        process::wait_gone(&stopped);
        let listening = process::listening_ports();
        let ports: Vec<String> = PORTS
            .iter()
            .filter_map(|key| env.port(key))
            .filter(|port| listening.contains(port))
            .map(|port| port.to_string())
            .collect();
        if !ports.is_empty() {
            left.push(format!("ports still listening: {}", ports.join(" ")));
        }
        if left.is_empty() {
            Ok(())
        } else {
            Err(Error::Left(format!(
                "{}; state kept in {}",
                left.join("; "),
                self.layout().root().display()
            )))
        }
    }

    /// Control-plane processes with the state dir on their command line that no PID file names
    /// (from an `up` that was killed half-way), the node's holder, the pod gateway's holder and
    /// the relay.
    fn strays(&self) -> Vec<u32> {
        process::all_pids()
            .into_iter()
            .filter(|&pid| process::is_ours(self.layout(), pid))
            .filter(|&pid| {
                let exe = process::exe(pid).unwrap_or_default();
                control_plane::COMPONENTS
                    .iter()
                    .any(|name| exe.ends_with(&format!("/{name}")))
                    || process::cmdline(pid).is_some_and(|c| {
                        [" toma-node-holder ", " toma-pod-gateway ", "toma-cluster relay "]
                            .iter()
                            .any(|name| c.contains(name))
                    })
            })
            .collect()
    }

    /// Removes the state dir, but never through a mount: one left under it would be a bug.
    pub(crate) fn remove_state(&self) -> Result<()> {
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let marker = self.layout().marker();
        if let Some(line) = mounts
            .lines()
            .find(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&marker)))
        {
            return Err(Error::Left(format!(
                "a mount is left under the state dir: {line}"
            )));
        }
        fs::remove_dir_all(self.layout().root()).map_err(Error::io("removing", self.layout().root()))
    }
}
