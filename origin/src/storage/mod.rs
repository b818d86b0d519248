//! Durable storage of forecasts, their versions, the audit log and the invalidation log.
//!
//! One [`Store`] trait, two backends with the same semantics, checked by one contract suite
//! (`tests/it/contract.rs`):
//! * [`redis::RedisStore`]: production and scale-out, one node or a Redis Cluster (key layout in [`keys`]);
//! * [`embedded::EmbeddedStore`]: a redb file on local disk, the default when no Redis is configured.
//!
//! Invariants both backends keep:
//! * versions of a key are numbered 1, 2, 3… and a number is never reused, not even after a delete;
//! * a write (new version, current pointer, trim to the last `versions_kept`) is atomic;
//! * a version, once written, never changes: only trimming removes it;
//! * the model directory lists every key a model has a retained version in (it may list more; readers
//!   check the versions themselves);
//! * invalidations are numbered 1, 2, 3… in the order they were appended, without gaps, one log per store
//!   (so every origin sharing a Redis sees the same numbers); trimming removes the oldest, never the
//!   newest, so the newest entry is always the log's head.

pub mod embedded;
pub mod keys;
pub mod redis;
pub mod tokens;
pub mod webhooks;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use shared::domain::{Forecast, ForecastKey, Instrument, ModelRef, Timeframe};
use shared::events::{ForecastChange, NewEvent};
use shared::wire::{Invalidate, Selector};
use time::OffsetDateTime;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("version {requested} of {key} does not exist (latest is {latest})")]
    VersionNotFound {
        key: ForecastKey,
        requested: u64,
        latest: u64,
    },
    #[error("version {requested} of {key} was trimmed (oldest kept is {oldest_kept})")]
    VersionTrimmed {
        key: ForecastKey,
        requested: u64,
        oldest_kept: u64,
    },
    #[error("precondition failed for {key}: expected {expected}, found {found}")]
    Conflict {
        key: ForecastKey,
        expected: Expect,
        found: Current,
    },
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A change of `key` is durable, but the invalidation that tells edges about it, or the event that
    /// tells subscribers, is not yet: the change stays marked pending until both are (see
    /// [`PendingChange`]). Raised after the change, never instead of it.
    #[error("{key} changed (version {version}) but its invalidation or event was not recorded: {error}")]
    NotInvalidated {
        key: ForecastKey,
        /// The version the change stored, or deleted.
        version: u64,
        error: String,
    },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl StorageError {
    pub fn unavailable(error: impl std::fmt::Display) -> Self {
        Self::Unavailable(error.to_string())
    }

    pub fn corrupt(error: impl std::fmt::Display) -> Self {
        Self::Corrupt(error.to_string())
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// What the writer expects the current version to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// No expectation: always write.
    Any,
    /// Some current version must exist (`If-Match: *`).
    Exists,
    /// The current version must be exactly this one (`If-Match` with an ETag).
    Version(u64),
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Any => f.write_str("anything"),
            Expect::Exists => f.write_str("a current version"),
            Expect::Version(v) => write!(f, "version {v}"),
        }
    }
}

/// The current version of a key as a precondition saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Current(pub Option<u64>);

impl std::fmt::Display for Current {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(v) => write!(f, "version {v}"),
            None => f.write_str("no current version"),
        }
    }
}

/// One stored version of a forecast. The JSON form is what backends store; `version` comes first so that
/// a backend can assign it while it writes (see [`VersionRecord::encode_tail`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VersionRecord {
    pub version: u64,
    pub instrument: Instrument,
    pub timeframe: Timeframe,
    /// When the origin stored this version.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// Name of the token that wrote it.
    pub created_by: String,
    /// Set when a rollback made this version: the version whose content it copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<u64>,
    pub forecast: Forecast,
}

/// A version about to be written; the store gives it its number.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub created_at: OffsetDateTime,
    pub created_by: String,
    pub rollback_of: Option<u64>,
    pub forecast: Forecast,
}

impl VersionRecord {
    pub fn key(&self) -> ForecastKey {
        ForecastKey::new(self.instrument.clone(), self.timeframe)
    }

    pub fn from_new(key: &ForecastKey, version: u64, new: NewVersion) -> Self {
        Self {
            version,
            instrument: key.instrument.clone(),
            timeframe: key.timeframe,
            created_at: new.created_at,
            created_by: new.created_by,
            rollback_of: new.rollback_of,
            forecast: new.forecast,
        }
    }

