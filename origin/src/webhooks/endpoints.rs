//! What is checked about a stored endpoint and read from it, apart from its target (`target`): the
//! custom headers it adds to its requests ([`check_headers`]), the secrets that sign its messages
//! ([`signing_secrets`]) and the filter its events are matched with ([`filter`]).
//!
//! Invariant: a custom header never replaces one the dispatcher sets (the `webhook-*` headers of
//! the signature, the framing fields), so a receiver's check of the signature cannot be defeated
//! through an endpoint's settings.

use std::collections::{BTreeMap, HashSet};

use reqwest::header::HeaderName;
use shared::events::TopicPattern;
use shared::webhooks::Secret;

use crate::events::Filter;
use crate::storage::webhooks::StoredEndpoint;

/// A custom header's name: an HTTP token.
pub const HEADER_NAME_PATTERN: &str = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";
/// A custom header's value: visible ASCII, spaces and tabs.
pub const HEADER_VALUE_PATTERN: &str = "^[\\t\\x20-\\x7e]*$";
/// The most custom headers of an endpoint.
pub const MAX_HEADERS: usize = 20;
/// The longest custom header value (and name).
pub const MAX_HEADER_VALUE: usize = 1024;

/// The headers every request sets itself.
const RESERVED_HEADERS: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
];

/// Why an endpoint's custom headers are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("at most {MAX_HEADERS} custom headers")]
    TooMany,
    #[error("the header name `{0}` is longer than {MAX_HEADER_VALUE} bytes")]
    NameTooLong(String),
    #[error("`{0}` is not a header name")]
    NotAName(String),
    #[error("header `{0}` is set by the dispatcher")]
    Reserved(String),
    #[error("header `{0}` is given twice")]
    Twice(String),
    #[error("the value of header `{0}` must hold only visible ASCII, spaces and tabs")]
    ValueNotVisible(String),
    #[error("the value of header `{0}` is longer than {MAX_HEADER_VALUE} bytes")]
    ValueTooLong(String),
}

/// Checks the custom headers an endpoint adds to its requests.
pub fn check_headers(headers: &BTreeMap<String, String>) -> Result<(), HeaderError> {
    if headers.len() > MAX_HEADERS {
        return Err(HeaderError::TooMany);
    }
    let mut seen = HashSet::new();
    for (name, value) in headers {
        if name.len() > MAX_HEADER_VALUE {
            return Err(HeaderError::NameTooLong(name.clone()));
        }
        let parsed = HeaderName::from_bytes(name.as_bytes()).map_err(|_| HeaderError::NotAName(name.clone()))?;
        if RESERVED_HEADERS.contains(&parsed.as_str()) {
            return Err(HeaderError::Reserved(name.clone()));
        }
        if !seen.insert(parsed) {
            return Err(HeaderError::Twice(name.clone()));
        }
        if !value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
            return Err(HeaderError::ValueNotVisible(name.clone()));
        }
        if value.len() > MAX_HEADER_VALUE {
            return Err(HeaderError::ValueTooLong(name.clone()));
        }
    }
    Ok(())
}

/// The secrets that sign a message at `now_ms`: the current one and those rotated out but not expired.
pub fn signing_secrets(endpoint: &StoredEndpoint, now_ms: u64) -> Vec<Secret> {
    endpoint
        .secrets
        .iter()
        .filter(|s| s.expires_at_ms.is_none_or(|at| at > now_ms))
        .filter_map(|s| Secret::parse(&s.secret).ok())
        .collect()
}

/// The events `endpoint` takes: its topics and types. `None` when a stored topic pattern does not
/// parse (the API stores none such).
pub fn filter(endpoint: &StoredEndpoint) -> Option<Filter> {
    let topics = endpoint
        .topics
        .iter()
        .map(|t| t.parse::<TopicPattern>())
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    Some(Filter {
        topics,
        types: endpoint.types.as_ref().map(|t| t.iter().cloned().collect()),
        instruments: None,
    })
}

/// An endpoint as stored, for the tests of the modules that read one.
#[cfg(test)]
pub fn example() -> StoredEndpoint {
    serde_json::from_value(serde_json::json!({
        "id": "ep_a", "revision": 1, "url": "https://hooks.example.com/", "topics": ["indicators.**"],
        "enabled": true, "secrets": [], "created_at_ms": 0, "updated_at_ms": 0,
    }))
    .expect("an endpoint as stored")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::webhooks::StoredSecret;

    fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn custom_headers_may_not_replace_the_signature() {
        assert!(check_headers(&headers(&[("x-team", "quant")])).is_ok());
        assert_eq!(
            check_headers(&headers(&[("Webhook-Signature", "v1,x")])),
            Err(HeaderError::Reserved("Webhook-Signature".into()))
        );
        assert_eq!(
            check_headers(&headers(&[("bad name", "x")])),
            Err(HeaderError::NotAName("bad name".into()))
        );
        assert_eq!(
            check_headers(&headers(&[("x-a", "line\nbreak")])),
            Err(HeaderError::ValueNotVisible("x-a".into()))
        );
    }

    #[test]
    fn custom_headers_are_bounded_and_given_once() {
        let many: Vec<String> = (0..=MAX_HEADERS).map(|n| format!("x-{n}")).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|name| (name.as_str(), "v")).collect();
        assert_eq!(check_headers(&headers(&many)), Err(HeaderError::TooMany));
        assert_eq!(
            check_headers(&headers(&[("X-Team", "a"), ("x-team", "b")])),
            Err(HeaderError::Twice("x-team".into()))
        );
        let long = "v".repeat(MAX_HEADER_VALUE + 1);
        assert_eq!(
            check_headers(&headers(&[("x-a", long.as_str())])),
            Err(HeaderError::ValueTooLong("x-a".into()))
        );
        assert_eq!(
            check_headers(&headers(&[(long.as_str(), "v")])),
            Err(HeaderError::NameTooLong(long.clone()))
        );
    }

    #[test]
    fn messages_say_which_header_and_why() {
        assert_eq!(
            HeaderError::Reserved("Host".into()).to_string(),
            "header `Host` is set by the dispatcher"
        );
        assert_eq!(HeaderError::TooMany.to_string(), "at most 20 custom headers");
    }

    #[test]
    fn rotated_out_secrets_sign_until_they_expire() {
        let secret = |expires_at_ms| StoredSecret {
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            expires_at_ms,
        };
        let endpoint = StoredEndpoint {
            secrets: vec![secret(None), secret(Some(1_000))],
            ..example()
        };
        assert_eq!(signing_secrets(&endpoint, 999).len(), 2);
        assert_eq!(signing_secrets(&endpoint, 1_000).len(), 1);
    }

    #[test]
    fn an_endpoint_takes_its_topics_and_types() {
        let endpoint = StoredEndpoint {
            types: Some(vec!["IndicatorUpdated".into()]),
            ..example()
        };
        assert_eq!(
            filter(&endpoint),
            Some(Filter {
                topics: vec!["indicators.**".parse().unwrap()],
                types: Some(HashSet::from(["IndicatorUpdated".to_owned()])),
                instruments: None,
            })
        );
        let corrupt = StoredEndpoint {
            topics: vec!["indicators..**".into()],
            ..example()
        };
        assert_eq!(filter(&corrupt), None);
    }
}
