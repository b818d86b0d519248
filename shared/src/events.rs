//! Analysis events: topics, topic patterns, the typed payloads analysis services publish, and the
//! envelope subscribers receive. Everything is checked when it is built (parse, don't validate): an
//! [`Event`] holds only a known type with a payload that passed its checks, or a free-form type on a
//! topic configured for it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use time::OffsetDateTime;

use crate::domain::{Instrument, ModelRef, Timeframe};

/// The most bytes of a topic.
pub const MAX_TOPIC_BYTES: usize = 256;
/// The most segments of a topic or pattern.
pub const MAX_SEGMENTS: usize = 16;
/// The most bytes of one segment.
pub const MAX_SEGMENT_BYTES: usize = 64;
/// The most bytes of a payload, as compact JSON.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;
/// The most bytes of a free-form event type.
pub const MAX_TYPE_BYTES: usize = 64;
// `forecasts.{instrument}.{timeframe}` is a valid topic for every instrument (see [`Topic::of_forecast`]).
const _: () = assert!(
    Instrument::MAX_PARTS + 2 <= MAX_SEGMENTS
        && Instrument::MAX_LEN <= MAX_SEGMENT_BYTES
        && "forecasts.".len() + Instrument::MAX_LEN + ".15m".len() <= MAX_TOPIC_BYTES
);

/// The schema version of the typed payloads below.
pub const SCHEMA_VERSION: u16 = 1;

/// Why an event was refused; messages are written for the publisher.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error(
        "invalid topic {0:?}: expected 1 to {MAX_SEGMENTS} dot-separated segments of 1 to {MAX_SEGMENT_BYTES} of A-Z a-z 0-9 _ -, at most {MAX_TOPIC_BYTES} bytes"
    )]
    Topic(String),
    #[error(
        "invalid topic pattern {0:?}: expected dot-separated segments, each a name, * (one segment) or ** (the rest, last only)"
    )]
    Pattern(String),
    #[error(
        "unknown event type {0:?}: expected TechnicalIndicatorComputed, PatternDetected, AnomalyDetected, CorrelationUpdated, AnalysisSummary or ForecastUpdated (other types only on free-form topics)"
    )]
    UnknownType(String),
    #[error("invalid event type {0:?}: expected 1 to {MAX_TYPE_BYTES} of A-Z a-z 0-9 _")]
    TypeName(String),
    #[error("invalid payload for {kind}: {message}")]
    Payload { kind: String, message: String },
    #[error("the payload is {0} bytes, more than {MAX_PAYLOAD_BYTES}")]
    PayloadTooLarge(usize),
    #[error("unsupported schema_version {0}: this origin reads version {SCHEMA_VERSION}")]
    SchemaVersion(u16),
}

fn is_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment.len() <= MAX_SEGMENT_BYTES
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `name` is an event type name: 1 to [`MAX_TYPE_BYTES`] of `A-Z a-z 0-9 _`.
pub fn is_type_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_TYPE_BYTES && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A dotted topic such as `indicators.AAPL.rsi14`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(String);

impl Topic {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }

    /// The topic of the origin's own event for a forecast change: `forecasts.{instrument}.{timeframe}`.
    /// Instruments may hold single dots (`ES.F`), which become segments of their own; the instrument's
    /// own rule keeps every segment non-empty and the count within bounds.
    pub fn of_forecast(instrument: &Instrument, timeframe: Timeframe) -> Self {
        Self(format!("forecasts.{instrument}.{timeframe}"))
    }
}

