//! The control plane in the admin API: append purges for every edge to apply in order, list them, see
//! where each stands at the edges, and push responses to edges ahead of their reads.

use std::num::NonZeroUsize;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use shared::time::from_unix_ms;
use shared::wire::{Invalidate, MAX_KEY_BYTES};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::AppState;
use super::auth::Scope;
use super::error::{AdminErrors, ApiError, ApiResult, BodyErrors, ErrorBody};
use super::extract::{ApiPath, ApiQuery, JsonBody, MAX_PAGE, page_limit, whole_number};
use crate::control::{Application, EdgeStatus};
use crate::invalidation::{Cause, InvalidationBody};
use crate::warming::Warmed;

/// The longest `?wait=` of `POST /admin/v1/invalidations`.
const MAX_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// The invalidation's id, for `GET /admin/v1/invalidations/{id}`: its place in the log.
    #[schema(example = 42)]
    id: u64,
    /// Its sequence in the log: edges apply, acknowledge and resume by it (the same number as `id`).
    #[schema(example = 42)]
    seq: u64,
    /// How many selectors it holds (`all` stands alone).
    #[schema(example = 4)]
    selectors: usize,
    /// With `?wait=`: which edges connected to this origin applied it within the wait.
    #[serde(skip_serializing_if = "Option::is_none")]
    propagation: Option<Propagation>,
}

/// Where an invalidation stands at the edges connected to this origin.
#[derive(Debug, Serialize, ToSchema)]
pub struct Propagation {
    /// Every connected edge has applied it.
    complete: bool,
    applied: Vec<Application>,
    pending: Vec<Application>,
}

impl Propagation {
    fn of(edges: &crate::control::Edges, sequence: u64) -> Self {
        let (applied, pending) = edges.applications(sequence).into_iter().partition(|a| a.applied);
        let pending: Vec<Application> = pending;
        Self {
            complete: pending.is_empty(),
            applied,
            pending,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CreateQuery {
    /// Answer only once every edge connected to this origin has applied it, or this long has passed:
    /// whole milliseconds (`250ms`) or seconds (`2s`), at most 30 s. The answer says which edges have not.
    #[param(value_type = Option<String>, pattern = r"^((0|[1-9][0-9]{0,3}|[12][0-9]{4}|30000)ms|(0|[1-9]|[12][0-9]|30)s)$", example = "250ms")]
    wait: Option<String>,
}

/// A `?wait=`: whole milliseconds or seconds, up to [`MAX_WAIT`].
fn wait_of(raw: &str) -> ApiResult<Duration> {
    let (digits, unit) = match raw.strip_suffix("ms") {
        Some(digits) => (digits, Duration::from_millis(1)),
        None => (raw.strip_suffix('s').unwrap_or(""), Duration::from_secs(1)),
    };
    let count = Some(digits)
        .filter(|d| !d.is_empty() && d.len() <= 5 && d.bytes().all(|b| b.is_ascii_digit()))
        .filter(|d| *d == "0" || !d.starts_with('0'))
        .and_then(|d| d.parse::<u32>().ok());
    count
        .map(|count| unit * count)
        .filter(|wait| *wait <= MAX_WAIT)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_wait",
                format!(
                    "wait {raw:?} must be whole milliseconds (250ms) or seconds (2s), at most {}s",
                    MAX_WAIT.as_secs()
                ),
            )
        })
}

