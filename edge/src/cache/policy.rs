//! Cache policy as plain functions: what may be stored and for how long (RFC 9111, RFC 9213), how
//! Vary variants are keyed, and what `Cache-Status` (RFC 9211) says. No server needed to test them.

use std::time::{Duration, SystemTime};

use pingora::cache::cache_control::{CacheControl, InterpretCacheControl};
use pingora::cache::filters::resp_cacheable;
use pingora::cache::key::HashBinary;
use pingora::cache::{CacheMeta, CacheMetaDefaults, CachePhase, NoCacheReason, RespCacheable, VarianceBuilder};
use pingora::http::{RequestHeader, ResponseHeader};

/// No freshness is invented: a response without explicit freshness (or a validator-based heuristic,
/// which this cache does not apply) is not stored. Stale windows come only from the response.
pub static DEFAULTS: CacheMetaDefaults = CacheMetaDefaults::new(|_| None, 0, 0);

/// Whether a response may be stored, and with what freshness.
///
/// `CDN-Cache-Control` (RFC 9213), when present, replaces `Cache-Control` for this cache: the origin
/// can give shared caches their own lifetime and stale windows while browsers get a short one.
/// `Vary: *`, and Vary on a header outside `vary_allowed`, make a response uncacheable: a cache that
/// cannot key the variant must not serve it to another client.
///
/// Two statements about *who may see* a response are read from either header, because both are
/// addressed to this cache (`Cache-Control` to every cache, `CDN-Cache-Control` to this one):
/// * a response to a request with `Authorization` is stored only when one of them marks it
///   shareable ([`shareable_with_authorization`], RFC 9111 §3.5);
/// * a response with `Set-Cookie` is stored only when one of them lets shared caches drop that field
///   ([`cookie_may_be_dropped`]); the stored response never holds `Set-Cookie`, so no client is
///   handed another's cookie. The client whose request fetched it still gets its cookie.
pub fn response_cacheability(
    response: &ResponseHeader,
    authorization_present: bool,
    vary_allowed: &[String],
) -> RespCacheable {
    if !vary_names(response).all(|name| vary_allowed.contains(&name)) {
        return RespCacheable::Uncacheable(NoCacheReason::Custom("vary"));
    }
    if response.status.as_u16() == 206 {
        // A partial response is never stored as if it were the whole representation.
        return RespCacheable::Uncacheable(NoCacheReason::Custom("partial content"));
    }
    if is_stream_response(response) {
        return RespCacheable::Uncacheable(NoCacheReason::Custom("event stream"));
    }
    let targeted = CacheControl::from_resp_headers_named("cdn-cache-control", response);
    let general = CacheControl::from_resp_headers(response);
    let headers = [targeted.as_ref(), general.as_ref()];
    if authorization_present && !shareable_with_authorization(headers) {
        return RespCacheable::Uncacheable(NoCacheReason::Custom("authorization"));
    }
    let mut stored = response.clone();
    if response.headers.contains_key(http::header::SET_COOKIE) {
        if !cookie_may_be_dropped(headers) {
            return RespCacheable::Uncacheable(NoCacheReason::Custom("set-cookie"));
        }
        stored.remove_header(&http::header::SET_COOKIE);
    }
    let control = targeted.as_ref().or(general.as_ref());
    // Authorization was judged above, over both headers.
    match resp_cacheable(control, stored, false, &DEFAULTS) {
        RespCacheable::Cacheable(meta) => {
            let relative = control.and_then(|c| c.fresh_duration()).is_some();
            RespCacheable::Cacheable(count_age(meta, response, relative))
        }
        uncacheable => uncacheable,
    }
}

/// Whether a request is for an event stream: it is passed through uncached, and the upstream may
/// stay quiet between events for longer. The timeout is chosen before the response is seen, so the
/// request must tell: by asking for one (`Accept: text/event-stream`, as `EventSource` sends), or by
/// its path lying under one of `stream_paths` (`upstream.stream_paths`), for clients such as curl
/// that ask for `*/*` or nothing.
pub fn is_stream_request(request: &RequestHeader, stream_paths: &[String]) -> bool {
    accepts_event_stream(request)
        || stream_paths
            .iter()
            .any(|prefix| path_is_under(request.uri.path(), prefix))
}

