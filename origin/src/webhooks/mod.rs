//! Webhooks: every event of the log that matches an endpoint's filter is delivered to it as a signed
//! `POST` (Standard Webhooks), at least once.
//!
//! Two loops per origin, both over the durable store so that origins sharing it share the work:
//! * the **dispatcher** (`dispatch`) follows the event log from the store's dispatch cursor and queues
//!   one delivery per (event, matching endpoint), moving the cursor in the same atomic step
//!   (compare-and-set, so two origins never queue an event twice);
//! * the **deliverer** (`delivery`) takes due deliveries, sends them within per-endpoint concurrency
//!   and rate limits (a few wait briefly for a busy endpoint's turn, holding no attempt slot of the
//!   origin; the rest are put off through the store), and finishes each: delivered, retried later by
//!   the schedule (or the receiver's `Retry-After`), or a dead letter. A delivery taken by an origin
//!   that dies is reclaimed by another after `reclaim_after`.
//!
//! The modules:
//! * `policy` — how an answer is taken, when a delivery is tried again, when an endpoint is disabled;
//! * `gates` — per-endpoint in-flight and rate limits, and the line of deliveries waiting for a turn;
//! * `endpoints` — what is checked about an endpoint and read from it (custom headers, signing
//!   secrets, the filter of its events);
//! * `clock` — the one "now" deliveries are scheduled by;
//! * `dispatch` — the dispatcher, and the operator's replays, resends and redrives;
//! * `delivery` — the deliverer, from a taken delivery to its finish;
//! * `attempt` — one signed request over HTTP and what its answer says;
//! * [`target`] — which URLs and addresses may be sent to.
//!
//! `policy`, `gates` and `endpoints` do no I/O and are tested without a server. Nothing here depends on
//! the HTTP API (the `api` module): it calls [`Webhooks`], which answers storage errors, and
//! [`check_headers`], which answers a [`HeaderError`].

mod attempt;
mod clock;
mod delivery;
mod dispatch;
mod endpoints;
mod gates;
mod policy;
pub mod target;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde::Serialize;
use tokio::sync::{Notify, Semaphore};
use utoipa::ToSchema;

use self::attempt::BodyCache;
pub use self::clock::Clock;
use self::delivery::TAKEN_PER_SLOT;
pub use self::endpoints::{
    HEADER_NAME_PATTERN, HEADER_VALUE_PATTERN, HeaderError, MAX_HEADER_VALUE, MAX_HEADERS, check_headers,
    signing_secrets,
};
use self::gates::Gates;
pub use self::policy::RetrySchedule;
use self::target::TargetPolicy;
use crate::config::WebhooksConfig;
use crate::events::Events;
use crate::metrics::Metrics;
use crate::storage::webhooks::StoredEndpoint;
use crate::storage::{Result, SharedStore, StoredEventAt};
use crate::tasks::Tasks;

/// `msg_<event id>`: the same for every attempt and replay of a message, for receivers' idempotency.
pub fn message_id(event_id: u64) -> String {
    format!("msg_{event_id}")
}

/// Counts of one endpoint, as `GET /admin/v1/webhooks/{id}/stats` shows them.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EndpointStats {
    pub id: String,
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// Since when every attempt failed (unix milliseconds); absent while healthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since_ms: Option<u64>,
    /// Attempts by outcome: delivered, retry, dead.
    pub attempts: BTreeMap<String, u64>,
    pub dead_letters: usize,
    /// Deliveries queued for every endpoint.
    pub queue_depth: u64,
}

/// Settings the loops use, from `[webhooks]`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub retries: RetrySchedule,
    pub disable_after: Duration,
    pub reclaim_after: Duration,
    pub poll_interval: Duration,
    pub attempts_kept: usize,
    pub snippet_bytes: usize,
    pub secret_overlap: Duration,
}

/// The webhooks of one origin: what the admin API calls, and the two loops [`Webhooks::start`] runs.
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
    gates: Gates,
    bodies: BodyCache,
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
        let client = attempt::client(config.timeout, policy.clone())?;
        let mut id = [0u8; 6];
        rand::rng().fill(&mut id);
        let consumer = format!("origin-{}-{}", std::process::id(), hex::encode(id));
        Ok(Arc::new(Self {
            store,
            events,
            policy,
            settings: Settings {
                retries: RetrySchedule {
                    delays: config.retry_schedule.clone(),
                    max_retry_after: config.max_retry_after,
                },
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
            gates: Gates::new(config.endpoint_concurrency.get()),
            bodies: BodyCache::default(),
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

    /// Runs the dispatcher and the deliverer, and their attempts, as tasks of the origin.
    pub fn start(self: &Arc<Self>, tasks: &Tasks) {
        tasks.spawn(dispatch::dispatch_loop(self.clone(), self.events.appended()));
        tasks.spawn(delivery::deliver_loop(self.clone(), tasks.clone()));
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

    async fn queue_depth(&self) -> Result<u64> {
        let depth = self.store.queue_depth().await?;
        self.metrics
            .webhook_queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
        Ok(depth)
    }

    /// Event `id` as the log holds it; `None` once trimmed (or never appended).
    async fn logged_event(&self, id: u64) -> Result<Option<StoredEventAt>> {
        let page = self.events.read(id.checked_sub(1), std::num::NonZeroUsize::MIN).await?;
        Ok(page.events.into_iter().next().filter(|logged| logged.id == id))
    }
}