    const VERSION_PREFIX: &'static str = "{\"version\":";

    /// The record's JSON without its leading `{"version":N`, so a store can prepend the number it assigns
    /// inside an atomic step (a Lua script) without parsing JSON there.
    pub fn encode_tail(key: &ForecastKey, new: &NewVersion) -> Result<String> {
        let record = Self::from_new(key, 0, new.clone());
        let json = serde_json::to_string(&record).map_err(StorageError::corrupt)?;
        json.strip_prefix(Self::VERSION_PREFIX)
            .and_then(|rest| rest.strip_prefix('0'))
            .map(str::to_owned)
            .ok_or_else(|| StorageError::corrupt("version record does not start with its version"))
    }

    pub fn encode_with_tail(version: u64, tail: &str) -> String {
        format!("{}{version}{tail}", Self::VERSION_PREFIX)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(StorageError::corrupt)
    }
}

/// Everything a store keeps about one key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// The number the last write got (0 when never written).
    pub latest: u64,
    /// The current version; `None` after a delete or before the first write.
    pub current: Option<u64>,
    /// Retained versions, newest first.
    pub versions: Vec<VersionRecord>,
}

impl History {
    pub fn current_record(&self) -> Option<&VersionRecord> {
        let current = self.current?;
        self.versions.iter().find(|v| v.version == current)
    }
}

/// One admin action, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    /// Name of the token that acted.
    pub actor: String,
    /// What was done, such as `forecast.write`.
    pub action: String,
    /// What it was done to, such as `AAPL:1h`.
    pub target: String,
    /// HTTP status of the answer.
    pub status: u16,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

/// An invalidation about to be appended; the log gives it its sequence. Stored as JSON, in the form of
/// [`StoredInvalidation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInvalidation {
    pub selectors: Vec<Selector>,
    pub soft: bool,
    /// When the origin accepted it, unix milliseconds.
    pub issued_at_ms: u64,
}

impl NewInvalidation {
    /// The log record: the control-plane message edges receive, so a replay sends what was stored.
    pub fn into_record(self, sequence: u64) -> Invalidate {
        Invalidate {
            sequence,
            selectors: self.selectors,
            soft: self.soft,
            issued_at_ms: self.issued_at_ms,
        }
    }

    pub fn encode(&self) -> Result<String> {
        serde_json::to_string(&StoredInvalidation::from(self)).map_err(StorageError::corrupt)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice::<StoredInvalidation>(bytes)
            .map_err(StorageError::corrupt)?
            .try_into()
    }
}

/// The invalidation log's record format: its own types, so that a change of the control-plane messages
/// never changes (or breaks the reading of) what is already stored.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredInvalidation {
    selectors: Vec<StoredSelector>,
    soft: bool,
    issued_at_ms: u64,
}

#[derive(Serialize, Deserialize)]
enum StoredSelector {
    Key(String),
    Prefix(String),
    Tag(String),
    Model(StoredModel),
    All,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredModel {
    id: String,
    version: String,
}

impl From<&NewInvalidation> for StoredInvalidation {
    fn from(new: &NewInvalidation) -> Self {
        let selectors = new
            .selectors
            .iter()
            .map(|selector| match selector {
                Selector::Key(key) => StoredSelector::Key(key.clone()),
                Selector::Prefix(prefix) => StoredSelector::Prefix(prefix.clone()),
                Selector::Tag(tag) => StoredSelector::Tag(tag.clone()),
                Selector::Model(model) => StoredSelector::Model(StoredModel {
                    id: model.id.clone(),
                    version: model.version.clone(),
                }),
                Selector::All => StoredSelector::All,
            })
            .collect();
        Self {
            selectors,
            soft: new.soft,
            issued_at_ms: new.issued_at_ms,
        }
    }
}

impl TryFrom<StoredInvalidation> for NewInvalidation {
    type Error = StorageError;

