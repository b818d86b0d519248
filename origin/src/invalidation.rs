//! Invalidations: what edges must purge, in the admin API's JSON form and in the control plane's.
//!
//! Every invalidation is appended to the durable log of [`crate::storage`] and numbered there; the
//! numbers are what edges acknowledge and resume from. This module holds the rules that need no
//! storage: which selectors a request may name, the tag that covers a forecast, why one was issued.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus::IntGauge;
use serde::{Deserialize, Serialize};
use shared::domain::{ForecastKey, ModelRef};
use shared::wire::{Invalid, Invalidate, MAX_KEY_BYTES, MAX_SELECTORS, Selector};
use utoipa::ToSchema;

use crate::forecasts::Forecasts;

/// Why an invalidation was issued. Bounded, so it can be a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// `POST /admin/v1/invalidations`.
    Api,
    /// A forecast write, alone or in a batch.
    Write,
    Delete,
    Rollback,
    ModelRollback,
}

impl Cause {
    pub const ALL: [Cause; 5] = [
        Self::Api,
        Self::Write,
        Self::Delete,
        Self::Rollback,
        Self::ModelRollback,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Write => "write",
            Self::Delete => "delete",
            Self::Rollback => "rollback",
            Self::ModelRollback => "model_rollback",
        }
    }
}

/// The surrogate tag of a forecast, such as `AAPL:1h`. Every response that includes the forecast carries
/// it (the forecast's own URL, its versions, its instrument's list, batches that ask for it, found or
/// missing), so one hard invalidation of this tag is what a change of the forecast needs.
pub fn forecast_tag(key: &ForecastKey) -> String {
    key.to_string()
}

/// An invalidation as the admin API reads and shows it: every list may be left out, and at least one
/// selector is needed. An edge purges an entry when any selector matches it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "keys": ["/v1/forecasts/AAPL/1h"], "prefixes": ["/v1/forecasts/MSFT"], "tags": ["AAPL"],
    "models": [{"id": "lstm", "version": "3.2.0"}], "all": false, "soft": false
}))]
pub struct InvalidationBody {
    /// Logical keys: path and query, such as `/v1/forecasts/AAPL/1h` (every variant of each).
    #[serde(default)]
    #[schema(schema_with = request_paths)]
    pub keys: Vec<String>,
    /// Every logical key that starts with one of these, such as `/v1/forecasts/MSFT`.
    #[serde(default)]
    #[schema(schema_with = request_paths)]
    pub prefixes: Vec<String>,
    /// Surrogate tags, as in `Surrogate-Key`: an instrument (`AAPL`), a forecast (`AAPL:1h`), a model
    /// (`model:lstm`, `model:lstm@3.2.0`).
    #[serde(default)]
    #[schema(schema_with = surrogate_tags)]
    pub tags: Vec<String>,
    /// Everything a model version produced: the responses tagged `model:{id}@{version}`.
    #[serde(default)]
    #[schema(schema_with = models)]
    pub models: Vec<ModelRef>,
    /// Everything; the other selectors are then left out, as they are redundant.
    #[serde(default)]
    pub all: bool,
    /// Mark stale instead of deleting: the next read revalidates, and may be served stale meanwhile.
    #[serde(default)]
    pub soft: bool,
}

/// Why the selectors of a request were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("an invalidation needs at least one selector: keys, prefixes, tags, models, or \"all\": true")]
    Missing,
    #[error("{field}[{index}] must start with / and hold only visible ASCII: a path and query as requested")]
    NotAPath { field: &'static str, index: usize },
    #[error("tags[{index}] must hold only visible ASCII, without spaces: one token of Surrogate-Key")]
    NotATag { index: usize },
    #[error(transparent)]
    Limit(#[from] Invalid),
}

fn visible_ascii(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_graphic())
}

/// A path and query as requested: `/` and visible ASCII.
pub const REQUEST_PATH_PATTERN: &str = "^/[\\x21-\\x7e]*$";

