//! Analysis events over HTTP: publishing (`POST /admin/v1/events`, `…:batch`), the SSE stream
//! (`GET /v1/stream`) and the list of subscribers (`GET /admin/v1/subscribers`).

use std::collections::{HashSet, VecDeque};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use shared::domain::Instrument;
use shared::events::{NewEvent, Publish, TopicPattern};
use shared::time::{unix_ms, unix_ms_now};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::AppState;
use super::auth::{Principal, Scope};
use super::error::{AdminErrors, ApiError, ApiResult, BodyErrors, ErrorBody, ErrorDetail};
use super::extract::{ApiQuery, JsonBody, parse_value, whole_number};
use crate::events::{Events, Filter, Frame, PAGE, SubscriberStatus, Subscription, Who};
use crate::storage::{LogStep, StorageError};

/// The longest `?batch_ms=`.
const MAX_BATCH_MS: u64 = 10_000;

/// The settings of streams, from `[events]`.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    pub free_form: Vec<TopicPattern>,
    pub anonymous: Vec<TopicPattern>,
    pub max_batch: NonZeroUsize,
    pub heartbeat: Duration,
    pub retry: Duration,
}

/// Who published how many events, to which topics, under which ids.
async fn audit_published(
    state: &AppState,
    principal: &Principal,
    status: StatusCode,
    topics: impl IntoIterator<Item = String>,
    ids: &[u64],
) {
    let topics: std::collections::BTreeSet<String> = topics.into_iter().collect();
    let detail = serde_json::json!({
        "count": ids.len(), "first_id": ids.first(), "last_id": ids.last(), "topics": topics,
    });
    let target = topics.iter().next().cloned().unwrap_or_default();
    state.audit(principal, "events.publish", target, status, detail).await;
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Published {
    /// The event's place in the log: subscribers see it as `id:`, and resume after it.
    #[schema(example = 42)]
    pub id: u64,
}

fn checked(state: &AppState, value: serde_json::Value) -> ApiResult<NewEvent> {
    let publish: Publish = parse_value(value)?;
    NewEvent::check(publish, &state.streams.free_form, OffsetDateTime::now_utc())
        .map_err(|error| ApiError::unprocessable(error.to_string()))
}

/// Publishes one event: answered once it is in the durable log, before it reaches subscribers.
#[utoipa::path(
    post,
    path = "/admin/v1/events",
    tag = "events",
    security(("bearer" = ["events:publish"])),
    request_body = Publish,
    responses(
        BodyErrors,
        (status = 201, description = "In the log, with its id", body = Published),
        (status = 400, description = "Not JSON (NaN and Infinity are not JSON)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 422, description = "Unknown type, bad topic, or a payload that does not fit its type", body = ErrorBody),
        AdminErrors,
    )
)]
pub async fn publish(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult<(StatusCode, Json<Published>)> {
    let principal = state.principal(&headers, Scope::EventsPublish)?;
    let event = checked(&state, body)?;
    let topic = event.topic.to_string();
    let ids = state.events.publish(vec![event]).await?;
    let id = ids
        .first()
        .copied()
        .ok_or_else(|| ApiError::unavailable("the event log answered no id"))?;
    audit_published(&state, &principal, StatusCode::CREATED, [topic], &ids).await;
    Ok((StatusCode::CREATED, Json(Published { id })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishBatch {
    /// Each as `POST /admin/v1/events` takes it.
    events: Vec<serde_json::Value>,
}

/// What became of one event of a batch: its id, or why it was refused.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResult {
    index: usize,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorDetail>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchPublished {
    results: Vec<BatchResult>,
}

/// Publishes many events: the valid ones are appended together, in the order given, in one atomic
/// step; each result says its id or why it was refused.
#[utoipa::path(
    post,
    path = "/admin/v1/events:batch",
    tag = "events",
    security(("bearer" = ["events:publish"])),
    request_body = PublishBatch,
    responses(
        BodyErrors,
        (status = 200, description = "One result per event, in order", body = BatchPublished),
        (status = 400, description = "Not JSON, or more events than allowed", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 422, description = "Not an object with an events list", body = ErrorBody),
        AdminErrors,
    )
)]
pub async fn publish_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(batch): JsonBody<PublishBatch>,
) -> ApiResult<Json<BatchPublished>> {
    let principal = state.principal(&headers, Scope::EventsPublish)?;
    let max = state.streams.max_batch.get();
    if batch.events.len() > max {
        return Err(ApiError::bad_request(
            "batch_too_large",
            format!("at most {max} events per batch"),
        ));
    }
    let mut results = Vec::with_capacity(batch.events.len());
    let mut valid = Vec::new();
    for (index, value) in batch.events.into_iter().enumerate() {
        match checked(&state, value) {
            Ok(event) => {
                results.push(BatchResult {
                    index,
                    status: 201,
                    id: None,
                    error: None,
                });
                valid.push(event);
            }
            Err(error) => results.push(BatchResult {
                index,
                status: error.status.as_u16(),
                id: None,
                error: Some(ErrorDetail {
                    code: error.code.to_owned(),
                    message: error.message,
                }),
            }),
        }
    }
    let topics: Vec<String> = valid.iter().map(|event| event.topic.to_string()).collect();
    let ids = state.events.publish(valid).await?;
    if !ids.is_empty() {
        audit_published(&state, &principal, StatusCode::OK, topics, &ids).await;
    }
    let mut ids = ids.into_iter();
    for result in results.iter_mut().filter(|result| result.error.is_none()) {
        result.id = ids.next();
    }
    Ok(Json(BatchPublished { results }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Topic patterns, comma-separated: `*` is one segment, `**` the rest (default `**`).
    #[param(value_type = Option<Vec<TopicPattern>>, min_items = 1, style = Form, explode = false)]
    topics: Option<String>,
    /// Event types, comma-separated (default: all).
    #[param(value_type = Option<Vec<super::openapi::EventTypeName>>, min_items = 1, style = Form, explode = false)]
    types: Option<String>,
    /// Instruments, comma-separated (default: all).
    #[param(value_type = Option<Vec<Instrument>>, min_items = 1, style = Form, explode = false)]
    instruments: Option<String>,
    /// Resume after this event id (the `Last-Event-ID` header wins when both are given).
    #[param(value_type = Option<u64>)]
    last_event_id: Option<String>,
    /// Replay from this instant on (RFC 3339, or unix milliseconds).
    #[param(value_type = Option<super::openapi::Instant>)]
    since: Option<String>,
    /// Send events that arrive within this many milliseconds together (0 to 10000).
    #[param(maximum = 10000)]
    batch_ms: Option<u64>,
}

/// The items of a comma-separated list, `None` when it is absent; an empty item is refused.
fn comma_list<'a>(text: Option<&'a str>, field: &str, code: &'static str) -> ApiResult<Option<Vec<&'a str>>> {
    let Some(text) = text else { return Ok(None) };
    let items: Vec<&str> = text.split(',').collect();
    if items.iter().any(|item| item.is_empty()) {
        return Err(ApiError::bad_request(
            code,
            format!("{field} must be a comma-separated list without empty items"),
        ));
    }
    Ok(Some(items))
}

fn filter_of(query: &StreamQuery) -> ApiResult<Filter> {
    let bad = |code: &'static str| move |error: String| ApiError::bad_request(code, error);
    let topics = comma_list(query.topics.as_deref(), "topics", "invalid_topics")?
        .unwrap_or_else(|| vec!["**"])
        .into_iter()
        .map(|pattern| pattern.parse::<TopicPattern>().map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad("invalid_topics"))?;
    let types = comma_list(query.types.as_deref(), "types", "invalid_types")?;
    if let Some(bad_type) = types.iter().flatten().find(|name| !shared::events::is_type_name(name)) {
        return Err(ApiError::bad_request(
            "invalid_types",
            format!("{bad_type:?} is not an event type name: 1 to 64 of A-Z a-z 0-9 _"),
        ));
    }
    let types = types.map(|types| types.into_iter().map(str::to_owned).collect());
    let instruments = comma_list(query.instruments.as_deref(), "instruments", "invalid_instruments")?
        .map(|list| {
            list.into_iter()
                .map(|i| i.parse::<Instrument>().map_err(|e| e.to_string()))
                .collect::<Result<HashSet<_>, _>>()
        })
        .transpose()
        .map_err(bad("invalid_instruments"))?;
    Ok(Filter {
        topics,
        types,
        instruments,
    })
}

/// Where a stream starts: after an event id, or from an instant; `None`: live only.
async fn start_of(events: &Events, headers: &HeaderMap, query: &StreamQuery) -> ApiResult<Option<u64>> {
    let event_id = |raw: &str| {
        whole_number(raw).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_last_event_id",
                format!("Last-Event-ID {raw:?} must be an event id (a whole number)"),
            )
        })
    };
    // Every way of saying where to start is checked, even those a stronger one overrides.
    let since_ms = query
        .since
        .as_deref()
        .map(|since| {
            instant_ms(since).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_since",
                    format!("since {since:?} must be an RFC 3339 instant or unix milliseconds"),
                )
            })
        })
        .transpose()?;
    let from_query = query.last_event_id.as_deref().map(event_id).transpose()?;
    let from_header = headers
        .get("last-event-id")
        .map(|value| event_id(value.to_str().unwrap_or("?").trim()))
        .transpose()?;
    if let Some(after) = from_header.or(from_query) {
        return Ok(Some(after));
    }
    match since_ms {
        Some(since_ms) => Ok(Some(events.position_at(since_ms).await?.unwrap_or(0))),
        None => Ok(None),
    }
}