impl FromStr for Topic {
    type Err = EventError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let segments = s.split('.').count();
        if s.len() > MAX_TOPIC_BYTES || segments > MAX_SEGMENTS || !s.split('.').all(is_segment) {
            return Err(EventError::Topic(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PatternSegment {
    Literal(String),
    /// `*`: exactly one segment.
    One,
    /// `**`: the rest, one segment or more.
    Rest,
}

/// A topic pattern: `indicators.AAPL.*` (one segment), `patterns.**` (everything below `patterns`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicPattern {
    text: String,
    segments: Vec<PatternSegment>,
}

impl TopicPattern {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn matches(&self, topic: &Topic) -> bool {
        let mut topic = topic.segments();
        for segment in &self.segments {
            match segment {
                PatternSegment::Rest => return topic.next().is_some(),
                PatternSegment::One => {
                    if topic.next().is_none() {
                        return false;
                    }
                }
                PatternSegment::Literal(literal) => {
                    if topic.next() != Some(literal.as_str()) {
                        return false;
                    }
                }
            }
        }
        topic.next().is_none()
    }

    /// Whether every topic this pattern matches is matched by `other` too: a subscription within what
    /// a token allows.
    pub fn within(&self, other: &TopicPattern) -> bool {
        let mut mine = self.segments.iter();
        for theirs in &other.segments {
            match (theirs, mine.next()) {
                (PatternSegment::Rest, Some(_)) => return true,
                (PatternSegment::One, Some(PatternSegment::One | PatternSegment::Literal(_))) => {}
                (PatternSegment::Literal(a), Some(PatternSegment::Literal(b))) if a == b => {}
                _ => return false,
            }
        }
        mine.next().is_none()
    }
}

impl FromStr for TopicPattern {
    type Err = EventError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let refuse = || EventError::Pattern(s.to_owned());
        let parts: Vec<&str> = s.split('.').collect();
        if s.len() > MAX_TOPIC_BYTES || parts.len() > MAX_SEGMENTS {
            return Err(refuse());
        }
        let mut segments = Vec::with_capacity(parts.len());
        for (index, part) in parts.iter().enumerate() {
            segments.push(match *part {
                "**" if index + 1 == parts.len() => PatternSegment::Rest,
                "*" => PatternSegment::One,
                literal if is_segment(literal) => PatternSegment::Literal(literal.to_owned()),
                _ => return Err(refuse()),
            });
        }
        Ok(Self {
            text: s.to_owned(),
            segments,
        })
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

macro_rules! serde_via_str {
    ($($ty:ty),*) => {$(
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                raw.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}

serde_via_str!(Topic, TopicPattern);

impl utoipa::PartialSchema for Topic {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::openapi::text(crate::openapi::topic_pattern(), MAX_TOPIC_BYTES)
            .examples(["indicators.AAPL.rsi14"])
            .into()
    }
}

impl utoipa::ToSchema for Topic {}

impl utoipa::PartialSchema for TopicPattern {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::openapi::text(crate::openapi::topic_filter_pattern(), MAX_TOPIC_BYTES)
            .description(Some(
                "A topic pattern: dot-separated names, `*` (one segment) and `**` (the rest, last only)",
            ))
            .examples(["indicators.*.rsi14"])
            .into()
    }
}

impl utoipa::ToSchema for TopicPattern {}

/// A name in a payload (an indicator, a pattern, an anomaly kind): 1 to 64 of a-z A-Z 0-9 _ -.
fn check_name(field: &str, value: &str) -> Result<(), String> {
    if is_segment(value) {
        Ok(())
    } else {
        Err(format!("{field} must be 1 to 64 of A-Z a-z 0-9 _ -, got {value:?}"))
    }
}

fn check_finite(field: &str, value: f64) -> Result<(), String> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(format!("{field} must be a finite number"))
    }
}

fn check_range(field: &str, value: f64, low: f64, high: f64) -> Result<(), String> {
    check_finite(field, value)?;
    if (low..=high).contains(&value) {
        Ok(())
    } else {
        Err(format!("{field} must be between {low} and {high}, got {value}"))
    }
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.trim().is_empty() || value.len() > max {
        Err(format!("{field} must hold 1 to {max} bytes of text"))
    } else {
        Ok(())
    }
}

/// `TechnicalIndicatorComputed`: an indicator's value for the event's instrument and timeframe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TechnicalIndicatorComputed {
    /// Such as `rsi`, `macd`, `ema`.
    pub indicator: String,
    /// The look-back in bars, 1 to 10,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<u32>,
    pub value: f64,
    /// Further named outputs, such as MACD's `signal` and `histogram` (at most 16).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<String, f64>,
    #[serde(with = "time::serde::rfc3339")]
    pub computed_at: OffsetDateTime,
}

/// Bullish, bearish or neutral.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Bullish,
    Bearish,
    Neutral,
}

/// `PatternDetected`: a chart pattern found on the event's instrument and timeframe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternDetected {
    /// Such as `head_and_shoulders`, `double_bottom`.
    pub pattern: String,
    pub direction: Direction,
    /// 0 to 1.
    pub confidence: f64,
    #[serde(with = "time::serde::rfc3339")]
    pub detected_at: OffsetDateTime,
    /// Where the pattern starts, when known.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub started_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_price: Option<f64>,
}

