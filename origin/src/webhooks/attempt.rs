//! One attempt over HTTP: the event's body, a request signed the Standard Webhooks way to a target
//! checked again just before, and what the answer says (status, `Retry-After`, the start of its body).
//!
//! Invariants: the connection goes only to addresses the target policy passed (its resolver is the
//! client's), never through a proxy, and redirects are not followed; every attempt of a message
//! carries the same `webhook-id`; the request's timestamp and the secrets that sign it are taken at
//! one instant of the wall clock, the clock receivers check it by.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use shared::events::Event;
use shared::time::{millis, unix_ms};
use shared::webhooks::signature_header;
use time::OffsetDateTime;

use super::delivery::DeliveryError;
use super::endpoints::signing_secrets;
use super::policy::{Verdict, retry_after, verdict};
use super::target::{Resolver, TargetPolicy};
use super::{Webhooks, message_id};
use crate::storage::Result;
use crate::storage::webhooks::{Attempt, Delivery, StoredEndpoint};

/// Event bodies kept in memory: endpoints that share an event read it once.
const BODY_CACHE: usize = 4096;

/// The client every attempt is sent with.
pub fn client(timeout: Duration, policy: Arc<TargetPolicy>) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        // A proxy (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, which reqwest reads by default) resolves the
        // host itself and would connect to addresses the resolver below never checked.
        .no_proxy()
        .dns_resolver(Arc::new(Resolver(policy)))
        .user_agent(concat!("forecast-origin-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The bodies of the events attempted most recently, at most [`BODY_CACHE`].
#[derive(Debug, Default)]
pub struct BodyCache(Mutex<(HashMap<u64, Bytes>, VecDeque<u64>)>);

impl BodyCache {
    fn get(&self, id: u64) -> Option<Bytes> {
        self.lock().0.get(&id).cloned()
    }

    fn keep(&self, id: u64, body: Bytes) {
        let mut cache = self.lock();
        let (map, order) = &mut *cache;
        if map.insert(id, body).is_none() {
            order.push_back(id);
        }
        while order.len() > BODY_CACHE {
            if let Some(oldest) = order.pop_front() {
                map.remove(&oldest);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, (HashMap<u64, Bytes>, VecDeque<u64>)> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Webhooks {
    /// Sends one attempt; answers its record (outcome filled in by the caller) and verdict.
    pub(super) async fn attempt(
        &self,
        endpoint: &StoredEndpoint,
        delivery: &Delivery,
    ) -> Result<(Attempt, Verdict), DeliveryError> {
        let started = Instant::now();
        let mut attempt = Attempt {
            message_id: message_id(delivery.event_id),
            event_id: delivery.event_id,
            attempt: delivery.attempts + 1,
            at_ms: self.clock.now_ms(),
            outcome: String::new(),
            status: None,
            latency_ms: 0,
            error: None,
            response: String::new(),
        };
        let Some(body) = self.body(delivery.event_id).await? else {
            attempt.error = Some("the event was trimmed from the log before it could be delivered".into());
            return Ok((attempt, Verdict::Final));
        };
        let url = match self.policy.parse(&endpoint.url) {
            Ok(url) => url,
            Err(error) => {
                attempt.error = Some(error.to_string());
                return Ok((attempt, Verdict::Final));
            }
        };
        if let Err(error) = self.policy.check(&url).await {
            attempt.error = Some(error.to_string());
            return Ok((attempt, Verdict::Final));
        }
        // Receivers compare the signed timestamp with their wall clock; secrets expire by it too.
        let now = OffsetDateTime::now_utc();
        let secrets = signing_secrets(endpoint, unix_ms(now));
        let timestamp = now.unix_timestamp();
        let signature = signature_header(&secrets, &attempt.message_id, timestamp, &body);
        let mut request = self.client.post(url).header("content-type", "application/json");
        for (name, value) in &endpoint.headers {
            request = request.header(name, value);
        }
        let request = request
            .header("webhook-id", &attempt.message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body);
        let verdict = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                attempt.status = Some(status);
                let asked = retry_after(response.headers(), SystemTime::now());
                attempt.response = snippet(response, self.settings.snippet_bytes).await;
                match verdict(status) {
                    Verdict::Retry { .. } => Verdict::Retry { retry_after: asked },
                    other => {
                        if (300..400).contains(&status) {
                            attempt.error = Some("redirects are not followed".into());
                        }
                        other
                    }
                }
            }
            Err(error) => {
                attempt.error = Some(describe(&error));
                Verdict::Retry { retry_after: None }
            }
        };
        attempt.latency_ms = millis(started.elapsed());
        Ok((attempt, verdict))
    }

    /// The body of event `id`: the envelope as JSON. `None` when the log no longer holds it.
    async fn body(&self, id: u64) -> Result<Option<Bytes>, DeliveryError> {
        if let Some(body) = self.bodies.get(id) {
            return Ok(Some(body));
        }
        let Some(logged) = self.logged_event(id).await? else {
            return Ok(None);
        };
        let event = Event {
            id,
            event: logged.stored.event,
        };
        let body = serde_json::to_vec(&event).map_err(|source| DeliveryError::Encode { event_id: id, source })?;
        let body = Bytes::from(body);
        self.bodies.keep(id, body.clone());
        Ok(Some(body))
    }
}

/// The start of a response body, as text.
async fn snippet(mut response: reqwest::Response, limit: usize) -> String {
    let mut kept = Vec::new();
    while kept.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => kept.extend_from_slice(&chunk[..chunk.len().min(limit - kept.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// An error of the HTTP client, with its causes.
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_cache_lets_the_oldest_go() {
        let cache = BodyCache::default();
        for id in 0..=BODY_CACHE as u64 {
            cache.keep(id, Bytes::from(id.to_string()));
        }
        assert_eq!(cache.get(0), None);
        assert_eq!(cache.get(1), Some(Bytes::from("1")));
        assert_eq!(cache.get(BODY_CACHE as u64), Some(Bytes::from(BODY_CACHE.to_string())));
        // Kept again, a body does not count twice.
        cache.keep(1, Bytes::from("1"));
        assert_eq!(cache.lock().1.len(), BODY_CACHE);
    }
}
