//! The admin API: writes, deletes, history, rollbacks, model operations and the audit log (the
//! invalidation log's endpoints are in [`super::invalidations`]). Every call needs a bearer token with
//! the right scope; every change is recorded in the audit log.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use shared::domain::{Forecast, ForecastKey, Instrument, ModelRef, Timeframe};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::auth::{Principal, Scope};
use super::error::{AdminErrors, ApiError, ApiResult, BodyErrors, ErrorBody, INVALIDATION_FAILED};
use super::extract::{ApiPath, ApiQuery, JsonBody, forecast_key, page_limit, parse_value};
use super::{AppState, Inner};
use crate::forecasts::{ModelForecast, ModelRollbackResult};
use crate::representation::Rendered;
use crate::storage::{AuditEntry, Expect, StorageError, VersionRecord};

/// How many writes of one batch run at once.
const BATCH_CONCURRENCY: usize = 32;

impl Inner {
    pub(super) fn principal(&self, headers: &HeaderMap, scope: Scope) -> ApiResult<Principal> {
        let principal = self.auth.authenticate(headers)?;
        principal.require(scope)?;
        Ok(principal)
    }

    pub(super) async fn audit(
        &self,
        actor: &Principal,
        action: &str,
        target: String,
        status: StatusCode,
        detail: serde_json::Value,
    ) {
        let entry = AuditEntry {
            at: OffsetDateTime::now_utc(),
            actor: actor.name.clone(),
            action: action.to_owned(),
            target,
            status: status.as_u16(),
            detail,
        };
        self.forecasts.audit(entry).await;
    }

    /// Passes the outcome of a change on. A change stored without its invalidation is answered 503 but
    /// happened all the same, so the audit log records it first.
    async fn changed<T>(
        &self,
        actor: &Principal,
        action: &str,
        target: String,
        outcome: crate::storage::Result<T>,
    ) -> ApiResult<T> {
        if let Err(StorageError::NotInvalidated { key, version, .. }) = &outcome {
            let detail = serde_json::json!({"key": key.to_string(), "version": version, "invalidation": "failed"});
            self.audit(actor, action, target, StatusCode::SERVICE_UNAVAILABLE, detail)
                .await;
        }
        Ok(outcome?)
    }
}

/// The precondition an `If-Match` header asks for (RFC 9110 §13.1.1): `*`, or one of the listed ETags
/// being current. The ETag is compared whole here; the store then checks atomically that its version is
/// still current when the write lands.
async fn expectation(state: &Inner, key: &ForecastKey, headers: &HeaderMap) -> ApiResult<Expect> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(Expect::Any);
    };
    let invalid = || ApiError::bad_request("invalid_if_match", "If-Match must be * or a list of quoted ETags");
    let value = value.to_str().map_err(|_| invalid())?;
    if value.trim() == "*" {
        return Ok(Expect::Exists);
    }
    let tags = entity_tags(value).ok_or_else(invalid)?;
    let current = state.forecasts.current(key).await?;
    current
        // If-Match compares strongly (RFC 9110 §13.1.1): a weak tag never matches.
        .filter(|current| tags.iter().any(|tag| *tag == current.etag))
        .map(|current| Expect::Version(current.version))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                format!("If-Match does not match the current version of {key}"),
            )
        })
}

/// The entity-tags of an `If-Match` or `If-None-Match` list (RFC 9110 §8.8.3, §5.6.1): each `"…"` or
/// `W/"…"`, empty elements skipped (a list may hold none, which no version matches). `None` when it is
/// not such a list.
pub(super) fn entity_tags(value: &str) -> Option<Vec<&str>> {
    let is_tag = |tag: &str| {
        let opaque = tag.strip_prefix("W/").unwrap_or(tag);
        opaque.len() >= 2
            && opaque.starts_with('"')
            && opaque.ends_with('"')
            && opaque[1..opaque.len() - 1]
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b))
    };
    let tags: Vec<&str> = value
        .split(',')
        .map(|tag| tag.trim_matches([' ', '\t']))
        .filter(|tag| !tag.is_empty())
        .collect();
    tags.iter().all(|tag| is_tag(tag)).then_some(tags)
}

