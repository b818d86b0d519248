//! The embedded backend: one redb file on local disk, for a single origin without Redis.
//!
//! Writes go to one writer thread that commits everything queued in one durable transaction (group
//! commit): concurrent writers share an fsync instead of waiting for one each. A write is answered only
//! after its transaction is durable. Reads open their own read transactions and never wait for the writer.

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use async_trait::async_trait;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use shared::domain::{ForecastKey, ModelRef};
use shared::events::ForecastChange;
use shared::time::unix_ms_now;
use time::OffsetDateTime;
use tokio::sync::oneshot;

mod tokens;
mod webhooks;

use super::{
    AuditEntry, EventPage, Expect, History, InvalidationPage, LogRead, LogRetention, NewInvalidation, NewVersion,
    PendingChange, Result, Retention, StorageError, Store, StoredEvent, VersionRecord, check_expect, missing_version,
};

/// `AAPL:1h` → [`KeyState`] as JSON.
const FORECASTS: TableDefinition<&str, &[u8]> = TableDefinition::new("forecasts");
/// (`AAPL:1h`, version) → [`VersionRecord`] as JSON.
const VERSIONS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("versions");
/// (`lstm@3.2.0`, `AAPL:1h`) → (): the model directory.
const MODELS: TableDefinition<(&str, &str), ()> = TableDefinition::new("models");
/// Sequence → [`AuditEntry`] as JSON.
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// Sequence → [`NewInvalidation`] as JSON: the invalidation log.
const INVALIDATIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("invalidations");
/// Id → [`StoredEvent`] as JSON: the event log.
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// (`AAPL:1h`, version, change) → when it was marked (unix ms): changes whose event is not appended yet.
const PENDING: TableDefinition<(&str, u64, &str), u64> = TableDefinition::new("pending_changes");
/// Name → value, for single settings such as the generated admin token's hash.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const ADMIN_TOKEN: &str = "admin-token";

/// Most writes one transaction takes from the queue.
const MAX_GROUP: usize = 256;

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct KeyState {
    latest: u64,
    oldest: u64,
    current: Option<u64>,
}

enum Command {
    Write {
        key: ForecastKey,
        new: NewVersion,
        expect: Expect,
        reply: oneshot::Sender<Result<VersionRecord>>,
    },
    Delete {
        key: ForecastKey,
        reply: oneshot::Sender<Result<Option<u64>>>,
    },
    Audit {
        entry: AuditEntry,
        reply: oneshot::Sender<Result<()>>,
    },
    AdminToken {
        candidate: String,
        reply: oneshot::Sender<Result<String>>,
    },
    Invalidate {
        new: NewInvalidation,
        reply: oneshot::Sender<Result<u64>>,
    },
    AppendEvents {
        events: Vec<StoredEvent>,
        reply: oneshot::Sender<Result<u64>>,
    },
    /// Any other change, made in the group's transaction; its error aborts the group, as a failing
    /// table operation of the variants above does.
    Change(Change),
}

#[derive(Debug)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    /// `None` only while dropping.
    writer: Option<mpsc::SyncSender<Command>>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
    /// Webhook deliveries taken and not finished, by queue key, with when they were taken.
    taken: webhooks::TakenDeliveries,
    retention: Retention,
}

impl Drop for EmbeddedStore {
    /// Closes the queue and waits for the writer, so the file is closed (and may be opened again) when
    /// the store is gone.
    fn drop(&mut self) {
        self.writer.take();
        if let Some(thread) = self.writer_thread.take() {
            let _ = thread.join();
        }
    }
}

fn fail(error: impl std::fmt::Display) -> StorageError {
    StorageError::unavailable(format!("embedded store: {error}"))
}

