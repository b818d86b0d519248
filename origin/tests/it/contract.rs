//! One contract for every storage backend: the embedded store, one Redis node, and a 3-master Redis
//! Cluster. Each case uses its own instruments, so cases share one store; the invalidation log is one
//! per store, so its cases run in order and start from its head.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use loadtest::launch::{RedisCluster, RedisServer};
use origin::storage::embedded::EmbeddedStore;
use origin::storage::redis::{RedisSettings, RedisStore};
use origin::storage::tokens::StoredToken;
use origin::storage::webhooks::{Attempt, Delivery, Finish, StoredEndpoint, StoredSecret, Taken};
use origin::storage::{
    AuditEntry, Expect, InvalidationPage, LogRetention, NewInvalidation, NewVersion, PendingChange, Retention,
    SharedStore, StorageError, StoredEvent,
};
use shared::domain::{Forecast, ForecastKey, ModelRef};
use shared::events::{ForecastChange, NewEvent};
use shared::time::unix_ms_now;
use shared::wire::Selector;
use time::OffsetDateTime;

use crate::support::{forecast, unique_instrument};

const RETENTION: Retention = Retention {
    versions_kept: 3,
    audit_kept: 1000,
    invalidations: LogRetention {
        kept: 100,
        max_age: Duration::from_secs(3600),
    },
    events: LogRetention {
        kept: 50,
        max_age: Duration::from_secs(3600),
    },
};

/// More than the log keeps: every read sees the whole log.
const WHOLE_LOG: NonZeroUsize = NonZeroUsize::new(1000).unwrap();

fn key(prefix: &str) -> ForecastKey {
    format!("{}:1h", unique_instrument(prefix)).parse().unwrap()
}

fn new_version(model: (&str, &str), point: f64) -> NewVersion {
    let forecast: Forecast = serde_json::from_value(forecast(model, point)).unwrap();
    NewVersion {
        created_at: OffsetDateTime::now_utc(),
        created_by: "contract".into(),
        rollback_of: None,
        forecast,
    }
}

async fn write(store: &SharedStore, key: &ForecastKey, point: f64) -> u64 {
    store
        .write(key, new_version(("m", "1"), point), Expect::Any)
        .await
        .unwrap()
        .version
}

async fn versions_are_numbered_and_current(store: &SharedStore) {
    let key = key("NUM");
    assert!(store.current(&key).await.unwrap().is_none());
    for expected in 1..=3 {
        assert_eq!(write(store, &key, expected as f64).await, expected);
    }
    let current = store.current(&key).await.unwrap().unwrap();
    assert_eq!((current.version, current.forecast.point), (3, 3.0));
    assert_eq!(current.key(), key);
    let history = store.history(&key).await.unwrap();
    assert_eq!((history.latest, history.current), (3, Some(3)));
    assert_eq!(
        history.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [3, 2, 1]
    );
}

async fn old_versions_are_trimmed(store: &SharedStore) {
    let key = key("TRIM");
    for point in 1..=5 {
        write(store, &key, point as f64).await;
    }
    let history = store.history(&key).await.unwrap();
    assert_eq!(
        history.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [5, 4, 3]
    );
    assert_eq!(store.version(&key, 3).await.unwrap().forecast.point, 3.0);
    assert!(matches!(
        store.version(&key, 2).await,
        Err(StorageError::VersionTrimmed {
            requested: 2,
            oldest_kept: 3,
            ..
        })
    ));
    assert!(matches!(
        store.version(&key, 6).await,
        Err(StorageError::VersionNotFound { latest: 5, .. })
    ));
    assert!(matches!(
        store.version(&key, 0).await,
        Err(StorageError::VersionNotFound { .. })
    ));
    let never = self::key("NEVER");
    assert!(matches!(
        store.version(&never, 1).await,
        Err(StorageError::VersionNotFound { latest: 0, .. })
    ));
    assert_eq!(store.history(&never).await.unwrap().latest, 0);
}

