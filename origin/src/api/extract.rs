//! Extractors that answer bad input with the API's error shape instead of axum's plain text.

use std::num::NonZeroUsize;

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use shared::domain::{ForecastKey, Instrument};

use super::error::ApiError;

/// A JSON request body: 415 without a JSON content type, 413 past the size limit, 400 when it is not
/// JSON (`NaN` and `Infinity` are not JSON, and numbers beyond f64 are refused as such), 422 when it is
/// JSON of the wrong shape (unknown fields, wrong types, an array where an object belongs).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON, sent with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "the request body is too large",
                )
            } else if caused_by::<tower_http::timeout::TimeoutError>(&rejection) {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    "the request body did not arrive in time (http.body_read_timeout)",
                )
            } else {
                ApiError::bad_request("unreadable_body", rejection.body_text())
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Whether `error` or one of its sources is an `E`.
fn caused_by<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<E>() {
            return true;
        }
        next = error.source();
    }
    false
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|error| ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {error}")))?;
    parse_value(value)
}

pub fn parse_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    super::strict_json::from_value(value).map_err(|error| ApiError::unprocessable(error.to_string()))
}

/// Path parameters, with a JSON 400 when they cannot be decoded.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|rejection| ApiError::bad_request("invalid_path", rejection.body_text()))
    }
}

/// Query parameters, with a JSON 400 when they do not fit.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| ApiQuery(value))
            .map_err(|rejection| ApiError::bad_request("invalid_query", rejection.body_text()))
    }
}

pub use crate::reads::whole_number;

pub fn instrument(raw: &str) -> Result<Instrument, ApiError> {
    Ok(crate::reads::instrument(raw)?)
}

pub fn forecast_key(instrument_raw: &str, timeframe_raw: &str) -> Result<ForecastKey, ApiError> {
    Ok(crate::reads::forecast_key(instrument_raw, timeframe_raw)?)
}

/// A version number from a path: a positive integer.
pub fn version_number(raw: &str) -> Result<u64, ApiError> {
    Ok(crate::reads::version_number(raw)?)
}

/// The most entries one page of a log (audit, invalidations) holds.
pub const MAX_PAGE: usize = 1000;

/// A page size from a query: 1 to [`MAX_PAGE`], 100 when absent.
pub fn page_limit(limit: Option<usize>) -> Result<NonZeroUsize, ApiError> {
    NonZeroUsize::new(limit.unwrap_or(100))
        .filter(|limit| limit.get() <= MAX_PAGE)
        .ok_or_else(|| ApiError::bad_request("invalid_limit", format!("limit must be 1 to {MAX_PAGE}")))
}
