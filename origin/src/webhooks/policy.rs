//! Delivery policy as plain functions, with no I/O: how a receiver's answer is taken ([`verdict`],
//! [`retry_after`]), what becomes of a delivery after an attempt ([`RetrySchedule::finish`]), and what
//! an outcome changes in its endpoint's health ([`health_change`]). The deliverer applies them.
//!
//! Invariants: a delivery is tried again only while the schedule has a step for its next attempt (a
//! receiver's `Retry-After` changes when, never whether, and never beyond `max_retry_after`); a retry
//! goes back in line like a new delivery; only an endpoint that is enabled and has failed, without a
//! success, for `disable_after` is disabled.

use std::ops::Range;
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use shared::time::millis;

use super::clock::later;
use crate::storage::webhooks::{Delivery, Finish, StoredEndpoint};

/// What became of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Worth another attempt; `retry_after` when the receiver asked for a delay.
    Retry {
        retry_after: Option<Duration>,
    },
    /// Refused for good.
    Final,
}

/// How a response status is taken: 2xx delivered; timeouts, conflicts, throttling and server errors
/// retried; every other status final.
pub fn verdict(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 | 409 | 425 | 429 | 500..=599 => Verdict::Retry { retry_after: None },
        _ => Verdict::Final,
    }
}

/// `Retry-After` as seconds or an HTTP date (a date already past asks for no delay); `None` when
/// absent or neither.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// The factors a scheduled delay is stretched by, one drawn per retry: up to a fifth either way, so
/// that deliveries failed together do not all return together.
pub const JITTER: Range<f64> = 0.8..1.2;

/// When a failed attempt is tried again: `webhooks.retry_schedule` and `webhooks.max_retry_after`.
#[derive(Debug, Clone)]
pub struct RetrySchedule {
    /// The delay before each attempt; the first is the first attempt's, so there are as many
    /// attempts as delays.
    pub delays: Vec<Duration>,
    /// The longest delay a receiver's `Retry-After` is followed for.
    pub max_retry_after: Duration,
}

impl RetrySchedule {
    /// What becomes of `delivery` after an attempt judged `verdict` at `now_ms`: done, due again
    /// after the schedule's next delay stretched by `jitter` (drawn from [`JITTER`]) or after the
    /// receiver's `Retry-After`, or a dead letter once refused for good or out of attempts.
    pub fn finish(&self, delivery: &Delivery, verdict: Verdict, jitter: f64, now_ms: u64) -> Finish {
        let made = delivery.attempts + 1;
        // A retry goes back in line like a new delivery, and so does a dead letter redriven.
        let next = Delivery {
            attempts: made,
            put_off: false,
            ..delivery.clone()
        };
        let retry_after = match verdict {
            Verdict::Delivered => return Finish::Done,
            Verdict::Final => return Finish::Dead(next),
            Verdict::Retry { retry_after } => retry_after,
        };
        let Some(scheduled) = self.delays.get(made as usize) else {
            return Finish::Dead(next);
        };
        let delay = match retry_after {
            Some(asked) => asked.min(self.max_retry_after),
            None => scheduled.mul_f64(jitter),
        };
        Finish::Later {
            delivery: next,
            due_ms: later(now_ms, delay),
        }
    }
}

/// What an attempt's outcome changes in its endpoint's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthChange {
    /// A success after failures: healthy again.
    Recovered,
    /// The first failure after a success.
    Failing { since_ms: u64 },
    /// Failing for `disable_after`: nothing more is sent to it until an operator enables it.
    Disabled { reason: String },
}

