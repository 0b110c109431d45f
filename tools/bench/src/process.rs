//! The operator process under measurement (toma, or external-secrets), and what /proc says
//! about a process.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::Result;

/// A running operator. Dropping it kills the process (SIGKILL) and reaps it, so no operator
/// outlives the bench, whether it ends normally, with an error or on a signal.
pub struct Process {
    child: Child,
    addr: SocketAddr,
    /// When the process was spawned.
    pub started: Instant,
    /// The length of the log when the process was spawned: what it logs comes after.
    log_offset: u64,
    spec: Spawn,
    http: reqwest::Client,
}

/// What an operator's own /metrics says.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Metrics {
    pub reconciles: u64,
    pub errors: u64,
    /// Reconciles that asked to be queued again (controller-runtime's `requeue` result); None
    /// where the operator does not count them.
    pub requeues: Option<u64>,
    /// Sum and count of the reconcile duration histogram.
    pub reconcile_seconds: f64,
    pub reconcile_count: u64,
    /// Requests to the provider (the fake Cloudflare), failed ones included.
    pub provider_calls: u64,
}

impl Metrics {
    /// Mean duration of one reconcile so far, in milliseconds.
    pub fn mean_reconcile_ms(&self) -> f64 {
        if self.reconcile_count == 0 {
            return 0.0;
        }
        self.reconcile_seconds * 1000.0 / self.reconcile_count as f64
    }
}

/// How to tell that a freshly started operator has synced its caches and works.
#[derive(Debug, Clone, Copy)]
pub enum Readiness {
    /// `GET /readyz` on the metrics address answers 200.
    Readyz,
    /// A line of its log (since the spawn) holds all of these.
    LogLine(&'static [&'static str]),
}

/// How to start an operator, again and again (restarts append to the same log).
#[derive(Debug, Clone)]
pub struct Spawn {
    pub binary: PathBuf,
    /// The arguments but the address to serve metrics on, which is new at each spawn.
    pub args: Vec<String>,
    /// The flag that takes that address.
    pub addr_flag: &'static str,
    pub env: Vec<(&'static str, &'static str)>,
    pub readiness: Readiness,
    /// Reads the operator's /metrics.
    pub metrics: fn(&str) -> Metrics,
    pub log: PathBuf,
    /// Every spawned PID is appended here, so that the calling script can stop an operator that
    /// a killed bench left behind.
    pub pid_file: PathBuf,
}

