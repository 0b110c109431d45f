//! The Cloudflare side: credential endpoints and the edge in front of them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::json;

use crate::ice::{self, Shape};
use crate::{Endpoint, FakeCloudflare, Fault, Mint};

/// Documented maximum credential lifetime: 48 hours.
const MAX_TTL_SECONDS: i64 = 172_800;

pub(crate) fn router(fake: FakeCloudflare) -> Router {
    Router::new()
        .route(
            "/v1/turn/keys/{key_id}/credentials/generate-ice-servers",
            post(generate_ice_servers),
        )
        .route(
            "/v1/turn/keys/{key_id}/credentials/generate",
            post(generate_legacy),
        )
        .route(
            "/v1/turn/keys/{key_id}/credentials/{username}/revoke",
            post(revoke),
        )
        .with_state(fake)
}

/// What Cloudflare's edge does before the API sees a request: refuse a
/// request without a User-Agent as a bot. Also counts answers by status.
pub(crate) async fn edge(State(fake): State<FakeCloudflare>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    if path == "/_fake" || path.starts_with("/_fake/") {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let has_user_agent = request
        .headers()
        .get(USER_AGENT)
        .is_some_and(|agent| !agent.is_empty());
    let response = if has_user_agent {
        next.run(request).await
    } else {
        bot_block()
    };
    let status = response.status().as_u16();
    *fake.lock().recorded.requests.entry(status).or_default() += 1;
    if fake.shared.settings.log_requests {
        eprintln!("fake-cloudflare: {method} {path} -> {status}");
    }
    response
}

/// Cloudflare's answer to a path it has no route for.
pub(crate) async fn unknown_path() -> Response {
    error(StatusCode::NOT_FOUND, "Not found")
}

#[derive(Deserialize)]
struct GenerateRequest {
    ttl: i64,
    #[serde(rename = "customIdentifier", default)]
    custom_identifier: Option<String>,
}

async fn generate_ice_servers(
    State(fake): State<FakeCloudflare>,
    Path(key_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    generate(fake, Endpoint::GenerateIceServers, key_id, headers, body).await
}

async fn generate_legacy(
    State(fake): State<FakeCloudflare>,
    Path(key_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    generate(fake, Endpoint::Generate, key_id, headers, body).await
}

async fn generate(
    fake: FakeCloudflare,
    endpoint: Endpoint,
    key_id: String,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = fake.lock().fault.take();
    // Failing faults stand for an upstream that fails whatever was asked, so
    // they answer before any check.
    match &fault {
        Fault::Unauthorized => return unauthorized(),
        Fault::Forbidden => return error(StatusCode::FORBIDDEN, "Authentication error"),
        Fault::BotBlock => return bot_block(),
        Fault::NotFound => return unknown_key(),
        Fault::RateLimited { retry_after } => return rate_limited(*retry_after),
        Fault::ServerError { status } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return error(status, status.canonical_reason().unwrap_or("Server error"));
        }
        Fault::Slow { delay_ms } => tokio::time::sleep(Duration::from_millis(*delay_ms)).await,
        Fault::None | Fault::Malformed | Fault::MissingCredentials | Fault::LegacyShape => {}
    }

    if let Some(refusal) = refuse_unauthorized(&fake, &key_id, &headers) {
        return refusal;
    }
    // Lenient like the real service: any content type, unknown fields ignored.
    let request: GenerateRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "Invalid request body: expected {\"ttl\": <seconds>}",
            );
        }
    };
    if !(1..=MAX_TTL_SECONDS).contains(&request.ttl) {
        return error(
            StatusCode::BAD_REQUEST,
            "ttl must be between 1 and 172800 seconds",
        );
    }

    let settings = &fake.shared.settings;
    let shape = match (endpoint, &fault) {
        (Endpoint::Generate, _) | (_, Fault::LegacyShape) => Shape::SingleObject,
        (Endpoint::GenerateIceServers, _) => Shape::List {
            urls_as_string: settings.urls_as_string,
        },
    };
    match fault {
        // Neither answer hands out a usable credential, so nothing is recorded.
        Fault::Malformed => (
            StatusCode::CREATED,
            [(CONTENT_TYPE, "application/json")],
            r#"{"iceServers": ["#,
        )
            .into_response(),
        Fault::MissingCredentials => (
            StatusCode::CREATED,
            axum::Json(ice::answer_body(&settings.urls, shape, None)),
        )
            .into_response(),
        _ => {
            let mint = mint(&fake, endpoint, key_id, request);
            let credentials = Some((mint.username.as_str(), mint.credential.as_str()));
            let response = (
                StatusCode::CREATED,
                axum::Json(ice::answer_body(&settings.urls, shape, credentials)),
            )
                .into_response();
            fake.lock().recorded.mints.push(mint);
            response
        }
    }
}

