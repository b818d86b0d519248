//! Webhooks: every event of the log that matches an endpoint's filter is delivered to it as a signed
//! `POST` (Standard Webhooks), at least once.
//!
//! Two loops per origin, both over the durable store so that origins sharing it share the work:
//! * the **dispatcher** follows the event log from the store's dispatch cursor and queues one delivery
//!   per (event, matching endpoint), moving the cursor in the same atomic step (compare-and-set, so two
//!   origins never queue an event twice);
//! * the **deliverer** takes due deliveries, sends them within per-endpoint concurrency and rate limits
//!   (a few wait briefly for a busy endpoint's turn, holding no attempt slot of the origin; the rest are
//!   put off through the store), and finishes each: delivered, retried
//!   later by the schedule (or the receiver's `Retry-After`), or a dead letter. A delivery taken by an
//!   origin that dies is reclaimed by another after `reclaim_after`.

pub mod target;

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderName};
use serde::Serialize;
use shared::events::{Event, TopicPattern};
use shared::webhooks::{Secret, signature_header};
use time::OffsetDateTime;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use utoipa::ToSchema;

use self::target::{Resolver, TargetPolicy};
use crate::config::WebhooksConfig;
use crate::events::{Events, Filter, PAGE};
use crate::metrics::Metrics;
use crate::storage::webhooks::{Attempt, Delivery, Finish, StoredEndpoint, Taken};
use crate::storage::{GapReason, LogStep, Result, SharedStore, StorageError, unix_millis};

/// Deliveries taken from the queue at a time.
const TAKE: usize = 256;
/// Deliveries an origin may have taken and not finished, per attempt it may have in flight.
const TAKEN_PER_SLOT: usize = 4;
/// Deliveries that may wait here for a busy endpoint, per attempt it may have in flight (fewer when
/// it answers too slowly to start them within [`MAX_WAIT`]).
const WAITING_PER_SLOT: usize = 16;
/// The longest a delivery waits here for its endpoint; well within `reclaim_after`, so that no other
/// origin takes it meanwhile.
const MAX_WAIT: Duration = Duration::from_secs(5);
/// Event bodies kept in memory: endpoints that share an event read it once.
const BODY_CACHE: usize = 4096;

/// `msg_<event id>`: the same for every attempt and replay of a message, for receivers' idempotency.
pub fn message_id(event_id: u64) -> String {
    format!("msg_{event_id}")
}

/// The time deliveries are scheduled by: when a retry is due, when an attempt was made, since when an
/// endpoint has been failing. It is the wall clock plus an offset that only grows; in service the
/// offset stays zero, and tests move it forward to walk a schedule of hours in moments (tokio's paused
/// time cannot: the HTTP client's timeouts would fire while a real receiver answers). Deliveries that
/// the store queues as due at the wall clock's now are due by this clock too.
#[derive(Debug, Default)]
pub struct Clock {
    ahead_ms: AtomicU64,
}

impl Clock {
    pub fn now_ms(&self) -> u64 {
        unix_millis(OffsetDateTime::now_utc()) + self.ahead_ms.load(Ordering::Relaxed)
    }

    /// Moves this clock `by` ahead of the wall clock's pace.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX / 2);
        self.ahead_ms.fetch_add(by, Ordering::Relaxed);
    }

    /// `delay` from now, in milliseconds since the epoch.
    fn after(&self, delay: Duration) -> u64 {
        self.now_ms()
            .saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
    }
}

/// What became of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Delivered,
    /// Worth another attempt; `retry_after` when the receiver asked for a delay.
    Retry {
        retry_after: Option<Duration>,
    },
    /// Refused for good.
    Final,
}

/// How a response status is taken: 2xx delivered; timeouts, conflicts, throttling and server errors
/// retried; every other status final.
fn verdict(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 | 409 | 425 | 429 | 500..=599 => Verdict::Retry { retry_after: None },
        _ => Verdict::Final,
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(std::time::SystemTime::now()).unwrap_or_default())
}

/// The endpoint fields the dispatcher matches events with.
struct Route {
    id: String,
    created_at_ms: u64,
    filter: Filter,
}