fn written(record: &VersionRecord, rendered: &Rendered) -> Response {
    let status = if record.version == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = (status, rendered.representation.body.clone()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(etag) = HeaderValue::from_str(&rendered.etag) {
        headers.insert(header::ETAG, etag);
    }
    let location = format!("{}/versions/{}", record.key().path(), record.version);
    if let Ok(location) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, location);
    }
    response
}

fn checked(forecast: Forecast) -> ApiResult<Forecast> {
    forecast
        .validate()
        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    Ok(forecast)
}

/// Stores a new version of a forecast and makes it current.
#[utoipa::path(
    put,
    path = "/admin/v1/forecasts/{instrument}/{timeframe}",
    tag = "admin",
    security(("bearer" = ["forecasts:write"])),
    params(
        ("instrument" = shared::domain::Instrument, Path, example = "AAPL"),
        ("timeframe" = shared::domain::Timeframe, Path, example = "1h"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^([ \t]*\*[ \t]*|[ \t,]*((W/)?"[\x21\x23-\x7e]*"([ \t]*,[ \t,]*(W/)?"[\x21\x23-\x7e]*")*)?[ \t,]*)$"#, example = r#""7-1f2e3d4c5b6a7988""#, description = "Write only if this ETag (or `*`: any version) is current"),
    ),
    request_body = Forecast,
    responses(
        BodyErrors,
        (status = 201, description = "First version created", body = crate::api::openapi::ForecastDocument),
        (status = 200, description = "New version stored", body = crate::api::openapi::ForecastDocument),
        (status = 400, description = "Malformed JSON, invalid instrument or timeframe, or an If-Match that is not * or a list of ETags", body = ErrorBody),
        (status = 412, description = "If-Match does not match the current version", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 422, description = "The forecast is invalid", body = ErrorBody),
        AdminErrors,
    )
)]
pub async fn put_forecast(
    State(state): State<AppState>,
    ApiPath((instrument, timeframe)): ApiPath<(String, String)>,
    headers: HeaderMap,
    JsonBody(forecast): JsonBody<Forecast>,
) -> ApiResult<Response> {
    let principal = state.principal(&headers, Scope::ForecastsWrite)?;
    let key = forecast_key(&instrument, &timeframe)?;
    let forecast = checked(forecast)?;
    let expect = expectation(&state, &key, &headers).await?;
    let outcome = state.forecasts.write(&key, forecast, expect, &principal.name).await;
    let (record, rendered) = state
        .changed(&principal, "forecast.write", key.to_string(), outcome)
        .await?;
    let response = written(&record, &rendered);
    let detail = serde_json::json!({"version": record.version, "model": record.forecast.model.to_string()});
    state
        .audit(&principal, "forecast.write", key.to_string(), response.status(), detail)
        .await;
    Ok(response)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchWrite {
    #[schema(value_type = String, example = "AAPL")]
    instrument: Instrument,
    #[schema(value_type = String, example = "1h")]
    timeframe: Timeframe,
    forecast: Forecast,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchWriteRequest {
    /// Each item is a `BatchWrite`, checked and written on its own: an item that is not one is answered
    /// in its result (422), and does not stop the others. At most `limits.max_batch_writes` items.
    writes: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchWriteResult {
    /// Position in the request.
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "AAPL:1h")]
    key: Option<ForecastKey>,
    /// The HTTP status this write alone would have had.
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<super::error::ErrorDetail>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchWriteResponse {
    results: Vec<BatchWriteResult>,
}

/// Many writes in one call; each result is reported in order.
#[utoipa::path(
    post,
    path = "/admin/v1/forecasts:batch",
    tag = "admin",
    security(("bearer" = ["forecasts:write"])),
    request_body = BatchWriteRequest,
    responses(
        BodyErrors,
        (status = 200, description = "Every item's outcome", body = BatchWriteResponse),
        (status = 400, description = "Malformed JSON, or more writes than allowed", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 422, description = "The body is not an object with a writes list", body = ErrorBody),
        AdminErrors,
    )
)]
pub async fn batch_write(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<BatchWriteRequest>,
) -> ApiResult<Json<BatchWriteResponse>> {
    let principal = state.principal(&headers, Scope::ForecastsWrite)?;
    if request.writes.len() > state.limits.max_batch_writes {
        return Err(ApiError::bad_request(
            "batch_too_large",
            format!("at most {} writes per batch", state.limits.max_batch_writes),
        ));
    }
    let write_one = |index: usize, item: serde_json::Value| {
        let state = state.clone();
        let actor = principal.name.clone();
        async move {
            let parsed = parse_value::<BatchWrite>(item).and_then(|item| {
                Ok((
                    ForecastKey::new(item.instrument, item.timeframe),
                    checked(item.forecast)?,
                ))
            });
            let (key, forecast) = match parsed {
                Ok(parsed) => parsed,
                Err(error) => return failed(index, None, error),
            };
            match state.forecasts.write(&key, forecast, Expect::Any, &actor).await {
                Ok((record, rendered)) => BatchWriteResult {
                    index,
                    key: Some(key),
                    status: if record.version == 1 { 201 } else { 200 },
                    version: Some(record.version),
                    etag: Some(rendered.etag.clone()),
                    error: None,
                },
                Err(error) => failed(index, Some(key), error.into()),
            }
        }
    };
    let results: Vec<BatchWriteResult> = futures::stream::iter(request.writes.into_iter().enumerate())
        .map(|(index, item)| write_one(index, item))
        .buffered(BATCH_CONCURRENCY)
        .collect()
        .await;
    let written = results.iter().filter(|r| r.version.is_some()).count();
    // Written too, though answered 503: their edges were not told (each message names the version).
    let not_invalidated = results
        .iter()
        .filter(|r| r.error.as_ref().is_some_and(|e| e.code == INVALIDATION_FAILED))
        .count();
    let detail = serde_json::json!({"items": results.len(), "written": written, "not_invalidated": not_invalidated});
    state
        .audit(
            &principal,
            "forecast.batch_write",
            format!("{written} forecasts"),
            StatusCode::OK,
            detail,
        )
        .await;
    Ok(Json(BatchWriteResponse { results }))
}

