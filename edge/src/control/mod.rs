//! The edge side of the QUIC control plane: the origin pushes invalidations, the edge applies them in
//! order and acknowledges each (see the connection chart in [`shared::wire`]).
//!
//! * This file: what a message does to the cache ([`Protocol`], no I/O, tested below), and the
//!   [`ControlState`] the proxy reads to enforce the staleness bound.
//! * [`client`]: the pingora background service that owns the QUIC connection, fails over between
//!   origins and backs off.
//!
//! Invariants: sequences are applied in order, each exactly once per cache instance; a gap closes
//! the connection (the origin replays from `last_applied` on the next one). The staleness clock is
//! refreshed only while the edge is caught up with the log, so after a reconnect hits are revalidated
//! until the replay or drop-all is through.

mod client;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use shared::time::{millis, unix_ms};
use shared::wire::{
    self, Ack, DropAll, EdgeMessage, GoodbyeCode, Heartbeat, HotKey, Invalidate, OriginMessage, SUPPORTED_VERSIONS,
    Warm, Welcome,
};

pub use client::{ClientSettings, ControlClient};

use crate::cache::{PurgeMode, Selector};
use crate::metrics::Metrics;

/// The edge selector of a wire selector. A model selects what the origin tagged
/// `model:{id}@{version}` (its `Surrogate-Key`).
pub fn edge_selector(selector: &wire::Selector) -> Selector {
    match selector {
        wire::Selector::Key(key) => Selector::Key(key.clone()),
        wire::Selector::Prefix(prefix) => Selector::Prefix(prefix.clone()),
        wire::Selector::Tag(tag) => Selector::Tag(tag.clone()),
        wire::Selector::Model(model) => Selector::Tag(format!("model:{model}")),
        wire::Selector::All => Selector::All,
    }
}

/// Distinct keys counted between two stats reports; reads of further keys are not counted.
const HOT_KEYS_TRACKED: usize = 4096;

/// Reads per logical key since the last stats report: the origin warms the hottest after changes.
#[derive(Default)]
pub struct HotKeys {
    counts: Mutex<HashMap<Box<str>, u64>>,
}

impl HotKeys {
    pub fn record(&self, key: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(reads) = counts.get_mut(key) {
            *reads += 1;
        } else if counts.len() < HOT_KEYS_TRACKED && key.len() <= wire::MAX_KEY_BYTES {
            counts.insert(key.into(), 1);
        }
    }

    /// The `n` most-read keys, hottest first. Counts halve at each call, so a key stays hot for a few
    /// reports after its reads stop, and a new favourite overtakes an old one quickly.
    pub fn take_hottest(&self, n: usize) -> Vec<HotKey> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let mut hottest: Vec<HotKey> = counts
            .iter()
            .map(|(key, &reads)| HotKey {
                key: key.to_string(),
                reads,
            })
            .collect();
        counts.retain(|_, reads| {
            *reads /= 2;
            *reads > 0
        });
        drop(counts);
        hottest.sort_unstable_by(|a, b| b.reads.cmp(&a.reads).then_with(|| a.key.cmp(&b.key)));
        hottest.truncate(n);
        hottest
    }
}

/// What the proxy needs to know about the control plane, shared with the client.
pub struct ControlState {
    /// Reads per key, for the next stats report.
    pub hot_keys: HotKeys,
    staleness_bound_ms: u64,
    /// When the process started or, once caught up with an origin, the last frame received from it
    /// (unix ms): the staleness bound runs from here.
    last_contact_ms: AtomicU64,
    metrics: &'static Metrics,
}

impl ControlState {
    pub fn new(staleness_bound: Duration, now: SystemTime, metrics: &'static Metrics) -> Self {
        Self {
            hot_keys: HotKeys::default(),
            staleness_bound_ms: millis(staleness_bound),
            last_contact_ms: AtomicU64::new(unix_ms(now)),
            metrics,
        }
    }

    /// Records contact with an origin the edge is caught up with.
    pub fn touch(&self, now: SystemTime) {
        let previous = self.last_contact_ms.fetch_max(unix_ms(now), Ordering::Relaxed);
        let latest = previous.max(unix_ms(now));
        self.metrics.control_last_contact.set(latest as f64 / 1000.0);
        self.metrics.control_stale_serving.set(0);
    }

