//! The public reads of forecasts, below HTTP routing: what a read names ([`Read`]) and its
//! representation ([`Forecasts::read`]). The read API answers through it, and so does warming, which
//! pushes to edges exactly what they would fetch.

use std::sync::Arc;

use axum::http::StatusCode;
use shared::domain::{DomainError, ForecastKey, Instrument, Timeframe};

use crate::cache::Entry;
use crate::forecasts::Forecasts;
use crate::invalidation::forecast_tag;
use crate::representation::{Rendered, Representation};
use crate::storage::StorageError;

/// The forecast API's read prefix.
pub const FORECASTS: &str = "/v1/forecasts";

/// One read of the public API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// `/v1/forecasts/{instrument}/{timeframe}`: the current version.
    Current(ForecastKey),
    /// `/v1/forecasts/{instrument}/{timeframe}/versions/{version}`: one version, immutable.
    Version(ForecastKey, u64),
    /// `/v1/forecasts/{instrument}`: the current version of every timeframe.
    Instrument(Instrument),
    /// `/v1/forecasts?keys=…`: the current versions of several forecasts, in order, without repeats.
    Batch(Vec<ForecastKey>),
}

/// Where the current versions are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Through {
    /// The L1 cache when it is on (the read API).
    Cache,
    /// Storage itself, which changes made through other origins reach first (warming).
    Store,
}

