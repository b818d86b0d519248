//! Webhook endpoints over HTTP (`/admin/v1/webhooks…`, scope `webhooks:admin`): registration, secret
//! rotation, stats, attempts, dead letters and replays.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use shared::events::TopicPattern;
use shared::time::{from_unix_ms, unix_ms_now};
use shared::webhooks::Secret;
use utoipa::ToSchema;
use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};

use super::AppState;
use super::auth::{Principal, Scope};
use super::error::{AdminErrors, ApiError, ApiResult, BodyErrors, ErrorBody};
use super::extract::{ApiPath, ApiQuery, JsonBody, page_limit, parse_value, whole_number};
use crate::storage::webhooks::{Attempt, Delivery, StoredEndpoint, StoredSecret};
use crate::webhooks::{
    EndpointStats, HEADER_NAME_PATTERN, HEADER_VALUE_PATTERN, MAX_HEADER_VALUE, MAX_HEADERS, check_headers,
};

/// Most topic patterns and types per endpoint.
const MAX_FILTERS: usize = 64;
/// Longest description, in bytes.
const MAX_DESCRIPTION: usize = 1024;

/// `POST /admin/v1/webhooks`: `url` and `topics` are required.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    /// Where to POST: `https://` (and `http://` where `webhooks.allow_http` permits it), no credentials,
    /// to an address `webhooks.allowed_targets` permits.
    #[schema(example = "https://hooks.example.com/forecasts", format = "uri", max_length = 2048)]
    url: String,
    /// Topic patterns as `GET /v1/stream` takes them (`*` one segment, `**` the rest).
    #[schema(example = json!(["indicators.**"]), schema_with = topic_filters)]
    topics: Vec<String>,
    /// Only these event types; absent or null: every type.
    #[serde(default)]
    #[schema(schema_with = event_types_or_null)]
    types: Option<Vec<String>>,
    #[serde(default)]
    #[schema(max_length = 1024)]
    description: String,
    #[serde(default = "enabled")]
    enabled: bool,
    /// Most attempts per second (per origin); absent or null: no limit.
    #[serde(default)]
    #[schema(minimum = 1)]
    rate_limit: Option<u32>,
    /// Headers added to every request.
    #[serde(default)]
    #[schema(schema_with = custom_headers)]
    headers: BTreeMap<String, String>,
}

fn enabled() -> bool {
    true
}

/// The most bytes of a target URL.
const MAX_URL: usize = 2048;

fn topic_filters_of(min_items: usize) -> utoipa::openapi::schema::ArrayBuilder {
    shared::openapi::list(
        utoipa::openapi::Ref::from_schema_name("TopicPattern"),
        min_items,
        MAX_FILTERS,
    )
}

fn topic_filters() -> utoipa::openapi::schema::Array {
    topic_filters_of(1).build()
}

fn topic_filters_or_null() -> utoipa::openapi::schema::Array {
    topic_filters_of(1).schema_type(or_null(Type::Array)).build()
}

fn event_types_or_null() -> utoipa::openapi::schema::Array {
    shared::openapi::list(utoipa::openapi::Ref::from_schema_name("EventTypeName"), 1, MAX_FILTERS)
        .schema_type(or_null(Type::Array))
        .build()
}

fn or_null(kind: Type) -> SchemaType {
    SchemaType::from_iter([kind, Type::Null])
}

fn custom_headers_of(kind: SchemaType) -> utoipa::openapi::Object {
    ObjectBuilder::new()
        .schema_type(kind)
        .property_names(Some(shared::openapi::text(HEADER_NAME_PATTERN, MAX_HEADER_VALUE)))
        .additional_properties(Some(shared::openapi::text(HEADER_VALUE_PATTERN, MAX_HEADER_VALUE)))
        .max_properties(Some(MAX_HEADERS))
        .build()
}

fn custom_headers() -> utoipa::openapi::Object {
    custom_headers_of(SchemaType::new(Type::Object))
}

