//! `/openapi.json` checked by an independent validator (PyPI `openapi-spec-validator`, which `.ci/run`
//! installs), so the document clients, gateways and fuzzers consume is valid OpenAPI 3.1.

use crate::support::TestOrigin;

const INSTALL: &str = "python3 -m pip install --user openapi-spec-validator (add --break-system-packages on an \
    externally managed Python); .ci/run installs it";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_valid_openapi_3_1() {
    let origin = TestOrigin::embedded().await;
    let document = origin.get("/openapi.json").send().await.unwrap().text().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openapi.json");
    std::fs::write(&path, &document).unwrap();
    let output = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator", "--subschema-errors", "all"])
        .arg(&path)
        .output()
        .unwrap_or_else(|error| panic!("python3 does not run ({error}); {INSTALL}"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !said.contains("No module named"),
        "the validator is missing: {INSTALL}\n{said}"
    );
    // The validator may quote the whole document; its first lines name the error.
    let excerpt: String = said.chars().take(2000).collect();
    assert!(
        output.status.success(),
        "/openapi.json is not valid OpenAPI 3.1:\n{excerpt}"
    );
}
