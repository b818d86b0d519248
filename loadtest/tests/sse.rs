//! `loadtest sse --quick` with the origin built next to loadtest: every subscriber receives every event
//! published in the counted time, from the origin and, where it is installed, from nchan. No timing is
//! checked.

mod support;

use std::process::Command;

use serde_json::Value;
use support::profile_dir;

#[test]
fn quick_run_delivers_every_event_to_every_subscriber() {
    let origin = profile_dir().join("origin");
    if !origin.is_file() {
        eprintln!(
            "skipped: {} is not built (cargo build -p origin, or cargo test --workspace)",
            origin.display()
        );
        return;
    }
    let json = tempfile::NamedTempFile::new().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["sse", "--quick", "--origin-bin"])
        .arg(&origin)
        .arg("--json")
        .arg(json.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");

    let report: Value = serde_json::from_slice(&std::fs::read(json.path()).unwrap()).unwrap();
    let measurements = report["measurements"].as_array().unwrap();
    assert!(measurements.iter().any(|m| m["server"] == "origin"), "{report}");
    for measured in measurements {
        assert!(measured["published"].as_u64() > Some(0), "{measured}");
        assert_eq!(measured["missing"], 0, "{measured}");
        assert_eq!(measured["streams_ended"], 0, "{measured}");
        assert_eq!(measured["scenario"]["subscribers"], 50, "{measured}");
    }
    assert!(stdout.contains("deliveries/s"), "{stdout}");
}
