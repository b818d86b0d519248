//! The public read API: what edges and readers fetch.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use shared::domain::ForecastKey;

use super::AppState;
use super::error::{ApiResult, ErrorBody, ReadErrors};
use super::extract::{ApiPath, ApiQuery, forecast_key, instrument, version_number};
use crate::reads::{Read, Through, batch_keys};

/// The current version of one forecast.
#[utoipa::path(
    get,
    path = "/v1/forecasts/{instrument}/{timeframe}",
    tag = "read",
    params(
        ("instrument" = shared::domain::Instrument, Path, description = "1 to 4 parts of A-Z a-z 0-9 _ - joined by single dots, at most 32 bytes (case-insensitive)", example = "AAPL"),
        ("timeframe" = shared::domain::Timeframe, Path, example = "1h"),
    ),
    security((), ("bearer" = ["forecasts:read"])),
    responses(
        ReadErrors,
        (status = 200, description = "The current version, with ETag, Last-Modified, Cache-Control, CDN-Cache-Control and Surrogate-Key", body = crate::api::openapi::ForecastDocument),
        (status = 304, description = "Not modified (If-None-Match / If-Modified-Since)"),
        (status = 400, description = "Invalid instrument or timeframe", body = ErrorBody),
        (status = 404, description = "No current version", body = ErrorBody),
        (status = 503, description = "Storage unavailable and nothing cached", body = ErrorBody),
    )
)]
pub async fn current(
    State(state): State<AppState>,
    ApiPath((instrument, timeframe)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    state.authorize_read(&headers)?;
    answer(&state, Read::Current(forecast_key(&instrument, &timeframe)?), &headers).await
}

/// The representation of `read`, or its 304.
async fn answer(state: &AppState, read: Read, headers: &HeaderMap) -> ApiResult<Response> {
    let representation = state.forecasts.read(&read, Through::Cache).await?;
    Ok(state.respond(&representation, headers))
}

/// One version of a forecast. Versions never change, so the answer is `immutable`.
#[utoipa::path(
    get,
    path = "/v1/forecasts/{instrument}/{timeframe}/versions/{version}",
    tag = "read",
    params(
        ("instrument" = shared::domain::Instrument, Path, example = "AAPL"),
        ("timeframe" = shared::domain::Timeframe, Path, example = "1h"),
        ("version" = u64, Path, minimum = 1, example = 3),
    ),
    security((), ("bearer" = ["forecasts:read"])),
    responses(
        ReadErrors,
        (status = 200, description = "The version", body = crate::api::openapi::ForecastDocument),
        (status = 304, description = "Not modified"),
        (status = 400, description = "Invalid instrument, timeframe or version number", body = ErrorBody),
        (status = 404, description = "No such version (beyond the latest)", body = ErrorBody),
        (status = 410, description = "The version was trimmed from history", body = ErrorBody),
        (status = 503, description = "Storage unavailable", body = ErrorBody),
    )
)]
pub async fn version(
    State(state): State<AppState>,
    ApiPath((instrument, timeframe, version)): ApiPath<(String, String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    state.authorize_read(&headers)?;
    let read = Read::Version(forecast_key(&instrument, &timeframe)?, version_number(&version)?);
    answer(&state, read, &headers).await
}

/// The current versions of every timeframe of an instrument.
#[utoipa::path(
    get,
    path = "/v1/forecasts/{instrument}",
    tag = "read",
    params(("instrument" = shared::domain::Instrument, Path, example = "AAPL")),
    security((), ("bearer" = ["forecasts:read"])),
    responses(
        ReadErrors,
        (status = 200, description = "Every timeframe that has a current version", body = crate::api::openapi::ForecastList),
        (status = 304, description = "Not modified"),
        (status = 400, description = "Invalid instrument", body = ErrorBody),
        (status = 503, description = "Storage unavailable", body = ErrorBody),
    )
)]
pub async fn instrument_forecasts(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    state.authorize_read(&headers)?;
    answer(&state, Read::Instrument(instrument(&raw)?), &headers).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BatchQuery {
    /// Comma-separated `INSTRUMENT:TIMEFRAME` keys, such as `AAPL:1h,MSFT:1d`; at most
    /// `limits.max_batch_reads` (a key given twice is answered once).
    #[param(required = true, value_type = Vec<ForecastKey>, min_items = 1, style = Form, explode = false)]
    keys: Option<String>,
}

/// The current versions of several forecasts; keys without one are listed under `missing`.
#[utoipa::path(
    get,
    path = "/v1/forecasts",
    tag = "read",
    params(BatchQuery),
    security((), ("bearer" = ["forecasts:read"])),
    responses(
        ReadErrors,
        (status = 200, description = "Found forecasts, in the order asked, and the missing keys", body = crate::api::openapi::ForecastList),
        (status = 304, description = "Not modified"),
        (status = 400, description = "No keys, an invalid or empty key, or more keys than allowed", body = ErrorBody),
        (status = 503, description = "Storage unavailable", body = ErrorBody),
    )
)]
pub async fn batch(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<BatchQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    state.authorize_read(&headers)?;
    let keys = batch_keys(query.keys.as_deref().unwrap_or_default(), state.limits.max_batch_reads)?;
    answer(&state, Read::Batch(keys), &headers).await
}
