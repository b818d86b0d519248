//! The launcher against real `redis-server`, `redis-cli` and small local servers.

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use loadtest::launch::{
    ChildProcess, ProcessTree, RedisCluster, RedisServer, free_port, redis_command, run_bounded, run_bounded_async,
    run_bounded_keeping_output, wait_http_ok, wait_listening,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[test]
fn redis_server_answers_ping_and_keeps_data_across_restart() {
    let mut redis = RedisServer::start().unwrap();
    let port = redis.port();
    let get = |key: &str| redis_command(port, &["GET", key]).unwrap();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    assert_eq!(redis_command(port, &["PING"]).unwrap().as_deref(), Some("PONG"));
    assert_eq!(
        redis_command(port, &["SET", "forecast", "187.42"]).unwrap().as_deref(),
        Some("OK")
    );

    redis.stop().unwrap();
    assert!(redis.process().is_none());
    assert!(redis_command(port, &["PING"]).is_err());

    redis.restart().unwrap();
    assert_eq!(redis.port(), port);
    assert_eq!(redis_command(port, &["PING"]).unwrap().as_deref(), Some("PONG"));
    assert_eq!(get("forecast").as_deref(), Some("187.42"));
    assert_eq!(get("missing"), None);
}

#[test]
fn redis_server_is_killed_on_drop() {
    let redis = RedisServer::start().unwrap();
    let port = redis.port();
    let log = redis.process().unwrap().log_path().map(ToOwned::to_owned);
    drop(redis);
    assert!(redis_command(port, &["PING"]).is_err());
    if let Some(log) = log {
        assert!(!log.exists(), "log {} outlived its server", log.display());
    }
}

#[test]
fn redis_cluster_reaches_ok_state() {
    let cluster = RedisCluster::start().unwrap();
    let urls = cluster.urls();
    assert_eq!(urls.len(), 3);
    for node in cluster.nodes() {
        let info = redis_command(node.port(), &["CLUSTER", "INFO"]).unwrap().unwrap();
        assert!(info.contains("cluster_state:ok"), "{info}");
        assert!(info.contains("cluster_known_nodes:3"), "{info}");
        assert!(urls.contains(&node.url()));
    }
}

#[test]
fn terminate_sends_sigterm_and_returns_the_status() {
    let mut command = Command::new("sleep");
    command.arg("30");
    let mut sleeper = ChildProcess::spawn("sleep", command).unwrap();
    assert!(sleeper.pid() > 0);
    let status = sleeper.terminate(Duration::from_secs(5)).unwrap();
    assert_eq!(status.signal(), Some(15));
    // Already exited: reported again without signalling anything.
    assert_eq!(sleeper.terminate(Duration::from_secs(1)).unwrap(), status);
}

#[test]
fn terminate_kills_a_child_that_ignores_sigterm() {
    let mut command = Command::new("sh");
    command.args(["-c", "trap '' TERM; echo ready; while true; do sleep 0.05; done"]);
    let mut stubborn = ChildProcess::spawn("stubborn", command).unwrap();
    // Wait until the trap is set, or SIGTERM would arrive before it.
    let mut waited = 0;
    while !stubborn.log_tail(1).contains("ready") && waited < 500 {
        std::thread::sleep(Duration::from_millis(10));
        waited += 1;
    }
    if stubborn.log_path().is_none() {
        // LOADTEST_VERBOSE=1: the output went to the terminal; give the shell time to set its trap.
        std::thread::sleep(Duration::from_millis(500));
    }
    let error = stubborn.terminate(Duration::from_millis(300)).unwrap_err();
    assert!(format!("{error:#}").contains("did not exit"), "{error:#}");
    assert!(stubborn.try_wait().unwrap().is_some());
}

#[test]
fn process_tree_stops_the_processes_its_child_started() {
    // A shell that starts two sleepers and exits on SIGTERM without stopping them.
    let mut command = Command::new("sh");
    command.args(["-c", "sleep 30 & sleep 30 & echo started; wait"]);
    let tree = ProcessTree::new(
        ChildProcess::spawn("sleepers", command).unwrap(),
        Duration::from_secs(2),
    );
    let mut waited = 0;
    while tree.pids().len() < 3 && waited < 500 {
        std::thread::sleep(Duration::from_millis(10));
        waited += 1;
    }
    let pids = tree.pids();
    assert_eq!(pids.len(), 3, "{pids:?}");
    assert!(tree.resident_bytes().unwrap() > 0);
    drop(tree);
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for a parent that does not reap (pid 1 of some containers).
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().chars().next());
        assert!(matches!(state, None | Some(Some('Z'))), "pid {pid} still runs: {stat}");
    }
}

