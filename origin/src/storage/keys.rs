//! Every Redis key the origin uses, in one place.
//!
//! Keys of one instrument carry the `{INSTRUMENT}` hash tag, so on Redis Cluster they share one slot and
//! a write can touch them atomically; sharding by instrument is the cluster's job.
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `fc:{AAPL}:1h` | hash | `seq` last version number, `lo` oldest kept, `curv` current version (absent when deleted), `cur` current record JSON, `v:N` record JSON of version N, `pend:N:CHANGE` (value empty) a change of version N (`written`, `rolled_back`, `deleted`) whose event is not appended yet |
//! | `changes:{chg}` | sorted set | `AAPL:1h` members, scored by when (unix ms) a change of them was last about to be made: where pending changes are looked for |
//! | `model:{lstm@3.2.0}` | set | `AAPL:1h` members: keys the model may have versions in (a superset) |
//! | `audit` | stream | field `e`: one audit entry as JSON |
//! | `auth:admin-token` | string | SHA-256 (hex) of the token generated at first start |
//! | `auth:tokens` | hash | token id → [`super::tokens::StoredToken`] JSON (hash of the secret, scopes, expiry, revocation) |
//! | `invalidations:{inv}` | stream | the invalidation log: entry ID `<sequence>-0`, field `t` issued at (unix ms, for trimming by age), field `e` the invalidation as JSON |
//! | `events:{ev}` | stream | the event log: entry ID `<id>-0`, field `t` appended at (unix ms), field `e` the event as JSON |
//! | `events:{ev}:change:AAPL:1h@5` | string | the id of the event a change was announced by, so it is announced once (expires with the log's retention age, at least a day) |
//! | `webhooks:{wh}:endpoints` | hash | endpoint id → endpoint JSON (with its `revision`) |
//! | `webhooks:{wh}:cursor` | string | the last event id dispatched to endpoints |
//! | `webhooks:{wh}:queue` | stream | deliveries due now, field `d` the delivery JSON; consumer group `deliverers` (one consumer per origin): pending entries are taken and not finished, reclaimed with XAUTOCLAIM |
//! | `webhooks:{wh}:later` | sorted set | deliveries due later (retries, replays), scored by due time (unix ms) |
//! | `webhooks:{wh}:dead:<endpoint>` | hash | event id → the delivery that ran out of attempts |
//! | `webhooks:{wh}:attempts:<endpoint>` | list | the newest attempts first, as JSON |
//! | `webhooks:{wh}:counters:<endpoint>` | hash | counter name → count |
//!
//! Each numbered log is one key, so one script appends to it atomically and every origin sharing the
//! Redis numbers its records alike; the fixed hash tags (`{inv}`, `{ev}`) name their Cluster slots,
//! and keep any key added beside them later in the same slot. One key is one partition: the event
//! log is ordered globally. Webhook keys share the `{wh}` slot, so one script moves a delivery between
//! them atomically.

use shared::domain::{ForecastKey, ModelRef};

/// Fields of the per-forecast hash.
pub const SEQ: &str = "seq";
pub const OLDEST: &str = "lo";
pub const CURRENT_VERSION: &str = "curv";
pub const CURRENT_RECORD: &str = "cur";

pub fn forecast(key: &ForecastKey) -> String {
    format!("fc:{{{}}}:{}", key.instrument, key.timeframe)
}

pub fn version_field(version: u64) -> String {
    format!("v:{version}")
}

/// The prefix of the per-forecast hash's fields that mark pending changes, `pend:N:CHANGE`.
pub const PENDING_PREFIX: &str = "pend:";

pub fn pending_field(version: u64, change: &str) -> String {
    format!("{PENDING_PREFIX}{version}:{change}")
}

pub const CHANGE_NOTES: &str = "changes:{chg}";

/// `change` is a [`super::PendingChange::id`].
pub fn change_event(change: &str) -> String {
    format!("events:{{ev}}:change:{change}")
}

pub fn model_directory(model: &ModelRef) -> String {
    format!("model:{{{model}}}")
}

pub const AUDIT: &str = "audit";
pub const AUDIT_FIELD: &str = "e";
pub const ADMIN_TOKEN: &str = "auth:admin-token";
pub const TOKENS: &str = "auth:tokens";
pub const INVALIDATIONS: &str = "invalidations:{inv}";
pub const EVENTS: &str = "events:{ev}";
pub const WEBHOOK_ENDPOINTS: &str = "webhooks:{wh}:endpoints";
pub const WEBHOOK_CURSOR: &str = "webhooks:{wh}:cursor";
pub const WEBHOOK_QUEUE: &str = "webhooks:{wh}:queue";
pub const WEBHOOK_LATER: &str = "webhooks:{wh}:later";
/// The consumer group of the webhook queue, and the field of its entries.
pub const WEBHOOK_GROUP: &str = "deliverers";
pub const WEBHOOK_FIELD: &str = "d";

pub fn webhook_dead(endpoint: &str) -> String {
    format!("webhooks:{{wh}}:dead:{endpoint}")
}

pub fn webhook_attempts(endpoint: &str) -> String {
    format!("webhooks:{{wh}}:attempts:{endpoint}")
}

pub fn webhook_counters(endpoint: &str) -> String {
    format!("webhooks:{{wh}}:counters:{endpoint}")
}

/// The field of a numbered log's entry that holds the record.
pub const LOG_RECORD_FIELD: &str = "e";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_an_instrument_share_a_hash_tag() {
        let key: ForecastKey = "btc-usd:1h".parse().unwrap();
        assert_eq!(forecast(&key), "fc:{BTC-USD}:1h");
        let model = ModelRef::new("lstm", "3.2.0").unwrap();
        assert_eq!(model_directory(&model), "model:{lstm@3.2.0}");
    }
}
