//! OpenAPI schemas of the values written as text, built from the same rules the parsers apply: each
//! pattern below sits beside its parser's limits, and the tests hold the two to the same answers.

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};

use crate::domain::{Instrument, Timeframe};

/// One name segment of a topic: `A-Z a-z 0-9 _ -`.
const SEGMENT: &str = "[A-Za-z0-9_-]{1,64}";

/// A topic (`indicators.AAPL.rsi14`): see [`crate::events::Topic`].
pub fn topic_pattern() -> String {
    format!("^{SEGMENT}(\\.{SEGMENT}){{0,15}}$")
}

/// A topic pattern (`indicators.*.rsi14`, `patterns.**`): see [`crate::events::TopicPattern`].
pub fn topic_filter_pattern() -> String {
    format!("^(({SEGMENT}|\\*)\\.){{0,15}}({SEGMENT}|\\*|\\*\\*)$")
}

/// An event type name: see [`crate::events::is_type_name`].
pub const EVENT_TYPE_PATTERN: &str = "^[A-Za-z0-9_]{1,64}$";
/// An instrument: see [`crate::domain::Instrument`].
pub const INSTRUMENT_PATTERN: &str = "^[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+){0,3}$";
/// A horizon such as `30m`: see [`crate::domain::Horizon`].
pub const HORIZON_PATTERN: &str = "^[1-9][0-9]{0,5}(m|h|d|w)$";
/// A model id: see [`crate::domain::ModelRef`].
pub const MODEL_ID_PATTERN: &str = "^[A-Za-z0-9._-]{1,64}$";
/// A model version: see [`crate::domain::ModelRef`].
pub const MODEL_VERSION_PATTERN: &str = "^[A-Za-z0-9._+-]{1,64}$";
/// A quantile's probability level as a key, a decimal strictly between 0 and 1 (`0.05`): see
/// [`crate::domain::Forecast::validate`].
pub const QUANTILE_LEVEL_PATTERN: &str = "^0\\.[0-9]{0,5}[1-9][0-9]{0,5}$";

/// A forecast key, `INSTRUMENT:TIMEFRAME` (see [`crate::domain::ForecastKey`]): one branch per
/// timeframe, so that each bounds the instrument's length exactly.
pub fn forecast_key_branches() -> impl Iterator<Item = (String, usize)> {
    Timeframe::ALL.into_iter().map(|timeframe| {
        let instrument = INSTRUMENT_PATTERN.trim_end_matches('$');
        (
            format!("{instrument}:{timeframe}$"),
            Instrument::MAX_LEN + 1 + timeframe.as_str().len(),
        )
    })
}

/// The schema of a forecast key.
pub fn forecast_key() -> OneOfBuilder {
    forecast_key_branches().fold(OneOfBuilder::new(), |one_of, (pattern, max_length)| {
        one_of.item(text(pattern, max_length))
    })
}

/// A string that matches `pattern` and has at most `max_length` characters.
pub fn text(pattern: impl Into<String>, max_length: usize) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .max_length(Some(max_length))
}

