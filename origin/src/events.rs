//! Analysis events: publishing into the durable event log, and the hub that fans each logged event out
//! to the SSE subscribers of this origin.
//!
//! One tail task per origin reads the log in order (woken at once by appends made here, and every
//! `events.poll_interval` for appends made through other origins sharing the log), encodes each event
//! once as an SSE frame, and offers it to every subscriber whose filter matches. Each subscriber has a
//! bounded queue: a full one is closed and flagged as overflowed instead of slowing anyone else; its
//! stream then ends with `event: overflow`, and the client resumes with `Last-Event-ID`.
//!
//! A new subscription is registered under the hub's lock together with the id of the last event
//! broadcast (`live_after`): what follows arrives through the queue, what came before is replayed from
//! the log, so nothing is missed or sent twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use shared::domain::Instrument;
use shared::events::{Event, NewEvent, TopicPattern};
use shared::time::unix_ms_now;
use tokio::sync::{mpsc, watch};
use utoipa::ToSchema;

use crate::metrics::Metrics;
use crate::storage::{EventPage, GapReason, LogStep, Result, SharedStore, StoredEvent, StoredEventAt};

/// Events read from the log at a time.
pub const PAGE: NonZeroUsize = NonZeroUsize::new(1000).expect("non-zero");

/// What a subscriber receives: its topics (any matches), and when given, only these types and
/// instruments.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub topics: Vec<TopicPattern>,
    pub types: Option<HashSet<String>>,
    pub instruments: Option<HashSet<Instrument>>,
}

impl Filter {
    pub fn matches(&self, event: &NewEvent) -> bool {
        self.topics.iter().any(|pattern| pattern.matches(&event.topic))
            && self.types.as_ref().is_none_or(|types| types.contains(&event.kind))
            && self
                .instruments
                .as_ref()
                .is_none_or(|instruments| instruments.contains(&event.instrument))
    }
}

/// One event, encoded once for every subscriber.
#[derive(Debug, Clone)]
pub struct Frame {
    pub id: u64,
    pub appended_at_ms: u64,
    pub bytes: Bytes,
}

impl Frame {
    /// `id:`, `event:` (the type) and `data:` (the envelope as one line of JSON).
    pub fn encode(logged: &StoredEventAt) -> Self {
        let event = Event {
            id: logged.id,
            event: logged.stored.event.clone(),
        };
        // Checked strings and finite numbers: the envelope always serializes, on one line.
        let json = serde_json::to_vec(&event).unwrap_or_default();
        let mut bytes = BytesMut::with_capacity(json.len() + 64);
        bytes.put_slice(format!("id: {}\nevent: {}\ndata: ", logged.id, event.event.kind).as_bytes());
        bytes.put_slice(&json);
        bytes.put_slice(b"\n\n");
        Self {
            id: logged.id,
            appended_at_ms: logged.stored.appended_at_ms,
            bytes: bytes.freeze(),
        }
    }

    /// `event: gap`: events `from..=to` are gone from the log and will not be sent.
    pub fn gap(from: u64, to: u64, reason: &str) -> Self {
        let gap = serde_json::json!({"from": from, "to": to, "reason": reason});
        Self {
            id: to,
            appended_at_ms: unix_ms_now(),
            bytes: Bytes::from(format!("event: gap\ndata: {gap}\n\n")),
        }
    }
}

/// A subscriber, as `GET /admin/v1/subscribers` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SubscriberStatus {
    pub id: u64,
    pub remote: String,
    /// The token it subscribed with, or `anonymous`.
    pub principal: String,
    pub topics: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instruments: Option<Vec<String>>,
    /// Unix milliseconds of the subscription.
    pub since_ms: u64,
    /// Events written to its connection.
    pub delivered: u64,
    /// The id of the last event written to it.
    pub last_event_id: Option<u64>,
    /// Events in the log after the last one written to it (of any topic).
    pub lag: u64,
}

/// What a subscriber's connection and the hub share.
#[derive(Debug, Default)]
pub struct Progress {
    pub delivered: AtomicU64,
    /// 0: none yet.
    pub last_event_id: AtomicU64,
    pub overflowed: AtomicBool,
}

struct Subscriber {
    filter: Filter,
    queue: mpsc::Sender<Frame>,
    progress: Arc<Progress>,
    who: Who,
    since_ms: u64,
}

