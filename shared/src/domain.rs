//! Domain types. Every value is checked when it is built, so the rest of the system trusts what it holds.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use utoipa::ToSchema;

/// Why a domain value was refused. Messages are written for the person who sent the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error(
        "invalid instrument {0:?}: expected 1 to 32 bytes of A-Z a-z 0-9 _ - in 1 to 4 parts joined by single dots"
    )]
    Instrument(String),
    #[error("invalid timeframe {0:?}: expected one of 1m 5m 15m 1h 4h 1d 1w")]
    Timeframe(String),
    #[error("invalid forecast key {0:?}: expected INSTRUMENT:TIMEFRAME such as AAPL:1h")]
    Key(String),
    #[error("invalid forecast: {0}")]
    Forecast(String),
}

/// Characters allowed in instruments, model ids and model versions: safe in URL paths, Redis keys and tags.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// A traded instrument such as `AAPL`, `BTC-USD` or `ES.F`, normalised to upper case.
///
/// It is one to [`Instrument::MAX_PARTS`] parts of `A-Z a-z 0-9 _ -` joined by single dots, so every
/// name derived from it (the topic `forecasts.{instrument}.{timeframe}`, Redis keys, surrogate tags,
/// URL paths) is valid by construction: no empty topic segment, no hash-tag braces, nothing to escape.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Instrument(String);

impl Instrument {
    pub const MAX_LEN: usize = 32;
    /// The most dot-separated parts (`ES.F` has two).
    pub const MAX_PARTS: usize = 4;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Instrument {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let part = |p: &str| !p.is_empty() && p.chars().all(|c| c != '.' && is_name_char(c));
        if s.len() > Self::MAX_LEN || s.split('.').count() > Self::MAX_PARTS || !s.split('.').all(part) {
            return Err(DomainError::Instrument(s.to_owned()));
        }
        Ok(Self(s.to_ascii_uppercase()))
    }
}

impl fmt::Display for Instrument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The period a forecast speaks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ToSchema)]
pub enum Timeframe {
    #[schema(rename = "1m")]
    M1,
    #[schema(rename = "5m")]
    M5,
    #[schema(rename = "15m")]
    M15,
    #[schema(rename = "1h")]
    H1,
    #[schema(rename = "4h")]
    H4,
    #[schema(rename = "1d")]
    D1,
    #[schema(rename = "1w")]
    W1,
}

impl Timeframe {
    pub const ALL: [Timeframe; 7] = [
        Timeframe::M1,
        Timeframe::M5,
        Timeframe::M15,
        Timeframe::H1,
        Timeframe::H4,
        Timeframe::D1,
        Timeframe::W1,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Timeframe::M1 => "1m",
            Timeframe::M5 => "5m",
            Timeframe::M15 => "15m",
            Timeframe::H1 => "1h",
            Timeframe::H4 => "4h",
            Timeframe::D1 => "1d",
            Timeframe::W1 => "1w",
        }
    }
}

impl FromStr for Timeframe {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Timeframe::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| DomainError::Timeframe(s.to_owned()))
    }
}

impl fmt::Display for Timeframe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Serde through `FromStr`/`Display`, so that a value read from JSON is checked like one read from a path.
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

serde_via_str!(Instrument, Timeframe, ForecastKey, Horizon);

/// OpenAPI schemas of the types written as strings.
macro_rules! string_schema {
    ($($ty:ty => $pattern:expr, $max_length:expr, $example:expr;)*) => {$(
        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                crate::openapi::text($pattern, $max_length).examples([$example]).into()
            }
        }

        impl ToSchema for $ty {}
    )*};
}

string_schema! {
    Instrument => crate::openapi::INSTRUMENT_PATTERN, Instrument::MAX_LEN, "AAPL";
    Horizon => crate::openapi::HORIZON_PATTERN, 7, "1h";
}

impl utoipa::PartialSchema for ForecastKey {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::openapi::forecast_key().examples(["AAPL:1h"]).into()
    }
}

impl ToSchema for ForecastKey {}

/// The address of a forecast: one instrument at one timeframe, written `AAPL:1h`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ForecastKey {
    pub instrument: Instrument,
    pub timeframe: Timeframe,
}

impl ForecastKey {
    pub fn new(instrument: Instrument, timeframe: Timeframe) -> Self {
        Self { instrument, timeframe }
    }

