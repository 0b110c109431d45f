//! A non-browser TURN client: coturn's `turnutils_uclient`.

use std::time::Duration;

use tokio::process::Command;

pub struct Run {
    pub success: bool,
    /// (messages sent, messages received) from the client's last summary line.
    pub messages: Option<(u64, u64)>,
    pub output: String,
}

/// `turnutils_uclient -y`: two clients each allocate a relay on the server (over UDP) with
/// `username`/`password`, then send `-n` messages to each other through their relays, so a
/// success means coturn accepted the credential and actually relayed data.
/// `-c` skips the RTCP-like second allocation, `-L 127.0.0.1` keeps the client on loopback.
pub async fn relay_through(port: u16, username: &str, password: &str) -> Run {
    let port = port.to_string();
    let child = Command::new("turnutils_uclient")
        .args([
            "-y",
            "-c",
            "-n",
            "5",
            "-L",
            "127.0.0.1",
            "-p",
            &port,
            "-u",
            username,
            "-w",
            password,
            "127.0.0.1",
        ])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .expect("turnutils_uclient finished within 60 s")
        .expect("turnutils_uclient runs: run hack/webrtc-prerequisites.sh (apt-get install coturn)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // e.g. "6: : start_mclient: tot_send_msgs=10, tot_recv_msgs=10"
    let messages = text
        .lines()
        .filter_map(|line| {
            let sent = line.split("tot_send_msgs=").nth(1)?;
            let (sent, rest) = sent.split_once(',')?;
            let received = rest.split("tot_recv_msgs=").nth(1)?;
            Some((sent.trim().parse().ok()?, received.trim().parse().ok()?))
        })
        .next_back();
    Run {
        success: output.status.success(),
        messages,
        output: text,
    }
}