/// Whether `Accept` names `text/event-stream`.
fn accepts_event_stream(request: &RequestHeader) -> bool {
    request
        .headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| media_type_is(item, "text/event-stream"))
}

/// Whether `path` (without the query) is `prefix` or lies under it. The prefix matches whole
/// segments: `/v1/stream` covers `/v1/stream` and `/v1/stream/…`, not `/v1/streams`; a prefix
/// that ends with `/` covers what follows it.
pub fn path_is_under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'))
}

/// Whether a response is an event stream (`Content-Type: text/event-stream`): never stored, whatever
/// its `Cache-Control` says, since a stored stream would replay old events as new ones.
pub fn is_stream_response(response: &ResponseHeader) -> bool {
    response
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| media_type_is(value, "text/event-stream"))
}

/// Whether `item` (a media type with optional parameters) names `media_type`.
fn media_type_is(item: &str, media_type: &str) -> bool {
    item.split(';')
        .next()
        .is_some_and(|name| name.trim().eq_ignore_ascii_case(media_type))
}

/// RFC 9111 §3.5: a response to a request with `Authorization` may be stored by a shared cache only
/// when it says `public`, `s-maxage` or `must-revalidate`. Any of `[CDN-Cache-Control,
/// Cache-Control]` may say so, unless that same header also says `private` or `no-store`; whether
/// the response is storable at all (and for how long) is still up to the header that governs.
pub fn shareable_with_authorization(headers: [Option<&CacheControl>; 2]) -> bool {
    headers
        .into_iter()
        .flatten()
        .any(|control| !control.private() && !control.no_store() && control.allow_caching_authorized_req())
}

/// Whether the origin lets shared caches store a response without its `Set-Cookie`: `private` or
/// `no-cache` qualified with the field name (`private="set-cookie"`, RFC 9111 §5.2.2.7 and
/// §5.2.2.4) in either of `[CDN-Cache-Control, Cache-Control]`. Without such a statement a response
/// that sets a cookie is taken to be for its client alone.
pub fn cookie_may_be_dropped(headers: [Option<&CacheControl>; 2]) -> bool {
    headers.into_iter().flatten().any(|control| {
        let mut names = control
            .private_field_names()
            .into_iter()
            .flatten()
            .chain(control.no_cache_field_names().into_iter().flatten());
        names.any(|name| name.eq_ignore_ascii_case(b"set-cookie"))
    })
}

/// RFC 9111 §4.2.3: a response that arrives with `Age` (from a cache nearer the origin) has already
/// used that much of its freshness, and hits report it in their own `Age`. Pingora counts both from
/// arrival. Freshness given relative to arrival (`max-age`, `s-maxage`) is shortened by the age;
/// an absolute `Expires` already is what it is.
fn count_age(mut meta: CacheMeta, response: &ResponseHeader, relative_freshness: bool) -> CacheMeta {
    let age = response
        .headers
        .get(http::header::AGE)
        .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok())
        .filter(|&age| age > 0)
        .map(Duration::from_secs);
    let Some(age) = age else {
        return meta;
    };
    let Some(epoch) = meta.updated().checked_sub(age) else {
        return meta;
    };
    meta.set_epoch_override(epoch);
    if relative_freshness && let Some(fresh_until) = meta.fresh_until().checked_sub(age) {
        meta.expire_at(fresh_until);
    }
    meta
}

/// The header names a response varies on, lower case (`*` stays `*`).
fn vary_names(response: &ResponseHeader) -> impl Iterator<Item = String> + '_ {
    response
        .headers
        .get_all(http::header::VARY)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("*").split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
}

/// The variance of a request against a stored response's Vary: the normalised values of the named
/// request headers, hashed. `None` when the response does not vary.
pub fn variance(meta: &CacheMeta, request: &RequestHeader) -> Option<HashBinary> {
    let mut builder = VarianceBuilder::new();
    for name in vary_names(meta.response_header()) {
        let values: Vec<&str> = request
            .headers
            .get_all(name.as_str())
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect();
        let normalised = normalise(&name, &values.join(","));
        builder.add_owned_name_value(name, normalised.into_bytes());
    }
    builder.finalize()
}

