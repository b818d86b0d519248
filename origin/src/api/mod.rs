//! The HTTP API: routing, shared state, and the layer that counts and times every request.

pub mod admin;
pub mod auth;
pub mod error;
pub mod events;
pub mod extract;
pub mod invalidations;
pub mod openapi;
pub mod ops;
pub mod read;
pub mod refusals;
pub mod strict_json;
pub mod tokens;
pub mod webhooks;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

use self::auth::{Authenticator, Scope};
use self::error::{ApiError, ApiResult};
use crate::control::Edges;
use crate::forecasts::Forecasts;
use crate::metrics::Metrics;
use crate::representation::{CachePolicy, Representation};
use crate::warming::Warming;

/// Limits the API enforces, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_batch_reads: usize,
    pub max_batch_writes: usize,
    pub public_reads: bool,
    pub public_metrics: bool,
}

#[cfg(test)]
impl Limits {
    pub fn for_tests() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_batch_reads: 100,
            max_batch_writes: 500,
            public_reads: true,
            public_metrics: true,
        }
    }
}

#[derive(Debug)]
pub struct Inner {
    pub forecasts: Arc<Forecasts>,
    /// Edges connected to the control plane (none while it is off).
    pub edges: Edges,
    pub warming: Arc<Warming>,
    pub events: Arc<crate::events::Events>,
    pub streams: events::StreamSettings,
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    pub auth: Arc<Authenticator>,
    pub policy: CachePolicy,
    pub limits: Limits,
    pub metrics: Metrics,
    pub refusals: refusals::Refusals,
    /// The background tasks, stopped with the origin.
    pub tasks: crate::tasks::Tasks,
}

pub type AppState = Arc<Inner>;

impl Inner {
    /// Reads are open unless configured otherwise.
    fn authorize_read(&self, headers: &HeaderMap) -> ApiResult<()> {
        if self.limits.public_reads {
            return Ok(());
        }
        self.auth.authenticate(headers)?.require(Scope::ForecastsRead)
    }

    /// 304 when the request's validators match, the full representation otherwise.
    fn respond(&self, representation: &Representation, request: &HeaderMap) -> Response {
        let mut response = if representation.not_modified(request) {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            response
        } else {
            Response::new(Body::from(representation.body.clone()))
        };
        *response.headers_mut() = representation.headers(&self.policy, SystemTime::now());
        response
    }
}

pub fn router(state: AppState) -> Router {
    let max_body = state.limits.max_body_bytes;
    Router::new()
        .route("/v1/forecasts", get(read::batch))
        .route("/v1/forecasts/{instrument}", get(read::instrument_forecasts))
        .route("/v1/forecasts/{instrument}/{timeframe}", get(read::current))
        .route(
            "/v1/forecasts/{instrument}/{timeframe}/versions/{version}",
            get(read::version),
        )
        .route("/admin/v1/forecasts:batch", post(admin::batch_write))
        .route(
            "/admin/v1/forecasts/{instrument}/{timeframe}",
            put(admin::put_forecast).delete(admin::delete_forecast),
        )
        .route(
            "/admin/v1/forecasts/{instrument}/{timeframe}/versions",
            get(admin::versions),
        )
        .route(
            "/admin/v1/forecasts/{instrument}/{timeframe}/rollback",
            post(admin::rollback),
        )
        .route(
            "/admin/v1/models/{model_id}/{model_version}/forecasts",
            get(admin::model_forecasts),
        )
        .route(
            "/admin/v1/models/{model_id}/{model_version}/rollback",
            post(admin::model_rollback),
        )
        .route("/admin/v1/audit", get(admin::audit))
        .route(
            "/admin/v1/invalidations",
            post(invalidations::create).get(invalidations::list),
        )
        .route("/admin/v1/invalidations/{id}", get(invalidations::show))
        .route("/admin/v1/edges", get(invalidations::edges))
        .route("/admin/v1/warm", post(invalidations::warm))
        .route("/admin/v1/events", post(events::publish))
        .route("/admin/v1/events:batch", post(events::publish_batch))
        .route("/admin/v1/subscribers", get(events::subscribers))
        .route("/v1/stream", get(events::stream))
        .route("/admin/v1/webhooks", post(webhooks::create).get(webhooks::list))
        .route(
            "/admin/v1/webhooks/{id}",
            get(webhooks::show).patch(webhooks::update).delete(webhooks::delete),
        )
        .route("/admin/v1/webhooks/{id}/secret:rotate", post(webhooks::rotate_secret))
        .route("/admin/v1/webhooks/{id}/stats", get(webhooks::stats))
        .route("/admin/v1/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route("/admin/v1/webhooks/{id}/dead-letters", get(webhooks::dead_letters))
        .route("/admin/v1/webhooks/{id}/dead-letters:redrive", post(webhooks::redrive))
        .route(
            "/admin/v1/webhooks/{id}/messages/{event_id}/resend",
            post(webhooks::resend),
        )
        .route("/admin/v1/webhooks/{id}/replay", post(webhooks::replay))
        .route("/admin/v1/tokens", post(tokens::create).get(tokens::list))
        .route("/admin/v1/tokens/{id}", axum::routing::delete(tokens::revoke))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see /openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}

/// Every `/admin/` request is authenticated before anything reads its body, so a caller without a
/// valid token learns nothing about what the body should be (401, not a schema error). Refusals of any
/// request (401, 403) reach the audit log, at most [`refusals::PER_SECOND`] a second.
async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let admin = request.uri().path().starts_with("/admin/");
    let refusal = |status, actor: Option<String>, method: &Method, uri: &Uri, remote| refusals::Refusal {
        actor: actor.unwrap_or_else(|| "unauthenticated".to_owned()),
        method: method.to_string(),
        path: uri.path().to_owned(),
        remote,
        status,
    };
    let remote = crate::serve::remote_of(&request);
    if admin && let Err(error) = state.auth.authenticate(request.headers()) {
        let refused = refusal(error.status, None, request.method(), request.uri(), remote);
        state.refusals.record(&state.forecasts, refused).await;
        return error.into_response();
    }
    // Kept for the rare refusal: cheap clones (the URI and the header share their bytes).
    let (method, uri) = (request.method().clone(), request.uri().clone());
    let authorization = request.headers().get(header::AUTHORIZATION).cloned();
    let response = next.run(request).await;
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        let mut presented = HeaderMap::new();
        if let Some(authorization) = authorization {
            presented.insert(header::AUTHORIZATION, authorization);
        }
        let actor = state.auth.authenticate(&presented).ok().map(|principal| principal.name);
        let refused = refusal(status, actor, &method, &uri, remote);
        state.refusals.record(&state.forecasts, refused).await;
    }
    response
}

/// Counts and times every request by its route template, never by its raw path.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    let metrics = &state.metrics;
    metrics
        .http_duration
        .with_label_values(&[route])
        .observe(started.elapsed().as_secs_f64());
    metrics
        .http_requests
        .with_label_values(&[route, method.as_str(), response.status().as_str()])
        .inc();
    response
}
