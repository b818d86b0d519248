//! Forecast operations between the HTTP API and storage: the L1 cache, rendering, rollbacks, and the
//! invalidation log.
//!
//! Every change of a forecast (write, delete, rollback, model rollback) goes the same way: a note that a
//! change of the key is coming, the change itself (marked pending in the same atomic step), then its
//! announcement: an invalidation of its tag for edges and its `ForecastUpdated` event for subscribers,
//! which clears the mark. All of it happens before the change is answered (see
//! [`StorageError::NotInvalidated`] for when the announcement fails). Whatever a crash or an outage
//! leaves marked is announced later by [`Forecasts::announce_pending`], so every stored change has exactly
//! one event.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use shared::domain::{Forecast, ForecastKey, Instrument, ModelRef, Timeframe};
use shared::events::{ForecastChange, ForecastUpdated, NewEvent};
use shared::time::{millis, unix_ms, unix_ms_now};
use shared::wire::{Invalidate, Selector};
use time::OffsetDateTime;
use tokio::sync::{broadcast, watch};
use utoipa::ToSchema;

use prometheus::IntCounter;

use crate::cache::{Entry, L1Cache, Lookup};
use crate::events::Events;
use crate::invalidation::{Cause, HeadGauge, forecast_tag};
use crate::metrics::Metrics;
use crate::representation::Rendered;
use crate::storage::{
    AuditEntry, Expect, History, InvalidationPage, NewInvalidation, NewVersion, PendingChange, Result, SharedStore,
    StorageError, StoredEvent, VersionRecord,
};

/// How long a change may stay pending before it counts as left behind (its own request announces it
/// well within this), and how often left-behind changes are looked for.
pub const PENDING_SETTLE: Duration = Duration::from_secs(5);
pub const PENDING_CHECK_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Forecasts {
    store: SharedStore,
    events: Arc<Events>,
    l1: Option<L1Cache>,
    metrics: Metrics,
    l1_hits: IntCounter,
    l1_misses: IntCounter,
    l1_stale: IntCounter,
    invalidation_head: HeadGauge,
    appended: watch::Sender<u64>,
    /// Each forecast whose change is durable (version, invalidation and event), as it happens.
    changed: broadcast::Sender<ForecastKey>,
}

/// Changes waiting for a slow listener; beyond this it misses the oldest (see [`Forecasts::changes`]).
const CHANGES_QUEUED: usize = 1024;

/// What a model rollback did to one key.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ModelRollbackOutcome {
    /// The key's content is now that of `to_version`, as the new version `new_version`.
    RolledBack {
        from_version: u64,
        to_version: u64,
        new_version: u64,
    },
    /// The current version is not from this model: nothing to undo.
    NotCurrent,
    /// No retained version from another model to go back to.
    NoPreviousModel,
    /// A write came in meanwhile; nothing was changed.
    Conflict,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelRollbackResult {
    pub key: ForecastKey,
    #[serde(flatten)]
    pub outcome: ModelRollbackOutcome,
}

/// Each outcome's object with the key beside its fields: a `oneOf` of flat objects, as it is sent (an
/// `allOf` over a `oneOf` says the same, but is more than many client generators read).
impl utoipa::PartialSchema for ModelRollbackResult {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::Schema;
        let mut schema = ModelRollbackOutcome::schema();
        if let RefOr::T(Schema::OneOf(one_of)) = &mut schema {
            for outcome in &mut one_of.items {
                if let RefOr::T(Schema::Object(object)) = outcome {
                    object.properties.insert(
                        "key".to_owned(),
                        utoipa::openapi::Ref::from_schema_name("ForecastKey").into(),
                    );
                    object.required.push("key".to_owned());
                }
            }
        }
        schema
    }
}

impl ToSchema for ModelRollbackResult {}

/// The versions a model produced in one key.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ModelForecast {
    #[schema(value_type = String)]
    pub instrument: Instrument,
    #[schema(value_type = String)]
    pub timeframe: Timeframe,
    /// Retained versions made by the model, newest first.
    pub versions: Vec<u64>,
    /// Whether the current version is one of them.
    pub current: bool,
}

