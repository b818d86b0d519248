//! A fuzz campaign from the origin's own `/openapi.json`: schemathesis (PyPI, 4.x; `.ci/run` installs it)
//! generates requests for every operation, valid and invalid, and then chains them statefully, against
//! a real origin, once on the embedded store and once on Redis, with every check it has: no server error
//! (5xx) and no hang; every answer's status, content type, headers and body as the document describes
//! them; every request the document admits accepted and every one it does not refused. The rules a JSON
//! Schema cannot state (`valid_until` after `generated_at`, a target the webhook policy permits…) are
//! named, operation by operation, in `tests/scripts/schemathesis.toml`.
//!
//! The campaign stays on the box: the fuzzer is given `http://127.0.0.1:…` only (with proxies cleared,
//! and its hooks refuse any other host), and the origin allow-lists no webhook target, so private
//! addresses are refused; the hooks register every endpoint disabled, which the origin never delivers
//! to, and give `https` targets an address literal for a host, so that registering one resolves no name
//! (see `tests/scripts/schemathesis_hooks.py`). The test checks afterwards that no attempt was made.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use loadtest::launch::RedisServer;
use origin::config::OriginConfig;

use super::support::{self, ADMIN_TOKEN, TestOrigin};

const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts");
/// Test cases per operation and phase, on the embedded store and on Redis.
const MAX_EXAMPLES: u32 = 25;
const MAX_EXAMPLES_ON_REDIS: u32 = 10;
/// The longest one request may take before it counts as a hang. Streams are read for a second, then
/// cut short (see `schemathesis.toml`).
const REQUEST_TIMEOUT_SECS: u32 = 10;
/// The whole campaign is killed past this (a debug build needs about a minute and a half alone, more
/// beside the other tests).
const WALL_CLOCK: Duration = Duration::from_secs(420);

/// Fails, saying how to install it, when schemathesis 4 is missing.
fn require_schemathesis() {
    const INSTALL: &str = "this test runs schemathesis 4 (PyPI): install it with \
        `python3 -m pip install --user schemathesis` (add --break-system-packages on an \
        externally managed Python); .ci/run installs it";
    let output = std::process::Command::new("python3")
        .args(["-c", "import schemathesis; print(schemathesis.__version__)"])
        .output()
        .unwrap_or_else(|error| panic!("python3 does not run ({error}); {INSTALL}"));
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        output.status.success(),
        "schemathesis does not import: {}; {INSTALL}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    assert!(
        version.starts_with("4."),
        "schemathesis {version} is installed, the campaign needs 4.x; {INSTALL}"
    );
}

/// A finding of the hooks (a 5xx answer, or a request that got none) as the test reports it.
fn describe(finding: &Value, count: usize) -> String {
    let request = &finding["request"];
    let mut text = format!(
        "{kind}: {operation} ({count} alike)\n  request: {method} {url}\n  body: {body}",
        kind = finding["kind"].as_str().unwrap_or("?"),
        operation = finding["operation"].as_str().unwrap_or("?"),
        method = request["method"].as_str().unwrap_or("?"),
        url = request["url"].as_str().unwrap_or("?"),
        body = request["body"],
    );
    if let Some(response) = finding.get("response") {
        text.push_str(&format!("\n  response: {} {}", response["status"], response["body"]));
    }
    text.push_str(&format!("\n  reproduce: {}", request["curl"].as_str().unwrap_or("?")));
    text
}

/// Every distinct finding (by operation, status and answer), with how many requests got it.
fn distinct(findings: &[Value]) -> Vec<String> {
    let mut groups: Vec<(String, &Value, usize)> = Vec::new();
    for finding in findings {
        let key = format!(
            "{} {} {} {}",
            finding["kind"], finding["operation"], finding["response"]["status"], finding["response"]["body"]
        );
        match groups.iter_mut().find(|(k, ..)| *k == key) {
            Some((_, _, count)) => *count += 1,
            None => groups.push((key, finding, 1)),
        }
    }
    groups
        .into_iter()
        .map(|(_, finding, count)| describe(finding, count))
        .collect()
}