/// An instant written as unix milliseconds (1 to 16 digits) or in RFC 3339, as unix milliseconds.
pub(super) fn instant_ms(text: &str) -> Option<u64> {
    let millis = text.len() <= 16 && text.bytes().all(|b| b.is_ascii_digit());
    millis.then(|| whole_number(text)).flatten().or_else(|| {
        OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .ok()
            .map(unix_ms)
    })
}

/// A stream of analysis events as Server-Sent Events: `id:` the log position, `event:` the type,
/// `data:` the envelope. Resumes after `Last-Event-ID` (or `?last_event_id=`), or replays from
/// `?since=`; what retention no longer holds is announced by an `event: gap` first. A reader too
/// slow to keep up gets `event: overflow` and the end of the stream, and resumes from its last id.
#[utoipa::path(
    get,
    path = "/v1/stream",
    tag = "events",
    security((), ("bearer" = ["events:subscribe"])),
    params(StreamQuery, ("Last-Event-ID" = Option<u64>, Header, nullable = false, description = "Resume after this event id, as an EventSource sends it on reconnecting")),
    responses(
        (status = 200, description = "A stream of events; `schema` describes one event", content_type = "text/event-stream", body = super::openapi::StreamEvent),
        (status = 400, description = "A bad pattern, instrument, Last-Event-ID, since or batch_ms", body = ErrorBody),
        (status = 401, description = "These topics need a token with events:subscribe", body = ErrorBody),
        (status = 403, description = "The token may not subscribe to these topics", body = ErrorBody),
        (status = 429, description = "The token or the client address holds the most streams it may", body = ErrorBody),
        (status = 503, description = "The event log is unavailable", body = ErrorBody),
    )
)]
pub async fn stream(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<StreamQuery>,
    request: Request,
) -> ApiResult<Response> {
    let headers = request.headers();
    let remote = crate::serve::remote_of(&request);
    let filter = filter_of(&query)?;
    let batch = match query.batch_ms {
        Some(ms) if ms > MAX_BATCH_MS => {
            return Err(ApiError::bad_request(
                "invalid_batch_ms",
                format!("batch_ms must be 0 to {MAX_BATCH_MS}"),
            ));
        }
        Some(ms) if ms > 0 => Some(Duration::from_millis(ms)),
        _ => None,
    };
    let token = if headers.contains_key(header::AUTHORIZATION) {
        let principal = state.auth.authenticate(headers)?;
        principal.allow_topics(&filter.topics)?;
        Some(principal.name)
    } else {
        let anonymous = &state.streams.anonymous;
        if let Some(outside) = filter.topics.iter().find(|w| !anonymous.iter().any(|a| w.within(a))) {
            return Err(ApiError::unauthorized(format!(
                "subscribing to {outside} needs a token with the events:subscribe scope"
            )));
        }
        None
    };
    let start = start_of(&state.events, headers, &query).await?;
    let subscription = state
        .events
        .subscribe(filter.clone(), Who { token, remote })
        .map_err(|limit| ApiError::too_many(limit.to_string(), state.streams.retry))?;
    let live_after = subscription.live_after;
    let mut pending = VecDeque::new();
    let (replay, last_sent) = match start {
        Some(after) if after < live_after => (Some(after), after),
        Some(after) if after > live_after => {
            // Ahead of the log: it was started anew (a new store). Say so rather than wait for ids to catch up.
            let notice = serde_json::json!({
                "from": live_after + 1, "to": after, "reason": "the event log restarted below Last-Event-ID",
            });
            pending.push_back(Bytes::from(format!("event: gap\ndata: {notice}\n\n")));
            (None, live_after)
        }
        _ => (None, live_after),
    };
    let writer = StreamWriter {
        events: state.events.clone(),
        state: state.clone(),
        filter,
        replay: replay.map(|after| Replay { after }),
        last_sent,
        subscription,
        pending,
        heartbeat: tokio::time::interval_at(
            tokio::time::Instant::now() + state.streams.heartbeat,
            state.streams.heartbeat,
        ),
        batch,
        done: false,
    };
    let opening = Bytes::from(format!("retry: {}\n\n", state.streams.retry.as_millis()));
    let body = futures::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(opening) }).chain(
        futures::stream::unfold(writer, |mut writer| async move {
            writer.next_chunk().await.map(|chunk| (Ok(chunk), writer))
        }),
    );
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

