//! The deliverer: takes due deliveries from the queue and takes each through its endpoint's gate and
//! one attempt to its finish: delivered, due again later, or a dead letter (see `policy`).
//!
//! Invariants: this origin holds at most [`TAKEN_PER_SLOT`] deliveries taken and not finished per
//! attempt it may have in flight; a delivery leaves the queue only when it is finished, after its
//! attempt and its endpoint's health are recorded, so a dead letter never shows before the failure
//! behind it; one left unfinished ([`DeliveryError`]) stays taken and is reclaimed after
//! `reclaim_after`: one more attempt, with the same `webhook-id`.

use std::sync::Arc;
use std::time::Instant;

use rand::Rng;
use shared::time::unix_ms_now;
use tokio::sync::AcquireError;

use super::Webhooks;
use super::policy::{HealthChange, JITTER, Verdict, health_change};
use crate::storage::webhooks::{Attempt, Delivery, Finish, StoredEndpoint, Taken};
use crate::storage::{Result, StorageError};
use crate::tasks::Tasks;

/// Deliveries taken from the queue at a time.
const TAKE: usize = 256;
/// Deliveries an origin may have taken and not finished, per attempt it may have in flight.
pub const TAKEN_PER_SLOT: usize = 4;
/// Tries at changing an endpoint's health against others' changes before leaving it to the next attempt.
const HEALTH_TRIES: usize = 3;

/// Why a taken delivery was left unfinished.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("encoding event {event_id} failed: {source}")]
    Encode { event_id: u64, source: serde_json::Error },
    #[error("the origin stopped making attempts")]
    Stopped(#[from] AcquireError),
}

/// Takes due deliveries until the origin stops; each attempt is a task of its own, and one cut short by
/// the stop stays taken, to be reclaimed after `reclaim_after`.
pub async fn deliver_loop(hub: Arc<Webhooks>, tasks: Tasks) {
    loop {
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
            tasks.spawn(async move {
                if let Err(error) = hub.deliver(delivery).await {
                    // Unfinished: it stays taken and is reclaimed after reclaim_after.
                    tracing::warn!(%error, "webhook delivery not finished");
                }
                drop(permit);
            });
        }
        if !busy {
            let _ = tokio::time::timeout(hub.settings.poll_interval, hub.queued.notified()).await;
        }
    }
}

impl Webhooks {
    /// Takes one delivery through an attempt and finishes it.
    async fn deliver(&self, taken: Taken) -> Result<(), DeliveryError> {
        let delivery = &taken.delivery;
        let Some(endpoint) = self.store.endpoint(&delivery.endpoint).await? else {
            // The endpoint was deleted: its deliveries go with it.
            return Ok(self.store.finish_delivery(&taken, &Finish::Done).await?);
        };
        if !endpoint.enabled {
            self.metrics.webhook_dead_letters.inc();
            let finish = Finish::Dead(delivery.clone());
            return Ok(self.store.finish_delivery(&taken, &finish).await?);
        }
        let turn = match self.gates.admit(&endpoint, delivery.put_off).await {
            Ok(turn) => turn,
            Err(wait) => {
                let finish = Finish::Later {
                    delivery: Delivery {
                        put_off: true,
                        ..delivery.clone()
                    },
                    due_ms: self.clock.after(wait),
                };
                return Ok(self.store.finish_delivery(&taken, &finish).await?);
            }
        };
        let outcome = {
            let _slot = self.slots.acquire().await?;
            let started = Instant::now();
            let outcome = self.attempt(&endpoint, delivery).await;
            self.gates.attempted(&endpoint.id, started.elapsed());
            outcome
        };
        drop(turn);
        let (attempt, verdict) = outcome?;
        let jitter = rand::rng().random_range(JITTER);
        let finish = self
            .settings
            .retries
            .finish(delivery, verdict, jitter, self.clock.now_ms());
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
                let latency = unix_ms_now().saturating_sub(delivery.appended_at_ms);
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
        Ok(self.store.finish_delivery(&taken, &finish).await?)
    }

    /// Marks an endpoint failing since its first failure, healthy on a success, disabled once it has
    /// failed for `disable_after`. Changed by compare-and-set, so an operator's change is not undone.
    async fn update_health(&self, mut endpoint: StoredEndpoint, delivered: bool) -> Result<()> {
        let id = endpoint.id.clone();
        for _ in 0..HEALTH_TRIES {
            let now = self.clock.now_ms();
            let revision = endpoint.revision;
            let Some(change) = health_change(&endpoint, delivered, now, self.settings.disable_after) else {
                return Ok(());
            };
            if matches!(change, HealthChange::Disabled { .. }) {
                tracing::warn!(endpoint = %id, "webhook endpoint disabled after failing continuously");
                self.metrics.webhook_disabled.inc();
            }
            change.apply(&mut endpoint);
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
