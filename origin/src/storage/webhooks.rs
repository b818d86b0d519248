//! What the webhook dispatcher keeps durably: endpoints, the delivery queue, dead letters, attempts and
//! counters. Both backends keep these invariants (checked by the contract suite):
//! * the dispatch cursor moves only by compare-and-set, in the same atomic step as the deliveries it
//!   queues, so concurrent dispatchers never queue one event twice and a crash never loses one;
//! * a delivery taken stays queued until it is finished; one not finished within the reclaim time (its
//!   taker presumably died) is given to the next taker — at least once;
//! * finishing a delivery (done, retry later, dead letter) removes it from the queue in the same atomic
//!   step that records what comes next.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Result, StorageError};

/// An endpoint as stored: its settings, secrets and health. `revision` grows with every change; a
/// change is stored only over the revision it was made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEndpoint {
    pub id: String,
    pub revision: u64,
    pub url: String,
    pub topics: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
    #[serde(default)]
    pub description: String,
    pub enabled: bool,
    /// Why the endpoint was disabled by the dispatcher (absent when an operator disabled it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// Most attempts per second, per origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u32>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The current secret (`whsec_…`) first, then rotated-out ones still signing until they expire.
    pub secrets: Vec<StoredSecret>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// Since when every attempt has failed; absent while healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSecret {
    pub secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
}

impl StoredEndpoint {
    pub fn encode(&self) -> Result<String> {
        serde_json::to_string(self).map_err(StorageError::corrupt)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(StorageError::corrupt)
    }
}

/// One message (an event) for one endpoint, and how many attempts it has had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub endpoint: String,
    pub event_id: u64,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the event was appended (unix ms), for the end-to-end latency.
    pub appended_at_ms: u64,
    /// Put off to a booked turn of its busy endpoint: back in line ahead of deliveries taken since.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub put_off: bool,
}

impl Delivery {
    pub fn encode(&self) -> Result<String> {
        serde_json::to_string(self).map_err(StorageError::corrupt)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(StorageError::corrupt)
    }
}

/// A delivery taken from the queue; `handle` names it to [`WebhookStore::finish_delivery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub handle: String,
    pub delivery: Delivery,
}

/// What becomes of a taken delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// Delivered (or dropped because its endpoint is gone): it leaves the queue.
    Done,
    /// Queued again, due at `due_ms` (unix ms).
    Later { delivery: Delivery, due_ms: u64 },
    /// Out of attempts: kept in its endpoint's dead letters.
    Dead(Delivery),
}

/// One attempt, as `GET /admin/v1/webhooks/{id}/deliveries` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    pub message_id: String,
    pub event_id: u64,
    /// 1 for the first attempt of the message.
    pub attempt: u32,
    pub at_ms: u64,
    /// `delivered`, `retry`, `dead` (out of attempts or refused for good), `deferred`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub response: String,
}

/// Counters of one endpoint.
pub type Counters = BTreeMap<String, u64>;

#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Stores `endpoint` if the stored one has revision `expected` (`None`: none is stored). Answers
    /// whether it was stored.
    async fn put_endpoint(&self, endpoint: &StoredEndpoint, expected: Option<u64>) -> Result<bool>;

    async fn endpoint(&self, id: &str) -> Result<Option<StoredEndpoint>>;

    async fn endpoints(&self) -> Result<Vec<StoredEndpoint>>;

    /// Removes an endpoint with its dead letters, attempts and counters; queued deliveries to it are
    /// dropped when taken. Answers whether it existed.
    async fn delete_endpoint(&self, id: &str) -> Result<bool>;

    /// The last event id dispatched; `None` before the first dispatch.
    async fn dispatch_cursor(&self) -> Result<Option<u64>>;

    /// Queues `deliveries` (due now) and moves the cursor from `from` to `to`, in one atomic step, only
    /// if the cursor is still `from`. Answers whether it was.
    async fn dispatch(&self, from: Option<u64>, to: u64, deliveries: &[Delivery]) -> Result<bool>;

    /// Queues deliveries due at `due_ms`, outside dispatch (replays).
    async fn enqueue(&self, deliveries: &[Delivery], due_ms: u64) -> Result<()>;

    /// Up to `limit` deliveries due by `now_ms` that nobody holds, or that were taken more than
    /// `reclaim_after` ago and not finished.
    async fn take_deliveries(
        &self,
        consumer: &str,
        limit: usize,
        now_ms: u64,
        reclaim_after: Duration,
    ) -> Result<Vec<Taken>>;

    async fn finish_delivery(&self, taken: &Taken, finish: &Finish) -> Result<()>;

    /// Records one attempt (keeping the newest `keep`) and adds one to its endpoint's counter `outcome`.
    async fn record_attempt(&self, endpoint: &str, attempt: &Attempt, keep: usize) -> Result<()>;

    /// The newest attempts of an endpoint, newest first.
    async fn attempts(&self, endpoint: &str, limit: usize) -> Result<Vec<Attempt>>;

    async fn counters(&self, endpoint: &str) -> Result<Counters>;

    /// An endpoint's dead letters, oldest event first.
    async fn dead_letters(&self, endpoint: &str) -> Result<Vec<Delivery>>;

    /// Moves an endpoint's dead letters back to the queue with fresh attempts, due at `due_ms`; answers
    /// how many.
    async fn redrive(&self, endpoint: &str, due_ms: u64) -> Result<usize>;

    /// Deliveries queued (due or not, taken or not).
    async fn queue_depth(&self) -> Result<u64>;
}