/// The change an attempt made at `now_ms` that `delivered` (or not) brings to `endpoint`'s health;
/// `None` when it stays as it is.
pub fn health_change(
    endpoint: &StoredEndpoint,
    delivered: bool,
    now_ms: u64,
    disable_after: Duration,
) -> Option<HealthChange> {
    match (delivered, endpoint.failing_since_ms) {
        (true, None) => None,
        (true, Some(_)) => Some(HealthChange::Recovered),
        (false, None) => Some(HealthChange::Failing { since_ms: now_ms }),
        (false, Some(since)) => {
            let failing_for = now_ms.saturating_sub(since);
            if !endpoint.enabled || failing_for < millis(disable_after) {
                return None;
            }
            let reason = format!(
                "every attempt failed for {} (webhooks.disable_after)",
                humantime::format_duration(Duration::from_millis(failing_for))
            );
            Some(HealthChange::Disabled { reason })
        }
    }
}

impl HealthChange {
    pub fn apply(self, endpoint: &mut StoredEndpoint) {
        match self {
            Self::Recovered => endpoint.failing_since_ms = None,
            Self::Failing { since_ms } => endpoint.failing_since_ms = Some(since_ms),
            Self::Disabled { reason } => {
                endpoint.enabled = false;
                endpoint.disabled_reason = Some(reason);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::endpoints::example;
    use reqwest::header::HeaderValue;

    #[test]
    fn statuses_are_delivered_retried_or_final() {
        assert_eq!(verdict(200), Verdict::Delivered);
        assert_eq!(verdict(204), Verdict::Delivered);
        for status in [408, 409, 425, 429, 500, 503] {
            assert_eq!(verdict(status), Verdict::Retry { retry_after: None }, "{status}");
        }
        for status in [301, 400, 401, 404, 410, 422] {
            assert_eq!(verdict(status), Verdict::Final, "{status}");
        }
    }

    fn retry_after_of(value: &str, now: SystemTime) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_str(value).unwrap());
        retry_after(&headers, now)
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(retry_after_of("7", now), Some(Duration::from_secs(7)));
        assert_eq!(retry_after_of(" 0 ", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(120));
        assert_eq!(retry_after_of(&later, now), Some(Duration::from_secs(120)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(60));
        assert_eq!(retry_after_of(&past, now), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_that_is_absent_or_garbage_asks_for_nothing() {
        let now = SystemTime::now();
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
        for garbage in ["soon", "-5", "1.5", "", "Tue, 99 Foo 2026"] {
            assert_eq!(retry_after_of(garbage, now), None, "{garbage:?}");
        }
    }

    fn schedule() -> RetrySchedule {
        RetrySchedule {
            delays: vec![Duration::ZERO, Duration::from_secs(5), Duration::from_secs(300)],
            max_retry_after: Duration::from_secs(60),
        }
    }

    fn delivery(attempts: u32) -> Delivery {
        Delivery {
            endpoint: "ep_a".into(),
            event_id: 7,
            attempts,
            appended_at_ms: 1,
            put_off: true,
        }
    }

    const NOW: u64 = 1_000_000;
    const RETRY: Verdict = Verdict::Retry { retry_after: None };

    #[test]
    fn a_delivered_attempt_finishes_the_delivery() {
        assert_eq!(
            schedule().finish(&delivery(0), Verdict::Delivered, 1.0, NOW),
            Finish::Done
        );
    }

    #[test]
    fn a_final_answer_makes_a_dead_letter_at_once() {
        assert_eq!(
            schedule().finish(&delivery(0), Verdict::Final, 1.0, NOW),
            Finish::Dead(Delivery {
                attempts: 1,
                put_off: false,
                ..delivery(0)
            })
        );
    }

    #[test]
    fn retries_follow_the_schedule_step_by_step_back_in_line() {
        for (attempts, delay_ms) in [(0, 5_000), (1, 300_000)] {
            assert_eq!(
                schedule().finish(&delivery(attempts), RETRY, 1.0, NOW),
                Finish::Later {
                    delivery: Delivery {
                        attempts: attempts + 1,
                        put_off: false,
                        ..delivery(attempts)
                    },
                    due_ms: NOW + delay_ms,
                },
                "after attempt {}",
                attempts + 1
            );
        }
    }

    #[test]
    fn the_end_of_the_schedule_makes_a_dead_letter() {
        let asked = Verdict::Retry {
            retry_after: Some(Duration::from_secs(1)),
        };
        for verdict in [RETRY, asked] {
            assert_eq!(
                schedule().finish(&delivery(2), verdict, 1.0, NOW),
                Finish::Dead(Delivery {
                    attempts: 3,
                    put_off: false,
                    ..delivery(2)
                })
            );
        }
    }

    fn due_ms(finish: Finish) -> u64 {
        match finish {
            Finish::Later { due_ms, .. } => due_ms,
            other => panic!("not a retry: {other:?}"),
        }
    }

    #[test]
    fn jitter_stretches_the_scheduled_delay() {
        assert_eq!(due_ms(schedule().finish(&delivery(0), RETRY, 0.8, NOW)), NOW + 4_000);
        assert_eq!(due_ms(schedule().finish(&delivery(0), RETRY, 1.2, NOW)), NOW + 6_000);
    }

    #[test]
    fn retry_after_replaces_the_schedule_up_to_max_retry_after() {
        let asked = |seconds| Verdict::Retry {
            retry_after: Some(Duration::from_secs(seconds)),
        };
        assert_eq!(due_ms(schedule().finish(&delivery(1), asked(2), 1.2, NOW)), NOW + 2_000);
        assert_eq!(due_ms(schedule().finish(&delivery(1), asked(0), 1.2, NOW)), NOW);
        assert_eq!(
            due_ms(schedule().finish(&delivery(1), asked(3_600), 1.2, NOW)),
            NOW + 60_000
        );
    }

    fn endpoint(enabled: bool, failing_since_ms: Option<u64>) -> StoredEndpoint {
        StoredEndpoint {
            enabled,
            failing_since_ms,
            ..example()
        }
    }

    const DAY: Duration = Duration::from_secs(24 * 3600);
    const DAY_MS: u64 = 24 * 3600 * 1000;

    #[test]
    fn a_success_keeps_or_makes_an_endpoint_healthy() {
        assert_eq!(health_change(&endpoint(true, None), true, NOW, DAY), None);
        assert_eq!(
            health_change(&endpoint(true, Some(NOW - 5)), true, NOW, DAY),
            Some(HealthChange::Recovered)
        );
    }

    #[test]
    fn a_first_failure_marks_the_endpoint_failing_since_now() {
        assert_eq!(
            health_change(&endpoint(true, None), false, NOW, DAY),
            Some(HealthChange::Failing { since_ms: NOW })
        );
    }

    #[test]
    fn an_endpoint_failing_for_disable_after_is_disabled() {
        let since = 5;
        assert_eq!(
            health_change(&endpoint(true, Some(since)), false, since + DAY_MS - 1, DAY),
            None
        );
        assert_eq!(
            health_change(&endpoint(true, Some(since)), false, since + DAY_MS, DAY),
            Some(HealthChange::Disabled {
                reason: "every attempt failed for 1day (webhooks.disable_after)".into()
            })
        );
        // Already disabled (by this rule or an operator): nothing more to change.
        assert_eq!(
            health_change(&endpoint(false, Some(since)), false, since + 2 * DAY_MS, DAY),
            None
        );
    }

    #[test]
    fn changes_apply_to_the_endpoint() {
        let mut failing = endpoint(true, None);
        HealthChange::Failing { since_ms: NOW }.apply(&mut failing);
        assert_eq!(failing, endpoint(true, Some(NOW)));
        let mut recovered = failing.clone();
        HealthChange::Recovered.apply(&mut recovered);
        assert_eq!(recovered, endpoint(true, None));
        let mut disabled = failing;
        HealthChange::Disabled { reason: "why".into() }.apply(&mut disabled);
        assert!(!disabled.enabled);
        assert_eq!(disabled.disabled_reason.as_deref(), Some("why"));
        assert_eq!(disabled.failing_since_ms, Some(NOW));
    }
}
