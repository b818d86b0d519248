//! Bearer tokens with scopes. Tokens are known only by their SHA-256; a presented token is hashed and
//! compared with every configured hash in constant time, so neither a match nor its position leaks.

use std::sync::{Arc, PoisonError, RwLock};

use axum::http::{HeaderMap, header};
use hex::FromHex as _;
use ring::digest;
use serde::{Deserialize, Serialize};
use shared::events::TopicPattern;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::config::TokenConfig;
use crate::storage::tokens::StoredToken;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Scope {
    #[serde(rename = "forecasts:read")]
    ForecastsRead,
    #[serde(rename = "forecasts:write")]
    ForecastsWrite,
    #[serde(rename = "audit:read")]
    AuditRead,
    #[serde(rename = "invalidations:read")]
    InvalidationsRead,
    #[serde(rename = "invalidations:write")]
    InvalidationsWrite,
    #[serde(rename = "events:publish")]
    EventsPublish,
    /// Streams of the topics the token's `topics` allow.
    #[serde(rename = "events:subscribe")]
    EventsSubscribe,
    /// Webhook endpoints: register, change, rotate secrets, replay.
    #[serde(rename = "webhooks:admin")]
    WebhooksAdmin,
    #[serde(rename = "tokens:admin")]
    TokensAdmin,
    #[serde(rename = "metrics:read")]
    MetricsRead,
    /// Every scope.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::ForecastsRead => "forecasts:read",
            Scope::ForecastsWrite => "forecasts:write",
            Scope::AuditRead => "audit:read",
            Scope::InvalidationsRead => "invalidations:read",
            Scope::InvalidationsWrite => "invalidations:write",
            Scope::EventsPublish => "events:publish",
            Scope::EventsSubscribe => "events:subscribe",
            Scope::WebhooksAdmin => "webhooks:admin",
            Scope::TokensAdmin => "tokens:admin",
            Scope::MetricsRead => "metrics:read",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
    }
}

/// Who made a request, once its token was recognised.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    scopes: Vec<Scope>,
    /// The topics its subscriptions may cover; empty: all.
    topics: Vec<TopicPattern>,
}

impl Principal {
    /// 403 unless every pattern of a subscription lies within the topics this token allows.
    pub fn allow_topics(&self, wanted: &[TopicPattern]) -> Result<(), ApiError> {
        self.require(Scope::EventsSubscribe)?;
        if self.topics.is_empty() {
            return Ok(());
        }
        match wanted
            .iter()
            .find(|w| !self.topics.iter().any(|allowed| w.within(allowed)))
        {
            None => Ok(()),
            Some(outside) => Err(ApiError::forbidden(format!(
                "token {:?} may not subscribe to {outside}: its topics are {}",
                self.name,
                self.topics
                    .iter()
                    .map(TopicPattern::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            ))),
        }
    }

    /// Whether its subscriptions are limited to some topics.
    pub fn has_topic_limits(&self) -> bool {
        !self.topics.is_empty()
    }

    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.iter().any(|&s| s == scope || s == Scope::Admin) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "token {:?} lacks the scope {}",
                self.name,
                scope.name()
            )))
        }
    }
}

struct Token {
    name: String,
    hash: [u8; 32],
    scopes: Vec<Scope>,
    topics: Vec<TopicPattern>,
    /// Unix ms from which it is refused; `None`: never.
    expires_at_ms: Option<u64>,
}

impl Token {
    /// A stored token that may authenticate: not revoked, and well-formed (a malformed one is logged
    /// and left out, never trusted).
    fn of_stored(stored: &StoredToken) -> Option<Self> {
        if stored.revoked_at_ms.is_some() {
            return None;
        }
        let parsed = (|| {
            let hash = parse_hash(&stored.hash)?;
            let scopes = stored.scopes.iter().map(|s| Scope::parse(s)).collect::<Option<_>>()?;
            let topics = stored.topics.iter().map(|t| t.parse().ok()).collect::<Option<_>>()?;
            Some(Self {
                name: stored.name.clone(),
                hash,
                scopes,
                topics,
                expires_at_ms: stored.expires_at_ms,
            })
        })();
        if parsed.is_none() {
            tracing::error!(id = %stored.id, "stored token is malformed and cannot authenticate");
        }
        parsed
    }
}