impl EmbeddedStore {
    /// Opens (or creates) `dir/forecasts.redb` and starts the writer thread.
    pub fn open(dir: &Path, retention: Retention) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("forecasts.redb");
        let db = Database::create(&path).map_err(|e| fail(format!("cannot open {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(fail)?;
        {
            txn.open_table(FORECASTS).map_err(fail)?;
            txn.open_table(VERSIONS).map_err(fail)?;
            txn.open_table(MODELS).map_err(fail)?;
            txn.open_table(AUDIT).map_err(fail)?;
            txn.open_table(META).map_err(fail)?;
            txn.open_table(INVALIDATIONS).map_err(fail)?;
            txn.open_table(EVENTS).map_err(fail)?;
            txn.open_table(PENDING).map_err(fail)?;
            webhooks::create_tables(&txn)?;
            tokens::create_tables(&txn)?;
        }
        txn.commit().map_err(fail)?;
        let db = Arc::new(db);
        let (writer, queue) = mpsc::sync_channel(4 * MAX_GROUP);
        let writer_db = db.clone();
        let writer_thread = std::thread::Builder::new()
            .name("embedded-store-writer".into())
            .spawn(move || run_writer(&writer_db, &queue, retention))
            .map_err(fail)?;
        Ok(Self {
            db,
            writer: Some(writer),
            writer_thread: Some(writer_thread),
            taken: webhooks::TakenDeliveries::default(),
            retention,
        })
    }

    async fn submit<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Command) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let writer = self.writer.as_ref().ok_or_else(|| fail("writer stopped"))?;
        match writer.try_send(make(reply)) {
            Ok(()) => {}
            // A full queue blocks the sender until the writer catches up; keep that off the async workers.
            Err(mpsc::TrySendError::Full(command)) => {
                let writer = writer.clone();
                tokio::task::spawn_blocking(move || writer.send(command).map_err(drop))
                    .await
                    .map_err(fail)?
                    .map_err(|_| fail("writer stopped"))?;
            }
            Err(mpsc::TrySendError::Disconnected(_)) => return Err(fail("writer stopped")),
        }
        answer.await.map_err(|_| fail("writer stopped"))?
    }

    /// Runs `change` in the writer's next transaction; answers once that is durable.
    async fn change<T: Send + 'static>(
        &self,
        change: impl FnOnce(&redb::WriteTransaction) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.submit(|reply| Command::Change(Box::new(move |txn| Ok(pending(reply, Ok(change(txn)?))))))
            .await
    }

    fn read<T>(&self, f: impl FnOnce(&redb::ReadTransaction) -> Result<T>) -> Result<T> {
        let txn = self.db.begin_read().map_err(fail)?;
        f(&txn)
    }
}

fn key_state(table: &impl ReadableTable<&'static str, &'static [u8]>, key: &str) -> Result<KeyState> {
    match table.get(key).map_err(fail)? {
        Some(raw) => serde_json::from_slice(raw.value()).map_err(StorageError::corrupt),
        None => Ok(KeyState {
            oldest: 1,
            ..KeyState::default()
        }),
    }
}

fn record_at(
    table: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    key: &str,
    version: u64,
) -> Result<Option<VersionRecord>> {
    table
        .get((key, version))
        .map_err(fail)?
        .map(|raw| VersionRecord::decode(raw.value()))
        .transpose()
}

fn encode(value: &impl Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(StorageError::corrupt)
}

/// Applies one command inside the open transaction. Failures that concern only this command (a
/// precondition) are returned in its reply; failures of the transaction itself abort the whole group.
struct Group<'a> {
    txn: &'a redb::WriteTransaction,
    retention: Retention,
}

