//! A client generated from the origin's own `/openapi.json` is usable: openapi-python-client (PyPI;
//! `.ci/run` installs it) generates a Python package from the document without a warning, and
//! `tests/scripts/generated_client_walk.py` walks the README's admin examples with that package alone
//! (write, read, versions, a second write, a rollback, an invalidation and its status, a webhook
//! endpoint), checking every answer on the models the generator made from the document. So an answer
//! the document describes wrongly, or a schema the generator cannot turn into a model, fails here.
//!
//! Everything stays on the box: the client is given `http://127.0.0.1:…` only, with proxies cleared,
//! and the webhook endpoint it registers is disabled, at an address in the discard-only prefix
//! `100::/64`.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use super::support::{self, ADMIN_TOKEN, TestOrigin};

const WALK_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts/generated_client_walk.py");
const INSTALL: &str = "this test runs openapi-python-client (PyPI): install it with \
    `python3 -m pip install --user openapi-python-client` (add --break-system-packages on an \
    externally managed Python); .ci/run installs it";
/// Generation takes about a second; the walk, a dozen requests, less.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);
/// The generator's default post-hooks format the package with ruff, and report ruff missing as a
/// warning; formatting is not needed, and then every warning left is about the document.
const GENERATOR_CONFIG: &str = r#"{"post_hooks": []}"#;

/// The installed generator's version; fails, saying how to install it, when it is missing.
fn require_generator() -> String {
    let output = std::process::Command::new("python3")
        .args(["-m", "openapi_python_client", "--version"])
        .output()
        .unwrap_or_else(|error| panic!("python3 does not run ({error}); {INSTALL}"));
    assert!(
        output.status.success(),
        "openapi-python-client does not run: {}; {INSTALL}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// `python3` with `args`, its proxies cleared so that nothing but the loopback origin is reached;
/// killed when it runs past [`STEP_TIMEOUT`].
async fn python(args: &[&str], dir: &std::path::Path) -> Result<Output, String> {
    let mut command = tokio::process::Command::new("python3");
    support::without_proxies(&mut command)
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(STEP_TIMEOUT, command.output()).await {
        Ok(output) => output.map_err(|error| format!("python3 does not run ({error})")),
        Err(_) => Err(format!("still running after {STEP_TIMEOUT:?}, killed")),
    }
}

fn transcript(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
    .trim()
    .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_generated_from_the_openapi_document_walks_the_readme_examples() {
    let generator = require_generator();
    let dir = tempfile::tempdir().unwrap();
    // The walk registers a disabled endpoint at `https://[100::1]/hook`.
    let origin = TestOrigin::start_for_tools(support::config(dir.path())).await;

    let work = dir.path().join("generated-client");
    std::fs::create_dir_all(&work).unwrap();
    let response = origin.get("/openapi.json").send().await.unwrap();
    assert_eq!(response.status(), 200, "GET /openapi.json");
    std::fs::write(work.join("openapi.json"), response.bytes().await.unwrap()).unwrap();
    std::fs::write(work.join("generator.json"), GENERATOR_CONFIG).unwrap();
    let package = work.join("forecast_client");
    let package_path = package.to_str().expect("the temporary folder's path is UTF-8");

    let started = Instant::now();
    let generation = python(
        &[
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            "openapi.json",
            "--output-path",
            package_path,
            "--meta",
            "none",
            "--config",
            "generator.json",
            "--fail-on-warning",
        ],
        &work,
    )
    .await
    .unwrap_or_else(|error| panic!("openapi-python-client: {error}; {INSTALL}"));
    let generated = transcript(&generation);
    eprintln!(
        "{generator} generated the client in {:.1?} ({}):\n{generated}",
        started.elapsed(),
        generation.status
    );
    // With --fail-on-warning any warning fails the generation, but a client is still written unless
    // there was an error; the walk then runs too, so that one run reports every problem.
    let mut failures = Vec::new();
    if !generation.status.success() || generated.contains("Warning(s)") || generated.contains("Error(s)") {
        failures.push(format!(
            "openapi-python-client could not turn all of /openapi.json into a client \
             (each block below names an endpoint or schema it left out):\n{generated}"
        ));
    }

    if package.join("__init__.py").exists() {
        let started = Instant::now();
        let walk = python(&["-u", WALK_SCRIPT, &origin.base, ADMIN_TOKEN, package_path], &work).await;
        match walk {
            Ok(output) => {
                let walked = transcript(&output);
                eprintln!("the walk took {:.1?} ({}):\n{walked}", started.elapsed(), output.status);
                if !output.status.success() {
                    failures.push(format!(
                        "the generated client did not walk the README's examples:\n{walked}"
                    ));
                }
            }
            Err(error) => failures.push(format!("the walk: {error}")),
        }
    } else {
        failures.push("no client was generated, so none could walk the examples".to_owned());
    }

    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    origin.stop().await;
}
