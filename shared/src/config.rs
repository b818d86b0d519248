//! Layered configuration: compiled-in defaults, then an optional TOML file, then environment variables
//! with a prefix and `__` between levels (`ORIGIN_HTTP__LISTEN` sets `http.listen`).

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(#[from] Box<figment::Error>);

/// Reads `T` from its defaults, `file` when given, and the environment variables starting with `env_prefix`.
///
/// Environment values are parsed like TOML scalars, so `true` is a boolean and `8` a number.
pub fn load<T>(env_prefix: &str, file: Option<&Path>) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(file) = file {
        figment = figment.merge(Toml::file_exact(file));
    }
    figment
        .merge(Env::prefixed(env_prefix).split("__"))
        .extract()
        .map_err(|e| ConfigError(Box::new(e)))
}

/// Reads `T` from TOML text alone, without defaults or environment: used to check shipped config files.
pub fn from_toml<T: DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    Figment::from(Toml::string(text))
        .extract()
        .map_err(|e| ConfigError(Box::new(e)))
}

/// Deserializes an empty string as `None`, so `ORIGIN_STORAGE__REDIS_URL=` means "not configured".
pub mod empty_as_none {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<String>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(value.as_deref().unwrap_or(""))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
        let value = Option::<String>::deserialize(deserializer)?;
        Ok(value.filter(|s| !s.trim().is_empty()))
    }
}

/// A list written as one comma-separated string, as environment variables carry it.
pub mod comma_list {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(list: &[String], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&list.join(","))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(String::from)
            .collect())
    }
}

/// Durations written as one comma-separated string (`0s,5s,5m`), as environment variables carry them.
pub mod duration_list {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(list: &[Duration], serializer: S) -> Result<S::Ok, S::Error> {
        let texts: Vec<String> = list
            .iter()
            .map(|d| humantime::format_duration(*d).to_string())
            .collect();
        serializer.serialize_str(&texts.join(","))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Duration>, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| humantime::parse_duration(item).map_err(|e| D::Error::custom(format!("`{item}`: {e}"))))
            .collect()
    }
}

/// An address that may be left empty (`""` means none), as environment variables carry it.
pub mod optional_address {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(address: &Option<SocketAddr>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&address.map(|a| a.to_string()).unwrap_or_default())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(deserializer)?;
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        text.parse().map(Some).map_err(serde::de::Error::custom)
    }
}