/// Who holds a stream: its token (`None`: anonymous) and the client's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    pub token: Option<String>,
    pub remote: Option<SocketAddr>,
}

/// The most streams one token, and one client address, may hold open at once.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    pub per_token: usize,
    pub per_address: usize,
}

/// Which of [`StreamLimits`] a refused subscription reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamLimit {
    #[error("this token holds the most streams it may (events.max_streams_per_token)")]
    Token,
    #[error("this address holds the most streams it may (events.max_streams_per_address)")]
    Address,
}

impl StreamLimit {
    pub fn label(self) -> &'static str {
        match self {
            StreamLimit::Token => "token",
            StreamLimit::Address => "address",
        }
    }
}

#[derive(Default)]
struct Hub {
    subscribers: BTreeMap<u64, Subscriber>,
    next_id: u64,
    /// The id of the last event offered to subscribers.
    broadcast_through: u64,
    streams_per_token: HashMap<String, usize>,
    streams_per_address: HashMap<IpAddr, usize>,
}

impl Hub {
    /// Removes a subscriber and what it counted toward its token's and address's limits.
    fn remove(&mut self, id: u64) -> Option<Subscriber> {
        let subscriber = self.subscribers.remove(&id)?;
        if let Some(token) = &subscriber.who.token {
            release(&mut self.streams_per_token, token);
        }
        if let Some(remote) = subscriber.who.remote {
            release(&mut self.streams_per_address, &remote.ip());
        }
        Some(subscriber)
    }
}

/// Counts one stream less for `key`, forgetting keys that hold none.
fn release<K, Q>(counts: &mut HashMap<K, usize>, key: &Q)
where
    K: std::hash::Hash + Eq + std::borrow::Borrow<Q>,
    Q: std::hash::Hash + Eq + ?Sized,
{
    if let Some(count) = counts.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(key);
        }
    }
}

/// A registered subscription; dropping it unregisters it.
pub struct Subscription {
    pub id: u64,
    /// Events up to this id are to be replayed from the log; later ones arrive in `queue`.
    pub live_after: u64,
    pub queue: mpsc::Receiver<Frame>,
    pub progress: Arc<Progress>,
    events: Arc<Events>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.events.unsubscribe(self.id);
    }
}

/// The event log and its subscribers.
pub struct Events {
    store: SharedStore,
    hub: Mutex<Hub>,
    /// The newest id appended through this origin: the tail reads the log at once when it moves.
    appended: watch::Sender<u64>,
    metrics: Metrics,
    queue_events: usize,
    limits: StreamLimits,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Events {
    pub fn new(store: SharedStore, metrics: Metrics, queue_events: NonZeroUsize, limits: StreamLimits) -> Arc<Self> {
        Arc::new(Self {
            store,
            hub: Mutex::default(),
            appended: watch::Sender::new(0),
            metrics,
            queue_events: queue_events.get(),
            limits,
        })
    }

    fn hub(&self) -> MutexGuard<'_, Hub> {
        // Every update of the hub is complete before anything that could panic.
        self.hub.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `events` to the log in order, in one atomic step; answers their ids once durable.
    pub async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<u64>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let now = unix_ms_now();
        let stored: Vec<StoredEvent> = events
            .into_iter()
            .map(|event| StoredEvent {
                appended_at_ms: now,
                event,
            })
            .collect();
        let first = self.store.append_events(&stored).await?;
        let ids: Vec<u64> = (first..first + stored.len() as u64).collect();
        self.appended_through(first + stored.len() as u64 - 1, stored.len() as u64);
        Ok(ids)
    }

    /// Counts `count` events appended through this origin, the last of them `last`, and wakes the tail
    /// to stream them.
    pub fn appended_through(&self, last: u64, count: u64) {
        self.metrics.events_in.inc_by(count);
        self.appended.send_if_modified(|newest| {
            let newer = last > *newest;
            *newest = (*newest).max(last);
            newer
        });
    }