    /// The path of this forecast in the public read API.
    pub fn path(&self) -> String {
        format!("/v1/forecasts/{}/{}", self.instrument, self.timeframe)
    }
}

impl FromStr for ForecastKey {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (instrument, timeframe) = s.split_once(':').ok_or_else(|| DomainError::Key(s.to_owned()))?;
        Ok(Self::new(instrument.parse()?, timeframe.parse()?))
    }
}

impl fmt::Display for ForecastKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.instrument, self.timeframe)
    }
}

/// How far ahead a forecast looks, written as a count and a unit: `30m`, `1h`, `5d`, `2w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Horizon {
    count: u32,
    unit: char,
}

impl FromStr for Horizon {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || {
            DomainError::Forecast(format!(
                "horizon {s:?} is not a count and a unit such as 30m, 1h, 5d, 2w"
            ))
        };
        let unit = s
            .chars()
            .last()
            .filter(|u| matches!(u, 'm' | 'h' | 'd' | 'w'))
            .ok_or_else(invalid)?;
        let digits = &s[..s.len() - 1];
        if digits.is_empty()
            || digits.len() > 6
            || digits.starts_with('0')
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(invalid());
        }
        let count = digits.parse().map_err(|_| invalid())?;
        Ok(Self { count, unit })
    }
}

impl fmt::Display for Horizon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.count, self.unit)
    }
}

/// The model that produced a forecast. Both parts appear in URLs and cache tags, hence the narrow alphabet.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, try_from = "RawModelRef")]
pub struct ModelRef {
    /// 1 to 64 of `A-Z a-z 0-9 . _ -`.
    #[schema(example = "lstm", schema_with = model_id_schema)]
    pub id: String,
    /// 1 to 64 of `A-Z a-z 0-9 . _ - +`.
    #[schema(example = "3.2.0", schema_with = model_version_schema)]
    pub version: String,
}

fn model_id_schema() -> utoipa::openapi::Object {
    crate::openapi::text(crate::openapi::MODEL_ID_PATTERN, ModelRef::MAX_LEN).build()
}

fn model_version_schema() -> utoipa::openapi::Object {
    crate::openapi::text(crate::openapi::MODEL_VERSION_PATTERN, ModelRef::MAX_LEN).build()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModelRef {
    id: String,
    version: String,
}

impl TryFrom<RawModelRef> for ModelRef {
    type Error = DomainError;

    fn try_from(raw: RawModelRef) -> Result<Self, Self::Error> {
        Self::new(raw.id, raw.version)
    }
}

impl ModelRef {
    pub const MAX_LEN: usize = 64;

    pub fn new(id: impl Into<String>, version: impl Into<String>) -> Result<Self, DomainError> {
        let (id, version) = (id.into(), version.into());
        let valid = |s: &str, extra: &[char]| {
            !s.is_empty() && s.len() <= Self::MAX_LEN && s.chars().all(|c| is_name_char(c) || extra.contains(&c))
        };
        if !valid(&id, &[]) {
            return Err(DomainError::Forecast(format!(
                "model id {id:?} must be 1 to 64 of A-Z a-z 0-9 . _ -"
            )));
        }
        if !valid(&version, &['+']) {
            return Err(DomainError::Forecast(format!(
                "model version {version:?} must be 1 to 64 of A-Z a-z 0-9 . _ - +"
            )));
        }
        Ok(Self { id, version })
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.version)
    }
}

/// A two-sided interval around the point value at a confidence level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfidenceInterval {
    /// Confidence level, strictly between 0 and 1.
    #[schema(example = 0.9, exclusive_minimum = 0.0, exclusive_maximum = 1.0)]
    pub level: f64,
    pub lower: f64,
    pub upper: f64,
}