async fn preconditions_are_atomic_checks(store: &SharedStore) {
    let key = key("PRE");
    let refused = store.write(&key, new_version(("m", "1"), 1.0), Expect::Exists).await;
    assert!(matches!(refused, Err(StorageError::Conflict { .. })), "{refused:?}");
    assert!(
        store.history(&key).await.unwrap().versions.is_empty(),
        "a refused write left data behind"
    );
    write(store, &key, 1.0).await;
    let stale = store
        .write(&key, new_version(("m", "1"), 2.0), Expect::Version(7))
        .await;
    assert!(matches!(stale, Err(StorageError::Conflict { .. })), "{stale:?}");
    let ok = store
        .write(&key, new_version(("m", "1"), 2.0), Expect::Version(1))
        .await
        .unwrap();
    assert_eq!(ok.version, 2);
    assert_eq!(
        store
            .write(&key, new_version(("m", "1"), 3.0), Expect::Exists)
            .await
            .unwrap()
            .version,
        3
    );
}

async fn deletes_keep_history_and_numbering(store: &SharedStore) {
    let key = key("DEL");
    assert_eq!(store.delete(&key).await.unwrap(), None);
    write(store, &key, 1.0).await;
    write(store, &key, 2.0).await;
    assert_eq!(store.delete(&key).await.unwrap(), Some(2));
    assert!(store.current(&key).await.unwrap().is_none());
    assert_eq!(store.delete(&key).await.unwrap(), None);
    let history = store.history(&key).await.unwrap();
    assert_eq!((history.latest, history.current, history.versions.len()), (2, None, 2));
    let refused = store.write(&key, new_version(("m", "1"), 3.0), Expect::Exists).await;
    assert!(matches!(refused, Err(StorageError::Conflict { .. })));
    assert_eq!(write(store, &key, 3.0).await, 3);
}

async fn many_keys_are_read_in_order(store: &SharedStore) {
    let (a, b, c) = (key("MA"), key("MB"), key("MC"));
    write(store, &a, 1.0).await;
    write(store, &c, 3.0).await;
    let found = store.current_many(&[c.clone(), b.clone(), a.clone()]).await.unwrap();
    let points: Vec<Option<f64>> = found.iter().map(|r| r.as_ref().map(|r| r.forecast.point)).collect();
    assert_eq!(points, [Some(3.0), None, Some(1.0)]);
    assert!(store.current_many(&[]).await.unwrap().is_empty());
}

async fn models_list_their_keys(store: &SharedStore) {
    let model_id = unique_instrument("model").to_lowercase();
    let (a, b) = (key("MOD"), key("MOD"));
    store
        .write(&a, new_version((&model_id, "1"), 1.0), Expect::Any)
        .await
        .unwrap();
    store
        .write(&b, new_version((&model_id, "2"), 1.0), Expect::Any)
        .await
        .unwrap();
    let v1 = store.model_keys(&ModelRef::new(&model_id, "1").unwrap()).await.unwrap();
    assert_eq!(v1, [a]);
    let v2 = store.model_keys(&ModelRef::new(&model_id, "2").unwrap()).await.unwrap();
    assert_eq!(v2, [b]);
    assert!(
        store
            .model_keys(&ModelRef::new(&model_id, "3").unwrap())
            .await
            .unwrap()
            .is_empty()
    );
}

async fn concurrent_writes_lose_nothing(store: &SharedStore) {
    let key = key("RACE");
    let writes = (0..24).map(|i| {
        let (store, key) = (store.clone(), key.clone());
        tokio::spawn(async move { store.write(&key, new_version(("m", "1"), i as f64), Expect::Any).await })
    });
    let mut versions: Vec<u64> = Vec::new();
    for write in writes {
        versions.push(write.await.unwrap().unwrap().version);
    }
    versions.sort_unstable();
    assert_eq!(
        versions,
        (1..=24).collect::<Vec<u64>>(),
        "versions were lost or duplicated"
    );
    assert_eq!(store.history(&key).await.unwrap().latest, 24);
}

