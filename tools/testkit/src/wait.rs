//! Waiting for what the cluster will do.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use toma::api::TurnCredential;

/// Waits up to 60 s until the TurnCredential's Ready condition has `reason`, and returns it.
pub async fn wait_for_reason(api: &Api<TurnCredential>, name: &str, reason: &str) -> TurnCredential {
    let what = format!("reason {reason}");
    wait_until(api, name, &what, Duration::from_secs(60), |tc| {
        ready(tc).is_some_and(|(_, r)| r == reason)
    })
    .await
}

/// Polls the TurnCredential every 500 ms until `check` holds, and returns it; after `limit`,
/// panics naming `what` and showing the last status.
pub async fn wait_until(
    api: &Api<TurnCredential>,
    name: &str,
    what: &str,
    limit: Duration,
    check: impl Fn(&TurnCredential) -> bool,
) -> TurnCredential {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let tc = api.get(name).await.unwrap();
        if check(&tc) {
            return tc;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "{name} never reached {what} within {limit:?}; last status: {:?}",
                tc.status
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The Ready condition's (status, reason).
pub fn ready(tc: &TurnCredential) -> Option<(String, String)> {
    let condition = tc
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")?;
    Some((condition.status.clone(), condition.reason.clone()))
}

pub fn text(secret: &Secret, key: &str) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

/// Polls `check` every 250 ms until it holds, panicking after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
