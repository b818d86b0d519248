//! The Redis backend: one node through a reconnecting connection manager, or a Redis Cluster.
//!
//! The connection is made on first use, not at start, so the origin starts (not ready) while Redis is
//! down and connects by itself when it comes back. Every call is bounded by `operation_timeout`.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::streams::StreamId;
use redis::{Cmd, Pipeline, RedisFuture, Script, Value};
use shared::domain::{ForecastKey, ModelRef};
use shared::events::ForecastChange;
use shared::time::unix_ms_now;
use time::OffsetDateTime;
use tokio::sync::OnceCell;

mod tokens;
mod webhooks;

use super::keys;
use super::{
    AuditEntry, Current, EventPage, Expect, History, InvalidationPage, LogRead, LogRetention, NewInvalidation,
    NewVersion, PendingChange, Result, Retention, StorageError, Store, StoredEvent, VersionRecord, missing_version,
};

/// Bounds (ms) of the cluster client's jittered pause between retries of a request.
const RETRY_WAIT_MS: std::ops::Range<u64> = 10..250;

/// Appends a version atomically: assigns the number, checks the precondition, updates the current pointer,
/// marks the change pending and trims old versions. KEYS[1] the forecast hash; ARGV: expect mode,
/// expected version, record tail, versions kept, the change's mark. Returns `{"ok", n}` or
/// `{"conflict", current or ""}`.
const WRITE_SCRIPT: &str = r#"
local k = KEYS[1]
local mode, expected, tail, keep = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local curv = redis.call('HGET', k, 'curv')
if (mode == 'exists' and not curv) or (mode == 'version' and curv ~= expected) then
  return {'conflict', curv or ''}
end
local n = tonumber(redis.call('HGET', k, 'seq') or '0') + 1
local rec = '{"version":' .. n .. tail
redis.call('HSET', k, 'seq', n, 'curv', n, 'cur', rec, 'v:' .. n, rec, 'pend:' .. n .. ':' .. ARGV[5], '')
local lo = tonumber(redis.call('HGET', k, 'lo') or '1')
while lo <= n - keep do
  redis.call('HDEL', k, 'v:' .. lo)
  lo = lo + 1
end
redis.call('HSET', k, 'lo', lo)
return {'ok', n}
"#;

/// Appends records to a numbered log (invalidations, events) atomically, so origins appending at once
/// get consecutive numbers: the first follows the newest entry's (trimming never removes it), and each
/// is its entry's ID `<number>-0`. Then trims: to `keep` entries, and the oldest entries appended before
/// `cutoff`, at most 64 per append and never the newest. KEYS[1] the log; ARGV: appended at (ms),
/// entries kept, cutoff (ms), then the records. Returns the first number.
///
/// With KEYS[2] (a key in the log's slot naming what the one record stands for) the append happens
/// once: a second one answers the first's number. The name lives as long as the log keeps records
/// (ARGV[1] minus ARGV[3]), at least a day.
const APPEND_LOG_SCRIPT: &str = r#"
local k = KEYS[1]
local at, keep, cutoff = ARGV[1], ARGV[2], tonumber(ARGV[3])
if KEYS[2] then
  local done = redis.call('GET', KEYS[2])
  if done then return tonumber(done) end
end
local newest = redis.call('XREVRANGE', k, '+', '-', 'COUNT', 1)[1]
local first = 1
if newest then first = tonumber(string.match(newest[1], '^%d+')) + 1 end
local last
for i = 4, #ARGV do
  last = string.format('%d-0', first + i - 4)
  redis.call('XADD', k, 'MAXLEN', keep, last, 't', at, 'e', ARGV[i])
end
local expired = 0
for _, entry in ipairs(redis.call('XRANGE', k, '-', '+', 'COUNT', 64)) do
  if entry[1] == last or tonumber(entry[2][2]) >= cutoff then break end
  expired = expired + 1
end
if expired > 0 then redis.call('XTRIM', k, 'MAXLEN', redis.call('XLEN', k) - expired) end
if KEYS[2] then
  local ttl = math.max(86400000, tonumber(at) - cutoff)
  redis.call('SET', KEYS[2], first, 'PX', ttl)
end
return first
"#;

/// Reads a numbered log's head (the newest entry's ID, or false) and up to ARGV[2] entries from ID
/// ARGV[1] on, at one instant. KEYS[1] the log.
const READ_LOG_SCRIPT: &str = r#"
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
local head = false
if newest then head = newest[1] end
return {head, redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])}
"#;

