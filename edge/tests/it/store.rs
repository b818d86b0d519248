//! The encrypted store driven in-process through pingora's `Storage` trait, as a request would, and
//! purged through its own API, as the control plane will: purges by key, prefix, tag and everything,
//! hard and soft, the race between a fill and a purge, and the eviction manager's accounting.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use edge::cache::{Cache, PurgeMode, Selector, StoreSettings, key};
use edge::crypto::Keyring;
use pingora::cache::eviction::EvictionManager;
use pingora::cache::storage::{MissFinishType, MissHandler};
use pingora::cache::trace::Span;
use pingora::cache::{CacheEntryKey, CacheKey, CacheMeta, Storage};
use pingora::http::ResponseHeader;

const HOST: &str = "edge.test";

fn cache() -> &'static Cache {
    let settings = StoreSettings {
        compress_min_bytes: Some(4096),
        tag_headers: vec!["surrogate-key".into(), "cache-tag".into()],
    };
    Cache::leak(1 << 20, Duration::from_secs(1), Keyring::random().unwrap(), settings)
}

/// The cache key of `path`, stamped with the purge epoch of now: a fill starting now.
fn key_for(cache: &Cache, path: &str) -> CacheKey {
    key::cache_key(path, HOST, cache.store.fill_epoch())
}

/// A 200 response for `body`, fresh for `fresh_for` (past if negative), with these surrogate tags.
fn meta(body: &[u8], tags: &str, fresh_for: i64) -> CacheMeta {
    let mut header = ResponseHeader::build(200, None).unwrap();
    header.append_header("content-length", body.len().to_string()).unwrap();
    if !tags.is_empty() {
        header.append_header("surrogate-key", tags).unwrap();
    }
    let now = SystemTime::now();
    let offset = Duration::from_secs(fresh_for.unsigned_abs());
    let fresh_until = if fresh_for >= 0 { now + offset } else { now - offset };
    CacheMeta::new(fresh_until, now, 0, 0, header)
}

/// A fill in flight: its miss handler has the whole body but is not finished.
struct Fill {
    key: CacheKey,
    meta: CacheMeta,
    handler: MissHandler,
}

async fn start_fill(cache: &'static Cache, key: CacheKey, meta: CacheMeta, body: &[u8]) -> Fill {
    let span = Span::inactive().handle();
    let mut handler = cache.store.get_miss_handler(&key, &meta, &span).await.unwrap();
    handler.write_body(Bytes::copy_from_slice(body), true).await.unwrap();
    Fill { key, meta, handler }
}

impl Fill {
    /// Finishes the fill and, as pingora does, admits the entry to the eviction manager; returns its
    /// weight.
    async fn finish(self, cache: &'static Cache) -> pingora::Result<usize> {
        let MissFinishType::Created(weight) = self.handler.finish().await? else {
            panic!("a fill of the whole body creates an entry");
        };
        let entry = CacheEntryKey::from_entry_id(self.key.to_compact(), None);
        let evicted = cache.eviction.admit(entry, weight, self.meta.fresh_until());
        assert!(evicted.is_empty(), "the budget of these tests holds everything");
        Ok(weight)
    }
}

/// Stores `body` for `path` with `tags`, fresh for a minute; returns its eviction weight.
async fn fill(cache: &'static Cache, path: &str, tags: &str, body: &[u8]) -> usize {
    let fill = start_fill(cache, key_for(cache, path), meta(body, tags, 60), body).await;
    fill.finish(cache).await.unwrap()
}

/// What a lookup of `key` finds: the metadata and the whole body.
async fn lookup(cache: &'static Cache, key: &CacheKey) -> Option<(CacheMeta, Bytes)> {
    let span = Span::inactive().handle();
    let (meta, mut hit) = cache.store.lookup(key, &span).await.unwrap()?;
    let mut body = Vec::new();
    while let Some(chunk) = hit.read_body().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    Some((meta, body.into()))
}

async fn body_of(cache: &'static Cache, path: &str) -> Option<Bytes> {
    lookup(cache, &key_for(cache, path)).await.map(|(_, body)| body)
}

#[tokio::test]
async fn a_filled_entry_is_found_with_its_body() {
    let cache = cache();
    let large: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    fill(cache, "/a", "", b"small body").await;
    fill(cache, "/large", "", &large).await;
    assert_eq!(body_of(cache, "/a").await.as_deref(), Some(&b"small body"[..]));
    assert_eq!(body_of(cache, "/large").await.as_deref(), Some(&large[..]));
    assert_eq!(body_of(cache, "/b").await, None);
    let other_host = key::cache_key("/a", "other.test", cache.store.fill_epoch());
    assert!(lookup(cache, &other_host).await.is_none(), "hosts share entries");
}