/// The version to go back to when undoing `model` in a key: the newest retained version by another model
/// older than the current one. `Err` says why there is none.
pub fn model_rollback_target(history: &History, model: &ModelRef) -> Result<(u64, u64), ModelRollbackOutcome> {
    let current = history.current_record().ok_or(ModelRollbackOutcome::NotCurrent)?;
    if &current.forecast.model != model {
        return Err(ModelRollbackOutcome::NotCurrent);
    }
    history
        .versions
        .iter()
        .find(|v| v.version < current.version && &v.forecast.model != model)
        .map(|target| (current.version, target.version))
        .ok_or(ModelRollbackOutcome::NoPreviousModel)
}

impl Forecasts {
    pub fn new(store: SharedStore, events: Arc<Events>, l1: Option<L1Cache>, metrics: Metrics) -> Self {
        let l1_counter = |result: &str| metrics.l1_lookups.with_label_values(&[result]);
        for cause in Cause::ALL {
            // Every cause is listed from the start, at 0.
            metrics.invalidations_appended.with_label_values(&[cause.label()]);
        }
        Self {
            l1_hits: l1_counter("hit"),
            l1_misses: l1_counter("miss"),
            l1_stale: l1_counter("stale"),
            invalidation_head: HeadGauge::new(metrics.invalidation_log_head.clone()),
            appended: watch::Sender::new(0),
            changed: broadcast::Sender::new(CHANGES_QUEUED),
            store,
            events,
            l1,
            metrics,
        }
    }

    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// Runs a storage operation, recording its latency and failures.
    async fn timed<T>(&self, operation: &'static str, work: impl Future<Output = Result<T>>) -> Result<T> {
        let backend = self.store.backend();
        let started = Instant::now();
        let result = work.await;
        self.metrics
            .storage_duration
            .with_label_values(&[backend, operation])
            .observe(started.elapsed().as_secs_f64());
        if let Err(error) = &result {
            let kind = match error {
                StorageError::Unavailable(_) => "unavailable",
                StorageError::Corrupt(_) => "corrupt",
                _ => "refused",
            };
            self.metrics
                .storage_errors
                .with_label_values(&[backend, operation, kind])
                .inc();
            if !matches!(
                error,
                StorageError::VersionNotFound { .. }
                    | StorageError::VersionTrimmed { .. }
                    | StorageError::Conflict { .. }
            ) {
                tracing::warn!(%error, backend, operation, "storage operation failed");
            }
        }
        result
    }

    /// The current version of each key, in order, read from storage.
    pub async fn stored_many(&self, keys: &[ForecastKey]) -> Result<Vec<Entry>> {
        let found = self.timed("current", self.store.current_many(keys)).await?;
        Ok(found
            .into_iter()
            .map(|r| r.map(|r| Arc::new(Rendered::new(&r))))
            .collect())
    }

