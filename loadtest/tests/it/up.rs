//! `loadtest up` with the origin and the edge built next to loadtest, on free ports, a data
//! directory where an origin started before without a token has generated its admin token, and a
//! certificate folder of its own: `up` makes the development PKI there, serves through the edge, a
//! write reaches the edge over the control plane, its printed commands work, SIGTERM stops it and
//! both servers, and the generated token still works afterwards.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::profile_dir;
use hyper::header::HeaderMap;
use hyper::{Method, StatusCode};
use loadtest::launch::{self, ChildProcess, ProcessTree};
use loadtest::{edge_hits, http, origin_throughput};
use shared::tls::{self, CA_CERT_FILE, CA_KEY_FILE, EdgeIdentity, ORIGIN_CERT_FILE, ORIGIN_KEY_FILE};

/// How long `up` may take to print that both servers are ready (each has 30 s).
const READY_WAIT: Duration = Duration::from_secs(70);
/// How long `up` may take to stop both servers after SIGTERM (each has 15 s).
const STOP_WAIT: Duration = Duration::from_secs(35);
/// The last line `up` prints once ready.
const LAST_READY_LINE: &str = "Ctrl-C stops the edge and the origin.";
const POLL: Duration = Duration::from_millis(50);
/// How long a write may take to reach the edge: milliseconds over the control plane, while
/// without it the edge would keep its copy for the hour the forecast is valid.
const PURGE_WAIT: Duration = Duration::from_secs(5);

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// An origin started as `cargo run -p origin` would, without a token, on `data_dir`; its output
/// goes to `log`.
async fn plain_origin(data_dir: &Path, log: &Path) -> (ChildProcess, SocketAddr) {
    let address = loopback(launch::free_port().unwrap());
    let mut command = Command::new(profile_dir().join("origin"));
    launch::remove_env_prefixed(&mut command, "ORIGIN_");
    origin_throughput::configure(&mut command, address, None, data_dir, None, None);
    let log = File::create(log).unwrap();
    command.stderr(log.try_clone().unwrap()).stdout(log);
    let mut process = ChildProcess::spawn_keeping_output("plain-origin", command).unwrap();
    let ready = format!("http://{address}/readyz");
    launch::wait_ready(&mut process, &ready, Duration::from_secs(30))
        .await
        .unwrap();
    (process, address)
}

/// The admin token that an origin printed in `log`, if it printed one.
fn generated_token(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).unwrap();
    let start = text.find("generated admin token")?;
    let token = &text[start..];
    let token = &token[token.find("ft_")?..];
    Some(
        token
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect(),
    )
}

async fn put(origin: SocketAddr, key: &str, token: &str) -> StatusCode {
    let body = origin_throughput::forecast_body(time::Duration::HOUR, 0).unwrap();
    let path = format!("/admin/v1/forecasts/{key}");
    let request = http::json_request(Method::PUT, &path, body, Some(token)).unwrap();
    http::send(&origin.to_string(), request).await.unwrap().status()
}