#[tokio::test]
async fn a_key_purge_removes_that_logical_key_on_every_host_and_variant() {
    let cache = cache();
    fill(cache, "/k/1", "", b"one").await;
    fill(cache, "/k/2", "", b"two").await;
    let other_host = key::cache_key("/k/1", "other.test", cache.store.fill_epoch());
    start_fill(cache, other_host.clone(), meta(b"one", "", 60), b"one")
        .await
        .finish(cache)
        .await
        .unwrap();
    let mut variant = key_for(cache, "/k/1");
    variant.set_variance_key([7; 16]);
    start_fill(cache, variant.clone(), meta(b"gz", "", 60), b"gz")
        .await
        .finish(cache)
        .await
        .unwrap();
    assert!(lookup(cache, &variant).await.is_some());

    assert_eq!(
        cache.store.purge(&Selector::Key("/k/1".into()), PurgeMode::Hard, "key"),
        3
    );
    assert_eq!(body_of(cache, "/k/1").await, None);
    assert!(lookup(cache, &other_host).await.is_none());
    assert!(lookup(cache, &variant).await.is_none());
    assert_eq!(body_of(cache, "/k/2").await.as_deref(), Some(&b"two"[..]));
    assert_eq!(
        cache.store.purge(&Selector::Key("/k/1".into()), PurgeMode::Hard, "key"),
        0
    );
}

#[tokio::test]
async fn a_prefix_purge_removes_the_keys_under_it() {
    let cache = cache();
    for path in [
        "/v1/forecasts/AAPL/1h",
        "/v1/forecasts/AAPL/1d",
        "/v1/forecasts/AAPLX/1h",
        "/v1/other",
    ] {
        fill(cache, path, "", path.as_bytes()).await;
    }
    let selector = Selector::Prefix("/v1/forecasts/AAPL/".into());
    assert_eq!(cache.store.purge(&selector, PurgeMode::Hard, "prefix"), 2);
    assert_eq!(body_of(cache, "/v1/forecasts/AAPL/1h").await, None);
    assert_eq!(body_of(cache, "/v1/forecasts/AAPL/1d").await, None);
    assert!(body_of(cache, "/v1/forecasts/AAPLX/1h").await.is_some());
    assert!(body_of(cache, "/v1/other").await.is_some());
}

#[tokio::test]
async fn a_tag_purge_removes_every_entry_that_carried_the_tag() {
    let cache = cache();
    fill(cache, "/t/aapl-1h", "AAPL AAPL:1h model:lstm", b"a").await;
    fill(cache, "/t/aapl-list", "AAPL, model:arima", b"b").await;
    fill(cache, "/t/msft", "MSFT MSFT:1h model:lstm", b"c").await;

    assert_eq!(
        cache.store.purge(&Selector::Tag("AAPL".into()), PurgeMode::Hard, "tag"),
        2
    );
    assert_eq!(body_of(cache, "/t/aapl-1h").await, None);
    assert_eq!(body_of(cache, "/t/aapl-list").await, None);
    assert!(body_of(cache, "/t/msft").await.is_some());
    assert_eq!(
        cache
            .store
            .purge(&Selector::Tag("model:lstm".into()), PurgeMode::Hard, "tag"),
        1
    );
    assert_eq!(body_of(cache, "/t/msft").await, None);
    assert_eq!(
        cache
            .store
            .purge(&Selector::Tag("AAPL:1".into()), PurgeMode::Hard, "tag"),
        0
    );
}

#[tokio::test]
async fn a_purge_of_everything_empties_the_store() {
    let cache = cache();
    for i in 0..10 {
        fill(cache, &format!("/all/{i}"), "T", b"x").await;
    }
    assert_eq!(cache.store.stats().entries, 10);
    assert_eq!(cache.store.purge(&Selector::All, PurgeMode::Hard, "all"), 10);
    assert_eq!(cache.store.stats().entries, 0);
    assert_eq!(cache.eviction.total_size(), 0);
    assert_eq!(body_of(cache, "/all/3").await, None);
}

#[tokio::test]
async fn a_soft_purge_keeps_the_body_but_makes_it_stale() {
    let cache = cache();
    fill(cache, "/soft", "S", b"soft body").await;
    let (meta, _) = lookup(cache, &key_for(cache, "/soft")).await.unwrap();
    assert!(meta.is_fresh(SystemTime::now()));

    assert_eq!(cache.store.purge(&Selector::Tag("S".into()), PurgeMode::Soft, "tag"), 1);
    let (meta, body) = lookup(cache, &key_for(cache, "/soft")).await.unwrap();
    assert!(!meta.is_fresh(SystemTime::now()), "a soft purge left the entry fresh");
    assert_eq!(body, &b"soft body"[..]);
}

