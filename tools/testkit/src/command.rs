//! kubectl and helm with the test kubeconfig.

use std::io::Write;
use std::process::{Command, Output, Stdio};

pub fn kubeconfig() -> String {
    std::env::var("KUBECONFIG").expect("KUBECONFIG must point at the test control plane: run `make test`")
}

/// Runs `program` (kubectl, helm) with the test kubeconfig, feeding `stdin` if given.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .env("KUBECONFIG", kubeconfig())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} is on PATH (hack/cluster.sh env): {e}"));
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

/// Ok(stdout) if `output` is a success, else Err(stderr).
pub fn stdout_or_stderr(output: Output) -> Result<String, String> {
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Runs kubectl with the test kubeconfig, feeding `stdin` if given. Ok(stdout) or Err(stderr).
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    stdout_or_stderr(run("kubectl", args, stdin))
}

pub fn apply(manifest: &str) {
    if let Err(error) = kubectl(&["apply", "-f", "-"], Some(manifest)) {
        panic!("kubectl apply failed: {error}\n{manifest}");
    }
}