async fn audit_is_kept_newest_first(store: &SharedStore) {
    let actor = unique_instrument("actor");
    for i in 0..3 {
        let entry = AuditEntry {
            at: OffsetDateTime::now_utc(),
            actor: actor.clone(),
            action: "forecast.write".into(),
            target: format!("T{i}"),
            status: 200,
            detail: serde_json::json!({"i": i}),
        };
        store.append_audit(&entry).await.unwrap();
    }
    let entries = store.audit(2).await.unwrap();
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().all(|e| e.actor == actor));
    assert_eq!((entries[0].target.as_str(), entries[1].target.as_str()), ("T2", "T1"));
}

async fn the_first_admin_token_hash_wins(store: &SharedStore) {
    let first = store.admin_token_hash("sha256:first").await.unwrap();
    let second = store.admin_token_hash("sha256:second").await.unwrap();
    assert_eq!(first, second, "a second start replaced the stored token hash");
}

fn tagged(tag: &str, issued_at_ms: u64) -> NewInvalidation {
    NewInvalidation {
        selectors: vec![Selector::Tag(tag.to_owned())],
        soft: false,
        issued_at_ms,
    }
}

fn sequences(page: &InvalidationPage) -> Vec<u64> {
    page.records.iter().map(|r| r.sequence).collect()
}

/// Runs first, on an empty log: entries expire from the oldest on.
async fn invalidations_expire_by_age_but_the_newest_stays(store: &SharedStore) {
    assert_eq!(
        store.invalidation_head().await.unwrap(),
        None,
        "the log must start empty"
    );
    let empty = store.read_invalidations(Some(0), WHOLE_LOG).await.unwrap();
    assert_eq!(empty, InvalidationPage::new(Some(0), None, Vec::new()));
    assert!(!empty.trimmed);
    let long_ago = unix_ms_now() - 2 * RETENTION.invalidations.max_age.as_millis() as u64;
    assert_eq!(store.append_invalidation(&tagged("OLD", long_ago)).await.unwrap(), 1);
    let alone = store.read_invalidations(None, WHOLE_LOG).await.unwrap();
    assert_eq!(sequences(&alone), [1], "the newest entry was trimmed");
    assert_eq!(
        store.append_invalidation(&tagged("NEW", unix_ms_now())).await.unwrap(),
        2
    );
    let page = store.read_invalidations(Some(0), WHOLE_LOG).await.unwrap();
    assert_eq!((sequences(&page), page.head, page.trimmed), (vec![2], Some(2), true));
    let caught_up = store.read_invalidations(Some(1), WHOLE_LOG).await.unwrap();
    assert_eq!((sequences(&caught_up), caught_up.trimmed), (vec![2], false));
}

async fn invalidations_are_numbered_and_read_in_order(store: &SharedStore) {
    let head = store.invalidation_head().await.unwrap().unwrap();
    let model = ModelRef::new("lstm", "3.2.0").unwrap();
    let every_kind = NewInvalidation {
        selectors: vec![
            Selector::Key("/v1/forecasts/AAPL/1h".into()),
            Selector::Prefix("/v1/forecasts/MSFT".into()),
            Selector::Tag("AAPL".into()),
            Selector::Model(model),
            Selector::All,
        ],
        soft: true,
        issued_at_ms: unix_ms_now(),
    };
    let appended = [every_kind, tagged("B", unix_ms_now()), tagged("C", unix_ms_now())];
    for (i, new) in appended.iter().enumerate() {
        assert_eq!(store.append_invalidation(new).await.unwrap(), head + 1 + i as u64);
    }
    let expected: Vec<_> = appended
        .iter()
        .zip(head + 1..)
        .map(|(new, sequence)| new.clone().into_record(sequence))
        .collect();
    let page = store.read_invalidations(Some(head), WHOLE_LOG).await.unwrap();
    assert_eq!(page.records, expected, "a record came back different or out of order");
    assert_eq!((page.head, page.trimmed), (Some(head + 3), false));
    let one = store
        .read_invalidations(Some(head + 1), NonZeroUsize::MIN)
        .await
        .unwrap();
    assert_eq!((one.records.as_slice(), one.head), (&expected[1..2], Some(head + 3)));
    for after in [head + 3, head + 100] {
        let nothing = store.read_invalidations(Some(after), WHOLE_LOG).await.unwrap();
        assert_eq!(nothing, InvalidationPage::new(Some(after), Some(head + 3), Vec::new()));
        assert!(!nothing.trimmed, "a position at or past the head is not trimmed");
    }
    assert_eq!(store.invalidation_head().await.unwrap(), Some(head + 3));
}