/// Request header values that mean the same thing map to one variant: `Accept-Encoding` to the
/// sorted set of codings it accepts, other headers to their lower-cased tokens without whitespace.
pub fn normalise(name: &str, value: &str) -> String {
    if name == "accept-encoding" {
        let mut codings: Vec<String> = value
            .split(',')
            .filter_map(|item| {
                let mut parts = item.split(';');
                let coding = parts.next()?.trim().to_ascii_lowercase();
                let refused = parts.any(|param| {
                    let param = param.trim().to_ascii_lowercase();
                    param
                        .strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                (!coding.is_empty() && !refused).then_some(coding)
            })
            .collect();
        codings.sort();
        codings.dedup();
        return codings.join(",");
    }
    value
        .split(',')
        .map(|item| item.split_whitespace().collect::<String>().to_ascii_lowercase())
        .filter(|item| !item.is_empty())
        .collect::<Vec<_>>()
        .join(",")
}

/// How a request was answered, as the cache saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Fresh from cache.
    Hit,
    /// From cache, stale, while a background refresh runs (stale-while-revalidate).
    StaleWhileRevalidate,
    /// From cache, stale, because the upstream failed (stale-if-error).
    StaleIfError,
    /// Stale in cache, revalidated upstream with 304, served from cache.
    Revalidated,
    /// Stale in cache, the upstream sent a new response.
    Expired,
    /// Not in cache, fetched upstream.
    Miss,
    /// The cache was not used for this request (method, or caching off).
    Bypass,
}

impl Outcome {
    /// The outcome of a request from the cache's phase when its response header goes out.
    pub fn from_phase(phase: CachePhase, upstream_failed: bool) -> Self {
        match phase {
            CachePhase::Hit => Self::Hit,
            CachePhase::Stale | CachePhase::StaleUpdating if upstream_failed => Self::StaleIfError,
            CachePhase::Stale | CachePhase::StaleUpdating => Self::StaleWhileRevalidate,
            CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => Self::Revalidated,
            CachePhase::Expired => Self::Expired,
            CachePhase::Miss => Self::Miss,
            CachePhase::Disabled(reason) if is_fetch_outcome(reason) => Self::Miss,
            _ => Self::Bypass,
        }
    }

    /// The label of `edge_cache_requests_total`.
    pub fn label(self, stored: bool) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::StaleWhileRevalidate | Self::StaleIfError => "stale",
            Self::Revalidated => "revalidated",
            Self::Expired => "expired",
            Self::Miss if stored => "miss",
            Self::Miss => "uncacheable",
            Self::Bypass => "bypass",
        }
    }
}

/// Whether a disabled cache still means the request looked in the cache and went upstream.
fn is_fetch_outcome(reason: NoCacheReason) -> bool {
    !matches!(reason, NoCacheReason::NeverEnabled)
}

/// The `Cache-Status` value (RFC 9211) for a response.
///
/// `fresh_until` is the stored response's, when there is one; `forward_status` the upstream's
/// status when the request went forward; `stored` whether this response was stored.
pub fn cache_status(
    cache_name: &str,
    outcome: Outcome,
    fresh_until: Option<SystemTime>,
    forward_status: Option<u16>,
    stored: bool,
    collapsed: bool,
    now: SystemTime,
) -> String {
    let mut value = String::from(cache_name);
    match outcome {
        Outcome::Hit | Outcome::StaleWhileRevalidate => value.push_str("; hit"),
        Outcome::StaleIfError | Outcome::Revalidated | Outcome::Expired => value.push_str("; fwd=stale"),
        Outcome::Miss => value.push_str("; fwd=miss"),
        Outcome::Bypass => value.push_str("; fwd=bypass"),
    }
    if let Some(status) = forward_status.filter(|_| !matches!(outcome, Outcome::Hit | Outcome::StaleWhileRevalidate)) {
        value.push_str(&format!("; fwd-status={status}"));
    }
    if stored {
        value.push_str("; stored");
    }
    if collapsed {
        value.push_str("; collapsed");
    }
    if let Some(fresh_until) = fresh_until.filter(|_| outcome != Outcome::Bypass) {
        value.push_str(&format!("; ttl={}", ttl_seconds(fresh_until, now)));
    }
    match outcome {
        Outcome::StaleWhileRevalidate => value.push_str("; detail=stale-while-revalidate"),
        Outcome::StaleIfError => value.push_str("; detail=stale-if-error"),
        _ => {}
    }
    value
}

