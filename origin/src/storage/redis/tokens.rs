//! API tokens in one Redis hash, `auth:tokens`.

use async_trait::async_trait;

use super::RedisStore;
use crate::storage::keys;
use crate::storage::tokens::{StoredToken, TokenStore};
use crate::storage::{Result, StorageError};

/// Replaces a token's JSON only if it is still what was read. KEYS[1] the hash; ARGV: id, the JSON
/// read, the new JSON. Returns 1 when replaced.
const REPLACE_SCRIPT: &str = r#"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"#;

/// Attempts of a revocation racing other changes of the same token.
const REVOKE_ATTEMPTS: usize = 8;

impl RedisStore {
    async fn token_json(&self, id: &str) -> Result<Option<String>> {
        self.run(|mut c| async move { redis::cmd("HGET").arg(keys::TOKENS).arg(id).query_async(&mut c).await })
            .await
    }
}

#[async_trait]
impl TokenStore for RedisStore {
    async fn add_token(&self, token: &StoredToken) -> Result<bool> {
        let json = token.encode()?;
        self.run(|mut c| async move {
            redis::cmd("HSETNX")
                .arg(keys::TOKENS)
                .arg(&token.id)
                .arg(&json)
                .query_async::<bool>(&mut c)
                .await
        })
        .await
    }

    async fn tokens(&self) -> Result<Vec<StoredToken>> {
        let values: Vec<Vec<u8>> = self
            .run(|mut c| async move { redis::cmd("HVALS").arg(keys::TOKENS).query_async(&mut c).await })
            .await?;
        values.iter().map(|raw| StoredToken::decode(raw)).collect()
    }

    async fn revoke_token(&self, id: &str, at_ms: u64) -> Result<Option<StoredToken>> {
        for _ in 0..REVOKE_ATTEMPTS {
            let Some(read) = self.token_json(id).await? else {
                return Ok(None);
            };
            let mut token = StoredToken::decode(read.as_bytes())?;
            if token.revoked_at_ms.is_some() {
                return Ok(Some(token));
            }
            token.revoked_at_ms = Some(at_ms);
            let json = token.encode()?;
            let replaced: bool = self
                .run(|mut c| async move {
                    redis::Script::new(REPLACE_SCRIPT)
                        .key(keys::TOKENS)
                        .arg(id)
                        .arg(&read)
                        .arg(&json)
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            if replaced {
                return Ok(Some(token));
            }
        }
        Err(StorageError::unavailable(format!(
            "token {id} kept changing while it was revoked"
        )))
    }
}