fn custom_headers_or_null() -> utoipa::openapi::Object {
    custom_headers_of(or_null(Type::Object))
}

/// A field that may be absent (no change), `null` (cleared) or a value.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// `PATCH /admin/v1/webhooks/{id}`: the fields given replace the stored ones (`null` clears `types`
/// and `rate_limit`, and leaves the others as they are). `enabled: true` also clears a disabled
/// endpoint's failure record.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointChange {
    #[schema(format = "uri", max_length = 2048)]
    url: Option<String>,
    #[schema(schema_with = topic_filters_or_null)]
    topics: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = event_types_or_null)]
    types: Option<Option<Vec<String>>>,
    #[schema(max_length = 1024)]
    description: Option<String>,
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>, minimum = 1)]
    rate_limit: Option<Option<u32>>,
    #[schema(schema_with = custom_headers_or_null)]
    headers: Option<BTreeMap<String, String>>,
}

/// An endpoint as the API shows it (never its secrets).
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointView {
    id: String,
    url: String,
    topics: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    types: Option<Vec<String>>,
    description: String,
    enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_limit: Option<u32>,
    headers: BTreeMap<String, String>,
    /// RFC 3339.
    created_at: String,
    updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    failing_since: Option<String>,
}

pub(super) fn rfc3339(ms: u64) -> String {
    from_unix_ms(ms)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl From<&StoredEndpoint> for EndpointView {
    fn from(endpoint: &StoredEndpoint) -> Self {
        Self {
            id: endpoint.id.clone(),
            url: endpoint.url.clone(),
            topics: endpoint.topics.clone(),
            types: endpoint.types.clone(),
            description: endpoint.description.clone(),
            enabled: endpoint.enabled,
            disabled_reason: endpoint.disabled_reason.clone(),
            rate_limit: endpoint.rate_limit,
            headers: endpoint.headers.clone(),
            created_at: rfc3339(endpoint.created_at_ms),
            updated_at: rfc3339(endpoint.updated_at_ms),
            failing_since: endpoint.failing_since_ms.map(rfc3339),
        }
    }
}

/// A new endpoint, with its secret: shown here once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedEndpoint {
    #[serde(flatten)]
    endpoint: EndpointView,
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointList {
    endpoints: Vec<EndpointView>,
}

fn new_id() -> ApiResult<String> {
    let hex = super::auth::random_hex(12).ok_or_else(|| ApiError::unavailable("no system randomness"))?;
    Ok(format!("ep_{hex}"))
}

/// Checks every field an endpoint may be given, with a message that says what is wrong.
async fn check_endpoint(state: &AppState, endpoint: &StoredEndpoint) -> ApiResult<()> {
    let invalid = |message: String| ApiError::unprocessable(message);
    if endpoint.url.chars().count() > MAX_URL {
        return Err(invalid(format!("url: at most {MAX_URL} characters")));
    }
    let url = state
        .webhooks
        .policy
        .parse(&endpoint.url)
        .map_err(|e| invalid(format!("url: {e}")))?;
    state
        .webhooks
        .policy
        .check(&url)
        .await
        .map_err(|e| invalid(format!("url: {e}")))?;
    if endpoint.topics.is_empty() || endpoint.topics.len() > MAX_FILTERS {
        return Err(invalid(format!("topics: give 1 to {MAX_FILTERS} topic patterns")));
    }
    for topic in &endpoint.topics {
        topic
            .parse::<TopicPattern>()
            .map_err(|e| invalid(format!("topics: {e}")))?;
    }
    if let Some(types) = &endpoint.types {
        let well_formed = |t: &String| shared::events::is_type_name(t);
        if types.is_empty() || types.len() > MAX_FILTERS || !types.iter().all(well_formed) {
            return Err(invalid(format!(
                "types: give 1 to {MAX_FILTERS} event type names (letters, digits, _), or leave it out for every type"
            )));
        }
    }
    if endpoint.description.chars().count() > MAX_DESCRIPTION {
        return Err(invalid(format!("description: at most {MAX_DESCRIPTION} characters")));
    }
    if endpoint.rate_limit == Some(0) {
        return Err(invalid(
            "rate_limit: at least 1 attempt per second (leave it out for no limit)".into(),
        ));
    }
    check_headers(&endpoint.headers).map_err(|e| invalid(format!("headers: {e}")))
}

async fn load(state: &AppState, id: &str) -> ApiResult<StoredEndpoint> {
    state
        .webhooks
        .store()
        .endpoint(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no webhook endpoint {id}")))
}

/// Stores a change made from `revision`; a concurrent change gets 409.
async fn store_change(state: &AppState, mut endpoint: StoredEndpoint, revision: u64) -> ApiResult<StoredEndpoint> {
    endpoint.revision = revision + 1;
    endpoint.updated_at_ms = unix_ms_now();
    if state.webhooks.store().put_endpoint(&endpoint, Some(revision)).await? {
        Ok(endpoint)
    } else {
        Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "the endpoint changed meanwhile; read it again and retry",
        ))
    }
}