    fn try_from(stored: StoredInvalidation) -> Result<Self> {
        let selectors = stored
            .selectors
            .into_iter()
            .map(|selector| {
                Ok(match selector {
                    StoredSelector::Key(key) => Selector::Key(key),
                    StoredSelector::Prefix(prefix) => Selector::Prefix(prefix),
                    StoredSelector::Tag(tag) => Selector::Tag(tag),
                    StoredSelector::Model(model) => {
                        Selector::Model(ModelRef::new(model.id, model.version).map_err(StorageError::corrupt)?)
                    }
                    StoredSelector::All => Selector::All,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            selectors,
            soft: stored.soft,
            issued_at_ms: stored.issued_at_ms,
        })
    }
}

/// Part of the invalidation log, as [`Store::read_invalidations`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidationPage {
    /// The records after the requested position, oldest first.
    pub records: Vec<Invalidate>,
    /// The newest sequence in the log; `None` while nothing was ever appended (or the log was reset).
    pub head: Option<u64>,
    /// Some records after the requested position were trimmed: whoever stands there cannot catch up by
    /// replay, and must drop everything and continue from `head`.
    pub trimmed: bool,
}

impl InvalidationPage {
    /// `records` are what the log holds after `after`, read together with `head`. Sequences have no
    /// gaps, so a first record beyond `after + 1`, or none while the head is beyond `after`, means the
    /// ones in between were trimmed. A head behind `after` is not a trim: the log was reset, which the
    /// caller sees by comparing `head` with its position.
    pub fn new(after: Option<u64>, head: Option<u64>, records: Vec<Invalidate>) -> Self {
        let trimmed = match (after, head) {
            (Some(after), Some(head)) if head > after => records
                .first()
                .is_none_or(|first| first.sequence > after.saturating_add(1)),
            _ => false,
        };
        Self { records, head, trimmed }
    }
}

/// What a read of a numbered log found, as stored: its newest number, and records with their numbers.
pub(crate) struct LogRead {
    pub head: Option<u64>,
    pub records: Vec<(u64, Vec<u8>)>,
}

/// An analysis event as the log stores it: when it was appended (trimming by age) and the event. Stored
/// as JSON, in the form of [`EventRecord`].
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub appended_at_ms: u64,
    pub event: NewEvent,
}

impl StoredEvent {
    pub fn encode(&self) -> Result<String> {
        serde_json::to_string(&EventRecord::from(self)).map_err(StorageError::corrupt)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice::<EventRecord>(bytes)
            .map_err(StorageError::corrupt)?
            .try_into()
    }

    /// When a stored record was appended, read without decoding the event, so retention trims a record
    /// whose event no longer decodes like any other; one whose time cannot be read counts as oldest.
    pub fn appended_at_ms_of(bytes: &[u8]) -> u64 {
        #[derive(Deserialize)]
        struct AppendedAt {
            appended_at_ms: u64,
        }
        serde_json::from_slice::<AppendedAt>(bytes).map_or(0, |record| record.appended_at_ms)
    }
}

/// The event log's record format: its own type, so that a change of the events' domain types never
/// changes (or breaks the reading of) what is already stored. Values are checked again when read.
#[derive(Serialize, Deserialize)]
struct EventRecord {
    appended_at_ms: u64,
    topic: String,
    #[serde(rename = "type")]
    kind: String,
    instrument: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeframe: Option<String>,
    produced_at: String,
    schema_version: u16,
    payload: serde_json::Value,
}

impl From<&StoredEvent> for EventRecord {
    fn from(stored: &StoredEvent) -> Self {
        let event = &stored.event;
        Self {
            appended_at_ms: stored.appended_at_ms,
            topic: event.topic.to_string(),
            kind: event.kind.clone(),
            instrument: event.instrument.to_string(),
            timeframe: event.timeframe.map(|timeframe| timeframe.to_string()),
            produced_at: event
                .produced_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            schema_version: event.schema_version,
            payload: event.payload.clone(),
        }
    }
}

impl TryFrom<EventRecord> for StoredEvent {
    type Error = StorageError;

    fn try_from(record: EventRecord) -> Result<Self> {
        let event = NewEvent {
            topic: record.topic.parse().map_err(StorageError::corrupt)?,
            kind: record.kind,
            instrument: record.instrument.parse().map_err(StorageError::corrupt)?,
            timeframe: record
                .timeframe
                .map(|timeframe| timeframe.parse())
                .transpose()
                .map_err(StorageError::corrupt)?,
            produced_at: OffsetDateTime::parse(&record.produced_at, &time::format_description::well_known::Rfc3339)
                .map_err(StorageError::corrupt)?,
            schema_version: record.schema_version,
            payload: record.payload,
        };
        Ok(Self {
            appended_at_ms: record.appended_at_ms,
            event,
        })
    }
}

/// Part of the event log, as [`Store::read_events`] found it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    /// The events after the requested position, oldest first.
    pub events: Vec<StoredEventAt>,
    /// Entries read but not decodable, oldest first: every reader passes over them (announcing a gap)
    /// instead of stopping at them, so one bad entry cannot stall a stream or the webhook dispatcher.
    pub unreadable: Vec<UnreadableEvent>,
    /// The newest id in the log; `None` while nothing was ever appended.
    pub head: Option<u64>,
}