/// Appends an invalidation to the durable log, for every edge to apply in order. Answered once it is
/// durable (202), or with `?wait=` once every connected edge has applied it (200) or the wait is over
/// (202, naming the edges still pending).
#[utoipa::path(operation_id = "create_invalidation",
    post,
    path = "/admin/v1/invalidations",
    tag = "admin",
    security(("bearer" = ["invalidations:write"])),
    params(CreateQuery),
    request_body = InvalidationBody,
    responses(
        BodyErrors,
        (status = 200, description = "Logged, and applied by every edge connected to this origin (with ?wait=)", body = Accepted),
        (status = 202, description = "Logged; edges apply it in sequence order", body = Accepted),
        (status = 400, description = "Malformed JSON or wait", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 422, description = "No selector, an invalid one, or more than 1000", body = ErrorBody),
        AdminErrors,
    )
)]
pub async fn create(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<CreateQuery>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<InvalidationBody>,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    let principal = state.principal(&headers, Scope::InvalidationsWrite)?;
    let wait = query.wait.as_deref().map(wait_of).transpose()?;
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
    let mut status = StatusCode::ACCEPTED;
    let propagation = match wait {
        Some(wait) => {
            let deadline = tokio::time::Instant::now() + wait;
            if state.edges.wait_applied(sequence, deadline).await {
                status = StatusCode::OK;
            }
            Some(Propagation::of(&state.edges, sequence))
        }
        None => None,
    };
    Ok((
        status,
        Json(Accepted {
            id: sequence,
            seq: sequence,
            selectors: count,
            propagation,
        }),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// The invalidations after this sequence (default: from the oldest kept).
    #[param(value_type = Option<u64>)]
    after: Option<String>,
    /// How many, oldest first (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
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
    #[schema(value_type = super::openapi::InvalidationFields)]
    selectors: InvalidationBody,
}

impl From<&Invalidate> for LoggedInvalidation {
    fn from(message: &Invalidate) -> Self {
        Self {
            sequence: message.sequence,
            issued_at: from_unix_ms(message.issued_at_ms),
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
#[utoipa::path(operation_id = "list_invalidations", 
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
    let after = query
        .after
        .as_deref()
        .map(|raw| {
            whole_number(raw).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_after",
                    format!("after {raw:?} must be a sequence (a whole number)"),
                )
            })
        })
        .transpose()?;
    let page = state.forecasts.invalidation_log(after, limit).await?;
    Ok(Json(InvalidationLog {
        invalidations: page.records.iter().map(LoggedInvalidation::from).collect(),
        head: page.head,
        trimmed: page.trimmed,
    }))
}

/// One invalidation and where it stands at each edge connected to this origin.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvalidationStatus {
    id: u64,
    #[serde(flatten)]
    invalidation: LoggedInvalidation,
    #[serde(flatten)]
    propagation: Propagation,
}

/// An invalidation from the log, and which of the edges connected to this origin have applied it
/// (with the time each took, for those acknowledged on their current connection).
#[utoipa::path(operation_id = "show_invalidation", 
    get,
    path = "/admin/v1/invalidations/{id}",
    tag = "admin",
    security(("bearer" = ["invalidations:read"])),
    params(("id" = u64, Path, minimum = 1, description = "The id (sequence) `POST /admin/v1/invalidations` answered", example = 42)),
    responses(
        (status = 200, description = "The invalidation, the edges that applied it and those still pending", body = InvalidationStatus),
        (status = 400, description = "The id is not a positive integer", body = ErrorBody),
        (status = 404, description = "No such invalidation in the log", body = ErrorBody),
        (status = 410, description = "Trimmed from the log (retention)", body = ErrorBody),
        AdminErrors,
    )
)]
pub async fn show(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
    headers: HeaderMap,
) -> ApiResult<Json<InvalidationStatus>> {
    state.principal(&headers, Scope::InvalidationsRead)?;
    let id = whole_number(&raw).filter(|&id| id > 0).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_id",
            format!("invalidation id {raw:?} must be a positive integer"),
        )
    })?;
    let page = state
        .forecasts
        .invalidation_log(Some(id - 1), NonZeroUsize::MIN)
        .await?;
    let Some(record) = page.records.first().filter(|record| record.sequence == id) else {
        if page.trimmed {
            return Err(ApiError::new(
                StatusCode::GONE,
                "invalidation_trimmed",
                format!("invalidation {id} was trimmed from the log"),
            ));
        }
        return Err(ApiError::not_found(format!("no invalidation {id} in the log")));
    };
    Ok(Json(InvalidationStatus {
        id,
        invalidation: LoggedInvalidation::from(record),
        propagation: Propagation::of(&state.edges, id),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EdgeList {
    /// The edges connected to this origin over the control plane now.
    edges: Vec<EdgeStatus>,
    /// The newest sequence in the log: an edge whose `acked` equals it has applied every invalidation.
    head: Option<u64>,
}

/// The edges connected to this origin's control plane: identity, the last invalidation each confirmed
/// and its lag behind the log, round-trip time, and its cache summary. An invalidation is applied
/// everywhere once every edge's `acked` has reached its sequence.
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
    let head = state.forecasts.invalidation_log(None, NonZeroUsize::MIN).await?.head;
    Ok(Json(EdgeList {
        edges: state.edges.list_at(head),
        head,
    }))
}

/// What to push to edges now.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"keys": ["/v1/forecasts/AAPL/1h"], "prefixes": ["/v1/forecasts/MSFT"]}))]
pub struct WarmBody {
    /// Paths (path and query) to push, such as `/v1/forecasts/AAPL/1h`.
    #[serde(default)]
    #[schema(schema_with = forecast_reads)]
    keys: Vec<String>,
    /// Every hot path (configured, or reported by edges) under each of these; a prefix naming an
    /// instrument (`/v1/forecasts/MSFT`) also pushes its list and each of its forecasts.
    #[serde(default)]
    #[schema(schema_with = forecast_reads)]
    prefixes: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WarmReport {
    /// Each path rendered, and whether it was pushed (200 responses only).
    warmed: Vec<Warmed>,
    /// Edges connected to this origin, each sent every push.
    edges: usize,
}

/// Renders paths as a read would and pushes the responses to every edge connected to this origin,
/// so that their next reads are hits.
#[utoipa::path(
    post,
    path = "/admin/v1/warm",
    tag = "admin",
    security(("bearer" = ["invalidations:write"])),
    request_body = WarmBody,
    responses(
        BodyErrors,
        (status = 200, description = "What was rendered and pushed", body = WarmReport),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 422, description = "No key or prefix, one that is not a path, or more than 1000", body = ErrorBody),
        AdminErrors,
    )
)]
pub async fn warm(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<WarmBody>,
) -> ApiResult<Json<WarmReport>> {
    let principal = state.principal(&headers, Scope::InvalidationsWrite)?;
    if body.keys.is_empty() && body.prefixes.is_empty() {
        return Err(ApiError::unprocessable(
            "warming needs at least one of keys or prefixes",
        ));
    }
    if body.keys.len() + body.prefixes.len() > MAX_PAGE {
        return Err(ApiError::unprocessable(format!(
            "at most {MAX_PAGE} keys and prefixes together"
        )));
    }
    for (field, paths) in [("keys", &body.keys), ("prefixes", &body.prefixes)] {
        if let Some(index) = paths.iter().position(|p| !is_request_path(p)) {
            return Err(ApiError::unprocessable(format!(
                "{field}[{index}] must start with / and hold only visible ASCII, at most {MAX_KEY_BYTES} bytes"
            )));
        }
        // Only forecast reads are cacheable: anything else (a stream that never ends, an admin path) is
        // nothing an edge could store.
        if let Some(index) = paths.iter().position(|p| !is_forecast_read(p)) {
            return Err(ApiError::unprocessable(format!(
                "{field}[{index}] is not a cacheable read: warming takes paths under /v1/forecasts"
            )));
        }
    }
    let warmed = state.warming.on_demand(&body.keys, &body.prefixes).await?;
    let detail = serde_json::json!({"keys": body.keys, "prefixes": body.prefixes, "warmed": warmed});
    state
        .audit(&principal, "warm", "edges".to_owned(), StatusCode::OK, detail)
        .await;
    Ok(Json(WarmReport {
        warmed,
        edges: state.edges.list().len(),
    }))
}

