//! What the load generator reaches on one CPU against a trivial server on another, so that its own
//! limit can be told apart from the limit of a server it measures. Run it in release mode:
//!
//! `cargo test --release -p loadtest --test generator -- --ignored --nocapture`
use std::net::SocketAddr;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use hyper::Uri;
use loadtest::http::{self, Plan};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const CONNECTIONS: usize = 64;
const DURATION: Duration = Duration::from_secs(5);
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// Pins the calling thread (not its process) to `cpu`, when there are two CPUs or more.
fn pin_this_thread(cpu: usize) {
    if std::thread::available_parallelism().map_or(1, usize::from) < 2 {
        return;
    }
    // `/proc/thread-self` links to `PID/task/TID`.
    let link = std::fs::read_link("/proc/thread-self").unwrap();
    let tid = link.file_name().unwrap().to_string_lossy().into_owned();
    let status = Command::new("taskset")
        .args(["-cp", &cpu.to_string(), &tid])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "taskset could not pin thread {tid}");
}

/// A server on its own thread (pinned to CPU 0) that answers every request without a body with a
/// fixed `200 ok`.
fn start_trivial_server() -> SocketAddr {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        pin_this_thread(0);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            sender.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                stream.set_nodelay(true).unwrap();
                tokio::spawn(async move {
                    let mut buffer = vec![0; 16 * 1024];
                    let mut filled = 0;
                    let mut responses = Vec::new();
                    loop {
                        match stream.read(&mut buffer[filled..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => filled += read,
                        }
                        let mut start = 0;
                        while let Some(end) = buffer[start..filled]
                            .windows(4)
                            .position(|window| window == b"\r\n\r\n")
                        {
                            start += end + 4;
                            responses.extend_from_slice(RESPONSE);
                        }
                        buffer.copy_within(start..filled, 0);
                        filled -= start;
                        if stream.write_all(&responses).await.is_err() {
                            return;
                        }
                        responses.clear();
                    }
                });
            }
        });
    });
    receiver.recv().unwrap()
}

#[test]
#[ignore = "a measurement: run it in release mode with --nocapture"]
fn generator_throughput_against_a_trivial_server() {
    let address = start_trivial_server();
    pin_this_thread(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Requests as `loadtest origin` reads: random paths out of 10,000 built beforehand.
    let paths: Vec<Uri> = (0..10_000)
        .map(|index| Uri::try_from(format!("/v1/forecasts/I{index:05}/1h")).unwrap())
        .collect();
    let read = move |_| Ok(http::get_uri(paths[rand::rng().random_range(0..paths.len())].clone()));
    let result = runtime
        .block_on(http::run(address, &Plan::timed(CONNECTIONS, DURATION), read))
        .unwrap();
    assert_eq!(result.errors, 0);
    println!(
        "{CONNECTIONS} connections for {DURATION:?}: {:.0} req/s, p50 {} µs, p99 {} µs",
        result.rps, result.p50_us, result.p99_us
    );
}