/// How much an anomaly matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

/// `AnomalyDetected`: an unusual observation, such as a volume spike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyDetected {
    /// Such as `volume_spike`, `price_gap`.
    pub kind: String,
    pub severity: Severity,
    /// How unusual, such as a z-score.
    pub score: f64,
    #[serde(with = "time::serde::rfc3339")]
    pub detected_at: OffsetDateTime,
    /// At most 1,024 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `CorrelationUpdated`: the correlation of the event's instrument with another one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelationUpdated {
    pub other: Instrument,
    /// -1 to 1.
    pub coefficient: f64,
    /// The window it was computed over, such as `30d` (a name: 1 to 64 of A-Z a-z 0-9 _ -).
    pub window: String,
    #[serde(with = "time::serde::rfc3339")]
    pub computed_at: OffsetDateTime,
}

/// The overall tone of a summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sentiment {
    Bullish,
    Bearish,
    Neutral,
    Mixed,
}

/// `AnalysisSummary`: a written summary of the analysis of the event's instrument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisSummary {
    /// 1 to 4,096 bytes.
    pub summary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentiment: Option<Sentiment>,
    /// At most 16, each at most 256 bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_points: Vec<String>,
}

/// What happened to a forecast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForecastChange {
    Written,
    Deleted,
    RolledBack,
}

/// `ForecastUpdated`: emitted by the origin itself on every forecast write, delete or rollback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForecastUpdated {
    pub change: ForecastChange,
    /// The version now current (written, rolled back) or the one deleted.
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point: Option<f64>,
    /// The version rolled back to, for a rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<u64>,
}

impl ForecastUpdated {
    pub fn new(change: ForecastChange, version: u64) -> Self {
        Self {
            change,
            version,
            model: None,
            point: None,
            rollback_of: None,
        }
    }
}

/// A known type and its checked payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    TechnicalIndicatorComputed(TechnicalIndicatorComputed),
    PatternDetected(PatternDetected),
    AnomalyDetected(AnomalyDetected),
    CorrelationUpdated(CorrelationUpdated),
    AnalysisSummary(AnalysisSummary),
    ForecastUpdated(ForecastUpdated),
}

impl Payload {
    pub const TYPES: [&'static str; 6] = [
        "TechnicalIndicatorComputed",
        "PatternDetected",
        "AnomalyDetected",
        "CorrelationUpdated",
        "AnalysisSummary",
        "ForecastUpdated",
    ];