/// Removes the current pointer and marks the deletion pending. Returns the version that was current,
/// or false.
const DELETE_SCRIPT: &str = r#"
local curv = redis.call('HGET', KEYS[1], 'curv')
if curv then
  redis.call('HDEL', KEYS[1], 'curv', 'cur')
  redis.call('HSET', KEYS[1], 'pend:' .. curv .. ':' .. ARGV[1], '')
end
return curv
"#;

/// Drops the note of a coming change of ARGV[1] if it is still the one read (score ARGV[2]): a change
/// noted since keeps it. KEYS[1] the notes.
const FORGET_INTENT_SCRIPT: &str = r#"
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
"#;

#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// One URL for a single node; for a cluster, any number of its nodes.
    pub urls: Vec<String>,
    pub cluster: bool,
    pub operation_timeout: Duration,
    pub retention: Retention,
}

#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(cmd, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

pub struct RedisStore {
    settings: RedisSettings,
    connection: OnceCell<Connection>,
    write_script: Script,
    delete_script: Script,
    append_log_script: Script,
    read_log_script: Script,
    forget_intent_script: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("cluster", &self.settings.cluster)
            .field("connected", &self.connection.initialized())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Checks the settings; the connection is made on first use.
    pub fn new(settings: RedisSettings) -> Result<Self> {
        if settings.urls.is_empty() {
            return Err(StorageError::unavailable("no redis url configured"));
        }
        for url in &settings.urls {
            redis::Client::open(url.as_str())
                .map_err(|e| StorageError::unavailable(format!("invalid redis url: {e}")))?;
        }
        Ok(Self {
            settings,
            connection: OnceCell::new(),
            write_script: Script::new(WRITE_SCRIPT),
            delete_script: Script::new(DELETE_SCRIPT),
            append_log_script: Script::new(APPEND_LOG_SCRIPT),
            read_log_script: Script::new(READ_LOG_SCRIPT),
            forget_intent_script: Script::new(FORGET_INTENT_SCRIPT),
        })
    }

    async fn connect(&self) -> Result<Connection> {
        let timeout = self.settings.operation_timeout;
        if self.settings.cluster {
            let client = ClusterClientBuilder::new(self.settings.urls.clone())
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(2)
                // The client's default pause before a retry is at least 1.28 s, longer than a whole
                // operation may take: a request caught by a slot refresh would time out instead of
                // being answered by the masters still up.
                .min_retry_wait(RETRY_WAIT_MS.start)
                .max_retry_wait(RETRY_WAIT_MS.end)
                .build()
                .map_err(StorageError::unavailable)?;
            let connection = client.get_async_connection().await.map_err(StorageError::unavailable)?;
            Ok(Connection::Cluster(connection))
        } else {
            let client = redis::Client::open(self.settings.urls[0].as_str()).map_err(StorageError::unavailable)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout)
                .set_number_of_retries(1)
                .set_max_delay(500);
            let manager = ConnectionManager::new_with_config(client, config)
                .await
                .map_err(StorageError::unavailable)?;
            Ok(Connection::Single(manager))
        }
    }

    async fn connection(&self) -> Result<Connection> {
        let timeout = self.settings.operation_timeout;
        let connection = tokio::time::timeout(timeout, self.connection.get_or_try_init(|| self.connect()))
            .await
            .map_err(|_| StorageError::unavailable("timed out connecting to redis"))??;
        Ok(connection.clone())
    }

    /// Runs one request, bounded in time; every Redis failure is reported as unavailability.
    async fn run<T, F>(&self, request: impl FnOnce(Connection) -> F) -> Result<T>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let connection = self.connection().await?;
        match tokio::time::timeout(self.settings.operation_timeout, request(connection)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(StorageError::unavailable(error)),
            Err(_) => Err(StorageError::unavailable("redis operation timed out")),
        }
    }
}

fn decode_optional(bytes: Option<Vec<u8>>) -> Result<Option<VersionRecord>> {
    bytes.map(|b| VersionRecord::decode(&b)).transpose()
}

fn parse_number(fields: &HashMap<String, Vec<u8>>, name: &str) -> Result<Option<u64>> {
    fields
        .get(name)
        .map(|raw| {
            std::str::from_utf8(raw)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| StorageError::corrupt(format!("field {name} is not a number")))
        })
        .transpose()
}

