//! The invalidation log in the admin API: append purges for every edge to apply in order, and list them.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use shared::wire::Invalidate;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::AppState;
use super::auth::Scope;
use super::error::{AdminErrors, ApiError, ApiResult, ErrorBody};
use super::extract::{ApiQuery, JsonBody, page_limit};
use crate::control::EdgeStatus;
use crate::invalidation::{Cause, InvalidationBody};

#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// The invalidation's place in the log: edges apply, acknowledge and resume by it.
    #[schema(example = 42)]
    sequence: u64,
    /// How many selectors it holds (`all` stands alone).
    #[schema(example = 4)]
    selectors: usize,
}

/// Appends an invalidation to the durable log, for every edge to apply in order. Answered once it is
/// durable, before edges have applied it.
#[utoipa::path(
    post,
    path = "/admin/v1/invalidations",
    tag = "admin",
    security(("bearer" = ["invalidations:write"])),
    request_body = InvalidationBody,
    responses(
        (status = 202, description = "Logged; edges apply it in sequence order", body = Accepted),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 422, description = "No selector, an invalid one, or more than 1000", body = ErrorBody),
        AdminErrors,
    )
)]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<InvalidationBody>,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    let principal = state.principal(&headers, Scope::InvalidationsWrite)?;
    let selectors = body
        .selectors()
        .map_err(|error| ApiError::unprocessable(error.to_string()))?;
    let count = selectors.len();
    let sequence = state.forecasts.invalidate(Cause::Api, selectors, body.soft).await?;
    let detail = serde_json::json!({"sequence": sequence, "selectors": count, "soft": body.soft});
    state
        .audit(
            &principal,
            "invalidation.create",
            format!("invalidation {sequence}"),
            StatusCode::ACCEPTED,
            detail,
        )
        .await;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            sequence,
            selectors: count,
        }),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// The invalidations after this sequence (default: from the oldest kept).
    after: Option<u64>,
    /// How many, oldest first (1 to 1000, default 100).
    limit: Option<usize>,
}

/// One logged invalidation: its sequence, when it was accepted, and what it purges.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoggedInvalidation {
    sequence: u64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    issued_at: OffsetDateTime,
    #[serde(flatten)]
    selectors: InvalidationBody,
}

impl From<&Invalidate> for LoggedInvalidation {
    fn from(message: &Invalidate) -> Self {
        let nanos = i128::from(message.issued_at_ms) * 1_000_000;
        Self {
            sequence: message.sequence,
            issued_at: OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH),
            selectors: InvalidationBody::from_message(message),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvalidationLog {
    /// Oldest first.
    invalidations: Vec<LoggedInvalidation>,
    /// The newest sequence in the log; null while it never held one.
    head: Option<u64>,
    /// Invalidations after `after` were trimmed from the log (retention): a cache that has applied up to
    /// `after` cannot catch up from here, and must drop everything and continue from `head`.
    trimmed: bool,
}

/// The invalidation log, oldest first, from a sequence on.
#[utoipa::path(
    get,
    path = "/admin/v1/invalidations",
    tag = "admin",
    security(("bearer" = ["invalidations:read"])),
    params(LogQuery),
    responses(
        (status = 200, description = "Invalidations after `after`, the head, and whether some were trimmed", body = InvalidationLog),
        (status = 400, description = "after or limit out of range", body = ErrorBody),
        AdminErrors,
    )
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<LogQuery>,
    headers: HeaderMap,
) -> ApiResult<Json<InvalidationLog>> {
    state.principal(&headers, Scope::InvalidationsRead)?;
    let limit = page_limit(query.limit)?;
    let page = state.forecasts.invalidation_log(query.after, limit).await?;
    Ok(Json(InvalidationLog {
        invalidations: page.records.iter().map(LoggedInvalidation::from).collect(),
        head: page.head,
        trimmed: page.trimmed,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EdgeList {
    /// The edges connected to this origin over the control plane now.
    edges: Vec<EdgeStatus>,
    /// The newest sequence in the log: an edge whose `acked` equals it has applied every invalidation.
    head: Option<u64>,
}

/// The edges connected to this origin's control plane, and the last invalidation each confirmed: an
/// invalidation is applied everywhere once every edge's `acked` has reached its sequence.
#[utoipa::path(
    get,
    path = "/admin/v1/edges",
    tag = "admin",
    security(("bearer" = ["invalidations:read"])),
    responses(
        (status = 200, description = "Connected edges and what each confirmed", body = EdgeList),
        AdminErrors,
    )
)]
pub async fn edges(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Json<EdgeList>> {
    state.principal(&headers, Scope::InvalidationsRead)?;
    let head = state
        .forecasts
        .invalidation_log(None, std::num::NonZeroUsize::MIN)
        .await?
        .head;
    Ok(Json(EdgeList {
        edges: state.edges.list(),
        head,
    }))
}