fn read_findings(path: &Path) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The sum of a counter's samples on the origin's `/metrics`.
async fn counter_total(origin: &TestOrigin, name: &str) -> f64 {
    let text = origin.get("/metrics").send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_keeps_its_openapi_document_under_fuzzing_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    campaign(support::config(dir.path()), dir.path(), MAX_EXAMPLES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_keeps_its_openapi_document_under_fuzzing_on_redis() {
    let redis = RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(dir.path());
    config.storage.redis_url = Some(redis.url());
    campaign(config, dir.path(), MAX_EXAMPLES_ON_REDIS).await;
}

/// Runs schemathesis against an origin started with `config` and checks that it found nothing.
async fn campaign(config: OriginConfig, dir: &Path, max_examples: u32) {
    require_schemathesis();
    // Webhook targets: public addresses over https, and the discard-only prefix the hooks put in place
    // of every host name (nothing answers there, and endpoints are registered disabled anyway).
    let origin = TestOrigin::start_for_tools(config).await;

    let work = dir.join("schemathesis");
    std::fs::create_dir_all(&work).unwrap();
    let findings = work.join("findings.ndjson");
    let report = work.join("report.json");
    let output = work.join("output.txt");
    let log = std::fs::File::create(&output).unwrap();
    let mut command = tokio::process::Command::new("python3");
    support::without_proxies(&mut command)
        .args(["-m", "schemathesis.cli", "--config-file"])
        .arg(format!("{SCRIPTS}/schemathesis.toml"))
        .arg("run")
        .arg(origin.url("/openapi.json"))
        .args(["--url", &origin.base])
        .args(["--header", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
        .args(["--checks", "all"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--max-examples", &max_examples.to_string()])
        .args(["--request-timeout", &REQUEST_TIMEOUT_SECS.to_string()])
        .args(["--continue-on-failure", "--no-color"])
        .args(["--report", "json", "--report-json-path"])
        .arg(&report)
        .current_dir(&work)
        .env("SCHEMATHESIS_HOOKS", format!("{SCRIPTS}/schemathesis_hooks.py"))
        .env("FUZZ_FINDINGS", &findings)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = command.spawn().expect("python3 runs schemathesis");
    let status = match tokio::time::timeout(WALL_CLOCK, child.wait()).await {
        Ok(status) => Some(status.unwrap()),
        Err(_) => {
            child.kill().await.unwrap();
            None
        }
    };
    let took = started.elapsed();
    let transcript = std::fs::read_to_string(&output).unwrap_or_default();
    let findings = read_findings(&findings);
    let listed = distinct(&findings);
    eprintln!("schemathesis ran for {took:.0?} ({status:?}); its output:\n{transcript}");

    assert!(
        status.is_some(),
        "the campaign was still running after {WALL_CLOCK:?} and was killed; findings so far:\n{}",
        listed.join("\n")
    );
    assert!(
        findings.is_empty(),
        "{} requests got a server error or no answer; the distinct ones:\n\n{}",
        findings.len(),
        listed.join("\n\n")
    );

    // The run must have happened (a document that did not load, or a crash, is no pass), over every
    // operation, and found nothing.
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(&report).unwrap_or_else(|error| panic!("no schemathesis report ({error})")),
    )
    .unwrap();
    assert_eq!(report["complete"], true, "the campaign did not finish: {report:#}");
    let operations = &report["operations"];
    assert!(
        operations["tested"].as_u64().unwrap_or(0) > 0 && operations["tested"] == operations["total"],
        "schemathesis did not test every operation: {operations:#}"
    );
    for (phase, outcome) in report["phases"].as_object().into_iter().flatten() {
        eprintln!("phase {phase}: {outcome}");
    }
    assert_eq!(
        report["failures"],
        serde_json::json!([]),
        "schemathesis found answers that break the document (FAILURES in the output above)"
    );
    assert_eq!(
        report["errors"],
        serde_json::json!([]),
        "schemathesis could not test everything (ERRORS above)"
    );
    let warned: Vec<(&String, &Value)> = report["warnings"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, list)| list.as_array().is_some_and(|list| !list.is_empty()))
        .collect();
    assert!(warned.is_empty(), "schemathesis warned about the document: {warned:?}");

    // Nothing left the box: no webhook endpoint was ever enabled, so no delivery was attempted.
    let endpoints = origin.state.webhooks.store().endpoints().await.unwrap();
    assert!(
        endpoints.iter().all(|endpoint| !endpoint.enabled),
        "an enabled webhook endpoint was registered: {:?}",
        endpoints
            .iter()
            .filter(|e| e.enabled)
            .map(|e| &e.url)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        counter_total(&origin, "origin_webhook_attempts_total").await,
        0.0,
        "the origin attempted webhook deliveries"
    );
    origin.stop().await;
}
