//! Refused requests (401, 403) in the audit log, rate-limited so that a flood of bad tokens cannot
//! flood the log: within each second the first [`PER_SECOND`] are recorded, the rest counted and
//! reported with the next one recorded.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use time::OffsetDateTime;

use crate::forecasts::Forecasts;
use crate::storage::AuditEntry;

/// Refusals recorded per second at most.
pub const PER_SECOND: u32 = 20;

/// One refused request.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The token's name, or `unauthenticated`.
    pub actor: String,
    pub method: String,
    pub path: String,
    pub remote: Option<SocketAddr>,
    pub status: StatusCode,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    recorded: u32,
    /// Refusals not recorded since the last one that was.
    suppressed: u64,
}

#[derive(Debug)]
pub struct Refusals {
    window: Mutex<Window>,
}

impl Default for Refusals {
    fn default() -> Self {
        Self {
            window: Mutex::new(Window {
                started: Instant::now(),
                recorded: 0,
                suppressed: 0,
            }),
        }
    }
}

impl Refusals {
    /// Whether a refusal at `now` is recorded, and how many were left out before it.
    fn admit(&self, now: Instant) -> Option<u64> {
        let mut window = self.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if now.duration_since(window.started) >= Duration::from_secs(1) {
            window.started = now;
            window.recorded = 0;
        }
        if window.recorded >= PER_SECOND {
            window.suppressed += 1;
            return None;
        }
        window.recorded += 1;
        Some(std::mem::take(&mut window.suppressed))
    }

    pub async fn record(&self, forecasts: &Forecasts, refusal: Refusal) {
        let Some(suppressed) = self.admit(Instant::now()) else {
            return;
        };
        let mut detail = serde_json::json!({
            "method": refusal.method,
            "remote": refusal.remote.map(|remote| remote.ip().to_string()),
        });
        if suppressed > 0 {
            detail["suppressed_before"] = suppressed.into();
        }
        let entry = AuditEntry {
            at: OffsetDateTime::now_utc(),
            actor: refusal.actor,
            action: "auth.refused".to_owned(),
            target: refusal.path,
            status: refusal.status.as_u16(),
            detail,
        };
        forecasts.audit(entry).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_recorded_up_to_the_rate_and_the_rest_counted() {
        let refusals = Refusals::default();
        let start = Instant::now();
        for _ in 0..PER_SECOND {
            assert_eq!(refusals.admit(start), Some(0));
        }
        for _ in 0..5 {
            assert_eq!(refusals.admit(start), None);
        }
        let next_second = start + Duration::from_secs(1);
        assert_eq!(refusals.admit(next_second), Some(5));
        assert_eq!(refusals.admit(next_second), Some(0));
    }
}
