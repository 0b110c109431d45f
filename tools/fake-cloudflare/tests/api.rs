//! The Cloudflare API as the fake serves it.

mod common;

use common::*;
use fake_cloudflare::{Config, Endpoint, UrlSet, turn_rest_password};
use reqwest::StatusCode;
use serde_json::{Value, json};

const CURRENT_TURN_URLS: [&str; 6] = [
    "turn:turn.cloudflare.com:3478?transport=udp",
    "turn:turn.cloudflare.com:443?transport=udp",
    "turn:turn.cloudflare.com:3478?transport=tcp",
    "turn:turn.cloudflare.com:80?transport=tcp",
    "turns:turn.cloudflare.com:5349?transport=tcp",
    "turns:turn.cloudflare.com:443?transport=tcp",
];

#[tokio::test]
async fn a_mint_returns_201_with_the_documented_shape_and_is_recorded() {
    let fake = start_fake(Config::default()).await;

    let response = generate(
        &fake,
        GENERATE_ICE_SERVERS,
        json!({"ttl": 86400, "customIdentifier": "user-7"}),
    )
    .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    let servers = body["iceServers"].as_array().expect("iceServers is a list");
    assert_eq!(servers.len(), 2);
    assert_eq!(servers[0], json!({"urls": ["stun:stun.cloudflare.com:3478"]}));
    assert_eq!(servers[1]["urls"], json!(CURRENT_TURN_URLS));
    assert!(is_96_hex(&servers[1]["username"]));
    assert!(is_96_hex(&servers[1]["credential"]));

    let mints = fake.mints();
    assert_eq!(mints.len(), 1);
    let mint = &mints[0];
    assert_eq!(mint.key_id, KEY_ID);
    assert_eq!(mint.username, servers[1]["username"]);
    assert_eq!(mint.credential, servers[1]["credential"]);
    assert_eq!(mint.ttl, 86400);
    assert_eq!(mint.custom_identifier.as_deref(), Some("user-7"));
    assert_eq!(mint.expires_at, mint.issued_at + 86400);
    assert_eq!(mint.endpoint, Endpoint::GenerateIceServers);
}

#[tokio::test]
async fn every_mint_gets_a_fresh_username_and_credential() {
    let fake = start_fake(Config::default()).await;
    generate(&fake, GENERATE_ICE_SERVERS, json!({"ttl": 600})).await;
    generate(&fake, GENERATE_ICE_SERVERS, json!({"ttl": 600})).await;

    let mints = fake.mints();
    assert_eq!(mints.len(), 2);
    assert_ne!(mints[0].username, mints[1].username);
    assert_ne!(mints[0].credential, mints[1].credential);
}

#[tokio::test]
async fn the_legacy_generate_endpoint_answers_one_object_holding_stun_and_turn_urls() {
    let fake = start_fake(Config::default()).await;

    let response = generate(&fake, GENERATE, json!({"ttl": 3600})).await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    let server = body["iceServers"]
        .as_object()
        .expect("iceServers is a single object");
    let mut expected_urls = vec!["stun:stun.cloudflare.com:3478"];
    expected_urls.extend(CURRENT_TURN_URLS);
    assert_eq!(server["urls"], json!(expected_urls));
    assert!(is_96_hex(&server["username"]));
    assert!(is_96_hex(&server["credential"]));
    assert_eq!(fake.mints()[0].endpoint, Endpoint::Generate);
}