/// A log entry that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableEvent {
    pub id: u64,
    /// When it was appended, as far as that can be read (0 when it cannot).
    pub appended_at_ms: u64,
    pub error: String,
}

/// Why ids are missing from what a reader of the event log gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapReason {
    /// Retention removed them before they were read.
    Trimmed,
    /// They are stored but cannot be decoded.
    Unreadable,
}

impl GapReason {
    /// The reason as subscribers read it in `event: gap`, and as metrics label it.
    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::Trimmed => "trimmed by retention",
            GapReason::Unreadable => "unreadable in the event log",
        }
    }
}

/// What a reader of the event log meets, in id order: an event, or ids `from..=to` it will not get.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LogStep<'a> {
    Event(&'a StoredEventAt),
    Gap { from: u64, to: u64, reason: GapReason },
}

impl EventPage {
    /// Decodes what a backend read; entries that do not decode are set aside in `unreadable`.
    pub(crate) fn decode(read: LogRead) -> Self {
        let mut events = Vec::with_capacity(read.records.len());
        let mut unreadable = Vec::new();
        for (id, record) in read.records {
            match StoredEvent::decode(&record) {
                Ok(stored) => events.push(StoredEventAt { id, stored }),
                Err(error) => unreadable.push(UnreadableEvent {
                    id,
                    appended_at_ms: StoredEvent::appended_at_ms_of(&record),
                    error: error.to_string(),
                }),
            }
        }
        Self {
            events,
            unreadable,
            head: read.head,
        }
    }

    /// How many entries the page read, readable or not (a page shorter than asked is the log's end).
    pub fn len(&self) -> usize {
        self.events.len() + self.unreadable.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id and append time of the first entry read, readable or not.
    pub fn first_entry(&self) -> Option<(u64, u64)> {
        let event = self
            .events
            .first()
            .map(|logged| (logged.id, logged.stored.appended_at_ms));
        let unreadable = self.unreadable.first().map(|entry| (entry.id, entry.appended_at_ms));
        match (event, unreadable) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The id of the last entry read, readable or not: where the next page starts.
    pub fn last_id(&self) -> Option<u64> {
        let event = self.events.last().map(|logged| logged.id);
        let unreadable = self.unreadable.last().map(|entry| entry.id);
        event.max(unreadable)
    }

    /// The entries read after `after`, in id order: each event, a gap for ids trimmed before the first
    /// entry, and one gap per run of unreadable entries.
    pub fn steps(&self, after: u64) -> Vec<LogStep<'_>> {
        let mut steps = Vec::with_capacity(self.events.len() + 1);
        if let Some((first, _)) = self.first_entry()
            && first > after.saturating_add(1)
        {
            steps.push(LogStep::Gap {
                from: after + 1,
                to: first - 1,
                reason: GapReason::Trimmed,
            });
        }
        let mut unreadable = self.unreadable.iter().map(|entry| entry.id).peekable();
        let mut take_unreadable_before = |limit: u64, steps: &mut Vec<LogStep<'_>>| {
            while let Some(&from) = unreadable.peek().filter(|id| **id < limit) {
                let mut to = from;
                unreadable.next();
                while let Some(&next) = unreadable.peek().filter(|id| **id == to + 1 && **id < limit) {
                    to = next;
                    unreadable.next();
                }
                steps.push(LogStep::Gap {
                    from,
                    to,
                    reason: GapReason::Unreadable,
                });
            }
        };
        for logged in &self.events {
            take_unreadable_before(logged.id, &mut steps);
            steps.push(LogStep::Event(logged));
        }
        take_unreadable_before(u64::MAX, &mut steps);
        steps
    }
}

/// A stored event and its id.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEventAt {
    pub id: u64,
    pub stored: StoredEvent,
}

