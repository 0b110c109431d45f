//! Waiting for a component to become ready, and the health checks used for it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::layout::Layout;
use crate::{Error, Result, process};

/// Polls `check` every 0.2 s while the component's process lives. On failure the error carries
/// the last lines of its log, which is where the reason is.
pub fn until_ready(
    layout: &Layout,
    name: &str,
    pid: u32,
    limit: Duration,
    what: &str,
    check: impl Fn() -> bool,
) -> Result<()> {
    let started = Instant::now();
    loop {
        if check() {
            eprintln!(
                "cluster: {name}: {what} after {:.1}s",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if !process::alive(pid) {
            return Err(not_ready(layout, name, "exited"));
        }
        if started.elapsed() >= limit {
            return Err(not_ready(
                layout,
                name,
                &format!("not {what} after {}s", limit.as_secs()),
            ));
        }
        sleep(Duration::from_millis(200));
    }
}

pub fn not_ready(layout: &Layout, name: &str, what: &str) -> Error {
    let log = layout.log(name);
    let tail = std::fs::read_to_string(&log)
        .map(|text| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(25)..].join("\n")
        })
        .unwrap_or_default();
    Error::NotReady {
        component: name.to_string(),
        detail: format!("{what}; last lines of {}:\n{tail}", log.display()),
    }
}

/// GETs `url` with curl and returns the body when the status is 2xx. The bearer token, if any,
/// is read by curl from a header file, so it never appears on a command line.
pub fn get(url: &str, ca: Option<&Path>, header_file: Option<&Path>) -> Option<String> {
    let mut command = Command::new("curl");
    command.args(["-fsS", "--max-time", "5"]);
    match ca {
        Some(ca) => command.arg("--cacert").arg(ca),
        None => command.arg("-k"),
    };
    if let Some(file) = header_file {
        let mut arg = std::ffi::OsString::from("@");
        arg.push(file);
        command.arg("-H").arg(arg);
    }
    let output = command
        .arg(url)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Waits up to a minute until `name` (process `pid`) answers `ok` on its plain `/healthz` `url`.
pub fn until_healthy(layout: &Layout, name: &str, pid: u32, url: &str) -> Result<()> {
    until_ready(layout, name, pid, Duration::from_secs(60), "healthy", || {
        body_is(url, None, None, "ok")
    })
}

pub fn body_is(url: &str, ca: Option<&Path>, header_file: Option<&Path>, expected: &str) -> bool {
    get(url, ca, header_file).is_some_and(|body| body.trim() == expected)
}