#[tokio::test]
async fn a_fill_that_a_purge_matched_while_in_flight_is_refused() {
    let cache = cache();
    let selectors = [
        Selector::Key("/race".into()),
        Selector::Prefix("/ra".into()),
        Selector::Tag("R".into()),
        Selector::All,
    ];
    for selector in selectors {
        let fill = start_fill(cache, key_for(cache, "/race"), meta(b"racing", "R", 60), b"racing").await;
        cache.store.purge(&selector, PurgeMode::Hard, "key");
        assert!(
            fill.finish(cache).await.is_err(),
            "{selector:?} did not refuse the fill"
        );
        assert_eq!(body_of(cache, "/race").await, None, "{selector:?}");
    }
    assert_eq!(cache.eviction.total_size(), 0);

    // A purge issued before the fill began does not concern it.
    let fill = start_fill(cache, key_for(cache, "/race"), meta(b"racing", "R", 60), b"racing").await;
    fill.finish(cache).await.unwrap();
    assert_eq!(body_of(cache, "/race").await.as_deref(), Some(&b"racing"[..]));
}

#[tokio::test]
async fn a_fill_is_stored_when_only_other_entries_were_purged_meanwhile() {
    let cache = cache();
    let fill = start_fill(cache, key_for(cache, "/kept"), meta(b"kept", "K", 60), b"kept").await;
    for selector in [
        Selector::Key("/kept/not".into()),
        Selector::Prefix("/other".into()),
        Selector::Tag("OTHER".into()),
    ] {
        cache.store.purge(&selector, PurgeMode::Hard, "key");
    }
    fill.finish(cache).await.unwrap();
    assert_eq!(body_of(cache, "/kept").await.as_deref(), Some(&b"kept"[..]));
}

#[tokio::test]
async fn a_fill_shorter_than_its_content_length_is_refused() {
    let cache = cache();
    let fill = start_fill(
        cache,
        key_for(cache, "/short"),
        meta(b"the whole body", "", 60),
        b"the who",
    )
    .await;
    assert!(fill.finish(cache).await.is_err());
    assert_eq!(body_of(cache, "/short").await, None);
}

#[tokio::test]
async fn hard_purges_give_their_weight_back_to_the_eviction_manager() {
    let cache = cache();
    let a = fill(cache, "/w/a", "", &[1; 3000]).await;
    let b = fill(cache, "/w/b", "", &[2; 5000]).await;
    assert_eq!(cache.eviction.total_size(), a + b);
    assert_eq!(cache.eviction.total_items(), 2);

    cache.store.purge(&Selector::Key("/w/a".into()), PurgeMode::Hard, "key");
    assert_eq!(cache.eviction.total_size(), b);
    assert_eq!(cache.eviction.total_items(), 1);
    cache.store.purge(&Selector::Key("/w/b".into()), PurgeMode::Soft, "key");
    assert_eq!(
        cache.eviction.total_size(),
        b,
        "a soft purge keeps the entry and its weight"
    );
    cache.store.purge(&Selector::All, PurgeMode::Hard, "all");
    assert_eq!(cache.eviction.total_size(), 0);
}

#[tokio::test]
async fn the_sweeper_removes_entries_past_their_last_usable_instant() {
    let cache = cache();
    fill(cache, "/live", "", b"live").await;
    let expired = start_fill(cache, key_for(cache, "/expired"), meta(b"old", "", -10), b"old").await;
    expired.finish(cache).await.unwrap();
    assert_eq!(cache.store.stats().entries, 2);
    assert_eq!(body_of(cache, "/expired").await, None, "an unusable entry was served");

    assert_eq!(cache.store.sweep(SystemTime::now()), 1);
    assert_eq!(cache.store.stats().entries, 1);
    assert!(body_of(cache, "/live").await.is_some());
    let far_future = SystemTime::now() + Duration::from_secs(3600);
    assert_eq!(cache.store.sweep(far_future), 1);
    assert_eq!(cache.eviction.total_size(), 0);
}

#[tokio::test]
async fn entries_stay_readable_under_previous_keys_and_are_dropped_without_them() {
    let cache = cache();
    let old = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    let new = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";
    cache.store.set_keyring(Keyring::parse(old).unwrap());
    fill(cache, "/sealed/old", "", b"old").await;

    cache
        .store
        .set_keyring(Keyring::parse(&format!("{new}\n{old}\n")).unwrap());
    fill(cache, "/sealed/new", "", b"new").await;
    assert_eq!(cache.store.stats().sealed_under_current_key, 1);
    assert_eq!(body_of(cache, "/sealed/old").await.as_deref(), Some(&b"old"[..]));

    cache.store.set_keyring(Keyring::parse(new).unwrap());
    assert_eq!(body_of(cache, "/sealed/old").await, None);
    assert_eq!(body_of(cache, "/sealed/new").await.as_deref(), Some(&b"new"[..]));
    assert_eq!(cache.store.stats().entries, 1, "the unreadable entry was kept");
    assert_eq!(cache.eviction.total_items(), 1);
}