/// A list of request paths, as the selectors and warming take them. At most [`MAX_SELECTORS`] in each
/// list (and in all lists together, which a schema cannot say).
pub fn request_paths() -> utoipa::openapi::schema::Array {
    shared::openapi::list(
        shared::openapi::text(REQUEST_PATH_PATTERN, MAX_KEY_BYTES),
        0,
        MAX_SELECTORS,
    )
    .build()
}

fn models() -> utoipa::openapi::schema::Array {
    shared::openapi::list(utoipa::openapi::Ref::from_schema_name("ModelRef"), 0, MAX_SELECTORS).build()
}

fn surrogate_tags() -> utoipa::openapi::schema::Array {
    shared::openapi::list(
        shared::openapi::text("^[\\x21-\\x7e]+$", MAX_KEY_BYTES),
        0,
        MAX_SELECTORS,
    )
    .build()
}

impl InvalidationBody {
    /// The control-plane selectors, checked against the protocol's limits. With `all`, only
    /// [`Selector::All`], once everything given was checked.
    pub fn selectors(&self) -> Result<Vec<Selector>, SelectorError> {
        let mut selectors: Vec<Selector> = self
            .keys
            .iter()
            .cloned()
            .map(Selector::Key)
            .chain(self.prefixes.iter().cloned().map(Selector::Prefix))
            .chain(self.tags.iter().cloned().map(Selector::Tag))
            .chain(self.models.iter().cloned().map(Selector::Model))
            .chain(self.all.then_some(Selector::All))
            .collect();
        if selectors.is_empty() {
            return Err(SelectorError::Missing);
        }
        let message = Invalidate {
            sequence: 0,
            selectors,
            soft: self.soft,
            issued_at_ms: 0,
        };
        message.validate()?;
        for (field, paths) in [("keys", &self.keys), ("prefixes", &self.prefixes)] {
            if let Some(index) = paths.iter().position(|p| !p.starts_with('/') || !visible_ascii(p)) {
                return Err(SelectorError::NotAPath { field, index });
            }
        }
        if let Some(index) = self.tags.iter().position(|t| !visible_ascii(t)) {
            return Err(SelectorError::NotATag { index });
        }
        selectors = message.selectors;
        if self.all {
            selectors = vec![Selector::All];
        }
        Ok(selectors)
    }

    /// The JSON form of a logged invalidation's selectors.
    pub fn from_message(message: &Invalidate) -> Self {
        let mut body = Self {
            soft: message.soft,
            ..Self::default()
        };
        for selector in &message.selectors {
            match selector {
                Selector::Key(key) => body.keys.push(key.clone()),
                Selector::Prefix(prefix) => body.prefixes.push(prefix.clone()),
                Selector::Tag(tag) => body.tags.push(tag.clone()),
                Selector::Model(model) => body.models.push(model.clone()),
                Selector::All => body.all = true,
            }
        }
        body
    }
}

/// The `origin_invalidation_log_head` gauge: the highest sequence this origin has appended or read.
/// Appends finish out of order, so it only moves up.
#[derive(Debug)]
pub struct HeadGauge {
    gauge: IntGauge,
    highest: Mutex<u64>,
}

impl HeadGauge {
    pub fn new(gauge: IntGauge) -> Self {
        Self {
            gauge,
            highest: Mutex::new(0),
        }
    }

    pub fn observe(&self, sequence: u64) {
        // A panic elsewhere cannot leave the number half-written: the poisoned value is still good.
        let mut highest = self.highest.lock().unwrap_or_else(PoisonError::into_inner);
        if sequence > *highest {
            *highest = sequence;
            self.gauge.set(i64::try_from(sequence).unwrap_or(i64::MAX));
        }
    }
}

