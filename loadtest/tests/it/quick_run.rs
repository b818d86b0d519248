//! Runs a `loadtest COMMAND --quick` measurement against binaries of this build and reads its report.

use std::process::Command;

use serde_json::Value;

use crate::support::profile_dir;

/// Runs `loadtest COMMAND --quick --NAME-bin PATH… --json FILE` with each of `binaries` (`origin`,
/// `edge`) from this build profile, asserts that it succeeded, and answers its JSON report and what it
/// printed; `None`, after saying so, when one of them is not built.
pub fn quick_run(command: &str, binaries: &[&str]) -> Option<(Value, String)> {
    let mut loadtest = Command::new(env!("CARGO_BIN_EXE_loadtest"));
    loadtest.args([command, "--quick"]);
    for name in binaries {
        let path = profile_dir().join(name);
        if !path.is_file() {
            eprintln!(
                "skipped: {} is not built (cargo build -p {name}, or cargo test --workspace)",
                path.display()
            );
            return None;
        }
        loadtest.arg(format!("--{name}-bin")).arg(path);
    }
    let json = tempfile::NamedTempFile::new().expect("a temporary file for the report");
    let output = loadtest.arg("--json").arg(json.path()).output().expect("loadtest runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let report = std::fs::read(json.path()).expect("loadtest wrote its report");
    let report = serde_json::from_slice(&report).expect("the report is JSON");
    Some((report, stdout))
}