fn mint(fake: &FakeCloudflare, endpoint: Endpoint, key_id: String, request: GenerateRequest) -> Mint {
    let ttl = u32::try_from(request.ttl).expect("ttl was checked to be in range");
    let issued_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let expires_at = issued_at + u64::from(ttl);
    let (username, credential) = match &fake.shared.settings.turn_secret {
        Some(secret) => {
            // TURN REST scheme: coturn reads the expiry from the username.
            let user = request.custom_identifier.as_deref().unwrap_or("toma");
            let username = format!("{expires_at}:{user}");
            let credential = ice::turn_rest_password(secret, &username);
            (username, credential)
        }
        None => (ice::random_hex_96(), ice::random_hex_96()),
    };
    Mint {
        key_id,
        username,
        credential,
        ttl,
        custom_identifier: request.custom_identifier,
        issued_at,
        expires_at,
        endpoint,
    }
}

async fn revoke(
    State(fake): State<FakeCloudflare>,
    Path((key_id, username)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(refusal) = refuse_unauthorized(&fake, &key_id, &headers) {
        return refusal;
    }
    let mut state = fake.lock();
    let issued = state
        .recorded
        .mints
        .iter()
        .any(|mint| mint.key_id == key_id && mint.username == username);
    if !issued {
        return error(StatusCode::NOT_FOUND, "Credential not found");
    }
    // Revoking again is answered the same way; each call is recorded so a
    // test can count them.
    state.recorded.revoked.push(username);
    StatusCode::NO_CONTENT.into_response()
}

/// The refusal for a request that may not use this key: unknown key id → 404;
/// known key with a missing or wrong bearer token → 401.
fn refuse_unauthorized(fake: &FakeCloudflare, key_id: &str, headers: &HeaderMap) -> Option<Response> {
    let state = fake.lock();
    let Some(expected) = state.keys.get(key_id) else {
        return Some(unknown_key());
    };
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    (presented != Some(expected.as_str())).then(unauthorized)
}

fn unknown_key() -> Response {
    error(StatusCode::NOT_FOUND, "TURN key not found")
}

fn unauthorized() -> Response {
    error(StatusCode::UNAUTHORIZED, "Authentication error")
}

fn rate_limited(retry_after: Option<u64>) -> Response {
    let mut response = error(StatusCode::TOO_MANY_REQUESTS, "Rate limited");
    if let Some(seconds) = retry_after {
        response.headers_mut().insert(RETRY_AFTER, seconds.into());
    }
    response
}

/// Cloudflare's edge bot block: a plain-text body, not JSON.
fn bot_block() -> Response {
    (
        StatusCode::FORBIDDEN,
        [(CONTENT_TYPE, "text/plain; charset=UTF-8")],
        "error code: 1010",
    )
        .into_response()
}

/// Error bodies are undocumented for this API; this is the envelope of
/// Cloudflare's account API, so clients meet something realistic.
fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({
        "success": false,
        "errors": [{ "message": message }],
        "messages": [],
        "result": null,
    });
    (status, axum::Json(body)).into_response()
}