impl Route {
    fn of(endpoint: &StoredEndpoint) -> Option<Self> {
        let topics = endpoint
            .topics
            .iter()
            .map(|t| t.parse::<TopicPattern>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .ok()?;
        Some(Self {
            id: endpoint.id.clone(),
            created_at_ms: endpoint.created_at_ms,
            filter: Filter {
                topics,
                types: endpoint.types.as_ref().map(|t| t.iter().cloned().collect()),
                instruments: None,
            },
        })
    }
}

/// Per-endpoint gate of one origin: its attempts in flight, those waiting for a turn, a token
/// bucket, and the turns booked for deliveries put off.
#[derive(Debug)]
struct Gate {
    slots: Arc<Semaphore>,
    waiting: usize,
    tokens: f64,
    refilled: Option<Instant>,
    /// How long an attempt takes, on average lately.
    attempt_time: Duration,
    /// The latest turn booked for a delivery put off.
    booked: Option<Instant>,
}

impl Gate {
    fn new(concurrency: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(concurrency)),
            waiting: 0,
            tokens: 0.0,
            refilled: None,
            attempt_time: Duration::from_millis(10),
            booked: None,
        }
    }

    /// The time between turns at the pace the endpoint answers.
    fn pace(&self, concurrency: usize) -> Duration {
        self.attempt_time / u32::try_from(concurrency).unwrap_or(u32::MAX)
    }

    /// How many may wait here: as many as can start within [`MAX_WAIT`], at most
    /// [`WAITING_PER_SLOT`] per slot. A slow endpoint thus keeps few of the origin's deliveries
    /// waiting.
    fn waiting_room(&self, concurrency: usize) -> usize {
        let startable = MAX_WAIT.as_secs_f64() / self.pace(concurrency).as_secs_f64().max(1e-6);
        (concurrency * WAITING_PER_SLOT).min(startable as usize)
    }

    /// Books a turn after those waiting and those booked before, at the pace the endpoint answers,
    /// and answers how long until then: deliveries put off return about when they can start instead
    /// of all at once, so each is put off about once.
    fn book_turn(&mut self, concurrency: usize) -> Duration {
        let now = Instant::now();
        let pace = self.pace(concurrency);
        let after_waiting = now + pace * u32::try_from(self.waiting).unwrap_or(u32::MAX);
        let turn = self
            .booked
            .filter(|&booked| booked > after_waiting)
            .unwrap_or(after_waiting)
            + pace;
        self.booked = Some(turn);
        (turn - now).max(Duration::from_millis(1))
    }
}

/// Counts of one endpoint, as `GET /admin/v1/webhooks/{id}/stats` shows them.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EndpointStats {
    pub id: String,
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// Since when every attempt failed (RFC 3339); absent while healthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since_ms: Option<u64>,
    /// Attempts by outcome: delivered, retry, dead.
    pub attempts: std::collections::BTreeMap<String, u64>,
    pub dead_letters: usize,
    /// Deliveries queued for every endpoint.
    pub queue_depth: u64,
}

/// Settings the loops use, from `[webhooks]`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub schedule: Vec<Duration>,
    pub max_retry_after: Duration,
    pub endpoint_concurrency: usize,
    pub disable_after: Duration,
    pub reclaim_after: Duration,
    pub poll_interval: Duration,
    pub attempts_kept: usize,
    pub snippet_bytes: usize,
    pub secret_overlap: Duration,
}