    /// The current version of each key, in order, through the L1 cache when it is on.
    pub async fn current_many(&self, keys: &[ForecastKey]) -> Result<Vec<Entry>> {
        let Some(l1) = &self.l1 else {
            return self.stored_many(keys).await;
        };
        let mut answers: Vec<Option<Entry>> = Vec::with_capacity(keys.len());
        let mut stale: Vec<Option<Entry>> = Vec::with_capacity(keys.len());
        let mut misses = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            match l1.get(key) {
                Lookup::Fresh(entry) => {
                    self.l1_hits.inc();
                    answers.push(Some(entry));
                    stale.push(None);
                }
                Lookup::Stale(entry) => {
                    answers.push(None);
                    stale.push(Some(entry));
                    misses.push(i);
                }
                Lookup::Miss => {
                    answers.push(None);
                    stale.push(None);
                    misses.push(i);
                }
            }
        }
        if !misses.is_empty() {
            let wanted: Vec<ForecastKey> = misses.iter().map(|&i| keys[i].clone()).collect();
            let tickets: Vec<_> = wanted.iter().map(|k| l1.ticket(k)).collect();
            match self.timed("current", self.store.current_many(&wanted)).await {
                Ok(found) => {
                    for ((&i, ticket), record) in misses.iter().zip(tickets).zip(found) {
                        self.l1_misses.inc();
                        let entry = record.map(|r| Arc::new(Rendered::new(&r)));
                        l1.fill(ticket, &keys[i], entry.clone());
                        answers[i] = Some(entry);
                    }
                }
                Err(error @ StorageError::Unavailable(_)) => {
                    for &i in &misses {
                        match stale[i].take() {
                            Some(entry) => {
                                self.l1_stale.inc();
                                answers[i] = Some(entry);
                            }
                            None => return Err(error),
                        }
                    }
                }
                Err(error) => return Err(error),
            }
        }
        Ok(answers.into_iter().map(Option::unwrap_or_default).collect())
    }

    pub async fn current(&self, key: &ForecastKey) -> Result<Entry> {
        // The hot path: a fresh L1 entry, without the bookkeeping of a batch.
        if let Some(l1) = &self.l1
            && let Lookup::Fresh(entry) = l1.get(key)
        {
            self.l1_hits.inc();
            return Ok(entry);
        }
        Ok(self.current_many(std::slice::from_ref(key)).await?.pop().flatten())
    }

    pub async fn version(&self, key: &ForecastKey, version: u64) -> Result<Rendered> {
        let record = self.timed("version", self.store.version(key, version)).await?;
        Ok(Rendered::new(&record))
    }

    pub async fn history(&self, key: &ForecastKey) -> Result<History> {
        self.timed("history", self.store.history(key)).await
    }

    /// Stores a new version of `key` and makes it current.
    pub async fn write(
        &self,
        key: &ForecastKey,
        forecast: Forecast,
        expect: Expect,
        actor: &str,
    ) -> Result<(VersionRecord, Arc<Rendered>)> {
        self.commit(key, forecast, expect, actor, None, Cause::Write).await
    }

    async fn commit(
        &self,
        key: &ForecastKey,
        forecast: Forecast,
        expect: Expect,
        actor: &str,
        rollback_of: Option<u64>,
        cause: Cause,
    ) -> Result<(VersionRecord, Arc<Rendered>)> {
        let new = NewVersion {
            created_at: OffsetDateTime::now_utc(),
            created_by: actor.to_owned(),
            rollback_of,
            forecast,
        };
        self.timed("change_note", self.store.intend_change(key)).await?;
        let record = self.timed("write", self.store.write(key, new, expect)).await?;
        let rendered = Arc::new(Rendered::new(&record));
        if let Some(l1) = &self.l1 {
            l1.write(key, Some(rendered.clone()));
        }
        self.announce(&PendingChange::of_version(&record), updated(&record), cause)
            .await?;
        self.tell_listeners(key);
        Ok((record, rendered))
    }

    pub async fn delete(&self, key: &ForecastKey) -> Result<Option<u64>> {
        self.timed("change_note", self.store.intend_change(key)).await?;
        let deleted = self.timed("delete", self.store.delete(key)).await?;
        if let Some(l1) = &self.l1 {
            l1.write(key, None);
        }
        if let Some(version) = deleted {
            let change = PendingChange {
                key: key.clone(),
                version,
                change: ForecastChange::Deleted,
            };
            let update = ForecastUpdated::new(ForecastChange::Deleted, version);
            self.announce(&change, update, Cause::Delete).await?;
            self.tell_listeners(key);
        }
        Ok(deleted)
    }

    /// Tells edges (an invalidation of the key's tag) and subscribers (`ForecastUpdated`) about a stored
    /// change, which clears its pending mark.
    async fn announce(&self, change: &PendingChange, update: ForecastUpdated, cause: Cause) -> Result<()> {
        let not_announced = |error: StorageError| StorageError::NotInvalidated {
            key: change.key.clone(),
            version: change.version,
            error: error.to_string(),
        };
        let selectors = vec![Selector::Tag(forecast_tag(&change.key))];
        self.invalidate(cause, selectors, false).await.map_err(not_announced)?;
        let now = OffsetDateTime::now_utc();
        let event = StoredEvent {
            appended_at_ms: unix_ms(now),
            event: NewEvent::forecast_updated(&change.key.instrument, change.key.timeframe, &update, now),
        };
        let appended = self
            .timed("change_complete", self.store.complete_change(change, &event))
            .await
            .map_err(not_announced)?;
        if let Some(id) = appended {
            self.events.appended_through(id, 1);
        }
        Ok(())
    }

    /// Announces the changes left pending longer than [`PENDING_SETTLE`] (by a crash, or an outage of
    /// the logs); answers how many.
    pub async fn announce_pending(&self) -> Result<usize> {
        let settle = millis(PENDING_SETTLE);
        let before = unix_ms_now().saturating_sub(settle);
        let pending = self
            .timed("pending_changes", self.store.pending_changes(before))
            .await?;
        for change in &pending {
            let (update, cause) = match change.change {
                ForecastChange::Deleted => (
                    ForecastUpdated::new(ForecastChange::Deleted, change.version),
                    Cause::Delete,
                ),
                kind => {
                    let cause = if kind == ForecastChange::Written {
                        Cause::Write
                    } else {
                        Cause::Rollback
                    };
                    // A version trimmed meanwhile is announced by its number alone.
                    match self.store.version(&change.key, change.version).await {
                        Ok(record) => (updated(&record), cause),
                        Err(StorageError::VersionTrimmed { .. } | StorageError::VersionNotFound { .. }) => {
                            (ForecastUpdated::new(kind, change.version), cause)
                        }
                        Err(error) => return Err(error),
                    }
                }
            };
            tracing::warn!(key = %change.key, version = change.version, "announcing a change left pending");
            self.announce(change, update, cause).await?;
        }
        Ok(pending.len())
    }

    /// Makes the content of `to_version` current again, as a new version.
    pub async fn rollback(
        &self,
        key: &ForecastKey,
        to_version: u64,
        actor: &str,
    ) -> Result<(VersionRecord, Arc<Rendered>)> {
        let target = self.timed("version", self.store.version(key, to_version)).await?;
        self.commit(
            key,
            target.forecast,
            Expect::Any,
            actor,
            Some(to_version),
            Cause::Rollback,
        )
        .await
    }

    pub async fn model_forecasts(&self, model: &ModelRef) -> Result<Vec<ModelForecast>> {
        let mut found = Vec::new();
        for key in self.timed("model_keys", self.store.model_keys(model)).await? {
            let history = self.history(&key).await?;
            let versions: Vec<u64> = history
                .versions
                .iter()
                .filter(|v| &v.forecast.model == model)
                .map(|v| v.version)
                .collect();
            if versions.is_empty() {
                continue;
            }
            let current = history.current.is_some_and(|c| versions.contains(&c));
            found.push(ModelForecast {
                instrument: key.instrument,
                timeframe: key.timeframe,
                versions,
                current,
            });
        }
        Ok(found)
    }

    /// Undoes `model` everywhere it is current: each such key goes back to its previous model's version.
    pub async fn model_rollback(&self, model: &ModelRef, actor: &str) -> Result<Vec<ModelRollbackResult>> {
        let mut results = Vec::new();
        for key in self.timed("model_keys", self.store.model_keys(model)).await? {
            let history = self.history(&key).await?;
            if !history.versions.iter().any(|v| &v.forecast.model == model) {
                continue;
            }
            let outcome = match model_rollback_target(&history, model) {
                Err(outcome) => outcome,
                Ok((from_version, to_version)) => {
                    let Some(target) = history.versions.iter().find(|v| v.version == to_version) else {
                        continue;
                    };
                    let expect = Expect::Version(from_version);
                    let forecast = target.forecast.clone();
                    match self
                        .commit(&key, forecast, expect, actor, Some(to_version), Cause::ModelRollback)
                        .await
                    {
                        Ok((record, _)) => ModelRollbackOutcome::RolledBack {
                            from_version,
                            to_version,
                            new_version: record.version,
                        },
                        Err(StorageError::Conflict { .. }) => ModelRollbackOutcome::Conflict,
                        Err(error) => return Err(error),
                    }
                }
            };
            results.push(ModelRollbackResult { key, outcome });
        }
        Ok(results)
    }

    /// Records an admin action. A failure is logged, not returned: the action itself already happened.
    pub async fn audit(&self, entry: AuditEntry) {
        if let Err(error) = self.timed("audit_append", self.store.append_audit(&entry)).await {
            tracing::error!(%error, action = %entry.action, target = %entry.target, "audit entry not recorded");
        }
    }

    pub async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        self.timed("audit", self.store.audit(limit)).await
    }

    /// Appends an invalidation to the log; answers its sequence once it is durable.
    pub async fn invalidate(&self, cause: Cause, selectors: Vec<Selector>, soft: bool) -> Result<u64> {
        let new = NewInvalidation {
            selectors,
            soft,
            issued_at_ms: unix_ms_now(),
        };
        let sequence = self
            .timed("invalidation_append", self.store.append_invalidation(&new))
            .await?;
        self.metrics
            .invalidations_appended
            .with_label_values(&[cause.label()])
            .inc();
        self.invalidation_head.observe(sequence);
        self.appended.send_if_modified(|newest| {
            let newer = sequence > *newest;
            *newest = (*newest).max(sequence);
            newer
        });
        Ok(sequence)
    }

    /// Drops everything from the L1 cache.
    pub fn clear_l1(&self) {
        if let Some(l1) = &self.l1 {
            l1.clear();
        }
    }

    /// Applies an invalidation (made through any origin) to the L1 cache: the forecast a tag names is
    /// dropped; selectors whose forecasts are not known here (keys, prefixes, models, everything) drop
    /// the whole cache.
    pub fn apply_to_l1(&self, invalidation: &Invalidate) {
        let Some(l1) = &self.l1 else {
            return;
        };
        for selector in &invalidation.selectors {
            match selector {
                Selector::Tag(tag) => match tag.parse::<ForecastKey>() {
                    Ok(key) => l1.forget(&key),
                    Err(_) => {
                        l1.clear();
                        return;
                    }
                },
                _ => {
                    l1.clear();
                    return;
                }
            }
        }
    }

    /// The forecasts changed through this origin from now on, each once its change is durable: what
    /// warming pushes after. A listener that falls more than [`CHANGES_QUEUED`] behind misses the oldest.
    pub fn changes(&self) -> broadcast::Receiver<ForecastKey> {
        self.changed.subscribe()
    }

    fn tell_listeners(&self, key: &ForecastKey) {
        // No listener: nothing to tell.
        let _ = self.changed.send(key.clone());
    }

    /// The newest sequence appended through this origin, changing as appends are made: the control
    /// plane sends them at once instead of waiting for its next look at the log.
    pub fn appended(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// Invalidations after `after` (from the oldest kept when `None`), oldest first.
    pub async fn invalidation_log(&self, after: Option<u64>, limit: NonZeroUsize) -> Result<InvalidationPage> {
        let page = self
            .timed("invalidation_read", self.store.read_invalidations(after, limit))
            .await?;
        if let Some(head) = page.head {
            self.invalidation_head.observe(head);
        }
        Ok(page)
    }
}

