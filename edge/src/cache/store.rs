//! The encrypted in-memory store behind pingora-cache.
//!
//! Every part of an entry (cache metadata with the response header, and each body chunk) is sealed
//! with AES-256-GCM under the current key of the keyring; hits open what they serve. Plaintext lives
//! only in the buffers of a request being served or a fill being written, never in the store.
//!
//! Entries are found by the hash of their cache key (primary key plus Vary variance) in sharded maps;
//! an index from logical key (path and query) and from surrogate tag to entries serves purges. Lock
//! order, everywhere: index, then a shard.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::cache::eviction::CacheEntryKey;
use pingora::cache::eviction::EvictionManager;
use pingora::cache::key::{CacheHashKey, CompactCacheKey, HashBinary};
use pingora::cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget, PurgeType,
};
use pingora::cache::trace::{Span, SpanHandle};
use pingora::cache::{CacheEntryKeyRef, CacheKey, CacheMeta, RespCacheable, Storage};
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorType, Result};
use shared::time::{unix_ms, unix_ms_now};

use super::key::{cache_key, fill_epoch, logical_key};
use super::policy::{response_cacheability, stale_window};
use super::purge::{PurgeLog, PurgeMode, Selector};
use super::sealed::{CHUNK_BYTES, Part, associated_data, decode_meta, encode_meta};
use crate::crypto::Keyring;
use crate::metrics::Metrics;

const SHARDS: usize = 32;
/// Bytes an entry costs beyond its sealed parts: map slots, index sets, the entry struct.
const ENTRY_OVERHEAD: usize = 256;
/// Purges remembered for refusing fills that raced with them.
const PURGE_LOG_CAPACITY: usize = 4096;

/// Settings of the store, from the `[cache]` configuration.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Bodies of at least this many bytes are compressed (lz4) before sealing; `None` never.
    pub compress_min_bytes: Option<usize>,
    /// Response headers whose values are surrogate tags, lower case (`surrogate-key`, `cache-tag`).
    pub tag_headers: Vec<String>,
}

/// The store. Pingora's traits take `&'static self`, so it is leaked once at start.
pub struct EncryptedStore {
    shards: Box<[RwLock<Shard>]>,
    index: Mutex<Index>,
    keyring: RwLock<Arc<Keyring>>,
    eviction: &'static (dyn EvictionManager + Sync),
    settings: StoreSettings,
    generation: AtomicU64,
    metrics: &'static Metrics,
}

struct Entry {
    hash: HashBinary,
    compact: CompactCacheKey,
    logical: Box<str>,
    tags: Box<[Box<str>]>,
    generation: u64,
    meta: Box<[u8]>,
    body: Arc<Body>,
    /// A soft purge's instant (ms since the Unix epoch), 0 when none: the entry is stale from then on.
    stale_since_ms: AtomicU64,
    /// After this instant (ms since the Unix epoch) the entry can serve nothing, not even stale.
    usable_until_ms: u64,
    weight: usize,
}

struct Body {
    chunks: Box<[SealedChunk]>,
    len: usize,
}

struct SealedChunk {
    sealed: Box<[u8]>,
    compressed: bool,
}

#[derive(Default)]
struct Index {
    by_key: BTreeMap<Box<str>, HashSet<HashBinary, PrehashedState>>,
    by_tag: HashMap<Box<str>, HashSet<HashBinary, PrehashedState>>,
    purges: PurgeLog,
}

impl Default for PurgeLog {
    fn default() -> Self {
        PurgeLog::new(PURGE_LOG_CAPACITY)
    }
}

/// What the store holds, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    pub entries: usize,
    pub sealed_under_current_key: usize,
}