/// Keeps this origin's L1 cache in step with changes made through other origins sharing the log: reads
/// the log every `interval` from its head at start, and applies each invalidation to the L1. Runs until
/// the origin stops; a failed read is retried at the next tick.
pub async fn follow_into_l1(forecasts: Arc<Forecasts>, interval: Duration) {
    let mut after = match forecasts.invalidation_log(None, NonZeroUsize::MIN).await {
        Ok(page) => page.head,
        Err(_) => None,
    };
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        let page = match forecasts.invalidation_log(after, FOLLOW_PAGE).await {
            Ok(page) => page,
            Err(error) => {
                tracing::debug!(%error, "invalidation log not readable; the L1 cache follows it at the next tick");
                continue;
            }
        };
        if page.trimmed {
            // Invalidations were missed: nothing in the L1 cache can be trusted to be current.
            forecasts.clear_l1();
            after = page.head;
            continue;
        }
        for record in &page.records {
            forecasts.apply_to_l1(record);
            after = Some(record.sequence);
        }
    }
}

/// Invalidations read at a time by [`follow_into_l1`].
const FOLLOW_PAGE: NonZeroUsize = NonZeroUsize::new(1000).expect("non-zero");

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: serde_json::Value) -> InvalidationBody {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_issue_example_becomes_one_selector_each() {
        let example = body(serde_json::json!({
            "keys": ["/v1/forecasts/AAPL/1h"], "prefixes": ["/v1/forecasts/MSFT"], "tags": ["AAPL"],
            "models": [{"id": "lstm", "version": "3.2.0"}], "all": false, "soft": false
        }));
        let selectors = example.selectors().unwrap();
        assert_eq!(
            selectors,
            [
                Selector::Key("/v1/forecasts/AAPL/1h".into()),
                Selector::Prefix("/v1/forecasts/MSFT".into()),
                Selector::Tag("AAPL".into()),
                Selector::Model(ModelRef::new("lstm", "3.2.0").unwrap()),
            ]
        );
        let logged = Invalidate {
            sequence: 7,
            selectors,
            soft: false,
            issued_at_ms: 1,
        };
        assert_eq!(InvalidationBody::from_message(&logged), example);
    }

    #[test]
    fn all_stands_alone() {
        let everything = body(serde_json::json!({"all": true, "tags": ["AAPL"], "soft": true}));
        assert_eq!(everything.selectors().unwrap(), [Selector::All]);
        let bad_beside_all = body(serde_json::json!({"all": true, "tags": [""]}));
        assert!(bad_beside_all.selectors().is_err());
    }

    #[test]
    fn selectors_are_refused_with_what_to_fix() {
        let refused = |json| body(json).selectors().unwrap_err();
        assert_eq!(refused(serde_json::json!({})), SelectorError::Missing);
        assert_eq!(
            refused(serde_json::json!({"soft": true, "keys": []})),
            SelectorError::Missing
        );
        assert_eq!(
            refused(serde_json::json!({"keys": ["/a", "b"]})),
            SelectorError::NotAPath {
                field: "keys",
                index: 1
            }
        );
        assert_eq!(
            refused(serde_json::json!({"prefixes": ["/a b"]})),
            SelectorError::NotAPath {
                field: "prefixes",
                index: 0
            }
        );
        assert_eq!(
            refused(serde_json::json!({"tags": ["AAPL", "AA PL"]})),
            SelectorError::NotATag { index: 1 }
        );
        assert!(matches!(
            refused(serde_json::json!({"tags": [""]})),
            SelectorError::Limit(Invalid::Empty { .. })
        ));
        let long = "x".repeat(shared::wire::MAX_KEY_BYTES + 1);
        assert!(matches!(
            refused(serde_json::json!({"tags": [long]})),
            SelectorError::Limit(Invalid::TooLong { .. })
        ));
        let many: Vec<String> = (0..=shared::wire::MAX_SELECTORS).map(|i| format!("T{i}")).collect();
        assert!(matches!(
            refused(serde_json::json!({"tags": many})),
            SelectorError::Limit(Invalid::TooMany { .. })
        ));
    }

    #[test]
    fn the_head_gauge_only_moves_up() {
        let gauge = HeadGauge::new(IntGauge::new("head", "test").unwrap());
        for sequence in [3, 5, 4] {
            gauge.observe(sequence);
        }
        assert_eq!(gauge.gauge.get(), 5);
    }
}