    /// Whether the edge has been out of contact longer than the staleness bound: hits must then be
    /// revalidated. Also publishes the answer as `edge_control_stale_serving`.
    pub fn cut_off(&self, now: SystemTime) -> bool {
        let silent = unix_ms(now).saturating_sub(self.last_contact_ms.load(Ordering::Relaxed));
        let cut_off = silent > self.staleness_bound_ms;
        self.metrics.control_stale_serving.set(i64::from(cut_off));
        cut_off
    }
}

/// Why a control connection is closed by the edge (or was by the origin).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("the origin chose protocol version {0}, which this edge did not offer")]
    Version(u16),
    #[error("the origin sent a second welcome")]
    UnexpectedWelcome,
    #[error("invalidation {received} arrived while {expected} was expected next")]
    Gap { expected: u64, received: u64 },
    #[error("the origin said goodbye ({code}): {message}", code = .code.as_str())]
    Goodbye { code: GoodbyeCode, message: String },
}

/// The edge's position in the invalidation log, across connections, and what each origin message
/// does to it and to the cache. `purge` applies one selector to the cache.
#[derive(Debug, Default)]
pub struct Protocol {
    last_applied: Option<u64>,
    /// The newest sequence the origin announced: its head at the welcome, or the last one it sent.
    newest_known: Option<u64>,
}

impl Protocol {
    /// The last sequence applied, for the next `Hello`.
    pub fn last_applied(&self) -> Option<u64> {
        self.last_applied
    }

    /// Whether a pushed response may be stored now: the origin sends it after the invalidations it
    /// follows, so one ahead of what is applied breaks the protocol's order and is not stored.
    pub fn admits(&self, warm: &Warm) -> bool {
        warm.sequence.is_none_or(|sequence| Some(sequence) <= self.last_applied)
    }

    /// Applies a `Welcome`; returns the sequence the edge is caught up once it has applied (`None`:
    /// caught up now).
    pub fn welcome(
        &mut self,
        welcome: &Welcome,
        purge: &mut impl FnMut(&Selector, PurgeMode),
    ) -> Result<Option<u64>, ProtocolError> {
        if !SUPPORTED_VERSIONS.contains(&welcome.version) {
            return Err(ProtocolError::Version(welcome.version));
        }
        // A new connection, possibly to an origin of a reset log: what it says replaces what was known.
        self.newest_known = welcome.head;
        if let Some(reason) = welcome.drop_all {
            tracing::warn!(reason = reason.as_str(), head = ?welcome.head, "the origin asks to drop the whole cache");
            purge(&Selector::All, PurgeMode::Hard);
            self.set_applied(welcome.head);
        }
        if self.last_applied.is_none() {
            // A fresh cache holds nothing any earlier invalidation could concern: it starts at the head
            // (0 for an empty log), so that after a reconnect it is replayed what came since.
            self.set_applied(Some(welcome.head.unwrap_or(0)));
        }
        self.publish();
        Ok(welcome.head.filter(|head| Some(*head) > self.last_applied))
    }

    /// Applies one message after the `Welcome`; returns the answer to send, if any.
    pub fn receive(
        &mut self,
        message: OriginMessage,
        purge: &mut impl FnMut(&Selector, PurgeMode),
    ) -> Result<Option<EdgeMessage>, ProtocolError> {
        match message {
            OriginMessage::Welcome(_) => Err(ProtocolError::UnexpectedWelcome),
            OriginMessage::Invalidate(invalidate) => {
                self.newest_known = self.newest_known.max(Some(invalidate.sequence));
                self.invalidate(&invalidate, purge)
            }
            OriginMessage::DropAll(DropAll { sequence, reason }) => {
                tracing::warn!(
                    reason = reason.as_str(),
                    sequence,
                    "the origin asks to drop the whole cache"
                );
                purge(&Selector::All, PurgeMode::Hard);
                self.newest_known = self.newest_known.max(Some(sequence));
                self.set_applied(Some(sequence));
                Metrics::global().control_invalidations_applied.inc();
                Ok(Some(EdgeMessage::Ack(Ack { sequence })))
            }
            OriginMessage::Heartbeat(heartbeat) if !heartbeat.reply => Ok(Some(EdgeMessage::Heartbeat(Heartbeat {
                reply: true,
                ..heartbeat
            }))),
            OriginMessage::Heartbeat(_) => Ok(None),
            // Stored by the client, which holds the cache (see `admits`); nothing to answer.
            OriginMessage::Warm(_) => Ok(None),
            OriginMessage::Goodbye(goodbye) => Err(ProtocolError::Goodbye {
                code: goodbye.code,
                message: goodbye.message,
            }),
        }
    }

