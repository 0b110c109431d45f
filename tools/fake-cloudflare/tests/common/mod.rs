//! Helpers shared by the integration tests.

#![allow(dead_code)] // each test file uses its own subset

use fake_cloudflare::{Config, FakeCloudflare};
use serde_json::Value;

/// Shaped like a real TURN key: a 32-character id and a 64-character token.
pub const KEY_ID: &str = "0123456789abcdef0123456789abcdef";
pub const TOKEN: &str = "tok0tok1tok2tok3tok4tok5tok6tok7tok8tok9toka0tokb0tokc0tokd0toke";

pub const GENERATE_ICE_SERVERS: &str = "generate-ice-servers";
pub const GENERATE: &str = "generate";

/// A fake with one key registered, on a free loopback port.
pub async fn start_fake(config: Config) -> FakeCloudflare {
    let fake = FakeCloudflare::start(config).await.expect("fake starts");
    fake.add_key(KEY_ID, TOKEN);
    fake
}

/// A client builder. Built in one workspace with toma, reqwest carries rustls without a crypto
/// provider, so one is installed first.
pub fn builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

/// A client that sends a User-Agent, as every well-behaved client must.
pub fn client() -> reqwest::Client {
    builder().user_agent("toma-tests/1.0").build().unwrap()
}

pub fn credentials_url(fake: &FakeCloudflare, key_id: &str, tail: &str) -> String {
    format!("{}/v1/turn/keys/{key_id}/credentials/{tail}", fake.base_url())
}

/// `POST …/credentials/{endpoint}` with the known key and token.
pub async fn generate(fake: &FakeCloudflare, endpoint: &str, body: Value) -> reqwest::Response {
    client()
        .post(credentials_url(fake, KEY_ID, endpoint))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// `POST …/credentials/{username}/revoke` with the known key and token.
pub async fn revoke(fake: &FakeCloudflare, username: &str) -> reqwest::Response {
    client()
        .post(credentials_url(fake, KEY_ID, &format!("{username}/revoke")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
}

pub fn is_96_hex(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|text| text.len() == 96 && text.bytes().all(|b| b.is_ascii_hexdigit()))
}