impl EncryptedStore {
    pub fn new(
        keyring: Keyring,
        eviction: &'static (dyn EvictionManager + Sync),
        settings: StoreSettings,
        metrics: &'static Metrics,
    ) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            index: Mutex::default(),
            keyring: RwLock::new(Arc::new(keyring)),
            eviction,
            settings,
            generation: AtomicU64::new(1),
            metrics,
        }
    }

    /// Seals new entries under `keyring`'s current key from now on; entries sealed under keys it still
    /// holds as previous stay readable.
    pub fn set_keyring(&self, keyring: Keyring) {
        *self.keyring.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keyring);
    }

    fn keyring(&self) -> Arc<Keyring> {
        self.keyring.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The purge epoch a fill starting now carries in its cache key.
    pub fn fill_epoch(&self) -> u64 {
        self.index().purges.epoch()
    }

    /// Purges from outside pingora's own request flow (control plane, unsafe methods): deletes the
    /// selected entries, or marks them stale. Returns how many entries were affected, counted in
    /// metrics under `cause`. Fills in flight that the selector matches will not be stored.
    pub fn purge(&self, selector: &Selector, mode: PurgeMode, cause: &'static str) -> usize {
        let mut index = self.index();
        index.purges.record(selector.clone());
        let hashes = index.select(selector);
        let affected = match mode {
            PurgeMode::Hard => hashes
                .iter()
                .filter(|hash| self.remove_locked(&mut index, hash).is_some())
                .count(),
            PurgeMode::Soft => {
                let now = unix_ms_now();
                hashes
                    .iter()
                    .filter_map(|hash| self.get(hash))
                    .map(|entry| entry.stale_since_ms.store(now, Ordering::Relaxed))
                    .count()
            }
        };
        drop(index);
        self.metrics.purged.with_label_values(&[cause]).inc_by(affected as u64);
        self.publish_size();
        affected
    }

    /// Stores a response the origin pushed ahead of reads, as if `GET path` on each of `hosts` had just
    /// fetched it: only when a fetch would have stored it, and never with Vary (a push has no request
    /// to key a variant by). Returns under how many hosts it was stored.
    pub async fn store_pushed(
        &'static self,
        path: &str,
        hosts: &[String],
        response: ResponseHeader,
        body: Bytes,
    ) -> usize {
        let meta = match response_cacheability(&response, false, &[]) {
            RespCacheable::Cacheable(meta) => meta,
            RespCacheable::Uncacheable(_) => return 0,
        };
        let mut stored = 0;
        for host in hosts {
            let key = cache_key(path, host, self.fill_epoch());
            let Ok(mut miss) = self.get_miss_handler(&key, &meta, &Span::inactive().handle()).await else {
                continue;
            };
            if miss.write_body(body.clone(), true).await.is_err() {
                continue;
            }
            let Ok(MissFinishType::Created(weight)) = miss.finish().await else {
                continue;
            };
            stored += 1;
            let entry = CacheEntryKey::from_entry_id(key.to_compact(), None);
            for evicted in self.eviction.admit(entry, weight, meta.fresh_until()) {
                let mut index = self.index();
                if self.remove_locked(&mut index, &evicted.key().combined_bin()).is_some() {
                    self.metrics.evictions.inc();
                }
            }
        }
        self.publish_size();
        stored
    }

    /// Removes entries past their last usable instant (freshness plus stale windows). Returns how many.
    pub fn sweep(&self, now: SystemTime) -> usize {
        let now = unix_ms(now);
        let expired: Vec<HashBinary> = self
            .shards
            .iter()
            .flat_map(|shard| {
                let shard = shard.read().unwrap_or_else(PoisonError::into_inner);
                shard
                    .values()
                    .filter(|entry| entry.usable_until_ms < now)
                    .map(|entry| entry.hash)
                    .collect::<Vec<_>>()
            })
            .collect();
        if expired.is_empty() {
            return 0;
        }
        let mut index = self.index();
        let removed = expired
            .iter()
            .filter(|hash| {
                self.get(hash).is_some_and(|entry| entry.usable_until_ms < now)
                    && self.remove_locked(&mut index, hash).is_some()
            })
            .count();
        drop(index);
        self.metrics.expired.inc_by(removed as u64);
        self.publish_size();
        removed
    }

    pub fn stats(&self) -> StoreStats {
        let keyring = self.keyring();
        let mut stats = StoreStats {
            entries: 0,
            sealed_under_current_key: 0,
        };
        for shard in self.shards.iter() {
            let shard = shard.read().unwrap_or_else(PoisonError::into_inner);
            stats.entries += shard.len();
            stats.sealed_under_current_key += shard.values().filter(|e| keyring.is_current(&e.meta)).count();
        }
        stats
    }

    /// Sets the entry and memory gauges; the memory figure is the eviction manager's, which admits an
    /// entry only after its fill is stored, so it is also refreshed when metrics are scraped.
    pub fn publish_size(&self) {
        let entries: usize = self
            .shards
            .iter()
            .map(|shard| shard.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum();
        self.metrics.entries.set(entries as i64);
        self.metrics.memory_used.set(self.eviction.total_size() as i64);
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn shard(&self, hash: &HashBinary) -> &RwLock<Shard> {
        &self.shards[usize::from(hash[15]) % SHARDS]
    }

    fn get(&self, hash: &HashBinary) -> Option<Arc<Entry>> {
        self.shard(hash)
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(hash)
            .cloned()
    }

    /// Removes an entry from the map, the index and the eviction manager's accounting.
    fn remove_locked(&self, index: &mut Index, hash: &HashBinary) -> Option<Arc<Entry>> {
        let entry = self
            .shard(hash)
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(hash)?;
        index.forget(&entry);
        self.eviction
            .remove(CacheEntryKeyRef::from_entry_id(&entry.compact, None));
        Some(entry)
    }

    /// Stores `entry` if no purge since `epoch` selects it, replacing what was under its hash.
    fn commit(&self, entry: Entry, epoch: u64) -> std::result::Result<(), ()> {
        let mut index = self.index();
        if !index.purges.admits(epoch, &entry.logical, &entry.tags) {
            self.metrics.fills_refused.inc();
            return Err(());
        }
        let entry = Arc::new(entry);
        index.remember(&entry);
        let previous = self
            .shard(&entry.hash)
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(entry.hash, entry.clone());
        if let Some(previous) = previous
            && previous.tags != entry.tags
        {
            index.forget_tags(&previous);
            index.remember(&entry);
        }
        drop(index);
        self.publish_size();
        Ok(())
    }

    fn open_meta(&self, keyring: &Keyring, entry: &Entry) -> Option<CacheMeta> {
        let aad = associated_data(&entry.hash, entry.generation, Part::Meta);
        let record = Plaintext(keyring.open(&aad, &entry.meta).ok()?);
        let mut meta = decode_meta(record.as_ref()).ok()?;
        let stale_since = entry.stale_since_ms.load(Ordering::Relaxed);
        if stale_since != 0 {
            meta.expire_at(SystemTime::UNIX_EPOCH + Duration::from_millis(stale_since));
        }
        Some(meta)
    }

    fn tags_of(&self, meta: &CacheMeta) -> Box<[Box<str>]> {
        let mut tags: Vec<Box<str>> = self
            .settings
            .tag_headers
            .iter()
            .flat_map(|name| meta.headers().get_all(name.as_str()))
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(|c: char| c == ',' || c.is_ascii_whitespace()))
            .filter(|tag| !tag.is_empty())
            .map(Box::from)
            .collect();
        tags.sort_unstable();
        tags.dedup();
        tags.into_boxed_slice()
    }

    fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed)
    }
}