/// What a producer writes: one forecast of one model for one `(instrument, timeframe)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "horizon": "1h",
    "generated_at": "2026-11-23T14:00:00Z",
    "valid_until": "2026-11-23T15:00:00Z",
    "model": {"id": "lstm", "version": "3.2.0"},
    "point": 187.42,
    "quantiles": {"0.05": 181.2, "0.5": 187.4, "0.95": 193.9},
    "direction_prob_up": 0.61,
    "metadata": {"features": "ohlcv"}
}))]
pub struct Forecast {
    pub horizon: Horizon,
    /// When the model produced the forecast (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub generated_at: OffsetDateTime,
    /// Until when the forecast holds (RFC 3339); later than `generated_at`. Caches keep it fresh until then.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub valid_until: OffsetDateTime,
    pub model: ModelRef,
    /// The forecast value.
    pub point: f64,
    /// Values by probability level, keys strictly between 0 and 1 written as decimals (`"0.05"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(schema_with = quantiles_schema)]
    pub quantiles: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 16)]
    pub intervals: Vec<ConfidenceInterval>,
    /// Probability, from 0 to 1, that the price goes up over the horizon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub direction_prob_up: Option<f64>,
    /// Free-form JSON object, at most [`Forecast::MAX_METADATA_BYTES`] once serialized.
    #[serde(
        default,
        skip_serializing_if = "serde_json::Map::is_empty",
        deserialize_with = "json_object"
    )]
    #[schema(value_type = Object)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// A JSON object, and nothing else: `serde_json::Map` alone would also read `null` as an empty one.
fn json_object<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<serde_json::Map<String, serde_json::Value>, D::Error> {
    match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::Object(map) => Ok(map),
        other => Err(serde::de::Error::invalid_type(
            serde::de::Unexpected::Other(match other {
                serde_json::Value::Null => "null",
                serde_json::Value::Array(_) => "an array",
                _ => "a scalar",
            }),
            &"a JSON object",
        )),
    }
}

/// Whether `level` names a quantile: `0.` and one to six digits, not all zero.
pub fn is_quantile_level(level: &str) -> bool {
    level.len() <= 8
        && level.strip_prefix("0.").is_some_and(|digits| {
            !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && digits.bytes().any(|b| b != b'0')
        })
}

fn quantiles_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Object)
        .property_names(Some(crate::openapi::text(crate::openapi::QUANTILE_LEVEL_PATTERN, 8)))
        .additional_properties(Some(
            utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::schema::Type::Number),
        ))
        .max_properties(Some(Forecast::MAX_QUANTILES))
        .build()
}

impl Forecast {
    pub const MAX_METADATA_BYTES: usize = 4096;
    pub const MAX_QUANTILES: usize = 99;
    pub const MAX_INTERVALS: usize = 16;

