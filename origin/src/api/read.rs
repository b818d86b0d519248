//! The public read API: what edges and readers fetch.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use shared::domain::{ForecastKey, Timeframe};

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody, ReadErrors};
use super::extract::{ApiPath, ApiQuery, forecast_key, instrument, version_number};
use crate::invalidation::forecast_tag;
use crate::representation::{Rendered, Representation};

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
    let key = forecast_key(&instrument, &timeframe)?;
    match state.forecasts.current(&key).await? {
        Some(rendered) => Ok(state.respond(&Representation::single(&rendered, false), &headers)),
        None => Err(ApiError::not_found(format!("no forecast for {key}"))),
    }
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
    let key = forecast_key(&instrument, &timeframe)?;
    let rendered = state.forecasts.version(&key, version_number(&version)?).await?;
    Ok(state.respond(&Representation::single(&rendered, true), &headers))
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
    let instrument = instrument(&raw)?;
    let keys: Vec<ForecastKey> = Timeframe::ALL
        .iter()
        .map(|&tf| ForecastKey::new(instrument.clone(), tf))
        .collect();
    let found = state.forecasts.current_many(&keys).await?;
    let members: Vec<&Rendered> = found.iter().flatten().map(Arc::as_ref).collect();
    // The list answers for every timeframe, present or not: the first write of one must purge it too.
    let tags: Vec<String> = std::iter::once(instrument.to_string())
        .chain(keys.iter().map(forecast_tag))
        .collect();
    let representation = Representation::list(&members, &[], &tags);
    Ok(state.respond(&representation, &headers))
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
    let raw = query.keys.unwrap_or_default();
    let mut keys: Vec<ForecastKey> = Vec::new();
    for (index, part) in raw.split(',').filter(|_| !raw.is_empty()).enumerate() {
        if index == state.limits.max_batch_reads {
            return Err(ApiError::bad_request(
                "batch_too_large",
                format!("at most {} keys per batch read", state.limits.max_batch_reads),
            ));
        }
        let key: ForecastKey = part
            .parse()
            .map_err(|e: shared::domain::DomainError| ApiError::bad_request("invalid_key", e.to_string()))?;
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    if keys.is_empty() {
        return Err(ApiError::bad_request(
            "missing_keys",
            "give keys=INSTRUMENT:TIMEFRAME,… such as keys=AAPL:1h",
        ));
    }
    let found = state.forecasts.current_many(&keys).await?;
    let members: Vec<&Rendered> = found.iter().flatten().map(Arc::as_ref).collect();
    let missing: Vec<ForecastKey> = keys
        .iter()
        .zip(&found)
        .filter(|(_, entry)| entry.is_none())
        .map(|(k, _)| k.clone())
        .collect();
    let tags: Vec<String> = missing.iter().map(forecast_tag).collect();
    Ok(state.respond(&Representation::list(&members, &missing, &tags), &headers))
}
