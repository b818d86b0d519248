//! The webhook tables of the embedded store. One process owns the file, so a delivery taken is marked
//! in memory only: after a restart every queued delivery is due again (at least once).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{ReadableTable, TableDefinition};
use shared::time::unix_ms_now;

use super::{EmbeddedStore, fail};
use crate::storage::webhooks::{Attempt, Counters, Delivery, Finish, StoredEndpoint, Taken, WebhookStore};
use crate::storage::{Result, StorageError};

/// Endpoint id → [`StoredEndpoint`] as JSON.
const ENDPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("webhook_endpoints");
/// (due at, unix ms; job number) → [`Delivery`] as JSON: the queue.
const QUEUE: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("webhook_queue");
/// (endpoint, event id) → [`Delivery`] as JSON.
const DEAD: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("webhook_dead_letters");
/// (endpoint, number) → [`Attempt`] as JSON.
const ATTEMPTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("webhook_attempts");
/// (endpoint, counter) → count.
const COUNTERS: TableDefinition<(&str, &str), u64> = TableDefinition::new("webhook_counters");
/// Name → number: the dispatch cursor and the last job number.
const NUMBERS: TableDefinition<&str, u64> = TableDefinition::new("webhook_numbers");
const CURSOR: &str = "cursor";
const LAST_JOB: &str = "last-job";

pub(super) fn create_tables(txn: &redb::WriteTransaction) -> Result<()> {
    txn.open_table(ENDPOINTS).map_err(fail)?;
    txn.open_table(QUEUE).map_err(fail)?;
    txn.open_table(DEAD).map_err(fail)?;
    txn.open_table(ATTEMPTS).map_err(fail)?;
    txn.open_table(COUNTERS).map_err(fail)?;
    txn.open_table(NUMBERS).map_err(fail)?;
    Ok(())
}

/// Queue keys of deliveries taken and not finished, with when they were taken.
#[derive(Debug, Default)]
pub(super) struct TakenDeliveries(Mutex<HashMap<(u64, u64), Instant>>);

impl TakenDeliveries {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, u64), Instant>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn handle((due, job): (u64, u64)) -> String {
    format!("{due}:{job}")
}

fn parse_handle(handle: &str) -> Result<(u64, u64)> {
    handle
        .split_once(':')
        .and_then(|(due, job)| Some((due.parse().ok()?, job.parse().ok()?)))
        .ok_or_else(|| StorageError::corrupt(format!("delivery handle {handle:?} is not <due>:<job>")))
}

/// Queues `deliveries` due at `due_ms` under fresh job numbers.
fn push(txn: &redb::WriteTransaction, deliveries: &[Delivery], due_ms: u64) -> Result<()> {
    let mut numbers = txn.open_table(NUMBERS).map_err(fail)?;
    let mut job = numbers.get(LAST_JOB).map_err(fail)?.map_or(0, |n| n.value());
    let mut queue = txn.open_table(QUEUE).map_err(fail)?;
    for delivery in deliveries {
        job += 1;
        queue
            .insert((due_ms, job), delivery.encode()?.as_bytes())
            .map_err(fail)?;
    }
    numbers.insert(LAST_JOB, job).map_err(fail)?;
    Ok(())
}

fn count(txn: &redb::WriteTransaction, endpoint: &str, counter: &str) -> Result<()> {
    let mut counters = txn.open_table(COUNTERS).map_err(fail)?;
    let now = counters
        .get((endpoint, counter))
        .map_err(fail)?
        .map_or(0, |n| n.value());
    counters.insert((endpoint, counter), now + 1).map_err(fail)?;
    Ok(())
}

/// Removes every row of `table` whose key starts with `endpoint`.
fn remove_endpoint_rows<V: redb::Value + 'static, K2: redb::Key + 'static>(
    txn: &redb::WriteTransaction,
    table: TableDefinition<(&str, K2), V>,
    endpoint: &str,
) -> Result<()> {
    let mut table = txn.open_table(table).map_err(fail)?;
    table.retain(|(owner, _), _| owner != endpoint).map_err(fail)?;
    Ok(())
}