/// A change of a forecast that is stored while its follow-ups may not be: the invalidation edges need
/// and the `ForecastUpdated` event subscribers need. The store marks it in the same atomic step as the
/// change itself, and the mark stays until [`Store::complete_change`] appends the event; so a crash
/// between the steps leaves a mark that [`Store::pending_changes`] finds, never a change without its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingChange {
    pub key: ForecastKey,
    /// The version written (or rolled back to, as a new version), or the one deleted.
    pub version: u64,
    pub change: ForecastChange,
}

impl PendingChange {
    /// What a written version is marked as: a rollback when it copies an older version.
    pub fn of_version(record: &VersionRecord) -> Self {
        Self {
            key: record.key(),
            version: record.version,
            change: Self::of_written(record.rollback_of),
        }
    }

    /// What writing a version is: a rollback when it copies an older version (`rollback_of`).
    pub fn of_written(rollback_of: Option<u64>) -> ForecastChange {
        if rollback_of.is_some() {
            ForecastChange::RolledBack
        } else {
            ForecastChange::Written
        }
    }

    /// The mark as stored: the change's name.
    pub fn change_name(change: ForecastChange) -> &'static str {
        match change {
            ForecastChange::Written => "written",
            ForecastChange::Deleted => "deleted",
            ForecastChange::RolledBack => "rolled_back",
        }
    }

    pub fn parse_change(name: &str) -> Result<ForecastChange> {
        match name {
            "written" => Ok(ForecastChange::Written),
            "deleted" => Ok(ForecastChange::Deleted),
            "rolled_back" => Ok(ForecastChange::RolledBack),
            other => Err(StorageError::corrupt(format!("unknown change mark {other:?}"))),
        }
    }

    /// A mark as `N:CHANGE` (`5:written`) reads back as the change of `key` it stands for.
    pub fn parse_mark(key: &ForecastKey, mark: &str) -> Result<Self> {
        let (version, change) = mark
            .split_once(':')
            .ok_or_else(|| StorageError::corrupt(format!("pending mark {mark:?} is not N:CHANGE")))?;
        Ok(Self {
            key: key.clone(),
            version: version.parse().map_err(StorageError::corrupt)?,
            change: Self::parse_change(change)?,
        })
    }

    /// The order changes of one key were made in: by version, a version's deletion after its write.
    pub fn order(&self) -> (u64, bool) {
        (self.version, self.change == ForecastChange::Deleted)
    }

    /// Names the change once in the whole system (`AAPL:1h@5:written`): what its event is deduplicated by.
    pub fn id(&self) -> String {
        format!("{}@{}:{}", self.key, self.version, Self::change_name(self.change))
    }
}

#[async_trait]
pub trait Store: webhooks::WebhookStore + tokens::TokenStore + Send + Sync + std::fmt::Debug + 'static {
    /// Short name for metrics and logs.
    fn backend(&self) -> &'static str;

    /// Succeeds when the store can serve reads and writes now.
    async fn ping(&self) -> Result<()>;

    /// Stores `new` as the next version of `key` and makes it current, if `expect` holds; marks the
    /// change pending (see [`PendingChange`]) in the same atomic step.
    async fn write(&self, key: &ForecastKey, new: NewVersion, expect: Expect) -> Result<VersionRecord>;

    /// Makes `key` have no current version; its history stays. Returns the version that was current,
    /// and marks its deletion pending in the same atomic step.
    async fn delete(&self, key: &ForecastKey) -> Result<Option<u64>>;

    /// Notes, before a change of `key` is made, that one is coming, so that what a crash leaves
    /// pending is found without scanning every key ([`Store::pending_changes`]).
    async fn intend_change(&self, key: &ForecastKey) -> Result<()>;

    /// Changes marked pending among the keys noted before `before_ms` (unix ms), oldest first per key;
    /// the notes of keys with nothing pending are dropped, unless a new one was made meanwhile.
    async fn pending_changes(&self, before_ms: u64) -> Result<Vec<PendingChange>>;

    /// Appends `event`, the change's `ForecastUpdated`, unless it was appended already, and clears the
    /// change's mark. Answers the event's id, or `None` when the change was completed before.
    async fn complete_change(&self, change: &PendingChange, event: &StoredEvent) -> Result<Option<u64>>;

    async fn current(&self, key: &ForecastKey) -> Result<Option<VersionRecord>>;

    /// The current versions of many keys, in the order asked.
    async fn current_many(&self, keys: &[ForecastKey]) -> Result<Vec<Option<VersionRecord>>>;

    async fn version(&self, key: &ForecastKey, version: u64) -> Result<VersionRecord>;

    async fn history(&self, key: &ForecastKey) -> Result<History>;

    /// Keys in which `model` may have retained versions (a superset; see the module docs).
    async fn model_keys(&self, model: &ModelRef) -> Result<Vec<ForecastKey>>;

    async fn append_audit(&self, entry: &AuditEntry) -> Result<()>;

    /// The newest audit entries, newest first.
    async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>>;

    /// Stores `candidate` as the generated admin token's hash unless one is stored; returns the stored one.
    async fn admin_token_hash(&self, candidate: &str) -> Result<String>;

    /// Appends to the invalidation log and returns the sequence it got, once the entry is durable. Then
    /// trims the log to [`Retention`], oldest first, never the entry just appended.
    async fn append_invalidation(&self, new: &NewInvalidation) -> Result<u64>;

    /// At most `limit` invalidations after sequence `after` (from the oldest kept when `None`), oldest
    /// first, with the head read at the same instant.
    async fn read_invalidations(&self, after: Option<u64>, limit: NonZeroUsize) -> Result<InvalidationPage>;

    /// The newest sequence in the invalidation log; `None` while it never held one.
    /// Appends events to the event log, in order, in one atomic step; answers the id of the first (the
    /// others follow it). The answer comes once they are durable.
    async fn append_events(&self, events: &[StoredEvent]) -> Result<u64>;

    /// Events after `after` (from the oldest kept when `None`), oldest first, and the newest id.
    async fn read_events(&self, after: Option<u64>, limit: NonZeroUsize) -> Result<EventPage>;

    async fn invalidation_head(&self) -> Result<Option<u64>> {
        Ok(self.read_invalidations(None, NonZeroUsize::MIN).await?.head)
    }
}