/// The sequence of a log entry ID, `<sequence>-0`.
fn sequence_of(id: &str) -> Result<u64> {
    id.split_once('-')
        .and_then(|(sequence, _)| sequence.parse().ok())
        .ok_or_else(|| StorageError::corrupt(format!("invalidation log entry id {id:?} is not <sequence>-0")))
}

/// The number and the record of a numbered log's entry.
fn log_entry(entry: &StreamId) -> Result<(u64, Vec<u8>)> {
    let record: Vec<u8> = entry
        .get(keys::LOG_RECORD_FIELD)
        .ok_or_else(|| StorageError::corrupt("log entry without its record"))?;
    Ok((sequence_of(&entry.id)?, record))
}

impl RedisStore {
    /// Appends `records` to the numbered log at `key`; answers the first one's number. With `once`, a
    /// key in the log's slot, the one record is appended only if nothing was under that name before.
    async fn append_log(
        &self,
        key: &str,
        once: Option<&str>,
        at_ms: u64,
        retention: LogRetention,
        records: &[String],
    ) -> Result<u64> {
        let cutoff = retention.cutoff_ms(OffsetDateTime::now_utc());
        self.run(|mut c| {
            let mut invocation = self.append_log_script.key(key);
            if let Some(once) = once {
                invocation.key(once);
            }
            invocation.arg(at_ms).arg(retention.kept).arg(cutoff);
            for record in records {
                invocation.arg(record);
            }
            async move { invocation.invoke_async(&mut c).await }
        })
        .await
    }

    /// The head of the numbered log at `key` and up to `limit` records after `after`.
    async fn read_log(&self, key: &str, after: Option<u64>, limit: NonZeroUsize) -> Result<LogRead> {
        let start = after.map_or_else(|| "-".to_owned(), |after| after.saturating_add(1).to_string());
        let (head, entries): (Option<String>, redis::streams::StreamRangeReply) = self
            .run(|mut c| {
                let mut invocation = self.read_log_script.key(key);
                invocation.arg(&start).arg(limit.get());
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        let records = entries.ids.iter().map(log_entry).collect::<Result<_>>()?;
        let head = head.as_deref().map(sequence_of).transpose()?;
        Ok(LogRead { head, records })
    }

    /// Current records of `keys` in one pipeline (on a cluster, the keys must share a slot).
    async fn current_pipelined(&self, keys: &[ForecastKey]) -> Result<Vec<Option<VersionRecord>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("HGET").arg(keys::forecast(key)).arg(keys::CURRENT_RECORD);
        }
        let found: Vec<Option<Vec<u8>>> = self.run(|mut c| async move { pipe.query_async(&mut c).await }).await?;
        found.into_iter().map(decode_optional).collect()
    }
}