/// Seconds of freshness left, negative once stale (RFC 9211 `ttl`).
fn ttl_seconds(fresh_until: SystemTime, now: SystemTime) -> i64 {
    match fresh_until.duration_since(now) {
        Ok(left) => i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
        Err(past) => -i64::try_from(past.duration().as_secs().max(1)).unwrap_or(i64::MAX),
    }
}

/// How long a response may still be served stale after its freshness ends.
pub fn stale_window(meta: &CacheMeta) -> Duration {
    Duration::from_secs(u64::from(
        meta.stale_while_revalidate_sec().max(meta.stale_if_error_sec()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(headers: &[(&str, &str)]) -> ResponseHeader {
        let mut response = ResponseHeader::build(200, None).unwrap();
        for (name, value) in headers {
            response.append_header(name.to_string(), *value).unwrap();
        }
        response
    }

    fn allowed() -> Vec<String> {
        vec!["accept-encoding".into(), "accept".into()]
    }

    fn fresh_secs(cacheable: RespCacheable) -> Option<u64> {
        match cacheable {
            RespCacheable::Cacheable(meta) => Some(meta.fresh_sec()),
            RespCacheable::Uncacheable(_) => None,
        }
    }

    #[test]
    fn cdn_cache_control_wins_over_cache_control() {
        let r = response(&[("cache-control", "max-age=1"), ("cdn-cache-control", "max-age=60")]);
        assert_eq!(fresh_secs(response_cacheability(&r, false, &allowed())), Some(60));
        let r = response(&[("cache-control", "private"), ("cdn-cache-control", "max-age=60")]);
        assert_eq!(fresh_secs(response_cacheability(&r, false, &allowed())), Some(60));
        let r = response(&[("cache-control", "max-age=60"), ("cdn-cache-control", "no-store")]);
        assert_eq!(fresh_secs(response_cacheability(&r, false, &allowed())), None);
    }

    #[test]
    fn freshness_follows_s_maxage_then_max_age_then_expires() {
        let r = response(&[("cache-control", "max-age=10, s-maxage=30")]);
        assert_eq!(fresh_secs(response_cacheability(&r, false, &allowed())), Some(30));
        let r = response(&[("cache-control", "max-age=10")]);
        assert_eq!(fresh_secs(response_cacheability(&r, false, &allowed())), Some(10));
        let expires = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        let r = response(&[("expires", &expires)]);
        let fresh = fresh_secs(response_cacheability(&r, false, &allowed())).unwrap();
        assert!((118..=120).contains(&fresh), "{fresh}");
        let r = response(&[("content-type", "text/plain")]);
        assert_eq!(fresh_secs(response_cacheability(&r, false, &allowed())), None);
    }

    #[test]
    fn private_no_store_and_authorization_are_respected() {
        for cc in ["private", "no-store", "private, max-age=60"] {
            let r = response(&[("cache-control", cc)]);
            assert_eq!(fresh_secs(response_cacheability(&r, false, &allowed())), None, "{cc}");
        }
        let r = response(&[("cache-control", "max-age=60")]);
        assert_eq!(fresh_secs(response_cacheability(&r, true, &allowed())), None);
        for cc in ["public, max-age=60", "s-maxage=60", "must-revalidate, max-age=60"] {
            let r = response(&[("cache-control", cc)]);
            assert_eq!(
                fresh_secs(response_cacheability(&r, true, &allowed())),
                Some(60),
                "{cc}"
            );
        }
    }

    #[test]
    fn authorization_needs_a_shareable_mark_in_either_header() {
        let stored = |headers: &[(&str, &str)]| fresh_secs(response_cacheability(&response(headers), true, &allowed()));
        assert_eq!(stored(&[("cdn-cache-control", "max-age=60")]), None);
        assert_eq!(stored(&[("cdn-cache-control", "public, max-age=60")]), Some(60));
        assert_eq!(
            stored(&[("cache-control", "private"), ("cdn-cache-control", "s-maxage=60")]),
            Some(60)
        );
        // A mark in Cache-Control counts, the lifetime comes from CDN-Cache-Control.
        assert_eq!(
            stored(&[
                ("cache-control", "public, max-age=5"),
                ("cdn-cache-control", "max-age=60")
            ]),
            Some(60)
        );
        assert_eq!(
            stored(&[
                ("cache-control", "must-revalidate, max-age=5"),
                ("cdn-cache-control", "max-age=60")
            ]),
            Some(60)
        );
        // A header that marks and forbids at once does not mark.
        assert_eq!(
            stored(&[
                ("cache-control", "private, s-maxage=5"),
                ("cdn-cache-control", "max-age=60")
            ]),
            None
        );
        // The governing header still decides whether anything is stored.
        assert_eq!(
            stored(&[
                ("cache-control", "public, max-age=60"),
                ("cdn-cache-control", "no-store")
            ]),
            None
        );
        assert_eq!(stored(&[("expires", "Wed, 21 Oct 2099 07:28:00 GMT")]), None);
    }

    #[test]
    fn set_cookie_is_stored_only_when_the_origin_lets_it_be_dropped_and_never_kept() {
        let cacheable = |headers: &[(&str, &str)]| {
            let mut all = vec![("set-cookie", "session=1")];
            all.extend_from_slice(headers);
            response_cacheability(&response(&all), false, &allowed())
        };
        assert_eq!(fresh_secs(cacheable(&[("cache-control", "public, max-age=60")])), None);
        assert_eq!(fresh_secs(cacheable(&[("cdn-cache-control", "max-age=60")])), None);
        for headers in [
            &[("cache-control", "max-age=60, private=\"set-cookie\"")][..],
            &[("cache-control", "max-age=60, no-cache=\"Set-Cookie, x-other\"")],
            &[
                ("cache-control", "no-cache=\"set-cookie\""),
                ("cdn-cache-control", "max-age=60"),
            ],
            &[("cdn-cache-control", "max-age=60, private=set-cookie")],
        ] {
            let RespCacheable::Cacheable(meta) = cacheable(headers) else {
                panic!("{headers:?} is cacheable");
            };
            assert_eq!(meta.fresh_sec(), 60, "{headers:?}");
            assert!(
                !meta.headers().contains_key("set-cookie"),
                "{headers:?} kept its cookie"
            );
        }
        assert_eq!(
            fresh_secs(cacheable(&[("cache-control", "max-age=60, private=\"x-other\"")])),
            None
        );
    }

    #[test]
    fn event_streams_are_told_apart_and_never_stored() {
        let request = |accept: &str| {
            let mut request = RequestHeader::build("GET", b"/v1/stream", None).unwrap();
            request.append_header("accept", accept).unwrap();
            request
        };
        assert!(is_stream_request(&request("text/event-stream"), &[]));
        assert!(is_stream_request(
            &request("application/json, Text/Event-Stream;q=0.9"),
            &[]
        ));
        assert!(!is_stream_request(&request("application/json"), &[]));
        assert!(!is_stream_request(
            &RequestHeader::build("GET", b"/", None).unwrap(),
            &[]
        ));

        let r = response(&[
            ("content-type", "text/event-stream; charset=utf-8"),
            ("cache-control", "public, max-age=60"),
        ]);
        assert!(is_stream_response(&r));
        assert_eq!(fresh_secs(response_cacheability(&r, false, &allowed())), None);
        assert!(!is_stream_response(&response(&[("content-type", "application/json")])));
    }

    #[test]
    fn a_request_on_a_stream_path_is_a_stream_request_whatever_it_accepts() {
        let paths = ["/v1/stream".to_string(), "/v1/events/".to_string()];
        let request = |target: &str, accept: Option<&str>| {
            let mut request = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
            if let Some(accept) = accept {
                request.append_header("accept", accept).unwrap();
            }
            request
        };
        for target in [
            "/v1/stream",
            "/v1/stream?topics=forecasts.**&since=0",
            "/v1/stream/forecasts",
            "/v1/stream/",
            "http://edge.example/v1/stream?topics=x",
            "/v1/events/forecasts",
        ] {
            for accept in [None, Some("*/*"), Some("application/json")] {
                assert!(
                    is_stream_request(&request(target, accept), &paths),
                    "{target} {accept:?}"
                );
            }
        }
        for target in [
            "/v1/streamX",
            "/v1/streams?x=1",
            "/v1/stream.json",
            "/v1",
            "/",
            "/v1/forecasts?path=/v1/stream",
            "/v1/forecasts?/v1/stream",
            "/v2/v1/stream",
            "/V1/STREAM",
            "/v1/events",
        ] {
            assert!(!is_stream_request(&request(target, None), &paths), "{target}");
            assert!(
                is_stream_request(&request(target, Some("text/event-stream")), &paths),
                "{target} asks for a stream"
            );
        }
        assert!(!is_stream_request(&request("/v1/stream", None), &[]));
    }

    #[test]
    fn stream_path_prefixes_match_whole_segments() {
        assert!(path_is_under("/v1/stream", "/v1/stream"));
        assert!(path_is_under("/v1/stream/a/b", "/v1/stream"));
        assert!(!path_is_under("/v1/streamX", "/v1/stream"));
        assert!(!path_is_under("/v1/strea", "/v1/stream"));
        assert!(path_is_under("/v1/stream/a", "/v1/stream/"));
        assert!(!path_is_under("/v1/stream", "/v1/stream/"));
        assert!(path_is_under("/anything", "/"));
    }

    #[test]
    fn the_age_a_response_arrives_with_counts_against_its_freshness() {
        let r = response(&[("cache-control", "max-age=60"), ("age", "50")]);
        let RespCacheable::Cacheable(meta) = response_cacheability(&r, false, &allowed()) else {
            panic!("cacheable");
        };
        let left = meta.fresh_until().duration_since(SystemTime::now()).unwrap().as_secs();
        assert!((9..=10).contains(&left), "{left} s left");
        assert!(meta.age() >= Duration::from_secs(50));

        let expires = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        let r = response(&[("expires", &expires), ("age", "50")]);
        let RespCacheable::Cacheable(meta) = response_cacheability(&r, false, &allowed()) else {
            panic!("cacheable");
        };
        let left = meta.fresh_until().duration_since(SystemTime::now()).unwrap().as_secs();
        assert!(
            (118..=120).contains(&left),
            "an absolute Expires was shortened: {left} s left"
        );

        for age in ["", "-5", "soon"] {
            let r = response(&[("cache-control", "max-age=60"), ("age", age)]);
            assert_eq!(
                fresh_secs(response_cacheability(&r, false, &allowed())),
                Some(60),
                "{age:?}"
            );
        }
    }

    #[test]
    fn no_cache_is_stored_but_always_stale() {
        let r = response(&[("cache-control", "no-cache, max-age=60")]);
        assert_eq!(fresh_secs(response_cacheability(&r, false, &allowed())), Some(0));
    }

    #[test]
    fn vary_star_and_unlisted_headers_are_not_stored() {
        let r = response(&[("cache-control", "max-age=60"), ("vary", "*")]);
        assert_eq!(fresh_secs(response_cacheability(&r, false, &allowed())), None);
        let r = response(&[("cache-control", "max-age=60"), ("vary", "Cookie")]);
        assert_eq!(fresh_secs(response_cacheability(&r, false, &allowed())), None);
        let r = response(&[("cache-control", "max-age=60"), ("vary", "Accept-Encoding, Accept")]);
        assert_eq!(fresh_secs(response_cacheability(&r, false, &allowed())), Some(60));
    }

    #[test]
    fn stale_windows_come_from_cdn_cache_control() {
        let r = response(&[(
            "cdn-cache-control",
            "max-age=5, stale-while-revalidate=30, stale-if-error=600",
        )]);
        let RespCacheable::Cacheable(meta) = response_cacheability(&r, false, &allowed()) else {
            panic!("cacheable");
        };
        assert_eq!(meta.stale_while_revalidate_sec(), 30);
        assert_eq!(meta.stale_if_error_sec(), 600);
        assert_eq!(stale_window(&meta), Duration::from_secs(600));
    }

    #[test]
    fn accept_encoding_variants_are_normalised() {
        assert_eq!(normalise("accept-encoding", "gzip, br"), "br,gzip");
        assert_eq!(normalise("accept-encoding", "br;q=1.0,gzip"), "br,gzip");
        assert_eq!(normalise("accept-encoding", "gzip, br;q=0"), "gzip");
        assert_eq!(
            normalise("accept", "Application/JSON,  text/plain"),
            "application/json,text/plain"
        );
    }

    #[test]
    fn variance_separates_requests_that_differ_in_a_varied_header() {
        let mut stored = ResponseHeader::build(200, None).unwrap();
        stored.append_header("vary", "accept-encoding").unwrap();
        let meta = CacheMeta::new(SystemTime::now(), SystemTime::now(), 0, 0, stored);
        let request = |encoding: &str| {
            let mut request = RequestHeader::build("GET", b"/", None).unwrap();
            request.append_header("accept-encoding", encoding).unwrap();
            request
        };
        assert_eq!(
            variance(&meta, &request("gzip, br")),
            variance(&meta, &request("br,gzip"))
        );
        assert_ne!(variance(&meta, &request("gzip")), variance(&meta, &request("br")));
        let plain = CacheMeta::new(
            SystemTime::now(),
            SystemTime::now(),
            0,
            0,
            ResponseHeader::build(200, None).unwrap(),
        );
        assert_eq!(variance(&plain, &request("gzip")), None);
    }

    #[test]
    fn cache_status_reads_like_rfc_9211() {
        let now = SystemTime::now();
        let later = now + Duration::from_secs(30);
        let earlier = now - Duration::from_secs(5);
        assert_eq!(
            cache_status("edge", Outcome::Hit, Some(later), None, false, false, now),
            "edge; hit; ttl=30"
        );
        assert_eq!(
            cache_status("edge", Outcome::Miss, Some(later), Some(200), true, false, now),
            "edge; fwd=miss; fwd-status=200; stored; ttl=30"
        );
        assert_eq!(
            cache_status(
                "edge",
                Outcome::StaleWhileRevalidate,
                Some(earlier),
                None,
                false,
                false,
                now
            ),
            "edge; hit; ttl=-5; detail=stale-while-revalidate"
        );
        assert_eq!(
            cache_status(
                "edge",
                Outcome::StaleIfError,
                Some(earlier),
                Some(503),
                false,
                false,
                now
            ),
            "edge; fwd=stale; fwd-status=503; ttl=-5; detail=stale-if-error"
        );
        assert_eq!(
            cache_status("edge", Outcome::Bypass, None, Some(201), false, false, now),
            "edge; fwd=bypass; fwd-status=201"
        );
        assert_eq!(
            cache_status("edge", Outcome::Hit, Some(later), None, false, true, now),
            "edge; hit; collapsed; ttl=30"
        );
    }

    #[test]
    fn outcomes_follow_the_cache_phase() {
        assert_eq!(Outcome::from_phase(CachePhase::Hit, false), Outcome::Hit);
        assert_eq!(
            Outcome::from_phase(CachePhase::Stale, false),
            Outcome::StaleWhileRevalidate
        );
        assert_eq!(Outcome::from_phase(CachePhase::Stale, true), Outcome::StaleIfError);
        assert_eq!(
            Outcome::from_phase(CachePhase::Disabled(NoCacheReason::OriginNotCache), false),
            Outcome::Miss
        );
        assert_eq!(
            Outcome::from_phase(CachePhase::Disabled(NoCacheReason::NeverEnabled), false),
            Outcome::Bypass
        );
    }
}
