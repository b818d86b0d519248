//! How a stored version becomes an HTTP response: the JSON body, its ETag and its caching headers.
//!
//! Bodies are rendered once per version and kept (in the L1 cache); only the freshness headers, which
//! depend on the clock, are computed per response.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, HeaderValue, header};
use bytes::{BufMut, Bytes, BytesMut};
use ring::digest;
use serde::Serialize;
use shared::domain::{Forecast, ForecastKey, Instrument, Timeframe};
use time::OffsetDateTime;

use crate::storage::VersionRecord;

/// The public JSON form of one version.
#[derive(Serialize)]
struct Document<'a> {
    instrument: &'a Instrument,
    timeframe: Timeframe,
    version: u64,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    rollback_of: Option<u64>,
    #[serde(flatten)]
    forecast: &'a Forecast,
}

/// One version, ready to answer with.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub key: ForecastKey,
    pub version: u64,
    /// Strong ETag, quotes included: `"7-1f2e3d4c5b6a7988"`.
    pub etag: String,
    /// Tags a cache can purge this response by.
    pub surrogate_keys: Vec<String>,
    /// The response, with every header that does not depend on the clock already encoded.
    pub representation: Representation,
}

impl Rendered {
    pub fn new(record: &VersionRecord) -> Self {
        let document = Document {
            instrument: &record.instrument,
            timeframe: record.timeframe,
            version: record.version,
            updated_at: record.created_at,
            rollback_of: record.rollback_of,
            forecast: &record.forecast,
        };
        // Serializing plain data into memory cannot fail: every map key is a string.
        let body = Bytes::from(serde_json::to_vec(&document).unwrap_or_default());
        let key = record.key();
        let model = &record.forecast.model;
        let etag = format!("\"{}-{}\"", record.version, short_digest(&[&body]));
        let surrogate_keys = vec![
            key.instrument.to_string(),
            crate::invalidation::forecast_tag(&key),
            format!("model:{}", model.id),
            format!("model:{model}"),
        ];
        let last_modified: SystemTime = record.created_at.into();
        let representation = Representation {
            etag: header_value(&etag),
            last_modified: Some((last_modified, header_value(&httpdate::fmt_http_date(last_modified)))),
            valid_until: record.forecast.valid_until.into(),
            surrogate_key: header_value(&surrogate_keys.join(" ")),
            immutable: false,
            body,
        };
        Self {
            version: record.version,
            key,
            etag,
            surrogate_keys,
            representation,
        }
    }
}

fn short_digest(parts: &[&[u8]]) -> String {
    let mut context = digest::Context::new(&digest::SHA256);
    for part in parts {
        context.update(part);
    }
    hex::encode(&context.finish().as_ref()[..8])
}

/// A header value built here: ASCII without control characters, so the conversion cannot fail.
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Freshness settings: browsers cannot be purged, shared caches can.
#[derive(Debug, Clone)]
pub struct CachePolicy {
    /// Whether shared caches may store responses: only when reads need no token. A response a reader
    /// fetched with its token is `private` and `CDN-Cache-Control: no-store`, so no edge or proxy serves
    /// it to anyone else.
    shared: bool,
    browser_max_age: u64,
    /// `, stale-while-revalidate=N, stale-if-error=M`, the part of `CDN-Cache-Control` that never changes.
    shared_suffix: String,
}

impl CachePolicy {
    pub fn new(
        shared: bool,
        browser_max_age: Duration,
        stale_while_revalidate: Duration,
        stale_if_error: Duration,
    ) -> Self {
        Self {
            shared,
            browser_max_age: browser_max_age.as_secs(),
            shared_suffix: format!(
                ", stale-while-revalidate={}, stale-if-error={}",
                stale_while_revalidate.as_secs(),
                stale_if_error.as_secs()
            ),
        }
    }
}

/// A response made of one or more versions, with the headers they imply together.
#[derive(Debug, Clone, PartialEq)]
pub struct Representation {
    pub etag: HeaderValue,
    /// `None` for lists: a list's newest member can be deleted, so no date says whether it changed.
    pub last_modified: Option<(SystemTime, HeaderValue)>,
    pub valid_until: SystemTime,
    pub surrogate_key: HeaderValue,
    pub immutable: bool,
    pub body: Bytes,
}

impl Representation {
    pub fn single(rendered: &Rendered, immutable: bool) -> Self {
        Self {
            immutable,
            ..rendered.representation.clone()
        }
    }