    fn invalidate(
        &mut self,
        invalidate: &Invalidate,
        purge: &mut impl FnMut(&Selector, PurgeMode),
    ) -> Result<Option<EdgeMessage>, ProtocolError> {
        let sequence = invalidate.sequence;
        let expected = self.last_applied.map_or(1, |last| last.saturating_add(1));
        if sequence < expected {
            // Already applied (a replay overlapping what arrived live): confirm it again.
            return Ok(Some(EdgeMessage::Ack(Ack { sequence })));
        }
        if sequence > expected {
            return Err(ProtocolError::Gap {
                expected,
                received: sequence,
            });
        }
        let mode = if invalidate.soft {
            PurgeMode::Soft
        } else {
            PurgeMode::Hard
        };
        for selector in &invalidate.selectors {
            purge(&edge_selector(selector), mode);
        }
        self.set_applied(Some(sequence));
        Metrics::global().control_invalidations_applied.inc();
        Ok(Some(EdgeMessage::Ack(Ack { sequence })))
    }

    /// Invalidations announced and not applied yet.
    pub fn lag(&self) -> u64 {
        self.newest_known
            .unwrap_or(0)
            .saturating_sub(self.last_applied.unwrap_or(0))
    }

    fn set_applied(&mut self, sequence: Option<u64>) {
        self.last_applied = sequence;
        self.publish();
    }

    fn publish(&self) {
        let metrics = Metrics::global();
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        metrics.control_last_applied.set(self.last_applied.map_or(0, gauge));
        metrics.control_lag.set(gauge(self.lag()));
    }
}

#[cfg(test)]
mod tests {
    use shared::domain::ModelRef;
    use shared::wire::{DropReason, Goodbye, Warm};

    use super::*;

    type Purged = Vec<(Selector, PurgeMode)>;