    /// Checks what serde cannot: finite numbers, ranges, sizes and the order of instants.
    pub fn validate(&self) -> Result<(), DomainError> {
        let fail = |msg: String| Err(DomainError::Forecast(msg));
        if self.valid_until <= self.generated_at {
            return fail("valid_until must be later than generated_at".into());
        }
        if !self.point.is_finite() {
            return fail("point must be a finite number".into());
        }
        if self.quantiles.len() > Self::MAX_QUANTILES {
            return fail(format!("at most {} quantiles are allowed", Self::MAX_QUANTILES));
        }
        for (level, value) in &self.quantiles {
            if !is_quantile_level(level) {
                return fail(format!(
                    "quantile level {level:?} must be a decimal strictly between 0 and 1: 0. and 1 to 6 digits"
                ));
            }
            if !value.is_finite() {
                return fail(format!("quantile {level} must be a finite number"));
            }
        }
        if self.intervals.len() > Self::MAX_INTERVALS {
            return fail(format!("at most {} intervals are allowed", Self::MAX_INTERVALS));
        }
        for interval in &self.intervals {
            if !(interval.level > 0.0 && interval.level < 1.0) {
                return fail("interval level must be strictly between 0 and 1".into());
            }
            if !(interval.lower.is_finite() && interval.upper.is_finite()) || interval.lower > interval.upper {
                return fail("interval bounds must be finite with lower <= upper".into());
            }
        }
        if let Some(p) = self.direction_prob_up
            && !(0.0..=1.0).contains(&p)
        {
            return fail("direction_prob_up must be between 0 and 1".into());
        }
        let metadata_len = serde_json::to_vec(&self.metadata)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if metadata_len > Self::MAX_METADATA_BYTES {
            return fail(format!(
                "metadata must be at most {} bytes as JSON",
                Self::MAX_METADATA_BYTES
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"horizon":"1h","generated_at":"2026-11-23T14:00:00Z","valid_until":"2026-11-23T15:00:00Z",
 "model":{"id":"lstm","version":"3.2.0"},"point":187.42,
 "quantiles":{"0.05":181.2,"0.5":187.4,"0.95":193.9},"direction_prob_up":0.61,
 "metadata":{"features":"ohlcv"}}"#;

    #[test]
    fn instruments_are_checked_and_upper_cased() {
        for ok in [
            "AAPL",
            "btc-usd",
            "EURUSD",
            "ES.F",
            "a_b",
            "A.B.C.D",
            "-",
            &"X".repeat(32),
        ] {
            let parsed: Instrument = ok.parse().unwrap();
            assert_eq!(parsed.as_str(), ok.to_ascii_uppercase());
        }
        let bad_names = [
            "",
            "../x",
            "a b",
            "ÄPPL",
            "a/b",
            "a:b",
            "{a}",
            "A..B",
            "..",
            ".X",
            "X.",
            ".",
            "A.B.C.D.E",
            &"X".repeat(33),
        ];
        for bad in bad_names {
            assert!(bad.parse::<Instrument>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn timeframes_round_trip() {
        for tf in Timeframe::ALL {
            assert_eq!(tf.as_str().parse::<Timeframe>().unwrap(), tf);
        }
        assert!("2h".parse::<Timeframe>().is_err());
        assert!("1H".parse::<Timeframe>().is_err());
    }

    #[test]
    fn keys_parse() {
        let key: ForecastKey = "aapl:1h".parse().unwrap();
        assert_eq!(key.to_string(), "AAPL:1h");
        assert_eq!(key.path(), "/v1/forecasts/AAPL/1h");
        assert!("AAPL".parse::<ForecastKey>().is_err());
        assert!("AAPL:2h".parse::<ForecastKey>().is_err());
    }

    #[test]
    fn horizons() {
        for ok in ["1m", "30m", "1h", "5d", "2w", "999999h"] {
            assert_eq!(ok.parse::<Horizon>().unwrap().to_string(), ok);
        }
        for bad in ["", "h", "0h", "01h", "1", "1y", "-1h", "1000000h", "1.5h"] {
            assert!(bad.parse::<Horizon>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_documented_example_is_accepted() {
        let forecast: Forecast = serde_json::from_str(EXAMPLE).unwrap();
        forecast.validate().unwrap();
        assert_eq!(forecast.model.to_string(), "lstm@3.2.0");
        let again: Forecast = serde_json::from_slice(&serde_json::to_vec(&forecast).unwrap()).unwrap();
        assert_eq!(again, forecast);
    }

    fn example_with(change: impl FnOnce(&mut serde_json::Value)) -> Result<Forecast, String> {
        let mut value: serde_json::Value = serde_json::from_str(EXAMPLE).unwrap();
        change(&mut value);
        let forecast: Forecast = serde_json::from_value(value).map_err(|e| e.to_string())?;
        forecast.validate().map_err(|e| e.to_string())?;
        Ok(forecast)
    }

    #[test]
    fn bad_forecasts_are_refused() {
        type Change = Box<dyn FnOnce(&mut serde_json::Value)>;
        let cases: Vec<(&str, Change)> = vec![
            ("unknown field", Box::new(|v| v["extra"] = 1.into())),
            ("unknown model field", Box::new(|v| v["model"]["x"] = 1.into())),
            ("point as string", Box::new(|v| v["point"] = "1".into())),
            (
                "time order",
                Box::new(|v| v["valid_until"] = "2026-11-23T13:00:00Z".into()),
            ),
            ("bad time", Box::new(|v| v["generated_at"] = "yesterday".into())),
            ("quantile level", Box::new(|v| v["quantiles"]["1.5"] = 1.0.into())),
            ("probability", Box::new(|v| v["direction_prob_up"] = 1.5.into())),
            ("model id", Box::new(|v| v["model"]["id"] = "a/b".into())),
            ("empty model version", Box::new(|v| v["model"]["version"] = "".into())),
            ("horizon", Box::new(|v| v["horizon"] = "soon".into())),
            (
                "metadata size",
                Box::new(|v| v["metadata"]["big"] = "x".repeat(5000).into()),
            ),
            ("metadata type", Box::new(|v| v["metadata"] = serde_json::json!([1]))),
            ("metadata null", Box::new(|v| v["metadata"] = serde_json::Value::Null)),
            (
                "interval order",
                Box::new(|v| v["intervals"] = serde_json::json!([{"level": 0.9, "lower": 2.0, "upper": 1.0}])),
            ),
        ];
        for (name, change) in cases {
            assert!(example_with(change).is_err(), "{name} was accepted");
        }
    }
}
