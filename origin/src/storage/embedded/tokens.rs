//! API tokens in a table of the embedded store.

use async_trait::async_trait;
use redb::{ReadableTable, TableDefinition};

use super::{EmbeddedStore, fail};
use crate::storage::Result;
use crate::storage::tokens::{StoredToken, TokenStore};

/// Token id → [`StoredToken`] as JSON.
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");

pub(super) fn create_tables(txn: &redb::WriteTransaction) -> Result<()> {
    txn.open_table(TOKENS).map_err(fail)?;
    Ok(())
}

#[async_trait]
impl TokenStore for EmbeddedStore {
    async fn add_token(&self, token: &StoredToken) -> Result<bool> {
        let id = token.id.clone();
        let json = token.encode()?;
        self.change(move |txn| {
            let mut tokens = txn.open_table(TOKENS).map_err(fail)?;
            if tokens.get(id.as_str()).map_err(fail)?.is_some() {
                return Ok(false);
            }
            tokens.insert(id.as_str(), json.as_bytes()).map_err(fail)?;
            Ok(true)
        })
        .await
    }

    async fn tokens(&self) -> Result<Vec<StoredToken>> {
        self.read(|txn| {
            let tokens = txn.open_table(TOKENS).map_err(fail)?;
            let mut found = Vec::new();
            for entry in tokens.iter().map_err(fail)? {
                let (_, raw) = entry.map_err(fail)?;
                found.push(StoredToken::decode(raw.value())?);
            }
            Ok(found)
        })
    }

    async fn revoke_token(&self, id: &str, at_ms: u64) -> Result<Option<StoredToken>> {
        let id = id.to_owned();
        self.change(move |txn| {
            let mut tokens = txn.open_table(TOKENS).map_err(fail)?;
            let Some(mut token) = tokens
                .get(id.as_str())
                .map_err(fail)?
                .map(|raw| StoredToken::decode(raw.value()))
                .transpose()?
            else {
                return Ok(None);
            };
            if token.revoked_at_ms.is_none() {
                token.revoked_at_ms = Some(at_ms);
                tokens.insert(id.as_str(), token.encode()?.as_bytes()).map_err(fail)?;
            }
            Ok(Some(token))
        })
        .await
    }
}
