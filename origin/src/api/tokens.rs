//! Token management: `/admin/v1/tokens` makes tokens (the secret shown once, only its hash stored),
//! lists them without secrets, and revokes them, so no credential the origin made is permanent. Every
//! origin sharing the store follows it within [`FOLLOW_INTERVAL`].

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use shared::events::TopicPattern;
use shared::time::{unix_ms, unix_ms_now};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::auth::{Authenticator, Principal, Scope, format_hash, hash_token, random_hex};
use super::error::{AdminErrors, ApiError, ApiResult, BodyErrors, ErrorBody};
use super::extract::{ApiPath, JsonBody};
use super::{AppState, Inner};
use crate::forecasts::Forecasts;
use crate::storage::tokens::StoredToken;

/// How often the stored tokens are read again, so tokens made or revoked through another origin take
/// effect here too.
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// The id of the admin token generated at first start.
pub const GENERATED_ADMIN: &str = "generated-admin";

/// The longest token name.
const MAX_NAME: usize = 64;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// Who it is for; the audit log records this name. 1 to 64 visible ASCII characters and inner
    /// spaces.
    #[schema(
        example = "desk-eu",
        pattern = r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$",
        max_length = 64
    )]
    name: String,
    /// Scopes, each one the caller holds itself.
    #[schema(example = json!(["forecasts:read", "events:subscribe"]), value_type = Vec<Scope>, min_items = 1, max_items = 64)]
    scopes: Vec<String>,
    /// Topic patterns its subscriptions may cover; empty: every topic the caller may cover.
    #[serde(default)]
    #[schema(schema_with = topic_patterns)]
    topics: Vec<String>,
    /// RFC 3339, in the future; from then on it is refused. Absent or null: it lasts until revoked.
    #[serde(default)]
    #[schema(example = "2027-01-01T00:00:00Z", format = DateTime)]
    expires_at: Option<String>,
}

/// The most topic patterns and scopes of a token.
const MAX_LIST: usize = 64;

fn topic_patterns() -> utoipa::openapi::schema::Array {
    shared::openapi::list(utoipa::openapi::Ref::from_schema_name("TopicPattern"), 0, MAX_LIST).build()
}

/// A token as listed: never its secret or hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    #[schema(example = "tok_3f9a0c1b2d4e5f60718293a4")]
    id: String,
    name: String,
    scopes: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    topics: Vec<String>,
    created_at: String,
    created_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_at: Option<String>,
}