/// Registers an endpoint; its secret is in this answer only.
#[utoipa::path(operation_id = "create_webhook", post, path = "/admin/v1/webhooks", tag = "webhooks", security(("bearer" = ["webhooks:admin"])),
    request_body = NewEndpoint,
    responses(
        BodyErrors,
        (status = 201, body = CreatedEndpoint), (status = 422, description = "A field is invalid, or the target is refused", body = ErrorBody), AdminErrors))]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult<(StatusCode, Json<CreatedEndpoint>)> {
    let principal = state.principal(&headers, Scope::WebhooksAdmin)?;
    let new: NewEndpoint = parse_value(body)?;
    let secret = Secret::generate();
    let now = unix_ms_now();
    let endpoint = StoredEndpoint {
        id: new_id()?,
        revision: 1,
        url: new.url,
        topics: new.topics,
        types: new.types,
        description: new.description,
        enabled: new.enabled,
        disabled_reason: None,
        rate_limit: new.rate_limit,
        headers: new.headers,
        secrets: vec![StoredSecret {
            secret: secret.expose(),
            expires_at_ms: None,
        }],
        created_at_ms: now,
        updated_at_ms: now,
        failing_since_ms: None,
    };
    check_endpoint(&state, &endpoint).await?;
    if !state.webhooks.store().put_endpoint(&endpoint, None).await? {
        return Err(ApiError::unavailable("endpoint id collision; retry"));
    }
    audit_endpoint(&state, &principal, "webhook.create", &endpoint, StatusCode::CREATED).await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedEndpoint {
            endpoint: EndpointView::from(&endpoint),
            secret: secret.expose(),
        }),
    ))
}

/// An endpoint's creation or change in the audit log: where it sends and what it takes. The URL's query
/// is left out (it may carry a receiver's credentials); secrets never appear.
async fn audit_endpoint(
    state: &AppState,
    principal: &Principal,
    action: &str,
    endpoint: &StoredEndpoint,
    status: StatusCode,
) {
    let url = endpoint.url.split(['?', '#']).next().unwrap_or_default();
    let detail = serde_json::json!({
        "url": url, "topics": endpoint.topics, "types": endpoint.types, "enabled": endpoint.enabled,
        "revision": endpoint.revision,
    });
    state
        .audit(principal, action, endpoint.id.clone(), status, detail)
        .await;
}

#[utoipa::path(operation_id = "list_webhooks", get, path = "/admin/v1/webhooks", tag = "webhooks", security(("bearer" = ["webhooks:admin"])),
    responses((status = 200, body = EndpointList), AdminErrors))]
pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Json<EndpointList>> {
    state.principal(&headers, Scope::WebhooksAdmin)?;
    let mut endpoints = state.webhooks.store().endpoints().await?;
    endpoints.sort_by_key(|e| e.created_at_ms);
    Ok(Json(EndpointList {
        endpoints: endpoints.iter().map(EndpointView::from).collect(),
    }))
}