/// Paths warming takes: forecast reads (at most [`MAX_PAGE`] in each list, and in both together).
fn forecast_reads() -> utoipa::openapi::schema::Array {
    let path = shared::openapi::text("^/v1/forecasts([/?][\\x21-\\x7e]*)?$", MAX_KEY_BYTES);
    shared::openapi::list(path, 0, MAX_PAGE).build()
}

/// A forecast read: `/v1/forecasts` itself, or below it, with or without a query.
fn is_forecast_read(path: &str) -> bool {
    path.strip_prefix("/v1/forecasts")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'))
}

/// A path and query as a client requests it.
fn is_request_path(path: &str) -> bool {
    path.starts_with('/') && path.len() <= MAX_KEY_BYTES && path.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::{MAX_WAIT, wait_of};

    /// The document's pattern for `?wait=` admits exactly what the handler takes.
    #[test]
    fn the_documented_wait_grammar_is_the_one_read() {
        let pattern = super::super::openapi::parameter_pattern("/admin/v1/invalidations", "post", "wait");
        let samples = [
            "0ms", "0s", "1ms", "250ms", "9999ms", "29999ms", "30000ms", "30001ms", "39999ms", "99999ms", "100000ms",
            "1s", "9s", "29s", "30s", "31s", "99s", "00s", "01s", "0250ms", "", "s", "ms", "1", "1m", "1 s", "+1s",
            "-1s", "1.5s", "1sec", "1S",
        ];
        for sample in samples {
            assert_eq!(pattern.is_match(sample), wait_of(sample).is_ok(), "{sample:?}");
        }
        assert_eq!(wait_of("30s").unwrap(), MAX_WAIT);
        assert_eq!(wait_of("250ms").unwrap().as_millis(), 250);
    }
}
