//! The commands for people on call, run as users run them: `toma status|rotate|mint`, and
//! `kubectl toma …` through a `kubectl-toma` link on the PATH.

use std::process::Command;
use std::time::Duration;

use toma_testkit::{Env, TOKEN, eventually, kubeconfig, run, stdout_or_stderr};

/// Runs the toma binary with the test kubeconfig; Ok(stdout) on success, else Err(stderr).
fn toma(args: &[&str]) -> Result<String, String> {
    stdout_or_stderr(run(env!("CARGO_BIN_EXE_toma"), args, None))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn status_rotate_and_mint_answer_the_questions_of_people_on_call() {
    let env = Env::start("cli").await;
    let ns = env.namespace.clone();
    env.apply_cloudflare_key(TOKEN);
    env.apply_credential("web", "  ttlSeconds: 3600");
    env.wait_for_reason("web", "Issued").await;

    // The Issued Event is written in the background: wait for status to show it.
    let mut shown = String::new();
    eventually(Duration::from_secs(20), || {
        shown = toma(&["status", "web", "-n", &ns]).unwrap();
        let has_event = shown.contains("Normal   Issued");
        async move { has_event }
    })
    .await;
    for expected in [
        format!("TurnCredential {ns}/web"),
        "Ready:     True (Issued)".into(),
        "Secret:    web (written by toma)".into(),
        format!("Key:       ClusterTurnKey {ns}"),
        "Next:      mint the next credential".into(),
    ] {
        assert!(shown.contains(&expected), "{expected:?} in\n{shown}");
    }
    assert!(!shown.contains(TOKEN));

    let said = toma(&["rotate", "web", "-n", &ns]).unwrap();
    assert!(said.contains("new credential requested"), "{said}");
    eventually(Duration::from_secs(20), || async { env.fake.mints().len() == 2 }).await;

    let minted = toma(&["mint", "--key", &format!("clusterturnkey/{ns}"), "--ttl", "600"]).unwrap();
    assert!(!minted.contains(TOKEN), "the token was printed");
    let config: serde_json::Value = serde_json::from_str(&minted).unwrap();
    let mints = env.fake.mints();
    assert_eq!(mints.len(), 3);
    assert_eq!(mints[2].ttl, 600);
    let turn = config["iceServers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s.get("username").is_some())
        .unwrap();
    assert_eq!(turn["username"], mints[2].username.as_str());

    let missing = toma(&["status", "nothing", "-n", &ns]).unwrap_err();
    assert_eq!(
        missing.trim(),
        format!("toma: TurnCredential {ns}/nothing not found")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane of `make test`"]
async fn kubectl_finds_toma_as_a_plugin() {
    let env = Env::start("plugin").await;
    let ns = env.namespace.clone();
    env.apply_cloudflare_key(TOKEN);
    env.apply_credential("web", "  ttlSeconds: 3600");
    env.wait_for_reason("web", "Issued").await;
    let bin = std::env::temp_dir().join(format!("toma-plugin-{ns}"));
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join("kubectl-toma");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_toma"), &link).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());

    let output = Command::new("kubectl")
        .args(["toma", "status", "web", "-n", &ns])
        .env("KUBECONFIG", kubeconfig())
        .env("PATH", path)
        .output()
        .unwrap();

    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("Ready:     True (Issued)"), "{stdout}");
    std::fs::remove_dir_all(&bin).unwrap();
}