async fn concurrent_appends_get_consecutive_sequences(store: &SharedStore) {
    let head = store.invalidation_head().await.unwrap().unwrap();
    let tasks = (0..8).map(|task| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..50 {
                let new = tagged(&format!("T{task}-{i}"), unix_ms_now());
                mine.push(store.append_invalidation(&new).await.unwrap());
            }
            mine
        })
    });
    let mut all = Vec::new();
    for task in tasks {
        let mine = task.await.unwrap();
        assert!(mine.is_sorted(), "one appender's sequences went backwards: {mine:?}");
        all.extend(mine);
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (head + 1..=head + 400).collect::<Vec<u64>>(),
        "sequences were skipped or given twice"
    );
    assert_eq!(store.invalidation_head().await.unwrap(), Some(head + 400));
}

/// After the cases above, the log holds more than it keeps.
async fn trimmed_positions_are_reported(store: &SharedStore) {
    let head = store.invalidation_head().await.unwrap().unwrap();
    let kept = RETENTION.invalidations.kept;
    assert!(head > kept + 1);
    let oldest = head - kept + 1;
    let whole = store.read_invalidations(None, WHOLE_LOG).await.unwrap();
    assert_eq!(sequences(&whole), (oldest..=head).collect::<Vec<u64>>());
    assert!(!whole.trimmed, "reading from the oldest kept is not a trim");
    for after in [0, oldest - 2] {
        let page = store.read_invalidations(Some(after), WHOLE_LOG).await.unwrap();
        assert!(page.trimmed, "sequence {} was trimmed but not reported", after + 1);
        assert_eq!(page.records, whole.records);
    }
    let from_oldest = store.read_invalidations(Some(oldest - 1), WHOLE_LOG).await.unwrap();
    assert!(!from_oldest.trimmed);
    assert_eq!(from_oldest.records, whole.records);
}

fn event(topic: &str, n: usize) -> StoredEvent {
    let publish = serde_json::from_value(serde_json::json!({
        "topic": topic, "type": "AnalysisSummary", "instrument": "AAPL",
        "payload": {"summary": format!("summary {n}")}
    }))
    .unwrap();
    StoredEvent {
        appended_at_ms: unix_ms_now(),
        event: NewEvent::check(publish, &[], OffsetDateTime::now_utc()).unwrap(),
    }
}

/// Runs on an empty event log: batches get consecutive ids, in order; reads page through them.
async fn events_are_numbered_in_batches_and_read_in_order(store: &SharedStore) {
    let empty = store.read_events(None, WHOLE_LOG).await.unwrap();
    assert_eq!(
        (empty.events.len(), empty.head),
        (0, None),
        "the event log must start empty"
    );
    let batch: Vec<StoredEvent> = (0..3).map(|n| event("summaries.AAPL", n)).collect();
    assert_eq!(store.append_events(&batch).await.unwrap(), 1);
    assert_eq!(store.append_events(&[event("summaries.MSFT", 3)]).await.unwrap(), 4);
    let page = store.read_events(None, WHOLE_LOG).await.unwrap();
    assert_eq!(page.head, Some(4));
    let ids: Vec<u64> = page.events.iter().map(|e| e.id).collect();
    assert_eq!(ids, [1, 2, 3, 4]);
    assert_eq!(page.events[0].stored, batch[0], "an event came back different");
    assert_eq!(page.events[3].stored.event.topic.as_str(), "summaries.MSFT");
    let after = store.read_events(Some(2), NonZeroUsize::MIN).await.unwrap();
    assert_eq!((after.events[0].id, after.events.len(), after.head), (3, 1, Some(4)));
}