struct Replay {
    after: u64,
}

/// Produces a subscriber's chunks: the replay from the log up to where the subscription went live,
/// then queued frames (batched when asked), heartbeats while idle, and the overflow notice.
struct StreamWriter {
    events: Arc<Events>,
    state: AppState,
    filter: Filter,
    subscription: Subscription,
    replay: Option<Replay>,
    /// The id of the last event written: frames at or below it are not written again.
    last_sent: u64,
    pending: VecDeque<Bytes>,
    heartbeat: tokio::time::Interval,
    batch: Option<Duration>,
    done: bool,
}

impl StreamWriter {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Some(chunk);
            }
            if self.done {
                return None;
            }
            if self.replay.is_some() {
                if let Err(error) = self.replay_page().await {
                    tracing::warn!(%error, "event replay failed; the stream ends and the client resumes");
                    self.done = true;
                }
                continue;
            }
            tokio::select! {
                frame = self.subscription.queue.recv() => match frame {
                    Some(frame) => return Some(self.live(frame).await),
                    None => self.finish(),
                },
                _ = self.heartbeat.tick() => return Some(Bytes::from_static(b": keep-alive\n\n")),
            }
        }
    }

    /// One page of the replay; the replay ends at the position the subscription went live at.
    async fn replay_page(&mut self) -> Result<(), StorageError> {
        let Some(replay) = &mut self.replay else {
            return Ok(());
        };
        let until = self.subscription.live_after;
        let page = self.events.read(Some(replay.after), PAGE).await?;
        let mut chunk = BytesMut::new();
        let mut written = 0u64;
        let mut last = replay.after;
        for step in page.steps(replay.after) {
            match step {
                LogStep::Event(logged) if logged.id <= until => {
                    last = logged.id;
                    if self.filter.matches(&logged.stored.event) {
                        chunk.extend_from_slice(&Frame::encode(logged).bytes);
                        written += 1;
                    }
                }
                LogStep::Gap { from, to, reason } if from <= until => {
                    let to = to.min(until);
                    last = to;
                    chunk.extend_from_slice(&Frame::gap(from, to, reason.as_str()).bytes);
                    self.state.metrics.events_gaps.inc();
                }
                _ => break,
            }
        }
        replay.after = last;
        if page.len() < PAGE.get() || last >= until {
            self.replay = None;
        }
        self.last_sent = self.last_sent.max(last);
        self.record(written, last);
        if !chunk.is_empty() {
            self.pending.push_back(chunk.freeze());
        }
        Ok(())
    }

    /// A live frame, and with batching the ones that arrive within the window.
    async fn live(&mut self, first: Frame) -> Bytes {
        let mut frames = vec![first];
        if let Some(window) = self.batch {
            let deadline = tokio::time::Instant::now() + window;
            while let Ok(Some(frame)) = tokio::time::timeout_at(deadline, self.subscription.queue.recv()).await {
                frames.push(frame);
            }
        }
        let now = unix_ms_now();
        let mut chunk = BytesMut::new();
        let mut written = 0;
        for frame in frames.iter().filter(|frame| frame.id > self.last_sent) {
            chunk.extend_from_slice(&frame.bytes);
            written += 1;
            let lag = now.saturating_sub(frame.appended_at_ms) as f64 / 1000.0;
            self.state.metrics.events_delivery_lag.observe(lag);
        }
        if let Some(last) = frames.last() {
            self.last_sent = self.last_sent.max(last.id);
            self.record(written, last.id);
        }
        self.heartbeat.reset();
        chunk.freeze()
    }

    fn record(&self, written: u64, last: u64) {
        let progress = &self.subscription.progress;
        progress.delivered.fetch_add(written, Ordering::Relaxed);
        progress.last_event_id.fetch_max(last, Ordering::Relaxed);
        self.state.metrics.events_out.inc_by(written);
    }

    /// The queue closed: an overflow (say so, with where to resume) or the origin stopping.
    fn finish(&mut self) {
        self.done = true;
        if self.subscription.progress.overflowed.load(Ordering::Relaxed) {
            let notice = serde_json::json!({
                "last_event_id": self.last_sent,
                "reason": "this reader fell behind; reconnect with Last-Event-ID to resume",
            });
            self.pending
                .push_back(Bytes::from(format!("event: overflow\ndata: {notice}\n\n")));
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriberList {
    subscribers: Vec<SubscriberStatus>,
    /// The newest event id in the log.
    head: Option<u64>,
}

/// The SSE subscribers connected to this origin: filter, since when, events delivered, lag.
#[utoipa::path(
    get,
    path = "/admin/v1/subscribers",
    tag = "events",
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "Connected subscribers", body = SubscriberList),
        AdminErrors,
    )
)]
pub async fn subscribers(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Json<SubscriberList>> {
    state.principal(&headers, Scope::Admin)?;
    let head = state.events.read(None, NonZeroUsize::MIN).await?.head;
    Ok(Json(SubscriberList {
        subscribers: state.events.subscribers(head),
        head,
    }))
}