/// Settings both backends share.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// How many versions of each key are kept.
    pub versions_kept: u64,
    /// How many audit entries are kept.
    pub audit_kept: u64,
    pub invalidations: LogRetention,
    pub events: LogRetention,
}

/// What a numbered log (invalidations, events) keeps: at most `kept` records (at least 1), and none
/// older than `max_age` once a newer one is appended. The newest record is always kept, so numbering
/// continues from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRetention {
    pub kept: u64,
    pub max_age: Duration,
}

impl LogRetention {
    /// Records appended before this instant (unix milliseconds) are past their age.
    pub fn cutoff_ms(&self, now: OffsetDateTime) -> u64 {
        shared::time::unix_ms(now).saturating_sub(shared::time::millis(self.max_age))
    }
}

pub type SharedStore = Arc<dyn Store>;

/// Which retained versions `n` falls among, for a key whose latest is `latest` and oldest kept `oldest`.
pub(crate) fn missing_version(key: &ForecastKey, requested: u64, latest: u64, oldest_kept: u64) -> StorageError {
    if requested == 0 || requested > latest {
        StorageError::VersionNotFound {
            key: key.clone(),
            requested,
            latest,
        }
    } else {
        StorageError::VersionTrimmed {
            key: key.clone(),
            requested,
            oldest_kept,
        }
    }
}

