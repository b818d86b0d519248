//! The origin's L1: rendered current versions (and known absences) in process memory.
//!
//! Writes through this origin replace entries at once. A fill from storage is stored only if no write to
//! its shard happened while it was reading, so a slow read can never put an older version back. Entries
//! older than `ttl` are refetched (the bound on staleness when another origin instance wrote), but may be
//! served up to `max_stale` when storage is unavailable.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use shared::domain::ForecastKey;
use tokio::time::Instant;

use crate::representation::Rendered;

const SHARDS: usize = 64;

/// What the cache knows of a key: its current version, or that it has none.
pub type Entry = Option<Arc<Rendered>>;

pub enum Lookup {
    Fresh(Entry),
    /// Older than the TTL but within `max_stale`: usable when storage is not.
    Stale(Entry),
    Miss,
}

/// Proof that a fill started at a given point; see [`L1Cache::fill`].
#[derive(Debug, Clone, Copy)]
pub struct FillTicket {
    shard: usize,
    generation: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct L1Settings {
    pub capacity: usize,
    pub ttl: Duration,
    pub max_stale: Duration,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<ForecastKey, (Entry, Instant)>,
    generation: u64,
}

pub struct L1Cache {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    per_shard: usize,
    settings: L1Settings,
}

impl std::fmt::Debug for L1Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L1Cache")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl L1Cache {
    pub fn new(settings: L1Settings) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            per_shard: settings.capacity.div_ceil(SHARDS).max(1),
            settings,
        }
    }

    fn shard_of(&self, key: &ForecastKey) -> usize {
        (self.hasher.hash_one(key) as usize) % SHARDS
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        // A panic while holding a shard lock leaves a map that is still consistent: take it back.
        self.shards[shard]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn get(&self, key: &ForecastKey) -> Lookup {
        let shard = self.lock(self.shard_of(key));
        let Some((entry, stored)) = shard.entries.get(key) else {
            return Lookup::Miss;
        };
        let age = stored.elapsed();
        if age < self.settings.ttl {
            Lookup::Fresh(entry.clone())
        } else if age < self.settings.ttl + self.settings.max_stale {
            Lookup::Stale(entry.clone())
        } else {
            Lookup::Miss
        }
    }

    /// Taken before reading storage for a fill.
    pub fn ticket(&self, key: &ForecastKey) -> FillTicket {
        let shard = self.shard_of(key);
        FillTicket {
            shard,
            generation: self.lock(shard).generation,
        }
    }

    /// Stores what a read found, unless a write to the shard came in since `ticket` was taken.
    pub fn fill(&self, ticket: FillTicket, key: &ForecastKey, entry: Entry) {
        let mut shard = self.lock(ticket.shard);
        if shard.generation == ticket.generation {
            self.insert(&mut shard, key, entry);
        }
    }

    /// Stores the result of a write made through this origin; fills that started earlier are refused.
    pub fn write(&self, key: &ForecastKey, entry: Entry) {
        let mut shard = self.lock(self.shard_of(key));
        shard.generation += 1;
        self.insert(&mut shard, key, entry);
    }

    /// Drops `key`, for a change made through another origin; fills that started earlier are refused.
    pub fn forget(&self, key: &ForecastKey) {
        let mut shard = self.lock(self.shard_of(key));
        shard.generation += 1;
        shard.entries.remove(key);
    }

    /// Drops everything, for a change whose keys are not known here (a prefix, a model, everything).
    pub fn clear(&self) {
        for index in 0..self.shards.len() {
            let mut shard = self.lock(index);
            shard.generation += 1;
            shard.entries.clear();
        }
    }

    fn insert(&self, shard: &mut Shard, key: &ForecastKey, entry: Entry) {
        if shard.entries.len() >= self.per_shard && !shard.entries.contains_key(key) {
            // Evict some entry; the map's iteration order is as good as random here.
            if let Some(victim) = shard.entries.keys().next().cloned() {
                shard.entries.remove(&victim);
            }
        }
        shard.entries.insert(key.clone(), (entry, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> L1Cache {
        L1Cache::new(L1Settings {
            capacity: 128,
            ttl: Duration::from_secs(1),
            max_stale: Duration::from_secs(10),
        })
    }

    fn key(name: &str) -> ForecastKey {
        format!("{name}:1h").parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn entries_age_from_fresh_to_stale_to_gone() {
        let cache = cache();
        let k = key("AAPL");
        cache.write(&k, None);
        assert!(matches!(cache.get(&k), Lookup::Fresh(None)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(matches!(cache.get(&k), Lookup::Stale(None)));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(matches!(cache.get(&k), Lookup::Miss));
    }

    #[test]
    fn a_fill_that_raced_with_a_write_is_refused() {
        let cache = cache();
        let k = key("AAPL");
        let ticket = cache.ticket(&k);
        cache.write(&k, None);
        let stale = Rendered::new(&crate::storage::VersionRecord {
            version: 1,
            instrument: "AAPL".parse().unwrap(),
            timeframe: shared::domain::Timeframe::H1,
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            created_by: "t".into(),
            rollback_of: None,
            forecast: serde_json::from_value(serde_json::json!({
                "horizon": "1h", "generated_at": "2026-11-23T14:00:00Z", "valid_until": "2026-11-23T15:00:00Z",
                "model": {"id": "m", "version": "1"}, "point": 1.0
            }))
            .unwrap(),
        });
        cache.fill(ticket, &k, Some(Arc::new(stale)));
        assert!(
            matches!(cache.get(&k), Lookup::Fresh(None)),
            "the older fill replaced the write"
        );
        let ticket = cache.ticket(&k);
        cache.fill(ticket, &k, None);
        assert!(matches!(cache.get(&k), Lookup::Fresh(None)));
    }

    #[test]
    fn capacity_is_bounded() {
        let cache = cache();
        for i in 0..1000 {
            cache.write(&key(&format!("I{i}")), None);
        }
        let stored: usize = (0..SHARDS).map(|s| cache.lock(s).entries.len()).sum();
        assert!(stored <= 128 + SHARDS, "{stored} entries kept");
    }
}