async fn get(edge: SocketAddr, key: &str) -> HeaderMap {
    let request = http::get(&format!("/v1/forecasts/{key}")).unwrap();
    let response = http::send(&edge.to_string(), request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{response:?}");
    response.headers().clone()
}

fn header(headers: &HeaderMap, name: &str) -> String {
    let value = headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"));
    value.to_str().unwrap().to_owned()
}

fn cache_status(headers: &HeaderMap) -> String {
    header(headers, "cache-status")
}

/// Reads `key` through the edge until its ETag is no longer `old`, for at most [`PURGE_WAIT`], and
/// returns the headers of that read.
async fn read_until_changed(edge: SocketAddr, key: &str, old: &str) -> HeaderMap {
    let deadline = tokio::time::Instant::now() + PURGE_WAIT;
    loop {
        let headers = get(edge, key).await;
        if header(&headers, "etag") != old {
            return headers;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the edge still serves {old} {PURGE_WAIT:?} after the write: {}",
            cache_status(&headers)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    socket.local_addr().unwrap().port()
}

/// The number after `label ` in `text`.
fn pid_after(text: &str, label: &str) -> u32 {
    let rest = &text[text.find(label).unwrap_or_else(|| panic!("no {label:?} in:\n{text}")) + label.len()..];
    rest.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// The shell commands `up` printed: the lines after "Try it from another terminal:" and a blank
/// line, up to the next blank line.
fn printed_commands(text: &str) -> String {
    let (_, rest) = text.split_once("Try it from another terminal:\n\n").unwrap();
    let (commands, _) = rest.split_once("\n\n").unwrap();
    commands.to_owned()
}

#[tokio::test]
async fn up_serves_through_the_edge_and_stops_on_sigterm() {
    let bin_dir = profile_dir();
    for name in ["origin", "edge"] {
        if !bin_dir.join(name).is_file() {
            eprintln!(
                "skipped: {} is not built (cargo build -p origin -p edge, or cargo test --workspace)",
                bin_dir.join(name).display()
            );
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let certs_dir = dir.path().join("certs");

    // An origin run without a token generates one, and keeps its hash in the data directory.
    let first_log = dir.path().join("first-origin.log");
    let (mut first, address) = plain_origin(&data_dir, &first_log).await;
    let generated = generated_token(&first_log).expect("the first origin printed a generated token");
    assert_eq!(put(address, "BEFORE/1h", &generated).await, StatusCode::CREATED);
    assert!(first.terminate(Duration::from_secs(10)).unwrap().success());

    let (origin_listen, edge_listen, edge_metrics_listen, control_listen) = (
        loopback(launch::free_port().unwrap()),
        loopback(launch::free_port().unwrap()),
        loopback(launch::free_port().unwrap()),
        loopback(free_udp_port()),
    );
    let stdout_path = dir.path().join("up.out");
    let stderr_path = dir.path().join("up.err");
    let mut command = Command::new(env!("CARGO_BIN_EXE_loadtest"));
    command
        .arg("up")
        .arg("--no-build")
        .args(["--origin-listen", &origin_listen.to_string()])
        .args(["--edge-listen", &edge_listen.to_string()])
        .args(["--edge-metrics-listen", &edge_metrics_listen.to_string()])
        .args(["--control-listen", &control_listen.to_string()])
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--certs-dir")
        .arg(&certs_dir)
        .env_remove(origin_throughput::BOOTSTRAP_TOKEN_VARIABLE)
        .stdout(File::create(&stdout_path).unwrap())
        .stderr(File::create(&stderr_path).unwrap());
    // Dropped on a failure: SIGTERM to `up`, then SIGKILL to whatever of it is left.
    let mut up = ProcessTree::new(
        ChildProcess::spawn_keeping_output("loadtest-up", command).unwrap(),
        STOP_WAIT,
    );
    let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();

    let deadline = tokio::time::Instant::now() + READY_WAIT;
    let printed = loop {
        let printed = std::fs::read_to_string(&stdout_path).unwrap();
        if printed.contains(LAST_READY_LINE) {
            break printed;
        }
        if let Some(status) = up.root_mut().try_wait().unwrap() {
            panic!("up exited with {status} before it was ready:\n{printed}\n{}", stderr());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "up was not ready within {READY_WAIT:?}:\n{printed}\n{}",
            stderr()
        );
        tokio::time::sleep(POLL).await;
    };
    let origin_pid = pid_after(&printed, "origin pid ");
    let edge_pid = pid_after(&printed, "edge pid ");
    for expected in [
        format!("http://{origin_listen}/openapi.json"),
        format!("http://{edge_listen}"),
        format!("http://{edge_metrics_listen}/metrics"),
        format!("UDP {control_listen}"),
    ] {
        assert!(printed.contains(&expected), "{expected} missing from:\n{printed}");
    }
    let token = printed
        .lines()
        .find_map(|line| line.strip_prefix("export TOKEN="))
        .unwrap_or_else(|| panic!("no token in:\n{printed}"));

    assert_eq!(put(origin_listen, "UP/1h", token).await, StatusCode::CREATED);
    let first_read = cache_status(&get(edge_listen, "UP/1h").await);
    assert!(first_read.contains("fwd=miss"), "{first_read}");
    let second_read = get(edge_listen, "UP/1h").await;
    assert!(edge_hits::is_hit(&second_read), "{}", cache_status(&second_read));

    // A new version purges the edge's copy over the control plane, so the next reads fetch it.
    let first_etag = header(&second_read, "etag");
    assert!(first_etag.starts_with("\"1-"), "{first_etag}");
    assert_eq!(put(origin_listen, "UP/1h", token).await, StatusCode::OK);
    let after_write = read_until_changed(edge_listen, "UP/1h", &first_etag).await;
    let new_etag = header(&after_write, "etag");
    assert!(new_etag.starts_with("\"2-"), "{new_etag}");
    assert!(
        cache_status(&after_write).contains("fwd=miss"),
        "{}",
        cache_status(&after_write)
    );

    // The development PKI was made in the folder given, and each file it created was named.
    let edge_identity = EdgeIdentity::new("edge-1", "local").unwrap();
    for file in [
        CA_CERT_FILE.to_owned(),
        CA_KEY_FILE.to_owned(),
        ORIGIN_CERT_FILE.to_owned(),
        ORIGIN_KEY_FILE.to_owned(),
        tls::edge_cert_file(&edge_identity),
        tls::edge_key_file(&edge_identity),
    ] {
        let path = certs_dir.join(&file);
        assert!(path.is_file(), "{} was not made:\n{}", path.display(), stderr());
        let created = format!("up: created {}", path.display());
        assert!(stderr().contains(&created), "{created:?} missing from:\n{}", stderr());
    }

    if launch::find_on_path("curl").is_some() {
        let mut commands = Command::new("sh");
        commands.arg("-c").arg(printed_commands(&printed));
        let output = launch::run_bounded("printed-commands", commands, Duration::from_secs(30)).unwrap();
        for expected in [
            "\"version\":1",
            "fwd=miss",
            "; hit",
            "304 Not Modified",
            "\"version\":2",
            "\"tags\":[\"AAPL:1h\"]",
        ] {
            assert!(output.contains(expected), "{expected:?} missing from:\n{output}");
        }
    } else {
        eprintln!("curl is not on PATH: the printed commands were not run");
    }

    let status = up.root_mut().terminate(STOP_WAIT).unwrap();
    assert!(status.success(), "up ended with {status}:\n{}", stderr());
    for pid in [origin_pid, edge_pid] {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} outlived up:\n{}",
            stderr()
        );
    }
    assert!(
        stderr().contains("up: SIGTERM: stopping the edge and the origin"),
        "{}",
        stderr()
    );

    // Started again without a token, the origin still takes the token it generated at first.
    let second_log = dir.path().join("second-origin.log");
    let (mut second, address) = plain_origin(&data_dir, &second_log).await;
    assert_eq!(generated_token(&second_log), None, "a second token was generated");
    assert_eq!(put(address, "BEFORE/1h", &generated).await, StatusCode::OK);
    assert!(second.terminate(Duration::from_secs(10)).unwrap().success());
}