/// Concurrent batches each get a run of consecutive ids, and none is skipped or given twice.
async fn concurrent_batches_keep_their_ids_together(store: &SharedStore) {
    let head = store.read_events(None, NonZeroUsize::MIN).await.unwrap().head.unwrap();
    let tasks = (0..4).map(|task| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut firsts = Vec::new();
            for round in 0..5 {
                let batch: Vec<StoredEvent> = (0..5).map(|n| event("t.x", task * 100 + round * 10 + n)).collect();
                firsts.push(store.append_events(&batch).await.unwrap());
            }
            firsts
        })
    });
    let mut firsts = Vec::new();
    for task in tasks {
        firsts.extend(task.await.unwrap());
    }
    firsts.sort_unstable();
    let expected: Vec<u64> = (0..20).map(|batch| head + 1 + batch * 5).collect();
    assert_eq!(firsts, expected, "batches interleaved or ids were skipped");
}

/// After the cases above, the event log holds more than it keeps: the oldest are gone.
async fn events_are_trimmed_to_what_is_kept(store: &SharedStore) {
    let page = store.read_events(None, WHOLE_LOG).await.unwrap();
    let head = page.head.unwrap();
    let ids: Vec<u64> = page.events.iter().map(|e| e.id).collect();
    assert_eq!(ids, (head - RETENTION.events.kept + 1..=head).collect::<Vec<u64>>());
}

fn endpoint(id: &str, revision: u64) -> StoredEndpoint {
    StoredEndpoint {
        id: id.to_owned(),
        revision,
        url: "https://hooks.example.com/".into(),
        topics: vec!["indicators.**".into()],
        types: None,
        description: String::new(),
        enabled: true,
        disabled_reason: None,
        rate_limit: None,
        headers: Default::default(),
        secrets: vec![StoredSecret {
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            expires_at_ms: None,
        }],
        created_at_ms: unix_ms_now(),
        updated_at_ms: unix_ms_now(),
        failing_since_ms: None,
    }
}

async fn endpoints_change_only_from_the_revision_they_were_read_at(store: &SharedStore) {
    assert!(store.put_endpoint(&endpoint("ep_a", 1), None).await.unwrap());
    assert!(
        !store.put_endpoint(&endpoint("ep_a", 1), None).await.unwrap(),
        "created twice"
    );
    let mut changed = endpoint("ep_a", 2);
    changed.enabled = false;
    assert!(store.put_endpoint(&changed, Some(1)).await.unwrap());
    assert!(
        !store.put_endpoint(&endpoint("ep_a", 2), Some(1)).await.unwrap(),
        "a stale change won"
    );
    assert_eq!(store.endpoint("ep_a").await.unwrap(), Some(changed));
    assert!(store.put_endpoint(&endpoint("ep_b", 1), None).await.unwrap());
    let mut ids: Vec<String> = store.endpoints().await.unwrap().into_iter().map(|e| e.id).collect();
    ids.sort();
    assert_eq!(ids, ["ep_a", "ep_b"]);
    assert!(store.delete_endpoint("ep_b").await.unwrap());
    assert!(!store.delete_endpoint("ep_b").await.unwrap());
    assert_eq!(store.endpoint("ep_b").await.unwrap(), None);
}

fn delivery(endpoint: &str, event_id: u64) -> Delivery {
    Delivery {
        endpoint: endpoint.to_owned(),
        event_id,
        attempts: 0,
        appended_at_ms: unix_ms_now(),
        put_off: false,
    }
}

fn event_ids(taken: &[Taken]) -> Vec<u64> {
    let mut ids: Vec<u64> = taken.iter().map(|t| t.delivery.event_id).collect();
    ids.sort_unstable();
    ids
}

const RECLAIM: Duration = Duration::from_secs(60);

