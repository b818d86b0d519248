//! The origin an edge is attached to is killed (SIGKILL: no goodbye, no close) while forecasts are
//! rewritten through a second origin sharing its Redis: the edge notices the silence, fails over to the
//! second origin, is replayed what it missed, and then serves no version that a write replaced.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::profile_dir;
use bytes::Bytes;
use hyper::header::ETAG;
use hyper::{Method, Response, StatusCode};
use loadtest::control::{Control, TlsFiles};
use loadtest::http::{self, Connection};
use loadtest::launch::{self, ChildProcess, RedisServer};
use loadtest::{edge_hits, origin_throughput};
use shared::tls::{self, EdgeIdentity};

const READY: Duration = Duration::from_secs(30);
const KEYS: [&str; 4] = ["KILL/1h", "KILL/4h", "KILL/1d", "SURV/1h"];
/// Writes through the surviving origin, round robin over the keys; the first origin dies halfway.
const WRITES: usize = 200;
const HEARTBEAT: &str = "200ms";

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

struct Origin {
    process: ChildProcess,
    http: SocketAddr,
    control: SocketAddr,
}

async fn start_origin(name: &str, redis: &str, pki: &Path, data: &Path, token: &str) -> Origin {
    let http = loopback(launch::free_port().unwrap());
    let control = loopback(launch::free_port().unwrap());
    let tls = TlsFiles::origin(pki);
    let mut command = Command::new(profile_dir().join("origin"));
    launch::remove_env_prefixed(&mut command, "ORIGIN_");
    let plane = Control {
        address: control,
        tls: &tls,
    };
    origin_throughput::configure(&mut command, http, Some(redis), data, Some(token), Some(plane));
    command
        .env("ORIGIN_QUIC__HEARTBEAT_INTERVAL", HEARTBEAT)
        .env("RUST_LOG", "warn");
    let mut process = ChildProcess::spawn(name, command).unwrap();
    launch::wait_ready(&mut process, &format!("http://{http}/readyz"), READY)
        .await
        .unwrap();
    Origin { process, http, control }
}

fn etag(response: &Response<Bytes>) -> String {
    response.headers()[ETAG].to_str().unwrap().to_owned()
}

async fn write(connection: &mut Connection, token: &str, key: &str, body: &Bytes) -> String {
    let path = format!("/admin/v1/forecasts/{key}");
    let request = http::json_request(Method::PUT, &path, body.clone(), Some(token)).unwrap();
    let response = connection.send(request).await.unwrap();
    assert!(response.status().is_success(), "PUT {key}: {}", response.status());
    etag(&response)
}

/// The last sequence of the shared invalidation log.
async fn log_head(connection: &mut Connection, token: &str) -> u64 {
    let request = http::json_request(
        Method::GET,
        "/admin/v1/invalidations?limit=1",
        Bytes::new(),
        Some(token),
    )
    .unwrap();
    let response = connection.send(request).await.unwrap();
    let log: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
    log["head"].as_u64().unwrap()
}

/// The value of an unlabelled metric of the edge.
async fn edge_metric(metrics: SocketAddr, name: &str) -> Option<u64> {
    let uri = format!("http://{metrics}/metrics").parse().unwrap();
    let response = http::fetch(&uri).await.ok()?;
    let text = String::from_utf8_lossy(response.body()).into_owned();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_origin_an_edge_follows_loses_no_invalidation() {
    let redis = RedisServer::start().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let identity = EdgeIdentity::new("edge-0", "local").unwrap();
    tls::write_dev_pki(pki.path(), std::slice::from_ref(&identity)).unwrap();
    let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let token = origin_throughput::random_token();
    let mut doomed = start_origin("origin-a", &redis.url(), pki.path(), data_a.path(), &token).await;
    let survivor = start_origin("origin-b", &redis.url(), pki.path(), data_b.path(), &token).await;

    // The edge follows origin A's control plane (first in its list) and reads through origin B.
    let listen = loopback(launch::free_port().unwrap());
    let metrics = loopback(launch::free_port().unwrap());
    let edge_tls = TlsFiles::edge(pki.path(), &identity);
    let mut command = Command::new(profile_dir().join("edge"));
    launch::remove_env_prefixed(&mut command, "EDGE_");
    let plane = Control {
        address: doomed.control,
        tls: &edge_tls,
    };
    edge_hits::configure(&mut command, listen, metrics, survivor.http, Some(plane));
    command
        .env(
            "EDGE_CONTROL__ORIGINS",
            format!("{},{}", doomed.control, survivor.control),
        )
        .env("EDGE_CONTROL__HEARTBEAT_INTERVAL", HEARTBEAT)
        .env("EDGE_CONTROL__RECONNECT_DELAY", "50ms")
        .env("EDGE_CONTROL__MAX_RECONNECT_DELAY", "200ms")
        .env("RUST_LOG", "warn");
    let mut edge_process = ChildProcess::spawn("edge", command).unwrap();
    let metrics_url = format!("http://{metrics}/metrics");
    launch::wait_metric(
        &mut [&mut edge_process],
        &metrics_url,
        "edge_control_connected 1",
        READY,
    )
    .await
    .unwrap();

    let body = origin_throughput::forecast_body(time::Duration::HOUR, 0).unwrap();
    let mut writer = Connection::open(&survivor.http.to_string()).await.unwrap();
    let mut reader = Connection::open(&listen.to_string()).await.unwrap();
    let mut newest = BTreeMap::new();
    for key in KEYS {
        newest.insert(key, write(&mut writer, &token, key, &body).await);
    }
    for key in KEYS {
        // Cached at the edge: only an invalidation makes it fetch again.
        for _ in 0..2 {
            reader
                .send(http::get(&format!("/v1/forecasts/{key}")).unwrap())
                .await
                .unwrap();
        }
    }

    for (index, key) in KEYS.iter().cycle().take(WRITES).enumerate() {
        if index == WRITES / 2 {
            doomed.process.kill().unwrap();
        }
        newest.insert(key, write(&mut writer, &token, key, &body).await);
    }

    // Back on the control plane, through origin B, and caught up with the log.
    let head = log_head(&mut writer, &token).await;
    let deadline = Instant::now() + READY;
    while edge_metric(metrics, "edge_control_last_applied").await != Some(head) {
        assert!(
            Instant::now() < deadline,
            "the edge did not catch up with invalidation {head}{}",
            edge_process.log_excerpt()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(edge_metric(metrics, "edge_control_connected").await, Some(1));
    for (key, etag_written) in &newest {
        let response = reader
            .send(http::get(&format!("/v1/forecasts/{key}")).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            &etag(&response),
            etag_written,
            "{key}: the edge served a replaced version"
        );
    }
    assert!(edge_metric(metrics, "edge_control_reconnects_total").await >= Some(1));
}