/// The `ForecastUpdated` payload of a stored version: written, or a rollback's copy.
fn updated(record: &VersionRecord) -> ForecastUpdated {
    let change = PendingChange::of_version(record).change;
    ForecastUpdated {
        change,
        version: record.version,
        model: Some(record.forecast.model.clone()),
        point: Some(record.forecast.point),
        rollback_of: record.rollback_of,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(n: u64, model: &str) -> VersionRecord {
        let (id, v) = model.split_once('@').unwrap();
        VersionRecord {
            version: n,
            instrument: "AAPL".parse().unwrap(),
            timeframe: Timeframe::H1,
            created_at: OffsetDateTime::UNIX_EPOCH,
            created_by: "t".into(),
            rollback_of: None,
            forecast: serde_json::from_value(serde_json::json!({
                "horizon": "1h", "generated_at": "2026-11-23T14:00:00Z", "valid_until": "2026-11-23T15:00:00Z",
                "model": {"id": id, "version": v}, "point": 1.0
            }))
            .unwrap(),
        }
    }

    fn history(current: Option<u64>, models: &[&str]) -> History {
        let versions: Vec<_> = models
            .iter()
            .enumerate()
            .rev()
            .map(|(i, m)| version(i as u64 + 1, m))
            .collect();
        History {
            latest: models.len() as u64,
            current,
            versions,
        }
    }

    #[test]
    fn rollback_goes_to_the_previous_model() {
        let bad = ModelRef::new("lstm", "4").unwrap();
        let h = history(Some(4), &["lstm@3", "lstm@3", "lstm@4", "lstm@4"]);
        assert_eq!(model_rollback_target(&h, &bad), Ok((4, 2)));
        let h = history(Some(2), &["lstm@3", "lstm@4", "lstm@3"]);
        assert_eq!(model_rollback_target(&h, &bad), Ok((2, 1)));
    }

    #[test]
    fn rollback_refuses_when_nothing_fits() {
        let bad = ModelRef::new("lstm", "4").unwrap();
        assert_eq!(
            model_rollback_target(&history(Some(2), &["lstm@4", "lstm@4"]), &bad),
            Err(ModelRollbackOutcome::NoPreviousModel)
        );
        assert_eq!(
            model_rollback_target(&history(Some(2), &["lstm@4", "lstm@3"]), &bad),
            Err(ModelRollbackOutcome::NotCurrent)
        );
        assert_eq!(
            model_rollback_target(&history(None, &["lstm@4"]), &bad),
            Err(ModelRollbackOutcome::NotCurrent)
        );
    }
}