impl Index {
    fn select(&self, selector: &Selector) -> Vec<HashBinary> {
        match selector {
            Selector::Key(key) => self.by_key.get(key.as_str()).into_iter().flatten().copied().collect(),
            Selector::Prefix(prefix) => self
                .by_key
                .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
                .take_while(|(key, _)| key.starts_with(prefix.as_str()))
                .flat_map(|(_, hashes)| hashes.iter().copied())
                .collect(),
            Selector::Tag(tag) => self.by_tag.get(tag.as_str()).into_iter().flatten().copied().collect(),
            Selector::All => self.by_key.values().flatten().copied().collect(),
        }
    }

    fn remember(&mut self, entry: &Entry) {
        self.by_key.entry(entry.logical.clone()).or_default().insert(entry.hash);
        for tag in &entry.tags {
            self.by_tag.entry(tag.clone()).or_default().insert(entry.hash);
        }
    }

    fn forget(&mut self, entry: &Entry) {
        if let Some(hashes) = self.by_key.get_mut(&*entry.logical) {
            hashes.remove(&entry.hash);
            if hashes.is_empty() {
                self.by_key.remove(&*entry.logical);
            }
        }
        self.forget_tags(entry);
    }

    fn forget_tags(&mut self, entry: &Entry) {
        for tag in &entry.tags {
            if let Some(hashes) = self.by_tag.get_mut(tag) {
                hashes.remove(&entry.hash);
                if hashes.is_empty() {
                    self.by_tag.remove(tag);
                }
            }
        }
    }
}