#[async_trait]
impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> Result<()> {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await
            .map(drop)
    }

    async fn write(&self, key: &ForecastKey, new: NewVersion, expect: Expect) -> Result<VersionRecord> {
        let tail = VersionRecord::encode_tail(key, &new)?;
        let model_directory = keys::model_directory(&new.forecast.model);
        let hash = keys::forecast(key);
        let (mode, expected) = match expect {
            Expect::Any => ("any", String::new()),
            Expect::Exists => ("exists", String::new()),
            Expect::Version(v) => ("version", v.to_string()),
        };
        // The directory entry goes first: on Cluster it lives in another slot, and a crash between the two
        // steps must leave an extra entry rather than a missing one.
        let member = key.to_string();
        self.run(|mut c| async move {
            redis::cmd("SADD")
                .arg(&model_directory)
                .arg(&member)
                .query_async::<()>(&mut c)
                .await
        })
        .await?;
        let change = PendingChange::change_name(PendingChange::of_written(new.rollback_of));
        let (status, value): (String, String) = self
            .run(|mut c| {
                let script = &self.write_script;
                let keep = self.settings.retention.versions_kept;
                let tail = &tail;
                async move {
                    script
                        .key(&hash)
                        .arg(mode)
                        .arg(expected)
                        .arg(tail)
                        .arg(keep)
                        .arg(change)
                        .invoke_async(&mut c)
                        .await
                }
            })
            .await?;
        match status.as_str() {
            "ok" => {
                let version = value.parse().map_err(StorageError::corrupt)?;
                Ok(VersionRecord::from_new(key, version, new))
            }
            _ => Err(StorageError::Conflict {
                key: key.clone(),
                expected: expect,
                found: Current(value.parse().ok()),
            }),
        }
    }

    async fn delete(&self, key: &ForecastKey) -> Result<Option<u64>> {
        let hash = keys::forecast(key);
        let mark = PendingChange::change_name(ForecastChange::Deleted);
        let deleted: Option<u64> = self
            .run(|mut c| async move { self.delete_script.key(&hash).arg(mark).invoke_async(&mut c).await })
            .await?;
        Ok(deleted)
    }

    async fn intend_change(&self, key: &ForecastKey) -> Result<()> {
        let now = unix_ms_now();
        let member = key.to_string();
        self.run(|mut c| async move {
            redis::cmd("ZADD")
                .arg(keys::CHANGE_NOTES)
                .arg(now)
                .arg(&member)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    async fn pending_changes(&self, before_ms: u64) -> Result<Vec<PendingChange>> {
        let noted: Vec<(String, String)> = self
            .run(|mut c| async move {
                redis::cmd("ZRANGEBYSCORE")
                    .arg(keys::CHANGE_NOTES)
                    .arg("-inf")
                    .arg(before_ms)
                    .arg("WITHSCORES")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(1000)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let mut pending = Vec::new();
        for (member, score) in noted {
            let key: ForecastKey = member.parse().map_err(StorageError::corrupt)?;
            let hash = keys::forecast(&key);
            let fields: HashMap<String, Vec<u8>> = self
                .run(|mut c| async move { redis::cmd("HGETALL").arg(&hash).query_async(&mut c).await })
                .await?;
            let mut marks = fields
                .keys()
                .filter_map(|name| name.strip_prefix(keys::PENDING_PREFIX))
                .map(|mark| PendingChange::parse_mark(&key, mark))
                .collect::<Result<Vec<_>>>()?;
            if marks.is_empty() {
                self.run(|mut c| async move {
                    self.forget_intent_script
                        .key(keys::CHANGE_NOTES)
                        .arg(&member)
                        .arg(&score)
                        .invoke_async::<()>(&mut c)
                        .await
                })
                .await?;
            }
            marks.sort_by_key(PendingChange::order);
            pending.extend(marks);
        }
        Ok(pending)
    }

    async fn complete_change(&self, change: &PendingChange, event: &StoredEvent) -> Result<Option<u64>> {
        let record = event.encode()?;
        let once = keys::change_event(&change.id());
        let retention = self.settings.retention.events;
        let id = self
            .append_log(keys::EVENTS, Some(&once), event.appended_at_ms, retention, &[record])
            .await?;
        let hash = keys::forecast(&change.key);
        let field = keys::pending_field(change.version, PendingChange::change_name(change.change));
        let cleared: u64 = self
            .run(|mut c| async move { redis::cmd("HDEL").arg(&hash).arg(&field).query_async(&mut c).await })
            .await?;
        Ok((cleared > 0).then_some(id))
    }

    async fn current(&self, key: &ForecastKey) -> Result<Option<VersionRecord>> {
        let hash = keys::forecast(key);
        let bytes: Option<Vec<u8>> = self
            .run(|mut c| async move {
                redis::cmd("HGET")
                    .arg(&hash)
                    .arg(keys::CURRENT_RECORD)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        decode_optional(bytes)
    }

    async fn current_many(&self, keys: &[ForecastKey]) -> Result<Vec<Option<VersionRecord>>> {
        if !self.settings.cluster {
            return self.current_pipelined(keys).await;
        }
        // A cluster pipeline must stay in one slot: one pipeline per instrument, all at once.
        let mut groups: Vec<(Vec<usize>, Vec<ForecastKey>)> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            match groups
                .iter_mut()
                .find(|(_, group)| group[0].instrument == key.instrument)
            {
                Some((positions, group)) => {
                    positions.push(i);
                    group.push(key.clone());
                }
                None => groups.push((vec![i], vec![key.clone()])),
            }
        }
        let found =
            futures::future::try_join_all(groups.iter().map(|(_, group)| self.current_pipelined(group))).await?;
        let mut answers = vec![None; keys.len()];
        for ((positions, _), records) in groups.iter().zip(found) {
            for (&i, record) in positions.iter().zip(records) {
                answers[i] = record;
            }
        }
        Ok(answers)
    }

    async fn version(&self, key: &ForecastKey, version: u64) -> Result<VersionRecord> {
        let hash = keys::forecast(key);
        let (record, latest, oldest): (Option<Vec<u8>>, Option<u64>, Option<u64>) = self
            .run(|mut c| async move {
                redis::cmd("HMGET")
                    .arg(&hash)
                    .arg(keys::version_field(version))
                    .arg(keys::SEQ)
                    .arg(keys::OLDEST)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        match record {
            Some(bytes) => VersionRecord::decode(&bytes),
            None => Err(missing_version(key, version, latest.unwrap_or(0), oldest.unwrap_or(1))),
        }
    }

    async fn history(&self, key: &ForecastKey) -> Result<History> {
        let hash = keys::forecast(key);
        let fields: HashMap<String, Vec<u8>> = self
            .run(|mut c| async move { redis::cmd("HGETALL").arg(&hash).query_async(&mut c).await })
            .await?;
        let mut versions = fields
            .iter()
            .filter(|(name, _)| name.starts_with("v:"))
            .map(|(_, bytes)| VersionRecord::decode(bytes))
            .collect::<Result<Vec<_>>>()?;
        versions.sort_by_key(|v| std::cmp::Reverse(v.version));
        Ok(History {
            latest: parse_number(&fields, keys::SEQ)?.unwrap_or(0),
            current: parse_number(&fields, keys::CURRENT_VERSION)?,
            versions,
        })
    }

    async fn model_keys(&self, model: &ModelRef) -> Result<Vec<ForecastKey>> {
        let directory = keys::model_directory(model);
        let members: Vec<String> = self
            .run(|mut c| async move { redis::cmd("SMEMBERS").arg(&directory).query_async(&mut c).await })
            .await?;
        let mut found = members
            .iter()
            .map(|m| m.parse().map_err(StorageError::corrupt))
            .collect::<Result<Vec<ForecastKey>>>()?;
        found.sort();
        Ok(found)
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<()> {
        let json = serde_json::to_string(entry).map_err(StorageError::corrupt)?;
        let kept = self.settings.retention.audit_kept;
        self.run(|mut c| async move {
            redis::cmd("XADD")
                .arg(keys::AUDIT)
                .arg("MAXLEN")
                .arg("~")
                .arg(kept)
                .arg("*")
                .arg(keys::AUDIT_FIELD)
                .arg(&json)
                .query_async::<String>(&mut c)
                .await
        })
        .await
        .map(drop)
    }

    async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        let reply: redis::streams::StreamRangeReply = self
            .run(|mut c| async move {
                redis::cmd("XREVRANGE")
                    .arg(keys::AUDIT)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(limit)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        reply
            .ids
            .iter()
            .map(|id| {
                let json: String = id
                    .get(keys::AUDIT_FIELD)
                    .ok_or_else(|| StorageError::corrupt("audit entry without its field"))?;
                serde_json::from_str(&json).map_err(StorageError::corrupt)
            })
            .collect()
    }

    async fn admin_token_hash(&self, candidate: &str) -> Result<String> {
        let candidate = candidate.to_owned();
        self.run(|mut c| async move {
            redis::cmd("SET")
                .arg(keys::ADMIN_TOKEN)
                .arg(&candidate)
                .arg("NX")
                .arg("GET")
                .query_async::<Option<String>>(&mut c)
                .await
                .map(|previous| previous.unwrap_or(candidate))
        })
        .await
    }

    async fn append_invalidation(&self, new: &NewInvalidation) -> Result<u64> {
        let record = new.encode()?;
        let retention = self.settings.retention.invalidations;
        self.append_log(keys::INVALIDATIONS, None, new.issued_at_ms, retention, &[record])
            .await
    }

    async fn read_invalidations(&self, after: Option<u64>, limit: NonZeroUsize) -> Result<InvalidationPage> {
        let LogRead { head, records: entries } = self.read_log(keys::INVALIDATIONS, after, limit).await?;
        let records = entries
            .into_iter()
            .map(|(sequence, record)| Ok(NewInvalidation::decode(&record)?.into_record(sequence)))
            .collect::<Result<_>>()?;
        Ok(InvalidationPage::new(after, head, records))
    }

    async fn append_events(&self, events: &[StoredEvent]) -> Result<u64> {
        let records = events.iter().map(StoredEvent::encode).collect::<Result<Vec<_>>>()?;
        let at = events.first().map_or(0, |event| event.appended_at_ms);
        self.append_log(keys::EVENTS, None, at, self.settings.retention.events, &records)
            .await
    }

    async fn read_events(&self, after: Option<u64>, limit: NonZeroUsize) -> Result<EventPage> {
        Ok(EventPage::decode(self.read_log(keys::EVENTS, after, limit).await?))
    }
}