/// Why a read has no representation.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The read is malformed; `code` names what is wrong.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl ReadError {
    fn invalid(code: &'static str, error: impl ToString) -> Self {
        Self::Invalid {
            code,
            message: error.to_string(),
        }
    }

    /// The HTTP status of the answer to such a read.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Invalid { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound(_) | Self::Storage(StorageError::VersionNotFound { .. }) => StatusCode::NOT_FOUND,
            Self::Storage(StorageError::VersionTrimmed { .. }) => StatusCode::GONE,
            Self::Storage(StorageError::Corrupt(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

pub fn instrument(raw: &str) -> Result<Instrument, ReadError> {
    raw.parse()
        .map_err(|error: DomainError| ReadError::invalid("invalid_instrument", error))
}

pub fn forecast_key(instrument_raw: &str, timeframe_raw: &str) -> Result<ForecastKey, ReadError> {
    let timeframe: Timeframe = timeframe_raw
        .parse()
        .map_err(|error: DomainError| ReadError::invalid("invalid_timeframe", error))?;
    Ok(ForecastKey::new(instrument(instrument_raw)?, timeframe))
}

/// The largest id, sequence or version the API takes: the largest int64, as its document says, so
/// that every client can hold it.
pub const MAX_INTEGER: u64 = i64::MAX.unsigned_abs();

/// A whole number written in decimal digits (no sign), at most [`MAX_INTEGER`].
pub fn whole_number(raw: &str) -> Option<u64> {
    let digits = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit());
    digits
        .then(|| raw.parse::<u64>().ok())
        .flatten()
        .filter(|&n| n <= MAX_INTEGER)
}

/// A version number: a positive whole number.
pub fn version_number(raw: &str) -> Result<u64, ReadError> {
    whole_number(raw)
        .filter(|&n| n > 0)
        .ok_or_else(|| ReadError::invalid("invalid_version", format!("version {raw:?} must be a positive integer")))
}

/// The keys of a batch read, `INSTRUMENT:TIMEFRAME` comma-separated: at most `max` of them (a key
/// given twice counts twice and is answered once), at least one.
pub fn batch_keys(raw: &str, max: usize) -> Result<Vec<ForecastKey>, ReadError> {
    let mut keys: Vec<ForecastKey> = Vec::new();
    for (index, part) in raw.split(',').filter(|_| !raw.is_empty()).enumerate() {
        if index == max {
            return Err(ReadError::invalid(
                "batch_too_large",
                format!("at most {max} keys per batch read"),
            ));
        }
        let key: ForecastKey = part
            .parse()
            .map_err(|error: DomainError| ReadError::invalid("invalid_key", error))?;
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    if keys.is_empty() {
        return Err(ReadError::invalid(
            "missing_keys",
            "give keys=INSTRUMENT:TIMEFRAME,… such as keys=AAPL:1h",
        ));
    }
    Ok(keys)
}

impl Read {
    /// The read a path and query names, as the read API routes it: `None` when it names none.
    /// `max_batch_reads` bounds a batch read's keys.
    pub fn parse(path_and_query: &str, max_batch_reads: usize) -> Option<Result<Self, ReadError>> {
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        let rest = path.strip_prefix(FORECASTS)?;
        if rest.is_empty() {
            return Some(batch_query(query, max_batch_reads).map(Self::Batch));
        }
        let segments: Vec<&str> = rest.strip_prefix('/')?.split('/').collect();
        if segments.iter().any(|segment| segment.is_empty()) {
            return None;
        }
        Some(match segments.as_slice() {
            [instrument_raw] => instrument(instrument_raw).map(Self::Instrument),
            [instrument, timeframe] => forecast_key(instrument, timeframe).map(Self::Current),
            [instrument, timeframe, "versions", version] => {
                forecast_key(instrument, timeframe).and_then(|key| Ok(Self::Version(key, version_number(version)?)))
            }
            _ => return None,
        })
    }
}

/// The keys of a batch read's query: `keys=` once, and nothing else.
fn batch_query(query: &str, max_batch_reads: usize) -> Result<Vec<ForecastKey>, ReadError> {
    let mut keys = None;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if name != "keys" || keys.is_some() {
            return Err(ReadError::invalid(
                "invalid_query",
                format!("a batch read takes keys= once, not {name}="),
            ));
        }
        keys = Some(value);
    }
    batch_keys(keys.as_deref().unwrap_or_default(), max_batch_reads)
}

impl Forecasts {
    /// The representation a read answers with.
    pub async fn read(&self, read: &Read, through: Through) -> Result<Representation, ReadError> {
        match read {
            Read::Current(key) => {
                let found = match through {
                    Through::Cache => self.current(key).await?,
                    Through::Store => self.stored_many(std::slice::from_ref(key)).await?.pop().flatten(),
                };
                let rendered = found.ok_or_else(|| ReadError::NotFound(format!("no forecast for {key}")))?;
                Ok(Representation::single(&rendered, false))
            }
            Read::Version(key, version) => Ok(Representation::single(&self.version(key, *version).await?, true)),
            Read::Instrument(instrument) => {
                let keys: Vec<ForecastKey> = Timeframe::ALL
                    .iter()
                    .map(|&timeframe| ForecastKey::new(instrument.clone(), timeframe))
                    .collect();
                let found = self.current_through(&keys, through).await?;
                let members: Vec<&Rendered> = found.iter().flatten().map(Arc::as_ref).collect();
                // The list answers for every timeframe, present or not: the first write of one must purge it too.
                let tags: Vec<String> = std::iter::once(instrument.to_string())
                    .chain(keys.iter().map(forecast_tag))
                    .collect();
                Ok(Representation::list(&members, &[], &tags))
            }
            Read::Batch(keys) => {
                let found = self.current_through(keys, through).await?;
                let members: Vec<&Rendered> = found.iter().flatten().map(Arc::as_ref).collect();
                let missing: Vec<ForecastKey> = keys
                    .iter()
                    .zip(&found)
                    .filter(|(_, entry)| entry.is_none())
                    .map(|(key, _)| key.clone())
                    .collect();
                let tags: Vec<String> = missing.iter().map(forecast_tag).collect();
                Ok(Representation::list(&members, &missing, &tags))
            }
        }
    }

    async fn current_through(&self, keys: &[ForecastKey], through: Through) -> Result<Vec<Entry>, StorageError> {
        match through {
            Through::Cache => self.current_many(keys).await,
            Through::Store => self.stored_many(keys).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> ForecastKey {
        text.parse().unwrap()
    }

    #[test]
    fn paths_name_the_reads_the_api_routes() {
        let read = |path: &str| Read::parse(path, 3).map(|read| read.map_err(|error| error.status()));
        assert_eq!(read("/v1/forecasts/aapl/1h"), Some(Ok(Read::Current(key("AAPL:1h")))));
        assert_eq!(
            read("/v1/forecasts/AAPL/1h/versions/3"),
            Some(Ok(Read::Version(key("AAPL:1h"), 3)))
        );
        assert_eq!(
            read("/v1/forecasts/ES.F"),
            Some(Ok(Read::Instrument("ES.F".parse().unwrap())))
        );
        assert_eq!(
            read("/v1/forecasts?keys=AAPL:1h,MSFT:1d,AAPL:1h"),
            Some(Ok(Read::Batch(vec![key("AAPL:1h"), key("MSFT:1d")])))
        );
        for (path, status) in [
            ("/v1/forecasts/AAPL/2h", StatusCode::BAD_REQUEST),
            ("/v1/forecasts/AAPL/1h/versions/0", StatusCode::BAD_REQUEST),
            ("/v1/forecasts?keys=A:1h,B:1h,C:1h,D:1h", StatusCode::BAD_REQUEST),
            ("/v1/forecasts?keys=", StatusCode::BAD_REQUEST),
            ("/v1/forecasts?key=AAPL:1h", StatusCode::BAD_REQUEST),
        ] {
            assert_eq!(read(path), Some(Err(status)), "{path}");
        }
        for elsewhere in [
            "/v1/forecastsX",
            "/v1/forecasts/",
            "/v1/forecasts/A/1h/x",
            "/v1/stream",
            "/",
        ] {
            assert_eq!(read(elsewhere), None, "{elsewhere}");
        }
    }
}