    /// `{"forecasts":[…],"missing":[…]}`. Member bodies are copied as they are, not serialized again.
    /// `tags` are surrogate keys the list answers for even when it is empty (such as its instrument).
    pub fn list(members: &[&Rendered], missing: &[ForecastKey], tags: &[String]) -> Self {
        let size = members.iter().map(|m| m.representation.body.len() + 1).sum::<usize>() + 64;
        let mut body = BytesMut::with_capacity(size);
        body.put_slice(b"{\"forecasts\":[");
        for (i, member) in members.iter().enumerate() {
            if i > 0 {
                body.put_u8(b',');
            }
            body.put_slice(&member.representation.body);
        }
        body.put_slice(b"],\"missing\":");
        // A list of validated keys always serializes.
        body.put_slice(&serde_json::to_vec(missing).unwrap_or_default());
        body.put_u8(b'}');
        let body = body.freeze();

        let mut surrogate_keys: Vec<&str> = tags.iter().map(String::as_str).collect();
        for member in members {
            surrogate_keys.extend(member.surrogate_keys.iter().map(String::as_str));
        }
        surrogate_keys.sort_unstable();
        surrogate_keys.dedup();
        Self {
            etag: header_value(&format!("\"l-{}\"", short_digest(&[&body]))),
            last_modified: None,
            valid_until: members
                .iter()
                .map(|m| m.representation.valid_until)
                .min()
                .unwrap_or(SystemTime::UNIX_EPOCH),
            surrogate_key: header_value(&surrogate_keys.join(" ")),
            immutable: false,
            body,
        }
    }

    /// Validators and caching headers, as of `now`.
    pub fn headers(&self, policy: &CachePolicy, now: SystemTime) -> HeaderMap {
        let mut headers = HeaderMap::with_capacity(8);
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::ETAG, self.etag.clone());
        if let Some((_, last_modified)) = &self.last_modified {
            headers.insert(header::LAST_MODIFIED, last_modified.clone());
        }
        match (self.immutable, policy.shared) {
            (true, true) => {
                let value = HeaderValue::from_static("public, max-age=31536000, immutable");
                headers.insert(header::CACHE_CONTROL, value.clone());
                headers.insert(CDN_CACHE_CONTROL, value);
            }
            (true, false) => {
                let value = HeaderValue::from_static("private, max-age=31536000, immutable");
                headers.insert(header::CACHE_CONTROL, value);
                headers.insert(CDN_CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
            (false, shared) => {
                let remaining = self.valid_until.duration_since(now).unwrap_or_default().as_secs();
                let browser = remaining.min(policy.browser_max_age);
                if shared {
                    headers.insert(header::CACHE_CONTROL, max_age_value("public", browser, ""));
                    headers.insert(
                        CDN_CACHE_CONTROL,
                        max_age_value("public", remaining, &policy.shared_suffix),
                    );
                } else {
                    headers.insert(header::CACHE_CONTROL, max_age_value("private", browser, ""));
                    headers.insert(CDN_CACHE_CONTROL, HeaderValue::from_static("no-store"));
                }
            }
        }
        headers.insert(SURROGATE_KEY, self.surrogate_key.clone());
        headers
    }

    /// Whether a conditional GET may be answered 304 (RFC 9110 §13.2.2: If-None-Match wins).
    pub fn not_modified(&self, request: &HeaderMap) -> bool {
        if let Some(condition) = request.get(header::IF_NONE_MATCH) {
            let Ok(condition) = condition.to_str() else {
                return false;
            };
            let etag = self.etag.as_bytes();
            return condition
                .split(',')
                .map(str::trim)
                .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag).as_bytes() == etag);
        }
        let since = request
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        match (since, &self.last_modified) {
            // HTTP dates have whole seconds.
            (Some(since), Some((modified, _))) => modified
                .duration_since(since)
                .map_or(true, |d| d < Duration::from_secs(1)),
            _ => false,
        }
    }
}

/// `public, max-age=N` (or `private, …`) followed by `suffix`.
fn max_age_value(visibility: &str, seconds: u64, suffix: &str) -> HeaderValue {
    let mut text = String::with_capacity(32 + suffix.len());
    let _ = write!(text, "{visibility}, max-age={seconds}{suffix}");
    header_value(&text)
}

