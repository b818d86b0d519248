//! API tokens made through `/admin/v1/tokens` (and the admin token generated at first start): kept by
//! hash only, never deleted but revoked, so a revoked token cannot come back by any path.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Result, StorageError};

/// A token as stored. `hash` is `sha256:` and the hex digest of the secret; the secret itself is shown
/// once, when the token is made, and kept nowhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredToken {
    pub id: String,
    pub name: String,
    pub hash: String,
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
    pub created_at_ms: u64,
    /// Name of the token that made it (`origin` for the generated admin token).
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_ms: Option<u64>,
}

impl StoredToken {
    pub fn encode(&self) -> Result<String> {
        serde_json::to_string(self).map_err(StorageError::corrupt)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(StorageError::corrupt)
    }
}

#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Stores `token` unless one with its id is stored; answers whether it was.
    async fn add_token(&self, token: &StoredToken) -> Result<bool>;

    /// Every stored token, revoked ones included, in no particular order.
    async fn tokens(&self) -> Result<Vec<StoredToken>>;

    /// Marks a token revoked at `at_ms` (a token revoked before keeps its time). Answers the token as
    /// now stored, or `None` when there is no such token.
    async fn revoke_token(&self, id: &str, at_ms: u64) -> Result<Option<StoredToken>>;
}