#[async_trait]
impl Storage for EncryptedStore {
    async fn lookup(&'static self, key: &CacheKey, _trace: &SpanHandle) -> Result<Option<(CacheMeta, HitHandler)>> {
        let hash = key.combined_bin();
        let Some(entry) = self.get(&hash) else {
            return Ok(None);
        };
        if entry.usable_until_ms < unix_ms_now() {
            return Ok(None);
        }
        let keyring = self.keyring();
        let Some(meta) = self.open_meta(&keyring, &entry) else {
            // A key dropped from the keyring, or damage: the entry can never be served again.
            self.metrics.unreadable_entries.inc();
            let mut index = self.index();
            self.remove_locked(&mut index, &hash);
            return Ok(None);
        };
        let end = entry.body.len;
        let hit = EncryptedHit {
            entry,
            keyring,
            next_chunk: 0,
            start: 0,
            end,
        };
        Ok(Some((meta, Box::new(hit))))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let logical = key
            .primary_key_str()
            .and_then(logical_key)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "cache key without a logical key"))?;
        let hash = key.combined_bin();
        let generation = self.next_generation();
        let keyring = self.keyring();
        let record = Plaintext(encode_meta(meta)?);
        let sealed_meta = keyring.seal(&associated_data(&hash, generation, Part::Meta), record.as_ref());
        let expected_len = meta
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<usize>().ok());
        Ok(Box::new(EncryptedMiss {
            store: self,
            keyring,
            hash,
            compact: key.to_compact(),
            logical: logical.into(),
            tags: self.tags_of(meta),
            epoch: fill_epoch(key),
            generation,
            meta: sealed_meta.into_boxed_slice(),
            usable_until_ms: usable_until_ms(meta),
            expected_len,
            pending: Plaintext::with_capacity(expected_len.map_or(CHUNK_BYTES, |len| len.min(CHUNK_BYTES))),
            chunks: Vec::new(),
            len: 0,
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let hash = target.key().combined_bin();
        let mut index = self.index();
        let removed = self.remove_locked(&mut index, &hash);
        drop(index);
        let Some(_) = removed else {
            return Ok(PurgeOutcome::NotFound);
        };
        match purge_type {
            PurgeType::Eviction => self.metrics.evictions.inc(),
            PurgeType::Invalidation => self.metrics.purged.with_label_values(&["request"]).inc(),
        }
        self.publish_size();
        Ok(PurgeOutcome::Purged(None))
    }

    async fn expire(&'static self, target: PurgeTarget<'_>, _trace: &SpanHandle) -> Result<PurgeOutcome> {
        let Some(entry) = self.get(&target.key().combined_bin()) else {
            return Ok(PurgeOutcome::NotFound);
        };
        entry.stale_since_ms.store(unix_ms_now(), Ordering::Relaxed);
        Ok(PurgeOutcome::Expired)
    }

    async fn update_meta(&'static self, key: &CacheKey, meta: &CacheMeta, _trace: &SpanHandle) -> Result<bool> {
        let hash = key.combined_bin();
        let Some(old) = self.get(&hash) else {
            return Ok(false);
        };
        let keyring = self.keyring();
        let record = Plaintext(encode_meta(meta)?);
        // The body chunks stay as they are, sealed for this generation, so the new meta keeps it too.
        let sealed_meta = keyring.seal(&associated_data(&hash, old.generation, Part::Meta), record.as_ref());
        let entry = Entry {
            hash,
            compact: old.compact.clone(),
            logical: old.logical.clone(),
            tags: self.tags_of(meta),
            generation: old.generation,
            weight: old.weight - old.meta.len() + sealed_meta.len(),
            meta: sealed_meta.into_boxed_slice(),
            body: old.body.clone(),
            // A revalidation answers a soft purge: the entry is fresh again.
            stale_since_ms: AtomicU64::new(0),
            usable_until_ms: usable_until_ms(meta),
        };
        Ok(self.commit(entry, fill_epoch(key)).is_ok())
    }

    fn support_streaming_partial_write(&self) -> bool {
        false
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync + 'static) {
        self
    }
}

/// Serves one hit, opening body chunks as they are read.
struct EncryptedHit {
    entry: Arc<Entry>,
    keyring: Arc<Keyring>,
    next_chunk: usize,
    /// The body range to serve, `start..end`.
    start: usize,
    end: usize,
}

impl EncryptedHit {
    fn open_chunk(&self, index: usize) -> Result<Plaintext> {
        let chunk = &self.entry.body.chunks[index];
        let part = Part::Body {
            chunk: index as u32,
            compressed: chunk.compressed,
        };
        let aad = associated_data(&self.entry.hash, self.entry.generation, part);
        let opened = self
            .keyring
            .open(&aad, &chunk.sealed)
            .map(Plaintext)
            .map_err(|e| Error::explain(ErrorType::InternalError, format!("cache body chunk: {e}")))?;
        if !chunk.compressed {
            return Ok(opened);
        }
        lz4_flex::decompress_size_prepended(opened.as_ref())
            .map(Plaintext)
            .map_err(|e| Error::explain(ErrorType::InternalError, format!("cache body chunk: {e}")))
    }
}

#[async_trait]
impl HandleHit for EncryptedHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        let chunk_start = self.next_chunk * CHUNK_BYTES;
        if chunk_start >= self.end || self.next_chunk >= self.entry.body.chunks.len() {
            return Ok(None);
        }
        let plain = self.open_chunk(self.next_chunk)?;
        self.next_chunk += 1;
        let from = self.start.saturating_sub(chunk_start).min(plain.0.len());
        let to = (self.end - chunk_start).min(plain.0.len());
        // Pingora drops the last reference once the bytes are written; the plaintext is zeroed then.
        let mut bytes = Bytes::from_owner(plain);
        if from > 0 || to < bytes.len() {
            bytes = bytes.slice(from..to);
        }
        Ok(Some(bytes))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let len = self.entry.body.len;
        let end = end.unwrap_or(len).min(len);
        if start > end {
            return Err(Error::explain(
                ErrorType::InternalError,
                "seek past the end of the body",
            ));
        }
        self.start = start;
        self.end = end;
        self.next_chunk = start / CHUNK_BYTES;
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.entry.weight
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn std::any::Any + Send + Sync) {
        self
    }
}

