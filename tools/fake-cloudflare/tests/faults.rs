//! Fault modes, set through the library handle.

mod common;

use std::time::{Duration, Instant};

use common::*;
use fake_cloudflare::{Config, Endpoint, Fault};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn generate_ttl_600(fake: &fake_cloudflare::FakeCloudflare) -> reqwest::Response {
    generate(fake, GENERATE_ICE_SERVERS, json!({"ttl": 600})).await
}

#[tokio::test]
async fn the_unauthorized_fault_answers_401_and_mints_nothing() {
    let fake = start_fake(Config::default()).await;
    fake.set_fault(Fault::Unauthorized);

    assert_eq!(generate_ttl_600(&fake).await.status(), StatusCode::UNAUTHORIZED);
    assert!(fake.mints().is_empty());
}

#[tokio::test]
async fn the_forbidden_fault_answers_403_with_a_json_body() {
    let fake = start_fake(Config::default()).await;
    fake.set_fault(Fault::Forbidden);

    let response = generate_ttl_600(&fake).await;

    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body: Value = response.json().await.expect("the body is JSON");
    assert_eq!(body["success"], false);
    assert!(fake.mints().is_empty());
}

#[tokio::test]
async fn the_bot_block_fault_answers_403_error_code_1010_as_plain_text() {
    let fake = start_fake(Config::default()).await;
    fake.set_fault(Fault::BotBlock);

    let response = generate_ttl_600(&fake).await;

    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(response.text().await.unwrap(), "error code: 1010");
}

#[tokio::test]
async fn the_not_found_fault_answers_404_even_for_a_known_key() {
    let fake = start_fake(Config::default()).await;
    fake.set_fault(Fault::NotFound);

    assert_eq!(generate_ttl_600(&fake).await.status(), StatusCode::NOT_FOUND);
    assert!(fake.mints().is_empty());
}

#[tokio::test]
async fn the_rate_limited_fault_answers_429_with_retry_after_when_given() {
    let fake = start_fake(Config::default()).await;

    fake.set_fault(Fault::RateLimited { retry_after: Some(7) });
    let with_header = generate_ttl_600(&fake).await;
    fake.set_fault(Fault::RateLimited { retry_after: None });
    let without_header = generate_ttl_600(&fake).await;

    assert_eq!(with_header.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(with_header.headers()["retry-after"], "7");
    assert_eq!(without_header.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(without_header.headers().get("retry-after").is_none());
    assert!(fake.mints().is_empty());
}

#[tokio::test]
async fn the_server_error_fault_answers_the_given_status() {
    let fake = start_fake(Config::default()).await;

    fake.set_fault(Fault::ServerError { status: 500 });
    let internal = generate_ttl_600(&fake).await;
    fake.set_fault(Fault::ServerError { status: 503 });
    let unavailable = generate_ttl_600(&fake).await;

    assert_eq!(internal.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(fake.mints().is_empty());
}

#[tokio::test]
async fn the_slow_fault_waits_then_mints_normally() {
    let fake = start_fake(Config::default()).await;
    fake.set_fault(Fault::Slow { delay_ms: 300 });

    let started = Instant::now();
    let response = generate_ttl_600(&fake).await;

    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(fake.mints().len(), 1);
}

#[tokio::test]
async fn the_malformed_fault_answers_201_with_a_body_that_is_not_json() {
    let fake = start_fake(Config::default()).await;
    fake.set_fault(Fault::Malformed);

    let response = generate_ttl_600(&fake).await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let text = response.text().await.unwrap();
    assert!(
        serde_json::from_str::<Value>(&text).is_err(),
        "body {text:?} should not parse"
    );
    assert!(fake.mints().is_empty());
}

#[tokio::test]
async fn the_missing_credentials_fault_answers_201_without_username_or_credential() {
    let fake = start_fake(Config::default()).await;
    fake.set_fault(Fault::MissingCredentials);

    let response = generate_ttl_600(&fake).await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    let servers = body["iceServers"].as_array().unwrap();
    assert_eq!(servers.len(), 2);
    for server in servers {
        assert!(server.get("username").is_none() && server.get("credential").is_none());
    }
    assert!(fake.mints().is_empty());
}

#[tokio::test]
async fn the_legacy_shape_fault_makes_generate_ice_servers_answer_one_object() {
    let fake = start_fake(Config::default()).await;
    fake.set_fault(Fault::LegacyShape);

    let response = generate_ttl_600(&fake).await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    let server = body["iceServers"]
        .as_object()
        .expect("iceServers is a single object");
    assert_eq!(server["urls"][0], "stun:stun.cloudflare.com:3478");
    let mints = fake.mints();
    assert_eq!(mints.len(), 1);
    assert_eq!(server["username"], mints[0].username.as_str());
    assert_eq!(mints[0].endpoint, Endpoint::GenerateIceServers);
}

#[tokio::test]
async fn a_fault_with_times_applies_to_that_many_requests_then_reverts() {
    let fake = start_fake(Config::default()).await;
    fake.set_fault_times(Fault::ServerError { status: 503 }, 2);

    let first = generate_ttl_600(&fake).await.status();
    let second = generate_ttl_600(&fake).await.status();
    let third = generate_ttl_600(&fake).await.status();

    assert_eq!(
        [first, second, third],
        [
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::CREATED
        ]
    );
    assert_eq!(fake.mints().len(), 1);
}

#[tokio::test]
async fn a_fault_without_times_stays_until_cleared() {
    let fake = start_fake(Config::default()).await;
    fake.set_fault(Fault::Unauthorized);

    for _ in 0..3 {
        assert_eq!(generate_ttl_600(&fake).await.status(), StatusCode::UNAUTHORIZED);
    }
    fake.clear_fault();
    assert_eq!(generate_ttl_600(&fake).await.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn faults_apply_to_the_legacy_generate_endpoint_too() {
    let fake = start_fake(Config::default()).await;
    fake.set_fault(Fault::RateLimited { retry_after: Some(1) });

    let response = generate(&fake, GENERATE, json!({"ttl": 600})).await;

    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn faults_do_not_apply_to_revoke() {
    let fake = start_fake(Config::default()).await;
    generate_ttl_600(&fake).await;
    let username = fake.mints()[0].username.clone();
    fake.set_fault(Fault::ServerError { status: 500 });

    assert_eq!(revoke(&fake, &username).await.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_request_without_user_agent_does_not_use_up_a_fault() {
    let fake = start_fake(Config::default()).await;
    fake.set_fault_times(Fault::Unauthorized, 1);

    let blocked = common::builder()
        .build()
        .unwrap()
        .post(credentials_url(&fake, KEY_ID, GENERATE_ICE_SERVERS))
        .bearer_auth(TOKEN)
        .json(&json!({"ttl": 600}))
        .send()
        .await
        .unwrap();

    assert_eq!(blocked.status(), StatusCode::FORBIDDEN);
    assert_eq!(generate_ttl_600(&fake).await.status(), StatusCode::UNAUTHORIZED);
}
