//! Warming: pushing responses to edges before anyone asks, so that the next read is a hit.
//!
//! A push is rendered as the read API renders the same path ([`Forecasts::read`]: exactly what an edge
//! would fetch), read from storage rather than from the L1 cache (which may lag changes made through
//! other origins), and carries the newest invalidation sequence at the time of rendering. Each control connection sends it after every
//! invalidation up to that sequence, on the same ordered stream: an edge can neither store it before
//! the purge it follows nor after a later one.
//!
//! What is pushed:
//! * after a forecast changes (write, delete, rollback, model rollback, as [`Forecasts::changes`] tells), the paths that include it (`/v1/forecasts/{instrument}/{timeframe}` and
//!   `/v1/forecasts/{instrument}`) that are configured hot or that an edge reported among its hottest;
//! * on demand (`POST /admin/v1/warm`), given paths and prefixes;
//! * on a schedule (`[[warming.schedule]]`), before sessions open.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::http::header::CONTENT_LENGTH;
use serde::Serialize;
use shared::domain::{ForecastKey, Instrument, Timeframe};
use shared::wire::{MAX_WARM_BODY_BYTES, OriginMessage, Warm};
use time::{OffsetDateTime, Weekday};
use tokio::sync::broadcast;
use utoipa::ToSchema;

use crate::config::{WarmSchedule, WarmingConfig};
use crate::control::Edges;
use crate::forecasts::Forecasts;
use crate::reads::{Read, Through};
use crate::representation::CachePolicy;
use crate::storage::Result;
use crate::tasks::Tasks;

/// Pushes waiting for a slow connection; beyond this it skips the oldest (warming is only a head start).
const PUSHES_QUEUED: usize = 1024;
/// Prefixes below this name instruments.
const FORECASTS: &str = "/v1/forecasts/";

/// What warming reads and renders with, as the read API does.
#[derive(Debug)]
pub struct Renderer {
    pub forecasts: Arc<Forecasts>,
    pub policy: CachePolicy,
    /// Whether reads need no token: otherwise a read is answered to its reader only, and nothing is pushed.
    pub public_reads: bool,
    pub max_batch_reads: usize,
}

#[derive(Debug)]
pub struct Warming {
    pushes: broadcast::Sender<Arc<OriginMessage>>,
    hot_keys: Vec<String>,
    edge_hot_keys: bool,
    edges: Edges,
    renderer: Renderer,
    tasks: Tasks,
}

/// What became of one path asked to be warmed.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Warmed {
    pub key: String,
    /// The origin's status for it; only 200 responses are pushed.
    pub status: u16,
    pub pushed: bool,
    pub bytes: usize,
}

impl Warming {
    pub fn new(config: &WarmingConfig, edges: Edges, renderer: Renderer, tasks: Tasks) -> Arc<Self> {
        Arc::new(Self {
            pushes: broadcast::Sender::new(PUSHES_QUEUED),
            hot_keys: config.hot_keys.clone(),
            edge_hot_keys: config.edge_hot_keys,
            edges,
            renderer,
            tasks,
        })
    }

