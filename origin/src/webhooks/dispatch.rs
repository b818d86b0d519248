//! What puts deliveries in the queue: the dispatcher, which follows the event log and queues one
//! delivery per (event, matching endpoint), and the operator's replays, resends and redrives.
//!
//! Invariants: the dispatch cursor moves only by compare-and-set, in the same step as the deliveries
//! it queues, so origins sharing a store never queue an event twice and a crash loses none; the
//! dispatcher gives an endpoint only events appended after its creation, and on the first start it
//! begins at the log's head, not its history; every queued delivery starts with no attempt made.

use std::num::NonZeroUsize;
use std::sync::Arc;

use tokio::sync::watch;

use super::{Webhooks, endpoints};
use crate::events::{Filter, PAGE};
use crate::storage::webhooks::{Delivery, StoredEndpoint};
use crate::storage::{GapReason, LogStep, Result, StorageError, StoredEventAt};

/// Follows the event log until the origin stops.
pub async fn dispatch_loop(hub: Arc<Webhooks>, mut appended: watch::Receiver<u64>) {
    loop {
        let interval = hub.settings.poll_interval;
        let more = match hub.dispatch_once().await {
            Ok(more) => more,
            Err(error) => {
                tracing::warn!(%error, "webhook dispatch failed; retrying");
                false
            }
        };
        if !more {
            // Events appended through this origin wake the dispatcher at once; others' are polled.
            let _ = tokio::time::timeout(interval, appended.changed()).await;
        }
    }
}

/// The endpoint fields the dispatcher matches events with.
struct Route {
    id: String,
    created_at_ms: u64,
    filter: Filter,
}

impl Route {
    fn of(endpoint: &StoredEndpoint) -> Option<Self> {
        Some(Self {
            id: endpoint.id.clone(),
            created_at_ms: endpoint.created_at_ms,
            filter: endpoints::filter(endpoint)?,
        })
    }
}

/// The first delivery of `logged` to `endpoint`.
fn delivery(endpoint: &str, logged: &StoredEventAt) -> Delivery {
    Delivery {
        endpoint: endpoint.to_owned(),
        event_id: logged.id,
        attempts: 0,
        appended_at_ms: logged.stored.appended_at_ms,
        put_off: false,
    }
}

impl Webhooks {
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
        let filter =
            endpoints::filter(endpoint).ok_or_else(|| StorageError::corrupt("stored endpoint has a bad topic"))?;
        let mut after = self.events.position_at(since_ms).await?;
        let mut queued = 0;
        loop {
            let page = self.events.read(after, PAGE).await?;
            let Some(last) = page.last_id() else { break };
            after = Some(last);
            let deliveries: Vec<Delivery> = page
                .events
                .iter()
                .filter(|logged| filter.matches(&logged.stored.event))
                .map(|logged| delivery(&endpoint.id, logged))
                .collect();
            self.enqueue(&deliveries).await?;
            queued += deliveries.len();
        }
        Ok(queued)
    }

    /// One message again (whatever became of it before), with fresh attempts.
    pub async fn resend(&self, endpoint: &str, event_id: u64) -> Result<bool> {
        let Some(logged) = self.logged_event(event_id).await? else {
            return Ok(false);
        };
        self.enqueue(&[delivery(endpoint, &logged)]).await?;
        Ok(true)
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
                    deliveries.push(delivery(&route.id, logged));
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
}
