//! Scratch directories and process groups that clean up after themselves, even when a test
//! panics.

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
use rand::distr::Alphanumeric;

/// A fresh directory under the system temp dir, removed on drop.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(what: &str) -> ScratchDir {
        let path = std::env::temp_dir().join(format!(
            "toma-webrtc-{what}-{}-{}",
            std::process::id(),
            random_string(8)
        ));
        std::fs::create_dir_all(&path).unwrap();
        ScratchDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // A process that just died may still be flushing a file: retry briefly.
        for _ in 0..20 {
            if std::fs::remove_dir_all(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

pub fn random_string(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A loopback port that is free for both TCP and UDP right now.
pub fn free_tcp_and_udp_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A child started as the leader of its own process group (`Command::process_group(0)`).
/// Dropping it kills the whole group, so helpers it forked (Chromium's renderers and zygotes)
/// go with it, and reaps the leader. Helpers that left the group (a new session) are found by
/// a path on their command line, see [`GroupChild::also_kill_mentioning`].
pub struct GroupChild {
    child: Child,
    marker: Option<String>,
}

impl GroupChild {
    pub fn new(child: Child) -> GroupChild {
        GroupChild { child, marker: None }
    }

    /// On drop, also kill every process whose command line contains `path` (a scratch dir
    /// unique to this child).
    pub fn also_kill_mentioning(mut self, path: &Path) -> GroupChild {
        self.marker = Some(path.display().to_string());
        self
    }

    /// Some(status) once the leader has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        let group = self.child.id();
        let _ = self.child.kill();
        // The other members were re-parented to PID 1, which reaps them in its own time: kill
        // until none of them is still running (a zombie holds no socket or file), so that the
        // next test starts with a clean slate.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = running(group, self.marker.as_deref());
            for pid in &left {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            if left.is_empty() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.wait();
    }
}

/// Live (not zombie) processes in process group `group`, or whose command line contains
/// `marker`, read from /proc/<pid>/stat (`pid (comm) state ppid pgrp ...`) and cmdline.
fn running(group: u32, marker: Option<&str>) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let (_, fields) = stat.rsplit_once(") ")?;
            let mut fields = fields.split(' ');
            let state = fields.next()?;
            let pgrp: u32 = fields.nth(1)?.parse().ok()?;
            if state == "Z" || pid == me {
                return None;
            }
            let mentions = || {
                marker.is_some_and(|marker| {
                    std::fs::read(entry.path().join("cmdline")).is_ok_and(|cmdline| {
                        String::from_utf8_lossy(&cmdline)
                            .replace('\0', " ")
                            .contains(marker)
                    })
                })
            };
            (pgrp == group || mentions()).then_some(pid)
        })
        .collect()
}

/// The last `lines` lines of a log file, for failure messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