#[utoipa::path(operation_id = "show_webhook", get, path = "/admin/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path, description = "The endpoint's id, `ep_` and 24 hex digits")), security(("bearer" = ["webhooks:admin"])),
    responses((status = 200, body = EndpointView), (status = 404, body = ErrorBody), AdminErrors))]
pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<EndpointView>> {
    state.principal(&headers, Scope::WebhooksAdmin)?;
    Ok(Json(EndpointView::from(&load(&state, &id).await?)))
}

#[utoipa::path(operation_id = "update_webhook", patch, path = "/admin/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path, description = "The endpoint's id, `ep_` and 24 hex digits")), security(("bearer" = ["webhooks:admin"])),
    request_body = EndpointChange,
    responses(
        BodyErrors,
        (status = 200, body = EndpointView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), AdminErrors))]
pub async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult<Json<EndpointView>> {
    let principal = state.principal(&headers, Scope::WebhooksAdmin)?;
    let change: EndpointChange = parse_value(body)?;
    let mut endpoint = load(&state, &id).await?;
    let revision = endpoint.revision;
    if let Some(url) = change.url {
        endpoint.url = url;
    }
    if let Some(topics) = change.topics {
        endpoint.topics = topics;
    }
    if let Some(types) = change.types {
        endpoint.types = types;
    }
    if let Some(description) = change.description {
        endpoint.description = description;
    }
    if let Some(rate_limit) = change.rate_limit {
        endpoint.rate_limit = rate_limit;
    }
    if let Some(headers) = change.headers {
        endpoint.headers = headers;
    }
    if let Some(enabled) = change.enabled {
        if enabled {
            endpoint.disabled_reason = None;
            endpoint.failing_since_ms = None;
        }
        endpoint.enabled = enabled;
    }
    check_endpoint(&state, &endpoint).await?;
    let stored = store_change(&state, endpoint, revision).await?;
    audit_endpoint(&state, &principal, "webhook.update", &stored, StatusCode::OK).await;
    Ok(Json(EndpointView::from(&stored)))
}

#[utoipa::path(operation_id = "delete_webhook", delete, path = "/admin/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path, description = "The endpoint's id, `ep_` and 24 hex digits")), security(("bearer" = ["webhooks:admin"])),
    responses((status = 204, description = "Deleted with its dead letters and attempts"), (status = 404, body = ErrorBody), AdminErrors))]
pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let principal = state.principal(&headers, Scope::WebhooksAdmin)?;
    if state.webhooks.store().delete_endpoint(&id).await? {
        let detail = serde_json::Value::Null;
        state
            .audit(&principal, "webhook.delete", id, StatusCode::NO_CONTENT, detail)
            .await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no webhook endpoint {id}")))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedSecret {
    /// The new secret, shown once.
    secret: String,
    /// Until when (RFC 3339) the previous secret also signs messages.
    previous_expires_at: String,
}

