//! The HTTP cache: keys, policy, the encrypted store and purges. Every use of pingora-cache's traits
//! is in this module, so a change of pingora's volatile cache API stays here.

pub mod key;
pub mod policy;
pub mod purge;
mod sealed;
pub mod store;

use std::time::Duration;

use pingora::cache::eviction::lru;
use pingora::cache::lock::{CacheKeyLockImpl, CacheLock};

pub use purge::{PurgeMode, Selector};
pub use store::{EncryptedStore, StoreSettings, StoreStats};

use crate::crypto::Keyring;
use crate::metrics::Metrics;

/// Shards of the LRU eviction manager: fewer lock collisions between worker threads.
const EVICTION_SHARDS: usize = 16;
/// Entries expected per shard, to size the LRU's tables up front.
const EXPECTED_ENTRIES_PER_SHARD: usize = 8192;

/// The parts pingora's cache needs for each request. Pingora takes them as `&'static`, so they are
/// made once per process and leaked.
pub struct Cache {
    pub store: &'static EncryptedStore,
    pub eviction: &'static lru::Manager<EVICTION_SHARDS>,
    pub lock: &'static CacheKeyLockImpl,
}

impl Cache {
    pub fn leak(
        memory_bytes: usize,
        lock_timeout: Duration,
        keyring: Keyring,
        settings: StoreSettings,
    ) -> &'static Cache {
        let metrics = Metrics::global();
        metrics
            .memory_budget
            .set(i64::try_from(memory_bytes).unwrap_or(i64::MAX));
        let eviction: &'static lru::Manager<EVICTION_SHARDS> = Box::leak(Box::new(lru::Manager::with_capacity(
            memory_bytes,
            EXPECTED_ENTRIES_PER_SHARD,
        )));
        let store = Box::leak(Box::new(EncryptedStore::new(keyring, eviction, settings, metrics)));
        let lock: &'static CacheKeyLockImpl = Box::leak(CacheLock::new_boxed(lock_timeout));
        Box::leak(Box::new(Cache { store, eviction, lock }))
    }
}