async fn deliveries_are_dispatched_once_taken_once_and_finished(store: &SharedStore) {
    assert_eq!(store.dispatch_cursor().await.unwrap(), None);
    assert!(
        store
            .dispatch(None, 3, &[delivery("ep_q", 2), delivery("ep_q", 3)])
            .await
            .unwrap()
    );
    assert!(
        !store.dispatch(None, 3, &[delivery("ep_q", 2)]).await.unwrap(),
        "dispatched twice"
    );
    // Two dispatchers racing from one cursor: one wins.
    let racing = [delivery("ep_q", 4)];
    let (first, second) = tokio::join!(store.dispatch(Some(3), 4, &racing), store.dispatch(Some(3), 4, &racing));
    assert!(first.unwrap() ^ second.unwrap());
    assert_eq!(store.dispatch_cursor().await.unwrap(), Some(4));
    assert_eq!(store.queue_depth().await.unwrap(), 3);

    let now = unix_ms_now();
    let taken = store.take_deliveries("one", 10, now, RECLAIM).await.unwrap();
    assert_eq!(event_ids(&taken), [2, 3, 4]);
    assert!(
        store.take_deliveries("two", 10, now, RECLAIM).await.unwrap().is_empty(),
        "taken twice"
    );
    // A taker that never finishes: after the reclaim time, another takes them over.
    let reclaimed = store.take_deliveries("two", 10, now, Duration::ZERO).await.unwrap();
    assert_eq!(event_ids(&reclaimed), [2, 3, 4]);

    let by_id = |id: u64| reclaimed.iter().find(|t| t.delivery.event_id == id).unwrap().clone();
    store.finish_delivery(&by_id(2), &Finish::Done).await.unwrap();
    let retried = Delivery {
        attempts: 1,
        ..delivery("ep_q", 3)
    };
    let later = Finish::Later {
        delivery: retried.clone(),
        due_ms: now + 60_000,
    };
    store.finish_delivery(&by_id(3), &later).await.unwrap();
    let dead = Delivery {
        attempts: 3,
        ..delivery("ep_q", 4)
    };
    store
        .finish_delivery(&by_id(4), &Finish::Dead(dead.clone()))
        .await
        .unwrap();
    assert_eq!(store.queue_depth().await.unwrap(), 1, "only the retry is queued");
    assert!(
        store
            .take_deliveries("one", 10, unix_ms_now(), Duration::ZERO)
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );
    let due = store.take_deliveries("one", 10, now + 60_000, RECLAIM).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].delivery.event_id, retried.event_id);
    assert_eq!(due[0].delivery.attempts, 1);
    store.finish_delivery(&due[0], &Finish::Done).await.unwrap();

    let letters = store.dead_letters("ep_q").await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!((letters[0].event_id, letters[0].attempts), (4, 3));
    assert_eq!(store.redrive("ep_q", unix_ms_now()).await.unwrap(), 1);
    assert!(store.dead_letters("ep_q").await.unwrap().is_empty());
    let redriven = store.take_deliveries("one", 10, unix_ms_now(), RECLAIM).await.unwrap();
    assert_eq!(redriven.len(), 1);
    assert_eq!((redriven[0].delivery.event_id, redriven[0].delivery.attempts), (4, 0));
    store.finish_delivery(&redriven[0], &Finish::Done).await.unwrap();
    store.enqueue(&[delivery("ep_q", 9)], unix_ms_now()).await.unwrap();
    let replayed = store.take_deliveries("one", 10, unix_ms_now(), RECLAIM).await.unwrap();
    assert_eq!(event_ids(&replayed), [9]);
    store.finish_delivery(&replayed[0], &Finish::Done).await.unwrap();
    assert_eq!(store.queue_depth().await.unwrap(), 0);
}

async fn attempts_keep_the_newest_and_count_outcomes(store: &SharedStore) {
    for n in 1..=5 {
        let attempt = Attempt {
            message_id: format!("msg_{n}"),
            event_id: n,
            attempt: 1,
            at_ms: unix_ms_now(),
            outcome: if n == 5 { "delivered" } else { "retry" }.into(),
            status: Some(500),
            latency_ms: 3,
            error: None,
            response: String::new(),
        };
        store.record_attempt("ep_r", &attempt, 3).await.unwrap();
    }
    let kept: Vec<u64> = store
        .attempts("ep_r", 10)
        .await
        .unwrap()
        .iter()
        .map(|a| a.event_id)
        .collect();
    assert_eq!(kept, [5, 4, 3]);
    assert_eq!(store.attempts("ep_r", 1).await.unwrap().len(), 1);
    let counters = store.counters("ep_r").await.unwrap();
    assert_eq!((counters["retry"], counters["delivered"]), (4, 1));
    assert!(store.put_endpoint(&endpoint("ep_r", 1), None).await.unwrap());
    assert!(store.delete_endpoint("ep_r").await.unwrap());
    assert!(store.attempts("ep_r", 10).await.unwrap().is_empty());
    assert!(store.counters("ep_r").await.unwrap().is_empty());
}