impl Group<'_> {
    fn write(&self, key: &ForecastKey, new: NewVersion, expect: Expect) -> Result<Result<VersionRecord>> {
        let name = key.to_string();
        let mut forecasts = self.txn.open_table(FORECASTS).map_err(fail)?;
        let mut state = key_state(&forecasts, &name)?;
        if let Err(conflict) = check_expect(key, expect, state.current) {
            return Ok(Err(conflict));
        }
        let version = state.latest + 1;
        let record = VersionRecord::from_new(key, version, new);
        let mut versions = self.txn.open_table(VERSIONS).map_err(fail)?;
        versions
            .insert((name.as_str(), version), encode(&record)?.as_slice())
            .map_err(fail)?;
        while state.oldest + self.retention.versions_kept <= version {
            versions.remove((name.as_str(), state.oldest)).map_err(fail)?;
            state.oldest += 1;
        }
        state.latest = version;
        state.current = Some(version);
        forecasts
            .insert(name.as_str(), encode(&state)?.as_slice())
            .map_err(fail)?;
        let model = record.forecast.model.to_string();
        self.txn
            .open_table(MODELS)
            .map_err(fail)?
            .insert((model.as_str(), name.as_str()), ())
            .map_err(fail)?;
        self.mark_pending(&PendingChange::of_version(&record))?;
        Ok(Ok(record))
    }

    fn delete(&self, key: &ForecastKey) -> Result<Option<u64>> {
        let name = key.to_string();
        let mut forecasts = self.txn.open_table(FORECASTS).map_err(fail)?;
        let mut state = key_state(&forecasts, &name)?;
        let deleted = state.current.take();
        if let Some(version) = deleted {
            forecasts
                .insert(name.as_str(), encode(&state)?.as_slice())
                .map_err(fail)?;
            self.mark_pending(&PendingChange {
                key: key.clone(),
                version,
                change: ForecastChange::Deleted,
            })?;
        }
        Ok(deleted)
    }

    fn mark_pending(&self, change: &PendingChange) -> Result<()> {
        let name = change.key.to_string();
        let at = (name.as_str(), change.version, PendingChange::change_name(change.change));
        self.txn
            .open_table(PENDING)
            .map_err(fail)?
            .insert(at, unix_ms_now())
            .map_err(fail)?;
        Ok(())
    }

    fn audit(&self, entry: &AuditEntry) -> Result<()> {
        let mut audit = self.txn.open_table(AUDIT).map_err(fail)?;
        let next = audit.last().map_err(fail)?.map_or(0, |(seq, _)| seq.value() + 1);
        audit.insert(next, encode(entry)?.as_slice()).map_err(fail)?;
        if audit.len().map_err(fail)? > self.retention.audit_kept {
            audit.pop_first().map_err(fail)?;
        }
        Ok(())
    }

    fn invalidate(&self, new: &NewInvalidation) -> Result<u64> {
        let mut log = self.txn.open_table(INVALIDATIONS).map_err(fail)?;
        let record = new.encode()?;
        append_numbered(&mut log, &[record.into_bytes()], self.retention.invalidations, |raw| {
            Ok(NewInvalidation::decode(raw)?.issued_at_ms)
        })
    }

    fn append_events(&self, events: &[StoredEvent]) -> Result<u64> {
        let mut log = self.txn.open_table(EVENTS).map_err(fail)?;
        let records = events
            .iter()
            .map(|event| event.encode().map(String::into_bytes))
            .collect::<Result<Vec<_>>>()?;
        append_numbered(&mut log, &records, self.retention.events, |raw| {
            Ok(StoredEvent::appended_at_ms_of(raw))
        })
    }

    fn admin_token(&self, candidate: &str) -> Result<String> {
        let mut meta = self.txn.open_table(META).map_err(fail)?;
        if let Some(stored) = meta.get(ADMIN_TOKEN).map_err(fail)? {
            return Ok(stored.value().to_owned());
        }
        meta.insert(ADMIN_TOKEN, candidate).map_err(fail)?;
        Ok(candidate.to_owned())
    }
}

/// Appends `records` after the newest entry of a numbered log (which trimming never removes, so numbers
/// continue from it), then trims the oldest past `retention`'s count or age (`appended_at` reads a
/// record's time). Answers the number of the first record appended.
fn append_numbered(
    log: &mut redb::Table<u64, &[u8]>,
    records: &[Vec<u8>],
    retention: LogRetention,
    appended_at: impl Fn(&[u8]) -> Result<u64>,
) -> Result<u64> {
    let first = log.last().map_err(fail)?.map_or(1, |(newest, _)| newest.value() + 1);
    let mut newest = first;
    for (offset, record) in records.iter().enumerate() {
        newest = first + offset as u64;
        log.insert(newest, record.as_slice()).map_err(fail)?;
    }
    let mut len = log.len().map_err(fail)?;
    let cutoff = retention.cutoff_ms(OffsetDateTime::now_utc());
    loop {
        let expired = match log.first().map_err(fail)? {
            Some((oldest, record)) => oldest.value() != newest && appended_at(record.value())? < cutoff,
            None => break,
        };
        if len <= retention.kept && !expired {
            break;
        }
        log.pop_first().map_err(fail)?;
        len -= 1;
    }
    Ok(first)
}

/// The newest number of a numbered log, and up to `limit` records after `after`, as stored.
fn read_numbered(
    txn: &redb::ReadTransaction,
    table: TableDefinition<u64, &[u8]>,
    after: Option<u64>,
    limit: NonZeroUsize,
) -> Result<LogRead> {
    let log = txn.open_table(table).map_err(fail)?;
    let head = log.last().map_err(fail)?.map(|(newest, _)| newest.value());
    let start = after.map_or(0, |after| after.saturating_add(1));
    let mut records = Vec::new();
    for entry in log.range(start..).map_err(fail)?.take(limit.get()) {
        let (number, raw) = entry.map_err(fail)?;
        records.push((number.value(), raw.value().to_vec()));
    }
    Ok(LogRead { head, records })
}