impl Process {
    pub fn spawn(spec: &Spawn, http: reqwest::Client) -> Result<Process> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let log = append(&spec.log)?;
        let log_offset = log.metadata()?.len();
        let child = Command::new(&spec.binary)
            .args(&spec.args)
            .args([spec.addr_flag, &addr.to_string()])
            .envs(spec.env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", spec.binary.display()))?;
        // Built before the PID is recorded, so that a failure there still kills the process.
        let process = Process {
            child,
            addr,
            started: Instant::now(),
            log_offset,
            spec: spec.clone(),
            http,
        };
        writeln!(append(&spec.pid_file)?, "{}", process.pid())?;
        Ok(process)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn name(&self) -> String {
        self.spec.binary.file_name().map_or_else(
            || self.spec.binary.display().to_string(),
            |name| name.to_string_lossy().into_owned(),
        )
    }

    /// Waits until the operator is ready and returns when it first was seen to be.
    pub async fn wait_ready(&mut self, limit: Duration) -> Result<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                let log = self.spec.log.display();
                return Err(
                    format!("{} exited before it was ready ({status}); see {log}", self.name()).into(),
                );
            }
            if self.is_ready().await? {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                return Err(format!("{} not ready within {limit:?}", self.name()).into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn is_ready(&self) -> Result<bool> {
        match self.spec.readiness {
            Readiness::Readyz => {
                let url = format!("http://{}/readyz", self.addr);
                let answer = self.http.get(&url).send().await;
                Ok(answer.is_ok_and(|r| r.status().is_success()))
            }
            Readiness::LogLine(parts) => {
                let mut log = File::open(&self.spec.log)?;
                log.seek(SeekFrom::Start(self.log_offset))?;
                let mut text = String::new();
                log.read_to_string(&mut text)?;
                Ok(text.lines().any(|line| parts.iter().all(|p| line.contains(p))))
            }
        }
    }

    pub async fn metrics(&self) -> Result<Metrics> {
        let text = self
            .http
            .get(format!("http://{}/metrics", self.addr))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok((self.spec.metrics)(&text))
    }

    pub fn memory(&self) -> Result<Memory> {
        memory(self.pid())
    }

    pub fn cpu_seconds(&self) -> Result<f64> {
        cpu_seconds(self.pid())
    }

    /// SIGTERM, as Kubernetes stops a pod, then waits for the exit (SIGKILL after `limit`).
    pub async fn terminate(&mut self, limit: Duration) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()?;
        if !status.success() {
            return Err(format!("kill -TERM {} failed ({status})", self.pid()).into());
        }
        let deadline = Instant::now() + limit;
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                self.child.kill()?;
                self.child.wait()?;
                return Err(
                    format!("{} did not stop within {limit:?} of SIGTERM; killed", self.name()).into(),
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()).into())
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Resident memory, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// VmRSS: resident now.
    pub rss_kib: u64,
    /// VmHWM: the most ever resident.
    pub peak_kib: u64,
}

pub fn memory(pid: u32) -> Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let status = read(&path)?;
    let field = |name: &str| -> Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .ok_or_else(|| format!("no {name} in {path}"))?;
        Ok(line[name.len()..].trim().trim_end_matches("kB").trim().parse()?)
    };
    Ok(Memory {
        rss_kib: field("VmRSS:")?,
        peak_kib: field("VmHWM:")?,
    })
}

/// User plus system CPU time a process has used, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let ticks = parse_cpu_ticks(&read(&path)?).ok_or_else(|| format!("unreadable {path}"))?;
    Ok(ticks as f64 / clock_ticks() as f64)
}

fn read(path: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}").into())
}

/// utime + stime: fields 14 and 15, counted from after the command name, which may hold spaces.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // fields[0] is the state (field 3), so field k is fields[k - 3].
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux unless asked otherwise).
fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// CPU seconds of the API server and of etcd; None where the PID is unknown or unreadable.
#[derive(Debug, Clone, Copy)]
pub struct ControlPlaneCpu {
    pub apiserver: Option<f64>,
    pub etcd: Option<f64>,
}

impl ControlPlaneCpu {
    pub fn read(apiserver_pid: Option<u32>, etcd_pid: Option<u32>) -> ControlPlaneCpu {
        let cpu_of = |pid: Option<u32>| pid.and_then(|p| cpu_seconds(p).ok());
        ControlPlaneCpu {
            apiserver: cpu_of(apiserver_pid),
            etcd: cpu_of(etcd_pid),
        }
    }

    /// What was used between `before` and this reading.
    pub fn since(self, before: ControlPlaneCpu) -> ControlPlaneCpu {
        let delta = |now: Option<f64>, then: Option<f64>| now.zip(then).map(|(a, b)| a - b);
        ControlPlaneCpu {
            apiserver: delta(self.apiserver, before.apiserver),
            etcd: delta(self.etcd, before.etcd),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_a_command_name_with_spaces() {
        let stat = "1234 (to ma) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 70 0 0 20 0 8 0 1 1 1";
        assert_eq!(parse_cpu_ticks(stat), Some(320));
    }

    #[test]
    fn own_process_has_memory_and_cpu() {
        let me = std::process::id();
        let memory = memory(me).unwrap();
        assert!(memory.rss_kib > 0 && memory.peak_kib >= memory.rss_kib);
        assert!(cpu_seconds(me).unwrap() >= 0.0);
    }
}