/// Runs every case against `store`, then checks that a new connection (`reopen`) sees what was written.
/// A change stays pending from its atomic step until its event is appended, and that event is appended
/// once however often the announcement is made.
async fn changes_are_pending_until_announced_once(store: &SharedStore) {
    let key = key("PENDING");
    let noted = |pending: Vec<PendingChange>| -> Vec<PendingChange> {
        pending.into_iter().filter(|change| change.key == key).collect()
    };
    store.intend_change(&key).await.unwrap();
    let written = write(store, &key, 1.0).await;
    let deleted = store.delete(&key).await.unwrap().unwrap();
    assert_eq!(written, deleted);
    assert!(
        noted(store.pending_changes(0).await.unwrap()).is_empty(),
        "noted after the cut-off"
    );
    let later = unix_ms_now() + 1;
    let pending = noted(store.pending_changes(later).await.unwrap());
    let expected = [ForecastChange::Written, ForecastChange::Deleted].map(|change| PendingChange {
        key: key.clone(),
        version: written,
        change,
    });
    assert_eq!(pending, expected, "both changes, in the order they were made");

    let head = store.read_events(None, WHOLE_LOG).await.unwrap().head.unwrap_or(0);
    let announce = event("forecasts.PENDING.1h", 1);
    let first = store.complete_change(&expected[0], &announce).await.unwrap();
    assert_eq!(first, Some(head + 1));
    assert_eq!(
        store.complete_change(&expected[0], &announce).await.unwrap(),
        None,
        "announced twice"
    );
    assert_eq!(
        noted(store.pending_changes(later).await.unwrap()),
        [expected[1].clone()]
    );
    assert_eq!(
        store.complete_change(&expected[1], &announce).await.unwrap(),
        Some(head + 2)
    );
    assert!(noted(store.pending_changes(later).await.unwrap()).is_empty());
    let log = store.read_events(Some(head), WHOLE_LOG).await.unwrap();
    assert_eq!(log.events.len(), 2, "one event per change");
}

fn stored_token(id: &str) -> StoredToken {
    StoredToken {
        id: id.to_owned(),
        name: format!("name of {id}"),
        hash: format!("sha256:{}", "ab".repeat(32)),
        scopes: vec!["forecasts:read".to_owned()],
        topics: vec!["indicators.**".to_owned()],
        created_at_ms: 1,
        created_by: "test".to_owned(),
        expires_at_ms: Some(2),
        revoked_at_ms: None,
    }
}

/// Tokens are added once under an id, listed, and revoked for good (a second revocation keeps the first
/// time); nothing removes them.
async fn tokens_are_added_once_and_revoked_for_good(store: &SharedStore) {
    let first = stored_token("tok_first");
    assert!(store.add_token(&first).await.unwrap());
    let mut changed = first.clone();
    changed.name = "another".to_owned();
    assert!(!store.add_token(&changed).await.unwrap(), "an id is taken once");
    assert!(store.add_token(&stored_token("tok_second")).await.unwrap());
    let mut listed = store.tokens().await.unwrap();
    listed.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(listed, [first.clone(), stored_token("tok_second")]);

    let revoked = store.revoke_token("tok_first", 10).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at_ms, Some(10));
    let again = store.revoke_token("tok_first", 20).await.unwrap().unwrap();
    assert_eq!(again.revoked_at_ms, Some(10), "revoked once, at its first time");
    assert_eq!(store.revoke_token("tok_none", 10).await.unwrap(), None);
    let first_now = store
        .tokens()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.id == "tok_first")
        .unwrap();
    assert_eq!(
        first_now,
        StoredToken {
            revoked_at_ms: Some(10),
            ..first
        }
    );
}

