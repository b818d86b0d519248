//! The webhook keys on Redis (layout in [`keys`]): the queue is a stream read through one consumer
//! group, so origins sharing the Redis share the work, and a delivery an origin took but never finished
//! stays pending until another claims it.

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use redis::{RedisResult, Script};

use super::{RedisStore, keys};
use crate::storage::webhooks::{Attempt, Counters, Delivery, Finish, StoredEndpoint, Taken, WebhookStore};
use crate::storage::{Result, StorageError};

/// Stores an endpoint if the stored one's revision is ARGV[2] ('' when none may be stored). KEYS[1] the
/// endpoints hash; ARGV[1] the id, ARGV[3] the JSON. Returns 1 when stored.
static PUT_ENDPOINT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local stored = redis.call('HGET', KEYS[1], ARGV[1])
local revision = ''
if stored then revision = tostring(cjson.decode(stored).revision) end
if revision ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
",
    )
});

/// Moves the dispatch cursor from ARGV[1] ('' none) to ARGV[2] and queues ARGV[3..], only if it is still
/// ARGV[1]. KEYS[1] the cursor, KEYS[2] the queue. Returns 1 when it moved.
static DISPATCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return 0 end
for i = 3, #ARGV do redis.call('XADD', KEYS[2], '*', 'd', ARGV[i]) end
redis.call('SET', KEYS[1], ARGV[2])
return 1
",
    )
});

/// Moves up to ARGV[2] deliveries due by ARGV[1] from the later set (KEYS[1]) to the queue (KEYS[2]).
static PROMOTE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, d in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'd', d)
  redis.call('ZREM', KEYS[1], d)
end
return #due
",
    )
});

/// Finishes a taken delivery: acknowledges and removes queue entry ARGV[2] (group ARGV[1]), then per
/// ARGV[3]: `later` adds ARGV[4] to the later set due at ARGV[5], `dead` stores it in the dead letters
/// under event id ARGV[6]. KEYS: queue, later set, dead letters.
static FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if ARGV[3] == 'later' then redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4])
elseif ARGV[3] == 'dead' then redis.call('HSET', KEYS[3], ARGV[6], ARGV[4]) end
return 1
",
    )
});

/// Moves dead letters back: for each pair (event id, delivery JSON) of ARGV[2..] still in the dead
/// letters (KEYS[1]), removes it and adds the delivery to the later set (KEYS[2]) due at ARGV[1].
static REDRIVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local moved = 0
for i = 2, #ARGV, 2 do
  if redis.call('HDEL', KEYS[1], ARGV[i]) == 1 then
    redis.call('ZADD', KEYS[2], ARGV[1], ARGV[i + 1])
    moved = moved + 1
  end
end
return moved
",
    )
});

fn taken(entry: &StreamId) -> Result<Taken> {
    let raw: Vec<u8> = entry
        .get(keys::WEBHOOK_FIELD)
        .ok_or_else(|| StorageError::corrupt("webhook queue entry without its delivery"))?;
    Ok(Taken {
        handle: entry.id.clone(),
        delivery: Delivery::decode(&raw)?,
    })
}

fn is_missing_group(error: &StorageError) -> bool {
    matches!(error, StorageError::Unavailable(message) if message.contains("NOGROUP"))
}

impl RedisStore {
    /// Creates the consumer group (and the stream), reading from the start: a queue entry exists
    /// only until it is finished, so every one is work.
    async fn create_group(&self) -> Result<()> {
        let created: RedisResult<()> = self
            .run(|mut c| async move {
                let outcome: RedisResult<()> = redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(keys::WEBHOOK_QUEUE)
                    .arg(keys::WEBHOOK_GROUP)
                    .arg("0")
                    .arg("MKSTREAM")
                    .query_async(&mut c)
                    .await;
                Ok(outcome)
            })
            .await?;
        match created {
            Err(error) if error.code() != Some("BUSYGROUP") => Err(StorageError::unavailable(error)),
            _ => Ok(()),
        }
    }

