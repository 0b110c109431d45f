//! `/_fake/…`: control endpoints for tests that run the fake as a separate
//! process. Not part of Cloudflare's API.

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;

use crate::fault::{ActiveFault, FaultRequest};
use crate::{FakeCloudflare, Fault, Recorded};

pub(crate) fn router(fake: FakeCloudflare) -> Router {
    Router::new()
        .route("/_fake/state", get(state))
        .route("/_fake/keys", post(add_key))
        .route("/_fake/fault", put(set_fault).delete(clear_fault))
        .route("/_fake/reset", post(reset))
        .with_state(fake)
}

async fn state(State(fake): State<FakeCloudflare>) -> Json<Recorded> {
    Json(fake.recorded())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyRequest {
    key_id: String,
    token: String,
}

async fn add_key(
    State(fake): State<FakeCloudflare>,
    body: Result<Json<KeyRequest>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(key)) => {
            fake.add_key(&key.key_id, &key.token);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(rejection) => (StatusCode::BAD_REQUEST, rejection.body_text()).into_response(),
    }
}

async fn set_fault(
    State(fake): State<FakeCloudflare>,
    body: Result<Json<FaultRequest>, JsonRejection>,
) -> Response {
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => return (StatusCode::BAD_REQUEST, rejection.body_text()).into_response(),
    };
    if let Fault::ServerError { status } = request.fault
        && StatusCode::from_u16(status).is_err()
    {
        return (StatusCode::BAD_REQUEST, format!("invalid status {status}")).into_response();
    }
    fake.lock().fault = ActiveFault::new(request.fault, request.times);
    StatusCode::NO_CONTENT.into_response()
}

async fn clear_fault(State(fake): State<FakeCloudflare>) -> StatusCode {
    fake.clear_fault();
    StatusCode::NO_CONTENT
}

async fn reset(State(fake): State<FakeCloudflare>) -> StatusCode {
    fake.reset();
    StatusCode::NO_CONTENT
}