    /// Pushes to come, for one control connection.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<OriginMessage>> {
        self.pushes.subscribe()
    }

    /// The paths to push after a change of `key`: those including it that are configured hot, or that
    /// an edge reported among its hottest.
    fn hot_paths_of(&self, key: &ForecastKey) -> Vec<String> {
        let reported = if self.edge_hot_keys {
            self.edges.hottest()
        } else {
            Vec::new()
        };
        [
            format!("{FORECASTS}{}/{}", key.instrument, key.timeframe),
            format!("{FORECASTS}{}", key.instrument),
        ]
        .into_iter()
        .filter(|path| self.hot_keys.contains(path) || reported.contains(path))
        .collect()
    }

    /// The paths a set of keys and prefixes asks for: the keys themselves; for each prefix, the hot
    /// keys (configured or reported) under it and, when it names an instrument, the instrument's list
    /// and each of its timeframes.
    fn expand(&self, keys: &[String], prefixes: &[String]) -> Vec<String> {
        let mut paths = keys.to_vec();
        let reported = self.edges.hottest();
        for prefix in prefixes {
            let hot = self.hot_keys.iter().chain(&reported);
            paths.extend(hot.filter(|key| key.starts_with(prefix.as_str())).cloned());
            let named = prefix.strip_prefix(FORECASTS).map(|rest| rest.trim_end_matches('/'));
            if let Some(instrument) = named.and_then(|name| name.parse::<Instrument>().ok()) {
                paths.push(format!("{FORECASTS}{instrument}"));
                paths.extend(Timeframe::ALL.iter().map(|tf| format!("{FORECASTS}{instrument}/{tf}")));
            }
        }
        let mut seen = std::collections::HashSet::new();
        paths.retain(|path| seen.insert(path.clone()));
        paths
    }
}

impl Warming {
    /// Follows the forecasts' changes (a task of the origin): after each, once its invalidation is in
    /// the log, pushes the hot paths that include it. Changes that came together (a batch, a model
    /// rollback) are pushed together; the changes' answers never wait for edges.
    pub async fn follow(self: Arc<Self>, mut changes: broadcast::Receiver<ForecastKey>) {
        loop {
            let first = match changes.recv().await {
                Ok(key) => key,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "warming fell behind the changes; pushes for some were skipped");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let mut keys = vec![first];
            while let Ok(key) = changes.try_recv() {
                keys.push(key);
            }
            self.after_change(&keys);
        }
    }

    /// Pushes the hot paths that include `keys`, in the background.
    fn after_change(self: &Arc<Self>, keys: &[ForecastKey]) {
        let mut paths: Vec<String> = keys.iter().flat_map(|key| self.hot_paths_of(key)).collect();
        paths.sort_unstable();
        paths.dedup();
        if paths.is_empty() || self.pushes.receiver_count() == 0 {
            return;
        }
        let warming = self.clone();
        self.tasks.spawn(async move {
            if let Err(error) = warming.push(&paths).await {
                tracing::debug!(%error, "warming after a change skipped: the log is unreadable");
            }
        });
    }

    /// Renders `keys` and the paths `prefixes` name, and pushes each 200 response to every connected edge.
    pub async fn on_demand(&self, keys: &[String], prefixes: &[String]) -> Result<Vec<Warmed>> {
        let paths = self.expand(keys, prefixes);
        self.push(&paths).await
    }

    async fn push(&self, paths: &[String]) -> Result<Vec<Warmed>> {
        // Read before rendering: the responses are at least this recent.
        let sequence = self
            .renderer
            .forecasts
            .invalidation_log(None, NonZeroUsize::MIN)
            .await?
            .head;
        let mut warmed = Vec::with_capacity(paths.len());
        for path in paths {
            let (status, warm) = self.renderer.render(path, sequence).await;
            let bytes = warm.as_ref().map_or(0, |warm| warm.body.len());
            if let Some(warm) = warm {
                // No receiver: no edge is connected, nothing to do.
                let _ = self.pushes.send(Arc::new(OriginMessage::Warm(warm)));
            }
            warmed.push(Warmed {
                key: path.clone(),
                status: status.as_u16(),
                pushed: status == StatusCode::OK && bytes <= MAX_WARM_BODY_BYTES,
                bytes,
            });
        }
        Ok(warmed)
    }
}

