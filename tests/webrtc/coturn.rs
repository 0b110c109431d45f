//! A real TURN server: Debian's coturn (`turnserver`), started by the test on 127.0.0.1 with the
//! TURN REST API shared secret (`use-auth-secret`), and stopped when the handle drops.

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::scratch::{GroupChild, ScratchDir, free_tcp_and_udp_port, random_string, tail};

pub const REALM: &str = "toma.test";

pub struct Coturn {
    pub port: u16,
    /// coturn's `static-auth-secret`.
    pub secret: String,
    log: PathBuf,
    // Declared before `dir`: the process stops before its directory is removed.
    _process: GroupChild,
    _dir: ScratchDir,
}

impl Coturn {
    /// Starts coturn on a free loopback port with a random shared secret; returns once it
    /// accepts TCP connections.
    pub fn start() -> Coturn {
        let dir = ScratchDir::new("coturn");
        let secret = random_string(32);
        let log = dir.path().join("turnserver.log");
        let mut last_error = String::new();
        // The port is free when picked but could be taken before coturn binds it: retry.
        for _ in 0..3 {
            let port = free_tcp_and_udp_port();
            let child = Command::new("turnserver")
                .args(flags(port, &secret, &dir))
                .current_dir(dir.path())
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(Stdio::from(
                    std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
                ))
                .spawn()
                .expect("turnserver runs: run hack/webrtc-prerequisites.sh (apt-get install coturn)");
            let mut process = GroupChild::new(child);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(status) = process.try_wait() {
                    last_error = format!("turnserver exited with {status}:\n{}", tail(&log, 30));
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Coturn {
                        port,
                        secret,
                        log,
                        _process: process,
                        _dir: dir,
                    };
                }
                if Instant::now() > deadline {
                    last_error = format!("turnserver not listening after 10 s:\n{}", tail(&log, 30));
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("{last_error}");
    }

    pub fn turn_udp(&self) -> String {
        format!("turn:127.0.0.1:{}?transport=udp", self.port)
    }

    pub fn turn_tcp(&self) -> String {
        format!("turn:127.0.0.1:{}?transport=tcp", self.port)
    }

    pub fn stun(&self) -> String {
        format!("stun:127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether coturn logged a successful ALLOCATE for `username`.
    pub fn allocated_for(&self, username: &str) -> bool {
        let needle = format!("user <{username}>: incoming packet ALLOCATE processed, success");
        self.log().lines().any(|line| line.contains(&needle))
    }

    /// Whether coturn refused a request carrying `username` with 401 (the challenge a client
    /// gets before it sends a username does not count).
    pub fn refused(&self, username: &str) -> bool {
        let needle = format!("user <{username}>: incoming packet message processed, error 401");
        self.log().lines().any(|line| line.contains(&needle))
    }

    /// Asserts that coturn logged a successful ALLOCATE for `username`.
    pub fn assert_allocated_for(&self, username: &str) {
        assert!(
            self.allocated_for(username),
            "coturn logged no allocation for {username}:\n{}",
            self.log()
        );
    }

    /// Asserts that coturn refused `username` with 401 and allocated nothing for it.
    pub fn assert_refused(&self, username: &str) {
        assert!(
            self.refused(username) && !self.allocated_for(username),
            "coturn should refuse {username} with 401 and allocate nothing:\n{}",
            self.log()
        );
    }
}

/// coturn's command line, every choice explained:
/// - `-n`: no configuration file, so /etc/turnserver.conf (syslog, ...) plays no part;
/// - `--listening-ip`/`--relay-ip 127.0.0.1`: listens and relays on loopback only; `--no-tls`,
///   `--no-dtls`, `--no-cli` and `--no-rfc5780` open nothing else (no TLS/DTLS listeners, no
///   telnet CLI on 5766, no alternate port), so the only sockets are TURN on `port` (UDP and
///   TCP) and relay ports on 127.0.0.1;
/// - `--use-auth-secret --static-auth-secret`: the TURN REST API scheme toma implements;
/// - `--allow-loopback-peers`: coturn refuses 127.0.0.0/8 peers by default, and the
///   non-browser client's peer is itself on loopback;
/// - `--pidfile`, `--userdb` in the scratch dir: nothing written to /var;
/// - `-v --log-file=stdout --simple-log`: one log with a line per session and request, which
///   the tests read to tell which username coturn accepted or refused.
fn flags(port: u16, secret: &str, dir: &ScratchDir) -> Vec<String> {
    let dir = dir.path().display();
    [
        "-n".to_string(),
        "-v".to_string(),
        "--listening-ip=127.0.0.1".to_string(),
        "--relay-ip=127.0.0.1".to_string(),
        format!("--listening-port={port}"),
        format!("--realm={REALM}"),
        "--use-auth-secret".to_string(),
        format!("--static-auth-secret={secret}"),
        "--allow-loopback-peers".to_string(),
        "--no-tls".to_string(),
        "--no-dtls".to_string(),
        "--no-cli".to_string(),
        "--no-rfc5780".to_string(),
        "--no-software-attribute".to_string(),
        format!("--pidfile={dir}/turnserver.pid"),
        format!("--userdb={dir}/turndb"),
        "--log-file=stdout".to_string(),
        "--simple-log".to_string(),
    ]
    .into()
}