#[async_trait]
impl WebhookStore for EmbeddedStore {
    async fn put_endpoint(&self, endpoint: &StoredEndpoint, expected: Option<u64>) -> Result<bool> {
        let endpoint = endpoint.clone();
        self.change(move |txn| {
            let mut table = txn.open_table(ENDPOINTS).map_err(fail)?;
            let stored = table
                .get(endpoint.id.as_str())
                .map_err(fail)?
                .map(|raw| StoredEndpoint::decode(raw.value()))
                .transpose()?;
            if stored.map(|e| e.revision) != expected {
                return Ok(false);
            }
            table
                .insert(endpoint.id.as_str(), endpoint.encode()?.as_bytes())
                .map_err(fail)?;
            Ok(true)
        })
        .await
    }

    async fn endpoint(&self, id: &str) -> Result<Option<StoredEndpoint>> {
        self.read(|txn| {
            let table = txn.open_table(ENDPOINTS).map_err(fail)?;
            let found = table.get(id).map_err(fail)?;
            found.map(|raw| StoredEndpoint::decode(raw.value())).transpose()
        })
    }

    async fn endpoints(&self) -> Result<Vec<StoredEndpoint>> {
        self.read(|txn| {
            let table = txn.open_table(ENDPOINTS).map_err(fail)?;
            let mut all = Vec::new();
            for entry in table.iter().map_err(fail)? {
                all.push(StoredEndpoint::decode(entry.map_err(fail)?.1.value())?);
            }
            Ok(all)
        })
    }

    async fn delete_endpoint(&self, id: &str) -> Result<bool> {
        let id = id.to_owned();
        self.change(move |txn| {
            let existed = txn
                .open_table(ENDPOINTS)
                .map_err(fail)?
                .remove(id.as_str())
                .map_err(fail)?
                .is_some();
            remove_endpoint_rows(txn, DEAD, &id)?;
            remove_endpoint_rows(txn, ATTEMPTS, &id)?;
            remove_endpoint_rows(txn, COUNTERS, &id)?;
            Ok(existed)
        })
        .await
    }

    async fn dispatch_cursor(&self) -> Result<Option<u64>> {
        self.read(|txn| {
            let numbers = txn.open_table(NUMBERS).map_err(fail)?;
            Ok(numbers.get(CURSOR).map_err(fail)?.map(|n| n.value()))
        })
    }

    async fn dispatch(&self, from: Option<u64>, to: u64, deliveries: &[Delivery]) -> Result<bool> {
        let deliveries = deliveries.to_vec();
        self.change(move |txn| {
            {
                let mut numbers = txn.open_table(NUMBERS).map_err(fail)?;
                if numbers.get(CURSOR).map_err(fail)?.map(|n| n.value()) != from {
                    return Ok(false);
                }
                numbers.insert(CURSOR, to).map_err(fail)?;
            }
            push(txn, &deliveries, unix_ms_now())?;
            Ok(true)
        })
        .await
    }

    async fn enqueue(&self, deliveries: &[Delivery], due_ms: u64) -> Result<()> {
        let deliveries = deliveries.to_vec();
        self.change(move |txn| push(txn, &deliveries, due_ms)).await
    }

    async fn take_deliveries(
        &self,
        _consumer: &str,
        limit: usize,
        now_ms: u64,
        reclaim_after: Duration,
    ) -> Result<Vec<Taken>> {
        self.read(|txn| {
            let queue = txn.open_table(QUEUE).map_err(fail)?;
            let mut taken = self.taken.lock();
            let now = Instant::now();
            let mut answer = Vec::new();
            for entry in queue.range(..=(now_ms, u64::MAX)).map_err(fail)? {
                if answer.len() == limit {
                    break;
                }
                let (key, raw) = entry.map_err(fail)?;
                let key = key.value();
                if taken
                    .get(&key)
                    .is_some_and(|at| now.duration_since(*at) < reclaim_after)
                {
                    continue;
                }
                taken.insert(key, now);
                answer.push(Taken {
                    handle: handle(key),
                    delivery: Delivery::decode(raw.value())?,
                });
            }
            Ok(answer)
        })
    }

