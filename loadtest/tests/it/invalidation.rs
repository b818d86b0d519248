//! `loadtest invalidation --quick` with the edge built next to loadtest: every edge must apply every
//! invalidation, of the writes and of the rate phase, and both hit-ratio runs happen. No timing is checked.

use crate::quick_run::quick_run;
use serde_json::Value;

#[test]
fn quick_run_applies_every_invalidation_on_every_edge() {
    let Some((report, stdout)) = quick_run("invalidation", &["edge"]) else {
        return;
    };
    let rounds = report["settings"]["rounds"].as_u64().unwrap();
    assert_eq!(rounds, 20, "{report}");
    let head = report["log_head"].as_u64().unwrap();
    // The rate phase: 100 invalidations a second for one second.
    let rates = report["rates"].as_array().unwrap();
    assert_eq!(rates.len(), 1, "{report}");
    let issued = rates[0]["accepted_applied_all_us"].as_array().unwrap().len() as u64;
    assert_eq!(issued, 100, "{report}");
    // The first version, then two writes per round, each one invalidation, then the rate phase.
    assert_eq!(head, 1 + 2 * rounds + issued, "{report}");
    let hit_ratios = report["hit_ratios"].as_array().unwrap();
    let warming: Vec<&Value> = hit_ratios.iter().map(|measured| &measured["warming"]).collect();
    assert_eq!(warming, [false, true], "{report}");
    assert!(
        hit_ratios.iter().all(|measured| measured["reads"].as_u64() > Some(0)),
        "{report}"
    );
    let acks = report["final_acks"].as_array().unwrap();
    assert_eq!(acks.len(), 1, "{report}");
    for ack in acks {
        assert_eq!(ack["acked"].as_u64(), Some(head), "{ack}");
    }
    let applied = report["samples"]["applied_us"].as_array().unwrap();
    assert_eq!(applied.len(), acks.len());
    for samples in applied {
        assert_eq!(samples.as_array().unwrap().len() as u64, rounds, "{samples}");
    }
    assert_eq!(report["samples"]["visible_us"].as_array().unwrap().len() as u64, rounds);
    assert!(stdout.contains("applied at every edge"), "{stdout}");
}