/// Knows every token: those of the configuration (fixed) and those of the store (made through
/// `/admin/v1/tokens`, replaced whenever the store is read again).
pub struct Authenticator {
    tokens: Vec<Token>,
    stored: RwLock<Arc<Vec<Token>>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: hashes stay out of logs too.
        f.debug_list().entries(self.tokens.iter().map(|t| &t.name)).finish()
    }
}

/// `bytes` random bytes from the system's generator, as lowercase hex; `None` without randomness.
pub fn random_hex(bytes: usize) -> Option<String> {
    use ring::rand::SecureRandom;
    let mut buffer = vec![0u8; bytes];
    ring::rand::SystemRandom::new().fill(&mut buffer).ok()?;
    Some(hex::encode(buffer))
}

pub fn hash_token(token: &str) -> [u8; 32] {
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
    hash
}

/// The configuration form of a token's hash: `sha256:` and 64 hex digits.
pub fn format_hash(hash: &[u8; 32]) -> String {
    format!("sha256:{}", hex::encode(hash))
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    <[u8; 32]>::from_hex(text.strip_prefix("sha256:")?).ok()
}

impl Authenticator {
    /// Checks configured tokens; `extra` are `(name, hash)` pairs holding every scope.
    pub fn new(configured: &[TokenConfig], extra: &[(&str, [u8; 32])]) -> anyhow::Result<Self> {
        let mut tokens = Vec::with_capacity(configured.len() + extra.len());
        for token in configured {
            let hash = parse_hash(&token.hash)
                .ok_or_else(|| anyhow::anyhow!("token {:?}: hash must be sha256: and 64 hex digits", token.name))?;
            let scopes = token
                .scopes
                .iter()
                .map(|s| Scope::parse(s).ok_or_else(|| anyhow::anyhow!("token {:?}: unknown scope {s:?}", token.name)))
                .collect::<anyhow::Result<_>>()?;
            let topics = token
                .topics
                .iter()
                .map(|t| t.parse().map_err(|e| anyhow::anyhow!("token {:?}: {e}", token.name)))
                .collect::<anyhow::Result<_>>()?;
            tokens.push(Token {
                name: token.name.clone(),
                hash,
                scopes,
                topics,
                expires_at_ms: None,
            });
        }
        for (name, hash) in extra {
            tokens.push(Token {
                name: (*name).to_owned(),
                hash: *hash,
                scopes: vec![Scope::Admin],
                topics: Vec::new(),
                expires_at_ms: None,
            });
        }
        Ok(Self {
            tokens,
            stored: RwLock::default(),
        })
    }

    /// Takes the stored tokens as they are now: made ones authenticate, revoked ones no longer do.
    pub fn set_stored(&self, stored: &[StoredToken]) {
        let tokens: Vec<Token> = stored.iter().filter_map(Token::of_stored).collect();
        *self.stored.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(tokens);
    }

    /// The names of the configured tokens (the stored ones are listed from the store).
    pub fn configured_names(&self) -> Vec<String> {
        self.tokens.iter().map(|token| token.name.clone()).collect()
    }

    pub fn parse_stored_hash(text: &str) -> Option<[u8; 32]> {
        parse_hash(text)
    }