/// Whether a write expecting `expect` may go ahead when `current` is current.
pub(crate) fn check_expect(key: &ForecastKey, expect: Expect, current: Option<u64>) -> Result<()> {
    let holds = match expect {
        Expect::Any => true,
        Expect::Exists => current.is_some(),
        Expect::Version(v) => current == Some(v),
    };
    if holds {
        Ok(())
    } else {
        Err(StorageError::Conflict {
            key: key.clone(),
            expected: expect,
            found: Current(current),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The invalidation log's record format, byte for byte: records stored by earlier builds stay readable,
    /// and what is written now is what they wrote.
    #[test]
    fn the_invalidation_record_format_is_fixed() {
        let stored = r#"{"selectors":[{"Key":"/v1/forecasts/AAPL/1h"},{"Prefix":"/v1/forecasts/MSFT"},{"Tag":"AAPL"},{"Model":{"id":"lstm","version":"3.2.0"}},"All"],"soft":true,"issued_at_ms":1764900000000}"#;
        let read = NewInvalidation::decode(stored.as_bytes()).unwrap();
        assert_eq!(
            read,
            NewInvalidation {
                selectors: vec![
                    Selector::Key("/v1/forecasts/AAPL/1h".into()),
                    Selector::Prefix("/v1/forecasts/MSFT".into()),
                    Selector::Tag("AAPL".into()),
                    Selector::Model(ModelRef::new("lstm", "3.2.0").unwrap()),
                    Selector::All,
                ],
                soft: true,
                issued_at_ms: 1_764_900_000_000,
            }
        );
        assert_eq!(read.encode().unwrap(), stored);
        let bad_model = stored.replace("lstm", "ls/tm");
        assert!(matches!(
            NewInvalidation::decode(bad_model.as_bytes()),
            Err(StorageError::Corrupt(_))
        ));
    }

    /// The event log's record format, byte for byte, as for invalidations.
    #[test]
    fn the_event_record_format_is_fixed() {
        let stored = r#"{"appended_at_ms":1764900000123,"topic":"indicators.AAPL.rsi14","type":"TechnicalIndicatorComputed","instrument":"AAPL","timeframe":"1h","produced_at":"2026-11-23T14:00:00.5Z","schema_version":1,"payload":{"indicator":"rsi","value":63.2}}"#;
        let read = StoredEvent::decode(stored.as_bytes()).unwrap();
        assert_eq!(read.appended_at_ms, 1_764_900_000_123);
        assert_eq!(read.event.topic.to_string(), "indicators.AAPL.rsi14");
        assert_eq!(read.event.kind, "TechnicalIndicatorComputed");
        assert_eq!(read.event.instrument.as_str(), "AAPL");
        assert_eq!(read.event.timeframe, Some(Timeframe::H1));
        assert_eq!(
            read.event.produced_at,
            time::macros::datetime!(2026-11-23 14:00:00.5 UTC)
        );
        assert_eq!(read.event.payload["value"], 63.2);
        assert_eq!(read.encode().unwrap(), stored);
        let without_timeframe = stored.replace(r#""timeframe":"1h","#, "");
        let read = StoredEvent::decode(without_timeframe.as_bytes()).unwrap();
        assert_eq!(read.event.timeframe, None);
        assert_eq!(read.encode().unwrap(), without_timeframe);
        let bad_topic = stored.replace("indicators.AAPL.rsi14", "indicators..rsi14");
        assert!(matches!(
            StoredEvent::decode(bad_topic.as_bytes()),
            Err(StorageError::Corrupt(_))
        ));
    }

    /// A page read after `after` holding `readable` and `unreadable` ids.
    fn page(readable: &[u64], unreadable: &[u64]) -> EventPage {
        let event = |id: u64| StoredEventAt {
            id,
            stored: StoredEvent {
                appended_at_ms: id,
                event: NewEvent {
                    topic: "x".parse().unwrap(),
                    kind: "T".to_owned(),
                    instrument: "X".parse().unwrap(),
                    timeframe: None,
                    produced_at: OffsetDateTime::UNIX_EPOCH,
                    schema_version: 1,
                    payload: serde_json::Value::Null,
                },
            },
        };
        EventPage {
            events: readable.iter().copied().map(event).collect(),
            unreadable: unreadable
                .iter()
                .map(|&id| UnreadableEvent {
                    id,
                    appended_at_ms: 0,
                    error: "bad".to_owned(),
                })
                .collect(),
            head: None,
        }
    }

    fn describe(steps: Vec<LogStep<'_>>) -> Vec<String> {
        steps
            .into_iter()
            .map(|step| match step {
                LogStep::Event(logged) => logged.id.to_string(),
                LogStep::Gap { from, to, reason } => format!("{from}-{to} {}", reason.as_str()),
            })
            .collect()
    }

    #[test]
    fn a_page_is_walked_in_id_order_with_its_gaps() {
        let trimmed = GapReason::Trimmed.as_str();
        let unreadable = GapReason::Unreadable.as_str();
        assert_eq!(describe(page(&[1, 2], &[]).steps(0)), ["1", "2"]);
        assert_eq!(
            describe(page(&[5, 8], &[6, 7, 9]).steps(2)),
            [
                format!("3-4 {trimmed}"),
                "5".to_owned(),
                format!("6-7 {unreadable}"),
                "8".to_owned(),
                format!("9-9 {unreadable}")
            ]
        );
        assert_eq!(describe(page(&[], &[3]).steps(2)), [format!("3-3 {unreadable}")]);
        assert!(page(&[], &[]).steps(7).is_empty());
        let mixed = page(&[4], &[3, 5]);
        assert_eq!(
            (mixed.last_id(), mixed.first_entry(), mixed.len()),
            (Some(5), Some((3, 0)), 3)
        );
    }
}