impl Renderer {
    /// The read API's answer to `GET path` from an edge (no token, no validators), as a push when it is
    /// a 200 that fits one.
    async fn render(&self, path: &str, sequence: Option<u64>) -> (StatusCode, Option<Warm>) {
        let Some(read) = Read::parse(path, self.max_batch_reads) else {
            return (StatusCode::NOT_FOUND, None);
        };
        if !self.public_reads {
            return (StatusCode::UNAUTHORIZED, None);
        }
        let representation = match read {
            Ok(read) => self.forecasts.read(&read, Through::Store).await,
            Err(error) => Err(error),
        };
        let representation = match representation {
            Ok(representation) => representation,
            Err(error) => return (error.status(), None),
        };
        let mut headers: Vec<(String, Vec<u8>)> = representation
            .headers(&self.policy, std::time::SystemTime::now())
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect();
        // Added when a response is written out; a push is never written out.
        let body = representation.body;
        headers.push((CONTENT_LENGTH.as_str().to_owned(), body.len().to_string().into_bytes()));
        let warm = Warm {
            sequence,
            key: path.to_owned(),
            status: StatusCode::OK.as_u16(),
            headers,
            body: body.to_vec(),
        };
        (StatusCode::OK, warm.validate().is_ok().then_some(warm))
    }
}

/// Warms each schedule entry at its time, every day it names, until the runtime stops.
pub async fn run_schedule(warming: Arc<Warming>, schedule: Vec<WarmSchedule>) {
    if schedule.is_empty() {
        return;
    }
    loop {
        let now = OffsetDateTime::now_utc();
        let Some((wait, entry)) = schedule
            .iter()
            .filter_map(|entry| next_occurrence(entry, now).map(|at| (at - now, entry)))
            .min_by_key(|(wait, _)| *wait)
        else {
            return;
        };
        tokio::time::sleep(Duration::try_from(wait).unwrap_or_default()).await;
        match warming.on_demand(&entry.keys, &entry.prefixes).await {
            Ok(warmed) => {
                let pushed = warmed.iter().filter(|w| w.pushed).count();
                tracing::info!(at = %entry.at, pushed, "scheduled warming");
            }
            Err(error) => tracing::warn!(at = %entry.at, %error, "scheduled warming failed"),
        }
        // Past the minute, so the same entry is not taken twice.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The next instant after `now` at which `entry` is due (UTC), within a week.
fn next_occurrence(entry: &WarmSchedule, now: OffsetDateTime) -> Option<OffsetDateTime> {
    (0..=7)
        .map(|days| (now + time::Duration::days(days)).replace_time(entry.time()))
        .find(|at| *at > now && entry.days.contains(&at.weekday()))
}

/// `mon`…`sun` as weekdays.
pub fn weekday(name: &str) -> Option<Weekday> {
    Some(match name {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn entry(at: &str, days: &[&str]) -> WarmSchedule {
        WarmSchedule::parse(at, days, Vec::new(), vec!["/v1/forecasts/AAPL".into()]).unwrap()
    }

    #[test]
    fn the_next_occurrence_skips_the_days_not_named() {
        let weekdays = entry("13:25", &["mon", "tue", "wed", "thu", "fri"]);
        // Friday after the time: next Monday.
        let friday = datetime!(2026-11-27 14:00 UTC);
        assert_eq!(
            next_occurrence(&weekdays, friday),
            Some(datetime!(2026-11-30 13:25 UTC))
        );
        // Friday before the time: today.
        let morning = datetime!(2026-11-27 09:00 UTC);
        assert_eq!(
            next_occurrence(&weekdays, morning),
            Some(datetime!(2026-11-27 13:25 UTC))
        );
        let sundays = entry("00:00", &["sun"]);
        assert_eq!(next_occurrence(&sundays, friday), Some(datetime!(2026-11-29 00:00 UTC)));
    }

    #[test]
    fn schedules_are_refused_with_what_to_fix() {
        let refused =
            |at: &str, days: &[&str]| WarmSchedule::parse(at, days, Vec::new(), vec!["/x".into()]).unwrap_err();
        assert!(refused("25:00", &["mon"]).contains("HH:MM"));
        assert!(refused("13:25", &["monday"]).contains("mon"));
        assert!(refused("13:25", &[]).contains("day"));
        let nothing = WarmSchedule::parse("13:25", &["mon"], Vec::new(), Vec::new()).unwrap_err();
        assert!(nothing.contains("keys or prefixes"), "{nothing}");
    }
}