    fn recorder(purged: &mut Purged) -> impl FnMut(&Selector, PurgeMode) + '_ {
        |selector, mode| purged.push((selector.clone(), mode))
    }

    fn invalidate(sequence: u64, selectors: Vec<wire::Selector>, soft: bool) -> OriginMessage {
        OriginMessage::Invalidate(Invalidate {
            sequence,
            selectors,
            soft,
            issued_at_ms: 0,
        })
    }

    fn welcome(head: Option<u64>, drop_all: Option<DropReason>) -> Welcome {
        Welcome {
            version: 1,
            origin: "origin-1".into(),
            head,
            drop_all,
        }
    }

    #[test]
    fn wire_selectors_map_to_edge_selectors_and_models_to_the_origins_tags() {
        let model = ModelRef::new("lstm", "3.2.0").unwrap();
        assert_eq!(
            edge_selector(&wire::Selector::Model(model)),
            Selector::Tag("model:lstm@3.2.0".into())
        );
        assert_eq!(
            edge_selector(&wire::Selector::Key("/a".into())),
            Selector::Key("/a".into())
        );
        assert_eq!(
            edge_selector(&wire::Selector::Prefix("/a".into())),
            Selector::Prefix("/a".into())
        );
        assert_eq!(
            edge_selector(&wire::Selector::Tag("AAPL".into())),
            Selector::Tag("AAPL".into())
        );
        assert_eq!(edge_selector(&wire::Selector::All), Selector::All);
    }

    #[test]
    fn a_fresh_cache_starts_at_the_head() {
        let mut protocol = Protocol::default();
        let mut purged = Purged::new();
        assert_eq!(
            protocol.welcome(&welcome(Some(5), None), &mut recorder(&mut purged)),
            Ok(None)
        );
        assert_eq!(protocol.last_applied(), Some(5));
        assert!(purged.is_empty());
        let answer = protocol.receive(
            invalidate(6, vec![wire::Selector::All], false),
            &mut recorder(&mut purged),
        );
        assert_eq!(answer, Ok(Some(EdgeMessage::Ack(Ack { sequence: 6 }))));
    }

    #[test]
    fn invalidations_are_applied_in_order_acked_and_replays_skipped() {
        let mut protocol = Protocol::default();
        let mut purged = Purged::new();
        // Started on an empty log, then reconnected once two invalidations were logged: replay 1..=2.
        assert_eq!(
            protocol.welcome(&welcome(None, None), &mut recorder(&mut purged)),
            Ok(None)
        );
        assert_eq!(protocol.last_applied(), Some(0));
        assert_eq!(
            protocol.welcome(&welcome(Some(2), None), &mut recorder(&mut purged)),
            Ok(Some(2))
        );
        let answer = protocol.receive(
            invalidate(
                1,
                vec![wire::Selector::Key("/a".into()), wire::Selector::Tag("T".into())],
                false,
            ),
            &mut recorder(&mut purged),
        );
        assert_eq!(answer, Ok(Some(EdgeMessage::Ack(Ack { sequence: 1 }))));
        let answer = protocol.receive(
            invalidate(2, vec![wire::Selector::Key("/b".into())], true),
            &mut recorder(&mut purged),
        );
        assert_eq!(answer, Ok(Some(EdgeMessage::Ack(Ack { sequence: 2 }))));
        assert_eq!(
            purged,
            [
                (Selector::Key("/a".into()), PurgeMode::Hard),
                (Selector::Tag("T".into()), PurgeMode::Hard),
                (Selector::Key("/b".into()), PurgeMode::Soft),
            ]
        );
        // A replay of what is applied is acknowledged and not applied again.
        let answer = protocol.receive(
            invalidate(2, vec![wire::Selector::All], false),
            &mut recorder(&mut purged),
        );
        assert_eq!(answer, Ok(Some(EdgeMessage::Ack(Ack { sequence: 2 }))));
        assert_eq!(purged.len(), 3);
        assert_eq!(protocol.last_applied(), Some(2));
        assert_eq!(
            protocol.welcome(&welcome(Some(2), None), &mut recorder(&mut purged)),
            Ok(None)
        );
    }

    #[test]
    fn the_lag_is_what_the_origin_announced_and_is_not_applied_yet() {
        let mut protocol = Protocol::default();
        let mut purged = Purged::new();
        protocol
            .welcome(&welcome(None, None), &mut recorder(&mut purged))
            .unwrap();
        assert_eq!(
            protocol.welcome(&welcome(Some(3), None), &mut recorder(&mut purged)),
            Ok(Some(3))
        );
        assert_eq!(protocol.lag(), 3);
        protocol
            .receive(
                invalidate(1, vec![wire::Selector::All], false),
                &mut recorder(&mut purged),
            )
            .unwrap();
        assert_eq!(protocol.lag(), 2);
        for sequence in [2, 3] {
            protocol
                .receive(
                    invalidate(sequence, vec![wire::Selector::All], false),
                    &mut recorder(&mut purged),
                )
                .unwrap();
        }
        assert_eq!(protocol.lag(), 0);
    }

    #[test]
    fn a_gap_in_sequences_is_a_protocol_error() {
        let mut protocol = Protocol::default();
        let mut purged = Purged::new();
        let answer = protocol.receive(
            invalidate(2, vec![wire::Selector::All], false),
            &mut recorder(&mut purged),
        );
        assert_eq!(
            answer,
            Err(ProtocolError::Gap {
                expected: 1,
                received: 2
            })
        );
        assert!(purged.is_empty());
        assert_eq!(protocol.last_applied(), None);
    }

    #[test]
    fn drop_all_purges_everything_and_moves_to_its_sequence() {
        let mut protocol = Protocol::default();
        let mut purged = Purged::new();
        let caught_up_at = protocol.welcome(
            &welcome(Some(40), Some(DropReason::Trimmed)),
            &mut recorder(&mut purged),
        );
        assert_eq!(caught_up_at, Ok(None));
        assert_eq!(protocol.last_applied(), Some(40));
        let answer = protocol.receive(
            OriginMessage::DropAll(DropAll {
                sequence: 41,
                reason: DropReason::LogReset,
            }),
            &mut recorder(&mut purged),
        );
        assert_eq!(answer, Ok(Some(EdgeMessage::Ack(Ack { sequence: 41 }))));
        assert_eq!(
            purged,
            [(Selector::All, PurgeMode::Hard), (Selector::All, PurgeMode::Hard)]
        );
        assert_eq!(protocol.last_applied(), Some(41));
    }

    #[test]
    fn heartbeats_are_answered_once_and_goodbyes_and_second_welcomes_end_the_connection() {
        let mut protocol = Protocol::default();
        let mut purged = Purged::new();
        let ping = Heartbeat {
            sent_at_ms: 7,
            reply: false,
        };
        assert_eq!(
            protocol.receive(OriginMessage::Heartbeat(ping), &mut recorder(&mut purged)),
            Ok(Some(EdgeMessage::Heartbeat(Heartbeat {
                sent_at_ms: 7,
                reply: true
            })))
        );
        let pong = Heartbeat {
            sent_at_ms: 7,
            reply: true,
        };
        assert_eq!(
            protocol.receive(OriginMessage::Heartbeat(pong), &mut recorder(&mut purged)),
            Ok(None)
        );
        let warm = Warm {
            sequence: None,
            key: "/a".into(),
            status: 200,
            headers: Vec::new(),
            body: Vec::new(),
        };
        assert_eq!(
            protocol.receive(OriginMessage::Warm(warm), &mut recorder(&mut purged)),
            Ok(None)
        );
        let goodbye = Goodbye {
            code: GoodbyeCode::Shutdown,
            message: "bye".into(),
        };
        assert!(matches!(
            protocol.receive(OriginMessage::Goodbye(goodbye), &mut recorder(&mut purged)),
            Err(ProtocolError::Goodbye {
                code: GoodbyeCode::Shutdown,
                ..
            })
        ));
        assert_eq!(
            protocol.receive(OriginMessage::Welcome(welcome(None, None)), &mut recorder(&mut purged)),
            Err(ProtocolError::UnexpectedWelcome)
        );
        let mut other = welcome(None, None);
        other.version = 99;
        assert_eq!(
            protocol.welcome(&other, &mut recorder(&mut purged)),
            Err(ProtocolError::Version(99))
        );
        assert!(purged.is_empty());
    }

    #[test]
    fn a_push_is_stored_only_once_the_invalidation_it_follows_is_applied() {
        let mut protocol = Protocol::default();
        let warm = |sequence| Warm {
            sequence,
            key: "/a".into(),
            status: 200,
            headers: Vec::new(),
            body: Vec::new(),
        };
        assert!(!protocol.admits(&warm(Some(1))));
        assert!(protocol.admits(&warm(None)));
        protocol.welcome(&welcome(Some(3), None), &mut |_, _| {}).unwrap();
        assert!(protocol.admits(&warm(Some(3))));
        assert!(!protocol.admits(&warm(Some(4))));
    }

    #[test]
    fn the_hottest_keys_come_first_and_cool_down_report_by_report() {
        let hot = HotKeys::default();
        for (key, reads) in [("/a", 1), ("/b", 4), ("/c", 2)] {
            (0..reads).for_each(|_| hot.record(key));
        }
        let keys = |hottest: Vec<HotKey>| hottest.into_iter().map(|h| (h.key, h.reads)).collect::<Vec<_>>();
        assert_eq!(keys(hot.take_hottest(2)), [("/b".into(), 4), ("/c".into(), 2)]);
        assert_eq!(keys(hot.take_hottest(5)), [("/b".into(), 2), ("/c".into(), 1)]);
        hot.record("/a");
        assert_eq!(keys(hot.take_hottest(5)), [("/a".into(), 1), ("/b".into(), 1)]);
        assert_eq!(keys(hot.take_hottest(5)), []);
    }

    #[test]
    fn the_staleness_bound_runs_from_start_then_from_the_last_contact() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let state = ControlState::new(Duration::from_secs(30), start, Metrics::global());
        assert!(!state.cut_off(start + Duration::from_secs(30)));
        assert!(state.cut_off(start + Duration::from_secs(31)));
        state.touch(start + Duration::from_secs(40));
        assert!(!state.cut_off(start + Duration::from_secs(60)));
        // A late, older contact does not move the clock back.
        state.touch(start + Duration::from_secs(10));
        assert!(state.cut_off(start + Duration::from_secs(71)));
    }
}
