//! Operations endpoints: liveness, readiness, metrics and the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::auth::Scope;
use super::error::{ApiError, ApiResult, ErrorBody};

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    status: &'static str,
    /// Storage backend: `redis` or `embedded`.
    #[schema(example = "embedded")]
    storage: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok",
        storage: state.forecasts.store().backend(),
    })
}

/// The origin can serve reads and writes: its storage answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses((status = 200, body = Health), (status = 503, description = "Storage unreachable", body = ErrorBody))
)]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Health>> {
    let store = state.forecasts.store();
    store
        .ping()
        .await
        .map_err(|error| ApiError::unavailable(format!("not ready: {error}")))?;
    Ok(Json(Health {
        status: "ready",
        storage: store.backend(),
    }))
}

/// Prometheus metrics in the text format: open, or with `auth.public_metrics = false` for tokens with
/// `metrics:read` only (the labels name edges and routes).
#[utoipa::path(get, path = "/metrics", tag = "operations", security((), ("bearer" = ["metrics:read"])),
    responses(
        (status = 200, content_type = "text/plain"),
        (status = 401, description = "Metrics are not public and no valid token was given", body = ErrorBody),
        (status = 403, description = "The token lacks metrics:read", body = ErrorBody),
    ))]
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    if !state.limits.public_metrics {
        state.principal(&headers, Scope::MetricsRead)?;
    }
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    Ok(response)
}

/// This document, with the limits this origin is configured with.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, content_type = "application/json")))]
pub async fn openapi(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(super::openapi::document(&state.limits, state.streams.max_batch.get()))
}