/// Writes one fill: seals each full chunk as the body streams in, commits at the end.
struct EncryptedMiss {
    store: &'static EncryptedStore,
    keyring: Arc<Keyring>,
    hash: HashBinary,
    compact: CompactCacheKey,
    logical: Box<str>,
    tags: Box<[Box<str>]>,
    epoch: u64,
    generation: u64,
    meta: Box<[u8]>,
    usable_until_ms: u64,
    /// Content-Length of the response, when it had one: a shorter body is a truncated one.
    expected_len: Option<usize>,
    /// Plaintext of the chunk being filled: write state, zeroed when sealed or dropped with the handler.
    pending: Plaintext,
    chunks: Vec<SealedChunk>,
    len: usize,
}

impl EncryptedMiss {
    fn seal_chunk(&mut self, plain: &[u8]) {
        let index = self.chunks.len() as u32;
        let compress = self
            .store
            .settings
            .compress_min_bytes
            .is_some_and(|min| plain.len() >= min);
        // LZ4 keeps runs of the input as they are: the compressed form is plaintext too.
        let compressed = compress.then(|| Plaintext(lz4_flex::compress_prepend_size(plain)));
        // Keep the compressed form only when it saves something.
        let compressed = compressed.filter(|c| c.0.len() < plain.len());
        if let Some(Plaintext(c)) = &compressed {
            let metrics = self.store.metrics;
            metrics.compression_input_bytes.inc_by(plain.len() as u64);
            metrics.compression_output_bytes.inc_by(c.len() as u64);
        }
        let part = Part::Body {
            chunk: index,
            compressed: compressed.is_some(),
        };
        let aad = associated_data(&self.hash, self.generation, part);
        let sealed = self
            .keyring
            .seal(&aad, compressed.as_ref().map_or(plain, |c| c.as_ref()));
        self.chunks.push(SealedChunk {
            sealed: sealed.into_boxed_slice(),
            compressed: compressed.is_some(),
        });
    }
}