    /// Reads and checks the payload of a known `kind`; `None` for a type this module does not know.
    pub fn parse(kind: &str, payload: Value) -> Option<Result<Self, EventError>> {
        let refuse = |message: String| EventError::Payload {
            kind: kind.to_owned(),
            message,
        };
        fn read<T: serde::de::DeserializeOwned>(payload: Value) -> Result<T, String> {
            serde_json::from_value(payload).map_err(|error| error.to_string())
        }
        let checked = match kind {
            "TechnicalIndicatorComputed" => read(payload).and_then(|p: TechnicalIndicatorComputed| {
                check_name("indicator", &p.indicator)?;
                if let Some(period) = p.period
                    && !(1..=10_000).contains(&period)
                {
                    return Err(format!("period must be 1 to 10000, got {period}"));
                }
                check_finite("value", p.value)?;
                if p.components.len() > 16 {
                    return Err("components may hold at most 16 values".into());
                }
                for (name, value) in &p.components {
                    check_name("a component name", name)?;
                    check_finite(&format!("components.{name}"), *value)?;
                }
                Ok(Self::TechnicalIndicatorComputed(p))
            }),
            "PatternDetected" => read(payload).and_then(|p: PatternDetected| {
                check_name("pattern", &p.pattern)?;
                check_range("confidence", p.confidence, 0.0, 1.0)?;
                if let Some(target) = p.target_price {
                    check_finite("target_price", target)?;
                }
                Ok(Self::PatternDetected(p))
            }),
            "AnomalyDetected" => read(payload).and_then(|p: AnomalyDetected| {
                check_name("kind", &p.kind)?;
                check_finite("score", p.score)?;
                if let Some(description) = &p.description {
                    check_text("description", description, 1024)?;
                }
                Ok(Self::AnomalyDetected(p))
            }),
            "CorrelationUpdated" => read(payload).and_then(|p: CorrelationUpdated| {
                check_range("coefficient", p.coefficient, -1.0, 1.0)?;
                check_name("window", &p.window)?;
                Ok(Self::CorrelationUpdated(p))
            }),
            "AnalysisSummary" => read(payload).and_then(|p: AnalysisSummary| {
                check_text("summary", &p.summary, 4096)?;
                if p.key_points.len() > 16 {
                    return Err("key_points may hold at most 16 points".into());
                }
                for point in &p.key_points {
                    check_text("a key point", point, 256)?;
                }
                Ok(Self::AnalysisSummary(p))
            }),
            "ForecastUpdated" => read(payload).and_then(|p: ForecastUpdated| {
                if let Some(point) = p.point {
                    check_finite("point", point)?;
                }
                Ok(Self::ForecastUpdated(p))
            }),
            _ => return None,
        };
        Some(checked.map_err(refuse))
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::TechnicalIndicatorComputed(_) => Self::TYPES[0],
            Self::PatternDetected(_) => Self::TYPES[1],
            Self::AnomalyDetected(_) => Self::TYPES[2],
            Self::CorrelationUpdated(_) => Self::TYPES[3],
            Self::AnalysisSummary(_) => Self::TYPES[4],
            Self::ForecastUpdated(_) => Self::TYPES[5],
        }
    }

    fn to_value(&self) -> Value {
        let value = match self {
            Self::TechnicalIndicatorComputed(p) => serde_json::to_value(p),
            Self::PatternDetected(p) => serde_json::to_value(p),
            Self::AnomalyDetected(p) => serde_json::to_value(p),
            Self::CorrelationUpdated(p) => serde_json::to_value(p),
            Self::AnalysisSummary(p) => serde_json::to_value(p),
            Self::ForecastUpdated(p) => serde_json::to_value(p),
        };
        // Plain structs of strings and finite numbers always serialize.
        value.unwrap_or(Value::Null)
    }
}

/// A publish request, as `POST /admin/v1/events` reads it.
#[derive(Debug, Clone, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "topic": "indicators.AAPL.rsi14", "type": "TechnicalIndicatorComputed", "instrument": "AAPL",
    "timeframe": "1h", "payload": {"indicator": "rsi", "period": 14, "value": 63.2, "computed_at": "2026-11-23T14:00:00Z"}
}))]
pub struct Publish {
    pub topic: Topic,
    /// TechnicalIndicatorComputed, PatternDetected, AnomalyDetected, CorrelationUpdated, AnalysisSummary or
    /// ForecastUpdated, each with its payload; any other name only on the topics `events.free_form_topics`
    /// configures, with any JSON object.
    #[serde(rename = "type")]
    #[schema(schema_with = type_schema)]
    pub kind: String,
    pub instrument: Instrument,
    #[serde(default)]
    pub timeframe: Option<Timeframe>,
    /// When the analysis produced it (RFC 3339); the time of publishing when absent.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub produced_at: Option<OffsetDateTime>,
    /// The payload's schema version: 1 (the default).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1)]
    pub schema_version: Option<u16>,
    /// The type's payload, at most 16 KiB as compact JSON.
    #[schema(value_type = Object)]
    pub payload: Value,
}

fn type_schema() -> utoipa::openapi::Object {
    crate::openapi::text(crate::openapi::EVENT_TYPE_PATTERN, MAX_TYPE_BYTES).build()
}

/// An event before it has a place in the log: checked, with its payload in canonical JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    pub topic: Topic,
    #[serde(rename = "type")]
    pub kind: String,
    pub instrument: Instrument,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeframe: Option<Timeframe>,
    #[serde(with = "time::serde::rfc3339")]
    pub produced_at: OffsetDateTime,
    pub schema_version: u16,
    pub payload: Value,
}

