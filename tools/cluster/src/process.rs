//! Processes and ports: starting a component detached from the caller, recognising our own
//! processes, stopping them, and finding listening loopback ports.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::layout::Layout;
use crate::{Error, Result};

const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts `program` in its own session (so it leads its own process group and a SIGHUP to the
/// caller's terminal does not reach it), stdin from /dev/null, output appended to its log, and
/// records its PID. The caller can exit; the process stays until `down`.
pub fn launch<I, S>(
    layout: &Layout,
    name: &str,
    program: &Path,
    args: I,
    envs: &[(&str, String)],
) -> Result<u32>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let log_path = layout.log(name);
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(Error::io("opening log", &log_path))?;
    let err = log.try_clone().map_err(Error::io("opening log", &log_path))?;
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null()).stdout(log).stderr(err);
    for (key, value) in envs {
        command.env(key, value);
    }
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().map_err(Error::io("starting", program))?;
    let pid = child.id();
    fs::write(layout.pid_file(name), format!("{pid}\n"))
        .map_err(Error::io("writing", layout.pid_file(name)))?;
    Ok(pid)
}

pub fn recorded_pid(layout: &Layout, name: &str) -> Option<u32> {
    fs::read_to_string(layout.pid_file(name))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Alive and not a zombie.
pub fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

pub fn cmdline(pid: u32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(String::from_utf8_lossy(&raw).replace('\0', " "))
}

/// A PID counts as ours only while it is alive and its command line points into the state dir:
/// a recycled PID is never signalled.
pub fn is_ours(layout: &Layout, pid: u32) -> bool {
    alive(pid) && cmdline(pid).is_some_and(|c| c.contains(&layout.marker()))
}

pub fn exe(pid: u32) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.display().to_string())
}

/// Every PID on the machine.
pub fn all_pids() -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

fn signal(pid: u32, group: bool, sig: i32) {
    // SAFETY: plain syscalls on a PID we checked is ours.
    unsafe {
        if !(group && libc::kill(-(pid as i32), sig) == 0) {
            libc::kill(pid as i32, sig);
        }
    }
}

/// Reaps `pid` if it is our own child (started by this process), so no zombie stays behind.
fn reap(pid: u32) {
    // SAFETY: WNOHANG never blocks; ECHILD for processes that are not our children is fine.
    unsafe {
        libc::waitpid(pid as i32, std::ptr::null_mut(), libc::WNOHANG);
    }
}

fn wait_until(limit: Duration, done: impl Fn() -> bool) -> bool {
    let started = Instant::now();
    while !done() {
        if started.elapsed() >= limit {
            return false;
        }
        sleep(Duration::from_millis(100));
    }
    true
}

/// SIGTERM to the process group (or the process), up to 10 s, then SIGKILL. Ok when it is gone.
pub fn stop(layout: &Layout, name: &str, pid: u32) -> Result<()> {
    if !is_ours(layout, pid) {
        return Ok(());
    }
    signal(pid, true, libc::SIGTERM);
    if !wait_until(STOP_TIMEOUT, || {
        reap(pid);
        !is_ours(layout, pid)
    }) {
        eprintln!(
            "cluster: {name} ({pid}) still running after {}s, sending SIGKILL",
            STOP_TIMEOUT.as_secs()
        );
        signal(pid, true, libc::SIGKILL);
        wait_until(Duration::from_secs(5), || {
            reap(pid);
            !is_ours(layout, pid)
        });
    }
    if is_ours(layout, pid) {
        return Err(Error::Left(format!("{name} ({pid}) did not stop")));
    }
    Ok(())
}

/// SIGKILL, for processes that need no grace (test containers, shims whose containers are gone).
pub fn kill(pid: u32) {
    signal(pid, false, libc::SIGKILL);
}

/// Processes re-parented to PID 1 may be reaped lazily (1.5-2 s on these machines); wait up to
/// 5 s so that `pgrep` right after `down` lists no <defunct> entry.
pub fn wait_gone(pids: &[u32]) {
    wait_until(Duration::from_secs(5), || {
        pids.iter().all(|&pid| {
            reap(pid);
            !Path::new(&format!("/proc/{pid}")).exists()
        })
    });
}

/// Free loopback ports, picked at once (all bound to port 0 together, then released).
pub fn free_ports(count: usize) -> Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(Error::io("binding a free port on", "127.0.0.1"))?;
    listeners
        .iter()
        .map(|l| {
            Ok(l.local_addr()
                .map_err(Error::io("reading a port of", "127.0.0.1"))?
                .port())
        })
        .collect()
}

/// The TCP ports something listens on, from /proc/net/tcp and tcp6.
pub fn listening_ports() -> Vec<u16> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| fs::read_to_string(path).ok())
        .flat_map(|table| parse_listening(&table))
        .collect()
}

fn parse_listening(table: &str) -> Vec<u16> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state) = (fields.get(1)?, fields.get(3)?);
            (*state == "0A").then(|| u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok())?
        })
        .collect()
}

/// An exclusive lock on a file beside the state dir, held until dropped. The descriptor is
/// close-on-exec, so no component started while it is held inherits it.
pub struct Lock(#[allow(dead_code)] fs::File);

impl Lock {
    pub fn acquire(path: &Path) -> Result<Lock> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(Error::io("opening lock", path))?;
        use std::os::fd::AsRawFd;
        let started = Instant::now();
        loop {
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Lock(file));
            }
            if started.elapsed() > Duration::from_secs(600) {
                return Err(Error::Left(format!(
                    "another cluster command holds {}",
                    path.display()
                )));
            }
            sleep(Duration::from_millis(200));
        }
    }
}

/// Runs a short command to completion; its stderr (never secrets: we pass none on command lines)
/// goes into the error.
pub fn run(program: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(Error::io("running", program))?;
    if !output.status.success() {
        let name = program
            .file_name()
            .unwrap_or(program.as_os_str())
            .to_string_lossy();
        return Err(Error::Command {
            command: format!("{name} {}", args.first().unwrap_or(&"")),
            detail: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listening_sockets_count_as_taken_ports() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000\n\
   1: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000\n";
        assert_eq!(parse_listening(table), vec![8080]);
    }

    #[test]
    fn a_bound_listener_is_seen_and_a_released_port_is_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(listening_ports().contains(&port));
        drop(listener);
        assert!(!listening_ports().contains(&port));
    }

    #[test]
    fn free_ports_are_distinct() {
        let mut ports = free_ports(8).unwrap();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), 8);
    }
}