async fn contract(store: SharedStore, reopen: impl AsyncFnOnce(SharedStore) -> SharedStore) {
    store.ping().await.unwrap();
    versions_are_numbered_and_current(&store).await;
    old_versions_are_trimmed(&store).await;
    preconditions_are_atomic_checks(&store).await;
    deletes_keep_history_and_numbering(&store).await;
    many_keys_are_read_in_order(&store).await;
    models_list_their_keys(&store).await;
    concurrent_writes_lose_nothing(&store).await;
    audit_is_kept_newest_first(&store).await;
    the_first_admin_token_hash_wins(&store).await;
    invalidations_expire_by_age_but_the_newest_stays(&store).await;
    invalidations_are_numbered_and_read_in_order(&store).await;
    concurrent_appends_get_consecutive_sequences(&store).await;
    trimmed_positions_are_reported(&store).await;
    events_are_numbered_in_batches_and_read_in_order(&store).await;
    concurrent_batches_keep_their_ids_together(&store).await;
    events_are_trimmed_to_what_is_kept(&store).await;
    endpoints_change_only_from_the_revision_they_were_read_at(&store).await;
    deliveries_are_dispatched_once_taken_once_and_finished(&store).await;
    attempts_keep_the_newest_and_count_outcomes(&store).await;
    changes_are_pending_until_announced_once(&store).await;
    tokens_are_added_once_and_revoked_for_good(&store).await;

    let key = key("DURABLE");
    write(&store, &key, 42.0).await;
    let head = store.invalidation_head().await.unwrap().unwrap();
    let log = store.read_invalidations(None, WHOLE_LOG).await.unwrap();
    let events = store.read_events(None, WHOLE_LOG).await.unwrap();
    let endpoints = store.endpoints().await.unwrap();
    let mut tokens = store.tokens().await.unwrap();
    let reopened = reopen(store).await;
    assert_eq!(reopened.endpoints().await.unwrap(), endpoints);
    let mut reopened_tokens = reopened.tokens().await.unwrap();
    tokens.sort_by(|a, b| a.id.cmp(&b.id));
    reopened_tokens.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(reopened_tokens, tokens);
    assert_eq!(reopened.dispatch_cursor().await.unwrap(), Some(4));
    assert_eq!(reopened.read_events(None, WHOLE_LOG).await.unwrap(), events);
    assert_eq!(reopened.current(&key).await.unwrap().unwrap().forecast.point, 42.0);
    assert_eq!(reopened.read_invalidations(None, WHOLE_LOG).await.unwrap(), log);
    assert_eq!(
        reopened
            .append_invalidation(&tagged("AFTER", unix_ms_now()))
            .await
            .unwrap(),
        head + 1,
        "the numbering did not continue after a reopen"
    );
}

fn redis_store(urls: Vec<String>, cluster: bool) -> SharedStore {
    std::sync::Arc::new(
        RedisStore::new(RedisSettings {
            urls,
            cluster,
            operation_timeout: Duration::from_secs(5),
            retention: RETENTION,
        })
        .unwrap(),
    )
}

/// Opens the embedded store, waiting for a previous instance's writer to let go of the file.
pub async fn open_embedded(dir: PathBuf) -> SharedStore {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match EmbeddedStore::open(&dir, RETENTION) {
            Ok(store) => return std::sync::Arc::new(store),
            Err(error) if tokio::time::Instant::now() > deadline => panic!("embedded store did not reopen: {error}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let store = open_embedded(path.clone()).await;
    contract(store, async |store| {
        drop(store);
        open_embedded(path).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_keeps_the_contract() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    contract(redis_store(vec![url.clone()], false), async |_| {
        redis_store(vec![url], false)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_store_keeps_the_contract() {
    let cluster = RedisCluster::start().unwrap();
    let urls = cluster.urls();
    contract(redis_store(urls.clone(), true), async |_| redis_store(urls, true)).await;
}