    /// The principal behind the request's bearer token: 401 when it is missing or unknown.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("Authorization must be: Bearer <token>"))?;
        let presented = hash_token(token);
        let stored = self.stored.read().unwrap_or_else(PoisonError::into_inner).clone();
        let mut found: Option<&Token> = None;
        for candidate in self.tokens.iter().chain(stored.iter()) {
            if bool::from(candidate.hash.ct_eq(&presented)) && found.is_none() {
                found = Some(candidate);
            }
        }
        let found = found.ok_or_else(|| ApiError::unauthorized("unknown token"))?;
        let now = shared::time::unix_ms_now();
        if found.expires_at_ms.is_some_and(|expires| expires <= now) {
            return Err(ApiError::unauthorized("this token has expired"));
        }
        Ok(Principal {
            name: found.name.clone(),
            scopes: found.scopes.clone(),
            topics: found.topics.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn tokens_are_known_by_hash_and_scoped() {
        let writer = TokenConfig {
            name: "writer".into(),
            hash: format_hash(&hash_token("w-secret")),
            scopes: vec!["forecasts:write".into()],
            topics: Vec::new(),
        };
        let auth = Authenticator::new(&[writer], &[("bootstrap", hash_token("b-secret"))]).unwrap();
        let principal = auth.authenticate(&headers("Bearer w-secret")).unwrap();
        assert_eq!(principal.name, "writer");
        assert!(principal.require(Scope::ForecastsWrite).is_ok());
        assert_eq!(principal.require(Scope::AuditRead).unwrap_err().status.as_u16(), 403);
        let admin = auth.authenticate(&headers("Bearer b-secret")).unwrap();
        assert!(admin.require(Scope::AuditRead).is_ok());
        for bad in ["Bearer nope", "Basic abc", "Bearer ", "w-secret"] {
            assert_eq!(
                auth.authenticate(&headers(bad)).unwrap_err().status.as_u16(),
                401,
                "{bad}"
            );
        }
        assert_eq!(auth.authenticate(&HeaderMap::new()).unwrap_err().status.as_u16(), 401);
    }

    #[test]
    fn bad_token_config_is_refused() {
        let bad_hash = TokenConfig {
            name: "x".into(),
            hash: "abc".into(),
            scopes: vec![],
            topics: Vec::new(),
        };
        assert!(Authenticator::new(&[bad_hash], &[]).is_err());
        let bad_scope = TokenConfig {
            name: "x".into(),
            hash: format_hash(&hash_token("t")),
            scopes: vec!["root".into()],
            topics: Vec::new(),
        };
        assert!(Authenticator::new(&[bad_scope], &[]).is_err());
        let bad_topic = TokenConfig {
            name: "x".into(),
            hash: format_hash(&hash_token("t")),
            scopes: vec!["events:subscribe".into()],
            topics: vec!["a.**.b".into()],
        };
        assert!(Authenticator::new(&[bad_topic], &[]).is_err());
    }

    #[test]
    fn subscriber_tokens_reach_only_their_topics() {
        let reader = TokenConfig {
            name: "desk".into(),
            hash: format_hash(&hash_token("d-secret")),
            scopes: vec!["events:subscribe".into()],
            topics: vec!["indicators.AAPL.*".into(), "summaries.**".into()],
        };
        let writer = TokenConfig {
            name: "writer".into(),
            hash: format_hash(&hash_token("w-secret")),
            scopes: vec!["forecasts:write".into()],
            topics: Vec::new(),
        };
        let auth = Authenticator::new(&[reader, writer], &[]).unwrap();
        let desk = auth.authenticate(&headers("Bearer d-secret")).unwrap();
        let patterns = |list: &[&str]| -> Vec<TopicPattern> { list.iter().map(|p| p.parse().unwrap()).collect() };
        assert!(
            desk.allow_topics(&patterns(&["indicators.AAPL.rsi14", "summaries.AAPL"]))
                .is_ok()
        );
        let refused = desk.allow_topics(&patterns(&["indicators.**"])).unwrap_err();
        assert_eq!(refused.status.as_u16(), 403);
        let writer = auth.authenticate(&headers("Bearer w-secret")).unwrap();
        assert_eq!(
            writer
                .allow_topics(&patterns(&["summaries.AAPL"]))
                .unwrap_err()
                .status
                .as_u16(),
            403
        );
    }
}