#[test]
fn child_output_goes_to_a_log_file() {
    let mut command = Command::new("sh");
    command.args(["-c", "echo one; echo two >&2; echo three"]);
    let mut child = ChildProcess::spawn("printer", command).unwrap();
    assert!(child.wait_timeout(Duration::from_secs(5)).unwrap().unwrap().success());
    if child.log_path().is_some() {
        assert_eq!(child.log_tail(2), "two\nthree");
        assert_eq!(child.log_tail(10), "one\ntwo\nthree");
    }

    let output = run_bounded(
        "echo",
        {
            let mut echo = Command::new("echo");
            echo.arg("hello");
            echo
        },
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(output, "hello\n");
}

#[test]
fn run_bounded_reports_failures_and_timeouts() {
    let mut failing = Command::new("sh");
    failing.args(["-c", "echo broken >&2; exit 3"]);
    let error = run_bounded("failing", failing, Duration::from_secs(5)).unwrap_err();
    assert!(format!("{error:#}").contains("broken"), "{error:#}");

    let mut slow = Command::new("sleep");
    slow.arg("30");
    let error = run_bounded("slow", slow, Duration::from_millis(100)).unwrap_err();
    assert!(format!("{error:#}").contains("did not finish"), "{error:#}");
}

#[test]
fn run_bounded_keeping_output_leaves_the_output_where_the_command_sets_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out");
    let mut echo = Command::new("sh");
    echo.args(["-c", "echo kept"])
        .stdout(std::fs::File::create(&path).unwrap());
    run_bounded_keeping_output("echo", echo, Duration::from_secs(5)).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "kept\n");

    let mut failing = Command::new("sh");
    failing.args(["-c", "exit 3"]);
    let error = run_bounded_keeping_output("failing", failing, Duration::from_secs(5)).unwrap_err();
    assert!(format!("{error:#}").contains("failing failed with"), "{error:#}");
}

#[tokio::test]
async fn wait_listening_waits_for_a_listener_or_the_exit() {
    let mut sleeper = Command::new("sleep");
    sleeper.arg("30");
    let mut sleeper = ChildProcess::spawn("sleeper", sleeper).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listening = listener.local_addr().unwrap();
    wait_listening(&mut sleeper, listening, Duration::from_secs(5))
        .await
        .unwrap();

    let closed = SocketAddr::from(([127, 0, 0, 1], free_port().unwrap()));
    let error = wait_listening(&mut sleeper, closed, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("sleeper was not ready"), "{error:#}");

    let mut failing = Command::new("sh");
    failing.args(["-c", "exit 3"]);
    let mut failing = ChildProcess::spawn("failing", failing).unwrap();
    let error = wait_listening(&mut failing, closed, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("failing exited with"), "{error:#}");
}

#[tokio::test]
async fn run_bounded_async_returns_output_and_kills_on_drop() {
    let mut echo = Command::new("sh");
    echo.args(["-c", "echo fine"]);
    let output = run_bounded_async("echo", echo, Duration::from_secs(5)).await.unwrap();
    assert_eq!(output.trim(), "fine");

    let mut failing = Command::new("sh");
    failing.args(["-c", "echo broken >&2; exit 3"]);
    let error = run_bounded_async("failing", failing, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("broken"), "{error:#}");

    let mut slow = Command::new("sleep");
    slow.arg("30");
    let error = run_bounded_async("slow", slow, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("did not finish"), "{error:#}");

    // Dropping the future, as Ctrl-C does, kills the command.
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let mut sleeper = Command::new("sh");
    sleeper
        .arg("-c")
        .arg(format!("echo $$ > {}; exec sleep 30", pid_file.display()));
    let bounded = run_bounded_async("sleeper", sleeper, Duration::from_secs(60));
    assert!(tokio::time::timeout(Duration::from_millis(300), bounded).await.is_err());
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    assert!(!Path::new(&format!("/proc/{}", pid.trim())).exists());
}

#[tokio::test]
async fn wait_http_ok_waits_for_200() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    // Answers 503 to the first two connections, then 200.
    tokio::spawn(async move {
        for served in 0.. {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0; 1024];
            let _ = stream.read(&mut request).await;
            let status = if served < 2 {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            let response = format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\n\r\nok");
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    wait_http_ok(&format!("http://{address}/readyz"), Duration::from_secs(5))
        .await
        .unwrap();
}

#[tokio::test]
async fn wait_http_ok_gives_up_after_the_timeout() {
    let port = free_port().unwrap();
    let error = wait_http_ok(&format!("http://127.0.0.1:{port}/readyz"), Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("did not answer 200"), "{error:#}");
}