    async fn claim(&self, consumer: &str, limit: usize, reclaim_after: Duration) -> Result<Vec<Taken>> {
        let min_idle = shared::time::millis(reclaim_after);
        let (stale, fresh): (StreamAutoClaimReply, Option<StreamReadReply>) = self
            .run(|mut c| async move {
                redis::pipe()
                    .cmd("XAUTOCLAIM")
                    .arg(keys::WEBHOOK_QUEUE)
                    .arg(keys::WEBHOOK_GROUP)
                    .arg(consumer)
                    .arg(min_idle)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(limit)
                    .cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(keys::WEBHOOK_GROUP)
                    .arg(consumer)
                    .arg("COUNT")
                    .arg(limit)
                    .arg("STREAMS")
                    .arg(keys::WEBHOOK_QUEUE)
                    .arg(">")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let fresh = fresh.into_iter().flat_map(|reply| reply.keys).flat_map(|key| key.ids);
        stale
            .claimed
            .iter()
            .chain(fresh.collect::<Vec<_>>().iter())
            .map(taken)
            .collect()
    }
}

#[async_trait]
impl WebhookStore for RedisStore {
    async fn put_endpoint(&self, endpoint: &StoredEndpoint, expected: Option<u64>) -> Result<bool> {
        let json = endpoint.encode()?;
        let expected = expected.map(|r| r.to_string()).unwrap_or_default();
        let stored: u8 = self
            .run(|mut c| {
                let mut invocation = PUT_ENDPOINT.key(keys::WEBHOOK_ENDPOINTS);
                invocation.arg(&endpoint.id).arg(&expected).arg(&json);
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        Ok(stored == 1)
    }

    async fn endpoint(&self, id: &str) -> Result<Option<StoredEndpoint>> {
        let raw: Option<Vec<u8>> = self
            .run(|mut c| async move {
                redis::cmd("HGET")
                    .arg(keys::WEBHOOK_ENDPOINTS)
                    .arg(id)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        raw.map(|raw| StoredEndpoint::decode(&raw)).transpose()
    }

    async fn endpoints(&self) -> Result<Vec<StoredEndpoint>> {
        let all: Vec<Vec<u8>> = self
            .run(|mut c| async move {
                redis::cmd("HVALS")
                    .arg(keys::WEBHOOK_ENDPOINTS)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        all.iter().map(|raw| StoredEndpoint::decode(raw)).collect()
    }

    async fn delete_endpoint(&self, id: &str) -> Result<bool> {
        let (removed,): (u8,) = self
            .run(|mut c| async move {
                redis::pipe()
                    .atomic()
                    .cmd("HDEL")
                    .arg(keys::WEBHOOK_ENDPOINTS)
                    .arg(id)
                    .cmd("DEL")
                    .arg(keys::webhook_dead(id))
                    .arg(keys::webhook_attempts(id))
                    .arg(keys::webhook_counters(id))
                    .ignore()
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(removed == 1)
    }

    async fn dispatch_cursor(&self) -> Result<Option<u64>> {
        self.run(|mut c| async move { redis::cmd("GET").arg(keys::WEBHOOK_CURSOR).query_async(&mut c).await })
            .await
    }

    async fn dispatch(&self, from: Option<u64>, to: u64, deliveries: &[Delivery]) -> Result<bool> {
        let encoded = deliveries.iter().map(Delivery::encode).collect::<Result<Vec<_>>>()?;
        let from = from.map(|f| f.to_string()).unwrap_or_default();
        let moved: u8 = self
            .run(|mut c| {
                let mut invocation = DISPATCH.key(keys::WEBHOOK_CURSOR);
                invocation.key(keys::WEBHOOK_QUEUE).arg(&from).arg(to);
                for delivery in &encoded {
                    invocation.arg(delivery);
                }
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        Ok(moved == 1)
    }

    async fn enqueue(&self, deliveries: &[Delivery], due_ms: u64) -> Result<()> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let mut command = redis::cmd("ZADD");
        command.arg(keys::WEBHOOK_LATER);
        for delivery in deliveries {
            command.arg(due_ms).arg(delivery.encode()?);
        }
        self.run(|mut c| async move { command.query_async(&mut c).await }).await
    }

    async fn take_deliveries(
        &self,
        consumer: &str,
        limit: usize,
        now_ms: u64,
        reclaim_after: Duration,
    ) -> Result<Vec<Taken>> {
        let _: u64 = self
            .run(|mut c| {
                let mut invocation = PROMOTE.key(keys::WEBHOOK_LATER);
                invocation.key(keys::WEBHOOK_QUEUE).arg(now_ms).arg(limit);
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        match self.claim(consumer, limit, reclaim_after).await {
            Err(error) if is_missing_group(&error) => {
                self.create_group().await?;
                self.claim(consumer, limit, reclaim_after).await
            }
            claimed => claimed,
        }
    }

    async fn finish_delivery(&self, taken: &Taken, finish: &Finish) -> Result<()> {
        let (kind, delivery, due) = match finish {
            Finish::Done => ("done", None, 0),
            Finish::Later { delivery, due_ms } => ("later", Some(delivery), *due_ms),
            Finish::Dead(delivery) => ("dead", Some(delivery), 0),
        };
        let json = delivery.map(Delivery::encode).transpose()?.unwrap_or_default();
        let dead = keys::webhook_dead(&taken.delivery.endpoint);
        let _: u8 = self
            .run(|mut c| {
                let mut invocation = FINISH.key(keys::WEBHOOK_QUEUE);
                invocation
                    .key(keys::WEBHOOK_LATER)
                    .key(&dead)
                    .arg(keys::WEBHOOK_GROUP)
                    .arg(&taken.handle)
                    .arg(kind)
                    .arg(&json)
                    .arg(due)
                    .arg(taken.delivery.event_id);
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        Ok(())
    }

    async fn record_attempt(&self, endpoint: &str, attempt: &Attempt, keep: usize) -> Result<()> {
        let json = serde_json::to_string(attempt).map_err(StorageError::corrupt)?;
        let list = keys::webhook_attempts(endpoint);
        let counters = keys::webhook_counters(endpoint);
        self.run(|mut c| async move {
            redis::pipe()
                .atomic()
                .cmd("LPUSH")
                .arg(&list)
                .arg(&json)
                .ignore()
                .cmd("LTRIM")
                .arg(&list)
                .arg(0)
                .arg(keep.saturating_sub(1))
                .ignore()
                .cmd("HINCRBY")
                .arg(&counters)
                .arg(&attempt.outcome)
                .arg(1)
                .ignore()
                .query_async(&mut c)
                .await
        })
        .await
    }

    async fn attempts(&self, endpoint: &str, limit: usize) -> Result<Vec<Attempt>> {
        let list = keys::webhook_attempts(endpoint);
        let raw: Vec<Vec<u8>> = self
            .run(|mut c| async move {
                redis::cmd("LRANGE")
                    .arg(&list)
                    .arg(0)
                    .arg(limit.saturating_sub(1))
                    .query_async(&mut c)
                    .await
            })
            .await?;
        raw.iter()
            .map(|raw| serde_json::from_slice(raw).map_err(StorageError::corrupt))
            .collect()
    }

    async fn counters(&self, endpoint: &str) -> Result<Counters> {
        let key = keys::webhook_counters(endpoint);
        self.run(|mut c| async move { redis::cmd("HGETALL").arg(&key).query_async(&mut c).await })
            .await
    }

    async fn dead_letters(&self, endpoint: &str) -> Result<Vec<Delivery>> {
        let key = keys::webhook_dead(endpoint);
        let raw: Vec<Vec<u8>> = self
            .run(|mut c| async move { redis::cmd("HVALS").arg(&key).query_async(&mut c).await })
            .await?;
        let mut all = raw
            .iter()
            .map(|raw| Delivery::decode(raw))
            .collect::<Result<Vec<_>>>()?;
        all.sort_by_key(|delivery| delivery.event_id);
        Ok(all)
    }

    async fn redrive(&self, endpoint: &str, due_ms: u64) -> Result<usize> {
        let dead = self.dead_letters(endpoint).await?;
        if dead.is_empty() {
            return Ok(0);
        }
        let key = keys::webhook_dead(endpoint);
        let mut pairs = Vec::with_capacity(dead.len());
        for delivery in dead {
            let revived = Delivery {
                attempts: 0,
                put_off: false,
                ..delivery
            };
            pairs.push((revived.event_id, revived.encode()?));
        }
        self.run(|mut c| {
            let mut invocation = REDRIVE.key(&key);
            invocation.key(keys::WEBHOOK_LATER).arg(due_ms);
            for (event_id, json) in &pairs {
                invocation.arg(event_id).arg(json);
            }
            async move { invocation.invoke_async(&mut c).await }
        })
        .await
    }

    async fn queue_depth(&self) -> Result<u64> {
        let (queued, later): (u64, u64) = self
            .run(|mut c| async move {
                redis::pipe()
                    .cmd("XLEN")
                    .arg(keys::WEBHOOK_QUEUE)
                    .cmd("ZCARD")
                    .arg(keys::WEBHOOK_LATER)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(queued + later)
    }
}