/// A new secret signs from now on; the previous one also signs until `webhooks.secret_overlap` ends.
#[utoipa::path(post, path = "/admin/v1/webhooks/{id}/secret:rotate", tag = "webhooks", params(("id" = String, Path, description = "The endpoint's id, `ep_` and 24 hex digits")), security(("bearer" = ["webhooks:admin"])),
    responses((status = 200, body = RotatedSecret), (status = 404, body = ErrorBody), AdminErrors))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<RotatedSecret>> {
    let principal = state.principal(&headers, Scope::WebhooksAdmin)?;
    let mut endpoint = load(&state, &id).await?;
    let revision = endpoint.revision;
    let now = unix_ms_now();
    let expires = now + u64::try_from(state.webhooks.settings.secret_overlap.as_millis()).unwrap_or(u64::MAX / 2);
    let secret = Secret::generate();
    let mut secrets = vec![StoredSecret {
        secret: secret.expose(),
        expires_at_ms: None,
    }];
    // The current one is kept until the overlap ends; older ones keep their own (earlier) expiry.
    for (index, old) in endpoint.secrets.drain(..).enumerate() {
        let expires_at_ms = if index == 0 { Some(expires) } else { old.expires_at_ms };
        if expires_at_ms.is_some_and(|at| at > now) {
            secrets.push(StoredSecret {
                secret: old.secret,
                expires_at_ms,
            });
        }
    }
    endpoint.secrets = secrets;
    store_change(&state, endpoint, revision).await?;
    let detail = serde_json::json!({"previous_expires_at": rfc3339(expires)});
    state
        .audit(&principal, "webhook.secret.rotate", id, StatusCode::OK, detail)
        .await;
    Ok(Json(RotatedSecret {
        secret: secret.expose(),
        previous_expires_at: rfc3339(expires),
    }))
}

#[utoipa::path(get, path = "/admin/v1/webhooks/{id}/stats", tag = "webhooks", params(("id" = String, Path, description = "The endpoint's id, `ep_` and 24 hex digits")), security(("bearer" = ["webhooks:admin"])),
    responses((status = 200, body = EndpointStats), (status = 404, body = ErrorBody), AdminErrors))]
