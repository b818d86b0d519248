//! `loadtest sse --quick` with the origin built next to loadtest: every subscriber receives every event
//! published in the counted time, from the origin and, where it is installed, from nchan. No timing is
//! checked.

use crate::quick_run::quick_run;

#[test]
fn quick_run_delivers_every_event_to_every_subscriber() {
    let Some((report, stdout)) = quick_run("sse", &["origin"]) else {
        return;
    };
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
