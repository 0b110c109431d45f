//! The `fake-cloudflare` binary, run as scripts run it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

/// Starts the binary on a free port; returns it and its announced base URL.
fn spawn(extra_args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fake-cloudflare"))
        .args(["--listen", "127.0.0.1:0", "--key", "k1=t1"])
        .args(extra_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base_url = line
        .trim()
        .strip_prefix("listening on ")
        .expect("announces its address")
        .to_owned();
    (child, base_url)
}

/// Sends SIGTERM and returns whether the process exited successfully.
fn terminate(mut child: Child) -> bool {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    child.wait().unwrap().success()
}

async fn mint(base_url: &str) -> Value {
    let response = {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
    }
    .user_agent("toma-tests/1.0")
    .build()
    .unwrap()
    .post(format!(
        "{base_url}/v1/turn/keys/k1/credentials/generate-ice-servers"
    ))
    .bearer_auth("t1")
    .json(&json!({"ttl": 600, "customIdentifier": "demo"}))
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_binary_announces_its_address_writes_the_addr_file_serves_and_exits_cleanly_on_sigterm() {
    let addr_file =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("fake-addr-{}", std::process::id()));
    let (child, base_url) = spawn(&["--addr-file", addr_file.to_str().unwrap()]);

    assert!(base_url.starts_with("http://127.0.0.1:"));
    assert_ne!(base_url, "http://127.0.0.1:0");
    assert_eq!(std::fs::read_to_string(&addr_file).unwrap(), base_url);
    let body = mint(&base_url).await;
    assert_eq!(body["iceServers"][0]["urls"][0], "stun:stun.cloudflare.com:3478");
    assert!(terminate(child), "exits with success on SIGTERM");
    std::fs::remove_file(addr_file).unwrap();
}

#[tokio::test]
async fn the_binary_mints_turn_rest_credentials_for_custom_turn_urls() {
    let (child, base_url) = spawn(&[
        "--turn-secret",
        "secret",
        "--turn-urls",
        "turn:127.0.0.1:3478?transport=udp,turn:127.0.0.1:3478?transport=tcp",
    ]);

    let body = mint(&base_url).await;

    assert_eq!(body["iceServers"][0], json!({"urls": ["stun:127.0.0.1:3478"]}));
    let turn = &body["iceServers"][1];
    assert_eq!(
        turn["urls"],
        json!([
            "turn:127.0.0.1:3478?transport=udp",
            "turn:127.0.0.1:3478?transport=tcp"
        ])
    );
    let username = turn["username"].as_str().unwrap();
    assert!(username.ends_with(":demo"));
    assert_eq!(
        turn["credential"],
        fake_cloudflare::turn_rest_password("secret", username)
    );
    assert!(terminate(child));
}