impl NewEvent {
    /// Checks a publish request: a known type with a valid payload, or, on a topic that `free_form`
    /// matches, any type name with any JSON object. `now` stands in for a missing `produced_at`.
    pub fn check(publish: Publish, free_form: &[TopicPattern], now: OffsetDateTime) -> Result<Self, EventError> {
        let version = publish.schema_version.unwrap_or(SCHEMA_VERSION);
        if version != SCHEMA_VERSION {
            return Err(EventError::SchemaVersion(version));
        }
        let size = serde_json::to_vec(&publish.payload).map_or(0, |bytes| bytes.len());
        if size > MAX_PAYLOAD_BYTES {
            return Err(EventError::PayloadTooLarge(size));
        }
        let payload = match Payload::parse(&publish.kind, publish.payload.clone()) {
            Some(parsed) => parsed?.to_value(),
            None if free_form.iter().any(|pattern| pattern.matches(&publish.topic)) => {
                if !is_type_name(&publish.kind) {
                    return Err(EventError::TypeName(publish.kind));
                }
                if !publish.payload.is_object() {
                    return Err(EventError::Payload {
                        kind: publish.kind,
                        message: "a free-form payload must be a JSON object".into(),
                    });
                }
                publish.payload
            }
            None => return Err(EventError::UnknownType(publish.kind)),
        };
        Ok(Self {
            topic: publish.topic,
            kind: publish.kind,
            instrument: publish.instrument,
            timeframe: publish.timeframe,
            produced_at: publish.produced_at.unwrap_or(now),
            schema_version: version,
            payload,
        })
    }

    /// The origin's own event for a forecast change.
    pub fn forecast_updated(
        instrument: &Instrument,
        timeframe: Timeframe,
        update: &ForecastUpdated,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            topic: Topic::of_forecast(instrument, timeframe),
            kind: Payload::TYPES[5].to_owned(),
            instrument: instrument.clone(),
            timeframe: Some(timeframe),
            produced_at: now,
            schema_version: SCHEMA_VERSION,
            payload: Payload::ForecastUpdated(update.clone()).to_value(),
        }
    }

    pub fn with_id(self, id: u64) -> Event {
        Event { id, event: self }
    }
}