impl From<&StoredToken> for TokenView {
    fn from(token: &StoredToken) -> Self {
        Self {
            id: token.id.clone(),
            name: token.name.clone(),
            scopes: token.scopes.clone(),
            topics: token.topics.clone(),
            created_at: super::webhooks::rfc3339(token.created_at_ms),
            created_by: token.created_by.clone(),
            expires_at: token.expires_at_ms.map(super::webhooks::rfc3339),
            revoked_at: token.revoked_at_ms.map(super::webhooks::rfc3339),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    token: TokenView,
    /// The secret, shown this once: send it as `Authorization: Bearer …`.
    #[schema(example = "ft_0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a")]
    secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    /// Tokens made through this API (and the one generated at first start), revoked ones included.
    tokens: Vec<TokenView>,
    /// Names of the tokens of the configuration file and the bootstrap token: they are changed there.
    configured: Vec<String>,
}

/// Reads the stored tokens into the authenticator.
pub async fn reload(forecasts: &Forecasts, auth: &Authenticator) -> crate::storage::Result<()> {
    let stored = forecasts.store().tokens().await?;
    auth.set_stored(&stored);
    Ok(())
}

impl Inner {
    pub async fn reload_tokens(&self) -> crate::storage::Result<()> {
        reload(&self.forecasts, &self.auth).await
    }
}

/// Checks a new token's fields, and that it grants nothing its maker does not hold.
fn checked(principal: &Principal, new: NewToken, now_ms: u64) -> ApiResult<(Vec<String>, Option<u64>)> {
    let name = &new.name;
    let inner_spaces_only = name.trim() == name;
    if name.is_empty()
        || name.len() > MAX_NAME
        || !inner_spaces_only
        || !name.chars().all(|c| c.is_ascii_graphic() || c == ' ')
    {
        return Err(ApiError::unprocessable(format!(
            "name must be 1 to {MAX_NAME} visible ASCII characters (spaces only between them)"
        )));
    }
    if new.scopes.is_empty() || new.scopes.len() > MAX_LIST {
        return Err(ApiError::unprocessable(format!("scopes: give 1 to {MAX_LIST}")));
    }
    if new.topics.len() > MAX_LIST {
        return Err(ApiError::unprocessable(format!("topics: at most {MAX_LIST} patterns")));
    }
    for name in &new.scopes {
        let scope =
            Scope::parse(name).ok_or_else(|| ApiError::unprocessable(format!("scopes: unknown scope {name:?}")))?;
        principal.require(scope)?;
    }
    let topics = new
        .topics
        .iter()
        .map(|topic| topic.parse::<TopicPattern>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ApiError::unprocessable(format!("topics: {error}")))?;
    // A token limited to some topics makes tokens limited to those topics or fewer.
    if principal.has_topic_limits() {
        if topics.is_empty() {
            return Err(ApiError::forbidden(
                "a token limited to some topics must name topics within them",
            ));
        }
        principal.allow_topics(&topics)?;
    }
    let expires_at_ms = match &new.expires_at {
        None => None,
        Some(text) => {
            let at = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .map_err(|_| ApiError::unprocessable("expires_at: give an RFC 3339 time"))?;
            let at_ms = unix_ms(at);
            if at_ms <= now_ms {
                return Err(ApiError::unprocessable("expires_at must be in the future"));
            }
            Some(at_ms)
        }
    };
    Ok((topics.iter().map(ToString::to_string).collect(), expires_at_ms))
}

/// Makes a token; its secret is in this answer only.
#[utoipa::path(operation_id = "create_token", post, path = "/admin/v1/tokens", tag = "tokens", security(("bearer" = ["tokens:admin"])),
    request_body = NewToken,
    responses(
        BodyErrors,
        (status = 201, body = CreatedToken),
        (status = 403, description = "A scope or topic the caller does not hold itself", body = ErrorBody),
        (status = 422, description = "A field is invalid", body = ErrorBody),
        AdminErrors,
    ))]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(new): JsonBody<NewToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let principal = state.principal(&headers, Scope::TokensAdmin)?;
    let now_ms = unix_ms_now();
    let name = new.name.clone();
    let scopes = new.scopes.clone();
    let (topics, expires_at_ms) = checked(&principal, new, now_ms)?;
    let no_randomness = || ApiError::unavailable("no system randomness");
    let secret = format!("ft_{}", random_hex(24).ok_or_else(no_randomness)?);
    let token = StoredToken {
        id: format!("tok_{}", random_hex(12).ok_or_else(no_randomness)?),
        name,
        hash: format_hash(&hash_token(&secret)),
        scopes,
        topics,
        created_at_ms: now_ms,
        created_by: principal.name.clone(),
        expires_at_ms,
        revoked_at_ms: None,
    };
    if !state.forecasts.store().add_token(&token).await? {
        return Err(ApiError::unavailable("token id collision; retry"));
    }
    state.reload_tokens().await?;
    let detail = serde_json::json!({"name": token.name, "scopes": token.scopes, "topics": token.topics,
        "expires_at_ms": token.expires_at_ms});
    state
        .audit(
            &principal,
            "token.create",
            token.id.clone(),
            StatusCode::CREATED,
            detail,
        )
        .await;
    let view = TokenView::from(&token);
    Ok((StatusCode::CREATED, Json(CreatedToken { token: view, secret })))
}

/// Every token, without secrets.
#[utoipa::path(operation_id = "list_tokens", get, path = "/admin/v1/tokens", tag = "tokens", security(("bearer" = ["tokens:admin"])),
    responses((status = 200, body = TokenList), AdminErrors))]
pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Json<TokenList>> {
    state.principal(&headers, Scope::TokensAdmin)?;
    let mut tokens = state.forecasts.store().tokens().await?;
    tokens.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
    Ok(Json(TokenList {
        tokens: tokens.iter().map(TokenView::from).collect(),
        configured: state.auth.configured_names(),
    }))
}

/// Revokes a token at once on this origin, within a second on the others.
#[utoipa::path(operation_id = "revoke_token", delete, path = "/admin/v1/tokens/{id}", tag = "tokens", security(("bearer" = ["tokens:admin"])),
    params(("id" = String, Path, description = "The token's id, such as tok_… or generated-admin")),
    responses((status = 204, description = "Revoked (or revoked before)"), (status = 404, body = ErrorBody), AdminErrors))]
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let principal = state.principal(&headers, Scope::TokensAdmin)?;
    let now_ms = unix_ms_now();
    let Some(token) = state.forecasts.store().revoke_token(&id, now_ms).await? else {
        return Err(ApiError::not_found(format!(
            "no token {id} (tokens of the configuration file are removed there)"
        )));
    };
    state.reload_tokens().await?;
    let detail = serde_json::json!({"name": token.name});
    state
        .audit(&principal, "token.revoke", id, StatusCode::NO_CONTENT, detail)
        .await;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema;

    use super::{MAX_LIST, MAX_NAME, NewToken};

    /// The limits the document gives are the ones `checked` applies.
    #[test]
    fn documented_limits_are_the_checked_ones() {
        let schema = serde_json::to_value(NewToken::schema()).unwrap();
        assert_eq!(schema["properties"]["name"]["maxLength"], MAX_NAME, "{schema}");
        assert_eq!(schema["properties"]["scopes"]["maxItems"], MAX_LIST, "{schema}");
        assert_eq!(schema["properties"]["topics"]["maxItems"], MAX_LIST, "{schema}");
    }
}