pub struct Webhooks {
    store: SharedStore,
    events: Arc<Events>,
    pub policy: Arc<TargetPolicy>,
    pub settings: Settings,
    client: reqwest::Client,
    /// This origin's name among the queue's consumers.
    consumer: String,
    /// Deliveries this origin has taken and not finished: waiting for a turn or attempted.
    taken: Arc<Semaphore>,
    /// Attempts in flight.
    slots: Semaphore,
    gates: Mutex<HashMap<String, Gate>>,
    bodies: Mutex<(HashMap<u64, Bytes>, std::collections::VecDeque<u64>)>,
    /// Woken when deliveries may have become due (a dispatch, a replay).
    queued: Arc<Notify>,
    clock: Clock,
    metrics: Metrics,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

impl Webhooks {
    pub fn new(
        store: SharedStore,
        events: Arc<Events>,
        config: &WebhooksConfig,
        metrics: Metrics,
    ) -> anyhow::Result<Arc<Self>> {
        anyhow::ensure!(
            !config.retry_schedule.is_empty(),
            "webhooks.retry_schedule lists no attempt"
        );
        anyhow::ensure!(
            config.reclaim_after > config.timeout,
            "webhooks.reclaim_after must be longer than webhooks.timeout, or deliveries in flight are sent twice"
        );
        let policy = Arc::new(TargetPolicy::new(config.allow_http, &config.allowed_targets));
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            // A proxy (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, which reqwest reads by default) resolves the
            // host itself and would connect to addresses the resolver below never checked.
            .no_proxy()
            .dns_resolver(Arc::new(Resolver(policy.clone())))
            .user_agent(concat!("forecast-origin-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let mut id = [0u8; 6];
        rand::rng().fill(&mut id);
        let consumer = format!(
            "origin-{}-{}",
            std::process::id(),
            id.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        Ok(Arc::new(Self {
            store,
            events,
            policy,
            settings: Settings {
                schedule: config.retry_schedule.clone(),
                max_retry_after: config.max_retry_after,
                endpoint_concurrency: config.endpoint_concurrency.get(),
                disable_after: config.disable_after,
                reclaim_after: config.reclaim_after,
                poll_interval: config.poll_interval,
                attempts_kept: config.attempts_kept.get(),
                snippet_bytes: config.response_snippet_bytes,
                secret_overlap: config.secret_overlap,
            },
            client,
            consumer,
            taken: Arc::new(Semaphore::new(config.concurrency.get() * TAKEN_PER_SLOT)),
            slots: Semaphore::new(config.concurrency.get()),
            gates: Mutex::default(),
            bodies: Mutex::default(),
            queued: Arc::default(),
            clock: Clock::default(),
            metrics,
        }))
    }

    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Runs the dispatcher and the deliverer until the origin is dropped.
    pub fn start(self: &Arc<Self>) {
        tokio::spawn(dispatch_loop(Arc::downgrade(self), self.events.appended()));
        tokio::spawn(deliver_loop(Arc::downgrade(self)));
    }

    /// Queues `deliveries` due now, outside the dispatcher (replays, redrives).
    pub async fn enqueue(&self, deliveries: &[Delivery]) -> Result<()> {
        self.store.enqueue(deliveries, self.clock.now_ms()).await?;
        self.queued.notify_one();
        Ok(())
    }

    pub async fn redrive(&self, endpoint: &str) -> Result<usize> {
        let count = self.store.redrive(endpoint, self.clock.now_ms()).await?;
        self.queued.notify_one();
        Ok(count)
    }

    /// Every event since `since_ms` that the endpoint's filter takes, queued again; answers how many.
    pub async fn replay_since(&self, endpoint: &StoredEndpoint, since_ms: u64) -> Result<usize> {
        let route = Route::of(endpoint).ok_or_else(|| StorageError::corrupt("stored endpoint has a bad topic"))?;
        let mut after = self.events.position_at(since_ms).await?;
        let mut queued = 0;
        loop {
            let page = self.events.read(after, PAGE).await?;
            let Some(last) = page.last_id() else { break };
            after = Some(last);
            let deliveries: Vec<Delivery> = page
                .events
                .iter()
                .filter(|logged| route.filter.matches(&logged.stored.event))
                .map(|logged| Delivery {
                    endpoint: endpoint.id.clone(),
                    event_id: logged.id,
                    attempts: 0,
                    appended_at_ms: logged.stored.appended_at_ms,
                    put_off: false,
                })
                .collect();
            self.enqueue(&deliveries).await?;
            queued += deliveries.len();
        }
        Ok(queued)
    }

    /// One message again (whatever became of it before), with fresh attempts.
    pub async fn resend(&self, endpoint: &str, event_id: u64) -> Result<bool> {
        let Some(logged) = self
            .events
            .read(event_id.checked_sub(1), NonZeroUsize::MIN)
            .await?
            .events
            .pop()
        else {
            return Ok(false);
        };
        if logged.id != event_id {
            return Ok(false);
        }
        let delivery = Delivery {
            endpoint: endpoint.to_owned(),
            event_id,
            attempts: 0,
            appended_at_ms: logged.stored.appended_at_ms,
            put_off: false,
        };
        self.enqueue(&[delivery]).await?;
        Ok(true)
    }

    async fn queue_depth(&self) -> Result<u64> {
        let depth = self.store.queue_depth().await?;
        self.metrics
            .webhook_queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
        Ok(depth)
    }

    pub async fn stats(&self, endpoint: &StoredEndpoint) -> Result<EndpointStats> {
        Ok(EndpointStats {
            id: endpoint.id.clone(),
            enabled: endpoint.enabled,
            disabled_reason: endpoint.disabled_reason.clone(),
            failing_since_ms: endpoint.failing_since_ms,
            attempts: self.store.counters(&endpoint.id).await?,
            dead_letters: self.store.dead_letters(&endpoint.id).await?.len(),
            queue_depth: self.queue_depth().await?,
        })
    }

    /// Queues what was appended after the cursor for the endpoints that take it. Answers whether there
    /// may be more.
    async fn dispatch_once(&self) -> Result<bool> {
        let cursor = match self.store.dispatch_cursor().await? {
            Some(cursor) => cursor,
            None => {
                // The first start: endpoints get events from now on, not the log's history.
                let head = self.events.read(None, NonZeroUsize::MIN).await?.head.unwrap_or(0);
                self.store.dispatch(None, head, &[]).await?;
                return Ok(true);
            }
        };
        let page = self.events.read(Some(cursor), PAGE).await?;
        let Some(last) = page.last_id() else {
            return Ok(false);
        };
        let routes: Vec<Route> = self
            .store
            .endpoints()
            .await?
            .iter()
            .filter(|endpoint| endpoint.enabled)
            .filter_map(Route::of)
            .collect();
        let mut deliveries = Vec::new();
        for step in page.steps(cursor) {
            let logged = match step {
                LogStep::Event(logged) => logged,
                LogStep::Gap { from, to, reason } => {
                    tracing::error!(from, to, reason = reason.as_str(), "events passed over by webhooks");
                    if reason == GapReason::Unreadable {
                        self.metrics.events_unreadable.inc_by(to - from + 1);
                    }
                    continue;
                }
            };
            for route in &routes {
                if logged.stored.appended_at_ms >= route.created_at_ms && route.filter.matches(&logged.stored.event) {
                    deliveries.push(Delivery {
                        endpoint: route.id.clone(),
                        event_id: logged.id,
                        attempts: 0,
                        appended_at_ms: logged.stored.appended_at_ms,
                        put_off: false,
                    });
                }
            }
        }
        if self.store.dispatch(Some(cursor), last, &deliveries).await? && !deliveries.is_empty() {
            self.metrics.webhook_queued.inc_by(deliveries.len() as u64);
            self.queued.notify_one();
            self.queue_depth().await?;
        }
        Ok(true)
    }

    /// The body of event `id`: the envelope as JSON. `None` when the log no longer holds it.
    async fn body(&self, id: u64) -> Result<Option<Bytes>> {
        if let Some(body) = self.bodies.lock().unwrap_or_else(PoisonError::into_inner).0.get(&id) {
            return Ok(Some(body.clone()));
        }
        let page = self.events.read(id.checked_sub(1), NonZeroUsize::MIN).await?;
        let Some(logged) = page.events.into_iter().next().filter(|logged| logged.id == id) else {
            return Ok(None);
        };
        let event = Event {
            id,
            event: logged.stored.event,
        };
        let body = Bytes::from(serde_json::to_vec(&event).map_err(StorageError::corrupt)?);
        let mut cache = self.bodies.lock().unwrap_or_else(PoisonError::into_inner);
        let (map, order) = &mut *cache;
        if map.insert(id, body.clone()).is_none() {
            order.push_back(id);
        }
        while order.len() > BODY_CACHE {
            if let Some(oldest) = order.pop_front() {
                map.remove(&oldest);
            }
        }
        Ok(Some(body))
    }

    /// Waits for a turn of `endpoint`: a token of its rate limit and one of its attempt slots. A few
    /// deliveries per slot wait here, briefly (each still taken by this origin); beyond that, or
    /// when the turn is further off, answers how long to put the delivery off through the store.
    async fn admit(
        &self,
        endpoint: &StoredEndpoint,
        put_off: bool,
    ) -> std::result::Result<OwnedSemaphorePermit, Duration> {
        let (slots, wait) = {
            let mut gates = self.gates.lock().unwrap_or_else(PoisonError::into_inner);
            let concurrency = self.settings.endpoint_concurrency;
            let gate = gates
                .entry(endpoint.id.clone())
                .or_insert_with(|| Gate::new(concurrency));
            // The bucket may go below zero: each token taken ahead is a turn further off.
            let mut wait = Duration::ZERO;
            if let Some(rate) = endpoint.rate_limit {
                let rate = f64::from(rate.max(1));
                let now = Instant::now();
                let elapsed = gate.refilled.map_or(1.0, |at| now.duration_since(at).as_secs_f64());
                gate.tokens = (gate.tokens + elapsed * rate).min(rate);
                gate.refilled = Some(now);
                wait = Duration::from_secs_f64((1.0 - gate.tokens).max(0.0) / rate);
            }
            // While turns are booked, a delivery taken since goes behind them, not ahead.
            let line = gate.booked.is_some_and(|booked| booked > Instant::now());
            if gate.waiting >= gate.waiting_room(concurrency) || (line && !put_off) {
                return Err(wait.max(gate.book_turn(concurrency)));
            }
            if wait > MAX_WAIT {
                return Err(wait);
            }
            if endpoint.rate_limit.is_some() {
                gate.tokens -= 1.0;
            }
            gate.waiting += 1;
            (gate.slots.clone(), wait)
        };
        tokio::time::sleep(wait).await;
        let permit = tokio::time::timeout(MAX_WAIT, slots.acquire_owned()).await;
        let concurrency = self.settings.endpoint_concurrency;
        let mut gates = self.gates.lock().unwrap_or_else(PoisonError::into_inner);
        let gate = gates.get_mut(&endpoint.id);
        match (permit, gate) {
            (Ok(Ok(permit)), Some(gate)) => {
                gate.waiting -= 1;
                Ok(permit)
            }
            (_, Some(gate)) => {
                gate.waiting -= 1;
                Err(gate.book_turn(concurrency))
            }
            // Gates are never removed while deliveries wait on them.
            (_, None) => Err(MAX_WAIT),
        }
    }

    /// Records how long an attempt to `endpoint` took.
    fn attempted(&self, endpoint: &str, took: Duration) {
        if let Some(gate) = self
            .gates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(endpoint)
        {
            gate.attempt_time = (gate.attempt_time * 7 + took) / 8;
        }
    }

    /// The delay before attempt `next` (0-based) by the schedule, jittered by up to a fifth either way.
    fn scheduled_delay(&self, next: usize) -> Option<Duration> {
        let delay = *self.settings.schedule.get(next)?;
        let jitter = rand::rng().random_range(0.8..1.2);
        Some(delay.mul_f64(jitter))
    }

    /// Takes one delivery through an attempt and finishes it.
    async fn deliver(&self, taken: Taken) -> Result<()> {
        let delivery = &taken.delivery;
        let Some(endpoint) = self.store.endpoint(&delivery.endpoint).await? else {
            // The endpoint was deleted: its deliveries go with it.
            return self.store.finish_delivery(&taken, &Finish::Done).await;
        };
        if !endpoint.enabled {
            self.metrics.webhook_dead_letters.inc();
            return self
                .store
                .finish_delivery(&taken, &Finish::Dead(delivery.clone()))
                .await;
        }
        let turn = match self.admit(&endpoint, delivery.put_off).await {
            Ok(turn) => turn,
            Err(wait) => {
                let finish = Finish::Later {
                    delivery: Delivery {
                        put_off: true,
                        ..delivery.clone()
                    },
                    due_ms: self.clock.after(wait),
                };
                return self.store.finish_delivery(&taken, &finish).await;
            }
        };
        let outcome = {
            let _slot = self.slots.acquire().await.map_err(StorageError::unavailable)?;
            let started = Instant::now();
            let outcome = self.attempt(&endpoint, delivery).await;
            self.attempted(&endpoint.id, started.elapsed());
            outcome
        };
        drop(turn);
        let (attempt, verdict) = outcome?;
        let finish = self.finish_for(delivery, verdict);
        let outcome_name = match &finish {
            Finish::Done => "delivered",
            Finish::Later { .. } => "retry",
            Finish::Dead(_) => "dead",
        };
        let attempt = Attempt {
            outcome: outcome_name.to_owned(),
            ..attempt
        };
        self.metrics.webhook_attempts.with_label_values(&[outcome_name]).inc();
        match &finish {
            Finish::Done => {
                // Appended by the wall clock, so measured by it.
                let latency = unix_millis(OffsetDateTime::now_utc()).saturating_sub(delivery.appended_at_ms);
                self.metrics.webhook_latency.observe(latency as f64 / 1000.0);
            }
            Finish::Dead(_) => self.metrics.webhook_dead_letters.inc(),
            Finish::Later { .. } => {}
        }
        self.store
            .record_attempt(&endpoint.id, &attempt, self.settings.attempts_kept)
            .await?;
        // Health before the finish: once a dead letter shows, so does the failure behind it.
        self.update_health(endpoint, verdict == Verdict::Delivered).await?;
        self.store.finish_delivery(&taken, &finish).await
    }

    fn finish_for(&self, delivery: &Delivery, verdict: Verdict) -> Finish {
        let made = delivery.attempts + 1;
        match verdict {
            Verdict::Delivered => Finish::Done,
            Verdict::Final => Finish::Dead(Delivery {
                attempts: made,
                put_off: false,
                ..delivery.clone()
            }),
            Verdict::Retry { retry_after } => {
                let scheduled = self.scheduled_delay(made as usize);
                let delay = match (scheduled, retry_after) {
                    (None, _) => None,
                    (Some(_), Some(asked)) => Some(asked.min(self.settings.max_retry_after)),
                    (Some(scheduled), None) => Some(scheduled),
                };
                // A retry goes back in line like a new delivery.
                let next = Delivery {
                    attempts: made,
                    put_off: false,
                    ..delivery.clone()
                };
                match delay {
                    Some(delay) => Finish::Later {
                        delivery: next,
                        due_ms: self.clock.after(delay),
                    },
                    None => Finish::Dead(next),
                }
            }
        }
    }

    /// Sends one attempt; answers its record (outcome filled in by the caller) and verdict.
    async fn attempt(&self, endpoint: &StoredEndpoint, delivery: &Delivery) -> Result<(Attempt, Verdict)> {
        let started = Instant::now();
        let mut attempt = Attempt {
            message_id: message_id(delivery.event_id),
            event_id: delivery.event_id,
            attempt: delivery.attempts + 1,
            at_ms: self.clock.now_ms(),
            outcome: String::new(),
            status: None,
            latency_ms: 0,
            error: None,
            response: String::new(),
        };
        let Some(body) = self.body(delivery.event_id).await? else {
            attempt.error = Some("the event was trimmed from the log before it could be delivered".into());
            return Ok((attempt, Verdict::Final));
        };
        let url = match self.policy.parse(&endpoint.url) {
            Ok(url) => url,
            Err(error) => {
                attempt.error = Some(error.to_string());
                return Ok((attempt, Verdict::Final));
            }
        };
        if let Err(error) = self.policy.check(&url).await {
            attempt.error = Some(error.to_string());
            return Ok((attempt, Verdict::Final));
        }
        // Receivers compare the signed timestamp with their wall clock; secrets expire by it too.
        let now = OffsetDateTime::now_utc();
        let secrets = signing_secrets(endpoint, unix_millis(now));
        let timestamp = now.unix_timestamp();
        let signature = signature_header(&secrets, &attempt.message_id, timestamp, &body);
        let mut request = self.client.post(url).header("content-type", "application/json");
        for (name, value) in &endpoint.headers {
            request = request.header(name, value);
        }
        let request = request
            .header("webhook-id", &attempt.message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body);
        let verdict = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                attempt.status = Some(status);
                let asked = retry_after(response.headers());
                attempt.response = snippet(response, self.settings.snippet_bytes).await;
                match verdict(status) {
                    Verdict::Retry { .. } => Verdict::Retry { retry_after: asked },
                    other => {
                        if (300..400).contains(&status) {
                            attempt.error = Some("redirects are not followed".into());
                        }
                        other
                    }
                }
            }
            Err(error) => {
                attempt.error = Some(describe(&error));
                Verdict::Retry { retry_after: None }
            }
        };
        attempt.latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Ok((attempt, verdict))
    }

    /// Marks an endpoint failing since its first failure, healthy on a success, disabled once it has
    /// failed for `disable_after`. Changed by compare-and-set, so an operator's change is not undone.
    async fn update_health(&self, mut endpoint: StoredEndpoint, delivered: bool) -> Result<()> {
        let id = endpoint.id.clone();
        for _ in 0..3 {
            let now = self.clock.now_ms();
            let revision = endpoint.revision;
            match (delivered, endpoint.failing_since_ms) {
                (true, None) => return Ok(()),
                (true, Some(_)) => endpoint.failing_since_ms = None,
                (false, None) => endpoint.failing_since_ms = Some(now),
                (false, Some(since)) => {
                    let disable_after = u64::try_from(self.settings.disable_after.as_millis()).unwrap_or(u64::MAX);
                    if !endpoint.enabled || now.saturating_sub(since) < disable_after {
                        return Ok(());
                    }
                    endpoint.enabled = false;
                    endpoint.disabled_reason = Some(format!(
                        "every attempt failed for {} (webhooks.disable_after)",
                        humantime::format_duration(Duration::from_millis(now - since))
                    ));
                    tracing::warn!(endpoint = %id, "webhook endpoint disabled after failing continuously");
                    self.metrics.webhook_disabled.inc();
                }
            }
            endpoint.revision += 1;
            endpoint.updated_at_ms = now;
            if self.store.put_endpoint(&endpoint, Some(revision)).await? {
                return Ok(());
            }
            // Changed meanwhile (by an operator or another origin): judge the stored one.
            match self.store.endpoint(&id).await? {
                Some(stored) => endpoint = stored,
                None => return Ok(()),
            }
        }
        Ok(())
    }
}

/// The secrets that sign a message at `now_ms`: the current one and those rotated out but not expired.
pub fn signing_secrets(endpoint: &StoredEndpoint, now_ms: u64) -> Vec<Secret> {
    endpoint
        .secrets
        .iter()
        .filter(|s| s.expires_at_ms.is_none_or(|at| at > now_ms))
        .filter_map(|s| Secret::parse(&s.secret).ok())
        .collect()
}

/// The start of a response body, as text.
async fn snippet(mut response: reqwest::Response, limit: usize) -> String {
    let mut kept = Vec::new();
    while kept.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => kept.extend_from_slice(&chunk[..chunk.len().min(limit - kept.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// An error of the HTTP client, with its causes.
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn dispatch_loop(webhooks: Weak<Webhooks>, mut appended: tokio::sync::watch::Receiver<u64>) {
    loop {
        let Some(hub) = webhooks.upgrade() else { return };
        let interval = hub.settings.poll_interval;
        let more = match hub.dispatch_once().await {
            Ok(more) => more,
            Err(error) => {
                tracing::warn!(%error, "webhook dispatch failed; retrying");
                false
            }
        };
        drop(hub);
        if !more {
            // Events appended through this origin wake the dispatcher at once; others' are polled.
            let _ = tokio::time::timeout(interval, appended.changed()).await;
        }
    }
}

async fn deliver_loop(webhooks: Weak<Webhooks>) {
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        let Some(hub) = webhooks.upgrade() else { return };
        while in_flight.try_join_next().is_some() {}
        let free = hub.taken.available_permits().min(TAKE);
        let taken = if free == 0 {
            Ok(Vec::new())
        } else {
            hub.store
                .take_deliveries(&hub.consumer, free, hub.clock.now_ms(), hub.settings.reclaim_after)
                .await
        };
        let taken = taken.unwrap_or_else(|error| {
            tracing::warn!(%error, "taking webhook deliveries failed; retrying");
            Vec::new()
        });
        let busy = !taken.is_empty();
        for delivery in taken {
            let Ok(permit) = hub.taken.clone().acquire_owned().await else {
                return;
            };
            let hub = hub.clone();
            in_flight.spawn(async move {
                if let Err(error) = hub.deliver(delivery).await {
                    // Unfinished: it stays taken and is reclaimed after reclaim_after.
                    tracing::warn!(%error, "webhook delivery not finished");
                }
                drop(permit);
            });
        }
        if !busy {
            // Without the hub: a stopped origin lets go of its store at once.
            let (queued, interval) = (hub.queued.clone(), hub.settings.poll_interval);
            drop(hub);
            let _ = tokio::time::timeout(interval, queued.notified()).await;
        }
    }
}

/// Checks the custom headers an endpoint adds to its requests.
/// A custom header's name: an HTTP token.
pub const HEADER_NAME_PATTERN: &str = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";
/// A custom header's value: visible ASCII, spaces and tabs.
pub const HEADER_VALUE_PATTERN: &str = "^[\\t\\x20-\\x7e]*$";
/// The most custom headers of an endpoint.
pub const MAX_HEADERS: usize = 20;
/// The longest custom header value (and name).
pub const MAX_HEADER_VALUE: usize = 1024;

pub fn check_headers(headers: &std::collections::BTreeMap<String, String>) -> std::result::Result<(), String> {
    const RESERVED: &[&str] = &[
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-type",
        "content-length",
        "host",
        "transfer-encoding",
        "connection",
    ];
    if headers.len() > MAX_HEADERS {
        return Err(format!("at most {MAX_HEADERS} custom headers"));
    }
    let mut seen = HashSet::new();
    for (name, value) in headers {
        if name.len() > MAX_HEADER_VALUE {
            return Err(format!(
                "the header name `{name}` is longer than {MAX_HEADER_VALUE} bytes"
            ));
        }
        let parsed = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("`{name}` is not a header name"))?;
        if RESERVED.contains(&parsed.as_str()) {
            return Err(format!("header `{name}` is set by the dispatcher"));
        }
        if !seen.insert(parsed) {
            return Err(format!("header `{name}` is given twice"));
        }
        if !value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
            return Err(format!(
                "the value of header `{name}` must hold only visible ASCII, spaces and tabs"
            ));
        }
        if value.len() > MAX_HEADER_VALUE {
            return Err(format!(
                "the value of header `{name}` is longer than {MAX_HEADER_VALUE} bytes"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn statuses_are_delivered_retried_or_final() {
        assert_eq!(verdict(200), Verdict::Delivered);
        assert_eq!(verdict(204), Verdict::Delivered);
        for status in [408, 409, 425, 429, 500, 503] {
            assert_eq!(verdict(status), Verdict::Retry { retry_after: None }, "{status}");
        }
        for status in [301, 400, 401, 404, 410, 422] {
            assert_eq!(verdict(status), Verdict::Final, "{status}");
        }
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_a_date() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        headers.insert(
            "retry-after",
            HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap(),
        );
        let parsed = retry_after(&headers).unwrap();
        assert!(
            parsed > Duration::from_secs(100) && parsed <= Duration::from_secs(120),
            "{parsed:?}"
        );
        headers.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn custom_headers_may_not_replace_the_signature() {
        let headers = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        assert!(check_headers(&headers(&[("x-team", "quant")])).is_ok());
        assert!(check_headers(&headers(&[("Webhook-Signature", "v1,x")])).is_err());
        assert!(check_headers(&headers(&[("bad name", "x")])).is_err());
        assert!(check_headers(&headers(&[("x-a", "line\nbreak")])).is_err());
    }
}
