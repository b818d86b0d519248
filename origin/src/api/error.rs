//! The one error shape of the API: `{"error":{"code":"…","message":"…"}}`.
//! Client errors say what to fix; internal ones are logged with their cause and answered without it.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::storage::StorageError;

/// The code of a 503 for a change that was stored but whose invalidation was not.
pub const INVALIDATION_FAILED: &str = "invalidation_failed";

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds, for `Retry-After` on 503 and 429.
    pub retry_after: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `invalid_instrument`, `not_found`, `precondition_failed`…
    #[schema(example = "invalid_instrument")]
    pub code: String,
    /// What is wrong, for a person.
    pub message: String,
}

/// The answers every admin endpoint may give besides its own, for the OpenAPI document.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Describes responses; never built.
pub enum AdminErrors {
    #[response(status = 401, description = "Missing or unknown bearer token")]
    Unauthorized(ErrorBody),
    #[response(status = 403, description = "The token lacks the endpoint's scope")]
    Forbidden(ErrorBody),
    #[response(
        status = 503,
        description = "Storage unavailable, or (`invalidation_failed`) a change was stored but edges were not told; retry after Retry-After",
        headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))
    )]
    Unavailable(ErrorBody),
}

/// What a read answers when `auth.public_reads = false` and the token does not do.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Describes responses; never built.
pub enum ReadErrors {
    #[response(
        status = 401,
        description = "Reads need a token (auth.public_reads = false), and none or an unknown one came"
    )]
    Unauthorized(ErrorBody),
    #[response(status = 403, description = "The token lacks forecasts:read")]
    Forbidden(ErrorBody),
}

/// The answers every endpoint that reads a JSON body may give about the body itself.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Describes responses; never built.
pub enum BodyErrors {
    #[response(
        status = 400,
        description = "The body is not JSON (`malformed_json`), or could not be read"
    )]
    Malformed(ErrorBody),
    #[response(status = 408, description = "The body did not arrive within http.body_read_timeout")]
    TooSlow(ErrorBody),
    #[response(status = 413, description = "The body is larger than http.max_body_bytes")]
    TooLarge(ErrorBody),
    #[response(status = 415, description = "The body is not sent as application/json")]
    NotJson(ErrorBody),
    #[response(
        status = 422,
        description = "The JSON does not have the shape the operation takes (`invalid_body`)"
    )]
    Invalid(ErrorBody),
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    /// 429, to be tried again after `retry_after` (rounded up to whole seconds).
    pub fn too_many(message: impl Into<String>, retry_after: std::time::Duration) -> Self {
        Self {
            retry_after: Some(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", message)
        }
    }
}

impl From<crate::reads::ReadError> for ApiError {
    fn from(error: crate::reads::ReadError) -> Self {
        use crate::reads::ReadError;
        match error {
            ReadError::Invalid { code, message } => Self::bad_request(code, message),
            ReadError::NotFound(message) => Self::not_found(message),
            ReadError::Storage(error) => error.into(),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::VersionNotFound { .. } => {
                Self::new(StatusCode::NOT_FOUND, "version_not_found", error.to_string())
            }
            StorageError::VersionTrimmed { .. } => Self::new(StatusCode::GONE, "version_trimmed", error.to_string()),
            StorageError::Conflict { .. } => Self::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                error.to_string(),
            ),
            StorageError::Unavailable(_) => {
                tracing::warn!(%error, "answering 503");
                Self::unavailable("storage is unavailable, retry shortly")
            }
            StorageError::NotInvalidated { ref key, version, .. } => {
                tracing::error!(%error, "answering 503: edges were not told about a change");
                let message = format!(
                    "{key} changed (version {version}), but the invalidation that tells edges, or the event \
                     that tells subscribers, was not recorded yet: the origin records both as soon as storage \
                     answers again, and edges may serve the previous content until then"
                );
                Self {
                    retry_after: Some(1),
                    ..Self::new(StatusCode::SERVICE_UNAVAILABLE, INVALIDATION_FAILED, message)
                }
            }
            StorageError::Corrupt(_) => {
                tracing::error!(%error, "answering 500");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        // An error says nothing durable about the resource: no cache may keep it.
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
