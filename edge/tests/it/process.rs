//! The edge as a process: operations endpoints, SIGTERM, the key file at start and its rotation.

use loadtest::launch::{ChildProcess, free_port};

use crate::support::{Edge, Reply, ScriptedOrigin, WAIT, client, edge_command, eventually, random_hex, write_key_file};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_metrics_answer() {
    let origin = ScriptedOrigin::start().await;
    let edge = Edge::start(&origin.url, &[]).await;
    let client = client();

    let health = client.get(format!("{}/healthz", edge.operations)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), r#"{"status":"ok"}"#);
    let unknown = client.get(format!("{}/nope", edge.operations)).send().await.unwrap();
    assert_eq!(unknown.status(), 404);

    origin.set("/m", Reply::cached("m", "max-age=60"));
    edge.get("/m").await;
    assert!(edge.get("/m").await.is_hit());
    let metrics = edge.metrics().await;
    assert!(
        metrics.contains("edge_cache_requests_total{status=\"hit\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("edge_cache_requests_total{status=\"miss\"} 1"),
        "{metrics}"
    );
    assert_eq!(edge.metric("edge_cache_entries").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_edge() {
    let origin = ScriptedOrigin::start().await;
    let mut edge = Edge::start(&origin.url, &[]).await;
    origin.set("/m", Reply::cached("m", "max-age=60"));
    assert_eq!(edge.get("/m").await.status, 200);
    // The configured grace period (1 s) and shutdown timeout (2 s) bound the exit.
    let status = edge.process.terminate(WAIT).unwrap_or_else(|error| panic!("{error:#}"));
    assert!(status.success(), "SIGTERM ended the edge with {status}");
}

#[test]
fn an_invalid_key_file_stops_the_edge_with_a_message_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let invalid = dir.path().join("invalid.key");
    std::fs::write(&invalid, "this is not a key\n").unwrap();
    let missing = dir.path().join("missing.key");
    for key_file in [&invalid, &missing] {
        let mut command = edge_command();
        command
            .env("EDGE_HTTP__LISTEN", format!("127.0.0.1:{}", free_port().unwrap()))
            .env("EDGE_METRICS__LISTEN", format!("127.0.0.1:{}", free_port().unwrap()))
            .env("EDGE_CACHE__KEY_FILE", key_file);
        let mut process = ChildProcess::spawn("edge-bad-key", command).unwrap();
        let status = process
            .wait_timeout(WAIT)
            .unwrap()
            .unwrap_or_else(|| panic!("the edge kept running with {}", key_file.display()));
        assert!(!status.success());
        let log = process.log_tail(50);
        assert!(
            log.contains(&key_file.display().to_string()),
            "the error does not name {}: {log}",
            key_file.display()
        );
    }
}

/// How many times the edge has (re)loaded its key file.
fn key_loads(edge: &Edge) -> usize {
    edge.log().matches("\"message\":\"cache keys loaded\"").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_keys_keep_old_entries_readable_until_the_old_key_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("cache.key");
    let (old_key, new_key) = (random_hex(32), random_hex(32));
    write_key_file(&key_file, &[&old_key]);
    let origin = ScriptedOrigin::start().await;
    let key_file_text = key_file.to_str().unwrap();
    let edge = Edge::start(
        &origin.url,
        &[
            ("EDGE_CACHE__KEY_FILE", key_file_text),
            ("EDGE_CACHE__KEY_RELOAD_INTERVAL", "200ms"),
        ],
    )
    .await;
    origin.set("/old", Reply::cached("old", "max-age=600"));
    origin.set("/new", Reply::cached("new", "max-age=600"));
    assert_eq!(key_loads(&edge), 1);
    edge.get("/old").await;

    write_key_file(&key_file, &[&new_key, &old_key]);
    eventually("the rotated key file to be loaded", async || {
        (key_loads(&edge) == 2).then_some(())
    })
    .await;
    assert!(edge.log().contains("\"previous\":1"), "{}", edge.log());
    assert!(edge.get("/new").await.cache_status().contains("stored"));
    assert!(
        edge.get("/old").await.is_hit(),
        "an entry under the previous key became unreadable"
    );
    assert!(edge.get("/new").await.is_hit());

    // A broken key file is refused and the keys in use stay.
    std::fs::write(&key_file, "broken\n").unwrap();
    eventually("the broken key file to be refused", async || {
        edge.log().contains("cache key file rejected").then_some(())
    })
    .await;
    assert!(edge.get("/old").await.is_hit());

    write_key_file(&key_file, &[&new_key]);
    eventually("the key file without the old key to be loaded", async || {
        (key_loads(&edge) == 3).then_some(())
    })
    .await;
    let old = edge.get("/old").await;
    assert_eq!((old.status, old.text()), (200, "old"));
    assert!(
        old.cache_status().starts_with("edge; fwd=miss"),
        "an entry sealed under a removed key was served: {}",
        old.cache_status()
    );
    assert!(edge.get("/new").await.is_hit());
    assert!(
        edge.get("/old").await.is_hit(),
        "the refetched entry is sealed under the new key"
    );
    assert_eq!(edge.metric("edge_cache_unreadable_entries_total").await, 1.0);
    assert_eq!(origin.count("/old"), 2);
    assert_eq!(origin.count("/new"), 1);
}