#[tokio::test]
async fn a_request_without_user_agent_is_refused_with_403_error_code_1010() {
    let fake = start_fake(Config::default()).await;

    // reqwest sends no User-Agent unless told to.
    let response = common::builder()
        .build()
        .unwrap()
        .post(credentials_url(&fake, KEY_ID, GENERATE_ICE_SERVERS))
        .bearer_auth(TOKEN)
        .json(&json!({"ttl": 600}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(response.text().await.unwrap(), "error code: 1010");
    assert!(fake.mints().is_empty());
}

#[tokio::test]
async fn an_unknown_key_id_is_answered_404() {
    let fake = start_fake(Config::default()).await;

    let response = client()
        .post(credentials_url(
            &fake,
            "ffffffffffffffffffffffffffffffff",
            GENERATE_ICE_SERVERS,
        ))
        .bearer_auth(TOKEN)
        .json(&json!({"ttl": 600}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(fake.mints().is_empty());
}

#[tokio::test]
async fn a_wrong_or_missing_token_for_a_known_key_is_answered_401() {
    let fake = start_fake(Config::default()).await;
    let url = credentials_url(&fake, KEY_ID, GENERATE_ICE_SERVERS);

    let wrong = client()
        .post(&url)
        .bearer_auth("not-the-token")
        .json(&json!({"ttl": 600}))
        .send()
        .await
        .unwrap();
    let missing = client()
        .post(&url)
        .json(&json!({"ttl": 600}))
        .send()
        .await
        .unwrap();
    let not_bearer = client()
        .post(&url)
        .basic_auth(KEY_ID, Some(TOKEN))
        .json(&json!({"ttl": 600}))
        .send()
        .await
        .unwrap();

    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(not_bearer.status(), StatusCode::UNAUTHORIZED);
    assert!(fake.mints().is_empty());
}

#[tokio::test]
async fn a_ttl_out_of_range_missing_or_not_an_integer_is_answered_400() {
    let fake = start_fake(Config::default()).await;

    for body in [
        json!({"ttl": 0}),
        json!({"ttl": -5}),
        json!({"ttl": 172_801}),
        json!({}),
        json!({"ttl": "600"}),
    ] {
        let response = generate(&fake, GENERATE_ICE_SERVERS, body.clone()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "body {body}");
    }
    let response = generate(&fake, GENERATE_ICE_SERVERS, json!({"ttl": 1.5})).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(fake.mints().is_empty());
}

#[tokio::test]
async fn a_body_that_is_not_json_is_answered_400() {
    let fake = start_fake(Config::default()).await;

    for body in ["ttl=600", ""] {
        let response = client()
            .post(credentials_url(&fake, KEY_ID, GENERATE_ICE_SERVERS))
            .bearer_auth(TOKEN)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "body {body:?}");
    }
    assert!(fake.mints().is_empty());
}

#[tokio::test]
async fn the_ttl_limits_one_and_172800_are_accepted_and_unknown_fields_ignored() {
    let fake = start_fake(Config::default()).await;

    let shortest = generate(&fake, GENERATE_ICE_SERVERS, json!({"ttl": 1})).await;
    let longest = generate(
        &fake,
        GENERATE_ICE_SERVERS,
        json!({"ttl": 172_800, "colour": "blue"}),
    )
    .await;

    assert_eq!(shortest.status(), StatusCode::CREATED);
    assert_eq!(longest.status(), StatusCode::CREATED);
    let ttls: Vec<u32> = fake.mints().iter().map(|mint| mint.ttl).collect();
    assert_eq!(ttls, [1, 172_800]);
}

#[tokio::test]
async fn a_request_without_content_type_is_still_served() {
    let fake = start_fake(Config::default()).await;

    let response = client()
        .post(credentials_url(&fake, KEY_ID, GENERATE))
        .bearer_auth(TOKEN)
        .body(r#"{"ttl": 86400}"#)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn revoking_an_issued_username_is_answered_204_and_recorded() {
    let fake = start_fake(Config::default()).await;
    generate(&fake, GENERATE_ICE_SERVERS, json!({"ttl": 600})).await;
    let username = fake.mints()[0].username.clone();

    let response = revoke(&fake, &username).await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(response.text().await.unwrap(), "");
    assert_eq!(fake.revoked(), [username]);
}

#[tokio::test]
async fn revoking_an_unknown_username_is_answered_404_and_not_recorded() {
    let fake = start_fake(Config::default()).await;

    let response = revoke(&fake, "never-issued").await;

    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(fake.revoked().is_empty());
}

#[tokio::test]
async fn revoking_another_keys_username_is_answered_404() {
    let fake = start_fake(Config::default()).await;
    fake.add_key("other", "other-token");
    client()
        .post(credentials_url(&fake, "other", GENERATE_ICE_SERVERS))
        .bearer_auth("other-token")
        .json(&json!({"ttl": 600}))
        .send()
        .await
        .unwrap();
    let others_username = fake.mints()[0].username.clone();

    let response = revoke(&fake, &others_username).await;

    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn revoking_with_a_wrong_token_is_answered_401_and_not_recorded() {
    let fake = start_fake(Config::default()).await;
    generate(&fake, GENERATE_ICE_SERVERS, json!({"ttl": 600})).await;
    let username = fake.mints()[0].username.clone();

    let response = client()
        .post(credentials_url(&fake, KEY_ID, &format!("{username}/revoke")))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(fake.revoked().is_empty());
}

#[tokio::test]
async fn requests_are_counted_by_the_status_they_were_answered_with() {
    let fake = start_fake(Config::default()).await;
    generate(&fake, GENERATE_ICE_SERVERS, json!({"ttl": 600})).await;
    generate(&fake, GENERATE_ICE_SERVERS, json!({"ttl": 600})).await;
    generate(&fake, GENERATE_ICE_SERVERS, json!({"ttl": 0})).await;
    revoke(&fake, "never-issued").await;

    let requests = fake.requests();

    assert_eq!(requests.get(&201), Some(&2));
    assert_eq!(requests.get(&400), Some(&1));
    assert_eq!(requests.get(&404), Some(&1));
    assert_eq!(requests.len(), 3);
}

#[tokio::test]
async fn the_with_port_53_set_lists_stun_and_turn_on_port_53() {
    let fake = start_fake(Config {
        urls: UrlSet::WithPort53,
        ..Config::default()
    })
    .await;

    let body: Value = generate(&fake, GENERATE_ICE_SERVERS, json!({"ttl": 600}))
        .await
        .json()
        .await
        .unwrap();

    assert_eq!(
        body["iceServers"][0],
        json!({"urls": ["stun:stun.cloudflare.com:3478", "stun:stun.cloudflare.com:53"]})
    );
    assert_eq!(
        body["iceServers"][1]["urls"],
        json!([
            "turn:turn.cloudflare.com:3478?transport=udp",
            "turn:turn.cloudflare.com:53?transport=udp",
            "turn:turn.cloudflare.com:3478?transport=tcp",
            "turn:turn.cloudflare.com:80?transport=tcp",
            "turns:turn.cloudflare.com:5349?transport=tcp",
            "turns:turn.cloudflare.com:443?transport=tcp",
        ])
    );
    assert!(is_96_hex(&body["iceServers"][1]["username"]));
}

#[tokio::test]
async fn the_single_object_set_puts_all_eight_urls_in_one_credentialed_entry() {
    let fake = start_fake(Config {
        urls: UrlSet::SingleObject,
        ..Config::default()
    })
    .await;

    let body: Value = generate(&fake, GENERATE_ICE_SERVERS, json!({"ttl": 600}))
        .await
        .json()
        .await
        .unwrap();

    let servers = body["iceServers"].as_array().unwrap();
    assert_eq!(servers.len(), 1);
    let urls = servers[0]["urls"].as_array().unwrap();
    assert_eq!(urls.len(), 8);
    assert_eq!(urls[0], "stun:stun.cloudflare.com:3478");
    assert_eq!(urls[1], "stun:stun.cloudflare.com:53");
    assert!(is_96_hex(&servers[0]["username"]));
    assert!(is_96_hex(&servers[0]["credential"]));
}

#[tokio::test]
async fn custom_turn_urls_are_answered_with_a_stun_url_on_the_same_host_and_port() {
    let turn_urls = vec![
        "turn:127.0.0.1:3478?transport=udp".to_string(),
        "turn:127.0.0.1:3478?transport=tcp".to_string(),
    ];
    let fake = start_fake(Config {
        urls: UrlSet::Custom(turn_urls.clone()),
        ..Config::default()
    })
    .await;

    let body: Value = generate(&fake, GENERATE_ICE_SERVERS, json!({"ttl": 600}))
        .await
        .json()
        .await
        .unwrap();

    assert_eq!(body["iceServers"][0], json!({"urls": ["stun:127.0.0.1:3478"]}));
    assert_eq!(body["iceServers"][1]["urls"], json!(turn_urls));
}

#[tokio::test]
async fn urls_as_string_answers_one_entry_per_url_with_a_plain_string() {
    let fake = start_fake(Config {
        urls_as_string: true,
        ..Config::default()
    })
    .await;

    let body: Value = generate(&fake, GENERATE_ICE_SERVERS, json!({"ttl": 600}))
        .await
        .json()
        .await
        .unwrap();

    let servers = body["iceServers"].as_array().unwrap();
    assert_eq!(servers.len(), 7);
    assert_eq!(servers[0], json!({"urls": "stun:stun.cloudflare.com:3478"}));
    for (server, url) in servers[1..].iter().zip(CURRENT_TURN_URLS) {
        assert_eq!(server["urls"], url);
        assert!(is_96_hex(&server["username"]));
    }
    let username = &fake.mints()[0].username;
    assert!(
        servers[1..]
            .iter()
            .all(|server| server["username"] == username.as_str())
    );
}

#[tokio::test]
async fn turn_rest_mode_mints_expiry_colon_identifier_usernames_with_hmac_credentials() {
    let fake = start_fake(Config {
        turn_secret: Some("secret".into()),
        ..Config::default()
    })
    .await;

    let body: Value = generate(
        &fake,
        GENERATE_ICE_SERVERS,
        json!({"ttl": 600, "customIdentifier": "user-7"}),
    )
    .await
    .json()
    .await
    .unwrap();
    generate(&fake, GENERATE_ICE_SERVERS, json!({"ttl": 600})).await;

    let mints = fake.mints();
    assert_eq!(mints[0].username, format!("{}:user-7", mints[0].expires_at));
    assert_eq!(
        mints[0].credential,
        turn_rest_password("secret", &mints[0].username)
    );
    assert_eq!(body["iceServers"][1]["username"], mints[0].username.as_str());
    assert_eq!(body["iceServers"][1]["credential"], mints[0].credential.as_str());
    assert_eq!(mints[1].username, format!("{}:toma", mints[1].expires_at));
}

#[test]
fn the_turn_rest_password_matches_an_independently_computed_vector() {
    // Computed with:
    // python3 -c 'import hmac,hashlib,base64;print(base64.b64encode(
    //   hmac.new(b"secret",b"1700000000:toma",hashlib.sha1).digest()).decode())'
    assert_eq!(
        turn_rest_password("secret", "1700000000:toma"),
        "Wqc/ZqgBAYQOnK/tGk7TgzwhmZA="
    );
}

#[tokio::test]
async fn a_turn_rest_username_with_a_percent_encoded_colon_can_be_revoked() {
    let fake = start_fake(Config {
        turn_secret: Some("secret".into()),
        ..Config::default()
    })
    .await;
    generate(&fake, GENERATE_ICE_SERVERS, json!({"ttl": 600})).await;
    let username = fake.mints()[0].username.clone();

    let response = revoke(&fake, &username.replace(':', "%3A")).await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(fake.revoked(), [username]);
}
