//! Cache keys. The primary key is `{length of the logical key}:{logical key}{host}`: the length prefix
//! frames the logical key (path and query) unambiguously, so purges address entries by logical key
//! whatever host they were fetched for, and no host can forge another request's key.

use pingora::cache::CacheKey;

/// The purge epoch at which a fill began, carried in the cache key's extensions: the store refuses to
/// keep a fill that a purge issued after this epoch matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillEpoch(pub u64);

/// The cache key of a request for `path_and_query` on `host`, stamped with the purge epoch it starts at.
pub fn cache_key(path_and_query: &str, host: &str, epoch: u64) -> CacheKey {
    let primary = format!("{}:{path_and_query}{}", path_and_query.len(), host.to_ascii_lowercase());
    let mut key = CacheKey::new(primary, "");
    key.extensions.insert(FillEpoch(epoch));
    key
}

/// The logical key (path and query) of a primary key built by [`cache_key`].
pub fn logical_key(primary: &str) -> Option<&str> {
    let (length, rest) = primary.split_once(':')?;
    rest.get(..length.parse::<usize>().ok()?)
}

/// The purge epoch a cache key was stamped with (0 for keys built elsewhere: oldest, most cautious).
pub fn fill_epoch(key: &CacheKey) -> u64 {
    key.extensions.get::<FillEpoch>().map_or(0, |epoch| epoch.0)
}

#[cfg(test)]
mod tests {
    use pingora::cache::key::CacheHashKey;

    use super::*;

    #[test]
    fn hosts_are_told_apart_but_share_the_logical_key() {
        let a = cache_key("/v1/forecasts/AAPL/1h", "edge-a.example", 1);
        let b = cache_key("/v1/forecasts/AAPL/1h", "EDGE-B.example", 1);
        assert_ne!(a.primary_bin(), b.primary_bin());
        assert_eq!(logical_key(a.primary_key_str().unwrap()), Some("/v1/forecasts/AAPL/1h"));
        assert_eq!(logical_key(b.primary_key_str().unwrap()), Some("/v1/forecasts/AAPL/1h"));
        assert_eq!(logical_key("no frame"), None);
    }

    #[test]
    fn the_host_cannot_smuggle_a_path() {
        let a = cache_key("/a", "b", 0);
        let b = cache_key("/ab", "", 0);
        assert_ne!(a.primary_bin(), b.primary_bin());
    }

    #[test]
    fn the_fill_epoch_travels_with_the_key() {
        assert_eq!(fill_epoch(&cache_key("/", "h", 42)), 42);
        assert_eq!(fill_epoch(&CacheKey::new("/", "")), 0);
    }
}