/// A change made in the writer's transaction; it answers the reply to send once that is durable.
type Change = Box<dyn FnOnce(&redb::WriteTransaction) -> Result<PendingReply> + Send>;

/// A reply that is sent only once the transaction it belongs to is durable.
type PendingReply = Box<dyn FnOnce(Option<&StorageError>) + Send>;

fn pending<T: Send + 'static>(reply: oneshot::Sender<Result<T>>, outcome: Result<T>) -> PendingReply {
    Box::new(move |commit_error| {
        let _ = reply.send(match commit_error {
            Some(error) => Err(fail(error)),
            None => outcome,
        });
    })
}

fn apply(group: &Group<'_>, command: Command) -> Result<PendingReply> {
    Ok(match command {
        Command::Write {
            key,
            new,
            expect,
            reply,
        } => pending(reply, group.write(&key, new, expect)?),
        Command::Delete { key, reply } => pending(reply, group.delete(&key)),
        Command::Audit { entry, reply } => pending(reply, group.audit(&entry)),
        Command::AdminToken { candidate, reply } => pending(reply, group.admin_token(&candidate)),
        Command::Invalidate { new, reply } => pending(reply, group.invalidate(&new)),
        Command::AppendEvents { events, reply } => pending(reply, group.append_events(&events)),
        Command::Change(change) => change(group.txn)?,
    })
}

