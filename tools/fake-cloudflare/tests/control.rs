//! The `/_fake/` control endpoints, as a test in another process uses them.

mod common;

use common::*;
use fake_cloudflare::{Config, FakeCloudflare};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn control_url(fake: &FakeCloudflare, path: &str) -> String {
    format!("{}/_fake/{path}", fake.base_url())
}

async fn put_fault(fake: &FakeCloudflare, fault: Value) -> reqwest::Response {
    // No User-Agent: control endpoints are not behind the fake edge.
    common::builder()
        .build()
        .unwrap()
        .put(control_url(fake, "fault"))
        .json(&fault)
        .send()
        .await
        .unwrap()
}

async fn get_state(fake: &FakeCloudflare) -> Value {
    common::builder()
        .build()
        .unwrap()
        .get(control_url(fake, "state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_state_lists_mints_revokes_and_request_counts_keyed_by_status() {
    let fake = start_fake(Config::default()).await;
    generate(
        &fake,
        GENERATE_ICE_SERVERS,
        json!({"ttl": 600, "customIdentifier": "user-7"}),
    )
    .await;
    let username = fake.mints()[0].username.clone();
    revoke(&fake, &username).await;

    let state = get_state(&fake).await;

    let mint = &state["mints"][0];
    assert_eq!(mint["keyId"], KEY_ID);
    assert_eq!(mint["username"], username.as_str());
    assert_eq!(mint["ttl"], 600);
    assert_eq!(mint["customIdentifier"], "user-7");
    assert_eq!(mint["endpoint"], "generate-ice-servers");
    assert_eq!(
        mint["expiresAt"].as_u64().unwrap(),
        mint["issuedAt"].as_u64().unwrap() + 600
    );
    assert_eq!(state["revoked"], json!([username]));
    assert_eq!(state["requests"], json!({"201": 1, "204": 1}));
}

#[tokio::test]
async fn a_key_registered_through_the_control_endpoint_can_mint() {
    let fake = FakeCloudflare::start(Config::default()).await.unwrap();

    let registered = common::builder()
        .build()
        .unwrap()
        .post(control_url(&fake, "keys"))
        .json(&json!({"keyId": KEY_ID, "token": TOKEN}))
        .send()
        .await
        .unwrap();

    assert_eq!(registered.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        generate(&fake, GENERATE_ICE_SERVERS, json!({"ttl": 600}))
            .await
            .status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn a_fault_put_with_times_applies_that_many_times_then_reverts() {
    let fake = start_fake(Config::default()).await;

    let set = put_fault(
        &fake,
        json!({"mode": "rate_limited", "retryAfter": 7, "times": 3}),
    )
    .await;

    assert_eq!(set.status(), StatusCode::NO_CONTENT);
    for _ in 0..3 {
        let response = generate(&fake, GENERATE_ICE_SERVERS, json!({"ttl": 600})).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "7");
    }
    assert_eq!(
        generate(&fake, GENERATE_ICE_SERVERS, json!({"ttl": 600}))
            .await
            .status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn every_fault_mode_is_accepted_in_its_json_form() {
    let fake = start_fake(Config::default()).await;

    for fault in [
        json!({"mode": "none"}),
        json!({"mode": "unauthorized"}),
        json!({"mode": "forbidden"}),
        json!({"mode": "bot_block"}),
        json!({"mode": "not_found"}),
        json!({"mode": "rate_limited"}),
        json!({"mode": "server_error", "status": 503}),
        json!({"mode": "slow", "delayMs": 10}),
        json!({"mode": "malformed"}),
        json!({"mode": "missing_credentials"}),
        json!({"mode": "legacy_shape"}),
    ] {
        assert_eq!(
            put_fault(&fake, fault.clone()).await.status(),
            StatusCode::NO_CONTENT,
            "fault {fault}"
        );
    }
}

#[tokio::test]
async fn an_unknown_fault_mode_or_invalid_status_is_answered_400() {
    let fake = start_fake(Config::default()).await;

    let unknown = put_fault(&fake, json!({"mode": "explode"})).await;
    let bad_status = put_fault(&fake, json!({"mode": "server_error", "status": 42})).await;

    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    assert_eq!(bad_status.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn deleting_the_fault_restores_normal_answers() {
    let fake = start_fake(Config::default()).await;
    put_fault(&fake, json!({"mode": "server_error"})).await;

    let deleted = common::builder()
        .build()
        .unwrap()
        .delete(control_url(&fake, "fault"))
        .send()
        .await
        .unwrap();

    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        generate(&fake, GENERATE_ICE_SERVERS, json!({"ttl": 600}))
            .await
            .status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn reset_forgets_mints_revokes_and_counters_but_keeps_keys() {
    let fake = start_fake(Config::default()).await;
    generate(&fake, GENERATE_ICE_SERVERS, json!({"ttl": 600})).await;
    revoke(&fake, &fake.mints()[0].username).await;

    let reset = common::builder()
        .build()
        .unwrap()
        .post(control_url(&fake, "reset"))
        .send()
        .await
        .unwrap();

    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        get_state(&fake).await,
        json!({"mints": [], "revoked": [], "requests": {}})
    );
    assert_eq!(
        generate(&fake, GENERATE_ICE_SERVERS, json!({"ttl": 600}))
            .await
            .status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn control_requests_are_not_counted() {
    let fake = start_fake(Config::default()).await;

    get_state(&fake).await;
    put_fault(&fake, json!({"mode": "none"})).await;

    assert!(fake.requests().is_empty());
}