pub async fn stats(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<EndpointStats>> {
    state.principal(&headers, Scope::WebhooksAdmin)?;
    let endpoint = load(&state, &id).await?;
    Ok(Json(state.webhooks.stats(&endpoint).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitQuery {
    limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptList {
    /// Newest first.
    attempts: Vec<Attempt>,
}

/// The newest attempts: when, status, latency, the start of the response, what came of it.
#[utoipa::path(get, path = "/admin/v1/webhooks/{id}/deliveries", tag = "webhooks", security(("bearer" = ["webhooks:admin"])),
    params(("id" = String, Path, description = "The endpoint's id, `ep_` and 24 hex digits"), ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "1 to 1000, default 100")),
    responses((status = 200, body = AttemptList), (status = 400, description = "A limit out of range", body = ErrorBody), (status = 404, body = ErrorBody), AdminErrors))]
pub async fn deliveries(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<LimitQuery>,
) -> ApiResult<Json<AttemptList>> {
    state.principal(&headers, Scope::WebhooksAdmin)?;
    let limit = page_limit(query.limit)?;
    load(&state, &id).await?;
    Ok(Json(AttemptList {
        attempts: state.webhooks.store().attempts(&id, limit.get()).await?,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterList {
    /// Oldest event first.
    #[schema(value_type = Vec<Object>)]
    dead_letters: Vec<Delivery>,
}

#[utoipa::path(get, path = "/admin/v1/webhooks/{id}/dead-letters", tag = "webhooks", params(("id" = String, Path, description = "The endpoint's id, `ep_` and 24 hex digits")), security(("bearer" = ["webhooks:admin"])),
    responses((status = 200, body = DeadLetterList), (status = 404, body = ErrorBody), AdminErrors))]
pub async fn dead_letters(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<DeadLetterList>> {
    state.principal(&headers, Scope::WebhooksAdmin)?;
    load(&state, &id).await?;
    Ok(Json(DeadLetterList {
        dead_letters: state.webhooks.store().dead_letters(&id).await?,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Queued {
    /// Messages queued for delivery.
    queued: usize,
}

/// Every dead letter of the endpoint, queued again with fresh attempts.
#[utoipa::path(post, path = "/admin/v1/webhooks/{id}/dead-letters:redrive", tag = "webhooks", params(("id" = String, Path, description = "The endpoint's id, `ep_` and 24 hex digits")), security(("bearer" = ["webhooks:admin"])),
    responses((status = 202, body = Queued), (status = 404, body = ErrorBody), AdminErrors))]
pub async fn redrive(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<Queued>)> {
    let principal = state.principal(&headers, Scope::WebhooksAdmin)?;
    load(&state, &id).await?;
    let queued = state.webhooks.redrive(&id).await?;
    let detail = serde_json::json!({"queued": queued});
    state
        .audit(&principal, "webhook.redrive", id, StatusCode::ACCEPTED, detail)
        .await;
    Ok((StatusCode::ACCEPTED, Json(Queued { queued })))
}

/// One message (by its event id) sent again, whatever became of it before.
#[utoipa::path(post, path = "/admin/v1/webhooks/{id}/messages/{event_id}/resend", tag = "webhooks", params(("id" = String, Path, description = "The endpoint's id, `ep_` and 24 hex digits"), ("event_id" = u64, Path, description = "The event's id in the log")), security(("bearer" = ["webhooks:admin"])),
    responses((status = 202, body = Queued), (status = 400, description = "The event id is not a whole number", body = ErrorBody), (status = 404, description = "No such endpoint, or the event is not in the log", body = ErrorBody), AdminErrors))]
pub async fn resend(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath((id, event_id)): ApiPath<(String, String)>,
) -> ApiResult<(StatusCode, Json<Queued>)> {
    let principal = state.principal(&headers, Scope::WebhooksAdmin)?;
    let event_id = whole_number(&event_id).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_event_id",
            format!("event id {event_id:?} must be a whole number"),
        )
    })?;
    load(&state, &id).await?;
    if !state.webhooks.resend(&id, event_id).await? {
        return Err(ApiError::not_found(format!(
            "event {event_id} is not in the log (never appended, or trimmed by retention)"
        )));
    }
    let detail = serde_json::json!({"event_id": event_id});
    state
        .audit(&principal, "webhook.resend", id, StatusCode::ACCEPTED, detail)
        .await;
    Ok((StatusCode::ACCEPTED, Json(Queued { queued: 1 })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    /// RFC 3339 or unix milliseconds: events appended since then that the endpoint's filter takes.
    #[schema(value_type = super::openapi::Instant)]
    since: String,
}

/// Everything since a time that the endpoint's filter takes, sent again (within the log's retention).
#[utoipa::path(post, path = "/admin/v1/webhooks/{id}/replay", tag = "webhooks", params(("id" = String, Path, description = "The endpoint's id, `ep_` and 24 hex digits")), security(("bearer" = ["webhooks:admin"])),
    request_body = Replay,
    responses(
        BodyErrors,
        (status = 202, body = Queued), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), AdminErrors))]
pub async fn replay(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult<(StatusCode, Json<Queued>)> {
    let principal = state.principal(&headers, Scope::WebhooksAdmin)?;
    let replay: Replay = parse_value(body)?;
    let since_ms = super::events::instant_ms(&replay.since)
        .ok_or_else(|| ApiError::unprocessable("since: give an RFC 3339 time or unix milliseconds"))?;
    let endpoint = load(&state, &id).await?;
    let queued = state.webhooks.replay_since(&endpoint, since_ms).await?;
    let detail = serde_json::json!({"since_ms": since_ms, "queued": queued});
    state
        .audit(&principal, "webhook.replay", id, StatusCode::ACCEPTED, detail)
        .await;
    Ok((StatusCode::ACCEPTED, Json(Queued { queued })))
}

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema;

    use super::{EndpointChange, MAX_DESCRIPTION, MAX_URL, NewEndpoint};

    /// The lengths the document gives are the ones `check_endpoint` applies.
    #[test]
    fn documented_lengths_are_the_checked_ones() {
        for schema in [NewEndpoint::schema(), EndpointChange::schema()] {
            let schema = serde_json::to_value(schema).unwrap();
            assert_eq!(schema["properties"]["url"]["maxLength"], MAX_URL, "{schema}");
            assert_eq!(
                schema["properties"]["description"]["maxLength"], MAX_DESCRIPTION,
                "{schema}"
            );
        }
    }
}