/// An event in the log, as subscribers receive it: `id` is its position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: u64,
    #[serde(flatten)]
    pub event: NewEvent,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn topic(s: &str) -> Topic {
        s.parse().unwrap()
    }

    fn pattern(s: &str) -> TopicPattern {
        s.parse().unwrap()
    }

    #[test]
    fn topics_are_dotted_names() {
        for good in [
            "indicators.AAPL.rsi14",
            "patterns.BTC-USD.head_and_shoulders",
            "summaries.AAPL",
            "x",
        ] {
            assert_eq!(topic(good).as_str(), good);
        }
        for bad in ["", ".a", "a.", "a..b", "a b", "a.*", &"a.".repeat(20), &"x".repeat(65)] {
            assert!(bad.parse::<Topic>().is_err(), "{bad:?}");
        }
        let es = Topic::of_forecast(&"ES.F".parse().unwrap(), Timeframe::H1);
        assert_eq!(es.as_str(), "forecasts.ES.F.1h");
        // The widest instruments make topics that parse back.
        for name in [
            "A.B.C.D",
            &"X".repeat(32),
            &format!("{}.B.C.D", "x".repeat(26)),
            "_.-.a.9",
        ] {
            let instrument: Instrument = name.parse().unwrap();
            for timeframe in Timeframe::ALL {
                let derived = Topic::of_forecast(&instrument, timeframe);
                assert_eq!(derived.as_str().parse::<Topic>(), Ok(derived.clone()));
            }
        }
    }

    #[test]
    fn one_star_is_one_segment_and_two_are_the_rest() {
        let cases = [
            ("indicators.AAPL.*", "indicators.AAPL.rsi14", true),
            ("indicators.AAPL.*", "indicators.AAPL", false),
            ("indicators.AAPL.*", "indicators.AAPL.rsi14.x", false),
            ("indicators.*.rsi14", "indicators.MSFT.rsi14", true),
            ("patterns.**", "patterns.BTC-USD.head_and_shoulders", true),
            ("patterns.**", "patterns", false),
            ("**", "anything.at.all", true),
            ("summaries.AAPL", "summaries.AAPL", true),
            ("summaries.AAPL", "summaries.AAPLX", false),
        ];
        for (p, t, expected) in cases {
            assert_eq!(pattern(p).matches(&topic(t)), expected, "{p} against {t}");
        }
        for bad in ["a.**.b", "a.***", "", "a b"] {
            assert!(bad.parse::<TopicPattern>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_pattern_is_within_another_when_it_matches_no_more() {
        let cases = [
            ("indicators.AAPL.*", "indicators.**", true),
            ("indicators.**", "indicators.AAPL.*", false),
            ("indicators.AAPL.rsi14", "indicators.*.rsi14", true),
            ("indicators.*.rsi14", "indicators.AAPL.rsi14", false),
            ("indicators.**", "indicators.**", true),
            ("a.b", "a.b.**", false),
        ];
        for (mine, theirs, expected) in cases {
            assert_eq!(
                pattern(mine).within(&pattern(theirs)),
                expected,
                "{mine} within {theirs}"
            );
        }
    }

    fn publish(value: Value) -> Result<NewEvent, EventError> {
        let request: Publish = serde_json::from_value(value).map_err(|e| EventError::Payload {
            kind: "request".into(),
            message: e.to_string(),
        })?;
        NewEvent::check(request, &[pattern("custom.**")], OffsetDateTime::UNIX_EPOCH)
    }

    #[test]
    fn the_issue_example_is_accepted_as_it_is() {
        let event = publish(
            json!({"topic":"indicators.AAPL.rsi14","type":"TechnicalIndicatorComputed",
            "instrument":"AAPL","timeframe":"1h",
            "payload":{"indicator":"rsi","period":14,"value":63.2,"computed_at":"2026-11-23T14:00:00Z"}}),
        )
        .unwrap();
        assert_eq!(event.kind, "TechnicalIndicatorComputed");
        assert_eq!(event.timeframe, Some(Timeframe::H1));
        assert_eq!(event.schema_version, SCHEMA_VERSION);
        assert_eq!(event.payload["value"], 63.2);
        let envelope = serde_json::to_value(event.with_id(7)).unwrap();
        assert_eq!(envelope["id"], 7);
        assert_eq!(envelope["type"], "TechnicalIndicatorComputed");
        assert_eq!(envelope["produced_at"], "1970-01-01T00:00:00Z");
    }

    #[test]
    fn bad_payloads_are_refused_with_what_is_wrong() {
        let base = |kind: &str, payload: Value| json!({"topic": "t.AAPL", "type": kind, "instrument": "AAPL", "payload": payload});
        let refused = |value| publish(value).unwrap_err().to_string();
        let at = "2026-11-23T14:00:00Z";
        assert!(refused(base("Nope", json!({}))).contains("unknown event type"));
        assert!(
            refused(base(
                "PatternDetected",
                json!({"pattern": "x", "direction": "up", "confidence": 0.5, "detected_at": at})
            ))
            .contains("expected one of `bullish`, `bearish`, `neutral`")
        );
        assert!(
            refused(base(
                "PatternDetected",
                json!({"pattern": "x", "direction": "bullish", "confidence": 1.5, "detected_at": at})
            ))
            .contains("confidence")
        );
        assert!(
            refused(base(
                "CorrelationUpdated",
                json!({"other": "MSFT", "coefficient": 2, "window": "30d", "computed_at": at})
            ))
            .contains("coefficient")
        );
        assert!(
            refused(base(
                "TechnicalIndicatorComputed",
                json!({"indicator": "rsi", "value": 1, "extra": 1, "computed_at": at})
            ))
            .contains("extra")
        );
        assert!(refused(base("AnalysisSummary", json!({"summary": ""}))).contains("summary"));
        let long = "x".repeat(MAX_PAYLOAD_BYTES);
        assert!(refused(base("AnalysisSummary", json!({"summary": long}))).contains("bytes"));
        let mut versioned = base("AnalysisSummary", json!({"summary": "ok"}));
        versioned["schema_version"] = json!(2);
        assert!(refused(versioned).contains("schema_version"));
    }

    #[test]
    fn free_form_types_only_on_their_topics() {
        let custom = json!({"topic": "custom.desk.signal", "type": "DeskSignal", "instrument": "AAPL",
            "payload": {"anything": [1, 2]}});
        assert_eq!(publish(custom).unwrap().kind, "DeskSignal");
        let elsewhere = json!({"topic": "other.desk", "type": "DeskSignal", "instrument": "AAPL", "payload": {}});
        assert!(matches!(publish(elsewhere), Err(EventError::UnknownType(_))));
        let not_object = json!({"topic": "custom.x", "type": "DeskSignal", "instrument": "AAPL", "payload": [1]});
        assert!(publish(not_object).is_err());
    }
}