fn failed(index: usize, key: Option<ForecastKey>, error: ApiError) -> BatchWriteResult {
    BatchWriteResult {
        index,
        key,
        status: error.status.as_u16(),
        version: None,
        etag: None,
        error: Some(super::error::ErrorDetail {
            code: error.code.to_owned(),
            message: error.message,
        }),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    /// The version that was current.
    deleted_version: u64,
}

/// Removes the current version; the history stays, and the next write continues its numbering.
#[utoipa::path(
    delete,
    path = "/admin/v1/forecasts/{instrument}/{timeframe}",
    tag = "admin",
    security(("bearer" = ["forecasts:write"])),
    params(("instrument" = shared::domain::Instrument, Path, example = "AAPL"), ("timeframe" = shared::domain::Timeframe, Path, example = "1h")),
    responses(
        (status = 200, description = "Deleted", body = Deleted),
        (status = 400, description = "Invalid instrument or timeframe", body = ErrorBody),
        (status = 404, description = "No current version", body = ErrorBody),
        AdminErrors,
    )
)]
pub async fn delete_forecast(
    State(state): State<AppState>,
    ApiPath((instrument, timeframe)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Json<Deleted>> {
    let principal = state.principal(&headers, Scope::ForecastsWrite)?;
    let key = forecast_key(&instrument, &timeframe)?;
    let outcome = state.forecasts.delete(&key).await;
    let deleted = state
        .changed(&principal, "forecast.delete", key.to_string(), outcome)
        .await?;
    let Some(deleted_version) = deleted else {
        return Err(ApiError::not_found(format!("no forecast for {key}")));
    };
    let detail = serde_json::json!({"version": deleted_version});
    state
        .audit(&principal, "forecast.delete", key.to_string(), StatusCode::OK, detail)
        .await;
    Ok(Json(Deleted { deleted_version }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionSummary {
    version: u64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: OffsetDateTime,
    created_by: String,
    model: ModelRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    rollback_of: Option<u64>,
    etag: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionHistory {
    #[schema(value_type = String)]
    instrument: Instrument,
    #[schema(value_type = String)]
    timeframe: Timeframe,
    /// The number the last write got.
    latest: u64,
    /// The current version, or null after a delete.
    current: Option<u64>,
    /// Retained versions, newest first.
    versions: Vec<VersionSummary>,
}

/// The retained versions of a forecast, with the model of each.
#[utoipa::path(
    get,
    path = "/admin/v1/forecasts/{instrument}/{timeframe}/versions",
    tag = "admin",
    security(("bearer" = ["forecasts:read"])),
    params(("instrument" = shared::domain::Instrument, Path, example = "AAPL"), ("timeframe" = shared::domain::Timeframe, Path, example = "1h")),
    responses(
        (status = 200, description = "History", body = VersionHistory),
        (status = 400, description = "Invalid instrument or timeframe", body = ErrorBody),
        (status = 404, description = "Never written", body = ErrorBody),
        AdminErrors,
    )
)]
pub async fn versions(
    State(state): State<AppState>,
    ApiPath((instrument, timeframe)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Json<VersionHistory>> {
    state.principal(&headers, Scope::ForecastsRead)?;
    let key = forecast_key(&instrument, &timeframe)?;
    let history = state.forecasts.history(&key).await?;
    if history.latest == 0 {
        return Err(ApiError::not_found(format!("{key} was never written")));
    }
    let versions = history
        .versions
        .iter()
        .map(|v| VersionSummary {
            version: v.version,
            created_at: v.created_at,
            created_by: v.created_by.clone(),
            model: v.forecast.model.clone(),
            rollback_of: v.rollback_of,
            etag: Rendered::new(v).etag,
        })
        .collect();
    Ok(Json(VersionHistory {
        instrument: key.instrument,
        timeframe: key.timeframe,
        latest: history.latest,
        current: history.current,
        versions,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The version whose content becomes current again (as a new version).
    #[schema(minimum = 1, example = 3)]
    to_version: u64,
}

/// Makes an old version's content current again, as a new version, so ETags stay monotonic.
#[utoipa::path(
    post,
    path = "/admin/v1/forecasts/{instrument}/{timeframe}/rollback",
    tag = "admin",
    security(("bearer" = ["forecasts:write"])),
    params(("instrument" = shared::domain::Instrument, Path, example = "AAPL"), ("timeframe" = shared::domain::Timeframe, Path, example = "1h")),
    request_body = RollbackRequest,
    responses(
        BodyErrors,
        (status = 200, description = "The new current version", body = crate::api::openapi::ForecastDocument),
        (status = 400, description = "Malformed JSON, invalid instrument or timeframe", body = ErrorBody),
        (status = 404, description = "No such version", body = ErrorBody),
        (status = 410, description = "That version was trimmed", body = ErrorBody),
        (status = 422, description = "to_version missing or not a positive integer", body = ErrorBody),
        AdminErrors,
    )
)]
pub async fn rollback(
    State(state): State<AppState>,
    ApiPath((instrument, timeframe)): ApiPath<(String, String)>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<RollbackRequest>,
) -> ApiResult<Response> {
    let principal = state.principal(&headers, Scope::ForecastsWrite)?;
    let key = forecast_key(&instrument, &timeframe)?;
    if request.to_version == 0 {
        return Err(ApiError::unprocessable("to_version must be 1 or more"));
    }
    let outcome = state
        .forecasts
        .rollback(&key, request.to_version, &principal.name)
        .await;
    let (record, rendered) = state
        .changed(&principal, "forecast.rollback", key.to_string(), outcome)
        .await?;
    let mut response = written(&record, &rendered);
    *response.status_mut() = StatusCode::OK;
    let detail = serde_json::json!({"to_version": request.to_version, "new_version": record.version});
    state
        .audit(&principal, "forecast.rollback", key.to_string(), StatusCode::OK, detail)
        .await;
    Ok(response)
}

fn model_ref(id: &str, version: &str) -> ApiResult<ModelRef> {
    ModelRef::new(id, version).map_err(|e| ApiError::bad_request("invalid_model", e.to_string()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelForecasts {
    model: ModelRef,
    forecasts: Vec<ModelForecast>,
}

/// Every forecast a model version produced (among retained versions).
#[utoipa::path(
    get,
    path = "/admin/v1/models/{model_id}/{model_version}/forecasts",
    tag = "admin",
    security(("bearer" = ["forecasts:read"])),
    params(("model_id" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$", example = "lstm"), ("model_version" = String, Path, pattern = "^[A-Za-z0-9._+-]{1,64}$", example = "3.2.0")),
    responses(
        (status = 200, description = "Forecasts with versions by this model", body = ModelForecasts),
        (status = 400, description = "Invalid model id or version", body = ErrorBody),
        AdminErrors,
    )
)]
pub async fn model_forecasts(
    State(state): State<AppState>,
    ApiPath((id, version)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Json<ModelForecasts>> {
    state.principal(&headers, Scope::ForecastsRead)?;
    let model = model_ref(&id, &version)?;
    let forecasts = state.forecasts.model_forecasts(&model).await?;
    Ok(Json(ModelForecasts { model, forecasts }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelRollbackResponse {
    model: ModelRef,
    results: Vec<ModelRollbackResult>,
}

/// Rolls every forecast whose current version this model made back to the previous model's version.
#[utoipa::path(
    post,
    path = "/admin/v1/models/{model_id}/{model_version}/rollback",
    tag = "admin",
    security(("bearer" = ["forecasts:write"])),
    params(("model_id" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$", example = "lstm"), ("model_version" = String, Path, pattern = "^[A-Za-z0-9._+-]{1,64}$", example = "3.2.0")),
    responses(
        (status = 200, description = "What happened to each forecast", body = ModelRollbackResponse),
        (status = 400, description = "Invalid model id or version", body = ErrorBody),
        AdminErrors,
    )
)]
pub async fn model_rollback(
    State(state): State<AppState>,
    ApiPath((id, version)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Json<ModelRollbackResponse>> {
    let principal = state.principal(&headers, Scope::ForecastsWrite)?;
    let model = model_ref(&id, &version)?;
    let outcome = state.forecasts.model_rollback(&model, &principal.name).await;
    let results = state
        .changed(&principal, "model.rollback", model.to_string(), outcome)
        .await?;
    let detail = serde_json::to_value(&results).unwrap_or_default();
    state
        .audit(&principal, "model.rollback", model.to_string(), StatusCode::OK, detail)
        .await;
    Ok(Json(ModelRollbackResponse { model, results }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// How many entries, newest first (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    entries: Vec<AuditEntry>,
}

/// The newest admin actions: who, what, when.
#[utoipa::path(
    get,
    path = "/admin/v1/audit",
    tag = "admin",
    security(("bearer" = ["audit:read"])),
    params(AuditQuery),
    responses(
        (status = 200, description = "Entries, newest first", body = AuditPage),
        (status = 400, description = "limit out of range", body = ErrorBody),
        AdminErrors,
    )
)]
pub async fn audit(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<AuditQuery>,
    headers: HeaderMap,
) -> ApiResult<Json<AuditPage>> {
    state.principal(&headers, Scope::AuditRead)?;
    let limit = page_limit(query.limit)?;
    let entries = state.forecasts.audit_log(limit.get()).await?;
    Ok(Json(AuditPage { entries }))
}

#[cfg(test)]
mod tests {
    use super::entity_tags;

    const BAD: &[&str] = &[
        "a",
        r#""a"#,
        r#"W/a"#,
        r#""a b""#,
        r#""a"x"#,
        "null",
        r#""a"" "#,
        r#"*, "a""#,
        "**",
        r#"w/"a""#,
    ];

    #[test]
    fn if_match_lists_are_quoted_entity_tags() {
        assert_eq!(entity_tags(r#""a""#), Some(vec![r#""a""#]));
        assert_eq!(
            entity_tags(r#" "a" , W/"b",, "" "#),
            Some(vec![r#""a""#, r#"W/"b""#, r#""""#])
        );
        for empty in ["", " ", ",", " ,\t, "] {
            assert_eq!(entity_tags(empty), Some(vec![]), "{empty:?}");
        }
        for bad in BAD {
            assert_eq!(entity_tags(bad), None, "{bad:?}");
        }
    }

    /// The document's pattern for If-Match admits exactly what the handler reads: `*` or a list.
    #[test]
    fn the_documented_if_match_grammar_is_the_one_read() {
        let pattern =
            super::super::openapi::parameter_pattern("/admin/v1/forecasts/{instrument}/{timeframe}", "put", "If-Match");
        let good = [
            "*",
            " * ",
            r#""a""#,
            r#"W/"b", "c""#,
            r#" "a" , W/"b",, "" "#,
            "",
            " ,\t, ",
        ];
        for value in good.iter().chain(BAD) {
            let read = value.trim() == "*" || entity_tags(value).is_some();
            assert_eq!(pattern.is_match(value), read, "{value:?}");
        }
    }
}