fn run_writer(db: &Database, queue: &mpsc::Receiver<Command>, retention: Retention) {
    while let Ok(first) = queue.recv() {
        let mut commands = vec![first];
        while commands.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(next) => commands.push(next),
                Err(_) => break,
            }
        }
        let mut replies = Vec::with_capacity(commands.len());
        let result = db.begin_write().map_err(fail).and_then(|txn| {
            {
                let group = Group { txn: &txn, retention };
                for command in commands {
                    replies.push(apply(&group, command)?);
                }
            }
            txn.commit().map_err(fail)
        });
        // Commands of an aborted group that were not applied are dropped: their callers see "writer stopped"
        // through the closed reply channel; those that were applied get the transaction's error.
        let error = result.err();
        if let Some(error) = &error {
            tracing::error!(%error, "embedded store transaction failed");
        }
        for reply in replies {
            reply(error.as_ref());
        }
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn ping(&self) -> Result<()> {
        self.read(|_| Ok(()))
    }

    async fn write(&self, key: &ForecastKey, new: NewVersion, expect: Expect) -> Result<VersionRecord> {
        let key = key.clone();
        self.submit(|reply| Command::Write {
            key,
            new,
            expect,
            reply,
        })
        .await
    }

    async fn delete(&self, key: &ForecastKey) -> Result<Option<u64>> {
        let key = key.clone();
        self.submit(|reply| Command::Delete { key, reply }).await
    }

    async fn current(&self, key: &ForecastKey) -> Result<Option<VersionRecord>> {
        Ok(self.current_many(std::slice::from_ref(key)).await?.pop().flatten())
    }

    async fn current_many(&self, keys: &[ForecastKey]) -> Result<Vec<Option<VersionRecord>>> {
        self.read(|txn| {
            let forecasts = txn.open_table(FORECASTS).map_err(fail)?;
            let versions = txn.open_table(VERSIONS).map_err(fail)?;
            keys.iter()
                .map(|key| {
                    let name = key.to_string();
                    match key_state(&forecasts, &name)?.current {
                        Some(current) => record_at(&versions, &name, current),
                        None => Ok(None),
                    }
                })
                .collect()
        })
    }

    async fn version(&self, key: &ForecastKey, version: u64) -> Result<VersionRecord> {
        self.read(|txn| {
            let name = key.to_string();
            if let Some(record) = record_at(&txn.open_table(VERSIONS).map_err(fail)?, &name, version)? {
                return Ok(record);
            }
            let state = key_state(&txn.open_table(FORECASTS).map_err(fail)?, &name)?;
            Err(missing_version(key, version, state.latest, state.oldest))
        })
    }

    async fn history(&self, key: &ForecastKey) -> Result<History> {
        self.read(|txn| {
            let name = key.to_string();
            let state = key_state(&txn.open_table(FORECASTS).map_err(fail)?, &name)?;
            let table = txn.open_table(VERSIONS).map_err(fail)?;
            let mut versions = Vec::new();
            for entry in table
                .range((name.as_str(), 0)..=(name.as_str(), u64::MAX))
                .map_err(fail)?
                .rev()
            {
                let (_, raw) = entry.map_err(fail)?;
                versions.push(VersionRecord::decode(raw.value())?);
            }
            Ok(History {
                latest: state.latest,
                current: state.current,
                versions,
            })
        })
    }

    async fn model_keys(&self, model: &ModelRef) -> Result<Vec<ForecastKey>> {
        self.read(|txn| {
            let model = model.to_string();
            let table = txn.open_table(MODELS).map_err(fail)?;
            let mut keys = Vec::new();
            for entry in table.range((model.as_str(), "")..).map_err(fail)? {
                let (names, _) = entry.map_err(fail)?;
                let (owner, key) = names.value();
                if owner != model {
                    break;
                }
                keys.push(key.parse().map_err(StorageError::corrupt)?);
            }
            Ok(keys)
        })
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<()> {
        let entry = entry.clone();
        self.submit(|reply| Command::Audit { entry, reply }).await
    }

    async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        self.read(|txn| {
            let table = txn.open_table(AUDIT).map_err(fail)?;
            let mut entries = Vec::new();
            for entry in table.iter().map_err(fail)?.rev().take(limit) {
                let (_, raw) = entry.map_err(fail)?;
                entries.push(serde_json::from_slice(raw.value()).map_err(StorageError::corrupt)?);
            }
            Ok(entries)
        })
    }

    async fn admin_token_hash(&self, candidate: &str) -> Result<String> {
        let candidate = candidate.to_owned();
        self.submit(|reply| Command::AdminToken { candidate, reply }).await
    }

    async fn append_invalidation(&self, new: &NewInvalidation) -> Result<u64> {
        let new = new.clone();
        self.submit(|reply| Command::Invalidate { new, reply }).await
    }

    async fn read_invalidations(&self, after: Option<u64>, limit: NonZeroUsize) -> Result<InvalidationPage> {
        self.read(|txn| {
            let LogRead { head, records: raw } = read_numbered(txn, INVALIDATIONS, after, limit)?;
            let records = raw
                .iter()
                .map(|(sequence, record)| Ok(NewInvalidation::decode(record)?.into_record(*sequence)))
                .collect::<Result<_>>()?;
            Ok(InvalidationPage::new(after, head, records))
        })
    }

    async fn append_events(&self, events: &[StoredEvent]) -> Result<u64> {
        let events = events.to_vec();
        self.submit(|reply| Command::AppendEvents { events, reply }).await
    }

    /// Nothing to note: pending marks are a table of their own, read whole.
    async fn intend_change(&self, _key: &ForecastKey) -> Result<()> {
        Ok(())
    }

    async fn pending_changes(&self, before_ms: u64) -> Result<Vec<PendingChange>> {
        self.read(|txn| {
            let table = txn.open_table(PENDING).map_err(fail)?;
            let mut pending = Vec::new();
            for entry in table.iter().map_err(fail)? {
                let (mark, marked_at) = entry.map_err(fail)?;
                let (key, version, change) = mark.value();
                if marked_at.value() < before_ms {
                    pending.push(PendingChange {
                        key: key.parse().map_err(StorageError::corrupt)?,
                        version,
                        change: PendingChange::parse_change(change)?,
                    });
                }
            }
            // By key, then in the order the changes were made.
            pending.sort_by(|a, b| (&a.key, a.order()).cmp(&(&b.key, b.order())));
            Ok(pending)
        })
    }

    /// One transaction checks the mark, appends the event and clears the mark: exactly once.
    async fn complete_change(&self, change: &PendingChange, event: &StoredEvent) -> Result<Option<u64>> {
        let name = change.key.to_string();
        let version = change.version;
        let change_name = PendingChange::change_name(change.change);
        let record = event.encode()?.into_bytes();
        let retention = self.retention.events;
        self.change(move |txn| {
            let mut marks = txn.open_table(PENDING).map_err(fail)?;
            if marks
                .remove((name.as_str(), version, change_name))
                .map_err(fail)?
                .is_none()
            {
                return Ok(None);
            }
            let mut log = txn.open_table(EVENTS).map_err(fail)?;
            let id = append_numbered(&mut log, &[record], retention, |raw| {
                Ok(StoredEvent::appended_at_ms_of(raw))
            })?;
            Ok(Some(id))
        })
        .await
    }

    async fn read_events(&self, after: Option<u64>, limit: NonZeroUsize) -> Result<EventPage> {
        self.read(|txn| Ok(EventPage::decode(read_numbered(txn, EVENTS, after, limit)?)))
    }
}