    /// Follows the newest id appended through this origin.
    pub fn appended(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    pub async fn read(&self, after: Option<u64>, limit: NonZeroUsize) -> Result<EventPage> {
        self.store.read_events(after, limit).await
    }

    /// The position just before the first event appended at or after `since` (unix ms): events
    /// after it are what a replay from `since` sends. Found by bisection over the kept ids.
    pub async fn position_at(&self, since_ms: u64) -> Result<Option<u64>> {
        let first = self.read(None, NonZeroUsize::MIN).await?;
        let (Some((oldest, _)), Some(head)) = (first.first_entry(), first.head) else {
            return Ok(first.head);
        };
        let (mut low, mut high) = (oldest, head + 1);
        while low < high {
            let middle = low + (high - low) / 2;
            let page = self.read(Some(middle - 1), NonZeroUsize::MIN).await?;
            match page.first_entry() {
                Some((id, appended_at_ms)) if appended_at_ms < since_ms => low = id + 1,
                Some((id, _)) => high = id.min(middle),
                None => high = middle,
            }
        }
        Ok(Some(low - 1))
    }

    /// Registers a subscriber unless `who` holds the most streams it may; events after `live_after`
    /// reach it through its queue.
    pub fn subscribe(self: &Arc<Self>, filter: Filter, who: Who) -> Result<Subscription, StreamLimit> {
        let mut hub = self.hub();
        let hub = &mut *hub;
        let token_count = who
            .token
            .as_ref()
            .map(|token| hub.streams_per_token.get(token).copied().unwrap_or(0));
        let address_count = who
            .remote
            .map(|remote| hub.streams_per_address.get(&remote.ip()).copied().unwrap_or(0));
        let refused = if token_count.is_some_and(|count| count >= self.limits.per_token) {
            Some(StreamLimit::Token)
        } else if address_count.is_some_and(|count| count >= self.limits.per_address) {
            Some(StreamLimit::Address)
        } else {
            None
        };
        if let Some(limit) = refused {
            self.metrics.streams_refused.with_label_values(&[limit.label()]).inc();
            return Err(limit);
        }
        if let Some(token) = &who.token {
            *hub.streams_per_token.entry(token.clone()).or_default() += 1;
        }
        if let Some(remote) = who.remote {
            *hub.streams_per_address.entry(remote.ip()).or_default() += 1;
        }
        let (sender, queue) = mpsc::channel(self.queue_events);
        let progress = Arc::new(Progress::default());
        hub.next_id += 1;
        let id = hub.next_id;
        let live_after = hub.broadcast_through;
        hub.subscribers.insert(
            id,
            Subscriber {
                filter,
                queue: sender,
                progress: progress.clone(),
                who,
                since_ms: unix_ms_now(),
            },
        );
        self.metrics.subscribers.set(hub.subscribers.len() as i64);
        Ok(Subscription {
            id,
            live_after,
            queue,
            progress,
            events: self.clone(),
        })
    }

    /// Ends every stream (the origin is stopping): clients resume elsewhere with `Last-Event-ID`.
    pub fn close(&self) {
        let mut hub = self.hub();
        hub.subscribers.clear();
        hub.streams_per_token.clear();
        hub.streams_per_address.clear();
        self.metrics.subscribers.set(0);
    }

    fn unsubscribe(&self, id: u64) {
        let mut hub = self.hub();
        hub.remove(id);
        self.metrics.subscribers.set(hub.subscribers.len() as i64);
    }

    /// Every subscriber; `head` (the log's newest id) gives their lag.
    pub fn subscribers(&self, head: Option<u64>) -> Vec<SubscriberStatus> {
        let head = head.unwrap_or(0);
        let sorted = |set: &HashSet<String>| {
            let mut list: Vec<String> = set.iter().cloned().collect();
            list.sort();
            list
        };
        self.hub()
            .subscribers
            .iter()
            .map(|(&id, subscriber)| {
                let last = subscriber.progress.last_event_id.load(Ordering::Relaxed);
                let filter = &subscriber.filter;
                SubscriberStatus {
                    id,
                    remote: subscriber
                        .who
                        .remote
                        .map_or_else(|| "unknown".to_owned(), |remote| remote.to_string()),
                    principal: subscriber.who.token.clone().unwrap_or_else(|| "anonymous".to_owned()),
                    topics: filter.topics.iter().map(ToString::to_string).collect(),
                    types: filter.types.as_ref().map(sorted),
                    instruments: filter.instruments.as_ref().map(|set| {
                        let mut list: Vec<String> = set.iter().map(ToString::to_string).collect();
                        list.sort();
                        list
                    }),
                    since_ms: subscriber.since_ms,
                    delivered: subscriber.progress.delivered.load(Ordering::Relaxed),
                    last_event_id: (last > 0).then_some(last),
                    lag: head.saturating_sub(last),
                }
            })
            .collect()
    }

    /// Offers one logged event to every matching subscriber; a full queue ends its subscription.
    fn broadcast(&self, logged: &StoredEventAt) {
        let frame = Frame::encode(logged);
        self.offer(&frame, logged.id, |subscriber| {
            subscriber.filter.matches(&logged.stored.event)
        });
    }

    /// Tells every subscriber that events `from..=to` will not be streamed: trimmed before this origin
    /// read them, or unreadable in the log.
    fn broadcast_gap(&self, from: u64, to: u64, reason: GapReason) {
        match reason {
            GapReason::Trimmed => tracing::warn!(from, to, "events trimmed before they were streamed"),
            GapReason::Unreadable => {
                tracing::error!(from, to, "event log entries cannot be decoded; streams pass over them");
                self.metrics.events_unreadable.inc_by(to - from + 1);
            }
        }
        self.metrics.events_gaps.inc();
        self.offer(&Frame::gap(from, to, reason.as_str()), to, |_| true);
    }

    fn offer(&self, frame: &Frame, through: u64, wanted: impl Fn(&Subscriber) -> bool) {
        let mut hub = self.hub();
        let mut overflowed = Vec::new();
        for (&id, subscriber) in &hub.subscribers {
            if !wanted(subscriber) {
                continue;
            }
            match subscriber.queue.try_send(frame.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    subscriber.progress.overflowed.store(true, Ordering::Relaxed);
                    overflowed.push(id);
                }
                // The connection is gone; its subscription is being dropped.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        for id in overflowed {
            // Dropping the sender ends the stream once it has written what it holds.
            hub.remove(id);
            self.metrics.overflows.inc();
        }
        hub.broadcast_through = through;
        self.metrics.subscribers.set(hub.subscribers.len() as i64);
    }

    /// Follows the log from its head, broadcasting each event in order, until the origin stops (a task
    /// of [`crate::tasks::Tasks`]).
    pub async fn tail(self: Arc<Self>, poll_interval: Duration) {
        let mut appended = self.appended.subscribe();
        let mut poll = tokio::time::interval(poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut after: Option<u64> = None;
        loop {
            let caught_up = match after {
                None => match self.read(None, NonZeroUsize::MIN).await {
                    Ok(page) => {
                        let head = page.head.unwrap_or(0);
                        self.hub().broadcast_through = head;
                        after = Some(head);
                        true
                    }
                    Err(error) => {
                        tracing::warn!(%error, "event log unreadable; streams start when it is back");
                        true
                    }
                },
                Some(position) => match self.follow(position).await {
                    Some((next, caught_up)) => {
                        after = Some(next);
                        caught_up
                    }
                    None => true,
                },
            };
            if caught_up {
                tokio::select! {
                    changed = appended.changed() => if changed.is_err() { return },
                    _ = poll.tick() => {}
                }
            }
        }
    }

    /// Broadcasts one page of the log after `after`; answers the new position and whether it is the head.
    async fn follow(&self, after: u64) -> Option<(u64, bool)> {
        let page = match self.read(Some(after), PAGE).await {
            Ok(page) => page,
            Err(error) => {
                tracing::debug!(%error, "event log not readable; retried at the next tick");
                return None;
            }
        };
        if page.head.is_some_and(|head| head < after) {
            // The log was started anew (a new store): follow it from its head.
            tracing::warn!(after, head = ?page.head, "the event log restarted below what was streamed");
            let head = page.head.unwrap_or(0);
            self.hub().broadcast_through = head;
            return Some((head, true));
        }
        // Ids this origin will not stream (it fell behind retention, or entries do not decode) are
        // announced to its subscribers, not left for them to guess.
        for step in page.steps(after) {
            match step {
                LogStep::Event(logged) => self.broadcast(logged),
                LogStep::Gap { from, to, reason } => self.broadcast_gap(from, to, reason),
            }
        }
        Some((page.last_id().unwrap_or(after), page.len() < PAGE.get()))
    }
}