    async fn finish_delivery(&self, taken: &Taken, finish: &Finish) -> Result<()> {
        let key = parse_handle(&taken.handle)?;
        let finish = finish.clone();
        self.change(move |txn| {
            txn.open_table(QUEUE).map_err(fail)?.remove(key).map_err(fail)?;
            match &finish {
                Finish::Done => {}
                Finish::Later { delivery, due_ms } => push(txn, std::slice::from_ref(delivery), *due_ms)?,
                Finish::Dead(delivery) => {
                    txn.open_table(DEAD)
                        .map_err(fail)?
                        .insert(
                            (delivery.endpoint.as_str(), delivery.event_id),
                            delivery.encode()?.as_bytes(),
                        )
                        .map_err(fail)?;
                }
            }
            Ok(())
        })
        .await?;
        self.taken.lock().remove(&key);
        Ok(())
    }

    async fn record_attempt(&self, endpoint: &str, attempt: &Attempt, keep: usize) -> Result<()> {
        let (endpoint, attempt) = (endpoint.to_owned(), attempt.clone());
        self.change(move |txn| {
            let mut attempts = txn.open_table(ATTEMPTS).map_err(fail)?;
            let range = (endpoint.as_str(), 0)..=(endpoint.as_str(), u64::MAX);
            let newest = attempts
                .range(range.clone())
                .map_err(fail)?
                .next_back()
                .transpose()
                .map_err(fail)?
                .map_or(0, |(key, _)| key.value().1);
            let encoded = serde_json::to_vec(&attempt).map_err(StorageError::corrupt)?;
            attempts
                .insert((endpoint.as_str(), newest + 1), encoded.as_slice())
                .map_err(fail)?;
            let oldest_kept = (newest + 1).saturating_sub(keep as u64 - 1);
            attempts
                .retain_in((endpoint.as_str(), 0)..(endpoint.as_str(), oldest_kept), |_, _| false)
                .map_err(fail)?;
            drop(attempts);
            count(txn, &endpoint, &attempt.outcome)
        })
        .await
    }

    async fn attempts(&self, endpoint: &str, limit: usize) -> Result<Vec<Attempt>> {
        self.read(|txn| {
            let attempts = txn.open_table(ATTEMPTS).map_err(fail)?;
            let mut newest_first = Vec::new();
            for entry in attempts
                .range((endpoint, 0)..=(endpoint, u64::MAX))
                .map_err(fail)?
                .rev()
                .take(limit)
            {
                let raw = entry.map_err(fail)?.1;
                newest_first.push(serde_json::from_slice(raw.value()).map_err(StorageError::corrupt)?);
            }
            Ok(newest_first)
        })
    }

    async fn counters(&self, endpoint: &str) -> Result<Counters> {
        self.read(|txn| {
            let counters = txn.open_table(COUNTERS).map_err(fail)?;
            let mut all = Counters::new();
            for entry in counters.range((endpoint, "")..).map_err(fail)? {
                let (key, count) = entry.map_err(fail)?;
                let (owner, name) = key.value();
                if owner != endpoint {
                    break;
                }
                all.insert(name.to_owned(), count.value());
            }
            Ok(all)
        })
    }

    async fn dead_letters(&self, endpoint: &str) -> Result<Vec<Delivery>> {
        self.read(|txn| {
            let dead = txn.open_table(DEAD).map_err(fail)?;
            let mut all = Vec::new();
            for entry in dead.range((endpoint, 0)..=(endpoint, u64::MAX)).map_err(fail)? {
                all.push(Delivery::decode(entry.map_err(fail)?.1.value())?);
            }
            Ok(all)
        })
    }

    async fn redrive(&self, endpoint: &str, due_ms: u64) -> Result<usize> {
        let endpoint = endpoint.to_owned();
        self.change(move |txn| {
            let mut revived = Vec::new();
            {
                let mut dead = txn.open_table(DEAD).map_err(fail)?;
                let range = (endpoint.as_str(), 0)..=(endpoint.as_str(), u64::MAX);
                for entry in dead.extract_from_if(range, |_, _| true).map_err(fail)? {
                    let mut delivery = Delivery::decode(entry.map_err(fail)?.1.value())?;
                    delivery.attempts = 0;
                    delivery.put_off = false;
                    revived.push(delivery);
                }
            }
            push(txn, &revived, due_ms)?;
            Ok(revived.len())
        })
        .await
    }

    async fn queue_depth(&self) -> Result<u64> {
        self.read(|txn| {
            use redb::ReadableTableMetadata;
            txn.open_table(QUEUE).map_err(fail)?.len().map_err(fail)
        })
    }
}
