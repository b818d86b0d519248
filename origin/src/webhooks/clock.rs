//! The time deliveries are scheduled by: when a retry is due, when an attempt was made, since when an
//! endpoint has been failing, all in milliseconds since the epoch.
//!
//! [`Clock`] is the wall clock plus an offset that only grows; in service the offset stays zero, and
//! tests move it forward to walk a schedule of hours in moments (tokio's paused time cannot: the HTTP
//! client's timeouts would fire while a real receiver answers). Deliveries that the store queues as
//! due at the wall clock's now are due by this clock too. Two readings stay on the wall clock
//! ([`unix_ms_now`]) because others read them by theirs: the signed `webhook-timestamp` and the
//! end-to-end latency of an event appended by the store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shared::time::{millis, unix_ms_now};

#[derive(Debug, Default)]
pub struct Clock {
    ahead_ms: AtomicU64,
}

impl Clock {
    pub fn now_ms(&self) -> u64 {
        unix_ms_now() + self.ahead_ms.load(Ordering::Relaxed)
    }

    /// Moves this clock `by` ahead of the wall clock's pace.
    pub fn advance(&self, by: Duration) {
        // At most half the range: `now_ms` adds the wall clock to it.
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX / 2);
        self.ahead_ms.fetch_add(by, Ordering::Relaxed);
    }

    /// `delay` from now.
    pub fn after(&self, delay: Duration) -> u64 {
        later(self.now_ms(), delay)
    }
}

/// `delay` after `at_ms`, saturating.
pub fn later(at_ms: u64, delay: Duration) -> u64 {
    at_ms.saturating_add(millis(delay))
}
