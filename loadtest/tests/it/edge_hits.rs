//! `loadtest edge-hits --quick` against what this machine has: the edge and the origin built next
//! to loadtest, and nginx and Varnish when installed (each skipped by the run otherwise). Only the
//! shape of the report is checked, never a timing.

use std::process::Command;

use crate::support::profile_dir;
use serde_json::Value;

fn installed(program: &str) -> bool {
    loadtest::launch::find_on_path(program).is_some()
}

#[test]
fn quick_run_reports_every_cache_and_its_hits() {
    let dir = profile_dir();
    let origin = dir.join("origin");
    let edge = dir.join("edge");
    if !origin.is_file() {
        eprintln!(
            "skipped: {} is not built (cargo build -p origin, or cargo test --workspace)",
            origin.display()
        );
        return;
    }
    if !edge.is_file() {
        eprintln!(
            "{} is not built (cargo build -p edge): the run skips the edge",
            edge.display()
        );
    }
    let expected = [
        ("edge", edge.is_file()),
        ("nginx", installed("nginx")),
        ("varnish", installed("varnishd")),
    ];
    if expected.iter().all(|&(_, available)| !available) {
        eprintln!("skipped: neither the edge nor nginx nor varnishd is available here");
        return;
    }

    let json = tempfile::NamedTempFile::new().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["edge-hits", "--quick", "--origin-bin"])
        .arg(&origin)
        .arg("--edge-bin")
        .arg(&edge)
        .arg("--json")
        .arg(json.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");

    let report: Value = serde_json::from_slice(&std::fs::read(json.path()).unwrap()).unwrap();
    let caches = report["caches"].as_array().unwrap();
    assert_eq!(caches.len(), expected.len(), "{caches:?}");
    for (record, &(name, available)) in caches.iter().zip(&expected) {
        assert_eq!(record["cache"], name);
        let status = if available { "measured" } else { "skipped" };
        assert_eq!(record["status"], status, "{record}");
        if available {
            assert!(stdout.contains(name), "{name} missing from the table:\n{stdout}");
        }
    }

    let measured = expected.iter().filter(|&&(_, available)| available).count();
    let scenarios = report["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 2);
    for scenario in scenarios.iter().chain(report["half_rate"].as_array().unwrap()) {
        let rows = scenario["rows"].as_array().unwrap();
        assert_eq!(rows.len(), measured, "{scenario}");
        for row in rows {
            assert_eq!(row["hit_ratio"], 1.0, "{row}");
        }
    }
    assert!(stdout.contains("hits"), "{stdout}");
}