#[async_trait]
impl HandleMiss for EncryptedMiss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        self.len += data.len();
        let mut data = &data[..];
        while !data.is_empty() {
            let room = CHUNK_BYTES - self.pending.0.len();
            let (now, later) = data.split_at(room.min(data.len()));
            self.pending.extend(now);
            data = later;
            if self.pending.0.len() == CHUNK_BYTES {
                let chunk = std::mem::take(&mut self.pending);
                self.seal_chunk(chunk.as_ref());
            }
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        if let Some(expected) = self.expected_len
            && expected != self.len
        {
            return Err(Error::explain(
                ErrorType::InternalError,
                format!(
                    "body of {} bytes where Content-Length said {expected}: not stored",
                    self.len
                ),
            ));
        }
        if !self.pending.0.is_empty() {
            let chunk = std::mem::take(&mut self.pending);
            self.seal_chunk(chunk.as_ref());
        }
        let sealed_bytes: usize = self.chunks.iter().map(|c| c.sealed.len()).sum();
        let weight = ENTRY_OVERHEAD + self.logical.len() + self.meta.len() + sealed_bytes;
        let entry = Entry {
            hash: self.hash,
            compact: self.compact,
            logical: self.logical,
            tags: self.tags,
            generation: self.generation,
            meta: self.meta,
            body: Arc::new(Body {
                chunks: std::mem::take(&mut self.chunks).into_boxed_slice(),
                len: self.len,
            }),
            stale_since_ms: AtomicU64::new(0),
            usable_until_ms: self.usable_until_ms,
            weight,
        };
        self.store.commit(entry, self.epoch).map_err(|()| {
            Error::explain(
                ErrorType::InternalError,
                "a purge matched this fill while it was in flight: not stored",
            )
        })?;
        Ok(MissFinishType::Created(weight))
    }
}

/// Plaintext of a cached part (a body chunk, its compressed form, a metadata record), zeroed when
/// dropped: a freed buffer keeps no copy of what the cache holds sealed.
#[derive(Default)]
struct Plaintext(Vec<u8>);

impl Plaintext {
    fn with_capacity(capacity: usize) -> Self {
        Self(Vec::with_capacity(capacity))
    }

    /// Appends `data`. A full buffer is replaced by a larger one and zeroed, because a `Vec` growing
    /// by itself would free its old buffer as it is.
    fn extend(&mut self, data: &[u8]) {
        let needed = self.0.len() + data.len();
        if needed > self.0.capacity() {
            let mut larger = Vec::with_capacity(needed.max(CHUNK_BYTES));
            larger.extend_from_slice(&self.0);
            drop(std::mem::replace(self, Self(larger)));
        }
        self.0.extend_from_slice(data);
    }
}

impl AsRef<[u8]> for Plaintext {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Plaintext {
    fn drop(&mut self) {
        let capacity = self.0.capacity();
        self.0.fill(0);
        self.0.resize(capacity, 0);
        // Keeps the writes: the buffer is freed right after, so they would otherwise be dead stores.
        std::hint::black_box(&mut self.0);
    }
}

/// The last instant an entry can serve anything: freshness plus the longer stale window.
fn usable_until_ms(meta: &CacheMeta) -> u64 {
    let until = meta
        .fresh_until()
        .checked_add(stale_window(meta))
        .map_or(u64::MAX, unix_ms);
    // Freshness is tracked in whole seconds; keep the entry a second longer so a response that is
    // exactly at its limit is still seen as the stale entry it is, not as a miss.
    until.saturating_add(1000)
}

/// Cache-key hashes are already uniform: the first eight bytes are the map's hash.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
}

type PrehashedState = BuildHasherDefault<Prehashed>;

/// Entries by the hash of their cache key.
type Shard = HashMap<HashBinary, Arc<Entry>, PrehashedState>;
