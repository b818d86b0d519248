//! `loadtest webhooks --quick` with the origin built next to loadtest: with 30% of the receiver's
//! answers failing, every message is delivered in the end, every signature verifies, and nothing is
//! left in dead letters. No timing is checked.

use crate::quick_run::quick_run;

#[test]
fn quick_run_delivers_every_message_despite_failing_answers() {
    let Some((report, stdout)) = quick_run("webhooks", &["origin"]) else {
        return;
    };
    let measurements = report["measurements"].as_array().unwrap();
    assert_eq!(measurements.len(), 1, "{report}");
    let measured = &measurements[0];
    assert_eq!(measured["scenario"]["endpoints"], 10, "{measured}");
    assert_eq!(measured["scenario"]["failing_percent"], 30, "{measured}");
    let published = measured["published"].as_u64().unwrap();
    assert!(published > 0, "{measured}");
    assert_eq!(measured["messages"].as_u64(), Some(published * 10), "{measured}");
    assert_eq!(measured["delivered"], measured["messages"], "{measured}");
    assert!(measured["refused"].as_u64() > Some(0), "{measured}");
    // Every request is a first attempt, a retry of a refusal, or a repeat of an accepted message.
    let requests = measured["requests"].as_u64().unwrap();
    let accounted = published * 10 + measured["refused"].as_u64().unwrap() + measured["duplicates"].as_u64().unwrap();
    assert_eq!(requests, accounted, "{measured}");
    assert_eq!(measured["bad_signatures"], 0, "{measured}");
    assert_eq!(measured["dead_letters"], 0, "{measured}");
    assert!(stdout.contains("deliveries/s"), "{stdout}");
}
