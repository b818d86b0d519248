//! Pingora's request phases wired to the cache. Decisions live in [`crate::cache::policy`]; this file
//! only connects them to the session.

use std::any::Any;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use pingora::cache::key::HashBinary;
use pingora::cache::{CacheKey, CacheMeta, CachePhase, ForcedFreshness, HitHandler, RespCacheable, filters};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::cache::policy::{self, Outcome};
use crate::cache::{Cache, PurgeMode, Selector, key};
use crate::control::ControlState;
use crate::downstream;
use crate::metrics::Metrics;
use crate::upstream::{Expecting, Upstreams};

/// Longest request target (path and query) forwarded upstream; longer ones are answered 414.
const MAX_TARGET_BYTES: usize = 8 * 1024;
/// Largest total of request header names and values forwarded upstream; larger ones are answered 431.
/// Pingora itself reads request heads of up to 1 MiB.
const MAX_HEADER_BYTES: usize = 32 * 1024;

/// What the proxy needs besides the cache.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub cache_name: String,
    pub vary_allowed: Vec<String>,
    pub tag_headers: Vec<String>,
    pub strip_tag_headers: bool,
    pub max_object_bytes: usize,
    /// Path prefixes whose requests are event streams whatever they accept (`upstream.stream_paths`).
    pub stream_paths: Vec<String>,
}

pub struct EdgeProxy {
    cache: &'static Cache,
    upstreams: Arc<Upstreams>,
    settings: ProxySettings,
    metrics: &'static Metrics,
    /// Present when the edge has control-plane origins: hits are revalidated while it is cut off.
    control: Option<Arc<ControlState>>,
}

/// Per-request state.
#[derive(Debug, Default)]
pub struct RequestContext {
    upstream_sent: Option<Instant>,
    upstream_status: Option<u16>,
    upstream_failed: bool,
    /// The hit was forced to revalidate because the control plane is lost.
    control_lost: bool,
}

impl EdgeProxy {
    pub fn new(
        cache: &'static Cache,
        upstreams: Arc<Upstreams>,
        settings: ProxySettings,
        control: Option<Arc<ControlState>>,
    ) -> Self {
        Self {
            cache,
            upstreams,
            settings,
            metrics: Metrics::global(),
            control,
        }
    }

    /// After a successful unsafe request, RFC 9111 §4.4: stored responses for its URL, and for the
    /// paths in its `Location` and `Content-Location`, are invalidated.
    fn invalidate_after_unsafe_request(&self, request: &RequestHeader, response: &ResponseHeader) {
        let mut keys = vec![path_and_query(request).to_string()];
        for name in [http::header::LOCATION, http::header::CONTENT_LOCATION] {
            let Some(target) = response.headers.get(name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            if let Some(path) = same_origin_path(target, host(request)) {
                keys.push(path);
            }
        }
        for key in keys {
            self.cache
                .store
                .purge(&Selector::Key(key), PurgeMode::Hard, "unsafe_method");
        }
    }
}

fn path_and_query(request: &RequestHeader) -> &str {
    request.uri.path_and_query().map_or("/", |pq| pq.as_str())
}

fn host(request: &RequestHeader) -> &str {
    request
        .headers
        .get(http::header::HOST)
        .and_then(|value| value.to_str().ok())
        .or_else(|| request.uri.host())
        .unwrap_or("")
}

/// The path of `target` when it names the request's own origin: a path, or an absolute URL on `host`.
fn same_origin_path(target: &str, host: &str) -> Option<String> {
    if target.starts_with('/') && !target.starts_with("//") {
        return Some(target.to_string());
    }
    let uri: http::Uri = target.parse().ok()?;
    let authority = uri.authority()?;
    (authority.as_str().eq_ignore_ascii_case(host))
        .then(|| uri.path_and_query().map_or("/", |pq| pq.as_str()).to_string())
}

/// The status refusing a request too large to forward (414 or 431), or `None` when it fits.
fn oversized(request: &RequestHeader) -> Option<u16> {
    if request.raw_path().len() > MAX_TARGET_BYTES {
        return Some(414);
    }
    let header_bytes: usize = request
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    (header_bytes > MAX_HEADER_BYTES).then_some(431)
}

/// What makes an HTTP/1 request's framing or target ambiguous, if anything: several `Content-Length`
/// values (repeated lines or a list, even of equal values: RFC 9112 §6.3 lets a recipient refuse
/// them, and forwarding them unchanged would leave the next hop to guess), no `Host` in HTTP/1.1, or
/// several `Host` lines (RFC 9112 §3.2). Pingora has already refused differing lengths and removed a
/// `Content-Length` sent beside `Transfer-Encoding`.
fn ambiguous_framing(request: &RequestHeader) -> Option<&'static str> {
    let lengths: usize = request
        .headers
        .get_all(http::header::CONTENT_LENGTH)
        .iter()
        .map(|value| value.as_bytes().split(|&b| b == b',').count())
        .sum();
    if lengths > 1 {
        return Some("several content-length values");
    }
    match request.headers.get_all(http::header::HOST).iter().count() {
        0 if request.version == http::Version::HTTP_11 => Some("no host"),
        0 | 1 => None,
        _ => Some("several host lines"),
    }
}