/// A list of `min_items` to `max_items` items.
pub fn list(items: impl Into<RefOr<Schema>>, min_items: usize, max_items: usize) -> ArrayBuilder {
    ArrayBuilder::new()
        .items(items.into())
        .min_items(Some(min_items))
        .max_items(Some(max_items))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ForecastKey, Horizon, ModelRef};
    use crate::events::{Topic, TopicPattern, is_type_name};

    /// Whether `text` matches `pattern` and fits `max_length` characters, as a JSON Schema validator
    /// decides.
    fn admits(pattern: &str, max_length: usize, text: &str) -> bool {
        regex::Regex::new(pattern).unwrap().is_match(text) && text.chars().count() <= max_length
    }

    /// Every sample is judged alike by the schema and by the parser.
    fn agree(pattern: &str, max_length: usize, parses: impl Fn(&str) -> bool, samples: &[&str]) {
        for sample in samples {
            assert_eq!(
                admits(pattern, max_length, sample),
                parses(sample),
                "{pattern} (max {max_length}) and the parser disagree on {sample:?}"
            );
        }
    }

    const NAMES: &[&str] = &[
        "",
        "a",
        "AAPL",
        "btc-usd",
        "ES.F",
        "A.B.C.D",
        "A.B.C.D.E",
        "A..B",
        ".A",
        "A.",
        ".",
        "-",
        "_",
        "a b",
        "a/b",
        "a:b",
        "{a}",
        "ÄPPL",
        "a+b",
        "3.2.0",
        "1.0+build.5",
        "*",
        "**",
        "a.*",
        "a.**",
        "**.a",
        "a.*.b",
        "a.***",
        "*a",
        "a\n",
        "\u{3000}",
        "AAPL:1h",
        "aapl:1w",
        "AAPL:2h",
        "AAPL:",
        ":1h",
        "ES.F:15m",
        "30m",
        "1h",
        "0h",
        "1000000m",
        "999999w",
        "1x",
        "h",
        "rsi14",
        "Type_1",
        "Type-1",
    ];

    fn lengths(stem: &str) -> Vec<String> {
        [31, 32, 33, 63, 64, 65, 255, 256, 257]
            .into_iter()
            .map(|n| stem.repeat(n))
            .collect()
    }

    fn samples() -> Vec<String> {
        let mut samples: Vec<String> = NAMES.iter().map(|s| (*s).to_owned()).collect();
        samples.extend(lengths("x"));
        samples.extend(lengths("x.").into_iter().map(|s| s.trim_end_matches('.').to_owned()));
        samples.extend((14..=18).map(|n| vec!["ab"; n].join(".")));
        samples.extend((14..=18).map(|n| format!("{}.**", vec!["*"; n].join("."))));
        for instrument in ["X".repeat(32), "X".repeat(33), format!("{}.X", "X".repeat(30))] {
            samples.extend(["1m", "15m", "1w", "2h"].map(|timeframe| format!("{instrument}:{timeframe}")));
        }
        samples
    }

    #[test]
    fn the_patterns_admit_what_the_parsers_accept() {
        let samples = samples();
        let samples: Vec<&str> = samples.iter().map(String::as_str).collect();
        agree(&topic_pattern(), 256, |s| s.parse::<Topic>().is_ok(), &samples);
        agree(
            &topic_filter_pattern(),
            256,
            |s| s.parse::<TopicPattern>().is_ok(),
            &samples,
        );
        agree(EVENT_TYPE_PATTERN, 64, is_type_name, &samples);
        agree(
            INSTRUMENT_PATTERN,
            Instrument::MAX_LEN,
            |s| s.parse::<Instrument>().is_ok(),
            &samples,
        );
        for sample in &samples {
            let admitted = forecast_key_branches().any(|(pattern, max_length)| admits(&pattern, max_length, sample));
            assert_eq!(
                admitted,
                sample.parse::<ForecastKey>().is_ok(),
                "forecast key {sample:?}"
            );
        }
        agree(HORIZON_PATTERN, 7, |s| s.parse::<Horizon>().is_ok(), &samples);
        agree(MODEL_ID_PATTERN, 64, |s| ModelRef::new(s, "1").is_ok(), &samples);
        agree(MODEL_VERSION_PATTERN, 64, |s| ModelRef::new("m", s).is_ok(), &samples);
    }

    /// The limits the forecast's schema gives are the ones `Forecast::validate` applies.
    #[test]
    fn the_forecast_schema_has_the_checked_limits() {
        use utoipa::PartialSchema;
        let schema = serde_json::to_value(crate::domain::Forecast::schema()).unwrap();
        let properties = &schema["properties"];
        assert_eq!(
            properties["intervals"]["maxItems"],
            crate::domain::Forecast::MAX_INTERVALS
        );
        assert_eq!(
            properties["quantiles"]["maxProperties"],
            crate::domain::Forecast::MAX_QUANTILES
        );
    }

    #[test]
    fn the_quantile_pattern_admits_what_forecasts_accept() {
        let samples = [
            "0.5",
            "0.05",
            "0.000001",
            "0.999999",
            "0.50",
            "0.0",
            "0.",
            "0",
            "1",
            "1.0",
            ".5",
            "5e-1",
            "+0.5",
            "0.1234567",
            "0.0000001",
            "00.5",
            "0.5 ",
            "-0.5",
            "0.9999999",
        ];
        agree(QUANTILE_LEVEL_PATTERN, 8, crate::domain::is_quantile_level, &samples);
    }
}