pub const CDN_CACHE_CONTROL: header::HeaderName = header::HeaderName::from_static("cdn-cache-control");
pub const SURROGATE_KEY: header::HeaderName = header::HeaderName::from_static("surrogate-key");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::VersionRecord;
    use time::macros::datetime;

    fn record(version: u64) -> VersionRecord {
        let forecast: Forecast = serde_json::from_value(serde_json::json!({
            "horizon": "1h", "generated_at": "2026-11-23T14:00:00Z", "valid_until": "2026-11-23T15:00:00Z",
            "model": {"id": "lstm", "version": "3.2.0"}, "point": 187.42
        }))
        .unwrap();
        VersionRecord {
            version,
            instrument: "AAPL".parse().unwrap(),
            timeframe: Timeframe::H1,
            created_at: datetime!(2026-11-23 14:00:05 UTC),
            created_by: "test".into(),
            rollback_of: None,
            forecast,
        }
    }

    fn policy() -> CachePolicy {
        policy_shared(true)
    }

    fn policy_shared(shared: bool) -> CachePolicy {
        CachePolicy::new(
            shared,
            Duration::from_secs(5),
            Duration::from_secs(30),
            Duration::from_secs(600),
        )
    }

    #[test]
    fn freshness_follows_the_validity_window() {
        let rendered = Rendered::new(&record(3));
        assert!(rendered.etag.starts_with("\"3-"));
        let now: SystemTime = datetime!(2026-11-23 14:30:00 UTC).into();
        let headers = Representation::single(&rendered, false).headers(&policy(), now);
        assert_eq!(headers["cache-control"], "public, max-age=5");
        assert_eq!(
            headers["cdn-cache-control"],
            "public, max-age=1800, stale-while-revalidate=30, stale-if-error=600"
        );
        assert_eq!(headers["surrogate-key"], "AAPL AAPL:1h model:lstm model:lstm@3.2.0");
        assert_eq!(headers["last-modified"], "Mon, 23 Nov 2026 14:00:05 GMT");
        let later: SystemTime = datetime!(2026-11-23 16:00:00 UTC).into();
        let headers = Representation::single(&rendered, false).headers(&policy(), later);
        assert_eq!(headers["cache-control"], "public, max-age=0");
    }

    #[test]
    fn reads_that_need_a_token_are_never_stored_by_shared_caches() {
        let rendered = Rendered::new(&record(3));
        let now: SystemTime = datetime!(2026-11-23 14:30:00 UTC).into();
        for immutable in [false, true] {
            let headers = Representation::single(&rendered, immutable).headers(&policy_shared(false), now);
            assert!(headers["cache-control"].to_str().unwrap().starts_with("private, "));
            assert_eq!(headers["cdn-cache-control"], "no-store");
        }
    }

    #[test]
    fn etags_differ_between_versions() {
        assert_ne!(Rendered::new(&record(1)).etag, Rendered::new(&record(2)).etag);
    }

    #[test]
    fn conditional_requests() {
        let rendered = Rendered::new(&record(3));
        let representation = Representation::single(&rendered, true);
        let mut request = HeaderMap::new();
        assert!(!representation.not_modified(&request));
        request.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"a\", W/{}", rendered.etag)).unwrap(),
        );
        assert!(representation.not_modified(&request));
        request.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        request.insert(
            header::IF_MODIFIED_SINCE,
            HeaderValue::from_static("Mon, 23 Nov 2026 14:00:05 GMT"),
        );
        assert!(
            !representation.not_modified(&request),
            "If-None-Match must win over If-Modified-Since"
        );
        request.remove(header::IF_NONE_MATCH);
        assert!(representation.not_modified(&request));
        request.insert(
            header::IF_MODIFIED_SINCE,
            HeaderValue::from_static("Mon, 23 Nov 2026 14:00:04 GMT"),
        );
        assert!(!representation.not_modified(&request));
    }

    #[test]
    fn lists_copy_member_bodies() {
        let a = Rendered::new(&record(1));
        let list = Representation::list(&[&a], &["MSFT:1d".parse().unwrap()], &["AAPL".into()]);
        let value: serde_json::Value = serde_json::from_slice(&list.body).unwrap();
        assert!(list.last_modified.is_none());
        assert_eq!(value["forecasts"][0]["point"], 187.42);
        assert_eq!(value["forecasts"][0]["version"], 1);
        assert_eq!(value["missing"][0], "MSFT:1d");
        assert!(list.etag.to_str().unwrap().starts_with("\"l-"));
    }
}