fn is_unsafe(method: &http::Method) -> bool {
    !matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::TRACE
    )
}

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = RequestContext;

    fn new_ctx(&self) -> Self::CTX {
        RequestContext::default()
    }

    fn on_connection_reuse(&self, _session: &mut Session, _ctx: &mut Self::CTX, context: Box<dyn Any + Send + Sync>) {
        // The request header is in: its deadline is over.
        downstream::header_read(context);
    }

    async fn request_filter(&self, session: &mut Session, _ctx: &mut Self::CTX) -> Result<bool> {
        if let Some(problem) = ambiguous_framing(session.req_header()) {
            // RFC 9112 §6.3 and §3.2: answer 400 and close, since where the next request would
            // start is unknown.
            tracing::debug!(problem, "request refused");
            session.set_keepalive(None);
            session.respond_error(400).await?;
            return Ok(true);
        }
        let Some(status) = oversized(session.req_header()) else {
            return Ok(false);
        };
        session.respond_error(status).await?;
        Ok(true)
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<Box<HttpPeer>> {
        ctx.upstream_sent = Some(Instant::now());
        let expecting = if policy::is_stream_request(session.req_header(), &self.settings.stream_paths) {
            Expecting::Stream
        } else {
            Expecting::Response
        };
        Ok(Box::new(self.upstreams.peer(self.upstreams.pick(), expecting)))
    }

    fn request_cache_filter(&self, session: &mut Session, _ctx: &mut Self::CTX) -> Result<()> {
        let request = session.req_header();
        if !filters::request_cacheable(request) || policy::is_stream_request(request, &self.settings.stream_paths) {
            return Ok(());
        }
        let cache = self.cache;
        session
            .cache
            .enable(cache.store, Some(cache.eviction), None, Some(cache.lock), None);
        session.cache.set_max_file_size_bytes(self.settings.max_object_bytes);
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, _ctx: &mut Self::CTX) -> Result<CacheKey> {
        let request = session.req_header();
        if let Some(control) = &self.control {
            control.hot_keys.record(path_and_query(request));
        }
        Ok(key::cache_key(
            path_and_query(request),
            host(request),
            self.cache.store.fill_epoch(),
        ))
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        response: &ResponseHeader,
        _ctx: &mut Self::CTX,
    ) -> Result<RespCacheable> {
        let authorization = session.req_header().headers.contains_key(http::header::AUTHORIZATION);
        Ok(policy::response_cacheability(
            response,
            authorization,
            &self.settings.vary_allowed,
        ))
    }

    fn cache_vary_filter(&self, meta: &CacheMeta, _ctx: &mut Self::CTX, request: &RequestHeader) -> Option<HashBinary> {
        policy::variance(meta, request)
    }

    async fn cache_hit_filter(
        &self,
        _session: &mut Session,
        _meta: &CacheMeta,
        _hit_handler: &mut HitHandler,
        _is_fresh: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<ForcedFreshness>> {
        // Cut off from the control plane beyond the staleness bound, a purge may have been missed:
        // every hit, fresh or stale, is revalidated before it is served, and never served stale.
        if self
            .control
            .as_ref()
            .is_some_and(|control| control.cut_off(SystemTime::now()))
        {
            ctx.control_lost = true;
            return Ok(Some(ForcedFreshness::ForceExpired));
        }
        Ok(None)
    }

    fn should_serve_stale(&self, _session: &mut Session, ctx: &mut Self::CTX, error: Option<&Error>) -> bool {
        match error {
            // Stale-while-revalidate: pingora has already checked the response's window.
            None => true,
            Some(error) => {
                let upstream = error.esource() == &ErrorSource::Upstream;
                ctx.upstream_failed |= upstream;
                // A 5xx is judged before `upstream_response_filter` sees it: record it for Cache-Status.
                if let ErrorType::HTTPStatus(status) = error.etype() {
                    ctx.upstream_status = Some(*status);
                }
                upstream
            }
        }
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        ctx.upstream_status = Some(response.status.as_u16());
        if let Some(sent) = ctx.upstream_sent {
            self.metrics.upstream_seconds.observe(sent.elapsed().as_secs_f64());
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let phase = session.cache.phase();
        let outcome = Outcome::from_phase(phase, ctx.upstream_failed);
        let stored = matches!(phase, CachePhase::Miss | CachePhase::Expired | CachePhase::Revalidated);
        let fresh_until = match phase {
            CachePhase::Disabled(_) | CachePhase::Bypass | CachePhase::Uninit | CachePhase::CacheKey => None,
            _ => session.cache.maybe_cache_meta().map(CacheMeta::fresh_until),
        };
        let collapsed = outcome == Outcome::Hit && session.cache.lock_duration().is_some();
        let status = policy::cache_status(
            &self.settings.cache_name,
            outcome,
            fresh_until,
            ctx.upstream_status,
            stored,
            collapsed,
            SystemTime::now(),
        );
        // Forced revalidations never serve stale, so this is the only detail of the response.
        let status = if ctx.control_lost {
            format!("{status}; detail=control-plane-lost")
        } else {
            status
        };
        let status = match response.headers.get("cache-status").and_then(|v| v.to_str().ok()) {
            // Caches nearer the origin come first (RFC 9211 §2).
            Some(earlier) => format!("{earlier}, {status}"),
            None => status,
        };
        response.insert_header("cache-status", status)?;
        if outcome == Outcome::StaleIfError {
            // After serving stale for a failed upstream attempt pingora closes the client connection;
            // say so, or the client reuses it and meets a reset.
            session.set_keepalive(None);
        }
        if matches!(phase, CachePhase::Hit | CachePhase::Stale | CachePhase::StaleUpdating) {
            // Stored responses never hold a cookie (policy strips it); this keeps it so for entries
            // from any other path.
            response.remove_header(&http::header::SET_COOKIE);
        }
        if self.settings.strip_tag_headers {
            for name in &self.settings.tag_headers {
                response.remove_header(name.as_str());
            }
        }
        let request = session.req_header();
        if is_unsafe(&request.method) && (response.status.is_success() || response.status.is_redirection()) {
            self.invalidate_after_unsafe_request(request, response);
        }
        self.metrics.requests.with_label_values(&[outcome.label(stored)]).inc();
        Ok(())
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, _ctx: &mut Self::CTX) {
        self.metrics.bytes_served.inc_by(session.body_bytes_sent() as u64);
        if let Some(error) = error
            && error.esource() == &ErrorSource::Upstream
        {
            self.metrics.upstream_errors.inc();
            tracing::debug!(%error, "upstream request failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_same_origin_locations_are_invalidated() {
        assert_eq!(
            same_origin_path("/v1/x?y=1", "edge.example").as_deref(),
            Some("/v1/x?y=1")
        );
        assert_eq!(
            same_origin_path("https://edge.example/v1/x", "EDGE.example").as_deref(),
            Some("/v1/x")
        );
        assert_eq!(same_origin_path("https://other.example/v1/x", "edge.example"), None);
        assert_eq!(same_origin_path("//other.example/v1/x", "edge.example"), None);
        assert_eq!(same_origin_path("not a url", "edge.example"), None);
    }

    #[test]
    fn oversized_targets_and_headers_are_refused() {
        let request = |path: &str, header: usize| {
            let mut request = RequestHeader::build("GET", path.as_bytes(), None).unwrap();
            request.append_header("x-filler", "x".repeat(header)).unwrap();
            request
        };
        assert_eq!(oversized(&request("/v1/forecasts/AAPL/1h", 100)), None);
        let long_path = format!("/{}", "a".repeat(MAX_TARGET_BYTES));
        assert_eq!(oversized(&request(&long_path, 100)), Some(414));
        assert_eq!(oversized(&request("/", MAX_HEADER_BYTES)), Some(431));
        assert_eq!(oversized(&request("/", MAX_HEADER_BYTES - "x-filler".len())), None);
    }

    #[test]
    fn ambiguous_lengths_and_hosts_are_refused() {
        let request = |version: http::Version, headers: &[(&str, &str)]| {
            let mut request = RequestHeader::build("POST", b"/", None).unwrap();
            request.set_version(version);
            for (name, value) in headers {
                request.append_header(name.to_string(), *value).unwrap();
            }
            request
        };
        let http11 = http::Version::HTTP_11;
        assert_eq!(ambiguous_framing(&request(http11, &[("host", "edge")])), None);
        assert_eq!(
            ambiguous_framing(&request(http11, &[("host", "edge"), ("content-length", "3")])),
            None
        );
        for lengths in [&["3, 3"][..], &["3", "3"], &["3,4"]] {
            let mut headers = vec![("host", "edge")];
            headers.extend(lengths.iter().map(|length| ("content-length", *length)));
            assert_eq!(
                ambiguous_framing(&request(http11, &headers)),
                Some("several content-length values"),
                "{lengths:?}"
            );
        }
        assert_eq!(ambiguous_framing(&request(http11, &[])), Some("no host"));
        assert_eq!(ambiguous_framing(&request(http::Version::HTTP_10, &[])), None);
        assert_eq!(ambiguous_framing(&request(http::Version::HTTP_2, &[])), None);
        assert_eq!(
            ambiguous_framing(&request(http11, &[("host", "a"), ("host", "b")])),
            Some("several host lines")
        );
    }

    #[test]
    fn unsafe_methods_are_the_ones_that_may_change_state() {
        for method in [
            http::Method::POST,
            http::Method::PUT,
            http::Method::DELETE,
            http::Method::PATCH,
        ] {
            assert!(is_unsafe(&method), "{method}");
        }
        for method in [http::Method::GET, http::Method::HEAD, http::Method::OPTIONS] {
            assert!(!is_unsafe(&method), "{method}");
        }
    }
}
